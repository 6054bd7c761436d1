"""Exponential time integration of semilinear problems ``du/dt = L u + N(u, t)``.

``L`` is a linear operator given in a basis that diagonalises it (Fourier modes for periodic axes,
the eigenvectors of a tridiagonal finite-difference matrix otherwise), so the stiff linear part is
integrated exactly and only ``N`` (advection, boundary forcing) limits the step. The scheme is
Cox & Matthews' ETDRK4 with the phi-functions evaluated by Kassam & Trefethen's contour integrals
(fourth order in time, stable for any stiffness of ``L``).

Two forms of the same scheme: :func:`etdrk4` takes ``N`` as a function of the coefficients (FFTs,
boundary forcing, anything); :class:`DenseETDRK4` takes a nonlinearity that is pointwise in physical
space between two dense matrices, ``N(r) = g(r P) R``, and folds the ETDRK4 weights into ``R``.
On small grids the second is several times faster: each step is a dozen small matmuls instead of
FFT calls whose cost is per-call overhead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .checks import FLOAT, finite_result, positive

Nonlinear = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class DiagonalOperator:
    """A linear operator ``L = inverse ∘ diag(eigenvalues) ∘ forward``.

    ``forward`` maps physical values ``(batch, n)`` to coefficients ``(batch, m)`` and ``inverse``
    maps back; ``eigenvalues`` ``(m,)`` are real and non-positive for the diffusion operators here.
    Eigenvalues ``(batch, m)`` give each sample its own operator in the same basis (e.g. one
    diffusivity per sample).
    """

    eigenvalues: torch.Tensor
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]

    def etdrk4_coefficients(self, h: float, dtype: torch.dtype = FLOAT) -> tuple[torch.Tensor, ...]:
        """``(E, E2, Q, f1, 2 f2, f3)`` of ETDRK4 for step ``h``, as ``dtype`` (that of the
        coefficients they multiply, so the loop makes no copies).

        Cached by step, dtype and eigenvalues (a few recent ones), so repeated solves on one grid,
        as in dataset generation, compute them once.
        """
        lam = self.eigenvalues
        key = (
            round(h, 15),
            dtype,
            lam.shape,
            str(lam.device),
            hash(lam.detach().cpu().numpy().tobytes()),
        )
        if key not in _COEFFICIENTS:
            if len(_COEFFICIENTS) >= 16:
                _COEFFICIENTS.pop(next(iter(_COEFFICIENTS)))
            E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(lam, h)
            _COEFFICIENTS[key] = tuple(w.to(dtype) for w in (E, E2, Q, f1, 2 * f2, f3))
        return _COEFFICIENTS[key]


_COEFFICIENTS: dict[tuple, tuple[torch.Tensor, ...]] = {}


def scaled(base: DiagonalOperator, rates: torch.Tensor) -> DiagonalOperator:
    """``rate_s · L`` for each sample ``s`` (``rates`` ``(batch,)``), in the basis of ``base``.

    One set of eigenvalues when all rates agree, else ``(batch, modes)`` eigenvalues, so one
    ETDRK4 run integrates samples with different diffusivities or viscosities.
    """
    if bool((rates == rates[0]).all()):
        eigenvalues = rates[0] * base.eigenvalues
    else:
        eigenvalues = rates[:, None] * base.eigenvalues[None, :]
    return DiagonalOperator(eigenvalues, base.forward, base.inverse)


def _phi_terms(z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(e^{z/2}-1)/z`` and the three ETDRK4 weights' numerators over ``z³``, for tensors ``z``."""
    ez = torch.exp(z)
    return (
        (torch.exp(z / 2) - 1) / z,
        (-4 - z + ez * (4 - 3 * z + z**2)) / z**3,
        (2 + z + ez * (z - 2)) / z**3,
        (-4 - 3 * z - z**2 + ez * (4 - z)) / z**3,
    )


CONTOUR_RADIUS = 0.5
"""Below this ``|hλ|`` the phi-functions are averaged over a circle around ``hλ`` (Kassam &
Trefethen), where the closed forms would cancel catastrophically; above it the closed forms lose
< 1e-13."""


def _etdrk4_coefficients(eigenvalues: torch.Tensor, h: float, points: int = 32):
    z = h * eigenvalues
    terms = list(_phi_terms(z))
    small = z.abs() < CONTOUR_RADIUS
    if small.any():
        angles = math.pi * (torch.arange(points, dtype=FLOAT, device=z.device) + 0.5) / points
        roots = torch.exp(1j * angles)  # upper half circle; real z makes the mean's real part exact
        r = z[small].to(torch.complex128)[:, None] + roots
        for term, values in zip(terms, _phi_terms(r), strict=True):
            term[small] = values.mean(-1).real
    Q, f1, f2, f3 = (h * term for term in terms)
    return torch.exp(z), torch.exp(0.5 * z), Q, f1, f2, f3


