"""``physml train`` and ``physml evaluate``: generated data → checkpoint → metrics and plots.

Flags and a ``--config FILE.toml`` give the same settings (flags win); the model's description and
the training settings are saved in the checkpoint, so ``evaluate`` needs only the folder and data.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from pdes.checks import finite_number

from .. import metrics
from .._checks import json_value, optional_positive
from .._io import existing_file, writable_folder
from ..data import PDEData, load
from ..data.datasets import PER_SAMPLE_ROWS, DatasetFileError
from ..data.interchange import (
    PDEBENCH_PREFIX,
    detect_format,
    file_name_parameters,
    pdebench_family,
    pdebench_grid_kind,
)
from ..io import atomic_write_text, save_figure, strict_json
from .checkpoint import REMEDY, CheckpointError, checkpoint_path, load_checkpoint, load_weights
from .distributed import rank, world
from .families import (
    DEFAULTS,
    FAMILIES,
    TASKS,
    WallsUnknownError,
    build,
    check_dimensions,
    check_same_pairs,
    check_spectral_shift,
    model_config,
    readers,
    same_model,
    training_items,
    with_domain,
)
from .probabilistic import Objective
from .trainer import OPTIONAL_SETTINGS, Loss, TrainConfig, Trainer, check_device

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
DISTILL_DEFAULTS = {
    "distill_lambda": 1.0,
    "distill_alpha": 1.0,
    "distill_beta": 5.0,
    "distill_tau": "the old model's median relative L2 on the training pairs",
}
"""Settings of ``--distill-from``, the λ, α, β and τ of focal distillation (physml.updates)."""
DISTILL_RECORDED = ("strength", "alpha", "beta", "tau")
"""The settings of the built distillation loss a checkpoint records (its attributes)."""
DistillHook = Callable[..., Loss]
REPORT = "report.json"
"""The summary of the run that physml train writes in its run folder besides the checkpoint."""
EVALUATION = "evaluation"
"""The folder in a run folder where physml evaluate writes by default."""


def add_parsers(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model on a dataset file",
        description="Train a model on a dataset file of physml generate. Run the same command "
        "again to resume a killed run; the settings are kept in the checkpoint. A run on "
        "--schedule constant may be resumed with more --steps; one on the cosine schedule, which "
        "decays over --steps (default 1000), may not. --budget-s without --steps trains until "
        "the budget is spent, the cosine decaying over its seconds; with --steps the cosine "
        "decays over them and the budget only stops the run. --budget-s may change on resume "
        "(but not that of a cosine run without --steps), --clock may not.",
    )
    train.add_argument(
        "--data", help="HDF5 dataset (physml generate); required (here or in --config)"
    )
    train.add_argument("--model", choices=sorted(FAMILIES), help="required (here or in --config)")
    train.add_argument("--task", choices=TASKS, help="required (here or in --config)")
    train.add_argument(
        "--out",
        help="run folder (checkpoint.pt, report.json): a new one, one without a report.json of "
        "its own, or a run's to resume it; required (here or in --config)",
    )
    train.add_argument(
        "--config",
        help="TOML file with the flags' settings as keys (all but --config and --quiet; paths "
        "from the working folder, as the flags take them); a flag given wins over its key",
    )
    train.add_argument("--val-fraction", type=float, default=None, help="default 0.1")
    trainer_defaults = {f.name: f.default for f in fields(TrainConfig)}
    for name in ("steps", "batch", "accumulate", "seed", "checkpoint_every", "validate_every"):
        shown = trainer_defaults[name]
        if name == "steps":
            shown = f"{shown}, or none with --budget-s: the run ends when the budget is spent"
        train.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {shown}"
        )
    for name in ("lr", "clip", "weight_decay"):
        default = trainer_defaults[name]
        shown = "none (leave it out)" if default is None else default
        train.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=None, help=f"default {shown}"
        )
    train.add_argument("--schedule", default=None, help="cosine (default) or constant")
    train.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds of training after which the run stops, if --steps did not stop it first "
        "(default none); validation and checkpoint writes do not count. Without --steps the "
        "cosine schedule decays over these seconds",
    )
    train.add_argument(
        "--clock",
        default=None,
        help="what --budget-s counts: wall (default, the elapsed time) or cpu (this process's "
        "CPU time)",
    )
    train.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N")
    for name, default in DEFAULTS.items():
        train.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=None,
            help=f"model setting, default {default}; read by {readers(name)}",
        )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    distill = train.add_argument_group(
        "positive-congruent training", "pull the new model toward an old one where it was right"
    )
    distill.add_argument("--distill-from", help="run folder of the old model (physml train)")
    for name, default in DISTILL_DEFAULTS.items():
        distill.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=None, help=f"default {default}"
        )
    evaluate = subparsers.add_parser(
        "evaluate",
        help="score a trained checkpoint on a dataset",
        description="Score a run of physml train on a dataset file: a metrics table, "
        "metrics.json (naming the file and the checkpoint's step) and a figure of three samples, "
        "in RUN/evaluation or --out. A file generated with other settings than the training file "
        "is scored with a note naming them (settings_differ in metrics.json).",
    )
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        help="run folder of physml train, or a checkpoint file (the evaluation goes to its folder)",
    )
    evaluate.add_argument("--data", required=True, help="HDF5 dataset to score on")
    evaluate.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json and the figure (default RUN/evaluation, which the "
        "evaluation of another file replaces)",
    )
    evaluate.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")


def settings(args: argparse.Namespace) -> dict:
    """Defaults < the TOML file < the flags given; unknown TOML keys are an error, and so is a
    missing ``data``, ``out``, ``model`` or ``task``."""
    merged: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"--config: no file at {str(path)!r}")
        try:
            merged = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"--config: {str(path)!r} is not valid TOML ({error})") from None
        except RecursionError:
            raise ValueError(
                f"--config: {str(path)!r} nests arrays or tables deeper than Python's recursion "
                "limit lets it read"
            ) from None
        known = TRAIN_FIELDS | set(DEFAULTS) | set(DISTILL_DEFAULTS)
        known |= {"data", "out", "model", "task", "val_fraction", "distill_from"}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"--config: unknown key(s) {unknown}; known: {sorted(known)}")
        for key, wanted in (
            ("data", "the dataset file"),
            ("out", "the run folder"),
            ("model", f"one of {sorted(FAMILIES)}"),
            ("task", f"one of {list(TASKS)}"),
            ("distill_from", "the run folder of the old model"),
        ):
            if key in merged and not isinstance(merged[key], str):
                raise TypeError(f"--config: {key} must be a string, {wanted}, got {merged[key]!r}")
    for key, value in vars(args).items():
        if value is not None and key not in ("config", "quiet", "command"):
            merged[key] = value
    for key in ("data", "model", "task", "out"):
        if key not in merged:
            raise ValueError(f"--{key} is required (as a flag or in --config)")
    return merged


def train_settings(chosen: dict) -> dict:
    """The :class:`TrainConfig` fields among the merged settings ``chosen`` (:func:`settings`).
    A time budget given without steps (neither a flag nor a key) gives ``steps=None``: the run
    trains until the budget is spent, its cosine schedule decaying over the budget's seconds."""
    given = {key: value for key, value in chosen.items() if key in TRAIN_FIELDS}
    if given.get("budget_s") is not None and "steps" not in given:
        given["steps"] = None
    return given


