"""The constraint layer's spine: the ProbConserv update, HardC, ensembles, builders, bad input.

The update is checked against an independent dense formula in numpy (explicit inverses) and against
its defining properties: exact conservation with σ = 0, a positive semi-definite posterior, no
variance left along the constraint.
"""

import contextlib
import copy
import inspect
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from pdes import Grid1D
from physml import (
    ConstraintError,
    Ensemble,
    Gaussian,
    LinearConstraint,
    LowRankCovariance,
    constrain,
    mass_conservation,
)
from physml.constraints import cumulative_inflow
from physml.metrics import SYMMETRY

F64 = torch.float64


def through(constraint, output):
    """``output`` constrained through the door, by a model that returns its input."""
    return constrain(nn.Identity(), constraint)(output)


def random_problem(seed, n, m, batch=()):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=gen, dtype=F64)
    cov = A @ A.transpose(-1, -2) / n + 0.05 * torch.eye(n, dtype=F64)
    mean = torch.randn(*batch, n, generator=gen, dtype=F64)
    G = torch.randn(m, n, generator=gen, dtype=F64)
    b = torch.randn(*batch, m, generator=gen, dtype=F64)
    return mean, cov, G, b


def dense_update(mean, cov, G, b, noise):
    """The textbook formula with explicit inverses, in numpy (one matrix at a time)."""
    mean, cov, G, b = (np.asarray(v, dtype=np.float64) for v in (mean, cov, G, b))
    gain = cov @ G.T @ np.linalg.inv(noise**2 * np.eye(G.shape[0]) + G @ cov @ G.T)
    return mean - gain @ (G @ mean - b), cov - gain @ G @ cov


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 12),
    m_fraction=st.floats(0.0, 1.0),
    noise=st.sampled_from([0.0, 1e-3, 0.3]),
)
@example(seed=1088, n=5, m_fraction=1.0, noise=0.0)
def test_probconserv_matches_the_dense_formula_and_conserves(seed, n, m_fraction, noise):
    m = 1 + int(m_fraction * (n - 1))
    mean, cov, G, b = random_problem(seed, n, m)
    out = through(LinearConstraint(G, b, noise=noise), Gaussian(mean, cov))
    expected_mean, expected_cov = dense_update(mean, cov, G, b, noise)
    # the reference inverts σ²I + GΣGᵀ explicitly, so its own round-off is ε·cond·|Σ| (the example:
    # G square, cond 2.7e8; the reference lands 5e-9 off the exact zero, the update 3e-10), and
    # ε·cond·|mean| for the mean (the example's exact mean G⁻¹b ≈ 690: the reference is 7e-6 off
    # it, the update 1.4e-5, both within 2.2e-16 × 2.7e8 × 690 = 4e-5; G u = b is checked below)
    inner = noise**2 * np.eye(m) + (G @ cov @ G.T).numpy()
    reference_round_off = np.finfo(np.float64).eps * np.linalg.cond(inner)
    atol = 1e-9 + reference_round_off * np.abs(expected_mean).max()
    assert np.allclose(out.mean.numpy(), expected_mean, rtol=1e-8, atol=atol)
    atol = 1e-9 + reference_round_off * cov.abs().max().item()
    assert np.allclose(out.dense_cov().numpy(), expected_cov, rtol=1e-8, atol=atol)
    eigenvalues = torch.linalg.eigvalsh(out.dense_cov())
    assert eigenvalues.min() >= -1e-10 * torch.linalg.eigvalsh(cov).max()
    if noise == 0.0:
        row_scale = G.abs() @ out.mean.abs() + b.abs()  # the example's rows reach 2e3
        assert ((G @ out.mean - b).abs() <= 1e-10 * row_scale).all()
        assert (G @ out.dense_cov() @ G.T).abs().max() <= 1e-10 * cov.abs().max()


def test_batched_over_samples_and_time_slices():
    mean, cov, G, b = random_problem(1, 9, 1, batch=(3, 5))
    out = through(LinearConstraint(G, b), Gaussian(mean, cov))
    for i in range(3):
        for j in range(5):
            m, c = dense_update(mean[i, j], cov[i, j], G, b[i, j], 0.0)
            assert np.allclose(out.mean[i, j].numpy(), m, atol=1e-10)
            assert np.allclose(out.dense_cov()[i, j].numpy(), c, atol=1e-10)


def test_diagonal_covariance_gives_the_same_posterior_without_an_n_by_n_matrix():
    gen = torch.Generator().manual_seed(2)
    mean = torch.randn(4, 30, generator=gen, dtype=F64)
    variance = torch.rand(4, 30, generator=gen, dtype=F64) + 0.1
    G = torch.randn(2, 30, generator=gen, dtype=F64)
    b = torch.randn(4, 2, generator=gen, dtype=F64)
    low_rank = through(LinearConstraint(G, b), Gaussian(mean, variance))
    full = through(LinearConstraint(G, b), Gaussian(mean, torch.diag_embed(variance)))
    assert isinstance(low_rank.cov, LowRankCovariance) and isinstance(full.cov, LowRankCovariance)
    assert low_rank.cov.factor.shape == (4, 30, 2)
    assert torch.allclose(low_rank.mean, full.mean, atol=1e-12)
    assert torch.allclose(low_rank.cov.dense(), full.dense_cov(), atol=1e-12)
    assert torch.allclose(low_rank.variance(), torch.diagonal(full.dense_cov(), dim1=-2, dim2=-1))
    # a second constraint on the low-rank posterior equals conditioning on both rows at once
    G2, b2 = (
        torch.randn(1, 30, generator=gen, dtype=F64),
        torch.randn(4, 1, generator=gen, dtype=F64),
    )
    twice = through(LinearConstraint(G2, b2), low_rank)
    prior = Gaussian(mean, torch.diag_embed(variance))
    together = through(LinearConstraint(torch.cat([G, G2]), torch.cat([b, b2], -1)), prior)
    assert torch.allclose(twice.mean, together.mean, atol=1e-10)
    assert torch.allclose(twice.cov.dense(), together.dense_cov(), atol=1e-10)


@pytest.mark.parametrize("slices", [1, 3, 4])
def test_a_full_base_shared_by_a_batched_factor_is_read_as_full(slices):
    """``LowRankCovariance(base (n, n), factor (B, n, m))`` is one matrix ``base − F_b F_bᵀ`` per
    slice (dense torch), not ``B × n`` variances; a Gaussian wants the base per slice and says
    so by name. With ``B == n`` the shapes also fit ``B × n`` variances: refused as ambiguous
    unless ``diagonal`` says which."""
    gen = torch.Generator().manual_seed(17)
    n = 4
    A = torch.randn(n, n, generator=gen, dtype=F64)
    base = A @ A.T + torch.eye(n, dtype=F64)
    factor = 0.3 * torch.randn(slices, n, 2, generator=gen, dtype=F64)
    expected = torch.stack([base - f @ f.T for f in factor])
    if slices == n:
        with pytest.raises(ValueError, match=r"base \(4, 4\) beside factor \(4, 4, 2\) is ambig"):
            LowRankCovariance(base, factor)
        cov = LowRankCovariance(base, factor, diagonal=False)
        message = r"cov.base is full \(diagonal=False\) but has the mean's shape \(4, 4\)"
    else:
        cov = LowRankCovariance(base, factor)
        shape = rf"\({slices}, {n}\)"
        message = rf"cov.base must have shape {shape} \(diagonal\)"
    assert not cov.base_is_diagonal
    torch.testing.assert_close(cov.dense(), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(cov.variance(), torch.diagonal(expected, dim1=-2, dim2=-1))
    other = torch.randn(slices, n, 3, generator=gen, dtype=F64)
    torch.testing.assert_close(cov.matmul(other), expected @ other, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match=message):
        Gaussian(torch.zeros(slices, n, dtype=F64), cov)
    per_slice = Gaussian(
        torch.zeros(slices, n, dtype=F64), LowRankCovariance(base.expand(slices, n, n), factor)
    )
    torch.testing.assert_close(per_slice.dense_cov(), expected, rtol=0, atol=1e-14)


def test_variances_beside_a_factor_of_as_many_slices_as_points_are_read_as_diagonal():
    """``base (n, n)`` declared ``diagonal=True`` beside ``factor (n, n, m)``: ``n`` rows of
    variances; a diagonal prior of ``n`` slices constrained keeps that reading (the update
    matches the dense formula), and ``diagonal`` must fit the shapes."""
    gen = torch.Generator().manual_seed(18)
    n = 5
    variance = torch.rand(n, n, generator=gen, dtype=F64) + 0.5
    factor = 0.3 * torch.randn(n, n, 1, generator=gen, dtype=F64)
    cov = LowRankCovariance(variance, factor, diagonal=True)
    expected = torch.diag_embed(variance) - factor @ factor.mT
    torch.testing.assert_close(cov.dense(), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(cov.variance(), torch.diagonal(expected, dim1=-2, dim2=-1))
    torch.testing.assert_close(Gaussian(torch.zeros(n, n, dtype=F64), cov).dense_cov(), expected)
    mean = torch.randn(n, n, generator=gen, dtype=F64)
    G = torch.randn(2, n, generator=gen, dtype=F64)
    b = torch.randn(n, 2, generator=gen, dtype=F64)
    posterior = through(LinearConstraint(G, b), Gaussian(mean, variance))
    assert posterior.cov.base_is_diagonal
    for i in range(n):
        new_mean, new_cov = dense_update(mean[i], torch.diag(variance[i]), G, b[i], 0.0)
        np.testing.assert_allclose(posterior.mean[i], new_mean, atol=1e-12)
        np.testing.assert_allclose(posterior.dense_cov()[i], new_cov, atol=1e-12)
    G2, b2 = (
        torch.randn(1, n, generator=gen, dtype=F64),
        torch.randn(n, 1, generator=gen, dtype=F64),
    )
    again = through(LinearConstraint(G2, b2), posterior)  # a low-rank input of n slices
    for i in range(n):
        rows, targets = torch.cat([G, G2]), torch.cat([b[i], b2[i]])
        new_mean, new_cov = dense_update(mean[i], torch.diag(variance[i]), rows, targets, 0.0)
        np.testing.assert_allclose(again.mean[i], new_mean, atol=1e-10)
        np.testing.assert_allclose(again.dense_cov()[i], new_cov, atol=1e-10)
    from physml.constraints import NonNegative

    row = torch.rand(1, n, generator=gen, dtype=F64) + 0.1
    conserved = through(
        LinearConstraint(row, torch.ones(n, 1, dtype=F64)), Gaussian(mean, variance)
    )
    kept = through(NonNegative(), conserved)  # n slices of one row: the one-step route
    assert isinstance(kept.cov, LowRankCovariance) and (conserved.mean < 0).any()
    for i in range(n):
        cov_i = LowRankCovariance(conserved.cov.base[i], conserved.cov.factor[i])
        alone = through(NonNegative(), Gaussian(conserved.mean[i], cov_i))
        np.testing.assert_allclose(kept.mean[i], alone.mean, atol=1e-12)
        np.testing.assert_allclose(kept.dense_cov()[i], alone.dense_cov(), atol=1e-12)
    from physml.tasks.probconserv import _slice  # one time slice of (function, time, x)

    batched = through(LinearConstraint(G, b[:, None]), Gaussian(mean[:, None], variance[:, None]))
    sliced = _slice(batched, 0)  # base (function, x) = (5, 5) beside factor (5, 5, 2)
    torch.testing.assert_close(sliced.dense_cov(), posterior.dense_cov(), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"diagonal=True needs base of shape \(5, 3\)"):
        LowRankCovariance(torch.ones(5, 5, 5), torch.ones(5, 3, 1), diagonal=True)
    with pytest.raises(ValueError, match=r"diagonal=False needs a full base \(\.\.\., 3, 3\)"):
        LowRankCovariance(torch.ones(5, 3), torch.ones(5, 3, 1), diagonal=False)
    with pytest.raises(TypeError, match="diagonal must be True, False or None"):
        LowRankCovariance(torch.ones(3), torch.ones(3, 1), diagonal=1)


def test_correction_goes_where_the_variance_is():
    mean = torch.zeros(10, dtype=F64)
    variance = torch.full((10,), 1e-4, dtype=F64)
    variance[7] = 1.0  # the model is unsure at one point only (a shock, say)
    G = torch.ones(1, 10, dtype=F64)
    out = through(LinearConstraint(G, torch.tensor([1.0])), Gaussian(mean, variance))
    assert out.mean[7] > 0.99 and out.mean.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert out.variance()[7] < 1e-3


def test_hardc_projects_the_mean_and_keeps_the_variance():
    mean, cov, G, b = random_problem(3, 8, 2)
    out = through(LinearConstraint(G, b, projection="euclidean"), Gaussian(mean, cov))
    assert torch.allclose(G @ out.mean, b, atol=1e-12)
    assert torch.equal(out.cov, cov)
    # the smallest Euclidean change: the correction lies in the row space of G
    change = out.mean - mean
    coefficients = torch.linalg.lstsq(G.T, change[:, None]).solution
    assert torch.allclose(G.T @ coefficients, change[:, None], atol=1e-12)


def test_tensor_output_is_projected_in_the_input_dtype():
    mean, _, G, b = random_problem(4, 6, 1, batch=(5,))
    out = through(LinearConstraint(G, b), mean)
    assert out.dtype == F64 and torch.allclose(out @ G.T, b, atol=1e-12)
    # float32 in, float32 out (by design): the float64 projection of the same values, rounded once
    single = through(LinearConstraint(G, b), mean.float())
    assert single.dtype == torch.float32
    assert torch.equal(single, through(LinearConstraint(G, b), mean.float().double()).float())


@pytest.mark.parametrize("rows", [1, 2])  # one row per slice has its own, solve-free route
def test_every_ensemble_member_conserves_and_the_spread_is_the_posterior(rows):
    gen = torch.Generator().manual_seed(5)
    samples = torch.randn(50, 3, 12, generator=gen, dtype=F64)
    G = torch.randn(rows, 12, generator=gen, dtype=F64)
    b = torch.randn(3, rows, generator=gen, dtype=F64)
    prior = Ensemble(samples)
    out = through(LinearConstraint(G, b), prior)
    assert torch.allclose(out.samples @ G.T, b.expand(50, 3, rows), atol=1e-10)
    posterior = through(LinearConstraint(G, b), Gaussian(prior.mean(), prior.covariance()))
    assert torch.allclose(out.mean(), posterior.mean, atol=1e-10)
    assert torch.allclose(out.covariance(), posterior.dense_cov(), atol=1e-10)
    noisy = through(LinearConstraint(G, b, noise=0.3), prior)  # the mean is the posterior's
    target = through(LinearConstraint(G, b, noise=0.3), Gaussian(prior.mean(), prior.covariance()))
    assert torch.allclose(noisy.mean(), target.mean, atol=1e-10)
    assert not torch.allclose(noisy.mean(), out.mean(), atol=1e-3)


def test_the_largest_noise_whose_variance_is_finite_leaves_the_prior_and_a_larger_is_refused():
    """σ_G = 1e150 (σ² = 1e300, finite) moves the mean by ``w (gᵀμ − M) / (gᵀg + σ²)``:
    trapezoid weights w = (1, 2, 2, 2, 1) / 8, prior mass gᵀμ = 2, M = 0.5; the variances lose
    ``w² / σ²``, below their round-off. σ_G = 1e155 squares past float64 (it raised a bare
    OverflowError in the update): refused when the constraint is built, naming noise."""
    grid = Grid1D(5)
    prior = Gaussian(torch.arange(5, dtype=F64), torch.ones(5, dtype=F64))
    out = through(mass_conservation(grid, 0.5, noise=1e150), prior)
    weights = torch.tensor([1.0, 2, 2, 2, 1], dtype=F64) / 8
    torch.testing.assert_close(out.mean, prior.mean - weights * 1.5 / 1e300, rtol=1e-12, atol=0)
    assert torch.equal(out.variance(), prior.variance())
    with pytest.raises(ConstraintError, match=r"^noise must be at most 1\.341e\+154"):
        mass_conservation(grid, 0.5, noise=1e155)
    members = Ensemble(torch.rand(4, 5, dtype=F64, generator=torch.Generator().manual_seed(0)))
    largest = math.sqrt(sys.float_info.max / 3)  # (members − 1) σ² at float64's largest
    through(mass_conservation(grid, 0.5, noise=0.99 * largest), members)
    with pytest.raises(
        ConstraintError, match=r"^noise must be at most 7\.741e\+153 for an ensemble of 4"
    ):
        through(mass_conservation(grid, 0.5, noise=1.3e154), members)


def dense_posterior(X, G, b, noise, cov=None):
    """numpy, one slice: the Gaussian posterior's mean ``μ − K (G μ − b)`` and covariance
    ``(I − K G) Σ``, ``K = Σ Gᵀ (G Σ Gᵀ + σ² I)⁻¹``, ``μ`` the members' mean and ``Σ`` their
    sample covariance unless ``cov`` is given (explicit inverse, dense ``n × n``)."""
    mean, cov = X.mean(0), np.cov(X.T) if cov is None else cov
    gain = cov @ G.T @ np.linalg.inv(G @ cov @ G.T + noise**2 * np.eye(G.shape[0]))
    return mean - gain @ (G @ mean - b), (np.eye(X.shape[1]) - gain @ G) @ cov


def root_gain(cov, G, noise):
    """numpy: the square-root gain ``Σ Gᵀ L⁻ᵀ (L + σ I)⁻¹``, ``L Lᵀ = S = G Σ Gᵀ + σ² I``."""
    S = G @ cov @ G.T + noise**2 * np.eye(G.shape[0])
    root = np.linalg.cholesky(S)
    return cov @ G.T @ np.linalg.inv(root.T) @ np.linalg.inv(root + noise * np.eye(G.shape[0]))


def assert_relative(actual, expected, rtol):
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= rtol * scale, np.abs(actual - expected).max() / scale


@pytest.mark.parametrize("noise", [0.3, 2.0])
@pytest.mark.parametrize("rows", [1, 2, 3])  # one row has its own, solve-free route
def test_a_noisy_ensemble_update_carries_the_gaussian_posterior(rows, noise):
    """``σ > 0`` (square-root update): the members' mean and sample covariance are numpy's dense
    Gaussian posterior ``μ − K (G μ − b)`` and ``(I − K G) Σ``; one gain for all members (the
    old update) would leave the covariance narrower by ``σ² K Kᵀ``, which this must see."""
    rng = np.random.default_rng(21 + rows)
    n, m = 25, 9  # m > rows + 1: the members span the rows
    X = 2 * rng.normal(size=(m, n)) + rng.normal(size=n)
    G = np.ones((1, n)) / n if rows == 1 else rng.normal(size=(rows, n))  # one row: a mass total
    b = G @ X.mean(0) + rng.normal(size=rows)
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b), noise=noise), Ensemble(torch.tensor(X))
    ).samples.numpy()
    mean, cov = dense_posterior(X, G, b, noise)
    assert_relative(out.mean(0), mean, 1e-10)
    assert_relative(np.cov(out.T), cov, 1e-10)
    prior = np.cov(X.T)
    gain = prior @ G.T @ np.linalg.inv(G @ prior @ G.T + noise**2 * np.eye(rows))
    one_gain = X - (X @ G.T - b) @ gain.T  # the under-dispersed update
    assert np.abs(np.cov(one_gain.T) - cov).max() > 1e-4 * np.abs(cov).max()


