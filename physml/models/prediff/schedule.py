"""The noise schedule of PreDiff's latent diffusion, kept by diffusers' schedulers.

Training adds noise with a ``DDPMScheduler`` (``z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε``, ``t`` uniform in
``[0, T)``); sampling steps back with a ``DDIMScheduler`` built on the same ᾱ. The defaults are the
CPU plan's: cosine schedule (``"squaredcos_cap_v2"``), ``T = 1000``, ε-prediction, no clipping of
the estimated clean latent (latents are not bounded), and "leading" DDIM timesteps
``t = T − T/N, …, T/N, 0`` for ``N`` steps. Not "trailing" (first step at ``t = T − 1``): there
the cosine schedule's ᾱ is 2e-9, so the step multiplies the noise estimate's error by ~2e4, and
diffusers' η = 1 step takes the square root of a float32 round-off below zero (NaN); at
``t = 950`` ᾱ is 6e-3. diffusers is imported on first use (it costs seconds).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from pdes.checks import positive_int

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


@functools.lru_cache(maxsize=4)
def _ddpm(timesteps: int, beta_schedule: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_schedule=beta_schedule,
        prediction_type="epsilon",
        clip_sample=False,
    )


@dataclass(frozen=True)
class NoiseSchedule:
    """``timesteps`` training steps ``T`` of the named diffusers ``beta_schedule``."""

    timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        positive_int("timesteps", self.timesteps, 2)
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}"
            )

    def training(self):
        """A diffusers ``DDPMScheduler`` adding noise at training time (``add_noise``); built
        once per schedule (every training step asks for it)."""
        return _ddpm(self.timesteps, self.beta_schedule)

    def sampling(self, steps: int):
        """A diffusers ``DDIMScheduler`` on the same ᾱ, set to ``steps`` reverse steps."""
        from diffusers import DDIMScheduler

        positive_int("steps", steps)
        if steps > self.timesteps:
            raise ValueError(
                f"steps must be <= the {self.timesteps} training timesteps, got {steps}"
            )
        scheduler = DDIMScheduler(
            num_train_timesteps=self.timesteps,
            beta_schedule=self.beta_schedule,
            prediction_type="epsilon",
            clip_sample=False,
            set_alpha_to_one=True,
            timestep_spacing="leading",
            steps_offset=0,
        )
        scheduler.set_timesteps(steps)
        return scheduler

    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t for ``t = 0 … T − 1`` ``(T,)`` float32, diffusers' values."""
        return self.training().alphas_cumprod.cpu().clone()
