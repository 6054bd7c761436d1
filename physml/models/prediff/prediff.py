"""PreDiff (NeurIPS 2023): a latent diffusion forecaster whose sampler offers the sampler seam.

``PreDiff(autoencoder, denoiser)``: context frames ``(B, T_in, C, H, W)`` are encoded frame by
frame, normalised per latent channel, and a DDIM sampler (:func:`.ddim_sample`) draws target
latents ``(T_out, c, h, w)`` conditioned on them; the decoder turns them into frames. ``sample``
(and ``forward``) returns an :class:`~physml.outputs.Ensemble` of frames
``(members, B, T_out, C, H, W)`` and calls ``guidance(z_t, step)`` at every reverse step, so
``physml.constrain(prediff, KnowledgeControl(...))`` steers it (the Sampler protocol).

Training is two runs of :class:`physml.training.Trainer`, which
:func:`physml.training.train_prediff` makes (each in its own folder, resumed on a rerun)::

    train_prediff(prediff, pairs, autoencoder=config1, denoiser=config2, out=dir)

It runs, in effect::

    Trainer(prediff.autoencoder, autoencoder_loss, config1, out=dir / "autoencoder",
            model_config=prediff.autoencoder.config).fit(pairs)
    prediff.calibrate(videos)                   # the pairs' frames: latent mean/std;
                                                # freezes the autoencoder
    latents = LatentPairs(prediff, pairs)       # encoded once: the autoencoder is frozen
    Trainer(prediff, diffusion_loss, config2, out=dir / "denoiser",
            model_config=prediff.config, after_step=update_ema).fit(latents)

``pairs`` yields ``(context, target)`` frames (e.g. :class:`physml.data.windows.ForecastDataset`).
The EMA copy of the denoiser (``prediff.ema``, a ``torch.optim.swa_utils.AveragedModel``) is a
submodule, so the Trainer checkpoints and resumes it; sampling uses it once it has been updated.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from pdes.checks import positive_int

from ..._checks import flag
from ...outputs import Ensemble
from ..baselines import check_sequence
from .autoencoder import FrameAutoencoder
from .denoisers import ConvDenoiser, CuboidDenoiser, Denoiser
from .sampler import Guidance, check_eta, ddim_sample
from .schedule import NoiseSchedule, check_spacing


def _seed_generator(seed: int | torch.Generator, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"seed must be a non-negative int or a torch.Generator, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def _ema_update(
    decay: float, ema_params: list[torch.Tensor], current_params: list[torch.Tensor], count: object
) -> None:
    """``torch.optim.swa_utils.get_ema_multi_avg_fn(decay)``'s in-place ``ema ← decay · ema +
    (1 − decay) · current``, from a module-level function (bound with :func:`functools.partial`)
    rather than torch's local one, so that a PreDiff pickles and ``torch.save`` takes it whole."""
    get_ema_multi_avg_fn(decay)(ema_params, current_params, count)


