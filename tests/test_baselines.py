"""Forecasting baselines and the training loop: shapes, gradients, learning, resume, scores."""

import copy
import functools
import math
import re
import shutil
import time
import warnings

import numpy as np
import pytest
import torch
from damage import flip_a_bit_of_a_zip_entry
from torch import nn

from physml.models.baselines import ConvLSTM, ConvLSTMCell, Persistence, UNet, count_parameters
from physml.models.forecasting import evaluate_forecaster, score_forecast
from physml.training import ForecasterReport
from physml.training.forecasting import train_forecaster

H = W = 16


def toy_sequences(count=4, frames=6, channels=1, seed=0):
    """A bright square sliding one pixel per frame: learnable in a handful of steps."""
    gen = torch.Generator().manual_seed(seed)
    video = torch.zeros(count, frames, channels, H, W)
    rows = torch.randint(0, H - 4, (count,), generator=gen)
    cols = torch.randint(0, W - 4 - frames, (count,), generator=gen)
    for n in range(count):
        for t in range(frames):
            r, c = int(rows[n]), int(cols[n]) + t
            video[n, t, :, r : r + 4, c : c + 4] = 1.0
    return video[:, : frames // 2], video[:, frames // 2 :]


def build(name, t_in, t_out, channels):
    torch.manual_seed(0)
    if name == "persistence":
        return Persistence(t_out)
    if name == "unet":
        return UNet(t_in, t_out, channels, base=4, depth=2)
    return ConvLSTM(channels, hidden=6, layers=2, target_frames=t_out, patch=2)


MODELS = ["persistence", "unet", "convlstm"]
LEARNED = ["unet", "convlstm"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("t_in", "t_out", "channels"), [(3, 2, 1), (2, 4, 2), (1, 1, 1)])
def test_forecast_shape(name, t_in, t_out, channels):
    model = build(name, t_in, t_out, channels)
    x = torch.rand(2, t_in, channels, H, W)
    assert model(x).shape == (2, t_out, channels, H, W)


@pytest.mark.parametrize("name", LEARNED)
def test_gradients_reach_every_parameter(name):
    model = build(name, 3, 3, 1)
    x, y = toy_sequences()
    (model(x) - y).square().mean().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("base", [3, 6, 17, 18, 24])
def test_unet_takes_any_width_and_normalises_with_groups_that_divide_it(base):
    model = UNet(2, 2, base=base, depth=2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms
    for norm in norms:
        assert norm.num_channels % norm.num_groups == 0 and norm.num_groups <= 8
        # the largest such count: no bigger divisor up to 8 was skipped
        assert all(norm.num_channels % g for g in range(norm.num_groups + 1, 9))
    assert model(torch.rand(1, 2, 1, H, W)).shape == (1, 2, 1, H, W)


@pytest.mark.parametrize("name", LEARNED)
def test_sigmoid_head_stays_in_the_unit_interval_and_linear_does_not_have_to(name):
    x = 50 * torch.randn(2, 3, 1, H, W)
    model = build(name, 3, 2, 1)
    out = model(x)
    assert out.min() >= 0 and out.max() <= 1
    if name == "unet":
        linear = UNet(3, 2, 1, base=4, depth=2, output="linear")
    else:
        linear = ConvLSTM(1, hidden=6, layers=2, target_frames=2, output="linear")
    assert linear(x).shape == out.shape


def test_persistence_repeats_the_last_frame_exactly():
    x = torch.rand(3, 5, 2, H, W)
    forecast = Persistence(4)(x)
    for t in range(4):
        assert torch.equal(forecast[:, t], x[:, -1])
    assert count_parameters(Persistence(4)) == 0


def test_parameter_counts_follow_the_layer_formulas():
    channels, hidden, kernel, patch, layers = 1, 8, 3, 2, 3
    folded = channels * patch**2

    def cell(inputs):  # 4 gates, each a k×k conv of [input, hidden] plus a bias
        return 4 * hidden * (inputs + hidden) * kernel**2 + 4 * hidden

    stack = cell(folded) + (layers - 1) * cell(hidden)
    head = hidden * folded + folded
    model = ConvLSTM(channels, hidden=hidden, layers=layers, kernel=kernel, patch=patch)
    assert count_parameters(model) == 2 * stack + head
    assert count_parameters(ConvLSTMCell(5, 7, 3)) == 4 * 7 * 12 * 9 + 4 * 7
    frozen = UNet(2, 2, base=4, depth=1)
    total = count_parameters(frozen)
    frozen.head.weight.requires_grad_(False)
    assert count_parameters(frozen) == total - frozen.head.weight.numel()


@pytest.mark.parametrize("name", LEARNED)
def test_training_lowers_the_loss_on_a_toy_batch(name):
    model = build(name, 3, 3, 1)
    x, y = toy_sequences()
    report = train_forecaster(model, x, y, max_steps=25, batch_size=4, lr=1e-2, schedule="none")
    assert type(report) is ForecasterReport and report.steps == 25 and len(report.losses) == 25
    assert sum(report.losses[-3:]) / 3 < 0.7 * report.losses[0]


def test_a_forecaster_with_other_output_channels_trains_and_is_scored():
    from physml.models import Earthformer

    torch.manual_seed(0)
    model = Earthformer((2, 1, 8, 8), (3, 2, 8, 8), base_units=8, num_heads=2, depth=(1,))
    x, y = torch.rand(6, 2, 1, 8, 8), torch.rand(6, 3, 2, 8, 8)  # 1 channel in, 2 out
    assert train_forecaster(model, x, y, max_steps=2, batch_size=3).steps == 2
    scores = evaluate_forecaster(model, x, y)
    assert scores.mse_per_lead.shape == (3,) and scores.mse > 0
    with pytest.raises(ValueError, match="model must return the targets' shape"):
        train_forecaster(model, x, torch.rand(6, 3, 1, 8, 8), max_steps=1)


class Gain(nn.Module):
    """``w x + 0 · b`` in ``dtype``, ``w = 1``, ``b = 0`` (its gradient exactly 0)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones((), dtype=dtype))
        self.b = nn.Parameter(torch.zeros((), dtype=dtype))

    def forward(self, x):
        return self.w * x + 0 * self.b


def test_a_float16_forecaster_takes_its_loss_in_float32_and_is_warned_about_its_weights():
    x = torch.ones(4, 2, 1, 4, 4)
    y = x + 300  # an error of 300: its square, 90000, is past float16's 65504
    model = Gain(torch.float16)
    model.b.requires_grad_(False)
    with pytest.warns(UserWarning, match="^float16 weights: Adam's .* torch.autocast"):
        report = train_forecaster(model, x, y, max_steps=1, batch_size=2, val=(x, y))
    assert report.losses == [300.0**2]
    ((step, val_loss),) = report.val_losses
    assert step == 1 and val_loss == pytest.approx((float(model.w) - 301.0) ** 2, rel=1e-6)


def test_a_float16_forecaster_that_diverges_is_told_its_precision():
    x = torch.ones(4, 2, 1, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(
            FloatingPointError, match="diverged at step 2 .*float16 weights: Adam's"
        ):
            train_forecaster(Gain(torch.float16), x, 2 * x, max_steps=3, batch_size=2)


@pytest.mark.parametrize("name", [*LEARNED, "earthformer"])
def test_float64_frames_go_through_a_float32_network(name):
    from physml.models import Earthformer

    torch.manual_seed(0)
    if name == "earthformer":
        model = Earthformer((3, 1, 8, 8), (3, 1, 8, 8), base_units=8, num_heads=2, depth=(1,))
    else:
        model = build(name, 3, 3, 1)
    x = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x), model(x.float()), rtol=0, atol=0)


def _float64_case(name):
    """A float32 model and float64 inputs for it (tiny)."""
    from physml.models import (
        CuboidCrossAttention,
        CuboidCrossBlock,
        CuboidSelfAttention,
        CuboidTransformerBlock,
        EnergyJudge,
        KnowledgeRegressor,
    )
    from physml.models.prediff import ConvDenoiser, CuboidDenoiser
    from physml.models.prediff.autoencoder import ResidualBlock

    grid, memory, globals_ = (2, 3, 4, 4, 8), (2, 2, 4, 4, 8), (2, 2, 8)
    latents, steps = (2, 2, 2, 4, 4), torch.tensor([3, 70])
    cases = {
        "energy_judge": (EnergyJudge(hidden=2, depth=1), [(2, 3, 1, 8, 8)]),
        "knowledge_regressor": (
            KnowledgeRegressor((2, 1, 8, 8), hidden=4),
            [(2, 2, 1, 8, 8), steps],
        ),
        "cuboid_self_attention": (
            CuboidSelfAttention(8, 2, (2, 2, 2), global_vectors=2),
            [grid, globals_],
        ),
        "cuboid_cross_attention": (
            CuboidCrossAttention(8, 2, (2, 2), memory_global_vectors=2),
            [grid, memory, globals_],
        ),
        "cuboid_block": (
            CuboidTransformerBlock(8, 2, (3, 4, 4), global_vectors=2),
            [grid, globals_],
        ),
        "cuboid_cross_block": (
            CuboidCrossBlock(8, 2, (2, 2), memory_global_vectors=2),
            [grid, memory, globals_],
        ),
        "residual_block": (ResidualBlock(4), [(2, 4, 4, 4)]),
        "conv_denoiser": (ConvDenoiser(2, 2, (2, 4, 4), widths=(4, 8)), [latents, steps, latents]),
        "cuboid_denoiser": (
            CuboidDenoiser(2, 2, (2, 4, 4), dim=4, depth=(1, 1), num_heads=2),
            [latents, steps, latents],
        ),
    }
    model, inputs = cases[name]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every weight random (the denoisers' heads start at zero)
        for parameter in model.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    inputs = [
        item
        if isinstance(item, torch.Tensor)
        else torch.randn(item, generator=generator, dtype=torch.float64)
        for item in inputs
    ]
    return model.eval(), inputs


@pytest.mark.parametrize(
    "name",
    [
        "energy_judge",
        "knowledge_regressor",
        "cuboid_self_attention",
        "cuboid_cross_attention",
        "cuboid_block",
        "cuboid_cross_block",
        "residual_block",
        "conv_denoiser",
        "cuboid_denoiser",
    ],
)
def test_float64_input_goes_through_the_other_float32_models_as_if_cast_by_hand(name):
    """As UNet, ConvLSTM and Earthformer do: no torch dtype error from deep inside."""
    model, inputs = _float64_case(name)
    by_hand = [x.float() if x.is_floating_point() else x for x in inputs]
    got, expected = model(*inputs), model(*by_hand)
    got, expected = (got, expected) if isinstance(got, tuple) else ((got,), (expected,))
    for out, reference in zip(got, expected, strict=True):
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, reference, rtol=0, atol=0)


def test_parameter_free_models_are_returned_untouched():
    x, y = toy_sequences()
    report = train_forecaster(Persistence(3), x, y, max_steps=5)
    assert report.steps == 0 and report.losses == []


def test_the_forecasters_report_has_its_own_name_and_keeps_the_old_one():
    """``physml.training.TrainReport`` is the Trainer's; the forecasters' report is
    ``ForecasterReport``, still importable as ``TrainReport`` where it was before."""
    import physml.models
    import physml.models.forecasting
    import physml.training
    import physml.training.forecasting

    x, y = toy_sequences()
    report = train_forecaster(Persistence(3), x, y, max_steps=5)
    assert type(report) is physml.training.ForecasterReport
    assert type(report).__name__ == "ForecasterReport"
    assert physml.training.ForecasterReport is not physml.training.TrainReport
    assert physml.training.TrainReport.__module__ == "physml.training.trainer"
    for module in (physml.models, physml.models.forecasting, physml.training.forecasting):
        assert module.TrainReport is physml.training.ForecasterReport, module.__name__


# ------------------------------------------------------------------------------ training loop


def train(model, checkpoint=None, on_step=None, seed=0, steps=6, data_seed=0, **options):
    x, y = toy_sequences(count=8, seed=data_seed)
    return train_forecaster(  # batches of 3 from 8: the kill at step 3 falls inside an epoch
        model,
        x,
        y,
        max_steps=steps,
        batch_size=3,
        lr=5e-3,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=1,
        on_step=on_step,
        **{"val": (x[:2], y[:2]), **options},
    )


def test_validation_time_does_not_count_against_the_budget(monkeypatch):
    """A fake clock: each training forward takes 1 s, each validation batch 10 s."""
    from physml.training import forecasting

    clock = [0.0]

    class Timed(Persistence):
        def __init__(self):
            super().__init__(3)
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            clock[0] += 1.0 if self.training else 10.0
            return super().forward(x) * self.scale

    monkeypatch.setitem(forecasting.CLOCKS, "wall", lambda: clock[0])
    x, y = toy_sequences(count=4)
    report = train_forecaster(
        Timed(), x, y, budget_s=5.5, batch_size=2, val=(x[:2], y[:2]), val_every=1
    )
    assert report.steps == 6 and len(report.val_losses) == 6
    assert report.seconds == pytest.approx(6.0)  # the training forwards only


def same_parameters(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    template = build("unet", 3, 3, 1)
    straight = copy.deepcopy(template)
    expected = train(straight)

    class Killed(Exception):
        pass

    def kill_at_three(step, loss):
        if step == 3:
            raise Killed

    resumed = copy.deepcopy(template)
    path = tmp_path / "run"
    with pytest.raises(Killed):
        train(resumed, checkpoint=path, on_step=kill_at_three, model_config={"name": "unet"})
    fresh = copy.deepcopy(template)  # a new process would rebuild the model from scratch
    report = train(fresh, checkpoint=path, model_config={"name": "unet"})
    assert report.steps == expected.steps == 6
    assert report.losses == expected.losses
    assert report.val_losses == expected.val_losses
    assert same_parameters(fresh, straight)
    assert not same_parameters(fresh, template)
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6


def test_checkpoint_from_other_settings_is_refused(tmp_path):
    path = tmp_path / "run"
    train(build("unet", 3, 3, 1), checkpoint=path, steps=2)
    with pytest.raises(ValueError, match="checkpoint"):
        train(build("unet", 3, 3, 1), checkpoint=path, steps=2, seed=1)
    (path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a checkpoint of physml train .not a zip archive"):
        train(build("unet", 3, 3, 1), checkpoint=path, steps=2)
    shutil.rmtree(path)
    path.write_bytes(b"a file")  # a checkpoint of older physml, or any file: not a run folder
    with pytest.raises(ValueError) as refused:
        train(build("unet", 3, 3, 1), checkpoint=path, steps=2)
    assert str(refused.value) == (
        f"checkpoint: {str(path)!r} is a file (older physml wrote a forecaster's checkpoint as "
        "one); train_forecaster keeps its checkpoint in a run folder (checkpoint.pt in it): "
        "delete it, or use another checkpoint path (physml run/demo: another --out)"
    )


def test_a_checkpoint_with_a_flipped_bit_is_refused_naming_the_file(tmp_path):
    """torch.load checks no CRC-32: the flipped bit would resume from another weight."""
    from physml.training import CheckpointError

    trained = build("unet", 3, 3, 1)
    for name in ("intact", "damaged"):
        train(copy.deepcopy(trained), checkpoint=tmp_path / name, steps=2)
    train(trained, steps=2)
    damaged = tmp_path / "damaged"
    flip_a_bit_of_a_zip_entry(damaged / "checkpoint.pt")
    with pytest.raises(CheckpointError) as refused:
        train(build("unet", 3, 3, 1), checkpoint=damaged, steps=2)
    assert str(refused.value) == (
        f"checkpoint: {str(damaged / 'checkpoint.pt')!r} cannot be read as a checkpoint of "
        "physml train: it is damaged "
        "(its entry 'data/0' fails its CRC-32 check: a bit changed on disk or in a copy); "
        "restore an intact copy, delete it to start that training over, or use another "
        "checkpoint path (physml run/demo: another --out)"
    )
    resumed = build("unet", 3, 3, 1)
    assert train(resumed, checkpoint=tmp_path / "intact", steps=2).steps == 2
    assert same_parameters(resumed, trained)


class Killed(Exception):
    pass


def kill_at(step):
    def on_step(done, loss):
        if done == step:
            raise Killed

    return on_step


def test_resuming_another_model_is_refused_naming_the_setting(tmp_path):
    path = tmp_path / "run"
    config = {"name": "unet", "base": 8, "options": {"depth": 2, "output": "linear"}}
    with pytest.raises(Killed):
        train(build("unet", 3, 3, 1), path, kill_at(2), model_config=config)
    other = {**config, "options": {"depth": 2, "output": "sigmoid"}}
    changed = r"another model \(model_config.options.output 'linear' → 'sigmoid'\)"
    with pytest.raises(ValueError, match=changed):
        train(build("unet", 3, 3, 1), path, model_config=other)
    with pytest.raises(Killed):  # no config given: the saved one is kept
        train(build("unet", 3, 3, 1), path, kill_at(4))
    with pytest.raises(ValueError, match=r"another model \(model_config.base 8 → 16\)"):
        train(build("unet", 3, 3, 1), path, model_config={**config, "base": 16})
    assert train(build("unet", 3, 3, 1), path, model_config=config).steps == 6


def test_resuming_on_other_data_of_the_same_count_is_refused(tmp_path):
    path = tmp_path / "run"
    with pytest.raises(Killed):
        train(build("unet", 3, 3, 1), path, kill_at(2))
    with pytest.raises(ValueError, match=r"trained on other data \(sample_hash"):
        train(build("unet", 3, 3, 1), path, data_seed=1)
    assert train(build("unet", 3, 3, 1), path).steps == 6


def test_resuming_with_another_validation_set_is_refused_once_it_was_scored(tmp_path):
    x, y = toy_sequences(count=8)
    first, other = (x[:2], y[:2]), (x[2:4], y[2:4])
    path = tmp_path / "run"
    with pytest.raises(Killed):  # val scored at the end only: nothing recorded yet
        train(build("unet", 3, 3, 1), path, kill_at(2), val=first)
    with pytest.raises(Killed):
        train(build("unet", 3, 3, 1), path, kill_at(4), val=other, val_every=1)
    with pytest.raises(ValueError, match="validation losses on another validation set"):
        train(build("unet", 3, 3, 1), path, val=first, val_every=1)
    with pytest.raises(Killed):  # without val: the set scored is remembered
        train(build("unet", 3, 3, 1), path, kill_at(5), val=None)
    with pytest.raises(ValueError, match="validation losses on another validation set"):
        train(build("unet", 3, 3, 1), path, val=first, val_every=1)
    report = train(build("unet", 3, 3, 1), path, val=other, val_every=1)
    assert [step for step, _ in report.val_losses] == [2, 3, 5, 6]  # killed before 4's record


def test_a_refused_resume_names_the_difference_and_advises_no_cli_flag(tmp_path):
    """train_forecaster is a Python API: its refusals advise another checkpoint path, not
    physml train's --out, and still name what differs."""
    x, y = toy_sequences(count=8)
    path = tmp_path / "run"
    config = {"name": "unet", "base": 4}
    with pytest.raises(Killed):
        train(build("unet", 3, 3, 1), path, kill_at(2), model_config=config, val_every=1)
    refusals = [
        ({"model_config": {"name": "unet", "base": 8}}, r"another model \(model_config.base 4 → 8"),
        ({"data_seed": 1, "model_config": config}, r"other data \(sample_hash"),
        (
            {"val": (x[2:4], y[2:4]), "val_every": 1, "model_config": config},
            r"another validation set \(sample_hash",
        ),
    ]
    for options, difference in refusals:
        with pytest.raises(ValueError, match=difference) as refused:
            train(build("unet", 3, 3, 1), path, **options)
        message = str(refused.value)
        assert "--out" not in message and "another checkpoint path" in message, message


def test_a_run_without_schedule_extends_like_an_uninterrupted_run_of_the_new_length(tmp_path):
    """schedule="none": 3 steps resumed with max_steps=6 take the steps (batches, Adam's state)
    of a 6-step run; a run is not cut back below the step it reached."""
    template = build("unet", 3, 3, 1)
    straight = copy.deepcopy(template)
    expected = train(straight, schedule="none")
    path = tmp_path / "run"
    assert train(copy.deepcopy(template), path, steps=3, schedule="none").steps == 3
    extended = copy.deepcopy(template)
    report = train(extended, path, schedule="none")
    assert report.steps == 6 and report.losses == expected.losses
    assert same_parameters(extended, straight)
    with pytest.raises(ValueError) as refused:
        train(build("unet", 3, 3, 1), path, steps=2, schedule="none")
    assert str(refused.value) == (
        f"checkpoint: {str(path)!r} is at step 6, beyond the 2 steps asked for; use another "
        "checkpoint path or a larger max_steps"
    )


def test_extending_a_cosine_run_is_refused_saying_why_and_what_would_do(tmp_path):
    """The cosine rate decays over max_steps (or budget_s without it): resumed over another
    length, the rest of the run follows no run's schedule. A budget only stopping a run whose
    schedule runs over max_steps may change."""
    path = tmp_path / "run"
    train(build("unet", 3, 3, 1), path, steps=3)
    with pytest.raises(ValueError) as refused:
        train(build("unet", 3, 3, 1), path, steps=6)
    message = str(refused.value)
    assert "step 3 of a run on the cosine learning-rate schedule over 3 steps; " in message
    assert "resuming it for 6 steps would not follow the schedule of a 6-step run" in message
    assert (
        "Train the 6 steps afresh (use another checkpoint path), or resume for the 3 steps the "
        'run began with (a run on schedule="none" may be extended)' in message
    )
    assert "--" not in message
    with pytest.raises(ValueError) as refused:
        train(build("unet", 3, 3, 1), path, steps=None, budget_s=60.0)
    assert str(refused.value) == (
        f"checkpoint: {str(path)!r} holds step 3 of a run on the cosine learning-rate schedule "
        "over 3 steps; resumed over budget_s=60.0 seconds (no max_steps) the rest of the run "
        "would follow neither that schedule nor a fresh run's. Train over budget_s=60.0 seconds "
        "(no max_steps) afresh (use another checkpoint path), or resume over 3 steps (a run on "
        'schedule="none" may be extended)'
    )
    assert train(build("unet", 3, 3, 1), path, steps=3, budget_s=60.0).steps == 3
    budget_only = tmp_path / "budget"
    train(build("unet", 3, 3, 1), budget_only, steps=None, budget_s=0.2)
    with pytest.raises(ValueError) as refused:
        train(build("unet", 3, 3, 1), budget_only, steps=4, budget_s=0.2)
    message = str(refused.value)
    assert "over budget_s=0.2 seconds (no max_steps); resumed over 4 steps the rest" in message
    assert "or resume over budget_s=0.2 seconds (no max_steps) (a run" in message


def test_a_refused_setting_is_named_alone_and_an_unset_budget_is_none(tmp_path):
    path = tmp_path / "run"
    train(build("unet", 3, 3, 1), path, steps=2)
    saved = torch.load(path / "checkpoint.pt", weights_only=True)["config"]
    assert saved["steps"] == 2 and saved["budget_s"] is None
    with pytest.raises(ValueError) as refused:
        train(build("unet", 3, 3, 1), path, steps=2, seed=1)
    assert str(refused.value) == (
        f"checkpoint: {str(path)!r} was trained with other settings (seed 0 → 1); use another "
        "checkpoint path or the same settings"
    )


def test_a_checkpoint_from_before_time_budgets_resumes_counting_no_seconds(tmp_path):
    """A Trainer checkpoint written before budget_s, clock and the seconds used were saved
    resumes as a wall-clock run without budget that had used 0 s, bit for bit."""
    template = build("unet", 3, 3, 1)
    straight = copy.deepcopy(template)
    expected = train(straight)
    path = tmp_path / "run"
    with pytest.raises(Killed):
        train(copy.deepcopy(template), path, kill_at(3), model_config={"name": "unet"})
    state = torch.load(path / "checkpoint.pt", weights_only=True)
    del state["train_s"], state["config"]["budget_s"], state["config"]["clock"]
    torch.save(state, path / "checkpoint.pt")
    resumed = copy.deepcopy(template)
    report = train(resumed, path)  # no model_config: the saved one is kept
    assert report.losses == expected.losses and report.val_losses == expected.val_losses
    assert same_parameters(resumed, straight)
    saved = torch.load(path / "checkpoint.pt", weights_only=True)
    assert saved["model_config"] == {"model_config": {"name": "unet"}, "loss": "mse"}
    assert 0 < saved["train_s"] == report.seconds
    assert (saved["config"]["budget_s"], saved["config"]["clock"]) == (None, "wall")
    with pytest.raises(ValueError, match=r"other settings \(clock 'wall' → 'cpu'\)"):
        train(copy.deepcopy(template), path, clock="cpu")


def test_training_is_deterministic_by_seed():
    template = build("convlstm", 3, 3, 1)
    first, second, other = (copy.deepcopy(template) for _ in range(3))
    train(first, seed=3)
    train(second, seed=3)
    train(other, seed=4)
    assert same_parameters(first, second)
    assert not same_parameters(first, other)


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_stops_the_run(clock):
    x, y = toy_sequences()
    model = build("unet", 3, 3, 1)
    report = train_forecaster(model, x, y, budget_s=0.3, batch_size=2, clock=clock)
    assert report.steps >= 1 and report.seconds >= 0.3
    assert len(report.losses) == report.steps


def test_the_cpu_clock_is_the_one_a_cpu_budget_reads(monkeypatch):
    """clock="cpu": the budget and the seconds reported come from the CPU clock alone (the
    wall clock, read, would fail the run)."""
    from physml.training import forecasting

    timed = fake_clock(monkeypatch, 1.0)
    monkeypatch.setitem(forecasting.CLOCKS, "cpu", forecasting.CLOCKS["wall"])

    def unread() -> float:
        raise AssertionError("the wall clock was read")

    monkeypatch.setitem(forecasting.CLOCKS, "wall", unread)
    report = train_forecaster(timed(), *labelled(), budget_s=2.5, batch_size=2, clock="cpu")
    assert report.steps == 3 and report.seconds == 3.0


def test_training_leaves_the_callers_random_generators_and_the_models_mode_as_they_were():
    """The Trainer seeds torch's, numpy's and Python's generators for the run; the caller's
    states come back, and a model passed in eval mode is returned in eval mode."""
    import random

    torch.manual_seed(11)
    np.random.seed(12)  # noqa: NPY002
    random.seed(13)
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002
    model = Offset().eval()
    x, y = labelled()
    train_forecaster(model, x, y, max_steps=2, batch_size=2, val=(x, y), val_every=1)
    assert torch.equal(torch.get_rng_state(), states[0])
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == states[1][0] and np.array_equal(after[1], states[1][1])
    assert after[2:] == states[1][2:] and random.getstate() == states[2]
    assert not model.training and len(model.seen) == 2  # trained in train mode all the same


def test_validation_is_scored_by_its_mse_whatever_the_training_loss():
    x, _ = labelled(4)
    model = Offset()
    options = dict(max_steps=1, batch_size=2, loss="l1", val=(x, x))  # val's error: the offset
    report = train_forecaster(model, x, x + 0.5, **options)
    offset = float(model.offset.detach())
    assert offset == pytest.approx(1e-3)  # Adam's first step of lr against the L1 gradient
    ((step, mse),) = report.val_losses
    assert step == 1 and mse == pytest.approx(offset**2, rel=1e-12)
    assert report.losses == [pytest.approx(0.5, rel=1e-12)]  # the L1 of the first step


def test_cpu_clock_does_not_count_time_spent_waiting():
    x, y = toy_sequences()
    started = time.perf_counter()
    report = train_forecaster(
        build("unet", 3, 3, 1),
        x,
        y,
        max_steps=3,
        batch_size=2,
        clock="cpu",
        on_step=lambda step, loss: time.sleep(0.2),
    )
    assert time.perf_counter() - started >= 0.6
    assert report.seconds < 0.6 - 0.15


def huber(prediction, target):
    return nn.functional.huber_loss(prediction, target, delta=0.1)


@pytest.mark.parametrize(
    "loss, formula",
    [
        ("mse", lambda e: e.square().mean()),
        ("l1", lambda e: e.abs().mean()),
        (huber, lambda e: torch.where(e.abs() < 0.1, 0.5 * e**2, 0.1 * (e.abs() - 0.05)).mean()),
    ],
)
def test_reported_loss_is_the_chosen_objective_of_the_error(loss, formula):
    x, y = toy_sequences()
    model = build("unet", 3, 3, 1)
    before = copy.deepcopy(model)
    report = train_forecaster(model, x, y, max_steps=1, batch_size=len(x), loss=loss)
    with torch.no_grad():  # one batch holding every sample: the first loss is over all of them
        expected = float(formula(before(x) - y))
    assert report.losses[0] == pytest.approx(expected, rel=1e-5)


def test_resuming_with_another_loss_is_refused(tmp_path):
    x, y = toy_sequences()
    path = tmp_path / "run"
    train_forecaster(build("unet", 3, 3, 1), x, y, max_steps=1, checkpoint=path)
    with pytest.raises(ValueError, match="settings"):
        train_forecaster(build("unet", 3, 3, 1), x, y, max_steps=2, checkpoint=path, loss="l1")


def weighted_error(prediction, target, weight):
    return weight * (prediction - target).square().mean()


def test_resuming_with_a_partial_loss_of_other_arguments_is_refused(tmp_path):
    x, y = toy_sequences()
    path = tmp_path / "run"

    def run(loss, on_step=None, **options):
        model = build("unet", 3, 3, 1)
        return train_forecaster(
            model,
            x,
            y,
            max_steps=2,
            checkpoint=path,
            checkpoint_every=1,
            on_step=on_step,
            loss=loss,
            **options,
        )

    with pytest.raises(Killed):
        run(functools.partial(weighted_error, weight=1.0), kill_at(2))  # step 1 checkpointed
    with pytest.raises(ValueError, match=r"weighted_error\(weight=1.0\)' → '.*\(weight=2.0\)'"):
        run(functools.partial(weighted_error, weight=2.0))
    assert run(functools.partial(weighted_error, weight=1.0)).steps == 2
    shutil.rmtree(path)
    with pytest.raises(Killed):
        run(lambda p, t: (p - t).abs().mean(), kill_at(2), loss_name="l1 by hand")
    with pytest.raises(ValueError, match="loss 'l1 by hand' → 'mse by hand'"):
        run(lambda p, t: (p - t).square().mean(), loss_name="mse by hand")
    assert run(lambda p, t: (p - t).abs().mean(), loss_name="l1 by hand").steps == 2


class Reducer:
    def __call__(self, values):
        return values.mean()


def test_a_partial_loss_is_named_without_memory_addresses():
    """A partial holding a function or an object is named the same in every process: its
    repr's ``at 0x...`` would make every resume in a new process fail."""
    from physml.training.forecasting import _loss_name

    def loss(prediction, target, reduce):
        return reduce((prediction - target).square())

    for argument in (torch.mean, Reducer(), weighted_error):
        name = _loss_name(functools.partial(loss, reduce=argument))
        assert " at 0x" not in name and name.startswith(f"{__name__}.")
    assert _loss_name(functools.partial(loss, reduce=torch.mean)) != _loss_name(
        functools.partial(loss, reduce=torch.sum)
    )
    assert "reduce=" in _loss_name(functools.partial(loss, reduce=Reducer()))


def test_float64_data_trains_a_float32_model():
    x, y = toy_sequences()
    report = train_forecaster(build("unet", 3, 3, 1), x.double(), y.double(), max_steps=2)
    assert report.steps == 2


# ------------------------------------------------------------- schedule, epochs, budget, resume


class Offset(nn.Module):
    """The last frame repeated plus one float64 offset; ``seen`` records each training batch's
    sample labels (every input pixel holds its sample's index)."""

    def __init__(self, frames=3):
        super().__init__()
        self.frames = frames
        self.offset = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(sorted(int(v) for v in x[:, 0, 0, 0, 0]))
        return x[:, -1:].repeat(1, self.frames, 1, 1, 1) + self.offset


def labelled(count=4):
    x = torch.arange(count, dtype=torch.float64).reshape(-1, 1, 1, 1, 1).repeat(1, 3, 1, 4, 4)
    return x, torch.zeros_like(x)


def offset_steps(model, **options):
    """The offset's change at every step of a run with the loss ``mean(prediction)``: its
    gradient is 1 throughout, so Adam's step is exactly ``lr / (1 + eps)``."""
    offsets = []
    train_forecaster(
        model,
        *labelled(),
        batch_size=2,
        lr=0.1,
        loss=lambda prediction, target: prediction.mean(),
        on_step=lambda step, loss: offsets.append(float(model.offset.detach())),
        **options,
    )
    return -torch.tensor([0.0, *offsets], dtype=torch.float64).diff() * (1 + 1e-8)


def fake_clock(monkeypatch, tick):
    """Replace the wall clock by one that moves ``tick`` seconds per training forward."""
    from physml.training import forecasting

    clock = [0.0]

    class Timed(Offset):
        def forward(self, x):
            clock[0] += tick if self.training else 0.0
            return super().forward(x)

    monkeypatch.setitem(forecasting.CLOCKS, "wall", lambda: clock[0])
    return Timed


@pytest.mark.parametrize("rule", ["steps", "budget"])
def test_cosine_schedule_takes_the_learning_rate_of_each_step_from_its_progress(monkeypatch, rule):
    """Four steps of lr 0.1: ``0.05 (1 + cos(π k / 4))`` at step k = 0..3, whether the steps or a
    budget of 2 s at 0.5 s per step set the progress; ``schedule="none"`` keeps 0.1."""
    expected = 0.05 * (1 + torch.cos(math.pi * torch.arange(4, dtype=torch.float64) / 4))
    model = fake_clock(monkeypatch, 0.5)()
    stop = {"max_steps": 4} if rule == "steps" else {"budget_s": 2.0}
    torch.testing.assert_close(offset_steps(model, **stop), expected, rtol=1e-12, atol=0)
    steady = offset_steps(fake_clock(monkeypatch, 0.5)(), schedule="none", **stop)
    torch.testing.assert_close(steady, torch.full((4,), 0.1, dtype=torch.float64))


def test_every_epoch_draws_each_sample_once():
    model = Offset()
    train_forecaster(model, *labelled(4), max_steps=6, batch_size=2, seed=1)
    epochs = [sorted(model.seen[i] + model.seen[i + 1]) for i in range(0, 6, 2)]
    assert epochs == [[0, 1, 2, 3]] * 3
    assert len(set(map(tuple, model.seen))) > 1  # reshuffled, not one fixed batch
    model = Offset()
    train_forecaster(model, *labelled(5), max_steps=4, batch_size=2, seed=1)
    for epoch in (model.seen[:2], model.seen[2:]):  # the fifth sample left over each epoch
        assert len(set(epoch[0] + epoch[1])) == 4


def test_a_resumed_budget_counts_the_time_spent_before_the_kill(monkeypatch, tmp_path):
    """1 s per step and a 5 s budget: killed in step 3's on_step, the run resumes from step 2's
    checkpoint (2 s used) for 3 more steps."""
    timed = fake_clock(monkeypatch, 1.0)
    path = tmp_path / "run"
    options = dict(budget_s=5.0, batch_size=2, checkpoint=path, checkpoint_every=1)
    with pytest.raises(Killed):
        train_forecaster(timed(), *labelled(), on_step=kill_at(3), **options)
    assert torch.load(path / "checkpoint.pt", weights_only=True)["train_s"] == 2.0
    report = train_forecaster(timed(), *labelled(), **options)
    assert report.steps == 5 and len(report.losses) == 5
    assert report.seconds == pytest.approx(5.0)


def test_checkpoints_are_written_every_checkpoint_every_steps(tmp_path):
    path = tmp_path / "run"
    options = dict(max_steps=5, batch_size=2, checkpoint=path, checkpoint_every=2)
    with pytest.raises(Killed):
        train_forecaster(Offset(), *labelled(), on_step=kill_at(3), **options)
    assert torch.load(path / "checkpoint.pt", weights_only=True)["step"] == 2
    taken = []
    report = train_forecaster(
        Offset(), *labelled(), on_step=lambda s, v: taken.append(s), **options
    )
    assert taken == [3, 4, 5] and report.steps == 5


class Dropped(nn.Module):
    """A UNet fed its input through dropout: each step draws from torch's global generator."""

    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.unet = build("unet", 3, 3, 1)

    def forward(self, x):
        return self.unet(self.dropout(x))


def test_a_resumed_run_draws_the_dropout_masks_an_uninterrupted_one_does(tmp_path):
    torch.manual_seed(0)
    template = Dropped()
    straight = copy.deepcopy(template)
    expected = train(straight, val=None)
    with pytest.raises(Killed):
        train(copy.deepcopy(template), checkpoint=tmp_path / "run", on_step=kill_at(3), val=None)
    report = train(copy.deepcopy(template), checkpoint=tmp_path / "run", val=None)
    assert report.losses == expected.losses


def test_validation_is_scored_every_val_every_steps_and_at_the_end():
    """Validation MSE of 3 sequences in batches of 2: the mean over every element, not over
    batch means."""
    x, y = labelled(4)
    val_x = torch.rand(3, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    val_y = torch.rand(3, 3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    model = Offset()
    report = train_forecaster(
        model, x, y, max_steps=5, batch_size=2, val=(val_x, val_y), val_every=2
    )
    assert [step for step, _ in report.val_losses] == [2, 4, 5]
    offset = float(model.offset.detach())
    expected = (val_x[:, -1:].repeat(1, 3, 1, 1, 1) + offset - val_y).square().mean()
    assert report.val_losses[-1][1] == pytest.approx(float(expected), rel=1e-12)


def test_training_refuses_a_bad_learning_rate_or_val_every_and_a_loss_that_blows_up():
    x, y = labelled()
    for lr in (0, -0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got"):
            train_forecaster(Offset(), x, y, max_steps=1, lr=lr)
    for every in (0, -2):
        with pytest.raises(ValueError, match=r"^val_every must be an integer >= 1"):
            train_forecaster(Offset(), x, y, max_steps=1, val_every=every)
    with warnings.catch_warnings():  # and says so without a warning about the loss's gradient
        warnings.simplefilter("error")
        with pytest.raises(FloatingPointError, match="loss became inf at step 1, before any upd"):
            train_forecaster(Offset(), x, y, max_steps=1, loss=lambda p, t: p.sum() / 0.0)


# ---------------------------------------------------------------------------------- evaluation


def test_scores_match_hand_computed_values():
    x, y = toy_sequences(count=5)
    scores = evaluate_forecaster(Persistence(3), x, y, batch_size=2)
    forecast = x[:, -1:].expand_as(y).double()
    squared = (forecast - y).square().sum((2, 3, 4)).mean(0)
    absolute = (forecast - y).abs().sum((2, 3, 4)).mean(0)
    torch.testing.assert_close(scores.mse_per_lead, squared)
    torch.testing.assert_close(scores.mae_per_lead, absolute)
    assert scores.mse == pytest.approx(float(squared.mean()))
    assert scores.mae == pytest.approx(float(absolute.mean()))
    assert scores.mse_per_lead[0] < scores.mse_per_lead[-1]  # the square drifts away
    assert (scores.ssim_per_lead < 1).all()
    direct = score_forecast(forecast.float(), y, batch_size=3)  # the same forecast, given
    for name in ("mse_per_lead", "mae_per_lead", "ssim_per_lead"):
        torch.testing.assert_close(getattr(direct, name), getattr(scores, name))


def test_a_perfect_forecast_scores_zero_error_and_unit_ssim():
    still = torch.rand(3, 2, 1, H, W).expand(3, 2, 1, H, W).clone()
    still[:, 0] = still[:, 1]
    scores = evaluate_forecaster(Persistence(2), still, still, batch_size=2)
    assert scores.mse == 0 and scores.mae == 0
    assert scores.ssim == pytest.approx(1.0)


def test_scores_per_lead_of_constant_frames_match_the_closed_forms():
    """Constant 6×9 frames (smaller than the 11×11 window): a level ``a`` forecast as ``a + s``
    has frame MSE ``s² H W``, MAE ``|s| H W`` per channel and SSIM
    ``(2a(a + s) + C₁) / (a² + (a + s)² + C₁)`` (no variance): per lead, over samples and channels.
    """
    gen = torch.Generator().manual_seed(5)
    levels = 0.2 + 0.5 * torch.rand(3, 4, 2, 1, 1, generator=gen, dtype=torch.float64)
    shifts = 0.3 * torch.rand(3, 4, 2, 1, 1, generator=gen, dtype=torch.float64) - 0.15
    shifts[:, 0] = 0.0  # a perfect first lead
    targets = levels.expand(3, 4, 2, 6, 9)
    predictions = (levels + shifts).expand(3, 4, 2, 6, 9)
    c1 = 0.01**2
    ssim = (2 * levels * (levels + shifts) + c1) / (levels**2 + (levels + shifts) ** 2 + c1)
    scores = score_forecast(predictions, targets, batch_size=2)
    torch.testing.assert_close(scores.mse_per_lead, (shifts**2 * 54).sum((2, 3, 4)).mean(0))
    torch.testing.assert_close(scores.mae_per_lead, (shifts.abs() * 54).sum((2, 3, 4)).mean(0))
    torch.testing.assert_close(scores.ssim_per_lead, ssim.mean((2, 3, 4)).mean(0))
    assert scores.ssim_per_lead[0] == pytest.approx(1.0, abs=1e-12)
    assert scores.ssim == pytest.approx(float(ssim.mean()), rel=1e-12)


@pytest.mark.parametrize("mode", [True, False])
def test_evaluation_leaves_the_model_in_the_mode_it_found(mode):
    x, y = toy_sequences()
    model = build("unet", 3, 3, 1).train(mode)
    evaluate_forecaster(model, x, y)
    assert model.training is mode


def test_a_float32_model_is_scored_on_float64_frames_against_the_targets_as_given():
    """The inputs go to the model in its dtype; the targets are not rounded to it: a float32
    copy of float64 frames scores the squared rounding error, not 0."""
    frames = 0.1 + torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(6)).double()
    model = Offset(frames=3).float()
    scores = evaluate_forecaster(model, frames, frames[:, -1:].repeat(1, 3, 1, 1, 1))
    rounding = (frames[:, -1:].float().double() - frames[:, -1:]).square().sum((2, 3, 4)).mean()
    assert rounding > 0
    torch.testing.assert_close(scores.mse_per_lead, rounding.repeat(3), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", MODELS)
def test_models_reject_bad_layouts(name):
    model = build(name, 3, 2, 1)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        model(torch.rand(2, 3, H, W))
    with pytest.raises(TypeError, match="tensor"):
        model([[0.0]])
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(2, 3, 1, H, W, dtype=torch.int64))
    if name != "persistence":
        with pytest.raises(ValueError, match="1 channel"):
            model(torch.rand(2, 3, 2, H, W))
        with pytest.raises(ValueError, match="divisible"):
            model(torch.rand(2, 3, 1, H + 1, W))


def test_unet_rejects_the_wrong_number_of_frames():
    with pytest.raises(ValueError, match="3 frame"):
        build("unet", 3, 2, 1)(torch.rand(2, 4, 1, H, W))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: UNet(0, 1), "in_frames"),
        (lambda: UNet(1, 1, output="softmax"), "output"),
        (lambda: ConvLSTM(kernel=2), "kernel"),
        (lambda: ConvLSTM(hidden=0), "hidden"),
        (lambda: Persistence(0), "target_frames"),
    ],
)
def test_constructors_reject_bad_sizes(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_training_loop_rejects_bad_requests():
    x, y = toy_sequences()
    model = build("unet", 3, 3, 1)
    with pytest.raises(ValueError, match="max_steps or budget_s"):
        train_forecaster(model, x, y)
    with pytest.raises(ValueError, match="targets must match inputs"):
        train_forecaster(model, x, y[:2], max_steps=1)
    with pytest.raises(ValueError, match="model must return the targets' shape"):
        train_forecaster(model, x, torch.cat([y, y], 2), max_steps=1)
    with pytest.raises(ValueError, match="model must return the targets' shape"):
        train_forecaster(model, x, y[:, :2], max_steps=1)
    with pytest.raises(ValueError, match="NaN"):
        train_forecaster(model, x.clone().fill_(float("nan")), y, max_steps=1)
    with pytest.raises(ValueError, match="val must hold"):
        train_forecaster(model, x, y, max_steps=1, val=(x[:, :2], y))
    wanted = "budget_s must be a finite number of seconds > 0 or None"
    with pytest.raises(TypeError, match=rf"^{wanted}, got True$"):
        train_forecaster(model, x, y, budget_s=True)
    with pytest.raises(TypeError, match=rf"^{wanted}, got '5'$"):
        train_forecaster(model, x, y, budget_s="5")
    for budget in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"^budget_s must be a finite number of seconds > 0"):
            train_forecaster(model, x, y, budget_s=budget)
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got 0"):
        train_forecaster(model, x, y, max_steps=1, lr=0)
    with pytest.raises(ValueError, match="batch_size"):
        train_forecaster(model, x, y, max_steps=1, batch_size=0)
    with pytest.raises(ValueError, match="schedule"):
        train_forecaster(model, x, y, max_steps=1, schedule="step")
    with pytest.raises(ValueError, match="clock"):
        train_forecaster(model, x, y, max_steps=1, clock="gpu")
    with pytest.raises(ValueError, match="loss must be one of"):
        train_forecaster(model, x, y, max_steps=1, loss="huber")
    with pytest.raises(TypeError, match="loss must be a name"):
        train_forecaster(model, x, y, max_steps=1, loss=2.0)
    with pytest.raises(ValueError, match="loss must return a scalar tensor"):
        train_forecaster(model, x, y, max_steps=1, loss=lambda p, t: p - t)
    with pytest.raises(TypeError, match="model"):
        train_forecaster(nn.Linear(2, 2).forward, x, y, max_steps=1)
    with pytest.raises(ValueError, match="model must return"):
        evaluate_forecaster(Persistence(2), x, y)
    with pytest.raises(ValueError, match="predictions must have the targets' shape"):
        score_forecast(y[:, :2], y)
    with pytest.raises(ValueError, match=r"targets must have shape \(B, T, C, H, W\)"):
        score_forecast(y, y[0])
    with pytest.raises(TypeError, match="predictions must be a floating-point tensor"):
        score_forecast(y.round().long(), y)
    with pytest.raises(ValueError, match="predictions is empty"):
        score_forecast(y[:0], y[:0])
    with pytest.raises(ValueError, match="batch_size"):
        score_forecast(y, y, batch_size=0)


@pytest.mark.parametrize(
    "device, error",
    [("gpu", ValueError), (None, TypeError), ("meta", ValueError), ("cpu:1", ValueError)],
)
def test_train_and_evaluate_forecaster_refuse_a_device_naming_the_argument(device, error):
    """A device torch cannot parse, or one no forecaster runs on, is refused before any
    training or forecast, in the words of the ``device`` argument (a ``TypeError`` for what is
    no string)."""
    x, y = toy_sequences()
    message = rf"^device must be 'cpu', 'cuda' or 'cuda:N', got {re.escape(repr(device))}$"
    frozen = Persistence(3)  # no trainable parameters: refused all the same
    for model in (build("unet", 3, 3, 1), frozen):
        with pytest.raises(error, match=message):
            train_forecaster(model, x, y, max_steps=1, device=device)
    with pytest.raises(error, match=message):
        evaluate_forecaster(frozen, x, y, device=device)


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("budget_s", "5", "a finite number of seconds > 0 or None"),
        ("budget_s", True, "a finite number of seconds > 0 or None"),
        ("budget_s", np.True_, "a finite number of seconds > 0 or None"),
        ("lr", "0.1", "a finite number > 0"),
        ("lr", True, "a finite number > 0"),
        ("lr", None, "a finite number > 0"),
        ("max_steps", 1.0, "an integer >= 1"),
        ("max_steps", True, "an integer >= 1"),
        ("batch_size", "8", "an integer >= 1"),
        ("seed", False, "an integer >= 0"),
        ("checkpoint_every", 5.0, "an integer >= 1"),
        ("val_every", True, "an integer >= 1"),
        ("schedule", 1, r"one of \('cosine', 'none'\)"),
        ("schedule", None, r"one of \('cosine', 'none'\)"),
        ("clock", ["wall"], r"one of \('wall', 'cpu'\) \(what budget_s counts\)"),
        ("device", 0, "'cpu', 'cuda' or 'cuda:N'"),
    ],
)
def test_train_forecaster_refuses_a_setting_of_the_wrong_type_by_name(name, value, expected):
    """Text or a boolean where a number is wanted, a float where an integer is, or no string
    where a name is, is a TypeError naming the argument, what it must be and what came."""
    x, y = toy_sequences()
    settings = {"max_steps": 1, name: value}
    message = rf"^{name} must be {expected}, got {re.escape(repr(value))}$"
    with pytest.raises(TypeError, match=message):
        train_forecaster(build("unet", 3, 3, 1), x, y, **settings)


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("budget_s", "5", TypeError),
        ("budget_s", True, TypeError),
        ("budget_s", 0, ValueError),
        ("budget_s", math.inf, ValueError),
        ("lr", "0.1", TypeError),
        ("lr", None, TypeError),
        ("lr", 0.0, ValueError),
        ("clock", 1, TypeError),
        ("clock", "gpu", ValueError),
    ],
)
def test_train_forecaster_and_the_trainer_refuse_a_setting_in_the_same_words(name, value, error):
    """The same setting, refused by the Trainer's config or by train_forecaster (which builds
    one), gets one message."""
    from physml.training import TrainConfig

    x, y = toy_sequences()
    with pytest.raises(error) as by_config:
        TrainConfig(**{"steps": 1, name: value})
    with pytest.raises(error) as by_forecaster:
        train_forecaster(build("unet", 3, 3, 1), x, y, **{"max_steps": 1, name: value})
    said = str(by_config.value)
    assert str(by_forecaster.value) == said
    assert said.startswith(f"{name} must be ") and said.count(f", got {value!r}") == 1


