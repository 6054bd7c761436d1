"""The ``model-update`` task's blocks against independent formulas, and a tiny run of the task."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from damage import flip_a_bit_of_a_zip_entry
from test_families_exact import Double
from torch.utils.data import TensorDataset

from physml import metrics
from physml.outputs import Ensemble
from physml.tasks import Context, get
from physml.tasks import updates as task
from physml.tasks.updates.guard import _guard_row
from physml.training import CheckpointError
from physml.updates import EnsembleSpread, NonFiniteAnswer, guard

SMALL = {
    "burgers": replace(task.EQUATION["burgers"], nx=17, t_end=0.05),
    "heat": replace(task.EQUATION["heat"], nx=17, t_end=0.05),
}
TINY = task.Scale(task.Size(4, 4, 1, 16, 4, 8), task.Size(4, 4, 1, 24, 4, 8), 10, 8)
"""A scale for whole runs of the task in seconds (with ``SMALL``'s Burgers)."""


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


def test_the_flip_curve_at_the_median_error_is_the_reported_nfr():
    """The curve's τ grid in float64: its 1× point is τ itself, so it counts the median-error
    sample (e_old = τ exactly) as right, as ``nfr`` does."""
    problem, generator = task.equation("burgers"), torch.Generator().manual_seed(0)
    unit = task.CURVE.index(1.0)
    for _ in range(20):
        y = torch.randn(9, 1, problem.nx, generator=generator, dtype=torch.float64)
        old = y + 0.1 * torch.randn(9, 1, problem.nx, generator=generator, dtype=torch.float64)
        e_old = metrics.relative_l2(old, y, reduction="none")
        median = int((e_old == e_old.median()).nonzero()[0])
        new = old.clone()
        new[median] = y[median] + 3 * (old[median] - y[median])  # only it gets worse: one flip
        scores = task.update_scores(problem, old, new, y)
        assert scores["nfr"] == pytest.approx(1 / 9)
        assert scores["nfr_curve"][unit] == scores["nfr"]


def test_a_cut_needs_flips_to_cut():
    assert task.nfr_cut(0.01, 0.04) == pytest.approx(0.75)
    assert task.nfr_cut(0.0, 0.0) == 0.0  # nothing to remove: nothing earned, not a 100% cut
    assert task.nfr_cut(0.02, 0.0) == 0.0  # and no -3e10 when the method adds flips


def test_the_level_one_range_check_sends_every_outside_input_to_the_solver():
    problem = SMALL["burgers"]
    train = task.pairs(problem, 8, 0)
    test = task.pairs(problem, 5, task.TEST_SEED, outside=2)
    x, y = train.tensors
    checks = task.guard_checks(problem, x, x, y, 1.0)  # validation: the training pairs
    assert [c.name for c in checks] == ["input_range", "boundary"]
    fails, _ = checks[0](*test.tensors)
    assert fails[3:].all() and checks[0].threshold == 0.0
    fails, scores = checks[1](*train.tensors)  # the solver meets its walls
    assert not fails.any() and scores.max() < 1e-6


def test_the_heat_mass_balance_holds_for_the_solver_to_round_off():
    """At the benchmark's grid and step; what is left is ETDRK4's O(h⁴) quadrature of the flux."""
    problem = task.EQUATION["heat"]
    t = torch.linspace(0, problem.t_end, 20_001, dtype=torch.float64)
    flux = problem.flux * torch.sin(torch.pi * t)  # right wall; the left one is insulated
    by_quadrature = problem.coefficient * torch.trapezoid(flux, t)
    assert task.inflow(problem) == pytest.approx(float(by_quadrature), rel=1e-8)
    u0 = task.initial_fields(problem, [1, 2, 3], torch.tensor([0.5, 1.0, 4.0]))
    u_end = task.Solver(problem).solve(u0)
    balance = task.mass_balance(problem)
    residual = balance.residual(u_end[:, None], u0[:, None])
    assert residual.shape == (3, 1, 1) and residual.abs().max() < 1e-11
    assert task.inflow(problem) > 0.05  # the balance is not met by a field left as it was
    shifted = u_end + 0.01  # the scheme's mass of a constant c: dx (3/2 + n − 4 + 3/2) c = c
    assert balance.residual(shifted[:, None], u0[:, None]).flatten().tolist() == pytest.approx(
        [0.01] * 3, rel=1e-8
    )
    with pytest.raises(ValueError, match="heat problem"):
        task.inflow(SMALL["burgers"])


def test_an_ensemble_is_guarded_with_its_spread_and_heat_with_its_mass():
    problem = SMALL["heat"]
    x, y = task.pairs(problem, 6, 0).tensors
    members = [task.fno(task.Size(4, 4, 1, 6, 1), seed) for seed in (0, 1)]
    ensemble = task.MemberEnsemble(members)
    whole = task.predict(ensemble, x)
    assert torch.equal(task.predict(ensemble, x, batch=4).samples, whole.samples)  # in batches
    assert torch.allclose(whole.samples[1], members[1](x).detach())
    checks = task.guard_checks(problem, x, x, whole, 1.0)
    assert [c.name for c in checks] == ["input_range", "boundary", "mass", "spread"]
    for check in checks:  # level 1: the largest validation score passes
        assert not check(x, whole)[0].any()
    mass = checks[2].score(x, y)  # the solver's own answers, float32
    assert mass.max() < 1e-6
    with pytest.raises(ValueError, match="at least 2 models"):
        task.MemberEnsemble(members[:1])


class Diverging(torch.nn.Module):
    """``x ↦ 2x``, NaN where the input's first value exceeds 1; ``seen`` counts its inputs."""

    seen = 0

    def forward(self, x):
        self.seen += len(x)
        return torch.where(x[:, :1, :1] > 1, float("nan"), 2 * x)


def test_a_member_answering_nan_sends_that_input_to_the_solver_and_the_rest_to_the_ensemble():
    x = torch.full((4, 1, 5), 0.5)
    x[2, 0, 0] = 1.5
    ensemble = task.MemberEnsemble([torch.nn.Identity(), Diverging()])
    with pytest.raises(NonFiniteAnswer, match=r"members \[1\] .* inputs \[2\] of the batch of 4"):
        ensemble(x)
    sent = []

    def solver(inputs):
        sent.append(inputs)
        return inputs + 1000

    check = EnsembleSpread(1e9, relative=True)
    diverging = ensemble.members[1]
    diverging.seen = 0
    result = guard(ensemble, [check], solver)(x)
    assert diverging.seen == 4  # the refusal holds the answers to the others: not asked again
    assert result.fallback.tolist() == [False, False, True, False]
    assert len(sent) == 1 and torch.equal(sent[0], x[2:3])
    assert torch.equal(result.output[2], x[2] + 1000)
    assert torch.equal(result.output[[0, 1, 3]], 1.5 * x[[0, 1, 3]])  # (x + 2x) / 2
    assert result.report()[2]["fired"] == ["finite"]


def test_a_finished_run_without_its_recorded_cost_reports_it_unknown(tmp_path):
    x = torch.randn(8, 1, 16, generator=torch.Generator().manual_seed(0))
    data, size = TensorDataset(x, x), task.Size(4, 2, 1, 8, 2, 4)
    first = task.train(task.fno(size, 0), task.relative_l2_loss, data, size, 0, tmp_path)
    cost = tmp_path / "train_s.json"
    assert first.train_s > 0 and json.loads(cost.read_text())["train_s"] == first.train_s
    again = task.train(task.fno(size, 0), task.relative_l2_loss, data, size, 0, tmp_path)
    assert again.train_s == first.train_s  # finished: its recorded cost
    cost.unlink()  # as if killed between the last checkpoint and this write
    unknown = task.train(task.fno(size, 0), task.relative_l2_loss, data, size, 0, tmp_path)
    assert math.isnan(unknown.train_s) and not cost.exists()
    assert math.isnan(task.mean_and_se([{"train_s": unknown.train_s}], ("train_s",))["train_s"])


@pytest.mark.parametrize(
    "text",
    [
        '{"train_s": 9.0',  # cut short
        "[9.0]",  # no object
        "{}",  # no seconds
        '{"train_s": "9.0"}',  # seconds as text
        '{"train_s": -9.0}',
        '{"train_s": Infinity}',
    ],
)
def test_a_finished_run_with_a_damaged_cost_record_reports_it_unknown_with_a_warning(
    tmp_path, text
):
    """A finished run's cost cannot be measured again without training it again: a damaged
    ``train_s.json`` gives NaN (unknown, as a missing one) and a one-line warning naming it."""
    x = torch.randn(8, 1, 16, generator=torch.Generator().manual_seed(0))
    data, size = TensorDataset(x, x), task.Size(4, 2, 1, 8, 2, 4)
    task.train(task.fno(size, 0), task.relative_l2_loss, data, size, 0, tmp_path)
    cost = tmp_path / "train_s.json"
    cost.write_text(text)
    with pytest.warns(UserWarning) as caught:
        again = task.train(task.fno(size, 0), task.relative_l2_loss, data, size, 0, tmp_path)
    assert math.isnan(again.train_s)
    said = [str(w.message) for w in caught if str(cost) in str(w.message)]
    assert len(said) == 1 and "\n" not in said[0] and "unknown" in said[0]
    assert cost.read_text() == text  # left for the user to repair or delete


def test_a_resumed_run_scales_its_cpu_seconds_to_all_steps(tmp_path, monkeypatch):
    """A fake CPU clock advances 1.5 s per step: a 600-step run (a checkpoint at step 500) killed
    at step 550 resumes from 500, times the last 100 steps (150 s) and reports 150 × 600 / 100 =
    900 s, which a finished run reports again."""
    now, stop_at = [0.0], [550]
    monkeypatch.setattr(task.models.time, "process_time", lambda: now[0])
    data = TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
    size = task.Size(4, 2, 1, 8, 600, 4)

    def loss(model, batch):
        now[0] += 1.5
        if now[0] == 1.5 * stop_at[0]:
            raise KeyboardInterrupt
        return model(batch[0]).square().mean()

    def run():
        now[0] = 0.0
        return task.train(torch.nn.Linear(3, 1), loss, data, size, 0, tmp_path)

    with pytest.raises(KeyboardInterrupt):
        run()
    assert not (tmp_path / "train_s.json").exists()
    stop_at[0] = -1
    assert run().train_s == 900.0
    assert now[0] == 150.0  # 100 steps: resumed from step 500, not run again from 0
    assert json.loads((tmp_path / "train_s.json").read_text()) == {"train_s": 900.0}
    assert run().train_s == 900.0
    assert now[0] == 0.0  # no step: the recorded cost


def test_an_ensemble_sweep_reports_the_mean_and_the_first_member():
    problem = SMALL["burgers"]
    train, test = task.pairs(problem, 8, 0), task.pairs(problem, 5, task.TEST_SEED, outside=2)
    members = [task.fno(task.Size(4, 4, 1, 8, 1), seed) for seed in (0, 1)]
    rows = task.guard_sweep(
        problem, task.MemberEnsemble(members), train.tensors[0], train.tensors[0], test, (1.0,), 2
    )
    methods = [row["method"] for row in rows]
    assert methods == ["solver", "surrogate", "surrogate-member", "guard"]
    x, y = test.tensors
    alone = metrics.relative_l2(task.predict(members[0], x), y, reduction="none").max()
    assert rows[2]["max_error"] == pytest.approx(float(alone))
    mean = (members[0](x) + members[1](x)).detach() / 2
    assert rows[1]["max_error"] == pytest.approx(
        float(metrics.relative_l2(mean, y, reduction="none").max()), rel=1e-5
    )
    guarded = rows[3]
    assert set(guarded["fired"]) == {"input_range", "boundary", "spread"}
    assert guarded["outside_caught"] == 2 and set(guarded["thresholds"]) == set(guarded["fired"])


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
        task.guard_checks(SMALL["heat"], x, x, x, 0.0)


def test_tiny_run_writes_figures_and_rows(tmp_path, monkeypatch):
    monkeypatch.setitem(task.EQUATION, "burgers", SMALL["burgers"])
    monkeypatch.setitem(task.SCALES, "toy", TINY)
    rows = get(task.NAME).run(Context(tmp_path, "toy", quiet=True))
    folder = tmp_path / task.NAME
    for name in ("nfr-curves-toy-seed0.png", "guard-curve-toy-seed0.png"):
        assert (folder / name).stat().st_size > 5_000
    summary = json.loads((folder / "summary-toy-seed0.json").read_text())
    assert set(summary["update"]) == {"retrain", "pc-focal"}
    guard = [row for row in summary["guard"] if row["method"] == "guard"]
    assert len(guard) == len(task.LEVELS) and all(row["outside_caught"] == 2 for row in guard)
    solver = next(row for row in summary["guard"] if row["method"] == "solver")
    assert solver["max_error"] == 0.0
    assert {row.metric for row in rows} >= {"rel_l2", "nfr", "max_error", "speedup"}


def test_runs_of_two_seeds_sit_side_by_side_targets_judged_at_full_size_threads_come_back(
    tmp_path, monkeypatch
):
    """``physml run`` twice into one --out, seeds 0 and 1: each seed trains into its own folder
    (no refused resume) and names its summary, rows and figures by its size and seed, so the
    second run leaves the first's in place and the index captions every figure; at full size the
    benchmark's two targets are judged; the thread count comes back."""
    from physml.cli import main

    monkeypatch.setitem(task.EQUATION, "burgers", SMALL["burgers"])
    monkeypatch.setitem(task.SCALES, "full", TINY)
    folder = tmp_path / task.NAME
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for seed in (0, 1):
            code = main(["run", task.NAME, "--size", "full", "--seed", str(seed),
                         "--out", str(tmp_path), "--quiet"])  # fmt: skip
            assert torch.get_num_threads() == 2
            rows = json.loads((folder / f"rows-full-seed{seed}.json").read_text())["rows"]
            judged = {row["metric"]: row["ok"] for row in rows if row["ok"] is not None}
            assert set(judged) == {"nfr_cut", "max_error"}
            assert code == (0 if all(judged.values()) else 1)
            summary = json.loads((folder / f"summary-full-seed{seed}.json").read_text())
            assert judged["max_error"] == summary["guard_done_when"]["holds"]  # one verdict
            update = summary["update"]  # the row judges the cut by the one rule, nfr_cut
            cut = task.nfr_cut(update["pc-focal"]["nfr"], update["retrain"]["nfr"])
            assert judged["nfr_cut"] is (cut >= 0.5)
            assert all("full benchmark" not in row["target"] for row in rows)
    finally:
        torch.set_num_threads(threads)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    for seed in (0, 1):
        assert (folder / f"full-seed{seed}" / "old").is_dir()
        summary = json.loads((folder / f"summary-full-seed{seed}.json").read_text())
        assert summary["settings"]["seed"] == seed and summary["settings"]["size"] == "full"
        for figure in ("nfr-curves", "guard-curve"):
            assert (folder / f"{figure}-full-seed{seed}.png").stat().st_size > 5_000
            assert f"<figcaption>{figure}-full-seed{seed}: " in page  # a caption, not the path


def test_cached_pairs_are_solved_again_for_other_settings(tmp_path, monkeypatch):
    path, problem = tmp_path / "pairs.pt", SMALL["heat"]
    first = task.cached_pairs(path, problem, 3, 0)
    solved = []
    monkeypatch.setattr(task.data, "pairs", lambda *a: solved.append(a) or task.pairs(*a))
    again = task.cached_pairs(path, problem, 3, 0)
    assert solved == [] and torch.equal(again.tensors[1], first.tensors[1])
    for other in (
        (problem, 3, 5),  # another first seed, same count: used to be read back
        (replace(problem, coefficient=0.1), 3, 0),
        (replace(problem, t_end=0.04), 3, 0),
    ):
        data = task.cached_pairs(path, *other)
        assert torch.equal(data.tensors[1], task.pairs(*other).tensors[1])
    assert len(solved) == 3


def test_cached_pairs_are_solved_again_under_another_seed_scheme_only(tmp_path, monkeypatch):
    from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme

    path, problem = tmp_path / "pairs.pt", SMALL["heat"]
    with seed_scheme(SEED_SCHEME):
        first = task.cached_pairs(path, problem, 3, 0)
    with seed_scheme(MANUAL_SEED_SCHEME):
        manual = task.pairs(problem, 3, 0)
    assert not torch.equal(manual.tensors[0], first.tensors[0])  # the schemes draw apart
    solved = []
    monkeypatch.setattr(task.data, "pairs", lambda *a: solved.append(a) or task.pairs(*a))
    for scheme, expected, solves in (
        (MANUAL_SEED_SCHEME, manual, 1),  # made under the default: not reused
        (MANUAL_SEED_SCHEME, manual, 1),  # made under this one: reused
        (SEED_SCHEME, first, 2),
        (SEED_SCHEME, first, 2),
    ):
        with seed_scheme(scheme):
            data = task.cached_pairs(path, problem, 3, 0)
        assert len(solved) == solves
        assert all(torch.equal(a, b) for a, b in zip(data.tensors, expected.tensors, strict=True))


def test_cached_pairs_kept_without_a_seed_scheme_are_solved_again(tmp_path, monkeypatch):
    from dataclasses import asdict

    from pdes.problems import SEED_SCHEME, seed_scheme
    from physml.io import save_torch_file

    path, problem = tmp_path / "pairs.pt", SMALL["heat"]
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(problem).items()}
    key = {**settings, "count": 3, "first_seed": 0, "outside": 0}  # as kept before the scheme
    x = torch.zeros(3, 1, problem.nx)
    solved = []
    monkeypatch.setattr(task.data, "pairs", lambda *a: solved.append(a) or task.pairs(*a))
    save_torch_file(path, {"key": {**key, "seed_scheme": SEED_SCHEME}, "x": x, "y": x})
    with seed_scheme(SEED_SCHEME):  # control: the same key naming the scheme is reused
        assert torch.equal(task.cached_pairs(path, problem, 3, 0).tensors[0], x)
    assert solved == []
    save_torch_file(path, {"key": key, "x": x, "y": x})
    data = task.cached_pairs(path, problem, 3, 0)
    assert solved == [(problem, 3, 0, 0)]
    drawn = task.pairs(problem, 3, 0)
    assert all(torch.equal(a, b) for a, b in zip(data.tensors, drawn.tensors, strict=True))


