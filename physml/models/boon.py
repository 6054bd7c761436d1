"""BOON: a 1-D Fourier neural operator whose every Fourier layer meets the boundary condition.

Each Fourier layer of a :class:`neuralop.models.FNO` applies a linear (affine, with the spectral
bias) operator ``K x = conv(x) + skip(x)`` — spectral convolution plus pointwise skip path — before
its nonlinearity and channel MLP. :class:`BOON` corrects that operator in every layer and the model
output once more (DESIGN §4):

- Dirichlet and Neumann: ``K`` is probed *once per forward and layer* with three inputs (zero,
  a unit spike at the first node, a unit spike at the last node; the spike is the same in every
  channel), appended to the data batch so that ``conv`` and ``skip`` still run once (on
  ``batch + 3`` inputs; the layers treat batch entries independently). The responses give the
  bias and, per output channel ``c``, the columns ``p₀, p_N`` and the corner entries
  ``K₀₀ K₀ₙ Kₙ₀ Kₙₙ``. The corrected operator is ``K̃x = Kx + p₀ d₀ + p_N d_N``, with
  ``(d₀, d_N)`` solved from the 2 × 2 corner system by elimination with the pivots ``Kₙₙ`` and
  ``K̃₀₀ = K₀₀ − K₀ₙKₙ₀/Kₙₙ`` such that, channel by channel, ``(K̃x)₀ = K̃₀₀ x₀`` and
  ``(K̃x)_N = Kₙₙ x_N`` (plus the bias): the first output row depends only on the first input
  node and the last row only on the last one, and the correction reaches the interior through
  the probe responses — no second pass of ``K`` over the data. Then the end nodes of every
  hidden channel are set: Dirichlet to the prescribed values, Neumann to the values that make
  the one-sided second-order stencil equal the prescribed flux (grid spacing on both sides).
- Periodic: the ends of every hidden channel are set to their mean.

Channel mixing. ``K`` mixes channels; like the reference BOON the correction is channel-wise:
the probe spike fills all input channels, so the corner entries of output channel ``c`` are
summed over input channels, and the elimination for channel ``c`` uses channel ``c`` of the input.
The decoupling above is exact for every input (it is a property of ``K̃``, checked by probing in
the tests); what is channel-wise is only which probe columns carry the correction.

In the hidden layers the boundary values are written into every channel of the linear part; the
block's pointwise nonlinearity and channel MLP then act on them as on any node, so the exact
guarantee is the one at the output. The hooks that do this are attached to the wrapped FNO only
while :class:`BOON` runs it; calling the FNO directly gives the plain model. FNOs with domain
padding, normalisation, a stabiliser, resolution scaling or more than one dimension are not
supported by the kernel correction.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack

import torch
from torch import nn

from pdes.boundary import Dirichlet, Neumann, Periodic
from pdes.grid import Grid1D

from ..constraints.boundary import BoundaryCondition
from ..errors import ConstraintError

TOLERANCE = 1e-7


def _safe(value: torch.Tensor, tol: float = TOLERANCE) -> torch.Tensor:
    """``value`` with entries below ``tol`` in magnitude replaced by ``tol`` (no zero pivots)."""
    return torch.where(value.abs() < tol, tol, value)


def kernel_support(model: nn.Module) -> str | None:
    """Why ``model`` cannot take BOON's kernel correction, or ``None`` if it can."""
    try:
        from neuralop.models import FNO
    except ImportError:  # pragma: no cover - neuralop is a dependency
        return "neuraloperator is not installed"
    if not isinstance(model, FNO):
        return f"model is a {type(model).__name__}, not a neuralop.models.FNO"
    blocks = model.fno_blocks
    if model.n_dim != 1:
        return f"the FNO is {model.n_dim}-D; the kernel correction is 1-D"
    if model.domain_padding is not None:
        return "the FNO uses domain padding (the boundary nodes move inside the padded domain)"
    if blocks.norm is not None:
        return "the FNO normalises inside its Fourier layers"
    if blocks.stabilizer is not None:
        return "the FNO applies a stabiliser before its spectral convolutions"
    if blocks.resolution_scaling_factor is not None:
        return "the FNO rescales the resolution inside its Fourier layers"
    if blocks.complex_data:
        return "the FNO works on complex data"
    if blocks.in_channels != blocks.out_channels:
        return "the FNO's Fourier layers change the number of channels"
    return None