@pytest.mark.parametrize("on_step", [5, "print"])
def test_train_forecaster_refuses_an_on_step_it_cannot_call_before_training(tmp_path, on_step):
    x, y = toy_sequences()
    run = tmp_path / "run"
    with pytest.raises(TypeError) as refused:
        train_forecaster(build("unet", 3, 3, 1), x, y, max_steps=2, checkpoint=run, on_step=on_step)
    assert str(refused.value) == (
        f"on_step must be a callable on_step(step, loss) or None, got {on_step!r}"
    )
    assert not run.exists()  # no step trained, no checkpoint written


def _periodic_capable(name: str, periodic: object) -> nn.Module:
    from physml.models import Earthformer

    if name == "earthformer":
        return Earthformer(
            (4, 1, 8, 8), (3, 2, 8, 8), base_units=8, num_heads=2, depth=(1, 1),
            global_vectors=2, cross_cuboid_hw=(2, 2), ffn_kernel=3, periodic=periodic,
        )  # fmt: skip
    if name == "unet":
        return UNet(3, 2, base=4, periodic=periodic)
    return ConvLSTM(hidden=4, target_frames=2, patch=2, periodic=periodic)


@pytest.mark.parametrize("name", ["earthformer", "unet", "convlstm"])
@pytest.mark.parametrize("periodic", [False, True])
def test_a_periodic_models_convolutions_commute_with_shifts_of_the_frame(name, periodic):
    model = _periodic_capable(name, periodic)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and any(m.padding)]
    assert convs and model.periodic is periodic
    for conv in convs:
        x = torch.randn(1, conv.in_channels, 8, 8)
        after = conv(x.roll((2, 3), (-2, -1)))
        before = conv(x).roll((2, 3), (-2, -1))
        assert torch.allclose(after, before, atol=1e-5) == periodic