def test_cached_pairs_with_a_flipped_bit_are_solved_again(tmp_path, monkeypatch):
    path, problem = tmp_path / "pairs.pt", SMALL["heat"]
    first = task.cached_pairs(path, problem, 3, 0)
    flip_a_bit_of_a_zip_entry(path)
    solved = []
    monkeypatch.setattr(task.data, "pairs", lambda *a: solved.append(a) or task.pairs(*a))
    again = task.cached_pairs(path, problem, 3, 0)
    assert solved == [(problem, 3, 0, 0)] and torch.equal(again.tensors[0], first.tensors[0])
    assert torch.equal(task.cached_pairs(path, problem, 3, 0).tensors[1], first.tensors[1])


class NanAt(torch.nn.Module):
    """``x ↦ 3x`` with NaN at one entry ``(sample, 0, position)`` of each listed sample."""

    def __init__(self, samples: list[int], position: int = 3) -> None:
        super().__init__()
        self.samples, self.position = samples, position

    def forward(self, x):
        out = 3 * x
        out[self.samples, 0, self.position] = float("nan")
        return out


def test_a_member_ensemble_refuses_a_sample_with_one_nan_value_and_keeps_the_others():
    x = torch.arange(20.0).reshape(4, 1, 5)
    ensemble = task.MemberEnsemble([torch.nn.Identity(), NanAt([1])])
    with pytest.raises(NonFiniteAnswer, match=r"members \[1\] .* inputs \[1\]") as caught:
        ensemble(x)
    assert caught.value.samples == (1,)
    kept = caught.value.answer.samples  # (member, 3, 1, 5): the samples 0, 2, 3
    assert torch.equal(kept[0], x[[0, 2, 3]]) and torch.equal(kept[1], 3 * x[[0, 2, 3]])
    everywhere = task.MemberEnsemble([NanAt([0, 1, 2, 3]), torch.nn.Identity()])
    with pytest.raises(NonFiniteAnswer, match=r"inputs \[0, 1, 2, 3\]") as caught:
        everywhere(x)
    assert caught.value.answer is None  # nothing left to answer with


