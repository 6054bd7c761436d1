"""Boundary conditions as constraints on outputs over a 1-D node grid (BOON's output correction).

Built from a :mod:`pdes.boundary` object and the grid the outputs live on; the last axis is space:

- Dirichlet: the two end nodes are overwritten with the prescribed values.
- Neumann (``du/dx`` in +x): the end nodes are solved from the second-order one-sided stencils
  ``(-3u₀ + 4u₁ - u₂)/(2dx) = g_L`` and ``(3u_N - 4u_{N-1} + u_{N-2})/(2dx) = g_R`` (spacing on both
  sides, so non-zero fluxes are met on both sides) — the stencils the :mod:`pdes.heat` data meet.
- Periodic: both ends are set to their mean (the grid holds ``x = lower`` and ``x = upper``, the
  same point).

Values are numbers, one value per sample ``(batch,)`` (the first axis of the output), or functions
of time returning either; a function of time needs ``time=`` or ``bind(t=...)``. Each condition is
an affine map ``u ↦ A u + c`` that changes only the end nodes: a tensor is mapped; a Gaussian's mean
is mapped and its covariance becomes ``A Σ Aᵀ`` (Dirichlet: variance 0 at the pinned nodes); an
Ensemble's members are mapped one by one.
"""

from __future__ import annotations

import math

import torch

from pdes.boundary import Dirichlet, Neumann, Periodic
from pdes.grid import Grid1D
from pdes.heat import neumann_boundary

from ..errors import ConstraintError
from ..outputs import Ensemble, Gaussian
from .base import Constraint

KINDS = (Dirichlet, Neumann, Periodic)
MINIMUM_NODES = {"dirichlet": 2, "neumann": 4, "periodic": 2}


