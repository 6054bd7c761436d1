"""Uniform 1-D and 2-D grids: coordinates, spacing, trapezoid weights and boundary indices.

Everything in physml that integrates over space uses these weights, so a conservation check, a
dataset and a constraint all agree on what "total mass" means.

Node-centred grids hold the solution at points ``lower + i*dx``; the end points are boundary nodes
(unless the axis is periodic, where ``upper`` is the same point as ``lower`` and is left out).
Cell-centred grids hold cell averages at ``lower + (i + 1/2)*dx``; the boundary lies on the outer
faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .checks import FLOAT, choice, finite_number, floating_dtype, positive_int

GridKind = Literal["node", "cell"]


@dataclass(frozen=True)
class Grid1D:
    """A uniform grid of ``n`` points on ``[lower, upper]``.

    Attributes:
        n: number of nodes (``kind='node'``) or cells (``kind='cell'``).
        lower, upper: the interval's ends.
        kind: ``'node'`` (values at points) or ``'cell'`` (cell averages at cell centres).
        periodic: whether ``upper`` is identified with ``lower``.
    """

    n: int
    lower: float = 0.0
    upper: float = 1.0
    kind: GridKind = "node"
    periodic: bool = False

    def __post_init__(self) -> None:
        choice("kind", self.kind, ("node", "cell"))
        if not isinstance(self.periodic, bool):
            raise TypeError(f"periodic must be True or False, got {self.periodic!r}")
        minimum = 2 if (self.kind == "cell" or self.periodic) else 3
        object.__setattr__(self, "n", positive_int("n", self.n, minimum))
        object.__setattr__(self, "lower", finite_number("lower", self.lower))
        object.__setattr__(self, "upper", finite_number("upper", self.upper))
        if not float(self.upper) > float(self.lower):
            raise ValueError(f"upper must exceed lower, got lower={self.lower}, upper={self.upper}")

    @property
    def length(self) -> float:
        return float(self.upper) - float(self.lower)

    @property
    def dx(self) -> float:
        """Spacing between neighbouring points."""
        if self.kind == "node" and not self.periodic:
            return self.length / (self.n - 1)
        return self.length / self.n

    def coordinates(self, dtype: torch.dtype = FLOAT, device: torch.device | str | None = None):
        """The ``n`` point positions ``(n,)`` in ``dtype``, a floating-point torch dtype."""
        index = torch.arange(self.n, dtype=floating_dtype("dtype", dtype), device=device)
        offset = 0.5 if self.kind == "cell" else 0.0
        return float(self.lower) + (index + offset) * self.dx

    def weights(self, dtype: torch.dtype = FLOAT, device: torch.device | str | None = None):
        """Quadrature weights ``(n,)``: trapezoid on nodes, midpoint on cells or periodic axes.

        ``(u * grid.weights()).sum(-1)`` approximates the integral of ``u`` over the domain.
        ``dtype`` must be a floating-point torch dtype.
        """
        w = torch.full((self.n,), self.dx, dtype=floating_dtype("dtype", dtype), device=device)
        if self.kind == "node" and not self.periodic:
            w[0] = w[-1] = 0.5 * self.dx
        return w

    def integrate(self, u: torch.Tensor) -> torch.Tensor:
        """Integral over the domain along the last axis of ``u`` (which must have ``n`` entries)."""
        _check_integrand(u, 1)
        if u.shape[-1] != self.n:
            raise ValueError(f"u must have {self.n} entries along its last axis, got {u.shape}")
        return (u * self.weights(dtype=u.real.dtype, device=u.device)).sum(-1)

    @property
    def boundary_indices(self) -> tuple[int, ...]:
        """Indices of the points next to (cell) or on (node) the two walls; empty if periodic."""
        return () if self.periodic else (0, self.n - 1)

    def refined(self, factor: int = 2) -> Grid1D:
        """The same domain with spacing divided by ``factor`` (nodes of this grid stay nodes)."""
        positive_int("factor", factor)
        if self.kind == "node" and not self.periodic:
            n = (self.n - 1) * factor + 1
        else:
            n = self.n * factor
        return Grid1D(n, self.lower, self.upper, self.kind, self.periodic)

    def describe(self) -> dict[str, object]:
        """Attributes that let a dataset file say what grid it holds."""
        return {
            "n": self.n,
            "lower": float(self.lower),
            "upper": float(self.upper),
            "kind": self.kind,
            "periodic": self.periodic,
        }


@dataclass(frozen=True)
class Grid2D:
    """The tensor product of two 1-D grids; arrays are indexed ``[..., x, y]``."""

    x: Grid1D
    y: Grid1D

    def __post_init__(self) -> None:
        for name, axis in (("x", self.x), ("y", self.y)):
            if not isinstance(axis, Grid1D):
                raise TypeError(f"{name} must be a pdes.Grid1D, got {type(axis).__name__}")

    @classmethod
    def square(
        cls, n: int, lower: float = 0.0, upper: float = 1.0, kind: GridKind = "node", periodic=False
    ) -> Grid2D:
        axis = Grid1D(n, lower, upper, kind, periodic)
        return cls(axis, axis)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.x.n, self.y.n)

    @property
    def spacing(self) -> tuple[float, float]:
        return (self.x.dx, self.y.dx)

    def coordinates(self, dtype: torch.dtype = FLOAT, device: torch.device | str | None = None):
        """Meshgrids ``(X, Y)``, each ``(nx, ny)``, with ``X[i, j] = x_i`` and ``Y[i, j] = y_j``."""
        return torch.meshgrid(
            self.x.coordinates(dtype, device), self.y.coordinates(dtype, device), indexing="ij"
        )

    def weights(self, dtype: torch.dtype = FLOAT, device: torch.device | str | None = None):
        """Product quadrature weights ``(nx, ny)``."""
        return torch.outer(self.x.weights(dtype, device), self.y.weights(dtype, device))

    def integrate(self, u: torch.Tensor) -> torch.Tensor:
        """Integral over the domain along the last two axes of ``u``."""
        _check_integrand(u, 2)
        if tuple(u.shape[-2:]) != self.shape:
            raise ValueError(f"u must end in shape {self.shape}, got {tuple(u.shape)}")
        return (u * self.weights(dtype=u.real.dtype, device=u.device)).sum((-2, -1))

    def boundary_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean ``(nx, ny)``: True on the points of the non-periodic walls."""
        mask = torch.zeros(self.shape, dtype=torch.bool, device=device)
        for axis, grid in ((0, self.x), (1, self.y)):
            for index in grid.boundary_indices:
                mask.select(axis, index).fill_(True)
        return mask

    def describe(self) -> dict[str, object]:
        return {"x": self.x.describe(), "y": self.y.describe()}


def _check_integrand(u: object, axes: int) -> None:
    """``u`` must be a floating-point (or complex) tensor with at least ``axes`` axes: the
    weights take its dtype, and an integer one would round them to zero."""
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    if not (u.is_floating_point() or u.is_complex()):
        raise TypeError(f"u must hold floating-point values, got dtype {u.dtype}")
    if u.ndim < axes:
        what = "1 axis" if axes == 1 else f"{axes} axes"
        raise ValueError(f"u must have at least {what}, got shape {tuple(u.shape)}")
