"""The wave equation ``u_tt = c² u_xx`` with zero-flux (homogeneous Neumann) ends, exact in time.

Space is the discretisation of :mod:`pdes.heat` with Neumann ends: the interior nodes are the
unknowns, the boundary nodes are eliminated by the one-sided stencils
``(-3u₀ + 4u₁ - u₂)/(2dx) = 0`` and ``(3u_N - 4u_{N-1} + u_{N-2})/(2dx) = 0``, which leaves a
tridiagonal matrix ``A`` on the interior. In the eigenbasis of ``A`` every mode obeys
``q'' = c²λ q`` and is advanced exactly, ``q(t) = q₀ cos(ωt) + p₀ sin(ωt)/ω`` with ``ω = c√(-λ)``
(``q₀ + p₀ t`` for the constant mode), so the only error is the spatial one (second order). The
scheme keeps ``dx·(3/2 u₁ + u₂ + … + 3/2 u_{N-1})`` (:func:`pdes.heat.neumann_mass`) and the
discrete energy (:func:`discrete_energy`) exactly; the boundary nodes are rebuilt from the stencils
at every output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from . import checks
from .boundary import Neumann, parse
from .grid import Grid1D
from .heat import Rate, interior_operator, neumann_boundary, random_modes
from .problems import Batch, Option, Problem, generator
from .verification import Comparison, ExactCase

FLOAT = checks.FLOAT


def _check_boundary(bc: Neumann | str) -> None:
    bc = parse(bc, allowed=("neumann",))
    for side, value in (("left", bc.left), ("right", bc.right)):
        if callable(value) or bool(torch.as_tensor(value).ne(0).any()):
            raise ValueError(
                f"bc: only homogeneous Neumann (du/dx = 0 at both ends) is supported by "
                f"solve_wave, got Neumann.{side}={value!r}"
            )


def _check_grid(grid: Grid1D) -> None:
    checks.grid_1d(grid)
    if grid.periodic or grid.kind != "node" or grid.n < 4:
        raise ValueError(
            "grid must be a non-periodic node grid with at least 4 nodes for solve_wave, got "
            f"kind={grid.kind!r}, periodic={grid.periodic}, n={grid.n}"
        )


def solve_wave(
    u0: torch.Tensor,
    v0: torch.Tensor,
    grid: Grid1D,
    c: Rate,
    times: Sequence[float] | torch.Tensor,
    bc: Neumann | str = "neumann",
    return_velocity: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Solve ``u_tt = c² u_xx`` from displacement ``u0`` and velocity ``v0`` ``(sample, x)``.

    Returns ``u`` ``(sample, time, x)`` at ``times`` (and ``u_t`` too with ``return_velocity``).
    ``c`` is a number or one speed per sample. Only ``du/dx = 0`` at both ends is supported.
    """
    _check_boundary(bc)
    _check_grid(grid)
    u0 = checks.field("u0", u0, grid.n)
    v0 = checks.field("v0", v0, grid.n, device=u0.device)
    if u0.shape != v0.shape:
        raise ValueError(
            f"v0 must have the shape of u0 {tuple(u0.shape)}, got shape {tuple(v0.shape)}"
        )
    t_out = checks.times("times", times).to(u0.device)
    batch, device, dx = u0.shape[0], u0.device, grid.dx
    speed = checks.per_sample("c", c, batch, device)

    base = interior_operator(grid.n - 2, dx, neumann=True, device=device)
    q0 = base.forward(u0[:, 1:-1])[:, None, :]
    p0 = base.forward(v0[:, 1:-1])[:, None, :]
    omega = speed[:, None, None] * torch.sqrt((-base.eigenvalues).clamp_min(0.0))[None, None, :]
    t = t_out[None, :, None]
    cosine, sine = torch.cos(omega * t), torch.sin(omega * t)
    sine_over_omega = t * torch.sinc(omega * t / math.pi)
    displacement = base.inverse(q0 * cosine + p0 * sine_over_omega)
    velocity = base.inverse(p0 * cosine - q0 * omega * sine)

    at_start = t_out == 0
    displacement[:, at_start] = u0[:, None, 1:-1]
    velocity[:, at_start] = v0[:, None, 1:-1]
    u, v = _with_boundary(displacement, dx), _with_boundary(velocity, dx)
    checks.finite_result("solve_wave", u, float(t_out[-1]))
    return (u, v) if return_velocity else u


def _with_boundary(interior: torch.Tensor, dx: float) -> torch.Tensor:
    left, right = neumann_boundary(interior, dx, 0.0, 0.0)
    return torch.cat([left[..., None], interior, right[..., None]], dim=-1)


def discrete_energy(u: torch.Tensor, v: torch.Tensor, grid: Grid1D, c: Rate) -> torch.Tensor:
    """``½ dx Σ w_i v_i² + ½ c² dx Σ ((u_{i+1} - u_i)/dx)²`` over interior nodes, ``(...)``.

    ``w = (3/2, 1, …, 1, 3/2)``; ``u``, ``v`` are ``(sample, ..., x)`` node fields and ``c`` a
    number or one speed per sample. :func:`solve_wave` conserves this quantity exactly.
    """
    inner_u = checks.on_grid("u", u, grid)[..., 1:-1]
    inner_v = checks.on_grid("v", v, grid)[..., 1:-1]
    weights = torch.ones(inner_v.shape[-1], dtype=FLOAT, device=v.device)
    weights[0] = weights[-1] = 1.5
    kinetic = 0.5 * grid.dx * (weights * inner_v**2).sum(-1)
    strain = 0.5 * grid.dx * (torch.diff(inner_u, dim=-1) / grid.dx).pow(2).sum(-1)
    speed = checks.per_sample("c", c, u.shape[0], u.device).reshape(-1, *([1] * (kinetic.ndim - 1)))
    return kinetic + speed**2 * strain


