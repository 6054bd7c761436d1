"""The heat equation ``u_t = κ u_xx`` on a 1-D node grid, by exponential time integration.

Space is the standard second-order three-point Laplacian; time is exact for the linear part
(``pdes.integrators``), so there is no stability limit on the step. The solver is 1-D only; the
2-D heat equation on a periodic box is the tracer with no flow,
``solve_tracer(c0, grid, kappa, t, (0.0, 0.0))`` (:func:`pdes.tracer.solve_tracer` on a periodic
:class:`~pdes.grid.Grid2D`: the five-point Laplacian and explicit SSP-RK2 steps, second order).

* Dirichlet: the unknowns are the interior nodes; the boundary values enter the first and last
  interior rows as a forcing ``κ g/dx²``. The returned boundary nodes hold the prescribed values.
* Neumann: the unknowns are the interior nodes; the boundary nodes are eliminated with the
  second-order one-sided stencils ``(-3u₀ + 4u₁ - u₂)/(2dx) = g_L`` and
  ``(3u_N - 4u_{N-1} + u_{N-2})/(2dx) = g_R``. Substituted into the three-point Laplacian this gives

      row 1:    (-2/3 u₁ + 2/3 u₂)/dx² - (2/3) g_L/dx
      row N-1:  (2/3 u_{N-2} - 2/3 u_{N-1})/dx² + (2/3) g_R/dx,

  a tridiagonal matrix plus a boundary forcing. The returned boundary nodes are rebuilt from the
  same stencils, so every output meets the stencil to round-off (the form BOON enforces). The
  semi-discrete scheme conserves ``dx·(3/2 u₁ + u₂ + … + u_{N-2} + 3/2 u_{N-1})`` exactly up to the
  boundary flux: its time derivative is ``κ (g_R - g_L)`` (:func:`neumann_mass`).
* Periodic: Fourier modes with the eigenvalues ``-4κ/dx² sin²(k dx/2)`` of the *discrete*
  three-point Laplacian (not the spectral ``-κk²``), so the periodic solver keeps the same
  second-order finite-difference character as the bounded ones and the other finite-difference
  codes.

Boundary data that are numbers or per-sample tensors are constant in time: the forcing is then
constant and ETDRK4 integrates it exactly with one step per output interval (``nonlinear=None`` when
it is zero). Boundary data given as functions of time are sampled by ETDRK4 with steps of at most
``max_step``. ETDRK4 is fourth order in time away from the walls, but the boundary forcing
``κ g(t)/dx²`` leaves a layer at each wall where it is lower: over the whole grid the max-norm time
error falls at order 3–3.6 (time-dependent Dirichlet values) and 3.5–3.8 (fluxes) on the exact
cases at 65 nodes with steps 0.1 → 0.006 (``tests/test_heat.py`` measures both orders; on finer,
stiffer grids the whole-grid order is lower still, about 2.7 and 3.2). The default step,
``1/(4(n-1))`` time units (a quarter of the relative grid spacing), keeps the time error of data
varying on an O(1) time scale well under the spatial error, which falls like ``n⁻²``: on the heat
and Stokes exact cases (ω ≤ 10) it is below 2·10⁻⁴ of the spatial error at every resolution
(faster data need a smaller ``max_step``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import checks
from .boundary import BoundaryCondition, Dirichlet, Neumann, Periodic, parse
from .grid import Grid1D
from .integrators import DiagonalOperator, etdrk4, fourier_operator, scaled, tridiagonal_operator
from .problems import Batch, Option, Problem, generator
from .threads import threads_for
from .verification import Comparison, ExactCase

FLOAT = checks.FLOAT
Rate = float | Sequence[float] | np.ndarray | torch.Tensor


def interior_matrix(
    m: int, dx: float, neumann: bool, device=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diagonals ``(lower, diag, upper)`` of the three-point Laplacian on ``m`` interior nodes.

    With ``neumann`` the boundary nodes are eliminated by the one-sided second-order stencils.
    """
    scale = 1.0 / dx**2
    lower = torch.full((m - 1,), scale, dtype=FLOAT, device=device)
    upper = torch.full((m - 1,), scale, dtype=FLOAT, device=device)
    diagonal = torch.full((m,), -2.0 * scale, dtype=FLOAT, device=device)
    if neumann:
        diagonal[0] = diagonal[-1] = -2.0 / 3.0 * scale
        upper[0] = lower[-1] = 2.0 / 3.0 * scale
    return lower, diagonal, upper


