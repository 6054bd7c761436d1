"""2-D incompressible Navier–Stokes in vorticity form on a periodic box, batched, float64.

    w_t + u·∇w = ν Δw + f,    u = ∇⊥ψ = (∂_y ψ, −∂_x ψ),    −Δψ = w  (ψ with zero mean),

on ``[x0, x0 + Lx) × [y0, y0 + Ly)``; FNO's benchmark is the unit torus with
``f = 0.1 (sin 2π(x + y) + cos 2π(x + y))`` (:func:`fno_forcing`) and a Gaussian random ``w0``.

Space: Fourier pseudo-spectral (``rfft2``). The advection term is alias-free by the 2/3 rule: the
velocity and the vorticity gradient are built from the kept modes ``|m_x| < n_x/3, |m_y| < n_y/3``
only, and their product is projected back onto the kept modes, so every quadratic interaction lands
on its true wavenumber (the kept system is the Galerkin truncation, whose advection conserves energy
and enstrophy). Modes outside the kept set are only damped by viscosity (and forced). The mean
vorticity (``k = 0``) never changes: the advection's mean is dropped (it is a divergence) and the
forcing must have zero mean, as the curl of a periodic velocity does.

Time: the semi-implicit scheme of FNO's data generator, Crank–Nicolson on ``νΔw`` and Heun on
``N(w) = −u·∇w`` plus ``f``:

    w̃  = (1 − hνΔ/2)⁻¹ [(1 + hνΔ/2) w + h (N(w) + f)]
    w⁺ = (1 − hνΔ/2)⁻¹ [(1 + hνΔ/2) w + h ((N(w) + N(w̃))/2 + f)]

second order in time. Crank–Nicolson damps the mode ``e^{ik·x}`` by ``(1 − z/2)/(1 + z/2)`` per step
(``z = hν|k|²``) instead of ``e^{−z}``: the Taylor–Green decay is exact only up to that
``O(h²)`` error, about ``t ν³|k|⁶ h²/12`` relative.

Stability: von Neumann analysis of the scheme for the frozen-coefficient model
``w_t + U·∇w = νΔw``. A kept mode with ``|k| = κ`` advected at speed ``U`` along ``k`` (the worst
direction) has, with ``a = νκ²/2`` and ``b = Uκ``, the amplification factor
``G = (1 − a²h² − b²h²/2 + i bh) / (1 + ah)²``, and ``|G| ≤ 1`` iff
``p(h) = 4a(1 + ah)² − b²(a² + b²/4) h³ ≥ 0``. ``p`` has one positive root (Descartes), so each mode
is stable for ``h ≤ h_κ``; :func:`stability_limit` is the smallest ``h_κ`` over the kept modes, with
``U`` the largest speed ``|u|`` on the grid. (Heun alone is unstable on the imaginary axis,
``|G|² = 1 + b⁴h⁴/4``: it is the viscous damping that buys the finite limit, which shrinks like
``(8ν/(U⁴κ_max²))^{1/3}`` as ``ν → 0``.) The step is checked against the limit at ``t = 0`` for the
speed of ``w0``, and then every :data:`CHECK_EVERY` steps for the largest speed met by any stage of
those steps or by their result; an explicit ``max_step`` beyond it raises :class:`SolverError`
naming the limit.

Default step (:func:`default_step`): a CFL bound ``h U κ_max ≤`` :data:`CFL` (``κ_max`` the largest
kept ``|k|``, so no kept mode is advected through more than half a radian per step), an accuracy
bound ``hν κ_max² ≤`` :data:`DIFFUSION_NUMBER` for the viscous term (a slow, viscous flow would
otherwise get a step at which Crank–Nicolson's damping is far from ``e^{−z}``), and at most
:data:`SAFETY` times the stability limit, the first and last at the estimated speed
``U = U0 + t_end U_f``:
``U0`` is the speed of ``w0`` and ``U_f`` that of ``∇⊥(−Δ)⁻¹f``, the speed the forcing alone would
add per unit time. It is an estimate, not a bound: where the flow outgrows it so far that the step
passes the limit, the block of steps is redone with the default step at the speed met.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import checks
from .errors import SolverError
from .grid import Grid2D
from .problems import Batch, Option, Problem, generator
from .random_fields import gaussian_random_field_2d
from .verification import Comparison, ExactCase

FLOAT = checks.FLOAT
CFL = 0.5
"""The default step keeps ``h U κ_max`` (the phase a kept mode is advected per step) below this."""
SAFETY = 0.5
"""The default step is at most this fraction of :func:`stability_limit`."""
DIFFUSION_NUMBER = 1.0
"""The default step keeps ``z = hν κ_max²`` below this, where Crank–Nicolson damps the highest
kept mode by ``1/3`` per step against ``e^{−1} ≈ 0.37`` (at ``z > 2`` its factor turns negative
and a decaying mode flips sign every step, however stable)."""
CHECK_EVERY = 32
"""Steps between two checks of the speed against the stability limit."""
_FIXED_POINT_ITERATIONS = 200

Forcing = str | torch.Tensor | None


def check_grid(grid: Grid2D) -> Grid2D:
    """``grid`` if it is a :class:`Grid2D`, periodic along both axes, with >= 4 points per axis."""
    if not isinstance(grid, Grid2D):
        raise TypeError(f"grid must be a Grid2D, got {type(grid)}")
    if not (grid.x.periodic and grid.y.periodic):
        raise ValueError(
            "grid must be periodic along x and y (Grid2D.square(n, periodic=True)), got "
            f"periodic x={grid.x.periodic}, y={grid.y.periodic}"
        )
    if min(grid.shape) < 4:
        raise ValueError(f"grid must have at least 4 points along each axis, got {grid.shape}")
    return grid


def check_fields(name: str, value: torch.Tensor, grid: Grid2D) -> torch.Tensor:
    """A batch ``(sample, nx, ny)`` of finite float64 fields; ``(nx, ny)`` is promoted."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (sample, nx, ny), got {type(value)}"
        )
    checks.real(name, value)
    if value.ndim == 2:
        value = value.unsqueeze(0)
    if value.ndim != 3 or tuple(value.shape[1:]) != grid.shape:
        raise ValueError(
            f"{name} must have shape (sample, {grid.shape[0]}, {grid.shape[1]}) to match the grid, "
            f"got shape {tuple(value.shape)}"
        )
    if value.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(value.shape)}")
    checks.finite(name, value)
    return value.to(dtype=FLOAT)


