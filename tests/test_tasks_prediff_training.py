"""``prediff-nbody``'s training stages: what each hands to :func:`fit`, and what ``fit`` reports
(resumed cost, final loss), against hand-made cases."""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from physml.data.nbody import NBodyDigits
from physml.models.energy_judge import EnergyJudge
from physml.models.knowledge_regressor import KnowledgeRegressor
from physml.models.prediff import (
    ConvDenoiser,
    CuboidDenoiser,
    FrameAutoencoder,
    autoencoder_loss,
    diffusion_loss,
    update_ema,
)
from physml.tasks import prediff as task
from physml.tasks.prediff import training
from physml.training import CheckpointError, load_checkpoint
from physml.training.families import mse_loss

FIT_PARAMETERS = inspect.signature(training.fit)


def spy_on_fit(monkeypatch) -> list[dict]:
    """Every call of ``training.fit`` as its bound arguments (nothing is trained)."""
    calls = []

    def spy(*args, **options):
        bound = FIT_PARAMETERS.bind(*args, **options)
        bound.apply_defaults()
        calls.append(dict(bound.arguments))

    monkeypatch.setattr(training, "fit", spy)
    return calls


def test_a_resumed_run_scales_its_cpu_seconds_to_all_steps(tmp_path, monkeypatch):
    """A fake CPU clock advances 1.5 s per step: an interrupted 250-step run resumes from its
    step-200 checkpoint, times the last 50 steps (75 s) and reports 75 × 250 / 50 = 375 s."""
    now = [0.0]
    monkeypatch.setattr(time, "process_time", lambda: now[0])
    data = TensorDataset(torch.randn(16, 3, generator=torch.Generator().manual_seed(0)))

    def loss(model, batch):
        return model(batch[0]).square().mean()

    def tick(model, step, stop_at=None):
        now[0] += 1.5
        if step == stop_at:
            raise KeyboardInterrupt

    def run(after_step):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        return task.fit(model, loss, data, 250, 4, 1e-3, 0, tmp_path, True, after_step)

    with pytest.raises(KeyboardInterrupt):
        run(lambda model, step: tick(model, step, stop_at=230))
    assert not (tmp_path / task.COST_FILE).exists()
    killed_at = now[0]
    resumed = run(tick)
    assert resumed.train_s == 375.0 and resumed.steps == 250
    assert now[0] - killed_at == 75.0  # 50 steps: resumed from step 200, not run again from 0
    saved = json.loads((tmp_path / task.COST_FILE).read_text())
    assert saved == {"steps": 250, "train_s": 375.0}
    finished_at = now[0]
    assert run(tick).train_s == 375.0  # reloaded at its last step: the saved cost
    assert now[0] == finished_at


def test_final_loss_is_the_mean_of_the_last_20_step_losses(tmp_path):
    """Step ``k`` of 25 has loss ``k``: the last 20 are 6..25, whose mean is 15.5."""
    calls = [0]

    def loss(model, batch):
        calls[0] += 1
        return model.weight.sum() * 0.0 + float(calls[0])

    data = TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
    trained = task.fit(torch.nn.Linear(3, 1), loss, data, 25, 4, 1e-2, 0, tmp_path, True)
    assert calls[0] == 25 and trained.final_loss == 15.5 and trained.steps == 25


def test_a_refusal_to_resume_on_other_data_gives_the_callers_remedy(tmp_path):
    def loss(model, batch):
        return model(batch[0]).square().mean()

    def data(seed):
        return TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(seed)))

    task.fit(torch.nn.Linear(3, 1), loss, data(0), 2, 4, 1e-3, 0, tmp_path, True)
    with pytest.raises(CheckpointError, match="resume. Use another --work, or the data it was"):
        task.fit(
            torch.nn.Linear(3, 1), loss, data(1), 2, 4, 1e-3, 0, tmp_path, True,
            remedy="use another --work",
        )  # fmt: skip
    with pytest.raises(CheckpointError, match="resume. Use another --out, or the data it was"):
        task.fit(torch.nn.Linear(3, 1), loss, data(1), 2, 4, 1e-3, 0, tmp_path, True)