@functools.lru_cache(maxsize=64)
def _cached_interior_operator(m: int, dx: float, neumann: bool, device: str) -> DiagonalOperator:
    return tridiagonal_operator(*interior_matrix(m, dx, neumann, device))


def interior_operator(m: int, dx: float, neumann: bool, device=None) -> DiagonalOperator:
    """The diagonalised three-point Laplacian of :func:`interior_matrix`, cached per grid.

    Building it costs an eigendecomposition; repeated solves on one grid reuse it.
    """
    return _cached_interior_operator(
        m, float(dx), bool(neumann), str(torch.device(device or "cpu"))
    )


@functools.lru_cache(maxsize=16)
def _cached_sine_operator(m: int, dx: float, device: str) -> DiagonalOperator:
    k = torch.arange(1, m + 1, dtype=FLOAT, device=device)
    eigenvalues = -4.0 / dx**2 * torch.sin(0.5 * math.pi * k / (m + 1)) ** 2
    scale = -0.5 * math.sqrt(2.0 / (m + 1))

    def transform(u: torch.Tensor) -> torch.Tensor:
        zero = u.new_zeros(*u.shape[:-1], 1)
        odd = torch.cat([zero, u, zero, -u.flip(-1)], dim=-1)  # odd extension, period 2(m+1)
        return scale * torch.fft.rfft(odd, dim=-1).imag[..., 1 : m + 1]

    return DiagonalOperator(eigenvalues, transform, transform)


def sine_operator(m: int, dx: float, device=None) -> DiagonalOperator:
    """The three-point Dirichlet Laplacian on ``m`` interior nodes (the ``neumann=False`` matrix of
    :func:`interior_matrix`), diagonalised by the orthonormal type-I discrete sine transform.

    Eigenvalues ``−4/dx² sin²(πk/(2(m+1)))``, ``k = 1..m``; the transform
    ``√(2/(m+1)) Σ_j u_j sin(πjk/(m+1))`` is its own inverse and runs as one real FFT of
    ``2(m+1)`` points: ``O(m log m)`` per call and no dense matrix, where
    :func:`interior_operator` costs ``O(m²)`` per call and ``O(m³)`` to build.
    """
    return _cached_sine_operator(m, float(dx), str(torch.device(device or "cpu")))


