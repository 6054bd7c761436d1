"""N-body digits: determinism, rendering, the physics (energy, momentum, force), the HDF5 recipe."""

import inspect
import math

import h5py
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pdes import problems
from physml.data import generate_dataset, load
from physml.data.nbody import (
    ENERGY_CONSERVING,
    acceleration,
    canvas_lengths,
    energy,
    nbody_digits,
    nbody_digits_from_seeds,
    render,
    simulate,
    sprite_pool,
)

SMALL = {"frames": 6, "size": 32}


def random_state(count: int, digits: int, extent: float, speed: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(count, digits, 2, generator=gen, dtype=torch.float64) * extent
    v = (torch.rand(count, digits, 2, generator=gen, dtype=torch.float64) - 0.5) * 2 * speed
    return x, v


# ------------------------------------------------------------------------------ determinism


def test_same_seed_same_data_and_other_seed_differs():
    a = nbody_digits(3, seed=5, **SMALL)
    b = nbody_digits(3, seed=5, **SMALL)
    c = nbody_digits(3, seed=6, **SMALL)
    for name in ("frames", "energy", "positions", "velocities", "sprite_index"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.frames, c.frames)
    assert not torch.equal(a.positions, c.positions)


def test_a_sequence_does_not_depend_on_its_batch():
    whole = nbody_digits(4, seed=2, **SMALL)
    alone = nbody_digits(1, seed=2, start=3, **SMALL)
    assert torch.equal(whole.frames[3:], alone.frames)
    assert torch.equal(whole.energy[3:], alone.energy)


def test_layout_dtypes_and_range():
    data = nbody_digits(2, seed=0, frames=5, size=32, digits=2)
    assert data.frames.shape == (2, 5, 1, 32, 32) and data.frames.dtype == torch.float32
    assert data.energy.shape == (2, 5) and data.energy.dtype == torch.float64
    assert data.positions.shape == data.velocities.shape == (2, 5, 2, 2)
    assert data.labels.shape == (2, 2) and data.times.tolist() == [0, 5, 10, 15, 20]
    assert data.frames.min() >= 0 and data.frames.max() <= 1
    assert data.frames.amax((2, 3, 4)).gt(0.5).all()  # every frame shows a digit
    inputs, targets = data.split(3)
    assert inputs.shape == (2, 3, 1, 32, 32) and targets.shape == (2, 2, 1, 32, 32)


# -------------------------------------------------------------------------------- rendering


def test_sprites_stay_in_the_frame_and_are_drawn_whole():
    data = nbody_digits(3, seed=1, frames=30, size=32, digits=1, speed=(2.0, 2.0))
    side = 8
    assert data.positions.min() >= 0 and data.positions.max() <= 32 - side
    # Fast sprites for 145 steps in a 24-pixel box must have bounced.
    assert (torch.diff(torch.sign(data.velocities), dim=1) != 0).any()
    frames = data.frames[:, :, 0]
    totals = frames.sum((-2, -1))
    torch.testing.assert_close(totals, totals[:, :1].expand_as(totals), rtol=1e-5, atol=0)
    for n in range(3):
        for t in range(0, 30, 7):
            row, col = (int(round(float(p))) for p in data.positions[n, t, 0])
            patch = frames[n, t, row : row + side, col : col + side]
            outside = frames[n, t].clone()
            outside[row : row + side, col : col + side] = 0
            assert outside.abs().max() == 0
            torch.testing.assert_close(patch.sum(), totals[n, 0])


def test_overlapping_sprites_take_the_brightest_value():
    gen = torch.Generator().manual_seed(0)
    sprites = torch.rand(1, 2, 4, 4, generator=gen)
    positions = torch.tensor([[[[1.0, 2.0], [2.2, 2.9]]]], dtype=torch.float64)
    frame = render(positions, sprites, 8)[0, 0, 0]
    expected = torch.zeros(8, 8)
    expected[1:5, 2:6] = sprites[0, 0]
    expected[2:6, 3:7] = torch.maximum(expected[2:6, 3:7], sprites[0, 1])
    assert torch.equal(frame, expected)


def test_the_recorded_state_and_sprites_reproduce_the_video():
    """``sprites`` are the upscaled load_digits images; rendering the recorded positions with
    them gives the frames, and simulating on from a frame's state gives the later frames."""
    from sklearn.datasets import load_digits

    settings = dict(frames=8, size=32, stride=5, g=0.025, softening=5.0, clip=1.0)
    data = nbody_digits(3, seed=4, **settings)
    images = torch.from_numpy(load_digits().images / 16.0)[data.sprite_index.flatten(), None]
    upscaled = torch.nn.functional.interpolate(images, size=(8, 8), mode="bilinear")
    torch.testing.assert_close(data.sprites, upscaled.float().reshape(3, 3, 8, 8))
    assert torch.equal(render(data.positions, data.sprites, 32), data.frames)
    later, _ = simulate(
        data.positions[:, 3],
        data.velocities[:, 3],
        4 * 5,
        box=24.0,
        g=0.025,
        softening=5.0,
        clip=1.0,
        record_every=5,
    )
    assert torch.equal(render(later, data.sprites, 32), data.frames[:, 3:])


def test_sprite_pools_split_the_handwriting():
    train, test = set(sprite_pool("train").tolist()), set(sprite_pool("test").tolist())
    assert not train & test and train | test == set(sprite_pool("all").tolist())
    data = nbody_digits(4, seed=0, split="test", **SMALL)
    assert set(data.sprite_index.flatten().tolist()) <= test


# ---------------------------------------------------------------------------------- physics


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), digits=st.integers(2, 4))
def test_acceleration_is_minus_the_gradient_of_the_potential(seed, digits):
    x, _ = random_state(1, digits, 40.0, 0.0, seed)
    x.requires_grad_(True)
    potential = energy(x, torch.zeros_like(x), 0.05, 10.0).sum()
    (gradient,) = torch.autograd.grad(potential, x)
    torch.testing.assert_close(acceleration(x.detach(), 0.05, 10.0), -gradient)


