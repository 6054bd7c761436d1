"""BOON's probe responses of neuralop Fourier layers in closed form (``spectral_probes``).

The responses computed from the weights are compared with the layer run on the spike batch, on
1-, 2- and 3-D set-ups of odd and even sizes with Dirichlet, Neumann, one-sided and mixed
conditions, for neuralop's ``SpectralConv`` (whose double ``fftshift`` lands a frequency one bin
off on an odd non-last axis) and the toolkit's ``LeanSpectralConv`` (which shifts back exactly);
``constrain`` uses them for a supported FNO (no probes join the batch) and probes the layers of
other models by running them, exactly either way.
"""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from neuralop.layers.skip_connections import Flattened1dConv, SoftGating
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO
from torch import nn

from pdes import Dirichlet, Grid1D, Neumann
from pdes.heat import one_sided_flux
from physml import constrain
from physml.constraints import BoundaryCondition, KernelLayer, spectral_probes
from physml.constraints import operator as seam
from physml.constraints.operator import CorrectedLayer, probe_in_closed_form
from physml.constraints.spectral_probes import _plan, wall_responses
from physml.constraints.spectral_probes import unsupported as no_closed_form
from physml.models import LeanSpectralConv, fast_fno

ROUND_OFF = 1e-6  # float32 round-off of an FFT of these sizes, relative to the responses


def dirichlet(n: int, axis: int = -1, **kwargs) -> BoundaryCondition:
    return BoundaryCondition(Dirichlet(0.5, -1.0), Grid1D(n), axis=axis, **kwargs)


def neumann(n: int, axis: int = -1, **kwargs) -> BoundaryCondition:
    return BoundaryCondition(Neumann(1.0, -2.0), Grid1D(n), axis=axis, **kwargs)


FNO_1D = dict(n_modes=(16,), in_channels=1, out_channels=1, hidden_channels=6, n_layers=3)
FNO_2D = dict(n_modes=(5, 4), in_channels=2, out_channels=3, hidden_channels=5, n_layers=3)
FNO_3D = dict(n_modes=(4, 4, 4), in_channels=1, out_channels=1, hidden_channels=4, n_layers=2)

# name: (FNO arguments, conditions, spatial shape)
SETUPS = {
    "1d-odd-dirichlet": (FNO_1D, lambda: [dirichlet(65)], (65,)),
    "1d-even-neumann-nyquist": (dict(FNO_1D, n_modes=(32,)), lambda: [neumann(32)], (32,)),
    "1d-one-sided-mixed": (
        FNO_1D,
        lambda: [dirichlet(17, side="left"), neumann(17, side="right")],
        (17,),
    ),
    "2d-odd-both-axes": (FNO_2D, lambda: [dirichlet(13, -2), dirichlet(11, -1)], (13, 11)),
    "2d-even-neumann-dirichlet": (FNO_2D, lambda: [neumann(12, -2), dirichlet(10, -1)], (12, 10)),
    "2d-odd-last-axis-only": (FNO_2D, lambda: [dirichlet(6, -1)], (7, 6)),
    "2d-last-axis-first": (FNO_2D, lambda: [neumann(7, -1), dirichlet(9, -2)], (9, 7)),
    "2d-soft-gating-skip": (
        dict(FNO_2D, fno_skip="soft-gating"),
        lambda: [dirichlet(9, -2), dirichlet(8, -1)],
        (9, 8),
    ),
    "2d-identity-skip": (
        dict(FNO_2D, fno_skip="identity", in_channels=5),
        lambda: [dirichlet(9, -2), neumann(8, -1)],
        (9, 8),
    ),
    "3d-three-axes": (
        FNO_3D,
        lambda: [neumann(7, -3), dirichlet(6, -2), dirichlet(5, -1)],
        (7, 6, 5),
    ),
}


CONVS = ["neuralop", "lean"]
"""neuralop's FNO (``SpectralConv``) and the toolkit's ``fast_fno`` (``LeanSpectralConv``)."""


def make(
    name: str, seed: int = 0, conv: str = "neuralop"
) -> tuple[FNO, list[BoundaryCondition], tuple[int, ...]]:
    arguments, conditions, shape = SETUPS[name]
    torch.manual_seed(seed)
    model = FNO(**arguments) if conv == "neuralop" else fast_fno(**arguments)
    return model, conditions(), shape


