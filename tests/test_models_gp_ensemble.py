"""Exact GP and deep-ensemble surrogates: checked against gpytorch's joint posterior, exact
solutions, hand-computed mixture moments, and round trips through files."""

from __future__ import annotations

import copy
import inspect
import json
import math
import pickle
import re

import gpytorch
import numpy as np
import pytest
import torch
from damage import flip_a_bit_of_a_zip_entry
from torch import nn

from pdes.gpme import diffusion_exact
from pdes.grid import Grid1D
from physml import Ensemble, Gaussian, constrain, mass_conservation
from physml.models import DeepEnsemble, ExactGPSurrogate, grid_points, unflatten, with_parameters
from physml.training import CheckpointError, fit_ensemble, load_checkpoint

F64 = torch.float64
TWO_PI = 2 * math.pi


def diffusion_context(T: int = 8, X: int = 8, k: float = 2.0, noise: float = 0.0, seed: int = 0):
    t = torch.linspace(0, 1, T, dtype=F64)
    x = torch.linspace(0, TWO_PI, X, dtype=F64)
    y = diffusion_exact(x, t, k)[0].reshape(-1)
    y = y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return t, x, grid_points(t, x), y


@pytest.fixture(scope="module")
def noisy_gp():
    t, x, cx, cy = diffusion_context(T=6, X=7, noise=0.01)
    return ExactGPSurrogate().fit(cx, cy), cx, cy


# ---------------------------------------------------------------------------------- grids


def test_grid_points_are_t_major_and_unflatten_inverts_them():
    t = torch.tensor([0.0, 0.5, 1.0])
    x = torch.tensor([10.0, 20.0])
    points = grid_points(t, x)
    assert points.shape == (6, 2)
    for i in range(3):
        for j in range(2):
            assert points[i * 2 + j].tolist() == [t[i].item(), x[j].item()]
    values = torch.arange(12.0).reshape(2, 6)
    grid = unflatten(values, 3, 2)
    assert grid.shape == (2, 3, 2)
    assert grid[1, 2, 1] == values[1, 2 * 2 + 1]


def test_with_parameters_puts_parameters_first():
    points = grid_points(torch.tensor([0.0, 1.0]), torch.tensor([3.0]))
    rows = with_parameters(torch.tensor([5.0, 7.0]), points)
    assert rows.shape == (2, 2, 3)
    assert rows[1, 1].tolist() == [7.0, 1.0, 3.0]
    rows = with_parameters(torch.tensor([[5.0, 6.0]]), points)
    assert rows[0, 0].tolist() == [5.0, 6.0, 0.0, 3.0]


def test_unflatten_keeps_every_leading_axis_and_refuses_a_scalar_or_a_bool_size():
    values = torch.arange(36.0).reshape(2, 3, 6)
    grid = unflatten(values, 2, 3)
    assert grid.shape == (2, 3, 2, 3)
    for i in range(2):
        for j in range(3):  # t-major: entry i·X + j is (t[i], x[j])
            assert torch.equal(grid[..., i, j], values[..., i * 3 + j])
    with pytest.raises(TypeError, match=r"values must be a tensor of shape \(..., T\*X\)"):
        unflatten(torch.tensor(5.0), 1, 1)
    for T in (True, 2.0):
        with pytest.raises(ValueError, match=f"T must be an integer >= 1, got {T}"):
            unflatten(torch.zeros(6), T, 6 // int(T))
    with pytest.raises(ValueError, match="X must be an integer >= 1, got 0"):
        unflatten(torch.zeros(2, 0), 3, 0)  # an empty grid, though T·X = 0 entries match


def test_with_parameters_keeps_float32_points_and_reads_other_points_as_float64():
    points32 = torch.tensor([[0.0, 1.0], [0.5, 2.0]], dtype=torch.float32)
    rows = with_parameters(torch.tensor([3.0, 4.0], dtype=F64), points32)
    assert rows.dtype == torch.float32
    assert rows[1].tolist() == [[4.0, 0.0, 1.0], [4.0, 0.5, 2.0]]
    assert with_parameters([0.1], points32.double()).dtype == F64
    for points in ([[0.1, 0.2]], torch.tensor([[0, 1]])):  # a list, integer points
        assert with_parameters([0.1], points).dtype == F64
    assert with_parameters([0.1], [[0.1, 0.2]])[0, 0, 0].item() == 0.1  # not rounded to float32
    with pytest.raises(ValueError, match=r"params must have shape \(B,\) or \(B, p\)"):
        with_parameters(torch.zeros(2, 1, 1), points32)


def test_grid_points_refuse_an_empty_x_and_read_lists_as_float64():
    with pytest.raises(ValueError, match="t and x must be non-empty, got 2 times and 0 x"):
        grid_points(torch.zeros(2), torch.zeros(0))
    points = grid_points([0.1, 0.2], [0.3])
    assert points.dtype == F64 and points[1].tolist() == [0.2, 0.3]
    for dtype in (torch.float32, F64):  # a floating t keeps its dtype, x follows it
        points = grid_points(torch.tensor([0.1], dtype=dtype), torch.tensor([0.3]))
        assert points.dtype == dtype and points[0, 0] == torch.tensor(0.1, dtype=dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grid_points_and_with_parameters_follow_the_device_of_t_and_points():
    points = grid_points(torch.tensor([0.0, 1.0], device="cuda"), [0.5])  # x given on the CPU
    assert points.device.type == "cuda"
    assert with_parameters(torch.tensor([1.0, 2.0]), points).device.type == "cuda"


def test_pad_circularly_refuses_a_non_bool_leaves_the_model_when_off_and_wraps_one_sided_pads():
    from physml.models.common import pad_circularly

    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=(0, 1)))
    with pytest.raises(TypeError, match="periodic must be True or False, got 1"):
        pad_circularly(model, 1)
    assert pad_circularly(model, False) is False
    assert [c.padding_mode for c in model] == ["zeros", "zeros"]
    assert pad_circularly(model, True) is True
    assert [c.padding_mode for c in model] == ["circular", "circular"]


def test_models_common_keeps_the_documented_names_of_their_homes():
    """``grid_points`` and ``progress_bar`` are documented on ``physml.models.common``'s reference
    page: the same functions as at their homes."""
    import physml.models.common as common
    from physml._progress import progress_bar
    from physml.data.points import grid_points as home

    assert common.grid_points is home and common.progress_bar is progress_bar
    assert {"grid_points", "progress_bar"} <= set(common.__all__)


def test_progress_bar_shows_its_description_and_total_only_when_enabled(monkeypatch):
    import io
    import sys

    from physml.models.common import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    shown = progress_bar(range(3), True, "fitting", total=7)
    assert not shown.disable and shown.total == 7 and list(shown) == [0, 1, 2]
    shown.close()
    assert "fitting" in sys.stderr.getvalue() and "/7" in sys.stderr.getvalue()
    assert progress_bar(range(3), False, "fitting").disable


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: grid_points(torch.zeros(2, 2), torch.zeros(3)), ValueError),
        (lambda: grid_points(torch.zeros(2), torch.tensor([0.0, math.nan])), ValueError),
        (lambda: grid_points(torch.zeros(0), torch.zeros(3)), ValueError),
        (lambda: grid_points("abc", torch.zeros(3)), TypeError),
        (lambda: unflatten(torch.zeros(2, 5), 2, 3), ValueError),
        (lambda: unflatten(torch.zeros(6), 0, 6), ValueError),
        (lambda: with_parameters(torch.zeros(2), torch.zeros(4, 3)), ValueError),
    ],
)
def test_grid_helpers_reject_bad_input(call, error):
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------------------------- GP


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_gp_mean_interpolates_noise_free_data_and_tracks_the_exact_solution(optimizer):
    t, x, cx, cy = diffusion_context()
    gp = ExactGPSurrogate(optimizer=optimizer).fit(cx, cy)
    at_context = gp.predict(t, x, covariance="diagonal")
    assert (at_context.mean.reshape(-1) - cy).abs().max() < 2e-3
    tf = torch.linspace(0, 1, 15, dtype=F64)
    xf = torch.linspace(0, TWO_PI, 17, dtype=F64)
    between = gp.predict(tf, xf, covariance="diagonal").mean
    assert (between - diffusion_exact(xf, tf, 2.0)[0]).abs().max() < 2e-2
    assert gp.noise_ < 1e-4
    assert gp.lengthscale_.shape == (2,)


