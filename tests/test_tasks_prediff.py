"""The ``prediff-nbody`` task: its scores against independent formulas, and a toy run."""

from __future__ import annotations

import io
import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from damage import flip_a_bit_of_a_zip_entry

from physml.constraints import KnowledgeControl
from physml.outputs import Ensemble
from physml.tasks import Context, get
from physml.tasks import prediff as task


def test_spread_skill_matches_a_direct_formula_and_is_one_for_a_calibrated_ensemble():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(400, 3, generator=gen, dtype=torch.float64)
    samples = truth + torch.randn(5, 400, 3, generator=gen, dtype=torch.float64)
    m = 5
    mean = samples.mean(0)
    variance = ((samples - mean) ** 2).sum(0) / (m - 1)
    expected = math.sqrt(float(variance.mean()) * (m + 1) / m / float(((mean - truth) ** 2).mean()))
    assert task.spread_skill(samples, truth) == pytest.approx(expected, rel=1e-12)
    # Truth and members drawn from the same distribution: spread matches skill.
    centre = torch.randn(20000, generator=gen, dtype=torch.float64)
    draws = centre + torch.randn(9, 20000, generator=gen, dtype=torch.float64)
    truth = centre + torch.randn(20000, generator=gen, dtype=torch.float64)
    assert task.spread_skill(draws, truth) == pytest.approx(1.0, abs=0.03)


def test_bootstrap_se_approaches_the_standard_error_of_the_mean():
    values = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = float(values.std(correction=0)) / math.sqrt(len(values))
    assert task.bootstrap_se(values, seed=3, resamples=4000) == pytest.approx(expected, rel=0.08)


def test_deterministic_forecast_scores_crps_as_its_mae():
    data = task.videos(task.TOY, seed=0)["test"]
    context, truth = data.split(task.TOY.t_in)
    persistence = context[:, -1:].repeat(1, task.TOY.t_out, 1, 1, 1)
    energy0 = task.context_energy(data, task.TOY.t_in)

    def judge(frames):  # the first frame's simulator energy, exact for a constant video
        return torch.zeros(frames.shape[:2], dtype=torch.float64)

    row = task.evaluate_deterministic(persistence, truth, energy0, judge, 1.0, seconds=0.0)
    frame_mae = (persistence - truth).double().abs().sum((-3, -2, -1)).mean()
    assert row["crps"] == pytest.approx(float(frame_mae), rel=1e-9)
    assert math.isnan(row["crps_fair"])  # one member has no pair to compare
    assert row["mae"] == pytest.approx(float(frame_mae), rel=1e-6)
    assert row["energy_error"] == pytest.approx(float(energy0.double().abs().mean()), rel=1e-9)
    assert row["spread_skill"] == 0.0 and row["mse"] == row["mse_member"]


def test_energy_conserving_settings_keep_the_energy_at_every_size():
    for size in (16, 64):
        scale = task.TOY if size == 16 else task.Scale(**{**task.TOY.__dict__, "size": size})
        data = task.videos(scale, seed=0)["validation"]
        assert task.energy_drift(data) < 0.01


def test_energy_drift_is_the_largest_relative_change_from_the_first_frame():
    """Hand-made energies: relative changes from frame 0 of 0.1, 0.05 in video 0 and 0.4, 0.05 in
    video 1, whose ``E₀`` is negative (``|E₀|`` divides), give 0.4: the largest, not the mean
    0.1 nor the 0.35 of changes from the last frame."""
    energy = torch.tensor([[2.0, 2.2, 1.9], [-1.0, -1.4, -1.05]], dtype=torch.float64)
    data = SimpleNamespace(energy=energy)  # energy_drift reads only the energies
    assert task.energy_drift(data) == pytest.approx(0.4, rel=1e-12)


def test_clean_windows_cut_videos_into_frames_with_their_energies():
    data = task.videos(task.TOY, seed=0)["validation"]
    windows = task.clean_windows(data, 3)
    frames, energies = windows.tensors
    per_video = data.frames.shape[1] // 3
    assert frames.shape == (len(data) * per_video, 3, 1, 16, 16)
    assert torch.equal(frames[per_video + 1], data.frames[1, 3:6])
    assert torch.equal(energies[per_video + 1], data.energy[1, 3:6].float())


