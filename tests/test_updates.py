"""physml.updates: focal distillation against hand-computed losses and plain training, the guard's
routing against the surrogate and the fallback themselves, and the checks' scores by hand."""

import copy
import json
import math
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarking import load_benchmark
from damage import flip_a_bit_of_a_zip_entry
from torch import nn
from torch.utils.data import TensorDataset

from pdes import Dirichlet, Grid1D, Neumann, Periodic
from physml import metrics
from physml._checks import NonFiniteError
from physml.cli import main
from physml.constraints import BoundaryCondition, constrain, mass_conservation
from physml.errors import ZeroNormError
from physml.outputs import Ensemble, Gaussian, LowRankCovariance
from physml.tasks import updates as task
from physml.training import TrainConfig, Trainer, load_checkpoint
from physml.updates import (
    BoundaryError,
    ConstraintResidual,
    EnsembleSpread,
    FocalDistillation,
    InputRange,
    NonFiniteAnswer,
    PDEResidual,
    focal_weights,
    guard,
    point_prediction,
    refine,
    sample_errors,
)

F64 = torch.float64


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class Scale(nn.Module):
    """``x ↦ s x`` with a trainable ``s``."""

    def __init__(self, s):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))

    def forward(self, x):
        return self.s * x


def zero_loss(model, batch):
    return torch.zeros(())


# ------------------------------------------------------------------------- focal distillation


def test_focal_weights_judge_right_as_the_flip_metrics_do():
    errors = torch.tensor([0.1, 0.05, 0.2], dtype=torch.float32)  # float32(0.1) > 0.1 in float64
    weights = focal_weights(errors, 0.1, 1.0, 5.0)
    # a new error above every τ: the flips are the samples the metrics count as right before
    right = metrics.tolerance_flips(errors, torch.full_like(errors, 1.0), 0.1, reduction="none")
    assert right.tolist() == [True, True, False]  # the metrics count float32(0.1) within 0.1
    assert weights.tolist() == [6.0, 6.0, 1.0] and weights.dtype == torch.float64


def test_focal_weights_by_hand():
    weights = focal_weights(torch.tensor([0.05, 0.2, 0.1, 0.3], dtype=F64), 0.1, 1.0, 5.0)
    assert weights.tolist() == [6.0, 1.0, 6.0, 1.0]
    assert focal_weights(torch.tensor([0.05, 0.2]), 0.1, 1.0, 0.0).tolist() == [1.0, 1.0]


def test_distillation_loss_on_a_hand_computed_batch():
    x = rand(4, 1, 8, dtype=F64)
    c = torch.tensor([0.05, 0.25, -0.05, 1.0], dtype=F64)
    y = x * (1 + c)[:, None, None]  # old(x) = x: relative errors |c| / |1 + c|
    errors = (c.abs() / (1 + c).abs()).tolist()
    assert [e <= 0.1 for e in errors] == [True, False, True, False]
    old, new = Scale(1.0).double(), Scale(2.0).double()  # the gap is x² per point
    loss = FocalDistillation(zero_loss, old, tau=0.1, strength=0.5, alpha=1.0, beta=5.0)
    weights = [6.0, 1.0, 6.0, 1.0]
    gaps = [float(x[i].square().mean()) for i in range(4)]
    expected = 0.5 * sum(w * g for w, g in zip(weights, gaps, strict=True)) / sum(weights)
    assert loss(new, (x, y)).item() == pytest.approx(expected, rel=1e-12)
    uniform = FocalDistillation(zero_loss, old, tau=0.1, strength=0.5, beta=0.0)
    assert uniform(new, (x, y)).item() == pytest.approx(0.5 * sum(gaps) / 4, rel=1e-12)


def test_the_old_model_gets_no_gradient():
    old, new = Scale(1.0), Scale(2.0)
    x = rand(3, 1, 5)
    loss = FocalDistillation(zero_loss, old, tau=0.1)
    loss(new, (x, 2 * x)).backward()
    assert old.s.grad is None and not old.s.requires_grad and not old.training
    assert new.s.grad is not None and new.s.grad != 0


def _fit(loss, out):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv1d(4, 1, 1))
    x = rand(16, 1, 12, seed=1)
    data = TensorDataset(x, torch.sin(x) + 0.1)
    config = TrainConfig(steps=6, batch=4, lr=1e-2, checkpoint_every=100)
    report = Trainer(model, loss, config, out=out, quiet=True).fit(data)
    return report.losses, model.state_dict()


def data_loss(model, batch):
    x, y = batch
    return metrics.relative_l2(model(x), y)


def test_lambda_and_beta_zero_is_plain_training_bitwise(tmp_path):
    torch.manual_seed(5)
    old = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Conv1d(2, 1, 1))
    plain_losses, plain_state = _fit(data_loss, tmp_path / "plain")
    wrapped = FocalDistillation(data_loss, old, tau=0.1, strength=0.0, beta=0.0)
    pc_losses, pc_state = _fit(wrapped, tmp_path / "pc")
    assert pc_losses == plain_losses
    assert all(torch.equal(plain_state[k], pc_state[k]) for k in plain_state)
    assert not any(name.startswith("old") for name in pc_state)  # not checkpointed with it
    pulled = FocalDistillation(data_loss, old, tau=0.1, strength=1.0, beta=0.0)
    assert _fit(pulled, tmp_path / "pulled")[0] != plain_losses  # the term does act


def test_lambda_zero_is_the_plain_loss_even_where_the_old_error_is_undefined():
    x, y = rand(3, 1, 5), rand(3, 1, 5)
    y[0] = 0.0  # a quiescent sample: its relative error is undefined
    model = Scale(2.0)

    def mse(m, batch):
        return (m(batch[0]) - batch[1]).square().mean()

    assert torch.equal(
        FocalDistillation(mse, Scale(1.0), 0.1, strength=0.0)(model, (x, y)), mse(model, (x, y))
    )


def test_distillation_refuses_the_new_model_as_the_old_one_and_a_bad_error():
    model = Scale(2.0)
    with pytest.raises(ValueError, match="the new model is the old_model itself"):
        FocalDistillation(zero_loss, model, tau=0.1)(model, (rand(2, 1, 4), rand(2, 1, 4)))
    scalar = FocalDistillation(zero_loss, Scale(1.0), 0.1, error=lambda p, t: torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"error must return one value per sample, shape \(2,\)"):
        scalar(Scale(2.0), (rand(2, 1, 4), rand(2, 1, 4)))


def test_distillation_refuses_a_new_model_sharing_the_old_ones_parameters():
    """A new model built around the old one (BOON on the old FNO) had its parameters frozen
    with the old one's and the Trainer failed on a loss without gradient; a trainable deep copy
    trains."""
    grid = Grid1D(4, 0.0, 1.0)
    walls = BoundaryCondition(Dirichlet(0.0, 0.0), grid)
    old = nn.Sequential(nn.Linear(4, 4))
    batch = (rand(2, 4, seed=1), rand(2, 4, seed=2))

    def mse(m, batch):
        return (m(batch[0]) - batch[1]).square().mean()

    shared = constrain(old, walls)
    named = r"old_model \(model\.0\.weight, model\.0\.bias\) and has no other trainable"
    with pytest.raises(ValueError, match=rf"shares parameters with {named}.*deepcopy\(old\)"):
        FocalDistillation(mse, old, tau=0.1)(shared, batch)
    new = constrain(copy.deepcopy(old).requires_grad_(True), walls)
    loss = FocalDistillation(mse, old, tau=0.1)(new, batch)
    assert loss.requires_grad
    assert all(p.requires_grad for p in new.parameters())


def test_distillation_trains_a_new_head_on_the_old_encoder_and_warns_naming_it():
    """A new model reusing the old one's (frozen) encoder and training a new head was refused
    since the new model shared parameters with the old one; it trains again: its head gets the
    gradient of the loss by hand, the shared encoder none, and one warning names the encoder's
    parameters (and says so once, not at every step). Many shared parameters are named four at
    a time."""
    encoder = nn.Linear(4, 3)
    old = nn.Sequential(encoder, nn.Linear(3, 4))
    new = nn.Sequential(encoder, nn.Linear(3, 4))
    x, y = rand(2, 4, seed=1), rand(2, 4, seed=2)

    def mse(m, batch):
        return (m(batch[0]) - batch[1]).square().mean()

    loss = FocalDistillation(mse, old, tau=0.1, strength=0.0)
    with pytest.warns(
        UserWarning, match=r"shares parameters with old_model \(0\.weight, 0\.bias\)"
    ):
        loss(new, (x, y)).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(new, (x, y))
    features = encoder(x).detach()
    residual = new[1](features).detach() - y
    expected = 2 * residual.T @ features / residual.numel()
    torch.testing.assert_close(new[1].weight.grad, expected)
    assert encoder.weight.grad is None
    deep = nn.Sequential(*(nn.Linear(4, 4) for _ in range(6)))
    with pytest.warns(
        UserWarning, match=r"\(0\.0\.weight, 0\.0\.bias, 0\.1\.weight, 0\.1\.bias and 8 more\)"
    ):
        FocalDistillation(mse, deep, tau=0.1)(nn.Sequential(deep, nn.Linear(4, 4)), (x, y))


def test_the_loss_forward_pass_is_reused():
    class Counting(Scale):
        calls = 0

        def forward(self, x):
            self.calls += 1
            return super().forward(x)

    x = rand(3, 1, 5)
    model = Counting(2.0)
    FocalDistillation(data_loss, Scale(1.0), tau=0.1)(model, (x, 3 * x))
    assert model.calls == 1
    FocalDistillation(zero_loss, Scale(1.0), tau=0.1)(model, (x, 3 * x))
    assert model.calls == 2  # the loss did not run the model: one forward of its own


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tau": -1.0}, ValueError, "tau"),
        ({"tau": True}, TypeError, r"^tau must be a non-negative number, got True"),
        ({"strength": float("nan")}, ValueError, "strength"),
        ({"alpha": 0.0, "beta": 0.0}, ValueError, "alpha and beta"),
        ({"loss": 3}, TypeError, "loss must be callable"),
        ({"old_model": lambda x: x}, TypeError, "old_model must be an nn.Module"),
        ({"unpack": "xy"}, TypeError, "^unpack must be callable, got str$"),
        ({"error": None}, TypeError, "^error must be callable, got NoneType$"),
        ({"tau": torch.tensor([0.1, 0.2])}, TypeError, r"^tau must be a non-negative number"),
        ({"beta": -5.0}, ValueError, r"^beta must be a finite number >= 0, got -5.0$"),
        ({"alpha": "1"}, TypeError, r"^alpha must be a non-negative number, got '1'$"),
    ],
)
def test_distillation_rejects_bad_settings(kwargs, error, message):
    arguments = {"loss": zero_loss, "old_model": Scale(1.0), "tau": 0.1, **kwargs}
    with pytest.raises(error, match=message):
        FocalDistillation(**arguments)


