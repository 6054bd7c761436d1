"""The constraint layer's spine: the ProbConserv update, HardC, ensembles, builders, bad input.

The update is checked against an independent dense formula in numpy (explicit inverses) and against
its defining properties: exact conservation with σ = 0, a positive semi-definite posterior, no
variance left along the constraint.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
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

F64 = torch.float64


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
def test_probconserv_matches_the_dense_formula_and_conserves(seed, n, m_fraction, noise):
    m = 1 + int(m_fraction * (n - 1))
    mean, cov, G, b = random_problem(seed, n, m)
    out = LinearConstraint(G, b, noise=noise).apply(Gaussian(mean, cov))
    expected_mean, expected_cov = dense_update(mean, cov, G, b, noise)
    assert np.allclose(out.mean.numpy(), expected_mean, rtol=1e-8, atol=1e-9)
    assert np.allclose(out.dense_cov().numpy(), expected_cov, rtol=1e-8, atol=1e-9)
    eigenvalues = torch.linalg.eigvalsh(out.dense_cov())
    assert eigenvalues.min() >= -1e-10 * torch.linalg.eigvalsh(cov).max()
    if noise == 0.0:
        assert torch.allclose(G @ out.mean, b, atol=1e-10, rtol=0)
        assert (G @ out.dense_cov() @ G.T).abs().max() <= 1e-10 * cov.abs().max()


def test_batched_over_samples_and_time_slices():
    mean, cov, G, b = random_problem(1, 9, 1, batch=(3, 5))
    out = LinearConstraint(G, b).apply(Gaussian(mean, cov))
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
    low_rank = LinearConstraint(G, b).apply(Gaussian(mean, variance))
    full = LinearConstraint(G, b).apply(Gaussian(mean, torch.diag_embed(variance)))
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
    twice = LinearConstraint(G2, b2).apply(low_rank)
    prior = Gaussian(mean, torch.diag_embed(variance))
    together = LinearConstraint(torch.cat([G, G2]), torch.cat([b, b2], -1)).apply(prior)
    assert torch.allclose(twice.mean, together.mean, atol=1e-10)
    assert torch.allclose(twice.cov.dense(), together.dense_cov(), atol=1e-10)


def test_correction_goes_where_the_variance_is():
    mean = torch.zeros(10, dtype=F64)
    variance = torch.full((10,), 1e-4, dtype=F64)
    variance[7] = 1.0  # the model is unsure at one point only (a shock, say)
    G = torch.ones(1, 10, dtype=F64)
    out = LinearConstraint(G, torch.tensor([1.0])).apply(Gaussian(mean, variance))
    assert out.mean[7] > 0.99 and out.mean.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert out.variance()[7] < 1e-3


def test_hardc_projects_the_mean_and_keeps_the_variance():
    mean, cov, G, b = random_problem(3, 8, 2)
    out = LinearConstraint(G, b, projection="euclidean").apply(Gaussian(mean, cov))
    assert torch.allclose(G @ out.mean, b, atol=1e-12)
    assert torch.equal(out.cov, cov)
    # the smallest Euclidean change: the correction lies in the row space of G
    change = out.mean - mean
    coefficients = torch.linalg.lstsq(G.T, change[:, None]).solution
    assert torch.allclose(G.T @ coefficients, change[:, None], atol=1e-12)


def test_tensor_output_is_projected():
    mean, _, G, b = random_problem(4, 6, 1, batch=(5,))
    out = LinearConstraint(G, b).apply(mean.float())
    assert out.dtype == F64 and torch.allclose(out @ G.T, b, atol=1e-12)


def test_every_ensemble_member_conserves_and_the_spread_is_the_posterior():
    gen = torch.Generator().manual_seed(5)
    samples = torch.randn(50, 3, 12, generator=gen, dtype=F64)
    G = torch.randn(2, 12, generator=gen, dtype=F64)
    b = torch.randn(3, 2, generator=gen, dtype=F64)
    prior = Ensemble(samples)
    out = LinearConstraint(G, b).apply(prior)
    assert torch.allclose(out.samples @ G.T, b.expand(50, 3, 2), atol=1e-10)
    posterior = LinearConstraint(G, b).apply(Gaussian(prior.mean(), prior.covariance()))
    assert torch.allclose(out.mean(), posterior.mean, atol=1e-10)
    assert torch.allclose(out.covariance(), posterior.dense_cov(), atol=1e-10)


def test_mass_conservation_on_a_grid_over_time():
    grid = Grid1D(21, 0.0, 2.0)
    times = torch.linspace(0, 1, 6, dtype=F64)
    inflow = torch.stack([torch.cos(times), 2 * torch.ones(6, dtype=F64)])  # (sample, time)
    mass = 1.0 + cumulative_inflow(times, inflow)
    assert torch.allclose(mass[1], 1.0 + 2 * times)  # the trapezoid rule is exact for constants
    gen = torch.Generator().manual_seed(6)
    mean = torch.randn(2, 6, 21, generator=gen, dtype=F64)
    variance = torch.rand(2, 6, 21, generator=gen, dtype=F64)
    out = mass_conservation(grid, mass).apply(Gaussian(mean, variance))
    assert torch.allclose(grid.integrate(out.mean), mass, atol=1e-12)


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
        (torch.ones(4), torch.zeros(1), {}, r"shape \(m, n\)"),
        (torch.ones(1, 4), torch.zeros(3), {}, r"b must have shape \(\.\.\., 1\)"),
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
        constraint.apply(Gaussian(torch.zeros(5, dtype=F64), torch.ones(5, dtype=F64)))
    wrong_slices = mass_conservation(Grid1D(4), torch.zeros(3, 5, dtype=F64))  # (function, time)
    with pytest.raises(ConstraintError, match=r"does not fit mean of shape \(2, 5, 4\)"):
        wrong_slices.apply(
            Gaussian(torch.zeros(2, 5, 4, dtype=F64), torch.ones(2, 5, 4, dtype=F64))
        )
    with pytest.raises(ConstraintError, match="does not fit samples"):
        wrong_slices.apply(Ensemble(torch.zeros(4, 2, 5, 4, dtype=F64)))
    with pytest.raises(ValueError, match="cov must have shape"):
        Gaussian(torch.zeros(4), torch.ones(3))
    with pytest.raises(ValueError, match="mean contains NaN"):
        Gaussian(torch.tensor([0.0, float("nan")]), torch.ones(2))
    with pytest.raises(ValueError, match="diagonal covariance must be >= 0"):
        Gaussian(torch.zeros(2), torch.tensor([1.0, -1.0]))
    indefinite = torch.diag(torch.tensor([1.0, -5.0, 1.0, 1.0], dtype=F64))
    with pytest.raises(ConstraintError, match="not positive definite"):
        constraint.apply(Gaussian(torch.zeros(4, dtype=F64), indefinite))
    slight = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.5], dtype=F64))  # G Σ Gᵀ > 0 still
    strict = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1), check_psd=True)
    with pytest.raises(ConstraintError, match="not positive semi-definite"):
        strict.apply(Gaussian(torch.zeros(4, dtype=F64), slight))
    singular = torch.zeros(4, 4, dtype=F64)  # no uncertainty at all and no noise: infeasible
    with pytest.raises(ConstraintError, match="not positive definite"):
        constraint.apply(Gaussian(torch.ones(4, dtype=F64), singular))
    with pytest.raises(ConstraintError, match="cannot|applies to"):
        constraint.apply("not an output")
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
    ours = LinearConstraint(G, b, noise=noise).apply(Gaussian(mean, cov))
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
    conserved = LinearConstraint(G, b).apply(Gaussian(mean, cov))
    assert (conserved.mean < 0).any()
    out = NonNegative().apply(conserved)
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
    untouched = NonNegative().apply(Gaussian(mean.abs(), cov))
    assert torch.equal(untouched.mean, mean.abs())
    with pytest.raises(ConstraintError, match="cannot be applied to a tensor"):
        NonNegative().apply(mean)
