"""Mass conservation and the cumulative inflow on cases small enough to work out by hand: the
quadrature row of each grid kind on 4 or 5 points, constant fields, named layouts, and the
time axis's checks."""

from __future__ import annotations

import re

import pytest
import torch
from test_constraints import through
from torch import nn

from pdes import Grid1D, Grid2D
from physml import ConstraintError, constrain, mass_conservation
from physml.constraints import cumulative_inflow

F64 = torch.float64


# (grid, its quadrature row written out by hand)
ROWS = [
    (Grid1D(5, 0.0, 1.0), [0.125, 0.25, 0.25, 0.25, 0.125]),  # trapezoid: h/2, h, h, h, h/2
    (Grid1D(4, 0.0, 1.0, kind="cell"), [0.25, 0.25, 0.25, 0.25]),  # cell sums: h = 1/4
    (Grid1D(4, 0.0, 2.0, periodic=True), [0.5, 0.5, 0.5, 0.5]),  # no repeated end: h = 2/4
]


@pytest.mark.parametrize("grid, row", ROWS)
def test_a_zero_field_moves_along_the_quadrature_row(grid, row):
    """The least-norm move of ``0`` onto ``g·u = M`` is ``g M / |g|²``: with ``M = |g|²`` it is
    the row ``g`` itself."""
    g = torch.tensor(row, dtype=F64)
    out = through(mass_conservation(grid, float(g @ g)), torch.zeros(len(row), dtype=F64))
    assert torch.allclose(out, g, rtol=0, atol=1e-15)


@pytest.mark.parametrize("grid, row", ROWS)
def test_a_constant_field_holding_length_times_value_stays_put(grid, row):
    value = 3.0
    field = torch.full((2, len(row)), value, dtype=F64)
    length = grid.upper - grid.lower
    out = through(mass_conservation(grid, torch.full((2,), length * value, dtype=F64)), field)
    assert torch.allclose(out, field, rtol=0, atol=1e-14)


def test_a_2d_grid_row_is_the_product_of_its_axes_rows():
    """``(3 nodes on [0, 1]) × (2 cells on [0, 1])``: ``(¼, ½, ¼) ⊗ (½, ½)``."""
    grid = Grid2D(Grid1D(3, 0.0, 1.0), Grid1D(2, 0.0, 1.0, kind="cell"))
    g = torch.tensor([[0.125, 0.125], [0.25, 0.25], [0.125, 0.125]], dtype=F64)
    out = through(
        mass_conservation(grid, torch.tensor([[float((g * g).sum())]])), torch.zeros(1, 1, 3, 2)
    )
    assert torch.allclose(out[0, 0].double(), g, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "layout, shape",
    [("tx", (3, 5)), ("bcx", (2, 3, 5)), ("btcx", (2, 3, 2, 5))],
)
def test_each_named_layout_takes_its_own_number_of_axes(layout, shape):
    grid = Grid1D(5, 0.0, 1.0)
    field = torch.zeros(shape, dtype=F64)
    mass = torch.arange(1.0, 1.0 + field[..., 0].numel(), dtype=F64).reshape(shape[:-1])
    out = through(mass_conservation(grid, mass, layout=layout), field)
    assert torch.allclose(grid.integrate(out), mass, rtol=0, atol=1e-13)
    wrong = torch.zeros((2, *shape), dtype=F64)
    n = len(shape)
    expected = f"output has {n + 1} axes {tuple(wrong.shape)}, expected {n} (layout '{layout}')"
    with pytest.raises(ConstraintError, match=f"^{re.escape(expected)}$"):
        through(mass_conservation(grid, torch.zeros(wrong.shape[:-1]), layout=layout), wrong)


def test_a_repeated_time_adds_no_mass():
    times = torch.tensor([0.0, 1.0, 1.0, 3.0], dtype=F64)
    rate = torch.tensor([2.0, 2.0, 5.0, 5.0], dtype=F64)  # a jump in the rate at t = 1
    assert torch.equal(
        cumulative_inflow(times, rate), torch.tensor([0.0, 2.0, 2.0, 12.0], dtype=F64)
    )


@pytest.mark.parametrize(
    ("times", "came"),
    [
        (torch.tensor([[0.0, 1.0, 2.0]]), "[[0.0, 1.0, 2.0]]"),
        (torch.tensor([0.0, float("nan"), 2.0]), "[0.0, nan, 2.0]"),
        (torch.tensor([0.0, 1.0, float("inf")]), "[0.0, 1.0, inf]"),
    ],
)
def test_times_not_one_axis_of_finite_values_are_refused(times, came):
    expected = f"times must be a 1-D sequence of finite, non-decreasing times, got {came}"
    with pytest.raises(ConstraintError, match=f"^{re.escape(expected)}$"):
        cumulative_inflow(times, torch.ones(3))