def test_two_bodies_pull_along_their_line_with_the_softened_magnitude():
    x = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]], dtype=torch.float64)
    a = acceleration(x, 0.05, 10.0)
    expected = 0.05 * torch.tensor([3.0, 4.0], dtype=torch.float64) / math.sqrt(25 + 100)
    torch.testing.assert_close(a[0, 0], expected)
    torch.testing.assert_close(a[0, 1], -expected)


def drift_and_exchange(dt: float, duration: float = 200.0, integrator: str = "euler"):
    x0, v0 = random_state(4, 3, 40.0, 0.2, seed=0)
    steps = int(duration / dt)
    x, v = simulate(x0, v0, steps, box=None, dt=dt, clip=None, integrator=integrator)
    total = energy(x, v, 0.05, 10.0)
    kinetic = 0.5 * v.square().sum((-2, -1))
    drift = (total - total[:, :1]).abs().amax(1)
    exchange = (kinetic - kinetic[:, :1]).abs().amax(1)
    return drift, exchange, v


def test_energy_is_conserved_to_first_order_without_clip_and_walls():
    drift, exchange, _ = drift_and_exchange(0.1)
    half, _, _ = drift_and_exchange(0.05)
    assert (exchange > 0.5).all()  # gravity really moves energy between the terms
    assert (drift < 0.01 * exchange).all()
    ratio = drift / half  # semi-implicit Euler: energy error proportional to dt
    assert ((ratio > 1.8) & (ratio < 2.2)).all(), ratio


def test_leapfrog_conserves_energy_to_second_order_without_clip_and_walls():
    drift, exchange, _ = drift_and_exchange(0.4, integrator="leapfrog")
    half, _, _ = drift_and_exchange(0.2, integrator="leapfrog")
    euler, _, _ = drift_and_exchange(0.4)
    assert (exchange > 0.5).all()
    assert (drift < 0.1 * euler).all()
    ratio = drift / half  # velocity Verlet: energy error proportional to dt²
    assert ((ratio > 3.6) & (ratio < 4.4)).all(), ratio


