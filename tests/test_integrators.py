"""ETDRK4 and the diagonalised operators, checked against closed-form solutions of linear ODEs."""

import math

import pytest
import torch

from pdes.errors import SolverError
from pdes.integrators import (
    DiagonalOperator,
    _etdrk4_coefficients,
    etdrk4,
    fourier_operator,
    step_plan,
    tridiagonal_operator,
)

F64 = torch.float64


def random_tridiagonal(n, generator):
    lower = torch.rand(n - 1, generator=generator, dtype=F64) + 0.5
    upper = torch.rand(n - 1, generator=generator, dtype=F64) + 0.5
    diagonal = -(torch.rand(n, generator=generator, dtype=F64) + 2.0)
    return lower, diagonal, upper


def test_tridiagonal_operator_reproduces_the_matrix():
    generator = torch.Generator().manual_seed(0)
    lower, diagonal, upper = random_tridiagonal(12, generator)
    A = torch.diag(diagonal) + torch.diag(upper, 1) + torch.diag(lower, -1)
    op = tridiagonal_operator(lower, diagonal, upper)
    u = torch.randn(3, 12, generator=generator, dtype=F64)
    assert torch.allclose(op.inverse(op.forward(u)), u, atol=1e-13)
    assert torch.allclose(op.inverse(op.forward(u) * op.eigenvalues), u @ A.T, atol=1e-12)


def test_tridiagonal_operator_rejects_non_symmetrisable_matrices():
    with pytest.raises(ValueError, match="positive off-diagonal"):
        tridiagonal_operator(-torch.ones(2, dtype=F64), -torch.ones(3, dtype=F64), torch.ones(2))


def diagonal_operator(eigenvalues):
    return DiagonalOperator(eigenvalues, forward=lambda u: u.clone(), inverse=lambda c: c.clone())


def test_linear_part_is_exact():
    lam = torch.tensor([-1e4, -3.0, 0.0, 0.5], dtype=F64)
    u0 = torch.ones(2, 4, dtype=F64)
    times = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    exact = torch.exp(times[None, :, None] * lam) * u0[:, None, :]
    zero_forcing = lambda c, t: torch.zeros_like(c)  # noqa: E731
    for nonlinear in (None, zero_forcing):
        u = etdrk4(diagonal_operator(lam), u0, times, max_step=0.1, nonlinear=nonlinear)
        assert torch.allclose(u, exact, rtol=1e-12, atol=1e-300)


