"""Progress bars, one rule for every loop: shown when asked for and stderr is a terminal or a
running Jupyter kernel's (its frontend redraws a line ended by ``\\r`` in place, as a terminal
does), so a batch job's log or a pipe (stderr to a file) holds no bar redrawn with ``\\r``."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def in_jupyter_kernel(stream: object) -> bool:
    """Whether ``stream`` is the output stream of a running Jupyter kernel (IPython's shell is
    ipykernel's ``ZMQInteractiveShell`` and ``stream`` an ``OutStream`` it forwards to the
    frontend). Reads the modules already loaded only: outside a kernel nothing is imported."""
    modules = sys.modules
    if "ipykernel" not in modules:
        return False
    shell_class = getattr(modules.get("ipykernel.zmqshell"), "ZMQInteractiveShell", None)
    stream_class = getattr(modules.get("ipykernel.iostream"), "OutStream", None)
    get_ipython = getattr(modules.get("IPython"), "get_ipython", None)
    if not (isinstance(shell_class, type) and isinstance(stream_class, type)):
        return False
    if not callable(get_ipython):
        return False
    return isinstance(get_ipython(), shell_class) and isinstance(stream, stream_class)


def takes_a_bar(stream: object) -> bool:
    """Whether ``stream`` shows a bar redrawn in place: a terminal (or a stream that cannot tell,
    as ``tqdm`` has it) or a Jupyter kernel's output."""
    isatty = getattr(stream, "isatty", None)
    return isatty is None or bool(isatty()) or in_jupyter_kernel(stream)


def progress_bar(
    iterable: Iterable | None, enabled: bool, desc: str, total: int | None = None, **options
) -> tqdm:
    """``tqdm`` over ``iterable`` (``None``: one moved by ``update``), shown only when ``enabled``
    and stderr (or ``options``' ``file``) is a terminal or a Jupyter kernel's output; ``desc``
    labels it, ``total`` its length where ``iterable`` has none, ``options`` go to ``tqdm``
    (``initial``, ``unit``, ...)."""
    stream = options.get("file") or sys.stderr
    shown = enabled and takes_a_bar(stream)
    return tqdm(iterable, desc=desc, total=total, disable=not shown, **options)
