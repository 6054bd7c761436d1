"""Exact mass on forecast ensembles: NonNegative on members, HardC per member, the toy task."""

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch
from test_constraints import dense_update
from torch import nn
from torch.utils.data import TensorDataset

from pdes.grid import Grid2D
from physml import ConstraintError, constrain, metrics
from physml.constraints import NonNegative, mass_conservation
from physml.outputs import Ensemble
from physml.tasks import Context, get
from physml.tasks import conservation_forecast as task
from physml.tasks.prediff.training import Trained
from physml.training import CheckpointError, TrainConfig, load_checkpoint

GRID = Grid2D.square(8, periodic=True)


def members(seed: int = 0, shape=(6, 2, 3, 1, 8, 8)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(shape, generator=generator, dtype=torch.float64) + 0.2


@pytest.mark.parametrize("projection", ["covariance", "euclidean"])
def test_nonnegative_on_members_solves_the_quadratic_program(projection):
    samples = members()
    conservation = mass_conservation(GRID, torch.full((2, 3, 1), 0.2), projection=projection)
    updated = constrain(nn.Identity(), conservation)(Ensemble(samples)).samples
    out = constrain(nn.Identity(), conservation, NonNegative(keep=conservation))(Ensemble(samples))
    u = out.samples
    assert u.min() >= 0 and (u == 0).any()
    before, after = GRID.integrate(updated), GRID.integrate(u)
    assert torch.allclose(after, before, rtol=0, atol=1e-13)
    # KKT of min Σ (u − x)² / d s.t. w·u = w·x, u >= 0: u − x = −λ d w where u > 0, and
    # x − λ d w <= 0 where u = 0, one λ >= 0 per member and frame (w uniform on this grid)
    if projection == "euclidean":
        d = torch.ones_like(updated)
    else:
        d = updated.var(0).expand_as(updated)  # every point varies here: no γ
    w = GRID.weights(dtype=torch.float64)
    step = (updated - u) / (d * w)
    positive = u > 0
    lam = torch.where(positive, step, 0).sum((-2, -1)) / positive.sum((-2, -1))
    assert (lam >= -1e-12).all()
    assert torch.allclose(
        torch.where(positive, step, lam[..., None, None]),
        lam[..., None, None].expand_as(step),
        atol=1e-9,
    )
    assert (torch.where(positive, -1.0, updated - lam[..., None, None] * d * w) <= 1e-12).all()


def test_nonnegative_leaves_a_non_negative_ensemble_and_keeps_a_member_total():
    samples = members().abs()
    conservation = mass_conservation(GRID, torch.ones(2, 3, 1))
    same = constrain(nn.Identity(), NonNegative(keep=conservation))(Ensemble(samples))
    assert torch.equal(same.samples, samples)
    one = torch.zeros(3, 1, 1, 1, 8, 8, dtype=torch.float64)
    one[..., 0, 0], one[..., 0, 1] = 2.0, -1.0  # total 1 / 64: the positive point keeps it
    out = constrain(nn.Identity(), NonNegative(keep=conservation, tolerance=0.0))
    with pytest.raises(ConstraintError, match="keep"):
        constrain(nn.Identity(), NonNegative())(Ensemble(one))
    moved = out(Ensemble(one + 1e-3 * torch.arange(3.0)[:, None, None, None, None, None])).samples
    assert moved.min() >= 0
    assert torch.allclose(
        GRID.integrate(moved),
        GRID.integrate(one) + 1e-3 * torch.arange(3.0)[:, None, None, None],
        atol=1e-15,
    )


def test_nonnegative_reports_a_negative_total_and_a_bad_keep():
    conservation = mass_conservation(GRID, torch.ones(2, 3, 1))
    negative = members() - 1.0  # every member's total < 0
    with pytest.raises(ConstraintError, match="infeasible"):
        constrain(nn.Identity(), NonNegative(keep=conservation))(Ensemble(negative))
    with pytest.raises(ConstraintError, match="keep must be a LinearConstraint"):
        NonNegative(keep="mass")
    with pytest.raises(ConstraintError, match="jitter"):
        NonNegative(keep=conservation, jitter=0.0)


def test_hardc_on_an_ensemble_projects_each_member_like_a_tensor():
    samples = members()
    target = torch.full((2, 3, 1), 0.5)
    euclidean = mass_conservation(GRID, target, projection="euclidean")
    out = constrain(nn.Identity(), euclidean)(Ensemble(samples)).samples
    # the projection onto one uniform-weight row adds the same constant to every point
    shift = (0.5 - GRID.integrate(samples)) / GRID.integrate(torch.ones(8, 8, dtype=torch.float64))
    assert torch.allclose(out, samples + shift[..., None, None], atol=1e-14)


def test_spearman_of_monotone_and_reversed_maps():
    a = torch.rand(5, 5, generator=torch.Generator().manual_seed(1))
    assert metrics.spearman(a, a.exp()) == pytest.approx(1.0)
    assert metrics.spearman(a, -a) == pytest.approx(-1.0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_error_spread_reads_whether_the_spread_sits_where_the_error_is(sign):
    # two members ±s around truth + c·s^sign: |mean error| = c·s^sign, std = √2·s per pixel
    generator = torch.Generator().manual_seed(2)
    spread = 0.1 + torch.rand(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64)
    truth = torch.randn(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64)
    centre = truth + 0.5 * spread**sign
    samples = torch.stack([centre + spread, centre - spread])
    assert task.error_spread(samples, truth) == pytest.approx(sign)


def test_toy_task_conserves_exactly(tmp_path):
    rows = get(task.NAME).run(Context(out=tmp_path, size="toy", quiet=True))
    summary = json.loads((tmp_path / task.NAME / "summary-toy-seed0.json").read_text())
    assert summary["settings"]["size"] == "toy" and summary["settings"]["seed"] == 0
    scored = [row for row in summary["rows"] if "error" not in row]
    assert {row["variant"] for row in scored} == set(task.VARIANTS)
    assert {row["model"] for row in scored} == set(task.MODELS)
    for row in scored:
        if row["method"].startswith(("hardc", "probconserv", "kc-probconserv")):
            assert row["ce_abs_max"] <= 1e-6, row
        if row["method"].endswith("-nonneg"):
            before = next(
                r for r in scored if r["case"] == row["case"] and r["method"] == row["method"][:-7]
            )
            assert row["neg_fraction"] == 0.0
            assert abs(row["ce_abs"] - before["ce_abs"]) <= 1e-9 * max(1.0, before["ce_abs"])
        assert row["crps_fair"] < row["crps"]  # the plain form exceeds it by ½ E|X − X'| / M
    assert all(row.ok for row in rows if row.ok is not None)
    for pattern in ("mass-*-toy-seed0.png", "frame-*-toy-seed0.png", "correction-*-toy-seed0.png"):
        assert len(list((tmp_path / task.NAME).glob(pattern))) == 2


def test_the_full_size_targets_are_judged_at_full_size_only():
    checks = [
        {"case": "c", "what": "ce_abs hardc", "value": 0.0, "target": "<= 1e-6", "met": True},
        {"case": "c", "what": "crps kc-probconserv", "value": 2.0, "target": "< 1", "met": False},
    ]
    toy, full = task.target_rows(checks, "toy"), task.target_rows(checks, "full")
    assert [row.ok for row in toy] == [True, None] and toy[1].target == "< 1 at full size"
    assert [row.ok for row in full] == [True, False] and full[1].target == "< 1"


def test_the_correction_caption_names_every_panel():
    caption = get(task.NAME).figures[f"{task.NAME}/correction-*.png"]
    assert "standard deviation" in caption and "|ensemble mean error|" in caption
    assert "|correction|" in caption


def test_a_new_sampling_setting_reuses_the_planned_trainings(tmp_path, monkeypatch):
    measured_scale = replace(task.TOY, steps=None)  # step counts from the CPU budget
    path = task.generate("conserved", measured_scale, tmp_path, 0, quiet=True)
    train = task.windows(path, measured_scale, "train")
    units = task.Units.of(train)
    first = task.plan(measured_scale, train, units, tmp_path / "run", 0)

    def measured(*args, **kwargs):
        raise AssertionError("the plan was measured again")

    monkeypatch.setattr(task.models, "seconds_per_step", measured)
    resampled = replace(measured_scale, kc_scales=(0.5, 2.0), ddim_steps=5, sample_batch=8)
    assert task.plan(resampled, train, units, tmp_path / "run", 0)["steps"] == first["steps"]
    with pytest.raises(AssertionError, match="measured again"):  # a training setting is new
        task.plan(replace(measured_scale, budget_s=1.0), train, units, tmp_path / "run", 0)
    # fixed steps (the toy size's): nothing measured, the same counts on any machine
    fixed = task.plan(task.TOY, train, units, tmp_path / "fixed", 0)
    assert fixed["steps"] == task.TOY.steps and fixed["s_per_step"] is None
    assert "steps" not in measured_scale.setup()  # a measured plan's scale reads as before


def _damaged_plans() -> list[str]:
    """``plan.json`` texts a measured toy plan cannot be read from: cut short, no object, and
    plans of the toy's own training setup (reused as they are before this check) without a
    family's steps, with steps as text, or with a bad measured rate."""
    setup = replace(task.TOY, steps=None).setup()
    steps = {"earthformer": 2, "fno": 8, "autoencoder": 8, "denoiser": 12}
    rates = dict.fromkeys(steps, 0.01)

    def plan(**changed) -> str:
        return json.dumps({"scale": setup, "s_per_step": rates, "steps": steps} | changed)

    return [
        plan()[:-10],
        json.dumps([setup, rates, steps]),
        plan(steps={k: v for k, v in steps.items() if k != "fno"}),
        plan(steps={**steps, "fno": "8"}),
        plan(steps={**steps, "fno": 0}),
        plan(s_per_step={**rates, "fno": -1.0}),
        plan(scale=[setup]),
    ]


@pytest.mark.parametrize("text", _damaged_plans())
def test_a_damaged_plan_is_refused_naming_it_and_what_to_do(tmp_path, text):
    """The plan set the steps the runs beside it were trained to, so it is not measured again
    (other steps than the checkpoints hold): a one-line error naming the file, the runs' folder
    and the caller's remedy, before anything is measured or trained (no windows needed)."""
    path = tmp_path / "plan.json"
    path.write_text(text)
    measured_scale = replace(task.TOY, steps=None)
    for call, remedy in (
        (lambda: task.plan(measured_scale, None, None, tmp_path, 0), "use another --out"),
        (
            lambda: task.train(
                measured_scale, None, None, tmp_path, 0, True, remedy="use another --work"
            ),
            "use another --work",
        ),
    ):
        with pytest.raises(ValueError) as refused:
            call()
        said = str(refused.value)
        assert str(path) in said and repr(str(tmp_path)) in said and said.endswith(remedy)
        assert "\n" not in said and "delete it together with those runs" in said
    assert path.read_text() == text  # not rewritten


def test_a_valid_plan_of_the_same_setup_is_reused_without_measuring(tmp_path, monkeypatch):
    """The counterpart of the refusals above: an intact plan of the toy's setup is returned."""
    setup = replace(task.TOY, steps=None).setup()
    steps = {"earthformer": 2, "fno": 8, "autoencoder": 8, "denoiser": 12}
    saved = {"scale": setup, "s_per_step": dict.fromkeys(steps, 0.01), "steps": steps}
    (tmp_path / "plan.json").write_text(json.dumps(saved))
    monkeypatch.setattr(task.models, "_measured_plan", None)  # a call would fail
    assert task.plan(replace(task.TOY, steps=None), None, None, tmp_path, 0) == saved


def test_data_and_models_creates_its_work_folder_and_a_rerun_reloads_the_same_models(tmp_path):
    work = tmp_path / "not" / "yet"
    scale = task.TOY
    split, units, models = task.data_and_models("conserved", scale, work, 0, quiet=True)
    windows_per_run = (scale.nt - scale.t_in - scale.t_out) // scale.t_out + 1
    assert len(split["test"].target) == scale.test * windows_per_run
    assert len(models.earthformer) == len(models.fno) == scale.members
    assert (work / "conserved" / "plan.json").exists()
    again = task.data_and_models("conserved", scale, work, 0, quiet=True)[2]
    for before, after in zip(models.earthformer, again.earthformer, strict=True):
        for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_every_training_of_a_variant_refuses_to_resume_with_the_callers_remedy(
    tmp_path, monkeypatch
):
    """A benchmark whose run folders are ``--work``'s hands its wording down to each Trainer
    run: the members, the autoencoder and the denoiser (nothing is trained here)."""
    remedies = []

    def spy(model, *args, remedy, **options):
        remedies.append(remedy)
        return Trained(model, 1, 0.0, 0.0)

    def spy_prediff(prediff, pairs, *, remedy, run_stage, **options):
        remedies.append(remedy)
        run_stage.trained.update(autoencoder=Trained(prediff.autoencoder, 1, 0.0, 0.0))
        run_stage.trained.update(denoiser=Trained(prediff, 1, 0.0, 0.0))

    monkeypatch.setattr(task.models, "fit", spy)
    monkeypatch.setattr(task.models, "train_prediff", spy_prediff)
    task.data_and_models("conserved", task.TOY, tmp_path, 0, True, "use another --work")
    assert remedies == ["use another --work"] * (2 * task.TOY.members + 1)

    def refused(model, *args, remedy, **options):
        raise CheckpointError(remedy)

    monkeypatch.setattr(task.models, "fit", refused)
    with pytest.raises(CheckpointError, match="^use another --work$"):
        task.run_variant("conserved", task.TOY, tmp_path, 0, True, "use another --work")


class _AddOne(nn.Module):
    """A one-step emulator that adds 1 (network units) to every channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


def test_data_drawn_under_another_seed_scheme_is_not_read_from_a_shared_folder(
    tmp_path, monkeypatch
):
    from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme
    from physml.data import generate_dataset, load

    made = []

    def counted(*args, **kwargs):
        made.append(kwargs.get("seed_scheme"))
        return generate_dataset(*args, **kwargs)

    monkeypatch.setattr(task.data, "generate_dataset", counted)
    with seed_scheme(SEED_SCHEME):
        default = task.generate("conserved", task.TOY, tmp_path, 0, quiet=True)
    with seed_scheme(MANUAL_SEED_SCHEME):
        manual = task.generate("conserved", task.TOY, tmp_path, 0, quiet=True)
        assert task.generate("conserved", task.TOY, tmp_path, 0, quiet=True) == manual
    assert made == [SEED_SCHEME, MANUAL_SEED_SCHEME]  # the second call under each reuses
    with seed_scheme(SEED_SCHEME):
        assert task.generate("conserved", task.TOY, tmp_path, 0, quiet=True) == default
    assert len(made) == 2
    assert load(default).attrs["seed_scheme"] == SEED_SCHEME
    assert load(manual).attrs["seed_scheme"] == MANUAL_SEED_SCHEME
    assert not torch.equal(load(default).u, load(manual).u)


def test_data_kept_under_a_name_without_the_scheme_is_read_where_it_records_it(tmp_path):
    from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme

    (tmp_path / "drawn").mkdir()
    with seed_scheme(SEED_SCHEME):
        drawn = task.generate("conserved", task.TOY, tmp_path / "drawn", 0, quiet=True)
    toy, count = task.TOY, task.TOY.train + task.TOY.validation + task.TOY.test
    spec = f"{toy.nx}-nt{toy.nt}-t{toy.t_end:g}-n{count}-seed0"
    kept = tmp_path / f"data-conserved-{spec}.h5"  # as named before the scheme was
    drawn.rename(kept)
    with seed_scheme(SEED_SCHEME):
        assert task.generate("conserved", task.TOY, tmp_path, 0, quiet=True) == kept
    with seed_scheme(MANUAL_SEED_SCHEME):
        manual = task.generate("conserved", task.TOY, tmp_path, 0, quiet=True)
    assert manual != kept and manual.parent == tmp_path


def test_data_of_another_seed_or_scale_is_not_read_from_a_shared_folder(tmp_path):
    from dataclasses import replace

    from physml.data import load

    first = task.generate("conserved", task.TOY, tmp_path, 0, quiet=True)
    other_seed = task.generate("conserved", task.TOY, tmp_path, 1, quiet=True)
    longer = replace(task.TOY, nt=9, t_end=4.0, test=3)
    other_scale = task.generate("conserved", longer, tmp_path, 0, quiet=True)
    assert len({first, other_seed, other_scale}) == 3
    assert not torch.equal(load(first).u, load(other_seed).u)
    data = load(other_scale)
    assert data.u.shape[:2] == (longer.train + longer.validation + longer.test, longer.nt)
    assert task.generate("conserved", task.TOY, tmp_path, 0, quiet=True) == first  # reused


def test_member_forecasts_roll_fno_members_out_and_refuse_other_families():
    units = task.Units((2.0, 1.0, 1.0))
    context = torch.rand(2, 3, 3, 4, 4, dtype=torch.float64)
    out = task.member_forecasts("fno", [_AddOne(), _AddOne()], context, 4, units)
    assert out.shape == (2, 2, 4, 1, 4, 4)
    for lead in range(4):  # k steps add k network units = 2k tracer units to the last frame
        expected = context[:, -1, 0] + 2.0 * (lead + 1)
        assert torch.allclose(out[:, :, lead, 0], expected.expand(2, -1, -1, -1), atol=1e-6)
    with pytest.raises(ValueError, match="model must be 'earthformer' or 'fno'.*got 'prediff'"):
        task.member_forecasts("prediff", [_AddOne()], context, 4, units)


class _Trajectories:
    """A loaded dataset stand-in: frame ``k`` of trajectory ``s`` holds ``100 s + k + 1`` in the
    tracer, ten times that in ``vx`` and a hundred times in ``vy``."""

    def __init__(self, count: int, nt: int, nx: int) -> None:
        value = 100.0 * torch.arange(count)[:, None] + torch.arange(nt)[None] + 1
        self.u = value[:, :, None, None].expand(count, nt, nx, nx).to(torch.float64)
        self.fields = {"vx": 10 * self.u, "vy": 100 * self.u, "mass": value.to(torch.float64)}

    def __len__(self) -> int:
        return self.u.shape[0]


def test_fno_steps_and_autoencoder_frames_cover_every_training_trajectory_once(monkeypatch):
    scale = replace(task.FULL, nx=4, train=3, validation=1, test=1)  # nt 21, T_in = T_out = 5
    monkeypatch.setattr(task.data, "load", lambda path: _Trajectories(5, scale.nt, scale.nx))
    train = task.windows("unused.h5", scale, "train")
    units = task.Units((1.0, 1.0, 1.0))
    x, y = task.pairs("fno", train, units).tensors
    assert x.shape[1:] == y.shape[1:] == (3, 4, 4)
    for state in (x, y):  # every channel of a state from one frame
        assert torch.equal(state[:, 1], 10 * state[:, 0])
        assert torch.equal(state[:, 2], 100 * state[:, 0])
    steps = sorted((int(a[0, 0, 0]), int(b[0, 0, 0])) for a, b in zip(x, y, strict=True))
    every = sorted(
        (100 * s + k + 1, 100 * s + k + 2) for s in range(3) for k in range(scale.nt - 1)
    )
    assert steps == every  # each k → k + 1 of each training trajectory exactly once
    (frames,) = task.pairs("prediff", train, units).tensors
    assert frames.shape[1:] == (1, 1, 4, 4)
    seen = sorted(int(f[0, 0, 0, 0]) for f in frames)
    assert seen == sorted(100 * s + k + 1 for s in range(3) for k in range(scale.nt))
    inputs, targets = task.pairs("earthformer", train, units).tensors  # windows as before
    starts = scale.nt - scale.t_in - scale.t_out + 1
    assert inputs.shape == (3 * starts, scale.t_in, 3, 4, 4)
    assert targets.shape == (3 * starts, scale.t_out, 1, 4, 4)
    assert torch.equal(
        targets[:, :, 0], inputs[:, -1:, 0] + torch.arange(1.0, scale.t_out + 1)[:, None, None]
    )


def test_pairs_refuse_windows_without_trajectories_and_an_unknown_model():
    windows = task.Windows(*(torch.zeros(2, 3, 1, 4, 4) for _ in range(2)), *torch.zeros(2, 2, 3))
    units = task.Units((1.0,))
    for model in ("fno", "prediff"):
        with pytest.raises(
            ValueError, match=f"train.states must hold the training.*{model!r}.*None"
        ):
            task.pairs(model, windows, units)
    with pytest.raises(ValueError, match="model must be one of.*got 'unet'"):
        task.pairs("unet", windows, units)


def _kept_mass_projection(v: torch.Tensor, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``max(v − λ d w, 0)`` with the ``λ`` keeping ``Σ w u = Σ w v`` (bisection): the minimiser
    of ``Σ (u − v)² / d`` subject to the kept mass and ``u >= 0``, one frame ``(H, W)``."""
    total, lo, hi = (w * v).sum(), -1e8, 1e8
    for _ in range(400):
        lam = (lo + hi) / 2
        if (w * (v - lam * d * w).clamp_min(0)).sum() > total:
            lo = lam
        else:
            hi = lam
    return (v - lam * d * w).clamp_min(0)


def test_each_nonneg_row_keeps_the_mass_in_its_own_methods_metric():
    generator = torch.Generator().manual_seed(0)
    grid = Grid2D.square(6, periodic=True)
    x = 0.5 * torch.rand(5, 2, 2, 1, 6, 6, generator=generator, dtype=torch.float64) + 0.1
    x[..., :2] -= 0.6  # negative pixels in every member, totals still positive
    known = torch.full((2, 2), 0.3, dtype=torch.float64)
    target = torch.rand(2, 2, 1, 6, 6, generator=generator, dtype=torch.float64)
    windows = task.Windows(torch.zeros(2, 3, 1, 6, 6, dtype=torch.float64), target, known, known)
    rows, kept = task.forecast_rows("conserved", "fno", {"raw": (x, 0.0)}, windows, grid)
    w = grid.weights(torch.float64)
    shifted = (
        x + (known - grid.integrate(x[:, :, :, 0]))[..., None, None, None] * w / w.square().sum()
    )
    variance = x.var(0)
    for name, before, metric in (
        ("hardc", shifted, lambda n, t: torch.ones_like(w)),
        ("raw", x, lambda n, t: variance[n, t, 0]),
    ):
        found = kept[f"{name}-nonneg"]
        for m, n, t in ((m, n, t) for m in range(5) for n in range(2) for t in range(2)):
            ref = _kept_mass_projection(before[m, n, t, 0], metric(n, t), w)
            assert torch.allclose(found[m, n, t, 0], ref, rtol=0, atol=1e-10), (name, m, n, t)
    row = next(r for r in rows if r["method"] == "hardc-nonneg")
    reference = metrics.crps_ensemble(kept["hardc-nonneg"], target, reduction="none").mean()
    assert row["crps"] == pytest.approx(float(reference), rel=1e-12)
    for name in task.UPDATES:  # the row and the method run in one go agree
        alone = task.constrained(x, known, grid, f"{name}-nonneg")[0]
        assert torch.allclose(kept[f"{name}-nonneg"], alone, rtol=0, atol=1e-12), name


def test_a_failed_feasibility_check_after_an_update_is_judged_at_toy_size():
    check = {"case": "c", "value": 0.0, "target": "no member total < 0", "met": False}
    names = ("hardc", "probconserv_shrunk", "kc-probconserv", "raw", "kc")
    checks = [{**check, "what": f"feasible {name}-nonneg"} for name in names]
    toy = task.target_rows(checks, "toy")
    assert [row.ok for row in toy] == [False, False, False, None, None]
    assert toy[0].target == "no member total < 0"  # the update's total is the known one
    assert toy[3].target == "no member total < 0 at full size"  # the forecaster's own total
    assert [row.ok for row in task.target_rows(checks, "full")] == [False] * 5


def test_the_shrunk_updates_spread_rank_is_not_judged_since_it_is_one_by_construction():
    generator = torch.Generator().manual_seed(3)
    grid = Grid2D.square(6, periodic=True)
    x = torch.rand(4, 2, 2, 1, 6, 6, generator=generator, dtype=torch.float64)
    known = torch.full((2, 2), 1.5, dtype=torch.float64)
    windows = task.Windows(torch.zeros(2, 3, 1, 6, 6, dtype=torch.float64), x[0], known, known)
    rows, _ = task.forecast_rows("conserved", "fno", {"raw": (x, 0.0)}, windows, grid)
    by = {row["method"]: row for row in rows}
    # with the variances alone each point moves by its variance times one number per member
    assert by["probconserv_shrunk"]["spearman_spread"] == pytest.approx(1.0, abs=1e-12)
    judged = {check["what"] for check in task.done_when(rows)}
    assert "spearman_spread probconserv" in judged
    assert "spearman_spread probconserv_shrunk" not in judged


def test_a_uniform_correction_has_no_spread_rank():
    x = members(4)
    shifted = x + torch.linspace(0.1, 0.4, 6, dtype=torch.float64)[:, None, None, None, None, None]
    uniform = task.correction_shape(x, shifted)  # ranks of round-off only
    assert uniform["spearman_spread"] is None and uniform["correction_cv"] < 1e-9
    shaped = task.correction_shape(x, x + 0.1 * x.std(0))  # the correction is the spread
    assert shaped["spearman_spread"] == pytest.approx(1.0)


def test_the_correction_cv_is_the_std_over_the_mean_of_each_frames_correction():
    # half of every frame moves by a, half by 3a: mean 2a, std (n − 1 denominator) a √(n/(n−1))
    x = members(5, shape=(3, 1, 2, 1, 8, 8))
    step = torch.ones(8, 8, dtype=torch.float64)
    step[:4] = 3.0
    for a in (0.1, 10.0):
        shape = task.correction_shape(x, x - a * step)
        assert shape["correction_cv"] == pytest.approx((64 / 63) ** 0.5 / 2, rel=1e-12)


def test_error_spread_ranks_the_size_of_the_error_whatever_its_sign():
    # members ±s around truth ± s/2 (a random sign per pixel): |mean error| = s/2, std = √2 s
    generator = torch.Generator().manual_seed(4)
    spread = 0.1 + torch.rand(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64)
    sign = torch.randint(0, 2, spread.shape, generator=generator).to(torch.float64) * 2 - 1
    truth = torch.randn(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64)
    centre = truth + 0.5 * sign * spread
    samples = torch.stack([centre + spread, centre - spread])
    assert task.error_spread(samples, truth) == pytest.approx(1.0)


def test_the_mass_error_per_lead_averages_members_and_windows_of_each_lead():
    # member m of window n at lead t is the truth times (1 + e[m, n, t]): relative error |e|
    generator = torch.Generator().manual_seed(6)
    truth = 1.0 + torch.rand(2, 3, 1, 8, 8, generator=generator, dtype=torch.float64)
    e = torch.randn(5, 2, 3, generator=generator, dtype=torch.float64) * 0.1
    samples = truth * (1 + e[..., None, None, None])
    mass = GRID.integrate(truth[:, :, 0])
    windows = task.Windows(torch.zeros(2, 1, 1, 8, 8, dtype=torch.float64), truth, mass, mass)
    row = task.score(samples, windows, GRID, seconds=0.5)
    per_lead = [float(e[:, :, t].abs().mean()) for t in range(3)]
    assert row["mass_error_per_lead"] == pytest.approx(per_lead, rel=1e-10)
    assert row["ce_abs"] == pytest.approx(float(e.abs().mean()), rel=1e-10)
    assert row["ce_abs_max"] == pytest.approx(float(e.abs().max()), rel=1e-10)
    assert row["fwd_ms"] == pytest.approx(1000 * 0.5 / 2)


def guided_rows(plain_s: float, guided_s: float) -> dict:
    """PreDiff's rows of two windows sampled in ``plain_s`` plainly and ``guided_s`` guided."""
    x = members(7).abs() + 0.1
    known = GRID.integrate(x.mean(0)[:, :, 0])
    windows = task.Windows(torch.zeros(2, 1, 1, 8, 8, dtype=torch.float64), x[0], known, known)
    raw = {"raw": (x, plain_s), "kc": (x + 0.01, guided_s)}
    rows, _ = task.forecast_rows("conserved", "prediff", raw, windows, GRID)
    return {row["method"]: row for row in rows}


def test_the_guided_rows_time_only_the_guidance_over_plain_sampling():
    by = guided_rows(2.0, 5.0)
    assert by["kc"]["fwd_ms"] == pytest.approx(1000 * (5.0 - 2.0) / 2)  # 2 windows
    assert by["raw"]["fwd_ms"] == 0.0


def test_members_that_differ_by_a_uniform_shift_leave_the_spread_check_unmet():
    """Members equal up to a constant each: every correction is uniform, its spread rank empty
    (None); done_when records the check as not met instead of comparing None with 0.5."""
    generator = torch.Generator().manual_seed(4)
    grid = Grid2D.square(6, periodic=True)
    field = torch.rand(1, 2, 2, 1, 6, 6, generator=generator, dtype=torch.float64)
    shifts = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    x = field + shifts[:, None, None, None, None, None]
    known = torch.full((2, 2), 1.5, dtype=torch.float64)
    windows = task.Windows(torch.zeros(2, 3, 1, 6, 6, dtype=torch.float64), x[0], known, known)
    rows, _ = task.forecast_rows("conserved", "fno", {"raw": (x, 0.0)}, windows, grid)
    assert {row["method"]: row for row in rows}["probconserv"]["spearman_spread"] is None
    check = {c["what"]: c for c in task.done_when(rows)}["spearman_spread probconserv"]
    assert check["value"] is None and check["met"] is False


@pytest.mark.parametrize("method", ["probconserve", "hardcc-nonneg"])
def test_an_unknown_method_is_refused_by_name(method):
    grid = Grid2D.square(6, periodic=True)
    x = torch.rand(3, 1, 1, 1, 6, 6, dtype=torch.float64)
    known = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"method must be one of \['hardc'.*got '(probconserve|hardcc)'"
    ):
        task.constrained(x, known, grid, method)
    with pytest.raises(ValueError, match="method must be one of"):
        task.nonnegative(x, known, grid, method.partition("-")[0])


@pytest.mark.parametrize("method", ["hardc-typo", "hardc-", "raw-nonnegative", "hardc-nonneg-x"])
def test_only_nonneg_may_follow_a_method_name(method):
    grid = Grid2D.square(6, periodic=True)
    x = torch.rand(3, 1, 1, 1, 6, 6, dtype=torch.float64)
    known = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"only '-nonneg' may follow .*got '{method}'"):
        task.constrained(x, known, grid, method)


