"""GPME family: exact solutions, the finite-volume solver, the recipes and their error handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from pdes import Dirichlet, Grid1D, Neumann, Periodic, SolverError, problems
from pdes.gpme import (
    EXACT_CASES,
    PROBLEMS,
    Diffusivity,
    constant_k,
    diffusion_exact,
    pme_exact,
    pme_k,
    pme_total_mass,
    solve_gpme,
    stefan_exact,
    stefan_k,
    stefan_total_mass,
    stefan_z1,
)
from pdes.verification import convergence

F64 = torch.float64
RECIPES = {problem.name: problem for problem in PROBLEMS}


def tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def stefan_front(u_star: float, t: float) -> float:
    return 2.0 * stefan_z1(u_star) * math.sqrt(t)


# --------------------------------------------------------------------------- exact solutions


def pde_residual(exact, potential, x: np.ndarray, t: float, h=1e-4, tau=1e-5) -> np.ndarray:
    """``u_t - Φ(u)_xx`` by central differences of the closed form, and the scale of ``u_t``."""

    def u(xs, ts):
        return exact(tensor(xs), tensor([ts]))[0, 0].numpy()

    u_t = (u(x, t + tau) - u(x, t - tau)) / (2 * tau)
    phi_xx = (potential(u(x + h, t)) - 2 * potential(u(x, t)) + potential(u(x - h, t))) / h**2
    return u_t - phi_xx, np.abs(u_t).max()


@pytest.mark.parametrize("k", [1.0, 4.5])
def test_diffusion_exact_solves_pde(k):
    x = np.linspace(0.1, 2 * np.pi - 0.1, 50)
    for t in (0.05, 0.5):
        residual, scale = pde_residual(
            lambda xs, ts: diffusion_exact(xs, ts, k), lambda u: k * u, x, t
        )
        assert np.abs(residual).max() < 1e-5 * scale


@pytest.mark.parametrize("m", [1.0, 2.5, 6.0])
def test_pme_exact_solves_pde_away_from_front(m):
    for t in (0.4, 0.8):
        x = np.linspace(0.02, t - 0.1, 40)
        residual, scale = pde_residual(
            lambda xs, ts: pme_exact(xs, ts, m), lambda u: u ** (m + 1) / (m + 1), x, t
        )
        assert np.abs(residual).max() < 1e-5 * scale


@pytest.mark.parametrize("u_star", [0.5, 0.6, 0.7])
def test_stefan_exact_solves_pde_away_from_front(u_star):
    for t in (0.02, 0.1):
        front = stefan_front(u_star, t)
        x = np.linspace(0.01, front - 0.02, 30)
        residual, scale = pde_residual(
            lambda xs, ts: stefan_exact(xs, ts, u_star), lambda u: u, x, t, tau=1e-6
        )
        assert np.abs(residual).max() < 1e-5 * scale
        ahead = stefan_exact(tensor(np.linspace(front + 1e-9, 1.0, 20)), tensor([t]), u_star)
        assert (ahead == 0).all()


@pytest.mark.parametrize("u_star", [0.05, 0.5, 0.6, 0.95])
def test_stefan_z1_solves_its_equation_and_front_condition_holds(u_star):
    z = stefan_z1(u_star)
    assert isinstance(z, float) and z > 0
    lhs = u_star * math.erf(z) * z * math.exp(z * z)
    assert lhs == pytest.approx((1 - u_star) / math.sqrt(math.pi), rel=1e-12)
    t = 0.05
    front = stefan_front(u_star, t)
    behind = stefan_exact(tensor([front * (1 - 1e-12)]), tensor([t]), u_star)
    assert behind.item() == pytest.approx(u_star, abs=1e-9)
    h = 1e-6
    near = stefan_exact(tensor([front - 2 * h, front - h]), tensor([t]), u_star)[0, 0]
    slope = (near[1] - near[0]).item() / h
    speed = front / (2 * t)
    assert u_star * speed == pytest.approx(-slope, rel=1e-4)


def test_stefan_z1_is_vectorised_and_decreasing():
    values = tensor([0.5, 0.55, 0.6, 0.7])
    roots = stefan_z1(values)
    assert roots.shape == (4,)
    assert torch.allclose(roots, tensor([stefan_z1(v) for v in values.tolist()]), rtol=0, atol=0)
    assert (roots[1:] < roots[:-1]).all()


def test_initial_and_boundary_values():
    x = torch.linspace(0, 1, 41, dtype=F64)
    t = torch.linspace(0, 1, 11, dtype=F64)
    m = tensor([1.0, 3.0, 6.0])
    u = pme_exact(x, t, m)
    assert u.shape == (3, 11, 41)
    assert (u[:, 0] == 0).all()
    assert torch.allclose(u[:, :, 0], (m[:, None] * t) ** (1 / m[:, None]), rtol=1e-14, atol=0)
    assert (u[:, :-1, -1] == 0).all()

    ts = torch.linspace(0, 0.1, 11, dtype=F64)
    s = stefan_exact(x, ts, tensor([0.55, 0.7]))
    assert torch.isfinite(s).all()
    assert (s[:, 0, 0] == 1).all() and (s[:, 0, 1:] == 0).all()
    assert (s[:, :, 0] == 1).all() and (s[:, :, -1] == 0).all()

    xp = torch.linspace(0, 2 * math.pi, 33, dtype=F64)
    d = diffusion_exact(xp, tensor([0.0, 0.3]), tensor([1.0, 5.0]))
    assert torch.allclose(d[:, 0], torch.sin(xp).expand(2, -1), rtol=0, atol=0)
    assert torch.allclose(d[:, 1, 8], torch.exp(-0.3 * tensor([1.0, 5.0])), rtol=1e-14)


@pytest.mark.parametrize("m", [1.0, 2.0, 5.0])
def test_pme_total_mass_matches_quadrature(m):
    t = tensor([0.0, 0.25, 0.6, 1.0])
    closed = pme_total_mass(t, m)[0]
    for j, tj in enumerate(t.tolist()):
        if tj == 0:
            assert closed[j] == 0
            continue
        value, _ = quad(
            lambda xi, tj=tj: pme_exact(tensor([xi]), tensor([tj]), m).item(), 0, 1, points=[tj]
        )
        assert closed[j].item() == pytest.approx(value, rel=1e-7)


@pytest.mark.parametrize("u_star", [0.5, 0.6, 0.7])
def test_stefan_total_mass_matches_quadrature(u_star):
    t = tensor([0.01, 0.05, 0.1])
    closed = stefan_total_mass(t, u_star)[0]
    for j, tj in enumerate(t.tolist()):
        front = stefan_front(u_star, tj)
        value, _ = quad(
            lambda xi, tj=tj: stefan_exact(tensor([xi]), tensor([tj]), u_star).item(),
            0,
            1,
            points=[front],
        )
        assert closed[j].item() == pytest.approx(value, rel=1e-8)


# --------------------------------------------------------------------------- finite volumes


@pytest.mark.parametrize("case", EXACT_CASES, ids=lambda case: case.name)
def test_convergence_orders(case):
    study = convergence(case)
    assert study.order >= case.order - 0.2, (study.errors, study.orders)


def linear_problem(kind: str, bc_name: str, n: int):
    """``u_t = k u_xx`` on ``[0, π]``: ``u = e^{-kt} sin(x + 1/2)``, with slope at both walls."""
    k, phase = 0.7, 0.5
    points = n + 1 if kind == "node" else n
    grid = Grid1D(points, 0.0, math.pi, kind)
    x = grid.coordinates()

    def exact(t: float) -> torch.Tensor:
        return math.exp(-k * t) * torch.sin(x + phase)

    if bc_name == "dirichlet":
        side = math.sin(phase)
        bc = Dirichlet(lambda t: side * math.exp(-k * t), lambda t: -side * math.exp(-k * t))
    else:
        side = math.cos(phase)
        bc = Neumann(lambda t: side * math.exp(-k * t), lambda t: -side * math.exp(-k * t))
    return grid, exact, bc, constant_k(k)


@pytest.mark.parametrize("kind", ["node", "cell"])
@pytest.mark.parametrize("bc_name", ["dirichlet", "neumann"])
def test_walls_are_second_order(kind, bc_name):
    times = [0.0, 0.25, 0.5]
    errors = []
    for n in (16, 32, 64):
        grid, exact, bc, k = linear_problem(kind, bc_name, n)
        u = solve_gpme(exact(0.0), grid, k, times, bc)
        reference = torch.stack([exact(t) for t in times])
        errors.append((u[0] - reference).abs().max().item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(orders) > 1.8, (errors, orders)


def test_heun_is_second_order_in_time():
    grid, exact, bc, k = linear_problem("cell", "neumann", 24)
    limit = grid.dx**2 / (2 * 0.7)
    runs = [solve_gpme(exact(0.0), grid, k, [0.3], bc, dt=limit / s)[0, -1] for s in (1, 2, 4)]
    ratio = (runs[0] - runs[1]).abs().max() / (runs[1] - runs[2]).abs().max()
    assert 3.5 < ratio.item() < 4.5


@pytest.mark.parametrize("side", ["left", "right"])
def test_nonlinear_neumann_walls_on_cell_grids_are_second_order(side):
    """PME ``k = u`` with the travelling wave ``u = (t + 0.6 - x)_+`` on [0, 1] and slopes -1 and 0
    at the walls (or its mirror image ``(t + 0.6 - (1 - x))_+``, slopes 0 and 1). The wall flux
    needs ``k`` at the wall, not at the first centre ``dx/2`` inside (first order in u and in the
    inflow); the exact inflow is ``-k u_x = t + 0.6`` at the wall the wave enters from."""
    times = torch.linspace(0.0, 0.4, 5, dtype=F64)
    exact_inflow = 0.5 * times**2 + 0.6 * times
    errors, inflow_errors = [], []
    for n in (20, 40, 80):
        grid = Grid1D(n, 0.0, 1.0, "cell")
        x = grid.coordinates()
        distance, bc = (x, Neumann(-1.0, 0.0)) if side == "left" else (1 - x, Neumann(0.0, 1.0))
        reference = (times[:, None] + 0.6 - distance).clamp(min=0.0)
        u, inflow = solve_gpme(reference[:1], grid, pme_k(1.0), times, bc, return_flux=True)
        errors.append((u[0] - reference).abs().mean().item())
        inflow_errors.append((inflow[0] - exact_inflow).abs().max().item())
    for name, e in (("u", errors), ("inflow", inflow_errors)):
        orders = [math.log2(e[i] / e[i + 1]) for i in range(len(e) - 1)]
        assert min(orders) >= 1.8, (name, e, orders)


def mass_balance_cases():
    m = tensor([1.0, 2.5, 4.0])
    u_star = tensor([0.55, 0.7])
    node = Grid1D(41, 0.0, 1.0)
    cell = Grid1D(40, 0.0, 1.0, "cell")
    wall = Dirichlet(lambda t: (m * t) ** (1 / m), 0.0)
    return {
        "diffusion-neumann-cell": (
            Grid1D(32, 0.0, 2 * math.pi, "cell"),
            constant_k(tensor([1.0, 3.0])),
            Neumann(lambda t: 1.0 + math.sin(5 * t), tensor([-0.5, 2.0])),
            lambda x: torch.stack([torch.sin(x), torch.cos(x) + 2]),
            0.5,
        ),
        "diffusion-dirichlet-cell": (
            Grid1D(32, 0.0, math.pi, "cell"),
            constant_k(2.0),
            Dirichlet(lambda t: 1.0 + t, -1.0),
            lambda x: torch.cos(x)[None],
            0.5,
        ),
        "pme-dirichlet-node": (node, pme_k(m), wall, lambda x: torch.zeros(3, x.numel()), 0.6),
        "pme-neumann-node": (
            node,
            pme_k(m),
            Neumann(0.5, 0.3),
            lambda x: (0.2 + 0.6 * x).expand(3, -1),
            0.2,
        ),
        "stefan-dirichlet-node": (
            node,
            stefan_k(u_star),
            Dirichlet(1.0, 0.0),
            lambda x: (x <= 0).to(F64).expand(2, -1),
            0.1,
        ),
        "stefan-dirichlet-cell": (
            cell,
            stefan_k(u_star),
            Dirichlet(1.0, 0.0),
            lambda x: torch.zeros(2, x.numel()),
            0.1,
        ),
        "bare-callable-neumann-cell": (
            cell,
            lambda u: 1.0 + u**2,
            Neumann(0.5, 2.0),
            lambda x: torch.sin(3 * x)[None],
            0.1,
        ),
    }


MASS_CASES = mass_balance_cases()


@pytest.mark.parametrize("name", list(MASS_CASES))
def test_mass_changes_only_by_boundary_inflow(name):
    grid, k, bc, initial, t_end = MASS_CASES[name]
    u0 = initial(grid.coordinates()).to(F64)
    times = torch.linspace(0.0, t_end, 7, dtype=F64)
    u, inflow = solve_gpme(u0, grid, k, times, bc, return_flux=True)
    assert inflow.shape == (u0.shape[0], 7)
    mass = grid.integrate(u)
    change = mass - mass[:, :1]
    scale = max(mass.abs().max().item(), inflow.abs().max().item())
    assert inflow[:, -1].abs().min() > 1e-3 * scale, "the case must have non-zero wall fluxes"
    assert (change - inflow).abs().max() <= 1e-12 * scale


def test_periodic_mass_is_conserved_and_inflow_is_zero():
    grid = Grid1D(40, 0.0, 2 * math.pi, periodic=True)
    x = grid.coordinates()
    u0 = torch.stack([torch.sin(x) + 1.5, torch.exp(torch.cos(x))])
    u, inflow = solve_gpme(
        u0, grid, pme_k(tensor([1.0, 2.0])), [0, 0.1, 0.4], "periodic", return_flux=True
    )
    mass = grid.integrate(u)
    assert (inflow == 0).all()
    assert torch.allclose(mass, mass[:, :1].expand_as(mass), rtol=1e-13, atol=0)


def test_dirichlet_values_are_respected_on_node_grids():
    grid = Grid1D(31, 0.0, 1.0)
    m = tensor([1.0, 3.0])
    times = torch.linspace(0, 0.5, 6, dtype=F64)
    u = solve_gpme(
        torch.ones(2, 31), grid, pme_k(m), times, Dirichlet(lambda t: (m * t) ** (1 / m), 0.2)
    )
    assert torch.equal(u[:, :, 0], (m[:, None] * times) ** (1 / m[:, None]))
    assert (u[:, :, -1] == 0.2).all()


def test_batch_matches_separate_runs_with_per_sample_parameters():
    grid = Grid1D(21, 0.0, 1.0)
    m = tensor([1.0, 2.0, 4.0])
    times = [0.0, 0.1, 0.2]
    x = grid.coordinates()

    def wall(values):
        return Dirichlet(lambda t: (values * t) ** (1 / values), 0.0)

    dt = 4e-4
    batch = solve_gpme(torch.zeros(3, 21), grid, pme_k(m), times, wall(m), dt=dt)
    for i in range(3):
        single = solve_gpme(torch.zeros(21), grid, pme_k(m[i : i + 1]), times, wall(m[i]), dt=dt)
        assert torch.allclose(batch[i], single[0], rtol=1e-13, atol=1e-15)
    assert torch.all(batch[:, -1] >= 0) and x.shape == (21,)


def test_bare_callable_and_number_match_constant_diffusivity():
    grid = Grid1D(30, 0.0, 2 * math.pi, periodic=True)
    u0 = torch.sin(grid.coordinates())
    times = [0.0, 0.2]
    reference = solve_gpme(u0, grid, constant_k(2.0), times, Periodic())
    bare = solve_gpme(u0, grid, lambda u: 2.0 + 0 * u, times, Periodic())
    number = solve_gpme(u0, grid, 2.0, times, Periodic())
    assert torch.allclose(bare, reference, rtol=0, atol=1e-14)
    assert torch.equal(number, reference)


def test_output_times():
    grid = Grid1D(48, 0.0, 2 * math.pi, periodic=True)
    x = grid.coordinates()
    u0 = torch.sin(x)
    times = tensor([0.0, 0.013, 0.013, 0.2])
    u = solve_gpme(u0, grid, 1.5, times, "periodic")
    assert u.shape == (1, 4, 48)
    assert torch.equal(u[0, 0], u0)
    assert torch.equal(u[0, 1], u[0, 2])
    assert torch.allclose(u[0], diffusion_exact(x, times, 1.5)[0], atol=1e-3)
    late = solve_gpme(u0, grid, 1.5, [0.2], "periodic")
    assert late.shape == (1, 1, 48)
    assert torch.allclose(late[0, 0], u[0, -1], atol=1e-5)


# --------------------------------------------------------------------------- recipes


SMALL = {
    "diffusion": {"nx": 24, "nt": 5, "t_end": 0.2},
    "pme": {"nx": 21, "nt": 5, "t_end": 0.5, "m_max": 2.0},
    "stefan": {"nx": 31, "nt": 6},
}


@pytest.mark.parametrize("name", ["diffusion", "pme", "stefan"])
def test_generate_is_reproducible_and_per_seed(name):
    problem = RECIPES[name]
    settings = problem.settings(**SMALL[name])
    a = problem.generate([3, 4, 5], settings)
    b = problem.generate([3, 4, 5], settings)
    assert a.u.shape == (3, settings["nt"], settings["nx"]) and a.u.dtype == F64
    assert torch.equal(a.u, b.u)
    assert set(a.params) == {problem.parameter} and a.params[problem.parameter].shape == (3,)
    alone = problem.generate([5], settings)
    assert torch.equal(alone.u[0], a.u[2])
    other = problem.generate([6, 7, 8], settings)
    assert not torch.equal(other.params[problem.parameter], a.params[problem.parameter])
    assert not torch.equal(other.u[:, -1], a.u[:, -1])
    coordinates = problem.coordinates(settings)
    assert coordinates["t"].shape == (settings["nt"],) and coordinates["t"][0] == 0
    assert coordinates["x"].shape == (settings["nx"],)
    attributes = problem.attributes(settings)
    assert {"pde", "boundary", "solver"} <= set(attributes)
    assert all(isinstance(v, (str, int, float)) for v in attributes.values())


@pytest.mark.parametrize(
    ("name", "low", "high", "key"),
    [("diffusion", 1.0, 5.0, "k"), ("pme", 1.0, 6.0, "m"), ("stefan", 0.55, 0.7, "u_star")],
)
def test_default_parameter_ranges(name, low, high, key):
    problem = RECIPES[name]
    values = problem.generate(range(20), problem.settings(nx=11, nt=2))
    drawn = values.params[key]
    assert (drawn >= low).all() and (drawn <= high).all() and drawn.unique().numel() == 20


@pytest.mark.parametrize(
    ("name", "tolerance"), [("diffusion", 5e-3), ("pme", 0.02), ("stefan", 0.03)]
)
def test_fv_recipe_agrees_with_exact(name, tolerance):
    problem = RECIPES[name]
    exact = problem.generate([1, 2], problem.settings(**SMALL[name]))
    fv = problem.generate([1, 2], problem.settings(**SMALL[name], solver="fv"))
    assert torch.equal(exact.params[problem.parameter], fv.params[problem.parameter])
    assert (fv.u - exact.u).abs().mean() < tolerance


# --------------------------------------------------------------------------- bad input


def periodic_setup():
    grid = Grid1D(16, 0.0, 2 * math.pi, periodic=True)
    return grid, torch.sin(grid.coordinates())


@pytest.mark.parametrize("k", [0.0, -1.0, float("nan")])
def test_non_positive_constant_k_raises(k):
    grid, u0 = periodic_setup()
    with pytest.raises(ValueError, match="k must"):
        constant_k(k)
    with pytest.raises(ValueError, match="k must"):
        solve_gpme(u0, grid, k, [0.1], "periodic")
    with pytest.raises(ValueError, match="k"):
        diffusion_exact(torch.zeros(3), tensor([0.0]), k)


def test_negative_k_from_callable_raises():
    grid, u0 = periodic_setup()
    with pytest.raises(ValueError, match=r"k\(u\) must be finite and >= 0"):
        solve_gpme(u0, grid, lambda u: u, [0.1], "periodic")


def test_dt_beyond_the_stability_limit_raises_with_the_limit():
    grid, u0 = periodic_setup()
    limit = grid.dx**2 / (2 * 3.0)
    with pytest.raises(SolverError, match=f"{limit:.6g}"):
        solve_gpme(u0, grid, 3.0, [0.1], "periodic", dt=1.01 * limit)
    assert torch.isfinite(solve_gpme(u0, grid, 3.0, [0.1], "periodic", dt=limit)).all()
    cell = Grid1D(16, 0.0, 1.0, "cell")
    with pytest.raises(SolverError, match=f"{cell.dx**2 / 3:.6g}"):
        solve_gpme(torch.zeros(16), cell, 1.0, [0.1], Dirichlet(1.0, 0.0), dt=cell.dx**2 / 2.5)


@pytest.mark.parametrize(
    ("u0", "error"),
    [
        (torch.zeros(15), "16 points"),
        (torch.zeros(2, 3, 16), "shape"),
        (torch.full((16,), float("nan")), "NaN"),
    ],
)
def test_bad_initial_condition_raises(u0, error):
    grid, _ = periodic_setup()
    with pytest.raises(ValueError, match=error):
        solve_gpme(u0, grid, 1.0, [0.1], "periodic")


def test_per_sample_parameter_count_mismatch_raises():
    grid, u0 = periodic_setup()
    with pytest.raises(ValueError, match="one value per sample"):
        solve_gpme(u0.expand(2, -1), grid, pme_k(tensor([1.0, 2.0, 3.0])), [0.1], "periodic")


def test_boundary_mismatches_raise():
    grid, u0 = periodic_setup()
    with pytest.raises(ValueError, match="bc must be one of"):
        solve_gpme(u0, grid, 1.0, [0.1], "robin")
    with pytest.raises(ValueError, match="periodic"):
        solve_gpme(u0, grid, 1.0, [0.1], "dirichlet")
    with pytest.raises(ValueError, match="periodic"):
        solve_gpme(torch.zeros(5), Grid1D(5), 1.0, [0.1], Periodic())
    with pytest.raises(ValueError, match="times"):
        solve_gpme(u0, grid, 1.0, [0.2, 0.1], "periodic")
    with pytest.raises(TypeError, match="Grid1D"):
        solve_gpme(u0, 16, 1.0, [0.1], "periodic")


@pytest.mark.parametrize("u_star", [0.0, 1.0, 1.2, -0.3])
def test_u_star_outside_unit_interval_raises(u_star):
    with pytest.raises(ValueError, match=r"u_star must lie in the open interval \(0, 1\)"):
        stefan_z1(u_star)
    with pytest.raises(ValueError, match="u_star"):
        stefan_k(u_star)
    with pytest.raises(ValueError, match="u_star"):
        stefan_exact(torch.zeros(2), tensor([0.1]), u_star)
    with pytest.raises(ValueError, match="u_star"):
        RECIPES["stefan"].generate([0], {"u_star_max": u_star, "u_star_min": 0.5 * u_star})


def test_bad_recipe_settings_raise():
    with pytest.raises(ValueError, match="solver"):
        RECIPES["pme"].generate([0], {"solver": "spectral"})
    with pytest.raises(ValueError, match="k_max"):
        RECIPES["diffusion"].generate([0], {"k_min": 3.0, "k_max": 2.0})
    with pytest.raises(ValueError, match="m_min"):
        RECIPES["pme"].generate([0], {"m_min": 0.0})
    with pytest.raises(ValueError, match="unknown option"):
        RECIPES["stefan"].settings(k=1.0)


def test_diffusivity_objects_carry_their_potential():
    u = torch.linspace(0, 1.5, 301, dtype=F64)[None]
    for d in (constant_k(2.0), pme_k(2.5), stefan_k(0.6)):
        assert isinstance(d, Diffusivity)
        integral = torch.cumulative_trapezoid(d(u), u, dim=1)
        assert torch.allclose(d.potential(u)[:, 1:] - d.potential(u)[:, :1], integral, atol=5e-3)


@pytest.mark.parametrize("frequency", [4.0, 7.8])
def test_a_wall_peaking_between_the_step_estimates_samples_stays_stable(frequency):
    """``k = u²`` with a Dirichlet wall ``1 + ½ sin(2π f t)``: nine even samples of [0, 1] see the
    wall only near 1, so a step planned from them alone was twice too large and blew up."""
    grid = Grid1D(21)

    def wall(t):
        return 1.0 + 0.5 * math.sin(2 * math.pi * frequency * t)

    u0 = torch.ones(1, 21, dtype=torch.float64)
    times = [0.0, 1.0]
    u, inflow = solve_gpme(u0, grid, pme_k(2.0), times, Dirichlet(wall, 1.0), return_flux=True)
    assert u.min() >= 0.5 - 1e-12 and u.max() <= 1.5 + 1e-12  # the walls' range bounds u
    mass = grid.integrate(u) - grid.integrate(u[:, 0])[:, None]
    assert torch.allclose(mass, inflow, rtol=0, atol=1e-13)


def pulse_wall(t: float) -> float:
    return 1.0 + 20.0 * math.exp(-(((t - 0.004) / 0.0002) ** 2))


def test_a_wall_pulse_at_a_step_time_is_seen_when_the_interval_needs_few_steps():
    """``k = u`` and a left wall that peaks at 21 for t = 0.004 only: the first plan (k_max = 1,
    three steps to t = 0.012) lands a step on the peak, which its nine even samples (t = k 0.0015)
    miss. The step must follow k = 21, so u stays within the walls' and u0's range [0, 21]."""
    grid = Grid1D(11)
    u0 = torch.full((1, 11), 0.5, dtype=F64)
    u = solve_gpme(u0, grid, pme_k(1.0), [0.0, 0.012], Dirichlet(pulse_wall, 0.0))
    assert torch.isfinite(u).all()
    assert u.min() >= -1e-12 and u.max() <= 21.0 + 1e-12, (u.min(), u.max())


def test_a_user_step_beyond_the_limit_at_a_wall_pulse_is_refused():
    """dt = 0.004 puts a step on the pulse (k = 21): 17 times the limit dx²/(2·21) there."""
    grid = Grid1D(11)
    u0 = torch.full((1, 11), 0.5, dtype=F64)
    limit = grid.dx**2 / (2 * 21.0)
    with pytest.raises(SolverError, match=f"stability limit .* = {limit:.6g}"):
        solve_gpme(u0, grid, pme_k(1.0), [0.0, 0.012], Dirichlet(pulse_wall, 0.0), dt=0.004)


class _Stepped(Exception):
    """Raised by a stand-in step: the step count was accepted and stepping began."""


@pytest.mark.parametrize("bc", [Neumann(0.0, 0.0), Dirichlet(1.0, 1.0)])
@pytest.mark.parametrize("own_step", [False, True])
def test_at_most_ten_million_steps_to_an_output(monkeypatch, bc, own_step):
    """``k = 10⁻⁶`` on 9 nodes: the limit ``dx²/(2k)`` is far above ``dt = 1``. Half a step under
    10⁷ steps to the output starts stepping, half a step over is refused before any step; with
    ``dt=None`` the step is ``SAFETY`` (0.9) of the limit."""
    grid = Grid1D(9)
    u0 = torch.ones(1, 9, dtype=F64)
    k = 1e-6
    step = 0.9 * grid.dx**2 / (2.0 * k) if own_step else 1.0
    dt = None if own_step else 1.0

    def refuse(*args):
        raise _Stepped

    monkeypatch.setattr("pdes.gpme._FiniteVolume.step", refuse)
    with pytest.raises(_Stepped):
        solve_gpme(u0, grid, k, [0.0, (10_000_000 - 0.5) * step], bc, dt=dt)
    with pytest.raises(SolverError, match=r"needs 10,000,001 steps .* more than 10,000,000:"):
        solve_gpme(u0, grid, k, [0.0, (10_000_000 + 0.5) * step], bc, dt=dt)


@pytest.mark.parametrize("name", ["diffusion", "pme"])
def test_a_finite_volume_recipe_sample_does_not_depend_on_its_batch(name):
    """The step of a batched solve follows the batch's largest k; the recipes must give a
    sample the same values alone and beside a sample of larger k."""
    recipe = next(p for p in PROBLEMS if p.name == name)
    settings = {"nx": 21, "nt": 3, "t_end": 0.2, "solver": "fv"}
    alone = recipe.generate([1], settings).u[0]
    together = recipe.generate([0, 1], settings).u[1]
    assert torch.equal(alone, together)


@pytest.mark.parametrize(("name", "last"), [("stefan", 0.7637), ("pme", 1.0)])
def test_the_exact_recipes_keep_their_right_wall_up_to_the_last_time_they_allow(name, last):
    """The front 2 z1 √t (Stefan, the fastest u* of the range) or x = t (PME) reaches x = 1 at
    the last ``t_end`` allowed: the closed form still meets u(t, 1) = 0 there, and a later
    ``t_end`` is refused."""
    recipe = problems.get(name)
    batch = recipe.generate([0, 1, 2], recipe.settings(t_end=last, nx=21, nt=5))
    assert (batch.u[..., -1] == 0).all()
    with pytest.raises(ValueError, match="t_end must be <="):
        recipe.generate([0], recipe.settings(t_end=1.01 * last, nx=21, nt=5))


# --------------------------------------------------------------------------- from a mutation pass


def test_a_bare_callable_k_advances_a_degenerate_front():
    """``k = u`` as a bare callable (no potential): the face mean of ``k(u_i)`` and ``k(0) = 0``
    must let the PME front move (a harmonic mean is 0 there and freezes it at the wall)."""
    m, t_end = 1.0, 0.5
    grid = Grid1D(101, 0.0, 1.0)
    x = grid.coordinates()
    wall = Dirichlet(lambda t: m * t, 0.0)
    u = solve_gpme(torch.zeros(101), grid, lambda u: u.clamp(min=0.0), [0.0, t_end], wall)
    exact = pme_exact(x, tensor([t_end]), m)[0, 0]
    assert (u[0, -1] - exact).abs().mean() < 2e-3
    assert u[0, -1, x < 0.45].min() > 0.02  # the front has passed x = 0.45


def test_a_bare_callable_k_is_second_order_on_smooth_data():
    """``k = 1 + u²`` as a bare callable on a periodic grid: the differences between runs on
    n, 2n and 4n nodes (compared on the coarse nodes) fall by 4 (a one-sided face ``k`` gives 2)."""
    runs = []
    for n in (24, 48, 96):
        grid = Grid1D(n, 0.0, 2 * math.pi, periodic=True)
        u0 = 1.0 + torch.sin(grid.coordinates()) + 0.5 * torch.cos(2 * grid.coordinates())
        u = solve_gpme(u0, grid, lambda u: 1.0 + u**2, [0.0, 0.05], "periodic")
        runs.append(u[0, -1, :: n // 24])
    ratio = (runs[0] - runs[1]).abs().max() / (runs[1] - runs[2]).abs().max()
    assert 3.5 < ratio.item() < 4.5, ratio


def test_a_moving_right_wall_on_a_node_grid_enters_the_mass_balance():
    """Both Dirichlet walls move: the end nodes' half cells change mass at both walls."""
    grid = Grid1D(21, 0.0, 1.0)
    times = torch.linspace(0.0, 0.2, 5, dtype=F64)
    bc = Dirichlet(lambda t: 1.0 + t, lambda t: 0.5 + 3.0 * t)
    u0 = torch.full((1, 21), 0.5, dtype=F64)
    u, inflow = solve_gpme(u0, grid, pme_k(1.0), times, bc, return_flux=True)
    start = u0.clone()
    start[:, 0] = 1.0
    mass = grid.integrate(u) - grid.integrate(start)[:, None]
    assert torch.allclose(mass, inflow, rtol=0, atol=1e-13)
    assert u[0, -1, -1].item() == pytest.approx(1.1, abs=1e-15)


