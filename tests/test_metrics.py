"""physml.metrics against independent computations: numpy/scipy formulas, quadrature, loops."""

import math
import statistics
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from test_constraints import through
from torch import nn

from pdes.boundary import Dirichlet, Neumann
from pdes.gpme import diffusion_exact, pme_exact, pme_total_mass, stefan_exact, stefan_z1
from pdes.grid import Grid1D, Grid2D
from pdes.heat import solve_heat
from physml import constrain, metrics
from physml.constraints import BoundaryCondition, LinearConstraint, mass_conservation
from physml.errors import ZeroNormError
from physml.outputs import Ensemble, Gaussian, LowRankCovariance

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def random_spd(n, seed=0):
    a = rand(n, n, seed=seed)
    return a @ a.T + 0.1 * torch.eye(n, dtype=F64)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "shape, dims",
    [((7,), None), ((7,), 0), ((3, 5), None), ((3, 5), 1), ((3, 5), (0, 1)), ((2, 3, 4), (0, -1))],
)
def test_mse_mae_match_numpy(shape, dims):
    pred, target = rand(*shape, seed=1), rand(*shape, seed=2)
    p, t = pred.numpy(), target.numpy()
    np.testing.assert_allclose(metrics.mse(pred, target, dims), ((p - t) ** 2).mean(axis=dims))
    np.testing.assert_allclose(metrics.mae(pred, target, dims), np.abs(p - t).mean(axis=dims))


def test_float32_inputs_are_scored_in_float64():
    pred = torch.tensor([1.0, 2.0], dtype=torch.float32)
    result = metrics.mse(pred, np.array([1.5, 2.0]))
    assert result.dtype == F64
    assert result.item() == pytest.approx(0.125, abs=0)


@pytest.mark.parametrize("frame_ndim", [1, 2])
def test_frame_errors_sum_each_frame_then_average(frame_ndim):
    pred, target = rand(2, 3, 4, 5, seed=3), rand(2, 3, 4, 5, seed=4)
    diff = (pred - target).numpy()
    axes = tuple(range(4 - frame_ndim, 4))
    np.testing.assert_allclose(
        metrics.frame_mse(pred, target, frame_ndim), (diff**2).sum(axis=axes).mean()
    )
    np.testing.assert_allclose(
        metrics.frame_mae(pred, target, frame_ndim), np.abs(diff).sum(axis=axes).mean()
    )


@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 5)])
def test_relative_l2_per_sample_then_mean(shape):
    pred, target = rand(*shape, seed=5), rand(*shape, seed=6)
    p, t = pred.numpy(), target.numpy()
    expected = [np.linalg.norm(p[i] - t[i]) / np.linalg.norm(t[i]) for i in range(shape[0])]
    per_sample = metrics.relative_l2(pred, target, reduction="none")
    assert per_sample.shape == (shape[0],)
    np.testing.assert_allclose(per_sample, expected)
    np.testing.assert_allclose(metrics.relative_l2(pred, target), np.mean(expected))


def test_relative_l2_errors():
    with pytest.raises(ZeroNormError, match=r"target samples \[1\] have zero L2 norm"):
        metrics.relative_l2(torch.ones(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
    assert issubclass(ZeroNormError, ValueError)  # callers catching ValueError still do
    with pytest.raises(ValueError, match="batch"):
        metrics.relative_l2(torch.ones(3), torch.ones(3))


def test_relative_l2_of_a_target_with_norm_below_one_is_not_floored():
    target = torch.tensor([[0.3, 0.4], [3.0, 4.0]], dtype=F64)  # norms 0.5 and 5
    pred = torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=F64)  # errors 0.5 and 4
    errors = metrics.relative_l2(pred, target, reduction="none")
    assert errors.tolist() == pytest.approx([1.0, 0.8], rel=1e-15)


def test_boundary_error_1d_and_2d():
    pred, target = rand(3, 8, seed=7), rand(3, 8, seed=8)
    diff = (pred - target).numpy()
    edges = diff[:, [0, -1]]
    grid = Grid1D(8)
    np.testing.assert_allclose(
        metrics.boundary_error(pred, target, grid), np.sqrt((edges**2).mean())
    )
    np.testing.assert_allclose(
        metrics.boundary_error(pred, target, grid, reduction="none"),
        np.sqrt((edges**2).mean(axis=1)),
    )
    pred2, target2 = rand(2, 5, 6, seed=9), rand(2, 5, 6, seed=10)
    d2 = (pred2 - target2).numpy()
    ring = np.ones((5, 6), bool)
    ring[1:-1, 1:-1] = False
    grid2 = Grid2D(Grid1D(5), Grid1D(6))
    np.testing.assert_allclose(
        metrics.boundary_error(pred2, target2, grid2), np.sqrt((d2[:, ring] ** 2).mean())
    )
    with pytest.raises(ValueError, match="no boundary"):
        metrics.boundary_error(pred, target, Grid1D(8, periodic=True))
    with pytest.raises(ValueError, match="grid's shape"):
        metrics.boundary_error(pred, target, Grid1D(9))
    with pytest.raises(TypeError, match="grid"):
        metrics.boundary_error(pred, target, "grid")


def test_flux_error_of_a_heat_neumann_solution_is_round_off():
    grid = Grid1D(33)
    x = grid.coordinates()
    u0 = torch.stack([torch.cos(math.pi * x), x.square()])
    u = solve_heat(u0, grid, 0.1, [0.0, 0.2, 0.5], Neumann(0.5, -1.3))
    assert metrics.flux_error(u, grid, 0.5, -1.3).item() < 1e-11
    assert metrics.flux_error(u, grid, 0.5, -1.3, reduction="none").shape == (2, 3)


def test_flux_error_of_quadratics_is_the_error_of_their_exact_slopes():
    """``u = a x² + b x + c`` on [0, 1]: ``u'(0) = b``, ``u'(1) = 2a + b`` (the stencil is exact
    for quadratics); the constant ``c`` changes nothing."""
    grid = Grid1D(9)
    x = grid.coordinates()
    a, b = torch.tensor([[1.0], [-2.0]], dtype=F64), torch.tensor([[0.5], [3.0]], dtype=F64)
    u = a * x.square() + b * x
    left, right = torch.tensor([0.0, 1.0], dtype=F64), 2.0
    # slopes (0.5, 2.5) against (0, 2) and (3, -1) against (1, 2)
    per_sample = [0.5, math.sqrt((2**2 + 3**2) / 2)]
    for shift in (0.0, 7.0):
        scores = metrics.flux_error(u + shift, grid, left, right, reduction="none")
        assert scores.tolist() == pytest.approx(per_sample, rel=1e-12)
        overall = metrics.flux_error(u + shift, grid, left, right)
        assert overall.item() == pytest.approx(math.sqrt(sum(e * e for e in per_sample) / 2))
    for slope, flux in ((2.0, 0.5), (-1.0, 3.0), (0.25, 0.25)):
        error = metrics.flux_error(slope * x, grid, flux, flux)
        assert error.item() == pytest.approx(abs(slope - flux), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda u: metrics.flux_error(u, "grid", 0.0, 0.0), TypeError, "grid must be"),
        (lambda u: metrics.flux_error(u, Grid1D(8, periodic=True), 0, 0), ValueError, "periodic"),
        (lambda u: metrics.flux_error(u, Grid1D(8, kind="cell"), 0, 0), ValueError, "node"),
        (lambda u: metrics.flux_error(u, Grid1D(9), 0.0, 0.0), ValueError, "grid's 9 nodes"),
        (lambda u: metrics.flux_error(u[:0], Grid1D(8), 0.0, 0.0), ValueError, "pred is empty"),
        (lambda u: metrics.flux_error(u, Grid1D(8), torch.zeros(2), 0), ValueError, "left must"),
        (lambda u: metrics.flux_error(u, Grid1D(8), 0, [[0.0]] * 3), ValueError, "right must"),
        (lambda u: metrics.flux_error(u, Grid1D(8), 0, "x"), TypeError, "right must"),
        (lambda u: metrics.flux_error(u, Grid1D(8), 0, 0, "sum"), ValueError, "reduction"),
    ],
)
def test_flux_error_rejects_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(rand(3, 8))


# ------------------------------------------------------------------------- conservation


def test_conservation_error_of_quadratic_is_the_trapezoid_error():
    # ∫₀¹ c x² dx = c/3 and the trapezoid rule overestimates it by exactly c h²/6
    grid = Grid1D(21)
    x = grid.coordinates()
    c = torch.tensor([[1.0, 2.0, -3.0], [0.5, 0.0, 4.0]], dtype=F64)  # (sample, time)
    u = c[..., None] * x**2
    ce = metrics.conservation_error(u, grid, c / 3)
    assert ce.shape == (2, 3)
    torch.testing.assert_close(ce, c * grid.dx**2 / 6, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        ce, integrate.trapezoid(u.numpy(), x.numpy(), axis=-1) - c.numpy() / 3, atol=1e-14
    )
    absolute = metrics.conservation_error(u, grid, c / 3, absolute=True)
    torch.testing.assert_close(absolute, ce.abs())
    torch.testing.assert_close(
        metrics.abs_conservation_error(u, grid, c / 3, time_index=-1), ce[:, -1].abs()
    )
    torch.testing.assert_close(
        metrics.conservation_error(u, grid, c / 3, time_index=1, reduction="mean"), ce[:, 1].mean()
    )
    torch.testing.assert_close(
        metrics.conservation_error(u, grid, c / 3, reduction="mean"), ce.mean(0)
    )


def test_conservation_error_of_exact_solutions():
    grid = Grid1D(64, 0.0, 2 * math.pi, periodic=True)
    u = diffusion_exact(grid.coordinates(), torch.linspace(0, 1, 5, dtype=F64), [1.0, 5.0])
    assert metrics.conservation_error(u, grid, 0.0).abs().max() < 1e-13
    # the PME front (t - x)_+^(1/m) is not smooth at the front: first-order mass error, still → 0
    t = torch.linspace(0.1, 0.9, 5, dtype=F64)
    errors = []
    for n in (101, 401):
        grid = Grid1D(n)
        u = pme_exact(grid.coordinates(), t, [1.0, 3.0])
        errors.append(metrics.abs_conservation_error(u, grid, pme_total_mass(t, [1.0, 3.0])).max())
    assert errors[1] < errors[0] / 3 and errors[1] < 1e-3


def test_conservation_error_accepts_outputs_and_2d_grids():
    grid = Grid1D(11)
    mean = rand(2, 3, 11, seed=11)
    expected = metrics.conservation_error(mean, grid, 1.0)
    gaussian = Gaussian(mean, torch.ones_like(mean))
    torch.testing.assert_close(metrics.conservation_error(gaussian, grid, 1.0), expected)
    members = torch.stack([mean - 1, mean + 1])
    torch.testing.assert_close(metrics.conservation_error(Ensemble(members), grid, 1.0), expected)
    grid2 = Grid2D(Grid1D(5, 0, 2), Grid1D(7, 0, 3))
    u2 = torch.full((4, 5, 7), 2.0, dtype=F64)  # area 6, mass 12
    torch.testing.assert_close(
        metrics.conservation_error(u2, grid2, 10.0), torch.full((4,), 2.0, dtype=F64)
    )


