"""``prediff-nbody``'s data helpers, scores and judgments against small hand-made cases."""

from __future__ import annotations

import io
import math
import re
import sys
from types import SimpleNamespace

import pytest
import torch
from test_tasks_prediff_training import spy_on_fit

from physml.tasks import prediff as task
from physml.tasks.prediff import evaluation, training


def test_generator_settings_scale_the_64_pixel_lengths_and_drop_the_clip():
    settings = task.generator_settings(32)  # half the 64² canvas: every length halved
    assert settings["speed"] == pytest.approx((0.25, 0.75))
    assert settings["softening"] == pytest.approx(5.0)
    assert settings["g"] == pytest.approx(0.025)
    assert settings["clip"] is None and settings["integrator"] == "leapfrog"


def test_validation_videos_are_fresh_trajectories_and_test_videos_fresh_handwriting():
    scale = task.TOY
    data = task.videos(scale, seed=0)
    assert {name: part.frames.shape[:2] for name, part in data.items()} == {
        "train": (scale.train, scale.t_in + scale.t_out),
        "validation": (scale.validation, scale.t_in + scale.t_out),
        "test": (scale.test, scale.t_in + scale.t_out),
    }
    first = data["train"].frames[: scale.validation]
    assert not torch.equal(data["validation"].frames, first)
    # handwriting: load_digits images with index % 5 == 0 are the test split's alone
    assert bool((data["test"].sprite_index % 5 == 0).all())
    for name in ("train", "validation"):
        assert bool((data[name].sprite_index % 5 != 0).all()), name


def test_context_energy_is_the_mean_over_the_context_frames_in_float32():
    energy = torch.tensor([[1.0, 3.0, 10.0, 20.0], [-2.0, -4.0, 7.0, 9.0]], dtype=torch.float64)
    found = task.context_energy(SimpleNamespace(energy=energy), t_in=2)
    assert found.dtype == torch.float32
    assert found.tolist() == [2.0, -3.0]


def test_clean_windows_drop_the_frames_left_over_at_the_end():
    frames = torch.arange(2 * 7, dtype=torch.float32).reshape(2, 7, 1, 1, 1)
    energy = 100.0 + torch.arange(2 * 7, dtype=torch.float64).reshape(2, 7)
    windows, energies = task.clean_windows(SimpleNamespace(frames=frames, energy=energy), 3).tensors
    # 7 frames hold two windows of 3 (frames 0-2 and 3-5); frame 6 is left over
    assert windows.flatten(1).tolist() == [[0, 1, 2], [3, 4, 5], [7, 8, 9], [10, 11, 12]]
    assert energies.dtype == torch.float32
    assert energies.tolist() == [[100, 101, 102], [103, 104, 105], [107, 108, 109], [110, 111, 112]]


def test_mean_intensity_averages_each_video_in_float64():
    frames = torch.zeros(2, 3, 2, 1, 2, 2)  # (M, N, T, C, H, W)
    frames[0, 1, 0] = 0.1  # half of one video's pixels at 0.1
    frames[1, 2] = torch.tensor([[0.5, 0.5], [0.5, 0.25]])
    found = task.mean_intensity(frames)
    assert found.dtype == torch.float64 and found.shape == (2, 3)
    expected = [0.0, 0.05, 0.0, 0.0, 0.0, 0.4375]
    assert found.flatten().tolist() == pytest.approx(expected, rel=1e-7, abs=0)


def test_frame_intensity_is_each_videos_mean_in_sigma_units():
    frames = torch.zeros(2, 2, 1, 2, 2)
    frames[0] = 0.5
    frames[1, 1] = 1.0  # video 1: half its pixels at 1, mean 0.5 too (frame 0 all 0)
    frames[1, 0, 0, 0, 0] = 0.5  # one pixel more: mean (4 + 0.5) / 8
    found = task.FrameIntensity(0.25, 0.5)(frames)
    assert found.tolist() == pytest.approx([(0.5 - 0.25) / 0.5, (4.5 / 8 - 0.25) / 0.5])