@pytest.mark.parametrize("shape", [(2,), (1, 2), (3, 1), (2, 3), (3, 2, 1), ()])
def test_known_totals_of_another_shape_are_refused_by_every_method(shape):
    """``nonnegative`` keeps each member's own mass, but ``known`` must still be the ``(N, T)``
    totals of the samples' windows and frames, not passed on unread (nor broadcast by an
    update)."""
    x = torch.rand(3, 3, 2, 1, 6, 6, dtype=torch.float64) + 0.1
    grid = Grid2D.square(6, periodic=True)
    known = torch.ones(shape, dtype=torch.float64)
    wanted = rf"known must hold the total .* shape \(3, 2\) \(N, T\), got {re.escape(str(shape))}"
    for after in ("raw", "hardc", "probconserv"):
        with pytest.raises(ValueError, match=wanted):
            task.nonnegative(x, known, grid, after)
    for method in ("nonneg", "hardc", "probconserv-nonneg"):
        with pytest.raises(ValueError, match=wanted):
            task.constrained(x, known, grid, method)
    with pytest.raises(ValueError, match=r"known .* got list"):
        task.nonnegative(x, [[1.0, 1.0]] * 3, grid, "raw")
    with pytest.raises(ValueError, match=r"samples must be a tensor \(members, N, T, 1, H, W\)"):
        task.nonnegative(x[0], torch.ones(3, 2, dtype=torch.float64), grid, "raw")
    fits = torch.full((3, 2), 0.5, dtype=torch.float64)  # the right shape passes
    assert (task.nonnegative(x, fits, grid, "raw")[0] == x).all()  # already non-negative