def test_conservation_error_bad_input():
    grid = Grid1D(11)
    u = rand(2, 3, 11, seed=12)
    with pytest.raises(ValueError, match="match the grid"):
        metrics.conservation_error(rand(2, 3, 10), grid, 0.0)
    with pytest.raises(ValueError, match="match the grid"):
        metrics.conservation_error(rand(11), grid, 0.0)
    with pytest.raises(ValueError, match="true_mass must broadcast"):
        metrics.conservation_error(u, grid, torch.zeros(4))
    with pytest.raises(ValueError, match="true_mass must broadcast"):
        metrics.conservation_error(u, grid, torch.zeros(5, 2, 3))
    with pytest.raises(ValueError, match="time_index"):
        metrics.conservation_error(u, grid, 0.0, time_index=3)
    with pytest.raises(TypeError, match="time_index"):
        metrics.conservation_error(u, grid, 0.0, time_index=0.5)
    with pytest.raises(TypeError, match="grid"):
        metrics.conservation_error(u, np.linspace(0, 1, 11), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.conservation_error(u, grid, float("nan"))
    with pytest.raises(ValueError, match="reduction"):
        metrics.conservation_error(u, grid, 0.0, reduction="sum")


def test_conservation_error_first_time_by_negative_index_and_mean_over_two_leading_axes():
    """Constant fields ``c`` on [0, 1] have mass ``c`` (the trapezoid rule is exact), so CE = c.
    ``time_index = −T`` is the first time, as in Python indexing; ``'mean'`` over two leading
    axes keeps ``(time,)``: the mean of k, 3 + k, 6 + k, 9 + k is 4.5 + k."""
    grid = Grid1D(5)
    c = torch.arange(12, dtype=F64).reshape(2, 2, 3)  # (test, function, time)
    u = c[..., None].expand(2, 2, 3, 5)
    first = metrics.conservation_error(u, grid, 0.0, time_index=-3)
    torch.testing.assert_close(first, torch.tensor([[0.0, 3.0], [6.0, 9.0]], dtype=F64))
    mean = metrics.conservation_error(u, grid, 0.0, reduction="mean")
    torch.testing.assert_close(mean, torch.tensor([4.5, 5.5, 6.5], dtype=F64))
    torch.testing.assert_close(
        metrics.conservation_error(u, grid, 0.0, time_index=-3, reduction="mean"),
        torch.tensor(4.5, dtype=F64),
    )
    with pytest.raises(ValueError, match=r"time_index must be in \[-3, 3\) on the time axis"):
        metrics.conservation_error(u, grid, 0.0, time_index=-4)


def test_conservation_error_of_a_forecast_reads_time_on_its_t_axis():
    """``layout='btchw'``: ``u = a + p x + q y`` on [0, 1] × [0, 2] has mass ``2a + p + 2q``
    (the trapezoid rule is exact on linear fields); the CE is ``(b, t, c)``, ``time_index`` picks a
    frame, ``'mean'`` averages over the batch alone."""
    B, T, C, H, W = 2, 10, 3, 8, 8
    grid = Grid2D(Grid1D(H, 0.0, 1.0), Grid1D(W, 0.0, 2.0))
    a, p, q = (rand(B, T, C, 1, 1, seed=s) for s in (1, 2, 3))
    x = torch.linspace(0.0, 1.0, H, dtype=F64)[:, None]
    y = torch.linspace(0.0, 2.0, W, dtype=F64)[None, :]
    u = a + p * x + q * y
    true_mass = rand(B, T, C, seed=4)
    expected = (2 * a + p + 2 * q)[..., 0, 0] - true_mass
    ce = metrics.conservation_error(u, grid, true_mass, layout="btchw")
    torch.testing.assert_close(ce, expected, rtol=0, atol=1e-12)
    frame = metrics.conservation_error(u, grid, true_mass, time_index=5, layout="btchw")
    torch.testing.assert_close(frame, expected[:, 5], rtol=0, atol=1e-12)
    mean = metrics.conservation_error(u, grid, true_mass, reduction="mean", layout="btchw")
    torch.testing.assert_close(mean, (expected[0] + expected[1]) / 2, rtol=0, atol=1e-12)
    worst = metrics.abs_conservation_error(
        u, grid, true_mass, time_index=-1, reduction="mean", layout="btchw"
    )
    torch.testing.assert_close(worst, expected[:, 9].abs().mean(0), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[-10, 10\) on the time axis \(axis 1 of u"):
        metrics.conservation_error(u, grid, true_mass, time_index=10, layout="btchw")
    with pytest.raises(ValueError, match=r"\[-3, 3\) on the time axis \(axis 2 of u"):
        metrics.conservation_error(u, grid, true_mass, time_index=5)
    with pytest.raises(ValueError, match=r"u must have shape \(b, t, c, 8, 8\) to match layout"):
        metrics.conservation_error(u[0], grid, true_mass, layout="btchw")
    with pytest.raises(ValueError, match=r"layout must be one of \('btchw',\)"):
        metrics.conservation_error(u, grid, true_mass, layout="bchw")
    line = a[..., 0] + p[..., 0] * x.T  # (b, t, c, x) on [0, 1]: mass a + p / 2
    ce = metrics.conservation_error(line, Grid1D(H), true_mass, time_index=2, layout="btcx")
    torch.testing.assert_close(ce, (a + p / 2)[:, 2, :, 0, 0] - true_mass[:, 2])


# ----------------------------------------------------------------- probabilistic scores


def _low_rank_gaussian(seed=0, n=6, rank=2, batch=3):
    mean = rand(batch, n, seed=seed)
    factor = rand(batch, n, rank, seed=seed + 2)
    # diagonal entries >= ‖F‖² >= λ_max(FFᵀ): positive definite
    largest = factor.square().sum((-2, -1))[:, None]
    base = largest + 0.2 + rand(batch, n, seed=seed + 1).abs()
    return Gaussian(mean, LowRankCovariance(base, factor))


@pytest.mark.parametrize("kind", ["pair", "diagonal", "full", "low-rank"])
def test_log_likelihood_matches_scipy(kind):
    target = rand(3, 6, seed=20)
    if kind == "low-rank":
        prediction = _low_rank_gaussian(seed=21)
        mean, variance = prediction.mean, prediction.dense_cov().diagonal(dim1=-2, dim2=-1)
    else:
        mean, variance = rand(3, 6, seed=21), 0.2 + rand(3, 6, seed=22).abs()
        if kind == "pair":
            prediction = (mean, variance)
        elif kind == "diagonal":
            prediction = Gaussian(mean, variance)
        else:
            cov = torch.stack([random_spd(6, seed=s) for s in range(3)])
            cov = cov + torch.diag_embed(variance - cov.diagonal(dim1=-2, dim2=-1))
            prediction = Gaussian(mean, cov)
    expected = stats.norm.logpdf(target.numpy(), mean.numpy(), np.sqrt(variance.numpy()))
    np.testing.assert_allclose(
        metrics.gaussian_log_likelihood(prediction, target, reduction="none"), expected, rtol=1e-12
    )
    np.testing.assert_allclose(
        metrics.gaussian_log_likelihood(prediction, target), expected.mean(), rtol=1e-12
    )


def test_log_likelihood_floor_and_scalar_variance():
    mean, target = torch.zeros(4, dtype=F64), torch.tensor([0.0, 1e-6, 0.0, 2.0], dtype=F64)
    variance = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=F64)
    floor = metrics.VARIANCE_FLOOR
    expected = stats.norm.logpdf(target.numpy(), 0.0, np.sqrt(np.maximum(variance.numpy(), floor)))
    np.testing.assert_allclose(
        metrics.gaussian_log_likelihood((mean, variance), target, reduction="none"), expected
    )
    np.testing.assert_allclose(
        metrics.gaussian_log_likelihood((mean, 2.0), target, reduction="none"),
        stats.norm.logpdf(target.numpy(), 0.0, np.sqrt(2.0)),
    )
    np.testing.assert_allclose(
        metrics.gaussian_log_likelihood((mean, 0.0), target, reduction="none", min_variance=0.25),
        stats.norm.logpdf(target.numpy(), 0.0, 0.5),
    )


def test_log_likelihood_of_exactly_constrained_posterior_is_finite():
    # pinning u[0] exactly leaves zero variance there, up to round-off (may be slightly < 0)
    prior = Gaussian(rand(2, 5, seed=23), torch.full((2, 5), 0.5, dtype=F64))
    posterior = through(LinearConstraint(torch.eye(5, dtype=F64)[:1], torch.zeros(1)), prior)
    variance = posterior.variance()
    assert variance[:, 0].abs().max() < 1e-14
    ll = metrics.gaussian_log_likelihood(posterior, torch.zeros(2, 5), reduction="none")
    assert torch.isfinite(ll).all()


def test_round_off_negative_variances_count_as_zero():
    mean, target = torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    variance = torch.tensor([-1e-17, 1.0], dtype=F64)
    expected = stats.norm.logpdf([0.0, 0.0], 0.0, [math.sqrt(metrics.VARIANCE_FLOOR), 1.0])
    np.testing.assert_allclose(
        metrics.gaussian_log_likelihood((mean, variance), target, reduction="none"), expected
    )
    with pytest.raises(ValueError, match="negative variances"):
        metrics.gaussian_log_likelihood((mean, torch.tensor([-1e-6, 1.0], dtype=F64)), target)
    # float32 variances carry float32 round-off: -1e-6 (8 eps) is zero, -1e-3 is not
    float32 = metrics.gaussian_log_likelihood((mean, torch.tensor([-1e-6, 1.0])), target, "none")
    np.testing.assert_allclose(float32, expected)
    with pytest.raises(ValueError, match="negative variances"):
        metrics.gaussian_log_likelihood((mean, torch.tensor([-1e-3, 1.0])), target)


def test_log_likelihood_bad_input():
    mean, target = torch.zeros(3), torch.zeros(3)
    with pytest.raises(ValueError, match="negative variances"):
        metrics.gaussian_log_likelihood((mean, torch.tensor([1.0, -0.5, 1.0])), target)
    bad = Gaussian(mean, LowRankCovariance(torch.ones(3), torch.tensor([[2.0], [0.0], [0.0]])))
    with pytest.raises(ValueError, match="negative variances"):
        metrics.gaussian_log_likelihood(bad, target)
    with pytest.raises(ValueError, match="same shape"):
        metrics.gaussian_log_likelihood((mean, torch.ones(3)), torch.zeros(4))
    with pytest.raises(ValueError, match="broadcast"):
        metrics.gaussian_log_likelihood((mean, torch.ones(2)), target)
    with pytest.raises(ValueError, match="NaN"):
        metrics.gaussian_log_likelihood((mean, torch.ones(3)), torch.tensor([0.0, math.nan, 0]))
    with pytest.raises(TypeError, match="Gaussian"):
        metrics.gaussian_log_likelihood(mean, target)
    with pytest.raises(ValueError, match="min_variance"):
        metrics.gaussian_log_likelihood((mean, torch.ones(3)), target, min_variance=0.0)


def _crps_by_quadrature(mu, sigma, y):
    cdf = stats.norm(mu, sigma).cdf
    below = integrate.quad(lambda z: cdf(z) ** 2, -np.inf, y, epsabs=1e-12)[0]
    above = integrate.quad(lambda z: (1 - cdf(z)) ** 2, y, np.inf, epsabs=1e-12)[0]
    return below + above


def test_crps_gaussian_matches_quadrature():
    mu = np.array([0.0, 1.0, -2.0, 0.3, 5.0])
    sigma = np.array([1.0, 0.5, 2.0, 0.01, 3.0])
    y = np.array([0.0, 2.0, -1.0, 0.31, -4.0])
    expected = [_crps_by_quadrature(*args) for args in zip(mu, sigma, y, strict=True)]
    result = metrics.crps_gaussian(torch.tensor(mu), torch.tensor(sigma), torch.tensor(y), "none")
    np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(
        metrics.crps_gaussian(torch.tensor(mu), torch.tensor(sigma), torch.tensor(y)),
        np.mean(expected),
        rtol=1e-7,
    )


def test_crps_gaussian_zero_spread_and_broadcast_std():
    mean, target = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[0.5, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(
        metrics.crps_gaussian(mean, 0.0, target, "none"), (mean - target).abs().to(F64)
    )
    std = torch.tensor([1.0, 2.0])
    expected = [
        [_crps_by_quadrature(float(mean[i, j]), float(std[j]), float(target[i, j])) for j in (0, 1)]
        for i in (0, 1)
    ]
    np.testing.assert_allclose(metrics.crps_gaussian(mean, std, target, "none"), expected, 1e-7)


def test_crps_gaussian_bad_input():
    with pytest.raises(ValueError, match="std must be >= 0"):
        metrics.crps_gaussian(torch.zeros(2), torch.tensor([1.0, -1.0]), torch.zeros(2))
    with pytest.raises(ValueError, match="std must broadcast"):
        metrics.crps_gaussian(torch.zeros(2), torch.ones(3), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        metrics.crps_gaussian(torch.zeros(2), 1.0, torch.zeros(3))
    with pytest.raises(ValueError, match="std contains NaN"):
        metrics.crps_gaussian(torch.zeros(2), math.inf, torch.zeros(2))


def _crps_brute(samples, y, fair):
    m = len(samples)
    skill = np.mean([abs(s - y) for s in samples])
    spread = sum(abs(a - b) for a in samples for b in samples)
    return skill - 0.5 * spread / (m * (m - 1) if fair else m * m)


@pytest.mark.parametrize("fair", [False, True])
@pytest.mark.parametrize("shape", [(5,), (7, 3), (4, 2, 3)])
def test_crps_ensemble_matches_double_loop(fair, shape):
    samples, target = rand(*shape, seed=30), rand(*shape[1:], seed=31)
    s, t = samples.numpy().reshape(shape[0], -1), target.numpy().reshape(-1)
    expected = np.array([_crps_brute(s[:, j], t[j], fair) for j in range(s.shape[1])])
    result = metrics.crps_ensemble(samples, target, fair=fair, reduction="none")
    assert result.shape == shape[1:]
    np.testing.assert_allclose(result.reshape(-1), expected, rtol=1e-12, atol=1e-14)
    ensemble = Ensemble(samples) if samples.ndim > 1 else samples
    np.testing.assert_allclose(metrics.crps_ensemble(ensemble, target, fair), expected.mean())


def test_crps_ensemble_with_ties_one_member_and_large_ensemble():
    samples = torch.tensor([[1.0], [1.0], [3.0], [1.0]])
    target = torch.tensor([2.0])
    np.testing.assert_allclose(
        metrics.crps_ensemble(samples, target), _crps_brute([1.0, 1, 3, 1], 2.0, False)
    )
    one = torch.tensor([[0.5, -1.0]])
    torch.testing.assert_close(
        metrics.crps_ensemble(one, torch.zeros(2), reduction="none"),
        torch.tensor([0.5, 1.0], dtype=F64),
    )
    # a large ensemble drawn from N(μ, σ²) approaches the Gaussian closed form
    draws = 0.5 + 2.0 * rand(20000, 3, seed=32)
    y = torch.tensor([0.0, 1.0, 4.0], dtype=F64)
    torch.testing.assert_close(
        metrics.crps_ensemble(draws, y, fair=True, reduction="none"),
        metrics.crps_gaussian(torch.full((3,), 0.5), 2.0, y, "none"),
        rtol=0.02,
        atol=0.0,
    )


def test_crps_ensemble_bad_input():
    with pytest.raises(ValueError, match="empty ensemble"):
        metrics.crps_ensemble(torch.zeros(0, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 members"):
        metrics.crps_ensemble(torch.zeros(1, 3), torch.zeros(3), fair=True)
    with pytest.raises(ValueError, match="target must have shape"):
        metrics.crps_ensemble(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        metrics.crps_ensemble(torch.tensor([[0.0], [math.nan]]), torch.zeros(1))
    with pytest.raises(ValueError, match="scalar"):
        metrics.crps_ensemble(torch.tensor(1.0), torch.tensor(1.0))


# -------------------------------------------------------------------- shocks and samples


def test_shock_position_of_steps_with_known_fronts():
    x = torch.linspace(0, 1, 11, dtype=F64)
    fronts = torch.tensor([0.0, 0.3, 0.65, 1.0], dtype=F64)
    steps = (x[None, :] < fronts[:, None] - 1e-12).to(F64)  # 1 behind the front, 0 from it on
    torch.testing.assert_close(
        metrics.shock_position(steps, x), torch.tensor([0, 0.3, 0.7, 1.0], dtype=F64)
    )
    never = torch.ones(2, 3, 11, dtype=F64)
    assert torch.isinf(metrics.shock_position(never, x)).all()
    assert metrics.shock_position(never, x).shape == (2, 3)
    shifted = metrics.shock_position(steps + 0.5, x, threshold=0.5)
    torch.testing.assert_close(shifted, metrics.shock_position(steps, x))


def test_shock_position_interpolates_a_linear_ramp():
    x = torch.linspace(0, 1, 21, dtype=F64)
    fronts = torch.tensor([0.0, 0.123, 0.5, 0.777], dtype=F64)
    ramps = fronts[:, None] - x[None, :]  # crosses zero exactly at the front
    torch.testing.assert_close(metrics.shock_position(ramps, x, interpolate=True), fronts)
    grid_fronts = metrics.shock_position(ramps, x)
    torch.testing.assert_close(grid_fronts, torch.ceil(fronts * 20) / 20)


def test_shock_position_of_stefan_front():
    x = torch.linspace(0, 1, 201, dtype=F64)
    t = torch.tensor([0.01, 0.05, 0.1], dtype=F64)
    u = stefan_exact(x, t, 0.6)[0]
    front = 2 * stefan_z1(0.6) * t.sqrt()
    expected = torch.tensor([x[x > f][0] for f in front.tolist()], dtype=F64)
    torch.testing.assert_close(
        metrics.shock_position(Ensemble(torch.stack([u, u])), x)[0], expected
    )


def test_shock_position_bad_input():
    x = torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="match x"):
        metrics.shock_position(torch.zeros(3, 4), x)
    with pytest.raises(ValueError, match="strictly increasing"):
        metrics.shock_position(torch.zeros(3, 5), x.flip(0))
    with pytest.raises(ValueError, match="1-D"):
        metrics.shock_position(torch.zeros(3, 5), x[None])
    with pytest.raises(ValueError, match="NaN"):
        metrics.shock_position(torch.full((3, 5), math.nan), x)
    with pytest.raises(ValueError, match="threshold"):
        metrics.shock_position(torch.zeros(3, 5), x, threshold=math.nan)


def test_shock_position_rejects_repeated_x_and_interpolates_to_a_nonzero_threshold():
    x = torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="strictly increasing"):
        metrics.shock_position(torch.zeros(2, 4), x)
    # 2 + f − x crosses the level 2 exactly at x = f
    x = torch.linspace(0, 1, 11, dtype=F64)
    fronts = torch.tensor([0.05, 0.42, 0.9], dtype=F64)
    ramps = 2.0 + fronts[:, None] - x[None, :]
    torch.testing.assert_close(
        metrics.shock_position(ramps, x, threshold=2.0, interpolate=True), fronts
    )


def _sample_cov(draws):
    centred = draws - draws.mean(0)
    return torch.einsum("s...i,s...j->...ij", centred, centred) / (draws.shape[0] - 1)


@pytest.mark.parametrize("kind", ["diagonal", "full", "low-rank", "low-rank-full-base"])
def test_gaussian_samples_have_the_right_moments(kind):
    mean = rand(2, 4, seed=40)
    if kind == "diagonal":
        gaussian = Gaussian(mean, 0.5 + rand(2, 4, seed=41).abs())
    elif kind == "full":
        gaussian = Gaussian(mean, torch.stack([random_spd(4, 42), random_spd(4, 43)]))
    elif kind == "low-rank":
        gaussian = _low_rank_gaussian(seed=44, n=4, batch=2)
        mean = gaussian.mean
    else:
        factor = rand(2, 4, 2, seed=47)
        base = torch.stack([random_spd(4, 45), random_spd(4, 46)]) + factor @ factor.mT
        gaussian = Gaussian(mean, LowRankCovariance(base, factor))
    draws = metrics.gaussian_samples(gaussian, 40000, 0)
    assert draws.shape == (40000, 2, 4) and draws.dtype == F64
    cov = gaussian.dense_cov()
    scale = cov.diagonal(dim1=-2, dim2=-1).amax().sqrt()
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03 * scale, rtol=0)
    torch.testing.assert_close(_sample_cov(draws), cov, atol=0.04 * scale**2, rtol=0)
    again = metrics.gaussian_samples(gaussian, 3, torch.Generator().manual_seed(7))
    assert torch.equal(metrics.gaussian_samples(gaussian, 3, 7), again)


@pytest.mark.parametrize("diagonal_base", [True, False])
def test_low_rank_square_root_is_exact(diagonal_base):
    n = 6
    factor = 0.4 * rand(n, 3, seed=51)
    if diagonal_base:
        base = 1 + rand(n, seed=50).abs()
        base[0], factor[0] = 0.0, 0.0  # a pinned point: zero variance, no correlation
    else:
        base = random_spd(n, seed=50) + factor @ factor.T
    cov = LowRankCovariance(base, factor)
    root = metrics.low_rank_noise(cov, torch.eye(n, dtype=F64)).T  # columns: root @ e_i
    torch.testing.assert_close(root @ root.T, cov.dense(), rtol=0, atol=1e-12)


def test_samples_of_an_exactly_conserving_posterior_conserve_mass():
    grid = Grid1D(41)
    prior = Gaussian(rand(3, 5, 41, seed=52), 0.1 + rand(3, 5, 41, seed=53).abs())
    true_mass = rand(3, 5, seed=54)
    posterior = through(mass_conservation(grid, true_mass), prior)
    assert isinstance(posterior.cov, LowRankCovariance)
    draws = metrics.gaussian_samples(posterior, 200, 1)
    ce = metrics.conservation_error(draws, grid, true_mass)
    assert ce.abs().max() < 1e-12
    assert metrics.conservation_error(prior.mean, grid, true_mass).abs().min() > 1e-3
    # the same posterior as a dense (singular) matrix needs jitter: mass only approximately kept
    dense = metrics.gaussian_samples(Gaussian(posterior.mean, posterior.dense_cov()), 200, 1)
    assert metrics.conservation_error(dense, grid, true_mass).abs().max() < 1e-3


def test_samples_of_a_posterior_whose_base_needs_jitter_miss_the_mass_by_at_most_its_root():
    """A smooth (squared-exponential) prior factorises only with a jitter δ: the samples' mass
    then spreads by at most √δ ‖g‖, g the trapezoid weights (the docstring's bound)."""
    grid = Grid1D(41)
    x = grid.coordinates()
    prior = 1e-2 * torch.exp(-0.5 * (x[:, None] - x[None]) ** 2 / 0.5**2)
    eye = torch.eye(41, dtype=F64)
    factors = metrics.CHOLESKY_JITTERS  # × the mean variance, 1e-2
    jitter = next(f for f in factors if torch.linalg.cholesky_ex(prior + f * 1e-2 * eye)[1] == 0)
    assert jitter > 0
    posterior = through(mass_conservation(grid, 0.3), Gaussian(torch.zeros(41, dtype=F64), prior))
    mass = grid.integrate(metrics.gaussian_samples(posterior, 2000, 0))
    weights = torch.full((41,), 1 / 40, dtype=F64)
    weights[[0, -1]] = 1 / 80
    assert float(mass.std()) <= math.sqrt(jitter * 1e-2) * float(weights.norm())


def test_gaussian_samples_bad_input():
    good = Gaussian(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="count"):
        metrics.gaussian_samples(good, 0, 0)
    with pytest.raises(TypeError, match="count"):
        metrics.gaussian_samples(good, 2.5, 0)
    with pytest.raises(TypeError, match="Gaussian"):
        metrics.gaussian_samples((torch.zeros(3), torch.ones(3)), 2, 0)
    with pytest.raises(TypeError, match="generator"):
        metrics.gaussian_samples(good, 2, "seed")
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        metrics.gaussian_samples(Gaussian(torch.zeros(2), indefinite), 2, 0)
    with pytest.raises(ValueError, match="not symmetric"):
        metrics.gaussian_samples(Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.5], [0, 1]])), 2, 0)
    negative = LowRankCovariance(torch.ones(2, dtype=F64), torch.tensor([[1.1], [0.0]]))
    with pytest.raises(ValueError, match="negative variances"):
        metrics.gaussian_samples(Gaussian(torch.zeros(2), negative), 2, 0)
    # marginal variances 0.36 >= 0, but I − FFᵀ has eigenvalue 1 − 2·0.8² < 0
    skew = LowRankCovariance(torch.ones(2, dtype=F64), torch.tensor([[0.8], [0.8]]))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        metrics.gaussian_samples(Gaussian(torch.zeros(2), skew), 2, 0)
    with pytest.raises(TypeError, match="Gaussian"):
        metrics.marginal_std((torch.zeros(2), torch.ones(2)))