def test_cumulative_inflow_keeps_float64_for_python_numbers():
    """0.1 is not a float32 number: read as float32, ``∫₀¹ 0.1 ds`` would miss by about 1e-9."""
    assert cumulative_inflow([0.0, 0.1], [1.0, 1.0]).tolist() == [0.0, 0.1]
    assert cumulative_inflow([0.0, 1.0], [0.1, 0.1]).tolist() == [0.0, 0.1]


@pytest.mark.parametrize("leading", [(), (2,), (2, 3), (2, 2, 3)])
def test_a_2d_grid_takes_a_single_frame_and_leading_axes(leading):
    """A ``(h, w)`` frame, ``(c, h, w)``, ``(b, c, h, w)`` and ``(b, t, c, h, w)``: every frame
    held at ``value · area`` stays put, one row per frame."""
    grid = Grid2D(Grid1D(3, 0.0, 2.0), Grid1D(4, 0.0, 0.5, kind="cell"))
    field = torch.full((*leading, 3, 4), 2.0, dtype=F64)
    out = through(mass_conservation(grid, torch.full(leading, 2.0 * 2.0 * 0.5, dtype=F64)), field)
    assert torch.allclose(out, field, rtol=0, atol=1e-14)


def test_a_total_mass_given_as_a_python_number_is_met_in_float64():
    """0.1 is not a float32 number: a target read as float32 would miss by about 1e-9."""
    grid = Grid1D(5, 0.0, 1.0)
    out = through(mass_conservation(grid, 0.1), torch.zeros(5, dtype=F64))
    assert abs(grid.integrate(out).item() - 0.1) < 1e-15


def test_a_callable_total_mass_is_read_per_input():
    """The target ``M(x) = ∫ x + 1`` of the model's input: each output integrates to its own."""
    grid = Grid1D(5, 0.0, 1.0)
    constraint = mass_conservation(grid, lambda x: grid.integrate(x) + 1.0)
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=F64)
    out = constrain(nn.Identity(), constraint)(x)
    # ∫ of the ramp 4s on [0, 1] is 2 (exact for the trapezoid rule), of 1 is 1
    assert torch.allclose(grid.integrate(out), torch.tensor([3.0, 2.0], dtype=F64), atol=1e-14)


def test_shrinkage_reaches_the_ensemble_update():
    """Shrunk fully to its variances, the ensemble moves each point by ``var_i g_i`` times one
    number: the moves over ``var_i g_i`` are equal across the grid (not so for the full
    covariance of these members)."""
    from physml import Ensemble

    grid = Grid1D(5, 0.0, 1.0)
    g = torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125], dtype=F64)
    samples = torch.tensor(
        [[0.0, 1.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 0.0, 0.0], [2.0, 2.0, 1.0, 1.0, 3.0]],
        dtype=F64,
    )
    variance = samples.var(0)
    for shrinkage, equal in ((1.0, True), (0.0, False)):
        out = through(mass_conservation(grid, 1.0, shrinkage=shrinkage), Ensemble(samples))
        ratio = (samples - out.samples) / (variance * g)
        assert torch.allclose(out.samples @ g, torch.ones(3, dtype=F64), atol=1e-14)
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-12) is equal


def test_cumulative_inflow_runs_from_the_first_time_not_from_zero():
    """``q(s) = s`` from ``t₀ = 1``: ``∫₁ᵗ s ds = (t² - 1) / 2``, exact for the trapezoid rule;
    from 0 it would be ``t² / 2``."""
    times = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    assert cumulative_inflow(times, times).tolist() == [0.0, 1.5, 4.0]
    assert cumulative_inflow(times, torch.ones(3, dtype=F64)).tolist() == [0.0, 1.0, 2.0]
    assert "times[0]" in cumulative_inflow.__doc__


def test_a_rate_singular_at_zero_is_refused_with_what_the_caller_must_add():
    times = torch.linspace(0.0, 1.0, 4, dtype=F64)
    with pytest.raises(ConstraintError) as refusal:
        cumulative_inflow(times, 1.0 / times.sqrt())
    message = str(refusal.value)
    assert "the inflow before the first time is then left out: add it yourself" in message
    assert "pdes.gpme.stefan_total_mass" in message
