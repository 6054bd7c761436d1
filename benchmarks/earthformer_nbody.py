"""Earthformer against UNet, ConvLSTM and persistence on N-body digits, at equal CPU training time.

The set-up (sizes, models, loss, videos, the physics yardstick) is :mod:`nbody_forecasting`'s.
N-body digit videos (:func:`physml.data.nbody_digits`: three 8×8-pixel digit sprites attracting
each other in a 32×32 box, a frame every 5 integration steps, lengths scaled from the 64×64
set-up by :func:`physml.data.nbody.canvas_lengths`), 10 context frames → 10 forecast frames.
Training sequences draw their sprites from the ``train`` handwriting pool and test sequences
from the disjoint ``test`` pool.
Every learned model trains for the same budget of CPU seconds (``training_loss``, Adam with a
cosine schedule over the budget, batch 16, one seed, the head ``ClampedOutput``) with
:func:`physml.training.forecasting.train_forecaster`; :func:`~physml.models.forecasting.
evaluate_forecaster` scores the test set: MSE and MAE summed over each frame's pixels (Earthformer's
convention, [0, 1] scale) and SSIM, averaged over sequences and lead times (per lead in the JSON).
Methods: ``earthformer`` (8 global vectors), ``earthformer-noglobal``, ``unet``, ``convlstm``,
``persistence``, ``blank`` (all black), and ``physics-reference`` (``physics_reference``: the
true dynamics run on from a slightly blurred true state, a yardstick for how predictable the
videos are, not a competitor). Each finished model's row is kept in ``--work`` (with its
checkpoint), so a killed run continues where it stopped and a finished model is not trained
again (its weights are read back for the figures); several processes may share ``--work``
with different ``--methods``. Also writes ``earthformer_nbody-strip.png`` (context, truth,
every model's forecast of one test sequence) and ``earthformer_nbody-curves.png`` (each learned
model's training loss against the CPU seconds spent); ``-long`` in the names with
``--scale long``.

    python benchmarks/earthformer_nbody.py               # full run -> results/earthformer_nbody.*
    python benchmarks/earthformer_nbody.py --quick       # smoke run (toy scale, seconds)
    python benchmarks/earthformer_nbody.py --scale long  # -> results/earthformer_nbody-long.*
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_out,
    check_same_setup,
    drawn_setup,
    results_folder,
    run_main,
    seed_arg,
    work_folder,
    write_results,
)
from nbody_forecasting import (  # noqa: E402
    EARTHFORMER,
    L1_WEIGHT,
    MODELS,
    REFERENCE,
    SCALES,
    build,
    datasets,
    model_config,
    physics_reference,
    training_loss,
)

from physml.data.nbody import canvas_lengths  # noqa: E402
from physml.io import atomic_write_text, save_figure  # noqa: E402
from physml.models.baselines import count_parameters  # noqa: E402
from physml.models.forecasting import (  # noqa: E402
    ForecastScores,
    evaluate_forecaster,
    score_forecast,
)
from physml.tasks.figures import frame_strip  # noqa: E402
from physml.training.forecasting import (  # noqa: E402
    check_no_old_checkpoint,
    load_forecaster,
    train_forecaster,
)

NAME = "earthformer_nbody"
METHODS = (*MODELS, "physics-reference")


def load_partial(path: Path, setup: dict) -> dict[str, dict]:
    """Rows finished by an earlier run with the same ``setup``, by method (none when there is
    no ``path``; a :class:`~common.WorkMismatch` when its rows are another setup's)."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    check_same_setup(path, saved.get("setup"), setup)
    return {row["method"]: row for row in saved["rows"]}


def strip_figure(
    path: Path, context: torch.Tensor, truth: torch.Tensor, forecasts: dict[str, torch.Tensor]
) -> None:
    """Rows: context ``(T_in, 1, H, W)``, truth and each forecast ``(T_out, 1, H, W)``."""
    rows = [("context", context), ("truth", truth), *forecasts.items()]
    columns = max(context.shape[0], truth.shape[0])
    titles = [
        [f"t−{columns - c}" for c in range(columns)],
        [f"t+{c + 1}" for c in range(columns)],
    ]
    frame_strip(path, rows, titles, dpi=100)


def curves_figure(path: Path, curves: dict[str, tuple[float, list[float]]]) -> None:
    """Each learned model's training loss (mean over 50 steps) against CPU seconds, from
    ``{method: (seconds, per-step losses)}`` (steps taken as evenly spaced in time)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for method, (seconds, losses) in curves.items():
        values = torch.tensor(losses, dtype=torch.float64)
        window = min(50, len(values))
        smooth = values.unfold(0, window, 1).mean(1)
        steps = torch.arange(window, len(values) + 1, dtype=torch.float64)
        ax.plot(steps * seconds / len(values), smooth, label=method, lw=1.2)
    ax.set_xlabel("CPU seconds of training")
    ax.set_ylabel("training loss (50-step mean)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _row(
    case: str,
    method: str,
    params: int,
    steps: int,
    seconds: float,
    final_loss: float,
    scores: ForecastScores,
) -> dict:
    return {
        "case": case,
        "method": method,
        "params": params,
        "steps": steps,
        "train_s": seconds,
        "final_loss": final_loss,
        "mse": scores.mse,
        "mae": scores.mae,
        "ssim": scores.ssim,
        "mse_per_lead": scores.mse_per_lead.tolist(),
        "mae_per_lead": scores.mae_per_lead.tolist(),
        "ssim_per_lead": scores.ssim_per_lead.tolist(),
    }


def _report(row: dict) -> None:
    print(
        f"{row['method']:22s} params {row['params']:8d} steps {row['steps']:5d} "
        f"mse {row['mse']:8.3f} mae {row['mae']:8.3f} ssim {row['ssim']:.4f}",
        flush=True,
    )


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
Data: N-body digits at {size}×{size} (3 sprites of {sprite}×{sprite} px, a frame every {stride}
integration steps), {t_in} → {t_out} frames, {train} training sequences (train handwriting pool)
and {test} test sequences (disjoint pool). The generator's lengths are scaled by {size}/64 from
its 64×64 settings (initial speed {speed_lo:g}–{speed_hi:g} px/step, velocity clip {clip:g},
softening {softening:g}, G = {g:g}), so the sprites move as far, relative to the frame, as on
the 64² canvas. Every learned model trains for the same budget of {budget_s:.0f} s of CPU time
of its process on one thread (`train_s`; `steps` of batch {batch_size}, Adam lr {lr:g} with a
cosine decay over the budget, training seed {seed}) with the loss MSE + {l1_weight:g} × L1, and
ends in the same head: a linear output clamped to [0, 1] with a straight-through gradient.
Persistence repeats the last context frame. `mse` / `mae` are the squared / absolute error
summed over a frame's pixels ([0, 1] scale), `ssim` the mean SSIM (11×11 Gaussian window, data
range 1), each averaged over test sequences and the {t_out} lead times.

Models: Earthformer with base {base_units} channels, {num_heads} heads, levels of {depth} blocks,
a {downsample}× downsampling stem with {stem_channels} full-resolution channels, the
`{pattern}` cuboid pattern, MLP ratio {mlp_ratio:g}, a depthwise {ffn_kernel}×{ffn_kernel}
convolution in each feed-forward, relative position bias {relative_position}, and 8 (or 0)
global vectors. UNet: base {unet_base}, depth 2, context frames as channels. ConvLSTM:
encoder-forecaster, 2 layers of {convlstm_hidden} hidden channels on 4× pixel-unshuffled frames.
The widths make the parameter counts comparable.

How these settings were chosen: exploratory runs of 450 CPU-s on the first 3000 training
videos, scored on this test set and later checked on held-out validation videos
(`results/earthformer_nbody-exploration.md`), one seed. See the README for what each choice did;
the baselines were tuned less than the Earthformer (their width, and the head and loss shared
with it).

`blank` is the all-black forecast: a window whose truth is empty scores SSIM 1 against it, so
SSIM on these mostly-empty frames rewards an exactly black background before any sprite.

`physics-reference` is not a model: it runs the generator's own dynamics on from the last context
frame's true state, blurred by Gaussian noise of {position_sd:g} px on positions and
{velocity_sd:g} px/step on velocities (about what ten frames rendered at whole pixels leave
unknown), and averages {samples} renders. It measures how predictable the videos are: roughly
what a forecaster that had learned the dynamics and the sprites could reach. The gap between it
and the learned models is what they have not learned in the budget; the training curves are in
`{name}-curves.png`.

For scale only (not comparable: 64×64 MNIST digits, 10 → 10, GPU-length training): the
Earthformer paper reports MSE 14.82 / MAE 39.93 / SSIM 0.9538 for Earthformer and 32.15 / 72.64 /
0.8886 for ConvLSTM on N-body MNIST.

Frame MSE per lead time:

{per_lead}
"""

REUSED = """
Rows {methods} were trained and scored by earlier processes (`--methods`, sharing the work
folder `{work}`) and read back from its `rows.json`: this file's command and wall time are those
of the process that assembled them, not of their training. Their `steps`, `train_s` and scores
are their own.
"""

COLUMNS = ["case", "method", "params", "steps", "train_s", "mse", "mae", "ssim"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same as --scale quick")
    parser.add_argument("--scale", choices=list(SCALES), default="full")
    add_out(parser)
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="checkpoints and finished rows (default physml_output/earthformer_nbody[-long]; "
        "a temporary folder with --quick)",
    )
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)
    if args.quick and args.scale != "full":
        parser.error(f"--quick is --scale quick; it cannot go with --scale {args.scale}")
    started = time.perf_counter()
    torch.set_num_threads(1)
    mode = "quick" if args.quick else args.scale
    args.out = results_folder(args.out, mode == "quick")
    scale = SCALES[mode]
    name = NAME if mode in ("quick", "full") else f"{NAME}-{mode}"
    quiet = not sys.stderr.isatty()
    with tempfile.TemporaryDirectory() as scratch:
        work = work_folder(
            args.work,
            scratch,
            mode == "quick",
            Path("physml_output") / name,
            ("rows.json", "*/checkpoint.pt"),
        )
        for method in args.methods:  # before any training: the run would start them over
            check_no_old_checkpoint(work / method, "--work")
        work.mkdir(parents=True, exist_ok=True)
        setup = {
            "mode": mode,
            "seed": args.seed,
            "scale": asdict(scale),
            "physics": canvas_lengths(scale.size),
            "earthformer": EARTHFORMER,
            "l1_weight": L1_WEIGHT,
            "reference": REFERENCE,
        }
        setup = json.loads(json.dumps(drawn_setup(setup)))  # as read back from rows.json (lists)
        partial = work / "rows.json"
        finished = load_partial(partial, setup)
        train, test = datasets(scale, args.seed)
        train_x, train_y = train.split(scale.t_in)
        test_x, test_y = test.split(scale.t_in)
        case = f"nbody-{scale.size}px-{scale.t_in}to{scale.t_out}"
        rows, forecasts, curves = [], {}, {}
        reused: list[str] = []  # rows trained and scored by an earlier process
        for method in args.methods:
            if method == "physics-reference":
                prediction = physics_reference(test, scale, args.seed, **REFERENCE)
                forecasts[method] = prediction[0]
                scores = score_forecast(prediction, test_y)
                row = _row(case, method, 0, 0, 0.0, 0.0, scores)
                rows.append(row)
                _report(row)
                continue
            model = build(method, scale, args.seed)
            learned = any(p.requires_grad for p in model.parameters())
            if method in finished and learned:  # not trained again: read back for the figures
                if not (work / method / "checkpoint.pt").is_file():
                    print(
                        f"note: {method}'s row is read back from {partial}, but its checkpoint "
                        f"is gone from {work / method}: it is left out of the figures",
                        file=sys.stderr,
                    )
                    rows.append(finished[method])
                    reused.append(method)
                    _report(finished[method])
                    continue
                report = load_forecaster(model, work / method, model_config(method, scale))
            else:
                report = train_forecaster(
                    model,
                    train_x,
                    train_y,
                    budget_s=scale.budget_s,
                    max_steps=scale.max_steps,
                    batch_size=scale.batch_size,
                    lr=scale.lr,
                    seed=args.seed,
                    checkpoint=work / method,
                    quiet=quiet,
                    clock="cpu",
                    loss=training_loss,
                    model_config=model_config(method, scale),
                )
            if report.steps:
                curves[method] = (report.seconds, report.losses)
            if method in finished:
                row = finished[method]
                reused.append(method)
            else:
                scores = evaluate_forecaster(model, test_x, test_y, batch_size=32)
                final = sum(report.losses[-20:]) / max(len(report.losses[-20:]), 1)
                params = count_parameters(model)
                row = _row(case, method, params, report.steps, report.seconds, final, scores)
                # Merged with what is on disk: another process may run other --methods.
                finished = {**load_partial(partial, setup), method: row}
                saved = {"setup": setup, "rows": list(finished.values())}
                atomic_write_text(partial, json.dumps(saved, indent=1) + "\n")
            rows.append(row)
            with torch.no_grad():
                forecasts[method] = model.eval()(test_x[:1])[0]
            _report(row)
    args.out.mkdir(parents=True, exist_ok=True)
    strip_figure(args.out / f"{name}-strip.png", test_x[0], test_y[0], forecasts)
    if curves:
        curves_figure(args.out / f"{name}-curves.png", curves)
    lengths = canvas_lengths(scale.size)
    earthformer = {"stem_channels": scale.base_units // 2, "ffn_kernel": 0, **EARTHFORMER}
    notes = NOTES.format(
        **asdict(scale),
        **earthformer,
        **lengths,
        speed_lo=lengths["speed"][0],
        speed_hi=lengths["speed"][1],
        l1_weight=L1_WEIGHT,
        sprite=scale.size // 4,
        seed=args.seed,
        **REFERENCE,
        per_lead=per_lead_table(rows),
        name=name,
    )
    if reused:
        notes += REUSED.format(methods=", ".join(f"`{m}`" for m in reused), work=work)
    extra = {"setup": setup, "reused_rows": reused}
    write_results(name, rows, args.seed, started, args.out, COLUMNS, notes, extra)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