def test_fourth_order_on_a_forced_stiff_problem():
    # u' = λu + cos(t): u(t) = (λ(e^{λt} - cos t) - sin t)·(-1)/(λ²+1) with u(0) = 0.
    lam = torch.tensor([-50.0, -1.0, 0.0], dtype=F64)

    def exact(t):
        return (lam * (torch.cos(torch.tensor(t)) - torch.exp(lam * t)) - math.sin(t)) / -(
            lam**2 + 1
        )

    errors = []
    for steps in (8, 16, 32):
        u = etdrk4(
            diagonal_operator(lam),
            torch.zeros(1, 3, dtype=F64),
            torch.tensor([2.0]),
            max_step=2.0 / steps,
            nonlinear=lambda c, t: torch.full_like(c, math.cos(t)),
        )
        errors.append((u[0, -1] - exact(2.0)).abs().max().item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(orders) > 3.7, (errors, orders)


def test_nonlinear_logistic_equation_converges_at_fourth_order():
    # u' = -u + u² (λ = -1, N = u²): u = 1 / (1 + (1/u0 - 1) e^t).
    u0 = torch.tensor([[0.5]], dtype=F64)
    exact = 1 / (1 + (1 / 0.5 - 1) * math.exp(1.0))
    errors = []
    for steps in (4, 8, 16):
        u = etdrk4(
            diagonal_operator(torch.tensor([-1.0], dtype=F64)),
            u0,
            torch.tensor([1.0]),
            max_step=1.0 / steps,
            nonlinear=lambda c, t: c**2,
        )
        errors.append(abs(u.item() - exact))
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(orders) > 3.7, (errors, orders)


def test_fourier_operator_diffuses_a_mode_exactly():
    n, length, nu = 16, 2 * math.pi, 0.3
    op = fourier_operator(n, length, lambda k: -nu * k**2)
    x = torch.arange(n, dtype=F64) * length / n
    u = etdrk4(op, torch.sin(3 * x)[None], torch.tensor([0.7]), max_step=0.1)
    assert torch.allclose(u[0, 0], math.exp(-nu * 9 * 0.7) * torch.sin(3 * x), atol=1e-14)


def test_step_plan_lands_on_every_output_time():
    plan = step_plan(0.0, torch.tensor([0.0, 0.25, 1.0]), max_step=0.1)
    assert plan == [(0, 0.0), (3, pytest.approx(0.25 / 3)), (8, pytest.approx(0.75 / 8))]


def test_blow_up_raises_solver_error():
    with pytest.raises(SolverError, match="NaN or inf"):
        etdrk4(
            diagonal_operator(torch.tensor([0.0], dtype=F64)),
            torch.tensor([[2.0]], dtype=F64),
            torch.tensor([5.0]),
            max_step=0.5,
            nonlinear=lambda c, t: c**4,
        )


def test_bad_arguments():
    op = diagonal_operator(torch.tensor([-1.0], dtype=F64))
    with pytest.raises(ValueError, match="max_step must be a finite number > 0"):
        etdrk4(op, torch.ones(1, 1, dtype=F64), torch.tensor([1.0]), max_step=0.0)
    with pytest.raises(ValueError, match="times must start at or after t0"):
        etdrk4(op, torch.ones(1, 1, dtype=F64), torch.tensor([0.5]), max_step=0.1, t0=1.0)


def phi_reference(mpmath, v: float) -> list[float]:
    """ETDRK4's weights ``Q, f1, f2, f3`` at ``z = v`` from their closed forms in 40 digits."""
    if v == 0:
        return [0.5, 1 / 6, 1 / 6, 1 / 6]
    v = mpmath.mpf(v)
    e = mpmath.exp(v)
    return [
        float((mpmath.exp(v / 2) - 1) / v),
        float((-4 - v + e * (4 - 3 * v + v**2)) / v**3),
        float((2 + v + e * (v - 2)) / v**3),
        float((-4 - 3 * v - v**2 + e * (4 - v)) / v**3),
    ]


def test_phi_function_weights_match_high_precision_values():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    z = [0.0, -1e-9, -1e-3, -0.3, -0.49, -0.5, -0.51, -2.0, -35.0, -1e4, 0.4, 1.5]

    h = 0.25
    E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(torch.tensor(z, dtype=F64) / h, h)
    got = torch.stack([Q, f1, f2, f3], 1) / h
    expected = torch.tensor([phi_reference(mpmath, v) for v in z], dtype=F64)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)
    assert torch.allclose(E, torch.exp(torch.tensor(z, dtype=F64)), rtol=1e-15)


# --------------------------------------------------------------------------- from a mutation pass


def constant_forcing_exact(lam, u0, t, forcing=1.0):
    """``u' = λu + f``, constant ``f``: ``u = e^{λt} u0 + f (e^{λt} - 1)/λ`` (``f t`` at λ = 0)."""
    growth = torch.exp(lam * t)
    safe = torch.where(lam == 0, torch.ones_like(lam), lam)
    return growth * u0 + forcing * torch.where(
        lam == 0, t * torch.ones_like(lam), (growth - 1) / safe
    )


def test_cached_weights_belong_to_their_own_operator_step_and_dtype():
    """ETDRK4 is exact for a constant forcing, so every solve below must hit the closed form: two
    operators of one shape, steps 0.1 and 0.1004, then float32 after float64 (a cache key without
    the eigenvalues, the step to 15 digits or the dtype hands one of them another's weights)."""
    from pdes import integrators

    integrators._COEFFICIENTS.clear()
    forcing = lambda c, t: torch.ones_like(c)  # noqa: E731
    u0 = torch.ones(1, 2, dtype=F64)
    for lam in (tensor_of([-1.0, -2.0]), tensor_of([-3.0, -40.0])):
        for step, end in ((0.1, 0.4), (0.1004, 0.4016)):
            u = etdrk4(diagonal_operator(lam), u0, tensor_of([end]), step, forcing)
            exact = constant_forcing_exact(lam, u0[0], end)
            assert torch.allclose(u[0, -1], exact, rtol=1e-13, atol=0), (lam, step)
    single = etdrk4(
        diagonal_operator(tensor_of([-3.0, -40.0])), u0.float(), tensor_of([0.4]), 0.1, forcing
    )
    assert single.dtype == torch.float32


def tensor_of(values):
    return torch.tensor(values, dtype=F64)


