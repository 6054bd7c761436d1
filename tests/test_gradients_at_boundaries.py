"""Gradients through the constraints where a variance or a total sits exactly on its boundary
(a zero variance, a row whose total is 0): finite, and where the function is smooth the
derivative of a formula computed apart (the textbook Gaussian update, central differences)."""

import pytest
import torch

from physml.constraints import LinearConstraint, NonNegative
from physml.outputs import Gaussian

F64 = torch.float64


def textbook(mean, variance, G, b, noise):
    """The diagonal Gaussian ``N(mean, D)`` conditioned on ``G u = b + N(0, σ² I)``, by the
    normal equations: ``mean − D Gᵀ S⁻¹ (G mean − b)`` and ``diag(D − D Gᵀ S⁻¹ G D)``, ``S = G D
    Gᵀ + σ² I``."""
    DG = variance[..., :, None] * G.T  # (..., n, k)
    S = G @ DG + noise**2 * torch.eye(G.shape[0], dtype=F64)
    mismatch = (mean @ G.T - b)[..., None]
    new_mean = mean - (DG @ torch.linalg.solve(S, mismatch))[..., 0]
    lost = (DG * torch.linalg.solve(S, DG.transpose(-1, -2)).transpose(-1, -2)).sum(-1)
    return new_mean, variance - lost


def partial_textbook(G, b, noise):
    return lambda m, v: textbook(m, v, G, b, noise)


def loss(new_mean, new_variance):
    return new_mean.square().sum() + (new_variance * torch.arange(1.0, 7.0, dtype=F64)).sum()


def gradients(mean, variance, through):
    mean, variance = mean.clone().requires_grad_(), variance.clone().requires_grad_()
    loss(*through(mean, variance)).backward()
    return mean.grad, variance.grad


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_a_several_row_update_of_zero_variances_has_the_gradient_of_the_textbook_formula(noise):
    """Variances with exact zeros, two rows: every gradient finite; the mean's and the positive
    variances' those of the normal equations (smooth in them there); a zero variance's is only
    what reaches it outside the update's ``D^½`` (the posterior keeps ``D`` as its base)."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 6, generator=gen, dtype=F64)
    variance = torch.rand(2, 6, generator=gen, dtype=F64) + 0.1
    variance[:, 0] = 0.0
    variance[1, 3] = 0.0
    G = torch.randn(2, 6, generator=gen, dtype=F64)
    b = torch.randn(2, 2, generator=gen, dtype=F64)
    constraint = LinearConstraint(G, b, noise=noise)

    def update(m, v):
        out = constraint(Gaussian(m, v))
        return out.mean, out.variance()

    mean_grad, variance_grad = gradients(mean, variance, update)
    assert torch.isfinite(mean_grad).all() and torch.isfinite(variance_grad).all()
    expected_mean, expected_variance = gradients(mean, variance, partial_textbook(G, b, noise))
    positive = variance > 0
    torch.testing.assert_close(mean_grad, expected_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        variance_grad[positive], expected_variance[positive], rtol=1e-10, atol=1e-12
    )
    # at D_i = 0: d/dD_i of the base term D_i of the posterior variance, weight i + 1
    torch.testing.assert_close(variance_grad[~positive], torch.tensor([1.0, 1.0, 4.0], dtype=F64))


@pytest.mark.parametrize(
    "head, at_zero",
    [(torch.square, 0.0), (torch.relu, -0.5), (lambda x: x.clamp(min=0), -0.5)],
    ids=["square", "relu", "clamp"],
)
def test_a_variance_head_at_zero_trains_through_several_rows(head, at_zero):
    """A variance head at 0 whose own slope there is 0 (``σ²`` at ``σ = 0``, a ReLU or a clamp
    below 0): the parameters' gradient is finite (a plain square root's inf made the square's
    ``0 · inf`` NaN; ReLU and clamp mask it), and zero at those points."""
    gen = torch.Generator().manual_seed(1)
    raw = torch.rand(3, 6, generator=gen, dtype=F64) + 0.1
    raw[:, 1] = at_zero
    raw.requires_grad_()
    mean = torch.randn(3, 6, generator=gen, dtype=F64, requires_grad=True)
    G = torch.randn(2, 6, generator=gen, dtype=F64)
    variance = head(raw)
    variance.retain_grad()  # what reaches the head: a ReLU's or clamp's own backward masks it
    out = LinearConstraint(G, torch.zeros(2, dtype=F64))(Gaussian(mean, variance))
    loss(out.mean, out.variance()).backward()
    assert torch.isfinite(variance.grad).all()
    assert torch.isfinite(raw.grad).all() and torch.isfinite(mean.grad).all()
    assert torch.equal(raw.grad[:, 1], torch.zeros(3, dtype=F64))


def conserved_then_nonnegative(G, b):
    def through(m, v):
        out = NonNegative()(LinearConstraint(G, b)(Gaussian(m, v)))
        return out.mean, out.dense_cov().square().sum(-1)

    return through


def scalar_through(through):
    """A scalar of the constrained mean and spread mixing squares and a linear term, so that
    every point's gradient is nonzero in general."""

    def scalar(m, v):
        new_mean, spread = through(m, v)
        return new_mean.square().sum() + spread.sum() + 0.3 * new_mean.sum()

    return scalar


