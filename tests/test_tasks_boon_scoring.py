"""The BOON task's scoring against hand-made fields, forecasts, recording models and rows."""

import dataclasses
import math
import re
import time
import types

import numpy as np
import pytest
import torch
from torch import nn

from pdes import Dirichlet, Grid1D, Grid2D, Neumann
from physml import metrics
from physml.constraints import BoundaryCondition
from physml.constraints.operator import CorrectedLayer
from physml.models import plain_fno
from physml.tasks import boon
from physml.tasks.boon import evaluation, tasks

F64 = torch.float64


def case(walls, test_y, test_values, train=None, times=None):
    """A CaseData around hand-made test fields (training tensors only where a test needs them)."""
    train_x, train_y, train_values = train if train is not None else (test_y, test_y, test_values)
    return boon.CaseData(train_x, train_y, test_y, test_y, train_values, test_values, walls, times)


def l2(a):
    return math.sqrt(sum(v * v for v in a))


# ------------------------------------------------------------------------------------------
# evaluate and error_over_time against hand computations


def test_evaluate_dirichlet_whole_interior_and_wall_errors_by_hand():
    grid = Grid1D(5)
    target = [[1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 1.0, 1.0, 3.0]]
    prediction = [[1.5, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 1.5, 1.0, 3.25]]
    walls = boon.AxisWalls(BoundaryCondition(Dirichlet(), grid))
    values = torch.tensor([[1.0, 5.0], [2.0, 3.0]], dtype=F64)
    data = case(walls, torch.tensor(target)[:, None], values)
    scores = boon.evaluate(torch.tensor(prediction, dtype=F64)[:, None], data)
    differences = [
        [p - t for p, t in zip(*pair, strict=True)] for pair in zip(prediction, target, strict=True)
    ]
    whole = (l2(differences[0]) / l2(target[0]) + l2(differences[1]) / l2(target[1])) / 2
    interior = (0.0 + l2(differences[1][1:-1]) / l2(target[1][1:-1])) / 2
    assert scores["rel_l2"] == pytest.approx(whole, rel=1e-12)
    assert scores["rel_l2_interior"] == pytest.approx(interior, rel=1e-12)
    assert scores["boundary_error"] == pytest.approx(0.5, rel=1e-12)  # the largest, not the mean


def test_evaluate_is_float64_on_float32_fields():
    # sqrt(5) rounds differently in float32: the float64 score matches the exact ratio to 1e-15
    grid = Grid1D(5)
    walls = boon.AxisWalls(BoundaryCondition(Dirichlet(), grid))
    target = torch.ones(1, 1, 5)
    prediction = target.clone()
    prediction[0, 0, 2] = 2.0
    data = case(walls, target, torch.ones(1, 2, dtype=F64))
    scores = boon.evaluate(prediction, data)
    assert scores["rel_l2"] == pytest.approx(1.0 / math.sqrt(5.0), rel=1e-15)
    assert scores["rel_l2_interior"] == pytest.approx(1.0 / math.sqrt(3.0), rel=1e-15)


def test_evaluate_neumann_flux_of_a_quadratic_is_exact():
    # u = x²: du/dx = 0 at x=0 and 2 at x=1; the one-sided second-order stencil is exact
    grid = Grid1D(9)
    x = grid.coordinates()
    walls = boon.AxisWalls(BoundaryCondition(Neumann(), grid))
    u = torch.stack([x**2, 3.0 * x**2])[:, None]  # fluxes (0, 2) and (0, 6)
    values = torch.tensor([[0.0, 2.0], [0.5, 6.0]], dtype=F64)
    data = case(walls, (u + 1.0).float(), values)
    assert boon.evaluate(u, data)["boundary_error"] == pytest.approx(0.5, rel=1e-9)


