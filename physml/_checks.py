"""Argument checks shared across physml: tensors that are real, finite and of the expected shape.

Each failure names the argument, what was expected and what came.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch

from pdes.checks import integer, positive


class NonFiniteError(ValueError):
    """A tensor argument holding NaN or inf (a ``ValueError``, typed so that a caller can tell
    it from other bad values, e.g. a training loop telling divergence from a bad loss)."""


def as_tensor(
    name: str,
    value: object,
    expected: str,
    ndim: int | tuple[int, ...] | None,
    last: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """``value`` as a finite ``dtype`` tensor with ``ndim`` axes (and ``last`` entries on the last,
    or one of the sizes ``last`` lists).

    ``expected`` describes the shape in the error message, e.g. ``"(Nc, 2)"``; ``ndim=None``
    accepts any number of axes. ``dtype=None`` keeps the value's own dtype; Python floats are
    read as float64 (not torch's default float32, which would round them). ``finite=False``
    lets NaN and inf through.
    """
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(value)
            if tensor.dtype == torch.float32 and not isinstance(value, (np.ndarray, np.generic)):
                tensor = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be a tensor of shape {expected}, got {type(value).__name__}"
            ) from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    allowed = (tensor.ndim,) if ndim is None else (ndim,) if isinstance(ndim, int) else ndim
    lasts = (last,) if isinstance(last, int) else last
    if tensor.ndim not in allowed or (
        lasts is not None and (tensor.ndim == 0 or tensor.shape[-1] not in lasts)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")
    tensor = tensor.to(
        dtype=tensor.dtype if dtype is None else dtype,
        device=device if device is not None else tensor.device,
    )
    if finite and not torch.isfinite(tensor).all():
        raise NonFiniteError(f"{name} contains NaN or inf values")
    return tensor


LAYOUTS = {"tx": 2, "bcx": 3, "btcx": 4, "bchw": 4, "btchw": 5}
"""Named field layouts, one letter an axis (``b`` batch, ``t`` time, ``c`` channel, ``x`` or
``h, w`` space), and their numbers of axes."""


def layouts_for(space_axes: int, timed: bool = False) -> tuple[str, ...]:
    """The names in :data:`LAYOUTS` of fields over ``space_axes`` (1 or 2) space axes; only those
    with a time axis when ``timed``."""
    ending = "x" if space_axes == 1 else "hw"
    return tuple(name for name in LAYOUTS if name.endswith(ending) and (not timed or "t" in name))


def did_you_mean(given: str, known: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """``"; did you mean 'verify'?"``, to end the message about a misspelt ``given``: the names of
    ``known`` closest to it (difflib's close matches, best first), each written by ``show``;
    ``""`` when none is close."""
    close = difflib.get_close_matches(given, [str(name) for name in known])
    return f"; did you mean {' or '.join(map(show, close))}?" if close else ""


def integers(
    name: str,
    value: object,
    minimum: int,
    axes: Sequence[str] | None = None,
    *,
    single: bool = False,
) -> tuple[int, ...]:
    """``value``, a sequence of Python, numpy or 0-d torch integers (or a 1-D integer array),
    as a tuple of Python ints, each ``>= minimum``: one per axis of ``axes`` (e.g. ``("H",
    "W")``) when given, else at least one; with ``single`` one integer is the sequence of it.
    Floats, booleans and text are refused (``TypeError``), not truncated; a wrong count or a
    small entry is a ``ValueError``."""
    items = value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value
    if single and integer(value) is not None:
        items = (value,)
    if axes is None:
        expected = "a non-empty sequence of integers"
        if single:
            expected = f"an integer or {expected}"
    else:
        expected = f"a sequence of {len(axes)} integers ({', '.join(axes)})"
    if (
        isinstance(items, (str, bytes))
        or not isinstance(items, Sequence)
        or (len(items) != len(axes) if axes is not None else not items)
    ):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    numbers = tuple(integer(item) for item in items)
    if None in numbers:
        raise TypeError(f"{name} must hold integers, got {value!r}")
    if min(numbers) < minimum:
        raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return numbers


def flag(name: str, value: object) -> bool:
    """``value`` as a bool when it is one (Python's or numpy's); anything else, truthy or not
    (``"no"``, ``1``, ``None``), is a ``TypeError`` naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def optional_positive(
    name: str,
    value: object,
    expected: str = "a finite number > 0",
    none: str | None = None,
    unset: str | None = None,
) -> float | None:
    """``value`` as a float when it is a finite number > 0, ``expected`` wording that in the
    message (e.g. ``"a finite number of seconds > 0"``); ``None`` as it is where ``none`` says
    what None means (e.g. ``"no time budget"``), else refused as any other non-number.

    What is no number (text, a boolean) is a ``TypeError``, a number out of range (0, negative,
    inf, NaN) a ``ValueError``, each ``"{name} must be {expected}[ or None], got {value!r}"``;
    where None is taken, the ``ValueError`` adds how to ask for ``none``, since 0 or inf is what
    a caller who meant it tends to pass: ``"pass None"``, or ``unset`` where the caller cannot
    pass None (a command line: ``"leave --budget-s out"``; the message then offers no None)."""
    if value is None and none is not None:
        return None
    wanted = expected if none is None or unset is not None else f"{expected} or None"
    try:
        return positive(name, value)
    except TypeError:
        raise TypeError(f"{name} must be {wanted}, got {value!r}") from None
    except ValueError:
        hint = "" if none is None else f" (for {none} {unset or 'pass None'})"
        raise ValueError(f"{name} must be {wanted}, got {value!r}{hint}") from None


def choice(name: str, value: object, choices: Sequence[str], why: str = "") -> str:
    """``value`` when it is one of the strings ``choices``: a ``TypeError`` naming ``name`` for
    what is no string, a ``ValueError`` for another string, each ``"{name} must be one of
    ('a', 'b'){why}, got {value!r}"`` (``why``, e.g. ``" (what budget_s counts)"``, says what
    the setting chooses)."""
    message = f"{name} must be one of {tuple(choices)}{why}, got {value!r}"
    if not isinstance(value, str):
        raise TypeError(message)
    if value not in choices:
        raise ValueError(message)
    return value


def file_path(name: str, value: object) -> Path:
    """``value``, the file path given as ``name``, as a ``Path``; anything but a ``str`` or an
    ``os.PathLike`` is a ``TypeError`` naming ``name``."""
    if not isinstance(value, (str, os.PathLike)):
        kind = type(value).__name__
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {kind}")
    return Path(value)


def device(name: str, value: object) -> torch.device:
    """``value`` (a string or a ``torch.device``) as a torch device that exists on this machine
    (``cpu``, ``cuda``, ``cuda:N``): a ``TypeError`` naming ``name`` for another type, a
    ``ValueError`` for another device."""
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    try:
        parsed = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {value!r}") from None
    if parsed.type not in ("cpu", "cuda") or (
        parsed.type == "cpu" and parsed.index not in (None, 0)
    ):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {value!r} asked for, but this machine has no CUDA device")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name} {value!r} asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return parsed


def json_value(
    name: str,
    text: object,
    expected: str,
    valid: Callable[[object], bool] = lambda _: True,
    error: type[Exception] = ValueError,
) -> object:
    """``text`` (JSON text, e.g. a file's attribute) parsed, where ``valid`` accepts it: text
    that is no JSON, nests deeper than Python's recursion limit lets it parse, or parses to a
    value ``valid`` refuses is a one-line ``error`` (a ``ValueError`` unless given) naming
    ``name`` and ``expected``."""

    def shown() -> str:  # only on refusal: the text may be long
        return repr(text) if len(repr(text)) <= 80 else f"{repr(text)[:77]}..."

    lead = f"{name}: expected {expected}, got"
    if not isinstance(text, (str, bytes)):
        raise error(f"{lead} {shown()} (no JSON text)")
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(
            f"{lead} JSON nested deeper than Python's recursion limit lets it parse ({shown()})"
        ) from None
    except ValueError as parse_error:  # json.JSONDecodeError and text that is no UTF-8
        raise error(f"{lead} {shown()}, no JSON ({parse_error})") from None
    if not valid(value):
        raise error(f"{lead} {shown()}")
    return value


def available_memory() -> int:
    """Bytes of memory this machine can give now (Linux ``MemAvailable``; else free pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63  # unknown: no refusal on this ground


# The figures one_memory_reading holds for its call, filled at the first check: what is left of
# the memory available, and what was read.
_READING: ContextVar[list[int] | None] = ContextVar("physml_memory_reading", default=None)


@contextmanager
def one_memory_reading() -> Iterator[None]:
    """Within it, :func:`fits_in_memory` reads the memory available once, at its first check,
    and compares every later need with what is left of that figure once the needs admitted
    before it are taken off: a file of many small arrays would otherwise read ``/proc/meminfo``
    once per array, and arrays that fit one by one but not together are still refused. A nested
    use shares the outer one's reading."""
    if _READING.get() is not None:
        yield
        return
    token = _READING.set([])
    try:
        yield
    finally:
        _READING.reset(token)


def _memory_now() -> int:
    """The memory available: the figure of the enclosing :func:`one_memory_reading`, else read."""
    reading = _READING.get()
    if reading is None:
        return available_memory()
    if not reading:
        reading.extend([available_memory()] * 2)
    return reading[0]


def fits_in_memory(name: str, nbytes: float, what: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``nbytes`` (the arrays ``what`` describes) exceed
    the memory available now (within :func:`one_memory_reading`, what its earlier checks admitted
    taken off): checked before anything is allocated."""
    free = _memory_now()
    reading = _READING.get()
    if nbytes > free:
        raise ValueError(
            f"{name}: {what} would need about {nbytes / 1e9:.3g} GB, but this machine has "
            f"{free / 1e9:.3g} GB of memory available"
            + (" (less what this read has taken before)" if reading and free < reading[1] else "")
        )
    if reading:  # admitted: what is left for the next arrays of this read
        reading[0] -= nbytes