def _case(case: str, **methods: dict) -> list[dict]:
    return [
        {"case": case, "method": name.replace("_", "-").replace("-shrunk", "_shrunk"), **row}
        for name, row in methods.items()
    ]


def test_done_when_meets_each_target_at_its_bound_and_misses_it_just_beyond():
    at = _case(
        "at",
        raw={"ce_abs": 0.5, "ce_abs_max": 0.75, "crps": 1.0, "mse": 1.0},
        hardc={"ce_abs": 5e-7, "ce_abs_max": 1e-6, "crps": 1.5, "mse": 1.0, "correction_cv": 1e-6},
        probconserv={
            "ce_abs": 0.0,
            "ce_abs_max": 1e-6,
            "crps": 1.0,
            "mse": 1.02,
            "spearman_spread": 0.51,
        },
        kc={"ce_abs": 0.25, "ce_abs_max": 0.5, "crps": 1.0, "mse": 1.0},
        raw_nonneg={"ce_abs": 0.5 + 2**-30, "neg_fraction": 0.0},
        hardc_nonneg={"error": "infeasible"},
    )
    beyond = _case(
        "beyond",
        raw={"ce_abs": 0.5, "ce_abs_max": 0.75, "crps": 1.0, "mse": 1.0},
        hardc={"ce_abs": 5e-7, "ce_abs_max": 2e-6, "crps": 0.5, "mse": 1.0, "correction_cv": 2e-6},
        probconserv={
            "ce_abs": 0.0,
            "ce_abs_max": 0.0,
            "crps": 0.5,
            "mse": 1.03,
            "spearman_spread": 0.5,
        },
        probconserv_shrunk={
            "ce_abs": 0.0,
            "ce_abs_max": 0.0,
            "crps": 1.25,
            "mse": 1.0,
            "spearman_spread": 0.1,
        },
        kc={"ce_abs": 0.375, "ce_abs_max": 0.5, "crps": 1.0, "mse": 1.0},
        raw_nonneg={"ce_abs": 0.5 + 2**-29, "neg_fraction": 1e-4},
    )
    found = {(c["case"], c["what"]): (c["value"], c["met"]) for c in task.done_when(at + beyond)}
    assert found == {
        ("at", "ce_abs hardc"): (1e-6, True),
        ("at", "ce_abs probconserv"): (1e-6, True),
        ("at", "crps probconserv / raw"): (1.0, True),
        ("at", "crps probconserv / hardc"): (1.0 / 1.5, True),
        ("at", "mse probconserv / raw"): (1.02, True),
        ("at", "spearman_spread probconserv"): (0.51, True),
        ("at", "ce_abs raw / kc"): (2.0, True),
        ("at", "neg_fraction raw-nonneg"): (0.0, True),
        ("at", "ce_abs change raw-nonneg"): (2**-30, True),
        ("at", "feasible hardc-nonneg"): (0.0, False),
        ("at", "correction_cv hardc"): (1e-6, True),
        ("beyond", "ce_abs hardc"): (2e-6, False),
        ("beyond", "ce_abs probconserv"): (0.0, True),
        ("beyond", "ce_abs probconserv_shrunk"): (0.0, True),
        ("beyond", "crps probconserv / raw"): (0.5, True),
        ("beyond", "crps probconserv / hardc"): (1.0, False),
        ("beyond", "mse probconserv / raw"): (1.03, False),
        ("beyond", "spearman_spread probconserv"): (0.5, False),
        ("beyond", "crps probconserv_shrunk / raw"): (1.25, False),
        ("beyond", "crps probconserv_shrunk / hardc"): (2.5, False),
        ("beyond", "mse probconserv_shrunk / raw"): (1.0, True),
        ("beyond", "ce_abs raw / kc"): (0.5 / 0.375, False),
        ("beyond", "neg_fraction raw-nonneg"): (1e-4, False),
        ("beyond", "ce_abs change raw-nonneg"): (2**-29, False),
        ("beyond", "correction_cv hardc"): (2e-6, False),
    }


