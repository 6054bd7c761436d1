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
from ..training.families import FAMILIES, build
from .distillation import FocalDistillation, frozen, sample_errors


def load_previous(
    checkpoint: str | os.PathLike, data: PDEData, task: str | None = None
) -> nn.Module:
    """The frozen model of the run folder (or file) ``checkpoint``, built for ``data``.

    ``task``, when given, must be the checkpoint's task (the old and new models must map the
    same inputs to the same outputs). Building does not touch the global random state.
    """
    state = load_checkpoint(checkpoint)
    description = state.get("model_config")
    if not isinstance(description, dict) or description.get("model") not in FAMILIES:
        raise ValueError(f"checkpoint: {str(checkpoint)!r} was not written by physml train")
    if FAMILIES[description["model"]].pairs is not None:
        raise ValueError(
            f"checkpoint: {str(checkpoint)!r} holds a {description['model']!r} model, which is "
            "not trained on (input, target) pairs and cannot be distilled from"
        )
    if task is not None and description["task"] != task:
        raise ValueError(
            f"checkpoint: {str(checkpoint)!r} holds a model of task {description['task']!r}, "
            f"not {task!r}: the old and new models must map the same inputs to the same outputs"
        )
    with torch.random.fork_rng(devices=[]):
        model, _ = build(description, data)
    load_weights(model, state, checkpoint)
    return frozen(model)


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
) -> FocalDistillation:
    """``loss`` wrapped in focal distillation toward the model of ``checkpoint`` (``physml train
    --distill-from``). ``items`` are the new model's training pairs over ``data``; ``tau``
    defaults to the old model's median error on them (relative L2)."""
    old = load_previous(checkpoint, data, task)
    if tau is None:
        tau = float(sample_errors(old, items).median())
    return FocalDistillation(loss, old, tau, strength, alpha, beta)