def _gpytorch_joint_posterior(gp: ExactGPSurrogate, cx, cy, points):
    """A fresh gpytorch GP on the raw data with the surrogate's reported hyperparameters."""

    class Plain(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=2)
            )

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(z), self.covar_module(z)
            )

    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(1e-12)
    )
    model = Plain(cx, cy, likelihood).to(F64)
    model.covar_module.base_kernel.lengthscale = gp.lengthscale_
    model.covar_module.outputscale = gp.outputscale_
    likelihood.noise = gp.noise_
    model.mean_module.constant = torch.tensor(gp.mean_, dtype=F64)
    model.train()
    likelihood.train()
    with torch.no_grad():
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        log_ml = float(mll(model(cx), cy)) * cx.shape[0]
    model.eval()
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        joint = model(points)
        return joint.mean, joint.covariance_matrix, log_ml


def test_gp_time_slice_blocks_equal_gpytorch_joint_posterior(noisy_gp):
    gp, cx, cy = noisy_gp
    t = torch.linspace(0, 1.2, 5, dtype=F64)
    x = torch.linspace(-0.5, TWO_PI, 9, dtype=F64)
    T, X = 5, 9
    mean, joint, log_ml = _gpytorch_joint_posterior(gp, cx, cy, grid_points(t, x))
    blocks = torch.stack([joint[i * X : (i + 1) * X, i * X : (i + 1) * X] for i in range(T)])

    prediction = gp.predict(t, x)
    assert prediction.cov.shape == (T, X, X)
    scale = blocks.abs().max()
    assert (prediction.cov - blocks).abs().max() < 1e-6 * scale
    assert (prediction.mean - mean.reshape(T, X)).abs().max() < 1e-7
    assert gp.log_marginal_likelihood_ == pytest.approx(log_ml, rel=1e-8, abs=1e-8)

    diagonal = gp.predict(t, x, covariance="diagonal")
    assert torch.allclose(diagonal.cov, torch.diagonal(blocks, dim1=-2, dim2=-1), rtol=1e-6)
    assert torch.allclose(diagonal.mean, prediction.mean)
    points = gp.predict_points(grid_points(t, x))
    assert torch.allclose(points.cov, torch.diagonal(joint), rtol=1e-6, atol=1e-6 * scale)
    noisy = gp.predict(t, x, observation_noise=True)
    assert torch.allclose(
        torch.diagonal(noisy.cov - prediction.cov, dim1=-2, dim2=-1),
        torch.full((T, X), gp.noise_, dtype=F64),
    )


def test_gp_time_slice_blocks_are_symmetric_psd(noisy_gp):
    gp, _, _ = noisy_gp
    cov = gp.predict(torch.linspace(0, 1, 4), torch.linspace(0, TWO_PI, 30)).cov
    assert torch.equal(cov, cov.transpose(-1, -2))
    eigenvalues = torch.linalg.eigvalsh(cov)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()


def test_a_failed_refit_leaves_the_gp_unfitted_not_half_updated(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 2, generator=g, dtype=torch.float64)
    gp = ExactGPSurrogate(iterations=5).fit(x, torch.sin(6 * x[:, 1]))
    t, points = torch.linspace(0, 1, 3, dtype=torch.float64), torch.linspace(0, 1, 4)
    before = gp.predict(t, points, covariance="diagonal").mean
    with pytest.raises(ValueError, match="context_y must have shape"):  # refused before any work
        gp.fit(x, torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(gp.predict(t, points, covariance="diagonal").mean, before)

    def no_factor(ys):
        raise ValueError("the fitted kernel matrix on context_x is not positive definite")

    monkeypatch.setattr(gp, "_factorise", no_factor)  # a refit failing at its last stage
    with pytest.raises(ValueError, match="not positive definite"):
        gp.fit(x + 100, torch.cos(6 * x[:, 1]) + 100)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        gp.predict(t, points, covariance="diagonal")


def test_gp_variance_shrinks_near_context_points():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    x = torch.linspace(0, TWO_PI, 6, dtype=F64)
    cx = grid_points(t, x)
    cy = diffusion_exact(x, t, 1.0)[0].reshape(-1)
    gp = ExactGPSurrogate().fit(cx, cy)
    fine = torch.linspace(0, TWO_PI, 51, dtype=F64)  # contains x's nodes at every 10th point
    variance = gp.predict(t[1:2], fine, covariance="diagonal").cov[0]
    at_nodes = variance[::10]
    midpoints = variance[5::10]
    # conditioning on y_i alone already brings var u(z_i) below the noise variance
    assert (at_nodes <= gp.noise_).all()
    assert (at_nodes[:-1] < midpoints).all() and (at_nodes[1:] < midpoints).all()
    far = gp.predict(torch.tensor([30.0]), fine, covariance="diagonal").cov[0]
    assert torch.allclose(far, torch.full_like(far, gp.outputscale_), rtol=1e-6)


def test_gp_fit_is_reproducible_and_fit_predict_batches_functions():
    _, _, cx, cy1 = diffusion_context(T=5, X=6, k=1.0)
    _, _, _, cy2 = diffusion_context(T=5, X=6, k=4.0)
    t = torch.linspace(0, 1, 3)
    x = torch.linspace(0, TWO_PI, 4)
    gp = ExactGPSurrogate(iterations=30)
    batch = gp.fit_predict(torch.stack([cx, cx]), torch.stack([cy1, cy2]), t, x)
    assert batch.mean.shape == (2, 3, 4) and batch.cov.shape == (2, 3, 4, 4)
    assert gp.batch_hyperparameters_["lengthscale"].shape == (2, 2)
    for b, cy in enumerate((cy1, cy2)):
        single = ExactGPSurrogate(iterations=30).fit(cx, cy).predict(t, x)
        assert torch.equal(single.mean, batch.mean[b])
        assert torch.equal(single.cov, batch.cov[b])
    diagonal = gp.fit_predict(cx[None], cy1[None], t, x, covariance="diagonal")
    assert diagonal.cov.shape == (1, 3, 4)


def _all_float64_on_the_cpu(hyper: dict[str, torch.Tensor]) -> bool:
    return all(v.dtype == F64 and v.device.type == "cpu" for v in hyper.values())


def test_gp_hyperparameters_are_float64_tensors_on_the_cpu():
    """The documented kind: float64 on the CPU for every entry (``lengthscale`` was on the
    fitting device, the others on the CPU), also stacked by ``fit_predict``; float32 context
    points are read as float64."""
    _, _, cx, cy = diffusion_context(T=4, X=5)
    gp = ExactGPSurrogate(iterations=5).fit(cx.float(), cy.float())
    hyper = gp.hyperparameters()
    assert set(hyper) == {"lengthscale", "outputscale", "noise", "mean"}
    assert _all_float64_on_the_cpu(hyper) and hyper["lengthscale"].shape == (2,)
    gp.fit_predict(cx[None], cy[None], torch.tensor([0.5]), torch.tensor([1.0]))
    assert _all_float64_on_the_cpu(gp.batch_hyperparameters_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gp_hyperparameters_of_a_fit_on_the_gpu_are_on_the_cpu():
    _, _, cx, cy = diffusion_context(T=4, X=5)
    gp = ExactGPSurrogate(iterations=5).fit(cx.cuda(), cy.cuda())
    assert _all_float64_on_the_cpu(gp.hyperparameters())


def test_gp_prediction_feeds_probconserv_to_exact_conservation(noisy_gp):
    gp, _, _ = noisy_gp
    grid = Grid1D(20, 0.0, TWO_PI)
    t = torch.linspace(0, 1, 4, dtype=F64)
    prediction = gp.predict(t, grid.coordinates())
    constraint = mass_conservation(grid, torch.zeros(4, dtype=F64))
    updated = constrain(nn.Identity(), constraint)(prediction)
    assert (updated.mean @ grid.weights()).abs().max() < 1e-10


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda gp, cx, cy: gp.fit(cx[:, :1], cy), ValueError, "(Nc, 2)"),
        (lambda gp, cx, cy: gp.fit(cx, cy[:-1]), ValueError, "context_y"),
        (lambda gp, cx, cy: gp.fit(cx, cy[:, None]), ValueError, "context_y"),
        (lambda gp, cx, cy: gp.fit(cx, torch.full_like(cy, math.nan)), ValueError, "NaN"),
        (lambda gp, cx, cy: gp.fit(cx.clone().fill_(math.inf), cy), ValueError, "NaN"),
        (lambda gp, cx, cy: gp.fit(cx[:1], cy[:1]), ValueError, "at least 2"),
        (lambda gp, cx, cy: gp.fit("points", cy), TypeError, "context_x"),
        (lambda gp, cx, cy: gp.predict(cx[:3, 0], cx[:3, 1]), RuntimeError, "fit"),
        (lambda gp, cx, cy: gp.predict_points(cx), RuntimeError, "fit"),
        (lambda gp, cx, cy: gp.fit_predict(cx, cy, cx[:, 0], cx[:, 1]), ValueError, "(B, Nc, 2)"),
        (
            lambda gp, cx, cy: gp.fit_predict(cx[None], cy[None, :-1], cx[:, 0], cx[:, 1]),
            ValueError,
            "context_y",
        ),
    ],
)
def test_gp_rejects_bad_input(call, error, words):
    _, _, cx, cy = diffusion_context(T=3, X=3)
    with pytest.raises(error, match=f".*{_escaped(words)}"):
        call(ExactGPSurrogate(iterations=2), cx, cy)