def test_distillation_refuses_a_new_model_that_is_a_plain_function_by_name():
    """The new model's parameters and hooks are read: a plain function is refused, naming
    ``model``, not an ``AttributeError`` from inside."""
    loss = FocalDistillation(zero_loss, Scale(1.0), tau=0.1)
    x = rand(2, 1, 4)
    with pytest.raises(TypeError, match=r"^model must be an nn.Module, got function \("):
        loss(lambda inputs: 2 * inputs, (x, x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": lambda x: x}, r"^model must be an nn.Module, got function \("),
        ({"items": 5}, r"^items must be a dataset with a length and items by index .* got int$"),
        ({"unpack": 3}, "^unpack must be callable, got int$"),
        ({"error": "l2"}, "^error must be callable, got str$"),
    ],
)
def test_sample_errors_refuses_what_is_no_model_dataset_or_function_by_name(kwargs, message):
    x = rand(3, 1, 4)
    arguments = {"model": Scale(1.0), "items": TensorDataset(x, x), **kwargs}
    with pytest.raises(TypeError, match=message):
        sample_errors(**arguments)


def test_distillation_rejects_outputs_of_another_shape():
    class Crop(nn.Module):
        def forward(self, x):
            return x[..., :-1]

    loss = FocalDistillation(zero_loss, Scale(1.0), tau=0.1)
    x = rand(2, 1, 4)
    with pytest.raises(ValueError, match="old model's shape"):
        loss(Crop(), (x, x))


# --------------------------------------------------------------------- train --distill-from

SMALL = ["--modes", "4", "--hidden", "8", "--layers", "2", "--batch", "4", "--quiet"]


def test_train_distill_from_at_toy_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "12", "--nx", "33", "--out", "h.h5", "--quiet"]) == 0
    train = ["train", "--data", "h.h5", "--model", "fno", "--task", "operator", "--steps", "3"]
    assert main([*train, "--out", "old", *SMALL]) == 0
    distilled = [*train, "--out", "new", "--hidden", "12", "--distill-from", "old"]
    assert main([*distilled, "--distill-beta", "2", *SMALL[:2], *SMALL[4:]]) == 0
    state = load_checkpoint(tmp_path / "new")
    settings = state["model_config"]["distill"]
    assert {k: settings[k] for k in ("strength", "alpha", "beta")} == {
        "strength": 1.0,
        "alpha": 1.0,
        "beta": 2.0,
    }  # the defaults recorded too, so restating one resumes
    # tau: the old model's median relative L2 on the training pairs (12 samples, 10% held out)
    from physml.data import SingleStepDataset, load
    from physml.updates import load_previous

    data = load("h.h5")
    pairs = SingleStepDataset(data)
    x = torch.stack([pairs[i][0] for i in range(11)])
    y = torch.stack([pairs[i][1] for i in range(11)])
    old = load_previous(tmp_path / "old", data)
    with torch.no_grad():
        median = float(metrics.relative_l2(old(x), y, reduction="none").median())
    assert settings["tau"] == pytest.approx(median, rel=1e-6)
    assert json.loads((tmp_path / "new" / "report.json").read_text())["steps"] == 3
    # settings without --distill-from, a task the old model does not serve, a missing folder
    assert main([*train, "--out", "x", "--distill-beta", "2", *SMALL]) == 2
    assert "need --distill-from" in capsys.readouterr().err
    rollout = ["train", "--data", "h.h5", "--model", "fno", "--task", "rollout", "--steps", "1"]
    assert main([*rollout, "--out", "y", "--distill-from", "old", *SMALL]) == 2
    assert "task 'operator'" in capsys.readouterr().err
    assert main([*train, "--out", "z", "--distill-from", "nowhere", *SMALL]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --distill-from: no run folder or checkpoint file at 'nowhere'\n"
    )
    (tmp_path / "empty").mkdir()
    assert main([*train, "--out", "z", "--distill-from", "empty", *SMALL]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --distill-from: 'empty' holds no checkpoint.pt: not a run folder of "
        "physml train\n"
    )
    (tmp_path / "notes.txt").write_text("x")
    assert main([*train, "--out", "z", "--distill-from", "notes.txt", *SMALL]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --distill-from: 'notes.txt' is not a checkpoint of physml train (not "
        "a zip archive, as torch.save writes)\n"
    )
    shutil.copytree(tmp_path / "old", tmp_path / "damaged")
    flip_a_bit_of_a_zip_entry(tmp_path / "damaged" / "checkpoint.pt")
    assert main([*train, "--out", "z", "--distill-from", "damaged", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"physml train: error: --distill-from: {str(Path('damaged', 'checkpoint.pt'))!r} cannot "
        "be read as a checkpoint of physml train: it is damaged"
    )
    assert err.endswith(
        "; restore an intact copy of the old model's run folder, or give another one\n"
    )
    assert not (tmp_path / "z").exists()


def test_a_distilled_run_records_the_settings_its_loss_uses(tmp_path, monkeypatch):
    """What the checkpoint says is what the built loss does: here a builder whose β defaults to
    3 (not --distill-beta's documented 5) and whose λ halves what it is given."""
    import inspect

    from physml.training.commands import DISTILL_DEFAULTS
    from physml.updates import previous

    defaults = inspect.signature(previous.distill_from).parameters
    assert {name: defaults[name].default for name in ("strength", "alpha", "beta")} == {
        "strength": DISTILL_DEFAULTS["distill_lambda"],
        "alpha": DISTILL_DEFAULTS["distill_alpha"],
        "beta": DISTILL_DEFAULTS["distill_beta"],
    }  # the flags' help states the builder's defaults
    builder = previous.distill_from

    def other_builder(*args, beta=3.0, strength=1.0, **kwargs):
        return builder(*args, beta=beta, strength=strength / 2, **kwargs)

    monkeypatch.setattr(previous, "distill_from", other_builder)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", "h.h5", "--quiet"]) == 0
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    train = ["train", "--data", "h.h5", "--model", "fno", "--task", "operator", *tiny]
    assert main([*train, "--steps", "1", "--out", "old"]) == 0
    distilled = [*train, "--schedule", "constant", "--distill-from", "old", "--distill-tau", "0.25"]
    assert main([*distilled, "--out", "new", "--distill-lambda", "0.5", "--steps", "1"]) == 0
    recorded = load_checkpoint("new")["model_config"]["distill"]
    assert recorded == {"strength": 0.25, "alpha": 1.0, "beta": 3.0, "tau": 0.25}
    assert main([*distilled, "--out", "new", "--distill-lambda", "0.5", "--steps", "2"]) == 0
    assert json.loads(Path("new/report.json").read_text())["resumed_from"] == 1


def test_a_distilled_run_resumes_however_its_settings_are_spelled(tmp_path, monkeypatch, capsys):
    from physml.training.checkpoint import checkpoint_path

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", "h.h5", "--quiet"]) == 0
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    train = ["train", "--data", "h.h5", "--model", "fno", "--task", "operator", *tiny]
    assert main([*train, "--steps", "1", "--out", "old"]) == 0
    distilled = [*train, "--schedule", "constant", "--distill-from", "old"]
    Path("lambda.toml").write_text("distill_lambda = 1\n")

    def resumed(out: str, steps: int, *spelling: str) -> int:
        assert main([*distilled, "--out", out, "--steps", str(steps), *spelling]) == 0
        return json.loads(Path(out, "report.json").read_text())["resumed_from"]

    for out, first, then in (
        ("flag", [], ["--distill-lambda", "1"]),
        ("unflag", ["--distill-lambda", "1"], []),
        ("toml", [], ["--config", "lambda.toml"]),
    ):
        assert resumed(out, 1, *first) == 0
        assert resumed(out, 2, *then) == 1
    # a checkpoint of the earlier record (only the settings typed, and tau) resumes too
    state = load_checkpoint("toml")
    state["model_config"]["distill"] = {"tau": state["model_config"]["distill"]["tau"]}
    torch.save(state, checkpoint_path(tmp_path / "toml"))
    assert resumed("toml", 3, "--distill-lambda", "1.0") == 2
    # another weight is the same model with another loss: refused naming the setting
    assert main([*distilled, "--out", "toml", "--steps", "4", "--distill-lambda", "0.5"]) == 2
    assert (
        "physml train: error: checkpoint: 'toml' was trained with distill.strength 1.0, this "
        "command asks 0.5 (--distill-lambda); refusing to resume. Use another --out, or the run's "
        "own settings"
    ) in capsys.readouterr().err
    assert main([*train, "--out", "toml", "--steps", "4", "--schedule", "constant"]) == 2
    assert (
        "checkpoint: 'toml' was trained with --distill-from, this command leaves it out; "
        "refusing to resume."
    ) in capsys.readouterr().err


def test_distill_from_refuses_another_map_and_other_data_by_name(tmp_path, monkeypatch, capsys):
    from physml.data import load
    from physml.training.checkpoint import CheckpointError, checkpoint_path
    from physml.updates import load_previous

    monkeypatch.chdir(tmp_path)
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    for name, nx in (("h17.h5", "17"), ("h33.h5", "33")):
        assert main(["generate", "heat", "--n", "4", "--nx", nx, "--out", name, "--quiet"]) == 0
    assert main(["generate", "cavity", "--n", "4", "--nx", "9", "--nt", "3", "--t-end", "0.02",
                 "--out", "c.h5", "--quiet"]) == 0  # fmt: skip
    fno = ["--model", "fno", "--steps", "1", *tiny]
    rollout = ["train", "--data", "h17.h5", "--task", "rollout", *fno]
    assert main([*rollout, "--k", "1", "--out", "k1"]) == 0
    # u(t) -> u(t + 1) is not the teacher of u(t) -> u(t + 2)
    assert main([*rollout, "--k", "2", "--out", "k2", "--distill-from", "k1"]) == 2
    assert "'k1' holds a rollout model with k=1, this run has k=2" in capsys.readouterr().err
    assert not (tmp_path / "k2").exists()
    data = load("h17.h5")
    assert load_previous("k1", data, "rollout", {"k": 1}) is not None
    # a forecast teacher: only the options its task reads, each named (t_out here)
    state = load_checkpoint("k1")
    state["model_config"] = {**state["model_config"], "task": "forecast"}
    state["model_config"]["options"] = {**state["model_config"]["options"], "t_in": 3, "t_out": 4}
    (tmp_path / "cast").mkdir()
    torch.save(state, checkpoint_path(tmp_path / "cast"))
    with pytest.raises(ValueError, match=r"forecast model with t_out=4, this run has t_out=2:"):
        load_previous("cast", data, "forecast", {"t_in": 3, "t_out": 2, "k": 7})
    # a cavity model teaches no heat one: both PDEs named, before any shape
    operator = ["train", "--task", "operator", *fno]
    assert main([*operator, "--data", "c.h5", "--out", "c2d"]) == 0
    assert main([*operator, "--data", "h17.h5", "--out", "x", "--distill-from", "c2d"]) == 2
    err = capsys.readouterr().err
    assert (
        "--distill-from: 'c2d' was trained on 'cavity' solutions, but this --data holds 'heat' ones"
    ) in err
    # a 2-D FNO teaches no 1-D one (data that name no PDE): the shapes named, not a weight mismatch
    unnamed = load("h17.h5")
    unnamed.attrs.pop("pde")
    with pytest.raises(ValueError) as refused:
        load_previous("c2d", unnamed, "operator")
    assert (
        "--distill-from: this --data holds 1-D fields, but the old run 'c2d' was trained on 2-D "
        "ones (pairs of shapes [[1, 17], [1, 17]], trained on [[1, 9, 9], [1, 9, 9]])"
    ) in str(refused.value)
    # an FNO teaches on another grid of its axes
    assert main([*operator, "--data", "h17.h5", "--out", "o17"]) == 0
    assert main([*operator, "--data", "h33.h5", "--out", "o33", "--distill-from", "o17"]) == 0
    # an FNO of the earlier spectral convolution on a 9 x 9 grid: refused as resume refuses it
    legacy = load_checkpoint("c2d")
    legacy["model_config"].pop("spectral")
    (tmp_path / "legacy").mkdir()
    torch.save(legacy, checkpoint_path(tmp_path / "legacy"))
    with pytest.raises(CheckpointError, match=r"^--distill-from: 'legacy': .* earlier spectral"):
        load_previous("legacy", load("c.h5"), "operator")


def test_distill_from_refuses_a_model_of_another_pde_by_name(tmp_path, monkeypatch, capsys):
    """A heat FNO reads a burgers file's 1-D fields fine; it is still no teacher for burgers."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "17", "--out", "h.h5", "--quiet"]) == 0
    assert main(["generate", "burgers", "--n", "4", "--nx", "16", "--nt", "2", "--out", "b.h5",
                 "--quiet"]) == 0  # fmt: skip
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    operator = ["train", "--task", "operator", "--model", "fno", "--steps", "1", *tiny]
    assert main([*operator, "--data", "h.h5", "--out", "heat_run"]) == 0
    capsys.readouterr()
    assert main([*operator, "--data", "b.h5", "--out", "b", "--distill-from", "heat_run"]) == 2
    err = capsys.readouterr().err
    assert (
        "--distill-from: 'heat_run' was trained on 'heat' solutions, but this --data holds "
        "'burgers' ones"
    ) in err
    assert not (tmp_path / "b").exists()


def test_distill_from_a_boon_fno_onto_a_periodic_file_names_the_flag_and_the_reason(
    tmp_path, monkeypatch, capsys
):
    """The student is an FNO already: the refusal is the teacher's, not advice to use one."""
    monkeypatch.chdir(tmp_path)
    size = ["--n", "4", "--nx", "16", "--nt", "3", "--quiet"]
    assert main(["generate", "heat", *size, "--out", "walls.h5"]) == 0
    assert main(["generate", "heat", *size, "--bc", "periodic", "--out", "per.h5"]) == 0
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    operator = ["train", "--task", "operator", "--steps", "1", *tiny]
    assert main([*operator, "--data", "walls.h5", "--model", "boon-fno", "--out", "boon"]) == 0
    capsys.readouterr()
    student = [*operator, "--data", "per.h5", "--model", "fno", "--out", "s"]
    assert main([*student, "--distill-from", "boon"]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --distill-from: 'boon': its boon-fno cannot be rebuilt for this "
        "--data: a periodic file has no walls to enforce (its boundary is 'periodic'); distill "
        "from a model that can serve these files (e.g. a --model fno run)\n"
    )
    assert not (tmp_path / "s").exists()


def test_load_previous_refuses_a_model_not_trained_on_pairs(tmp_path, monkeypatch):
    from physml.data import load
    from physml.updates import load_previous

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "17", "--out", "h.h5", "--quiet"]) == 0
    ensemble = ["train", "--data", "h.h5", "--model", "ensemble", "--task", "operator"]
    tiny = ["--steps", "1", "--hidden", "4", "--layers", "1", "--members", "2", "--batch", "4"]
    assert main([*ensemble, *tiny, "--quiet", "--out", "members"]) == 0
    refused = r"^--distill-from: 'members' holds a 'ensemble' model, which"
    with pytest.raises(ValueError, match=refused):
        load_previous("members", load("h.h5"), "operator")


