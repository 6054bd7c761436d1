"""The DDIM sampling loop of PreDiff, with the sampler seam's guidance hook.

From ``z ~ N(0, I)`` each reverse step at timestep ``t`` (spaced "leading" or "trailing":
:meth:`~physml.models.prediff.schedule.NoiseSchedule.sampling_timesteps`)

1. predicts the noise ``ε̂ = ε_θ(z_t, t)``;
2. if a ``guidance`` is given, calls ``g = guidance(z_t, step)`` with ``step`` a
   :class:`~physml.constraints.ReverseStep` and shifts the noise estimate,
   ``ε̂ ← ε̂ − √(1 − ᾱ_t) g`` (for a guide ``g = ∇ log p(y | z_t)`` this is classifier guidance:
   the score moves by ``g``) — a guide that denoises ``z_t`` itself (``step.denoise(z_t)``, as
   knowledge control on frames does) computes ``ε̂`` on the way, and the step reuses it instead
   of running the denoiser twice;
3. takes the DDIM step to the next listed timestep ``t'`` (ᾱ_{t'} = 1 after the last):
   ``ẑ_0 = (z_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t``, ``z_{t'} = √ᾱ_{t'} ẑ_0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ ξ``
   with ``σ² = η² (1 − ᾱ_{t'})/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ_{t'})`` (``η = 0``: deterministic, ``η = 1``:
   DDPM-like ensembles) and ``ξ`` drawn from ``generator``. ᾱ are the schedule's, in float64
   (diffusers' own step goes to ``t − ⌊T/N⌋``, off the trailing timesteps when ``N`` does not
   divide ``T``, and in float32).

Latents are ``(members, batch, T_out, c, h, w)``: every member of every batch entry is a sample,
and the guidance sees them in that layout, so a guide can match each sample to its own target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..._checks import flag
from ..._progress import progress_bar
from ...constraints import ReverseStep
from .schedule import NoiseSchedule

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
    progress: bool = True,
) -> torch.Tensor:
    """Latents ``z_0`` of ``shape`` ``(members, batch, T_out, c, h, w)`` by ``steps`` DDIM steps.

    ``predict(z_t, t)`` is the noise estimate ε_θ for latents of ``shape`` at timestep ``t`` (an
    int); it is called without gradients in the loop, and with gradients through
    ``ReverseStep.denoise`` when a guide asks for ``ẑ_0``. ``guidance`` is called with gradients
    enabled on a detached ``z_t`` (a guide calls ``z_t.requires_grad_()`` if it differentiates);
    it returns ``g`` shaped like ``z_t``. ``decode`` (latents → frames, differentiable) is handed
    to the guide as ``ReverseStep.decode``. ``generator`` draws the starting ``z`` and every
    step's noise, in ``dtype`` (torch's default if None), on ``device``. ``spacing``:
    ``"leading"`` or ``"trailing"`` timesteps (:meth:`.NoiseSchedule.sampling_timesteps`) of the
    ``schedule`` the denoiser was trained with. ``eta`` in ``[0, 1]`` scales each step's fresh
    noise: 0 is deterministic DDIM, 1 as much noise as DDPM's posterior. ``progress`` shows a
    bar of the steps (on stderr, when a terminal or a Jupyter kernel's; cleared when done, so
    that repeated calls leave no line behind); the samples are the same either way.
    """
    eta = check_eta(eta)
    progress = flag("progress", progress)
    timesteps = schedule.sampling_timesteps(steps, spacing)
    alpha_bars = schedule.alphas_cumprod().double().tolist()
    if not all(0 <= timestep < len(alpha_bars) for timestep in timesteps):
        raise ValueError(
            f"the {steps} {spacing} timesteps must lie in [0, {len(alpha_bars)}) (a negative one "
            f"would read ᾱ from the end), got {timesteps}"
        )
    z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    # the bar is cleared when done: sweeps and chunk loops that sample keep their own
    for index, timestep in enumerate(progress_bar(timesteps, progress, "DDIM steps", leave=False)):
        alpha_bar = alpha_bars[timestep]
        alpha_bar_next = alpha_bars[timesteps[index + 1]] if index + 1 < len(timesteps) else 1.0
        eps = None
        if guidance is not None:
            g, eps = _guide(guidance, predict, z, timestep, index, alpha_bar, decode)
        if eps is None:
            with torch.no_grad():
                eps = _noise_estimate(predict, z, timestep)
        if guidance is not None:
            eps = eps - math.sqrt(1.0 - alpha_bar) * g
        noise = None
        if eta > 0:
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        with torch.no_grad():
            z = _ddim_step(z, eps, alpha_bar, alpha_bar_next, eta, noise)
    return z


def _ddim_step(
    z: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar: float,
    alpha_bar_next: float,
    eta: float,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM step from latents ``z`` at ᾱ = ``alpha_bar`` with noise estimate ``eps`` (both
    of one shape) to ᾱ = ``alpha_bar_next``, adding ``σ noise`` (module docstring)."""
    variance = (
        eta**2 * (1.0 - alpha_bar_next) * (1.0 - alpha_bar / alpha_bar_next) / (1.0 - alpha_bar)
    )
    z_next = (
        math.sqrt(alpha_bar_next) * _clean(z, eps, alpha_bar)
        + math.sqrt(1.0 - alpha_bar_next - variance) * eps
    )
    return z_next if noise is None else z_next + math.sqrt(variance) * noise


def _clean(z: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The clean latents ``ẑ_0 = (z − √(1 − ᾱ) ε̂)/√ᾱ`` of ``z`` and its noise estimate."""
    return (z - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def _checked(value: object, z: torch.Tensor, timestep: int, source: str) -> torch.Tensor:
    """``value`` if it is a finite tensor shaped like ``z``, else a ``ValueError`` naming
    ``source`` (what returned it) and the ``timestep``."""
    if not isinstance(value, torch.Tensor) or value.shape != z.shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"{source} must return a tensor shaped like z_t {tuple(z.shape)}, got {got} at "
            f"timestep {timestep}"
        )
    if not torch.isfinite(value).all():
        raise ValueError(f"{source} returned NaN or inf values at timestep {timestep}")
    return value


def _noise_estimate(predict: Predict, z: torch.Tensor, timestep: int) -> torch.Tensor:
    """``predict(z, timestep)``, checked to be a finite tensor shaped like ``z``."""
    return _checked(predict(z, timestep), z, timestep, "predict")


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
        eps = _noise_estimate(predict, z_t, timestep)
        if not at_z and _same(z_t, given):
            at_z.append(eps.detach())
        return _clean(z_t, eps, alpha_bar)

    step = ReverseStep(timestep, index, alpha_bar, denoise=denoise, decode=decode)
    with torch.enable_grad():
        g = guidance(given, step)
    _checked(g, z, timestep, "guidance")
    return g.detach().to(z.dtype), (at_z[0] if at_z else None)