def test_frame_intensity_and_best_lambda():
    quantity = task.FrameIntensity(0.5, 0.25)
    frames = torch.full((2, 3, 1, 4, 4), 1.0)
    assert torch.equal(quantity(frames), torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="std must be > 0"):
        task.FrameIntensity(0.5, 0.0)
    reference = {"mse": 10.0, "ssim": 0.5}
    sweep = [
        {"lambda": 1.0, "mse": 10.1, "ssim": 0.5, "energy_error": 0.3},
        {"lambda": 10.0, "mse": 12.0, "ssim": 0.5, "energy_error": 0.1},  # costs MSE
        {"lambda": 3.0, "mse": 10.0, "ssim": 0.495, "energy_error": 0.2},
    ]
    assert task.best_lambda(sweep, reference)["lambda"] == 3.0
    assert task.best_lambda(sweep[1:2], reference)["lambda"] == 10.0  # none allowed: least error


def test_build_prediff_rejects_an_unknown_denoiser():
    from physml.models.prediff import FrameAutoencoder

    with pytest.raises(ValueError, match="kind must be one of"):
        task.build_prediff(task.TOY, "transformer", FrameAutoencoder(1, 2, 2, 8), seed=0)


def test_toy_run_writes_rows_figures_and_a_summary(tmp_path):
    assert get(task.NAME).run is task.run
    # --size full runs the toy scale (the full study is the benchmark) and writes the toy files
    rows = task.run(Context(out=tmp_path, size="full", seed=0, quiet=True))
    assert all("at full size" not in row.target for row in rows)
    assert "Toy scale only" in get(task.NAME).description
    values = {(row.case, row.metric): row.value for row in rows}
    case = "nbody-16px-4to4"
    for method in ("prediff", "prediff-kc"):
        for metric in ("mse", "ssim", "crps", "spread_skill", "energy_error"):
            assert math.isfinite(values[(case, f"{metric} {method}")])
    assert values[(case, "judge floor")] > 0
    folder = tmp_path / task.NAME
    for figure in ("strip-toy-seed0.png", "energy-toy-seed0.png"):  # the toy run's names
        assert (folder / figure).stat().st_size > 0
    summary = json.loads((folder / "summary-toy-seed0.json").read_text())
    assert summary["settings"]["size"] == "toy" and summary["settings"]["seed"] == 0
    assert (folder / "toy-seed0").is_dir() and not (folder / "full-seed0").exists()
    assert len(summary["prediff"]["energy_per_lead"]) == task.TOY.t_out
    assert {row["lambda"] for row in summary["sweep"]} == set(task.TOY_GUIDE.lambdas)
    intensity = summary["intensity"]
    assert {(row["method"], row["n"]) for row in intensity} == {
        (m, n) for m in ("prediff", "prediff-kc") for n in task.TOY.intensity_n
    }
    # Asked values are μ + nσ of the test targets' mean intensity.
    truth = task.videos(task.TOY, seed=0)["test"].split(task.TOY.t_in)[1]
    mean = task.mean_intensity(truth)
    for row in intensity:
        assert row["asked"] == pytest.approx(float(mean.mean() + row["n"] * mean.std()))
    # A rerun resumes every training from its checkpoint and gives the same scores.
    again = {
        (row.case, row.metric): row.value for row in task.run(Context(out=tmp_path, quiet=True))
    }
    assert again == values


def test_a_reloaded_training_reports_the_cost_of_the_run_that_finished_it(tmp_path):
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.randn(16, 3), torch.randn(16, 1))

    def loss(model, batch):
        x, y = batch
        return (model(x) - y).square().mean()

    def run(steps):
        torch.manual_seed(0)
        return task.fit(torch.nn.Linear(3, 1), loss, data, steps, 4, 1e-2, 0, tmp_path, True)

    finished = run(6)
    assert finished.train_s > 0
    saved = json.loads((tmp_path / task.COST_FILE).read_text())
    assert saved == {"steps": 6, "train_s": finished.train_s}
    reloaded = run(6)  # nothing left to train: the finishing run's cost, not 0
    assert reloaded.train_s == finished.train_s and reloaded.steps == 6
    (tmp_path / task.COST_FILE).unlink()
    unknown = run(6)  # no record: unknown, not a free (0 s) training
    assert math.isnan(unknown.train_s) and unknown.steps == 6


