"""``LeanSpectralConv`` against a direct DFT multiplier and neuralop's ``SpectralConv``
(``physml.models.spectral``).

The lean layer is the Fourier multiplier its weights describe — checked against ``rfftn``,
products with a weight given as a function of frequency, and ``irfftn``, in 2- and 3-D on odd and
even grids, with fewer and more modes than the grid holds — hence circularly shift-equivariant.
Where neuralop 2.0's layer is that multiplier too (1-D, even non-last axes keeping an even
number of modes or all) its outputs and gradients must agree with the lean one's to float32
round-off (they agree bitwise on CPU), with truncated and sliced modes; on another output grid
a single mode in gives the multiplier's exact band-limited output sampled there, and any input
the trigonometric interpolant (or truncation) of the multiplier's output, an even grid's top
frequency split half and half between ±n/2; checkpoints load
either way; BOON through ``constrain`` reads the lean layers' probes in closed form and gives the
original's result there.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO

from pdes import Dirichlet, Grid1D, Neumann
from physml import constrain
from physml.constraints import BoundaryCondition
from physml.constraints.spectral_probes import unsupported
from physml.models import LeanSpectralConv, fast_fno, plain_fno
from physml.models.coordinates import GridCoordinates
from physml.models.spectral import PLAIN_PROJECTION, PointwiseConv1d, pointwise

ROUND_OFF = 1e-6  # float32, relative to the largest entry
GRADIENT_ROUND_OFF = 1e-4  # through BOON's corrections, relative to the largest entry
NOT_MODES = r"^n_modes must be an integer or a non-empty sequence of integers, got '4'"


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(
        actual, expected, rtol=0.0, atol=ROUND_OFF * float(expected.detach().abs().max())
    )


def pair(n_modes, bias: bool, seed: int = 0, **options):
    """neuralop's layer and a lean one holding the same weights."""
    torch.manual_seed(seed)
    reference = SpectralConv(3, 4, n_modes, bias=bias, **options)
    lean = LeanSpectralConv(3, 4, n_modes, bias=bias, **options)
    lean.load_state_dict(reference.state_dict())
    return reference, lean


def outputs_and_gradients(conv, x, weights, **call):
    x = x.clone().requires_grad_(True)
    y = conv(x, **call)
    parameters = [p for p in conv.parameters()]
    grads = torch.autograd.grad((y * weights).sum(), [x, *parameters])
    return y.detach(), grads


# name: (n_modes, spatial shape): neuralop 2.0 is the same multiplier on these (even non-last axes)
CASES = {
    "1d-odd": ((16,), (65,)),
    "1d-even-nyquist": ((32,), (32,)),
    "1d-more-modes-than-grid": ((40,), (21,)),
    "2d-odd-last-axis": ((5, 4), (12, 11)),
    "2d-even": ((6, 8), (12, 10)),
    "2d-odd-modes-even-grid": ((7, 6), (10, 9)),
    "3d-odd-last-axis": ((4, 4, 4), (8, 6, 5)),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_outputs_and_gradients_equal_neuralops(name, batch, bias):
    n_modes, shape = CASES[name]
    reference, lean = pair(n_modes, bias)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, *shape, generator=generator)
    weights = torch.randn(batch, 4, *shape, generator=generator)
    expected, expected_grads = outputs_and_gradients(reference, x, weights)
    actual, actual_grads = outputs_and_gradients(lean, x, weights)
    assert_same(actual, expected)
    assert len(actual_grads) == (3 if bias else 2)  # x, weight, (bias)
    for a, b in zip(actual_grads, expected_grads, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize(
    "n_modes, max_n_modes, shape, call",
    [
        ((8, 6), (12, 10), (12, 9), {}),  # fewer modes in use than held: the weight is sliced
        ((12,), (12,), (40,), {"output_shape": (55,)}),  # another output grid
        ((6, 6), (6, 6), (8, 9), {"output_shape": (8, 13)}),  # another last axis only: on a
    ],  # non-last one neuralop 2.0 moves the negative frequencies (see the test below)
)
def test_sliced_weights_and_other_output_shapes_equal_neuralops(n_modes, max_n_modes, shape, call):
    reference, lean = pair(max_n_modes, bias=True)
    reference.n_modes = lean.n_modes = n_modes
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, *shape, generator=generator)
    out_shape = call.get("output_shape", shape)
    weights = torch.randn(2, 4, *out_shape, generator=generator)
    expected, expected_grads = outputs_and_gradients(reference, x, weights, **call)
    actual, actual_grads = outputs_and_gradients(lean, x, weights, **call)
    assert actual.shape == (2, 4, *out_shape)
    assert_same(actual, expected)
    for a, b in zip(actual_grads, expected_grads, strict=True):
        assert_same(a, b)


def test_resolution_scaling_equals_neuralops():
    reference, lean = pair((8,), bias=True, resolution_scaling_factor=1.5)
    x = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert lean(x).shape == (2, 4, 30)
        assert_same(lean(x), reference(x))
        # 21 × 1.5 = 31.5 points: rounded as neuralop rounds, to 32
        odd = torch.randn(2, 3, 21, generator=torch.Generator().manual_seed(4))
        assert lean(odd).shape == reference(odd).shape == (2, 4, 32)
        assert_same(lean(odd), reference(odd))


# ------------------------------------------------------------------------------------------
# The Fourier multiplier, computed directly

F64 = torch.float64


def weight_of(frequencies, in_channels: int, out_channels: int) -> torch.Tensor:
    """A weight ``(*k, in, out)`` complex128 given as a function of the frequency tuples
    ``frequencies`` (one broadcast tensor per axis), different for every channel pair."""
    i = torch.arange(in_channels, dtype=F64)[:, None]
    o = torch.arange(out_channels, dtype=F64)[None, :]
    f = [g[..., None, None].to(F64) for g in frequencies]
    phase = sum((0.37 + 0.29 * a) * g for a, g in enumerate(f)) + 0.5 * i - 0.3 * o
    modulus = 1.0 + 0.5 * torch.cos(sum((1.3 - 0.7 * a) * g for a, g in enumerate(f)) + i + 2 * o)
    return torch.polar(modulus, phase)


