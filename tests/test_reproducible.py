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


def _draws_under(profile: str) -> list[list[int]]:
    """The cases a small property test draws on two runs under the suite's profile ``profile``
    (its example database left out: nothing is written)."""
    drawn: list[int] = []

    @settings(parent=settings.get_profile(profile), max_examples=20, database=None)
    @given(st.integers(0, 2**62))
    def record(value: int) -> None:
        drawn.append(value)

    runs = []
    for _ in range(2):
        drawn.clear()
        record()
        runs.append(list(drawn))
    return runs


def test_the_explore_profile_really_draws_other_cases_on_another_run():
    """Two runs under explore draw other cases (20 integers of 63 bits: the same twice would be
    derandomized drawing); two under repeatable draw the same, so the comparison can tell."""
    first, second = _draws_under("explore")
    assert len(set(first)) > 1 and len(set(second)) > 1
    assert first != second
    assert len(set(first) & set(second)) < len(first) // 2  # mostly fresh, not a shuffle
    again, same = _draws_under("repeatable")
    assert again == same


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
