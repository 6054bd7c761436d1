"""The task's figures: a strip of one test video and its members, the judged energy over lead
time."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ...io import save_figure
from ..figures import frame_strip


def plot_strip(
    path: Path,
    context: torch.Tensor,
    truth: torch.Tensor,
    plain: torch.Tensor,
    controlled: torch.Tensor,
    lam: float,
) -> None:
    """One test video: context ``(T_in, 1, H, W)``, truth ``(T_out, 1, H, W)``, then members
    ``(M, T_out, 1, H, W)`` of PreDiff and of PreDiff-KC (λ = ``lam``), a row each."""
    rows = [("context", context), ("truth", truth)]
    rows += [(f"PreDiff {m + 1}", plain[m]) for m in range(plain.shape[0])]
    rows += [(f"KC λ={lam:g} {m + 1}", controlled[m]) for m in range(controlled.shape[0])]
    frame_strip(path, rows, label_size=7, dpi=100)


def plot_energy(
    path: Path,
    per_lead: dict[str, list[float]],
    floor: list[float],
    one: dict[str, torch.Tensor],
    energy0: float,
) -> None:
    """Left: one test video's judged energy per lead (truth ``(T,)``, members ``(M, T)`` of
    PreDiff and PreDiff-KC as mean ± spread), ``E₀`` with the judge's floor as a band. Right:
    ``|E_judge − E₀|`` per lead over the test set, the judge's error on the truth as a band."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    leads = torch.arange(1, len(floor) + 1)
    mean_floor = sum(floor) / len(floor)
    left.axhspan(energy0 - mean_floor, energy0 + mean_floor, color="0.85", label="E₀ ± judge floor")
    left.axhline(energy0, color="k", lw=1)
    for label, values in one.items():
        values = values.double().reshape(-1, len(floor))
        centre, spread = values.mean(0), values.std(0) if values.shape[0] > 1 else 0 * values[0]
        left.plot(leads, centre, "o-", ms=3, label=label)
        left.fill_between(leads, centre - spread, centre + spread, alpha=0.2)
    left.set(xlabel="lead (frames)", ylabel="judged energy", title="one test video")
    left.legend(fontsize=7)
    right.fill_between(leads, 0, floor, color="0.85", label="judge on truth (floor)")
    for label, values in per_lead.items():
        right.plot(leads, values, "o-", ms=3, label=label)
    right.set(xlabel="lead (frames)", ylabel="|E_judge − E₀|", title="test set")
    right.set_ylim(bottom=0)
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
