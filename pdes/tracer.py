"""A passive tracer in the 2-D periodic Navier–Stokes flow, in conservative flux form, batched.

    c_t + ∇·(u c) = κ Δc + s,    s(x, y, t) = a(t) f(x, y)  (optional),

on the periodic box of :mod:`pdes.navier_stokes`, whose vorticity is stepped beside the tracer
(:func:`solve_ns_tracer`); :func:`solve_tracer` carries it in a steady flow instead (a uniform
one has the exact solution :func:`drifting_blob`).

Space: finite volumes. The grid's points are the cell centres and ``c`` the cell averages, so the
total ``∫c dA`` is ``grid.integrate(c) = dx dy Σ c``. The normal velocity on a face is the face
average of the spectral velocity, ``U(i+½, j) = [ψ(i+½, j+½) − ψ(i+½, j−½)]/dy`` and
``V(i, j+½) = −[ψ(i+½, j+½) − ψ(i−½, j+½)]/dx`` from the streamfunction interpolated spectrally to
the cell corners (:func:`face_velocities`), so the discrete divergence of ``(U, V)`` is zero. The
tracer on a face is the upwind cell's MUSCL value ``c ± σ/2``, with a limited slope ``σ``
(monotonised central by default, van Leer or minmod); the diffusive flux is ``−κ`` times the
centred difference. What leaves a cell through a face enters its neighbour, so the total changes
only by round-off, and a source adds exactly ``(A(t) − A(0)) ∫f``, ``A(t) = ∫a``.

Time: SSP-RK2 (Heun), the tracer's two stages using the face velocities of the vorticity at the
start and at the end of the vorticity's own (CN–Heun) step; the source's amount
``A(t + h/2) − A(t)`` is added before the transport step and ``A(t + h) − A(t + h/2)`` after it,
so the time stepping is second order and the total exact.

Positivity: the limited face values lie between neighbouring cell values, and a forward Euler
step writes each new cell value as a combination, with non-negative weights summing to one (the
face velocities being divergence-free), of old face and cell values when (:func:`step_limit`)::

    4 h max(|U|/dx, |V|/dy) + 2 h κ (1/dx² + 1/dy²) ≤ 1

Heun's step is a convex combination of two such steps. Under this bound the tracer stays within
its initial range (a discrete maximum principle, to round-off), so a non-negative tracer stays
non-negative, also with a non-negative source (``f ≥ 0``, ``A`` non-decreasing). The solvers check
the face velocities met against the bound every :data:`~pdes.navier_stokes.CHECK_EVERY` steps; a
given ``max_step`` beyond it raises :class:`SolverError`, the default step (at most
:data:`SAFETY` of the bound at a speed planned ahead, and the vorticity's own default) is lowered
and the steps redone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import checks
from .errors import SolverError
from .grid import Grid2D
from .navier_stokes import (
    CHECK_EVERY,
    MAX_RETRIES,
    Forcing,
    PeriodicNavierStokes,
    VorticityScheme,
    check_fields,
    check_grid,
    default_step,
    forcing_coefficients,
    fourier_modes,
    recipe_speed,
    velocity,
)
from .problems import Batch, Option, Problem, generator
from .random_fields import gaussian_random_field_2d
from .verification import Comparison, ExactCase

__all__ = [
    "EXACT_CASES",
    "LIMITERS",
    "PROBLEMS",
    "SAFETY",
    "PulsedRelease",
    "Source",
    "drifting_blob",
    "face_velocities",
    "gaussian_blob",
    "random_blobs",
    "solve_ns_tracer",
    "solve_tracer",
    "step_limit",
]

FLOAT = checks.FLOAT
SAFETY = 0.8
"""The default step is at most this fraction of :func:`step_limit` at the planned speed."""
LIMITERS = ("mc", "vanleer", "minmod")
"""The slope limiters (monotonised central, van Leer, minmod), most to least accurate."""

Diffusivity = float | torch.Tensor


# ----------------------------------------------------------------------------- exact solutions


def _per_sample(name: str, value, batch: int | None = None) -> torch.Tensor:
    """``value`` (a number or a tensor) as a flat float64 tensor of finite entries."""
    out = checks.parameter(name, value, "a number or one value per sample (sample,)").reshape(-1)
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got {out.tolist()}")
    if batch is not None and out.numel() not in (1, batch):
        raise ValueError(
            f"{name} must be a number or hold one value per sample ({batch},), got {out.numel()}"
        )
    return out


def _periodic_gaussian(x: torch.Tensor, centre: torch.Tensor, std: torch.Tensor, length: float):
    """``Σ_m exp(−(x − centre + m L)²/(2 std²))`` over enough images for round-off, ``(B, n)``."""
    offset = torch.remainder(x[None, :] - centre[:, None] + 0.5 * length, length) - 0.5 * length
    images = math.ceil(8.5 * std.max().item() / length)
    total = torch.zeros_like(offset)
    for m in range(-images, images + 1):
        total += torch.exp(-((offset + m * length) ** 2) / (2 * std[:, None] ** 2))
    return total


def gaussian_blob(
    grid: Grid2D, centre, std: float | torch.Tensor, mass: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """The periodised Gaussian ``mass/(2π std²) Σ exp(−|x − centre − image|²/(2 std²))``,
    ``(sample, nx, ny)``.

    ``centre`` a pair or ``(sample, 2)``; ``std`` and ``mass`` numbers or ``(sample,)``. Its
    integral over the box is ``mass`` (the grid's sum matches to round-off when ``std`` spans a
    few cells).
    """
    grid = check_grid(grid)
    centre = checks.real_values("centre", centre, "a pair (x, y) or (sample, 2) of numbers")
    if centre.ndim == 1:
        centre = centre[None]
    if centre.ndim != 2 or centre.shape[1] != 2 or not torch.isfinite(centre).all():
        raise ValueError(
            f"centre must be a finite pair (x, y) or (sample, 2), got shape {tuple(centre.shape)}"
        )
    batch = centre.shape[0]
    std = _per_sample("std", std, batch).expand(batch)
    if (std <= 0).any():
        raise ValueError(f"std must be > 0, got {std.tolist()}")
    mass = _per_sample("mass", mass, batch).expand(batch)
    along_x = _periodic_gaussian(grid.x.coordinates(), centre[:, 0], std, grid.x.length)
    along_y = _periodic_gaussian(grid.y.coordinates(), centre[:, 1], std, grid.y.length)
    peak = mass / (2 * math.pi * std**2)
    return peak[:, None, None] * along_x[:, :, None] * along_y[:, None, :]


def drifting_blob(
    grid: Grid2D,
    times: Sequence[float] | torch.Tensor,
    centre,
    std: float | torch.Tensor,
    flow: tuple[float, float],
    kappa: float,
    mass: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Exact ``c_t + U·∇c = κΔc`` for a uniform ``flow = U`` from :func:`gaussian_blob`:
    the blob moved to ``centre + U t`` and spread to ``std² + 2κt``; ``(sample, time, nx, ny)``
    at ``times`` on ``grid``. ``centre``, ``std`` and ``mass`` as in :func:`gaussian_blob`;
    ``kappa`` is κ >= 0."""
    t = checks.times("times", times)
    kappa = checks.non_negative("kappa", kappa)
    flow = checks.finite_values("flow", flow, "a pair (Ux, Uy) of numbers")
    if flow.shape != (2,):
        raise ValueError(f"flow must be a pair (Ux, Uy), got shape {tuple(flow.shape)}")
    ux, uy = flow.tolist()
    centre = checks.real_values("centre", centre, "a pair (x, y) or (sample, 2) of numbers")
    if centre.ndim not in (1, 2) or centre.shape[-1] != 2:
        raise ValueError(
            f"centre must be a pair (x, y) or (sample, 2), got shape {tuple(centre.shape)}"
        )
    std = _per_sample("std", std)
    frames = [
        gaussian_blob(
            grid,
            centre + torch.tensor([ux * time, uy * time], dtype=FLOAT),
            torch.sqrt(std**2 + 2 * kappa * time),
            mass,
        )
        for time in t.tolist()
    ]
    return torch.stack(frames, dim=1)