def _float32_posterior(case, seed):
    """A float32 model's exact (noise 0) posterior ``(posterior, G, b, prior)``: ProbConserv's
    mass row, Dirichlet pins at both walls, or both over a dense GP prior; prior float64."""
    n = 41
    gen = torch.Generator().manual_seed(seed)
    mass = torch.full((1, n), 1.0 / (n - 1), dtype=F64)
    mass[0, 0] = mass[0, -1] = 0.5 / (n - 1)
    pins = torch.eye(n, dtype=F64)[[0, n - 1]]
    G = {"mass": mass, "pins": pins, "gp": torch.cat([mass, pins])}[case]
    b = torch.randn(G.shape[0], generator=gen, dtype=F64)
    mean = torch.randn(5, n, generator=gen, dtype=F64).float()
    if case == "gp":
        x = torch.linspace(0, 1, n, dtype=F64)
        kernel = torch.exp(-0.5 * (x[:, None] - x[None]) ** 2 / 0.3**2)
        prior = (kernel + 1e-2 * torch.eye(n, dtype=F64)).float().expand(5, n, n)
    else:
        prior = (0.01 + torch.rand(5, n, generator=gen, dtype=F64)).float()
    posterior = through(LinearConstraint(G, b.float(), noise=0.0), Gaussian(mean, prior))
    assert posterior.mean.dtype == posterior.cov.factor.dtype == torch.float32
    return posterior, G, b, prior.double()