@pytest.mark.parametrize(
    "call",
    [
        lambda gp: gp.predict(torch.zeros(2, 2), torch.zeros(3)),
        lambda gp: gp.predict(torch.zeros(2), torch.tensor([math.nan])),
        lambda gp: gp.predict(torch.zeros(2), torch.zeros(3), covariance="full"),
        lambda gp: gp.predict_points(torch.zeros(4, 3)),
    ],
)
def test_gp_rejects_bad_prediction_requests(noisy_gp, call):
    with pytest.raises(ValueError):
        call(noisy_gp[0])


@pytest.mark.parametrize(
    "settings",
    [{"optimizer": "sgd"}, {"iterations": -1}, {"lr": 0.0}, {"noise_floor": math.nan}],
)
def test_gp_rejects_bad_settings(settings):
    with pytest.raises(ValueError, match=next(iter(settings))):
        ExactGPSurrogate(**settings)


def _escaped(text: str) -> str:
    return "".join("\\" + c if c in "()[].*+?" else c for c in text)


# ---------------------------------------------------------------------------------- ensemble


def sine_data(n: int = 256):
    x = torch.linspace(-1, 1, n)[:, None]
    return x, torch.sin(3 * x[:, 0])


def tiny(members: int = 3, in_features: int = 1) -> DeepEnsemble:
    return DeepEnsemble(in_features, members=members, width=32, depth=2)


@pytest.fixture(scope="module")
def fitted_ensemble():
    x, y = sine_data()
    return fit_ensemble(tiny(), x, y, epochs=600, lr=5e-3, seed=0)  # 1e-2: unstable likelihood


def test_ensemble_fits_a_smooth_function(fitted_ensemble):
    x, y = sine_data()
    prediction = fitted_ensemble.predict(x)
    assert isinstance(prediction, Gaussian) and prediction.is_diagonal
    assert (prediction.mean - y).pow(2).mean().sqrt() < 0.05
    assert fitted_ensemble.loss_curve_[-1] < fitted_ensemble.loss_curve_[0] - 2


def test_ensemble_refuses_an_empty_input_by_name(fitted_ensemble):
    empty = torch.zeros(0, 1)
    for call in (
        lambda: fitted_ensemble.predict(empty),
        lambda: fitted_ensemble.predict(empty, kind="ensemble"),
        lambda: fitted_ensemble.sample(empty, 2),
    ):
        with pytest.raises(ValueError, match=r"inputs must hold at least one point, got shape"):
            call()


def test_ensemble_refuses_inputs_without_a_feature_axis(fitted_ensemble):
    with pytest.raises(ValueError, match=r"^inputs must have shape \(\.\.\., 1\), got \(\)"):
        fitted_ensemble.predict(torch.tensor(0.5))  # a scalar: no last axis to check
    with pytest.raises(ValueError, match="with a point axis"):
        fitted_ensemble.predict(torch.tensor([0.5]))


def test_mixture_moments_match_a_hand_computation(fitted_ensemble):
    x = torch.tensor([[-0.9], [0.1], [2.5]])
    means, variances = fitted_ensemble.member_outputs(x)
    mixture = fitted_ensemble.predict(x)
    M = fitted_ensemble.members
    for i in range(x.shape[0]):
        mu = [means[m, i].item() for m in range(M)]
        var = [variances[m, i].item() for m in range(M)]
        mean = sum(mu) / M
        second_moment = sum(v + u * u for u, v in zip(mu, var, strict=True)) / M
        assert mixture.mean[i].item() == pytest.approx(mean, rel=1e-5)
        assert mixture.cov[i].item() == pytest.approx(second_moment - mean**2, rel=1e-4)
    members = fitted_ensemble.predict(x, kind="ensemble")
    assert isinstance(members, Ensemble) and torch.equal(members.samples, means)


def test_members_differ_and_keep_their_own_seed(fitted_ensemble):
    x, _ = sine_data(32)
    means, _ = fitted_ensemble.member_outputs(torch.tensor([[3.0]]))
    assert torch.unique(means).numel() == fitted_ensemble.members
    first = fitted_ensemble.layers[0].weight
    for m in range(1, fitted_ensemble.members):
        assert not torch.allclose(first[0], first[m])
    larger = DeepEnsemble(1, members=4, width=32, depth=2)
    larger.reset(seed=0)
    fresh = tiny()
    fresh.reset(seed=0)
    assert torch.equal(larger.layers[0].weight[:3], fresh.layers[0].weight)


def test_ensemble_training_is_deterministic_by_seed():
    x, y = sine_data(64)
    a = fit_ensemble(tiny(), x, y, epochs=3, batch_size=16, seed=5)
    b = fit_ensemble(tiny(), x, y, epochs=3, batch_size=16, seed=5)
    c = fit_ensemble(tiny(), x, y, epochs=3, batch_size=16, seed=6)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_samples_follow_the_mixture(fitted_ensemble):
    x = torch.tensor([[0.3], [2.0]])
    draws = fitted_ensemble.sample(x, 20000, seed=1)
    assert draws.samples.shape == (20000, 2)
    mixture = fitted_ensemble.predict(x)
    sd = mixture.cov.sqrt()
    assert ((draws.mean() - mixture.mean).abs() < 5 * sd / math.sqrt(20000)).all()
    assert torch.allclose(draws.samples.var(0), mixture.cov, rtol=0.1)
    again = fitted_ensemble.sample(x, 20000, seed=1).samples
    assert torch.equal(again, draws.samples)
    assert not torch.equal(fitted_ensemble.sample(x, 20000, seed=2).samples, again)


