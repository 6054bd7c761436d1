"""The exact GP surrogate against a dense numpy GP built from its reported hyperparameters,
and its degenerate and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physml.models import ExactGPSurrogate, grid_points

F64 = torch.float64


def test_the_repr_names_the_settings_and_whether_fitted():
    gp = ExactGPSurrogate(
        iterations=3, lr=0.05, optimizer="adam", noise_floor=1e-4, lengthscale=0.5, seed=7
    )
    settings = (
        "ExactGPSurrogate(iterations=3, lr=0.05, optimizer='adam', noise_floor=0.0001, "
        "lengthscale=0.5, seed=7; "
    )
    assert repr(gp) == settings + "not fitted)"
    x = torch.rand(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert repr(gp.fit(x, x.sum(1))) == settings + "fitted on 6 points)"


def dense_posterior(hyper: dict, cx, cy, z, noise: bool = False):
    """Mean and covariance at ``z (N, 2)`` of a plain GP on the raw data, by the textbook
    formulas ``m + k(z, X) K⁻¹ (y − m)`` and ``k(z, z) − k(z, X) K⁻¹ k(X, z)``."""
    ls = hyper["lengthscale"].numpy()
    s2, n2, m = (float(hyper[k]) for k in ("outputscale", "noise", "mean"))
    cx, cy, z = cx.numpy(), cy.numpy(), z.numpy()

    def k(a, b):
        d = (a[:, None, :] - b[None, :, :]) / ls
        return s2 * np.exp(-0.5 * (d**2).sum(-1))

    K = k(cx, cx) + n2 * np.eye(len(cx))
    cross = k(z, cx)
    mean = m + cross @ np.linalg.solve(K, cy - m)
    cov = k(z, z) - cross @ np.linalg.solve(K, cross.T)
    if noise:
        cov = cov + n2 * np.eye(len(z))
    return torch.from_numpy(mean), torch.from_numpy(cov)


def scattered_context(n: int = 14, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cx = torch.rand(n, 2, generator=g, dtype=F64) * torch.tensor([2.0, 5.0], dtype=F64)
    cy = (
        3.0
        + 2.0 * torch.sin(cx[:, 1]) * torch.exp(-cx[:, 0])
        + 0.05 * torch.randn(n, generator=g, dtype=F64)
    )
    return cx, cy


@pytest.fixture(scope="module")
def fitted():
    cx, cy = scattered_context()
    return ExactGPSurrogate(iterations=40).fit(cx, cy), cx, cy


def test_prediction_with_and_without_observation_noise_equals_the_dense_formulas(fitted):
    gp, cx, cy = fitted
    hyper = gp.hyperparameters()
    assert float(hyper["noise"]) == pytest.approx(gp.noise_)
    assert float(hyper["outputscale"]) == pytest.approx(gp.outputscale_)
    assert float(hyper["noise"]) != pytest.approx(float(hyper["outputscale"]), rel=1e-3)
    t = torch.tensor([0.1, 0.7, 1.9], dtype=F64)
    x = torch.linspace(-0.5, 5.5, 4, dtype=F64)
    T, X = 3, 4
    points = grid_points(t, x)
    for noise in (False, True):
        mean, joint = dense_posterior(hyper, cx, cy, points, noise)
        blocks = torch.stack([joint[i * X : (i + 1) * X, i * X : (i + 1) * X] for i in range(T)])
        full = gp.predict(t, x, observation_noise=noise)
        torch.testing.assert_close(full.mean, mean.reshape(T, X), rtol=1e-7, atol=1e-8)
        torch.testing.assert_close(full.cov, blocks, rtol=1e-6, atol=1e-8)
        diagonal = gp.predict(t, x, covariance="diagonal", observation_noise=noise)
        torch.testing.assert_close(diagonal.cov, torch.diagonal(blocks, dim1=-2, dim2=-1))
        scattered = gp.predict_points(points, observation_noise=noise)
        torch.testing.assert_close(scattered.mean, mean, rtol=1e-7, atol=1e-8)
        torch.testing.assert_close(scattered.cov, torch.diagonal(joint), rtol=1e-6, atol=1e-8)


def dense_mean_gradient(hyper: dict, cx, cy, z):
    """``∂m/∂z (N, 2)`` of the plain GP's mean: ``Σ_i α_i ∂k(z, X_i)/∂z`` with ``α = K⁻¹ (y −
    m)`` and ``∂k(z, X_i)/∂z_d = −k(z, X_i) (z_d − X_id) / ℓ_d²``."""
    ls = hyper["lengthscale"].numpy()
    s2, n2, m = (float(hyper[k]) for k in ("outputscale", "noise", "mean"))
    cx, cy, z = cx.numpy(), cy.numpy(), z.numpy()
    d = (z[:, None, :] - cx[None, :, :]) / ls
    cross = s2 * np.exp(-0.5 * (d**2).sum(-1))
    d_context = cx[:, None, :] - cx[None, :, :]
    K = s2 * np.exp(-0.5 * ((d_context / ls) ** 2).sum(-1)) + n2 * np.eye(len(cx))
    alpha = np.linalg.solve(K, cy - m)
    return torch.from_numpy(-np.einsum("nc,ncd,c->nd", cross, d / ls, alpha))


def test_predictions_differentiate_in_the_query_points(fitted):
    """``predict``/``predict_points`` ran under ``no_grad``: now ∂mean/∂(t, x) is the dense GP's,
    the fitted hyperparameters get no gradient, and inputs without grad build no graph."""
    gp, cx, cy = fitted
    t = torch.tensor([0.4, 1.3], dtype=F64, requires_grad=True)
    x = torch.linspace(0.5, 4.5, 3, dtype=F64, requires_grad=True)
    points = grid_points(t, x).detach().requires_grad_()
    expected = dense_mean_gradient(gp.hyperparameters(), cx, cy, points.detach())
    (scattered,) = torch.autograd.grad(gp.predict_points(points).mean.sum(), points)
    torch.testing.assert_close(scattered, expected, rtol=1e-6, atol=1e-9)
    dt, dx = torch.autograd.grad(gp.predict(t, x, covariance="diagonal").mean.sum(), (t, x))
    torch.testing.assert_close(dt, expected[:, 0].reshape(2, 3).sum(1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dx, expected[:, 1].reshape(2, 3).sum(0), rtol=1e-6, atol=1e-9)
    assert not any(p.requires_grad for p in gp.model_.parameters())
    assert not gp.predict(t.detach(), x.detach()).mean.requires_grad


def test_no_graph_under_the_callers_no_grad(fitted):
    """Query points that require grad, predicted under the caller's ``torch.no_grad()``: the
    prediction built a graph anyway (``predict_points``' mean required grad); now neither
    ``predict`` nor ``predict_points`` does, and the values are those outside it."""
    gp, _, _ = fitted
    t = torch.tensor([0.4, 1.3], dtype=F64, requires_grad=True)
    x = torch.linspace(0.5, 4.5, 3, dtype=F64, requires_grad=True)
    points = grid_points(t, x).detach().requires_grad_()
    with torch.no_grad():
        scattered, gridded = gp.predict_points(points), gp.predict(t, x)
    for out in (scattered, gridded):
        assert not out.mean.requires_grad and not out.cov.requires_grad
    torch.testing.assert_close(scattered.mean, gp.predict_points(points).mean.detach())


def test_a_context_on_one_time_slice_fits_and_predicts_like_the_dense_gp():
    """Zero extent in t: the t lengthscale cannot matter, the prediction must stay finite."""
    x = torch.linspace(0.0, 3.0, 7, dtype=F64)
    cx = torch.stack([torch.full_like(x, 0.5), x], dim=1)
    cy = torch.cos(x)
    gp = ExactGPSurrogate(iterations=30).fit(cx, cy)
    t_query, x_query = torch.tensor([0.5], dtype=F64), torch.linspace(0.2, 2.8, 5, dtype=F64)
    prediction = gp.predict(t_query, x_query)
    mean, cov = dense_posterior(gp.hyperparameters(), cx, cy, grid_points(t_query, x_query))
    torch.testing.assert_close(prediction.mean[0], mean, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(prediction.cov[0], cov, rtol=1e-6, atol=1e-8)


def test_a_constant_context_predicts_that_constant():
    cx, _ = scattered_context(8)
    gp = ExactGPSurrogate(iterations=10).fit(cx, torch.full((8,), 2.5, dtype=F64))
    prediction = gp.predict(torch.tensor([0.3, 1.0], dtype=F64), torch.tensor([1.0, 4.0]))
    assert torch.isfinite(prediction.cov).all()
    torch.testing.assert_close(prediction.mean, torch.full((2, 2), 2.5, dtype=F64))
    assert gp.mean_ == pytest.approx(2.5)


def test_zero_iterations_keep_the_documented_initial_hyperparameters():
    """lengthscale 0.3 of the context's extent, output scale the data variance, noise
    max(1e-2, 10 noise_floor) of it, mean the data mean; no loss is evaluated."""
    cx, cy = scattered_context(10)
    gp = ExactGPSurrogate(iterations=0, noise_floor=1e-2).fit(cx, cy)
    assert gp.loss_curve_ == []
    extent = cx.amax(0) - cx.amin(0)
    variance = float(cy.var())
    torch.testing.assert_close(gp.lengthscale_, 0.3 * extent)
    assert gp.outputscale_ == pytest.approx(variance, rel=1e-6)
    assert gp.noise_ == pytest.approx(0.1 * variance, rel=1e-6)
    assert gp.mean_ == pytest.approx(float(cy.mean()), rel=1e-12)


def test_adam_records_one_loss_per_step_and_lbfgs_at_most_its_evaluation_budget():
    cx, cy = scattered_context(10)
    adam = ExactGPSurrogate(iterations=7, optimizer="adam").fit(cx, cy)
    assert len(adam.loss_curve_) == 7
    lbfgs = ExactGPSurrogate(iterations=5, optimizer="lbfgs").fit(cx, cy)
    assert 1 <= len(lbfgs.loss_curve_) <= 10


def test_a_kernel_matrix_that_is_not_positive_definite_is_refused(monkeypatch):
    cx, cy = scattered_context(10)
    monkeypatch.setattr(ExactGPSurrogate, "_noise_std", lambda self: torch.tensor(-1e3, dtype=F64))
    with pytest.raises(ValueError, match="not positive definite"):
        ExactGPSurrogate(iterations=0).fit(cx, cy)


def test_fit_predict_refuses_an_empty_batch_by_name():
    with pytest.raises(ValueError, match="context_x must hold at least one function"):
        ExactGPSurrogate().fit_predict(
            torch.zeros(0, 5, 2, dtype=F64),
            torch.zeros(0, 5, dtype=F64),
            torch.zeros(2),
            torch.zeros(2),
        )


def test_a_diverged_fit_is_refused(monkeypatch):
    cx, cy = scattered_context(10)
    gp = ExactGPSurrogate(iterations=1)

    def poison(model, likelihood, xs, ys):
        with torch.no_grad():
            model.mean_module.constant.fill_(math.nan)
        return [math.nan]

    monkeypatch.setattr(gp, "_optimise", poison)
    with pytest.raises(ValueError, match="diverged"):
        gp.fit(cx, cy)
    assert not hasattr(gp, "model_")


def test_float32_context_is_fitted_and_predicted_in_float64():
    cx, cy = scattered_context(10)
    gp = ExactGPSurrogate(iterations=3).fit(cx.float(), cy.float())
    assert all(p.dtype == F64 for p in gp.model_.parameters())
    prediction = gp.predict(torch.tensor([0.5]), torch.tensor([1.0, 2.0]))
    assert prediction.mean.dtype == F64 and prediction.cov.dtype == F64
