"""Every exploratory N-body run at the benchmark's budget, MSE against SSIM, in one picture.

Reads the table of ``results/earthformer_nbody-exploration.md`` (one row per run of
``earthformer_nbody_variant.py``) and plots the runs that share the benchmark's set-up — 450
CPU-s, loss MSE + 0.1 × L1, the 3000 training videos — coloured by model, so the spread of
every Earthformer configuration tried can be seen against the baselines'. Writes
``results/earthformer_nbody-exploration.png`` (or the same name in ``--out``).

    python benchmarks/earthformer_nbody_exploration_figure.py
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, run_main  # noqa: E402

from physml.io import save_figure  # noqa: E402

RECORD = RESULTS / "earthformer_nbody-exploration.md"
FIGURE = RESULTS / "earthformer_nbody-exploration.png"
HEADER = "| tag | method | budget s | overrides | steps | MSE | MAE | SSIM | MSE t+1 | MSE t+10 |"
STYLE = {
    "earthformer-noglobal": ("tab:blue", "o", "Earthformer, no global vectors"),
    "earthformer": ("tab:blue", "^", "Earthformer, 8 global vectors"),
    "convlstm": ("tab:red", "s", "ConvLSTM"),
    "unet": ("tab:green", "D", "UNet"),
}


@dataclass(frozen=True)
class Run:
    """One row of the record's table."""

    tag: str
    method: str
    budget: str
    overrides: str
    mse: float
    ssim: float


def read_runs(path: Path = RECORD) -> list[Run]:
    """The rows of the record's run table (the first table, under :data:`HEADER`)."""
    lines = path.read_text().splitlines()
    if HEADER not in lines:
        raise ValueError(f"{str(path)!r} has no run table headed {HEADER!r}")
    runs = []
    for line in lines[lines.index(HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != 10:
            raise ValueError(f"{str(path)!r}: a run row needs 10 cells, got {line!r}")
        tag, method, budget, overrides, _, mse, _, ssim = cells[:8]
        runs.append(Run(tag, method.split(" (")[0], budget, overrides, float(mse), float(ssim)))
    return runs


def benchmark_like(run: Run) -> bool:
    """The run shares the benchmark's budget, loss and data (only a model setting differs)."""
    loss_changed = "loss mse" in run.overrides and "mse+0.1l1" not in run.overrides
    return (
        run.budget == "450"
        and run.method in STYLE
        and not loss_changed
        and "training videos" not in run.overrides
    )


def figure(runs: list[Run], path: Path = FIGURE) -> None:
    """MSE (x) against SSIM (y), one marker per run, its tag beside it."""
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for method, (colour, marker, label) in STYLE.items():
        chosen = [run for run in runs if run.method == method]
        if not chosen:
            continue
        ax.scatter(
            [run.mse for run in chosen],
            [run.ssim for run in chosen],
            c=colour,
            marker=marker,
            label=f"{label} ({len(chosen)})",
            alpha=0.8,
        )
        for run in chosen:
            ax.annotate(
                run.tag,
                (run.mse, run.ssim),
                fontsize=6,
                xytext=(3, 2),
                ha="left",
                textcoords="offset points",
            )
    ax.set_xlabel("test MSE per frame (lower is better)")
    ax.set_ylabel("test SSIM (higher is better)")
    ax.set_title("N-body digits, 450 CPU-s per run: every configuration tried", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the figure")
    args = parser.parse_args(argv)
    runs = [run for run in read_runs() if benchmark_like(run)]
    figure(runs, args.out / FIGURE.name)
    for method in STYLE:
        values = sorted(run.mse for run in runs if run.method == method)
        if values:
            print(f"{method:22s} runs {len(values):2d} MSE {values[0]:.2f} – {values[-1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
