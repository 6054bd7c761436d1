"""Shared pieces of the benchmark scripts: the results file format (DESIGN.md §5) and timing.

Each benchmark writes ``results/<name>.json`` — command, seed, machine, torch version, wall time,
date and one row per (case, method) — and ``results/<name>.md`` rendered from it.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from pdes.problems import active_seed_scheme
from physml.io import atomic_write_text, strict_json
from physml.signals import interrupted, say_stopped, signals_interrupt
from physml.tasks import SEED_LIMIT
from physml.training import CheckpointError
from physml.training.trainer import check_device

RESULTS = Path(__file__).resolve().parent / "results"
WORK_REMEDY = "use another --work"
"""A benchmark's advice when a checkpoint cannot be resumed: its run folders are ``--work``'s."""
_rerun = ""
"""What a rerun picks up, for the line of Ctrl-C (set by :func:`resumes`, :func:`work_folder`)."""


def machine() -> str:
    """A one-line description of this machine: CPU model, cores, memory, accelerator."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores{memory}{gpu}, torch threads {torch.get_num_threads()}"


def at_least(minimum: int, below: int | None = None) -> Callable[[str], int]:
    """An option's type: an integer >= ``minimum`` (and ``< below`` when given; a usage error
    otherwise, before any work)."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (below is not None and value >= below):
            power = below is not None and below & (below - 1) == 0
            top = f"2**{below.bit_length() - 1}" if power else str(below)
            bounds = f">= {minimum}" if below is None else f"in [{minimum}, {top})"
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text!r}")
        return value

    return integer


seed_arg = at_least(0, SEED_LIMIT)
"""``--seed``'s type: an integer in ``[0, 2**62)``, the seeds ``physml run`` takes."""