def test_load_previous_reads_missing_options_as_defaults_and_keeps_the_random_state(
    tmp_path, monkeypatch
):
    """Options the new run leaves out are the defaults (``k = 1``, the old run's); rebuilding
    the old network draws initial weights, but the global random state stays as it was."""
    from physml.data import load
    from physml.training.checkpoint import checkpoint_path
    from physml.training.families import DEFAULTS
    from physml.updates import load_previous
    from physml.updates.previous import distill_from

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "17", "--out", "h.h5", "--quiet"]) == 0
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    rollout = ["train", "--data", "h.h5", "--model", "fno", "--task", "rollout", "--steps", "1"]
    assert main([*rollout, *tiny, "--out", "old"]) == 0
    data = load("h.h5")
    assert DEFAULTS["k"] == load_checkpoint("old")["model_config"]["options"]["k"] == 1
    assert load_previous("old", data, "rollout", {}) is not None
    with pytest.raises(ValueError, match="with k=1, this run has k=2"):
        load_previous("old", data, "rollout", {"k": 2})
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    old = load_previous("old", data, "rollout")
    assert torch.equal(torch.rand(3), expected)
    assert not old.training and not any(p.requires_grad for p in old.parameters())
    wrapped = distill_from("old", zero_loss, data, None, "rollout", 0.5, 2.0, 7.0, tau=0.25)
    assert (wrapped.strength, wrapped.alpha, wrapped.beta, wrapped.tau) == (0.5, 2.0, 7.0, 0.25)
    # a model_config naming no model physml train builds
    state = load_checkpoint("old")
    state["model_config"] = {**state["model_config"], "model": "mystery"}
    (tmp_path / "odd").mkdir()
    torch.save(state, checkpoint_path(tmp_path / "odd"))
    with pytest.raises(ValueError, match=r"^--distill-from: 'odd' was not written by physml train"):
        load_previous("odd", data, "rollout")


# ------------------------------------------------------------------------------------ guard


def surrogate(params):
    """A stand-in surrogate: a field (batch, 1, 5) from parameters (batch, 2), float64."""
    return params[:, :1, None] + params[:, 1:, None] * torch.linspace(0, 1, 5, dtype=F64)


def solver(params):
    return surrogate(params) + 1000.0


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, inputs):
        self.calls.append(inputs.clone())
        return self.fn(inputs)


PARAMS = torch.tensor(
    [[0.1, 0.2], [1.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.3, -0.4], [0.0, 1.0]], dtype=F64
)
INSIDE = InputRange([0.0, 0.0], [1.0, 1.0])


def test_a_check_that_never_fires_gives_the_surrogate_exactly():
    fallback = Counter(solver)
    wide = InputRange([-10.0, -10.0], [10.0, 10.0])
    result = guard(surrogate, [wide], fallback)(PARAMS)
    assert torch.equal(result.output, surrogate(PARAMS)) and not fallback.calls
    assert result.surrogate_fraction == 1.0 and result.solved is None
    assert all(row["answered_by"] == "surrogate" and not row["fired"] for row in result.report())


def test_the_report_says_who_answered_which_checks_fired_and_their_scores():
    """A sample sent to the fallback shows the checks' scores of the surrogate's answer (why it
    was sent), not the quality of the fallback's answer it got; a row holds nothing else."""
    result = guard(surrogate, [INSIDE], solver)(PARAMS)
    rows = result.report()
    assert rows[1] == {  # (1.5, 0.5): 0.5 above the range [0, 1] of width 1
        "sample": 1,
        "answered_by": "fallback",
        "fired": ["input_range"],
        "scores": {"input_range": pytest.approx(0.5)},
    }
    assert torch.equal(result.output[1], solver(PARAMS[1:2])[0])
    assert rows[0] == {
        "sample": 0,
        "answered_by": "surrogate",
        "fired": [],
        "scores": {"input_range": 0.0},
    }


@pytest.mark.parametrize("checks", [[], [InputRange([-10.0, -10.0], [10.0, 10.0])]])
def test_a_nan_answer_of_the_surrogate_is_never_trusted(checks):
    def broken(params):
        out = surrogate(params)
        out[2] = float("nan")
        return out

    result = guard(broken, checks, solver)(PARAMS)
    expected = surrogate(PARAMS)
    expected[2] = solver(PARAMS[2:3])[0]
    assert torch.equal(result.output, expected)
    assert result.fallback.tolist() == [False, False, True, False, False, False]
    assert result.report()[2]["fired"] == ["finite"] and result.surrogate_fraction == 5 / 6
    assert result.counts() == {"finite": 1, **{check.name: 0 for check in checks}}


def test_a_single_nan_point_sends_its_sample_to_the_fallback():
    def one_bad_point(params):
        out = surrogate(params)
        out[3, 0, 2] = float("nan")  # sample 3: one NaN among four finite points
        return out

    result = guard(one_bad_point, [], solver)(PARAMS)
    assert result.fallback.tolist() == [False, False, False, True, False, False]
    expected = surrogate(PARAMS)
    expected[3] = solver(PARAMS[3:4])[0]
    assert torch.equal(result.output, expected)


def nan_where_first_above_one(params):
    """:func:`ensemble_surrogate`, but its first member answers NaN where ``p0 > 1``; an Ensemble
    cannot hold NaN, so the call refuses the whole batch."""
    samples = ensemble_surrogate(params).samples.clone()
    samples[0, params[:, 0] > 1] = float("nan")
    return Ensemble(samples)


def test_an_ensemble_surrogate_refusing_nan_answers_sends_just_those_samples_to_the_fallback():
    fallback = Counter(solver)
    params = PARAMS.clone()
    params[4, 0] = 1.25  # samples 1 and 4: p0 > 1
    result = guard(nan_where_first_above_one, [EnsembleSpread(1e9)], fallback)(params)
    routed = torch.tensor([False, True, False, False, True, False])
    assert torch.equal(result.fallback, routed) and torch.equal(result.non_finite, routed)
    assert len(fallback.calls) == 1 and torch.equal(fallback.calls[0], params[routed])
    assert torch.equal(result.output[routed], solver(params[routed]))
    mean = ensemble_surrogate(params[~routed]).samples.mean(0)  # the others: their mean
    assert torch.equal(result.output[~routed], mean)
    report = result.report()
    assert report[1]["fired"] == ["finite"] and report[0]["fired"] == []
    assert np.isnan(report[4]["scores"]["spread"]) and report[0]["scores"]["spread"] < 1e9
    assert result.counts() == {"finite": 2, "spread": 0}
    # every sample refused: the fallback answers all
    result = guard(nan_where_first_above_one, [EnsembleSpread(1e9)], solver)(params[[1, 4]])
    assert torch.equal(result.output, solver(params[[1, 4]])) and result.surrogate_fraction == 0


def as_kind(kind, params):
    """:func:`surrogate` answering as a tensor, an Ensemble or a Gaussian (diagonal or low-rank
    covariance on a diagonal or full base), every sample on its own."""
    field = surrogate(params)
    if kind == "tensor":
        return field
    if kind == "ensemble":
        return ensemble_surrogate(params)
    variance = (params[:, 1:, None] ** 2 + 0.01) * torch.ones(5, dtype=F64)
    if kind == "diagonal":
        return Gaussian(field, variance)
    diagonal = kind == "low-rank"
    base = variance if diagonal else torch.diag_embed(variance)
    return Gaussian(field, LowRankCovariance(base, 0.01 * field[..., None], diagonal=diagonal))


class Refusing:
    """:func:`as_kind` refusing its whole batch (a bare NonFiniteError) where a sample has
    ``p0 > 1``; batches of at most ``named`` samples are refused with a NonFiniteAnswer naming
    them instead. ``answered`` counts the samples of the calls it answered."""

    def __init__(self, kind, named=0):
        self.kind, self.named, self.answered = kind, named, 0

    def __call__(self, params):
        bad = (params[:, 0] > 1).nonzero().flatten().tolist()
        if bad and len(params) <= self.named:
            raise NonFiniteAnswer(f"samples {bad} answered NaN", bad)
        if bad:
            raise NonFiniteError(f"samples {bad} answered NaN")
        self.answered += len(params)
        return as_kind(self.kind, params)


