"""Progress bars, one rule for every loop: shown when asked for and stderr is a terminal, so a
batch job's log (stderr to a file) holds no bar redrawn with ``\\r``."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(
    iterable: Iterable | None, enabled: bool, desc: str, total: int | None = None, **options
) -> tqdm:
    """``tqdm`` over ``iterable`` (``None``: one moved by ``update``), shown only when ``enabled``
    and stderr is a terminal; ``desc`` labels it, ``total`` its length where ``iterable`` has
    none, ``options`` go to ``tqdm`` (``initial``, ``unit``, ...)."""
    return tqdm(iterable, desc=desc, total=total, disable=None if enabled else True, **options)