class PreDiff(nn.Module):
    """Autoencoder + latent denoiser + its EMA copy (see the module docstring).

    Args:
        autoencoder: a :class:`FrameAutoencoder` (frames ↔ latents).
        denoiser: a :class:`~physml.models.prediff.denoisers.Denoiser` on the autoencoder's
            latents, e.g. :class:`ConvDenoiser` or :class:`CuboidDenoiser`.
        schedule: the diffusion's :class:`NoiseSchedule` (cosine, T = 1000 by default).
        ema_decay: decay of the denoiser's exponential moving average.
    """

    def __init__(
        self,
        autoencoder: FrameAutoencoder,
        denoiser: nn.Module,
        schedule: NoiseSchedule | None = None,
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__()
        if not isinstance(autoencoder, FrameAutoencoder):
            raise TypeError(f"autoencoder must be a FrameAutoencoder, got {type(autoencoder)}")
        if not isinstance(denoiser, nn.Module) or not isinstance(denoiser, Denoiser):
            raise TypeError(
                "denoiser must be an nn.Module with context_frames, target_frames and "
                f"latent_shape (the Denoiser protocol), got {type(denoiser).__name__}"
            )
        if denoiser.latent_shape[0] != autoencoder.latent_channels:
            raise ValueError(
                f"denoiser works on {denoiser.latent_shape[0]} latent channels, the autoencoder "
                f"makes {autoencoder.latent_channels}"
            )
        if not isinstance(ema_decay, float) or not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be a float in (0, 1), got {ema_decay!r}")
        if schedule is not None and not isinstance(schedule, NoiseSchedule):
            raise TypeError(
                "schedule must be a NoiseSchedule (e.g. NoiseSchedule(1000, 'linear')) or None, "
                f"got {schedule!r}"
            )
        self.schedule = schedule or NoiseSchedule()
        self.autoencoder, self.denoiser = autoencoder, denoiser
        self.ema = AveragedModel(
            denoiser, multi_avg_fn=functools.partial(_ema_update, ema_decay), use_buffers=True
        )
        self.ema.requires_grad_(False)
        c = autoencoder.latent_channels
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))
        self.config = dict(
            autoencoder=autoencoder.config,
            denoiser=getattr(denoiser, "config", type(denoiser).__name__),
            timesteps=self.schedule.timesteps,
            beta_schedule=self.schedule.beta_schedule,
            ema_decay=ema_decay,
        )

    @classmethod
    def from_config(cls, config: dict) -> PreDiff:
        """A fresh (untrained) PreDiff built from ``config`` (what a PreDiff's ``config`` holds)."""
        options = dict(config["denoiser"])
        kinds = {"conv": ConvDenoiser, "cuboid": CuboidDenoiser}
        kind = options.pop("kind", None)
        if kind not in kinds:
            raise ValueError(
                f"config['denoiser']['kind'] must be one of {sorted(kinds)}, got {kind!r}"
            )
        return cls(
            FrameAutoencoder(**config["autoencoder"]),
            kinds[kind](**options),
            NoiseSchedule(config["timesteps"], config["beta_schedule"]),
            config["ema_decay"],
        )

    # ------------------------------------------------------------------------------ latents

    @property
    def context_frames(self) -> int:
        return self.denoiser.context_frames

    @property
    def target_frames(self) -> int:
        return self.denoiser.target_frames

    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean[:, None, None], self.latent_std[:, None, None]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(..., C, H, W)`` → normalised latents ``(..., c, h, w)``."""
        mean, std = self._scale()
        return (self.autoencoder.encode(frames) - mean) / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(..., c, h, w)`` → frames ``(..., C, H, W)``; differentiable."""
        mean, std = self._scale()
        return self.autoencoder.decode(latents * std + mean)

    @torch.no_grad()
    def calibrate(self, frames: torch.Tensor, batch: int = 64) -> None:
        """Set the per-channel latent mean and std from frames ``(N, T, C, H, W)`` and freeze
        the autoencoder (stage 2 trains the denoiser on these latents)."""
        batch = positive_int("batch", batch)
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a tensor (N, T, C, H, W), got {type(frames).__name__}")
        self.autoencoder.eval()
        device = self.latent_mean.device
        latents = torch.cat(
            [self.autoencoder.encode(part.to(device)) for part in frames.split(batch)]
        )
        per_channel = latents.transpose(0, -3).reshape(self.autoencoder.latent_channels, -1)
        self.latent_mean.copy_(per_channel.mean(1))
        self.latent_std.copy_(per_channel.std(1).clamp_min(1e-6))
        self.autoencoder.requires_grad_(False)

    def check_context(self, context: object) -> torch.Tensor:
        """``context`` checked for :meth:`sample` and returned unchanged: a finite floating-point
        tensor ``(B, T_in, C, H, W)`` with this model's ``T_in`` context frames and ``C``
        channels, frames of the size its latents decode to; else a ``TypeError``/``ValueError``
        naming ``context``."""
        ae = self.autoencoder
        context = check_sequence("context", context, ae.channels, self.context_frames)
        _, h, w = self.denoiser.latent_shape
        if context.shape[-2:] != (h * ae.downsample, w * ae.downsample):
            raise ValueError(
                f"context must have frames of {h * ae.downsample} × {w * ae.downsample} pixels "
                f"(latents {h} × {w}), got {tuple(context.shape)}"
            )
        return context

    # ----------------------------------------------------------------------------- sampling

    def forward(self, context: torch.Tensor, **options: object) -> Ensemble:
        """:meth:`sample` without guidance."""
        return self.sample(context, **options)

    def sample(
        self,
        context: torch.Tensor,
        guidance: Guidance | None = None,
        members: int = 8,
        steps: int = 20,
        eta: float = 1.0,
        seed: int | torch.Generator = 0,
        use_ema: bool | None = None,
        spacing: str = "leading",
        progress: bool = True,
    ) -> Ensemble:
        """``members`` forecasts ``(members, B, T_out, C, H, W)`` of context ``(B, T_in, C, H, W)``.

        ``steps`` DDIM steps with noise level ``eta`` (0: deterministic given the initial noise)
        at ``spacing`` ``"leading"`` or ``"trailing"`` timesteps (see
        :mod:`~physml.models.prediff.schedule`: trailing suits only a noise estimate exact at
        ``t = T − 1``); ``guidance(z_t, step)`` as in :func:`.ddim_sample` (latents ``(members,
        B, T_out, c, h, w)``, ``step.decode`` this model's :meth:`decode`); ``seed`` an int or a
        ``torch.Generator``; ``use_ema`` (default: once the EMA has been updated) samples with
        the EMA denoiser. The latents are drawn in the denoiser's dtype. One generator draws the
        noise of the whole ``(members, B, …)`` batch, so at a fixed ``seed`` a context's samples
        depend on the batch it is sampled in; for samples that do not, sample each context alone
        with its own seed. ``progress`` shows a bar of the DDIM steps (:func:`.ddim_sample`); it
        does not change the samples.
        """
        context = self.check_context(context)
        members = positive_int("members", members, 2)
        steps = positive_int("steps", steps)
        eta = check_eta(eta)
        check_spacing(spacing)
        progress = flag("progress", progress)
        if guidance is not None and not callable(guidance):
            raise TypeError(f"guidance must be callable(z_t, step), got {type(guidance)}")
        generator = _seed_generator(seed, context.device)
        if use_ema is None:
            use_ema = int(self.ema.n_averaged) > 0
        denoiser = self.ema.module if use_ema else self.denoiser
        was_training = self.training
        self.eval()
        try:
            frames = self._sample(
                context, guidance, members, steps, eta, generator, denoiser, spacing, progress
            )
            return Ensemble(frames)
        finally:
            self.train(was_training)

    def _sample(
        self, context, guidance, members, steps, eta, generator, denoiser, spacing, progress
    ) -> torch.Tensor:
        with torch.no_grad():
            context_latents = self.encode(context)
        batch = context.shape[0]
        shape = (members, batch, self.target_frames, *self.denoiser.latent_shape)
        flat_context = context_latents.expand(members, *context_latents.shape).flatten(0, 1)

        def predict(z_t: torch.Tensor, timestep: int) -> torch.Tensor:
            t = torch.full((members * batch,), timestep, dtype=torch.long, device=z_t.device)
            return denoiser(z_t.flatten(0, 1), t, flat_context).reshape(z_t.shape)

        latents = ddim_sample(
            predict,
            shape,
            self.schedule,
            generator,
            steps,
            eta,
            guidance,
            self.decode,
            context.device,
            spacing,
            next(denoiser.parameters(), self.latent_mean).dtype,
            progress,
        )
        with torch.no_grad():
            return self.decode(latents)