def kernel_layers(model: FNO) -> list[tuple[nn.Module, nn.Module]]:
    blocks = model.fno_blocks
    return list(zip(blocks.convs, blocks.fno_skips, strict=True))


def assert_round_off(actual: torch.Tensor, expected: torch.Tensor, scale, tol=ROUND_OFF) -> None:
    error = (actual.expand_as(expected) - expected).abs().max().item()
    assert error <= tol * float(scale), f"error {error:.3g} against scale {float(scale):.3g}"


# ------------------------------------------------------------------------------------------
# Closed form against the layer run on the spike batch


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("pivot_floor", [0.0, 0.1])
@pytest.mark.parametrize("name", list(SETUPS))
def test_closed_form_responses_equal_the_layer_run_on_the_spikes(name, pivot_floor, conv):
    model, conditions, shape = make(name, conv=conv)
    layers = [CorrectedLayer(c, s, conditions, pivot_floor) for c, s in kernel_layers(model)]
    like = torch.zeros(1, model.fno_blocks.in_channels, *shape)
    axes = layers[0].axes
    with torch.no_grad():
        found = wall_responses([(layer.conv, layer.skip) for layer in layers], axes, like)
        assert found is not None  # every layer of the FNO at once
        for index, layer in enumerate(layers):
            response = layer.plain(layer.spikes(like))  # zero, then two spikes per axis
            bias = response[0]
            columns = (response[1:] - bias).unflatten(0, (len(axes), 2))
            scale = columns.abs().max()
            assert_round_off(found.bias[index], bias, bias.abs().max())
            for k in range(len(axes)):  # p₀ and p_N of every channel and wall point
                assert_round_off(found.columns[k][:, index], columns[k], scale)
            if pivot_floor == 0:  # unbounded pivots: the probes amplify round-off at will
                continue
            # the probes read from them (eliminations, composed axes, floored pivots)
            layer.probe(like, response)
            probed = layer._probes[1]
            assert probe_in_closed_form([layer], like)
            for reference, closed in zip(probed, layer._probes[1], strict=True):
                for field in fields(reference)[1:]:  # the tensors, after the axis
                    expected = getattr(reference, field.name)
                    scale = expected.abs().max()
                    assert_round_off(getattr(closed, field.name), expected, scale, tol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "soft-gating"])
def test_skip_biases_enter_the_response_to_zero(kind):
    torch.manual_seed(0)
    model = FNO(**FNO_2D)
    conv = model.fno_blocks.convs[0]
    if kind == "linear":
        skip = Flattened1dConv(5, 5, 1, bias=True)
    else:
        skip = SoftGating(5, 5, n_dim=2, bias=True)
        nn.init.normal_(skip.weight)
    nn.init.normal_(skip.bias if kind == "soft-gating" else skip.conv.bias)
    layer = CorrectedLayer(conv, skip, [dirichlet(9, -2), neumann(8, -1)])
    like = torch.zeros(1, 5, 9, 8)
    with torch.no_grad():
        response = layer.plain(layer.spikes(like))
        found = wall_responses([(conv, skip)] * 2, layer.axes, like)  # stacked: the same twice
    bias = response[0]
    columns = (response[1:] - bias).unflatten(0, (2, 2))
    for index in range(2):
        assert_round_off(found.bias[index], bias, bias.abs().max())
        for k in range(2):
            assert_round_off(found.columns[k][:, index], columns[k], columns.abs().max())


@pytest.mark.parametrize("conv", CONVS)
def test_responses_vary_along_a_wall_across_an_odd_non_last_axis_of_neuralops_only(conv):
    """neuralop 2.0's double fftshift: a last-axis wall spike's response is not constant along
    an odd axis -2, and is along an even one; the lean layer's is constant along both."""
    for nx, constant in ((7, conv == "lean"), (8, True)):
        torch.manual_seed(0)
        model = FNO(**FNO_2D) if conv == "neuralop" else fast_fno(**FNO_2D)
        conv, skip = kernel_layers(model)[1]
        layer = CorrectedLayer(conv, skip, [dirichlet(6, -1)])
        like = torch.zeros(1, 5, nx, 6)
        with torch.no_grad():
            response = layer.plain(layer.spikes(like))
            found = wall_responses([(conv, skip)], layer.axes, like)
        first = response[1] - response[0]  # (channel, x, y)
        spread = (first - first[:, :1]).abs().max() / first.abs().max()
        assert (spread < 1e-6) == constant
        assert_round_off(found.columns[0][0, 0], first, first.abs().max())