@pytest.mark.parametrize("rows", [1, 3])
def test_a_shrunk_or_jittered_noisy_update_uses_that_covariance_for_both_gains(rows):
    """Shrinkage (and the ``γ I`` fallback, members − 1 < rows): the mean is the posterior mean
    for that covariance ``C``; the centred members move by ``A − K̃ G A`` with ``K̃`` built from
    ``C``, so their covariance is ``(I − K̃ G) Σ (I − K̃ G)ᵀ`` (``Σ`` the members' own)."""
    rng = np.random.default_rng(40 + rows)
    n, noise = 14, 0.4
    G, b = rng.normal(size=(rows, n)), rng.normal(size=rows)
    for m, shrinkage in ((8, 0.5), (3, 0.0)):  # shrunk; fewer members than rows + 1 (γ I)
        X = rng.normal(size=(m, n)) + rng.normal(size=n)
        out = through(
            LinearConstraint(torch.tensor(G), torch.tensor(b), noise=noise, shrinkage=shrinkage),
            Ensemble(torch.tensor(X)),
        ).samples.numpy()
        prior = np.cov(X.T)
        if shrinkage:
            used = (1 - shrinkage) * prior + shrinkage * np.diag(np.diag(prior))
        elif rows > m - 1:
            used = prior + 1e-3 * np.diag(prior).mean() * np.eye(n)  # jitter × mean variance
        else:  # one row that 3 members span: no fallback
            used = prior
        assert_relative(out.mean(0), dense_posterior(X, G, b, noise, used)[0], 1e-10)
        moved = np.eye(n) - root_gain(used, G, noise) @ G
        assert_relative(np.cov(out.T), moved @ prior @ moved.T, 1e-10)


@pytest.mark.parametrize("rows", [1, 2])
def test_a_noisy_ensemble_update_tends_to_the_exact_one_as_the_noise_vanishes(rows):
    gen = torch.Generator().manual_seed(9)
    samples = torch.randn(12, 3, 20, generator=gen, dtype=F64)
    G = torch.randn(rows, 20, generator=gen, dtype=F64)
    b = torch.randn(3, rows, generator=gen, dtype=F64)
    exact = through(LinearConstraint(G, b), Ensemble(samples)).samples
    nearly = through(LinearConstraint(G, b, noise=1e-9), Ensemble(samples)).samples
    torch.testing.assert_close(nearly, exact, rtol=0, atol=1e-7 * exact.abs().max().item())
    assert not torch.equal(nearly, exact)  # σ > 0 took the square-root route


def test_a_noisy_ensemble_update_has_a_finite_gradient_where_the_members_agree_on_the_rows():
    """Members that agree on both totals make ``G Σ Gᵀ + σ² I = σ² I``: a repeated eigenvalue,
    where an eigendecomposition's backward is NaN; the Cholesky square root's is not."""
    gen = torch.Generator().manual_seed(4)
    G = torch.zeros(2, 10, dtype=F64)
    G[0, :5], G[1, 5:] = 1.0, 1.0  # the mass of each half
    base = torch.randn(10, generator=gen, dtype=F64)
    spread = torch.randn(6, 10, generator=gen, dtype=F64)
    spread = spread - spread[:, :5].mean(1, keepdim=True) * (G[0] > 0)
    spread = spread - spread[:, 5:].mean(1, keepdim=True) * (G[1] > 0)  # both totals equal
    samples = (base + spread).requires_grad_()
    b = torch.tensor([1.0, -2.0], dtype=F64)
    out = through(LinearConstraint(G, b, noise=0.5), Ensemble(samples)).samples
    (out * torch.randn(out.shape, generator=gen, dtype=F64)).sum().backward()
    assert bool(torch.isfinite(samples.grad).all())


@pytest.mark.parametrize("rows", [1, 2])  # 1: mass_conservation on a Grid2D; 2: two rows
def test_a_noisy_ensemble_update_of_batched_frames_is_the_update_of_each_slice(rows):
    """``(member, batch, time, channel, h, w)`` members: every ``(batch, time, channel)`` slice
    is numpy's dense square-root update of its own flattened ``h × w`` members."""
    from pdes import Grid2D

    h, w, m, noise = 5, 6, 8, 0.05
    x, y = np.linspace(0.0, 1.0, h), np.linspace(0.0, 2.0, w)
    rng = np.random.default_rng(30)
    X = rng.normal(size=(m, 2, 3, 2, h, w)) + rng.normal(size=(2, 3, 2, h, w))
    targets = rng.normal(size=(2, 3, 2, rows))
    if rows == 1:
        G = trapezoid_2d(np.eye(h * w).reshape(h * w, h, w), x, y)[None]  # the weights, (1, n)
        grid = Grid2D(Grid1D(h, 0.0, 1.0), Grid1D(w, 0.0, 2.0))
        constraint = mass_conservation(grid, torch.tensor(targets[..., 0]), noise)
    else:
        G = rng.normal(size=(rows, h * w))
        constraint = LinearConstraint(
            torch.tensor(G), torch.tensor(targets), noise=noise, space=(h, w)
        )
    out = through(constraint, Ensemble(torch.tensor(X))).samples.numpy()
    for index in np.ndindex(2, 3, 2):
        members = X[(slice(None), *index)].reshape(m, h * w)
        b = targets[index]
        prior = np.cov(members.T)
        gain = prior @ G.T @ np.linalg.inv(G @ prior @ G.T + noise**2 * np.eye(rows))
        mean = members.mean(0) - gain @ (G @ members.mean(0) - b)
        anomalies = members - members.mean(0)
        expected = mean + anomalies - anomalies @ G.T @ root_gain(prior, G, noise).T
        got = out[(slice(None), *index)].reshape(m, h * w)
        assert_relative(got, expected, 1e-10)
        assert_relative(np.cov(got.T), dense_posterior(members, G, b, noise)[1], 1e-10)


@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("shrinkage", [0.0, 0.5])
def test_members_that_agree_closely_on_a_total_they_all_miss_meet_it_to_round_off(rows, shrinkage):
    """Members 1 ± 1e-4 whose totals all miss by ~1000 spreads: the update must not lose itself
    in cancellation (it is the Gaussian update with the members' covariance)."""
    gen = torch.Generator().manual_seed(11)
    samples = 1.0 + 1e-4 * torch.randn(8, 4, 16, generator=gen, dtype=F64)
    G = torch.rand(rows, 16, generator=gen, dtype=F64)
    b = (samples @ G.T).mean(0) + 0.1
    prior = Ensemble(samples)
    out = through(LinearConstraint(G, b, shrinkage=shrinkage), prior)
    residual = (out.samples @ G.T - b).abs().max()
    assert residual <= 1e-13 * b.abs().max()
    cov = prior.covariance()
    cov = (1 - shrinkage) * cov + shrinkage * torch.diag_embed(torch.diagonal(cov, 0, -2, -1))
    posterior = through(LinearConstraint(G, b), Gaussian(prior.mean(), cov))
    torch.testing.assert_close(out.mean(), posterior.mean, rtol=0, atol=1e-9)


@pytest.mark.parametrize("rows", [1, 2])
def test_members_that_agree_on_every_total_fall_back_to_the_projection(rows):
    """Anomalies with no component along G: the ensemble cannot say where a miss goes, so the
    update is HardC's (through γ I), not round-off blown up into huge corrections."""
    gen = torch.Generator().manual_seed(12)
    G = torch.rand(rows, 16, generator=gen, dtype=F64)
    anomalies = torch.randn(8, 3, 16, generator=gen, dtype=F64)
    anomalies = anomalies - anomalies @ G.T @ torch.linalg.solve(G @ G.T, G)  # G a = 0
    samples = torch.randn(3, 16, generator=gen, dtype=F64) + anomalies
    b = samples[0] @ G.T + 0.3
    out = through(LinearConstraint(G, b), Ensemble(samples)).samples
    hardc = through(LinearConstraint(G, b, projection="euclidean"), Ensemble(samples)).samples
    torch.testing.assert_close(out, hardc, rtol=0, atol=1e-6)


@pytest.mark.parametrize("noise", [1e-9, 1e-5, 1e-2])
@pytest.mark.parametrize(
    ("rows", "members"),
    [(1, "agree-on-every-total"), (2, "agree-on-every-total"), (2, "one-direction")],
    ids=["one-row-agree", "two-rows-agree", "two-rows-one-direction"],
)
def test_a_noisy_update_of_members_that_do_not_span_the_rows_uses_the_jitter(rows, members, noise):
    """Members that cannot say where a row's miss goes (no spread along it, or one direction of
    spread for two rows) take the ``γ I`` fallback whatever ``σ``: with ``σ > 0`` too, the
    square-root update with ``Σ + γ I`` (numpy's dense formulas), which tends to the exact update
    as ``σ → 0`` instead of leaving the rows unmet."""
    rng = np.random.default_rng(60 + rows)
    n, m = 12, 6
    G = rng.random((rows, n)) + 0.1
    if members == "agree-on-every-total":
        anomalies = rng.normal(size=(m, n))
        anomalies -= anomalies @ G.T @ np.linalg.solve(G @ G.T, G)  # G a = 0: every total equal
    else:
        anomalies = rng.normal(size=(m, 1)) * rng.normal(size=n)  # a single direction
    X = rng.normal(size=n) + anomalies
    b = G @ X.mean(0) + 1.0 + rng.random(rows)  # every member misses every row
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b), noise=noise), Ensemble(torch.tensor(X))
    ).samples.numpy()
    prior = np.cov(X.T)
    used = prior + 1e-3 * np.diag(prior).mean() * np.eye(n)  # jitter × mean variance
    mean = dense_posterior(X, G, b, noise, used)[0]
    centred = X - X.mean(0)
    expected = mean + centred - centred @ G.T @ root_gain(used, G, noise).T
    assert_relative(out, expected, 1e-9)
    exact = through(LinearConstraint(torch.tensor(G), torch.tensor(b)), Ensemble(torch.tensor(X)))
    assert np.abs(exact.samples.numpy() @ G.T - b).max() < 1e-12 * np.abs(b).max()
    assert np.abs(out - exact.samples.numpy()).max() < 10 * noise * np.abs(X).max()


@pytest.mark.parametrize("rows", [1, 2])
def test_members_that_all_agree_are_projected_onto_the_rows(rows):
    """No spread at all (mean variance 0, so ``jitter`` × it is 0 too): every member is still
    moved onto the rows, by the Euclidean projection ``x − Gᵀ (G Gᵀ)⁻¹ (G x − b)`` (numpy)."""
    rng = np.random.default_rng(80 + rows)
    G = rng.random((rows, 6)) + 0.1
    x = rng.normal(size=6)
    b = G @ x + 1.0
    X = np.repeat(x[None], 4, axis=0)
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b)), Ensemble(torch.tensor(X))
    ).samples.numpy()
    expected = x - G.T @ np.linalg.solve(G @ G.T, G @ x - b)
    np.testing.assert_allclose(out, np.repeat(expected[None], 4, axis=0), rtol=0, atol=1e-12)


def test_members_varying_only_where_a_row_barely_reaches_take_jitter_everywhere():
    """The members differ at point 0 only, where the row's weight is 1e-7 (pivot 1e-14 of
    ``|G|²``, below :data:`UNSPANNED`): the varying points cannot carry the row, so ``γ I`` acts
    at every point (numpy's ``K = (Σ + γ I) Gᵀ (G (Σ + γ I) Gᵀ)⁻¹``) and the agreeing points take
    the miss, rather than point 0 moving by ~1e7 times it."""
    rng = np.random.default_rng(7)
    n, m = 4, 5
    X = np.tile(rng.normal(size=n), (m, 1))
    X[:, 0] += rng.normal(size=m)
    G = np.array([[1e-7, 1.0, 1.0, 1.0]])
    b = G @ X.mean(0) + 1.0
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b)), Ensemble(torch.tensor(X))
    ).samples.numpy()
    prior = np.cov(X.T)
    used = prior + 1e-3 * np.diag(prior).mean() * np.eye(n)  # jitter × mean variance
    gain = used @ G.T @ np.linalg.inv(G @ used @ G.T)
    expected = X - (X @ G.T - b) @ gain.T
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_a_field_far_from_a_row_met_at_zero_is_projected_without_a_residual_error():
    """``1e8 + (0.1, 0.3, −0.2)`` onto ``Σu = 0``: the result is ~0.3, but the round-off of the
    sum (~1e-8) scales with the field before the update; the check must judge it against that,
    and the result is the exact projection of the stored values (rationals) to that round-off."""
    from fractions import Fraction

    field = torch.tensor([[1e8 + 0.1, 1e8 + 0.3, 1e8 - 0.2]], dtype=F64)
    out = through(LinearConstraint(torch.ones(1, 3, dtype=F64), torch.zeros(1, dtype=F64)), field)
    stored = [Fraction(v) for v in field[0].tolist()]
    exact = [float(v - sum(stored) / 3) for v in stored]
    np.testing.assert_allclose(out[0].numpy(), exact, rtol=0, atol=1e-7)


def test_a_slightly_indefinite_covariance_is_refused_by_its_negative_variance():
    """``[[1, 1.01], [1.01, 1]]`` (eigenvalue −0.01) conditioned on ``u_0 = 0``: the variance left
    at point 1 is ``1 − 1.01² = −0.0201``, 2e-2 of the largest prior one, far beyond round-off."""
    cov = torch.tensor([[1.0, 1.01], [1.01, 1.0]], dtype=F64)
    pin = LinearConstraint(torch.tensor([[1.0, 0.0]], dtype=F64), torch.zeros(1, dtype=F64))
    with pytest.raises(ConstraintError, match=r"negative \(minimum -0\.0201, largest prior"):
        through(pin, Gaussian(torch.zeros(2, dtype=F64), cov))