def check_two_times(
    description: dict, data: PDEData, path: str | Path, flag: str = "--data"
) -> None:
    """The file ``path`` of ``flag`` must hold two times at least when the model of
    ``description`` works on pairs of times (every family but the point models)."""
    if FAMILIES[description["model"]].pairs is None and data.u.shape[1] < 2:
        raise ValueError(
            f"{flag}: {str(path)!r} holds a single time (u of shape {tuple(data.u.shape)}: sample, "
            f"time, *space); the {description['model']} of task {description['task']} maps "
            "fields at one time to another and needs at least two (generate with --nt >= 2)"
        )


def split(data: PDEData, fraction: float) -> tuple[PDEData, PDEData | None]:
    """The first samples for training, the last ``fraction`` of them for validation."""
    fraction = finite_number("--val-fraction", fraction)
    if not 0 <= fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {fraction}")
    held = int(round(fraction * len(data)))
    if held == 0:
        return data, None
    if held == len(data):
        raise ValueError(
            f"--val-fraction {fraction} holds out all {len(data)} samples of the file, leaving "
            "none to train on; give a smaller fraction"
        )

    def part(index: slice) -> PDEData:
        return replace(
            data,
            u=data.u[index],
            params={k: v[index] for k, v in data.params.items()},
            fields={k: v[index] for k, v in data.fields.items()},
            **{
                name: None if getattr(data, name) is None else getattr(data, name)[index]
                for name in PER_SAMPLE_ROWS
            },
        )

    return part(slice(0, len(data) - held)), part(slice(len(data) - held, len(data)))