def test_ce_abs_is_relative_to_the_true_mass_not_the_known_one():
    # every member carries the known total 3 (a source misjudged); the truth holds 2 or 4; one
    # member moves 0.5 between two pixels (same mass) so that the members spread
    x = torch.full((3, 2, 1, 1, 8, 8), 3.0, dtype=torch.float64)
    x[1, ..., 3, 3:5] += torch.tensor([0.5, -0.5], dtype=torch.float64)
    truth = torch.tensor([[2.0], [4.0]], dtype=torch.float64)
    known = torch.full((2, 1), 3.0, dtype=torch.float64)
    windows = task.Windows(torch.zeros(2, 1, 1, 8, 8, dtype=torch.float64), x[0], truth, known)
    row = task.score(x, windows, GRID, seconds=0.0)
    assert row["ce_abs"] == pytest.approx((1 / 2 + 1 / 4) / 2, rel=1e-12)
    assert row["ce_abs_max"] == pytest.approx(1 / 2, rel=1e-12)
    assert row["mass_error_per_lead"] == pytest.approx([(1 / 2 + 1 / 4) / 2], rel=1e-12)


def test_neg_fraction_is_the_share_of_member_pixels_below_zero():
    # 4 members × 2 windows × 64 pixels: member 0 has 3 negative pixels in window 0, member 1
    # one in window 1; exact zeros are not negative
    x = torch.zeros(4, 2, 1, 1, 8, 8, dtype=torch.float64)
    x[0, 0, 0, 0, 0, :3] = -1.0
    x[1, 1, 0, 0, 5, 5] = -2.0
    x[2, 0, 0, 0, 1, 1] = 1.0
    mass = torch.ones(2, 1, dtype=torch.float64)
    windows = task.Windows(torch.zeros(2, 1, 1, 8, 8, dtype=torch.float64), x[3], mass, mass)
    assert task.score(x, windows, GRID, 0.0)["neg_fraction"] == pytest.approx(4 / (4 * 2 * 64))


