"""The cost of the ProbConserv update as the grid grows.

One test function predicted on an ``n × n`` (time, x) grid: a Gaussian per time slice with a full
``(n, n)`` covariance or a diagonal one, and one mass-conservation row per slice. The update is
timed for n = 51 … 401 (201 is the ProbConserv protocol), with one torch thread and the default.
The full-covariance result is returned as ``Σ − F Fᵀ`` (rank one per slice) and not assembled; the
time to assemble it (``.dense()``), which a caller pays only if it asks, is reported beside it.

    python benchmarks/probconserv_update.py          # full run -> results/probconserv_update.*
    python benchmarks/probconserv_update.py --quick  # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_out, best_time, results_folder, run_main, seed_arg, write_results  # noqa: E402

from pdes import Grid1D  # noqa: E402
from physml import Gaussian, LinearConstraint, constrain, mass_conservation  # noqa: E402

F64 = torch.float64


def problem(n: int, seed: int) -> tuple[Gaussian, Gaussian, LinearConstraint]:
    gen = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, n, n, generator=gen, dtype=F64) / n**0.5
    full = factors @ factors.transpose(-1, -2) + 1e-3 * torch.eye(n, dtype=F64)
    mean = torch.randn(n, n, generator=gen, dtype=F64)
    variance = torch.rand(n, n, generator=gen, dtype=F64) + 0.1
    constraint = mass_conservation(Grid1D(n), torch.randn(n, generator=gen, dtype=F64))
    return Gaussian(mean, full), Gaussian(mean, variance), constraint


def seconds_per_update(update: nn.Module, gaussian: Gaussian, assemble: bool = False) -> float:
    """Best time of one update (and, with ``assemble``, of building the dense posterior too)."""
    if assemble:
        return best_time(lambda: update(gaussian).cov.dense(), 3, 0.2)
    return best_time(lambda: update(gaussian), 3, 0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    add_out(parser)
    parser.add_argument("--seed", type=seed_arg, default=0)
    args = parser.parse_args(argv)
    args.out = results_folder(args.out, args.quick)
    started = time.perf_counter()
    sizes = [21, 51] if args.quick else [51, 101, 201, 301, 401]
    default_threads = torch.get_num_threads()
    rows = []
    for n in sizes:
        full, diagonal, constraint = problem(n, args.seed)
        update = constrain(nn.Identity(), constraint)  # the prediction is given: return it
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            timings = {
                "full": seconds_per_update(update, full),
                "diagonal": seconds_per_update(update, diagonal),
            }
            assemble = seconds_per_update(update, full, assemble=True)
            for kind, seconds in timings.items():
                out = update(full if kind == "full" else diagonal)
                mass_error = constraint.residual(out.mean).abs().max().item()
                row = {
                    "case": f"update-{kind}",
                    "method": "physml",
                    "n": n,
                    "time_slices": n,
                    "threads": threads,
                    "fwd_ms": 1e3 * seconds,
                    "ce_abs": mass_error,
                }
                if kind == "full":
                    row["with_dense_ms"] = 1e3 * assemble
                rows.append(row)
                print(f"n={n} {kind:8s} threads={threads}: {1e3 * seconds:8.2f} ms", flush=True)
    torch.set_num_threads(default_threads)
    notes = (
        "One function: `time_slices` Gaussians over `n` points, one conservation row each. "
        "`fwd_ms` is the update alone (posterior covariance as Σ − F Fᵀ); `with_dense_ms` adds "
        "assembling the n × n posterior of every slice. `ce_abs` is the largest |mass − target| "
        "after the update. Reference (timed by hand, not by this run): the ProbConserv reference "
        "code takes about 200 ms per function per latent sample at n = 201 on this machine."
    )
    columns = ["case", "method", "n", "threads", "fwd_ms", "with_dense_ms", "ce_abs"]
    write_results("probconserv_update", rows, args.seed, started, args.out, columns, notes)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
