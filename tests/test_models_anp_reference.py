"""The attentive neural process's pieces against direct computations: attention by softmax,
the fixed input map, the bounds of the latent and decoder standard deviations, set
duplication, and the losses' bad input."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from test_models_anp import random_sets
from test_seed_scheme import whole

from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme
from physml.models.anp import AttentiveNeuralProcess, _Attention
from physml.models.anp_losses import latent_noise, softc_residual_loss


def small_model(**overrides) -> AttentiveNeuralProcess:
    settings = {"hidden": 16, "latent": 8, "heads": 2, "attention_layers": 1, "seed": 0}
    settings.update(overrides)
    return AttentiveNeuralProcess(**settings)


def test_attention_is_softmax_attention_per_head_plus_residual_and_layer_norm():
    hidden, heads = 8, 2
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = _Attention(hidden, heads).double()
        torch.nn.init.normal_(layer.norm.weight)
        torch.nn.init.normal_(layer.norm.bias)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(2, 3, hidden, generator=g, dtype=torch.float64)
    key = torch.randn(2, 5, hidden, generator=g, dtype=torch.float64)
    value = torch.randn(2, 5, hidden, generator=g, dtype=torch.float64)

    expected = by_hand_attention(layer, query, key, value)
    with torch.no_grad():
        torch.testing.assert_close(layer(query, key, value), expected, rtol=1e-10, atol=1e-12)


def test_duplicating_every_context_point_changes_nothing():
    """Attention weights and mean pooling are set averages: a context taken twice is the same
    set of values with halved weights."""
    model = small_model().eval()
    cx, cy, tx, _ = random_sets(2, 6, 5)
    with torch.no_grad():
        once = model(cx, cy, tx)
        twice = model(torch.cat([cx, cx], 1), torch.cat([cy, cy], 1), tx)
        mu1, sigma1 = model._latent(cx, cy)
        mu2, sigma2 = model._latent(torch.cat([cx, cx], 1), torch.cat([cy, cy], 1))
    torch.testing.assert_close(twice.mean, once.mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(twice.cov, once.cov, rtol=0, atol=1e-5)
    torch.testing.assert_close(mu2, mu1, rtol=0, atol=1e-5)
    torch.testing.assert_close(sigma2, sigma1, rtol=0, atol=1e-5)


def test_input_range_maps_each_coordinate_affinely_onto_minus_one_one():
    ranged = small_model(input_range=((0.0, 2.0), (-1.0, 3.0))).eval()
    plain = small_model().eval()
    cx, cy, tx, _ = random_sets(1, 4, 3)
    cx, tx = cx * torch.tensor([2.0, 4.0]) - torch.tensor([0.0, 1.0]), tx * 2.0
    by_hand = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0])  # centre, half width
    with torch.no_grad():
        expected = plain((cx - by_hand[0]) / by_hand[1], cy, (tx - by_hand[0]) / by_hand[1]).mean
        torch.testing.assert_close(ranged(cx, cy, tx).mean, expected)
        corners = torch.tensor([[[0.0, -1.0], [2.0, 3.0], [1.0, 1.0]]])
        torch.testing.assert_close(
            ranged._normalise(corners), torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]])
        )


@pytest.mark.parametrize("raw, std", [(50.0, 1.0), (-50.0, 0.1), (0.0, 0.55)])
def test_latent_standard_deviation_is_0_1_plus_0_9_sigmoid(raw, std):
    model = small_model()
    head = model.latent_head[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.25] * model.latent + [raw] * model.latent))
        mu, sigma = model._latent(*random_sets(2, 3, 1)[:2])
    torch.testing.assert_close(mu, torch.full((2, model.latent), 0.25))
    torch.testing.assert_close(sigma, torch.full((2, model.latent), std))


@pytest.mark.parametrize("raw, extra", [(-50.0, 0.0), (0.0, math.log(2.0))])
def test_decoder_standard_deviation_is_min_std_plus_softplus(raw, extra):
    model = small_model(min_std=0.05).eval()
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.copy_(torch.tensor([0.7, raw]))
        out = model(*random_sets(2, 4, 3)[:3])
    torch.testing.assert_close(out.mean, torch.full((2, 3), 0.7))
    torch.testing.assert_close(out.cov, torch.full((2, 3), (0.05 + extra) ** 2))


def test_inputs_of_other_dtypes_are_predicted_as_float32():
    model = small_model().eval()
    cx, cy, tx, _ = random_sets(1, 5, 4)
    cx, tx = (cx * 10).round(), (tx * 10).round()
    with torch.no_grad():
        reference = model(cx, cy, tx)
        wide = model(cx.double(), cy.double(), tx.double())
        integer = model(cx.long(), cy, tx.long())
    for out in (wide, integer):
        assert out.mean.dtype == torch.float32
        torch.testing.assert_close(out.mean, reference.mean)


def test_a_latent_noise_that_would_broadcast_is_refused_by_name():
    model = small_model()
    cx, cy, tx, ty = random_sets(2, 4, 3)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 8\)"):
        model.elbo_loss(cx, cy, tx, ty, noise=torch.zeros(model.latent))


def test_a_generator_of_the_wrong_type_is_refused_by_name():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        small_model()(*random_sets(1, 3, 2)[:3], samples=2, generator=0)


def test_latent_noise_row_b_is_randn_from_the_generator_of_seed_b():
    seeds = torch.tensor([3, 11, 3])
    with seed_scheme(SEED_SCHEME):
        noise = latent_noise(seeds, 4, torch.zeros((), dtype=torch.float64))
        expected = [torch.randn(4, generator=whole(s)) for s in (3, 11, 3)]
    assert noise.dtype == torch.float64
    torch.testing.assert_close(noise, torch.stack(expected).double(), rtol=0, atol=0)


def test_latent_noise_of_seeds_agreeing_in_their_low_32_bits_differs_by_default():
    """Two training functions whose 63-bit seeds share their low 32 bits get their own latent
    draws (``manual_seed`` would give them the same one)."""
    low = 0x1234_5678
    seeds = torch.tensor([low, low + 2**32, low + 2**40 + 2**62])
    with seed_scheme(SEED_SCHEME):
        noise = latent_noise(seeds, 6, torch.zeros(()))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not torch.equal(noise[a], noise[b])


def test_latent_noise_in_the_manual_seed_scheme_is_manual_seeds_bitwise():
    """Runs drawn before the default seed scheme get their latent draws again, negative int64
    seeds (their 64-bit two's complement, as ``manual_seed`` reads them) included."""
    low = 0x1234_5678
    seeds = [low, low + 2**32, 2**63 - 1, -1, -(2**63)]
    with seed_scheme(MANUAL_SEED_SCHEME):
        noise = latent_noise(torch.tensor(seeds), 6, torch.zeros((), dtype=torch.float64))
    expected = [torch.randn(6, generator=torch.Generator().manual_seed(s)) for s in seeds]
    assert noise.dtype == torch.float64
    assert torch.equal(noise, torch.stack(expected).double())
    assert torch.equal(noise[0], noise[1])  # the old scheme's low 32 bits, kept as they were


def test_an_axis_one_percent_off_uniform_is_refused():
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    t[2] += 0.01 * 0.25
    x = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="t must be uniformly spaced"):
        softc_residual_loss(torch.zeros(1, 5, 5, dtype=torch.float64), t, x, "diffusion", 1.0)


