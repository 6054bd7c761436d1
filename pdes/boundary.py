"""Boundary conditions of 1-D problems, as plain value objects.

Values may be a number, a tensor with one value per sample ``(sample,)``, or a function of time
returning either. Neumann values are the derivative ``du/dx`` in the +x direction (not the outward
normal), so an insulated wall is ``0`` on both sides and a heat source at the right wall is
positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import checks
from .checks import FLOAT

BoundaryValue = float | torch.Tensor | Callable[[float], float | torch.Tensor]


def evaluate(name: str, value: BoundaryValue, t: float, batch: int, device=None) -> torch.Tensor:
    """A boundary value at time ``t`` as a float64 tensor ``(batch,)``."""
    raw = value(t) if callable(value) else value
    if type(raw) is float or type(raw) is int:  # the common case, per step: no tensor checks
        if not math.isfinite(raw):
            raise ValueError(f"{name} is NaN or inf at t={t}")
        return torch.full((batch,), raw, dtype=FLOAT, device=device)
    expected = f"a number or hold one value per sample ({batch},)"
    out = checks.parameter(name, raw, expected, device)
    if out.ndim == 0:
        out = out.expand(batch)
    if out.shape != (batch,):
        raise ValueError(f"{name} must be {expected}, got shape {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} is NaN or inf at t={t}")
    return out


@dataclass(frozen=True)
class _TwoValues:
    """A condition given by one value at each end."""

    left: BoundaryValue = 0.0
    right: BoundaryValue = 0.0

    def values(self, t: float, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Both end values at time ``t`` as ``(batch,)`` float64 tensors."""
        kind = type(self).__name__
        return (
            evaluate(f"{kind}.left", self.left, t, batch, device),
            evaluate(f"{kind}.right", self.right, t, batch, device),
        )


@dataclass(frozen=True)
class Dirichlet(_TwoValues):
    """Prescribed values ``u = left`` at the lower end and ``u = right`` at the upper end."""

    name = "dirichlet"


@dataclass(frozen=True)
class Neumann(_TwoValues):
    """Prescribed derivatives: ``du/dx = left`` at the lower end, ``du/dx = right`` at the upper."""

    name = "neumann"


@dataclass(frozen=True)
class Periodic:
    """The two ends are the same point."""

    name = "periodic"


BoundaryCondition = Dirichlet | Neumann | Periodic
KINDS: dict[str, type] = {"dirichlet": Dirichlet, "neumann": Neumann, "periodic": Periodic}


def parse(
    bc: BoundaryCondition | str, allowed: tuple[str, ...] = tuple(KINDS)
) -> BoundaryCondition:
    """Accept a boundary object or its name (homogeneous values); reject kinds not allowed."""
    if isinstance(bc, str):
        key = bc.strip().lower()
        if key not in KINDS:
            raise ValueError(f"bc must be one of {list(KINDS)}, got {bc!r}")
        bc = KINDS[key]()
    if not isinstance(bc, (Dirichlet, Neumann, Periodic)):
        raise TypeError(f"bc must be Dirichlet, Neumann, Periodic or their name, got {type(bc)}")
    if bc.name not in allowed:
        raise ValueError(f"bc must be one of {list(allowed)} for this problem, got {bc.name!r}")
    return bc