def test_a_full_covariance_asymmetric_within_round_off_is_symmetrised_and_beyond_it_refused():
    """A full covariance off its transpose by 5e-9 × its largest variance (round-off, within
    :data:`physml.metrics.SYMMETRY`) is read as ``(cov + covᵀ) / 2`` along the rows: the mean
    and what the update takes off the covariance are the dense formula's for that matrix, and
    the rows are met to round-off (its two halves used to disagree: the rows were missed by
    3e-10); the posterior keeps the matrix given as its base (no symmetrised copy), also as a
    low-rank base. Off by 1e-6, ``|(cov − covᵀ) G_iᵀ|`` reaches 2e-7 × its largest variance ×
    ``Σ_j |G_ij|``: it is refused, naming that asymmetry (the error used to blame G's
    conditioning), also as a low-rank base."""
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(6, 6, generator=gen, dtype=F64)
    cov = A @ A.T / 6 + 0.1 * torch.eye(6, dtype=F64)
    mean = torch.randn(6, generator=gen, dtype=F64)
    G, b = torch.randn(2, 6, generator=gen, dtype=F64), torch.randn(2, generator=gen, dtype=F64)
    F = 0.3 * torch.randn(6, 1, generator=gen, dtype=F64)
    skewed = cov.clone()
    skewed[0, 1] += 5e-9 * cov.diagonal().max()
    symmetrised = (skewed + skewed.T) / 2
    low_rank = LowRankCovariance(skewed, F, diagonal=False)
    for prior, read in ((skewed, symmetrised), (low_rank, symmetrised - F @ F.T)):
        out = through(LinearConstraint(G, b), Gaussian(mean, prior))
        expected_mean, expected_cov = dense_update(mean, read, G, b, 0.0)
        assert (G @ out.mean - b).abs().max() < 1e-14
        np.testing.assert_allclose(out.mean.numpy(), expected_mean, rtol=0, atol=1e-13)
        assert out.cov.base is skewed
        taken_off = Gaussian(mean, prior).dense_cov() - out.dense_cov()
        np.testing.assert_allclose(taken_off, read.numpy() - expected_cov, rtol=0, atol=1e-13)
    skewed[0, 1] = cov[0, 1] + 1e-6
    along_rows = ((skewed - skewed.T) @ G.T).abs() / G.abs().sum(1)
    asymmetry = along_rows.max().item() / cov.diagonal().max().item()
    assert asymmetry > SYMMETRY
    with pytest.raises(ConstraintError, match=rf"^cov is not symmetric: .* {asymmetry:.3g} ×"):
        through(LinearConstraint(G, b), Gaussian(mean, skewed))
    low_rank = LowRankCovariance(skewed, torch.zeros(6, 1, dtype=F64), diagonal=False)
    with pytest.raises(ConstraintError, match=r"^cov\.base is not symmetric"):
        through(LinearConstraint(G, b), Gaussian(mean, low_rank))


def test_a_full_prior_shared_by_the_slices_is_read_where_it_is():
    """One full prior expanded over 64 slices (no copy): the update read it as ``(cov + covᵀ) /
    2``, 64 copies of it (33 MiB → 414 MiB at n = 512); now the posterior's base is the tensor
    given, still one matrix, and every slice's mean is the dense formula's."""
    mean, cov, G, b = random_problem(2, 5, 2, batch=(64,))
    shared = cov[0].expand(64, 5, 5)
    out = through(LinearConstraint(G, b), Gaussian(mean, shared))
    assert out.cov.base is shared and out.cov.base.stride(0) == 0
    for index in (0, 63):
        expected_mean, _ = dense_update(mean[index], cov[0], G, b[index], 0.0)
        np.testing.assert_allclose(out.mean[index].numpy(), expected_mean, rtol=0, atol=1e-13)


def test_the_unspanned_threshold_is_the_same_for_one_row_and_for_several():
    """:data:`UNSPANNED` compares ``Σ_m (G_i A_m)²`` with ``|G_i|² Σ_m |A_m|²``, whatever the
    member count: a row the members span by 4e-12 of that (above 1e-12) gets the ensemble
    update, alone and beside a well-spanned row (numpy's ``Σ Gᵀ (G Σ Gᵀ)⁻¹``, not ``γ I``)."""
    from physml.constraints.linear import UNSPANNED

    rng = np.random.default_rng(70)
    n, m = 6, 9
    anomalies = rng.normal(size=(m, n))
    anomalies -= anomalies.mean(0)
    weak = anomalies[:, 1] / np.sqrt((anomalies[:, 1] ** 2).sum())
    anomalies[:, 1] = weak * np.sqrt(4 * UNSPANNED * (anomalies**2).sum())  # ratio ≈ 4e-12
    X = rng.normal(size=n) + anomalies
    for G in (np.eye(n)[[1]], np.eye(n)[[0, 1]]):
        ratio = ((anomalies @ G.T) ** 2).sum(0) / (anomalies**2).sum()
        assert UNSPANNED < ratio[-1] < (m - 1) * UNSPANNED
        b = G @ X.mean(0) + 1e-6
        out = through(
            LinearConstraint(torch.tensor(G), torch.tensor(b)), Ensemble(torch.tensor(X))
        ).samples.numpy()
        prior = np.cov(X.T)
        gain = prior @ G.T @ np.linalg.inv(G @ prior @ G.T)
        assert_relative(out, X - (X @ G.T - b) @ gain.T, 1e-6)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("shrinkage", [0.5, 1.0])
def test_a_shrunk_ensemble_update_is_the_update_with_the_shrunk_covariance(rows, shrinkage):
    gen = torch.Generator().manual_seed(8)
    samples = torch.randn(3, 2, 10, generator=gen, dtype=F64)  # rows 3 > members − 1 = 2
    G = torch.rand(rows, 10, generator=gen, dtype=F64)
    b = torch.randn(2, rows, generator=gen, dtype=F64)
    prior = Ensemble(samples)
    out = through(LinearConstraint(G, b, shrinkage=shrinkage), prior)
    assert torch.allclose(out.samples @ G.T, b.expand(3, 2, rows), atol=1e-10)
    full = prior.covariance()  # (2, 10, 10)
    shrunk = (1 - shrinkage) * full + shrinkage * torch.diag_embed(torch.diagonal(full, 0, -2, -1))
    gain = shrunk @ G.T @ torch.linalg.inv(G @ shrunk @ G.T)  # (2, 10, rows)
    expected = samples - ((samples @ G.T - b)[..., None, :] * gain).sum(-1)
    assert torch.allclose(out.samples, expected, atol=1e-10)
    if shrinkage == 1.0 and rows == 1:  # each point moves in proportion to its variance
        moved = (samples - out.samples) / torch.diagonal(full, 0, -2, -1)
        assert torch.allclose(moved / G[0], (moved / G[0])[..., :1].expand_as(moved))
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ConstraintError, match=r"shrinkage must be a number in \[0, 1\]"):
            LinearConstraint(G, b, shrinkage=bad)


def test_mass_conservation_on_a_grid_over_time():
    grid = Grid1D(21, 0.0, 2.0)
    times = torch.linspace(0, 1, 6, dtype=F64)
    inflow = torch.stack([torch.cos(times), 2 * torch.ones(6, dtype=F64)])  # (sample, time)
    mass = 1.0 + cumulative_inflow(times, inflow)
    assert torch.allclose(mass[1], 1.0 + 2 * times)  # the trapezoid rule is exact for constants
    gen = torch.Generator().manual_seed(6)
    mean = torch.randn(2, 6, 21, generator=gen, dtype=F64)
    variance = torch.rand(2, 6, 21, generator=gen, dtype=F64)
    out = through(mass_conservation(grid, mass), Gaussian(mean, variance))
    assert torch.allclose(grid.integrate(out.mean), mass, atol=1e-12)


def test_a_per_sample_total_mass_written_batch_only_is_refused_by_its_own_name():
    """``total_mass`` ``(B,)`` on a ``(B, C, x)`` field (C ≠ B): the error names total_mass with
    the shape given and says how a per-sample total is written."""
    grid = Grid1D(9)
    constraint = mass_conservation(grid, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    with pytest.raises(
        ConstraintError,
        match=r"total_mass of shape \(3,\) does not fit output of shape \(3, 2, 9\): total_mass "
        r"must broadcast to \(3, 2\).*from the right.*per sample is written \(3, 1\)",
    ):
        through(constraint, torch.zeros(3, 2, 9, dtype=F64))
    with pytest.raises(ConstraintError, match=r"total_mass of shape \(4, 3, 2\) does not fit"):
        through(mass_conservation(grid, torch.zeros(4, 3, 2)), torch.zeros(3, 2, 9, dtype=F64))


def test_a_single_fields_total_mass_given_with_an_axis_is_refused_with_the_0d_form():
    """``total_mass`` ``(1,)`` on one field ``(x,)`` adds an axis: refused as before, the error
    saying that a single field's total is a 0-d tensor or a float."""
    grid = Grid1D(9)
    field = Gaussian(torch.zeros(9, dtype=F64), torch.ones(9, dtype=F64))
    with pytest.raises(
        ConstraintError,
        match=r"total_mass of shape \(1,\) does not fit mean of shape \(9,\): total_mass must "
        r"broadcast to \(\).*a single field's total_mass is a 0-d tensor or a float",
    ):
        through(mass_conservation(grid, torch.tensor([0.3], dtype=F64)), field)
    out = through(mass_conservation(grid, 0.3), field)
    assert grid.integrate(out.mean).item() == pytest.approx(0.3, rel=1e-14)


def test_total_mass_broadcasts_from_the_right_as_in_numpy():
    """``(B, 1)`` is one total per sample, ``(C,)`` one per channel (also when B == C)."""
    grid = Grid1D(9, 0.0, 2.0)
    field = torch.rand(3, 3, 9, dtype=F64)
    per_sample = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    out = through(mass_conservation(grid, per_sample[:, None]), field)
    torch.testing.assert_close(grid.integrate(out), per_sample[:, None].expand(3, 3))
    out = through(mass_conservation(grid, per_sample), field)
    torch.testing.assert_close(grid.integrate(out), per_sample.expand(3, 3))


@pytest.mark.parametrize("members, rows", [(2, 1), (3, 2)])
def test_an_exact_update_with_rows_m_minus_1_collapses_the_ensemble_and_warns(members, rows):
    """``m`` members span ``m − 1`` directions: ``k = m − 1`` exact rows leave them equal (every
    member at the same point), which the update says; shrinkage keeps a spread and no warning."""
    gen = torch.Generator().manual_seed(3)
    samples = torch.rand(members, 2, 9, generator=gen, dtype=F64)
    G = torch.rand(rows, 9, generator=gen, dtype=F64) + 0.1
    b = torch.ones(rows, dtype=F64)
    with pytest.warns(UserWarning, match=rf"ensemble of {members} members with {rows} row"):
        out = through(LinearConstraint(G, b), Ensemble(samples)).samples
    torch.testing.assert_close(out @ G.T, b.expand(members, 2, rows))
    assert (out - out[0]).abs().max() < 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spread = through(LinearConstraint(G, b, shrinkage=0.5), Ensemble(samples)).samples
        more = torch.rand(members + 1, 2, 9, generator=gen, dtype=F64)
        through(LinearConstraint(G, b), Ensemble(more))
    assert (spread - spread[0]).abs().max() > 1e-3


def test_the_collapse_warning_names_the_line_that_called_the_model():
    """The warning is raised deep inside the update, under torch's module call: its stack level
    points at the first frame outside physml and torch, here this file's line."""
    samples = torch.rand(2, 3, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = constrain(nn.Identity(), mass_conservation(Grid1D(9), torch.ones(3, dtype=F64)))
    with pytest.warns(UserWarning, match="leaves every member equal") as caught:
        line = inspect.currentframe().f_lineno + 1
        model(Ensemble(samples))
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]


@pytest.mark.parametrize("walls", [False, True])
def test_a_write_to_G_through_data_is_met_by_the_next_update(walls):
    """``G.data.copy_`` (an EMA or averaging writing the buffers) leaves ``G``'s version counter
    alone: the next update must use the projector of the new rows (with and without boundary
    conditions kept), meeting them exactly."""
    from pdes import Dirichlet
    from physml.constraints import BoundaryCondition

    gen = torch.Generator().manual_seed(4)
    G = torch.ones(1, 9, dtype=F64)
    b = torch.tensor([2.0], dtype=F64)
    constraint = LinearConstraint(G, b)
    conditions = [BoundaryCondition(Dirichlet(0.1, 0.2), Grid1D(9))] if walls else []
    model = constrain(nn.Identity(), *conditions, constraint)
    x = torch.rand(3, 1, 9, generator=gen, dtype=F64)
    model(x)
    new = torch.rand(1, 9, generator=gen, dtype=F64) + 0.5
    constraint.G.data.copy_(new)
    out = model(x)
    torch.testing.assert_close(out @ new.T, b.expand(3, 1, 1), rtol=0, atol=1e-12)
    if walls:
        assert torch.equal(out[..., 0], torch.full((3, 1), 0.1, dtype=F64))
        assert torch.equal(out[..., -1], torch.full((3, 1), 0.2, dtype=F64))


@pytest.mark.parametrize("built_in_inference_mode", [False, True])
@pytest.mark.parametrize("kind", ["tensor", "walls", "gaussian", "ensemble", "nonnegative"])
def test_a_call_under_inference_mode_leaves_the_calls_with_gradients_differentiable(
    kind, built_in_inference_mode
):
    """A validation pass under ``torch.inference_mode()`` between training calls: the cached
    rows used to be inference tensors afterwards, and every later call with a gradient raised
    "Inference tensors cannot be saved for backward". The gradient of ``c · output``, by hand,
    for one row ``w``: ``c − w (c·Σw) / (w·Σw)`` with ``Σ = I`` (a tensor), ``diag(v)`` (a
    Gaussian's variances) or the members' covariance (their mean, members ``u + s_m``, ``Σ_m s_m
    = 0``); after Dirichlet walls ``c − w (c·w) / |w|²`` inside, ``w`` and ``c`` zero at the
    walls (they are set, and the projection keeps them); NonNegative pins the negative point
    ``p`` at 0 and moves the others along ``w`` by ``w_p u_p / Σ_{j≠p} w_j²``: ``c`` at the
    others, ``w_p (c·w)_{j≠p} / Σ_{j≠p} w_j²`` at ``p``. Constraints built under inference mode
    (in an evaluation function) failed at once ("Inference tensors do not track version
    counter") and could not train later."""
    from pdes import Dirichlet
    from physml.constraints import BoundaryCondition, NonNegative

    building = torch.inference_mode() if built_in_inference_mode else contextlib.nullcontext()
    grid = Grid1D(6, 0.0, 1.0)
    w = grid.weights(F64)
    with building:
        mass = mass_conservation(grid, 0.5)
        bc = BoundaryCondition(Dirichlet(0.1, 0.2), grid)
        nonnegative = NonNegative(keep=mass)
    c = torch.arange(1.0, 7.0, dtype=F64)
    field = torch.tensor([0.5, 0.6, -0.01, 0.7, 0.4, 0.5], dtype=F64)
    spread = torch.tensor(
        [[0.1, -0.2, 0.3, 0.0, 0.2, -0.1], [-0.1, 0.3, -0.2, 0.1, -0.2, 0.0]], dtype=F64
    )
    spread = torch.cat([spread, -spread.sum(0, keepdim=True)])
    layer, wrap, read = mass, (lambda u: u), (lambda out: out)
    if kind in ("tensor", "walls"):
        covariance = torch.eye(6, dtype=F64)
    elif kind == "gaussian":
        variances = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=F64)
        covariance = torch.diag(variances)
        wrap, read = (lambda u: Gaussian(u, variances)), (lambda out: out.mean)
    elif kind == "ensemble":
        covariance = spread.T @ spread / (len(spread) - 1)
        wrap, read = (lambda u: Ensemble(u + spread)), (lambda out: out.samples.mean(0))
    if kind == "nonnegative":
        layer, free = nonnegative, field >= 0
        moved = w[~free] * (c * w)[free].sum() / w[free].square().sum()
        expected = torch.where(free, c, moved)
    elif kind == "walls":
        layer = constrain(nn.Identity(), bc, mass)
        inside = torch.tensor([0.0, 1, 1, 1, 1, 0], dtype=F64)
        expected = inside * (c - w * ((c * w * inside).sum() / (w * inside).square().sum()))
    else:
        expected = c - w * (c @ covariance @ w) / (w @ covariance @ w)
    for step in range(4):  # under inference mode, with gradient, and again
        if step % 2 == 0:
            with torch.inference_mode():
                layer(wrap(field.clone()))
            continue
        u = field.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(read(layer(wrap(u))) @ c, u)
        torch.testing.assert_close(gradient, expected, rtol=0, atol=1e-12)


