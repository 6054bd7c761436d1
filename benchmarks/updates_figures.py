"""Figures of the model-update and guarded-surrogate records, drawn from their JSON.

``model_update-nfr.png``: NFR(τ), the share of test inputs the old model answered within τ and
the new one does not, against τ / the old model's median error, per case: ``retrain`` (the
baseline), ``pc-focal`` at its validation-chosen λ and ``pc-uniform`` at the same λ, and from a
warm-start record (``model_update_warm.json``, when given) the ``warm`` control and its
pc-focal. The bar at τ = 1 is the standard error over seeds of ``retrain``'s rate, the point the
done-when reads.

``guarded_surrogate-tradeoff.png``: per case, the largest and the 99th-percentile relative L2 error
over the test set against the speedup over the solver alone, one point per threshold level of
the guard, with the surrogate alone and the solver alone for reference; the shaded box is the
done-when (max error ≤ 1e-2 at ≥ 3× the solver's throughput).

The benchmarks draw these after a run; this script redraws them from recorded results:

    python benchmarks/updates_figures.py                       # benchmarks/results → same folder
    python benchmarks/updates_figures.py --results R --out O
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from physml.io import save_figure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DONE_MAX_ERROR, DONE_SPEEDUP = 1e-2, 3.0


def _rows(result: dict, **match: object) -> list[dict]:
    return [r for r in result["rows"] if all(r.get(k) == v for k, v in match.items())]


def _one(result: dict, **match: object) -> dict:
    rows = _rows(result, **match)
    if len(rows) != 1:
        raise ValueError(
            f"{result.get('benchmark', 'result')}: expected one row {match}, got {len(rows)}"
        )
    return rows[0]


def nfr_curves(result: dict, case: str, warm: dict | None = None) -> dict[str, list[float]]:
    """``{label: NFR(τ) over result["curve_tau_over_median"]}`` of one case (see module)."""
    if case not in result.get("done_when", {}):
        cases = sorted(k for k in result.get("done_when", {}) if k != "holds")
        raise ValueError(f"case must be one of {cases}, got {case!r}")
    chosen = result["done_when"][case]["lambda"]
    curves = {
        "retrain": _one(result, case=case, method="retrain")["nfr_curve"],
        f"pc-focal λ={chosen:g}": _one(result, case=case, method="pc-focal", **{"lambda": chosen})[
            "nfr_curve"
        ],
        f"pc-uniform λ={chosen:g}": _one(
            result, case=case, method="pc-uniform", **{"lambda": chosen}
        )["nfr_curve"],
    }
    if warm is not None:
        if warm["curve_tau_over_median"] != result["curve_tau_over_median"]:
            raise ValueError("the warm record's τ grid differs from the cold one's")
        warm_lambda = warm["done_when"][case]["lambda"]
        curves["warm start, λ=0"] = _one(warm, case=case, method="warm")["nfr_curve"]
        curves[f"warm start, pc-focal λ={warm_lambda:g}"] = _one(
            warm, case=case, method="pc-focal", **{"lambda": warm_lambda}
        )["nfr_curve"]
    return curves


def nfr_figure(result: dict, path: Path, warm: dict | None = None) -> Path:
    """Draw ``model_update-nfr.png`` (module docstring) from a ``model_update`` result."""
    cases = [c for c in result["done_when"] if c != "holds"]
    taus = result["curve_tau_over_median"]
    fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.4), sharey=True)
    axes = [axes] if len(cases) == 1 else list(axes)
    for ax, case in zip(axes, cases, strict=True):
        for label, curve in nfr_curves(result, case, warm).items():
            style = "--" if label.startswith("warm") else "-"
            ax.plot(taus, [100 * v for v in curve], style, label=label, lw=1.4)
        base = _one(result, case=case, method="retrain")
        se = float("nan") if base["nfr_se"] is None else base["nfr_se"]  # null: one seed
        ax.errorbar([1.0], [100 * base["nfr"]], yerr=[100 * se], fmt="o", color="k", ms=3,
                    capsize=3)  # fmt: skip
        ax.axvline(1.0, color="0.7", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(case, fontsize=10)
        ax.set_xlabel("τ / old model's median error")
        ax.legend(fontsize=6, loc="upper right")
    axes[0].set_ylabel("negative flips NFR(τ) [% of test inputs]")
    fig.suptitle(f"{result['benchmark']}: mean over {result['rows'][0].get('seeds', '?')} seeds",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path)
    return path


def tradeoff_figure(result: dict, path: Path) -> Path:
    """Draw ``guarded_surrogate-tradeoff.png`` (module docstring) from a ``guarded_surrogate``
    result."""
    cases = list(dict.fromkeys(r["case"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(cases), figsize=(4.6 * len(cases), 3.6), sharey=True)
    axes = [axes] if len(cases) == 1 else list(axes)
    for ax, case in zip(axes, cases, strict=True):
        guard = sorted(_rows(result, case=case, method="guard"), key=lambda r: r["speedup"])
        speed = [r["speedup"] for r in guard]
        ax.plot(speed, [r["max_error"] for r in guard], "o-", label="guard: max error")
        ax.plot(speed, [r["p99_error"] for r in guard], "s--", ms=3, label="guard: 99th pct.")
        for i, r in enumerate(guard):  # alternate sides: neighbouring levels sit close
            offset = (-14, 2) if i % 2 else (4, -6)
            ax.annotate(f"{r['level']:g}", (r["speedup"], r["max_error"]), fontsize=6,
                        xytext=offset, textcoords="offset points")  # fmt: skip
        alone = _one(result, case=case, method="surrogate")
        ax.plot([alone["speedup"]], [alone["max_error"]], "X", color="C3", ms=8,
                label="surrogate alone: max error")  # fmt: skip
        ax.axvline(1.0, color="k", lw=1, label="solver alone (error 0)")
        right = 2 * max(r["speedup"] for r in _rows(result, case=case))
        ax.fill_between([DONE_SPEEDUP, right], 1e-5, DONE_MAX_ERROR, color="C2", alpha=0.12,
                        label="max error ≤ 1e-2 at ≥ 3×")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.7, right)
        ax.set_ylim(1e-4, 1.0)
        ax.set_title(f"{case} (numbers: the guard's threshold level)", fontsize=9)
        ax.set_xlabel("speedup over the solver alone (checks included)")
    axes[0].set_ylabel("relative L2 error over the test set")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON records")
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs go (--results)")
    args = parser.parse_args(argv)
    update = args.results / "model_update.json"
    guarded = args.results / "guarded_surrogate.json"
    if not (update.exists() or guarded.exists()):
        parser.error(f"--results: no model_update.json or guarded_surrogate.json in {args.results}")
    out = args.out or args.results
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    if update.exists():
        warm_file = args.results / "model_update_warm.json"
        warm = json.loads(warm_file.read_text()) if warm_file.exists() else None
        drawn.append(nfr_figure(json.loads(update.read_text()), out / "model_update-nfr.png", warm))
    if guarded.exists():
        drawn.append(
            tradeoff_figure(json.loads(guarded.read_text()), out / "guarded_surrogate-tradeoff.png")
        )
    for path in drawn:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
