"""BOON against the plain FNO and the FNO with overwritten walls on the paper's boundary problems.

Cases (``physml.tasks.boon.CASES``, DESIGN.md §4): heat with a Neumann heat source, Stokes' second
problem (Dirichlet), Burgers with Dirichlet walls and periodic, the wave equation (Neumann) — single
step ``u(x, 0) → u(x, T)``; heat and Stokes over 25 steps on a 2-D FNO over ``(x, t)``; the
lid-driven cavity (velocity over 25 steps, Dirichlet on four walls). Methods: ``fno``,
``fno-overwrite`` (the trained FNO's walls replaced), ``boon`` (``physml.constrain(fno,
*conditions)``); on heat and Stokes also the ablation ``boon-output`` (the output seam alone,
``kernel=False``, trained through it).
Every method gets the same training (steps, learning rate, schedule, mini-batches, initial
weights) for each seed.

Metrics per (case, method), mean ± standard error over the seeds: relative L2 (whole and interior),
the boundary error (worst over seeds and test samples: value error for Dirichlet, flux error for
Neumann, end mismatch for periodic), training seconds, and the forward time at a fixed batch.
Plots: the boundary zoom of the heat case and the cavity's error over time.

Finished (case, method, seed) runs are kept in ``OUT/.boon-partial-SIZE.json`` (written atomically
after each), so a killed run resumes where it stopped; the file is removed once the results are
written.

The FNO is :func:`physml.models.plain_fno` (the reference code's FNO1d layout: no channel MLP,
one nonlinearity per layer, one linear lifting, a projection through 128 channels); ``--fno
neuralop`` trains every method on neuralop's defaults instead (:func:`physml.models.fast_fno`)
and writes ``boon_neuralop_fno.*``. Each run's rows are set beside the recorded rows of the other
layout (``summary.against_other_layout``): the accuracy one layout keeps or loses against the
other.

    python benchmarks/boon.py                  # full run -> results/boon.{json,md}, two plots
    python benchmarks/boon.py --quick          # smoke run (tiny sizes, one seed)
    python benchmarks/boon.py --fno neuralop   # -> results/boon_neuralop_fno.{json,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS,
    add_out,
    at_least,
    best_time,
    results_folder,
    resumes,
    run_main,
    seed_arg,
    write_results,
)

from pdes.problems import active_seed_scheme  # noqa: E402
from physml.data.generate import named_scheme, seed_scheme_of  # noqa: E402
from physml.io import atomic_write_text, load_torch_file, save_torch_file  # noqa: E402
from physml.metrics import mean_se  # noqa: E402
from physml.tasks import boon  # noqa: E402

NAME = "boon"
ABLATION_CASES = ("heat-neumann", "stokes-dirichlet")  # also run boon-output (kernel=False)
METRICS = ("rel_l2", "rel_l2_interior")
FORWARD_BATCH = {"1d": 32, "xt": 8, "cavity": 8}
WITHOUT_ZOOM = "delete it to write the results without the boundary-zoom figure"
COLUMNS = (
    "case",
    "method",
    "seeds",
    "rel_l2",
    "rel_l2_se",
    "rel_l2_interior",
    "rel_l2_interior_se",
    "boundary_error",
    "gain_vs_fno",
    "train_s",
    "fwd_ms",
    "fwd_ratio",
    "params",
)
TOLERANCE = 1e-5


def forward_ms(result: boon.CaseResult, batch: int, quick: bool = False) -> dict[str, float]:
    """Milliseconds per forward of the trained network at ``batch`` test inputs (no gradients),
    per row of ``result``: ``fno-overwrite`` is the trained FNO wrapped with the output seam alone
    (``constrain(fno, *conditions, kernel=False)``), its forward plus the wall replacement."""
    data = result.data
    index = torch.arange(batch) % data.test_x.shape[0]
    x = data.test_x[index]
    values = None if data.test_values is None else data.test_values[index]
    model = result.model

    @torch.no_grad()
    def forward():
        return model(x, values)

    @torch.no_grad()
    def overwritten():
        return overwriting(x, values)

    def ms(call) -> float:
        if quick:
            return 1e3 * best_time(call, repeats=1, min_seconds=0.02)
        return 1e3 * best_time(call, repeats=3, min_seconds=0.2)

    methods = [row["method"] for row in result.rows]
    overwriting = boon.overwriting(model, data) if "fno-overwrite" in methods else None
    times = {}
    for row in result.rows:
        times[row["method"]] = ms(overwritten if row["method"] == "fno-overwrite" else forward)
    return times


class Progress:
    """The finished runs of one size, kept in a JSON file written atomically after each run; a
    run is read back for the same budget and seed scheme only (``seed_scheme`` as
    :func:`~physml.data.generate.named_scheme` records it: none for ``"torch-manual-seed"``)."""

    def __init__(self, path: Path, size: str) -> None:
        self.path, self.size = path, size
        self.runs: dict[str, dict] = {}
        if path.exists():
            try:
                self.runs = json.loads(path.read_text())["runs"]
            except (json.JSONDecodeError, KeyError):
                self.runs = {}

    @staticmethod
    def key(case: str, method: str, seed: int) -> str:
        return f"{case}|{method}|{seed}"

    def get(self, case: str, method: str, seed: int, plan: boon.Budget) -> dict | None:
        run = self.runs.get(self.key(case, method, seed))
        if run is None or run["budget"] != repr(plan):
            return None
        return run if seed_scheme_of(run) == active_seed_scheme() else None

    def put(self, case: str, method: str, seed: int, plan: boon.Budget, run: dict) -> None:
        drawn = named_scheme(active_seed_scheme())
        self.runs[self.key(case, method, seed)] = {**run, "budget": repr(plan), **drawn}
        text = json.dumps({"size": self.size, "runs": self.runs})
        atomic_write_text(self.path, text)


def save_predictions(path: Path, predictions: dict[str, torch.Tensor]) -> None:
    save_torch_file(path, {k: v.detach().cpu() for k, v in predictions.items()})


def known_se(value: float | None) -> float:
    """A standard error as a number: NaN (unknown) for ``None`` (a non-finite one as saved in the
    results JSON, e.g. of one seed) or a non-finite one."""
    return float("nan") if value is None or not math.isfinite(value) else float(value)


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (case, method): means and standard errors over seeds, worst boundary error."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in runs:
        groups.setdefault((row["case"], row["method"]), []).append(row)
    rows = []
    for (case, method), members in groups.items():
        first = members[0]
        row = {
            "case": case,
            "method": method,
            "kind": first["kind"],
            "shape": first["shape"],
            "train": first["train"],
            "test": first["test"],
            "steps": first["steps"],
            "params": first["params"],
            "seeds": len(members),
        }
        for metric in METRICS:
            row[metric], row[f"{metric}_se"] = mean_se([m[metric] for m in members])
        row["boundary_error"] = max(m["boundary_error"] for m in members)
        row["float32_floor"] = max(m["float32_floor"] for m in members)
        row["train_s"] = mean_se([m["train_s"] for m in members])[0]
        row["fwd_ms"] = sorted(m["fwd_ms"] for m in members)[(len(members) - 1) // 2]
        if "rel_l2_over_time" in first:
            curves = torch.tensor([m["rel_l2_over_time"] for m in members])
            row["rel_l2_over_time"] = curves.mean(0).tolist()
        rows.append(row)
    fno = {row["case"]: row for row in rows if row["method"] == "fno"}
    for row in rows:
        reference = fno.get(row["case"])
        if reference is not None:
            row["gain_vs_fno"] = reference["rel_l2"] / row["rel_l2"]
            row["fwd_ratio"] = row["fwd_ms"] / reference["fwd_ms"]
    return rows


def verdict(rows: list[dict]) -> tuple[dict, str]:
    """The targets of the issue, checked on the summary rows, as a dict and as prose."""
    by = {(row["case"], row["method"]): row for row in rows}
    cases = sorted({row["case"] for row in rows})
    boon_rows = [by[(case, "boon")] for case in cases if (case, "boon") in by]
    worst = max(row["boundary_error"] for row in boon_rows)
    not_worse = [row["case"] for row in boon_rows if row["gain_vs_fno"] >= 1.0]
    twice = [row["case"] for row in boon_rows if row["gain_vs_fno"] >= 2.0]
    slowest = max(row["fwd_ratio"] for row in boon_rows)
    peers = {
        case: by[(case, "boon")]["rel_l2"] / by[(case, boon.PEER)]["rel_l2"]
        for case in cases
        if (case, boon.PEER) in by and (case, "boon") in by
    }
    result = {
        "boon_boundary_error_max": worst,
        "boon_boundary_ok": worst <= TOLERANCE,
        "boon_not_worse_than_fno": not_worse,
        "boon_at_least_2x_better": twice,
        "boon_fwd_ratio_max": slowest,
        "boon_rel_l2_over_fno_wall_input": peers,
        "targets_met": worst <= TOLERANCE
        and len(not_worse) == len(boon_rows)
        and len(twice) >= 2
        and slowest <= 1.5,
    }
    lines = [
        f"- BOON boundary error, worst over cases, seeds and test samples: {worst:.2g} "
        f"(target <= {TOLERANCE:g}: {'met' if result['boon_boundary_ok'] else 'NOT met'})",
        f"- BOON relative L2 no worse than FNO's on {len(not_worse)} of {len(boon_rows)} cases"
        + (
            ""
            if len(not_worse) == len(boon_rows)
            else f" (worse on {sorted(set(cases) - set(not_worse))})"
        ),
        f"- BOON at least 2x lower relative L2 than FNO on {len(twice)} cases {twice} "
        f"(target: two or more)",
        f"- BOON forward time at most {slowest:.2f}x FNO's (target <= 1.5x)",
    ]
    for case, ratio in peers.items():
        lines.append(
            f"- {case}: BOON's relative L2 is {ratio:.2f}x that of the FNO given the wall values "
            f"as input channels ({boon.PEER}; < 1: BOON better)"
        )
    return result, "\n".join(lines)


NOTES = """\
`gain_vs_fno` = FNO's relative L2 / this method's (> 1: better than the FNO). `boundary_error`:
worst over seeds and test samples — Dirichlet |u - g|, Neumann |du/dx - g| by the one-sided
second-order stencil, periodic |u_0 - u_N|; the constrained methods' wall replacement is
evaluated in float64 (the networks run in float32; a float32 output cannot meet a Neumann flux
closer than half an ulp of its wall value times 3/(2 dx), `float32_floor` in the JSON).
`fwd_ms`: one forward of the trained network at batch 32 (1-D) or 8 ((x, t) and cavity), no
gradients, best of 3, median over seeds; `fwd_ratio` relative to the FNO. All methods clip the
gradient norm at 1 (without it BOON trained markedly worse; see physml/tasks/boon/training.py).
Boundary values come from each problem's specification (recipe settings and per-sample
parameters), never from the targets.
`boon-output` (heat, Stokes): BOON's output correction alone (`kernel=False`), trained through it
— the part of BOON's effect that does not come from the kernel corrections.
The `stokes-varying-frequency` cases draw the plate's frequency ω ~ U[5, 20] per sample: the
initial profile shows only k = √(ω/2ν), so the phase of the later profiles is in the wall values
alone. The plain FNO (the BOON paper's baseline) never sees them — its error
there measures missing information, not a worse architecture. The fair peer on those cases is
`fno-wall-input`: the same FNO given the prescribed wall values as two extra input channels
(each wall's value spread over the domain; unconstrained, like `fno`)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one seed")
    add_out(parser)
    parser.add_argument("--seed", type=seed_arg, default=0, help="first model seed")
    parser.add_argument(
        "--seeds", type=at_least(1), default=None, help="number of seeds (default 3)"
    )
    parser.add_argument("--cases", nargs="*", default=None, help="only these cases")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument(
        "--fno", choices=boon.FNO_LAYOUTS, default=boon.FNO_LAYOUTS[0], help="the FNO's layout"
    )
    args = parser.parse_args(argv)
    temporary = args.out is None and args.quick
    args.out = results_folder(args.out, args.quick)
    torch.set_num_threads(1)
    started = time.perf_counter()
    size = "quick" if args.quick else "full"
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.quick else 3))]
    cases = args.cases or list(boon.CASES)
    unknown = sorted(set(cases) - set(boon.CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(boon.CASES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = results_name(args.fno)
    progress = Progress(args.out / f".{name}-partial-{size}.json", size)
    if temporary:
        resumes(progress.path, False, f"rerun with --out {args.out} to resume")
    else:
        resumes(progress.path, bool(progress.runs))
    zoom = args.out / f".{name}-zoom-{size}.pt"

    runs: list[dict] = []
    for case in cases:
        plan = dataclasses.replace(boon.budget(case, size), fno=args.fno)
        family = boon.CASES[case].family
        methods = list(boon.TRAINED)
        if case in ABLATION_CASES:
            methods.append(boon.ABLATION)
        if boon.CASES[case].varying:
            methods.append(boon.PEER)
        for method in methods:
            for seed in seeds:
                done = progress.get(case, method, seed, plan)
                if done is None:
                    result = boon.run_case(case, method, seed, plan, quiet=not args.progress)
                    fwd = forward_ms(result, FORWARD_BATCH[family], args.quick)
                    done = {"rows": [{**row, "fwd_ms": fwd[row["method"]]} for row in result.rows]}
                    if case == "heat-neumann" and seed == seeds[0] and method in boon.TRAINED:
                        save_predictions(
                            zoom.with_name(f"{zoom.stem}-{method}.pt"), result.predictions
                        )
                    progress.put(case, method, seed, plan, done)
                    error = done["rows"][-1]["boundary_error"]
                    print(
                        f"[{time.perf_counter() - started:7.1f} s] {case} {method} seed {seed}: "
                        f"rel L2 {done['rows'][0]['rel_l2']:.4g}, boundary error {error:.2g}, "
                        f"train {done['rows'][0]['train_s']:.1f} s",
                        flush=True,
                    )
                runs += done["rows"]

    rows = summarise(runs)
    summary, prose = verdict(rows)
    other = next(layout for layout in boon.FNO_LAYOUTS if layout != args.fno)
    summary["against_other_layout"], lines = against_recorded(
        rows, RESULTS / f"{results_name(other)}.json", other, size
    )
    prose += "\n" + lines
    plots = draw(rows, runs, cases, size, args.out, zoom, name)
    write_results(
        name,
        rows,
        args.seed,
        started,
        args.out,
        COLUMNS,
        notes=NOTES + "\n\n" + prose,
        extra={
            "size": size,
            "fno": args.fno,
            "model_seeds": seeds,
            "summary": summary,
            "plots": plots,
            "runs": runs,
        },
    )
    progress.path.unlink(missing_ok=True)
    for saved in args.out.glob(f"{zoom.stem}-*.pt"):
        saved.unlink()
    print(prose)
    return 0


def results_name(layout: str) -> str:
    """The results files' name of a run on the FNO ``layout``."""
    return NAME if layout == boon.FNO_LAYOUTS[0] else f"{NAME}_{layout}_fno"


def against_recorded(rows: list[dict], recorded: Path, layout: str, size: str) -> tuple[dict, str]:
    """Each (case, method)'s ``rel_l2`` over the recorded run's (``recorded``, on the FNO
    ``layout``, at the same ``size``), with the difference in standard errors of the two means:
    ``{"case/method": {...}}`` and prose."""
    result = json.loads(recorded.read_text()) if recorded.exists() else {}
    if result.get("size") != size:
        return {}, f"- no recorded {recorded.name} at size {size} to compare with"
    before = {(r["case"], r["method"]): r for r in result["rows"]}
    out, worst = {}, (0.0, "")
    for row in rows:
        old = before.get((row["case"], row["method"]))
        if old is None:
            continue
        # a standard error unknown on either side (one seed: NaN, saved as null): z unknown
        se = math.hypot(known_se(row.get("rel_l2_se")), known_se(old.get("rel_l2_se")))
        ratio = row["rel_l2"] / old["rel_l2"]
        z = (row["rel_l2"] - old["rel_l2"]) / se if math.isfinite(se) and se > 0 else None
        out[f"{row['case']}/{row['method']}"] = {
            "rel_l2": row["rel_l2"], "recorded_rel_l2": old["rel_l2"], "ratio": ratio, "z": z,
        }  # fmt: skip
        if ratio > worst[0]:
            worst = (ratio, f"{row['case']}/{row['method']}")
    if not out:
        return {}, f"- no (case, method) of this run in the recorded {recorded.name}"
    within = sum(1 for v in out.values() if v["ratio"] <= 1.0 or (v["z"] or math.inf) <= 2.0)
    lines = [
        f"- against the recorded {recorded.name} ({layout} layout): rel_l2 ratio "
        f"{min(v['ratio'] for v in out.values()):.3g}-{worst[0]:.3g} (worst {worst[1]}); "
        f"{within} of {len(out)} rows no worse or within 2 standard errors",
        "",
        f"Against the recorded `{recorded.name}` ({layout} layout), from "
        "`summary.against_other_layout` in the JSON (`z`: the difference of the two means in "
        "standard errors of the difference):",
        "",
        f"| case / method | rel_l2 (this run) | rel_l2 ({layout}) | ratio | z |",
        "|---|---|---|---|---|",
    ]
    for key, v in out.items():
        lines.append(
            f"| {key} | {v['rel_l2']:.3g} | {v['recorded_rel_l2']:.3g} | {v['ratio']:.3g} "
            f"| {'' if v['z'] is None else format(v['z'], '.2g')} |"
        )
    return out, "\n".join(lines)


def draw(rows, runs, cases, size, out: Path, zoom: Path, name: str = NAME) -> list[str]:
    """The boundary zoom (heat) and the cavity's error over time, when those cases ran."""
    written = []
    files = [zoom.with_name(f"{zoom.stem}-{method}.pt") for method in boon.TRAINED]
    if "heat-neumann" in cases and all(f.exists() for f in files):
        predictions = {}
        for f in files:
            predictions.update(load_torch_file(f, "kept predictions", "--out", WITHOUT_ZOOM))
        data = boon.case_data("heat-neumann", size)
        path = out / f"{name}-boundary-zoom.png"
        boon.plot_boundary_zoom(data, predictions, path)
        written.append(path.name)
    if "cavity" in cases:
        curves: dict[str, list[list[float]]] = {}
        for row in runs:
            if row["case"] == "cavity":
                curves.setdefault(row["method"], []).append(row["rel_l2_over_time"])
        path = out / f"{name}-cavity-error-over-time.png"
        data = boon.case_data("cavity", size)
        boon.plot_error_over_time(curves, data.times, path, "lid-driven cavity, test mean")
        written.append(path.name)
    return written


if __name__ == "__main__":
    sys.exit(run_main(main))
