"""The conservation-forecast task's run() and target_rows(): how each variant's rows, the targets
and the figures are assembled, with run_variant, the figures and done_when hand-made fakes."""

import json
from types import SimpleNamespace

import pytest

from physml import tasks
from physml.tasks import Context, get
from physml.tasks import conservation_forecast as task


def _row(variant, method, base, **extra):
    return {
        "variant": variant,
        "case": f"{variant}/earthformer",
        "method": method,
        "ce_abs": base + 0.1,
        "mse": base + 0.2,
        "crps": base + 0.3,
        "neg_fraction": base + 0.4,
        "spread": base + 0.5,
        **extra,
    }


CHECKS = [
    {"case": "c", "what": "ce_abs hardc", "value": 1e-9, "target": "<= 1e-06", "met": True},
    {"case": "c", "what": "crps probconserv / raw", "value": 0.9, "target": "< 1", "met": True},
]


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    calls: dict[str, list] = {}
    found = {}

    def run_variant(variant, scale, work, seed, quiet):
        calls.setdefault("run_variant", []).append((variant, scale, work, seed, quiet))
        (work / variant).mkdir(parents=True, exist_ok=True)  # as the real one's data_and_models
        base = 10.0 * len(calls["run_variant"])
        rows = [
            _row(variant, "raw", base),
            _row(variant, "hardc-nonneg", base, error="a member's total is negative"),
            _row(variant, "hardc", base + 1),
        ]
        found[variant] = SimpleNamespace(variant=variant)
        return rows, found[variant]

    def plot(name):
        def fake(path, what):
            calls.setdefault(name, []).append((path, what))

        return fake

    def done_when(rows):
        calls.setdefault("done_when", []).append(list(rows))
        return CHECKS

    monkeypatch.setattr(task, "run_variant", run_variant)
    for name in ("plot_mass", "plot_frame", "plot_correction"):
        monkeypatch.setattr(task, name, plot(name))
    monkeypatch.setattr(task, "done_when", done_when)

    def run(size):
        calls.clear()
        rows = task.run(Context(out=tmp_path, size=size, seed=2, quiet=False))
        return rows

    return SimpleNamespace(calls=calls, run=run, found=found, out=tmp_path)


def test_each_variant_runs_at_the_contexts_scale_in_the_runs_folder(fake_run):
    assert get(task.NAME).run is task.run
    for size in ("toy", "full"):
        fake_run.run(size)
        work = fake_run.out / task.NAME / f"{size}-seed2"
        assert fake_run.calls["run_variant"] == [
            (variant, task.SIZES[size], work, 2, False) for variant in task.VARIANTS
        ]
    assert task.SIZES["toy"] is task.TOY and task.SIZES["full"] is task.FULL


def test_the_rows_give_four_scores_of_every_row_without_an_error_then_the_targets(fake_run):
    rows = fake_run.run("toy")
    conserved, source = task.VARIANTS
    expected = []
    for variant, base in ((conserved, 10.0), (source, 20.0)):
        for method, value in (("raw", base), ("hardc", base + 1)):
            for metric, extra in (
                ("ce_abs", 0.1),
                ("mse", 0.2),
                ("crps", 0.3),
                ("neg_fraction", 0.4),
            ):
                expected.append((f"{variant}/earthformer", f"{metric} {method}", value + extra))
    scored = [(row.case, row.metric, row.value) for row in rows[:-2]]
    assert scored == expected
    assert all(row.target == "" and row.ok is None for row in rows[:-2])
    assert [(row.case, row.metric, row.value, row.target, row.ok) for row in rows[-2:]] == [
        ("c", "ce_abs hardc", 1e-9, "<= 1e-06", True),
        ("c", "crps probconserv / raw", 0.9, "< 1 at full size", None),
    ]
    assert all(row.task == task.NAME for row in rows)


def test_done_when_sees_every_row_of_both_variants_errors_included(fake_run):
    fake_run.run("toy")
    (seen,) = fake_run.calls["done_when"]
    assert [(row["variant"], row["method"]) for row in seen] == [
        (variant, method)
        for variant in task.VARIANTS
        for method in ("raw", "hardc-nonneg", "hardc")
    ]


