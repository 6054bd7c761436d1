"""PreDiff's denoisers: ``denoiser(z_t, t, context) -> ε̂``, the noise in the target latents.

``z_t`` ``(B, T_out, c, h, w)`` are the noisy target latents at timesteps ``t`` ``(B,)`` (int64,
in ``[0, T)``); ``context`` ``(B, T_in, c, h, w)`` the clean context latents. Both denoisers join
context and target along time, embed ``t`` sinusoidally (then an MLP) and return ``ε̂`` shaped like
``z_t``. They expose ``context_frames``, ``target_frames`` and ``latent_shape`` ``(c, h, w)``
(the :class:`Denoiser` protocol), which is all :class:`~physml.models.prediff.PreDiff` needs:

* :class:`ConvDenoiser`: a 2-D UNet seeing the ``T_in + T_out`` latent frames as channels, the
  time embedding added in every residual block (DDPM style). Cheap on a CPU.
* :class:`CuboidDenoiser`: the paper's Earthformer-UNet made of the toolkit's cuboid attention
  (:class:`~physml.models.cuboid.CuboidTransformerBlock`, axial pattern) on ``patch × patch``
  latent patches (2 × 2 by default: 4× fewer tokens, which makes it affordable on a CPU); one
  patch-merging level down and back up with a skip, the time embedding added before every block.

The output layers start at zero, so an untrained denoiser predicts ε̂ = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

from pdes.checks import finite, positive, positive_int

from ..common import in_model_dtype
from ..cuboid import CuboidTransformerBlock, _ints
from ..earthformer import PatchMerge, PositionEmbedding


@runtime_checkable
class Denoiser(Protocol):
    """What PreDiff needs of a denoiser (see the module docstring): called on noisy target
    latents ``z_t (B, T_out, c, h, w)``, their timesteps ``t (B,)`` and the clean ``context (B,
    T_in, c, h, w)``, it returns ``ε̂`` shaped like ``z_t``."""

    context_frames: int
    target_frames: int
    latent_shape: tuple[int, int, int]

    def __call__(
        self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor: ...


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of timesteps ``t`` ``(B,)``: ``[cos(t ω_k), sin(t ω_k)]``
    with ``ω_k = max_period^(−k / (dim/2))`` (the Transformer / DDPM embedding)."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.to(torch.float32)[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """``t (B,)`` → ``(B, dim)``: the sinusoidal embedding through a two-layer SiLU MLP.

    ``dim >= 2`` (one sinusoid pair at least; an odd ``dim`` pads the embedding with a zero).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim, 2)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


