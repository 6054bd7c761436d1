"""A surrogate guarded by its solver: accuracy against throughput as the thresholds move.

For Burgers (walls at 0) and heat (insulated left, heater flux right), ``u(x, 0) → u(x, T)``: a
deep ensemble of FNOs (``members`` of them, differing by their seeds) trained on initial fields
of RMS amplitude inside the training range answers with its mean through
``physml.updates.guard``, with the checks: the input's amplitude inside the training range
(``InputRange``), the wall error of the mean (``BoundaryError``), for heat the mass balance the
wall fluxes imply (``ConstraintResidual``, exact for the solver to round-off) and the ensemble's
relative spread ``‖σ‖/‖μ‖`` (``EnsembleSpread``: the check that sees the FNOs' own errors on
in-range inputs); the fallback is the problem's ``pdes`` solver (one solve per query, float64).
The test set has 20% of its inputs beyond the training amplitudes. Thresholds: the ``level``
quantile of each check's score on in-range validation inputs. Rows: ``solver`` alone,
``surrogate`` alone (the ensemble's mean), ``surrogate-member`` (its first member alone, the FNO
without an ensemble) and ``guard`` per level with ``surrogate_fraction``, ``max_error``,
``p99_error`` (relative L2 against the solver), ``throughput`` (test samples per CPU second,
one thread, every member's forward and every check included) and ``speedup`` over the solver.
Each member's training resumes from
``--work``/``<equation>``/``fno<seed + k>-<train>x<steps>steps``; the data is cached there.
Building blocks: :mod:`physml.tasks.updates`. The figure ``guarded_surrogate-tradeoff.png``
draws error against speedup per level (:mod:`updates_figures`).

    python benchmarks/guarded_surrogate.py --quick              # smoke (< 1 min)
    OMP_NUM_THREADS=1 python benchmarks/guarded_surrogate.py   # full; --work benchmarks/work/...
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WORK_REMEDY,
    arguments,
    run_main,
    steady_allocations,
    work_and_equations,
    work_folder,
    write_results,
)
from updates_figures import tradeoff_figure  # noqa: E402

from physml.tasks import updates as blocks  # noqa: E402

NAME = "guarded_surrogate"
SCALES = {
    "quick": dict(
        model=blocks.Size(8, 8, 2, 32, 15, 16),
        members=2,
        validation=16,
        test=10,
        levels=(1.0, 0.9),
    ),
    "full": dict(
        model=blocks.Size(32, 16, 4, 1024, 4000),
        steps={"burgers": 12000},  # its loss still fell steeply at 4000 steps
        train={"burgers": 4096},  # on 1024 its validation error was twice its training error
        members=4,
        validation=200,
        test=200,
        levels=blocks.LEVELS,
    ),
}
COLUMNS = (
    "case", "method", "level", "surrogate_fraction", "max_error", "p99_error", "mean_error",
    "max_error_inside", "throughput", "speedup",
)  # fmt: skip


def sweep(problem, scale, seed: int, work: Path, quiet: bool) -> list[dict]:
    """The rows of one equation: data, the members (resumed; member ``k`` from seed
    ``seed + k``), then :func:`blocks.guard_sweep`."""
    size = scale["model"]
    size = dataclasses.replace(
        size,
        steps=scale.get("steps", {}).get(problem.name, size.steps),
        train=scale.get("train", {}).get(problem.name, size.train),
    )
    train = blocks.cached_pairs(work / "train.pt", problem, size.train, 0)
    validation = blocks.cached_pairs(
        work / "validation.pt", problem, scale["validation"], blocks.VALIDATION_SEED
    )
    outside = scale["test"] // 5
    test = blocks.cached_pairs(work / "test.pt", problem, scale["test"], blocks.TEST_SEED, outside)
    members = [
        blocks.train(
            blocks.fno(size, seed + k), blocks.relative_l2_loss, train, size, seed + k,
            work / f"fno{seed + k}-{size.train}x{size.steps}steps", quiet, remedy=WORK_REMEDY,
        )
        for k in range(scale["members"])
    ]  # fmt: skip
    ensemble = blocks.MemberEnsemble([member.model for member in members])
    rows = blocks.guard_sweep(
        problem, ensemble, train.tensors[0], validation.tensors[0], test, scale["levels"],
        outside,
    )  # fmt: skip
    train_s = {"solver": 0.0, "surrogate-member": members[0].train_s}
    for row in rows:
        row["case"] = problem.name
        row["train_s"] = train_s.get(row["method"], sum(member.train_s for member in members))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = arguments(
        __doc__, argv, lambda p: work_and_equations(p, blocks.EQUATIONS, blocks.equation)
    )
    started = time.perf_counter()
    torch.set_num_threads(1)
    steady_allocations()
    mode = "quick" if args.quick else "full"
    scale, quiet = SCALES[mode], not sys.stderr.isatty()
    equations = args.equations
    rows, verdict = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        work = work_folder(
            args.work, scratch, args.quick, Path("benchmarks/work") / NAME, equations
        )
        for name in equations:
            found = sweep(blocks.equation(name), scale, args.seed, work / name, quiet)
            verdict[name] = blocks.guard_done_when(found)
            rows += found
    verdict["holds"] = all(verdict[name]["holds"] for name in equations)
    notes = (
        "Done-when (some level: max_error <= 1e-2 over the whole test set, out-of-range inputs "
        "included, at >= 3x the solver's throughput, where the surrogate alone has max_error "
        f">= 1e-1): **{'holds' if verdict['holds'] else 'does not hold'}**. 20% of the test "
        "inputs lie beyond the training amplitudes; the solver answers one query at a time. "
        f"The surrogate is a deep ensemble of {scale['members']} FNOs answering with its mean "
        "(row `surrogate`; `surrogate-member` is its first member alone); the guard's "
        "throughput includes every member's forward and every check."
    )
    setup = {
        "model": scale["model"].__dict__,
        "steps": scale.get("steps", {}),
        "train": scale.get("train", {}),  # per-equation overrides of model.train, as steps
        "members": scale["members"],
        "validation": scale["validation"],
        "test": scale["test"],
        "equations": {name: blocks.equation(name).__dict__ for name in equations},
    }
    extra = {"setup": setup, "done_when": verdict, "threads": torch.get_num_threads()}
    result = write_results(NAME, rows, args.seed, started, args.out, COLUMNS, notes, extra)
    tradeoff_figure(result, args.out / f"{NAME}-tradeoff.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
