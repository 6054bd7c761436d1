"""The task's figures: total mass over lead time, one forecast frame, the correction maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ...io import save_figure
from .methods import UPDATES


def plot_mass(path: Path, found: dict, window: int = 0) -> None:
    """Total mass over lead time of one test window: the truth and every method's members
    (mean ± spread), one panel per model."""
    test, grid, samples = found["test"], found["grid"], found["samples"]
    fig, axes = plt.subplots(1, len(samples), figsize=(4.2 * len(samples), 3.4), squeeze=False)
    leads = torch.arange(1, test.target.shape[1] + 1)
    for ax, (model, methods) in zip(axes[0], samples.items(), strict=True):
        ax.plot(leads, test.truth_mass[window], "k-", lw=2, label="truth")
        for method, members in methods.items():
            mass = grid.integrate(members[:, window, :, 0])
            centre, spread = mass.mean(0), mass.std(0)
            ax.plot(leads, centre, "o-", ms=3, label=method)
            ax.fill_between(leads, centre - spread, centre + spread, alpha=0.15)
        ax.set(xlabel="lead (frames)", ylabel="total mass", title=model)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_frame(path: Path, found: dict, model: str = "earthformer", window: int = 0) -> None:
    """One forecast frame (last lead) of one test window: truth, then member 0 of every method of
    ``model``."""
    test, methods = found["test"], found["samples"][model]
    panels = [("truth", test.target[window, -1, 0])]
    for method, members in methods.items():
        panels.append((f"{method} member", members[0, window, -1, 0]))
    top = float(max(p.max() for _, p in panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.1 * len(panels), 2.4), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels, strict=True):
        ax.imshow(image.numpy(), vmin=min(0.0, float(image.min())), vmax=top, cmap="viridis")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    save_figure(fig, path, dpi=100)


def plot_correction(path: Path, found: dict, model: str = "earthformer", window: int = 0) -> None:
    """Where each method moved mass (mean absolute correction over members, last lead) beside the
    raw ensemble's standard deviation and its mean's absolute error: an update following the
    spread helps where the two maps agree. The corrections share one colour scale from 0, so a
    uniform correction reads as one flat colour rather than its round-off."""
    methods = found["samples"][model]
    raw = methods["raw"][:, window, -1, 0]
    truth = found["test"].target[window, -1, 0]
    own = [("ensemble std", raw.std(0)), ("|ensemble mean error|", (raw.mean(0) - truth).abs())]
    shared = [
        (f"|{method} correction|", (methods[method][:, window, -1, 0] - raw).abs().mean(0))
        for method in UPDATES
        if method in methods
    ]
    largest = max(float(image.max()) for _, image in shared)
    panels = own + shared
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for index, (ax, (title, image)) in enumerate(zip(axes[0], panels, strict=True)):
        scale = {} if index < len(own) else {"vmin": 0.0, "vmax": largest}
        shown = ax.imshow(image.numpy(), cmap="magma", **scale)
        fig.colorbar(shown, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
