"""``physml train`` for every model family: one process, two gloo processes, and a kill -9.

Three small datasets are generated with ``physml generate`` into a temporary folder: 1-D heat (24
samples on 33 nodes, 26 times), GPME diffusion (24 solutions on 33 × 26 points ``(t, x)``, for
the point-based ANP and deep ensemble) and 2-D moving digits (8 videos of 12 frames, 16 × 16
pixels).
Each family is trained through the command line, with the same global batch, four ways:

- ``1-proc``: ``python -m physml.cli train ... --accumulate 2``, uninterrupted (the reference:
  the global batch in the two halves the two ranks below take);
- ``2-proc-gloo``: ``torchrun --standalone --nproc_per_node 2 -m physml.cli train ...``;
- ``resume-after-kill``: the 1-proc command in a subprocess, SIGKILL as soon as its first
  checkpoint is on disk (mid-run), then the same command again, to the end;
- ``1-proc-whole-batch``: one process, the global batch in one pass.

Losses come from each run's checkpoint (``physml.training.load_checkpoint``), throughput from its
``report.json``; ``bitwise_resume`` compares every tensor of the resumed run's final model with
the uninterrupted run's (``torch.equal``). One torch thread per process.

    python benchmarks/training.py          # full run -> results/training.{json,md}
    python benchmarks/training.py --quick  # smoke run: fno on the operator task only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_out, results_folder, run_main, seed_arg, write_results  # noqa: E402

from physml.training import load_checkpoint  # noqa: E402

NAME = "training"
METHODS = ("1-proc", "2-proc-gloo", "resume-after-kill", "1-proc-whole-batch")
ACCUMULATE = {"1-proc": 2, "2-proc-gloo": 1, "resume-after-kill": 2, "1-proc-whole-batch": 1}
"""Micro-batches per process: the 1-proc reference adds the global batch's two halves, split as
the two ranks split it, so it sums the same gradients in the same order as ``2-proc-gloo``."""
TOLERANCE = 1e-5  # the target of loss_rel_diff
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Case:
    data: str  # "heat", "gpme" or "digits"
    model: str
    task: str
    options: tuple[str, ...]


POINTS = ("--context-points", "20", "--context-times", "4", "--target-points", "64")
FNO = ("--modes", "8", "--hidden", "16", "--layers", "2")
FRAMES = ("--t-in", "4", "--t-out", "4")  # physml train refuses options a model does not read
CASES = {
    "fno-operator": Case("heat", "fno", "operator", FNO),
    "fno-rollout": Case("heat", "fno", "rollout", FNO),
    "boon-fno-operator": Case("heat", "boon-fno", "operator", FNO),
    "earthformer-forecast": Case(
        "digits", "earthformer", "forecast", ("--base-units", "8", *FRAMES)
    ),
    "unet-forecast": Case("digits", "unet", "forecast", ("--base-units", "8", *FRAMES)),
    "convlstm-forecast": Case(
        "digits", "convlstm", "forecast", ("--hidden", "8", "--layers", "2", *FRAMES)
    ),
    "anp-operator": Case("gpme", "anp", "operator", ("--hidden", "16", "--layers", "2", *POINTS)),
    "ensemble-operator": Case(
        "gpme", "ensemble", "operator", ("--hidden", "16", "--members", "3", "--layers", "2")
    ),
}
COMMON = ("--lr", "1e-3", "--quiet")
GENERATE = {
    "heat": ("heat", "--n", "24", "--nx", "33"),
    "gpme": ("diffusion", "--n", "24", "--nx", "33", "--nt", "26"),
    "digits": ("moving-digits", "--n", "8", "--size", "16", "--frames", "12", "--digits", "1"),
}
SCALES = {  # steps, batch, checkpoint_every
    "quick": (40, 4, 5),
    "full": (200, 4, 10),
}


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def entry(processes: int) -> list[str]:
    """The command prefix that runs ``physml ARGS`` in one or two (torchrun) processes."""
    launch = [sys.executable]
    if processes > 1:
        launch = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(processes)]
    return [*launch, "-m", "physml.cli"]


def run(command: list[str]) -> float:
    """Run ``command`` to completion (an error shows its stderr); its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(command, env=environment(), capture_output=True, text=True)
    if done.returncode:
        tail = done.stderr[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return time.perf_counter() - started


def run_and_kill(command: list[str], folder: Path) -> tuple[int, float]:
    """Start ``command``, SIGKILL it once its first checkpoint exists; (step saved, seconds)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoint = folder / "checkpoint.pt"
    while process.poll() is None and not checkpoint.exists():
        time.sleep(0.005)
    process.kill()  # SIGKILL; a no-op when it has already ended
    _, stderr = process.communicate()
    if process.returncode not in (0, -9):
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    return int(load_checkpoint(folder)["step"]), time.perf_counter() - started


def train_command(
    prefix: list[str], case: Case, data: Path, out: Path, scale, seed: int, accumulate: int
):
    steps, batch, every = scale
    return [
        *prefix,
        "train",
        "--data",
        str(data),
        "--model",
        case.model,
        "--task",
        case.task,
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch",
        str(batch),
        "--accumulate",
        str(accumulate),
        "--checkpoint-every",
        str(every),
        "--seed",
        str(seed),
        *case.options,
        *COMMON,
    ]


def outcome(folder: Path) -> tuple[dict, dict]:
    return load_checkpoint(folder), json.loads((folder / "report.json").read_text())


def rel_diffs(losses: list[float], reference: list[float]) -> list[float]:
    """|loss − loss_ref| / |loss_ref| step by step (``inf`` when the runs differ in length)."""
    if len(losses) != len(reference):
        return [float("inf")]
    return [abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True)]


def abs_diffs(losses: list[float], reference: list[float]) -> list[float]:
    """|loss − loss_ref| step by step (``inf`` when the runs differ in length)."""
    if len(losses) != len(reference):
        return [float("inf")]
    return [abs(a - b) for a, b in zip(losses, reference, strict=True)]


def same_model(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def benchmark_case(name: str, case: Case, data: Path, work: Path, scale, seed) -> list:
    folders = {method: work / f"{name}-{method}" for method in METHODS}
    walls, killed_at = {}, None
    commands = {
        method: train_command(
            entry(2 if method == "2-proc-gloo" else 1),
            case,
            data,
            folders[method],
            scale,
            seed,
            ACCUMULATE[method],
        )
        for method in METHODS
    }
    for method in METHODS:
        if method == "resume-after-kill":
            killed_at, first = run_and_kill(commands[method], folders[method])
            walls[method] = first + run(commands[method])
        else:
            walls[method] = run(commands[method])
    reference, _ = outcome(folders["1-proc"])
    rows = []
    for method in METHODS:
        state, report = outcome(folders[method])
        diffs = rel_diffs(list(state["losses"]), list(reference["losses"]))
        gaps = abs_diffs(list(state["losses"]), list(reference["losses"]))
        over = [step for step, diff in enumerate(diffs) if diff > TOLERANCE]
        row = {
            "case": name,
            "method": method,
            "model": case.model,
            "task": case.task,
            "steps": int(state["step"]),
            "batch": scale[1],
            "final_loss": float(state["losses"][-1]),
            "loss_rel_diff": max(diffs),
            "loss_abs_diff": max(gaps),
            "first_over_1e-5": over[0] if over else "",
            "bitwise_resume": "",
            "killed_at": "",
            "throughput": float(report["samples_per_s"]),
            "wall_s": walls[method],
        }
        if method == "2-proc-gloo":  # the update after the last loss too: the final weights
            row["bitwise_model"] = same_model(state["model"], reference["model"])
        if method == "resume-after-kill":
            row["bitwise_resume"] = same_model(state["model"], reference["model"])
            row["killed_at"] = killed_at
            row["resumed_from"] = int(report["resumed_from"])
        rows.append(row)
        keys = ("final_loss", "loss_rel_diff", "first_over_1e-5", "bitwise_resume", "killed_at")
        shown = {k: row[k] for k in keys}
        print(f"{name:22s} {method:18s} {shown}", flush=True)
    return rows


NOTES = """
Each family is trained with `physml train` on a small generated file (heat: 24 samples on 33
nodes; GPME diffusion: 24 solutions on 26 times × 33 nodes, for the ANP — 20 context points → 64
target points, 8 point sets per solution — and the deep ensemble — 3 members, one row per point
`(k, t, x) → u`; moving digits: 8 videos of 12 frames of 16 × 16, 4 context → 4 target frames),
with the same global batch and settings for every method; 10 % of the samples are held out for
validation.
`1-proc` (the reference) and `resume-after-kill` run one process with `--accumulate 2`: each step
adds the gradients of the global batch's two halves, split as the two `2-proc-gloo` ranks split
it, so both runs add the same gradients in the same order. `1-proc-whole-batch` takes the global
batch in one pass: its difference to the reference is float rounding alone (another summation
order), amplified by training.
`final_loss` is the training loss of the last step (mean over ranks). `loss_rel_diff` is
max over steps of |loss − loss_1proc| / |loss_1proc| against the 1-proc run of the same family,
read from the checkpoints; `first_over_1e-5` is the first step (0-based) where that ratio exceeds
1e-5 (step 0 is the loss of the initial weights on the same first batch, so a difference there
means the runs started from other weights; a difference that starts at rounding level and grows
later is the training amplifying float rounding, e.g. another reduction order).
`loss_abs_diff` is max over steps of |loss − loss_1proc|: the ANP's loss (the negative ELBO per
point, a log density) turns negative during training, and at the step where it crosses zero the
relative difference divides by almost nothing.
`resume-after-kill` starts the 1-proc command, sends SIGKILL once its first checkpoint is on disk
(`killed_at`: the step that checkpoint holds), and reruns the command to the end;
`bitwise_resume` is true when every tensor of its final model equals the uninterrupted 1-proc
run's (`torch.equal`); `bitwise_model` (2-proc-gloo rows, JSON) the same for the two processes'
final model. `throughput` is samples/s from the run's report.json (training steps only;
for a resumed run, the steps after the resume); `wall_s` is the wall time of the command(s),
process start-up included. One torch thread per process, CPU, gloo.
Targets: two processes match one to loss_rel_diff ≤ 1e-5, and bitwise_resume is true for every
family.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    add_out(parser)
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), help="only these families")
    args = parser.parse_args(argv)
    args.out = results_folder(args.out, args.quick)
    started = time.perf_counter()
    torch.set_num_threads(1)
    scale = SCALES["quick" if args.quick else "full"]
    names = args.cases or (["fno-operator"] if args.quick else list(CASES))
    rows = []
    with tempfile.TemporaryDirectory(prefix="physml-training-") as folder:
        work = Path(folder)
        files = {}
        for key in sorted({CASES[name].data for name in names}):
            files[key] = work / f"{key}.h5"
            generate = [*GENERATE[key], "--seed", str(args.seed), "--out", str(files[key])]
            run([sys.executable, "-m", "physml.cli", "generate", *generate, "--quiet"])
        for name in names:
            case = CASES[name]
            rows += benchmark_case(name, case, files[case.data], work, scale, args.seed)
    steps, batch, every = scale
    init = "Plain CLI: `python -m physml.cli train`; `--seed` fixes the initial weights too."
    pairs = [row for row in rows if row["method"] == "2-proc-gloo"]
    met = [row for row in pairs if row["loss_rel_diff"] <= TOLERANCE]
    bitwise = [row for row in rows if row["bitwise_resume"] is True]
    summary = (
        f"Targets met: 2-proc-gloo ≤ 1e-5 for {len(met)} of {len(names)} families; "
        f"bitwise_resume true for {len(bitwise)} of {len(names)}."
    )
    notes = (
        f"{NOTES.strip()}\n{steps} steps, batch {batch}, checkpoint every {every} steps. {init}\n\n"
        f"{summary}"
    )
    columns = [
        "case",
        "method",
        "steps",
        "final_loss",
        "loss_rel_diff",
        "loss_abs_diff",
        "first_over_1e-5",
        "bitwise_resume",
        "killed_at",
        "throughput",
        "wall_s",
    ]
    extra = {
        "load_average_1min_at_end": os.getloadavg()[0],
        "setup": {
            "steps": steps,
            "batch": batch,
            "checkpoint_every": every,
            "generate": {key: list(GENERATE[key]) for key in sorted(GENERATE)},
            "options": {name: [*CASES[name].options, *COMMON] for name in names},
        },
    }
    write_results(NAME, rows, args.seed, started, args.out, columns, notes, extra)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
