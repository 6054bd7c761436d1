"""Training of video forecasters ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)`` on the one
:class:`~physml.training.trainer.Trainer`.

:func:`train_forecaster` fits any such model (Earthformer, the baselines in
:mod:`physml.models.baselines`, a user's own) with an MSE (or L1, or a user's) loss and Adam,
for a number of steps or for a time budget (so competing models get the same CPU time), and
resumes a killed run from its checkpoint (:func:`load_forecaster` reads a finished one back).
:func:`~physml.models.forecasting.evaluate_forecaster` scores the trained model.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pdes.checks import positive_int

from .._checks import choice, flag, optional_positive
from .._checks import device as checked_device
from .._clock import CLOCK_CHOICE, CLOCKS
from ..models.forecasting import check_forecast_pairs, checked_forecast
from .checkpoint import (
    CheckpointError,
    check_same_model,
    checkpoint_path,
    load_checkpoint,
    load_weights,
)
from .generators import generators_kept
from .trainer import TrainConfig, Trainer

SCHEDULES = ("cosine", "none")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, Loss] = {
    "mse": lambda prediction, target: (prediction - target).square().mean(),
    "l1": lambda prediction, target: (prediction - target).abs().mean(),
}
"""Named training losses ``(prediction, target) -> scalar``, each averaged over every element."""
RESUME_REMEDY = "use another checkpoint path"
"""What a refused resume advises (train_forecaster's ``checkpoint`` argument, not physml train's
``--out`` flag)."""
READ_REMEDY = "read the folder of the run trained with this model_config"
"""What :func:`load_forecaster` advises where the run holds another model."""
RESTART = (
    "restore an intact copy, delete it to start that training over, or use another checkpoint "
    "path (physml run/demo: another --out)"
)
"""What the refusal of a damaged checkpoint file advises."""
RETRAIN = (
    "train again with another checkpoint path and a lower learning rate (lr); a resumed run "
    "keeps its settings"
)
"""What a run that diverged advises."""
RETRAIN_UNSAVED = "train again with a lower learning rate (lr)"
"""What a run that diverged advises where it kept no checkpoint."""
SETTING_NAMES = {"steps": "max_steps", "batch": "batch_size", "validate_every": "val_every"}
"""The Trainer's settings by :func:`train_forecaster`'s names for them, where they differ."""
OLD_CHECKPOINT = (
    "{argument}: {path!r} is an old single-file forecaster checkpoint, which can no longer be "
    "resumed (train_forecaster keeps a run folder, {folder!r}): delete it or use another "
    "{argument}"
)
"""The refusal of :func:`check_no_old_checkpoint`."""


@dataclass
class ForecasterReport:
    """What a :func:`train_forecaster` run did: ``steps`` taken in total (across resumes),
    ``seconds`` of training in total (on the run's clock), ``losses`` the loss of every step, and
    ``val_losses`` its ``(step, val_mse)`` pairs when ``val`` was given (NaN for a score that is
    not finite)."""

    steps: int
    seconds: float
    losses: list[float]
    val_losses: list[tuple[int, float]] = field(default_factory=list)


TrainReport = ForecasterReport
"""Another name of :class:`ForecasterReport`, for code that imports it by this name;
:class:`physml.training.TrainReport` is a different class, the
:class:`~physml.training.trainer.Trainer`'s report."""


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype losses are taken in: ``dtype``, at least float32 (an MSE of values ~300
    overflows float16)."""
    return torch.promote_types(dtype, torch.float32)


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
) -> ForecasterReport:
    """Fit ``model`` to map ``inputs`` ``(N, T_in, C, H, W)`` to ``targets`` ``(N, T_out, C, H, W)``
    with the :class:`~physml.training.Trainer` and report what happened.

    Adam on ``loss``: ``"mse"`` (the default) or ``"l1"`` of the forecast's error, averaged over
    every element, or any ``loss(prediction, target) -> scalar tensor``, given both in the
    model's dtype, float32 at least (16-bit weights are warned about: Adam fails on them). A
    checkpoint records and checks on resume a callable's module and ``__qualname__`` (a
    ``functools.partial``'s function and arguments), or ``loss_name`` when given: give it where
    that does not tell two losses apart (lambdas are all ``<lambda>``, a loss object is named by
    its class);
    mini-batches of ``batch_size`` sequences (all of them where there are fewer), on ``device``,
    drawn without replacement in an order the Trainer's sampler fixes by ``seed`` (which also
    seeds torch's, numpy's and Python's global generators inside the run, for models with
    dropout; the caller's generators are left as they were).
    Stops after ``max_steps`` steps or ``budget_s`` seconds of training, whichever comes first
    (at least one must be given). ``lr`` is the learning rate, the schedule's start;
    ``schedule="cosine"`` decays it to 0 over ``max_steps`` steps, or over ``budget_s`` seconds
    when only the budget is given (then the run is not step-for-step reproducible: the clock
    decides).

    With ``checkpoint``, a run folder (its ``checkpoint.pt`` is the Trainer's one format), the
    state (model, optimizer, step, random states, losses, time used) is saved atomically every
    ``checkpoint_every`` steps and at the end; a run started on a folder holding a checkpoint
    resumes from it (the settings, the loss, the training data, the model's ``model_config`` —
    a dict of JSON values, e.g. the settings the model was built with; without one the saved one
    is kept — and, once validation losses were recorded, ``val`` must match) and the time budget
    counts the time already spent. ``max_steps`` and ``budget_s`` may change on resume (e.g. to
    extend a run), except the one the cosine schedule decays over, which would leave the rest of
    the run on neither schedule. A model with no trainable parameters (e.g. persistence) is
    returned untouched with an empty report; a trained one is left in the train/eval mode it came
    in, and trains in train mode except its submodules in eval mode whose parameters are all
    frozen (``requires_grad`` False), which stay in eval mode (a frozen pretrained part keeps its
    BatchNorm statistics). ``val=(inputs, targets)`` is scored by its MSE (whatever ``loss`` is)
    every ``val_every`` steps and at the end; the time it takes does not count against
    ``budget_s``. ``on_step(step, loss)`` is called after every step, before that step's
    validation and checkpoint; its time counts against ``budget_s``. ``quiet=False`` shows a
    progress bar. ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (a ``torch.device`` of
    those).

    ``clock`` says what ``budget_s`` and the reported seconds count: ``"wall"`` the elapsed time,
    ``"cpu"`` the CPU time of this process (all its threads) — the fair measure when models are
    compared at equal CPU budgets on a machine that other work may share. A killed run resumes
    with the seconds up to its last checkpoint: the steps after it are trained again and counted
    once, so its machine time exceeds the budget.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x_all, y_all = check_forecast_pairs(inputs, targets, "train")
    if val is not None:
        if not isinstance(val, (tuple, list)) or len(val) != 2:
            raise TypeError(f"val must be a pair (inputs, targets), got {type(val).__name__}")
        val = check_forecast_pairs(val[0], val[1], "val")
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
    budget_s = optional_positive(
        "budget_s", budget_s, "a finite number of seconds > 0", "no time budget"
    )
    batch_size = positive_int("batch_size", batch_size)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    if val_every is not None:
        val_every = positive_int("val_every", val_every)
    lr = optional_positive("lr", lr)
    choice("schedule", schedule, SCHEDULES)
    choice("clock", clock, tuple(CLOCKS), CLOCK_CHOICE)
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
    seed = positive_int("seed", seed, 0)
    quiet = flag("quiet", quiet)
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be a callable on_step(step, loss) or None, got {on_step!r}")
    if checkpoint is not None:
        _check_folder_path(checkpoint, ", or None for no checkpoint")
    device = checked_device("device", device)

    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        return ForecasterReport(steps=0, seconds=0.0, losses=[])
    out = None if checkpoint is None else Path(checkpoint)
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(
            f"checkpoint: {str(out)!r} is a file (older physml wrote a forecaster's checkpoint "
            "as one); train_forecaster keeps its checkpoint in a run folder (checkpoint.pt in "
            f"it): delete it, or {RESUME_REMEDY} (physml run/demo: another --out)"
        )
    if model_config is None and out is not None and checkpoint_path(out).exists():
        saved = load_checkpoint(out, remedy=RESTART).get("model_config")  # kept on resume
        model_config = saved.get("model_config") if isinstance(saved, dict) else None
    dtype = parameters[0].dtype
    target_dtype = _loss_dtype(dtype)

    def scored(objective: Loss) -> Callable[[nn.Module, list[torch.Tensor]], torch.Tensor]:
        def batch_loss(trained: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
            x, y = batch[0].to(dtype), batch[1].to(target_dtype)
            prediction = checked_forecast(trained, x, y.shape).to(y.dtype)
            value = objective(prediction, y)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else value
                raise ValueError(f"loss must return a scalar tensor, got {shape!r}")
            if torch.is_grad_enabled() and not value.requires_grad:  # a training step
                if not prediction.requires_grad:
                    raise ValueError(
                        "model(inputs) must depend on the model's trainable parameters: its "
                        "forecast carries no gradient (computed under torch.no_grad() or "
                        "detached?)"
                    )
                raise ValueError(
                    "loss(prediction, target) must depend on the prediction: its value carries "
                    "no gradient (detached, computed under torch.no_grad(), or from the target "
                    "alone?)"
                )
            return value.reshape(())

        return batch_loss

    def stepped(_: nn.Module, step: int) -> None:
        on_step(step, trainer.report_.losses[-1])

    config = TrainConfig(
        steps=max_steps,
        batch=min(batch_size, len(x_all)),
        lr=float(lr),
        schedule="constant" if schedule == "none" else schedule,
        seed=seed,
        checkpoint_every=checkpoint_every,
        validate_every=0 if val is None or val_every is None else val_every,
        device=str(device),
        budget_s=budget_s,
        clock=clock,
    )
    trainer = Trainer(
        model,
        scored(objective),
        config,
        out=out,
        model_config={"model_config": model_config, "loss": loss_name},
        quiet=quiet,
        after_step=None if on_step is None else stepped,
        remedy=RESUME_REMEDY,
        retrain=RETRAIN_UNSAVED if out is None else RETRAIN,
        validation_loss=scored(LOSSES["mse"]),
        restore=RESTART,
        setting_names=SETTING_NAMES,
        schedule_names={"constant": "none"},
    )
    cuda = []
    if device.type == "cuda":
        cuda = [torch.cuda.current_device() if device.index is None else device.index]
    with generators_kept(cuda):  # the Trainer seeds torch's, numpy's and Python's generators
        validation = None if val is None else TensorDataset(*val)
        report = trainer.fit(TensorDataset(x_all, y_all), validation)
    return ForecasterReport(
        steps=report.steps,
        seconds=report.train_s,
        losses=report.losses,
        val_losses=[(step, math.nan if v is None else v) for step, v in report.validation],
    )


def _check_folder_path(checkpoint: object, otherwise: str = "", name: str = "checkpoint") -> None:
    """A ``TypeError`` unless ``checkpoint`` (the argument ``name``) is a ``str`` or
    ``os.PathLike``, a ``ValueError`` if it is empty (``Path("")`` is the working folder);
    ``otherwise`` ends what is expected."""
    expected = f"{name} must be the path of a run folder{otherwise}"
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"{expected} (a str or a Path), got {checkpoint!r}")
    if not os.fspath(checkpoint):
        raise ValueError(f"{expected}, got {checkpoint!r}")


def load_forecaster(
    model: nn.Module, checkpoint: str | os.PathLike, model_config: dict | None = None
) -> ForecasterReport:
    """Load into ``model`` the weights of the :func:`train_forecaster` run in the folder
    ``checkpoint`` and return that run's report, without training (a finished run read back).

    ``model_config``, where given, must be the one the run recorded (a ``CheckpointError``
    naming what differs otherwise). A run that has not finished (stopped, interrupted, or
    still training) is read as it stands: the weights of its last checkpoint and its report up
    to that step (``steps``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_folder_path(checkpoint)
    state = load_checkpoint(checkpoint, remedy=RESTART)
    saved = state.get("model_config")
    if model_config is not None:
        recorded = {"model_config": saved.get("model_config") if isinstance(saved, dict) else None}
        check_same_model(
            {"model_config": recorded},
            {"model_config": _json_config(model_config)},
            checkpoint,
            READ_REMEDY,
        )
    load_weights(model, state, checkpoint, "this model")
    return ForecasterReport(
        steps=int(state["step"]),
        seconds=float(state.get("train_s", 0.0)),
        losses=[float(v) for v in state["losses"]],
        val_losses=[(int(s), math.nan if v is None else float(v)) for s, v in state["validation"]],
    )


def check_no_old_checkpoint(folder: str | os.PathLike, argument: str) -> None:
    """A ``CheckpointError`` in one line where ``folder`` (the run folder a script passes as
    :func:`train_forecaster`'s ``checkpoint``) does not exist but ``<folder>.pt``, an old
    single-file checkpoint, does: it can no longer be resumed, and the run would otherwise
    silently start over. ``argument`` names the script's option for the work folder."""
    if not isinstance(argument, str) or not argument:
        raise TypeError(f"argument must name the script's option (a str), got {argument!r}")
    _check_folder_path(folder, name="folder")
    folder = Path(folder)
    if folder.name in ("", ".."):  # "." or "..": the folder by its own name
        folder = Path(os.path.abspath(folder))
    if not folder.name:
        return  # a root: nothing beside it
    old = folder.with_name(folder.name + ".pt")
    if old.is_file() and not folder.exists():
        raise CheckpointError(
            OLD_CHECKPOINT.format(argument=argument, path=str(old), folder=str(folder))
        )
