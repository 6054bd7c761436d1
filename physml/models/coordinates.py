"""Position on a periodic domain as input channels, with no jump at the box's edge.

neuralop's FNO appends the grid coordinates ``x ∈ [0, 1]`` per space axis to its input
(``positional_embedding="grid"``). On a periodic domain that channel jumps from 1 back to 0
where the box wraps, so a model given it sees an edge the physics does not have.
:class:`PeriodicCoordinates` appends ``cos 2πk/n`` and ``sin 2πk/n`` of each grid index ``k``
instead: smooth across the wrap, and, on grids whose first point is the period's origin, the
same at the same place on a finer grid of the same period.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PeriodicCoordinates(nn.Module):
    """``(batch, c, *space)`` → ``(batch, c + 2·len(space), *space)``: the input, then the cosine
    and the sine of each axis's phase ``2πk/n`` (``k = 0 … n − 1``, the grid's points on a period
    that leaves out its end). No parameters."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ValueError(f"dims must be a positive integer (space axes), got {dims!r}")
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(
                f"x must be a floating-point tensor (batch, channel, *space), got {got}"
            )
        if x.ndim != self.dims + 2:
            raise ValueError(
                f"x must be (batch, channel, *space) with {self.dims} space axes, got shape "
                f"{tuple(x.shape)}"
            )
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
