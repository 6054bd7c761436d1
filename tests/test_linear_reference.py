"""LinearConstraint against dense float64 numpy references (DESIGN.md §3), one case per path.

Each expected value is computed here from the textbook formula with explicit inverses: the
Euclidean projection ``u − Gᵀ (G Gᵀ)⁻¹ (G u − b)`` (HardC), the Gaussian conditioning ``μ − Σ Gᵀ
(σ² I + G Σ Gᵀ)⁻¹ (G μ − b)`` (ProbConserv) and the ensemble gain ``K = Σ_A Gᵀ (G Σ_A Gᵀ + σ²
I)⁻¹``, ``Σ_A`` the members' sample covariance (plus ``γ I`` where they cannot span the rows).
"""

import numpy as np
import pytest
import torch
from test_constraints import dense_update, root_gain, through
from torch import nn

from pdes import Dirichlet, Grid1D, Neumann, Periodic
from physml import (
    ConstraintError,
    Ensemble,
    Gaussian,
    LinearConstraint,
    LowRankCovariance,
    constrain,
)
from physml.constraints import BoundaryCondition

F64 = torch.float64


def projection(u, G, b):
    """numpy: the nearest ``u`` meeting ``G u = b`` (rows of ``u`` are fields)."""
    return u - (u @ G.T - b) @ np.linalg.inv(G @ G.T) @ G


def test_a_matrix_without_rows_is_refused():
    with pytest.raises(ConstraintError, match="at least one row"):
        LinearConstraint(torch.zeros(0, 5, dtype=F64), torch.zeros(0, dtype=F64))


def test_one_target_for_several_rows_is_every_rows_target():
    """``b`` of last size 1 beside ``k > 1`` rows is the target of each row."""
    G = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]])
    u = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]])
    out = through(LinearConstraint(torch.tensor(G), torch.tensor([3.0])), torch.tensor(u))
    np.testing.assert_allclose(out.numpy(), projection(u, G, np.array([3.0, 3.0])), atol=1e-12)
    np.testing.assert_allclose(out.numpy() @ G.T, 3.0, atol=1e-12)


def test_a_grid_that_does_not_hold_the_columns_is_refused():
    with pytest.raises(ConstraintError, match=r"space \(2, 3\) must hold G's 5 columns"):
        LinearConstraint(torch.ones(1, 5, dtype=F64), torch.zeros(1, dtype=F64), space=(2, 3))


@pytest.mark.parametrize("rows", [1, 2])  # one row: its own, factorisation-free route
@pytest.mark.parametrize("noise", [0.0, 0.5])
@pytest.mark.parametrize("base_is_diagonal", [True, False])
def test_probconserv_on_a_low_rank_covariance_is_the_dense_conditioning(
    base_is_diagonal, noise, rows
):
    """A covariance ``base − F Fᵀ`` (the output of an earlier update) conditioned on the rows is
    numpy's dense conditioning of that matrix; its factor keeps the earlier columns."""
    rng = np.random.default_rng(3)
    n = 7
    spread = rng.normal(size=(n, n))
    base = rng.uniform(1.0, 2.0, size=n) if base_is_diagonal else spread @ spread.T / n + np.eye(n)
    dense_base = np.diag(base) if base_is_diagonal else base
    factor = 0.3 * rng.normal(size=(n, 2))
    cov = dense_base - factor @ factor.T
    assert np.linalg.eigvalsh(cov).min() > 0
    mean, G, b = rng.normal(size=n), rng.normal(size=(rows, n)), rng.normal(size=rows)
    prior = LowRankCovariance(torch.tensor(base), torch.tensor(factor), base_is_diagonal)
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b), noise=noise),
        Gaussian(torch.tensor(mean), prior),
    )
    expected_mean, expected_cov = dense_update(mean, cov, G, b, noise)
    np.testing.assert_allclose(out.mean.numpy(), expected_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.cov.dense().numpy(), expected_cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.variance().numpy(), np.diag(expected_cov), atol=1e-12)


@pytest.mark.parametrize("noise", [0.0, 0.7])
def test_probconserv_on_variances_is_the_dense_conditioning_of_their_diagonal(noise):
    rng = np.random.default_rng(4)
    n = 6
    variance, mean = rng.uniform(0.5, 3.0, size=(2, n)), rng.normal(size=(2, n))
    G, b = rng.normal(size=(3, n)), rng.normal(size=(2, 3))
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b), noise=noise),
        Gaussian(torch.tensor(mean), torch.tensor(variance)),
    )
    for i in range(2):
        expected_mean, expected_cov = dense_update(mean[i], np.diag(variance[i]), G, b[i], noise)
        np.testing.assert_allclose(out.mean[i].numpy(), expected_mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.cov.dense()[i].numpy(), expected_cov, atol=1e-12)