def check_optional_settings(args: argparse.Namespace, chosen: dict) -> None:
    """Refuse a ``--budget-s`` or ``--clip`` (flag or ``--config`` key) out of range by its
    source, saying to leave it out for none: a command line cannot pass the None that
    :class:`TrainConfig`'s own message offers."""
    for key, (expected, none) in OPTIONAL_SETTINGS.items():
        if chosen.get(key) is not None:
            source = _source(args, key)
            unset = f"leave {source} out" if source.startswith("--") else "leave the key out"
            optional_positive(source, chosen[key], expected, none, unset)


def _source(args: argparse.Namespace, key: str) -> str:
    """How errors name the setting ``key``: its flag (``--data``), or where the TOML file of
    ``--config`` gave it (``data in --config 'run.toml'``)."""
    if getattr(args, key, None) is None and args.config:
        return f"{key} in --config {str(args.config)!r}"
    return f"--{key.replace('_', '-')}"


def run_train(args: argparse.Namespace, distill: DistillHook | None = None) -> int:
    """``physml train``. ``distill`` builds the loss of ``--distill-from``
    (:func:`physml.updates.previous.distill_from`: the command line passes it in, since
    ``physml.updates`` sits above ``physml.training``)."""
    chosen = settings(args)
    out, out_flag, data_flag = chosen["out"], _source(args, "out"), _source(args, "data")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"{out_flag}: {str(out)!r} is a file; physml train writes a run folder")
    writable_folder(out_flag, out)
    check_run_folder(out_flag, out)
    if chosen.get("distill_from") is not None:
        existing_run(_source(args, "distill_from"), chosen["distill_from"])
    check_optional_settings(args, chosen)
    config = TrainConfig(**train_settings(chosen))
    description = model_config(
        chosen["model"], chosen["task"], {k: chosen.get(k) for k in DEFAULTS}
    )
    data = load_data(chosen["data"], data_flag)
    check_dimensions(description, data)
    check_two_times(description, data, chosen["data"], data_flag)
    train_data, val_data = split(data, chosen.get("val_fraction", 0.1))
    description = with_domain(description, train_data)
    if rank() == 0:
        _note_capped_modes(chosen.get("modes"), description, train_data)
    torch.manual_seed(config.seed)  # the initial weights follow --seed in every process
    model, train_set = build(description, train_data)
    validation = None if val_data is None else training_items(description, val_data)
    loss = FAMILIES[description["model"]].loss
    if chosen.get("distill_from") is not None:
        if distill is None:
            raise ValueError(
                "--distill-from: run_train was given no distill= builder (physml train passes "
                "physml.updates.previous.distill_from)"
            )
        options = {
            _distill_key(name): chosen[name]
            for name in DISTILL_DEFAULTS
            if chosen.get(name) is not None
        }
        loss = distill(
            chosen["distill_from"],
            loss,
            train_data,
            train_set,
            description["task"],
            task_options=description["options"],
            **options,
        )
        asked = {**_distill_defaults(), **options}
        recorded = {key: getattr(loss, key, asked.get(key)) for key in DISTILL_RECORDED}
        description = {**description, "distill": {k: float(v) for k, v in recorded.items()}}
    elif any(chosen.get(name) is not None for name in DISTILL_DEFAULTS):
        raise ValueError("--distill-lambda/-alpha/-beta/-tau need --distill-from")
    description = _as_resumed(description, Path(out))
    trainer = Trainer(model, loss, config, out, description, quiet=args.quiet, remedy=REMEDY)
    report = trainer.fit(train_set, validation)
    if world(config.device).rank != 0:
        return 0
    summary = {
        "steps": report.steps,
        "resumed_from": report.resumed_from,
        "final_loss": report.final_loss,
        "validation": report.validation,
        "wall_s": report.wall_s,
        "samples_per_s": report.samples_per_s,
        "stopped_at": report.stopped_at,
        "train_s": report.train_s,
        "budget_s": config.budget_s,
        "clock": config.clock,
    }
    path = Path(out) / REPORT
    if report.resumed_from == report.steps:  # nothing trained: keep the timing of the call that did
        summary.update(_timing_of(path, report.steps))
    atomic_write_text(path, strict_json(summary))
    last = ""
    if report.validation:
        value = report.validation[-1][1]
        last = ", validation " + ("not finite" if value is None else f"{value:.4g}")
    budget_spent = report.stopped_at is not None and config.budget_s is not None
    done = (
        f"stopped by the time budget after {report.steps} steps"
        if budget_spent
        else f"trained {report.steps} steps"
    )
    print(f"{done}: loss {report.final_loss:.4g}{last} -> {out}")
    return 0