def test_checkpoint_round_trip_is_exact_and_atomic(fitted_ensemble, tmp_path):
    path = tmp_path / "ensemble.pt"
    fitted_ensemble.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["ensemble.pt"]
    loaded = DeepEnsemble.load(path)
    x = torch.linspace(-2, 2, 9)[:, None]
    before, after = fitted_ensemble.predict(x), loaded.predict(x)
    assert torch.equal(before.mean, after.mean) and torch.equal(before.cov, after.cov)


def test_a_float64_ensemble_loads_as_float64_and_its_round_trip_is_exact(tmp_path):
    x, y = sine_data(32)
    ensemble = fit_ensemble(tiny().double(), x.double(), y.double(), epochs=3, seed=0)
    weight = ensemble.layers[0].weight
    assert weight.dtype == torch.float64
    assert not torch.equal(weight, weight.float().double())  # float32 would round these
    ensemble.save(tmp_path / "ensemble.pt")
    loaded = DeepEnsemble.load(tmp_path / "ensemble.pt")
    saved = ensemble.state_dict()
    assert saved.keys() == loaded.state_dict().keys()
    for name, value in loaded.state_dict().items():
        assert value.dtype == saved[name].dtype and torch.equal(value, saved[name]), name
    points = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    before, after = ensemble.predict(points), loaded.predict(points)
    assert after.mean.dtype == torch.float64
    assert torch.equal(before.mean, after.mean) and torch.equal(before.cov, after.cov)


def test_an_ensemble_file_that_records_no_dtype_loads_as_float32(tmp_path):
    """Files written before the dtype was recorded load as they always did: as float32."""
    from physml.training.checkpoint import save_torch_file

    ensemble = tiny().double()
    state = ensemble.state_dict()
    save_torch_file(tmp_path / "old.pt", {"config": dict(ensemble.config), "state": state})
    loaded = DeepEnsemble.load(tmp_path / "old.pt").state_dict()
    for name, value in state.items():
        expected = value.float() if value.is_floating_point() else value
        assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected), name


@pytest.mark.parametrize("dtype", ["int64", "complex128", "Tensor", "no_such_dtype", 64])
def test_an_ensemble_file_with_a_dtype_that_is_not_floating_point_is_refused(tmp_path, dtype):
    from physml.training.checkpoint import save_torch_file

    ensemble = tiny()
    path = tmp_path / "odd.pt"
    content = {"config": dict(ensemble.config), "state": ensemble.state_dict(), "dtype": dtype}
    save_torch_file(path, content)
    with pytest.raises(ValueError) as refused:
        DeepEnsemble.load(path)
    assert str(refused.value) == (
        f"{path} is not a DeepEnsemble checkpoint: its dtype must name a floating-point torch "
        f"dtype (e.g. 'float64'), got {dtype!r}"
    )


def test_a_saved_ensemble_with_a_flipped_bit_is_refused_naming_the_file(tmp_path):
    """torch.load checks no CRC-32: the flipped bit would load as another weight."""
    ensemble = tiny()
    for name in ("intact.pt", "damaged.pt"):
        ensemble.save(tmp_path / name)
    damaged = tmp_path / "damaged.pt"
    entry = flip_a_bit_of_a_zip_entry(damaged)
    with pytest.raises(CheckpointError) as refused:
        DeepEnsemble.load(damaged)
    assert str(refused.value) == (
        f"path: {str(damaged)!r} cannot be read as a DeepEnsemble checkpoint: it is damaged (its "
        f"entry {entry.split('/', 1)[1]!r} fails its CRC-32 check: a bit changed on disk or in a "
        "copy); restore "
        "an intact copy, or save the ensemble again (DeepEnsemble.save)"
    )
    loaded = DeepEnsemble.load(tmp_path / "intact.pt").state_dict()
    for name, value in ensemble.state_dict().items():
        assert torch.equal(loaded[name], value), name


class Crash(Exception):
    pass


def test_training_resumes_bitwise_after_a_crash(tmp_path, monkeypatch):
    x, y = sine_data(64)
    straight = fit_ensemble(tiny(), x, y, epochs=4, batch_size=16, seed=2)
    run = tmp_path / "run"
    calls = {"n": 0}
    nll = DeepEnsemble.nll

    def crashing(self, inputs, targets):
        calls["n"] += 1
        if calls["n"] > 9:  # in the third epoch of 4 steps, after the checkpoint of the second
            raise Crash
        return nll(self, inputs, targets)

    monkeypatch.setattr(DeepEnsemble, "nll", crashing)
    with pytest.raises(Crash):
        fit_ensemble(tiny(), x, y, epochs=4, batch_size=16, seed=2, out=run, checkpoint_every=2)
    monkeypatch.undo()
    assert load_checkpoint(run)["step"] == 8
    resumed = fit_ensemble(tiny(), x, y, epochs=4, batch_size=16, seed=2, out=run)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert resumed.loss_curve_ == straight.loss_curve_ and len(resumed.loss_curve_) == 4
    with pytest.raises(CheckpointError, match="lr"):
        fit_ensemble(tiny(), x, y, epochs=4, batch_size=16, lr=0.1, seed=2, out=run)
    with pytest.raises(CheckpointError, match="other data"):
        fit_ensemble(tiny(), x, 2 * y, epochs=4, batch_size=16, seed=2, out=run)
    with pytest.raises(CheckpointError, match="another model"):
        wider = DeepEnsemble(1, members=3, width=48, depth=2)
        fit_ensemble(wider, x, y, epochs=4, batch_size=16, seed=2, out=run)
    with pytest.raises(CheckpointError, match="beyond the 12 steps"):
        fit_ensemble(tiny(), x, y, epochs=3, batch_size=16, seed=2, out=run)


def test_refusals_to_resume_name_the_python_argument_not_the_cli_flag(tmp_path):
    x, y = sine_data(32)
    run = tmp_path / "run"
    fit_ensemble(tiny(), x, y, epochs=1, batch_size=16, seed=2, out=run)
    refusals = [
        ("other data", dict(targets=2 * y)),
        ("another model", dict(ensemble=DeepEnsemble(1, members=3, width=48, depth=2))),
        ("other settings", dict(lr=0.1)),
    ]
    for reason, change in refusals:
        arguments = {"ensemble": tiny(), "inputs": x, "targets": y, "batch_size": 16, "seed": 2}
        with pytest.raises(CheckpointError, match=reason) as refusal:
            fit_ensemble(**{**arguments, **change, "epochs": 1, "out": run})
        assert "another out= folder" in str(refusal.value) and "--out" not in str(refusal.value)


def test_each_member_sees_every_row_once_an_epoch_in_its_own_order():
    from physml.training import MemberRows

    x = torch.arange(10.0)[:, None]
    rows = MemberRows(x, x[:, 0], members=3, seed=4)
    items = torch.stack([rows[i][0][:, 0] for i in range(10)], dim=1)  # (member, item)
    for member in items:
        assert sorted(member.tolist()) == list(range(10))
    assert not torch.equal(items[0], items[1]) and not torch.equal(items[1], items[2])
    assert torch.equal(MemberRows(x, x[:, 0], members=3, seed=4).order, rows.order)


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_loading_refuses_untrusted_or_broken_files(fitted_ensemble, tmp_path):
    pickled = tmp_path / "pickled.pt"
    content = {"config": dict(fitted_ensemble.config), "state": fitted_ensemble.state_dict()}
    torch.save({**content, "extra": _Payload()}, pickled, pickle_module=pickle)
    with pytest.raises(ValueError, match="holds Python objects besides tensors"):
        DeepEnsemble.load(pickled)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a DeepEnsemble checkpoint .not a zip archive"):
        DeepEnsemble.load(broken)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="config"):
        DeepEnsemble.load(other)
    with pytest.raises(FileNotFoundError):
        DeepEnsemble.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (F64, 1e-10)])
