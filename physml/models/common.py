"""Helpers shared by the probabilistic surrogates: (t, x) grids, argument checks, progress bars.

A *function* is one PDE solution ``u(t, x)``; a full grid of ``T × X`` points is flattened in
t-major order (``k = i·X + j`` is ``(t[i], x[j])``), so a prediction ``(B, T·X)`` reshapes to
``(B, T, X)``: one time slice per row, as :func:`physml.mass_conservation` expects.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import as_tensor
from .._progress import progress_bar
from ..data.points import grid_points

# grid_points (home: physml.data.points) and progress_bar stay here as documented names of
# this module's reference page; inside physml they are imported from their homes.
__all__ = ["grid_points", "progress_bar", "unflatten", "with_parameters"]


def pad_circularly(model: torch.nn.Module, periodic: bool) -> bool:
    """With ``periodic``, make every padded ``Conv2d`` of ``model`` wrap around (same weights;
    a field on a periodic domain has no edge for zero padding to invent); returns ``periodic``.
    """
    if not isinstance(periodic, bool):
        raise TypeError(f"periodic must be True or False, got {periodic!r}")
    if periodic:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and _pads(module.padding):
                module.padding_mode = "circular"
    return periodic


def _pads(padding: str | tuple[int, ...]) -> bool:
    """Whether a convolution's ``padding`` (``"same"``, ``"valid"`` or sizes) adds any border."""
    return padding == "same" if isinstance(padding, str) else any(p > 0 for p in padding)


def unflatten(values: torch.Tensor, T: int, X: int) -> torch.Tensor:
    """Values at :func:`grid_points` back on the grid: ``(..., T·X)`` → ``(..., T, X)``."""
    if not isinstance(values, torch.Tensor) or values.ndim < 1:
        raise TypeError(f"values must be a tensor of shape (..., T*X), got {type(values).__name__}")
    for name, size in (("T", T), ("X", X)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {size!r}")
    if values.shape[-1] != T * X:
        raise ValueError(
            f"values must have T*X = {T * X} entries on the last axis, got {tuple(values.shape)}"
        )
    return values.reshape(*values.shape[:-1], T, X)


def with_parameters(params: object, points: object) -> torch.Tensor:
    """Model inputs for several functions: ``params (B,)`` or ``(B, p)`` and ``points (N, 2)``
    → ``(B, N, p + 2)`` rows ``(params..., t, x)`` (the layout :class:`DeepEnsemble` takes)."""
    points = as_tensor("points", points, "(N, 2)", 2, last=2, dtype=_floating(points))
    params = as_tensor("params", params, "(B,) or (B, p)", (1, 2), dtype=points.dtype)
    params = params.to(points.device)
    if params.ndim == 1:
        params = params[:, None]
    B, N = params.shape[0], points.shape[0]
    return torch.cat([params[:, None, :].expand(B, N, -1), points[None].expand(B, N, 2)], dim=-1)


def model_dtype(model: nn.Module, fallback: torch.dtype) -> torch.dtype:
    """The dtype of the model's first floating parameter (``fallback`` for parameter-free ones)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return fallback


SIXTEEN_BIT_ADAM = {
    torch.float16: (
        "Adam's second moment of a gradient entry below ~5e-3 underflows to 0 and its eps 1e-8 "
        "is 0 in float16, so its update divides by 0 (inf or NaN)"
    ),
    torch.bfloat16: (
        "an Adam step (about lr) smaller than half a weight's spacing (|w|/512 to |w|/256) "
        "rounds away, so at lr 1e-3 a weight of size 1 never moves"
    ),
}
"""Why Adam fails on weights of each 16-bit dtype."""


def sixteen_bit_weights(model: nn.Module) -> str | None:
    """Why Adam trains ``model``'s 16-bit trainable parameters badly, and what works instead;
    ``None`` where they are all 32 or 64 bits."""
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    for dtype, why in SIXTEEN_BIT_ADAM.items():
        if dtype in dtypes:
            return (
                f"{str(dtype).removeprefix('torch.')} weights: {why}; keep float32 weights and "
                "run the forward under torch.autocast"
            )
    return None


def in_model_dtype(model: nn.Module, x: object) -> object:
    """A floating tensor ``x`` in ``model``'s dtype (float64 input into a float32 network, as
    :class:`~physml.models.UNet` takes it); anything else as it came, for the model's checks."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.to(model_dtype(model, x.dtype))
    return x


def _floating(value: object) -> torch.dtype:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.dtype
    return torch.float64