# ------------------------------------------------------------------------------------------
# constrain: the closed form where it applies, batch probing elsewhere


def conv_batches(model: nn.Module, layers: list[nn.Module]) -> list[int]:
    """The batch sizes ``layers`` return in each forward of ``model`` (before the correction)."""
    seen: list[int] = []
    for layer in layers:
        layer.register_forward_hook(lambda module, args, output: seen.append(output.shape[0]))
    return seen


def forward_and_gradients(model: nn.Module, x: torch.Tensor):
    model.zero_grad(set_to_none=True)
    y = model(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize(
    "name, tol",
    [
        ("1d-one-sided-mixed", 1e-5),  # round-off, amplified by the eliminations (more so
        ("2d-odd-both-axes", 1e-4),  # with more axes composed), relative to the output
        ("2d-even-neumann-dirichlet", 1e-4),
        ("2d-last-axis-first", 1e-4),
        ("3d-three-axes", 2e-4),
    ],
)
def test_constrain_reads_fno_probes_from_the_weights(name, tol, conv, monkeypatch):
    model, conditions, shape = make(name, conv=conv)
    wrapped = constrain(model, *conditions).train()
    assert len(wrapped.correction.groups) == 1  # all layers read together
    seen = conv_batches(model, list(model.fno_blocks.convs))
    x = torch.randn(3, model.in_channels, *shape)
    closed, closed_grads = forward_and_gradients(wrapped, x)
    assert seen == [3] * model.n_layers  # the data alone: no probes in the batch
    seen.clear()
    monkeypatch.setattr(seam, "probe_in_closed_form", lambda layers, like: False)
    probed, probed_grads = forward_and_gradients(wrapped, x)
    probes = 1 + 2 * len(wrapped.correction.layers[0].axes)
    assert seen == [3 + probes] * model.n_layers
    assert_round_off(closed, probed, max(1.0, probed.abs().max()), tol=tol)
    for a, b in zip(closed_grads, probed_grads, strict=True):
        assert_round_off(a, b, b.abs().max(), tol=100 * tol)


def test_layers_that_shift_back_differently_are_read_apart_and_each_exactly():
    model, conditions, shape = make("2d-odd-both-axes")
    neuralops = model.fno_blocks.convs[1]
    lean = LeanSpectralConv(5, 5, FNO_2D["n_modes"])
    lean.load_state_dict(neuralops.state_dict())
    model.fno_blocks.convs[1] = lean
    wrapped = constrain(model, *conditions)
    assert sorted(len(group) for group in wrapped.correction.groups) == [1, 2]
    like = torch.zeros(1, 5, *shape)
    with torch.no_grad():
        for layer in wrapped.correction.layers:
            response = layer.plain(layer.spikes(like))
            found = wall_responses([(layer.conv, layer.skip)], layer.axes, like)
            columns = (response[1:] - response[0]).unflatten(0, (2, 2))
            for k in range(2):
                assert_round_off(found.columns[k][:, 0], columns[k], columns.abs().max())


def test_the_installed_neuralops_shift_back_is_read_off_its_layer(monkeypatch):
    """neuralop 2.0 shifts back with fftshift (off by one bin on odd axes); a neuralop whose
    SpectralConv shifts back exactly (as later versions do) or otherwise is recognised."""
    read = spectral_probes._neuralop_shifts_back_exactly.__wrapped__
    assert read() is False  # neuralop 2.0, installed here
    known = spectral_probes._neuralop()

    class Doubled(LeanSpectralConv):
        def forward(self, x, output_shape=None):
            return 2 * super().forward(x, output_shape)

    for conv, expected in ((LeanSpectralConv, True), (Doubled, None)):
        monkeypatch.setattr(
            spectral_probes, "_neuralop", lambda c=conv: known._replace(SpectralConv=c)
        )
        assert read() is expected
    monkeypatch.setattr(spectral_probes, "_neuralop", lambda: known)
    monkeypatch.setattr(spectral_probes, "_neuralop_shifts_back_exactly", lambda: None)
    plain = FNO(**FNO_2D).fno_blocks.convs[0]
    assert "shifts its spectrum back in an unknown way" in no_closed_form(plain, None)
    assert no_closed_form(LeanSpectralConv(4, 4, (4, 4)), None) is None  # declared


def test_probes_from_the_weights_are_kept_without_gradient_and_outlive_inference_mode(
    monkeypatch,
):
    model, conditions, shape = make("2d-odd-both-axes")
    wrapped = constrain(model, *conditions)
    calls = []

    def counted(*args):
        calls.append(1)
        return wall_responses(*args)

    monkeypatch.setattr(seam, "wall_responses", counted)
    _plan.cache_clear()  # the constants are built inside inference mode below
    x = torch.randn(2, model.in_channels, *shape)
    with torch.inference_mode():
        first = wrapped(x)
        torch.testing.assert_close(wrapped(x), first)
    assert len(calls) == 1
    (wrapped(x) ** 2).mean().backward()  # the same constants, now with gradients
    assert len(calls) == 2
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("build", [FNO, fast_fno], ids=["neuralop", "fast_fno"])
def test_probes_kept_without_gradient_are_read_again_under_another_autocast(build):
    def wrapped():
        torch.manual_seed(0)
        return constrain(build(**FNO_1D), dirichlet(17, side="left"), neumann(17, side="right"))

    def low(model, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    x = torch.randn(2, 1, 17)
    with torch.no_grad():
        full_first, low_first = wrapped(), wrapped()
        full, low_alone = full_first(x), low(low_first, x)
        assert low_alone.dtype == torch.bfloat16
        assert torch.equal(low(full_first, x), low_alone)  # after a float32 call
        assert torch.equal(low_first(x), full)  # after a bfloat16 call


class TinyOperator(nn.Module):
    """A 1-D operator network with two layers ``gelu(conv(h) + skip(h))`` (size-5 convolutions)."""

    n_dim = 1
    out_channels = 1

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lift = nn.Conv1d(1, width, 1)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, 5, padding=2) for _ in range(2))
        self.skips = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(2))
        self.project = nn.Conv1d(width, 1, 1)

    def kernel_layers(self) -> list[KernelLayer]:
        return [KernelLayer(c, s) for c, s in zip(self.convs, self.skips, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lift(x)
        for conv, skip in zip(self.convs, self.skips, strict=True):
            h = F.gelu(conv(h) + skip(h))
        return self.project(h)


def unsupported(kind: str) -> tuple[nn.Module, list[nn.Module], list[BoundaryCondition], tuple]:
    """A model whose layers take batch probing, its convolutions, a Dirichlet and a Neumann
    condition, and the input shape."""
    if kind == "operator-model":
        model = TinyOperator()
        conditions = [dirichlet(21, side="left"), neumann(21, side="right")]
        return model, list(model.convs), conditions, (1, 21)
    torch.manual_seed(0)
    if kind == "tucker":
        model = FNO(**dict(FNO_2D, factorization="tucker"))
        conditions = [dirichlet(12, -2), neumann(10, -1)]
        return model, list(model.fno_blocks.convs), conditions, (2, 12, 10)
    model = FNO(**FNO_1D)  # 16 modes on 9 points: more than the grid holds, the weight is sliced
    conditions = [dirichlet(9, side="left"), neumann(9, side="right")]
    return model, list(model.fno_blocks.convs), conditions, (1, 9)


@pytest.mark.parametrize("kind", ["operator-model", "tucker", "modes-beyond-the-grid"])
def test_other_layers_are_probed_by_running_them_and_stay_exact(kind):
    model, convs, conditions, shape = unsupported(kind)
    wrapped = constrain(model, *conditions, pivot_floor=0.0).train()
    assert wrapped.kernel
    reasons = {layer.no_closed_form for layer in wrapped.correction.layers}
    if kind == "modes-beyond-the-grid":
        assert reasons == {None}  # supported layers; the closed form declines this grid
    else:
        assert None not in reasons and not wrapped.correction.groups
    seen = conv_batches(model, convs)
    x = torch.randn(3, *shape)
    y = wrapped(x)
    (y**2).mean().backward()
    probes = 1 + 2 * len(wrapped.correction.layers[0].axes)
    assert seen == [3 + probes] * len(convs)  # the spikes joined the batch
    assert all(p.grad is not None for p in model.parameters())
    y = y.detach().double()
    tol = 1e-5 * max(1.0, y.abs().max().item())
    left, right = one_sided_flux(y, conditions[1].grid.dx)
    if kind == "tucker":  # Dirichlet on x (but where the later Neumann walls meet it), Neumann on y
        assert (y[..., 0, 1:-1] == 0.5).all() and (y[..., -1, 1:-1] == -1.0).all()
        assert (left - 1.0).abs().max() < tol and (right + 2.0).abs().max() < tol
    else:  # Dirichlet on the left, Neumann on the right
        assert (y[..., 0] == 0.5).all() and (right + 2.0).abs().max() < tol


def test_closed_form_probes_decline_an_fno_using_fewer_modes_than_its_weights():
    """With ``max_n_modes`` > ``n_modes`` the layer uses a slice of its weight, which the closed
    form does not model: it declines (None), and the layer's spikes are run instead."""
    torch.manual_seed(0)
    model = FNO(
        n_modes=(6,),
        max_n_modes=(12,),
        in_channels=1,
        out_channels=1,
        hidden_channels=4,
        n_layers=2,
    )
    n = 33
    conditions = [dirichlet(n)]
    blocks = model.fno_blocks
    layers = [
        CorrectedLayer(c, s, conditions)
        for c, s in zip(blocks.convs, blocks.fno_skips, strict=True)
    ]
    like = torch.zeros(1, blocks.in_channels, n)
    with torch.no_grad():
        found = wall_responses([(lay.conv, lay.skip) for lay in layers], layers[0].axes, like)
    assert found is None


@pytest.mark.parametrize(
    "options, reason",
    [
        (dict(fft_norm="backward"), "uses fft_norm='backward'"),
        (dict(resolution_scaling_factor=2.0), "rescales the resolution"),
        (dict(separable=True), "has separable weights"),
    ],
)
def test_closed_form_declines_a_spectral_conv_it_does_not_model(options, reason):
    conv = (SpectralConv if "separable" in options else LeanSpectralConv)(4, 4, (4, 4), **options)
    assert reason in no_closed_form(conv, None)


def test_closed_form_declines_layers_it_cannot_read_together_or_in_the_inputs_dtype():
    """``None`` (run the spikes) for float64 inputs to complex64 weights, and for layers of one
    weight shape using different modes (the second a slice of its weight)."""
    torch.manual_seed(0)
    model = FNO(**FNO_2D)
    layers = kernel_layers(model)[:2]
    axes = [-2, -1]
    like = torch.zeros(1, 5, 9, 8)
    with torch.no_grad():
        assert wall_responses(layers, axes, like) is not None
        assert wall_responses(layers, axes, like.double()) is None
        layers[1][0].n_modes = (3, 4)
        assert wall_responses(layers, axes, like) is None


def test_layers_with_and_without_a_bias_are_read_apart_and_each_exactly(monkeypatch):
    torch.manual_seed(0)
    model = FNO(**FNO_2D)
    model.fno_blocks.convs[1].bias = None
    for conv in model.fno_blocks.convs:  # biases that matter
        if conv.bias is not None:
            nn.init.normal_(conv.bias)
    wrapped = constrain(model, dirichlet(9, -2), neumann(8, -1)).eval()
    assert sorted(len(group) for group in wrapped.correction.groups) == [1, 2]
    x = torch.randn(2, 2, 9, 8)
    with torch.no_grad():
        found = wrapped(x)
        monkeypatch.setattr(seam, "probe_in_closed_form", lambda layers, like: False)
        probed = wrapped(x)
    assert_round_off(found, probed, probed.abs().max(), tol=1e-4)
