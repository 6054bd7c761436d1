"""Boundary constraints and BOON (``constrain`` on an FNO): exact values / fluxes, kernel
decoupling, bad input."""

import math
import warnings

import numpy as np
import pytest
import torch
from neuralop.models import FNO
from torch import nn

from pdes import Dirichlet, Grid1D, Neumann, Periodic
from pdes.heat import one_sided_flux, solve_heat
from physml import ConstraintError, Ensemble, Gaussian, constrain
from physml.constraints import BoundaryCondition
from physml.constraints.operator import CorrectedLayer

GRID = Grid1D(65)
T_EVAL = 0.3
TOL = 1e-5


def heater(t: float) -> float:
    return 5.0 * math.sin(math.pi * t)


CONDITIONS = {
    "dirichlet": Dirichlet(0.5, lambda t: math.cos(2.0 * t)),
    "neumann": Neumann(0.0, heater),
    "periodic": Periodic(),
}


def boundary(kind: str, grid: Grid1D = GRID, **kwargs) -> BoundaryCondition:
    """The test's ``kind`` of condition on ``grid`` (the last axis)."""
    return BoundaryCondition(CONDITIONS[kind], grid, **kwargs)


def through(output, *conditions: BoundaryCondition, time=None):
    """``output`` (tensor, Gaussian or Ensemble) constrained through the door, as it stands."""
    return constrain(nn.Identity(), *conditions)(output, time=time)


def fno(seed: int = 0, hidden: int = 16, layers: int = 3, **kwargs) -> FNO:
    torch.manual_seed(seed)
    return FNO(
        n_modes=(12,),
        in_channels=1,
        out_channels=1,
        hidden_channels=hidden,
        n_layers=layers,
        **kwargs,
    )


def assert_meets(u: torch.Tensor, kind: str, t: float, grid: Grid1D = GRID) -> None:
    """Independent check of the condition at both ends of ``u (..., n)``, in float64."""
    u = u.detach().double()
    if kind == "dirichlet":
        torch.testing.assert_close(u[..., 0], torch.full_like(u[..., 0], 0.5), atol=TOL, rtol=0)
        right = torch.full_like(u[..., -1], math.cos(2.0 * t))
        torch.testing.assert_close(u[..., -1], right, atol=TOL, rtol=0)
    elif kind == "neumann":
        left, right = one_sided_flux(u, grid.dx)
        assert left.abs().max() < TOL
        assert (right - heater(t)).abs().max() < TOL
    else:
        assert (u[..., 0] - u[..., -1]).abs().max() < TOL


# ------------------------------------------------------------------------------------------
# The constraint kinds on tensors, Gaussians and ensembles


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_tensor_meets_condition_and_keeps_interior(kind):
    # values of order 1: a float32 end value carries a rounding error of ~6e-8 |u|, which the
    # stencil multiplies by 3/(2 dx) ≈ 96
    u = torch.rand(4, 2, GRID.n)
    out = through(u, boundary(kind), time=T_EVAL)
    assert out.shape == u.shape and out.dtype == u.dtype
    assert_meets(out, kind, T_EVAL)
    assert torch.equal(out[..., 1:-1], u[..., 1:-1])
    if kind == "periodic":
        torch.testing.assert_close(out[..., 0], 0.5 * (u[..., 0] + u[..., -1]))


def test_values_per_sample_and_time_argument():
    values = torch.tensor([1.0, -2.0, 3.0])
    condition = BoundaryCondition(Dirichlet(values, lambda t: t * values), GRID, time=2.0)
    u = torch.randn(3, 1, GRID.n)
    out = through(u, condition)  # the condition's own time
    torch.testing.assert_close(out[:, 0, 0], values)
    torch.testing.assert_close(out[:, 0, -1], 2.0 * values)
    later = through(u, condition, time=0.5)  # the call's time wins
    torch.testing.assert_close(later[:, 0, 0], values)
    torch.testing.assert_close(later[:, 0, -1], 0.5 * values)