def test_chunk_seeds_are_distinct_63_bit_integers():
    seeds = {evaluation.chunk_seed(seed, index) for seed in range(20) for index in range(20)}
    assert len(seeds) == 400
    assert all(0 <= value < 2**63 for value in seeds)


def _two_member_case():
    """Two members of three contexts, two frames of 2 × 2 pixels, each frame constant: member 0
    ``a_n + 0.05 t``, member 1 ``b_n − 0.05 t``, truth ``c_n``."""
    a, b, c = [0.1, 0.2, 0.3], [0.7, 0.6, 0.5], [0.5, 0.0, 0.4]
    samples = torch.zeros(2, 3, 2, 1, 2, 2, dtype=torch.float64)
    truth = torch.zeros(3, 2, 1, 2, 2, dtype=torch.float64)
    for n in range(3):
        truth[n] = c[n]
        for t in range(2):
            samples[0, n, t] = a[n] + 0.05 * t
            samples[1, n, t] = b[n] - 0.05 * t
    return samples, truth


def _frame_mean_judge(frames):
    """A judge reading each frame's mean pixel as its energy, ``(N, T, C, H, W)`` → ``(N, T)``."""
    return frames.double().mean((2, 3, 4))


def test_two_member_ensemble_scores_match_a_direct_computation():
    samples, truth = _two_member_case()
    energy0 = torch.zeros(3, dtype=torch.float64)
    forecast = task.EnsembleForecast(samples, seconds=0.3)
    row = task.evaluate_ensemble(forecast, truth, energy0, _frame_mean_judge, judge_floor=0.07)
    pixels = 4
    mse = mae = mse0 = crps = fair = 0.0
    variance = 0.0
    for n in range(3):
        for t in range(2):
            x0, x1 = float(samples[0, n, t, 0, 0, 0]), float(samples[1, n, t, 0, 0, 0])
            y = float(truth[n, t, 0, 0, 0])
            mean = (x0 + x1) / 2
            mse += pixels * (mean - y) ** 2 / 6
            mae += pixels * abs(mean - y) / 6
            mse0 += pixels * (x0 - y) ** 2 / 6
            # CRPS of two members: E|X − y| − ½ E|X − X'| over the 4 ordered pairs
            crps += pixels * ((abs(x0 - y) + abs(x1 - y)) / 2 - abs(x0 - x1) / 4) / 6
            fair += pixels * ((abs(x0 - y) + abs(x1 - y)) / 2 - abs(x0 - x1) / 2) / 6  # 2 pairs
            variance += ((x0 - mean) ** 2 + (x1 - mean) ** 2) / 6  # unbiased, M − 1 = 1
    assert row["mse"] == pytest.approx(mse, rel=1e-9)
    assert row["mae"] == pytest.approx(mae, rel=1e-9)
    assert row["mse_member"] == pytest.approx(mse0, rel=1e-9)
    assert row["crps"] == pytest.approx(crps, rel=1e-9)
    assert row["crps_fair"] == pytest.approx(fair, rel=1e-9)
    skill = mse / pixels
    assert row["spread_skill"] == pytest.approx(math.sqrt(variance * 3 / 2 / skill), rel=1e-9)
    # Energies against E₀ = 0: every context's two members average 0.4 at every lead, so
    # the error is 0.4, its spread over contexts 0, and each lead's error 0.4.
    assert row["energy_error"] == pytest.approx(0.4, rel=1e-12)
    assert row["energy_error_se"] == pytest.approx(0.0, abs=1e-12)
    assert row["energy_per_lead"] == pytest.approx([0.4, 0.4], rel=1e-12)
    assert row["judge_floor"] == 0.07
    assert row["fwd_ms"] == pytest.approx(100.0)  # 0.3 s over 3 contexts


