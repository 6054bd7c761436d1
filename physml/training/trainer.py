"""The training loop every model family shares.

A step draws the next slice of a permutation of the training set fixed by ``(seed, epoch)``: the
global batch is the same whatever the number of processes, each rank taking ``batch / world``
samples of it (``DistributedSampler`` with ``set_epoch``). The learning rate is a function of the
step alone, so a run resumed from a checkpoint replays exactly what the uninterrupted run did.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, default_collate
from tqdm import tqdm

from pdes.checks import positive_int

from .._checks import NonFiniteError
from .._checks import device as checked_device
from .checkpoint import (
    CheckpointError,
    check_same_config,
    check_same_data,
    check_same_model,
    checkpoint_path,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from .distributed import World, world
from .fingerprint import fingerprint

Loss = Callable[[nn.Module, object], torch.Tensor]
SCHEDULES = ("cosine", "constant")


def check_device(device: str) -> torch.device:
    """``device`` as a torch device that exists here, else a one-line error naming ``device``."""
    return checked_device("device", device)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (a TOML file or the CLI flags give the same fields).

    ``batch`` is the global batch (divided among ``torchrun`` processes); ``accumulate`` splits
    each process's share into that many micro-batches whose gradients add up before the step (the
    same step in less memory; micro-batch ``j`` takes every ``accumulate``-th sample, as
    ``torchrun`` ranks do, so one process with ``accumulate = 2`` adds the same gradients in the
    same order as two processes and matches them bit for bit); ``clip`` the largest gradient norm
    (``None``: no clipping); ``checkpoint_every`` and ``validate_every`` count steps (``0``
    validates only at the end).
    """

    steps: int = 1000
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

    def __post_init__(self) -> None:
        positive_int("steps", self.steps, 1)
        positive_int("batch", self.batch, 1)
        positive_int("accumulate", self.accumulate, 1)
        positive_int("seed", self.seed, 0)
        positive_int("checkpoint_every", self.checkpoint_every, 1)
        positive_int("validate_every", self.validate_every, 0)
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0, got 0")
        if self.clip is not None and not (
            isinstance(self.clip, (int, float))
            and not isinstance(self.clip, bool)
            and math.isfinite(self.clip)
            and self.clip > 0
        ):
            raise ValueError(
                f"clip must be a number > 0 or None, got {self.clip!r} (a finite number: for no "
                "clipping pass None, or leave --clip out)"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check_device(self.device)

    def learning_rate(self, step: int) -> float:
        if self.schedule == "constant":
            return self.lr
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * step / self.steps))


LATER_SETTINGS = {"accumulate": 1}
"""Settings added after checkpoints were first written, with the value those runs had."""


@dataclass
class TrainReport:
    """What a run did: the loss of every step (mean over ranks), validation losses, timing."""

    steps: int
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0
    wall_s: float = 0.0
    samples_per_s: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1]


def _diverged(step: int, what: str) -> FloatingPointError:
    """The error of a run whose updates blew up at (0-based) ``step``."""
    return FloatingPointError(
        f"training diverged at step {step + 1} ({what}): lower the learning rate (lr, --lr) or "
        "clip the gradients (clip, --clip)"
    )


