"""The noise schedule of PreDiff's latent diffusion, kept by diffusers' schedulers.

Training adds noise with a ``DDPMScheduler`` (``z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε``, ``t`` uniform in
``[0, T)``); sampling steps back through the timesteps :meth:`NoiseSchedule.sampling_timesteps`
lists on the same ᾱ (the step itself is :func:`~physml.models.prediff.sampler.ddim_sample`'s).
The defaults are the CPU plan's: cosine schedule (``"squaredcos_cap_v2"``), ``T = 1000``,
ε-prediction, no clipping of the estimated clean latent (latents are not bounded). ``N`` DDIM
steps are spaced

* ``"leading"`` (the default): ``t = (N − 1)⌊T/N⌋, …, ⌊T/N⌋, 0``. The sampler starts from
  ``N(0, I)`` as if it were ``z`` at the first of these, where ᾱ is not 0 (6e-3 for ``N = 20``,
  0.09 for ``N = 5``, 0.49 for ``N = 2``): the part ``√ᾱ z_0`` of the data is missing at the
  start, which biases few-step samples toward 0 (an exact noise estimate for data of mean 1.5
  gives means 1.20, 1.32, 1.45 for ``N = 2, 5, 20``). ``N = 1`` is refused (its one step is at
  ``t = 0`` and hands back the starting noise). For ``N`` not dividing ``T`` the remainder
  ``T mod N`` is dropped from the top, and the start can lie far below ``T − 1`` (``T = 1000``:
  666 with ᾱ 0.25 for ``N = 334``, 500 with ᾱ 0.49 for ``N = 501``), so that more steps sample
  worse than fewer (means 1.09 and 0.84 for ``N = 334, 501`` with the estimate above): a start
  more than one stride short of ``T − 1`` (below ``T − 2⌈T/N⌉``) whose ᾱ exceeds by more than
  :data:`LEADING_EXCESS` the ᾱ at ``T − ⌈T/N⌉`` (where a full stride below ``T`` would start)
  warns, naming the ``N`` dividing ``T`` nearby. Few steps (``N = 2, 3, 5``) start high as well,
  but by their stride: the documented few-step bias.
* ``"trailing"``: ``t = round(T − kT/N) − 1`` for ``k = 0 … N − 1``, i.e. ``T − 1, …,
  T/N − 1`` (ties to even; diffusers' own list, summed in floating point, gives ``N + 1``
  timesteps ending at −1 for some ``N``, e.g. 61, and one less at some ties, e.g. 936 for
  937.5 with ``N = 48``), starting where ᾱ is 2e-9, so
  ``N(0, I)`` is the right start and an exact noise estimate gives unbiased samples for any
  ``N``. But the first step turns an error δ of the noise estimate into an error of about
  ``δ √(ᾱ_{t'}/ᾱ_{T−1})`` of ``z_{t'}`` (1.6e3 δ for ``N = 20``, 6e3 δ for ``N = 5``), and a
  trained ε-predictor's error at ``t = T − 1`` is far above the 1e-4 this would need (an MLP
  trained on 1-D data of mean 0.5, error 0.09 there, samples a mean of 33 with ``N = 20``,
  η = 0; 0.59 with leading steps). Use it with a noise estimate exact at ``t = T − 1``.

Coarse steps also narrow the samples, with either spacing. For data ``N(1.5, 0.5²)`` and an
exact noise estimate every step is affine in ``z`` and its noise, so the samples are Gaussian and
their standard deviation follows step by step: 0.432 at PreDiff's defaults (η = 1, ``N = 20``:
14 % too narrow, 25 % of the variance lost), 0.468 for ``N = 50``, 0.482 for 100, 0.492 for 250
and 0.329 for 5; with η = 0 0.464, 0.485, 0.492, 0.497 and 0.383 (leading steps; trailing ones
agree to 0.003 but for η = 0, ``N = 5``: 0.362). The loss falls about as 1/``N``: it is the
discretisation's, on top of any error of the noise estimate, so a few-step ensemble is too
narrow (spread-skill below 1) even with a perfect denoiser.

diffusers is imported on first use (it costs seconds).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

from pdes.checks import positive_int

from ...errors import user_stacklevel

#: The ``beta_schedule`` values a :class:`NoiseSchedule` accepts.
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")
#: The timestep spacings of :meth:`NoiseSchedule.sampling_timesteps`.
SPACINGS = ("leading", "trailing")
LEADING_EXCESS = 0.01
"""How much more ᾱ a leading start may keep than a full stride's start ``T − ⌈T/N⌉`` before
:meth:`NoiseSchedule.sampling_timesteps` warns (``T = 1000``: ``N = 334`` keeps 0.25 more;
``N = 48``, whose ᾱ 8e-3 is near the default ``N = 20``'s 6e-3, keeps 7e-3 more and is silent)."""


def check_spacing(spacing: object) -> str:
    """``spacing`` if it is one of :data:`SPACINGS`, else a ``ValueError`` naming it."""
    if not isinstance(spacing, str) or spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return spacing


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
        object.__setattr__(self, "timesteps", positive_int("timesteps", self.timesteps, 2))
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}"
            )

    def training(self):
        """A diffusers ``DDPMScheduler`` adding noise at training time (``add_noise``); built
        once per schedule (every training step asks for it)."""
        return _ddpm(self.timesteps, self.beta_schedule)

    def add_noise(
        self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The noised ``z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε`` of ``clean`` latents ``z_0`` ``(B, ...)``
        and ``noise`` ε of their shape at integer ``timesteps`` ``(B,)`` in ``[0, T)``: the
        training scheduler's ``add_noise``, in the latents' dtype, the one place this formula
        lives (the denoiser's and the knowledge regressor's losses both noise through it).
        Arguments of another type or shape are refused by name (the range of ``timesteps`` is
        not read: that would synchronise every training step with the device)."""
        for name, value in (("clean", clean), ("noise", noise), ("timesteps", timesteps)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
        if noise.shape != clean.shape:
            raise ValueError(
                f"noise must have the shape of clean {tuple(clean.shape)}, got {tuple(noise.shape)}"
            )
        if timesteps.dtype.is_floating_point or timesteps.dtype.is_complex:
            raise TypeError(f"timesteps must be integers, got {timesteps.dtype}")
        if clean.ndim == 0 or timesteps.shape != clean.shape[:1]:
            raise ValueError(
                f"timesteps must have shape (B,), one per sample of clean (B, ...) "
                f"{tuple(clean.shape)}, got {tuple(timesteps.shape)}"
            )
        return self.training().add_noise(clean, noise, timesteps)

    def sampling(self, steps: int, spacing: str = "leading"):
        """A diffusers ``DDIMScheduler`` on the same ᾱ, its ``timesteps`` set to
        :meth:`sampling_timesteps`. Its own ``step`` goes to ``t − ⌊T/N⌋``, off the trailing
        timesteps when ``N`` does not divide ``T``, in float32:
        :func:`~physml.models.prediff.sampler.ddim_sample` steps to the next listed timestep."""
        from diffusers import DDIMScheduler

        timesteps = self.sampling_timesteps(steps, spacing)
        scheduler = DDIMScheduler(
            num_train_timesteps=self.timesteps,
            beta_schedule=self.beta_schedule,
            prediction_type="epsilon",
            clip_sample=False,
            set_alpha_to_one=True,
            timestep_spacing=spacing,
            steps_offset=0,
        )
        scheduler.set_timesteps(steps)
        scheduler.timesteps = torch.tensor(timesteps)
        return scheduler

    def sampling_timesteps(self, steps: int, spacing: str = "leading") -> list[int]:
        """The timesteps of ``steps = N`` reverse steps spaced ``spacing``, first to last (see
        the module docstring): leading ``k⌊T/N⌋`` for ``k = N − 1 … 0`` (a warning if the first
        is more than a stride short of ``T − 1`` and keeps more than :data:`LEADING_EXCESS` of ᾱ
        beyond a full stride's start), trailing
        ``round(T − kT/N) − 1`` for ``k = 0 … N − 1``."""
        steps = positive_int("steps", steps)
        check_spacing(spacing)
        if steps > self.timesteps:
            raise ValueError(
                f"steps must be <= the {self.timesteps} training timesteps, got {steps}"
            )
        if steps == 1 and spacing == "leading":
            raise ValueError(
                "steps must be >= 2 with spacing='leading' (one leading step is at t = 0 and "
                "returns the starting noise), got 1; or use spacing='trailing'"
            )
        total = self.timesteps
        if spacing == "trailing":
            return [round(total - k * total / steps) - 1 for k in range(steps)]
        leading = [k * (total // steps) for k in reversed(range(steps))]
        alphas = self.alphas_cumprod()
        stride_start = total + (-total // steps)  # T − ⌈T/N⌉
        more_than_a_stride_short = leading[0] < total - 2 * -(-total // steps)
        if more_than_a_stride_short and alphas[leading[0]] - alphas[stride_start] > LEADING_EXCESS:
            self._warn_low_leading_start(steps, leading[0], float(alphas[leading[0]]))
        return leading

    def _warn_low_leading_start(self, steps: int, first: int, alpha: float) -> None:
        total = self.timesteps
        dividing = [count for count in range(2, total + 1) if total % count == 0]
        fewer = [count for count in dividing if count < steps][-1:]
        more = [count for count in dividing if count > steps][:1]
        nearby = " or ".join(str(count) for count in fewer + more)
        warnings.warn(
            f"steps={steps} with spacing='leading' starts at timestep {first} of the {total} "
            f"training timesteps (ᾱ = {alpha:.2g}), not near {total - 1}: {steps} does not "
            f"divide {total}, and the sampler starts from N(0, I) as if no data were left there, "
            f"biasing the samples. Use steps dividing {total} (e.g. {nearby}); "
            "spacing='trailing' starts at the top but suits only a noise estimate exact there",
            stacklevel=user_stacklevel(),
        )

    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t for ``t = 0 … T − 1`` ``(T,)`` float32, diffusers' values."""
        return self.training().alphas_cumprod.cpu().clone()
