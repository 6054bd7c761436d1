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
Networks run in float32. :func:`train_anp` trains with Adam, resumable from atomic checkpoints;
:func:`gpme_sampler` draws batches of GPME functions from the closed forms in :mod:`pdes.gpme`;
:func:`softc_residual_loss` is the SoftC (PINN-style) baseline's penalty.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from pdes import gpme
from pdes.checks import positive_int as _positive_int

from .._io import atomic_path
from ..outputs import Gaussian
from .common import grid_points

__all__ = [
    "AttentiveNeuralProcess",
    "GPMESampler",
    "gpme_residual",
    "gpme_sampler",
    "softc_loss_extra",
    "softc_residual_loss",
    "train_anp",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(context_x (B, Nc, 2), context_y (B, Nc), target_x (B, Nt, 2), target_y (B, Nt),
params (B,))``."""

Sampler = Callable[[torch.Generator], Batch]
LossExtra = Callable[[nn.Module, Batch], torch.Tensor]

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
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return value


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


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


class AttentiveNeuralProcess(nn.Module):
    """ANP over points ``(t, x)``: ``forward(context_x (B, Nc, 2), context_y (B, Nc), target_x (B,
    Nt, 2)) -> Gaussian`` with mean and diagonal variance ``(B, Nt)``.

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
        _positive_int("attention_layers", attention_layers, 0)
        self.min_std = _positive("min_std", min_std)
        self.eval_samples = _positive_int("eval_samples", eval_samples, 0)
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
        from ``q(z | context)`` and adds the spread of their means to the variance.
        """
        samples = self.eval_samples if samples is None else _positive_int("samples", samples, 0)
        context_x, context_y, target_x = self.check_inputs(context_x, context_y, target_x)
        context_x, target_x = self._normalise(context_x), self._normalise(target_x)
        r = self._representation(context_x, context_y, target_x)
        mu, sigma = self._latent(context_x, context_y)
        if samples == 0:
            mean, std = self._decode(target_x, r, mu)
            return Gaussian(mean, std.square())
        z = mu + sigma * _standard_normal((samples, *mu.shape), generator, mu)
        means, std = self._decode(target_x, r, z)
        mean = means.mean(dim=0)
        variance = std.square().mean(dim=0) + means.var(dim=0, unbiased=False)
        return Gaussian(mean, variance)

    def elbo_loss(
        self,
        context_x: torch.Tensor,
        context_y: torch.Tensor,
        target_x: torch.Tensor,
        target_y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative ELBO per target point, averaged over the batch, and the predicted mean.

        ``(NLL of target_y under one z ~ q(z|C∪T)) / Nt + KL(q(z|C∪T) ‖ q(z|C)) / Nt``;
        returns ``(loss (), mean (B, Nt))``.
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
        z = post_mu + post_sigma * _standard_normal(post_mu.shape, generator, post_mu)
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
    if generator is None:
        return torch.randn(tuple(shape), device=like.device, dtype=like.dtype)
    draws = torch.randn(tuple(shape), generator=generator, device=generator.device)
    return draws.to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------- training


def _move(batch: Batch, device: torch.device) -> Batch:
    if not isinstance(batch, (tuple, list)) or len(batch) != 5:
        raise TypeError(
            "sampler must return (context_x, context_y, target_x, target_y, params), got "
            f"{type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    return tuple(torch.as_tensor(v).to(device) for v in batch)  # type: ignore[return-value]


def _load_checkpoint(path: Path, model: nn.Module, optimizer, generator, seed: int, steps: int):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        step = int(state["step"])
        losses = state["losses"].tolist()
        saved_seed = int(state["seed"])
    except Exception as error:
        raise ValueError(f"checkpoint {str(path)!r} could not be read: {error}") from error
    if saved_seed != seed:
        raise ValueError(
            f"checkpoint {str(path)!r} was written with seed={saved_seed}, got seed={seed}; "
            "pass the same seed or resume=False"
        )
    if step > steps:
        raise ValueError(
            f"checkpoint {str(path)!r} is at step {step}, beyond the requested steps={steps}"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match this model or run: {error}"
        ) from error
    return step, losses


def _save_checkpoint(path: Path, model, optimizer, generator, seed: int, step: int, losses):
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "seed": seed,
        "step": step,
        "losses": torch.tensor(losses, dtype=torch.float64),
    }
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def train_anp(
    model: AttentiveNeuralProcess,
    sampler: Sampler,
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    loss_extra: LossExtra | None = None,
    checkpoint_every: int = 100,
) -> list[float]:
    """Train with Adam on the negative ELBO (+ ``loss_extra(model, batch)`` if given) for
    ``steps`` batches ``sampler(generator)``; returns the loss of every step ``0 .. steps-1``.

    Deterministic given ``seed`` (one CPU generator drives the sampler and the latent draws).
    With ``checkpoint`` the state is saved atomically every ``checkpoint_every`` steps and at the
    end, and with ``resume`` a run continues from the saved step, matching an uninterrupted run.
    The model is left in eval mode.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "elbo_loss"):
        raise TypeError(
            f"model must be an AttentiveNeuralProcess (with elbo_loss), got {type(model).__name__}"
        )
    if not callable(sampler):
        raise TypeError(f"sampler must be callable(generator) -> batch, got {sampler!r}")
    if loss_extra is not None and not callable(loss_extra):
        raise TypeError(f"loss_extra must be callable(model, batch) or None, got {loss_extra!r}")
    steps = _positive_int("steps", steps, 0)
    lr = _positive("lr", lr)
    seed = _positive_int("seed", seed, 0)
    checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    path = None if checkpoint is None else Path(checkpoint)
    start, losses = 0, []
    if path is not None and resume and path.exists():
        start, losses = _load_checkpoint(path, model, optimizer, generator, seed, steps)
    model.train()
    bar = tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        desc="ANP",
        disable=None if progress else True,
    )
    for step in bar:
        batch = _move(sampler(generator), device)
        loss, _ = model.elbo_loss(*batch[:4], generator=generator)
        if loss_extra is not None:
            loss = loss + loss_extra(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at step {step}: loss is {loss.item()} (try a smaller lr)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        done = step + 1
        if path is not None and (done % checkpoint_every == 0 or done == steps):
            _save_checkpoint(path, model, optimizer, generator, seed, done, losses)
    model.eval()
    return losses


# --------------------------------------------------------------------------- GPME data


def _recipe(case: str) -> gpme._GPMERecipe:
    recipes = {problem.name: problem for problem in gpme.PROBLEMS}
    if not isinstance(case, str) or case not in recipes:
        raise ValueError(f"case must be one of {sorted(recipes)}, got {case!r}")
    return recipes[case]  # type: ignore[return-value]


def _axis(name: str, value: object) -> torch.Tensor:
    try:
        axis = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-D array of coordinates, got {value!r}") from None
    if axis.ndim != 1 or axis.numel() < 2:
        raise ValueError(
            f"{name} must be a 1-D array of >= 2 points, got shape {tuple(axis.shape)}"
        )
    if not torch.isfinite(axis).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if (axis.diff() <= 0).any():
        raise ValueError(f"{name} must be strictly increasing")
    return axis.cpu()


class GPMESampler:
    """Batches of GPME functions from their closed forms (``case`` 'diffusion' | 'pme' | 'stefan').

    Each function draws its parameter uniformly from ``param_range`` (default the recipe's: k in
    [1, 5], m in [1, 6], u* in [0.55, 0.7]) and its ``n_context`` context points as
    ``context_times`` random grid times × ``n_context / context_times`` random grid x (the
    ProbConserv protocol: 10 × 10); targets are ``n_target`` distinct random grid points, or the
    whole grid in t-major order when ``None``. Grids default to the recipe's 201 × 201.

    Calling it with a generator returns float32 ``(context_x (B, Nc, 2), context_y (B, Nc),
    target_x (B, Nt, 2), target_y (B, Nt), params (B,))``; points are ``(t, x)``.
    """

    def __init__(
        self,
        case: str,
        batch: int,
        n_context: int = 100,
        n_target: int | None = None,
        t_grid: Sequence[float] | torch.Tensor | None = None,
        x_grid: Sequence[float] | torch.Tensor | None = None,
        param_range: tuple[float, float] | None = None,
        context_times: int = 10,
    ) -> None:
        self.recipe = _recipe(case)
        self.case = case
        self.batch = _positive_int("batch", batch)
        defaults = self.recipe.settings()
        self.t = _axis("t_grid", self.recipe.times(defaults) if t_grid is None else t_grid)
        self.x = _axis(
            "x_grid", self.recipe.grid(defaults).coordinates() if x_grid is None else x_grid
        )
        if (self.t < 0).any():
            raise ValueError(f"t_grid must be >= 0, got minimum {self.t.min().item()}")
        n_t, n_x = self.t.numel(), self.x.numel()
        self.n_context = _positive_int("n_context", n_context)
        self.context_times = _positive_int("context_times", context_times)
        if n_context % context_times:
            raise ValueError(
                f"n_context must be a multiple of context_times={context_times} (times × x), "
                f"got {n_context}"
            )
        self.context_points = n_context // context_times
        if context_times > n_t or self.context_points > n_x:
            raise ValueError(
                f"n_context={n_context} as {context_times} times × {self.context_points} x needs "
                f"a grid of at least that size, got {n_t} times × {n_x} x"
            )
        self.n_target = None if n_target is None else _positive_int("n_target", n_target)
        if self.n_target is not None and self.n_target > n_t * n_x:
            raise ValueError(f"n_target must be <= {n_t * n_x} grid points, got {n_target}")
        low_name, high_name = self.recipe.bounds
        if param_range is None:
            param_range = (defaults[low_name], defaults[high_name])
        if not isinstance(param_range, (tuple, list)) or len(param_range) != 2:
            raise TypeError(f"param_range must be a pair (low, high), got {param_range!r}")
        low, high = param_range
        self.recipe.checked({low_name: low, high_name: high})
        self.param_range = (float(low), float(high))
        self.points = grid_points(self.t, self.x)

    @property
    def input_range(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((t_min, t_max), (x_min, x_max))`` of the grid, for the model's ``input_range``."""
        return (
            (self.t[0].item(), self.t[-1].item()),
            (self.x[0].item(), self.x[-1].item()),
        )

    def exact(self, params: torch.Tensor) -> torch.Tensor:
        """The functions on the full grid, float64 ``(B, T, X)``."""
        return self.recipe.exact(self.x, self.t, params.to(torch.float64))

    def __call__(self, generator: torch.Generator) -> Batch:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        b, n_t, n_x = self.batch, self.t.numel(), self.x.numel()
        low, high = self.param_range
        params = low + (high - low) * torch.rand(b, generator=generator, dtype=torch.float64)
        u = self.exact(params).reshape(b, n_t * n_x)
        times = torch.rand(b, n_t, generator=generator).argsort(dim=1)[:, : self.context_times]
        places = torch.rand(b, n_x, generator=generator).argsort(dim=1)[:, : self.context_points]
        context = (times[:, :, None] * n_x + places[:, None, :]).reshape(b, -1)
        if self.n_target is None:
            target = torch.arange(n_t * n_x).expand(b, -1)
        else:
            scores = torch.rand(b, n_t * n_x, generator=generator)
            target = scores.topk(self.n_target, dim=1).indices
        return (
            self.points[context].float(),
            u.gather(1, context).float(),
            self.points[target].float(),
            u.gather(1, target).float(),
            params.float(),
        )


gpme_sampler = GPMESampler
"""The name the tasks and notebooks use for :class:`GPMESampler`."""


# --------------------------------------------------------------------------- SoftC


def _uniform_spacing(name: str, axis: torch.Tensor) -> float:
    steps = axis.diff()
    h = (axis[-1] - axis[0]).item() / (axis.numel() - 1)
    if (steps - h).abs().max().item() > 1e-4 * h:
        raise ValueError(f"{name} must be uniformly spaced for the finite differences")
    return h


def gpme_residual(
    u: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    x: torch.Tensor | Sequence[float],
    case: str,
    params: torch.Tensor | float,
) -> torch.Tensor:
    """GPME residual ``u_t − Φ(u)_xx`` by central differences at interior grid points.

    ``u (B, T*X)`` (t-major) or ``(B, T, X)`` on uniform axes ``t (T,)``, ``x (X,)`` (``T, X >=
    3``); ``Φ`` is the case's Kirchhoff potential from :mod:`pdes.gpme` (``k u``, ``u^{m+1}/(m+1)``,
    ``(u − u*)_+``), so ``Φ(u)_xx = ∂x(k(u) u_x)``. Returns ``(B, T-2, X-2)``, second order in
    ``dt`` and ``dx`` for smooth ``u``.
    """
    recipe = _recipe(case)
    t = _axis("t", t)
    x = _axis("x", x)
    n_t, n_x = t.numel(), x.numel()
    if n_t < 3 or n_x < 3:
        raise ValueError(f"t and x need >= 3 points each for the residual, got {n_t} and {n_x}")
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor (batch, T*X) or (batch, T, X), got {type(u)}")
    if u.ndim == 2 and u.shape[1] == n_t * n_x:
        u = u.reshape(u.shape[0], n_t, n_x)
    if u.ndim != 3 or u.shape[1:] != (n_t, n_x):
        raise ValueError(
            f"u must have shape (batch, {n_t * n_x}) or (batch, {n_t}, {n_x}) to match t and x, "
            f"got {tuple(u.shape)}"
        )
    if not torch.isfinite(u).all():
        raise ValueError("u contains NaN or inf values")
    batch = u.shape[0]
    values = torch.as_tensor(params, dtype=torch.float64).detach().cpu().reshape(-1)
    if values.numel() not in (1, batch):
        raise ValueError(
            f"params must hold one {recipe.parameter} per function ({batch}) or one in all, got "
            f"{values.numel()}"
        )
    diffusivity = {"diffusion": gpme.constant_k, "pme": gpme.pme_k, "stefan": gpme.stefan_k}[case]
    potential = diffusivity(values).potential
    phi = potential(u.reshape(batch, n_t * n_x)).reshape(batch, n_t, n_x).to(u.dtype)
    dt, dx = _uniform_spacing("t", t), _uniform_spacing("x", x)
    u_t = (u[:, 2:, 1:-1] - u[:, :-2, 1:-1]) / (2.0 * dt)
    phi_xx = (phi[:, 1:-1, 2:] - 2.0 * phi[:, 1:-1, 1:-1] + phi[:, 1:-1, :-2]) / dx**2
    return u_t - phi_xx


def softc_residual_loss(
    model_output_mean: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    x: torch.Tensor | Sequence[float],
    case: str,
    params: torch.Tensor | float,
) -> torch.Tensor:
    """SoftC penalty: mean square of :func:`gpme_residual` of the predicted mean on the grid
    ``t × x`` (finite differences, so the mean must be predicted on that whole grid) → ``()``."""
    return gpme_residual(model_output_mean, t, x, case, params).square().mean()


def softc_loss_extra(
    case: str,
    t: torch.Tensor | Sequence[float],
    x: torch.Tensor | Sequence[float],
    softc_weight: float = 1.0,
) -> LossExtra:
    """``loss_extra`` for :func:`train_anp`: ``softc_weight`` × the SoftC penalty of the model's
    mean (latent mean, from each batch's context) predicted on the grid ``t × x``.

    Keep the grid coarse (e.g. 21 × 21): it adds one forward pass over ``T*X`` targets a step.
    """
    _recipe(case)
    weight = float(_positive("softc_weight", softc_weight))
    t_axis, x_axis = _axis("t", t), _axis("x", x)
    if t_axis.numel() < 3 or x_axis.numel() < 3:
        raise ValueError("t and x need >= 3 points each for the SoftC residual")
    _uniform_spacing("t", t_axis)
    _uniform_spacing("x", x_axis)
    points = grid_points(t_axis, x_axis).float()

    def extra(model: nn.Module, batch: Batch) -> torch.Tensor:
        context_x, context_y, _, _, params = batch
        targets = points.to(context_x.device).expand(context_x.shape[0], -1, -1)
        mean = model(context_x, context_y, targets, samples=0).mean
        return weight * softc_residual_loss(mean, t_axis, x_axis, case, params)

    return extra