def test_nonnegative_after_a_collapsed_ensemble_says_the_members_are_equal():
    from physml.constraints import NonNegative

    grid = Grid1D(9)
    gen = torch.Generator().manual_seed(0)
    samples = torch.rand(2, 1, 1, 9, generator=gen, dtype=F64) - 0.3
    mass = mass_conservation(grid, torch.full((1, 1), 0.05, dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        collapsed = through(mass, Ensemble(samples)).samples
    assert (collapsed.min() < 0) and (collapsed - collapsed[0]).abs().max() < 1e-12
    with pytest.raises(
        ConstraintError, match=r"members are all equal.*use more members or shrinkage > 0"
    ):
        through(NonNegative(keep=mass), Ensemble(collapsed))
    # members agree on four points that hold more than the total, and differ elsewhere
    spread = torch.ones(2, 1, 1, 9, dtype=F64)
    spread[..., 4:] = -0.5 + 0.01 * torch.arange(5, dtype=F64)
    spread[1, ..., 4:] -= 0.02 * torch.arange(1, 6, dtype=F64)
    with pytest.raises(ConstraintError, match="cannot move") as refused:
        through(NonNegative(keep=mass), Ensemble(spread))
    assert "members are all equal" not in str(refused.value)


def test_cumulative_inflow_is_the_trapezoid_rule_on_uneven_times():
    # the trapezoid rule is exact for a linear rate: ∫₀ᵗ s ds = t²/2; dyadic times keep it exact
    times = torch.tensor([0.0, 0.25, 0.5, 1.0, 2.0], dtype=F64)
    rates = torch.stack([times, torch.full_like(times, 3.0)])
    expected = torch.stack([times.square() / 2, 3 * times])
    assert torch.equal(cumulative_inflow(times, rates), expected)


class Toy(nn.Module):
    """A model the toolkit has never seen: returns a Gaussian over 5 points."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5, dtype=F64))

    def forward(self, x):
        return Gaussian(self.scale * x, torch.ones_like(x))


def test_constrain_wraps_any_model_and_binds_input_dependent_targets():
    G = torch.ones(1, 5, dtype=F64)
    model = constrain(Toy(), LinearConstraint(G, lambda x: x.sum(-1, keepdim=True)))
    x = torch.randn(3, 5, dtype=F64)
    out = model(x)
    assert isinstance(out, Gaussian)
    assert torch.allclose(out.mean.sum(-1), x.sum(-1), atol=1e-12)
    out.mean.sum().backward()
    assert model.model.scale.grad is not None


@pytest.mark.parametrize(
    "G, b, kwargs, match",
    [
        (torch.zeros(1, 4), torch.zeros(1), {}, "zero rows"),
        (torch.tensor([[1.0, 2, 3, 4], [2.0, 4, 6, 8]]), torch.zeros(2), {}, "linearly dependent"),
        (torch.ones(4), torch.zeros(1), {}, r"shape \(k, n\)"),
        (torch.ones(1, 4), torch.zeros(3), {}, r"b must have shape \(\.\.\., 1\)"),
        (torch.ones(1, 4), torch.tensor(0.0), {}, r"^b must have shape \(\.\.\., 1\) .*got \(\)"),
        (torch.ones(1, 4), torch.tensor([float("nan")]), {}, "b contains NaN"),
        (torch.tensor([[1.0, float("inf"), 0, 0]]), torch.zeros(1), {}, "G contains NaN"),
        (torch.ones(1, 4), torch.zeros(1), {"noise": -0.1}, "noise must be"),
        (torch.ones(1, 4), torch.zeros(1), {"projection": "oblique"}, "projection must be"),
    ],
)
def test_bad_constraints(G, b, kwargs, match):
    with pytest.raises(ConstraintError, match=match):
        LinearConstraint(G, b, **kwargs)


def test_bad_outputs():
    constraint = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64))
    with pytest.raises(ConstraintError, match="5 points on its last axis but G has 4"):
        through(constraint, Gaussian(torch.zeros(5, dtype=F64), torch.ones(5, dtype=F64)))
    wrong_slices = mass_conservation(Grid1D(4), torch.zeros(3, 5, dtype=F64))  # (function, time)
    with pytest.raises(ConstraintError, match=r"does not fit mean of shape \(2, 5, 4\)"):
        through(
            wrong_slices, Gaussian(torch.zeros(2, 5, 4, dtype=F64), torch.ones(2, 5, 4, dtype=F64))
        )
    with pytest.raises(ConstraintError, match="does not fit samples"):
        through(wrong_slices, Ensemble(torch.zeros(4, 2, 5, 4, dtype=F64)))
    with pytest.raises(ValueError, match="cov must have shape"):
        Gaussian(torch.zeros(4), torch.ones(3))
    with pytest.raises(ValueError, match="mean contains NaN"):
        Gaussian(torch.tensor([0.0, float("nan")]), torch.ones(2))
    with pytest.raises(ValueError, match="diagonal covariance must be >= 0"):
        Gaussian(torch.zeros(2), torch.tensor([1.0, -1.0]))
    indefinite = torch.diag(torch.tensor([1.0, -5.0, 1.0, 1.0], dtype=F64))
    with pytest.raises(ConstraintError, match="not positive definite"):
        through(constraint, Gaussian(torch.zeros(4, dtype=F64), indefinite))
    slight = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.5], dtype=F64))  # G Σ Gᵀ > 0 still
    strict = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1), check_psd=True)
    with pytest.raises(ConstraintError, match="not positive semi-definite"):
        through(strict, Gaussian(torch.zeros(4, dtype=F64), slight))
    noisy = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1), noise=1.0)
    with pytest.raises(ConstraintError, match="not positive definite"):  # G Σ Gᵀ + σ² = −1
        through(noisy, Gaussian(torch.zeros(4, dtype=F64), indefinite))
    with pytest.raises(ConstraintError, match="not positive semi-definite"):  # a variance < 0
        through(noisy, Gaussian(torch.zeros(4, dtype=F64), slight))
    singular = torch.zeros(4, 4, dtype=F64)  # no uncertainty at all and no noise: infeasible
    with pytest.raises(ConstraintError, match="not positive definite"):
        through(constraint, Gaussian(torch.ones(4, dtype=F64), singular))
    with pytest.raises(ConstraintError, match="cannot|applies to"):
        through(constraint, "not an output")
    with pytest.raises(ValueError, match="at least 2 members"):
        Ensemble(torch.zeros(1, 4))
    with pytest.raises(ConstraintError, match="at least one constraint"):
        constrain(Toy())


def test_equals_gpytorch_conditioning_of_the_joint_gaussian():
    """gpytorch's exact-GP posterior over the points of u, given noisy observations y = G u + ε."""
    gpytorch = pytest.importorskip("gpytorch")
    mean, cov, G, b = random_problem(7, 7, 2)
    noise = 0.1
    n, m = 7, 2
    joint_mean = torch.cat([mean, G @ mean])
    joint_cov = torch.cat(
        [torch.cat([cov, cov @ G.T], 1), torch.cat([G @ cov, G @ cov @ G.T], 1)], 0
    )

    class IndexMean(gpytorch.means.Mean):
        def forward(self, x):
            return joint_mean[x[..., 0].long()]

    class IndexKernel(gpytorch.kernels.Kernel):
        def forward(self, x1, x2, diag=False, **params):
            block = joint_cov[x1[..., 0].long()][..., x2[..., 0].long()]
            return torch.diagonal(block, dim1=-2, dim2=-1) if diag else block

    class JointModel(gpytorch.models.ExactGP):
        def __init__(self, train_x, train_y, likelihood):
            super().__init__(train_x, train_y, likelihood)
            self.mean_module, self.covar_module = IndexMean(), IndexKernel()

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(x), self.covar_module(x)
            )

    observed = torch.arange(n, n + m, dtype=F64)[:, None]
    likelihood = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(
        noise=torch.full((m,), noise**2, dtype=F64)
    ).double()
    model = JointModel(observed, b, likelihood).double().eval()
    with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
        posterior = model(torch.arange(n, dtype=F64)[:, None])
        reference_mean, reference_cov = posterior.mean, posterior.covariance_matrix
    ours = through(LinearConstraint(G, b, noise=noise), Gaussian(mean, cov))
    assert torch.allclose(ours.mean, reference_mean, atol=1e-8)
    assert torch.allclose(ours.dense_cov(), reference_cov, atol=1e-8)


def test_nonnegativity_after_conservation_keeps_the_mass_and_matches_the_qp():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    from physml.constraints import NonNegative

    x = torch.linspace(0, 1, 12, dtype=F64)
    mean = torch.exp(-20 * (x - 0.3) ** 2) - 0.15  # negative tails
    cov = 0.02 * torch.exp(-((x[:, None] - x[None, :]) ** 2) / 0.02) + 1e-4 * torch.eye(12)
    G = torch.full((1, 12), 1.0 / 12, dtype=F64)
    b = torch.tensor([0.2], dtype=F64)
    conserved = through(LinearConstraint(G, b), Gaussian(mean, cov))
    assert (conserved.mean < 0).any()
    out = through(NonNegative(), conserved)
    assert (out.mean >= 0).all()
    assert torch.allclose(G @ out.mean, b, atol=1e-10)
    precision = np.linalg.inv(cov.numpy())
    result = scipy_optimize.minimize(
        lambda u: (u - mean.numpy()) @ precision @ (u - mean.numpy()),
        np.clip(conserved.mean.numpy(), 0, None),
        jac=lambda u: 2 * precision @ (u - mean.numpy()),
        constraints=[{"type": "eq", "fun": lambda u: G.numpy() @ u - b.numpy()}],
        bounds=[(0, None)] * 12,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert result.success
    assert np.allclose(out.mean.numpy(), result.x, atol=1e-6)
    untouched = through(NonNegative(), Gaussian(mean.abs(), cov))
    assert torch.equal(untouched.mean, mean.abs())
    with pytest.raises(ConstraintError, match="NonNegative on a tensor needs keep="):
        through(NonNegative(), mean)


def test_nonnegativity_on_members_keeps_the_walls_an_earlier_condition_fixed():
    """Walls no member varies at (set by a Dirichlet condition) stay where they are; a negative
    point no member varies at still moves (γ), and the mass stays exact."""
    from pdes import Dirichlet
    from physml.constraints import BoundaryCondition, NonNegative

    grid = Grid1D(10)
    target = torch.full((2, 1), 0.5, dtype=F64)
    walls = BoundaryCondition(Dirichlet(0.1, 0.2), grid)
    mass = mass_conservation(grid, target)
    gen = torch.Generator().manual_seed(3)
    samples = torch.rand(5, 2, 1, 10, generator=gen, dtype=F64) - 0.3
    samples[:, :, :, 4] = -0.05  # every member agrees on a negative value here
    model = constrain(nn.Identity(), walls, mass, NonNegative(keep=mass))
    out = model(Ensemble(samples)).samples
    assert out.min() >= 0 and (out[..., 4] >= 0).all()
    assert torch.equal(out[..., 0], torch.full_like(out[..., 0], 0.1))
    assert torch.equal(out[..., -1], torch.full_like(out[..., -1], 0.2))
    assert torch.allclose(grid.integrate(out), target.expand(5, 2, 1), rtol=0, atol=1e-14)


def test_nonnegativity_of_a_tensor_is_the_euclidean_program_keeping_the_row():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    from physml.constraints import NonNegative

    grid = Grid1D(12)
    x = torch.linspace(0, 1, 12, dtype=F64)
    field = torch.stack([torch.exp(-20 * (x - 0.3) ** 2) - 0.15, 0.4 - x])[:, None]  # (2, 1, 12)
    mass = mass_conservation(grid, torch.tensor([[0.2], [0.3]], dtype=F64))
    hardc = constrain(nn.Identity(), mass)(field)
    out = constrain(nn.Identity(), mass, NonNegative(keep=mass))(field)
    assert out.min() >= 0
    torch.testing.assert_close(grid.integrate(out), grid.integrate(hardc), rtol=0, atol=1e-14)
    w = grid.weights(dtype=F64).numpy()
    for row in range(2):
        start = hardc[row, 0].numpy()
        result = scipy_optimize.minimize(
            lambda u, start=start: ((u - start) ** 2).sum(),
            np.clip(start, 0, None),
            jac=lambda u, start=start: 2 * (u - start),
            constraints=[{"type": "eq", "fun": lambda u, start=start: w @ u - w @ start}],
            bounds=[(0, None)] * 12,
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert result.success
        assert np.allclose(out[row, 0].numpy(), result.x, atol=1e-6)


# ------------------------------------------------------------------------------ dtype and device

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (F64, 1e-12)])
def test_every_output_kind_keeps_its_dtype_and_device(dtype, tolerance, device):
    gen = torch.Generator().manual_seed(10)
    G = torch.randn(2, 7, generator=gen, dtype=F64)
    b = torch.randn(3, 2, generator=gen, dtype=F64)
    field = torch.randn(3, 7, generator=gen, dtype=F64).to(device, dtype)
    variance = (torch.rand(3, 7, generator=gen, dtype=F64) + 0.1).to(device, dtype)
    members = torch.randn(5, 3, 7, generator=gen, dtype=F64).to(device, dtype)
    constraint = LinearConstraint(G, b)

    def check(values):
        assert values.dtype == dtype and values.device == field.device
        residual = values.double().cpu() @ G.T - b
        scale = values.double().cpu().abs() @ G.abs().T + b.abs()
        assert (residual.abs() <= tolerance * scale).all()

    check(through(constraint, field))
    gaussian = through(constraint, Gaussian(field, variance))
    check(gaussian.mean)
    for part in (gaussian.cov.base, gaussian.cov.factor):
        assert part.dtype == dtype and part.device == field.device
    full = through(constraint, Gaussian(field, torch.diag_embed(variance)))
    check(full.mean)
    assert full.dense_cov().dtype == dtype
    ensemble = through(constraint, Ensemble(members))
    assert ensemble.samples.shape == members.shape
    for member in ensemble.samples:
        check(member)


def test_a_scalar_total_mass_constrains_a_single_field():
    grid = Grid1D(9, 0.0, 2.0)
    field = torch.linspace(0.0, 1.0, 9, dtype=F64) ** 2
    out = through(mass_conservation(grid, 3.0), field)
    assert out.shape == (9,) and grid.integrate(out).item() == pytest.approx(3.0, abs=1e-12)
    gaussian = through(mass_conservation(grid, 3.0), Gaussian(field, torch.ones(9, dtype=F64)))
    assert grid.integrate(gaussian.mean).item() == pytest.approx(3.0, abs=1e-12)


# ------------------------------------------------------------------------------ layouts


def trapezoid_2d(values, x, y):
    """``∫∫ u`` over the last two axes ``(h, w)`` by the trapezoid rule, independent of pdes."""
    inner = np.sum((values[..., 1:] + values[..., :-1]) * np.diff(y) / 2, axis=-1)
    return np.sum((inner[..., 1:] + inner[..., :-1]) * np.diff(x) / 2, axis=-1)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    frames=st.one_of(st.none(), st.integers(1, 3)),
    batch=st.integers(1, 3),
    channels=st.integers(1, 3),
    h=st.integers(3, 9),
    w=st.integers(3, 9),
    x_range=st.tuples(st.floats(-2.0, 1.0), st.floats(0.2, 3.0)),
    y_range=st.tuples(st.floats(-2.0, 1.0), st.floats(0.2, 3.0)),
    dtype=st.sampled_from([torch.float32, F64]),
    restrict=st.booleans(),
    named=st.booleans(),
)
def test_grid2d_conservation_on_every_frame_and_channel(
    seed, frames, batch, channels, h, w, x_range, y_range, dtype, restrict, named
):
    """(b, c, h, w) and (b, t, c, h, w): one row per frame and channel, integrals as numpy's."""
    from pdes import Grid2D

    if restrict:
        channels = 3  # only channel 1 conserved; 0 and 2 must not move
    leading = (batch, channels) if frames is None else (batch, frames, channels)
    (x0, dx_total), (y0, dy_total) = x_range, y_range
    grid = Grid2D(Grid1D(h, x0, x0 + dx_total), Grid1D(w, y0, y0 + dy_total))
    gen = torch.Generator().manual_seed(seed)
    field = torch.randn(*leading, h, w, generator=gen, dtype=F64).to(dtype)
    conserved = leading[:-1] + ((1,) if restrict else (channels,))
    mass = 4 * torch.rand(conserved, generator=gen, dtype=F64) - 2
    layout = ("bchw" if frames is None else "btchw") if named else None
    kept = (1,) if restrict else None
    out = through(mass_conservation(grid, mass, channels=kept, layout=layout), field)
    assert out.shape == field.shape and out.dtype == dtype
    values = out.double().numpy()
    x = np.linspace(x0, x0 + dx_total, h)
    y = np.linspace(y0, y0 + dy_total, w)
    integral = trapezoid_2d(values, x, y)  # leading shape
    scale = trapezoid_2d(np.abs(values), x, y) + np.abs(integral)
    rtol = 1e-6 if dtype == torch.float32 else 1e-10
    if restrict:
        integral, scale = integral[..., 1:2], scale[..., 1:2]
        assert torch.equal(out[..., 0, :, :], field[..., 0, :, :])
        assert torch.equal(out[..., 2, :, :], field[..., 2, :, :])
    assert np.all(np.abs(integral - mass.numpy()) <= rtol * scale)


