"""Every model of ``prediff-nbody``, each one Trainer run in its own folder (a rerun resumes):
the autoencoder, the denoiser, the knowledge regressor, the energy judge and the guide."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ...data.nbody import NBodyDigits
from ...io import atomic_write_text, strict_json
from ...models.energy_judge import EnergyJudge, standardise
from ...models.knowledge_regressor import KnowledgeRegressor, NoisyLatentLoss
from ...models.prediff import (
    ConvDenoiser,
    CuboidDenoiser,
    FrameAutoencoder,
    LatentPairs,
    PreDiff,
    autoencoder_loss,
    diffusion_loss,
    update_ema,
)
from ...training import TrainConfig, Trainer, TrainReport, train_prediff
from ...training.checkpoint import REMEDY
from ...training.families import mse_loss
from .. import offset_seed, recorded_cost
from .data import DENOISERS, Scale, clean_windows

JUDGE_SEED_OFFSET = 7919  # the judge's weights and training order share no seed with the rest
GUIDE_SEED_OFFSET = 104729  # nor do the guiding frame regressor's
#: The file beside a checkpoint holding its finished training's CPU seconds.
COST_FILE = "train_s.json"


@dataclass
class Trained:
    """A trained model and its training cost: ``train_s`` CPU seconds of this process (scaled
    to all ``steps`` when resumed; a reload reads what the finishing run left in
    :data:`~physml.tasks.prediff.training.COST_FILE`, NaN where it left none or a damaged one),
    ``final_loss`` the mean of the last 20 step losses."""

    model: nn.Module
    steps: int
    train_s: float
    final_loss: float


def fit(
    model: nn.Module,
    loss: Callable,
    data: Dataset,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    out: Path,
    quiet: bool,
    after_step=None,
    model_config: dict | None = None,
    device: str = "cpu",
    remedy: str = REMEDY,
) -> Trained:
    """One Trainer run (cosine lr, resumed from ``out``) on ``device``, timed in CPU seconds of
    this process on the CPU and in wall seconds on an accelerator; ``remedy``: where else to
    train, in a refusal to resume ``out`` (the default names physml's ``--out``)."""
    trainer = Trainer(
        model,
        loss,
        stage_config(steps, batch, lr, seed, device),
        out=out,
        model_config=model_config,
        quiet=quiet,
        after_step=after_step,
        remedy=remedy,
    )
    return timed(trainer, data)


def stage_config(steps: int, batch: int, lr: float, seed: int, device: str = "cpu") -> TrainConfig:
    """The settings of every run :func:`fit` makes: cosine lr, a checkpoint every 200 steps (or
    at the end of a shorter run)."""
    return TrainConfig(
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
        checkpoint_every=max(1, min(200, steps)),
        device=device,
    )


def timed(trainer: Trainer, data: Dataset) -> Trained:
    """``trainer.fit(data)`` timed in CPU seconds of this process on the CPU and in wall seconds
    on an accelerator, its cost kept beside the checkpoint in ``trainer.out``
    (:data:`~physml.tasks.prediff.training.COST_FILE`, read back when a finished run is
    reloaded)."""
    steps, device = trainer.config.steps, trainer.config.device
    clock = time.process_time if str(device) == "cpu" else time.perf_counter
    started = clock()
    report = trainer.fit(data)
    spent = clock() - started
    done = steps - report.resumed_from
    cost = trainer.out / COST_FILE
    if done:
        train_s = spent * steps / done
        atomic_write_text(cost, strict_json({"steps": steps, "train_s": train_s}))
    else:  # reloaded at its last step: the cost the finishing run measured, if it left it
        train_s = recorded_cost(cost, steps=steps)
    return Trained(
        trainer.model, steps, train_s, float(sum(report.losses[-20:]) / len(report.losses[-20:]))
    )


class TimedStages:
    """A ``run_stage`` for :func:`physml.training.train_prediff`: each stage :func:`timed`, its
    :class:`Trained` kept in ``trained`` by stage name (``autoencoder``, ``denoiser``)."""

    def __init__(self) -> None:
        self.trained: dict[str, Trained] = {}

    def __call__(self, stage: str, trainer: Trainer, data: Dataset) -> TrainReport:
        self.trained[stage] = timed(trainer, data)
        return trainer.report_


def autoencoder_frames(data: NBodyDigits) -> TensorDataset:
    """Every frame of ``data`` on its own, ``(1, 1, H, W)`` (a one-frame video), a view."""
    return TensorDataset(data.frames.reshape(-1, 1, *data.frames.shape[2:]))


def new_autoencoder(scale: Scale, seed: int) -> FrameAutoencoder:
    """A fresh frame autoencoder of ``scale``, weights from ``seed``."""
    torch.manual_seed(seed)
    return FrameAutoencoder(1, scale.latent_channels, scale.downsample, scale.autoencoder_width)


def train_autoencoder(
    scale: Scale, train: NBodyDigits, out: Path, seed: int, quiet: bool, device: str = "cpu"
) -> Trained:
    """Stage 1: the frame autoencoder on every training frame."""
    autoencoder = new_autoencoder(scale, seed)
    return fit(
        autoencoder,
        autoencoder_loss,
        autoencoder_frames(train),
        scale.autoencoder_steps,
        scale.autoencoder_batch,
        scale.lr,
        seed,
        out,
        quiet,
        model_config=autoencoder.config,
        device=device,
    )


def build_prediff(scale: Scale, kind: str, autoencoder: FrameAutoencoder, seed: int) -> PreDiff:
    """PreDiff with the ``kind`` denoiser (``conv`` or ``cuboid``) on ``autoencoder``'s latents."""
    if kind not in DENOISERS:
        raise ValueError(f"kind must be one of {DENOISERS}, got {kind!r}")
    latent = autoencoder.latent_shape(scale.size, scale.size)
    torch.manual_seed(seed)
    if kind == "conv":
        denoiser = ConvDenoiser(scale.t_in, scale.t_out, latent, **scale.conv)
    else:
        denoiser = CuboidDenoiser(scale.t_in, scale.t_out, latent, **scale.cuboid)
    return PreDiff(autoencoder, denoiser, ema_decay=scale.ema_decay[kind])


def forecast_pairs(data: NBodyDigits, t_in: int) -> TensorDataset:
    """``(context, target)`` frames of every video (views)."""
    context, target = data.split(t_in)
    return TensorDataset(context, target)


def calibrated(prediff: PreDiff, train: NBodyDigits, t_in: int) -> tuple[PreDiff, LatentPairs]:
    """``prediff`` with latent statistics from the training frames (autoencoder frozen) and the
    training pairs encoded once."""
    prediff.calibrate(train.frames, batch=8)
    return prediff, LatentPairs(prediff, forecast_pairs(train, t_in), batch=8)


def train_denoiser(
    scale: Scale,
    prediff: PreDiff,
    latents: Dataset,
    kind: str,
    out: Path,
    seed: int,
    quiet: bool,
    device: str = "cpu",
) -> Trained:
    """Stage 2: the denoiser (and its EMA copy) on encoded pairs, ``denoiser_steps[kind]``."""
    return fit(
        prediff,
        diffusion_loss,
        latents,
        scale.denoiser_steps[kind],
        scale.denoiser_batch,
        scale.lr,
        seed,
        out,
        quiet,
        after_step=update_ema,
        model_config=prediff.config,
        device=device,
    )


def trained_prediff(
    scale: Scale,
    train: NBodyDigits,
    kind: str,
    work: Path,
    seed: int,
    quiet: bool,
    device: str = "cpu",
) -> tuple[PreDiff, Trained, Trained]:
    """PreDiff with the ``kind`` denoiser, both stages trained by
    :func:`physml.training.train_prediff` in ``work/autoencoder`` and ``work/denoiser``: the
    autoencoder on every training frame, the denoiser on the training pairs, as
    :func:`train_autoencoder`, :func:`calibrated` and :func:`train_denoiser` do one by one; each
    stage :func:`timed`."""
    prediff = build_prediff(scale, kind, new_autoencoder(scale, seed), seed)
    stages = TimedStages()
    train_prediff(
        prediff,
        forecast_pairs(train, scale.t_in),
        autoencoder=stage_config(
            scale.autoencoder_steps, scale.autoencoder_batch, scale.lr, seed, device
        ),
        denoiser=stage_config(
            scale.denoiser_steps[kind], scale.denoiser_batch, scale.lr, seed, device
        ),
        frames=train.frames,
        out=work,
        quiet=quiet,
        calibrate_batch=8,
        latent_batch=8,
        run_stage=stages,
    )
    return prediff, stages.trained["autoencoder"], stages.trained["denoiser"]


def train_regressor(
    scale: Scale,
    prediff: PreDiff,
    latents: LatentPairs,
    train: NBodyDigits,
    out: Path,
    seed: int,
    quiet: bool,
    device: str = "cpu",
) -> Trained:
    """``U_φ(z_t, t)``: the mean energy of the target frames from noisy target latents."""
    energy = train.energy[:, scale.t_in :].mean(1).to(torch.float32)
    offset, spread = standardise(energy)
    torch.manual_seed(seed)
    regressor = KnowledgeRegressor(
        (scale.t_out, *prediff.denoiser.latent_shape),
        hidden=scale.regressor_hidden,
        offset=offset,
        scale=spread,
    )
    loss = NoisyLatentLoss(prediff.schedule)
    config = dict(latent_shape=list(regressor.latent_shape), hidden=scale.regressor_hidden)
    data = TensorDataset(latents.target, energy)
    return fit(
        regressor,
        loss,
        data,
        scale.regressor_steps,
        scale.batch,
        scale.lr,
        seed,
        out,
        quiet,
        model_config=config,
        device=device,
    )


def train_judge(
    scale: Scale, train: NBodyDigits, out: Path, seed: int, quiet: bool, device: str = "cpu"
) -> Trained:
    """The energy judge on clean training windows of ``T_out`` frames (seed
    ``offset_seed(seed, JUDGE_SEED_OFFSET)``, :func:`physml.tasks.offset_seed`)."""
    own = offset_seed(seed, JUDGE_SEED_OFFSET)
    shape = dict(window=3, hidden=scale.judge_hidden, depth=scale.judge_depth)
    config = dict(hidden=scale.judge_hidden, depth=scale.judge_depth, seed=own)
    return _train_energy_cnn(
        scale, train, out, own, quiet, shape, scale.judge_steps, config, device
    )


@dataclass(frozen=True)
class GuideSize:
    """The frame-space energy regressor that guides sampling: an :class:`EnergyJudge` of its own
    shape (``window`` frames, ``hidden`` channels, ``depth`` layers) and seed, ``steps``
    Trainer steps, and the λ of its sweep (normalised knowledge control)."""

    window: int
    hidden: int
    depth: int
    steps: int
    lambdas: tuple = (0.1, 0.3, 1.0)


TOY_GUIDE = GuideSize(window=3, hidden=8, depth=2, steps=30, lambdas=(0.3, 1.0))
"""The task's guiding frame regressor (the benchmark sizes its own)."""


def train_guide(
    scale: Scale,
    guide: GuideSize,
    train: NBodyDigits,
    out: Path,
    seed: int,
    quiet: bool,
    device: str = "cpu",
) -> Trained:
    """The guiding energy regressor on clean training windows (seed
    ``offset_seed(seed, GUIDE_SEED_OFFSET)``; never the judge, whose shape and seed differ)."""
    own = offset_seed(seed, GUIDE_SEED_OFFSET)
    shape = dict(window=guide.window, hidden=guide.hidden, depth=guide.depth)
    return _train_energy_cnn(
        scale, train, out, own, quiet, shape, guide.steps, {**shape, "seed": own}, device
    )


def _train_energy_cnn(scale, train, out, seed, quiet, shape, steps, config, device) -> Trained:
    """An :class:`EnergyJudge` of ``shape`` on clean windows of ``T_out`` frames, standardised
    energies, mean-square loss."""
    data = clean_windows(train, scale.t_out)
    offset, spread = standardise(data.tensors[1])
    model = EnergyJudge(1, **shape, offset=offset, scale=spread, seed=seed)
    return fit(
        model, mse_loss, data, steps, scale.batch, scale.lr, seed, out, quiet, None, config, device
    )
