"""The generalized porous medium equation (GPME) ``u_t = ∂x(k(u) ∂x u)``.

Three members have closed forms (the ProbConserv paper's test bed): constant-coefficient diffusion,
the porous medium equation ``k = u^m`` and the Stefan problem ``k = 1[u >= u*]``. They are given
here as batched exact solutions, together with a conservative finite-volume solver for any
non-negative ``k(u)``, the dataset recipes ``diffusion``, ``pme`` and ``stefan`` and the
verification cases that check the solver against the closed forms.

Finite-volume layout. Each grid value owns a control volume whose size is its quadrature weight
(``grid.weights()``): cells of width ``dx`` on a cell grid, and on a node grid full cells around
interior nodes and half cells at the two end nodes. The discrete total mass is therefore exactly
``grid.integrate(u)``, and it changes only through the fluxes across the walls.

* Face fluxes: with a :class:`Diffusivity` that carries its Kirchhoff potential ``Φ(u) = ∫₀ᵘ k``
  (all the ready-made ones do) the flux is ``-(Φ(u_{i+1}) - Φ(u_i)) / dx``, i.e. ``k`` averaged
  exactly over the values between the neighbours. For a bare callable ``k`` the face diffusivity is
  the arithmetic mean ``(k(u_i) + k(u_{i+1})) / 2``. Both let degenerate fronts advance (``k`` of
  the mean would freeze a Stefan front: the mean of ``u*`` and ``0`` lies below ``u*``), but the
  arithmetic mean over-feeds a Stefan front (its flux there is ``~u*/(2 dx)``): the front still
  converges, but at a measured L1 order of about 0.7 and with a mass error (against the exact
  inflow) some 400 times larger at 200 cells.
* Dirichlet on a cell grid: the wall value is a neighbour half a cell from the first centre.
  Dirichlet on a node grid: the end nodes hold the prescribed values (those of ``u0`` are
  overwritten by the values at ``t = 0``) and the interior nodes are the unknowns.
* Neumann: the derivative ``g = du/dx`` is given; the wall flux is ``-k(u_wall) g`` with ``k`` at
  the wall value: the end node on a node grid, ``u_0 - g dx/2`` (``u_{n-1} + g dx/2`` on the
  right) on a cell grid, whose first centre lies ``dx/2`` inside (``k`` at the centre would cost
  an O(dx) flux error for a nonlinear ``k``).
* Time stepping: Heun's method (SSP-RK2), a convex combination of forward-Euler steps, so the scheme
  keeps a discrete maximum principle under the forward-Euler limit ``dt <= dx² / (2 k_max)``
  (``dx² / (3 k_max)`` for Dirichlet on a cell grid, where the wall is only ``dx/2`` away).
  Without ``dt`` the solver takes 0.9 of that limit, estimated once per output interval for
  periodic and Dirichlet walls (where the maximum principle bounds ``k_max`` ahead of time) and
  before every step for Neumann walls (whose inflow can raise ``k_max``); the steps of an
  interval are equal and land on its output time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import checks
from .boundary import BoundaryCondition, Dirichlet, Neumann, Periodic, parse
from .checks import FLOAT, choice, field, finite_result, positive, positive_int
from .errors import SettingError, SolverError
from .grid import Grid1D
from .problems import Batch, Option, Problem, generator
from .verification import Comparison, ExactCase

DiffusivityFn = Callable[[torch.Tensor], torch.Tensor]
Parameter = float | Sequence[float] | np.ndarray | torch.Tensor

__all__ = [
    "EXACT_CASES",
    "PROBLEMS",
    "Diffusivity",
    "constant_k",
    "diffusion_exact",
    "pme_exact",
    "pme_k",
    "pme_total_mass",
    "solve_gpme",
    "stefan_exact",
    "stefan_k",
    "stefan_total_mass",
    "stefan_z1",
]

SAFETY = 0.9
"""Fraction of the stability limit used when ``solve_gpme`` picks the step itself."""

MAX_STEPS = 10_000_000
"""More steps than this to the next output time raise ``SolverError`` (a runaway ``k_max``)."""


# --------------------------------------------------------------------------- parameters and axes


def _parameter(name: str, value: Parameter, kind: str, device=None) -> torch.Tensor:
    """One value per sample as a float64 tensor ``(sample,)``; ``kind`` is 'positive' or 'unit'."""
    tensor = checks.parameter(name, value, "a number or one value per sample (sample,)", device)
    tensor = tensor.reshape(-1)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite, got {tensor.tolist()}")
    if kind == "positive" and (tensor <= 0).any():
        raise ValueError(f"{name} must be > 0, got {tensor.tolist()}")
    if kind == "unit" and ((tensor <= 0) | (tensor >= 1)).any():
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {tensor.tolist()}")
    return tensor


def _axis(name: str, value, device=None) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=FLOAT, device=device)
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite")
    return tensor


def _time_axis(t, device=None) -> torch.Tensor:
    t = _axis("t", t, device)
    if (t < 0).any():
        raise ValueError(f"t must be >= 0, got minimum {t.min().item()}")
    return t


def _axes(x, t) -> tuple[torch.Tensor, torch.Tensor]:
    device = x.device if isinstance(x, torch.Tensor) else None
    x = _axis("x", x, device)
    return x, _time_axis(t, x.device)


# --------------------------------------------------------------------------- exact solutions


def diffusion_exact(x, t, k: Parameter) -> torch.Tensor:
    """``u = e^{-k t} sin x`` (periodic on ``[0, 2π]``): ``x (X,)``, ``t (T,)``, ``k`` (one or
    ``(sample,)``) → ``(sample, T, X)``."""
    x, t = _axes(x, t)
    k = _parameter("k", k, "positive", x.device)
    return torch.exp(-k[:, None, None] * t[None, :, None]) * torch.sin(x)[None, None, :]


def pme_exact(x, t, m: Parameter) -> torch.Tensor:
    """``u = (m (t - x)_+)^{1/m}``, the PME travelling front on ``[0, 1]`` → ``(sample, T, X)``."""
    x, t = _axes(x, t)
    m = _parameter("m", m, "positive", x.device)[:, None, None]
    lag = (t[None, :, None] - x[None, None, :]).clamp(min=0.0)
    return (m * lag) ** (1.0 / m)


def pme_total_mass(t, m: Parameter) -> torch.Tensor:
    """Total mass ``∫₀¹ u dx = m^{1/m} t^{1+1/m} / (1 + 1/m)`` → ``(sample, T)``.

    Valid while the front ``x = t`` is inside ``[0, 1]``: a ``t > 1`` raises ``ValueError``."""
    device = t.device if isinstance(t, torch.Tensor) else None
    t = _time_axis(t, device)
    m = _parameter("m", m, "positive", t.device)
    _check_front_inside(t, torch.ones_like(m), "x = t", "m", m)
    m = m[:, None]
    return m ** (1.0 / m) * t[None, :] ** (1.0 + 1.0 / m) / (1.0 + 1.0 / m)


def _check_front_inside(
    t: torch.Tensor, leaves: torch.Tensor, front: str, name: str, values: torch.Tensor
) -> None:
    """A closed-form mass integrates over ``[0, 1]`` a profile whose ``front`` leaves it at the
    times ``leaves`` ``(sample,)`` (parameter ``name`` = ``values``): a later ``t`` raises."""
    late = t.max() > leaves
    if late.any():
        first = int(late.nonzero()[0])
        raise ValueError(
            f"t must be <= {leaves[first].item():.17g} for {name} = {values[first].item():g}: "
            f"the front {front} leaves [0, 1] then and the closed-form mass no longer holds, got "
            f"maximum {t.max().item():.17g}"
        )


def _z1_scalar(u_star: float) -> float:
    target = (1.0 - u_star) / math.sqrt(math.pi)

    def residual(z: float) -> float:
        return u_star * math.erf(z) * z * math.exp(z * z) - target

    upper = 1.0
    while residual(upper) < 0.0:
        upper *= 2.0
    from scipy.optimize import brentq  # scipy.optimize costs ~0.8 s to import

    return brentq(residual, 0.0, upper, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def stefan_z1(u_star: Parameter) -> float | torch.Tensor:
    """Root ``z₁ > 0`` of ``u* erf(z) z e^{z²} = (1 - u*)/√π``; the front is at ``x = 2 z₁ √t``.

    A float ``u_star`` gives a float, a tensor ``(sample,)`` a tensor; ``u_star`` must be in (0, 1).
    """
    values = _parameter("u_star", u_star, "unit")
    roots = [_z1_scalar(v) for v in values.tolist()]
    if isinstance(u_star, (int, float)) or (isinstance(u_star, torch.Tensor) and u_star.ndim == 0):
        return roots[0]
    device = u_star.device if isinstance(u_star, torch.Tensor) else None
    return torch.tensor(roots, dtype=FLOAT, device=device)


def _stefan_constants(u_star: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c₁, α)`` per sample."""
    z1 = torch.tensor([_z1_scalar(v) for v in u_star.tolist()], dtype=FLOAT, device=u_star.device)
    c1 = (1.0 - u_star) / torch.erf(z1)
    return c1, 2.0 * z1


