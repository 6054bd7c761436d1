"""The forecasters of ``conservation-forecast``: how each family is built, its training items,
the CPU budget plan and the training of every ensemble."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ... import models as surrogates  # FNO builders: neuralop loads on first use
from ..._checks import json_value
from ...io import atomic_write_text, strict_json
from ...models import Earthformer
from ...models.prediff import (
    ConvDenoiser,
    FrameAutoencoder,
    LatentPairs,
    PreDiff,
    autoencoder_loss,
    diffusion_loss,
)
from ...training import train_prediff
from ...training.checkpoint import REMEDY
from ...training.families import mse_loss
from .. import check_steps, offset_seed
from ..prediff import TimedStages, fit, stage_config
from .data import SAMPLING_FIELDS, STEP_FAMILIES, Scale, Units, Windows

MODELS = ("earthformer", "fno", "prediff")


class LastFrameIncrement(nn.Module):
    """A forecaster predicting the change from the last context frame's tracer:
    ``(B, T_in, C, H, W)`` → ``x[:, -1:, :1] + net(x)`` ``(B, T_out, 1, H, W)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:, :1] + self.net(x)


class StepIncrement(nn.Module):
    """A one-step emulator ``(B, C, H, W)`` → ``x + net(x)`` (rolled out for forecasts)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


EARTHFORMER_OPTIONS = {"periodic": True, "head_init": "icnr"}
"""The Earthformer's options on this periodic domain (``scale.earthformer`` may override them):
convolutions wrap around instead of meeting a zero wall at the frame's edge, and the
depth-to-space head starts every token's pixels equal; both artifacts showed in the members'
spread (``benchmarks/results/earthformer_artifacts.md``)."""
MEMBER_FOLDERS = {"earthformer": "earthformer-periodic+icnr", "fno": "fno-trajectories"}
"""Member ``i`` trains in the folder ``<name>-<i>``. The name carries the options, so that members
trained without them (same parameters, different padding) are never resumed into this model."""
PREDIFF_FOLDERS = {"autoencoder": "autoencoder-trajectories", "denoiser": "denoiser-trajectories"}
"""Trainer folders of PreDiff's two stages. The FNO's and the autoencoder's names say that they
train on whole trajectories (:func:`pairs`); the folders of the models trained on the windows'
context frames only (``fno-<i>``, ``autoencoder``, ``denoiser``, before 2026-12-06) are left as
they are, not resumed."""


def build(model: str, scale: Scale, channels: int, seed: int) -> nn.Module:
    """A fresh network of family ``model`` (``earthformer`` or ``fno``), weights from ``seed``."""
    torch.manual_seed(seed)
    if model == "earthformer":
        shapes = (scale.t_in, channels, scale.nx, scale.nx), (scale.t_out, 1, scale.nx, scale.nx)
        options = {**EARTHFORMER_OPTIONS, **scale.earthformer}
        return LastFrameIncrement(Earthformer(*shapes, **options))
    options = scale.fno
    modes = min(options["modes"], scale.nx // 2)
    fno = surrogates.fast_fno(
        n_modes=(modes, modes),
        in_channels=channels,
        out_channels=channels,
        hidden_channels=options["hidden"],
        n_layers=options["layers"],
    )
    return StepIncrement(fno)


def build_prediff(scale: Scale, seed: int) -> PreDiff:
    torch.manual_seed(seed)
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
    latent = autoencoder.latent_shape(scale.nx, scale.nx)
    denoiser = ConvDenoiser(scale.t_in, scale.t_out, latent, **scale.denoiser)
    return PreDiff(autoencoder, denoiser, ema_decay=scale.ema_decay)


def pairs(model: str, train: Windows, units: Units) -> TensorDataset:
    """Training items, all in network units: windows for Earthformer; for the FNO every step
    ``k → k + 1`` of every training trajectory once, states ``(C, H, W)``; for PreDiff's
    autoencoder every frame of them, tracer ``(1, 1, H, W)``."""
    if model not in MODELS:
        raise ValueError(f"pairs: model must be one of {MODELS}, got {model!r}")
    if model == "earthformer":
        return TensorDataset(units.to_net(train.context), units.to_net(train.target))
    if train.states is None:
        raise ValueError(
            f"pairs: train.states must hold the training trajectories (S, nt, C, H, W) for "
            f"{model!r} (Windows from data.windows), got None"
        )
    states = units.to_net(train.states)
    if model == "fno":
        return TensorDataset(states[:, :-1].flatten(0, 1), states[:, 1:].flatten(0, 1))
    return TensorDataset(states[:, :, :1].reshape(-1, 1, 1, *states.shape[-2:]))


def seconds_per_step(model: nn.Module, loss, data, batch: int, repeats: int = 2) -> float:
    """CPU seconds of one optimiser step (after one warm-up step), on a throw-away copy."""
    model = copy.deepcopy(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    items = [data[i % len(data)] for i in range(batch)]
    batched = tuple(torch.stack([item[k] for item in items]) for k in range(len(items[0])))
    batched = batched if len(batched) > 1 else batched[0]
    spent = []
    for _ in range(repeats + 1):
        started = time.process_time()
        optimiser.zero_grad()
        loss(model, batched).backward()
        optimiser.step()
        spent.append(time.process_time() - started)
    return max(min(spent[1:]), 1e-4)


def _plan_record(value: object) -> bool:
    """Whether ``value`` is a plan as :func:`plan` writes it: the ``scale`` (an object),
    ``s_per_step`` (``null`` or positive seconds by name) and a step count ``>= 1`` for each
    family in ``steps``."""
    if not isinstance(value, dict) or not isinstance(value.get("scale"), dict):
        return False
    rates = value.get("s_per_step", False)
    if rates is not None and not (
        isinstance(rates, dict)
        and all(
            isinstance(rate, (int, float))
            and not isinstance(rate, bool)
            and math.isfinite(rate)
            and rate > 0
            for rate in rates.values()
        )
    ):
        return False
    try:
        check_steps(value.get("steps"), STEP_FAMILIES)
    except (TypeError, ValueError):
        return False
    return value.get("steps") is not None


def plan(
    scale: Scale, train: Windows, units: Units, folder: Path, seed: int, remedy: str = REMEDY
) -> dict:
    """Step counts per model (``folder/plan.json``, measured once and reused on a rerun so the
    Trainer resumes the same runs): each family gets ``budget_s`` CPU seconds; a scale with
    ``steps`` sets them itself. A damaged ``plan.json`` is a one-line ``ValueError`` naming it:
    measured again, it would give other steps than the runs beside it were trained to;
    ``remedy`` says where else to train (physml's ``--out`` unless given)."""
    path = folder / "plan.json"
    if scale.steps is not None:  # fixed by the scale: nothing to measure
        result = {"scale": scale.setup(), "s_per_step": None, "steps": dict(scale.steps)}
    else:
        if path.exists():
            try:
                saved = json_value(
                    str(path),
                    path.read_text(encoding="utf-8", errors="replace"),
                    f"a training plan (scale, s_per_step, steps of {'/'.join(STEP_FAMILIES)})",
                    _plan_record,
                )
            except ValueError as error:
                raise ValueError(
                    f"{error}; the plan set the steps of the runs in {str(folder)!r}: delete it "
                    f"together with those runs to plan and train anew, or {remedy}"
                ) from None
            known = {k: v for k, v in saved["scale"].items() if k not in SAMPLING_FIELDS}
            if known == scale.training_setup():
                return saved
        result = _measured_plan(scale, train, units, seed)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, strict_json(result))
    return result


