"""Constraint builders from physics: conservation of mass in integral form."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pdes.grid import Grid1D

from ..errors import ConstraintError
from .linear import F64, LinearConstraint


def cumulative_inflow(times: torch.Tensor, inflow_rate: torch.Tensor) -> torch.Tensor:
    """``∫₀ᵗ q(s) ds`` at each time by the trapezoid rule: ``inflow_rate (..., T)`` → ``(..., T)``.

    ``inflow_rate`` is the net flux into the domain (left inflow minus right outflow) at ``times``.
    """
    times = torch.as_tensor(times, dtype=F64)
    rate = torch.as_tensor(inflow_rate, dtype=F64)
    if rate.shape[-1] != times.numel():
        raise ConstraintError(
            f"inflow_rate must have {times.numel()} entries on its last axis (one per time), "
            f"got {tuple(rate.shape)}"
        )
    steps = 0.5 * (rate[..., 1:] + rate[..., :-1]) * times.diff()
    return torch.cat([torch.zeros_like(rate[..., :1]), steps.cumsum(-1)], dim=-1)


def mass_conservation(
    grid: Grid1D,
    total_mass: torch.Tensor | Callable[..., torch.Tensor],
    noise: float = 0.0,
    projection: str = "covariance",
) -> LinearConstraint:
    """``∫ u(t, x) dx = M(t)`` for every time slice, with ``grid``'s quadrature weights.

    Predictions are ``(..., time, n)``; ``total_mass`` is ``(..., time)`` — e.g. the initial mass
    plus :func:`cumulative_inflow` — or a callable of the model's inputs returning it.
    """
    if not isinstance(grid, Grid1D):
        raise ConstraintError(f"grid must be a pdes.Grid1D, got {type(grid)}")
    G = grid.weights()[None, :]
    if callable(total_mass):
        return LinearConstraint(
            G, lambda *a, **k: _as_target(total_mass(*a, **k)), noise, projection
        )
    return LinearConstraint(G, _as_target(total_mass), noise, projection)


def _as_target(total_mass: torch.Tensor) -> torch.Tensor:
    mass = torch.as_tensor(total_mass, dtype=F64)
    if mass.ndim == 0:
        raise ConstraintError("total_mass must have a time axis: shape (..., time)")
    return mass.unsqueeze(-1)
