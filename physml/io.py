"""Writing results, figures and torch files atomically: a file appears complete under its final
name or not at all, so a run killed mid-write leaves the previous file (or none), never half of
one; torch files are read back with ``weights_only=True`` (tensors, numbers, strings and
containers, never arbitrary Python objects)."""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Literal

import torch

from ._checks import file_path
from ._io import atomic_path
from .errors import CheckpointError, PythonObjectsError

__all__ = ["atomic_write_text", "load_torch_file", "save_figure", "save_torch_file", "strict_json"]


def strict_json(value: object) -> str:
    """``value`` as JSON (indent 1, a final newline) with every non-finite float written as
    ``null``: ``NaN`` and ``Infinity`` are not JSON, and strict readers refuse them."""

    def finite(item: object) -> object:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(part) for key, part in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(part) for part in item]
        return item

    return json.dumps(finite(value), indent=1, allow_nan=False) + "\n"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically, as UTF-8 whatever the locale (tables hold ``±``);
    a ``path`` that is no ``str`` or ``os.PathLike``, or a ``text`` that is no ``str``, is a
    ``TypeError`` naming it."""
    path = file_path("path", path)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def save_figure(
    fig, path: str | os.PathLike, dpi: float | Literal["figure"] = 110, **options: object
) -> None:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG atomically (creating the folder),
    then close it, also when the write fails or ``path`` or ``dpi`` is refused: the figure was
    handed over to be saved and closed. ``dpi`` (dots per inch, > 0, or ``"figure"``: the
    figure's own) and ``options`` (e.g. ``bbox_inches="tight"``) go to ``fig.savefig``. A ``path``
    that is no ``str`` or ``os.PathLike`` or a ``dpi`` of neither kind is refused by name before
    anything is written; a ``fig`` that is no matplotlib ``Figure`` is refused and nothing is
    closed (closing it would close another figure)."""
    import matplotlib.pyplot as plt  # only the writers of figures pay for matplotlib
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    try:
        path = file_path("path", path)
        expected = "a number of dots per inch > 0 or 'figure'"
        if isinstance(dpi, str):
            if dpi != "figure":
                raise ValueError(f"dpi must be {expected}, got {dpi!r}")
        elif isinstance(dpi, bool) or not isinstance(dpi, numbers.Real):
            raise TypeError(f"dpi must be {expected}, got {type(dpi).__name__}")
        elif not (math.isfinite(dpi) and dpi > 0):
            raise ValueError(f"dpi must be {expected}, got {dpi!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as temporary:
            fig.savefig(temporary, dpi=dpi, format="png", **options)
    finally:
        plt.close(fig)


RESTORE = "restore an intact copy, or delete it to start that training over"
"""What a refusal of a damaged checkpoint file advises by default."""
ZIP_SIGNATURE = b"PK\x03\x04"
"""How a zip archive (what ``torch.save`` writes) begins, truncated or not."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""How an HDF5 file (a dataset of physml generate) begins."""


def save_torch_file(path: str | os.PathLike, value: object) -> None:
    """``torch.save(value)`` to ``path`` atomically. A failed write (a full disk: torch raises a
    ``RuntimeError``) is an ``OSError`` naming ``path`` and the space left on its disk; ``path``
    keeps what it held and no temporary file is left. A ``path`` that is no ``str`` or
    ``os.PathLike`` is a ``TypeError`` naming it, before anything is written."""
    path = file_path("path", path)
    with atomic_path(path) as temporary:
        try:
            torch.save(value, temporary)
        except RuntimeError as error:
            raise OSError(
                f"{str(path)!r} could not be written (torch.save: {_first_line(error)}); "
                f"{_free_space(path.parent)}, and {str(path)!r} is left as it was"
            ) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


UNSAFE_ADVICE = re.compile(
    r"weights_only\W*(set to|=)\W*False|arbitrary code|trusted source", re.IGNORECASE
)
"""What a sentence of torch's advice to load a file unsafely (running any code it holds) says."""
REFUSED_GLOBAL = re.compile(r"unsupported global:?\s+(?:global\s+)?([\w.]+)", re.IGNORECASE)
"""The name of the object ``torch.load(weights_only=True)`` refused to unpickle, in either of
torch's wordings ("Unsupported global: GLOBAL a.B was not an allowed global", "unsupported GLOBAL
posix.system whose module posix is blocked")."""


def torch_reason(error: BaseException) -> str:
    """The first line of ``error`` from ``torch.load`` (its unpickler's own line where it has one:
    "Unsupported operand 0") without torch's advice to load the file with
    ``weights_only=False``, which would run any code the file holds."""
    advice = getattr(torch.serialization, "UNSAFE_MESSAGE", "")
    text = str(error).replace(advice, "") if advice else str(error)
    unpickler = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)  # what it met, not where
    line = unpickler[1] if unpickler else text.strip().partition("\n")[0]
    sentences = re.split(r"(?<=\.)\s+", line)
    kept = " ".join(sentence for sentence in sentences if not UNSAFE_ADVICE.search(sentence))
    return kept.strip() or type(error).__name__


