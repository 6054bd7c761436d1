"""Boundary conditions as constraints on outputs over node grids (BOON's output correction).

A :class:`BoundaryCondition` puts one :mod:`pdes.boundary` condition on one spatial axis of outputs
laid out ``(batch, channel, *space)``; the axis is a negative index (``-1`` the last, ``-2`` the
one before, ...) and the *walls* of the axis are its slices at index ``0`` (left) and ``-1``
(right). Each wall is a slice ``(batch, channel, *wall)`` where ``wall`` lists the sizes of the
other spatial axes.

- Dirichlet: the wall nodes are overwritten with the prescribed values.
- Neumann (``du/dx`` along +axis): the wall nodes are solved from the second-order one-sided
  stencils ``(-3u₀ + 4u₁ - u₂)/(2dx) = g_L`` and ``(3u_N - 4u_{N-1} + u_{N-2})/(2dx) = g_R``
  (spacing on both sides, so non-zero fluxes are met on both sides) — the :mod:`pdes.heat` form.
- Periodic on a node grid holding both ends (``Grid1D(n, lower, upper)``): both walls are set to
  their mean. Periodic on a periodic grid (``Grid1D(..., periodic=True)``, no duplicate end
  point): nothing to do — the output is returned unchanged (an FNO is periodic by construction).
  Dirichlet or Neumann on a periodic grid is an error: a periodic axis has no boundary.

``side="left"`` or ``"right"`` constrains one wall only, so a list of conditions spells mixed
kinds (e.g. Dirichlet on the left, Neumann on the right); periodic is two-sided only. Applied one
after the other, later conditions win where walls meet (corners of a 2-D domain).

Values (Dirichlet values, Neumann fluxes) are a number, one value per sample ``(batch,)``, a
tensor ``(batch, *wall)`` or ``(batch, channel, *wall)`` (size-1 entries broadcast), or a function
of time returning one of these. A ``(batch,)`` tensor is one value per sample; where its length
is also a size of ``wall`` it could be meant as a profile, so a constant one warns: give it as
``(1, *wall)`` for a profile, or ``(batch, 1, …)`` to say per sample.
The time is a number (``time=`` here or in the constrained model's call), or, for outputs that
carry time along a spatial axis (multi-step ``(x, t)`` fields), a 1-D array of times lying along
the output axis ``time_axis``: a function of time is then evaluated at each of them (returning a
number or ``(batch,)``) and its values run along that axis of the wall.

Each condition is an affine map ``u ↦ A u + c`` that changes only wall nodes: a tensor is mapped;
a Gaussian's mean is mapped and its covariance becomes ``A Σ Aᵀ`` (Dirichlet: variance 0 at the
pinned nodes; Gaussians are supported on the last axis, which their covariance spans); an
Ensemble's members are mapped one by one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

from pdes.boundary import Dirichlet, Neumann, Periodic
from pdes.grid import Grid1D
from pdes.heat import neumann_boundary

from ..errors import ConstraintError, user_stacklevel
from ..outputs import Ensemble, Gaussian
from .base import Constraint

KINDS = (Dirichlet, Neumann, Periodic)
MINIMUM_NODES = {"dirichlet": 2, "neumann": 4, "periodic": 2}
SIDES = ("both", "left", "right")

Values = tuple[torch.Tensor | None, torch.Tensor | None]


class BoundaryCondition(Constraint):
    """A Dirichlet, Neumann or periodic condition on the walls of one spatial axis of outputs.

    Acts at the operator seam when the model offers it (BOON's kernel correction of every layer,
    :mod:`physml.constraints.operator`) and at the output seam always (the walls set exactly).

    The walls are solved in float64 and returned in the output's dtype, so they are met to that
    dtype's rounding of the wall value ``u_w``: a Dirichlet value to ``½ ulp(u_w)``, a Neumann
    flux to ``3/(2dx) · ½ ulp(u_w) ≤ 3 eps |u_w| / (4dx)`` (the stencil's weight on the wall;
    ``eps`` 2⁻¹⁰ in float16, 2⁻⁷ in bfloat16, 2⁻²³ in float32). On ``dx = 1/128`` with wall values
    near 2 that is up to 0.19 in float16 and 1.5 in bfloat16 (against 2e-5 in float32): take a
    16-bit model's output in float32 where the flux matters.

    Args:
        bc: a :class:`pdes.Dirichlet`, :class:`pdes.Neumann` or :class:`pdes.Periodic`.
        grid: the grid of the constrained axis: a node grid holding both ends (its spacing
            scales the Neumann stencil), or a periodic grid for a periodic condition (no-op).
        axis: the constrained axis of the outputs, a negative index (``-1`` is the last).
        time: the time at which values given as functions of time are evaluated: a number, or
            a 1-D array of times lying along the output axis ``time_axis`` (multi-step outputs);
            one time in an array is that number where ``time_axis`` is ``axis`` (the defaults).
        side: ``"both"`` walls, or only the ``"left"`` (index 0) or ``"right"`` (index -1) one.
        time_axis: the output axis along which an array ``time`` lies (negative index).
    """

    seams = ("operator", "output")

    def __init__(
        self,
        bc: Dirichlet | Neumann | Periodic,
        grid: Grid1D,
        axis: int = -1,
        time: float | Sequence[float] | torch.Tensor | None = None,
        side: str = "both",
        time_axis: int = -1,
    ) -> None:
        super().__init__()
        if not isinstance(bc, KINDS):
            raise TypeError(f"bc must be a pdes Dirichlet, Neumann or Periodic, got {type(bc)}")
        if not isinstance(grid, Grid1D):
            raise TypeError(f"grid must be a pdes.Grid1D, got {type(grid)}")
        for name, value in (("axis", axis), ("time_axis", time_axis)):
            if isinstance(value, bool) or not isinstance(value, int) or value >= 0:
                raise ConstraintError(
                    f"{name} must be a negative int (-1 is the last axis of the outputs), "
                    f"got {value!r}"
                )
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if isinstance(bc, Periodic) and side != "both":
            raise ConstraintError(
                f"a periodic condition is two-sided: side must be 'both', got {side!r}"
            )
        if grid.periodic and not isinstance(bc, Periodic):
            raise ConstraintError(
                f"grid must be a non-periodic node grid for a {bc.name} condition, got a periodic "
                "grid (a periodic axis has no boundary); use Grid1D(n, lower, upper) holding both "
                "ends"
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
        self.bc = bc
        self.grid = grid
        self.axis = axis
        self.side = side
        self.time_axis = time_axis
        self.time = _check_time(time)
        if isinstance(self.time, tuple) and time_axis == axis:
            if len(self.time) > 1:
                raise ConstraintError(
                    f"time holds {len(self.time)} times, read as times along time_axis="
                    f"{time_axis}, the constrained axis: time_axis must differ from axis (times "
                    "lie along a wall); pass the outputs' time axis as time_axis, or one time as "
                    "a number (e.g. float(t[k]))"
                )
            self.time = self.time[0]

    # ------------------------------------------------------------------------------------------
    # What the condition is

    @property
    def kind(self) -> str:
        """``"dirichlet"``, ``"neumann"`` or ``"periodic"``."""
        return self.bc.name

    @property
    def sides(self) -> tuple[bool, bool]:
        """Whether the left (index 0) and the right (index -1) wall are constrained."""
        return (self.side != "right", self.side != "left")

    @property
    def is_identity(self) -> bool:
        """True for a periodic condition on a periodic grid, where there is nothing to correct."""
        return isinstance(self.bc, Periodic) and self.grid.periodic

    @property
    def time_dependent(self) -> bool:
        return not isinstance(self.bc, Periodic) and (
            callable(self.bc.left) or callable(self.bc.right)
        )

    @property
    def walls_key(self) -> tuple:
        """What the operator correction depends on (axis, kind, sides and grid; not the values)."""
        return (self.axis, self.kind, self.sides, self.grid)

    def at(self, time) -> BoundaryCondition:
        """The condition at ``time`` (a number or an array of times along ``time_axis``).

        ``None`` keeps the condition's own time.
        """
        if time is None:
            return self
        return BoundaryCondition(self.bc, self.grid, self.axis, time, self.side, self.time_axis)

    def prepare(self, *inputs: object, time: object = None, **kwargs: object) -> BoundaryCondition:
        """The condition at the call's ``time`` (the model's inputs are not used)."""
        return self.at(time)

    # ------------------------------------------------------------------------------------------
    # Values

    def values(
        self,
        batch: int,
        dtype: torch.dtype = torch.float64,
        device=None,
        shape: Sequence[int] | None = None,
    ) -> Values:
        """Left and right values (Dirichlet values or Neumann fluxes); ``None`` for a free side.

        Without ``shape``: ``(batch,)`` tensors (values must then be numbers or per sample).
        With ``shape``, the outputs' shape ``(batch, channel, *space)``: tensors broadcastable
        against a wall slice ``(batch, channel, *wall)`` with as many axes.
        """
        if isinstance(self.bc, Periodic):
            raise ConstraintError("a periodic condition has no boundary values")
        if self.time_dependent and self.time is None:
            raise ConstraintError(
                f"the {self.kind} values are functions of time: pass time= to the constrained "
                "model's call"
            )
        if shape is not None:
            self._check_shape(tuple(shape), "output")
        out = []
        for name, value, used in zip(
            ("left", "right"), (self.bc.left, self.bc.right), self.sides, strict=True
        ):
            if not used:
                out.append(None)
                continue
            label = f"{type(self.bc).__name__}.{name}"
            if shape is None:
                tensor = self._raw(label, value, batch, device)
                tensor = _per_sample(label, tensor, batch)
            else:
                tensor = self._wall_values(label, value, tuple(shape), device)
            out.append(tensor.to(dtype))
        return out[0], out[1]

    def _raw(self, label: str, value, batch: int, device) -> torch.Tensor:
        """``value`` at the (single) time as a float64 tensor, checked finite."""
        if isinstance(self.time, tuple):
            raise ConstraintError(
                f"{label}: this condition has times along axis {self.time_axis}; its values need "
                "the outputs' shape (values(..., shape=...))"
            )
        t = 0.0 if self.time is None else self.time
        raw = value(t) if callable(value) else value
        return _finite(label, torch.as_tensor(raw, dtype=torch.float64, device=device), t)

    def _wall_values(self, label: str, value, shape: tuple[int, ...], device) -> torch.Tensor:
        """``value`` shaped to broadcast against the wall slice of outputs of ``shape``."""
        wall = list(shape)
        del wall[self.axis]
        batch = shape[0]
        if isinstance(self.time, tuple) and callable(value):
            slices = []
            for t in self.time:
                raw = torch.as_tensor(value(t), dtype=torch.float64, device=device)
                slices.append(_per_sample(label, _finite(label, raw, t), batch))
            along = torch.stack(slices, -1)  # (batch, nt)
            position = _wall_index(len(shape), self.axis, self.time_axis)
            view = [batch] + [1] * (len(wall) - 1)
            view[position] = len(self.time)
            return along.reshape(view)
        if isinstance(self.time, tuple):
            raw = torch.as_tensor(value, dtype=torch.float64, device=device)
            tensor = _finite(label, raw, None)
        else:
            tensor = self._raw(label, value, batch, device)
        return _broadcast_to_wall(label, tensor, wall, warn_if_ambiguous=not callable(value))

    def _check_shape(self, shape: tuple[int, ...], name: str) -> None:
        if len(shape) < 1 - self.axis:
            raise ConstraintError(
                f"{name} must have a batch axis and axis {self.axis}, got shape {shape}"
            )
        if shape[self.axis] != self.grid.n:
            raise ConstraintError(
                f"{name} has {shape[self.axis]} points along axis {self.axis} but the grid has "
                f"{self.grid.n}"
            )
        if isinstance(self.time, tuple):
            if len(shape) < 1 - self.time_axis:
                raise ConstraintError(
                    f"{name} has no axis {self.time_axis} for the times, got shape {shape}"
                )
            if shape[self.time_axis] != len(self.time):
                single = len(self.time) == 1
                raise ConstraintError(
                    f"time holds {len(self.time)} times but {name} has {shape[self.time_axis]} "
                    f"points along time_axis {self.time_axis}"
                    + (" (for one time, pass a number, e.g. float(t[k]))" if single else "")
                )

    def wall_rows(self, space: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear relations ``R u = r`` a field meets once the condition is set, as rows over
        the flattened trailing axes ``space`` of the output (``axis`` must be one of them):
        ``(nodes, weights)``, both ``(r, 3)``, row ``i`` being ``Σ_j weights[i, j] u[nodes[i, j]]``.

        Dirichlet: the wall node; Neumann: the one-sided stencil ``3u₀ − 4u₁ + u₂`` (the flux
        up to ``2dx``); periodic: ``u₀ − u_N``; one row per wall line and side. No rows on a
        periodic grid (nothing is set).
        """
        space = tuple(int(s) for s in space)
        position = len(space) + self.axis
        if position < 0:
            raise ConstraintError(
                f"the condition on axis {self.axis} lies outside the constraint's grid axes "
                f"{space} (the output's last {len(space)}): its walls cannot be kept"
            )
        n = space[position]
        if n != self.grid.n:
            raise ConstraintError(
                f"the condition's grid has {self.grid.n} points but axis {self.axis} of the "
                f"constraint's grid {space} has {n}"
            )
        empty = torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64)
        if self.is_identity:
            return empty
        lines = torch.arange(math.prod(space)).reshape(space).movedim(position, -1).reshape(-1, n)
        if isinstance(self.bc, Periodic):
            ends, stencil = [(0, n - 1, 0)], (1.0, -1.0, 0.0)
        else:
            sides = [(0, 1, 2), (n - 1, n - 2, n - 3)]
            ends = [side for side, used in zip(sides, self.sides, strict=True) if used]
            stencil = (1.0, 0.0, 0.0) if isinstance(self.bc, Dirichlet) else (3.0, -4.0, 1.0)
        nodes = torch.cat([lines[:, list(end)] for end in ends])
        weights = torch.tensor(stencil, dtype=torch.float64).expand(nodes.shape)
        return nodes, weights

    # ------------------------------------------------------------------------------------------
    # Application

    def enforce(self, u: torch.Tensor, batch_axis: int = 0, values: Values | None = None):
        """``u`` ``(batch, channel, *space)`` with its walls replaced to meet the condition.

        ``batch_axis``: where the batch axis is (1 for an Ensemble's samples); ``values``: the
        left/right values already evaluated by :meth:`values` with ``shape`` (else evaluated).
        """
        if not isinstance(u, torch.Tensor) or u.ndim < 1:
            raise TypeError(f"output must be a tensor (batch, ..., {self.grid.n}), got {type(u)}")
        if u.ndim == 1:
            return self.enforce(u[None], values=values)[0]
        self._check_shape(tuple(u.shape[batch_axis:]), "output")
        if self.is_identity:
            return u
        if values is None and not isinstance(self.bc, Periodic):
            values = self.values(u.shape[batch_axis], u.dtype, u.device, u.shape[batch_axis:])
        left, right = (None, None) if values is None else values
        rank = u.ndim - batch_axis - 1  # a wall slice from the batch axis on
        left, right = (_per_sample_view(v, rank) for v in (left, right))
        return set_walls(u, self.axis, self.kind, self.grid.dx, left, right, precise=True)

    def apply_tensor(self, output: torch.Tensor, state: BoundaryCondition) -> torch.Tensor:
        return state.enforce(output)

    def apply_ensemble(self, output: Ensemble, state: BoundaryCondition) -> Ensemble:
        samples = output.samples
        if samples.ndim == 2:  # members of one field (members, n), as a tensor (n,) is taken
            return Ensemble(state.enforce(samples[:, None], batch_axis=1)[:, 0])
        return Ensemble(state.enforce(samples, batch_axis=1))

    def apply_gaussian(self, output: Gaussian, state: BoundaryCondition) -> Gaussian:
        """Mean mapped; covariance ``A Σ Aᵀ`` (full; a diagonal Dirichlet one stays diagonal)."""
        return state.map_gaussian(output)

    def map_gaussian(self, output: Gaussian) -> Gaussian:
        if self.axis != -1:
            raise ConstraintError(
                f"a Gaussian's covariance spans its last axis; axis must be -1, got {self.axis}"
            )
        if self.is_identity:
            return output
        mean = self.enforce(output.mean)
        if isinstance(self.bc, Dirichlet) and output.is_diagonal:
            var = output.cov.clone()
            for index, used in zip((0, -1), self.sides, strict=True):
                if used:
                    var[..., index] = 0.0
            return Gaussian(mean, var, diagonal=True)
        cov = output.dense_cov()
        if isinstance(self.bc, Dirichlet):  # A Σ Aᵀ: the pinned rows and columns become zero
            keep = torch.ones(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            for index, used in zip((0, -1), self.sides, strict=True):
                if used:
                    keep[index] = 0.0
            return Gaussian(mean, cov * (keep[:, None] * keep))  # one pass over cov
        cov = self._rows(cov)
        cov = self._rows(cov.transpose(-1, -2)).transpose(-1, -2)
        return Gaussian(mean, cov)

    def _rows(self, m: torch.Tensor) -> torch.Tensor:
        """``A_lin @ m`` for ``m (..., n, k)``: the linear part of the map, acting on rows."""
        if isinstance(self.bc, Periodic):
            first = last = 0.5 * (m[..., :1, :] + m[..., -1:, :])
        elif isinstance(self.bc, Dirichlet):
            first = last = torch.zeros_like(m[..., :1, :])
        else:
            first = (4.0 * m[..., 1:2, :] - m[..., 2:3, :]) / 3.0
            last = (4.0 * m[..., -2:-1, :] - m[..., -3:-2, :]) / 3.0
        left, right = self.sides
        return torch.cat(
            [first if left else m[..., :1, :], m[..., 1:-1, :], last if right else m[..., -1:, :]],
            dim=-2,
        )

    def __repr__(self) -> str:
        extra = "" if self.side == "both" else f", side={self.side!r}"
        if isinstance(self.time, tuple):
            extra += f", time=<{len(self.time)} times>, time_axis={self.time_axis}"
        else:
            extra += f", time={self.time}"
        return f"BoundaryCondition({self.bc!r}, {self.grid!r}, axis={self.axis}{extra})"


def set_walls(
    u: torch.Tensor,
    axis: int,
    kind: str,
    dx: float,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    precise: bool = True,
) -> torch.Tensor:
    """``u`` with the walls of ``axis`` set by a condition of ``kind`` (one home for the formula).

    ``left``/``right`` broadcast against a wall slice ``u.select(axis, 0)``; ``None`` leaves that
    wall as it is (periodic ignores them and sets both walls to their mean). ``precise`` solves
    the Neumann stencil in float64 (the output correction) rather than in ``u``'s dtype.
    """
    n = u.shape[axis]
    if kind == "periodic":
        mean = 0.5 * (u.narrow(axis, 0, 1) + u.narrow(axis, n - 1, 1))
        return torch.cat([mean, u.narrow(axis, 1, n - 2), mean], dim=axis)
    if kind == "dirichlet":
        row = list(u.shape)
        row[axis] = 1
        first = None if left is None else left.to(u.dtype).unsqueeze(axis).expand(row)
        last = None if right is None else right.to(u.dtype).unsqueeze(axis).expand(row)
    elif kind == "neumann":
        near = torch.cat([u.narrow(axis, 1, 2), u.narrow(axis, n - 3, 2)], dim=axis)
        if precise:
            near = near.double()
        zero = torch.zeros((), dtype=near.dtype, device=u.device)
        g_left = zero if left is None else left.to(near.dtype)
        g_right = zero if right is None else right.to(near.dtype)
        u0, un = neumann_boundary(near.movedim(axis, -1), dx, g_left, g_right)
        first = None if left is None else u0.to(u.dtype).unsqueeze(axis)
        last = None if right is None else un.to(u.dtype).unsqueeze(axis)
    else:
        raise ValueError(f"kind must be 'dirichlet', 'neumann' or 'periodic', got {kind!r}")
    start, stop = (0 if first is None else 1), (n if last is None else n - 1)
    pieces = [u.narrow(axis, start, stop - start)]
    if first is not None:
        pieces.insert(0, first)
    if last is not None:
        pieces.append(last)
    return torch.cat(pieces, dim=axis) if len(pieces) > 1 else u


# ----------------------------------------------------------------------------------------------
# Helpers


def _check_time(time) -> float | tuple[float, ...] | None:
    """``time`` as a finite float, a tuple of finite floats (1-D array of times), or ``None``."""
    if time is None:
        return None
    if isinstance(time, (int, float)) and not isinstance(time, bool):
        value = float(time)
        if not math.isfinite(value):
            raise ValueError(f"time must be a finite number, got {time}")
        return value
    try:
        times = torch.as_tensor(time, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"time must be a number or a 1-D array of times, got {type(time)}"
        ) from error
    if times.ndim == 0:
        return _check_time(times.item())
    if times.ndim != 1 or times.numel() == 0:
        raise ValueError(
            f"time must be a number or a 1-D array of times, got shape {tuple(times.shape)}"
        )
    if not torch.isfinite(times).all():
        raise ValueError("time must hold finite numbers, got NaN or inf")
    return tuple(times.tolist())


def _finite(label: str, tensor: torch.Tensor, t) -> torch.Tensor:
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{label} is NaN or inf" + ("" if t is None else f" at t={t}"))
    return tensor


def _per_sample(label: str, tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """A number or one value per sample as a ``(batch,)`` tensor."""
    if tensor.ndim == 0:
        return tensor.expand(batch)
    if tensor.shape != (batch,):
        raise ValueError(
            f"{label} must be a number or hold one value per sample ({batch},), "
            f"got shape {tuple(tensor.shape)}"
        )
    return tensor


def _per_sample_view(value: torch.Tensor | None, rank: int) -> torch.Tensor | None:
    """Values ``(batch,)`` (from :meth:`BoundaryCondition.values` without shape) as a wall view."""
    if value is None or value.ndim != 1 or rank <= 1:
        return value
    return value.reshape([-1] + [1] * (rank - 1))


def _wall_index(ndim: int, axis: int, time_axis: int) -> int:
    """Position of output axis ``time_axis`` in a wall slice (output without ``axis``)."""
    position, removed = ndim + time_axis, ndim + axis
    if position < 1:
        raise ConstraintError(f"time_axis {time_axis} is the batch axis of a {ndim}-D output")
    return position if position < removed else position - 1


def _broadcast_to_wall(
    label: str, tensor: torch.Tensor, wall: list[int], warn_if_ambiguous: bool = True
) -> torch.Tensor:
    """``tensor`` reshaped to broadcast against ``wall`` = ``(batch, channel, *rest)``.

    A ``(batch,)`` tensor is one value per sample. Where ``batch > 1`` is also a size in ``rest``
    it could be meant as a profile along the wall: a ``UserWarning`` says how it was read, unless
    ``warn_if_ambiguous`` is false (values of a function of time are per sample by definition).
    """
    rank, batch, rest = len(wall), wall[0], wall[2:]
    given = tuple(tensor.shape)
    if tensor.ndim == 0:
        return tensor.reshape([1] * rank)
    if given == (batch,):
        if warn_if_ambiguous and batch > 1 and batch in rest:
            warnings.warn(
                f"{label} of shape {given} was read as one value per sample, though {batch} is "
                f"also the wall's size along an axis (wall {tuple(rest)}); pass shape "
                f"{(1, *rest)} for the same profile along the wall in every sample, or "
                f"{(batch,) + (1,) * len(rest)} to say one value per sample",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        return tensor.reshape([batch] + [1] * (rank - 1))
    if tensor.ndim == rank - 1 and rank >= 2:
        tensor = tensor.unsqueeze(1)  # (batch, *wall) without the channel axis
    if tensor.ndim == rank and all(s in (1, w) for s, w in zip(tensor.shape, wall, strict=True)):
        return tensor
    along_wall = f"{(batch, *rest)} (batch, *wall) or " if rest else ""
    raise ValueError(
        f"{label} must be a number, one value per sample ({batch},), or a tensor {along_wall}"
        f"{tuple(wall)} (batch, channel{', *wall' if rest else ''}) for outputs with this wall, "
        f"got shape {given}"
    )
