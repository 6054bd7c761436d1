"""Heat solver: convergence to exact solutions, boundary values, mass balance, bad input, recipe."""

import math

import pytest
import torch

from pdes import Dirichlet, Grid1D, Grid2D, Neumann, Periodic, heat
from pdes.problems import Problem
from pdes.tracer import solve_tracer
from pdes.verification import convergence

F64 = torch.float64


def smooth_fields(n: int, batch: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0.0, 1.0, n, dtype=F64)
    a = torch.randn(batch, 4, generator=gen, dtype=F64)
    j = torch.arange(1, 5, dtype=F64)
    return (a[:, :, None] * torch.cos(math.pi * j[None, :, None] * x) / j[:, None] ** 2).sum(1)


def stencil_left(u: torch.Tensor, dx: float) -> torch.Tensor:
    return (-3.0 * u[..., 0] + 4.0 * u[..., 1] - u[..., 2]) / (2.0 * dx)


def stencil_right(u: torch.Tensor, dx: float) -> torch.Tensor:
    return (3.0 * u[..., -1] - 4.0 * u[..., -2] + u[..., -3]) / (2.0 * dx)


# Orders: the least-squares slope over 17..129 nodes; the asymptotic value is 2 and the
# coarsest pair already sits within 0.08 of it, so 0.15 below 2 only fails on a lost order.
@pytest.mark.parametrize("case", heat.EXACT_CASES, ids=lambda c: c.name)
def test_exact_case_converges_at_its_order(case):
    study = convergence(case)
    assert study.order >= case.order - 0.15, (study.errors, study.orders)
    assert study.errors[-1] < 1e-3


def test_dirichlet_outputs_hold_prescribed_values_exactly():
    grid = Grid1D(33)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    scale = torch.tensor([1.0, -2.0, 0.5], dtype=F64)

    def left(s):
        return scale * math.cos(3.0 * s)

    def right(s):
        return 1.0 + scale * s**2

    u = heat.solve_heat(smooth_fields(33), grid, 0.1, t, Dirichlet(left, right))
    for k, s in enumerate(t.tolist()):
        assert torch.equal(u[:, k, 0], left(s))
        assert torch.equal(u[:, k, -1], right(s))