def test_the_burgers_fallback_decays_a_small_sine_as_the_heat_equation_does():
    """At amplitude 1e-3 the advection is O(1e-6): ``u(x, T) = A e^{−νπ²T} sin(πx)`` to ~2e-4
    (measured 1.7e-4; a viscosity 4 % off misses by 1.8e-3)."""
    problem = SMALL["burgers"]
    x = torch.linspace(0, 1, problem.nx, dtype=torch.float64)
    u0 = 1e-3 * torch.sin(math.pi * x)[None]
    exact = u0 * math.exp(-problem.coefficient * math.pi**2 * problem.t_end)
    u_end = task.Solver(problem).solve(u0)
    assert float((u_end - exact).norm() / exact.norm()) < 5e-4


@pytest.mark.filterwarnings("ignore:solve_burgers")
def test_the_burgers_fallback_takes_a_smaller_step_for_a_peak_beyond_its_range():
    """A spike of peak 40 (4× the largest amplitude's allowance): finite, and within its peak
    (Burgers' maximum principle with zero walls)."""
    problem = task.EQUATION["burgers"]
    x = torch.linspace(0, 1, problem.nx, dtype=torch.float64)
    spike = 40 * torch.sin(math.pi * x)[None] ** 8
    u_end = task.Solver(problem).solve(spike)
    assert torch.isfinite(u_end).all() and float(u_end.abs().max()) <= 40


