"""The point-based probabilistic surrogates trained through the one :class:`Trainer`.

- :func:`train_anp`: an attentive neural process on GPME functions drawn by a
  :class:`~physml.data.GPMESampler` — fresh functions every step, as a lazily drawn dataset of
  ``steps × batch`` functions (each from its own seed, its latent draw too), so a run does not
  depend on how the batch is split among processes;
- :func:`fit_ensemble`: a :class:`~physml.models.DeepEnsemble` on rows ``(N, d) → (N,)``.
  All members train in one run over :class:`MemberRows`: item ``i`` gives member ``m`` the row
  ``π_m(i)`` of a fixed permutation of its own (seeded by ``(seed, m)``), and the Trainer
  shuffles the items every epoch (seeded by ``seed``), so member ``m`` sees every row once an
  epoch in an order of its own, as if trained alone.

Both losses call a model method other than ``forward`` (the ELBO, the members' NLL); under
``torchrun`` DDP synchronises gradients only for work done inside ``forward``, so the Trainer is
handed an :class:`Objective` — the loss as the forward of a module holding the model (its
state-dict keys gain the prefix ``model.``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from pdes.checks import positive_int

from .._checks import flag
from ..data import GPMEFunctions, GPMESampler, sample_seed
from ..models import AttentiveNeuralProcess, DeepEnsemble, elbo_loss
from ..models.anp import shapeless_defaults
from .checkpoint import (
    OUT_REMEDY,
    CheckpointError,
    _changes,
    check_same_model,
    checkpoint_path,
    load_checkpoint,
    load_weights,
)
from .trainer import TrainConfig, Trainer

LossFn = Callable[[nn.Module, object], torch.Tensor]

REMEDY = OUT_REMEDY
"""Where else to train, in the Trainer's refusals to resume a run of this module's functions."""


class Objective(nn.Module):
    """``loss(model, batch)`` as ``forward(batch)`` of a module holding ``model``."""

    def __init__(self, model: nn.Module, loss: LossFn) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"loss must be callable(model, batch), got {loss!r}")
        self.model = model
        self.loss = loss

    def forward(self, batch: object) -> torch.Tensor:
        return self.loss(self.model, batch)


def objective_loss(objective: nn.Module, batch: object) -> torch.Tensor:
    """The Trainer's loss for an :class:`Objective` (plain or wrapped in DDP)."""
    return objective(batch)


