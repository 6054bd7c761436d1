"""Time and memory of cuboid attention against full attention as the space-time volume grows.

One forward pass (no gradient) of :class:`physml.models.cuboid.CuboidSelfAttention` layers —
dim 64, 4 heads, learned relative position bias, batch 1, float32 — on ``(T, H, W) = (10, n, n)``
for growing ``n``:

* ``cuboid-axial``: the axial pattern, three layers with cuboids ``(T,1,1)``, ``(1,H,1)``,
  ``(1,1,W)`` run one after the other (what one Earthformer attention block runs);
* ``cuboid-local``: one layer with local ``(2, 8, 8)`` cuboids;
* ``full-attention``: one layer whose single cuboid is the whole ``(T, H, W)`` grid.

Time: :func:`benchmarks.common.best_time` after a warm-up call (which builds the cached masks
and bias indices). Memory: each case runs in its own process; ``peak_mb`` is the growth of the
process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) over its
resident set just before one warm forward pass, and ``first_peak_mb`` the same for the first
call, which also builds the relative-position index. Memory is measured with glibc's mmap
threshold fixed at 64 KiB, so freed tensor buffers leave the resident set at once (otherwise
malloc reuses them and small cases read as zero); time with it at 32 MiB. The process may take
at most ``--cap-gib`` GiB of address space beyond what it holds before the first call; a case
that cannot allocate within that cap (or is larger than one that could not) is recorded as
"does not fit". Log-log slopes of time and memory against ``T·H·W`` are fitted per method.

A second part times the layer of the target (``T = 10``, 32×32, 64 channels, batch 2, 4 heads,
relative bias; local ``(2, 8, 8)`` and axial ``(10, 1, 1)`` cuboids) with 1 thread and with the
machine's default, beside the reference implementation's 167 ms and 17 ms on this machine.

    python benchmarks/cuboid_scaling.py          # full run -> results/cuboid_scaling.*
    python benchmarks/cuboid_scaling.py --quick  # smoke run (tiny sizes, seconds)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_out,
    best_time,
    positive_number,
    results_folder,
    run_main,
    seed_arg,
    write_results,
)

from physml.models.cuboid import CuboidSelfAttention  # noqa: E402

NAME = "cuboid_scaling"
METHODS = ("cuboid-axial", "cuboid-local", "full-attention")
REFERENCE_MS = {"local-2x8x8": 167.0, "axial-10x1x1": 17.0}
GIB = 2**30


def cuboid_sizes(method: str, shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The cuboid size of every layer a method runs on a ``(T, H, W)`` grid."""
    t, h, w = shape
    if method == "cuboid-axial":
        return [(t, 1, 1), (1, h, 1), (1, 1, w)]
    if method == "cuboid-local":
        return [(2, 8, 8)]
    if method == "full-attention":
        return [(t, h, w)]
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def score_bytes(sizes: list[tuple[int, int, int]], shape, batch: int, heads: int) -> int:
    """Bytes of the float32 attention-score tensors ``(B, heads, N, V, V)`` of the largest layer."""
    largest = 0
    for size in sizes:
        clamped = [min(b, n) for b, n in zip(size, shape, strict=True)]
        volume = math.prod(clamped)
        count = math.prod(-(-n // b) for n, b in zip(shape, clamped, strict=True))
        largest = max(largest, 4 * batch * heads * count * volume**2)
    return largest


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _malloc_thresholds(mmap_bytes: int) -> None:
    """Fix glibc's mmap threshold at ``mmap_bytes`` (and its trim threshold at twice that).

    At 64 KiB every tensor buffer is mapped on allocation and unmapped on free, so the resident
    set follows the live tensors; at 32 MiB (the ceiling its dynamic threshold settles at in a
    long-running process) freed buffers are reused as usual. No-op without glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, mmap_bytes)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 2 * mmap_bytes)  # M_TRIM_THRESHOLD


def _peak_growth_mib(function) -> float:
    """MiB by which the peak resident set rises above the current one while ``function()`` runs
    (Linux keeps these counters per thread and folds them in lazily, so a call that allocates
    nothing can read a few pages below zero: that is 0)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current resident set
    before = _status_mib("VmRSS")
    function()
    return max(_status_mib("VmHWM") - before, 0.0)


def measure(spec: dict) -> dict:
    """Run one case (in this process): forward time and peak memory, or why it does not fit."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    shape = tuple(spec["shape"])
    layers = [
        CuboidSelfAttention(spec["dim"], spec["heads"], size, relative_position=True).eval()
        for size in spec["sizes"]
    ]
    x = torch.randn(spec["batch"], *shape, spec["dim"])

    def forward() -> torch.Tensor:
        with torch.no_grad():
            y = x
            for layer in layers:
                y = layer(y)
            return y

    if spec.get("cap_gib"):
        limit = int(_status_mib("VmSize") * 2**20 + spec["cap_gib"] * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        _malloc_thresholds(64 * 2**10)
        first = _peak_growth_mib(forward)
        steady = _peak_growth_mib(forward)
        _malloc_thresholds(32 * 2**20)
        started = time.perf_counter()
        forward()
        once = time.perf_counter() - started
        repeats = spec.get("repeats", 3) if once < 0.5 else 1
        seconds = once if once > 2.0 else best_time(forward, repeats, spec.get("min_s", 0.2))
    except (RuntimeError, MemoryError) as error:
        if isinstance(error, MemoryError) or "alloc" in str(error).lower():
            return {"fits": False, "reason": str(error).splitlines()[0][:160]}
        raise
    return {"fits": True, "fwd_ms": 1e3 * seconds, "peak_mb": steady, "first_peak_mb": first}


def run_case(spec: dict, timeout_s: float, isolate: bool = True) -> dict:
    """:func:`measure` in a fresh process (so memory is measured alone and a failure is contained).

    ``isolate=False`` measures in this process, without the memory cap (quick mode only).
    """
    if not isolate:
        return measure({**spec, "cap_gib": None})
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"fits": False, "reason": f"took longer than {timeout_s:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        if done.returncode < 0:  # killed, e.g. by the kernel's out-of-memory killer
            return {"fits": False, "reason": f"killed by signal {-done.returncode}: {tail}"}
        raise RuntimeError(f"case {spec} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def log_log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx = [math.log(v) for v in xs]
    ly = [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    spread = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / spread


def slopes(rows: list[dict], min_volume: int) -> dict[str, dict[str, float]]:
    """Per method: slope of time and of peak memory vs ``T·H·W`` over cases ``>= min_volume``."""
    result = {}
    for method in METHODS:
        fitted = [
            r for r in rows if r["method"] == method and r.get("fits") and r["thw"] >= min_volume
        ]
        if len(fitted) < 2:
            continue
        volumes = [r["thw"] for r in fitted]
        result[method] = {
            "time": log_log_slope(volumes, [r["fwd_ms"] for r in fitted]),
            "memory": log_log_slope(volumes, [max(r["peak_mb"], 1e-3) for r in fitted]),
            "points": len(fitted),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    add_out(parser)
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument(
        "--cap-gib", type=positive_number, default=None, help="memory cap per case (GiB, > 0)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return 0
    args.out = results_folder(args.out, args.quick)
    started = time.perf_counter()
    default_threads = torch.get_num_threads()
    if args.quick:
        frames, sides, dim, cap = 4, [8, 16], 16, args.cap_gib or 8.0
        threads_list, min_volume, timeout_s = [1], 0, 120.0
        default_threads, timing = 1, {"repeats": 1, "min_s": 0.01}
    else:
        frames, sides, dim, cap = 10, [8, 16, 24, 32, 48, 64, 96, 128], 64, args.cap_gib or 8.0
        threads_list, min_volume, timeout_s = sorted({1, default_threads}), 2560, 300.0
        timing = {"repeats": 3, "min_s": 0.2}
    heads, batch = 4, 1

    rows = []
    failed: set[str] = set()
    for side in sides:
        shape = (frames, side, side)
        for method in METHODS:
            sizes = cuboid_sizes(method, shape)
            row = {
                "case": f"thw-{frames}x{side}x{side}",
                "method": method,
                "thw": frames * side * side,
                "cuboids": "+".join("x".join(map(str, s)) for s in sizes),
                "threads": default_threads,
                "scores_mb": score_bytes(sizes, shape, batch, heads) / 2**20,
            }
            if method in failed:
                row.update(fits=False, reason="larger than a case that did not fit")
            else:
                spec = {
                    "shape": shape,
                    "sizes": sizes,
                    "dim": dim,
                    "heads": heads,
                    "batch": batch,
                    "threads": default_threads,
                    "cap_gib": cap,
                    **timing,
                }
                isolate = not args.quick or method == "full-attention"
                row.update(run_case(spec, timeout_s, isolate))
                if not row["fits"]:
                    failed.add(method)
            rows.append(row)
            shown = f"{row['fwd_ms']:9.2f} ms {row['peak_mb']:8.1f} MiB" if "fwd_ms" in row else ""
            print(f"{row['case']:16s} {method:15s} {shown} {row.get('reason', '')}", flush=True)

    for name, size in (("local-2x8x8", (2, 8, 8)), ("axial-10x1x1", (10, 1, 1))):
        shape = (4, 16, 16) if args.quick else (10, 32, 32)
        for threads in threads_list:
            spec = {
                "shape": shape,
                "sizes": [size],
                "dim": 16 if args.quick else 64,
                "heads": 4,
                "batch": 2,
                "threads": threads,
                "cap_gib": cap,
                **timing,
            }
            measured = run_case(spec, timeout_s, isolate=not args.quick)
            row = {
                "case": f"target-{name}",
                "method": "physml",
                "thw": math.prod(shape),
                "cuboids": "x".join(map(str, size)),
                "threads": threads,
                "fwd_ms": measured.get("fwd_ms", float("nan")),
                "peak_mb": measured.get("peak_mb", float("nan")),
                "reference_ms": REFERENCE_MS[name],
            }
            rows.append(row)
            print(f"{row['case']:20s} threads {threads}: {row['fwd_ms']:.2f} ms", flush=True)

    fitted = slopes([r for r in rows if r["case"].startswith("thw")], min_volume)
    lines = [
        "| method | time slope | memory slope | points |",
        "|---|---|---|---|",
        *(
            f"| {m} | {s['time']:.2f} | {s['memory']:.2f} | {s['points']} |"
            for m, s in fitted.items()
        ),
    ]
    notes = NOTES.format(
        frames=frames, dim=dim, cap=cap, min_volume=min_volume, slopes="\n".join(lines)
    )
    columns = [
        "case",
        "method",
        "cuboids",
        "thw",
        "threads",
        "fits",
        "fwd_ms",
        "peak_mb",
        "first_peak_mb",
        "scores_mb",
        "reference_ms",
    ]
    extra = {"slopes": fitted, "cap_gib": cap, "dim": dim, "heads": heads, "batch": batch}
    write_results(NAME, rows, args.seed, started, args.out, columns, notes, extra)
    return 0


NOTES = """
Sweep (`thw-*` rows): one forward pass without gradient, batch 1, T = {frames}, dim {dim}, 4 heads,
relative position bias, float32, the machine's default torch threads. `fwd_ms` best time after a
warm-up; `peak_mb` rise of the process's peak resident set during one warm forward pass,
`first_peak_mb` the same for the first call (which also builds the cached relative-position
index and masks), both with glibc's mmap threshold fixed at 64 KiB so freed buffers leave the
resident set; `scores_mb` the size of the largest layer's attention-score tensor
(B·heads·cuboids·V²·4 bytes), whether or not the kernel materialises it. Cap: {cap:g} GiB of
address space per case; `fits` False = an allocation failed within the cap, or a smaller case of
the same method already did. `cuboid-axial` times the three axial layers together.

Log-log slopes against T·H·W (cases with T·H·W ≥ {min_volume}); 1 = linear, 2 = quadratic:

{slopes}

Target rows (`target-*`): one layer, T = 10, 32×32, 64 channels, batch 2, 4 heads, relative
position bias, forward without gradient (eval mode); `reference_ms` is the reference
implementation on this machine (issue text: about 167 ms for local 2×8×8 cuboids and 17 ms for
axial (T,1,1) cuboids).
"""


if __name__ == "__main__":
    sys.exit(run_main(main))