def test_the_spread_rank_of_a_correction_reads_the_spread_before_it():
    # two members c ± s, s rising along the frame; each moves by ∓2 s²: |correction| = 2 s² (the
    # ranks of s), while the spread after it, |s − 2 s²|, falls and rises again
    s = torch.linspace(0.1, 1.1, 64, dtype=torch.float64).reshape(1, 1, 1, 8, 8)
    before = torch.stack([1 + s, 1 - s])
    after = before + torch.stack([-2 * s**2, 2 * s**2])
    assert task.correction_shape(before, after)["spearman_spread"] == pytest.approx(1.0)


def test_a_correction_uniform_in_one_member_only_is_ranked():
    # member 0 is not moved (coefficient of variation 0), member 1 moved by its spread
    x = members(8, shape=(2, 1, 1, 1, 8, 8))
    after = x.clone()
    after[1] += x.std(0)
    shape = task.correction_shape(x, after)
    cv1 = float(x.std(0).std() / x.std(0).mean())
    assert shape["spearman_spread"] == pytest.approx(1.0)
    assert shape["correction_cv"] == pytest.approx(cv1 / 2, rel=1e-12)
    slight = task.correction_shape(x, x + 1.0 + 1e-3 * x.std(0))  # varies by ~1e-3: ranked
    assert slight["spearman_spread"] == pytest.approx(1.0)


