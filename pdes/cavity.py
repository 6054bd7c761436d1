"""The lid-driven cavity: 2-D incompressible Navier–Stokes in streamfunction–vorticity form.

On the square ``[a, a+L]²`` (a :class:`~pdes.grid.Grid2D` node grid, ``n`` nodes per side
including the walls, spacing ``h = L/(n-1)``, arrays indexed ``[..., x, y]``)::

    w_t + u w_x + v w_y = ν Δw,     -Δψ = w,     u = ψ_y,  v = -ψ_x,     ν = U L / Re,

with no-slip walls and the top wall ``y = a+L`` (the lid) sliding with speed ``U`` in ``+x``.
Time is in the units of ``L`` over the units of ``U``; with ``U = L = 1`` the viscous term is
``(1/Re) Δw``.

* Poisson: ``ψ = 0`` on the walls and the five-point Laplacian on the interior nodes. The 1-D
  Dirichlet second-difference matrix is diagonal in the orthonormal sine basis
  ``S_jk = √(2/(m+1)) sin(π j k/(m+1))`` (``m = n-2``, ``S = Sᵀ = S⁻¹``) with eigenvalues
  ``-(4/h²) sin²(π k / (2(m+1)))``, so ``ψ = S [(S w S) / (μ_j + μ_k)] S``: four batched
  matrix products per solve, exact to round-off for the discrete system.
* Wall vorticity (Thom): a Taylor expansion of ``ψ`` from the wall to the first interior node
  with ``ψ_wall = 0`` and the normal derivative fixed by the wall's tangential velocity gives
  ``w_wall = -2 ψ₁ / h²`` on the fixed walls and ``w_lid = -2 ψ₁ / h² - 2 U / h`` on the lid
  (``ψ₁`` the value one node inside). The corners never enter the interior stencils; the output
  gives each corner the mean of its two neighbouring wall values.
* Transport: second-order central differences for ``Δw`` and ``u·∇w`` (``advection='central'``,
  the default: accurate while the cell Péclet number ``U h / ν`` is below about 2, i.e.
  ``n - 1 > Re/2`` for ``L = U = 1``), or ``advection='upwind'``: the third-order upwind-biased
  stencil ``u w_x ≈ u (-w_{i+2} + 8w_{i+1} - 8w_{i-1} + w_{i-2})/(12h) +
  |u| (w_{i+2} - 4w_{i+1} + 6w_i - 4w_{i-1} + w_{i-2})/(12h)``, which damps the grid-scale
  wiggles of higher Reynolds numbers. It is used at nodes three or more from the walls, where it
  reads interior vorticity only; the two nodes nearest each wall keep the central difference (the
  stencil reaching Thom's wall values made coarse high-Re runs, 33² at Re = 1000, blow up).
* Velocities: ``u = (ψ_{i,j+1} - ψ_{i,j-1})/(2h)``, ``v = -(ψ_{i+1,j} - ψ_{i-1,j})/(2h)`` on
  interior nodes; on the walls exactly ``u = v = 0`` except ``u = U`` on the lid, whose row
  includes the two top corners. The central divergence of this velocity vanishes at every
  interior node to round-off (the two central differences commute, and the wall values they reach
  equal the central differences of ``ψ = 0`` along the walls).
* Time: the strong-stability-preserving three-stage Runge–Kutta scheme (Shu & Osher) on the
  interior vorticity. With frozen coefficients the diffusion eigenvalues lie in
  ``[-8ν/h², 0]`` and the central advection ones on the imaginary axis up to ``V/h``,
  ``V = max(U, max |u|+|v|)``. SSP-RK3's stability region contains the triangle with corners
  ``-2.5`` and ``±1.7i``, hence the limit ``dt ≤ 1 / (8ν/(2.5h²) + V/(1.7h))``; for the upwind
  stencil the real extent grows by ``(4/3)V/h`` and the imaginary one to ``1.3722 V/h``. The
  limit is evaluated for every sample before every step: a user ``dt`` beyond it raises
  :class:`~pdes.errors.SolverError` naming the limit; without ``dt`` each sample takes
  :data:`SAFETY` of its own limit, so a sample's trajectory does not depend on the other samples
  in its batch.

Reference data: Ghia, Ghia & Shin (1982), "High-Re solutions for incompressible flow using the
Navier–Stokes equations and a multigrid method", J. Comput. Phys. 48, 387–411, Tables I and II
(:data:`GHIA_RE100`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import checks
from .checks import FLOAT
from .errors import SolverError
from .grid import Grid2D
from .problems import Batch, Option, Problem, generator
from .verification import Comparison, ExactCase

Parameter = float | Sequence[float] | torch.Tensor

__all__ = [
    "ADVECTION",
    "EXACT_CASES",
    "CavityProblem",
    "GHIA_RE100",
    "PROBLEMS",
    "SAFETY",
    "random_vorticity",
    "solve_cavity",
    "stability_limit",
    "steady_cavity",
    "streamfunction",
    "velocity",
]

GHIA_RE100: dict[str, tuple[float, ...]] = {
    "y": (1.0000, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5000, 0.4531, 0.2813,
          0.1719, 0.1016, 0.0703, 0.0625, 0.0547, 0.0000),
    "u": (1.00000, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581,
          -0.21090, -0.15662, -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.00000),
    "x": (1.0000, 0.9688, 0.9609, 0.9531, 0.9453, 0.9063, 0.8594, 0.8047, 0.5000, 0.2344, 0.2266,
          0.1563, 0.0938, 0.0781, 0.0703, 0.0625, 0.0000),
    "v": (0.00000, -0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454,
          0.17527, 0.17507, 0.16077, 0.12317, 0.10890, 0.10091, 0.09233, 0.00000),
}  # fmt: skip
"""Steady cavity at Re = 100 (Ghia, Ghia & Shin 1982, Tables I and II; unit square, unit lid
speed): ``u`` at the points ``y`` of the vertical centreline ``x = 0.5`` and ``v`` at the points
``x`` of the horizontal centreline ``y = 0.5``."""

SAFETY = 0.9
"""Fraction of the stability limit that each sample steps with when no ``dt`` is given."""

MAX_STEPS = 10_000_000
"""More steps than this to the next output time raise ``SolverError`` (a runaway velocity)."""

BLOW_UP = 100.0
"""Growth of the speed ``V`` since ``t = 0`` beyond which running out of steps is reported as
the solution blowing up."""

ADVECTION = ("central", "upwind")
"""The stencils of the advection ``u·∇w`` (see the module docstring)."""
_REAL_EXTENT = 2.5  # SSP-RK3 is stable on [-2.51, 0] ...
_IMAGINARY_EXTENT = 1.7  # ... and on the imaginary axis up to √3; the triangle between is inside.
_UPWIND_DAMPING = 4.0 / 3.0  # max of |u|·16 sin⁴(θ/2)/(12h) per unit |u|/h
_UPWIND_PHASE = 1.3722  # max of (8 sin θ - sin 2θ)/6 per unit |u|/h


# --------------------------------------------------------------------------- arguments


def _parameter(name: str, value: Parameter) -> torch.Tensor:
    """A positive number or one per sample, as a 1-D float64 tensor (length 1 for a number)."""
    tensor = checks.parameter(name, value, "a positive number or one per sample (sample,)")
    tensor = tensor.reshape(-1)
    if not torch.isfinite(tensor).all() or (tensor <= 0).any():
        raise ValueError(f"{name} must be finite and > 0 for every sample, got {tensor.tolist()}")
    return tensor


def _check_grid(grid: Grid2D) -> int:
    if not isinstance(grid, Grid2D):
        raise TypeError(f"grid must be a pdes.Grid2D (e.g. Grid2D.square(65)), got {type(grid)}")
    if grid.x != grid.y or grid.x.kind != "node" or grid.x.periodic:
        raise ValueError(
            "grid must be a square, non-periodic node grid (Grid2D.square(n)), got "
            f"x={grid.x.describe()}, y={grid.y.describe()}"
        )
    return checks.positive_int("grid.n (nodes per side)", grid.x.n, 5)


def _vorticity(name: str, value: torch.Tensor, n: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (sample, n, n), got {type(value)}")
    checks.real(name, value)
    if value.ndim == 2:
        value = value.unsqueeze(0)
    if value.ndim != 3 or tuple(value.shape[1:]) != (n, n):
        raise ValueError(
            f"{name} must have shape (sample, {n}, {n}) to match the grid, got {tuple(value.shape)}"
        )
    checks.finite(name, value)
    return value.to(dtype=FLOAT)


def _batch(
    grid: Grid2D,
    reynolds: Parameter,
    lid_velocity: Parameter,
    w0: torch.Tensor | None,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked ``(re, lid, w0)``: ``(batch,)``, ``(batch,)``, ``(batch, n, n)`` on one device."""
    n = _check_grid(grid)
    re = _parameter("reynolds", reynolds)
    lid = _parameter("lid_velocity", lid_velocity)
    sizes = {"reynolds": re.numel(), "lid_velocity": lid.numel()}
    if w0 is not None:
        w0 = _vorticity("w0", w0, n)
        sizes["w0"] = w0.shape[0]
    batch = max(sizes.values())
    if any(size not in (1, batch) for size in sizes.values()):
        raise ValueError(
            f"reynolds, lid_velocity and w0 disagree on the number of samples: {sizes}"
        )
    if device is None:
        for candidate in (w0, reynolds, lid_velocity):
            if isinstance(candidate, torch.Tensor):
                device = candidate.device
                break
    device = torch.device(device if device is not None else "cpu")
    if w0 is None:
        w0 = torch.zeros(batch, n, n, dtype=FLOAT, device=device)
    return (
        re.to(device).expand(batch).contiguous(),
        lid.to(device).expand(batch).contiguous(),
        w0.to(device).expand(batch, n, n).contiguous(),
    )