def ensemble_nll(model: DeepEnsemble, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """:meth:`~physml.models.DeepEnsemble.nll` of collated :class:`MemberRows` items
    ``(B, M, d)``, ``(B, M)``."""
    inputs, targets = batch
    return model.nll(inputs.transpose(0, 1), targets.transpose(0, 1))


def describe(model: nn.Module) -> dict:
    """A model's class and parameter shapes (checked on resume: another model is an error)."""
    shapes = {name: list(value.shape) for name, value in model.state_dict().items()}
    return {"model": type(model).__name__, "shapes": shapes}


def _device(model: nn.Module, device: str | None) -> str:
    return str(next(model.parameters()).device) if device is None else device


# ------------------------------------------------------------------------------------ ANP


RETRAIN = (
    "train again in another folder (out=) with a lower learning rate (lr=); a resumed run keeps "
    "its settings"
)
"""What a diverged fit should change, in the arguments these fits take (no gradient clipping)."""


def _trainer(objective: Objective, config: TrainConfig, out, description: dict, progress: bool):
    """The one Trainer of these Python fits, its refusals and advice worded for their
    arguments."""
    return Trainer(
        objective,
        objective_loss,
        config,
        out,
        description,
        quiet=not progress,
        remedy=REMEDY,
        retrain=RETRAIN,
    )


def train_anp(
    model: AttentiveNeuralProcess,
    sampler: GPMESampler,
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    out: str | os.PathLike | None = None,
    loss_extra: LossFn | None = None,
    checkpoint_every: int = 100,
    device: str | None = None,
) -> list[float]:
    """Train ``model`` with Adam (constant ``lr``) on the negative ELBO (+ ``loss_extra(model,
    batch)``) for ``steps`` batches of ``sampler.batch`` fresh functions; returns the loss of
    every step.

    Deterministic given ``seed``. With ``out`` the Trainer checkpoints, and a later call with the
    same settings resumes from there, bitwise as an uninterrupted run. The model is left in eval
    mode. The run records ``loss_extra.description`` when the term has one (as
    :func:`physml.models.softc_loss_extra`'s does: case, weight, grid), so that a run with
    another term is refused on resume instead of continued. The run draws ``steps × batch``
    functions, so it resumes only for the same ``steps``. :func:`load_anp` reads the trained
    weights from ``out`` back into a model built with the same settings.

    Args:
        model: the :class:`~physml.models.AttentiveNeuralProcess` to train (in place).
        sampler: the :class:`~physml.data.GPMESampler` the functions are drawn from; its
            ``batch`` is the batch of every step.
        steps: optimiser steps.
        lr: Adam's learning rate, constant.
        seed: seeds the functions drawn (each with its own latent draw) and the order they are
            served in.
        progress: show a progress bar of the steps (on stderr; under ``torchrun`` rank 0's).
        out: a folder for the checkpoints (``None``: none, nothing to resume).
        loss_extra: ``loss_extra(model, batch)``, a scalar added to every step's loss.
        checkpoint_every: steps between checkpoints into ``out`` (one is also taken at the end).
        device: where it trains (the model is moved there); default the model's device.
    """
    if not isinstance(model, AttentiveNeuralProcess):
        raise TypeError(f"model must be an AttentiveNeuralProcess, got {type(model).__name__}")
    if not isinstance(sampler, GPMESampler):
        raise TypeError(f"sampler must be a GPMESampler, got {type(sampler).__name__}")
    if loss_extra is not None and not callable(loss_extra):
        raise TypeError(f"loss_extra must be callable(model, batch) or None, got {loss_extra!r}")
    progress = flag("progress", progress)
    steps = positive_int("steps", steps)
    functions = GPMEFunctions(sampler, steps * sampler.batch, seed)

    def loss(anp: nn.Module, batch: tuple) -> torch.Tensor:
        value = elbo_loss(anp, batch)
        return value if loss_extra is None else value + loss_extra(anp, batch)

    config = TrainConfig(
        steps=steps,
        batch=sampler.batch,
        lr=lr,
        schedule="constant",
        seed=seed,
        checkpoint_every=checkpoint_every,
        device=_device(model, device),
    )
    extra = False if loss_extra is None else getattr(loss_extra, "description", True)
    description = {**_anp_description(model), "loss_extra": extra}
    if out is not None and checkpoint_path(out).exists():
        state = load_checkpoint(out)
        _check_anp_resume(state, description, config, out)
        description = _with_eval_samples_of(description, state.get("model_config"))
    report = _trainer(Objective(model, loss), config, out, description, progress).fit(functions)
    model.eval()
    return report.losses


def _anp_description(model: AttentiveNeuralProcess) -> dict:
    """What a train_anp run records of ``model``: :func:`describe` and the settings no parameter
    shape shows (heads, min_std, eval_samples) where they differ from the defaults."""
    description = describe(model)
    if getattr(model, "settings", None):
        description["settings"] = dict(model.settings)
    return description


def _with_default_settings(description: object) -> object:
    """An ANP's recorded description with every shapeless setting spelled out (a run records
    only those that differ from the defaults)."""
    if not isinstance(description, dict) or description.get("model") != "AttentiveNeuralProcess":
        return description
    return {**description, "settings": {**shapeless_defaults(), **description.get("settings", {})}}


def _check_anp_resume(state: dict, description: dict, config: TrainConfig, out) -> None:
    """Refuse another model (its settings named, defaults included; ``eval_samples`` may differ,
    as in :func:`load_anp`) or another run length."""
    saved = {
        "model_config": _without_eval_samples(_with_default_settings(state.get("model_config")))
    }
    current = _without_eval_samples(_with_default_settings(description))
    check_same_model(saved, current, out, REMEDY)
    recorded = state.get("config", {})
    changed = [
        f"{name} {recorded.get(name)!r} → {value!r}"
        for name, value in (("steps", config.steps), ("batch", config.batch))
        if recorded.get(name) != value
    ]
    if changed:
        raise CheckpointError(
            f"checkpoint: {str(out)!r} holds a train_anp run of {recorded.get('steps')} steps of "
            f"{recorded.get('batch')} functions ({'; '.join(changed)}); the functions a run "
            "draws depend on steps × batch, so a run of other steps or another sampler batch "
            f"cannot resume it. Ask for steps={recorded.get('steps')} with that batch to resume "
            f"it, or {REMEDY}"
        )


def _without_eval_samples(description: object) -> object:
    """``description`` less ``eval_samples``: a default of ``forward``, not in the weights."""
    if not isinstance(description, dict):
        return description
    settings = {k: v for k, v in description.get("settings", {}).items() if k != "eval_samples"}
    return {**description, "settings": settings}


def _with_eval_samples_of(description: dict, recorded: object) -> dict:
    """``description`` with the ``eval_samples`` the ``recorded`` run holds (or none): a resumed
    run keeps its record, which the trainer compares as it stands."""
    settings = dict(description.get("settings", {}))
    settings.pop("eval_samples", None)
    if isinstance(recorded, dict) and "eval_samples" in recorded.get("settings", {}):
        settings["eval_samples"] = recorded["settings"]["eval_samples"]
    kept = {key: value for key, value in description.items() if key != "settings"}
    return {**kept, "settings": settings} if settings else kept


def load_anp(
    model: AttentiveNeuralProcess, out: str | os.PathLike, partial: bool = False
) -> AttentiveNeuralProcess:
    """The weights :func:`train_anp` left in ``out`` (its last checkpoint, read with
    ``weights_only=True``) loaded into ``model``, built with the settings of the trained one
    (``eval_samples`` may differ); returns ``model`` in eval mode. Another model is refused,
    naming what differs, and so is a run stopped before its last step unless ``partial``."""
    if not isinstance(model, AttentiveNeuralProcess):
        raise TypeError(f"model must be an AttentiveNeuralProcess, got {type(model).__name__}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or Path), got {out!r}")
    if not isinstance(partial, bool):
        raise TypeError(f"partial must be True or False, got {partial!r}")
    if not Path(out).is_file() and not checkpoint_path(out).is_file():
        raise FileNotFoundError(
            f"out: no train_anp checkpoint ({checkpoint_path(out).name}) in {str(out)!r}"
        )
    state = load_checkpoint(out, map_location=str(next(model.parameters()).device))
    recorded = _with_default_settings(state.get("model_config"))
    if isinstance(recorded, dict):  # the training term is no part of the model
        recorded = {key: value for key, value in recorded.items() if key != "loss_extra"}
    if not isinstance(recorded, dict) or recorded.get("model") != "AttentiveNeuralProcess":
        name = recorded.get("model") if isinstance(recorded, dict) else None
        raise CheckpointError(
            f"checkpoint: {str(out)!r} holds a run of {name or 'no recorded model'}, not a "
            "train_anp run of an AttentiveNeuralProcess (a run of physml train loads with "
            "physml.training.load_run)"
        )
    recorded = _without_eval_samples(recorded)
    current = _without_eval_samples(_with_default_settings(_anp_description(model)))
    if recorded != current:
        raise CheckpointError(
            f"checkpoint: {str(out)!r} holds another model than the one given "
            f"({'; '.join(_changes(recorded, current))}); build the model with the settings "
            "it was trained with"
        )
    step, planned = state.get("step"), state.get("config", {}).get("steps")
    if not partial and isinstance(step, int) and isinstance(planned, int) and step < planned:
        raise CheckpointError(
            f"checkpoint: {str(out)!r} holds a train_anp run stopped at step {step} of the "
            f"{planned} steps planned; run train_anp again with the same settings to finish it, "
            "or pass partial=True to load these weights knowingly"
        )
    weights = {name.removeprefix("model."): value for name, value in state["model"].items()}
    load_weights(model, {"model": weights}, out)
    return model.eval()


# ------------------------------------------------------------------------------ ensembles


class MemberRows(Dataset):
    """Rows ``inputs (N, d)``, ``targets (N,)`` served to ``members`` ensemble members at once:
    item ``i`` is ``(inputs[π_m(i)] (M, d), targets[π_m(i)] (M,))`` over the members ``m``,
    ``π_m`` a permutation of the rows seeded by ``(seed, m)``. ``attributes``: what the
    checkpoint's data fingerprint records of the rows (e.g. a checksum of them)."""

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        members: int,
        seed: int = 0,
        attributes: dict | None = None,
    ) -> None:
        for name, value in (("inputs", inputs), ("targets", targets)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if inputs.ndim != 2 or targets.shape != inputs.shape[:1]:
            raise ValueError(
                f"inputs (N, d) and targets (N,) must match, got {tuple(inputs.shape)} and "
                f"{tuple(targets.shape)}"
            )
        self.inputs, self.targets = inputs, targets
        self.attributes = attributes or {}
        n = inputs.shape[0]
        self.order = torch.stack(
            [
                torch.randperm(n, generator=torch.Generator().manual_seed(sample_seed(seed, m)))
                for m in range(positive_int("members", members))
            ]
        )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.order[:, i]
        return self.inputs[rows], self.targets[rows]

    def item_rows(self) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``((inputs, targets), rows (N, M))``: item ``i`` is ``(inputs[rows[i]],
        targets[rows[i]])``, so the Trainer indexes a batch, and the checkpoint's fingerprint
        hashes every item, in blocks."""
        return (self.inputs, self.targets), self.order.T


def fit_ensemble(
    ensemble: DeepEnsemble,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    out: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    device: str | None = None,
) -> DeepEnsemble:
    """Train every member with the Gaussian NLL on ``inputs (N, d)``, ``targets (N,)``.

    Fresh weights from ``seed`` (member ``m`` from its own generator), statistics from the data,
    then ``epochs`` passes of ``N // batch`` steps (``batch = min(batch_size, N)``; the rows
    left over an epoch differ from epoch to epoch) with Adam at a constant ``lr``. With ``out``
    a later call with the same settings and data resumes from the last checkpoint, bitwise.
    Sets ``ensemble.loss_curve_`` (mean NLL per member and epoch, standardised units); returns
    the ensemble in eval mode.

    Args:
        ensemble: the :class:`~physml.models.DeepEnsemble` to train (in place).
        inputs: rows ``(N, d)``, ``d`` the ensemble's ``in_features``.
        targets: ``(N,)``, one value per row.
        epochs: passes over the rows.
        batch_size: rows per step, at most ``N``.
        lr: Adam's learning rate, constant.
        seed: seeds the members' initial weights and the order of the rows.
        progress: show a progress bar of the steps (on stderr; under ``torchrun`` rank 0's).
        out: a folder for the checkpoints (``None``: none, nothing to resume).
        checkpoint_every: epochs between checkpoints into ``out`` (one is also taken at the end).
        device: where it trains (the ensemble is moved there); default the ensemble's device.
    """
    if not isinstance(ensemble, DeepEnsemble):
        raise TypeError(f"ensemble must be a DeepEnsemble, got {type(ensemble).__name__}")
    progress = flag("progress", progress)  # before reset: a refusal leaves the ensemble as it was
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    seed = positive_int("seed", seed, 0)
    ensemble.reset(seed)
    ensemble.standardise(inputs, targets)
    x = torch.as_tensor(inputs, dtype=torch.float32).detach().cpu()
    y = torch.as_tensor(targets, dtype=torch.float32).detach().cpu()
    # every row's bytes, as checkpoints from before the Trainer hashed every item recorded them
    digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    rows = MemberRows(x, y, ensemble.members, seed, attributes={"rows_sha256": digest})
    batch = min(batch_size, len(rows))
    per_epoch = len(rows) // batch
    config = TrainConfig(
        steps=epochs * per_epoch,
        batch=batch,
        lr=lr,
        schedule="constant",
        seed=seed,
        checkpoint_every=checkpoint_every * per_epoch,
        device=_device(ensemble, device),
    )
    description = {"model": "DeepEnsemble", "config": dict(ensemble.config)}
    trainer = _trainer(Objective(ensemble, ensemble_nll), config, out, description, progress)
    losses = trainer.fit(rows).losses
    ensemble.loss_curve_ = [
        sum(losses[e * per_epoch : (e + 1) * per_epoch]) / (per_epoch * ensemble.members)
        for e in range(epochs)
    ]
    ensemble.eval()
    return ensemble