TIMING = ("resumed_from", "wall_s", "samples_per_s")
"""The keys of a report that time the call of physml train that trained the run."""


def _timing_of(path: Path, steps: int) -> dict:
    """The timing (:data:`TIMING`) in the report at ``path`` when it is one of physml train that
    reports the run at ``steps`` steps; ``{}`` otherwise (none there, another step: the report
    of an earlier call, left by a run killed before it wrote its own)."""
    try:
        earlier = json_value(
            str(path),
            path.read_text(encoding="utf-8"),
            "a report of physml train",
            lambda value: isinstance(value, dict),
        )
    except (OSError, ValueError):
        return {}
    if earlier.get("steps") != steps or not set(TIMING) <= set(earlier):
        return {}
    return {key: earlier[key] for key in TIMING}


def check_run_folder(argument: str, out: str | os.PathLike) -> None:
    """``out`` (``argument``: ``--out``), where it exists with no checkpoint in it, must hold no
    file the run would write over: a ``report.json`` that is not a report of physml train is a
    ``ValueError`` naming it. Other files (the run's log, its config) are left alone, and a run
    folder with its checkpoint resumes."""
    folder = Path(out)
    if not folder.is_dir() or checkpoint_path(folder).exists():
        return
    report = folder / REPORT
    if report.exists() and not _train_report(report):
        raise ValueError(
            f"{argument}: {str(folder)!r} holds a {REPORT} that is not a report of physml train, "
            "which the run would write over: move it, or use a new or empty folder"
        )


def _train_report(path: Path) -> bool:
    """Whether ``path`` is a report a run of physml train wrote."""
    try:
        json_value(
            str(path),
            path.read_text(encoding="utf-8"),
            "a report of physml train",
            lambda report: isinstance(report, dict) and {"steps", "resumed_from"} <= set(report),
        )
    except (OSError, ValueError):
        return False
    return True


def _note_capped_modes(asked: int | None, description: dict, data: PDEData) -> None:
    """Say so when the ``--modes`` asked for exceed what the FNO of ``description`` keeps on the
    grid of ``data`` (half its smallest axis, :func:`~physml.training.families.kept_modes`)."""
    kept = description.get("n_modes")
    if asked is not None and kept is not None and asked > kept:
        grid = " x ".join(map(str, data.space_shape))
        print(
            f"note: --modes {asked} is more than the {grid}-point grid holds: at most {kept} "
            f"Fourier modes per axis (half its smallest axis); training with {kept}"
        )


def interrupted_hint(args: argparse.Namespace) -> str:
    """The end of the line Ctrl-C on ``physml train`` prints: a rerun resumes from the checkpoint
    in ``--out`` (naming its step), or, before the first one was written, starts over; ``""``
    when the settings name no run folder."""
    try:
        chosen = settings(args)
    except (OSError, ValueError, TypeError):
        chosen = {"out": args.out}
    if chosen.get("out") is None:
        return ""
    path = checkpoint_path(chosen["out"])
    if path.is_file():
        try:
            step = f" at step {int(load_checkpoint(path)['step'])}"
        except (OSError, ValueError, TypeError):
            step = f" in {str(chosen['out'])!r}"
        return f"; rerunning the same command resumes from the checkpoint{step}"
    every = chosen.get("checkpoint_every")
    every = TrainConfig.checkpoint_every if every is None else every
    return (
        f" before its first checkpoint (written every --checkpoint-every {every} steps); "
        "rerunning the same command starts over"
    )


def _distill_key(name: str) -> str:
    """The key in a checkpoint's ``distill`` record of the setting ``name`` (``distill_lambda``
    → ``strength``)."""
    return name.removeprefix("distill_").replace("lambda", "strength")


def _distill_defaults() -> dict:
    """The recorded defaults of ``--distill-lambda/-alpha/-beta`` (τ is always recorded)."""
    return {
        _distill_key(name): default
        for name, default in DISTILL_DEFAULTS.items()
        if isinstance(default, float)
    }


