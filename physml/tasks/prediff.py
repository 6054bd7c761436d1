"""PreDiff with knowledge control on N-body digits: energy kept, intensity asked for.

Data: N-body digit videos (:func:`physml.data.nbody_digits`) with the energy-conserving generator
(:data:`~physml.data.nbody.ENERGY_CONSERVING`), lengths scaled to the frame size
(:func:`generator_settings`); ``T_in`` context frames → ``T_out`` target frames; every frame
carries the simulator's energy. Models, each trained by :class:`physml.training.Trainer` into its
own folder (a rerun resumes): the frame autoencoder, PreDiff's denoiser on its latents (EMA), the
frame-space energy regressor that guides (clean frames, its own seed), the energy judge (clean
frames only, its own seed; never guides) and, for the benchmark only, the article's knowledge
regressor ``U_φ(z_t, t)`` (the target frames' mean energy from noisy target latents). The task's
PreDiff-KC is ``constrain(prediff, KnowledgeControl(guide, E₀, λ, on="frames"))`` with ``E₀`` the
true energy of the context (mean over its frames): the route that cuts the judged error in
``benchmarks/prediff_nbody.py``, where the latent regressor barely moves it. Intensity:
``KnowledgeControl`` on the decoded frames' mean intensity, asked ``μ_τ + n σ_τ`` (statistics of
the test targets).

This module holds the building blocks ``benchmarks/prediff_nbody.py`` shares (data, training
helpers, :func:`evaluate_ensemble`, the figures) and the toy-size task ``prediff-nbody``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .. import metrics
from .._io import atomic_path, atomic_write_text
from ..constraints import KnowledgeControl, constrain
from ..data.nbody import ENERGY_CONSERVING, NBodyDigits, nbody_digits
from ..metrics import bootstrap_se, spread_skill
from ..models.energy_judge import EnergyJudge, standardise
from ..models.forecasting import score_forecast
from ..models.knowledge_regressor import KnowledgeRegressor, NoisyLatentLoss
from ..models.prediff import (
    ConvDenoiser,
    CuboidDenoiser,
    FrameAutoencoder,
    LatentPairs,
    PreDiff,
    autoencoder_loss,
    diffusion_loss,
    update_ema,
)
from ..training import TrainConfig, Trainer
from ..training.families import mse_loss
from . import Context, Row, Task, register
from .figures import frame_strip, save_figure

NAME = "prediff-nbody"
DENOISERS = ("conv", "cuboid")
JUDGE_SEED_OFFSET = 7919  # the judge's weights and training order share no seed with the rest
GUIDE_SEED_OFFSET = 104729  # nor do the guiding frame regressor's
COST_FILE = "train_s.json"  # a finished training's CPU seconds, beside its checkpoint
REFERENCE_SIZE = 64  # the canvas the generator's default lengths are set for


@dataclass(frozen=True)
class Scale:
    """Sizes of one run. Training lengths are Trainer steps (a CPU budget fixed in advance);
    ``denoiser_steps`` per denoiser kind. ``members`` × ``contexts`` are scored for the
    ``prediff`` / ``prediff-kc`` rows, ``sweep_*`` for the λ sweep (validation videos) and
    ``intensity_*`` for the intensity rows; ``ema_decay`` per denoiser kind (about 1 / steps
    or less, so the EMA forgets the initial weights)."""

    size: int
    t_in: int
    t_out: int
    train: int
    validation: int
    test: int
    latent_channels: int
    downsample: int
    autoencoder_width: int
    autoencoder_steps: int
    autoencoder_batch: int
    conv: dict
    cuboid: dict
    denoiser_steps: dict
    denoiser_batch: int
    regressor_hidden: int
    regressor_steps: int
    judge_hidden: int
    judge_depth: int
    judge_steps: int
    batch: int
    lr: float
    members: int
    contexts: int
    sweep_members: int
    sweep_contexts: int
    intensity_members: int
    intensity_contexts: int
    ddim_steps: int
    lambdas: tuple = (0.3, 1.0, 3.0, 10.0, 30.0)
    intensity_lambdas: tuple = (1.0, 10.0, 100.0)
    intensity_n: tuple = (-2, 0, 2, 4)
    sample_batch: int = 64
    ema_decay: dict = field(default_factory=lambda: {"conv": 0.999, "cuboid": 0.995})
    extra: dict = field(default_factory=dict)

    def setup(self) -> dict:
        """The scale as plain JSON values (what a cached stage is checked against)."""
        return json.loads(json.dumps(asdict(self)))


TOY = Scale(
    size=16,
    t_in=4,
    t_out=4,
    train=32,
    validation=4,
    test=8,
    latent_channels=2,
    downsample=2,
    autoencoder_width=8,
    autoencoder_steps=40,
    autoencoder_batch=8,
    conv=dict(widths=(8, 16)),
    cuboid=dict(dim=8, depth=(1, 1), num_heads=2),
    denoiser_steps={"conv": 30, "cuboid": 6},
    denoiser_batch=8,
    regressor_hidden=8,
    regressor_steps=30,
    judge_hidden=8,
    judge_depth=2,
    judge_steps=30,
    batch=8,
    lr=2e-3,
    members=4,
    contexts=8,
    sweep_members=2,
    sweep_contexts=4,
    intensity_members=2,
    intensity_contexts=4,
    ddim_steps=5,
    lambdas=(1.0, 10.0),
    intensity_lambdas=(10.0, 100.0),
    ema_decay={"conv": 0.9, "cuboid": 0.9},
)
"""Seconds of training per model: a smoke run, not a forecaster."""

SIZES = {"toy": TOY, "full": TOY}
"""The task's sizes; ``full`` runs ``benchmarks/prediff_nbody.py`` (hours), not this task."""


