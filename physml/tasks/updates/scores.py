"""The update's scores (negative flips of every kind, against the old model) and the issue's
verdict on them, the λ of ``pc-focal`` chosen on validation scores."""

from __future__ import annotations

import torch

from ... import metrics
from ...updates import BoundaryError
from .data import F64, Equation

#: The tolerances τ / τ_median of the curve NFR(τ).
CURVE = tuple(float(v) for v in torch.logspace(-1, 1, 21, dtype=F64))


def boundary_errors(problem: Equation, prediction: torch.Tensor) -> torch.Tensor:
    """Each prediction's largest wall error ``(batch,)`` (value for Dirichlet, flux for Neumann)."""
    check = BoundaryError(problem.boundary(), problem.grid(), 0.0, time=problem.t_end)
    return check.score(prediction, prediction)


def update_scores(
    problem: Equation, old: torch.Tensor, new: torch.Tensor, target: torch.Tensor
) -> dict:
    """The update's scores on the test set from the old and new predictions ``(batch, 1, nx)``.

    ``nfr`` at τ = the old model's median error; ``nfr_curve`` at τ =
    :data:`~physml.tasks.updates.scores.CURVE` × that median; ``nfr_degradation`` at δ = 0.1;
    ``nfr_physics``: the boundary condition met by the old model (wall error ≤ the old model's
    median wall error) and missed by the new one.
    """
    e_old = metrics.relative_l2(old, target, reduction="none")
    e_new = metrics.relative_l2(new, target, reduction="none")
    tau = float(e_old.median())
    walls_old, walls_new = boundary_errors(problem, old), boundary_errors(problem, new)
    tolerance = float(walls_old.median())
    levels = torch.tensor(CURVE, dtype=F64) * tau  # float64: the 1× point is τ itself
    return {
        "rel_l2": float(e_new.mean()),
        "tau": tau,
        "nfr": float(metrics.tolerance_flips(e_old, e_new, tau)),
        "nfr_curve": metrics.flip_rate_curve(e_old, e_new, levels).tolist(),
        "nfr_degradation": float(metrics.degradation_flips(e_old, e_new, delta=0.1)),
        "nfr_physics": float(metrics.physics_flips(walls_old, walls_new, tolerance)),
        "boundary_error": float(walls_new.mean()),
    }


def mean_and_se(runs: list[dict], keys: tuple[str, ...]) -> dict:
    """Mean over seeds of each key, and ``<key>_se`` (:func:`~physml.metrics.mean_se`: NaN, not
    known, for one seed)."""
    out: dict = {}
    for key in keys:
        out[key], out[f"{key}_se"] = metrics.mean_se([run[key] for run in runs])
    if all("nfr_curve" in run for run in runs):
        out["nfr_curve"] = torch.tensor([run["nfr_curve"] for run in runs]).mean(0).tolist()
    return out


def nfr_cut(nfr: float, retrain_nfr: float) -> float:
    """``1 − nfr / retrain_nfr``: the share of retraining's flips a method removes; 0 where
    retraining makes none (nothing to cut, so nothing earned)."""
    return 1 - nfr / retrain_nfr if retrain_nfr > 0 else 0.0


def against_retrain(
    rows: list[dict], case: str, nfr: str, rel_l2: str, method: str = "pc-focal"
) -> list[dict]:
    """Each ``method`` row (λ) of ``case`` against ``retrain`` on the columns ``nfr`` and ``rel_l2``
    (the test's or the validation's): ``nfr_cut`` (1 − nfr / retrain's, 0 where retrain has no
    flips), ``rel_l2_ratio`` and ``holds`` (cut ≥ 50% with the ratio ≤ 1.02: the issue's target).
    """
    retrain = next(r for r in rows if r["case"] == case and r["method"] == "retrain")
    out = []
    for row in rows:
        if row["case"] == case and row["method"] == method:
            cut = nfr_cut(row[nfr], retrain[nfr])
            ratio = row[rel_l2] / retrain[rel_l2]
            holds = cut >= 0.5 and ratio <= 1.02
            out.append({"lambda": row["lambda"], "nfr_cut": cut, "rel_l2_ratio": ratio,
                        "holds": holds})  # fmt: skip
    return out


def update_done_when(rows: list[dict]) -> dict:
    """Per case, the ``pc-focal`` λ chosen on the validation columns (``val_nfr``,
    ``val_rel_l2``: the target holding first, then the largest cut) and that λ's test scores
    against ``retrain`` (``val_*``: its validation ones); ``holds``: the target met on the test
    set by the chosen λ of every ``-fno`` case. The test set never picks λ. Where a ``warm`` row
    (the warm-start control, λ = 0) is there: ``warm_nfr_cut`` and ``warm_rel_l2_ratio``, its
    test scores against ``retrain``, the share of the cut that is not the distillation term's."""
    verdict: dict = {}
    for case in sorted({row["case"] for row in rows if row["method"] == "pc-focal"}):
        validation = against_retrain(rows, case, "val_nfr", "val_rel_l2")
        chosen = max(validation, key=lambda c: (c["holds"], c["nfr_cut"]))
        test = against_retrain(rows, case, "nfr", "rel_l2")
        verdict[case] = {
            **next(c for c in test if c["lambda"] == chosen["lambda"]),
            "chosen_on": "validation",
            **{f"val_{key}": value for key, value in chosen.items() if key != "lambda"},
        }
        warm = against_retrain(rows, case, "nfr", "rel_l2", method="warm")
        if warm:  # the warm-start control (λ = 0) against retrain on the test set
            control = warm[0]
            verdict[case]["warm_nfr_cut"] = control["nfr_cut"]
            verdict[case]["warm_rel_l2_ratio"] = control["rel_l2_ratio"]
    fno_cases = [case for case in verdict if case.endswith("-fno")]
    verdict["holds"] = bool(fno_cases) and all(verdict[case]["holds"] for case in fno_cases)
    return verdict