@pytest.mark.parametrize("name", ["earthformer", "unet", "convlstm"])
def test_periodic_changes_the_padding_not_the_parameters(name):
    plain, periodic = _periodic_capable(name, False), _periodic_capable(name, True)
    periodic.load_state_dict(plain.state_dict())  # the same weights fit either
    x = torch.randn(1, 4 if name == "earthformer" else 3, 1, 8, 8)
    assert not torch.allclose(plain(x), periodic(x))
    with pytest.raises(TypeError, match="periodic must be True or False, got 'yes'"):
        _periodic_capable(name, "yes")


def test_pad_circularly_wraps_every_padding_form_and_leaves_unpadded_convolutions():
    from physml.models.common import pad_circularly

    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding="same"),
        nn.Conv2d(1, 1, 3, padding="valid"), nn.Conv2d(1, 1, 1),
    )  # fmt: skip
    assert pad_circularly(model, True) is True
    assert [c.padding_mode for c in model] == ["circular", "circular", "zeros", "zeros"]
    x = torch.randn(1, 1, 6, 6)
    same = model[1]  # a "same"-padded convolution now commutes with shifts of the frame
    assert torch.allclose(same(x.roll((1, 2), (-2, -1))), same(x).roll((1, 2), (-2, -1)), atol=1e-6)


