"""Training and prediction: the same for every method.

Training is the toolkit's :class:`~physml.training.Trainer`: Adam, cosine learning-rate decay,
relative L2 loss, gradient-norm clipping, the same mini-batches and initial weights for the same
seed. (Without clipping BOON trained markedly worse than the FNO: its elimination divides by
corner entries of each layer's operator, per channel and wall point, that can be 1e-4 small, and
the rare huge gradients this gives upset Adam. In single-seed checks on heat and Stokes, clipping
raised the FNO's error by 10–15 % and cut BOON's by 2–5×.)
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from ... import metrics
from ...training import TrainConfig, Trainer
from .data import Budget, CaseData
from .models import BoundaryModel

RETRAIN = "train again with a lower learning rate (the Budget's lr) or a tighter clip (its clip)"
"""What a diverged BOON run should change (the Trainer's own advice names its CLI flags)."""


def _values(values: torch.Tensor | None, index) -> torch.Tensor | None:
    return None if values is None else values[index]


def training_set(data: CaseData) -> TensorDataset:
    """The training samples as the Trainer reads them: items ``(x, y)``, or ``(x, y, values)``
    where the case prescribes wall values (``train_values`` not ``None``)."""
    tensors = [data.train_x, data.train_y]
    if data.train_values is not None:
        tensors.append(data.train_values)
    return TensorDataset(*tensors)


def boundary_model_loss(model: BoundaryModel, batch) -> torch.Tensor:
    """The mean relative L2 error of ``model(x, values)`` on a batch of
    :func:`~physml.tasks.boon.training.training_set` (``values`` ``None`` where its items are
    ``(x, y)``)."""
    x, y, *values = batch
    return metrics.relative_l2(model(x, values[0] if values else None), y)


def train_config(plan: Budget, seed: int) -> TrainConfig:
    """The Trainer's settings for ``plan``: its steps, batch, learning rate and clip, the cosine
    schedule and ``seed``."""
    return TrainConfig(
        steps=plan.steps, batch=plan.batch, lr=plan.lr, schedule="cosine", clip=plan.clip, seed=seed
    )


def train(
    model: BoundaryModel, data: CaseData, plan: Budget, seed: int, quiet: bool = True
) -> tuple[float, list[float]]:
    """Train ``model`` with the :class:`~physml.training.Trainer`: Adam with cosine decay on the
    mean relative L2 error, gradient norms clipped to ``plan.clip``, mini-batches and torch's,
    numpy's and Python's global generators seeded with ``seed``
    (:func:`~physml.tasks.boon.training.train_config`).

    Returns the training seconds and the loss of every step; ``model`` is left in eval mode. No
    checkpoint is written: a run of a case takes seconds to minutes, and ``benchmarks/boon.py``
    keeps finished runs to resume from.
    """
    if plan.batch < 1 or plan.steps < 1:
        raise ValueError(
            f"batch and steps must be at least 1, got batch={plan.batch}, steps={plan.steps}"
        )
    if plan.batch > data.train_x.shape[0]:
        raise ValueError(
            f"batch ({plan.batch}) exceeds the training samples ({data.train_x.shape[0]})"
        )
    trainer = Trainer(
        model, boundary_model_loss, train_config(plan, seed), quiet=quiet, retrain=RETRAIN
    )
    report = trainer.fit(training_set(data))
    model.eval()
    return report.wall_s, report.losses


@torch.no_grad()
def predict(model: BoundaryModel, data: CaseData, chunk: int = 32) -> torch.Tensor:
    """``model`` on the test inputs (float32), in chunks of ``chunk`` samples."""
    parts = []
    for start in range(0, data.test_x.shape[0], chunk):
        index = slice(start, start + chunk)
        parts.append(model(data.test_x[index], _values(data.test_values, index)))
    return torch.cat(parts)