def test_constrained_ensemble_conserves_mass_on_a_grid(fitted_ensemble, dtype, atol):
    grid = Grid1D(11, -1.0, 1.0)
    inputs = grid.coordinates(dtype=dtype)[None, :, None].expand(3, 11, 1)
    ensemble = copy.deepcopy(fitted_ensemble).to(dtype)
    model = constrain(ensemble, mass_conservation(grid, torch.ones(3, dtype=F64)))
    with torch.no_grad():
        output = model(inputs)
    assert output.mean.shape == (3, 11) and output.mean.dtype == dtype  # the model's dtype kept
    mass = output.mean.to(F64) @ grid.weights(dtype=F64)
    assert torch.allclose(mass, torch.ones(3, dtype=F64), atol=atol, rtol=0)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m, x, y: fit_ensemble(m, x.expand(-1, 2), y), ValueError, "(N, 1)"),
        (lambda m, x, y: fit_ensemble(m, x, y[:-1]), ValueError, "targets"),
        (lambda m, x, y: fit_ensemble(m, x, torch.full_like(y, math.nan)), ValueError, "NaN"),
        (lambda m, x, y: fit_ensemble(m, x, y, epochs=0), ValueError, "epochs"),
        (lambda m, x, y: fit_ensemble(m, x, y, batch_size=0), ValueError, "batch_size"),
        (lambda m, x, y: fit_ensemble(m, x, y, lr=-1.0), ValueError, "lr"),
        (lambda m, x, y: fit_ensemble(m, x, y, seed=1.5), TypeError, "seed"),
        (lambda m, x, y: m.predict(x), RuntimeError, "fit"),
        (lambda m, x, y: DeepEnsemble(1, members=1), ValueError, "members"),
        (lambda m, x, y: DeepEnsemble(0), ValueError, "in_features"),
    ],
)
def test_ensemble_rejects_bad_input(call, error, words):
    x, y = sine_data(8)
    with pytest.raises(error, match=f".*{_escaped(words)}"):
        call(tiny(), x, y)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.predict(torch.zeros(4, 2)),
        lambda m: m.predict(torch.zeros(1)),
        lambda m: m.predict(torch.tensor([[math.inf]])),
        lambda m: m.predict(torch.zeros(4, 1), kind="samples"),
        lambda m: m.sample(torch.zeros(4, 1), 0),
    ],
)
def test_ensemble_rejects_bad_prediction_requests(fitted_ensemble, call):
    with pytest.raises(ValueError):
        call(fitted_ensemble)


def test_gp_fit_that_meets_an_indefinite_kernel_says_how_to_fix_it(monkeypatch):
    """gpytorch's NotPSDError (seen on a PME m = 1 context set with a 1e-6 noise floor) becomes a
    ValueError that names the setting to change."""
    from linear_operator.utils.errors import NotPSDError

    def indefinite(*args, **kwargs):
        raise NotPSDError("Matrix not positive definite after repeatedly adding jitter")

    monkeypatch.setattr(ExactGPSurrogate, "_optimise", indefinite)
    x = torch.rand(12, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"raise noise_floor \(now 1e-06\)"):
        ExactGPSurrogate(noise_floor=1e-6).fit(x, torch.sin(x.sum(1)))


def test_an_ensemble_resumed_on_other_targets_is_refused(tmp_path):
    """Every row counts: the Trainer's fingerprint hashes a few items, so targets changed
    elsewhere would resume the old fit silently."""
    from physml.training import CheckpointError, fit_ensemble

    x = torch.linspace(0, 1, 64, dtype=torch.float64)[:, None]
    y = torch.sin(3 * x[:, 0])
    options = dict(epochs=2, batch_size=16, out=tmp_path)
    fit_ensemble(tiny(members=2), x, y, **options)
    shifted = y.clone()
    shifted[5:59] += 10.0  # the rows in the middle only
    with pytest.raises(CheckpointError, match="rows_sha256"):
        fit_ensemble(tiny(members=2), x, shifted, **options)


def test_ensemble_nll_is_the_gaussian_nll_of_each_member():
    """The loss against torch.distributions: each member's mean Gaussian NLL of the standardised
    targets (without the constant log √(2π)), summed over members."""
    torch.manual_seed(0)
    model = DeepEnsemble(1, members=3, width=8, depth=1)
    x, y = torch.randn(3, 20, 1), torch.randn(3, 20)
    model.standardise(x[0], y[0])
    xs = (x - model.input_shift) / model.input_scale
    ys = (y - model.target_shift) / model.target_scale
    mean, var = model._heads(xs)
    log_density = torch.distributions.Normal(mean, var.sqrt()).log_prob(ys)
    expected = -(log_density + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(model.nll(x, y), expected.mean(1).sum())


# ---------------------------------------------------------------- hand-built and exact checks


def hand_built(members: int = 3, shift: float = 0.0, scale: float = 1.0, log_var: float = -30.0):
    """Member ``m`` answers mean ``10 m`` and log-variance ``log_var`` everywhere (standardised
    units): the last layer's weights are zero, so its bias is the answer."""
    model = DeepEnsemble(1, members=members, width=4, depth=1, min_variance=1e-6)
    with torch.no_grad():
        model.layers[-1].weight.zero_()
        for m in range(members):
            model.layers[-1].bias[m, 0] = torch.tensor([10.0 * m, log_var])
        model.target_shift.fill_(shift)
        model.target_scale.fill_(scale)
        model.fitted.fill_(True)
    return model


def test_member_outputs_and_mixture_of_a_hand_built_ensemble():
    """Means ``shift + scale · 10 m``, variances ``scale² (e^log_var + min_variance)``; the
    mixture's variance is the mean variance plus the (population) variance of the means."""
    shift, scale = 1.5, 2.0
    model = hand_built(shift=shift, scale=scale)
    x = torch.tensor([[-1.0], [0.0], [4.0]])
    means, variances = model.member_outputs(x)
    member_variance = scale**2 * (math.exp(-30.0) + 1e-6)
    for m in range(3):
        assert means[m].tolist() == pytest.approx([shift + scale * 10 * m] * 3, rel=1e-6)
        assert variances[m].tolist() == pytest.approx([member_variance] * 3, rel=1e-5)
    mixture = model.predict(x)
    spread = scale**2 * (0 + 100 + 400) / 3 - (scale * 10) ** 2  # E[(10 s m)²] − (10 s)², m ∈ 0..2
    assert mixture.mean.tolist() == pytest.approx([shift + scale * 10] * 3, rel=1e-6)
    assert mixture.cov.tolist() == pytest.approx([member_variance + spread] * 3, rel=1e-5)


def test_samples_pick_every_member_alike_and_draw_its_gaussian():
    model = hand_built(members=4, log_var=math.log(0.25))  # member sd 0.5 (floor 1e-6 aside)
    draws = model.sample(torch.tensor([[0.0]]), 40000, seed=3).samples[:, 0]
    member = torch.round(draws / 10).clamp(0, 3).long()
    counts = torch.bincount(member, minlength=4).double() / 40000
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=F64), atol=0.015)
    residual = draws - 10 * member
    assert residual.std().item() == pytest.approx(math.sqrt(0.25 + 1e-6), rel=0.03)