# ------------------------------------------------------------- hand-computed cells and rollouts


def test_convlstm_cell_gates_match_the_lstm_equations_by_hand():
    cell = ConvLSTMCell(1, 1, kernel=1)
    b_i, b_f, b_o, b_g = 0.3, -0.7, 1.1, 0.5  # gates stacked in the order i, f, o, g
    with torch.no_grad():
        cell.gates.weight.zero_()
        cell.gates.bias.copy_(torch.tensor([b_i, b_f, b_o, b_g]))
    x, h0 = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    c0 = torch.tensor([[[[0.2, -1.5], [2.0, 0.0]]]])
    h, c = cell(x, (h0, c0))
    sig, tanh = torch.sigmoid, torch.tanh
    expected_c = sig(torch.tensor(b_f)) * c0 + sig(torch.tensor(b_i)) * tanh(torch.tensor(b_g))
    torch.testing.assert_close(c, expected_c)
    torch.testing.assert_close(h, sig(torch.tensor(b_o)) * tanh(expected_c))


def test_convlstm_with_silent_gates_starts_from_zero_states_and_emits_its_head_bias():
    model = ConvLSTM(1, hidden=3, layers=2, target_frames=2, patch=2, output="linear")
    with torch.no_grad():
        for cell in [*model.encoder, *model.forecaster]:
            cell.gates.weight.zero_()
            cell.gates.bias.zero_()
        model.head.bias.fill_(0.25)
    # zero gates: c ← c/2 and h = tanh(c)/2, so zero initial states stay zero and h never moves
    out = model(torch.randn(2, 3, 1, 4, 6))
    torch.testing.assert_close(out, torch.full((2, 2, 1, 4, 6), 0.25))


