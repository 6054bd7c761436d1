"""Wave solver: convergence, zero-flux boundaries, conserved mass and energy, bad input, recipe."""

import math

import pytest
import torch

from pdes import Dirichlet, Grid1D, Neumann, problems, wave
from pdes.problems import Problem
from pdes.verification import convergence

F64 = torch.float64


def random_state(n: int, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, n, generator=gen, dtype=F64),
        torch.randn(batch, n, generator=gen, dtype=F64),
    )


def weighted_mass(u: torch.Tensor, dx: float) -> torch.Tensor:
    """dx·(3/2 u_1 + u_2 + ... + 3/2 u_{N-1}), the left null vector of the Neumann matrix."""
    inner = u[..., 1:-1]
    return dx * (inner.sum(-1) + 0.5 * inner[..., 0] + 0.5 * inner[..., -1])


def energy(u: torch.Tensor, v: torch.Tensor, dx: float, c: torch.Tensor) -> torch.Tensor:
    """½ v·W v + ½ c² Σ (Δu/dx)² over interior nodes, W = dx·diag(3/2, 1, ..., 1, 3/2)."""
    inner_u, inner_v = u[..., 1:-1], v[..., 1:-1]
    kinetic = dx * (inner_v**2).sum(-1) + 0.5 * dx * (inner_v[..., 0] ** 2 + inner_v[..., -1] ** 2)
    gradient = ((inner_u[..., 1:] - inner_u[..., :-1]) / dx) ** 2
    return 0.5 * kinetic + 0.5 * c[:, None] ** 2 * dx * gradient.sum(-1)


def test_exact_formula_solves_the_pde_with_zero_flux():
    for x_value, t_value in [(0.0, 0.2), (0.3, 0.7), (1.0, 1.3)]:
        x = torch.tensor([x_value], dtype=F64, requires_grad=True)
        t = torch.tensor([t_value], dtype=F64, requires_grad=True)
        u = wave.wave_exact(x, t, torch.tensor([3.0]), torch.tensor([0.6], dtype=F64)).sum()
        u_x = torch.autograd.grad(u, x, create_graph=True)[0]
        u_t = torch.autograd.grad(u, t, create_graph=True)[0]
        u_xx = torch.autograd.grad(u_x.sum(), x)[0]
        u_tt = torch.autograd.grad(u_t.sum(), t)[0]
        torch.testing.assert_close(u_tt, 0.36 * u_xx, rtol=1e-12, atol=1e-12)
        if x_value in (0.0, 1.0):
            assert abs(u_x.item()) < 1e-12


def test_exact_formula_on_a_domain_of_another_length():
    """On ``[0, L]``, L = 2.5: ``cos(jπx/L) cos(cjπt/L)`` written out per point, and zero flux at
    ``x = L`` (a formula that ignored ``length`` would have its walls at 0 and 1)."""
    length = 2.5
    x = torch.linspace(0.0, length, 7, dtype=F64)
    t = [0.0, 0.4, 1.7]
    mode, c = torch.tensor([1.0, 3.0]), torch.tensor([0.6, 1.4], dtype=F64)
    u = wave.wave_exact(x, t, mode, c, length=length)
    expected = torch.tensor(
        [
            [
                [
                    math.cos(j * math.pi * xi / length) * math.cos(ci * j * math.pi * ti / length)
                    for xi in x.tolist()
                ]
                for ti in t
            ]
            for j, ci in zip(mode.tolist(), c.tolist(), strict=True)
        ],
        dtype=F64,
    )
    torch.testing.assert_close(u, expected, rtol=0, atol=1e-14)

    wall = torch.tensor([length], dtype=F64, requires_grad=True)
    flux = torch.autograd.grad(wave.wave_exact(wall, [0.3], mode, c, length=length).sum(), wall)[0]
    assert abs(flux.item()) < 1e-12


# Least-squares slope over 17..129 nodes; the coarsest pair is within 0.05 of 2.
@pytest.mark.parametrize("case", wave.EXACT_CASES, ids=lambda c: c.name)
def test_exact_case_converges_at_its_order(case):
    study = convergence(case)
    assert study.order >= case.order - 0.15, (study.errors, study.orders)
    assert study.errors[-1] < 2e-3


