"""How well the N-body digits generator conserves the energy it reports, per integrator setting.

Every rendered frame of ``physml.data.nbody_digits`` carries the true energy
``E = Σ ½|v_i|² + G Σ_{i<j} √(r_ij² + d²)`` of the simulator's state. For each generator setting
the drift of a sequence is ``max_t |E_t − E_0| / |E_0|`` over its frames; rows give its mean,
median, 95th percentile and maximum over the sequences, the fraction above 1 %, and, to check
that the videos still look like the reference, the mean sprite speed (pixels/step) and the mean
per-frame pixel change ``|x_{t+1} − x_t|``. Same seeds, sprites and initial states for every
setting. The gravity-free rows are a sanity check: only bounces act, and they keep ``E``.

    python benchmarks/nbody_energy.py          # 256 sequences, 64², 20 frames
    python benchmarks/nbody_energy.py --quick  # 8 sequences, 32², 6 frames
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import arguments, run_main, write_results  # noqa: E402

from physml.data.nbody import ENERGY_CONSERVING, nbody_digits  # noqa: E402

NAME = "nbody_energy"
SETTINGS = {
    "default (euler, clip 2)": {},
    "euler, no clip": {"clip": None},
    "euler, no clip, 8 substeps": {"clip": None, "substeps": 8},
    "leapfrog, no clip": {"integrator": "leapfrog", "clip": None},
    "leapfrog, no clip, 4 substeps": {"integrator": "leapfrog", "clip": None, "substeps": 4},
    "energy-conserving": ENERGY_CONSERVING,
}
SCALES = {"quick": (8, 32, 6), "full": (256, 64, 20)}  # sequences, size, frames


def measure(count: int, seed: int, size: int, frames: int, gravity: bool, options: dict) -> dict:
    """Drift statistics and look-alike numbers of ``count`` sequences under ``options``."""
    start = time.perf_counter()
    data = nbody_digits(count, seed=seed, frames=frames, size=size, gravity=gravity, **options)
    seconds = time.perf_counter() - start
    energy = data.energy
    drift = ((energy - energy[:, :1]).abs() / energy[:, :1].abs()).amax(1)
    return {
        "drift_mean": float(drift.mean()),
        "drift_median": float(drift.median()),
        "drift_p95": float(torch.quantile(drift, 0.95)),
        "drift_max": float(drift.max()),
        "over_1pct": float((drift > 0.01).double().mean()),
        "speed": float(data.velocities.norm(dim=-1).mean()),
        "frame_change": float((data.frames[:, 1:] - data.frames[:, :-1]).abs().mean()),
        "generate_s": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    count, size, frames = SCALES["quick" if args.quick else "full"]
    case = f"{size}x{size}, {frames} frames, {count} sequences"
    rows = []
    for gravity in (True, False):
        for method, options in SETTINGS.items():
            if not gravity and method not in ("default (euler, clip 2)", "energy-conserving"):
                continue
            row = {
                "case": case if gravity else f"{case}, gravity off",
                "method": method,
                "integrator": options.get("integrator", "euler"),
                "clip": options.get("clip", 2.0),
                "substeps": options.get("substeps", 1),
            }
            row.update(measure(count, args.seed, size, frames, gravity, options))
            rows.append(row)
    columns = [
        "case",
        "method",
        "drift_mean",
        "drift_median",
        "drift_p95",
        "drift_max",
        "over_1pct",
        "speed",
        "frame_change",
        "generate_s",
    ]
    notes = (
        "drift = max over frames of |E_t − E_0| / |E_0| per sequence (dt = 1, stride 5, G = "
        "0.05, d = 10, reflecting walls). `energy-conserving` is "
        f"`physml.data.nbody.ENERGY_CONSERVING` = {ENERGY_CONSERVING}. speed: mean sprite "
        "speed (pixels/step); frame_change: mean |x_{t+1} − x_t| per pixel. One torch thread."
    )
    extra = {"setup": {"sequences": count, "size": size, "frames": frames}}
    write_results(NAME, rows, args.seed, started, args.out, columns, notes, extra)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
