"""Argument checks shared by the solvers.

Each failure names the argument, the expectation and what came.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np
import torch

FLOAT = torch.float64
MAX_DIFFUSION_NUMBER = 1e12
"""Largest ``rate · t / L²`` (diffusivity or viscosity) a solver accepts. Far beyond it the field
is steady to round-off, and exponentials of ``rate · t / dx²`` overflow float64 (measured on the
heat solver: from about 1e20)."""


def not_real(value: object) -> bool:
    """Whether ``value`` is or holds booleans (of every kind), complex numbers, text or raw bytes,
    which ``float()`` or ``torch.as_tensor`` would take as real numbers (or drop a part of):
    ``float(bytearray(b"2"))`` is 2.0 and ``torch.as_tensor(b"12")`` the character codes 49, 50."""
    if isinstance(
        value,
        (bool, np.bool_, str, bytes, bytearray, memoryview, complex, np.complexfloating),
    ):
        return True
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool or value.is_complex()
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "bcSU"
    if isinstance(value, (list, tuple)):
        return any(not_real(item) for item in value)
    return False


def _real(name: str, value: float, expected: str) -> float:
    """``value`` as a float; ``TypeError`` naming ``expected`` for what is not a real number:
    booleans (of every kind), complex numbers and strings included, though ``float()`` would
    take some of them."""
    if not_real(value):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {expected}, got {value!r}") from None


def finite_number(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise unless it is a finite real number."""
    number = _real(name, value, "a finite number")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def positive(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is finite and > 0
    (``TypeError`` for a non-number)."""
    number = _real(name, value, "a positive number")
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def non_negative(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is finite and >= 0
    (``TypeError`` for a non-number)."""
    number = _real(name, value, "a non-negative number")
    if not math.isfinite(number) or number < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def parameter(name: str, value: object, expected: str, device=None) -> torch.Tensor:
    """``value``, a number or one per sample, as a float64 tensor of 0 or 1 dimensions.

    ``TypeError`` naming ``name`` and ``expected`` for what is not real numbers (booleans of every
    kind, complex numbers and text included) or does not convert; ``ValueError`` for more than one
    dimension or no value at all. The caller checks the values and the number of samples.
    """
    tensor = real_values(name, value, expected, device)
    if tensor.ndim > 1 or tensor.numel() == 0:
        raise ValueError(f"{name} must be {expected}, got shape {tuple(tensor.shape)}")
    return tensor


def _misread(value: object, nested: bool = False) -> str | None:
    """What ``torch.as_tensor`` would misread in ``value``, in words: masked entries (it reads
    what lies under the mask, or NaN) or, in a list or tuple at any depth, a torch tensor of one
    element and one or more dimensions (it collapses it into a number); ``None`` if neither."""
    if np.ma.isMaskedArray(value):
        masked = np.ma.count_masked(value)
        return f"a masked array with {masked} masked entries" if masked else None
    if nested and isinstance(value, torch.Tensor) and value.ndim > 0 and value.numel() == 1:
        return (
            f"a Tensor of shape {tuple(value.shape)}, which torch would take as a number "
            "(pass one tensor or array, or plain numbers)"
        )
    if isinstance(value, (list, tuple)):
        for item in value:
            if (inner := _misread(item, nested=True)) is not None:
                return f"a {type(value).__name__} holding {inner}"
    return None


def convertible(name: str, value: object, expected: str) -> None:
    """A ``TypeError`` naming ``name`` and ``expected`` for what ``torch.as_tensor`` would
    misread: masked entries, or one-element tensors of one or more dimensions in a list or
    tuple."""
    if (misread := _misread(value)) is not None:
        raise TypeError(f"{name} must be {expected}, got {misread}")


def real_values(name: str, value: object, expected: str, device=None) -> torch.Tensor:
    """``value`` (numbers of any shape) as a float64 tensor; ``TypeError`` naming ``name`` and
    ``expected`` for booleans of every kind, complex numbers, text or what does not convert,
    and for what :func:`convertible` refuses (masked entries, one-element tensors in a list)."""
    if isinstance(value, torch.Tensor):
        real(name, value)
    elif not_real(value):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    else:
        convertible(name, value, expected)
    rows = (
        isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value)
    )
    try:  # rows of numpy arrays stacked by numpy first: torch reads them slowly, warning
        return torch.as_tensor(np.stack(value) if rows else value, dtype=FLOAT, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be {expected}, got {value!r}") from None


def finite_values(name: str, value: object, expected: str, device=None) -> torch.Tensor:
    """:func:`real_values`, and a ``ValueError`` naming ``name`` for NaN or inf among them."""
    tensor = real_values(name, value, expected, device)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite, got {tensor.flatten()[:8].tolist()}")
    return tensor


def holds_values(value: object) -> bool:
    """Whether ``value`` is a tensor, array, list or tuple of at least one dimension: values per
    sample rather than one number."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim > 0
    return isinstance(value, (list, tuple))


def per_sample(
    name: str,
    value: float | Sequence[float] | np.ndarray | torch.Tensor,
    batch: int,
    device=None,
) -> torch.Tensor:
    """A positive coefficient, a number or one value per sample (a tensor, array, list or tuple),
    as a ``(batch,)`` tensor."""
    if holds_values(value):
        out = parameter(name, value, f"a number or hold one value per sample ({batch},)", device)
        if out.numel() == 1:
            out = out.expand(batch)
        if out.shape != (batch,):
            raise ValueError(
                f"{name} must be a number or hold one value per sample ({batch},), "
                f"got shape {tuple(out.shape)}"
            )
        if not (torch.isfinite(out).all() and (out > 0).all()):
            raise ValueError(f"{name} must be finite and > 0 for every sample, got {out.tolist()}")
        return out
    number = positive(name, value.item() if isinstance(value, torch.Tensor) else value)
    return torch.full((batch,), number, dtype=FLOAT, device=device)


def grid_1d(grid: object) -> None:
    """A ``TypeError`` naming ``grid`` unless it is a :class:`pdes.Grid1D`."""
    from .grid import Grid1D

    if not isinstance(grid, Grid1D):
        raise TypeError(f"grid must be a pdes.Grid1D, got {type(grid)}")


def on_grid(name: str, value: object, grid: object) -> torch.Tensor:
    """``value``, a tensor ``(..., grid.n)`` of node values on the :class:`pdes.Grid1D`
    ``grid``, as it came; :func:`grid_1d` and :func:`last_axis` say what is wrong otherwise."""
    grid_1d(grid)
    return last_axis(name, value, grid.n)


def last_axis(name: str, value: object, n: int) -> torch.Tensor:
    """``value``, a tensor ``(..., n)``, as it came; a ``TypeError`` or ``ValueError`` naming
    ``name`` for what is not a tensor or has another number of entries along its last axis."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., {n}), got {type(value)}")
    if value.ndim == 0 or value.shape[-1] != n:
        raise ValueError(
            f"{name} must have {n} entries along its last axis to match the grid, "
            f"got shape {tuple(value.shape)}"
        )
    return value


