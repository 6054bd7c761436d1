"""The solver verification task: every ``pdes`` solver against its exact solution.

For each exact case it refines the grid (or the step), measures the order of accuracy and saves a
figure: the finest numerical solution over the exact one at a few times, and the error against the
spacing on log-log axes with the theoretical slope.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pdes.verification import ConvergenceStudy, convergence, exact_cases  # noqa: E402

from . import Context, Row, Task, register  # noqa: E402

ORDER_SLACK = 0.8
"""A measured order counts as meeting the theory when it reaches this fraction of it."""


def plot_study(study: ConvergenceStudy, path: Path) -> None:
    """Save the profile and convergence panels of one study to ``path`` (PNG)."""
    finest = study.finest
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = finest.x.cpu().numpy()
    steps = finest.t.numel()
    for j in sorted({0, steps // 2, steps - 1}):
        label = f"t={finest.t[j].item():.3g}"
        (line,) = left.plot(x, finest.exact[0, j].cpu().numpy(), lw=2.5, alpha=0.4, label=label)
        left.plot(x, finest.numerical[0, j].cpu().numpy(), "--", color=line.get_color(), lw=1)
    left.set(xlabel="x", ylabel="u", title=f"{study.case.name}: exact (thick), solver (dashed)")
    left.legend(fontsize=8)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(context: Context) -> list[Row]:
    folder = context.out / "verify"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    cases = exact_cases()
    for case in tqdm(cases, desc="verify", disable=context.quiet):
        resolutions = list(case.resolutions)
        if context.size == "full":
            resolutions.append(2 * resolutions[-1] - (1 if resolutions[-1] % 2 else 0))
        study = convergence(case, resolutions)
        plot_study(study, folder / f"{case.name}.png")
        rows.append(
            Row(
                task="verify",
                case=case.name,
                metric=f"order ({case.refines}, {case.norm})",
                value=study.order,
                target=f">= {ORDER_SLACK * case.order:.2g} (theory {case.order:g})",
                ok=study.order >= ORDER_SLACK * case.order,
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
        figures={
            "verify/*.png": "{name}: the solver on its finest grid (dashed) over the exact "
            "solution (thick) at three times, left; the error against the grid spacing or time "
            "step on log-log axes beside the theoretical slope, right.",
        },
    )
)