def _as_resumed(description: dict, out: Path) -> dict:
    """The description of the run in ``out`` when it is ``description`` written earlier: before
    ``n_modes`` was recorded (its modes were capped on the same training file), before an FNO's
    ``position`` was (it goes on with neuralop's grid embedding, which its weights learned), or
    with options its model does not read (:func:`~physml.training.families.same_model`), or
    on PDEBench data before they were read as cell centres (its node position channels are the
    run's own, at every resume); so it resumes. An FNO trained there with the earlier spectral
    convolution is refused
    (:func:`~physml.training.families.check_spectral_shift`)."""
    if not checkpoint_path(out).is_file():
        return description
    state = load_checkpoint(out)
    saved = state["model_config"]
    check_spectral_shift(saved, state["fingerprint"].get("shapes"), f"checkpoint: {str(out)!r}")
    current, recorded = description, _with_distill_defaults(saved)
    if isinstance(saved, dict):
        unrecorded = {"n_modes", "position"} - set(saved)
        if _read_as_nodes(saved, description, state["fingerprint"]):
            unrecorded.add("position")
            recorded = {key: value for key, value in recorded.items() if key != "position"}
        current = {key: value for key, value in description.items() if key not in unrecorded}
    if same_model(recorded, current):
        return saved
    _check_same_distillation(recorded, current, out)
    return description


def _read_as_nodes(saved: dict, description: dict, fingerprint: dict) -> bool:
    """Whether the run ``saved`` placed nodes where ``description`` places cell centres because
    it was trained on PDEBench data before they were read as such (its fingerprint's attributes
    are of a PDEBench file, whatever their ``pde``:
    :func:`~physml.data.interchange.pdebench_grid_kind`): its recorded ``position`` is
    ``"node"``, which every resume keeps."""
    attributes = fingerprint.get("attributes")
    return (
        saved.get("position") == "node"
        and description.get("position") == "cell"
        and isinstance(attributes, dict)
        and pdebench_grid_kind(attributes, may_be_ours=False) is not None
    )


