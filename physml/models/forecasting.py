"""Training and scoring of video forecasters ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``.

:func:`train_forecaster` fits any such model (Earthformer, the baselines in
:mod:`physml.models.baselines`, a user's own) with an MSE (or L1, or a user's) loss and Adam,
for a number of steps or for a time budget (so competing models get the same CPU time), and
resumes a killed run from its checkpoint. :func:`evaluate_forecaster` scores a model (and
:func:`score_forecast` forecasts made some other way) the Earthformer way: MSE and MAE summed over
each frame's pixels, SSIM, averaged over frames and samples, plus per lead time.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pdes.checks import finite, positive_int

from .. import metrics
from ..errors import user_stacklevel
from .baselines import check_sequence
from .common import model_dtype, progress_bar, sixteen_bit_weights

SCHEDULES = ("cosine", "none")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, Loss] = {
    "mse": lambda prediction, target: (prediction - target).square().mean(),
    "l1": lambda prediction, target: (prediction - target).abs().mean(),
}
"""Named training losses ``(prediction, target) -> scalar``, each averaged over every element."""
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CHECKPOINT_FORMAT = "physml-forecaster-checkpoint/1"
SSIM_WINDOW = 11
RESUME_REMEDY = "use another checkpoint path"
"""What a refused resume advises (train_forecaster's ``checkpoint`` is a file, not physml
train's ``--out`` folder)."""
RESTART = (
    "restore an intact copy, delete it to start that training over, or use another checkpoint "
    "path (physml run/demo: another --out)"
)
"""What the refusal of a damaged checkpoint file advises."""
STOPPING = ("max_steps", "budget_s")
"""The settings a resumed run may change (unless the cosine schedule decays over one)."""


@dataclass
class TrainReport:
    """What a training run did: ``steps`` taken in total (across resumes), ``seconds`` of
    training in total, ``losses`` the loss of every step, and ``val_losses`` its ``(step,
    val_mse)`` pairs when ``val`` was given.
    """

    steps: int
    seconds: float
    losses: list[float]
    val_losses: list[tuple[int, float]] = field(default_factory=list)


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


def _check_pairs(inputs: object, targets: object, what: str) -> tuple[torch.Tensor, torch.Tensor]:
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


def _predict(model: nn.Module, x: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    prediction = model(x)
    if not isinstance(prediction, torch.Tensor) or prediction.shape != target_shape:
        shape = tuple(prediction.shape) if isinstance(prediction, torch.Tensor) else prediction
        raise ValueError(f"model must return the targets' shape {tuple(target_shape)}, got {shape}")
    return prediction


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype losses are taken in: ``dtype``, at least float32 (an MSE of values ~300
    overflows float16)."""
    return torch.promote_types(dtype, torch.float32)


def _learning_rate(lr: float, schedule: str, progress: float) -> float:
    if schedule == "none":
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _config(
    samples: int,
    max_steps: int | None,
    budget_s: float | None,
    batch_size: int,
    lr: float,
    seed: int,
    schedule: str,
    clock: str,
    loss: str,
) -> dict[str, object]:
    return {
        "samples": samples,
        "max_steps": max_steps,
        "budget_s": None if budget_s is None else float(budget_s),
        "batch_size": batch_size,
        "lr": float(lr),
        "seed": seed,
        "schedule": schedule,
        "clock": clock,
        "loss": loss,
    }


def _cosine_length(config: dict) -> str:
    """What the cosine schedule of a run with ``config`` decays over, as its argument reads."""
    if config["max_steps"] is not None:
        return f"max_steps={config['max_steps']}"
    return f"budget_s={config['budget_s']}"


def _check_same_settings(path: Path, state: dict, config: dict) -> None:
    """Like physml train's resume: a run may stop elsewhere (other ``max_steps`` or
    ``budget_s``), but not on the cosine schedule where it decays over the changed one, nor
    before the step it reached; any other change of setting is an error naming it."""
    from ..training.checkpoint import CheckpointError, check_same_config

    saved = {
        key: None if key in STOPPING and value == -1 else value  # older checkpoints' "none"
        for key, value in state["config"].items()
    }
    settings = {key: value for key, value in config.items() if key not in STOPPING}
    check_same_config({"config": saved}, settings, str(path), RESUME_REMEDY)
    old, new = _cosine_length(saved), _cosine_length(config)
    if config["schedule"] == "cosine" and old != new:
        again = old if saved["max_steps"] is not None else f"{old} and no max_steps"
        raise CheckpointError(
            f"checkpoint: {str(path)!r} holds step {state['step']} of a run whose cosine "
            f"learning rate decays over {old}; resumed with {new} the rest of the run would "
            f"follow neither that schedule nor a fresh run's. Train with {new} afresh "
            f"({RESUME_REMEDY}), or resume with {again} (a run with schedule='none' may be "
            "extended)"
        )
    if config["max_steps"] is not None and state["step"] > config["max_steps"]:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is at step {state['step']}, beyond the "
            f"max_steps={config['max_steps']} asked for; {RESUME_REMEDY} or more steps"
        )


def _loss_name(loss: Callable) -> str:
    """What a checkpoint records of a callable loss: its module and qualified name (its class's
    for a callable object), and a ``functools.partial``'s arguments."""
    if isinstance(loss, functools.partial):
        arguments = [_argument_name(a) for a in loss.args]
        arguments += [f"{k}={_argument_name(v)}" for k, v in sorted(loss.keywords.items())]
        return f"{_loss_name(loss.func)}({', '.join(arguments)})"
    named = loss if hasattr(loss, "__qualname__") else type(loss)
    return f"{getattr(named, '__module__', '?')}.{named.__qualname__}"


def _argument_name(value: object) -> str:
    """A partial's argument as a checkpoint records it: a callable by its name, anything else by
    its ``repr`` without memory addresses (they change from process to process)."""
    if callable(value) and not isinstance(value, type):
        return _loss_name(value)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _json_config(model_config: object) -> dict | None:
    """``model_config`` as it reads back from a checkpoint (tuples as lists), or ``None``."""
    if model_config is None:
        return None
    if not isinstance(model_config, dict):
        raise TypeError(
            "model_config must be a dict of the model's settings, got "
            f"{type(model_config).__name__}"
        )
    try:
        return json.loads(json.dumps(model_config, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(
            "model_config must hold JSON values (numbers, strings, booleans, None, lists, dicts), "
            f"got {model_config!r} ({error})"
        ) from None


@dataclass
class _Run:
    """Where a training run stands: steps done, seconds used, losses, and the batch order."""

    step: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    order: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    position: int = 0


def _save(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict,
    record: dict,
    run: _Run,
    batches: torch.Generator,
) -> None:
    from ..training.trainer import savable_state  # physml.training imports physml.models

    state = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        **record,
        "step": run.step,
        "seconds": run.seconds,
        "losses": torch.tensor(run.losses, dtype=torch.float64),
        "val_losses": torch.tensor(run.val_losses, dtype=torch.float64).reshape(-1, 2),
        "order": run.order,
        "position": run.position,
        "model": savable_state(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "batch_rng": batches.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    from ..training.checkpoint import save_torch_file  # physml.training imports physml.models

    save_torch_file(path, state)


def _resume(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict,
    record: dict,
    batches: torch.Generator,
) -> _Run:
    """Load the run saved at ``path`` into the arguments. ``record`` (the data's and validation
    set's fingerprints, the model's config) is checked against the saved one where the checkpoint
    has it (older ones do not), and takes the saved validation fingerprint and model config where
    this run gives none."""
    from ..training.checkpoint import (  # physml.training imports physml.models
        PythonObjectsError,
        check_same_data,
        check_same_model,
        check_same_validation,
        load_torch_file,
    )

    try:
        state = load_torch_file(path, "a forecaster checkpoint", remedy=RESTART)
    except PythonObjectsError:
        raise PythonObjectsError(
            f"checkpoint: {str(path)!r} holds Python objects besides tensors (as older physml "
            "wrote for neuralop models) and is not loaded; delete it, or use another "
            "checkpoint path (physml run/demo: another --out)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a physml forecaster checkpoint")
    _check_same_settings(path, state, config)
    saved_model = state.get("model_config")
    if saved_model is not None:
        check_same_model(state, record["model_config"], path, RESUME_REMEDY)
    if state.get("fingerprint") is not None:
        check_same_data(
            state, record["fingerprint"], path, RESUME_REMEDY, record["validation_fingerprint"]
        )
    saved_val = state.get("validation_fingerprint")
    check_same_validation(
        state, record["validation_fingerprint"], path, RESUME_REMEDY, losses_key="val_losses"
    )
    for key, saved in (("model_config", saved_model), ("validation_fingerprint", saved_val)):
        if record[key] is None:
            record[key] = saved
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    batches.set_state(state["batch_rng"])
    torch.set_rng_state(state["torch_rng"])
    return _Run(
        step=int(state["step"]),
        seconds=float(state["seconds"]),
        losses=state["losses"].tolist(),
        val_losses=[(int(s), float(v)) for s, v in state["val_losses"].tolist()],
        order=state["order"],
        position=int(state["position"]),
    )


def _validation_mse(
    model: nn.Module,
    val: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    device: torch.device,
) -> float:
    dtype = model_dtype(model, val[0].dtype)
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, val[0].shape[0], batch_size):
            x = val[0][start : start + batch_size].to(device, dtype)
            y = val[1][start : start + batch_size].to(device, _loss_dtype(dtype))
            error = _predict(model, x, y.shape).to(y.dtype) - y
            total += float(error.square().mean()) * x.shape[0]
    model.train(was_training)
    return total / val[0].shape[0]


def train_forecaster(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    budget_s: float | None = None,
    max_steps: int | None = None,
    batch_size: int = 8,
    lr: float = 1e-3,
    schedule: str = "cosine",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    val_every: int | None = None,
    device: str | torch.device = "cpu",
    quiet: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    clock: str = "wall",
    loss: str | Loss = "mse",
    loss_name: str | None = None,
    model_config: dict | None = None,
) -> TrainReport:
    """Fit ``model`` to map ``inputs`` ``(N, T_in, C, H, W)`` to ``targets`` ``(N, T_out, C, H, W)``
    and report what happened.

    Adam on ``loss``: ``"mse"`` (the default) or ``"l1"`` of the forecast's error, averaged over
    every element, or any ``loss(prediction, target) -> scalar tensor``, given both in the
    model's dtype, float32 at least (16-bit weights are warned about: Adam fails on them). A
    checkpoint records and checks on resume a callable's module and ``__qualname__`` (a
    ``functools.partial``'s function and arguments), or ``loss_name`` when given: give it where
    that does not tell two losses apart (lambdas are all ``<lambda>``, a loss object is named by
    its class);
    mini-batches of ``batch_size`` sequences, on ``device``, drawn without replacement in an
    order fixed by ``seed`` (which also seeds torch's global generator inside the run, for models
    with dropout).
    Stops after ``max_steps`` steps or ``budget_s`` seconds of training, whichever comes first
    (at least one must be given). ``lr`` is the learning rate, the schedule's start;
    ``schedule="cosine"`` decays it to 0 over ``max_steps`` steps, or over ``budget_s`` seconds
    when only the budget is given (then the run is not step-for-step reproducible: the clock
    decides).

    With ``checkpoint`` the state (model, optimizer, step, random states, losses, time used) is
    saved atomically every ``checkpoint_every`` steps and at the end; a run started with an
    existing checkpoint resumes from it (the settings, the training data, the model's
    ``model_config`` — a dict of JSON values, e.g. the settings the model was built with — and,
    once validation losses were recorded, ``val`` must match; a checkpoint without a record of
    one of them, as written before they were recorded, is not checked on it) and the time budget
    counts the time already spent. ``max_steps`` and ``budget_s`` may change on resume (e.g. to
    extend a run), except the one the cosine schedule decays over, which would leave the rest of
    the run on neither schedule. A model with no trainable parameters (e.g. persistence) is
    returned untouched with an empty report. ``val=(inputs, targets)`` is scored every
    ``val_every`` steps (default: at the end only); the time it takes does not count against
    ``budget_s``.
    ``on_step(step, loss)`` is called after every step; ``quiet=False`` shows a progress bar.

    ``clock`` says what ``budget_s`` and the reported seconds count: ``"wall"`` the elapsed time,
    ``"cpu"`` the CPU time of this process (all its threads) — the fair measure when models are
    compared at equal CPU budgets on a machine that other work may share.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x_all, y_all = _check_pairs(inputs, targets, "train")
    if val is not None:
        if not isinstance(val, (tuple, list)) or len(val) != 2:
            raise TypeError(f"val must be a pair (inputs, targets), got {type(val).__name__}")
        val = _check_pairs(val[0], val[1], "val")
        if val[0].shape[1:] != x_all.shape[1:] or val[1].shape[1:] != y_all.shape[1:]:
            raise ValueError(
                f"val must hold sequences shaped like inputs/targets {tuple(x_all.shape[1:])} / "
                f"{tuple(y_all.shape[1:])}, got {tuple(val[0].shape[1:])} / "
                f"{tuple(val[1].shape[1:])}"
            )
    if budget_s is None and max_steps is None:
        raise ValueError("give max_steps or budget_s (or both): training needs a stopping rule")
    if max_steps is not None:
        max_steps = positive_int("max_steps", max_steps)
    if budget_s is not None:
        if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)):
            raise TypeError(f"budget_s must be a number of seconds, got {budget_s!r}")
        if not 0 < budget_s < math.inf:
            raise ValueError(f"budget_s must be a finite number of seconds > 0, got {budget_s!r}")
    batch_size = positive_int("batch_size", batch_size)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    if val_every is not None:
        val_every = positive_int("val_every", val_every)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {list(CLOCKS)}, got {clock!r}")
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)} or a callable, got {loss!r}")
        objective = LOSSES[loss]
        if loss_name is not None:
            raise ValueError(
                f"loss_name names a callable loss; loss is already the name {loss!r}, got "
                f"loss_name={loss_name!r}"
            )
        loss_name = loss
    elif callable(loss):
        objective = loss
        if loss_name is None:
            loss_name = _loss_name(loss)
        elif not isinstance(loss_name, str) or not loss_name:
            raise TypeError(f"loss_name must be a non-empty string, got {loss_name!r}")
    else:
        raise TypeError(f"loss must be a name in {list(LOSSES)} or a callable, got {loss!r}")
    model_config = _json_config(model_config)
    now = CLOCKS[clock]
    seed = positive_int("seed", seed, 0)

    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        return TrainReport(steps=0, seconds=0.0, losses=[])
    device = torch.device(device)
    dtype = parameters[0].dtype
    sixteen_bit = sixteen_bit_weights(model)
    if sixteen_bit is not None:
        warnings.warn(sixteen_bit, UserWarning, stacklevel=user_stacklevel())
    model.to(device)
    model.train()
    optimizer = torch.optim.Adam(parameters, lr=lr)
    config = _config(
        len(x_all), max_steps, budget_s, batch_size, lr, seed, schedule, clock, loss_name
    )
    path = None if checkpoint is None else Path(checkpoint)
    batches = torch.Generator().manual_seed(seed)
    record = {"fingerprint": None, "validation_fingerprint": None, "model_config": model_config}
    if path is not None:
        from ..training.fingerprint import fingerprint  # physml.training imports physml.models

        record["fingerprint"] = fingerprint(TensorDataset(x_all, y_all))
        if val is not None:
            record["validation_fingerprint"] = fingerprint(TensorDataset(*val))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        run = _Run()
        if path is not None and path.exists():
            run = _resume(path, model, optimizer, config, record, batches)
        bar = progress_bar(None, not quiet, "train", max_steps, initial=run.step, unit="step")
        started = now() - run.seconds

        def more() -> bool:
            within_steps = max_steps is None or run.step < max_steps
            return within_steps and (budget_s is None or now() - started < budget_s)

        with bar:
            while more():
                if run.position + batch_size > len(run.order):
                    run.order = torch.randperm(len(x_all), generator=batches)
                    run.position = 0
                pick = run.order[run.position : run.position + batch_size]
                run.position += batch_size
                if max_steps is not None:
                    progress = run.step / max_steps
                else:
                    progress = (now() - started) / budget_s
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(lr, schedule, progress)
                x, y = x_all[pick].to(device, dtype), y_all[pick].to(device, _loss_dtype(dtype))
                value = objective(_predict(model, x, y.shape).to(y.dtype), y)
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else value
                    raise ValueError(f"loss must return a scalar tensor, got {shape!r}")
                if not torch.isfinite(value):
                    raise FloatingPointError(
                        f"training loss became {float(value.detach())} at step {run.step}"
                        + ("" if sixteen_bit is None else f" ({sixteen_bit})")
                    )
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                run.step += 1
                run.losses.append(float(value.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{run.losses[-1]:.4g}")
                if val is not None and val_every is not None and run.step % val_every == 0:
                    paused = now()
                    run.val_losses.append(
                        (run.step, _validation_mse(model, val, batch_size, device))
                    )
                    started += now() - paused  # validation is not training time
                if path is not None and run.step % checkpoint_every == 0:
                    run.seconds = now() - started
                    _save(path, model, optimizer, config, record, run, batches)
                if on_step is not None:
                    on_step(run.step, run.losses[-1])
        run.seconds = now() - started
        if val is not None and (not run.val_losses or run.val_losses[-1][0] != run.step):
            run.val_losses.append((run.step, _validation_mse(model, val, batch_size, device)))
        if path is not None:
            _save(path, model, optimizer, config, record, run, batches)
    return TrainReport(
        steps=run.step, seconds=run.seconds, losses=run.losses, val_losses=run.val_losses
    )


def evaluate_forecaster(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> ForecastScores:
    """Score ``model`` on ``inputs`` → ``targets`` (``(N, T, C, H, W)``, values on a [0, 1] scale)
    with :func:`score_forecast`; the forecasts are made ``batch_size`` sequences at a time, on
    ``device``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x_all, y_all = _check_pairs(inputs, targets, "train")
    batch_size = positive_int("batch_size", batch_size)
    device = torch.device(device)
    dtype = model_dtype(model, x_all.dtype)
    sums = torch.zeros(3, y_all.shape[1], dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x_all), batch_size):
                x = x_all[start : start + batch_size].to(device, dtype)
                y = y_all[start : start + batch_size].to(device)
                sums += _score_sums(_predict(model, x, y.shape), y)
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
