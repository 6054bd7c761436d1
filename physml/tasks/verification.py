"""The solver verification task: every ``pdes`` solver against its exact solution.

For each exact case it refines the grid (or the step), measures the order of accuracy and saves a
figure: the finest numerical solution over the exact one at a few times (2-D cases: the exact field
and the error over the grid, as images) for the sample with the largest error, and the error
against the spacing on log-log axes with the theoretical slope.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from pdes.verification import ConvergenceStudy, convergence, exact_cases  # noqa: E402

from .._progress import progress_bar  # noqa: E402
from ..io import save_figure  # noqa: E402
from . import Context, Row, Task, register  # noqa: E402

ORDER_SLACK = 0.8
"""A measured order counts as meeting the theory when it reaches this fraction of it."""


SQUARE_CASES = frozenset(
    {"cavity-poisson", "navier-stokes-taylor-green-time", "ns-tracer-drifting-blob"}
)
"""Cases whose space axis is an ``n × n`` grid flattened (x fastest along the rows of ``(n, n)``):
they are drawn as images, not as lines over the flattened index."""


def plot_study(study: ConvergenceStudy, path: Path) -> None:
    """Save the profile (or, for a 2-D case, field and error images) and convergence panels of one
    study to ``path`` (PNG)."""
    square = study.case.name in SQUARE_CASES
    fig, axes = plt.subplots(1, 3 if square else 2, figsize=(14 if square else 10, 3.8))
    if square:
        _plot_field_and_error(study, axes[0], axes[1])
    else:
        _plot_profiles(study, axes[0])
    right = axes[-1]
    h = study.spacings
    right.loglog(h, study.errors, "o-", label=f"measured, order {study.order:.2f}")
    reference = [study.errors[-1] * (s / h[-1]) ** study.case.order for s in h]
    right.loglog(h, reference, "k:", label=f"slope {study.case.order:g}")
    right.set(
        xlabel="dt" if study.case.refines == "time" else "dx",
        ylabel=f"{study.case.norm} error",
        title="convergence",
    )
    right.xaxis.set_minor_formatter(NullFormatter())
    right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_profiles(study: ConvergenceStudy, ax) -> None:
    """The finest solution (dashed) over the exact one (thick) at three times, for the sample with
    the largest error in the case's norm (see ``_worst_sample``)."""
    finest = study.finest
    x = finest.x.cpu().numpy()
    steps = finest.t.numel()
    worst = _worst_sample(finest, study.case.norm)
    for j in sorted({0, steps // 2, steps - 1}):
        label = f"t={finest.t[j].item():.3g}"
        (line,) = ax.plot(x, finest.exact[worst, j].cpu().numpy(), lw=2.5, alpha=0.4, label=label)
        ax.plot(x, finest.numerical[worst, j].cpu().numpy(), "--", color=line.get_color(), lw=1)
    title = f"{study.case.name}: exact (thick), solver (dashed){_worst_of(finest, worst)}"
    ax.set(xlabel="x", ylabel="u", title=title)
    ax.legend(fontsize=8)


def _plot_field_and_error(study: ConvergenceStudy, field_ax, error_ax) -> None:
    """A 2-D case at its last time, for the sample with the largest error in the case's norm (see
    ``_worst_sample``): the exact field and the solver's error."""
    finest = study.finest
    points = finest.exact.shape[-1]
    n = math.isqrt(points)
    worst = _worst_sample(finest, study.case.norm)
    exact = finest.exact[worst, -1].reshape(n, n).cpu().numpy()
    error = (finest.numerical[worst, -1] - finest.exact[worst, -1]).reshape(n, n).cpu().numpy()
    when = f", t={finest.t[-1].item():.3g}" if finest.t.numel() > 1 else ""  # else steady
    samples = finest.exact.shape[0]
    which = f", sample {worst}" if samples > 1 else ""
    image = field_ax.imshow(exact.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
    fig = field_ax.figure
    fig.colorbar(image, ax=field_ax, shrink=0.85)
    field_ax.set(xlabel="x / Lx", ylabel="y / Ly", title=f"{study.case.name}: exact{when}{which}")
    bound = max(abs(error.min()), abs(error.max())) or 1.0
    image = error_ax.imshow(
        error.T, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r", vmin=-bound, vmax=bound
    )
    fig.colorbar(image, ax=error_ax, shrink=0.85)
    title = f"solver − exact{when}, {n}×{n} grid{_worst_of(finest, worst)}"
    error_ax.set(xlabel="x / Lx", ylabel="y / Ly", title=title)


def _worst_sample(finest, norm: str) -> int:
    """The sample whose error over all its times and points is largest in ``norm``
    (:meth:`pdes.verification.Comparison.error` of each sample alone)."""
    return max(
        range(finest.exact.shape[0]),
        key=lambda i: dataclasses.replace(
            finest, numerical=finest.numerical[i : i + 1], exact=finest.exact[i : i + 1]
        ).error(norm),
    )


def _worst_of(finest, worst: int) -> str:
    """The title line naming the drawn sample, ``""`` when there is only one."""
    samples = finest.exact.shape[0]
    return f"\nsample {worst} of {samples} (largest error)" if samples > 1 else ""


def run(context: Context) -> list[Row]:
    """Every exact case's convergence study: a target row for its order and a figure
    ``verify/<case>-<size>.png`` (``full`` refines one grid further; the studies draw nothing at
    random, so the seed changes nothing and is not in the name)."""
    folder = context.out / "verify"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    cases = exact_cases()
    for case in progress_bar(cases, not context.quiet, "verify"):
        resolutions = list(case.resolutions)
        if context.size == "full":
            resolutions.append(2 * resolutions[-1] - (1 if resolutions[-1] % 2 else 0))
        study = convergence(case, resolutions)
        plot_study(study, folder / f"{case.name}-{context.size}.png")
        least = round(ORDER_SLACK * case.order, 2)  # the order printed is the one judged
        rows.append(
            Row(
                task="verify",
                case=case.name,
                metric=f"order ({case.refines}, {case.norm})",
                value=study.order,
                target=f">= {least:g} (theory {case.order:g})",
                ok=float(f"{study.order:.4g}") >= least,  # as the table shows it (4 digits)
            )
        )
        rows.append(
            Row(
                task="verify",
                case=case.name,
                metric=f"error at finest ({resolutions[-1]})",
                value=study.errors[-1],
            )
        )
    return rows


TASK = register(
    Task(
        name="verify",
        description="every solver against its exact solution, with measured convergence orders",
        run=run,
        cpu_only=True,  # the solvers' convergence studies run on the CPU
        checkpoints=False,
        figures={
            "verify/*.png": "{name}: the solver on its finest grid (dashed) over the exact "
            "solution (thick) at three times (2-D cases: the exact field and the solver's error "
            "over the grid at the last time, as images), for the sample with the largest error, "
            "left; the error against the grid spacing or time step on log-log axes beside the "
            "theoretical slope, right.",
        },
    )
)
