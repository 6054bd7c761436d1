"""The energy judge: an independent regressor from clean N-body frames to each frame's energy.

It reads a forecast's energy (:func:`physml.metrics.energy_error`) and is never used for
guidance, so a forecast cannot score well by fooling the regressor it was steered with: its own
architecture (a CNN on a window of clean frames, not the latent regressor of
:mod:`physml.models.knowledge_regressor`), its own initial weights (``seed``) and its own
training data (clean frames with the simulator's energies; ``physml.training.families.mse_loss``
through the :class:`~physml.training.Trainer`). Its error on true frames is the noise floor every
energy error is read against. The kinetic part needs velocities, so frame ``t`` is judged from
the ``window`` frames centred on it (the first and last frames repeated at the ends).
"""

from __future__ import annotations

import torch
from torch import nn

from pdes.checks import finite_number, positive, positive_int

from .baselines import check_sequence
from .common import in_model_dtype


class EnergyJudge(nn.Module):
    """Frames ``(B, T, C, H, W)`` → energies ``(B, T)`` (units of the energies trained on).

    Each frame's window of ``window`` frames (odd) is stacked along channels and passed through
    ``depth`` 3×3 stride-2 convolutions (channels ``hidden · 2^k``, SiLU), pooled to 4 × 4 (so
    where the sprites are, not only what they look like, reaches the head) and a two-layer MLP.
    ``offset`` and ``scale`` (buffers; finite, ``scale > 0``) set the output units: the network
    learns ``(E − offset) / scale``. ``seed`` fixes the initial weights without touching torch's
    global generator.
    """

    def __init__(
        self,
        channels: int = 1,
        window: int = 3,
        hidden: int = 16,
        depth: int = 3,
        offset: float = 0.0,
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        window = positive_int("window", window)
        if window % 2 == 0:
            raise ValueError(f"window must be odd (centred on the judged frame), got {window}")
        hidden = positive_int("hidden", hidden)
        depth = positive_int("depth", depth)
        seed = positive_int("seed", seed, minimum=0)
        self.channels, self.window = channels, window
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            layers, width = [], channels * window
            for level in range(depth):
                layers += [nn.Conv2d(width, hidden * 2**level, 3, stride=2, padding=1), nn.SiLU()]
                width = hidden * 2**level
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
            self.head = nn.Sequential(nn.Linear(16 * width, 64), nn.SiLU(), nn.Linear(64, 1))
        self.register_buffer("offset", torch.tensor(finite_number("offset", offset)))
        self.register_buffer("scale", torch.tensor(positive("scale", scale)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        frames = in_model_dtype(self, check_sequence("frames", frames, channels=self.channels))
        batch, steps = frames.shape[:2]
        half = self.window // 2
        padded = torch.cat(
            [frames[:, :1].expand(-1, half, -1, -1, -1), frames]
            + [frames[:, -1:].expand(-1, half, -1, -1, -1)],
            dim=1,
        )
        windows = padded.unfold(1, self.window, 1)  # (B, T, C, H, W, window)
        stacked = windows.permute(0, 1, 5, 2, 3, 4).reshape(batch * steps, -1, *frames.shape[-2:])
        value = self.head(self.features(stacked))[:, 0].reshape(batch, steps)
        return self.offset + self.scale * value


def standardise(energies: torch.Tensor) -> tuple[float, float]:
    """``(offset, scale)`` = the mean and standard deviation of training energies, for
    :class:`EnergyJudge` (and :class:`~physml.models.knowledge_regressor.KnowledgeRegressor`)."""
    values = torch.as_tensor(energies, dtype=torch.float64).flatten()
    if values.numel() < 2 or not torch.isfinite(values).all():
        raise ValueError("energies must hold at least two finite values")
    return float(values.mean()), float(values.std().clamp_min(1e-12))