def stefan_exact(x, t, u_star: Parameter) -> torch.Tensor:
    """``u = 1 - c₁ erf(x / (2√t))`` behind the front ``x = α√t``, ``0`` ahead → ``(sample, T, X)``.

    At ``t = 0`` the solution is ``0`` except the wall value ``u(0, 0) = 1``. ``u_star`` is the
    threshold ``u*`` of :func:`stefan_k`, in (0, 1), one or per sample.
    """
    x, t = _axes(x, t)
    u_star = _parameter("u_star", u_star, "unit", x.device)
    c1, alpha = _stefan_constants(u_star)
    tt = t[None, :, None]
    xx = x[None, None, :]
    started = tt > 0
    root_t = torch.sqrt(torch.where(started, tt, torch.ones_like(tt)))
    profile = 1.0 - c1[:, None, None] * torch.erf(xx / (2.0 * root_t))
    inside = xx <= alpha[:, None, None] * root_t
    return torch.where(
        started,
        torch.where(inside, profile, torch.zeros_like(profile)),
        (xx <= 0).to(FLOAT).expand_as(profile),
    )


def stefan_total_mass(t, u_star: Parameter) -> torch.Tensor:
    """``∫ u dx = 2 c₁ √(t/π)`` (the time-integrated inflow ``c₁/√(πt)``) → ``(sample, T)``.

    Valid while the front ``α√t = 2 z₁ √t`` is inside ``[0, 1]``: a ``t > 1/α²`` raises
    ``ValueError``. ``u_star`` as in :func:`stefan_exact`.
    """
    device = t.device if isinstance(t, torch.Tensor) else None
    t = _time_axis(t, device)
    u_star = _parameter("u_star", u_star, "unit", t.device)
    c1, alpha = _stefan_constants(u_star)
    _check_front_inside(t, 1.0 / alpha**2, "2 z₁ √t", "u_star", u_star)
    return 2.0 * c1[:, None] * torch.sqrt(t[None, :] / math.pi)