def test_seeds_give_members_of_their_own():
    """Member ``m`` of seed ``s`` is drawn from ``(s, m)``: no member of seed 0 reappears under
    seed 1, and a seed gives the same weights again."""
    a, b = tiny(members=3), tiny(members=3)
    a.reset(seed=0)
    b.reset(seed=1)
    for m in range(3):
        for k in range(3):
            assert not torch.equal(a.layers[0].weight[m], b.layers[0].weight[k])
            if k != m:
                assert not torch.equal(a.layers[1].weight[m], a.layers[1].weight[k])
    b.reset(seed=0)
    larger = tiny(members=4)
    larger.reset(seed=0)  # a member's weights do not depend on how many members there are
    for layer, again, more in zip(a.layers, b.layers, larger.layers, strict=True):
        assert torch.equal(layer.weight, again.weight) and torch.equal(layer.bias, again.bias)
        assert torch.equal(layer.weight, more.weight[:3]) and torch.equal(layer.bias, more.bias[:3])


def test_an_ensemble_moved_to_float64_reads_inputs_and_statistics_in_float64():
    """After ``.double()`` inputs and training statistics were rounded to float32 first: inputs
    1e-9 apart gave bitwise the same prediction. Now the statistics are the float64 means and
    a 1e-9 step moves the mean by the derivative times 1e-9; a float32 model stays float32."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(50, 2, generator=generator, dtype=F64)
    y = torch.rand(50, generator=generator, dtype=F64)
    model = tiny(in_features=2).double()
    model.standardise(x, y)
    assert torch.equal(model.input_shift, x.mean(0)) and torch.equal(model.target_shift, y.mean())
    a = torch.tensor([[0.3, 0.7]], dtype=F64, requires_grad=True)
    (slope,) = torch.autograd.grad(model(a).mean.sum(), a)
    step = torch.tensor([[1e-9, 0.0]], dtype=F64)
    moved = model.predict(a.detach() + step).mean - model.predict(a.detach()).mean
    assert moved.dtype == F64
    assert float(moved) == pytest.approx(1e-9 * float(slope[0, 0]), rel=1e-4)
    narrow = tiny(in_features=2)
    narrow.standardise(x, y)
    assert narrow.input_shift.dtype == torch.float32
    assert narrow.predict(a.detach()).mean.dtype == torch.float32


def test_layer_sizes_follow_width_and_depth():
    model = DeepEnsemble(3, members=2, width=5, depth=2)
    shapes = [tuple(layer.weight.shape) for layer in model.layers]
    assert shapes == [(2, 3, 5), (2, 5, 5), (2, 5, 2)]
    wide = DeepEnsemble(3, members=2, width=64, depth=1)
    bound = 1 / math.sqrt(3)  # uniform in ±1/√fan_in, biases too, as nn.Linear
    for values in (wide.layers[0].weight, wide.layers[0].bias):
        assert bound >= values.abs().max() > 0.8 * bound


def test_standardise_centres_and_scales_each_column():
    """Each input column to mean 0 and standard deviation 1 (a constant column keeps scale 1),
    the targets too; constant targets keep scale 1 and give finite answers."""
    x = torch.stack([torch.linspace(100.0, 104.0, 9), torch.full((9,), 7.0)], dim=1)
    y = torch.linspace(-3.0, 5.0, 9) ** 2  # skewed: its mean is not its median
    model = DeepEnsemble(2, members=2, width=4, depth=1)
    model.standardise(x, y)
    z = (x - model.input_shift) / model.input_scale
    assert z.mean(0).abs().max() < 1e-5
    assert z[:, 0].std().item() == pytest.approx(1.0, rel=1e-5)
    assert z[:, 1].abs().max() == 0 and model.input_scale[1] == 1
    yz = (y - model.target_shift) / model.target_scale
    assert yz.mean().abs() < 1e-6 and yz.std().item() == pytest.approx(1.0, rel=1e-5)
    model.standardise(x, torch.full((9,), 2.0))
    assert model.target_scale == 1 and model.target_shift == 2
    assert torch.isfinite(model.predict(x).mean).all()
    with pytest.raises(ValueError, match="at least 2 rows, got 1"):
        model.standardise(x[:1], y[:1])


def test_a_checkpoint_without_weights_is_refused_by_name(fitted_ensemble, tmp_path):
    path = tmp_path / "config_only.pt"
    torch.save({"config": dict(fitted_ensemble.config)}, path)
    with pytest.raises(ValueError, match="no 'config' and 'state'"):
        DeepEnsemble.load(path)


def test_full_batch_fit_is_plain_adam_on_each_members_nll():
    """With one batch of all rows an epoch, fit_ensemble is Adam at a constant lr on the sum of
    the members' Gaussian NLLs (written here with torch.distributions), from weights reset by
    the seed; its loss curve is the mean NLL per member before each step."""
    x = torch.linspace(-1, 1, 12)[:, None]
    y = torch.sin(3 * x[:, 0])
    start = tiny()
    start.reset(seed=9)  # weights that fit_ensemble must replace
    fitted = fit_ensemble(start, x, y, epochs=3, batch_size=64, lr=1e-2, seed=4)
    plain = tiny()
    plain.reset(seed=4)
    plain.standardise(x, y)
    optimiser = torch.optim.Adam(plain.parameters(), lr=1e-2)
    xs = ((x - plain.input_shift) / plain.input_scale).expand(3, -1, -1)
    ys = (y - plain.target_shift) / plain.target_scale
    curve = []
    for _ in range(3):
        mean, variance = plain._heads(xs)
        density = torch.distributions.Normal(mean, variance.sqrt()).log_prob(ys)
        per_member = -(density + 0.5 * math.log(2 * math.pi)).mean(1)  # (M,)
        curve.append(per_member.mean().item())
        optimiser.zero_grad()
        per_member.sum().backward()
        optimiser.step()
    assert fitted.loss_curve_ == pytest.approx(curve, rel=1e-4, abs=1e-5)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fitted.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_steps_per_epoch_and_a_batch_larger_than_the_data(tmp_path):
    """``N // batch`` steps an epoch (the rows left over wait for another epoch); a batch_size
    above N trains on all rows at once."""
    from physml.training import MemberRows

    x = torch.linspace(-1, 1, 20)[:, None]
    y = torch.sin(3 * x[:, 0])
    fit_ensemble(tiny(members=2), x, y, epochs=3, batch_size=8, out=tmp_path / "a")
    assert load_checkpoint(tmp_path / "a")["step"] == 6  # 3 epochs × (20 // 8)
    fit_ensemble(tiny(members=2), x, y, epochs=2, batch_size=1000, out=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b")["step"] == 2
    assert len(MemberRows(x, y, members=2)) == 20


def test_an_ensemble_resumed_on_other_inputs_or_settings_is_refused(tmp_path):
    x = torch.linspace(0, 1, 32)[:, None]
    y = torch.sin(3 * x[:, 0])
    options = dict(epochs=2, batch_size=16, out=tmp_path)
    fit_ensemble(tiny(members=2), x, y, **options)
    moved = x.clone()
    moved[3:29] += 0.5  # the rows in the middle only
    with pytest.raises(CheckpointError, match="rows_sha256"):
        fit_ensemble(tiny(members=2), moved, y, **options)
    floor = DeepEnsemble(1, members=2, width=32, depth=2, min_variance=1e-3)
    with pytest.raises(CheckpointError, match="min_variance"):
        fit_ensemble(floor, x, y, **options)


def test_fit_ensemble_refuses_a_negative_seed_by_name():
    x, y = sine_data(8)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        fit_ensemble(tiny(), x, y, epochs=1, seed=-1)


def test_sampling_refuses_a_bad_count_or_seed_by_name():
    model = hand_built()
    x = torch.zeros(2, 1)
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got 0"):
        model.sample(x, 0)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        model.sample(x, 2, seed=-1)


def test_rows_of_the_wrong_shape_are_refused_by_name():
    from physml.training import MemberRows

    model = DeepEnsemble(1, members=2, width=4, depth=1)
    x = torch.linspace(0, 1, 9)[:, None]
    with pytest.raises(ValueError, match=r"targets must have shape \(9,\) to match inputs"):
        model.standardise(x, torch.zeros(8))
    with pytest.raises(ValueError, match=r"inputs \(N, d\) and targets \(N,\) must match"):
        MemberRows(torch.zeros(5), torch.zeros(5), members=2)


def test_checkpoint_every_counts_epochs(tmp_path, monkeypatch):
    x = torch.linspace(-1, 1, 24)[:, None]
    y = torch.sin(3 * x[:, 0])
    calls = {"n": 0}
    nll = DeepEnsemble.nll

    def crashing(self, inputs, targets):
        calls["n"] += 1
        if calls["n"] > 5:  # in the second epoch of 3 steps (24 rows, batch 8)
            raise Crash
        return nll(self, inputs, targets)

    monkeypatch.setattr(DeepEnsemble, "nll", crashing)
    with pytest.raises(Crash):
        fit_ensemble(
            tiny(members=2), x, y, epochs=3, batch_size=8, out=tmp_path, checkpoint_every=1
        )
    assert load_checkpoint(tmp_path)["step"] == 3


def test_a_diverged_fit_ensemble_is_advised_only_arguments_it_takes():
    x, y = sine_data(32)
    with pytest.raises(FloatingPointError, match="diverged") as diverged:
        fit_ensemble(tiny(2), x, y, epochs=5, batch_size=16, lr=1e6)
    advised = re.findall(r"\((\w+)=\)", str(diverged.value))
    assert sorted(advised) == ["lr", "out"], str(diverged.value)
    assert set(advised) <= set(inspect.signature(fit_ensemble).parameters)
    assert "clip" not in str(diverged.value)


def test_ensemble_sizes_take_numpy_integers_as_python_ints_and_refuse_bools_and_zero():
    """``members=np.int64(4)`` was refused as "members must be an integer >= 1, got
    np.int64(4)"; numpy integers now build the ensemble the ints build, recorded as ints."""
    sizes = dict(in_features=2, members=4, width=8, depth=1)
    given = DeepEnsemble(**{name: np.int64(value) for name, value in sizes.items()})
    assert json.loads(json.dumps(given.config)) == {**sizes, "min_variance": 1e-6}
    assert {type(given.config[name]) for name in sizes} == {int}
    expected = DeepEnsemble(**sizes).state_dict()
    assert all(torch.equal(given.state_dict()[key], expected[key]) for key in expected)
    given.standardise(torch.rand(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64))
    assert given.sample(torch.rand(3, 2), n=np.int64(5)).samples.shape == (5, 3)
    for members, error in ((True, TypeError), (0, ValueError), (1, ValueError)):
        with pytest.raises(error, match=rf"^members must be an integer >= 2, got {members}$"):
            DeepEnsemble(in_features=2, members=members)
    with pytest.raises(TypeError, match=r"^width must be an integer >= 1, got False$"):
        DeepEnsemble(in_features=2, width=False)