@pytest.mark.parametrize("first", [0.0, 1.0])
def test_a_batch_refused_though_no_sample_is_refused_alone_raises_at_any_depth(first):
    def pairwise(p):  # refuses sample 0, and 2 and 3 together
        ids = set(p[:, 0].long().tolist())
        if 0 in ids or {2, 3} <= ids:
            raise NonFiniteError("refused")
        return surrogate(p)

    params = torch.stack([torch.tensor([first, 1.0, 2.0, 3.0], dtype=F64), torch.zeros(4)], 1)
    with pytest.raises(NonFiniteError, match="refused"):
        guard(pairwise, [], solver)(params)


@pytest.mark.parametrize("answer", [None, "short", "scalar"])
def test_a_non_finite_answer_must_answer_exactly_the_samples_it_does_not_name(answer):
    params = torch.stack([torch.tensor([0.1, 1.5, 0.2], dtype=F64), torch.zeros(3, dtype=F64)], 1)

    def refusing(p):
        short = surrogate(p[:1])
        held = {None: None, "short": short, "scalar": torch.tensor(0.0, dtype=F64)}[answer]
        if (p[:, 0] > 1).any():
            raise NonFiniteAnswer("sample 1 answered NaN", [1], held)
        return surrogate(p)

    if answer is None:  # no answer held: the others are asked again
        output = guard(refusing, [], solver)(params).output
        assert torch.equal(output[[0, 2]], surrogate(params[[0, 2]]))
        return
    with pytest.raises(ValueError, match=r"NonFiniteAnswer.answer must answer the 2 samples"):
        guard(refusing, [], solver)(params)


@pytest.mark.parametrize("named", [0, 3])
@pytest.mark.parametrize("kind", ["tensor", "ensemble", "diagonal", "low-rank", "full-low-rank"])
def test_a_refusing_surrogate_answers_each_good_sample_once_and_as_it_would_alone(kind, named):
    params = torch.stack([0.05 * torch.arange(11, dtype=F64), torch.linspace(-1, 1, 11)], 1)
    bad = torch.zeros(11, dtype=torch.bool)
    bad[[2, 7, 8]] = True
    params[bad, 0] = 1.5
    refusing = Refusing(kind, named)
    checks = [InputRange([-10.0, -10.0], [10.0, 10.0])]
    if kind != "tensor":  # fires where |p1| > 0.55
        checks.append(EnsembleSpread(0.055 if kind == "ensemble" else 0.55))
    result = guard(refusing, checks, solver)(params)
    assert refusing.answered == 8  # the good samples, each once
    assert torch.equal(result.non_finite, bad)
    good = (~bad).nonzero().flatten().tolist()
    alone = [as_kind(kind, params[i : i + 1]) for i in good]
    scores = torch.tensor(
        [
            [c.score(params[i : i + 1], a).item() for c in checks]
            for i, a in zip(good, alone, strict=True)
        ],
        dtype=F64,
    )
    assert torch.equal(result.scores[~bad], scores) and result.scores[bad].isnan().all()
    fired = scores > torch.tensor([c.threshold for c in checks], dtype=F64)
    assert torch.equal(result.fired[~bad], fired) and not result.fired[bad].any()
    by_surrogate = [i for i, f in zip(good, fired.any(1).tolist(), strict=True) if not f]
    assert kind == "tensor" or 0 < len(by_surrogate) < 8  # the spread check fires somewhere
    expected = solver(params)
    for i, a in zip(good, alone, strict=True):
        if i in by_surrogate:
            expected[i] = point_prediction(a)[0]
    assert torch.equal(result.output, expected)
    report = result.report()
    assert [row["fired"][:1] == ["finite"] for row in report] == bad.tolist()
    assert [row["answered_by"] == "surrogate" for row in report] == [
        i in by_surrogate for i in range(11)
    ]


def test_halves_answering_with_different_ensembles_are_asked_again_together():
    """Halves whose answers cannot be joined (here members 2 or 3 by the batch's parity): the
    surrogate answers the good samples once more, together, as before."""
    asked = []

    def parity(params):
        asked.append(len(params))
        if (params[:, 0] > 1).any():
            raise NonFiniteError("NaN")
        members = ensemble_surrogate(params).samples
        return Ensemble(members[: 2 + len(params) % 2])

    params = PARAMS.clone()
    params[0, 0], params[1, 0] = 1.5, 0.5  # sample 0 alone refused
    result = guard(parity, [EnsembleSpread(1e9)], solver)(params)
    assert asked == [6, 3, 1, 2, 3, 5]  # 2 and 3 members do not join: the 5 asked again
    assert torch.equal(result.output[1:], ensemble_surrogate(params[1:]).samples[:3].mean(0))
    assert torch.equal(result.output[0], solver(params[:1])[0])


def test_a_surrogate_naming_one_refused_sample_per_call_is_asked_again_without_each():
    """A NonFiniteAnswer naming only the first bad sample of what it was asked: the second call
    (five samples) names its third, which is sample 3 of the batch."""
    params = PARAMS.clone()
    params[3, 0] = 1.25  # samples 1 and 3: p0 > 1

    def first_bad_only(p):
        bad = (p[:, 0] > 1).nonzero().flatten().tolist()
        if bad:
            raise NonFiniteAnswer("NaN", bad[:1])
        return surrogate(p)

    fallback = Counter(solver)
    result = guard(first_bad_only, [], fallback)(params)
    routed = torch.tensor([False, True, False, True, False, False])
    assert torch.equal(result.non_finite, routed) and torch.equal(result.fallback, routed)
    assert len(fallback.calls) == 1 and torch.equal(fallback.calls[0], params[routed])
    expected = params[:, :1, None] + params[:, 1:, None] * torch.linspace(0, 1, 5, dtype=F64)
    expected[routed] += 1000.0
    assert torch.equal(result.output, expected)


@pytest.mark.parametrize("named", [6, 7, -1])
def test_a_non_finite_answer_naming_a_sample_outside_its_batch_is_refused(named):
    def refusing(p):
        raise NonFiniteAnswer("NaN", [named])

    with pytest.raises(ValueError, match=rf"must name samples of its batch of 6, got \[{named}\]"):
        guard(refusing, [], solver)(PARAMS)


def test_a_part_refused_whole_is_not_asked_for_zero_samples():
    params = PARAMS.clone()
    params[:3, 0] = 1.5  # the first half: three refused, named together in a NonFiniteAnswer
    refusing = Counter(Refusing("tensor", named=3))
    result = guard(refusing, [], solver)(params)
    assert all(len(asked) > 0 for asked in refusing.calls)
    assert result.non_finite.tolist() == [True] * 3 + [False] * 3
    assert torch.equal(result.output[:3], surrogate(params[:3]) + 1000.0)
    assert torch.equal(result.output[3:], surrogate(params[3:]))


def test_a_surrogate_refusing_everything_leaves_every_score_unknown():
    def refusing(p):
        raise NonFiniteError("NaN everywhere")

    result = guard(refusing, [INSIDE], solver)(PARAMS)
    assert torch.equal(result.output, surrogate(PARAMS) + 1000.0)
    assert result.scores.shape == (6, 1) and result.scores.isnan().all()
    assert not result.fired.any() and result.non_finite.all()
    assert result.counts() == {"finite": 6, "input_range": 0}
    assert [row["fired"] for row in result.report()] == [["finite"]] * 6


def test_gaussians_over_the_whole_batch_are_not_joined_but_asked_again():
    """A mean ``(batch,)`` with a covariance coupling the samples: its parts cannot be joined."""
    params = PARAMS.clone()
    params[4, 0] = 1.25  # samples 1 and 4 refused; 0, 2, 3 and 5 answered alone first

    def coupled(p):
        if (p[:, 0] > 1).any():
            raise NonFiniteError("NaN")
        n = len(p)
        return Gaussian(2 * p[:, 0], 0.5 * torch.eye(n, dtype=F64) + 0.5)

    result = guard(coupled, [], lambda p: 2 * p[:, 0] + 1000.0)(params)
    assert result.output.tolist() == [0.2, 1003.0, 1.0, 1.8, 1002.5, 0.0]


def test_halves_answering_in_other_dtypes_are_asked_again_together():
    params = PARAMS.clone()
    params[0, 0], params[1, 0] = 1.5, 0.5  # sample 0 alone refused: 2 (float64), 3 (float32)

    def by_parity(p):
        if (p[:, 0] > 1).any():
            raise NonFiniteError("NaN")
        return surrogate(p).to(torch.float32 if len(p) % 2 else F64)

    result = guard(by_parity, [], solver)(params)
    assert result.output.dtype == torch.float32  # the five asked together: float32
    assert torch.equal(result.output[1:], surrogate(params[1:]).float())


def test_a_nan_answer_is_reported_finite_alone_unscored_and_the_answer_kept():
    """A NaN answer is not scored (as a refused one); the surrogate's own tensor is not
    overwritten with the solver's answers."""
    held = surrogate(PARAMS)
    held[1] = float("nan")  # sample 1 is also outside [0, 1]²
    kept = held.clone()
    result = guard(lambda p: held, [INSIDE], solver)(PARAMS)
    torch.testing.assert_close(held, kept, rtol=0, atol=0, equal_nan=True)
    report = result.report()
    assert report[1]["fired"] == ["finite"] and report[4]["fired"] == ["input_range"]
    assert math.isnan(report[1]["scores"]["input_range"])
    expected = surrogate(PARAMS)
    expected[[1, 4]] += 1000.0
    assert torch.equal(result.output, expected)


def test_a_non_finite_input_fails_the_range_check_alone():
    params = PARAMS.clone()
    params[0, 0], params[3, 1] = float("nan"), float("inf")
    fails, score = INSIDE(params, None)
    assert score.tolist() == [float("inf"), 0.5, 0.0, float("inf"), 0.4, 0.0]
    assert fails.tolist() == [True, True, False, True, True, False]
    with pytest.warns(RuntimeWarning, match="NaN or inf to 2 of the 4 samples"):  # 0 and 3
        result = guard(lambda p: surrogate(p.nan_to_num()), [INSIDE], solver)(params)
    assert torch.equal(result.fallback, fails)
    assert result.fallback_non_finite.tolist() == [True, False, False, True, False, False]
    assert torch.equal(result.output[~fails], surrogate(params[~fails]))


def test_a_check_that_always_fires_gives_the_fallback_exactly():
    never = InputRange([5.0, 5.0], [6.0, 6.0])
    guarded = guard(surrogate, [never], solver)
    result = guarded(PARAMS)
    assert torch.equal(result.output, solver(PARAMS)) and result.surrogate_fraction == 0.0
    sent, answers = guarded.collected()
    assert torch.equal(sent, PARAMS) and torch.equal(answers, solver(PARAMS))
    # a float32 surrogate answers in float32: the solver's answers are cast to it
    result32 = guard(lambda p: surrogate(p).float(), [never], solver)(PARAMS)
    assert result32.output.dtype == torch.float32
    assert torch.equal(result32.output, solver(PARAMS).float())


