"""BOON on the heat equation with an insulated wall and a heat source (single step, 1-D).

Data: ``u_t = κ u_xx`` on [0, 1] with ``du/dx(0) = 0`` and ``du/dx(1) = U sin(πt)`` (U = 5), the
``heat`` recipe; the operator maps ``u(x, 0)`` to ``u(x, T)``. Methods: a plain FNO, the same FNO
with its boundary values overwritten to meet the fluxes (``fno-overwrite``), and BOON (kernel
corrections in every Fourier layer). Metrics: relative L2 (whole and interior) and the flux error
at the walls; the plot zooms in on both walls of one test sample.
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import torch
from neuralop.models import FNO

from pdes import Grid1D, Neumann
from pdes.heat import one_sided_flux
from pdes.problems import get as get_recipe

from .. import metrics
from ..constraints import BoundaryCondition
from ..models import BOON
from . import Context, Row, Task, register

SIZES = {
    "toy": dict(train=64, test=16, steps=400, nx=65),
    "full": dict(train=512, test=128, steps=3000, nx=129),
}
T_END, FLUX = 0.5, 5.0


def heat_pairs(count: int, seed: int, nx: int):
    """``(u(x, 0), u(x, T))`` pairs ``(count, 1, nx)`` in float32 and the recipe's grid."""
    recipe = get_recipe("heat")
    settings = recipe.settings(nx=nx, nt=2, t_end=T_END, flux_amplitude=FLUX, kappa=0.05)
    batch = recipe.generate(list(range(seed, seed + count)), settings)
    u = batch.u.float()
    return u[:, :1], u[:, 1:], Grid1D(nx)  # the recipe's node grid on [0, 1]


def train(model: torch.nn.Module, inputs, targets, steps: int, seed: int) -> float:
    """Adam on the mean squared error; returns the training time in seconds."""
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    started = time.perf_counter()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = ((model(inputs) - targets) ** 2).mean()
        loss.backward()
        optimiser.step()
    return time.perf_counter() - started


def run(context: Context) -> list[Row]:
    size = SIZES[context.size]
    folder = context.out / "boon-heat"
    folder.mkdir(parents=True, exist_ok=True)
    train_in, train_out, grid = heat_pairs(size["train"], 0, size["nx"])
    test_in, test_out, _ = heat_pairs(size["test"], 10_000, size["nx"])
    bc = Neumann(left=0.0, right=FLUX * math.sin(math.pi * T_END))

    def fno() -> FNO:
        torch.manual_seed(context.seed)
        return FNO(n_modes=(16,), in_channels=1, out_channels=1, hidden_channels=24, n_layers=3)

    plain = fno()
    boon = BOON(fno(), bc, grid)
    seconds = {"fno": train(plain, train_in, train_out, size["steps"], context.seed)}
    seconds["boon"] = train(boon, train_in, train_out, size["steps"], context.seed)
    with torch.no_grad():
        predictions = {"fno": plain(test_in), "boon": boon(test_in)}
    predictions["fno-overwrite"] = BoundaryCondition(bc, grid).apply(predictions["fno"])

    rows, target = [], test_out[:, 0].double()
    prescribed = torch.tensor([0.0, bc.right], dtype=torch.float64)
    for method, prediction in predictions.items():
        u = prediction[:, 0].double()
        flux = torch.stack(one_sided_flux(u, grid.dx), -1)
        flux_error = (flux - prescribed).abs().max().item()
        rel = metrics.relative_l2(u, target).item()
        interior = metrics.relative_l2(u[:, 1:-1], target[:, 1:-1]).item()
        rows.append(Row("boon-heat", "heat-neumann", f"rel L2 {method}", rel))
        rows.append(Row("boon-heat", "heat-neumann", f"interior rel L2 {method}", interior))
        ok = flux_error <= 1e-4 if method != "fno" else None
        target_text = "<= 1e-4" if method != "fno" else ""
        rows.append(
            Row("boon-heat", "heat-neumann", f"flux error {method}", flux_error, target_text, ok)
        )
    for method, value in seconds.items():
        rows.append(Row("boon-heat", "heat-neumann", f"train s {method}", value))

    x = grid.coordinates()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, window, title in (
        (axes[0], slice(0, 6), "insulated wall"),
        (axes[1], slice(-6, None), "heated wall"),
    ):
        ax.plot(x[window], target[0, window], "k", lw=2, label="solver")
        for method in ("fno", "fno-overwrite", "boon"):
            ax.plot(
                x[window], predictions[method][0, 0, window].double(), "o--", ms=3, label=method
            )
        ax.set(xlabel="x", ylabel="u(x, T)", title=title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "boundary-zoom.png", dpi=110)
    plt.close(fig)
    return rows


register(
    Task(
        name="boon-heat",
        description="FNO, FNO with overwritten walls and BOON on heat with a Neumann heat source",
        run=run,
    )
)