def step_plan(t0: float, times: torch.Tensor, max_step: float) -> list[tuple[int, float]]:
    """For each output time, the number of equal steps from the previous time and their size."""
    plan = []
    previous = t0
    for t in times.tolist():
        span = t - previous
        if span <= 0.0:
            plan.append((0, 0.0))
        else:
            count = max(1, math.ceil(span / max_step - 1e-9))
            plan.append((count, span / count))
        previous = t
    return plan


def etdrk4(
    operator: DiagonalOperator,
    u0: torch.Tensor,
    times: torch.Tensor,
    max_step: float,
    nonlinear: Nonlinear | None = None,
    t0: float = 0.0,
    name: str = "solver",
) -> torch.Tensor:
    """Integrate from ``u0`` at ``t0`` and return the physical solution at ``times``.

    Args:
        operator: the diagonalised linear part ``L``.
        u0: physical initial values ``(batch, n)``.
        times: output times ``(K,)``, non-decreasing and ``>= t0``.
        max_step: the largest step allowed; steps are shortened to land on every output time.
        nonlinear: ``N(c, t)`` acting on *coefficients* and returning coefficients; ``None`` for a
            homogeneous linear problem, which is then advanced exactly in one jump per output.

    Returns:
        ``(batch, K, n)``.
    """
    positive("max_step", max_step)
    if times.numel() and times[0] < t0:
        raise ValueError(f"times must start at or after t0={t0}, got {times[0].item()}")
    out = []
    t = t0
    with torch.inference_mode():
        c = operator.forward(u0)
        lam = operator.eigenvalues
        for (count, h), t_out in zip(step_plan(t0, times, max_step), times.tolist(), strict=True):
            if count and nonlinear is None:
                c = c * torch.exp((t_out - t) * lam)
            elif count:
                E, E2, Q, f1, f2, f3 = operator.etdrk4_coefficients(h, c.dtype)
                for _ in range(count):  # fused multiply-adds: these loops are overhead-bound
                    half = E2 * c
                    Nv = nonlinear(c, t)
                    a = torch.addcmul(half, Q, Nv)
                    Na = nonlinear(a, t + 0.5 * h)
                    b = torch.addcmul(half, Q, Na)
                    Nb = nonlinear(b, t + 0.5 * h)
                    cc = torch.addcmul(E2 * a, Q, 2 * Nb - Nv)
                    Nc = nonlinear(cc, t + h)
                    c = torch.addcmul(
                        torch.addcmul(torch.addcmul(E * c, Nv, f1), Na + Nb, f2), Nc, f3
                    )
                    t += h
            t = t_out
            out.append(operator.inverse(c))
    u = torch.stack(out, dim=1)  # outside inference mode: an ordinary tensor
    check_finite(name, u, times)
    return u


def check_finite(name: str, u: torch.Tensor, times: torch.Tensor) -> None:
    """One check of a whole solution ``(batch, K, ...)``; the error names the first bad time."""
    finite = torch.isfinite(u).flatten(2).all(-1).all(0)  # (K,)
    if not bool(finite.all()):
        first = int(torch.nonzero(~finite)[0, 0])
        finite_result(name, u[:, first], times[first].item())