@dataclass
class FourierModes:
    """Angular wavenumbers of the ``rfft2`` coefficients ``(nx, ny//2 + 1)`` and mode masks."""

    kx: torch.Tensor  # (nx, 1)
    ky: torch.Tensor  # (1, ny//2 + 1)
    k2: torch.Tensor  # |k|², (nx, ny//2 + 1)
    kept: torch.Tensor  # the 2/3 rule, k = 0 included
    resolved: torch.Tensor  # neither the mean nor a Nyquist mode (those have no grid derivative)

    @property
    def zero(self) -> torch.Tensor:
        return self.k2 == 0

    def inverse_laplacian(self, mask: torch.Tensor) -> torch.Tensor:
        """``1/|k|²`` on ``mask`` (which must exclude ``k = 0``), 0 elsewhere."""
        return torch.where(mask, 1.0 / torch.where(self.zero, 1.0, self.k2), 0.0)


def fourier_modes(grid: Grid2D, device) -> FourierModes:
    """The ``rfft2`` wavenumbers and masks of a periodic ``grid`` (also used by pdes.tracer)."""
    nx, ny = grid.shape
    mx = torch.fft.fftfreq(nx, d=1.0 / nx, dtype=FLOAT, device=device)[:, None]
    my = torch.fft.rfftfreq(ny, d=1.0 / ny, dtype=FLOAT, device=device)[None, :]
    kx = 2 * math.pi / grid.x.length * mx
    ky = 2 * math.pi / grid.y.length * my
    kept = (mx.abs() < nx / 3) & (my < ny / 3)
    nyquist = (mx.abs() == nx / 2) | (my == ny / 2)
    k2 = kx**2 + ky**2
    return FourierModes(kx, ky, k2, kept, ~nyquist & (k2 != 0))


def _spectral_velocity(coefficients: torch.Tensor, modes: FourierModes, mask, shape):
    psi = coefficients * modes.inverse_laplacian(mask)
    both = torch.stack([1j * modes.ky * psi, -1j * modes.kx * psi])
    return torch.fft.irfft2(both, s=shape)


