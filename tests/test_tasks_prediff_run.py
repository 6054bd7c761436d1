"""The prediff-nbody task's run(): which data, models and settings reach each building block, and
how the rows, figures and summary are assembled, with every expensive block a hand-made fake."""

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from test_tasks_prediff_training import _videos

from physml import tasks
from physml.tasks import Context, get
from physml.tasks import prediff as task

T_IN = T_OUT = 4  # the toy scale's
PIXELS = 2
LAMBDAS = (0.3, 1.0, 3.0)  # the sweep's λ (the toy guide's two and one more)
BEST = 1.0  # the fake best_lambda's choice: the sweep's middle row


def _made_videos(count: int, base: float):
    """``count`` videos of ``T_IN + T_OUT`` frames ``1 × 2 × 2``: frame ``t`` of video ``n`` is
    ``base + 10 n + t`` everywhere; energy ``base + n + 0.5 t``."""
    n = torch.arange(count, dtype=torch.float32)[:, None]
    t = torch.arange(T_IN + T_OUT, dtype=torch.float32)[None, :]
    frames = (base + 10 * n + t)[..., None, None, None].expand(-1, -1, 1, PIXELS, PIXELS)
    return _videos(frames, (base + n + 0.5 * t).double())


class _Judge(torch.nn.Module):
    """Energy of frames ``(..., T, 1, H, W)`` → ``(..., T)``: the frame's mean (times a weight
    of one, so that a call under autograd would give tensors that need their gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.one = torch.nn.Parameter(torch.ones(()))

    def forward(self, frames):
        return frames.mean((-3, -2, -1)) * self.one


def _forecast(frames, members, offset):
    """``(members, N, T, 1, H, W)``: member ``m`` is ``frames + offset + 100 m``."""
    shift = offset + 100 * torch.arange(members, dtype=frames.dtype)
    return SimpleNamespace(samples=frames[None] + shift[:, None, None, None, None, None])


def _scores(forecast):
    """Scores that name the forecast: its first sample value, then small offsets."""
    first = float(forecast.samples[0, 0, 0, 0, 0, 0])
    return {
        "mse": first + 0.1,
        "ssim": first + 0.2,
        "crps": first + 0.3,
        "spread_skill": first + 0.4,
        "energy_error": first + 0.5,
        "energy_per_lead": [first + lead for lead in range(T_OUT)],
    }


@pytest.fixture
def fake_run(monkeypatch, tmp_path, request):
    """Replace every expensive block; returns the calls made, by block. The autoencoder's and
    the denoiser's training costs are ``request.param`` where given, else 1.5 s and 2.5 s."""
    return _fake_run(monkeypatch, tmp_path, getattr(request, "param", (1.5, 2.5)))


def _fake_run(monkeypatch, tmp_path, costs, quiet=False):
    """:func:`fake_run`'s run, with ``costs`` and a context ``quiet`` or not."""
    calls: dict[str, list] = {}
    data = {
        "train": _made_videos(5, 1000.0),
        "validation": _made_videos(2, 2000.0),
        "test": _made_videos(5, 3000.0),  # more than the toy scale's 4 intensity contexts
    }
    judge, guide = _Judge(), SimpleNamespace(name="guide")
    monkeypatch.setattr(task, "TOY_GUIDE", dataclasses.replace(task.TOY_GUIDE, lambdas=LAMBDAS))

    def record(name, result):
        def fake(*args, **kwargs):
            calls.setdefault(name, []).append((args, kwargs))
            return result(*args, **kwargs) if callable(result) else result

        monkeypatch.setattr(task, name, fake)

    record("videos", data)
    record(
        "trained_prediff",
        (
            "prediff",
            SimpleNamespace(model="autoencoder", train_s=costs[0]),
            SimpleNamespace(model="prediff", train_s=costs[1]),
        ),
    )
    record("train_guide", SimpleNamespace(model=guide))
    record("train_judge", SimpleNamespace(model=judge))
    record("judge_error", (0.25, "unused", [0.1, 0.2, 0.3, 0.4]))
    record("sample", lambda prediff, x, members, *rest, **options: _forecast(x, members, 0.0))
    record("frame_energy_control", lambda guide, energy0, lam: ("control", lam))
    record(
        "controlled_sample",
        lambda _, control, x, energy0, members, *rest, **options: _forecast(
            x, members, 1e4 * control[1]
        ),
    )
    record("evaluate_ensemble", lambda forecast, *rest: _scores(forecast))
    record("best_lambda", lambda sweep, reference: sweep[1])
    record(
        "intensity_rows",
        lambda *args, **options: [
            {"method": "prediff", "n": -2, "miss_sigma": 9.0},
            {"method": "prediff-kc", "n": -2, "miss_sigma": 0.5},
            {"method": "prediff-kc", "n": 4, "miss_sigma": 0.75},
        ],
    )
    record(
        "done_when",
        [("energy error", 1.25, "< 2", True), ("intensity", 3.5, "< 1", False)],
    )
    record("plot_strip", None)
    record("plot_energy", None)
    context = Context(out=tmp_path, size="full", seed=3, quiet=quiet)
    rows = task.run(context)
    return SimpleNamespace(
        calls=calls, rows=rows, data=data, judge=judge, guide=guide, out=tmp_path
    )