def _measured_plan(scale: Scale, train: Windows, units: Units, seed: int) -> dict:
    """Each family's CPU seconds per step, measured here, and the steps ``budget_s`` buys."""
    channels = train.context.shape[2]
    members = scale.members
    rate = {
        "earthformer": seconds_per_step(
            build("earthformer", scale, channels, seed),
            mse_loss,
            pairs("earthformer", train, units),
            scale.batch,
        ),
        "fno": seconds_per_step(
            build("fno", scale, channels, seed), mse_loss, pairs("fno", train, units), scale.batch
        ),
    }
    prediff = build_prediff(scale, seed)
    frames = pairs("prediff", train, units)
    rate["autoencoder"] = seconds_per_step(
        prediff.autoencoder, autoencoder_loss, frames, scale.batch
    )
    prediff.calibrate(frames.tensors[0][: 4 * scale.batch], batch=scale.batch)
    context = units.to_net(train.context[:, :, :1])
    latents = LatentPairs(
        prediff,
        TensorDataset(context[: scale.batch], units.to_net(train.target[: scale.batch])),
        batch=scale.batch,
    )
    rate["denoiser"] = seconds_per_step(prediff, diffusion_loss, latents, scale.batch)

    def steps(budget: float, per_step: float) -> int:
        return max(scale.min_steps, int(budget / per_step))

    share = scale.autoencoder_share
    return {
        "scale": scale.setup(),
        "s_per_step": rate,
        "steps": {
            "earthformer": steps(scale.budget_s / members, rate["earthformer"]),
            "fno": steps(scale.budget_s / members, rate["fno"]),
            "autoencoder": steps(share * scale.budget_s, rate["autoencoder"]),
            "denoiser": steps((1 - share) * scale.budget_s, rate["denoiser"]),
        },
    }