def test_zero_flux_stencil_mass_and_energy_hold_at_every_output():
    grid = Grid1D(33, -1.0, 1.0)
    u0, v0 = random_state(33)
    c = torch.tensor([1.0, 2.5, 0.3], dtype=F64)
    t = torch.tensor([0.0, 0.1, 1.0, 7.3, 50.0], dtype=F64)
    u, v = wave.solve_wave(u0, v0, grid, c, t, return_velocity=True)
    dx = grid.dx
    for field in (u, v):
        left = (-3.0 * field[..., 0] + 4.0 * field[..., 1] - field[..., 2]) / (2.0 * dx)
        right = (3.0 * field[..., -1] - 4.0 * field[..., -2] + field[..., -3]) / (2.0 * dx)
        assert left.abs().max() < 1e-10 * field.abs().max() / dx
        assert right.abs().max() < 1e-10 * field.abs().max() / dx
    # Mass moves with the (constant) mean velocity: M(t) = M(0) + t·M_v.
    mass, moving = weighted_mass(u, dx), weighted_mass(v, dx)
    torch.testing.assert_close(moving, moving[:, :1].expand_as(moving), rtol=0, atol=1e-12)
    torch.testing.assert_close(mass, mass[:, :1] + t * moving[:, :1], rtol=0, atol=1e-11)
    e = energy(u, v, dx, c)
    torch.testing.assert_close(e, e[:, :1].expand_as(e), rtol=1e-11, atol=0)
    torch.testing.assert_close(e, wave.discrete_energy(u, v, grid, c), rtol=1e-13, atol=0)


def test_at_rest_without_mean_velocity_the_mass_is_constant():
    grid = Grid1D(25)
    u0, _ = random_state(25)
    u = wave.solve_wave(u0, torch.zeros_like(u0), grid, 1.0, [0.0, 0.4, 3.0])
    mass = weighted_mass(u, grid.dx)
    torch.testing.assert_close(mass, mass[:, :1].expand_as(mass), rtol=0, atol=1e-13)
    # The trapezoid integral is conserved up to the stencil's second-order error.
    trapezoid = grid.integrate(u)
    assert (trapezoid - trapezoid[:, :1]).abs().max() < 10 * grid.dx**2 * u0.abs().max()


def test_constant_mode_drifts_exactly():
    grid = Grid1D(9)
    u = wave.solve_wave(torch.full((9,), 2.0), torch.full((9,), -0.5), grid, 3.0, [0.0, 1.0, 4.0])
    expected = torch.tensor([2.0, 1.5, 0.0], dtype=F64)[:, None].expand(3, 9)
    torch.testing.assert_close(u[0], expected, rtol=0, atol=1e-13)


def test_first_output_interior_is_u0():
    grid = Grid1D(17)
    u0, v0 = random_state(17)
    u, v = wave.solve_wave(u0, v0, grid, 1.0, [0.0, 1.0], return_velocity=True)
    assert torch.equal(u[:, 0, 1:-1], u0[:, 1:-1]) and torch.equal(v[:, 0, 1:-1], v0[:, 1:-1])


BAD_INPUT = {
    "c-zero": (dict(c=0.0), ValueError, "c must"),
    "c-negative": (dict(c=-1.0), ValueError, "c must"),
    "c-sample-negative": (dict(c=torch.tensor([1.0, -1.0])), ValueError, "c must"),
    "u0-nan": (dict(u0=torch.full((2, 17), float("nan"))), ValueError, "u0"),
    "u0-shape": (dict(u0=torch.zeros(2, 18)), ValueError, "u0"),
    "v0-shape": (dict(v0=torch.zeros(3, 17)), ValueError, "v0"),
    "v0-inf": (dict(v0=torch.full((2, 17), float("inf"))), ValueError, "v0"),
    "bc-robin": (dict(bc="robin"), ValueError, "bc"),
    "bc-dirichlet": (dict(bc=Dirichlet()), ValueError, "bc"),
    "bc-neumann-flux": (dict(bc=Neumann(0.0, 1.0)), ValueError, "only homogeneous"),
    "bc-neumann-function": (dict(bc=Neumann(lambda t: 0.0 * t, 0.0)), ValueError, "homogeneous"),
    "grid-periodic": (dict(grid=Grid1D(17, periodic=True)), ValueError, "grid"),
    "times": (dict(times=[1.0, 0.0]), ValueError, "times"),
    "grid-three-nodes": (
        dict(grid=Grid1D(3), u0=torch.zeros(2, 3), v0=torch.zeros(2, 3)),
        ValueError,
        "at least 4 nodes",
    ),
}