def dense_map(kind: str, n: int, dx: float) -> torch.Tensor:
    """The linear part ``A`` of the boundary map as an explicit ``n × n`` matrix."""
    A = torch.eye(n, dtype=torch.float64)
    A[0] = A[-1] = 0.0
    if kind == "neumann":
        A[0, 1], A[0, 2] = 4.0 / 3.0, -1.0 / 3.0
        A[-1, -2], A[-1, -3] = 4.0 / 3.0, -1.0 / 3.0
    elif kind == "periodic":
        A[0, 0] = A[0, -1] = A[-1, 0] = A[-1, -1] = 0.5
    return A


@pytest.mark.parametrize("kind", list(CONDITIONS))
@pytest.mark.parametrize("diagonal", [True, False])
def test_gaussian_mean_and_covariance(kind, diagonal):
    n = 9
    grid = Grid1D(n)
    gen = torch.Generator().manual_seed(1)
    mean = torch.randn(2, n, generator=gen, dtype=torch.float64)
    root = torch.randn(2, n, n, generator=gen, dtype=torch.float64)
    cov = torch.rand(2, n, generator=gen, dtype=torch.float64) if diagonal else root @ root.mT
    out = through(Gaussian(mean, cov), boundary(kind, grid, time=T_EVAL))
    assert_meets(out.mean, kind, T_EVAL, grid)
    A = dense_map(kind, n, grid.dx)
    dense = torch.diag_embed(cov) if diagonal else cov
    torch.testing.assert_close(out.dense_cov(), A @ dense @ A.T)
    if kind == "dirichlet":
        assert (out.variance()[..., [0, -1]] == 0).all()


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_ensemble_members_each_meet_condition(kind):
    members = torch.rand(5, 3, 1, GRID.n)
    out = through(Ensemble(members), boundary(kind, time=T_EVAL))
    assert out.samples.shape == members.shape
    assert_meets(out.samples, kind, T_EVAL)


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_ensemble_members_of_one_field_meet_it_as_a_field_does(kind):
    """Members ``(m, n)`` without a batch axis, as a tensor ``(n,)`` is taken: each member is
    what the condition makes of it alone."""
    members = torch.rand(5, GRID.n, dtype=torch.float64)
    condition = boundary(kind, time=T_EVAL)
    out = through(Ensemble(members), condition)
    assert out.samples.shape == members.shape
    alone = torch.stack([through(member, condition) for member in members])
    torch.testing.assert_close(out.samples, alone, rtol=0, atol=0)
    assert_meets(out.samples, kind, T_EVAL)


def test_ensemble_per_sample_values_follow_the_batch_axis():
    values = torch.tensor([1.0, 2.0, 3.0])
    out = through(
        Ensemble(torch.randn(4, 3, GRID.n)), BoundaryCondition(Dirichlet(values, 0.0), GRID)
    )
    torch.testing.assert_close(out.samples[..., 0], values.expand(4, 3))


# ------------------------------------------------------------------------------------------
# BOON on untrained models


@pytest.mark.parametrize("kind", list(CONDITIONS))
@pytest.mark.parametrize("t", [0.0, T_EVAL])
def test_untrained_boon_meets_condition(kind, t):
    model = constrain(fno(), boundary(kind))
    assert model.kernel
    out = model(torch.randn(6, 1, GRID.n), time=t)
    assert out.dtype == torch.float32
    assert_meets(out, kind, t)


def test_constrain_with_boundary_condition():
    condition = boundary("neumann", time=T_EVAL)
    out = constrain(fno(), condition)(torch.randn(3, 1, GRID.n))
    assert_meets(out, "neumann", T_EVAL)


def test_kernel_correction_changes_interior_and_output_only_does_not():
    x = torch.randn(4, 1, GRID.n)
    base = fno()
    plain = base(x)
    corrected = constrain(base, boundary("dirichlet"))(x, time=T_EVAL)
    output_only = constrain(base, boundary("dirichlet"), kernel=False)(x, time=T_EVAL)
    assert torch.equal(output_only[..., 1:-1], plain[..., 1:-1])
    assert (corrected[..., 1:-1] - plain[..., 1:-1]).abs().max() > 1e-4
    torch.testing.assert_close(base(x), plain)  # hooks are gone after the wrapper's forward


# ------------------------------------------------------------------------------------------
# The corrected layer, probed


