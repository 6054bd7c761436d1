"""Exact mass on forecast ensembles: Earthformer, FNO and PreDiff on a tracer in a 2-D flow.

Data: the passive tracer of ``ns-tracer`` (total mass conserved) and ``ns-tracer-source`` (a
known pulsed source adds ``A(t)``); ``T_in`` tracer frames (velocity as extra input channels
when ``Scale.velocity``) → ``T_out`` tracer frames. The total each forecast must carry is known
at forecast time: the mass of the last context frame plus the source's release since then.

Forecasters, each an ensemble, trained by :class:`physml.training.Trainer` (resumable, one folder
per model) on an equal CPU budget per family, step counts from a measured time per step: a deep
ensemble of Earthformers (seeds ``offset_seed(seed, i)``; periodic padding and an ICNR head,
:data:`~physml.tasks.conservation_forecast.models.EARTHFORMER_OPTIONS`), an FNO-2D one-step model
rolled out (one per seed; it trains on every step of the training trajectories once) and PreDiff
(its own samples; knowledge control with the total mass of the decoded frames, ``on="frames"``,
``normalized=True``: a Gauss–Newton step in ``z_t``, which DDIM applies as a score, so λ is not the
fraction of the miss removed per step and is chosen on validation windows, :func:`best_kc_scale`).
Methods on every ensemble, all through :func:`physml.constrain`: ``raw``; ``hardc`` (each member
projected, ``mass_conservation(projection="euclidean")``); ``probconserv`` (the ensemble update);
``probconserv_shrunk`` (the update with the members' covariance shrunk toward its variances,
:data:`~physml.tasks.conservation_forecast.methods.SHRINKAGE`); for PreDiff ``kc`` and
``kc-probconserv``; and each followed by ``NonNegative(keep=...)`` (suffix ``-nonneg``), which keeps
every member's mass, in the method's own metric (the ensemble's variance after ``raw`` and ``kc``,
:func:`nonnegative`).

What ``benchmarks/forecast_conservation.py`` (and the studies beside it) share, one module per
concern, and the toy-size task ``conservation-forecast``:

- :mod:`.data`: the run's :class:`Scale` (:data:`~physml.tasks.conservation_forecast.data.TOY`,
  :data:`~physml.tasks.conservation_forecast.data.FULL`), the forecast
  :class:`Windows` of each split, the network :class:`Units`;
- :mod:`.models`: each family's build, training items, the CPU budget :func:`plan` and
  :func:`train` (every ensemble, resumable);
- :mod:`.forecasts`: the ensembles ``(M, N, T_out, 1, H, W)`` the trained models give;
- :mod:`.methods`: :func:`constrained` (every method through :func:`physml.constrain`),
  :func:`score` (:func:`mean_crps`), :func:`forecast_rows`, :func:`done_when`;
- :mod:`.experiment`: one variant end to end (:func:`run_variant`);
- :mod:`.plots`: the figures.
"""

from __future__ import annotations

from ...io import atomic_write_text, strict_json
from .. import Context, Row, Task, register, run_label, run_settings
from ..prediff import fit
from .data import (
    F64,
    FULL,
    SAMPLING_FIELDS,
    SIZES,
    TOY,
    VARIANTS,
    Scale,
    Units,
    Windows,
    generate,
    grid_of,
    windows,
)
from .experiment import best_kc_scale, data_and_models, open_variant, run_variant
from .forecasts import (
    deep_ensemble,
    mass_of,
    member_forecasts,
    prediff_ensembles,
    rollout_ensemble,
)
from .methods import (
    CORRECTED,
    EXACT,
    METHODS,
    PREDIFF_METHODS,
    SHRINKAGE,
    UNIFORM_CV,
    UPDATES,
    conservation_of,
    constrained,
    correction_shape,
    done_when,
    error_spread,
    forecast_rows,
    frame_spearman,
    mean_crps,
    nonnegative,
    score,
)
from .models import (
    EARTHFORMER_OPTIONS,
    MEMBER_FOLDERS,
    MODELS,
    PREDIFF_FOLDERS,
    Forecasters,
    LastFrameIncrement,
    StepIncrement,
    build,
    build_prediff,
    mse_loss,
    pairs,
    plan,
    seconds_per_step,
    train,
)
from .plots import plot_correction, plot_frame, plot_mass

