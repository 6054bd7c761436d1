"""Plots of the BOON comparison: the boundary zoom of a 1-D case and the error over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from pdes.heat import one_sided_flux

from ..figures import save_figure
from .data import CaseData
from .walls import F64, AxisWalls


def plot_boundary_zoom(
    data: CaseData, predictions: dict[str, torch.Tensor], path: Path, sample: int = 0
) -> None:
    """A 1-D case: one test sample's profile near both walls, and every test sample's error at the
    left wall (the flux for Neumann: the leak through an insulated wall)."""
    walls = data.walls
    if not (isinstance(walls, AxisWalls) and data.test_y.ndim == 3):
        raise ValueError(
            f"the boundary zoom is drawn for 1-D cases, got {type(walls).__name__} on fields "
            f"{tuple(data.test_y.shape[1:])}"
        )
    x, target = walls.grid.coordinates(), data.test_y[sample, 0].double()
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.4))
    for ax, window, title in (
        (axes[0], slice(0, 6), "left wall"),
        (axes[1], slice(-6, None), "right wall"),
    ):
        ax.plot(x[window], target[window], "k", lw=2, label="solver")
        for method, prediction in predictions.items():
            ax.plot(x[window], prediction[sample, 0, window].double(), "o--", ms=3, label=method)
        ax.set(xlabel="x", ylabel="u(x, T)", title=f"{title}, test sample {sample}")
    axes[0].legend(fontsize=8)
    for method, prediction in predictions.items():
        u = prediction[:, 0].double()
        if walls.kind == "neumann":
            left = one_sided_flux(u, walls.grid.dx)[0] - data.test_values[:, 0]
        elif walls.kind == "dirichlet":
            left = u[:, 0] - data.test_values[:, 0]
        else:
            left = u[:, 0] - u[:, -1]
        marker = ("o", "x", "+", "s")[list(predictions).index(method) % 4]
        axes[2].plot(left.abs() + 1e-17, marker, ms=5, mfc="none", label=method)
    what = {"neumann": "|du/dx − g|", "dirichlet": "|u − g|", "periodic": "|u₀ − u_N|"}
    title = "left wall (exact: 1e-17)"
    axes[2].set(yscale="log", xlabel="test sample", ylabel=what[walls.kind], title=title)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_error_over_time(curves: dict[str, list[list[float]]], times, path: Path, title: str):
    """Relative L2 against time per method: mean over the given runs, each run faint."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    t = torch.as_tensor(times, dtype=F64)
    for index, (method, runs) in enumerate(curves.items()):
        colour = f"C{index}"
        for run in runs:
            ax.plot(t, run, color=colour, alpha=0.25, lw=1)
        mean = torch.tensor(runs, dtype=F64).mean(0)
        ax.plot(t, mean, color=colour, lw=2, label=method)
    ax.set(yscale="log", xlabel="t", ylabel="relative L2", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