def test_neumann_inflow_that_raises_k_keeps_the_step_stable():
    """``k = u`` from ``u = 0.1`` with an inflow slope at the left wall: ``u`` and so ``k`` grow
    sevenfold within the output interval, and the step must follow them (one estimate at the
    start of the interval is too large and the run blows up)."""
    grid = Grid1D(21, 0.0, 1.0)
    u0 = torch.full((1, 21), 0.1, dtype=F64)
    u, inflow = solve_gpme(u0, grid, pme_k(1.0), [0.0, 0.5], Neumann(-1.0, 0.0), return_flux=True)
    assert torch.isfinite(u).all()
    assert u.min() >= 0.1 - 1e-12 and u[0, -1, 0] > 0.5
    change = grid.integrate(u[0, -1]) - grid.integrate(u0[0])
    assert change.item() == pytest.approx(inflow[0, -1].item(), rel=1e-12)


def test_the_step_follows_a_peak_of_k_between_the_values_present():
    """``k`` peaks at ``u = 0.5`` (``k = 101``) while the step data hold only 0 and 1 (``k ≈ 1``):
    the values the solution passes through on its way set the step, so it stays in [0, 1]."""

    def k(u):
        return 1.0 + 100.0 * torch.exp(-(((u - 0.5) / 0.05) ** 2))

    grid = Grid1D(32, 0.0, 2 * math.pi, periodic=True)
    u0 = (grid.coordinates() < math.pi).to(F64)
    u = solve_gpme(u0, grid, k, [0.0, 0.05, 0.5], "periodic")
    assert torch.isfinite(u).all()
    assert u.min() >= -1e-12 and u.max() <= 1.0 + 1e-12
    fine = solve_gpme(u0, grid, k, [0.05], "periodic", dt=grid.dx**2 / (4 * 2 * 101.0))
    assert (u[0, 1] - fine[0, 0]).abs().max() < 1e-4