def test_constant_dirichlet_keeps_the_linear_steady_state():
    grid = Grid1D(21, -1.0, 2.0)
    x = grid.coordinates()
    steady = torch.stack([3.0 - 0.5 * (x + 1.0), -1.0 + 2.0 * (x + 1.0)])
    bc = Dirichlet(torch.tensor([3.0, -1.0], dtype=F64), torch.tensor([1.5, 5.0], dtype=F64))
    u = heat.solve_heat(steady, grid, 0.3, [0.0, 0.7, 5.0], bc)
    torch.testing.assert_close(u, steady[:, None].expand_as(u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("constant", [False, True], ids=["flux(t)", "constant-flux"])
def test_neumann_outputs_meet_the_one_sided_stencil(constant):
    grid = Grid1D(41)
    t = torch.linspace(0.0, 1.0, 6, dtype=F64)
    if constant:
        bc = Neumann(-0.7, torch.tensor([2.0, 0.0, -3.0], dtype=F64))
    else:
        bc = Neumann(lambda s: 0.3 * math.cos(s), lambda s: 5.0 * math.sin(math.pi * s))
    u = heat.solve_heat(smooth_fields(41), grid, 0.05, t, bc)
    for k, s in enumerate(t.tolist()):
        g_left, g_right = bc.values(s, 3)
        torch.testing.assert_close(stencil_left(u[:, k], grid.dx), g_left, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(stencil_right(u[:, k], grid.dx), g_right, rtol=1e-10, atol=1e-10)


def weighted_mass(u: torch.Tensor, dx: float) -> torch.Tensor:
    """dx·(3/2 u_1 + u_2 + ... + 3/2 u_{N-1}): the left null vector of the Neumann matrix."""
    inner = u[..., 1:-1]
    return dx * (inner.sum(-1) + 0.5 * inner[..., 0] + 0.5 * inner[..., -1])


def test_neumann_mass_changes_by_the_time_integrated_flux():
    """d/dt ∫u = κ(g_R - g_L) with g_L = 0.4, g_R = U sin(πt): exact for the weighted sum."""
    kappa, amplitude = 0.1, 5.0
    t = torch.linspace(0.0, 1.5, 4, dtype=F64)
    bc = Neumann(0.4, lambda s: amplitude * math.sin(math.pi * s))
    inflow = kappa * (amplitude * (1.0 - torch.cos(math.pi * t)) / math.pi - 0.4 * t)
    gaps = []
    for n in (33, 65, 129):
        grid = Grid1D(n)
        u = heat.solve_heat(smooth_fields(n), grid, kappa, t, bc)
        weighted = weighted_mass(u, grid.dx)
        change = weighted - weighted[:, :1]
        torch.testing.assert_close(change, inflow.expand(3, -1), rtol=0, atol=1e-9)
        trapezoid = grid.integrate(u)
        gaps.append((trapezoid - trapezoid[:, :1] - inflow).abs().max().item())
    # The trapezoid integral differs by the second-order quadrature error: gaps shrink ~4x.
    assert gaps[0] / gaps[1] > 3.5 and gaps[1] / gaps[2] > 3.5, gaps


def test_neumann_constant_flux_mass_grows_linearly_to_round_off():
    grid, kappa = Grid1D(25), 0.2
    t = torch.tensor([0.0, 0.3, 1.0, 4.0], dtype=F64)
    u = heat.solve_heat(smooth_fields(25), grid, kappa, t, Neumann(-1.0, 2.0))
    weighted = weighted_mass(u, grid.dx)
    expected = kappa * (2.0 - -1.0) * t
    torch.testing.assert_close(
        weighted - weighted[:, :1], expected.expand(3, -1), atol=1e-11, rtol=0
    )


def test_periodic_conserves_the_mean_to_round_off():
    grid = Grid1D(48, 0.0, 2.0, periodic=True)
    gen = torch.Generator().manual_seed(1)
    u0 = torch.randn(4, 48, generator=gen, dtype=F64)
    kappa = torch.tensor([0.01, 0.1, 1.0, 3.0], dtype=F64)
    u = heat.solve_heat(u0, grid, kappa, [0.0, 0.1, 2.0], Periodic())
    means = u.mean(-1)
    torch.testing.assert_close(means, means[:, :1].expand_as(means), rtol=0, atol=1e-14)
    assert torch.equal(u[:, 0], u0)
    assert (u[:, -1].std(-1) < u0.std(-1)).all()


def test_per_sample_dirichlet_values_with_a_zero_sample_keep_their_steady_states():
    """Walls zero for one sample only: the other sample's walls still drive its solution."""
    grid = Grid1D(21)
    x = grid.coordinates()
    steady = torch.stack([torch.zeros_like(x), 1.0 + 3.0 * x])
    bc = Dirichlet(torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([0.0, 4.0], dtype=F64))
    u = heat.solve_heat(steady, grid, 0.3, [0.0, 0.7, 5.0], bc)
    torch.testing.assert_close(u, steady[:, None].expand_as(u), rtol=0, atol=1e-12)


def test_one_sided_flux_is_exact_for_quadratics():
    grid = Grid1D(9, -1.0, 2.0)
    x = grid.coordinates()
    u = torch.stack([2.0 * x**2 - 3.0 * x + 1.0, -(x**2) + 0.5])
    left, right = heat.one_sided_flux(u, grid.dx)
    torch.testing.assert_close(left, torch.tensor([-7.0, 2.0], dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(right, torch.tensor([5.0, -4.0], dtype=F64), rtol=0, atol=1e-12)


def test_neumann_mass_integrates_linear_fields_exactly():
    """The weights (3/2, 1, …, 1, 3/2)·dx on the interior nodes are symmetric and sum to the
    length, so they integrate ``a + bx`` exactly: ``a L + b (x₁² − x₀²)/2``."""
    grid = Grid1D(11, -1.0, 2.0)
    x = grid.coordinates()
    u = torch.stack([torch.full_like(x, 2.5), 3.0 * x - 1.0])
    expected = torch.tensor([2.5 * 3.0, 1.5 * (4.0 - 1.0) - 3.0], dtype=F64)
    torch.testing.assert_close(heat.neumann_mass(u, grid), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_modes_meet_their_boundary_kind(seed):
    """Sine series vanish at both ends, cosine series have zero slope there (the one-sided
    stencil sees only its O(dx²) error on 801 nodes), Fourier series are periodic."""
    x = torch.linspace(2.0, 4.0, 801, dtype=F64)
    dx = float(x[1] - x[0])
    gen = torch.Generator().manual_seed(seed)
    fields = {k: heat.random_modes(gen, x, k, 8, 2.0, 1.0) for k in ("dirichlet", "neumann")}
    assert fields["dirichlet"][[0, -1]].abs().max() < 1e-14
    assert fields["dirichlet"].abs().max() > 0.1
    slopes = torch.stack(heat.one_sided_flux(fields["neumann"], dx))
    assert slopes.abs().max() < 1e-3, slopes
    assert fields["neumann"].std() > 0.05
    periodic = heat.random_modes(gen, x[:-1], "periodic", 8, 2.0, 1.0)
    assert abs(periodic[0] - (2 * periodic[-1] - periodic[-2])) < 1e-3


def test_per_sample_kappa_matches_separate_solves():
    grid = Grid1D(30)
    u0 = smooth_fields(30, batch=2)
    bc = Neumann(0.0, lambda s: torch.tensor([1.0, -2.0], dtype=F64) * math.sin(s))
    kappa = torch.tensor([0.05, 0.5], dtype=F64)
    both = heat.solve_heat(u0, grid, kappa, [0.2, 1.0], bc)
    for i in range(2):
        one = Neumann(0.0, lambda s, i=i: [1.0, -2.0][i] * math.sin(s))
        alone = heat.solve_heat(u0[i], grid, float(kappa[i]), [0.2, 1.0], one)
        torch.testing.assert_close(both[i], alone[0], rtol=0, atol=1e-12)


def test_first_output_is_u0_at_time_zero():
    grid = Grid1D(17)
    u0 = smooth_fields(17)
    u = heat.solve_heat(u0, grid, 0.1, [0.0, 0.5], Dirichlet(u0[:, 0], u0[:, -1]))
    assert torch.equal(u[:, 0], u0)


BAD_INPUT = {
    "kappa-zero": (dict(kappa=0.0), ValueError, "kappa"),
    "kappa-negative": (dict(kappa=-1.0), ValueError, "kappa"),
    "kappa-nan": (dict(kappa=float("nan")), ValueError, "kappa"),
    "kappa-sample-negative": (dict(kappa=torch.tensor([0.1, -0.1])), ValueError, "kappa"),
    "kappa-wrong-count": (dict(kappa=torch.tensor([0.1, 0.2, 0.3])), ValueError, "kappa"),
    "u0-nan": (dict(u0=torch.full((2, 17), float("nan"))), ValueError, "u0"),
    "u0-shape": (dict(u0=torch.zeros(2, 16)), ValueError, "u0"),
    "u0-3d": (dict(u0=torch.zeros(2, 1, 17)), ValueError, "u0"),
    "bc-robin": (dict(bc="robin"), ValueError, "bc"),
    "bc-periodic-on-bounded-grid": (dict(bc="periodic"), ValueError, "grid"),
    "dirichlet-on-periodic-grid": (dict(grid=Grid1D(16, periodic=True)), ValueError, "grid"),
    "times-decreasing": (dict(times=[0.5, 0.1]), ValueError, "times"),
    "times-negative": (dict(times=[-0.1, 0.1]), ValueError, "times"),
    "max-step": (dict(max_step=0.0), ValueError, "max_step"),
    "neumann-values-shape": (dict(bc=Neumann(torch.zeros(3), 0.0)), ValueError, "Neumann.left"),
    "neumann-three-nodes": (
        dict(grid=Grid1D(3), u0=torch.zeros(2, 3), bc="neumann"),
        ValueError,
        "at least 4 nodes",
    ),
    "cell-grid": (dict(grid=Grid1D(17, kind="cell")), ValueError, "non-periodic node grid"),
    "kappa-steady-long-before": (dict(kappa=1e13), ValueError, "kappa"),
    "max-step-periodic": (
        dict(grid=Grid1D(16, periodic=True), u0=torch.zeros(2, 16), bc="periodic", max_step=-1.0),
        ValueError,
        "max_step",
    ),
}


@pytest.mark.parametrize("change", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_rejected_with_a_named_error(change):
    overrides, error, word = change
    arguments = dict(
        u0=torch.zeros(2, 17, dtype=F64),
        grid=Grid1D(17),
        kappa=0.1,
        times=[0.0, 1.0],
        bc="dirichlet",
    )
    arguments.update(overrides)
    with pytest.raises(error, match=word):
        heat.solve_heat(**arguments)


@pytest.mark.parametrize("bc", ["neumann", "dirichlet", "periodic"])
def test_recipe_generates_reproducible_samples_meeting_the_boundary(bc):
    (problem,) = heat.PROBLEMS
    assert isinstance(problem, Problem)
    settings = problem.settings(bc=bc, nx=33, nt=5)
    batch = problem.generate([11, 12, 13], settings)
    again = problem.generate([11, 12, 13], settings)
    assert torch.equal(batch.u, again.u)
    alone = problem.generate([12], settings)
    torch.testing.assert_close(alone.u[0], batch.u[1], rtol=0, atol=1e-12)
    assert not torch.allclose(batch.u[0], batch.u[1])

    coords = problem.coordinates(settings)
    assert batch.u.shape == (3, coords["t"].size, coords["x"].size)
    assert batch.u.dtype == F64 and coords["t"][0] == 0.0
    assert torch.equal(batch.params["kappa"], torch.full((3,), 0.01, dtype=F64))
    attributes = problem.attributes(settings)
    assert {"pde", "boundary", "solver"} <= set(attributes)
    assert all(isinstance(v, (str, int, float)) for v in attributes.values())

    t = torch.as_tensor(coords["t"])
    dx = float(coords["x"][1] - coords["x"][0])
    if bc == "neumann":
        right = settings["flux_amplitude"] * torch.sin(math.pi * t)
        torch.testing.assert_close(stencil_left(batch.u, dx), torch.zeros(3, 5, dtype=F64))
        torch.testing.assert_close(stencil_right(batch.u, dx), right.expand(3, -1))
    elif bc == "dirichlet":
        assert (batch.u[..., 0] == 0).all() and (batch.u[..., -1] == 0).all()


def test_recipe_rejects_unknown_boundary_names():
    (problem,) = heat.PROBLEMS
    with pytest.raises(ValueError, match="bc"):
        problem.generate([1], problem.settings(bc="robin"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    grid = Grid1D(33)
    bc = Neumann(0.0, lambda s: 5.0 * math.sin(math.pi * s))
    u0 = smooth_fields(33)
    cpu = heat.solve_heat(u0, grid, 0.1, [0.0, 0.5, 1.0], bc)
    gpu = heat.solve_heat(u0.cuda(), grid, 0.1, [0.0, 0.5, 1.0], bc)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case, whole_grid", [(heat._run_dirichlet, 2.8), (heat._run_neumann, 3.3)])
def test_time_order_is_four_away_from_the_walls_and_lower_over_the_whole_grid(case, whole_grid):
    """What the module docstring states: time-dependent boundary data, 65 nodes, steps 0.05 →
    0.0125 against a run with 1/6400: order >= 3.8 on the middle half, >= ``whole_grid`` (and
    below 3.9, the boundary layer) over the whole grid."""
    grid = Grid1D(65)
    exact = case(65).exact
    bc = _boundary_of(case, grid)
    reference = heat.solve_heat(exact[:, 0], grid, heat._CASE_KAPPA, heat._CASE_TIMES, bc, 1 / 6400)
    whole, middle = [], []
    for step in (0.05, 0.025, 0.0125):
        u = heat.solve_heat(exact[:, 0], grid, heat._CASE_KAPPA, heat._CASE_TIMES, bc, step)
        error = (u - reference).abs()
        whole.append(error.max().item())
        middle.append(error[..., 16:49].max().item())
    for errors, low in ((middle, 3.8), (whole, whole_grid)):
        orders = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]
        assert min(orders) >= low, (errors, orders)
    assert min(math.log2(a / b) for a, b in zip(whole[:-1], whole[1:], strict=True)) < 3.9


def _boundary_of(case, grid: Grid1D):
    """The time-dependent boundary condition of the exact case ``case`` on ``grid``."""
    k, a = heat._CASE_KAPPA, heat._CASE_A
    if case is heat._run_dirichlet:
        b = heat._CASE_B - 0.5 * math.pi
        return Dirichlet(
            *(lambda s, p=p: torch.exp(-k * a**2 * s) * torch.cos(a * p + b) for p in (0.0, 1.0))
        )
    b = heat._CASE_B
    return Neumann(
        *(lambda s, p=p: -a * torch.exp(-k * a**2 * s) * torch.sin(a * p + b) for p in (0.0, 1.0))
    )


def test_sine_operator_is_the_orthonormal_type_one_sine_transform():
    """``forward`` is ``√(2/(m+1)) Σ_j u_j sin(πjk/(m+1))`` (the sign the docstring states), its
    own inverse, with eigenvalues ``−4/dx² sin²(πk/(2(m+1)))`` of the hand-built (1, −2, 1)/dx²
    matrix."""
    m, dx = 7, 0.2
    j = torch.arange(1, m + 1, dtype=F64)
    dense = math.sqrt(2.0 / (m + 1)) * torch.sin(math.pi * j[:, None] * j[None, :] / (m + 1))
    u = torch.randn(2, m, dtype=F64, generator=torch.Generator().manual_seed(3))
    operator = heat.sine_operator(m, dx)
    torch.testing.assert_close(operator.forward(u), u @ dense.T, rtol=0, atol=1e-13)
    torch.testing.assert_close(operator.inverse(u @ dense.T), u, rtol=0, atol=1e-13)
    expected = -4.0 / dx**2 * torch.sin(math.pi * j / (2 * (m + 1))) ** 2
    torch.testing.assert_close(operator.eigenvalues, expected, rtol=0, atol=1e-12)
    off = torch.ones(m - 1, dtype=F64)
    laplacian = (torch.diag(off, 1) + torch.diag(off, -1) - 2.0 * torch.eye(m, dtype=F64)) / dx**2
    torch.testing.assert_close(
        dense.T @ torch.diag(expected) @ dense, laplacian, atol=1e-11, rtol=0
    )


def test_one_large_per_sample_kappa_is_refused():
    """The steady-long-before check looks at the largest diffusivity of the batch."""
    with pytest.raises(ValueError, match=r"kappa up to 1e\+13 is too large"):
        heat.solve_heat(
            torch.zeros(2, 17, dtype=F64),
            Grid1D(17),
            torch.tensor([0.1, 1e13]),
            [0.0, 1.0],
            "dirichlet",
        )


def test_recipe_kappa_option_reaches_the_solver_and_the_parameters():
    """Neumann recipe with κ = 0.2: the weighted mass grows by κ·U(1 − cos πt)/π (insulated left
    end, flux U sin πt at the right), and ``params['kappa']`` records 0.2."""
    (problem,) = heat.PROBLEMS
    settings = problem.settings(bc="neumann", nx=33, nt=5, kappa=0.2, flux_amplitude=3.0)
    batch = problem.generate([4, 5], settings)
    assert torch.equal(batch.params["kappa"], torch.full((2,), 0.2, dtype=F64))
    t = torch.as_tensor(problem.coordinates(settings)["t"])
    mass = weighted_mass(batch.u, 1.0 / 32)
    inflow = 0.2 * 3.0 * (1.0 - torch.cos(math.pi * t)) / math.pi
    torch.testing.assert_close(mass - mass[:, :1], inflow.expand(2, -1), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["dirichlet", "neumann", "periodic"])
def test_random_modes_scale_with_the_amplitude(kind):
    """Every coefficient, the constant included, is a standard normal times ``amplitude``."""
    x = torch.linspace(0.0, 1.0, 17, dtype=F64)
    one = heat.random_modes(torch.Generator().manual_seed(5), x, kind, 4, 2.0, 1.0)
    three = heat.random_modes(torch.Generator().manual_seed(5), x, kind, 4, 2.0, 3.0)
    torch.testing.assert_close(three, 3.0 * one, rtol=1e-14, atol=0)


def test_recipe_refuses_a_single_output_time():
    (problem,) = heat.PROBLEMS
    with pytest.raises(ValueError, match=r"^nt must be an integer >= 2, got 1$"):
        problem.generate([1], problem.settings(nt=1, nx=17))


@pytest.mark.parametrize("bc", ["dirichlet", "neumann", "periodic"])
def test_a_single_output_at_time_zero_is_u0(bc):
    """``times = [0]``: nothing to integrate; the interior is ``u0`` (the walls follow the bc)."""
    n = 16 if bc == "periodic" else 17
    grid = Grid1D(n, periodic=bc == "periodic")
    u0 = smooth_fields(n, batch=2)
    u = heat.solve_heat(u0, grid, 0.1, [0.0], bc)
    assert u.shape == (2, 1, n)
    assert torch.equal(u[:, 0, 1:-1], u0[:, 1:-1])


def test_neumann_mass_refuses_a_field_on_another_number_of_nodes():
    """``u ≡ 1`` on 17 nodes read with a 9-node grid gave 2.0 (the mass is 1)."""
    u = torch.ones(1, 17, dtype=torch.float64)
    assert heat.neumann_mass(u, Grid1D(17)).item() == pytest.approx(1.0, rel=1e-15)
    with pytest.raises(ValueError, match=r"^u must have 9 entries along its last axis.*\(1, 17\)"):
        heat.neumann_mass(u, Grid1D(9))
    with pytest.raises(TypeError, match=r"^u must be a torch.Tensor"):
        heat.neumann_mass([1.0] * 9, Grid1D(9))


@pytest.mark.parametrize("grid", [None, 9, "Grid1D(9)"])
def test_neumann_mass_refuses_what_is_not_a_grid_naming_it(grid):
    with pytest.raises(
        TypeError, match=r"^grid must be a pdes\.Grid1D, got <class '(NoneType|int|str)'>$"
    ):
        heat.neumann_mass(torch.ones(1, 9, dtype=torch.float64), grid)


def test_neumann_mass_is_the_trapezoid_with_half_weights_moved_inwards():
    """Nodes 0..8 on [0, 1] (dx = 1/8), u = node index: dx·(3/2·1 + 2 + … + 6 + 3/2·7) = 4."""
    u = torch.arange(9, dtype=torch.float64)
    assert heat.neumann_mass(u, Grid1D(9)).item() == pytest.approx(4.0, rel=1e-15)


def test_the_documented_2d_route_is_second_order():
    """``solve_tracer(c0, grid, kappa, t, (0, 0))`` on a periodic box against the exact decaying
    mode ``cos(2πx) sin(πy) e^{-κ(4π² + π²)t}`` on [0, 1) × [0, 2)."""
    kappa, t = 0.01, torch.tensor([0.0, 0.5], dtype=F64)
    errors = []
    for n in (16, 32):
        grid = Grid2D(Grid1D(n, 0.0, 1.0, periodic=True), Grid1D(n, 0.0, 2.0, periodic=True))
        x, y = grid.coordinates()
        decay = torch.exp(-kappa * 5 * math.pi**2 * t)[:, None, None]
        exact = (torch.cos(2 * math.pi * x) * torch.sin(math.pi * y) * decay)[None]
        numerical = solve_tracer(exact[:, 0], grid, kappa, t, (0.0, 0.0))
        errors.append(float((numerical - exact).abs().max()))
    assert math.log2(errors[0] / errors[1]) > 1.9, errors


def test_neumann_weights_are_the_weighted_mass_row():
    """dx·(0, 3/2, 1, …, 1, 3/2, 0) by hand, and its sum against a field is neumann_mass."""
    grid = Grid1D(9)
    expected = torch.tensor([0, 1.5, 1, 1, 1, 1, 1, 1.5, 0], dtype=F64) / 8
    assert torch.equal(heat.neumann_weights(grid), expected)
    u = smooth_fields(9)
    torch.testing.assert_close(
        (u * heat.neumann_weights(grid)).sum(-1), weighted_mass(u, grid.dx), rtol=0, atol=1e-15
    )
    with pytest.raises(TypeError, match=r"^grid must be a pdes\.Grid1D"):
        heat.neumann_weights(9)
    for other in (Grid1D(9, periodic=True), Grid1D(8, kind="cell")):  # both gave weights
        with pytest.raises(ValueError, match=r"^grid must be a non-periodic node grid"):
            heat.neumann_weights(other)
        with pytest.raises(ValueError, match=r"^grid must be a non-periodic node grid"):
            heat.neumann_mass(torch.ones(other.n, dtype=F64), other)
    with pytest.raises(TypeError, match=r"^dtype must be a floating-point torch\.dtype"):
        heat.neumann_weights(grid, dtype="float32")
