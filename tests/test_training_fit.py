"""The Trainer's fit loop: train/eval modes, the blame for a loss that is not finite, early stopping
through on_validation, and a validation cadence without a validation set."""

import contextlib
import io
import re
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from physml import metrics
from physml.training import TrainConfig, Trainer, load_checkpoint

CONFIG = TrainConfig(steps=6, batch=4, lr=1e-2, checkpoint_every=4, seed=3)


def data(n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    return TensorDataset(x, x.sum(1, keepdim=True))


def mse(net, batch):
    x, y = batch
    return (net(x) - y).square().mean()


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def test_a_frozen_eval_part_trains_in_eval_mode_and_fit_leaves_every_module_in_its_mode():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
    adapted = nn.BatchNorm1d(8)  # frozen but in train mode: the user lets its statistics adapt
    net = nn.Sequential(backbone, adapted, nn.Linear(8, 1))
    backbone.requires_grad_(False).eval()
    adapted.requires_grad_(False)
    seen = []

    def loss(model, batch):
        seen.append((model.training, backbone.training, backbone[2].training, adapted.training))
        return mse(model, batch)

    trainer = Trainer(net, loss, CONFIG, quiet=True)
    trainer.fit(data())
    assert set(seen) == {(True, False, False, True)}
    assert backbone[1].num_batches_tracked == 0 and not backbone[1].running_mean.any()
    assert adapted.num_batches_tracked == CONFIG.steps
    assert net.training and not backbone.training and not backbone[1].training

    net.eval()  # a trainable model handed over in eval mode trains in train mode, ends in eval
    seen.clear()
    Trainer(net, loss, CONFIG, quiet=True).fit(data())
    assert {s[0] for s in seen} == {True}
    assert not any(module.training for module in net.modules())

    backbone.train()
    trainer.validate(net, data(), "cpu")
    assert [module.training for module in net.modules()] == [False] + [True] * 4 + [False] * 2


def test_a_nan_in_a_training_sample_met_after_step_1_names_that_sample():
    x, y = data().tensors
    x = x.clone()
    x[7, 2] = float("nan")
    done = []
    trainer = Trainer(mlp(), mse, CONFIG, quiet=True, after_step=lambda m, s: done.append(s))
    with pytest.raises(FloatingPointError) as caught:
        trainer.fit(TensorDataset(x, y))
    message = str(caught.value)
    step = len(done) + 1
    assert step > 1
    assert f"the loss became nan at step {step}: the training samples [7] hold NaN" in message
    assert "learning rate (lr" not in message


def test_a_loss_not_finite_on_finite_data_names_the_batch_and_both_causes():
    batches = []

    def loss(net, batch):
        batches.append(batch[0])
        return mse(net, batch) * (float("nan") if len(batches) == 3 else 1.0)

    with pytest.raises(FloatingPointError) as caught:
        Trainer(mlp(), loss, CONFIG, quiet=True).fit(data())
    message = str(caught.value)
    named = re.search(
        r"at step 3 on the training samples \[([\d, ]+)\], whose data is finite", message
    )
    assert named and "training diverged at step 3" in message
    indices = [int(i) for i in named.group(1).split(",")]
    assert torch.equal(data().tensors[0][indices], batches[2])


def test_a_loss_refusing_a_nan_sample_names_that_sample():
    """A physml metric raises NonFiniteError on a target holding NaN: the error names the
    sample holding it, not a divergence."""
    x, y = data().tensors
    y = y.clone()
    y[5] = float("nan")

    def loss(net, batch):
        return metrics.relative_l2(net(batch[0]), batch[1])

    config = TrainConfig(steps=2, batch=len(x), seed=0)
    with pytest.raises(FloatingPointError, match=r"the training samples \[5\] hold NaN or inf"):
        Trainer(mlp(), loss, config, quiet=True).fit(TensorDataset(x, y))


def test_weights_gone_non_finite_are_blamed_as_a_divergence():
    """NaN weights after step 1 (set so here) make the loss NaN at step 2 on finite data: a
    divergence, never described as met "with finite weights"."""

    def poison(net, step):
        if step == 1:
            with torch.no_grad():
                next(net.parameters()).fill_(float("nan"))

    trainer = Trainer(
        mlp(), mse, TrainConfig(steps=3, batch=4, seed=0), quiet=True, after_step=poison
    )
    with pytest.raises(FloatingPointError) as caught:
        trainer.fit(data())
    message = str(caught.value)
    assert message.startswith("training diverged at step 2") and "finite weights" not in message


def test_a_gradient_overflow_before_any_update_blames_the_loss_not_the_learning_rate():
    def huge(net, batch):
        return mse(net, batch) * 1e30

    with pytest.raises(FloatingPointError) as caught:
        Trainer(mlp(), huge, CONFIG, quiet=True).fit(data())
    message = str(caught.value)
    assert message.startswith("the gradient norm became inf at step 1, before any update: the loss")
    assert "diverged" not in message


def test_on_validation_stops_the_run_with_a_checkpoint_and_the_report(tmp_path):
    config = TrainConfig(steps=12, batch=4, lr=1e-2, validate_every=3, checkpoint_every=4, seed=3)
    calls = []

    def stop_at_6(model, step, loss):
        calls.append((step, loss))
        return step == 6

    net = mlp()
    trainer = Trainer(net, mse, config, tmp_path, quiet=True, on_validation=stop_at_6)
    report = trainer.fit(data(), data(8, seed=1))
    assert trainer.report_ is report and report.stopped_at == 6 and len(report.losses) == 6
    assert calls == report.validation and [step for step, _ in calls] == [3, 6]
    assert trainer.validate(net, data(8, seed=1), "cpu") == calls[-1][1]
    assert load_checkpoint(tmp_path)["step"] == 6

    resumed = Trainer(mlp(), mse, config, tmp_path, quiet=True).fit(data(), data(8, seed=1))
    straight = mlp()
    Trainer(straight, mse, config, quiet=True).fit(data(), data(8, seed=1))
    weights = load_checkpoint(tmp_path)["model"]
    assert resumed.resumed_from == 6 and resumed.stopped_at is None
    assert all(torch.equal(weights[k], v) for k, v in straight.state_dict().items())


@pytest.mark.parametrize("stop_from, stopped_at", [(4, 4), (6, None)])
def test_a_numpy_bool_from_on_validation_stops_early_only_before_the_last_step(
    stop_from, stopped_at
):
    """A comparison of numpy numbers (``np.float64(loss) < best``) answers ``np.bool_``: taken
    as True. A stop asked at the last step (6) is no early stop: the run did all its steps."""
    config = TrainConfig(steps=6, batch=4, lr=1e-2, validate_every=2, seed=3)
    trainer = Trainer(
        mlp(), mse, config, quiet=True, on_validation=lambda m, step, v: np.int64(step) >= stop_from
    )
    report = trainer.fit(data(), data(8, seed=1))
    assert report.stopped_at == stopped_at and len(report.losses) == (stopped_at or 6)


def test_on_validation_must_be_callable_and_answer_true_false_or_none():
    with pytest.raises(TypeError, match="on_validation must be callable"):
        Trainer(mlp(), mse, CONFIG, on_validation=3)
    config = TrainConfig(steps=2, batch=4, validate_every=1)
    trainer = Trainer(mlp(), mse, config, quiet=True, on_validation=lambda m, s, v: 1)
    with pytest.raises(TypeError, match=r"on_validation must return True .* got 1"):
        trainer.fit(data(), data(4))


def test_validate_every_without_a_validation_set_warns_at_the_callers_line():
    config = TrainConfig(steps=2, batch=4, validate_every=1)
    with pytest.warns(UserWarning, match="validate_every is 1 but fit got no validation set") as w:
        report = Trainer(mlp(), mse, config, quiet=True).fit(data())
    assert report.validation == [] and w[0].filename == __file__


class DeadBias(nn.Module):
    """``w x + 0 · b``: ``b``'s gradient is exactly 0, which Adam divides by its second moment."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4, 1, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(1, dtype=dtype))

    def forward(self, x):
        return x @ self.w + 0 * self.b


def half_mse(net, batch):
    """The MSE in float32 of a net fed its own dtype."""
    x, y = batch
    return (net(x.to(next(net.parameters()).dtype)).float() - y).square().mean()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_weights_are_warned_about_once_up_front(dtype):
    config = TrainConfig(steps=2, batch=4, lr=1e-3)
    name = str(dtype).removeprefix("torch.")
    with pytest.warns(UserWarning) as warned, contextlib.suppress(FloatingPointError):
        Trainer(mlp().to(dtype), half_mse, config, quiet=True).fit(data())  # float16 diverges
    (warning,) = [w for w in warned if "weights" in str(w.message)]
    assert re.match(f"{name} weights: .*run the forward under torch.autocast", str(warning.message))


def test_float32_weights_are_not_warned_about(recwarn):
    Trainer(mlp(), mse, TrainConfig(steps=1, batch=4), quiet=True).fit(data())
    assert not [w for w in recwarn if "weights" in str(w.message)]


def test_a_float16_run_that_diverges_is_told_its_precision_not_a_learning_rate():
    # b's gradient is 0: float16 Adam takes 0 / (0 + eps), eps = 1e-8 being 0 in float16
    assert torch.tensor(1e-8, dtype=torch.float16) == 0
    config = TrainConfig(steps=3, batch=4, lr=1e-6, clip=0.1)
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError) as diverged:
        Trainer(DeadBias(torch.float16), half_mse, config, quiet=True).fit(data())
    message = str(diverged.value)
    assert "training diverged at step 2" in message and "float16 weights: Adam's" in message
    assert "learning rate" not in message and "clip" not in message
    report = Trainer(DeadBias(torch.float32), half_mse, config, quiet=True).fit(data())
    assert np.isfinite(report.losses).all()  # the same run in float32 trains


@pytest.mark.parametrize("retrain", ["", 3, None])
def test_retrain_must_be_a_sentence(retrain):
    with pytest.raises(TypeError, match=f"retrain must be a non-empty string, got {retrain!r}"):
        Trainer(mlp(), mse, CONFIG, retrain=retrain)


def test_the_documented_autocast_loss_trains_float32_weights_to_bfloat16_accuracy(recwarn):
    def loss(model, batch):  # the pattern of Trainer's docstring
        x, y = batch
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = model(x)
        return (prediction.float() - y).square().mean()

    net = mlp()
    low = Trainer(net, loss, CONFIG, quiet=True).fit(data()).losses
    full = Trainer(mlp(), mse, CONFIG, quiet=True).fit(data()).losses
    assert all(p.dtype == torch.float32 for p in net.parameters())
    np.testing.assert_allclose(low, full, rtol=3e-2)
    assert low != full  # the forward did run in bfloat16
    assert not [w for w in recwarn if "weights" in str(w.message)]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    ("terminal", "quiet", "shown"),
    [(False, False, False), (True, False, True), (True, True, False)],
)
def test_the_progress_bar_is_drawn_only_on_a_terminal_and_not_quiet(
    monkeypatch, capsys, terminal, quiet, shown
):
    """A run whose stderr is a log file (Slurm) gets no bar redrawn with ``\\r`` in it."""
    stderr = _Terminal() if terminal else sys.stderr
    monkeypatch.setattr(sys, "stderr", stderr)
    Trainer(mlp(), mse, TrainConfig(steps=3, batch=4), quiet=quiet).fit(data())
    written = stderr.getvalue() if terminal else capsys.readouterr().err
    assert ("\r" in written and "3/3" in written) is shown, repr(written)
    assert shown or written == ""
