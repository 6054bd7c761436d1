"""Stokes' second problem: the flow above a plate oscillating in its own plane.

``u_t = ν u_yy`` on ``y ∈ [0, L]`` with ``u(0, t) = U cos(ωt)``. The periodic state is
``u = U e^{-ky} cos(ωt - ky)``, ``k = √(ω/(2ν))``. The solver starts from that state at ``t = 0``
and prescribes its (time-dependent) value at ``y = L`` as well, so the exact solution holds on the
finite domain for all ``t`` and every dataset sample can be checked against it. The numerical work
is :func:`pdes.heat.solve_heat` with two time-dependent Dirichlet values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from . import checks
from .boundary import Dirichlet
from .grid import Grid1D
from .heat import Rate, boundary_step, solve_heat
from .problems import Batch, Option, Problem, generator
from .verification import Comparison, ExactCase

FLOAT = checks.FLOAT
PHASE_PER_STEP = 0.25
"""The default step advances the plate's phase ``ωt`` by at most this many radians. The heat
solver's own default (a quarter of the relative grid spacing in time, ``1/(4(n-1))``) lets a fast
plate turn through ``ω/(4(n-1))`` radians per step (ω = 1000 at 101 nodes: 2.5, a time error 16
times the spatial one)."""


def _per_sample_all(
    amplitude: Rate, omega: Rate, nu: Rate, device=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U``, ``omega``, ``nu`` as ``(batch,)`` tensors, ``batch`` the number of values of any
    that holds one per sample (else 1)."""
    expected = "a number or one value per sample (sample,)"
    tensors = {
        name: checks.parameter(name, value, expected, device)
        for name, value in (("U", amplitude), ("omega", omega), ("nu", nu))
    }
    batch = max(t.numel() for t in tensors.values())
    amplitude_t = tensors["U"].reshape(-1)
    if amplitude_t.numel() not in (1, batch):
        raise ValueError(
            f"U must be a number or hold one value per sample ({batch},), "
            f"got shape {tuple(amplitude_t.shape)}"
        )
    amplitude_t = amplitude_t.expand(batch)
    if not torch.isfinite(amplitude_t).all():
        raise ValueError(f"U must be finite, got {amplitude_t.tolist()}")
    return (
        amplitude_t,
        checks.per_sample("omega", tensors["omega"], batch, device),
        checks.per_sample("nu", tensors["nu"], batch, device),
    )


def _periodic_state(depth, t, amplitude, omega, nu) -> torch.Tensor:
    """``U e^{-k·depth} cos(ωt - k·depth)``, ``k = √(ω/(2ν))``, broadcasting its arguments."""
    k = torch.sqrt(omega / (2.0 * nu))
    return amplitude * torch.exp(-k * depth) * torch.cos(omega * t - k * depth)


def stokes_exact(
    y: torch.Tensor, t: torch.Tensor | Sequence[float], U: Rate, omega: Rate, nu: Rate
) -> torch.Tensor:
    """``U e^{-ky} cos(ωt - ky)``, ``k = √(ω/(2ν))``, as ``(sample, time, y)``.

    ``U``, ``omega``, ``nu`` are numbers or one value per sample; ``y`` ``(Y,)`` is the height
    above the plate, ``t`` ``(T,)``.
    """
    y = checks.finite_values("y", y, "coordinates (Y,)")
    t = checks.finite_values("t", t, "times (T,)", y.device).flatten()
    amplitude, omega_t, nu_t = (v[:, None, None] for v in _per_sample_all(U, omega, nu, y.device))
    return _periodic_state(y[None, None, :], t[None, :, None], amplitude, omega_t, nu_t)


def stokes_walls(
    grid: Grid1D, U: Rate, omega: Rate, nu: Rate, device: torch.device | str = "cpu"
) -> Dirichlet:
    """The exact state's values at both ends of ``grid``, with ``y`` measured from ``grid.lower``.

    ``left``: the plate ``U cos(ωt)``; ``right``: ``U e^{-kH} cos(ωt - kH)`` at the height ``H``
    of the last node above ``grid.lower``. ``U``, ``omega``, ``nu`` are numbers (the values are
    then numbers) or one value per sample (values ``(sample,)``).
    """
    checks.grid_1d(grid)
    if grid.periodic or grid.kind != "node":
        raise ValueError(
            "grid must be a non-periodic node grid (its last node is the upper wall), "
            f"got kind={grid.kind!r}, periodic={grid.periodic}"
        )
    numbers = not any(isinstance(v, torch.Tensor) for v in (U, omega, nu))
    amplitude, omega_t, nu_t = _per_sample_all(U, omega, nu, device)
    top = float(grid.coordinates(device=device)[-1] - float(grid.lower))

    def at(depth: float):
        def value(t: float) -> float | torch.Tensor:
            out = _periodic_state(depth, t, amplitude, omega_t, nu_t)
            return float(out[0]) if numbers else out

        return value

    return Dirichlet(at(0.0), at(top))


