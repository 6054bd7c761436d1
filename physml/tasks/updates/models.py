"""The surrogates of a model update (FNO, BOON, an ensemble of FNOs), their training by the one
:class:`~physml.training.Trainer` and each update method's loss."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ... import models as surrogates  # FNO builders: neuralop loads on first use
from ...constraints import BoundaryCondition, constrain
from ...io import atomic_write_text, strict_json
from ...outputs import Ensemble
from ...training import TrainConfig, Trainer
from ...training.checkpoint import REMEDY
from ...training.families import relative_l2_loss
from ...updates import FocalDistillation, NonFiniteAnswer
from .. import recorded_cost
from .data import Equation


@dataclass(frozen=True)
class Size:
    """An FNO's shape and its training: samples, Trainer steps, batch, learning rate."""

    hidden: int
    modes: int
    layers: int
    train: int
    steps: int
    batch: int = 32
    lr: float = 3e-3


def fno(size: Size, seed: int) -> nn.Module:
    """An FNO ``(batch, 1, nx) → (batch, 1, nx)`` with weights from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return surrogates.fast_fno(
            n_modes=(size.modes,),
            in_channels=1,
            out_channels=1,
            hidden_channels=size.hidden,
            n_layers=size.layers,
        )


def boon(problem: Equation, size: Size, seed: int, warm_from: nn.Module | None = None) -> nn.Module:
    """BOON: the FNO of ``size`` through the door with the problem's walls at ``T``; with
    ``warm_from`` (an FNO) that FNO starts as :func:`widen` of it."""
    condition = BoundaryCondition(problem.boundary(), problem.grid(), time=problem.t_end)
    inner = fno(size, seed)
    if warm_from is not None:
        widen(inner, warm_from)
    return constrain(inner, condition)


def widen(new: nn.Module, old: nn.Module) -> nn.Module:
    """Warm start: ``new``, an FNO with at least ``old``'s channels everywhere and otherwise its
    shape (modes, layers), set to compute ``old``'s function exactly; changed in place, returned.

    Each of ``old``'s parameters goes into the leading block of ``new``'s; every entry that reads
    a channel ``old`` lacks (a pointwise weight's input column, a spectral weight's input row) is
    zeroed, so the added channels feed nothing, while the weights into them keep ``new``'s
    random draw (they compute something, and their outgoing weights get gradients). Used for
    model updates: the new model starts where the old one ends, so it keeps the old one's answers
    where they are right unless the data moves it (``benchmarks/model_update.py``).
    """
    for name, model in (("new", new), ("old", old)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} must be an FNO (an nn.Module), got {type(model).__name__}")
    target, source = new.state_dict(), old.state_dict()
    if set(target) != set(source):
        raise ValueError(
            f"new and old must have the same parameters: {sorted(set(target) ^ set(source))} differ"
        )
    with torch.no_grad():
        for key, value in target.items():
            if not isinstance(value, torch.Tensor):
                continue
            before = source[key]
            if value.ndim != before.ndim or any(
                n < o for n, o in zip(value.shape, before.shape, strict=True)
            ):
                raise ValueError(
                    f"{key}: new shape {tuple(value.shape)} cannot hold old {tuple(before.shape)}"
                )
            if value.is_complex():  # spectral weight (in, out, modes): the modes must match
                if value.shape[2:] != before.shape[2:]:
                    raise ValueError(f"{key}: widen adds channels only, not Fourier modes")
                value[before.shape[0] :] = 0
            elif value.ndim >= 2:  # pointwise weight (out, in, 1) or soft gating (1, channel, 1)
                value[:, before.shape[1] :] = 0
            value[tuple(slice(0, n) for n in before.shape)] = before
    new.load_state_dict(target)
    return new


@dataclass
class Trained:
    """A trained model and its training cost in CPU seconds (scaled to all steps on resume; NaN
    where unknown: a finished run whose cost was not recorded)."""

    model: nn.Module
    train_s: float


def train(
    model: nn.Module,
    loss: Callable,
    data: Dataset,
    size: Size,
    seed: int,
    out: Path | None,
    quiet: bool = True,
    describe: dict | None = None,
    remedy: str = REMEDY,
) -> Trained:
    """One Trainer run (cosine lr, gradient norm ≤ 1), resumed from ``out`` when it is there;
    its CPU seconds are kept in ``out/train_s.json`` so a finished run reports them again (NaN,
    and nothing written, for a finished run without that file: killed before writing it).
    ``remedy``: where else to train, in a refusal to resume ``out`` (the default names physml's
    ``--out``)."""
    config = TrainConfig(
        steps=size.steps,
        batch=min(size.batch, len(data)),
        lr=size.lr,
        clip=1.0,
        seed=seed,
        checkpoint_every=max(1, min(500, size.steps)),
    )
    described = {"size": asdict(size), **(describe or {})}
    trainer = Trainer(
        model, loss, config, out=out, model_config=described, quiet=quiet, remedy=remedy
    )
    started = time.process_time()
    report = trainer.fit(data)
    done = size.steps - report.resumed_from
    spent = time.process_time() - started
    cost = None if out is None else Path(out) / "train_s.json"
    if done == 0:  # finished earlier: its recorded cost, if any (no out to record it in: none)
        return Trained(model.eval(), math.nan if cost is None else recorded_cost(cost))
    train_s = spent * size.steps / done
    if cost is not None:
        atomic_write_text(cost, strict_json({"train_s": train_s}))
    return Trained(model.eval(), train_s)


def method_loss(method: str, old: nn.Module, tau: float, strength: float) -> Callable:
    """The loss of ``method``: ``retrain`` or ``warm`` (relative L2; ``warm`` starts from
    :func:`widen` of the old model), ``pc-focal`` or ``pc-uniform``."""
    if method in ("retrain", "warm"):
        return relative_l2_loss
    if method not in ("pc-focal", "pc-uniform"):
        raise ValueError(f"method must be retrain, warm, pc-focal or pc-uniform, got {method!r}")
    beta = 5.0 if method == "pc-focal" else 0.0
    return FocalDistillation(relative_l2_loss, old, tau, strength, alpha=1.0, beta=beta)


class MemberEnsemble(nn.Module):
    """Trained models answering together (a deep ensemble: the members differ by their seeds).

    ``(batch, 1, nx) →`` an :class:`~physml.outputs.Ensemble` ``(member, batch, 1, nx)``: its mean
    is the answer (:func:`~physml.updates.point_prediction`), its spread what
    :class:`~physml.updates.EnsembleSpread` reads. A member answering NaN or inf on some inputs
    raises a :class:`~physml.updates.NonFiniteAnswer` naming them and holding the answers to the
    others: a guard sends those to its fallback and answers the others without asking again.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"members must hold at least 2 models, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, inputs: torch.Tensor) -> Ensemble:
        samples = torch.stack([member(inputs) for member in self.members])
        finite = torch.isfinite(samples.reshape(*samples.shape[:2], -1)).all(2)  # (member, batch)
        if not bool(finite.all()):
            members = (~finite).any(1).nonzero().flatten().tolist()
            refused = (~finite).any(0).nonzero().flatten().tolist()
            kept = finite.all(0)
            raise NonFiniteAnswer(
                f"members {members} of the ensemble answered NaN or inf on the inputs {refused} "
                f"of the batch of {samples.shape[1]}",
                refused,
                Ensemble(samples[:, kept]) if bool(kept.any()) else None,
            )
        return Ensemble(samples)


def predict(model: nn.Module, inputs: torch.Tensor, batch: int = 256) -> torch.Tensor | Ensemble:
    """``model`` on ``inputs`` in batches, no gradient: a tensor, or an Ensemble (members first)."""
    with torch.no_grad():
        outputs = [model(inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
    if isinstance(outputs[0], Ensemble):
        return Ensemble(torch.cat([output.samples for output in outputs], 1))
    return torch.cat(outputs)