def test_stefan_k_is_one_at_the_threshold():
    d = stefan_k(0.6)
    assert d(tensor([[0.6 - 1e-12, 0.6, 0.7]])).tolist() == [[0.0, 1.0, 1.0]]


@pytest.mark.parametrize("name", ["diffusion", "pme", "stefan"])
def test_recipe_times_end_at_t_end(name):
    """``nt`` output times from 0 to ``t_end`` both included; the data at the last one is the
    closed form at ``t_end``."""
    recipe = RECIPES[name]
    settings = recipe.settings(nx=11, nt=4, t_end=0.08)
    expected = torch.linspace(0.0, 0.08, 4, dtype=F64)
    assert torch.equal(recipe.times(settings), expected)
    assert np.array_equal(recipe.coordinates(settings)["t"], expected.numpy())
    batch = recipe.generate([0], settings)
    x = recipe.grid(settings).coordinates()
    value = batch.params[recipe.parameter]
    exact = {"diffusion": diffusion_exact, "pme": pme_exact, "stefan": stefan_exact}[name]
    assert torch.equal(batch.u[0, -1], exact(x, tensor([0.08]), value)[0, 0])


def test_a_recipe_range_of_one_value_gives_that_value():
    recipe = RECIPES["diffusion"]
    batch = recipe.generate([0, 1, 2], recipe.settings(nx=11, nt=2, k_min=2.0, k_max=2.0))
    assert (batch.params["k"] == 2.0).all()