@pytest.mark.parametrize("case", ["mass", "pins", "gp"])
def test_float32_exact_posteriors_are_sampled_on_the_constraint(case):
    """A float32 posterior stores ``base − FFᵀ`` to float32 round-off (singular values of
    ``L⁻¹F`` 1 ± ~1e-7, pinned variances ~-1e-7 × the prior's): the metrics take it, and its
    samples meet the rows to float32 round-off of the prior spread along them."""
    eps = torch.finfo(torch.float32).eps
    for seed in range(6):
        posterior, G, b, prior = _float32_posterior(case, seed)
        draws = metrics.gaussian_samples(posterior, 200, seed)
        std = metrics.marginal_std(posterior)
        assert torch.isfinite(metrics.gaussian_log_likelihood(posterior, posterior.mean))
        assert torch.isfinite(metrics.crps_per_sample(posterior, posterior.mean)).all()
        dense_prior = prior if prior.ndim == 3 else torch.diag_embed(prior)
        row_std = torch.einsum("kn,bnm,km->bk", G, dense_prior, G).sqrt()  # (5, k)
        spread = ((draws - posterior.mean.double()) @ G.T).abs() / row_std
        tolerance = 1e-6 if case != "gp" else 1e-5  # dense base: ~ eps × its pivot ratio (7.6)
        assert spread.max() < tolerance, (seed, float(spread.max()))
        mean = posterior.mean.double()
        scale = mean.abs() @ G.abs().T + b.abs()
        assert ((draws @ G.T - b).abs() <= 8 * eps * scale + tolerance * row_std).all()
        if case != "mass":  # the pinned walls: variance 0 up to round-off, never negative
            walls = std[:, [0, -1]]
            assert (walls >= 0).all()
            assert (walls.square() <= 16 * eps * prior.diagonal(dim1=-2, dim2=-1).amax()).all()


def test_float32_covariances_that_are_not_psd_are_still_refused():
    """The float32 round-off allowance is ~16 eps, not a licence: a variance of -1e-3 × the
    largest, or ``s² = 1 + 1e-4``, is refused; float64 keeps its own tolerances."""
    mean = torch.zeros(4)
    pinned = torch.tensor([[math.sqrt(1.001)], [0.0], [0.0], [0.0]])  # variance -1e-3 at 0
    negative = Gaussian(mean, LowRankCovariance(torch.ones(4), pinned))
    for score in (
        metrics.marginal_std,
        lambda g: metrics.gaussian_log_likelihood(g, mean),
        lambda g: metrics.crps_per_sample(g, mean),
        lambda g: metrics.gaussian_samples(g, 2, 0),
    ):
        with pytest.raises(ValueError, match="negative variances"):
            score(negative)
    with pytest.raises(ValueError, match="negative variances"):
        metrics.marginal_std(Gaussian(mean, torch.tensor([1.0, -1e-3, 0.5, 0.5]).diag()))

    def spread_over_two(excess, dtype):  # I − ffᵀ, ‖f‖² = 1 + excess: variances ~ 1/2 >= 0
        f = torch.tensor([[1.0], [1.0], [0.0], [0.0]], dtype=F64) * math.sqrt((1 + excess) / 2)
        return Gaussian(mean.to(dtype), LowRankCovariance(torch.ones(4, dtype=dtype), f.to(dtype)))

    with pytest.raises(ValueError, match=r"singular value 1 \+ 5\.0\de-05 > 1"):
        metrics.gaussian_samples(spread_over_two(1e-4, torch.float32), 2, 0)
    metrics.gaussian_samples(spread_over_two(1e-6, torch.float32), 2, 0)  # 8 eps: round-off
    with pytest.raises(ValueError, match=r"singular value 1 \+ 5\.0\de-07 > 1"):
        metrics.gaussian_samples(spread_over_two(1e-6, F64), 2, 0)


def test_a_float32_full_covariance_symmetric_to_float32_round_off_is_sampled():
    """A GP posterior ``K − K_xs K_ss⁻¹ K_sx`` computed in float32 is symmetric to ~1e-5 of its
    variance; sampling takes it (symmetrised), and still refuses a 1e-2 asymmetry."""
    x, xs = torch.linspace(0, 1, 30), torch.linspace(0, 1, 7)

    def kernel(a, b):
        return torch.exp(-0.5 * (a[:, None] - b[None]) ** 2 / 0.2**2)

    inducing = kernel(xs, xs) + 1e-2 * torch.eye(7)
    cov = kernel(x, x) - kernel(x, xs) @ torch.linalg.solve(inducing, kernel(xs, x))
    cov = cov + 1e-3 * torch.eye(30)
    assert (cov - cov.T).abs().max() > 1e-8 * cov.diagonal().max()
    draws = metrics.gaussian_samples(Gaussian(torch.zeros(30), cov), 20000, 0)
    symmetric = (cov.double() + cov.double().T) / 2
    torch.testing.assert_close(_sample_cov(draws), symmetric, atol=0.05, rtol=0)
    skewed = cov.clone()
    skewed[0, 1] += 1e-2 * cov.diagonal().max()
    with pytest.raises(ValueError, match="not symmetric"):
        metrics.gaussian_samples(Gaussian(torch.zeros(30), skewed), 2, 0)


def _pinned_rank_one(n, dtype, deficit=0.0):
    """A covariance pinned (zero variance) at all but two points, whose ``(2, 2)`` block is
    ``[[1, r], [r, r² − deficit]]`` with ``r = 1/3``: rank one for ``deficit = 0`` (stored in
    float32 its smallest eigenvalue is ~-0.04 eps), indefinite for ``deficit > 0``."""
    r = 1 / 3
    cov = torch.zeros(n, n, dtype=F64)
    cov[:2, :2] = torch.tensor([[1.0, r], [r, r * r - deficit]], dtype=F64)
    return cov.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_full_covariance_indefinite_only_by_its_storage_round_off_is_sampled(dtype):
    """Rounding a positive semi-definite ``(n, n)`` matrix to ``eps`` moves its eigenvalues by at
    most ``eps / 2`` × its largest absolute row sum: sampling takes that, however small the mean
    variance (498 of 500 points pinned), and refuses an eigenvalue of ~-1e-3 × the largest
    variance."""
    n, eps = 500, torch.finfo(dtype).eps
    singular = _pinned_rank_one(n, dtype)
    smallest = torch.linalg.eigvalsh(singular.double())[0]
    if dtype == torch.float32:  # the case: indefinite by round-off, beyond 1e-6 × mean variance
        rounding = eps / 2 * singular.double().abs().sum(-1).max()
        assert -rounding < smallest < -1e-6 * singular.diagonal().double().mean()
    draws = metrics.gaussian_samples(Gaussian(torch.zeros(n, dtype=dtype), singular), 4000, 0)
    assert draws[:, 2:].abs().max() <= 3 * math.sqrt(n * eps)  # the jitter's spread at most
    # rank one: the second point moves as r = 1/3 times the first, up to the jitter's spread
    assert (draws[:, 1] - draws[:, 0] / 3).abs().max() <= 6 * math.sqrt(n * eps)
    assert draws[:, 0].var().item() == pytest.approx(1.0, rel=0.1)
    indefinite = Gaussian(torch.zeros(n, dtype=dtype), _pinned_rank_one(n, dtype, 1e-3))
    with pytest.raises(ValueError, match="full covariance is not positive semi-definite"):
        metrics.gaussian_samples(indefinite, 2, 0)


@pytest.mark.parametrize("share, sampled", [(0.4, True), (2.0, False)])
def test_float32_sampling_allows_the_round_off_of_this_matrix_not_of_its_size(share, sampled):
    """The jitter stops at ``2 × eps / 2`` × the largest absolute row sum (here ``4/3``), the
    bound on what rounding this matrix to float32 can do to an eigenvalue (twice over): one of
    ``-0.4 ×`` that limit is sampled, one of ``-2 ×`` refused, though both are far inside
    ``n eps`` × the largest variance (``500 eps``, which let through matrices indefinite by
    hundreds of times the rounding bound)."""
    n, eps, r = 500, torch.finfo(torch.float32).eps, 1 / 3
    limit = 2 * eps / 2 * (1 + r)
    # det of the block is −deficit; its eigenvalues ≈ 1 + r² and −deficit / (1 + r²)
    cov = _pinned_rank_one(n, torch.float32, deficit=share * limit * (1 + r * r))
    smallest = torch.linalg.eigvalsh(cov.double())[0].item()
    assert smallest / limit == pytest.approx(-share, rel=0.25)  # float32 rounds the block
    gaussian = Gaussian(torch.zeros(n), cov)
    if sampled:
        assert torch.isfinite(metrics.gaussian_samples(gaussian, 2, 0)).all()
    else:
        refused = r"full covariance is not positive semi-definite.*2 × eps / 2 × its largest"
        with pytest.raises(ValueError, match=refused):
            metrics.gaussian_samples(gaussian, 2, 0)


def test_an_indefinite_base_is_named_cov_base_once():
    """A :class:`LowRankCovariance` over an indefinite full base: sampling and NonNegative name
    ``cov.base`` (not "the Gaussian's full covariance", and not twice)."""
    from physml.constraints import NonNegative
    from physml.errors import ConstraintError

    base = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    factor = torch.tensor([[[0.1], [0.1], [0.0]]], dtype=F64)
    cov = LowRankCovariance(base[None], factor, diagonal=False)  # base has eigenvalue -1
    gaussian = Gaussian(torch.tensor([[0.2, -0.3, 0.4]], dtype=F64), cov)
    with pytest.raises(ValueError, match=r"^cov\.base is not positive semi-definite: its"):
        metrics.gaussian_samples(gaussian, 2, 0)
    with pytest.raises(ConstraintError) as refused:
        constrain(nn.Identity(), NonNegative())(gaussian)
    message = str(refused.value)
    assert message.startswith("NonNegative: the Gaussian's cov.base is not positive semi-definite")
    assert message.count("the Gaussian's") == 1 and "full covariance" not in message