def central_differences(f, x, h=1e-6):
    """``∂f/∂x`` ``x.shape`` by central differences of the scalar ``f``."""
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        step = torch.zeros_like(x).flatten()
        step[i] = h
        step = step.reshape(x.shape)
        grad.view(-1)[i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def test_nonnegativity_of_a_row_whose_total_is_zero_has_finite_gradients():
    """Conservation to a total of 0 then non-negativity: every point is pinned at 0 and the
    factor's norm is 0 (a plain square root's backward there is 0 / 0 = NaN). The gradients are
    finite; the slice beside it, away from every boundary, keeps those of central differences."""
    mean = torch.tensor([[0.5, -0.5, 0.25, -0.25], [0.6, -0.3, 0.75, 0.4]], dtype=F64)
    variance = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.4, 0.2, 0.3]], dtype=F64)
    G = torch.ones(1, 4, dtype=F64)
    scalar = scalar_through(conserved_then_nonnegative(G, torch.tensor([[0.0], [1.5]], dtype=F64)))
    m, v = mean.clone().requires_grad_(), variance.clone().requires_grad_()
    scalar(m, v).backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(v.grad).all()
    beside = variance[:1]
    expected = central_differences(lambda x: scalar(mean, torch.cat([beside, x])), variance[1:])
    torch.testing.assert_close(v.grad[1:], expected, rtol=1e-6, atol=1e-8)
    expected = central_differences(lambda x: scalar(torch.cat([mean[:1], x]), variance), mean[1:])
    torch.testing.assert_close(m.grad[1:], expected, rtol=1e-6, atol=1e-8)


def test_nonnegativity_beside_a_zero_variance_has_finite_gradients():
    """A point with no variance after conservation (its factor 0 too) has no weight in the row:
    no ``1 / tiny`` slope reaches its factor (an overflow to inf at these sizes). The other
    points' gradients, and the means', are those of central differences."""
    mean = torch.tensor([[60.0, -30.0, 75.0, 40.0]], dtype=F64)
    variance = torch.tensor([[0.5, 0.4, 0.0, 0.3]], dtype=F64)
    through = conserved_then_nonnegative(torch.ones(1, 4, dtype=F64), torch.tensor([[150.0]]))
    scalar = scalar_through(through)
    m, v = mean.clone().requires_grad_(), variance.clone().requires_grad_()
    scalar(m, v).backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(v.grad).all()
    moving = variance > 0

    def over_moving(x):
        full = variance.clone()
        full[moving] = x
        return scalar(mean, full)

    expected = central_differences(over_moving, variance[moving], h=1e-5)
    torch.testing.assert_close(v.grad[moving], expected, rtol=1e-6, atol=1e-6)
    expected = central_differences(lambda x: scalar(x, variance), mean, h=1e-5)
    torch.testing.assert_close(m.grad, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [6, 10])
def test_nonnegativity_after_three_exact_rows_has_the_gradient_of_central_differences(seed):
    """Three exact rows then non-negativity on the dense route: the posterior covariance read
    through its square root, whose SVD backward is NaN where its singular values are all 1.
    The gradients are those of central differences (the active set does not change nearby)."""
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randn(2, 8, generator=gen, dtype=F64)
    variance = torch.rand(2, 8, generator=gen, dtype=F64) + 0.1
    G = torch.rand(3, 8, generator=gen, dtype=F64)
    constraints = (LinearConstraint(G, torch.ones(3, dtype=F64)), NonNegative())

    def scalar(m, v):
        out = constraints[1](constraints[0](Gaussian(m, v)))
        return out.mean.square().sum() + out.variance().sum()

    m, v = mean.clone().requires_grad_(), variance.clone().requires_grad_()
    scalar(m, v).backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(v.grad).all()
    torch.testing.assert_close(
        v.grad, central_differences(lambda x: scalar(mean, x), variance), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(
        m.grad, central_differences(lambda x: scalar(x, variance), mean), rtol=1e-6, atol=1e-7
    )