def test_hardc_on_every_output_kind_is_the_euclidean_projection():
    """Tensor, Gaussian mean (``projection="euclidean"``, variance kept) and each member of an
    Ensemble are projected on their own, whatever the noise."""
    rng = np.random.default_rng(5)
    n = 8
    G, b = rng.normal(size=(3, n)), rng.normal(size=3)
    u = rng.normal(size=(4, n))
    rows = LinearConstraint(torch.tensor(G), torch.tensor(b), noise=0.3, projection="euclidean")
    np.testing.assert_allclose(
        through(rows, torch.tensor(u)).numpy(), projection(u, G, b), atol=1e-12
    )
    members = through(rows, Ensemble(torch.tensor(u))).samples.numpy()
    np.testing.assert_allclose(members, projection(u, G, b), atol=1e-12)
    variance = rng.uniform(0.5, 2.0, size=(4, n))
    gaussian = through(rows, Gaussian(torch.tensor(u), torch.tensor(variance)))
    np.testing.assert_allclose(gaussian.mean.numpy(), projection(u, G, b), atol=1e-12)
    np.testing.assert_array_equal(gaussian.variance().numpy(), variance)


@pytest.mark.parametrize(
    ("channels", "match"),
    [
        ((-1,), r"channels entries must be >= 0, got \(-1,\)"),
        ((0, 0), r"channels must be distinct channel indices >= 0, got \(0, 0\)"),
        ((), r"channels must be a non-empty sequence of integers, got \(\)"),
    ],
)
def test_channels_must_be_distinct_indices_from_zero(channels, match):
    with pytest.raises(ConstraintError, match=match):
        LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64), channels=channels)


def test_the_rows_act_on_the_chosen_channels_only():
    """``channels=(0, 2)`` of a ``(batch, 3, n)`` field: those two channels are projected, each
    with its own target, the middle one is left as it was, bit for bit."""
    rng = np.random.default_rng(6)
    n = 5
    G, b = rng.normal(size=(2, n)), rng.normal(size=(2, 2, 2))  # (batch, channel, row)
    u = rng.normal(size=(2, 3, n)).astype(np.float32)
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b), channels=(0, 2)), torch.tensor(u)
    )
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out[:, 1].numpy(), u[:, 1])
    for i in range(2):
        for j, channel in enumerate((0, 2)):
            expected = projection(u[i, channel].astype(np.float64)[None], G, b[i, j])[0]
            np.testing.assert_allclose(out[i, channel].numpy(), expected, rtol=1e-6, atol=1e-6)


def ensemble_gain(X, G, noise, gamma=0.0):
    """numpy: ``K = C Gᵀ (G C Gᵀ + σ² I)⁻¹``, ``C = A Aᵀ / (m − 1) + γ I``, ``A`` the centred
    members (rows of ``X``)."""
    A = X - X.mean(0)
    C = A.T @ A / (X.shape[0] - 1) + gamma * np.eye(X.shape[1])
    return C @ G.T @ np.linalg.inv(G @ C @ G.T + noise**2 * np.eye(G.shape[0]))


@pytest.mark.parametrize("rows, members", [(1, 6), (3, 6), (4, 4), (5, 3)])
def test_an_exact_ensemble_update_moves_every_member_by_the_dense_gain(rows, members):
    """``σ = 0``: every member ``x − K (G x − b)``; with more rows than ``members − 1`` the
    covariance carries ``γ I``, ``γ`` = jitter × the members' mean variance."""
    rng = np.random.default_rng(7 + rows)
    n = 9
    X = rng.normal(size=(members, n)) * rng.uniform(0.5, 2.0, size=n) + rng.normal(size=n)
    G, b = rng.normal(size=(rows, n)), rng.normal(size=rows)
    A = X - X.mean(0)
    gamma = 0.0 if rows <= members - 1 else 1e-2 * (A**2).sum(0).mean() / (members - 1)
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b), jitter=1e-2), Ensemble(torch.tensor(X))
    ).samples.numpy()
    expected = X - (X @ G.T - b) @ ensemble_gain(X, G, 0.0, gamma).T
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out @ G.T, np.broadcast_to(b, (members, rows)), atol=1e-10)