def _finite_weights(model: nn.Module) -> bool:
    """Whether every parameter of ``model`` is finite (NaN weights: the run diverged)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Trainer:
    """Train ``model`` on ``loss(model, batch)`` with Adam, checkpointing into ``out``.

    Args:
        model: any ``nn.Module``; ``loss`` receives it (wrapped in DDP under ``torchrun``) and a
            collated batch of the dataset's items, and returns the scalar loss of that batch.
        config: a :class:`TrainConfig`.
        out: the run's folder; a checkpoint there is resumed (same data, same model config).
        model_config: what rebuilds the model (saved in the checkpoint, checked on resume).
        quiet: no progress bar.
        after_step: called as ``after_step(model, step)`` after every optimiser step (``step``
            counts the steps done); state it keeps must live in the model (an EMA copy as a
            submodule) so that it is checkpointed and resumed with it.
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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"loss must be a callable loss(model, batch), got {type(loss)}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.model, self.loss, self.config = model, loss, config
        self.out = None if out is None else Path(out)
        self.model_config = model_config
        self.quiet = quiet
        if after_step is not None and not callable(after_step):
            raise TypeError(f"after_step must be callable(model, step), got {type(after_step)}")
        self.after_step = after_step

    # ------------------------------------------------------------------------------------ run

    def fit(self, train: Dataset, validation: Dataset | None = None) -> TrainReport:
        """Train to ``config.steps`` (resuming from ``out`` when a checkpoint is there)."""
        config, here = self.config, world(self.config.device)
        device = check_device(config.device)
        if config.batch % (here.size * config.accumulate):
            raise ValueError(
                f"batch ({config.batch}) must be divisible by the {here.size} processes × "
                f"accumulate ({config.accumulate})"
            )
        if config.batch > len(train):
            raise ValueError(f"batch ({config.batch}) exceeds the {len(train)} training samples")
        data_print = fingerprint(train)
        model = self.model.to(device)
        optimiser = torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        report = TrainReport(steps=config.steps)
        torch.manual_seed(config.seed)
        step = self._resume(model, optimiser, data_print, report)
        trained = DistributedDataParallel(model) if here.size > 1 else model
        sampler = DistributedSampler(
            train, here.size, here.rank, shuffle=True, seed=config.seed, drop_last=True
        )
        per_rank, per_epoch = config.batch // here.size, len(train) // config.batch
        order: tuple[int, list[int]] | None = None
        started, done = time.perf_counter(), step
        bar = tqdm(
            total=config.steps,
            initial=step,
            desc="train",
            disable=self.quiet or not here.is_main,
            dynamic_ncols=True,
        )
        model.train()
        while step < config.steps:
            epoch, position = divmod(step, per_epoch)
            if order is None or order[0] != epoch:
                sampler.set_epoch(epoch)
                order = (epoch, list(sampler))
            indices = order[1][position * per_rank : (position + 1) * per_rank]
            for group in optimiser.param_groups:
                group["lr"] = config.learning_rate(step)
            optimiser.zero_grad(set_to_none=True)
            loss = self._backward(trained, train, indices, device, step)
            if config.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimiser.step()
            report.losses.append(_mean_over_ranks(loss.detach(), here))
            step += 1
            if self.after_step is not None:
                self.after_step(model, step)
            bar.update(1)
            bar.set_postfix(loss=f"{report.losses[-1]:.4g}", refresh=False)
            if validation is not None and (
                step == config.steps
                or (config.validate_every and step % config.validate_every == 0)
            ):
                report.validation.append((step, self.validate(model, validation, device)))
                model.train()
            if step % config.checkpoint_every == 0 or step == config.steps:
                self._save(model, optimiser, data_print, report, step, here)
        bar.close()
        report.wall_s = time.perf_counter() - started
        report.samples_per_s = (step - done) * config.batch / max(report.wall_s, 1e-9)
        return report

    def _backward(self, trained, train: Dataset, indices: list[int], device, step: int):
        """Gradients of this process's share of the step, one micro-batch at a time (DDP
        synchronises on the last); returns the share's mean loss (detached)."""
        parts = self.config.accumulate
        total = None
        for part in range(parts):
            batch = _to(default_collate([train[i] for i in indices[part::parts]]), device)
            last = part == parts - 1
            with contextlib.nullcontext() if last else _no_sync(trained):
                try:
                    loss = self.loss(trained, batch)
                except ValueError as error:  # e.g. a loss refusing a NaN prediction
                    blown = step > 0 and isinstance(error, NonFiniteError)
                    if not blown and _finite_weights(trained):
                        raise
                    raise _diverged(step, str(error)) from None
                if not torch.isfinite(loss):
                    if step == 0 and _finite_weights(trained):
                        raise FloatingPointError(
                            f"the loss became {loss.item()} at step 1, before any update: the "
                            "loss or the data is at fault, not the learning rate"
                        )
                    raise _diverged(step, f"the loss became {loss.item()}")
                (loss / parts).backward()  # x / 1 is x exactly: one part is the plain step
            total = loss.detach() if total is None else total + loss.detach()
        return total / parts

    def validate(self, model: nn.Module, dataset: Dataset, device: torch.device) -> float:
        """Mean loss over ``dataset`` in batches of ``config.batch`` (no gradient)."""
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(dataset), self.config.batch):
                items = [
                    dataset[i] for i in range(start, min(start + self.config.batch, len(dataset)))
                ]
                total += float(self.loss(model, _to(default_collate(items), device))) * len(items)
                count += len(items)
        return total / count

    # ------------------------------------------------------------------------------ checkpoints

    def _resume(self, model, optimiser, data_print, report: TrainReport) -> int:
        if self.out is None or not checkpoint_path(self.out).exists():
            return 0
        state = load_checkpoint(self.out, map_location=str(next(model.parameters()).device))
        check_same_model(state, self.model_config, self.out)  # first: another model reads
        check_same_data(state, data_print, self.out)  # the same file as other pairs
        state["config"] = {**LATER_SETTINGS, **state.get("config", {})}
        check_same_config(state, asdict(self.config), self.out)
        if int(state["step"]) > self.config.steps:
            raise CheckpointError(
                f"checkpoint: {str(self.out)!r} is at step {int(state['step'])}, beyond the "
                f"{self.config.steps} steps asked for; use another --out or more steps"
            )
        load_weights(model, state, self.out)
        optimiser.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"].cpu())  # map_location may have moved it
        device = next(model.parameters()).device
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        report.losses[:] = list(state["losses"])
        report.validation[:] = [tuple(v) for v in state["validation"]]
        report.resumed_from = int(state["step"])
        return int(state["step"])

    def _save(self, model, optimiser, data_print, report, step: int, here: World) -> None:
        if self.out is not None and here.is_main:
            device = next(model.parameters()).device
            on_cuda = (
                {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
            )
            save_checkpoint(
                self.out,
                {
                    **on_cuda,
                    "model": tensors_only(model.state_dict()),
                    "optimizer": optimiser.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": step,
                    "config": asdict(self.config),
                    "model_config": self.model_config,
                    "fingerprint": data_print,
                    "losses": report.losses,
                    "validation": [list(v) for v in report.validation],
                },
            )
        here.barrier()


def tensors_only(state: dict) -> dict:
    """A state dict without non-tensor entries (neuralop stores its init arguments, functions
    among them, under ``_metadata``; they would not load with ``weights_only=True``)."""
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _no_sync(trained: nn.Module):
    """DDP's ``no_sync`` (gradients stay local until the last micro-batch); a plain model has
    nothing to synchronise."""
    return (
        trained.no_sync()
        if isinstance(trained, DistributedDataParallel)
        else contextlib.nullcontext()
    )


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