def test_fit_hands_its_settings_and_hooks_to_the_trainer(tmp_path, monkeypatch):
    made = []

    class SpyTrainer:
        def __init__(self, model, loss, config, **options):
            made.append(dict(model=model, loss=loss, config=config, **options))
            self.model, self.config, self.out = model, config, options["out"]

        def fit(self, data):
            return SimpleNamespace(resumed_from=0, losses=[1.0, 3.0])

    monkeypatch.setattr(training, "Trainer", SpyTrainer)
    monkeypatch.setattr(training, "TrainConfig", lambda **settings: SimpleNamespace(**settings))
    model, data = torch.nn.Linear(2, 1), TensorDataset(torch.zeros(4, 2))

    def after(model, step):
        return None

    trained = task.fit(
        model, mse_loss, data, 7, 2, 0.25, 11, tmp_path, True, after, {"a": 1}, "cuda:0"
    )
    (call,) = made
    config = call["config"]
    assert (config.steps, config.batch, config.lr, config.seed) == (7, 2, 0.25, 11)
    assert config.device == "cuda:0"
    assert call["model"] is model and call["loss"] is mse_loss and call["out"] == tmp_path
    assert call["after_step"] is after and call["model_config"] == {"a": 1} and call["quiet"]
    assert trained.final_loss == 2.0 and trained.model is model


def _frames(videos: int, length: int, size: int = 16) -> torch.Tensor:
    count = videos * length * size * size
    return torch.arange(count, dtype=torch.float32).reshape(videos, length, 1, size, size) / count


def _videos(frames: torch.Tensor, energy: torch.Tensor) -> NBodyDigits:
    """Videos of ``frames`` and ``energy`` only (what the training stages read)."""
    return NBodyDigits(frames, energy, *[None] * 6)