# --------------------------------------------------------------------------- Poisson and walls


@functools.lru_cache(maxsize=16)
def _poisson_basis(m: int, h: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The orthonormal sine matrix ``S (m, m)`` and ``1/(μ_j + μ_k) (m, m)`` of ``-Δ_h``."""
    k = torch.arange(1, m + 1, dtype=FLOAT)
    sine = math.sqrt(2.0 / (m + 1)) * torch.sin(math.pi * torch.outer(k, k) / (m + 1))
    mu = 4.0 / h**2 * torch.sin(0.5 * math.pi * k / (m + 1)) ** 2
    inverse = 1.0 / (mu[:, None] + mu[None, :])
    return sine.to(device), inverse.to(device)


def _solve_interior(w: torch.Tensor, h: float) -> torch.Tensor:
    """``ψ`` on the interior nodes ``(batch, m, m)``: ``-Δ_h ψ = w`` there, ``ψ = 0`` on walls."""
    sine, inverse = _poisson_basis(w.shape[-1], float(h), str(w.device))
    coefficients = sine @ w @ sine
    return sine @ (coefficients * inverse) @ sine


def streamfunction(w: torch.Tensor, grid: Grid2D) -> torch.Tensor:
    """``ψ (sample, n, n)`` with ``-Δ_h ψ = w`` on interior nodes and ``ψ = 0`` on the walls.

    ``w`` is ``(sample, n, n)`` or ``(n, n)`` on the cavity's ``grid``; its wall values are not
    used.
    """
    n = _check_grid(grid)
    w = _vorticity("w", w, n)
    return F.pad(_solve_interior(w[:, 1:-1, 1:-1], grid.x.dx), (1, 1, 1, 1))


def velocity(
    psi: torch.Tensor, grid: Grid2D, lid_velocity: Parameter = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocities ``(vx, vy)``, each ``(sample, n, n)``, from a streamfunction with ``ψ = 0`` walls.

    Interior nodes: central differences of ``u = ψ_y``, ``v = -ψ_x``; walls: exactly no-slip, and
    ``vx = lid_velocity`` on the top row (corners included). ``psi`` is ``(sample, n, n)`` on the
    cavity's ``grid``.
    """
    n = _check_grid(grid)
    psi = _vorticity("psi", psi, n)
    lid = _parameter("lid_velocity", lid_velocity).to(psi.device)
    if lid.numel() not in (1, psi.shape[0]):
        raise ValueError(
            f"lid_velocity must be a number or hold {psi.shape[0]} values, got {lid.numel()}"
        )
    vx, vy = _velocity(psi, 0.5 / grid.x.dx)
    vx[:, :, -1] = lid[:, None]
    return vx, vy


def _velocity(psi: torch.Tensor, half_inverse_h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Central-difference velocities on interior nodes, zero on the walls."""
    vx = F.pad((psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) * half_inverse_h, (1, 1, 1, 1))
    vy = F.pad((psi[:, :-2, 1:-1] - psi[:, 2:, 1:-1]) * half_inverse_h, (1, 1, 1, 1))
    return vx, vy


class _Cavity:
    """The semi-discrete problem for one batch: interior vorticity ``(batch, m, m)`` → rates."""

    def __init__(
        self, grid: Grid2D, reynolds: torch.Tensor, lid: torch.Tensor, advection: str
    ) -> None:
        self.n = grid.x.n
        self.h = grid.x.dx
        self.length = grid.x.length
        self.advection = checks.choice("advection", advection, ADVECTION)
        self.nu = lid * self.length / reynolds
        self.lid = lid
        self.thom = -2.0 / self.h**2
        self.lid_shear = (-2.0 / self.h) * lid[:, None]

    def fields(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-grid ``(W, Ψ)`` from the interior vorticity; ``W`` has Thom's wall values."""
        psi = F.pad(_solve_interior(w, self.h), (1, 1, 1, 1))
        full = F.pad(w, (1, 1, 1, 1))
        full[:, 0, 1:-1] = self.thom * psi[:, 1, 1:-1]
        full[:, -1, 1:-1] = self.thom * psi[:, -2, 1:-1]
        full[:, 1:-1, 0] = self.thom * psi[:, 1:-1, 1]
        full[:, 1:-1, -1] = self.thom * psi[:, 1:-1, -2] + self.lid_shear
        return full, psi

    def output(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W, vx, vy)`` on the full grid: corner convention, exact wall velocities."""
        full, psi = self.fields(w)
        for i, j, di, dj in ((0, 0, 1, 1), (-1, 0, -1, 1), (0, -1, 1, -1), (-1, -1, -1, -1)):
            full[:, i, j] = 0.5 * (full[:, i + di, j] + full[:, i, j + dj])
        vx, vy = _velocity(psi, 0.5 / self.h)
        vx[:, :, -1] = self.lid[:, None]
        return full, vx, vy

    def rates(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dw/dt (batch, m, m), speed (batch,))`` with ``speed = max(U, max |u| + |v|)``."""
        full, psi = self.fields(w)
        scale = 0.5 / self.h
        u = (psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) * scale
        v = (psi[:, :-2, 1:-1] - psi[:, 2:, 1:-1]) * scale
        east, west = full[:, 2:, 1:-1], full[:, :-2, 1:-1]
        north, south = full[:, 1:-1, 2:], full[:, 1:-1, :-2]
        laplacian = (east + west + north + south - 4.0 * w) * (1.0 / self.h**2)
        along_x = u * (east - west) * scale
        along_y = v * (north - south) * scale
        if self.advection == "upwind" and w.shape[-1] > 4:
            along_x[:, 2:-2, :] = _upwind(w, u[:, 2:-2, :], 1, self.h)
            along_y[:, :, 2:-2] = _upwind(w, v[:, :, 2:-2], 2, self.h)
        rate = self.nu[:, None, None] * laplacian - along_x - along_y
        speed = torch.maximum((u.abs() + v.abs()).amax((-2, -1)), self.lid)
        return rate, speed

    def limit(self, speed: torch.Tensor) -> torch.Tensor:
        """The largest stable step of each sample ``(batch,)`` at advective speed ``speed``."""
        real = 8.0 * self.nu / self.h**2
        imaginary = speed / self.h
        if self.advection == "upwind":
            real = real + _UPWIND_DAMPING * speed / self.h
            imaginary = _UPWIND_PHASE * imaginary
        return 1.0 / (real / _REAL_EXTENT + imaginary / _IMAGINARY_EXTENT)

    def formula(self) -> str:
        if self.advection == "upwind":
            return "1/((8ν/h² + (4/3)V/h)/2.5 + 1.3722·V/(1.7h))"
        return "1/(8ν/(2.5h²) + V/(1.7h))"

    def step(self, w: torch.Tensor, rate: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """One SSP-RK3 step of sizes ``dt (batch, 1, 1)`` given the first stage's ``rate``."""
        first = w + dt * rate
        second = 0.75 * w + 0.25 * (first + dt * self.rates(first)[0])
        return w / 3.0 + (2.0 / 3.0) * (second + dt * self.rates(second)[0])


def _upwind(values: torch.Tensor, speed: torch.Tensor, axis: int, h: float) -> torch.Tensor:
    """``c w_s`` by the third-order upwind-biased stencil at the nodes ``2 .. n-3`` of ``values``.

    ``values`` holds ``n`` consecutive nodes along ``axis``; ``speed`` is the velocity component
    ``c`` at its nodes ``2 .. n-3`` along ``axis``.
    """
    n = values.shape[axis]
    w = [values.narrow(axis, k, n - 4) for k in range(5)]  # w_{i-2}, ..., w_{i+2}
    central = (w[0] - w[4] + 8.0 * (w[3] - w[1])) * (1.0 / (12.0 * h))
    damping = (w[0] + w[4] - 4.0 * (w[1] + w[3]) + 6.0 * w[2]) * (1.0 / (12.0 * h))
    return speed * central + speed.abs() * damping


def stability_limit(
    grid: Grid2D,
    reynolds: Parameter,
    lid_velocity: Parameter = 1.0,
    speed: Parameter | None = None,
    advection: str = "central",
) -> torch.Tensor:
    """The largest stable explicit step ``(sample,)`` of :func:`solve_cavity`.

    ``speed`` is the advective speed ``V = max |u|+|v|`` (at least the lid speed; default: the
    lid speed, the value for a fluid starting from rest). ``grid``, ``reynolds``,
    ``lid_velocity`` and ``advection`` as in :func:`solve_cavity`.
    """
    re, lid, _ = _batch(grid, reynolds, lid_velocity, None, None)
    cavity = _Cavity(grid, re, lid, advection)
    v = lid if speed is None else torch.maximum(_parameter("speed", speed), lid)
    return cavity.limit(v)


# --------------------------------------------------------------------------- time stepping


def _check_speed(speed: torch.Tensor, t: float, name: str) -> None:
    if not torch.isfinite(speed).all():
        raise SolverError(f"{name}: the solution became NaN or inf near t={t:.6g}")


def _check_step(cavity: _Cavity, dt: float, limit: torch.Tensor, speed, t: float) -> None:
    worst = int(torch.argmin(limit))
    if dt > float(limit[worst]):
        raise SolverError(
            f"dt={dt:.6g} is beyond the stability limit {float(limit[worst]):.6g} of the explicit "
            f"SSP-RK3 step, {cavity.formula()} with ν={float(cavity.nu[worst]):.6g}, "
            f"h={cavity.h:.6g}, V={float(speed[worst]):.6g} (sample {worst}, t={t:.6g}); "
            "pass a smaller dt or dt=None"
        )


def _too_many_steps(
    name: str, limit: torch.Tensor, speed: torch.Tensor, start: torch.Tensor, t: float
) -> SolverError:
    """More than ``MAX_STEPS`` at the solver's own step: a blow-up if ``V`` grew past
    ``BLOW_UP`` times its ``start`` value ``(batch,)``, else a step count too large."""
    growth = speed / start
    worst = int(torch.argmax(growth))
    steps = f"more than MAX_STEPS={MAX_STEPS} steps to go"
    if float(growth[worst]) < BLOW_UP:
        return SolverError(
            f"{name}: the stability limit fell to {float(limit.min()):.3g} "
            f"(V={float(speed.max()):.3g}); {steps}"
        )
    return SolverError(
        f"{name}: the solution is blowing up: the speed V = max(U, max|u|+|v|) of sample "
        f"{worst} grew {float(growth[worst]):.3g}-fold, from {float(start[worst]):.3g} at t=0 "
        f"to {float(speed[worst]):.3g} near t={t:.6g}, and its stability limit fell to "
        f"{float(limit[worst]):.3g}: {steps}; refine the grid or lower the Reynolds number"
    )


def _advance(
    cavity: _Cavity,
    w: torch.Tensor,
    t0: float,
    span: float,
    dt: float | None,
    name: str,
    start: torch.Tensor,
) -> torch.Tensor:
    """Integrate the interior vorticity from ``t0`` over ``span`` time units; ``start`` is the
    speed ``V`` at ``t = 0`` ``(batch,)``."""
    batch = w.shape[0]
    if dt is not None:
        count = max(1, math.ceil(span / dt - 1e-9))
        if count > MAX_STEPS:
            raise SolverError(f"{name}: {count} steps of dt={dt:g} exceed MAX_STEPS={MAX_STEPS}")
        step = torch.full((batch, 1, 1), span / count, dtype=FLOAT, device=w.device)
        for k in range(count):
            rate, speed = cavity.rates(w)
            time = t0 + k * span / count
            _check_speed(speed, time, name)
            _check_step(cavity, dt, cavity.limit(speed), speed, time)
            w = cavity.step(w, rate, step)
        return w
    remaining = torch.full((batch,), span, dtype=FLOAT, device=w.device)
    while True:
        rate, speed = cavity.rates(w)
        time = t0 + span - float(remaining.max())
        _check_speed(speed, time, name)
        active = remaining > 0
        limit = cavity.limit(speed)
        count = torch.ceil(remaining / (SAFETY * limit) - 1e-9).clamp(min=1)
        if float(count.max()) > MAX_STEPS:
            raise _too_many_steps(name, limit, speed, start, time)
        step = torch.where(active, remaining / count, 0.0)
        w = torch.where(active[:, None, None], cavity.step(w, rate, step[:, None, None]), w)
        remaining = torch.where(count > 1, remaining - step, 0.0)
        if not bool((remaining > 0).any()):
            return w


def solve_cavity(
    grid: Grid2D,
    times: Sequence[float] | torch.Tensor,
    reynolds: Parameter,
    lid_velocity: Parameter = 1.0,
    w0: torch.Tensor | None = None,
    dt: float | None = None,
    *,
    advection: str = "central",
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lid-driven cavity flow at ``times``: ``(w, vx, vy)``, each ``(sample, time, n, n)``.

    ``reynolds`` (``U L/ν``) and ``lid_velocity`` ``U`` are positive numbers or ``(sample,)``;
    ``w0`` ``(sample, n, n)`` is the initial vorticity (default: rest; its wall values are
    replaced by Thom's). ``dt`` fixes the step (checked against :func:`stability_limit` at
    every step); without it each sample steps at :data:`SAFETY` of its own limit. ``grid`` is
    the square node grid of the cavity; ``advection`` the stencil of ``u·∇w``, one of
    :data:`ADVECTION` (see the module docstring); ``device`` where it is solved (default: that
    of the tensors given, else the CPU).
    """
    re, lid, w0 = _batch(grid, reynolds, lid_velocity, w0, device)
    t_out = checks.times("times", times)
    if dt is not None:
        dt = checks.positive("dt", dt)
    cavity = _Cavity(grid, re, lid, advection)
    w = w0[:, 1:-1, 1:-1].contiguous()
    start = cavity.rates(w)[1]
    outputs: list[tuple[torch.Tensor, ...]] = []
    t = 0.0
    for target in t_out.tolist():
        if target > t:
            w = _advance(cavity, w, t, target - t, dt, "solve_cavity", start)
            t = target
        fields = cavity.output(w)
        checks.finite_result("solve_cavity", fields[0], t)
        outputs.append(fields)
    w_out, vx, vy = (torch.stack(parts, dim=1) for parts in zip(*outputs, strict=True))
    return w_out, vx, vy


def steady_cavity(
    grid: Grid2D,
    reynolds: Parameter,
    lid_velocity: Parameter = 1.0,
    w0: torch.Tensor | None = None,
    dt: float | None = None,
    *,
    tol: float = 1e-4,
    max_time: float = 200.0,
    advection: str = "central",
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The steady cavity flow ``(w, vx, vy)``, each ``(sample, n, n)``, by time marching.

    Each sample stops once ``max |Δw|/dt`` over the interior falls below ``tol·U²/L²``; one that
    has not by ``max_time`` raises :class:`SolverError`. Other arguments as :func:`solve_cavity`.
    """
    re, lid, w0 = _batch(grid, reynolds, lid_velocity, w0, device)
    tol = checks.positive("tol", tol)
    max_time = checks.positive("max_time", max_time)
    if dt is not None:
        dt = checks.positive("dt", dt)
    cavity = _Cavity(grid, re, lid, advection)
    threshold = tol * (lid / cavity.length) ** 2
    w = w0[:, 1:-1, 1:-1].contiguous()
    t = torch.zeros_like(lid)
    active = torch.ones_like(lid, dtype=torch.bool)
    while True:
        rate, speed = cavity.rates(w)
        time = float(t.max())
        _check_speed(speed, time, "steady_cavity")
        limit = cavity.limit(speed)
        if dt is not None:
            _check_step(cavity, dt, limit, speed, time)
            step = torch.full_like(lid, dt)
        else:
            step = SAFETY * limit
        updated = cavity.step(w, rate, step[:, None, None])
        residual = (updated - w).abs().amax((-2, -1)) / step
        w = torch.where(active[:, None, None], updated, w)
        t = torch.where(active, t + step, t)
        active = active & (residual > threshold)
        if not bool(active.any()):
            break
        if bool((active & (t >= max_time)).any()):
            worst = int(torch.argmax(torch.where(active, residual / threshold, 0.0)))
            raise SolverError(
                f"steady_cavity: no steady state by max_time={max_time:g}: max|dw/dt| = "
                f"{float(residual[worst]):.3g} > tol·U²/L² = {float(threshold[worst]):.3g} "
                f"(sample {worst}); raise max_time or tol"
            )
    w_out, vx, vy = cavity.output(w)
    checks.finite_result("steady_cavity", w_out, float(t.max()))
    return w_out, vx, vy


# --------------------------------------------------------------------------- exact case


def _run_poisson(n: int) -> Comparison:
    """``ψ = sin(aπx) sin(bπy) e^{x+y}``-type fields against :func:`streamfunction` of ``-Δψ``.

    Space is flattened into the last axis (``x`` is the flattened node index scaled to [0, 1]).
    """
    grid = Grid2D.square(n)
    X, Y = grid.coordinates()
    a = torch.tensor([1.0, 2.0, 3.0], dtype=FLOAT)[:, None, None]
    b = torch.tensor([1.0, 3.0, 2.0], dtype=FLOAT)[:, None, None]
    sx, sy = torch.sin(math.pi * a * X), torch.sin(math.pi * b * Y)
    cx, cy = torch.cos(math.pi * a * X), torch.cos(math.pi * b * Y)
    growth = torch.exp(X + Y)
    psi = sx * sy * growth
    # -Δ(sx sy e^{x+y}) = e^{x+y} [((aπ)² + (bπ)² - 2) sx sy - 2aπ cx sy - 2bπ sx cy]
    w = growth * (
        ((a * math.pi) ** 2 + (b * math.pi) ** 2 - 2.0) * sx * sy
        - 2.0 * a * math.pi * cx * sy
        - 2.0 * b * math.pi * sx * cy
    )
    numerical = streamfunction(w, grid)
    flat = torch.linspace(0.0, 1.0, n * n, dtype=FLOAT)
    return Comparison(
        numerical.flatten(1)[:, None], psi.flatten(1)[:, None], flat, torch.zeros(1), grid.x.dx
    )


EXACT_CASES = [ExactCase("cavity-poisson", _run_poisson, (17, 33, 65, 129), order=2.0)]


# --------------------------------------------------------------------------- dataset recipe


def random_vorticity(
    gen: torch.Generator, grid: Grid2D, modes: int, decay: float, amplitude: float
) -> torch.Tensor:
    """``amplitude Σ_{j,k ≤ modes} N(0,1) (j²+k²)^(-decay/2) sin(jπξ) sin(kπη)`` ``(n, n)``.

    ``ξ, η`` are the node positions of ``grid`` scaled to ``[0, 1]``; zero on the walls. Draws
    on the CPU from ``gen``.
    """
    j = torch.arange(1, modes + 1, dtype=FLOAT)
    weights = (j[:, None] ** 2 + j[None, :] ** 2) ** (-0.5 * decay)
    coefficients = torch.randn(modes, modes, generator=gen, dtype=FLOAT) * weights * amplitude
    xi = torch.linspace(0.0, 1.0, grid.x.n, dtype=FLOAT)
    basis = torch.sin(math.pi * j[:, None] * xi[None, :])  # (modes, n)
    return basis.T @ coefficients @ basis


class CavityProblem(Problem):
    name = "cavity"
    description = (
        "Lid-driven cavity on the unit square, 2-D Navier-Stokes in streamfunction-vorticity form "
        "(w_t + u.grad w = nu lap w, -lap psi = w, u = psi_y, v = -psi_x): no-slip walls, the lid "
        "y = 1 slides with speed U in +x. Samples differ by their lid speed U ~ U[lid_min, "
        "lid_max] at a fixed viscosity nu = 1/reynolds, so Re = reynolds * U per sample; the "
        "fluid starts at rest (optionally plus a random smooth vorticity, w0_amplitude > 0). "
        "u is the vorticity; fields vx, vy the velocity. Default: nt = 26 snapshots, t = 0 and "
        "25 steps to t = 2 (BOON's multi-step cavity set-up, Re = 100 at U = 1)."
    )
    options = {
        "nx": Option(65, "grid nodes per side including the walls (65 = 64² cells; 33, 129 ...)"),
        "reynolds": Option(100.0, "Reynolds number at lid speed 1 (viscosity = 1/reynolds)"),
        "lid_min": Option(0.5, "smallest lid speed U"),
        "lid_max": Option(1.5, "largest lid speed U"),
        "t_end": Option(2.0, "final time"),
        "nt": Option(26, "output times including t=0 (26: t=0 and 25 steps to t_end)"),
        "advection": Option("central", "advection stencil: central or upwind (3rd order)"),
        "w0_amplitude": Option(0.0, "amplitude of a random smooth initial vorticity (0: rest)"),
        "modes": Option(4, "sine modes per axis in the random initial vorticity"),
        "decay": Option(2.0, "mode (j, k) of the initial vorticity is ~ (j²+k²)^(-decay/2)"),
    }

    def _grid(self, settings: dict) -> Grid2D:
        return Grid2D.square(checks.positive_int("nx", settings["nx"], 5))

    def _times(self, settings: dict) -> torch.Tensor:
        checks.positive("t_end", settings["t_end"])
        checks.positive_int("nt", settings["nt"], 2)
        return torch.linspace(0.0, settings["t_end"], settings["nt"], dtype=FLOAT)

    def _lid_range(self, settings: dict) -> tuple[float, float]:
        low = checks.positive("lid_min", settings["lid_min"])
        high = checks.positive("lid_max", settings["lid_max"])
        if high < low:
            raise ValueError(f"lid_max must be >= lid_min, got {high} < {low}")
        return low, high

    def field_shapes(self, settings: dict) -> dict[str, tuple[int, ...]]:
        return dict.fromkeys(("vx", "vy"), self.sample_shape(settings))

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        axis = self._grid(settings).x.coordinates().numpy()
        return {"t": self._times(settings).numpy(), "x": axis, "y": axis.copy()}

    def attributes(self, settings: dict) -> dict[str, object]:
        return {
            "pde": "2-D incompressible Navier-Stokes, vorticity form: w_t + u w_x + v w_y = "
            "nu lap w, -lap psi = w, u = psi_y, v = -psi_x, nu = 1/reynolds",
            "boundary": "no-slip walls u = v = 0 and psi = 0; lid y=1: u = U (top corners "
            "included), Thom wall vorticity",
            "solver": f"pdes.cavity.solve_cavity: 2nd-order finite differences "
            f"({settings['advection']} advection), sine-transform Poisson solve, SSP-RK3 at "
            f"{SAFETY} of the stability limit",
            "samples": "lid speed U ~ U[lid_min, lid_max] per sample, Re = reynolds * U; start "
            "from rest plus w0_amplitude * random sine modes",
            "snapshots": f"{settings['nt']} including t=0 ({settings['nt'] - 1} steps to t_end)",
            "fields": "u: vorticity w; vx, vy: velocity components",
            **settings,
        }

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        grid = self._grid(settings)
        low, high = self._lid_range(settings)
        reynolds = checks.positive("reynolds", settings["reynolds"])
        amplitude = checks.non_negative("w0_amplitude", settings["w0_amplitude"])
        modes = checks.positive_int("modes", settings["modes"])
        lids, vorticities = [], []
        for seed in seeds:
            gen = generator(seed)
            lids.append(low + (high - low) * torch.rand((), generator=gen, dtype=FLOAT))
            vorticities.append(
                random_vorticity(gen, grid, modes, float(settings["decay"]), amplitude)
            )
        lid = torch.stack(lids)
        w, vx, vy = solve_cavity(
            grid,
            self._times(settings),
            reynolds * lid,
            lid,
            torch.stack(vorticities),
            advection=settings["advection"],
            device=device,
        )
        return Batch(
            u=w,
            params={"reynolds": reynolds * lid, "lid_velocity": lid},
            fields={"vx": vx, "vy": vy},
        )


PROBLEMS = [CavityProblem()]