def test_the_figures_of_each_variant_get_its_own_results_and_names(fake_run):
    fake_run.run("full")
    folder = fake_run.out / task.NAME
    for name, prefix in (
        ("plot_mass", "mass"),
        ("plot_frame", "frame"),
        ("plot_correction", "correction"),
    ):
        assert fake_run.calls[name] == [
            (folder / f"{prefix}-{variant}-full-seed2.png", fake_run.found[variant])
            for variant in task.VARIANTS
        ]


def test_a_full_size_run_judges_every_target(fake_run):
    rows = fake_run.run("full")
    assert [(row.metric, row.target, row.ok) for row in rows[-2:]] == [
        ("ce_abs hardc", "<= 1e-06", True),
        ("crps probconserv / raw", "< 1", True),
    ]


def test_the_task_trains_and_samples_on_the_cpu_only():
    tasks.check_task_device([get(task.NAME)], "cpu")
    with pytest.raises(ValueError, match=f"--device: {task.NAME} runs on the CPU only, got 'cuda'"):
        tasks.check_task_device([get(task.NAME)], "cuda")


def test_the_summary_keeps_settings_scale_rows_and_checks(fake_run):
    fake_run.run("full")
    summary = json.loads((fake_run.out / task.NAME / "summary-full-seed2.json").read_text())
    assert summary["settings"]["size"] == "full" and summary["settings"]["seed"] == 2
    assert summary["scale"] == json.loads(json.dumps(task.FULL.setup()))
    assert [(row["variant"], row["method"]) for row in summary["rows"]] == [
        (variant, method)
        for variant in task.VARIANTS
        for method in ("raw", "hardc-nonneg", "hardc")
    ]
    assert summary["rows"][1]["error"] == "a member's total is negative"
    assert summary["done_when"] == CHECKS
    assert not (fake_run.out / task.NAME / "summary-toy-seed2.json").exists()


def _check(what, met=False):
    return {"case": "k", "what": what, "value": 0.5, "target": "< 1", "met": met}


@pytest.mark.parametrize(
    "what",
    [
        "ce_abs hardc",
        "ce_abs hardc-nonneg",
        "ce_abs probconserv",
        "ce_abs probconserv_shrunk",
        "ce_abs kc-probconserv",
        "neg_fraction hardc-nonneg",
        "neg_fraction raw-nonneg",
        "ce_abs change probconserv-nonneg",
        "feasible hardc-nonneg",
        "feasible probconserv-nonneg",
        "feasible probconserv_shrunk-nonneg",
        "feasible kc-probconserv-nonneg",
    ],
)
def test_exact_mass_and_non_negativity_after_an_update_are_judged_at_toy_size(what):
    for met in (True, False):
        (row,) = task.target_rows([_check(what, met)], "toy")
        assert (row.task, row.case, row.metric, row.value) == (task.NAME, "k", what, 0.5)
        assert row.target == "< 1" and row.ok is met


@pytest.mark.parametrize(
    "what",
    [
        "ce_abs raw",
        "ce_abs kc",
        "crps probconserv / raw",
        "mse hardc / raw",
        "ce_abs raw / kc",
        "feasible raw-nonneg",
        "feasible kc-nonneg",
        "spearman_spread probconserv",
        "correction_cv hardc",
        "hardc ce_abs",
    ],
)
def test_the_other_targets_are_judged_at_full_size_only(what):
    (toy,) = task.target_rows([_check(what, met=True)], "toy")
    assert (toy.metric, toy.value, toy.target, toy.ok) == (what, 0.5, "< 1 at full size", None)
    for met in (True, False):
        (full,) = task.target_rows([_check(what, met)], "full")
        assert (full.metric, full.value, full.target, full.ok) == (what, 0.5, "< 1", met)


def test_target_rows_keep_the_checks_order():
    checks = [_check("crps a"), _check("ce_abs hardc", True), _check("mse b", True)]
    rows = task.target_rows(checks, "toy")
    assert [row.metric for row in rows] == ["crps a", "ce_abs hardc", "mse b"]
    assert [row.ok for row in rows] == [None, True, None]
    assert task.target_rows([], "full") == []