def refused_global(error: BaseException) -> str | None:
    """The Python object (``"posix.system"``) that ``torch.load(weights_only=True)`` refused to
    unpickle, as ``error`` names it; ``None`` where it names none."""
    found = REFUSED_GLOBAL.search(str(error))
    return found[1] if found else None


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "the free space on its disk is unknown"
    return f"{free / 1e6:.3g} MB free on its disk"


def load_torch_file(
    path: str | os.PathLike,
    what: str,
    argument: str = "checkpoint",
    remedy: str = RESTORE,
    map_location: str | torch.device = "cpu",
    data_argument: str | None = None,
) -> object:
    """``torch.load(path, weights_only=True)`` once every entry of the zip archive ``torch.save``
    wrote passes its CRC-32 check (``torch.load`` checks none: a flipped bit would load as another
    number). A file it cannot load is a :class:`~physml.errors.CheckpointError` naming
    ``argument`` and ``path`` and saying why it is not ``what`` (``"a checkpoint of physml
    train"``): an HDF5 file (a dataset: pass it as ``data_argument``, when given) or another file
    that is no zip archive of ``torch.save``, or one holding Python objects besides tensors (a
    :class:`~physml.errors.PythonObjectsError`); only a damaged or truncated archive, or one
    ``torch.load`` fails on, ends with ``remedy`` (restore it or delete it). Reads the file
    twice: the CRC-32 check costs about as much as ``torch.load`` itself (some 0.2 s per GB).
    A ``path`` that is no ``str`` or ``os.PathLike`` is a ``TypeError`` naming ``argument``."""
    path = file_path(argument, path)
    _check_archive(path, what, argument, remedy, data_argument)
    refused = f"{argument}: {str(path)!r} cannot be read as {what}"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # objects besides tensors, or a pickle torch cannot read
        named = refused_global(error)
        if named is not None:  # a damaged pickle is an UnpicklingError too, naming no object
            raise PythonObjectsError(
                f"{refused}: it holds Python objects besides tensors (among them {named!r}), "
                f"which are not loaded (only tensors, numbers, strings and containers are); "
                f"{remedy}"
            ) from None
        raise CheckpointError(
            f"{refused} (torch.load: {type(error).__name__} {torch_reason(error)}); {remedy}"
        ) from None


def _check_archive(
    path: Path, what: str, argument: str, remedy: str, data_argument: str | None
) -> None:
    """A :class:`~physml.errors.CheckpointError` unless ``path`` is a whole zip archive of
    ``torch.save`` whose entries are stored uncompressed, as ``torch.save`` stores them (a
    compressed one is not unpacked: a few MB may unpack to GBs), and pass their CRC-32 checks
    (see :func:`load_torch_file`)."""
    named = f"{argument}: {str(path)!r}"
    refused = f"{named} cannot be read as {what}"
    try:
        with open(path, "rb") as file:
            start = file.read(len(HDF5_SIGNATURE))
    except OSError as error:
        raise CheckpointError(f"{refused} ({_first_line(error)})") from None
    if start == HDF5_SIGNATURE:
        passed = "" if data_argument is None else f"; pass it as {data_argument}"
        raise CheckpointError(f"{named} is an HDF5 file (a dataset?), not {what}{passed}")
    if start and not start.startswith(ZIP_SIGNATURE) and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{named} is not {what} (not a zip archive, as torch.save writes)")
    try:
        with zipfile.ZipFile(path) as archive:
            compressed = [
                entry.filename
                for entry in archive.infolist()
                if entry.compress_type != zipfile.ZIP_STORED
            ]
            damaged = None if compressed else archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{refused}: it is an incomplete zip archive (a truncated copy? zipfile: "
            f"{_first_line(error)}); {remedy}"
        ) from None
    if compressed:
        raise CheckpointError(
            f"{refused}: its entry {_entry(compressed[0])!r} is compressed, which torch.save "
            f"never does (an altered file, or one of torch.jit.save?), and is not unpacked; "
            f"{remedy}"
        )
    if damaged is not None:
        raise CheckpointError(
            f"{refused}: it is damaged (its entry {_entry(damaged)!r} fails its CRC-32 check: a "
            f"bit changed on disk or in a copy); {remedy}"
        )
    if not any(name.endswith("/data.pkl") for name in names):
        raise CheckpointError(
            f"{named} is not {what} (a zip archive, but not one torch.save writes: it holds no "
            "data.pkl)"
        )


def _entry(name: str) -> str:
    """An entry's name past the folder ``torch.save`` puts every entry in (named after a
    temporary file)."""
    return name.split("/", 1)[-1]
