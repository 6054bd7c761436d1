"""neuralop's spectral convolution without its per-call Python, shifted back exactly.

neuralop 2.0's :class:`~neuralop.layers.spectral_convolution.SpectralConv` rebuilds a tltorch
tensor for its sliced weight, routes a two-operand einsum through tensorly and opt_einsum and
recomputes its slice lists on every call: at the BOON sizes (32 channels, 65 points, batch 1)
that is half of a layer's time (~290 µs against ~140 µs, one thread). :class:`LeanSpectralConv`
is a subclass whose forward does the same operations on the plain complex weight (``rfftn``, an
``fftshift`` of the non-last axes, the kept modes, one batched matmul, the inverse shift,
``irfftn``, bias), with the slices cached per shape. Its parameters and ``state_dict`` keys are
neuralop's (``weight.tensor`` ``(in, out, *modes)`` complex, ``bias`` ``(out, 1, ...)``), so
checkpoints load either way, and the constraint layer reads its probes in closed form as for
neuralop's (it declares ``computes_spectral_conv``).

It is the Fourier multiplier neuralop's layer means to be: weight index ``j`` of a non-last axis
multiplies frequency ``j − M//2`` (``M`` modes held), the last axis' first modes its first
frequencies. neuralop 2.0 shifts the spectrum back with a second ``fftshift``, which on a non-last
axis of odd size lands frequency ``f`` in bin ``f − 1`` (not shift-equivariant; fixed upstream
after 2.0 with ``ifftshift``); and where it keeps an odd number of an even ``M`` along a
non-last axis (an odd grid size below ``M``, or fewer ``n_modes`` than held) it pairs those
frequencies with the weights one index off. The lean layer does neither: on the input grid its
outputs and gradients equal neuralop 2.0's (bitwise on CPU) in 1-D and where the non-last axes
are even and keep an even number of modes (or all ``M``), and are the correct multiplier
elsewhere. On another output grid (``output_shape``, ``resolution_scaling_factor``) neuralop 2.0
lets ``irfftn`` zero-pad or cut the shifted-back spectrum at the end of each axis, which on a
non-last axis puts the negative frequencies in positive bins, and where an even grid keeps its top
frequency ``n/2`` (one bin, ``±n/2`` alike there) and grows, counts that frequency twice on the
last axis (in 1-D too). The lean layer keeps each frequency in its own bin of the output grid
and splits that top one half and half between ``±n/2``: its output on a finer grid is the
trigonometric interpolant of its output on the input grid (through it at the shared points), on
a coarser one that function truncated to the frequencies the grid holds, an even grid's ``±m/2``
at half weight each (:func:`onto_grid`). That holds with ``fft_norm="forward"``, neuralop's
default; ``"backward"`` scales the output by the ratio of point counts ``N_in / N_out``,
``"ortho"`` by its square root, as neuralop's does.

It serves the dense, non-separable, real-data, full-precision convolution (neuralop's defaults,
the toolkit's FNOs); other options raise ``ValueError``. Use it through neuralop's FNO::

    FNO(n_modes=(16,), in_channels=1, out_channels=1, hidden_channels=32,
        conv_module=LeanSpectralConv)          # or fast_fno(n_modes=(16,), ...)

:func:`plain_fno` builds the FNO of the FNO and BOON reference code from the same modules (no
channel MLP, one GELU per layer, a linear lifting, a projection through 128 channels): it costs
what the hand-written FNO1d costs, where neuralop's defaults cost 1.2–1.6× more
(``benchmarks/results/fno_overhead.md``). BOON applies to either through ``constrain``.
"""

from __future__ import annotations

import math
import operator
from functools import lru_cache
from numbers import Real

import torch
from neuralop.layers.fno_block import FNOBlocks
from neuralop.layers.skip_connections import Flattened1dConv
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO
from torch import nn

from physml._checks import integers
from physml._fno import HALF_DTYPES, fno_dtype_problem
from physml._state import without_neuralop_metadata
from physml.models.common import in_model_dtype
from physml.models.coordinates import GridCoordinates, PeriodicCoordinates