@pytest.mark.filterwarnings("ignore:solve_burgers")
def test_a_fallback_answer_does_not_depend_on_its_batch():
    """One solve per sample in float64: a sample's answer is the same beside a spike that needs
    a smaller step, and float32 inputs get the float64 solve rounded to float32."""
    problem = task.EQUATION["burgers"]
    solver, x = task.Solver(problem), torch.linspace(0, 1, problem.nx, dtype=torch.float64)
    u0 = task.initial_fields(problem, [1], torch.tensor([1.0]))
    both = torch.cat([u0, 40 * torch.sin(math.pi * x)[None] ** 8])[:, None]  # (2, 1, nx)
    alone = solver.solve(u0)
    assert torch.equal(solver(both)[0, 0], alone[0])
    single = both.float()
    answer = solver(single)
    assert answer.dtype == torch.float32
    assert torch.equal(answer[0], solver.solve(single[0].double()).float())


def test_rms_of_a_scaled_pair_by_hand():
    x = torch.tensor([[[3.0, -4.0, 0.0, 0.0]], [[1.0, -1.0, 1.0, -1.0]]])
    assert task.rms(x).tolist() == [[2.5], [1.0]]  # √((9 + 16) / 4), √(4 / 4)
    u0 = task.initial_fields(SMALL["heat"], [7], torch.tensor([0.75]))
    assert float(task.rms(u0[:, None].float())) == pytest.approx(0.75, rel=1e-6)


