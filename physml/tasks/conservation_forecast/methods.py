"""The methods on an ensemble (all through :func:`physml.constrain`), their scores and the
issue's targets."""

from __future__ import annotations

import time

import torch
from torch import nn

from pdes.grid import Grid2D

from ... import metrics
from ...constraints import NonNegative, constrain, mass_conservation
from ...errors import ConstraintError
from ...outputs import Ensemble
from .data import F64, Windows

EXACT = 1e-6  # ce_abs a HardC / ProbConserv row must meet (relative to the total mass)


SHRINKAGE = 1.0
"""The weight of the members' own variances in the update's covariance (``probconserv_shrunk``).
At 1 each point moves in proportion to its spread, whatever the members' correlations. Where the
members' differences carry mass coherently (``gᵀΣg ≫ Σᵢ Σᵢᵢ gᵢ²``, as on the forecasters here)
only α near 1 changes the gain much; an unrecorded probe at 0.5 stayed close to
``probconserv``."""
#: The methods with a mass update of their own, each with its ``(projection, shrinkage)``.
UPDATES = {"hardc": ("euclidean", 0.0), "probconserv": ("covariance", 0.0)}
UPDATES["probconserv_shrunk"] = ("covariance", SHRINKAGE)


#: The methods without a mass update of their own.
NOT_UPDATES = ("raw", "kc", "nonneg")


def conservation_of(method: str, known: torch.Tensor, grid: Grid2D):
    """The mass row toward ``known (N, T)`` in ``method``'s metric: its own for one of
    :data:`~physml.tasks.conservation_forecast.methods.UPDATES`, the ensemble's variance for one of
    :data:`~physml.tasks.conservation_forecast.methods.NOT_UPDATES`."""
    if method not in UPDATES and method not in NOT_UPDATES:
        raise ValueError(
            f"method must be one of {[*UPDATES, *NOT_UPDATES]} (with '-nonneg' appended, or "
            f"'nonneg' alone), got {method!r}"
        )
    projection, shrinkage = UPDATES.get(method, ("covariance", 0.0))
    return mass_conservation(grid, known[..., None], projection=projection, shrinkage=shrinkage)


def constrained(samples: torch.Tensor, known: torch.Tensor, grid: Grid2D, method: str):
    """``samples`` ``(M, N, T, 1, H, W)`` through ``method`` (one of
    :data:`~physml.tasks.conservation_forecast.methods.UPDATES`, with ``-nonneg`` appended, or
    ``nonneg`` alone) toward the totals ``known (N, T)``: ``(samples, seconds)``."""
    _check_known(samples, known)
    base, dash, nonneg = method.partition("-")
    if dash and nonneg != "nonneg":
        raise ValueError(f"method: only '-nonneg' may follow the method's name, got {method!r}")
    conservation = conservation_of(base, known, grid)
    steps = [conservation] if base in UPDATES else []
    if nonneg or base == "nonneg":
        steps.append(NonNegative(keep=conservation))
    return _applied(samples, steps)


def nonnegative(samples: torch.Tensor, known: torch.Tensor, grid: Grid2D, after: str):
    """``samples`` ``(M, N, T, 1, H, W)``, the output of method ``after``, made non-negative
    with each member's mass kept, in ``after``'s metric (:func:`conservation_of`; the same as
    ``constrained(..., after + "-nonneg")`` without the update again): ``(samples, seconds)``.
    ``known (N, T)``, the totals ``after`` moved toward, is only checked against ``samples``:
    each member keeps its own mass."""
    _check_known(samples, known)
    return _applied(samples, [NonNegative(keep=conservation_of(after, known, grid))])


def _check_known(samples: object, known: object) -> None:
    """``samples`` must be ``(M, N, T, 1, H, W)`` and ``known`` one total per window and frame,
    ``(N, T)``."""
    if not isinstance(samples, torch.Tensor) or samples.ndim != 6:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"samples must be a tensor (members, N, T, 1, H, W), got {got}")
    wanted = tuple(samples.shape[1:3])
    if not isinstance(known, torch.Tensor) or tuple(known.shape) != wanted:
        got = tuple(known.shape) if isinstance(known, torch.Tensor) else type(known).__name__
        raise ValueError(
            f"known must hold the total of each window and frame of the samples, a tensor of "
            f"shape {wanted} (N, T), got {got}"
        )