EXACT_FUNCTIONS = [(diffusion_exact, 1.0), (pme_exact, 2.0), (stefan_exact, 0.6)]


@pytest.mark.parametrize(("exact", "parameter"), EXACT_FUNCTIONS)
def test_exact_solutions_reject_bad_axes(exact, parameter):
    x, t = torch.linspace(0.0, 1.0, 5, dtype=F64), tensor([0.0, 0.1])
    with pytest.raises(ValueError, match=r"x must be a 1-D array, got shape \(1, 5\)"):
        exact(x[None], t, parameter)
    with pytest.raises(ValueError, match="t must be >= 0, got minimum -0.1"):
        exact(x, tensor([-0.1, 0.1]), parameter)
    with pytest.raises(ValueError, match="x must be finite"):
        exact(tensor([0.0, float("nan")]), t, parameter)
    with pytest.raises(ValueError, match="t must be finite"):
        exact(x, tensor([0.0, float("inf")]), parameter)


@pytest.mark.parametrize(
    ("total_mass", "parameter"), [(pme_total_mass, 2.0), (stefan_total_mass, 0.6)]
)
def test_total_masses_reject_negative_times(total_mass, parameter):
    """The closed forms hold for ``t >= 0`` only; a negative time used to give mass 0 silently."""
    with pytest.raises(ValueError, match="t must be >= 0, got minimum -0.25"):
        total_mass(tensor([0.0, -0.25]), parameter)
    with pytest.raises(ValueError, match="t must be finite"):
        total_mass(tensor([float("nan")]), parameter)