def test_mixed_batches_route_per_sample_and_report_which_check_fired():
    fallback = Counter(solver)
    spread = PDEResidual(lambda inputs, u: u[:, 0, -1:] - u[:, 0, :1], threshold=0.45)
    guarded = guard(surrogate, [INSIDE, spread], fallback)
    result = guarded(PARAMS)
    # outside [0, 1]²: samples 1 and 4; end-to-end rise |p1| > 0.45: samples 1, 2, 5
    assert result.fired[:, 0].tolist() == [False, True, False, False, True, False]
    assert result.fired[:, 1].tolist() == [False, True, True, False, False, True]
    routed = torch.tensor([False, True, True, False, True, True])
    assert torch.equal(result.fallback, routed)
    assert len(fallback.calls) == 1 and torch.equal(fallback.calls[0], PARAMS[routed])
    assert torch.equal(result.output[routed], solver(PARAMS[routed]))
    assert torch.equal(result.output[~routed], surrogate(PARAMS[~routed]))
    report = result.report()
    assert report[1]["fired"] == ["input_range", "pde_residual"] and report[0]["fired"] == []
    assert report[2]["answered_by"] == "fallback" and report[3]["answered_by"] == "surrogate"
    assert report[4]["scores"]["input_range"] == pytest.approx(0.4)  # 0.4 below, range 1
    assert report[5]["scores"]["pde_residual"] == pytest.approx(1.0)
    assert result.counts() == {"input_range": 2, "pde_residual": 3}
    assert result.surrogate_fraction == pytest.approx(2 / 6)
    guarded(PARAMS[:2])  # a second batch: sample 1 again
    sent, answers = guarded.collected()
    assert torch.equal(sent, torch.cat([PARAMS[routed], PARAMS[1:2]]))
    assert torch.equal(answers, solver(sent))
    guarded.clear()
    assert guarded.collected() is None


def test_refine_retrains_on_what_the_solver_answered():
    check = InputRange.from_training(PARAMS[[0, 2, 3, 5]])  # trained where the range holds
    seen = []

    def retrain(x, y):  # "training" on the new pairs widens what the surrogate knows
        seen.append((x.clone(), y.clone()))
        everything = torch.cat([torch.stack([check.lower, check.upper]), x])
        check.lower, check.upper = everything.amin(0), everything.amax(0)

    history = refine(guard(surrogate, [check], solver), PARAMS, retrain, rounds=3)
    assert [h.surrogate_fraction for h in history] == pytest.approx([4 / 6, 1.0])
    assert [h.sent for h in history] == [2, 0] and history[0].fired == {"input_range": 2}
    assert len(seen) == 1 and torch.equal(seen[0][0], PARAMS[[1, 4]])
    assert torch.equal(seen[0][1], solver(PARAMS[[1, 4]]))


def test_refine_counts_nan_answers_as_sent_and_takes_the_surrogate_retrain_returns():
    def broken(params):
        out = surrogate(params)
        out[params[:, 0] > 1] = float("nan")  # sample 1
        return out

    seen = []

    def retrain(x, y):
        seen.append((x.clone(), y.clone()))
        return surrogate  # fixed

    history = refine(guard(broken, [], solver), PARAMS, retrain, rounds=3)
    assert [h.sent for h in history] == [1, 0]
    assert [h.surrogate_fraction for h in history] == [5 / 6, 1.0]
    assert history[0].fired == {"finite": 1} and history[1].fired == {}
    assert len(seen) == 1 and torch.equal(seen[0][0], PARAMS[1:2])
    assert torch.equal(seen[0][1], surrogate(PARAMS[1:2]) + 1000.0)


def test_refine_measures_again_after_its_last_retraining():
    never = InputRange([5.0, 5.0], [6.0, 6.0])  # the surrogate fails every round
    retrained = []
    history = refine(guard(surrogate, [never], solver), PARAMS, lambda x, y: retrained.append(x))
    assert [h.round for h in history] == [0, 1] and [h.sent for h in history] == [6, 6]
    assert len(retrained) == 1  # rounds=1: measure, retrain once, measure again


@pytest.mark.filterwarnings("ignore:the fallback answered NaN or inf")
def test_refine_leaves_the_fallbacks_nan_answers_out_of_retraining():
    """Samples 1 and 4 go to a solver answering NaN for the first sent (sample 1): retrain gets
    sample 4 alone; with every answer NaN, refine stops before retraining."""

    def flaky(inputs):
        out = solver(inputs)
        out[0] = float("nan")
        return out

    seen = []
    with pytest.warns(RuntimeWarning, match=r"refine leaves out 1 of the 2 samples sent"):
        refine(guard(surrogate, [INSIDE], flaky), PARAMS, lambda x, y: seen.append((x, y)))
    assert len(seen) == 1 and torch.equal(seen[0][0], PARAMS[4:5])
    assert torch.equal(seen[0][1], solver(PARAMS[4:5]))
    nan_only = guard(surrogate, [INSIDE], lambda x: torch.full_like(solver(x), math.nan))
    with pytest.warns(RuntimeWarning, match=r"refine leaves out 2 of the 2 samples sent"):
        history = refine(nan_only, PARAMS, lambda x, y: seen.append((x, y)), rounds=3)
    assert len(seen) == 1 and [h.round for h in history] == [0]


def test_a_check_refusing_nan_scores_the_finite_answers_and_the_nan_one_goes_to_the_fallback():
    """A residual built on physml.metrics refuses NaN; the NaN answer (sample 2) is not scored.
    Mean |p0 + p1 t| over t = 0, 1/4, ..., 1: 0.2, 1.75, -, 0.95, 0.7 / 5, 0.5."""

    def mean_size(inputs, u):
        return metrics.mae(u, torch.zeros_like(u), dims=(1, 2))[:, None]

    def broken(params):
        out = surrogate(params)
        out[2, 0, 3] = float("nan")
        return out

    result = guard(broken, [PDEResidual(mean_size, threshold=0.6)], solver)(PARAMS)
    expected = torch.tensor([0.2, 1.75, math.nan, 0.95, 0.14, 0.5], dtype=F64)
    torch.testing.assert_close(result.scores[:, 0], expected, equal_nan=True)
    assert result.fired[:, 0].tolist() == [False, True, False, True, False, False]
    assert result.fallback.tolist() == [False, True, True, True, False, False]
    assert result.counts() == {"finite": 1, "pde_residual": 2}
    assert result.report()[2]["fired"] == ["finite"]


def refusing_float32(params):
    """A float32 Ensemble around :func:`ensemble_surrogate` refusing samples whose p0 > 1."""
    members = ensemble_surrogate(params).samples.float()
    members[0, params[:, 0] > 1] = float("nan")
    return Ensemble(members)


REFUSED = torch.tensor([[0.1, 0.2], [1.5, 0.5], [0.5, 0.5], [0.9, 0.1], [1.25, -0.4]], dtype=F64)


@pytest.mark.parametrize("fallback_dtype", [None, F64])
def test_the_output_dtype_is_the_same_in_every_batch_whoever_answers(fallback_dtype):
    """A float32 surrogate refusing samples 1 and 4, a float64 solver. Batches answered by both,
    by the surrogate alone, by the solver alone: float32 (the solver's answers cast to it), or,
    with fallback_dtype float64, float64 with the solver's answers unrounded."""
    expected = torch.float32 if fallback_dtype is None else F64
    guarded = guard(refusing_float32, [], solver, fallback_dtype)
    for rows in ([0, 1, 2, 3, 4], [0, 2], [1, 4]):
        result = guarded(REFUSED[rows])
        assert result.output.dtype == expected, rows
        sent = result.fallback
        assert torch.equal(result.output[sent], solver(REFUSED[rows][sent]).to(expected))
        mean = ensemble_surrogate(REFUSED[rows][~sent]).samples.float().mean(0)
        assert torch.equal(result.output[~sent], mean.to(expected))


def test_a_batch_before_the_surrogates_first_answer_is_in_the_fallback_dtype():
    """The one exception, a plain callable: a first batch it refuses entirely is in
    fallback_dtype, or without one in the solver's own float64; a later one keeps the
    surrogate's last dtype (a float64 surrogate with a float32 fallback: float64, not float32)."""
    refused = REFUSED[[1, 4]]
    assert guard(refusing_float32, [], solver)(refused).output.dtype == F64
    as_float32 = guard(refusing_float32, [], lambda p: solver(p).float(), torch.float32)
    assert as_float32(refused).output.dtype == torch.float32

    def refusing_float64(params):
        return Ensemble(refusing_float32(params).samples.double())

    wide = guard(refusing_float64, [], lambda p: solver(p).float(), torch.float32)
    assert wide(REFUSED[[0, 1]]).output.dtype == F64
    assert wide(refused).output.dtype == F64


class RefusingNetwork(nn.Module):
    """A float32 network whose Ensemble answer is NaN everywhere: it refuses every sample."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def forward(self, inputs):
        members = self.layer(inputs.float())[None].repeat(2, 1, 1)
        return Ensemble(torch.full_like(members, math.nan))


def test_a_network_refusing_its_first_batch_answers_in_its_parameters_dtype():
    """Before the network's first answer the output takes its dtype from its float32 weights,
    not from the solver's float64 (2 x), so a float32 rollout can go on."""
    inputs = torch.tensor([[5.0], [6.0]])
    result = guard(RefusingNetwork(), [], lambda x: 2 * x.double())(inputs)
    assert result.output.dtype == torch.float32 and result.output.tolist() == [[10.0], [12.0]]
    exact = guard(RefusingNetwork(), [], lambda x: 2 * x.double(), F64)(inputs)
    assert exact.output.dtype == F64


