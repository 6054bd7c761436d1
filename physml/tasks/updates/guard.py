"""The surrogate guarded by its solver: the checks calibrated on in-range validation inputs, a
sweep of their thresholds timed in CPU seconds, and the issue's verdict on it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pdes.heat import neumann_mass, neumann_weights

from ... import metrics
from ...constraints import LinearConstraint
from ...outputs import Ensemble
from ...updates import (
    BoundaryError,
    Check,
    ConstraintResidual,
    EnsembleSpread,
    InputRange,
    guard,
    point_prediction,
)
from .data import F64, Equation, Solver, rms
from .models import MemberEnsemble, predict

LEVELS = (1.0, 0.99, 0.97, 0.95, 0.9, 0.8)
"""Quantiles of the in-range validation scores used as the checks' thresholds (1 being the
largest)."""


def inflow(problem: Equation) -> float:
    """Heat let in through the walls by ``T``: ``κ ∫₀ᵀ (g_R − g_L) dt = κ U (1 − cos πT) / π``
    (insulated left wall, flux ``du/dx = U sin(πt)`` at the right; per unit heat capacity)."""
    if problem.name != "heat":
        raise ValueError(f"inflow is defined for the heat problem, got {problem.name!r}")
    return problem.coefficient * problem.flux * (1 - math.cos(math.pi * problem.t_end)) / math.pi


def mass_balance(problem: Equation) -> LinearConstraint:
    """Heat's balance on ``u(x, T)`` given the input ``u0`` ``(batch, 1, nx)``: the mass
    :func:`pdes.heat.neumann_mass` at ``T`` equals ``u0``'s plus :func:`inflow`.

    That mass is what the solver's Neumann scheme changes at exactly the walls' rate, so the
    solver's answers meet the balance to round-off; the trapezoid ``∫u dx`` misses by O(dx²).
    """
    grid, added = problem.grid(), inflow(problem)
    weights = neumann_weights(grid)[None]  # (1, nx)

    def total(inputs: torch.Tensor) -> torch.Tensor:
        return (neumann_mass(inputs.to(F64), grid) + added)[..., None]  # (batch, 1, 1)

    return LinearConstraint(weights, total)


def guard_checks(
    problem: Equation,
    train_inputs: torch.Tensor,
    validation_inputs: torch.Tensor,
    validation_prediction: torch.Tensor | Ensemble,
    level: float,
) -> list[Check]:
    """The checks, each failing above the ``level`` quantile of its scores on the in-range
    validation inputs (:meth:`~physml.updates.Check.calibrate`): the amplitude outside the
    training amplitudes' min and max, not ``problem.inside`` (0 within them; a validation input
    drawn from ``inside`` just beyond them gives the top levels a small threshold: 2.1e-4 at
    level 1 for heat at the full scale, 0 elsewhere), the wall error, for heat the mass balance
    (:func:`mass_balance`) and, for an ensemble, its relative spread ``‖σ‖₂ / ‖μ‖₂`` — the one
    that sees the surrogate's own errors on in-range inputs."""
    if not 0 < level <= 1:
        raise ValueError(f"level must be in (0, 1], got {level}")
    checks: list[Check] = [
        InputRange.from_training(rms(train_inputs), parameters=rms),
        BoundaryError(problem.boundary(), problem.grid(), 0.0, problem.t_end),
    ]
    if problem.name == "heat":
        checks.append(ConstraintResidual(mass_balance(problem), 0.0, name="mass"))
    if isinstance(validation_prediction, Ensemble):
        checks.append(EnsembleSpread(0.0, relative=True))
    return [c.calibrate(validation_inputs, validation_prediction, level) for c in checks]