def test_a_gaussian_on_a_grid2d_is_conditioned_over_its_flattened_points():
    """A diagonal or a full Gaussian over the ``h·w`` points flattened: the textbook update with
    the trapezoid weights as the row, its mass exact; the same as the flattened-Grid1D recipe
    with the 2-D weights."""
    from pdes import Grid2D

    h, w = 4, 5
    grid = Grid2D(Grid1D(h, 0.0, 1.0), Grid1D(w, 0.0, 2.0))
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(2, 3, h, w, generator=gen, dtype=F64)
    variance = torch.rand(2, 3, h, w, generator=gen, dtype=F64) + 0.1
    mass = torch.randn(2, 3, generator=gen, dtype=F64)
    x, y = np.linspace(0.0, 1.0, h), np.linspace(0.0, 2.0, w)
    row = trapezoid_2d(np.eye(h * w).reshape(h * w, h, w), x, y)[None]
    full = torch.diag_embed(variance.flatten(-2)) + 0.05
    recipe = mass_conservation(Grid1D(h * w), mass, weights=grid.weights(F64).flatten())
    diagonal = Gaussian(mean.flatten(-2), variance.flatten(-2))
    priors = [(diagonal, diagonal), (Gaussian(mean.flatten(-2), full),) * 2]
    for prior, flat_prior in priors:
        out = through(mass_conservation(grid, mass), prior)
        assert out.mean.shape == (2, 3, h * w)
        integral = trapezoid_2d(out.mean.unflatten(-1, (h, w)).numpy(), x, y)
        np.testing.assert_allclose(integral, mass.numpy(), rtol=0, atol=1e-12)
        expected = through(recipe, flat_prior)
        torch.testing.assert_close(out.mean, expected.mean, rtol=0, atol=1e-13)
        torch.testing.assert_close(out.dense_cov(), expected.dense_cov(), rtol=0, atol=1e-13)
        cov = flat_prior.dense_cov()
        for i, j in ((0, 0), (1, 2)):
            new_mean, new_cov = dense_update(
                flat_prior.mean[i, j], cov[i, j], row, mass[i, j, None].numpy(), 0.0
            )
            np.testing.assert_allclose(out.mean[i, j].numpy(), new_mean, rtol=0, atol=1e-12)
            np.testing.assert_allclose(out.dense_cov()[i, j].numpy(), new_cov, rtol=0, atol=1e-12)
    hardc = through(mass_conservation(grid, mass, projection="euclidean"), diagonal)
    assert torch.equal(hardc.cov, variance.flatten(-2))
    integral = trapezoid_2d(hardc.mean.unflatten(-1, (h, w)).numpy(), x, y)
    np.testing.assert_allclose(integral, mass.numpy(), rtol=0, atol=1e-12)


def test_a_gaussian_over_rows_of_a_grid2d_or_with_channels_is_refused_with_a_recipe():
    """A full covariance over the last axis ``w`` alone cannot be read over the grid's points,
    and a diagonal one ``(b, c, h, w)`` would come back in another shape, ``(b, c, h·w)``;
    ``channels`` is not for a Gaussian: each says what to give instead."""
    from pdes import Grid2D

    grid = Grid2D(Grid1D(4), Grid1D(5))
    mean, variance = torch.zeros(2, 1, 4, 5, dtype=F64), torch.ones(2, 1, 4, 5, dtype=F64)
    per_row = Gaussian(mean, torch.diag_embed(variance))
    for unflattened in (per_row, Gaussian(mean, variance)):
        with pytest.raises(ConstraintError, match=r"20 points \(4, 5\) flattened.*mean.flatten"):
            through(mass_conservation(grid, torch.zeros(2, 1)), unflattened)
    with pytest.raises(ConstraintError, match=r"channels=\(0,\) is not supported for a Gaussian"):
        through(mass_conservation(grid, torch.zeros(2, 1), channels=(0,)), Gaussian(mean, variance))


@pytest.mark.parametrize("dirichlet_last", [True, False])
def test_conservation_after_walls_meeting_at_corners_keeps_the_dirichlet_walls_bitwise(
    dirichlet_last,
):
    """Dirichlet walls on x, Neumann on y: the corners sit in both conditions' rows, so the
    projection keeping them mixes the rows; the Dirichlet wall points must still not move at all."""
    from pdes import Dirichlet, Grid2D, Neumann
    from physml.constraints import BoundaryCondition

    h, w = 9, 7
    grid = Grid2D(Grid1D(h, 0.0, 1.0), Grid1D(w, 0.0, 2.0))
    x_walls = BoundaryCondition(Dirichlet(0.1, 0.2), Grid1D(h, 0.0, 1.0), axis=-2)
    y_walls = BoundaryCondition(Neumann(0.3, -0.4), Grid1D(w, 0.0, 2.0), axis=-1)
    order = (y_walls, x_walls) if dirichlet_last else (x_walls, y_walls)
    mass = torch.full((3, 1), 0.5, dtype=F64)
    field = torch.rand(3, 1, h, w, generator=torch.Generator().manual_seed(0), dtype=F64)
    walled = field
    for condition in order:
        walled = condition.enforce(walled)
    out = constrain(nn.Identity(), *order, mass_conservation(grid, mass))(field)
    assert torch.equal(out[..., 0, :], walled[..., 0, :])
    assert torch.equal(out[..., -1, :], walled[..., -1, :])

    def wall_fluxes(u):  # the Neumann rows 3u₀ − 4u₁ + u₂ at both y walls (flux up to 2dy)
        return torch.stack(
            [
                3 * u[..., 0] - 4 * u[..., 1] + u[..., 2],
                3 * u[..., -1] - 4 * u[..., -2] + u[..., -3],
            ]
        )

    torch.testing.assert_close(wall_fluxes(out), wall_fluxes(walled), rtol=0, atol=1e-13)
    torch.testing.assert_close(grid.integrate(out), mass, rtol=0, atol=1e-13)


def test_grid1d_layouts_and_their_errors():
    from pdes import Grid2D

    grid = Grid1D(11, -1.0, 2.0)
    weights = np.full(11, 0.3)
    weights[[0, -1]] = 0.15
    gen = torch.Generator().manual_seed(11)
    bcx = torch.randn(2, 3, 11, generator=gen, dtype=F64)
    mass = torch.randn(2, 3, generator=gen, dtype=F64)
    out = through(mass_conservation(grid, mass), bcx)
    assert np.allclose(out.numpy() @ weights, mass.numpy(), rtol=0, atol=1e-12)
    btcx = torch.randn(2, 4, 3, 11, generator=gen, dtype=F64)
    mass = torch.randn(2, 4, 3, generator=gen, dtype=F64)
    out = through(mass_conservation(grid, mass, layout="btcx"), btcx)
    assert np.allclose(out.numpy() @ weights, mass.numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ConstraintError, match="layout"):
        through(mass_conservation(grid, mass), btcx)  # 4 axes: (b, t, c, x) or (b, c, h, w)?
    with pytest.raises(ConstraintError, match="11 points on its last axis but G has 10"):
        through(mass_conservation(Grid1D(10), mass, layout="btcx"), btcx)
    with pytest.raises(ConstraintError, match="11 points on its last axis but G has 12"):
        through(mass_conservation(Grid1D(12), torch.zeros(2, 3)), bcx)
    with pytest.raises(ConstraintError, match="does not end in the constraint's grid"):
        field = torch.zeros(2, 3, 6, 5, dtype=F64)
        through(mass_conservation(Grid2D(Grid1D(5), Grid1D(6)), torch.zeros(2, 3)), field)
    with pytest.raises(ConstraintError, match="does not end in the constraint's grid"):
        field = torch.zeros(2, 3, 5, 7, dtype=F64)
        through(mass_conservation(Grid2D(Grid1D(5), Grid1D(6)), torch.zeros(2, 3)), field)


# ------------------------------------------------------------------------------ bad numbers


def ill_conditioned(difference):
    """Two rows that differ by ``difference`` in one entry, asking for different sums."""
    G = torch.ones(2, 8, dtype=F64)
    G[1, 3] += difference
    return LinearConstraint(G, torch.tensor([0.0, 1.0], dtype=F64))


@pytest.mark.parametrize(
    "output",
    [
        lambda: Gaussian(torch.randn(8, dtype=F64), torch.eye(8, dtype=F64)),
        lambda: Ensemble(torch.randn(6, 3, 8, dtype=F64)),
        lambda: Ensemble(torch.randn(3, 3, 8, dtype=F64)),  # rows > members - 1: γ I
    ],
    ids=["gaussian-full", "ensemble", "ensemble-few-members"],
)
@pytest.mark.parametrize("difference", [1e-9, 1e-7])
def test_an_ill_conditioned_constraint_raises_with_its_condition_number(output, difference):
    """These updates solve with ``G Σ Gᵀ`` (condition number squared); a tensor's projection and
    a diagonal Gaussian's update do not, and are refused by the size of their answer
    (test_constraint_numerics)."""
    torch.manual_seed(12)
    output = output()
    with pytest.raises(ConstraintError, match="condition number") as error:
        through(ill_conditioned(difference), output)
    if difference == 1e-9:  # G Gᵀ is singular in float64: by the CPU's LAPACK, either the
        # Cholesky factorisation fails or it succeeds and the residual post-check catches it
        message = str(error.value)
        assert "not positive definite" in message or "left a relative residual" in message
    elif not isinstance(output, Ensemble):  # it succeeds; the residual post-check catches it
        assert "left a relative residual" in str(error.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_in_any_output_kind_raises(bad):
    constraint = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64))
    tensor = torch.zeros(2, 4, dtype=F64)
    tensor[1, 2] = bad
    gaussian = Gaussian(torch.zeros(2, 4, dtype=F64), torch.ones(2, 4, dtype=F64))
    gaussian.mean[0, 1] = bad  # a model may write into its output after building it
    ensemble = Ensemble(torch.zeros(3, 2, 4, dtype=F64))
    ensemble.samples[2, 0, 3] = bad
    for output in (tensor, gaussian, ensemble):
        with pytest.raises(ConstraintError, match="NaN or inf"):
            through(constraint, output)


# ------------------------------------------------------------------------------ ensembles


def test_ensemble_meets_more_rows_than_its_members_can_span():
    gen = torch.Generator().manual_seed(13)
    samples = torch.randn(4, 2, 30, generator=gen, dtype=F64)  # 4 members, 2 slices
    G = torch.randn(6, 30, generator=gen, dtype=F64)  # 6 rows > members - 1
    b = torch.randn(2, 6, generator=gen, dtype=F64)
    out = through(LinearConstraint(G, b), Ensemble(samples))
    assert out.samples.shape == samples.shape
    assert torch.allclose(out.samples @ G.T, b.expand(4, 2, 6), rtol=0, atol=1e-9)
    # the centred members alone span 3 directions: the update needed the γ I component
    A = samples - samples.mean(0)
    change = (out.samples - samples).reshape(4 * 2, 30)
    in_span = torch.linalg.lstsq(A.reshape(-1, 30).T, change.T).solution
    assert not torch.allclose(A.reshape(-1, 30).T @ in_span, change.T, atol=1e-6)


@pytest.mark.parametrize("members", [3, 4])
def test_the_jitter_fallback_keeps_the_walls_an_earlier_dirichlet_condition_set(members):
    """Members that do not span the rows (3 members, 3 rows; or 4 members with one total, one
    row) fall back to ``Σ + γ D``, ``D`` the points some member varies at: the walls a Dirichlet
    condition set stay exactly, the rows are met, and the members are numpy's dense update
    with that covariance."""
    from pdes import Dirichlet
    from physml.constraints import BoundaryCondition

    n = 10
    grid = Grid1D(n)
    rng = np.random.default_rng(21 + members)
    X = rng.random((members, 2, 1, n))
    X[..., 0], X[..., -1] = 0.1, 0.2  # the walls the condition sets
    if members == 4:  # one mass row, every member with the same total: not spanned
        w = grid.weights(dtype=F64).numpy()
        G = w[None]
        X[..., 1:-1] -= ((X @ w - 0.3) / w[1:-1].sum())[..., None]
        b = np.full((2, 1, 1), 0.5)
    else:
        G, b = rng.random((3, n)), rng.random(3)
    walls = BoundaryCondition(Dirichlet(0.1, 0.2), grid)
    rows = LinearConstraint(torch.tensor(G), torch.tensor(b))
    out = constrain(nn.Identity(), walls, rows, kernel=False)(Ensemble(torch.tensor(X))).samples
    assert (out[..., 0] == 0.1).all() and (out[..., -1] == 0.2).all()
    assert np.abs(out.numpy() @ G.T - b).max() < 1e-12
    targets = np.broadcast_to(b, (2, 1, G.shape[0]))
    for s in range(2):
        members_s = X[:, s, 0]
        prior = np.cov(members_s.T)
        varying = (members_s != members_s[0]).any(0).astype(float)  # all but the walls
        used = prior + 1e-3 * np.diag(prior).mean() * np.diag(varying)
        gain = used @ G.T @ np.linalg.inv(G @ used @ G.T)
        expected = members_s - (members_s @ G.T - targets[s, 0]) @ gain.T
        assert_relative(out[:, s, 0].numpy(), expected, 1e-10)


def test_the_jitter_fallback_moves_fixed_points_when_the_varying_ones_cannot_carry_a_row():
    """A row on points no member varies at (only a wall) cannot be met by the varying points:
    that slice keeps ``γ I`` and the row is met."""
    X = torch.rand(3, 8, generator=torch.Generator().manual_seed(5), dtype=F64)
    X[:, 0] = 0.4
    G = torch.zeros(2, 8, dtype=F64)
    G[0, 0], G[1, 3] = 1.0, 1.0
    out = through(LinearConstraint(G, torch.tensor([1.0, 2.0], dtype=F64)), Ensemble(X)).samples
    torch.testing.assert_close(out @ G.T, torch.tensor([[1.0, 2.0]] * 3, dtype=F64))


def test_ensemble_of_2d_frames_conserves_every_frame_of_every_member():
    """16 members of (2, 10, 1, 64, 64): built from the centred members, never 4096 × 4096."""
    from pdes import Grid2D

    grid = Grid2D(Grid1D(64, 0.0, 1.0), Grid1D(64, 0.0, 2.0))
    gen = torch.Generator().manual_seed(14)
    samples = torch.randn(16, 2, 10, 1, 64, 64, generator=gen, dtype=F64)
    mass = torch.randn(2, 10, 1, generator=gen, dtype=F64)
    out = through(mass_conservation(grid, mass), Ensemble(samples))
    integral = grid.integrate(out.samples)  # (16, 2, 10, 1)
    scale = grid.integrate(out.samples.abs())
    assert ((integral - mass).abs() <= 1e-10 * scale).all()


# ------------------------------------------------------------------------------ a module