def test_frame_spearman_averages_each_frames_own_rank_correlation():
    a = torch.arange(2 * 3 * 4.0).reshape(1, 2, 3, 4)  # rising in every frame
    b = a.clone()
    b[0, 1] = -a[0, 1]  # frame 1 reversed
    assert task.frame_spearman(a, b) == pytest.approx((1 - 1) / 2)
    b[0, 0] = -a[0, 0]  # both reversed
    assert task.frame_spearman(a, b) == pytest.approx(-1.0)


def test_a_guidance_faster_than_plain_sampling_costs_nothing_and_nonneg_rows_are_not_shape_scored():
    by = guided_rows(5.0, 2.0)
    assert by["kc"]["fwd_ms"] == 0.0
    assert "spearman_spread" in by["probconserv"] and "correction_cv" in by["hardc"]
    for name in ("hardc-nonneg", "probconserv-nonneg", "kc-probconserv-nonneg"):
        assert "spearman_spread" not in by[name] and "correction_cv" not in by[name]


def test_the_known_mass_adds_the_release_since_the_last_context_frame(monkeypatch):
    scale = replace(task.FULL, nx=4, train=1, validation=1, test=1)  # nt 21, T_in = T_out = 5
    data = _Trajectories(3, scale.nt, scale.nx)  # tracer of frame k: 201 + k in the test run
    k = torch.arange(scale.nt, dtype=torch.float64)
    data.fields["released"] = (k**2)[None].expand(3, -1)
    monkeypatch.setattr(task.data, "load", lambda path: data)
    test = task.windows("unused.h5", scale, "test")
    assert test.known_mass.shape == (3, 5)  # windows start at 0, 5, 10
    area = float(GRID.integrate(torch.ones(8, 8, dtype=torch.float64)))
    for i, start in enumerate((0, 5, 10)):
        last = start + 4
        for t in range(5):
            frame = last + 1 + t
            expected = (201 + last) * area + frame**2 - last**2
            assert float(test.known_mass[i, t]) == pytest.approx(expected, rel=1e-12)
            assert float(test.truth_mass[i, t]) == 201 + frame


def test_the_forecasters_add_their_output_to_the_last_tracer_frame_and_state():
    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x[:, :1, :1]) + 0.5

    x = torch.rand(2, 3, 3, 4, 4)
    out = task.LastFrameIncrement(Zero())(x)
    assert torch.equal(out, x[:, 2:3, :1] + 0.5)
    state = torch.rand(2, 3, 4, 4)
    assert torch.equal(task.StepIncrement(Zero())(state), state + 0.5)


def test_the_kc_scale_is_the_least_mass_error_within_two_percent_of_the_unguided_mse(monkeypatch):
    # truth 1 everywhere (mass 1 on the unit square); a member 1 + d + a·checkerboard misses the
    # mass by d and has mse d² + a²: unguided d = 0.3 (mse 0.09, bound 1.02 · 0.09 = 0.0918)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1.0
    guided = {0.5: (0.2, 0.22), 1.0: (0.1, 0.28), 1.5: (0.01, 0.31)}  # mse .0884 .0884 .0962

    def member(d: float, a: float) -> torch.Tensor:
        frame = 1.0 + d + a * checker.to(torch.float64)
        return frame.expand(2, 1, 1, 1, 8, 8).clone()

    def ensembles(prediff, windows_, scale, units, lam, seed):
        return {"raw": (member(0.3, 0.0), 0.0), "kc": (member(*guided[lam]), 0.0)}

    monkeypatch.setattr(task.experiment, "prediff_ensembles", ensembles)
    ones = torch.ones(1, 1, dtype=torch.float64)
    validation = task.Windows(
        torch.zeros(1, 1, 1, 8, 8, dtype=torch.float64),
        torch.ones(1, 1, 1, 8, 8, dtype=torch.float64),
        ones,
        ones,
    )
    scale = replace(task.TOY, nx=8, kc_scales=(0.5, 1.0, 1.5))
    lam, sweep = task.best_kc_scale(None, validation, scale, task.Units((1.0,)), 0)
    assert lam == 1.0
    assert [row["ce_abs"] for row in sweep] == pytest.approx([0.2, 0.1, 0.01], rel=1e-9)
    assert [row["mse"] for row in sweep] == pytest.approx([0.0884, 0.0884, 0.0962], rel=1e-9)


def test_nonneg_alone_projects_each_member_in_the_ensembles_variance():
    generator = torch.Generator().manual_seed(9)
    grid = Grid2D.square(6, periodic=True)
    x = torch.rand(4, 1, 2, 1, 6, 6, generator=generator, dtype=torch.float64) + 0.1
    x[..., :1] -= 0.4  # negative pixels, totals positive
    known = grid.integrate(x.mean(0)[:, :, 0])
    out, _ = task.constrained(x, known, grid, "nonneg")
    w, variance = grid.weights(torch.float64), x.var(0)
    for m, t in ((m, t) for m in range(4) for t in range(2)):
        ref = _kept_mass_projection(x[m, 0, t, 0], variance[0, t, 0], w)
        assert torch.allclose(out[m, 0, t, 0], ref, rtol=0, atol=1e-10), (m, t)


def test_a_measured_plan_shares_each_familys_budget_among_its_members(monkeypatch):
    scale = replace(task.TOY, steps=None, budget_s=200.0, min_steps=3, autoencoder_share=0.25)
    monkeypatch.setattr(task.data, "load", lambda path: _Trajectories(5, scale.nt, scale.nx))
    monkeypatch.setattr(task.models, "seconds_per_step", lambda *args, **kwargs: 0.125)
    train = task.windows("unused.h5", scale, "train")
    steps = task.models._measured_plan(scale, train, task.Units((1.0, 1.0, 1.0)), 0)["steps"]
    # 200 s at 1/8 s a step: 1600 steps, a quarter per member of 4, a quarter to the autoencoder
    assert steps == {"earthformer": 400, "fno": 400, "autoencoder": 400, "denoiser": 1200}
    tight = replace(scale, budget_s=1.0)  # 2 steps per member and for the autoencoder: 3
    steps = task.models._measured_plan(tight, train, task.Units((1.0, 1.0, 1.0)), 0)["steps"]
    assert steps == {"earthformer": 3, "fno": 3, "autoencoder": 3, "denoiser": 6}


def test_each_update_is_its_dense_formula_on_three_members_of_a_two_by_two_grid():
    # 3 members, 2 windows, 1 frame on a periodic 2 × 2 grid (every cell 1/4 of the unit square)
    grid = Grid2D.square(2, periodic=True)
    x = np.array(
        [
            [[1.0, 2.0, 0.5, 3.0], [0.2, 0.1, 0.4, 0.3]],
            [[2.0, 1.5, 1.0, 2.0], [0.6, 0.1, 0.2, 0.9]],
            [[0.5, 2.5, 2.0, 1.0], [0.3, 0.5, 0.1, 0.2]],
        ]
    )  # (M, N, 4)
    known = np.array([2.0, 0.5])
    g = np.full(4, 0.25)
    samples = torch.tensor(x).reshape(3, 2, 1, 1, 2, 2)
    known_t = torch.tensor(known)[:, None]
    for method, shrinkage in (("probconserv", 0.0), ("probconserv_shrunk", 1.0)):
        out = task.constrained(samples, known_t, grid, method)[0].reshape(3, 2, 4).numpy()
        for n in range(2):  # each member x_m + K (b − g·x_m), Σ shrunk toward its diagonal
            sample_cov = np.cov(x[:, n], rowvar=False)
            cov = (1 - shrinkage) * sample_cov + shrinkage * np.diag(np.diag(sample_cov))
            for m in range(3):
                expected, _ = dense_update(x[m, n], cov, g[None], [known[n]], 0.0)
                np.testing.assert_allclose(out[m, n], expected, rtol=0, atol=1e-12)
    hardc = task.constrained(samples, known_t, grid, "hardc")[0].reshape(3, 2, 4).numpy()
    shift = (known[None] - 0.25 * x.sum(-1)) / 1.0  # the same for every cell of a member
    np.testing.assert_allclose(hardc, x + shift[..., None], rtol=0, atol=1e-14)