def test_sampling_takes_a_numpy_seed_as_the_same_int():
    model = hand_built()
    x = torch.linspace(0, 1, 3, dtype=torch.float64)[:, None]
    plain = model.sample(x, 4, seed=7)
    assert torch.equal(model.sample(x, 4, seed=np.int64(7)).samples, plain.samples)


# ------------------------------------------------------------------- through the one door


def grid_ensemble(output: str, members: int = 4) -> tuple[DeepEnsemble, torch.Tensor, Grid1D]:
    """An untrained (standardised, so usable) float64 ensemble over rows ``(k, t, x)`` and its
    inputs on a ``(function, T, X)`` grid: 2 functions, 3 times, 9 points."""
    grid = Grid1D(9, 0.0, 1.0)
    t = torch.linspace(0.1, 0.5, 3, dtype=F64)
    points = grid_points(t, grid.coordinates(dtype=F64))
    inputs = with_parameters(torch.tensor([1.0, 2.0], dtype=F64), points).reshape(2, 3, 9, 3)
    model = DeepEnsemble(3, members=members, width=8, depth=1, output=output).double()
    rows = inputs.reshape(-1, 3)
    model.standardise(rows, torch.sin(3 * rows.sum(1)))
    return model, inputs, grid


def test_an_ensemble_output_gets_the_member_update_through_constrain():
    """``output="ensemble"``: the door moves every member with the ensemble covariance, as
    the update written out by hand on ``predict(kind="ensemble")``'s members does
    (``x_m − A (GA)ᵀ [(GA)(GA)ᵀ]⁻¹ (G x_m − b)``, one row per slice), and every member holds
    the mass to round-off; the mixture Gaussian's update is another."""
    model, inputs, grid = grid_ensemble("ensemble")
    mass = torch.tensor([[0.2, 0.3, 0.4], [-0.1, 0.0, 0.5]], dtype=F64)  # (function, time)
    constraint = mass_conservation(grid, mass)
    out = constrain(model, constraint)(inputs)
    assert isinstance(out, Ensemble) and out.samples.shape == (4, 2, 3, 9)
    members = model.predict(inputs, kind="ensemble")
    assert torch.equal(constrain(nn.Identity(), constraint)(members).samples, out.samples)

    X = members.samples  # (member, function, time, x)
    g = grid.weights(dtype=F64)
    A = X - X.mean(0)
    GA = A @ g  # (member, function, time)
    gain = (A * GA[..., None]).sum(0) / GA.square().sum(0)[..., None]  # A (GA)ᵀ [(GA)(GA)ᵀ]⁻¹
    by_hand = X - gain * (X @ g - mass)[..., None]
    assert torch.allclose(out.samples, by_hand, rtol=1e-12, atol=1e-13)
    assert (out.samples @ g - mass).abs().max() < 1e-14
    assert torch.equal(model.predict(inputs).samples, X)  # predict follows output

    gaussian = copy.deepcopy(model)
    gaussian.output = "gaussian"
    diagonal = constrain(gaussian, constraint)(inputs)
    assert isinstance(diagonal, Gaussian)  # ProbConserv on the mixture: another update
    assert not torch.allclose(diagonal.mean, out.samples.mean(0), atol=1e-6)


def test_the_default_output_is_the_mixture_gaussian_as_before():
    model, inputs, _ = grid_ensemble("gaussian")
    assert DeepEnsemble(3).output == "gaussian"
    out = model(inputs)
    assert isinstance(out, Gaussian) and out.is_diagonal and out.mean.shape == (2, 3, 9)
    means, variances = model.member_outputs(inputs)
    mean = means.mean(0)
    assert torch.equal(out.mean, mean)
    assert torch.allclose(out.cov, variances.mean(0) + (means - mean).square().mean(0))
    assert isinstance(model.predict(inputs), Gaussian)
    assert isinstance(model.predict(inputs, kind="ensemble"), Ensemble)


def test_a_bad_output_is_refused_by_name():
    with pytest.raises(
        ValueError, match=r"^output must be one of \('gaussian', 'ensemble'\), got 'members'$"
    ):
        DeepEnsemble(1, output="members")
    with pytest.raises(TypeError, match=r"^output must be one of .*, got None$"):
        DeepEnsemble(1, output=None)
    model = DeepEnsemble(1, output="ensemble")
    with pytest.raises(ValueError, match=r"^output must be one of .*, got 'mixture'$"):
        model.output = "mixture"
    assert model.output == "ensemble"  # refused: left as it was