def _only(calls, name):
    assert len(calls[name]) == 1, name
    return calls[name][0][0]


def test_the_toy_scale_the_fakes_rely_on():
    assert get(task.NAME).run is task.run
    assert task.SIZES["full"] is task.TOY and task.TOY.t_in == T_IN and task.TOY.t_out == T_OUT
    assert task.TOY.members == 4 and task.TOY.intensity_contexts == 4


def test_the_task_trains_and_samples_on_the_cpu_only():
    tasks.check_task_device([get(task.NAME)], "cpu")
    with pytest.raises(ValueError, match=f"--device: {task.NAME} runs on the CPU only, got 'cuda'"):
        tasks.check_task_device([get(task.NAME)], "cuda")


def test_the_models_train_on_the_training_videos_in_the_toy_folder(fake_run):
    calls, data, work = fake_run.calls, fake_run.data, fake_run.out / task.NAME / "toy-seed3"
    assert work.is_dir() and not (fake_run.out / task.NAME / "full-seed3").exists()
    assert _only(calls, "videos") == (task.TOY, 3)
    assert _only(calls, "trained_prediff") == (task.TOY, data["train"], "conv", work, 3, False)
    guide_args = _only(calls, "train_guide")
    assert guide_args[0] is task.TOY and guide_args[1].lambdas == LAMBDAS
    assert guide_args[1:] == (task.TOY_GUIDE, data["train"], work / "guide", 3, False)
    assert _only(calls, "train_judge") == (task.TOY, data["train"], work / "judge", 3, False)


def _context_energy(base, count):
    """Mean of the energies ``base + n + 0.5 t`` over ``t < T_IN``: ``base + n + 0.75``."""
    return torch.tensor([base + n + 0.75 for n in range(count)])


