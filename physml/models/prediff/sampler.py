"""The DDIM sampling loop of PreDiff, with the sampler seam's guidance hook.

From ``z ~ N(0, I)`` each reverse step at timestep ``t`` (diffusers' DDIM timesteps, spaced
"leading" or "trailing": :mod:`~physml.models.prediff.schedule`)

1. predicts the noise ``ε̂ = ε_θ(z_t, t)``;
2. if a ``guidance`` is given, calls ``g = guidance(z_t, step)`` with ``step`` a
   :class:`~physml.constraints.ReverseStep` and shifts the noise estimate,
   ``ε̂ ← ε̂ − √(1 − ᾱ_t) g`` (for a guide ``g = ∇ log p(y | z_t)`` this is classifier guidance:
   the score moves by ``g``) — a guide that denoises ``z_t`` itself (``step.denoise(z_t)``, as
   knowledge control on frames does) computes ``ε̂`` on the way, and the step reuses it instead
   of running the denoiser twice;
3. takes diffusers' DDIM step to ``z_{t'}``: ``ẑ_0 = (z_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t``,
   ``z_{t'} = √ᾱ_{t'} ẑ_0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ ξ`` with ``σ = η σ_DDPM`` (``η = 0``:
   deterministic, ``η = 1``: DDPM-like ensembles) and ``ξ`` drawn from ``generator``.

Latents are ``(members, batch, T_out, c, h, w)``: every member of every batch entry is a sample,
and the guidance sees them in that layout, so a guide can match each sample to its own target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ...constraints import ReverseStep
from .schedule import NoiseSchedule, check_spacing

Predict = Callable[[torch.Tensor, int], torch.Tensor]
Guidance = Callable[[torch.Tensor, ReverseStep], torch.Tensor]


def check_eta(eta: object) -> float:
    """``eta`` as a float in [0, 1], else a ``ValueError`` naming it."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM), got {eta!r}")
    return float(eta)


def ddim_sample(
    predict: Predict,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    generator: torch.Generator,
    steps: int = 20,
    eta: float = 1.0,
    guidance: Guidance | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    spacing: str = "leading",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Latents ``z_0`` of ``shape`` ``(members, batch, T_out, c, h, w)`` by ``steps`` DDIM steps.

    ``predict(z_t, t)`` is the noise estimate ε_θ for latents of ``shape`` at timestep ``t`` (an
    int); it is called without gradients in the loop, and with gradients through
    ``ReverseStep.denoise`` when a guide asks for ``ẑ_0``. ``guidance`` is called with gradients
    enabled on a detached ``z_t`` (a guide calls ``z_t.requires_grad_()`` if it differentiates);
    it returns ``g`` shaped like ``z_t``. ``decode`` (latents → frames, differentiable) is handed
    to the guide as ``ReverseStep.decode``. ``generator`` draws the starting ``z`` and every
    step's noise, in ``dtype`` (torch's default if None). ``spacing``: ``"leading"`` or
    ``"trailing"`` timesteps (:meth:`NoiseSchedule.sampling`).
    """
    eta = check_eta(eta)
    scheduler = schedule.sampling(steps, check_spacing(spacing))
    z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    for index, timestep in enumerate(scheduler.timesteps.tolist()):
        eps = None
        if guidance is not None:
            alpha_bar = float(scheduler.alphas_cumprod[timestep])
            g, eps = _guide(guidance, predict, z, timestep, index, alpha_bar, decode)
        if eps is None:
            with torch.no_grad():
                eps = predict(z, timestep)
        if guidance is not None:
            eps = eps - math.sqrt(1.0 - alpha_bar) * g
        noise = None
        if eta > 0:
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        with torch.no_grad():
            z = scheduler.step(eps, timestep, z, eta=eta, variance_noise=noise).prev_sample
    return z


def _same(z_t: torch.Tensor, z: torch.Tensor) -> bool:
    """Whether the guide denoised the step's own latents (so their noise estimate is ε̂(z_t))."""
    return z_t.shape == z.shape and torch.equal(z_t.detach(), z)


def _guide(
    guidance: Guidance,
    predict: Predict,
    z: torch.Tensor,
    timestep: int,
    index: int,
    alpha_bar: float,
    decode,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The guide's shift ``g`` at one step, checked to be a finite tensor shaped like ``z``, and
    the noise estimate at ``z`` itself when the guide's ``denoise`` computed it (the step then
    reuses it instead of running the denoiser a second time), else ``None``."""
    given = z.detach()
    at_z: list[torch.Tensor] = []

    def denoise(z_t: torch.Tensor) -> torch.Tensor:
        eps = predict(z_t, timestep)
        if not at_z and _same(z_t, given):
            at_z.append(eps.detach())
        return (z_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)

    step = ReverseStep(timestep, index, alpha_bar, denoise=denoise, decode=decode)
    with torch.enable_grad():
        g = guidance(given, step)
    if not isinstance(g, torch.Tensor) or g.shape != z.shape:
        got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(
            f"guidance must return a tensor shaped like z_t {tuple(z.shape)}, got {got}"
        )
    if not torch.isfinite(g).all():
        raise ValueError(f"guidance returned NaN or inf values at timestep {timestep}")
    return g.detach().to(z.dtype), (at_z[0] if at_z else None)