def test_total_masses_refuse_times_after_the_front_leaves_the_domain():
    """The closed forms integrate the profile over [0, 1] while its front is inside: the PME
    front x = t leaves at t = 1, Stefan's 2 z₁ √t at 1/(4 z₁²); a later time used to give a
    mass (2.0 for m = 1 at t = 2, more than the domain can hold) silently."""
    assert pme_total_mass(tensor([1.0]), 1.0).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"t must be <= 1 for m = 1: the front x = t leaves"):
        pme_total_mass(tensor([0.5, 2.0]), 1.0)
    z1 = stefan_z1(0.5)
    leaves = 1 / (4 * z1**2)
    stefan_total_mass(tensor([0.0, leaves]), 0.5)
    with pytest.raises(ValueError, match=rf"t must be <= {leaves:.17g} for u_star = 0.5: the"):
        stefan_total_mass(tensor([0.1, 1.0]), tensor([0.7, 0.5]))
    at_limit = torch.tensor(leaves, dtype=torch.float32).double()  # float32 rounds it up
    assert at_limit > leaves
    with pytest.raises(ValueError, match=rf"<= {leaves:.17g} .* got maximum {at_limit:.17g}$"):
        stefan_total_mass(at_limit[None], 0.5)


def test_pme_k_is_zero_for_negative_u():
    """``k = max(u, 0)^m``: undershoots below 0 must not diffuse (nor give NaN for m = 1.5)."""
    u = tensor([[-0.5, 0.0, 0.25]])
    assert pme_k(2.0)(u).tolist() == [[0.0, 0.0, 0.0625]]
    assert pme_k(1.5)(u).tolist() == [[0.0, 0.0, 0.125]]
    assert pme_k(2.0).potential(u).tolist() == [[0.0, 0.0, 0.25**3 / 3]]