def velocity(w: torch.Tensor, grid: Grid2D) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity ``(vx, vy) = ∇⊥ψ``, ``−Δψ = w``, of vorticity ``w`` ``(..., nx, ny)``, spectrally.

    Each is shaped like ``w``; divergence-free to round-off. The mean and the Nyquist modes of
    ``w`` have no velocity on the grid, so the spectral curl of the result is ``w`` without them.
    """
    grid = check_grid(grid)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor of shape (..., nx, ny), got {type(w)}")
    checks.real("w", w)
    if w.ndim < 2 or tuple(w.shape[-2:]) != grid.shape:
        raise ValueError(
            f"w must end in shape {grid.shape} to match the grid, got {tuple(w.shape)}"
        )
    checks.finite("w", w)
    w = w.to(FLOAT)
    modes = fourier_modes(grid, w.device)
    vx, vy = _spectral_velocity(torch.fft.rfft2(w), modes, modes.resolved, grid.shape)
    return vx, vy


def fno_forcing(grid: Grid2D, device: torch.device | str | None = None) -> torch.Tensor:
    """FNO's forcing ``0.1 (sin 2π(x/Lx + y/Ly) + cos 2π(x/Lx + y/Ly))`` on ``grid``, ``(nx, ny)``.

    On the unit torus this is ``0.1 (sin 2π(x + y) + cos 2π(x + y))``; its mean is zero.
    """
    x, y = grid.coordinates(device=device)
    phase = 2 * math.pi * (x / grid.x.length + y / grid.y.length)
    return 0.1 * (torch.sin(phase) + torch.cos(phase))


def forcing_coefficients(forcing: Forcing, grid: Grid2D, batch: int, device) -> torch.Tensor | None:
    """The forcing's ``rfft2`` coefficients with the mean mode removed, or None."""
    if forcing is None:
        return None
    if isinstance(forcing, str):
        checks.choice("forcing", forcing, ("fno", "none"))
        if forcing == "none":
            return None
        field = fno_forcing(grid, device=device)
    elif isinstance(forcing, torch.Tensor):
        field = check_fields("forcing", forcing, grid).to(device)
        if field.shape[0] not in (1, batch):
            raise ValueError(
                f"forcing must have shape ({grid.shape[0]}, {grid.shape[1]}) or "
                f"({batch}, {grid.shape[0]}, {grid.shape[1]}), got shape {tuple(forcing.shape)}"
            )
        mean = field.mean(dim=(-2, -1)).abs().max().item()
        if mean > 1e-12 * field.abs().max().item():
            raise ValueError(
                "forcing must have zero mean (the curl of a periodic velocity does, and the mean "
                f"vorticity is held fixed), got mean {mean:.3g}"
            )
    else:
        raise TypeError(f"forcing must be 'fno', 'none', None or a tensor, got {type(forcing)}")
    coefficients = torch.fft.rfft2(field)
    coefficients[..., 0, 0] = 0.0
    return coefficients


def stability_limit(grid: Grid2D, nu: float | torch.Tensor, speed: float | torch.Tensor) -> float:
    """Largest stable step (time units) of the CN–Heun scheme for ``w_t + U·∇w = νΔw`` on ``grid``.

    The smallest root of ``4a(1 + ah)² = b²(a² + b²/4) h³`` (``a = νκ²/2``, ``b = Uκ``) over the
    kept modes; ``nu`` and ``speed`` (``U``) are numbers or one per sample; ``inf`` when ``U = 0``.
    """
    grid = check_grid(grid)
    modes = fourier_modes(grid, "cpu")
    k2 = torch.unique(modes.k2[modes.kept & ~modes.zero]).numpy()
    return _limit(k2, _as_array(nu), _as_array(speed))


def default_step(grid: Grid2D, nu: float | torch.Tensor, speed: float | torch.Tensor) -> float:
    """The step the solver picks at speed ``U``: ``min(CFL/(U κ_max), DIFFUSION_NUMBER/(ν κ_max²),
    SAFETY · stability_limit)``, ``κ_max`` the largest kept ``|k|`` (the largest ``ν`` of a batch).
    """
    grid = check_grid(grid)
    modes = fourier_modes(grid, "cpu")
    k2 = torch.unique(modes.k2[modes.kept & ~modes.zero]).numpy()
    return _default(k2, _as_array(nu), _as_array(speed))


