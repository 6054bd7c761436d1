"""Earthformer against UNet, ConvLSTM and persistence on N-body digits, at equal CPU training time.

N-body digit videos (:func:`physml.data.nbody_digits`: three 8×8-pixel digit sprites attracting
each other in a 32×32 box, a frame every 5 integration steps), 10 context frames → 10 forecast
frames. Training sequences draw their sprites from the ``train`` handwriting pool and test
sequences from the disjoint ``test`` pool. Every learned model trains for the same wall-clock
budget (MSE loss, Adam with a cosine schedule over the budget, batch 16, one seed) with
:func:`physml.models.forecasting.train_forecaster`; :func:`~physml.models.forecasting.
evaluate_forecaster` scores the test set: MSE and MAE summed over each frame's pixels (Earthformer's
convention, [0, 1] scale) and SSIM, averaged over sequences and lead times (per lead in the JSON).
Methods: ``earthformer`` (8 global vectors), ``earthformer-noglobal``, ``unet``, ``convlstm``,
``persistence``. Each finished model's row is kept in ``--work`` (with its checkpoint), so a
killed run continues where it stopped. Also writes ``earthformer_nbody-strip.png`` (context,
truth, every model's forecast of one test sequence).

    python benchmarks/earthformer_nbody.py          # full run -> results/earthformer_nbody.*
    python benchmarks/earthformer_nbody.py --quick  # smoke run (toy scale, seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_results  # noqa: E402

from physml._io import atomic_path, atomic_write_text  # noqa: E402
from physml.data.nbody import nbody_digits  # noqa: E402
from physml.models.baselines import ConvLSTM, Persistence, UNet, count_parameters  # noqa: E402
from physml.models.earthformer import Earthformer  # noqa: E402
from physml.models.forecasting import evaluate_forecaster, train_forecaster  # noqa: E402

NAME = "earthformer_nbody"
METHODS = ("earthformer", "earthformer-noglobal", "unet", "convlstm", "persistence")


@dataclass(frozen=True)
class Scale:
    """Data and training sizes of one mode; the budget is per learned model, in seconds."""

    size: int
    t_in: int
    t_out: int
    train: int
    test: int
    budget_s: float
    max_steps: int | None
    batch_size: int
    lr: float
    base_units: int
    stride: int = 5


SCALES = {
    "quick": Scale(
        size=16,
        t_in=4,
        t_out=4,
        train=16,
        test=4,
        budget_s=30.0,
        max_steps=2,
        batch_size=4,
        lr=1e-3,
        base_units=16,
    ),
    "full": Scale(
        size=32,
        t_in=10,
        t_out=10,
        train=3000,
        test=256,
        budget_s=450.0,
        max_steps=None,
        batch_size=16,
        lr=1e-3,
        base_units=32,
    ),
}


class Squashed(nn.Module):
    """``sigmoid(model(x))``: bounds a forecaster's frames to (0, 1), as the baselines' heads do."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def build(method: str, scale: Scale, seed: int) -> nn.Module:
    """The model ``method`` for frames ``(T_in, 1, size, size)``, initialised from ``seed``."""
    torch.manual_seed(seed)
    shape_in = (scale.t_in, 1, scale.size, scale.size)
    shape_out = (scale.t_out, 1, scale.size, scale.size)

    def earthformer(global_vectors: int) -> nn.Module:
        return Squashed(
            Earthformer(
                shape_in,
                shape_out,
                base_units=scale.base_units,
                num_heads=4,
                depth=(1, 1),
                downsample=4,
                pattern="axial",
                global_vectors=global_vectors,
            )
        )

    builders: dict[str, Callable[[], nn.Module]] = {
        "earthformer": lambda: earthformer(8),
        "earthformer-noglobal": lambda: earthformer(0),
        "unet": lambda: UNet(scale.t_in, scale.t_out, base=scale.base_units, depth=2),
        "convlstm": lambda: ConvLSTM(hidden=scale.base_units, layers=2, target_frames=scale.t_out),
        "persistence": lambda: Persistence(scale.t_out),
    }
    return builders[method]()


def videos(scale: Scale, seed: int) -> tuple[torch.Tensor, ...]:
    """Train and test ``(inputs, targets)``; train and test use disjoint handwriting and seeds."""
    common = dict(frames=scale.t_in + scale.t_out, size=scale.size, digits=3, stride=scale.stride)
    train = nbody_digits(scale.train, seed=seed, split="train", **common)
    test = nbody_digits(scale.test, seed=seed + 1, split="test", **common)
    return (*train.split(scale.t_in), *test.split(scale.t_in))


