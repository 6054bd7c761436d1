"""Stokes' second problem: the exact formula, convergence, boundary values, bad input, recipe."""

import math
import re

import numpy as np
import pytest
import torch

from pdes import Grid1D, stokes
from pdes.problems import Problem
from pdes.verification import convergence

F64 = torch.float64


@pytest.mark.parametrize("U, omega, nu", [(1.0, 2.0 * math.pi, 0.05), (-2.0, 10.0, 0.3)])
def test_exact_formula_solves_the_pde_and_moves_with_the_plate(U, omega, nu):
    for y_value, t_value in [(0.0, 0.0), (0.1, 0.3), (0.7, 1.1), (0.35, 2.0)]:
        y = torch.tensor([y_value], dtype=F64, requires_grad=True)
        t = torch.tensor([t_value], dtype=F64, requires_grad=True)
        u = stokes.stokes_exact(y, t, U, omega, nu).sum()
        u_t = torch.autograd.grad(u, t, create_graph=True)[0]
        u_y = torch.autograd.grad(u, y, create_graph=True)[0]
        u_yy = torch.autograd.grad(u_y.sum(), y)[0]
        torch.testing.assert_close(u_t, nu * u_yy, rtol=1e-12, atol=1e-12)
    t = torch.tensor([0.0, 0.3, 1.1], dtype=F64)
    wall = stokes.stokes_exact(torch.zeros(1, dtype=F64), t, U, omega, nu)[0, :, 0]
    torch.testing.assert_close(wall, U * torch.cos(omega * t), rtol=0, atol=1e-15)


# Least-squares slope over 17..129 nodes; the coarsest pair is within 0.03 of 2.
@pytest.mark.parametrize("case", stokes.EXACT_CASES, ids=lambda c: c.name)
def test_exact_case_converges_at_its_order(case):
    study = convergence(case)
    assert study.order >= case.order - 0.15, (study.errors, study.orders)
    assert study.errors[-1] < 1e-3


def error_estimate(U: float, dx: float, depth: float) -> float:
    """Truncation error ν dx²/12 |u_yyyy| ≤ ν dx² U/(3δ⁴) felt over a period ~1/ω: U (dx/δ)²/6."""
    return U * (dx / depth) ** 2 / 6.0


def test_solution_matches_exact_values_on_both_walls_at_every_output():
    grid = Grid1D(41, 0.0, 0.5)
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)
    nu = torch.tensor([0.01, 0.1], dtype=F64)
    u = stokes.solve_stokes(grid, t, 1.5, 8.0, nu)
    exact = stokes.stokes_exact(grid.coordinates(), t, 1.5, 8.0, nu)
    torch.testing.assert_close(u[..., 0], 1.5 * torch.cos(8.0 * t).expand(2, -1), rtol=0, atol=0)
    torch.testing.assert_close(u[..., -1], exact[..., -1], rtol=1e-15, atol=1e-15)
    assert (u - exact).abs().max() < error_estimate(1.5, grid.dx, math.sqrt(2.0 * 0.01 / 8.0))


BAD_INPUT = {
    "nu-zero": (dict(nu=0.0), ValueError, "nu"),
    "nu-negative": (dict(nu=torch.tensor([0.1, -0.1])), ValueError, "nu"),
    "omega-zero": (dict(omega=0.0), ValueError, "omega"),
    "omega-negative": (dict(omega=-3.0), ValueError, "omega"),
    "omega-nan": (dict(omega=float("nan")), ValueError, "omega"),
    "amplitude-nan": (dict(U=float("inf")), ValueError, "U"),
    "counts-differ": (dict(U=torch.ones(3), nu=torch.ones(2)), ValueError, "per sample"),
    "grid": (dict(grid=17), TypeError, "grid"),
    "times": (dict(times=[1.0, 0.5]), ValueError, "times"),
}


