"""``torchrun``'s environment read without torch: which rank this process is, for what only
rank 0 should say, even before torch has loaded (a Ctrl-C reaches every rank)."""

from __future__ import annotations

import os


def environment_int(name: str, default: int) -> int:
    """The environment variable ``name`` (set by ``torchrun``) as an int, ``default`` when it is
    unset; a ``ValueError`` naming it when it is not an integer."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"the environment variable {name} must be an integer (torchrun sets it), got {value!r}"
        ) from None


def environment_rank() -> int:
    """``torchrun``'s ``RANK`` when ``WORLD_SIZE`` is above 1, else 0 (a world of one); a
    ``ValueError`` naming the variable that is no integer."""
    if environment_int("WORLD_SIZE", 1) <= 1:
        return 0
    return environment_int("RANK", 0)