@pytest.mark.parametrize("name", ["diffusion", "pme", "stefan"])
def test_recipes_need_three_nodes(name):
    with pytest.raises(ValueError, match="nx must be an integer >= 3, got 2"):
        RECIPES[name].generate([0], {"nx": 2, "nt": 2})


def test_recipes_refuse_an_empty_seed_list():
    with pytest.raises(ValueError, match="seeds must hold at least one seed"):
        RECIPES["pme"].generate([], {"nx": 5, "nt": 2})


def test_a_potential_of_the_wrong_shape_is_refused_by_name():
    """``k`` fits the batch of two but the potential carries three per-sample values."""
    grid, u0 = periodic_setup()
    three = pme_k(tensor([1.0, 2.0, 3.0]))
    k = Diffusivity(k=lambda u: torch.ones_like(u), potential=three.potential)
    with pytest.raises(
        ValueError, match=r"k\.potential\(u\) must accept u of shape \(sample, points\)"
    ):
        solve_gpme(u0.expand(2, -1), grid, k, [0.1], "periodic")


def test_per_sample_parameters_and_k_are_described_in_one_wording():
    """A diffusivity's parameter and ``solve_gpme``'s ``k`` both say ``one value per sample``."""
    wording = r"one value per sample \(sample,\), got "
    with pytest.raises(TypeError, match=rf"^m must be a number or {wording}True$"):
        pme_k(True)
    grid = Grid1D(9)
    with pytest.raises(
        TypeError, match=rf"^k must be a callable k\(u\), a positive number or {wording}"
    ):
        solve_gpme(torch.ones(1, 9, dtype=torch.float64), grid, object(), [0.0], "dirichlet")
    k_per_sample = np.array([0.5, 2.0])
    u = solve_gpme(torch.ones(2, 9, dtype=torch.float64), grid, k_per_sample, [0.0], "neumann")
    assert torch.equal(u, torch.ones(2, 1, 9, dtype=torch.float64))