@pytest.mark.parametrize("integrator", ["euler", "leapfrog"])
def test_substeps_split_each_step(integrator):
    x0, v0 = random_state(3, 3, 20.0, 0.5, seed=4)
    options = {"box": 20.0, "g": 0.5, "clip": None, "integrator": integrator}
    x, v = simulate(x0, v0, 10, dt=1.0, substeps=4, record_every=2, **options)
    fine_x, fine_v = simulate(x0, v0, 40, dt=0.25, record_every=8, **options)
    torch.testing.assert_close(x, fine_x, rtol=0, atol=1e-12)
    torch.testing.assert_close(v, fine_v, rtol=0, atol=1e-12)


def test_energy_conserving_setting_keeps_the_drift_under_one_percent():
    data = nbody_digits(6, seed=3, frames=20, size=64, **ENERGY_CONSERVING)
    default = nbody_digits(6, seed=3, frames=20, size=64)
    drift = ((data.energy - data.energy[:, :1]) / data.energy[:, :1]).abs().amax(1)
    assert drift.max() <= 0.01, drift
    old = ((default.energy - default.energy[:, :1]) / default.energy[:, :1]).abs().amax(1)
    assert old.max() > 0.01  # the default setting does drift: the test can tell them apart
    assert torch.equal(data.positions[:, 0], default.positions[:, 0])  # same initial states
    assert (torch.diff(torch.sign(data.velocities), dim=1) != 0).any()  # walls were hit


def test_momentum_is_conserved_without_clip_and_walls():
    _, _, v = drift_and_exchange(0.5)
    momentum = v.sum(-2)
    torch.testing.assert_close(momentum, momentum[:, :1].expand_as(momentum))


def test_clip_bounds_every_velocity_component():
    x0, v0 = random_state(3, 3, 20.0, 0.5, seed=1)
    _, v = simulate(x0, v0, 300, box=20.0, g=0.5, clip=0.7)
    assert v[:, 1:].abs().max() <= 0.7


def test_gravity_free_sprites_keep_their_speed_and_move_straight_between_bounces():
    box, dt = 20.0, 1.0
    x0, v0 = random_state(5, 3, box, 1.5, seed=3)
    x, v = simulate(x0, v0, 200, box=box, dt=dt, g=0.0)
    speed = v.norm(dim=-1)
    torch.testing.assert_close(speed, speed[:, :1].expand_as(speed), rtol=0, atol=1e-12)
    unchanged = (v[:, 1:] == v[:, :-1]).all(-1)
    step = x[:, 1:] - x[:, :-1]
    torch.testing.assert_close(step[unchanged], v[:, 1:][unchanged] * dt)
    flipped = ~unchanged
    assert flipped.any()
    changed = v[:, 1:][flipped] != v[:, :-1][flipped]
    assert torch.equal(v[:, 1:][flipped][changed], -v[:, :-1][flipped][changed])
    at_wall = torch.minimum(x[:, 1:], box - x[:, 1:])[flipped][changed]
    assert at_wall.max() <= v0.abs().max() * dt  # a flip happens only next to a wall


def test_generator_gravity_switch():
    free = nbody_digits(3, seed=4, gravity=False, frames=10, size=32)
    torch.testing.assert_close(free.energy, free.energy[:, :1].expand_as(free.energy))
    moving = nbody_digits(3, seed=4, gravity=True, frames=10, size=32)
    kinetic = 0.5 * moving.velocities.square().sum((-2, -1))
    assert not torch.allclose(kinetic, kinetic[:, :1].expand_as(kinetic))


def test_canvas_lengths_at_64_are_the_generator_defaults():
    defaults = inspect.signature(nbody_digits).parameters
    lengths = canvas_lengths(64)
    assert set(lengths) == {"speed", "clip", "softening", "g"}
    assert {name: defaults[name].default for name in lengths} == lengths


