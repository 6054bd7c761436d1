"""Training pairs cut from trajectories ``u (sample, time, *space)`` along time.

- :class:`RolloutDataset`: ``u(t) → u(t + k)``, every start time of every sample, each
  ``(1, *space)`` (a one-step emulator, rolled out at inference);
- :class:`ForecastDataset`: ``T_in`` frames → the next ``T_out`` frames, each
  ``(T, 1, *space)`` — the ``(time, channel, H, W)`` layout of the forecasters.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from pdes.checks import floating_dtype, positive_int

from .datasets import PDEData, item_index, load


def _data(source: PDEData | str | os.PathLike) -> PDEData:
    return source if isinstance(source, PDEData) else load(source)


class _Windows(Dataset):
    """Windows of ``span`` consecutive times: item ``i`` is sample ``i // starts``, start
    ``i % starts``. ``spelled`` writes ``span`` in the arguments' names, for the error."""

    def __init__(self, source, span: int, dtype: torch.dtype, spelled: str) -> None:
        self.data = _data(source)
        self.dtype = floating_dtype("dtype", dtype)
        times = self.data.u.shape[1]
        if span > times:
            raise ValueError(
                f"{spelled} must not exceed the dataset's {times} times: the window needs "
                f"{spelled} = {span}"
            )
        self.starts = times - span + 1

    @property
    def attributes(self) -> dict:
        """The file's description (part of a checkpoint's data fingerprint)."""
        return self.data.attrs

    def __len__(self) -> int:
        return len(self.data) * self.starts

    def _window(self, i: int, start: int, stop: int) -> torch.Tensor:
        sample, offset = divmod(item_index(i, len(self), "windows"), self.starts)
        return self.data.u[sample, offset + start : offset + stop].to(self.dtype)


class RolloutDataset(_Windows):
    """Pairs ``u(t) → u(t + k)`` ``(1, *space)`` for every sample and start time."""

    def __init__(self, source, k: int = 1, dtype: torch.dtype = torch.float32) -> None:
        self.k = positive_int("k", k)
        super().__init__(source, self.k + 1, dtype, "k + 1")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._window(i, 0, self.k + 1)
        return frames[:1], frames[-1:]


class ForecastDataset(_Windows):
    """``t_in`` context frames → the next ``t_out`` frames, ``(T, 1, *space)`` each."""

    def __init__(
        self, source, t_in: int = 10, t_out: int = 10, dtype: torch.dtype = torch.float32
    ) -> None:
        self.t_in, self.t_out = positive_int("t_in", t_in), positive_int("t_out", t_out)
        super().__init__(source, self.t_in + self.t_out, dtype, "t_in + t_out")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._window(i, 0, self.t_in + self.t_out).unsqueeze(1)
        return frames[: self.t_in], frames[self.t_in :]
