"""Sampling PreDiff with and without knowledge control, the scores of an ensemble, and the
issue's targets."""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pdes.checks import positive_int

from ... import metrics
from ..._checks import flag
from ..._progress import progress_bar
from ...constraints import Constrained, KnowledgeControl, constrain
from ...io import load_torch_file, save_torch_file
from ...metrics import bootstrap_se, spread_skill
from ...models.forecasting import score_forecast
from ...models.prediff import (
    PreDiff,
)
from ...seeds import derived_seed
from .data import FrameIntensity, Scale, mean_intensity


@dataclass
class EnsembleForecast:
    """Members ``(M, N, T_out, 1, H, W)`` of ``N`` contexts and the sampling time (s)."""

    samples: torch.Tensor
    seconds: float


SEEDING = "seed-sequence-v1"
"""The scheme that gives each sampling chunk its seed (:func:`chunk_seed`), recorded with the
chunks :func:`sample` keeps; chunks kept under another scheme are drawn again."""
DRAW_AGAIN = "delete it to draw that chunk again"
"""What the refusal of a damaged kept chunk advises."""


def chunk_seed(seed: int, index: int) -> int:
    """The sampling seed (63 bits) of chunk ``index`` of a call with ``seed``:
    :func:`physml.seeds.derived_seed` ``(seed, index)``, so no chunk of one seed repeats a chunk
    of another."""
    return derived_seed(
        positive_int("seed", seed, minimum=0), positive_int("index", index, minimum=0)
    )


def sample(
    model: nn.Module,
    context: torch.Tensor,
    members: int,
    steps: int,
    seed: int,
    batch: int = 64,
    targets: Callable[[slice], list] | None = None,
    keep: Path | None = None,
    reverse: bool = False,
    progress: bool = True,
) -> EnsembleForecast:
    """``model(context, members=, steps=, seed=, progress=)`` (a PreDiff or a constrained one)
    over chunks of about ``batch / members`` contexts, chunk ``k`` with seed
    :func:`~physml.tasks.prediff.evaluation.chunk_seed` ``(seed, k)``; ``targets(chunk)`` gives the
    per-call constraints (``with_target``) of each chunk. ``keep``: a folder where each chunk's
    samples and seconds (with ``seed``, ``steps`` and
    :data:`~physml.tasks.prediff.evaluation.SEEDING`) are written as they come (``<index>.pt``) and
    read back on a rerun, so a killed run resumes at the chunk it stopped in; a chunk kept by a call
    with another seed or steps is refused, one kept without the seeding scheme (older versions) is
    drawn again. ``reverse`` works through the chunks last first (the same result), so a second
    process sharing ``keep`` meets the first in the middle. Each chunk runs on the model's device;
    the samples come back on the CPU. A context's samples depend on its chunk (``batch``,
    ``members`` and its place in ``context``), as :meth:`~physml.models.prediff.PreDiff.sample`'s
    depend on the batch. ``progress`` shows a bar of the chunks (on stderr, when a terminal or a
    Jupyter kernel's) and is handed to ``model`` where its call takes it (PreDiff's, whose bar of
    the DDIM steps shows below it); a sampler of one's own may keep the call
    ``(context, members=, steps=, seed=)``. The samples are the same either way."""
    seed = positive_int("seed", seed, 0)
    members = positive_int("members", members)
    progress = flag("progress", progress)
    passes_progress = _takes_progress(model)
    per_call = max(1, batch // members)
    starts = list(range(0, len(context), per_call))
    device = _device_of(model)
    keep = None if keep is None else Path(keep)
    parts: list[torch.Tensor | None] = [None] * len(starts)
    seconds = 0.0
    warned = False
    order = reversed(range(len(starts))) if reverse else range(len(starts))
    for index in progress_bar(order, progress, "sampling chunks", total=len(starts)):
        stored = None if keep is None else keep / f"{index}.pt"
        chunk = slice(starts[index], starts[index] + per_call)
        saved = None
        if stored is not None and stored.exists():
            saved = load_torch_file(stored, "a kept chunk of samples", "keep", DRAW_AGAIN)
            if saved.get("seeding") != SEEDING:
                if not warned:
                    warnings.warn(
                        f"keep: {str(keep)!r} holds chunks without the seeding scheme "
                        f"{SEEDING!r} (kept by an older version, whose chunks overlapped "
                        "between seeds): they are drawn again and overwritten",
                        stacklevel=2,
                    )
                    warned = True
                saved = None
        if saved is not None:
            expected = (members, len(range(*chunk.indices(len(context)))))
            if tuple(saved["samples"].shape[:2]) != expected:
                raise ValueError(
                    f"keep: {str(stored)!r} holds samples of shape "
                    f"{tuple(saved['samples'].shape)}, expected (members, contexts) = {expected} "
                    "for this call; it comes from another call: use another keep folder"
                )
            if (saved["seed"], saved["steps"]) != (seed, steps):
                raise ValueError(
                    f"keep: {str(stored)!r} holds samples of seed {saved['seed']} and "
                    f"{saved['steps']} steps, expected seed {seed} and {steps} steps for this "
                    "call; it comes from another call: use another keep folder"
                )
            parts[index] = saved["samples"]
            seconds += float(saved["seconds"])
            continue
        options = dict(members=members, steps=steps, seed=chunk_seed(seed, index))
        if passes_progress:
            options["progress"] = progress
        if targets is not None:
            options["constraints"] = targets(chunk)
        started = time.perf_counter()
        parts[index] = model(context[chunk].to(device), **options).samples.cpu()
        taken = time.perf_counter() - started
        seconds += taken
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            save_torch_file(
                stored,
                {
                    "samples": parts[index],
                    "seconds": torch.tensor(taken, dtype=torch.float64),
                    "seed": seed,
                    "steps": steps,
                    "seeding": SEEDING,
                },
            )
    return EnsembleForecast(torch.cat(parts, dim=1), seconds)


def _takes_progress(model: nn.Module) -> bool:
    """Whether calling ``model`` reaches a call that takes ``progress=`` (by name, or as any
    keyword): its ``forward``, or through :func:`~physml.constraints.constrain` its inner
    model's ``sample`` (sampler-seam constraints) or ``forward``. ``False`` where Python cannot
    tell the signature."""
    call = model.forward
    while isinstance(getattr(call, "__self__", None), Constrained):
        layer = call.__self__
        call = layer.model.sample if layer.guided else getattr(layer.model, "forward", layer.model)
    try:
        parameters = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        or (
            parameter.name == "progress" and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY
        )
        for parameter in parameters
    )