def test_a_solver_answer_beyond_the_output_dtypes_range_is_flagged_not_passed_on_silently():
    """float16 holds at most 65504: the solver's 1e5 x = 2e5 overflows to inf in the float16
    output, flagged and warned about; fallback_dtype=float64 keeps it."""
    inputs = torch.tensor([[0.5], [2.0]], dtype=F64)
    unit = InputRange([0.0], [1.0])
    overflowing = guard(lambda x: x.half(), [unit], lambda x: 1e5 * x)
    overflow = r"1 of the 1 samples .* overflow to inf in the output's torch\.float16"
    with pytest.warns(RuntimeWarning, match=overflow + r".*fallback_dtype=torch\.float64"):
        result = overflowing(inputs)
    assert result.output.tolist() == [[0.5], [math.inf]]
    assert result.fallback_non_finite.tolist() == [False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = guard(lambda x: x.half(), [unit], lambda x: 1e5 * x, F64)(inputs)
    assert exact.output.tolist() == [[0.5], [2e5]] and not exact.fallback_non_finite.any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_a_low_precision_surrogate_keeps_the_solvers_answers_exact_in_float64(dtype):
    """fallback_dtype=float64 keeps the solver's answers unrounded; by default the output is in
    the surrogate's dtype, the solver's answers rounded to it."""
    never = InputRange([5.0, 5.0], [6.0, 6.0])
    exact = guard(lambda p: surrogate(p).to(dtype), [never], solver, torch.float64)(PARAMS)
    assert exact.output.dtype == F64 and torch.equal(exact.output, solver(PARAMS))
    rounded = guard(lambda p: surrogate(p).to(dtype), [never], solver)(PARAMS)
    assert rounded.output.dtype == dtype and torch.equal(rounded.output, solver(PARAMS).to(dtype))


def test_a_float32_network_guarded_by_a_float64_solver_can_be_rolled_out():
    """The output, fed back into the float32 network, stays float32: 0.5 u, then the solver's
    0.9 u for the inputs outside [-1, 1] (the second sample at every step)."""
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(0.5 * torch.eye(2))
    inside = InputRange([-1.0, -1.0], [1.0, 1.0])
    guarded = guard(net, [inside], lambda u: 0.9 * u.double())
    u = torch.tensor([[0.5, 0.5], [4.0, 4.0]])
    for _ in range(3):
        u = guarded(u).output
    assert u.dtype == torch.float32
    assert u.tolist() == [[0.0625, 0.0625], [pytest.approx(4 * 0.9**3)] * 2]


def test_the_guard_refuses_integer_answers_and_a_fallback_dtype_the_output_cannot_hold():
    with pytest.raises(TypeError, match="surrogate must answer in a floating-point dtype, got"):
        guard(lambda p: surrogate(p).long(), [INSIDE], solver)(PARAMS)
    as_float32 = guard(lambda p: surrogate(p).float(), [INSIDE], solver, torch.float32)
    ways = r"float64.*fallback_dtype=torch\.float64.*or have the fallback answer in torch\.float32"
    with pytest.raises(TypeError, match=ways):
        as_float32(PARAMS)
    float32_solver = guard(
        lambda p: surrogate(p).float(), [INSIDE], lambda p: solver(p).float(), torch.float32
    )
    assert float32_solver(PARAMS).output.dtype == torch.float32
    for wrong in (torch.int64, "float64"):
        with pytest.raises(TypeError, match="fallback_dtype must be None or a floating-point"):
            guard(surrogate, [INSIDE], solver, wrong)


def test_the_fallback_runs_with_autograd_and_its_pairs_are_kept_detached():
    params = PARAMS.clone().requires_grad_(True)
    grad_enabled = []

    def recording(inputs):
        grad_enabled.append(torch.is_grad_enabled())
        return solver(inputs) * params.sum()  # would carry a graph to params

    guarded = guard(surrogate, [INSIDE], recording)
    result = guarded(params)
    assert grad_enabled == [True]
    assert not result.output.requires_grad and not result.solved.requires_grad
    assert not result.sent_inputs.requires_grad
    sent, answers = guarded.collected()
    assert not sent.requires_grad and not answers.requires_grad


def test_a_fallback_using_autograd_inside_answers():
    """Newton's method for y³ = x with torch.autograd.grad: the cube root of 8 is 2."""

    def newton(x):
        y = torch.ones_like(x, requires_grad=True)
        for _ in range(30):
            (slope,) = torch.autograd.grad((y**3).sum(), y)
            y = (y - (y**3 - x) / slope).detach().requires_grad_(True)
        return y

    inside = InputRange([0.0], [1.0])
    result = guard(lambda x: x, [inside], newton)(torch.tensor([[0.5], [8.0]], dtype=F64))
    assert result.output.tolist() == [[0.5], [pytest.approx(2.0, rel=1e-12)]]
    assert not result.output.requires_grad and not result.solved.requires_grad


def test_a_nan_answer_of_the_fallback_is_flagged_and_warned_about():
    def flaky(inputs):
        out = solver(inputs)
        out[0, 0, 1] = float("nan")  # the first sample sent: sample 1
        return out

    with pytest.warns(RuntimeWarning, match=r"NaN or inf to 1 of the 2 samples sent"):
        result = guard(surrogate, [INSIDE], flaky)(PARAMS)
    assert result.fallback_non_finite.tolist() == [False, True, False, False, False, False]
    clean = guard(surrogate, [INSIDE], solver)(PARAMS)
    assert not clean.fallback_non_finite.any()


# ------------------------------------------------------------------------------------ checks


def test_conservation_check_scores_the_mass_error():
    grid = Grid1D(11)
    x, ones = grid.coordinates(), torch.ones(11, dtype=F64)
    u = torch.stack([ones, 1.1 * ones, 2 * x])[:, None]
    check = ConstraintResidual(mass_conservation(grid, torch.ones(3, 1)), threshold=0.05)
    fails, score = check(torch.zeros(3, 1), u)
    assert score.tolist() == pytest.approx([0.0, 0.1, 0.0], abs=1e-12)  # ∫2x dx = 1 exactly
    assert fails.tolist() == [False, True, False]


def test_conservation_check_reads_a_target_given_as_a_function_of_the_inputs():
    """Each sample's total is its input: fields of ones (total 1 on [0, 1]) against totals 1,
    1.5 and 0.25 score 0, 0.5 and 0.75."""
    grid = Grid1D(9)
    mass = mass_conservation(grid, lambda inputs: inputs[:, 0])
    inputs = torch.tensor([[1.0], [1.5], [0.25]], dtype=F64)
    fails, score = ConstraintResidual(mass, threshold=0.3)(inputs, torch.ones(3, 9, dtype=F64))
    assert score.tolist() == pytest.approx([0.0, 0.5, 0.75], abs=1e-12)
    assert fails.tolist() == [False, True, True]


def test_boundary_check_scores_dirichlet_and_neumann_walls():
    grid = Grid1D(9)
    x = grid.coordinates()
    u = torch.stack([x.square(), x.square() + 0.2])[:, None]  # u' = 2x: 0 and 2 at the walls
    dirichlet = BoundaryError(Dirichlet(0.0, 1.0), grid, threshold=0.1)
    fails, score = dirichlet(torch.zeros(2), u)
    assert score.tolist() == pytest.approx([0.0, 0.2]) and fails.tolist() == [False, True]
    neumann = BoundaryError(Neumann(0.0, 2.5), grid, threshold=0.1)  # stencil exact on x²
    assert neumann(torch.zeros(2), u)[1].tolist() == pytest.approx([0.5, 0.5])
    # u = x² + x: u'(0) = 1 and u'(1) = 3, which the one-sided second-order stencils (over 2dx)
    # give exactly on a quadratic
    tilted = (x.square() + x)[None, None]
    score = BoundaryError(Neumann(1.0, 3.0), grid, threshold=0.1)(torch.zeros(1), tilted)[1]
    assert score.tolist() == pytest.approx([0.0], abs=1e-12)


def test_spread_check_reads_ensembles_and_gaussians():
    members = torch.zeros(4, 2, 3, dtype=F64)
    members[:, 1, 2] = torch.tensor([-1.0, 1.0, -1.0, 1.0])  # unbiased std 2/√3
    fails, score = EnsembleSpread(threshold=1.0)(torch.zeros(2), Ensemble(members))
    assert score.tolist() == pytest.approx([0.0, 2 / 3**0.5]) and fails.tolist() == [False, True]
    gaussian = Gaussian(torch.zeros(2, 3, dtype=F64), torch.tensor([[1.0, 4, 1], [0, 0, 0.25]]))
    assert EnsembleSpread(1.0).score(torch.zeros(2), gaussian).tolist() == pytest.approx([2, 0.5])
    with pytest.raises(TypeError, match="Ensemble or Gaussian"):
        EnsembleSpread(1.0).score(torch.zeros(2), torch.zeros(2, 3))


def test_relative_spread_is_the_std_norm_over_the_mean_norm():
    """Members μ ± δ (two each): the unbiased std is δ·√(4/3) at every point."""
    mean = torch.tensor([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]], dtype=F64)  # ‖μ‖ = 5 and √3
    delta = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.3, 0.4]], dtype=F64)  # ‖δ‖ = 0.1 and 0.5
    members = torch.stack([mean + delta, mean - delta, mean + delta, mean - delta])
    check = EnsembleSpread(0.1, relative=True)
    fails, score = check(torch.zeros(2), Ensemble(members))
    factor = (4 / 3) ** 0.5
    assert score.tolist() == pytest.approx([factor * 0.1 / 5, factor * 0.5 / 3**0.5], rel=1e-12)
    assert fails.tolist() == [False, True]
    gaussian = Gaussian(mean, torch.tensor([[0.04, 0, 0], [0, 0.09, 0.16]], dtype=F64))
    assert check.score(torch.zeros(2), gaussian).tolist() == pytest.approx([0.04, 0.5 / 3**0.5])
    with pytest.raises(TypeError, match="relative must be"):
        EnsembleSpread(0.1, relative=1)


def test_calibrate_puts_the_threshold_at_the_score_quantile():
    u = torch.arange(5, dtype=F64)[:, None, None] * torch.ones(1, 1, 3, dtype=F64)
    check = BoundaryError(Dirichlet(0.0, 0.0), Grid1D(3), threshold=100.0)
    assert check.calibrate(torch.zeros(5), u, 1.0) is check and check.threshold == 4.0
    assert not check(torch.zeros(5), u)[0].any()  # level 1 passes every calibration sample
    assert check.calibrate(torch.zeros(5), u, 0.5).threshold == 2.0
    assert check(torch.zeros(5), u)[0].tolist() == [False, False, False, True, True]
    for level in (0.0, 1.5):
        with pytest.raises(ValueError, match="level must be in"):
            check.calibrate(torch.zeros(5), u, level)
    for level in ("high", True, torch.tensor(0.5)):
        with pytest.raises(TypeError, match=r"level must be a number in \(0, 1\], got"):
            check.calibrate(torch.zeros(5), u, level)
    for inputs in (torch.zeros(0), torch.tensor(1.0), [0.0] * 5):  # nothing to take a quantile of
        with pytest.raises(ValueError, match="inputs must be a non-empty batch"):
            check.calibrate(inputs, u[:0], 1.0)
    still = Ensemble(torch.zeros(2, 1, 3, dtype=F64))  # zero mean, zero spread: 0 / 0
    with pytest.raises(ValueError, match="scores NaN or inf on calibration samples \\[0\\]"):
        EnsembleSpread(0.0, relative=True).calibrate(torch.zeros(1), still, 1.0)
    members = torch.zeros(2, 5, 3, dtype=F64)
    members[:, 1:] = torch.rand(2, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) + 1
    members[0, 0], members[1, 0] = 1.0, -1.0  # zero mean, some spread: an infinite score
    for level in (0.8, 1.0):  # the quantile would be inf or NaN: named for the scores, not τ
        with pytest.raises(ValueError, match="scores NaN or inf on calibration samples \\[0\\]"):
            EnsembleSpread(0.0, relative=True).calibrate(torch.zeros(5), Ensemble(members), level)


def ensemble_surrogate(params):
    """Three members around :func:`surrogate`: offsets −0.1, 0, +0.1 times the second parameter."""
    offsets = torch.tensor([-0.1, 0.0, 0.1], dtype=F64)[:, None, None, None]
    return Ensemble(surrogate(params)[None] + offsets * params[None, :, 1:, None])


