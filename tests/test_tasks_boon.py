"""The BOON experiment pieces: datasets and their prescribed values, error measures, fair set-up."""

import dataclasses
import math

import pytest
import torch

from pdes import Dirichlet, Grid1D, Grid2D, Neumann, Periodic
from pdes.heat import neumann_mass
from pdes.problems import get as get_recipe
from physml.constraints import BoundaryCondition
from physml.models import OneActivationBlocks
from physml.tasks import boon

QUICK = "quick"


def walls(bc, grid, axis=-1):
    """A condition of ``bc``'s kind at both ends of ``axis`` (values filled per batch)."""
    return boon.AxisWalls(BoundaryCondition(bc, grid, axis=axis))


@pytest.fixture(scope="module")
def quick_data():
    return {name: boon.case_data(name, QUICK) for name in boon.CASES}


# ------------------------------------------------------------------------------------------
# Datasets: shapes, and prescribed values (from the recipes' settings) that the solver data meet


def test_every_case_has_float32_pairs_of_the_documented_shapes(quick_data):
    for name, data in quick_data.items():
        plan = boon.budget(name, QUICK)
        assert data.train_x.dtype == data.train_y.dtype == torch.float32, name
        assert data.train_x.shape[0] == plan.train and data.test_x.shape[0] == plan.test
        family = boon.CASES[name].family
        if family == "1d":
            assert data.test_y.shape[1:] == (1, plan.nx)
        elif family == "xt":
            assert data.test_y.shape[1:] == (1, plan.nx, 25) and data.times.numel() == 25
        else:
            assert data.test_y.shape[1:] == (50, plan.nx, plan.nx)


def test_heat_fluxes_follow_the_heater_formula(quick_data):
    # independent: g_R(t) = 5 sin(pi t) at t = T (single step) and at t_k = k/25 (multi-step)
    single = quick_data["heat-neumann"].test_values
    assert torch.allclose(single[:, 0], torch.zeros(len(single), dtype=torch.float64))
    assert torch.allclose(
        single[:, 1], torch.full_like(single[:, 1], 5.0 * math.sin(0.5 * math.pi))
    )
    multi = quick_data["heat-neumann-multistep"].test_values
    t = torch.arange(1, 26, dtype=torch.float64) / 25.0
    assert torch.allclose(multi[:, 1], (5.0 * torch.sin(math.pi * t)).expand_as(multi[:, 1]))


@pytest.mark.parametrize(
    "name",
    [
        "heat-neumann",
        "heat-neumann-multistep",
        "stokes-dirichlet",
        "stokes-dirichlet-multistep",
        "stokes-varying-frequency",
        "stokes-varying-frequency-multistep",
    ],
)
def test_solver_targets_meet_the_prescribed_values(quick_data, name):
    # the values come from the recipe's parameters; the solver's own data must agree with them
    # (up to float32 rounding of the stored targets, amplified by 3/(2dx) for fluxes)
    data = quick_data[name]
    error = data.walls.error(data.test_y, data.test_values).max().item()
    assert error < (1e-4 if data.walls.kind == "neumann" else 1e-6), error


def test_stokes_wall_value_is_the_plate_velocity():
    # U cos(omega T) at y = 0, written out from the recipe's parameters
    problem = get_recipe("stokes")
    settings = problem.settings(nx=33, nt=2, t_end=boon.SINGLE_T)
    batch = problem.generate([boon.TEST_SEED], settings)
    data = boon.case_data("stokes-dirichlet", QUICK)
    p = batch.params
    expected = p["amplitude"] * torch.cos(p["omega"] * boon.SINGLE_T)
    torch.testing.assert_close(data.test_values[0, 0], expected[0])


