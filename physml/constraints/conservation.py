"""Constraint builders from physics: conservation of mass in integral form."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pdes.checks import real
from pdes.grid import Grid1D, Grid2D

from .._checks import LAYOUTS, layouts_for
from ..errors import ConstraintError
from .linear import F64, LinearConstraint, _setting


def cumulative_inflow(times: torch.Tensor, inflow_rate: torch.Tensor) -> torch.Tensor:
    """``∫_{t₀}ᵗ q(s) ds`` at each time, trapezoid rule: ``inflow_rate (..., T)`` → ``(..., T)``.

    ``inflow_rate`` is the net flux into the domain (left inflow minus right outflow) at ``times``.
    The integral runs from the first time ``t₀ = times[0]`` (0 there), not from 0: with times
    after 0, the inflow before ``t₀`` is the caller's to add (e.g. in the initial mass).
    """
    times = torch.as_tensor(times, dtype=F64)
    rate = torch.as_tensor(inflow_rate, dtype=F64)
    if times.ndim != 1 or not torch.isfinite(times).all() or (times.diff() < 0).any():
        raise ConstraintError(
            f"times must be a 1-D sequence of finite, non-decreasing times, got {times.tolist()}"
        )
    if rate.ndim == 0 or rate.shape[-1] != times.numel():
        raise ConstraintError(
            f"inflow_rate must have {times.numel()} entries on its last axis (one per time), "
            f"got {tuple(rate.shape)}"
        )
    if not torch.isfinite(rate).all():
        raise ConstraintError(
            "inflow_rate must be finite at every time, got NaN or inf (a rate singular at t = 0, "
            "such as c/sqrt(t), needs times that start after 0, and the inflow before the first "
            "time is then left out: add it yourself; for the Stefan problem "
            "pdes.gpme.stefan_total_mass gives the total mass exactly)"
        )
    steps = 0.5 * (rate[..., 1:] + rate[..., :-1]) * times.diff()
    return torch.cat([torch.zeros_like(rate[..., :1]), steps.cumsum(-1)], dim=-1)


def mass_conservation(
    grid: Grid1D | Grid2D,
    total_mass: torch.Tensor | Callable[..., torch.Tensor],
    noise: float = 0.0,
    projection: str = "covariance",
    *,
    channels: Sequence[int] | None = None,
    layout: str | None = None,
    shrinkage: float = 0.0,
    weights: torch.Tensor | None = None,
) -> LinearConstraint:
    """``∫ u dx = M`` on every slice of a field, with ``grid``'s quadrature weights.

    A ``Grid1D`` integrates the last axis: fields ``(x)``, ``(t, x)``, ``(b, c, x)`` or the
    flattened ``(function, t, x)`` of probabilistic surrogates; a 4-axis ``(b, t, c, x)`` field
    needs ``layout="btcx"`` (it could be a 2-D ``(b, c, h, w)`` field, which needs a ``Grid2D``).
    A ``Grid2D`` integrates the last two axes of ``(b, c, h, w)`` or ``(b, t, c, h, w)``: one row
    per frame and channel; a :class:`~physml.outputs.Gaussian` there is over the grid's ``h·w``
    points flattened on its last axis, ``(..., h·w)`` (:meth:`.LinearConstraint.apply_gaussian`:
    the update couples every point, which a covariance per row cannot hold). ``channels`` picks the
    conserved channels (e.g. a tracer beside its velocity; not for a Gaussian). ``total_mass``
    has the field's leading shape (the channel axis restricted to ``channels``) — e.g. the
    initial mass plus :func:`cumulative_inflow` — or is a callable of the model's inputs
    returning it. It broadcasts aligned from the right, as in numpy: on a
    ``(B, C, x)`` field a ``(C,)`` total is one per channel, one per sample is written ``(B, 1)``
    — read by position in the batch, so a shuffled training batch needs the callable form.
    A tensor ``total_mass`` is copied when the constraint is built, without gradient (one that
    requires grad warns); a total to learn or differentiate (an inverse problem) is given as a
    callable, ``lambda *inputs: total_mass``, whose result keeps its gradient.
    ``weights``: the quadrature, real numbers (floating or integer) of the grid's shape ``(n,)``
    or ``(h, w)``; by default the grid's own (:meth:`pdes.Grid1D.weights`: trapezoid on nodes).
    A solver may conserve another discrete sum — the heat and wave schemes with Neumann walls
    keep :func:`pdes.heat.neumann_mass`, which differs from the trapezoid mass by ``O(dx²)`` —
    and holding the solver's own sum takes its weights: ``weights=pdes.heat.neumann_weights(grid)``.
    ``noise``: ``σ_G >= 0``, the standard deviation (not the variance) of the mass's Gaussian
    error: 0 holds the mass exactly, ``σ_G > 0`` weighs it against a Gaussian's or ensemble's
    covariance (:class:`LinearConstraint`). ``projection``: ``"covariance"`` (ProbConserv, the
    correction where the variance is largest) or ``"euclidean"`` (HardC: the mean, or each
    member, projected orthogonally, exactly whatever ``noise``; a Gaussian's variance kept).
    ``shrinkage``: an ensemble's covariance shrunk toward its variances (:class:`LinearConstraint`;
    an exact update of a 2-member ensemble, one row per slice, leaves its members equal: use
    more members or ``shrinkage > 0``).
    """
    if isinstance(grid, Grid1D):
        space, allowed = (grid.n,), layouts_for(1)
        ndims, hint = (
            (1, 2, 3),
            (
                "; a 4-axis field is (b, t, c, x) — say layout='btcx' — or a 2-D (b, c, h, w) "
                "field, which needs a Grid2D"
            ),
        )
    elif isinstance(grid, Grid2D):
        space, allowed = grid.shape, layouts_for(2)
        ndims, hint = (2, 3, 4, 5), " (a 2-D field (b, c, h, w) or (b, t, c, h, w))"
    else:
        raise ConstraintError(f"grid must be a pdes.Grid1D or Grid2D, got {type(grid)}")
    if layout is not None:
        if layout not in allowed:
            raise ConstraintError(
                f"layout must be one of {allowed} for a {type(grid).__name__}, got {layout!r}"
            )
        ndims, hint = (LAYOUTS[layout],), f" (layout {layout!r})"
    G = (grid.weights(F64) if weights is None else _quadrature(weights, space)).reshape(1, -1)
    target = (
        (lambda *a, **k: _as_target(total_mass(*a, **k)))
        if callable(total_mass)
        else _as_target(total_mass)
    )
    return LinearConstraint(
        G,
        target,
        noise,
        projection,
        space=space,
        channels=channels,
        ndims=ndims,
        layout_hint=hint,
        shrinkage=shrinkage,
        target_name="total_mass",
    )


def _quadrature(weights: torch.Tensor, space: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor):
        raise ConstraintError(
            f"weights must be a torch.Tensor of the grid's shape {space}, got {type(weights)}"
        )
    if tuple(weights.shape) != space:
        raise ConstraintError(
            f"weights must have the grid's shape {space}, got {tuple(weights.shape)}"
        )
    _setting(real, "weights", weights)
    if not torch.isfinite(weights).all() or not weights.any():
        raise ConstraintError("weights must be finite and not all zero")
    return weights.to(F64)


def _as_target(total_mass: torch.Tensor) -> torch.Tensor:
    mass = torch.as_tensor(total_mass, dtype=F64)
    return mass.unsqueeze(-1)  # one row per slice