def test_an_ensemble_surrogate_answers_with_its_mean_or_the_solver_exactly():
    spread = ensemble_surrogate(PARAMS).samples.std(0).amax((1, 2))  # 0.1 |p1|
    never = EnsembleSpread(float(spread.max()))
    result = guard(ensemble_surrogate, [never], solver)(PARAMS)
    assert torch.equal(result.output, ensemble_surrogate(PARAMS).samples.mean(0))
    assert result.surrogate_fraction == 1.0 and result.solved is None
    always = EnsembleSpread(0.0, relative=True)  # every sample here has some spread
    result = guard(ensemble_surrogate, [always], solver)(PARAMS)
    assert torch.equal(result.output, solver(PARAMS)) and result.surrogate_fraction == 0.0
    middle = EnsembleSpread(0.045)  # |p1| > 0.45: samples 1, 2, 5
    result = guard(ensemble_surrogate, [middle], solver)(PARAMS)
    routed = torch.tensor([False, True, True, False, False, True])
    assert torch.equal(result.fallback, routed)
    assert torch.equal(result.output[routed], solver(PARAMS[routed]))
    assert torch.equal(result.output[~routed], ensemble_surrogate(PARAMS).samples.mean(0)[~routed])


def test_pde_residual_of_the_heat_equation_by_differences():
    """u = x² + 2t solves u_t = u_xx; the centred differences are exact on it."""
    nt, nx = 5, 9
    t = torch.linspace(0, 0.1, nt, dtype=F64)[:, None]
    x = torch.linspace(0, 1, nx, dtype=F64)
    dt, dx = 0.1 / (nt - 1), 1 / (nx - 1)

    def heat(inputs, u):  # u (batch, time, x): interior points
        u_t = (u[:, 2:, 1:-1] - u[:, :-2, 1:-1]) / (2 * dt)
        u_xx = (u[:, 1:-1, 2:] - 2 * u[:, 1:-1, 1:-1] + u[:, 1:-1, :-2]) / dx**2
        return u_t - u_xx

    exact = x.square() + 2 * t
    wrong = x.square() + t  # u_t = 1, u_xx = 2: residual -1 everywhere
    fails, score = PDEResidual(heat, threshold=1e-6)(torch.zeros(2), torch.stack([exact, wrong]))
    assert score[0] < 1e-9 and score[1].item() == pytest.approx(1.0)
    assert fails.tolist() == [False, True]


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: guard(3, [INSIDE], solver), TypeError, "surrogate must be callable"),
        (lambda: guard(surrogate, [INSIDE], None), TypeError, "fallback must be callable"),
        (lambda: guard(surrogate, INSIDE, solver), TypeError, "checks must be a list"),
        (lambda: guard(surrogate, [INSIDE, 1], solver), TypeError, "Check objects"),
        (lambda: guard(surrogate, [INSIDE, INSIDE], solver), ValueError, "distinct names"),
        (lambda: InputRange([1.0], [0.0]), ValueError, "lower must be <= upper"),
        (lambda: InputRange([0.0, 0.0], [1.0]), ValueError, "same shape"),
        (lambda: InputRange([0.0], [1.0], threshold=-1), ValueError, "threshold"),
        (
            lambda: InputRange([0.0], [1.0], threshold=True),
            TypeError,
            r"^threshold must be a non-negative number, got True",
        ),
        (
            lambda: EnsembleSpread(threshold=np.True_),
            TypeError,
            r"^threshold must be a non-negative number, got (np\.)?True_?",
        ),
        (lambda: BoundaryError(Periodic(), Grid1D(5), 0.1), TypeError, "bc must be"),
        (lambda: BoundaryError(Dirichlet(), Grid1D(5, periodic=True), 0.1), ValueError, "grid"),
        (lambda: ConstraintResidual(object(), 0.1), TypeError, "constraint must offer"),
        (lambda: PDEResidual(None, 0.1), TypeError, "residual must be callable"),
    ],
)
def test_guard_and_checks_reject_bad_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_guard_rejects_bad_calls():
    with pytest.raises(ValueError, match="inputs must be a non-empty batch"):
        guard(surrogate, [INSIDE], solver)([1.0, 2.0])
    with pytest.raises(ValueError, match="fallback must answer the 2 inputs"):
        guard(surrogate, [INSIDE], lambda p: torch.zeros(len(p), 5))(PARAMS)
    with pytest.raises(ValueError, match=r"inputs must be \(6, 1\) \(batch, P\)"):
        guard(surrogate, [InputRange([0.0], [1.0])], solver)(PARAMS)
    first = InputRange([0.0], [1.0], parameters=lambda p: p[:, :2])
    with pytest.raises(ValueError, match=r"parameters\(inputs\) must be \(6, 1\)"):
        guard(surrogate, [first], solver)(PARAMS)
    with pytest.raises(TypeError, match="retrain must be callable"):
        refine(guard(surrogate, [INSIDE], solver), PARAMS, None)
    with pytest.raises(
        TypeError, match="retrain must return a surrogate or None, got <class 'int'>"
    ):
        refine(guard(surrogate, [INSIDE], solver), PARAMS, lambda x, y: 3)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, got 0"):
        refine(guard(surrogate, [INSIDE], solver), PARAMS, lambda x, y: None, rounds=0)
    with pytest.raises(
        ValueError, match=r"inputs must be a non-empty batch tensor .* got \(0, 2\)"
    ):
        guard(surrogate, [INSIDE], solver)(PARAMS[:0])
    with pytest.raises(
        ValueError, match=r"surrogate must answer each of the 6 inputs, got shape \(5, 1, 5\)"
    ):
        guard(lambda p: surrogate(p[1:]), [INSIDE], solver)(PARAMS)


def test_load_previous_refuses_checkpoints_not_from_physml_train(tmp_path):
    from physml.updates import load_previous, sample_errors

    data = TensorDataset(rand(4, 1, 3), rand(4, 1, 3, seed=1))
    config = TrainConfig(steps=1, batch=2)
    Trainer(Scale(1.0), data_loss, config, out=tmp_path / "bare", quiet=True).fit(data)
    with pytest.raises(ValueError, match="not written by physml train"):
        load_previous(tmp_path / "bare", data=None)
    with pytest.raises(ValueError, match="items is empty"):
        sample_errors(Scale(1.0), TensorDataset(torch.zeros(0, 1)))
    errors = sample_errors(Scale(1.0), data, batch=3)  # two batches: 3 + 1
    x, y = data.tensors
    torch.testing.assert_close(errors, metrics.relative_l2(x, y, reduction="none"))


@pytest.mark.parametrize("training", [True, False])
def test_sample_errors_hands_the_model_back_in_the_mode_it_came_in(training):
    from physml.updates import sample_errors

    model = nn.Sequential(Scale(1.0), nn.Dropout(0.5)).train(training)
    data = TensorDataset(rand(5, 1, 3), rand(5, 1, 3, seed=1))
    errors = sample_errors(model, data, batch=2)
    x, y = data.tensors  # evaluated in eval mode: dropout is off, the model is the identity
    torch.testing.assert_close(errors, metrics.relative_l2(x, y, reduction="none"))
    assert model.training is training and model[1].training is training


# ------------------------------------------------- model-update blocks: warm start and its control


def task_row(method, nfr, rel_l2, val_nfr, val_rel_l2, strength=None):
    return {"case": "heat-fno", "method": method, "lambda": strength, "nfr": nfr,
            "rel_l2": rel_l2, "val_nfr": val_nfr, "val_rel_l2": val_rel_l2}  # fmt: skip