def test_the_sweep_runs_on_validation_videos_and_the_scores_on_test_videos(fake_run):
    calls, data, judge = fake_run.calls, fake_run.data, fake_run.judge
    test_x, test_y = data["test"].frames[:, :T_IN], data["test"].frames[:, T_IN:]
    val_x, val_y = data["validation"].frames[:, :T_IN], data["validation"].frames[:, T_IN:]
    energy0, val_energy0 = _context_energy(3000.0, 5), _context_energy(2000.0, 2)

    judged = _only(calls, "judge_error")
    assert judged[0] is judge and torch.equal(judged[1], test_y) and judged[3] == 3
    assert judged[2].dtype == torch.float32 and torch.equal(judged[2], energy0)

    toy, lambdas = task.TOY, LAMBDAS
    sampled = [args for args, _ in calls["sample"]]
    assert [(args[0], args[2:]) for args in sampled] == [
        ("prediff", (toy.sweep_members, toy.ddim_steps, 3, toy.sample_batch)),
        ("prediff", (toy.members, toy.ddim_steps, 3, toy.sample_batch)),
    ]
    assert torch.equal(sampled[0][1], val_x) and torch.equal(sampled[1][1], test_x)

    controls = [args for args, _ in calls["frame_energy_control"]]
    assert [args[0] for args in controls] == [fake_run.guide] * (len(lambdas) + 1)
    assert [args[2] for args in controls] == [*lambdas, BEST]
    for args, expected in zip(controls, [val_energy0] * len(lambdas) + [energy0], strict=True):
        assert torch.equal(args[1], expected)
    guided = [args for args, _ in calls["controlled_sample"]]
    assert [args[1] for args in guided] == [("control", lam) for lam in (*lambdas, BEST)]
    members = [toy.sweep_members] * len(lambdas) + [toy.members]
    assert [args[4:] for args in guided] == [
        (m, toy.ddim_steps, 3, toy.sample_batch) for m in members
    ]
    xs, es = [val_x] * len(lambdas) + [test_x], [val_energy0] * len(lambdas) + [energy0]
    for args, x, e in zip(guided, xs, es, strict=True):
        assert args[0] == "prediff" and torch.equal(args[2], x) and torch.equal(args[3], e)

    # every scored ensemble: the reference, the sweep, then plain and controlled on test videos
    scored = [args for args, _ in calls["evaluate_ensemble"]]
    assert len(scored) == len(lambdas) + 3
    truths = [val_y] * (len(lambdas) + 1) + [test_y] * 2
    energies = [val_energy0] * (len(lambdas) + 1) + [energy0] * 2
    for args, truth, e in zip(scored, truths, energies, strict=True):
        assert torch.equal(args[1], truth) and torch.equal(args[2], e)
        assert args[3] is judge and args[4] == 0.25 and args[5] == 3
    firsts = [float(args[0].samples[0, 0, 0, 0, 0, 0]) for args in scored]
    assert firsts == [2000.0, 5000.0, 12000.0, 32000.0, 3000.0, 13000.0]

    sweep, reference = _only(calls, "best_lambda")
    assert reference["mse"] == 2000.1
    assert [row["lambda"] for row in sweep] == list(lambdas)
    assert [row["mse"] for row in sweep] == [2000.0 + 1e4 * lam + 0.1 for lam in lambdas]


@pytest.mark.parametrize("quiet", [False, True])
def test_every_sampling_call_shows_its_bars_unless_the_run_is_quiet(monkeypatch, tmp_path, quiet):
    calls = _fake_run(monkeypatch, tmp_path, (1.5, 2.5), quiet).calls
    sampling = calls["sample"] + calls["controlled_sample"] + calls["intensity_rows"]
    assert len(sampling) == 2 + len(LAMBDAS) + 1 + 1
    assert [options for _, options in sampling] == [{"progress": not quiet}] * len(sampling)


def test_the_intensity_rows_ask_the_test_targets_statistics_on_the_first_contexts(fake_run):
    data, toy = fake_run.data, task.TOY
    prediff, contexts, stats, scale, lam, seed = _only(fake_run.calls, "intensity_rows")
    assert prediff == "prediff" and scale is toy and seed == 3
    assert lam == toy.intensity_lambdas[-1] == 100.0
    assert contexts.shape[0] == toy.intensity_contexts < len(data["test"].frames)
    assert torch.equal(contexts, data["test"].frames[: toy.intensity_contexts, :T_IN])
    # mean intensities of the five test targets: 3000 + 10 n + 5.5 (frames 4..7), n = 0..4;
    # their sample std: sqrt((20² + 10² + 0 + 10² + 20²) / 4) = sqrt(250)
    assert stats == pytest.approx((3025.5, 250**0.5), rel=1e-12)


def test_the_rows_name_each_score_the_targets_and_the_controlled_intensity_misses(fake_run):
    case, lam = "nbody-16px-4to4", BEST
    plain, controlled = 3000.0, 3000.0 + 1e4 * lam
    expected = [(case, "judge floor", 0.25, "", None)]
    for method, first in (("prediff", plain), ("prediff-kc", controlled)):
        for metric, extra in (
            ("mse", 0.1),
            ("ssim", 0.2),
            ("crps", 0.3),
            ("spread_skill", 0.4),
            ("energy_error", 0.5),
        ):
            expected.append((case, f"{metric} {method}", first + extra, "", None))
    expected.append((case, "lambda prediff-kc", lam, "", None))
    expected.append((case, "energy error", 1.25, "< 2 (benchmarks/prediff_nbody.py)", None))
    expected.append((case, "intensity", 3.5, "< 1 (benchmarks/prediff_nbody.py)", None))
    expected.append(("intensity n=-2", "miss in σ prediff-kc", 0.5, "", None))
    expected.append(("intensity n=4", "miss in σ prediff-kc", 0.75, "", None))
    found = [(row.case, row.metric, row.value, row.target, row.ok) for row in fake_run.rows]
    assert found == expected
    assert all(row.task == task.NAME for row in fake_run.rows)
    plain_scores, controlled_scores, table = _only(fake_run.calls, "done_when")
    assert plain_scores["mse"] == plain + 0.1 and controlled_scores["mse"] == controlled + 0.1
    assert [row["miss_sigma"] for row in table] == [9.0, 0.5, 0.75]