def _applied(samples: torch.Tensor, steps: list) -> tuple[torch.Tensor, float]:
    if not steps:
        return samples, 0.0
    wrapped = constrain(nn.Identity(), *steps)
    started = time.perf_counter()
    out = wrapped(Ensemble(samples)).samples
    return out, time.perf_counter() - started


def mean_crps(samples: torch.Tensor, truth: torch.Tensor, fair: bool = False) -> float:
    """Ensemble CRPS per pixel of members ``samples (M, N, ...)`` against ``truth (N, ...)``,
    eight windows at a time (the sort copies the members)."""
    return float(metrics.crps_ensemble_in_chunks(samples, truth, fair, 8).mean())


def score(
    samples: torch.Tensor, windows_: Windows, grid: Grid2D, seconds: float
) -> dict[str, object]:
    """The columns of a row: ``ce_abs`` (mean of ``abs(member mass − true mass) / true mass``),
    ``mse`` of the ensemble mean, ``crps`` and ``crps_fair`` (ensemble CRPS per pixel, the plain
    (biased) estimator and the unbiased one, :func:`~physml.metrics.crps_ensemble`),
    ``spread_skill``, ``neg_fraction`` (share of member pixels < 0), ``fwd_ms`` per window and
    ``mass_error_per_lead``."""
    truth = windows_.target
    relative = (
        grid.integrate(samples[:, :, :, 0]) - windows_.truth_mass
    ).abs() / windows_.truth_mass
    return {
        "ce_abs": float(relative.mean()),
        "ce_abs_max": float(relative.max()),
        "mse": float(metrics.mse(samples.mean(0), truth)),
        "crps": mean_crps(samples, truth),
        "crps_fair": mean_crps(samples, truth, fair=True),
        "spread_skill": metrics.spread_skill(samples, truth),
        "neg_fraction": float((samples < 0).to(F64).mean()),
        "fwd_ms": 1000.0 * seconds / truth.shape[0],
        "mass_error_per_lead": relative.mean((0, 1)).tolist(),
    }


UNIFORM_CV = 1e-9
"""A correction whose coefficient of variation stays below this in every member's frame is
uniform: its ranks are round-off, so it has no ``spearman_spread``."""


def correction_shape(before: torch.Tensor, after: torch.Tensor) -> dict[str, float | None]:
    """Where a method moved mass: ``spearman_spread``, Spearman's ρ between the mean absolute
    correction per pixel and the ensemble's standard deviation (mean over windows and frames;
    ``None`` for a uniform correction,
    :data:`~physml.tasks.conservation_forecast.methods.UNIFORM_CV`), and ``correction_cv``, the
    coefficient of variation of the absolute correction over each member's frame (mean; 0 for a
    spatially uniform correction)."""
    change = (after - before).abs()  # (M, N, T, 1, H, W)
    flat = change.flatten(-3)
    cv = flat.std(-1) / flat.mean(-1).clamp_min(1e-300)
    uniform = float(cv.max()) < UNIFORM_CV
    rho = None if uniform else frame_spearman(change.mean(0), before.std(0))
    return {"spearman_spread": rho, "correction_cv": float(cv.mean())}


def error_spread(samples: torch.Tensor, target: torch.Tensor) -> float:
    """Whether an ensemble's spread says where its error is: Spearman's ρ between the ensemble
    mean's absolute error and the members' standard deviation per pixel (mean over windows and
    frames). ``samples (M, N, T, 1, H, W)``, ``target (N, T, 1, H, W)``. An update that moves
    mass where the spread is can only beat a uniform one when this is clearly positive."""
    return frame_spearman((samples.mean(0) - target).abs(), samples.std(0))