def positive_number(text: str) -> float:
    """An option's type: a finite number > 0 (a usage error otherwise, before any work)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def names_arg(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An option's type: comma-separated names, each one of ``allowed`` and named once, as a
    list (a usage error otherwise, before any work)."""

    def names(text: str) -> list[str]:
        chosen = text.split(",")
        if not set(chosen) <= set(allowed):
            raise argparse.ArgumentTypeError(
                f"must name some of {list(allowed)}, comma-separated, got {chosen}"
            )
        repeated = sorted({name for name in chosen if chosen.count(name) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(
                f"must name each of {list(allowed)} at most once, got {chosen} "
                f"({', '.join(repeated)} repeated)"
            )
        return chosen

    return names


def device_arg(text: str) -> str:
    """``--device``'s type: ``cpu``, ``cuda`` or ``cuda:N``, a device this machine has (a usage
    error otherwise, before any work)."""
    try:
        return str(check_device(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_out(parser: argparse.ArgumentParser) -> None:
    """``--out``, left ``None`` when not given: :func:`results_folder` picks the folder."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder of the results files (default: benchmarks/results; with --quick a new "
        "temporary folder, so that a smoke run leaves the recorded results alone)",
    )


def results_folder(out: Path | None, quick: bool) -> Path:
    """Where the results go: ``out`` if given, else the recorded results (:data:`RESULTS`), or
    for a ``quick`` run a new temporary folder, said on stderr."""
    if out is not None:
        return out
    if not quick:
        return RESULTS
    folder = Path(tempfile.mkdtemp(prefix="physml-quick-"))
    print(f"--quick without --out: the results go to {folder}", file=sys.stderr)
    return folder


def arguments(
    doc: str, argv: list[str] | None = None, extra=None, refused=None
) -> argparse.Namespace:
    """Every benchmark's options: ``--quick``, ``--out`` (see :func:`results_folder`), ``--seed``
    (and ``extra(parser)``); ``refused(args)``, the reason a combination of them cannot run (or
    ``None``), makes it a usage error before any work."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (used by the tests)")
    add_out(parser)
    parser.add_argument("--seed", type=seed_arg, default=0)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if refused is not None and (reason := refused(args)):
        parser.error(reason)
    args.out = results_folder(args.out, args.quick)
    return args


def _script() -> str:
    return Path(sys.argv[0]).name


def resumes(path: Path, found: bool, rerun: str = "a rerun on the same folder resumes") -> None:
    """A run keeping what it finishes in ``path``: "resuming from" it on stderr when it holds a
    previous run's (``found``); Ctrl-C's line (:func:`run_main`) then says how a rerun resumes
    (``rerun``) from it."""
    global _rerun
    _rerun = f"; {rerun} from {path}"
    if found:
        print(f"{_script()}: resuming from {path}", file=sys.stderr)


def work_folder(
    given: Path | None, scratch: str, quick: bool, default: Path, kept: Sequence[str]
) -> Path:
    """``--work``: ``given``, else ``scratch`` (a temporary folder) for a ``quick`` run, else
    ``default``; a folder kept is announced by :func:`resumes` when it holds the benchmark's own
    files: a match of one of the glob patterns ``kept`` (relative to the folder)."""
    global _rerun
    if given is None and quick:
        _rerun = (
            "; its --quick work folder was temporary, so a rerun starts over (--work keeps one)"
        )
        return Path(scratch)
    work = given or default
    resumes(work, any(next(work.glob(pattern), None) is not None for pattern in kept))
    return work


def drawn_setup(setup: dict) -> dict:
    """``setup`` with the seed scheme the run's samples draw under
    (:func:`pdes.problems.active_seed_scheme`) as ``seed_scheme``, except ``"torch-manual-seed"``:
    a ``--work`` folder kept before the scheme was recorded drew under that one, so it resumes
    under it and is refused under another."""
    from physml.data.generate import named_scheme

    return {**setup, **named_scheme(active_seed_scheme())}


class WorkMismatch(ValueError):
    """A ``--work`` folder holding a run of another setup (one line by :func:`run_main`)."""


def _differences(saved: object, setup: object, key: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(setup, dict):
        keys = sorted(saved.keys() | setup.keys(), key=str)
        return [
            line for k in keys for line in _differences(saved.get(k), setup.get(k), f"{key}.{k}")
        ]
    return [] if saved == setup else [f"{key} {saved!r} there, {setup!r} now"]


def check_same_setup(path: Path, saved: object, setup: dict) -> None:
    """A :class:`WorkMismatch` naming each setting (``setup.seed``) where ``saved``, the setup
    ``path`` was written by, differs from this run's ``setup``."""
    if saved != setup:
        differences = "; ".join(_differences(saved, setup, "setup"))
        raise WorkMismatch(
            f"--work: {str(path)!r} comes from a run with another setup ({differences}); remove "
            "the folder or choose another --work"
        )


def run_main(main: Callable[[], int]) -> int:
    """A benchmark script's exit status: ``main()``'s, or one line on stderr instead of a
    traceback for Ctrl-C (130, with what a rerun picks up; SIGTERM and SIGHUP alike, 143 and 129:
    :func:`physml.signals.signals_interrupt`) and for a checkpoint or a ``--work`` folder that
    cannot be resumed (2)."""
    try:
        with signals_interrupt():
            return main()
    except KeyboardInterrupt as error:
        how, status = interrupted(error)
        say_stopped(f"\n{_script()}: {how}{_rerun}")
        return status
    except (CheckpointError, WorkMismatch) as error:
        print(f"{_script()}: error: {error}", file=sys.stderr)
        return 2


def not_a_benchmark(what: str) -> None:
    """For a module of shared pieces run as a script: one line saying what it is, exit 2."""
    print(f"{_script()}: {what}, not a benchmark; run one of the others", file=sys.stderr)
    raise SystemExit(2)


def work_and_equations(
    parser: argparse.ArgumentParser, equations: Sequence[str], resolve: Callable[[str], object]
) -> None:
    """The model-update benchmarks' ``--work`` (checkpoints and data) and ``--equations``: a
    comma-separated list of names, each checked by ``resolve`` while the arguments are parsed (an
    unknown second name is a usage error, not a failure after the first equation's training)."""

    def names(text: str) -> list[str]:
        chosen = text.split(",")
        if len(set(chosen)) < len(chosen):
            raise argparse.ArgumentTypeError(f"each equation once, got {text!r}")
        for name in chosen:
            try:
                resolve(name)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from None
        return chosen

    parser.add_argument("--work", type=Path, default=None, help="checkpoints and data")
    parser.add_argument("--equations", type=names, default=list(equations))


def _mallopt(mmap_threshold: int, trim_threshold: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, trim_threshold)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: leave the allocator as it is
        pass


def steady_allocations() -> None:
    """For timings: keep freed tensors' memory in the heap (glibc). Otherwise heap trimming and
    fresh ``mmap``s put page faults into the timings (10-40 % swings seen on BOON)."""
    _mallopt(1 << 25, 1 << 30)


def unpooled_large_allocations() -> None:
    """For peak memory: map every allocation of 64 KiB or more on its own and unmap it when
    freed, so resident memory follows live tensors and a call's peak shows in VmHWM; the free
    memory a :func:`steady_allocations` heap kept is handed back first (``malloc_trim``)."""
    _mallopt(64 * 1024, 64 * 1024)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def best_time(function: Callable[[], object], repeats: int = 3, min_seconds: float = 0.2) -> float:
    """Seconds per call of ``function()``: the best of ``repeats`` loops of >= ``min_seconds``."""
    function()
    best = float("inf")
    for _ in range(repeats):
        loops, start = 0, time.perf_counter()
        while True:
            function()
            loops += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / loops)
    return best


def _format(value: object) -> str:
    """A table cell: floats to 3 significant digits; ``None`` and a float that is not finite (an
    unknown ``train_s``: NaN) empty, as a missing column and as the record's JSON keeps them
    (``null``), so that a live run's table is the one its record renders; ``|`` escaped so that
    a text cannot add a column."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def render_markdown(result: dict, columns: Sequence[str], notes: str = "") -> str:
    """The readable view of a results dict: provenance, then one table row per result row."""
    lines = [
        f"# {result['benchmark']}",
        "",
        f"- command: `{result['command']}`",
        f"- seed: {result['seed']}",
        f"- machine: {result['machine']}",
        f"- torch: {result['torch']}",
        f"- wall time: {result['wall_s']:.0f} s",
        f"- date: {result['date']}",
    ]
    if "seed_scheme" in result:  # records written before it was recorded drew in the old one
        lines.append(f"- seed scheme: {result['seed_scheme']}")
    lines.append("")
    if notes:
        lines += [notes.strip(), ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in result["rows"]:
        lines.append("| " + " | ".join(_format(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    rows: list[dict],
    seed: int,
    started: float,
    out_dir: Path,
    columns: Sequence[str],
    notes: str = "",
    extra: dict | None = None,
) -> dict:
    """Write ``out_dir/name.json`` and ``out_dir/name.md`` atomically and return the dict; it
    records the seed scheme the run's samples drew under (:func:`pdes.problems.seed_scheme`)."""
    taken = {
        *("benchmark", "command", "seed", "machine", "torch", "wall_s", "date", "seed_scheme"),
        "rows",
    }
    if clash := sorted(taken & set(extra or {})):
        raise ValueError(f"extra must not set the record's own keys {clash}")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "seed": seed,
        "machine": machine(),
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - started,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed_scheme": active_seed_scheme(),
        **(extra or {}),
        "rows": rows,
    }
    atomic_write_text(out_dir / f"{name}.json", strict_json(result))
    atomic_write_text(out_dir / f"{name}.md", render_markdown(result, columns, notes))
    return result


def paired_ms(
    plain: Callable[[], object],
    other: Callable[[], object],
    pairs: int,
    clock: Callable[[], float] = time.process_time,
) -> tuple[float, float, list[float]]:
    """Median ms of each call and the per-pair ratios (other / plain), the calls alternating so
    that both see the same load; ``clock`` a CPU-time clock (robust to other processes)."""
    for _ in range(2):  # warm-up
        plain(), other()
    plain_s, other_s = [], []
    for _ in range(pairs):
        for function, times in ((plain, plain_s), (other, other_s)):
            start = clock()
            function()
            times.append(clock() - start)
    ratios = [b / a for a, b in zip(plain_s, other_s, strict=True)]
    return 1e3 * statistics.median(plain_s), 1e3 * statistics.median(other_s), ratios


def timed_call(model: torch.nn.Module, x: torch.Tensor, kind: str) -> Callable[[], object]:
    """One call of ``model`` on ``x`` to time: ``eval-forward`` (eval mode, no gradient),
    ``train-forward`` or ``train-forward-backward`` (a mean-square loss's gradients); the mode is
    set here."""
    if kind == "eval-forward":
        model.eval()

        @torch.no_grad()
        def forward():
            return model(x)

        return forward
    if kind not in ("train-forward", "train-forward-backward"):
        raise ValueError(
            f"kind must be eval-forward, train-forward or train-forward-backward, got {kind!r}"
        )
    model.train()
    if kind == "train-forward":
        return lambda: model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    return forward_backward


if __name__ == "__main__":
    not_a_benchmark("the pieces the benchmark scripts share")