@dataclass
class Forecasters:
    """Trained ensembles of one variant, the CPU seconds spent on each family (NaN, unknown,
    where a reloaded finished run left no cost record) and the plan they were trained to
    (``plan.json``: the measured seconds per step and the steps)."""

    earthformer: list[nn.Module]
    fno: list[nn.Module]
    prediff: PreDiff
    train_s: dict
    plan: dict


def train(
    scale: Scale,
    train_windows: Windows,
    units: Units,
    folder: Path,
    seed: int,
    quiet: bool,
    remedy: str = REMEDY,
) -> Forecasters:
    """Every model of one variant, each in its own Trainer folder under ``folder``; ``remedy``:
    where else to train, in a refusal to resume one (see :func:`~physml.tasks.prediff.fit`)."""
    planned = plan(scale, train_windows, units, folder, seed, remedy)
    steps = planned["steps"]
    channels = train_windows.context.shape[2]
    spent: dict[str, float] = {}
    ensembles: dict[str, list[nn.Module]] = {}
    for model in ("earthformer", "fno"):
        data = pairs(model, train_windows, units)
        members = []
        for i in range(scale.members):
            net = build(model, scale, channels, offset_seed(seed, i))
            run = fit(
                net,
                mse_loss,
                data,
                steps[model],
                scale.batch,
                scale.lr,
                offset_seed(seed, i),
                folder / f"{MEMBER_FOLDERS[model]}-{i}",
                quiet,
                remedy=remedy,
            )
            members.append(run.model.eval())
            spent[model] = spent.get(model, 0.0) + run.train_s
        ensembles[model] = members
    prediff = build_prediff(scale, seed)
    stages = TimedStages()
    train_prediff(
        prediff,
        TensorDataset(
            units.to_net(train_windows.context[:, :, :1]), units.to_net(train_windows.target)
        ),
        autoencoder=stage_config(steps["autoencoder"], scale.batch, scale.lr, seed),
        denoiser=stage_config(steps["denoiser"], scale.batch, scale.lr, seed),
        frames=pairs("prediff", train_windows, units).tensors[0],
        out=folder,
        folders=(PREDIFF_FOLDERS["autoencoder"], PREDIFF_FOLDERS["denoiser"]),
        quiet=quiet,
        calibrate_batch=scale.batch,
        latent_batch=scale.batch,
        record_autoencoder_config=False,
        remedy=remedy,
        run_stage=stages,
    )
    stage1, stage2 = stages.trained["autoencoder"], stages.trained["denoiser"]
    spent["prediff"] = stage1.train_s + stage2.train_s
    return Forecasters(ensembles["earthformer"], ensembles["fno"], prediff.eval(), spent, planned)
