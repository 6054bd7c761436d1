"""The training loop every model family shares.

A step draws the next slice of a permutation of the training set fixed by ``(seed, epoch)``: the
global batch is the same whatever the number of processes, each rank taking ``batch / world``
samples of it (``DistributedSampler`` with ``set_epoch``). The learning rate is a function of the
step alone, so a run resumed from a checkpoint replays exactly what the uninterrupted run did (a
run given a time budget and no steps decays it over the seconds used instead, which the clock
decides).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, default_collate

from pdes.checks import non_negative, positive_int

from .._checks import NonFiniteError, choice, flag, optional_positive
from .._checks import device as checked_device
from .._clock import CLOCK_CHOICE, CLOCKS
from .._io import exclusive_lock, remove_leftovers
from .._progress import progress_bar
from ..errors import user_stacklevel
from ..models.common import sixteen_bit_weights
from .checkpoint import NAME as CHECKPOINT_NAME
from .checkpoint import (
    OUT_REMEDY,
    RESTORE,
    CheckpointError,
    check_same_config,
    check_same_data,
    check_same_model,
    check_same_pde,
    check_same_validation,
    checkpoint_path,
    load_checkpoint,
    load_weights,
    refused_global,
    save_checkpoint,
    torch_reason,
)
from .distributed import World, world
from .fingerprint import fingerprint, item_rows, item_tensors
from .generators import generators_kept, host_states, seed_host_generators, set_host_states

Loss = Callable[[nn.Module, object], torch.Tensor]
SCHEDULES = ("cosine", "constant")
INTEGER_SETTINGS = {
    "steps": 1,
    "batch": 1,
    "accumulate": 1,
    "seed": 0,
    "checkpoint_every": 1,
    "validate_every": 0,
}
"""The integer settings of :class:`TrainConfig` and their least values."""
MAX_SEED = 2**62
OPTIONAL_SETTINGS = {
    "budget_s": ("a finite number of seconds > 0", "no time budget"),
    "clip": ("a finite number > 0", "no clipping"),
}
"""For each setting that may be None, what its value must be and what None means."""
EXTRA_STATE = "_extra_state"
"""The last part of the state-dict key of a module's ``get_extra_state()``."""
LOCK = ".train.lock"
"""The lock file a run holds in its folder ``out`` while it trains."""


