"""The model being replaced, rebuilt from its ``physml train`` checkpoint and frozen.

The checkpoint is read with ``weights_only=True`` (:func:`physml.training.load_checkpoint`); the
network is rebuilt from the ``model_config`` saved in it, for the data the new model trains on.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..data import PDEData
from ..training import load_checkpoint
from ..training.checkpoint import load_weights
from ..training.commands import same_problem
from ..training.families import (
    DEFAULTS,
    FAMILIES,
    TASK_OPTIONS,
    WallsUnknownError,
    build,
    check_same_pairs,
    check_spectral_shift,
    training_items,
)
from .distillation import FocalDistillation, frozen, sample_errors

OLD_MODEL_REMEDY = "restore an intact copy of the old model's run folder, or give another one"
"""What a refusal of a damaged ``--distill-from`` checkpoint advises (not to delete it, as it
is the model being replaced, not a training to start over)."""


def load_previous(
    checkpoint: str | os.PathLike,
    data: PDEData,
    task: str | None = None,
    task_options: dict | None = None,
) -> nn.Module:
    """The frozen model of the run folder (or file) ``checkpoint``, built for ``data``.

    The old and new models must map the same inputs to the same outputs: ``task``, when given,
    must be the checkpoint's task; ``task_options``, when given (the new run's model options,
    the defaults where missing), must agree with the checkpoint's on those its task reads
    (rollout ``k``, forecast ``t_in`` and ``t_out``); ``data`` must give (input, target) pairs
    of the shapes the old run trained on (for an FNO, on any grid of as many axes). An FNO
    trained with the earlier spectral convolution is refused
    (:func:`~physml.training.families.check_spectral_shift`). Building does not touch the
    global random state.
    """
    state = load_checkpoint(checkpoint, argument="--distill-from", remedy=OLD_MODEL_REMEDY)
    description = state.get("model_config")
    if not isinstance(description, dict) or description.get("model") not in FAMILIES:
        raise ValueError(f"--distill-from: {str(checkpoint)!r} was not written by physml train")
    if FAMILIES[description["model"]].pairs is not None:
        raise ValueError(
            f"--distill-from: {str(checkpoint)!r} holds a {description['model']!r} model, which "
            "is not trained on (input, target) pairs and cannot be distilled from"
        )
    if task is not None and description["task"] != task:
        raise ValueError(
            f"--distill-from: {str(checkpoint)!r} holds a model of task {description['task']!r}, "
            f"not {task!r}: the old and new models must map the same inputs to the same outputs"
        )
    if task_options is not None:
        _check_task_options(description, task_options, checkpoint)
    fingerprint = state.get("fingerprint") or {}
    trained_on = (fingerprint.get("attributes") or {}).get("pde")
    holds = data.attrs.get("pde")
    if not same_problem(trained_on, holds):
        raise ValueError(
            f"--distill-from: {str(checkpoint)!r} was trained on {trained_on!r} solutions, but "
            f"this --data holds {holds!r} ones: the old model's outputs there are no target to "
            "keep"
        )
    trained = fingerprint.get("shapes")
    where = f"--distill-from: {str(checkpoint)!r}"
    check_spectral_shift(description, trained, where)
    items = None
    if trained is not None:
        items = training_items(description, data)
        check_same_pairs(
            description["model"],
            items,
            trained,
            "--distill-from: this --data",
            f"the old run {str(checkpoint)!r}",
        )
    with torch.random.fork_rng(devices=[]):
        try:
            model, _ = build(description, data, items)
        except WallsUnknownError as error:
            raise ValueError(
                f"{where}: its {description['model']} cannot be rebuilt for this --data: "
                f"{error.reason}; distill from a model that can serve these files (e.g. a "
                "--model fno run)"
            ) from None
    load_weights(model, state, checkpoint)
    return frozen(model)


def _check_task_options(description: dict, task_options: dict, checkpoint) -> None:
    """The options the checkpoint's task reads must be ``task_options``' (defaults if missing)."""
    saved = description.get("options") or {}
    value = lambda options, name: options.get(name, DEFAULTS[name])  # noqa: E731
    names = TASK_OPTIONS.get(description["task"], ())
    differ = [name for name in names if value(saved, name) != value(task_options, name)]
    if differ:
        old = ", ".join(f"{name}={value(saved, name)}" for name in differ)
        new = ", ".join(f"{name}={value(task_options, name)}" for name in differ)
        raise ValueError(
            f"--distill-from: {str(checkpoint)!r} holds a {description['task']} model with "
            f"{old}, this run has {new}: the old and new models must map the same inputs to the "
            "same outputs"
        )


def distill_from(
    checkpoint: str | os.PathLike,
    loss,
    data: PDEData,
    items,
    task: str,
    strength: float = 1.0,
    alpha: float = 1.0,
    beta: float = 5.0,
    tau: float | None = None,
    task_options: dict | None = None,
) -> FocalDistillation:
    """``loss`` wrapped in focal distillation toward the model of ``checkpoint`` (``physml train
    --distill-from``). ``items`` are the new model's training pairs over ``data``; ``tau``
    defaults to the old model's median error on them (relative L2); ``task_options``: the new
    run's model options, checked by :func:`load_previous`."""
    old = load_previous(checkpoint, data, task, task_options)
    if tau is None:
        tau = float(sample_errors(old, items).median())
    return FocalDistillation(loss, old, tau, strength, alpha, beta)
