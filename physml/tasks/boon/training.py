"""Training and prediction: the same for every method.

Adam, cosine learning-rate decay, relative L2 loss, gradient-norm clipping, the same mini-batches
and initial weights for the same seed. (Without clipping BOON trained markedly worse than the
FNO: its elimination divides by corner entries of each layer's operator, per channel and wall
point, that can be 1e-4 small, and the rare huge gradients this gives upset Adam. In single-seed
checks on heat and Stokes, clipping raised the FNO's error by 10–15 % and cut BOON's by 2–5×.)
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ... import metrics
from ...models.common import progress_bar
from .data import Budget, CaseData
from .models import BoundaryModel


def _values(values: torch.Tensor | None, index) -> torch.Tensor | None:
    return None if values is None else values[index]


def train(
    model: BoundaryModel, data: CaseData, plan: Budget, seed: int, quiet: bool = True
) -> tuple[float, list[float]]:
    """Adam with cosine decay on the mean relative L2 error, gradient norms clipped to
    ``plan.clip``, mini-batches drawn with ``seed``.

    Returns the training seconds and the loss of every step.
    """
    if plan.batch < 1 or plan.steps < 1:
        raise ValueError(
            f"batch and steps must be at least 1, got batch={plan.batch}, steps={plan.steps}"
        )
    if plan.batch > data.train_x.shape[0]:
        raise ValueError(
            f"batch ({plan.batch}) exceeds the training samples ({data.train_x.shape[0]})"
        )
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=plan.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, plan.steps)
    count = data.train_x.shape[0]
    order, cursor, losses = torch.randperm(count, generator=generator), 0, []
    model.train()
    started = time.perf_counter()
    for _ in progress_bar(range(plan.steps), not quiet, "train", plan.steps):
        if cursor + plan.batch > count:
            order, cursor = torch.randperm(count, generator=generator), 0
        index = order[cursor : cursor + plan.batch]
        cursor += plan.batch
        optimiser.zero_grad()
        prediction = model(data.train_x[index], _values(data.train_values, index))
        loss = metrics.relative_l2(prediction, data.train_y[index])
        loss.backward()
        if plan.clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), plan.clip)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return time.perf_counter() - started, losses


@torch.no_grad()
def predict(model: BoundaryModel, data: CaseData, chunk: int = 32) -> torch.Tensor:
    """``model`` on the test inputs (float32), in chunks of ``chunk`` samples."""
    parts = []
    for start in range(0, data.test_x.shape[0], chunk):
        index = slice(start, start + chunk)
        parts.append(model(data.test_x[index], _values(data.test_values, index)))
    return torch.cat(parts)
