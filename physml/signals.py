"""Stops from a batch scheduler taken as Ctrl-C: SIGTERM (Slurm's time limit, preemption,
``scancel``) and SIGHUP (a closed terminal) raise :class:`Terminated`, a ``KeyboardInterrupt``,
so a command or script releases its locks, keeps what it saved and says what a rerun picks up."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["STOPPING", "Terminated", "interrupted", "say_stopped", "signals_interrupt"]

STOPPING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
"""The signals :func:`signals_interrupt` turns into :class:`Terminated` (SIGHUP where it exists)."""


class Terminated(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` raised by the signal ``signum`` (SIGTERM, SIGHUP), not Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple:
        return Terminated, (self.signum,)


@contextlib.contextmanager
def signals_interrupt(ctrl_c: bool = False) -> Iterator[None]:
    """While the block runs, each of :data:`STOPPING` raises :class:`Terminated` where it would
    have ended the process (a signal ignored, as under ``nohup``, or handled by the caller stays
    so). A later one (Slurm signals every process of a job step, and ``torchrun`` forwards its
    own) is let go while the first is being handled (in an ``except`` or ``finally`` clause or a
    ``with``'s exit) and once the block has ended, so the cleanup, the line of stopping and the
    exit status it chose (143) stand until the process ends: catch the stop outside the block.
    Where the first was swallowed instead (Python ignores an exception raised in a ``__del__`` or
    a weakref callback; code may catch it and carry on), the next one raises again. With
    ``ctrl_c``, Ctrl-C (where Python's handler takes it) is one of them, raising
    ``KeyboardInterrupt``. The previous handlers come back on exit otherwise. Off the main thread,
    where Python cannot set handlers, nothing changes."""
    raised = False
    ended = False

    def stop(signum: int, frame: object) -> None:
        nonlocal raised
        if raised and (ended or _stop_being_handled()):
            return
        raised = True
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    takes = dict.fromkeys(STOPPING, signal.SIG_DFL)
    if ctrl_c:
        takes[signal.SIGINT] = signal.default_int_handler
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum, default in takes.items():
            if signal.getsignal(signum) is default:
                previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        ended = raised
        if not raised:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _stop_being_handled() -> bool:
    """Whether the exception being handled here, or one it arose from, is a stop."""
    error = sys.exc_info()[1]
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__context__
    return False


def interrupted(error: KeyboardInterrupt) -> tuple[str, int]:
    """How a command stopped by ``error`` says so (``"interrupted"``, ``"interrupted by
    SIGTERM"``) and its exit status: 130 for Ctrl-C, 128 + the signal's number otherwise (143 for
    SIGTERM, 129 for SIGHUP), as a shell reports a process the signal ended."""
    if isinstance(error, Terminated):
        return f"interrupted by {signal.Signals(error.signum).name}", 128 + error.signum
    return "interrupted", 130


def say_stopped(line: str) -> None:
    """``line`` on stderr, or nothing where stderr is gone (the closed terminal SIGHUP came from
    fails every write): the command has stopped either way."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr)


def say_interrupted(
    command: str,
    error: KeyboardInterrupt,
    rank: Callable[[], int],
    hint: Callable[[], str] = lambda: "",
) -> int:
    """Say that ``command`` (``"physml train"``) was stopped by ``error`` and return its exit
    status (:func:`interrupted`): one line, rank 0's (``rank()``), since the interruption
    reaches every ``torchrun`` rank, ending with ``hint()`` (asked only where said). Where
    ``rank()`` raises ``ValueError`` (``RANK`` or ``WORLD_SIZE`` no integer) every process says
    that error first, then the line."""
    how, status = interrupted(error)
    try:
        says = rank() == 0
    except ValueError as problem:
        say_stopped(f"{command}: error: {problem}")
        says = True
    if says:
        say_stopped(f"\n{command}: {how}{hint()}")
    return status