def _scaling_factors(scaling, order: int) -> list[float]:
    """``resolution_scaling_factor`` as one positive finite number per axis (a number is every
    axis'), refused by name otherwise."""
    values = list(scaling) if isinstance(scaling, (list, tuple)) else [scaling] * order
    numbers = [float(v) for v in values if isinstance(v, Real) and not isinstance(v, bool)]
    if (
        len(numbers) != order
        or len(values) != order
        or not all(math.isfinite(v) and v > 0 for v in numbers)
    ):
        raise ValueError(
            f"resolution_scaling_factor must be a positive number or {order} of them (one per "
            f"axis), got {scaling!r}"
        )
    return numbers


def _mode_counts(n_modes: object) -> tuple[int, ...]:
    """``n_modes``, the Fourier modes kept per space axis, as a tuple of ints ``>= 1``; an int
    ``n`` is ``(n,)``, one space axis."""
    return integers("n_modes", n_modes, 1, single=True)


class LeanSpectralConv(SpectralConv):
    """``irfftn(W · rfftn(x)[kept modes]) + bias`` on ``(batch, in, *space)`` → ``(batch, out,
    *space)``: each kept frequency ``f`` multiplied by its weight (index ``f + M//2`` on a
    non-last axis of ``M`` held modes, ``f`` on the last) and left in its own bin. That is
    neuralop 2.0's ``SpectralConv`` with the same weights (same modes, same ``fft_norm``) except
    on a non-last axis of odd size or with an odd number of an even ``M`` modes kept, where
    neuralop's is off by one bin or one weight (see the module's docstring), and on another output
    grid (``output_shape`` or ``resolution_scaling_factor``) where a non-last axis changes size or
    an even axis that keeps its top frequency grows: there the lean layer's output is the
    band-limited interpolant (or truncation) of its output on the input grid (:func:`onto_grid`).

    Arguments are ``SpectralConv``'s; ``factorization`` other than dense, ``separable``,
    ``complex_data`` and a precision other than ``"full"`` are refused; so are float64 input
    and weights other than complex64 (``TypeError``). A bfloat16 or float16 ``x`` (the layers
    before it under ``torch.autocast``) is transformed in float32 and the output is float32.
    """

    computes_spectral_conv = True  # SpectralConv's computation (physml.constraints reads it)
    computes_in_complex64 = True  # float32 only (physml._fno.fno_dtype_problem reads it)
    shifts_back_exactly = True  # undoes its fftshift with ifftshift (neuralop 2.0 does not)

    def __init__(self, in_channels: int, out_channels: int, n_modes, **options) -> None:
        refused = {
            "factorization": (None, "dense", "Dense"),
            "separable": (False,),
            "complex_data": (False,),
            "fno_block_precision": ("full",),
        }
        for name, allowed in refused.items():
            if name in options and options[name] not in allowed:
                raise ValueError(
                    f"LeanSpectralConv serves dense real full-precision weights: {name} must be "
                    f"one of {allowed}, got {options[name]!r} (use neuralop's SpectralConv)"
                )
        modes = _mode_counts(n_modes)
        scaling = options.get("resolution_scaling_factor")
        if scaling is not None:  # neuralop 2.0 reads a tuple or a bad value as no scaling at all
            options["resolution_scaling_factor"] = _scaling_factors(scaling, len(modes))
        super().__init__(in_channels, out_channels, n_modes, **options)

    def forward(self, x: torch.Tensor, output_shape=None) -> torch.Tensor:
        batch, _, *sizes = x.shape
        order = self.order
        dims = tuple(range(-order, 0))
        fft_size = (*sizes[:-1], sizes[-1] // 2 + 1)
        weight = self.weight.tensor
        if x.dtype in HALF_DTYPES:  # under torch.autocast, the layers before it compute in 16 bits
            x = x.float()
        if x.dtype != torch.float32 or weight.dtype != torch.cfloat:
            raise TypeError(
                f"LeanSpectralConv computes in float32 with complex64 weights (float64 is not "
                f"supported): x is {x.dtype}, its weight {weight.dtype}"
            )
        weight_index, spectrum_index = mode_slices(
            fft_size, tuple(self.n_modes), tuple(self.max_n_modes), tuple(weight.shape[2:])
        )
        spectrum = torch.fft.rfftn(x, norm=self.fft_norm, dim=dims)
        if order > 1:
            spectrum = torch.fft.fftshift(spectrum, dim=dims[:-1])
        out_sizes = self._output_sizes(sizes, output_shape)
        product = contract(spectrum[spectrum_index], weight[weight_index])
        out = torch.zeros(
            (batch, self.out_channels, *fft_size), dtype=torch.cfloat, device=x.device
        )
        out[spectrum_index] = product
        if out_sizes != sizes:
            out = onto_grid(out, tuple(sizes), tuple(out_sizes))
        if order > 1:
            out = torch.fft.ifftshift(out, dim=dims[:-1])
        y = torch.fft.irfftn(out, s=out_sizes, dim=dims, norm=self.fft_norm)
        return y if self.bias is None else y + self.bias

    def _output_sizes(self, sizes: list[int], output_shape) -> list[int]:
        """The output grid: ``output_shape``, else the input's scaled by
        ``resolution_scaling_factor``, else the input's."""
        if output_shape is not None:
            out_sizes = list(output_shape)
            name = "output_shape"
        elif self.resolution_scaling_factor is not None:
            out_sizes = [
                round(s * r) for s, r in zip(sizes, self.resolution_scaling_factor, strict=True)
            ]
            name = f"the input grid {tuple(sizes)} scaled by resolution_scaling_factor"
        else:
            return sizes
        if len(out_sizes) != len(sizes) or not all(_grid_size(n) for n in out_sizes):
            raise ValueError(
                f"{name} must be {len(sizes)} grid sizes >= 1 (one per spatial axis), got "
                f"{tuple(out_sizes)}"
            )
        return [operator.index(n) for n in out_sizes]


def _grid_size(value: object) -> bool:
    """Whether ``value`` is an integer >= 1 (a bool is not)."""
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= 1
    except TypeError:
        return False


def onto_grid(
    spectrum: torch.Tensor, sizes: tuple[int, ...], out_sizes: tuple[int, ...]
) -> torch.Tensor:
    """The shifted spectrum ``(b, o, *fft size)`` of a real field on the grid ``sizes`` made that
    of the same trigonometric polynomial on ``out_sizes`` (``(b, o, *out_sizes[:-1], sizes[-1]
    // 2 + 1)``, for ``irfftn(s=out_sizes)`` after the inverse shift): its interpolant on a finer
    axis, its truncation to the frequencies a coarser one holds.

    The field is what ``irfftn(s=sizes)`` makes of ``spectrum``. An even axis of ``n`` points
    holds its top frequency as one bin, ``±n/2`` alike; growing, it splits that bin half and half
    between them (a cosine, real as the samples are). On the last axis ``irfftn`` reads that bin
    as the real part of its transform along the other axes; on a finer grid it is a frequency of
    its own, ``−n/2`` implied as its conjugate, so it takes half of the bin's Hermitian part. An
    even coarser axis of ``m`` points takes the mean of ``±m/2`` into its top bin (``irfftn``
    does so itself on the last axis); the frequencies it cannot hold are dropped.
    """
    non_last = tuple(range(2, spectrum.ndim - 1))
    if sizes[-1] % 2 == 0 and out_sizes[-1] > sizes[-1]:
        column = spectrum[..., -1]
        # frequency f's bin gets -f's: a flip, and on an even axis -(-n/2) is -n/2 again
        mirrored = column.flip(non_last)
        even = [dim for dim in non_last if sizes[dim - 2] % 2 == 0]
        if even:
            mirrored = mirrored.roll([1] * len(even), even)
        hermitian = (column + mirrored.conj()) / 2
        spectrum = torch.cat([spectrum[..., :-1], hermitian[..., None] / 2], dim=-1)
    for dim in non_last:
        n, m = sizes[dim - 2], out_sizes[dim - 2]
        if n % 2 == 0 and m > n:  # index 0 holds -n/2; +n/2 goes after n/2 - 1
            half = spectrum.narrow(dim, 0, 1) / 2
            spectrum = torch.cat([half, spectrum.narrow(dim, 1, n - 1), half], dim=dim)
        elif m % 2 == 0 and m < n:  # -m/2 (index n//2 - m//2) takes half of itself and of +m/2
            low, high = n // 2 - m // 2, n // 2 + m // 2
            top = (spectrum.narrow(dim, low, 1) + spectrum.narrow(dim, high, 1)) / 2
            before, after = spectrum.narrow(dim, 0, low), spectrum.narrow(dim, low + 1, n - low - 1)
            spectrum = torch.cat([before, top, after], dim=dim)
    out_fft_size = (*out_sizes[:-1], spectrum.shape[-1])  # irfftn pads or cuts the last axis
    source, target = frequency_placement(out_fft_size, tuple(spectrum.shape[2:]))
    out = spectrum.new_zeros((*spectrum.shape[:2], *out_fft_size))
    out[target] = spectrum[source]
    return out


@lru_cache(maxsize=256)
def frequency_placement(
    out_fft_size: tuple[int, ...], kept: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where the ``kept`` modes ``(b, o, *kept)`` of a shifted spectrum go in the shifted
    spectrum ``out_fft_size`` of the output grid: ``(source in the modes, target)``.

    On a non-last axis the modes are frequencies ``f = −k//2 … k − 1 − k//2``; each lands in the
    output's bin of ``f`` (index ``f + m//2`` of ``m``). Frequencies the output grid cannot hold
    (outside ``−m//2 … m − 1 − m//2``) are dropped. On the last axis the modes are the first
    ``k`` in both (``irfftn`` pads or cuts that axis itself).
    """
    source, target = [slice(None), slice(None)], [slice(None), slice(None)]
    for m, k in zip(out_fft_size[:-1], kept[:-1], strict=True):
        low, high = max(0, k // 2 - m // 2), min(k, m - m // 2 + k // 2)
        source.append(slice(low, high))
        target.append(slice(m // 2 - k // 2 + low, m // 2 - k // 2 + high))
    source.append(slice(None))
    target.append(slice(None, kept[-1]))
    return tuple(source), tuple(target)


def contract(spectrum: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ_i spectrum[b, i, m] · weight[i, o, m]`` → ``(b, o, *modes)``: one batched matmul over
    the modes ``m`` on contiguous operands (the products einsum forms, at a third of its cost)."""
    batch, modes = spectrum.shape[0], spectrum.shape[2:]
    left = spectrum.flatten(2).permute(2, 0, 1).contiguous()  # (M, b, i)
    right = weight.flatten(2).permute(2, 0, 1).contiguous()  # (M, i, o)
    return torch.bmm(left, right).permute(1, 2, 0).reshape(batch, weight.shape[1], *modes)


@lru_cache(maxsize=256)
def mode_slices(
    fft_size: tuple[int, ...],
    n_modes: tuple[int, ...],
    max_n_modes: tuple[int, ...],
    weight_modes: tuple[int, ...],
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The weight and spectrum slices for a (shifted) spectrum of ``fft_size``.

    Each axis keeps ``k = min(size, n)`` modes (at most the ``M`` held): on a non-last axis the
    spectrum's ``k`` around its centre ``size // 2``, frequencies ``f = −k//2 … k − 1 − k//2``,
    and the weight's indices ``f + M//2`` (where neuralop 2.0 takes ``(M − k)//2`` onwards, one
    off for an even ``M`` and odd ``k``); on the last axis the first ``k`` of both. Returns
    ``(weight index, spectrum index)``, both starting with two full slices.
    """
    starts = [
        top - min(size, n) for size, n, top in zip(fft_size, n_modes, max_n_modes, strict=False)
    ]
    # strict=False: neuralop zips these as they come (an int max_n_modes is one entry)
    weight_index = []
    for start, top in zip(starts[:-1], max_n_modes, strict=False):
        k = top - max(start, 0)
        weight_index.append(slice(top // 2 - k // 2, top // 2 - k // 2 + k))
    weight_index.append(slice(None, -starts[-1]) if starts[-1] else slice(None))
    kept = [
        len(range(*index.indices(m))) for index, m in zip(weight_index, weight_modes, strict=False)
    ]
    spectrum_index = [
        slice(size // 2 - k // 2, size // 2 + k // 2 + k % 2)
        for size, k in zip(fft_size, kept, strict=True)
    ]
    spectrum_index[-1] = slice(None, kept[-1]) if kept[-1] < fft_size[-1] else slice(None)
    full = (slice(None), slice(None))
    return full + tuple(weight_index), full + tuple(spectrum_index)


class PointwiseConv1d(nn.Conv1d):
    """A kernel-1 ``Conv1d`` ``(batch, in, n) → (batch, out, n)`` computed as one batched matmul
    from batch 2 on: the same parameters and outputs (to round-off), at about half of the cost of
    torch's CPU convolution there (which wins for a single sample, where it is kept)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[0] == 1:
            return super().forward(x)
        weight = self.weight[:, :, 0].expand(x.shape[0], -1, -1)
        if self.bias is None:
            return torch.bmm(weight, x)
        return torch.baddbmm(self.bias[None, :, None], weight, x)


def pointwise(conv: nn.Conv1d) -> PointwiseConv1d:
    """``conv`` (kernel 1, stride 1, no padding, dilation or groups) as a
    :class:`PointwiseConv1d` holding the same parameter objects."""
    plain = (
        conv.kernel_size == (1,)
        and conv.stride == (1,)
        and conv.padding == (0,)
        and conv.dilation == (1,)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )
    if not plain:
        raise ValueError(f"conv must be a plain kernel-1 Conv1d, got {conv}")
    lean = PointwiseConv1d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
    lean.weight = conv.weight
    if conv.bias is not None:
        lean.bias = conv.bias
    return lean


def _lean_pointwise_layers(fno: FNO) -> None:
    """Every kernel-1 ``Conv1d`` of ``fno`` (lifting, projection, the blocks' channel MLPs and
    their ``Flattened1dConv`` skips) as :class:`PointwiseConv1d`, in place (parameters,
    ``state_dict`` keys and outputs kept)."""
    mlps = [fno.lifting, fno.projection, *getattr(fno.fno_blocks, "channel_mlp", ())]
    for mlp in mlps:
        fcs = getattr(mlp, "fcs", None)
        for index, layer in enumerate(fcs or ()):
            if type(layer) is nn.Conv1d:
                fcs[index] = pointwise(layer)
    for skip in getattr(fno.fno_blocks, "fno_skips", ()):
        if type(getattr(skip, "conv", None)) is nn.Conv1d:
            skip.conv = pointwise(skip.conv)


class CheckedFNO(FNO):
    """neuralop's FNO that refuses NaN or inf input, which would otherwise come back as NaN over
    the whole field (the FFTs spread one bad value everywhere), float64 input or weights other
    than float32 (its spectral layers compute in complex64: torch would fail deep in a matmul),
    and input that is not ``(batch, in_channels, *space)`` with one space axis per ``n_modes``
    entry (neuralop's own errors count the coordinates it appends). A bfloat16 or float16 ``x``
    is taken in the model's float32; for 16-bit compute run it under ``torch.autocast``."""

    computes_in_complex64 = True  # float32 only (physml._fno.fno_dtype_problem reads it)

    def forward(self, x, *args, **kwargs):
        if isinstance(x, torch.Tensor) and x.dtype in HALF_DTYPES:
            x = in_model_dtype(self, x)
        if isinstance(x, torch.Tensor):
            if x.ndim != 2 + self.n_dim or x.shape[1] != self.in_channels:
                raise ValueError(
                    f"x must be (batch, {self.in_channels}, *space) with {self.n_dim} space "
                    f"ax{'is' if self.n_dim == 1 else 'es'} (in_channels={self.in_channels}, "
                    f"n_modes={tuple(self.n_modes)}), got {tuple(x.shape)}"
                )
            if not bool(torch.isfinite(x).all()):
                raise ValueError("x contains NaN or inf values")
        problem = fno_dtype_problem(self, x)
        if problem is not None:
            raise TypeError(problem)
        return super().forward(x, *args, **kwargs)

    def state_dict(self, *args, **kwargs):
        """The FNO's tensors, without neuralop's ``_metadata`` (its init arguments, functions
        and classes among them), which ``torch.load(..., weights_only=True)`` refuses, as
        :meth:`physml.constraints.Constrained.state_dict` leaves it out; ``load_state_dict``
        takes the dict without it (neuralop's ``save_checkpoint`` writes the init arguments to
        a file of their own)."""
        return without_neuralop_metadata(super().state_dict(*args, **kwargs))


def fast_fno(
    *, periodic: bool = False, position: GridCoordinates | None = None, **fno_options
) -> FNO:
    """The toolkit's FNO: neuralop's ``FNO(**fno_options)`` with :class:`LeanSpectralConv`
    layers and its 1×1 convolutions (channel MLPs, skips) as :class:`PointwiseConv1d` — the
    same parameters from the same seed and ``state_dict``, at less cost per call, with outputs
    equal to round-off on 1-D and even grids (on odd non-last axes its Fourier layers are the
    correct multiplier, neuralop 2.0's are not, and on another output grid they part where
    :class:`LeanSpectralConv` says) — that refuses non-finite and float64 input and float64
    weights (:class:`CheckedFNO`).

    ``periodic=True``: position enters as :class:`PeriodicCoordinates` (cosine and sine of each
    axis's phase, smooth where a periodic box wraps) in place of neuralop's grid embedding
    (``x ∈ [0, 1]``, which jumps there); the lifting takes ``2·dims`` extra channels. Save and
    load it as a ``state_dict`` into ``fast_fno(..., periodic=True)``: neuralop's own
    ``from_checkpoint`` would rebuild it without the coordinates.

    ``position``: a :class:`GridCoordinates` (one axis per mode axis) appends each point's
    coordinate on its box in place of neuralop's ``k/n``, the same at the same point on every
    grid; the parameters, their initial values and the ``state_dict`` are those of the FNO
    without it."""
    if "conv_module" in fno_options:
        raise ValueError("fast_fno sets conv_module itself; got conv_module in fno_options")
    if not isinstance(periodic, bool):
        raise TypeError(f"periodic must be True or False, got {periodic!r}")
    if position is not None and not isinstance(position, GridCoordinates):
        raise TypeError(f"position must be a GridCoordinates or None, got {position!r}")
    if (periodic or position is not None) and "positional_embedding" in fno_options:
        raise ValueError(
            f"{'periodic=True' if periodic else 'position'} sets the positional embedding; got "
            "positional_embedding"
        )
    if periodic and position is not None:
        raise ValueError("give periodic=True or position, not both: each sets the position")
    if "n_modes" in fno_options:
        fno_options = {**fno_options, "n_modes": _mode_counts(fno_options["n_modes"])}
    if not periodic:
        fno = CheckedFNO(**fno_options, conv_module=LeanSpectralConv)
        _lean_pointwise_layers(fno)
        if position is not None:
            if position.dims != fno.n_dim:
                raise ValueError(
                    f"position must have as many space axes as n_modes {fno.n_modes!r} "
                    f"({fno.n_dim}), got {position.dims}"
                )
            fno.positional_embedding = position  # the lifting already takes dims channels more
        return fno
    missing = [name for name in ("n_modes", "in_channels") if name not in fno_options]
    if missing:
        raise TypeError(f"fast_fno(periodic=True) needs {' and '.join(missing)}")
    dims, channels = len(fno_options["n_modes"]), fno_options["in_channels"]
    options = {**fno_options, "in_channels": channels + 2 * dims}
    fno = CheckedFNO(**options, positional_embedding=None, conv_module=LeanSpectralConv)
    _lean_pointwise_layers(fno)
    fno.positional_embedding = PeriodicCoordinates(dims)
    fno.in_channels = channels
    return fno


PLAIN_PROJECTION = 128
"""Hidden channels of the reference FNO1d's projection (the FNO and BOON papers' code)."""


class OneActivationBlocks(FNOBlocks):
    """neuralop's FNO blocks without a channel MLP, the nonlinearity applied once per layer:
    ``σ(K x + W x)`` (σ left out after the last), the layer of the reference FNO1d.

    Without a channel MLP neuralop's post-activation block applies σ twice (after the skip sum,
    and again where the channel MLP's output would be), i.e. ``σ(σ(K x + W x))``.
    """

    def forward_with_postactivation(self, x, index=0, output_shape=None):
        conv = self.convs[index]
        same_grid = output_shape is None and conv.resolution_scaling_factor is None
        skip = None
        if self.fno_skips is not None:
            skip_layer = self.fno_skips[index]
            if x.ndim == 3 and isinstance(skip_layer, Flattened1dConv) and _unhooked(skip_layer):
                skip = skip_layer.conv(x)  # on (batch, channel, n) its flattening is the identity
            else:
                skip = skip_layer(x)  # hooks (BOON's probes) see the call
            if not same_grid:
                skip = conv.transform(skip, output_shape=output_shape)
        x = conv(x, output_shape=output_shape)
        if skip is not None:
            x = x + skip
        return self.non_linearity(x) if index < self.n_layers - 1 else x


def _unhooked(module: nn.Module) -> bool:
    """Whether calling ``module`` would run no hook (its own or a global one), so that its
    forward may be bypassed."""
    hooks = nn.modules.module
    return not (
        module._forward_hooks
        or module._forward_pre_hooks
        or hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
    )


def plain_fno(
    n_modes: int | tuple[int, ...],
    in_channels: int,
    out_channels: int,
    hidden_channels: int,
    n_layers: int = 4,
    projection_channels: int = PLAIN_PROJECTION,
) -> FNO:
    """The reference code's FNO ``(batch, in, *space) → (batch, out, *space)`` built from
    neuralop's: the grid appended, one linear lifting, ``n_layers`` of ``σ(K x + W x)`` (no
    channel MLP, :class:`OneActivationBlocks`), a projection through ``projection_channels``;
    lean layers as in :func:`fast_fno`. Its parameters are the hand-written FNO1d's, and so is
    its cost per call (``benchmarks/fno_overhead.py``).

    Args:
        n_modes: Fourier modes kept per space axis, one entry per axis (its length sets the
            dimension; an int ``n`` is ``(n,)``, one space axis), as neuralop counts them: the
            last axis keeps its ``n_modes[-1] // 2 + 1`` lowest frequencies (a real FFT), each
            other axis ``n_modes[i]`` centred on 0.
        in_channels: channels of the input ``x (batch, in, *space)`` (the grid's coordinates
            are appended to them).
        out_channels: channels of the output.
        hidden_channels: width of the Fourier layers.
        n_layers: Fourier layers.
        projection_channels: hidden width of the two-layer projection to ``out_channels``
            (:data:`PLAIN_PROJECTION`, the reference code's 128, by default).
    """
    sizes = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "hidden_channels": hidden_channels,
        "n_layers": n_layers,
        "projection_channels": projection_channels,
    }
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    fno = fast_fno(
        n_modes=n_modes,  # fast_fno reads and checks it
        in_channels=in_channels,
        out_channels=out_channels,
        hidden_channels=hidden_channels,
        n_layers=n_layers,
        use_channel_mlp=False,
        lifting_channel_ratio=0,
        # neuralop truncates int(ratio × hidden): 128 / 49 × 49 = 127.99… would be 127
        projection_channel_ratio=(projection_channels + 0.5) / hidden_channels,
    )
    fno.fno_blocks.__class__ = OneActivationBlocks  # same modules, one σ per layer
    return fno
