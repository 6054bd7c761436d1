"""Cuboid attention (Earthformer, NeurIPS 2022): attention inside cuboids of a ``(T, H, W)`` grid.

A sequence of feature maps, channel-last ``x (B, T, H, W, C)``, is cut into cuboids of
``cuboid_size = (bT, bH, bW)`` tokens and every token attends only to the tokens of its cuboid:

1. pad ``(T, H, W)`` at the end to multiples of the cuboid size (``padding``: ``"ignore"`` pads
   zeros and keeps the padded tokens out of attention, ``"zeros"`` pads zeros that take part,
   ``"nearest"`` replicates the last frame / row / column);
2. roll by ``-shift`` (Swin-style shifted windows; tokens that wrapped around the seam only
   attend to tokens that wrapped with them, except along an axis where the field is periodic
   and needs no padding: there the roll is a shift of the domain and the seam no wall);
3. reorder into ``(B, num_cuboids, volume, C)``. Per axis the strategy is ``"l"`` (local: a
   cuboid takes ``b`` contiguous positions) or ``"d"`` (dilated: it takes every ``n``-th position,
   ``n`` = number of cuboids along the axis);
4. attend inside each cuboid (torch's ``scaled_dot_product_attention``) with a learned relative
   position bias folded together with the masks into one additive ``attn_mask``;
5. reverse the reorder, un-roll, crop.

A cuboid size larger than its axis is clamped to the axis (and the shift on that axis set to 0),
as in the reference implementation. Masks and bias indices depend only on the grid shape and are
built once per shape and cached; the reorder is a reshape and one permuted copy, with no loop
over cuboids. Optional *global vectors* ``(B, P, C)``: every token also attends to them and they
attend to every (non-padded) token and to each other; their update is returned.

:class:`CuboidSelfAttention`, :class:`CuboidCrossAttention` (decoder queries attend to the encoder
memory over its whole time axis inside spatial cuboids) and :class:`CuboidTransformerBlock`
(pre-norm attention layers of a named :data:`PATTERNS` entry plus a GELU feed-forward) are the
building blocks of :class:`physml.models.earthformer.Earthformer` and of PreDiff's denoiser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pdes.checks import finite_number, positive, positive_int

from .._checks import integers
from .common import in_model_dtype

__all__ = [
    "PADDINGS",
    "PATTERNS",
    "CuboidCrossAttention",
    "CuboidCrossBlock",
    "CuboidLayout",
    "CuboidSelfAttention",
    "CuboidTransformerBlock",
    "FeedForward",
    "cross_attention_mask",
    "cuboid_reorder",
    "cuboid_reverse",
    "plan_cuboids",
    "relative_position_index",
    "resolve_pattern",
    "self_attention_mask",
]

Size3 = tuple[int, int, int]
Strategy3 = tuple[str, str, str]
LayerSpec = tuple[Size3, Strategy3, Size3]
"""One attention layer of a pattern, ``(cuboid_size, strategy, shift)``."""

PADDINGS = ("ignore", "zeros", "nearest")
"""The ways a grid is padded to whole cuboids (see the module docstring)."""
STRATEGIES = ("l", "d")
LOCAL: Strategy3 = ("l", "l", "l")
NO_SHIFT: Size3 = (0, 0, 0)


# --------------------------------------------------------------------------- argument checks


def _ints(name: str, value: object, minimum: int, axes: tuple[str, ...]) -> tuple[int, ...]:
    """``value`` as one Python integer ``>= minimum`` per axis of ``axes`` (e.g. ``("H",
    "W")``): :func:`physml._checks.integers`."""
    return integers(name, value, minimum, axes)


def _int_triple(name: str, value: object, minimum: int) -> Size3:
    t, h, w = _ints(name, value, minimum, ("T", "H", "W"))
    return (t, h, w)


def _int_pair(name: str, value: object, minimum: int) -> tuple[int, int]:
    h, w = _ints(name, value, minimum, ("H", "W"))
    return (h, w)


def _kernel(name: str, value: object) -> int:
    """A depthwise convolution's kernel size: 0 (none) or an odd positive integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0 or (value and value % 2 == 0):
        raise ValueError(f"{name} must be 0 or odd and positive, got {value}")
    return value


def _strategy(value: object) -> Strategy3:
    if not isinstance(value, (str, Sequence)) or len(value) != 3:
        raise ValueError(f"strategy must be 3 of 'l' (local) / 'd' (dilated), got {value!r}")
    if any(item not in STRATEGIES for item in value):
        raise ValueError(f"strategy must be 3 of 'l' (local) / 'd' (dilated), got {value!r}")
    return (value[0], value[1], value[2])


def _padding(value: object) -> str:
    if value not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {value!r}")
    return str(value)


