"""The one checkpoint format: ``DIR/checkpoint.pt`` holding state dicts, RNG state, step, the
model's config and the training data's fingerprint; written atomically, read with
``weights_only=True``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

# The torch-file helpers and their errors are at home in physml.io and physml.errors (a model
# saves with them too); they are read from here as well.
from ..errors import CheckpointError as CheckpointError
from ..errors import ConstraintError
from ..errors import PythonObjectsError as PythonObjectsError
from ..io import HDF5_SIGNATURE as HDF5_SIGNATURE
from ..io import RESTORE, load_torch_file, save_torch_file
from ..io import ZIP_SIGNATURE as ZIP_SIGNATURE
from ..io import refused_global as refused_global
from ..io import torch_reason as torch_reason
from .fingerprint import differences, seed_scheme_hint

FORMAT = "physml-checkpoint/1"
NAME = "checkpoint.pt"
KEYS = (
    "model",
    "optimizer",
    "rng",
    "step",
    "config",
    "model_config",
    "fingerprint",
    "losses",
    "validation",
)
"""What every checkpoint of this format holds."""


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / NAME


def save_checkpoint(directory: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically (a failed
    write is an ``OSError``, the previous checkpoint kept: :func:`~physml.io.save_torch_file`)."""
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch_file(path, {"format": FORMAT, **state})
    return path


def load_checkpoint(
    directory: str | os.PathLike,
    map_location: str = "cpu",
    argument: str = "checkpoint",
    data_argument: str | None = None,
    remedy: str = RESTORE,
) -> dict:
    """The checkpoint in ``directory`` (a folder or the file itself), its CRC-32s and format
    checked (:func:`~physml.io.load_torch_file`), its tensors on ``map_location`` (a device, as for
    ``torch.load``); ``argument`` names ``directory`` in the errors (physml evaluate's
    ``--checkpoint``), ``data_argument`` where the data file goes when ``directory`` is one
    (``--data``), ``remedy`` what a damaged one's refusal advises."""
    path = Path(directory)
    path = path if path.is_file() else checkpoint_path(path)
    if not path.exists():
        raise FileNotFoundError(f"{argument}: no {NAME} in {str(path.parent)!r}")
    what = "a checkpoint of physml train"
    state = load_torch_file(path, what, argument, remedy, map_location, data_argument)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{argument}: {str(path)!r} has format {got!r}, expected {FORMAT!r}")
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{argument}: {str(path)!r} lacks the key(s) {missing} of a checkpoint of physml "
            f"train (a damaged or foreign file); {remedy}"
        )
    return state