def test_marginal_std():
    gaussian = _low_rank_gaussian(seed=60)
    expected = gaussian.dense_cov().diagonal(dim1=-2, dim2=-1).sqrt()
    torch.testing.assert_close(metrics.marginal_std(gaussian), expected)


def test_float32_low_rank_round_off_is_judged_against_the_prior_variance():
    """Variances ``1 − f²`` far below the prior's 1 (1e-4) with a round-off negative (−2.4e-7,
    ~2 eps of the prior) at the third point: that point's std is 0, not a refusal."""
    factor = torch.tensor([[[0.99995], [0.99995], [1.0000001]]])
    cov = LowRankCovariance(torch.ones(1, 3), factor, diagonal=True)
    assert cov.variance()[0, 2] < 0
    std = metrics.marginal_std(Gaussian(torch.zeros(1, 3), cov))
    assert std[0, 2].item() == 0.0
    exact = (1 - factor[0, :2, 0].double().square()).sqrt()  # in float64: no cancellation
    torch.testing.assert_close(std[0, :2].double(), exact, rtol=1e-3, atol=0)


def test_float32_low_rank_round_off_counts_with_a_float64_mean():
    """The round-off allowed is that of the least precise of mean, base and factor: a float64
    mean does not make the float32 covariance's −2.4e-7 (~2 float32 eps) a negative variance."""
    factor = torch.tensor([[[0.99995], [0.99995], [1.0000001]]])
    cov = LowRankCovariance(torch.ones(1, 3), factor, diagonal=True)
    gaussian = Gaussian(torch.zeros(1, 3, dtype=F64), cov)
    std = metrics.marginal_std(gaussian)
    assert std[0, 2].item() == 0.0
    exact = (1 - factor[0, :2, 0].double().square()).sqrt()
    torch.testing.assert_close(std[0, :2], exact, rtol=1e-3, atol=0.0)
    log_density = metrics.gaussian_log_likelihood(gaussian, torch.zeros(1, 3), reduction="none")
    assert torch.isfinite(log_density).all()


# --------------------------------------------------------------------------------- gradients


def _normal_density(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def test_crps_of_marginal_std_differentiates_through_a_zero_variance():
    """``crps_gaussian(mean, marginal_std(g), y)``: d/dv of ``CRPS(√v)`` is ``(2φ(z) − 1/√π) /
    2σ`` where ``v > 0`` and 0 (not NaN) at ``v = 0``; through the walls of a Dirichlet
    posterior (variance 0 whatever the prior) the gradient matches finite differences."""
    variance = torch.tensor([0.0, 0.5, 0.2], dtype=F64, requires_grad=True)
    target = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    mean = torch.zeros(3, dtype=F64)
    std = metrics.marginal_std(Gaussian(mean, variance))
    metrics.crps_gaussian(mean, std, target, "none").sum().backward()
    expected = [0.0] + [
        (2 * _normal_density(y / math.sqrt(v)) - 1 / math.sqrt(math.pi)) / (2 * math.sqrt(v))
        for v, y in ((0.5, 0.2), (0.2, 0.3))
    ]
    torch.testing.assert_close(variance.grad, torch.tensor(expected, dtype=F64))

    grid = Grid1D(5, 0.0, 1.0)
    walls = BoundaryCondition(Dirichlet(0.0, 0.0), grid)
    factor = rand(5, 5, seed=70).requires_grad_()

    def crps(factor):
        cov = factor @ factor.T / 5 + 0.1 * torch.eye(5, dtype=F64)
        posterior = through(walls, Gaussian(rand(5, seed=71), cov))
        std = metrics.marginal_std(posterior)
        return metrics.crps_gaussian(posterior.mean, std, rand(5, seed=72))

    assert metrics.marginal_std(through(walls, Gaussian(torch.zeros(5), torch.eye(5))))[0] == 0
    assert torch.autograd.gradcheck(crps, (factor,))


@pytest.mark.parametrize("case", ["mass", "walls", "walls and mass"])
def test_samples_of_exact_posteriors_have_second_derivatives(case):
    """Draws of a diagonal Gaussian conditioned exactly on a mass row, on Dirichlet walls
    (variance 0 there) or on both: second derivatives in the prior variances match finite
    differences of the first (they were NaN)."""
    grid = Grid1D(4, 0.0, 1.0)
    mass = mass_conservation(grid, torch.tensor([0.3], dtype=F64))
    walls = BoundaryCondition(Dirichlet(0.1, 0.2), grid)
    constraints = {"mass": [mass], "walls": [walls], "walls and mass": [walls, mass]}[case]
    mean = rand(1, 4, seed=73)

    def draws(variance):
        posterior = Gaussian(mean, variance)
        for constraint in constraints:
            posterior = through(constraint, posterior)
        return metrics.gaussian_samples(posterior, 3, 0)

    variance = (0.1 + rand(1, 4, seed=74).abs()).requires_grad_()
    assert torch.autograd.gradgradcheck(draws, (variance,))


@pytest.mark.parametrize("gap", [0.0, 0.3, -0.3])
def test_crps_gaussian_slope_in_std_at_zero_spread(gap):
    """At ``σ = 0`` the score is ``|y − μ|`` and d/dσ is the limit of ``2φ(z) − 1/√π``:
    ``(√2 − 1)/√π`` at ``y = μ``, ``−1/√π`` elsewhere (it was 0)."""
    std = torch.zeros(1, dtype=F64, requires_grad=True)
    score = metrics.crps_gaussian(torch.zeros(1, dtype=F64), std, torch.tensor([gap], dtype=F64))
    (slope,) = torch.autograd.grad(score, std)
    expected = (math.sqrt(2) - 1) / math.sqrt(math.pi) if gap == 0 else -1 / math.sqrt(math.pi)
    assert score.item() == abs(gap)
    assert slope.item() == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("gap", [0.1, 0.0])
def test_crps_gaussian_slope_in_a_tiny_variance(gap):
    """``crps_gaussian(μ, marginal_std(N(μ, v)), y)`` for ``v`` down to ``1e-300``: the score is
    scipy's closed form and d/dv is ``(2φ(z) − 1/√π) / 2σ`` (away from ``y = μ`` it was off from
    ``v = 1e-30``, 0 from ``1e-100``, -inf below ``1e-308``: cancellation in ``σ z``)."""
    variances = [1e-2, 1e-8, 1e-30, 1e-100, 1e-200, 1e-300, 1e-310]
    variance = torch.tensor(variances, dtype=F64, requires_grad=True)
    mean, target = torch.zeros(7, dtype=F64), torch.full((7,), gap, dtype=F64)
    std = metrics.marginal_std(Gaussian(mean, variance))
    score = metrics.crps_gaussian(mean, std, target, "none")
    (slope,) = torch.autograd.grad(score.sum(), variance)
    sigma = np.sqrt(variances)
    z = gap / sigma
    norm = stats.norm()
    expected = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
    np.testing.assert_allclose(score.detach().numpy(), expected, rtol=1e-14, atol=0)
    exact = (2 * norm.pdf(z) - 1 / np.sqrt(np.pi)) / (2 * sigma)
    np.testing.assert_allclose(slope.numpy(), exact, rtol=1e-14, atol=0)


@pytest.fixture
def every_torch_warning():
    """Torch's once-per-process warnings raised each time, and every warning an error."""
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
    torch.set_warn_always(before)


def test_gaussian_metrics_do_not_warn_on_inputs_that_require_grad(every_torch_warning):
    """Reading a variance's size (round-off checks, messages) detaches it: no "Converting a
    tensor with requires_grad=True to a scalar" warning."""
    mean, target = rand(2, 3, seed=75), rand(2, 3, seed=76)
    variance = (0.1 + rand(2, 3, seed=77).abs()).requires_grad_()
    cov = (random_spd(3, seed=78) / 3).requires_grad_()
    members = rand(4, 2, 3, seed=79).requires_grad_()
    metrics.gaussian_log_likelihood(Gaussian(mean, variance), target)
    metrics.crps_gaussian(mean, metrics.marginal_std(Gaussian(mean, variance)), target)
    metrics.gaussian_samples(Gaussian(mean, cov.expand(2, 3, 3)), 2, 0)
    metrics.spread_skill(members, target)
    metrics.spearman(members[0], target)
    metrics.bootstrap_se(variance, resamples=2)


# ------------------------------------------------------------------------------- images


def _ssim_brute(a, b, data_range, size=11, sigma=1.5):
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            pa, pb = a[i : i + size, j : j + size], b[i : i + size, j : j + size]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return np.mean(values)


def test_ssim_matches_brute_force_windows():
    a = torch.rand(2, 15, 17, generator=torch.Generator().manual_seed(70), dtype=F64)
    b = (a + 0.2 * rand(2, 15, 17, seed=71)).clamp(0, 1)
    expected = [_ssim_brute(a[i].numpy(), b[i].numpy(), 1.0) for i in range(2)]
    np.testing.assert_allclose(metrics.ssim(a, b, 1.0, reduction="none"), expected, rtol=1e-12)
    np.testing.assert_allclose(metrics.ssim(a, b, 1.0), np.mean(expected), rtol=1e-12)


def test_ssim_of_constant_images_with_a_shift():
    level, shift, c1 = 0.3, 0.25, (0.01 * 1.0) ** 2
    a = torch.full((12, 12), level, dtype=F64)
    expected = (2 * level * (level + shift) + c1) / (level**2 + (level + shift) ** 2 + c1)
    assert metrics.ssim(a, a + shift, 1.0).item() == pytest.approx(expected, rel=1e-12)


def test_ssim_properties():
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(72), dtype=F64)
    torch.testing.assert_close(
        metrics.ssim(image, image, 1.0, reduction="none"), torch.ones(3, dtype=F64)
    )
    previous = 1.0
    for level in (0.05, 0.1, 0.2, 0.4):
        noisy = image + level * rand(3, 24, 24, seed=73)
        score = metrics.ssim(image, noisy, 1.0)
        assert score < previous
        assert score.item() == pytest.approx(metrics.ssim(noisy, image, 1.0).item(), abs=1e-15)
        previous = score
    assert metrics.ssim(image, 1 - image, 1.0) < 0.5
    assert metrics.ssim(
        rand(4, 2, 11, 11), rand(4, 2, 11, 11, seed=1), 2.0, reduction="none"
    ).shape == (4, 2)


