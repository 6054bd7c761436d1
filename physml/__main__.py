"""The ``physml`` command (also ``python -m physml``): it loads the command line, and torch with
it (seconds), where a Ctrl-C ends it with one line instead of a traceback."""

from __future__ import annotations

import sys

from physml.signals import interrupted, say_stopped


def main(argv: list[str] | None = None) -> int:
    """Run ``physml ARGV`` (``sys.argv[1:]`` by default); its exit status. A Ctrl-C (or a stop
    :mod:`physml.signals` raises) the command has not handled, as one while its modules load,
    ends it with one line and the shell's status for it (130 for Ctrl-C)."""
    try:
        from physml.cli import main as run

        return run(argv)
    except KeyboardInterrupt as error:
        how, status = interrupted(error)
        say_stopped(f"\nphysml: {how}")
        return status


if __name__ == "__main__":
    sys.exit(main())
