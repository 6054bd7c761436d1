"""Exact mass on forecast ensembles: Earthformer, FNO rollout and PreDiff on a tracer in 2-D flow.

For the conserved tracer (``ns-tracer``) and the known-source one (``ns-tracer-source``), three
ensembles (an Earthformer deep ensemble, FNO-2D rollouts of one model per seed, PreDiff's own
samples) each trained on the same CPU budget (step counts from a measured time per step, see
``plan.json`` in each variant's work folder), then every method of
:mod:`physml.tasks.conservation_forecast`: raw, HardC, ProbConserv, PreDiff-KC, KC + ProbConserv,
each followed by ``NonNegative``. Rows per (case = model-variant, method) with ``ce_abs``,
``mse``, ``crps``, ``crps_fair``, ``spread_skill``, ``neg_fraction``, ``fwd_ms`` and the mass
error per lead; ``spearman_spread`` / ``correction_cv`` say where the updates moved mass,
``error_spread_rho`` whether the raw spread is where the error is. The issue's targets are
checked into ``done_when``. Data, trainings (the Trainer resumes) and the step plan are kept
in ``--work``, so an interrupted run continues where it stopped. ``--jobs 2`` runs the two
variants in two processes side by side (one thread each)::

    OMP_NUM_THREADS=1 python benchmarks/forecast_conservation.py \
        --work benchmarks/work/forecast_conservation --jobs 2
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    WORK_REMEDY,
    arguments,
    at_least,
    names_arg,
    run_main,
    work_folder,
    write_results,
)

from physml.signals import signals_interrupt  # noqa: E402
from physml.tasks import conservation_forecast as blocks  # noqa: E402

NAME = "forecast_conservation"
COLUMNS = (
    "case",
    "method",
    "ce_abs",
    "ce_abs_max",
    "mse",
    "crps",
    "crps_fair",
    "spread_skill",
    "neg_fraction",
    "fwd_ms",
    "spearman_spread",
    "correction_cv",
    "error_spread_rho",
    "train_s",
    "error",
)
NOTES = """
`ce_abs` = mean over members, windows and lead times of |∫ member − true mass| / true mass
(`ce_abs_max` the largest). `mse` of the ensemble mean, `crps` the ensemble CRPS per pixel, plain
(biased) estimator, `crps_fair` the unbiased one (all in tracer units; the plain one favours too
narrow ensembles, the more so the fewer the members), `spread_skill` = √((M+1)/M · mean member
variance) / RMSE of the mean, `neg_fraction` the share of member pixels < 0, `fwd_ms` the
constraint's time per window (for `kc*` rows: guided minus plain sampling). `spearman_spread`:
Spearman's ρ between the mean |correction| per pixel and the raw ensemble's standard deviation
(mean over windows and lead times); `correction_cv`: coefficient of variation of |correction|
over a frame (0: uniform).
`error_spread_rho` (raw rows): Spearman's ρ between the ensemble mean's |error| and the
members' standard deviation per pixel (mean over windows and lead times): whether the spread
says where the error is, which a covariance update needs to beat a uniform projection.
`-nonneg` rows: `NonNegative(keep=...)` after the method (each member's mass kept); a row with
`error` could not be made non-negative (a member with negative total mass). `train_s`: CPU
seconds of the family's training (all members); empty (unknown) where a member reloaded from its
finished run left no record of its cost.
"""


def variant_rows(
    variant: str, scale: blocks.Scale, work: Path, seed: int, quiet: bool, out: Path
) -> tuple[list[dict], list[dict], dict]:
    """One variant end to end (its figures written to ``out``): ``(rows, knowledge-control
    sweep, training plan)``. Runs in a worker process with ``--jobs``, so it sets its own
    thread count."""
    torch.set_num_threads(1)
    found, details = blocks.run_variant(variant, scale, work, seed, quiet, WORK_REMEDY)
    blocks.plot_mass(out / f"{NAME}-mass-{variant}.png", details)
    blocks.plot_correction(out / f"{NAME}-correction-{variant}.png", details)
    return found, details["sweep"], details["plan"]


HELD_BACK = {signal.SIGINT, signal.SIGTERM}
"""The signals a worker of :func:`side_by_side` takes only in its jobs."""
_stop = None
"""In a worker of :func:`side_by_side`: the event its parent sets when interrupted."""


def _start_worker(stop) -> None:
    global _stop
    _stop = stop


def _interruptible_rows(rows_of, *job) -> tuple:
    """``rows_of(*job)`` (:func:`variant_rows`) in a worker of :func:`side_by_side`, which holds
    Ctrl-C and SIGTERM back outside its jobs: one while it started ends the job as it begins, with
    a KeyboardInterrupt handed back (not printed), and no job starts once the parent is
    interrupted. In a job the first of them stops it and later ones are let go, so a SIGTERM the
    parent passes on after a Ctrl-C or a SIGTERM to the whole group leaves the job to keep what it
    can."""
    with signals_interrupt(ctrl_c=True):
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_BACK)
            if _stop.is_set():
                raise KeyboardInterrupt
            return rows_of(*job)
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, HELD_BACK)


def side_by_side(jobs: list[tuple], processes: int, rows_of=variant_rows) -> list[tuple]:
    """``rows_of`` (:func:`variant_rows`) of each job in ``processes`` spawned workers, which take
    Ctrl-C and SIGTERM only in their jobs (none while they import): only this process says it was
    interrupted. Interrupted, it cancels the jobs not started and passes SIGTERM on to the
    workers (a SIGTERM may have reached this process alone), whose jobs keep what they can as on
    Ctrl-C, and waits for them."""
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    with ProcessPoolExecutor(processes, spawn, _start_worker, (stop,)) as pool:
        futures = []
        try:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_BACK)  # the workers' too
            try:
                futures = [pool.submit(_interruptible_rows, rows_of, *job) for job in jobs]
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            stop.set()
            for future in futures:
                future.cancel()
            for worker in list(pool._processes.values()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
            raise


def steps_note(plans: dict) -> str:
    """The notes' line on each variant's training steps (``plans``: variant → ``s_per_step``,
    ``steps``): bought by ``budget_s`` at measured seconds per step, or fixed by the scale (no
    ``s_per_step``)."""
    trained = "; ".join(
        f"{variant}: " + ", ".join(f"{family} {count}" for family, count in plan["steps"].items())
        for variant, plan in plans.items()
    )
    if any(plan["s_per_step"] is not None for plan in plans.values()):
        how = (
            "bought by `budget_s` at the CPU seconds per step measured when the work folder's "
            "plan was made (`plan` in the JSON)"
        )
    else:
        how = "fixed by the scale (`steps` of `scale` in the JSON), not by `budget_s`"
    return f"Training steps (each member; PreDiff's two stages), {how}: {trained}.\n"


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--work", type=Path, default=None, help="data, checkpoints, plan")
        parser.add_argument(
            "--variants", type=names_arg(blocks.VARIANTS), default=",".join(blocks.VARIANTS)
        )
        parser.add_argument("--jobs", type=at_least(1), default=1, help="variants run side by side")

    args = arguments(__doc__, argv, extra)
    started = time.perf_counter()
    torch.set_num_threads(1)
    variants = args.variants
    scale = blocks.TOY if args.quick else blocks.FULL
    quiet = not sys.stderr.isatty()
    rows, sweeps, plans = [], {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        work = work_folder(args.work, scratch, args.quick, Path("benchmarks/work") / NAME, variants)
        jobs = [(variant, scale, work, args.seed, quiet, args.out) for variant in variants]
        if args.jobs == 1:
            results = [variant_rows(*job) for job in jobs]
        else:
            results = side_by_side(jobs, min(args.jobs, len(jobs)))
        for variant, (found, sweep, planned) in zip(variants, results, strict=True):
            rows += found
            sweeps[variant] = sweep
            plans[variant] = {key: planned[key] for key in ("s_per_step", "steps")}
    checks = blocks.done_when(rows)
    met = sum(check["met"] for check in checks)
    write_results(
        NAME,
        rows,
        args.seed,
        started,
        args.out,
        COLUMNS,
        NOTES
        + steps_note(plans)
        + f"\nDone-when: {met} of {len(checks)} checks met (see `done_when` in the JSON).\n",
        extra={
            "threads": torch.get_num_threads(),
            "jobs": args.jobs,
            "scale": scale.setup(),
            "kc_sweep": sweeps,
            "plan": plans,
            "done_when": checks,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