def test_error_over_time_of_a_hand_made_forecast():
    grid, steps = Grid1D(7), 4
    relative = [0.1, 0.2, 0.05, 0.4]
    target = 1.0 + torch.rand(3, 1, grid.n, steps, dtype=F64)
    prediction = target * (1.0 + torch.tensor(relative, dtype=F64))
    walls = boon.AxisWalls(BoundaryCondition(Dirichlet(), grid, axis=-2))
    data = case(walls, target, torch.zeros(3, 2, steps, dtype=F64))
    assert boon.error_over_time(prediction, data) == pytest.approx(relative, rel=1e-12)


def test_cavity_error_over_time_reads_component_major_channels():
    # channel c·steps + k is component c at step k; each step's error is scaled by its own factor
    steps, grid = 3, Grid2D.square(5)
    relative = [0.3, 0.1, 0.2]
    target = torch.ones(2, 2 * steps, 5, 5, dtype=F64)
    for k in range(steps):  # each step its own scale, vy four times vx: no mix-up goes unseen
        target[:, k] *= k + 1.0
        target[:, steps + k] *= 4.0 * (k + 1.0) ** 2
    prediction = target.clone()
    for k, e in enumerate(relative):
        prediction[:, k] *= 1.0 + e  # vx at step k
        prediction[:, steps + k] *= 1.0 + e  # vy at step k
    data = case(boon.CavityWalls(grid, steps), target, torch.ones(2, dtype=F64))
    assert boon.error_over_time(prediction, data) == pytest.approx(relative, rel=1e-12)


# ------------------------------------------------------------------------------------------
# one run: which predictions and rows


def test_run_case_predictions_rows_and_precision():
    name = "heat-neumann"
    plan = boon.budget(name, "quick")
    fno = boon.run_case(name, "fno", 5, "quick")
    corrected = boon.run_case(name, "boon", 5, "quick")
    assert set(fno.predictions) == {"fno", "fno-overwrite"} and set(corrected.predictions) == {
        "boon"
    }
    assert fno.predictions["fno"].dtype == torch.float32
    assert fno.predictions["fno-overwrite"].dtype == F64 == corrected.predictions["boon"].dtype
    data = fno.data
    for method, prediction in fno.predictions.items():
        row = next(r for r in fno.rows if r["method"] == method)
        assert row["seed"] == 5 and row["kind"] == "neumann" and row["case"] == name
        assert row["shape"] == [1, plan.nx]
        assert (row["train"], row["test"], row["steps"]) == (plan.train, plan.test, plan.steps)
        assert len(fno.losses) == plan.steps and row["final_loss"] == fno.losses[-1]
        u, target = prediction.double(), data.test_y.double()
        by_hand = ((u - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).mean()
        assert row["rel_l2"] == pytest.approx(by_hand.item(), rel=1e-12)
        assert "rel_l2_over_time" not in row
    # the float32 floor is half an ulp of the largest raw wall value times 3/(2dx)
    raw = fno.predictions["fno"]
    largest = raw[..., [0, -1]].abs().max().item()
    floor = np.spacing(np.float32(largest)) / 2 * 3 / (2 * data.walls.dx)
    assert fno.rows[0]["float32_floor"] == pytest.approx(floor)
    # the overwritten walls meet the fluxes to float64 round-off
    assert fno.rows[1]["boundary_error"] < 1e-9 and corrected.rows[0]["boundary_error"] < 1e-9


def test_run_case_peer_row_is_unconstrained():
    result = boon.run_case("stokes-dirichlet", boon.PEER, 0, "quick")
    assert set(result.predictions) == {boon.PEER}
    assert result.predictions[boon.PEER].dtype == torch.float32
    assert result.rows[0]["boundary_error"] > 1e-3  # a trained FNO only told the walls misses them


# ------------------------------------------------------------------------------------------
# training and prediction with recording models


class Recorder(nn.Module):
    """Returns ``(1 + p)·y`` for the batch's targets ``y`` (loss ``|p|``), recording each call."""

    def __init__(self, targets: torch.Tensor, start: float = 10.0) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(start, dtype=F64))
        self.targets = targets
        self.calls = []

    def forward(self, x, values):
        index = x[:, 0, 0].long()
        self.calls.append((index.tolist(), values, self.training))
        return (1.0 + self.p) * self.targets[index]