# --------------------------------------------------------------------------- from a mutation pass


def by_hand_attention(layer: _Attention, query, key, value):
    """``layer`` computed from its weights: softmax attention per head, output projection,
    residual to the query, layer norm."""
    hidden, heads = layer.norm.normalized_shape[0], layer.attention.num_heads
    w, b = layer.attention.in_proj_weight, layer.attention.in_proj_bias
    d = hidden // heads
    q, k, v = (
        (a @ w[i * hidden : (i + 1) * hidden].T + b[i * hidden : (i + 1) * hidden])
        .reshape(*a.shape[:2], heads, d)
        .transpose(1, 2)
        for i, a in enumerate((query, key, value))
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    weights = scores.exp() / scores.exp().sum(-1, keepdim=True)
    mixed = (weights @ v).transpose(1, 2).reshape(*query.shape[:2], hidden)
    mixed = mixed @ layer.attention.out_proj.weight.T + layer.attention.out_proj.bias
    h = query + mixed
    centred = h - h.mean(-1, keepdim=True)
    normed = centred / (centred.square().mean(-1, keepdim=True) + layer.norm.eps).sqrt()
    return normed * layer.norm.weight + layer.norm.bias


def test_the_deterministic_path_attends_from_target_x_to_context_x_over_the_set_encoding():
    """r* = attention(keys(target x), keys(context x), values) with the values the embedded
    pairs put through each self-attention layer in turn (no skip around a layer)."""
    model = small_model(attention_layers=2).double()
    cx, cy, tx, _ = (a.double() for a in random_sets(2, 6, 5))
    with torch.no_grad():
        h = model.deterministic.embed(torch.cat([cx, cy.unsqueeze(-1)], -1))
        for layer in model.deterministic.attention:
            h = by_hand_attention(layer, h, h, h)
        expected = by_hand_attention(model.cross, model.keys(tx), model.keys(cx), h)
        r = model._representation(cx, cy, tx)
    torch.testing.assert_close(r, expected, rtol=1e-10, atol=1e-12)
    assert (r[:, 0] - r[:, 1]).abs().max() > 1e-3, "each target has its own r*"


def test_the_latent_path_mean_pools_the_encoded_pairs():
    """q(z | set): the encoded pairs averaged over the set, then the head, σ = 0.1 + 0.9 sigmoid."""
    model = small_model(attention_layers=1).double()
    cx, cy, _, _ = (a.double() for a in random_sets(2, 7, 1))
    with torch.no_grad():
        h = model.latent_encoder.embed(torch.cat([cx, cy.unsqueeze(-1)], -1))
        h = by_hand_attention(model.latent_encoder.attention[0], h, h, h)
        head = model.latent_head(h.sum(1) / 7)
        mu, sigma = model._latent(cx, cy)
    torch.testing.assert_close(mu, head[:, :8], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sigma, 0.1 + 0.9 / (1 + (-head[:, 8:]).exp()), rtol=1e-10, atol=0)


def test_the_decoder_reads_the_target_coordinates():
    """Only the decoder's x inputs are switched on: the mean is then a function of x alone."""
    model = small_model(hidden=16, latent=8).eval()
    first = model.decoder[0]
    with torch.no_grad():
        first.weight[:, 2:] = 0.0
        cx, cy, tx, _ = random_sets(1, 4, 3)
        same_x = model(cx, cy, tx.flip(1)).mean.flip(1)
        other_context = model(cx + 1.0, -cy, tx).mean
        moved = model(cx, cy, tx + 0.5).mean
    reference = model(cx, cy, tx).mean.detach()
    torch.testing.assert_close(same_x, reference)
    torch.testing.assert_close(other_context, reference)
    assert (moved - reference).abs().max() > 1e-4


def test_one_latent_draw_is_mu_plus_sigma_times_the_generator_normal():
    """With μ = 0.25 and σ = 0.55 fixed by the head's bias, samples=1 decodes z = μ + σ ε, ε
    the generator's normal draws; the same model with μ set to that z and samples=0 agrees."""
    model = small_model().eval()
    other = small_model().eval()
    cx, cy, tx, _ = random_sets(2, 4, 3)
    eps = torch.randn(1, 2, model.latent, generator=torch.Generator().manual_seed(9))
    z = 0.25 + 0.55 * eps[0]
    with torch.no_grad():
        for m in (model, other):
            m.latent_head[-1].weight.zero_()
        model.latent_head[-1].bias.copy_(torch.tensor([0.25] * 8 + [0.0] * 8))
        sampled = model(cx, cy, tx, samples=1, generator=torch.Generator().manual_seed(9))
        for b in range(2):
            other.latent_head[-1].bias.copy_(torch.cat([z[b], torch.zeros(8)]))
            at_z = other(cx[b : b + 1], cy[b : b + 1], tx[b : b + 1], samples=0)
            torch.testing.assert_close(sampled.mean[b : b + 1], at_z.mean)
            torch.testing.assert_close(sampled.cov[b : b + 1], at_z.cov)


def test_a_float64_latent_noise_is_used_in_the_model_dtype():
    model = small_model()
    cx, cy, tx, ty = random_sets(2, 4, 3)
    noise = torch.randn(2, model.latent, generator=torch.Generator().manual_seed(0))
    single, _ = model.elbo_loss(cx, cy, tx, ty, noise=noise)
    double, _ = model.elbo_loss(cx, cy, tx, ty, noise=noise.double())
    assert double.dtype == torch.float32
    torch.testing.assert_close(double, single)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"attention_layers": -1}, "attention_layers must be an integer >= 0, got -1"),
        (
            {"input_range": ((0.0, math.inf), (0.0, 1.0))},
            "input_range needs finite pairs with low < high, got ((0.0, inf), (0.0, 1.0))",
        ),
        (
            {"input_range": ((math.nan, 1.0), (0.0, 1.0))},
            "input_range needs finite pairs with low < high, got ((nan, 1.0), (0.0, 1.0))",
        ),
    ],
)
def test_negative_layer_counts_and_infinite_or_nan_ranges_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=f"^{re.escape(match)}$"):
        small_model(**kwargs)


def test_sizes_given_as_numpy_integers_are_recorded_as_ints():
    """``eval_samples=np.int64(3)`` was kept numpy in the settings a checkpoint records."""
    given = small_model(eval_samples=np.int64(3), attention_layers=np.int64(1))
    assert given.settings == {"eval_samples": 3} and type(given.settings["eval_samples"]) is int
    expected = small_model(eval_samples=3, attention_layers=1)
    assert all(
        torch.equal(p, q) for p, q in zip(given.parameters(), expected.parameters(), strict=True)
    )


def test_a_context_x_of_rank_four_is_refused_by_name():
    cx, cy, tx, _ = random_sets(2, 3, 4)
    message = r"^context_x must have shape \(batch, context, 2\), got shape \(2, 3, 1, 2\)$"
    with pytest.raises(ValueError, match=message):
        small_model()(cx[:, :, None], cy, tx)


def test_the_decoder_is_three_hidden_layers_deep_as_checkpoints_record():
    model = small_model(hidden=16, latent=8)
    shapes = [tuple(p.shape) for n, p in model.decoder.named_parameters() if n.endswith("weight")]
    assert shapes == [(16, 2 + 16 + 8), (16, 16), (16, 16), (2, 16)]
