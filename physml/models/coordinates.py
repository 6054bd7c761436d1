"""Position as input channels: on a periodic domain with no jump at the box's edge, elsewhere at
the grid's own points.

neuralop's FNO appends the grid coordinates ``k/n ∈ [0, 1)`` per space axis to its input
(``positional_embedding="grid"``). On a periodic domain that channel jumps from 1 back to 0
where the box wraps, so a model given it sees an edge the physics does not have.
:class:`PeriodicCoordinates` appends ``cos 2πk/n`` and ``sin 2πk/n`` of each grid index ``k``
instead: smooth across the wrap, and, on grids whose first point is the period's origin, the
same at the same place on a finer grid of the same period.

On a grid that holds both walls (``n`` nodes, ``x_k = x_0 + k·L/(n − 1)``) ``k/n`` is not the
point's place either, and it moves as the grid is refined (``x = 1``: 0.970 on 33 nodes, 0.985
on 65), so an FNO scored on another grid than it learned on reads other positions at the same
points. :class:`GridCoordinates` appends each point's coordinate on the box, for node or
cell-centred grids, the same at the same point on every grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PeriodicCoordinates(nn.Module):
    """``(batch, c, *space)`` → ``(batch, c + 2·len(space), *space)``: the input, then the cosine
    and the sine of each axis's phase ``2πk/n`` (``k = 0 … n − 1``, the grid's points on a period
    that leaves out its end), for ``dims`` space axes. No parameters."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ValueError(f"dims must be a positive integer (space axes), got {dims!r}")
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dims)
        space = x.shape[2:]
        precise = torch.float64 if x.dtype == torch.float64 else torch.float32  # MPS: no float64
        channels = []
        for axis, n in enumerate(space):
            phase = torch.arange(n, device=x.device, dtype=precise) * (2 * math.pi / n)
            shape = [1] * self.dims
            shape[axis] = n
            for wave in (torch.cos(phase), torch.sin(phase)):
                channels.append(wave.to(x.dtype).view(shape).expand(space))
        position = torch.stack(channels).expand(x.shape[0], -1, *space)
        return torch.cat([x, position], dim=1)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def _check_input(x: object, dims: int) -> None:
    """``x`` a floating-point tensor ``(batch, channel, *space)`` with ``dims`` space axes."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor (batch, channel, *space), got {got}")
    if x.ndim != dims + 2:
        raise ValueError(
            f"x must be (batch, channel, *space) with {dims} space axes, got shape {tuple(x.shape)}"
        )


GRID_KINDS = ("node", "cell")


class GridCoordinates(nn.Module):
    """``(batch, c, *space)`` → ``(batch, c + dims, *space)``: the input, then each axis's
    position of every point as a fraction of the domain, in [0, 1] (the scale of neuralop's grid
    embedding), at whatever size the input has along it. ``kind="node"``: ``n`` points with both
    walls included, at ``k/(n − 1)`` (as the pdes recipes write them); ``kind="cell"``: ``n``
    cell centres at ``(k + ½)/n``. A point of the domain gets the same value on every grid that
    holds it (neuralop's grid embedding gives ``k/n``, which on a node grid moves a point as the
    grid is refined). No parameters."""

    def __init__(self, dims: int, kind: str = "node") -> None:
        super().__init__()
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ValueError(f"dims must be a positive integer (space axes), got {dims!r}")
        if kind not in GRID_KINDS:
            raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
        self.dims, self.kind = dims, kind
        self._cached: tuple[tuple, torch.Tensor] | None = None

    def fractions(self, n: int) -> torch.Tensor:
        """The ``n`` positions ``(n,)`` along an axis of ``n`` points, float64, each correctly
        rounded, so a point keeps its value, bit for bit, on a finer grid."""
        k = torch.arange(n, dtype=torch.float64)
        if self.kind == "node":
            return k / max(n - 1, 1)
        return (2 * k + 1) / (2 * n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dims)
        space = tuple(x.shape[2:])
        key = (space, x.device, x.dtype)
        if self._cached is None or self._cached[0] != key:
            axes = [self.fractions(n) for n in space]
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # on the CPU, in float64
            self._cached = key, grid.to(dtype=x.dtype).to(x.device)
        position = self._cached[1].expand(x.shape[0], -1, *space)
        return torch.cat([x, position], dim=1)

    def extra_repr(self) -> str:
        return f"dims={self.dims}, kind={self.kind!r}"