def _default(k2: np.ndarray, nu: np.ndarray, speed: np.ndarray) -> float:
    limit = min(SAFETY * _limit(k2, nu, speed), DIFFUSION_NUMBER / (np.max(nu) * k2.max()))
    fastest = float(np.max(speed)) * math.sqrt(float(k2.max()))
    return min(limit, CFL / fastest) if fastest > 0 else limit


def _as_array(value: float | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=FLOAT).numpy().reshape(-1)
    return np.array([float(value)])


def _limit(k2: np.ndarray, nu: np.ndarray, speed: np.ndarray) -> float:
    if np.any(nu <= 0) or not np.all(np.isfinite(nu)):
        raise ValueError(f"nu must be finite and > 0, got {nu.tolist()}")
    if np.any(speed < 0) or not np.all(np.isfinite(speed)):
        raise ValueError(f"speed must be finite and >= 0, got {speed.tolist()}")
    nu, speed = np.broadcast_arrays(nu[:, None], speed[:, None])
    a = 0.5 * nu * k2
    b2 = speed**2 * k2
    c = b2 * (a**2 + 0.25 * b2)
    moving = c > 0
    if not moving.any():
        return math.inf
    a, c = a[moving], c[moving]
    scale = np.cbrt(4.0 * a / c)
    h = np.zeros_like(a)
    for _ in range(_FIXED_POINT_ITERATIONS):  # increases monotonically to the root, rate < 2/3
        h = scale * np.cbrt((1.0 + a * h) ** 2)
    return float(h.min())


