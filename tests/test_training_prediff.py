"""physml.training.train_prediff: PreDiff's two stages through the one Trainer, bitwise the
hand-written recipe (autoencoder run, calibrate, LatentPairs, denoiser run with update_ema), each
stage resumed from its own folder, and bad input refused by name before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from physml.models.prediff import (
    ConvDenoiser,
    FrameAutoencoder,
    LatentPairs,
    PreDiff,
    autoencoder_loss,
    diffusion_loss,
    update_ema,
)
from physml.training import TrainConfig, Trainer, TrainReport, load_checkpoint, train_prediff
from physml.training.prediff import STAGES

T_IN = T_OUT = 2
FIRST = TrainConfig(steps=3, batch=2, lr=0.01, seed=1, checkpoint_every=3)
SECOND = TrainConfig(steps=4, batch=2, lr=0.01, seed=2, checkpoint_every=2)


def _prediff(seed: int = 0) -> PreDiff:
    """A tiny PreDiff: 8 × 8 one-channel frames, 2 × 4 × 4 latents."""
    torch.manual_seed(seed)
    autoencoder = FrameAutoencoder(1, 2, 2, 4)
    denoiser = ConvDenoiser(T_IN, T_OUT, (2, 4, 4), widths=(8, 8), blocks=1)
    return PreDiff(autoencoder, denoiser, ema_decay=0.9)


def _videos(count: int = 5) -> torch.Tensor:
    return torch.rand(count, T_IN + T_OUT, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def _pairs(videos: torch.Tensor) -> TensorDataset:
    return TensorDataset(videos[:, :T_IN], videos[:, T_IN:])


def _by_hand(prediff, pairs, frames, out, calibrate_batch, latent_batch):
    """The two-stage recipe written out with the Trainer alone."""
    if frames is None:
        stage1_data = pairs
        videos = torch.stack([torch.cat(pairs[i]) for i in range(len(pairs))])
    else:
        stage1_data = TensorDataset(frames.reshape(-1, 1, *frames.shape[2:]))
        videos = frames
    ae = prediff.autoencoder
    first = Trainer(ae, autoencoder_loss, FIRST, out / "ae", ae.config, quiet=True)
    first = first.fit(stage1_data)
    prediff.calibrate(videos, batch=calibrate_batch)
    latents = LatentPairs(prediff, pairs, batch=latent_batch)
    second = Trainer(
        prediff,
        diffusion_loss,
        SECOND,
        out / "dn",
        prediff.config,
        quiet=True,
        after_step=update_ema,
    )
    return first, second.fit(latents)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    mine, theirs = a.state_dict(), b.state_dict()
    assert list(mine) == list(theirs)
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key


@pytest.mark.parametrize("frames", [None, "every frame"], ids=["pairs", "frames"])
def test_train_prediff_is_the_two_stage_recipe_bitwise(tmp_path, frames):
    videos = _videos()
    frames = None if frames is None else torch.rand(3, 6, 1, 8, 8)
    pairs = _pairs(videos)
    expected = _prediff()
    reports = _by_hand(expected, pairs, frames, tmp_path / "hand", 2, 3)
    trained = _prediff()
    found = train_prediff(
        trained,
        pairs,
        autoencoder=FIRST,
        denoiser=SECOND,
        frames=frames,
        out=tmp_path / "run",
        quiet=True,
        calibrate_batch=2,
        latent_batch=3,
    )
    _same_state(trained, expected)
    assert int(trained.ema.n_averaged) == SECOND.steps  # the EMA followed every step
    for mine, theirs in zip(found, reports, strict=True):
        assert isinstance(mine, TrainReport) and mine.losses == theirs.losses
    assert not any(p.requires_grad for p in trained.autoencoder.parameters())  # calibrated
    for stage, hand in zip(STAGES, ("ae", "dn"), strict=True):
        mine = load_checkpoint(tmp_path / "run" / stage)
        theirs = load_checkpoint(tmp_path / "hand" / hand)
        assert mine["model_config"] == theirs["model_config"]
        assert mine["fingerprint"] == theirs["fingerprint"]
    assert load_checkpoint(tmp_path / "run" / "autoencoder")["model_config"] == (
        trained.autoencoder.config
    )
    assert load_checkpoint(tmp_path / "run" / "denoiser")["model_config"] == trained.config


def test_a_rerun_resumes_both_stages_and_a_lost_denoiser_run_trains_again_alone(tmp_path):
    pairs = _pairs(_videos())
    first = _prediff()
    train_prediff(first, pairs, autoencoder=FIRST, denoiser=SECOND, out=tmp_path, quiet=True)
    again = _prediff(seed=9)  # other initial weights: all of them come from the checkpoints
    reports = train_prediff(again, pairs, autoencoder=FIRST, denoiser=SECOND, out=tmp_path)
    assert [r.resumed_from for r in reports] == [FIRST.steps, SECOND.steps]
    _same_state(again, first)
    (tmp_path / "denoiser" / "checkpoint.pt").unlink()
    third = _prediff()
    reports = train_prediff(third, pairs, autoencoder=FIRST, denoiser=SECOND, out=tmp_path)
    assert [r.resumed_from for r in reports] == [FIRST.steps, 0]
    _same_state(third, first)


def test_the_folders_the_record_and_run_stage_are_the_callers(tmp_path):
    pairs = _pairs(_videos())
    seen = []

    def run_stage(stage, trainer, data):
        seen.append((stage, trainer.out, trainer.model, len(data)))
        return trainer.fit(data)

    prediff = _prediff()
    train_prediff(
        prediff,
        pairs,
        autoencoder=FIRST,
        denoiser=SECOND,
        out=tmp_path,
        folders=("ae-x", "dn-x"),
        quiet=True,
        record_autoencoder_config=False,
        run_stage=run_stage,
    )
    assert seen == [
        ("autoencoder", tmp_path / "ae-x", prediff.autoencoder, 5),
        ("denoiser", tmp_path / "dn-x", prediff, 5),
    ]
    assert load_checkpoint(tmp_path / "ae-x")["model_config"] is None
    assert load_checkpoint(tmp_path / "dn-x")["model_config"] == prediff.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae-x", "dn-x"]


def test_without_out_nothing_is_written_and_a_frozen_autoencoder_trains_again(tmp_path):
    pairs = _pairs(_videos())
    prediff = _prediff()
    prediff.calibrate(_videos(), batch=2)  # frozen, as a trained PreDiff's is
    before = [p.detach().clone() for p in prediff.autoencoder.parameters()]
    train_prediff(prediff, pairs, autoencoder=FIRST, denoiser=SECOND, quiet=True)
    after = list(prediff.autoencoder.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not any(Path.cwd().glob("autoencoder")) and not any(tmp_path.iterdir())


def test_run_stage_must_return_the_trainers_report(tmp_path):
    with pytest.raises(TypeError, match=r"^run_stage must return the TrainReport .* got dict for "):
        train_prediff(
            _prediff(),
            _pairs(_videos()),
            autoencoder=FIRST,
            denoiser=SECOND,
            out=tmp_path,
            quiet=True,
            run_stage=lambda stage, trainer, data: {"stage": stage},
        )


def _split(videos: torch.Tensor, context: int) -> TensorDataset:
    """Pairs of ``videos`` ``(N, T, C, H, W)``: its first ``context`` frames, then the rest."""
    return TensorDataset(videos[:, :context], videos[:, context:])


def _bad(**change):
    """train_prediff's arguments, one of them changed."""
    arguments = dict(
        prediff=_prediff(),
        pairs=_pairs(_videos()),
        autoencoder=FIRST,
        denoiser=SECOND,
        quiet=True,
    )
    return {**arguments, **change}


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(prediff=FrameAutoencoder(1, 2, 2, 4)), TypeError, "prediff must be a PreDiff"),
        (dict(pairs=[1, 2]), TypeError, r"pairs must yield \(context, target\) frames"),
        (dict(pairs=object()), TypeError, "pairs must be a dataset"),
        (dict(pairs=TensorDataset(torch.zeros(0, 2))), ValueError, "pairs must hold at least"),
        (
            dict(pairs=TensorDataset(torch.zeros(3, 2, 1, 8, 8))),
            TypeError,
            r"got a tuple of 1 \(shape \(2, 1, 8, 8\)\)",
        ),
        (
            dict(pairs=_split(_videos(), 3)),  # T_in = 3 for a PreDiff of T_in = 2
            ValueError,
            r"^pairs must yield contexts \(T_in, C, H, W\) this PreDiff takes \(T_in = 2, C = 1\), "
            r"got a tensor of shape \(3, 1, 8, 8\) as item 0's context: context must have 2 frame",
        ),
        (
            dict(pairs=_split(_videos(), 3), frames=_videos()),
            ValueError,
            r"^pairs must yield contexts .* got a tensor of shape \(3, 1, 8, 8\) as item 0's",
        ),
        (
            dict(pairs=_split(torch.rand(5, 4, 2, 8, 8), 2)),  # the autoencoder has 1 channel
            ValueError,
            r"^pairs must yield contexts .* shape \(2, 2, 8, 8\) as item 0's context: .* 1 channel",
        ),
        (
            dict(pairs=_split(torch.rand(5, 4, 1, 12, 12), 2)),  # the latents are 4 × 4
            ValueError,
            r"^pairs must yield contexts .* \(2, 1, 12, 12\) as item 0's context: .* 8 × 8 pixels",
        ),
        (
            dict(pairs=_split(torch.rand(5, 4, 1, 8, 8).int(), 2)),
            TypeError,
            r"^pairs must yield contexts .* item 0's context: .* floating-point",
        ),
        (
            dict(pairs=TensorDataset(torch.rand(5, 2, 1, 8, 8), torch.rand(5, 2, 1, 12, 12))),
            ValueError,
            r"^pairs must yield floating-point targets \(T_out, C, H, W\) = \(2, 1, 8, 8\) .* "
            r"got a tensor of shape \(2, 1, 12, 12\) of dtype torch.float32 as item 0's target",
        ),
        (
            dict(pairs=_split(torch.rand(5, 5, 1, 8, 8), 2)),  # T_out = 3 for T_out = 2
            ValueError,
            r"^pairs must yield floating-point targets .* = \(2, 1, 8, 8\) .* \(3, 1, 8, 8\)",
        ),
        (
            dict(pairs=TensorDataset(torch.rand(5, 2, 1, 8, 8), torch.rand(5, 2, 1, 8, 8).long())),
            ValueError,
            r"^pairs must yield floating-point targets .* of dtype torch.int64 as item 0's target",
        ),
        (
            dict(
                pairs=[(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))] * 2
                + [(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 12, 12))]
            ),
            ValueError,
            r"^pairs must yield \(context, target\) frames of one shape, item 0's \(2, 1, 8, 8\) "
            r"and \(2, 1, 8, 8\), got a tuple of 2 \(shape \(2, 1, 8, 8\), "
            r"shape \(2, 1, 12, 12\)\) as item 2",
        ),
        (
            dict(frames=torch.rand(3, 2, 1, 12, 12)),
            ValueError,
            r"^frames must be 8 × 8 pixels, as those of pairs, got shape \(3, 2, 1, 12, 12\)",
        ),
        (dict(autoencoder={"steps": 3}), TypeError, "autoencoder must be a TrainConfig"),
        (dict(denoiser=None), TypeError, "denoiser must be a TrainConfig, got NoneType"),
        (dict(frames=[[0.0]]), TypeError, "frames must be a tensor"),
        (dict(frames=torch.zeros(3, 2, 3, 8, 8)), ValueError, r"C = 1 channels .* \(3, 2, 3,"),
        (dict(frames=torch.zeros(6, 1, 8, 8)), ValueError, r"frames must be a tensor \(N, T"),
        (
            dict(frames=torch.zeros(3, 2, 1, 8, 8, dtype=torch.long)),
            TypeError,
            r"^frames must be a floating-point tensor, got dtype torch.int64$",
        ),
        (dict(out=3), TypeError, "out must be a folder path"),
        (dict(folders="autoencoder"), TypeError, "folders must be two non-empty folder names"),
        (dict(folders=("a", "")), TypeError, "folders must be two non-empty folder names"),
        (dict(folders=("a", "./a")), ValueError, "folders must name two different folders"),
        (dict(calibrate_batch=0), ValueError, "calibrate_batch"),
        (dict(latent_batch=1.5), TypeError, "latent_batch"),
        (dict(record_autoencoder_config=1), TypeError, "record_autoencoder_config must be True"),
        (dict(remedy=""), TypeError, "remedy must be a non-empty string"),
        (dict(quiet="no"), TypeError, "quiet must be True or False, got 'no'"),
        (dict(run_stage="fit"), TypeError, "run_stage must be callable"),
    ],
)
def test_bad_input_is_refused_by_name_before_anything_trains(tmp_path, change, error, message):
    arguments = _bad(**{"out": tmp_path / "run", **change})
    weights = [p.detach().clone() for p in arguments["prediff"].parameters()]
    with pytest.raises(error, match=message):
        train_prediff(**arguments)
    assert not (tmp_path / "run").exists()
    if isinstance(arguments["prediff"], PreDiff):
        after = list(arguments["prediff"].parameters())
        assert all(torch.equal(a, b) for a, b in zip(weights, after, strict=True))


@pytest.mark.parametrize("folder", ["../escaped", "inside/../../escaped", "ABSOLUTE"])
def test_a_stage_folder_outside_out_is_refused_and_nothing_is_written(tmp_path, folder):
    """``out / folder`` must stay in ``out``: an absolute name or one with ``..`` would not."""
    if folder == "ABSOLUTE":
        folder = str(tmp_path / "escaped")
    arguments = _bad(out=tmp_path / "run", folders=("autoencoder", folder))
    weights = [p.detach().clone() for p in arguments["prediff"].parameters()]
    with pytest.raises(ValueError, match=r"^folders must be folder names inside out \(relative, "):
        train_prediff(**arguments)
    assert list(tmp_path.iterdir()) == []
    after = list(arguments["prediff"].parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, after, strict=True))