def test_pairs_of_every_count_each_seed_and_all_outside():
    problem = SMALL["burgers"]
    data = task.pairs(problem, 17, first_seed=0)  # more than one chunk of 16 solves
    x, y = data.tensors
    assert x.shape == y.shape == (17, 1, problem.nx)
    assert float(metrics.relative_l2(task.Solver(problem)(x), y)) < 1e-5
    beyond = task.rms(task.pairs(problem, 2, 0, outside=2).tensors[0])[:, 0]
    assert ((beyond >= problem.outside[0] - 1e-6) & (beyond <= problem.outside[1] + 1e-6)).all()
    other = task.rms(task.pairs(problem, 2, 100).tensors[0])[:, 0]  # another draw of amplitudes
    assert not torch.allclose(other, task.rms(x[:2])[:, 0], rtol=1e-3)


def test_cached_pairs_are_solved_again_for_another_count_or_outside(tmp_path):
    path, problem = tmp_path / "pairs.pt", SMALL["heat"]
    task.cached_pairs(path, problem, 3, 0)
    for count, outside in ((3, 1), (4, 1)):
        data = task.cached_pairs(path, problem, count, 0, outside)
        x = data.tensors[0]
        assert len(x) == count
        beyond = task.rms(x)[count - outside :, 0]
        assert (beyond >= problem.outside[0] - 1e-6).all()