def load_weights(
    model: torch.nn.Module,
    state: dict,
    directory: str | os.PathLike,
    described: str = "the model its config describes",
) -> None:
    """``state["model"]`` into ``model``, or a :class:`CheckpointError` saying how the weights and
    the model (``described``: the one the checkpoint's config describes, or "this model" for a
    model built without one) disagree (missing, unknown or reshaped keys)."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ConstraintError) as error:
        first = str(error).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:4])
        raise CheckpointError(
            f"checkpoint: the weights in {str(directory)!r} do not fit {described} ({detail})"
        ) from None


REMEDY = "use another --out"
"""What the refusals below advise by default, physml train's flag for another run folder. A
Python API without that flag passes its own wording as ``remedy``."""
OUT_REMEDY = "use another out= folder"
"""What they advise a Python caller of the Trainer, its ``out`` argument."""


def _sentence(clause: str) -> str:
    return clause[:1].upper() + clause[1:]


def _split_otherwise(state: dict, current: dict, validation: dict | None, flag: bool) -> str:
    """A clause for a run resumed on the file it was trained on with another share held out
    (the same attributes and shapes, another count of training samples); else ``""``. The
    training and ``validation`` samples of this command make the whole file: the checkpoint's
    must add up to as many (when it records its validation set; older ones do not, and their
    training samples must then be no more than the whole file's). ``flag``: name physml train's
    ``--val-fraction``, else the Trainer's validation data."""
    other = "another --val-fraction" if flag else "other validation data"
    saved = state["fingerprint"]
    same_file = saved.get("attributes") and saved.get("attributes") == current.get("attributes")
    same_file = same_file and saved.get("shapes") == current.get("shapes")
    if not same_file or saved.get("samples") == current.get("samples"):
        return ""
    whole = current["samples"] + (0 if validation is None else validation["samples"])
    if "validation_fingerprint" not in state:
        if not isinstance(saved.get("samples"), int) or saved["samples"] > whole:
            return ""
        return (
            "; the file's attributes are the same, so another share of it was held out for "
            f"validation ({other}?)"
        )
    held = state["validation_fingerprint"]
    if saved["samples"] + (0 if held is None else held["samples"]) != whole:
        return ""
    return (
        f"; the file's attributes are the same: the run trained on {saved['samples']} of its "
        f"{whole} samples, this command on {current['samples']}, holding another share out for "
        f"validation ({other})"
    )


def check_same_pde(
    state: dict, current: dict, directory: str | os.PathLike, remedy: str = REMEDY
) -> None:
    """Resuming on solutions of another PDE (the fingerprints' ``pde`` attributes, where both
    record one) is an error naming the two, said before any other difference: another PDE's
    file differs in the model it builds and in most attributes. The data is physml train's
    ``--data`` where ``remedy`` is :data:`REMEDY`, else the training data."""
    trained_on, holds = (
        (printed.get("attributes") or {}).get("pde") for printed in (state["fingerprint"], current)
    )
    if trained_on is None or holds is None or trained_on == holds:
        return
    data = "--data" if remedy == REMEDY else "this training data"
    raise CheckpointError(
        f"checkpoint: {str(directory)!r} was trained on {trained_on!r} solutions, but {data} "
        f"holds {holds!r} ones; refusing to resume. {_sentence(remedy)}, or the data it was made "
        "on."
    )


def check_same_data(
    state: dict,
    current: dict,
    directory: str | os.PathLike,
    remedy: str = REMEDY,
    validation: dict | None = None,
) -> None:
    """Resuming on other data is an error naming each difference; ``remedy`` says where else
    to train (e.g. "use another --out"); ``validation``: the fingerprint of this run's
    validation set (``None``: none), to tell another split of the same file."""
    found = differences(state["fingerprint"], current)
    if found:
        split = _split_otherwise(state, current, validation, flag=remedy == REMEDY)
        raise CheckpointError(
            f"checkpoint: {str(directory)!r} was trained on other data ({'; '.join(found)}"
            f"{split}); refusing to resume. {_sentence(remedy)}, or the data it was made on."
            + seed_scheme_hint(state["fingerprint"], current)
        )


def check_same_validation(
    state: dict,
    current: dict | None,
    directory: str | os.PathLike,
    remedy: str = REMEDY,
    losses_key: str = "validation",
) -> None:
    """Resuming with another validation set, after losses on the first were recorded (in
    ``state[losses_key]``, a list or a tensor of rows), is an error: the run's validation curve
    would join two sets. Without validation now, or none recorded yet (or a checkpoint from
    before this check), it resumes."""
    saved = state.get("validation_fingerprint")
    recorded = state.get(losses_key)
    if current is None or saved is None or recorded is None or len(recorded) == 0:
        return
    found = differences(saved, current)
    if found:
        raise CheckpointError(
            f"checkpoint: {str(directory)!r} recorded validation losses on another validation "
            f"set ({'; '.join(found)}); refusing to resume. {_sentence(remedy)}, or that set."
            + seed_scheme_hint(saved, current)
        )


def check_same_model(
    state: dict, model_config: dict | None, directory: str | os.PathLike, remedy: str = REMEDY
) -> None:
    """Resuming another model is an error naming what differs (each changed setting, nested
    ones as ``options.hidden``)."""
    saved = state.get("model_config")
    if model_config is None or saved == model_config:
        return
    if isinstance(saved, dict) and isinstance(model_config, dict):
        found = "; ".join(_changes(saved, model_config))
    else:
        found = f"{saved!r} → {model_config!r}"
    raise CheckpointError(
        f"checkpoint: {str(directory)!r} holds another model ({found}); {remedy} or the same "
        "model settings"
    )


def _changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _changes(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key} {old!r} → {new!r}")
    return out


RESUMABLE_CHANGES = ("steps", "budget_s", "checkpoint_every", "validate_every", "device")


def _decays_over(config: dict) -> tuple[str, object]:
    """What the cosine schedule of a run with ``config`` decays over: ``("steps", n)``, or
    ``("budget_s", seconds)`` for a run without steps."""
    if config.get("steps") is not None:
        return "steps", config.get("steps")
    return "budget_s", config.get("budget_s")


def _length(decay: tuple[str, object], names: Mapping[str, str]) -> str:
    kind, value = decay
    if kind == "steps":
        return f"{value} steps"
    return f"{names.get('budget_s', 'budget_s')}={value} seconds (no {names.get('steps', 'steps')})"


def _constant_schedule(names: Mapping[str, str], schedules: Mapping[str, str]) -> str:
    """The constant schedule in the caller's words: ``the constant schedule``, or (where it
    names the schedule otherwise) ``schedule="none"``."""
    if "constant" not in schedules and "schedule" not in names:
        return "the constant schedule"
    return f'{names.get("schedule", "schedule")}="{schedules.get("constant", "constant")}"'


def check_same_config(
    state: dict,
    config: dict,
    directory,
    remedy: str = REMEDY,
    names: Mapping[str, str] | None = None,
    schedules: Mapping[str, str] | None = None,
) -> None:
    """A resumed run may checkpoint or validate at other steps, move to another device, stop at
    another time budget, or (on the constant schedule) train longer; any other change of setting
    (the ``clock`` a budget counts in among them) is an error naming it.

    The cosine schedule decays over ``steps`` (over ``budget_s`` without steps): resumed over
    another length, the rest of the run would follow neither the saved schedule nor that of a
    fresh run of the new length. A budget that only stops a run decaying over its steps may
    change.

    ``names`` gives the settings by the caller's names for them where they differ (``{"batch":
    "batch_size"}``), ``schedules`` the schedules (``{"constant": "none"}``), in the refusals."""
    names, schedules = dict(names or {}), dict(schedules or {})

    def shown(key: str, value: object) -> str:
        return repr(schedules.get(value, value) if key == "schedule" else value)

    saved = state.get("config", {})
    changed = [
        f"{names.get(key, key)} {shown(key, saved.get(key))} → {shown(key, value)}"
        for key, value in config.items()
        if key not in RESUMABLE_CHANGES and saved.get(key) != value
    ]
    if changed:
        raise CheckpointError(
            f"checkpoint: {str(directory)!r} was trained with other settings ({'; '.join(changed)})"
            f"; {remedy} or the same settings"
        )
    if config.get("schedule") != "cosine":
        return
    old, new = _decays_over(saved), _decays_over(config)
    if old == new:
        return
    if old[0] == new[0] == "steps":
        steps, old_steps = new[1], old[1]
        if remedy == REMEDY:
            ways = (
                f"afresh in another --out, or resume with --steps {old_steps} (a run on the "
                "constant schedule, --schedule constant, may be extended)"
            )
        else:
            ways = (
                f"afresh ({remedy}), or resume for the {old_steps} steps the run began with (a "
                f"run on {_constant_schedule(names, schedules)} may be extended)"
            )
        raise CheckpointError(
            f"checkpoint: {str(directory)!r} holds step {state.get('step')} of a run on the cosine "
            f"learning-rate schedule over {old_steps} steps; resuming it for {steps} steps would "
            f"not follow the schedule of a {steps}-step run. Train the {steps} steps {ways}"
        )
    before, after = _length(old, names), _length(new, names)
    if remedy == REMEDY and old[0] == "steps":
        ways = f"afresh in another --out, or resume with --steps {old[1]}"
    else:
        ways = f"afresh ({remedy}), or resume over {before}"
    raise CheckpointError(
        f"checkpoint: {str(directory)!r} holds step {state.get('step')} of a run on the cosine "
        f"learning-rate schedule over {before}; resumed over {after} the rest of the "
        f"run would follow neither that schedule nor a fresh run's. Train over {after} "
        f"{ways} (a run on {_constant_schedule(names, schedules)} may be extended)"
    )
