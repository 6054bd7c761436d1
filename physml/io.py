"""Writing results and figures atomically: a file appears complete under its final name or not
at all, so a run killed mid-write leaves the previous file (or none), never half of one."""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Literal

from ._checks import file_path
from ._io import atomic_path

__all__ = ["atomic_write_text", "save_figure", "strict_json"]


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