def test_new_rows_loaded_into_a_used_constraint_are_the_ones_applied():
    """The cached projector follows ``G``: rows loaded after a first call are used by the next."""
    rng = np.random.default_rng(8)
    n = 6
    G_old, G_new, b = rng.normal(size=(2, n)), rng.normal(size=(2, n)), rng.normal(size=2)
    u = rng.normal(size=(3, n))
    rows = LinearConstraint(torch.tensor(G_old), torch.tensor(b))
    np.testing.assert_allclose(
        through(rows, torch.tensor(u)).numpy(), projection(u, G_old, b), atol=1e-12
    )
    rows.load_state_dict(LinearConstraint(torch.tensor(G_new), torch.tensor(b)).state_dict())
    np.testing.assert_allclose(
        through(rows, torch.tensor(u)).numpy(), projection(u, G_new, b), atol=1e-12
    )


def test_a_tensor_projection_keeping_other_walls_is_recomputed_for_them():
    """One constraint after two different Dirichlet conditions (left wall only, then both): each
    result is the nearest field meeting the rows with those walls' points held fixed."""
    rng = np.random.default_rng(9)
    n = 8
    G, b = rng.uniform(0.5, 1.5, size=(1, n)), np.array([2.0])
    u = rng.normal(size=(2, n))
    rows = LinearConstraint(torch.tensor(G), torch.tensor(b))
    for side, fixed in (("left", [0]), ("both", [0, n - 1])):
        condition = BoundaryCondition(Dirichlet(0.5, -0.5), Grid1D(n), side=side)
        out = constrain(nn.Identity(), condition, rows, kernel=False)(torch.tensor(u)).numpy()
        start = u.copy()
        start[:, 0] = 0.5
        if n - 1 in fixed:
            start[:, -1] = -0.5
        free = [i for i in range(n) if i not in fixed]
        expected = start.copy()
        remaining = (b - start[:, fixed] @ G[0, fixed])[:, None]  # each field's own target
        expected[:, free] = projection(start[:, free], G[:, free], remaining)
        np.testing.assert_allclose(out, expected, atol=1e-12)


def test_a_field_on_another_2d_grid_is_refused_naming_the_grid():
    """Rows on a ``(2, 3)`` grid: a ``(4, 3)`` field ends in 3 points like it, but not its grid."""
    rows = LinearConstraint(torch.ones(1, 6, dtype=F64), torch.zeros(1, dtype=F64), space=(2, 3))
    with pytest.raises(ConstraintError, match=r"does not end in the constraint's grid \(2, 3\)"):
        through(rows, torch.zeros(4, 3, dtype=F64))
    out = through(rows, torch.ones(5, 2, 3, dtype=F64))  # the grid itself: each frame sums to 0
    np.testing.assert_allclose(out.numpy(), 0.0, atol=1e-12)


def test_a_channel_one_past_the_last_is_refused():
    rows = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64), channels=(0, 3))
    with pytest.raises(ConstraintError, match=r"channels \(0, 3\) do not exist"):
        through(rows, torch.zeros(2, 3, 4, dtype=F64))


def test_a_target_with_more_axes_than_the_field_is_refused():
    rows = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(3, 1, dtype=F64))
    with pytest.raises(ConstraintError, match="without adding axes"):
        through(rows, torch.zeros(4, dtype=F64))


def test_a_gaussian_is_refused_when_the_rows_pick_channels():
    rows = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.zeros(1, dtype=F64), channels=(0,))
    with pytest.raises(ConstraintError, match=r"channels=\(0,\) is not supported for a Gaussian"):
        through(rows, Gaussian(torch.zeros(2, 4, dtype=F64), torch.ones(2, 4, dtype=F64)))