@pytest.mark.parametrize("change", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_rejected_with_a_named_error(change):
    overrides, error, word = change
    arguments = dict(grid=Grid1D(17), times=[0.0, 1.0], U=1.0, omega=1.0, nu=0.1)
    arguments.update(overrides)
    with pytest.raises(error, match=word):
        stokes.solve_stokes(**arguments)


def test_exact_formula_rejects_bad_parameters():
    with pytest.raises(ValueError, match="nu"):
        stokes.stokes_exact(torch.zeros(3), [0.0], 1.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="omega"):
        stokes.stokes_exact(torch.zeros(3), [0.0], 1.0, 0.0, 1.0)


def test_recipe_generates_reproducible_exact_samples():
    (problem,) = stokes.PROBLEMS
    assert isinstance(problem, Problem)
    settings = problem.settings(nx=41, nt=6, omega_min=5.0, omega_max=12.0)
    batch = problem.generate([3, 4, 5], settings)
    assert torch.equal(batch.u, problem.generate([3, 4, 5], settings).u)
    alone = problem.generate([4], settings)
    torch.testing.assert_close(alone.u[0], batch.u[1], rtol=0, atol=1e-12)
    assert set(batch.params) == {"nu", "omega", "amplitude"}
    nu, omega = batch.params["nu"], batch.params["omega"]
    assert ((nu >= 0.02) & (nu <= 0.1)).all() and ((omega >= 5.0) & (omega <= 12.0)).all()
    assert len(set(nu.tolist())) == 3

    coords = problem.coordinates(settings)
    assert batch.u.shape == (3, coords["t"].size, coords["x"].size)
    exact = stokes.stokes_exact(
        torch.as_tensor(coords["x"]), torch.as_tensor(coords["t"]), 2.0, omega, nu
    )
    torch.testing.assert_close(batch.u[..., 0], exact[..., 0], rtol=0, atol=1e-14)
    depth = torch.sqrt(2.0 * nu / omega).min().item()
    dx = float(coords["x"][1] - coords["x"][0])
    assert (batch.u - exact).abs().max() < error_estimate(2.0, dx, depth)
    attributes = problem.attributes(settings)
    assert {"pde", "boundary", "solver"} <= set(attributes)
    assert all(isinstance(v, (str, int, float)) for v in attributes.values())


def test_a_sample_does_not_depend_on_the_plates_it_is_batched_with():
    """With a range of ω wide enough that the fastest plate sets the time step, each sample is
    still the one its seed gives alone (chunks and shards must not change the data)."""
    (problem,) = stokes.PROBLEMS
    settings = problem.settings(nx=17, nt=6, omega_min=5.0, omega_max=60.0)
    seeds = [0, 1, 2, 3]
    batch = problem.generate(seeds, settings).u
    for i, seed in enumerate(seeds):
        alone = problem.generate([seed], settings).u[0]
        torch.testing.assert_close(alone, batch[i], rtol=0, atol=1e-13)


def test_recipe_rejects_an_empty_range():
    (problem,) = stokes.PROBLEMS
    with pytest.raises(ValueError, match="nu_max"):
        problem.generate([1], problem.settings(nu_min=0.2, nu_max=0.1))


def test_the_default_step_follows_a_fast_plate():
    """ω = 1000 at 101 nodes: the heat solver's default step turns the plate 2.5 radians a
    step; the default must leave the error at the spatial one (a much smaller step's)."""
    grid = Grid1D(101)
    t = torch.linspace(0.0, 0.02, 5, dtype=torch.float64)
    exact = stokes.stokes_exact(grid.coordinates(), t, 1.0, 1000.0, 1.0)
    default = (stokes.solve_stokes(grid, t, 1.0, 1000.0, 1.0) - exact).abs().max()
    fine = (stokes.solve_stokes(grid, t, 1.0, 1000.0, 1.0, max_step=2e-5) - exact).abs().max()
    assert default <= 1.1 * fine


def test_stokes_measures_y_from_the_lower_end_of_the_grid():
    """The solution on [2, 3] equals the one on [0, 1]: y is measured from the grid's lower end."""
    t = torch.linspace(0.0, 0.5, 4, dtype=F64)
    at_zero = stokes.solve_stokes(Grid1D(21, 0.0, 1.0), t, 1.0, 8.0, 0.05)
    shifted = stokes.solve_stokes(Grid1D(21, 2.0, 3.0), t, 1.0, 8.0, 0.05)
    torch.testing.assert_close(shifted, at_zero, rtol=0, atol=1e-12)


def plate_state(depth: float, t: float, U: float, omega: float, nu: float) -> float:
    """The periodic state written out by hand: ``U e^{-k·depth} cos(ωt - k·depth)``."""
    k = math.sqrt(omega / (2.0 * nu))
    return U * math.exp(-k * depth) * math.cos(omega * t - k * depth)


class RaisedStokes(stokes.StokesProblem):
    """The recipe on ``[2, 2 + length]``: ``_grid`` is where a lower end other than 0 can enter
    (the settings always start the domain at 0)."""

    def _grid(self, settings: dict) -> Grid1D:
        return Grid1D(settings["nx"], 2.0, 2.0 + settings["length"])


def test_recipe_walls_measure_y_from_the_lower_end_of_its_grid():
    """On [2, 2.5] the top wall is 0.5 above the plate: the recipe's boundary, the generated
    samples' walls and the exact state there agree (absolute coordinates would put it at 2.5)."""
    problem = RaisedStokes()
    settings = problem.settings(
        nx=21, nt=5, t_end=0.8, length=0.5, nu_min=0.05, nu_max=0.05, omega_min=8.0, omega_max=8.0
    )
    walls = problem.boundary(settings)
    t = torch.linspace(0.0, 0.8, 5, dtype=F64)
    for t_value in t.tolist():
        assert walls.left(t_value) == pytest.approx(2.0 * math.cos(8.0 * t_value), abs=1e-15)
        top = plate_state(0.5, t_value, 2.0, 8.0, 0.05)
        assert walls.right(t_value) == pytest.approx(top, rel=1e-14, abs=1e-15)

    u = problem.generate([0], settings).u[0]
    grid = problem._grid(settings)
    exact = stokes.stokes_exact(grid.coordinates() - grid.lower, t, 2.0, 8.0, 0.05)[0]
    by_hand = torch.tensor([plate_state(0.5, s, 2.0, 8.0, 0.05) for s in t.tolist()], dtype=F64)
    torch.testing.assert_close(exact[:, -1], by_hand, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(u[:, -1], by_hand, rtol=1e-14, atol=1e-15)
    assert (u - exact).abs().max() < error_estimate(2.0, grid.dx, math.sqrt(2.0 * 0.05 / 8.0))


@pytest.mark.parametrize("lower", [0.0, 2.0, -3.5])
def test_stokes_walls_hold_the_exact_state_at_the_grids_two_ends(lower):
    grid = Grid1D(11, lower, lower + 0.4)
    nu = torch.tensor([0.02, 0.1], dtype=F64)
    per_sample = stokes.stokes_walls(grid, 1.5, 6.0, nu)
    numbers = stokes.stokes_walls(grid, 1.5, 6.0, 0.1)
    for t in (0.0, 0.25, 1.3):
        wall = torch.full((2,), 1.5 * math.cos(6.0 * t), dtype=F64)
        top = torch.tensor([plate_state(0.4, t, 1.5, 6.0, v) for v in (0.02, 0.1)], dtype=F64)
        torch.testing.assert_close(per_sample.left(t), wall, rtol=0, atol=1e-15)
        torch.testing.assert_close(per_sample.right(t), top, rtol=1e-14, atol=1e-15)
        assert isinstance(numbers.right(t), float)
        assert numbers.right(t) == pytest.approx(float(top[1]), rel=1e-14, abs=1e-15)


def test_stokes_walls_reject_grids_without_a_wall_node():
    with pytest.raises(ValueError, match="grid must be a non-periodic node grid"):
        stokes.stokes_walls(Grid1D(8, kind="cell"), 1.0, 1.0, 0.1)
    with pytest.raises(TypeError, match="grid"):
        stokes.stokes_walls(8, 1.0, 1.0, 0.1)


def test_exact_formula_satisfies_the_pde_by_finite_differences():
    """Central differences in t and y of the exact state (no autograd): u_t = ν u_yy to O(h²)."""
    U, omega, nu, h = 1.3, 7.0, 0.04, 1e-4
    y = torch.tensor([0.05, 0.2, 0.4], dtype=F64)
    for t0 in (0.1, 0.9):
        t = torch.tensor([t0 - h, t0, t0 + h], dtype=F64)
        ys = torch.cat([y - h, y, y + h])
        u = stokes.stokes_exact(ys, t, U, omega, nu)[0]  # (time, 3 * Y)
        u_t = (u[2, 3:6] - u[0, 3:6]) / (2 * h)
        u_yy = (u[1, 6:] - 2 * u[1, 3:6] + u[1, :3]) / h**2
        scale = U * omega
        assert (u_t - nu * u_yy).abs().max() < 1e-5 * scale
        k = math.sqrt(omega / (2 * nu))
        by_hand = [U * math.exp(-k * v) * math.cos(omega * t0 - k * v) for v in y.tolist()]
        torch.testing.assert_close(u[1, 3:6], torch.tensor(by_hand, dtype=F64), rtol=1e-13, atol=0)


def test_exact_formula_takes_the_per_sample_count_from_the_longest_parameter():
    nu = torch.tensor([0.02, 0.1, 0.5], dtype=F64)
    u = stokes.stokes_exact(torch.tensor([0.0, 0.3], dtype=F64), [0.2], 2.0, 4.0, nu)
    assert u.shape == (3, 1, 2)
    by_hand = [plate_state(0.3, 0.2, 2.0, 4.0, v) for v in nu.tolist()]
    torch.testing.assert_close(u[:, 0, 1], torch.tensor(by_hand, dtype=F64), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="U"):
        stokes.stokes_exact(torch.zeros(2), [0.0], torch.ones(2), 4.0, nu)


def test_stokes_walls_refuse_a_periodic_node_grid():
    with pytest.raises(ValueError, match="grid must be a non-periodic node grid"):
        stokes.stokes_walls(Grid1D(8, periodic=True), 1.0, 1.0, 0.1)


def test_recipe_refuses_too_few_nodes_or_times():
    (problem,) = stokes.PROBLEMS
    with pytest.raises(ValueError, match="nx must be an integer >= 3"):
        problem.generate([0], problem.settings(nx=2))
    with pytest.raises(ValueError, match="nt must be an integer >= 2"):
        problem.generate([0], problem.settings(nt=1))


def test_recipe_boundary_refuses_a_range_of_either_parameter():
    (problem,) = stokes.PROBLEMS
    fixed = dict(nu_min=0.05, nu_max=0.05, omega_min=8.0, omega_max=8.0)
    problem.boundary(problem.settings(**fixed))
    for change in (dict(nu_max=0.1), dict(omega_max=9.0)):
        with pytest.raises(ValueError, match="no one boundary condition"):
            problem.boundary(problem.settings(**{**fixed, **change}))


def test_recipe_draws_nu_and_omega_independently_and_uniformly():
    """Per sample, ν and ω come from two independent uniform draws: their positions in the
    ranges differ, and over many samples each has mean 1/2 and variance 1/12."""
    (problem,) = stokes.PROBLEMS
    settings = problem.settings(
        nx=3, nt=2, t_end=1e-3, nu_min=0.02, nu_max=0.1, omega_min=5.0, omega_max=12.0
    )
    samples = 600
    params = problem.generate(list(range(samples)), settings).params
    a = (params["nu"] - 0.02) / 0.08
    b = (params["omega"] - 5.0) / 7.0
    assert ((a - b).abs() > 1e-9).all()
    bound = 5 * math.sqrt(1 / 12 / samples)
    for draw in (a, b):
        assert abs(draw.mean().item() - 0.5) < bound
        assert abs(draw.var().item() - 1 / 12) < 5 * math.sqrt(1 / 180 / samples)
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 5 / math.sqrt(samples)


def test_the_default_step_follows_the_fastest_plate_of_a_batch():
    """A slow and a fast plate in one call: the default step is set by the fast one, so its error
    stays at the spatial one (that of a much smaller step), as when it is solved alone."""
    grid = Grid1D(101)
    t = torch.linspace(0.0, 0.02, 5, dtype=F64)
    omega = torch.tensor([1.0, 1000.0], dtype=F64)
    exact = stokes.stokes_exact(grid.coordinates(), t, 1.0, omega, 1.0)
    default = (stokes.solve_stokes(grid, t, 1.0, omega, 1.0) - exact)[1].abs().max()
    fine = (stokes.solve_stokes(grid, t, 1.0, omega, 1.0, max_step=2e-5) - exact)[1].abs().max()
    assert default <= 1.1 * fine


def test_recipe_step_follows_the_fastest_plate_of_its_range():
    """ω drawn from [1, 1000]: each sample's error is the spatial one (that of a much smaller
    step), also for the fast plates, whatever ``omega_min`` is."""
    (problem,) = stokes.PROBLEMS
    settings = problem.settings(
        nx=101, nt=5, t_end=0.02, nu_min=1.0, nu_max=1.0, omega_min=1.0, omega_max=1000.0
    )
    batch = problem.generate([0, 1, 2], settings)
    omega = batch.params["omega"]
    assert omega.max() > 200.0
    grid = Grid1D(101)
    t = torch.linspace(0.0, 0.02, 5, dtype=F64)
    exact = stokes.stokes_exact(grid.coordinates(), t, 2.0, omega, 1.0)
    fine = stokes.solve_stokes(grid, t, 2.0, omega, 1.0, max_step=2e-5)
    for i in range(3):
        error = (batch.u[i] - exact[i]).abs().max()
        assert error <= 1.1 * (fine[i] - exact[i]).abs().max(), (i, omega[i].item())


def test_recipe_plate_moves_with_the_amplitude_setting():
    """``amplitude`` = 0.5: the plate's values are 0.5 cos(ωt) and the record says 0.5."""
    (problem,) = stokes.PROBLEMS
    settings = problem.settings(nx=17, nt=4, amplitude=0.5)
    batch = problem.generate([0, 1], settings)
    assert batch.params["amplitude"].tolist() == [0.5, 0.5]
    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    for i in range(2):
        wall = 0.5 * torch.cos(batch.params["omega"][i] * t)
        torch.testing.assert_close(batch.u[i, :, 0], wall, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(nu_min=0.0), "nu_min must be a finite number > 0, got 0.0"),
        (dict(omega_min=-1.0), "omega_min must be a finite number > 0, got -1.0"),
        (dict(nu_max=float("nan")), "stokes: option nu_max must be finite, got nan"),
        (dict(omega_max=float("inf")), "stokes: option omega_max must be finite, got inf"),
        (dict(t_end=0.0), "t_end must be a finite number > 0, got 0.0"),
        (dict(t_end=-1.0), "t_end must be a finite number > 0, got -1.0"),
        (dict(length=0.0), "length must be a finite number > 0, got 0.0"),
    ],
)
def test_recipe_names_the_bad_setting(change, message):
    (problem,) = stokes.PROBLEMS
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        problem.generate([0], problem.settings(nx=5, nt=2, **change))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_exact_formula_refuses_non_finite_heights_and_times(bad):
    with pytest.raises(ValueError, match=f"^{re.escape(f'y must be finite, got [0.0, {bad}]')}$"):
        stokes.stokes_exact(torch.tensor([0.0, bad], dtype=F64), [0.0], 1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match=f"^{re.escape(f't must be finite, got [0.0, {bad}]')}$"):
        stokes.stokes_exact(torch.zeros(2, dtype=F64), [0.0, bad], 1.0, 1.0, 0.1)