def test_ssim_bad_input():
    image = torch.zeros(12, 12)
    with pytest.raises(ValueError, match="window_size"):
        metrics.ssim(torch.zeros(10, 12), torch.zeros(10, 12), 1.0)
    with pytest.raises(ValueError, match="data_range"):
        metrics.ssim(image, image, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(image, torch.zeros(12, 13), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        metrics.ssim(image, image, 1.0, sigma=-1.0)


def test_csi_counts_hits_misses_and_false_alarms():
    pred = torch.tensor([[0.9, 0.2, 0.7, 0.1], [0.6, 0.6, 0.1, 0.1]])
    target = torch.tensor([[1.0, 0.6, 0.1, 0.0], [0.8, 0.2, 0.7, 0.0]])
    p, t = pred.numpy(), target.numpy()

    def by_hand(threshold, axis=None):
        hits = ((p >= threshold) & (t >= threshold)).sum(axis=axis)
        misses = ((p < threshold) & (t >= threshold)).sum(axis=axis)
        false = ((p >= threshold) & (t < threshold)).sum(axis=axis)
        return hits / (hits + misses + false)

    assert metrics.csi(pred, target, 0.5).item() == pytest.approx(by_hand(0.5))
    assert by_hand(0.5) == pytest.approx(2 / 6)
    np.testing.assert_allclose(
        metrics.csi(pred, target, [0.5, 0.65]), [by_hand(0.5), by_hand(0.65)]
    )
    np.testing.assert_allclose(metrics.csi(pred, target, 0.5, dims=1), by_hand(0.5, axis=1))
    assert torch.isnan(metrics.csi(pred, target, 2.0))
    with pytest.raises(ValueError, match="threshold"):
        metrics.csi(pred, target, [[0.5]])
    with pytest.raises(ValueError, match="dims"):
        metrics.csi(pred, target, 0.5, dims=2)


def test_negative_flip_rate():
    labels = torch.tensor([0, 1, 2, 1, 0])
    old = torch.tensor([0, 1, 0, 1, 2])  # right on 0, 1, 3
    new = torch.tensor([0, 2, 2, 0, 2])  # wrong on 1, 3 (old right there), 4
    assert metrics.negative_flip_rate(old, new, labels).item() == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="same shape"):
        metrics.negative_flip_rate(old, new, labels[:3])


def test_negative_flip_rate_compares_integer_labels_exactly():
    # 2**53 + 1 and 2**53 are distinct labels, but one float64
    big = 2**53
    labels = torch.tensor([big + 1, 7])
    old = torch.tensor([big + 1, 7])  # right on both
    new = torch.tensor([big, 7])  # wrong on 0
    assert metrics.negative_flip_rate(old, new, labels).item() == 0.5
    assert metrics.negative_flip_rate([big + 1, 7], [big, 7], [big + 1, 7]).item() == 0.5


# -------------------------------------------------------------------- shared bad input


@pytest.mark.parametrize(
    "call",
    [metrics.mse, metrics.mae, metrics.relative_l2, metrics.frame_mse],
    ids=["mse", "mae", "relative_l2", "frame_mse"],
)
def test_pointwise_errors_reject_bad_input(call):
    good = torch.ones(2, 3, 4)
    with pytest.raises(ValueError, match="same shape"):
        call(good, torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="NaN"):
        call(good, torch.full((2, 3, 4), math.nan))
    with pytest.raises(ValueError, match="NaN"):
        call(torch.full((2, 3, 4), math.inf), good)
    with pytest.raises(ValueError, match="empty"):
        call(torch.ones(0, 3, 4), torch.ones(0, 3, 4))
    with pytest.raises(TypeError, match="real numbers"):
        call(good.bool(), good)
    with pytest.raises(TypeError, match="pred must be a tensor"):
        call("pred", good)


def test_bad_dims_and_reduction():
    a = torch.ones(2, 3)
    with pytest.raises(ValueError, match="dims"):
        metrics.mse(a, a, dims=2)
    with pytest.raises(ValueError, match="dims"):
        metrics.mae(a, a, dims=(0, -2))
    with pytest.raises(TypeError, match="dims"):
        metrics.mse(a, a, dims=0.5)
    with pytest.raises(ValueError, match="reduction"):
        metrics.relative_l2(a, a, reduction="sum")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    pred, target = rand(2, 3, 16, 16, seed=80), rand(2, 3, 16, 16, seed=81)
    for name in ("mse", "relative_l2", "ssim"):
        call = getattr(metrics, name)
        args = (1.0,) if name == "ssim" else ()
        gpu = call(pred.cuda(), target.cuda(), *args)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), call(pred, target, *args))
    x = torch.linspace(0, 1, 16, dtype=F64)
    torch.testing.assert_close(
        metrics.shock_position(pred.cuda(), x, interpolate=True).cpu(),
        metrics.shock_position(pred, x, interpolate=True),
    )
    torch.testing.assert_close(
        metrics.crps_ensemble(pred.cuda(), target[0].cuda()).cpu(),
        metrics.crps_ensemble(pred, target[0]),
    )
    gaussian = _low_rank_gaussian(seed=82)
    on_gpu = Gaussian(
        gaussian.mean.cuda(),
        LowRankCovariance(*(t.cuda() for t in (gaussian.cov.base, gaussian.cov.factor))),
    )
    draws = metrics.gaussian_samples(on_gpu, 5, torch.Generator(device="cuda").manual_seed(0))
    assert draws.device.type == "cuda" and draws.shape == (5, 3, 6)
    with pytest.raises(ValueError, match="same device"):
        metrics.gaussian_samples(on_gpu, 5, torch.Generator().manual_seed(0))


# ------------------------------------------------------------ negative flips in regression

OLD_ERRORS = torch.tensor([0.05, 0.10, 0.20, 0.02, 0.30])
NEW_ERRORS = torch.tensor([0.12, 0.08, 0.25, 0.021, 0.10])


def test_tolerance_flips_and_their_curve_by_hand():
    # tau 0.1: old right on 0, 1, 3; new wrong on 0 (0.12) only -> 1 flip of 5
    flips = metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, 0.1, reduction="none")
    assert flips.tolist() == [True, False, False, False, False]
    assert metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, 0.1).item() == pytest.approx(1 / 5)
    # tau 0.02: old right on 3 only, new 0.021 > 0.02 -> a flip; tau 0.2: old right on 0-3,
    # new wrong on 2 (0.25); tau 0.3: nothing wrong any more
    curve = metrics.flip_rate_curve(OLD_ERRORS, NEW_ERRORS, [0.02, 0.1, 0.2, 0.3])
    assert curve.tolist() == pytest.approx([1 / 5, 1 / 5, 1 / 5, 0.0])
    loop = [
        sum(o <= t < n for o, n in zip(OLD_ERRORS.tolist(), NEW_ERRORS.tolist(), strict=True)) / 5
        for t in (0.01, 0.06, 0.11, 0.22)
    ]
    assert metrics.flip_rate_curve(OLD_ERRORS, NEW_ERRORS, [0.01, 0.06, 0.11, 0.22]).tolist() == (
        pytest.approx(loop)
    )
    assert metrics.tolerance_flips(OLD_ERRORS, OLD_ERRORS, 0.1).item() == 0.0


def test_degradation_flips_by_hand():
    # (1 + 0.1) e_old: 0.055, 0.11, 0.22, 0.022, 0.33 -> new worse on 0 and 2
    flips = metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, delta=0.1, reduction="none")
    assert flips.tolist() == [True, False, True, False, False]
    # an absolute floor of 0.05 forgives 2 (0.25 < 0.22 + 0.05) but not 0 (0.12 > 0.105)
    assert metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, 0.1, 0.05).item() == pytest.approx(0.2)
    # delta 0: any worsening, including 3 (0.021 > 0.02)
    assert metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, 0.0).item() == pytest.approx(3 / 5)


def test_degradation_flips_take_the_floor_outside_the_factor_and_a_strict_inequality():
    # 1[e_new > (1 + δ) e_old + ε_floor] with δ = 1, ε = 1: the bar is 2 e_old + 1
    old = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64)
    new = torch.tensor([3.5, 3.0, 2.5, 1.5], dtype=F64)  # above, on, below the bar 3; 1.5 > 1
    flips = metrics.degradation_flips(old, new, delta=1.0, floor=1.0, reduction="none")
    assert flips.tolist() == [True, False, False, True]
    zero = torch.zeros(1)
    assert metrics.degradation_flips(zero, zero).item() == 0.0  # equal errors: no worsening


def test_physics_flips_by_hand():
    old = torch.tensor([[1e-9, -2e-9], [1e-3, 0.0], [0.0, 0.0], [5e-7, 0.0]])
    new = torch.tensor([[0.0, 1e-5], [0.0, 0.0], [-1e-4, 0.0], [0.0, 2e-7]])
    # met before (|r| <= 1e-6): 0, 2, 3; violated after: 0, 2
    flips = metrics.physics_flips(old, new, 1e-6, reduction="none")
    assert flips.tolist() == [True, False, True, False]
    assert metrics.physics_flips(old, new, 1e-6).item() == pytest.approx(0.5)
    assert metrics.physics_flips(old, new, 1e-3).item() == 0.0


def test_physics_flips_judge_a_sample_by_its_largest_residual():
    # mean |r| = 7.5e-7 is within 1e-6, the largest 1.5e-6 is not: the constraint is violated
    flips = metrics.physics_flips(torch.zeros(1, 2), torch.tensor([[0.0, 1.5e-6]]), 1e-6)
    assert flips.item() == 1.0


def test_crps_per_sample_is_the_mean_crps_of_each_sample():
    mean, std, target = rand(3, 2, 4), rand(3, 2, 4, seed=1).abs(), rand(3, 2, 4, seed=2)
    per_point = metrics.crps_gaussian(mean, std, target, reduction="none")
    expected = per_point.reshape(3, -1).mean(1)
    torch.testing.assert_close(metrics.crps_per_sample((mean, std.square()), target), expected)
    gaussian = Gaussian(mean.reshape(3, 8), std.reshape(3, 8).square())
    torch.testing.assert_close(metrics.crps_per_sample(gaussian, target.reshape(3, 8)), expected)
    members = rand(6, 3, 8, seed=3)
    by_loop = torch.stack(
        [metrics.crps_ensemble(members[:, i], target.reshape(3, 8)[i]) for i in range(3)]
    )
    torch.testing.assert_close(
        metrics.crps_per_sample(Ensemble(members), target.reshape(3, 8)), by_loop
    )
    # the probabilistic flips: CRPS in place of the error
    old = metrics.crps_per_sample((mean, std.square()), target)
    new = metrics.crps_per_sample((mean, (2 * std).square()), target)
    tau = float(old.median())
    assert metrics.tolerance_flips(old, new, tau).item() == pytest.approx(
        float(((old <= tau) & (new > tau)).double().mean())
    )


def test_crps_per_sample_reads_a_pair_as_mean_and_variance():
    """The pair means what it means to gaussian_log_likelihood: ``(mean, variance)``."""
    mean, target = torch.tensor([[0.0, 1.0]], dtype=F64), torch.tensor([[1.0, -1.0]], dtype=F64)
    variance = torch.full((1, 2), 4.0, dtype=F64)

    def closed_form(mu, sigma, y):  # σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π]
        z = (y - mu) / sigma
        density = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        return sigma * (z * math.erf(z / math.sqrt(2)) + 2 * density - 1 / math.sqrt(math.pi))

    by_hand = (closed_form(0.0, 2.0, 1.0) + closed_form(1.0, 2.0, -1.0)) / 2
    scores = [
        metrics.crps_per_sample((mean, variance), target),
        metrics.crps_per_sample(Gaussian(mean, variance), target),
        metrics.crps_gaussian(mean, variance.sqrt(), target, "none").mean(1),
    ]
    for score in scores:
        assert score.tolist() == pytest.approx([by_hand], rel=1e-14)


def test_flips_compare_float32_errors_with_tau_in_float32():
    tenth = torch.tensor([0.1], dtype=torch.float32)  # 0.100000001490116..., float32(0.1)
    above = torch.nextafter(tenth, torch.ones(1))  # the next float32 up
    zero = torch.zeros(1, dtype=torch.float32)
    # an error equal to tau in its own precision is within tau: no flip; one ulp above is one
    assert metrics.tolerance_flips(zero, tenth, 0.1).item() == 0.0
    assert metrics.tolerance_flips(zero, above, 0.1).item() == 1.0
    assert metrics.tolerance_flips(tenth, above, 0.1).item() == 1.0  # the old one was within
    assert metrics.flip_rate_curve(zero, tenth, [0.1]).tolist() == [0.0]
    assert metrics.flip_rate_curve(tenth, above, [0.1]).tolist() == [1.0]
    # float64 errors keep float64: float32(0.1) as float64 is above 0.1
    assert metrics.tolerance_flips(zero.double(), tenth.double(), 0.1).item() == 1.0
    # Python floats are float64 numbers, not rounded to float32 on the way in
    assert metrics.tolerance_flips([0.0], [0.1], 0.1).item() == 0.0
    assert metrics.tolerance_flips([0.0], [0.1 + 2**-56], 0.1).item() == 1.0
    met = torch.tensor([[0.1]], dtype=torch.float32)
    assert metrics.physics_flips(met, torch.nextafter(met, torch.ones(1, 1)), 0.1).item() == 1.0
    assert metrics.physics_flips(met, -met, 0.1).item() == 0.0


