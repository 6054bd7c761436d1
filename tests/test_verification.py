"""The verification helpers on hand-made comparisons: each error norm, the observed orders and the
least-squares order of an exact power law, and what a convergence study runs and records."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pdes
from pdes import verification
from pdes.problems import RECIPE_MODULES
from pdes.verification import Comparison, ConvergenceStudy, ExactCase, convergence

F64 = torch.float64


def comparison(differences, spacing: float = 0.5) -> Comparison:
    """A comparison whose numerical minus exact values are ``differences`` (one sample, time)."""
    diff = torch.tensor(differences, dtype=F64).reshape(1, 1, -1)
    exact = torch.linspace(-1.0, 1.0, diff.shape[-1], dtype=F64).reshape(1, 1, -1)
    x = torch.arange(diff.shape[-1], dtype=F64)
    return Comparison(exact + diff, exact, x, torch.zeros(1, dtype=F64), spacing)


def test_each_norm_of_a_hand_made_difference():
    """Differences 0, 3, -4: largest 4, mean of sizes 7/3, root mean square sqrt(25/3)."""
    case = comparison([0.0, 3.0, -4.0])
    assert case.error("max") == pytest.approx(4.0, rel=1e-15)
    assert case.error() == pytest.approx(4.0, rel=1e-15)
    assert case.error("l1") == pytest.approx(7.0 / 3.0, rel=1e-15)
    assert case.error("l2") == pytest.approx(math.sqrt(25.0 / 3.0), rel=1e-15)


def test_a_negative_difference_counts_by_its_size():
    assert comparison([-2.0, 1.0]).error("max") == pytest.approx(2.0, rel=1e-15)
    assert comparison([-2.0, 1.0]).error("l1") == pytest.approx(1.5, rel=1e-15)


@pytest.mark.parametrize("norm", ["linf", "L2", "", "mean"])
def test_an_unknown_norm_is_refused_by_name(norm):
    message = "^" + re.escape(f"norm must be 'max', 'l1' or 'l2', got {norm!r}") + "$"
    with pytest.raises(ValueError, match=message):
        comparison([1.0]).error(norm)


def power_law_case(order: float, norm: str = "l1", scale: float = 3.0, **kwargs) -> ExactCase:
    """A case whose difference at resolution n is ``(scale/n)**order`` at every point, spacing
    ``scale/n``; one point off by twice that so that the max and l1 norms differ by a known factor:
    max = 2 h^p, l1 = (2 + 3)/4 h^p = 1.25 h^p (points 2h^p, h^p, h^p, h^p)."""

    def run(n: int) -> Comparison:
        h = scale / n
        differences = [2 * h**order, h**order, h**order, h**order]
        return comparison(differences, spacing=h)

    return ExactCase("power-law", run, (4, 8, 16, 32), order=order, norm=norm, **kwargs)


def test_a_study_records_the_spacing_and_the_error_in_the_case_norm():
    study = convergence(power_law_case(2.0, norm="l1"), [5, 10, 20])
    assert study.spacings == pytest.approx([3 / 5, 3 / 10, 3 / 20], rel=1e-15)
    assert study.errors == pytest.approx([1.25 * (3 / n) ** 2 for n in (5, 10, 20)], rel=1e-14)
    assert study.finest.spacing == pytest.approx(3 / 20, rel=1e-15)


def test_a_case_without_a_norm_is_measured_in_the_max_norm_in_space():
    case = ExactCase("default", power_law_case(1.0).run, (4, 8), order=1.0)
    assert case.norm == "max" and case.refines == "space"
    study = convergence(case)
    assert study.errors == pytest.approx([2 * 3 / 4, 2 * 3 / 8], rel=1e-14)


@pytest.mark.parametrize("order", [0.5, 1.0, 2.0, 4.0])
def test_an_exact_power_law_has_that_order_between_every_pair_and_overall(order):
    study = convergence(power_law_case(order))
    assert len(study.orders) == 3
    assert study.orders == pytest.approx([order] * 3, rel=1e-12)
    assert study.order == pytest.approx(order, rel=1e-12)


def test_the_orders_pair_each_resolution_with_the_next():
    """Errors 1, 1/2, 1/16, 1/32 at spacings 1, 1/2, 1/4, 1/8: orders 1, 3, 1 (their mean and the
    first-to-last slope are both 5/3); the least-squares slope of log e against log h, by hand, is
    9/5 (in units of log 2 the points are (0, 0), (-1, -1), (-2, -4), (-3, -5); about their means,
    dh = 3/2, 1/2, -1/2, -3/2 and de = 5/2, 3/2, -3/2, -5/2: sum(dh·de) / sum(dh²) = 9 / 5)."""
    errors = {1: 1.0, 2: 0.5, 4: 1 / 16, 8: 1 / 32}

    def run(n: int) -> Comparison:
        return comparison([errors[n]], spacing=1.0 / n)

    study = convergence(ExactCase("kink", run, (1, 2, 4, 8), order=2.0))
    assert study.orders == pytest.approx([1.0, 3.0, 1.0], rel=1e-12)
    assert study.order == pytest.approx(9 / 5, rel=1e-12)


def test_an_empty_list_of_resolutions_is_refused_not_replaced():
    case = power_law_case(2.0)
    message = r"^resolutions must hold at least two different resolutions .*, got \[\]$"
    with pytest.raises(ValueError, match=message):
        convergence(case, [])
    study = convergence(case, np.array([8, 16]))
    assert study.spacings == pytest.approx([3 / 8, 3 / 16], rel=1e-15)


@pytest.mark.parametrize("resolutions", [[8], [8, 8], [8, 16, 8]])
def test_an_order_needs_two_different_resolutions(resolutions):
    """One spacing, or a spacing twice, leaves log(e0/e1) / log(h0/h1) = 0/0."""
    message = "^" + re.escape(
        f"resolutions must hold at least two different resolutions to measure an order, got "
        f"{resolutions!r}"
    )
    with pytest.raises(ValueError, match=message):
        convergence(power_law_case(2.0), resolutions)


def test_a_case_with_one_resolution_of_its_own_is_refused_by_that_name():
    case = ExactCase("single", power_law_case(1.0).run, (8,), order=1.0)
    with pytest.raises(ValueError, match=r"^case\.resolutions must hold .*, got \(8,\)$"):
        convergence(case)


def test_the_finest_comparison_is_the_last_resolution_run():
    study = convergence(power_law_case(1.0), [4, 12, 8])
    assert study.finest.spacing == pytest.approx(3 / 8, rel=1e-15)
    assert isinstance(study, ConvergenceStudy)


def test_exact_cases_gathers_every_solver_module_in_order():
    """Every pdes module whose source defines ``EXACT_CASES`` (read from the files, not from the
    list the code walks) gives its cases, in the order of the recipe modules."""
    folder = Path(pdes.__file__).parent
    defining = {
        path.stem
        for path in folder.glob("*.py")
        if re.search(r"^EXACT_CASES\b", path.read_text(encoding="utf-8"), re.M)
    }
    assert {"gpme", "heat", "burgers", "wave", "stokes", "tracer"} <= defining
    assert defining <= set(RECIPE_MODULES)
    expected = [
        case.name
        for name in RECIPE_MODULES
        if name in defining
        for case in importlib.import_module(f"pdes.{name}").EXACT_CASES
    ]
    assert [case.name for case in verification.exact_cases()] == expected