# ------------------------------------------------------------------------------------------ data


def generator_settings(size: int) -> dict[str, object]:
    """:func:`~physml.data.nbody_digits` settings for a ``size``-pixel canvas: the energy-
    conserving integrator, and the 64² set-up's lengths (speeds, softening, G) scaled by
    ``size / 64`` so sprites move as far, relative to the frame, as on the 64² canvas."""
    factor = size / REFERENCE_SIZE
    return dict(
        speed=(0.5 * factor, 1.5 * factor),
        softening=10.0 * factor,
        g=0.05 * factor,
        **ENERGY_CONSERVING,
    )


def videos(scale: Scale, seed: int) -> dict[str, NBodyDigits]:
    """``train``, ``validation`` (training handwriting, fresh trajectories) and ``test``
    (disjoint handwriting) videos of ``T_in + T_out`` frames."""

    def make(count: int, offset: int, split: str) -> NBodyDigits:
        return nbody_digits(
            count,
            seed=seed + offset,
            frames=scale.t_in + scale.t_out,
            size=scale.size,
            split=split,
            **generator_settings(scale.size),
        )

    return {
        "train": make(scale.train, 0, "train"),
        "validation": make(scale.validation, 2, "train"),
        "test": make(scale.test, 1, "test"),
    }


def context_energy(data: NBodyDigits, t_in: int) -> torch.Tensor:
    """``E₀`` ``(N,)`` float32: the simulator's energy of each context (mean over its frames)."""
    return data.energy[:, :t_in].mean(1).to(torch.float32)


def energy_drift(data: NBodyDigits) -> float:
    """Largest ``|E_t − E_0| / |E_0|`` over frames and videos (how well the data conserve)."""
    energy = data.energy
    return float(((energy - energy[:, :1]).abs() / energy[:, :1].abs()).max())


def clean_windows(data: NBodyDigits, length: int) -> TensorDataset:
    """Consecutive windows of ``length`` frames ``(length, 1, H, W)`` and their energies
    ``(length,)`` float32, ``floor(T / length)`` per video: the judge's training data."""
    count = data.frames.shape[1] // length
    frames = data.frames[:, : count * length]
    windows = frames.reshape(-1, length, *frames.shape[2:])
    energies = data.energy[:, : count * length].reshape(-1, length).to(torch.float32)
    return TensorDataset(windows, energies)