def _with_distill_defaults(saved: object) -> object:
    """``saved`` with the distillation defaults filled in (runs before they were recorded
    left them out)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("distill"), dict):
        return saved
    return {**saved, "distill": {**_distill_defaults(), **saved["distill"]}}


def _check_same_distillation(saved: object, current: dict, out: Path) -> None:
    """A run that differs from the one in ``out`` only in its ``--distill-*`` settings is
    refused naming each of them (the model is the same, its loss is not)."""
    if not isinstance(saved, dict):
        return
    old, new = saved.get("distill"), current.get("distill")
    if old == new or not same_model({**saved, "distill": None}, {**current, "distill": None}):
        return
    where = f"checkpoint: {str(out)!r} was trained"
    if not isinstance(old, dict) or not isinstance(new, dict):
        asked = "leaves it out" if new is None else "gives it"
        raise CheckpointError(
            f"{where} {'without' if old is None else 'with'} --distill-from, this command "
            f"{asked}; refusing to resume. Use another --out, or the run's own settings"
        )
    flags = {_distill_key(name): f"--{name.replace('_', '-')}" for name in DISTILL_DEFAULTS}
    changed = "; ".join(
        f"distill.{key} {old.get(key)!r}, this command asks {new.get(key)!r} "
        f"({flags.get(key, key)})"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    )
    raise CheckpointError(
        f"{where} with {changed}; refusing to resume. Use another --out, or the run's own settings"
    )


def same_problem(trained_on: str | None, holds: str | None) -> bool:
    """Whether a file of PDE ``holds`` measures a model trained on PDE ``trained_on``: the same
    name, a file (or run) that records none, or two converted PDEBench files of one PDE (their
    names are the file names, which differ by parameters, e.g. another viscosity)."""
    if trained_on is None or holds is None or trained_on == holds:
        return True
    converted = trained_on.startswith(PDEBENCH_PREFIX) and holds.startswith(PDEBENCH_PREFIX)
    return converted and pdebench_family(trained_on) == pdebench_family(holds)


def pdebench_named(trained_on: str | None, holds: str | None) -> list[str]:
    """The names among ``trained_on`` and ``holds`` that are PDEBench files' (``[]`` when
    ``trained_on`` is none: :func:`declaring` has nothing to say)."""
    if not isinstance(trained_on, str):
        return []
    return [name for name in (trained_on, holds) if str(name).startswith(PDEBENCH_PREFIX)]


def declaring(
    trained_on: str | None,
    holds: str | None,
    data: str | os.PathLike,
    parameters: dict[str, float] | None = None,
) -> str:
    """How to say that the file ``data`` (of PDE ``holds``) holds the PDE ``trained_on`` a run
    learned, where either name is a PDEBench file's, taken from its file name; ``""`` otherwise.
    ``parameters``: root attributes to set with it (:func:`file_name_parameters_to_declare`)."""
    named = pdebench_named(trained_on, holds)
    if not named:
        return ""
    declared = {"pde": trained_on, **(parameters or {})}
    line = f"attrs['pde'] = {trained_on!r}" if len(declared) == 1 else f"attrs.update({declared!r})"
    return (
        f". A PDEBench file without a root attribute 'pde' is named after its file name "
        f"({', '.join(map(repr, named))}); if {str(data)!r} holds the PDE the run learned, say "
        f"so: h5py.File({str(data)!r}, 'a').{line}"
        + ("" if len(declared) == 1 else " (the run read those parameters from its file's name)")
    )


def file_name_parameters_to_declare(
    trained: dict, contents: PDEData, data: str | os.PathLike
) -> dict[str, float]:
    """The parameters a run read from its PDEBench training file's name (``trained``: that
    file's attributes, whose ``params_from_file_name`` lists them) that the PDEBench file
    ``data`` (read as ``contents``) lacks, to give as its root attributes: ``{"beta": 1.0}``."""
    try:
        names = json_value(
            "params_from_file_name",
            trained.get("params_from_file_name"),
            "a JSON list of parameter names",
            lambda value: isinstance(value, list),
        )
    except ValueError:
        return {}
    if detect_format(data) != "pdebench":
        return {}
    values = file_name_parameters(Path(str(trained.get("source_file", ""))).stem)
    return {name: values[name] for name in names if name in values and name not in contents.params}


def settings_differ(trained_on: dict, holds: dict) -> dict[str, dict]:
    """The recipe settings (a file's JSON ``settings`` attribute) in which a file's description
    ``holds`` differs from the training file's ``trained_on``: ``{name: {"training": value,
    "data": value}}`` (``None`` where one lacks it; ``{}`` when either records none)."""
    try:
        old, new = (
            json_value(
                "settings",
                attributes.get("settings"),
                "a JSON object",
                lambda value: isinstance(value, dict),
            )
            for attributes in (trained_on, holds)
        )
    except ValueError:
        return {}
    return {
        name: {"training": old.get(name), "data": new.get(name)}
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    }


def load_data(path: str | os.PathLike, flag: str = "--data") -> PDEData:
    """The dataset given to ``flag`` (:func:`physml.data.load`); its errors name that flag
    where they name ``load``'s argument ``path``."""
    try:
        return load(existing_file(flag, path))
    except (DatasetFileError, OSError) as error:
        message = str(error)
        if not message.startswith("path: "):
            raise
        raise type(error)(f"{flag}: {message.removeprefix('path: ')}") from None


def existing_run(flag: str, path: str | Path) -> Path:
    """``path`` as given to ``flag``: a run folder of physml train (holding its checkpoint) or a
    checkpoint file; else a ``FileNotFoundError`` naming ``flag``."""
    given = Path(path)
    if not given.exists():
        raise FileNotFoundError(f"{flag}: no run folder or checkpoint file at {str(given)!r}")
    if given.is_dir() and not checkpoint_path(given).is_file():
        raise FileNotFoundError(
            f"{flag}: {str(given)!r} holds no {checkpoint_path(given).name}: not a run folder of "
            "physml train"
        )
    return given