def _device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer; the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _frame_crps(samples: torch.Tensor, truth: torch.Tensor, fair: bool = False) -> float:
    """Ensemble CRPS of members ``samples (M, N, T, C, H, W)`` against ``truth (N, T, C, H, W)``
    summed over each frame's pixels, averaged over frames and videos (32 videos at a time: the
    sort copies the members)."""
    per_point = metrics.crps_ensemble_in_chunks(samples, truth, fair, 32)
    return float(per_point.sum((-3, -2, -1)).mean())


def evaluate_ensemble(
    forecast: EnsembleForecast,
    truth: torch.Tensor,
    energy0: torch.Tensor,
    judge: nn.Module,
    judge_floor: float,
    seed: int = 0,
) -> dict:
    """The columns of a forecast row: ``mse``, ``mae``, ``ssim`` of the ensemble mean (frame
    sums, [0, 1] scale), ``mse_member`` / ``ssim_member`` of member 0, ``crps`` (plain ensemble
    CRPS summed over a frame's pixels: the MAE for one member), ``crps_fair`` (its unbiased form,
    NaN for one member: :func:`~physml.metrics.crps_ensemble`), ``spread_skill``,
    ``energy_error`` (judge, mean over members and contexts) with its bootstrap ``_se`` over
    contexts, ``energy_per_lead`` ``|E_judge − E₀|``, ``fwd_ms`` per context."""
    samples = forecast.samples
    if isinstance(judge, nn.Module):
        judge.eval()
    mean = samples.mean(0)
    ensemble, member = score_forecast(mean, truth), score_forecast(samples[0], truth)
    errors = metrics.energy_error(samples, energy0, judge, reduction="none")  # (M, N)
    with torch.no_grad():
        judged = judge(samples.flatten(0, 1)).double().reshape(*samples.shape[:3])
    per_lead = (judged - energy0.double()[None, :, None]).abs().mean((0, 1))
    return {
        "mse": ensemble.mse,
        "mae": ensemble.mae,
        "ssim": ensemble.ssim,
        "mse_member": member.mse,
        "ssim_member": member.ssim,
        "crps": _frame_crps(samples, truth),
        "crps_fair": _frame_crps(samples, truth, fair=True) if samples.shape[0] > 1 else math.nan,
        "spread_skill": spread_skill(samples, truth) if samples.shape[0] > 1 else 0.0,
        "energy_error": float(errors.mean()),
        "energy_error_se": bootstrap_se(errors.mean(0), seed),
        "judge_floor": judge_floor,
        "energy_per_lead": per_lead.tolist(),
        "fwd_ms": 1000.0 * forecast.seconds / samples.shape[1],
    }


