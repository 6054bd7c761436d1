"""The thread-count helper: one thread below 1024 samples × 64 points on the CPU, torch's setting
otherwise, and the caller's setting restored after the block."""

from __future__ import annotations

import pytest
import torch

from pdes.threads import solve_threads, threads_for

SMALL_BELOW = 1024 * 64


@pytest.fixture
def three_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        yield 3
    finally:
        torch.set_num_threads(previous)


def test_the_boundary_is_1024_samples_of_64_points(three_threads):
    assert solve_threads(SMALL_BELOW - 1) == 1
    assert solve_threads(SMALL_BELOW) == three_threads
    assert solve_threads(SMALL_BELOW // 2) == 1


@pytest.mark.parametrize("device", ["cuda", torch.device("cuda", 0), "meta"])
def test_a_solve_off_the_cpu_keeps_torch_setting(three_threads, device):
    assert solve_threads(10, device) == three_threads
    with threads_for(10, device) as threads:
        assert threads == three_threads and torch.get_num_threads() == three_threads
    assert torch.get_num_threads() == three_threads


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_a_small_cpu_solve_runs_on_one_thread_and_restores_the_setting(three_threads, device):
    with threads_for(10, device) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == three_threads


def test_the_setting_is_restored_when_the_block_raises(three_threads):
    with pytest.raises(RuntimeError, match="inside"), threads_for(10):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == three_threads


def test_a_large_solve_keeps_and_yields_the_caller_setting(three_threads):
    with threads_for(SMALL_BELOW * 4) as threads:
        assert threads == three_threads and torch.get_num_threads() == three_threads
    assert torch.get_num_threads() == three_threads