def test_rows_after_periodic_ends_on_both_axes_are_the_projection_keeping_them():
    """Periodic ends on both axes of a 2-D grid: the four corner relations are dependent (their
    cycle sums to zero), so keeping them takes a pseudo-inverse; the result is numpy's nearest
    field meeting ``G u = b`` and every periodic relation of the periodic field."""
    rng = np.random.default_rng(10)
    H, W = 4, 5
    ends = [BoundaryCondition(Periodic(), Grid1D(W), axis=-1)]
    ends.append(BoundaryCondition(Periodic(), Grid1D(H), axis=-2))
    G, b = rng.uniform(0.5, 1.5, size=(2, H * W)), np.array([1.0, -2.0])
    u = torch.tensor(rng.normal(size=(1, 1, H, W)))
    periodic = constrain(nn.Identity(), *ends, kernel=False)(u).numpy().reshape(H * W)
    rows = LinearConstraint(torch.tensor(G), torch.tensor(b), space=(H, W))
    out = constrain(nn.Identity(), *ends, rows, kernel=False)(u).numpy().reshape(H * W)
    index = np.arange(H * W).reshape(H, W)
    pairs = [(index[i, 0], index[i, -1]) for i in range(H)]
    pairs += [(index[0, j], index[-1, j]) for j in range(W)]
    R = np.zeros((len(pairs), H * W))
    for r, (first, last) in enumerate(pairs):
        R[r, first], R[r, last] = 1.0, -1.0
    M = np.vstack([G, R])
    expected = periodic - np.linalg.pinv(M) @ (M @ periodic - np.concatenate([b, R @ periodic]))
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("correlation, ratio", [(2.0, r"-0\.333"), (1.0 + 1e-6, r"-5e-07")])
def test_check_psd_finds_an_indefinite_covariance_the_variances_do_not_show(correlation, ratio):
    """Eigenvalues ``1 − c``, 1, ``1 + c`` with the negative one in a block the row does not
    touch: every constrained variance stays non-negative, so only ``check_psd`` can tell, and
    it names the smallest eigenvalue relative to the largest, ``(1 − c) / (1 + c)``."""
    c = correlation
    cov = torch.tensor([[1.0, c, 0.0], [c, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    G, b = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64), torch.ones(1, dtype=F64)
    mean = torch.zeros(3, dtype=F64)
    unchecked = through(LinearConstraint(G, b), Gaussian(mean, cov))
    np.testing.assert_allclose(unchecked.mean.numpy(), [0.0, 0.0, 1.0], atol=1e-15)
    with pytest.raises(ConstraintError, match=rf"smallest eigenvalue {ratio} × the largest"):
        through(LinearConstraint(G, b, check_psd=True), Gaussian(mean, cov))


def test_a_row_that_is_a_kept_neumann_stencil_is_refused():
    """A row equal to the Neumann wall stencil ``3u₀ − 4u₁ + u₂`` constrains only what the
    condition set: it cannot be met while keeping it (round-off leaves it a tiny non-zero rest)."""
    n = 6
    stencil = torch.zeros(1, n, dtype=F64)
    stencil[0, :3] = torch.tensor([3.0, -4.0, 1.0]) / 7.0
    flux = BoundaryCondition(Neumann(0.3, 0.0), Grid1D(n), side="left")
    rows = LinearConstraint(stencil, torch.tensor([0.5], dtype=F64))
    with pytest.raises(ConstraintError, match="cannot be met while keeping the boundary"):
        constrain(nn.Identity(), flux, rows, kernel=False)(torch.ones(1, 1, n, dtype=F64))


def test_an_indefinite_covariance_is_refused_by_the_negative_variance_it_leaves():
    """``[[1, 2], [2, 1]]`` conditioned on ``u₀``: ``u₁``'s variance would be ``1 − 2²/1 = −3``."""
    cov = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)
    rows = LinearConstraint(torch.tensor([[1.0, 0.0]], dtype=F64), torch.zeros(1, dtype=F64))
    with pytest.raises(ConstraintError, match=r"negative \(minimum -3,"):
        through(rows, Gaussian(torch.zeros(2, dtype=F64), cov))


def test_a_negative_variance_well_beyond_round_off_is_refused():
    """Correlation ``1 + 10⁻⁵``: conditioning on ``u₀`` leaves ``u₁`` the variance
    ``1 − (1 + 10⁻⁵)² ≈ −2·10⁻⁵``, far beyond round-off of the prior variances (1)."""
    c = 1.0 + 1e-5
    cov = torch.tensor([[1.0, c], [c, 1.0]], dtype=F64)
    rows = LinearConstraint(torch.tensor([[1.0, 0.0]], dtype=F64), torch.zeros(1, dtype=F64))
    with pytest.raises(ConstraintError, match=r"negative \(minimum -2e-05,"):
        through(rows, Gaussian(torch.zeros(2, dtype=F64), cov))


@pytest.mark.parametrize("rows, members", [(1, 6), (3, 6), (4, 3)])
def test_a_noisy_ensemble_update_is_the_square_root_update_of_the_dense_gain(rows, members):
    """``σ > 0``: the mean moves by the dense gain ``K`` (with ``γ I`` where the members cannot
    span the rows), the centred members ``A`` by ``K̃ = C Gᵀ L⁻ᵀ (L + σ I)⁻¹``, ``L Lᵀ = G C Gᵀ
    + σ² I``; where ``C`` is the members' own covariance theirs becomes ``(I − K G) C``."""
    rng = np.random.default_rng(11 + rows)
    n, noise = 8, 0.6
    X = rng.normal(size=(members, n)) * rng.uniform(0.5, 2.0, size=n) + rng.normal(size=n)
    G, b = rng.normal(size=(rows, n)), rng.normal(size=rows)
    A = X - X.mean(0)
    spanned = rows <= members - 1
    gamma = 0.0 if spanned else 1e-3 * (A**2).sum(0).mean() / (members - 1)
    C = A.T @ A / (members - 1) + gamma * np.eye(n)
    out = through(
        LinearConstraint(torch.tensor(G), torch.tensor(b), noise=noise), Ensemble(torch.tensor(X))
    ).samples.numpy()
    gain = ensemble_gain(X, G, noise, gamma)
    mean = X.mean(0) - gain @ (G @ X.mean(0) - b)
    root = root_gain(C, G, noise)
    np.testing.assert_allclose(out, mean + A - A @ G.T @ root.T, rtol=1e-9, atol=1e-10)
    if spanned:
        spread = (out - out.mean(0)).T @ (out - out.mean(0)) / (members - 1)
        np.testing.assert_allclose(spread, C - gain @ G @ C, atol=1e-10)


def test_a_call_may_replace_the_wrapped_conditions_only_by_ones_on_the_same_walls():
    """``constraints=`` per call: other values on the same walls are used; another side is
    refused (the kept-walls projection was set up for the wrapped ones)."""
    n = 6
    rows = LinearConstraint(torch.ones(1, n, dtype=F64), torch.zeros(1, dtype=F64))
    wrapped = constrain(
        nn.Identity(), BoundaryCondition(Dirichlet(0.0, 0.0), Grid1D(n)), rows, kernel=False
    )
    u = torch.zeros(1, 1, n, dtype=F64)
    other_values = BoundaryCondition(Dirichlet(1.0, 2.0), Grid1D(n))
    out = wrapped(u, constraints=(other_values, rows))[0, 0].numpy()
    np.testing.assert_allclose(out, [1.0, -0.75, -0.75, -0.75, -0.75, 2.0], atol=1e-12)
    one_side = BoundaryCondition(Dirichlet(1.0, 2.0), Grid1D(n), side="left")
    with pytest.raises(ConstraintError, match="must match the wrapped ones one by one"):
        wrapped(u, constraints=(one_side, rows))


def test_order_is_checked_at_wrap_time_except_for_a_condition_that_sets_nothing():
    """A Dirichlet condition after the rows would break them: refused when wrapping. A periodic
    condition on a periodic grid sets nothing, so it may come after them."""
    n = 5
    rows = LinearConstraint(torch.ones(1, n, dtype=F64), torch.tensor([1.0], dtype=F64))
    with pytest.raises(ConstraintError, match=r"comes after constraints\[0\] \(LinearConstraint\)"):
        constrain(nn.Identity(), rows, BoundaryCondition(Dirichlet(0.0, 0.0), Grid1D(n)))
    nothing = BoundaryCondition(Periodic(), Grid1D(n, periodic=True))
    out = constrain(nn.Identity(), rows, nothing, kernel=False)(torch.zeros(1, 1, n, dtype=F64))
    np.testing.assert_allclose(out.numpy(), 0.2, atol=1e-15)


@pytest.mark.parametrize("bad", ["integer", "nan"])
def test_an_output_of_integers_or_with_nan_is_refused(bad):
    rows = LinearConstraint(torch.ones(1, 4, dtype=F64), torch.tensor([1.0], dtype=F64))
    if bad == "integer":  # the update would be rounded away on the way back to int64
        with pytest.raises(TypeError, match="real floating-point values.*got dtype torch.int64"):
            through(rows, torch.zeros(3, 4, dtype=torch.int64))
    else:
        field = torch.zeros(3, 4, dtype=F64)
        field[1, 2] = float("nan")
        with pytest.raises(ConstraintError, match="output contains NaN or inf"):
            through(rows, field)