def test_constrained_model_saves_its_rows_and_moves_to_float64():
    gen = torch.Generator().manual_seed(15)
    G = torch.randn(2, 6, generator=gen, dtype=F64)
    b = torch.randn(2, generator=gen, dtype=F64)
    torch.manual_seed(15)
    model = constrain(nn.Linear(4, 6), LinearConstraint(G, b))
    state = model.state_dict()
    assert torch.equal(state["constraints.0.G"], G) and torch.equal(state["constraints.0.b"], b)
    assert "G" in dict(model.constraints[0].named_buffers())
    other = constrain(nn.Linear(4, 6), LinearConstraint(torch.ones(2, 6) + torch.eye(2, 6), b + 1))
    other.load_state_dict(state)
    assert torch.equal(other.constraints[0].G, G) and torch.equal(other.constraints[0].b, b)
    x = torch.randn(3, 4, generator=gen)
    assert torch.equal(other(x), model(x))
    model.to(torch.float64)
    assert model.model.weight.dtype == F64 and model.constraints[0].G.dtype == F64
    out = model(x.double())
    assert out.dtype == F64 and torch.allclose(out @ G.T, b.expand(3, 2), rtol=0, atol=1e-12)
    model.float()  # a cast must not round the rows: they stay float64, the solve's dtype
    assert torch.equal(model.constraints[0].G, G) and model.constraints[0].G.dtype == F64
    out = model(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double() @ G.T, b.expand(3, 2), rtol=0, atol=1e-5)


def test_tensors_changed_after_building_the_constraint_leave_it_as_built():
    """``mass += 1`` (and a write to ``G``) in user code after the constraint is built: the
    rows and the target enforced are the ones given (a float64 tensor used to be kept by
    reference, so its edits reached the constraint; a float32 one was copied)."""
    grid = Grid1D(5, 0.0, 1.0)  # trapezoid weights 1/8, 1/4, 1/4, 1/4, 1/8
    mass = torch.tensor([0.5, 0.3], dtype=F64)
    G = torch.tensor([[1.0, 2.0, 2.0, 2.0, 1.0]], dtype=F64) / 8
    by_grid, by_rows = mass_conservation(grid, mass), LinearConstraint(G, mass[:, None])
    mass += 1.0
    G.mul_(3.0)
    u = torch.rand(2, 5, dtype=F64)
    weights = torch.tensor([1.0, 2.0, 2.0, 2.0, 1.0], dtype=F64) / 8
    for out in (by_grid(u), by_rows(u)):
        expected = torch.tensor([0.5, 0.3], dtype=F64)
        torch.testing.assert_close(out @ weights, expected, rtol=0, atol=1e-14)


def test_a_target_carrying_a_gradient_trains_and_copies():
    """A target computed from tensors that need a gradient: two training steps (the second used
    to backward through the first step's freed graph) and a deep copy (refused for a non-leaf)."""
    grid = Grid1D(5, 0.0, 1.0)
    data = torch.rand(2, 5, dtype=F64, requires_grad=True)
    total = grid.integrate(2 * data)
    with pytest.warns(UserWarning, match="stored without gradient"):
        model = constrain(nn.Linear(5, 5).double(), mass_conservation(grid, total))
    for _ in range(2):
        out = model(torch.rand(2, 5, dtype=F64))
        out.sum().backward()
        torch.testing.assert_close(grid.integrate(out), total.detach(), rtol=0, atol=1e-14)
    copied = copy.deepcopy(model)
    x = torch.rand(3, 2, 5, dtype=F64)
    assert torch.equal(copied(x), model(x))


