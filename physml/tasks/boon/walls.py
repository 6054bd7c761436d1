"""The walls of a case: its :class:`BoundaryCondition` objects filled with each batch's values.

The conditions themselves (kind, grid, axis, sides) live in the ``BoundaryCondition`` objects a
:class:`Walls` holds; imposing them is :func:`physml.constrain`'s job. What is left here is what
the experiment needs besides: building a batch's conditions from per-sample values, measuring the
violation independently in float64, selecting the interior, and the wall values as input channels
for the :data:`~physml.tasks.boon.models.PEER` baseline.

Per-sample values are float64 tensors whose first axis is the sample; ``None`` for periodic.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from pdes import Dirichlet, Grid2D
from pdes.heat import one_sided_flux

from ...constraints import BoundaryCondition

F64 = torch.float64


class Walls:
    """The boundary conditions of a case; ``template`` holds them with placeholder values."""

    template: tuple[BoundaryCondition, ...]

    @property
    def kind(self) -> str:
        """``"dirichlet"``, ``"neumann"`` or ``"periodic"`` (one kind per case)."""
        return self.template[0].kind

    @property
    def dx(self) -> float:
        """Spacing normal to the first condition's walls (the Neumann stencil's)."""
        return self.template[0].grid.dx

    def conditions(self, values: torch.Tensor | None) -> list[BoundaryCondition]:
        """The conditions holding one batch's values (what ``constrain`` gets)."""
        raise NotImplementedError

    def error(self, u: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """Largest violation per sample ``(sample,)``, computed independently in float64."""
        raise NotImplementedError

    def interior(self, u: torch.Tensor) -> torch.Tensor:
        """The nodes off the walls."""
        raise NotImplementedError

    def ends(self, u: torch.Tensor) -> torch.Tensor:
        """The wall nodes of ``u`` (for the float32 floor)."""
        raise NotImplementedError

    def channels(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The prescribed values as input fields ``(batch, 2, *space)`` shaped like ``like``
        (the peer baseline's extra channels): each wall's value spread over the domain."""
        raise ValueError(f"{type(self).__name__} has no wall-value input channels")


class AxisWalls(Walls):
    """One condition at both ends of one axis: ``axis=-1`` of 1-D fields ``(sample, channel, n)``,
    ``axis=-2`` of multi-step fields ``(sample, channel, nx, nt)``.

    Values ``(sample, 2, *wall)``: left and right values (Dirichlet values or Neumann fluxes
    ``du/dx``), per sample and, for ``(x, t)`` fields, per output time.
    """

    def __init__(self, condition: BoundaryCondition) -> None:
        if not isinstance(condition, BoundaryCondition) or condition.side != "both":
            raise TypeError(f"condition must be a two-sided BoundaryCondition, got {condition!r}")
        self.template = (condition,)

    @property
    def condition(self) -> BoundaryCondition:
        return self.template[0]

    @property
    def axis(self) -> int:
        return self.condition.axis

    @property
    def grid(self):
        """The ``Grid1D`` of the constrained axis."""
        return self.condition.grid

    def conditions(self, values):
        c = self.condition
        if c.kind == "periodic":
            return [c]
        if values is None or values.ndim < 2 or values.shape[1] != 2:
            raise ValueError(
                f"values must be a (batch, 2, ...) tensor of (left, right) values for a {c.kind} "
                f"condition, got {None if values is None else tuple(values.shape)}"
            )
        bc = dataclasses.replace(c.bc, left=values[:, 0], right=values[:, 1])
        return [BoundaryCondition(bc, c.grid, axis=c.axis)]

    def error(self, u, values):
        """Dirichlet ``|u − g|``, Neumann ``|∂u/∂x − g|`` by the second-order one-sided stencil,
        periodic ``|u₀ − u_N|``: the largest over each sample's walls."""
        u = u.to(F64).movedim(self.axis, -1)
        if self.kind == "periodic":
            return (u[..., 0] - u[..., -1]).abs().flatten(1).amax(1)
        if self.kind == "dirichlet":
            left, right = u[..., 0], u[..., -1]
        else:
            left, right = one_sided_flux(u, self.dx)
        errors = []
        for side, ends in enumerate((left, right)):
            g = values[:, side].to(F64)  # (sample, *wall) without the channel axis
            g = g.reshape(g.shape[0], *[1] * (ends.ndim - g.ndim), *g.shape[1:])
            errors.append((ends - g).abs().flatten(1).amax(1))
        return torch.maximum(*errors)

    def interior(self, u):
        return u.narrow(self.axis, 1, u.shape[self.axis] - 2)

    def ends(self, u):
        return torch.stack([u.select(self.axis, 0), u.select(self.axis, -1)])

    def channels(self, values, like):
        wall = list(like.shape[2:])
        del wall[self.axis]
        shape = (like.shape[0], 2, *wall)
        if not isinstance(values, torch.Tensor) or tuple(values.shape) != shape:
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else values
            raise ValueError(f"values must be a {shape} tensor of (left, right) values, got {got}")
        return values.to(like.dtype).unsqueeze(self.axis).expand(-1, -1, *like.shape[2:])

    def __repr__(self) -> str:
        return f"AxisWalls({self.condition!r})"


class CavityWalls(Walls):
    """No-slip walls and a moving lid for velocity fields ``(sample, 2·steps, n, n)``.

    Channels are ``vx`` at every step, then ``vy``; arrays are ``[..., x, y]`` and the lid is the
    top wall ``y = 1``. Values ``(sample,)``: the lid speed ``U``. ``vx = U`` on the whole top row
    (corners included, as in the solver's data) and 0 on the other walls; ``vy = 0`` on every wall:
    Dirichlet zero on both ``x`` walls, then on the ``y`` walls with the lid's values (applied
    second, so the lid wins at its corners).
    """

    def __init__(self, grid: Grid2D, steps: int) -> None:
        self.grid, self.steps = grid, steps
        self.template = (
            BoundaryCondition(Dirichlet(0.0, 0.0), grid.x, axis=-2),
            BoundaryCondition(Dirichlet(0.0, 0.0), grid.y, axis=-1),
        )

    def lid(self, values: torch.Tensor) -> torch.Tensor:
        """The top-wall values per channel ``(sample, 2·steps, 1)``: ``U`` for vx, 0 for vy."""
        top = torch.zeros(values.shape[0], 2 * self.steps, 1, dtype=values.dtype)
        top[:, : self.steps] = values[:, None, None]
        return top

    def conditions(self, values):
        if values is None or values.ndim != 1:
            raise ValueError(f"values must be the lid speeds (batch,), got {values!r}")
        sides, top = self.template
        bc = dataclasses.replace(top.bc, right=self.lid(values))
        return [sides, BoundaryCondition(bc, top.grid, axis=top.axis)]

    def error(self, u, values):
        u = u.to(F64)
        wall = torch.zeros_like(u)
        wall[:, : self.steps, :, -1] = values.to(F64)[:, None, None]
        mask = self.grid.boundary_mask(u.device)
        return (u - wall)[..., mask].abs().flatten(1).amax(1)

    def interior(self, u):
        return u[..., 1:-1, 1:-1]

    def ends(self, u):
        return u[..., self.grid.boundary_mask(u.device)]

    def __repr__(self) -> str:
        return f"CavityWalls({self.grid!r}, steps={self.steps})"


def float32_flux_floor(u: torch.Tensor, walls: Walls) -> float:
    """The Neumann flux error that rounding exact wall values to float32 can leave (else 0).

    Half an ulp of the largest wall value, ``2^(⌊log₂|u|⌋ − 24)``, times ``3/(2dx)``.
    """
    if walls.kind != "neumann":
        return 0.0
    largest = walls.ends(u).abs().max().item()
    if largest == 0.0:
        return 0.0
    return 2.0 ** (math.floor(math.log2(largest)) - 24) * 3.0 / (2.0 * walls.dx)
