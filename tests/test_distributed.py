"""The world a process sees: one process without ``torchrun``, else the process group it joins."""

from __future__ import annotations

import pytest
import torch

from physml.training import distributed
from physml.training.distributed import World, rank, world


class FakeGroup:
    """Stands in for ``torch.distributed``: records what the world asks of it."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size, self.calls = rank, size, []
        self.initialized = False

    def is_initialized(self) -> bool:
        return self.initialized

    def init_process_group(self, backend: str) -> None:
        self.calls.append(("init", backend))
        self.initialized = True

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.size

    def barrier(self) -> None:
        self.calls.append(("barrier",))

    def broadcast_object_list(self, box: list, src: int) -> None:
        self.calls.append(("broadcast", src))
        box[0] = ("from rank", src)

    class Backend:
        NCCL = "nccl"

    backend = "gloo"

    def get_backend(self) -> str:
        return self.backend

    def broadcast(self, tensor: torch.Tensor, src: int) -> None:
        """Rank 0's value, 0.1 + 0.2 (a float that float32 would round), into ``tensor``."""
        self.calls.append(("tensor", src, tensor.dtype, str(tensor.device), tuple(tensor.shape)))
        tensor.fill_(0.1 + 0.2)


@pytest.fixture
def group(monkeypatch):
    fake = FakeGroup(rank=3, size=4)
    monkeypatch.setattr(distributed, "dist", fake)
    devices = []
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)
    fake.devices = devices
    return fake


def test_without_torchrun_the_world_is_one_main_process(monkeypatch, group):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world() == World(0, 1) == World()
    assert World().is_main and world("cuda").is_main
    assert group.calls == []  # no process group is joined
    World().barrier()
    assert World().from_main({"a": 1}) == {"a": 1}
    assert group.calls == []  # and a world of one needs no collective


@pytest.mark.parametrize("size", ["0", "1"])
def test_a_world_size_of_one_or_less_joins_no_group(monkeypatch, group, size):
    monkeypatch.setenv("WORLD_SIZE", size)
    assert world() == World(0, 1) and group.calls == []


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("cuda", "nccl"), ("cuda:1", "nccl")])
def test_torchrun_joins_the_group_with_the_backend_of_the_device(
    monkeypatch, group, device, backend
):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")  # rank 3 of 4 on the second GPU of its node
    seen = world(device)
    assert seen == World(rank=3, size=4) and not seen.is_main
    assert group.calls == [("init", backend)]
    assert group.devices == ([1] if backend == "nccl" else [])
    world(device)  # a second call joins nothing again
    assert group.calls == [("init", backend)]


def test_a_joined_group_is_the_world_even_without_world_size(monkeypatch, group):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group.initialized = True
    assert world() == World(rank=3, size=4) and group.calls == []


def test_only_rank_zero_is_main():
    assert [World(rank, 3).is_main for rank in range(3)] == [True, False, False]


@pytest.mark.parametrize("size", [2, 3])
def test_several_processes_wait_at_the_barrier_and_take_rank_zeros_value(group, size):
    World(1, size).barrier()
    assert World(1, size).from_main("mine") == ("from rank", 0)
    assert group.calls == [("barrier",), ("broadcast", 0)]


def test_a_number_from_rank_zero_is_one_float64_tensor_broadcast_exactly(group):
    """No pickled object: one 0-d float64 tensor on the group's device (gloo: the CPU)."""
    taken = World(1, 2).number_from_main(7.0)
    assert taken == 0.1 + 0.2 and type(taken) is float
    assert group.calls == [("tensor", 0, torch.float64, "cpu", ())]
    assert World().number_from_main(2) == 2.0 and len(group.calls) == 1  # one process: no call


@pytest.mark.parametrize("answer", [True, False])
def test_a_flag_from_rank_zero_is_one_tensor_broadcast_and_no_pickled_object(group, answer):
    """The fake group sends rank 0's number 0.3 (no zero): True in every process."""
    assert World(1, 2).flag_from_main(answer) is True
    assert group.calls == [("tensor", 0, torch.float64, "cpu", ())]
    assert World().flag_from_main(answer) is answer and len(group.calls) == 1  # no call


@pytest.mark.parametrize("backend, device", [("gloo", "cpu"), ("nccl", "cuda:1")])
def test_the_groups_tensors_live_on_the_cpu_under_gloo_and_this_gpu_under_nccl(
    monkeypatch, group, backend, device
):
    group.backend = backend
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # the GPU set for this rank
    assert distributed.group_device() == torch.device(device)


def test_the_rank_joins_nothing_and_follows_the_group_else_torchrun(monkeypatch, group):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("RANK", raising=False)
    assert rank() == 0
    monkeypatch.setenv("RANK", "2")
    assert rank() == 2
    group.initialized = True
    assert rank() == 3 and group.calls == []


@pytest.mark.parametrize("size", [None, "0", "1"])
def test_without_a_world_of_several_processes_the_rank_is_zero_as_the_world_says(
    monkeypatch, group, size
):
    """A stray RANK=1 without WORLD_SIZE > 1: world() saw one main process, rank() said 1 (and
    physml evaluate returned at once, doing nothing, with exit status 0)."""
    if size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", size)
    for stray in ("1", "abc"):
        monkeypatch.setenv("RANK", stray)
        assert rank() == 0 == world().rank
    assert group.calls == []


@pytest.mark.parametrize(
    "environment, variable",
    [
        ({"WORLD_SIZE": "abc", "RANK": "1"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "", "RANK": "1"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "abc"}, "RANK"),
        ({"WORLD_SIZE": "2", "RANK": "1.5"}, "RANK"),
    ],
)
def test_a_torchrun_variable_that_is_not_an_integer_is_named(
    monkeypatch, group, environment, variable
):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    refused = (
        rf"^the environment variable {variable} must be an integer .*got '{environment[variable]}'$"
    )
    for ask in (rank, world):
        with pytest.raises(ValueError, match=refused):
            ask()
    assert group.calls == []


def test_a_local_rank_that_is_not_an_integer_is_named(monkeypatch, group):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "gpu1")
    with pytest.raises(
        ValueError, match=r"^the environment variable LOCAL_RANK must be an integer"
    ):
        world("cuda")
