"""Tracer in the periodic NS flow: round-off mass, range, exact blob, source, recipes, errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from pdes import navier_stokes as ns
from pdes import tracer as tr
from pdes.errors import SolverError
from pdes.grid import Grid1D, Grid2D
from pdes.random_fields import gaussian_random_field_2d
from pdes.verification import convergence
from physml.cli import main
from physml.data import MultiStepDataset, generate_dataset, load

F64 = torch.float64
GRID = Grid2D.square(24, periodic=True)
BOX = Grid2D(Grid1D(20, 0.0, 2.0, periodic=True), Grid1D(16, -0.5, 1.0, periodic=True))


def stirring(grid: Grid2D, batch: int, seed: int = 0, strength: float = 20.0) -> torch.Tensor:
    """A zero-mean GRF vorticity whose velocity is of order one (FNO's field times ``strength``)."""
    n = grid.x.n
    w = gaussian_random_field_2d(n, batch=batch, zero_mean=True, generator=_gen(seed))
    return strength * w


def low_modes(grid: Grid2D, batch: int, seed: int = 2) -> torch.Tensor:
    """A random vorticity of the Fourier modes ``|p|, |q| <= 2`` on any periodic box."""
    x, y = grid.coordinates()
    phase = (
        2
        * math.pi
        * torch.stack(
            [p * x / grid.x.length + q * y / grid.y.length for p in range(3) for q in range(-2, 3)]
        )
    )
    weights = torch.randn(2, batch, len(phase), 1, 1, generator=_gen(seed), dtype=F64)
    return (weights[0] * torch.cos(phase) + weights[1] * torch.sin(phase)).sum(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(grid: Grid2D, batch: int, seed: int = 1) -> torch.Tensor:
    """Non-negative tracers with wide near-empty regions (where a scheme would undershoot)."""
    gen = _gen(seed)
    return torch.cat([tr.random_blobs(grid, gen, 3, 0.06) for _ in range(batch)])


def mass(c: torch.Tensor, grid: Grid2D) -> torch.Tensor:
    return grid.integrate(c)


# ----------------------------------------------------------------------------- conservation


@pytest.mark.parametrize("limiter", tr.LIMITERS)
def test_ns_tracer_conserves_mass_to_round_off_and_stays_in_its_initial_range(limiter):
    w0 = stirring(GRID, 3)
    c0 = torch.cat([blobs(GRID, 2), torch.rand(1, *GRID.shape, generator=_gen(5), dtype=F64)])
    kappa = torch.tensor([0.0, 1e-3, 5e-3], dtype=F64)
    t = torch.linspace(0.0, 3.0, 4, dtype=F64)
    w, c = tr.solve_ns_tracer(w0, c0, GRID, 1e-3, kappa, t, limiter=limiter)
    steps = 3.0 / tr.step_limit(GRID, kappa.max(), ns.velocity(w0, GRID)[0].abs().max())
    assert steps > 100  # many steps
    total = mass(c, GRID)
    assert (total - total[:, :1]).abs().max() <= 1e-12 * total[:, 0].min()
    low, high = c0.amin(dim=(-2, -1)), c0.amax(dim=(-2, -1))
    assert (c.amin(dim=(-2, -1)) >= low[:, None] - 1e-14 * high[:, None]).all()
    assert (c.amax(dim=(-2, -1)) <= high[:, None] * (1 + 1e-14)).all()
    assert (c >= 0).all()
    assert (c[:, -1] - c0).abs().max() > 0.1  # the tracer did move
    assert (w[:, -1] - w0).abs().max() > 0.1


def test_mass_is_conserved_for_signed_fields_and_any_face_velocities_on_a_box():
    """Flux form alone conserves the total: a signed tracer, faces not divergence-free."""
    gen = _gen(3)
    c0 = torch.randn(2, *BOX.shape, generator=gen, dtype=F64)
    faces = (torch.randn(*BOX.shape, generator=gen, dtype=F64), torch.rand(*BOX.shape, dtype=F64))
    t = torch.linspace(0.0, 0.2, 3, dtype=F64)
    c = tr.solve_tracer(c0, BOX, 1e-3, t, faces)
    total = mass(c, BOX)
    scale = mass(c0.abs(), BOX)
    assert ((total - total[:, :1]).abs() <= 1e-12 * scale[:, None]).all()
    assert (c[:, -1] - c0).abs().max() > 0.1


def test_face_velocities_are_face_averages_of_one_fourier_mode_and_divergence_free():
    """``w = cos(ax + by)`` has ``ψ = w/(a²+b²)``: faces from ψ at the corners, by hand."""
    for grid in (GRID, BOX):
        a, b = 2 * math.pi * 2 / grid.x.length, 2 * math.pi * 3 / grid.y.length
        x, y = grid.coordinates()
        dx, dy = grid.spacing
        w = torch.cos(a * x + b * y)[None]

        def psi(px, py, a=a, b=b):
            return torch.cos(a * px + b * py) / (a * a + b * b)

        u, v = tr.face_velocities(w, grid)
        expected_u = (psi(x + dx / 2, y + dy / 2) - psi(x + dx / 2, y - dy / 2)) / dy
        expected_v = -(psi(x + dx / 2, y + dy / 2) - psi(x - dx / 2, y + dy / 2)) / dx
        torch.testing.assert_close(u[0], expected_u, rtol=0, atol=1e-13)
        torch.testing.assert_close(v[0], expected_v, rtol=0, atol=1e-13)

    u, v = tr.face_velocities(low_modes(BOX, 2), BOX)
    divergence = (u - u.roll(1, -2)) / BOX.x.dx + (v - v.roll(1, -1)) / BOX.y.dx
    assert divergence.abs().max() < 1e-12 * u.abs().max() / BOX.x.dx


# ----------------------------------------------------------------------------- exact solution


@pytest.mark.parametrize("case", tr.EXACT_CASES, ids=lambda c: c.name)
def test_drifting_blob_converges_at_second_order(case):
    study = convergence(case)
    assert study.order >= case.order - 0.1, (study.errors, study.orders)
    assert study.errors[-1] < 0.01 * study.finest.exact.abs().mean().item()


def test_blob_centres_as_a_list_of_numpy_rows_match_the_stacked_array():
    rows = [np.array([0.3, 0.4]), np.array([1.6, 0.1])]
    stacked = np.stack(rows)
    assert torch.equal(tr.gaussian_blob(BOX, rows, 0.1), tr.gaussian_blob(BOX, stacked, 0.1))
    t = [0.0, 0.2]
    drifted = tr.drifting_blob(BOX, t, rows, 0.1, (1.0, -0.5), 0.01)
    assert torch.equal(drifted, tr.drifting_blob(BOX, t, stacked, 0.1, (1.0, -0.5), 0.01))
    assert drifted.shape == (2, 2, 20, 16)
    with pytest.raises(TypeError, match=r"^centre must be .* Tensor of shape \(1,\)"):
        tr.gaussian_blob(BOX, [torch.tensor([0.3]), torch.tensor([0.4])], 0.1)


def test_drifting_blob_is_a_periodised_gaussian_of_the_given_mass():
    t = torch.tensor([0.0, 0.7], dtype=F64)
    blob = tr.drifting_blob(BOX, t, [1.9, 0.9], 0.12, (1.0, -0.5), 0.01, mass=2.5)
    torch.testing.assert_close(BOX.integrate(blob), torch.full((1, 2), 2.5, dtype=F64))
    # at t = 0.7 the centre is (2.6, 0.55) = (0.6, 0.55) on the box, the spread sqrt(0.0144 + 0.014)
    moved = tr.gaussian_blob(BOX, [0.6, 0.55], math.sqrt(0.12**2 + 2 * 0.01 * 0.7), 2.5)
    torch.testing.assert_close(blob[:, 1], moved, rtol=0, atol=1e-14 * moved.max().item())
    peak = blob[0, 0].max().item()
    assert peak == pytest.approx(2.5 / (2 * math.pi * 0.12**2), rel=0.02)


def test_pure_advection_at_the_default_step_converges_and_keeps_the_mass():
    """κ = 0: the default step (the limit, a quarter cell per step) and second order in dx."""
    errors = []
    for n in (32, 64):
        grid = Grid2D.square(n, periodic=True)
        t = torch.tensor([0.0, 0.25], dtype=F64)
        exact = tr.drifting_blob(grid, t, [0.4, 0.4], 0.1, (1.0, 0.0), 0.0)
        c = tr.solve_tracer(exact[:, 0], grid, 0.0, t, (1.0, 0.0))
        errors.append((c[:, 1] - exact[:, 1]).abs().mean().item())
        assert mass(c, grid)[0, 1].item() == pytest.approx(1.0, rel=1e-12)
    assert math.log2(errors[0] / errors[1]) > 1.8


@pytest.mark.parametrize("flow", [(-1.0, -0.5), (0.5, -1.0)])
def test_drifting_blob_against_the_grid_directions_converges_at_second_order(flow):
    """Negative velocities take the face value from the cell ahead (``c(i+1) − σ(i+1)/2``); the
    exact cases only flow along +x and +y. Measured order 2.1; a face value built on the wrong
    side of the cell ahead gives 0.7."""
    errors = []
    for n in (32, 64):
        grid = Grid2D.square(n, periodic=True)
        t = torch.tensor([0.0, 0.25], dtype=F64)
        exact = tr.drifting_blob(grid, t, [0.6, 0.4], 0.1, flow, 2e-3)
        c = tr.solve_tracer(exact[:, 0], grid, 2e-3, t, flow, max_step=0.15 * grid.x.dx)
        errors.append((c[:, 1] - exact[:, 1]).abs().mean().item())
    assert math.log2(errors[0] / errors[1]) > 1.8, errors


def test_ns_tracer_is_second_order_in_time():
    """Fixed grid, halved steps: the L1 differences of successive answers fall by 4 (Heun's
    second stage takes the vorticity's end-of-step faces; the start-of-step ones give 2). The
    max norm is left out: it jumps where the limiter switches branch."""
    grid = Grid2D.square(16, periodic=True)
    w0 = 10.0 * gaussian_random_field_2d(16, zero_mean=True, generator=_gen(0))
    c0 = tr.random_blobs(grid, _gen(1), 3, 0.15)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    answers = [
        tr.solve_ns_tracer(w0, c0, grid, 1e-2, 0.0, t, "none", max_step=0.5 / steps)[1][:, -1]
        for steps in (32, 64, 128, 256)
    ]
    assert (answers[-1] - c0).abs().max() > 0.1 * c0.max()  # the tracer did move
    changes = [(a - b).abs().mean().item() for a, b in zip(answers, answers[1:], strict=False)]
    assert changes[-1] > 1e-9  # far above round-off
    orders = [math.log2(d0 / d1) for d0, d1 in zip(changes, changes[1:], strict=False)]
    assert min(orders) > 1.85 and max(orders) < 2.15, (changes, orders)


# ----------------------------------------------------------------------------- source


def test_known_source_changes_the_total_by_exactly_the_released_amount():
    w0 = stirring(GRID, 2, seed=4)
    c0 = blobs(GRID, 2, seed=6)
    shape = tr.gaussian_blob(GRID, [[0.3, 0.6], [0.8, 0.1]], 0.05)
    shape = shape / GRID.integrate(shape)[:, None, None]
    rates = torch.tensor([0.2, 0.05], dtype=F64)

    def released(time: float) -> torch.Tensor:
        return rates * tr.PulsedRelease(1.0, 0.4)(time)

    t = torch.linspace(0.0, 1.0, 6, dtype=F64)
    _, c = tr.solve_ns_tracer(w0, c0, GRID, 1e-3, 1e-3, t, source=tr.Source(shape, released))
    expected = mass(c0, GRID)[:, None] + torch.stack([released(s) for s in t.tolist()], dim=1)
    torch.testing.assert_close(mass(c, GRID), expected, rtol=1e-12, atol=0)
    assert (expected[:, -1] - expected[:, 0] > 0.04).all()  # the source matters
    assert (c >= 0).all()  # a non-negative source keeps the tracer non-negative


def test_pulsed_release_integrates_its_rate():
    release = tr.PulsedRelease(0.3, 2.0)
    rate = lambda s: 0.3 * (1 - math.cos(math.pi * s))  # noqa: E731
    times = torch.linspace(0.0, 3.0, 30001, dtype=F64)
    values = torch.tensor([rate(s) for s in times.tolist()], dtype=F64)
    assert torch.trapezoid(values, times).item() == pytest.approx(release(3.0), rel=1e-8)
    assert release(0.0) == 0.0


# ----------------------------------------------------------------------------- recipes


OPTIONS = {"nx": 16, "nt": 3, "t_end": 0.6, "blobs": 2}


def test_generate_writes_tracer_velocity_and_mass_that_load_reads(tmp_path, capsys):
    out = tmp_path / "tracer.h5"
    args = ["generate", "ns-tracer", "--n", "3", "--out", str(out), "--nx", "16", "--nt", "3"]
    assert main([*args, "--t-end", "0.6", "--blobs", "2", "--quiet"]) == 0
    data = load(out)
    assert data.u.shape == (3, 3, 16, 16) and data.u.dtype == F64
    assert set(data.fields) == {"vx", "vy", "mass"}
    assert data.fields["vx"].shape == data.u.shape and data.fields["mass"].shape == (3, 3)
    grid = Grid2D.square(16, periodic=True)
    torch.testing.assert_close(data.fields["mass"], grid.integrate(data.u), rtol=1e-14, atol=0)
    masses = data.fields["mass"]
    assert ((masses - masses[:, :1]).abs() <= 1e-12 * masses[:, :1]).all()
    assert (data.u >= 0).all()
    assert data.attrs["pde"] == "ns-tracer" and data.attrs["boundary"] == "periodic"
    assert set(data.params) == {"nu", "kappa"}
    inputs, targets = MultiStepDataset(data)[0]
    assert inputs.shape == (1, 16, 16) and targets.shape == (2, 16, 16)


def test_the_flow_is_the_navier_stokes_recipes_for_the_same_seed(tmp_path):
    tracer = generate_dataset("ns-tracer", tmp_path / "t.h5", n=2, progress=False, **OPTIONS)
    settings = {k: OPTIONS[k] for k in ("nx", "nt", "t_end")}
    flow = generate_dataset("navier-stokes", tmp_path / "f.h5", n=2, progress=False, **settings)
    with_tracer, alone = load(tracer), load(flow)
    for name in ("vx", "vy"):
        torch.testing.assert_close(with_tracer.fields[name], alone.fields[name], rtol=0, atol=1e-13)


def test_source_recipe_stores_the_released_amount_that_the_mass_follows(tmp_path):
    out = generate_dataset("ns-tracer-source", tmp_path / "s.h5", n=2, progress=False, **OPTIONS)
    data = load(out)
    masses, released = data.fields["mass"], data.fields["released"]
    torch.testing.assert_close(masses, masses[:, :1] + released, rtol=1e-12, atol=0)
    settings = tr.PROBLEMS[1].settings(**OPTIONS)
    release = tr.PulsedRelease(settings["source_rate"], settings["source_period"])
    assert released[0, -1].item() == pytest.approx(release(0.6), rel=1e-15)
    assert released[0, -1] > 0 and (data.u >= 0).all()
    assert {"source_x", "source_y"} <= set(data.params)


# ----------------------------------------------------------------------------- bad input


def test_negative_kappa_is_refused_naming_it():
    c0 = blobs(GRID, 1)
    with pytest.raises(ValueError, match="kappa"):
        tr.solve_tracer(c0, GRID, -1e-3, [0.0, 0.1], (1.0, 0.0))
    with pytest.raises(ValueError, match="kappa"):
        tr.solve_ns_tracer(stirring(GRID, 1), c0, GRID, 1e-3, torch.tensor([-1.0]), [0.0, 0.1])
    with pytest.raises(ValueError, match="kappa"):
        tr.step_limit(GRID, -1.0, 1.0)


def test_a_step_beyond_the_limit_is_a_solver_error_naming_it():
    c0 = blobs(GRID, 1)
    limit = tr.step_limit(GRID, 1e-3, 1.0)
    assert limit == pytest.approx(1 / (4 * 24 + 2e-3 * 2 * 24**2))
    tr.solve_tracer(c0, GRID, 1e-3, [0.0, 0.05], (1.0, -1.0), max_step=limit)
    with pytest.raises(SolverError, match="max_step"):
        tr.solve_tracer(c0, GRID, 1e-3, [0.0, 0.05], (1.0, -1.0), max_step=1.01 * limit)
    w0 = stirring(GRID, 1)
    with pytest.raises(SolverError, match="max_step"):
        tr.solve_ns_tracer(w0, c0, GRID, 1e-3, 1e-3, [0.0, 0.05], max_step=0.5)


@pytest.mark.parametrize("cells", [(8, 32), (24, 6)])
def test_step_limit_on_rectangular_cells_is_the_documented_bound(cells):
    """``1 / (4 U max(1/dx, 1/dy) + 2κ(1/dx² + 1/dy²))``, smallest over the samples; the
    cell's shorter side sets it, whichever axis that is."""
    grid = Grid2D(Grid1D(cells[0], periodic=True), Grid1D(cells[1], 0.0, 2.0, periodic=True))
    dx, dy = 1.0 / cells[0], 2.0 / cells[1]
    assert tr.step_limit(grid, 0.0, 1.5) == pytest.approx(1 / (4 * 1.5 * max(1 / dx, 1 / dy)))
    kappa = torch.tensor([1e-2, 4e-2], dtype=F64)
    speed = torch.tensor([2.0, 0.5], dtype=F64)
    bounds = [
        1 / (4 * u * max(1 / dx, 1 / dy) + 2 * k * (1 / dx**2 + 1 / dy**2))
        for u, k in zip(speed.tolist(), kappa.tolist(), strict=True)
    ]
    assert tr.step_limit(grid, kappa, speed) == pytest.approx(min(bounds))


def test_a_flow_that_outgrows_a_given_step_is_caught_and_the_default_step_adapts():
    """Strong forcing speeds a calm flow up: the fixed step passes the limit mid-run."""
    x, y = GRID.coordinates()
    forcing = 60.0 * torch.sin(2 * math.pi * x) * torch.cos(2 * math.pi * y)
    w0 = 0.01 * stirring(GRID, 1)
    c0 = blobs(GRID, 1)
    t = [0.0, 0.5]
    speed0 = ns.velocity(w0, GRID)[0].abs().max().item()
    step = 0.9 * tr.step_limit(GRID, 1e-3, 2 * speed0)
    with pytest.raises(SolverError, match="smaller max_step"):
        tr.solve_ns_tracer(w0, c0, GRID, 1e-2, 1e-3, t, forcing=forcing, max_step=step)
    _, c = tr.solve_ns_tracer(w0, c0, GRID, 1e-2, 1e-3, t, forcing=forcing)
    assert (c >= 0).all()
    assert mass(c, GRID)[0, 1].item() == pytest.approx(mass(c0, GRID).item(), rel=1e-12)


def test_a_given_step_is_refused_once_the_flow_passes_its_limit_and_not_before():
    """A shear flow ``w = a(t) cos 2πx`` has no advection, so forcing ``F cos 2πx`` grows it as
    ``a' = F − ν(2π)²a``, exactly known. Its face rate is ``a`` times that of ``cos 2πx``, so the
    step limit at the final amplitude is known: 2.5% above it the run must raise, 2.5% below it
    not, although both steps are within the limit at the start."""
    grid = Grid2D.square(16, periodic=True)
    x, _ = grid.coordinates()
    shape = torch.cos(2 * math.pi * x)
    dx, dy = grid.spacing
    # V(i, j+1/2) = -[psi(i+1/2) - psi(i-1/2)]/dx, psi = cos(2 pi x)/(2 pi)^2; max |sin 2 pi x| = 1
    unit_rate = 2 * math.sin(math.pi * dx) / ((2 * math.pi) ** 2 * dx) / dy
    unit_speed = 1 / (2 * math.pi)
    nu, t_end, steps = 1e-3, 1.0, 20
    threshold = t_end / (steps + 0.5)
    a_end = 1 / (4 * unit_rate * threshold)
    a0 = a_end / 1.5  # within a factor 2 of the limit, so a check loosened twofold misses it
    decay = math.exp(-nu * (2 * math.pi) ** 2 * t_end)
    force = nu * (2 * math.pi) ** 2 * (a_end - a0 * decay) / (1 - decay)
    assert ns.stability_limit(grid, nu, a_end * unit_speed) > 1.1 * threshold  # the tracer's binds
    c0 = blobs(grid, 1)

    def run(max_step: float):
        w0 = a0 * shape[None]
        return tr.solve_ns_tracer(
            w0, c0, grid, nu, 0.0, [0.0, t_end], force * shape, None, max_step
        )

    assert t_end / steps < 1 / (4 * unit_rate * a0)  # within the limit at the start
    with pytest.raises(SolverError, match="smaller max_step"):
        run(t_end / steps)
    w, c = run(t_end / (steps + 1))
    assert w[0, -1].max().item() == pytest.approx(a_end, rel=1e-6)
    assert (c >= 0).all()


def test_wrong_shapes_and_values_are_refused_naming_the_argument():
    c0 = blobs(GRID, 2)
    w0 = stirring(GRID, 2)
    t = [0.0, 0.1]
    with pytest.raises(ValueError, match="c0"):
        tr.solve_tracer(c0[:, :-1], GRID, 1e-3, t, (1.0, 0.0))
    with pytest.raises(ValueError, match="c0"):
        tr.solve_ns_tracer(w0, c0[:1].expand(3, -1, -1), GRID, 1e-3, 1e-3, t)
    with pytest.raises(ValueError, match="c0 contains NaN"):
        tr.solve_tracer(c0 * math.nan, GRID, 1e-3, t, (1.0, 0.0))
    with pytest.raises(ValueError, match="w0"):
        tr.solve_ns_tracer(w0[..., :-1], c0, GRID, 1e-3, 1e-3, t)
    with pytest.raises(ValueError, match="periodic"):
        tr.solve_tracer(c0, Grid2D.square(24), 1e-3, t, (1.0, 0.0))
    with pytest.raises(ValueError, match="limiter"):
        tr.solve_tracer(c0, GRID, 1e-3, t, (1.0, 0.0), limiter="superbee")
    with pytest.raises(TypeError, match="flow"):
        tr.solve_tracer(c0, GRID, 1e-3, t, "east")
    with pytest.raises(ValueError, match="flow"):
        tr.solve_tracer(c0, GRID, 1e-3, t, (c0[0, :-1], c0[0, :-1]))
    with pytest.raises(ValueError, match="nu"):
        tr.solve_ns_tracer(w0, c0, GRID, 0.0, 1e-3, t)
    with pytest.raises(TypeError, match=r"flow\[0\] must be a finite number, got True"):
        tr.solve_tracer(c0, GRID, 1e-3, t, (True, 0.0))
    with pytest.raises(ValueError, match=r"flow\[1\] must be a finite number"):
        tr.solve_tracer(c0, GRID, 1e-3, t, (1.0, math.inf))


def test_a_uniform_flow_of_numpy_numbers_is_the_flow_of_floats():
    c0 = blobs(GRID, 2)
    t = [0.0, 0.1]
    floats = tr.solve_tracer(c0, GRID, 1e-3, t, (0.5, -0.25))
    numpy32 = tr.solve_tracer(c0, GRID, 1e-3, t, (np.float32(0.5), np.float32(-0.25)))
    assert torch.equal(floats, numpy32)


@pytest.mark.parametrize(
    "flow",
    [
        (torch.tensor(0.5), torch.tensor(-0.25)),
        (np.array(0.5), -0.25),
        torch.tensor([0.5, -0.25]),
        np.array([0.5, -0.25]),
    ],
    ids=["0-d tensors", "0-d array and float", "tensor (2,)", "array (2,)"],
)
def test_a_uniform_flow_of_tensors_or_arrays_is_the_flow_of_floats(flow):
    """``drifting_blob`` takes these; ``solve_tracer`` read 0-d tensors as face fields and refused
    a tensor or array of two."""
    c0 = blobs(GRID, 2)
    t = [0.0, 0.1]
    assert torch.equal(
        tr.solve_tracer(c0, GRID, 1e-3, t, flow), tr.solve_tracer(c0, GRID, 1e-3, t, (0.5, -0.25))
    )


def test_a_uniform_flow_tensor_carries_the_blob_as_drifting_blob_does():
    t = torch.tensor([0.0, 0.25], dtype=F64)
    flow = torch.tensor([1.0, -0.5], dtype=F64)
    exact = tr.drifting_blob(GRID, t, [0.3, 0.6], 0.12, flow, 2e-3)
    c = tr.solve_tracer(exact[:, 0], GRID, 2e-3, t, flow)
    assert (c[:, 1] - exact[:, 1]).abs().mean() < 0.05 * exact[:, 1].abs().mean()
    with pytest.raises(TypeError, match=r"flow\[0\] must be a finite number, got tensor\(True\)"):
        tr.solve_tracer(exact[:, 0], GRID, 2e-3, t, torch.tensor([True, False]))


def test_a_flow_array_of_two_that_is_not_numbers_is_refused_as_passed():
    c0 = blobs(GRID, 1)
    refusal = re.escape(f"flow[0] must be a finite number, got {np.True_!r}")
    with pytest.raises(TypeError, match=f"^{refusal}$"):
        tr.solve_tracer(c0, GRID, 1e-3, [0.0, 0.1], np.array([True, False]))
    words = np.array(["0.5", "1"])
    with pytest.raises(TypeError, match=re.escape(f"got {words!r}") + "$"):
        tr.solve_tracer(c0, GRID, 1e-3, [0.0, 0.1], words)


def test_bad_sources_are_refused_naming_the_field():
    c0 = blobs(GRID, 2)
    shape = tr.gaussian_blob(GRID, [0.5, 0.5], 0.1)[0]
    t = [0.0, 0.1]
    flow = (1.0, 0.0)
    with pytest.raises(TypeError, match="source"):
        tr.solve_tracer(c0, GRID, 1e-3, t, flow, source=shape)
    with pytest.raises(ValueError, match="source.shape"):
        tr.solve_tracer(c0, GRID, 1e-3, t, flow, source=tr.Source(shape[:-1], lambda s: s))
    with pytest.raises(ValueError, match=r"source.released\(0\)"):
        tr.solve_tracer(c0, GRID, 1e-3, t, flow, source=tr.Source(shape, lambda s: s + 1))
    with pytest.raises(ValueError, match=r"source.released\(t\)"):
        tr.solve_tracer(c0, GRID, 1e-3, t, flow, source=tr.Source(shape, lambda s: [s] * 3))
    with pytest.raises(ValueError, match="period"):
        tr.PulsedRelease(1.0, 0.0)


def test_recipe_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="limiter"):
        generate_dataset("ns-tracer", tmp_path / "x.h5", n=1, progress=False, limiter="x", nx=8)
    with pytest.raises(ValueError, match="kappa"):
        generate_dataset("ns-tracer", tmp_path / "y.h5", n=1, progress=False, kappa=-1.0, nx=8)


@pytest.mark.parametrize("limiter", tr.LIMITERS)
def test_every_limiter_converges_above_first_order_on_the_drifting_blob(limiter):
    """Measured 32 -> 64 cells: mc 1.81, vanleer 1.73, minmod 1.52; a limiter reduced to donor
    cell (slope 0) gives 0.81."""
    errors = []
    for n in (32, 64):
        grid = Grid2D.square(n, periodic=True)
        t = torch.tensor([0.0, 0.25], dtype=F64)
        exact = tr.drifting_blob(grid, t, [0.4, 0.4], 0.1, (1.0, 0.0), 0.0)
        c = tr.solve_tracer(exact[:, 0], grid, 0.0, t, (1.0, 0.0), limiter=limiter)
        errors.append((c[:, 1] - exact[:, 1]).abs().mean().item())
    assert math.log2(errors[0] / errors[1]) > 1.3, errors


# ----------------------------------------------------------------------------- hand-made checks


LIMITER_CASES = [
    # (a, b): backward and forward jumps; expected (mc, vanleer, minmod), worked out by hand
    ((1.0, 3.0), (2.0, 1.5, 1.0)),  # mc: min(2·1, (1+3)/2); vanleer: 2·3/4
    ((1.0, 1.5), (1.25, 1.2, 1.0)),  # mc: the central (1+1.5)/2; vanleer: 3/2.5
    ((-2.0, -1.0), (-1.5, -4 / 3, -1.0)),  # signs kept
    ((4.0, 1.0), (2.0, 1.6, 1.0)),  # mc: 2·min bounds the central 2.5
    ((1.0, -1.0), (0.0, 0.0, 0.0)),  # an extremum: no slope
    ((0.0, 2.0), (0.0, 0.0, 0.0)),
    ((0.0, 0.0), (0.0, 0.0, 0.0)),  # vanleer's 0/0 is 0, not NaN
    ((1e-6, 3e-6), (2e-6, 1.5e-6, 1e-6)),  # tiny jumps scale like large ones
]


@pytest.mark.parametrize(("limiter", "column"), [("mc", 0), ("vanleer", 1), ("minmod", 2)])
def test_limited_slopes_match_hand_values(limiter, column):
    a = torch.tensor([case[0][0] for case in LIMITER_CASES], dtype=F64)
    b = torch.tensor([case[0][1] for case in LIMITER_CASES], dtype=F64)
    expected = torch.tensor([case[1][column] for case in LIMITER_CASES], dtype=F64)
    slope = tr._SLOPES[limiter](a.clone(), b.clone())
    torch.testing.assert_close(slope, expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(
        tr._SLOPES[limiter](b.clone(), a.clone()), expected, rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("flow", [(0.5, -1.0), (-0.5, 1.0)])
def test_drifting_blob_on_cells_four_times_longer_in_y(flow):
    """dx = 1/64, dy = 1/16: a flux, a divergence or a diffusive flux using the other axis's
    spacing moves or spreads the blob wrongly; the scheme stays within 5% (L1, relative;
    measured 3.7%)."""
    box = Grid2D(Grid1D(64, 0.0, 1.0, periodic=True), Grid1D(32, -1.0, 1.0, periodic=True))
    t = torch.tensor([0.0, 0.25], dtype=F64)
    exact = tr.drifting_blob(box, t, [0.3, 0.2], 0.15, flow, 5e-3)
    c = tr.solve_tracer(exact[:, 0], box, 5e-3, t, flow)
    error = (c[:, 1] - exact[:, 1]).abs().mean() / exact[:, 1].abs().mean()
    assert error < 0.05, error


def test_the_step_check_uses_each_axis_own_spacing_and_the_speed_of_either_sign():
    """A flow along y on cells with dy = 4 dx is limited by ``4|V|/dy``; a flow along −x by
    ``4|U|/dx``: steps 1% inside pass, 1% beyond are refused."""
    box = Grid2D(Grid1D(32, periodic=True), Grid1D(8, periodic=True))
    c0 = blobs(box, 1)
    t = [0.0, 0.2]
    for flow, limit in [
        ((0.0, 1.0), 1 / (4 * 8)),
        ((0.0, -1.0), 1 / (4 * 8)),
        ((-1.0, 0.0), 1 / (4 * 32)),
    ]:
        c = tr.solve_tracer(c0, box, 0.0, t, flow, max_step=0.99 * limit)
        assert mass(c, box)[0, 1].item() == pytest.approx(mass(c0, box).item(), rel=1e-12)
        with pytest.raises(SolverError, match="max_step"):
            tr.solve_tracer(c0, box, 0.0, t, flow, max_step=1.01 * limit)


def test_a_constant_tracer_stays_constant_in_any_divergence_free_flow():
    """Zero divergence makes ``∇·(u c) = c ∇·u = 0`` for a constant ``c``: it stays to round-off."""
    w0 = stirring(GRID, 2)
    c0 = torch.full((2, *GRID.shape), 0.7, dtype=F64)
    _, c = tr.solve_ns_tracer(w0, c0, GRID, 1e-3, 1e-3, [0.0, 0.3])
    assert (c - 0.7).abs().max() < 1e-13


def test_gaussian_blob_is_the_hand_sum_over_images_for_a_wide_blob():
    """std = 0.3 on the unit torus: the images a box away matter; a direct sum over ±4 boxes."""
    grid = Grid2D.square(16, periodic=True)
    x, y = grid.coordinates()
    std, centre = 0.3, (0.9, 0.05)
    total = torch.zeros_like(x)
    for m in range(-4, 5):
        for n in range(-4, 5):
            r2 = (x - centre[0] + m) ** 2 + (y - centre[1] + n) ** 2
            total += torch.exp(-r2 / (2 * std**2))
    expected = 2.0 * total / (2 * math.pi * std**2)
    blob = tr.gaussian_blob(grid, centre, std, mass=2.0)
    torch.testing.assert_close(blob[0], expected, rtol=1e-13, atol=0)


def test_random_blobs_are_the_documented_draws():
    """One blob: centre, peak ``0.5 + U`` and std ``width (0.5 + U)`` from four uniform draws."""
    draws = torch.rand(1, 4, generator=_gen(7), dtype=F64)[0].tolist()
    centre = (BOX.x.lower + 2.0 * draws[0], BOX.y.lower + 1.5 * draws[1])
    peak, std = 0.5 + draws[2], 0.2 * (0.5 + draws[3])
    blob = tr.random_blobs(BOX, _gen(7), 1, 0.2)
    expected = tr.gaussian_blob(BOX, centre, std, peak * 2 * math.pi * std**2)
    torch.testing.assert_close(blob, expected, rtol=1e-14, atol=0)
    assert blob.max().item() == pytest.approx(peak, rel=0.05)


def test_recipe_default_step_keeps_the_safety_margin():
    """The recipe's step is at most :data:`SAFETY` of the step limit at the planned speed; with a
    strong diffusion that limit, not the vorticity's step, is the binding one."""
    problem = tr.PROBLEMS[0]
    for kappa in (5e-4, 0.05):
        settings = problem.settings(**OPTIONS, kappa=kappa)
        grid = problem.grid(settings)
        speed = ns.recipe_speed(grid, settings)
        bound = 1 / (4 * speed * grid.x.n + 2 * kappa * 2 * grid.x.n**2)
        assert problem.step(settings) <= 0.8 * bound * (1 + 1e-12)


def test_more_bad_values_are_refused_naming_them():
    c0 = blobs(GRID, 2)
    t = [0.0, 0.1]
    flow = (1.0, 0.0)
    shape = tr.gaussian_blob(GRID, [0.5, 0.5], 0.1)
    with pytest.raises(ValueError, match="std must be > 0"):
        tr.gaussian_blob(GRID, [0.5, 0.5], 0.0)
    with pytest.raises(ValueError, match="std must be finite"):
        tr.gaussian_blob(GRID, [0.5, 0.5], math.inf)
    with pytest.raises(ValueError, match="std must be a number or hold one value per sample"):
        tr.gaussian_blob(GRID, [[0.5, 0.5], [0.2, 0.2]], torch.tensor([0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match="centre must be a finite pair"):
        tr.gaussian_blob(GRID, [0.5, math.nan], 0.1)
    with pytest.raises(ValueError, match="speed must be >= 0"):
        tr.step_limit(GRID, 0.0, -0.5)
    with pytest.raises(
        ValueError, match=r"speed must be a number or hold one value per sample \(2,\), got 3"
    ):
        tr.step_limit(GRID, torch.tensor([1e-3, 2e-3]), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="rate"):
        tr.PulsedRelease(-0.1, 1.0)
    with pytest.raises(ValueError, match="source.shape"):
        tr.solve_tracer(
            c0, GRID, 1e-3, t, flow, source=tr.Source(shape.expand(3, -1, -1), lambda s: s)
        )
    with pytest.raises(ValueError, match=r"source.released\(t\)"):
        tr.solve_tracer(c0, GRID, 1e-3, t, flow, source=tr.Source(shape, lambda s: s * math.nan))
    faces = torch.ones(3, *GRID.shape, dtype=F64)
    with pytest.raises(ValueError, match="flow must be two tensors"):
        tr.solve_tracer(c0, GRID, 1e-3, t, (faces, faces))


def test_a_given_step_beyond_the_tracer_limit_is_refused_before_any_step():
    """Strong diffusion makes the tracer's bound ``1/(4 max(|U|/dx, |V|/dy) + 4κ/dx²)`` (from
    the face velocities) the binding one; 1% beyond it is refused up front, naming the limit."""
    w0 = stirring(GRID, 1)
    c0 = blobs(GRID, 1)
    kappa = 0.05
    u, v = tr.face_velocities(w0, GRID)
    dx = GRID.x.dx
    rate = max(u.abs().max().item(), v.abs().max().item()) / dx
    limit = 1 / (4 * rate + 4 * kappa / dx**2)
    assert ns.stability_limit(GRID, 1e-3, ns.velocity(w0, GRID)[0].abs().max()) > 2 * limit
    with pytest.raises(SolverError, match="exceeds the step limit"):
        tr.solve_ns_tracer(w0, c0, GRID, 1e-3, kappa, [0.0, 0.05], max_step=1.01 * limit)
    w, c = tr.solve_ns_tracer(w0, c0, GRID, 1e-3, kappa, [0.0, 0.05], max_step=0.99 * limit)
    assert torch.equal(w[:, 0], w0) and torch.equal(c[:, 0], c0)  # t = 0 is the input itself


def test_a_tracer_that_overflows_is_a_solver_error_not_inf():
    c0 = 1e308 * blobs(GRID, 1) / blobs(GRID, 1).max()
    with pytest.raises(SolverError, match="NaN or inf"):
        tr.solve_tracer(c0, GRID, 0.0, [0.0, 0.05], (1.0, 0.0))


# ----------------------------------------------------------------------------- mutation-pass checks


def test_misshapen_arguments_are_refused_naming_them(tmp_path):
    """Each is a clear ``ValueError``/``TypeError``, not a broadcast, an unpacking error or a
    silent answer."""
    c0 = blobs(GRID, 2)
    t = [0.0, 0.1]
    flow = (1.0, 0.0)
    shape = tr.gaussian_blob(GRID, [0.5, 0.5], 0.1)[0]
    with pytest.raises(ValueError, match="centre must be a finite pair"):
        tr.gaussian_blob(GRID, torch.full((1, 2, 2), 0.5, dtype=F64), 0.1)
    with pytest.raises(ValueError, match=r"^kappa must be a finite number >= 0, got -0\.001$"):
        tr.drifting_blob(GRID, t, [0.5, 0.5], 0.1, flow, -1e-3)
    with pytest.raises(ValueError, match="flow must be a pair"):
        tr.drifting_blob(GRID, t, [0.5, 0.5], 0.1, (1.0, 0.0, 2.0), 1e-3)
    with pytest.raises(ValueError, match="centre must be a pair"):
        tr.drifting_blob(GRID, t, [[0.5, 0.5, 0.1]] * 2, 0.1, flow, 1e-3)
    with pytest.raises(ValueError, match="w must have shape"):
        tr.face_velocities(torch.zeros(1, 24, 23, dtype=F64), GRID)
    with pytest.raises(TypeError, match=r"pdes\.tracer\.Source"):
        tr.solve_tracer(c0, GRID, 1e-3, t, flow, source=(shape, lambda s: s))
    message = r"^source\.shape must have shape \(24, 24\) or \(3, 24, 24\), got \(2, 24, 24\)$"
    with pytest.raises(ValueError, match=message):
        tr.solve_tracer(
            blobs(GRID, 3), GRID, 1e-3, t, flow, source=tr.Source(shape.expand(2, -1, -1), abs)
        )
    message = r"^kappa must be a number or hold one value per sample \(2,\), got 3$"
    with pytest.raises(ValueError, match=message):
        tr.solve_tracer(c0, GRID, torch.tensor([1e-3, 1e-3, 1e-3], dtype=F64), t, flow)
    with pytest.raises(ValueError, match="c0 must hold one field per sample"):
        tr.solve_ns_tracer(stirring(GRID, 2), c0[:1], GRID, 1e-3, 1e-3, t)
    with pytest.raises(ValueError, match=r"^blobs must be an integer >= 1, got 0$"):
        generate_dataset("ns-tracer", tmp_path / "b.h5", n=1, progress=False, nx=8, blobs=0)


def test_pulsed_release_is_its_closed_form_between_whole_periods():
    """``A(t) = rate (t − sin(ωt)/ω)``: at a quarter and three quarters of the period
    ``sin(ωt) = ±1``, ``ω = π`` for period 2."""
    release = tr.PulsedRelease(0.3, 2.0)
    assert release(0.5) == pytest.approx(0.3 * (0.5 - 1 / math.pi), rel=1e-15)
    assert release(1.5) == pytest.approx(0.3 * (1.5 + 1 / math.pi), rel=1e-15)


def test_a_source_splits_each_step_for_second_order_in_time():
    """Half the step's release before the transport and half after (Strang): halved steps shrink
    the L1 differences of successive answers by 4; the whole release on one side gives 2."""
    grid = Grid2D.square(16, periodic=True)
    c0 = tr.random_blobs(grid, _gen(1), 2, 0.12)
    shape = tr.gaussian_blob(grid, [0.3, 0.6], 0.08)
    source = tr.Source(shape, tr.PulsedRelease(4.0, 0.5))
    t = torch.tensor([0.0, 0.5], dtype=F64)
    answers = [
        tr.solve_tracer(c0, grid, 1e-3, t, (0.5, 0.25), source, max_step=0.5 / steps)[:, -1]
        for steps in (32, 64, 128, 256)
    ]
    changes = [(a - b).abs().mean().item() for a, b in zip(answers, answers[1:], strict=False)]
    orders = [math.log2(d0 / d1) for d0, d1 in zip(changes, changes[1:], strict=False)]
    assert min(orders) > 1.8, (changes, orders)


def test_face_velocity_tensors_carry_the_blob_along_their_own_axes():
    """``flow = (U, V)`` as tensors: U on the x faces, V on the y faces; a uniform pair carries
    the blob as :func:`drifting_blob` does (L1 within 5%; swapped faces move it elsewhere)."""
    box = Grid2D(Grid1D(64, 0.0, 1.0, periodic=True), Grid1D(32, -1.0, 1.0, periodic=True))
    t = torch.tensor([0.0, 0.25], dtype=F64)
    exact = tr.drifting_blob(box, t, [0.3, 0.2], 0.15, (0.5, -1.0), 5e-3)
    faces = (torch.full(box.shape, 0.5, dtype=F64), torch.full(box.shape, -1.0, dtype=F64))
    c = tr.solve_tracer(exact[:, 0], box, 5e-3, t, faces)
    error = (c[:, 1] - exact[:, 1]).abs().mean() / exact[:, 1].abs().mean()
    assert error < 0.05, error


def test_planned_speed_adds_t_end_times_the_forcings_speed():
    """Forcing ``F cos 2πx`` has ``ψ = F cos 2πx/(2π)²`` and speed ``|ψ_x| ≤ F/(2π)`` (reached at
    ``x = 1/4`` on a grid of 24): the plan is ``speed0 + t_end F/(2π)``."""
    x, _ = GRID.coordinates()
    force = ns.forcing_coefficients(3.0 * torch.cos(2 * math.pi * x), GRID, 1, "cpu")
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    planned = tr._planned_speed(GRID, torch.tensor([0.3, 0.1], dtype=F64), force, t)
    assert planned == pytest.approx(0.3 + 2.0 * 3.0 / (2 * math.pi), rel=1e-12)


def test_recipe_records_its_settings_and_the_step_it_took(tmp_path):
    """A given ``max_step`` is recorded as given, ``kappa`` and ``nu`` stored per sample as set;
    the default step, with a diffusion strong enough to bind, is recorded as 0.8 of the tracer's
    limit ``1 / (4 U/dx + 2κ (1/dx² + 1/dy²))`` at the planned speed ``U`` (that the step is used:
    the flow test below)."""
    options = {**OPTIONS, "nu": 2e-3, "kappa": 7e-4}
    given = generate_dataset(
        "ns-tracer", tmp_path / "g.h5", n=2, progress=False, max_step=0.01, **options
    )
    data = load(given)
    assert data.attrs["max_step"] == 0.01
    torch.testing.assert_close(data.params["kappa"], torch.full((2,), 7e-4, dtype=F64))
    torch.testing.assert_close(data.params["nu"], torch.full((2,), 2e-3, dtype=F64))
    strong = {**options, "kappa": 0.05}
    default = load(generate_dataset("ns-tracer", tmp_path / "d.h5", n=1, progress=False, **strong))
    settings = tr.PROBLEMS[0].settings(**strong)
    speed, n = ns.recipe_speed(tr.PROBLEMS[0].grid(settings), settings), OPTIONS["nx"]
    limit = 1 / (4 * speed * n + 2 * 0.05 * 2 * n**2)
    assert default.attrs["max_step"] == pytest.approx(0.8 * limit, rel=1e-12)


def test_the_flow_follows_the_grf_and_forcing_options_like_navier_stokes(tmp_path):
    settings = {**{k: OPTIONS[k] for k in ("nx", "nt", "t_end")}, "tau": 5.0, "forcing": "none"}
    tracer = generate_dataset("ns-tracer", tmp_path / "t.h5", n=1, progress=False, **settings)
    flow = generate_dataset("navier-stokes", tmp_path / "f.h5", n=1, progress=False, **settings)
    with_tracer, alone = load(tracer), load(flow)
    for name in ("vx", "vy"):
        torch.testing.assert_close(with_tracer.fields[name], alone.fields[name], rtol=0, atol=1e-13)


def test_source_recipe_adds_its_release_times_the_unit_gaussian_it_records(tmp_path):
    """A flow of amplitude ``sigma`` = 1e-9 (speeds ~3e-12) and κ = 0: ``c(t) − c(0) = A(t) f``
    with ``f`` the Gaussian of std ``source_width`` at the recorded ``(source_x, source_y)``,
    summed by hand over images and normalised on the grid; ``A`` the closed form for
    ``source_rate`` and ``source_period``."""
    options = {"nx": 16, "nt": 2, "t_end": 0.6, "blobs": 1, "sigma": 1e-9, "forcing": "none"}
    source = {"kappa": 0.0, "source_rate": 0.5, "source_period": 2.0, "source_width": 0.1}
    out = generate_dataset(
        "ns-tracer-source", tmp_path / "s.h5", n=2, progress=False, **options, **source
    )
    data = load(out)
    grid = Grid2D.square(16, periodic=True)
    x, y = grid.coordinates()
    amount = 0.5 * (0.6 - math.sin(0.6 * math.pi) / math.pi)
    torch.testing.assert_close(data.fields["released"][:, -1], torch.full((2,), amount, dtype=F64))
    for sample in range(2):
        cx, cy = data.params["source_x"][sample].item(), data.params["source_y"][sample].item()
        f = torch.zeros_like(x)
        for m in range(-2, 3):
            for n in range(-2, 3):
                f += torch.exp(-((x - cx + m) ** 2 + (y - cy + n) ** 2) / (2 * 0.1**2))
        f = f / grid.integrate(f[None])
        change = data.u[sample, -1] - data.u[sample, 0]
        torch.testing.assert_close(change, amount * f, rtol=0, atol=1e-6 * amount * f.max())


def test_a_face_rate_that_peaks_inside_a_check_block_is_caught():
    """Shear modes ``w = a₁ cos 2πx + a₃ cos 6πx`` are linear: ``a₁`` decays at
    ``λ = ν(2π)²``, ``a₃ = F/(9λ)(1 − e^{−9λt})`` grows under forcing ``F cos 6πx``. Both add
    at ``x = 1/4``, so the face rate ``(a₁ q₁ − a₃ q₃)/dy`` (``q_k = 2 sin(k dx/2)/(k² dx)``)
    rises 24% above its start, then falls 36% below it by ``t = 1``, all within one block of
    30 steps: a step 10% inside the limit at the start (further inside it at the end) is
    refused, one 10% inside it at the peak is not."""
    grid = Grid2D.square(16, periodic=True)
    x, _ = grid.coordinates()
    dx, dy = grid.spacing
    nu, t_end, steps = 0.05, 1.0, 30
    decay = nu * (2 * math.pi) ** 2
    k1, k3 = 2 * math.pi, 6 * math.pi
    q1, q3 = (2 * math.sin(k * dx / 2) / (k * k * dx) for k in (k1, k3))
    h = t_end / steps
    a1 = dy / (4 * 1.1 * h) / q1
    force = -0.5 * a1 * q1 * 9 * decay / q3

    def rate(t: float) -> float:
        grown = -force / (9 * decay) * (1 - math.exp(-9 * decay * t))
        return (a1 * math.exp(-decay * t) * q1 + grown * q3) / dy

    peak = max(rate(i / 1000) for i in range(1001))
    assert peak > 1.2 * rate(0.0) and rate(t_end) < 0.7 * rate(0.0)
    assert ns.stability_limit(grid, nu, peak * dy) > 5 * h  # the tracer's limit binds
    c0 = blobs(grid, 1)

    def run(max_step: float):
        w0 = a1 * torch.cos(k1 * x)[None]
        return tr.solve_ns_tracer(
            w0, c0, grid, nu, 0.0, [0.0, t_end], force * torch.cos(k3 * x), None, max_step
        )

    with pytest.raises(SolverError, match="smaller max_step"):
        run(h)
    _, c = run(1 / (4 * 1.1 * peak))
    assert (c >= 0).all()


@pytest.mark.parametrize("returned", ["0", None, {"mass": 0.0}, True, 0j])
def test_a_source_releasing_what_is_not_numbers_is_refused_naming_it(returned):
    c0 = blobs(GRID, 2)
    shape = tr.gaussian_blob(GRID, [0.5, 0.5], 0.1)[0]
    source = tr.Source(shape, lambda s: returned)
    expected = r"^source.released\(t\) must be a finite number or \(2,\) \(t=0\), got "
    with pytest.raises(TypeError, match=expected + re.escape(repr(returned))):
        tr.solve_tracer(c0, GRID, 1e-3, [0.0, 0.1], (1.0, 0.0), source=source)
