"""Does a larger training budget make the Earthformer ensemble's spread say where its error is?

The ``conservation-forecast`` task trains four Earthformer members on 900 CPU-s in all
(``benchmarks/forecast_conservation.py``); on that budget the members' spread hardly follows the
ensemble mean's error, and ProbConserv's update, which moves mass where the spread is, ends above
HardC's uniform projection in CRPS. Here the same ensemble (the task's build, data, seeds and
batch; periodic padding and the ICNR head) is trained on ``factor`` × the task's step count (a
fresh cosine schedule per factor) and scored with the task's methods on the conserved variant's
test windows: does ρ(error, spread) rise with training, and does the update then beat HardC?

Members are Trainer folders ``<variant>/earthformer-periodic+icnr[-x<factor>]-<member>`` under
``--work`` (factor 1 is the task's own members). ``--train-only`` with ``--members`` trains a
subset (for invocations side by side) and writes no results. ::

    OMP_NUM_THREADS=1 python benchmarks/forecast_budget.py \\
        --work benchmarks/work/forecast_conservation --factors 1,2,4
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import arguments, write_results  # noqa: E402

from physml.tasks import conservation_forecast as blocks  # noqa: E402
from physml.tasks.figures import save_figure  # noqa: E402

NAME = "forecast_budget"
METHODS = ("raw", "hardc", "probconserv", "probconserv_shrunk")
COLUMNS = (
    "case", "method", "factor", "steps", "mse", "crps", "crps_vs_hardc", "crps_vs_raw",
    "mse_vs_raw", "spread_skill", "error_spread_rho", "spearman_spread", "train_s",
)  # fmt: skip
NOTES = """
`factor`: the members' step count over the task's (`steps` each, a fresh cosine schedule);
`train_s`: CPU seconds of all four members' training. `mse` of the ensemble mean and `crps`
(per pixel, tracer units) on the conserved variant's test windows; `crps_vs_hardc` /
`crps_vs_raw` / `mse_vs_raw` against the same ensemble's HardC and raw rows (below 1: better);
`error_spread_rho` (raw rows): Spearman's ρ between the mean's |error| and the members'
standard deviation per pixel; `spearman_spread`: ρ between the update's |correction| and that
standard deviation.
"""


def folder_name(factor: int) -> str:
    """The Trainer folder prefix of the members trained on ``factor`` × the task's steps."""
    base = blocks.MEMBER_FOLDERS["earthformer"]
    return base if factor == 1 else f"{base}-x{factor}"


def members(factor, which, scale, split, units, folder: Path, seed: int, quiet: bool):
    """Train (or reload) members ``which`` on ``factor`` × the planned steps:
    ``(models, steps, CPU seconds)``."""
    steps = factor * blocks.plan(scale, split["train"], units, folder, seed)["steps"]["earthformer"]
    channels = split["train"].context.shape[2]
    data = blocks.pairs("earthformer", split["train"], units)
    trained, spent = [], 0.0
    for i in which:
        run = blocks.fit(
            blocks.build("earthformer", scale, channels, seed + i), blocks.mse_loss, data, steps,
            scale.batch, scale.lr, seed + i, folder / f"{folder_name(factor)}-{i}", quiet,
        )  # fmt: skip
        trained.append(run.model.eval())
        spent += run.train_s
    return trained, steps, spent


def scored(raw: torch.Tensor, test, grid, factor: int, steps: int, spent: float) -> list[dict]:
    """The task's methods on one ensemble, with the ratios of this study."""
    found, _ = blocks.forecast_rows("conserved", "earthformer", {"raw": (raw, 0.0)}, test, grid)
    found = {r["method"]: r for r in found if r["method"] in METHODS}
    for row in found.values():
        row.update(
            case=f"x{factor}",
            factor=factor,
            steps=steps,
            train_s=spent,
            crps_vs_hardc=row["crps"] / found["hardc"]["crps"],
            crps_vs_raw=row["crps"] / found["raw"]["crps"],
            mse_vs_raw=row["mse"] / found["raw"]["mse"],
        )
    return list(found.values())


def plot(path: Path, rows: list[dict]) -> None:
    """Against the training budget: the update's CRPS over HardC's, and ρ(error, spread)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.3))
    factors = sorted({r["factor"] for r in rows})
    for method, style in (("probconserv", "o-"), ("probconserv_shrunk", "s--"), ("raw", "^:")):
        left.plot(
            factors,
            [next(r for r in rows if r["factor"] == f and r["method"] == method)["crps_vs_hardc"]
             for f in factors],
            style,
            label=method,
        )  # fmt: skip
    left.axhline(1.0, color="k", lw=0.8)
    left.set(xscale="log", xlabel="training steps / the task's", ylabel="CRPS / HardC's")
    left.set_xticks(factors, [str(f) for f in factors])
    left.legend(fontsize=8)
    raw = [next(r for r in rows if r["factor"] == f and r["method"] == "raw") for f in factors]
    right.plot(factors, [r["error_spread_rho"] for r in raw], "o-", label="ρ(|error|, spread)")
    right.plot(factors, [r["spread_skill"] for r in raw], "s--", label="spread / skill")
    right.set(xscale="log", xlabel="training steps / the task's")
    right.set_xticks(factors, [str(f) for f in factors])
    right.legend(fontsize=8)
    figure.suptitle("Earthformer ensemble (4 members), conserved tracer, test windows", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--work", type=Path, default=None, help="forecast_conservation's work")
        parser.add_argument("--factors", default="1,2,4", help="step multiples, comma-separated")
        parser.add_argument("--members", default=None, help="member indices (with --train-only)")
        parser.add_argument("--train-only", action="store_true", help="train, write no results")

    args = arguments(__doc__, argv, extra)
    started = time.perf_counter()
    torch.set_num_threads(1)
    scale = blocks.TOY if args.quick else blocks.FULL
    quiet = not sys.stderr.isatty()
    try:
        factors = [int(f) for f in args.factors.split(",")]
    except ValueError:
        raise SystemExit(f"--factors must be integers ≥ 1, got {args.factors!r}") from None
    if not factors or min(factors) < 1:
        raise SystemExit(f"--factors must be integers ≥ 1, got {args.factors!r}")
    which = list(range(scale.members))
    if args.members is not None:
        if not args.train_only:
            raise SystemExit("--members needs --train-only (results need every member)")
        which = [int(i) for i in args.members.split(",")]
        if not set(which) <= set(range(scale.members)):
            raise SystemExit(f"--members must be among 0..{scale.members - 1}, got {which}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or (
            Path(scratch) if args.quick else Path("benchmarks/work") / "forecast_conservation"
        )
        folder = work / "conserved"
        folder.mkdir(parents=True, exist_ok=True)
        path = blocks.generate("conserved", scale, work, args.seed, quiet)
        split = {n: blocks.windows(path, scale, n) for n in ("train", "validation", "test")}
        units, test, grid = blocks.Units.of(split["train"]), split["test"], blocks.grid_of(scale)
        for factor in factors:
            trained, steps, spent = members(
                factor, which, scale, split, units, folder, args.seed, quiet
            )
            if args.train_only:
                continue
            raw = blocks.deep_ensemble(trained, test.context, units)
            rows += scored(raw, test, grid, factor, steps, spent)
    if args.train_only:
        return 0
    plot(args.out / f"{NAME}.png", rows)
    write_results(
        NAME, rows, args.seed, started, args.out, COLUMNS, NOTES,
        extra={"threads": torch.get_num_threads(), "factors": factors, "scale": scale.setup()},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