def evaluate_deterministic(
    prediction: torch.Tensor,
    truth: torch.Tensor,
    energy0: torch.Tensor,
    judge: nn.Module,
    judge_floor: float,
    seconds: float,
    seed: int = 0,
) -> dict:
    """:func:`evaluate_ensemble` of a one-member forecast ``(N, T, 1, H, W)`` (persistence, a
    deterministic forecaster): CRPS is its MAE, spread-skill 0, member = ensemble."""
    row = evaluate_ensemble(
        EnsembleForecast(prediction[None], seconds), truth, energy0, judge, judge_floor, seed
    )
    row["spread_skill"] = 0.0
    return row


def judge_error(judge: nn.Module, truth: torch.Tensor, energy0: torch.Tensor, seed: int = 0):
    """The judge's error on true target frames: ``(floor, se, per lead)``; the noise floor every
    energy error is read against."""
    judge.eval()
    errors = metrics.energy_error(truth, energy0, judge, reduction="none")
    with torch.no_grad():
        judged = judge(truth).double()
    per_lead = (judged - energy0.double()[:, None]).abs().mean(0)
    return float(errors.mean()), bootstrap_se(errors, seed), per_lead.tolist()


def energy_control(regressor: nn.Module, energy0: torch.Tensor, scale: float) -> KnowledgeControl:
    """Knowledge control toward the context's energy ``E₀`` ``(N,)`` (per-call targets:
    :meth:`~physml.constraints.KnowledgeControl.with_target`)."""
    regressor.eval()
    return KnowledgeControl(regressor, energy0, scale, on="noisy")


def frame_energy_control(guide: nn.Module, energy0: torch.Tensor, scale: float) -> KnowledgeControl:
    """Knowledge control toward ``E₀`` ``(N,)`` read by a frame-space regressor ``guide`` (frames
    ``(N, T, C, H, W)`` → energies ``(N, T)``) on the decoded denoised frames of every step,
    with the normalised (Gauss–Newton) step."""
    guide.eval().requires_grad_(False)
    return KnowledgeControl(guide, energy0, scale, on="frames", normalized=True)


def controlled_sample(
    prediff: PreDiff,
    control: KnowledgeControl,
    context: torch.Tensor,
    target: torch.Tensor,
    members: int,
    steps: int,
    seed: int,
    batch: int = 64,
    keep: Path | None = None,
    reverse: bool = False,
    progress: bool = True,
) -> EnsembleForecast:
    """:func:`sample` of ``constrain(prediff, control)`` with ``target[chunk]`` per chunk
    (``keep``, ``reverse``: resumable, shareable chunks; ``progress``: bars, as in
    :func:`sample`)."""
    guided = constrain(prediff, control)
    return sample(
        guided,
        context,
        members,
        steps,
        seed,
        batch,
        targets=lambda chunk: [control.with_target(target[chunk])],
        keep=keep,
        reverse=reverse,
        progress=progress,
    )


def best_lambda(sweep: list[dict], reference: dict) -> dict:
    """The sweep row with the smallest energy error among those with ``mse <= 1.02 ×`` and
    ``ssim >= − 0.01`` of ``reference`` (unguided, same contexts); else the smallest error."""
    if not sweep:
        raise ValueError("sweep must hold at least one row, got none")
    allowed = [
        row
        for row in sweep
        if row["mse"] <= 1.02 * reference["mse"] and row["ssim"] >= reference["ssim"] - 0.01
    ]
    return min(allowed or sweep, key=lambda row: row["energy_error"])


