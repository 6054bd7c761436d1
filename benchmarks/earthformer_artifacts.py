"""Two artifacts of the Earthformer on a periodic tracer, and what removing them does to it.

The ``conservation-forecast`` task's Earthformer deep ensemble (``forecast_conservation.py``)
had, before it took the ``periodic+icnr`` options, members that disagree along the frame's edge
and in a patch-grid checkerboard (``forecast_correction_shapes-maps.png`` before its re-record):
zero padding invents a wall at the edge of a periodic domain, and the depth-to-space head starts
each token's ``downsample²`` pixels from independent random weights. Three configurations of
the same ensemble (members, data, steps and seeds of the task; only the model options differ):

* ``zero-pad``: ``Earthformer(...)`` as the task first built it (folders ``earthformer-<i>``);
* ``periodic``: ``Earthformer(..., periodic=True)`` — convolutions wrap around;
* ``periodic+icnr``: also ``head_init="icnr"`` — every token's pixels start equal (the task's
  members now: reloaded from ``--work`` when there).

Each is scored on the test windows of both variants (conserved mass, known source) with the
task's methods (``raw``, ``hardc``, ``probconserv``, ``probconserv_shrunk``): MSE of the mean,
CRPS, spread-skill, ``error_spread_rho`` (does the spread say where the error is?) and the
update's CRPS over HardC's. The figure shows the ensemble mean's error and the members' spread
for each configuration on one test window. Trainings resume from ``--work`` (the task's folder
layout: ``<variant>/earthformer[-<config>]-<member>``). ::

    OMP_NUM_THREADS=1 python benchmarks/earthformer_artifacts.py \\
        --work benchmarks/work/forecast_conservation
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    WORK_REMEDY,
    arguments,
    names_arg,
    run_main,
    work_folder,
    write_results,
)

from physml.io import save_figure  # noqa: E402
from physml.tasks import conservation_forecast as blocks  # noqa: E402

NAME = "earthformer_artifacts"
CONFIGS = {
    "zero-pad": {"periodic": False, "head_init": "random"},
    "periodic": {"periodic": True, "head_init": "random"},
    "periodic+icnr": {"periodic": True, "head_init": "icnr"},
}
METHODS = ("raw", "hardc", "probconserv", "probconserv_shrunk")
COLUMNS = (
    "case", "method", "mse", "mse_vs_zero_pad", "crps", "crps_fair", "crps_vs_hardc",
    "spread_skill", "error_spread_rho", "spearman_spread", "ce_abs", "train_s",
)  # fmt: skip
NOTES = """
`mse` of the ensemble mean and `crps` (per pixel, tracer units) on the test windows: the ensemble
CRPS, plain (biased) estimator, `crps_fair` the unbiased one;
`mse_vs_zero_pad`: over the `zero-pad` ensemble's of the same variant and method;
`crps_vs_hardc`: over HardC's of the same ensemble (below 1: the update beats the projection);
`error_spread_rho` (raw rows): Spearman's ρ between the mean's |error| and the members' standard
deviation per pixel; `spearman_spread`: ρ between the update's |correction| and that standard
deviation; `train_s`: CPU seconds of the configuration's training (all members).
"""


def member(config: str, scale: blocks.Scale, channels: int, seed: int) -> torch.nn.Module:
    """One member of ``config``: the task's own build with the configuration's options added."""
    options = {**scale.earthformer, **CONFIGS[config]}
    return blocks.build("earthformer", replace(scale, earthformer=options), channels, seed)


def ensemble(config, scale, split, units, folder: Path, seed: int, quiet: bool):
    """Train (or reload) ``scale.members`` members: ``(members, CPU seconds)``."""
    planned = blocks.plan(scale, split["train"], units, folder, seed, WORK_REMEDY)
    steps = planned["steps"]["earthformer"]
    channels = split["train"].context.shape[2]
    data = blocks.pairs("earthformer", split["train"], units)
    name = "earthformer" if config == "zero-pad" else f"earthformer-{config}"
    members, spent = [], 0.0
    for i in range(scale.members):
        run = blocks.fit(
            member(config, scale, channels, seed + i), blocks.mse_loss, data, steps,
            scale.batch, scale.lr, seed + i, folder / f"{name}-{i}", quiet, remedy=WORK_REMEDY,
        )  # fmt: skip
        members.append(run.model.eval())
        spent += run.train_s
    return members, spent


def plot_maps(path: Path, maps: dict) -> None:
    """Per configuration: the ensemble mean's |error| and the members' std, one window."""
    figure, axes = plt.subplots(2, len(maps), figsize=(3.6 * len(maps), 6.4))
    for column, (config, (error, spread)) in enumerate(maps.items()):
        for row, (field, title) in enumerate(((error, "|error| of the mean"), (spread, "std"))):
            ax = axes[row, column]
            image = ax.imshow(field.T, origin="lower", cmap="magma")
            ax.set_title(f"{config}: {title}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            figure.colorbar(image, ax=ax, fraction=0.046)
    figure.suptitle("Earthformer ensemble, conserved tracer: test window 0, last lead", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def summary(rows: list[dict]) -> str:
    lines = ["", "Per ensemble (raw MSE vs zero-pad; ρ(error, spread); update CRPS / HardC's):", ""]
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = {r["method"]: r for r in rows if r["case"] == case}
        lines.append(
            f"- {case}: MSE ×{mine['raw']['mse_vs_zero_pad']:.3f}, "
            f"ρ {mine['raw']['error_spread_rho']:.2f}, probconserv "
            f"{mine['probconserv']['crps_vs_hardc']:.3f}, shrunk "
            f"{mine['probconserv_shrunk']['crps_vs_hardc']:.3f}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--work", type=Path, default=None, help="forecast_conservation's work")
        parser.add_argument(
            "--variants", type=names_arg(blocks.VARIANTS), default=",".join(blocks.VARIANTS)
        )

    args = arguments(__doc__, argv, extra)
    started = time.perf_counter()
    torch.set_num_threads(1)
    scale = blocks.TOY if args.quick else blocks.FULL
    quiet = not sys.stderr.isatty()
    variants = args.variants
    rows, maps = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        work = work_folder(
            args.work,
            scratch,
            args.quick,
            Path("benchmarks/work") / "forecast_conservation",
            variants,
        )
        for variant in variants:
            folder = work / variant
            split, units = blocks.open_variant(variant, scale, work, args.seed, quiet)
            test, grid = split["test"], blocks.grid_of(scale)
            baseline = {}
            for config in CONFIGS:
                members, spent = ensemble(config, scale, split, units, folder, args.seed, quiet)
                with torch.no_grad():
                    raw = blocks.deep_ensemble(members, test.context, units)
                found, _ = blocks.forecast_rows(
                    variant, "earthformer", {"raw": (raw, 0.0)}, test, grid
                )
                found = {r["method"]: r for r in found if r["method"] in METHODS}
                for method, row in found.items():
                    baseline.setdefault(method, row["mse"])
                    row.update(
                        case=f"{config}-{variant}",
                        config=config,
                        mse_vs_zero_pad=row["mse"] / baseline[method],
                        crps_vs_hardc=row["crps"] / found["hardc"]["crps"],
                        train_s=spent,
                    )
                    rows.append(row)
                if variant == variants[0]:
                    error = (raw.mean(0) - test.target)[0, -1, 0].abs()
                    maps[config] = (error, raw.std(0)[0, -1, 0])
    plot_maps(args.out / f"{NAME}-maps.png", maps)
    write_results(
        NAME, rows, args.seed, started, args.out, COLUMNS, NOTES + summary(rows),
        extra={"threads": torch.get_num_threads(), "configs": CONFIGS, "scale": scale.setup()},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