class FrameIntensity:
    """The closed-form quantity of intensity control: a forecast's mean pixel value in units of
    ``σ`` about ``μ``, ``(mean(frames) − μ) / σ`` for frames ``(N, T, C, H, W)`` → ``(N,)``."""

    def __init__(self, mean: float, std: float) -> None:
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std!r}")
        self.mean, self.std = float(mean), float(std)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return (frames.mean((1, 2, 3, 4)) - self.mean) / self.std


def mean_intensity(frames: torch.Tensor) -> torch.Tensor:
    """Mean pixel value of each video ``(..., T, C, H, W)`` → ``(...)`` float64."""
    return frames.double().mean((-4, -3, -2, -1))


# -------------------------------------------------------------------------------------- training


@dataclass
class Trained:
    """A trained model and its training cost: ``train_s`` CPU seconds of this process (scaled
    to all ``steps`` when resumed; a reload reads what the finishing run left in
    :data:`COST_FILE`), ``final_loss`` the mean of the last 20 step losses."""

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
) -> Trained:
    """One Trainer run (cosine lr, resumed from ``out``) on ``device``, timed in CPU seconds of
    this process on the CPU and in wall seconds on an accelerator."""
    config = TrainConfig(
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
        checkpoint_every=max(1, min(200, steps)),
        device=device,
    )
    trainer = Trainer(
        model, loss, config, out=out, model_config=model_config, quiet=quiet, after_step=after_step
    )
    clock = time.process_time if str(device) == "cpu" else time.perf_counter
    started = clock()
    report = trainer.fit(data)
    spent = clock() - started
    done = steps - report.resumed_from
    cost = Path(out) / COST_FILE
    if done:
        train_s = spent * steps / done
        atomic_write_text(cost, json.dumps({"steps": steps, "train_s": train_s}) + "\n")
    else:  # reloaded at its last step: the cost the finishing run measured, if it left it
        saved = json.loads(cost.read_text()) if cost.exists() else {}
        train_s = float(saved.get("train_s", 0.0)) if saved.get("steps") == steps else 0.0
    return Trained(
        model, steps, train_s, float(sum(report.losses[-20:]) / len(report.losses[-20:]))
    )


def autoencoder_frames(data: NBodyDigits) -> TensorDataset:
    """Every frame of ``data`` on its own, ``(1, 1, H, W)`` (a one-frame video), a view."""
    return TensorDataset(data.frames.reshape(-1, 1, *data.frames.shape[2:]))


def train_autoencoder(
    scale: Scale, train: NBodyDigits, out: Path, seed: int, quiet: bool, device: str = "cpu"
) -> Trained:
    """Stage 1: the frame autoencoder on every training frame."""
    torch.manual_seed(seed)
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
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
    loss = NoisyLatentLoss(prediff.schedule.alphas_cumprod())
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
    """The energy judge on clean training windows of ``T_out`` frames (seed ``seed +``
    :data:`JUDGE_SEED_OFFSET`)."""
    own = seed + JUDGE_SEED_OFFSET
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
    """The guiding energy regressor on clean training windows (seed ``seed +``
    :data:`GUIDE_SEED_OFFSET`; never the judge, whose shape and seed differ)."""
    own = seed + GUIDE_SEED_OFFSET
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


# ------------------------------------------------------------------------------------ evaluation


@dataclass
class EnsembleForecast:
    """Members ``(M, N, T_out, 1, H, W)`` of ``N`` contexts and the sampling time (s)."""

    samples: torch.Tensor
    seconds: float


