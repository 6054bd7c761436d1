"""PreDiff's two-stage training, each stage one :class:`~physml.training.Trainer` run in its own
folder: the frame autoencoder, then (latent statistics calibrated and the pairs encoded once, the
autoencoder frozen) the latent denoiser with its EMA copy (``after_step=update_ema``).

A rerun into the same ``out`` resumes each stage from its checkpoint: a finished autoencoder is
reloaded, not retrained, and the calibration and encoding, which depend on its weights alone, are
done again before the denoiser resumes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from pdes.checks import positive_int

from .._checks import flag
from ..models.prediff import LatentPairs, PreDiff, autoencoder_loss, diffusion_loss, update_ema
from .checkpoint import OUT_REMEDY
from .trainer import TrainConfig, Trainer, TrainReport, check_device

STAGES = ("autoencoder", "denoiser")
"""The stages in training order, and the default names of their folders under ``out``."""

RunStage = Callable[[str, Trainer, Dataset], TrainReport]


def train_prediff(
    prediff: PreDiff,
    pairs: Dataset,
    *,
    autoencoder: TrainConfig,
    denoiser: TrainConfig,
    frames: torch.Tensor | None = None,
    out: str | os.PathLike | None = None,
    folders: Sequence[str] = STAGES,
    quiet: bool = False,
    calibrate_batch: int = 64,
    latent_batch: int = 64,
    record_autoencoder_config: bool = True,
    remedy: str = OUT_REMEDY,
    run_stage: RunStage | None = None,
) -> tuple[TrainReport, TrainReport]:
    """Train ``prediff`` in place, autoencoder then denoiser; returns the two runs' reports.

    Args:
        prediff: the :class:`~physml.models.prediff.PreDiff` to train (its autoencoder is
            trained in stage 1, whatever it was before, then calibrated and frozen).
        pairs: ``(context, target)`` frames ``(T_in, C, H, W)``, ``(T_out, C, H, W)`` per item
            (e.g. :class:`physml.data.windows.ForecastDataset`): the denoiser's training pairs,
            encoded once (:class:`~physml.models.prediff.LatentPairs`). Item 0 is checked
            against ``prediff`` (``T_in``, ``T_out``, ``C``, ``H``, ``W``) before anything
            trains.
        autoencoder: the :class:`~physml.training.TrainConfig` of stage 1
            (:func:`~physml.models.prediff.autoencoder_loss`).
        denoiser: the :class:`~physml.training.TrainConfig` of stage 2
            (:func:`~physml.models.prediff.diffusion_loss`); its ``device`` is where the
            latents are calibrated and encoded.
        frames: the autoencoder's frames, a tensor ``(N, T, C, H, W)`` of the ``C``, ``H``,
            ``W`` of ``pairs``: stage 1 trains on each frame alone (``(1, C, H, W)`` items) and
            the latent statistics come from ``frames`` as given, ``calibrate_batch`` of its
            ``N`` at a time. ``None``: the videos of ``pairs``, context and target joined along
            time, for both (every item then checked to have item 0's shapes).
        out: the folder of the runs (``None``: no checkpoints, no resume); stage ``i`` trains
            in ``out / folders[i]``.
        folders: the two stages' folder names under ``out``: relative, without ``..``.
        quiet: no progress bars.
        calibrate_batch: items of ``frames`` encoded at a time for the latent statistics.
        latent_batch: items of ``pairs`` encoded at a time.
        record_autoencoder_config: whether stage 1's checkpoint records (and a resume checks)
            ``prediff.autoencoder.config``; stage 2's always records ``prediff.config``.
        remedy: where else to train, in a refusal to resume a stage (the Trainer's ``remedy``).
        run_stage: called as ``run_stage(stage, trainer, data)`` for each stage (``stage`` one
            of :data:`STAGES`) instead of ``trainer.fit(data)``, which it must call and whose
            :class:`~physml.training.TrainReport` it returns: a caller's timing or logging
            around each run.
    """
    if not isinstance(prediff, PreDiff):
        raise TypeError(f"prediff must be a PreDiff, got {type(prediff).__name__}")
    _check_pairs(pairs, prediff)
    for name, config in (("autoencoder", autoencoder), ("denoiser", denoiser)):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"{name} must be a TrainConfig, got {type(config).__name__}")
    if frames is not None:
        _check_frames(frames, prediff.autoencoder.channels, pairs[0][0].shape[-2:])
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or Path) or None, got {out!r}")
    folders = _check_folders(folders)
    calibrate_batch = positive_int("calibrate_batch", calibrate_batch)
    latent_batch = positive_int("latent_batch", latent_batch)
    record = flag("record_autoencoder_config", record_autoencoder_config)
    if run_stage is not None and not callable(run_stage):
        raise TypeError(
            f"run_stage must be callable(stage, trainer, data) or None, got {type(run_stage)}"
        )
    where = [None if out is None else Path(out) / folder for folder in folders]
    stage1 = Trainer(
        prediff.autoencoder,
        autoencoder_loss,
        autoencoder,
        out=where[0],
        model_config=prediff.autoencoder.config if record else None,
        quiet=quiet,
        remedy=remedy,
    )
    stage2 = Trainer(
        prediff,
        diffusion_loss,
        denoiser,
        out=where[1],
        model_config=prediff.config,
        quiet=quiet,
        after_step=update_ema,
        remedy=remedy,
    )
    prediff.autoencoder.requires_grad_(True)  # calibrate froze it: stage 1 trains it
    if frames is None:
        videos = _videos(pairs)
        first = _run(run_stage, STAGES[0], stage1, pairs)
    else:
        videos = frames
        first = _run(run_stage, STAGES[0], stage1, TensorDataset(_each_frame(frames)))
    prediff.to(check_device(denoiser.device))
    prediff.calibrate(videos, batch=calibrate_batch)
    latents = LatentPairs(prediff, pairs, batch=latent_batch)
    return first, _run(run_stage, STAGES[1], stage2, latents)


def _run(run_stage: RunStage | None, stage: str, trainer: Trainer, data: Dataset) -> TrainReport:
    """``trainer.fit(data)``, or ``run_stage``'s report of it."""
    if run_stage is None:
        return trainer.fit(data)
    report = run_stage(stage, trainer, data)
    if not isinstance(report, TrainReport):
        raise TypeError(
            f"run_stage must return the TrainReport of trainer.fit(data), got "
            f"{type(report).__name__} for the {stage} stage"
        )
    return report


def _check_pairs(pairs: object, prediff: PreDiff) -> None:
    """``TypeError``/``ValueError`` naming ``pairs`` unless it is a non-empty dataset whose first
    item is a ``(context, target)`` pair of tensors that ``prediff`` takes: a context it can
    sample from (:meth:`PreDiff.sample`'s check) and a target ``(T_out, C, H, W)`` of the
    context's channels and size, ``T_out`` the denoiser's."""
    if not (hasattr(pairs, "__len__") and hasattr(pairs, "__getitem__")):
        raise TypeError(
            f"pairs must be a dataset of (context, target) frames (len() and [i]), got "
            f"{type(pairs).__name__}"
        )
    if len(pairs) == 0:
        raise ValueError("pairs must hold at least one (context, target) pair, got none")
    item = pairs[0]
    if not (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and all(isinstance(part, torch.Tensor) and part.ndim == 4 for part in item)
    ):
        raise TypeError(
            "pairs must yield (context, target) frames, tensors (T_in, C, H, W) and "
            f"(T_out, C, H, W), got {_described(item)} as item 0"
        )
    context, target = item
    try:
        prediff.check_context(context[None])
    except (TypeError, ValueError) as error:
        raise (TypeError if isinstance(error, TypeError) else ValueError)(
            f"pairs must yield contexts (T_in, C, H, W) this PreDiff takes (T_in = "
            f"{prediff.context_frames}, C = {prediff.autoencoder.channels}), got "
            f"{_described(context)} as item 0's context: {error} (as a batch of one)"
        ) from None
    expected = (prediff.target_frames, *context.shape[1:])
    if tuple(target.shape) != expected or not target.is_floating_point():
        raise ValueError(
            f"pairs must yield floating-point targets (T_out, C, H, W) = {expected} (the "
            f"denoiser's T_out, the context's C, H, W), got {_described(target)} of dtype "
            f"{target.dtype} as item 0's target"
        )


def _described(item: object) -> str:
    """A type and, for tensors, shapes: what an item of ``pairs`` turned out to be."""
    if isinstance(item, torch.Tensor):
        return f"a tensor of shape {tuple(item.shape)}"
    if isinstance(item, (tuple, list)):
        parts = ", ".join(
            f"shape {tuple(p.shape)}" if isinstance(p, torch.Tensor) else type(p).__name__
            for p in item
        )
        return f"a {type(item).__name__} of {len(item)} ({parts})"
    return type(item).__name__


def _check_frames(frames: object, channels: int, size: Sequence[int]) -> None:
    """``TypeError`` (``ValueError`` for a shape) naming ``frames`` unless a floating-point tensor
    ``(N, T, C, H, W)`` with the autoencoder's ``channels``, frames of ``size`` ``(H, W)`` (those
    of ``pairs``) and at least one frame."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(
            f"frames must be a tensor (N, T, C, H, W) or None, got {type(frames).__name__}"
        )
    if frames.ndim != 5 or frames.shape[2] != channels or frames.shape[0] * frames.shape[1] == 0:
        raise ValueError(
            f"frames must be a tensor (N, T, C, H, W) with the autoencoder's C = {channels} "
            f"channels and N, T >= 1, got shape {tuple(frames.shape)}"
        )
    if tuple(frames.shape[-2:]) != tuple(size):
        raise ValueError(
            f"frames must be {size[0]} × {size[1]} pixels, as those of pairs, got shape "
            f"{tuple(frames.shape)}"
        )
    if not frames.is_floating_point():  # the autoencoder's convolutions take no integers
        raise TypeError(f"frames must be a floating-point tensor, got dtype {frames.dtype}")


def _check_folders(folders: object) -> tuple[str, str]:
    """``folders`` as two distinct non-empty folder names inside ``out`` (relative, no ``..``),
    else an error naming it."""
    if (
        isinstance(folders, str)
        or not isinstance(folders, Sequence)
        or len(folders) != 2
        or not all(isinstance(name, str) and name for name in folders)
    ):
        raise TypeError(
            f"folders must be two non-empty folder names (autoencoder, denoiser), got {folders!r}"
        )
    outside = [name for name in folders if Path(name).anchor or ".." in Path(name).parts]
    if outside:
        raise ValueError(
            f"folders must be folder names inside out (relative, without '..'), got "
            f"{outside[0]!r} in {folders!r}"
        )
    if Path(folders[0]) == Path(folders[1]):
        raise ValueError(f"folders must name two different folders, got {folders!r}")
    return folders[0], folders[1]


def _each_frame(frames: torch.Tensor) -> torch.Tensor:
    """``(N, T, C, H, W)`` → ``(N T, 1, C, H, W)``: every frame a one-frame video."""
    return frames.reshape(-1, 1, *frames.shape[2:])


def _videos(pairs: Dataset) -> torch.Tensor:
    """``(N, T_in + T_out, C, H, W)``: each item's context and target joined along time; an
    item whose shapes are not item 0's is a ``ValueError`` naming ``pairs``."""
    first = [tuple(part.shape) for part in pairs[0]]
    videos = []
    for i in range(len(pairs)):
        item = pairs[i]
        shapes = [tuple(part.shape) if isinstance(part, torch.Tensor) else None for part in item]
        if len(item) != 2 or shapes != first:
            raise ValueError(
                f"pairs must yield (context, target) frames of one shape, item 0's {first[0]} "
                f"and {first[1]}, got {_described(item)} as item {i}"
            )
        videos.append(torch.cat(list(item)))
    return torch.stack(videos)
