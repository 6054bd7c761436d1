"""Cuboid attention layers and the Earthformer encoder-decoder (physml.models.cuboid/earthformer).

Attention outputs are checked against a dense masked softmax attention written here from
per-token formulas (which cuboid a token falls in, on which side of a roll seam it lies, its
inner offset) — independent of the layers' reshape/permute reorder and SDPA masks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physml.models.cuboid import (
    PATTERNS,
    CuboidCrossAttention,
    CuboidCrossBlock,
    CuboidSelfAttention,
    CuboidTransformerBlock,
    FeedForward,
    cross_attention_mask,
    cuboid_reorder,
    cuboid_reverse,
    plan_cuboids,
    resolve_pattern,
    self_attention_mask,
)
from physml.models.earthformer import Earthformer, PatchMerge

# --------------------------------------------------------------------------- dense reference


def _axis_plan(length: int, size: int, shift: int) -> tuple[int, int, int]:
    """Clamped cuboid size, shift and padded length along one axis."""
    if size >= length:
        size, shift = length, 0
    return size, shift, math.ceil(length / size) * size


def _token_geometry(shape, cuboid_size, strategy, shift):
    """Per real token (row-major over (T, H, W)): cuboid id, wrap flags and inner coordinates."""
    blocks, wraps, inners = [], [], []
    coords = torch.stack(
        torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij"), dim=-1
    ).reshape(-1, 3)
    for axis in range(3):
        b, s, padded = _axis_plan(shape[axis], cuboid_size[axis], shift[axis])
        num_blocks = padded // b
        rolled = (coords[:, axis] - s) % padded  # position after rolling by -s
        if strategy[axis] == "l":
            blocks.append(rolled // b)
            inners.append(rolled % b)
        else:
            blocks.append(rolled % num_blocks)
            inners.append(rolled // num_blocks)
        wraps.append(coords[:, axis] < s)
    return torch.stack(blocks, 1), torch.stack(wraps, 1), torch.stack(inners, 1)


def _relative_bias(table: torch.Tensor, inner_q, inner_k, table_size) -> torch.Tensor:
    """(heads, Lq, Lk) bias from inner offsets, rows ordered like a (2b-1)^3 array."""
    index = torch.zeros(inner_q.shape[0], inner_k.shape[0], dtype=torch.long)
    for axis, b in enumerate(table_size):
        if b:
            offset = inner_q[:, None, axis] - inner_k[None, :, axis] + b - 1
            index = index * (2 * b - 1) + offset
    return table[index].permute(2, 0, 1)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def _softmax_attention(q, k, v, bias, allowed):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def dense_self_attention(layer: CuboidSelfAttention, x: torch.Tensor, g=None):
    """Layer output computed token by token over the real (unpadded) tokens."""
    batch, t, h, w, c = x.shape
    heads = layer.num_heads
    shape = (t, h, w)
    block, wrap, inner = _token_geometry(shape, layer.cuboid_size, layer.strategy, layer.shift_size)
    allowed = (block[:, None] == block[None]).all(-1) & (wrap[:, None] == wrap[None]).all(-1)
    tokens = x.reshape(batch, t * h * w, c)
    q, k, v = (_heads(z, heads) for z in layer.qkv(tokens).chunk(3, dim=-1))
    n = tokens.shape[1]
    bias = torch.zeros(heads, n, n, dtype=x.dtype)
    if layer.relative_position_table is not None:
        bias = _relative_bias(layer.relative_position_table, inner, inner, layer.cuboid_size)
    if g is None:
        out = _softmax_attention(q, k, v, bias, allowed)
        return layer.proj(out.transpose(1, 2).reshape(batch, n, c)).reshape(x.shape), None
    p = g.shape[1]
    gq, gk, gv = (_heads(z, heads) for z in layer.global_qkv(g).chunk(3, dim=-1))
    keys, values = torch.cat([k, gk], 2), torch.cat([v, gv], 2)
    bias_all = torch.cat([bias, torch.zeros(heads, n, p, dtype=x.dtype)], -1)
    allowed_all = torch.cat([allowed, torch.ones(n, p, dtype=torch.bool)], -1)
    out = _softmax_attention(q, keys, values, bias_all, allowed_all)
    out = layer.proj(out.transpose(1, 2).reshape(batch, n, c)).reshape(x.shape)
    g_out = _softmax_attention(gq, keys, values, 0.0, torch.ones(p, n + p, dtype=torch.bool))
    return out, layer.global_proj(g_out.transpose(1, 2).reshape(batch, p, c))


def _layer(dtype=torch.float64, seed=0, **kwargs) -> CuboidSelfAttention:
    torch.manual_seed(seed)
    layer = CuboidSelfAttention(**kwargs).to(dtype)
    if layer.relative_position_table is not None:  # larger than the init, so it matters
        with torch.no_grad():
            layer.relative_position_table.normal_(0.0, 0.5)
    return layer


# --------------------------------------------------------------------------- reorder


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*(st.integers(1, 6) for _ in range(3))),
    size=st.tuples(*(st.integers(1, 7) for _ in range(3))),
    strategy=st.tuples(*(st.sampled_from("ld") for _ in range(3))),
    shift_frac=st.tuples(*(st.floats(0, 0.99) for _ in range(3))),
    padding=st.sampled_from(["ignore", "zeros", "nearest"]),
    batch=st.integers(1, 2),
    channels=st.integers(1, 3),
)
def test_reorder_then_reverse_is_identity(
    shape, size, strategy, shift_frac, padding, batch, channels
):
    shift = tuple(int(f * b) for f, b in zip(shift_frac, size, strict=True))
    x = torch.randn(batch, *shape, channels)
    cuboids, layout = cuboid_reorder(x, size, strategy, shift, padding)
    assert cuboids.shape == (batch, layout.num_cuboids, layout.volume, channels)
    assert layout.num_cuboids * layout.volume == math.prod(layout.padded_shape)
    assert torch.equal(cuboid_reverse(cuboids, layout), x)

    # Every real token sits in the cuboid slot the per-token formulas give.
    block, _, inner = _token_geometry(shape, size, strategy, shift)
    blocks, csize = layout.blocks, layout.cuboid_size
    cuboid_id = (block[:, 0] * blocks[1] + block[:, 1]) * blocks[2] + block[:, 2]
    slot = (inner[:, 0] * csize[1] + inner[:, 1]) * csize[2] + inner[:, 2]
    assert torch.equal(cuboids[:, cuboid_id, slot], x.reshape(batch, -1, channels))


def test_padding_modes_fill_values():
    x = torch.arange(1.0, 4.0).reshape(1, 3, 1, 1, 1)  # T = 3, cuboid 2 -> one padded frame
    zeros, _ = cuboid_reorder(x, (2, 1, 1), padding="zeros")
    nearest, _ = cuboid_reorder(x, (2, 1, 1), padding="nearest")
    assert zeros.flatten().tolist() == [1.0, 2.0, 3.0, 0.0]
    assert nearest.flatten().tolist() == [1.0, 2.0, 3.0, 3.0]


def test_dilated_strategy_takes_strided_positions():
    x = torch.arange(6.0).reshape(1, 6, 1, 1, 1)
    local, _ = cuboid_reorder(x, (2, 1, 1), "lll")
    dilated, _ = cuboid_reorder(x, (2, 1, 1), "dll")
    assert local[0, :, :, 0].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert dilated[0, :, :, 0].tolist() == [[0, 3], [1, 4], [2, 5]]


def test_clamping_cuboid_larger_than_axis():
    layout = plan_cuboids((3, 4, 5), (8, 2, 9), "lll", (4, 1, 3))
    assert layout.cuboid_size == (3, 2, 5)
    assert layout.shift == (0, 1, 0)
    assert layout.num_cuboids == 2 and not layout.padded


# --------------------------------------------------------------------------- self-attention


@pytest.mark.parametrize("relative_position", [False, True])
@pytest.mark.parametrize("cuboid_size", [(3, 4, 5), (9, 9, 9)])  # exact and clamped
@pytest.mark.parametrize("grad", [True, False])
def test_one_cuboid_equals_full_attention(relative_position, cuboid_size, grad):
    layer = _layer(dim=8, num_heads=2, cuboid_size=cuboid_size, relative_position=relative_position)
    x = torch.randn(2, 3, 4, 5, 8, dtype=torch.float64)
    expected, _ = dense_self_attention(layer, x)
    # Full attention: no mask at all; the bias (if any) from the inner offsets of the grid.
    assert self_attention_mask(layer.layout((3, 4, 5))) is None
    with torch.set_grad_enabled(grad):
        result = layer(x)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-10)


CASES = [
    dict(cuboid_size=(2, 2, 3), strategy="lll", shift_size=(0, 0, 0), padding="ignore"),
    dict(cuboid_size=(2, 2, 3), strategy="lll", shift_size=(1, 1, 1), padding="ignore"),
    dict(cuboid_size=(2, 3, 2), strategy="dld", shift_size=(0, 1, 1), padding="ignore"),
    dict(cuboid_size=(3, 1, 4), strategy="ddd", shift_size=(1, 0, 2), padding="ignore"),
    dict(cuboid_size=(2, 2, 2), strategy="lll", shift_size=(1, 1, 1), padding="zeros"),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("globals_", [0, 3])
@pytest.mark.parametrize("grad", [True, False])  # explicit (learned mask) and fused SDPA paths
def test_layer_matches_dense_masked_attention(case, globals_, grad):
    if case["padding"] == "zeros":  # shape divisible: padding mode irrelevant, shift masked
        shape = (4, 4, 6)
    else:
        shape = (3, 5, 7)
    layer = _layer(dim=8, num_heads=2, global_vectors=globals_, **case)
    x = torch.randn(2, *shape, 8, dtype=torch.float64)
    g = torch.randn(2, globals_, 8, dtype=torch.float64) if globals_ else None
    expected, expected_g = dense_self_attention(layer, x, g)
    with torch.set_grad_enabled(grad):
        result = layer(x, g) if globals_ else (layer(x), None)
    torch.testing.assert_close(result[0], expected, rtol=1e-10, atol=1e-10)
    if globals_:
        torch.testing.assert_close(result[1], expected_g, rtol=1e-10, atol=1e-10)


def test_changing_padded_values_changes_no_output():
    layer = _layer(
        dim=8, num_heads=2, cuboid_size=(2, 3, 3), shift_size=(1, 1, 0), global_vectors=2
    )
    x = torch.randn(1, 3, 4, 5, 8, dtype=torch.float64)  # every axis needs padding
    g = torch.randn(1, 2, 8, dtype=torch.float64)
    zeros, layout = cuboid_reorder(x, (2, 3, 3), shift=(1, 1, 0), padding="ignore")
    nearest, _ = cuboid_reorder(x, (2, 3, 3), shift=(1, 1, 0), padding="nearest")
    junk = (
        zeros + 100 * (nearest - zeros) + torch.randn_like(zeros) * (zeros == nearest).logical_not()
    )
    assert not torch.equal(zeros, junk)
    out_a, g_a = layer.attend(zeros, layout, g)
    out_b, g_b = layer.attend(junk, layout, g)
    torch.testing.assert_close(cuboid_reverse(out_a, layout), cuboid_reverse(out_b, layout))
    torch.testing.assert_close(g_a, g_b)

    # The same change with padding taking part ("zeros") does change real outputs.
    zeros_layout = plan_cuboids((3, 4, 5), (2, 3, 3), "lll", (1, 1, 0), "zeros")
    out_c, _ = layer.attend(zeros, zeros_layout, g)
    out_d, _ = layer.attend(junk, zeros_layout, g)
    assert not torch.allclose(
        cuboid_reverse(out_c, zeros_layout), cuboid_reverse(out_d, zeros_layout)
    )


def test_shift_mask_separates_wrapped_tokens():
    layout = plan_cuboids((4, 4, 4), (2, 2, 2), "lll", (1, 1, 0))
    mask = self_attention_mask(layout)
    coords, _ = cuboid_reorder(
        torch.stack(torch.meshgrid(*(torch.arange(4),) * 3, indexing="ij"), -1)[None],
        (2, 2, 2),
        shift=(1, 1, 0),
    )
    wrapped = coords[0, :, :, :2] < 1  # (N, V, 2): positions past the seam on T and H
    same_side = (wrapped[:, :, None] == wrapped[:, None]).all(-1)
    assert torch.equal(mask, same_side)
    assert torch.equal(mask, mask.transpose(1, 2))
    assert not mask.all()  # some pairs are cut


def test_mask_never_leaves_a_query_without_keys():
    # T = 3, cuboid 2, shift 1: the padded frame is alone on its side of the seam in its cuboid.
    layout = plan_cuboids((3, 5, 4), (2, 3, 3), "lll", (1, 1, 1), "ignore")
    mask = self_attention_mask(layout)
    coords, _ = cuboid_reorder(
        torch.stack(torch.meshgrid(*(torch.arange(n) for n in (3, 5, 4)), indexing="ij"), -1)[None]
        + 1,
        (2, 3, 3),
        shift=(1, 1, 1),
        padding="zeros",
    )
    real = (coords[0] > 0).all(-1)  # padded slots hold zeros, real ones coordinates + 1
    assert mask.any(-1).all()
    # Real queries see only real keys; padded queries are unconstrained (their output is cropped).
    assert not (mask & real[:, :, None] & ~real[:, None, :]).any()
    assert mask[~real].all()


def test_shifted_layer_equals_unshifted_on_rolled_input_away_from_seam():
    # Without wrap-around (seam tokens excluded), a shifted layer sees the rolled grid.
    shape, size, shift = (4, 6, 6), (2, 3, 3), (1, 1, 1)
    shifted = _layer(dim=8, num_heads=2, cuboid_size=size, shift_size=shift)
    plain = _layer(dim=8, num_heads=2, cuboid_size=size)
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(1, *shape, 8, dtype=torch.float64)
    rolled = torch.roll(x, shifts=(-1, -1, -1), dims=(1, 2, 3))
    expected = torch.roll(plain(rolled), shifts=(1, 1, 1), dims=(1, 2, 3))
    out = shifted(x)
    # Tokens whose cuboid (in the rolled grid) has no wrapped member are unaffected by the mask.
    keep = torch.ones(shape, dtype=torch.bool)
    for axis, (n, b) in enumerate(zip(shape, size, strict=True)):
        pos = torch.arange(n)
        far = ((pos - shift[axis]) % n) < n - b  # rolled position not in the last block
        keep &= far.view([-1 if a == axis else 1 for a in range(3)])
    assert keep.any() and not keep.all()
    torch.testing.assert_close(out[0][keep], expected[0][keep], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(out[0][~keep], expected[0][~keep])


@pytest.mark.parametrize("strategy", ["lll", "ldd"])
@pytest.mark.parametrize("globals_", [0, 2])
def test_periodic_shifted_layer_is_the_unshifted_one_on_the_rolled_field(strategy, globals_):
    # Periodic in H and W (sizes divisible by the cuboid): the roll is a shift of the domain, so
    # the shifted layer must equal the unshifted one applied to the rolled field, at every token.
    shape, size, shift = (4, 6, 6), (2, 3, 3), (0, 1, 2)
    options = dict(dim=8, num_heads=2, cuboid_size=size, strategy=strategy, periodic_hw=True)
    shifted = _layer(shift_size=shift, global_vectors=globals_, **options)
    plain = _layer(global_vectors=globals_, **options)
    plain.load_state_dict(shifted.state_dict())
    walled = _layer(shift_size=shift, global_vectors=globals_, **{**options, "periodic_hw": False})
    walled.load_state_dict(shifted.state_dict())
    x = torch.randn(1, *shape, 8, dtype=torch.float64)
    g = [torch.randn(1, globals_, 8, dtype=torch.float64)] if globals_ else []

    def tokens(out):
        return out[0] if globals_ else out

    expected = torch.roll(tokens(plain(torch.roll(x, (-1, -2), (2, 3)), *g)), (1, 2), (2, 3))
    torch.testing.assert_close(tokens(shifted(x, *g)), expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(tokens(walled(x, *g)), expected)  # the seam mask cuts pairs


def test_periodic_cross_attention_is_the_unshifted_one_on_the_rolled_fields():
    torch.manual_seed(2)
    shifted = CuboidCrossAttention(8, 2, (2, 3), shift_hw=(1, 2), periodic_hw=True).double()
    plain = CuboidCrossAttention(8, 2, (2, 3), periodic_hw=True).double()
    with torch.no_grad():
        shifted.relative_position_table.normal_(0.0, 0.5)
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.float64)
    memory = torch.randn(2, 2, 4, 6, 8, dtype=torch.float64)

    def rolled(z, sign):
        return torch.roll(z, (sign * 1, sign * 2), (2, 3))

    expected = rolled(plain(rolled(x, -1), rolled(memory, -1)), +1)
    torch.testing.assert_close(shifted(x, memory), expected, rtol=1e-10, atol=1e-10)


def test_a_periodic_axis_that_needs_padding_keeps_its_seam():
    # H = 5 is padded to 6: the roll moves padding into the field, so H keeps its seam mask;
    # W = 6 wraps; T is never periodic here.
    layout = plan_cuboids((4, 5, 6), (2, 3, 3), "lll", (1, 1, 1), periodic=(False, True, True))
    assert layout.wrap == (False, False, True) and layout.seamed
    mask = self_attention_mask(layout)
    walled = self_attention_mask(plan_cuboids((4, 5, 6), (2, 3, 3), "lll", (1, 1, 1)))
    assert walled.shape == mask.shape and not torch.equal(mask, walled)
    assert (mask | ~walled).all()  # wrapping only allows pairs, it cuts none
    unmasked = plan_cuboids((4, 6, 6), (2, 3, 3), "lll", (0, 1, 1), periodic=(False, True, True))
    assert not unmasked.seamed and self_attention_mask(unmasked) is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: CuboidSelfAttention(8, 2, (2, 2, 2), periodic_hw=1),
        lambda: CuboidCrossAttention(8, 2, periodic_hw="yes"),
        lambda: plan_cuboids((4, 4, 4), (2, 2, 2), periodic=(True,)),
        lambda: plan_cuboids((4, 4, 4), (2, 2, 2), periodic=(0, 1, 1)),
    ],
)
def test_periodic_flags_must_be_bools(build):
    with pytest.raises(TypeError, match="periodic"):
        build()


def test_periodic_earthformer_makes_every_attention_layer_periodic():
    def layers(periodic):
        model = Earthformer(
            (4, 1, 16, 16), (2, 1, 16, 16), base_units=8, num_heads=2, depth=(1, 1),
            downsample=2, pattern="video_swin", global_vectors=0, periodic=periodic,
        )  # fmt: skip
        kinds = (CuboidSelfAttention, CuboidCrossAttention)
        return [m.periodic for m in model.modules() if isinstance(m, kinds)]

    assert layers(True) and set(layers(True)) == {(False, True, True)}
    assert set(layers(False)) == {(False, False, False)}


def test_global_vectors_receive_gradient_and_inform_tokens():
    layer = _layer(dtype=torch.float32, dim=8, num_heads=2, cuboid_size=(1, 2, 2), global_vectors=2)
    x = torch.randn(2, 2, 4, 4, 8)
    g = torch.randn(2, 2, 8, requires_grad=True)
    out, g_out = layer(x, g)
    out.square().sum().backward(retain_graph=True)
    assert g.grad is not None and g.grad.abs().sum() > 0  # tokens read the global vectors
    g.grad = None
    g_out.square().sum().backward()
    assert g.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None, name


def test_layer_float32_and_cache_reuse():
    layer = CuboidSelfAttention(16, 4, (2, 4, 4), shift_size=(1, 2, 2))
    x = torch.randn(2, 3, 5, 6, 16)
    first = layer(x)
    assert first.dtype == torch.float32 and first.shape == x.shape
    torch.testing.assert_close(layer(x), first)  # cached masks give the same result
    torch.testing.assert_close(layer(x[:, :2, :4, :4]).shape, torch.Size([2, 2, 4, 4, 16]))


# --------------------------------------------------------------------------- cross-attention


def dense_cross_attention(layer: CuboidCrossAttention, x, memory, g=None):
    batch, tq, h, w, c = x.shape
    tm = memory.shape[1]
    heads = layer.num_heads
    size = (10**6, *layer.cuboid_hw)  # time axis whole
    strategy, shift = layer.strategy, (0, *layer.shift_hw)
    block_q, wrap_q, inner_q = _token_geometry((tq, h, w), size, strategy, shift)
    block_m, wrap_m, inner_m = _token_geometry((tm, h, w), size, strategy, shift)
    allowed = (block_q[:, None] == block_m[None]).all(-1) & (wrap_q[:, None] == wrap_m[None]).all(
        -1
    )
    q = _heads(layer.q(x.reshape(batch, -1, c)), heads)
    k, v = (_heads(z, heads) for z in layer.kv(memory.reshape(batch, -1, c)).chunk(2, dim=-1))
    bias = torch.zeros(heads, *allowed.shape, dtype=x.dtype)
    if layer.relative_position_table is not None:
        bias = _relative_bias(
            layer.relative_position_table, inner_q, inner_m, (0, *layer.cuboid_hw)
        )
    if g is not None:
        gk, gv = (_heads(z, heads) for z in layer.kv(g).chunk(2, dim=-1))
        k, v = torch.cat([k, gk], 2), torch.cat([v, gv], 2)
        p = g.shape[1]
        bias = torch.cat([bias, torch.zeros(heads, allowed.shape[0], p, dtype=x.dtype)], -1)
        allowed = torch.cat([allowed, torch.ones(allowed.shape[0], p, dtype=torch.bool)], -1)
    out = _softmax_attention(q, k, v, bias, allowed).transpose(1, 2).reshape(batch, -1, c)
    return layer.proj(out).reshape(x.shape)


@pytest.mark.parametrize(
    "cuboid_hw, strategy_hw, shift_hw, globals_",
    [
        ((4, 5), "ll", (0, 0), 0),
        ((2, 2), "ll", (1, 1), 2),
        ((2, 3), "dl", (0, 1), 0),
        ((3, 2), "ld", (0, 0), 2),
    ],
)
@pytest.mark.parametrize("grad", [True, False])
def test_cross_attention_matches_dense(cuboid_hw, strategy_hw, shift_hw, globals_, grad):
    torch.manual_seed(1)
    layer = CuboidCrossAttention(
        8, 2, cuboid_hw, strategy_hw, shift_hw, memory_global_vectors=globals_
    ).double()
    with torch.no_grad():
        layer.relative_position_table.normal_(0.0, 0.5)
    x = torch.randn(2, 3, 4, 5, 8, dtype=torch.float64)
    memory = torch.randn(2, 2, 4, 5, 8, dtype=torch.float64)
    g = torch.randn(2, globals_, 8, dtype=torch.float64) if globals_ else None
    with torch.set_grad_enabled(grad):
        result = layer(x, memory, g)
    torch.testing.assert_close(
        result, dense_cross_attention(layer, x, memory, g), rtol=1e-10, atol=1e-10
    )


# --------------------------------------------------------------------------- patterns, blocks


def test_named_patterns():
    assert resolve_pattern("axial", (4, 8, 6)) == [
        ((4, 1, 1), ("l", "l", "l"), (0, 0, 0)),
        ((1, 8, 1), ("l", "l", "l"), (0, 0, 0)),
        ((1, 1, 6), ("l", "l", "l"), (0, 0, 0)),
    ]
    assert resolve_pattern("divided_st", (4, 8, 6))[1][0] == (1, 8, 6)
    assert resolve_pattern("full", (4, 8, 6)) == [((4, 8, 6), ("l", "l", "l"), (0, 0, 0))]
    swin = resolve_pattern("video_swin", (4, 16, 16))
    assert swin[0][0] == swin[1][0] == (2, 8, 8) and swin[1][2] == (1, 4, 4)
    assert set(PATTERNS) >= {"axial", "video_swin", "divided_st", "full"}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_block_runs_every_pattern_with_global_vectors(pattern):
    torch.manual_seed(0)
    block = CuboidTransformerBlock(8, 2, (3, 8, 8), pattern, global_vectors=2)
    x, g = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 2, 8)
    y, g2 = block(x, g)
    assert y.shape == x.shape and g2.shape == g.shape
    assert torch.isfinite(y).all() and not torch.allclose(y, x)


def test_full_pattern_block_is_attention_on_whole_grid():
    torch.manual_seed(0)
    block = CuboidTransformerBlock(8, 2, (2, 3, 3), "full", relative_position=False).double()
    x = torch.randn(1, 2, 3, 3, 8, dtype=torch.float64)
    attn = block.attentions[0]
    h = x + dense_self_attention(attn, block.norms[0](x))[0]
    torch.testing.assert_close(block(x), block.ffn(h), rtol=1e-10, atol=1e-10)


def test_cross_block_shapes():
    block = CuboidCrossBlock(8, 2, (2, 2), memory_global_vectors=2)
    y = block(torch.randn(1, 4, 4, 4, 8), torch.randn(1, 3, 4, 4, 8), torch.randn(1, 2, 8))
    assert y.shape == (1, 4, 4, 4, 8)


# --------------------------------------------------------------------------- model


def _toy_model(**kwargs) -> Earthformer:
    torch.manual_seed(0)
    options = dict(
        base_units=8, num_heads=2, depth=(1, 1), global_vectors=2, cross_cuboid_hw=(2, 2)
    )
    options.update(kwargs)
    return Earthformer((4, 1, 8, 8), (3, 2, 8, 8), **options)


def test_model_shapes_and_every_parameter_gets_gradient():
    model = _toy_model()
    x = torch.randn(2, 4, 1, 8, 8)
    y = model(x)
    assert y.shape == (2, 3, 2, 8, 8) and y.dtype == torch.float32
    y.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("global_vectors", [0, 2])
def test_model_loss_falls_in_a_few_adam_steps(global_vectors):
    model = _toy_model(global_vectors=global_vectors)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 4, 1, 8, 8, generator=gen)
    target = torch.stack([x[:, -1, 0], 1 - x[:, -1, 0]], 1)[:, None].expand(4, 3, 2, 8, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_a_new_model_s_skips_are_the_latest_context_frame():
    """At initialisation every target frame's skip is the last context frame's: the coarse
    skips (the decoder's first input and the one added after upsampling) equal the encoder
    memory of frame ``T_in - 1`` at each level, and the full-resolution skip equals that frame's
    stem features (seen through ``head_out``'s GELU with the head zeroed)."""
    model = _toy_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    seen: dict[str, torch.Tensor] = {}

    def keep_output(name):
        def hook(module, args, output):
            seen[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def keep_input(name):
        def hook(module, args):
            seen[name] = args[0]

        return hook

    hooks = [
        model.encoder[0][-1].register_forward_hook(keep_output("memory0")),
        model.encoder[1][-1].register_forward_hook(keep_output("memory1")),
        model.target_embedding.register_forward_pre_hook(keep_input("skip1")),
        model.upsamples[0].register_forward_hook(keep_output("upsampled")),
        model.decoder_self[0][0].register_forward_pre_hook(keep_input("upsampled_plus_skip0")),
        model.stem_fine.register_forward_hook(keep_output("fine")),
        model.head_out.register_forward_pre_hook(keep_input("head_out_input")),
    ]
    batch, t_in, t_out = 2, 4, 3
    with torch.no_grad():
        model(torch.randn(batch, t_in, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
    for hook in hooks:
        hook.remove()

    def latest(frames: torch.Tensor) -> torch.Tensor:
        return frames[:, -1:].expand(-1, t_out, *frames.shape[2:])

    torch.testing.assert_close(seen["skip1"], latest(seen["memory1"]), rtol=0, atol=0)
    skip0 = seen["upsampled_plus_skip0"] - seen["upsampled"]
    torch.testing.assert_close(skip0, latest(seen["memory0"]), rtol=1e-5, atol=1e-5)
    fine = seen["fine"].reshape(batch, t_in, *seen["fine"].shape[1:])
    expected = torch.nn.functional.gelu(latest(fine)).flatten(0, 1)
    torch.testing.assert_close(seen["head_out_input"], expected, rtol=0, atol=0)


def test_model_parameter_count_cpu_scale():
    model = Earthformer((10, 1, 32, 32), (10, 1, 32, 32))
    count = sum(p.numel() for p in model.parameters())
    assert 1e5 < count < 1e6


def test_model_with_shifted_pattern_and_three_levels():
    model = Earthformer(
        (3, 1, 16, 16),
        (2, 1, 16, 16),
        base_units=8,
        num_heads=2,
        depth=(1, 1, 1),
        pattern="video_swin",
        global_vectors=0,
        cross_cuboid_hw=(2, 2),
    )
    assert model(torch.randn(1, 3, 1, 16, 16)).shape == (1, 2, 1, 16, 16)


@pytest.mark.parametrize("head_init", ["random", "icnr"])
def test_an_icnr_head_starts_by_rendering_each_token_as_a_flat_patch(head_init):
    model = _toy_model(head_init=head_init, downsample=2)
    tokens = torch.randn(3, model.head.in_channels, 4, 4)
    pixels = torch.nn.functional.pixel_shuffle(model.head(tokens), 2)  # (3, C, 8, 8)
    blocks = pixels.unflatten(-1, (4, 2)).unflatten(-3, (4, 2))  # (3, C, 4, 2, 4, 2)
    flat = torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    assert flat == (head_init == "icnr")
    with pytest.raises(ValueError, match=r"head_init must be one of \['random', 'icnr'\]"):
        _toy_model(head_init="nearest")


# --------------------------------------------------------------------------- bad input


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="divisible"):
        CuboidSelfAttention(10, 4, (2, 2, 2))
    with pytest.raises(ValueError, match="strategy"):
        CuboidSelfAttention(8, 2, (2, 2, 2), strategy="lx l")
    with pytest.raises(ValueError, match="padding"):
        CuboidSelfAttention(8, 2, (2, 2, 2), padding="reflect")
    with pytest.raises(ValueError, match="shift"):
        CuboidSelfAttention(8, 2, (2, 2, 2), shift_size=(0, 2, 0))
    with pytest.raises(ValueError, match="cuboid_size"):
        CuboidSelfAttention(8, 2, (2, 0, 2))
    with pytest.raises(ValueError, match="cuboid_size"):
        CuboidSelfAttention(8, 2, (2, 2))
    with pytest.raises(TypeError, match="cuboid_size"):
        CuboidSelfAttention(8, 2, (2, 2.0, 2))
    with pytest.raises(ValueError, match="global_vectors"):
        CuboidSelfAttention(8, 2, (2, 2, 2), global_vectors=-1)
    with pytest.raises(ValueError, match="pattern"):
        CuboidTransformerBlock(8, 2, (2, 2, 2), "diagonal")
    with pytest.raises(ValueError, match=r"^cuboid_hw must be a sequence of 2 integers"):
        CuboidCrossAttention(8, 2, (2, 2, 2))
    with pytest.raises(ValueError, match=r"^strategy_hw must be 2 of .*got \('l', 'x'\)"):
        CuboidCrossAttention(8, 2, (2, 2), ("l", "x"))
    with pytest.raises(ValueError, match=r"^shift_hw must be smaller than cuboid_hw \(2, 2\)"):
        CuboidCrossAttention(8, 2, (2, 2), shift_hw=(0, 2))
    with pytest.raises(ValueError, match=r"^shift_hw entries must be >= 0, got \(0, -1\)"):
        CuboidCrossAttention(8, 2, (2, 2), shift_hw=(0, -1))
    with pytest.raises(ValueError, match=r"^ffn_kernel must be 0 or odd"):
        CuboidCrossBlock(8, 2, (2, 2), ffn_kernel=2)
    with pytest.raises(ValueError, match=r"^ffn_kernel must be 0 or odd"):
        CuboidTransformerBlock(8, 2, (2, 2, 2), ffn_kernel=4)


def test_bad_layer_inputs():
    layer = CuboidSelfAttention(8, 2, (2, 2, 2), global_vectors=2)
    with pytest.raises(ValueError, match=r"C=8"):
        layer(torch.randn(1, 2, 4, 4, 6), torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="channel-last"):
        layer(torch.randn(2, 4, 4, 8), torch.randn(1, 2, 8))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        layer([[1.0]], torch.randn(1, 2, 8))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(1, 2, 4, 4, 8, dtype=torch.long), torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="required"):
        layer(torch.randn(1, 2, 4, 4, 8))
    with pytest.raises(ValueError, match=r"\(B, P, C\)"):
        layer(torch.randn(1, 2, 4, 4, 8), torch.randn(1, 3, 8))
    plain = CuboidSelfAttention(8, 2, (2, 2, 2))
    with pytest.raises(ValueError, match="global_vectors=0"):
        plain(torch.randn(1, 2, 4, 4, 8), torch.randn(1, 2, 8))
    cross = CuboidCrossAttention(8, 2, (2, 2))
    with pytest.raises(ValueError, match="memory must share"):
        cross(torch.randn(1, 2, 4, 4, 8), torch.randn(1, 2, 4, 2, 8))
    cuboids, layout = cuboid_reorder(torch.randn(1, 2, 4, 4, 3), (2, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        cuboid_reverse(cuboids[:, 1:], layout)
    with pytest.raises(ValueError, match="channel-last"):
        cuboid_reorder(torch.randn(4, 4, 3), (2, 2, 2))


def test_shapes_of_numpy_or_torch_integers_build_the_model_of_those_numbers():
    model = Earthformer(
        tuple(np.array([4, 1, 8, 8])), torch.tensor([3, 2, 8, 8]), base_units=8, num_heads=2,
        depth=(1, 1),
    )  # fmt: skip
    assert model.input_shape == (4, 1, 8, 8) and model.target_shape == (3, 2, 8, 8)
    assert all(type(size) is int for size in model.input_shape + model.target_shape)
    assert model(torch.randn(2, 4, 1, 8, 8)).shape == (2, 3, 2, 8, 8)
    with pytest.raises(TypeError, match=r"input_shape must hold integers, got \(4, 1, 8.0, 8\)"):
        Earthformer((4, 1, 8.0, 8), (3, 2, 8, 8))
    with pytest.raises(ValueError, match=r"target_shape entries must be >= 1, got \(0, 2, 8, 8\)"):
        Earthformer((4, 1, 8, 8), (0, 2, 8, 8))


def test_bad_model_arguments_and_inputs():
    with pytest.raises(ValueError, match="divisible"):
        Earthformer((4, 1, 10, 10), (4, 1, 10, 10), base_units=8, num_heads=2, depth=(1, 1))
    with pytest.raises(ValueError, match="target_shape"):
        Earthformer((4, 1, 8, 8), (4, 1, 16, 16), base_units=8, num_heads=2)
    with pytest.raises(ValueError, match="input_shape"):
        Earthformer((4, 8, 8), (4, 1, 8, 8))
    with pytest.raises(ValueError, match="depth"):
        Earthformer((4, 1, 8, 8), (4, 1, 8, 8), depth=())
    with pytest.raises(ValueError, match="stem_channels must be an integer >= 1, got 0"):
        Earthformer((4, 1, 8, 8), (4, 1, 8, 8), stem_channels=0)
    model = _toy_model()
    with pytest.raises(ValueError, match=r"x.transpose\(1, 2\)"):
        model(torch.randn(2, 1, 4, 8, 8))  # channel-first layout
    with pytest.raises(ValueError, match="C, H, W"):
        model(torch.randn(2, 4, 3, 8, 8))  # wrong channel count
    with pytest.raises(ValueError, match="H, W must be"):
        model(torch.randn(2, 4, 1, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(2, 4, 1, 8, 8, dtype=torch.long))


@pytest.mark.parametrize("kernel", [0, 3])
def test_feed_forward_mixes_only_within_a_frame_and_only_with_a_spatial_kernel(kernel):
    torch.manual_seed(0)
    ffn = FeedForward(8, ratio=2.0, spatial_kernel=kernel)
    x = torch.randn(1, 3, 5, 5, 8, requires_grad=True)
    ffn(x)[0, 1, 2, 2].sum().backward()  # one token: frame 1, row 2, column 2
    reach = x.grad[0].abs().sum(-1)  # (T, H, W): which inputs that token depends on
    assert reach[1, 2, 2] > 0
    assert reach[0].max() == 0 and reach[2].max() == 0  # never another frame
    neighbours = reach[1, 1:4, 1:4]
    if kernel:
        assert (neighbours > 0).all()  # the 3 x 3 neighbourhood, nothing beyond it
        assert reach[1].sum() == pytest.approx(float(reach[1, 1:4, 1:4].sum()))
    else:
        assert reach[1].sum() == reach[1, 2, 2]


def test_feed_forward_rejects_bad_spatial_kernels_and_non_grids():
    with pytest.raises(ValueError, match="spatial_kernel must be 0 or odd"):
        FeedForward(8, spatial_kernel=2)
    with pytest.raises(ValueError, match="spatial_kernel must be 0 or odd"):
        FeedForward(8, spatial_kernel=-1)
    with pytest.raises(TypeError, match="spatial_kernel must be an int"):
        FeedForward(8, spatial_kernel=True)
    with pytest.raises(ValueError, match=r"grid \(B, T, H, W, C\)"):
        FeedForward(8, spatial_kernel=3)(torch.randn(2, 6, 8))
    model = Earthformer((4, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, ffn_kernel=3)
    assert model(torch.rand(2, 4, 1, 8, 8)).shape == (2, 2, 1, 8, 8)


def _perturb(module, seed=0):
    """Adds seeded noise to every parameter so that default-initialised parts no longer coincide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_block_with_global_vectors_is_residual_in_both_streams():
    """With global vectors, each attention adds to both the cuboid and global streams (pre-norm),
    then each stream goes through its own feed-forward: recomputed from the submodules."""
    torch.manual_seed(0)
    block = CuboidTransformerBlock(8, 2, (2, 4, 4), "axial", global_vectors=2).double()
    _perturb(block)
    x = torch.randn(1, 2, 4, 4, 8, dtype=torch.float64)
    g = torch.randn(1, 2, 8, dtype=torch.float64)
    out, g_out = block(x, g)
    ex, eg = x, g
    for norm, g_norm, attention in zip(
        block.norms, block.global_norms, block.attentions, strict=True
    ):
        a, b = attention(norm(ex), g_norm(eg))
        ex, eg = ex + a, eg + b
    torch.testing.assert_close(out, block.ffn(ex))
    torch.testing.assert_close(g_out, block.global_ffn(eg))


def test_cross_block_normalises_the_memory_with_its_own_norm():
    """The cross block is ffn(x + attention(norm(x), memory_norm(memory))), two distinct norms."""
    torch.manual_seed(0)
    block = CuboidCrossBlock(8, 2, (2, 2)).double()
    _perturb(block)
    x = torch.randn(1, 2, 4, 4, 8, dtype=torch.float64)
    memory = torch.randn(1, 3, 4, 4, 8, dtype=torch.float64)
    expected = block.ffn(x + block.attention(block.norm(x), block.memory_norm(memory)))
    torch.testing.assert_close(block(x, memory), expected)


def test_spatial_mix_with_a_zero_kernel_is_the_plain_mlp():
    """Mix-FFN adds the depthwise convolution to the hidden features (residual), so a zero
    kernel leaves the plain two-layer MLP."""
    torch.manual_seed(0)
    mixed = FeedForward(6, spatial_kernel=3).double()
    plain = FeedForward(6).double()
    with torch.no_grad():
        for i in (0, 1, 5):
            plain.net[i].load_state_dict(mixed.net[i].state_dict())
        mixed.net[2].conv.weight.zero_()
        mixed.net[2].conv.bias.zero_()
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(mixed(x), plain(x))


def test_patch_merge_gathers_each_2x2_patch():
    """With identity norm and projection, each merged cell holds exactly its 2×2 patch's values."""
    merge = PatchMerge(1)
    merge.norm, merge.reduce = torch.nn.Identity(), torch.nn.Identity()
    h, w = 4, 6
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w, 1)
    out = merge(x)  # (1, 1, h/2, w/2, 4)
    for i in range(h // 2):
        for j in range(w // 2):
            patch = x[0, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 0].flatten()
            assert sorted(out[0, 0, i, j].tolist()) == sorted(patch.tolist())


def test_an_explicit_pattern_keeps_its_strategies():
    """An explicit (size, "dld", shift) pattern keeps strategy ("d", "l", "d") in the block."""
    specs = resolve_pattern([((2, 2, 2), "dld", (0, 0, 0))], (4, 4, 4))
    assert specs[0][1] == ("d", "l", "d")
    block = CuboidTransformerBlock(4, 1, (4, 4, 4), [((2, 2, 2), "dld", (0, 0, 0))])
    assert block.attentions[0].strategy == ("d", "l", "d")


# --------------------------------------------------------------------------- mutation-pass tests


def test_bad_strategy_letters_global_batch_and_empty_batch_are_refused():
    with pytest.raises(ValueError, match=r"strategy must be 3 of .*got 'lxl'"):
        CuboidSelfAttention(8, 2, (2, 2, 2), strategy="lxl")
    with pytest.raises(ValueError, match="strategy"):
        plan_cuboids((4, 4, 4), (2, 2, 2), strategy=("l", "l", "L"))
    layer = CuboidSelfAttention(8, 2, (2, 2, 2), global_vectors=2)
    with pytest.raises(ValueError, match=r"global_vectors must have shape \(B, P, C\)"):
        layer(torch.randn(2, 2, 4, 4, 8), torch.randn(1, 2, 8))  # would broadcast silently
    with pytest.raises(ValueError, match="non-empty"):
        CuboidSelfAttention(8, 2, (2, 2, 2))(torch.randn(0, 2, 4, 4, 8))


def test_only_a_shifted_periodic_axis_wraps():
    layout = plan_cuboids((4, 6, 6), (2, 3, 3), "lll", (0, 0, 1), periodic=(False, True, True))
    assert layout.wrap == (False, False, True)


def test_a_layer_reused_on_several_grids_matches_dense_on_each():
    """Masks, bias indices and the global mask are cached per grid: grids with the same
    number of cuboids and tokens per cuboid but other clamping, seams or padding must each
    get their own (checked against the dense per-token reference)."""
    layer = _layer(
        dim=8, num_heads=2, cuboid_size=(2, 2, 2), shift_size=(1, 1, 1), global_vectors=2
    )
    g = torch.randn(1, 2, 8, dtype=torch.float64)
    # (1,3,4) -> cuboid (1,2,2), (4,1,3) -> (2,1,2): both 4 cuboids of 4 slots, padded.
    for shape in [(1, 4, 4), (4, 1, 4), (1, 3, 4), (4, 1, 3), (4, 1, 4)]:
        x = torch.randn(1, *shape, 8, dtype=torch.float64)
        expected, expected_g = dense_self_attention(layer, x, g)
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                out, g_out = layer(x, g)
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(g_out, expected_g, rtol=1e-10, atol=1e-10)

    torch.manual_seed(3)
    cross = CuboidCrossAttention(8, 2, (2, 2), shift_hw=(1, 1), memory_global_vectors=2).double()
    with torch.no_grad():
        cross.relative_position_table.normal_(0.0, 0.5)
    for tq, tm in [(2, 2), (2, 3), (3, 3), (2, 2)]:  # 4x4: no padding, the shift seam masked
        x = torch.randn(1, tq, 4, 4, 8, dtype=torch.float64)
        memory = torch.randn(1, tm, 4, 4, 8, dtype=torch.float64)
        expected = dense_cross_attention(cross, x, memory, g)
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                out = cross(x, memory, g)
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 1)])  # one bias for all cuboids / per cuboid
@pytest.mark.parametrize("grad", [True, False])
def test_attention_dropout_of_one_leaves_only_the_projection_bias(shift, grad):
    """``attn_drop = 1`` zeroes every attention weight in training: each output is ``proj(0)``;
    ``proj_drop = 1`` zeroes the outputs of both the tokens and the global vectors."""
    layer = _layer(
        dim=8, num_heads=2, cuboid_size=(2, 2, 2), shift_size=shift, global_vectors=2,
        attn_drop=1.0,
    )  # fmt: skip
    layer.train()
    x = torch.randn(2, 4, 4, 4, 8, dtype=torch.float64)
    g = torch.randn(2, 2, 8, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        out, g_out = layer(x, g)
    torch.testing.assert_close(out, layer.proj.bias.detach().expand_as(out), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        g_out, layer.global_proj.bias.detach().expand_as(g_out), rtol=0, atol=1e-12
    )
    layer.eval()
    assert not torch.allclose(layer(x, g)[0], out)

    layer.train()
    layer.proj_drop.p = 1.0  # output dropout of one: both streams are zero
    with torch.set_grad_enabled(grad):
        out, g_out = layer(x, g)
    assert not out.any() and not g_out.any()

    torch.manual_seed(0)
    cross = CuboidCrossAttention(8, 2, (2, 2), shift_hw=shift[1:], attn_drop=1.0).double()
    with torch.set_grad_enabled(grad):
        out = cross(x, torch.randn(2, 3, 4, 4, 8, dtype=torch.float64))
    torch.testing.assert_close(out, cross.proj.bias.detach().expand_as(out), rtol=0, atol=1e-12)


@pytest.mark.parametrize("grad", [True, False])
def test_masked_keys_get_no_weight_at_any_score_scale(grad):
    """Masked pairs are excluded exactly (-inf), not by a finite penalty that large scores beat."""
    layer = _layer(dim=8, num_heads=2, cuboid_size=(2, 2, 3), shift_size=(1, 1, 1))
    x = 1e3 * torch.randn(1, 3, 5, 7, 8, dtype=torch.float64)
    expected, _ = dense_self_attention(layer, x)
    with torch.set_grad_enabled(grad):
        out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-8, atol=1e-6)


def test_cross_mask_never_leaves_a_query_without_keys():
    # H = 2, W = 3 -> 4 with cuboid (1, 2), shift (0, 1): a padded query is alone on its side.
    cross = CuboidCrossAttention(8, 2, (1, 2), shift_hw=(0, 1)).double()
    query, memory = cross.layouts((2, 2, 3), (3, 2, 3))
    mask = cross_attention_mask(query, memory)
    assert mask is not None and mask.any(-1).all()
    x = torch.randn(1, 2, 2, 3, 8, dtype=torch.float64, requires_grad=True)
    cross(x, torch.randn(1, 3, 2, 3, 8, dtype=torch.float64)).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in cross.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_cross_block_normalises_the_memory_s_global_vectors_with_the_memory_norm():
    """The memory's global vectors are part of the memory: the same pre-norm applies to them."""
    torch.manual_seed(0)
    block = CuboidCrossBlock(8, 2, (2, 2), memory_global_vectors=2).double()
    _perturb(block)
    x = torch.randn(1, 2, 4, 4, 8, dtype=torch.float64)
    memory = torch.randn(1, 3, 4, 4, 8, dtype=torch.float64)
    g = 5.0 + 3.0 * torch.randn(1, 2, 8, dtype=torch.float64)  # far from normalised
    attention = block.attention(block.norm(x), block.memory_norm(memory), block.memory_norm(g))
    torch.testing.assert_close(block(x, memory, g), block.ffn(x + attention))


def test_feed_forward_hidden_width_is_dim_times_ratio_rounded():
    assert FeedForward(10, 0.77).net[1].out_features == 8  # 7.7 rounds to 8
    assert FeedForward(10, 0.72).net[1].out_features == 7
    assert FeedForward(3, 0.1).net[1].out_features == 1  # at least one hidden unit


def test_feed_forward_takes_a_numpy_ratio():
    """np.float32(4.0) and np.int64(4) were refused as not finite numbers > 0."""
    assert FeedForward(8, np.float32(0.75)).net[1].out_features == 6
    assert FeedForward(8, np.int64(4)).net[1].out_features == 32
    assert CuboidTransformerBlock(8, 2, (2, 4, 4), mlp_ratio=np.float32(2.0)) is not None


@pytest.mark.parametrize(
    "ratio, error, refused",
    [
        (0, ValueError, "a finite number > 0"),
        (-3.0, ValueError, "a finite number > 0"),
        (math.nan, ValueError, "a finite number > 0"),
        (math.inf, ValueError, "a finite number > 0"),
        (True, TypeError, "a positive number"),
        ("4", TypeError, "a positive number"),
    ],
)
def test_a_ratio_that_is_not_a_finite_positive_number_is_refused_by_every_user(
    ratio, error, refused
):
    """One check in FeedForward: a ratio <= 0 gave one hidden unit, NaN a bare conversion error;
    a bool or text is not a number (TypeError)."""
    builds = [
        lambda: FeedForward(8, ratio),
        lambda: CuboidTransformerBlock(8, 2, (2, 4, 4), mlp_ratio=ratio),
        lambda: CuboidCrossBlock(8, 2, mlp_ratio=ratio),
        lambda: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, mlp_ratio=ratio),
    ]
    for build in builds:
        with pytest.raises(error, match=rf"^mlp_ratio must be {refused}, got {ratio!r}"):
            build()


def test_frame_multiple_is_the_total_spatial_reduction():
    """H, W shrink by ``downsample`` in the stem and by 2 at each of the ``levels - 1`` merges."""
    assert Earthformer.frame_multiple((1,), 3) == 3
    assert Earthformer.frame_multiple((2, 2), 2) == 4
    assert Earthformer.frame_multiple((1, 1, 1), 2) == 8
    model = Earthformer(
        (2, 1, 12, 12), (1, 1, 12, 12), base_units=4, num_heads=1, depth=(1, 1),
        global_vectors=0, cross_cuboid_hw=(2, 2),
    )  # fmt: skip
    assert model(torch.randn(1, 2, 1, 12, 12)).shape == (1, 1, 1, 12, 12)


def test_bad_model_widths_and_global_vectors_are_refused():
    with pytest.raises(ValueError, match=r"target_shape must have the input's \(H, W\) = \(8, 8\)"):
        Earthformer((4, 1, 8, 8), (4, 1, 8, 16), base_units=8, num_heads=2)
    with pytest.raises(ValueError, match=r"\(H, W\) = \(8, 10\) must be divisible by"):
        Earthformer((4, 1, 8, 10), (4, 1, 8, 10), base_units=8, num_heads=2, depth=(1, 1))
    with pytest.raises(ValueError, match="global_vectors must be an integer >= 0, got -1"):
        Earthformer((4, 1, 8, 8), (4, 1, 8, 8), base_units=8, num_heads=2, global_vectors=-1)


def test_a_new_model_s_branches_start_near_zero():
    """Every attention / feed-forward output layer starts with zero bias and weights scaled to
    1e-2 of torch's default bound ``1 / sqrt(fan_in)``: each block starts near the identity."""
    model = _toy_model()
    layers = []
    for module in model.modules():
        if isinstance(module, (CuboidSelfAttention, CuboidCrossAttention)):
            layers += [module.proj, getattr(module, "global_proj", None)]
        elif isinstance(module, FeedForward):
            layers.append(module.net[-2])
    layers = [layer for layer in layers if layer is not None]
    assert len(layers) > 10
    for layer in layers:
        assert not layer.bias.any()
        assert 0 < layer.weight.abs().max() <= 1e-2 / math.sqrt(layer.in_features)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_model_refuses_a_single_non_finite_value(bad):
    x = torch.randn(2, 4, 1, 8, 8)
    x[1, 2, 0, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        _toy_model()(x)


def test_model_takes_float64_frames_and_refuses_an_empty_batch():
    model = _toy_model()
    x = torch.randn(2, 4, 1, 8, 8, dtype=torch.float64)
    out = model(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x.float()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="x is empty"):
        model(torch.randn(0, 4, 1, 8, 8))


def test_counts_given_as_numpy_or_0d_integers_are_read_as_python_ints():
    model = Earthformer(
        (2, 1, 8, 8),
        (2, 1, 8, 8),
        base_units=np.int64(8),
        num_heads=np.int32(2),
        depth=(np.int64(1),),
        downsample=torch.tensor(2),
        global_vectors=np.int64(0),
    )
    assert (model.downsample, model.depth, model.global_vectors) == (2, (1,), 0)
    assert type(model.downsample) is int and type(model.global_vectors) is int
    assert CuboidSelfAttention(8, np.array(2), (1, 2, 2)).num_heads == 2