def test_max_step_is_the_step_the_solver_takes():
    """ω = 1000 at 101 nodes: a step turning the plate 2.5 radians is far less accurate than a
    small one (time error well above the spatial one), so both values of ``max_step`` are used."""
    grid = Grid1D(101)
    t = torch.linspace(0.0, 0.02, 5, dtype=F64)
    exact = stokes.stokes_exact(grid.coordinates(), t, 1.0, 1000.0, 1.0)
    coarse = (stokes.solve_stokes(grid, t, 1.0, 1000.0, 1.0, max_step=2.5e-3) - exact).abs().max()
    fine = (stokes.solve_stokes(grid, t, 1.0, 1000.0, 1.0, max_step=2e-5) - exact).abs().max()
    assert coarse > 4.0 * fine


def test_recipe_domain_follows_the_length_setting():
    """``length`` = 0.5: nodes on [0, 0.5]; the top wall holds the exact state at 0.5."""
    (problem,) = stokes.PROBLEMS
    settings = problem.settings(nx=21, nt=4, length=0.5, nu_min=0.05, nu_max=0.05)
    coords = problem.coordinates(settings)
    torch.testing.assert_close(
        torch.as_tensor(coords["x"]), torch.linspace(0.0, 0.5, 21, dtype=F64), rtol=0, atol=1e-15
    )
    u = problem.generate([0], settings).u[0]
    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    by_hand = torch.tensor([plate_state(0.5, s, 2.0, 10.0, 0.05) for s in t.tolist()], dtype=F64)
    torch.testing.assert_close(u[:, -1], by_hand, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", ["U", "omega", "nu"])
@pytest.mark.parametrize(
    "empty", [[], (), torch.tensor([], dtype=F64)], ids=["list", "tuple", "tensor"]
)
def test_empty_parameters_are_refused_naming_them(name, empty):
    values = {"U": 1.0, "omega": 1.0, "nu": 0.1, name: empty}
    message = rf"^{name} must be a number or one value per sample \(sample,\), got shape \(0,\)$"
    with pytest.raises(ValueError, match=message):
        stokes.solve_stokes(Grid1D(9), [0.0, 0.1], values["U"], values["omega"], values["nu"])


def test_batch_comes_from_whichever_parameter_holds_values():
    """Two samples from ``nu`` alone (a numpy array): each matches the exact state at its ν."""
    grid, t = Grid1D(9), [0.0]
    u = stokes.solve_stokes(grid, t, 2.0, 3.0, np.array([0.1, 0.4]))
    for j, nu in enumerate([0.1, 0.4]):
        by_hand = [plate_state(y, 0.0, 2.0, 3.0, nu) for y in grid.coordinates().tolist()]
        torch.testing.assert_close(u[j, 0], torch.tensor(by_hand, dtype=F64), rtol=0, atol=1e-14)
