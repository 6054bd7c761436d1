"""Figure helpers the tasks and benchmarks share: a strip of frames, written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from .._checks import as_tensor
from ..io import save_figure

__all__ = ["frame_strip"]


def frame_strip(
    path: Path,
    rows: Sequence[tuple[str, torch.Tensor]],
    titles: Sequence[Sequence[str]] = (),
    label_size: float = 8,
    dpi: int = 110,
) -> None:
    """Grey-scale frames in [0, 1], a labelled row per ``(label, frames (T, 1, H, W))``.

    Columns are as many as the longest row (shorter rows leave blank axes); ``titles[r]`` titles
    row ``r``'s columns (rows without titles get none).
    """
    rows = _strip_rows(rows)
    columns = max(frames.shape[0] for _, frames in rows)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.1 * columns, 1.15 * len(rows)), squeeze=False
    )
    for r, (label, frames) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < frames.shape[0]:
                ax.imshow(frames[c, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=label_size)
            if r < len(titles) and c < len(titles[r]):
                ax.set_title(titles[r][c], fontsize=7)
    fig.tight_layout(pad=0.2)
    save_figure(fig, path, dpi=dpi)


def _strip_rows(rows: object) -> list[tuple[str, torch.Tensor]]:
    """``rows`` checked: a non-empty sequence of ``(label, frames (T, 1, H, W))``, none of the
    sizes 0, the frames on the CPU."""
    if isinstance(rows, (str, torch.Tensor)) or not isinstance(rows, Sequence):
        raise TypeError(
            f"rows must be a sequence of (label, frames) pairs, got {type(rows).__name__}"
        )
    if not rows:
        raise ValueError("rows must hold at least one (label, frames) pair, got none")
    checked = []
    for r, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) != 2:
            raise TypeError(f"rows[{r}] must be a (label, frames) pair, got {type(row).__name__}")
        label, frames = row
        name, expected = f"rows[{r}] ({label!r}) frames", "(T, 1, H, W), none of them 0"
        frames = as_tensor(name, frames, expected, 4, dtype=None, device="cpu", finite=False)
        if frames.shape[1] != 1 or frames.numel() == 0:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(frames.shape)}")
        checked.append((label, frames))
    return checked
