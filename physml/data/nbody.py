"""N-body digits: handwritten-digit sprites that attract each other, a video benchmark with physics.

Each sequence holds ``digits`` sprites of unit mass in a square box. Their top-left corners
``x_i`` (pixels, ``(row, col)``) move under softened pairwise attraction::

    a_i = G Σ_{j≠i} (x_j − x_i) / √(|x_j − x_i|² + d²)

integrated by semi-implicit Euler (``v += a dt``, clip each velocity component to ``±clip``,
``x += v dt``, reflect off the walls) and rendered every ``stride`` steps by pasting the sprites at
their rounded positions and keeping the brightest value where they overlap (max-composite).

The force is ``−∇U`` of ``U = G Σ_{i<j} √(r_ij² + d²)``, so without clipping and walls the
energy ``E = Σ ½|v_i|² + U`` (pixels²/step²) is conserved up to the integrator's error, O(dt)
for Euler and O(dt²) for ``integrator="leapfrog"`` (velocity Verlet); it is returned for every
rendered frame. Clipping removes energy; a bounce (an elastic sign flip) changes ``E`` by O(dt)
because the step straddling it feels the force unmirrored. The default (Euler, clip 2, dt 1)
drifts by several per cent over 20 frames; :data:`ENERGY_CONSERVING` (leapfrog, no clip, 8
substeps per step) keeps the drift under 1% with the same frame times and sprite speeds
(``benchmarks/nbody_energy.py`` measures both). With gravity off (``g = 0``) this is the classic
moving-digits video: velocities change only by a sign flip at the walls, so every sprite keeps
its speed.

Sprites are scikit-learn's bundled 8×8 digits (``load_digits``, values 0..16), scaled to [0, 1]
and upscaled bilinearly to ``sprite × sprite`` pixels (default a quarter of the frame: 16 for
64², 8 for 32²). The toolkit makes its data itself, so
no digit set is fetched. The default lengths (speeds, clip, softening) and ``G`` are set for a 64²
frame; :func:`canvas_lengths` scales them to another frame size, keeping the motion's shape.

Sequence ``i`` of a request with ``seed`` draws everything from
:func:`~physml.data.sample_seed` ``(seed, i)``, so :func:`nbody_digits` and the
``nbody-digits`` / ``moving-digits`` dataset recipes (written by
:func:`physml.data.generate_dataset`) give identical sequences for the same seed and settings.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

from pdes import checks, problems
from pdes.problems import Batch, Option, Problem

from .generate import sample_seed

F64 = torch.float64
SPLITS = ("all", "train", "test")
INTEGRATORS = ("euler", "leapfrog")
#: The generator settings that conserve the energy to < 1% over 20 frames at 64² (measured by
#: ``benchmarks/nbody_energy.py``); pass them as ``nbody_digits(..., **ENERGY_CONSERVING)``.
ENERGY_CONSERVING = {"integrator": "leapfrog", "clip": None, "substeps": 8}
DIGIT_COUNT = 1797  # images in scikit-learn's load_digits
REFERENCE_SIZE = 64
"""The canvas (pixels) that the generator's default lengths are set for."""


def canvas_lengths(size: int) -> dict[str, object]:
    """The generator's lengths for a ``size``-pixel canvas: the defaults (set for 64²) times
    ``size / 64``, so sprites move as far, relative to the frame, as on the 64² canvas.

    Speeds, the velocity clip and the softening are lengths (pixels, per step); ``g`` scales with
    them, since the acceleration ``G r / √(r² + d²)`` is ``G`` times a ratio of lengths. With them
    a video at ``size`` is the 64² video's motion scaled down: ``nbody_digits(...,
    **canvas_lengths(size))``. Returns ``speed``, ``clip``, ``softening`` and ``g``; with
    :data:`ENERGY_CONSERVING` pass it second (it drops the clip).
    """
    size = checks.positive_int("size", size)
    factor = size / REFERENCE_SIZE
    return {
        "speed": (0.5 * factor, 1.5 * factor),
        "clip": 2.0 * factor,
        "softening": 10.0 * factor,
        "g": 0.05 * factor,
    }


