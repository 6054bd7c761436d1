"""Surrogates one can upgrade and trust.

- :mod:`.distillation` — positive-congruent training: :class:`FocalDistillation` wraps any
  model's loss and pulls the new model toward the old one where the old one was right;
- :mod:`.previous` — the old model rebuilt, frozen, from its ``physml train`` checkpoint
  (``physml train --distill-from``);
- :mod:`.checks` — the checks of a prediction: input range, conservation and boundary residuals,
  ensemble spread, PDE residual;
- :mod:`.guard` — :func:`guard`: the surrogate where every check passes, the solver elsewhere,
  with per-sample reports, the inputs sent to the solver and a
  :func:`~physml.updates.refine` loop.

The negative-flip metrics that measure an update live in :mod:`physml.metrics`.
"""

from .checks import (
    BoundaryError,
    Check,
    ConstraintResidual,
    EnsembleSpread,
    InputRange,
    PDEResidual,
    point_prediction,
)
from .distillation import FocalDistillation, focal_weights, input_target, sample_errors
from .guard import Guard, GuardResult, NonFiniteAnswer, RefineRound, guard, refine
from .previous import load_previous

__all__ = [
    "BoundaryError",
    "Check",
    "ConstraintResidual",
    "EnsembleSpread",
    "FocalDistillation",
    "Guard",
    "GuardResult",
    "InputRange",
    "NonFiniteAnswer",
    "PDEResidual",
    "RefineRound",
    "focal_weights",
    "guard",
    "input_target",
    "load_previous",
    "point_prediction",
    "refine",
    "sample_errors",
]
