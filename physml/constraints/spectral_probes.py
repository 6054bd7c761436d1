"""The operator seam's neuralop adapter: a Fourier layer's probe responses in closed form.

BOON's correction (:mod:`physml.constraints.operator`) needs, per kernel layer ``K x = conv(x) +
skip(x)`` and corrected axis, ``K``'s response to zero and to a unit spike filling the first
(last) wall of the axis in every channel. For neuralop's ``SpectralConv`` with a pointwise skip
they follow from the weights, for all layers at once and without running ``K``:

- zero: ``conv.bias`` plus the skip's bias;
- a wall spike along axis ``a`` (``N`` points): its ``rfftn`` (norm ``"forward"``) is ``1/N``
  (spike at 0) or ``exp(−2πi f (N−1)/N)/N`` (spike at ``N−1``) along ``a`` and frequency 0 only
  along the other axes (the spike fills the wall). So only ``g = Σᵢₙ W[in, out, ...]`` at the
  weight index of frequency 0 on the other axes matters, and the inverse transform of that 1-D
  spectrum is a constant real matrix (cached per shape): one matmul of ``[Re g, Im g, skip gain]``
  with it gives both columns of every channel and layer, the skip's spike included.

What this relies on in neuralop 2.0 (``neuralop/layers/spectral_convolution.py`` and
``skip_connections.py``), checked by :func:`unsupported` or, shape by shape, by ``_plan``
(else the caller probes ``K``): ``SpectralConv.forward`` takes ``rfftn`` over the spatial axes
with ``fft_norm="forward"``; for more than one axis ``fftshift``s the non-last axes; keeps, on a
non-last axis, the ``k`` modes centred on frequency 0 (weight index ``w`` is frequency
``w − k//2``) and on the last axis the first ``k``; contracts them with the dense weight ``(in,
out, *modes)`` (a tensor or tltorch ``DenseTensor``; not separable, full precision, the inputs'
dtype), used whole
(``max_n_modes`` equal to the modes in use and no more modes than the grid holds, no resolution
scaling); shifts the non-last axes back (see below); ``irfftn``; adds ``bias`` ``(out, 1,
...)``. The skip is a ``Flattened1dConv`` (a ``Conv1d`` with kernel 1), a ``SoftGating`` (weight
and bias ``(1, C, 1, ...)``), an ``nn.Identity`` or absent. A subclass of ``SpectralConv``
qualifies when its class declares ``computes_spectral_conv = True`` (its forward computes exactly
that, e.g. ``physml.models.spectral.LeanSpectralConv``).

The shift back: neuralop 2.0 undoes the first ``fftshift`` with a second one, not with
``ifftshift`` (fixed upstream after 2.0). On a non-last axis of even size the two cancel; on one
of odd size ``N`` they roll the output spectrum by one bin (frequency ``f`` lands in bin ``f −
1``). So the response to a spike along an odd non-last axis is that of its frequencies shifted
down by one, and a spike along any axis gives a response multiplied by ``exp(−2πi j/N_b)`` along
every other odd non-last axis ``b`` (node ``j``): the real part ``cos θ · Re Z − sin θ · Im Z``
varies along the wall. The columns reproduce this (they equal the probed responses to float32
round-off); they are constant along a wall only where no other axis is an odd non-last one, and
then keep size 1 there. A class that declares ``shifts_back_exactly = True`` (``ifftshift``, as
``LeanSpectralConv``) lands every frequency in its own bin, and its columns are constant along
the walls; for neuralop's own class (and subclasses that declare nothing) the installed
neuralop's shift is read off the layer once (``_neuralop_shifts_back_exactly``), and a
shift that is neither is probed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import nn


class _Neuralop(NamedTuple):
    """The neuralop (and tltorch) classes the closed form recognises."""

    SpectralConv: type
    Flattened1dConv: type
    SoftGating: type
    DenseTensor: type


@lru_cache(maxsize=1)
def _neuralop() -> _Neuralop:
    """neuralop's classes, imported on first use: ``import physml`` stays free of neuralop (and
    of the wandb and tensorly it pulls in, ~2 s per process)."""
    from neuralop.layers.skip_connections import Flattened1dConv, SoftGating
    from neuralop.layers.spectral_convolution import SpectralConv
    from tltorch.factorized_tensors.factorized_tensors import DenseTensor

    return _Neuralop(SpectralConv, Flattened1dConv, SoftGating, DenseTensor)


def unsupported(conv: nn.Module, skip: nn.Module | None) -> str | None:
    """Why ``conv(x) + skip(x)`` has no closed-form responses (``None``: it has)."""
    known = _neuralop()
    if not isinstance(conv, known.SpectralConv):
        return "the convolution is not neuralop's SpectralConv"
    SpectralConv, Flattened1dConv, SoftGating, DenseTensor = known
    if type(conv) is not SpectralConv and not getattr(type(conv), "computes_spectral_conv", False):
        return f"{type(conv).__name__} does not declare computes_spectral_conv"
    if _shifts_back_exactly(conv) is None:
        return "the installed neuralop's SpectralConv shifts its spectrum back in an unknown way"
    if conv.complex_data or conv.separable:
        return "the spectral convolution works on complex data or has separable weights"
    if conv.fno_block_precision != "full":
        return f"the spectral convolution runs in {conv.fno_block_precision} precision"
    if conv.resolution_scaling_factor is not None:
        return "the spectral convolution rescales the resolution"
    if conv.fft_norm != "forward":
        return f"the spectral convolution uses fft_norm={conv.fft_norm!r}"
    if not (torch.is_tensor(conv.weight) or isinstance(conv.weight, DenseTensor)):
        return f"the spectral weight is factorised ({type(conv.weight).__name__})"
    if isinstance(skip, Flattened1dConv):
        inner = skip.conv
        if inner.kernel_size != (1,) or inner.padding != (0,) or inner.groups != 1:
            return "the skip convolution is not pointwise"
    elif skip is not None and not isinstance(skip, (SoftGating, nn.Identity)):
        return f"the skip {type(skip).__name__} is not known to be pointwise"
    return None


def signature(conv: nn.Module, skip: nn.Module | None) -> tuple:
    """What layers must share for their responses to be computed together."""
    weight = _dense(conv.weight)
    skip_bias = _skip_bias_holder(skip)
    return (
        _shifts_back_exactly(conv),
        tuple(weight.shape),
        tuple(conv.n_modes),
        tuple(conv.max_n_modes),
        conv.bias is not None,
        type(skip),
        skip_bias is not None and skip_bias.bias is not None,
    )


class Responses(NamedTuple):
    """``K``'s responses for ``L`` layers.

    ``bias`` ``(L, C, 1, ...)``: the response to zero. ``columns``: per corrected axis ``(2, L,
    C, *space)``, the responses to the first- and last-wall spikes minus ``bias`` (size 1 along
    the wall where constant there). ``spikes``: per axis ``(2, 1, 1, *space)``, those spikes
    (size 1 along the wall).
    """

    bias: torch.Tensor
    columns: list[torch.Tensor]
    spikes: list[torch.Tensor]


def wall_responses(
    layers: Sequence[tuple[nn.Module, nn.Module | None]], axes: Sequence[int], like: torch.Tensor
) -> Responses | None:
    """The responses of ``conv + skip`` for ``layers`` of one :func:`signature`, for inputs like
    ``like`` ``(batch, C, *space)``; ``None`` where the closed form does not apply to them."""
    convs = [conv for conv, _ in layers]
    weights = [_dense(conv.weight) for conv in convs]
    if weights[0].dtype.to_real() != like.dtype:
        return None
    if any(conv.n_modes != convs[0].n_modes for conv in convs[1:]):  # one set after grouping
        return None
    plans = _plan(
        tuple(like.shape[2:]),
        tuple(weights[0].shape[2:]),
        tuple(convs[0].n_modes),
        tuple(convs[0].max_n_modes),
        tuple(axes),
        like.dtype,
        like.device,
        bool(_shifts_back_exactly(convs[0])),
    )
    if plans is None:
        return None
    skips = [skip for _, skip in layers]
    channels = weights[0].shape[1]
    # (L, out, *modes): the spikes fill all inputs (summed before stacking: no copy of weights)
    summed = torch.stack([weight.sum(0) for weight in weights])
    gain = _skip_gain(skips, channels, like).unsqueeze(-1)  # (L, C, 1)
    bias = _bias(convs, skips, channels, like)
    layers_shape = (len(layers), channels)
    columns = []
    for plan in plans:
        g = torch.view_as_real(summed[plan.index]).flatten(-2)  # (L, C, 2k): Re, Im interleaved
        parts = (torch.cat([g, gain], -1) @ plan.matrix).unflatten(-1, (2, -1, plan.size))
        parts = parts.movedim((2, 3), (0, 1)).reshape(2, -1, *layers_shape, *plan.along)
        if plan.phase is None:
            columns.append(parts[:, 0])
        else:  # Re(e^{iθ} Z) + skip: cos θ · Re Z − sin θ · Im Z + skip
            cos, minus_sin = plan.phase
            columns.append(
                torch.addcmul(torch.addcmul(parts[:, 2], parts[:, 0], cos), parts[:, 1], minus_sin)
            )
    return Responses(bias, columns, [plan.spikes for plan in plans])


# ----------------------------------------------------------------------------------------------
# Constants per shape


class _AxisPlan(NamedTuple):
    """The constants for one corrected axis (``size`` points; ``along``: ``size`` at the axis, 1
    elsewhere).

    ``index`` picks ``g`` ``(L, C, k)`` from the summed weight ``(L, C, *modes)``; ``matrix``
    ``(2k + 1, 2 · parts · size)`` maps ``[Re g, Im g, skip gain]`` to the columns (first, last),
    in one part, or with ``phase`` ``(cos θ, −sin θ)`` (each broadcast over space) in three: Re Z,
    Im Z and the skip's spike. ``spikes`` ``(2, 1, 1, *along)``.
    """

    index: tuple
    size: int
    along: tuple[int, ...]
    matrix: torch.Tensor
    phase: tuple[torch.Tensor, torch.Tensor] | None
    spikes: torch.Tensor


def _landing(n: int, exact: bool) -> int:
    """The bin frequency 0 lands in after the shifts of an axis of ``n``: 0 when shifted back
    exactly (``ifftshift``), else after neuralop 2.0's two ``fftshift``s."""
    return 0 if exact else 2 * (n // 2) % n


def _shifts_back_exactly(conv: nn.Module) -> bool | None:
    """Whether ``conv`` shifts its spectrum back exactly (``True``), as neuralop 2.0 does
    (``False``) or otherwise (``None``): its class's ``shifts_back_exactly``, else neuralop's."""
    declared = getattr(type(conv), "shifts_back_exactly", None)
    return _neuralop_shifts_back_exactly() if declared is None else bool(declared)


@lru_cache(maxsize=1)
def _neuralop_shifts_back_exactly() -> bool | None:
    """The installed neuralop's shift back, read off its ``SpectralConv`` on a 3 × 2 grid: a
    constant input, a weight keeping frequency 0 only; the output is constant where frequency 0
    lands in bin 0 (``True``), ``cos(4π i/3)`` along the odd axis where it lands in bin 2
    (``False``: neuralop 2.0), else ``None``."""
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.no_grad():
        conv = _neuralop().SpectralConv(1, 1, (3, 2), bias=False)
        weight = _dense(conv.weight)
        weight.zero_()
        weight[0, 0, 1, 0] = 1.0  # frequency 0 on both axes
        y = conv(torch.ones(1, 1, 3, 2)).double()[0, 0]
    rows = torch.arange(3, dtype=torch.float64)[:, None].expand(3, 2)
    for exact, expected in ((True, torch.ones(3, 2)), (False, torch.cos(4 * math.pi * rows / 3))):
        if torch.allclose(y, expected.double(), atol=1e-5):
            return exact
    return None


@lru_cache(maxsize=64)
def _plan(
    shape: tuple[int, ...],
    weight_modes: tuple[int, ...],
    n_modes: tuple[int, ...],
    max_n_modes: tuple[int, ...],
    axes: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    exact: bool,
) -> tuple[_AxisPlan, ...] | None:
    """The :class:`_AxisPlan` of each axis for inputs of spatial ``shape`` (``exact``: the
    convolution shifts back exactly); ``None`` when the spectral convolution would not use its
    weight whole (modes sliced, or more than fit)."""
    d = len(shape)
    fft_size = (*shape[:-1], shape[-1] // 2 + 1)
    if not (len(weight_modes) == len(n_modes) == len(max_n_modes) == d):
        return None
    starts = [
        top - min(size, n) for size, n, top in zip(fft_size, n_modes, max_n_modes, strict=True)
    ]
    if any(starts) or any(k > size for k, size in zip(weight_modes, fft_size, strict=True)):
        return None
    with torch.inference_mode(False):  # constants usable with and without inference mode
        return tuple(_axis_plan(shape, weight_modes, axis, dtype, device, exact) for axis in axes)


def _axis_plan(shape, weight_modes, axis: int, dtype, device, exact: bool) -> _AxisPlan:
    """The constants of ``axis``: the inverse transform of its wall spikes' spectra per mode."""
    d = len(shape)
    a = axis % d
    n, k = shape[a], weight_modes[a]
    f64 = torch.float64
    w = torch.arange(k, dtype=f64)
    if a < d - 1:  # fftshifted: weight index w is frequency w − k//2; full complex transform
        frequency = w - k // 2
        bins = (frequency + _landing(n, exact)) % n
        hermitian = torch.ones(k, dtype=f64)
    else:  # rfft bins; irfft counts each twice but frequency 0 (and Nyquist)
        frequency = bins = w
        hermitian = torch.full((k,), 2.0, dtype=f64)
        hermitian[0] = 1.0
        if n % 2 == 0 and k == n // 2 + 1:
            hermitian[-1] = 1.0
    nodes = torch.arange(n, dtype=f64)
    at = torch.tensor([0.0, n - 1.0], dtype=f64)
    spectra = torch.exp(-2j * math.pi * at[:, None] * frequency[None] / n) / n  # (2, k)
    basis = torch.exp(2j * math.pi * bins[:, None] * nodes[None] / n)  # (k, n)
    z = (hermitian[:, None] * basis)[None] * spectra[:, :, None]  # (2, k, n): Z = Σ_w g_w z_w
    theta = torch.zeros([1] * d, dtype=f64)
    for b in range(d - 1):
        landing = _landing(shape[b], exact)
        if b != a and landing:
            ramp = 2 * math.pi * landing * torch.arange(shape[b], dtype=f64) / shape[b]
            theta = theta + ramp.reshape([-1 if c == b else 1 for c in range(d)])
    phased = bool(theta.abs().max() > 0)
    wall = torch.zeros(2, n, dtype=f64)
    wall[0, 0] = wall[1, -1] = 1.0
    matrix = torch.zeros(2 * k + 1, 2, 3 if phased else 1, n, dtype=f64)
    real, imag = z.real.transpose(0, 1), z.imag.transpose(0, 1)  # (k, 2, n)
    matrix[0:-1:2, :, 0], matrix[1:-1:2, :, 0] = real, -imag  # Re(g z) from (Re g, Im g)
    if phased:
        matrix[0:-1:2, :, 1], matrix[1:-1:2, :, 1] = imag, real  # Im(g z)
        matrix[-1, :, 2] = wall
        phase = (theta.cos().to(device, dtype), (-theta.sin()).to(device, dtype))
    else:
        matrix[-1, :, 0] = wall
        phase = None
    along = tuple(n if c == a else 1 for c in range(d))
    index = (slice(None), slice(None)) + tuple(
        slice(None) if c == a else (weight_modes[c] // 2 if c < d - 1 else 0) for c in range(d)
    )
    spikes = wall.reshape(2, 1, 1, *along).to(device, dtype)
    matrix = matrix.reshape(2 * k + 1, -1).to(device, dtype)
    return _AxisPlan(index, n, along, matrix, phase, spikes)


# ----------------------------------------------------------------------------------------------
# Weights


def _dense(weight) -> torch.Tensor:
    """The spectral weight ``(in, out, *modes)`` as a tensor (a tltorch ``DenseTensor``'s own)."""
    return weight if torch.is_tensor(weight) else weight.to_tensor()


def _skip_bias_holder(skip: nn.Module | None) -> nn.Module | None:
    """The module holding the skip's ``bias`` (``None``: the skip has none)."""
    known = _neuralop()
    if isinstance(skip, known.Flattened1dConv):
        return skip.conv
    return skip if isinstance(skip, known.SoftGating) else None


def _skip_gain(skips: Sequence[nn.Module | None], channels: int, like) -> torch.Tensor:
    """Each skip's response at a spike filling every input channel, per output channel (L, C)."""
    first, known = skips[0], _neuralop()
    if isinstance(first, known.Flattened1dConv):
        return torch.stack([skip.conv.weight for skip in skips]).sum((2, 3))
    if isinstance(first, known.SoftGating):
        return torch.stack([skip.weight for skip in skips]).reshape(len(skips), channels)
    fill = 1.0 if isinstance(first, nn.Identity) else 0.0
    return torch.full((len(skips), channels), fill, dtype=like.dtype, device=like.device)


def _bias(convs, skips, channels: int, like) -> torch.Tensor:
    """The response to zero ``(L, C, 1, ...)``: the convolution's and the skip's biases."""
    ones = (1,) * (like.ndim - 2)
    terms = []
    if convs[0].bias is not None:
        terms.append(torch.stack([conv.bias for conv in convs]))
    holders = [_skip_bias_holder(skip) for skip in skips]
    if holders[0] is not None and holders[0].bias is not None:
        biases = torch.stack([holder.bias for holder in holders])
        terms.append(biases.reshape(len(skips), channels, *ones))
    if not terms:
        return torch.zeros((len(convs), channels, *ones), dtype=like.dtype, device=like.device)
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]