class LatentPairs(Dataset):
    """``(context, target)`` latents ``(T, c, h, w)`` of a dataset of frame pairs, encoded once
    by ``prediff`` on its device and kept on the CPU (normalised; for :func:`diffusion_loss`),
    ``batch`` items of ``pairs`` at a time. Keeps the source's ``attributes``."""

    def __init__(self, prediff: PreDiff, pairs: Dataset, batch: int = 64) -> None:
        batch = positive_int("batch", batch)
        device = prediff.latent_mean.device
        contexts, targets = [], []

        def encoded(frames: list[torch.Tensor]) -> torch.Tensor:
            return prediff.encode(torch.stack(frames).to(device)).cpu()

        with torch.no_grad():
            for start in range(0, len(pairs), batch):
                items = [pairs[i] for i in range(start, min(start + batch, len(pairs)))]
                contexts.append(encoded([item[0] for item in items]))
                targets.append(encoded([item[1] for item in items]))
        self.context, self.target = torch.cat(contexts), torch.cat(targets)
        self.attributes = dict(getattr(pairs, "attributes", None) or {})

    def __len__(self) -> int:
        return self.context.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.context[i], self.target[i]

    def item_rows(self) -> tuple[tuple[torch.Tensor, torch.Tensor], None]:
        """``((context, target), None)``: item ``i`` is row ``i`` of each, so the Trainer
        indexes a batch, and the checkpoint's fingerprint hashes the items, in blocks."""
        return (self.context, self.target), None


def diffusion_loss(model: nn.Module, batch: object) -> torch.Tensor:
    """Stage-2 loss for the Trainer: ε-prediction MSE at timesteps uniform in ``[0, T)``.

    ``model`` is the :class:`PreDiff` whose denoiser trains; ``batch`` is ``(context, target)``
    latents ``(B, T, c, h, w)`` (:class:`LatentPairs`); the timesteps and noise come from torch's
    global generator (the Trainer seeds and resumes it).
    """
    if isinstance(model, DistributedDataParallel):
        raise TypeError(
            "diffusion_loss trains PreDiff in one process (it calls the denoiser directly, which "
            "DistributedDataParallel would not synchronise)"
        )
    if not isinstance(model, PreDiff):
        raise TypeError(f"model must be a PreDiff, got {type(model).__name__}")
    context, target = batch
    t = torch.randint(0, model.schedule.timesteps, (target.shape[0],), device=target.device)
    noise = torch.randn_like(target)
    noisy = model.schedule.add_noise(target, noise, t)
    return (model.denoiser(noisy, t, context) - noise).square().mean()


def update_ema(model: nn.Module, step: int) -> None:
    """The Trainer's ``after_step``: fold the denoiser's weights into its EMA copy, for the
    :class:`PreDiff` ``model`` after every ``step``."""
    model.ema.update_parameters(model.denoiser)
