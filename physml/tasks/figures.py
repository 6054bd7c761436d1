"""Figure helpers the tasks and benchmarks share: an atomic PNG write and a strip of frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from .._io import save_figure

__all__ = ["frame_strip", "save_figure"]


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
