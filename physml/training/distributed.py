"""Processes launched by ``torchrun``: which rank this is, and the process group.

Slurm, Kubernetes or a cloud scheduler launch ``torchrun``; the toolkit adds no launcher. Without
``torchrun`` (no ``WORLD_SIZE`` in the environment) the world is one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .._ranks import environment_int, environment_rank


@dataclass(frozen=True)
class World:
    """``rank`` of ``size`` processes; rank 0 writes checkpoints and shows progress."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def from_main(self, value: object) -> object:
        """Rank 0's ``value`` (picklable) in every process."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def number_from_main(self, value: float) -> float:
        """Rank 0's ``value`` in every process, exactly (one float64 tensor broadcast on the
        process group's device: no pickling, cheap enough for every step)."""
        if self.size == 1:
            return float(value)
        box = torch.tensor(float(value), dtype=torch.float64, device=group_device())
        dist.broadcast(box, src=0)
        return float(box.item())

    def flag_from_main(self, value: bool) -> bool:
        """Rank 0's ``value`` (True or False) in every process, sent as one number
        (:meth:`number_from_main`: no pickling, cheap enough for every validation)."""
        return self.number_from_main(1.0 if value else 0.0) != 0.0


def group_device() -> torch.device:
    """Where the joined process group's tensors live: this process's CUDA device under nccl,
    else the CPU (gloo)."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world(device: str = "cpu") -> World:
    """The current world, joining the ``torchrun`` process group on first use (gloo for a CPU
    ``device``, nccl for a CUDA one)."""
    if environment_int("WORLD_SIZE", 1) <= 1 and not dist.is_initialized():
        return World()
    if not dist.is_initialized():
        environment_int("RANK", 0)
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(environment_int("LOCAL_RANK", 0))
    return World(dist.get_rank(), dist.get_world_size())


def rank() -> int:
    """This process's rank, joining nothing: the joined process group's, else ``torchrun``'s
    ``RANK`` when ``WORLD_SIZE`` is above 1, else 0 (the world of one :func:`world` sees)."""
    if dist.is_initialized():
        return dist.get_rank()
    return environment_rank()