def test_energy_per_lead_averages_members_and_contexts_at_each_lead():
    samples, truth = _two_member_case()
    energy0 = torch.tensor([0.3, 0.1, 0.6], dtype=torch.float64)
    row = task.evaluate_ensemble(
        task.EnsembleForecast(samples, 1.0), truth, energy0, _frame_mean_judge, 0.0, seed=5
    )
    per_context = [
        sum(
            abs(float(samples[m, n, t, 0, 0, 0]) - float(energy0[n]))
            for m in range(2)
            for t in (0, 1)
        )
        / 4
        for n in range(3)
    ]
    se = task.bootstrap_se(torch.tensor(per_context, dtype=torch.float64), seed=5)
    assert row["energy_error_se"] == pytest.approx(se, rel=1e-12)  # over contexts, the call's seed
    expected = []
    for t in range(2):
        errors = [
            abs(float(samples[m, n, t, 0, 0, 0]) - float(energy0[n]))
            for m in range(2)
            for n in range(3)
        ]
        expected.append(sum(errors) / 6)
    assert row["energy_per_lead"] == pytest.approx(expected, rel=1e-12)
    assert row["energy_error"] == pytest.approx(sum(expected) / 2, rel=1e-12)


def test_judge_error_of_hand_made_truths():
    _, truth = _two_member_case()  # frames constant at c = 0.5, 0.0, 0.4
    energy0 = torch.tensor([0.25, 0.5, 0.4], dtype=torch.float64)
    floor, se, per_lead = task.judge_error(_JudgeModule(), truth, energy0)
    assert floor == pytest.approx((0.25 + 0.5 + 0.0) / 3, rel=1e-12)
    assert per_lead == pytest.approx([0.25, 0.25], rel=1e-12)
    assert se > 0


class _JudgeModule(torch.nn.Module):
    def forward(self, frames):
        return _frame_mean_judge(frames)


def test_energy_controls_keep_the_scale_and_the_guides_normalised_step():
    regressor, guide = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    energy0 = torch.tensor([1.0, 2.0])
    noisy = task.energy_control(regressor, energy0, 3.0)
    assert (noisy.on, noisy.scale, noisy.normalized) == ("noisy", 3.0, False)
    frames = task.frame_energy_control(guide, energy0, 0.3)
    assert (frames.on, frames.scale, frames.normalized) == ("frames", 0.3, True)
    assert not guide.training and not any(p.requires_grad for p in guide.parameters())


def _row(lam, mse, ssim, error):
    return {"lambda": lam, "mse": mse, "ssim": ssim, "energy_error": error}


@pytest.mark.parametrize(
    ("mse", "ssim", "allowed"),
    [
        (51.0, 0.49, True),  # both costs exactly at the limits: allowed
        (51.001, 0.5, False),  # MSE just over 1.02 ×
        (50.0, 0.4899, False),  # SSIM just under − 0.01
    ],
)
def test_best_lambda_allows_a_row_just_at_the_cost_limits(mse, ssim, allowed):
    reference = {"mse": 50.0, "ssim": 0.5}
    sweep = [_row(1.0, 50.0, 0.5, 0.3), _row(3.0, mse, ssim, 0.1), _row(10.0, 49.0, 0.6, 0.2)]
    assert task.best_lambda(sweep, reference)["lambda"] == (3.0 if allowed else 10.0)


def test_best_lambda_falls_back_to_the_least_error_when_no_row_is_allowed():
    reference = {"mse": 50.0, "ssim": 0.5}
    sweep = [_row(1.0, 60.0, 0.5, 0.3), _row(3.0, 50.0, 0.2, 0.2), _row(10.0, 70.0, 0.1, 0.25)]
    assert task.best_lambda(sweep, reference)["lambda"] == 3.0


def _judged(plain, controlled, intensity=()):
    return {
        what: (value, met) for what, value, _, met in task.done_when(plain, controlled, intensity)
    }