@pytest.mark.parametrize("extra", [{}, ENERGY_CONSERVING], ids=["default", "energy-conserving"])
def test_canvas_lengths_shrink_the_motion_with_the_canvas(extra):
    """At 32² with the scaled lengths a video is the 64² video's motion at half the size: every
    position, velocity and energy halves (exactly: a factor of 2 is exact in floating point)."""
    large = nbody_digits(3, seed=5, frames=8, size=64, **{**canvas_lengths(64), **extra})
    small = nbody_digits(3, seed=5, frames=8, size=32, **{**canvas_lengths(32), **extra})
    assert torch.equal(small.positions, large.positions / 2)
    assert torch.equal(small.velocities, large.velocities / 2)
    assert torch.allclose(small.energy, large.energy / 4, rtol=1e-12, atol=0)
    unscaled = nbody_digits(3, seed=5, frames=8, size=32, **extra)
    assert not torch.allclose(unscaled.positions, large.positions / 2)


@pytest.mark.parametrize(
    ("size", "error"), [(0, ValueError), (-32, ValueError), (32.0, TypeError), (True, TypeError)]
)
def test_canvas_lengths_reject_a_bad_size(size, error):
    with pytest.raises(error, match=f"size must be an integer >= 1, got {size!r}"):
        canvas_lengths(size)


# ------------------------------------------------------------------------------- HDF5 recipe


@pytest.mark.parametrize("recipe", ["nbody-digits", "moving-digits"])
def test_recipe_writes_a_dataset_that_load_reads(tmp_path, recipe):
    assert recipe in problems.registry()
    path = generate_dataset(
        recipe, tmp_path / "digits.h5", n=3, seed=7, chunk=2, progress=False, frames=4, size=16
    )
    data = load(path)
    expected = nbody_digits(3, seed=7, frames=4, size=16, gravity=recipe == "nbody-digits")
    assert data.u.shape == (3, 4, 16, 16)
    assert torch.equal(data.u, expected.frames[:, :, 0])
    assert torch.equal(data.fields["energy"], expected.energy)
    assert torch.equal(data.fields["positions"], expected.positions)
    assert torch.equal(data.params["energy0"], expected.energy[:, 0])
    assert torch.equal(data.t, expected.times)
    assert data.coords["x"].shape == data.coords["y"].shape == (16,)
    with h5py.File(path) as f:
        assert int(f.attrs["gravity"]) == (recipe == "nbody-digits")


def test_recipe_passes_the_integrator_options(tmp_path):
    options = {"frames": 4, "size": 16, "integrator": "leapfrog", "substeps": 2, "clip": 0.0}
    path = generate_dataset(
        "nbody-digits", tmp_path / "a.h5", n=2, seed=1, progress=False, **options
    )
    expected = nbody_digits(
        2, seed=1, frames=4, size=16, integrator="leapfrog", substeps=2, clip=None
    )
    assert torch.equal(load(path).fields["energy"], expected.energy)
    with pytest.raises(ValueError, match="integrator"):
        generate_dataset("nbody-digits", tmp_path / "b.h5", n=1, progress=False, integrator="rk4")


def test_recipe_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="gravity"):
        generate_dataset("nbody-digits", tmp_path / "a.h5", n=1, progress=False, gravity=2)
    with pytest.raises(ValueError, match="unknown option"):
        generate_dataset("nbody-digits", tmp_path / "b.h5", n=1, progress=False, planets=2)


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"count": 0}, ValueError, "count"),
        ({"count": 1.5}, TypeError, "count"),
        ({"count": 1, "seed": -1}, ValueError, "seed"),
        ({"count": 1, "size": 16, "sprite": 16}, ValueError, "sprite"),
        ({"count": 1, "frames": 0}, ValueError, "frames"),
        ({"count": 1, "split": "validation"}, ValueError, "split"),
        ({"count": 1, "speed": (2.0, 1.0)}, ValueError, "speed"),
        ({"count": 1, "speed": (-1.0, 1.0)}, ValueError, "speed"),
        ({"count": 1, "gravity": "yes"}, TypeError, "gravity"),
        ({"count": 1, "softening": 0.0}, ValueError, "softening"),
        ({"count": 1, "dt": -1.0}, ValueError, "dt"),
        ({"count": 1, "integrator": "rk4"}, ValueError, "integrator"),
        ({"count": 1, "substeps": 0}, ValueError, "substeps"),
        ({"count": 1, "start": -1}, ValueError, "start must be an integer >= 0, got -1"),
    ],
)
def test_generator_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        nbody_digits(**kwargs)


