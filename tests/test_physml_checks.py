"""physml's shared argument checks (``physml._checks``) on values chosen by hand: each refusal's
whole message (the argument, what was expected, what came) and each accepted value's result."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch

import physml._checks as checks
from physml._checks import NonFiniteError, as_tensor, device, fits_in_memory, integers

F64 = torch.float64


def test_python_numbers_are_read_as_float64_and_numpy_arrays_keep_their_values():
    """0.1 is not a float32 number; a float32 numpy array is taken as its own float32 values."""
    assert as_tensor("b", [0.1, 0.2], "(n,)", 1).tolist() == [0.1, 0.2]
    assert as_tensor("b", [0.1], "(n,)", 1, dtype=None).dtype == F64
    single = np.array([0.1], dtype=np.float32)
    assert as_tensor("b", single, "(n,)", 1).item() == float(np.float32(0.1))
    assert as_tensor("b", single, "(n,)", 1, dtype=None).dtype == torch.float32
    assert as_tensor("b", [1, 2], "(n,)", 1).dtype == F64


@pytest.mark.parametrize(
    "value, dtype", [([True, False], torch.bool), (torch.tensor([1j]), torch.complex64)]
)
def test_booleans_and_complex_numbers_are_refused_by_dtype(value, dtype):
    with pytest.raises(TypeError, match=re.escape(f"b must hold real numbers, got dtype {dtype}")):
        as_tensor("b", value, "(n,)", 1)


def test_shapes_are_refused_with_the_expected_and_the_given_shape():
    with pytest.raises(ValueError, match=re.escape("G must have shape (m, 3), got (2, 4)")):
        as_tensor("G", torch.zeros(2, 4), "(m, 3)", 2, last=3)
    with pytest.raises(ValueError, match=re.escape("G must have shape (m, 3), got ()")):
        as_tensor("G", 1.0, "(m, 3)", None, last=3)
    with pytest.raises(ValueError, match=re.escape("G must have shape (n,), got (2, 2)")):
        as_tensor("G", torch.zeros(2, 2), "(n,)", (0, 1))
    assert as_tensor("G", torch.zeros(2, 4), "(m, 3 or 4)", 2, last=(3, 4)).shape == (2, 4)
    assert as_tensor("G", torch.zeros(2, 2, 2), "any", None).shape == (2, 2, 2)
    with pytest.raises(TypeError, match=re.escape("G must be a tensor of shape (n,), got str")):
        as_tensor("G", "abc", "(n,)", 1)


def test_non_finite_values_raise_their_own_error_unless_let_through():
    with pytest.raises(NonFiniteError, match=re.escape("b contains NaN or inf values")):
        as_tensor("b", [0.0, float("nan")], "(n,)", 1)
    assert issubclass(NonFiniteError, ValueError)
    kept = as_tensor("b", [0.0, float("inf")], "(n,)", 1, finite=False)
    assert kept.tolist() == [0.0, float("inf")]


def test_the_dtype_and_device_asked_for_are_given():
    """``meta`` stands in for a GPU on a CPU machine (it holds no values to check)."""
    ones = torch.ones(2, dtype=F64)
    out = as_tensor("b", ones, "(n,)", 1, dtype=torch.float32, device="meta", finite=False)
    assert out.dtype == torch.float32 and out.device.type == "meta"


@pytest.mark.parametrize("value", ["gpu", "meta", "mps", "cuda:-1", "cpu:1", torch.device("meta")])
def test_a_device_other_than_cpu_or_cuda_is_refused_naming_it(value):
    message = f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        device("device", value)


@pytest.mark.parametrize("value", [None, 1.5, 0, True, ["cpu"], b"cpu"])
def test_a_device_that_is_no_string_nor_torch_device_is_a_type_error_naming_it(value):
    message = f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}"
    with pytest.raises(TypeError, match=re.escape(message)):
        device("device", value)


def test_cpu_is_a_device_and_cuda_beyond_the_machines_count_is_refused(monkeypatch):
    assert device("device", "cpu") == torch.device("cpu")
    assert device("device", "cpu:0") == torch.device("cpu", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device("device", "cuda:1") == torch.device("cuda", 1)
    message = "device 'cuda:2' asked for, but this machine has 2 CUDA device(s)"
    with pytest.raises(ValueError, match=re.escape(message)):
        device("device", "cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = "device 'cuda' asked for, but this machine has no CUDA device"
    with pytest.raises(ValueError, match=re.escape(message)):
        device("device", "cuda")


def test_memory_is_read_in_bytes_and_a_need_above_it_is_refused(monkeypatch, tmp_path):
    assert 0 < checks.available_memory() < 2**63
    meminfo = "MemTotal:        4000 kB\nMemAvailable:    1000 kB\n"  # /proc/meminfo's kB: KiB
    monkeypatch.setattr(checks, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert checks.available_memory() == 1000 * 1024
    monkeypatch.delattr(checks, "open")
    monkeypatch.setattr(checks, "available_memory", lambda: 2_000_000_000)
    fits_in_memory("n", 2_000_000_000, "the arrays")
    message = "n: the arrays would need about 2 GB, but this machine has 2 GB of memory available"
    with pytest.raises(ValueError, match=re.escape(message)):
        fits_in_memory("n", 2_000_000_001, "the arrays")


def test_one_memory_reading_reads_once_at_the_first_check_and_nested_uses_share_it(monkeypatch):
    """One reading of the memory available per outermost use, each admitted need taken off it:
    of 1000 bytes, 400 and 400 leave 200, too few for another 400 and enough for 200."""
    figures = iter([1000, 10, 5])
    reads = []

    def available():
        reads.append(1)
        return next(figures)

    monkeypatch.setattr(checks, "available_memory", available)
    with checks.one_memory_reading():
        assert reads == []  # nothing read before a check asks
        fits_in_memory("a", 400, "the arrays")
        with checks.one_memory_reading():
            fits_in_memory("b", 400, "the arrays")
        message = "c: the arrays would need about 4e-07 GB, but this machine has 2e-07 GB"
        with pytest.raises(ValueError, match=message):
            fits_in_memory("c", 400, "the arrays")
        fits_in_memory("c", 200, "the arrays")
    assert len(reads) == 1
    with pytest.raises(ValueError, match="d: the arrays would need"):
        fits_in_memory("d", 11, "the arrays")  # outside: read again (10 now)
    assert len(reads) == 2


def test_a_refusal_says_a_read_has_taken_memory_only_once_it_has(monkeypatch):
    """The first need of a read is refused against the whole figure read, so its message claims
    nothing taken; a later one, refused against what is left, says so."""
    monkeypatch.setattr(checks, "available_memory", lambda: 1000)
    full = (
        "a: the arrays would need about 2e-06 GB, but this machine has 1e-06 GB of memory available"
    )
    with checks.one_memory_reading():
        with pytest.raises(ValueError) as refusal:
            fits_in_memory("a", 2000, "the arrays")
        assert str(refusal.value) == full
        fits_in_memory("b", 600, "the arrays")
        with pytest.raises(ValueError) as refusal:
            fits_in_memory("c", 500, "the arrays")
        assert str(refusal.value) == (
            "c: the arrays would need about 5e-07 GB, but this machine has 4e-07 GB of memory "
            "available (less what this read has taken before)"
        )


def test_json_value_parses_text_and_refuses_each_bad_kind_naming_the_argument():
    def listed(value):
        return isinstance(value, list)

    assert checks.json_value("a", '["x", 1]', "a list", listed) == ["x", 1]
    assert checks.json_value("a", b"[2]", "a list", listed) == [2]
    assert checks.json_value("a", "{}", "anything") == {}
    deep = "[" * 100_000
    cases = [
        (3, "a: expected a list, got 3 (no JSON text)"),
        ("[", "a: expected a list, got '[', no JSON (Expecting value: line 1 column 2 (char 1))"),
        (b"\xff", "a: expected a list, got b'\\xff', no JSON ("),
        ("{}", "a: expected a list, got '{}'"),
        (
            deep,
            "a: expected a list, got JSON nested deeper than Python's recursion limit lets "
            f"it parse ({repr(deep)[:77]}...)",
        ),
    ]
    for text, message in cases:
        with pytest.raises(ValueError) as refusal:
            checks.json_value("a", text, "a list", listed)
        assert str(refusal.value).startswith(message), (text, str(refusal.value))


def test_json_value_raises_the_error_class_asked_for():
    class Bad(ValueError):
        pass

    for text in (None, "[", "[" * 100_000, "{}"):
        with pytest.raises(Bad, match="^a: expected a list, got "):
            checks.json_value("a", text, "a list", lambda value: isinstance(value, list), Bad)


def test_integers_are_python_ints_and_floats_booleans_and_empty_sequences_are_refused():
    got = integers("space", [np.int64(2), torch.tensor(3), 4], 1)
    assert got == (2, 3, 4) and all(type(n) is int for n in got)
    assert integers("space", np.array([5, 6]), 1) == (5, 6)
    for bad, error, match in [
        ((2.7, 2), TypeError, r"^space must hold integers, got \(2.7, 2\)"),
        ((True, 2), TypeError, r"^space must hold integers, got \(True, 2\)"),
        ((), ValueError, r"^space must be a non-empty sequence of integers, got \(\)"),
        (4, ValueError, r"^space must be a non-empty sequence of integers, got 4"),
        ("44", ValueError, r"^space must be a non-empty sequence of integers, got '44'"),
        ((0, 2), ValueError, r"^space entries must be >= 1, got \(0, 2\)"),
    ]:
        with pytest.raises(error, match=match):
            integers("space", bad, 1)
    with pytest.raises(ValueError, match=r"^size must be a sequence of 2 integers \(H, W\)"):
        integers("size", (1, 2, 3), 1, ("H", "W"))


def test_optional_positive_gives_a_float_or_none_where_none_is_taken():
    assert checks.optional_positive("lr", 0.5) == 0.5
    assert type(checks.optional_positive("lr", np.float32(0.5))) is float
    assert checks.optional_positive("lr", 2) == 2.0
    assert checks.optional_positive("clip", None, none="no clipping") is None


@pytest.mark.parametrize(
    "value, none, error, message",
    [
        ("0.1", None, TypeError, "lr must be a finite number > 0, got '0.1'"),
        (True, None, TypeError, "lr must be a finite number > 0, got True"),
        (None, None, TypeError, "lr must be a finite number > 0, got None"),
        (0, None, ValueError, "lr must be a finite number > 0, got 0"),
        (-1.0, None, ValueError, "lr must be a finite number > 0, got -1.0"),
        ("1", "no limit", TypeError, "lr must be a finite number > 0 or None, got '1'"),
        (
            float("inf"),
            "no limit",
            ValueError,
            "lr must be a finite number > 0 or None, got inf (for no limit pass None)",
        ),
        (
            float("nan"),
            "no limit",
            ValueError,
            "lr must be a finite number > 0 or None, got nan (for no limit pass None)",
        ),
    ],
)
def test_optional_positive_refuses_by_name_a_non_number_and_a_number_out_of_range(
    value, none, error, message
):
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
        checks.optional_positive("lr", value, none=none)


def test_optional_positive_says_how_to_ask_for_none_where_a_caller_cannot_pass_none():
    message = "--lr must be a finite number > 0, got 0.0 (for no limit leave --lr out)"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        checks.optional_positive("--lr", 0.0, none="no limit", unset="leave --lr out")
    with pytest.raises(
        TypeError, match="^" + re.escape("--lr must be a finite number > 0, got 'a'") + "$"
    ):
        checks.optional_positive("--lr", "a", none="no limit", unset="leave --lr out")


def test_optional_positive_words_the_expectation_as_asked():
    message = "budget_s must be a finite number of seconds > 0 or None, got '5'"
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        checks.optional_positive("budget_s", "5", "a finite number of seconds > 0", "no budget")


def test_choice_takes_one_of_the_strings_and_refuses_others_by_name():
    assert checks.choice("clock", "cpu", ("wall", "cpu")) == "cpu"
    message = "clock must be one of ('wall', 'cpu') (what it counts), got "
    with pytest.raises(ValueError, match="^" + re.escape(message + "'gpu'") + "$"):
        checks.choice("clock", "gpu", ["wall", "cpu"], " (what it counts)")
    for value in (1, None, ["wall"], b"wall"):
        with pytest.raises(TypeError, match="^" + re.escape(message + repr(value)) + "$"):
            checks.choice("clock", value, ("wall", "cpu"), " (what it counts)")