def neumann_boundary(
    interior: torch.Tensor, dx: float, left: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary values that make the one-sided stencils equal the fluxes ``left``/``right``.

    ``interior`` is ``(..., m)`` with ``m >= 2``; ``left``/``right`` broadcast against ``(...)``.
    """
    u0 = (4.0 * interior[..., 0] - interior[..., 1] - 2.0 * dx * left) / 3.0
    un = (4.0 * interior[..., -1] - interior[..., -2] + 2.0 * dx * right) / 3.0
    return u0, un


def one_sided_flux(u: torch.Tensor, dx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The second-order one-sided derivatives ``du/dx`` at the two ends of ``u`` ``(..., n)``."""
    left = (-3.0 * u[..., 0] + 4.0 * u[..., 1] - u[..., 2]) / (2.0 * dx)
    right = (3.0 * u[..., -1] - 4.0 * u[..., -2] + u[..., -3]) / (2.0 * dx)
    return left, right


def neumann_weights(
    grid: Grid1D, dtype: torch.dtype = FLOAT, device: torch.device | str | None = None
) -> torch.Tensor:
    """The weights ``(n,)`` of :func:`neumann_mass`: ``dx·(0, 3/2, 1, …, 1, 3/2, 0)``.

    ``(u * neumann_weights(grid)).sum(-1)`` is the Neumann scheme's own mass, e.g. the row of
    ``physml.constraints.mass_conservation(grid, M, weights=neumann_weights(grid))``.
    """
    _check_neumann_grid(grid)
    w = torch.zeros(grid.n, dtype=checks.floating_dtype("dtype", dtype), device=device)
    w[1:-1] = grid.dx
    w[1] += 0.5 * grid.dx
    w[-2] += 0.5 * grid.dx
    return w


def neumann_mass(u: torch.Tensor, grid: Grid1D) -> torch.Tensor:
    """``dx·(3/2 u₁ + u₂ + … + 3/2 u_{N-1})`` of node fields ``(..., n)``.

    The quantity the Neumann scheme changes at exactly the rate ``κ (g_R - g_L)`` (and the wave
    scheme keeps constant); it approximates ``∫u dx`` to second order. Its weights:
    :func:`neumann_weights`.
    """
    _check_neumann_grid(grid)
    inner = checks.on_grid("u", u, grid)[..., 1:-1]
    return grid.dx * (inner.sum(-1) + 0.5 * (inner[..., 0] + inner[..., -1]))


def _check_neumann_grid(grid: object) -> None:
    """The Neumann mass lives on the nodes of a bounded grid: a ``ValueError`` otherwise."""
    checks.grid_1d(grid)
    if grid.periodic or grid.kind != "node":
        raise ValueError(
            f"grid must be a non-periodic node grid for the Neumann mass, got kind={grid.kind!r}, "
            f"periodic={grid.periodic}"
        )


def _check_grid(grid: Grid1D, bc: BoundaryCondition) -> None:
    checks.grid_1d(grid)
    if isinstance(bc, Periodic):
        if not grid.periodic:
            raise ValueError("grid must be periodic (Grid1D(..., periodic=True)) for bc=periodic")
        return
    if grid.periodic or grid.kind != "node":
        raise ValueError(
            f"grid must be a non-periodic node grid for bc={bc.name}, "
            f"got kind={grid.kind!r}, periodic={grid.periodic}"
        )
    minimum = 4 if isinstance(bc, Neumann) else 3
    if grid.n < minimum:
        raise ValueError(f"grid must have at least {minimum} nodes for bc={bc.name}, got {grid.n}")


def _time_dependent(bc: BoundaryCondition) -> bool:
    return isinstance(bc, (Dirichlet, Neumann)) and (callable(bc.left) or callable(bc.right))


def _is_zero(bc: Dirichlet | Neumann) -> bool:
    for side in ("left", "right"):
        value = getattr(bc, side)
        if callable(value):
            return False
        name, expected = f"{type(bc).__name__}.{side}", "a number or one value per sample"
        if bool(checks.parameter(name, value, expected).ne(0).any()):
            return False
    return True


def solve_heat(
    u0: torch.Tensor,
    grid: Grid1D,
    kappa: Rate,
    times: Sequence[float] | torch.Tensor,
    bc: BoundaryCondition | str,
    max_step: float | None = None,
) -> torch.Tensor:
    """Solve ``u_t = κ u_xx`` from ``u0`` ``(sample, x)``; returns ``(sample, time, x)``.

    ``kappa`` is a number or one value per sample ``(sample,)``. The boundary nodes of ``u0`` are
    not unknowns: outputs hold the Dirichlet values or the values rebuilt from the Neumann stencils.
    ``max_step`` bounds the time step used for boundary data that are functions of time.
    Small solves run on one torch thread (:mod:`pdes.threads`).
    """
    bc = parse(bc)
    _check_grid(grid, bc)
    u0 = checks.field("u0", u0, grid.n)
    with threads_for(u0.numel(), u0.device):
        return _solve(u0, grid, kappa, times, bc, max_step)


def _solve(u0, grid, kappa, times, bc, max_step) -> torch.Tensor:
    t_out = checks.times("times", times)
    batch, device = u0.shape[0], u0.device
    rates = checks.per_sample("kappa", kappa, batch, device)
    checks.diffusion_number("kappa", float(rates.max()), float(t_out[-1]), grid.length)
    if max_step is not None:
        max_step = checks.positive("max_step", max_step)
    dx = grid.dx

    if isinstance(bc, Periodic):
        return _solve_periodic(u0, grid, rates, t_out)

    neumann = isinstance(bc, Neumann)
    m = grid.n - 2
    base = interior_operator(m, dx, neumann, device)
    ends = torch.zeros(2, m, dtype=FLOAT, device=device)
    ends[0, 0] = -2.0 / (3.0 * dx) if neumann else 1.0 / dx**2
    ends[1, -1] = 2.0 / (3.0 * dx) if neumann else 1.0 / dx**2
    end_coefficients = base.forward(ends)  # (2, modes)

    if max_step is None:
        if _time_dependent(bc):
            max_step = boundary_step(grid)
        else:
            max_step = max(float(t_out[-1]), 1.0)

    operator = scaled(base, rates)
    forcing = None if _is_zero(bc) else _boundary_forcing(bc, rates, end_coefficients)
    interior = etdrk4(operator, u0[:, 1:-1], t_out, max_step, nonlinear=forcing, name="solve_heat")
    interior[:, (t_out == 0).to(device)] = u0[:, None, 1:-1]

    left, right = _boundary_series(bc, t_out, batch, device)
    if neumann:
        left, right = neumann_boundary(interior, dx, left, right)
    return torch.cat([left[..., None], interior, right[..., None]], dim=-1)


def boundary_step(grid: Grid1D) -> float:
    """The default largest step for boundary data that vary in time: ``1/(4(n-1))`` time units
    (module docstring)."""
    return 0.25 / (grid.n - 1)


def _boundary_series(
    bc: Dirichlet | Neumann, t_out: torch.Tensor, batch: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary data at every output time, each ``(batch, time)``."""
    pairs = [bc.values(t, batch, device) for t in t_out.tolist()]
    return torch.stack([p[0] for p in pairs], 1), torch.stack([p[1] for p in pairs], 1)


def _boundary_forcing(
    bc: Dirichlet | Neumann, rates: torch.Tensor, end_coefficients: torch.Tensor
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``N(c, t)``: the boundary data's share of the end rows, coefficients ``(batch, modes)``."""
    batch, device = rates.numel(), rates.device
    last: dict[float, torch.Tensor] = {}

    def forcing(c: torch.Tensor, t: float) -> torch.Tensor:
        del c
        if t not in last:
            left, right = bc.values(t, batch, device)
            values = torch.stack([left, right], -1) * rates[:, None]
            last.clear()
            last[t] = values @ end_coefficients
        return last[t]

    return forcing


def _solve_periodic(
    u0: torch.Tensor, grid: Grid1D, rates: torch.Tensor, t_out: torch.Tensor
) -> torch.Tensor:
    dx = grid.dx

    def symbol(k: torch.Tensor) -> torch.Tensor:
        return -4.0 / dx**2 * torch.sin(0.5 * k * dx) ** 2

    operator = scaled(fourier_operator(grid.n, grid.length, symbol, device=u0.device), rates)
    out = etdrk4(operator, u0, t_out, 1.0, name="solve_heat")
    out[:, (t_out == 0).to(u0.device)] = u0[:, None]
    return out


# --------------------------------------------------------------------------------------------
# Exact cases


def _cosine_decay(x, t, kappa, a, b):
    """``e^{-κa²t} cos(ax + b)`` as ``(sample, time, x)`` for per-sample ``kappa, a, b``."""
    decay = torch.exp(-(kappa * a**2)[:, None] * t[None, :])
    return decay[:, :, None] * torch.cos(a[:, None, None] * x[None, None, :] + b[:, None, None])


_CASE_TIMES = torch.linspace(0.0, 1.0, 6, dtype=FLOAT)
_CASE_KAPPA = torch.tensor([0.1, 0.05, 0.2], dtype=FLOAT)
_CASE_A = torch.tensor([2.3, 4.0, 1.7], dtype=FLOAT)
_CASE_B = torch.tensor([0.4, -1.1, 2.0], dtype=FLOAT)


def _run_dirichlet(n: int) -> Comparison:
    """Sine-type modes ``e^{-κa²t} sin(ax + b)`` with time-dependent boundary values."""
    grid = Grid1D(n)
    x, t = grid.coordinates(), _CASE_TIMES
    k, a, b = _CASE_KAPPA, _CASE_A, _CASE_B - 0.5 * math.pi

    def value(position: float) -> Callable[[float], torch.Tensor]:
        return lambda s: torch.exp(-k * a**2 * s) * torch.cos(a * position + b)

    exact = _cosine_decay(x, t, k, a, b)
    bc = Dirichlet(value(grid.lower), value(grid.upper))
    return Comparison(solve_heat(exact[:, 0], grid, k, t, bc), exact, x, t, grid.dx)


def _run_neumann(n: int) -> Comparison:
    """``e^{-κa²t} cos(ax + b)``, ``a`` not a multiple of π: both fluxes vary in time."""
    grid = Grid1D(n)
    x, t = grid.coordinates(), _CASE_TIMES
    k, a, b = _CASE_KAPPA, _CASE_A, _CASE_B

    def flux(position: float) -> Callable[[float], torch.Tensor]:
        return lambda s: -a * torch.exp(-k * a**2 * s) * torch.sin(a * position + b)

    exact = _cosine_decay(x, t, k, a, b)
    bc = Neumann(flux(grid.lower), flux(grid.upper))
    return Comparison(solve_heat(exact[:, 0], grid, k, t, bc), exact, x, t, grid.dx)


def _run_periodic(n: int) -> Comparison:
    """Fourier modes ``e^{-κa²t} cos(ax + b)`` with ``a = 2πj/L`` on a periodic grid."""
    grid = Grid1D(n, 0.0, 2.0, periodic=True)
    x, t = grid.coordinates(), _CASE_TIMES
    k = _CASE_KAPPA
    a = 2.0 * math.pi / grid.length * torch.tensor([1.0, 3.0, 5.0], dtype=FLOAT)
    exact = _cosine_decay(x, t, k, a, _CASE_B)
    return Comparison(solve_heat(exact[:, 0], grid, k, t, "periodic"), exact, x, t, grid.dx)


EXACT_CASES = [
    ExactCase("heat-dirichlet", _run_dirichlet, (17, 33, 65, 129), order=2.0),
    ExactCase("heat-neumann", _run_neumann, (17, 33, 65, 129), order=2.0),
    ExactCase("heat-periodic", _run_periodic, (16, 32, 64, 128), order=2.0),
]


# --------------------------------------------------------------------------------------------
# Dataset recipe


def random_modes(
    gen: torch.Generator, x: torch.Tensor, kind: str, modes: int, decay: float, amplitude: float
) -> torch.Tensor:
    """A smooth random field on ``x`` (domain ``[x₀, x₀+L]``) compatible with boundary ``kind``.

    ``dirichlet``: ``Σ a_j sin(jπξ)``; ``neumann``: ``a_0 + Σ a_j cos(jπξ)``; ``periodic``:
    ``a_0 + Σ a_j cos(2πjξ) + b_j sin(2πjξ)``, with ``ξ`` the position scaled to ``[0, 1]``,
    ``j = 1..modes`` and coefficients ``N(0, 1)·amplitude/j^decay``. Draws on the CPU.
    """
    j = torch.arange(1, modes + 1, dtype=FLOAT)
    coefficients = torch.randn(2, modes, generator=gen, dtype=FLOAT) * (amplitude / j**decay)
    offset = torch.randn((), generator=gen, dtype=FLOAT) * amplitude
    if kind == "periodic":
        xi = torch.arange(x.numel(), dtype=FLOAT) / x.numel()
        phase = 2.0 * math.pi * j[:, None] * xi[None, :]
        return offset + coefficients[0] @ torch.cos(phase) + coefficients[1] @ torch.sin(phase)
    xi = ((x - x[0]) / (x[-1] - x[0])).cpu()
    if kind == "dirichlet":
        return coefficients[0] @ torch.sin(math.pi * j[:, None] * xi[None, :])
    return offset + coefficients[0] @ torch.cos(math.pi * j[:, None] * xi[None, :])


class HeatProblem(Problem):
    name = "heat"
    description = (
        "Heat equation u_t = kappa u_xx on x in [0, 1], t in [0, t_end]. Default: Neumann, "
        "insulated left end and heater flux du/dx(1, t) = U sin(pi t) at the right (as in BOON); "
        "random smooth initial condition (cosine/sine modes with amplitudes ~ j^-decay)."
    )
    options = {
        "bc": Option(
            "neumann", "boundary: neumann (flux 0 / U sin(pi t)), dirichlet (0), periodic"
        ),
        "kappa": Option(0.01, "diffusivity"),
        "flux_amplitude": Option(5.0, "U of the right-hand Neumann flux U sin(pi t)"),
        "nx": Option(101, "grid nodes on [0, 1] (periodic: points per period)"),
        "t_end": Option(1.0, "final time"),
        "nt": Option(26, "output times including t=0"),
        "modes": Option(8, "random modes in the initial condition"),
        "decay": Option(2.0, "amplitude of mode j is ~ j^-decay"),
        "amplitude": Option(1.0, "overall scale of the initial condition"),
    }

    def _grid(self, settings: dict) -> Grid1D:
        bc = checks.choice("bc", settings["bc"], ("neumann", "dirichlet", "periodic"))
        checks.positive_int("nx", settings["nx"], {"neumann": 4, "dirichlet": 3, "periodic": 2}[bc])
        return Grid1D(settings["nx"], periodic=bc == "periodic")

    def _times(self, settings: dict) -> torch.Tensor:
        checks.positive("t_end", settings["t_end"])
        checks.positive_int("nt", settings["nt"], 2)
        return torch.linspace(0.0, settings["t_end"], settings["nt"], dtype=FLOAT)

    def boundary(self, settings: dict) -> BoundaryCondition:
        """The boundary condition that the settings describe."""
        if settings["bc"] == "neumann":
            flux = float(settings["flux_amplitude"])
            return Neumann(0.0, lambda t: flux * math.sin(math.pi * t))
        return parse(settings["bc"])

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        return {
            "t": self._times(settings).numpy(),
            "x": self._grid(settings).coordinates().numpy(),
        }

    def attributes(self, settings: dict) -> dict[str, object]:
        boundary = {
            "neumann": f"neumann: du/dx(0,t)=0, du/dx(1,t)={settings['flux_amplitude']}*sin(pi t)",
            "dirichlet": "dirichlet: u(0,t)=u(1,t)=0",
            "periodic": "periodic",
        }[settings["bc"]]
        return {
            "pde": "heat: u_t = kappa u_xx",
            "boundary": boundary,
            "solver": "pdes.heat.solve_heat: 3-point Laplacian (one-sided 2nd-order Neumann), "
            "ETDRK4 exponential integration",
            **settings,
        }

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        grid = self._grid(settings)
        kappa = checks.positive("kappa", settings["kappa"])
        x = grid.coordinates()
        u0 = torch.stack(
            [
                random_modes(
                    generator(seed),
                    x,
                    settings["bc"],
                    checks.positive_int("modes", settings["modes"]),
                    float(settings["decay"]),
                    float(settings["amplitude"]),
                )
                for seed in seeds
            ]
        ).to(device)
        u = solve_heat(u0, grid, kappa, self._times(settings), self.boundary(settings))
        return Batch(u=u, params={"kappa": torch.full((len(seeds),), kappa, dtype=FLOAT)})


PROBLEMS = [HeatProblem()]
