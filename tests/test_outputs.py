"""Shape readings, bad-input checks and exact values of :mod:`physml.outputs`."""

from __future__ import annotations

import warnings

import pytest
import torch

from physml._checks import NonFiniteError
from physml.outputs import Gaussian, LowRankCovariance, safe_sqrt


def test_low_rank_matmul_uses_base_as_given() -> None:
    """``matmul`` is ``(base − F Fᵀ) @ other`` with ``base`` not transposed (checked on a
    non-symmetric base, where ``base @ other`` and ``baseᵀ @ other`` differ)."""
    base = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    factor = torch.tensor([[1.0], [1.0]])
    other = torch.tensor([[1.0], [0.0]])
    # base @ other = [1, 0]; F Fᵀ @ other = [1, 1]
    got = LowRankCovariance(base, factor, diagonal=False).matmul(other)
    assert torch.equal(got, torch.tensor([[0.0], [-1.0]]))


def test_low_rank_full_base_must_broadcast_with_factor() -> None:
    """A full base whose leading axes do not broadcast with the factor's is refused."""
    base = torch.eye(3).expand(2, 3, 3)
    factor = torch.zeros(3, 3, 1)
    with pytest.raises(ValueError, match="diagonal=False needs a full base"):
        LowRankCovariance(base, factor, diagonal=False)


def test_low_rank_single_point_is_not_ambiguous() -> None:
    """With ``n = 1`` both readings of a ``(1, 1)`` base are the same matrix: no error, and the
    variance is ``base − Σ f²``."""
    cov = LowRankCovariance(torch.tensor([[5.0]]), torch.tensor([[[1.0, 2.0]]]))
    assert cov.diagonal is True
    assert torch.equal(cov.variance(), torch.tensor([[0.0]]))


def test_low_rank_reads_diagonal_from_shapes() -> None:
    """Left ``None``, ``diagonal`` is set from the shapes when only one reading fits."""
    factor = torch.zeros(2, 3, 1)
    assert LowRankCovariance(torch.ones(2, 3), factor).diagonal is True
    assert LowRankCovariance(torch.eye(3), factor).diagonal is False


def test_gaussian_refuses_scalar_mean() -> None:
    with pytest.raises(TypeError, match=r"mean must be a tensor of shape \(\.\.\., n\)"):
        Gaussian(torch.tensor(1.0), torch.tensor(1.0))


@pytest.mark.parametrize("where", ["cov", "cov.base", "cov.factor"])
def test_gaussian_refuses_boolean_covariance(where: str) -> None:
    mean = torch.zeros(3)
    flag = torch.ones(3, dtype=torch.bool)
    if where == "cov":
        cov = flag
    elif where == "cov.base":
        cov = LowRankCovariance(flag, torch.zeros(3, 1))
    else:
        cov = LowRankCovariance(torch.ones(3), flag[:, None])
    with pytest.raises(TypeError, match=rf"{where} must hold real numbers, got dtype torch.bool"):
        Gaussian(mean, cov)


def test_gaussian_refuses_non_finite_low_rank_factor() -> None:
    factor = torch.tensor([[0.0], [float("nan")], [0.0]])
    with pytest.raises(NonFiniteError, match="cov contains NaN or inf"):
        Gaussian(torch.zeros(3), LowRankCovariance(torch.ones(3), factor))


def test_safe_sqrt_has_zero_derivatives_at_zero() -> None:
    """``√v``, ``1/(2√v)`` and ``−1/(4 v^{3/2})`` where ``v > 0``; value and both derivatives 0
    at ``v = 0`` (a plain ``sqrt`` gives inf there, NaN once multiplied by a zero)."""
    values = torch.tensor([0.0, 0.25, 4.0], dtype=torch.float64, requires_grad=True)
    root = safe_sqrt(values)
    (slope,) = torch.autograd.grad(root.sum(), values, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), values)
    assert root.tolist() == [0.0, 0.5, 2.0]
    assert slope.tolist() == [0.0, 1.0, 0.25]
    assert curvature.tolist() == [0.0, -2.0, -1 / 32]


def test_a_square_symmetric_cov_beside_as_many_rows_warns_which_reading_is_taken() -> None:
    """``cov`` ``(n, n)`` beside a mean ``(B, n)`` with ``B == n`` fits both variances, one row per
    sample, and one full covariance shared by the rows: it is read as variances (row 0 is
    ``K``'s row 0, not its diagonal), with a warning when ``K`` is symmetric; ``diagonal=True``
    says so silently, ``diagonal=False`` wants the shared one expanded."""
    K = 0.5 * torch.eye(4) + 0.5
    hint = r"expanded to one per row, \(4, 4, 4\).*diagonal=True"
    with pytest.warns(UserWarning, match=hint) as seen:
        read = Gaussian(torch.zeros(4, 4), K)
    assert seen[0].filename == __file__  # the caller's line, not the dataclass's __init__
    assert read.is_diagonal and read.diagonal is None  # kept as given
    assert torch.equal(read.variance()[0], torch.tensor([1.0, 0.5, 0.5, 0.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Gaussian(torch.zeros(4, 4), K, diagonal=True).is_diagonal
        shared = Gaussian(torch.zeros(4, 4), K.expand(4, 4, 4))
        Gaussian(torch.zeros(4, 4), K + torch.triu(torch.ones(4, 4), 1))  # not symmetric
        Gaussian(torch.zeros(3, 4), K[:3])  # B != n: one reading only
    assert not shared.is_diagonal and torch.equal(shared.variance()[0], torch.ones(4))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\) \(full\) to match the mean \(diagonal=Fa"):
        Gaussian(torch.zeros(4, 4), K, diagonal=False)
    with pytest.raises(ValueError, match=r"must be >= 0 \(variances\); cov \(4, 4\) is read as"):
        Gaussian(torch.zeros(4, 4), K - 0.75)
    with pytest.raises(TypeError, match="diagonal must be True, False or None"):
        Gaussian(torch.zeros(4, 4), K, diagonal=1)
    with pytest.raises(TypeError, match="diagonal is for a tensor cov"):
        Gaussian(torch.zeros(1, 4), LowRankCovariance(K[:1], torch.zeros(1, 4, 1)), diagonal=True)


def test_replace_swaps_a_gaussians_covariance_for_one_of_another_kind() -> None:
    """``dataclasses.replace(g, cov=...)`` rebuilt the Gaussian with ``diagonal`` set to the old
    reading, so a full or low-rank covariance in place of variances was refused."""
    import dataclasses

    from physml.outputs import LowRankCovariance

    variances = Gaussian(torch.zeros(4, 3), torch.ones(4, 3))
    full = dataclasses.replace(variances, cov=torch.eye(3).expand(4, 3, 3))
    assert not full.is_diagonal and torch.equal(full.variance(), torch.ones(4, 3))
    factor = torch.full((4, 3, 1), 0.5)
    low_rank = dataclasses.replace(variances, cov=LowRankCovariance(torch.ones(4, 3), factor))
    assert torch.equal(low_rank.variance(), torch.full((4, 3), 0.75))  # base − F Fᵀ


def test_posterior_refuses_a_prior_that_is_not_a_gaussian():
    mean = torch.zeros(2, dtype=torch.float64)
    nan_base = torch.tensor([[float("nan"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    stand_in = type("Prior", (), {"cov": nan_base})()
    cov = LowRankCovariance(nan_base, torch.zeros(2, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="prior must be a Gaussian, got Prior"):
        Gaussian.posterior(mean, cov, stand_in)