@pytest.mark.parametrize("nudge", [0.0, 1e-4])
def test_done_when_targets_are_met_at_their_boundaries_and_missed_just_past(nudge):
    met = nudge == 0.0
    plain = {"energy_error": 0.8, "mse": 50.0, "ssim": 0.5, "judge_floor": 2.0}
    for key, controlled in {
        "energy_error kc / prediff": {"energy_error": 0.4 + nudge, "mse": 50.0, "ssim": 0.5},
        "mse kc / prediff": {"energy_error": 0.1, "mse": 51.0 + nudge, "ssim": 0.5},
        "ssim kc - prediff": {"energy_error": 0.1, "mse": 50.0, "ssim": 0.49 - nudge},
    }.items():
        checks = _judged(plain, controlled)
        assert checks[key][1] is met, key
        others = [value[1] for what, value in checks.items() if what != key and "floor" not in what]
        assert all(others), key
    assert _judged(plain, plain)["energy_error kc / prediff"][0] == pytest.approx(1.0)
    ratio = _judged(plain, {**plain, "energy_error": 0.2})["energy_error kc / prediff"][0]
    assert ratio == pytest.approx(0.25)
    # the judge must be sharp: prediff's error above 1.5 × its floor, strictly
    sharp = {**plain, "energy_error": 3.0 - nudge + 2 * nudge}  # 3.0 (= 1.5 × 2): not met
    assert _judged(sharp, sharp)["prediff energy_error / judge_floor"][1] is (not met)


def test_done_when_intensity_needs_three_times_closer_for_n_minus_2_0_2_only():
    def rows(n, plain_miss, kc_miss):
        return [
            {"method": "prediff", "n": n, "asked": 1.0, "achieved": 1.0 + plain_miss},
            {"method": "prediff-kc", "n": n, "asked": 1.0, "achieved": 1.0 + kc_miss},
        ]

    plain = {"energy_error": 0.8, "mse": 50.0, "ssim": 0.5, "judge_floor": 0.1}
    intensity = [
        *rows(-2, 0.75, -0.25),  # exactly 3× closer (below the target): met
        *rows(0, -0.75, 0.2505),  # just under 3×: missed
        *rows(2, 0.5, 0.0),  # hit exactly
        *rows(4, 0.0, 1.0),  # n = 4 is no target
    ]
    checks = _judged(plain, plain, intensity)
    intensity_checks = {what: value for what, value in checks.items() if "intensity" in what}
    assert set(intensity_checks) == {f"intensity n={n}: miss prediff / miss kc" for n in (-2, 0, 2)}
    assert intensity_checks["intensity n=-2: miss prediff / miss kc"] == (pytest.approx(3.0), True)
    value, met = intensity_checks["intensity n=0: miss prediff / miss kc"]
    assert value == pytest.approx(0.75 / 0.2505) and met is False
    assert intensity_checks["intensity n=2: miss prediff / miss kc"][1] is True


