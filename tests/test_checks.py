"""The shared argument checks: each one's accepted and refused boundary values, chosen by hand,
and that every refusal names the argument."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pdes import checks
from pdes.errors import SolverError

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("value", [1e-300, 0.5, 3, np.float32(2.0), torch.tensor(4.0)])
def test_positive_accepts_finite_numbers_above_zero(value):
    assert checks.positive("nu", value) == pytest.approx(float(value), rel=0)


@pytest.mark.parametrize(
    "value, error",
    [
        (0.0, ValueError),
        (-0.0, ValueError),
        (-1e-300, ValueError),
        (INF, ValueError),
        (NAN, ValueError),
        (True, TypeError),
        (np.bool_(True), TypeError),
        (torch.tensor(True), TypeError),
        (1 + 0j, TypeError),
        ("1.0", TypeError),
        (None, TypeError),
    ],
)
def test_positive_refuses_zero_non_finite_and_non_real(value, error):
    with pytest.raises(error, match=r"^nu must be"):
        checks.positive("nu", value)


def test_non_negative_accepts_zero_and_refuses_below_and_non_finite():
    assert checks.non_negative("gap", 0.0) == 0.0
    assert checks.non_negative("gap", 2) == 2.0
    for value in (-1e-300, INF, NAN):
        with pytest.raises(ValueError, match="gap"):
            checks.non_negative("gap", value)
    with pytest.raises(TypeError, match="gap"):
        checks.non_negative("gap", False)


def test_finite_number_accepts_any_sign_and_refuses_both_infinities():
    assert checks.finite_number("shift", -3) == -3.0
    assert checks.finite_number("shift", 0.0) == 0.0
    for value in (INF, -INF, NAN):
        with pytest.raises(ValueError, match="shift"):
            checks.finite_number("shift", value)


@pytest.mark.parametrize("minimum", [1, 2, 3])
def test_positive_int_boundary_is_the_minimum_itself(minimum):
    assert checks.positive_int("n", minimum, minimum) == minimum
    assert checks.positive_int("n", np.int64(minimum), minimum) == minimum
    assert type(checks.positive_int("n", np.int64(minimum), minimum)) is int
    with pytest.raises(ValueError, match=f"n must be an integer >= {minimum}"):
        checks.positive_int("n", minimum - 1, minimum)


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, "2", None, np.float64(2.0)])
def test_positive_int_refuses_booleans_floats_and_text(value):
    with pytest.raises(TypeError, match="batch"):
        checks.positive_int("batch", value)


def test_not_real_spots_booleans_complex_and_text_in_every_container():
    for value in (
        torch.tensor([True, False]),
        torch.tensor([1j]),
        np.array([True, False]),
        np.array([1 + 1j]),
        np.array(["a"]),
        [1.0, True],
        (1.0, (2.0, "x")),
    ):
        assert checks.not_real(value), value
    for value in (1.0, 3, torch.tensor([1.0]), np.array([1, 2]), [1.0, 2.0], (0.5,)):
        assert not checks.not_real(value), value


@pytest.mark.parametrize(
    "value", [np.array([True, False]), torch.tensor([True]), torch.tensor([1j]), [1.0, "a"]]
)
def test_real_values_refuse_booleans_complex_and_text(value):
    with pytest.raises(TypeError, match="coords"):
        checks.real_values("coords", value, "numbers")


def test_parameter_takes_zero_or_one_dimension_and_some_value():
    assert checks.parameter("U", 2.0, "a number").shape == ()
    assert checks.parameter("U", [1.0, 2.0], "one per sample").dtype == torch.float64
    for value in ([[1.0, 2.0]], []):
        with pytest.raises(ValueError, match="U"):
            checks.parameter("U", value, "one per sample")


def test_finite_values_refuse_a_single_nan_or_inf():
    assert checks.finite_values("y", [0.0, 1.0], "coordinates").dtype == torch.float64
    for bad in ([0.0, NAN], [INF, 1.0], [-INF]):
        with pytest.raises(ValueError, match="y must be finite"):
            checks.finite_values("y", bad, "coordinates")


def test_per_sample_expands_one_value_and_refuses_zero_and_other_counts():
    torch.testing.assert_close(
        checks.per_sample("nu", torch.tensor([0.5]), 3), torch.full((3,), 0.5, dtype=torch.float64)
    )
    out = checks.per_sample("nu", 2, 4)
    assert out.dtype == torch.float64 and out.tolist() == [2.0] * 4
    for bad in (torch.tensor([0.1, 0.0, 0.2]), torch.tensor([0.1, INF, 0.2])):
        with pytest.raises(ValueError, match=r"^nu must be finite and > 0 for every sample"):
            checks.per_sample("nu", bad, 3)
    wrong_count = r"^nu must be a number or hold one value per sample \(3,\)"
    with pytest.raises(ValueError, match=wrong_count):
        checks.per_sample("nu", torch.ones(2), 3)


def test_finite_refuses_one_nan_or_inf_among_finite_values():
    checks.finite("u", torch.zeros(3))
    for bad in (NAN, INF, -INF):
        with pytest.raises(ValueError, match="u contains NaN or inf"):
            checks.finite("u", torch.tensor([0.0, bad, 1.0]))


def test_finite_result_raises_solver_error_on_one_bad_value():
    checks.finite_result("heat", torch.ones(2), 0.5)
    with pytest.raises(SolverError, match="heat"):
        checks.finite_result("heat", torch.tensor([1.0, INF]), 0.5)


def test_diffusion_number_boundary_uses_rate_time_over_length_squared():
    limit = checks.MAX_DIFFUSION_NUMBER
    checks.diffusion_number("nu", limit * 4.0, 1.0, 2.0)  # exactly the limit
    with pytest.raises(ValueError, match="nu"):
        checks.diffusion_number("nu", limit * 4.0 * 1.01, 1.0, 2.0)
    with pytest.raises(ValueError, match="nu"):
        checks.diffusion_number("nu", 1.0, limit * 1e-4 * 1.01, 1e-2)


def test_field_promotes_one_field_to_a_batch_and_checks_every_dimension():
    out = checks.field("u0", torch.arange(5, dtype=torch.float32), n=5)
    assert out.shape == (1, 5) and out.dtype == torch.float64
    with pytest.raises(ValueError, match="u0 must have 5 points"):
        checks.field("u0", torch.zeros(2, 4), n=5)
    with pytest.raises(ValueError, match="u0 must hold at least one sample"):
        checks.field("u0", torch.zeros(0, 5))
    with pytest.raises(ValueError, match="u0"):
        checks.field("u0", torch.zeros(1, 2, 5))
    with pytest.raises(TypeError, match="u0"):
        checks.field("u0", torch.zeros(5, dtype=torch.bool))


def test_times_accept_repeats_from_zero_and_refuse_any_step_back():
    t = checks.times("times", [0.0, 0.5, 0.5, 2.0])
    assert t.dtype == torch.float64 and t.tolist() == [0.0, 0.5, 0.5, 2.0]
    assert checks.times("times", torch.tensor(0.0)).tolist() == [0.0]
    cases = [
        ([], "at least one"),
        ([-1e-12, 1.0], ">= 0"),
        ([0.0, 1.0, 1.0 - 1e-12], "non-decreasing"),
        ([0.0, NAN], "finite"),
        ([[0.0, 1.0]], "1-D"),
    ]
    for value, message in cases:
        with pytest.raises(ValueError, match=message):
            checks.times("times", value)
    with pytest.raises(TypeError, match="times"):
        checks.times("times", torch.tensor([True]))


def test_choice_lists_the_options():
    assert checks.choice("scheme", "a", ["a", "b"]) == "a"
    with pytest.raises(ValueError, match=r"scheme must be one of \['a', 'b'\], got 'c'"):
        checks.choice("scheme", "c", ["a", "b"])
    assert math.isfinite(checks.MAX_DIFFUSION_NUMBER)


@pytest.mark.parametrize(
    "value", [1j, b"1.5", np.complex64(2.0), bytearray(b"2"), memoryview(b"2.5")]
)
def test_complex_numbers_and_bytes_are_not_real_though_float_takes_some(value):
    """``float(b"1.5")`` is 1.5, ``float(bytearray(b"2"))`` 2.0 and ``float(np.complex64(2))``
    2.0: each must still be refused."""
    assert checks.not_real(value)
    with pytest.raises(TypeError, match=r"^nu must be a positive number"):
        checks.positive("nu", value)


@pytest.mark.parametrize("value", [bytearray(b"12"), memoryview(b"12"), [0.0, bytearray(b"1")]])
def test_byte_buffers_are_not_read_as_their_character_codes(value):
    """``torch.as_tensor(bytearray(b"12"))`` is [49, 50], the codes of '1' and '2'."""
    with pytest.raises(TypeError, match=r"^x must be numbers"):
        checks.real_values("x", value, "numbers")
    with pytest.raises(TypeError, match=r"^times must be a sequence of numbers"):
        checks.times("times", value)


@pytest.mark.parametrize("value", [torch.tensor([1.0, 2.0]), torch.zeros(0), np.zeros(2), [1.0]])
def test_a_number_check_refuses_what_holds_other_than_one_number_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^dt must be a finite number"):
        checks.finite_number("dt", value)


def test_real_values_refuse_a_ragged_list_and_keep_the_device():
    with pytest.raises(TypeError, match=r"^coords must be numbers"):
        checks.real_values("coords", [[1.0, 2.0], [3.0]], "numbers")
    assert checks.real_values("coords", [1.0, 2.0], "numbers", device="meta").device.type == "meta"


def test_per_sample_refuses_a_zero_number_and_builds_on_the_device():
    for bad in (0.0, -1.0, torch.tensor(0.0), INF):
        with pytest.raises(ValueError, match=r"^nu must be a finite number > 0"):
            checks.per_sample("nu", bad, 3)
    out = checks.per_sample("nu", 0.5, 3, device="meta")
    assert out.device.type == "meta" and out.shape == (3,) and out.dtype == torch.float64


def test_field_refuses_a_list_a_number_and_nan_and_moves_to_the_device():
    with pytest.raises(TypeError, match=r"^u0 must be a torch.Tensor"):
        checks.field("u0", [[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"^u0 must have shape \(sample, x\), got shape \(\)"):
        checks.field("u0", torch.tensor(1.0))
    for bad in (NAN, INF):
        with pytest.raises(ValueError, match="u0 contains NaN or inf"):
            checks.field("u0", torch.tensor([[0.0, bad, 1.0]]))
    out = checks.field("u0", torch.ones(2, 3, dtype=torch.float32), n=3, device="meta")
    assert out.device.type == "meta" and out.dtype == torch.float64


def test_times_refuse_a_boolean_among_numbers_before_torch_casts_it_to_one():
    for value in ([0.0, True], (0.5, np.bool_(False)), [0.0, 1j]):
        with pytest.raises(TypeError, match=r"^times must be a sequence of numbers"):
            checks.times("times", value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checks_on_a_cuda_device():
    """Times come back on the CPU; values and per-sample coefficients land on the device asked."""
    t = checks.times("times", torch.tensor([0.0, 0.5], device="cuda"))
    assert t.device.type == "cpu" and t.tolist() == [0.0, 0.5]
    assert checks.finite_values("y", [0.0, 1.0], "numbers", device="cuda").device.type == "cuda"
    out = checks.per_sample("nu", torch.tensor([0.5, 2.0]), 2, device="cuda")
    assert out.device.type == "cuda" and out.tolist() == [0.5, 2.0]


@pytest.mark.parametrize("value", [3, np.float32(0.5), np.int64(2), torch.tensor(4.0)])
def test_number_checks_return_a_python_float(value):
    for check in (checks.finite_number, checks.positive, checks.non_negative):
        out = check("a", value)
        assert type(out) is float and out == float(value)


def test_times_from_a_tensor_of_another_dtype_come_back_as_float64():
    for given in (torch.tensor([0.0, 0.5], dtype=torch.float32), torch.tensor([0, 2])):
        t = checks.times("times", given)
        assert t.dtype == torch.float64 and t.tolist() == [0.0, float(given[1])]


@pytest.mark.parametrize("values", [[0.5, 2.0], (0.5, 2.0), np.array([0.5, 2.0]), [2.0]])
def test_per_sample_takes_a_list_tuple_or_array_as_the_same_tensor(values):
    expected = torch.tensor(values, dtype=torch.float64).expand(2)
    assert torch.equal(checks.per_sample("nu", values, 2), expected)
    with pytest.raises(ValueError, match=r"^nu must be a number or hold one value per sample"):
        checks.per_sample("nu", list(values) * 3, 2)


@pytest.mark.parametrize("value", [b"12", bytearray(b"12"), "0.5", [0.5, "1"], ["a", "b"]])
def test_per_sample_still_refuses_text_and_bytes(value):
    with pytest.raises(TypeError, match=r"^nu must be a"):
        checks.per_sample("nu", value, 2)


@pytest.mark.parametrize(
    "value, holding",
    [
        ([torch.tensor([0.5]), torch.tensor([1.0])], r"list holding a Tensor of shape \(1,\)"),
        ((0.5, torch.tensor([[1.0]])), r"tuple holding a Tensor of shape \(1, 1\)"),
        ([[0.5], [torch.tensor([1.0])]], r"list holding a list holding a Tensor of shape \(1,\)"),
    ],
)
def test_per_sample_refuses_one_element_tensors_in_a_sequence_naming_the_argument(value, holding):
    """torch.as_tensor would take each one-element tensor as a number and drop its axes."""
    with pytest.raises(TypeError, match=rf"^nu must be a number or hold one value .*{holding}"):
        checks.per_sample("nu", value, 2)


def test_lists_of_numpy_rows_read_as_the_stacked_array():
    rows = [np.array([0.5, 0.25]), np.array([1.0, 2.0])]
    stacked = torch.tensor([[0.5, 0.25], [1.0, 2.0]], dtype=torch.float64)
    assert torch.equal(checks.real_values("centre", rows, "pairs"), stacked)
    assert torch.equal(checks.real_values("centre", tuple(rows), "pairs"), stacked)
    with pytest.raises(ValueError, match=r"^nu must be a number .* got shape \(2, 1\)"):
        checks.per_sample("nu", (np.array([0.5]), np.array([1.0])), 2)


def test_lists_of_numpy_rows_convert_without_torch_warning_and_mixed_lists_as_before():
    rows = [np.array([0.5, 0.25], dtype=np.float32), np.array([1.0, 2.0], dtype=np.float32)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns that a list of arrays converts slowly
        checks.real_values("centre", rows, "pairs")
    mixed = [np.array([1.0, 2.0]), torch.tensor([3.0, 4.0], requires_grad=True)]
    out = checks.real_values("x", mixed, "numbers")
    assert out.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    ragged = [np.array([1.0, 2.0]), np.array([3.0])]
    with pytest.raises(TypeError, match=r"^x must be numbers, got \[array\(\[1\., 2\.\]\)"):
        checks.real_values("x", ragged, "numbers")


def test_per_sample_takes_zero_dimensional_tensors_in_a_list_as_numbers():
    out = checks.per_sample("nu", [torch.tensor(0.5), np.float64(1.0), np.array(2.0)], 3)
    assert out.tolist() == [0.5, 1.0, 2.0]


def test_per_sample_refuses_a_masked_array_with_masked_entries():
    masked = np.ma.array([0.5, 1.0], mask=[False, True])
    with pytest.raises(
        TypeError, match=r"^nu must be a number .* got a masked array with 1 masked"
    ):
        checks.per_sample("nu", masked, 2)
    unmasked = np.ma.array([0.5, 1.0], mask=[False, False])
    assert checks.per_sample("nu", unmasked, 2).tolist() == [0.5, 1.0]


def _solver_calls():
    from pdes import Grid1D, Grid2D
    from pdes.burgers import solve_burgers
    from pdes.gpme import solve_gpme
    from pdes.heat import solve_heat
    from pdes.navier_stokes import solve_vorticity
    from pdes.stokes import solve_stokes
    from pdes.wave import discrete_energy, solve_wave

    grid, periodic = Grid1D(9), Grid1D(8, periodic=True)
    u0 = torch.stack([torch.sin(math.pi * grid.coordinates()), grid.coordinates()])
    up = torch.stack([torch.sin(2 * math.pi * periodic.coordinates())] * 2)
    w0 = torch.stack(
        [torch.cos(2 * math.pi * Grid2D.square(8, periodic=True).coordinates()[0])] * 2
    )
    t = [0.0, 0.05]
    return {
        "heat": lambda p: solve_heat(u0, grid, p, t, "dirichlet"),
        "burgers": lambda p: solve_burgers(up, periodic, p, t),
        "wave": lambda p: solve_wave(u0, u0, grid, p, t),
        "energy": lambda p: discrete_energy(u0, u0, grid, p),
        "vorticity": lambda p: solve_vorticity(w0, Grid2D.square(8, periodic=True), p, t),
        "stokes-U": lambda p: solve_stokes(grid, t, p, 1.0, 0.1),
        "stokes-nu": lambda p: solve_stokes(grid, t, 1.0, 1.0, p),
        "gpme": lambda p: solve_gpme(u0, grid, p, t, "dirichlet"),
    }


@pytest.mark.parametrize("solver", list(_solver_calls()))
def test_solvers_take_per_sample_values_as_a_list_or_array_bitwise_as_a_tensor(solver):
    call = _solver_calls()[solver]
    expected = call(torch.tensor([0.1, 0.2], dtype=torch.float64))
    assert expected.shape[0] == 2
    for values in ([0.1, 0.2], (0.1, 0.2), np.array([0.1, 0.2])):
        assert torch.equal(call(values), expected)


@pytest.mark.parametrize(
    "value, misread",
    [
        (np.ma.array([0.1, 0.2, 0.3], mask=[False, True, False]), "a masked array with 1 masked"),
        ([0.1, np.ma.masked], r"a list holding a masked array with 1 masked"),
        ([torch.tensor([0.1]), torch.tensor([0.2])], r"a list holding a Tensor of shape \(1,\)"),
    ],
)
def test_times_refuse_masked_entries_and_one_element_tensors_in_a_list(value, misread):
    """Read as they came, the masked time would be solved for (its hidden value) and the
    (2, 1) list would pass as two times."""
    with pytest.raises(TypeError, match=rf"^times must be a sequence of numbers, got {misread}"):
        checks.times("times", value)


def test_times_take_an_unmasked_masked_array_and_zero_dimensional_tensors():
    unmasked = np.ma.array([0.1, 0.2], mask=[False, False])
    assert checks.times("times", unmasked).tolist() == [0.1, 0.2]
    assert checks.times(
        "times", [torch.tensor(0.1, dtype=torch.float64), np.float64(0.2)]
    ).tolist() == [0.1, 0.2]


def test_positive_int_takes_0d_integer_arrays_and_tensors_as_python_ints():
    for value in (np.array(3), torch.tensor(3), np.uint8(3)):
        assert checks.positive_int("n", value) == 3
        assert type(checks.positive_int("n", value)) is int
    for value in (np.array([3]), torch.tensor([3]), torch.tensor(3.0), torch.tensor(True)):
        with pytest.raises(TypeError, match="n must be an integer >= 1"):
            checks.positive_int("n", value)
