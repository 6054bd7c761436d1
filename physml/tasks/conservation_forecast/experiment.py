"""One variant end to end: data, trained models, the knowledge-control λ, every ensemble and
every method."""

from __future__ import annotations

import time
from pathlib import Path

from ...models.prediff import PreDiff
from ...training.checkpoint import REMEDY
from .data import Scale, Units, Windows, generate, grid_of, windows
from .forecasts import member_forecasts, prediff_ensembles
from .methods import forecast_rows, score
from .models import MODELS, Forecasters, train


def best_kc_scale(
    prediff: PreDiff, validation: Windows, scale: Scale, units: Units, seed: int
) -> tuple[float, list[dict]]:
    """The λ of ``scale.kc_scales`` with the smallest mass error on validation windows among
    those keeping ``mse <= 1.02 ×`` the unguided one (else the smallest error)."""
    if len(scale.kc_scales) == 1:
        return float(scale.kc_scales[0]), []
    grid, sweep, reference = grid_of(scale), [], None
    for lam in scale.kc_scales:
        ensembles = prediff_ensembles(prediff, validation, scale, units, lam, seed)
        if reference is None:
            reference = score(ensembles["raw"][0], validation, grid, 0.0)
        scored = score(ensembles["kc"][0], validation, grid, 0.0)
        sweep.append({"lambda": lam, "ce_abs": scored["ce_abs"], "mse": scored["mse"]})
    allowed = [row for row in sweep if row["mse"] <= 1.02 * reference["mse"]]
    return float(min(allowed or sweep, key=lambda row: row["ce_abs"])["lambda"]), sweep


def open_variant(
    variant: str, scale: Scale, work: Path, seed: int, quiet: bool
) -> tuple[dict[str, Windows], Units]:
    """The variant's data (generated once under ``work``) and the folder ``work/<variant>`` for
    its models (created): ``({"train"|"validation"|"test": windows}, units)``."""
    (work / variant).mkdir(parents=True, exist_ok=True)
    path = generate(variant, scale, work, seed, quiet)
    split = {name: windows(path, scale, name) for name in ("train", "validation", "test")}
    return split, Units.of(split["train"])


def data_and_models(
    variant: str, scale: Scale, work: Path, seed: int, quiet: bool, remedy: str = REMEDY
) -> tuple[dict[str, Windows], Units, Forecasters]:
    """The variant's data and trained models (both resumable under ``work``, which is created):
    ``({"train"|"validation"|"test": windows}, units, models)``; ``remedy``: where else to
    train, in a refusal to resume a model (see
    :func:`~physml.tasks.conservation_forecast.models.train`)."""
    split, units = open_variant(variant, scale, work, seed, quiet)
    models = train(scale, split["train"], units, work / variant, seed, quiet, remedy)
    return split, units, models


def run_variant(
    variant: str, scale: Scale, work: Path, seed: int, quiet: bool, remedy: str = REMEDY
) -> tuple[list[dict], dict]:
    """Data, training (resumable under ``work/<variant>``; ``remedy`` as in
    :func:`data_and_models`), every ensemble and every method: the rows and what the figures
    need."""
    split, units, models = data_and_models(variant, scale, work, seed, quiet, remedy)
    test, grid = split["test"], grid_of(scale)
    lam, sweep = best_kc_scale(models.prediff, split["validation"], scale, units, seed)
    ensembles = {}
    for model in ("earthformer", "fno"):
        started = time.perf_counter()
        members = getattr(models, model)
        samples = member_forecasts(model, members, test.context, scale.t_out, units)
        ensembles[model] = {"raw": (samples, time.perf_counter() - started)}
    ensembles["prediff"] = prediff_ensembles(models.prediff, test, scale, units, lam, seed)
    rows, samples = [], {}
    for model in MODELS:
        extra = {"train_s": models.train_s[model]}
        if model == "prediff":
            extra["kc_lambda"] = lam
        found, samples[model] = forecast_rows(variant, model, ensembles[model], test, grid, extra)
        rows += found
    details = {"test": test, "samples": samples, "sweep": sweep, "grid": grid}
    return rows, {**details, "plan": models.plan}
