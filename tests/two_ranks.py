"""How a rank of the suite's two-process gloo tests ends."""

import os

import torch


def leave(queue) -> None:
    """Wait for every rank, tear the process group down, send what ``queue`` holds and exit at
    once: gloo's threads can abort a process during the interpreter's own teardown (SIGABRT,
    "terminate called without an active exception") after all that a test checks was sent."""
    torch.distributed.barrier()  # no rank tears down while another still talks to its store
    torch.distributed.destroy_process_group()
    queue.close()
    queue.join_thread()
    os._exit(0)