def frequency_weighted(conv) -> None:
    """Fill ``conv``'s weight ``(in, out, *M)`` from :func:`weight_of`: index ``j`` of a non-last
    axis is frequency ``j − M//2``, of the last axis frequency ``j``."""
    weight = conv.weight.tensor
    held = weight.shape[2:]
    axes = [torch.arange(m) - (m // 2 if a < len(held) - 1 else 0) for a, m in enumerate(held)]
    grid = torch.meshgrid(*axes, indexing="ij")
    values = weight_of(grid, *weight.shape[:2]).movedim((-2, -1), (0, 1))
    with torch.no_grad():
        weight.copy_(values.to(weight.dtype))


def dft_multiplier(x: torch.Tensor, n_modes, out_channels: int) -> torch.Tensor:
    """``irfftn(Σ_in W(f) · rfftn(x)(f))`` over the kept frequencies ``f`` (norm "forward"), in
    float64, with no shift: on a non-last axis of ``s`` points the ``k = min(s, n)`` frequencies
    ``−k//2 … k − 1 − k//2`` (bins ``f mod s``), on the last the first ``min(s//2 + 1, n)``.
    ``n_modes`` as the layer holds them (the last axis' already halved)."""
    sizes = x.shape[2:]
    dims = tuple(range(-len(sizes), 0))
    spectrum = torch.fft.rfftn(x.to(F64), dim=dims, norm="forward")
    frequencies, bins = [], []
    for a, (s, n) in enumerate(zip(sizes, n_modes, strict=True)):
        if a < len(sizes) - 1:
            k = min(s, n)
            f = torch.arange(-(k // 2), k - k // 2)
            frequencies.append(f)
            bins.append(f % s)
        else:
            f = torch.arange(min(s // 2 + 1, n))
            frequencies.append(f)
            bins.append(f)
    grid = torch.meshgrid(*frequencies, indexing="ij")
    index = (slice(None), slice(None), *torch.meshgrid(*bins, indexing="ij"))
    weight = weight_of(grid, x.shape[1], out_channels)  # (*k, in, out)
    out = torch.zeros(x.shape[0], out_channels, *spectrum.shape[2:], dtype=spectrum.dtype)
    out[index] = torch.einsum("bi...,...io->bo...", spectrum[index], weight)
    return torch.fft.irfftn(out, s=sizes, dim=dims, norm="forward")


@pytest.mark.parametrize(
    "held, in_use, shape",
    [
        ((8, 8), None, (16, 16)),
        ((8, 8), None, (15, 16)),  # odd non-last axis
        ((8, 8), None, (15, 13)),
        ((16, 16), None, (65, 65)),
        ((16, 8), None, (9, 8)),  # more modes than the grid holds: M even, s odd
        ((16, 8), None, (10, 8)),  # M even, s even
        ((15, 8), None, (9, 8)),  # M odd, s odd
        ((15, 8), None, (10, 8)),  # M odd, s even
        ((16, 8), None, (33, 8)),  # fewer
        ((8, 6), (5, 6), (12, 10)),  # an odd number of the 8 held in use
        ((9, 6), (6, 6), (13, 10)),
        ((6, 4, 6), None, (8, 6, 10)),
        ((6, 4, 6), None, (8, 7, 10)),
        ((6, 4, 6), None, (9, 6, 10)),
        ((5, 4, 6), None, (7, 5, 9)),
        ((6, 6, 4), None, (5, 3, 8)),
    ],
)
def test_lean_conv_is_the_fourier_multiplier_of_its_weights(held, in_use, shape):
    torch.manual_seed(0)
    conv = LeanSpectralConv(3, 4, held, bias=False)
    frequency_weighted(conv)
    if in_use is not None:
        conv.n_modes = in_use
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(1))
    expected = dft_multiplier(x, conv.n_modes, 4)
    with torch.no_grad():
        actual = conv(x)
    torch.testing.assert_close(
        actual.double(), expected, rtol=0.0, atol=1e-5 * float(expected.abs().max())
    )


def grid_of(shape) -> tuple[torch.Tensor, ...]:
    """The periodic grid ``t_a = j / shape[a]`` of each axis, float64, broadcast to ``shape``."""
    return torch.meshgrid(*[torch.arange(n, dtype=F64) / n for n in shape], indexing="ij")


def multiplied_mode(p: int, q: int, phases: torch.Tensor, shape, out_channels: int):
    """The exact output of the multiplier :func:`weight_of` on the inputs
    ``x_i = cos(2π (p t0 + q t1) + φ_i)`` (``t_a = j / shape[a]``), evaluated on the grid
    ``shape``, float64 ``(1, out, *shape)``. For ``q > 0`` the conv keeps the frequency
    ``(p, q)`` (the real field's other half, ``(−p, −q)``, is implied): ``y_o = Σ_i Re(W_io(p, q)
    e^{i(θ + φ_i)})``. For ``q = 0`` both ``(±p, 0)`` are kept, each with half the amplitude and
    its own weight: ``y_o = Σ_i ½ Re(W_io(p, 0) e^{i(θ + φ_i)} + W_io(−p, 0) e^{−i(θ + φ_i)})``."""
    t0, t1 = grid_of(shape)
    theta = 2 * math.pi * (p * t0 + q * t1)[None] + phases[:, None, None]  # (in, *shape)
    wave = torch.exp(1j * theta)

    def weights(f0, f1):
        return weight_of([torch.tensor(f0), torch.tensor(f1)], len(phases), out_channels)

    if q > 0:
        y = torch.einsum("io,i...->o...", weights(p, q), wave).real
    else:
        y = (
            0.5
            * (
                torch.einsum("io,i...->o...", weights(p, 0), wave)
                + torch.einsum("io,i...->o...", weights(-p, 0), wave.conj())
            ).real
        )
    return y[None]


@pytest.mark.parametrize("p, q", [(1, 2), (-2, 1), (2, 0), (-1, 0), (0, 2)])
@pytest.mark.parametrize(
    "shape, call, out_shape",
    [
        ((9, 10), {"output_shape": (16, 10)}, (16, 10)),  # the non-last axis, odd to even
        ((10, 9), {"output_shape": (15, 9)}, (15, 9)),  # even to odd
        ((9, 10), {"output_shape": (9, 17)}, (9, 17)),  # the last axis
        ((10, 9), {"output_shape": (10, 16)}, (10, 16)),
        ((9, 9), {"output_shape": (14, 20)}, (14, 20)),  # both
        ((16, 12), {"output_shape": (9, 10)}, (9, 10)),  # coarser: the modes still fit
        ((10, 9), {"resolution_scaling_factor": [1.5, 2.0]}, (15, 18)),
        ((9, 8), {"resolution_scaling_factor": 2.0}, (18, 16)),
    ],
)
def test_another_output_grid_samples_the_same_band_limited_output(shape, call, out_shape, p, q):
    """A Fourier multiplier on a finer (or coarser) grid is band-limited interpolation: a
    single low mode in gives, on the output grid, the multiplier applied to that mode sampled
    there (:func:`multiplied_mode`), on either axis and odd or even sizes."""
    options = {k: v for k, v in call.items() if k == "resolution_scaling_factor"}
    torch.manual_seed(0)
    conv = LeanSpectralConv(3, 4, (6, 6), bias=False, **options)  # frequencies −3…2 by 0…3
    frequency_weighted(conv)
    phases = torch.tensor([0.3, -1.1, 2.0], dtype=F64)
    t0, t1 = grid_of(shape)
    x = torch.cos(2 * math.pi * (p * t0 + q * t1)[None] + phases[:, None, None])[None].float()
    expected = multiplied_mode(p, q, phases, out_shape, 4)
    with torch.no_grad():
        actual = conv(x, output_shape=call.get("output_shape"))
    assert actual.shape == (1, 4, *out_shape)
    torch.testing.assert_close(
        actual.double(), expected, rtol=0.0, atol=1e-5 * float(expected.abs().max())
    )


def resampled(y: torch.Tensor, out_shape) -> torch.Tensor:
    """The periodic samples ``y`` ``(b, c, *shape)`` as a trigonometric polynomial evaluated on
    ``out_shape``, float64, axis by axis by explicit sums (no FFT). An axis of ``n`` points
    going to ``m`` keeps the frequencies ``|f| <= h/2`` for ``h = min(n, m)``, an even ``h``'s
    ``±h/2`` at half weight each: both are one bin on an ``h``-point grid, so the finer grid's
    interpolant splits its top frequency half and half (a cosine) and the coarser grid's
    truncation takes half of each; both keep a real field real."""
    field = y.to(torch.complex128)
    for axis, m in enumerate(out_shape):
        dim = 2 + axis
        n = field.shape[dim]
        h = min(n, m)
        frequencies = torch.arange(-(h // 2), h // 2 + 1, dtype=F64)
        weights = torch.ones_like(frequencies, dtype=torch.complex128)
        if h % 2 == 0:
            weights[[0, -1]] = 0.5
        samples = torch.arange(n, dtype=F64) / n
        points = torch.arange(m, dtype=F64) / m
        analysis = torch.exp(-2j * math.pi * torch.outer(frequencies, samples)) / n  # (f, n)
        synthesis = torch.exp(2j * math.pi * torch.outer(points, frequencies))  # (m, f)
        operator = synthesis @ (weights[:, None] * analysis)  # (m, n)
        field = torch.tensordot(field.movedim(dim, -1), operator.T, dims=1).movedim(-1, dim)
    assert float(field.imag.abs().max()) < 1e-9 * float(field.real.abs().max())
    return field.real


@pytest.mark.parametrize(
    "held, shape, out_shape",
    [
        ((16,), (16,), (32,)),  # an even grid's top frequency kept, twice as fine
        ((16,), (16,), (23,)),
        ((8, 8), (8, 8), (16, 16)),
        ((8, 8), (8, 9), (16, 9)),  # the even non-last axis grows
        ((8, 8), (9, 8), (9, 16)),  # the even last axis grows
        ((8, 8), (8, 8), (8, 13)),
        ((8, 8), (10, 8), (17, 12)),  # the last axis' top frequency, fewer non-last modes
        ((8, 8), (16, 8), (11, 12)),  # fewer non-last points, the last axis' top frequency
        ((6, 6), (9, 10), (16, 10)),  # fewer modes than either grid holds
        ((4, 4, 4), (4, 6, 4), (8, 9, 7)),
        ((4, 4, 4), (7, 8, 9), (13, 16, 11)),
        ((8, 8), (9, 9), (5, 9)),  # more non-last modes than the output grid holds
        ((8, 8), (11, 9), (4, 9)),  # even: -2 kept, +2 not
        ((10, 6), (13, 7), (3, 7)),
        ((8, 16), (9, 16), (5, 7)),  # both axes, the last one's top frequency dropped
        ((8, 16), (10, 16), (6, 10)),  # even: the last axis' bin 5 read as irfftn reads it
        ((6, 6, 6), (7, 8, 9), (3, 4, 5)),
        ((8, 8), (8, 10), (16, 6)),  # one even axis grows with its top frequency, one shrinks
        ((8, 8), (10, 8), (6, 16)),
        ((8, 8), (8, 8), (13, 8)),  # only a non-last axis changes: the last one's top bin kept
        ((4, 4, 4), (5, 6, 8), (9, 3, 8)),
    ],
)
def test_another_output_grid_is_the_trigonometric_interpolant(held, shape, out_shape):
    """On a finer grid the output is the band-limited interpolant of the same-grid output, also
    where an even grid keeps its top frequency (one bin that is ±n/2 alike: split half and
    half), whose samples it passes through; a coarser grid keeps the frequencies it holds."""
    torch.manual_seed(0)
    conv = LeanSpectralConv(3, 4, held, bias=False)
    frequency_weighted(conv)
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(1))
    expected = resampled(dft_multiplier(x, conv.n_modes, 4), out_shape)
    with torch.no_grad():
        actual = conv(x, output_shape=out_shape)
    torch.testing.assert_close(
        actual.double(), expected, rtol=0.0, atol=1e-5 * float(expected.abs().max())
    )


@pytest.mark.parametrize(
    "call, match",
    [
        ({"output_shape": (8,)}, r"output_shape must be 2 grid sizes >= 1.*got \(8,\)"),
        ({"output_shape": (8, 0)}, r"output_shape must be 2 grid sizes >= 1.*got \(8, 0\)"),
        ({"output_shape": (8, 2.5)}, r"output_shape must be 2 grid sizes"),
    ],
)
def test_an_output_grid_that_is_not_one_is_refused(call, match):
    conv = LeanSpectralConv(1, 1, (4, 4))
    with pytest.raises(ValueError, match=match):
        conv(torch.randn(1, 1, 8, 8), **call)
    scaled = LeanSpectralConv(1, 1, (4, 4), resolution_scaling_factor=[1.0, 0.01])
    with pytest.raises(ValueError, match=r"scaled by resolution_scaling_factor must be"):
        scaled(torch.randn(1, 1, 8, 8))


@pytest.mark.parametrize("shape", [(15, 16), (65, 65), (9, 7, 10)])
def test_unit_weights_return_a_field_of_the_kept_modes(shape):
    conv = LeanSpectralConv(1, 1, (8,) * len(shape), bias=False)
    with torch.no_grad():
        conv.weight.tensor.fill_(1.0)
    grid = torch.meshgrid(*[torch.arange(n, dtype=F64) / n for n in shape], indexing="ij")
    phase = 2 * math.pi * sum((a + 1) * g for a, g in enumerate(grid))  # frequencies 1, 2, 3
    u = torch.cos(phase) + 0.5 * torch.sin(2 * math.pi * 3 * grid[0] + 1.0)
    u = u.float()[None, None]
    with torch.no_grad():
        torch.testing.assert_close(conv(u), u, rtol=0.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(15, 13), (16, 15), (9, 7, 5)])
def test_lean_conv_commutes_with_circular_shifts(shape):
    torch.manual_seed(0)
    conv = LeanSpectralConv(3, 4, (6,) * len(shape))
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = conv(x)
        for axis in range(-len(shape), 0):
            for shift in (1, 3):
                assert_same(conv(torch.roll(x, shift, axis)), torch.roll(y, shift, axis))


def test_float64_fnos_and_inputs_are_refused():
    fno = fast_fno(**FNO_1D).double()  # the spectral weights stay complex64
    for x in (torch.randn(2, 1, 17, dtype=F64), torch.randn(2, 1, 17)):
        with pytest.raises(TypeError, match="only float32 FNOs are supported, float64 ones"):
            fno(x)
    with pytest.warns(UserWarning, match="discards the imaginary part"):
        cast = fast_fno(**FNO_1D).to(F64)  # the spectral weights made real
    with pytest.raises(TypeError, match=r"spectral weights \['torch.float64'\]"):
        cast(torch.randn(2, 1, 17, dtype=F64))
    assert fast_fno(**FNO_1D).double().float()(torch.randn(2, 1, 17)).shape == (2, 1, 17)
    conv = LeanSpectralConv(2, 2, (8,))
    with pytest.raises(TypeError, match="LeanSpectralConv computes in float32.*x is torch.float64"):
        conv(torch.randn(1, 2, 32, dtype=F64))
    with pytest.raises(TypeError, match="its weight torch.complex128"):
        conv.to(torch.complex128)(torch.randn(1, 2, 32))


@pytest.mark.parametrize("plain", [False, True], ids=["fast_fno", "plain_fno"])
def test_an_fno_runs_under_bfloat16_autocast_to_bfloat16_accuracy(plain):
    torch.manual_seed(0)
    fno = plain_fno(8, 1, 1, 6, 3) if plain else fast_fno(**FNO_1D)
    x = torch.randn(2, 1, 33)
    with torch.no_grad():
        full = fno(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fno(x)
    error = float((low.float() - full).abs().max() / full.abs().max())
    assert 0 < error < 5e-2, error  # bfloat16 keeps 8 bits: 2⁻⁸ ≈ 4e-3 a rounding


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_16_bit_input_is_taken_as_float32_whatever_came_before(half):
    x = torch.randn(2, 1, 17).to(half)
    fresh, used = fast_fno(**FNO_1D), fast_fno(**FNO_1D)
    used.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        first = fresh(x)  # before any float32 call
        used(torch.randn(2, 1, 17))
        expected = fresh(x.float())
        assert_same(first, expected)
        assert_same(used(x), expected)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_a_16_bit_fast_fno_is_refused_naming_its_dtype(half):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # .to(bfloat16) drops the imaginary part
        fno = fast_fno(**FNO_1D).to(half)
    with pytest.raises(TypeError) as refused:
        fno(torch.randn(2, 1, 17))
    message = str(refused.value)
    assert f"{str(half).removeprefix('torch.')} ones" in message, message
    assert "float64" not in message and "torch.autocast" in message


def test_neuralops_spectral_convolution_is_complex64_even_with_float64_weights():
    """What ``fno_dtype_problem`` tells: neuralop 2.0's layer cast by hand to float64/complex128
    differs from its Fourier multiplier done in float64 by float32 round-off, not float64's."""
    torch.manual_seed(0)
    conv = SpectralConv(4, 3, n_modes=(8,))
    for parameter in conv.parameters():
        parameter.data = parameter.data.to(torch.complex128 if parameter.is_complex() else F64)
    x = torch.randn(2, 4, 33, dtype=F64)
    with torch.no_grad():
        y = conv(x)
    weight = conv.weight if torch.is_tensor(conv.weight) else conv.weight.to_tensor()
    kept = 8 // 2 + 1
    spectrum = torch.fft.rfft(x, norm="forward")
    out = torch.zeros(2, 3, 33 // 2 + 1, dtype=torch.complex128)
    out[..., :kept] = torch.einsum("bik,iok->bok", spectrum[..., :kept], weight[..., :kept])
    expected = torch.fft.irfft(out, n=33, norm="forward") + conv.bias
    error = float((y - expected).abs().max() / expected.abs().max())
    assert y.dtype == F64 and 1e-10 < error < 1e-5, error


@pytest.mark.parametrize("cast", ["double", "by hand"])
def test_a_float64_fast_fno_is_never_told_to_cast_by_hand(cast):
    """``fast_fno`` computes in float32 only: wrapped by ``constrain`` or not, after ``.double()``
    or a cast of every parameter by hand (complex ones to complex128), the refusal is the same
    and says to build it anew in float32, not to cast by hand (which it would refuse too)."""
    condition = BoundaryCondition(Dirichlet(0.0, 1.0), Grid1D(17))
    wrapped = constrain(fast_fno(**FNO_1D), condition)
    if cast == "double":
        wrapped = wrapped.double()
    else:
        for parameter in wrapped.parameters():
            parameter.data = parameter.data.to(torch.complex128 if parameter.is_complex() else F64)
    x = torch.rand(2, 1, 17, dtype=F64)
    for model in (wrapped, wrapped.model):
        with pytest.raises(TypeError) as refused:
            model(x)
        message = str(refused.value)
        assert "only float32 FNOs are supported, float64 ones" in message
        assert "build the model anew in float32" in message and "by hand" not in message


FNO_1D = dict(n_modes=(16,), in_channels=1, out_channels=1, hidden_channels=6, n_layers=3)
FNO_2D = dict(n_modes=(5, 4), in_channels=2, out_channels=3, hidden_channels=5, n_layers=3)


@pytest.mark.parametrize("options", [FNO_1D, FNO_2D], ids=["1d", "2d"])
def test_fast_fno_is_the_same_model_and_checkpoints_load_either_way(options):
    torch.manual_seed(0)
    reference = FNO(**options)
    torch.manual_seed(0)
    lean = fast_fno(**options)
    assert all(type(conv) is LeanSpectralConv for conv in lean.fno_blocks.convs)
    state, lean_state = reference.state_dict(), lean.state_dict()
    tensors = [key for key in state if key != "_metadata"]
    assert tensors == [key for key in lean_state if key != "_metadata"]
    for key in tensors:  # the same initialisation from the same seed
        assert torch.equal(state[key], lean_state[key]), key
    torch.manual_seed(5)  # now different weights, carried across both ways
    other = FNO(**options)
    lean.load_state_dict(other.state_dict())
    shape = (17,) if len(options["n_modes"]) == 1 else (8, 9)
    x = torch.randn(2, options["in_channels"], *shape, generator=torch.Generator().manual_seed(6))
    assert_same(lean(x), other(x))
    reference.load_state_dict(lean.state_dict())
    assert_same(reference(x), other(x))


@pytest.mark.parametrize(
    "build",
    [
        lambda: plain_fno((4,), 1, 1, 8, 2),
        lambda: fast_fno(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4),
        lambda: fast_fno(
            n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, periodic=True
        ),
    ],
    ids=["plain", "fast", "fast-periodic"],
)
def test_a_saved_fno_state_loads_with_weights_only_and_every_key(build, tmp_path):
    """neuralop's ``_metadata`` (init arguments, functions and classes among them) is left out
    of the state, as ``constrain``'s wrapper leaves it out: ``weights_only=True`` reads it."""
    torch.manual_seed(0)
    model = build()
    torch.save(model.state_dict(), tmp_path / "fno.pt")
    torch.manual_seed(1)
    fresh = build()
    x = torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(fresh(x), model(x))
    fresh.load_state_dict(torch.load(tmp_path / "fno.pt", weights_only=True), strict=True)
    assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize(
    "option, value",
    [
        ("factorization", "tucker"),
        ("separable", True),
        ("complex_data", True),
        ("fno_block_precision", "half"),
    ],
)
def test_options_it_does_not_serve_are_refused(option, value):
    with pytest.raises(ValueError, match=option):
        LeanSpectralConv(4, 4, (8,), **{option: value})


def test_fast_fno_refuses_a_conv_module():
    with pytest.raises(ValueError, match="conv_module"):
        fast_fno(**FNO_1D, conv_module=SpectralConv)


# ------------------------------------------------------------------------------------------
# BOON through the door


def test_closed_form_probes_accept_declared_subclasses_only():
    class Undeclared(SpectralConv):
        def forward(self, x, output_shape=None):
            return 2 * super().forward(x, output_shape)

    assert unsupported(LeanSpectralConv(4, 4, (8,)), None) is None
    assert "computes_spectral_conv" in unsupported(Undeclared(4, 4, (8,)), None)


def boundary(n: int, axis: int, kind=Dirichlet) -> BoundaryCondition:
    values = (0.5, -1.0) if kind is Dirichlet else (1.0, -2.0)
    return BoundaryCondition(kind(*values), Grid1D(n), axis=axis)


@pytest.mark.parametrize(
    "options, conditions, shape",
    [
        (FNO_1D, lambda: [boundary(33, -1)], (33,)),
        (FNO_2D, lambda: [boundary(8, -2), boundary(7, -1, Neumann)], (8, 7)),
    ],
    ids=["1d-dirichlet", "2d-dirichlet-neumann"],  # odd non-last axes: test_spectral_probes
)
def test_boon_with_lean_layers_equals_boon_with_neuralops(options, conditions, shape):
    torch.manual_seed(0)
    reference = constrain(FNO(**options), *conditions()).train()
    torch.manual_seed(0)
    lean_fno = fast_fno(**options)
    lean = constrain(lean_fno, *conditions()).train()
    assert lean.kernel and len(lean.correction.groups) == 1
    seen = []  # batch sizes the lean layers see: the data alone, no probes in the batch
    for conv in lean_fno.fno_blocks.convs:
        conv.register_forward_hook(lambda module, args, output: seen.append(output.shape[0]))
    x = torch.randn(3, options["in_channels"], *shape, generator=torch.Generator().manual_seed(4))
    results = []
    for model in (reference, lean):
        model.zero_grad(set_to_none=True)
        y = model(x)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), [p.grad for p in model.parameters()]))
    assert seen == [3] * options["n_layers"]
    (expected, expected_grads), (actual, actual_grads) = results
    assert_same(actual, expected)
    for a, b in zip(actual_grads, expected_grads, strict=True):
        # the 1×1 convolutions sum in another order; the elimination's divisions amplify it
        torch.testing.assert_close(a, b, rtol=0.0, atol=GRADIENT_ROUND_OFF * float(b.abs().max()))


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_equals_the_convolution_it_replaces(batch, bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 4, 1, bias=bias)
    lean = pointwise(conv)
    assert lean.weight is conv.weight and (not bias or lean.bias is conv.bias)
    assert list(lean.state_dict()) == list(conv.state_dict())
    x = torch.randn(batch, 6, 23, generator=torch.Generator().manual_seed(1), requires_grad=True)
    expected, actual = conv(x), lean(x)
    assert_same(actual, expected)
    (grad_lean,) = torch.autograd.grad(actual.square().sum(), conv.weight)
    (grad_conv,) = torch.autograd.grad(expected.square().sum(), conv.weight)
    assert_same(grad_lean, grad_conv)


@pytest.mark.parametrize(
    "conv",
    [
        torch.nn.Conv1d(3, 3, 3),
        torch.nn.Conv1d(4, 4, 1, groups=2),
        torch.nn.Conv1d(3, 3, 1, stride=2),
        torch.nn.Conv1d(3, 3, 1, padding=1),
    ],
    ids=["kernel-3", "groups", "stride", "padding"],
)
def test_pointwise_refuses_a_convolution_that_is_not_plain_1x1(conv):
    with pytest.raises(ValueError, match="conv must be a plain kernel-1 Conv1d"):
        pointwise(conv)


def test_fast_fno_runs_every_1x1_convolution_as_a_pointwise_one():
    lean = fast_fno(**FNO_1D)
    layers = [*lean.lifting.fcs, *lean.projection.fcs]
    layers += [fc for mlp in lean.fno_blocks.channel_mlp for fc in mlp.fcs]
    layers += [skip.conv for skip in lean.fno_blocks.fno_skips]
    assert all(type(layer) is PointwiseConv1d for layer in layers)


def hand_written_fno1d(fno, x: torch.Tensor) -> torch.Tensor:
    """The reference FNO1d's forward from ``fno``'s parameters: ``[x, grid]`` lifted linearly,
    layers ``v ← σ(irfft(W · rfft(v)[:m]) + b + S v)`` (no σ after the last), then
    ``Q₂ σ(Q₁ v)``; the FFT normalised by ``1/n`` (neuralop's ``fft_norm="forward"``)."""
    gelu = torch.nn.functional.gelu

    def pointwise_layer(conv, v):  # a kernel-1 convolution as a channel matmul
        out = torch.einsum("oi,bin->bon", conv.weight[:, :, 0], v)
        return out if conv.bias is None else out + conv.bias[None, :, None]

    n = x.shape[-1]
    grid = fno.positional_embedding.grid(x.shape[2:], x.device, x.dtype)[0]
    v = pointwise_layer(fno.lifting.fcs[0], torch.cat([x, grid.expand(x.shape[0], 1, n)], 1))
    blocks = fno.fno_blocks
    for index, conv in enumerate(blocks.convs):
        weight = conv.weight.tensor  # (in, out, modes) complex
        modes = weight.shape[-1]
        spectrum = torch.fft.rfft(v, norm="forward")[..., :modes]
        mixed = torch.zeros(v.shape[0], weight.shape[1], n // 2 + 1, dtype=torch.cfloat)
        mixed[..., :modes] = torch.einsum("bim,iom->bom", spectrum, weight)
        kernel = torch.fft.irfft(mixed, n=n, norm="forward") + conv.bias
        v = kernel + pointwise_layer(blocks.fno_skips[index].conv, v)
        if index < len(blocks.convs) - 1:
            v = gelu(v)
    first, second = fno.projection.fcs
    return pointwise_layer(second, gelu(pointwise_layer(first, v)))


@pytest.mark.parametrize("batch", [1, 3])
def test_plain_fno_is_the_reference_fno1d(batch):
    torch.manual_seed(0)
    fno = plain_fno(n_modes=(8,), in_channels=1, out_channels=2, hidden_channels=6, n_layers=3)
    assert [fc.out_channels for fc in fno.projection.fcs] == [PLAIN_PROJECTION, 2]
    assert not fno.fno_blocks.use_channel_mlp and len(fno.lifting.fcs) == 1
    with torch.no_grad():  # non-zero biases, so every term is seen
        for conv in fno.fno_blocks.convs:
            conv.bias.normal_()
    x = torch.randn(batch, 1, 17, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same(fno(x), hand_written_fno1d(fno, x))


def test_plain_fno_trains_into_an_exact_boon():
    grid = Grid1D(33, 0.0, 1.0)
    torch.manual_seed(0)
    fno = plain_fno(n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=6, n_layers=3)
    model = constrain(fno, BoundaryCondition(Dirichlet(0.5, -1.0), grid))
    x = torch.randn(4, 1, 33)
    y = model(x)
    y.square().mean().backward()
    walls = y.detach()[..., [0, -1]] - torch.tensor([0.5, -1.0])
    assert float(walls.abs().max()) < 1e-6
    assert all(p.grad is not None for p in fno.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "name, value",
    [
        ("hidden_channels", 0),
        ("projection_channels", 0),
        ("n_layers", -1),
        ("in_channels", 1.5),
        ("out_channels", True),
    ],
)
def test_plain_fno_refuses_a_size_that_is_not_a_positive_integer(name, value):
    sizes = dict(in_channels=1, out_channels=1, hidden_channels=6, n_layers=2)
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1, got {value!r}"):
        plain_fno((8,), **{**sizes, name: value})


def test_plain_fno_takes_an_int_n_modes_as_one_space_axis():
    """``plain_fno(4, ...)`` failed with neuralop's "object of type 'int' has no len()"; an int
    is the modes of one space axis, and what is neither is refused naming ``n_modes``."""
    torch.manual_seed(0)
    from_int = plain_fno(4, 1, 1, 8, 2)
    torch.manual_seed(0)
    from_tuple = plain_fno((4,), 1, 1, 8, 2)
    assert from_int.n_modes == from_tuple.n_modes == (4,)
    x = torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same(from_int(x), from_tuple(x))
    with pytest.raises(ValueError, match=NOT_MODES):
        plain_fno("4", 1, 1, 8, 2)


def test_plain_fno_in_2d_applies_one_nonlinearity_per_layer():
    torch.manual_seed(0)
    fno = plain_fno(n_modes=(6, 4), in_channels=2, out_channels=1, hidden_channels=5, n_layers=3)
    x = torch.randn(2, 2, 9, 8, generator=torch.Generator().manual_seed(1))
    blocks = fno.fno_blocks
    with torch.no_grad():
        v = fno.lifting(fno.positional_embedding(x))
        for index, conv in enumerate(blocks.convs):
            v = conv(v) + blocks.fno_skips[index](v)
            v = torch.nn.functional.gelu(v) if index < len(blocks.convs) - 1 else v
        assert_same(fno(x), fno.projection(v))


def test_plain_fno_calls_a_hooked_skip_as_a_module():
    # the constraint layer's probes ride on hooks of the skip module: a bypass must not skip them
    torch.manual_seed(0)
    fno = plain_fno(n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=6, n_layers=2)
    seen = []
    fno.fno_blocks.fno_skips[1].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    x = torch.randn(3, 1, 17)
    with torch.no_grad():
        fno(x)
    assert seen == [(3, 6, 17)]


@pytest.mark.parametrize("factor", [[2, 1.5], (2, 1.5), (np.float32(2.0), 1.5)])
def test_a_scaling_factor_per_axis_is_taken_as_a_list_or_a_tuple(factor):
    """neuralop 2.0 reads a tuple ``resolution_scaling_factor`` as none (the input's grid); the
    lean layer scales by it as by a list."""
    conv = LeanSpectralConv(1, 1, (4, 4), resolution_scaling_factor=factor)
    assert conv(torch.randn(1, 1, 8, 8)).shape == (1, 1, 16, 12)


@pytest.mark.parametrize(
    "factor", ["x", [2.0, "a"], [2.0], [2.0, 0.0], [2.0, float("nan")], [float("inf"), 2.0], True]
)
def test_a_bad_scaling_factor_is_refused_by_name(factor):
    """neuralop 2.0 turns these into no scaling (or a list of lists that fails at the first
    call): the lean layer refuses them."""
    with pytest.raises(ValueError, match="resolution_scaling_factor must be a positive number"):
        LeanSpectralConv(1, 1, (4, 4), resolution_scaling_factor=factor)


def test_lean_conv_computes_on_the_device_of_its_input():
    """On the ``meta`` device (no data, every op checked for its device) the output stays there."""
    conv = LeanSpectralConv(2, 3, (4, 4), resolution_scaling_factor=2.0).to("meta")
    y = conv(torch.empty(1, 2, 8, 9, device="meta"))
    assert y.device.type == "meta" and y.shape == (1, 3, 16, 18)


def test_pointwise_conv_takes_an_unbatched_input_as_conv1d_does():
    torch.manual_seed(0)
    lean = pointwise(torch.nn.Conv1d(6, 4, 1))
    x = torch.randn(6, 23, generator=torch.Generator().manual_seed(1))
    expected = lean.weight[:, :, 0] @ x + lean.bias[:, None]
    with torch.no_grad():
        assert_same(lean(x), expected)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_fast_fno_refuses_a_non_finite_input(bad):
    fno = fast_fno(**FNO_1D)
    x = torch.randn(2, 1, 17)
    x[1, 0, 5] = bad
    with pytest.raises(ValueError, match="x contains NaN or inf values"):
        fno(x)


@pytest.mark.parametrize(
    "build, shape, expected",
    [
        (lambda: plain_fno((4,), 1, 1, 8, n_layers=2), (3, 16), r"\(batch, 1, \*space\) with 1 "),
        (lambda: plain_fno((4,), 1, 1, 8, n_layers=2), (3, 2, 16), r"1 space axis.*got \(3, 2"),
        (lambda: plain_fno((4,), 1, 1, 8, n_layers=2), (3, 1, 16, 16), r"got \(3, 1, 16, 16\)"),
        (
            lambda: fast_fno(n_modes=(4, 4), in_channels=3, out_channels=1, hidden_channels=8),
            (2, 1, 12, 20),
            r"\(batch, 3, \*space\) with 2 space axes \(in_channels=3, n_modes=\(4, 4\)\)",
        ),
        (
            lambda: fast_fno(
                n_modes=(4, 4), in_channels=3, out_channels=1, hidden_channels=8, periodic=True
            ),
            (2, 5, 12, 20),
            r"\(batch, 3, \*space\) with 2 space axes",
        ),
    ],
)
def test_an_input_of_the_wrong_rank_or_channel_count_is_refused_by_its_layout(
    build, shape, expected
):
    """Not neuralop's errors, which count the coordinate channels the FNO appends itself."""
    with pytest.raises(ValueError, match=expected):
        build()(torch.randn(shape))


def test_fast_fno_takes_periodic_or_a_position_not_both():
    with pytest.raises(ValueError, match="give periodic=True or position, not both"):
        fast_fno(**FNO_1D, periodic=True, position=GridCoordinates(1))


def test_a_periodic_fast_fno_lifts_the_cosine_and_sine_of_each_axis():
    """2-D: the lifting takes the input's channels and cos, sin of both axes' phases."""
    torch.manual_seed(0)
    options = dict(n_modes=(4, 4), in_channels=2, out_channels=1, hidden_channels=4, n_layers=2)
    fno = fast_fno(**options, periodic=True)
    assert fno.lifting.fcs[0].in_channels == 2 + 4
    x = torch.randn(3, 2, 9, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embedded = fno.positional_embedding(x)
    rows, columns = torch.meshgrid(torch.arange(9) / 9, torch.arange(8) / 8, indexing="ij")
    phases = [2 * math.pi * rows, 2 * math.pi * columns]
    waves = torch.stack([f(p) for p in phases for f in (torch.cos, torch.sin)])
    assert embedded.shape == (3, 6, 9, 8)
    torch.testing.assert_close(embedded[:, :2], x, rtol=0, atol=0)
    torch.testing.assert_close(embedded[:, 2:], waves.expand(3, -1, -1, -1).float())
    assert fno(x).shape == (3, 1, 9, 8)


def test_plain_fno_on_another_output_grid_resamples_the_last_skip():
    """``output_shape`` reaches the last layer: its convolution computes on the output grid and
    its skip is resampled there as neuralop resamples (linear, corners aligned, in 1-D)."""
    torch.manual_seed(0)
    fno = plain_fno(n_modes=(6,), in_channels=1, out_channels=2, hidden_channels=5, n_layers=2)
    x = torch.randn(3, 1, 17, generator=torch.Generator().manual_seed(1))
    blocks = fno.fno_blocks
    with torch.no_grad():
        v = fno.lifting(fno.positional_embedding(x))
        v = torch.nn.functional.gelu(blocks.convs[0](v) + blocks.fno_skips[0](v))
        skip = torch.nn.functional.interpolate(
            blocks.fno_skips[1](v), size=34, mode="linear", align_corners=True
        )
        expected = fno.projection(blocks.convs[1](v, output_shape=(34,)) + skip)
        assert_same(fno(x, output_shape=(34,)), expected)


def test_layers_using_the_same_modes_of_different_weights_each_use_their_own():
    """The slices are cached per shape: a layer holding 8 × 8 modes and using 6 × 6 multiplies
    by its own weights' frequencies after a 6 × 6 layer ran on the same grid."""
    torch.manual_seed(0)
    small = LeanSpectralConv(3, 4, (6, 6), bias=False)
    large = LeanSpectralConv(3, 4, (8, 8), bias=False)
    for conv in (small, large):
        frequency_weighted(conv)
    large.n_modes = (6, 6)
    assert tuple(large.n_modes) == tuple(small.n_modes)
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    expected = dft_multiplier(x, large.n_modes, 4)
    with torch.no_grad():
        small(x)
        actual = large(x)
    torch.testing.assert_close(
        actual.double(), expected, rtol=0.0, atol=1e-5 * float(expected.abs().max())
    )


@pytest.mark.parametrize("periodic", [False, True])
def test_fast_fno_takes_an_int_n_modes_as_one_space_axis(periodic):
    """``fast_fno(n_modes=4, ...)`` failed inside neuralop (or at ``len`` with ``periodic``),
    while ``plain_fno`` takes an int as one space axis."""
    options = {"in_channels": 1, "out_channels": 1, "hidden_channels": 8, "n_layers": 2}
    torch.manual_seed(0)
    from_int = fast_fno(n_modes=4, periodic=periodic, **options)
    torch.manual_seed(0)
    from_tuple = fast_fno(n_modes=(4,), periodic=periodic, **options)
    assert from_int.n_modes == from_tuple.n_modes == (4,)
    x = torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same(from_int(x), from_tuple(x))
    with pytest.raises(ValueError, match=NOT_MODES):
        fast_fno(n_modes="4", periodic=periodic, **options)


@pytest.mark.parametrize("hidden_channels", [32, 49, 98, 103])
def test_plain_fno_projection_is_projection_channels_wide(hidden_channels):
    """neuralop builds the projection ``int(ratio × hidden)`` wide: the ratio 128 / 49 gave 127
    hidden projection channels at 49 (and 98, 103, ...), not the documented 128."""
    fno = plain_fno((4,), 1, 1, hidden_channels, 2, projection_channels=128)
    widths = {p.shape[0] for name, p in fno.projection.named_parameters() if name.endswith("bias")}
    assert 128 in widths
    first = next(p for p in fno.projection.parameters() if p.ndim >= 2)
    assert first.shape[:2] == (128, hidden_channels)
