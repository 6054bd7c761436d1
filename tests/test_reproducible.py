"""The suite's property tests draw the same cases on every run unless HYPOTHESIS_PROFILE asks to
explore (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def _chosen_profile(config: pytest.Config) -> str:
    return config.getoption("hypothesis_profile", None) or os.environ.get(
        "HYPOTHESIS_PROFILE", "repeatable"
    )


def test_property_tests_draw_the_same_cases_on_every_run(request):
    if _chosen_profile(request.config) != "repeatable":
        pytest.skip("another hypothesis profile was chosen")
    drawn: list[int] = []

    @settings(max_examples=20)
    @given(st.integers(0, 2**62))
    def record(value: int) -> None:
        drawn.append(value)

    record()
    first = list(drawn)
    drawn.clear()
    record()
    assert drawn == first
    assert len(set(first)) > 1  # cases drawn indeed, not one constant
    assert settings.default.derandomize
    assert settings.default.database is None  # no case remembered from an earlier run
    assert settings.default.deadline is None


def test_the_explore_profile_draws_fresh_random_cases():
    explore = settings.get_profile("explore")
    assert not explore.derandomize
    assert explore.max_examples > settings.get_profile("repeatable").max_examples
    assert explore.deadline is None


def test_an_unknown_profile_is_refused_by_name():
    here = Path(__file__)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", str(here)],
        capture_output=True,
        text=True,
        cwd=here.parents[1],
        env={**os.environ, "HYPOTHESIS_PROFILE": "wild"},
    )
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert (
        "HYPOTHESIS_PROFILE must name a hypothesis profile, one of repeatable, explore, got 'wild'"
        in said
    )