NAME = "conservation-forecast"
__all__ = [
    "CORRECTED",
    "EARTHFORMER_OPTIONS",
    "EXACT",
    "F64",
    "FULL",
    "Forecasters",
    "LastFrameIncrement",
    "MEMBER_FOLDERS",
    "METHODS",
    "MODELS",
    "NAME",
    "PREDIFF_FOLDERS",
    "PREDIFF_METHODS",
    "SAMPLING_FIELDS",
    "SHRINKAGE",
    "SIZES",
    "Scale",
    "StepIncrement",
    "TOY",
    "UNIFORM_CV",
    "UPDATES",
    "Units",
    "VARIANTS",
    "Windows",
    "best_kc_scale",
    "build",
    "build_prediff",
    "conservation_of",
    "constrained",
    "correction_shape",
    "data_and_models",
    "deep_ensemble",
    "done_when",
    "error_spread",
    "fit",
    "forecast_rows",
    "frame_spearman",
    "generate",
    "grid_of",
    "mass_of",
    "mean_crps",
    "member_forecasts",
    "mse_loss",
    "nonnegative",
    "open_variant",
    "pairs",
    "plan",
    "plot_correction",
    "plot_frame",
    "plot_mass",
    "prediff_ensembles",
    "rollout_ensemble",
    "run",
    "run_variant",
    "target_rows",
    "score",
    "seconds_per_step",
    "train",
    "windows",
]


def target_rows(checks: list[dict], size: str) -> list[Row]:
    """The rows of :func:`done_when`'s checks: exact mass and non-negativity judged at every
    size (so is the feasibility of non-negativity after an update: its members carry the known,
    positive mass), the other targets at full size only (reported beside their value at toy
    size; a ``raw`` or ``kc`` member's total below zero, where non-negativity is infeasible, says
    how well the forecaster was trained)."""
    feasible = tuple(f"feasible {name}" for name in CORRECTED)
    rows = []
    for check in checks:
        exact = check["what"].startswith(("ce_abs hardc", "ce_abs probconserv", "ce_abs kc-prob"))
        nonneg = check["what"].startswith(("neg_fraction", "ce_abs change", *feasible))
        judged = exact or nonneg or size == "full"
        target = check["target"] if judged else f"{check['target']} at full size"
        rows.append(
            Row(
                NAME,
                check["case"],
                check["what"],
                check["value"],
                target,
                check["met"] if judged else None,
            )
        )
    return rows


def run(context: Context) -> list[Row]:
    """Both variants at the context's size (toy in the demo): rows, figures and
    ``summary-<size>-seed<seed>.json`` under ``out/conservation-forecast/``
    (:func:`~physml.tasks.run_label`), checkpoints in its ``<size>-seed<seed>/`` folder."""
    scale = SIZES[context.size]
    folder = context.out / NAME
    label = run_label(context)
    work = folder / label
    rows, summary = [], {"settings": run_settings(context), "scale": scale.setup(), "rows": []}
    for variant in VARIANTS:
        found_rows, found = run_variant(variant, scale, work, context.seed, context.quiet)
        summary["rows"] += found_rows
        plot_mass(folder / f"mass-{variant}-{label}.png", found)
        plot_frame(folder / f"frame-{variant}-{label}.png", found)
        plot_correction(folder / f"correction-{variant}-{label}.png", found)
        for row in found_rows:
            if "error" in row:
                continue
            for metric in ("ce_abs", "mse", "crps", "neg_fraction"):
                rows.append(Row(NAME, row["case"], f"{metric} {row['method']}", row[metric]))
    checks = done_when(summary["rows"])
    summary["done_when"] = checks
    rows += target_rows(checks, context.size)
    atomic_write_text(folder / f"summary-{label}.json", strict_json(summary))
    return rows


register(
    Task(
        name=NAME,
        description=(
            "Exact mass on forecast ensembles (Earthformer, FNO rollout, PreDiff) of a tracer in "
            "a 2-D flow: projection, the ensemble update, knowledge control, non-negativity"
        ),
        run=run,
        cpu_only=True,  # its forecasters train and sample on the CPU
        figures={
            f"{NAME}/mass-*.png": "{name}: total tracer mass over lead time for the truth and "
            "every method (members' mean ± spread), one panel per forecaster.",
            f"{NAME}/frame-*.png": "{name}: one forecast frame (last lead): the truth and one "
            "Earthformer member after each method.",
            f"{NAME}/correction-*.png": "{name}: the raw ensemble's standard deviation and the "
            "absolute error of its mean (|ensemble mean error|), then where each method moved "
            "mass (mean |correction| over members, one colour scale from 0); last lead, one "
            "Earthformer test window.",
        },
    )
)
