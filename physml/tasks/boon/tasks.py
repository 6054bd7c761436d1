"""The registered ``boon-*`` tasks: FNO and BOON on each case, summary rows and plots."""

from __future__ import annotations

from collections.abc import Callable

from .. import Context, Row, Task, register, run_label
from .data import CASES
from .evaluation import run_case
from .models import TRAINED
from .plots import plot_boundary_zoom, plot_error_over_time

TOLERANCE = 1e-5


def _rows(task: str, rows: list[dict]) -> list[Row]:
    out = []
    for row in rows:
        case, method = row["case"], row["method"]
        out.append(Row(task, case, f"rel L2 {method}", row["rel_l2"]))
        out.append(Row(task, case, f"interior rel L2 {method}", row["rel_l2_interior"]))
        label = "flux error" if row["kind"] == "neumann" else "boundary error"
        error = row["boundary_error"]
        if method == "fno":
            out.append(Row(task, case, f"{label} {method}", error))
        else:
            target = f"<= {TOLERANCE:g}"
            out.append(Row(task, case, f"{label} {method}", error, target, error <= TOLERANCE))
        if method in TRAINED:
            out.append(Row(task, case, f"train s {method}", row["train_s"]))
    return out


def task_runner(cases: tuple[str, ...], task: str) -> Callable[[Context], list[Row]]:
    """A task body: train FNO and BOON on each case, return the rows, save the plots (named by
    :func:`~physml.tasks.run_label`, so runs of other sizes or seeds keep theirs)."""

    def run(context: Context) -> list[Row]:
        folder = context.out / task
        folder.mkdir(parents=True, exist_ok=True)
        rows: list[Row] = []
        label = run_label(context)
        for case in cases:
            results = [
                run_case(case, method, context.seed, context.size, context.quiet)
                for method in TRAINED
            ]
            case_rows = [row for result in results for row in result.rows]
            rows += _rows(task, case_rows)
            data = results[0].data
            predictions = {k: v for result in results for k, v in result.predictions.items()}
            prefix = "" if len(cases) == 1 else f"{case}-"
            if CASES[case].family == "1d":
                path = folder / f"{prefix}boundary-zoom-{label}.png"
                plot_boundary_zoom(data, predictions, path)
            else:
                curves = {r["method"]: [r["rel_l2_over_time"]] for r in case_rows}
                path = folder / f"{prefix}error-over-time-{label}.png"
                plot_error_over_time(curves, data.times, path, case)
        return rows

    return run


TASKS = {
    "boon-heat": (("heat-neumann",), True, "heat with a Neumann heat source"),
    "boon-stokes": (("stokes-dirichlet",), False, "Stokes' second problem (Dirichlet)"),
    "boon-burgers": (("burgers-dirichlet",), False, "Burgers with Dirichlet walls"),
    "boon-burgers-periodic": (("burgers-periodic",), False, "periodic Burgers"),
    "boon-wave": (("wave-neumann",), False, "the wave equation with zero-flux ends"),
    "boon-multistep": (
        ("heat-neumann-multistep", "stokes-dirichlet-multistep"),
        False,
        "multi-step heat and Stokes, a 2-D FNO over (x, t)",
    ),
    "boon-cavity": (("cavity",), False, "the lid-driven cavity (velocity over 25 steps)"),
}

for _name, (_cases, _demo, _what) in TASKS.items():
    register(
        Task(
            name=_name,
            description=f"FNO, FNO with overwritten walls and BOON on {_what}",
            run=task_runner(_cases, _name),
            in_demo=_demo,
            cpu_only=True,  # its models train and are scored on the CPU
            checkpoints=False,  # a toy run takes seconds: nothing is saved to resume
            figures={
                f"{_name}/*boundary-zoom-*.png": "{name}: one test sample near the left and right "
                "walls at the final time, solver (black) and each method (dashed); right, every "
                "test sample's error at the left wall on a log scale.",
                f"{_name}/*error-over-time-*.png": "{name}: relative L2 error against time, each "
                "method's mean over the test samples.",
            },
        )
    )