@pytest.mark.parametrize("change", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_rejected_with_a_named_error(change):
    overrides, error, word = change
    arguments = dict(
        u0=torch.zeros(2, 17), v0=torch.zeros(2, 17), grid=Grid1D(17), c=1.0, times=[0.0, 1.0]
    )
    arguments.update(overrides)
    with pytest.raises(error, match=word):
        wave.solve_wave(**arguments)


@pytest.mark.parametrize("velocity_scale", [0.0, 0.5])
def test_recipe_generates_reproducible_samples(velocity_scale):
    (problem,) = wave.PROBLEMS
    assert isinstance(problem, Problem)
    settings = problem.settings(nx=33, nt=5, c_min=0.5, c_max=2.0, velocity_scale=velocity_scale)
    batch = problem.generate([21, 22, 23], settings)
    assert torch.equal(batch.u, problem.generate([21, 22, 23], settings).u)
    alone = problem.generate([23], settings)
    torch.testing.assert_close(alone.u[0], batch.u[2], rtol=0, atol=1e-12)
    c = batch.params["c"]
    assert c.shape == (3,) and ((c >= 0.5) & (c <= 2.0)).all()

    coords = problem.coordinates(settings)
    assert batch.u.shape == (3, coords["t"].size, coords["x"].size)
    dx = float(coords["x"][1] - coords["x"][0])
    left = (-3.0 * batch.u[..., 0] + 4.0 * batch.u[..., 1] - batch.u[..., 2]) / (2.0 * dx)
    assert left.abs().max() < 1e-10
    mass = weighted_mass(batch.u, dx)
    if velocity_scale == 0.0:
        torch.testing.assert_close(mass, mass[:, :1].expand_as(mass), rtol=0, atol=1e-13)
    attributes = problem.attributes(settings)
    assert {"pde", "boundary", "solver"} <= set(attributes)
    assert all(isinstance(v, (str, int, float)) for v in attributes.values())


def test_recipe_rejects_a_speed_range_upside_down():
    (problem,) = wave.PROBLEMS
    with pytest.raises(ValueError, match="c_max must be >= c_min"):
        problem.generate([1], problem.settings(nx=17, c_min=2.0, c_max=1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    grid = Grid1D(33)
    u0, v0 = random_state(33)
    cpu = wave.solve_wave(u0, v0, grid, 1.3, [0.0, 0.5, 2.0])
    gpu = wave.solve_wave(u0.cuda(), v0.cuda(), grid, 1.3, [0.0, 0.5, 2.0])
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10)


def test_a_per_sample_flux_with_one_nonzero_sample_is_refused():
    """One sample with ``du/dx = 0.5`` at the right wall among insulated ones is not homogeneous."""
    flux = torch.tensor([0.0, 0.5], dtype=F64)
    with pytest.raises(ValueError, match=r"only homogeneous Neumann .* Neumann\.right="):
        wave.solve_wave(
            torch.zeros(2, 17), torch.zeros(2, 17), Grid1D(17), 1.0, [0.0, 1.0], Neumann(0.0, flux)
        )


def test_a_cell_grid_is_refused():
    with pytest.raises(ValueError, match=r"non-periodic node grid .* kind='cell'"):
        wave.solve_wave(
            torch.zeros(2, 17), torch.zeros(2, 17), Grid1D(17, kind="cell"), 1.0, [0.0, 1.0]
        )


RECIPE_BAD_SETTINGS = {
    "nt-one": (dict(nt=1), r"nt must be an integer >= 2, got 1"),
    "modes-zero": (dict(modes=0), r"modes must be an integer >= 1, got 0"),
    "velocity-scale-negative": (dict(velocity_scale=-0.5), r"velocity_scale must be .* >= 0"),
}


@pytest.mark.parametrize("change", RECIPE_BAD_SETTINGS.values(), ids=RECIPE_BAD_SETTINGS.keys())
def test_recipe_refuses_bad_settings_by_name(change):
    overrides, match = change
    (problem,) = wave.PROBLEMS
    with pytest.raises(ValueError, match=match):
        problem.generate([1], problem.settings(nx=17, **overrides))


def test_recipe_walls_and_default_speed():
    """Insulated walls; by default every sample moves at c = 1 (``t_end`` = two crossings)."""
    (problem,) = wave.PROBLEMS
    settings = problem.settings(nx=17, nt=3)
    assert problem.boundary(settings) == Neumann(0.0, 0.0)
    batch = problem.generate([4, 5, 6], settings)
    assert torch.equal(batch.params["c"], torch.ones(3, dtype=F64))


def test_recipe_draws_each_sample_from_its_own_seed():
    """Sample i redrawn by hand from ``pdes.problems.generator(seed_i)`` in the documented
    order (c, displacement modes, velocity modes), then advanced with the continuous standing
    waves ``(a_j cos ω_j t + b_j sin(ω_j t)/ω_j) cos(jπx)``, ``ω_j = cjπ``, and ``a₀ + b₀t``."""
    (problem,) = wave.PROBLEMS
    modes, decay, amplitude, scale, t_end = 3, 1.0, 2.0, 0.5, 0.5
    settings = problem.settings(
        nx=129,
        nt=2,
        t_end=t_end,
        c_min=0.5,
        c_max=2.0,
        modes=modes,
        decay=decay,
        amplitude=amplitude,
        velocity_scale=scale,
    )
    seeds = [7, 3, 11]
    batch = problem.generate(seeds, settings)
    x = torch.linspace(0.0, 1.0, 129, dtype=F64)
    j = torch.arange(1, modes + 1, dtype=F64)
    for i, seed in enumerate(seeds):
        gen = problems.generator(seed)
        c = 0.5 + 1.5 * torch.rand((), generator=gen, dtype=F64)
        a = torch.randn(2, modes, generator=gen, dtype=F64)[0] * amplitude / j**decay
        a0 = torch.randn((), generator=gen, dtype=F64) * amplitude
        b = torch.randn(2, modes, generator=gen, dtype=F64)[0] * scale / j**decay
        b0 = torch.randn((), generator=gen, dtype=F64) * scale
        torch.testing.assert_close(batch.params["c"][i], c, rtol=1e-15, atol=0)
        omega = c * j * math.pi
        shapes = torch.cos(math.pi * j[:, None] * x[None, :])
        start = a0 + a @ shapes
        end = (
            a0
            + b0 * t_end
            + (a * torch.cos(omega * t_end) + b * torch.sin(omega * t_end) / omega) @ shapes
        )
        torch.testing.assert_close(batch.u[i, 0, 1:-1], start[1:-1], rtol=0, atol=1e-13)
        torch.testing.assert_close(batch.u[i, 1], end, rtol=0, atol=2e-3)


def test_discrete_energy_refuses_fields_on_another_number_of_nodes():
    """``v ≡ 1`` (energy ½) on 17 nodes read with a 9-node grid gave 1.0."""
    u, v = torch.zeros(1, 17, dtype=torch.float64), torch.ones(1, 17, dtype=torch.float64)
    assert wave.discrete_energy(u, v, Grid1D(17), 1.0).item() == pytest.approx(0.5, rel=1e-15)
    with pytest.raises(ValueError, match=r"^u must have 9 entries along its last axis"):
        wave.discrete_energy(u, v[:, :9], Grid1D(9), 1.0)
    with pytest.raises(ValueError, match=r"^v must have 9 entries along its last axis.*\(1, 17\)"):
        wave.discrete_energy(u[:, :9], v, Grid1D(9), 1.0)


def test_discrete_energy_refuses_what_is_not_a_grid_and_a_v_that_is_not_a_tensor():
    u = torch.ones(1, 9, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^grid must be a pdes\.Grid1D, got <class 'NoneType'>$"):
        wave.discrete_energy(u, u, None, 1.0)
    with pytest.raises(
        TypeError, match=r"^v must be a torch\.Tensor of shape \(\.\.\., 9\), got <class 'list'>$"
    ):
        wave.discrete_energy(u, [[1.0] * 9], Grid1D(9), 1.0)
    with pytest.raises(
        ValueError,
        match=r"^v must have 9 entries along its last axis to match the grid, got shape \(1, 8\)$",
    ):
        wave.discrete_energy(u, u[:, :8], Grid1D(9), 1.0)
