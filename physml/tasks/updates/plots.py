"""The task's figures: NFR(τ) curves and the guard's error against its speedup."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ...io import save_figure
from .scores import CURVE


def plot_flip_curves(curves: dict[str, list[float]], path: Path, title: str) -> None:
    """NFR(τ) against τ / τ_median (old model's median error) for each method."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for method, curve in curves.items():
        ax.plot(CURVE, curve, "o-", ms=3, label=method)
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="τ / old model's median error", ylabel="NFR(τ)", title=title)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_guard_curve(rows: list[dict], path: Path, title: str) -> None:
    """Max and p99 error against speedup over the solver: one point per threshold level."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    guarded = [row for row in rows if row["method"] == "guard"]
    speed = [row["speedup"] for row in guarded]
    ax.plot(speed, [row["max_error"] for row in guarded], "o-", label="guard, max")
    ax.plot(speed, [row["p99_error"] for row in guarded], "s--", label="guard, p99")
    for row in rows:
        if row["method"] == "surrogate":
            ax.plot(row["speedup"], row["max_error"], "k^", label="surrogate alone, max")
    ax.axhline(1e-2, color="grey", lw=0.8, ls=":")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="speedup over the solver",
        ylabel="relative L2 error",
        title=title,
    )
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