class DenseETDRK4:
    """ETDRK4 for ``dr/dt = λ ⊙ r + g(r P) R`` on real coefficients ``r`` ``(batch, p)``.

    ``eigenvalues`` ``λ`` ``(p,)``, real and shared by the batch; ``to_physical`` ``P`` ``(p, n)``
    maps coefficients to the physical values that the pointwise function ``g`` acts on (zero rows
    for modes kept out of the nonlinearity); ``to_rate`` ``R`` ``(n, p)`` maps ``g``'s values back
    to coefficient rates (a derivative may be folded in). The weights ``Q, f1, 2 f2, f3`` are folded
    into ``R`` once per step size, the stage ``c = E₂a + Q(2N_b − N_r)`` takes ``Q N_r`` from the
    stage ``a = E₂r + Q N_r`` already formed, and the update ``E r + f1 N_r + 2 f2 (N_a + N_b) +
    f3 N_c`` is one matmul of the stacked ``[r, g_r, g_a + g_b, g_c]``. A step is sixteen torch
    calls, nine of them small matmuls: on small grids a fraction of the FFT form's cost.
    """

    def __init__(
        self,
        eigenvalues: torch.Tensor,
        to_physical: torch.Tensor,
        to_rate: torch.Tensor,
        pointwise: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        if eigenvalues.ndim != 1 or to_physical.shape[0] != eigenvalues.numel():
            raise ValueError(
                f"DenseETDRK4 needs eigenvalues (p,) and to_physical (p, n), got "
                f"{tuple(eigenvalues.shape)} and {tuple(to_physical.shape)}"
            )
        if to_rate.shape != to_physical.shape[::-1]:
            raise ValueError(
                f"to_rate must have shape {tuple(to_physical.shape[::-1])}, "
                f"got {tuple(to_rate.shape)}"
            )
        self.eigenvalues, self.to_physical, self.to_rate = eigenvalues, to_physical, to_rate
        self.pointwise = pointwise
        self._weights: dict[float, tuple[torch.Tensor, ...]] = {}

    def weights(self, h: float) -> tuple[torch.Tensor, ...]:
        """``(E2, E2 − 1, R Q, R 2Q, [diag E; R f1; R 2f2; R f3])`` for step ``h``, cached (a
        few recent steps)."""
        key = round(h, 15)
        if key not in self._weights:
            if len(self._weights) >= 8:
                self._weights.pop(next(iter(self._weights)))
            E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(self.eigenvalues, h)
            R = self.to_rate
            update = torch.cat([torch.diag(E), R * f1, R * (2 * f2), R * f3])
            self._weights[key] = (E2, E2 - 1, R * Q, R * (2 * Q), update)
        return self._weights[key]

    def run(
        self, r0: torch.Tensor, times: torch.Tensor, max_step: float, t0: float = 0.0
    ) -> torch.Tensor:
        """Coefficients ``(batch, K, p)`` at ``times`` ``(K,)`` from ``r0`` ``(batch, p)`` at
        ``t0``; steps of at most ``max_step``, shortened to land on every output time. The loop
        runs under ``torch.inference_mode``; the caller checks the result (one check per call)."""
        P, g = self.to_physical, self.pointwise
        out = []
        r = r0
        with torch.inference_mode():
            for count, h in step_plan(t0, times, max_step):
                if count:
                    E2, E2m1, RQ, RQ2, update = self.weights(h)
                for _ in range(count):
                    half = E2 * r
                    wv = g(r @ P)
                    a = torch.addmm(half, wv, RQ)
                    wa = g(a @ P)
                    b = torch.addmm(half, wa, RQ)
                    wb = g(b @ P)
                    c = torch.addmm(torch.addcmul(half, E2m1, a), wb, RQ2)
                    wc = g(c @ P)
                    r = torch.cat([r, wv, wa + wb, wc], dim=1) @ update
                out.append(r)
            return torch.stack(out, dim=1)


def tridiagonal_operator(
    lower: torch.Tensor, diagonal: torch.Tensor, upper: torch.Tensor
) -> DiagonalOperator:
    """Diagonalise a real tridiagonal matrix whose off-diagonal products are positive.

    Such a matrix ``A`` is similar to a symmetric one, ``S = D A D^-1`` with ``D`` diagonal, so
    ``A = V diag(λ) V^-1`` with real ``λ`` and ``V = D^-1 Q`` from ``eigh(S) = Q diag(λ) Q^T``.
    ``lower[i] = A[i+1, i]`` and ``upper[i] = A[i, i+1]``.
    """
    if (lower * upper <= 0).any():
        raise ValueError("tridiagonal_operator needs positive off-diagonal products")
    ratio = torch.sqrt(upper / lower)
    d = torch.cat([torch.ones(1, dtype=FLOAT, device=diagonal.device), torch.cumprod(ratio, 0)])
    off = torch.sqrt(lower * upper)
    S = torch.diag(diagonal) + torch.diag(off, 1) + torch.diag(off, -1)
    eigenvalues, Q = torch.linalg.eigh(S)
    to_coefficients = Q * d[:, None]  # (n, m): coefficients = u @ (D Q) = (Q^T D u)^T
    to_physical = (Q / d[:, None]).T.contiguous()  # (m, n): u = c @ (D^-1 Q)^T
    return DiagonalOperator(
        eigenvalues=eigenvalues,
        forward=lambda u: u @ to_coefficients,
        inverse=lambda c: c @ to_physical,
    )


def fourier_operator(
    n: int, length: float, symbol: Callable[[torch.Tensor], torch.Tensor], device=None
) -> DiagonalOperator:
    """A periodic constant-coefficient operator, diagonal in the real FFT basis.

    ``symbol(k)`` gives the eigenvalue of the Fourier mode with angular wavenumber ``k``.
    """
    return DiagonalOperator(
        eigenvalues=symbol(wavenumbers(n, length, device)),
        forward=lambda u: torch.fft.rfft(u, dim=-1),
        inverse=lambda c: torch.fft.irfft(c, n=n, dim=-1),
    )


def wavenumbers(n: int, length: float, device=None) -> torch.Tensor:
    """Angular wavenumbers of the real FFT modes of ``n`` points on a period ``length``."""
    return 2 * math.pi / length * torch.fft.rfftfreq(n, d=1.0 / n, dtype=FLOAT, device=device)