def test_autoencoder_frames_are_every_frame_on_its_own():
    frames = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 1, 2, 2)
    (single,) = task.autoencoder_frames(SimpleNamespace(frames=frames)).tensors
    assert single.shape == (6, 1, 1, 2, 2)
    for k in range(6):
        assert torch.equal(single[k, 0], frames[k // 3, k % 3])


def test_final_loss_is_the_mean_of_the_steps_taken_when_fewer_than_20(tmp_path):
    from torch.utils.data import TensorDataset

    def loss(model, batch):  # 2.0 at every step, whatever the weights
        return model.weight.sum() * 0.0 + 2.0

    data = TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
    trained = task.fit(torch.nn.Linear(3, 1), loss, data, 6, 4, 1e-2, 0, tmp_path, True)
    assert trained.final_loss == pytest.approx(2.0) and trained.steps == 6


def test_the_judge_and_the_guide_share_no_seed_with_the_run():
    offsets = {0, training.JUDGE_SEED_OFFSET, training.GUIDE_SEED_OFFSET}
    assert len(offsets) == 3


def test_energy_drift_divides_by_the_first_energy():
    """Relative changes 0.1 (absolute 0.4) and 0.2 (absolute 0.1): the drift is 0.2."""
    energy = torch.tensor([[4.0, 4.4, 4.2], [-0.5, -0.6, -0.45]], dtype=torch.float64)
    assert task.energy_drift(SimpleNamespace(energy=energy)) == pytest.approx(0.2, rel=1e-12)


class _EchoSampler(torch.nn.Module):
    """A stand-in sampler whose members are the context itself; records each call's contexts
    and whether it was asked for a bar."""

    def __init__(self) -> None:
        super().__init__()
        self.seen, self.progress = [], []

    def forward(self, context, members, steps, seed, progress):
        from physml.outputs import Ensemble

        self.seen.append(context[:, 0, 0, 0, 0].tolist())
        self.progress.append(progress)
        return Ensemble(context[None].repeat(members, 1, 1, 1, 1, 1))


@pytest.mark.parametrize(
    ("members", "batch", "calls"),
    [(2, 4, [[0, 1], [2, 3], [4]]), (4, 4, [[0], [1], [2], [3], [4]]), (2, 64, [[0, 1, 2, 3, 4]])],
)
def test_sample_hands_each_context_once_in_chunks_of_batch_over_members(members, batch, calls):
    context = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1, 1).expand(5, 2, 1, 2, 2)
    sampler = _EchoSampler()
    forecast = evaluation.sample(sampler, context, members, steps=1, seed=0, batch=batch)
    assert sampler.seen == calls
    assert forecast.samples.shape == (members, 5, 2, 1, 2, 2)
    assert torch.equal(forecast.samples, context[None].expand(members, -1, -1, -1, -1, -1))


def test_kept_chunks_of_another_chunk_size_are_refused(tmp_path):
    context = torch.zeros(6, 2, 1, 2, 2)
    evaluation.sample(_EchoSampler(), context, 2, steps=1, seed=0, batch=4, keep=tmp_path)
    expected = (
        f"keep: {str(tmp_path / '0.pt')!r} holds samples of shape (2, 2, 2, 1, 2, 2), expected "
        "(members, contexts) = (2, 3) for this call; it comes from another call: use another "
        "keep folder"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        evaluation.sample(_EchoSampler(), context, 2, steps=1, seed=0, batch=6, keep=tmp_path)


def test_chunk_seeds_use_all_63_bits():
    seeds = [evaluation.chunk_seed(seed, index) for seed in range(20) for index in range(20)]
    assert max(seeds) >= 2**62  # 400 draws all below 2⁶² has probability 2⁻⁴⁰⁰


class _SlowSampler(_EchoSampler):
    def forward(self, context, members, steps, seed, progress):
        import time

        time.sleep(0.02)
        return super().forward(context, members, steps, seed, progress)


def test_sampling_seconds_add_up_the_chunks_and_are_read_back_from_kept_chunks(tmp_path):
    context = torch.zeros(5, 2, 1, 2, 2)
    timed = evaluation.sample(_SlowSampler(), context, 2, steps=1, seed=0, batch=4, keep=tmp_path)
    assert timed.seconds >= 3 * 0.02  # three chunks of at least 20 ms each
    reread = evaluation.sample(_EchoSampler(), context, 2, steps=1, seed=0, batch=4, keep=tmp_path)
    assert reread.seconds == pytest.approx(timed.seconds, rel=1e-12)


def test_intensity_rows_ask_mu_plus_n_sigma_and_lambda_zero_steers_nothing():
    from dataclasses import replace

    from physml.models.prediff import FrameAutoencoder

    scale = replace(
        task.TOY, intensity_members=2, ddim_steps=2, sample_batch=4, intensity_n=(-2, 2)
    )
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
    prediff = task.build_prediff(scale, "conv", autoencoder, seed=0).eval()
    generator = torch.Generator().manual_seed(0)
    context = torch.rand(3, scale.t_in, 1, scale.size, scale.size, generator=generator)
    mu, sigma = 0.05, 0.01
    rows = task.intensity_rows(prediff, context, (mu, sigma), scale, lam=2.5, seed=2)
    assert [(row["method"], row["n"]) for row in rows] == [
        ("prediff", -2), ("prediff-kc", -2), ("prediff", 2), ("prediff-kc", 2)
    ]  # fmt: skip
    for row in rows:
        asked = mu + row["n"] * sigma
        assert row["asked"] == pytest.approx(asked, rel=1e-12)
        assert row["miss_sigma"] == pytest.approx(abs(row["achieved"] - asked) / sigma, rel=1e-12)
        assert row["lambda"] == (2.5 if row["method"] == "prediff-kc" else 0.0)
    unsteered = task.intensity_rows(prediff, context, (mu, sigma), scale, lam=0.0, seed=2)
    for row in unsteered:  # λ = 0: the guided draw is the unguided one (same chunk seeds)
        assert row["achieved"] == pytest.approx(unsteered[0]["achieved"], rel=1e-6)
    assert rows[0]["achieved"] == unsteered[0]["achieved"]
    assert rows[1]["achieved"] != pytest.approx(rows[0]["achieved"], rel=1e-6)  # λ = 2.5 steers


def test_the_regressor_learns_the_mean_energy_of_the_target_frames(tmp_path):
    from dataclasses import replace

    from physml.models.prediff import FrameAutoencoder

    scale = replace(task.TOY, regressor_steps=2, batch=2)
    train = task.videos(scale, seed=0)["validation"]
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
    prediff, latents = training.calibrated(
        task.build_prediff(scale, "conv", autoencoder, seed=0), train, scale.t_in
    )
    trained = training.train_regressor(scale, prediff, latents, train, tmp_path, 0, True)
    target_energies = train.energy[:, scale.t_in :]  # every video's last T_out frames
    assert float(trained.model.offset) == pytest.approx(float(target_energies.mean()), rel=1e-6)


@pytest.mark.parametrize("which", ["judge", "guide"])
def test_the_judge_and_the_guide_train_on_target_length_windows_under_their_own_seed(
    monkeypatch, which
):
    calls = spy_on_fit(monkeypatch)
    scale = task.TOY
    train = task.videos(scale, seed=0)["validation"]  # 4 videos of 8 frames
    if which == "judge":
        training.train_judge(scale, train, "unused", seed=3, quiet=True)
        own, steps = 3 + training.JUDGE_SEED_OFFSET, scale.judge_steps
    else:
        training.train_guide(scale, task.TOY_GUIDE, train, "unused", seed=3, quiet=True)
        own, steps = 3 + training.GUIDE_SEED_OFFSET, task.TOY_GUIDE.steps
    (call,) = calls
    windows, energies = call["data"].tensors
    assert windows.shape[:2] == (4 * 2, scale.t_out) and energies.shape == (8, scale.t_out)
    assert (call["seed"], call["model_config"]["seed"], call["steps"]) == (own, own, steps)


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_each_denoiser_kind_gets_its_own_ema_decay_and_steps(monkeypatch, kind):
    from dataclasses import replace

    from physml.models.prediff import FrameAutoencoder

    steps = {"conv": 3, "cuboid": 5}
    scale = replace(task.TOY, ema_decay={"conv": 0.9, "cuboid": 0.5}, denoiser_steps=steps)
    autoencoder = FrameAutoencoder(1, scale.latent_channels, scale.downsample, 8)
    prediff = task.build_prediff(scale, kind, autoencoder, seed=0)
    assert prediff.config["ema_decay"] == {"conv": 0.9, "cuboid": 0.5}[kind]
    calls = spy_on_fit(monkeypatch)
    training.train_denoiser(scale, prediff, None, kind, "unused", seed=0, quiet=True)
    assert [call["steps"] for call in calls] == [steps[kind]]


@pytest.mark.parametrize("length", [0, -1, 5, 2.0, True])
def test_clean_windows_refuse_a_length_that_is_not_1_to_the_video_length(length):
    data = SimpleNamespace(frames=torch.zeros(2, 4, 1, 2, 2), energy=torch.ones(2, 4))
    with pytest.raises(ValueError, match=rf"length must be an int in \[1, 4\].*got {length!r}"):
        task.clean_windows(data, length)


@pytest.mark.parametrize(
    ("members", "error"), [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_sample_refuses_members_that_are_not_a_positive_int(members, error):
    with pytest.raises(error, match=rf"^members must be an integer >= 1, got {members!r}$"):
        evaluation.sample(_EchoSampler(), torch.zeros(3, 2, 1, 2, 2), members, 1, 0)


@pytest.mark.parametrize("progress", ["yes", 1, None])
def test_sample_refuses_a_progress_that_is_not_a_bool(progress):
    with pytest.raises(TypeError, match=rf"^progress must be True or False, got {progress!r}$"):
        evaluation.sample(_EchoSampler(), torch.zeros(3, 2, 1, 2, 2), 2, 1, 0, progress=progress)


class _Terminal(io.StringIO):
    """Stands for stderr on a terminal, where a bar is drawn."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("reverse", [False, True])
def test_sample_shows_a_bar_of_its_chunks_and_hands_the_switch_to_the_model(monkeypatch, reverse):
    context = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1, 1).expand(5, 2, 1, 2, 2)
    found = {}
    for progress in (True, False):
        monkeypatch.setattr(sys, "stderr", _Terminal())
        sampler = _EchoSampler()
        forecast = evaluation.sample(
            sampler, context, 2, 1, 0, batch=4, reverse=reverse, progress=progress
        )
        found[progress] = (forecast.samples, sys.stderr.getvalue(), sampler.progress)
    (shown, drawn, asked), (quiet, silent, not_asked) = found[True], found[False]
    assert torch.equal(shown, quiet)
    assert "sampling chunks" in drawn and "3/3" in drawn  # three chunks of two contexts or one
    assert silent == ""
    assert asked == [True] * 3 and not_asked == [False] * 3


class _OldSampler(torch.nn.Module):
    """A sampler of the call ``(context, members, steps, seed)``, without ``progress``."""

    def forward(self, context, members, steps, seed):
        from physml.outputs import Ensemble

        return Ensemble(context[None].repeat(members, 1, 1, 1, 1, 1))


class _KeywordSampler(_OldSampler):
    """A sampler taking any keyword: it is handed ``progress``, and records it."""

    def __init__(self) -> None:
        super().__init__()
        self.options = []

    def forward(self, context, members, steps, seed, **options):
        self.options.append(options)
        return super().forward(context, members, steps, seed)


@pytest.mark.parametrize("progress", [True, False])
def test_sample_hands_progress_only_to_a_sampler_that_takes_it(progress):
    context = torch.arange(3, dtype=torch.float32).reshape(3, 1, 1, 1, 1).expand(3, 2, 1, 2, 2)
    expected = context[None].expand(2, -1, -1, -1, -1, -1)
    old = evaluation.sample(_OldSampler(), context, 2, 1, 0, batch=4, progress=progress)
    assert torch.equal(old.samples, expected)
    keywords = _KeywordSampler()
    taking = evaluation.sample(keywords, context, 2, 1, 0, batch=4, progress=progress)
    assert torch.equal(taking.samples, expected)
    assert keywords.options == [{"progress": progress}] * 2


def test_best_lambda_refuses_an_empty_sweep():
    with pytest.raises(ValueError, match="sweep must hold at least one row, got none"):
        task.best_lambda([], {"mse": 1.0, "ssim": 1.0})