def rebuild_run(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    flags: tuple[str, str] = ("--checkpoint", "--data"),
) -> tuple[nn.Module, dict, PDEData, Dataset, Path]:
    """The model of a run of physml train (``checkpoint``: its folder or checkpoint file, read
    with ``weights_only=True``) rebuilt for the file ``data`` and its weights loaded, on the CPU
    in training mode; with the checkpoint, the file's contents, its items and the run folder.
    The file must hold solutions of the PDE the model was trained on, in pairs of the shapes it
    was trained on; ``flags`` name ``checkpoint`` and ``data`` in the errors. Building does not
    touch the global random state."""
    checkpoint_flag, data_flag = flags
    given = existing_run(checkpoint_flag, checkpoint)
    existing_file(data_flag, data)
    run = given.parent if given.is_file() else given  # a checkpoint file: its run folder
    state = load_checkpoint(given, argument=checkpoint_flag, data_argument=data_flag)
    description = state["model_config"]
    model = description.get("model") if isinstance(description, dict) else None
    if not isinstance(model, str) or model not in FAMILIES:
        raise ValueError(f"{checkpoint_flag}: {str(run)!r} was not written by physml train")
    check_spectral_shift(
        description, state["fingerprint"].get("shapes"), f"{checkpoint_flag}: {str(run)!r}"
    )
    contents = load_data(data, data_flag)
    trained = state["fingerprint"].get("attributes", {})
    trained_on, holds = trained.get("pde"), contents.attrs.get("pde")
    if FAMILIES[description["model"]].predict is not None and trained_on != holds:
        given = (
            "names no PDE (no attribute 'pde'; "
            if holds is None
            else f"holds {holds!r} solutions ("
        )
        learned = "a file that names none" if trained_on is None else f"{trained_on!r} ones"
        raise ValueError(
            f"{data_flag}: {str(data)!r} {given}parameters {sorted(contents.params)}), but the "
            f"{description['model']} of {str(run)!r} was trained on {learned}: it reads the "
            "parameters of the PDE it learned as inputs"
            + declaring(
                trained_on,
                holds,
                data,
                file_name_parameters_to_declare(trained, contents, data)
                if pdebench_named(trained_on, holds)
                else None,
            )
        )
    if not same_problem(trained_on, holds):  # before the shapes: another PDE, whatever its grid
        raise ValueError(
            f"{data_flag}: {str(data)!r} holds {holds!r} solutions, but the "
            f"{description['model']} of {str(run)!r} was trained on {trained_on!r} ones: its "
            "scores there would not measure what it learned" + declaring(trained_on, holds, data)
        )
    check_two_times(description, contents, data, data_flag)
    pairs = training_items(description, contents)
    check_same_pairs(description["model"], pairs, state["fingerprint"]["shapes"], data_flag)
    try:
        with torch.random.fork_rng(devices=[]):
            model, pairs = build(description, contents, pairs)
    except WallsUnknownError as error:
        raise ValueError(
            f"{data_flag}: the boon-fno of {str(run)!r} cannot score {str(data)!r}: "
            f"{error.reason}; evaluate it on files with walls like its training file's, or train "
            "a --model fno for this one"
        ) from None
    load_weights(model, state, run)
    return model, state, contents, pairs, run


def load_run(checkpoint: str | os.PathLike, data: str | os.PathLike) -> nn.Module:
    """The model ``physml train`` left in ``checkpoint`` (its run folder or checkpoint file),
    rebuilt for the file ``data`` as ``physml evaluate`` rebuilds it, in eval mode on the CPU.

    ``data``: the training file, or one of the same PDE giving items of the same shapes (the
    network's sizes and the walls of a ``boon-fno`` come from it). The ``anp`` and ``ensemble``
    families give their network without the training objective: an
    :class:`~physml.models.AttentiveNeuralProcess` ``(context_x, context_y, target_x)`` →
    Gaussian, a :class:`~physml.models.DeepEnsemble` ``(..., d)`` → Gaussian, ready for
    :func:`~physml.constraints.constrain`.
    """
    for name, path in (("checkpoint", checkpoint), ("data", data)):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{name} must be a path (str or Path), got {type(path).__name__}")
    model, *_ = rebuild_run(checkpoint, data, flags=("checkpoint", "data"))
    return (model.model if isinstance(model, Objective) else model).eval()


