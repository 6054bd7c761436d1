"""Boundary values: numbers, per-sample tensors and functions of time, bad values, names."""

import math

import pytest
import torch

from pdes.boundary import Dirichlet, Neumann, Periodic, evaluate, parse

F64 = torch.float64


def test_a_zero_dimensional_tensor_is_one_value_for_every_sample():
    assert torch.equal(
        evaluate("left", torch.tensor(2.5), 0.0, 3), torch.full((3,), 2.5, dtype=F64)
    )


def test_values_take_the_time_and_keep_each_side():
    bc = Neumann(lambda t: 2.0 * t, torch.tensor([1.0, -1.0]))
    left, right = bc.values(0.75, 2)
    assert torch.equal(left, torch.tensor([1.5, 1.5], dtype=F64))
    assert torch.equal(right, torch.tensor([1.0, -1.0], dtype=F64))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_one_non_finite_sample_is_refused(bad):
    with pytest.raises(ValueError, match=r"Dirichlet\.right is NaN or inf at t=0\.5"):
        Dirichlet(0.0, torch.tensor([1.0, bad, 2.0])).values(0.5, 3)
    with pytest.raises(ValueError, match=r"Dirichlet\.left is NaN or inf at t=0\.5"):
        Dirichlet(bad, 0.0).values(0.5, 3)


@pytest.mark.parametrize("name, kind", [(" Neumann ", Neumann), ("DIRICHLET", Dirichlet)])
def test_names_are_read_without_case_or_surrounding_spaces(name, kind):
    assert parse(name) == kind()
    assert parse("periodic") == Periodic()
