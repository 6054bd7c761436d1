"""The task registry and its helpers: contexts, rows, run labels and settings, step and device
checks, saved rows."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from physml import tasks


def test_a_context_of_an_unknown_size_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"size must be one of \['toy', 'full'\], got 'huge'"):
        tasks.Context(out=tmp_path, size="huge")


def test_an_unknown_task_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown task 'nope'; choose one of \[.*'verify'"):
        tasks.get("nope")


def test_the_registry_handed_out_is_a_copy():
    handed = tasks.registry()
    handed["not-registered"] = handed["verify"]
    assert "not-registered" not in tasks.registry()


def test_registering_the_same_task_again_is_allowed():
    task = tasks.registry()["verify"]
    assert tasks.register(task) is task and tasks.get("verify") is task


@pytest.mark.parametrize(
    "value, expected",
    [(3, 3.0), (np.True_, 1.0), (np.uint8(7), 7.0), (torch.tensor([[2.5]]), 2.5)],
    ids=["int", "numpy-bool", "uint8", "one-element"],
)
def test_a_row_keeps_any_real_number_as_a_float(value, expected):
    row = tasks.Row("t", "c", "m", value)
    assert type(row.value) is float and row.value == expected


@pytest.mark.parametrize("ok", [np.True_, np.False_, torch.tensor(True), 1, 0])
def test_a_row_verdict_is_stored_as_a_python_bool(ok):
    row = tasks.Row("t", "c", "m", 1.0, "<= 2", ok)
    assert type(row.ok) is bool and row.ok == bool(ok)


def test_run_label_and_settings_name_the_size_seed_device_and_utc_second(tmp_path):
    context = tasks.Context(out=tmp_path, size="full", device="cuda:1", seed=7)
    assert tasks.run_label(context) == "full-seed7"
    settings = tasks.run_settings(context)
    from physml import __version__

    assert {k: settings[k] for k in ("size", "seed", "device", "physml")} == {
        "size": "full",
        "seed": 7,
        "device": "cuda:1",
        "physml": __version__,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", settings["date"])
    date = datetime.fromisoformat(settings["date"])
    assert date.utcoffset() == timedelta(0)


@pytest.mark.parametrize("scheme", ["seedsequence-mt19937", "torch-manual-seed"])
def test_run_settings_and_saved_rows_name_the_active_seed_scheme(tmp_path, scheme):
    from pdes.problems import seed_scheme

    context = tasks.Context(out=tmp_path, seed=3)
    with seed_scheme(scheme):
        assert tasks.run_settings(context)["seed_scheme"] == scheme
        path = tasks.save_rows(context, "a", [], wall_s=1.0)
    assert json.loads(path.read_text())["settings"]["seed_scheme"] == scheme


def test_saved_rows_hold_the_settings_wall_time_and_every_row(tmp_path):
    context = tasks.Context(out=tmp_path / "new", seed=3)
    rows = [tasks.Row("a", "c", "m", 1.5, "<= 2", True), tasks.Row("a", "c", "n", float("nan"))]
    path = tasks.save_rows(context, "a", rows, wall_s=12.5)
    assert path == tmp_path / "new" / "a" / "rows-toy-seed3.json"
    record = json.loads(path.read_text())
    assert record["wall_s"] == 12.5
    assert record["settings"]["seed"] == 3 and record["settings"]["size"] == "toy"
    assert record["rows"] == [
        {"task": "a", "case": "c", "metric": "m", "value": 1.5, "target": "<= 2", "ok": True},
        {"task": "a", "case": "c", "metric": "n", "value": None, "target": "", "ok": None},
    ]


def test_check_steps_takes_none_or_a_count_for_each_family():
    tasks.check_steps(None, ("a", "b"))
    tasks.check_steps({"b": 2, "a": 1}, ("a", "b"))


@pytest.mark.parametrize(
    "steps",
    [{}, {"a": 1}, {"a": 1, "b": 1, "c": 1}, [("a", 1), ("b", 1)], 5],
    ids=["empty", "missing", "extra", "pairs", "int"],
)
def test_check_steps_refuses_other_families_by_name(steps):
    message = re.escape(f"steps must give the step count of each of ['a', 'b'], got {steps!r}")
    with pytest.raises(ValueError, match=message):
        tasks.check_steps(steps, ("a", "b"))


@pytest.mark.parametrize("count, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_check_steps_refuses_a_count_below_one_naming_the_family(count, error):
    message = "^" + re.escape(f"steps['b'] must be an integer >= 1, got {count!r}") + "$"
    with pytest.raises(error, match=message):
        tasks.check_steps({"a": 1, "b": count}, ("a", "b"))


def test_recorded_cost_reads_a_record_of_the_asked_length(tmp_path):
    cost = tmp_path / "cost.json"
    cost.write_text('{"steps": 3, "train_s": 2.5}')
    assert tasks.recorded_cost(cost) == 2.5
    assert tasks.recorded_cost(cost, steps=3) == 2.5
    assert tasks.recorded_cost(cost, steps=np.int64(3)) == 2.5
    assert np.isnan(tasks.recorded_cost(cost, steps=4))  # another run's length: unknown
    assert np.isnan(tasks.recorded_cost(tmp_path / "none.json", steps=3))


def test_recorded_cost_takes_steps_by_keyword_only(tmp_path):
    """A second positional argument (e.g. an old call's NaN for "unknown") is refused, not read
    as a step count."""
    cost = tmp_path / "cost.json"
    cost.write_text('{"steps": 3, "train_s": 2.5}')
    with pytest.raises(TypeError, match="positional argument"):
        tasks.recorded_cost(cost, float("nan"))


@pytest.mark.parametrize(
    "steps, error", [(10.0, TypeError), (True, TypeError), ("3", TypeError), (0, ValueError)]
)
def test_recorded_cost_refuses_a_step_count_that_is_no_integer_above_zero(tmp_path, steps, error):
    cost = tmp_path / "cost.json"
    cost.write_text('{"steps": 1, "train_s": 2.5}')
    message = "^" + re.escape(f"steps must be an integer >= 1, got {steps!r}") + "$"
    with pytest.raises(error, match=message):
        tasks.recorded_cost(cost, steps=steps)


def _task(name, cpu_only):
    return tasks.Task(name, "", run=lambda context: [], cpu_only=cpu_only)


def test_cpu_only_tasks_take_any_cpu_device_and_refuse_others_naming_them():
    one, two, anywhere = _task("one", True), _task("two", True), _task("anywhere", False)
    for device in ("cpu", "cpu:0", torch.device("cpu")):
        tasks.check_task_device([one, two, anywhere], device)
    tasks.check_task_device([anywhere], "cuda")
    tasks.check_task_device([], "cuda:0")
    with pytest.raises(ValueError, match=r"--device: one runs on the CPU only, got 'cuda'; use"):
        tasks.check_task_device([one, anywhere], "cuda")
    with pytest.raises(ValueError, match=r"--device: one, two run on the CPU only, got 'mps'"):
        tasks.check_task_device([one, anywhere, two], "mps")


def test_measurements_are_shown_to_four_significant_digits():
    rows = [tasks.Row("t", "c", "a", 1.23456), tasks.Row("t", "c", "b", 98765.4)]
    values = [line.split()[3] for line in tasks.format_table(rows).splitlines()[2:]]
    assert values == ["1.235", "9.877e+04"]


def test_offset_seed_adds_below_the_limit_and_wraps_above():
    assert tasks.SEED_LIMIT == 2**62
    assert tasks.offset_seed(0, 7919) == 7919 and tasks.offset_seed(5, 0) == 5
    assert tasks.offset_seed(2**62 - 7920, 7919) == 2**62 - 1  # the last seed left as it was
    assert tasks.offset_seed(2**62 - 7919, 7919) == 0
    assert tasks.offset_seed(2**62 - 1, 104729) == 104728