def test_mean_and_standard_error_over_seeds_by_hand():
    runs = [{"x": 1.0, "nfr_curve": [0.0, 1.0]}, {"x": 2.0, "nfr_curve": [1.0, 1.0]},
            {"x": 4.0, "nfr_curve": [0.5, 1.0]}]  # fmt: skip
    out = task.mean_and_se(runs, ("x",))
    # mean 7/3; sample variance (16 + 1 + 25) / 9 / 2 = 7/3; se = √(7/3) / √3 = √7 / 3
    assert out["x"] == pytest.approx(7 / 3) and out["x_se"] == pytest.approx(math.sqrt(7) / 3)
    assert out["nfr_curve"] == pytest.approx([0.5, 1.0])
    assert math.isnan(task.mean_and_se(runs[:1], ("x",))["x_se"])  # one seed: no spread to read


def test_the_update_target_at_its_boundaries():
    """Cut 50% and rel_l2 2% worse: met; a hair less cut or a hair more error: missed."""
    rows = [
        update_row("burgers-fno", "retrain", None, 0.5, 1.0, 0.5, 1.0),
        update_row("burgers-fno", "pc-focal", 1.0, 0.25, 1.02, 0.25, 1.02),
        update_row("burgers-fno", "pc-focal", 2.0, 0.2500001, 1.0, 0.2500001, 1.0),
        update_row("burgers-fno", "pc-focal", 3.0, 0.0, 1.0201, 0.0, 1.0201),
        update_row("burgers-fno", "warm", 0.0, 0.4, 1.1, 0.0, 1.0),
    ]
    judged = {c["lambda"]: c for c in task.against_retrain(rows, "burgers-fno", "nfr", "rel_l2")}
    assert judged[1.0]["holds"] and judged[1.0]["nfr_cut"] == 0.5
    assert judged[1.0]["rel_l2_ratio"] == pytest.approx(1.02)
    assert not judged[2.0]["holds"] and not judged[3.0]["holds"]
    verdict = task.update_done_when(rows)
    assert verdict["burgers-fno"]["lambda"] == 1.0 and verdict["holds"]
    assert verdict["burgers-fno"]["val_holds"] and "val_lambda" not in verdict["burgers-fno"]
    assert verdict["burgers-fno"]["warm_nfr_cut"] == pytest.approx(1 - 0.4 / 0.5)
    assert verdict["burgers-fno"]["warm_rel_l2_ratio"] == pytest.approx(1.1)
    missing = rows + [  # a BOON case missing the target does not judge the FNO's verdict
        update_row("burgers-boon", "retrain", None, 0.5, 1.0, 0.5, 1.0),
        update_row("burgers-boon", "pc-focal", 1.0, 0.5, 1.0, 0.5, 1.0),
    ]
    assert task.update_done_when(missing)["holds"]
    assert not task.update_done_when(missing[5:])["holds"]  # no FNO case: nothing shown


