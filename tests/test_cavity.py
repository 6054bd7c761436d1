"""Lid-driven cavity: Ghia's benchmark, exact walls, incompressibility, Poisson, recipe, errors."""

import math
import re

import h5py
import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from pdes import Grid2D, SolverError, cavity
from pdes.grid import Grid1D
from pdes.verification import convergence

F64 = torch.float64


@pytest.fixture(scope="module")
def steady():
    """Re = 100 on 64² cells for U = 1 (ν = 0.01) and U = 2 (ν = 0.02): the same flow, scaled."""
    grid = Grid2D.square(65)
    lid = torch.tensor([1.0, 2.0], dtype=F64)
    w, vx, vy = cavity.steady_cavity(grid, 100.0, lid, tol=1e-3)
    return grid, lid, w, vx, vy


def centrelines(grid, lid, vx, vy, sample):
    """Cubic splines of u(0.5, y)/U and v(x, 0.5)/U (0.5 is a node of the 65-node grid)."""
    middle = (grid.x.n - 1) // 2
    coordinate = grid.x.coordinates().numpy()
    u = CubicSpline(coordinate, (vx[sample, middle, :] / lid[sample]).numpy())
    v = CubicSpline(coordinate, (vy[sample, :, middle] / lid[sample]).numpy())
    return u, v


@pytest.mark.parametrize("sample", [0, 1])
def test_steady_centrelines_match_ghia(steady, sample):
    grid, lid, _, vx, vy = steady
    u, v = centrelines(grid, lid, vx, vy, sample)
    ghia = {key: np.array(value) for key, value in cavity.GHIA_RE100.items()}
    assert np.abs(u(ghia["y"]) - ghia["u"]).max() <= 0.02
    assert np.abs(v(ghia["x"]) - ghia["v"]).max() <= 0.02


@pytest.mark.parametrize("sample", [0, 1])
def test_steady_extrema_match_ghia(steady, sample):
    grid, lid, _, vx, vy = steady
    u, v = centrelines(grid, lid, vx, vy, sample)
    fine = np.linspace(0.0, 1.0, 4001)
    u_fine, v_fine = u(fine), v(fine)
    # Ghia's tabulated extrema and their positions (Tables I and II).
    for value, position, reference, where in [
        (u_fine.min(), fine[u_fine.argmin()], -0.21090, 0.4531),
        (v_fine.max(), fine[v_fine.argmax()], 0.17527, 0.2344),
        (v_fine.min(), fine[v_fine.argmin()], -0.24533, 0.8047),
    ]:
        assert abs(value - reference) <= 0.03 * abs(reference), (value, reference)
        assert abs(position - where) <= 0.03, (position, where)


def test_steady_state_is_steady_and_scales_with_the_lid(steady):
    grid, lid, w, vx, vy = steady
    # Same Re: velocity ∝ U, vorticity ∝ U/L, time ∝ L/U; with U = 2 the steps halve exactly.
    for field in (w, vx, vy):
        torch.testing.assert_close(field[1] / 2.0, field[0], rtol=0, atol=1e-10)
    more, _, _ = cavity.solve_cavity(grid, [0.0, 1.0], 100.0, lid, w0=w)
    assert (more[:, -1] - w)[:, 1:-1, 1:-1].abs().max() < 1e-2 * w[:, 1:-1, 1:-1].abs().max()


def walls(field):
    """The four walls of ``field (..., n, n)``: left, right, bottom, top."""
    return field[..., 0, :], field[..., -1, :], field[..., :, 0], field[..., :, -1]


@pytest.fixture(scope="module")
def unsteady():
    grid = Grid2D.square(17)
    X, Y = grid.coordinates()
    bump = 5.0 * torch.sin(math.pi * X) * torch.sin(2.0 * math.pi * Y) * torch.exp(X)
    w0 = torch.stack([bump, -2.0 * bump.T])
    lid = torch.tensor([0.7, 1.3], dtype=F64)
    t = torch.tensor([0.0, 0.05, 0.3, 0.3, 1.0], dtype=F64)
    return grid, lid, t, cavity.solve_cavity(grid, t, torch.tensor([50.0, 400.0]), lid, w0=w0)


def test_no_slip_and_lid_exact_at_every_output(unsteady):
    grid, lid, t, (w, vx, vy) = unsteady
    n = grid.x.n
    assert w.shape == vx.shape == vy.shape == (2, t.numel(), n, n)
    zero = torch.zeros(2, t.numel(), n - 1, dtype=F64)
    left, right, bottom, top = walls(vx)
    assert torch.equal(top, lid[:, None, None].expand(2, t.numel(), n))
    assert torch.equal(left[..., :-1], zero) and torch.equal(right[..., :-1], zero)
    assert torch.equal(bottom, torch.zeros_like(bottom))
    for side in walls(vy):
        assert torch.equal(side, torch.zeros_like(side))


