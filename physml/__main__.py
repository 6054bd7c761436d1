"""The ``physml`` command (also ``python -m physml``): it loads the command line, and torch with
it (seconds), where a Ctrl-C ends it with one line instead of a traceback."""

from __future__ import annotations

import sys

from physml._ranks import environment_rank
from physml.signals import say_interrupted


def main(argv: list[str] | None = None) -> int:
    """Run ``physml ARGV`` (``sys.argv[1:]`` by default); its exit status. A Ctrl-C (or a stop
    :mod:`physml.signals` raises) the command has not handled, as one while its modules load,
    ends it with one line, rank 0's under ``torchrun`` (the stop reaches every rank), and the
    shell's status for it (130 for Ctrl-C)."""
    try:
        from physml.cli import main as run

        return run(argv)
    except KeyboardInterrupt as error:
        return say_interrupted("physml", error, environment_rank)


if __name__ == "__main__":
    sys.exit(main())
