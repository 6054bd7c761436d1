"""``LeanSpectralConv`` against neuralop's ``SpectralConv`` (``physml.models.spectral``).

The reference is neuralop's own layer with the same ``state_dict``: outputs and gradients must
agree to float32 round-off (they agree bitwise on CPU) in 1-, 2- and 3-D, odd and even sizes,
with truncated and sliced modes; checkpoints load either way; BOON through ``constrain`` reads
the lean layers' probes in closed form and gives the original's result.
"""

from __future__ import annotations

import pytest
import torch
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO

from pdes import Dirichlet, Grid1D, Neumann
from physml import constrain
from physml.constraints import BoundaryCondition
from physml.constraints.spectral_probes import unsupported
from physml.models import LeanSpectralConv, fast_fno, plain_fno
from physml.models.spectral import PLAIN_PROJECTION, PointwiseConv1d, pointwise

ROUND_OFF = 1e-6  # float32, relative to the largest entry
GRADIENT_ROUND_OFF = 1e-4  # through BOON's corrections, relative to the largest entry


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


# name: (n_modes, spatial shape)
CASES = {
    "1d-odd": ((16,), (65,)),
    "1d-even-nyquist": ((32,), (32,)),
    "1d-more-modes-than-grid": ((40,), (21,)),
    "2d-odd": ((5, 4), (13, 11)),
    "2d-even": ((6, 8), (12, 10)),
    "2d-odd-even": ((7, 6), (9, 8)),
    "3d-mixed": ((4, 4, 4), (7, 6, 5)),
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
        ((8, 6), (12, 10), (11, 9), {}),  # fewer modes in use than held: the weight is sliced
        ((12,), (12,), (40,), {"output_shape": (55,)}),  # another output grid
        ((6, 6), (6, 6), (9, 8), {"output_shape": (12, 7)}),
    ],
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
    shape = (17,) if len(options["n_modes"]) == 1 else (9, 8)
    x = torch.randn(2, options["in_channels"], *shape, generator=torch.Generator().manual_seed(6))
    assert_same(lean(x), other(x))
    reference.load_state_dict(lean.state_dict())
    assert_same(reference(x), other(x))


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
        (FNO_2D, lambda: [boundary(9, -2), boundary(7, -1, Neumann)], (9, 7)),  # odd: fftshifts
    ],
    ids=["1d-dirichlet", "2d-odd-dirichlet-neumann"],
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
