"""Registered experiments: each task = data + model + constraints + evaluation, run by name.

``physml run NAME`` runs one task at full size; ``physml demo`` runs every task marked for the demo
at toy size and prints one summary table. A task returns :class:`Row` records for that table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SIZES = ("toy", "full")
BUILTIN_TASK_MODULES = (
    "physml.tasks.verification",
    "physml.tasks.probconserv",
    "physml.tasks.boon",
    "physml.tasks.earthformer",
)


@dataclass(frozen=True)
class Context:
    """Where and how a task runs: output folder, ``size`` (``toy`` or ``full``), device, seed."""

    out: Path
    size: str = "toy"
    device: str = "cpu"
    seed: int = 0
    quiet: bool = False


@dataclass(frozen=True)
class Row:
    """One line of a summary table: a measured ``value`` of ``metric`` beside its ``target``."""

    task: str
    case: str
    metric: str
    value: float
    target: str = ""
    ok: bool | None = None


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    run: Callable[[Context], list[Row]]
    in_demo: bool = True


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
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(tasks)}")
    return tasks[name]


def format_table(rows: list[Row]) -> str:
    """A plain-text table of ``rows`` with aligned columns."""
    header = ("task", "case", "metric", "value", "target", "ok")
    lines = [header]
    for row in rows:
        ok = "" if row.ok is None else ("yes" if row.ok else "NO")
        lines.append((row.task, row.case, row.metric, f"{row.value:.4g}", row.target, ok))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in rendered)