def jacobian(fn, channels: int, n: int) -> torch.Tensor:
    """``J[c_in, j, c_out, i]``: the response of ``fn`` (minus its response to 0) to unit spikes."""
    spikes = torch.eye(channels * n).reshape(-1, channels, n)
    zero = fn(torch.zeros(1, channels, n))
    return (fn(spikes) - zero).reshape(channels, n, channels, n)


@pytest.mark.parametrize("kind", ["dirichlet", "neumann"])
def test_probed_layer_decouples_first_and_last_rows(kind):
    channels, n = 6, 17
    model = fno(hidden=channels)  # float32: the spectral weights are complex64
    blocks = model.fno_blocks
    bc = Dirichlet() if kind == "dirichlet" else Neumann()
    grid = Grid1D(n)  # dx = 1 / (n - 1)
    layer = CorrectedLayer(blocks.convs[1], blocks.fno_skips[1], [BoundaryCondition(bc, grid)])
    like = torch.zeros(1, channels, n)
    layer.probe(like)
    K = jacobian(layer.plain, channels, n)
    corrected = jacobian(layer.linear, channels, n)
    # corner entries of output channel c for a spike in all input channels
    k00, k0n = K[:, 0, :, 0].sum(0), K[:, -1, :, 0].sum(0)
    kn0, knn = K[:, 0, :, -1].sum(0), K[:, -1, :, -1].sum(0)
    for c in range(channels):
        first = corrected[:, :, c, 0].clone()
        last = corrected[:, :, c, -1].clone()
        pivot = k00[c] - k0n[c] * kn0[c] / knn[c]
        torch.testing.assert_close(first[c, 0], pivot, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(last[c, -1], knn[c], rtol=1e-4, atol=1e-6)
        first[c, 0] = last[c, -1] = 0.0
        scale = K.abs().max()
        assert first.abs().max() < 1e-5 * scale and last.abs().max() < 1e-5 * scale
    # the correction reaches the interior only through the two probe columns
    change = (corrected - K)[..., 1:-1].reshape(channels * n, channels, n - 2)
    for c in range(channels):
        columns = torch.stack([K[:, 0, c, 1:-1].sum(0), K[:, -1, c, 1:-1].sum(0)], 1)
        coefficients = torch.linalg.lstsq(columns, change[:, c].T).solution
        torch.testing.assert_close(columns @ coefficients, change[:, c].T, rtol=0, atol=1e-5)
    # with values set, every channel's end nodes meet the condition whatever the input
    x = torch.randn(3, channels, n)
    left, right = (
        torch.full((3, 1), 0.0, dtype=torch.float64),
        torch.full((3, 1), 2.0, dtype=torch.float64),
    )
    y = layer(x, left, right)
    if kind == "dirichlet":
        assert (y[..., 0] == 0).all() and (y[..., -1] == 2).all()
    else:
        flux_left, flux_right = one_sided_flux(y.double(), grid.dx)
        tol = TOL * max(1.0, y.abs().max().item())  # hidden values are not of order 1
        assert flux_left.abs().max() < tol and (flux_right - 2.0).abs().max() < tol


# ------------------------------------------------------------------------------------------
# Gradients and training


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_gradients_reach_every_parameter(kind):
    model = constrain(fno(), boundary(kind)).train()
    assert model.training and model.model.training
    out = model(torch.randn(4, 1, GRID.n), time=T_EVAL)
    (out**2).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def heat_data(kind: str, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``u(x, 0) → u(x, T_EVAL)`` pairs of the heat equation with the test's condition."""
    gen = torch.Generator().manual_seed(seed)
    x = GRID.coordinates()
    j = torch.arange(1, 6, dtype=torch.float64)
    a = torch.randn(samples, 5, generator=gen, dtype=torch.float64) / j**2
    basis = (
        torch.cos(math.pi * j[:, None] * x)
        if kind == "neumann"
        else torch.sin(math.pi * j[:, None] * x)
    )
    u0 = a @ basis + (0.5 + 0.5 * x if kind == "dirichlet" else 0.0)
    u = solve_heat(u0, GRID, 0.05, [0.0, T_EVAL], CONDITIONS[kind])
    return u[:, :1].float(), u[:, 1:].float()


@pytest.mark.parametrize("kind", ["dirichlet", "neumann"])
def test_trained_boon_meets_condition(kind):
    assert heater(T_EVAL) > 4.0  # a far from zero flux on the right
    inputs, targets = heat_data(kind, 24, seed=2)
    model = constrain(fno(hidden=16, layers=2), boundary(kind))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss = ((model(inputs, time=T_EVAL) - targets) ** 2).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    test_inputs, _ = heat_data(kind, 8, seed=3)
    with torch.no_grad():
        assert_meets(model(test_inputs, time=T_EVAL), kind, T_EVAL)
        assert_meets(model(torch.randn(4, 1, GRID.n), time=T_EVAL), kind, T_EVAL)


# ------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "bc, grid, match",
    [
        (Neumann(0.0, 1.0), Grid1D(3), "at least 4 nodes"),
        (Neumann(0.0, 1.0), Grid1D(16, periodic=True), "non-periodic"),
        (Dirichlet(), Grid1D(16, periodic=True), "non-periodic"),
        (Dirichlet(), Grid1D(16, kind="cell"), "node grid"),
    ],
)
def test_bad_grid(bc, grid, match):
    with pytest.raises(ConstraintError, match=match):
        BoundaryCondition(bc, grid)


def test_bad_values_and_outputs():
    with pytest.raises(TypeError, match="Dirichlet, Neumann or Periodic"):
        BoundaryCondition("dirichlet", GRID)
    wrong = BoundaryCondition(Dirichlet(torch.ones(3), 0.0), GRID)
    with pytest.raises(ValueError, match=r"Dirichlet.left .*\(4,\)"):
        through(torch.randn(4, 1, GRID.n), wrong)
    with pytest.raises(ConstraintError, match="65"):
        through(torch.randn(4, 1, 33), BoundaryCondition(Dirichlet(), GRID))
    with pytest.raises(ConstraintError, match="functions of time"):
        through(torch.randn(4, 1, GRID.n), boundary("neumann"))
    with pytest.raises(ConstraintError, match="functions of time"):
        constrain(fno(), boundary("neumann"))(torch.randn(4, 1, GRID.n))
    with pytest.raises(ValueError, match="x must be"):
        constrain(fno(), BoundaryCondition(Dirichlet(), GRID))(torch.randn(4, 1, 33))
    with pytest.raises(
        ValueError, match=r"x must be a tensor \(batch, channel, 65\), got \(4, 1, 2, 65\)"
    ):
        constrain(fno(), BoundaryCondition(Dirichlet(), GRID))(torch.randn(4, 1, 2, GRID.n))
    with pytest.raises(ConstraintError, match="NaN or inf"):
        through(torch.full((4, 1, GRID.n), math.nan), BoundaryCondition(Dirichlet(), GRID))


class Smoother(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.avg_pool1d(x, 3, 1, 1)


def test_model_that_is_not_an_fno_falls_back_or_is_refused():
    x = torch.randn(2, 1, GRID.n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model without kernel layers: output seam, silently
        model = constrain(Smoother(), boundary("neumann"))
        assert not constrain(Smoother(), BoundaryCondition(Dirichlet(), GRID), kernel=False).kernel
        assert not constrain(fno(), BoundaryCondition(Dirichlet(), GRID), kernel=False).kernel
    assert not model.kernel and model.correction is None
    assert_meets(model(x, time=T_EVAL), "neumann", T_EVAL)
    with pytest.raises(
        ConstraintError,
        match=r"Smoother cannot take BoundaryCondition at the operator seam: no kernel",
    ):
        constrain(Smoother(), boundary("neumann"), kernel=True)
    padded = fno(domain_padding=0.25)
    with pytest.warns(UserWarning, match=r"cannot take the kernel correction \(.*domain padding"):
        model = constrain(padded, BoundaryCondition(Dirichlet(), GRID))
    assert not model.kernel
    out = model(x)  # the output still meets the condition
    assert (out[..., 0] == 0).all() and (out[..., -1] == 0).all()
    with pytest.raises(ConstraintError, match="operator seam: the FNO uses domain padding"):
        constrain(padded, BoundaryCondition(Dirichlet(), GRID), kernel=True)
    with pytest.raises(ValueError, match="kernel must be"):
        constrain(fno(), BoundaryCondition(Dirichlet(), GRID), kernel="yes")


@pytest.mark.parametrize("change", ["fill_", "data", "numpy"])
def test_a_tensor_value_changed_in_place_reaches_the_kernel_correction(change):
    """A tensor value changed in place — by an in-place op, through ``.data`` (no version bump)
    or through a numpy array sharing its memory — gives walls at the new value and the output
    of a model wrapped with it from the start."""
    array = np.ones(2, dtype=np.float32)
    left = torch.from_numpy(array) if change == "numpy" else torch.tensor([1.0, 1.0])
    wrapped = constrain(fno(hidden=4, layers=2), BoundaryCondition(Dirichlet(left, 0.0), GRID))
    fresh = constrain(fno(hidden=4, layers=2), BoundaryCondition(Dirichlet(5.0, 0.0), GRID))
    assert wrapped.kernel
    x = torch.randn(2, 1, GRID.n)
    with torch.no_grad():
        assert (wrapped(x)[..., 0] == 1.0).all()
        if change == "fill_":
            left.fill_(5.0)
        elif change == "data":
            left.data.fill_(5.0)
        else:
            array[:] = 5.0
        after = wrapped(x)
        torch.testing.assert_close(after, fresh(x), rtol=0, atol=1e-6)
    assert (after[..., 0] == 5.0).all()


def test_the_operator_seam_takes_the_input_by_keyword():
    wrapped = constrain(fno(hidden=4, layers=2), BoundaryCondition(Dirichlet(1.0, 0.0), GRID))
    x = torch.randn(2, 1, GRID.n)
    with torch.no_grad():
        assert torch.equal(wrapped(x=x), wrapped(x))
        with pytest.raises(ConstraintError, match=r"pass it positionally \(model\(x\)\) or as x="):
            wrapped(output_shape=None)


class _DenseAffine(torch.nn.Module):
    """``K x = A x + b`` along the last axis, one channel: a layer whose response to zero (``b``)
    differs from wall to wall."""

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        eye = torch.eye(n, dtype=torch.float64)
        self.A = torch.nn.Parameter(torch.randn(n, n, generator=gen, dtype=torch.float64) + 3 * eye)
        self.b = torch.nn.Parameter(torch.linspace(-1.0, 2.0, n, dtype=torch.float64))

    def forward(self, x):
        return x @ self.A.T + self.b


def test_boon_elimination_decouples_the_walls_of_an_affine_layer_with_varying_bias():
    """For a dense affine layer, the corrected wall rows are (K̃x)₀ = K̃₀₀ x₀ + b₀ with
    K̃₀₀ = K₀₀ − K₀ₙKₙ₀/Kₙₙ and (K̃x)_N = Kₙₙ x_N + b_N, for every x."""
    n = 9
    conv = _DenseAffine(n)
    layer = CorrectedLayer(conv, None, [BoundaryCondition(Dirichlet(), Grid1D(n))])
    x = torch.randn(5, 1, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer.probe(x)
        y = layer.linear(x)
        A, b = conv.A, conv.b
        pivot = A[0, 0] - A[0, -1] * A[-1, 0] / A[-1, -1]
        torch.testing.assert_close(y[..., 0], pivot * x[..., 0] + b[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            y[..., -1], A[-1, -1] * x[..., -1] + b[-1], rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_a_neumann_flux_of_a_low_precision_output_is_met_to_its_walls_rounding(dtype):
    grid = Grid1D(129, 0.0, 1.0)
    u = (torch.rand(4, 1, 129, generator=torch.Generator().manual_seed(0)) + 1).to(dtype)
    out = BoundaryCondition(Neumann(0.0, 5.0), grid)(u)
    assert out.dtype == dtype
    left, right = one_sided_flux(out.double(), grid.dx)
    eps = torch.finfo(dtype).eps
    walls = out.double()[..., [0, -1]].abs()
    bound = 3 * eps * walls / (4 * grid.dx)  # 3/(2dx) · ½ ulp(u_w), the docstring's
    assert (left.abs() <= bound[..., 0]).all()
    assert ((right - 5.0).abs() <= bound[..., 1]).all()