def solve_stokes(
    grid: Grid1D,
    times: Sequence[float] | torch.Tensor,
    U: Rate,
    omega: Rate,
    nu: Rate,
    max_step: float | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Stokes' second problem on ``grid`` (``y`` from ``grid.lower``) as ``(sample, time, y)``.

    Starts from the exact periodic state and prescribes it at both ends (see the module docstring).
    The default ``max_step`` is the heat solver's, and at most :data:`PHASE_PER_STEP` radians of
    the fastest plate's phase.
    """
    checks.grid_1d(grid)
    amplitude, omega_t, nu_t = _per_sample_all(U, omega, nu, device)
    y = grid.coordinates(device=device) - float(grid.lower)
    u0 = stokes_exact(y, [0.0], amplitude, omega_t, nu_t)[:, 0]
    if max_step is None:
        fastest = float(omega_t.abs().max())
        max_step = min(boundary_step(grid), PHASE_PER_STEP / fastest if fastest > 0 else math.inf)
    walls = stokes_walls(grid, amplitude, omega_t, nu_t, device)
    return solve_heat(u0, grid, nu_t, times, walls, max_step)


def _run_exact(n: int) -> Comparison:
    """Three samples with different ν, ω, U on ``y ∈ [0, 1]``, over one to three periods."""
    grid = Grid1D(n)
    t = torch.linspace(0.0, 1.0, 6, dtype=FLOAT)
    U = torch.tensor([1.0, 2.0, -0.5], dtype=FLOAT)
    omega = torch.tensor([2.0 * math.pi, 10.0, 4.0], dtype=FLOAT)
    nu = torch.tensor([0.05, 0.1, 0.02], dtype=FLOAT)
    numerical = solve_stokes(grid, t, U, omega, nu)
    exact = stokes_exact(grid.coordinates(), t, U, omega, nu)
    return Comparison(numerical, exact, grid.coordinates(), t, grid.dx)


EXACT_CASES = [ExactCase("stokes", _run_exact, (17, 33, 65, 129), order=2.0)]


class StokesProblem(Problem):
    name = "stokes"
    description = (
        "Stokes' second problem u_t = nu u_yy on y in [0, length], u(0,t) = U cos(omega t), "
        "started from and bounded by the exact periodic state U exp(-ky) cos(omega t - ky), "
        "k = sqrt(omega/(2 nu)); nu and omega drawn uniformly per sample from [min, max] "
        "(BOON-like set-up)."
    )
    options = {
        "nu_min": Option(0.02, "smallest viscosity"),
        "nu_max": Option(0.1, "largest viscosity"),
        "omega_min": Option(10.0, "smallest angular frequency"),
        "omega_max": Option(10.0, "largest angular frequency"),
        "amplitude": Option(2.0, "U, the plate's velocity amplitude"),
        "length": Option(1.0, "domain height L"),
        "nx": Option(101, "grid nodes on [0, L]"),
        "t_end": Option(1.0, "final time"),
        "nt": Option(26, "output times including t=0"),
    }

    def _grid(self, settings: dict) -> Grid1D:
        nx = checks.positive_int("nx", settings["nx"], 3)
        return Grid1D(nx, 0.0, checks.positive("length", settings["length"]))

    def _times(self, settings: dict) -> torch.Tensor:
        checks.positive("t_end", settings["t_end"])
        checks.positive_int("nt", settings["nt"], 2)
        return torch.linspace(0.0, settings["t_end"], settings["nt"], dtype=FLOAT)

    def _range(self, settings: dict, name: str) -> tuple[float, float]:
        low = checks.positive(f"{name}_min", settings[f"{name}_min"])
        high = checks.positive(f"{name}_max", settings[f"{name}_max"])
        if high < low:
            raise ValueError(f"{name}_max must be >= {name}_min, got {high} < {low}")
        return low, high

    def boundary(self, settings: dict) -> Dirichlet:
        """The walls every sample meets, when ``nu`` and ``omega`` are fixed (``_min`` =
        ``_max``): the plate ``u(0, t) = U cos(ωt)`` and the exact state at ``L``. Drawn per
        sample, they give each sample its own walls: ``ValueError``."""
        nu, omega = self._range(settings, "nu"), self._range(settings, "omega")
        if nu[0] != nu[1] or omega[0] != omega[1]:
            raise ValueError(
                f"stokes: the walls follow each sample's nu and omega, drawn from nu in "
                f"[{nu[0]}, {nu[1]}] and omega in [{omega[0]}, {omega[1]}]: no one boundary "
                "condition holds for every sample (it does with nu_min = nu_max and omega_min = "
                "omega_max)"
            )
        return stokes_walls(self._grid(settings), float(settings["amplitude"]), omega[0], nu[0])

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        return {
            "t": self._times(settings).numpy(),
            "x": self._grid(settings).coordinates().numpy(),
        }

    def attributes(self, settings: dict) -> dict[str, object]:
        return {
            "pde": "stokes second problem: u_t = nu u_yy",
            "boundary": "dirichlet: u(0,t)=U cos(omega t), u(L,t)=exact periodic state",
            "solver": "pdes.stokes.solve_stokes -> pdes.heat.solve_heat "
            "(3-point Laplacian, ETDRK4)",
            "exact": "U exp(-k y) cos(omega t - k y), k = sqrt(omega / (2 nu))",
            **settings,
        }

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        nu_low, nu_high = self._range(settings, "nu")
        omega_low, omega_high = self._range(settings, "omega")
        draws = torch.stack(
            [torch.rand(2, generator=generator(seed), dtype=FLOAT) for seed in seeds]
        )
        nu = nu_low + (nu_high - nu_low) * draws[:, 0]
        omega = omega_low + (omega_high - omega_low) * draws[:, 1]
        amplitude = torch.full((len(seeds),), float(settings["amplitude"]), dtype=FLOAT)
        grid = self._grid(settings)
        # the step of the range's fastest plate, not the batch's: a sample then does not depend
        # on the samples it is batched with (chunks, shards)
        step = min(boundary_step(grid), PHASE_PER_STEP / omega_high)
        u = solve_stokes(
            grid, self._times(settings), amplitude, omega, nu, max_step=step, device=device
        )
        return Batch(u=u, params={"nu": nu, "omega": omega, "amplitude": amplitude})


PROBLEMS = [StokesProblem()]