def frame_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ between the maps ``a`` and ``b`` ``(N, T, ...)`` of each window and frame,
    averaged over windows and frames."""
    frames = [(n, t) for n in range(a.shape[0]) for t in range(a.shape[1])]
    rhos = [metrics.spearman(a[n, t], b[n, t]) for n, t in frames]
    return sum(rhos) / len(rhos)


METHODS = ("raw", "hardc", "probconserv", "probconserv_shrunk")
PREDIFF_METHODS = (*METHODS, "kc", "kc-probconserv")
CORRECTED = (*UPDATES, "kc-probconserv")  # the methods whose correction map is scored


def forecast_rows(
    variant: str,
    model: str,
    raw: dict[str, tuple[torch.Tensor, float]],
    windows_: Windows,
    grid: Grid2D,
    extra: dict | None = None,
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Rows of every method (and its ``-nonneg`` follow-up) on the ensembles ``raw`` (``"raw"``
    and, for PreDiff, ``"kc"``: ``(samples, sampling seconds)``), and the methods' samples."""
    rows, kept = [], {}
    methods = PREDIFF_METHODS if "kc" in raw else METHODS
    for method in methods:
        start, _, update = method.partition("-")
        base, sampled_s = raw["kc" if start == "kc" else "raw"]
        if start == "kc":
            sampled_s -= raw["raw"][1]  # the guidance's cost over plain sampling
        else:
            sampled_s = 0.0
        name = method if start != "kc" or update else "kc"
        updated, seconds = constrained(base, windows_.known_mass, grid, update or start)
        kept[name] = updated
        for suffix in ("", "-nonneg"):
            samples, spent = updated, seconds
            row = {
                "case": f"{model}-{variant}",
                "method": name + suffix,
                "model": model,
                "variant": variant,
                "members": int(samples.shape[0]),
                "windows": int(samples.shape[1]),
                **(extra or {}),
            }
            if suffix:
                try:
                    samples, extra_s = nonnegative(
                        updated, windows_.known_mass, grid, update or start
                    )
                except ConstraintError as error:  # a member with a negative total: infeasible
                    rows.append({**row, "error": str(error)})
                    continue
                spent += extra_s
                kept[name + suffix] = samples
            row.update(score(samples, windows_, grid, spent + max(sampled_s, 0.0)))
            if name in CORRECTED and not suffix:
                row.update(correction_shape(base, updated))
            if name == "raw" and not suffix:
                row["error_spread_rho"] = error_spread(samples, windows_.target)
            rows.append(row)
    return rows, kept


def done_when(rows: list[dict]) -> list[dict]:
    """The issue's targets per case: ``{case, what, value, target, met}``."""
    checks = []
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["method"]] = row
    for case, methods in by_case.items():

        def add(what: str, value: float, target: str, met: bool, case: str = case) -> None:
            checks.append(
                {"case": case, "what": what, "value": value, "target": target, "met": met}
            )

        for name, row in methods.items():
            if name.startswith(CORRECTED) and "error" not in row:
                add(
                    f"ce_abs {name}", row["ce_abs_max"], f"<= {EXACT:g}", row["ce_abs_max"] <= EXACT
                )
        raw, hardc = methods["raw"], methods["hardc"]
        for name in ("probconserv", "probconserv_shrunk"):
            if name not in methods:
                continue
            update = methods[name]
            add(
                f"crps {name} / raw",
                update["crps"] / raw["crps"],
                "<= 1",
                update["crps"] <= raw["crps"],
            )
            add(
                f"crps {name} / hardc",
                update["crps"] / hardc["crps"],
                "< 1",
                update["crps"] < hardc["crps"],
            )
            add(
                f"mse {name} / raw",
                update["mse"] / raw["mse"],
                "<= 1.02",
                update["mse"] <= 1.02 * raw["mse"],
            )
            if UPDATES[name][1] < 1:  # at 1 (uniform grid): |correction| ∝ variance, ρ = 1
                rho = update["spearman_spread"]  # None: a uniform correction, nothing to rank
                add(f"spearman_spread {name}", rho, "> 0.5", rho is not None and rho > 0.5)
        if "kc" in methods:
            ratio = raw["ce_abs"] / max(methods["kc"]["ce_abs"], 1e-300)
            add("ce_abs raw / kc", ratio, ">= 2", ratio >= 2)
        for name, row in methods.items():
            if name.endswith("-nonneg") and "error" in row:
                add(f"feasible {name}", 0.0, "no member total < 0", False)
            elif name.endswith("-nonneg"):
                add(f"neg_fraction {name}", row["neg_fraction"], "== 0", row["neg_fraction"] == 0)
                before = methods[name.removesuffix("-nonneg")]
                drift = abs(row["ce_abs"] - before["ce_abs"])
                add(f"ce_abs change {name}", drift, "<= 1e-9", drift <= 1e-9)
        add(
            "correction_cv hardc", hardc["correction_cv"], "<= 1e-6", hardc["correction_cv"] <= 1e-6
        )
    return checks
