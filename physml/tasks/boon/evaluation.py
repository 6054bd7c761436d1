"""Evaluation and one (case, method, seed) run.

:func:`evaluate`: relative L2 (whole and interior) and the boundary error, in float64: Dirichlet
the largest ``|u − g|`` on the walls, Neumann the largest ``|∂u/∂x − g|`` by the second-order
one-sided stencil, periodic the largest ``|u₀ − u_N|``.

Precision: the networks run in float32; the constrained methods' last step — replacing the wall
nodes, an affine map of the output — is evaluated once more in float64 on their float32 test
predictions (:func:`~physml.tasks.boon.models.with_walls`). A float32 field cannot meet a Neumann
condition closer than its rounding: half an ulp of the end value times ``3/(2dx)`` (about 1e-5 for
``|u| ≈ 4`` on 65 nodes); :func:`~physml.tasks.boon.walls.float32_flux_floor` gives that bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ... import metrics
from .data import Budget, CaseData, budget, case_data
from .models import PEER, BoundaryModel, build_model, with_walls
from .training import predict, train
from .walls import F64, CavityWalls, float32_flux_floor


def evaluate(prediction: torch.Tensor, data: CaseData) -> dict[str, float]:
    """Relative L2 (whole, interior) and boundary error of test predictions, in float64."""
    u, target, walls = prediction.to(F64), data.test_y.to(F64), data.walls
    return {
        "rel_l2": metrics.relative_l2(u, target).item(),
        "rel_l2_interior": metrics.relative_l2(walls.interior(u), walls.interior(target)).item(),
        "boundary_error": walls.error(u, data.test_values).max().item(),
    }


def error_over_time(prediction: torch.Tensor, data: CaseData) -> list[float]:
    """Mean relative L2 at each output step (multi-step and cavity cases; time along channels
    for the cavity, along the last axis for ``(x, t)`` fields)."""
    u, target = prediction.to(F64), data.test_y.to(F64)
    if isinstance(data.walls, CavityWalls):
        steps = data.walls.steps
        u = u.unflatten(1, (2, steps)).transpose(1, 2)  # (sample, step, component, x, y)
        target = target.unflatten(1, (2, steps)).transpose(1, 2)
        return [metrics.relative_l2(u[:, k], target[:, k]).item() for k in range(steps)]
    return [metrics.relative_l2(u[..., k], target[..., k]).item() for k in range(u.shape[-1])]


# --------------------------------------------------------------------------------------- one run


@dataclass
class CaseResult:
    """Rows of one (case, method, seed) run, the trained model and its test predictions."""

    rows: list[dict]
    model: BoundaryModel
    predictions: dict[str, torch.Tensor]
    data: CaseData
    losses: list[float]


def run_case(
    case: str, method: str, seed: int, size: str | Budget, quiet: bool = True
) -> CaseResult:
    """Train ``method`` (``fno``, ``boon``, ``boon-output``, ``fno-wall-input``) on ``case`` and
    evaluate it.

    The ``fno`` run gives the ``fno`` and ``fno-overwrite`` rows, the others one row each (the
    peer ``fno-wall-input`` unconstrained, like ``fno``). The constrained predictions are float64
    (their wall replacement evaluated in float64). Rows carry
    :func:`evaluate`'s metrics, the float32 flux floor, ``train_s``, ``params``, the budget and,
    for multi-step cases, ``rel_l2_over_time``.
    """
    plan = budget(case, size)
    data = case_data(case, size)
    model = build_model(method, data, plan, seed)
    seconds, losses = train(model, data, plan, seed, quiet)
    raw = predict(model, data)
    conditions = data.walls.conditions(data.test_values)
    predictions = {}
    if method == "fno":
        predictions["fno"] = raw
        predictions["fno-overwrite"] = with_walls(raw.to(F64), conditions)
    elif method == PEER:
        predictions[method] = raw
    else:
        predictions[method] = with_walls(raw.to(F64), conditions)
    common = {
        "case": case,
        "seed": seed,
        "kind": data.walls.kind,
        "shape": list(data.test_y.shape[1:]),
        "train": plan.train,
        "test": plan.test,
        "steps": plan.steps,
        "params": sum(p.numel() for p in model.parameters()),
        "train_s": seconds,
        "final_loss": losses[-1],
        "float32_floor": float32_flux_floor(raw, data.walls),
    }
    rows = []
    for name, prediction in predictions.items():
        row = {**common, "method": name, **evaluate(prediction, data)}
        if data.times is not None:
            row["rel_l2_over_time"] = error_over_time(prediction, data)
        rows.append(row)
    return CaseResult(rows, model, predictions, data, losses)
