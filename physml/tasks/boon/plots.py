"""Plots of the BOON comparison: the boundary zoom of a 1-D case and the error over time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from pdes.heat import one_sided_flux

from ..._checks import as_tensor, integer
from ...io import save_figure
from .data import CaseData
from .walls import AxisWalls

ZERO_DRAWN_AT = 1e-17  # where an exact wall error sits on the log axis


def plot_boundary_zoom(
    data: CaseData, predictions: dict[str, torch.Tensor], path: Path, sample: int = 0
) -> None:
    """A 1-D case: one test sample's profile near both walls, and every test sample's error at the
    left wall (the flux for Neumann: the leak through an insulated wall). Each prediction has the
    shape of ``data.test_y`` ``(S, 1, n)``; ``sample`` is one of the ``S``."""
    walls = data.walls
    if not (isinstance(walls, AxisWalls) and data.test_y.ndim == 3):
        raise ValueError(
            f"the boundary zoom is drawn for 1-D cases, got {type(walls).__name__} on fields "
            f"{tuple(data.test_y.shape[1:])}"
        )
    predictions = _zoomed_predictions(predictions, tuple(data.test_y.shape))
    count, index = data.test_y.shape[0], integer(sample)
    if index is None or not -count <= index < count:
        raise ValueError(f"sample must be an int in [{-count}, {count}), got {sample!r}")
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
        axes[2].plot(left.abs() + ZERO_DRAWN_AT, marker, ms=5, mfc="none", label=method)
    what = {"neumann": "|du/dx − g|", "dirichlet": "|u − g|", "periodic": "|u₀ − u_N|"}
    title = f"left wall (exact 0 drawn at {ZERO_DRAWN_AT:g})"
    axes[2].set(yscale="log", xlabel="test sample", ylabel=what[walls.kind], title=title)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _zoomed_predictions(predictions: object, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """``predictions`` checked: ``{method: (S, 1, n)}`` of the test targets' ``shape``, on the
    CPU."""
    if not isinstance(predictions, Mapping):
        raise TypeError(
            f"predictions must be a dict of method -> {shape} tensors, got "
            f"{type(predictions).__name__}"
        )
    checked = {}
    for method, prediction in predictions.items():
        name = f"predictions[{method!r}]"
        checked[method] = as_tensor(
            name, prediction, f"{shape}", 3, dtype=None, device="cpu", finite=False
        )
        if tuple(checked[method].shape) != shape:
            raise ValueError(
                f"{name} must have the test targets' shape {shape}, got "
                f"{tuple(checked[method].shape)}"
            )
    return checked


def plot_error_over_time(curves: dict[str, list[list[float]]], times, path: Path, title: str):
    """Relative L2 against time per method: mean over the given runs, each run faint.

    ``curves`` maps each method to its runs (at least one), each a curve over ``times`` ``(T,)``.
    """
    t = as_tensor("times", times, "(T,), T >= 1", 1)
    if not t.numel():
        raise ValueError("times must hold at least one time, got none")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for index, (method, runs) in enumerate(_error_curves(curves, len(t)).items()):
        colour = f"C{index}"
        for run in runs:
            ax.plot(t, run, color=colour, alpha=0.25, lw=1)
        ax.plot(t, runs.mean(0), color=colour, lw=2, label=method)
    ax.set(yscale="log", xlabel="t", ylabel="relative L2", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _error_curves(curves: object, times: int) -> dict[str, torch.Tensor]:
    """``curves`` checked: ``{method: (runs >= 1, times)}`` in float64 on the CPU."""
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves must map at least one method to its runs, got {curves!r}")
    checked = {}
    for method, runs in curves.items():
        if isinstance(runs, (str, torch.Tensor)) or not isinstance(runs, Sequence) or not runs:
            raise ValueError(f"curves[{method!r}] must be a non-empty list of runs, got {runs!r}")
        rows = []
        for index, run in enumerate(runs):
            name = f"curves[{method!r}][{index}]"
            values = as_tensor(name, run, f"({times},)", 1, device="cpu", finite=False)
            if len(values) != times:
                raise ValueError(f"{name} must hold a value per time ({times}), got {len(values)}")
            rows.append(values)
        checked[method] = torch.stack(rows)
    return checked