def test_simulate_rejects_bad_states():
    good = torch.zeros(1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"positions must have shape \(N, D, 2\)"):
        simulate(torch.zeros(2, 2), good, 1, box=1.0)
    with pytest.raises(TypeError, match="velocities"):
        simulate(good, [[0.0, 0.0]], 1, box=1.0)
    with pytest.raises(ValueError, match="NaN"):
        simulate(good, torch.full((1, 2, 2), float("nan")), 1, box=1.0)
    with pytest.raises(ValueError, match="velocities must have the shape"):
        simulate(good, torch.zeros(1, 3, 2), 1, box=1.0)
    with pytest.raises(ValueError, match="box"):
        simulate(good + 5.0, good, 1, box=1.0)


def test_split_rejects_too_many_input_frames():
    data = nbody_digits(1, seed=0, frames=4, size=16)
    with pytest.raises(ValueError, match="input_frames"):
        data.split(4)
    with pytest.raises(ValueError, match="input_frames must be an integer >= 1, got 0"):
        data.split(0)


def test_nbody_walls_mirror_the_position_and_flip_the_velocity():
    """In a 10-px box, (1, 8) moving (−3, 4.5) reflects to (2, 7.5) with velocity (3, −4.5)."""
    x0 = torch.tensor([[[1.0, 8.0]]], dtype=torch.float64)  # (N=1, D=1, 2)
    v0 = torch.tensor([[[-3.0, 4.5]]], dtype=torch.float64)
    x, v = simulate(x0, v0, 1, box=10.0, g=0.0, clip=None)
    torch.testing.assert_close(x[0, 1, 0], torch.tensor([2.0, 7.5], dtype=torch.float64))
    torch.testing.assert_close(v[0, 1, 0], torch.tensor([3.0, -4.5], dtype=torch.float64))