@dataclass
class NBodyDigits:
    """A batch of N-body digit videos and the state behind each rendered frame.

    ``frames`` ``(N, T, 1, H, W)`` float32 in [0, 1]; ``energy`` ``(N, T)`` float64;
    ``positions`` and ``velocities`` ``(N, T, D, 2)`` float64 (top-left sprite corner, ``(row,
    col)`` pixels and pixels/step); ``labels`` ``(N, D)`` the digit each sprite shows;
    ``sprite_index`` ``(N, D)`` its index in ``load_digits``; ``sprites`` ``(N, D, s, s)`` float32
    the images pasted (so :func:`render` of ``positions`` and ``sprites`` gives ``frames``);
    ``times`` ``(T,)`` in steps × dt.
    """

    frames: torch.Tensor
    energy: torch.Tensor
    positions: torch.Tensor
    velocities: torch.Tensor
    labels: torch.Tensor
    sprite_index: torch.Tensor
    sprites: torch.Tensor
    times: torch.Tensor

    def __len__(self) -> int:
        return self.frames.shape[0]

    def split(self, input_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forecasting pairs ``(N, T, 1, H, W)``: the first ``input_frames`` frames and the rest."""
        total = self.frames.shape[1]
        checks.positive_int("input_frames", input_frames)
        if input_frames >= total:
            raise ValueError(
                f"input_frames must be < the {total} frames per sequence, got {input_frames}"
            )
        return self.frames[:, :input_frames], self.frames[:, input_frames:]


# ------------------------------------------------------------------------------------- physics


def _pairs(count: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(count) for j in range(i + 1, count)]


def acceleration(positions: torch.Tensor, g: float, softening: float) -> torch.Tensor:
    """``a_i = g Σ_j (x_j − x_i)/√(|x_j − x_i|² + d²)`` for positions ``(..., D, 2)``.

    Summed pair by pair in a fixed order with element-wise operations only, so one sequence's
    result does not depend on which other sequences share its batch.
    """
    accel = torch.zeros_like(positions)
    if g == 0.0:
        return accel
    for i, j in _pairs(positions.shape[-2]):
        offset = positions[..., j, :] - positions[..., i, :]
        pull = g * offset / torch.sqrt(offset.square().sum(-1, keepdim=True) + softening**2)
        accel[..., i, :] += pull
        accel[..., j, :] -= pull
    return accel


def energy(
    positions: torch.Tensor, velocities: torch.Tensor, g: float, softening: float
) -> torch.Tensor:
    """``Σ ½|v_i|² + g Σ_{i<j} √(r_ij² + d²)`` (unit masses) for states ``(..., D, 2)`` → ``(...)``.

    The potential term is the one whose negative gradient is :func:`acceleration`.
    """
    total = 0.5 * velocities.square().sum((-2, -1))
    for i, j in _pairs(positions.shape[-2]):
        offset = positions[..., j, :] - positions[..., i, :]
        total = total + g * torch.sqrt(offset.square().sum(-1) + softening**2)
    return total


def _reflect(positions: torch.Tensor, velocities: torch.Tensor, box: float) -> None:
    """Fold coordinates that left ``[0, box]`` back inside by specular reflection, however far.

    The walls mirror the line into period ``2·box``: ``x`` lands at ``r = |x| mod 2·box``, or
    ``2·box − r`` when ``r > box`` (both exact in floating point). A velocity component flips
    when its path crossed walls an odd number of times; ending exactly on a wall is no crossing.
    """
    period = 2.0 * box
    below, above = positions < 0, positions > box
    r = torch.fmod(positions.abs(), period)
    far_half = r > box
    odd = (below & (r > 0) & ~far_half) | (above & ((r == 0) | far_half))
    folded = torch.where(far_half, period - r, r)
    positions.copy_(torch.where(below | above, folded, positions))
    velocities[odd] = -velocities[odd]


def simulate(
    positions: torch.Tensor,
    velocities: torch.Tensor,
    steps: int,
    *,
    box: float | None,
    dt: float = 1.0,
    g: float = 0.05,
    softening: float = 10.0,
    clip: float | None = 2.0,
    record_every: int = 1,
    integrator: str = "euler",
    substeps: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate the softened N-body motion of unit masses from states ``(N, D, 2)``.

    Each step of ``dt`` is ``substeps`` integrator steps of ``h = dt / substeps``. ``"euler"``
    (semi-implicit): ``v += a h``; clip components to ``±clip`` (``None``: no clip); ``x += v
    h``; reflect off the walls of ``[0, box]²`` (``None``: no walls). ``"leapfrog"`` (velocity
    Verlet, kick-drift-kick): ``v += a h/2``; clip; ``x += v h``; reflect; ``v += a(x) h/2``;
    clip. Returns positions and velocities ``(N, K, D, 2)`` float64 at steps ``0, record_every,
    …`` (``K = steps // record_every + 1``).
    """
    x = _checks_state("positions", positions).clone()
    v = _checks_state("velocities", velocities).clone()
    if x.shape != v.shape:
        raise ValueError(
            f"velocities must have the shape of positions {tuple(x.shape)}, got {tuple(v.shape)}"
        )
    checks.positive_int("steps", steps, minimum=0)
    checks.positive_int("record_every", record_every)
    checks.positive_int("substeps", substeps)
    checks.choice("integrator", integrator, INTEGRATORS)
    dt = checks.positive("dt", dt)
    g = checks.non_negative("g", g)
    softening = checks.positive("softening", softening)
    if clip is not None:
        clip = checks.positive("clip", clip)
    if box is not None:
        box = checks.positive("box", box)
        if (x < 0).any() or (x > box).any():
            raise ValueError(
                f"positions must lie in [0, box={box}], got range "
                f"[{float(x.min())}, {float(x.max())}]"
            )
    h = dt / substeps

    def kick(accel: torch.Tensor, duration: float) -> None:
        v.add_(accel * duration)
        if clip is not None:
            v.clamp_(-clip, clip)

    def drift() -> None:
        x.add_(v * h)
        if box is not None:
            _reflect(x, v, box)

    accel = acceleration(x, g, softening)
    states_x, states_v = [x.clone()], [v.clone()]
    for step in range(1, steps + 1):
        for _ in range(substeps):
            if integrator == "euler":
                kick(acceleration(x, g, softening), h)
                drift()
            else:
                kick(accel, h / 2)
                drift()
                accel = acceleration(x, g, softening)
                kick(accel, h / 2)
        if step % record_every == 0:
            states_x.append(x.clone())
            states_v.append(v.clone())
    return torch.stack(states_x, 1), torch.stack(states_v, 1)


def _checks_state(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (N, D, 2), got {type(value).__name__}")
    if value.ndim != 3 or value.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (N, D, 2), got {tuple(value.shape)}")
    checks.finite(name, value)
    return value.to(F64)


# ----------------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=8)
def _sprites(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``load_digits`` images upscaled to ``size × size`` in [0, 1], and their labels."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float64) / 16.0)[:, None]
    if size != images.shape[-1]:
        images = nnf.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images[:, 0].clamp(0.0, 1.0).to(torch.float32)
    return images, torch.from_numpy(digits.target.astype(np.int64))


def sprite_pool(split: str) -> torch.Tensor:
    """Indices into ``load_digits`` a split draws from: ``train`` (index % 5 ≠ 0), ``test``
    (index % 5 = 0) or ``all`` — so train and test videos can use disjoint handwriting."""
    checks.choice("split", split, SPLITS)
    index = torch.arange(DIGIT_COUNT)
    if split == "train":
        return index[index % 5 != 0]
    if split == "test":
        return index[index % 5 == 0]
    return index


def render(positions: torch.Tensor, sprites: torch.Tensor, size: int) -> torch.Tensor:
    """Paste sprites ``(N, D, s, s)`` at rounded top-left corners ``(N, T, D, 2)``, max-composite.

    Returns frames ``(N, T, 1, size, size)`` float32. Corners must lie in ``[0, size − s]``.
    """
    count, steps, digits = positions.shape[:3]
    side = sprites.shape[-1]
    corner = torch.round(positions).to(torch.int64).reshape(count * steps, digits, 2)
    if (corner < 0).any() or (corner > size - side).any():
        raise ValueError(f"positions must lie in [0, {size - side}] to keep sprites in the frame")
    frame_of = torch.arange(count * steps)[:, None, None]
    offsets = torch.arange(side)
    canvas = torch.zeros(count * steps, size, size, dtype=torch.float32)
    for d in range(digits):
        rows = (corner[:, d, 0, None] + offsets)[:, :, None]
        cols = (corner[:, d, 1, None] + offsets)[:, None, :]
        layer = torch.zeros_like(canvas)
        layer[frame_of, rows, cols] = sprites[:, d].repeat_interleave(steps, dim=0)
        canvas = torch.maximum(canvas, layer)
    return canvas.reshape(count, steps, 1, size, size)


# ---------------------------------------------------------------------------------- generation


def _check_options(
    frames: int,
    size: int,
    digits: int,
    sprite: int | None,
    stride: int,
    speed: Sequence[float],
) -> int:
    checks.positive_int("frames", frames)
    checks.positive_int("size", size, minimum=2)
    checks.positive_int("digits", digits)
    checks.positive_int("stride", stride)
    side = max(size // 4, 1) if sprite is None else sprite
    checks.positive_int("sprite", side)
    if side >= size:
        raise ValueError(f"sprite must be smaller than size={size}, got {side}")
    if len(speed) != 2:
        raise ValueError(f"speed must be a pair (min, max), got {speed!r}")
    low = checks.non_negative("speed[0]", speed[0])
    high = checks.non_negative("speed[1]", speed[1])
    if high < low:
        raise ValueError(f"speed must be (min, max) with min <= max, got {tuple(speed)}")
    return side


def nbody_digits_from_seeds(
    seeds: Sequence[int],
    frames: int = 20,
    size: int = 64,
    digits: int = 3,
    gravity: bool = True,
    *,
    sprite: int | None = None,
    stride: int = 5,
    g: float = 0.05,
    softening: float = 10.0,
    dt: float = 1.0,
    clip: float | None = 2.0,
    speed: Sequence[float] = (0.5, 1.5),
    split: str = "all",
    integrator: str = "euler",
    substeps: int = 1,
) -> NBodyDigits:
    """One sequence per seed (see :func:`nbody_digits` for the settings); sequence ``i`` depends
    on ``seeds[i]`` and the settings only."""
    side = _check_options(frames, size, digits, sprite, stride, speed)
    if not isinstance(gravity, (bool, int, np.integer)) or int(gravity) not in (0, 1):
        raise TypeError(f"gravity must be a bool, got {gravity!r}")
    if len(seeds) == 0:
        raise ValueError("seeds must hold at least one seed, got none")
    pool = sprite_pool(split)
    images, labels = _sprites(side)
    box = float(size - side)
    chosen, starts, kicks = [], [], []
    for seed in seeds:
        gen = problems.generator(seed)
        pick = pool[torch.randint(len(pool), (digits,), generator=gen)]
        corner = torch.rand(digits, 2, generator=gen, dtype=F64) * box
        magnitude = speed[0] + (speed[1] - speed[0]) * torch.rand(digits, generator=gen, dtype=F64)
        angle = 2 * math.pi * torch.rand(digits, generator=gen, dtype=F64)
        chosen.append(pick)
        starts.append(corner)
        kicks.append(magnitude[:, None] * torch.stack([torch.sin(angle), torch.cos(angle)], -1))
    strength = float(g) if gravity else 0.0
    positions, velocities = simulate(
        torch.stack(starts),
        torch.stack(kicks),
        (frames - 1) * stride,
        box=box,
        dt=dt,
        g=strength,
        softening=softening,
        clip=clip,
        record_every=stride,
        integrator=integrator,
        substeps=substeps,
    )
    index = torch.stack(chosen)
    return NBodyDigits(
        frames=render(positions, images[index], size),
        energy=energy(positions, velocities, strength, softening),
        positions=positions,
        velocities=velocities,
        labels=labels[index],
        sprite_index=index,
        sprites=images[index],
        times=torch.arange(frames, dtype=F64) * stride * dt,
    )


def nbody_digits(
    count: int,
    seed: int = 0,
    frames: int = 20,
    size: int = 64,
    digits: int = 3,
    gravity: bool = True,
    *,
    start: int = 0,
    sprite: int | None = None,
    stride: int = 5,
    g: float = 0.05,
    softening: float = 10.0,
    dt: float = 1.0,
    clip: float | None = 2.0,
    speed: Sequence[float] = (0.5, 1.5),
    split: str = "all",
    integrator: str = "euler",
    substeps: int = 1,
) -> NBodyDigits:
    """``count`` N-body digit videos ``(count, frames, 1, size, size)`` in memory.

    Args:
        count, seed: sequences ``start … start+count−1`` of the dataset drawn with ``seed``.
        frames: rendered frames per sequence (the first is the initial state).
        size: frame height and width in pixels; digits: sprites per video.
        gravity: ``False`` gives the gravity-free moving-digits variant.
        sprite: sprite side in pixels (default ``size // 4``); stride: steps between frames.
        g, softening, dt, clip: gravity constant, softening length d (pixels), time step and
            velocity clip (pixels/step, ``None`` for none).
        speed: initial speed range (pixels/step); directions are uniform.
        split: which handwriting the sprites come from (:func:`sprite_pool`).
        integrator, substeps: ``"euler"`` or ``"leapfrog"``, and integrator steps per ``dt``
            (:func:`simulate`); :data:`ENERGY_CONSERVING` conserves the energy to < 1%.
    """
    checks.positive_int("count", count)
    checks.positive_int("start", start, minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seeds = [sample_seed(int(seed), start + i) for i in range(count)]
    return nbody_digits_from_seeds(
        seeds,
        frames,
        size,
        digits,
        gravity,
        sprite=sprite,
        stride=stride,
        g=g,
        softening=softening,
        dt=dt,
        clip=clip,
        speed=speed,
        split=split,
        integrator=integrator,
        substeps=substeps,
    )


# ------------------------------------------------------------------------------ dataset recipes


class NBodyDigitsProblem(Problem):
    """The ``nbody-digits`` recipe: ``u`` = frames ``(sample, time, y, x)`` float32 in [0, 1];
    ``fields/energy`` ``(sample, time)``, ``fields/positions`` and ``fields/velocities``
    ``(sample, time, digit, 2)``, ``fields/labels`` ``(sample, digit)``; ``params/energy0``."""

    name = "nbody-digits"
    description = (
        "N-body digits video (Earthformer's N-body MNIST with scikit-learn's 8x8 digits): "
        "sprites of unit mass attract with a softened force, bounce off the walls and are "
        "rendered every STRIDE steps; fields/energy holds each frame's energy."
    )
    options = {
        "frames": Option(20, "rendered frames per sequence"),
        "size": Option(64, "frame height and width in pixels"),
        "digits": Option(3, "sprites per sequence"),
        "sprite": Option(0, "sprite side in pixels (0: size // 4)"),
        "gravity": Option(1, "1: attracting sprites, 0: gravity-free moving digits"),
        "stride": Option(5, "integration steps between rendered frames"),
        "g": Option(0.05, "gravity constant G"),
        "softening": Option(10.0, "softening length d in pixels"),
        "dt": Option(1.0, "time step"),
        "clip": Option(2.0, "velocity clip per component in pixels/step (0: none)"),
        "speed_min": Option(0.5, "smallest initial speed in pixels/step"),
        "speed_max": Option(1.5, "largest initial speed in pixels/step"),
        "split": Option("all", "sprite handwriting: all, train (index % 5 != 0) or test"),
        "integrator": Option("euler", "euler (semi-implicit) or leapfrog (velocity Verlet)"),
        "substeps": Option(1, "integrator steps per time step dt"),
    }

    def _arguments(self, settings: dict) -> dict[str, object]:
        if settings["gravity"] not in (0, 1):
            raise ValueError(f"gravity must be 0 or 1, got {settings['gravity']!r}")
        clip = checks.non_negative("clip", settings["clip"])
        return {
            "frames": settings["frames"],
            "size": settings["size"],
            "digits": settings["digits"],
            "gravity": bool(settings["gravity"]),
            "sprite": settings["sprite"] or None,
            "stride": settings["stride"],
            "g": settings["g"],
            "softening": settings["softening"],
            "dt": settings["dt"],
            "clip": clip or None,
            "speed": (settings["speed_min"], settings["speed_max"]),
            "split": settings["split"],
            "integrator": settings["integrator"],
            "substeps": settings["substeps"],
        }

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        pixels = np.arange(settings["size"], dtype=np.float64)
        times = np.arange(settings["frames"], dtype=np.float64) * settings["stride"]
        return {"t": times * settings["dt"], "x": pixels, "y": pixels.copy()}

    def field_shapes(self, settings: dict) -> dict[str, tuple[int, ...]]:
        frames, digits = settings["frames"], settings["digits"]
        return {
            "energy": (frames,),
            "positions": (frames, digits, 2),
            "velocities": (frames, digits, 2),
            "labels": (digits,),
            "sprite_index": (digits,),
        }

    def attributes(self, settings: dict) -> dict[str, object]:
        integrator = checks.choice("integrator", settings["integrator"], INTEGRATORS)
        return {
            "pde": "n-body: a_i = G sum_j (x_j - x_i)/sqrt(|x_j - x_i|^2 + d^2), unit masses",
            "boundary": "reflecting walls (sprites stay inside the frame)",
            "solver": "physml.data.nbody.simulate: "
            + {"euler": "semi-implicit Euler", "leapfrog": "leapfrog"}[integrator]
            + ", velocity clip, max-composite rendering of bilinearly upscaled sklearn digits",
            "energy": "E = sum 1/2 |v_i|^2 + G sum_{i<j} sqrt(r_ij^2 + d^2) (pixels^2/step^2)",
            **settings,
        }

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        data = nbody_digits_from_seeds(list(seeds), **self._arguments(settings))
        return Batch(
            u=data.frames[:, :, 0].to(device),
            params={"energy0": data.energy[:, 0].to(device)},
            fields={
                "energy": data.energy.to(device),
                "positions": data.positions.to(device),
                "velocities": data.velocities.to(device),
                "labels": data.labels.to(device),
                "sprite_index": data.sprite_index.to(device),
            },
        )


class MovingDigitsProblem(NBodyDigitsProblem):
    """The ``moving-digits`` recipe: :class:`NBodyDigitsProblem` with gravity off by default."""

    name = "moving-digits"
    description = (
        "Gravity-free moving digits (scikit-learn 8x8 digits bouncing in a box at constant "
        "speed); the same recipe as nbody-digits with --gravity 0."
    )
    options = {
        **NBodyDigitsProblem.options,
        "gravity": Option(0, "1: attracting sprites, 0: gravity-free moving digits"),
    }


NBODY_DIGITS = problems.register(NBodyDigitsProblem())
MOVING_DIGITS = problems.register(MovingDigitsProblem())
