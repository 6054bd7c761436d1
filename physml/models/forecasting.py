"""Scoring of video forecasters ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``.

:func:`evaluate_forecaster` scores a model (and :func:`score_forecast` forecasts made some other
way) the Earthformer way: MSE and MAE summed over each frame's pixels, SSIM, averaged over frames
and samples, plus per lead time. Training such a model is
:func:`physml.training.forecasting.train_forecaster`'s (training sits above the models); its
names read from here too, loaded on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from pdes.checks import finite, positive_int

from .. import metrics
from .._checks import device as checked_device
from .baselines import check_sequence
from .common import model_dtype

SSIM_WINDOW = 11

_TRAINING = "physml.training.forecasting"
"""The module that holds the forecasters' trainer and the names that go with it."""
_TRAINING_NAMES = (
    "LOSSES",
    "Loss",
    "OLD_CHECKPOINT",
    "READ_REMEDY",
    "RESTART",
    "RESUME_REMEDY",
    "RETRAIN",
    "RETRAIN_UNSAVED",
    "SCHEDULES",
    "SETTING_NAMES",
    "TrainReport",
    "check_no_old_checkpoint",
    "load_forecaster",
    "train_forecaster",
)
"""The public names of :mod:`physml.training.forecasting` that this module forwards (they were
defined here once), each loaded on first use."""

__all__ = [
    "SSIM_WINDOW",
    "ForecastScores",
    "check_forecast_pairs",
    "checked_forecast",
    "evaluate_forecaster",
    "score_forecast",
    *_TRAINING_NAMES,
]


def _training_name(module: str, name: str) -> object:
    """``name`` of :mod:`physml.training.forecasting`, imported on first use, for the module
    ``module`` that forwards it; an ``AttributeError`` naming ``module`` for any other name."""
    if name in _TRAINING_NAMES:
        return getattr(importlib.import_module(_TRAINING), name)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


def __getattr__(name: str) -> object:
    """The trainer's names, forwarded: importing this module does not load
    :mod:`physml.training`."""
    return _training_name(__name__, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_TRAINING_NAMES})


@dataclass
class ForecastScores:
    """Scores of a forecast: ``mse``/``mae`` summed over each frame's pixels (and channels),
    ``ssim`` (data range 1), each averaged over samples and lead times; ``*_per_lead`` ``(T_out,)``
    the same averaged over samples only."""

    mse: float
    mae: float
    ssim: float
    mse_per_lead: torch.Tensor
    mae_per_lead: torch.Tensor
    ssim_per_lead: torch.Tensor


def check_forecast_pairs(
    inputs: object, targets: object, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``inputs`` ``(N, T_in, C, H, W)`` and ``targets`` ``(N, T_out, C', H, W)`` checked: finite
    sequences of the same batch and frame size; ``what`` is ``"train"`` (the arguments' names
    ``inputs``/``targets``) or the name of a pair argument (``"val"``: ``val[0]``/``val[1]``)."""
    names = ("inputs", "targets") if what == "train" else (f"{what}[0]", f"{what}[1]")
    x = check_sequence(names[0], inputs)
    y = check_sequence(names[1], targets)  # its channels are the model's output's (checked there)
    for name, tensor in zip(names, (x, y), strict=True):
        finite(name, tensor)
    if y.shape[0] != x.shape[0] or y.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"{names[1]} must match {names[0]} {tuple(x.shape)} in batch and frame size, got "
            f"{tuple(y.shape)}"
        )
    return x, y


def checked_forecast(model: nn.Module, x: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    """``model(x)``, a ``ValueError`` unless it is a tensor of the targets' ``target_shape``."""
    prediction = model(x)
    if not isinstance(prediction, torch.Tensor) or prediction.shape != target_shape:
        shape = tuple(prediction.shape) if isinstance(prediction, torch.Tensor) else prediction
        raise ValueError(f"model must return the targets' shape {tuple(target_shape)}, got {shape}")
    return prediction


def evaluate_forecaster(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> ForecastScores:
    """Score ``model`` on ``inputs`` → ``targets`` (``(N, T, C, H, W)``, values on a [0, 1] scale)
    with :func:`score_forecast`; the forecasts are made ``batch_size`` sequences at a time, on
    ``device`` (``"cpu"``, ``"cuda"`` or ``"cuda:N"``, or a ``torch.device`` of those)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x_all, y_all = check_forecast_pairs(inputs, targets, "train")
    batch_size = positive_int("batch_size", batch_size)
    device = checked_device("device", device)
    dtype = model_dtype(model, x_all.dtype)
    sums = torch.zeros(3, y_all.shape[1], dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x_all), batch_size):
                x = x_all[start : start + batch_size].to(device, dtype)
                y = y_all[start : start + batch_size].to(device)
                sums += _score_sums(checked_forecast(model, x, y.shape), y)
    finally:
        model.train(was_training)
    return _scores(sums / len(x_all))


def score_forecast(
    predictions: torch.Tensor, targets: torch.Tensor, batch_size: int = 64
) -> ForecastScores:
    """Score forecasts ``predictions`` against ``targets`` (both ``(N, T, C, H, W)``, [0, 1] scale).

    MSE/MAE are :func:`physml.metrics.frame_mse` / :func:`~physml.metrics.frame_mae` with the
    error summed over each frame's channels and pixels; SSIM is :func:`physml.metrics.ssim` with
    ``data_range=1`` per channel image, with the 11×11 window shrunk to the frame when a frame is
    smaller. Predictions are scored as they come (not clipped to [0, 1]), ``batch_size``
    sequences at a time.
    """
    check_sequence("predictions", predictions)
    check_sequence("targets", targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions must have the targets' shape {tuple(targets.shape)}, "
            f"got {tuple(predictions.shape)}"
        )
    batch_size = positive_int("batch_size", batch_size)
    sums = torch.zeros(3, targets.shape[1], dtype=torch.float64)
    for start in range(0, len(targets), batch_size):
        chunk = slice(start, start + batch_size)
        sums += _score_sums(predictions[chunk], targets[chunk])
    return _scores(sums / len(targets))


def _score_sums(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(3, T)``: frame MSE, frame MAE and SSIM at each lead, summed over the batch."""
    window = min(SSIM_WINDOW, *target.shape[-2:])
    sums = torch.zeros(3, target.shape[1], dtype=torch.float64)
    for lead in range(target.shape[1]):
        p, t = prediction[:, lead], target[:, lead]
        sums[0, lead] = metrics.frame_mse(p, t, frame_ndim=3).cpu() * len(t)
        sums[1, lead] = metrics.frame_mae(p, t, frame_ndim=3).cpu() * len(t)
    similarity = metrics.ssim(
        prediction, target, data_range=1.0, window_size=window, reduction="none"
    )
    sums[2] = similarity.mean(2).sum(0).cpu()
    return sums


def _scores(per_lead: torch.Tensor) -> ForecastScores:
    return ForecastScores(
        mse=float(per_lead[0].mean()),
        mae=float(per_lead[1].mean()),
        ssim=float(per_lead[2].mean()),
        mse_per_lead=per_lead[0],
        mae_per_lead=per_lead[1],
        ssim_per_lead=per_lead[2],
    )