def test_nbody_initial_speeds_lie_in_the_range_and_directions_spread():
    """The first recorded velocities have speeds in ``speed`` and directions in all quadrants."""
    data = nbody_digits(40, seed=1, frames=2, size=32, digits=3, speed=(0.5, 1.5), clip=None)
    v0 = data.velocities[:, 0].reshape(-1, 2)  # gravity acts only after the first frame
    speed = v0.norm(dim=-1)
    assert ((speed >= 0.5 - 1e-12) & (speed <= 1.5 + 1e-12)).all()
    angle = torch.atan2(v0[:, 0], v0[:, 1])
    quadrants = torch.bincount(((angle + math.pi) // (math.pi / 2)).long().clamp(0, 3))
    assert (quadrants >= 15).all(), quadrants  # 120 directions: about 30 per quadrant


def bounce_by_events(x: float, v: float, box: float) -> tuple[float, float]:
    """One unit of time from ``x`` in ``[0, box]`` at speed ``v``, wall by wall: run to the next
    wall, flip, go on with the distance left; ending exactly on a wall is no bounce."""
    left, direction = abs(v), 1.0 if v > 0 else -1.0
    while True:
        wall = box if direction > 0 else 0.0
        gap = abs(wall - x)
        if left <= gap:
            return x + direction * left, direction * abs(v)
        left, x, direction = left - gap, wall, -direction


# (start, velocity, end, velocity after) in a 10-px box, one step of dt = 1
LONG_STEPS = {
    "29-below": (1.0, -30.0, 9.0, 30.0),  # 0, 10, 0: three bounces
    "29-above": (9.0, 30.0, 1.0, -30.0),
    "2.5-boxes-above": (5.0, 30.0, 5.0, -30.0),  # lands at 35: 10, 0, 10
    "2.5-boxes-below": (5.0, -30.0, 5.0, 30.0),  # lands at -25: 0, 10, 0
    "4.3-boxes-below": (2.0, -45.0, 3.0, 45.0),  # lands at -43: 0, 10, 0, 10, 0
    "ends-on-far-wall": (5.0, -15.0, 10.0, 15.0),  # -10: one bounce, then stops on 10
    "ends-on-near-wall": (5.0, 15.0, 0.0, -15.0),  # 20: one bounce, then stops on 0
    "ends-on-start-wall-below": (5.0, -25.0, 0.0, -25.0),  # -20: two bounces
    "ends-on-start-wall-above": (5.0, 25.0, 10.0, 25.0),  # 30: two bounces
    "leaves-from-a-wall": (0.0, -24.0, 4.0, 24.0),  # -24: 0, 10, 0
    "stays-on-a-wall": (10.0, 0.0, 10.0, 0.0),
}


@pytest.mark.parametrize("case", LONG_STEPS.values(), ids=LONG_STEPS.keys())
def test_nbody_a_step_longer_than_the_box_reflects_off_every_wall(case):
    """Long steps fold back inside as the path reflected wall by wall (worked out by hand and by
    :func:`bounce_by_events`); the column, at rest, stays at 5."""
    start, speed, end, after = case
    assert bounce_by_events(start, speed, 10.0) == (end, after)
    x0 = torch.tensor([[[start, 5.0]]], dtype=torch.float64)
    v0 = torch.tensor([[[speed, 0.0]]], dtype=torch.float64)
    x, v = simulate(x0, v0, 1, box=10.0, g=0.0, clip=None)
    assert x[0, 1, 0].tolist() == [end, 5.0]
    assert v[0, 1, 0].tolist() == [after, 0.0]


def test_nbody_walls_agree_with_bounces_wall_by_wall_for_any_step():
    """Random starts in a 7.3-px box and speeds up to 6 boxes a step: positions match the
    wall-by-wall path, velocities flip as often as it bounces, and a step that crosses one wall
    lands exactly on the mirror image ``-x`` or ``2·box - x``."""
    box, count = 7.3, 400
    gen = torch.Generator().manual_seed(11)
    x0 = torch.rand(count, 1, 2, generator=gen, dtype=torch.float64) * box
    v0 = (torch.rand(count, 1, 2, generator=gen, dtype=torch.float64) - 0.5) * 12.0 * box
    x, v = simulate(x0, v0, 1, box=box, g=0.0, clip=None)
    pairs = [
        bounce_by_events(a, b, box)
        for a, b in zip(x0.flatten().tolist(), v0.flatten().tolist(), strict=True)
    ]
    expected_x = torch.tensor([p[0] for p in pairs], dtype=torch.float64).reshape(count, 1, 2)
    expected_v = torch.tensor([p[1] for p in pairs], dtype=torch.float64).reshape(count, 1, 2)
    torch.testing.assert_close(x[:, 1], expected_x, rtol=0, atol=1e-12)
    assert torch.equal(v[:, 1], expected_v)
    assert ((x >= 0) & (x <= box)).all()
    unfolded = x0 + v0
    once_below = (unfolded < 0) & (unfolded > -box)
    once_above = (unfolded > box) & (unfolded < 2 * box)
    assert once_below.any() and once_above.any() and (unfolded.abs() > 3 * box).any()
    assert torch.equal(x[:, 1][once_below], -unfolded[once_below])
    assert torch.equal(x[:, 1][once_above], 2 * box - unfolded[once_above])


# ------------------------------------------------------------------ added by the mutation pass


def test_simulate_rejects_bad_settings_naming_them():
    x = torch.full((1, 2, 2), 1.0, dtype=torch.float64)
    v = torch.zeros_like(x)
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got -1"):
        simulate(x, v, -1, box=5.0)
    with pytest.raises(ValueError, match=r"g must be a finite number >= 0, got -0\.1"):
        simulate(x, v, 1, box=5.0, g=-0.1)
    with pytest.raises(ValueError, match=r"clip must be a finite number > 0, got -1\.0"):
        simulate(x, v, 1, box=5.0, clip=-1.0)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, box=5\.0\]"):
        simulate(x - 1.5, v, 1, box=5.0)


def test_simulate_free_flight_is_float64_from_float32_states():
    """Without gravity, clip and walls, step ``k`` is ``x0 + k v0 dt`` of the float64 values
    of the inputs, whatever their precision."""
    x0 = torch.tensor([[[0.1, 0.7], [3.3, 1.9]]], dtype=torch.float32)
    v0 = torch.tensor([[[0.3, -0.2], [0.01, 0.9]]], dtype=torch.float32)
    x, v = simulate(x0, v0, 12, box=None, dt=0.5, g=0.0, clip=None, record_every=4)
    assert x.dtype == v.dtype == torch.float64
    k = torch.tensor([0.0, 4.0, 8.0, 12.0], dtype=torch.float64)[None, :, None, None]
    expected = x0.double()[:, None] + k * 0.5 * v0.double()[:, None]
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-13)
    assert torch.equal(v, v0.double()[:, None].expand_as(v))