def _memoryless_forecaster(**kwargs) -> ConvLSTM:
    """A ConvLSTM whose forecaster ignores its states: each forecast is F(previous frame)."""
    torch.manual_seed(0)
    model = ConvLSTM(1, hidden=4, layers=1, patch=2, output="linear", **kwargs)
    cell = model.forecaster[0]
    with torch.no_grad():
        cell.gates.weight[:, -cell.hidden :].zero_()  # no hidden-to-gate path
        cell.gates.bias[cell.hidden : 2 * cell.hidden].fill_(-60.0)  # forget gate shut
    return model


def test_convlstm_rolls_out_from_the_last_context_frame_feeding_back_each_prediction():
    model = _memoryless_forecaster(target_frames=3)
    one_step = _memoryless_forecaster(target_frames=1)
    one_step.load_state_dict(model.state_dict())
    x = torch.rand(2, 4, 1, 4, 4)
    out = model(x)
    other_context = x.clone()
    other_context[:, :-1] = torch.rand(2, 3, 1, 4, 4)
    torch.testing.assert_close(model(other_context), out)  # only the last frame seeds the rollout
    frame = x[:, -1:]
    for t in range(3):
        frame = one_step(frame)
        torch.testing.assert_close(out[:, t : t + 1], frame)


def test_convlstm_encoder_reads_the_first_context_frame():
    model = build("convlstm", 3, 2, 1)
    x = torch.rand(1, 3, 1, H, W)
    changed = x.clone()
    changed[:, 0] = torch.rand(1, 1, H, W)
    assert not torch.allclose(model(x), model(changed))


