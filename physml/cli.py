"""The ``physml`` command line: generate, merge, convert, train, evaluate, run, demo, bench and
list. Run as ``python -m physml.cli``, it hands over to the ``physml`` entry
(``physml.__main__``) before it loads torch, so that a Ctrl-C while it loads ends it with one
line, as ``physml`` and ``python -m physml`` do."""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the entry imports this module under its guard, then runs it
    from physml.__main__ import main as _entry

    sys.exit(_entry())

import argparse
import ast
import io
import math
import os
import re
import shutil
import signal
import subprocess
import textwrap
import threading
import time
import traceback
from pathlib import Path

import physml.data.nbody  # noqa: F401  (registers the nbody-digits and moving-digits recipes)
from pdes import problems
from pdes.checks import positive_int
from pdes.errors import SolverError
from physml import __version__
from physml._checks import did_you_mean, fits_in_memory
from physml._io import existing_file, writable_folder
from physml._progress import takes_a_bar
from physml.signals import STOPPING, say_interrupted, signals_interrupt
from physml.tasks import SEED_LIMIT
from physml.training import commands as training_commands
from physml.training.distributed import rank
from physml.training.trainer import check_device

OVERWRITE_FLAG = "--overwrite"
"""How generate, merge and convert tell to replace an existing file (the Python API says
``overwrite=True``)."""
DISK_FACTOR = 2
"""The disk room asked for, in dataset sizes (its chunks and its assembled file exist together
for a moment)."""
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
"""Where ``physml bench`` finds the benchmark scripts, the ``benchmarks/`` folder of the source
checkout this package runs from; taken only beside a ``pyproject.toml`` of physml, since an
installed package has none (the folder there may be another package's)."""


class CommandParser(argparse.ArgumentParser):
    """The parser of ``physml`` and, as its subparsers take their parent's class, of each command:
    a command reports the arguments it does not know with its own usage (argparse hands them up
    to ``physml``'s), and an unknown option or choice ends with the close ones (``did you mean
    --steps?``; none for an option's own name, e.g. one given after ``--``). With
    ``intermixed=True`` positionals may follow options (``convert IN --to pdebench OUT``), unless
    the arguments hold ``--``, after which every one is a positional."""

    def __init__(self, *args, intermixed: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.intermixed = intermixed
        self._in_intermixed_pass = False

    def parse_known_args(self, args=None, namespace=None):
        if self._in_intermixed_pass:  # one of parse_known_intermixed_args' two passes
            return super().parse_known_args(args, namespace)
        given = sys.argv[1:] if args is None else list(args)
        if self.intermixed and "--" not in given:  # after "--" every argument is a positional
            self._in_intermixed_pass = True
            try:
                namespace, extras = self.parse_known_intermixed_args(args, namespace)
            finally:
                self._in_intermixed_pass = False
        else:
            namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            options = {
                option.lstrip("-"): option
                for action in self._actions
                for option in action.option_strings
            }
            hints = "".join(
                did_you_mean(extra.split("=")[0].lstrip("-"), options, options.get)
                for extra in extras
                if extra.startswith("-") and extra.split("=")[0] not in options.values()
            )
            self.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return namespace, extras

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            hint = did_you_mean(str(value), action.choices)
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r} (choose from {choices}){hint}"
            )


def _progress_wanted(args: argparse.Namespace) -> bool:
    """Whether a command draws progress bars: not ``--quiet``, and stderr shows a bar redrawn in
    place (a terminal or a running Jupyter kernel's output, as for every bar of physml)."""
    return not args.quiet and takes_a_bar(sys.stderr)


def _add_generate(subparsers) -> None:
    generate = subparsers.add_parser(
        "generate",
        help="solve a PDE for many random samples and write an HDF5 dataset",
        description="Generate a dataset. `physml generate PDE --help` lists the PDE's options.",
    )
    recipes = generate.add_subparsers(dest="pde", metavar="PDE", required=True)
    for name, problem in sorted(problems.registry().items()):
        sub = recipes.add_parser(name, help=problem.description, description=problem.description)
        sub.add_argument("--n", type=int, required=True, help="number of samples (all shards)")
        sub.add_argument("--out", type=Path, required=True, help="output HDF5 file")
        sub.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
        sub.add_argument("--shard", type=int, default=0, help="this shard's index (default 0)")
        sub.add_argument("--num-shards", type=int, default=1, help="number of shards (default 1)")
        sub.add_argument(
            "--chunk",
            type=int,
            default=32,
            help="samples per batch and per resume unit (default 32)",
        )
        sub.add_argument("--overwrite", action="store_true", help="replace an existing output")
        sub.add_argument(
            "--seed-scheme",
            choices=problems.SEED_SCHEMES,
            default=None,
            help="how samples draw from their seeds (default: a dataset already begun keeps "
            f"its own, a new one ${problems.SEED_SCHEME_VARIABLE} or {problems.SEED_SCHEME}); "
            f"{problems.MANUAL_SEED_SCHEME} continues or redraws data of physml before "
            f"{problems.SEED_SCHEME}",
        )
        sub.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        group = sub.add_argument_group(f"{name} options")
        for key, option in problem.options.items():
            group.add_argument(
                f"--{key.replace('_', '-')}",
                dest=f"option_{key}",
                metavar=key.upper(),
                type=option.type,
                default=option.default,
                help=f"{option.help} (default {option.default})".replace("%", "%%"),
            )


