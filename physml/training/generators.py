"""The random generators a dataset's items may draw from besides torch's: numpy's global one and
Python's ``random``, as checkpoint entries and back."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch


def host_states() -> dict[str, list]:
    """``{"numpy_rng", "python_rng"}``: the states of ``np.random`` and ``random``, their
    arrays as int64 tensors (what a checkpoint read with ``weights_only=True`` holds)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, words, gauss_next = random.getstate()
    return {
        "numpy_rng": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python_rng": [version, torch.tensor(words, dtype=torch.int64), gauss_next],
    }


def seed_host_generators(seed: int) -> None:
    """Seed ``np.random`` and ``random`` from ``seed`` (``np.random.seed(seed)`` below 2**32, else
    its two 32-bit halves; ``random.seed(seed)``)."""
    np.random.seed(seed if seed < 2**32 else [seed & 0xFFFFFFFF, seed >> 32])  # noqa: NPY002
    random.seed(seed)


def set_host_states(state: dict) -> None:
    """Set ``np.random`` and ``random`` to the states :func:`host_states` gave, wherever a
    checkpoint load mapped their tensors (a checkpoint written before they were saved lacks them:
    those generators are left as they are)."""
    if "numpy_rng" in state:
        kind, keys, position, has_gauss, cached = state["numpy_rng"]
        keys = keys.cpu().numpy().astype(np.uint32)
        np.random.set_state((kind, keys, int(position), int(has_gauss), float(cached)))  # noqa: NPY002
    if "python_rng" in state:
        version, words, gauss_next = state["python_rng"]
        random.setstate((version, tuple(words.cpu().tolist()), gauss_next))


@contextlib.contextmanager
def generators_kept(cuda: Sequence[int] = ()) -> Iterator[None]:
    """Torch's (CPU, and those of the ``cuda`` devices), numpy's and Python's generators leave
    the block as they came in."""
    saved = host_states()
    with torch.random.fork_rng(devices=list(cuda)):
        try:
            yield
        finally:
            set_host_states(saved)
