"""The N-body digit videos of ``prediff-nbody``: the run's :class:`Scale`, the generator's
settings per frame size, windows, the simulator's energy and the frames' mean intensity."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import TensorDataset

from ...data.nbody import ENERGY_CONSERVING, NBodyDigits, canvas_lengths, nbody_digits
from .. import offset_seed

DENOISERS = ("conv", "cuboid")


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
"""A smoke run of seconds of training per model, not a forecaster."""

SIZES = {"toy": TOY, "full": TOY}
"""The task's sizes, both toy (the task runs at toy scale only; the full-scale study is
``benchmarks/prediff_nbody.py``, hours)."""


def generator_settings(size: int) -> dict[str, object]:
    """:func:`~physml.data.nbody_digits` settings for a ``size``-pixel canvas: the energy-
    conserving integrator (no clip), and the 64² set-up's lengths (speeds, softening, G) scaled by
    ``size / 64`` (:func:`~physml.data.nbody.canvas_lengths`) so sprites move as far, relative to
    the frame, as on the 64² canvas."""
    return {**canvas_lengths(size), **ENERGY_CONSERVING}


def videos(scale: Scale, seed: int) -> dict[str, NBodyDigits]:
    """``train``, ``validation`` (training handwriting, fresh trajectories) and ``test``
    (disjoint handwriting) videos of ``T_in + T_out`` frames."""

    def make(count: int, offset: int, split: str) -> NBodyDigits:
        return nbody_digits(
            count,
            seed=offset_seed(seed, offset),
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
    total = data.frames.shape[1]
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= total:
        raise ValueError(
            f"length must be an int in [1, {total}] (the videos' frames), got {length!r}"
        )
    count = total // length
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