def recording_data(count=6):
    x = torch.arange(count, dtype=F64)[:, None, None].expand(count, 1, 4).clone()
    y = 1.0 + torch.rand(count, 1, 4, dtype=F64)
    values = torch.arange(2 * count, dtype=F64).reshape(count, 2)
    walls = boon.AxisWalls(BoundaryCondition(Dirichlet(), Grid1D(4)))
    return boon.CaseData(x, y, x, y, values, values + 100.0, walls), y


def test_train_follows_the_cosine_schedule_and_the_seeded_batches():
    data, y = recording_data()
    plan = boon.Budget(6, 6, 4, steps=7, batch=2, lr=0.1, clip=None)
    model = Recorder(y)
    model.eval()
    seconds, losses = boon.train(model, data, plan, seed=11)
    # Adam with a constant gradient moves p by exactly the learning rate of each step
    rates = [0.1 * (1 + math.cos(math.pi * k / 7)) / 2 for k in range(7)]
    expected = [10.0 - sum(rates[:k]) for k in range(7)]
    assert losses == pytest.approx(expected, rel=1e-6)
    assert model.p.item() == pytest.approx(10.0 - sum(rates), rel=1e-6)
    # batches: consecutive slices of the Trainer's permutation of epoch e, randperm(6) drawn
    # from a generator seeded with seed + e (DistributedSampler's shuffle, one process)
    orders = [
        torch.randperm(6, generator=torch.Generator().manual_seed(11 + epoch)).tolist()
        for epoch in range(3)
    ]
    batches = [order[i : i + 2] for order in orders for i in (0, 2, 4)][:7]
    assert [call[0] for call in model.calls] == batches
    for index, values, mode in model.calls:
        assert torch.equal(values, data.train_values[index]) and mode  # trained in train mode
    assert not model.training and seconds >= 0.0


def test_train_clips_the_gradient_norm():
    # |grad| = 1 clipped to c = eps = 1e-8: Adam's step lr·c/(c + eps) is half the learning rate
    data, y = recording_data()
    model = Recorder(y)
    losses = boon.train(model, data, boon.Budget(6, 6, 4, steps=3, batch=2, lr=0.1, clip=1e-8), 0)[
        1
    ]
    rates = [0.05 * (1 + math.cos(math.pi * k / 3)) / 2 for k in range(3)]
    assert losses == pytest.approx([10.0 - sum(rates[:k]) for k in range(3)], rel=1e-6)


def quick_boon(case_name, seed, steps=5):
    """The quick data of ``case_name``, a few-step budget and its ``boon`` model."""
    data = boon.case_data(case_name, "quick")
    plan = dataclasses.replace(boon.budget(case_name, "quick"), steps=steps)
    return data, plan, boon.build_model("boon", data, plan, seed)