def test_cavity_and_periodic_targets_meet_their_walls(quick_data):
    cavity = quick_data["cavity"]
    assert cavity.walls.error(cavity.test_y, cavity.test_values).max() < 1e-6
    lid = cavity.test_values
    assert ((lid >= 0.5) & (lid <= 1.5)).all()
    torch.testing.assert_close(
        cavity.test_y[:, :25, 1:-1, -1],
        lid[:, None, None].float().expand(-1, 25, cavity.test_y.shape[2] - 2),
    )
    periodic = quick_data["burgers-periodic"]
    assert torch.equal(periodic.test_y[..., 0], periodic.test_y[..., -1])
    assert periodic.test_values is None


# ------------------------------------------------------------------------------------------
# Error measures against fields with known errors


def test_one_dimensional_errors_on_known_fields():
    grid = Grid1D(21)
    x = grid.coordinates()
    u = (2.0 + 0.5 * x**2)[None, None].expand(3, 1, -1)  # du/dx = x: 0 at the left, 1 at the right
    values = torch.tensor([[0.0, 1.0], [0.25, 1.0], [0.0, -1.0]], dtype=torch.float64)
    flux = walls(Neumann(), grid).error(u, values)
    torch.testing.assert_close(flux, torch.tensor([0.0, 0.25, 2.0], dtype=torch.float64))
    ends = torch.tensor([[2.0, 2.5], [2.0, 2.0], [1.0, 2.5]], dtype=torch.float64)
    value = walls(Dirichlet(), grid).error(u, ends)
    torch.testing.assert_close(value, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    periodic = walls(Periodic(), grid).error(u, None)
    torch.testing.assert_close(periodic, torch.full((3,), 0.5, dtype=torch.float64))


def test_multistep_error_reads_the_value_at_each_time():
    grid, steps = Grid1D(9), 4
    u = torch.zeros(2, 1, grid.n, steps, dtype=torch.float64)
    values = torch.zeros(2, 2, steps, dtype=torch.float64)
    u[1, 0, -1, 2] = 0.3  # sample 1, right wall, third time
    error = walls(Dirichlet(), grid, axis=-2).error(u, values)
    torch.testing.assert_close(error, torch.tensor([0.0, 0.3], dtype=torch.float64))
    values[0, 0, 1] = -0.2
    error = walls(Dirichlet(), grid, axis=-2).error(u, values)
    torch.testing.assert_close(error, torch.tensor([0.2, 0.3], dtype=torch.float64))


def test_cavity_error_sees_the_lid_and_the_corners():
    cavity = boon.CavityWalls(Grid2D.square(9), steps=2)
    lid = torch.tensor([1.0, 0.5], dtype=torch.float64)
    u = torch.zeros(2, 4, 9, 9, dtype=torch.float64)
    u[:, :2, :, -1] = lid[:, None, None]  # vx = U on the top row, corners included
    assert cavity.error(u, lid).max() == 0.0
    u[1, 3, -1, -1] = 0.1  # vy at the top right corner must be 0
    torch.testing.assert_close(cavity.error(u, lid), torch.tensor([0.0, 0.1], dtype=torch.float64))
    # the output seam meets the walls in the documented order (the lid wins at its corners)
    noise = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    assert cavity.error(boon.with_walls(noise, cavity.conditions(lid)), lid).max() < 1e-12


def test_float32_flux_floor_is_half_an_ulp_times_the_stencil_weight():
    grid = Grid1D(65)
    u = torch.zeros(1, 1, grid.n)
    u[..., 0] = 3.0  # ulp of numbers in [2, 4) is 2**-22
    expected = 2.0**-23 * 3.0 / (2.0 * grid.dx)
    assert boon.float32_flux_floor(u, walls(Neumann(), grid)) == pytest.approx(expected)
    assert boon.float32_flux_floor(u, walls(Dirichlet(), grid)) == 0.0


def test_float32_flux_floor_reads_both_walls_by_magnitude_and_only_for_neumann():
    grid = Grid1D(65)
    expected = 2.0**-23 * 3.0 / (2.0 * grid.dx)  # |u| = 3 in [2, 4): half an ulp is 2**-23
    for index, value in ((-1, 3.0), (0, -3.0), (-1, -3.0)):
        u = torch.zeros(1, 1, grid.n)
        u[..., index] = value
        assert boon.float32_flux_floor(u, walls(Neumann(), grid)) == pytest.approx(expected)
    assert boon.float32_flux_floor(u, walls(Periodic(), grid)) == 0.0
    assert boon.float32_flux_floor(torch.zeros(1, 1, grid.n), walls(Neumann(), grid)) == 0.0


def test_neumann_error_is_float64_even_for_float32_fields():
    # a constant field has zero flux; its float32 stencil would round -3u to a wrong even number
    grid = Grid1D(9)
    u = torch.full((1, 1, grid.n), 2.0**23 + 1.0, dtype=torch.float32)
    assert u[0, 0, 0].item() == 2.0**23 + 1.0  # exactly representable in float32
    error = walls(Neumann(), grid).error(u, torch.zeros(1, 2, dtype=torch.float64))
    assert error.dtype == torch.float64 and error.item() == 0.0


def test_periodic_error_is_the_largest_seam_over_channels_and_times():
    grid = Grid1D(9)
    u = torch.zeros(2, 2, grid.n, 3, dtype=torch.float64)
    u[0, 1, 0, 2] = 0.4  # sample 0, second channel, last time
    u[1, 0, -1, 0] = -0.1
    error = walls(Periodic(), grid, axis=-2).error(u, None)
    torch.testing.assert_close(error, torch.tensor([0.4, 0.1], dtype=torch.float64))


def test_wall_channels_follow_the_constrained_axis():
    grid = Grid1D(5)
    like = torch.zeros(2, 1, 3, grid.n)  # (sample, channel, t, x): walls along the last axis
    values = torch.arange(12, dtype=torch.float64).reshape(2, 2, 3)  # (sample, side, t)
    channels = walls(Dirichlet(), grid, axis=-1).channels(values, like)
    assert channels.shape == (2, 2, 3, grid.n)
    for x in range(grid.n):
        torch.testing.assert_close(channels[..., x], values.float())
    like = torch.zeros(2, 1, grid.n, 3)  # (sample, channel, x, t)
    with pytest.raises(ValueError, match=r"values must be a \(2, 2, 3\) tensor"):
        walls(Dirichlet(), grid, axis=-2).channels(torch.zeros(2, 2, 1), like)


def test_walls_refuse_bad_conditions_and_values():
    grid = Grid1D(9)
    with pytest.raises(TypeError, match="two-sided BoundaryCondition"):
        boon.AxisWalls(BoundaryCondition(Dirichlet(), grid, side="right"))
    with pytest.raises(ValueError, match=r"values must be a \(batch, 2, \.\.\.\) tensor"):
        walls(Dirichlet(), grid).conditions(torch.zeros(3))
    with pytest.raises(ValueError, match="lid speeds"):
        boon.CavityWalls(Grid2D.square(9), 2).conditions(torch.tensor(1.0))


def test_cavity_lid_keeps_float64_speeds():
    cavity = boon.CavityWalls(Grid2D.square(9), steps=2)
    lid = cavity.lid(torch.tensor([0.1, 0.3], dtype=torch.float64))
    assert lid.dtype == torch.float64 and lid.shape == (2, 4, 1)
    assert lid[0, 0, 0].item() == 0.1 and lid[1, 1, 0].item() == 0.3
    assert lid[:, 2:].abs().max() == 0.0  # vy is 0 on the lid
    tall = boon.CavityWalls(Grid2D(Grid1D(9), Grid1D(5)), steps=1)
    assert tall.kind == "dirichlet" and tall.dx == 1.0 / 8  # the x walls' normal spacing


# ------------------------------------------------------------------------------------------
# Fair comparison and runs


def test_varying_frequency_hides_the_phase_from_the_input():
    # omega is drawn per sample in [5, 20]; the wall values U cos(omega t) carry it
    problem = get_recipe("stokes")
    settings = problem.settings(nx=33, nt=26, t_end=boon.MULTI_T, **boon.VARYING_FREQUENCY)
    seeds = list(range(boon.TEST_SEED, boon.TEST_SEED + 4))
    p = problem.generate(seeds, settings).params
    assert p["omega"].min() >= 5.0 and p["omega"].max() <= 20.0 and p["omega"].std() > 0.5
    data = boon.case_data("stokes-varying-frequency-multistep", QUICK)
    times = torch.linspace(0, boon.MULTI_T, 26, dtype=torch.float64)[1:]
    expected = p["amplitude"][:, None] * torch.cos(p["omega"][:, None] * times)
    torch.testing.assert_close(data.test_values[:4, 0], expected)
    assert boon.CASES["stokes-varying-frequency-multistep"].varying
    assert not boon.CASES["stokes-dirichlet-multistep"].varying


@pytest.mark.parametrize("name", ["stokes-varying-frequency", "heat-neumann-multistep"])
def test_the_wall_input_peer_is_told_the_values(quick_data, name):
    data = quick_data[name]
    plan = boon.budget(name, QUICK)
    peer = boon.build_model(boon.PEER, data, plan, seed=2)
    x, values = data.test_x[:2], data.test_values[:2]
    channels = data.walls.channels(values, x)
    assert channels.shape == (2, 2, *x.shape[2:]) and channels.dtype == x.dtype
    for side in (0, 1):  # each wall's value spread over the domain, written out
        spread = values[:, side].float().reshape(2, *[1] * (x.ndim - 3), -1)
        torch.testing.assert_close(channels[:, side], spread.expand(x[:, 0].shape))
    with torch.no_grad():
        told, other = peer(x, values), peer(x, values + 1.0)
    assert told.shape == data.test_y[:2].shape
    assert (told - other).abs().max() > 1e-4  # the values reach the prediction
    with pytest.raises(ValueError, match="needs prescribed wall values"):
        boon.build_model(boon.PEER, quick_data["burgers-periodic"], plan, seed=0)
    with pytest.raises(ValueError, match="values must be a"):
        data.walls.channels(values[:1], x)
    with pytest.raises(ValueError, match="values must be a"):
        data.walls.channels(None, x)
    with pytest.raises(ValueError, match="no wall-value input channels"):
        quick_data["cavity"].walls.channels(torch.ones(2), quick_data["cavity"].test_x[:2])


def test_fno_and_boon_start_from_the_same_weights(quick_data):
    data = quick_data["heat-neumann"]
    plan = boon.budget("heat-neumann", QUICK)
    fno = dict(boon.build_model("fno", data, plan, seed=3).fno.named_parameters())
    for method in ("boon", "boon-output"):
        corrected = dict(boon.build_model(method, data, plan, seed=3).fno.named_parameters())
        assert fno.keys() == corrected.keys() and len(fno) > 4
        assert all(torch.equal(fno[k], corrected[k]) for k in fno)


def test_the_ablation_corrects_only_the_output(quick_data):
    # boon-output = the FNO's output with its walls replaced: the interior is the plain FNO's
    data = quick_data["stokes-dirichlet"]
    plan = boon.budget("stokes-dirichlet", QUICK)
    plain = boon.build_model("fno", data, plan, seed=1)
    output = boon.build_model("boon-output", data, plan, seed=1)
    kernel = boon.build_model("boon", data, plan, seed=1)
    x, values = data.test_x, data.test_values
    with torch.no_grad():
        reference, ablated, corrected = plain(x, values), output(x, values), kernel(x, values)
    torch.testing.assert_close(ablated[..., 1:-1], reference[..., 1:-1])
    torch.testing.assert_close(ablated[:, 0, 0], values[:, 0].float())
    torch.testing.assert_close(ablated[:, 0, -1], values[:, 1].float())
    assert (corrected[..., 1:-1] - reference[..., 1:-1]).abs().max() > 1e-3
    assert plain.constrained is None and not output.constrained.kernel
    assert kernel.constrained.kernel and len(kernel.constrained.correction.layers) == plan.layers


def test_walls_fill_only_the_values_of_their_conditions(quick_data):
    # the kind, grid, axis and sides are the BoundaryCondition's; a batch changes only values
    for name, data in quick_data.items():
        (first, *_) = template = data.walls.template
        assert data.walls.kind == first.kind and data.walls.dx == first.grid.dx, name
        values = None if data.test_values is None else data.test_values[:2]
        filled = data.walls.conditions(values)
        assert [c.walls_key for c in filled] == [c.walls_key for c in template], name
    multi = quick_data["heat-neumann-multistep"].walls
    assert multi.axis == -2 and multi.kind == "neumann"


def test_the_overwrite_network_is_the_trained_fno_through_the_output_seam(quick_data):
    data = quick_data["heat-neumann"]
    plan = boon.budget("heat-neumann", QUICK)
    plain = boon.build_model("fno", data, plan, seed=4)
    overwriting = boon.overwriting(plain, data)
    assert overwriting.fno is plain.fno and not overwriting.constrained.kernel
    x, values = data.test_x, data.test_values
    with torch.no_grad():
        raw, walled = plain(x, values), overwriting(x, values)
    assert torch.equal(walled, boon.with_walls(raw, data.walls.conditions(values)))
    torch.testing.assert_close(walled[..., 1:-1], raw[..., 1:-1], rtol=0, atol=0)
    assert data.walls.error(walled, values).max() < 1e-3  # float32 walls
    with pytest.raises(ValueError, match="plain FNO"):
        boon.overwriting(boon.build_model("boon", data, plan, seed=4), data)


@pytest.mark.parametrize("name", ["stokes-dirichlet", "heat-neumann-multistep", "cavity"])
def test_run_case_rows_meet_the_conditions(name):
    fno = boon.run_case(name, "fno", 0, QUICK)
    corrected = boon.run_case(name, "boon", 0, QUICK)
    rows = {row["method"]: row for row in fno.rows + corrected.rows}
    assert set(rows) == set(boon.METHODS)
    for method in ("fno-overwrite", "boon"):
        assert rows[method]["boundary_error"] <= 1e-5
    assert rows["fno"]["boundary_error"] > 1e-3  # an untrained FNO does not meet them
    if name == "stokes-dirichlet":
        assert "rel_l2_over_time" not in rows["boon"]
    else:  # per step; the whole field's error is a weighted mean of them, so min <= it (roughly)
        curve = rows["boon"]["rel_l2_over_time"]
        assert len(curve) == 25 and min(curve) <= rows["boon"]["rel_l2"] * 1.5
    # the overwrite changes only the walls: the interior error is the FNO's
    assert rows["fno-overwrite"]["rel_l2_interior"] == pytest.approx(rows["fno"]["rel_l2_interior"])


def test_plots_are_written(tmp_path, quick_data):
    data = quick_data["heat-neumann"]
    predictions = {"solver copy": data.test_y.double()}
    boon.plot_boundary_zoom(data, predictions, tmp_path / "zoom.png")
    curves = {"fno": [[1.0, 0.5, 0.25]], "boon": [[0.5, 0.25, 0.1], [0.6, 0.3, 0.1]]}
    boon.plot_error_over_time(curves, [0.1, 0.2, 0.3], tmp_path / "time.png", "t")
    assert (tmp_path / "zoom.png").stat().st_size > 5_000
    assert (tmp_path / "time.png").stat().st_size > 5_000


# ------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="case must be one of"):
        boon.budget("heat", QUICK)
    with pytest.raises(ValueError, match="size must be one of"):
        boon.budget("heat-neumann", "huge")
    data = boon.case_data("heat-neumann", QUICK)
    plan = boon.budget("heat-neumann", QUICK)
    with pytest.raises(ValueError, match="method must be one of"):
        boon.build_model("fno-overwrite", data, plan, 0)
    with pytest.raises(ValueError, match="values must be a"):
        walls(Dirichlet(), Grid1D(9)).conditions(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="two-sided BoundaryCondition"):
        boon.AxisWalls(Dirichlet())
    with pytest.raises(ValueError, match="lid speeds"):
        boon.CavityWalls(Grid2D.square(9), 2).conditions(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="batch"):
        boon.train(
            boon.build_model("fno", data, plan, 0), data, boon.Budget(4, 4, 33, 1, batch=64), 0
        )
    with pytest.raises(ValueError, match="1-D cases"):
        boon.plot_boundary_zoom(boon.case_data("cavity", QUICK), {}, "unused.png")


def test_the_plain_layout_trains_the_reference_fno1d_into_an_exact_boon(quick_data):
    data = quick_data["burgers-dirichlet"]
    plan = dataclasses.replace(boon.budget("burgers-dirichlet", QUICK), fno="plain")
    model = boon.build_model("boon", data, plan, seed=2)
    blocks = model.fno.fno_blocks
    assert type(blocks) is OneActivationBlocks and not blocks.use_channel_mlp
    assert model.constrained.kernel and len(model.constrained.correction.layers) == plan.layers
    with torch.no_grad():
        out = model(data.test_x, data.test_values)
    assert float(data.walls.error(out.double(), data.test_values).max()) < 1e-5


def test_a_budget_refuses_an_unknown_fno_layout():
    with pytest.raises(ValueError, match=r"fno must be one of \('plain', 'neuralop'\), got 'x'"):
        boon.Budget(4, 4, 33, 1, fno="x")


# ------------------------------------------------------------------------------------------
# Datasets against independent values: the recipes' seeds, exact balance laws, output times


@pytest.mark.parametrize(
    ("name", "recipe", "settings"),
    [
        ("heat-neumann", "heat", dict(nx=33, flux_amplitude=5.0, kappa=0.05)),
        ("burgers-dirichlet", "burgers-dirichlet", dict(nx=33)),
        ("heat-neumann-multistep", "heat", dict(nx=17, flux_amplitude=5.0, kappa=0.05)),
    ],
)
def test_inputs_are_the_initial_states_of_the_documented_seeds(quick_data, name, recipe, settings):
    # training sample i is seed i, test sample j is seed 100 000 + j (disjoint), both at t = 0
    problem = get_recipe(recipe)
    data = quick_data[name]
    plan = boon.budget(name, QUICK)
    initial = problem.settings(nt=2, t_end=0.5, **settings)
    for inputs, first, count in ((data.train_x, 0, plan.train), (data.test_x, 100_000, plan.test)):
        u0 = problem.generate([first, first + count - 1], initial).u[:, 0].float()
        got = inputs[[0, -1], 0] if inputs.ndim == 3 else inputs[[0, -1], 0, :, 3]
        torch.testing.assert_close(got, u0, rtol=0, atol=1e-6)
    if data.train_x.ndim == 4:  # the multi-step input repeats u(x, 0) at every step
        assert torch.equal(data.test_x, data.test_x[..., :1].expand_as(data.test_x))


def test_periodic_burgers_appends_the_wrap_around_point_to_the_recipe_grid(quick_data):
    problem = get_recipe("burgers")
    data = quick_data["burgers-periodic"]
    batch = problem.generate([100_000], problem.settings(nx=32, nt=2, t_end=0.5))
    torch.testing.assert_close(data.test_x[0, 0, :32], batch.u[0, 0].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(data.test_y[0, 0, :32], batch.u[0, 1].float(), rtol=0, atol=1e-6)
    assert data.test_x[0, 0, 32] == data.test_x[0, 0, 0]


def test_heat_cases_gain_the_heat_their_right_wall_lets_in(quick_data):
    # d/dt ∫u dx = κ (u_x(1) − u_x(0)) = κ U sin(πt): ∫u(T) − ∫u(0) = κ U (1 − cos(πT)) / π with
    # κ = 0.05, U = 5; measured by the quantity the Neumann scheme changes at exactly that rate
    # (pdes.heat.neumann_mass), so a target one output step early or late is far off
    single = quick_data["heat-neumann"]
    grid = Grid1D(single.test_x.shape[-1])
    gain = neumann_mass((single.test_y - single.test_x)[:, 0].double(), grid)
    exact = 0.05 * 5.0 * (1.0 - math.cos(math.pi * 0.5)) / math.pi
    torch.testing.assert_close(gain, torch.full_like(gain, exact), rtol=1e-4, atol=0)
    assert single.info == {"t": 0.5, "flux_amplitude": 5.0, "kappa": 0.05}
    multi = quick_data["heat-neumann-multistep"]
    t = torch.arange(1, 26, dtype=torch.float64) / 25.0
    grid = Grid1D(multi.test_x.shape[-2])
    gain = neumann_mass((multi.test_y - multi.test_x)[:, 0].double().transpose(-1, -2), grid)
    exact = 0.05 * 5.0 * (1.0 - torch.cos(math.pi * t)) / math.pi
    torch.testing.assert_close(gain, exact.expand_as(gain), rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    ("name", "t_end"),
    [
        ("heat-neumann-multistep", 1.0),
        ("stokes-dirichlet-multistep", 1.0),
        ("stokes-varying-frequency-multistep", 1.0),
        ("cavity", 2.0),
    ],
)
def test_multistep_times_are_the_25_steps_after_zero(quick_data, name, t_end):
    expected = t_end * torch.arange(1, 26, dtype=torch.float64) / 25.0
    torch.testing.assert_close(quick_data[name].times, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["burgers-dirichlet", "wave-neumann"])
def test_walls_at_rest_are_met_by_the_solver(quick_data, name):
    # Burgers: u = 0 at both walls; wave from rest: zero flux at both ends
    data = quick_data[name]
    assert torch.equal(data.test_values, torch.zeros(len(data.test_x), 2, dtype=torch.float64))
    if name == "burgers-dirichlet":
        assert data.test_y[..., [0, -1]].abs().max() < 1e-6
    assert data.walls.error(data.test_y, data.test_values).max() < 1e-4


def test_stokes_far_value_is_the_exact_periodic_state(quick_data):
    # U e^(−kH) cos(ωt − kH), k = √(ω/2ν), H the recipe's depth, written out per sample
    problem = get_recipe("stokes")
    varying = dict(omega_min=5.0, omega_max=20.0)  # ω ~ U[5, 20]
    for name, extra in (("stokes-dirichlet", {}), ("stokes-varying-frequency", varying)):
        settings = problem.settings(nx=33, nt=2, t_end=0.5, **extra)
        p = problem.generate([100_000, 100_001], settings).params
        k, depth = torch.sqrt(p["omega"] / (2 * p["nu"])), settings["length"]
        far = p["amplitude"] * torch.exp(-k * depth) * torch.cos(p["omega"] * 0.5 - k * depth)
        wall = p["amplitude"] * torch.cos(p["omega"] * 0.5)
        values = quick_data[name].test_values[:2]
        torch.testing.assert_close(values, torch.stack([wall, far], dim=1))


def test_cavity_input_is_the_fluid_at_rest_under_the_moving_lid(quick_data):
    data = quick_data["cavity"]
    lid = data.test_values
    assert lid.dtype == torch.float64
    vx, vy = data.test_x[:, 0], data.test_x[:, 1]
    assert vy.abs().max() == 0 and vx[:, :, :-1].abs().max() == 0
    torch.testing.assert_close(vx[:, 1:-1, -1], lid[:, None].float().expand(-1, vx.shape[1] - 2))
    # 25 steps of vx then 25 of vy: vy vanishes on the lid row at every step
    assert data.test_y[:, 25:, :, -1].abs().max() < 1e-6
    assert data.walls.steps == 25
    # the documented problem: Re = 100 U, U ~ U[0.5, 1.5], 25 steps to t = 2, test seed 100 000
    problem = get_recipe("cavity")
    settings = dict(reynolds=100.0, lid_min=0.5, lid_max=1.5, t_end=2.0, nt=26)
    batch = problem.generate([100_000], problem.settings(nx=17, **settings))
    assert data.test_values[0] == batch.params["lid_velocity"][0]
    torch.testing.assert_close(data.test_y[0, 24], batch.fields["vx"][0, 25].float())
    torch.testing.assert_close(data.test_y[0, 49], batch.fields["vy"][0, 25].float())


def test_a_budget_is_checked_against_the_case_too():
    with pytest.raises(ValueError, match=r"^case must be one of \[.*\], got 'heat'$"):
        boon.budget("heat", boon.Budget(4, 4, 33, 1))


def test_wave_from_rest_is_d_alemberts_solution_at_half_time(quick_data):
    # c = 1, u_t(x, 0) = 0, u_x = 0 at both ends: u(x, T) = (ũ(x − T) + ũ(x + T)) / 2 with ũ the
    # even, 2-periodic extension of u(x, 0); T = 0.5 is 16 of the 32 grid steps (dispersion: 0.4 %)
    data = quick_data["wave-neumann"]
    n = data.test_x.shape[-1] - 1
    assert n == 32
    u0 = data.test_x[:, 0].double()
    nodes = torch.arange(n + 1)

    def reflected(k):
        k = k.abs()
        return torch.where(k > n, 2 * n - k, k)

    exact = 0.5 * (u0[:, reflected(nodes - n // 2)] + u0[:, reflected(nodes + n // 2)])
    error = (data.test_y[:, 0].double() - exact).abs().max() / u0.abs().max()
    assert error < 0.01, float(error)


def test_case_data_is_cached_per_case_and_budget():
    small, other_size = boon.Budget(2, 1, 17, 1), boon.Budget(1, 1, 25, 1)
    data = boon.case_data("burgers-dirichlet", small)
    assert data.train_x.shape == (2, 1, 17) and data.test_y.shape == (1, 1, 17)
    assert boon.case_data("burgers-dirichlet", small) is data
    other = boon.case_data("burgers-dirichlet", other_size)
    assert other.train_x.shape == (1, 1, 25)
    assert boon.case_data("wave-neumann", small) is not data


def test_case_data_is_cached_per_seed_scheme():
    from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme

    small = boon.Budget(2, 1, 17, 1)
    with seed_scheme(SEED_SCHEME):
        data = boon.case_data("burgers-dirichlet", small)
    with seed_scheme(MANUAL_SEED_SCHEME):
        manual = boon.case_data("burgers-dirichlet", small)
        drawn = boon.CASES["burgers-dirichlet"].build(small)  # drawn afresh under this scheme
        assert boon.case_data("burgers-dirichlet", small) is manual
    assert torch.equal(manual.train_x, drawn.train_x) and torch.equal(manual.test_y, drawn.test_y)
    assert not torch.equal(manual.train_x, data.train_x)
    with seed_scheme(SEED_SCHEME):
        assert boon.case_data("burgers-dirichlet", small) is data


def test_only_the_frequency_cases_hide_the_wall_forcing():
    varying = {name for name, case in boon.CASES.items() if case.varying}
    assert varying == {"stokes-varying-frequency", "stokes-varying-frequency-multistep"}