def check_device(device: str) -> torch.device:
    """``device`` as a torch device that exists here, else a one-line error naming ``device``."""
    return checked_device("device", device)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (a TOML file or the CLI flags give the same fields).

    ``steps`` optimiser steps in all; ``lr`` Adam's learning rate, the schedule's start;
    ``schedule`` ``"cosine"`` (default: half a cosine from ``lr`` down to 0 at ``steps``, see
    :meth:`learning_rate`) or ``"constant"``. ``batch`` is the global batch (divided among
    ``torchrun`` processes); ``accumulate`` splits each process's share into that many micro-batches
    whose gradients add up before the step (the same step up to rounding, in less memory;
    micro-batch ``j`` takes every ``accumulate``-th sample, as ``torchrun`` ranks do, so one process
    with ``accumulate = 2`` adds the same gradients in the same order as two processes and matches
    them bit for bit); ``clip`` the largest gradient norm (``None``: no clipping); ``weight_decay``
    Adam's L2 penalty, ``weight_decay × w`` added to the gradient before the moment estimates
    (``torch.optim.Adam``'s coupled decay, not AdamW's decoupled shrink of the weights);
    ``checkpoint_every`` and ``validate_every`` count steps (``validate_every = 0`` validates only
    at the end); validating, at ``validate_every`` or only at the end, needs a validation set passed
    to ``fit``. ``seed`` fixes the order of the samples and seeds torch's, numpy's and Python's
    global generators when a run starts afresh (a resumed run restores the states its checkpoint
    saved). ``device`` is where the model trains (``"cpu"``, ``"cuda"``, ``"cuda:1"``; the model
    and each batch are moved there).

    ``budget_s`` (``None``: no budget) stops the run once the seconds it trained reach it, or at
    ``steps``, whichever comes first; ``clock`` says what a second is: ``"wall"`` the elapsed
    time, ``"cpu"`` the CPU time of this process (all its threads: the fair measure for models
    compared at equal budgets on a shared machine). The seconds counted are training only (not
    validation, not checkpoint writes; the time of the Trainer's ``after_step`` does count),
    saved in the checkpoint and carried over by a resume. A killed run carries the seconds up to
    its last checkpoint: the steps after it are trained again on resume and counted once, so the
    machine time of a killed run exceeds its budget. ``steps`` may be ``None`` when a budget is
    given: the cosine schedule then decays over the budget's seconds, and the run is not
    step-for-step reproducible (the clock decides). ``budget_s`` may change on resume, except
    that of a run whose cosine schedule decays over it; ``clock`` may not.
    """

    steps: int | None = 1000
    batch: int = 32
    accumulate: int = 1
    lr: float = 1e-3
    schedule: str = "cosine"
    clip: float | None = None
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100
    validate_every: int = 0
    device: str = "cpu"
    budget_s: float | None = None
    clock: str = "wall"

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "budget_s",
            optional_positive("budget_s", self.budget_s, *OPTIONAL_SETTINGS["budget_s"]),
        )
        if self.steps is None and self.budget_s is None:
            raise ValueError(
                "steps may be None only with a time budget: give steps (a number of optimiser "
                "steps) or budget_s (seconds of training), or both; got steps=None and "
                "budget_s=None"
            )
        choice("clock", self.clock, tuple(CLOCKS), CLOCK_CHOICE)
        plain: dict = {
            name: positive_int(name, getattr(self, name), minimum)
            for name, minimum in INTEGER_SETTINGS.items()
            if not (name == "steps" and self.steps is None)
        }
        if plain["seed"] > MAX_SEED:
            raise ValueError(
                f"seed must be an integer in [0, 2**62], got {self.seed} (the shuffle of epoch e "
                "is seeded with seed + e, a 63-bit integer)"
            )
        plain["lr"] = optional_positive("lr", self.lr)
        plain["weight_decay"] = non_negative("weight_decay", self.weight_decay)
        if self.clip is not None:
            plain["clip"] = optional_positive("clip", self.clip, *OPTIONAL_SETTINGS["clip"])
        for name, value in plain.items():  # numpy numbers would not load with weights_only=True
            object.__setattr__(self, name, value)
        choice("schedule", self.schedule, SCHEDULES)
        check_device(self.device)

    def learning_rate(self, step: int, used: float = 0.0) -> float:
        """The rate of step ``step``, begun after ``used`` seconds of training: ``lr``, or
        ``lr · (1 + cos(π · step / steps)) / 2``, or without ``steps``
        ``lr · (1 + cos(π · min(used / budget_s, 1))) / 2``."""
        if self.schedule == "constant":
            return self.lr
        if self.steps is None:
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * min(used / self.budget_s, 1.0)))
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * step / self.steps))


LATER_SETTINGS = {"accumulate": 1, "budget_s": None, "clock": "wall"}
"""Settings added after checkpoints were first written, with the value those runs had."""


@dataclass
class TrainReport:
    """What a run did: ``steps`` the steps it was asked for, or, where it stopped early, the
    step it stopped at when that was the time budget or when it ran without ``steps``;
    ``losses`` the loss of every step (mean over ranks), ``validation`` the ``(step, loss)`` of
    each validation (``None`` where not finite), ``resumed_from`` the step the run resumed at
    (0: a fresh start), ``wall_s`` the seconds this call trained and ``samples_per_s`` its
    samples a second; ``stopped_at`` the step an ``on_validation`` stop or the time budget ended
    the run at (``None``: it ran all ``steps``); ``train_s`` the seconds of training on the
    config's clock, all calls on the run together (what ``budget_s`` counts: no validation, no
    checkpoint writes)."""

    steps: int | None
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float | None]] = field(default_factory=list)
    resumed_from: int = 0
    wall_s: float = 0.0
    samples_per_s: float = 0.0
    stopped_at: int | None = None
    train_s: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1]


def plain_config(name: str, value: object, tensors: bool = False) -> object:
    """``value`` with numpy numbers made Python ones, or a ``TypeError`` naming where a value a
    checkpoint read with ``weights_only=True`` could not hold sits (numbers, strings, booleans,
    ``None``, tensors where ``tensors``, and lists, tuples and string-keyed dicts of them are
    kept)."""
    if tensors and isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.generic) and isinstance(value.item(), (bool, int, float, str)):
        return value.item()
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (list, tuple)):
        kind = tuple if isinstance(value, tuple) else list
        return kind(plain_config(f"{name}[{i}]", item, tensors) for i, item in enumerate(value))
    if isinstance(value, dict):
        for key in value:
            if type(key) is not str:
                raise TypeError(f"{name} must have string keys, got the key {key!r}")
        return {key: plain_config(f"{name}[{key!r}]", item, tensors) for key, item in value.items()}
    raise TypeError(
        f"{name} must be a {'tensor, ' if tensors else ''}number, string, boolean, None, or a "
        f"list or dict of them (what a checkpoint holds), got {value!r}"
    )


RETRAIN = (
    "train again in another folder (out, --out) with a lower learning rate (lr, --lr) or clipped "
    "gradients (clip, --clip); a resumed run keeps its settings"
)


def _diverged(step: int, what: str, advice: str = RETRAIN) -> FloatingPointError:
    """The error of a run whose updates blew up at (0-based) ``step``; ``advice`` what to
    change."""
    return FloatingPointError(f"training diverged at step {step + 1} ({what}): {advice}")


def _not_finite(
    step: int,
    what: str,
    model: nn.Module,
    train: Dataset,
    indices: list[int],
    advice: str = RETRAIN,
) -> FloatingPointError:
    """The error of a loss or gradient norm that is not finite at (0-based) ``step`` on the
    training samples ``indices``: blamed on the samples holding NaN or inf, else on the updates
    if they left non-finite weights, else on the loss (or, after step 1, a divergence; ``advice``
    what to change then)."""
    bad = [i for i in indices if not _finite_item(train[i])]
    if bad:
        return FloatingPointError(
            f"{what} at step {step + 1}: {_samples(bad)} hold NaN or inf values; the data is "
            "at fault, not the learning rate (fix or drop these samples)"
        )
    if not _finite_weights(model):
        return _diverged(step, what, advice)
    if step == 0:
        return FloatingPointError(
            f"{what} at step 1, before any update: the loss or the data is at fault, not the "
            f"learning rate (on {_samples(indices)})"
        )
    return FloatingPointError(
        f"{what} at step {step + 1} on {_samples(indices)}, whose data is finite, with finite "
        f"weights: the loss is not finite on them (a log or a division at 0?), or training "
        f"diverged at step {step + 1}: {advice}"
    )


def _samples(indices: list[int], shown: int = 10) -> str:
    """``the training samples [3, 7]``, the list cut after ``shown`` indices."""
    listed = ", ".join(str(i) for i in indices[:shown])
    more = f", … ({len(indices)} in all)" if len(indices) > shown else ""
    return f"the training samples [{listed}{more}]"


def _finite_item(item: object) -> bool:
    """Whether every number in a dataset item (:func:`~physml.training.fingerprint.item_tensors`)
    is finite."""
    return all(bool(torch.isfinite(tensor).all()) for tensor in item_tensors(item))


def _scalar(loss: object) -> torch.Tensor:
    """``loss``, or an error naming it unless it is a 0-d tensor."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"loss must return a 0-d tensor (the batch's scalar loss), got {type(loss).__name__}"
        )
    if loss.ndim != 0:
        raise ValueError(
            f"loss must return a 0-d tensor (the batch's scalar loss), got shape "
            f"{tuple(loss.shape)} (reduce it, e.g. with .mean())"
        )
    return loss