@pytest.mark.parametrize("case_name", ["heat-neumann", "stokes-dirichlet", "burgers-periodic"])
def test_train_matches_a_hand_written_loop_with_fresh_corrections_every_step(
    monkeypatch, case_name
):
    # the Trainer's documented order: the permutation of epoch e drawn with seed + e, the rate
    # lr·(1 + cos(π·step/steps))/2 set before each step, Adam after the gradient norm is clipped;
    # stokes-dirichlet and heat-neumann carry prescribed wall values per sample, burgers-periodic
    # none
    seed, steps = 2, 5
    data, plan, model = quick_boon(case_name, seed, steps)
    _, _, by_hand = quick_boon(case_name, seed, steps)
    assert (data.train_values is None) == (case_name == "burgers-periodic")
    count, per_epoch = data.train_x.shape[0], data.train_x.shape[0] // plan.batch
    assert steps > per_epoch  # the loop crosses into a second epoch
    optimiser = torch.optim.Adam(by_hand.parameters(), lr=plan.lr)
    expected = []
    for step in range(steps):
        epoch, position = divmod(step, per_epoch)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch))
        index = order[position * plan.batch : (position + 1) * plan.batch]
        for group in optimiser.param_groups:
            group["lr"] = plan.lr * (1 + math.cos(math.pi * step / steps)) / 2
        optimiser.zero_grad()
        values = None if data.train_values is None else data.train_values[index]
        prediction = by_hand(data.train_x[index], values)
        loss = metrics.relative_l2(prediction, data.train_y[index])
        loss.backward()
        nn.utils.clip_grad_norm_(by_hand.parameters(), plan.clip)
        optimiser.step()
        expected.append(loss.item())
    # every step reads each corrected layer's probes afresh, with gradients (none kept across
    # steps, whose weights the optimiser changed); a periodic case has no walls, so no probes
    corrected = 0 if data.train_values is None else plan.layers
    stored, original = [], CorrectedLayer.store

    def store(layer, bias, probes, like):
        stored.append(bias.requires_grad)
        return original(layer, bias, probes, like)

    monkeypatch.setattr(CorrectedLayer, "store", store)
    _, losses = boon.train(model, data, plan, seed)
    assert stored == [True] * (steps * corrected)
    assert losses == expected  # the same operations in the same order: bit for bit
    for trained, reference in zip(model.parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(trained, reference)
    assert not model.training


class Diverging(Recorder):
    """A Recorder whose output turns NaN once ``p`` has dropped below 9.85 (at step 3 for lr 0.1:
    Adam moves ``p`` by the rate of each step)."""

    def forward(self, x, values):
        out = super().forward(x, values)
        return out * torch.where(self.p > 9.85, 1.0, math.nan)


def test_train_stops_a_run_whose_loss_turns_nan_and_says_what_to_change():
    data, y = recording_data()
    plan = boon.Budget(6, 6, 4, steps=6, batch=2, lr=0.1, clip=None)
    model = Diverging(y)
    with pytest.raises(FloatingPointError, match=r" at step 3 .* \(the Budget's lr\) or a"):
        boon.train(model, data, plan, seed=0)
    assert len(model.calls) == 3  # stopped there, not run on to the last step


@pytest.mark.parametrize(
    ("change", "seed", "message"),
    [
        ({"lr": 0.0}, 0, "lr must be a finite number > 0, got 0.0"),
        ({"clip": 0.0}, 0, "clip must be a finite number > 0 or None, got 0.0"),
        ({}, -1, "seed must be an integer >= 0, got -1"),
    ],
)
def test_train_refuses_a_rate_or_clip_that_trains_nothing_or_a_negative_seed(change, seed, message):
    data, y = recording_data()
    plan = boon.Budget(6, 6, 4, steps=2, batch=2, **change)
    model = Recorder(y)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        boon.train(model, data, plan, seed)
    assert model.calls == []


def test_train_accepts_a_batch_of_every_sample_and_refuses_more_or_none():
    data, y = recording_data(4)
    boon.train(Recorder(y), data, boon.Budget(4, 4, 4, steps=2, batch=4), seed=0)
    with pytest.raises(ValueError, match=r"batch \(5\) exceeds the training samples \(4\)"):
        boon.train(Recorder(y), data, boon.Budget(4, 4, 4, steps=2, batch=5), seed=0)
    for batch, steps in ((0, 2), (-1, 2), (2, 0)):  # no steps would leave no final loss
        with pytest.raises(
            ValueError,
            match=f"^batch and steps must be at least 1, got batch={batch}, steps={steps}$",
        ):
            boon.train(Recorder(y), data, boon.Budget(4, 4, 4, steps=steps, batch=batch), seed=0)


def test_predict_covers_every_test_sample_with_its_values_without_gradients():
    data, y = recording_data(5)
    model = Recorder(y)
    out = boon.predict(model, data, chunk=2)
    assert [call[0] for call in model.calls] == [[0, 1], [2, 3], [4]]
    for index, values, _ in model.calls:
        assert torch.equal(values, data.test_values[index])
    torch.testing.assert_close(out, 11.0 * y, rtol=1e-15, atol=0)
    assert not out.requires_grad


def test_the_peer_appends_left_then_right_wall_channels_and_boon_keeps_the_pivot_floor():
    data = boon.case_data("stokes-dirichlet", "quick")
    plan = dataclasses.replace(boon.budget("stokes-dirichlet", "quick"), pivot_floor=0.75)
    peer = boon.build_model(boon.PEER, data, plan, seed=0)
    x, values = data.test_x[:2], data.test_values[:2]
    n = x.shape[-1]
    channels = torch.stack([values[:, 0], values[:, 1]], 1).float()[..., None].expand(2, 2, n)
    with torch.no_grad():
        torch.testing.assert_close(peer(x, values), peer.fno(torch.cat([x, channels], 1)))
    layers = boon.build_model("boon", data, plan, seed=0).constrained.correction.layers
    assert [layer.pivot_floor for layer in layers] == [0.75] * plan.layers


# ------------------------------------------------------------------------------------------
# the task table


def row(method, kind="dirichlet", error=0.0, **extra):
    return {
        "case": "c",
        "method": method,
        "kind": kind,
        "rel_l2": 0.1,
        "rel_l2_interior": 0.2,
        "boundary_error": error,
        "train_s": 3.0,
        "params": 7,
        **extra,
    }


def test_rows_label_and_judge_the_wall_errors_against_the_tolerance():
    assert tasks.TOLERANCE == 1e-5
    made = tasks._rows(
        "t",
        [
            row("fno", error=0.5),
            row("fno-overwrite", "neumann", 1e-5),
            row("boon", error=1.0000001e-5),
        ],
    )
    table = {(r.metric): r for r in made}
    assert list(table) == [
        "rel L2 fno",
        "interior rel L2 fno",
        "boundary error fno",
        "train s fno",
        "rel L2 fno-overwrite",
        "interior rel L2 fno-overwrite",
        "flux error fno-overwrite",
        "rel L2 boon",
        "interior rel L2 boon",
        "boundary error boon",
        "train s boon",
    ]
    assert table["rel L2 fno"].value == 0.1 and table["interior rel L2 boon"].value == 0.2
    assert table["train s boon"].value == 3.0
    assert table["boundary error fno"].ok is None and table["boundary error fno"].target == ""
    assert table["flux error fno-overwrite"].ok is True  # exactly the tolerance is met
    assert table["flux error fno-overwrite"].target == "<= 1e-05"
    assert table["boundary error boon"].ok is False


def test_task_runner_names_figures_per_case_and_family(tmp_path):
    context = types.SimpleNamespace(out=tmp_path, size="quick", seed=0, quiet=True)
    rows = tasks.task_runner(("heat-neumann-multistep", "stokes-dirichlet"), "both")(context)
    names = sorted(p.name for p in (tmp_path / "both").iterdir())
    assert names == [
        "heat-neumann-multistep-error-over-time-quick-seed0.png",
        "stokes-dirichlet-boundary-zoom-quick-seed0.png",
    ]
    methods = {r.metric.split()[-1] for r in rows}
    assert methods == {"fno", "fno-overwrite", "boon"}
    tasks.task_runner(("stokes-dirichlet",), "one")(context)
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["boundary-zoom-quick-seed0.png"]


def test_task_runner_plots_each_methods_error_at_each_time(tmp_path, monkeypatch):
    results, plotted = [], []

    def run_case(*args):
        results.append(evaluation.run_case(*args))
        return results[-1]

    monkeypatch.setattr(tasks, "run_case", run_case)
    monkeypatch.setattr(tasks, "plot_error_over_time", lambda *args: plotted.append(args))
    context = types.SimpleNamespace(out=tmp_path, size="quick", seed=0, quiet=True)
    tasks.task_runner(("heat-neumann-multistep",), "t")(context)
    (curves, times, _, name), data = plotted[0], results[0].data
    assert name == "heat-neumann-multistep" and times is data.times
    predictions = {k: v for result in results for k, v in result.predictions.items()}
    assert set(curves) == set(predictions) == {"fno", "fno-overwrite", "boon"}
    target = data.test_y.double()
    for method, prediction in predictions.items():
        difference = prediction.double() - target  # (sample, 1, x, t): time along the last axis
        by_hand = (difference.norm(dim=2) / target.norm(dim=2)).mean(0)[0]
        assert curves[method] == [pytest.approx(by_hand.tolist(), rel=1e-12)]


# ------------------------------------------------------------------------------------------
# one run is build_model, train and predict with the run's seed; its row counts and times them


def test_run_case_is_the_seeded_model_trained_with_the_same_seed(monkeypatch):
    name, seed = "stokes-dirichlet", 3
    data, plan = boon.case_data(name, "quick"), boon.budget(name, "quick")
    model = boon.build_model("boon", data, plan, seed)
    _, losses = boon.train(model, data, plan, seed)
    walled = boon.with_walls(
        boon.predict(model, data).double(), data.walls.conditions(data.test_values)
    )
    calls, original = [], evaluation.train

    def train(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(evaluation, "train", train)
    started = time.perf_counter()
    result = boon.run_case(name, "boon", seed, "quick", quiet=False)
    elapsed = time.perf_counter() - started
    assert result.losses == losses
    assert torch.equal(result.predictions["boon"], walled)
    assert calls[0][3:] == (seed, False)  # the seed and quiet reach the training
    assert 0.0 < result.rows[0]["train_s"] <= elapsed


def test_run_case_counts_the_parameters_of_the_reference_fno1d():
    # the plain layout: a lifting from (input + grid), per layer a complex (h, h, m//2 + 1)
    # kernel with an (h, 1) bias and an (h, h) skip, a projection through 128 channels
    name = "heat-neumann"
    plan = boon.budget(name, "quick")
    assert plan.fno == "plain"
    h, (m,), layers, width = plan.hidden, plan.modes, plan.layers, 128
    for method, extra in (("fno", 0), ("boon", 0), (boon.PEER, 2)):
        inputs = 1 + extra + 1
        count = inputs * h + h + layers * (h * h * (m // 2 + 1) + h + h * h)
        count += h * width + width + width * 1 + 1
        row = boon.run_case(name, method, 0, "quick").rows[0]
        assert row["params"] == count, method


def test_build_model_draws_the_reference_fno_with_the_global_seed():
    # the plain layout with the budget's sizes, drawn right after torch.manual_seed(seed)
    name = "heat-neumann"
    data, plan = boon.case_data(name, "quick"), boon.budget(name, "quick")
    torch.manual_seed(7)
    reference = plain_fno(
        n_modes=plan.modes,
        in_channels=1,
        out_channels=1,
        hidden_channels=plan.hidden,
        n_layers=plan.layers,
    )
    built = dict(boon.build_model("fno", data, plan, seed=7).fno.named_parameters())
    expected = dict(reference.named_parameters())
    assert built.keys() == expected.keys()
    assert all(torch.equal(built[k], expected[k]) for k in expected)


def test_overwriting_refuses_the_wall_input_peer():
    name = "stokes-dirichlet"
    data, plan = boon.case_data(name, "quick"), boon.budget(name, "quick")
    with pytest.raises(ValueError, match="plain FNO"):
        boon.overwriting(boon.build_model(boon.PEER, data, plan, seed=0), data)
