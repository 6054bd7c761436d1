"""Attentive neural process (Kim et al., ICLR 2019), the ProbConserv paper's base model.

A *function* is one PDE solution ``u(t, x)``. The model reads a context set of observed points
``context_x (B, Nc, 2)`` with values ``context_y (B, Nc)`` and predicts a diagonal
:class:`~physml.outputs.Gaussian` at target points ``target_x (B, Nt, 2)``.

* Deterministic path: an MLP embeds each context pair ``(x, y)``, self-attention layers mix the
  embeddings, and multi-head cross-attention from the targets' ``x`` to the context ``x`` (keys and
  queries share one MLP) gives each target its own representation ``r*``.
* Latent path: a second MLP and self-attention stack over ``(x, y)``, mean-pooled into a Gaussian
  ``q(z | set)`` with a standard deviation in ``(0.1, 1)`` (as in the original ANP).
* Decoder: an MLP of ``(x, r*, z)`` gives the mean and a standard deviation
  ``min_std + softplus(·)``.

Training maximises the ELBO ``E_q(z|C∪T)[log p(y_T | x_T, C, z)] − KL(q(z|C∪T) ‖ q(z|C))`` with the
context and target sets together as the "posterior" set (:meth:`AttentiveNeuralProcess.elbo_loss`).
Prediction (:meth:`AttentiveNeuralProcess.forward`) uses the latent mean of ``q(z|C)`` by default,
which is deterministic and invariant to the order of the context points; with ``samples=S`` it
averages ``S`` latent draws and reports the mixture's variance (decoder variance averaged plus the
spread of the means across draws).

Inputs are mapped to ``[-1, 1]`` by a fixed affine map (``input_range``, stored with the weights).
Networks run in float32. The training losses (the ELBO of a batch, the SoftC penalty) are in
:mod:`physml.models.anp_losses`; training goes through :func:`physml.training.train_anp`; the
GPME functions it learns from come from :class:`physml.data.GPMESampler`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pdes.checks import finite, positive
from pdes.checks import positive_int as _positive_int

from ..outputs import Gaussian

__all__ = ["AttentiveNeuralProcess"]

LATENT_MIN_STD = 0.1
"""Floor of the latent standard deviation, ``0.1 + 0.9 sigmoid(·)`` as in the original ANP."""


# --------------------------------------------------------------------------- argument checks


def _tensor(name: str, value: object, ndim: int, shape: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape {shape}, got {type(value).__name__}"
        )
    if value.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape}, got shape {tuple(value.shape)}")
    if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    finite(name, value)
    return value


# --------------------------------------------------------------------------- the network


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Attention(nn.Module):
    """Multi-head attention with a residual connection to the queries and layer norm."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        mixed, _ = self.attention(query, key, value, need_weights=False)
        return self.norm(query + mixed)


class _SetEncoder(nn.Module):
    """MLP on each ``(x, y)`` pair, then self-attention layers: ``(B, N, d+1) → (B, N, H)``."""

    def __init__(self, x_dim: int, hidden: int, heads: int, layers: int) -> None:
        super().__init__()
        self.embed = _mlp([x_dim + 1, hidden, hidden, hidden])
        self.attention = nn.ModuleList(_Attention(hidden, heads) for _ in range(layers))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        h = self.embed(pairs)
        for layer in self.attention:
            h = layer(h, h, h)
        return h


SHAPELESS = ("heads", "min_std", "eval_samples")
"""The settings that leave every parameter's shape as it is."""


def shapeless_defaults() -> dict[str, object]:
    """The defaults of :data:`SHAPELESS`, as :class:`AttentiveNeuralProcess`'s signature
    gives them."""
    parameters = inspect.signature(AttentiveNeuralProcess).parameters
    return {name: parameters[name].default for name in SHAPELESS}