def _dropout_rate(name: str, value: object) -> float:
    """``value`` as a float if it is a probability in [0, 1], else a ``ValueError`` (a
    ``TypeError`` for a non-number) naming ``name``: checked when built, not at the first
    training forward."""
    rate = finite_number(name, value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return rate


def _sequence_tensor(name: str, value: object, dim: int, layout: str) -> torch.Tensor:
    """``value`` as a channel-last ``(B, T, H, W, dim)`` floating tensor, or a clear error."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape {layout}, got {type(value).__name__}"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
    if value.ndim != 5 or value.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape {layout} with C={dim} (channel-last), got {tuple(value.shape)}"
        )
    if min(value.shape[:4]) < 1:
        raise ValueError(f"{name} must have non-empty axes, got {tuple(value.shape)}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _global_tensor(name: str, value: object, batch: int, count: int, dim: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, P, C), got {type(value).__name__}"
        )
    if tuple(value.shape) != (batch, count, dim):
        raise ValueError(
            f"{name} must have shape (B, P, C) = {(batch, count, dim)}, got {tuple(value.shape)}"
        )
    return value


# --------------------------------------------------------------------------- reorder


@dataclass(frozen=True)
class CuboidLayout:
    """How a ``(T, H, W)`` grid is cut into cuboids (sizes after clamping): enough to undo it.

    Attributes:
        shape: the grid's ``(T, H, W)``.
        cuboid_size: ``(bT, bH, bW)``, clamped to ``shape``.
        strategy: ``"l"`` (local) or ``"d"`` (dilated) per axis.
        shift: the roll per axis (0 on an axis the cuboid covers whole).
        padding: one of :data:`PADDINGS`.
    """

    shape: Size3
    cuboid_size: Size3
    strategy: Strategy3
    shift: Size3
    padding: str
    wrap: tuple[bool, bool, bool] = (False, False, False)
    """Per axis, whether rolling it is a periodic shift (a periodic field, no padding), so that
    the tokens that wrap around its seam stay neighbours and attend across it."""

    @property
    def padded_shape(self) -> Size3:
        """``(T, H, W)`` rounded up to multiples of the cuboid size."""
        t, h, w = (-(-n // b) * b for n, b in zip(self.shape, self.cuboid_size, strict=True))
        return (t, h, w)

    @property
    def blocks(self) -> Size3:
        """Number of cuboids along each axis."""
        t, h, w = (p // b for p, b in zip(self.padded_shape, self.cuboid_size, strict=True))
        return (t, h, w)

    @property
    def num_cuboids(self) -> int:
        """Cuboids per sample, ``N``."""
        return math.prod(self.blocks)

    @property
    def volume(self) -> int:
        """Tokens per cuboid, ``V = bT bH bW``."""
        return math.prod(self.cuboid_size)

    @property
    def padded(self) -> bool:
        """Whether any axis needed padding."""
        return self.padded_shape != self.shape

    @property
    def seamed(self) -> bool:
        """Whether a roll left a seam that attention must not cross (a rolled axis that does
        not wrap)."""
        return any(s and not w for s, w in zip(self.shift, self.wrap, strict=True))


def plan_cuboids(
    shape: Sequence[int],
    cuboid_size: Sequence[int],
    strategy: Sequence[str] = LOCAL,
    shift: Sequence[int] = NO_SHIFT,
    padding: str = "ignore",
    periodic: Sequence[bool] = (False, False, False),
) -> CuboidLayout:
    """The :class:`CuboidLayout` for a grid of ``shape`` ``(T, H, W)`` cut into cuboids of
    ``cuboid_size`` with ``strategy`` (``"l"``/``"d"`` per axis), ``shift`` and ``padding``
    (:data:`PADDINGS`), validating and clamping the sizes.

    A cuboid size ``>=`` its axis becomes the axis length and the shift on that axis 0 (as the
    reference does). Shifts must satisfy ``0 <= shift < cuboid_size`` on every axis. ``periodic``
    ``(T, H, W)`` marks the axes along which the field is periodic: a shifted one that needs no
    padding wraps (:attr:`CuboidLayout.wrap`).
    """
    shape3 = _int_triple("shape", tuple(shape), 1)
    size = _int_triple("cuboid_size", cuboid_size, 1)
    shift3 = _int_triple("shift", shift, 0)
    if any(s >= b for s, b in zip(shift3, size, strict=True)):
        raise ValueError(f"shift must be smaller than cuboid_size {size} per axis, got {shift3}")
    clamped = tuple(min(b, n) for b, n in zip(size, shape3, strict=True))
    shift3 = tuple(0 if b >= n else s for s, b, n in zip(shift3, size, shape3, strict=True))
    periodic = tuple(periodic)
    if len(periodic) != 3 or not all(isinstance(p, bool) for p in periodic):
        raise TypeError(f"periodic must be three bools (T, H, W), got {periodic!r}")
    wrap = tuple(
        p and s > 0 and n % b == 0
        for p, s, n, b in zip(periodic, shift3, shape3, clamped, strict=True)
    )
    return CuboidLayout(shape3, clamped, _strategy(strategy), shift3, _padding(padding), wrap)


def _split_axes(layout: CuboidLayout) -> tuple[list[int], list[int]]:
    """Sizes of the 6 split spatial axes and the permutation bringing them to (blocks, inner)."""
    split, block_axes, inner_axes = [], [], []
    for axis, (b, n, s) in enumerate(
        zip(layout.cuboid_size, layout.blocks, layout.strategy, strict=True)
    ):
        first, second = 1 + 2 * axis, 2 + 2 * axis
        if s == "l":  # position = block * b + inner
            split += [n, b]
            block_axes.append(first)
            inner_axes.append(second)
        else:  # dilated: position = inner * n + block
            split += [b, n]
            inner_axes.append(first)
            block_axes.append(second)
    return split, [0, *block_axes, *inner_axes, 7]


def _grid_to_cuboids(x: torch.Tensor, layout: CuboidLayout) -> torch.Tensor:
    """Padded, rolled ``(B, Tp, Hp, Wp, C)`` -> ``(B, N, V, C)``."""
    split, perm = _split_axes(layout)
    batch, channels = x.shape[0], x.shape[-1]
    x = x.reshape(batch, *split, channels).permute(perm)
    return x.reshape(batch, layout.num_cuboids, layout.volume, channels)


def _cuboids_to_grid(cuboids: torch.Tensor, layout: CuboidLayout) -> torch.Tensor:
    """``(B, N, V, C)`` -> padded, rolled ``(B, Tp, Hp, Wp, C)`` (inverse of the above)."""
    split, perm = _split_axes(layout)
    batch, channels = cuboids.shape[0], cuboids.shape[-1]
    permuted = [split[p - 1] for p in perm[1:7]]
    inverse = [perm.index(axis) for axis in range(8)]
    x = cuboids.reshape(batch, *permuted, channels).permute(inverse)
    return x.reshape(batch, *layout.padded_shape, channels)


def _pad(x: torch.Tensor, layout: CuboidLayout) -> torch.Tensor:
    if not layout.padded:
        return x
    if layout.padding == "nearest":
        for axis, (n, p) in enumerate(zip(layout.shape, layout.padded_shape, strict=True)):
            if p > n:
                index = torch.arange(p, device=x.device).clamp_(max=n - 1)
                x = x.index_select(1 + axis, index)
        return x
    (t, h, w), (pt, ph, pw) = layout.shape, layout.padded_shape
    return F.pad(x, (0, 0, 0, pw - w, 0, ph - h, 0, pt - t))


def _roll(x: torch.Tensor, shift: Sequence[int], sign: int) -> torch.Tensor:
    axes = [(sign * s, 1 + a) for a, s in enumerate(shift) if s]
    if not axes:
        return x
    shifts, dims = zip(*axes, strict=True)
    return torch.roll(x, shifts=shifts, dims=dims)


def cuboid_reorder(
    x: torch.Tensor,
    cuboid_size: Sequence[int],
    strategy: Sequence[str] = LOCAL,
    shift: Sequence[int] = NO_SHIFT,
    padding: str = "ignore",
    periodic: Sequence[bool] = (False, False, False),
) -> tuple[torch.Tensor, CuboidLayout]:
    """Cut channel-last ``x (B, T, H, W, C)`` into cuboids ``(B, N, V, C)``; also the layout
    (``cuboid_size``, ``strategy``, ``shift``, ``padding`` as in :func:`plan_cuboids`).

    Pads to multiples of the (clamped) cuboid size, rolls by ``-shift`` and reorders; slot ``v``
    of a cuboid is its inner position ``(t, h, w)`` in row-major order. ``periodic``: see
    :func:`plan_cuboids`.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
        raise ValueError(f"x must be a channel-last tensor (B, T, H, W, C), got {got}")
    layout = plan_cuboids(x.shape[1:4], cuboid_size, strategy, shift, padding, periodic)
    return _grid_to_cuboids(_roll(_pad(x, layout), layout.shift, -1), layout), layout


def cuboid_reverse(cuboids: torch.Tensor, layout: CuboidLayout) -> torch.Tensor:
    """Undo :func:`cuboid_reorder` of ``layout``: ``cuboids (B, N, V, C)`` -> ``(B, T, H, W,
    C)`` (un-roll, crop)."""
    if not isinstance(layout, CuboidLayout):
        raise TypeError(f"layout must be a CuboidLayout, got {type(layout).__name__}")
    expected = (layout.num_cuboids, layout.volume)
    if not isinstance(cuboids, torch.Tensor) or cuboids.ndim != 4:
        got = tuple(cuboids.shape) if isinstance(cuboids, torch.Tensor) else type(cuboids)
        raise ValueError(f"cuboids must have shape (B, N, V, C), got {got}")
    if tuple(cuboids.shape[1:3]) != expected:
        raise ValueError(
            f"cuboids must have (N, V) = {expected} for this layout, got {tuple(cuboids.shape)}"
        )
    x = _roll(_cuboids_to_grid(cuboids, layout), layout.shift, +1)
    t, h, w = layout.shape
    if layout.padded:
        x = x[:, :t, :h, :w]
    return x


# --------------------------------------------------------------------------- masks, bias


def _slot_coordinates(layout: CuboidLayout, device: torch.device | None = None) -> torch.Tensor:
    """``(N, V, 3)``: each cuboid slot's position in the padded (un-rolled) grid."""
    axes = [torch.arange(p, device=device) for p in layout.padded_shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)[None]
    return _grid_to_cuboids(_roll(grid, layout.shift, -1), layout)[0]


def _real_and_region(
    layout: CuboidLayout, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slot ``(N, V)``: is it an original (not padded) token, and its wrap-around region.

    After rolling by ``-s`` along an axis, the positions ``q < s`` of the padded grid sit past
    the seam; the region code has one bit per axis saying on which side a token is (none for an
    axis that wraps: its seam is no wall).
    """
    coords = _slot_coordinates(layout, device)
    shape = torch.tensor(layout.shape, device=coords.device)
    real = (coords < shape).all(dim=-1)
    region = torch.zeros_like(real, dtype=torch.long)
    for axis, (s, wraps) in enumerate(zip(layout.shift, layout.wrap, strict=True)):
        if s and not wraps:
            region |= (coords[..., axis] < s).long() << axis
    return real, region


def self_attention_mask(
    layout: CuboidLayout, device: torch.device | None = None
) -> torch.Tensor | None:
    """``(N, V, V)`` bool on ``device``, True where a query slot of ``layout`` may attend a key
    slot; ``None`` if all may.

    Keys must lie on the query's side of every roll seam and, with ``"ignore"`` padding, not be
    padding. Padded queries (whose outputs are cropped) may attend everything, so no row is empty.
    """
    ignore = layout.padding == "ignore" and layout.padded
    if not ignore and not layout.seamed:
        return None
    real, region = _real_and_region(layout, device)
    allowed = region[:, :, None] == region[:, None, :]
    if ignore:
        allowed &= real[:, None, :]
    return allowed | ~real[:, :, None]


def cross_attention_mask(
    query: CuboidLayout, memory: CuboidLayout, device: torch.device | None = None
) -> torch.Tensor | None:
    """``(N, Vq, Vm)`` bool mask on ``device`` between query cuboids and the memory cuboids of
    the same index.

    Same rules as :func:`self_attention_mask`, with keys taken from the memory layout.
    """
    ignore = memory.padding == "ignore" and memory.padded
    if not ignore and not query.seamed:
        return None
    real_q, region_q = _real_and_region(query, device)
    real_m, region_m = _real_and_region(memory, device)
    allowed = region_q[:, :, None] == region_m[:, None, :]
    if ignore:
        allowed &= real_m[:, None, :]
    return allowed | ~real_q[:, :, None]


def relative_position_index(
    query_size: Sequence[int], key_size: Sequence[int], table_size: Sequence[int]
) -> torch.Tensor:
    """``(Vq, Vk)`` indices into a bias table of ``prod(2 b - 1)`` rows for cuboid ``table_size``.

    Offsets are measured in inner cuboid coordinates (row-major slots); ``query_size`` and
    ``key_size`` may be smaller than ``table_size`` (clamped cuboids). Axes with ``table_size``
    0 are ignored (used for the time axis in cross-attention).
    """

    def coords(size: Sequence[int]) -> torch.Tensor:
        axes = [torch.arange(b) for b in size]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(size))

    offset = coords(query_size)[:, None, :] - coords(key_size)[None, :, :]
    index = torch.zeros(offset.shape[:2], dtype=torch.long)
    for axis, b in enumerate(table_size):
        if b:
            index = index * (2 * b - 1) + offset[..., axis] + b - 1
    return index


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Bool ``(N, Vq, Vk)`` mask -> float ``(N, 1, Vq, Vk)`` with 0 / -inf."""
    if mask is None:
        return None
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, float("-inf"))[:, None]


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout: float,
) -> torch.Tensor:
    """SDPA per cuboid: ``q (B, N, h, Vq, d)``, ``k, v (B, N, h, Vk, d)``, ``attn_mask``.

    ``attn_mask`` is ``(N|1, h|1, Vq, Vk)``. Folds ``(B, N)`` into SDPA's batch when the mask is
    the same for every cuboid, else ``(N, h)`` into its head axis, so the fused 4-D kernels apply.
    """
    batch, num, heads, vq, d = q.shape
    vk = k.shape[3]
    if attn_mask is not None and attn_mask.requires_grad and q.device.type == "cpu":
        # Torch's fused CPU kernel gives no gradient to a learned attn_mask and falls back to a
        # slower math path with empty-row checks; rows are never empty here, so do it directly.
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(d**-0.5) + attn_mask
        weights = (
            F.dropout(torch.softmax(scores, dim=-1), dropout) if dropout else scores.softmax(-1)
        )
        return torch.matmul(weights, v)
    if attn_mask is None or attn_mask.shape[0] == 1:
        mask = None if attn_mask is None else attn_mask[0][None]
        out = F.scaled_dot_product_attention(
            q.reshape(batch * num, heads, vq, d),
            k.reshape(batch * num, heads, vk, d),
            v.reshape(batch * num, heads, vk, d),
            attn_mask=mask,
            dropout_p=dropout,
        )
        return out.view(batch, num, heads, vq, d)
    mask = attn_mask.expand(num, heads, vq, vk).reshape(1, num * heads, vq, vk)
    out = F.scaled_dot_product_attention(
        q.reshape(batch, num * heads, vq, d),
        k.reshape(batch, num * heads, vk, d),
        v.reshape(batch, num * heads, vk, d),
        attn_mask=mask,
        dropout_p=dropout,
    )
    return out.view(batch, num, heads, vq, d)