def sample(
    model: nn.Module,
    context: torch.Tensor,
    members: int,
    steps: int,
    seed: int,
    batch: int = 64,
    targets: Callable[[slice], list] | None = None,
    keep: Path | None = None,
    reverse: bool = False,
) -> EnsembleForecast:
    """``model(context, members=, steps=, seed=)`` (a PreDiff or a constrained one) over chunks
    of about ``batch / members`` contexts; ``targets(chunk)`` gives the per-call constraints
    (``with_target``) of each chunk. ``keep``: a folder where each chunk's samples and seconds
    are written as they come (``<index>.pt``) and read back on a rerun, so a killed run resumes
    at the chunk it stopped in; ``reverse`` works through the chunks last first (the same
    result), so a second process sharing ``keep`` meets the first in the middle. Each chunk
    runs on the model's device; the samples come back on the CPU."""
    per_call = max(1, batch // members)
    starts = list(range(0, len(context), per_call))
    device = _device_of(model)
    keep = None if keep is None else Path(keep)
    parts: list[torch.Tensor | None] = [None] * len(starts)
    seconds = 0.0
    for index in reversed(range(len(starts))) if reverse else range(len(starts)):
        stored = None if keep is None else keep / f"{index}.pt"
        chunk = slice(starts[index], starts[index] + per_call)
        if stored is not None and stored.exists():
            saved = torch.load(stored, weights_only=True)
            expected = (members, len(range(*chunk.indices(len(context)))))
            if tuple(saved["samples"].shape[:2]) != expected:
                raise ValueError(
                    f"keep: {str(stored)!r} holds samples of shape "
                    f"{tuple(saved['samples'].shape)}, expected (members, contexts) = {expected} "
                    "for this call; it comes from another call: use another keep folder"
                )
            parts[index] = saved["samples"]
            seconds += float(saved["seconds"])
            continue
        options = dict(members=members, steps=steps, seed=seed + index)
        if targets is not None:
            options["constraints"] = targets(chunk)
        started = time.perf_counter()
        parts[index] = model(context[chunk].to(device), **options).samples.cpu()
        taken = time.perf_counter() - started
        seconds += taken
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(stored) as temporary:
                torch.save(
                    {"samples": parts[index], "seconds": torch.tensor(taken, dtype=torch.float64)},
                    temporary,
                )
    return EnsembleForecast(torch.cat(parts, dim=1), seconds)


def _device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer; the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def evaluate_ensemble(
    forecast: EnsembleForecast,
    truth: torch.Tensor,
    energy0: torch.Tensor,
    judge: nn.Module,
    judge_floor: float,
    seed: int = 0,
) -> dict:
    """The columns of a forecast row: ``mse``, ``mae``, ``ssim`` of the ensemble mean (frame
    sums, [0, 1] scale), ``mse_member`` / ``ssim_member`` of member 0, ``crps`` (plain ensemble
    CRPS summed over a frame's pixels: the MAE for one member), ``spread_skill``,
    ``energy_error`` (judge, mean over members and contexts) with its bootstrap ``_se`` over
    contexts, ``energy_per_lead`` ``|E_judge − E₀|``, ``fwd_ms`` per context."""
    samples = forecast.samples
    if isinstance(judge, nn.Module):
        judge.eval()
    mean = samples.mean(0)
    ensemble, member = score_forecast(mean, truth), score_forecast(samples[0], truth)
    crps = torch.cat(  # per video and frame, 32 videos at a time (the sort copies the members)
        [
            metrics.crps_ensemble(part.double(), target.double(), reduction="none").sum(
                (-3, -2, -1)
            )
            for part, target in zip(samples.split(32, 1), truth.split(32), strict=True)
        ]
    )
    errors = metrics.energy_error(samples, energy0, judge, reduction="none")  # (M, N)
    with torch.no_grad():
        judged = judge(samples.flatten(0, 1)).double().reshape(*samples.shape[:3])
    per_lead = (judged - energy0.double()[None, :, None]).abs().mean((0, 1))
    return {
        "mse": ensemble.mse,
        "mae": ensemble.mae,
        "ssim": ensemble.ssim,
        "mse_member": member.mse,
        "ssim_member": member.ssim,
        "crps": float(crps.mean()),
        "spread_skill": spread_skill(samples, truth) if samples.shape[0] > 1 else 0.0,
        "energy_error": float(errors.mean()),
        "energy_error_se": bootstrap_se(errors.mean(0), seed),
        "judge_floor": judge_floor,
        "energy_per_lead": per_lead.tolist(),
        "fwd_ms": 1000.0 * forecast.seconds / samples.shape[1],
    }


def evaluate_deterministic(
    prediction: torch.Tensor,
    truth: torch.Tensor,
    energy0: torch.Tensor,
    judge: nn.Module,
    judge_floor: float,
    seconds: float,
    seed: int = 0,
) -> dict:
    """:func:`evaluate_ensemble` of a one-member forecast ``(N, T, 1, H, W)`` (persistence, a
    deterministic forecaster): CRPS is its MAE, spread-skill 0, member = ensemble."""
    row = evaluate_ensemble(
        EnsembleForecast(prediction[None], seconds), truth, energy0, judge, judge_floor, seed
    )
    row["spread_skill"] = 0.0
    return row


def judge_error(judge: nn.Module, truth: torch.Tensor, energy0: torch.Tensor, seed: int = 0):
    """The judge's error on true target frames: ``(floor, se, per lead)``; the noise floor every
    energy error is read against."""
    judge.eval()
    errors = metrics.energy_error(truth, energy0, judge, reduction="none")
    with torch.no_grad():
        judged = judge(truth).double()
    per_lead = (judged - energy0.double()[:, None]).abs().mean(0)
    return float(errors.mean()), bootstrap_se(errors, seed), per_lead.tolist()


def energy_control(regressor: nn.Module, energy0: torch.Tensor, scale: float) -> KnowledgeControl:
    """Knowledge control toward the context's energy ``E₀`` ``(N,)`` (per-call targets:
    :meth:`~physml.constraints.KnowledgeControl.with_target`)."""
    regressor.eval()
    return KnowledgeControl(regressor, energy0, scale, on="noisy")


def frame_energy_control(guide: nn.Module, energy0: torch.Tensor, scale: float) -> KnowledgeControl:
    """Knowledge control toward ``E₀`` ``(N,)`` read by a frame-space regressor ``guide`` (frames
    ``(N, T, C, H, W)`` → energies ``(N, T)``) on the decoded denoised frames of every step,
    with the normalised (Gauss–Newton) step."""
    guide.eval().requires_grad_(False)
    return KnowledgeControl(guide, energy0, scale, on="frames", normalized=True)


def controlled_sample(
    prediff: PreDiff,
    control: KnowledgeControl,
    context: torch.Tensor,
    target: torch.Tensor,
    members: int,
    steps: int,
    seed: int,
    batch: int = 64,
    keep: Path | None = None,
    reverse: bool = False,
) -> EnsembleForecast:
    """:func:`sample` of ``constrain(prediff, control)`` with ``target[chunk]`` per chunk
    (``keep``, ``reverse``: resumable, shareable chunks, as in :func:`sample`)."""
    guided = constrain(prediff, control)
    return sample(
        guided,
        context,
        members,
        steps,
        seed,
        batch,
        targets=lambda chunk: [control.with_target(target[chunk])],
        keep=keep,
        reverse=reverse,
    )


def best_lambda(sweep: list[dict], reference: dict) -> dict:
    """The sweep row with the smallest energy error among those with ``mse <= 1.02 ×`` and
    ``ssim >= − 0.01`` of ``reference`` (unguided, same contexts); else the smallest error."""
    allowed = [
        row
        for row in sweep
        if row["mse"] <= 1.02 * reference["mse"] and row["ssim"] >= reference["ssim"] - 0.01
    ]
    return min(allowed or sweep, key=lambda row: row["energy_error"])


def done_when(
    plain: dict, controlled: dict, intensity: list[dict]
) -> list[tuple[str, float, str, bool]]:
    """The issue's targets: ``(what, value, target, met)`` (energy error halved at no cost in
    MSE / SSIM; intensity ≥ 3× closer for n ∈ {−2, 0, 2})."""
    checks = [
        (
            "energy_error kc / prediff",
            controlled["energy_error"] / plain["energy_error"],
            "<= 0.5",
            controlled["energy_error"] <= 0.5 * plain["energy_error"],
        ),
        (
            "mse kc / prediff",
            controlled["mse"] / plain["mse"],
            "<= 1.02",
            controlled["mse"] <= 1.02 * plain["mse"],
        ),
        (
            "ssim kc - prediff",
            controlled["ssim"] - plain["ssim"],
            ">= -0.01",
            controlled["ssim"] >= plain["ssim"] - 0.01,
        ),
        (
            "prediff energy_error / judge_floor",
            plain["energy_error"] / plain["judge_floor"],
            "> 1.5 (else sharpen the judge)",
            plain["energy_error"] > 1.5 * plain["judge_floor"],
        ),
    ]
    misses = {(row["method"], row["n"]): abs(row["achieved"] - row["asked"]) for row in intensity}
    for n in (-2, 0, 2):
        if ("prediff", n) in misses and ("prediff-kc", n) in misses:
            ratio = misses[("prediff", n)] / max(misses[("prediff-kc", n)], 1e-300)
            checks.append((f"intensity n={n}: miss prediff / miss kc", ratio, ">= 3", ratio >= 3))
    return checks


def intensity_rows(
    prediff: PreDiff,
    context: torch.Tensor,
    stats: tuple[float, float],
    scale: Scale,
    lam: float,
    seed: int,
    case: str = "intensity",
    keep: Path | None = None,
    reverse: bool = False,
) -> list[dict]:
    """Rows ``case, method, n, asked, achieved`` for PreDiff (unguided, one draw for every n)
    and PreDiff-KC steered to ``μ + n σ`` of the mean target intensity with ``λ = lam``.
    ``keep``, ``reverse``: resumable, shareable chunks as in :func:`sample` (a subfolder per
    draw, named by n and λ, so calls with other λ on the same contexts share the unguided draw;
    ``reverse`` also takes the n last first)."""
    mu, sigma = stats
    members, steps = scale.intensity_members, scale.ddim_steps

    def kept(name: str) -> Path | None:
        return None if keep is None else Path(keep) / name

    plain = sample(
        prediff, context, members, steps, seed, scale.sample_batch, keep=kept("plain"),
        reverse=reverse,
    )  # fmt: skip
    achieved_plain = float(mean_intensity(plain.samples).mean())
    control = KnowledgeControl(FrameIntensity(mu, sigma), torch.zeros(1), lam, on="frames")
    found = {}
    for n in reversed(scale.intensity_n) if reverse else scale.intensity_n:
        target = torch.full((len(context),), float(n))
        found[n] = controlled_sample(
            prediff, control, context, target, members, steps, seed, scale.sample_batch,
            keep=kept(f"n{n:g}-lambda{lam:g}"), reverse=reverse,
        )  # fmt: skip
    rows = []
    for n in scale.intensity_n:
        asked = mu + n * sigma
        guided = found[n]
        achieved = float(mean_intensity(guided.samples).mean())
        for method, value, seconds in (
            ("prediff", achieved_plain, plain.seconds),
            ("prediff-kc", achieved, guided.seconds),
        ):
            rows.append(
                {
                    "case": case,
                    "method": method,
                    "n": n,
                    "lambda": lam if method == "prediff-kc" else 0.0,
                    "asked": asked,
                    "achieved": value,
                    "miss_sigma": abs(value - asked) / sigma,
                    "fwd_ms": 1000.0 * seconds / len(context),
                }
            )
    return rows


# --------------------------------------------------------------------------------------- figures


def plot_strip(
    path: Path,
    context: torch.Tensor,
    truth: torch.Tensor,
    plain: torch.Tensor,
    controlled: torch.Tensor,
    lam: float,
) -> None:
    """One test video: context ``(T_in, 1, H, W)``, truth ``(T_out, 1, H, W)``, then members
    ``(M, T_out, 1, H, W)`` of PreDiff and of PreDiff-KC (λ = ``lam``), a row each."""
    rows = [("context", context), ("truth", truth)]
    rows += [(f"PreDiff {m + 1}", plain[m]) for m in range(plain.shape[0])]
    rows += [(f"KC λ={lam:g} {m + 1}", controlled[m]) for m in range(controlled.shape[0])]
    frame_strip(path, rows, label_size=7, dpi=100)


def plot_energy(
    path: Path,
    per_lead: dict[str, list[float]],
    floor: list[float],
    one: dict[str, torch.Tensor],
    energy0: float,
) -> None:
    """Left: one test video's judged energy per lead (truth ``(T,)``, members ``(M, T)`` of
    PreDiff and PreDiff-KC as mean ± spread), ``E₀`` with the judge's floor as a band. Right:
    ``|E_judge − E₀|`` per lead over the test set, the judge's error on the truth as a band."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    leads = torch.arange(1, len(floor) + 1)
    mean_floor = sum(floor) / len(floor)
    left.axhspan(energy0 - mean_floor, energy0 + mean_floor, color="0.85", label="E₀ ± judge floor")
    left.axhline(energy0, color="k", lw=1)
    for label, values in one.items():
        values = values.double().reshape(-1, len(floor))
        centre, spread = values.mean(0), values.std(0) if values.shape[0] > 1 else 0 * values[0]
        left.plot(leads, centre, "o-", ms=3, label=label)
        left.fill_between(leads, centre - spread, centre + spread, alpha=0.2)
    left.set(xlabel="lead (frames)", ylabel="judged energy", title="one test video")
    left.legend(fontsize=7)
    right.fill_between(leads, 0, floor, color="0.85", label="judge on truth (floor)")
    for label, values in per_lead.items():
        right.plot(leads, values, "o-", ms=3, label=label)
    right.set(xlabel="lead (frames)", ylabel="|E_judge − E₀|", title="test set")
    right.set_ylim(bottom=0)
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# ------------------------------------------------------------------------------------------ task


def run(context: Context) -> list[Row]:
    """The whole pipeline at toy size with the conv denoiser: train (resumable, under
    ``out/prediff-nbody/<size>-seed<seed>/``), score PreDiff and PreDiff-KC (best λ of a
    sweep on validation videos), intensity control, two figures and ``summary-<size>.json``."""
    scale, seed, quiet = SIZES[context.size], context.seed, context.quiet
    folder = context.out / NAME
    work = folder / f"{context.size}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    data = videos(scale, seed)
    test_x, test_y = data["test"].split(scale.t_in)
    val_x, val_y = data["validation"].split(scale.t_in)
    energy0 = context_energy(data["test"], scale.t_in)
    val_energy0 = context_energy(data["validation"], scale.t_in)

    autoencoder = train_autoencoder(scale, data["train"], work / "autoencoder", seed, quiet)
    prediff = build_prediff(scale, "conv", autoencoder.model, seed)
    prediff, latents = calibrated(prediff, data["train"], scale.t_in)
    denoiser = train_denoiser(scale, prediff, latents, "conv", work / "denoiser", seed, quiet)
    guide = train_guide(scale, TOY_GUIDE, data["train"], work / "guide", seed, quiet).model
    judge = train_judge(scale, data["train"], work / "judge", seed, quiet).model
    floor, _, floor_per_lead = judge_error(judge, test_y, energy0, seed)

    members, steps, batch = scale.members, scale.ddim_steps, scale.sample_batch
    reference = evaluate_ensemble(
        sample(prediff, val_x, scale.sweep_members, steps, seed, batch),
        val_y,
        val_energy0,
        judge,
        floor,
        seed,
    )
    sweep = []
    for lam in TOY_GUIDE.lambdas:
        control = frame_energy_control(guide, val_energy0, lam)
        forecast = controlled_sample(
            prediff, control, val_x, val_energy0, scale.sweep_members, steps, seed, batch
        )
        sweep.append(
            {"lambda": lam, **evaluate_ensemble(forecast, val_y, val_energy0, judge, floor, seed)}
        )
    best = best_lambda(sweep, reference)["lambda"]
    plain_forecast = sample(prediff, test_x, members, steps, seed, batch)
    plain = evaluate_ensemble(plain_forecast, test_y, energy0, judge, floor, seed)
    control = frame_energy_control(guide, energy0, best)
    kc_forecast = controlled_sample(prediff, control, test_x, energy0, members, steps, seed, batch)
    controlled = evaluate_ensemble(kc_forecast, test_y, energy0, judge, floor, seed)

    intensity = mean_intensity(test_y)
    stats = (float(intensity.mean()), float(intensity.std()))
    context_frames = test_x[: scale.intensity_contexts]
    lam_intensity = scale.intensity_lambdas[-1]
    intensity_table = intensity_rows(prediff, context_frames, stats, scale, lam_intensity, seed)

    case = f"nbody-{scale.size}px-{scale.t_in}to{scale.t_out}"
    rows = [Row(NAME, case, "judge floor", floor)]
    for method, scores in (("prediff", plain), ("prediff-kc", controlled)):
        for metric in ("mse", "ssim", "crps", "spread_skill", "energy_error"):
            rows.append(Row(NAME, case, f"{metric} {method}", scores[metric]))
    rows.append(Row(NAME, case, "lambda prediff-kc", best))
    for what, value, target, _ in done_when(plain, controlled, intensity_table):
        rows.append(Row(NAME, case, what, value, f"{target} at full size"))
    for row in intensity_table:
        if row["method"] == "prediff-kc":
            rows.append(
                Row(NAME, f"intensity n={row['n']}", "miss in σ prediff-kc", row["miss_sigma"])
            )

    shown = min(2, members)
    plot_strip(
        folder / f"strip-{context.size}.png",
        test_x[0],
        test_y[0],
        plain_forecast.samples[:shown, 0],
        kc_forecast.samples[:shown, 0],
        best,
    )
    with torch.no_grad():
        one = {
            "truth": judge(test_y[:1])[0],
            "PreDiff": judge(plain_forecast.samples[:, 0]),
            "PreDiff-KC": judge(kc_forecast.samples[:, 0]),
        }
    plot_energy(
        folder / f"energy-{context.size}.png",
        {"PreDiff": plain["energy_per_lead"], "PreDiff-KC": controlled["energy_per_lead"]},
        floor_per_lead,
        one,
        float(energy0[0]),
    )
    summary = {
        "case": case,
        "scale": scale.setup(),
        "train_s": {"autoencoder": autoencoder.train_s, "denoiser": denoiser.train_s},
        "prediff": plain,
        "prediff-kc": {"lambda": best, **controlled},
        "sweep": sweep,
        "intensity": intensity_table,
    }
    atomic_write_text(folder / f"summary-{context.size}.json", json.dumps(summary, indent=1) + "\n")
    return rows


register(
    Task(
        name=NAME,
        description=(
            "PreDiff (latent diffusion) on N-body digits with knowledge control: energy kept "
            "to the context's, and an anticipated mean intensity, judged by an independent "
            "energy regressor"
        ),
        run=run,
        figures={
            f"{NAME}/strip-*.png": "{name}: one test video, its context and true future, then "
            "PreDiff's ensemble members without and with knowledge control (energy).",
            f"{NAME}/energy-*.png": "{name}: judged energy against lead time for the truth, "
            "PreDiff and PreDiff-KC, the energy judge's own error on true frames as a band.",
        },
    )
)