def test_frame_spearman_is_scipys_rank_correlation_averaged_over_frames():
    generator = torch.Generator().manual_seed(11)
    a = torch.rand(2, 3, 1, 5, 5, generator=generator, dtype=torch.float64)
    b = a + 0.3 * torch.rand(2, 3, 1, 5, 5, generator=generator, dtype=torch.float64)
    a = (4 * a).round()  # ties: scipy gives them their mean rank
    rhos = [
        scipy.stats.spearmanr(a[n, t].flatten().numpy(), b[n, t].flatten().numpy())[0]
        for n in range(2)
        for t in range(3)
    ]
    assert task.frame_spearman(a, b) == pytest.approx(np.mean(rhos), abs=1e-12)


def test_the_crps_of_more_than_eight_windows_is_the_ensemble_crps_of_each_point_plain_and_fair():
    generator = torch.Generator().manual_seed(12)
    x = torch.rand(3, 11, 2, 1, 4, 4, generator=generator, dtype=torch.float64)
    truth = torch.rand(11, 2, 1, 4, 4, generator=generator, dtype=torch.float64)
    mass = Grid2D.square(4, periodic=True).integrate(truth[:, :, 0])
    windows = task.Windows(torch.zeros(11, 1, 1, 4, 4, dtype=torch.float64), truth, mass, mass)
    row = task.score(x, windows, Grid2D.square(4, periodic=True), seconds=0.0)
    xs, y = x.numpy(), truth.numpy()
    skill = np.abs(xs - y[None]).mean(0)
    spread = np.abs(xs[:, None] - xs[None]).mean((0, 1))
    assert row["crps"] == pytest.approx(float((skill - spread / 2).mean()), rel=1e-12)
    distinct = np.abs(xs[:, None] - xs[None]).sum((0, 1)) / (3 * 2)  # the unbiased form
    assert row["crps_fair"] == pytest.approx(float((skill - distinct / 2).mean()), rel=1e-12)
    assert row["mse"] == pytest.approx(float(((xs.mean(0) - y) ** 2).mean()), rel=1e-12)


def test_every_update_meets_the_known_total_not_the_true_one():
    # a source misjudged: the known totals 0.4 and 0.6 differ from the truth's 0.5
    generator = torch.Generator().manual_seed(13)
    grid = Grid2D.square(4, periodic=True)
    x = torch.rand(4, 2, 3, 1, 4, 4, generator=generator, dtype=torch.float64) + 0.2
    known = torch.tensor([[0.4], [0.6]], dtype=torch.float64).expand(2, 3)
    truth = torch.full((2, 3), 0.5, dtype=torch.float64)
    windows = task.Windows(torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64), x[0], truth, known)
    raw = {"raw": (x, 0.0), "kc": (x + 0.05, 0.0)}
    rows, kept = task.forecast_rows("source", "prediff", raw, windows, grid)
    for name in ("hardc", "probconserv", "probconserv_shrunk", "kc-probconserv"):
        totals = grid.integrate(kept[name][:, :, :, 0])
        assert torch.allclose(totals, known.expand(4, 2, 3), rtol=0, atol=1e-12), name
    by = {row["method"]: row for row in rows}
    for name in ("hardc", "probconserv", "kc-probconserv", "kc-probconserv-nonneg"):
        assert by[name]["ce_abs"] == pytest.approx((0.1 / 0.5 + 0.1 / 0.5) / 2, rel=1e-9), name
    for row in rows:
        assert (row["members"], row["windows"], row["case"]) == (4, 2, "prediff-source")
        assert ("error_spread_rho" in row) == (row["method"] == "raw"), row["method"]


def test_done_when_at_the_edges_of_its_drift_and_sign_checks():
    rows = _case(
        "c",
        raw={"ce_abs": 0.5, "ce_abs_max": 0.5, "crps": 1.0, "mse": 1.0},
        hardc={"ce_abs": 0.0, "ce_abs_max": 0.0, "crps": 1.0, "mse": 1.0, "correction_cv": 0.0},
        kc={"ce_abs": 0.0, "ce_abs_max": 0.0, "crps": 1.0, "mse": 1.0},
        kc_probconserv={"ce_abs": 0.0, "ce_abs_max": 2e-6, "crps": 1.0, "mse": 1.0},
        hardc_nonneg={"ce_abs": 1e-9, "ce_abs_max": 3e-6, "neg_fraction": 1e-12},
    )
    found = {c["what"]: (c["value"], c["met"]) for c in task.done_when(rows)}
    assert found["ce_abs kc-probconserv"] == (2e-6, False)
    assert found["ce_abs hardc-nonneg"] == (3e-6, False)
    assert found["ce_abs change hardc-nonneg"] == (1e-9, True)  # at the bound: met
    assert found["neg_fraction hardc-nonneg"] == (1e-12, False)  # any negative pixel
    value, met = found["ce_abs raw / kc"]  # a kc ensemble exact to the last digit
    assert value >= 1e299 and met is True


def test_the_correction_cv_is_taken_in_each_frame_on_its_own():
    # frame 0 moves uniformly (cv 0), frame 1 half by 1, half by 3 (cv √(64/63) / 2): mean of both
    x = members(14, shape=(2, 1, 2, 1, 8, 8))
    step = torch.ones(2, 8, 8, dtype=torch.float64)
    step[1, :4] = 3.0
    shape = task.correction_shape(x, x + step[None, None, :, None])
    assert shape["correction_cv"] == pytest.approx((64 / 63) ** 0.5 / 4, rel=1e-12)
    dyadic = (64 * x).round() / 64  # x + 0.25 − x is 0.25 exactly
    uniform = task.correction_shape(dyadic, dyadic + 0.25)
    assert uniform["correction_cv"] == 0.0 and uniform["spearman_spread"] is None


def test_the_task_grid_integrates_a_hand_made_frame_with_its_cell_areas():
    # the toy grid: 16 × 16 periodic cells on the unit square, each of area 1/256
    frame = torch.zeros(16, 16, dtype=torch.float64)
    frame[0, 0], frame[15, 15], frame[3, 7] = 1.0, 2.0, 5.0
    assert float(task.grid_of(task.TOY).integrate(frame)) == pytest.approx(8 / 256, rel=1e-14)


def test_units_scale_the_tracer_by_its_headroom_and_each_velocity_by_its_spread():
    context = torch.zeros(2, 1, 3, 2, 2, dtype=torch.float64)
    context[0, 0, 0, 0, 0] = 4.0  # tracer maximum 4: scale 5
    context[:, :, 1] = torch.tensor([1.0, 3.0]).reshape(2, 1, 1, 1)  # vx: 1 × 4, 3 × 4
    context[1, 0, 2, 1, 1] = 8.0  # vy: seven 0s, one 8
    train = task.Windows(context, context[:, :, :1], torch.ones(2, 1), torch.ones(2, 1))
    units = task.Units.of(train)
    std_vx = (8 * 1.0 / 7) ** 0.5  # eight values ±1 around 2, n − 1 denominator
    std_vy = ((7 * 1.0 + 49.0) / 7) ** 0.5  # mean 1: seven (−1)², one 7²
    assert units.scales == pytest.approx((5.0, std_vx, std_vy), rel=1e-12)
    net = units.to_net(context)
    assert net.dtype == torch.float32
    for c, scale in enumerate((5.0, std_vx, std_vy)):
        assert torch.allclose(net[:, :, c], (context[:, :, c] / scale).float(), rtol=1e-6)
    tracer = units.to_net(context[:, :, :1])  # tracer frames alone: the tracer's scale
    assert torch.allclose(tracer, (context[:, :, :1] / 5.0).float(), rtol=1e-6)


