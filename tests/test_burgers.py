"""Burgers' solvers: convergence to Cole–Hopf, exact walls, conservation, recipes, errors."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from pdes import problems
from pdes.boundary import Dirichlet, Neumann
from pdes.burgers import (
    EXACT_CASES,
    PROBLEMS,
    advective_step_limit,
    cole_hopf_solution,
    solve_burgers,
)
from pdes.errors import SolverError
from pdes.grid import Grid1D
from pdes.heat import interior_matrix, sine_operator
from pdes.random_fields import gaussian_random_field_1d
from pdes.verification import convergence

PERIODIC = Grid1D(32, 0.0, 1.0, periodic=True)
WALLED = Grid1D(33, 0.0, 1.0)


def smooth(grid: Grid1D, batch: int = 2) -> torch.Tensor:
    x = grid.coordinates()
    return torch.stack([torch.sin(2 * math.pi * x) + 0.3 * (j + 1) for j in range(batch)])


def pinned(grid: Grid1D) -> torch.Tensor:
    x = grid.coordinates()
    return torch.stack([torch.sin(math.pi * x), 2 * x * (1 - x) * torch.cos(3 * x)])


# ----------------------------------------------------------------------------- exact solutions


@pytest.mark.parametrize("case", EXACT_CASES, ids=lambda case: case.name)
def test_convergence_order(case):
    study = convergence(case)
    assert study.order >= case.order - 0.15, (study.errors, study.orders)
    assert study.errors[-1] < 1e-4


def test_periodic_space_convergence_is_spectral():
    study = convergence(next(c for c in EXACT_CASES if c.name == "burgers-periodic-space"))
    assert min(study.orders) > 6
    assert study.orders[-1] > study.orders[0]


def test_cole_hopf_solves_burgers():
    """Central differences of the closed form satisfy the PDE up to their own O(h²) error."""
    nu = torch.tensor([0.05, 0.2], dtype=torch.float64)
    c = torch.tensor([[0.5, -0.3], [0.2, 0.6]], dtype=torch.float64)
    k = torch.tensor([3.0, 5.5], dtype=torch.float64)
    theta = torch.tensor([[0.1, 1.0], [2.0, -0.5]], dtype=torch.float64)
    h = 1e-4
    x = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    shifted = torch.stack([x - h, x, x + h])

    def u(t, xs):
        return cole_hopf_solution(xs, [t], nu, 1.0, c, k, theta)[:, 0]

    t = 0.3
    left, mid, right = (u(t, s) for s in shifted)
    u_t = (u(t + h, x) - u(t - h, x)) / (2 * h)
    u_x = (right - left) / (2 * h)
    u_xx = (right - 2 * mid + left) / h**2
    residual = u_t + mid * u_x - nu[:, None] * u_xx
    assert residual.abs().max() < 1e-5 * (1 + mid.abs().max())
    assert mid.abs().max() > 0.1


def test_cole_hopf_needs_positive_phi():
    with pytest.raises(ValueError, match="offset"):
        cole_hopf_solution(
            torch.zeros(3), [0.0], 0.1, 0.5, torch.tensor([0.3, 0.3]), [1.0, 2.0], [0, 0]
        )


def test_default_step_is_accurate():
    grid = Grid1D(64, 0.0, 1.0, periodic=True)
    x = grid.coordinates()
    t = torch.tensor([0.0, 0.2, 0.4], dtype=torch.float64)
    exact = cole_hopf_solution(
        x,
        t,
        0.02,
        1.0,
        torch.tensor([0.6, 0.2]),
        2 * math.pi * torch.tensor([1.0, 2.0]),
        [0.0, 1.0],
    )
    numerical = solve_burgers(exact[:, 0], grid, 0.02, t)
    assert (numerical - exact).abs().max() < 1e-6


def test_cole_hopf_modes_as_lists_of_numpy_rows_match_the_stacked_arrays():
    x = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)
    amplitudes = [np.array([1.0, 0.5]), np.array([0.2, 0.3])]
    wavenumbers = [np.array([6.0, 12.0]), np.array([3.0, 9.0])]
    phases = [np.array([0.0, 1.0]), np.array([0.5, -1.0])]
    rows = cole_hopf_solution(x, [0.1, 0.2], 0.05, 3.0, amplitudes, wavenumbers, phases)
    stacked = cole_hopf_solution(
        x, [0.1, 0.2], 0.05, 3.0, np.stack(amplitudes), np.stack(wavenumbers), np.stack(phases)
    )
    assert rows.shape == (2, 2, 9)
    assert torch.equal(rows, stacked)


def test_default_step_keeps_second_order_with_time_dependent_walls():
    """Cole–Hopf walls at ν = 0.005–0.01, default step: with the walls as a stiff forcing the
    half-advective step measured order 1.1 from 65 to 129 nodes; lifted, both refinements hold 2."""
    nu = 0.1 * torch.tensor([0.05, 0.1, 0.1], dtype=torch.float64)
    amplitudes = torch.tensor([[0.5, 0.2, 0.1], [0.4, -0.3, 0.1], [-0.3, 0.25, 0.2]])
    k = torch.tensor([2.0, 4.5, 7.0], dtype=torch.float64).expand(3, 3)
    phases = torch.tensor([[0.0, 1.0, 2.0], [0.5, -1.0, 0.3], [2.0, 0.7, -0.4]])

    def exact(x, t):
        return cole_hopf_solution(x, t, nu, 1.0, amplitudes, k, phases)

    t = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)
    walls = torch.tensor([0.0, 1.0], dtype=torch.float64)
    bc = Dirichlet(
        lambda s: exact(walls, torch.tensor([s], dtype=torch.float64))[:, 0, 0],
        lambda s: exact(walls, torch.tensor([s], dtype=torch.float64))[:, 0, 1],
    )
    errors = []
    for n in (33, 65, 129):
        x = Grid1D(n).coordinates()
        reference = exact(x, t)
        numerical = solve_burgers(reference[:, 0], Grid1D(n), nu, t, bc)
        errors.append((numerical - reference).abs().max().item())
    orders = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]
    assert min(orders) > 1.9, (errors, orders)


@pytest.mark.parametrize("grid", [WALLED, Grid1D(33, 1.0, 2.5)], ids=["[0,1]", "[1,2.5]"])
def test_moving_walls_keep_a_straight_line_exact_at_any_step(grid):
    """``u = (x + b)/(t + c)`` solves Burgers for every ν, and the arithmetic-mean flux differences
    a straight line exactly: lifted, the line is all wall data, so a step near the advective limit
    leaves only the wall rates' difference error (the walls as a stiff forcing: 3.4e-4). On a
    domain that does not start at 0 the lift must still run between the two walls."""
    b = torch.tensor([0.5, -2.0], dtype=torch.float64)
    c = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x = grid.coordinates()
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    exact = (x[None, None, :] + b[:, None, None]) / (t[None, :, None] + c[:, None, None])
    bc = Dirichlet(lambda s: (grid.lower + b) / (s + c), lambda s: (grid.upper + b) / (s + c))
    numerical = solve_burgers(exact[:, 0], grid, 0.05, t, bc, max_step=0.02)
    assert (numerical - exact).abs().max() < 1e-8


def test_wall_rates_never_ask_for_negative_times():
    def left(s):
        assert s >= 0.0, s
        return math.sin(3.0 * s)

    numerical = solve_burgers(pinned(WALLED), WALLED, 0.1, [0.0, 0.2], Dirichlet(left, 0.0))
    assert numerical[:, -1, 0].eq(math.sin(3.0 * 0.2)).all()


def test_default_step_heeds_walls_that_grow_after_the_start():
    """Zero at t = 0 everywhere, the left wall rises to 1: the default step must come from the
    wall values at the output times too (from t = 0 alone the limit is infinite)."""
    u0 = torch.zeros(1, 33, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    bc = Dirichlet(lambda s: math.sin(0.5 * math.pi * s), 0.0)
    reference = solve_burgers(u0, WALLED, 0.05, t, bc, max_step=1e-3)
    default = solve_burgers(u0, WALLED, 0.05, t, bc)
    assert (default - reference).abs().max() < 1e-4


def test_dirichlet_sine_transform_matches_the_dense_laplacian():
    """The O(n log n) sine transform diagonalises the three-point Dirichlet matrix exactly."""
    m, dx = 11, 0.05
    operator = sine_operator(m, dx)
    lower, diagonal, upper = interior_matrix(m, dx, neumann=False)
    matrix = torch.diag(diagonal) + torch.diag(upper, 1) + torch.diag(lower, -1)
    u = torch.randn(3, m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    coefficients = operator.forward(u)
    assert torch.allclose(operator.inverse(coefficients), u, atol=1e-14)
    applied = operator.inverse(operator.eigenvalues * coefficients)
    assert torch.allclose(applied, u @ matrix.T, rtol=0, atol=1e-11 / dx**2)
    assert torch.allclose(coefficients.square().sum(-1), u.square().sum(-1))  # orthonormal


@pytest.mark.parametrize("bc, grid", [("periodic", PERIODIC), (Dirichlet(0.0, 0.0), WALLED)])
def test_unresolved_viscous_scale_warns_naming_nu_and_the_grid(bc, grid):
    x = grid.coordinates()
    u0 = torch.sin(2 * math.pi * x)[None]
    with pytest.warns(UserWarning, match=r"nu=0\.003 is not resolved on 3[23] points"):
        solve_burgers(u0, grid, 0.003, [0.0, 0.01], bc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_burgers(u0, grid, 0.02, [0.0, 0.01], bc)  # cell Reynolds number 1.6: no warning


# ----------------------------------------------------------------------------- properties


def test_first_output_is_u0_and_shapes():
    u0 = smooth(PERIODIC)
    u = solve_burgers(u0, PERIODIC, 0.05, [0.0, 0.1], max_step=1e-3)
    assert u.shape == (2, 2, PERIODIC.n) and u.dtype == torch.float64
    assert torch.equal(u[:, 0], u0)
    single = solve_burgers(u0[0], PERIODIC, 0.05, [0.0, 0.1], max_step=1e-3)
    assert single.shape == (1, 2, PERIODIC.n)
    assert torch.allclose(single[0], u[0], atol=1e-14, rtol=0)


def test_periodic_mean_is_conserved():
    grid = Grid1D(128, 0.0, 1.0, periodic=True)
    u0 = gaussian_random_field_1d(128, generator=torch.Generator().manual_seed(0), batch=3)
    u = solve_burgers(u0, grid, 0.01, torch.linspace(0.0, 0.5, 6))
    mass = grid.integrate(u)
    assert (mass - mass[:, :1]).abs().max() < 1e-13 * u0.abs().max()
    assert (u[:, -1] - u0).abs().max() > 0.1


def test_dirichlet_walls_exact_at_every_output():
    def left(t):
        return math.sin(3.0 * t)

    right = torch.tensor([0.5, -0.25], dtype=torch.float64)
    times = torch.linspace(0.0, 0.6, 7, dtype=torch.float64)
    u = solve_burgers(pinned(WALLED), WALLED, 0.05, times, Dirichlet(left, right))
    for j, t in enumerate(times.tolist()):
        assert torch.equal(u[:, j, 0], torch.full((2,), left(t), dtype=torch.float64))
        assert torch.equal(u[:, j, -1], right)


def test_dirichlet_replaces_u0_boundary_nodes():
    u0 = pinned(WALLED) + 1.0
    u = solve_burgers(u0, WALLED, 0.1, [0.0], Dirichlet(0.0, 0.0))
    assert torch.equal(u[:, 0, 1:-1], u0[:, 1:-1])
    assert (u[:, 0, [0, -1]] == 0).all()


def test_per_sample_viscosity_matches_separate_solves():
    u0 = smooth(PERIODIC)
    nu = torch.tensor([0.02, 0.1], dtype=torch.float64)
    together = solve_burgers(u0, PERIODIC, nu, [0.1], max_step=1e-3)
    for j in range(2):
        alone = solve_burgers(u0[j], PERIODIC, nu[j].item(), [0.1], max_step=1e-3)
        assert torch.allclose(together[j], alone[0], atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("nu", [0.0, -0.1, float("nan"), float("inf"), torch.tensor([0.1, -0.1])])
def test_non_positive_viscosity(nu):
    with pytest.raises(ValueError, match="nu"):
        solve_burgers(smooth(PERIODIC), PERIODIC, nu, [0.1])


def test_viscosity_shape():
    with pytest.raises(ValueError, match="nu"):
        solve_burgers(smooth(PERIODIC), PERIODIC, torch.tensor([0.1, 0.1, 0.1]), [0.1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_u0(bad):
    u0 = smooth(PERIODIC)
    u0[1, 3] = bad
    with pytest.raises(ValueError, match="u0"):
        solve_burgers(u0, PERIODIC, 0.1, [0.1])


@pytest.mark.parametrize("shape", [(2, 31), (31,), (2, 1, 32)])
def test_shape_mismatch(shape):
    with pytest.raises(ValueError, match="u0"):
        solve_burgers(torch.zeros(shape, dtype=torch.float64), PERIODIC, 0.1, [0.1])


@pytest.mark.parametrize(
    "bc, grid, match",
    [
        ("robin", PERIODIC, "robin"),
        ("neumann", WALLED, "neumann"),
        (Neumann(0.0, 0.0), WALLED, "neumann"),
        ("periodic", WALLED, "periodic grid"),
        ("dirichlet", PERIODIC, "non-periodic node grid"),
        (Dirichlet(0.0, 0.0), Grid1D(32, 0.0, 1.0, kind="cell"), "node grid"),
    ],
)
def test_unsupported_boundaries(bc, grid, match):
    with pytest.raises(ValueError, match=match):
        solve_burgers(torch.zeros(grid.n, dtype=torch.float64), grid, 0.1, [0.1], bc)


def test_grid_type():
    with pytest.raises(TypeError, match="grid"):
        solve_burgers(smooth(PERIODIC), 32, 0.1, [0.1])


@pytest.mark.parametrize("times", [[-0.1, 0.2], [0.3, 0.1], [], [0.1, float("nan")]])
def test_bad_times(times):
    with pytest.raises(ValueError, match="times"):
        solve_burgers(smooth(PERIODIC), PERIODIC, 0.1, times)


@pytest.mark.parametrize("max_step", [0.0, -1e-3, float("nan")])
def test_bad_max_step(max_step):
    with pytest.raises(ValueError, match="max_step"):
        solve_burgers(smooth(PERIODIC), PERIODIC, 0.1, [0.1], max_step=max_step)


@pytest.mark.parametrize("grid, bc", [(PERIODIC, "periodic"), (WALLED, Dirichlet(1.0, -1.0))])
def test_unstable_step_raises(grid, bc):
    u0 = 2.0 * (smooth(grid) if grid.periodic else pinned(grid))
    speed = 2.0 * (smooth(grid).abs().max().item() if grid.periodic else 1.0)
    limit = advective_step_limit(grid, speed, spectral=grid.periodic)
    with pytest.raises(SolverError, match="limit"), pytest.warns(UserWarning, match="limit"):
        solve_burgers(u0, grid, 1e-3, [0.0, 0.5, 1.0], bc, max_step=10 * limit)


def _integrator_reaching(peak: float, shift: float = 0.0):
    """A stand-in for ``etdrk4`` whose result is zero but for one value, ``peak - shift``, at the
    second output (``shift`` cancels the wall line that the Dirichlet solver adds back)."""

    def integrate(operator, u0, times, max_step, nonlinear=None, t0=0.0, name="solver"):
        out = torch.zeros(u0.shape[0], len(times), u0.shape[-1], dtype=u0.dtype)
        out[-1, 1, 5] = peak - shift
        return out

    return integrate


@pytest.mark.parametrize("factor, refused", [(1.999, False), (2.001, True)])
@pytest.mark.parametrize("bc", ["periodic", "dirichlet"])
def test_growth_past_twice_the_maximum_principle_bound_is_refused(monkeypatch, bc, factor, refused):
    """The bound is ``U = max(max|u0|, max|wall values|)``; a result up to ``2U`` passes, one above
    it raises. Periodic: ``U = max|u0|``; Dirichlet: walls at -4 outweigh ``|u0| <= 1``."""
    if bc == "periodic":
        grid, u0, condition, shift = PERIODIC, smooth(PERIODIC), "periodic", 0.0
        bound = u0.abs().max().item()
    else:
        grid, u0, condition, shift = WALLED, pinned(WALLED), Dirichlet(-4.0, -4.0), -4.0
        assert u0.abs().max().item() <= 1.0
        bound = 4.0
    monkeypatch.setattr("pdes.burgers.etdrk4", _integrator_reaching(-factor * bound, shift))
    options = {"transform": "fft"} if bc == "periodic" else {}  # FFTs: the path through etdrk4
    solve = lambda: solve_burgers(u0, grid, 0.1, [0.0, 0.5], condition, **options)  # noqa: E731
    if refused:
        with pytest.raises(SolverError, match="exceeds twice the maximum-principle bound"):
            solve()
    else:
        with pytest.warns(UserWarning, match=r"exceeds the maximum-principle bound .* by 99\.9%"):
            out = solve()
        assert out.abs().max().item() == pytest.approx(factor * bound, rel=1e-12)


def test_a_step_eight_times_the_advective_limit_warns_at_the_callers_line():
    """``sin 2πx``, ν = 0.01, 64 points: the limit is ``2√2 / (2π · 21)`` = 0.0214; a step of
    0.17 errs by 43% and overshoots the bound 1 by 13%. Both warn, naming this line."""
    grid = Grid1D(64, 0.0, 1.0, periodic=True)
    u0 = torch.sin(2 * math.pi * grid.coordinates())[None]
    limit = 2 * math.sqrt(2) / (2 * math.pi * 21)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        solve_burgers(u0, grid, 1e-2, [0.0, 0.5], max_step=8 * limit)
    messages = [str(w.message) for w in caught]
    assert any(
        re.search(r"max_step=0\.1715 exceeds the advective limit of about 0\.02144", m)
        for m in messages
    ), messages
    assert any("exceeds the maximum-principle bound 1 by" in m for m in messages), messages
    assert {w.filename for w in caught} == {__file__}


@pytest.mark.parametrize("grid, bc", [(PERIODIC, "periodic"), (WALLED, Dirichlet(0.0, 0.0))])
def test_the_default_step_and_one_within_the_limit_do_not_warn(grid, bc):
    u0 = smooth(grid) if grid.periodic else pinned(grid)
    speed = u0[:, 1:-1].abs().max().item() if not grid.periodic else u0.abs().max().item()
    limit = advective_step_limit(grid, speed, spectral=grid.periodic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_burgers(u0, grid, 0.05, [0.0, 0.2], bc)
        solve_burgers(u0, grid, 0.05, [0.0, 0.2], bc, max_step=limit)
    with pytest.warns(UserWarning, match="exceeds the advective limit"):
        solve_burgers(u0, grid, 0.05, [0.0, 0.2], bc, max_step=1.5 * limit)


@pytest.mark.parametrize("grid, bc", [(PERIODIC, "periodic"), (WALLED, Dirichlet(0.0, 0.0))])
def test_a_long_max_step_warns_only_when_the_steps_taken_exceed_the_limit(grid, bc):
    """Steps are shortened to land on every output time: outputs ``limit / 2`` apart are reached
    in steps of ``limit / 2`` whatever ``max_step`` (100× the limit: no warning); outputs ``1.5
    limit`` apart in steps of ``1.5 limit``, which warn naming that step."""
    u0 = smooth(grid) if grid.periodic else pinned(grid)
    speed = u0[:, 1:-1].abs().max().item() if not grid.periodic else u0.abs().max().item()
    limit = advective_step_limit(grid, speed, spectral=grid.periodic)
    spacings = torch.arange(4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_burgers(u0, grid, 0.05, spacings * (limit / 2), bc, max_step=100 * limit)
    taken = re.escape(f"up to {1.5 * limit:.4g}, shortened to land on the output times)")
    with pytest.warns(UserWarning, match=rf"exceeds the advective limit .*\({taken}"):
        solve_burgers(u0, grid, 0.05, spacings * (1.5 * limit), bc, max_step=100 * limit)
    taken = re.escape(f"up to {1.5 * limit:.4g})")  # steps of max_step itself: none shortened
    with pytest.warns(UserWarning, match=rf"exceeds the advective limit .*\({taken}"):
        solve_burgers(u0, grid, 0.05, spacings * (3 * limit), bc, max_step=1.5 * limit)


def test_bad_boundary_values():
    with pytest.raises(ValueError, match="Dirichlet.left"):
        solve_burgers(pinned(WALLED), WALLED, 0.1, [0.1], Dirichlet(torch.zeros(3), 0.0))


# ----------------------------------------------------------------------------- recipes

SMALL = {
    "burgers": {"nx": 32, "nt": 4, "t_end": 0.3},
    "burgers-dirichlet": {"nx": 33, "nt": 4, "t_end": 0.3},
}


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_recipe(problem):
    settings = problem.settings(**SMALL[problem.name])
    batch = problem.generate([3, 4, 3], settings)
    coordinates = problem.coordinates(settings)
    assert batch.u.shape == (3, coordinates["t"].size, coordinates["x"].size)
    assert batch.u.dtype == torch.float64 and torch.isfinite(batch.u).all()
    assert coordinates["t"][0] == 0.0
    assert torch.equal(batch.u[0], batch.u[2])
    assert not torch.allclose(batch.u[0], batch.u[1])
    assert torch.equal(batch.params["nu"], torch.full((3,), 0.1, dtype=torch.float64))
    again = problem.generate([4], settings)
    assert torch.allclose(again.u[0], batch.u[1], atol=1e-13, rtol=0)
    attributes = problem.attributes(settings)
    assert {"pde", "boundary", "solver"} <= set(attributes)
    assert attributes["nx"] == settings["nx"]
    assert all(isinstance(v, (str, int, float)) for v in attributes.values())


def test_recipe_viscosity_option():
    problem = next(p for p in PROBLEMS if p.name == "burgers")
    settings = problem.settings(**SMALL["burgers"], nu=0.05)
    batch = problem.generate([1], settings)
    assert batch.params["nu"].tolist() == [0.05]


def test_dirichlet_recipe_walls_are_zero():
    problem = next(p for p in PROBLEMS if p.name == "burgers-dirichlet")
    u = problem.generate([5, 6], problem.settings(**SMALL["burgers-dirichlet"])).u
    assert (u[:, :, 0] == 0).all() and (u[:, :, -1] == 0).all()
    assert u[:, 0].abs().max() > 0.1


def test_periodic_recipe_initial_condition_is_the_grf():
    problem = next(p for p in PROBLEMS if p.name == "burgers")
    settings = problem.settings(**SMALL["burgers"])
    u = problem.generate([9], settings).u
    expected = gaussian_random_field_1d(32, generator=problems.generator(9))
    assert torch.equal(u[:, 0], expected)


@pytest.mark.filterwarnings("ignore:solve_burgers.*is not resolved:UserWarning")
@pytest.mark.parametrize("transform", ["matrix", "fft"])
def test_burgers_two_thirds_rule_a_dropped_mode_only_decays(transform):
    """A single mode m = 11 >= n/3 on n = 32 is left out of the product: it decays exactly as the
    heat equation's and excites nothing (without the rule its square aliases to mode n − 2m)."""
    n, m, nu = 32, 11, 0.01
    grid = Grid1D(n, 0.0, 1.0, periodic=True)
    x = grid.coordinates()
    u0 = 2.0 * torch.cos(2 * math.pi * m * x)[None]
    t = torch.tensor([0.0, 0.05, 0.2], dtype=torch.float64)
    u = solve_burgers(u0, grid, nu, t, max_step=1e-3, transform=transform)
    exact = torch.exp(-nu * (2 * math.pi * m) ** 2 * t)[:, None] * u0
    torch.testing.assert_close(u[0], exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize("transform", ["matrix", "fft"])
def test_burgers_two_thirds_rule_keeps_the_dropped_modes_empty(transform):
    """Data in the kept modes stay there: modes |m| >= n/3 remain zero while the flow steepens."""
    n = 30
    grid = Grid1D(n, 0.0, 1.0, periodic=True)
    x = grid.coordinates()
    u0 = (torch.sin(2 * math.pi * x) + 0.5 * torch.cos(6 * math.pi * x + 0.3))[None]
    u = solve_burgers(u0, grid, 0.02, [0.0, 0.3], max_step=1e-3, transform=transform)
    spectrum = torch.fft.rfft(u[0, -1])
    m = torch.arange(spectrum.numel())
    assert spectrum[m < n / 3].abs().max() > 1.0
    assert spectrum[3 * m >= n].abs().max() < 1e-12 * n


def test_advective_step_limit_by_hand():
    """``2√2/(k_max U)``: spectral ``k_max = 2π·9`` on 30 points of [0, 1) (the 2/3 rule keeps
    |m| < 10), ``2π·10`` on 32 (|m| < 10.7); central differences ``1/dx = 32`` on 33 nodes."""
    radius = 2.0 * math.sqrt(2.0)
    for n, m_max in ((30, 9), (32, 10)):
        grid = Grid1D(n, 0.0, 1.0, periodic=True)
        limit = advective_step_limit(grid, 2.0, spectral=True)
        assert limit == pytest.approx(radius / (2 * math.pi * m_max * 2.0), rel=1e-14)
    assert advective_step_limit(WALLED, 4.0, spectral=False) == pytest.approx(
        radius / (32 * 4.0), rel=1e-14
    )
    assert advective_step_limit(WALLED, 0.0, spectral=False) == math.inf
    assert advective_step_limit(PERIODIC, 0.0, spectral=True) == math.inf


@pytest.mark.parametrize("reynolds, warns", [(3.2, True), (3.0, False), (2.9, False)])
def test_unresolved_warning_threshold_is_a_cell_reynolds_number_of_three(reynolds, warns):
    """``max|u0| = 1`` (sin 2πx has a node at x = 1/4), dx = 1/32: ν = 1/(32·Re); 3 itself is
    the largest number solved without a warning."""
    x = PERIODIC.coordinates()
    u0 = torch.sin(2 * math.pi * x)[None]
    nu = 1.0 / (32 * reynolds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        solve_burgers(u0, PERIODIC, nu, [0.0, 0.01])
    unresolved = [w for w in caught if "not resolved" in str(w.message)]
    assert bool(unresolved) == warns, [str(w.message) for w in caught]
    if warns:
        message = str(unresolved[0].message)
        assert "max|u|*dx/nu = 3.2 exceeds 3" in message, message
        # ceil(32 points · 3.2/3) = 35; ν >= max|u|·dx/3 = 1/96
        assert message.endswith("use about 35 points or nu >= 0.0104"), message
        assert unresolved[0].filename == __file__  # points at the caller of solve_burgers


def test_viscosity_that_requires_grad_is_taken_as_plain_numbers():
    """A learnable ``nu`` gives the same result as its value, with no autograd warning."""
    u0 = smooth(PERIODIC)
    nu = torch.tensor([0.05, 0.1], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = solve_burgers(u0, PERIODIC, nu, [0.0, 0.1], max_step=1e-3)
    assert not out.requires_grad
    plain = solve_burgers(u0, PERIODIC, nu.detach().clone(), [0.0, 0.1], max_step=1e-3)
    assert torch.equal(out, plain)


def test_one_large_per_sample_viscosity_is_refused():
    """The steady-long-before check looks at the largest viscosity of the batch."""
    with pytest.raises(ValueError, match=r"nu up to 1e\+13 is too large"):
        solve_burgers(smooth(PERIODIC), PERIODIC, torch.tensor([0.1, 1e13]), [0.0, 1.0])


@pytest.mark.parametrize(
    "value, words", [(10.0, "max|u| = 10 at t=0.7"), (math.nan, "NaN or inf at t=0.7")]
)
def test_refusal_names_the_first_output_time_that_grew(monkeypatch, value, words):
    """Growth first at the third output time (0.7, first sample), again at the fourth (second
    sample): the message names the first."""

    def integrate(operator, u0, times, max_step, nonlinear=None, t0=0.0, name="solver"):
        out = torch.zeros(u0.shape[0], len(times), u0.shape[-1], dtype=u0.dtype)
        out[0, 2, 3] = out[1, 3, 4] = value
        return out

    monkeypatch.setattr("pdes.burgers.etdrk4", integrate)
    with pytest.raises(SolverError, match=re.escape(words)):
        solve_burgers(smooth(PERIODIC), PERIODIC, 0.1, [0.0, 0.2, 0.7, 0.9], transform="fft")


@pytest.mark.parametrize("bc, grid", [("periodic", PERIODIC), (Dirichlet(0.0, 0.0), WALLED)])
def test_unresolved_warning_heeds_the_smallest_per_sample_viscosity(bc, grid):
    """ν = (0.003, 0.5): the first sample alone is unresolved (cell Reynolds number 10.4)."""
    u0 = torch.sin(2 * math.pi * grid.coordinates())[None].repeat(2, 1)
    with pytest.warns(UserWarning, match=r"nu=0\.003 is not resolved"):
        solve_burgers(u0, grid, torch.tensor([0.003, 0.5]), [0.0, 0.01], bc)


@pytest.mark.parametrize("transform", ["matrix", "fft"])
def test_burgers_mode_a_third_below_the_grid_size_enters_the_product(transform):
    """On 32 points the 2/3 rule keeps |m| < 10.7, so mode 10 is in the product: with
    ``u0 = sin 2πx + ½ cos 20πx`` the term ``−(u²/2)_x`` starts mode 9 at the rate ``R = 4.5π``
    (from ``−¼ sin 18πx`` in ``u²/2``). To first order in that term, with the exact viscous decays
    ``λ_m = ν(2πm)²``: ``û₉(t) = R e^{−λ₉t} (e^{(λ₉−λ₁−λ₁₀)t} − 1)/(λ₉ − λ₁ − λ₁₀)``."""
    nu, t = 0.1, 1e-5
    x = PERIODIC.coordinates()
    u0 = (torch.sin(2 * math.pi * x) + 0.5 * torch.cos(20 * math.pi * x))[None]
    u = solve_burgers(u0, PERIODIC, nu, [0.0, t], max_step=1e-6, transform=transform)
    mode9 = 2.0 / 32 * (u[0, -1] * torch.cos(18 * math.pi * x)).sum().item()
    rate = {m: nu * (2 * math.pi * m) ** 2 for m in (1, 9, 10)}
    gap = rate[9] - rate[1] - rate[10]
    expected = 4.5 * math.pi * math.exp(-rate[9] * t) * math.expm1(gap * t) / gap
    assert mode9 == pytest.approx(expected, rel=1e-6)  # measured 2.5e-8


def test_periodic_operators_follow_the_domain_length():
    """Same point count on [0, 1) and then [0, 2): the second solve matches Cole–Hopf on its own
    domain, ``u = 2νck e^{−νk²t} sin(kx) / (1 + c e^{−νk²t} cos(kx))`` with k = π."""
    nu, c, k = 0.1, 0.3, math.pi
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    for transform in ("matrix", "fft"):
        for length in (1.0, 2.0):
            grid = Grid1D(48, 0.0, length, periodic=True)
            x = grid.coordinates()
            decay = c * torch.exp(-nu * k**2 * t)[:, None]
            exact = 2 * nu * k * decay * torch.sin(k * x) / (1 + decay * torch.cos(k * x))
            if length == 1.0:
                exact = exact.new_zeros(exact.shape)
            u = solve_burgers(exact[None, 0], grid, nu, t, max_step=1e-3, transform=transform)
            assert (u[0] - exact).abs().max() < 1e-10, (transform, length)


@pytest.mark.parametrize("still", [None, "left", "right"])
def test_default_step_resolves_moving_walls_of_a_small_solution(still):
    """Cole–Hopf with one mode, ``u = 2νck e^{−νk²t} sin(kx+θ) / (1 + c e^{−νk²t} cos(kx+θ))``,
    |u| <= 0.01: the advective limit alone allows one step for all of t <= 1, far too long for
    walls that change on the time scale 1/(νk²) = 0.1. The default step must still converge at
    second order under grid refinement, whichever wall moves (θ = 0 keeps u(0) = 0, θ = −k keeps
    u(1) = 0: that wall is then given as the number 0)."""
    nu, c, k = 0.1, 0.005, 10.0
    theta = {None: 0.3, "left": 0.0, "right": -k}[still]

    def exact(x, s):
        d = c * math.exp(-nu * k * k * s)
        return 2 * nu * k * d * torch.sin(k * x + theta) / (1 + d * torch.cos(k * x + theta))

    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    left = 0.0 if still == "left" else (lambda s: exact(ends[0], s))
    right = 0.0 if still == "right" else (lambda s: exact(ends[1], s))
    bc = Dirichlet(left, right)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    errors = []
    for n in (33, 65, 129):
        x = Grid1D(n).coordinates()
        reference = torch.stack([exact(x, s) for s in t.tolist()])[None]
        numerical = solve_burgers(reference[:, 0], Grid1D(n), nu, t, bc)
        errors.append((numerical - reference).abs().max().item())
    orders = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]
    assert min(orders) > 1.8, (errors, orders)


def test_cole_hopf_refuses_phi_that_reaches_zero_and_non_positive_viscosity():
    x, t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64), [0.0]
    one = torch.tensor([1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="offset must exceed sum"):
        cole_hopf_solution(x, t, 0.1, 0.5, 0.5 * one, 2.0 * one, 0.0 * one)  # φ = 0 at x = π/2
    with pytest.raises(ValueError, match=r"nu must be > 0, got \[0\.0\]"):
        cole_hopf_solution(x, t, 0.0, 1.0, 0.5 * one, 2.0 * one, 0.0 * one)


def test_dirichlet_recipe_initial_condition_is_the_grf_less_its_left_value():
    """``u0 = g − g(0)`` with g the periodic GRF on the 32 cells of 33 nodes (g(1) = g(0))."""
    problem = next(p for p in PROBLEMS if p.name == "burgers-dirichlet")
    u = problem.generate([9], problem.settings(**SMALL["burgers-dirichlet"])).u
    g = gaussian_random_field_1d(32, generator=problems.generator(9))[0]
    assert torch.equal(u[0, 0, :-1], g - g[0])
    assert u[0, 0, -1] == 0


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("nx", 3, r"^nx must be an integer >= 4, got 3$"),
        ("t_end", 0.0, r"^t_end must be a finite number > 0, got 0\.0$"),
        ("t_end", -1.0, r"^t_end must be a finite number > 0, got -1\.0$"),
    ],
)
def test_recipe_refuses_bad_settings_naming_them(problem, option, value, message):
    settings = problem.settings(**{**SMALL[problem.name], option: value})
    with pytest.raises(ValueError, match=message):
        problem.generate([1], settings)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_recipe_step_is_half_the_advective_limit_at_five_standard_deviations(monkeypatch, problem):
    """σ = 25, τ = 5, α = 2 on 32 periodic points: the GRF's pointwise variance is
    ``Σ_m σ²((2πm)² + τ²)^−α`` over m = −16..15 (checked against 4000 draws). Periodic: speed 5·std
    and k_max = 2π·10 (the 2/3 rule keeps |m| < 10.7); walls (33 nodes): ``g − g(0)`` spans twice
    the spread, speed 10·std, and k_max = 1/dx = 32. The step is half of ``2√2/(k_max·speed)``."""
    m = torch.arange(-16, 16, dtype=torch.float64)
    std = math.sqrt((625.0 * ((2 * math.pi * m) ** 2 + 25.0) ** -2.0).sum().item())
    draws = gaussian_random_field_1d(32, generator=torch.Generator().manual_seed(0), batch=4000)
    assert draws.var(0).mean().sqrt().item() == pytest.approx(std, rel=0.03)
    steps = []

    def record(*args, max_step, **kwargs):
        steps.append(max_step)
        raise StopIteration

    monkeypatch.setattr("pdes.burgers.solve_burgers", record)
    with pytest.raises(StopIteration):
        problem.generate([1], problem.settings(**SMALL[problem.name]))
    speed, k_max = (5 * std, 2 * math.pi * 10) if problem.name == "burgers" else (10 * std, 32.0)
    assert steps == [pytest.approx(0.5 * 2 * math.sqrt(2.0) / (k_max * speed), rel=1e-12)]


