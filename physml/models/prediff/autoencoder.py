"""PreDiff's frame-wise autoencoder: video frames ``(B, T, C, H, W)`` ↔ latents ``(B, T, c, h, w)``.

Every frame is encoded on its own (context and target frames share the encoder), so the latent
video keeps the frame count. ``downsample`` halves ``H, W`` ``log2(downsample)`` times with
strided convolutions (the paper uses 8; the CPU plan 4: 64² → 16² × 4 channels); the decoder
mirrors it with nearest upsampling and ends in a sigmoid, since the N-body digits frames lie in
[0, 1]. Plain (not variational): PreDiff normalises the latents to zero mean and unit variance
per channel before the diffusion (:meth:`physml.models.prediff.PreDiff.calibrate`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pdes.checks import finite, positive_int

from ... import metrics
from ..common import in_model_dtype

L1_WEIGHT = 0.1
"""Weight of the L1 term in :func:`autoencoder_loss` (sharper strokes than MSE alone)."""


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class ResidualBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))`` on ``(N, C, H, W)``, channels kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        self.net = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = in_model_dtype(self, x)
        return x + self.net(x)


class FrameAutoencoder(nn.Module):
    """Convolutional autoencoder applied frame by frame (see the module docstring).

    Args:
        channels: frame channels ``C``; latent_channels: ``c``.
        downsample: spatial factor ``H / h``, a power of 2 (1 keeps the size).
        width: channels after the stem; they double at every halving (at most ``4 · width``).
    """

    def __init__(
        self, channels: int = 1, latent_channels: int = 4, downsample: int = 4, width: int = 16
    ) -> None:
        super().__init__()
        self.channels = channels = positive_int("channels", channels)
        self.latent_channels = latent_channels = positive_int("latent_channels", latent_channels)
        self.downsample = downsample = positive_int("downsample", downsample)
        if downsample & (downsample - 1):
            raise ValueError(f"downsample must be a power of 2, got {downsample}")
        width = positive_int("width", width)
        self.config = dict(
            channels=channels, latent_channels=latent_channels, downsample=downsample, width=width
        )
        levels = downsample.bit_length() - 1
        widths = [width * min(2**level, 4) for level in range(levels + 1)]
        encoder: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1)]
        for level in range(levels):
            encoder += [
                ResidualBlock(widths[level]),
                nn.Conv2d(widths[level], widths[level + 1], 3, stride=2, padding=1),
            ]
        encoder += [
            ResidualBlock(widths[-1]),
            nn.GroupNorm(_groups(widths[-1]), widths[-1]),
            nn.SiLU(),
            nn.Conv2d(widths[-1], latent_channels, 3, padding=1),
        ]
        decoder: list[nn.Module] = [
            nn.Conv2d(latent_channels, widths[-1], 3, padding=1),
            ResidualBlock(widths[-1]),
        ]
        for level in reversed(range(levels)):
            decoder += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[level + 1], widths[level], 3, padding=1),
                ResidualBlock(widths[level]),
            ]
        decoder += [
            nn.GroupNorm(_groups(widths[0]), widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], channels, 3, padding=1),
            nn.Sigmoid(),
        ]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(c, h, w)`` of the latent of an ``H × W`` frame."""
        return (self.latent_channels, height // self.downsample, width // self.downsample)

    def _frames(self, name: str, x: object, channels: int, multiple: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = (
                f"a tensor of dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            )
            raise TypeError(f"{name} must be a floating tensor (..., C, H, W), got {got}")
        if x.ndim < 4 or x.shape[-3] != channels:
            raise ValueError(
                f"{name} must have shape (..., C, H, W) with C={channels} and at least one "
                f"leading axis, got {tuple(x.shape)}"
            )
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise ValueError(
                f"{name} must have H and W divisible by downsample={multiple}, got {tuple(x.shape)}"
            )
        return in_model_dtype(self, finite(name, x))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(..., C, H, W)`` (e.g. ``(B, T, C, H, W)``) → latents ``(..., c, h, w)``."""
        frames = self._frames("frames", frames, self.channels, self.downsample)
        lead = frames.shape[:-3]
        latents = self.encoder(frames.reshape(-1, *frames.shape[-3:]))
        return latents.reshape(*lead, *latents.shape[1:])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(..., c, h, w)`` → frames ``(..., C, H, W)`` in [0, 1]; differentiable."""
        latents = self._frames("latents", latents, self.latent_channels, 1)
        lead = latents.shape[:-3]
        frames = self.decoder(latents.reshape(-1, *latents.shape[-3:]))
        return frames.reshape(*lead, *frames.shape[1:])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``decode(encode(frames))``, shape of ``frames``."""
        return self.decode(self.encode(frames))


def batch_frames(batch: object) -> torch.Tensor:
    """The frames of a batch: a tensor ``(B, T, C, H, W)`` or a (context, target) pair of them,
    joined along time."""
    if isinstance(batch, torch.Tensor):
        return batch
    if (
        isinstance(batch, (tuple, list))
        and batch
        and all(isinstance(part, torch.Tensor) for part in batch)
    ):
        return torch.cat(list(batch), dim=1)
    raise TypeError(
        f"batch must be frames (B, T, C, H, W) or a (context, target) pair, got {type(batch)}"
    )


def autoencoder_loss(model: nn.Module, batch: object, l1: float = L1_WEIGHT) -> torch.Tensor:
    """Stage-1 loss for the Trainer: reconstruction MSE + ``l1`` × L1, per pixel.

    ``model`` is the :class:`FrameAutoencoder` (or its DDP wrapper: it is called, not reached
    into); ``batch`` is what :func:`batch_frames` accepts.
    """
    frames = batch_frames(batch)
    error = model(frames) - frames
    return error.square().mean() + l1 * error.abs().mean()


@torch.no_grad()
def reconstruction_scores(
    autoencoder: FrameAutoencoder, frames: torch.Tensor, batch: int = 64
) -> dict[str, float]:
    """How well ``autoencoder`` keeps frames ``(N, T, C, H, W)`` in [0, 1]: ``mse`` (per pixel),
    ``frame_mse`` (summed per frame, the Earthformer convention) and ``ssim`` (data range 1),
    ``batch`` sequences at a time."""
    batch = positive_int("batch", batch)
    was_training = autoencoder.training
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    recon = torch.cat([autoencoder(part.to(device)).cpu() for part in frames.split(batch)])
    autoencoder.train(was_training)
    return {
        "mse": float(F.mse_loss(recon, frames)),
        "frame_mse": float(metrics.frame_mse(recon, frames)),
        "ssim": float(metrics.ssim(recon, frames, data_range=1.0)),
    }