def finite(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or a ``ValueError`` naming ``name`` if it holds NaN or inf."""
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return tensor


def integer(value: object) -> int | None:
    """``value`` as an int if it is a Python, numpy or 0-d torch integer; ``None`` for anything
    else, bools included (``True``, ``np.bool_``, 0-d bool arrays and tensors) and tensors of one
    element and one or more dimensions (which ``operator.index`` would take)."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0:
        return None
    dtype = getattr(value, "dtype", None)
    if isinstance(value, (bool, np.bool_)) or dtype is torch.bool or dtype == np.dtype(bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise unless it is an integer >= ``minimum``.

    What :func:`integer` takes counts: Python and numpy integers, 0-d integer arrays and
    tensors; booleans (of any kind) do not.
    """
    number = integer(value)
    if number is None:
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return number


def diffusion_number(name: str, rate: float, t_end: float, length: float) -> None:
    """Raise ``ValueError`` naming ``name`` if ``rate · t_end / length²`` exceeds
    :data:`MAX_DIFFUSION_NUMBER` (``rate`` the largest diffusivity or viscosity, ``length`` the
    shortest side of the domain)."""
    number = rate * t_end / length**2
    if number > MAX_DIFFUSION_NUMBER:
        raise ValueError(
            f"{name} up to {rate:.3g} is too large for times up to {t_end:.3g} on a length "
            f"{length:.3g}: {name}*t/L^2 = {number:.3g} exceeds {MAX_DIFFUSION_NUMBER:.0e} "
            "(the field is steady to round-off long before)"
        )


def field(
    name: str,
    value: torch.Tensor,
    n: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A batch of 1-D fields ``(sample, x)`` as float64, checked for shape and finiteness.

    A single field ``(x,)`` is promoted to a batch of one.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (sample, x), got {type(value)}")
    real(name, value)
    if value.ndim == 1:
        value = value.unsqueeze(0)
    if value.ndim != 2:
        raise ValueError(f"{name} must have shape (sample, x), got shape {tuple(value.shape)}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(value.shape)}")
    if n is not None and value.shape[-1] != n:
        raise ValueError(
            f"{name} must have {n} points along x to match the grid, got shape {tuple(value.shape)}"
        )
    finite(name, value)
    return value.to(dtype=FLOAT, device=device if device is not None else value.device)


def times(name: str, value: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Output times as a float64 CPU tensor: finite, at least one, non-decreasing from >= 0."""
    if not isinstance(value, torch.Tensor):
        if not_real(value):
            raise TypeError(f"{name} must be a sequence of numbers, got {value!r}")
        convertible(name, value, "a sequence of numbers")
    try:  # Python numbers straight to float64: through float32 they would lose digits
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=FLOAT)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a sequence of numbers, got {value!r}") from None
    real(name, t)
    if t.ndim > 1:
        raise ValueError(f"{name} must be a 1-D sequence of times, got shape {tuple(t.shape)}")
    t = t.to(dtype=FLOAT).flatten().cpu()
    values = t.tolist()  # a few numbers: Python checks them faster than torch calls would
    if not values:
        raise ValueError(f"{name} must hold at least one time, got none")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    if min(values) < 0:
        raise ValueError(f"{name} must be >= 0, got minimum {min(values)}")
    if any(later < earlier for earlier, later in zip(values[:-1], values[1:], strict=True)):
        raise ValueError(f"{name} must be non-decreasing, got {values}")
    return t


def real(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` if it holds real numbers (not complex, not booleans), else a ``TypeError``."""
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    return value


def floating_dtype(name: str, dtype: object) -> torch.dtype:
    """``dtype`` if it is a real floating-point ``torch.dtype``, else a ``TypeError`` naming
    ``name`` (a string, an integer or complex dtype)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def choice(name: str, value: str, options: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``options``, else raise a ``ValueError`` listing them."""
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def finite_result(name: str, value: torch.Tensor, time: float) -> None:
    """Raise ``SolverError`` if a solution has blown up."""
    from .errors import SolverError

    if not torch.isfinite(value).all():
        raise SolverError(f"{name}: the solution became NaN or inf at t={time:.6g}")