def test_walls_that_peak_between_output_times_are_neither_refused_nor_skipped():
    """u0 = 0, left wall 4 sin πt, outputs at t = 0 and 1 where every wall value is 0: the wall
    drives the flow in between, so u(1) is far from 0 and still within the maximum principle's 4."""
    u0 = torch.zeros(1, 33, dtype=torch.float64)
    bc = Dirichlet(lambda s: 4.0 * math.sin(math.pi * s), 0.0)
    u = solve_burgers(u0, WALLED, 0.05, [0.0, 1.0], bc)
    assert 1.0 < u[0, -1].abs().max().item() <= 4.0


def test_a_right_wall_that_moves_alone_is_followed():
    """``u = x/(t + c)`` solves Burgers for every ν: the left wall stays 0, only the right one
    (``1/(t + c)``) moves, and the straight line is kept exactly."""
    c = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x = WALLED.coordinates()
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    exact = x[None, None, :] / (t[None, :, None] + c[:, None, None])
    bc = Dirichlet(0.0, lambda s: 1.0 / (s + c))
    numerical = solve_burgers(exact[:, 0], WALLED, 0.05, t, bc, max_step=0.02)
    assert (numerical - exact).abs().max() < 1e-8


def _cole_hopf_by_hand(x, t, nu, a, c, k, theta):
    """``−2ν φ_x/φ`` at one point from the formula, term by term."""
    terms = [
        (cj * math.exp(-nu * kj * kj * t), kj, kj * x + tj)
        for cj, kj, tj in zip(c, k, theta, strict=True)
    ]
    phi = a + sum(w * math.cos(angle) for w, _, angle in terms)
    phi_x = -sum(w * kj * math.sin(angle) for w, kj, angle in terms)
    return -2.0 * nu * phi_x / phi