def test_a_saved_ensemble_keeps_its_output_and_a_default_file_is_as_before(tmp_path):
    model, inputs, _ = grid_ensemble("ensemble")
    model, inputs = model.float(), inputs.float()  # load builds a float32 model
    model.save(tmp_path / "members.pt")
    loaded = DeepEnsemble.load(tmp_path / "members.pt")
    assert loaded.output == "ensemble"
    assert torch.equal(loaded(inputs).samples, model(inputs).samples)
    tiny().save(tmp_path / "plain.pt")
    config = torch.load(tmp_path / "plain.pt", weights_only=True)["config"]
    assert config == {"in_features": 1, "members": 3, "width": 32, "depth": 2, "min_variance": 1e-6}


def test_a_fit_ensemble_run_resumes_whatever_the_output(tmp_path):
    """``output`` changes no weight nor the training: the run records the config as before, and
    an ensemble with the other output resumes it (here: takes the finished run's weights)."""
    x, y = sine_data(32)
    run = tmp_path / "run"
    first = fit_ensemble(tiny(), x, y, epochs=2, batch_size=16, out=run)
    recorded = load_checkpoint(run)["model_config"]
    assert recorded == {
        "model": "DeepEnsemble",
        "config": {"in_features": 1, "members": 3, "width": 32, "depth": 2, "min_variance": 1e-6},
    }
    members = DeepEnsemble(1, members=3, width=32, depth=2, output="ensemble")
    again = fit_ensemble(members, x, y, epochs=2, batch_size=16, out=run)
    assert again.output == "ensemble"
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert torch.equal(again(x).samples, first.predict(x, kind="ensemble").samples)


def gp_contexts(B: int = 2, T: int = 4, X: int = 5):
    """Context sets of ``B`` diffusion functions ``(B, T·X, 2)``, ``(B, T·X)`` (k = 1, 2, ...)."""
    sets = [diffusion_context(T, X, k=1.0 + b, noise=0.01, seed=b) for b in range(B)]
    return torch.stack([s[2] for s in sets]), torch.stack([s[3] for s in sets])


def test_gp_on_grid_takes_the_probconserv_update_through_constrain():
    """The GP's module on the grid meets the one door: its output is the update
    ``μ + Σg (b − gᵀμ) / (gᵀΣg)``, ``Σ − Σg gᵀΣ / (gᵀΣg)`` of every slice's posterior, and the
    constrained mass is exact."""
    cx, cy = gp_contexts()
    grid = Grid1D(12, 0.0, TWO_PI)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    gp = ExactGPSurrogate(iterations=10)
    model = gp.on_grid(t, grid.coordinates(dtype=F64))
    assert isinstance(model, nn.Module)
    prior = model(cx, cy)
    direct = ExactGPSurrogate(iterations=10).fit_predict(cx, cy, t, grid.coordinates(dtype=F64))
    assert torch.equal(prior.mean, direct.mean) and torch.equal(prior.cov, direct.cov)
    assert prior.mean.shape == (2, 3, 12) and prior.cov.shape == (2, 3, 12, 12)

    mass = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.05, -0.1]], dtype=F64)
    out = constrain(model, mass_conservation(grid, mass))(cx, cy)
    g = grid.weights(dtype=F64)
    mu, sigma = prior.mean, prior.cov
    sg = sigma @ g  # Σg (B, T, X)
    gsg = sg @ g  # gᵀΣg (B, T)
    mean = mu + sg * ((mass - mu @ g) / gsg)[..., None]
    cov = sigma - sg[..., :, None] * sg[..., None, :] / gsg[..., None, None]
    assert torch.allclose(out.mean, mean, rtol=1e-10, atol=1e-12)
    assert torch.allclose(out.cov.dense(), cov, rtol=1e-8, atol=1e-10 * sigma.abs().max())
    assert (out.mean @ g - mass).abs().max() < 1e-12


@pytest.mark.parametrize("bad", [5, b"gaussian", ["gaussian"]])
def test_a_kind_or_covariance_that_is_no_string_is_a_type_error_another_string_a_value_error(
    bad,
):
    """DeepEnsemble's output and predict kind, ExactGPSurrogate's and GridGP's covariance:
    a TypeError for what is no string, a ValueError for an unknown string, each by name."""
    model, inputs = DeepEnsemble(1), torch.zeros(2, 1)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    cx = torch.stack([torch.full((4,), 0.5, dtype=torch.float64), torch.arange(4.0)], dim=1)
    gp = ExactGPSurrogate(iterations=1).fit(cx, torch.arange(4.0))
    kinds = r"\('gaussian', 'ensemble'\)"
    covariances = r"\('time-slices', 'diagonal'\)"
    for call, name, choices in [
        (lambda value: DeepEnsemble(1, output=value), "output", kinds),
        (lambda value: model.predict(inputs, kind=value), "kind", kinds),
        (lambda value: gp.predict(t, t, covariance=value), "covariance", covariances),
        (lambda value: gp.on_grid(t, t, covariance=value), "covariance", covariances),
    ]:
        with pytest.raises(TypeError, match=rf"^{name} must be one of {choices}, got "):
            call(bad)
        with pytest.raises(ValueError, match=rf"^{name} must be one of {choices}, got 'full'$"):
            call("full")


def test_gp_on_grid_refuses_bad_settings_by_name():
    gp, t = ExactGPSurrogate(), torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match=r"^covariance must be one of .*, got 'full'$"):
        gp.on_grid(t, t, covariance="full")
    with pytest.raises(ValueError, match=r"^x must have shape \(X,\), got \(3, 1\)$"):
        gp.on_grid(t, t[:, None])
    with pytest.raises(TypeError, match=r"^progress must be True or False, got 'yes'$"):
        gp.on_grid(t, t, progress="yes")
    from physml.models import GridGP

    with pytest.raises(TypeError, match=r"^gp must be an ExactGPSurrogate, got str$"):
        GridGP("gp", t, t)


def test_a_gp_fits_under_no_grad_as_it_does_outside_it():
    """The marginal-likelihood fit takes gradient steps of its own: ``torch.no_grad()`` around
    it (evaluation code) changes nothing, for either optimiser."""
    _, _, cx, cy = diffusion_context(T=4, X=4, noise=0.01)
    for optimizer in ("adam", "lbfgs"):
        outside = ExactGPSurrogate(iterations=4, optimizer=optimizer).fit(cx, cy)
        with torch.no_grad():
            inside = ExactGPSurrogate(iterations=4, optimizer=optimizer).fit(cx, cy)
        for key, value in outside.hyperparameters().items():
            assert torch.equal(value, inside.hyperparameters()[key]), (optimizer, key)


def test_a_gp_fits_and_predicts_under_inference_mode_as_it_does_outside_it():
    """``torch.inference_mode()`` around the fit (evaluation code) changes nothing either, for
    either optimiser, and a GridGP called there gives the posterior it gives outside."""
    _, _, cx, cy = diffusion_context(T=4, X=4, noise=0.01)
    t, x = torch.linspace(0.0, 1.0, 3, dtype=torch.float64), torch.linspace(0.0, 1.0, 4)
    for optimizer in ("adam", "lbfgs"):
        outside = ExactGPSurrogate(iterations=4, optimizer=optimizer).fit(cx, cy)
        with torch.inference_mode():
            inside = ExactGPSurrogate(iterations=4, optimizer=optimizer).fit(cx, cy)
        for key, value in outside.hyperparameters().items():
            assert torch.equal(value, inside.hyperparameters()[key]), (optimizer, key)
    grid = ExactGPSurrogate(iterations=4).on_grid(t, x)
    expected = grid(cx[None], cy[None])
    with torch.inference_mode():
        got = grid(cx[None], cy[None])
    assert torch.equal(got.mean, expected.mean) and torch.equal(got.cov, expected.cov)
