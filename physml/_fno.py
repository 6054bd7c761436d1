"""What the models and the constraints both read of a neuralop FNO's dtypes, importing neither.

A model or spectral layer whose class declares ``computes_in_complex64 = True`` (the toolkit's
:class:`~physml.models.spectral.CheckedFNO` and :class:`~physml.models.spectral.LeanSpectralConv`)
computes in float32 with complex64 spectral weights only.
"""

from __future__ import annotations

import torch
from torch import nn

HALF_DTYPES = (torch.bfloat16, torch.float16)
"""The 16-bit dtypes an FNO takes in float32 (or under ``torch.autocast``)."""

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_CASTS = {torch.float64: ".double() or .to(torch.float64)", torch.float16: ".half()"}


def fno_dtype_problem(model: nn.Module, x: object) -> str | None:
    """Why the neuralop FNO ``model`` cannot run on ``x`` for their dtypes, or ``None``.

    An FNO or spectral layer that declares ``computes_in_complex64`` computes in float32 with
    complex64 spectral weights only. neuralop's own FNO takes real weights in float32 or float64
    with spectral weights to match (``.double()`` leaves them complex64, ``.to(torch.float64)``
    makes them real), and a float32 or float64 ``x`` in the real weights' dtype. neuralop 2.0 runs
    its spectral convolution in complex64 whatever the weights' dtype (it allocates the Fourier
    output as ``cfloat``), so float64 weights give spectral parts accurate to float32 only; the
    boundary conditions stay exact.
    """
    weights = next((p for p in model.parameters() if not p.is_complex()), None)
    if weights is None:
        return None
    convs = getattr(getattr(model, "fno_blocks", None), "convs", ())
    float32_only = any(_computes_in_complex64(module) for module in (model, *convs))
    if not float32_only and weights.dtype not in _COMPLEX:
        return None
    real = torch.float32 if float32_only else weights.dtype
    spectral = [dtype for dtype in map(_spectral_dtype, convs) if dtype is not None]
    if weights.dtype != real or any(dtype != _COMPLEX[real] for dtype in spectral):
        found = f"the FNO's weights are {weights.dtype} and its spectral weights "
        found += f"{sorted(set(map(str, spectral)))}: only float32 FNOs are supported"
        if float32_only:
            cast = weights.dtype if weights.dtype != real else _real(spectral, real)
            half = cast in HALF_DTYPES
            autocast = " (for 16-bit compute run it under torch.autocast)" if half else ""
            return (
                f"{found}, {str(cast).removeprefix('torch.')} ones (e.g. after "
                f"{_CASTS.get(cast, f'.to({cast})')}) are not — its spectral layers compute in "
                f"complex64; build the model anew in float32{autocast}"
            )
        return (
            f"{found} as built — .double() leaves the spectral weights complex64 and "
            ".to(torch.float64) drops their imaginary part; build the model anew in float32 (or "
            "cast every parameter by hand, complex ones to complex128: neuralop 2.0 still runs "
            "its spectral convolution in complex64, so the spectral parts are float32-accurate "
            "while the boundary conditions stay exact)"
        )
    if not isinstance(x, torch.Tensor) or x.dtype not in _COMPLEX or x.dtype == real:
        return None
    if float32_only:
        return (
            f"x has dtype {x.dtype} but the FNO's weights are {real} (its spectral layers "
            "compute in complex64): pass x.float()"
        )
    fix = "x.float()" if real == torch.float32 else "x.double()"
    return f"x has dtype {x.dtype} but the FNO's weights are {real}: pass {fix}"


def _computes_in_complex64(module: nn.Module) -> bool:
    return bool(getattr(type(module), "computes_in_complex64", False))


def _real(spectral: list[torch.dtype], real: torch.dtype) -> torch.dtype:
    """The real dtype of the first spectral weight not in ``real``'s complex dtype."""
    wrong = next(dtype for dtype in spectral if dtype != _COMPLEX[real])
    return wrong.to_real() if wrong.is_complex else wrong


def _spectral_dtype(conv: nn.Module) -> torch.dtype | None:
    """The dtype of ``conv``'s spectral weight (a tltorch tensor's own), ``None`` without one."""
    weight = getattr(conv, "weight", None)
    return getattr(getattr(weight, "tensor", weight), "dtype", None)