def test_the_autoencoder_is_a_seeded_one_channel_model_on_every_frame(monkeypatch, tmp_path):
    calls = spy_on_fit(monkeypatch)
    scale = replace(
        task.TOY, autoencoder_steps=9, autoencoder_batch=3, autoencoder_width=12, lr=0.02
    )
    train = SimpleNamespace(frames=_frames(2, 5))
    training.train_autoencoder(scale, train, tmp_path, seed=5, quiet=True, device="meta")
    (call,) = calls
    torch.manual_seed(5)
    expected = FrameAutoencoder(1, scale.latent_channels, scale.downsample, 12)
    model = call["model"]
    assert isinstance(model, FrameAutoencoder) and model.config == expected.config
    for mine, theirs in zip(model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    (frames,) = call["data"].tensors
    assert frames.shape == (10, 1, 1, 16, 16) and torch.equal(frames[7, 0], train.frames[1, 2])
    assert call["loss"] is autoencoder_loss and call["model_config"] == expected.config
    assert (call["steps"], call["batch"], call["lr"], call["seed"]) == (9, 3, 0.02, 5)
    assert call["out"] == tmp_path and call["device"] == "meta" and call["after_step"] is None


@pytest.mark.parametrize("kind, denoiser", [("conv", ConvDenoiser), ("cuboid", CuboidDenoiser)])
def test_build_prediff_builds_the_kind_asked_for_its_frame_counts_under_its_seed(kind, denoiser):
    scale = replace(task.TOY, t_in=3, t_out=5)  # 16-pixel frames halved: 2 × 8 × 8 latents
    autoencoder = FrameAutoencoder(1, 2, 2, 8)
    prediff = task.build_prediff(scale, kind, autoencoder, seed=4)
    built = prediff.denoiser
    assert type(built) is denoiser and built.latent_shape == (2, 8, 8)
    assert (built.context_frames, built.target_frames) == (3, 5)
    torch.manual_seed(4)
    expected = denoiser(3, 5, (2, 8, 8), **getattr(scale, kind))
    for mine, theirs in zip(built.parameters(), expected.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_forecast_pairs_split_every_video_after_t_in_frames():
    train = _videos(_frames(2, 8), torch.zeros(2, 8, dtype=torch.float64))
    context, target = training.forecast_pairs(train, 3).tensors
    assert torch.equal(context, train.frames[:, :3]) and torch.equal(target, train.frames[:, 3:])


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_the_denoiser_trains_with_its_batch_loss_ema_and_config(monkeypatch, tmp_path, kind):
    calls = spy_on_fit(monkeypatch)
    scale = replace(task.TOY, denoiser_batch=6, batch=2, denoiser_steps={"conv": 3, "cuboid": 5})
    prediff = task.build_prediff(scale, kind, FrameAutoencoder(1, 2, 2, 8), seed=0)
    latents = object()
    training.train_denoiser(scale, prediff, latents, kind, tmp_path, 8, True, device="meta")
    (call,) = calls
    assert call["model"] is prediff and call["data"] is latents
    assert call["loss"] is diffusion_loss and call["after_step"] is update_ema
    assert (call["steps"], call["batch"], call["seed"]) == ({"conv": 3, "cuboid": 5}[kind], 6, 8)
    assert call["model_config"] == prediff.config and call["device"] == "meta"


def test_the_regressor_reads_target_latents_and_standardised_target_energies(monkeypatch, tmp_path):
    """Energies ``E[v, t] = 10 v + t`` over 3 + 5 frames: the target mean of video ``v`` is
    ``10 v + 5``; over 4 videos their mean is 20 and their standard deviation 10 √(5/3)."""
    calls = spy_on_fit(monkeypatch)
    scale = replace(
        task.TOY, t_in=3, t_out=5, regressor_steps=7, regressor_hidden=6, batch=2, denoiser_batch=4
    )
    energy = 10 * torch.arange(4.0, dtype=torch.float64)[:, None] + torch.arange(8.0)
    train = _videos(_frames(4, 8), energy)
    prediff, latents = training.calibrated(
        task.build_prediff(scale, "conv", FrameAutoencoder(1, 2, 2, 8), seed=0), train, 3
    )
    training.train_regressor(scale, prediff, latents, train, tmp_path, 2, True, device="meta")
    (call,) = calls
    model = call["model"]
    assert float(model.offset) == pytest.approx(20.0, rel=1e-6)
    assert float(model.scale) == pytest.approx(10 * math.sqrt(5 / 3), rel=1e-6)
    assert model.latent_shape == (5, 2, 8, 8)
    torch.manual_seed(2)
    expected = KnowledgeRegressor((5, 2, 8, 8), hidden=6)
    for mine, theirs in zip(model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert call["loss"].schedule is prediff.schedule  # the sampler's own, not a copy of its ᾱ
    target_latents, energies = call["data"].tensors
    assert target_latents is latents.target and energies.dtype == torch.float32
    assert torch.equal(energies, torch.tensor([5.0, 15.0, 25.0, 35.0]))
    assert (call["steps"], call["batch"], call["seed"], call["device"]) == (7, 2, 2, "meta")
    assert call["model_config"] == dict(latent_shape=[5, 2, 8, 8], hidden=6)


@pytest.mark.parametrize("which", ["judge", "guide"])
def test_the_energy_models_standardise_the_energies_of_target_length_windows(
    monkeypatch, tmp_path, which
):
    """Videos of 6 frames with energies 1..6 and 7..12, ``T_out = 4``: one window each, frames
    0..3, energies {1, 2, 3, 4, 7, 8, 9, 10}: mean 5.5, standard deviation √(82 / 7)."""
    calls = spy_on_fit(monkeypatch)
    scale = replace(
        task.TOY, t_in=2, t_out=4, batch=2, lr=0.03, judge_hidden=5, judge_depth=3, judge_steps=11
    )
    energy = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(2, 6)
    train = SimpleNamespace(frames=_frames(2, 6), energy=energy)
    guide = training.GuideSize(window=5, hidden=6, depth=1, steps=4)
    if which == "judge":
        training.train_judge(scale, train, tmp_path, seed=1, quiet=True, device="meta")
        own, window, hidden, depth = 1 + training.JUDGE_SEED_OFFSET, 3, 5, 3
    else:
        training.train_guide(scale, guide, train, tmp_path, seed=1, quiet=True, device="meta")
        own, window, hidden, depth = 1 + training.GUIDE_SEED_OFFSET, 5, 6, 1
    (call,) = calls
    model = call["model"]
    assert float(model.offset) == pytest.approx(5.5) and float(model.scale) == pytest.approx(
        math.sqrt(82 / 7)
    )
    windows, energies = call["data"].tensors
    assert windows.shape == (2, 4, 1, 16, 16) and energies.shape == (2, 4)
    expected = EnergyJudge(1, window=window, hidden=hidden, depth=depth, seed=own)
    for mine, theirs in zip(model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert call["model_config"] == dict(hidden=hidden, depth=depth, seed=own) | (
        {"window": window} if which == "guide" else {}
    )
    steps = 11 if which == "judge" else 4
    assert (call["steps"], call["batch"], call["lr"], call["seed"]) == (steps, 2, 0.03, own)
    assert call["loss"] is mse_loss and call["device"] == "meta" and call["after_step"] is None


def _finished_six_step_run(folder):
    """A 6-step run trained to its end in ``folder``; the returned callable reloads it."""
    data = TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))

    def loss(model, batch):
        return model(batch[0]).square().mean()

    def run():
        torch.manual_seed(0)
        return task.fit(torch.nn.Linear(3, 1), loss, data, 6, 4, 1e-2, 0, folder, True)

    run()
    return run


def test_a_reload_ignores_a_cost_record_of_another_length(tmp_path):
    run = _finished_six_step_run(tmp_path)
    (tmp_path / task.COST_FILE).write_text(json.dumps({"steps": 5, "train_s": 9.0}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a record of another run's length is no damage
        assert math.isnan(run().train_s)  # unknown, not a free (0 s) training


@pytest.mark.parametrize(
    "text",
    [
        '{"steps": 6, "train_s": 9.0',  # cut short
        "[6, 9.0]",  # no object
        '{"steps": 6}',  # no seconds
        '{"steps": 6, "train_s": "9.0"}',  # seconds as text
        '{"steps": 6, "train_s": -9.0}',
        '{"steps": 6, "train_s": NaN}',
        '{"steps": true, "train_s": 9.0}',
    ],
)
def test_a_reload_reports_a_damaged_cost_record_unknown_with_a_warning_naming_it(tmp_path, text):
    """A finished run's cost cannot be measured again without training it again: a damaged
    record gives the unknown cost (NaN, as a missing one) and a one-line warning naming it."""
    run = _finished_six_step_run(tmp_path)
    cost = tmp_path / task.COST_FILE
    cost.write_text(text)
    with pytest.warns(UserWarning) as caught:
        assert math.isnan(run().train_s)  # unknown, not a free (0 s) training
    said = [str(w.message) for w in caught if str(cost) in str(w.message)]
    assert len(said) == 1 and "\n" not in said[0] and "unknown" in said[0]
    assert cost.read_text() == text  # left for the user to repair or delete


def test_calibrated_sets_the_latent_statistics_of_all_training_frames_and_encodes_the_pairs():
    """The per-channel mean and standard deviation of every frame's latent (one direct encode)."""
    scale = replace(task.TOY, t_in=3, t_out=5)
    train = _videos(torch.rand(3, 8, 1, 16, 16, generator=torch.Generator().manual_seed(1)), None)
    autoencoder = FrameAutoencoder(1, 2, 2, 8)
    prediff, latents = training.calibrated(
        task.build_prediff(scale, "conv", autoencoder, seed=0), train, 3
    )
    with torch.no_grad():
        latent = autoencoder.encode(train.frames)  # (3, 8, 2, 8, 8)
    per_channel = latent.transpose(0, 2).reshape(2, -1).double()
    assert torch.allclose(prediff.latent_mean.double(), per_channel.mean(1), atol=1e-6)
    assert torch.allclose(prediff.latent_std.double(), per_channel.std(1), rtol=1e-5)
    assert not any(p.requires_grad for p in autoencoder.parameters())
    assert latents.context.shape == (3, 3, 2, 8, 8) and latents.target.shape == (3, 5, 2, 8, 8)


@pytest.mark.parametrize("which", ["judge", "guide"])
def test_the_energy_models_of_the_largest_seed_reach_the_trainer_with_a_wrapped_seed(
    monkeypatch, tmp_path, which
):
    """``--seed`` takes seeds below 2**62; ``2**62 − 1 + offset`` wraps to ``offset − 1``, a seed
    the real TrainConfig accepts."""
    configs = []

    class SpyTrainer:
        def __init__(self, model, loss, config, **options):
            configs.append(config)
            self.model, self.config, self.out = model, config, options["out"]

        def fit(self, data):
            return SimpleNamespace(resumed_from=0, losses=[1.0])

    monkeypatch.setattr(training, "Trainer", SpyTrainer)
    scale = replace(task.TOY, t_in=2, t_out=4, judge_hidden=5, judge_depth=3, judge_steps=3)
    energy = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(2, 6)
    train = SimpleNamespace(frames=_frames(2, 6), energy=energy)
    if which == "judge":
        training.train_judge(scale, train, tmp_path, seed=2**62 - 1, quiet=True)
        offset = training.JUDGE_SEED_OFFSET
    else:
        guide = training.GuideSize(window=3, hidden=4, depth=1, steps=3)
        training.train_guide(scale, guide, train, tmp_path, seed=2**62 - 1, quiet=True)
        offset = training.GUIDE_SEED_OFFSET
    (config,) = configs
    assert config.seed == offset - 1


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_trained_prediff_is_the_blocks_one_by_one_bitwise_in_their_folders(tmp_path, kind):
    """train_prediff in ``work/autoencoder`` and ``work/denoiser`` gives what
    train_autoencoder, build_prediff, calibrated and train_denoiser give (the blocks the
    benchmarks call), to the bit, and records each stage's cost beside its checkpoint."""
    scale = replace(
        task.TOY,
        t_in=2,
        t_out=2,
        autoencoder_steps=3,
        autoencoder_batch=4,
        denoiser_steps={"conv": 4, "cuboid": 2},
        denoiser_batch=4,
    )
    frames = torch.rand(5, 4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    train = _videos(frames, torch.zeros(5, 4, dtype=torch.float64))
    hand = tmp_path / "hand"
    autoencoder = training.train_autoencoder(scale, train, hand / "autoencoder", 6, True)
    expected = task.build_prediff(scale, kind, autoencoder.model, 6)
    expected, latents = training.calibrated(expected, train, scale.t_in)
    denoiser = training.train_denoiser(scale, expected, latents, kind, hand / "denoiser", 6, True)
    work = tmp_path / "work"
    prediff, first, second = task.trained_prediff(scale, train, kind, work, 6, True)
    mine, theirs = prediff.state_dict(), expected.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    assert first.model is prediff.autoencoder and second.model is prediff
    assert (first.steps, second.steps) == (3, {"conv": 4, "cuboid": 2}[kind])
    assert (first.final_loss, second.final_loss) == (autoencoder.final_loss, denoiser.final_loss)
    for stage, run in (("autoencoder", first), ("denoiser", second)):
        mine, theirs = (load_checkpoint(folder / stage) for folder in (work, hand))
        assert mine["model_config"] == theirs["model_config"]
        assert mine["config"] == theirs["config"] and mine["fingerprint"] == theirs["fingerprint"]
        cost = json.loads((work / stage / task.COST_FILE).read_text())
        assert cost == {"steps": run.steps, "train_s": run.train_s}
    again = task.trained_prediff(scale, train, kind, work, 6, True)  # reloaded, cost read back
    assert [run.train_s for run in again[1:]] == [first.train_s, second.train_s]