def test_the_validation_windows_come_from_the_trajectories_after_the_training_ones(monkeypatch):
    scale = replace(task.FULL, nx=4, train=2, validation=1, test=1)
    monkeypatch.setattr(task.data, "load", lambda path: _Trajectories(4, scale.nt, scale.nx))
    validation = task.windows("unused.h5", scale, "validation")
    assert validation.states.shape[0] == 1 and float(validation.states[0, 0, 0, 0, 0]) == 201
    assert float(validation.context[0, 0, 0, 0, 0]) == 201  # trajectory 2, frame 0


def test_the_earthformer_takes_the_scales_own_options_and_members_their_own_seed():
    scale = replace(task.TOY, earthformer={**task.TOY.earthformer, "periodic": False})
    net = task.models.build("earthformer", scale, 3, seed=0)
    assert net.net.periodic is False
    assert task.models.build("earthformer", task.TOY, 3, seed=0).net.periodic is True
    same, again, other = (
        [*task.models.build("fno", task.TOY, 3, seed=seed).parameters()] for seed in (5, 5, 6)
    )
    assert all(torch.equal(a, b) for a, b in zip(same, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(same, other, strict=True))
    # a 4-point axis holds modes 0, ±1, 2: the FNO keeps at most nx // 2 of each axis
    assert task.models.build("fno", replace(task.TOY, nx=4), 3, seed=0).net.n_modes == (2, 2)
    assert task.models.build("fno", task.TOY, 3, seed=0).net.n_modes == (4, 4)


def test_each_member_trains_from_its_own_seed_in_its_own_folder_and_the_time_adds_up(
    monkeypatch, tmp_path
):
    scale = task.TOY
    monkeypatch.setattr(task.data, "load", lambda path: _Trajectories(7, scale.nt, scale.nx))
    train = task.windows("unused.h5", scale, "train")
    calls = []

    def fake_fit(model, loss, data, steps, batch, lr, seed, out, quiet, **kwargs):
        calls.append((seed, out.name, [p.detach().clone() for p in model.parameters()]))
        return SimpleNamespace(model=model, train_s=1.5)

    def fake_prediff(prediff, pairs, *, run_stage, **options):
        run_stage.trained.update(autoencoder=SimpleNamespace(train_s=1.5))
        run_stage.trained.update(denoiser=SimpleNamespace(train_s=1.5))

    monkeypatch.setattr(task.models, "fit", fake_fit)
    monkeypatch.setattr(task.models, "train_prediff", fake_prediff)
    found = task.models.train(scale, train, task.Units.of(train), tmp_path, 10, quiet=True)
    members = [call for call in calls if call[1].startswith(("earthformer", "fno"))]
    expected = [(model, i) for model in ("earthformer", "fno") for i in range(scale.members)]
    assert [call[:2] for call in members] == [
        (10 + i, f"{task.models.MEMBER_FOLDERS[model]}-{i}") for model, i in expected
    ]
    for (model, i), (_, _, weights) in zip(expected, members, strict=True):
        fresh = task.models.build(model, scale, 3, seed=10 + i).parameters()
        assert all(torch.equal(a, b) for a, b in zip(weights, fresh, strict=True)), (model, i)
    assert found.train_s == {"earthformer": 6.0, "fno": 6.0, "prediff": 3.0}


def test_members_of_the_largest_seed_train_from_wrapped_seeds(monkeypatch, tmp_path):
    """Member ``i`` trains from ``seed + i`` wrapped below 2**62: seed 2**62 − 1 gives members
    2**62 − 1, 0, 1, …, each a seed the real TrainConfig accepts."""
    scale = task.TOY
    monkeypatch.setattr(task.data, "load", lambda path: _Trajectories(7, scale.nt, scale.nx))
    train = task.windows("unused.h5", scale, "train")
    seeds = []

    def fake_fit(model, loss, data, steps, batch, lr, seed, out, quiet, **kwargs):
        TrainConfig(steps=1, batch=1, lr=lr, seed=seed)
        seeds.append((out.name, seed))
        return SimpleNamespace(model=model, train_s=1.5)

    monkeypatch.setattr(task.models, "fit", fake_fit)
    task.models.train(scale, train, task.Units.of(train), tmp_path, 2**62 - 1, quiet=True)
    members = [seed for name, seed in seeds if name.startswith(("earthformer", "fno"))]
    expected = [2**62 - 1, *range(scale.members - 1)]
    assert members == expected * 2


@pytest.mark.parametrize("variant", ["conserved", "source"])
def test_the_known_total_is_the_files_total_in_both_variants(tmp_path, variant):
    # the tracer recipes keep the mass to round-off but for the release, so the last context
    # frame's total plus the release since is the true total of every target frame
    path = task.generate(variant, task.TOY, tmp_path, 0, quiet=True)
    grid = task.grid_of(task.TOY)
    for split in ("train", "test"):
        found = task.windows(path, task.TOY, split)
        total = found.target[:, :, 0].sum((-2, -1)) / 256  # 16 × 16 cells of area 1/256
        assert torch.allclose(found.truth_mass, total, rtol=1e-10, atol=0)
        assert torch.allclose(found.known_mass, found.truth_mass, rtol=1e-10, atol=0)
        assert torch.allclose(grid.integrate(found.target[:, :, 0]), total, rtol=1e-12, atol=0)
    if variant == "source":  # the release shows: the totals grow along the lead times
        assert (found.truth_mass.diff(dim=1) > 0).all()


def test_prediff_trains_as_its_two_stages_written_out_in_its_folders_bitwise(monkeypatch, tmp_path):
    """PreDiff of a variant: the autoencoder on every training frame (no model config
    recorded), calibrated on them, the denoiser on the windows' tracer pairs (EMA, PreDiff's
    config), each a ``fit`` run, in the folders of :data:`PREDIFF_FOLDERS` (the members are not
    trained here)."""
    from physml.models.prediff import LatentPairs, autoencoder_loss, diffusion_loss, update_ema

    scale = task.TOY
    monkeypatch.setattr(task.data, "load", lambda path: _Trajectories(7, scale.nt, scale.nx))
    train = task.windows("unused.h5", scale, "train")
    units = task.Units.of(train)
    fit = task.models.fit
    monkeypatch.setattr(task.models, "fit", lambda model, *a, **k: Trained(model, 1, 0.0, 0.0))
    found = task.models.train(scale, train, units, tmp_path / "task", 4, quiet=True).prediff
    expected = task.models.build_prediff(scale, 4)
    frames = task.pairs("prediff", train, units)
    steps, hand = scale.steps, tmp_path / "hand"
    fit(
        expected.autoencoder,
        autoencoder_loss,
        frames,
        steps["autoencoder"],
        scale.batch,
        scale.lr,
        4,
        hand / "autoencoder",
        True,
    )
    expected.calibrate(frames.tensors[0], batch=scale.batch)
    context, target = units.to_net(train.context[:, :, :1]), units.to_net(train.target)
    latents = LatentPairs(expected, TensorDataset(context, target), batch=scale.batch)
    fit(
        expected,
        diffusion_loss,
        latents,
        steps["denoiser"],
        scale.batch,
        scale.lr,
        4,
        hand / "denoiser",
        True,
        after_step=update_ema,
        model_config=expected.config,
    )
    mine, theirs = found.state_dict(), expected.state_dict()
    assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    for stage in ("autoencoder", "denoiser"):
        folder = tmp_path / "task" / task.PREDIFF_FOLDERS[stage]
        ours, written = load_checkpoint(folder), load_checkpoint(hand / stage)
        for key in ("model_config", "config", "fingerprint", "losses"):
            assert ours[key] == written[key], (stage, key)
    assert load_checkpoint(tmp_path / "task" / "autoencoder-trajectories")["model_config"] is None