class AttentiveNeuralProcess(nn.Module):
    """ANP over points ``(t, x)``: ``forward(context_x (B, Nc, 2), context_y (B, Nc), target_x (B,
    Nt, 2)) -> Gaussian`` with mean and diagonal variance ``(B, Nt)``.

    ``x_dim``: the coordinates of a point (2 for ``(t, x)``). ``hidden``: the width of the
    encoders and the decoder, divisible by ``heads``, the attention heads. ``latent``: the size of
    the global latent ``z``. ``attention_layers``: the self-attention layers of each set encoder
    (0: each pair embedded alone). ``min_std``: the floor of the predicted standard
    deviation, ``min_std + softplus(·)`` (in the units of ``y``).
    ``input_range`` gives ``(low, high)`` per input coordinate, mapped to ``[-1, 1]`` (``None``:
    inputs used as they are). ``eval_samples`` is the default of ``forward``'s ``samples`` (0: the
    latent mean). ``seed`` makes the initial weights reproducible without touching global RNG.
    """

    def __init__(
        self,
        x_dim: int = 2,
        hidden: int = 64,
        latent: int = 64,
        heads: int = 2,
        attention_layers: int = 2,
        min_std: float = 0.01,
        input_range: Sequence[tuple[float, float]] | None = None,
        eval_samples: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.x_dim = _positive_int("x_dim", x_dim)
        hidden = _positive_int("hidden", hidden)
        self.latent = _positive_int("latent", latent)
        heads = _positive_int("heads", heads)
        if hidden % heads:
            raise ValueError(
                f"hidden must be divisible by heads, got hidden={hidden}, heads={heads}"
            )
        attention_layers = _positive_int("attention_layers", attention_layers, 0)
        self.min_std = positive("min_std", min_std)
        self.eval_samples = _positive_int("eval_samples", eval_samples, 0)
        shapeless = {"heads": heads, "min_std": float(min_std), "eval_samples": self.eval_samples}
        defaults = shapeless_defaults()
        self.settings = {k: v for k, v in shapeless.items() if v != defaults[k]}
        """The settings no parameter's shape shows, where they differ from the defaults (a
        checkpoint records them: another value is another model)."""
        shift, scale = self._input_map(input_range)
        self.register_buffer("input_shift", shift)
        self.register_buffer("input_scale", scale)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_positive_int("seed", seed, 0))
            self.deterministic = _SetEncoder(x_dim, hidden, heads, attention_layers)
            self.keys = _mlp([x_dim, hidden, hidden])
            self.cross = _Attention(hidden, heads)
            self.latent_encoder = _SetEncoder(x_dim, hidden, heads, attention_layers)
            self.latent_head = _mlp([hidden, hidden, 2 * latent])
            self.decoder = _mlp([x_dim + hidden + latent, hidden, hidden, hidden, 2])

    def _input_map(self, input_range) -> tuple[torch.Tensor, torch.Tensor]:
        if input_range is None:
            return torch.zeros(self.x_dim), torch.ones(self.x_dim)
        try:
            bounds = torch.as_tensor(input_range, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"input_range must be {self.x_dim} pairs (low, high), got {input_range!r}"
            ) from None
        if bounds.shape != (self.x_dim, 2):
            raise ValueError(
                f"input_range must be {self.x_dim} pairs (low, high), got shape "
                f"{tuple(bounds.shape)}"
            )
        if not torch.isfinite(bounds).all() or (bounds[:, 1] <= bounds[:, 0]).any():
            raise ValueError(f"input_range needs finite pairs with low < high, got {input_range!r}")
        shift = bounds.mean(dim=1)
        scale = (bounds[:, 1] - bounds[:, 0]) / 2.0
        return shift.float(), scale.float()

    # ------------------------------------------------------------------ inputs

    def check_inputs(
        self,
        context_x: torch.Tensor,
        context_y: torch.Tensor,
        target_x: torch.Tensor,
        target_y: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Validate shapes and values; return the tensors on the model's device and dtype."""
        d = self.x_dim
        context_x = _tensor("context_x", context_x, 3, f"(batch, context, {d})")
        context_y = _tensor("context_y", context_y, 2, "(batch, context)")
        target_x = _tensor("target_x", target_x, 3, f"(batch, target, {d})")
        batch, n_context, _ = context_x.shape
        if context_x.shape[-1] != d or target_x.shape[-1] != d:
            raise ValueError(
                f"context_x and target_x must have {d} coordinates on the last axis, got shapes "
                f"{tuple(context_x.shape)} and {tuple(target_x.shape)}"
            )
        if batch == 0:
            raise ValueError("context_x must hold at least one function (batch >= 1), got 0")
        if n_context == 0:
            raise ValueError(
                "context_x must hold at least one context point per function, got an empty "
                f"context of shape {tuple(context_x.shape)}"
            )
        if context_y.shape != context_x.shape[:2]:
            raise ValueError(
                f"context_y must have shape {tuple(context_x.shape[:2])} to match context_x, got "
                f"{tuple(context_y.shape)}"
            )
        if target_x.shape[0] != batch:
            raise ValueError(
                f"target_x must have batch size {batch} like context_x, got shape "
                f"{tuple(target_x.shape)}"
            )
        if target_x.shape[1] == 0:
            raise ValueError("target_x must hold at least one target point, got none")
        tensors = [context_x, context_y, target_x]
        if target_y is not None:
            target_y = _tensor("target_y", target_y, 2, "(batch, target)")
            if target_y.shape != target_x.shape[:2]:
                raise ValueError(
                    f"target_y must have shape {tuple(target_x.shape[:2])} to match target_x, "
                    f"got {tuple(target_y.shape)}"
                )
            tensors.append(target_y)
        like = self.input_scale
        return tuple(v.to(device=like.device, dtype=like.dtype) for v in tensors)

    # ------------------------------------------------------------------ paths

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_shift) / self.input_scale

    def _latent(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | set)``: mean and standard deviation ``(B, latent)``."""
        h = self.latent_encoder(torch.cat([x, y.unsqueeze(-1)], dim=-1)).mean(dim=1)
        mu, raw = self.latent_head(h).chunk(2, dim=-1)
        return mu, LATENT_MIN_STD + (1.0 - LATENT_MIN_STD) * torch.sigmoid(raw)

    def _representation(
        self, context_x: torch.Tensor, context_y: torch.Tensor, target_x: torch.Tensor
    ) -> torch.Tensor:
        """Deterministic path ``r*``: ``(B, Nt, hidden)``."""
        values = self.deterministic(torch.cat([context_x, context_y.unsqueeze(-1)], dim=-1))
        return self.cross(self.keys(target_x), self.keys(context_x), values)

    def _decode(
        self, target_x: torch.Tensor, r: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(..., B, Nt)`` for latents ``z (..., B, latent)``."""
        lead = z.shape[:-2]
        n_target = target_x.shape[-2]
        features = torch.cat(
            [
                target_x.expand(*lead, *target_x.shape),
                r.expand(*lead, *r.shape),
                z.unsqueeze(-2).expand(*z.shape[:-1], n_target, z.shape[-1]),
            ],
            dim=-1,
        )
        mean, raw = self.decoder(features).unbind(dim=-1)
        return mean, self.min_std + F.softplus(raw)

    # ------------------------------------------------------------------ public

    def forward(
        self,
        context_x: torch.Tensor,
        context_y: torch.Tensor,
        target_x: torch.Tensor,
        samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Gaussian:
        """Predictive Gaussian at the targets: mean and diagonal variance ``(B, Nt)``.

        ``samples=0`` decodes the latent mean; ``samples=S >= 1`` averages ``S`` draws of ``z``
        from ``q(z | context)`` and adds the spread of their means to the variance. The draws
        come from ``generator`` (``None``: torch's global generator).
        """
        samples = self.eval_samples if samples is None else _positive_int("samples", samples, 0)
        context_x, context_y, target_x = self.check_inputs(context_x, context_y, target_x)
        context_x, target_x = self._normalise(context_x), self._normalise(target_x)
        r = self._representation(context_x, context_y, target_x)
        mu, sigma = self._latent(context_x, context_y)
        if samples == 0:
            mean, std = self._decode(target_x, r, mu)
            return Gaussian(mean, std.square(), diagonal=True)
        z = mu + sigma * _standard_normal((samples, *mu.shape), generator, mu)
        means, std = self._decode(target_x, r, z)
        mean = means.mean(dim=0)
        variance = std.square().mean(dim=0) + means.var(dim=0, unbiased=False)
        return Gaussian(mean, variance, diagonal=True)

    def elbo_loss(
        self,
        context_x: torch.Tensor,
        context_y: torch.Tensor,
        target_x: torch.Tensor,
        target_y: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative ELBO per target point, averaged over the batch, and the predicted mean.

        ``(NLL of target_y under one z ~ q(z|C∪T)) / Nt + KL(q(z|C∪T) ‖ q(z|C)) / Nt``;
        returns ``(loss (), mean (B, Nt))``. The latent sample is ``μ + σ ε`` with ``ε`` the
        standard normal draws ``noise (B, latent)`` when given (one per function, so a batch
        split among processes draws what the whole batch would), else from ``generator``.
        """
        context_x, context_y, target_x, target_y = self.check_inputs(
            context_x, context_y, target_x, target_y
        )
        context_x, target_x = self._normalise(context_x), self._normalise(target_x)
        r = self._representation(context_x, context_y, target_x)
        prior_mu, prior_sigma = self._latent(context_x, context_y)
        post_mu, post_sigma = self._latent(
            torch.cat([context_x, target_x], dim=1), torch.cat([context_y, target_y], dim=1)
        )
        if noise is None:
            noise = _standard_normal(post_mu.shape, generator, post_mu)
        elif not isinstance(noise, torch.Tensor) or noise.shape != post_mu.shape:
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must have shape {tuple(post_mu.shape)}, got {got}")
        z = post_mu + post_sigma * noise.to(post_mu)
        mean, std = self._decode(target_x, r, z)
        nll = (
            0.5 * math.log(2.0 * math.pi) + std.log() + 0.5 * ((target_y - mean) / std).square()
        ).sum(dim=-1)
        kl = (
            torch.log(prior_sigma / post_sigma)
            + (post_sigma.square() + (post_mu - prior_mu).square()) / (2.0 * prior_sigma.square())
            - 0.5
        ).sum(dim=-1)
        return ((nll + kl) / target_x.shape[1]).mean(), mean


def _standard_normal(
    shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """``N(0, 1)`` draws on ``like``'s device, reproducible from a generator on any device."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator is None:
        return torch.randn(tuple(shape), device=like.device, dtype=like.dtype)
    draws = torch.randn(tuple(shape), generator=generator, device=generator.device)
    return draws.to(device=like.device, dtype=like.dtype)