SIZE_OPTIONS = ("nx", "ny", "nt", "frames", "size")
"""Recipe options that count points along an axis (a sample holds at least their product)."""


def _check_sample_size(settings: dict) -> None:
    """Refuse grid sizes whose single sample cannot fit in memory, before any axis is built (a
    lower bound: a 2-D recipe's sample is larger still; :func:`_check_generate` checks the
    exact shape once the axes are known to be small enough to build)."""
    sizes = {
        key: settings[key]
        for key in SIZE_OPTIONS
        if isinstance(settings.get(key), int) and settings[key] > 0
    }
    if sizes:
        largest = max(sizes, key=sizes.get)
        points = math.prod(sizes.values())
        described = " x ".join(f"{key}={value}" for key, value in sizes.items())
        fits_in_memory(largest, 8 * points, f"one sample of at least {described} float64 values")


def _check_generate(args: argparse.Namespace, options: dict) -> None:
    """What `physml generate` can check before it writes: the device, the recipe's settings (sizes
    first, then its grid, times and attributes are built), memory for one chunk of samples and
    room on disk for the samples of this shard (``u`` and the fields the recipe declares)."""
    from physml.data.generate import shard_path

    check_device(args.device)
    positive_int("n", args.n)
    positive_int("num_shards", args.num_shards)
    positive_int("chunk", args.chunk)
    problem = problems.get(args.pde)
    settings = problem.settings(**options)
    _check_sample_size(settings)
    try:
        shape = problem.sample_shape(settings)
        fields = problem.field_shapes(settings)
        problem.attributes(settings)
    except KeyError as error:
        raise ValueError(f"{args.pde}: unknown setting value {error}") from None
    except MemoryError:
        raise ValueError(f"{args.pde}: the grid settings are too large for memory") from None
    out = Path(args.out)
    if out.name in ("", ".", ".."):
        raise ValueError(f"--out must name a file (e.g. data.h5), got {str(args.out)!r}")
    if out.is_dir():
        raise ValueError(f"--out: {str(args.out)!r} is a folder; name the dataset file in it")
    samples = -(-args.n // args.num_shards)
    batch = min(args.chunk, samples)
    values = math.prod(shape) + sum(math.prod(field) for field in fields.values())
    described = f"of shape {shape}" + (f" with fields {', '.join(fields)}" if fields else "")
    fits_in_memory("chunk", batch * 8 * values, f"{batch} samples {described}")
    folder = Path(args.out).parent
    kept = shard_path(out, args.shard, args.num_shards).exists() and not args.overwrite
    if folder.is_dir() and not kept:  # a file kept needs no room: it is in place, or refused
        need = DISK_FACTOR * samples * 8 * values
        free = shutil.disk_usage(folder).free
        if need > free:
            of_shard = f" (shard {args.shard} of {args.num_shards})" if args.num_shards > 1 else ""
            blamed = "--out" if free == 0 else "n"  # no room at all: the disk, not the count
            raise ValueError(
                f"{blamed}: {samples} samples{of_shard} {described} need about "
                f"{need / 1e9:.3g} GB (float64, chunks and file), but the disk of --out "
                f"{str(folder)!r} has {free / 1e9:.3g} GB free"
            )


def _run_generate(args: argparse.Namespace) -> int:
    from physml.data import generate_dataset

    options = {
        key.removeprefix("option_"): value
        for key, value in vars(args).items()
        if key.startswith("option_")
    }
    try:
        _check_generate(args, options)
        return _generate(args, options, generate_dataset)
    except (ValueError, TypeError) as error:
        settings = ("n", "seed", "shard", "num_shards", "chunk", "seed_scheme", *options)
        raise _led_by_flag(error, settings) from None


SHARDS_NAMED = 5
"""How many missing shards the line of a finished shard names one by one; more are counted, and
the first three and the last named."""


def _waiting_for(args: argparse.Namespace) -> str:
    """``"; waiting for shard(s) 0, 2 of 4: ..."`` naming the shards of a sharded dataset whose
    files are not in yet (the last of them writes the index), or, past :data:`SHARDS_NAMED` of
    them, ``"; waiting for 999 of 1000 shards (0, 1, 2, ..., 998): ..."``; ``""`` once every
    shard is in."""
    from physml.data.generate import missing_shards

    missing = missing_shards(Path(args.out), args.num_shards)
    if not missing:
        return ""
    if len(missing) <= SHARDS_NAMED:
        waiting = f"shard(s) {', '.join(map(str, missing))} of {args.num_shards}"
    else:
        first = ", ".join(map(str, missing[:3]))
        waiting = f"{len(missing)} of {args.num_shards} shards ({first}, ..., {missing[-1]})"
    return f"; waiting for {waiting}: the last to finish writes the index {args.out}"


def _index_note(args: argparse.Namespace) -> str:
    """What became of a sharded dataset's index once this shard is in."""
    if args.num_shards == 1:
        return ""
    return _waiting_for(args) or f"; index {args.out} written"


def _led_by_flag(error: Exception, settings) -> Exception:
    """``error`` with its message led by the flag of the setting it names (``n must be …`` →
    ``--n: n must be …``, ``n: …`` → ``--n: …``); ``error`` itself where it names none of
    ``settings``."""
    message = str(error)
    for name in settings:
        flag = f"--{name.replace('_', '-')}"
        if message.startswith((f"{name} must ", f"{name}: ")):
            flagged = f"{flag}: {message.removeprefix(f'{name}: ')}"
            try:
                return type(error)(flagged)
            except TypeError:  # an exception class built from other arguments
                return ValueError(flagged)
    return error


def _generate(args: argparse.Namespace, options: dict, generate_dataset) -> int:
    """Run one generation and print what was written; shards that disagree get no index: exit
    0 with a note when this run regenerates in place (``--overwrite``: it meets the old shards
    until the last), else exit 2 (a mistake, e.g. a shard job given another seed)."""
    from physml.data import IndexNotWritten
    from physml.data.generate import shard_path

    finished = shard_path(Path(args.out), args.shard, args.num_shards)
    kept = finished.exists() and not args.overwrite  # refused unless it holds this request
    started = time.perf_counter()
    failure = None
    try:
        path = generate_dataset(
            args.pde,
            args.out,
            n=args.n,
            seed=args.seed,
            shard=args.shard,
            num_shards=args.num_shards,
            chunk=args.chunk,
            overwrite=args.overwrite,
            device=args.device,
            progress=_progress_wanted(args),
            overwrite_hint=OVERWRITE_FLAG,
            seed_scheme=args.seed_scheme,
            **options,
        )
        note = _index_note(args)
    except IndexNotWritten as error:  # this shard is written; the others disagree with it
        path, note, failure = finished, f"; {error}", error
    done = f"{path} was already written" if kept else f"wrote {path}"
    line = f"{done} ({time.perf_counter() - started:.1f} s){_scheme_note(path)}"
    if failure is not None and not args.overwrite:
        print(line)
        raise failure
    print(f"{line}{note}")
    return 0


def _scheme_note(path: Path) -> str:
    """``"; its samples drew in the seed scheme ..."`` for a dataset file not drawn in the
    default scheme (named, or taken from the dataset as it was begun), ``""`` otherwise."""
    import h5py

    from pdes.problems import SEED_SCHEME
    from physml.data.generate import seed_scheme_of

    with h5py.File(path, "r") as f:
        scheme = seed_scheme_of(f.attrs)
    if scheme == SEED_SCHEME:
        return ""
    return f"; its samples drew in the seed scheme {scheme!r}, not the default {SEED_SCHEME!r}"


def _add_merge(subparsers) -> None:
    merge = subparsers.add_parser(
        "merge",
        help="check dataset shards and join them into one file without copying",
        description="Join shards (any order; an index file stands for its shards) into one HDF5 "
        "file of virtual datasets. The shards must stay beside it, at the same relative paths.",
    )
    merge.add_argument("shards", nargs="+", type=Path, metavar="SHARD", help="shard files")
    merge.add_argument("-o", "--out", type=Path, required=True, help="the merged HDF5 file")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing output")
    merge.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip reading every shard once to check its checksums (reading the merged file "
        "still names a damaged shard)",
    )


def _run_merge(args: argparse.Namespace) -> int:
    from physml.data import merge_shards

    path = merge_shards(
        args.shards,
        args.out,
        overwrite=args.overwrite,
        argument="SHARD",
        verify=args.verify,
        overwrite_hint=OVERWRITE_FLAG,
    )
    print(f"wrote {path} (virtual datasets over the shards: no sample copied)")
    return 0


def _add_convert(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert",
        intermixed=True,
        help="rewrite a dataset as physml, PDEBench or The Well HDF5",
        description="Convert between physml, PDEBench and The Well files (the input's format is "
        "told from its structure). See physml.data.interchange for what maps to what.",
    )
    convert.add_argument("source", type=Path, metavar="IN", help="input HDF5 file")
    convert.add_argument(
        "out", type=Path, nargs="?", metavar="OUT", help="output HDF5 file (or give -o/--out)"
    )
    convert.add_argument(
        "-o",
        "--out",
        type=Path,
        dest="out_option",
        metavar="OUT",
        help="output HDF5 file, as `physml merge` takes it (instead of the positional OUT)",
    )
    convert.add_argument(
        "--to",
        choices=("physml", "pdebench", "well"),
        help="output format (default physml; required for a physml input)",
    )
    convert.add_argument("--field", help="The Well input: the field to read as u")
    convert.add_argument(
        "--layout", choices=("tensor", "ns"), help="PDEBench output: tensor or 2-D NS layout"
    )
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _run_convert(args: argparse.Namespace) -> int:
    from physml.data import convert

    existing_file("IN", args.source)
    if args.out is None and args.out_option is None:
        raise ValueError("out: name the output file, as OUT after IN or with -o/--out")
    if args.out is not None and args.out_option is not None and args.out != args.out_option:
        raise ValueError(
            f"out: name the output file once, as OUT or with -o/--out, got {str(args.out)!r} "
            f"and {str(args.out_option)!r}"
        )
    path = convert(
        args.source,
        args.out if args.out is not None else args.out_option,
        to=args.to,
        field=args.field,
        layout=args.layout,
        overwrite=args.overwrite,
        overwrite_hint=OVERWRITE_FLAG,
    )
    print(f"wrote {path}")
    return 0


def _marks() -> tuple[str, str]:
    """✓ and ✗ where standard output can encode them, plain words elsewhere."""
    try:
        "✓✗".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ("met", "MISSED")
    return ("✓", "✗")


ASCII_SIGNS = {"≥": ">=", "≤": "<=", "σ": "sigma", "λ": "lambda", "τ": "tau", "×": "x", "±": "+/-"}
"""Spellings of the signs in task rows for a standard output that cannot encode them."""


def _print_text(text: str) -> None:
    """Print ``text``; a sign standard output cannot encode is spelt out (``≥`` → ``>=``) or,
    failing that, replaced by ``?``, so a finished run's report always prints."""
    encoding = sys.stdout.encoding or "ascii"
    try:
        text.encode(encoding)
    except LookupError:
        encoding = "ascii"
    except UnicodeEncodeError:
        pass
    else:
        print(text)
        return
    for sign, spelt in ASCII_SIGNS.items():
        text = text.replace(sign, spelt)
    print(text.encode(encoding, "replace").decode(encoding))


TASK_ERRORS = (ValueError, TypeError, OSError, SolverError, FloatingPointError)
"""A task's errors reported in one line, naming the task (others keep their traceback)."""


class TaskError(Exception):
    """A task of ``physml run`` or ``physml demo`` failed; the message names it."""


def _run_tasks(
    names: list[str], args: argparse.Namespace, size: str, cpu_only_on_cpu: bool = False
) -> int:
    """Run the tasks ``names`` on ``args.device``; ``cpu_only_on_cpu`` runs those that run on the
    CPU only there (saying which) instead of refusing the device."""
    from physml import tasks

    chosen = [tasks.get(name) for name in names]  # an unknown name fails before any folder
    check_device(args.device)
    if not cpu_only_on_cpu:
        tasks.check_task_device(chosen, args.device)
    if not 0 <= args.seed < SEED_LIMIT:
        limit = f"2**{SEED_LIMIT.bit_length() - 1}"
        raise ValueError(f"--seed must be an integer in [0, {limit}), got {args.seed}")
    if not str(args.out).strip():
        raise ValueError(f"--out must name a folder, got {str(args.out)!r}")
    writable_folder("out", args.out)
    context = tasks.Context(
        out=Path(args.out),
        size=size,
        device=args.device,
        seed=args.seed,
        quiet=not _progress_wanted(args),
    )
    context.out.mkdir(parents=True, exist_ok=True)
    on_cpu = [task.name for task in chosen if task.cpu_only]
    if on_cpu and not tasks.is_cpu(args.device):
        _print_text(f"on the CPU (they run on the CPU only): {', '.join(on_cpu)}")
    rows: list[tasks.Row] = []
    for task in chosen:
        name, task_context = task.name, tasks.task_context(task, context)
        started = time.perf_counter()
        try:
            task_rows = task.run(task_context)
        except KeyboardInterrupt:
            _report_stopped(context, rows, f"interrupted during task {name!r}", echo=False)
            raise
        except Exception as error:
            unwritten = _report_stopped(context, rows, f"task {name!r} failed: {error}")
            if isinstance(error, TASK_ERRORS):
                raise TaskError(f"task {name!r} failed: {error}{unwritten}") from error
            # an unexpected error keeps its traceback, and exits 2 like the others (1: targets)
            traceback.print_exception(error, file=sys.stderr)
            why = f"{type(error).__name__}: {error}{unwritten}"
            raise TaskError(f"task {name!r} failed: {why}") from error
        wall_s = time.perf_counter() - started
        try:
            tasks.save_rows(task_context, name, task_rows, wall_s)
        except Exception as error:  # the tasks before it still get their tables and index
            why = f"task {name!r} failed writing its rows: {error}"
            raise TaskError(why + _report_stopped(context, rows, why)) from error
        rows.extend(task_rows)
        rows.append(tasks.Row(task=name, case="(all)", metric="wall time [s]", value=wall_s))
    _report(context, rows)
    return 1 if any(row.ok is False for row in rows) else 0


def _report(context, rows: list, unfinished: str | None = None, echo: bool = True) -> None:
    """Write ``index.html`` of ``rows`` and, with ``echo``, print their tables; ``unfinished``
    says why the run stopped early (the index and the tables then hold the tasks before it)."""
    from physml import tasks
    from physml.tasks.report import write_index

    index = write_index(
        context.out, rows, tasks.registry().values(), unfinished=unfinished, context=context
    )
    if not echo or (unfinished and not rows):  # nothing finished: the error line says it all
        return
    measurements = tasks.format_table(rows)
    if measurements:
        _print_text(measurements + "\n")
    _print_text(tasks.format_summary(rows, _marks()))
    if unfinished:
        _print_text(f"\nincomplete: {unfinished}; the tables above hold the tasks before it")
    where = f"\nfigures and files: {context.out.resolve()}\nindex of figures: {index.resolve()}"
    _print_text(where)


def _report_stopped(context, rows: list, unfinished: str, echo: bool = True) -> str:
    """:func:`_report` for a run that stopped early: an index that cannot be written (the disk
    that failed the task, say) must not hide why the run stopped, so its error comes back as
    words to add to the reason ("" when the index was written)."""
    try:
        _report(context, rows, unfinished, echo=echo)
    except OSError as error:
        return f" (and index.html could not be written: {error})"
    return ""


def _add_task_options(
    parser: argparse.ArgumentParser, default_out: str, cpu_only: str = "refuse another"
) -> None:
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument(
        "--device",
        default="cpu",
        help=f"torch device (default cpu); the tasks that run on the CPU only {cpu_only}",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help=f"seed, 0 <= seed < 2**{SEED_LIMIT.bit_length() - 1} (default 0); each size and seed "
        "trains into its own folder under --out, and its summary and figures are named "
        "<size>-seed<seed>",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size",
        choices=("toy", "full"),
        default="full",
        help="full (default): the task's real scale; toy: a smoke run of every stage (the "
        "scale `physml demo` runs)",
    )
    _add_task_options(parser, "physml_output")


class _LazyHelp(argparse.Action):
    """A ``-h``/``--help`` that builds its text only when asked (:meth:`show` prints it)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        self.show(parser, namespace)
        parser.exit()

    def show(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
        raise NotImplementedError


class _TaskHelp(_LazyHelp):
    """``physml run``'s ``-h``/``--help``: after a task's name, that task's own help."""

    def show(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
        name = getattr(namespace, "task", None)
        if name is not None:
            from physml import tasks

            try:
                task = tasks.get(name)
            except ValueError as error:
                parser.error(str(error))
            parser = argparse.ArgumentParser(
                prog=f"{parser.prog} {name}",
                description=task.description,
                epilog="Writes the task's table of targets, figures and an index.html under --out"
                + ("; `physml demo` runs it at toy size." if task.in_demo else "."),
            )
            _add_run_options(parser)
        parser.print_help()


def demo_description(names: list[str] | None = None, width: int = 98) -> str:
    """``physml demo``'s description, wrapped to ``width`` without breaking task names at their
    hyphens; it names the demo tasks when ``names`` is given (``--help`` reads them from the
    registry, which the parser built for other commands does not)."""
    tasks = f": {', '.join(names)}" if names else ""
    description = (
        "Run the demo tasks at toy size (a smoke run of every stage; `physml run TASK` runs "
        f"one at full size){tasks}. Writes their table of targets, figures and an index.html "
        "under --out. --tasks runs only the tasks it names, and may name tasks outside the demo "
        "(`physml list` names every task)."
    )
    return textwrap.fill(description, max(width, 20), break_on_hyphens=False)


class _DemoHelp(_LazyHelp):
    """``physml demo``'s ``-h``/``--help``: the description also names the demo tasks (read from
    the registry only when help is asked for)."""

    def show(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
        from physml import tasks

        names = [name for name, task in tasks.registry().items() if task.in_demo]
        width = min(shutil.get_terminal_size((100, 24)).columns, 100) - 2
        parser.description = demo_description(names, width)
        parser.print_help()


def format_list(width: int | None = None) -> str:
    """The text of `physml list`: two sections, names padded to the longest name, descriptions
    wrapped to ``width`` (default: the terminal's, 100 when unknown) with continuation lines
    indented under the description column."""
    from physml import tasks

    sections = [
        ("PDE recipes (physml generate PDE):", sorted(problems.registry().items())),
        ("tasks (physml run TASK):", sorted(tasks.registry().items())),
    ]
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    name_width = max(len(name) for _, entries in sections for name, _ in entries)
    lines: list[str] = []
    for title, entries in sections:
        if lines:
            lines.append("")
        lines.append(title)
        for name, entry in entries:
            lines.extend(_described(name, entry.description, name_width, width))
    return "\n".join(lines)


def _described(name: str, description: str, name_width: int, width: int) -> list[str]:
    """The lines of one entry of a listing: ``name`` padded to ``name_width``, then
    ``description`` wrapped to ``width`` columns, its continuation lines indented under it."""
    indent = " " * (2 + name_width + 2)
    text_width = max(width - len(indent), 20)  # a very narrow terminal still gets readable lines
    wrapped = textwrap.wrap(" ".join(description.split()), text_width, break_on_hyphens=False)
    wrapped = wrapped or [""]
    first = f"  {name:<{name_width}}  {wrapped[0]}".rstrip()
    return [first, *(indent + line for line in wrapped[1:])]


def _is_main_guard(node: ast.stmt) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":``."""
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def benchmark_scripts(folder: Path | None = None) -> dict[str, str]:
    """The benchmark scripts of ``folder`` (default :data:`BENCHMARKS`), sorted by name, each
    with the first line of its module docstring: the ``*.py`` files that define ``main`` and
    run as scripts (``if __name__ == "__main__":``), not the modules of shared pieces
    (``common.py``). The files are parsed, not imported. A folder that is not there, or not
    beside the ``pyproject.toml`` of physml (an installed package, not a source checkout), is a
    ``FileNotFoundError`` saying where they are."""
    folder = BENCHMARKS if folder is None else Path(folder)
    if not (folder.is_dir() and _physml_checkout(folder.parent)):
        what = (
            f"{folder} is not the benchmarks folder of a physml source checkout (no "
            "pyproject.toml of physml beside it)"
            if folder.is_dir()
            else f"no benchmarks folder at {folder}"
        )
        raise FileNotFoundError(
            f"{what}: the benchmark scripts ship with the source "
            "repository, not with the installed package; clone the repository, install it with "
            "`pip install -e .` and run `physml bench` there (or `python benchmarks/NAME.py`)"
        )
    scripts = {}
    for path in sorted(folder.glob("*.py")):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError) as error:
            scripts[path.stem] = f"(cannot be parsed: {error})"
            continue
        body = tree.body
        has_main = any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in body)
        if has_main and any(_is_main_guard(node) for node in body):
            docstring = ast.get_docstring(tree) or ""
            scripts[path.stem] = docstring.strip().split("\n")[0].strip()
    return scripts


def _physml_checkout(root: Path) -> bool:
    """Whether ``root`` holds the ``pyproject.toml`` of physml (``name = "physml"`` in its
    ``[project]`` table): the source checkout whose ``benchmarks/`` ``physml bench`` may run."""
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        import tomllib
    except ImportError:  # Python 3.10: the [project] table's name line, read by hand
        table = re.search(r"^\[project\][ \t]*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        name = table and re.search(r"^name\s*=\s*[\"']([^\"']*)[\"']", table.group(1), re.M)
        return bool(name) and name.group(1) == "physml"
    try:
        project = tomllib.loads(text).get("project")
    except tomllib.TOMLDecodeError:
        return False
    return isinstance(project, dict) and project.get("name") == "physml"


def format_benchmarks(scripts: dict[str, str], width: int | None = None) -> str:
    """The text of ``physml bench``: each benchmark script (:func:`benchmark_scripts`) and the
    first line of its docstring, laid out as ``physml list`` lays out its entries."""
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    lines = [f"benchmark scripts of {BENCHMARKS} (physml bench NAME [ARGS...]; NAME --help):"]
    name_width = max(map(len, scripts), default=0)
    for name, description in scripts.items():
        lines.extend(_described(name, description, name_width, width))
    return "\n".join(lines)


def _run_bench(args: argparse.Namespace) -> int:
    """``physml bench``: list the benchmark scripts, or run one with the arguments that follow
    its name under this Python, in the current folder; the script's exit status (128 plus the
    signal's number where a signal ended it, as a shell says). A stop is the script's to handle
    (it says what it kept): each one that reaches ``physml`` is passed on to it once and
    ``physml`` waits for it to end."""
    scripts = benchmark_scripts()
    if args.name is None:
        print(format_benchmarks(scripts))
        return 0
    name = args.name.removesuffix(".py")
    if name not in scripts and (BENCHMARKS / f"{name}.py").is_file():
        raise ValueError(
            f"NAME: benchmarks/{name}.py holds pieces the scripts share, not a benchmark script "
            "(`physml bench` lists them)"
        )
    if name not in scripts:
        raise ValueError(
            f"NAME: no benchmark script {args.name!r} in {BENCHMARKS} (`physml bench` lists "
            f"them){did_you_mean(name, scripts)}"
        )
    status = _run_passing_stops_on([sys.executable, str(BENCHMARKS / f"{name}.py"), *args.args])
    return status if status >= 0 else 128 - status


def _run_passing_stops_on(command: list[str]) -> int:
    """The return code of ``command``, run to its end in a process group of its own, each stop
    (SIGINT, SIGTERM, SIGHUP) that reaches ``physml`` meanwhile passed on to it once, so that it
    says what it kept and ``physml`` ends only after it. A stop sent to ``physml``'s process
    group (a terminal's Ctrl-C, ``kill -INT -PGID``, ``timeout``, a job scheduler) reaches the
    command through ``physml`` alone, and none is sent of ``physml``'s own accord: a second
    Ctrl-C is passed on as the first. Should the wait fail, the command is terminated and waited
    for before the exception goes on. A stop ``physml`` ignores (``nohup``) is left alone: the
    command ignores it too. Outside the terminal's foreground group, the command reads no input
    (its stdin is empty). Off the main thread, where no handler can be set, the command runs in
    ``physml``'s group and is waited for."""
    if threading.current_thread() is not threading.main_thread():
        return subprocess.call(command)
    own_group = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
    script: subprocess.Popen | None = None
    early: list[int] = []  # the stops that came before the script started

    def pass_on(signum: int, frame: object) -> None:
        if script is None:
            early.append(signum)
        else:
            script.send_signal(signum)  # nothing once it has ended

    previous: dict[int, object] = {}  # the handlers replaced, put back at the end
    try:
        for signum in (signal.SIGINT, *STOPPING):
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                previous[signum] = signal.signal(signum, pass_on)
        # outside the terminal's foreground group a read of the terminal would stop it for good
        script = subprocess.Popen(command, stdin=subprocess.DEVNULL, **own_group)
        try:
            while early:
                script.send_signal(early.pop(0))
            while script.returncode is None:
                script.wait()
        except BaseException:
            if script.poll() is None:
                script.terminate()
                script.wait()
            raise
        return script.returncode
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="physml", description="Physics-constrained scientific machine learning."
    )
    parser.add_argument(
        "--version", action="version", version=f"physml {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_generate(subparsers)
    _add_merge(subparsers)
    _add_convert(subparsers)
    training_commands.add_parsers(subparsers)

    run = subparsers.add_parser(
        "run",
        help="run one registered task at full size",
        description="Run one registered task: its table of targets, figures and an index.html "
        "under --out. `physml list` names the tasks and says what each does; "
        "`physml run TASK --help` describes one.",
        add_help=False,
    )
    run.add_argument("-h", "--help", action=_TaskHelp, help="show this help message and exit")
    run.add_argument("task", help="task name (see `physml list`)")
    _add_run_options(run)

    demo = subparsers.add_parser(
        "demo",
        help="a quick tour: every demo task at toy size",
        description=demo_description(),
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # _DemoHelp wraps it
    )
    demo.add_argument("-h", "--help", action=_DemoHelp, help="show this help message and exit")
    demo.add_argument(
        "--tasks",
        nargs="*",
        help="only these tasks; any registered task, those outside the demo too",
    )
    _add_task_options(demo, "demo_output", "run there, the others on the device")

    bench = subparsers.add_parser(
        "bench",
        help="list the benchmark scripts, or run one",
        description="Without NAME, list the benchmark scripts of the source checkout (benchmarks/) "
        "with what each measures. With NAME, run `python benchmarks/NAME.py ARGS...` under this "
        "Python in the current folder and exit with its status; `physml bench NAME --help` shows "
        "the script's own options. The scripts ship with the source repository, not with an "
        "installed package.",
    )
    bench.add_argument("name", nargs="?", metavar="NAME", help="the benchmark script to run")
    bench.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for the script"
    )

    subparsers.add_parser("list", help="list the PDE recipes and the tasks")
    return parser


def _replace_unencodable() -> None:
    """Let stdout and stderr replace what their encoding cannot write (``→``, ``π`` on a cp1252
    console or an ascii redirect) instead of failing after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="replace")


def _interrupted_hint(args: argparse.Namespace) -> str:
    """The end of the line Ctrl-C prints: what rerunning the same command picks up (for
    ``generate`` and ``train``, what was saved before the interrupt)."""
    if args.command == "generate":
        from physml.data.generate import shard_path

        final = shard_path(Path(args.out), args.shard, args.num_shards)
        if final.exists() and not args.overwrite:  # renamed into place: the samples are all in
            if args.num_shards == 1 or Path(args.out).exists():
                return f" after {final} was written: it is complete"
            waiting = _waiting_for(args)
            if waiting:
                return f" after {final} was written{waiting}"
            return (
                f" after {final} was written, before the index {args.out}; rerunning the same "
                "command writes the index"
            )
        chunks = len(list(final.with_name(final.name + ".partial").glob("chunk-*.npz")))
        if chunks:
            return (
                f"; rerunning the same command resumes from the {chunks} chunk(s) of samples "
                "written"
            )
        return (
            f" before its first chunk of samples (--chunk {args.chunk}) was saved; rerunning the "
            "same command starts over"
        )
    if args.command == "train":
        return training_commands.interrupted_hint(args)
    if args.command in ("run", "demo"):
        return _tasks_resume_hint(args)
    return ""


def _tasks_resume_hint(args: argparse.Namespace) -> str:
    """What rerunning ``run`` or ``demo`` picks up: the checkpoints of the tasks that save them
    (:attr:`physml.tasks.Task.checkpoints`); the others start over."""
    from physml import tasks

    known = tasks.registry()
    if args.command == "run":
        names = [args.task]
    else:
        names = list(dict.fromkeys(args.tasks or [n for n, t in known.items() if t.in_demo]))
    names = [name for name in names if name in known]
    if not names:
        return ""
    saving = [name for name in names if known[name].checkpoints]
    others = [name for name in names if not known[name].checkpoints]
    if not others:
        return "; rerunning the same command resumes from the checkpoints"
    if not saving:
        what = "this task saves" if len(others) == 1 else "these tasks save"
        return f"; rerunning the same command starts over ({what} no checkpoints)"
    none = "it saves none" if len(others) == 1 else "they save none"
    whose = "its" if len(saving) == 1 else "their"
    return (
        f"; rerunning the same command resumes {', '.join(saving)} from {whose} checkpoints and "
        f"starts {', '.join(others)} over ({none})"
    )


def main(argv: list[str] | None = None) -> int:
    _replace_unencodable()
    args = build_parser().parse_args(argv)
    try:
        with signals_interrupt():
            return _dispatch(args)
    except KeyboardInterrupt as error:
        return _stopped(args, error)
    except BrokenPipeError:  # the reader stopped early (`physml list | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, SolverError, FloatingPointError, TaskError) as error:
        print(f"physml {args.command}: error: {error}", file=sys.stderr)
        return 2


def _stopped(args: argparse.Namespace, error: KeyboardInterrupt) -> int:
    """The exit status of a command ``error`` stopped, after its one line (rank 0's: the
    interruption reaches every torchrun rank), said while a repeated SIGTERM is still let go."""
    return say_interrupted(f"physml {args.command}", error, rank, lambda: _interrupted_hint(args))


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand ``args`` names; its exit status."""
    if args.command == "generate":
        return _run_generate(args)
    if args.command == "merge":
        return _run_merge(args)
    if args.command == "convert":
        return _run_convert(args)
    if args.command == "train":
        from physml.updates.previous import distill_from

        return training_commands.run_train(args, distill=distill_from)
    if args.command == "evaluate":
        return training_commands.run_evaluate(args)
    if args.command == "run":
        return _run_tasks([args.task], args, args.size)
    if args.command == "demo":
        from physml import tasks

        if args.tasks == []:
            raise ValueError(
                "--tasks must name at least one task (leave it out for every demo task), got none"
            )
        names = args.tasks or [n for n, t in tasks.registry().items() if t.in_demo]
        return _run_tasks(list(dict.fromkeys(names)), args, "toy", cpu_only_on_cpu=True)
    if args.command == "bench":
        return _run_bench(args)
    if args.command == "list":
        print(format_list())
        return 0
    return 1
