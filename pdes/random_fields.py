"""Gaussian random fields on periodic boxes, the initial conditions of the FNO benchmarks.

A field on the periodic box ``[0, L)^d`` has mean zero and covariance operator
``C = σ² (−Δ + τ² I)^(−α)``: the Fourier mode ``e^{i k·x}`` has variance
``λ_k = σ² (|k|² + τ²)^(−α)``. FNO's Burgers data uses ``N(0, 625 (−Δ + 25 I)^−2)`` on ``[0, 1]``
(σ=25, τ=5, α=2, the 1-D defaults); its 2-D Navier–Stokes vorticity uses α=2.5, τ=7 and
``σ = τ^(α − d/2)`` (the 2-D defaults).

Discretisation: white noise of variance ``1 / dx^d`` on the ``n^d`` grid points (the grid average
of continuum white noise) filtered by ``√λ_k`` in discrete Fourier space. The discrete field then
has exactly the covariance of the continuum field truncated to the resolved modes (the ``n`` FFT
modes per axis, Nyquist counted once), so its pointwise variance is ``Σ_k λ_k / L^d`` over those
modes and the expected squared DFT coefficient of mode ``k`` is ``λ_k n^(2d) / L^d``. Refining the
grid only adds modes, so the variance converges to the continuum value when ``2α > d``.
"""

from __future__ import annotations

import math

import torch

from .checks import FLOAT, positive, positive_int


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator)}")


def _white_noise(
    shape: tuple[int, ...], cell_volume: float, generator: torch.Generator | None, device
) -> torch.Tensor:
    source = generator.device if generator is not None else "cpu"
    noise = torch.randn(shape, generator=generator, dtype=FLOAT, device=source)
    return (noise / math.sqrt(cell_volume)).to(device=device if device is not None else source)


def _spectrum(k_squared: torch.Tensor, alpha: float, tau: float, sigma: float) -> torch.Tensor:
    return sigma**2 * (k_squared + tau**2) ** (-alpha)


def _angular(n: int, length: float, real: bool, device) -> torch.Tensor:
    frequencies = torch.fft.rfftfreq if real else torch.fft.fftfreq
    return 2 * math.pi / length * frequencies(n, d=1.0 / n, dtype=FLOAT, device=device)


def _check(
    n: int, length: float, alpha: float, tau: float, sigma: float, batch: int, zero_mean: bool
):
    if not isinstance(zero_mean, bool):
        raise TypeError(f"zero_mean must be True or False, got {zero_mean!r}")
    return (
        positive_int("n", n, 2),
        positive("length", length),
        positive("alpha", alpha),
        positive("tau", tau),
        positive("sigma", sigma),
        positive_int("batch", batch),
    )


def gaussian_random_field_1d(
    n: int,
    length: float = 1.0,
    alpha: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
    generator: torch.Generator | None = None,
    batch: int = 1,
    zero_mean: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Samples of ``N(0, σ²(−Δ+τ²I)^−α)`` at the ``n`` points ``j L/n`` of the periodic ``[0, L)``.

    Returns ``(batch, n)`` float64; pointwise variance ``Σ_k λ_k / L`` over the resolved modes.
    ``zero_mean`` removes the constant mode, so each sample's spatial mean is zero.
    """
    n, length, alpha, tau, sigma, batch = _check(n, length, alpha, tau, sigma, batch, zero_mean)
    _check_generator(generator)
    noise = _white_noise((batch, n), length / n, generator, device)
    k = _angular(n, length, real=True, device=noise.device)
    filt = _spectrum(k**2, alpha, tau, sigma).sqrt()
    if zero_mean:
        filt[0] = 0.0
    return torch.fft.irfft(torch.fft.rfft(noise, dim=-1) * filt, n=n, dim=-1)


def gaussian_random_field_2d(
    n: int,
    length: float = 1.0,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float = 7.0**1.5,
    generator: torch.Generator | None = None,
    batch: int = 1,
    zero_mean: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Samples of ``N(0, σ²(−Δ+τ²I)^−α)`` on the ``n × n`` periodic grid of ``[0, L)²``.

    Returns ``(batch, n, n)`` float64 indexed ``[..., x, y]``; pointwise variance ``Σ_k λ_k / L²``.
    """
    n, length, alpha, tau, sigma, batch = _check(n, length, alpha, tau, sigma, batch, zero_mean)
    _check_generator(generator)
    noise = _white_noise((batch, n, n), (length / n) ** 2, generator, device)
    kx = _angular(n, length, real=False, device=noise.device)
    ky = _angular(n, length, real=True, device=noise.device)
    filt = _spectrum(kx[:, None] ** 2 + ky[None, :] ** 2, alpha, tau, sigma).sqrt()
    if zero_mean:
        filt[0, 0] = 0.0
    coefficients = torch.fft.rfft2(noise, dim=(-2, -1)) * filt
    return torch.fft.irfft2(coefficients, s=(n, n), dim=(-2, -1))