def test_the_guard_target_at_its_boundaries():
    """max_error 1e-2 at 3× the solver with the surrogate alone at 1e-1: met; each a hair off:
    missed. The fastest good level is reported."""

    def rows(alone=0.1, error=0.01, speedup=3.0):
        return [
            {"method": "surrogate", "level": None, "max_error": alone, "speedup": 50.0},
            {"method": "surrogate-member", "level": None, "max_error": 0.3, "speedup": 90.0},
            {"method": "guard", "level": 1.0, "max_error": error, "speedup": speedup},
            {"method": "guard", "level": 0.9, "max_error": 0.02, "speedup": 9.0},
        ]

    verdict = task.guard_done_when(rows())
    assert verdict["holds"] and verdict["level"] == 1.0 and verdict["speedup"] == 3.0
    assert verdict["surrogate_max_error"] == 0.1 and verdict["member_max_error"] == 0.3
    for missed in ({"alone": 0.0999}, {"error": 0.0100001}, {"speedup": 2.999}):
        assert not task.guard_done_when(rows(**missed))["holds"]
    faster = rows() + [{"method": "guard", "level": 0.8, "max_error": 0.001, "speedup": 5.0}]
    assert task.guard_done_when(faster)["level"] == 0.8


def test_a_guard_row_by_hand():
    """Errors 0, 0.01, …, 0.99 (relative L2 of ``(1 + e) · truth``), the last 2 outside;
    timings 0.5 s against the solver's 2 s."""
    errors = torch.arange(100, dtype=torch.float64) / 100
    truth = torch.ones(100, 1, 4, dtype=torch.float64)
    output = truth * (1 + errors[:, None, None])
    row = _guard_row("guard", 0.9, 0.25, output, truth, 0.5, 2.0, 100, 2)
    assert row["max_error"] == pytest.approx(0.99) and row["max_error_inside"] == pytest.approx(
        0.97
    )
    assert row["p99_error"] == pytest.approx(float(np.quantile(errors.numpy(), 0.99)))
    assert row["mean_error"] == pytest.approx(0.495)
    assert row["throughput"] == 200.0 and row["speedup"] == 4.0


def test_timed_reports_the_fastest_of_its_repeats_and_the_last_result(monkeypatch):
    """A fake CPU clock: calls of 2, 0.5 and 3 seconds give 0.5, whichever call it was."""
    from physml.tasks.updates import guard

    ticks = iter([0.0, 2.0, 10.0, 10.5, 20.0, 23.0])
    monkeypatch.setattr(guard.time, "process_time", lambda: next(ticks))
    calls = []
    result, seconds = task.timed(lambda: calls.append(1) or len(calls), repeats=3)
    assert (result, seconds) == (3, 0.5)


def test_the_range_check_is_the_training_range_and_the_walls_are_read_at_t():
    """Training RMS 0.6-0.8, validation RMS up to 1.0: the level-1 threshold is validation's
    largest score in units of the training range, (1.0 − 0.8) / 0.2 = 1. A constant answer meets
    the insulated left wall and misses the right one by its flux ``U sin(πT)``."""
    problem = SMALL["heat"]
    flat = torch.ones(1, 1, problem.nx)
    train = torch.cat([a * flat for a in (0.6, 0.7, 0.8)])
    validation = torch.cat([a * flat for a in (0.5, 0.7, 1.0)])
    checks = task.guard_checks(problem, train, validation, validation, 1.0)
    assert checks[0].threshold == pytest.approx(1.0, rel=1e-5)
    wall = checks[1].score(flat, flat)
    flux = problem.flux * math.sin(math.pi * problem.t_end)
    assert float(wall[0]) == pytest.approx(flux, rel=1e-5)


def test_the_spread_check_is_relative_to_the_mean():
    problem = SMALL["burgers"]
    x = torch.ones(2, 1, problem.nx)
    members = torch.stack([x, 3 * x])  # (member, batch, 1, nx): mean 2x, spread ∝ x
    checks = task.guard_checks(problem, x, x, Ensemble(members), 1.0)
    spread = checks[-1]
    assert spread.name == "spread"
    # members 1 and 3: unbiased std √2 over the mean 2, at either scale
    for scale in (1, 10):
        found = spread.score(x, Ensemble(scale * members))
        assert found.tolist() == pytest.approx([math.sqrt(2) / 2] * 2, rel=1e-12)