def wave_exact(
    x: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    mode: torch.Tensor,
    c: torch.Tensor,
    length: float = 1.0,
) -> torch.Tensor:
    """Standing waves ``cos(jπx/L) cos(cjπt/L)``, per-sample ``mode`` j and ``c``: ``(S, T, X)``.

    ``x`` is measured from the lower end of the domain ``[0, L]``.
    """
    x = checks.finite_values("x", x, "coordinates (X,)")
    t = checks.finite_values("t", t, "times (T,)", x.device).flatten()
    length = checks.positive("length", length)
    mode = checks.finite_values("mode", mode, "a number or one per sample (S,)", x.device)
    wavenumber = (math.pi / length * mode).flatten()
    speed = checks.finite_values("c", c, "a number or one per sample (S,)", x.device).flatten()
    shape = torch.cos(wavenumber[:, None] * x[None, :])
    return (
        shape[:, None, :] * torch.cos(speed[:, None] * wavenumber[:, None] * t[None, :])[..., None]
    )


def _run_exact(n: int) -> Comparison:
    """Standing waves, the last one moving at t=0: ``cos(jπx)(cos ωt + sin ωt)``, ``ω = cjπ``."""
    grid = Grid1D(n)
    x = grid.coordinates()
    t = torch.linspace(0.0, 1.0, 6, dtype=FLOAT)
    mode = torch.tensor([1.0, 2.0, 3.0, 2.0], dtype=FLOAT)
    c = torch.tensor([1.0, 0.7, 0.5, 1.3], dtype=FLOAT)
    launched = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=FLOAT)
    omega = c * mode * math.pi
    shape = torch.cos(mode[:, None] * math.pi * x[None, :])
    exact = wave_exact(x, t, mode, c)
    exact += (launched[:, None] * torch.sin(omega[:, None] * t[None, :]))[..., None] * shape[
        :, None
    ]
    v0 = (launched * omega)[:, None] * shape
    return Comparison(solve_wave(exact[:, 0], v0, grid, c, t), exact, x, t, grid.dx)


EXACT_CASES = [ExactCase("wave-neumann", _run_exact, (17, 33, 65, 129), order=2.0)]


class WaveProblem(Problem):
    name = "wave"
    description = (
        "Wave equation u_tt = c^2 u_xx on x in [0, 1] with du/dx = 0 at both ends (BOON's Neumann "
        "wave); random initial displacement from cosine modes (amplitude ~ j^-decay), initial "
        "velocity zero unless velocity_scale > 0; c drawn uniformly per sample in [c_min, c_max]."
    )
    options = {
        "c_min": Option(1.0, "smallest wave speed"),
        "c_max": Option(1.0, "largest wave speed"),
        "nx": Option(101, "grid nodes on [0, 1]"),
        "t_end": Option(2.0, "final time (c = 1 crosses the domain twice)"),
        "nt": Option(26, "output times including t=0"),
        "modes": Option(8, "random cosine modes in the initial displacement"),
        "decay": Option(2.0, "amplitude of mode j is ~ j^-decay"),
        "amplitude": Option(1.0, "scale of the initial displacement"),
        "velocity_scale": Option(0.0, "scale of a random cosine-mode initial velocity"),
    }

    def _grid(self, settings: dict) -> Grid1D:
        return Grid1D(checks.positive_int("nx", settings["nx"], 4))

    def _times(self, settings: dict) -> torch.Tensor:
        checks.positive("t_end", settings["t_end"])
        checks.positive_int("nt", settings["nt"], 2)
        return torch.linspace(0.0, settings["t_end"], settings["nt"], dtype=FLOAT)

    def boundary(self, settings: dict) -> Neumann:
        """The walls every sample meets: ``du/dx = 0`` at both ends."""
        return Neumann(0.0, 0.0)

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        return {
            "t": self._times(settings).numpy(),
            "x": self._grid(settings).coordinates().numpy(),
        }

    def attributes(self, settings: dict) -> dict[str, object]:
        return {
            "pde": "wave: u_tt = c^2 u_xx",
            "boundary": "neumann: du/dx(0,t)=du/dx(1,t)=0",
            "solver": "pdes.wave.solve_wave: 3-point Laplacian with one-sided 2nd-order Neumann "
            "elimination, exact modal time integration",
            **settings,
        }

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        grid = self._grid(settings)
        low = checks.positive("c_min", settings["c_min"])
        high = checks.positive("c_max", settings["c_max"])
        if high < low:
            raise ValueError(f"c_max must be >= c_min, got {high} < {low}")
        modes = checks.positive_int("modes", settings["modes"])
        decay, amplitude = float(settings["decay"]), float(settings["amplitude"])
        scale = checks.non_negative("velocity_scale", settings["velocity_scale"])
        x = grid.coordinates()
        u0, v0, c = [], [], []
        for seed in seeds:
            gen = generator(seed)
            c.append(low + (high - low) * torch.rand((), generator=gen, dtype=FLOAT))
            u0.append(random_modes(gen, x, "neumann", modes, decay, amplitude))
            v0.append(random_modes(gen, x, "neumann", modes, decay, scale))
        speed = torch.stack(c)
        u = solve_wave(
            torch.stack(u0).to(device),
            torch.stack(v0).to(device),
            grid,
            speed,
            self._times(settings),
        )
        return Batch(u=u, params={"c": speed})


PROBLEMS = [WaveProblem()]