class _CachedMasks:
    """Per-layer cache of masks / bias indices keyed by layout, device and dtype (not saved)."""

    def __init__(self) -> None:
        self._store: dict[tuple, object] = {}

    def get(self, key: tuple, build: Callable[[], object]) -> object:
        if key not in self._store:
            self._store[key] = build()
        return self._store[key]


def _heads(dim: int, num_heads: int) -> int:
    dim = positive_int("dim", dim)
    num_heads = positive_int("num_heads", num_heads)
    if dim % num_heads:
        raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, heads={num_heads}")
    return dim // num_heads


# --------------------------------------------------------------------------- self-attention


class CuboidSelfAttention(nn.Module):
    """Multi-head self-attention inside cuboids of channel-last ``x (B, T, H, W, dim)``.

    Args:
        dim: channels ``C`` of a token (the last axis), divisible by ``num_heads``.
        num_heads: attention heads, each of ``dim / num_heads`` channels.
        cuboid_size: ``(bT, bH, bW)`` tokens per cuboid (clamped to the grid).
        strategy: ``"l"`` (local) or ``"d"`` (dilated) per axis ``(T, H, W)``.
        shift_size: ``(sT, sH, sW)``, the roll before cutting (``0 <= s < b``; all 0: no shift).
        padding: how the grid is padded to whole cuboids, one of :data:`PADDINGS` (see the module
            docstring).
        global_vectors: ``P``; ``P > 0`` makes :meth:`forward` take and return ``P`` global
            vectors ``(B, P, dim)`` (with their own q/k/v and output projections); 0: none.
        relative_position: add a learned per-head bias indexed by the offset of two tokens
            inside the cuboid.
        qkv_bias: give the query, key and value projections a bias.
        attn_drop: dropout rate of the attention weights, in ``[0, 1]`` (in training only).
        proj_drop: dropout rate after the output projection, in ``[0, 1]``.
        periodic_hw: the field is periodic in ``H`` and ``W``, so a shifted window attends
            across the domain's edge there (where no padding is needed) instead of masking its
            seam.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        cuboid_size: Sequence[int],
        strategy: Sequence[str] = LOCAL,
        shift_size: Sequence[int] = NO_SHIFT,
        padding: str = "ignore",
        global_vectors: int = 0,
        relative_position: bool = True,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        periodic_hw: bool = False,
    ) -> None:
        super().__init__()
        self.head_dim = _heads(dim, num_heads)
        self.dim, self.num_heads = int(dim), int(num_heads)
        self.periodic = (False, _flag("periodic_hw", periodic_hw), periodic_hw)
        self.cuboid_size = _int_triple("cuboid_size", cuboid_size, 1)
        self.strategy = _strategy(strategy)
        self.shift_size = _int_triple("shift_size", shift_size, 0)
        plan_cuboids(self.cuboid_size, self.cuboid_size, self.strategy, self.shift_size)
        self.padding = _padding(padding)
        if isinstance(global_vectors, bool) or not isinstance(global_vectors, int):
            raise TypeError(f"global_vectors must be an int (0 = none), got {global_vectors!r}")
        if global_vectors < 0:
            raise ValueError(f"global_vectors must be >= 0, got {global_vectors}")
        self.global_vectors = global_vectors
        self.attn_drop = _dropout_rate("attn_drop", attn_drop)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(_dropout_rate("proj_drop", proj_drop))
        self.relative_position_table: nn.Parameter | None = None
        if relative_position:
            rows = math.prod(2 * b - 1 for b in self.cuboid_size)
            self.relative_position_table = nn.Parameter(torch.zeros(rows, num_heads))
            nn.init.trunc_normal_(self.relative_position_table, std=0.02)
        if global_vectors:
            self.global_qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
            self.global_proj = nn.Linear(dim, dim)
        self._cache = _CachedMasks()

    def layout(self, shape: Sequence[int]) -> CuboidLayout:
        """The clamped :class:`CuboidLayout` this layer uses for a ``(T, H, W)`` grid."""
        return plan_cuboids(
            shape, self.cuboid_size, self.strategy, self.shift_size, self.padding, self.periodic
        )

    def attention_bias(
        self, layout: CuboidLayout, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """Additive ``attn_mask`` ``(N|1, h|1, V, V)``: relative bias plus -inf masks, or None."""
        mask = self._cache.get(
            ("mask", layout, device, dtype),
            lambda: _additive(self_attention_mask(layout, device), dtype),
        )
        if self.relative_position_table is None:
            return mask
        index = self._cache.get(
            ("index", layout.cuboid_size, device),
            lambda: relative_position_index(
                layout.cuboid_size, layout.cuboid_size, self.cuboid_size
            ).to(device),
        )
        bias = self.relative_position_table[index].permute(2, 0, 1).to(dtype)[None]
        return bias if mask is None else mask + bias

    def forward(
        self, x: torch.Tensor, global_vectors: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x (B, T, H, W, dim)`` -> same shape; with global vectors also their update."""
        x = in_model_dtype(self, _sequence_tensor("x", x, self.dim, "(B, T, H, W, C)"))
        cuboids, layout = cuboid_reorder(
            x, self.cuboid_size, self.strategy, self.shift_size, self.padding, self.periodic
        )
        out, global_out = self.attend(cuboids, layout, global_vectors)
        out = cuboid_reverse(out, layout)
        return out if global_out is None else (out, global_out)

    def attend(
        self,
        cuboids: torch.Tensor,
        layout: CuboidLayout,
        global_vectors: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention on already reordered ``cuboids (B, N, V, dim)``; returns the same layout.

        Also returns the global vectors' update ``(B, P, dim)`` (``None`` without them).
        """
        batch, num, volume, dim = cuboids.shape
        heads, d = self.num_heads, self.head_dim
        if self.global_vectors and global_vectors is None:
            raise ValueError(f"global_vectors (B, {self.global_vectors}, {dim}) are required")
        if not self.global_vectors and global_vectors is not None:
            raise ValueError("global_vectors given to a layer built with global_vectors=0")
        dropout = self.attn_drop if self.training else 0.0
        qkv = self.qkv(cuboids).view(batch, num, volume, 3, heads, d).transpose(2, 4)
        q, k, v = qkv.unbind(dim=3)  # each (B, N, h, V, d)
        attn_mask = self.attention_bias(layout, cuboids.device, cuboids.dtype)
        if global_vectors is None:
            out = _attend(q, k, v, attn_mask, dropout)
            return self._project(out, batch, num, volume, dim), None

        count = self.global_vectors
        global_vectors = in_model_dtype(
            self, _global_tensor("global_vectors", global_vectors, batch, count, dim)
        )
        gq, gk, gv = self.global_qkv(global_vectors).view(batch, count, 3, heads, d).unbind(2)
        gq, gk, gv = (t.transpose(1, 2) for t in (gq, gk, gv))  # (B, h, P, d)
        shape = (batch, num, heads, count, d)
        keys = torch.cat([k, gk[:, None].expand(shape)], dim=3)
        values = torch.cat([v, gv[:, None].expand(shape)], dim=3)
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, count))
        out = _attend(q, keys, values, attn_mask, dropout)
        out = self._project(out, batch, num, volume, dim)

        # Global vectors attend to every real token and to each other.
        all_k = torch.cat([k.transpose(1, 2).reshape(batch, heads, num * volume, d), gk], dim=2)
        all_v = torch.cat([v.transpose(1, 2).reshape(batch, heads, num * volume, d), gv], dim=2)
        global_mask = None
        if layout.padding == "ignore" and layout.padded:
            global_mask = self._cache.get(
                ("global", layout, cuboids.device, cuboids.dtype),
                lambda: self._global_mask(layout, cuboids.device, cuboids.dtype),
            )
        g = F.scaled_dot_product_attention(
            gq, all_k, all_v, attn_mask=global_mask, dropout_p=dropout
        )
        g = self.global_proj(g.transpose(1, 2).reshape(batch, count, dim))
        return out, self.proj_drop(g)

    def _global_mask(
        self, layout: CuboidLayout, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        real, _ = _real_and_region(layout, device)
        keep = torch.cat([real.reshape(-1), real.new_ones(self.global_vectors)])
        mask = torch.zeros(keep.shape, dtype=dtype, device=device)
        return mask.masked_fill_(~keep, float("-inf")).view(1, 1, 1, -1)

    def _project(
        self, out: torch.Tensor, batch: int, num: int, volume: int, dim: int
    ) -> torch.Tensor:
        out = out.transpose(2, 3).reshape(batch, num, volume, dim)
        return self.proj_drop(self.proj(out))


# --------------------------------------------------------------------------- cross-attention


class CuboidCrossAttention(nn.Module):
    """Decoder queries ``x (B, Tq, H, W, dim)`` attend to encoder memory ``(B, Tm, H, W, dim)``.

    Both are cut along space into cuboids ``cuboid_hw`` (strategy ``strategy_hw``, shift
    ``shift_hw``) spanning their whole time axis, as in the paper; each query cuboid attends to
    the memory cuboid covering the same pixels and, optionally, to the memory's global vectors.

    Args:
        dim: channels ``C`` of a token (the last axis of ``x`` and the memory), divisible by
            ``num_heads``.
        num_heads: attention heads, each of ``dim / num_heads`` channels.
        cuboid_hw: ``(bH, bW)`` pixels per cuboid (clamped to the frame).
        strategy_hw: ``"l"`` (local) or ``"d"`` (dilated) per axis ``(H, W)``.
        shift_hw: ``(sH, sW)``, the roll before cutting (``0 <= s < b``; ``(0, 0)``: no shift).
        padding: how the frame is padded to whole cuboids, one of :data:`PADDINGS`.
        memory_global_vectors: ``P``, the memory's global vectors every query also attends to;
            ``P > 0`` makes :meth:`forward` require them ``(B, P, dim)``; 0: none.
        relative_position: add a learned per-head bias indexed by the spatial offset of a query
            and a memory token.
        qkv_bias: give the query and key/value projections a bias.
        attn_drop: dropout rate of the attention weights, in ``[0, 1]`` (in training only).
        proj_drop: dropout rate after the output projection, in ``[0, 1]``.
        periodic_hw: as in :class:`CuboidSelfAttention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        cuboid_hw: Sequence[int] = (4, 4),
        strategy_hw: Sequence[str] = ("l", "l"),
        shift_hw: Sequence[int] = (0, 0),
        padding: str = "ignore",
        memory_global_vectors: int = 0,
        relative_position: bool = True,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        periodic_hw: bool = False,
    ) -> None:
        super().__init__()
        self.head_dim = _heads(dim, num_heads)
        self.dim, self.num_heads = int(dim), int(num_heads)
        self.periodic = (False, _flag("periodic_hw", periodic_hw), periodic_hw)
        self.cuboid_hw = _int_pair("cuboid_hw", cuboid_hw, 1)
        size = (1, *self.cuboid_hw)
        if (
            not isinstance(strategy_hw, (str, Sequence))
            or len(strategy_hw) != 2
            or any(item not in STRATEGIES for item in strategy_hw)
        ):
            raise ValueError(
                f"strategy_hw must be 2 of 'l' (local) / 'd' (dilated) (H, W), got {strategy_hw!r}"
            )
        self.strategy = _strategy(("l", *strategy_hw))
        self.shift_hw = _int_pair("shift_hw", shift_hw, 0)
        if any(s >= b for s, b in zip(self.shift_hw, self.cuboid_hw, strict=True)):
            raise ValueError(
                f"shift_hw must be smaller than cuboid_hw {self.cuboid_hw} per axis, "
                f"got {self.shift_hw}"
            )
        plan_cuboids(size, size, self.strategy, (0, *self.shift_hw))
        self.padding = _padding(padding)
        if isinstance(memory_global_vectors, bool) or not isinstance(memory_global_vectors, int):
            raise TypeError(f"memory_global_vectors must be an int, got {memory_global_vectors!r}")
        if memory_global_vectors < 0:
            raise ValueError(f"memory_global_vectors must be >= 0, got {memory_global_vectors}")
        self.memory_global_vectors = memory_global_vectors
        self.attn_drop = _dropout_rate("attn_drop", attn_drop)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(_dropout_rate("proj_drop", proj_drop))
        self.relative_position_table: nn.Parameter | None = None
        if relative_position:
            rows = math.prod(2 * b - 1 for b in self.cuboid_hw)
            self.relative_position_table = nn.Parameter(torch.zeros(rows, num_heads))
            nn.init.trunc_normal_(self.relative_position_table, std=0.02)
        self._cache = _CachedMasks()

    def layouts(
        self, query_shape: Sequence[int], memory_shape: Sequence[int]
    ) -> tuple[CuboidLayout, CuboidLayout]:
        """The query and memory :class:`CuboidLayout` for their ``(T, H, W)`` shapes."""
        shift = (0, *self.shift_hw)
        tq, tm = query_shape[0], memory_shape[0]
        query = plan_cuboids(
            query_shape, (tq, *self.cuboid_hw), self.strategy, shift, self.padding, self.periodic
        )
        memory = plan_cuboids(
            memory_shape, (tm, *self.cuboid_hw), self.strategy, shift, self.padding, self.periodic
        )
        return query, memory

    def attention_bias(
        self, query: CuboidLayout, memory: CuboidLayout, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """Additive ``attn_mask`` ``(N|1, h|1, Vq, Vm)`` (relative bias + masks) or None."""
        mask = self._cache.get(
            ("mask", query, memory, device, dtype),
            lambda: _additive(cross_attention_mask(query, memory, device), dtype),
        )
        if self.relative_position_table is None:
            return mask
        index = self._cache.get(
            ("index", query.cuboid_size, memory.cuboid_size, device),
            lambda: relative_position_index(
                query.cuboid_size, memory.cuboid_size, (0, *self.cuboid_hw)
            ).to(device),
        )
        bias = self.relative_position_table[index].permute(2, 0, 1).to(dtype)[None]
        return bias if mask is None else mask + bias

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_global_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x (B, Tq, H, W, dim)``, ``memory (B, Tm, H, W, dim)`` -> ``(B, Tq, H, W, dim)``."""
        x = in_model_dtype(self, _sequence_tensor("x", x, self.dim, "(B, Tq, H, W, C)"))
        memory = in_model_dtype(
            self, _sequence_tensor("memory", memory, self.dim, "(B, Tm, H, W, C)")
        )
        if memory.shape[0] != x.shape[0] or memory.shape[2:4] != x.shape[2:4]:
            raise ValueError(
                f"memory must share batch and (H, W) with x {tuple(x.shape)}, "
                f"got {tuple(memory.shape)}"
            )
        if self.memory_global_vectors and memory_global_vectors is None:
            raise ValueError("memory_global_vectors (B, P, C) are required by this layer")
        if not self.memory_global_vectors and memory_global_vectors is not None:
            raise ValueError("memory_global_vectors given to a layer built without them")
        query_layout, memory_layout = self.layouts(x.shape[1:4], memory.shape[1:4])
        q_cub = _grid_to_cuboids(_roll(_pad(x, query_layout), query_layout.shift, -1), query_layout)
        m_cub = _grid_to_cuboids(
            _roll(_pad(memory, memory_layout), memory_layout.shift, -1), memory_layout
        )
        batch, num, vq, dim = q_cub.shape
        vm = m_cub.shape[2]
        heads, d = self.num_heads, self.head_dim
        q = self.q(q_cub).view(batch, num, vq, heads, d).transpose(2, 3)
        kv = self.kv(m_cub).view(batch, num, vm, 2, heads, d).transpose(2, 4)
        k, v = kv.unbind(dim=3)
        attn_mask = self.attention_bias(query_layout, memory_layout, x.device, x.dtype)
        if memory_global_vectors is not None:
            count = self.memory_global_vectors
            memory_global_vectors = in_model_dtype(
                self,
                _global_tensor("memory_global_vectors", memory_global_vectors, batch, count, dim),
            )
            gk, gv = self.kv(memory_global_vectors).view(batch, count, 2, heads, d).unbind(2)
            shape = (batch, num, heads, count, d)
            k = torch.cat([k, gk.transpose(1, 2)[:, None].expand(shape)], dim=3)
            v = torch.cat([v, gv.transpose(1, 2)[:, None].expand(shape)], dim=3)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, count))
        out = _attend(q, k, v, attn_mask, self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(2, 3).reshape(batch, num, vq, dim)))
        return cuboid_reverse(out, query_layout)


# --------------------------------------------------------------------------- patterns, block


def _axial(shape: Size3) -> list[LayerSpec]:
    t, h, w = shape
    return [
        ((t, 1, 1), LOCAL, NO_SHIFT),
        ((1, h, 1), LOCAL, NO_SHIFT),
        ((1, 1, w), LOCAL, NO_SHIFT),
    ]


def _video_swin(shape: Size3, size: Size3 = (2, 8, 8)) -> list[LayerSpec]:
    size3 = tuple(min(b, n) for b, n in zip(size, shape, strict=True))
    half = tuple(b // 2 for b in size3)
    return [(size3, LOCAL, NO_SHIFT), (size3, LOCAL, half)]


def _divided_st(shape: Size3) -> list[LayerSpec]:
    t, h, w = shape
    return [((t, 1, 1), LOCAL, NO_SHIFT), ((1, h, w), LOCAL, NO_SHIFT)]


def _full(shape: Size3) -> list[LayerSpec]:
    return [(tuple(shape), LOCAL, NO_SHIFT)]


PATTERNS: dict[str, Callable[[Size3], list[LayerSpec]]] = {
    "axial": _axial,
    "video_swin": _video_swin,
    "divided_st": _divided_st,
    "full": _full,
}
"""Named cuboid patterns, ``name -> f((T, H, W)) -> [(cuboid_size, strategy, shift), ...]``.

``axial``: (T,1,1), (1,H,1), (1,1,W) unshifted local (the paper's best); ``video_swin``: (2,8,8)
local, then the same shifted by half; ``divided_st``: (T,1,1) then (1,H,W); ``full``: (T,H,W).
"""


def resolve_pattern(pattern: str | Sequence[LayerSpec], shape: Sequence[int]) -> list[LayerSpec]:
    """A pattern name (see :data:`PATTERNS`) or explicit list of layer specs, for a grid shape."""
    shape3 = _int_triple("input_shape", tuple(shape), 1)
    if isinstance(pattern, str):
        if pattern not in PATTERNS:
            raise ValueError(
                f"pattern must be one of {sorted(PATTERNS)} or a list, got {pattern!r}"
            )
        return PATTERNS[pattern](shape3)
    if not isinstance(pattern, Sequence) or not pattern:
        raise ValueError(f"pattern must be a name or a non-empty list of specs, got {pattern!r}")
    specs = []
    for spec in pattern:
        if not isinstance(spec, Sequence) or len(spec) != 3:
            raise ValueError(
                f"each pattern entry must be (cuboid_size, strategy, shift), got {spec!r}"
            )
        layout = plan_cuboids(shape3, spec[0], spec[1], spec[2])
        specs.append((tuple(spec[0]), layout.strategy, tuple(spec[2])))
    return specs


class FeedForward(nn.Module):
    """Pre-norm two-layer GELU MLP with residual: ``x + W2 gelu(W1 norm(x))`` on the last axis.

    The hidden width is ``round(ratio · dim)``, at least 1; ``ratio`` (the blocks' ``mlp_ratio``)
    a finite number > 0, ``dropout`` (their ``ffn_drop``) a probability in [0, 1].
    ``spatial_kernel = k > 0`` adds a depthwise ``k × k`` convolution over (H, W) of every frame
    to the hidden features before the GELU (a "Mix-FFN", as in SegFormer): ``x`` must then be a
    grid ``(B, T, H, W, C)``. It gives each token its neighbours' features without attention,
    the local bias a convolutional forecaster has. ``0`` (the default) is the plain MLP.
    """

    def __init__(
        self, dim: int, ratio: float = 4.0, dropout: float = 0.0, spatial_kernel: int = 0
    ) -> None:
        super().__init__()
        _kernel("spatial_kernel", spatial_kernel)
        hidden = max(1, int(round(dim * positive("mlp_ratio", ratio))))
        dropout = _dropout_rate("ffn_drop", dropout)
        self.spatial_kernel = spatial_kernel
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            _SpatialMix(hidden, spatial_kernel) if spatial_kernel else nn.Identity(),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same shape as ``x``."""
        if self.spatial_kernel and x.ndim != 5:
            raise ValueError(
                f"x must be a grid (B, T, H, W, C) for a FeedForward with spatial_kernel="
                f"{self.spatial_kernel}, got shape {tuple(x.shape)}"
            )
        return x + self.net(x)


class _SpatialMix(nn.Module):
    """Depthwise ``k × k`` convolution over (H, W) of channel-last ``(B, T, H, W, C)``, residual."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        frames = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        return x + self.conv(frames).permute(0, 2, 3, 1).reshape(b, t, h, w, c)


class CuboidTransformerBlock(nn.Module):
    """Pre-norm cuboid self-attention layers of a pattern, then a GELU FFN; all residual.

    With ``global_vectors = P > 0`` the global vectors are threaded through every layer (own
    norms, residual updates and FFN) and :meth:`forward` returns them.

    Args:
        dim: channels ``C`` of a token, divisible by ``num_heads``.
        num_heads: attention heads of every layer.
        input_shape: ``(T, H, W)`` that resolves a named pattern (the block runs on other shapes
            too, with cuboids clamped).
        pattern: a :data:`PATTERNS` name or a list of ``(cuboid_size, strategy, shift)``, one
            self-attention layer each.
        global_vectors: ``P`` global vectors ``(B, P, dim)`` (0: none).
        padding: how the grid is padded to whole cuboids, one of :data:`PADDINGS`.
        relative_position: a learned per-head bias by the offset of two tokens of a cuboid.
        qkv_bias: give the query, key and value projections a bias.
        attn_drop: dropout rate of the attention weights, in ``[0, 1]``.
        proj_drop: dropout rate after each attention's output projection, in ``[0, 1]``.
        periodic_hw: shifted windows wrap across the edge of a frame periodic in ``H`` and ``W``
            (:class:`CuboidSelfAttention`).
        mlp_ratio: the FFN's hidden width over ``dim`` (:class:`FeedForward`'s ``ratio``).
        ffn_drop: dropout rate of the FFN, in ``[0, 1]``.
        ffn_kernel: 0 (a plain MLP) or an odd ``k``, a depthwise ``k × k`` convolution over
            ``(H, W)`` in the FFN (:class:`FeedForward`'s ``spatial_kernel``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_shape: Sequence[int],
        pattern: str | Sequence[LayerSpec] = "axial",
        global_vectors: int = 0,
        padding: str = "ignore",
        relative_position: bool = True,
        qkv_bias: bool = False,
        mlp_ratio: float = 4.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        ffn_drop: float = 0.0,
        ffn_kernel: int = 0,
        periodic_hw: bool = False,
    ) -> None:
        super().__init__()
        self.specs = resolve_pattern(pattern, input_shape)
        self.global_vectors = global_vectors
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.specs)
        self.attentions = nn.ModuleList(
            CuboidSelfAttention(
                dim,
                num_heads,
                size,
                strategy,
                shift,
                padding=padding,
                global_vectors=global_vectors,
                relative_position=relative_position,
                qkv_bias=qkv_bias,
                attn_drop=attn_drop,
                proj_drop=proj_drop,
                periodic_hw=periodic_hw,
            )
            for size, strategy, shift in self.specs
        )
        self.ffn = FeedForward(dim, mlp_ratio, ffn_drop, _kernel("ffn_kernel", ffn_kernel))
        if global_vectors:
            self.global_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.specs)
            self.global_ffn = FeedForward(dim, mlp_ratio, ffn_drop)

    def forward(
        self, x: torch.Tensor, global_vectors: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x (B, T, H, W, C)`` (and ``(B, P, C)``) -> same shapes."""
        if self.global_vectors and global_vectors is None:
            raise ValueError(f"global_vectors (B, {self.global_vectors}, C) are required")
        if not self.global_vectors and global_vectors is not None:
            raise ValueError("global_vectors given to a block built with global_vectors=0")
        x, global_vectors = in_model_dtype(self, x), in_model_dtype(self, global_vectors)
        if global_vectors is None:
            for norm, attention in zip(self.norms, self.attentions, strict=True):
                x = x + attention(norm(x))
            return self.ffn(x)
        g = global_vectors
        for norm, g_norm, attention in zip(
            self.norms, self.global_norms, self.attentions, strict=True
        ):
            out, g_out = attention(norm(x), g_norm(g))
            x, g = x + out, g + g_out
        return self.ffn(x), self.global_ffn(g)


class CuboidCrossBlock(nn.Module):
    """Pre-norm :class:`CuboidCrossAttention` to a memory plus a GELU FFN, residual.

    The memory and its global vectors share one layer norm.

    Args:
        dim: channels ``C`` of a token, divisible by ``num_heads``.
        num_heads: attention heads.
        cuboid_hw: ``(bH, bW)`` pixels per cuboid, each spanning the whole time axis.
        strategy_hw: ``"l"`` (local) or ``"d"`` (dilated) per axis ``(H, W)``.
        shift_hw: ``(sH, sW)``, the roll before cutting (``(0, 0)``: no shift).
        padding: how the frame is padded to whole cuboids, one of :data:`PADDINGS`.
        memory_global_vectors: ``P``, the memory's global vectors ``(B, P, dim)`` every query
            also attends to (0: none).
        relative_position: a learned per-head bias by the spatial offset of a query and a memory
            token.
        qkv_bias: give the query and key/value projections a bias.
        attn_drop: dropout rate of the attention weights, in ``[0, 1]``.
        proj_drop: dropout rate after the output projection, in ``[0, 1]``.
        periodic_hw: shifted windows wrap across the edge of a frame periodic in ``H`` and ``W``
            (:class:`CuboidSelfAttention`).
        mlp_ratio: the FFN's hidden width over ``dim``.
        ffn_drop: dropout rate of the FFN, in ``[0, 1]``.
        ffn_kernel: 0 (a plain MLP) or an odd ``k``, a depthwise ``k × k`` convolution over
            ``(H, W)`` in the FFN (:class:`FeedForward`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        cuboid_hw: Sequence[int] = (4, 4),
        strategy_hw: Sequence[str] = ("l", "l"),
        shift_hw: Sequence[int] = (0, 0),
        padding: str = "ignore",
        memory_global_vectors: int = 0,
        relative_position: bool = True,
        qkv_bias: bool = False,
        mlp_ratio: float = 4.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        ffn_drop: float = 0.0,
        ffn_kernel: int = 0,
        periodic_hw: bool = False,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.memory_norm = nn.LayerNorm(dim)
        self.attention = CuboidCrossAttention(
            dim,
            num_heads,
            cuboid_hw,
            strategy_hw,
            shift_hw,
            padding=padding,
            memory_global_vectors=memory_global_vectors,
            relative_position=relative_position,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            periodic_hw=periodic_hw,
        )
        self.ffn = FeedForward(dim, mlp_ratio, ffn_drop, _kernel("ffn_kernel", ffn_kernel))

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_global_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x (B, Tq, H, W, C)`` attending to ``memory (B, Tm, H, W, C)`` (and to its
        ``memory_global_vectors (B, P, C)`` when built with ``P > 0``) -> shape of ``x``."""
        x, memory = in_model_dtype(self, x), in_model_dtype(self, memory)
        memory_global_vectors = in_model_dtype(self, memory_global_vectors)
        g = None if memory_global_vectors is None else self.memory_norm(memory_global_vectors)
        x = x + self.attention(self.norm(x), self.memory_norm(memory), g)
        return self.ffn(x)