def test_physics_flips_are_judged_at_the_old_models_median_wall_error():
    """Old wall errors 0, 0, 0, .01, .02, .03, .04, .1, .5 (median .02), the new model's .03 to
    .11 (mean .07): met before and missed after on the five samples ≤ .02."""
    problem = SMALL["burgers"]
    target = torch.zeros(9, 1, problem.nx, dtype=torch.float64)
    target[:, 0, 1:-1] = 1.0
    old, new = target.clone(), target.clone()
    old[:, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 0.01, 0.02, 0.03, 0.04, 0.1, 0.5])
    new[:, 0, 0] = 0.03 + 0.01 * torch.arange(9)
    scores = task.update_scores(problem, old, new, target)
    assert scores["nfr_physics"] == pytest.approx(5 / 9)
    assert scores["boundary_error"] == pytest.approx(0.07)


def test_the_burgers_fallback_is_accurate_at_the_largest_amplitude_beyond_the_range():
    """Its step is set for the largest amplitude of the problem, outside ones included: within
    1e-6 of a solve with a step of 2.5e-4 (~9× smaller; a step set for the training range alone
    misses by 3e-6 to 6e-6 on these seeds)."""
    from pdes.burgers import solve_burgers

    problem = task.EQUATION["burgers"]
    solver, largest = task.Solver(problem), problem.outside[1]
    u0 = task.initial_fields(problem, [1, 4], torch.full((2,), largest, dtype=torch.float64))
    fine = solve_burgers(u0, solver.grid, problem.coefficient, [0.0, problem.t_end],
                         problem.boundary(), 2.5e-4)[:, -1]  # fmt: skip
    answer = solver(u0[:, None])[:, 0]
    assert ((answer - fine).norm(dim=-1) / fine.norm(dim=-1)).max() < 1e-6


def test_the_focal_and_uniform_losses_weigh_the_gap_by_hand():
    """Old model ``x``, new ``2x``: the gap is ``x²`` per point. Old errors |c| / |1 + c| =
    .048, .2, .053, .5 against τ = 0.1: right on samples 0 and 2, so pc-focal weighs them
    1 + 5 = 6 and the others 1; pc-uniform weighs all 1. λ = 0.5 on top of the data loss."""
    x = torch.rand(4, 1, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.tensor([0.05, 0.25, -0.05, 1.0], dtype=torch.float64)
    batch, old, new = (x, x * (1 + c)[:, None, None]), torch.nn.Identity(), Double()
    gaps = [float(x[i].square().mean()) for i in range(4)]
    data = float(task.method_loss("retrain", old, 0.1, 0.5)(new, batch))
    focal = float(task.method_loss("pc-focal", old, 0.1, 0.5)(new, batch))
    uniform = float(task.method_loss("pc-uniform", old, 0.1, 0.5)(new, batch))
    weights = [6.0, 1.0, 6.0, 1.0]
    assert focal - data == pytest.approx(
        0.5 * sum(w * g for w, g in zip(weights, gaps, strict=True)) / 14
    )
    assert uniform - data == pytest.approx(0.5 * sum(gaps) / 4)


def test_an_fno_has_the_sizes_modes_channels_and_layers():
    """neuralop keeps ``modes // 2 + 1`` real-FFT frequencies: 8 modes → 5."""
    model = task.fno(task.Size(6, 8, 3, 16, 1), seed=0)
    spectral = [p.shape for p in model.parameters() if p.is_complex()]
    assert spectral == [(6, 6, 5)] * 3


def test_a_batch_larger_than_the_data_trains_on_all_of_it():
    x = torch.randn(8, 1, 16, generator=torch.Generator().manual_seed(0))
    size = task.Size(4, 2, 1, 8, 1, batch=32)  # the Trainer refuses a batch beyond its data
    trained = task.train(
        task.fno(size, 0), task.relative_l2_loss, TensorDataset(x, x), size, 0, None
    )
    assert trained.train_s > 0 and not trained.model.training


def test_a_level_beyond_one_is_refused_by_name():
    x = torch.ones(2, 1, 17)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\], got 1.01"):
        task.guard_checks(SMALL["heat"], x, x, x, 1.01)


def test_a_refusal_to_resume_gives_the_callers_remedy(tmp_path):
    x = torch.randn(8, 1, 16, generator=torch.Generator().manual_seed(0))
    size, wider = task.Size(4, 2, 1, 8, 1, 4), task.Size(6, 2, 1, 8, 1, 4)
    data = TensorDataset(x, x)
    task.train(task.fno(size, 0), task.relative_l2_loss, data, size, 0, tmp_path)
    with pytest.raises(CheckpointError, match=r"\(size.hidden 4 → 6\); use another --work or"):
        task.train(
            task.fno(wider, 0), task.relative_l2_loss, data, wider, 0, tmp_path,
            remedy="use another --work",
        )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"\(size.hidden 4 → 6\); use another --out or"):
        task.train(task.fno(wider, 0), task.relative_l2_loss, data, wider, 0, tmp_path)