def test_unet_head_channels_are_frame_major_then_channel():
    model = UNet(2, 3, channels=2, base=4, depth=1, output="linear")
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(6.0))
    out = model(torch.rand(1, 2, 2, 4, 4))
    for t in range(3):
        for c in range(2):
            assert torch.equal(out[0, t, c], torch.full((4, 4), float(2 * t + c)))


def test_unet_merges_the_upsampled_path_before_the_skip():
    model = UNet(2, 1, base=4, depth=1, output="linear")
    with torch.no_grad():
        model.up[0].weight.zero_()
        model.up[0].bias.zero_()
    model(torch.rand(1, 2, 1, 4, 4)).sum().backward()
    grad = model.merge[0][0].weight.grad  # inputs [upsampled (now zero), skip]
    assert torch.equal(grad[:, :4], torch.zeros_like(grad[:, :4]))
    assert grad[:, 4:].abs().sum() > 0


def test_frame_multiples_are_two_to_the_depth_and_the_patch():
    assert [UNet.frame_multiple(d) for d in range(4)] == [1, 2, 4, 8]
    assert [ConvLSTM.frame_multiple(p) for p in (1, 3, 4)] == [1, 3, 4]
    with pytest.raises(ValueError, match="divisible by 2\\^depth=4"):
        UNet(1, 1, base=4, depth=2)(torch.rand(1, 1, 1, 18, 16))
    with pytest.raises(ValueError, match="divisible by patch=3"):
        ConvLSTM(hidden=2, patch=3, target_frames=1)(torch.rand(1, 1, 1, 9, 10))


