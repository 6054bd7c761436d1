"""The attentive neural process's training losses, as ``loss(model, batch) -> scalar``.

- :func:`elbo_loss`: the negative ELBO of a batch of functions, each with its own latent draw;
- :func:`softc_loss_extra`: the SoftC (PINN-style) baseline's penalty, the mean square of the
  GPME residual (:func:`gpme_residual`) of the mean predicted on a grid.

A batch is ``(context_x (B, Nc, 2), context_y (B, Nc), target_x (B, Nt, 2), target_y (B, Nt),
params (B,), seed (B,))`` — the collated items of :class:`physml.data.GPMEFunctions` or
:class:`physml.data.PointSets`; ``seed`` (int64) keys each function's latent draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pdes import gpme
from pdes.checks import finite, positive
from pdes.problems import generator

from ..data.gpme_sampler import coordinate_axis, gpme_recipe
from ..data.points import grid_points

LossExtra = Callable[[nn.Module, tuple], torch.Tensor]


def latent_noise(seeds: torch.Tensor, size: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws ``(B, size)`` on ``like``'s device, row ``b`` from the CPU generator
    :func:`pdes.problems.generator` ``(seeds[b])`` under the seed scheme active in the call (the
    training loop's process): the same for a function whatever batch or process it is in, and
    under the default scheme distinct for seeds that differ anywhere in their 63 bits
    (``"torch-manual-seed"``: ``manual_seed``, their low 32 bits only). A negative int64 seed
    stands for its 64-bit two's complement, as ``manual_seed`` reads it."""
    rows = [
        torch.randn(size, generator=generator(int(seed) % 2**64))
        for seed in seeds.reshape(-1).tolist()
    ]
    return torch.stack(rows).to(device=like.device, dtype=like.dtype)


def _parts(batch: object) -> tuple:
    if not isinstance(batch, (tuple, list)) or len(batch) != 6:
        length = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise TypeError(
            "batch must be (context_x, context_y, target_x, target_y, params, seed), got "
            f"{type(batch).__name__}{length}"
        )
    return tuple(batch)


def elbo_loss(model: nn.Module, batch: tuple) -> torch.Tensor:
    """Negative ELBO per target point of ``model`` (an ANP) on ``batch``, averaged over it."""
    context_x, context_y, target_x, target_y, _, seeds = _parts(batch)
    noise = latent_noise(seeds, model.latent, context_y)
    loss, _ = model.elbo_loss(context_x, context_y, target_x, target_y, noise=noise)
    return loss


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
    ``dt`` and ``dx`` for smooth ``u``. ``case`` is ``'diffusion'``, ``'pme'`` or ``'stefan'``;
    ``params`` its parameter (``k``, ``m`` or ``u*``) per function ``(B,)``, or one float.
    """
    recipe = gpme_recipe(case)
    t = coordinate_axis("t", t)
    x = coordinate_axis("x", x)
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
    finite("u", u)
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
    ``t × x`` (finite differences, so the mean must be predicted on that whole grid) → ``()``.

    ``model_output_mean`` ``(B, T*X)`` (t-major) or ``(B, T, X)``; ``case`` and ``params`` as in
    :func:`gpme_residual`.
    """
    return gpme_residual(model_output_mean, t, x, case, params).square().mean()


def softc_loss_extra(
    case: str,
    t: torch.Tensor | Sequence[float],
    x: torch.Tensor | Sequence[float],
    softc_weight: float = 1.0,
) -> LossExtra:
    """A loss term ``extra(model, batch)`` for :func:`physml.training.train_anp`:
    ``softc_weight`` × the SoftC penalty of the model's mean (latent mean, from each function's
    context) predicted on the grid ``t × x``, for the GPME ``case`` (``'diffusion'``, ``'pme'``
    or ``'stefan'``; each function's parameter is the batch's ``params``).

    Keep the grid coarse (e.g. 21 × 21): it adds one forward pass over ``T*X`` targets a step.
    """
    gpme_recipe(case)
    weight = positive("softc_weight", softc_weight)
    t_axis, x_axis = coordinate_axis("t", t), coordinate_axis("x", x)
    if t_axis.numel() < 3 or x_axis.numel() < 3:
        raise ValueError("t and x need >= 3 points each for the SoftC residual")
    _uniform_spacing("t", t_axis)
    _uniform_spacing("x", x_axis)
    points = grid_points(t_axis, x_axis).float()

    def extra(model: nn.Module, batch: tuple) -> torch.Tensor:
        context_x, context_y, params = batch[0], batch[1], batch[4]
        targets = points.to(context_x.device).expand(context_x.shape[0], -1, -1)
        mean = model(context_x, context_y, targets, samples=0).mean
        return weight * softc_residual_loss(mean, t_axis, x_axis, case, params)

    # what train_anp records, so that a run with another penalty is not resumed as this one
    extra.description = {
        "softc": case,
        "weight": weight,
        "t": t_axis.tolist(),
        "x": x_axis.tolist(),
    }
    return extra