class CorrectedLayer:
    """BOON's correction of one Fourier layer's linear operator ``x ↦ conv(x) + skip(x)``.

    ``conv`` and ``skip`` are the layer's modules (``skip`` may be ``None``); ``kind`` is
    ``"dirichlet"``, ``"neumann"`` or ``"periodic"``; ``dx`` the grid spacing. The probes are
    refreshed by :meth:`probe` (BOON does it once per forward).
    """

    def __init__(self, conv: nn.Module, skip: nn.Module | None, kind: str, dx: float) -> None:
        self.conv = conv
        self.skip = skip
        self.kind = kind
        self.dx = dx
        self._probes: tuple[torch.Tensor, ...] | None = None
        self._spikes: tuple[tuple, torch.Tensor] | None = None

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """``K x`` without correction ``(batch, channel, n)``."""
        out = self.conv.forward(x)
        return out if self.skip is None else out + self.skip.forward(x)

    def spikes(self, like: torch.Tensor) -> torch.Tensor:
        """The probe batch ``(3, channel, n)``: zero, a unit spike at node 0, one at node N."""
        channels, n = like.shape[1], like.shape[-1]
        key = (channels, n, like.dtype, like.device)
        if self._spikes is None or self._spikes[0] != key:
            spikes = torch.zeros(3, channels, n, dtype=like.dtype, device=like.device)
            spikes[1, :, 0] = 1.0
            spikes[2, :, -1] = 1.0
            self._spikes = (key, spikes)
        return self._spikes[1]

    def probe(self, like: torch.Tensor, response: torch.Tensor | None = None) -> None:
        """Read ``K``'s bias and corner entries from its response to :meth:`spikes`.

        ``response`` is ``K`` applied to the spikes when the caller already has it (BOON appends
        the spikes to the data batch so that ``K`` runs once); otherwise ``K`` is called here.
        """
        if self.kind == "periodic":
            return
        if response is None:
            response = self.plain(self.spikes(like))
        n = response.shape[-1]
        columns = response[1:] - response[:1]  # (2, channel, n): K e₀ and K e_N
        corner = columns[..., :: n - 1]  # (spike, channel, row) at rows 0 and N
        k00, kn0 = corner[0, :, 0], corner[0, :, 1]
        k0n, knn = corner[1, :, 0], corner[1, :, 1]
        knn = _safe(knn)
        pivot = _safe(k00 - k0n * kn0 / knn)
        bias = response[0][:, :: n - 1]  # (channel, 2)
        self._probes = (bias, columns[0], columns[1], k0n, k0n / knn, kn0, knn, pivot)

    def linear(self, x: torch.Tensor, kx: torch.Tensor | None = None) -> torch.Tensor:
        """The eliminated operator ``K̃ x`` before values are set; ``kx = K x`` if known."""
        kx = self.plain(x) if kx is None else kx
        if self.kind == "periodic":
            return kx
        if self._probes is None:
            self.probe(x)
        bias, first, last, k0n, ratio, kn0, knn, pivot = self._probes
        n = x.shape[-1]
        ends = kx[..., :: n - 1] - bias  # (batch, channel, 2): rows 0 and N of K x without bias
        x0, xn = x[..., 0], x[..., -1]
        d0 = x0 - (ends[..., 0] - ratio * ends[..., 1] + k0n * xn) / pivot
        dn = xn - (ends[..., 1] + kn0 * d0) / knn
        return torch.addcmul(torch.addcmul(kx, d0[..., None], first), dn[..., None], last)

    def set_values(
        self, y: torch.Tensor, left: torch.Tensor | None, right: torch.Tensor | None
    ) -> torch.Tensor:
        """``y`` with every channel's end nodes set by the condition (values ``(batch, 1)``)."""
        if self.kind == "periodic":
            mean = 0.5 * (y[..., :1] + y[..., -1:])
            return torch.cat([mean, y[..., 1:-1], mean], dim=-1)
        if self.kind == "dirichlet":
            first = left.expand(y.shape[:-1])
            last = right.expand(y.shape[:-1])
        else:
            first = (4.0 * y[..., 1] - y[..., 2] - 2.0 * self.dx * left) / 3.0
            last = (4.0 * y[..., -2] - y[..., -3] + 2.0 * self.dx * right) / 3.0
        return torch.cat([first[..., None], y[..., 1:-1], last[..., None]], dim=-1)

    def __call__(
        self,
        x: torch.Tensor,
        left: torch.Tensor | None = None,
        right: torch.Tensor | None = None,
        kx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The corrected layer: eliminated operator, then boundary values set."""
        return self.set_values(self.linear(x, kx), left, right)


class BOON(nn.Module):
    """A 1-D FNO corrected so that its outputs (and every Fourier layer) meet ``bc``.

    Args:
        model: a 1-D :class:`neuralop.models.FNO`, ``(batch, in, n)`` to ``(batch, out, n)``.
        bc: a :mod:`pdes.boundary` condition or a :class:`BoundaryCondition` on ``grid``.
        grid: the node grid of the last axis.
        kernel: ``"auto"`` corrects the Fourier layers when the model supports it and otherwise
            warns and corrects only the output; ``True`` refuses unsupported models;
            ``False`` corrects only the output.

    ``forward(x, t=None)``: ``t`` is the time at which boundary values given as functions of time
    are evaluated. Every output channel meets the condition.
    """

    def __init__(
        self,
        model: nn.Module,
        bc: Dirichlet | Neumann | Periodic | BoundaryCondition,
        grid: Grid1D,
        kernel: bool | str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model)}")
        if isinstance(bc, BoundaryCondition):
            if bc.grid != grid:
                raise ConstraintError(f"bc is on {bc.grid}, but grid is {grid}")
            condition = bc
        else:
            condition = BoundaryCondition(bc, grid)
        if kernel not in (True, False, "auto"):
            raise ValueError(f"kernel must be True, False or 'auto', got {kernel!r}")
        self.model = model
        self.condition = condition
        self.grid = grid
        reason = kernel_support(model) if kernel else None
        if reason is not None and kernel is True:
            raise ConstraintError(f"BOON cannot correct this model's kernels: {reason}")
        if reason is not None:
            warnings.warn(
                f"BOON: {reason}; only the output is corrected (no kernel correction)",
                stacklevel=2,
            )
        self.kernel = bool(kernel) and reason is None
        self.layers: list[CorrectedLayer] = []
        if self.kernel:
            blocks = model.fno_blocks
            skips = blocks.fno_skips
            self.layers = [
                CorrectedLayer(conv, None if skips is None else skips[i], condition.kind, grid.dx)
                for i, conv in enumerate(blocks.convs)
            ]

    def forward(self, x: torch.Tensor, t: float | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.grid.n:
            raise ValueError(
                f"x must be a tensor (batch, channel, {self.grid.n}), got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}"
            )
        condition = self.condition.bind(t=t)
        if not self.kernel:
            return condition.apply_tensor(self.model(x))
        values = left = right = None
        if condition.kind != "periodic":
            values = condition.values(x.shape[0], x.dtype, x.device)
            left, right = values[0][:, None], values[1][:, None]
        with ExitStack() as stack:
            for layer in self.layers:
                self._attach(stack, layer, left, right)
            out = self.model(x)
        return condition.enforce(out, values=values)

    @staticmethod
    def _attach(stack: ExitStack, layer: CorrectedLayer, left, right) -> None:
        """Hooks for one forward of one Fourier layer.

        The probe spikes are appended to the batch of the conv (and skip) call, so ``K`` runs once
        on ``batch + 3`` inputs; the skip output is kept, and the conv output becomes
        ``K̃x − skip(x)`` so that the block's sum ``conv + skip`` is the corrected layer.
        """
        kept: dict[str, torch.Tensor] = {}
        probing = layer.kind != "periodic"

        def append(module, args):
            x = args[0]
            return (torch.cat([x, layer.spikes(x)]), *args[1:]) if probing else None

        def split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            if not probing:
                return output, None
            batch = output.shape[0] - 3
            return output[:batch], output[batch:]

        if layer.skip is not None:

            def keep(module, args, output):
                kept["skip"], kept["skip_probe"] = split(output)
                return kept["skip"]

            stack.enter_context(layer.skip.register_forward_pre_hook(append))
            stack.enter_context(layer.skip.register_forward_hook(keep))

        def correct(module, args, output):
            conv, probe = split(output)
            x = args[0][: conv.shape[0]]
            skip = kept.pop("skip", None)
            kx = conv if skip is None else conv + skip
            if probing:
                skip_probe = kept.pop("skip_probe", None)
                layer.probe(x, probe if skip_probe is None else probe + skip_probe)
            y = layer(x, left, right, kx)
            return y if skip is None else y - skip

        stack.enter_context(layer.conv.register_forward_pre_hook(append))
        stack.enter_context(layer.conv.register_forward_hook(correct))
