"""How many torch threads a solve runs on: one for a small solve, torch's setting otherwise.

A small batched solve is a stream of tiny kernels whose cost is per-call overhead. A second thread
adds a hand-off to each of them and, on a busy machine, a wait for a free core: on a shared 2-core
machine two threads made a 1.6 ms Burgers solve take 324 ms. Solves whose state holds fewer than
``ONE_THREAD_BELOW`` values (batch × points) therefore run on one thread, and the caller's
setting is restored afterwards. Larger solves, and solves off the CPU, keep torch's setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

ONE_THREAD_BELOW = 1 << 16
"""State size (values) below which a CPU solve runs on one thread (1024 samples of 64 points)."""


def solve_threads(values: int, device: torch.device | str = "cpu") -> int:
    """The number of torch threads a solve whose state holds ``values`` numbers runs on."""
    if torch.device(device).type == "cpu" and values < ONE_THREAD_BELOW:
        return 1
    return torch.get_num_threads()


@contextlib.contextmanager
def threads_for(values: int, device: torch.device | str = "cpu") -> Iterator[int]:
    """Run the block on :func:`solve_threads` threads; yields that number."""
    previous = torch.get_num_threads()
    wanted = solve_threads(values, device)
    if wanted == previous:
        yield previous
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)