def run_evaluate(args: argparse.Namespace) -> int:
    """``physml evaluate``. Under ``torchrun`` only rank 0 evaluates and prints (every rank would
    score the same files alike); the others return at once."""
    if rank() != 0:
        return 0
    if args.out is not None and (not args.out.strip() or Path(args.out).is_file()):
        raise ValueError(f"--out must name a folder, got {args.out!r}")
    device = check_device(args.device)
    model, state, data, pairs, run = rebuild_run(args.checkpoint, args.data)
    description = state["model_config"]
    trained_on = state["fingerprint"].get("attributes") or {}
    differ = settings_differ(trained_on, data.attrs)
    unnamed = [
        what
        for what, attributes in (("the training file", trained_on), (repr(args.data), data.attrs))
        if attributes.get("pde") is None
    ]
    model.to(device).eval()
    predict = FAMILIES[description["model"]].predict
    if predict is None:
        prediction, target = _predict_pairs(model, pairs, device)
        scores = {"solutions": len(data), **_scores(prediction, target)}
    else:  # a Gaussian on every point (t, x) of every solution
        gaussian = predict(model, data, description["options"], device)
        target = data.u.reshape(len(data), -1).to(gaussian.mean.dtype)
        prediction = gaussian.mean
        std = gaussian.variance().clamp(min=0).sqrt()
        scores = {
            "solutions": len(data),
            **_scores(prediction, target),
            "ll": float(metrics.gaussian_log_likelihood(gaussian, target)),
            "crps": float(metrics.crps_gaussian(prediction, std, target)),
        }
        last = (len(data), data.u.shape[1], -1)  # plot the final time slice
        prediction, target = prediction.reshape(last)[:, -1:], target.reshape(last)[:, -1:]
    out = run / EVALUATION if args.out is None else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scored = {"data": str(Path(args.data).resolve()), "step": int(state["step"])}
    if differ:
        scored["settings_differ"] = differ
    if unnamed:
        scored["pde_unchecked"] = True
    atomic_write_text(out / "metrics.json", strict_json({**scored, **scores}))
    title = (
        f"{description['model']} ({description['task']}), step {state['step']}, "
        f"on {Path(args.data).name}"
    )
    plot_samples(prediction, target, out / "samples.png", data.coords, title)
    if differ:
        listed = ", ".join(f"{k} {v['training']!r} → {v['data']!r}" for k, v in differ.items())
        print(
            f"note: {str(args.data)!r} was generated with other settings than the training "
            f"file: {listed} (scored all the same)"
        )
    if unnamed:
        print(
            f"note: no PDE is recorded (attribute 'pde') in {' nor in '.join(unnamed)}, so whether "
            "the data hold the PDE the run learned was not checked (pde_unchecked in metrics.json)"
        )
    width = max(len(k) for k in scores)
    for key, value in scores.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    print(f"figure: {out / 'samples.png'}")
    return 0


def _predict_pairs(model, pairs, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output on every input of ``pairs`` and the targets, on the CPU."""
    predictions, targets = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), 64):
            items = [pairs[i] for i in range(start, min(start + 64, len(pairs)))]
            x = torch.stack([item[0] for item in items]).to(device)
            predictions.append(model(x).cpu())
            targets.append(torch.stack([item[1] for item in items]))
    return torch.cat(predictions), torch.cat(targets)


def _scores(prediction: torch.Tensor, target: torch.Tensor) -> dict:
    """``samples``: the (input, target) pairs scored — one per solution for ``operator`` and the
    point models, several per solution for ``rollout`` and ``forecast``."""
    prediction, target = prediction.double(), target.double()
    return {
        "samples": prediction.shape[0],
        "rel_l2": float(metrics.relative_l2(prediction, target)),
        "mse": float((prediction - target).square().mean()),
    }


def plot_samples(
    prediction: torch.Tensor,
    target: torch.Tensor,
    path: Path,
    coords: dict[str, torch.Tensor] | None = None,
    title: str | None = None,
) -> None:
    """Three samples, prediction beside truth: lines for 1-D fields, drawn over their coordinate,
    images for 2-D frames, their axes named. ``coords``: the file's space coordinates in the
    order of its space axes (``PDEData.coords``; an axis no coordinate fits is
    drawn by grid point); ``title``: the figure's."""
    import matplotlib.pyplot as plt

    names = list(coords or {})
    count = min(3, prediction.shape[0])
    fig, axes = plt.subplots(1, count, figsize=(3.2 * count, 2.9), squeeze=False)
    for i, ax in enumerate(axes[0]):
        p, t = prediction[i].float(), target[i].float()
        while p.ndim > 2 or (p.ndim == 2 and p.shape[0] == 1):
            p, t = p[-1], t[-1]  # the last frame / channel
        if p.ndim == 1:
            name = names[-1] if names else None
            fits = name is not None and coords[name].shape == p.shape
            x = coords[name].numpy() if fits else range(len(p))
            ax.plot(x, t.numpy(), "k-", label="truth")
            ax.plot(x, p.numpy(), "C1--", label="prediction")
            ax.legend(fontsize=7)
            ax.set_title(f"sample {i}", fontsize=8)
            ax.set_xlabel(name if fits else "grid point", fontsize=8)
        else:
            ax.imshow(torch.cat([t, p], dim=1).numpy(), cmap="viridis")
            ax.set_title(f"sample {i}: truth | prediction", fontsize=8)
            rows, columns = names[-2:] if len(names) >= 2 else ("row", "column")
            ax.set_xlabel(f"{columns} index", fontsize=8)
            ax.set_ylabel(f"{rows} index", fontsize=8)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