def bilinear_matrix(source: int, target: int):
    """Half-pixel-centre bilinear resampling ``(target, source)``, built by hand: output pixel
    ``i`` reads the source at ``(i + 1/2) source/target − 1/2``, clamped to the edge pixels."""
    matrix = torch.zeros(target, source, dtype=torch.float64)
    for i in range(target):
        at = max((i + 0.5) * source / target - 0.5, 0.0)
        low = min(int(math.floor(at)), source - 1)
        high = min(low + 1, source - 1)
        weight = at - low
        matrix[i, low] += 1 - weight
        matrix[i, high] += weight
    return matrix


def test_sprites_are_the_digits_upscaled_bilinearly_with_their_labels():
    """At 64² the 8×8 digits become 16×16 sprites (half-pixel-centre bilinear, values / 16), and
    ``labels`` are scikit-learn's targets of the sprites drawn."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = nbody_digits(2, seed=3, frames=2, size=64, digits=2)
    index = data.sprite_index.flatten()
    images = torch.from_numpy(digits.images / 16.0)[index]
    m = bilinear_matrix(8, 16)
    expected = (m @ images @ m.T).float().reshape(2, 2, 16, 16)
    torch.testing.assert_close(data.sprites, expected, rtol=0, atol=1e-6)
    assert torch.equal(data.labels, torch.from_numpy(digits.target)[index].reshape(2, 2))
    assert data.frames[:, 0].sum((-3, -2, -1)).gt(0).all()


def test_render_rejects_corners_outside_the_frame():
    sprites = torch.ones(1, 1, 4, 4)
    render(torch.tensor([[[[4.4, 0.0]]]], dtype=torch.float64), sprites, 8)  # rounds to 4: fits
    for corner in ([4.6, 0.0], [0.0, 4.6], [-0.6, 0.0]):
        positions = torch.tensor([[[corner]]], dtype=torch.float64)
        with pytest.raises(ValueError, match=r"positions must lie in \[0, 4\]"):
            render(positions, sprites, 8)


def test_generator_rejects_a_gravity_that_is_not_a_switch_and_no_seeds():
    with pytest.raises(TypeError, match="gravity must be a bool, got 2"):
        nbody_digits(1, gravity=2, **SMALL)
    with pytest.raises(ValueError, match="seeds must hold at least one seed"):
        nbody_digits_from_seeds([], **SMALL)


def test_times_are_steps_times_dt(tmp_path):
    """Frame ``k`` is at ``k · stride · dt``: 0, 1.5, 3, 4.5 for stride 3 and dt 0.5."""
    data = nbody_digits(1, seed=0, frames=4, size=16, stride=3, dt=0.5)
    assert data.times.tolist() == [0.0, 1.5, 3.0, 4.5]
    path = generate_dataset(
        "nbody-digits", tmp_path / "t.h5", n=1, progress=False, frames=4, size=16, stride=3, dt=0.5
    )
    assert load(path).t.tolist() == [0.0, 1.5, 3.0, 4.5]