def load_partial(path: Path, setup: dict) -> dict[str, dict]:
    """Rows finished by an earlier run with the same ``setup``, by method (none otherwise)."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("setup") != setup:
        raise ValueError(
            f"--work: {str(path)!r} holds rows of a run with setup {saved.get('setup')}, not "
            f"{setup}; remove the folder or choose another --work"
        )
    return {row["method"]: row for row in saved["rows"]}


def strip_figure(
    path: Path, context: torch.Tensor, truth: torch.Tensor, forecasts: dict[str, torch.Tensor]
) -> None:
    """Rows: context ``(T_in, 1, H, W)``, truth and each forecast ``(T_out, 1, H, W)``."""
    rows = [("context", context), ("truth", truth), *forecasts.items()]
    columns = max(context.shape[0], truth.shape[0])
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.1 * columns, 1.15 * len(rows)), squeeze=False
    )
    for r, (label, frames) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < frames.shape[0]:
                ax.imshow(frames[c, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r <= 1:
                ax.set_title(
                    f"t{'−' if r == 0 else '+'}{columns - c if r == 0 else c + 1}", fontsize=7
                )
    fig.tight_layout(pad=0.2)
    with atomic_path(path, suffix=".png") as temporary:
        fig.savefig(temporary, dpi=100, format="png")
    plt.close(fig)


def per_lead_table(rows: list[dict]) -> str:
    """Markdown table of the frame MSE at each lead time, one line per method."""
    leads = len(rows[0]["mse_per_lead"])
    lines = ["| method | " + " | ".join(f"MSE t+{k + 1}" for k in range(leads)) + " |"]
    lines.append("|" + "---|" * (leads + 1))
    for row in rows:
        cells = " | ".join(f"{v:.3g}" for v in row["mse_per_lead"])
        lines.append(f"| {row['method']} | {cells} |")
    return "\n".join(lines)


NOTES = """
Data: N-body digits at {size}×{size} (3 sprites of {sprite}×{sprite} px, G = 0.05, softening
10, a frame every {stride} steps), {t_in} → {t_out} frames, {train} training sequences (train
handwriting pool) and {test} test sequences (disjoint pool). Every learned model trains for the
same wall-clock budget of {budget_s:.0f} s (`train_s`; `steps` of batch {batch_size}, Adam lr
{lr:g} with a cosine decay over the budget, MSE loss, training seed {seed}) on one CPU thread;
persistence repeats the last context frame. `mse` / `mae` are the squared / absolute error
summed over a frame's pixels ([0, 1] scale), `ssim` the mean SSIM (11×11 Gaussian window, data
range 1), each averaged over test sequences and the {t_out} lead times. Earthformer: base
{base_units} channels, 4 heads, 2 levels (one block each), 4× downsampling stem, axial cuboid
pattern, 8 or 0 global vectors, and a sigmoid on its output (the baselines end in one too:
frames lie in [0, 1]). UNet: base {base_units}, depth 2, context frames as channels. ConvLSTM:
encoder-forecaster, 2 layers of {base_units} hidden channels on 4× pixel-unshuffled frames.

For scale only (not comparable: 64×64 MNIST digits, 10 → 10, GPU-length training): the
Earthformer paper reports MSE 14.82 / MAE 39.93 / SSIM 0.9538 for Earthformer and 32.15 / 72.64 /
0.8886 for ConvLSTM on N-body MNIST.

Frame MSE per lead time:

{per_lead}
"""

COLUMNS = ["case", "method", "params", "steps", "train_s", "mse", "mae", "ssim"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="checkpoints and finished rows (default physml_output/earthformer_nbody; "
        "a temporary folder with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    mode = "quick" if args.quick else "full"
    scale = SCALES[mode]
    quiet = not sys.stderr.isatty()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or (Path(scratch) if args.quick else Path("physml_output") / NAME)
        work.mkdir(parents=True, exist_ok=True)
        setup = {"mode": mode, "seed": args.seed, "scale": asdict(scale)}
        partial = work / "rows.json"
        finished = load_partial(partial, setup)
        train_x, train_y, test_x, test_y = videos(scale, args.seed)
        case = f"nbody-{scale.size}px-{scale.t_in}to{scale.t_out}"
        rows, forecasts = [], {}
        for method in args.methods:
            model = build(method, scale, args.seed)
            report = train_forecaster(
                model,
                train_x,
                train_y,
                budget_s=scale.budget_s,
                max_steps=scale.max_steps,
                batch_size=scale.batch_size,
                lr=scale.lr,
                seed=args.seed,
                checkpoint=work / f"{method}.pt",
                quiet=quiet,
            )
            if method in finished:
                row = finished[method]
            else:
                scores = evaluate_forecaster(model, test_x, test_y, batch_size=32)
                row = {
                    "case": case,
                    "method": method,
                    "params": count_parameters(model),
                    "steps": report.steps,
                    "train_s": report.seconds,
                    "final_loss": sum(report.losses[-20:]) / max(len(report.losses[-20:]), 1),
                    "mse": scores.mse,
                    "mae": scores.mae,
                    "ssim": scores.ssim,
                    "mse_per_lead": scores.mse_per_lead.tolist(),
                    "mae_per_lead": scores.mae_per_lead.tolist(),
                    "ssim_per_lead": scores.ssim_per_lead.tolist(),
                }
                finished[method] = row
                saved = {"setup": setup, "rows": list(finished.values())}
                atomic_write_text(partial, json.dumps(saved, indent=1) + "\n")
            rows.append(row)
            with torch.no_grad():
                forecasts[method] = model.eval()(test_x[:1])[0]
            print(
                f"{method:22s} params {row['params']:8d} steps {row['steps']:5d} "
                f"mse {row['mse']:8.3f} mae {row['mae']:8.3f} ssim {row['ssim']:.4f}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    strip_figure(args.out / f"{NAME}-strip.png", test_x[0], test_y[0], forecasts)
    notes = NOTES.format(
        **asdict(scale), sprite=scale.size // 4, seed=args.seed, per_lead=per_lead_table(rows)
    )
    extra = {"setup": setup}
    write_results(NAME, rows, args.seed, started, args.out, COLUMNS, notes, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