def test_a_target_that_requires_grad_warns_once_and_its_callable_form_is_differentiable():
    """A tensor target is stored without gradient: ``mass_conservation(grid, M)(u)`` gave no
    gradient with respect to ``M``, silently. It warns, once, naming the target and the
    callable form; a plain target does not. The callable form's gradient is the projection's,
    by hand: ``u − w (w·u − M) / |w|²`` moves by ``w / |w|²`` per unit of ``M``, so
    ``d(c · output)/dM = c·w / |w|²``."""
    grid = Grid1D(5, 0.0, 1.0)
    w = grid.weights(F64)
    M = torch.tensor([0.2, 0.7], dtype=F64, requires_grad=True)
    with pytest.warns(UserWarning, match="total_mass requires grad") as caught:
        mass_conservation(grid, M)
    assert len(caught) == 1 and "lambda *inputs: total_mass" in str(caught[0].message)
    assert caught[0].filename == __file__
    with pytest.warns(UserWarning, match="b requires grad, but a tensor target is stored"):
        LinearConstraint(w[None], M[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mass_conservation(grid, M.detach())
        LinearConstraint(w[None], torch.tensor([0.5], dtype=F64))
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.5], dtype=F64)
    u = torch.rand(2, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = mass_conservation(grid, lambda *inputs: M)(u)
    (gradient,) = torch.autograd.grad((out @ c).sum(), M)
    torch.testing.assert_close(
        gradient, torch.full((2,), ((c @ w) / (w @ w)).item(), dtype=F64), rtol=0, atol=1e-12
    )


def test_nonnegativity_on_a_batch_equals_each_slice_on_its_own():
    from physml.constraints import NonNegative

    x = torch.linspace(0, 1, 10, dtype=F64)
    cov = 0.02 * torch.exp(-((x[:, None] - x[None, :]) ** 2) / 0.02) + 1e-4 * torch.eye(10)
    means = torch.stack([torch.sin(6 * x), x + 0.1, torch.cos(9 * x) - 0.3])  # middle: >= 0
    batch = through(NonNegative(), Gaussian(means, cov.expand(3, 10, 10)))
    for i in range(3):
        alone = through(NonNegative(), Gaussian(means[i], cov))
        assert torch.allclose(batch.mean[i], alone.mean, atol=1e-12)
        assert torch.allclose(batch.dense_cov()[i], alone.dense_cov(), atol=1e-12)
    assert torch.equal(batch.mean[1], means[1]) and (batch.mean >= 0).all()


def test_nonnegativity_of_a_diagonal_gaussian_is_the_dense_update():
    from physml.constraints import NonNegative

    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(4, 9, generator=gen, dtype=F64)
    variance = torch.rand(4, 9, generator=gen, dtype=F64) + 0.1
    fast = through(NonNegative(), Gaussian(mean, variance))
    dense = through(NonNegative(), Gaussian(mean, torch.diag_embed(variance)))
    assert fast.is_diagonal and torch.equal(fast.mean, dense.mean)
    assert torch.allclose(torch.diag_embed(fast.cov), dense.dense_cov(), atol=1e-14)


def test_nonnegativity_after_probconserv_on_a_diagonal_model_equals_the_dense_route():
    """The low-rank posterior's active set comes from Woodbury means; the result must be the one
    the dense covariance gives."""
    from physml.constraints import NonNegative

    gen = torch.Generator().manual_seed(8)
    x = torch.linspace(0, 1, 30, dtype=F64)
    mean = torch.sin(8 * x)[None] * torch.tensor([[1.0], [0.5], [2.0]], dtype=F64)  # (3, 30)
    variance = 0.05 + torch.rand(3, 30, generator=gen, dtype=F64)
    conserved = through(
        mass_conservation(Grid1D(30), torch.full((3,), 0.4)), Gaussian(mean, variance)
    )
    assert isinstance(conserved.cov, LowRankCovariance) and (conserved.mean < 0).any()
    fast = through(NonNegative(), conserved)
    dense = through(NonNegative(), Gaussian(conserved.mean, conserved.dense_cov()))
    assert isinstance(fast.cov, LowRankCovariance)  # never assembled n × n
    assert torch.allclose(fast.mean, dense.mean, atol=1e-12) and (fast.mean >= 0).all()
    assert torch.allclose(fast.dense_cov(), dense.dense_cov(), atol=1e-12)
    assert torch.allclose(Grid1D(30).integrate(fast.mean), torch.full((3,), 0.4, dtype=F64))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rows", ["one", "one-of-mixed-sign", "two"])
def test_nonnegativity_on_a_low_rank_posterior_equals_the_dense_route(seed, rows):
    """One non-negative row (mass): the one-step simplex route; a row of mixed signs or two
    rows: the Woodbury rounds. Each must give the dense covariance's answer, slices without a
    negative mean untouched."""
    from physml.constraints import NonNegative

    gen = torch.Generator().manual_seed(seed)
    n = 17
    mean = torch.randn(5, n, generator=gen, dtype=F64) + 0.3
    mean[2] = mean[2].abs() + 0.1  # a slice with nothing to pin
    variance = 0.05 + torch.rand(5, n, generator=gen, dtype=F64)
    weights = torch.rand(n, generator=gen, dtype=F64) + 0.1
    if rows == "one-of-mixed-sign":
        weights[::4] *= -0.2
    G = weights[None] if rows != "two" else torch.stack([weights, torch.linspace(0, 1, n)])
    total = (mean.clamp_min(0) * G[0]).sum(-1)[:, None]
    b = (
        total
        if rows != "two"
        else torch.cat([total, (mean.clamp_min(0) * G[1]).sum(-1)[:, None]], -1)
    )
    posterior = through(LinearConstraint(G, b), Gaussian(mean, variance))
    assert isinstance(posterior.cov, LowRankCovariance) and (posterior.mean < 0).any()
    fast = through(NonNegative(), posterior)
    dense = through(NonNegative(), Gaussian(posterior.mean, posterior.dense_cov()))
    assert isinstance(fast.cov, LowRankCovariance)
    assert torch.allclose(fast.mean, dense.mean, atol=1e-12) and (fast.mean >= 0).all()
    assert torch.allclose(fast.dense_cov(), dense.dense_cov(), atol=1e-12)
    assert torch.allclose(fast.mean @ G.T, b, atol=1e-12)
    assert torch.equal(fast.mean[2], posterior.mean[2])


def _conserved_gp_posterior(dtype, seed, n=41):
    """An exact mass-conservation posterior over a dense GP prior (variance 5e-4, length 0.3)
    stored in ``dtype``, a :class:`LowRankCovariance` over a full base: ``(posterior, row, b)``.
    In float32 its ``base − FFᵀ`` is singular only to ~eps × the prior variance."""
    gen = torch.Generator().manual_seed(seed)
    row = torch.full((1, n), 1.0 / (n - 1), dtype=F64)
    row[0, 0] = row[0, -1] = 0.5 / (n - 1)
    x = torch.linspace(0, 1, n, dtype=F64)
    kernel = torch.exp(-0.5 * (x[:, None] - x[None]) ** 2 / 0.3**2) + 1e-2 * torch.eye(n)
    prior = (5e-4 * kernel).to(dtype).expand(3, n, n)
    mean = (0.03 * torch.randn(3, n, generator=gen, dtype=F64)).to(dtype)
    b = mean.double().clamp_min(0) @ row.T
    posterior = through(LinearConstraint(row, b.to(dtype), noise=0.0), Gaussian(mean, prior))
    assert isinstance(posterior.cov, LowRankCovariance) and not posterior.cov.base_is_diagonal
    return posterior, row, b


@pytest.mark.parametrize("k", [0.3, 0.7, 1.7])
def test_nonnegativity_sets_a_point_conditioning_lands_on_zero_to_exactly_zero(k):
    """``u₁ = −k u₀`` exactly (a rank-one pair): pinning ``u₀ = 0`` puts ``u₁`` at
    ``m₁ + k m₀ = 0``, which the solve reaches only to round-off (here below zero); pinning
    ``u₁`` too is singular, so the search stops there and the round-off must be snapped to 0."""
    from physml.constraints import NonNegative

    variance, m0 = 0.9, -0.9
    cov = torch.tensor(
        [
            [variance, -k * variance, 0.1],
            [-k * variance, k * k * variance, -0.1 * k],
            [0.1, -0.1 * k, 1.0],
        ],
        dtype=F64,
    )
    mean = torch.tensor([m0, -k * m0, 0.7], dtype=F64)
    out = through(NonNegative(), Gaussian(mean, cov)).mean
    assert (out >= 0).all()
    expected = torch.tensor([0.0, 0.0, 0.7 - 0.1 / variance * m0], dtype=F64)  # Σ₂₀ Σ₀₀⁻¹ m₀
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("seed", range(3))
def test_nonnegativity_of_a_conserved_dense_gp_posterior_stays_positive_semi_definite(dtype, seed):
    """The dense route conditions ``B − FFᵀ`` on the pinned points. Assembled as stored, a
    float32 one carried eigenvalues of ~-20 n eps × the result's largest variance (the prior's
    round-off, amplified), and sampling refused it; now the result is positive semi-definite to
    its own float32 rounding (``n eps / 2`` × its largest variance) and is sampled."""
    from physml import metrics
    from physml.constraints import NonNegative

    posterior, row, b = _conserved_gp_posterior(dtype, seed)
    assert (posterior.mean < 0).any()
    out = through(NonNegative(), posterior)
    assert out.mean.dtype == out.cov.dtype == dtype and (out.mean >= 0).all()
    cov = out.dense_cov().double()
    n, eps = cov.shape[-1], torch.finfo(dtype).eps
    largest = cov.diagonal(dim1=-2, dim2=-1).amax(-1)
    eigenvalues = torch.linalg.eigvalsh(cov)
    # storage rounding, plus the float64 computation's (and eigvalsh's) own round-off
    allowed = n * eps / 2 * largest + 16 * n * torch.finfo(F64).eps * eigenvalues[..., -1]
    assert (eigenvalues[..., 0] >= -allowed).all()
    # the stored Σ meets the row to ~eps of the prior; pinning amplifies that (~1e3 eps)
    scale = out.mean.double().abs() @ row.T + b.abs()
    assert ((out.mean.double() @ row.T - b).abs() <= 4096 * eps * scale).all()
    draws = metrics.gaussian_samples(out, 100, seed)
    assert torch.isfinite(draws).all()


def test_nonnegativity_refuses_a_dense_route_covariance_indefinite_beyond_round_off():
    """``B − FFᵀ`` with ``‖L⁻¹F‖² = 1 + 1e-3`` (``B = LLᵀ``) is indefinite well beyond float32
    round-off: the dense route says so instead of conditioning it."""
    from physml.constraints import NonNegative

    base = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    lower = torch.linalg.cholesky(base.double())
    direction = torch.tensor([[1.0], [1.0], [0.0]], dtype=F64) * ((1 + 1e-3) / 2) ** 0.5
    factor = (lower @ direction).float()  # the variances stay >= 0
    mean = torch.tensor([[0.2, -0.3, 0.4]])
    indefinite = Gaussian(mean, LowRankCovariance(base[None], factor[None], diagonal=False))
    refused = r"Gaussian's cov \(base − FFᵀ\) is not positive semi-definite"
    with pytest.raises(ConstraintError, match=refused):
        through(NonNegative(), indefinite)


def test_nonnegativity_of_a_one_row_posterior_that_fixes_a_negative_total_raises():
    from physml.constraints import NonNegative

    mean = torch.tensor([[0.5, -1.0, 0.2]], dtype=F64)
    posterior = through(
        LinearConstraint(torch.ones(1, 3, dtype=F64), torch.tensor([-0.1], dtype=F64)),
        Gaussian(mean, torch.ones(1, 3, dtype=F64)),
    )
    with pytest.raises(ConstraintError, match="infeasible"):
        through(NonNegative(), posterior)


@pytest.mark.parametrize("noise", [0.5, 0.05])
def test_nonnegativity_after_a_noisy_update_is_the_projection_in_the_posterior_metric(noise):
    """A noisy mass update leaves variance along the row: non-negativity must move the mass too.
    Checked per slice against numpy's dense posterior ``Σ − Σg (gᵀΣg + σ²)⁻¹ gᵀΣ``: ``u >= 0``,
    multipliers ``ν = Σ⁻¹ (u − m) >= 0`` on the zeros and 0 elsewhere (the convex program's
    certificate), and the covariance conditioned on those zeros."""
    from physml.constraints import NonNegative

    rng = np.random.default_rng(5)
    n = 9
    mean = rng.normal(size=(4, n)) + 0.2
    variance = 0.1 + rng.random((4, n))
    g = rng.random(n) + 0.1
    b = (np.clip(mean, 0, None) @ g)[:, None] * 0.5
    constraint = LinearConstraint(torch.tensor(g[None]), torch.tensor(b), noise=noise)
    posterior = through(constraint, Gaussian(torch.tensor(mean), torch.tensor(variance)))
    assert isinstance(posterior.cov, LowRankCovariance) and (posterior.mean < 0).any()
    out = through(NonNegative(), posterior)
    for s in range(4):
        prior = np.diag(variance[s])
        gain = prior @ g / (g @ prior @ g + noise**2)
        m = mean[s] - gain * (g @ mean[s] - b[s, 0])
        cov = prior - np.outer(gain, g @ prior)
        u = out.mean[s].numpy()
        nu = np.linalg.solve(cov, u - m)
        scale = np.abs(nu).max()
        pinned = u == 0
        assert (u >= 0).all()
        if not (m < 0).any():
            assert np.array_equal(u, posterior.mean[s].numpy())
            continue
        assert pinned.any() and abs(u @ g - m @ g) > 1e-6  # the mass moved
        assert (nu[pinned] >= -1e-9 * scale).all()
        assert (np.abs(nu[~pinned]) <= 1e-9 * scale).all()
        conditioned = cov - cov[:, pinned] @ np.linalg.solve(cov[pinned][:, pinned], cov[pinned])
        np.testing.assert_allclose(out.dense_cov()[s].numpy(), conditioned, rtol=0, atol=1e-12)


def test_woodbury_pinned_conditioning_equals_the_dense_conditioning():
    from physml.constraints.nonnegative import (
        _low_rank_condition,
        _low_rank_factor,
        _pinned_mean,
        _pinned_system,
    )

    gen = torch.Generator().manual_seed(9)
    mean = torch.randn(4, 12, generator=gen, dtype=F64)
    variance = 0.5 + torch.rand(4, 12, generator=gen, dtype=F64)
    factor = 0.15 * torch.randn(4, 12, 2, generator=gen, dtype=F64)
    cov = torch.diag_embed(variance) - factor @ factor.transpose(-1, -2)
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    active = torch.rand(4, 12, generator=gen) < 0.4
    pinned, L = _pinned_system(cov, active)
    dense, dense_weights = _pinned_mean(mean, cov, active, pinned, L)
    dense_cov = cov - cov @ torch.cholesky_solve(pinned[:, :, None] * cov, L)
    new_mean, new_variance, cholesky, weights = _low_rank_condition(mean, variance, factor, active)
    new_factor = _low_rank_factor(factor, cholesky, active)
    assert torch.allclose(new_mean, dense, atol=1e-12)
    assert torch.allclose(weights, dense_weights, atol=1e-12)
    low_rank = torch.diag_embed(new_variance) - new_factor @ new_factor.transpose(-1, -2)
    assert torch.allclose(low_rank, dense_cov, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_nonnegativity_of_a_correlated_gaussian_is_the_mahalanobis_projection(seed):
    """Strong correlations make pinning every negative point pin too many; the answer must meet
    the projection's optimality conditions: u >= 0, u = 0 on the active set, and multipliers
    ν = Σ⁻¹(u − m) >= 0 there and 0 elsewhere (a certificate for a convex program)."""
    from physml.constraints import NonNegative

    gen = torch.Generator().manual_seed(seed)
    n = 12
    x = torch.linspace(0, 1, n, dtype=F64)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    cov = 0.5 * torch.exp(-((x[:, None] - x[None, :]) ** 2) / 0.2) + 0.3 * A @ A.T / n
    cov = cov + 1e-3 * torch.eye(n, dtype=F64)
    mean = 0.7 * torch.randn(n, generator=gen, dtype=F64)
    out = through(NonNegative(), Gaussian(mean, cov))
    u = out.mean
    nu = torch.linalg.solve(cov, u - mean)
    scale = nu.abs().max()
    pinned = u == 0
    assert (u >= 0).all() and pinned.any()
    assert (nu[pinned] >= -1e-9 * scale).all()
    assert (nu[~pinned].abs() <= 1e-9 * scale).all()
    conditioned = cov - cov[:, pinned] @ torch.linalg.solve(cov[pinned][:, pinned], cov[pinned])
    assert torch.allclose(out.dense_cov(), conditioned, atol=1e-12)


@pytest.mark.parametrize("seed", [3, 13, 39])
def test_nonnegativity_after_two_exact_rows_is_the_projection_keeping_them(seed):
    """Two exact rows (one of mixed sign) leave a singular posterior; pinning every negative
    point can make the pinned block singular (seed 39) or pin a point the optimum leaves free
    (seeds 3, 13). The answer must be the prior-metric projection onto {G u = b, u >= 0}."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    from physml.constraints import NonNegative

    gen = torch.Generator().manual_seed(seed)
    n = 17
    mean = torch.randn(5, n, generator=gen, dtype=F64) + 0.3
    variance = 0.05 + torch.rand(5, n, generator=gen, dtype=F64)
    G = torch.stack(
        [torch.rand(n, generator=gen, dtype=F64) + 0.1, torch.linspace(-3, 3, n, dtype=F64)]
    )
    b = mean.clamp_min(0) @ G.T  # met by a non-negative field: feasible
    posterior = through(LinearConstraint(G, b), Gaussian(mean, variance))
    out = through(NonNegative(), posterior)
    assert (out.mean >= 0).all()
    assert torch.allclose(out.mean @ G.T, b, atol=1e-10)
    dense = through(NonNegative(), Gaussian(posterior.mean, posterior.dense_cov()))
    assert torch.allclose(out.mean, dense.mean, atol=1e-10)
    assert torch.allclose(out.dense_cov(), dense.dense_cov(), atol=1e-10)
    assert isinstance(out.cov, LowRankCovariance) == (seed != 39)  # Woodbury fails at 39
    for s in range(5):
        m, d = mean[s].numpy(), variance[s].numpy()
        result = scipy_optimize.minimize(
            lambda u, m=m, d=d: ((u - m) ** 2 / d).sum(),
            np.clip(m, 0, None),
            jac=lambda u, m=m, d=d: 2 * (u - m) / d,
            constraints=[{"type": "eq", "fun": lambda u, s=s: G.numpy() @ u - b[s].numpy()}],
            bounds=[(0, None)] * n,
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        assert result.success
        assert np.allclose(out.mean[s].numpy(), result.x, atol=1e-6)


def test_a_full_covariance_gives_its_diagonal_as_variances_and_itself_as_dense():
    """Variances of ``N(mean, A Aᵀ + I)`` are the row sums of ``A²`` plus one."""
    a = torch.tensor([[[1.0, 2.0], [0.0, 3.0], [-1.0, 1.0]]], dtype=torch.float64)
    cov = a @ a.transpose(-1, -2) + torch.eye(3, dtype=torch.float64)
    gaussian = Gaussian(torch.zeros(1, 3, dtype=torch.float64), cov)
    assert not gaussian.is_diagonal
    assert gaussian.variance().tolist() == [[6.0, 10.0, 3.0]]
    assert torch.equal(gaussian.dense_cov(), cov)
    diagonal = Gaussian(torch.zeros(2), torch.tensor([4.0, 0.5]))
    assert diagonal.variance().tolist() == [4.0, 0.5]
    assert diagonal.dense_cov().tolist() == [[4.0, 0.0], [0.0, 0.5]]


def _projection_after_exact_rows(mean, cov, G, b):
    """The Mahalanobis projection of ``N(mean, cov)`` conditioned exactly on ``G u = b`` onto
    ``{u >= 0}``, independently in numpy (float64): the posterior by its explicit formula, the
    active set ``A`` from the dual ``min_{ν >= 0} ½ νᵀSν + m′ᵀν`` by L-BFGS-B, then
    ``u = m′ − S_·A S_AA⁻¹ m′_A`` on it, checked ``>= 0`` with multipliers ``>= 0``."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    P, m, g = cov.numpy(), mean.numpy(), G.numpy()
    gain = P @ g.T @ np.linalg.inv(g @ P @ g.T)
    m_post, S = m + gain @ (b.numpy() - g @ m), P - gain @ g @ P
    dual = scipy_optimize.minimize(
        lambda v: 0.5 * v @ S @ v + m_post @ v,
        np.zeros(len(m)),
        jac=lambda v: S @ v + m_post,
        bounds=[(0, None)] * len(m),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 10000},
    )
    active = dual.x > 1e-9
    multipliers = -np.linalg.solve(S[np.ix_(active, active)], m_post[active])
    u = m_post + S[:, active] @ multipliers
    assert (multipliers > 0).all() and (u >= -1e-12 * np.abs(m_post).max()).all()
    return torch.from_numpy(u), int(active.sum())


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_nonnegativity_pins_past_a_point_the_pinned_ones_already_fix(dtype):
    """Two exact rows over a full prior leave a posterior of rank ``n − 2``. The optimum pins 10
    of 12 points; on the way the active-set search reaches a point whose value the pinned ones
    already fix (its pinned block singular) and called the problem infeasible. It must release
    a point instead and reach the prior-metric projection onto ``{G u = b, u >= 0}``."""
    from physml.constraints import NonNegative

    gen = torch.Generator().manual_seed(5)
    n = 12
    A = torch.randn(4, n, n, generator=gen, dtype=F64)[1]
    cov = A @ A.mT / n + 0.05 * torch.eye(n, dtype=F64)
    mean = torch.randn(4, n, generator=gen, dtype=F64)[1]
    G = torch.rand(2, n, generator=gen, dtype=F64)
    b = (torch.rand(4, 2, generator=gen, dtype=F64) * 3)[1]
    exact, pinned = _projection_after_exact_rows(mean, cov, G, b)
    assert pinned == n - 2
    prior = Gaussian(mean[None].to(dtype), cov[None].to(dtype))
    posterior = through(LinearConstraint(G, b[None].to(dtype), noise=0.0), prior)
    out = through(NonNegative(), posterior).mean[0].double()
    tolerance = 1e-8 if dtype == F64 else 1e-5
    assert (out - exact).abs().max() <= tolerance * exact.abs().max()


@pytest.mark.parametrize("rows", [1, 2])
def test_nonnegativity_after_exact_rows_solves_every_feasible_problem(rows):
    """Random full priors, exact rows ``G >= 0`` and totals ``b``: every problem with a
    non-negative ``u`` meeting ``G u = b`` (by NNLS) is solved, in float64 and float32, stored
    low rank or dense (or over the prior's diagonal), the result ``>= 0`` and keeping the rows;
    any other is refused by name (float32 pinned a block singular to round-off with huge
    multipliers and broke the rows instead)."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    from physml.constraints import NonNegative

    solved = refused = 0
    for seed in range(40):
        gen = torch.Generator().manual_seed(1000 * rows + seed)
        n = 10
        A = torch.randn(1, n, n, generator=gen, dtype=F64)
        cov = A @ A.mT / n + 0.05 * torch.eye(n, dtype=F64)
        mean = torch.randn(1, n, generator=gen, dtype=F64) - 0.5
        G = torch.rand(rows, n, generator=gen, dtype=F64)
        b = torch.rand(1, rows, generator=gen, dtype=F64) * 2
        feasible = scipy_optimize.nnls(G.numpy(), b[0].numpy())[1] <= 1e-12
        for dtype in (F64, torch.float32):
            exact = LinearConstraint(G, b.to(dtype), noise=0.0)
            posterior = through(exact, Gaussian(mean.to(dtype), cov.to(dtype)))
            variance = cov.diagonal(dim1=-2, dim2=-1).to(dtype)
            over_diagonal = through(exact, Gaussian(mean.to(dtype), variance))  # Woodbury route
            dense = Gaussian(posterior.mean, posterior.dense_cov())
            for stored in (posterior, dense, over_diagonal):
                if not feasible:
                    with pytest.raises(ConstraintError, match="non-negativity is infeasible"):
                        through(NonNegative(), stored)
                    refused += 1
                    continue
                out = through(NonNegative(), stored).mean.double()
                assert (out >= 0).all()
                # float32: the stored posterior meets the rows to ~eps, pinning amplifies that
                tolerance = 1e-10 if dtype == F64 else 4096 * torch.finfo(dtype).eps
                assert ((out @ G.T - b).abs() <= tolerance * (out @ G.T + b)).all()
                solved += 1
    assert solved >= 150 and (refused > 0) == (rows == 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_precisely_observed_point_is_pinned_however_small_its_variance(dtype):
    """A GP posterior with one observation of noise variance 1e-5 and a slightly negative mean
    there: that point's variance is 1e-5 of the largest, yet pinning it is well-posed (its own
    variance is stored to the dtype's relative precision). The exact answer conditions the
    Gaussian on u_obs = 0: the mean moves by −Σ_{:,obs} m_obs / Σ_obs,obs."""
    n = 100
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    prior = torch.exp(-((x[:, None] - x[None]) ** 2) / (2 * 0.05**2))
    obs = n // 2
    column = prior[:, obs]
    cov = prior - column[:, None] * column[None] / (prior[obs, obs] + 1e-5)
    mean = torch.ones(n, dtype=torch.float64)
    mean[obs] = -1e-3
    expected = mean - cov[:, obs] * mean[obs] / cov[obs, obs]
    assert float(cov[obs, obs] / cov.diagonal().max()) < 2e-5  # far below the largest
    from physml.constraints import NonNegative

    out = NonNegative().apply_gaussian(Gaussian(mean.to(dtype), cov.to(dtype)))
    assert float(out.mean.min()) >= 0.0 and float(out.mean[obs]) == 0.0
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(out.mean.double(), expected, rtol=0.0, atol=tolerance)


def test_a_search_cycling_among_singular_blocks_of_an_infeasible_problem_says_infeasible():
    """Three exact rows over a full prior (posterior rank n − 3), stored dense: the active-set
    search cycles between a 22- and a 23-point singular block; no u >= 0 meets the rows (a
    non-negative least-squares fit of them misses), and the refusal says so, not 'did not
    converge'."""
    import scipy.optimize

    from physml.constraints import NonNegative

    gen = torch.Generator().manual_seed(7000 * 3 + 21)
    n = 24
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    prior = a @ a.mT / n + 0.05 * torch.eye(n, dtype=torch.float64)
    mean = torch.randn(1, n, generator=gen, dtype=torch.float64) - 0.5
    rows = torch.rand(3, n, generator=gen, dtype=torch.float64)
    totals = torch.rand(1, 3, generator=gen, dtype=torch.float64) * 2
    assert scipy.optimize.nnls(rows.numpy(), totals[0].numpy())[1] > 1e-6  # infeasible
    exact = LinearConstraint(rows, totals, noise=0.0)
    posterior = constrain(nn.Identity(), exact)(Gaussian(mean, prior[None]))
    dense = Gaussian(posterior.mean, posterior.dense_cov())
    with pytest.raises(ConstraintError, match="non-negativity is infeasible"):
        NonNegative().apply_gaussian(dense)


def brute_force_diagonal_qp(x, w, d):
    """``argmin Σ_{d_i > 0} (u_i − x_i)² / d_i`` s.t. ``w·u = w·x``, ``u >= 0``, ``u_i = x_i``
    where ``d_i = 0``, for one row (numpy), by trying every set of points held at zero: on each,
    the equality-constrained minimiser is ``u = x − λ d w`` off the set; the best feasible one
    is the convex program's optimum."""
    import itertools

    n, total = len(x), w @ x
    movable = [i for i in range(n) if d[i] > 0]
    best, best_value = None, np.inf
    for k in range(len(movable) + 1):
        for zeros in itertools.combinations(movable, k):
            free = np.array([i in movable and i not in zeros for i in range(n)])
            u = np.where(free, x, 0.0)
            u[d == 0] = x[d == 0]
            curvature = (d * w * w)[free].sum()
            if curvature > 0:
                u = u - np.where(free, (w @ u - total) / curvature * d * w, 0.0)
            if abs(w @ u - total) > 1e-12 * (np.abs(x) @ w + 1) or (u < -1e-14).any():
                continue
            value = ((u - x)[d > 0] ** 2 / d[d > 0]).sum()
            if value < best_value - 1e-15:
                best, best_value = u, value
    return best


@pytest.mark.parametrize("seed", range(6))
def test_simplex_projection_is_the_brute_force_quadratic_program(seed):
    """Weights with zeros (a point outside the row: only clipped), metrics with zeros (a point
    that cannot move) and equal breakpoints, against every active set tried by hand."""
    from physml.constraints.nonnegative import simplex_projection

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(8):
        x = rng.normal(0.2, 0.6, 7)
        w = rng.uniform(0.2, 2.0, 7)
        d = rng.uniform(0.1, 3.0, 7)
        w[rng.integers(7)] = 0.0
        still = rng.integers(1, 7)
        d[still], x[still] = 0.0, abs(x[still])
        x[0] = -abs(x[0])  # at least one negative value
        lift = np.argmax(np.where(np.arange(7) > 0, w * d, 0.0))
        short = w[still] * x[still] + 0.3 - w @ x  # the point that stays holds less than all
        x[lift] += max(short, 0.0) / w[lift]
        rows.append((x, w, d))
    x, w, d = (torch.tensor(np.stack(parts)) for parts in zip(*rows, strict=True))
    out = simplex_projection(x, w, d).numpy()
    for row, (xi, wi, di) in enumerate(rows):
        expected = brute_force_diagonal_qp(xi, wi, di)
        np.testing.assert_allclose(out[row], expected, rtol=0, atol=1e-12)
        assert out[row].min() >= 0
        assert abs(out[row] @ wi - xi @ wi) <= 1e-13 * (np.abs(xi) @ wi)
    ties = torch.tensor([[-1.0, 2.0, 2.0, 2.0]], dtype=F64)  # three equal breakpoints
    same = simplex_projection(ties, torch.ones(4, dtype=F64), torch.ones(1, 4, dtype=F64))
    torch.testing.assert_close(same, torch.tensor([[0.0, 5 / 3, 5 / 3, 5 / 3]], dtype=F64))
    # the point that cannot move holds the whole total: every other coupled point goes to 0
    full = torch.tensor([[1.0, 0.5, -0.5, -0.2]], dtype=F64)
    weights, metric = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64), torch.tensor([[0.0, 1, 1, 1]])
    held = simplex_projection(full, weights, metric.to(F64))
    assert torch.equal(held, torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64))


