"""Does a larger budget make a forecast ensemble's spread say where its error is?

The ``conservation-forecast`` task trains each deep ensemble (Earthformer members, FNO members
rolled out) on 900 CPU-s in all (``benchmarks/forecast_conservation.py``); on that budget the
members' spread hardly follows the ensemble mean's error, and ProbConserv's update, which moves
mass where the spread is, ends above HardC's uniform projection in CRPS. Here the same ensemble
of ``--model`` (the task's build, data, seeds ``seed + i`` and batch) is spent more on in two
ways: longer training (``factor`` × the task's step count, a fresh cosine schedule per factor)
and more members (``members``); configurations ``<members>x<factor>``. Each is scored with the
task's methods on the conserved variant's test windows: does ρ(error, spread) rise, and does the
update then beat HardC?

Member ``i`` of factor ``f`` is the Trainer folder ``<variant>/<name>[-x<f>]-<i>`` under
``--work`` (``<name>``: the task's folder name of the family), shared by every configuration of
that factor (factor 1, members 0–3: the task's own). ``--train-only`` with ``--members`` trains
a subset (for invocations side by side) and writes no results. Results go to
``forecast_budget`` (Earthformer) or ``forecast_budget_<model>``::

    OMP_NUM_THREADS=1 python benchmarks/forecast_budget.py \\
        --work benchmarks/work/forecast_conservation --configs 4x1,4x2,4x4,8x1,8x2,8x4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK_REMEDY, arguments, run_main, work_folder, write_results  # noqa: E402

from physml.io import save_figure  # noqa: E402
from physml.tasks import conservation_forecast as blocks  # noqa: E402

NAME = "forecast_budget"
METHODS = ("raw", "hardc", "probconserv", "probconserv_shrunk")
COLUMNS = (
    "case", "method", "members", "factor", "steps", "mse", "crps", "crps_fair", "crps_vs_hardc",
    "crps_vs_raw", "mse_vs_raw", "spread_skill", "error_spread_rho", "spearman_spread", "train_s",
)  # fmt: skip
NOTES = """
`case`: `<members>x<factor>`; `factor`: the members' step count over the task's (`steps` each, a
fresh cosine schedule); `train_s`: CPU seconds of all the members' training. `mse` of the
ensemble mean and `crps` (per pixel, tracer units) on the conserved variant's test windows: the
ensemble CRPS, plain (biased) estimator, `crps_fair` the unbiased one (the plain one penalises
fewer members: compare ensembles of different sizes by `crps_fair`);
`crps_vs_hardc` / `crps_vs_raw` / `mse_vs_raw` against the same ensemble's HardC and raw rows
(below 1: better); `error_spread_rho` (raw rows): Spearman's ρ between the mean's |error| and the
members' standard deviation per pixel; `spearman_spread`: ρ between the update's |correction|
and that standard deviation.
"""


MODELS = ("earthformer", "fno")


def folder_name(factor: int, model: str = "earthformer") -> str:
    """The Trainer folder prefix of ``model``'s members trained on ``factor`` × the task's
    steps."""
    base = blocks.MEMBER_FOLDERS[model]
    return base if factor == 1 else f"{base}-x{factor}"


def members(model, factor, which, scale, split, units, folder: Path, seed: int, quiet: bool):
    """Train (or reload) ``model``'s members ``which`` on ``factor`` × the planned steps:
    ``(models, steps, CPU seconds)``."""
    planned = blocks.plan(scale, split["train"], units, folder, seed, WORK_REMEDY)
    steps = factor * planned["steps"][model]
    channels = split["train"].context.shape[2]
    data = blocks.pairs(model, split["train"], units)
    trained, spent = [], 0.0
    for i in which:
        run = blocks.fit(
            blocks.build(model, scale, channels, seed + i), blocks.mse_loss, data, steps,
            scale.batch, scale.lr, seed + i, folder / f"{folder_name(factor, model)}-{i}", quiet,
            remedy=WORK_REMEDY,
        )  # fmt: skip
        trained.append(run.model.eval())
        spent += run.train_s
    return trained, steps, spent


def scored(
    raw: torch.Tensor, test, grid, config: tuple, steps: int, spent: float, model: str
) -> list[dict]:
    """The task's methods on one ensemble of ``config = (members, factor)``, with this study's
    ratios."""
    found, _ = blocks.forecast_rows("conserved", model, {"raw": (raw, 0.0)}, test, grid)
    found = {r["method"]: r for r in found if r["method"] in METHODS}
    for row in found.values():
        row.update(
            case=f"{config[0]}x{config[1]}",
            members=config[0],
            factor=config[1],
            steps=steps,
            train_s=spent,
            crps_vs_hardc=row["crps"] / found["hardc"]["crps"],
            crps_vs_raw=row["crps"] / found["raw"]["crps"],
            mse_vs_raw=row["mse"] / found["raw"]["mse"],
        )
    return list(found.values())


def plot(path: Path, rows: list[dict], task_members: int, model: str = "earthformer") -> None:
    """Against the CPU budget (over the task's): the update's CRPS over HardC's, ρ(error, spread)
    and spread-skill, one line per ensemble size (budget: members × factor over the task's
    ``task_members``)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(8.8, 3.4))
    raws = {r["case"]: r for r in rows if r["method"] == "raw"}
    update = {r["case"]: r for r in rows if r["method"] == "probconserv"}
    shrunk = {r["case"]: r for r in rows if r["method"] == "probconserv_shrunk"}
    counts = sorted({r["members"] for r in raws.values()})
    series = {  # one line per ensemble size, its configurations by budget
        f"{count} members": sorted(
            (c for c, r in raws.items() if r["members"] == count), key=lambda c: raws[c]["factor"]
        )
        for count in counts
    }

    def budget(case: str) -> float:
        return raws[case]["members"] * raws[case]["factor"] / task_members

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, cases), colour in zip(series.items(), colours, strict=False):
        x = [budget(c) for c in cases]
        for ax, lines in (
            (left, ((update, "crps_vs_hardc", "o-", "probconserv"),
                    (shrunk, "crps_vs_hardc", "s--", "shrunk"))),
            (right, ((raws, "error_spread_rho", "o-", "ρ"),
                     (raws, "spread_skill", "s--", "spread/skill"))),
        ):  # fmt: skip
            for table, column, style, label in lines:
                y = [table[c][column] for c in cases]
                ax.plot(x, y, style, color=colour, label=f"{label}, {name}")
    left.axhline(1.0, color="k", lw=0.8)
    left.set(xlabel="CPU budget / the task's", ylabel="CRPS / HardC's")
    right.set(xlabel="CPU budget / the task's", ylabel="ρ(|error|, spread); spread / skill")
    budgets = sorted({budget(c) for c in raws})
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.legend(fontsize=7)
    family = {"earthformer": "Earthformer", "fno": "FNO rollout"}[model]
    figure.suptitle(f"{family} ensembles, conserved tracer, test windows", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def summary(rows: list[dict]) -> str:
    """Per configuration and update: whether it meets the forecast-conservation targets (CRPS at
    most raw's and below HardC's, MSE at most 1.02 × raw's)."""
    lines = [
        "",
        "Per configuration (CRPS / HardC's, CRPS / raw, MSE / raw; meets the targets?):",
        "",
    ]
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = {r["method"]: r for r in rows if r["case"] == case}
        parts = []
        for method in ("probconserv", "probconserv_shrunk"):
            row = mine[method]
            met = row["crps_vs_raw"] <= 1 and row["crps_vs_hardc"] < 1 and row["mse_vs_raw"] <= 1.02
            parts.append(
                f"{method} {row['crps_vs_hardc']:.3f} / {row['crps_vs_raw']:.3f} / "
                f"{row['mse_vs_raw']:.3f} ({'yes' if met else 'no'})"
            )
        raw = mine["raw"]
        lines.append(
            f"- {case}: ρ(error, spread) {raw['error_spread_rho']:.2f}, spread/skill "
            f"{raw['spread_skill']:.2f}, raw MSE {raw['mse']:.3g}; " + "; ".join(parts)
        )
    return "\n".join(lines) + "\n"


def configurations(text: str) -> list[tuple[int, int]]:
    """``--configs``'s type: ``"4x1,8x1"`` → ``[(4, 1), (8, 1)]`` (members ≥ 2, factor ≥ 1; a
    usage error otherwise)."""
    found = []
    for part in text.split(","):
        members, _, factor = part.strip().partition("x")
        if not (members.isdigit() and factor.isdigit()) or int(members) < 2 or int(factor) < 1:
            raise argparse.ArgumentTypeError(
                f"must be <members>x<factor> items (members ≥ 2, factor ≥ 1), got {text!r}"
            )
        found.append((int(members), int(factor)))
    return found


def member_indices(args: argparse.Namespace) -> list[int] | None:
    """``--members`` as indices (``None`` where not given); given without ``--train-only`` or
    beyond the largest configuration is a usage error (:func:`refused`)."""
    if args.members is None:
        return None
    parts = args.members.split(",")
    which = [int(i) for i in parts if i.strip().isdigit()]
    largest = max(m for m, _ in args.configs)
    if len(which) != len(parts) or not set(which) <= set(range(largest)):
        raise ValueError(f"--members must be among 0..{largest - 1}, got {args.members!r}")
    return which


def refused(args: argparse.Namespace) -> str | None:
    """Why these options cannot run together (``None`` where they can)."""
    if args.members is not None and not args.train_only:
        return "--members needs --train-only (results need every member)"
    try:
        member_indices(args)
    except ValueError as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--work", type=Path, default=None, help="forecast_conservation's work")
        parser.add_argument(
            "--configs",
            type=configurations,
            default="4x1,4x2,4x4,8x1,8x2,8x4",
            help="<members>x<factor>,...",
        )
        parser.add_argument("--members", default=None, help="member indices (with --train-only)")
        parser.add_argument("--train-only", action="store_true", help="train, write no results")
        parser.add_argument("--model", choices=MODELS, default="earthformer", help="the family")

    args = arguments(__doc__, argv, extra, refused)
    started = time.perf_counter()
    torch.set_num_threads(1)
    scale = blocks.TOY if args.quick else blocks.FULL
    quiet = not sys.stderr.isatty()
    configs, which = args.configs, member_indices(args)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = work_folder(
            args.work,
            scratch,
            args.quick,
            Path("benchmarks/work") / "forecast_conservation",
            ("conserved",),
        )
        folder = work / "conserved"
        split, units = blocks.open_variant("conserved", scale, work, args.seed, quiet)
        test, grid = split["test"], blocks.grid_of(scale)
        for count, factor in configs:
            chosen = range(count) if which is None else [i for i in which if i < count]
            trained, steps, spent = members(
                args.model, factor, chosen, scale, split, units, folder, args.seed, quiet
            )
            if args.train_only:
                continue
            raw = blocks.member_forecasts(args.model, trained, test.context, scale.t_out, units)
            rows += scored(raw, test, grid, (count, factor), steps, spent, args.model)
    if args.train_only:
        return 0
    name = NAME if args.model == "earthformer" else f"{NAME}_{args.model}"
    plot(args.out / f"{name}.png", rows, scale.members, args.model)
    write_results(
        name, rows, args.seed, started, args.out, COLUMNS, NOTES + summary(rows),
        extra={
            "threads": torch.get_num_threads(), "model": args.model, "configs": configs,
            "scale": scale.setup(),
        },
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