def test_a_depth_zero_unet_is_a_single_block_on_any_frame_size():
    model = UNet(2, 3, base=4, depth=0)
    assert len(model.down) == 0 and len(model.up) == 0
    assert model(torch.rand(2, 2, 1, 5, 7)).shape == (2, 3, 1, 5, 7)


@pytest.mark.parametrize("name", MODELS)
def test_models_refuse_frames_with_nan_or_inf(name):
    model = build(name, 3, 2, 1)
    for bad in (float("nan"), float("inf")):
        x = torch.rand(1, 3, 1, H, W)
        x[0, 1, 0, 2, 3] = bad
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            model(x)


def test_sizes_refuse_booleans_and_count_parameters_refuses_non_modules():
    for factory, name in [
        (lambda: UNet(True, 1), "in_frames"),
        (lambda: ConvLSTM(hidden=True), "hidden"),
        (lambda: Persistence(True), "target_frames"),
    ]:
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got True"):
            factory()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
        count_parameters([nn.Linear(2, 2)])


def test_sizes_given_as_numpy_integers_build_the_models_of_those_numbers():
    """A size read from a numpy array builds the same model as the Python int (same parameter
    shapes); a numpy float is still refused by name."""
    import numpy as np

    cell = ConvLSTMCell(np.int64(1), np.int64(2), np.int64(3))
    assert [p.shape for p in cell.parameters()] == [
        p.shape for p in ConvLSTMCell(1, 2, 3).parameters()
    ]
    assert cell.hidden == 2 and type(cell.hidden) is int
    unet = UNet(np.int32(2), np.int32(1), np.int64(1), depth=np.int64(1), base=np.int64(4))
    assert [p.shape for p in unet.parameters()] == [
        p.shape for p in UNet(2, 1, 1, depth=1, base=4).parameters()
    ]
    with pytest.raises(ValueError, match=r"^hidden must be an integer >= 1, got np\.float64"):
        ConvLSTMCell(1, np.float64(2.0), 3)


def test_forecaster_counts_take_numpy_integers_as_the_ints_and_refuse_bools_and_zero(tmp_path):
    """Counts given as numpy integers were refused ("batch_size must be an integer >= 1, got
    np.int64(4)"); they now train, checkpoint and score as the ints do."""
    model, path = Offset(), tmp_path / "run"
    numpy_counts = dict(max_steps=np.int64(6), batch_size=np.int64(2), checkpoint_every=np.int64(3))
    report = train_forecaster(model, *labelled(4), seed=1, checkpoint=path, **numpy_counts)
    epochs = [sorted(model.seen[i] + model.seen[i + 1]) for i in range(0, 6, 2)]
    assert report.steps == 6 and epochs == [[0, 1, 2, 3]] * 3
    saved = torch.load(path / "checkpoint.pt", weights_only=True)["config"]
    assert (saved["steps"], saved["batch"]) == (6, 2)
    x, y = labelled(5)
    frame_mse = 16 * 0.5**2  # every pixel of a 4 × 4 frame off by 0.5
    scores = evaluate_forecaster(Persistence(3), x, x + 0.5, batch_size=np.int64(2))
    assert scores.mse == pytest.approx(frame_mse)
    assert score_forecast(x, x + 0.5, batch_size=np.int32(2)).mse == pytest.approx(frame_mse)
    for size, error in ((True, TypeError), (0, ValueError)):
        with pytest.raises(error, match=rf"^batch_size must be an integer >= 1, got {size}$"):
            evaluate_forecaster(Persistence(3), x, y, batch_size=size)
        with pytest.raises(error, match=rf"^max_steps must be an integer >= 1, got {size}$"):
            train_forecaster(Offset(), x, y, max_steps=size)