class _CountingSampler(torch.nn.Module):
    """A stand-in sampler: members × contexts of a seed-dependent field; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, context, members, steps, seed, progress):
        self.calls += 1
        noise = torch.randn(members, *context.shape, generator=torch.Generator().manual_seed(seed))
        return Ensemble(context[None] + noise)


def test_sampling_chunks_are_kept_and_a_rerun_reads_them_instead_of_sampling(tmp_path):
    context = torch.arange(5 * 2 * 1 * 3 * 3, dtype=torch.float32).reshape(5, 2, 1, 3, 3)
    first = _CountingSampler()
    kept = task.sample(first, context, members=2, steps=1, seed=3, batch=4, keep=tmp_path)
    assert first.calls == 3 and sorted(p.name for p in tmp_path.iterdir()) == [
        "0.pt",
        "1.pt",
        "2.pt",
    ]
    plain = task.sample(_CountingSampler(), context, members=2, steps=1, seed=3, batch=4)
    assert torch.equal(kept.samples, plain.samples)
    (tmp_path / "1.pt").unlink()  # as if killed while sampling chunk 1
    again = _CountingSampler()
    resumed = task.sample(again, context, members=2, steps=1, seed=3, batch=4, keep=tmp_path)
    assert again.calls == 1
    assert torch.equal(resumed.samples, plain.samples)


def test_a_reversed_pass_gives_the_same_samples_and_two_passes_share_the_chunks(tmp_path):
    context = torch.arange(5 * 2 * 1 * 3 * 3, dtype=torch.float32).reshape(5, 2, 1, 3, 3)
    plain = task.sample(_CountingSampler(), context, members=2, steps=1, seed=3, batch=4)
    backwards = _CountingSampler()
    reversed_run = task.sample(
        backwards, context, members=2, steps=1, seed=3, batch=4, keep=tmp_path, reverse=True
    )
    assert torch.equal(reversed_run.samples, plain.samples) and backwards.calls == 3
    (tmp_path / "0.pt").unlink()  # the forward pass still owes chunk 0 only
    forward = _CountingSampler()
    shared = task.sample(forward, context, members=2, steps=1, seed=3, batch=4, keep=tmp_path)
    assert forward.calls == 1 and torch.equal(shared.samples, plain.samples)


def test_a_kept_chunk_with_a_flipped_bit_is_refused_by_name(tmp_path):
    context = torch.zeros(4, 2, 1, 3, 3)
    task.sample(_CountingSampler(), context, members=2, steps=1, seed=0, batch=4, keep=tmp_path)
    flip_a_bit_of_a_zip_entry(tmp_path / "0.pt")
    damaged = (
        f"keep: {str(tmp_path / '0.pt')!r} cannot be read as a kept chunk of samples: it is "
        "damaged (its entry 'data/0' fails its CRC-32 check: a bit changed on disk or in a "
        "copy); delete it to draw that chunk again"
    )
    with pytest.raises(ValueError) as refused:
        task.sample(_CountingSampler(), context, members=2, steps=1, seed=0, batch=4, keep=tmp_path)
    assert str(refused.value) == damaged


def test_kept_chunks_from_another_call_are_refused_by_name(tmp_path):
    context = torch.zeros(4, 2, 1, 3, 3)
    task.sample(_CountingSampler(), context, members=2, steps=1, seed=0, batch=4, keep=tmp_path)
    with pytest.raises(ValueError, match=r"keep: .*0\.pt.* expected \(members, contexts\)"):
        task.sample(_CountingSampler(), context, members=4, steps=1, seed=0, batch=8, keep=tmp_path)


def test_intensity_rows_kept_and_reversed_match_a_plain_pass(tmp_path):
    from dataclasses import replace

    from physml.models.prediff import FrameAutoencoder

    scale = replace(task.TOY, intensity_members=2, ddim_steps=2, sample_batch=4)
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
    prediff = task.build_prediff(scale, "conv", autoencoder, seed=0)
    context = torch.rand(3, scale.t_in, 1, scale.size, scale.size)
    options = dict(stats=(0.05, 0.01), scale=scale, lam=1.0, seed=2)
    plain = task.intensity_rows(prediff, context, **options)
    kept = task.intensity_rows(prediff, context, **options, keep=tmp_path, reverse=True)
    again = task.intensity_rows(prediff, context, **options, keep=tmp_path)  # reads the chunks

    def scores(rows):
        return [{k: v for k, v in row.items() if k != "fwd_ms"} for row in rows]

    assert scores(kept) == scores(plain) and again == kept
    expected = {"plain", *(f"n{n:g}-lambda1" for n in scale.intensity_n)}
    assert {folder.name for folder in tmp_path.iterdir()} == expected
    assert len(list((tmp_path / "plain").iterdir())) == 2  # 3 contexts, 2 per chunk
    # another λ on the same folder: its own guided draws, the unguided one read back
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "plain").iterdir()}
    other = task.intensity_rows(prediff, context, **{**options, "lam": 3.0}, keep=tmp_path)
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "plain").iterdir()} == written
    assert [row["achieved"] for row in other if row["method"] == "prediff"] == [
        row["achieved"] for row in plain if row["method"] == "prediff"
    ]
    assert len({folder.name for folder in tmp_path.iterdir()} - expected) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_prediff_on_cuda_takes_cpu_frames_and_gives_cpu_samples_matching_the_cpu_model(
    monkeypatch,
):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # CPU-like float32 arithmetic
    import copy

    from torch.utils.data import TensorDataset

    from physml.models.prediff import FrameAutoencoder, LatentPairs, reconstruction_scores

    scale = task.TOY
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
    on_cpu = task.build_prediff(scale, "conv", autoencoder, seed=0)
    on_cuda = copy.deepcopy(on_cpu).to("cuda")
    frames = torch.rand(4, scale.t_in + scale.t_out, 1, scale.size, scale.size)
    on_cpu.calibrate(frames, batch=2)
    on_cuda.calibrate(frames, batch=2)
    torch.testing.assert_close(on_cuda.latent_std.cpu(), on_cpu.latent_std, rtol=1e-4, atol=1e-5)
    pairs = TensorDataset(frames[:, : scale.t_in], frames[:, scale.t_in :])
    cpu_pairs, cuda_pairs = LatentPairs(on_cpu, pairs, batch=3), LatentPairs(on_cuda, pairs, 3)
    assert cuda_pairs.target.device.type == "cpu"
    torch.testing.assert_close(cuda_pairs.target, cpu_pairs.target, rtol=1e-4, atol=1e-4)
    scores = reconstruction_scores(on_cuda.autoencoder, frames, batch=2)
    expected = reconstruction_scores(on_cpu.autoencoder, frames, batch=2)
    assert scores == pytest.approx(expected, rel=1e-4)
    forecast = task.sample(on_cuda, frames[:, : scale.t_in], members=2, steps=2, seed=0, batch=4)
    assert forecast.samples.device.type == "cpu"
    assert forecast.samples.shape == (2, 4, scale.t_out, 1, scale.size, scale.size)


def _tiny_prediff():
    from physml.models.prediff import FrameAutoencoder

    scale = task.TOY
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
    return scale, task.build_prediff(scale, "conv", autoencoder, seed=0).eval()


def test_no_sampling_chunk_of_one_seed_repeats_a_chunk_of_a_neighbouring_seed():
    scale, prediff = _tiny_prediff()
    one = torch.rand(1, scale.t_in, 1, scale.size, scale.size)
    context = one.expand(3, -1, -1, -1, -1)  # equal contexts: a chunk's draw is its seed's alone
    chunks = {}
    for seed in range(3):
        forecast = task.sample(prediff, context, members=2, steps=2, seed=seed, batch=2)
        for index, part in enumerate(forecast.samples.split(1, dim=1)):
            chunks[seed, index] = part
    for first, a in chunks.items():
        for second, b in chunks.items():
            if first < second:
                assert not torch.allclose(a, b), (first, second)  # e.g. (s, k) and (s + 1, k - 1)


class _Terminal(io.StringIO):
    """Stands for stderr on a terminal, where a bar is drawn."""

    def isatty(self) -> bool:
        return True


def test_plain_and_controlled_sampling_show_bars_and_draw_the_same_samples_without(monkeypatch):
    scale, prediff = _tiny_prediff()
    context = torch.rand(3, scale.t_in, 1, scale.size, scale.size)
    control = KnowledgeControl(task.FrameIntensity(0.5, 0.1), torch.zeros(1), 1.0, on="frames")
    target = torch.ones(3)
    found = {}
    for progress in (True, False):
        monkeypatch.setattr(sys, "stderr", _Terminal())
        plain = task.sample(prediff, context, 2, 2, seed=5, batch=2, progress=progress)
        guided = task.controlled_sample(
            prediff, control, context, target, 2, 2, seed=5, batch=2, progress=progress
        )
        found[progress] = (plain.samples, guided.samples, sys.stderr.getvalue())
    (plain, guided, drawn), (quiet_plain, quiet_guided, silent) = found[True], found[False]
    assert torch.equal(plain, quiet_plain) and torch.equal(guided, quiet_guided)
    assert not torch.equal(plain, guided)  # the control steered the samples
    assert drawn.count("sampling chunks") >= 2 and drawn.count("3/3") == 2  # 3 chunks, 2 calls
    assert drawn.count("DDIM steps") >= 6  # a bar for each of the six chunks sampled
    assert silent == ""


def test_the_same_seed_draws_the_same_samples():
    scale, prediff = _tiny_prediff()
    context = torch.rand(3, scale.t_in, 1, scale.size, scale.size)
    first = task.sample(prediff, context, members=2, steps=2, seed=5, batch=2)
    second = task.sample(prediff, context, members=2, steps=2, seed=5, batch=2)
    assert torch.equal(first.samples, second.samples)
    other = task.sample(prediff, context, members=2, steps=2, seed=6, batch=2)
    assert not torch.allclose(first.samples, other.samples)


@pytest.mark.parametrize("changed", [{"seed": 4}, {"steps": 2}])
def test_kept_chunks_of_another_seed_or_steps_are_refused(tmp_path, changed):
    context = torch.zeros(4, 2, 1, 3, 3)
    options = dict(members=2, steps=1, seed=3, batch=4, keep=tmp_path)
    task.sample(_CountingSampler(), context, **options)
    sampler = _CountingSampler()
    name = next(iter(changed))
    with pytest.raises(
        ValueError, match=rf"keep: .*\.pt.* holds samples of seed 3 and 1 steps.*{name}"
    ):
        task.sample(sampler, context, **{**options, **changed})
    assert sampler.calls == 0


def test_kept_chunks_without_the_seeding_scheme_are_drawn_again(tmp_path):
    context = torch.zeros(4, 2, 1, 3, 3)
    for index in range(2):  # as kept by an older version: samples and seconds only
        stale = {"samples": torch.full((2, 2, 2, 1, 3, 3), 7.0), "seconds": torch.tensor(1.0)}
        torch.save(stale, tmp_path / f"{index}.pt")
    plain = task.sample(_CountingSampler(), context, members=2, steps=1, seed=3, batch=4)
    sampler = _CountingSampler()
    with pytest.warns(UserWarning, match=r"keep: .* without the seeding scheme .* drawn again"):
        redrawn = task.sample(sampler, context, members=2, steps=1, seed=3, batch=4, keep=tmp_path)
    assert sampler.calls == 2 and torch.equal(redrawn.samples, plain.samples)
    again = _CountingSampler()
    reread = task.sample(again, context, members=2, steps=1, seed=3, batch=4, keep=tmp_path)
    assert again.calls == 0 and torch.equal(reread.samples, plain.samples)


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (1.0, TypeError), (True, TypeError)])
def test_sample_refuses_a_seed_that_is_not_a_non_negative_int(seed, error):
    with pytest.raises(error, match=rf"seed must be an integer >= 0, got {seed!r}"):
        task.sample(_CountingSampler(), torch.zeros(2, 2, 1, 3, 3), 2, 1, seed)


def test_sample_takes_a_numpy_seed_as_the_same_int():
    context = torch.zeros(4, 2, 1, 3, 3)
    plain = task.sample(_CountingSampler(), context, members=2, steps=1, seed=3, batch=4)
    numpy = task.sample(_CountingSampler(), context, members=2, steps=1, seed=np.int64(3), batch=4)
    assert torch.equal(numpy.samples, plain.samples)