def test_flips_count_an_infinite_error_as_wrong_and_refuse_nan():
    """A diverged model (error or residual inf) is wrong at every tolerance: old 0.05 and new
    inf is a flip; inf before and after is not; inf before and 0.05 after is no flip either."""
    inf = math.inf
    old, new = torch.tensor([0.05, 0.05, inf, inf]), torch.tensor([0.05, inf, inf, 0.05])
    flips = metrics.tolerance_flips(old, new, 0.1, reduction="none")
    assert flips.tolist() == [False, True, False, False]
    assert metrics.flip_rate_curve(old, new, [0.0, 0.1, 1e300]).tolist() == [0.0, 0.25, 0.25]
    assert metrics.degradation_flips(old, new, reduction="none").tolist() == flips.tolist()
    residual = torch.tensor([[0.0, 0.0], [0.0, -inf], [inf, 0.0]])
    assert metrics.physics_flips(torch.zeros(3, 2), residual, 0.1, "none").tolist() == [
        False,
        True,
        True,
    ]
    for call in (
        lambda: metrics.tolerance_flips(old, torch.tensor([0.0, math.nan, 0.0, 0.0]), 0.1),
        lambda: metrics.degradation_flips(torch.tensor([math.nan]), torch.zeros(1)),
        lambda: metrics.physics_flips(torch.zeros(1, 1), torch.full((1, 1), math.nan), 0.1),
    ):
        with pytest.raises(ValueError, match="contains NaN values"):
            call()
    with pytest.raises(ValueError, match="new_error must be >= 0"):
        metrics.tolerance_flips(old, -new, 0.1)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, True), "tau"),
        (lambda: metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, np.True_), "tau"),
        (lambda: metrics.flip_rate_curve(OLD_ERRORS, NEW_ERRORS, True), "taus"),
        (lambda: metrics.flip_rate_curve(OLD_ERRORS, NEW_ERRORS, [True, False]), "taus"),
        (lambda: metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, True), "delta"),
        (lambda: metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, 0.1, False), "floor"),
        (lambda: metrics.physics_flips(torch.ones(3), torch.ones(3), True), "tolerance"),
    ],
)
def test_flip_metrics_refuse_bools_as_numbers(call, name):
    with pytest.raises(TypeError, match=rf"^{name} must (be a number|hold real numbers)"):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS[:3], 0.1), "same shape"),
        (lambda: metrics.tolerance_flips(OLD_ERRORS[None], NEW_ERRORS[None], 0.1), "per-sample"),
        (lambda: metrics.tolerance_flips(-OLD_ERRORS, NEW_ERRORS, 0.1), "old_error must be >= 0"),
        (lambda: metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, -1), "tau must be >= 0"),
        (lambda: metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, "a"), "tau must be a number"),
        (lambda: metrics.flip_rate_curve(OLD_ERRORS, NEW_ERRORS, [[0.1]]), "taus must be"),
        (lambda: metrics.flip_rate_curve(OLD_ERRORS, NEW_ERRORS, [0.1, -0.1]), "taus must be >= 0"),
        (lambda: metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, -0.1), "delta must be"),
        (lambda: metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, 0.1, -1), "floor must be"),
        (lambda: metrics.physics_flips(torch.ones(3), torch.ones(4), 0.1), "same shape"),
        (lambda: metrics.physics_flips(torch.ones(3), torch.ones(3), -0.1), "tolerance must"),
        (lambda: metrics.crps_per_sample(torch.ones(3), torch.ones(3)), "prediction must be"),
    ],
)
def test_negative_flip_metrics_reject_bad_input(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_spearman_against_the_rank_formula_and_bad_input():
    a = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0])
    b = torch.tensor([30.0, 20.0, 10.0, 50.0, 40.0])
    d = torch.tensor([3, 2, 1, 5, 4]) - torch.tensor([3, 1, 2, 5, 4])  # rank differences
    n = 5
    assert metrics.spearman(a, b) == pytest.approx(1 - 6 * float((d**2).sum()) / (n * (n * n - 1)))
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        metrics.spearman(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="at least 2 values"):
        metrics.spearman(torch.zeros(1), torch.zeros(1))


def test_spearman_gives_tied_values_their_average_rank():
    scipy_stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(4)
    a = torch.randint(0, 4, (40,), generator=gen).double()  # many ties
    b = a + torch.randint(0, 3, (40,), generator=gen).double()
    expected = scipy_stats.spearmanr(a.numpy(), b.numpy()).statistic
    assert metrics.spearman(a, b) == pytest.approx(expected, abs=1e-12)
    up, down = torch.tensor([1.0, 1.0, 2.0, 2.0]), torch.tensor([2.0, 2.0, 1.0, 1.0])
    line = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert metrics.spearman(up, line) == pytest.approx(-metrics.spearman(down, line))
    assert metrics.spearman(torch.ones(4), line) == 0.0  # a constant: nothing to rank


def test_crps_of_a_two_member_ensemble_and_a_gaussian_by_hand():
    """Members {0, 1} at y = 0.25: E|X − y| = 0.5 and E|X − X'| is 0.5 over all 4 ordered pairs
    (CRPS 0.25, the integral of (F − 1[y ≤ z])² with F = ½ on [0, 1)) and 1 over the 2 distinct
    pairs (fair CRPS 0). N(μ, σ²) at y = μ: σ (√2 − 1) / √π."""
    members, y = torch.tensor([[0.0], [1.0]]), torch.tensor([0.25])
    assert metrics.crps_ensemble(members, y).item() == pytest.approx(0.25, abs=1e-15)
    assert metrics.crps_ensemble(members, y, fair=True).item() == pytest.approx(0.0, abs=1e-15)
    expected = 2.0 * (math.sqrt(2) - 1) / math.sqrt(math.pi)
    assert metrics.crps_gaussian(3.0, 2.0, 3.0).item() == pytest.approx(expected, rel=1e-15)


def test_spread_skill_of_two_members_by_hand_and_bad_input():
    """Members 0 and 2 around truth 0: unbiased variance 2, so spread² = 2 · 3/2 = 3; the mean
    misses by 1."""
    samples = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    assert metrics.spread_skill(samples, torch.zeros(2)) == pytest.approx(math.sqrt(3), rel=1e-15)
    with pytest.raises(ValueError, match="spread_skill needs at least 2 members, got 1"):
        metrics.spread_skill(samples[:1], torch.zeros(2))
    with pytest.raises(ValueError, match=r"truth must have shape \(2,\).*got \(1,\)"):
        metrics.spread_skill(samples, torch.zeros(1))


def test_spread_skill_of_a_perfect_mean_is_inf_with_spread_and_refused_without():
    """Members ±1 around truth 0: the mean misses by 0 while the spread is 2 · 3/2 = 3, so the
    ratio is √3 / 0; identical members on the truth give 0/0."""
    spread = torch.tensor([[-1.0, 1.0], [1.0, -1.0]])
    assert metrics.spread_skill(spread, torch.zeros(2)) == math.inf
    with pytest.raises(ValueError, match=r"undefined \(0/0\).*samples are identical"):
        metrics.spread_skill(torch.ones(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match=r"truth is empty \(shape \(0,\)\)"):
        metrics.spread_skill(torch.zeros(2, 0), torch.zeros(0))


@pytest.mark.parametrize("name", ["k1", "k2"])
def test_ssim_constants_must_be_positive(name):
    image = torch.rand(12, 12, generator=torch.Generator().manual_seed(74))
    for value in (0.0, -0.01):
        with pytest.raises(ValueError, match=rf"^{name} must be a finite number > 0, got"):
            metrics.ssim(image, image, 1.0, **{name: value})


def test_flips_per_sample_are_booleans():
    """``reduction='none'`` gives the flips as booleans (a mask), not 0.0 / 1.0."""
    for flips in (
        metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, 0.1, reduction="none"),
        metrics.degradation_flips(OLD_ERRORS, NEW_ERRORS, 0.1, reduction="none"),
        metrics.physics_flips(OLD_ERRORS[:, None], NEW_ERRORS[:, None], 0.1, reduction="none"),
    ):
        assert flips.dtype == torch.bool
    mask = metrics.tolerance_flips(OLD_ERRORS, NEW_ERRORS, 0.1, reduction="none")
    assert NEW_ERRORS[mask].tolist() == pytest.approx([0.12])  # usable as an index: sample 0


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: metrics.crps_ensemble(torch.zeros(3, 0), torch.zeros(0)), ValueError, "empty"),
        (lambda: metrics.crps_per_sample((0.0, 1.0), 0.0), ValueError, "got a scalar"),
        (lambda: metrics.shock_position(torch.tensor(1.0), [0.0]), ValueError, "match x"),
        (
            lambda: metrics.shock_position(torch.zeros(3, 0), torch.zeros(0)),
            ValueError,
            "non-empty",
        ),
        (
            lambda: metrics.gaussian_log_likelihood(
                (torch.zeros(0), torch.zeros(0)), torch.zeros(0)
            ),
            ValueError,
            "empty",
        ),
        (
            lambda: metrics.conservation_error(
                torch.zeros(2, 3, 5), Grid1D(5), 0.0, time_index=True
            ),
            TypeError,
            "time_index must be an int",
        ),
        (lambda: metrics.bootstrap_se([]), ValueError, "values is empty"),
    ],
)
def test_probabilistic_and_shock_metrics_reject_degenerate_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bootstrap_se_of_two_values_by_hand():
    """Resample means of {0, 1} are 0, ½ or 1; the sample standard deviation (n − 1) of two of
    them is |m₁ − m₂| / √2, so √2 × SE is 0, ½ or 1. Many resamples: the means are
    Binomial(2, ½) / 2 with standard deviation √(1/8)."""
    values = torch.tensor([0.0, 1.0], dtype=F64)
    pairs = [metrics.bootstrap_se(values, seed=s, resamples=2) * math.sqrt(2) for s in range(8)]
    assert all(min(abs(p - k) for k in (0.0, 0.5, 1.0)) < 1e-12 for p in pairs)
    assert max(pairs) > 0
    assert metrics.bootstrap_se(values, seed=1, resamples=4000) == pytest.approx(
        math.sqrt(1 / 8), rel=0.05
    )
    assert metrics.bootstrap_se(torch.full((5,), 3.0)) == 0.0


def test_bootstrap_se_takes_a_numpy_integer_resamples_as_that_int():
    """``resamples=np.int64(…)`` passed the check, then failed in the split into blocks (a
    numpy bool multiplied a list). It now draws as the int does: for {0, 1}, √(1/8)."""
    values = torch.tensor([0.0, 1.0], dtype=F64)
    numpy_count = metrics.bootstrap_se(values, seed=1, resamples=np.int64(4000))
    assert numpy_count == metrics.bootstrap_se(values, seed=1, resamples=4000)
    assert numpy_count == pytest.approx(math.sqrt(1 / 8), rel=0.05)
    with pytest.raises(TypeError, match=r"^resamples must be an integer >= 2, got True$"):
        metrics.bootstrap_se(values, resamples=True)