def _check_dataset(name: str, dataset: object) -> None:
    """``TypeError`` unless ``dataset`` has a length and items; ``ValueError`` if it is empty."""
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"{name} must be a dataset (len() and [i], e.g. a TensorDataset), got "
            f"{type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise ValueError(f"{name} must hold at least one sample, got an empty dataset")


def _finite_weights(model: nn.Module) -> bool:
    """Whether every parameter of ``model`` is finite (NaN weights: the run diverged)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _word_map(name: str, value: object) -> dict[str, str]:
    """``value``, a mapping of non-empty strings to non-empty strings, or ``None`` (empty), as a
    dict; a ``TypeError`` naming ``name`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(item, str) and item for pair in value.items() for item in pair
    ):
        raise TypeError(f"{name} must map non-empty strings to non-empty strings, got {value!r}")
    return dict(value)


class Trainer:
    """Train ``model`` on ``loss(model, batch)`` with Adam, checkpointing into ``out``.

    Adam's ``weight_decay`` is the coupled L2 penalty of ``torch.optim.Adam`` (added to the
    gradient), not AdamW's decoupled decay. ``fit`` trains in train mode, except the submodules
    that were in eval mode and have parameters, all frozen (``requires_grad`` False: a fixed
    pretrained part keeps its BatchNorm statistics and drops no units); submodules without
    parameters (a dropout, an activation) follow their parent's mode; ``fit`` and ``validate``
    leave every submodule in the mode it was in. The report of the last ``fit`` is ``report_``
    (filled as the run goes: after an exception it holds the steps done).

    Mixed precision needs no option: keep the weights float32 and run the forward in 16 bits
    inside ``loss``, the loss itself in float32::

        def loss(model, batch):
            x, y = batch
            with torch.autocast("cpu", dtype=torch.bfloat16):  # "cuda" on a GPU
                prediction = model(x)
            return (prediction.float() - y).square().mean()

    Adam then updates float32 weights (16-bit weights are warned about: float16 zeroes Adam's
    second moment, bfloat16 rounds small steps away). Prefer bfloat16: float16 autocast would
    also need its gradients scaled (``torch.amp.GradScaler``), which the Trainer does not do.

    Args:
        model: any ``nn.Module``.
        loss: called as ``loss(model, batch)`` with the model (wrapped in DDP under ``torchrun``)
            and a collated batch of the dataset's items; returns the scalar loss of that batch.
        config: a :class:`TrainConfig`.
        out: the run's folder (``"."`` for the working folder; ``""`` is refused); a
            checkpoint there is resumed (same data, same model config).
        model_config: what rebuilds the model (saved in the checkpoint, checked on resume).
        quiet: no progress bar (none is drawn either where stderr is neither a terminal nor
            a Jupyter kernel's output).
        after_step: called as ``after_step(model, step)`` after every optimiser step (``step``
            counts the steps done), before that step's validation; state it keeps must live in
            the model (an EMA copy as a submodule) so that it is checkpointed and resumed with it.
        on_validation: called as ``on_validation(model, step, loss)`` after each validation
            (``loss`` the validation loss, a float, NaN or inf where not finite); returning
            ``True`` stops training there (early stopping): the step is checkpointed and ``fit``
            returns the report, with ``stopped_at`` set (a later ``fit`` into the same ``out``
            resumes from it). Under ``torchrun`` rank 0's answer counts.
        remedy: where else to train, in the refusals to resume (default: ``use another out=
            folder``; physml train passes its ``use another --out``, a task or script its own).
        retrain: what to change, in the error of a run that diverged (default: another folder,
            a lower ``lr`` or ``clip``, named as arguments and as physml train's flags); a model
            with 16-bit weights is told about them instead.
        validation_loss: called as ``loss`` is, on the validation batches only (default
            ``loss``): a score other than the training loss (an MSE beside an L1 objective).
        restore: what the refusal of a damaged checkpoint file in ``out`` advises (default:
            restore an intact copy, or delete it).
        setting_names: the :class:`TrainConfig` fields by the caller's names for them, where
            they differ, in the refusals to resume (``{"batch": "batch_size"}``).
        schedule_names: the schedules by the caller's names for them, likewise
            (``{"constant": "none"}``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss,
        config: TrainConfig,
        out: str | Path | None = None,
        model_config: dict | None = None,
        quiet: bool = False,
        after_step: Callable[[nn.Module, int], None] | None = None,
        remedy: str = OUT_REMEDY,
        on_validation: Callable[[nn.Module, int, float], bool | None] | None = None,
        retrain: str = RETRAIN,
        validation_loss: Loss | None = None,
        restore: str = RESTORE,
        setting_names: Mapping[str, str] | None = None,
        schedule_names: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"loss must be a callable loss(model, batch), got {type(loss)}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if out is not None and not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out must be a folder path (str or Path) or None, got {out!r}")
        if out is not None and not os.fspath(out):
            raise ValueError(
                f"out must be a folder path or None, got the empty path {out!r} (which would "
                "train into the working folder: pass '.' for that)"
            )
        self.model, self.loss, self.config = model, loss, config
        self.out = None if out is None else Path(out)
        self.model_config = plain_config("model_config", model_config)
        self.quiet = flag("quiet", quiet)
        if after_step is not None and not callable(after_step):
            raise TypeError(f"after_step must be callable(model, step), got {type(after_step)}")
        self.after_step = after_step
        if on_validation is not None and not callable(on_validation):
            raise TypeError(
                f"on_validation must be callable(model, step, loss), got {type(on_validation)}"
            )
        self.on_validation = on_validation
        self.report_: TrainReport | None = None
        if not isinstance(remedy, str) or not remedy:
            raise TypeError(f"remedy must be a non-empty string, got {remedy!r}")
        self.remedy = remedy
        if not isinstance(retrain, str) or not retrain:
            raise TypeError(f"retrain must be a non-empty string, got {retrain!r}")
        self.retrain = retrain
        if validation_loss is not None and not callable(validation_loss):
            raise TypeError(
                "validation_loss must be a callable validation_loss(model, batch) or None, got "
                f"{type(validation_loss)}"
            )
        self.validation_loss = validation_loss
        if not isinstance(restore, str) or not restore:
            raise TypeError(f"restore must be a non-empty string, got {restore!r}")
        self.restore = restore
        self.setting_names = _word_map("setting_names", setting_names)
        self.schedule_names = _word_map("schedule_names", schedule_names)

    # ------------------------------------------------------------------------------------ run

    def fit(self, train: Dataset, validation: Dataset | None = None) -> TrainReport:
        """Train to ``config.steps``, or until ``config.budget_s`` seconds of training are used
        (resuming from ``out`` when a checkpoint is there). A run resumed with nothing left to
        train validates at its step, where ``validation`` is given and none is recorded there."""
        config, here = self.config, world(self.config.device)
        device = check_device(config.device)
        _check_dataset("train", train)
        if next(self.model.parameters(), None) is None:
            name = type(self.model).__name__
            raise ValueError(f"model has no parameters ({name}): nothing to train")
        if config.batch % (here.size * config.accumulate):
            raise ValueError(
                f"batch ({config.batch}) must be divisible by the {here.size} processes × "
                f"accumulate ({config.accumulate})"
            )
        if config.batch > len(train):
            raise ValueError(f"batch ({config.batch}) exceeds the {len(train)} training samples")
        if validation is not None:
            _check_dataset("validation", validation)
        elif config.validate_every:
            warnings.warn(
                f"validate_every is {config.validate_every} but fit got no validation set "
                "(validation=None; physml train: --val-fraction held out no sample): no "
                "validation loss is taken",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        if self.out is not None:  # refused now, not at the first checkpoint
            savable_state(self.model.state_dict())
        sixteen_bit = sixteen_bit_weights(self.model)
        if sixteen_bit is not None:
            warnings.warn(sixteen_bit, UserWarning, stacklevel=user_stacklevel())
        with self._hold_out(here), _modes_kept(self.model) as modes:
            return self._fit(train, validation, here, device, modes)

    def _fit(
        self,
        train: Dataset,
        validation: Dataset | None,
        here: World,
        device,
        modes: dict[nn.Module, bool],
    ) -> TrainReport:
        config = self.config
        data_print = fingerprint(train, "train")
        checked_on = None if validation is None else fingerprint(validation, "validation")
        model = self.model.to(device)
        optimiser = torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        report = self.report_ = TrainReport(steps=config.steps)
        torch.manual_seed(config.seed)
        seed_host_generators(config.seed)  # a resumed run sets the states it saved instead
        step, checked_on = self._resume(model, optimiser, data_print, checked_on, report)
        trained = DistributedDataParallel(model) if here.size > 1 else model
        sampler = DistributedSampler(
            train, here.size, here.rank, shuffle=True, seed=config.seed, drop_last=True
        )
        per_rank, per_epoch = config.batch // here.size, len(train) // config.batch
        order: tuple[int, list[int]] | None = None
        started, done = time.perf_counter(), step
        clock = CLOCKS[config.clock]
        shown = not self.quiet and here.is_main
        bar = progress_bar(None, shown, "train", config.steps, initial=step, dynamic_ncols=True)
        _train_modes(model, modes)
        out_of_time = self._out_of_time(report.train_s)
        finished = out_of_time or step == config.steps
        if finished and validation is not None and all(at != step for at, _ in report.validation):
            # resumed with nothing left to train: the run still ends on a validation
            self._validated(model, validation, device, step, report, here)
            self._save(model, optimiser, (data_print, checked_on), report, step, here)
        while not out_of_time and (config.steps is None or step < config.steps):
            began = clock()
            epoch, position = divmod(step, per_epoch)
            if order is None or order[0] != epoch:
                sampler.set_epoch(epoch)
                order = (epoch, list(sampler))
            indices = order[1][position * per_rank : (position + 1) * per_rank]
            for group in optimiser.param_groups:
                group["lr"] = config.learning_rate(step, report.train_s)
            optimiser.zero_grad(set_to_none=True)
            loss = self._backward(trained, train, indices, device, step)
            if config.clip is not None:
                norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            else:
                norm = nn.utils.get_total_norm(
                    [p.grad for p in model.parameters() if p.grad is not None]
                )
            if not torch.isfinite(norm):  # a finite loss whose gradients overflowed
                what = f"the gradient norm became {norm.item()}"
                raise _not_finite(step, what, model, train, indices, self._advice())
            optimiser.step()
            report.losses.append(_mean_over_ranks(loss.detach(), here))
            step += 1
            if self.after_step is not None:
                self.after_step(model, step)
            report.train_s += clock() - began
            if config.budget_s is not None:  # rank 0's seconds: one schedule, one stop for all
                report.train_s = here.number_from_main(report.train_s)
                out_of_time = self._out_of_time(report.train_s)
            bar.update(1)
            bar.set_postfix(loss=f"{report.losses[-1]:.4g}", refresh=False)
            end = step == config.steps or out_of_time
            stop = False
            if validation is not None and (
                end or (config.validate_every and step % config.validate_every == 0)
            ):
                stop = self._validated(model, validation, device, step, report, here)
            if stop or end or step % config.checkpoint_every == 0:
                self._save(model, optimiser, (data_print, checked_on), report, step, here)
            if stop and step != config.steps:
                report.stopped_at = step
                if config.steps is None:
                    report.steps = step
                break
        if out_of_time and step != config.steps:
            report.stopped_at = report.steps = step
        bar.close()
        report.wall_s = time.perf_counter() - started
        report.samples_per_s = (step - done) * config.batch / max(report.wall_s, 1e-9)
        return report

    def _validated(
        self, model, validation: Dataset, device, step: int, report: TrainReport, here: World
    ) -> bool:
        """Validate at ``step``, record the loss in ``report`` and return whether
        ``on_validation`` asks to stop."""
        value = self.validate(model, validation, device)
        if not math.isfinite(value):  # kept as None: report.json stays valid JSON
            warnings.warn(
                f"the validation loss at step {step} is {value}; recorded as None",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        report.validation.append((step, value if math.isfinite(value) else None))
        return self._stop_asked(model, step, value, here)

    def _out_of_time(self, used: float) -> bool:
        """Whether ``used`` seconds of training reach the budget (never without one)."""
        return self.config.budget_s is not None and used >= self.config.budget_s

    def _advice(self) -> str:
        """What a diverged run should change: its 16-bit weights, else ``retrain``."""
        return sixteen_bit_weights(self.model) or self.retrain

    def _stop_asked(self, model: nn.Module, step: int, loss: float, here: World) -> bool:
        """``on_validation``'s answer (rank 0's in every process)."""
        if self.on_validation is None:
            return False
        answer = self.on_validation(model, step, loss)
        if answer is not None and not isinstance(answer, (bool, np.bool_)):
            raise TypeError(
                f"on_validation must return True (stop training here), False or None, got "
                f"{answer!r}"
            )
        return here.flag_from_main(bool(answer))

    def _backward(self, trained, train: Dataset, indices: list[int], device, step: int):
        """Gradients of this process's share of the step, one micro-batch at a time (DDP
        synchronises on the last); returns the share's mean loss (detached)."""
        parts = self.config.accumulate
        total = None
        for part in range(parts):
            samples = indices[part::parts]
            batch = _to(_batch(train, samples), device)
            last = part == parts - 1
            with contextlib.nullcontext() if last else _no_sync(trained):
                try:
                    loss = _scalar(self.loss(trained, batch))
                except NonFiniteError as error:  # e.g. a loss refusing a NaN prediction
                    advice = self._advice()
                    raise _not_finite(step, str(error), trained, train, samples, advice) from None
                except ValueError as error:
                    if _finite_weights(trained):
                        raise
                    raise _diverged(step, str(error), self._advice()) from None
                if not torch.isfinite(loss):
                    what = f"the loss became {loss.item()}"
                    raise _not_finite(step, what, trained, train, samples, self._advice())
                if not loss.requires_grad:
                    raise ValueError(
                        "loss(model, batch) must depend on the model's parameters: its value "
                        "carries no gradient (computed under torch.no_grad(), detached, or from "
                        "the batch alone?)"
                    )
                (loss / parts).backward()  # x / 1 is x exactly: one part is the plain step
            total = loss.detach() if total is None else total + loss.detach()
        return total / parts

    def validate(self, model: nn.Module, dataset: Dataset, device: str | torch.device) -> float:
        """Mean loss (``validation_loss`` where given) over ``dataset`` in batches of
        ``config.batch`` (no gradient; random numbers the loss draws, from torch's, numpy's or
        Python's generators, come from copies of them, so validating leaves training as it was),
        in eval mode; every submodule is left in the mode it was in."""
        _check_dataset("validation", dataset)
        device = check_device(device)
        total, count = 0.0, 0
        cuda = []
        if device.type == "cuda":
            cuda = [torch.cuda.current_device() if device.index is None else device.index]
        with torch.no_grad(), generators_kept(cuda), _modes_kept(model):
            model.eval()
            for start in range(0, len(dataset), self.config.batch):
                indices = list(range(start, min(start + self.config.batch, len(dataset))))
                batch = _to(_batch(dataset, indices), device)
                loss = _scalar((self.validation_loss or self.loss)(model, batch))
                total += float(loss) * len(indices)
                count += len(indices)
        return total / count

    # ------------------------------------------------------------------------------ checkpoints

    @contextlib.contextmanager
    def _hold_out(self, here: World) -> Iterator[None]:
        """Lock ``out`` (rank 0) against a second run writing there and remove the temporary
        files of a checkpoint write a killed run left; the folders made here (``out`` and its
        missing parents) that are left empty go."""
        if self.out is None:
            yield
            return
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {str(self.out)!r} is a file; the Trainer writes a run folder")
        with contextlib.ExitStack() as held:
            refused = None
            if here.is_main:
                try:
                    made = _missing_folders(self.out)
                    self.out.mkdir(parents=True, exist_ok=True)
                    held.callback(_remove_if_empty, *made)
                    lock = exclusive_lock(self.out / LOCK, f"out: the run folder {str(self.out)!r}")
                    held.enter_context(lock)
                    remove_leftovers(self.out, CHECKPOINT_NAME)
                except OSError as error:
                    refused = error
            message = here.from_main(None if refused is None else str(refused))
            if refused is not None:  # the other ranks wait on rank 0's answer: no deadlock
                raise refused
            if message is not None:
                raise OSError(f"rank 0 could not take the run folder: {message}")
            yield

    def _resume(
        self, model, optimiser, data_print, checked_on, report: TrainReport
    ) -> tuple[int, dict | None]:
        """The step to start from and the validation set's fingerprint to keep (a run resumed
        without validation keeps the one its losses were taken on)."""
        if self.out is None or not checkpoint_path(self.out).exists():
            return 0, checked_on
        device = str(next(model.parameters()).device)
        state = load_checkpoint(self.out, map_location=device, remedy=self.restore)
        remedy = self.remedy
        check_same_pde(state, data_print, self.out, remedy)  # first: another PDE differs in all
        check_same_model(state, self.model_config, self.out, remedy)  # another model reads
        check_same_data(state, data_print, self.out, remedy, checked_on)  # the file, or a split
        check_same_validation(state, checked_on, self.out, remedy)
        state["config"] = {**LATER_SETTINGS, **state.get("config", {})}
        names, schedules = self.setting_names, self.schedule_names
        check_same_config(state, asdict(self.config), self.out, remedy, names, schedules)
        if self.config.steps is not None and int(state["step"]) > self.config.steps:
            more = "more steps" if "steps" not in names else f"a larger {names['steps']}"
            raise CheckpointError(
                f"checkpoint: {str(self.out)!r} is at step {int(state['step'])}, beyond the "
                f"{self.config.steps} steps asked for; {remedy} or {more}"
            )
        described = "this model" if self.model_config is None else "the model its config describes"
        load_weights(model, state, self.out, described)
        optimiser.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"].cpu())  # map_location may have moved it
        set_host_states(state)
        device = next(model.parameters()).device
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        report.losses[:] = list(state["losses"])
        report.validation[:] = [tuple(v) for v in state["validation"]]
        report.resumed_from = int(state["step"])
        report.train_s = float(state.get("train_s", 0.0))  # none saved before budgets: 0
        kept = state.get("validation_fingerprint") if checked_on is None else checked_on
        return int(state["step"]), kept

    def _save(self, model, optimiser, prints, report, step: int, here: World) -> None:
        if not _finite_weights(model):  # never over the last good checkpoint
            raise _diverged(step - 1, "the weights became NaN or inf", self._advice())
        if self.out is not None and here.is_main:
            device = next(model.parameters()).device
            on_cuda = (
                {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
            )
            save_checkpoint(
                self.out,
                {
                    **on_cuda,
                    "model": savable_state(model.state_dict()),
                    "optimizer": optimiser.state_dict(),
                    "rng": torch.get_rng_state(),
                    **host_states(),
                    "step": step,
                    "config": asdict(self.config),
                    "model_config": self.model_config,
                    "fingerprint": prints[0],
                    "validation_fingerprint": prints[1],
                    "losses": report.losses,
                    "validation": [list(v) for v in report.validation],
                    "train_s": report.train_s,
                },
            )
        here.barrier()


@contextlib.contextmanager
def _modes_kept(model: nn.Module) -> Iterator[dict[nn.Module, bool]]:
    """The train/eval mode of every submodule of ``model``, each put back on exit."""
    modes = {module: module.training for module in model.modules()}
    try:
        yield modes
    finally:
        _set_modes(model, modes)


def _set_modes(model: nn.Module, modes: dict[nn.Module, bool]) -> None:
    """Each submodule of ``model`` in the mode ``modes`` records (parents first: a parent's
    ``train`` sets its children, which then set their own)."""
    for _, module in model.named_modules(remove_duplicate=False):
        if module in modes:
            module.train(modes[module])


def _train_modes(model: nn.Module, modes: dict[nn.Module, bool]) -> None:
    """Train mode, except the submodules in eval mode whose parameters are all frozen, which
    keep the modes ``modes`` records."""
    model.train()
    for module, training in modes.items():
        if training:
            continue
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            _set_modes(module, modes)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(*folders: Path) -> None:
    """Remove ``folders`` in turn (innermost first), stopping at the first that is not empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def savable_state(state: dict) -> dict:
    """A model's state dict as a checkpoint holds it: its tensors and its modules' extra state
    (``get_extra_state``), without other entries (neuralop stores its init arguments, functions
    among them, under ``_metadata``; they would not load with ``weights_only=True``). Extra state
    that such a load could not read back is a ``TypeError`` naming its key."""
    kept = {}
    for key, value in state.items():
        if key.rpartition(".")[2] == EXTRA_STATE:
            name = f"the model's extra state (get_extra_state) model.state_dict()[{key!r}]"
            kept[key] = _loadable(name, value)
        elif isinstance(value, torch.Tensor):
            kept[key] = value
    return kept


def _loadable(name: str, value: object) -> object:
    """``value`` as :func:`plain_config` keeps it (numpy numbers made Python ones) when it takes
    it, else as it is when ``torch.load(weights_only=True)`` reads back what ``torch.save``
    wrote of it (an int-keyed dict, a set); otherwise a ``TypeError`` naming ``name``."""
    with contextlib.suppress(TypeError):
        return plain_config(name, value, tensors=True)
    written = io.BytesIO()
    try:
        torch.save(value, written)
        written.seek(0)
        torch.load(written, weights_only=True)
    except Exception as error:  # any failure to write or read it back: not savable
        refused = refused_global(error)
        reason = f"{refused!r} is not a type it reads" if refused else torch_reason(error)
        raise TypeError(
            f"{name} cannot be checkpointed (torch.save, then torch.load with weights_only=True: "
            f"{reason}); keep it to tensors, Python numbers, strings, booleans, None, and lists, "
            f"tuples and dicts of them, got {value!r}"
        ) from None
    return value


def _no_sync(trained: nn.Module):
    """DDP's ``no_sync`` (gradients stay local until the last micro-batch); a plain model has
    nothing to synchronise."""
    return (
        trained.no_sync()
        if isinstance(trained, DistributedDataParallel)
        else contextlib.nullcontext()
    )


def _batch(dataset: Dataset, indices: list[int]) -> object:
    """``default_collate`` of ``dataset``'s items at ``indices``, fetched at once where the dataset
    allows: indexed from the tensors its items are rows of (:func:`~physml.training.fingerprint.
    item_rows`), else through torch's batched fetch ``__getitems__`` when it defines one (a list
    of the items, as ``DataLoader`` calls it), else item by item."""
    backing = item_rows(dataset)
    if backing is not None:
        tensors, rows = backing
        picked = torch.tensor(indices) if rows is None else rows[indices]
        return [tensor[picked].contiguous() for tensor in tensors]  # as default_collate stacks
    fetch = getattr(dataset, "__getitems__", None)
    return default_collate(fetch(indices) if callable(fetch) else [dataset[i] for i in indices])


def _to(batch: object, device: torch.device) -> object:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(part, device) for part in batch)
    if isinstance(batch, dict):
        return {key: _to(value, device) for key, value in batch.items()}
    return batch


def _mean_over_ranks(loss: torch.Tensor, here: World) -> float:
    if here.size > 1:
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= here.size
    return float(loss)