# ----------------------------------------------------------------------------- the scheme


def _face_factors(grid: Grid2D, device) -> torch.Tensor:
    """``rfft2`` multipliers ``(2, 1, nx, ny//2 + 1)`` taking the vorticity to ``(U, V)``."""
    modes = fourier_modes(grid, device)
    dx, dy = grid.spacing
    psi = modes.inverse_laplacian(modes.resolved)
    shift_x = torch.exp(0.5j * modes.kx * dx)
    shift_y = torch.exp(0.5j * modes.ky * dy)
    along_y = 2j * torch.sin(0.5 * modes.ky * dy) / dy
    along_x = 2j * torch.sin(0.5 * modes.kx * dx) / dx
    return torch.stack([psi * shift_x * along_y, -psi * shift_y * along_x])[:, None]


def face_velocities(w: torch.Tensor, grid: Grid2D) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal velocities on the cell faces of vorticity ``w`` ``(sample, nx, ny)`` on ``grid``:
    ``U[:, i, j]`` on the face ``(i+½, j)`` and ``V[:, i, j]`` on ``(i, j+½)``, each ``(sample,
    nx, ny)``.

    They are the face averages of :func:`pdes.navier_stokes.velocity` and their discrete
    divergence ``(U − U(i−1))/dx + (V − V(j−1))/dy`` is zero to round-off.
    """
    grid = check_grid(grid)
    w = check_fields("w", w, grid)
    u, v = torch.fft.irfft2(torch.fft.rfft2(w)[None] * _face_factors(grid, w.device), s=grid.shape)
    return u, v


def step_limit(grid: Grid2D, kappa: Diffusivity, speed: float | torch.Tensor) -> float:
    """Largest step (time units) at which the scheme keeps the tracer within its initial range:
    ``1 / (4 U max(1/dx, 1/dy) + 2κ(1/dx² + 1/dy²))``, ``U`` a bound on the face speeds.

    ``kappa`` and ``speed`` are numbers or one per sample; ``inf`` when both vanish. ``grid`` is the
    periodic :class:`~pdes.grid.Grid2D` the tracer lives on.
    """
    grid = check_grid(grid)
    dx, dy = grid.spacing
    kappa = _diffusivities(kappa)
    speed = _per_sample("speed", speed, kappa.numel() if kappa.numel() > 1 else None)
    if (speed < 0).any():
        raise ValueError(f"speed must be >= 0, got {speed.tolist()}")
    return _limit(speed * max(1 / dx, 1 / dy), kappa, grid)


def _limit(rate: torch.Tensor, kappa: torch.Tensor, grid: Grid2D) -> float:
    """The bound for face rates ``max(|U|/dx, |V|/dy)`` and diffusivities, smallest over samples."""
    dx, dy = grid.spacing
    denominator = 4 * rate.cpu() + 2 * kappa.cpu() * (1 / dx**2 + 1 / dy**2)
    largest = denominator.max().item()
    return 1.0 / largest if largest > 0 else math.inf


def _diffusivities(kappa: Diffusivity, batch: int | None = None) -> torch.Tensor:
    values = _per_sample("kappa", kappa, batch)
    if (values < 0).any():
        raise ValueError(f"kappa must be finite and >= 0, got {values.tolist()}")
    return values


def _same_sign(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """±1 where ``a`` and ``b`` share a sign, 0 elsewhere (arithmetic: ``torch.where`` is slow)."""
    return torch.sign(a).add_(torch.sign(b)).mul_(0.5)


def _minmod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.minimum(a.abs(), b.abs()).mul_(_same_sign(a, b))


def _monotonised_central(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    magnitude_a, magnitude_b = a.abs(), b.abs()
    bound = torch.minimum(magnitude_a, magnitude_b).mul_(2.0)
    central = magnitude_a.add_(magnitude_b).mul_(0.5)
    return torch.minimum(bound, central).mul_(_same_sign(a, b))


def _van_leer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    magnitude_a, magnitude_b = a.abs(), b.abs()
    harmonic = (magnitude_a * magnitude_b).mul_(2.0)
    total = magnitude_a.add_(magnitude_b).clamp_(min=torch.finfo(FLOAT).tiny)
    return harmonic.div_(total).mul_(_same_sign(a, b))


_SLOPES = {"mc": _monotonised_central, "vanleer": _van_leer, "minmod": _minmod}


class _Transport:
    """The finite-volume tendency and Heun step of the tracer ``(sample, nx, ny)``."""

    def __init__(self, grid: Grid2D, kappa: torch.Tensor, limiter: str, device) -> None:
        self.grid = grid
        self.spacing = grid.spacing
        self.kappa = kappa.to(device)
        self.diffusivity = self.kappa[:, None, None]
        self.slope = _SLOPES[checks.choice("limiter", limiter, LIMITERS)]

    def _flux_difference(self, c: torch.Tensor, velocity: torch.Tensor, dim: int) -> torch.Tensor:
        spacing = self.spacing[dim]
        ahead = c.roll(-1, dim)
        jump = ahead - c  # across the face ahead of each cell
        half_slope = self.slope(jump.roll(1, dim), jump).mul_(0.5)
        left = c + half_slope
        right = ahead.sub_(half_slope.roll(-1, dim))
        flux = left.mul_(velocity.clamp(min=0)).add_(right.mul_(velocity.clamp(max=0)))
        flux.sub_(jump.mul_(self.diffusivity / spacing))
        return flux.roll(1, dim).sub_(flux).div_(spacing)

    def tendency(self, c: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """``−∇·(u c) + κΔc`` in flux form; ``faces`` is ``(2, sample or 1, nx, ny)``."""
        return self._flux_difference(c, faces[0], -2) + self._flux_difference(c, faces[1], -1)

    def heun(self, c: torch.Tensor, h: float, start: torch.Tensor, end: torch.Tensor):
        stage = c + h * self.tendency(c, start)
        return 0.5 * (c + stage + h * self.tendency(stage, end))

    def rate(self, faces: torch.Tensor) -> torch.Tensor:
        """``max(|U|/dx, |V|/dy)`` per sample."""
        dx, dy = self.spacing
        return torch.maximum(
            faces[0].abs().amax(dim=(-2, -1)) / dx, faces[1].abs().amax(dim=(-2, -1)) / dy
        )

    def limit(self, rate: torch.Tensor) -> float:
        return _limit(rate, self.kappa, self.grid)


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """A source ``s(x, y, t) = a(t) f(x, y)``: its shape ``f`` ``(nx, ny)`` or
    ``(sample, nx, ny)`` and ``released(t) = A(t) = ∫_0^t a``, a number or ``(sample,)``.

    The tracer's total grows by exactly ``A(t) ∫f``; it stays non-negative when ``f ≥ 0`` and
    ``A`` does not decrease.
    """

    shape: torch.Tensor
    released: Callable[[float], float | torch.Tensor]


@dataclass(frozen=True)
class PulsedRelease:
    """``A(t) = rate (t − sin(ωt)/ω)``, ``ω = 2π/period``: the amount released by the pulsing
    rate ``a(t) = rate (1 − cos ωt) ≥ 0`` (mean ``rate``, zero at ``t = 0``)."""

    rate: float
    period: float

    def __post_init__(self) -> None:
        checks.non_negative("rate", self.rate)
        checks.positive("period", self.period)

    def __call__(self, t: float) -> float:
        omega = 2 * math.pi / self.period
        return self.rate * (t - math.sin(omega * t) / omega)


class _Injection:
    """Adds ``(A(t1) − A(t0)) f`` to the tracer; a :class:`Source` checked against the batch."""

    def __init__(self, source: Source, grid: Grid2D, batch: int, device) -> None:
        if not isinstance(source, Source):
            raise TypeError(f"source must be a pdes.tracer.Source or None, got {type(source)}")
        shape = check_fields("source.shape", source.shape, grid).to(device)
        if shape.shape[0] not in (1, batch):
            raise ValueError(
                f"source.shape must have shape {grid.shape} or ({batch}, {grid.shape[0]}, "
                f"{grid.shape[1]}), got {tuple(source.shape.shape)}"
            )
        if not callable(source.released):
            raise TypeError(f"source.released must be a function of t, got {source.released!r}")
        self.shape, self.released, self.batch = shape, source.released, batch
        start = self.amount(0.0)
        if (start != 0).any():
            raise ValueError(f"source.released(0) must be 0, got {start.tolist()}")

    def amount(self, t: float) -> torch.Tensor:
        expected = f"a finite number or ({self.batch},) (t={t:.6g})"
        value = checks.real_values("source.released(t)", self.released(t), expected).flatten()
        if value.numel() not in (1, self.batch) or not torch.isfinite(value).all():
            raise ValueError(
                f"source.released(t) must be a finite number or ({self.batch},), got "
                f"{value.tolist()} at t={t:.6g}"
            )
        return value.to(self.shape.device)

    def add(self, c: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
        return c + (self.amount(t1) - self.amount(t0))[:, None, None] * self.shape


# ----------------------------------------------------------------------------- flows


class _SteadyFlow:
    """Face velocities ``(2, sample or 1, nx, ny)`` that do not change; no state."""

    def __init__(self, faces: torch.Tensor) -> None:
        self.constant = faces

    def faces(self, state) -> torch.Tensor:
        return self.constant

    def advance(self, state, h: float):
        """No state to step and no speed limit of its own (the tracer's is checked)."""
        return state, None

    def limit(self, peak) -> float:
        return math.inf

    def finite(self, state) -> bool:
        return True


class _VorticityFlow:
    """The vorticity's ``rfft2`` coefficients, stepped by :class:`VorticityScheme`."""

    def __init__(self, scheme: VorticityScheme, grid: Grid2D, device) -> None:
        self.scheme = scheme
        self.factors = _face_factors(grid, device)

    def faces(self, coefficients: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(coefficients[None] * self.factors, s=self.scheme.shape)

    def advance(self, coefficients: torch.Tensor, h: float):
        return self.scheme.advance(coefficients, h, 1)

    def limit(self, peak) -> float:
        return self.scheme.limit(peak)

    def finite(self, coefficients) -> bool:
        return bool(torch.isfinite(coefficients).all())


# ----------------------------------------------------------------------------- marching


def _ticks(start: float, end: float, step: float) -> list[float]:
    """Step times from ``start`` to exactly ``end`` with equal steps of at most ``step``."""
    if end <= start:
        return [start]
    count = max(1, math.ceil((end - start) / step - 1e-9))
    h = (end - start) / count
    return [start + k * h for k in range(count)] + [end]


@dataclass
class _Run:
    flow: _SteadyFlow | _VorticityFlow
    transport: _Transport
    injection: _Injection | None
    name: str


def _block(run: _Run, state, c: torch.Tensor, ticks: list[float]):
    """Steps between consecutive ``ticks``; also the largest face rate and flow speed met."""
    faces = run.flow.faces(state)
    rate = run.transport.rate(faces)
    peak = None
    for t0, t1 in zip(ticks[:-1], ticks[1:], strict=False):
        middle = 0.5 * (t0 + t1)
        if run.injection is not None:
            c = run.injection.add(c, t0, middle)
        state, speed = run.flow.advance(state, t1 - t0)
        after = run.flow.faces(state)
        c = run.transport.heun(c, t1 - t0, faces, after)
        if run.injection is not None:
            c = run.injection.add(c, middle, t1)
        faces = after
        rate = torch.maximum(rate, run.transport.rate(faces))
        peak = speed if peak is None else torch.maximum(peak, speed)
    return state, c, rate, peak


def _march(run: _Run, state, c: torch.Tensor, t_out: torch.Tensor, step: float, adaptive: bool):
    """States and tracers at ``t_out``, in blocks of at most :data:`CHECK_EVERY` steps, each checked
    for NaN/inf and for steps beyond the limits at the face rates and speeds it met."""
    states, tracers = [], []
    t = 0.0
    for t_target in t_out.tolist():
        ticks = _ticks(t, t_target, step)
        retries = 0
        while len(ticks) > 1:
            block = ticks[: CHECK_EVERY + 1]
            h = block[1] - block[0]
            trial_state, trial, rate, peak = _block(run, state, c, block)
            finite = bool(torch.isfinite(trial).all()) and run.flow.finite(trial_state)
            flow_limit = run.flow.limit(peak) if finite else 0.0
            limit = min(run.transport.limit(rate), flow_limit) if finite else 0.0
            if not finite or h > limit * (1 + 1e-12):
                if not adaptive or retries == MAX_RETRIES:
                    raise _unstable(run.name, finite, block, rate if finite else None, limit)
                retries += 1
                if finite:
                    step = min(0.5 * h, SAFETY * run.transport.limit(rate), SAFETY * flow_limit)
                else:
                    step = 0.25 * h
                ticks = _ticks(block[0], ticks[-1], step)
                continue
            state, c = trial_state, trial
            ticks = ticks[len(block) - 1 :]
        t = t_target
        states.append(state)
        tracers.append(c)
    return states, tracers


def _unstable(name: str, finite: bool, block: list[float], rate, limit) -> SolverError:
    start, end, h = block[0], block[-1], block[1] - block[0]
    if not finite:
        return SolverError(
            f"{name}: the solution became NaN or inf between t={start:.6g} and t={end:.6g} "
            f"with step {h:.4g}"
        )
    return SolverError(
        f"{name}: between t={start:.6g} and t={end:.6g} the face velocities reached "
        f"max(|U|/dx, |V|/dy) = {rate.max().item():.4g}, where the step limit (positivity of the "
        f"tracer, stability of the vorticity) is {limit:.4g} < step {h:.4g}; pass a smaller "
        "max_step"
    )


def _tracer(c0: torch.Tensor, grid: Grid2D, batch: int | None = None) -> torch.Tensor:
    c0 = check_fields("c0", c0, grid)
    if batch is not None and c0.shape[0] != batch:
        raise ValueError(
            f"c0 must hold one field per sample of w0 ({batch}, {grid.shape[0]}, "
            f"{grid.shape[1]}), got shape {tuple(c0.shape)}"
        )
    return c0


def _is_number(value: object) -> bool:
    """A real number, numpy scalar, or 0-d tensor or array (bools, numpy's too, are refused
    later, naming the entry)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 0
    return isinstance(value, (numbers.Real, np.bool_))


def _steady_faces(flow, grid: Grid2D, batch: int, device) -> torch.Tensor:
    is_array_of_two = isinstance(flow, (torch.Tensor, np.ndarray)) and tuple(flow.shape) == (2,)
    pair = tuple(flow) if is_array_of_two else flow
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        if all(_is_number(v) for v in pair):
            values = [checks.finite_number(f"flow[{i}]", v) for i, v in enumerate(pair)]
            faces = torch.tensor(values, dtype=FLOAT, device=device)
            return faces[:, None, None, None].expand(2, 1, *grid.shape)
        if all(isinstance(v, torch.Tensor) for v in pair):
            u = check_fields("flow[0] (U on the faces (i+1/2, j))", pair[0], grid)
            v = check_fields("flow[1] (V on the faces (i, j+1/2))", pair[1], grid)
            if u.shape != v.shape or u.shape[0] not in (1, batch):
                raise ValueError(
                    f"flow must be two tensors of shape {grid.shape} or ({batch}, "
                    f"{grid.shape[0]}, {grid.shape[1]}), got {tuple(pair[0].shape)} and "
                    f"{tuple(pair[1].shape)}"
                )
            return torch.stack([u, v]).to(device)
    raise TypeError(
        "flow must be a uniform velocity (ux, uy) of two numbers (or a tensor or array of shape "
        f"(2,)) or face velocities (U, V) of two tensors (see face_velocities), got {flow!r}"
    )


def solve_tracer(
    c0: torch.Tensor,
    grid: Grid2D,
    kappa: Diffusivity,
    times: Sequence[float] | torch.Tensor,
    flow,
    source: Source | None = None,
    max_step: float | None = None,
    limiter: str = "mc",
) -> torch.Tensor:
    """Carry the tracer ``c0`` ``(sample, nx, ny)`` on ``grid`` in a steady flow; ``(sample, time,
    nx, ny)``.

    ``flow`` is a uniform velocity ``(ux, uy)`` (two numbers or 0-d tensors, or a tensor or array of
    shape ``(2,)``) or face velocities ``(U, V)`` (tensors ``(nx, ny)`` or ``(sample, nx, ny)``,
    e.g. from :func:`face_velocities`; the total is conserved whatever they are, the tracer's range
    only if they are divergence-free). ``kappa`` >= 0, a number or one per sample; ``source`` an
    optional :class:`Source`; ``limiter`` the slope limiter, one of :data:`LIMITERS`; ``times`` the
    output times. ``max_step`` must not exceed :func:`step_limit` (the default is the limit). One
    step serves the whole batch (its fastest sample and largest κ set it), so a sample's answer
    depends on its batch within the scheme's truncation error; solve a sample alone for an answer of
    its own.
    """
    grid = check_grid(grid)
    c0 = _tracer(c0, grid)
    batch, device = c0.shape[0], c0.device
    t_out = checks.times("times", times)
    kappa = _diffusivities(kappa, batch).expand(batch)
    if max_step is not None:
        max_step = checks.positive("max_step", max_step)
    run = _Run(
        _SteadyFlow(_steady_faces(flow, grid, batch, device)),
        _Transport(grid, kappa, limiter, device),
        None if source is None else _Injection(source, grid, batch, device),
        "solve_tracer",
    )
    limit = run.transport.limit(run.transport.rate(run.flow.constant))
    if max_step is not None and max_step > limit:
        raise SolverError(
            f"solve_tracer: max_step={max_step:.4g} exceeds the step limit {limit:.4g} "
            "(positivity of the tracer, see step_limit)"
        )
    step = max_step if max_step is not None else limit
    if not math.isfinite(step):
        step = max(t_out[-1].item(), 1.0)
    _, tracers = _march(run, None, c0, t_out, step, adaptive=False)
    return torch.stack(tracers, dim=1)


def solve_ns_tracer(
    w0: torch.Tensor,
    c0: torch.Tensor,
    grid: Grid2D,
    nu: float | torch.Tensor,
    kappa: Diffusivity,
    times: Sequence[float] | torch.Tensor,
    forcing: Forcing = "fno",
    source: Source | None = None,
    max_step: float | None = None,
    limiter: str = "mc",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step the vorticity ``w0`` and the tracer ``c0`` (each ``(sample, nx, ny)``) together;
    returns vorticity and tracer, each ``(sample, time, nx, ny)``.

    ``grid``, ``nu``, ``forcing`` as in :func:`pdes.navier_stokes.solve_vorticity`; ``kappa`` >= 0,
    a number or one per sample; ``source`` and ``limiter`` as in :func:`solve_tracer`. ``max_step``
    must not exceed the vorticity's stability limit or :func:`step_limit` at the speeds met (checked
    every :data:`~pdes.navier_stokes.CHECK_EVERY` steps); by default the step is planned at the
    speed of ``w0`` plus ``t_end`` times the speed the forcing adds per unit time, and lowered where
    the flow outgrows it. One step serves the whole batch (its fastest sample and largest ν and κ
    set it), so a sample's answer depends on its batch within the scheme's truncation error; solve a
    sample alone for an answer of its own.
    """
    grid = check_grid(grid)
    w0 = check_fields("w0", w0, grid)
    batch, device = w0.shape[0], w0.device
    c0 = _tracer(c0, grid, batch).to(device)
    t_out = checks.times("times", times)
    kappa = _diffusivities(kappa, batch).expand(batch)
    if max_step is not None:
        max_step = checks.positive("max_step", max_step)
    viscosity = checks.per_sample("nu", nu, batch, "cpu")
    force = forcing_coefficients(forcing, grid, batch, device)
    scheme = VorticityScheme(grid, viscosity, force, device)
    run = _Run(
        _VorticityFlow(scheme, grid, device),
        _Transport(grid, kappa, limiter, device),
        None if source is None else _Injection(source, grid, batch, device),
        "solve_ns_tracer",
    )
    state = torch.fft.rfft2(w0)
    speed0 = scheme.speed(state)
    rate0 = run.transport.rate(run.flow.faces(state))
    limit = min(scheme.limit(speed0), run.transport.limit(rate0))
    if max_step is not None and max_step > limit:
        raise SolverError(
            f"solve_ns_tracer: max_step={max_step:.4g} exceeds the step limit {limit:.4g} at the "
            f"initial flow (max|u| = {speed0.max().item():.4g}; tracer positivity and vorticity "
            "stability)"
        )
    step = max_step
    if step is None:
        step = _planned_step(grid, viscosity, kappa, _planned_speed(grid, speed0, force, t_out))
    states, tracers = _march(run, state, c0, t_out, step, adaptive=max_step is None)
    w = torch.stack([torch.fft.irfft2(s, s=grid.shape) for s in states], dim=1)
    c = torch.stack(tracers, dim=1)
    w[:, t_out == 0] = w0[:, None]
    return w, c


def _planned_speed(grid: Grid2D, speed0: torch.Tensor, force, t_out: torch.Tensor) -> float:
    """The largest initial speed plus ``t_end`` times the forcing's speed per unit time."""
    speed = speed0.max().item()
    if force is not None:
        vx, vy = velocity(torch.fft.irfft2(force, s=grid.shape), grid)
        speed += t_out[-1].item() * (vx**2 + vy**2).sqrt().max().item()
    return speed


def _planned_step(grid: Grid2D, nu, kappa, speed: float) -> float:
    """The vorticity's default step and :data:`SAFETY` of :func:`step_limit` at ``speed``."""
    step = min(default_step(grid, nu, speed), SAFETY * step_limit(grid, kappa, speed))
    return step if math.isfinite(step) else 1.0


# ----------------------------------------------------------------------------- dataset recipes


def random_blobs(grid: Grid2D, gen: torch.Generator, count: int, width: float) -> torch.Tensor:
    """A sum of ``count`` periodised Gaussian blobs ``(1, nx, ny)`` on ``grid``: centres uniform
    on the box, peaks ``U[0.5, 1.5]``, standard deviations ``width · U[0.5, 1.5]``, all drawn from
    ``gen``; non-negative."""
    draws = torch.rand(count, 4, generator=gen, dtype=FLOAT)
    lower = torch.tensor([grid.x.lower, grid.y.lower], dtype=FLOAT)
    lengths = torch.tensor([grid.x.length, grid.y.length], dtype=FLOAT)
    centre = lower + draws[:, :2] * lengths
    peak = 0.5 + draws[:, 2]
    std = width * (0.5 + draws[:, 3])
    return gaussian_blob(grid, centre, std, peak * 2 * math.pi * std**2).sum(0, keepdim=True)


class NavierStokesTracer(Problem):
    name = "ns-tracer"
    description = (
        "passive tracer c_t + div(u c) = kappa Lap c (finite volumes, flux form: total mass "
        "conserved to round-off) in the 2-D periodic Navier-Stokes flow of navier-stokes (FNO "
        "forcing, GRF vorticity); c0 = random Gaussian blobs; u = tracer, fields vx, vy and "
        "mass (sample, time)"
    )
    options = {
        "nx": Option(64, "grid points per axis on the unit torus"),
        "nu": Option(1e-3, "viscosity ν"),
        "kappa": Option(5e-4, "tracer diffusivity κ (>= 0)"),
        "t_end": Option(10.0, "final time"),
        "nt": Option(11, "number of output times, t=0 included"),
        "max_step": Option(0.0, "time step; 0 = a default planned from the settings"),
        "forcing": Option("fno", "'fno' (0.1(sin 2pi(x+y) + cos 2pi(x+y))) or 'none'"),
        "alpha": Option(2.5, "GRF exponent α of the initial vorticity"),
        "tau": Option(7.0, "GRF inverse length scale τ"),
        "sigma": Option(7.0**1.5, "GRF amplitude σ"),
        "blobs": Option(4, "Gaussian blobs in the initial tracer"),
        "width": Option(0.08, "typical blob standard deviation (each: width · U[0.5, 1.5])"),
        "limiter": Option("mc", "slope limiter: 'mc', 'vanleer' or 'minmod'"),
    }

    # the same periodic unit square and output times as the flow carrying the tracer
    grid = PeriodicNavierStokes.grid
    times = PeriodicNavierStokes.times
    coordinates = PeriodicNavierStokes.coordinates

    def field_shapes(self, settings: dict) -> dict[str, tuple[int, ...]]:
        shape = self.sample_shape(settings)
        return {"vx": shape, "vy": shape, "mass": shape[:1]}

    def step(self, settings: dict) -> float:
        """``max_step`` if > 0, else one from the settings alone: :func:`_planned_step` at the
        speed :func:`pdes.navier_stokes.recipe_speed` plans for."""
        if checks.non_negative("max_step", settings["max_step"]) > 0:
            return settings["max_step"]
        grid = self.grid(settings)
        speed = recipe_speed(grid, settings)
        return _planned_step(grid, settings["nu"], settings["kappa"], speed)

    def attributes(self, settings: dict) -> dict[str, object]:
        forcing = checks.choice("forcing", settings["forcing"], ("fno", "none"))
        return {
            "pde": "tracer in navier-stokes: c_t + div(u c) = kappa Lap c; w_t + u.grad w = "
            "nu Lap w + f, u = curl psi, -Lap psi = w",
            "boundary": "periodic",
            "solver": "tracer: finite volumes in flux form, MUSCL with a "
            f"{settings['limiter']} limiter, face velocities from the streamfunction at the "
            "corners, SSP-RK2; vorticity: pseudo-spectral CN-Heun (pdes.navier_stokes)",
            "initial_condition": "w0: zero-mean GRF N(0, sigma^2 (-Laplacian + tau^2 I)^-alpha); "
            f"c0: {settings['blobs']} Gaussian blobs (peaks U[0.5, 1.5], std width*U[0.5, 1.5])",
            "fields": "u: tracer c; vx, vy: velocity; mass: grid.integrate(c) per frame",
            **settings,
            "forcing": "fno: 0.1 (sin 2pi(x+y) + cos 2pi(x+y))" if forcing == "fno" else "none",
            "max_step": self.step(settings),
        }

    def initial(self, seed: int, settings: dict, grid: Grid2D):
        """``(w0, c0, gen)`` of one sample, each ``(1, nx, ny)``; ``gen`` continues the draws."""
        gen = generator(seed)
        w0 = gaussian_random_field_2d(
            grid.x.n,
            alpha=settings["alpha"],
            tau=settings["tau"],
            sigma=settings["sigma"],
            generator=gen,
            zero_mean=True,
        )
        blobs = checks.positive_int("blobs", settings["blobs"])
        width = checks.positive("width", settings["width"])
        return w0, random_blobs(grid, gen, blobs, width), gen

    def source(self, gens: list, settings: dict, grid: Grid2D) -> tuple[Source | None, dict]:
        """No source; the source variant draws one per sample and returns its parameters."""
        return None, {}

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        grid = self.grid(settings)
        nu = checks.positive("nu", settings["nu"])
        kappa = checks.non_negative("kappa", settings["kappa"])
        draws = [self.initial(seed, settings, grid) for seed in seeds]
        w0 = torch.cat([d[0] for d in draws]).to(device)
        c0 = torch.cat([d[1] for d in draws]).to(device)
        source, params = self.source([d[2] for d in draws], settings, grid)
        w, c = solve_ns_tracer(
            w0,
            c0,
            grid,
            nu,
            kappa,
            self.times(settings),
            settings["forcing"],
            source=source,
            max_step=self.step(settings),
            limiter=settings["limiter"],
        )
        vx, vy = velocity(w, grid)
        batch = len(seeds)
        params = {
            "nu": torch.full((batch,), nu, dtype=FLOAT, device=w.device),
            "kappa": torch.full((batch,), kappa, dtype=FLOAT, device=w.device),
            **params,
        }
        fields = {"vx": vx, "vy": vy, "mass": grid.integrate(c)}
        if source is not None:
            released = [source.released(t) for t in self.times(settings).tolist()]
            amount = torch.tensor(released, dtype=FLOAT, device=w.device)
            fields["released"] = amount.expand(batch, -1).clone()
        return Batch(c, params, fields)


class NavierStokesTracerSource(NavierStokesTracer):
    name = "ns-tracer-source"
    description = (
        "ns-tracer with a pulsing source s = a(t) f(x, y): f a unit-mass Gaussian at a random "
        "point, a(t) = rate (1 - cos 2pi t/period), so the total grows by exactly "
        "A(t) = rate (t - sin(2pi t/period) period/2pi); fields released = A(t) per frame"
    )
    options = {
        **NavierStokesTracer.options,
        "source_rate": Option(0.01, "mean release rate (mass per unit time) of the source"),
        "source_period": Option(5.0, "period of the pulsing release"),
        "source_width": Option(0.05, "standard deviation of the source's Gaussian shape"),
    }

    def field_shapes(self, settings: dict) -> dict[str, tuple[int, ...]]:
        shapes = super().field_shapes(settings)
        return {**shapes, "released": shapes["mass"]}

    def attributes(self, settings: dict) -> dict[str, object]:
        return {
            **super().attributes(settings),
            "pde": "tracer in navier-stokes with a source: c_t + div(u c) = kappa Lap c + "
            "a(t) f(x, y), a(t) = source_rate (1 - cos 2pi t/source_period), f a Gaussian "
            "(std source_width) at (source_x, source_y), normalised so grid.integrate(f) = 1; "
            "w_t + u.grad w = nu Lap w + f_w",
            "fields": "u: tracer c; vx, vy: velocity; mass: grid.integrate(c) per frame; "
            "released: A(t), so mass = mass[0] + released",
        }

    def source(self, gens: list, settings: dict, grid: Grid2D) -> tuple[Source | None, dict]:
        width = checks.positive("source_width", settings["source_width"])
        release = PulsedRelease(settings["source_rate"], settings["source_period"])
        points = torch.cat([torch.rand(1, 2, generator=gen, dtype=FLOAT) for gen in gens])
        lower = torch.tensor([grid.x.lower, grid.y.lower], dtype=FLOAT)
        lengths = torch.tensor([grid.x.length, grid.y.length], dtype=FLOAT)
        centre = lower + points * lengths
        shape = gaussian_blob(grid, centre, width)
        shape = shape / grid.integrate(shape)[:, None, None]
        params = {"source_x": centre[:, 0], "source_y": centre[:, 1]}
        return Source(shape, release), params


PROBLEMS = [NavierStokesTracer(), NavierStokesTracerSource()]


# ----------------------------------------------------------------------------- exact cases

_BLOB_FLOW = (1.0, 0.5)
_BLOB_KAPPA = 2e-3
_BLOB_T_END = 0.25


def _drifting_blob(n: int) -> Comparison:
    """A Gaussian blob carried a quarter of the unit torus by a uniform flow, diffusing;
    the step is proportional to ``dx``, so space and time errors both fall like ``dx²``."""
    grid = Grid2D.square(n, periodic=True)
    t = torch.linspace(0.0, _BLOB_T_END, 3, dtype=FLOAT)
    centre = torch.tensor([[0.3, 0.4], [0.55, 0.7]], dtype=FLOAT)
    std = torch.tensor([0.08, 0.1], dtype=FLOAT)
    exact = drifting_blob(grid, t, centre, std, _BLOB_FLOW, _BLOB_KAPPA)
    h = 0.15 * grid.x.dx
    numerical = solve_tracer(exact[:, 0], grid, _BLOB_KAPPA, t, _BLOB_FLOW, max_step=h)
    x, _ = grid.coordinates()
    return Comparison(numerical.flatten(2), exact.flatten(2), x.flatten(), t, spacing=grid.x.dx)


EXACT_CASES = [
    ExactCase("ns-tracer-drifting-blob", _drifting_blob, (16, 32, 64), order=2, norm="l1")
]
