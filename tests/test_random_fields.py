"""Gaussian random fields: second moments against the closed-form spectrum, determinism, bad input.

Statistical tolerances: with S samples, the mean of |û_k|² / E|û_k|² is a mean of S unit-mean
exponential variables (standard error 1/√S) for complex modes, of S χ²₁ variables (standard error
√(2/S)) for the real modes k=0 and Nyquist. A sample variance has relative standard error
√(2/(S−1)); averaging it over correlated points cannot raise that. Every check allows 5 standard
errors (a false alarm probability below 1e-6 per mode) and uses a fixed seed, so the tests are
deterministic.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pdes.random_fields import gaussian_random_field_1d, gaussian_random_field_2d

Z = 5.0


def eigenvalue(k_squared: np.ndarray, alpha: float, tau: float, sigma: float) -> np.ndarray:
    return sigma**2 / (k_squared + tau**2) ** alpha


def modes(n: int) -> np.ndarray:
    """Signed integer frequencies of the n resolved modes (Nyquist counted once)."""
    return np.array([m if m <= n // 2 else m - n for m in range(n)], dtype=float)


PARAMETERS_1D = [
    # (n, length, alpha, tau, sigma)
    (32, 1.0, 2.0, 5.0, 25.0),
    (16, 2.0 * math.pi, 0.75, 1.0, 1.0),
    (31, 3.0, 1.5, 2.0, 4.0),
]


@pytest.mark.parametrize("n, length, alpha, tau, sigma", PARAMETERS_1D)
def test_1d_spectrum_matches_covariance(n, length, alpha, tau, sigma):
    samples = 4000
    u = gaussian_random_field_1d(
        n, length, alpha, tau, sigma, generator=torch.Generator().manual_seed(1), batch=samples
    )
    m = np.arange(n // 2 + 1)
    k2 = (2 * math.pi * m / length) ** 2
    expected = eigenvalue(k2, alpha, tau, sigma) * n**2 / length
    power = torch.fft.rfft(u, dim=-1).abs().pow(2).mean(0).numpy()
    real_mode = (m == 0) | (2 * m == n)
    standard_error = np.where(real_mode, math.sqrt(2 / samples), 1 / math.sqrt(samples))
    z = (power / expected - 1) / standard_error
    assert np.abs(z).max() < Z, z


@pytest.mark.parametrize("n, length, alpha, tau, sigma", PARAMETERS_1D)
@pytest.mark.parametrize("zero_mean", [False, True])
def test_1d_pointwise_variance(n, length, alpha, tau, sigma, zero_mean):
    samples = 20000
    u = gaussian_random_field_1d(
        n,
        length,
        alpha,
        tau,
        sigma,
        generator=torch.Generator().manual_seed(2),
        batch=samples,
        zero_mean=zero_mean,
    )
    k2 = (2 * math.pi * modes(n) / length) ** 2
    lam = eigenvalue(k2, alpha, tau, sigma)
    if zero_mean:
        lam[0] = 0.0
    expected = lam.sum() / length
    observed = u.pow(2).mean().item()
    assert abs(observed / expected - 1) < Z * math.sqrt(2 / (samples - 1))


def test_zero_mean_removes_the_spatial_mean():
    u = gaussian_random_field_1d(64, generator=torch.Generator().manual_seed(3), batch=50)
    v = gaussian_random_field_1d(
        64, generator=torch.Generator().manual_seed(3), batch=50, zero_mean=True
    )
    assert u.mean(-1).abs().min() > 1e-6
    assert v.mean(-1).abs().max() < 1e-14 * v.abs().max()
    assert torch.allclose(v, u - u.mean(-1, keepdim=True), atol=1e-13, rtol=0)
    w = gaussian_random_field_2d(
        16, generator=torch.Generator().manual_seed(3), batch=5, zero_mean=True
    )
    assert w.mean((-2, -1)).abs().max() < 1e-14 * w.abs().max()


@pytest.mark.parametrize(
    "n, length, alpha, tau, sigma",
    [(16, 1.0, 2.5, 7.0, 7.0**1.5), (12, 2.0, 1.5, 3.0, 2.0), (9, 1.5, 2.0, 3.0, 1.0)],
)
def test_2d_spectrum_and_variance(n, length, alpha, tau, sigma):
    samples = 3000
    u = gaussian_random_field_2d(
        n, length, alpha, tau, sigma, generator=torch.Generator().manual_seed(4), batch=samples
    )
    assert u.shape == (samples, n, n)
    m = modes(n)
    k2 = (2 * math.pi / length) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    lam = eigenvalue(k2, alpha, tau, sigma)
    power = torch.fft.fft2(u).abs().pow(2).mean(0).numpy()
    expected = lam * n**4 / length**2
    real_mode = np.array(
        [[(2 * a) % n == 0 and (2 * b) % n == 0 for b in range(n)] for a in range(n)]
    )
    standard_error = np.where(real_mode, math.sqrt(2 / samples), 1 / math.sqrt(samples))
    z = (power / expected - 1) / standard_error
    assert np.abs(z).max() < Z
    variance = u.pow(2).mean().item()
    assert abs(variance / (lam.sum() / length**2) - 1) < Z * math.sqrt(2 / (samples - 1))


def test_2d_lag_covariance():
    """The covariance at one grid step along either axis matches C(r) = Σ λ_k cos(k·r) / L².

    ``Var(u(0) u(r)) = C(0)² + C(r)² <= 2 C(0)²`` bounds the standard error of the estimate."""
    n, samples = 16, 3000
    u = gaussian_random_field_2d(n, generator=torch.Generator().manual_seed(5), batch=samples)
    m = modes(n)
    k2 = (2 * math.pi) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    lam = eigenvalue(k2, 2.5, 7.0, 7.0**1.5)
    variance = lam.sum()
    lag = (lam * np.cos(2 * math.pi * m[:, None] / n)).sum()
    for axis in (-2, -1):
        observed = (u * torch.roll(u, 1, dims=axis)).mean().item()
        assert abs(observed - lag) < Z * math.sqrt(2 / (samples - 1)) * variance


@pytest.mark.parametrize("draw", [gaussian_random_field_1d, gaussian_random_field_2d])
def test_real_float64_and_deterministic(draw):
    a = draw(16, generator=torch.Generator().manual_seed(7), batch=3)
    b = draw(16, generator=torch.Generator().manual_seed(7), batch=3)
    c = draw(16, generator=torch.Generator().manual_seed(8), batch=3)
    assert a.dtype == torch.float64 and not a.is_complex()
    assert a.shape[0] == 3 and all(s == 16 for s in a.shape[1:])
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])


def test_global_generator_when_none_given():
    torch.manual_seed(11)
    a = gaussian_random_field_1d(8)
    torch.manual_seed(11)
    assert torch.equal(a, gaussian_random_field_1d(8))


BAD = [
    ({"n": 0}, ValueError, "n"),
    ({"n": 1}, ValueError, "n"),
    ({"n": 8.0}, TypeError, "n"),
    ({"tau": 0.0}, ValueError, "tau"),
    ({"tau": -1.0}, ValueError, "tau"),
    ({"sigma": 0.0}, ValueError, "sigma"),
    ({"sigma": -2.0}, ValueError, "sigma"),
    ({"alpha": 0.0}, ValueError, "alpha"),
    ({"alpha": float("nan")}, ValueError, "alpha"),
    ({"length": -1.0}, ValueError, "length"),
    ({"batch": 0}, ValueError, "batch"),
    ({"generator": 3}, TypeError, "generator"),
]


@pytest.mark.parametrize(
    "draw, case",
    list(itertools.product([gaussian_random_field_1d, gaussian_random_field_2d], BAD)),
)
def test_bad_input(draw, case):
    overrides, error, name = case
    kwargs = {"n": 8, **overrides}
    with pytest.raises(error, match=name):
        draw(**kwargs)


def test_2d_zero_mean_removes_only_the_constant_mode():
    """``zero_mean=True`` gives the same draw minus its spatial mean, nothing else changed."""
    u = gaussian_random_field_2d(16, generator=torch.Generator().manual_seed(3), batch=4)
    v = gaussian_random_field_2d(
        16, generator=torch.Generator().manual_seed(3), batch=4, zero_mean=True
    )
    torch.testing.assert_close(v, u - u.mean((-2, -1), keepdim=True), rtol=0, atol=1e-12)


def test_1d_ensemble_mean_is_zero_at_every_point():
    """Mean zero: at each point the mean over S draws is N(0, C(0)/S), C(0) = Σ λ_k / L."""
    n, length, samples = 32, 2.0, 4000
    u = gaussian_random_field_1d(
        n, length, generator=torch.Generator().manual_seed(12), batch=samples
    )
    variance = eigenvalue((2 * math.pi * modes(n) / length) ** 2, 2.0, 5.0, 25.0).sum() / length
    assert u.mean(0).abs().max().item() < Z * math.sqrt(variance / samples)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("draw", [gaussian_random_field_1d, gaussian_random_field_2d])
def test_a_cuda_generator_draws_on_its_device(draw):
    """The noise is drawn where the generator lives: a CUDA generator gives the same field on
    either output device, and the same seed again gives the same field."""
    a = draw(8, generator=torch.Generator("cuda").manual_seed(3), batch=2, device="cuda")
    b = draw(8, generator=torch.Generator("cuda").manual_seed(3), batch=2, device="cpu")
    assert a.device.type == "cuda" and b.device.type == "cpu"
    torch.testing.assert_close(a.cpu(), b, rtol=0, atol=1e-12)


def test_1d_defaults_are_fnos_burgers_covariance():
    """The defaults are FNO's Burgers initial condition N(0, 625 (−Δ + 25 I)^−2) on [0, 1):
    L = 1, α = 2, τ = 5, σ = 25 (the draw equals the one with these written out; the covariance
    itself is checked by the spectrum tests above)."""

    def draw(*settings):
        return gaussian_random_field_1d(32, *settings, generator=torch.Generator().manual_seed(13))

    assert torch.equal(draw(), draw(1.0, 2.0, 5.0, 25.0))


@pytest.mark.parametrize("draw", [gaussian_random_field_1d, gaussian_random_field_2d])
def test_the_field_lands_on_the_requested_device(draw):
    """``device`` moves the field from the generator's device (here the shape-only meta device, so
    the check runs without a GPU); without it the field stays on the generator's device."""
    moved = draw(8, generator=torch.Generator().manual_seed(0), batch=2, device="meta")
    assert moved.device.type == "meta" and moved.shape[:2] == (2, 8)
    assert draw(8, generator=torch.Generator().manual_seed(0)).device.type == "cpu"
