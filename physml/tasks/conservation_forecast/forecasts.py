"""Forecast ensembles ``(M, N, T_out, 1, H, W)`` in physical units from the trained models."""

from __future__ import annotations

import torch
from torch import nn

from pdes.grid import Grid2D

from ...constraints import KnowledgeControl
from ...models.prediff import PreDiff
from ..prediff import controlled_sample, sample
from .data import Scale, Units, Windows, grid_of


@torch.no_grad()
def deep_ensemble(members: list[nn.Module], context: torch.Tensor, units: Units) -> torch.Tensor:
    """Earthformer members ``(M, N, T_out, 1, H, W)`` float64, physical units."""
    x = units.to_net(context)
    return torch.stack([units.tracer(m(x)) for m in members])


@torch.no_grad()
def rollout_ensemble(members: list[nn.Module], context: torch.Tensor, t_out: int, units: Units):
    """FNO members rolled out ``t_out`` steps from the last context state, tracer only."""
    runs = []
    for member in members:
        state, frames = units.to_net(context[:, -1]), []
        for _ in range(t_out):
            state = member(state)
            frames.append(state[:, :1])
        runs.append(units.tracer(torch.stack(frames, 1)))
    return torch.stack(runs)


def member_forecasts(
    model: str, members: list[nn.Module], context: torch.Tensor, t_out: int, units: Units
) -> torch.Tensor:
    """The forecasts ``(M, N, T_out, 1, H, W)`` of a deep ensemble of family ``model``: one pass
    of each Earthformer member, a ``t_out``-step rollout of each FNO member."""
    if model == "earthformer":
        return deep_ensemble(members, context, units)
    if model == "fno":
        return rollout_ensemble(members, context, t_out, units)
    raise ValueError(f"model must be 'earthformer' or 'fno' (a deep ensemble), got {model!r}")


def mass_of(grid: Grid2D, units: Units):
    """Knowledge control's closed-form quantity: the total mass of decoded frames
    ``(N, T, 1, H, W)`` → ``(N, T)``, in network units (differentiable)."""

    def quantity(frames: torch.Tensor) -> torch.Tensor:
        return grid.integrate(frames[:, :, 0])

    return quantity


def prediff_ensembles(
    prediff: PreDiff,
    windows_: Windows,
    scale: Scale,
    units: Units,
    kc_scale: float,
    seed: int,
) -> dict[str, tuple[torch.Tensor, float]]:
    """PreDiff's members without and with knowledge control (total mass toward the known one):
    ``{"raw"|"kc": (samples (M, N, T_out, 1, H, W) float64, seconds)}``."""
    context = units.to_net(windows_.context[:, :, :1])
    members, steps, batch = scale.prediff_members, scale.ddim_steps, scale.sample_batch
    plain = sample(prediff, context, members, steps, seed, batch)
    target = (windows_.known_mass / units.scales[0]).to(torch.float32)
    control = KnowledgeControl(
        mass_of(grid_of(scale), units), target, kc_scale, on="frames", normalized=True
    )
    guided = controlled_sample(prediff, control, context, target, members, steps, seed, batch)
    return {
        "raw": (units.tracer(plain.samples), plain.seconds),
        "kc": (units.tracer(guided.samples), guided.seconds),
    }