@pytest.mark.parametrize("resamples, blocks", [(7, [3, 4]), (10, [3, 3, 4]), (11, [3, 3, 3, 2])])
def test_bootstrap_se_draws_whole_resamples_a_block_at_a_time(monkeypatch, resamples, blocks):
    """Blocks of 3 resamples (a lone last one joins the block before): the SE of the picks of one
    (resamples, N) draw from the same seeded generator, mean by mean, to the last bit."""
    n, seed = 5, 4
    values = torch.tensor([0.5, -1.25, 3.0, 7.5, 2.0], dtype=F64)
    monkeypatch.setattr(metrics, "_PICKS_AT_ONCE", 3 * n)
    drawn = []
    randint = torch.randint

    def recorded(*args, **kwargs):
        drawn.append(args[1][0])
        return randint(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", recorded)
    se = metrics.bootstrap_se(values, seed=seed, resamples=resamples)
    monkeypatch.undo()
    assert drawn == blocks
    picks = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    means = [math.fsum(values[row].tolist()) / n for row in picks]
    assert se == pytest.approx(statistics.stdev(means), rel=1e-13)
    assert se == float(values[picks].mean(1).std())


def test_bootstrap_se_needs_two_resamples():
    """One resample has no spread to measure: refused, not NaN."""
    with pytest.raises(ValueError, match="resamples must be an integer >= 2, got 1"):
        metrics.bootstrap_se([0.0, 1.0], resamples=1)


def test_a_star_import_brings_the_metrics_and_their_constants_only():
    namespace: dict[str, object] = {}
    exec("from physml.metrics import *", namespace)
    imported = set(namespace) - {"__builtins__"}
    metrics_defined_here = {
        name
        for name, value in vars(metrics).items()
        if callable(value) and getattr(value, "__module__", None) == metrics.__name__
        if not name.startswith("_")
    }
    floors = {"VARIANCE_FLOOR", "ROUNDOFF", "SINGULAR_SNAP", "SINGULAR_EXCESS", "SYMMETRY"}
    storage = {"CHOLESKY_JITTERS", "STORAGE_ROUNDOFF", "STORAGE_ASYMMETRY", "STORAGE_EIGENVALUE"}
    assert imported == metrics_defined_here | floors | storage
    assert "crps_gaussian" in imported and "torch" not in imported


# ------------------------------------------------------------------ coverage, PIT, mean ± SE


def calibrated_gaussian(count=20_000, seed=5):
    """``N(μ, σ²)`` predictions with different μ, σ per point and targets drawn from them."""
    generator = np.random.default_rng(seed)
    mean, std = generator.normal(size=count), generator.uniform(0.5, 2.0, size=count)
    target = generator.normal(mean, std)
    return mean, std, target


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_a_calibrated_gaussian_covers_its_level_within_binomial_noise(level):
    mean, std, target = calibrated_gaussian()
    prediction = Gaussian(torch.tensor(mean)[None], torch.tensor(std**2)[None])
    found = float(metrics.coverage(prediction, torch.tensor(target)[None], level))
    low, high = stats.norm.interval(level, mean, std)
    assert found == np.mean((low <= target) & (target <= high))
    assert abs(found - level) <= 4 * math.sqrt(level * (1 - level) / mean.size)


def test_the_pit_of_a_calibrated_gaussian_is_scipys_cdf_and_passes_a_ks_test():
    mean, std, target = calibrated_gaussian()
    values = metrics.pit((torch.tensor(mean), torch.tensor(std**2)), torch.tensor(target))
    np.testing.assert_allclose(values.numpy(), stats.norm.cdf(target, mean, std), atol=1e-12)
    assert stats.kstest(values.numpy(), "uniform").pvalue > 0.01
    narrow = metrics.pit((torch.tensor(mean), torch.tensor(0.25 * std**2)), torch.tensor(target))
    assert stats.kstest(narrow.numpy(), "uniform").pvalue < 1e-6  # too narrow: refused


def test_coverage_and_pit_of_three_points_by_hand():
    # N(0, 1), N(1, 4), N(0, 0) at y = 1, 5, 0: |y − μ| / σ = 1, 2 and (σ = 0) y = μ
    mean, variance = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 4.0, 0.0])
    target = torch.tensor([1.0, 5.0, 0.0])
    z = stats.norm.ppf(0.95)  # 1.645: the 90% interval μ ± 1.645σ holds y = 1 only, and y = μ
    inside = metrics.coverage((mean, variance), target, 0.9, reduction="none")
    assert inside.tolist() == [1.0, 0.0, 1.0] and 1 < z < 2
    assert float(metrics.coverage((mean, variance), target, 0.9)) == pytest.approx(2 / 3)
    pits = metrics.pit(Gaussian(mean, variance), target).tolist()
    assert pits == pytest.approx([stats.norm.cdf(1), stats.norm.cdf(2), 0.5], abs=1e-15)
    # three members 0, 1, 2 of an ensemble (M + 1 = 4 gaps): y = −1, 1 (a tie), 2.5
    members = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    y = torch.tensor([-1.0, 1.0, 2.5])
    assert metrics.pit(Ensemble(members), y).tolist() == [1 / 8, (1 + 0.5 + 0.5) / 4, 7 / 8]
    # 50%: the k/4 quantiles, k = 1…3 → 0, 1, 2; the 0.25 and 0.75 quantiles are 0 and 2
    assert metrics.coverage(Ensemble(members), y, 0.5, "none").tolist() == [0.0, 1.0, 0.0]
    # 20%: the 0.4 and 0.6 quantiles at positions 1.6 and 2.4: 0.6 and 1.4
    assert metrics.coverage(Ensemble(members), torch.tensor([0.59, 0.6, 1.41]), 0.2,
                            "none").tolist() == [0.0, 1.0, 0.0]  # fmt: skip


def test_ensemble_coverage_uses_numpys_weibull_quantiles_and_a_calibrated_ensemble_covers_level():
    generator = np.random.default_rng(8)
    members, target = generator.normal(size=(19, 20_000)), generator.normal(size=20_000)
    for level in (0.3, 0.9):
        low, high = np.quantile(members, [(1 - level) / 2, (1 + level) / 2], 0, method="weibull")
        found = metrics.coverage(Ensemble(torch.tensor(members)), torch.tensor(target), level)
        assert float(found) == np.mean((low <= target) & (target <= high))
    # with 19 members the 90% interval is [min, max], which holds 18 of 20 ranks
    assert abs(float(found) - 0.9) <= 4 * math.sqrt(0.09 / 20_000)
    ranks = (members < target).sum(0)
    pits = metrics.pit(Ensemble(torch.tensor(members)), torch.tensor(target)).numpy()
    np.testing.assert_allclose(pits, (ranks + 0.5) / 20, rtol=0, atol=1e-15)
    assert stats.chisquare(np.bincount(ranks, minlength=20)).pvalue > 0.01


@pytest.mark.parametrize("level", [0, 1, -0.5, 1.5, float("nan"), float("inf")])
def test_coverage_refuses_a_level_outside_zero_one_by_name(level):
    with pytest.raises(ValueError, match="level must be"):
        metrics.coverage((torch.zeros(3), torch.ones(3)), torch.zeros(3), level)


def test_coverage_and_pit_refuse_mismatched_shapes_and_plain_tensors():
    members = Ensemble(rand(4, 3))
    for score in (metrics.coverage, metrics.pit):
        with pytest.raises(ValueError, match="mean and target must have the same shape"):
            score((torch.zeros(3), torch.ones(3)), torch.zeros(4))
        with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
            score(members, torch.zeros(2))
        with pytest.raises(TypeError, match="prediction must be a physml.Gaussian, an Ensemble"):
            score(rand(4, 3), torch.zeros(3))


def test_mean_se_is_s_over_root_n_and_nan_for_one_value():
    # 1, 2, 4: mean 7/3, s² = ((4/3)² + (1/3)² + (5/3)²) / 2 = 7/3, se = √(7/3 / 3) = √7 / 3
    mean, se = metrics.mean_se([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and se == pytest.approx(math.sqrt(7) / 3)
    mean, se = metrics.mean_se(torch.tensor([0.5]))
    assert mean == 0.5 and math.isnan(se)
    assert all(math.isnan(v) for v in metrics.mean_se([1.0, float("nan")]))
    with pytest.raises(ValueError, match="values is empty"):
        metrics.mean_se([])


def test_crps_per_sample_of_an_ensemble_takes_the_fair_form_on_request():
    members, target = rand(3, 2, 4), rand(2, 4, seed=1)
    x, y = members.numpy(), target.numpy()
    skill = np.abs(x - y).mean(0)
    pairs = np.abs(x[:, None] - x[None]).sum((0, 1)) / (3 * 2)  # distinct pairs
    found = metrics.crps_per_sample(Ensemble(members), target, fair=True)
    np.testing.assert_allclose(found.numpy(), (skill - pairs / 2).mean(1), rtol=1e-12)


def test_low_rank_noise_reads_a_float32_z_as_float64():
    cov = LowRankCovariance(torch.full((3,), 4.0, dtype=F64), torch.zeros(3, 1, dtype=F64))
    z = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float32)
    assert torch.equal(metrics.low_rank_noise(cov, z), 2 * z.to(F64))  # sqrt(4) z


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda cov: metrics.low_rank_noise(cov.base, torch.zeros(2, 3)), TypeError, "cov"),
        (lambda cov: metrics.low_rank_noise(cov, torch.zeros(2, 4)), ValueError, "z"),
        (lambda cov: metrics.low_rank_noise(cov, torch.zeros(3)), ValueError, "z"),
        (lambda cov: metrics.low_rank_noise(cov, "z"), TypeError, "z"),
        (lambda cov: metrics.low_rank_noise(cov, torch.zeros(2, 3), eps=-1.0), ValueError, "eps"),
        (lambda cov: metrics.asymmetry_tolerance("tiny"), TypeError, "eps"),
        (lambda cov: metrics.asymmetry_tolerance(0.0), ValueError, "eps"),
        (lambda cov: metrics.rounded_to(0.1, "float32"), TypeError, "dtype"),
        (lambda cov: metrics.rounded_to("0.1", torch.float32), TypeError, "level"),
        (lambda cov: metrics.rounded_to(math.nan, torch.float32), ValueError, "level"),
        (lambda cov: metrics.within("errors", 0.1), TypeError, "values"),
        (lambda cov: metrics.within([1j], 0.1), TypeError, "values"),
    ],
)
def test_the_public_helpers_refuse_bad_arguments_by_name(call, error, names):
    cov = LowRankCovariance(torch.ones(3, dtype=F64), torch.zeros(3, 1, dtype=F64))
    with pytest.raises(error, match=names):
        call(cov)


def test_within_takes_a_list_of_errors():
    assert metrics.within([0.05, 0.2, 0.1], 0.1).tolist() == [True, False, True]


def test_within_refuses_a_level_that_does_not_broadcast_naming_both_shapes():
    with pytest.raises(
        ValueError,
        match=r"^level of shape \(2,\) does not broadcast against values of shape \(3,\)",
    ):
        metrics.within([0.05, 0.2, 0.1], torch.tensor([0.1, 0.2]))
    per_value = metrics.within([0.05, 0.2, 0.1], torch.tensor([0.01, 0.3, 0.1]))
    assert per_value.tolist() == [False, True, True]
    grid = metrics.within(torch.tensor([[0.05, 0.2, 0.1]]), torch.tensor([[0.1], [0.2]]))
    assert grid.tolist() == [[True, False, True], [True, True, True]]


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_crps_in_chunks_is_the_pairwise_ensemble_crps_of_every_point(chunk):
    """Per point, ``mean|x_m − y| − Σ_{m,m'} |x_m − x_m'| / (2 M²)`` (plain) or ``/ (2 M (M−1))``
    (fair), whatever the chunk of items scored at once."""
    gen = torch.Generator().manual_seed(5)
    samples = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    truth = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    x, y = samples.numpy(), truth.numpy()
    skill = np.abs(x - y).mean(0)
    spread = np.abs(x[:, None] - x[None]).sum((0, 1))
    for fair, pairs in ((False, 16), (True, 12)):
        got = metrics.crps_ensemble_in_chunks(samples, truth, fair, chunk)
        np.testing.assert_allclose(got.numpy(), skill - spread / (2 * pairs), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"target must have shape \(7, 3\)"):
        metrics.crps_ensemble_in_chunks(samples, truth[:5], chunk=chunk)
    with pytest.raises(ValueError, match="^chunk must be an integer >= 1"):
        metrics.crps_ensemble_in_chunks(samples, truth, chunk=0)