def done_when(
    plain: dict, controlled: dict, intensity: list[dict]
) -> list[tuple[str, float, str, bool]]:
    """The issue's targets: ``(what, value, target, met)`` (energy error halved at no cost in
    MSE / SSIM; intensity ≥ 3× closer for n ∈ {−2, 0, 2})."""
    checks = [
        (
            "energy_error kc / prediff",
            controlled["energy_error"] / plain["energy_error"],
            "<= 0.5",
            controlled["energy_error"] <= 0.5 * plain["energy_error"],
        ),
        (
            "mse kc / prediff",
            controlled["mse"] / plain["mse"],
            "<= 1.02",
            controlled["mse"] <= 1.02 * plain["mse"],
        ),
        (
            "ssim kc - prediff",
            controlled["ssim"] - plain["ssim"],
            ">= -0.01",
            controlled["ssim"] >= plain["ssim"] - 0.01,
        ),
        (
            "prediff energy_error / judge_floor",
            plain["energy_error"] / plain["judge_floor"],
            "> 1.5 (else sharpen the judge)",
            plain["energy_error"] > 1.5 * plain["judge_floor"],
        ),
    ]
    misses = {(row["method"], row["n"]): abs(row["achieved"] - row["asked"]) for row in intensity}
    for n in (-2, 0, 2):
        if ("prediff", n) in misses and ("prediff-kc", n) in misses:
            ratio = misses[("prediff", n)] / max(misses[("prediff-kc", n)], 1e-300)
            checks.append((f"intensity n={n}: miss prediff / miss kc", ratio, ">= 3", ratio >= 3))
    return checks


def intensity_rows(
    prediff: PreDiff,
    context: torch.Tensor,
    stats: tuple[float, float],
    scale: Scale,
    lam: float,
    seed: int,
    case: str = "intensity",
    keep: Path | None = None,
    reverse: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Rows ``case, method, n, asked, achieved`` for PreDiff (unguided, one draw for every n)
    and PreDiff-KC steered to ``μ + n σ`` of the mean target intensity with ``λ = lam``.
    ``keep``, ``reverse``: resumable, shareable chunks as in :func:`sample` (a subfolder per
    draw, named by n and λ, so calls with other λ on the same contexts share the unguided draw;
    ``reverse`` also takes the n last first); ``progress``: bars, as in :func:`sample`."""
    mu, sigma = stats
    members, steps = scale.intensity_members, scale.ddim_steps

    def kept(name: str) -> Path | None:
        return None if keep is None else Path(keep) / name

    plain = sample(
        prediff, context, members, steps, seed, scale.sample_batch, keep=kept("plain"),
        reverse=reverse, progress=progress,
    )  # fmt: skip
    achieved_plain = float(mean_intensity(plain.samples).mean())
    control = KnowledgeControl(FrameIntensity(mu, sigma), torch.zeros(1), lam, on="frames")
    found = {}
    for n in reversed(scale.intensity_n) if reverse else scale.intensity_n:
        target = torch.full((len(context),), float(n))
        found[n] = controlled_sample(
            prediff, control, context, target, members, steps, seed, scale.sample_batch,
            keep=kept(f"n{n:g}-lambda{lam:g}"), reverse=reverse, progress=progress,
        )  # fmt: skip
    rows = []
    for n in scale.intensity_n:
        asked = mu + n * sigma
        guided = found[n]
        achieved = float(mean_intensity(guided.samples).mean())
        for method, value, seconds in (
            ("prediff", achieved_plain, plain.seconds),
            ("prediff-kc", achieved, guided.seconds),
        ):
            rows.append(
                {
                    "case": case,
                    "method": method,
                    "n": n,
                    "lambda": lam if method == "prediff-kc" else 0.0,
                    "asked": asked,
                    "achieved": value,
                    "miss_sigma": abs(value - asked) / sigma,
                    "fwd_ms": 1000.0 * seconds / len(context),
                }
            )
    return rows
