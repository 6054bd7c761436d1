"""Registered experiments: each task = data + model + constraints + evaluation, run by name.

``physml run NAME`` runs one task at full size; ``physml demo`` runs every task marked for the demo
at toy size. A task returns :class:`Row` records: the command prints the measurements once
(:func:`format_table`), then the targets with a mark each and how many were met
(:func:`format_summary`), and :func:`physml.tasks.report.write_index` writes ``index.html`` beside
the figures, captioned from each task's :attr:`Task.figures`.
"""

from __future__ import annotations

import importlib
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from pdes.checks import positive_int
from pdes.problems import active_seed_scheme

from .._checks import did_you_mean, flag, json_value
from ..errors import user_stacklevel

SIZES = ("toy", "full")
SEED_LIMIT = 2**62
"""Task seeds lie in ``[0, SEED_LIMIT)``, as ``--seed`` documents; :func:`offset_seed` wraps the
seeds a task derives into it, all within the Trainer's ``[0, 2**62]``."""
BUILTIN_TASK_MODULES = (
    "physml.tasks.verification",
    "physml.tasks.probconserv",
    "physml.tasks.boon",
    "physml.tasks.earthformer",
    "physml.tasks.prediff",
    "physml.tasks.conservation_forecast",
    "physml.tasks.updates",
)


@dataclass(frozen=True)
class Context:
    """Where and how a task runs: output folder, ``size`` (``toy`` or ``full``), device, seed."""

    out: Path
    size: str = "toy"
    device: str = "cpu"
    seed: int = 0
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {list(SIZES)}, got {self.size!r}")
        object.__setattr__(self, "quiet", flag("quiet", self.quiet))


@dataclass(frozen=True)
class Row:
    """One measured ``value`` of ``metric``; with ``ok`` set it is a target: met or missed.

    ``target`` says what counts as met (``"<= 1e-6"``); a row may carry a target that is not
    judged at this size (``ok=None``), and the table then shows it beside the value.
    """

    task: str
    case: str
    metric: str
    value: float
    target: str = ""
    ok: bool | None = None

    def __post_init__(self) -> None:
        # numbers computed with numpy or torch (np.float32, np.False_, 0-d tensors) are stored as
        # Python ones, so the rows are written as JSON and np.False_ counts as a missed target
        value = self.value
        real = isinstance(value, numbers.Real) or (
            isinstance(value, np.generic) and value.dtype.kind in "biuf"
        )
        if not real:
            tensor = isinstance(value, torch.Tensor) and value.numel() == 1
            if not tensor or value.is_complex():
                raise TypeError(
                    f"Row.value of {self.task!r} / {self.case!r} / {self.metric!r} must be a "
                    f"real number, got {value!r}"
                )
        object.__setattr__(self, "value", float(value))
        if self.ok is not None:
            object.__setattr__(self, "ok", bool(self.ok))


@dataclass(frozen=True)
class Task:
    """A named experiment: ``run(context)`` writes its files under ``context.out`` and returns rows.

    A run's summary and figures carry its :func:`run_label` in their names, so a run of another
    size or seed into the same folder keeps them.
    """

    name: str
    description: str
    run: Callable[[Context], list[Row]]
    in_demo: bool = True
    figures: dict[str, str] = field(default_factory=dict)
    """A glob pattern, relative to the output folder, to the caption of the figures it matches;
    ``{name}`` in a caption stands for the file's stem (``verify/*.png`` -> ``"{name}: ..."``)."""
    cpu_only: bool = False
    """The task runs on the CPU whatever ``--device`` says (another device is refused)."""
    checkpoints: bool = True
    """The task saves its training as it goes, so rerunning it after Ctrl-C resumes from there
    (``False``: it saves nothing to resume and starts over)."""


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry (a name may be registered once)."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"task name {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def registry() -> dict[str, Task]:
    """All tasks by name, built-in ones included."""
    for module in BUILTIN_TASK_MODULES:
        importlib.import_module(module)
    return dict(_TASKS)


def get(name: str) -> Task:
    tasks = registry()
    if name not in tasks:
        hint = did_you_mean(name, tasks)
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(tasks)}{hint}")
    return tasks[name]


def run_settings(context: Context) -> dict:
    """What a run's results depend on besides its code: size, seed, device, package version, the
    date (UTC) and the seed scheme its samples draw under (:func:`pdes.problems.active_seed_scheme`:
    the same seed draws other samples in another), as recorded in ``index.html`` and each task's
    summary."""
    from physml import __version__

    return {
        "size": context.size,
        "seed": context.seed,
        "device": context.device,
        "physml": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed_scheme": active_seed_scheme(),
    }


def offset_seed(seed: int, offset: int) -> int:
    """``seed + offset`` wrapped into ``[0, SEED_LIMIT)``: the seed a task derives for one of its
    parts, equal to ``seed + offset`` for every seed below ``SEED_LIMIT − offset``."""
    return (seed + offset) % SEED_LIMIT


def run_label(context: Context) -> str:
    """``<size>-seed<seed>`` (``toy-seed0``): names one run's summary, figures and checkpoint
    folder, so that runs of other sizes or seeds in the same output folder sit beside each other
    instead of overwriting one another."""
    return f"{context.size}-seed{context.seed}"


