"""Earthformer (NeurIPS 2022): a hierarchical cuboid-attention encoder-decoder for sequences.

``x (B, T_in, C_in, H, W)`` -> ``(B, T_out, C_out, H, W)``, non-autoregressive:

* stem: a per-frame full-resolution 3x3 convolution to ``stem_channels`` + GELU (its features
  are kept for the head), then spatial downsampling by ``downsample`` (a patchify
  convolution), a LayerNorm (so the frames' signal is O(1) in the residual stream, like the
  branches that add to it), plus learned positional embeddings (time + row + column);
* encoder: ``len(depth)`` levels of :class:`~physml.models.cuboid.CuboidTransformerBlock`
  (``depth[l]`` blocks each, with ``global_vectors`` learned global vectors threaded through),
  patch merging between levels (2x2 pixels -> one token, channels double, time kept). The output
  of every level is kept as the decoder's memory;
* decoder, coarse to fine: per level, a learned linear map over the context time axis
  (``T_out × T_in`` weights, initialised to pick the latest context frame) turns that level's
  memory into one skip per target frame; the top level's skip plus learned target positional
  embeddings is the initial query. At each level ``depth[l]`` times a self-attention block then
  a cross-attention block to that level's memory (and its global vectors), then nearest
  upsampling + 3x3 convolution to the next level, plus that level's skip (as in a U-Net);
* head: a 3x3 convolution on the token grid, then a 1x1 convolution to ``hidden · downsample²``
  channels rearranged into ``downsample × downsample`` pixels per token (depth-to-space, the
  inverse of the stem's patchify), plus a full-resolution skip (the stem's features mixed over
  the context time axis by another learned ``T_out × T_in`` map, initialised to the latest
  frame), GELU, and a 3x3 convolution to ``C_out`` channels.

The attention and feed-forward branches start near zero (their output weights scaled by 1e-2), so
every block starts close to the identity. These choices (stem norm, time-mixed decoder start and
skips, depth-to-space head with a full-resolution skip, small branches) are ours, not the
article's (its reference code has a similar learned map over time for the decoder's start).
Without a per-target-frame skip, every lead time starts from the same copy of the latest frame,
which is a worse forecast than the mean frame beyond a lead or two, and the model learned to
ignore its input (it predicted the average frame after 300 steps on N-body digits); without the
full-resolution skip, a token's ``downsample × downsample`` pixels had to be rendered from one
token vector. ``ffn_kernel = k`` adds a depthwise ``k × k`` convolution to every block's
feed-forward (:class:`~physml.models.cuboid.FeedForward`): a local spatial bias, also ours.

The layers live in :mod:`physml.models.cuboid` and are reusable (PreDiff's denoiser).
Internally everything is channel-last ``(B, T, H, W, C)``; float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pdes.checks import positive_int

from .._checks import integers
from .common import pad_circularly
from .cuboid import (
    CuboidCrossAttention,
    CuboidCrossBlock,
    CuboidSelfAttention,
    CuboidTransformerBlock,
    FeedForward,
    _dropout_rate,
    _int_pair,
    _ints,
    _kernel,
)

__all__ = ["Earthformer", "PatchMerge"]


class PatchMerge(nn.Module):
    """2x2 spatial patch merging of ``(B, T, H, W, C)`` -> ``(B, T, H/2, W/2, 2C)``, ``C = dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduce = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Needs even ``H`` and ``W`` (checked by :class:`Earthformer` at construction)."""
        b, t, h, w, c = x.shape
        x = x.reshape(b, t, h // 2, 2, w // 2, 2, c).permute(0, 1, 2, 4, 3, 5, 6)
        return self.reduce(self.norm(x.reshape(b, t, h // 2, w // 2, 4 * c)))


class _Upsample(nn.Module):
    """Nearest upsampling by ``factor`` then a 3x3 convolution, per frame, channel-last."""

    def __init__(self, dim_in: int, dim_out: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(dim_in, dim_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        frames = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        frames = self.conv(F.interpolate(frames, scale_factor=self.factor, mode="nearest"))
        return frames.permute(0, 2, 3, 1).reshape(b, t, h * self.factor, w * self.factor, -1)


class PositionEmbedding(nn.Module):
    """Learned additive embedding ``e_t + e_h + e_w`` for a ``(T, H, W, C)`` grid."""

    def __init__(self, shape: Sequence[int], dim: int) -> None:
        super().__init__()
        t, h, w = shape
        self.time = nn.Parameter(torch.randn(t, 1, 1, dim) * 0.02)
        self.row = nn.Parameter(torch.randn(1, h, 1, dim) * 0.02)
        self.column = nn.Parameter(torch.randn(1, 1, w, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.time + self.row + self.column)


HEAD_INITS = ("random", "icnr")


def _same_subpixels(conv: nn.Conv2d, group: int) -> None:
    """ICNR: copy the first of every ``group`` consecutive output channels (one token's pixels
    under ``pixel_shuffle``) over the rest of its group, weights and bias."""
    with torch.no_grad():
        conv.weight.copy_(conv.weight[::group].repeat_interleave(group, 0))
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[::group].repeat_interleave(group, 0))


class Earthformer(nn.Module):
    """Hierarchical cuboid-attention encoder-decoder forecaster (see the module docstring).

    ``input_shape = (T_in, C_in, H, W)``, ``target_shape = (T_out, C_out, H, W)``; ``depth``
    holds the number of blocks of each level (a sequence, e.g. ``(2, 2)``: two levels); ``H``
    and ``W`` must be divisible by ``downsample * 2 ** (len(depth) - 1)``. ``pattern`` names a
    :data:`~physml.models.cuboid.PATTERNS` entry (or is a list of layer specs) used by every
    self-attention block; ``global_vectors = 0`` disables global vectors. ``cross_cuboid_hw`` is
    the spatial cuboid of the decoder's cross-attention. ``stem_channels`` (default
    ``base_units // 2``) is the width of the full-resolution stem and head; ``ffn_kernel`` (0: none)
    the depthwise spatial convolution in the feed-forward layers. ``periodic``: every spatial
    convolution pads circularly instead of with zeros, for fields on a periodic domain (zero
    padding invents a wall at the frame's edge, where the forecast then errs), and shifted
    attention windows reach across the frame's edge instead of masking it (``periodic_hw`` of
    the cuboid layers; the default ``axial`` pattern has no shifted windows).
    ``head_init="icnr"`` starts the depth-to-space head with the same weights for each token's
    ``downsample²`` pixels (ICNR, Aitken et al. 2017), so an untrained head renders a token as a
    flat patch instead of a random patch-grid pattern that training must undo.
    ``num_heads``: the attention heads of every block; ``relative_position``: a learned per-head
    bias by the offset between two tokens of a cuboid; ``mlp_ratio``: the feed-forward layers'
    hidden width over the token width; ``dropout``: the rate of the attention, projection and
    feed-forward dropouts alike, in ``[0, 1]``. Second derivatives on the CPU (Hessian-vector
    products, ``gradgradcheck``) need ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` around
    the call: attention without a learned bias (the global vectors', all of it with
    ``relative_position=False``) runs torch's fused CPU kernel, whose backward has no derivative.
    """

    @staticmethod
    def frame_multiple(depth: Sequence[int], downsample: int) -> int:
        """What ``H`` and ``W`` must be multiples of: ``downsample * 2 ** (len(depth) - 1)``."""
        return downsample * 2 ** (len(depth) - 1)

    def __init__(
        self,
        input_shape: Sequence[int],
        target_shape: Sequence[int],
        base_units: int = 32,
        num_heads: int = 4,
        depth: Sequence[int] = (2, 2),
        downsample: int = 2,
        pattern: str | Sequence = "axial",
        global_vectors: int = 8,
        cross_cuboid_hw: Sequence[int] = (4, 4),
        padding: str = "ignore",
        relative_position: bool = True,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        stem_channels: int | None = None,
        ffn_kernel: int = 0,
        periodic: bool = False,
        head_init: str = "random",
    ) -> None:
        super().__init__()
        axes = ("T", "C", "H", "W")
        t_in, c_in, height, width = self.input_shape = _ints("input_shape", input_shape, 1, axes)
        t_out, c_out, h_out, w_out = self.target_shape = _ints(
            "target_shape", target_shape, 1, axes
        )
        if (h_out, w_out) != (height, width):
            raise ValueError(
                f"target_shape must have the input's (H, W) = {(height, width)}, "
                f"got {(h_out, w_out)}"
            )
        downsample = positive_int("downsample", downsample)
        if isinstance(depth, (str, bytes)) or not isinstance(depth, Sequence):
            raise TypeError(
                f"depth must be a sequence of block counts, one per level (e.g. (2, 2)), "
                f"got {depth!r}"
            )
        depth = integers("depth", depth, 1)
        base_units = positive_int("base_units", base_units)
        num_heads = positive_int("num_heads", num_heads)
        if base_units % num_heads:
            raise ValueError(
                f"base_units must be divisible by num_heads, got {base_units} and {num_heads}"
            )
        factor = self.frame_multiple(depth, downsample)
        if height % factor or width % factor:
            raise ValueError(
                f"input_shape (H, W) = {(height, width)} must be divisible by downsample * "
                f"2**(levels - 1) = {factor}"
            )
        global_vectors = positive_int("global_vectors", global_vectors, 0)
        self.depth, self.downsample, self.global_vectors = depth, downsample, global_vectors
        cross_cuboid_hw = _int_pair("cross_cuboid_hw", cross_cuboid_hw, 1)
        _kernel("ffn_kernel", ffn_kernel)

        levels = len(depth)
        dims = [base_units * 2**level for level in range(levels)]
        shapes = [
            (t_in, height // (downsample * 2**level), width // (downsample * 2**level))
            for level in range(levels)
        ]
        target_shapes = [(t_out, h, w) for _, h, w in shapes]
        common = dict(
            padding=padding,
            relative_position=relative_position,
            mlp_ratio=mlp_ratio,
            ffn_kernel=ffn_kernel,
            periodic_hw=periodic is True,  # anything else fails in pad_circularly below
        )
        dropout = _dropout_rate("dropout", dropout)
        drops = dict(attn_drop=dropout, proj_drop=dropout, ffn_drop=dropout)

        if stem_channels is None:
            stem_channels = max(base_units // 2, 1)
        stem_channels = positive_int("stem_channels", stem_channels)
        hidden = stem_channels
        self.stem_fine = nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.GELU())
        self.stem = nn.Conv2d(hidden, base_units, downsample, stride=downsample)
        self.stem_norm = nn.LayerNorm(base_units)
        self.input_embedding = PositionEmbedding(shapes[0], base_units)

        self.encoder = nn.ModuleList(
            nn.ModuleList(
                CuboidTransformerBlock(
                    dims[level],
                    num_heads,
                    shapes[level],
                    pattern,
                    global_vectors=global_vectors,
                    **common,
                    **drops,
                )
                for _ in range(depth[level])
            )
            for level in range(levels)
        )
        self.merges = nn.ModuleList(PatchMerge(dims[level]) for level in range(levels - 1))
        if global_vectors:
            self.initial_global = nn.Parameter(torch.randn(global_vectors, base_units) * 0.02)
            self.global_up = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(dims[level]), nn.Linear(dims[level], dims[level + 1]))
                for level in range(levels - 1)
            )

        time_mix = torch.zeros(levels, t_out, t_in)
        time_mix[:, :, -1] = 1.0  # start: every target frame's skip is the latest context frame
        self.time_mix = nn.Parameter(time_mix)
        fine_time_mix = torch.zeros(t_out, t_in)
        fine_time_mix[:, -1] = 1.0
        self.fine_time_mix = nn.Parameter(fine_time_mix)
        self.target_embedding = PositionEmbedding(target_shapes[-1], dims[-1])
        self.decoder_self = nn.ModuleList(
            nn.ModuleList(
                CuboidTransformerBlock(
                    dims[level], num_heads, target_shapes[level], pattern, **common, **drops
                )
                for _ in range(depth[level])
            )
            for level in range(levels)
        )
        self.decoder_cross = nn.ModuleList(
            nn.ModuleList(
                CuboidCrossBlock(
                    dims[level],
                    num_heads,
                    cross_cuboid_hw,
                    memory_global_vectors=global_vectors,
                    **common,
                    **drops,
                )
                for _ in range(depth[level])
            )
            for level in range(levels)
        )
        self.upsamples = nn.ModuleList(
            _Upsample(dims[level], dims[level - 1], 2) for level in range(1, levels)
        )
        self.head_norm = nn.LayerNorm(base_units)
        self.head_mix = nn.Conv2d(base_units, base_units, 3, padding=1)
        self.head = nn.Conv2d(base_units, hidden * downsample**2, 1)
        self.head_out = nn.Conv2d(hidden, c_out, 3, padding=1)
        self.downsample = downsample
        self.periodic = pad_circularly(self, periodic)
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {list(HEAD_INITS)}, got {head_init!r}")
        self.head_init = head_init
        if head_init == "icnr":
            _same_subpixels(self.head, downsample**2)
        self._shrink_residual_branches()

    def _shrink_residual_branches(self, scale: float = 1e-2) -> None:
        """Start every attention and feed-forward branch near zero (output weights × ``scale``).

        Each block then starts close to the identity, so the frames' signal reaches the head
        before the branches learn to add to it (at full size the untrained branches drowned it
        and the model could not even learn to copy a frame).
        """
        for module in self.modules():
            if isinstance(module, (CuboidSelfAttention, CuboidCrossAttention)):
                layers = [module.proj, getattr(module, "global_proj", None)]
            elif isinstance(module, FeedForward):
                layers = [module.net[-2]]
            else:
                continue
            for layer in filter(None, layers):
                with torch.no_grad():
                    layer.weight.mul_(scale)
                    layer.bias.zero_()

    def _check_input(self, x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor (B, T, C, H, W), got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
        expected = self.input_shape
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            hint = ""
            if x.ndim == 5 and (x.shape[2], x.shape[1], *x.shape[3:]) == expected:
                hint = " (it looks like (B, C, T, H, W): use x.transpose(1, 2))"
            elif x.ndim == 5 and tuple(x.shape[1:3]) == expected[:2]:
                hint = f" (the layout is (B, T, C, H, W); H, W must be {expected[2:]})"
            raise ValueError(
                f"x must have shape (B, T, C, H, W) = (B, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}{hint}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"x is empty: shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():  # attention would spread one NaN over the whole forecast
            raise ValueError("x contains NaN or inf values")
        return x.to(self.stem_fine[0].weight.dtype)  # float64 frames into a float32 network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, T_in, C_in, H, W)`` -> forecast ``(B, T_out, C_out, H, W)``."""
        x = self._check_input(x)
        batch, t_in, c_in, height, width = x.shape
        fine = self.stem_fine(x.reshape(batch * t_in, c_in, height, width))
        frames = self.stem(fine)
        z = frames.permute(0, 2, 3, 1).reshape(batch, t_in, *frames.shape[2:], -1)
        z = self.input_embedding(self.stem_norm(z))

        g = None
        if self.global_vectors:
            g = self.initial_global.expand(batch, -1, -1)
        memories, memory_globals = [], []
        for level, blocks in enumerate(self.encoder):
            for block in blocks:
                if g is None:
                    z = block(z)
                else:
                    z, g = block(z, g)
            memories.append(z)
            memory_globals.append(g)
            if level < len(self.merges):
                z = self.merges[level](z)
                if g is not None:
                    g = self.global_up[level](g)

        # One skip per target frame and level: a learned mix of the context frames' memories.
        skips = [
            torch.einsum("ot,bthwc->bohwc", mix, memory)
            for mix, memory in zip(self.time_mix, memories, strict=True)
        ]
        z = self.target_embedding(skips[-1])
        for level in reversed(range(len(self.encoder))):
            for self_block, cross_block in zip(
                self.decoder_self[level], self.decoder_cross[level], strict=True
            ):
                z = cross_block(self_block(z), memories[level], memory_globals[level])
            if level > 0:
                z = self.upsamples[level - 1](z) + skips[level - 1]

        z = self.head_norm(z)
        b, t, h, w, c = z.shape
        tokens = z.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        pixels = F.pixel_shuffle(self.head(F.gelu(self.head_mix(tokens))), self.downsample)
        fine_skip = torch.einsum(  # full-resolution skip, one per target frame
            "ot,btchw->bochw", self.fine_time_mix, fine.reshape(batch, t_in, *fine.shape[1:])
        )
        pixels = pixels.reshape(b, t, *pixels.shape[1:]) + fine_skip
        out = self.head_out(F.gelu(pixels.reshape(b * t, *pixels.shape[2:])))
        return out.reshape(b, t, -1, h * self.downsample, w * self.downsample)