def test_streamfunction_wall_vorticity_and_velocity_agree(unsteady):
    grid, lid, t, (w, vx, vy) = unsteady
    h = grid.x.dx
    for k in range(t.numel()):
        psi = cavity.streamfunction(w[:, k], grid)
        for side in walls(psi):
            assert torch.equal(side, torch.zeros_like(side))
        # -Δ_h ψ = w on the interior nodes
        laplacian = (
            psi[:, 2:, 1:-1] + psi[:, :-2, 1:-1] + psi[:, 1:-1, 2:] + psi[:, 1:-1, :-2]
        ) - 4.0 * psi[:, 1:-1, 1:-1]
        torch.testing.assert_close(-laplacian / h**2, w[:, k, 1:-1, 1:-1], rtol=1e-10, atol=1e-9)
        # Thom: w = -2ψ₁/h² on fixed walls, -2ψ₁/h² - 2U/h on the lid (corners excluded)
        torch.testing.assert_close(w[:, k, 0, 1:-1], -2.0 * psi[:, 1, 1:-1] / h**2)
        torch.testing.assert_close(w[:, k, 1:-1, 0], -2.0 * psi[:, 1:-1, 1] / h**2)
        lid_value = -2.0 * psi[:, 1:-1, -2] / h**2 - 2.0 * lid[:, None] / h
        torch.testing.assert_close(w[:, k, 1:-1, -1], lid_value)
        # u = ψ_y, v = -ψ_x by central differences
        u = (psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) / (2.0 * h)
        v = -(psi[:, 2:, 1:-1] - psi[:, :-2, 1:-1]) / (2.0 * h)
        torch.testing.assert_close(vx[:, k, 1:-1, 1:-1], u, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(vy[:, k, 1:-1, 1:-1], v, rtol=1e-12, atol=1e-12)
        pair = cavity.velocity(psi, grid, lid)
        assert torch.equal(pair[0], vx[:, k]) and torch.equal(pair[1], vy[:, k])


def test_initial_output_is_the_initial_vorticity_and_repeated_times_repeat(unsteady):
    grid, lid, t, (w, vx, vy) = unsteady
    X, Y = grid.coordinates()
    bump = 5.0 * torch.sin(math.pi * X) * torch.sin(2.0 * math.pi * Y) * torch.exp(X)
    assert torch.equal(w[0, 0, 1:-1, 1:-1], bump[1:-1, 1:-1])
    assert torch.equal(w[:, 2], w[:, 3]) and torch.equal(vx[:, 2], vx[:, 3])
    assert not torch.equal(w[:, 1], w[:, 2])


def test_velocity_is_discretely_divergence_free(unsteady):
    grid, _, _, (_, vx, vy) = unsteady
    h = grid.x.dx
    divergence = (
        vx[..., 2:, 1:-1] - vx[..., :-2, 1:-1] + vy[..., 1:-1, 2:] - vy[..., 1:-1, :-2]
    ) / (2.0 * h)
    scale = (vx.abs() + vy.abs()).max() / h
    assert divergence.abs().max() <= 1e-13 * scale


def test_batch_matches_single_samples(unsteady):
    grid, lid, t, (w, _, _) = unsteady
    X, Y = grid.coordinates()
    bump = 5.0 * torch.sin(math.pi * X) * torch.sin(2.0 * math.pi * Y) * torch.exp(X)
    single, _, _ = cavity.solve_cavity(grid, t, 400.0, 1.3, w0=-2.0 * bump.T)
    torch.testing.assert_close(single[0], w[1], rtol=1e-12, atol=1e-10)


def test_poisson_is_exact_for_cubics():
    grid = Grid2D.square(21, 0.0, 2.0)
    X, Y = grid.coordinates()
    p, q = X * (2.0 - X) * (1.0 + X), Y * (2.0 - Y) * (3.0 - 2.0 * Y)
    dp2, dq2 = 2.0 - 6.0 * X, -14.0 + 12.0 * Y  # p'' and q''
    psi = p * q
    w = -(dp2 * q + p * dq2)
    torch.testing.assert_close(cavity.streamfunction(w, grid)[0], psi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", cavity.EXACT_CASES, ids=lambda c: c.name)
def test_poisson_converges_at_second_order(case):
    study = convergence(case)
    assert study.order >= case.order - 0.05, (study.errors, study.orders)
    assert study.errors[-1] < 2e-3  # of fields up to e² ≈ 7.4


def test_upwind_matches_central_on_a_smooth_flow():
    grid = Grid2D.square(33)
    t = [0.0, 0.5]
    central, _, _ = cavity.solve_cavity(grid, t, 10.0)
    upwind, _, _ = cavity.solve_cavity(grid, t, 10.0, advection="upwind")
    difference = (central - upwind)[:, -1, 1:-1, 1:-1].abs().max()
    assert 0 < difference < 0.02 * central[:, -1, 1:-1, 1:-1].abs().max()


def test_upwind_stays_bounded_at_re_1000_on_a_coarse_grid():
    """33² at Re = 1000 (cell Péclet 31) to t = 12: the speed stays near the lid's (it ran away
    to V ≈ 6e5 when the upwind stencil reached Thom's wall values two nodes from a wall)."""
    grid = Grid2D.square(33)
    t = torch.linspace(0.0, 12.0, 4, dtype=F64)
    _, vx, vy = cavity.solve_cavity(grid, t, 1000.0, advection="upwind")
    interior = (vx.abs() + vy.abs())[:, :, 1:-1, 1:-1].amax((-2, -1))
    assert torch.isfinite(vx).all() and torch.isfinite(vy).all()
    assert 0.1 < float(interior[0, -1]) and float(interior.max()) <= 1.05


@pytest.mark.parametrize("n", [5, 6])
def test_upwind_on_grids_without_nodes_three_from_a_wall_is_central(n):
    grid = Grid2D.square(n)
    central = cavity.solve_cavity(grid, [0.0, 0.1], 100.0)
    upwind = cavity.solve_cavity(grid, [0.0, 0.1], 100.0, advection="upwind")
    for a, b in zip(central, upwind, strict=True):
        assert torch.equal(a, b)


def test_a_speed_grown_a_hundredfold_is_reported_as_blowing_up(monkeypatch):
    """Ten times the stability limit from rest: ``V`` runs away from the lid speed 1 until the
    step count passes ``MAX_STEPS``; the error names the growth, not just the count."""
    monkeypatch.setattr(cavity, "SAFETY", 10.0)
    with pytest.raises(SolverError) as caught:
        cavity.solve_cavity(Grid2D.square(9), [0.0, 5.0], 100.0)
    message = str(caught.value)
    assert "blowing up" in message and "more than MAX_STEPS=10000000 steps to go" in message
    grown = re.search(r"grew (\S+)-fold, from 1 at t=0 to (\S+) near", message)
    assert grown and float(grown[1]) == pytest.approx(float(grown[2]), rel=1e-2)
    assert float(grown[1]) > cavity.BLOW_UP


def test_a_fast_lid_needing_too_many_steps_is_no_blow_up(monkeypatch):
    """A lid at 150 from rest: the speed ``V`` starts at 150 and has not grown when the step
    count passes ``MAX_STEPS`` (set to 10 here): too many steps, not a solution blowing up,
    though ``V`` exceeds the 100-fold growth that would mean one from a lid at 1."""
    monkeypatch.setattr(cavity, "MAX_STEPS", 10)
    with pytest.raises(SolverError) as caught:
        cavity.solve_cavity(Grid2D.square(9), [0.0, 1.0], 100.0, lid_velocity=150.0)
    message = str(caught.value)
    assert "the stability limit fell to" in message and "(V=150)" in message
    assert "more than MAX_STEPS=10 steps to go" in message and "blowing up" not in message


def test_stability_limit_is_enforced_for_user_steps():
    grid = Grid2D.square(17)
    limit = float(cavity.stability_limit(grid, 100.0, 1.0)[0])
    nu, h = 0.01, grid.x.dx
    # RK3 needs dt ≤ 2.51 h²/(8ν) on the diffusion eigenvalues alone and dt ≤ √3 h/V on the
    # central advection ones alone (V = U = 1 at rest); the combined limit lies below both.
    diffusion, advection = 2.51 * h**2 / (8.0 * nu), math.sqrt(3.0) * h
    assert 0.45 * min(diffusion, advection) < limit < min(diffusion, advection)
    cavity.solve_cavity(grid, [0.0, 0.2], 100.0, dt=0.99 * limit)
    with pytest.raises(SolverError, match=f"stability limit {limit:.6g}"):
        cavity.solve_cavity(grid, [0.0, 0.2], 100.0, dt=1.01 * limit)
    with pytest.raises(SolverError, match="stability limit"):
        cavity.steady_cavity(grid, 100.0, dt=h**2 * 100.0 / 4.0 * 1.3)


@pytest.mark.parametrize(
    "amplitude, word", [(1e300, "stability limit fell"), (1e308, "NaN or inf")]
)
def test_runaway_initial_vorticity_raises(amplitude, word):
    w0 = torch.full((9, 9), amplitude, dtype=F64)
    with pytest.raises(SolverError, match=word):
        cavity.solve_cavity(Grid2D.square(9), [0.0, 1.0], 100.0, w0=w0)


def test_steps_beyond_the_limit_blow_up_and_raise(monkeypatch):
    """Without the check, twice the limit diverges: the limit is not vacuous, NaN is caught."""
    grid = Grid2D.square(65)
    limit = float(cavity.stability_limit(grid, 100.0)[0])
    monkeypatch.setattr(cavity, "_check_step", lambda *args: None)
    with pytest.raises(SolverError, match="NaN or inf"):
        cavity.solve_cavity(grid, [0.0, 1.0], 100.0, dt=2.0 * limit)


class _Stepped(Exception):
    """Raised by a stand-in step: the step count was accepted and stepping began."""


def test_at_most_ten_million_steps_to_an_output_with_a_given_dt():
    """``dt=1`` from rest at ν = 1 is far beyond the limit: a span of exactly 10⁷ steps passes the
    count check and its first step is refused for ``dt``, one step more is refused for the count."""
    grid = Grid2D.square(9)
    with pytest.raises(SolverError, match="beyond the stability limit"):
        cavity.solve_cavity(grid, [0.0, 10_000_000.0], 1.0, dt=1.0)
    with pytest.raises(SolverError, match="10000001 steps of dt=1 exceed MAX_STEPS=10000000"):
        cavity.solve_cavity(grid, [0.0, 10_000_001.0], 1.0, dt=1.0)


def test_at_most_ten_million_steps_to_an_output_at_the_solver_s_own_step(monkeypatch):
    """From rest the step is ``SAFETY`` of :func:`stability_limit` (speed = the lid's): half a step
    under 10⁷ steps starts stepping, half a step over is refused."""
    grid = Grid2D.square(9)
    step = cavity.SAFETY * float(cavity.stability_limit(grid, 100.0)[0])

    def refuse(*args):
        raise _Stepped

    monkeypatch.setattr(cavity._Cavity, "step", refuse)
    with pytest.raises(_Stepped):
        cavity.solve_cavity(grid, [0.0, (10_000_000 - 0.5) * step], 100.0)
    with pytest.raises(SolverError, match="more than MAX_STEPS=10000000 steps to go"):
        cavity.solve_cavity(grid, [0.0, (10_000_000 + 0.5) * step], 100.0)


def test_steady_gives_up_at_max_time():
    with pytest.raises(SolverError, match="max_time"):
        cavity.steady_cavity(Grid2D.square(9), 100.0, tol=1e-12, max_time=0.05)


BAD_INPUT = {
    "re-zero": (dict(reynolds=0.0), ValueError, "reynolds"),
    "re-negative": (dict(reynolds=torch.tensor([100.0, -1.0])), ValueError, "reynolds"),
    "re-nan": (dict(reynolds=float("nan")), ValueError, "reynolds"),
    "re-text": (dict(reynolds="high"), TypeError, "reynolds"),
    "lid-zero": (dict(lid_velocity=0.0), ValueError, "lid_velocity"),
    "lid-negative": (dict(lid_velocity=-1.0), ValueError, "lid_velocity"),
    "lid-shape": (dict(lid_velocity=torch.ones(2, 2)), ValueError, "lid_velocity"),
    "batch-mismatch": (dict(reynolds=[1.0, 2.0], lid_velocity=[1.0, 2.0, 3.0]), ValueError, "w0"),
    "grid-small": (dict(grid=Grid2D.square(4)), ValueError, "grid.n"),
    "grid-periodic": (dict(grid=Grid2D.square(9, periodic=True)), ValueError, "grid"),
    "grid-cells": (dict(grid=Grid2D.square(9, kind="cell")), ValueError, "grid"),
    "grid-type": (dict(grid=9), TypeError, "grid"),
    "w0-nan": (dict(w0=torch.full((9, 9), float("nan"))), ValueError, "w0"),
    "w0-shape": (dict(w0=torch.zeros(1, 8, 9)), ValueError, "w0"),
    "w0-batch": (dict(reynolds=[1.0, 2.0], w0=torch.zeros(3, 9, 9)), ValueError, "w0"),
    "times-negative": (dict(times=[-1.0, 0.0]), ValueError, "times"),
    "times-decreasing": (dict(times=[0.5, 0.1]), ValueError, "times"),
    "dt-zero": (dict(dt=0.0), ValueError, "dt"),
    "advection": (dict(advection="quick"), ValueError, "advection"),
}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input(name):
    overrides, error, word = BAD_INPUT[name]
    arguments = dict(grid=Grid2D.square(9), times=[0.0, 0.01], reynolds=100.0)
    arguments.update(overrides)
    with pytest.raises(error, match=word):
        cavity.solve_cavity(**arguments)


SMALL = dict(nx=17, t_end=0.2, nt=3)


def test_recipe_samples_are_reproducible_and_differ():
    problem = cavity.CavityProblem()
    settings = problem.settings(**SMALL)
    first = problem.generate([3, 4], settings)
    again = problem.generate([3, 4], settings)
    assert torch.equal(first.u, again.u) and torch.equal(first.fields["vx"], again.fields["vx"])
    lid = first.params["lid_velocity"]
    assert ((lid >= 0.5) & (lid <= 1.5)).all() and lid[0] != lid[1]
    torch.testing.assert_close(first.params["reynolds"], 100.0 * lid, rtol=1e-15, atol=0)
    assert not torch.allclose(first.u[0, -1], first.u[1, -1])
    assert torch.equal(first.fields["vx"][:, :, :, -1], lid[:, None, None].expand(2, 3, 17))
    alone = problem.generate([4], settings)
    torch.testing.assert_close(alone.u[0], first.u[1], rtol=1e-12, atol=1e-10)
    stirred = problem.generate([3], problem.settings(**SMALL, w0_amplitude=2.0))
    assert stirred.u[0, 0, 1:-1, 1:-1].abs().max() > 0.1
    assert first.u[0, 0, 1:-1, 1:-1].abs().max() == 0


def test_recipe_bad_settings():
    problem = cavity.CavityProblem()
    with pytest.raises(ValueError, match="lid_max"):
        problem.generate([1], problem.settings(**SMALL, lid_min=1.0, lid_max=0.5))
    with pytest.raises(ValueError, match="lid_min"):
        problem.generate([1], problem.settings(**SMALL, lid_min=0.0))
    with pytest.raises(ValueError, match="nx"):
        problem.generate([1], problem.settings(**{**SMALL, "nx": 3}))


def test_generate_dataset_writes_the_cavity_recipe(tmp_path):
    from physml.data import generate_dataset

    options = dict(seed=1, chunk=2, progress=False, **SMALL)
    path = generate_dataset("cavity", tmp_path / "cavity.h5", n=3, **options)
    with h5py.File(path) as f:
        assert f["u"].shape == (3, 3, 17, 17)
        assert f["fields/vx"].shape == f["fields/vy"].shape == (3, 3, 17, 17)
        assert f["params/reynolds"].shape == f["params/lid_velocity"].shape == (3,)
        assert f["t"].shape == (3,) and f["x"].shape == (17,) and f["y"].shape == (17,)
        for key in ("pde", "boundary", "solver", "samples"):
            assert key in f.attrs, key
        lid, vx = f["params/lid_velocity"][()], f["fields/vx"][()]
    np.testing.assert_array_equal(vx[:, :, :, -1], np.broadcast_to(lid[:, None, None], (3, 3, 17)))


def _rk4_reference(grid, times, reynolds, lid, w0, substeps):
    """Classical RK4 with many small steps on ``_Cavity.rates`` (not the solver's SSP-RK3)."""
    re = torch.as_tensor(reynolds, dtype=F64).reshape(-1)
    lid_t = torch.as_tensor(lid, dtype=F64).reshape(-1)
    cav = cavity._Cavity(grid, re, lid_t, "central")

    def rates(z):
        return cav.rates(z)[0]

    w = w0[:, 1:-1, 1:-1].clone()
    out, t = [], 0.0
    for target in times:
        span = target - t
        if span > 0:
            h = span / substeps
            for _ in range(substeps):
                k1 = rates(w)
                k2 = rates(w + 0.5 * h * k1)
                k3 = rates(w + 0.5 * h * k2)
                k4 = rates(w + h * k3)
                w = w + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            t = target
        out.append(cav.output(w)[0])
    return torch.stack(out, 1)


def test_cavity_transient_matches_an_independent_rk4_integration():
    """Time stepping vs a fine classical RK4 of the same rates: third order (error falls about
    8-fold per halving of fixed steps that do not divide the output spans); default steps
    (0.9 of the stability limit) stay within 1e-3."""
    grid = Grid2D.square(13)
    X, Y = grid.coordinates()
    w0 = (5.0 * torch.sin(math.pi * X) * torch.sin(2 * math.pi * Y))[None]
    times = [0.0, 0.05, 0.1]
    reference = _rk4_reference(grid, times, 100.0, 1.0, w0, substeps=400)
    scale = reference.abs().max()
    assert (reference[:, -1] - reference[:, 0]).abs().max() > 0.1 * scale  # the flow moved
    errors = []
    for dt in (0.003, 0.0015):  # neither divides 0.05
        w, _, _ = cavity.solve_cavity(grid, times, 100.0, 1.0, w0=w0, dt=dt)
        errors.append(((w - reference).abs().max() / scale).item())
    assert errors[0] < 1e-6, errors
    assert 6.0 < errors[0] / errors[1] < 10.0, errors
    w, _, _ = cavity.solve_cavity(grid, times, 100.0, 1.0, w0=w0)
    assert (w - reference).abs().max() < 1e-3 * scale


def test_cavity_upwind_stencil_is_exact_on_a_quartic():
    """Upwind ``c w_x`` on w = x^4 equals c·4x³ + 2|c|h³ exactly (central part exact to degree 4,
    damping |c| times the fourth difference 24h⁴ over 12h)."""
    n, h = 11, 0.1
    x = h * torch.arange(n, dtype=F64)
    full = (x**4)[None, :, None].expand(2, n, 3).clone()  # (batch, x, other)
    speed = torch.tensor([0.7, -1.3], dtype=F64)[:, None, None].expand(2, n - 4, 3)
    got = cavity._upwind(full, speed, 1, h)
    inner = x[2:-2][None, :, None]
    expected = speed * 4 * inner**3 + speed.abs() * 2 * h**3
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_cavity_upwind_stability_constants_follow_from_the_stencil_symbol():
    """The upwind stencil's symbol per |c|/h gives damping max 4/3 and phase max 1.3722;
    ``stability_limit`` combines them with diffusion as documented."""
    theta = torch.linspace(0, math.pi, 200001, dtype=F64)
    damping = (16 * torch.sin(theta / 2) ** 4 / 12).max().item()
    phase = ((8 * torch.sin(theta) - torch.sin(2 * theta)) / 6).max().item()
    assert abs(damping - 4 / 3) < 1e-9 and abs(phase - 1.3722) < 1e-4
    grid = Grid2D.square(17)
    h, nu, V = grid.x.dx, 0.01, 1.5
    got = float(cavity.stability_limit(grid, 100.0, 1.0, speed=V, advection="upwind")[0])
    expected = 1.0 / ((8 * nu / h**2 + damping * V / h) / 2.5 + phase * V / (1.7 * h))
    assert abs(got - expected) < 1e-4 * expected


def test_cavity_corners_are_the_mean_of_their_two_wall_neighbours():
    """Each corner vorticity is the mean of its two adjacent wall values, at every output time."""
    grid = Grid2D.square(9)
    X, Y = grid.coordinates()
    w0 = (3.0 * torch.sin(math.pi * X) * torch.sin(math.pi * Y) * torch.exp(X))[None]
    w, _, _ = cavity.solve_cavity(grid, [0.0, 0.02], 100.0, 1.0, w0=w0)
    for i, j, di, dj in ((0, 0, 1, 1), (-1, 0, -1, 1), (0, -1, 1, -1), (-1, -1, -1, -1)):
        torch.testing.assert_close(w[..., i, j], 0.5 * (w[..., i + di, j] + w[..., i, j + dj]))


def _dirichlet_streamfunction(w_interior, h):
    """Full-grid ``ψ``: a dense solve of the five-point ``-Δ_h ψ = w``, ``ψ = 0`` on the walls."""
    m = w_interior.shape[-1]
    second = (
        torch.diag(torch.full((m,), -2.0, dtype=F64))
        + torch.diag(torch.ones(m - 1, dtype=F64), 1)
        + torch.diag(torch.ones(m - 1, dtype=F64), -1)
    ) / h**2
    eye = torch.eye(m, dtype=F64)
    laplacian = torch.kron(second, eye) + torch.kron(eye, second)  # index x * m + y
    psi = torch.linalg.solve(-laplacian, w_interior.reshape(-1, m * m).T).T.reshape(-1, m, m)
    return torch.nn.functional.pad(psi, (1, 1, 1, 1))


def test_cavity_upwind_rates_differ_from_central_by_the_documented_stencil_along_both_axes():
    """``rates(central) − rates(upwind)`` on a random vorticity, built here from ψ: per axis the
    upwind-minus-central advection ``c (−δ³w)/(12h) + |c| δ⁴w/(12h)`` at nodes three or more from
    the walls (fourth-order central part, the ``|c|`` damping of the docstring's stencil) and zero
    on the two nodes nearest each wall (central there: the stencil never reads Thom's wall values).
    ``δ³w = w_{i+2} − 2w_{i+1} + 2w_{i−1} − w_{i−2}``,
    ``δ⁴w = w_{i+2} − 4w_{i+1} + 6w_i − 4w_{i−1} + w_{i−2}``; the wall values are Thom's."""
    grid = Grid2D.square(12)
    n, h = grid.x.n, grid.x.dx
    lid = torch.tensor([1.3, 0.6], dtype=F64)
    re = torch.tensor([50.0, 400.0], dtype=F64)
    w = 5.0 * torch.randn(2, n - 2, n - 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    central, _ = cavity._Cavity(grid, re, lid, "central").rates(w)
    upwind, _ = cavity._Cavity(grid, re, lid, "upwind").rates(w)

    psi = _dirichlet_streamfunction(w, h)
    full = torch.nn.functional.pad(w, (1, 1, 1, 1))
    full[:, 0, 1:-1] = -2.0 * psi[:, 1, 1:-1] / h**2
    full[:, -1, 1:-1] = -2.0 * psi[:, -2, 1:-1] / h**2
    full[:, 1:-1, 0] = -2.0 * psi[:, 1:-1, 1] / h**2
    full[:, 1:-1, -1] = -2.0 * psi[:, 1:-1, -2] / h**2 - 2.0 * lid[:, None] / h
    u = (psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) / (2 * h)  # interior nodes, [x, y]
    v = -(psi[:, 2:, 1:-1] - psi[:, :-2, 1:-1]) / (2 * h)

    def upwind_minus_central(f, speed):
        """Along dim 1 of ``f`` (all nodes), for the interior nodes ``1 .. n-2``."""
        out = torch.zeros_like(speed)
        for i in range(3, n - 3):
            third = f[:, i + 2] - 2 * f[:, i + 1] + 2 * f[:, i - 1] - f[:, i - 2]
            fourth = f[:, i + 2] - 4 * f[:, i + 1] + 6 * f[:, i] - 4 * f[:, i - 1] + f[:, i - 2]
            c = speed[:, i - 1]
            out[:, i - 1] = (-c * third + c.abs() * fourth) / (12 * h)
        return out

    along_x = upwind_minus_central(full[:, :, 1:-1], u)
    along_y = upwind_minus_central(full[:, 1:-1, :].transpose(1, 2), v.transpose(1, 2))
    expected = along_x + along_y.transpose(1, 2)
    scale = float(expected.abs().max())
    assert scale > 1.0
    torch.testing.assert_close(central - upwind, expected, rtol=0, atol=1e-10 * scale)


def test_random_vorticity_has_the_documented_sine_coefficients():
    """Discrete sine orthogonality, ``Σ_i sin(jπi/N) sin(kπi/N) = N/2 δ_jk`` (``N = n−1``),
    recovers the coefficients ``amplitude · N(0,1) · (j²+k²)^(−decay/2)`` drawn from the same seed;
    every wall is zero."""
    n, modes, decay, amplitude = 17, 4, 2.0, 1.5
    grid = Grid2D.square(n)
    w = cavity.random_vorticity(torch.Generator().manual_seed(3), grid, modes, decay, amplitude)
    assert w.shape == (n, n)
    i = torch.arange(n, dtype=F64)
    j = torch.arange(1, modes + 1, dtype=F64)
    sines = torch.sin(math.pi * j[:, None] * i[None, :] / (n - 1))  # (modes, n)
    coefficients = (2.0 / (n - 1)) ** 2 * sines @ w @ sines.T
    draws = torch.randn(modes, modes, generator=torch.Generator().manual_seed(3), dtype=F64)
    expected = amplitude * draws * (j[:, None] ** 2 + j[None, :] ** 2) ** (-decay / 2)
    torch.testing.assert_close(coefficients, expected, rtol=0, atol=1e-12)
    for wall in (w[0], w[-1], w[:, 0], w[:, -1]):
        assert wall.abs().max() < 1e-12


# --------------------------------------------------------------------------- from a mutation pass


def test_a_rectangular_grid_is_refused():
    grid = Grid2D(Grid1D(9, 0.0, 1.0), Grid1D(11, 0.0, 1.0))
    with pytest.raises(ValueError, match="square"):
        cavity.solve_cavity(grid, [0.0, 0.01], 100.0)


def test_the_poisson_solve_is_exact_for_quadratics_on_grids_of_one_size_and_two_spacings():
    """``ψ = x(L−x) y(L−y)`` (``−Δψ = 2y(L−y) + 2x(L−x)``): five-point exact; the sine basis of
    ``n = 9`` nodes is reused for ``L = 1`` and ``L = 2`` but the eigenvalues must follow ``h``."""
    for length in (1.0, 2.0, 1.0):
        grid = Grid2D.square(9, 0.0, length)
        X, Y = grid.coordinates()
        psi = X * (length - X) * Y * (length - Y)
        w = 2.0 * Y * (length - Y) + 2.0 * X * (length - X)
        torch.testing.assert_close(cavity.streamfunction(w, grid)[0], psi, rtol=0, atol=1e-13)


def test_a_cavity_of_side_two_is_the_unit_cavity_rescaled():
    """Same Re and lid speed on ``[0, 2]²``: ``ν = U L/Re`` doubles, time scales by ``L/U`` and
    vorticity by ``U/L``; the default steps double too, so the samples agree to round-off."""
    unit, double = Grid2D.square(13), Grid2D.square(13, 0.0, 2.0)
    X, Y = unit.coordinates()
    w0 = 4.0 * torch.sin(math.pi * X) * torch.sin(2.0 * math.pi * Y)
    w1, vx1, _ = cavity.solve_cavity(unit, [0.0, 0.1, 0.3], 100.0, 1.0, w0=w0)
    w2, vx2, _ = cavity.solve_cavity(double, [0.0, 0.2, 0.6], 100.0, 1.0, w0=w0 / 2.0)
    torch.testing.assert_close(2.0 * w2, w1, rtol=0, atol=1e-10 * w1.abs().max().item())
    torch.testing.assert_close(vx2, vx1, rtol=0, atol=1e-12)
    limits = [float(cavity.stability_limit(g, 100.0)[0]) for g in (unit, double)]
    assert limits[1] == pytest.approx(2.0 * limits[0], rel=1e-12)


def test_the_stability_speed_is_at_least_the_lid_speed():
    """``V = max(U, max|u|+|v|)``: a slower speed than the lid's gives the limit at rest."""
    grid = Grid2D.square(17)
    at_rest = cavity.stability_limit(grid, 100.0, 2.0)
    torch.testing.assert_close(cavity.stability_limit(grid, 100.0, 2.0, speed=0.5), at_rest)
    h, nu = grid.x.dx, 2.0 / 100.0
    expected = 1.0 / (8.0 * nu / (2.5 * h**2) + 2.0 / (1.7 * h))
    assert float(at_rest[0]) == pytest.approx(expected, rel=1e-12)


def test_velocity_refuses_a_lid_speed_per_sample_of_the_wrong_count():
    psi = torch.zeros(2, 9, 9, dtype=F64)
    with pytest.raises(ValueError, match="lid_velocity"):
        cavity.velocity(psi, Grid2D.square(9), torch.tensor([1.0, 2.0, 3.0], dtype=F64))


def test_an_output_time_a_little_after_the_last_is_stepped_to():
    """Output times 1e-5 apart: the second is ``w0 + 1e-5 · dw/dt`` to first order, not ``w0``."""
    grid = Grid2D.square(9)
    w, _, _ = cavity.solve_cavity(grid, [0.0, 1e-5, 2e-5], 100.0)
    wall = w[0, :, 4, -1]  # lid vorticity at the middle: -2U/h at rest, then the shear diffuses
    assert wall[1] != wall[0]
    assert torch.allclose(wall[2] - wall[1], wall[1] - wall[0], rtol=1e-3, atol=0)  # first order
    interior = w[0, :, 1:-1, 1:-1]
    assert interior[1].abs().max() > 0 and interior[2].abs().max() > interior[1].abs().max()


def test_steady_cavity_stops_on_the_rate_not_the_increment():
    """At return, a continuation's ``max |dw/dt|`` is below ``tol · U²/L²`` (times a margin for
    the step it was measured on), far below where ``max |Δw| < tol`` would have stopped."""
    grid = Grid2D.square(9)
    tol = 1e-2
    w, _, _ = cavity.steady_cavity(grid, 10.0, 1.0, tol=tol)
    dt = 0.5 * float(cavity.stability_limit(grid, 10.0)[0])
    more, _, _ = cavity.solve_cavity(grid, [0.0, dt], 10.0, 1.0, w0=w, dt=dt)
    rate = ((more[0, -1] - w[0]) / dt)[1:-1, 1:-1].abs().max()
    assert rate < 2.0 * tol


def test_steady_cavity_gives_up_once_max_time_is_reached():
    """At least ``max_time / (SAFETY · limit at rest)`` steps (more where the flow outpaces the
    lid), not ten times as many."""
    grid = Grid2D.square(9)
    calls = []
    original = cavity._Cavity.step

    def counted(self, *args):
        calls.append(1)
        return original(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cavity._Cavity, "step", counted)
        with pytest.raises(SolverError, match="max_time"):
            cavity.steady_cavity(grid, 100.0, tol=1e-12, max_time=0.05)
    steps = 0.05 / (cavity.SAFETY * float(cavity.stability_limit(grid, 100.0)[0]))
    assert steps < len(calls) < 3.0 * steps


def test_a_user_step_is_checked_against_the_smallest_limit_of_the_batch():
    """Re = 100 and Re = 5 at one lid speed: ν is 20 times larger in the second sample, whose
    limit is the smaller; a step between the two limits is refused and names that sample."""
    grid = Grid2D.square(17)
    limits = cavity.stability_limit(grid, torch.tensor([100.0, 5.0], dtype=F64))
    assert limits[1] < 0.5 * limits[0]
    dt = float(0.5 * (limits[0] + limits[1]))
    with pytest.raises(SolverError, match=f"stability limit {float(limits[1]):.6g}.*sample 1"):
        cavity.solve_cavity(grid, [0.0, 0.1], torch.tensor([100.0, 5.0], dtype=F64), dt=dt)


def test_a_user_step_is_checked_at_the_speed_max_of_u_plus_v():
    """A strong flow along the diagonal: ``V = max(|u| + |v|)`` from a dense Poisson solve and
    central differences exceeds the lid speed and ``max |u|``; a step just beyond the limit at
    ``V`` is refused."""
    grid = Grid2D.square(17)
    h = grid.x.dx
    X, Y = grid.coordinates()
    w0 = 200.0 * torch.cos(2.0 * math.pi * (X - Y))
    psi = _dirichlet_streamfunction(w0[None, 1:-1, 1:-1], h)[0]
    u = (psi[1:-1, 2:] - psi[1:-1, :-2]) / (2 * h)
    v = -(psi[2:, 1:-1] - psi[:-2, 1:-1]) / (2 * h)
    speed = float((u.abs() + v.abs()).max())
    assert speed > 1.3 * max(1.0, float(u.abs().max()))
    limit = float(cavity.stability_limit(grid, 100.0, speed=speed)[0])
    with pytest.raises(SolverError, match=f"stability limit {limit:.6g}.*V={speed:.6g}"):
        cavity.solve_cavity(grid, [0.0, 0.01], 100.0, w0=w0, dt=1.01 * limit)
    cavity.solve_cavity(grid, [0.0, 0.99 * limit], 100.0, w0=w0, dt=0.99 * limit)


def test_the_solver_s_own_steps_reach_the_output_time():
    """From rest over 1.5 default steps: two equal steps, as a user ``dt`` of 0.75 of one gives."""
    grid = Grid2D.square(17)
    step = cavity.SAFETY * float(cavity.stability_limit(grid, 100.0)[0])
    times = [0.0, 1.5 * step]
    own, _, _ = cavity.solve_cavity(grid, times, 100.0)
    fixed, _, _ = cavity.solve_cavity(grid, times, 100.0, dt=0.75 * step)
    torch.testing.assert_close(own, fixed, rtol=0, atol=1e-12)
    assert (own[:, -1] - own[:, 0])[:, 1:-1, 1:-1].abs().max() > 1.0