# --------------------------------------------------------------------------- diffusivities


@dataclass(frozen=True)
class Diffusivity:
    """A diffusivity ``k(u)`` together with its Kirchhoff potential ``Φ(u) = ∫₀ᵘ k(s) ds``.

    Calling it gives ``k(u)``. With ``Φ`` known, the face flux ``-(Φ(u_{i+1}) - Φ(u_i)) / dx``
    averages ``k`` exactly over the values between neighbours, which keeps Stefan and PME fronts
    mass-consistent. Both callables map ``u (sample, points)`` to the same shape; ``name``
    labels it (e.g. ``"u^m"``).
    """

    k: DiffusivityFn
    potential: DiffusivityFn
    name: str = "k(u)"

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self.k(u)


def _per_sample(value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor | float]:
    """``u -> parameter`` shaped to broadcast against ``u (sample, points)`` on ``u``'s device."""
    if value.numel() == 1:
        number = value.item()
        return lambda u: number
    copies: dict[torch.device, torch.Tensor] = {}

    def column(u: torch.Tensor) -> torch.Tensor:
        if u.device not in copies:
            copies[u.device] = value.to(u.device)[:, None]
        return copies[u.device]

    return column


def constant_k(k: Parameter) -> Diffusivity:
    """``k(u) = k`` (a positive number or one per sample ``(sample,)``): linear diffusion."""
    value = _per_sample(_parameter("k", k, "positive"))
    return Diffusivity(
        k=lambda u: torch.ones_like(u) * value(u),
        potential=lambda u: u * value(u),
        name="k",
    )


def pme_k(m: Parameter) -> Diffusivity:
    """``k(u) = max(u, 0)^m`` (``m > 0``, one or per sample): the porous medium equation."""
    value = _per_sample(_parameter("m", m, "positive"))

    def potential(u: torch.Tensor) -> torch.Tensor:
        power = value(u) + 1.0
        return u.clamp(min=0.0) ** power / power

    return Diffusivity(k=lambda u: u.clamp(min=0.0) ** value(u), potential=potential, name="u^m")


def stefan_k(u_star: Parameter) -> Diffusivity:
    """``k(u) = 1`` where ``u >= u*`` else ``0`` (``u*`` in (0, 1), one or per sample): Stefan."""
    value = _per_sample(_parameter("u_star", u_star, "unit"))
    return Diffusivity(
        k=lambda u: (u >= value(u)).to(u.dtype),
        potential=lambda u: (u - value(u)).clamp(min=0.0),
        name="1[u >= u_star]",
    )


# --------------------------------------------------------------------------- finite volumes