def save_rows(context: Context, name: str, rows: list[Row], wall_s: float) -> Path:
    """Write ``<out>/<name>/rows-<label>.json``: the run's settings, its wall time (s) and every row
    of task ``name`` (a value that is not finite as ``null``), so that each run's numbers outlive
    ``index.html``, which holds the last run's only. Returns the file."""
    from ..io import atomic_write_text, strict_json

    rows_ = [asdict(row) for row in rows]
    record = {"settings": run_settings(context), "wall_s": wall_s, "rows": rows_}
    path = context.out / name / f"rows-{run_label(context)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, strict_json(record))
    return path


def check_steps(steps: dict | None, families: tuple[str, ...]) -> None:
    """A scale's fixed ``steps``: ``None`` (a time budget decides) or a step count >= 1 for each
    of ``families`` and nothing else; else a ``ValueError`` naming what came."""
    if steps is None:
        return
    if not isinstance(steps, dict) or set(steps) != set(families):
        raise ValueError(
            f"steps must give the step count of each of {list(families)}, got {steps!r}"
        )
    for family, count in steps.items():
        positive_int(f"steps[{family!r}]", count)


def recorded_cost(cost: Path, *, steps: int | None = None) -> float:
    """The CPU seconds the record ``cost`` (``{"train_s": seconds >= 0}``, with ``"steps"``, a
    count > 0, where ``steps`` is given) holds for a finished run; NaN (unknown, never 0 s: that
    would claim a free training) where there is none or, given ``steps``, it is of another
    length. A damaged record is NaN too, with a one-line warning naming it: a finished run's cost
    cannot be measured again without training it again. ``steps``, keyword only, is ``None`` or
    an integer >= 1; anything else is refused by name."""
    if steps is not None:
        steps = positive_int("steps", steps)
    if not cost.exists():
        return math.nan

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def valid(value: object) -> bool:
        if not isinstance(value, dict):
            return False
        seconds, count = value.get("train_s"), value.get("steps")
        return (
            number(seconds)
            and math.isfinite(seconds)
            and seconds >= 0
            and (steps is None or (isinstance(count, int) and number(count) and count > 0))
        )

    shape = '{"train_s": seconds >= 0}'
    if steps is not None:
        shape = 'a cost record {"steps": a count > 0, "train_s": seconds >= 0}'
    try:
        saved = json_value(
            str(cost), cost.read_text(encoding="utf-8", errors="replace"), shape, valid
        )
    except ValueError as error:
        warnings.warn(
            f"{error}; this finished run's training cost is reported as NaN (unknown); delete "
            "the file to silence this",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        return math.nan
    return float(saved["train_s"]) if steps is None or saved["steps"] == steps else math.nan


def is_cpu(device: str | torch.device) -> bool:
    """Whether ``device`` is the CPU (``cpu``, ``cpu:0``)."""
    return str(device).split(":")[0] == "cpu"


def check_task_device(tasks: list[Task], device: str) -> None:
    """Refuse a device other than the CPU for tasks that run on the CPU only, naming them and
    the registered tasks that take another device."""
    cpu_only = [task.name for task in tasks if task.cpu_only]
    if cpu_only and not is_cpu(device):
        takers = sorted(name for name, task in registry().items() if not task.cpu_only)
        raise ValueError(
            f"--device: {', '.join(cpu_only)} {'runs' if len(cpu_only) == 1 else 'run'} on the "
            f"CPU only, got {str(device)!r}; use --device cpu (the tasks that take "
            f"{str(device)!r}: {', '.join(takers) or 'none'})"
        )


def task_context(task: Task, context: Context) -> Context:
    """``context`` for ``task``: moved to the CPU when the task runs on the CPU only."""
    return replace(context, device="cpu") if task.cpu_only else context


def _aligned(header: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, a dashed rule under the header; a column that is blank
    in every line is left out."""
    if not lines:
        return ""
    keep = [i for i in range(len(header)) if any(line[i] for line in lines)]
    table = [tuple(line[i] for i in keep) for line in [header, *lines]]
    widths = [max(len(line[i]) for line in table) for i in range(len(keep))]
    rendered = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in table
    ]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in rendered)


def format_table(rows: list[Row]) -> str:
    """The measurements of ``rows`` that are not judged targets, as an aligned plain-text table."""
    lines = [
        (row.task, row.case, row.metric, f"{row.value:.4g}", row.target)
        for row in rows
        if row.ok is None
    ]
    return _aligned(("task", "case", "metric", "value", "target (not judged)"), lines)


def format_summary(rows: list[Row], marks: tuple[str, str] = ("✓", "✗")) -> str:
    """The judged targets of ``rows`` (value, target and a met/missed mark from ``marks``), then
    ``"N of M targets met"``."""
    judged = [row for row in rows if row.ok is not None]
    lines = [
        (row.task, row.case, row.metric, f"{row.value:.4g}", row.target, marks[0 if row.ok else 1])
        for row in judged
    ]
    met = sum(bool(row.ok) for row in judged)
    table = _aligned(("task", "case", "metric", "value", "target", "met"), lines)
    return (table + "\n\n" if table else "") + f"{met} of {len(judged)} targets met"