def test_scaled_operator_gives_each_sample_its_own_rate():
    """``rate_s L`` on ``e^{-k² t}`` modes: equal rates and different rates alike."""
    from pdes.integrators import scaled

    base = diagonal_operator(tensor_of([-1.0, -4.0]))
    u0 = torch.ones(2, 2, dtype=F64)
    for rates in (tensor_of([2.0, 2.0]), tensor_of([0.5, 3.0])):
        u = etdrk4(scaled(base, rates), u0, tensor_of([0.3]), max_step=0.1)
        exact = torch.exp(0.3 * rates[:, None] * tensor_of([-1.0, -4.0])[None, :])
        assert torch.allclose(u[:, 0], exact, rtol=1e-14, atol=0), rates


def test_dense_etdrk4_is_fourth_order_on_a_linear_system():
    """``r' = r (diag λ + P R)`` (rows r) against the matrix exponential, with one solver for all
    step sizes (its weights are cached per step)."""
    from pdes.integrators import DenseETDRK4

    generator = torch.Generator().manual_seed(1)
    lam = tensor_of([-1.0, -5.0, -20.0])
    P = 0.5 * torch.randn(3, 4, generator=generator, dtype=F64)
    R = 0.5 * torch.randn(4, 3, generator=generator, dtype=F64)
    r0 = torch.randn(2, 3, generator=generator, dtype=F64)
    exact = r0 @ torch.linalg.matrix_exp(torch.diag(lam) + P @ R)
    solver = DenseETDRK4(lam, P, R, lambda v: v)
    errors = []
    for steps in (8, 16, 32):
        r = solver.run(r0, tensor_of([0.5, 1.0]), max_step=1.0 / steps)
        assert r.shape == (2, 2, 3)
        errors.append((r[:, -1] - exact).abs().max().item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(orders) > 3.7, (errors, orders)


def test_dense_etdrk4_matches_the_logistic_closed_form():
    """``r' = -r + r²`` per mode (``P = R = I``, ``g(v) = v²``): fourth order to the closed form."""
    from pdes.integrators import DenseETDRK4

    solver = DenseETDRK4(
        tensor_of([-1.0, -1.0]), torch.eye(2, dtype=F64), torch.eye(2, dtype=F64), torch.square
    )
    r0 = tensor_of([[0.5, -0.3]])
    exact = 1 / (1 + (1 / r0 - 1) * math.exp(1.0))
    errors = []
    for steps in (4, 8, 16):
        r = solver.run(r0, tensor_of([1.0]), max_step=1.0 / steps)
        errors.append((r[0, -1] - exact[0]).abs().max().item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(orders) > 3.7, (errors, orders)


def test_dense_etdrk4_rejects_mismatched_shapes():
    from pdes.integrators import DenseETDRK4

    lam = tensor_of([-1.0, -2.0])
    with pytest.raises(ValueError, match="to_rate must have shape"):
        DenseETDRK4(lam, torch.ones(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64), torch.square)
    with pytest.raises(ValueError, match="to_physical"):
        DenseETDRK4(lam, torch.ones(3, 3, dtype=F64), torch.ones(3, 3, dtype=F64), torch.square)


def test_tridiagonal_operator_rejects_a_zero_off_diagonal_product():
    with pytest.raises(ValueError, match="positive off-diagonal"):
        tridiagonal_operator(
            tensor_of([1.0, 0.0]), -torch.ones(3, dtype=F64), tensor_of([1.0, 1.0])
        )


def test_fourier_operator_keeps_an_odd_number_of_points():
    n, length, nu = 15, 2 * math.pi, 0.3
    op = fourier_operator(n, length, lambda k: -nu * k**2)
    x = torch.arange(n, dtype=F64) * length / n
    u = etdrk4(op, torch.sin(2 * x)[None], torch.tensor([0.7]), max_step=0.1)
    assert u.shape == (1, 1, n)
    assert torch.allclose(u[0, 0], math.exp(-nu * 4 * 0.7) * torch.sin(2 * x), atol=1e-14)


def test_phi_function_weights_are_accurate_just_inside_the_contour_radius():
    """Between ``|z| = 0.05`` and ``0.5`` the closed forms would cancel to ~1e-12 (``z³`` in the
    denominator); the contour average keeps them within 1e-13 of 40-digit values."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    z = [-0.06, -0.1, -0.2, 0.06, 0.1]

    _, _, Q, f1, f2, f3 = _etdrk4_coefficients(tensor_of(z), 1.0)
    got = torch.stack([Q, f1, f2, f3], 1)
    expected = tensor_of([phi_reference(mpmath, v) for v in z])
    assert torch.allclose(got, expected, rtol=1e-13, atol=0), (got - expected).abs().max()