class BoundaryCondition(Constraint):
    """A Dirichlet, Neumann or periodic condition at both ends of the last axis of outputs.

    Args:
        bc: a :class:`pdes.Dirichlet`, :class:`pdes.Neumann` or :class:`pdes.Periodic`.
        grid: the non-periodic node grid of the outputs' last axis (its spacing scales the
            Neumann stencil; a periodic condition needs both ends ``lower`` and ``upper`` on it).
        axis: the spatial axis; only the last (``-1``) is supported.
        time: the time at which values that are functions of time are evaluated.
    """

    def __init__(
        self,
        bc: Dirichlet | Neumann | Periodic,
        grid: Grid1D,
        axis: int = -1,
        time: float | None = None,
    ) -> None:
        if not isinstance(bc, KINDS):
            raise TypeError(f"bc must be a pdes Dirichlet, Neumann or Periodic, got {type(bc)}")
        if not isinstance(grid, Grid1D):
            raise TypeError(f"grid must be a pdes.Grid1D, got {type(grid)}")
        if axis != -1:
            raise ConstraintError(f"axis must be -1 (the last axis is space), got {axis}")
        if grid.periodic:
            hint = (
                "its ends are different points and periodicity is built in"
                if isinstance(bc, Periodic)
                else "a periodic axis has no boundary"
            )
            raise ConstraintError(
                f"grid must be a non-periodic node grid for a {bc.name} condition, got a periodic "
                f"grid ({hint}); use Grid1D(n, lower, upper) holding both ends"
            )
        if grid.kind != "node":
            raise ConstraintError(
                f"grid must be a node grid (boundary values live on the end nodes), "
                f"got kind={grid.kind!r}"
            )
        minimum = MINIMUM_NODES[bc.name]
        if grid.n < minimum:
            raise ConstraintError(
                f"grid must have at least {minimum} nodes for a {bc.name} condition "
                f"(the one-sided stencil needs two interior nodes), got {grid.n}"
            )
        if time is not None:
            time = float(time)
            if not math.isfinite(time):
                raise ValueError(f"time must be a finite number, got {time}")
        self.bc = bc
        self.grid = grid
        self.axis = axis
        self.time = time

    @property
    def kind(self) -> str:
        return self.bc.name

    @property
    def time_dependent(self) -> bool:
        return not isinstance(self.bc, Periodic) and (
            callable(self.bc.left) or callable(self.bc.right)
        )

    def bind(self, *args: object, t: float | None = None, **kwargs: object) -> BoundaryCondition:
        """The condition at time ``t`` (keyword only; the model's other inputs are ignored)."""
        if t is None:
            return self
        return BoundaryCondition(self.bc, self.grid, self.axis, float(t))

    def values(
        self, batch: int, dtype: torch.dtype = torch.float64, device=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left and right values (Dirichlet values or Neumann fluxes) as ``(batch,)`` tensors."""
        if isinstance(self.bc, Periodic):
            raise ConstraintError("a periodic condition has no boundary values")
        if self.time_dependent and self.time is None:
            raise ConstraintError(
                f"the {self.kind} values are functions of time: pass time= or call bind(t=...)"
            )
        t = 0.0 if self.time is None else self.time
        left, right = self.bc.values(t, batch, device)
        return left.to(dtype), right.to(dtype)

    def _check(self, u: torch.Tensor, name: str) -> None:
        if not isinstance(u, torch.Tensor) or u.ndim < 1:
            raise TypeError(f"{name} must be a tensor (..., {self.grid.n}), got {type(u)}")
        if u.shape[-1] != self.grid.n:
            raise ConstraintError(
                f"{name} has {u.shape[-1]} points on its last axis but the grid has {self.grid.n}"
            )

    def _ends(
        self, u: torch.Tensor, batch_axis: int, values: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left/right values shaped to broadcast against ``u[..., 0]`` (batch on ``batch_axis``)."""
        batch = u.shape[batch_axis] if u.ndim > 1 else 1
        left, right = self.values(batch, u.dtype, u.device) if values is None else values
        shape = [1] * (u.ndim - 1)
        if u.ndim > 1:
            shape[batch_axis] = batch
        return left.reshape(shape), right.reshape(shape)

    def enforce(
        self,
        u: torch.Tensor,
        batch_axis: int = 0,
        values: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``u`` ``(batch, ..., n)`` with its end nodes replaced so that it meets the condition.

        ``values``: the left/right values already evaluated by :meth:`values` (else evaluated).
        """
        self._check(u, "output")
        if isinstance(self.bc, Periodic):
            mean = 0.5 * (u[..., :1] + u[..., -1:])
            return torch.cat([mean, u[..., 1:-1], mean], dim=-1)
        left, right = self._ends(u, batch_axis, values)
        if isinstance(self.bc, Dirichlet):
            ends = u.shape[:-1]
            return torch.cat(
                [left.expand(ends)[..., None], u[..., 1:-1], right.expand(ends)[..., None]], dim=-1
            )
        u0, un = _neumann_ends(u, self.grid.dx, left, right)
        return torch.cat([u0[..., None], u[..., 1:-1], un[..., None]], dim=-1)

    def apply_tensor(self, output: torch.Tensor) -> torch.Tensor:
        return self.enforce(output)

    def apply_ensemble(self, output: Ensemble) -> Ensemble:
        return Ensemble(self.enforce(output.samples, batch_axis=1))

    def apply_gaussian(self, output: Gaussian) -> Gaussian:
        """Mean mapped; covariance ``A Σ Aᵀ`` (full; a diagonal Dirichlet one stays diagonal)."""
        mean = self.enforce(output.mean)
        if isinstance(self.bc, Dirichlet) and output.is_diagonal:
            var = output.cov.clone()
            var[..., 0] = 0.0
            var[..., -1] = 0.0
            return Gaussian(mean, var)
        cov = output.dense_cov()
        cov = self._rows(cov)
        cov = self._rows(cov.transpose(-1, -2)).transpose(-1, -2)
        return Gaussian(mean, cov)

    def _rows(self, m: torch.Tensor) -> torch.Tensor:
        """``A_lin @ m`` for ``m (..., n, k)``: the linear part of the map, acting on rows."""
        if isinstance(self.bc, Dirichlet):
            zero = torch.zeros_like(m[..., :1, :])
            return torch.cat([zero, m[..., 1:-1, :], zero], dim=-2)
        if isinstance(self.bc, Periodic):
            first = last = 0.5 * (m[..., :1, :] + m[..., -1:, :])
        else:
            first = (4.0 * m[..., 1:2, :] - m[..., 2:3, :]) / 3.0
            last = (4.0 * m[..., -2:-1, :] - m[..., -3:-2, :]) / 3.0
        return torch.cat([first, m[..., 1:-1, :], last], dim=-2)

    def __repr__(self) -> str:
        return f"BoundaryCondition({self.bc!r}, {self.grid!r}, time={self.time})"


def _neumann_ends(
    u: torch.Tensor, dx: float, left: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """End values meeting the fluxes, computed in float64 and returned in ``u``'s dtype."""
    f64 = torch.float64
    near = torch.cat([u[..., 1:3], u[..., -3:-1]], dim=-1).to(f64)
    u0, un = neumann_boundary(near, dx, left.to(f64), right.to(f64))
    return u0.to(u.dtype), un.to(u.dtype)