def test_nonnegativity_of_an_ensemble_uses_its_variance_and_gamma_as_the_metric():
    """Covariance metric: each point's ensemble variance; a negative point no member varies
    at moves with ``γ = jitter × mean variance``; a point no member varies at that is not
    negative stays. Checked member by member against the brute-force program."""
    from physml.constraints import NonNegative

    rng = np.random.default_rng(4)
    samples = rng.normal(0.3, 0.5, (5, 6))
    samples[:, 2] = -0.2  # negative, no spread: moves with γ
    samples[:, 4] = 0.7  # positive, no spread: stays
    w = np.array([1.0, 0.5, 2.0, 1.0, 1.5, 0.8])
    samples[:, 0] += 2.0  # totals > 0
    keep = LinearConstraint(torch.tensor(w[None]), torch.zeros(1, dtype=F64))
    jitter = 0.05
    out = through(NonNegative(keep=keep, jitter=jitter), Ensemble(torch.tensor(samples)))
    variance = samples.var(0, ddof=1)
    for member in range(5):
        x = samples[member]
        d = np.where(variance > 0, variance, np.where(x < 0, jitter * variance.mean(), 0.0))
        expected = brute_force_diagonal_qp(x, w, d) if (x < 0).any() else x
        np.testing.assert_allclose(out.samples[member].numpy(), expected, rtol=0, atol=1e-12)
    euclidean = LinearConstraint(torch.tensor(w[None]), torch.zeros(1), projection="euclidean")
    out = through(NonNegative(keep=euclidean), Ensemble(torch.tensor(samples)))
    for member in range(5):
        expected = brute_force_diagonal_qp(samples[member], w, np.ones(6))
        np.testing.assert_allclose(out.samples[member].numpy(), expected, rtol=0, atol=1e-12)


def test_nonnegativity_of_a_tensor_clips_a_point_outside_the_kept_row():
    """A point of zero weight in ``keep``'s row is not coupled to the total: the Euclidean
    program sets it to ``max(x, 0)``; the others keep the row (brute force)."""
    from physml.constraints import NonNegative

    w = np.array([1.0, 0.0, 1.0, 2.0])
    field = np.array([[0.5, -0.3, -0.2, 0.4], [1.0, 0.6, -0.5, 0.1]])
    keep = LinearConstraint(torch.tensor(w[None]), torch.zeros(1, dtype=F64))
    out = through(NonNegative(keep=keep), torch.tensor(field)).numpy()
    for row in range(2):
        expected = brute_force_diagonal_qp(field[row], w, np.ones(4))
        np.testing.assert_allclose(out[row], expected, rtol=0, atol=1e-14)
    assert out[0, 1] == 0.0 and out[1, 1] == 0.6


def test_nonnegativity_refuses_a_bad_keep_jitter_or_tolerance():
    from physml.constraints import NonNegative

    two_rows = LinearConstraint(torch.eye(2, 3, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(ConstraintError, match=r"one row of non-negative weights.*\(2, 3\)"):
        NonNegative(keep=two_rows)
    signed = LinearConstraint(torch.tensor([[1.0, -0.5, 1.0]], dtype=F64), torch.zeros(1))
    with pytest.raises(ConstraintError, match=r"one row of non-negative weights.*minimum -0\.5"):
        NonNegative(keep=signed)
    with pytest.raises(ConstraintError, match=r"jitter must be a finite number > 0, got inf"):
        NonNegative(jitter=float("inf"))
    with pytest.raises(TypeError, match="tolerance must be a number, got True"):
        NonNegative(True)


def test_nonnegativity_leaves_values_within_the_tolerance_as_they_are():
    from physml.constraints import NonNegative

    keep = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64))
    field = torch.tensor([[0.5, -0.005, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4]], dtype=F64)
    lenient = NonNegative(0.01, keep=keep)
    assert torch.equal(through(lenient, field), field)
    members = field[:, None] + torch.tensor([0.0, 0.001, 0.002], dtype=F64)[:, None]
    assert torch.equal(through(lenient, Ensemble(members)).samples, members)
    cov = 0.01 * torch.eye(4, dtype=F64) + 0.005
    kept = through(NonNegative(0.01), Gaussian(field, cov.expand(2, 4, 4)))
    assert torch.equal(kept.mean, field) and torch.equal(kept.cov, cov.expand(2, 4, 4))
    variance = torch.tensor([0.2, 0.1, 0.3, 0.2], dtype=F64)  # exact on w = 1: Σ f² / D = 1
    factor = (variance / variance.sum().sqrt())[:, None]
    low_rank = LowRankCovariance(variance.expand(2, 4), factor.expand(2, 4, 1), diagonal=True)
    one_row = Gaussian(field, low_rank)
    kept = through(NonNegative(0.01), one_row)
    assert torch.equal(kept.mean, field) and torch.equal(kept.dense_cov(), one_row.dense_cov())
    strict = through(NonNegative(keep=keep), field)
    assert strict.min() == 0 and torch.allclose(strict.sum(-1), field.sum(-1), atol=1e-15)


def test_nonnegativity_of_an_ensemble_without_spread_says_it_is_infeasible():
    """Members that all agree leave no point free to move but the negative ones (``γ``): raising
    them to zero would change the total, so no solution keeps the row."""
    from physml.constraints import NonNegative

    keep = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64))
    same = torch.tensor([0.5, -0.1, 0.3, 0.2], dtype=F64).expand(3, 4)
    with pytest.raises(ConstraintError, match="infeasible.*cannot move.*hold more than the total"):
        through(NonNegative(keep=keep), Ensemble(same))


def test_nonnegativity_refuses_a_slightly_negative_total_rather_than_change_it():
    """A total of ``-1e-6`` (relative) is no round-off: zeroing the field would lose it."""
    from physml.constraints import NonNegative

    keep = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64))
    field = torch.tensor([0.5, -0.5 - 1e-6, 0.25, -0.25], dtype=F64)
    with pytest.raises(ConstraintError, match="infeasible here: a total is -1e-06 < 0"):
        through(NonNegative(keep=keep), field)
    with pytest.raises(ConstraintError, match="infeasible here: a total is -1e-06 < 0"):
        through(NonNegative(keep=keep), Ensemble(field + torch.zeros(3, 1, dtype=F64)))


def test_nonnegativity_of_a_one_row_posterior_pins_a_zero_mean_the_row_pulls_down():
    """``N(m, diag(D) − f fᵀ)`` exact on ``w = 1``; the points ``A = {1, 2}`` are held at zero
    (``m_2 = 0``, but ``λ > 0`` pushes it below): the result is the Gaussian conditioned on
    ``u_A = 0``, by hand: ``m − Σ_·A Σ_AA⁻¹ m_A`` and ``Σ − Σ_·A Σ_AA⁻¹ Σ_A·``."""
    from physml.constraints import NonNegative

    variance = np.array([0.2, 0.1, 0.3, 0.2, 0.4])
    factor = variance / np.sqrt(variance.sum())
    mean = np.array([0.5, -0.2, 0.0, 0.3, 0.2])
    cov = np.diag(variance) - np.outer(factor, factor)
    A = [1, 2]
    gain = cov[:, A] @ np.linalg.inv(cov[np.ix_(A, A)])
    expected_mean, expected_cov = mean - gain @ mean[A], cov - gain @ cov[A, :]
    np.testing.assert_allclose(expected_mean, [0.45, 0, 0, 0.25, 0.1], atol=1e-15)  # λ = 1/4
    low_rank = LowRankCovariance(
        torch.tensor(variance), torch.tensor(factor)[:, None], diagonal=True
    )
    out = through(NonNegative(), Gaussian(torch.tensor(mean), low_rank))
    np.testing.assert_allclose(out.mean.numpy(), expected_mean, rtol=0, atol=1e-15)
    np.testing.assert_allclose(out.dense_cov().numpy(), expected_cov, rtol=0, atol=1e-15)
    still = np.array([0.5, 0.0, 0.3, 0.2, 0.1])  # no negative: a slice beside it stays as it is
    both = LowRankCovariance(
        torch.tensor(variance).expand(2, 5), torch.tensor(factor)[:, None].expand(2, 5, 1)
    )
    out = through(NonNegative(), Gaussian(torch.tensor(np.stack([mean, still])), both))
    np.testing.assert_allclose(out.mean[1].numpy(), still, rtol=0, atol=0)
    np.testing.assert_allclose(out.dense_cov()[1].numpy(), cov, rtol=0, atol=1e-15)
    np.testing.assert_allclose(out.dense_cov()[0].numpy(), expected_cov, rtol=0, atol=1e-15)


def test_nonnegativity_of_a_one_row_posterior_refuses_a_negative_point_without_variance():
    """Point 1 has no variance (``D_1 = f_1 = 0``): conditioning cannot move its ``-0.1``."""
    from physml.constraints import NonNegative

    variance = torch.tensor([0.2, 0.0, 0.3], dtype=F64)
    factor = (variance / variance.sum().sqrt())[:, None]  # exact on w = 1
    stuck = Gaussian(torch.tensor([0.5, -0.1, 0.3], dtype=F64), LowRankCovariance(variance, factor))
    with pytest.raises(ConstraintError, match="non-negativity is infeasible here"):
        through(NonNegative(), stuck)


def test_nonnegativity_of_a_one_row_posterior_keeps_a_value_within_the_tolerance():
    """Tolerance 0.01: only point 3 is pinned; point 1 (``-0.005``, still above ``-0.01`` once
    point 3 is conditioned to zero, by hand) stays negative."""
    from physml.constraints import NonNegative

    variance = np.array([0.3, 0.001, 0.2, 0.2, 0.3])
    factor = variance / np.sqrt(variance.sum())  # exact on w = 1
    mean = np.array([0.5, -0.005, 0.3, -0.5, 0.9])
    cov = np.diag(variance) - np.outer(factor, factor)
    expected = mean - cov[:, 3] * mean[3] / cov[3, 3]
    assert -0.01 < expected[1] < 0 and (np.delete(expected, 1) >= 0).all()
    low_rank = LowRankCovariance(torch.tensor(variance), torch.tensor(factor)[:, None])
    out = through(NonNegative(0.01), Gaussian(torch.tensor(mean), low_rank))
    np.testing.assert_allclose(out.mean.numpy(), expected, rtol=0, atol=1e-14)


def test_a_simplex_total_of_another_shape_or_below_zero_is_refused_naming_it():
    """``total`` broke inside torch (shape) or was silently missed (negative: all zeros)."""
    from physml.constraints.nonnegative import simplex_projection

    x, w, d = torch.rand(2, 4, dtype=F64), torch.ones(4, dtype=F64), torch.ones(2, 4, dtype=F64)
    torch.testing.assert_close(
        simplex_projection(x, w, d, torch.tensor([1.0, 2.0], dtype=F64)).sum(-1),
        torch.tensor([1.0, 2.0], dtype=F64),
    )
    nan = torch.tensor([float("nan"), 1.0], dtype=F64)  # was a silent row of zeros
    for total in (torch.ones(3, dtype=F64), torch.tensor([-5.0, 1.0], dtype=F64), nan):
        refused = r"^total must hold one finite total >= 0 per row, shape \(2,\)"
        with pytest.raises(ValueError, match=refused):
            simplex_projection(x, w, d, total)
    with pytest.raises(TypeError, match=r"^total must be a tensor of shape \(2,\), got 1\.0$"):
        simplex_projection(x, w, d, 1.0)


def test_mass_conservation_with_a_solvers_weights_holds_that_solvers_mass():
    """The Neumann heat scheme's own mass (``weights=neumann_weights``) is met to round-off
    while the trapezoid integral is left an O(dx²) distance away, and vice versa."""
    from pdes.heat import neumann_weights

    grid = Grid1D(17)
    field = torch.rand(3, 1, 17, generator=torch.Generator().manual_seed(2), dtype=F64)
    target = torch.tensor([[0.7], [0.2], [1.3]], dtype=F64)
    inner = field[..., 1:-1]
    by_hand = (inner.sum(-1) + 0.5 * (inner[..., 0] + inner[..., -1])) / 16
    solver = through(mass_conservation(grid, target, weights=neumann_weights(grid)), field)
    inner = solver[..., 1:-1]
    torch.testing.assert_close(
        (inner.sum(-1) + 0.5 * (inner[..., 0] + inner[..., -1])) / 16, target, rtol=0, atol=1e-14
    )
    assert (grid.integrate(solver) - target).abs().max() > 1e-4
    trapezoid = through(mass_conservation(grid, target), field)
    torch.testing.assert_close(grid.integrate(trapezoid), target, rtol=0, atol=1e-14)
    assert not torch.allclose(by_hand, target)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0] * 17, r"weights must be a torch\.Tensor of the grid's shape \(17,\), got <class"),
        (torch.ones(16), r"weights must have the grid's shape \(17,\), got \(16,\)"),
        (torch.full((17,), float("nan")), r"weights must be finite and not all zero"),
        (torch.zeros(17), r"weights must be finite and not all zero"),
        # both were read as float64 (bool as 1.0, complex with its imaginary part dropped)
        (
            torch.ones(17, dtype=torch.bool),
            r"^weights must hold real numbers, got dtype torch.bool",
        ),
        (torch.full((17,), 1 + 1j), r"^weights must hold real numbers, got dtype torch.complex"),
    ],
)
def test_mass_conservation_refuses_weights_off_the_grid(weights, message):
    with pytest.raises(ConstraintError, match=message):
        mass_conservation(Grid1D(17), 1.0, weights=weights)


def test_mass_conservation_takes_integer_weights_as_their_values():
    """Integer weights ``w = (2, 1, 1, 1, 2)`` are used as they are: the field with ``w·u = 8.25``
    moves to ``w·u = 4`` along ``w`` (the Euclidean projection), by ``(4 − 8.25) / |w|² · w``."""
    weights = torch.tensor([2, 1, 1, 1, 2])
    field = torch.tensor([[0.5, -1.0, 2.0, 0.25, 3.0]], dtype=F64)
    constraint = mass_conservation(Grid1D(5), torch.tensor([4.0], dtype=F64), weights=weights)
    expected = field + (4.0 - 8.25) / 11.0 * weights.to(F64)
    torch.testing.assert_close(through(constraint, field), expected, rtol=0, atol=1e-14)


def test_the_reprs_name_the_settings_given():
    from physml.constraints import NonNegative

    G = torch.eye(6, dtype=F64)[:2]
    rows = LinearConstraint(
        G, torch.zeros(3, 2), 0.5, "euclidean", space=(2, 3), channels=(1,), shrinkage=0.25
    )
    assert repr(rows) == (
        "LinearConstraint(G=2×6, space=(2, 3), channels=(1,), noise=0.5, "
        "projection='euclidean', shrinkage=0.25, target=tensor (3, 2))"
    )
    total = mass_conservation(Grid1D(9), lambda x: x.sum(-1))
    assert repr(total) == (
        "LinearConstraint(G=1×9, space=(9,), noise=0, projection='covariance', shrinkage=0, "
        "target=callable)"
    )
    assert repr(NonNegative()) == "NonNegative(tolerance=0, jitter=0.001, keep=None)"
    kept = repr(NonNegative(0.3, keep=total, jitter=0.01)).splitlines()
    assert kept[:3] == [
        "NonNegative(",
        "  tolerance=0.3, jitter=0.01",
        "  (keep): " + repr(total),
    ]