class VorticityScheme:
    """The CN–Heun step on ``rfft2`` coefficients ``(sample, nx, ny//2 + 1)`` (public so that
    pdes.tracer can step a tracer beside the vorticity)."""

    def __init__(self, grid: Grid2D, viscosity: torch.Tensor, forcing, device):
        self.shape = grid.shape
        self.modes = modes = fourier_modes(grid, device)
        active = modes.kept & ~modes.zero
        psi = modes.inverse_laplacian(active)
        kept = modes.kept.to(FLOAT)
        self.derivatives = torch.stack(
            [1j * modes.ky * psi, -1j * modes.kx * psi, 1j * modes.kx * kept, 1j * modes.ky * kept]
        )[:, None]
        self.minus_active = -active.to(FLOAT)
        nu = viscosity.to(device)
        if bool((nu == nu[0]).all()):
            self.viscous = -nu[0] * modes.k2
        else:
            self.viscous = -nu[:, None, None] * modes.k2
        self.forcing = forcing
        self.k2 = torch.unique(modes.k2[active].cpu()).numpy()
        self.nu = viscosity.cpu().numpy()
        self._arrays: _Work | None = None

    def limit(self, speed: torch.Tensor) -> float:
        return _limit(self.k2, self.nu, speed.cpu().numpy())

    def default(self, speed: torch.Tensor) -> float:
        return _default(self.k2, self.nu, speed.cpu().numpy())

    def speed(self, c: torch.Tensor) -> torch.Tensor:
        """Largest ``|u|`` of each sample's kept modes, ``(sample,)``."""
        ux, uy = torch.fft.irfft2(c[None] * self.derivatives[:2], s=self.shape)
        return (ux * ux + uy * uy).amax(dim=(-2, -1)).sqrt()

    def nonlinear(
        self, c: torch.Tensor, peak: torch.Tensor | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``N(c)``, written into ``out`` when given; ``peak`` ``(sample,)`` is raised to the
        largest ``|u|²`` met."""
        work = self._work(c)
        torch.mul(c[None], self.derivatives, out=work.spectra)
        torch.fft.irfft2(work.spectra, s=self.shape, out=work.fields)
        ux, uy, wx, wy = work.fields
        if peak is not None:
            torch.maximum(peak, _products(ux, ux, uy, uy, work).amax(dim=(-2, -1)), out=peak)
        torch.fft.rfft2(_products(ux, wx, uy, wy, work), out=work.advection)
        return torch.mul(work.advection, self.minus_active, out=out)

    def advance(self, c: torch.Tensor, h: float, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` steps of size ``h``; also the largest speed of any stage or of the result.

        In increment form, ``w⁺ = w + h (1 − hνΔ/2)⁻¹ (νΔw + N̄ + f)``, whose rounding errors scale
        with the increment rather than with ``w``. The stages live in work arrays kept for the
        next call (``_work``); the result is a new tensor.
        """
        gain = h / (1.0 - 0.5 * h * self.viscous)
        peak = torch.zeros(c.shape[0], dtype=FLOAT, device=c.device)
        work = self._work(c)
        c = c.clone()
        for _ in range(count):
            n0 = self.nonlinear(c, peak, out=work.n0)
            base = torch.mul(self.viscous, c, out=work.base)
            if self.forcing is not None:
                base.add_(self.forcing)
            guess = torch.addcmul(c, gain, torch.add(base, n0, out=work.total), out=work.guess)
            n1 = self.nonlinear(guess, peak, out=work.n1)
            total = torch.add(n0, n1, out=work.total)
            c.addcmul_(gain, torch.add(base, total, alpha=0.5, out=total))
        return c, torch.maximum(peak.sqrt(), self.speed(c))

    def _work(self, c: torch.Tensor) -> _Work:
        """The work arrays for coefficients shaped like ``c``, made on first use."""
        if self._arrays is None or not self._arrays.fits(c):
            self._arrays = _Work.like(c, self.shape)
        return self._arrays


def _products(a, b, c, d, work: _Work) -> torch.Tensor:
    """``a·b + c·d`` into ``work.product`` (``work.other`` holds ``c·d``)."""
    torch.mul(c, d, out=work.other)
    return torch.mul(a, b, out=work.product).add_(work.other)


@dataclass
class _Work:
    """Work arrays of one CN–Heun step on coefficients ``(sample, nx, ny//2 + 1)``: the same
    arithmetic as fresh temporaries, without allocating (and page-faulting in) megabytes a step."""

    spectra: torch.Tensor  # (4, sample, nx, ny//2 + 1): ∇⊥ψ and ∇w, spectrally
    fields: torch.Tensor  # (4, sample, nx, ny): the same on the grid
    product: torch.Tensor  # (sample, nx, ny)
    other: torch.Tensor  # (sample, nx, ny)
    advection: torch.Tensor  # (sample, nx, ny//2 + 1), and the five below
    n0: torch.Tensor
    n1: torch.Tensor
    base: torch.Tensor
    guess: torch.Tensor
    total: torch.Tensor

    @classmethod
    def like(cls, c: torch.Tensor, shape: tuple[int, int]) -> _Work:
        """Arrays for coefficients shaped like ``c`` of fields of ``shape`` ``(nx, ny)``."""

        def fields(*lead: int) -> torch.Tensor:
            return torch.empty((*lead, c.shape[0], *shape), dtype=FLOAT, device=c.device)

        spectra = torch.empty((4, *c.shape), dtype=c.dtype, device=c.device)
        return cls(spectra, fields(4), fields(), fields(), *(torch.empty_like(c) for _ in range(6)))

    def fits(self, c: torch.Tensor) -> bool:
        return (self.n0.shape, self.n0.dtype, self.n0.device) == (c.shape, c.dtype, c.device)


def _plan(span: float, step: float) -> tuple[int, float]:
    if span <= 0.0:
        return 0, 0.0
    count = max(1, math.ceil(span / step - 1e-9))
    return count, span / count


def solve_vorticity(
    w0: torch.Tensor,
    grid: Grid2D,
    nu: float | torch.Tensor,
    times: Sequence[float] | torch.Tensor,
    forcing: Forcing = "fno",
    max_step: float | None = None,
) -> torch.Tensor:
    """Solve ``w_t + u·∇w = νΔw + f`` from ``w0`` ``(sample, nx, ny)``; returns
    ``(sample, time, nx, ny)`` vorticity at ``times``.

    ``grid`` is a periodic :class:`Grid2D`; ``nu`` a number or one viscosity per sample;
    ``forcing`` ``'fno'`` (:func:`fno_forcing`), ``None``/``'none'``, or a zero-mean tensor
    ``(nx, ny)`` or ``(sample, nx, ny)``, constant in time. ``max_step`` must not exceed
    :func:`stability_limit`; the default is :func:`default_step` (see the module docstring).
    One step serves the whole batch (its fastest sample and largest ν set it), so a
    sample's answer depends on its batch within the scheme's truncation error; solve a sample
    alone for an answer of its own.
    """
    grid = check_grid(grid)
    w0 = check_fields("w0", w0, grid)
    t_out = checks.times("times", times)
    if max_step is not None:
        max_step = checks.positive("max_step", max_step)
    batch, device = w0.shape[0], w0.device
    viscosity = checks.per_sample("nu", nu, batch, "cpu")
    shortest = min(grid.x.length, grid.y.length)
    checks.diffusion_number("nu", float(viscosity.max()), t_out[-1].item(), shortest)
    force = forcing_coefficients(forcing, grid, batch, device)
    scheme = VorticityScheme(grid, viscosity, force, device)

    c = torch.fft.rfft2(w0)
    speed0 = scheme.speed(c)
    limit = scheme.limit(speed0)
    if max_step is not None and max_step > limit:
        raise SolverError(
            f"solve_vorticity: max_step={max_step:.4g} exceeds the stability limit {limit:.4g} of "
            f"the CN–Heun scheme at the initial speed max|u| = {speed0.max().item():.4g}"
        )
    step = max_step if max_step is not None else _default_step(scheme, speed0, force, t_out)

    out = _march(scheme, c, t_out, step, adaptive=max_step is None)
    result = torch.stack(out, dim=1)
    result[:, t_out == 0] = w0[:, None]
    return result


MAX_RETRIES = 40
"""Times the default step may be lowered (at least halved each time) for one block of steps."""


def _march(scheme: VorticityScheme, c, t_out: torch.Tensor, step: float, adaptive: bool) -> list:
    """Advance the coefficients through ``t_out`` in blocks of at most :data:`CHECK_EVERY` steps,
    checking each block for NaN/inf and for steps beyond the limit at the speed met; physical
    fields ``(sample, nx, ny)`` at each output time."""
    out = []
    t = 0.0
    for t_target in t_out.tolist():
        count, h = _plan(t_target - t, step)
        retries = 0
        while count:
            block = min(count, CHECK_EVERY)
            trial, peak = scheme.advance(c, h, block)
            finite = bool(torch.isfinite(trial).all()) and bool(torch.isfinite(peak).all())
            limit = scheme.limit(peak) if finite else 0.0
            if h > limit:
                if not adaptive or retries == MAX_RETRIES:
                    raise _unstable(finite, t, t + block * h, h, peak, limit)
                retries += 1
                step = min(scheme.default(peak), 0.5 * h) if finite else 0.25 * h
                count, h = _plan(count * h, step)
                continue
            c = trial
            count -= block
            t += block * h
        t = t_target
        out.append(torch.fft.irfft2(c, s=scheme.shape))
    return out


def _unstable(finite: bool, start: float, end: float, h: float, peak, limit: float):
    if not finite:
        return SolverError(
            f"solve_vorticity: the solution became NaN or inf between t={start:.6g} and "
            f"t={end:.6g} with step {h:.4g}"
        )
    return SolverError(
        f"solve_vorticity: between t={start:.6g} and t={end:.6g} the speed reached max|u| = "
        f"{peak.max().item():.4g}, where the stability limit is {limit:.4g} < step {h:.4g}; "
        "pass a smaller max_step"
    )


def _default_step(scheme: VorticityScheme, speed0, force, t_out: torch.Tensor) -> float:
    t_end = t_out[-1].item()
    estimate = speed0
    if force is not None:
        forced = _spectral_velocity(force, scheme.modes, scheme.modes.resolved, scheme.shape)
        estimate = speed0 + t_end * forced.pow(2).sum(0).amax(dim=(-2, -1)).sqrt()
    step = scheme.default(estimate)
    if math.isfinite(step):
        return step
    return t_end if t_end > 0 else 1.0


def taylor_green(
    grid: Grid2D,
    t: float | Sequence[float] | torch.Tensor,
    nu: float | torch.Tensor,
    k: int = 1,
    amplitude: float = 1.0,
) -> torch.Tensor:
    """Exact decaying Taylor–Green vorticity ``A√(2(a²+b²)) cos(ax) cos(by) e^{−ν(a²+b²)t}``.

    ``a = 2πk/Lx``, ``b = 2πk/Ly`` (on the unit torus ``2Ak' cos(k'x) cos(k'y) e^{−2νk'²t}``, with
    velocity amplitude ``A``); a steady Euler flow, ``u·∇w = 0``. ``nu`` a number or ``(sample,)``;
    returns ``(sample, time, nx, ny)``.
    """
    grid = check_grid(grid)
    k = checks.positive_int("k", k)
    amplitude = checks.finite_number("amplitude", amplitude)
    times = checks.finite_values("t", t, "a time or times (T,)").flatten()
    nu = checks.real_values("nu", nu, "a number or one per sample (sample,)").flatten()
    if (nu <= 0).any() or not torch.isfinite(nu).all():
        raise ValueError(f"nu must be finite and > 0, got {nu.tolist()}")
    a = 2 * math.pi * k / grid.x.length
    b = 2 * math.pi * k / grid.y.length
    x, y = grid.coordinates()
    shape = amplitude * math.sqrt(2 * (a * a + b * b)) * torch.cos(a * x) * torch.cos(b * y)
    decay = torch.exp(-(a * a + b * b) * nu[:, None] * times[None, :])
    return decay[:, :, None, None] * shape


# ----------------------------------------------------------------------------- dataset recipe


TAIL = 6.0
"""The recipe estimates the speed of ``w0`` as this many standard deviations of one component."""


def grf_velocity_std(n: int, alpha: float, tau: float, sigma: float, length: float = 1.0) -> float:
    """Standard deviation of one velocity component of a zero-mean GRF vorticity on ``n × n``.

    ``Σ_{k≠0} λ_k / (2|k|² L²)`` over the grid's modes, ``λ_k = σ²(|k|² + τ²)^−α``: the velocity
    mode is ``w_k / |k|``, split evenly between the two components on average.
    """
    m = np.fft.fftfreq(n, d=1.0 / n)
    k2 = (2 * np.pi / length) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    k2 = k2[k2 > 0]
    variance = np.sum(sigma**2 * (k2 + tau**2) ** (-alpha) / k2) / (2 * length**2)
    return float(np.sqrt(variance))


def recipe_speed(grid: Grid2D, settings: dict) -> float:
    """The speed ``U = TAIL σ_u + t_end U_f`` the recipe plans for, from the settings alone (so a
    sample does not depend on the others in its batch): ``σ_u`` from :func:`grf_velocity_std`
    and ``U_f`` the speed of the forcing's ``∇⊥(−Δ)⁻¹f``."""
    std = grf_velocity_std(grid.x.n, settings["alpha"], settings["tau"], settings["sigma"])
    speed = TAIL * std
    if settings["forcing"] == "fno":
        vx, vy = velocity(fno_forcing(grid), grid)
        speed += settings["t_end"] * (vx**2 + vy**2).sqrt().max().item()
    return speed


def _recipe_step(grid: Grid2D, settings: dict) -> float:
    """:func:`default_step` at :func:`recipe_speed`."""
    return default_step(grid, settings["nu"], recipe_speed(grid, settings))


class PeriodicNavierStokes(Problem):
    name = "navier-stokes"
    description = (
        "2-D incompressible Navier-Stokes in vorticity form on the unit torus, "
        "w_t + u.grad w = nu Lap w + f, f = 0.1(sin 2pi(x+y) + cos 2pi(x+y)), w0 ~ zero-mean "
        "N(0, sigma^2 (-Laplacian + tau^2)^-alpha) (FNO's benchmark: alpha=2.5, tau=7, "
        "sigma=7^1.5); fields vx, vy beside the vorticity u"
    )
    options = {
        "nx": Option(64, "grid points per axis on the unit torus (64, 128, 256, ...)"),
        "nu": Option(1e-3, "viscosity ν (FNO: 1e-3, 1e-4, 1e-5)"),
        "t_end": Option(10.0, "final time (FNO's ν=1e-3 data go to 50)"),
        "nt": Option(11, "number of output times, t=0 included"),
        "max_step": Option(
            0.0, "time step; 0 = the CFL default at a speed estimated from the settings"
        ),
        "forcing": Option("fno", "'fno' (0.1(sin 2pi(x+y) + cos 2pi(x+y))) or 'none'"),
        "alpha": Option(2.5, "GRF exponent α of σ²(−Δ+τ²)^−α"),
        "tau": Option(7.0, "GRF inverse length scale τ"),
        "sigma": Option(7.0**1.5, "GRF amplitude σ (FNO: τ^(α−1))"),
    }

    def grid(self, settings: dict) -> Grid2D:
        n = checks.positive_int("nx", settings["nx"], 4)
        return Grid2D.square(n, 0.0, 1.0, periodic=True)

    def times(self, settings: dict) -> np.ndarray:
        nt = checks.positive_int("nt", settings["nt"], 2)
        return np.linspace(0.0, checks.positive("t_end", settings["t_end"]), nt)

    def field_shapes(self, settings: dict) -> dict[str, tuple[int, ...]]:
        return dict.fromkeys(("vx", "vy"), self.sample_shape(settings))

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        grid = self.grid(settings)
        return {
            "t": self.times(settings),
            "x": grid.x.coordinates().numpy(),
            "y": grid.y.coordinates().numpy(),
        }

    def attributes(self, settings: dict) -> dict[str, object]:
        forcing = checks.choice("forcing", settings["forcing"], ("fno", "none"))
        return {
            "pde": "navier-stokes (vorticity): w_t + u.grad w = nu Lap w + f, u = curl psi, "
            "-Lap psi = w",
            "boundary": "periodic",
            "solver": "pseudo-spectral, 2/3-rule dealiasing, Crank-Nicolson (viscous) + Heun "
            "(advection, forcing)",
            "initial_condition": "zero-mean GRF N(0, sigma^2 (-Laplacian + tau^2 I)^-alpha)",
            **settings,
            "forcing": "fno: 0.1 (sin 2pi(x+y) + cos 2pi(x+y))" if forcing == "fno" else "none",
            "max_step": self.step(settings),
        }

    def step(self, settings: dict) -> float:
        """The time step: ``max_step`` if > 0, else one that depends only on the settings."""
        if checks.non_negative("max_step", settings["max_step"]) > 0:
            return settings["max_step"]
        return _recipe_step(self.grid(settings), settings)

    def generate(self, seeds: Sequence[int], settings: dict, device="cpu") -> Batch:
        grid = self.grid(settings)
        nu = checks.positive("nu", settings["nu"])
        w0 = torch.cat(
            [
                gaussian_random_field_2d(
                    grid.x.n,
                    alpha=settings["alpha"],
                    tau=settings["tau"],
                    sigma=settings["sigma"],
                    generator=generator(seed),
                    zero_mean=True,
                )
                for seed in seeds
            ]
        ).to(device)
        w = solve_vorticity(
            w0, grid, nu, self.times(settings), settings["forcing"], max_step=self.step(settings)
        )
        vx, vy = velocity(w, grid)
        params = {"nu": torch.full((len(seeds),), nu, dtype=FLOAT, device=w.device)}
        return Batch(w, params, {"vx": vx, "vy": vy})


PROBLEMS = [PeriodicNavierStokes()]


# ----------------------------------------------------------------------------- exact cases

_TG_NU = torch.tensor([0.02, 0.05], dtype=FLOAT)
_TG_GRID = Grid2D.square(16, periodic=True)
_TG_T_END = 1.0


def _taylor_green_time(steps: int) -> Comparison:
    """Taylor–Green with ``steps`` steps to ``t = 1``: only Crank–Nicolson's O(h²) error is left."""
    t = torch.linspace(0.0, _TG_T_END, 3, dtype=FLOAT)
    exact = taylor_green(_TG_GRID, t, _TG_NU, amplitude=0.5)
    h = _TG_T_END / steps
    numerical = solve_vorticity(exact[:, 0], _TG_GRID, _TG_NU, t, forcing=None, max_step=h)
    x, _ = _TG_GRID.coordinates()
    return Comparison(numerical.flatten(2), exact.flatten(2), x.flatten(), t, spacing=h)


EXACT_CASES = [
    ExactCase(
        "navier-stokes-taylor-green-time",
        _taylor_green_time,
        (16, 32, 64, 128),
        order=2,
        norm="max",
        refines="time",
    ),
]