def test_the_figures_show_the_first_test_video_and_two_members(fake_run):
    data, folder, lam = fake_run.data, fake_run.out / task.NAME, BEST
    test_x, test_y = data["test"].frames[:, :T_IN], data["test"].frames[:, T_IN:]
    path, context, truth, plain, controlled, best = _only(fake_run.calls, "plot_strip")
    assert path == folder / "strip-toy-seed3.png" and best == lam
    assert torch.equal(context, test_x[0]) and torch.equal(truth, test_y[0])
    members = torch.tensor([0.0, 100.0])[:, None, None, None, None]
    assert torch.equal(plain, test_x[0] + members)
    assert torch.equal(controlled, test_x[0] + 1e4 * lam + members)

    path, per_lead, floor_per_lead, one, energy = _only(fake_run.calls, "plot_energy")
    assert path == folder / "energy-toy-seed3.png"
    assert per_lead == {
        "PreDiff": [3000.0 + lead for lead in range(T_OUT)],
        "PreDiff-KC": [3000.0 + 1e4 * lam + lead for lead in range(T_OUT)],
    }
    assert floor_per_lead == [0.1, 0.2, 0.3, 0.4]
    assert energy == 3000.75 and isinstance(energy, float)
    leads = torch.arange(T_OUT, dtype=torch.float32) + T_IN
    members = torch.arange(task.TOY.members, dtype=torch.float32)[:, None] * 100
    assert list(one) == ["truth", "PreDiff", "PreDiff-KC"]
    assert torch.equal(one["truth"], 3000.0 + leads)
    # the judge's energy of each member on the first test video (inputs stand in for the future)
    assert torch.equal(one["PreDiff"], 3000.0 + (leads - T_IN) + members)
    assert torch.equal(one["PreDiff-KC"], 3000.0 + 1e4 * lam + (leads - T_IN) + members)
    assert not any(energies.requires_grad for energies in one.values())  # figures take plain data


def test_the_summary_records_the_toy_settings_costs_scores_sweep_and_intensity(fake_run):
    lam = BEST
    summary = json.loads((fake_run.out / task.NAME / "summary-toy-seed3.json").read_text())
    assert summary["settings"]["size"] == "toy" and summary["settings"]["seed"] == 3
    assert summary["case"] == "nbody-16px-4to4"
    assert summary["scale"]["size"] == 16 and summary["scale"]["members"] == task.TOY.members
    assert summary["train_s"] == {"autoencoder": 1.5, "denoiser": 2.5}
    assert summary["prediff"]["mse"] == 3000.1
    assert summary["prediff-kc"]["lambda"] == lam
    assert summary["prediff-kc"]["mse"] == 3000.0 + 1e4 * lam + 0.1
    assert [row["lambda"] for row in summary["sweep"]] == list(LAMBDAS)
    assert [row["miss_sigma"] for row in summary["intensity"]] == [9.0, 0.5, 0.75]
    assert sorted(p.name for p in (fake_run.out / task.NAME).iterdir()) == [
        "summary-toy-seed3.json",
        "toy-seed3",
    ]


@pytest.mark.parametrize("fake_run", [(math.nan, 2.5)], indirect=True)
def test_the_summary_records_an_unknown_training_cost_as_strict_json_null(fake_run):
    """A reloaded training without its cost record costs NaN (unknown): ``null`` in the summary,
    which stays strict JSON, and no row claims a cost."""
    text = (fake_run.out / task.NAME / "summary-toy-seed3.json").read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the summary"))
    assert summary["train_s"] == {"autoencoder": None, "denoiser": 2.5}
    assert not any("train" in row.metric for row in fake_run.rows)