def test_widen_starts_the_wider_fno_on_the_old_function_and_lets_the_new_channels_learn():
    old = task.fno(task.Size(8, 4, 2, 16, 1), seed=0)
    new = task.widen(task.fno(task.Size(12, 4, 2, 16, 1), seed=1), old)
    x = torch.randn(5, 1, 17, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(new(x), old(x), atol=1e-6)
    assert not torch.allclose(task.fno(task.Size(12, 4, 2, 16, 1), seed=1)(x), old(x), atol=1e-3)
    lifted = dict(new.named_parameters())["lifting.fcs.1.weight"]
    assert lifted[8:].abs().sum() > 0  # the weights into the added channels keep their draw
    task.relative_l2_loss(new, (x, x.flip(-1))).backward()
    read = dict(new.named_parameters())["projection.fcs.0.weight"]
    assert read.grad[:, 8:].abs().sum() > 0  # the zeroed weights out of them get gradients


def test_widen_refuses_what_it_cannot_hold():
    old = task.fno(task.Size(8, 4, 2, 16, 1), seed=0)
    with pytest.raises(ValueError, match="cannot hold"):
        task.widen(task.fno(task.Size(6, 4, 2, 16, 1), seed=1), old)
    with pytest.raises(ValueError, match="not Fourier modes"):
        task.widen(task.fno(task.Size(12, 6, 2, 16, 1), seed=1), old)
    with pytest.raises(ValueError, match="same parameters"):
        task.widen(task.fno(task.Size(12, 4, 3, 16, 1), seed=1), old)
    with pytest.raises(TypeError, match="old must be an FNO"):
        task.widen(task.fno(task.Size(12, 4, 2, 16, 1), seed=1), old.state_dict())


def test_a_warm_boon_starts_as_the_old_fno_through_the_door():
    problem = replace(task.EQUATION["burgers"], nx=17, t_end=0.05)
    old = task.fno(task.Size(8, 4, 2, 16, 1), seed=0)
    warm = task.boon(problem, task.Size(12, 4, 2, 16, 1), 1, warm_from=old)
    condition = BoundaryCondition(problem.boundary(), problem.grid(), time=problem.t_end)
    door = constrain(old, condition)
    x = torch.randn(3, 1, problem.nx, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(warm(x), door(x), atol=1e-6)
    assert task.method_loss("warm", old, 0.1, 1.0) is task.relative_l2_loss


def test_the_update_target_reports_the_warm_start_control():
    rows = [
        task_row("retrain", 0.2, 2.0, 0.2, 2.0),
        task_row("warm", 0.05, 1.5, 0.1, 1.6),
        task_row("pc-focal", 0.1, 2.02, 0.1, 2.0, 1.0),
    ]
    heat = task.update_done_when(rows)["heat-fno"]
    assert heat["warm_nfr_cut"] == pytest.approx(0.75)
    assert heat["warm_rel_l2_ratio"] == pytest.approx(0.75)
    assert heat["nfr_cut"] == pytest.approx(0.5) and heat["holds"]
    assert "warm_nfr_cut" not in task.update_done_when(rows[::2])["heat-fno"]


def test_the_model_update_benchmark_warm_start_adds_the_control_and_reports_it(tmp_path):
    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "model_update.py"
    command = [sys.executable, str(script), "--quick", "--warm-start", "--out", str(tmp_path)]
    subprocess.run([*command, "--equations", "heat"], check=True, cwd=root, timeout=600)
    assert not (tmp_path / "model_update.json").exists()  # a cold quick run's name
    result = json.loads((tmp_path / "model_update_warm.json").read_text())
    methods = {(row["case"], row["method"]) for row in result["rows"]}
    assert {("heat-fno", "warm"), ("heat-boon", "warm"), ("heat-fno", "retrain")} <= methods
    assert "warm_nfr_cut" in result["done_when"]["heat-fno"]
    assert "`warm` control" in (tmp_path / "model_update_warm.md").read_text()
    large = subprocess.run(
        [sys.executable, str(script), "--warm-start", "--upgrade", "large", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert large.returncode != 0 and "incremental upgrade" in large.stderr


def test_the_broaden_upgrade_trains_the_old_model_inside_and_the_new_one_beyond(tmp_path):
    bench = load_benchmark("model_update")
    scale = bench.SCALES["broaden"]
    assert bench.scale_counts(scale, "old")[1] == 0
    for part in ("new", "test", "validation"):
        count, outside = bench.scale_counts(scale, part)
        assert 0 < outside < count  # both ranges, the last `outside` beyond
    others = [s for name, s in bench.SCALES.items() if name != "broaden"]
    assert scale["folder"] and all("folder" not in s for s in others)
    small = {  # the scale's sets, 32× fewer samples in the same proportions
        **scale,
        "old": replace(scale["old"], train=scale["old"].train // 32),
        "new": replace(scale["new"], train=scale["new"].train // 32),
        "test": scale["test"] // 25,
        "outside": {**scale["outside"], "new": scale["outside"]["new"] // 32, "test": 4},
    }
    problem = replace(task.EQUATION["heat"], nx=17, t_end=0.05)
    low, high = problem.inside
    far_low, far_high = problem.outside
    old = task.rms(bench.scale_pairs(problem, small, "old", tmp_path).tensors[0]).flatten()
    assert len(old) == 4 and ((old > low - 1e-5) & (old < high + 1e-5)).all()
    for part in ("new", "test"):
        count, outside = bench.scale_counts(small, part)
        a = task.rms(bench.scale_pairs(problem, small, part, tmp_path).tensors[0]).flatten()
        assert len(a) == count
        assert ((a[:-outside] > low - 1e-5) & (a[:-outside] < high + 1e-5)).all()
        assert ((a[-outside:] > far_low - 1e-5) & (a[-outside:] < far_high + 1e-5)).all()
    files = {path.name for path in tmp_path.iterdir()}
    assert files == {"old.pt", "new-out6.pt", "test-out4.pt"}  # not the other scales' new.pt


def test_input_range_scores_in_units_of_each_parameters_range():
    """InputRange scores the largest overshoot in units of each parameter's range (by hand)."""
    check = InputRange(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 10.0]))
    inputs = torch.tensor([[1.5, 5.0], [0.5, 15.0], [0.5, 5.0], [-0.25, 12.5]], dtype=F64)
    fails, score = check(inputs, inputs)
    torch.testing.assert_close(score, torch.tensor([0.5, 0.5, 0.0, 0.25], dtype=F64))
    assert fails.tolist() == [True, True, False, True]


def test_pde_residual_score_is_the_root_mean_square():
    """PDEResidual scores the RMS of the residual (sqrt(12.5) for (3, −4)), not the mean |r|."""
    check = PDEResidual(lambda inputs, u: u, threshold=3.6)
    u = torch.tensor([[3.0, -4.0], [1.0, 1.0]], dtype=F64)
    fails, score = check(u, u)
    torch.testing.assert_close(score, torch.tensor([math.sqrt(12.5), 1.0], dtype=F64))
    assert fails.tolist() == [False, False]
    check.threshold = 3.5  # between the mean |r| (3.5) and the RMS (3.54)
    assert check(u, u)[0].tolist() == [True, False]


def test_a_nan_score_fails_the_check_zero_mean_relative_spread():
    """Relative spread with zero mean and zero spread scores 0/0 = NaN, and a NaN score fails."""
    members = torch.zeros(3, 2, 4, dtype=F64)
    members[:, 1] = torch.tensor([1.0, 1.1, 0.9])[:, None]
    fails, score = EnsembleSpread(1e9, relative=True)(torch.zeros(2, 1), Ensemble(members))
    assert math.isnan(score[0].item())
    assert fails.tolist() == [True, False]


def test_input_range_scores_a_parameter_fixed_in_training_absolutely():
    """A parameter of range 0 (one value in training): that value scores 0, an overshoot in its
    own units (not 0 / 0 or x / 0)."""
    check = InputRange.from_training(torch.tensor([[0.0, 2.0], [1.0, 2.0]], dtype=F64))
    inputs = torch.tensor([[0.5, 2.0], [0.5, 2.5], [1.25, 1.0]], dtype=F64)
    fails, score = check(inputs, inputs)
    torch.testing.assert_close(score, torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    assert fails.tolist() == [False, True, True]


def test_calibrate_interpolates_linearly_between_scores():
    """Scores 0, 1, 2, 3, 4: the 0.6 quantile sits at position 0.6 · 4 = 2.4, between 2 and 3."""
    u = torch.arange(5, dtype=F64)[:, None, None] * torch.ones(1, 1, 3, dtype=F64)
    check = BoundaryError(Dirichlet(0.0, 0.0), Grid1D(3), threshold=100.0)
    assert check.calibrate(torch.zeros(5), u, 0.6).threshold == pytest.approx(2.4, abs=1e-12)
    assert check(torch.zeros(5), u)[0].tolist() == [False, False, False, True, True]


def test_boundary_check_reads_time_dependent_values_at_its_time():
    """Walls u(0, t) = t and u(1, t) = 2t checked at t = 0.5: the prediction 0.5 ... 1.0 meets them
    there (at t = 0 it would miss by 1 on the right); values per sample broadcast too."""
    grid = Grid1D(5)
    u = (0.5 + 0.5 * grid.coordinates())[None, None].expand(2, 1, 5).to(F64)
    moving = Dirichlet(lambda t: t, lambda t: torch.tensor([2 * t, 3 * t]))
    fails, score = BoundaryError(moving, grid, threshold=0.1, time=0.5)(torch.zeros(2), u)
    assert score.tolist() == pytest.approx([0.0, 0.5], abs=1e-12)
    assert fails.tolist() == [False, True]
    assert BoundaryError(moving, grid, 0.1, time=0.0).score(torch.zeros(2), u).tolist() == (
        pytest.approx([1.0, 1.0])
    )


def test_a_check_scoring_other_than_one_value_per_sample_is_refused():
    """A custom check whose score is (batch, 1) (would broadcast against the batch) is refused."""

    class Columns(PDEResidual):
        name = "columns"

        def score(self, inputs, prediction):
            return torch.zeros(inputs.shape[0], 1, dtype=F64)

    with pytest.raises(ValueError, match=r"check 'columns' must score each sample \(3,\)"):
        Columns(lambda inputs, u: u, 0.1)(torch.zeros(3, 2), torch.zeros(3, 2))


def test_boundary_walls_given_by_the_inputs_follow_the_samples_the_guard_scores():
    """Inputs constant c = 0, 1, 2, 3; left wall c + 0.25 (per sample, read off the inputs),
    right wall 0; the surrogate answers the input and refuses sample 2. Scores: the larger of
    0.25 and c, for the samples scored."""
    grid = Grid1D(5)
    inputs = torch.arange(4, dtype=F64)[:, None, None] * torch.ones(4, 1, 5, dtype=F64)

    def refusing(x):
        members = torch.stack([x, x + 0.01, x - 0.01])
        members[1, x[:, 0, 0] == 2] = float("nan")
        return Ensemble(members)

    walls = BoundaryError(lambda x: Dirichlet(x[:, 0, 0] + 0.25, 0.0), grid, threshold=1.5)
    result = guard(refusing, [walls], lambda x: x + 1000)(inputs)
    expected = torch.tensor([0.25, 1.0, math.nan, 3.0], dtype=F64)
    torch.testing.assert_close(result.scores[:, 0], expected, equal_nan=True)
    assert result.fallback.tolist() == [False, False, True, True]
    with pytest.warns(UserWarning, match="bc holds values per sample"):
        held = BoundaryError(Dirichlet(torch.arange(4.0), 0.0), grid, threshold=1.5)
    with pytest.raises(ValueError, match=r"\(scoring 3 samples\): .* function of the inputs"):
        guard(refusing, [held], lambda x: x + 1000)(inputs)
    returns_periodic = BoundaryError(lambda x: Periodic(), grid, threshold=1.5)
    with pytest.raises(TypeError, match="bc\\(inputs\\) must return a pdes.Dirichlet"):
        returns_periodic(inputs, inputs)


def test_boundary_walls_held_per_sample_are_warned_about_at_the_users_line():
    """Tensors, arrays or lists per sample warn (the guard scores only the finite answers of a
    batch); numbers, 0-d tensors and functions of the inputs do not."""
    grid = Grid1D(5)
    for walls in (Dirichlet(torch.zeros(3), 0.0), Neumann(0.0, np.zeros(3)), Dirichlet([0.0])):
        with pytest.warns(UserWarning, match=r"\(Dirichlet.left|\(Neumann.right") as caught:
            BoundaryError(walls, grid, threshold=0.1)
        assert caught[0].filename == __file__
        assert "bc(inputs) -> Dirichlet or Neumann" in str(caught[0].message)
    quiet = (
        Dirichlet(0.0, torch.tensor(1.0)),
        lambda x: Dirichlet(x[:, 0, 0], 0.0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for walls in quiet:
            BoundaryError(walls, grid, threshold=0.1)


def test_input_range_measures_the_distance_in_units_of_the_range_as_given():
    """Bounds [1, 1 + 1e-9] round to one float32 value: a float32 parameter 1.5 is 0.5 beyond
    float32(upper) = 1, in units of 1e-9. Bounds [0.300, 0.301] round to one bfloat16 value,
    0.30078125 (154 · 2⁻⁹): 0.3125 is 0.01171875 beyond it, in units of 0.001."""
    narrow = InputRange(torch.tensor([1.0], dtype=F64), torch.tensor([1.0 + 1e-9], dtype=F64))
    score = narrow.score(torch.tensor([[1.5]]), None)
    assert score.item() == pytest.approx(0.5 / ((1.0 + 1e-9) - 1.0), rel=1e-12)
    check = InputRange([0.300], [0.301])
    score = check.score(torch.tensor([[0.3125]], dtype=torch.bfloat16), None)
    assert score.item() == pytest.approx((0.3125 - 0.30078125) / (0.301 - 0.300), rel=1e-12)


def test_input_range_judges_float32_parameters_against_bounds_in_float32():
    """Trained on float64 viscosities 0.01 to 0.3; served in float32, the edges float32(0.01)
    and float32(0.3) are inside (in float64 they are not), the next float32 up is outside."""
    check = InputRange.from_training(torch.tensor([[0.01], [0.1], [0.3]], dtype=F64))
    edge = torch.tensor([[0.01], [0.3]], dtype=torch.float32)
    above = torch.nextafter(edge[1:], torch.ones(1, 1))
    fails, score = check(torch.cat([edge, above]), None)
    assert fails.tolist() == [False, False, True] and score[:2].tolist() == [0.0, 0.0]
    assert check(edge.to(F64), None)[0].tolist() == [True, True]


def test_a_threshold_of_inf_fails_only_nan_scores():
    check = PDEResidual(lambda inputs, u: u, threshold=math.inf)
    u = torch.tensor([[1e300], [math.inf], [math.nan]], dtype=F64)
    fails, score = check(u, u)
    assert fails.tolist() == [False, False, True] and check.threshold == math.inf
    for wrong in (-math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="threshold must be a number >= 0 or inf, got"):
            PDEResidual(lambda inputs, u: u, threshold=wrong)


@pytest.mark.parametrize("call", ["focal", "sample_errors"])
def test_a_zero_target_names_the_error_option_as_the_way_out(call):
    x = torch.ones(3, 4)
    y = torch.ones(3, 4)
    y[1] = 0.0
    with pytest.raises(ZeroNormError, match=r"samples \[1\] have zero L2 norm.*error=\(predic"):
        if call == "focal":
            FocalDistillation(zero_loss, Scale(1.0), tau=0.1)(Scale(2.0), (x, y))
        else:
            sample_errors(Scale(1.0), TensorDataset(x, y))