class _FiniteVolume:
    """Right-hand side and Heun steps of the conservative scheme on one grid and boundary."""

    def __init__(self, grid: Grid1D, k: DiffusivityFn, bc: BoundaryCondition, batch: int, device):
        self.grid = grid
        self.k = k
        self.potential = getattr(k, "potential", None)
        self.bc = bc
        self.batch = batch
        self.device = device
        self.dx = grid.dx
        self.volume = grid.weights(device=device)
        self.node_dirichlet = isinstance(bc, Dirichlet) and grid.kind == "node"
        self.cell_dirichlet = isinstance(bc, Dirichlet) and grid.kind == "cell"
        if self.cell_dirichlet:
            self.distance = torch.full((grid.n + 1,), self.dx, dtype=FLOAT, device=device)
            self.distance[0] = self.distance[-1] = 0.5 * self.dx
        self.limit_factor = 3.0 if self.cell_dirichlet else 2.0
        self.bounded = not isinstance(bc, Neumann)
        self.fixed_walls = None  # wall values that do not change in time, checked once
        if not isinstance(bc, Periodic) and not (callable(bc.left) or callable(bc.right)):
            self.fixed_walls = bc.values(0.0, batch, device)

    @staticmethod
    def evaluate(function: DiffusivityFn, u: torch.Tensor) -> torch.Tensor:
        out = function(u)
        if isinstance(out, torch.Tensor) and out.dtype == FLOAT and out.shape == u.shape:
            return out
        return torch.broadcast_to(torch.as_tensor(out, dtype=FLOAT, device=u.device), u.shape)

    def transfer(self, values: torch.Tensor) -> torch.Tensor:
        """Flux times distance between neighbouring entries: ``(sample, p)`` → ``(sample, p-1)``."""
        if self.potential is not None:
            phi = self.evaluate(self.potential, values)
            return phi[:, :-1] - phi[:, 1:]
        kv = self.evaluate(self.k, values)
        return 0.5 * (kv[:, :-1] + kv[:, 1:]) * (values[:, :-1] - values[:, 1:])

    def walls(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The wall values ``(sample,)`` at ``t`` (Dirichlet: ``u``; Neumann: ``du/dx``)."""
        if self.fixed_walls is not None:
            return self.fixed_walls
        return self.bc.values(t, self.batch, self.device)

    def rates(self, u: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(du/dt (sample, n), inflow rate through both walls (sample,))``."""
        if isinstance(self.bc, Periodic):
            flux = self.transfer(torch.cat([u, u[:, :1]], dim=1)) / self.dx
            return (flux.roll(1, 1) - flux) / self.volume, torch.zeros_like(u[:, 0])
        if self.cell_dirichlet:
            left, right = self.walls(t)
            flux = (
                self.transfer(torch.cat([left[:, None], u, right[:, None]], dim=1)) / self.distance
            )
            return (flux[:, :-1] - flux[:, 1:]) / self.volume, flux[:, 0] - flux[:, -1]
        inner = self.transfer(u) / self.dx
        if self.node_dirichlet:
            rate = torch.zeros_like(u)
            rate[:, 1:-1] = (inner[:, :-1] - inner[:, 1:]) / self.dx
            return rate, inner[:, 0] - inner[:, -1]
        left, right = self.walls(t)
        ends = u[:, [0, -1]]
        if self.grid.kind == "cell":  # the centres lie dx/2 inside: step out to the walls
            ends = torch.stack(
                [u[:, 0] - 0.5 * self.dx * left, u[:, -1] + 0.5 * self.dx * right], 1
            )
        walls = -self.evaluate(self.k, ends) * torch.stack([left, right], dim=1)
        flux = torch.cat([walls[:, :1], inner, walls[:, 1:]], dim=1)
        return (flux[:, :-1] - flux[:, 1:]) / self.volume, flux[:, 0] - flux[:, -1]

    def impose(self, u: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """On a node grid with Dirichlet walls, write the wall values into ``u``; return them."""
        if not self.node_dirichlet:
            return None
        left, right = self.walls(t)
        u[:, 0] = left
        u[:, -1] = right
        return left, right

    def step(self, u: torch.Tensor, t: float, end: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One Heun step from ``t`` to ``end``: the new state and the inflow during the step."""
        h = end - t
        r1, q1 = self.rates(u, t)
        u1 = u + h * r1
        after = self.impose(u1, end)
        r2, q2 = self.rates(u1, end)
        new = 0.5 * (u + u1 + h * r2)
        inflow = 0.5 * h * (q1 + q2)
        if after is not None:
            new[:, 0] = after[0]
            new[:, -1] = after[1]
            inflow = inflow + 0.5 * self.dx * (after[0] - u[:, 0] + after[1] - u[:, -1])
        return new, inflow

    def stability_limit(
        self, u: torch.Tensor, t0: float, t1: float, times: int = 9
    ) -> tuple[float, float]:
        """``(dt limit, k_max)`` for the interval ``[t0, t1]``.

        ``k_max`` is taken over the state, the wall values at ``times`` even times across the
        interval and every value in between (17 samples per sample). With periodic or Dirichlet
        walls the scheme keeps its values in the range of the state and the walls at its step
        times under the limit (``self.bounded``), so one estimate serves the whole interval once
        it has seen the walls at those times (:func:`_plan`); Neumann inflow can push values past
        it, so the solver re-estimates every step.
        """
        values = [u]
        if isinstance(self.bc, Dirichlet):
            for t in np.linspace(t0, t1, times).tolist():
                values.extend(v[:, None] for v in self.walls(t))
        values = torch.cat(values, dim=1)
        low = values.min(dim=1, keepdim=True).values
        high = values.max(dim=1, keepdim=True).values
        fractions = torch.linspace(0.0, 1.0, 17, dtype=FLOAT, device=u.device)
        probe = torch.cat([values, low + (high - low) * fractions], dim=1)
        kv = self.evaluate(self.k, probe)
        if not torch.isfinite(kv).all() or (kv < 0).any():
            bad = probe[~torch.isfinite(kv) | (kv < 0)][0].item()
            raise ValueError(
                f"k(u) must be finite and >= 0 for every value the solution takes; "
                f"at u={bad:.6g} it gave {kv[~torch.isfinite(kv) | (kv < 0)][0].item()}"
            )
        k_max = kv.max().item()
        limit = math.inf if k_max == 0.0 else self.dx**2 / (self.limit_factor * k_max)
        return limit, k_max


def _plan(solver: _FiniteVolume, u: torch.Tensor, t: float, target: float, dt: float | None):
    """``(steps, step, dt limit, k_max)`` from ``t`` to ``target``. Walls that move are checked at
    the steps' own times as well, however few the steps (where the scheme imposes them): nine even
    samples can miss the peak of a wall that moves between them, and the estimate is redone until
    it holds."""
    limit, k_max = solver.stability_limit(u, t, target)
    moving = isinstance(solver.bc, Dirichlet) and solver.fixed_walls is None
    while True:
        step = dt if dt is not None else SAFETY * limit
        count = 1 if math.isinf(step) else max(1, math.ceil((target - t) / step - 1e-9))
        if not moving or count > MAX_STEPS:
            return count, step, limit, k_max
        seen, seen_k = solver.stability_limit(u, t, target, count + 1)
        if seen >= limit:
            return count, step, limit, k_max
        limit, k_max = seen, seen_k
        if dt is not None:
            return count, step, limit, k_max


def _as_diffusivity(k) -> DiffusivityFn:
    if callable(k):
        return k
    numbers = (int, float, np.number, torch.Tensor, np.ndarray, list, tuple)
    if isinstance(k, numbers) and not isinstance(k, bool):
        return constant_k(k)
    raise TypeError(
        "k must be a callable k(u), a positive number or one value per sample (sample,), "
        f"got {type(k)}"
    )


def _check_diffusivity(k: DiffusivityFn, u: torch.Tensor) -> None:
    functions = [("k", k)]
    if getattr(k, "potential", None) is not None:
        functions.append(("k.potential", k.potential))
    for name, function in functions:
        try:
            out = function(u)
            torch.broadcast_to(torch.as_tensor(out, dtype=FLOAT, device=u.device), u.shape)
        except (RuntimeError, TypeError, ValueError) as error:
            raise ValueError(
                f"{name}(u) must accept u of shape (sample, points) = {tuple(u.shape)} and return "
                f"values of that shape (per-sample parameters need one value per sample): {error}"
            ) from None


def solve_gpme(
    u0: torch.Tensor,
    grid: Grid1D,
    k: Diffusivity | DiffusivityFn | Parameter,
    times: Sequence[float] | torch.Tensor,
    bc: BoundaryCondition | str,
    dt: float | None = None,
    return_flux: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Solve ``u_t = ∂x(k(u) ∂x u)`` by conservative finite volumes and Heun steps.

    ``u0`` is ``(sample, n)`` on ``grid`` (node or cell; see the module notes); ``k`` maps ``u
    (sample, points)`` to ``k(u) >= 0`` of the same shape, a :class:`Diffusivity` or a positive
    constant (a number or one per sample ``(sample,)``); ``bc`` the walls' condition (periodic
    exactly when the grid is), a :class:`~pdes.boundary.Dirichlet`, :class:`~pdes.boundary.Neumann`
    or :class:`~pdes.boundary.Periodic`, or its kind's name (zero values). Returns ``u (sample, T,
    n)`` at ``times`` and, with ``return_flux``, the cumulative inflow through the walls ``(sample,
    T)``: ``grid.integrate(u[:, j])`` minus the initial mass equals it to round-off (on a node grid
    with Dirichlet walls the initial state is ``u0`` with its end values set to the wall values at
    ``t = 0``). ``dt=None`` takes 0.9 of the stability limit per output interval; a ``dt`` beyond
    the limit raises ``SolverError``. The step is the batch's: the largest ``k`` of any sample sets
    it, so a sample's answer depends on its batch within the scheme's truncation error (the recipes
    solve one sample at a time).
    """
    checks.grid_1d(grid)
    device = u0.device if isinstance(u0, torch.Tensor) else None
    u = field("u0", u0, grid.n, device).clone()
    t_out = checks.times("times", times)
    bc = parse(bc)
    if isinstance(bc, Periodic) != grid.periodic:
        raise ValueError(
            f"bc must be periodic exactly when the grid is periodic; got bc={bc.name!r} on a grid "
            f"with periodic={grid.periodic}"
        )
    if dt is not None:
        dt = positive("dt", dt)
    k = _as_diffusivity(k)
    _check_diffusivity(k, u)
    solver = _FiniteVolume(grid, k, bc, u.shape[0], u.device)
    solver.impose(u, 0.0)

    states, inflows = [], []
    total = torch.zeros(u.shape[0], dtype=FLOAT, device=u.device)
    t = 0.0
    for target in t_out.tolist():
        while t < target:
            finite_result("solve_gpme", u, t)
            count, step, limit, k_max = _plan(solver, u, t, target, dt)
            if dt is not None and dt > limit * (1.0 + 1e-12):
                raise SolverError(
                    f"dt={dt:.6g} exceeds the stability limit dx²/({solver.limit_factor:g} k_max)"
                    f" = {limit:.6g} (dx={grid.dx:.6g}, k_max={k_max:.6g}) at t={t:.6g}"
                )
            span = target - t
            if count > MAX_STEPS:
                raise SolverError(
                    f"reaching t={target:.6g} from t={t:.6g} needs {count:,} steps of "
                    f"the stable dt={step:.3g} (k_max={k_max:.6g}); more than {MAX_STEPS:,}: is "
                    "k(u) blowing up?"
                )
            h = span / count
            run = count if solver.bounded else 1
            for i in range(run):
                end = target if i == count - 1 else t + (i + 1) * h
                u, inflow = solver.step(u, t + i * h, end)
                total = total + inflow
            t = end
        finite_result("solve_gpme", u, t)
        states.append(u)
        inflows.append(total)
    solution = torch.stack(states, dim=1)
    if return_flux:
        return solution, torch.stack(inflows, dim=1)
    return solution


# --------------------------------------------------------------------------- dataset recipes


class _GPMERecipe(Problem):
    """Shared parts of the three GPME recipes: a parameter drawn uniformly per sample."""

    parameter: str = ""
    bounds: tuple[str, str] = ("", "")
    lower: float = 0.0
    upper: float = 1.0
    periodic: bool = False
    boundary: str = ""
    diffusivity: str = ""

    def checked(self, settings: dict) -> dict:
        s = self.settings(**settings)
        positive_int("nx", s["nx"], 3)
        positive_int("nt", s["nt"], 2)
        positive("t_end", s["t_end"])
        choice("solver", s["solver"], ("exact", "fv"))
        low, high = (s[name] for name in self.bounds)
        self.check_range(low, high)
        if high < low:
            raise ValueError(f"{self.bounds[1]} must be >= {self.bounds[0]}, got {low} > {high}")
        if s["solver"] == "exact":
            self.check_front(s["t_end"], low, high)
        return s

    def check_front(self, t_end: float, low: float, high: float) -> None:
        """The closed form holds while the front is inside the domain (a recipe with a front
        refuses a ``t_end`` after it leaves, whose data would break the stated wall value, with a
        :class:`~pdes.errors.SettingError` naming ``t_end``)."""

    def check_range(self, low: float, high: float) -> None:
        positive(self.bounds[0], low)
        positive(self.bounds[1], high)

    def grid(self, settings: dict) -> Grid1D:
        """The output grid: ``nx`` nodes on the recipe's interval."""
        s = self.checked(settings)
        return Grid1D(s["nx"], self.lower, self.upper, "node", self.periodic)

    def times(self, settings: dict) -> torch.Tensor:
        s = self.checked(settings)
        return torch.linspace(0.0, s["t_end"], s["nt"], dtype=FLOAT)

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        return {"t": self.times(settings).numpy(), "x": self.grid(settings).coordinates().numpy()}

    def attributes(self, settings: dict) -> dict[str, object]:
        s = self.checked(settings)
        grid = self.grid(s)
        return {
            "pde": self.name,
            "family": "gpme",
            "equation": "u_t = d/dx(k(u) du/dx)",
            "diffusivity": self.diffusivity,
            "boundary": self.boundary,
            "grid_kind": grid.kind,
            "periodic": int(grid.periodic),
            "x_lower": float(grid.lower),
            "x_upper": float(grid.upper),
            "parameter": self.parameter,
            **s,
        }

    def draw(self, seeds: Sequence[int], s: dict) -> torch.Tensor:
        low, high = (s[name] for name in self.bounds)
        draws = [torch.rand((), generator=generator(seed), dtype=FLOAT) for seed in seeds]
        return low + (high - low) * torch.stack(draws)

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        s = self.checked(settings)
        if len(seeds) == 0:
            raise ValueError("seeds must hold at least one seed")
        value = self.draw(seeds, s).to(device)
        x = self.grid(s).coordinates(device=device)
        t = self.times(s).to(device)
        if s["solver"] == "exact":
            u = self.exact(x, t, value)
        else:  # one sample a solve: the step follows that sample's own k, not its batch's
            grid = self.grid(s)
            u = torch.cat([self.finite_volume(grid, x, t, v[None]) for v in value])
        return Batch(u=u, params={self.parameter: value})

    def exact(self, x: torch.Tensor, t: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def finite_volume(self, grid, x, t, value) -> torch.Tensor:
        raise NotImplementedError


class DiffusionRecipe(_GPMERecipe):
    name = "diffusion"
    description = (
        "GPME with constant k: u = e^(-kt) sin x, periodic on [0, 2π), k ~ U[k_min, k_max]"
    )
    options = {
        "nx": Option(201, "grid nodes on [0, 2π) (periodic: 2π is the same point as 0)"),
        "nt": Option(201, "output times on [0, t_end], t=0 included"),
        "t_end": Option(1.0, "final time"),
        "k_min": Option(1.0, "smallest diffusivity k"),
        "k_max": Option(5.0, "largest diffusivity k"),
        "solver": Option(
            "exact", "'exact' (closed form) or 'fv' (finite volumes on the same grid)"
        ),
    }
    parameter = "k"
    bounds = ("k_min", "k_max")
    upper = 2.0 * math.pi
    periodic = True
    boundary = "periodic"
    diffusivity = "k"

    def exact(self, x, t, value):
        return diffusion_exact(x, t, value)

    def finite_volume(self, grid, x, t, value):
        u0 = torch.sin(x).expand(value.shape[0], -1)
        return solve_gpme(u0, grid, constant_k(value), t, Periodic())


class PMERecipe(_GPMERecipe):
    name = "pme"
    description = "porous medium k = u^m: u = (m (t-x)_+)^(1/m) on [0, 1], m ~ U[m_min, m_max]"
    options = {
        "nx": Option(201, "grid nodes on [0, 1], both walls included"),
        "nt": Option(201, "output times on [0, t_end], t=0 included"),
        "t_end": Option(1.0, "final time (the front x = t leaves the domain after t = 1)"),
        "m_min": Option(1.0, "smallest exponent m"),
        "m_max": Option(6.0, "largest exponent m"),
        "solver": Option(
            "exact",
            "'exact' (closed form) or 'fv' (finite volumes on the same grid; slow for large m)",
        ),
    }
    parameter = "m"
    bounds = ("m_min", "m_max")
    boundary = "dirichlet: u(t,0) = (m t)^(1/m), u(t,1) = 0"
    diffusivity = "u^m"

    def check_front(self, t_end: float, low: float, high: float) -> None:
        if t_end > 1.0:
            raise SettingError(
                "t_end",
                f"t_end must be <= 1 with solver 'exact': the front x = t leaves [0, 1] at t = 1 "
                f"and the closed form then breaks u(t,1) = 0, got {t_end}",
            )

    def exact(self, x, t, value):
        return pme_exact(x, t, value)

    def finite_volume(self, grid, x, t, value):
        u0 = torch.zeros(value.shape[0], grid.n, dtype=FLOAT, device=x.device)
        return solve_gpme(u0, grid, pme_k(value), t, Dirichlet(_pme_wall(value), 0.0))


class StefanRecipe(_GPMERecipe):
    name = "stefan"
    description = (
        "Stefan k = 1[u >= u*]: u = 1 - c1 erf(x/(2√t)) behind the front 2 z1 √t on [0, 1], "
        "u* ~ U[u_star_min, u_star_max]"
    )
    options = {
        "nx": Option(201, "grid nodes on [0, 1], both walls included"),
        "nt": Option(201, "output times on [0, t_end], t=0 included"),
        "t_end": Option(0.1, "final time (keep the front 2 z1 √t inside [0, 1])"),
        "u_star_min": Option(0.55, "smallest threshold u*"),
        "u_star_max": Option(0.7, "largest threshold u*"),
        "solver": Option(
            "exact", "'exact' (closed form) or 'fv' (finite volumes on the same grid)"
        ),
    }
    parameter = "u_star"
    bounds = ("u_star_min", "u_star_max")
    boundary = "dirichlet: u(t,0) = 1, u(t,1) = 0"
    diffusivity = "1 if u >= u_star else 0"

    def check_range(self, low: float, high: float) -> None:
        _parameter(self.bounds[0], low, "unit")
        _parameter(self.bounds[1], high, "unit")

    def check_front(self, t_end: float, low: float, high: float) -> None:
        fastest = max(float(stefan_z1(low)), float(stefan_z1(high)))
        leaves = 1.0 / (4.0 * fastest**2)  # 2 z1 √t = 1
        if t_end > leaves:
            raise SettingError(
                "t_end",
                f"t_end must be <= {leaves:.4g} with solver 'exact' and u* in [{low}, {high}]: "
                f"the fastest front 2 z1 √t leaves [0, 1] then and the closed form breaks "
                f"u(t,1) = 0, got {t_end}",
            )

    def exact(self, x, t, value):
        return stefan_exact(x, t, value)

    def finite_volume(self, grid, x, t, value):
        u0 = stefan_exact(x, torch.zeros(1, dtype=FLOAT), value)[:, 0]
        return solve_gpme(u0, grid, stefan_k(value), t, Dirichlet(1.0, 0.0))


def _pme_wall(m: torch.Tensor) -> Callable[[float], torch.Tensor]:
    """The PME inflow value ``(m t)^{1/m}`` as a function of time, one value per sample."""
    return lambda t: (m * t) ** (1.0 / m)


PROBLEMS: list[Problem] = [DiffusionRecipe(), PMERecipe(), StefanRecipe()]


# --------------------------------------------------------------------------- verification


def _diffusion_case(n: int) -> Comparison:
    grid = Grid1D(n, 0.0, 2.0 * math.pi, periodic=True)
    x = grid.coordinates()
    k = torch.tensor([1.0, 3.0], dtype=FLOAT)
    t = torch.linspace(0.0, 0.5, 6, dtype=FLOAT)
    u0 = torch.sin(x).expand(2, -1)
    numerical = solve_gpme(u0, grid, constant_k(k), t, Periodic())
    return Comparison(numerical, diffusion_exact(x, t, k), x, t, grid.dx)


def _pme_case(m: float, t_end: float) -> Callable[[int], Comparison]:
    def run(n: int) -> Comparison:
        grid = Grid1D(n + 1, 0.0, 1.0)
        x = grid.coordinates()
        exponent = torch.tensor([m], dtype=FLOAT)
        t = torch.linspace(0.0, t_end, 6, dtype=FLOAT)
        u0 = torch.zeros(1, grid.n, dtype=FLOAT)
        wall = Dirichlet(_pme_wall(exponent), 0.0)
        numerical = solve_gpme(u0, grid, pme_k(exponent), t, wall)
        return Comparison(numerical, pme_exact(x, t, exponent), x, t, grid.dx)

    return run


def _stefan_case(n: int) -> Comparison:
    grid = Grid1D(n + 1, 0.0, 1.0)
    x = grid.coordinates()
    u_star = torch.tensor([0.6, 0.5], dtype=FLOAT)
    t = torch.linspace(0.0, 0.1, 21, dtype=FLOAT)
    u0 = stefan_exact(x, t[:1], u_star)[:, 0]
    numerical = solve_gpme(u0, grid, stefan_k(u_star), t, Dirichlet(1.0, 0.0))
    return Comparison(numerical, stefan_exact(x, t, u_star), x, t, grid.dx)


# Orders. Diffusion: second order (centred fluxes, smooth periodic solution), max norm.
# PME: near the front u ~ (t - x)^{1/m}, so the O(1) relative error in the O(dx)-wide front region
# costs dx^{1 + 1/m} in L1; elsewhere the scheme is second order: L1 order min(2, 1 + 1/m).
# Stefan: the front sits inside one partially filled cell, an O(dx) error in its position: L1
# order 1 (21 output times average over the phase of the front within its cell). The run starts
# from the singular t = 0 state itself (u = 1 on the wall node only).
EXACT_CASES = [
    ExactCase("gpme-diffusion", _diffusion_case, (25, 50, 100, 200), order=2.0, norm="max"),
    ExactCase("gpme-pme-m1", _pme_case(1.0, 0.5), (50, 100, 200), order=2.0, norm="l1"),
    ExactCase("gpme-pme-m3", _pme_case(3.0, 0.3), (50, 100, 200), order=4.0 / 3.0, norm="l1"),
    ExactCase("gpme-stefan", _stefan_case, (25, 50, 100, 200), order=1.0, norm="l1"),
]