def test_training_takes_a_numpy_seed_as_the_same_int():
    x, y = toy_sequences()
    losses = []
    for seed in (3, np.int64(3)):
        torch.manual_seed(0)
        model = build("unet", 3, 3, 1)
        losses.append(train_forecaster(model, x, y, max_steps=2, batch_size=4, seed=seed).losses)
    assert losses[0] == losses[1]


# ------------------------------------------------------- train_forecaster's own words, loading


def test_an_empty_checkpoint_path_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for model in (Offset(), Persistence(3)):
        with pytest.raises(ValueError, match=r"^checkpoint must be the path of a run folder, or"):
            train_forecaster(model, *labelled(), max_steps=1, checkpoint="")
        with pytest.raises(TypeError, match=r"^checkpoint must be the path of .*, got 5$"):
            train_forecaster(model, *labelled(), max_steps=1, checkpoint=5)
    assert list(tmp_path.iterdir()) == []


def test_a_loss_or_a_model_without_gradient_is_told_in_train_forecasters_terms():
    x, y = labelled()
    detached = lambda p, t: (p - t).square().mean().detach()  # noqa: E731
    with pytest.raises(ValueError) as refused:
        train_forecaster(Offset(), x, y, max_steps=1, loss=detached)
    assert str(refused.value) == (
        "loss(prediction, target) must depend on the prediction: its value carries no gradient "
        "(detached, computed under torch.no_grad(), or from the target alone?)"
    )

    class Detached(Offset):
        def forward(self, x):
            return super().forward(x).detach()

    with pytest.raises(ValueError, match=r"^model\(inputs\) must depend on the model's trainab"):
        train_forecaster(Detached(), x, y, max_steps=1)


def test_a_diverged_run_without_checkpoint_is_not_told_of_a_checkpoint_path(tmp_path):
    """Adam moves the offset by about lr = 1e308 a step: -inf after two, a loss of -inf at the
    third."""
    settings = dict(max_steps=3, batch_size=2, lr=1e308, loss=lambda p, t: p.mean())
    with pytest.raises(FloatingPointError) as refused:
        train_forecaster(Offset(), *labelled(), **settings)
    assert str(refused.value).endswith(": train again with a lower learning rate (lr)")
    with pytest.raises(FloatingPointError) as refused:
        train_forecaster(Offset(), *labelled(), **settings, checkpoint=tmp_path / "run")
    assert str(refused.value).endswith(
        ": train again with another checkpoint path and a lower learning rate (lr); a resumed "
        "run keeps its settings"
    )


def test_a_refused_resume_names_train_forecasters_arguments(tmp_path):
    x, y = toy_sequences(count=8)
    path, cosine = tmp_path / "run", tmp_path / "cosine"

    def run(folder, **settings):
        settings = {"max_steps": 2, "batch_size": 3, "val": (x[:2], y[:2]), **settings}
        return train_forecaster(build("unet", 3, 3, 1), x, y, checkpoint=folder, **settings)

    run(path, schedule="none", val_every=1)
    with pytest.raises(ValueError) as refused:
        run(path, max_steps=3, batch_size=2, val_every=2)
    assert str(refused.value) == (
        f"checkpoint: {str(path)!r} was trained with other settings (batch_size 3 → 2; "
        "schedule 'none' → 'cosine'); use another checkpoint path or the same settings"
    )
    with pytest.raises(ValueError) as refused:
        run(path, max_steps=1, schedule="none", val_every=1)
    assert str(refused.value).endswith("use another checkpoint path or a larger max_steps")
    run(cosine)
    with pytest.raises(ValueError) as refused:
        run(cosine, max_steps=3)
    assert 'resume for the 2 steps the run began with (a run on schedule="none" may be ext' in (
        str(refused.value)
    )


def test_a_run_folder_named_like_the_trainers_words_is_quoted_as_it_is(tmp_path):
    """The refusals say the settings in train_forecaster's words without rewording the quoted
    run folder: one named "sweep (no steps) or more steps" or "the constant schedule"."""
    x, y = toy_sequences(count=6)

    def run(folder, **settings):
        settings = {"max_steps": 4, "schedule": "none", **settings}
        return train_forecaster(build("unet", 3, 3, 1), x, y, checkpoint=folder, **settings)

    steps = tmp_path / "sweep (no steps) or more steps"
    schedule = tmp_path / "the constant schedule"
    run(steps)
    with pytest.raises(ValueError) as refused:
        run(steps, max_steps=2)
    assert str(refused.value) == (
        f"checkpoint: {str(steps)!r} is at step 4, beyond the 2 steps asked for; use another "
        "checkpoint path or a larger max_steps"
    )
    run(schedule)
    with pytest.raises(ValueError) as refused:
        run(schedule, batch_size=2)
    assert str(refused.value) == (
        f"checkpoint: {str(schedule)!r} was trained with other settings (batch_size 6 → 2); "
        "use another checkpoint path or the same settings"
    )


def test_a_finished_run_is_read_back_without_training(tmp_path):
    from physml.training import CheckpointError
    from physml.training.forecasting import load_forecaster

    path = tmp_path / "run"
    trained = build("unet", 3, 3, 1)
    report = train(trained, path, steps=3, model_config={"base": 4})
    model = build("unet", 3, 3, 1)
    with torch.no_grad():
        model.head.weight.zero_()  # the weights read back replace it
    read = load_forecaster(model, path, model_config={"base": 4})
    assert read == report
    for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError) as refused:
        load_forecaster(build("unet", 3, 3, 1), path, model_config={"base": 8})
    assert str(refused.value) == (
        f"checkpoint: {str(path)!r} holds another model (model_config.base 4 → 8); read the "
        "folder of the run trained with this model_config or the same model settings"
    )
    with pytest.raises(FileNotFoundError, match=r"^checkpoint: no checkpoint.pt in "):
        load_forecaster(model, tmp_path / "none")


def test_an_old_single_file_checkpoint_beside_a_missing_run_folder_is_refused(tmp_path):
    from physml.training import CheckpointError
    from physml.training.forecasting import check_no_old_checkpoint

    check_no_old_checkpoint(tmp_path / "unet", "--work")  # nothing there: a fresh run
    (tmp_path / "unet.pt").write_bytes(b"old")
    with pytest.raises(CheckpointError) as refused:
        check_no_old_checkpoint(tmp_path / "unet", "--work")
    assert str(refused.value) == (
        f"--work: {str(tmp_path / 'unet.pt')!r} is an old single-file forecaster checkpoint, "
        f"which can no longer be resumed (train_forecaster keeps a run folder, "
        f"{str(tmp_path / 'unet')!r}): delete it or use another --work"
    )
    (tmp_path / "unet").mkdir()  # the run folder is there: the old file is not in the way
    check_no_old_checkpoint(tmp_path / "unet", "--work")


def test_the_old_checkpoint_check_takes_the_working_folder_and_refuses_bad_arguments(
    tmp_path, monkeypatch
):
    """``"."`` and ``".."`` are folders by their own names (``unet.pt`` beside the working
    folder ``unet`` is not in its way: the folder exists), ``"/"`` has nothing beside it; an
    empty path, a path that is no path and an empty option name are refused naming the
    argument."""
    from physml.training.forecasting import check_no_old_checkpoint

    (tmp_path / "unet" / "sub").mkdir(parents=True)
    (tmp_path / "unet.pt").write_bytes(b"old")
    (tmp_path / "unet" / "sub.pt").write_bytes(b"old")
    monkeypatch.chdir(tmp_path / "unet" / "sub")
    for folder in (".", "..", "/", tmp_path / "unet" / "sub" / ".."):
        check_no_old_checkpoint(folder, "--work")
    no_path = "folder must be the path of a run folder (a str or a Path), got 3"
    cases = [
        ("", "--work", ValueError, "folder must be the path of a run folder, got ''"),
        (3, "--work", TypeError, no_path),
        ("run", "", TypeError, "argument must name the script's option (a str), got ''"),
        ("run", None, TypeError, "argument must name the script's option (a str), got None"),
    ]
    for folder, argument, error, message in cases:
        with pytest.raises(error) as refused:
            check_no_old_checkpoint(folder, argument)
        assert str(refused.value) == message