def timed(function: Callable[[], object], repeats: int = 1) -> tuple[object, float]:
    """``function()``'s result and its best process CPU time in seconds over ``repeats`` calls
    (CPU time, so that other processes on the machine do not tilt the solver-to-guard ratio)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.process_time()
        result = function()
        best = min(best, time.process_time() - started)
    return result, best


def guard_sweep(
    problem: Equation,
    surrogate: nn.Module,
    train_inputs: torch.Tensor,
    validation_inputs: torch.Tensor,
    test: TensorDataset,
    levels: tuple[float, ...] = LEVELS,
    outside: int = 0,
) -> list[dict]:
    """Rows ``solver``, ``surrogate`` (for a :class:`MemberEnsemble` its mean, and
    ``surrogate-member``: its first member alone) and ``guard`` per level on the test set:
    ``surrogate_fraction``, ``max_error``, ``p99_error``, ``mean_error`` (relative L2 against
    the solver), ``throughput`` (samples per CPU second, every member and check included) and
    ``speedup`` over the solver alone.
    ``outside``: how many of the test inputs (the last ones) lie beyond the training range."""
    x, y = test.tensors
    solver = Solver(problem)
    surrogate.eval()
    validation_prediction = predict(surrogate, validation_inputs)
    _, solver_s = timed(lambda: solver(x))
    rows = [_guard_row("solver", None, 0.0, y, y, solver_s, solver_s, len(x), outside)]
    prediction, surrogate_s = timed(lambda: point_prediction(predict(surrogate, x)), repeats=3)
    rows.append(
        _guard_row("surrogate", None, 1.0, prediction, y, surrogate_s, solver_s, len(x), outside)
    )
    if isinstance(surrogate, MemberEnsemble):
        first = surrogate.members[0]
        alone, member_s = timed(lambda: predict(first, x), repeats=3)
        rows.append(
            _guard_row("surrogate-member", None, 1.0, alone, y, member_s, solver_s, len(x), outside)
        )
    for level in levels:
        checks = guard_checks(
            problem, train_inputs, validation_inputs, validation_prediction, level
        )
        guarded = guard(surrogate, checks, solver)
        result, seconds = timed(lambda g=guarded: g(x))
        row = _guard_row(
            "guard",
            level,
            result.surrogate_fraction,
            result.output,
            y,
            seconds,
            solver_s,
            len(x),
            outside,
        )
        row["fired"] = result.counts()
        row["thresholds"] = {check.name: check.threshold for check in checks}
        row["outside_caught"] = int(result.fallback[len(x) - outside :].sum()) if outside else 0
        rows.append(row)
    return rows


def _guard_row(method, level, fraction, output, truth, seconds, solver_s, count, outside):
    errors = metrics.relative_l2(output, truth, reduction="none").to(F64)
    return {
        "method": method,
        "level": level,
        "surrogate_fraction": fraction,
        "max_error": float(errors.max()),
        "p99_error": float(torch.quantile(errors, 0.99)),
        "mean_error": float(errors.mean()),
        "max_error_inside": float(errors[: count - outside].max()),
        "throughput": count / seconds,
        "speedup": solver_s / seconds,
        "outside": outside,
        "samples": count,
    }


def guard_done_when(rows: list[dict], limit: float = 1e-2) -> dict:
    """The issue's target: a level with ``max_error ≤ limit`` at ≥ 3× the solver's throughput,
    where the surrogate alone (an ensemble's mean; its first member is reported beside it) has
    ``max_error ≥ 10 × limit``."""
    alone = next(row for row in rows if row["method"] == "surrogate")
    member = next((row for row in rows if row["method"] == "surrogate-member"), alone)
    good = [
        row
        for row in rows
        if row["method"] == "guard" and row["max_error"] <= limit and row["speedup"] >= 3
    ]
    best = max(good, key=lambda row: row["speedup"], default=None)
    return {
        "holds": bool(good) and alone["max_error"] >= 10 * limit,
        "level": None if best is None else best["level"],
        "speedup": None if best is None else best["speedup"],
        "surrogate_max_error": alone["max_error"],
        "member_max_error": member["max_error"],
    }
