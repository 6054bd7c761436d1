"""The ``model-update`` task's blocks against independent formulas, and a tiny run of the task."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from physml import metrics
from physml.tasks import Context, get
from physml.tasks import updates as task

SMALL = {
    "burgers": replace(task.EQUATION["burgers"], nx=17, t_end=0.05),
    "heat": replace(task.EQUATION["heat"], nx=17, t_end=0.05),
}


@pytest.mark.parametrize("name", ["burgers", "heat"])
def test_initial_fields_have_the_drawn_amplitude_and_meet_the_walls(name):
    problem = SMALL[name]
    a = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    u0 = task.initial_fields(problem, [3, 4, 5], a)
    assert torch.allclose(u0.square().mean(-1).sqrt(), a, rtol=1e-12)
    if name == "burgers":
        assert u0[:, 0].abs().max() == 0 and u0[:, -1].abs().max() < 1e-12


@pytest.mark.parametrize("name", ["burgers", "heat"])
def test_the_fallback_answers_each_input_with_its_target(name):
    problem = SMALL[name]
    data = task.pairs(problem, 6, first_seed=10, outside=2)
    x, y = data.tensors
    assert x.shape == y.shape == (6, 1, problem.nx) and x.dtype == torch.float32
    parameter = task.rms(x)[:, 0]
    assert ((parameter[:4] >= 0.5 - 1e-6) & (parameter[:4] <= 1.0 + 1e-6)).all()
    assert (parameter[4:] >= problem.outside[0] - 1e-6).all()
    answers = task.Solver(problem)(x)  # one solve per sample, from the float32 inputs
    assert float(metrics.relative_l2(answers, y)) < 1e-5


def test_update_scores_match_hand_computed_flips():
    target = torch.randn(8, 1, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target[..., 0] = target[..., -1] = 0.0
    e_old = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], dtype=torch.float64)
    e_new = torch.tensor([0.05, 0.5, 0.1, 0.2, 0.9, 0.2, 0.1, 0.95], dtype=torch.float64)
    old, new = target * (1 + e_old[:, None, None]), target * (1 + e_new[:, None, None])
    old[:4, 0, 0] = 0.01  # the old model misses the left wall on the first four samples
    new[[0, 5], 0, 0] = 0.02  # the new one on samples 0 and 5
    scores = task.update_scores(
        SMALL["burgers"], old.float().double(), new.float().double(), target
    )
    # torch's median is the lower middle value: the old model is right on samples 0-3
    assert scores["tau"] == pytest.approx(0.4, rel=1e-3)
    assert scores["nfr"] == pytest.approx(1 / 8)  # sample 1: 0.2 → 0.5
    assert scores["nfr_degradation"] == pytest.approx(3 / 8)  # samples 1, 4, 7 (> 1.1 e_old)
    # old wall errors: 0.01 ×4, 0 ×4 → median 0: met on 4-7, missed by the new one on 5
    assert scores["nfr_physics"] == pytest.approx(1 / 8)
    assert scores["rel_l2"] == pytest.approx(float(e_new.mean()), rel=1e-3)


def test_the_level_one_range_check_sends_every_outside_input_to_the_solver():
    problem = SMALL["burgers"]
    train = task.pairs(problem, 8, 0)
    test = task.pairs(problem, 5, task.TEST_SEED, outside=2)
    checks = task.guard_checks(problem, train.tensors[0], train.tensors[1], 1.0)
    fails, _ = checks[0](test.tensors[0], test.tensors[1])
    assert fails[3:].all()
    fails, scores = checks[1](train.tensors[0], train.tensors[1])  # the solver meets its walls
    assert not fails.any() and scores.max() < 1e-6


def test_done_when_needs_accuracy_speed_and_a_failing_surrogate():
    rows = [
        {"method": "surrogate", "level": None, "max_error": 0.5, "speedup": 100.0},
        {"method": "guard", "level": 1.0, "max_error": 0.02, "speedup": 4.0},
        {"method": "guard", "level": 0.9, "max_error": 0.008, "speedup": 3.5},
        {"method": "guard", "level": 0.8, "max_error": 0.001, "speedup": 2.0},
    ]
    verdict = task.guard_done_when(rows)
    assert verdict["holds"] and verdict["level"] == 0.9
    rows[0]["max_error"] = 0.05  # a surrogate that is good enough alone: nothing to show
    assert not task.guard_done_when(rows)["holds"]


def update_row(case, method, strength, nfr, rel_l2, val_nfr, val_rel_l2):
    return {"case": case, "method": method, "lambda": strength, "nfr": nfr, "rel_l2": rel_l2,
            "val_nfr": val_nfr, "val_rel_l2": val_rel_l2}  # fmt: skip


def test_the_update_target_picks_lambda_on_validation_and_reports_its_test_scores():
    """Validation and test disagree: the test set would pick λ = 3 (every flip cut, same rel_l2);
    the validation set picks λ = 1 (λ = 3 cuts more there but loses 5% of rel_l2), whose test
    cut is 1 − 0.3 / 0.4 = 25%, so the target misses on the test set."""
    rows = [
        update_row("burgers-old", "fno", None, 0.0, 1.2, 0.0, 1.2),
        update_row("burgers-fno", "retrain", None, 0.4, 1.0, 0.4, 1.0),
        update_row("burgers-fno", "pc-focal", 0.3, 0.1, 1.0, 0.3, 1.0),
        update_row("burgers-fno", "pc-focal", 1.0, 0.3, 1.0, 0.1, 1.01),
        update_row("burgers-fno", "pc-focal", 3.0, 0.0, 1.0, 0.0, 1.05),
        update_row("burgers-fno", "pc-uniform", 1.0, 0.0, 0.5, 0.0, 0.5),
        update_row("heat-fno", "retrain", None, 0.2, 2.0, 0.2, 2.0),
        update_row("heat-fno", "pc-focal", 1.0, 0.05, 2.02, 0.1, 2.0),
    ]
    verdict = task.update_done_when(rows)
    assert set(verdict) == {"burgers-fno", "heat-fno", "holds"}
    burgers = verdict["burgers-fno"]
    assert burgers["lambda"] == 1.0 and burgers["chosen_on"] == "validation"
    assert burgers["nfr_cut"] == pytest.approx(0.25) and not burgers["holds"]
    assert burgers["val_nfr_cut"] == pytest.approx(0.75) and burgers["val_holds"]
    assert burgers["rel_l2_ratio"] == pytest.approx(1.0)
    heat = verdict["heat-fno"]  # cut 75% with rel_l2 1% worse on the test set
    assert heat["lambda"] == 1.0 and heat["holds"] and heat["nfr_cut"] == pytest.approx(0.75)
    assert not verdict["holds"]  # burgers misses
    swapped = [  # the same table with test and validation exchanged picks the test's best λ
        {**row, "nfr": row["val_nfr"], "rel_l2": row["val_rel_l2"], "val_nfr": row["nfr"],
         "val_rel_l2": row["rel_l2"]}
        for row in rows
    ]  # fmt: skip
    picked = task.update_done_when(swapped)["burgers-fno"]
    assert picked["lambda"] == 3.0 and picked["rel_l2_ratio"] == pytest.approx(1.05)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="equation must be one of"):
        task.equation("wave")
    with pytest.raises(ValueError, match="outside must be in"):
        task.pairs(SMALL["heat"], 3, 0, outside=4)
    with pytest.raises(ValueError, match="method must be"):
        task.method_loss("distil", torch.nn.Identity(), 0.1, 1.0)
    with pytest.raises(ValueError, match="level must be in"):
        x = torch.ones(2, 1, 17)
        task.guard_checks(SMALL["heat"], x, x, 0.0)


def test_tiny_run_writes_figures_and_rows(tmp_path, monkeypatch):
    monkeypatch.setitem(task.EQUATION, "burgers", SMALL["burgers"])
    tiny = task.Scale(task.Size(4, 4, 1, 16, 4, 8), task.Size(4, 4, 1, 24, 4, 8), 10, 8)
    monkeypatch.setitem(task.SCALES, "toy", tiny)
    rows = get(task.NAME).run(Context(tmp_path, "toy", quiet=True))
    folder = tmp_path / task.NAME
    for name in ("nfr-curves.png", "guard-curve.png"):
        assert (folder / name).stat().st_size > 5_000
    summary = json.loads((folder / "summary-toy.json").read_text())
    assert set(summary["update"]) == {"retrain", "pc-focal"}
    guard = [row for row in summary["guard"] if row["method"] == "guard"]
    assert len(guard) == len(task.LEVELS) and all(row["outside_caught"] == 2 for row in guard)
    solver = next(row for row in summary["guard"] if row["method"] == "solver")
    assert solver["max_error"] == 0.0
    assert {row.metric for row in rows} >= {"rel_l2", "nfr", "max_error", "speedup"}