def test_cole_hopf_takes_the_batch_from_any_argument():
    """One set of modes (J,) with ν or the offset per sample (B,): the formula sample by sample."""
    x, t = [0.0, 0.3, 0.55, 0.9], [0.0, 0.4]
    c, k, theta = [0.8, 0.3], [2 * math.pi, 4 * math.pi], [0.3, -0.7]
    cases = [([0.05, 0.1], [1.5, 1.5]), ([0.05, 0.05], [1.5, 2.0])]
    for nus, offsets in cases:
        nu = nus if nus[0] != nus[1] else nus[0]
        offset = offsets if offsets[0] != offsets[1] else offsets[0]
        u = cole_hopf_solution(torch.tensor(x, dtype=torch.float64), t, nu, offset, c, k, theta)
        assert u.shape == (2, 2, 4)
        for b in range(2):
            single = cole_hopf_solution(
                torch.tensor(x, dtype=torch.float64), t, nus[b], offsets[b], c, k, theta
            )[0]
            assert torch.equal(u[b], single)
            for i, ti in enumerate(t):
                for j, xj in enumerate(x):
                    expected = _cole_hopf_by_hand(xj, ti, nus[b], offsets[b], c, k, theta)
                    assert u[b, i, j].item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_cole_hopf_names_mismatched_mode_counts_and_batch_sizes():
    x, t = torch.linspace(0.0, 1.0, 5), [0.0]
    with pytest.raises(ValueError, match=r"same number J of modes.*'wavenumbers': 2"):
        cole_hopf_solution(x, t, 0.05, 3.0, torch.ones(2, 3), torch.ones(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"must be 1 or the same B.*'nu': 3"):
        cole_hopf_solution(x, t, [0.1, 0.2, 0.3], 3.0, torch.ones(2, 3), torch.ones(3), 0.0)
    with pytest.raises(ValueError, match=r"offset must be a number or \(B,\), got shape \(1, 2\)"):
        cole_hopf_solution(x, t, 0.1, [[3.0, 3.0]], [0.5], [1.0], [0.0])


@pytest.mark.parametrize("shape", [(), (1, 5), (5, 1)])
def test_cole_hopf_refuses_x_that_is_not_one_dimensional(shape):
    x = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    x = x[2] if shape == () else x.reshape(shape)
    message = rf"^x must be 1-D coordinates \(X,\), got shape {re.escape(str(shape))}$"
    with pytest.raises(ValueError, match=message):
        cole_hopf_solution(x, [0.0], 0.1, 3.0, [1.0], [1.0], [0.0])


def test_cole_hopf_takes_plain_numbers_and_broadcasts_a_single_mode():
    """``φ = 3 + cos(2x)`` at t = 0: ``u = −2ν φ_x/φ = 4ν sin(2x)/(3 + cos(2x))``."""
    x = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    expected = 4 * 0.1 * torch.sin(2 * x) / (3 + torch.cos(2 * x))
    plain = cole_hopf_solution(x.tolist(), 0.0, 0.1, 3.0, 1.0, 2.0, 0.0)
    assert plain.shape == (1, 1, 5)
    torch.testing.assert_close(plain[0, 0], expected, rtol=1e-14, atol=1e-15)
    batched = cole_hopf_solution(x, [0.0], [0.1, 0.2], 3.0, [[1.0], [1.0]], [2.0], 0.0)
    assert batched.shape == (2, 1, 5)
    torch.testing.assert_close(batched[1, 0], 2 * expected, rtol=1e-14, atol=1e-15)


def test_cole_hopf_refuses_modes_of_more_than_two_dimensions():
    x = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    message = r"^amplitudes must be numbers \(B, J\) or \(J,\), got shape \(1, 1, 2\)$"
    with pytest.raises(ValueError, match=message):
        cole_hopf_solution(x, [0.0], 0.1, 3.0, torch.ones(1, 1, 2), [1.0, 2.0], [0.0])