def check_denoiser_inputs(
    denoiser: Denoiser, z_t: object, t: object, context: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three inputs checked against ``denoiser``'s shapes (``z_t`` and ``context`` also for
    NaN or inf, and returned in the denoiser's dtype); ``t`` as int64 ``(B,)``."""
    shape = denoiser.latent_shape
    for name, value, frames in (
        ("z_t", z_t, denoiser.target_frames),
        ("context", context, denoiser.context_frames),
    ):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor (B, T, c, h, w), got {type(value)}")
        if value.ndim != 5 or tuple(value.shape[1:]) != (frames, *shape):
            raise ValueError(
                f"{name} must have shape (B, {frames}, {', '.join(map(str, shape))}), "
                f"got {tuple(value.shape)}"
            )
        finite(name, value)
    if context.shape[0] != z_t.shape[0]:
        raise ValueError(
            f"context must have z_t's batch {z_t.shape[0]}, got {tuple(context.shape)}"
        )
    if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.shape != z_t.shape[:1]:
        got = (
            f"{t.dtype} of shape {tuple(t.shape)}"
            if isinstance(t, torch.Tensor)
            else type(t).__name__
        )
        raise ValueError(f"t must be an integer tensor of shape ({z_t.shape[0]},), got {got}")
    return in_model_dtype(denoiser, z_t), t, in_model_dtype(denoiser, context)


def _latent_shape(value: Sequence[int]) -> tuple[int, int, int]:
    c, h, w = _ints("latent_shape", value, 1, ("c", "h", "w"))
    return (c, h, w)


class _TimedBlock(nn.Module):
    """A residual block (norm, SiLU, 3×3 conv, twice) with the time embedding added after its
    first convolution; a 1×1 convolution first when the channel count changes."""

    def __init__(self, channels_in: int, channels: int, embed: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels_in, channels, 1) if channels_in != channels else None
        self.time = nn.Linear(embed, channels)
        groups = math.gcd(8, channels)
        self.first = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.second = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            x = self.project(x)
        h = self.first(x) + self.time(F.silu(embedding))[:, :, None, None]
        return x + self.second(h)


class ConvDenoiser(nn.Module):
    """A 2-D UNet over latent frames as channels (see the module docstring).

    ``widths[l]`` channels at level ``l`` (the latent ``h, w`` halve between levels, so they must
    be divisible by ``2^(len(widths) − 1)``); ``blocks`` residual blocks per level and side.
    ``context_frames`` ``T_in``, ``target_frames`` ``T_out`` and ``latent_shape`` ``(c, h, w)``
    are the shapes of the latents it is called on.
    """

    def __init__(
        self,
        context_frames: int,
        target_frames: int,
        latent_shape: Sequence[int] = (4, 16, 16),
        widths: Sequence[int] = (48, 96, 96),
        blocks: int = 1,
    ) -> None:
        super().__init__()
        self.context_frames = positive_int("context_frames", context_frames)
        self.target_frames = positive_int("target_frames", target_frames)
        self.latent_shape = _latent_shape(latent_shape)
        widths = [positive_int("widths", w) for w in widths]
        if not widths:
            raise ValueError("widths must name at least one level")
        blocks = positive_int("blocks", blocks)
        c, h, w = self.latent_shape
        multiple = 2 ** (len(widths) - 1)
        if h % multiple or w % multiple:
            raise ValueError(
                f"latent_shape (h, w) = {(h, w)} must be divisible by 2^(levels − 1) = {multiple}"
            )
        self.config = dict(
            kind="conv",
            context_frames=self.context_frames,
            target_frames=self.target_frames,
            latent_shape=list(self.latent_shape),
            widths=list(widths),
            blocks=blocks,
        )
        embed = 4 * widths[0]
        self.time = TimeEmbedding(embed)
        frames = self.context_frames + self.target_frames
        self.stem = nn.Conv2d(frames * c, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        previous = widths[0]
        for level, width in enumerate(widths):
            self.down.append(
                nn.ModuleList(
                    _TimedBlock(previous if i == 0 else width, width, embed) for i in range(blocks)
                )
            )
            previous = width
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.middle = _TimedBlock(widths[-1], widths[-1], embed)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(widths))):
            self.up.append(
                nn.ModuleList(
                    _TimedBlock(
                        (previous if i == 0 else widths[level]) + widths[level],
                        widths[level],
                        embed,
                    )
                    for i in range(blocks)
                )
            )
            previous = widths[level]
            if level > 0:
                self.upsample.append(nn.Conv2d(widths[level], widths[level - 1], 3, padding=1))
                previous = widths[level - 1]
        self.head = nn.Sequential(
            nn.GroupNorm(math.gcd(8, widths[0]), widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], self.target_frames * c, 3, padding=1),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``z_t (B, T_out, c, h, w)``, ``t (B,)``, ``context (B, T_in, c, h, w)`` → ε̂ like z_t."""
        z_t, t, context = check_denoiser_inputs(self, z_t, t, context)
        batch, _, c, h, w = z_t.shape
        embedding = self.time(t)
        x = self.stem(torch.cat([context, z_t], dim=1).reshape(batch, -1, h, w))
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                x = block(x, embedding)
                skips.append(x)
            if level < len(self.downsample):
                x = self.downsample[level](x)
        x = self.middle(x, embedding)
        for index, blocks in enumerate(self.up):
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1), embedding)
            if index < len(self.upsample):
                x = self.upsample[index](F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.head(x).reshape(batch, self.target_frames, c, h, w)


class CuboidDenoiser(nn.Module):
    """An Earthformer-UNet of axial cuboid-attention blocks on latent patches (module docstring).

    ``dim`` channels per token at the patch level, ``2 dim`` one level down; ``depth = (d0, d1)``
    blocks at the patch level (on each side of the UNet) and at the lower level; ``patch`` the
    side of the square latent patch one token holds (``h, w`` divisible by ``2 · patch``).
    ``context_frames`` ``T_in``, ``target_frames`` ``T_out`` and ``latent_shape`` ``(c, h, w)``
    are the shapes of the latents it is called on; ``num_heads``, ``pattern`` (a
    :data:`~physml.models.cuboid.PATTERNS` name) and ``mlp_ratio`` those of every
    :class:`~physml.models.cuboid.CuboidTransformerBlock`.
    """

    def __init__(
        self,
        context_frames: int,
        target_frames: int,
        latent_shape: Sequence[int] = (4, 16, 16),
        dim: int = 64,
        depth: Sequence[int] = (2, 2),
        num_heads: int = 4,
        patch: int = 2,
        pattern: str = "axial",
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.context_frames = positive_int("context_frames", context_frames)
        self.target_frames = positive_int("target_frames", target_frames)
        self.latent_shape = _latent_shape(latent_shape)
        self.patch = patch = positive_int("patch", patch)
        dim = positive_int("dim", dim)
        d0, d1 = _ints("depth", depth, 1, ("patch level", "lower level"))
        num_heads = positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got {dim} and {num_heads}")
        mlp_ratio = positive("mlp_ratio", mlp_ratio)
        c, h, w = self.latent_shape
        if h % (2 * patch) or w % (2 * patch):
            raise ValueError(
                f"latent_shape (h, w) = {(h, w)} must be divisible by 2 · patch = {2 * patch}"
            )
        self.config = dict(
            kind="cuboid",
            context_frames=self.context_frames,
            target_frames=self.target_frames,
            latent_shape=list(self.latent_shape),
            dim=dim,
            depth=[d0, d1],
            num_heads=num_heads,
            patch=patch,
            pattern=pattern,
            mlp_ratio=mlp_ratio,
        )
        frames = self.context_frames + self.target_frames
        fine = (frames, h // patch, w // patch)
        coarse = (frames, h // (2 * patch), w // (2 * patch))
        embed = 4 * dim
        self.time = TimeEmbedding(embed)
        self.embed = nn.Linear(c * patch * patch, dim)
        self.position = PositionEmbedding(fine, dim)

        def blocks(count: int, width: int, shape) -> nn.ModuleList:
            return nn.ModuleList(
                CuboidTransformerBlock(width, num_heads, shape, pattern, mlp_ratio=mlp_ratio)
                for _ in range(count)
            )

        def times(count: int, width: int) -> nn.ModuleList:
            return nn.ModuleList(nn.Linear(embed, width) for _ in range(count))

        self.encoder, self.encoder_time = blocks(d0, dim, fine), times(d0, dim)
        self.merge = PatchMerge(dim)
        self.middle, self.middle_time = blocks(d1, 2 * dim, coarse), times(d1, 2 * dim)
        self.expand = nn.Linear(2 * dim, dim)
        self.join = nn.Linear(2 * dim, dim)
        self.decoder, self.decoder_time = blocks(d0, dim, fine), times(d0, dim)
        self.head_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, c * patch * patch)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def _run(x, blocks, projections, embedding):
        for block, project in zip(blocks, projections, strict=True):
            x = block(x + project(embedding)[:, None, None, None, :])
        return x

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``z_t (B, T_out, c, h, w)``, ``t (B,)``, ``context (B, T_in, c, h, w)`` → ε̂ like z_t."""
        z_t, t, context = check_denoiser_inputs(self, z_t, t, context)
        batch, _, c, h, w = z_t.shape
        p = self.patch
        frames = torch.cat([context, z_t], dim=1)
        count = frames.shape[1]
        tokens = frames.reshape(batch, count, c, h // p, p, w // p, p)
        tokens = tokens.permute(0, 1, 3, 5, 2, 4, 6).reshape(batch, count, h // p, w // p, -1)
        embedding = F.silu(self.time(t))
        x = self.position(self.embed(tokens))
        skip = x = self._run(x, self.encoder, self.encoder_time, embedding)
        x = self._run(self.merge(x), self.middle, self.middle_time, embedding)
        x = self.expand(x).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        x = self.join(torch.cat([x, skip], dim=-1))
        x = self._run(x, self.decoder, self.decoder_time, embedding)
        out = self.head(self.head_norm(x[:, -self.target_frames :]))
        out = out.reshape(batch, self.target_frames, h // p, w // p, c, p, p)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, self.target_frames, c, h, w)
