"""What BOON's kernel correction costs on top of the plain FNO it wraps.

Two set-ups: a 1-D FNO on 65 points (hidden 32, 4 layers, 16 modes) with Dirichlet walls, and a
2-D FNO on 33 × 33 points (hidden 24, 4 layers, 12 × 12 modes) with Dirichlet walls on both axes.
Each is timed plain and as ``physml.constrain(fno, *conditions)`` at batch 1, 8 and 32: a forward
in train mode (probes read in every forward), forward and backward of a mean-square loss in train
mode, and a forward in eval mode without gradients (probes reused). One torch thread; the two
models alternate call by call, times are process CPU time (robust to the other processes sharing
the cores) with glibc's heap kept (:func:`steady_allocations`), and ``fwd_ratio`` is the median
over the pairs of BOON's time over the FNO's.

    python benchmarks/boon_overhead.py          # full run -> results/boon_overhead.{json,md}
    python benchmarks/boon_overhead.py --quick  # smoke run (batch 1 and 8, few pairs)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from neuralop.models import FNO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    arguments,
    paired_ms,
    run_main,
    steady_allocations,
    timed_call,
    write_results,
)

from pdes import Dirichlet, Grid1D  # noqa: E402
from physml import constrain  # noqa: E402
from physml.constraints import BoundaryCondition  # noqa: E402

NAME = "boon_overhead"
METHODS = ("boon-train-forward", "boon-train-forward-backward", "boon-eval-forward")


def setup(case: str, seed: int) -> tuple[FNO, list[BoundaryCondition], tuple[int, ...]]:
    """The FNO, its boundary conditions and the shape of one input ``(channel, *space)``."""
    torch.manual_seed(seed)
    if case == "fno-1d-dirichlet":
        fno = FNO(n_modes=(16,), in_channels=1, out_channels=1, hidden_channels=32, n_layers=4)
        conditions = [BoundaryCondition(Dirichlet(0.0, 0.0), Grid1D(65))]
        return fno, conditions, (1, 65)
    fno = FNO(n_modes=(12, 12), in_channels=1, out_channels=1, hidden_channels=24, n_layers=4)
    grid = Grid1D(33)
    conditions = [
        BoundaryCondition(Dirichlet(0.0, 0.0), grid, axis=-2),
        BoundaryCondition(Dirichlet(0.0, 1.0), grid, axis=-1),
    ]
    return fno, conditions, (1, 33, 33)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    steady_allocations()
    batches = (1, 8) if args.quick else (1, 8, 32)
    rows = []
    for case in ("fno-1d-dirichlet", "fno-2d-dirichlet-both-axes"):
        fno, conditions, shape = setup(case, args.seed)
        boon = constrain(fno, *conditions)
        for batch in batches:
            x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(args.seed))
            pairs = 3 if args.quick else max(15, 160 // batch)
            for method in METHODS:
                fno_ms, boon_ms, ratios = paired_ms(
                    timed_call(fno, x, method.removeprefix("boon-")),
                    timed_call(boon, x, method.removeprefix("boon-")),
                    pairs,
                )
                ratio = statistics.median(ratios)
                rows.append(
                    {
                        "case": case,
                        "method": method,
                        "batch": batch,
                        "pairs": pairs,
                        "fno_ms": fno_ms,
                        "boon_ms": boon_ms,
                        "fwd_ratio": ratio,
                    }
                )
                print(f"{case} {method} batch {batch}: ratio {ratio:.2f}", flush=True)
    notes = (
        "`fno_ms`, `boon_ms`: median process CPU time of one call (one torch thread); "
        "`fwd_ratio`: median over `pairs` alternating calls of BOON's time over the plain FNO's. "
        "Train-mode calls read the probe responses of every Fourier layer (in closed form from "
        "the spectral weights for neuralop FNOs); the eval-mode forward reuses them. For "
        "reference, the batch-probing code before (ed660e4) gave train-forward ratios "
        "2.11/1.87/1.47 (1-D) and 3.20/1.91/1.40 (2-D) at batch 1/8/32 with this script."
    )
    columns = ["case", "method", "batch", "fno_ms", "boon_ms", "fwd_ratio"]
    write_results(NAME, rows, args.seed, started, args.out, columns, notes)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
