"""The kinds of model output that constraints act on.

A model may return a plain tensor (a deterministic prediction), a :class:`Gaussian` or an
:class:`Ensemble`. Predictions over a 1-D grid of ``n`` points have the points on the last axis and
any number of leading axes (sample, time slice, ...): ``mean (..., n)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ._checks import NonFiniteError
from .errors import user_stacklevel


def _finite(name: str, value: torch.Tensor) -> None:
    """A :class:`~physml._checks.NonFiniteError` naming ``name`` if ``value`` holds NaN or inf."""
    # a sum is NaN/inf if any entry is (or if finite entries overflow): one cheap pass first
    if value.numel() and not math.isfinite(value.sum().item()):
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteError(f"{name} contains NaN or inf values")


def safe_sqrt(values: torch.Tensor) -> torch.Tensor:
    """``√values`` of ``values >= 0`` (e.g. variances clamped at 0), with every derivative 0
    where a value is 0: a plain ``sqrt``'s infinite slope there makes a zero gradient upstream
    NaN, and any second derivative through it NaN."""
    positive = values > 0
    return torch.where(positive, torch.where(positive, values, 1.0).sqrt(), 0.0)


def _real_tensor(name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")


def _base_readings(base: torch.Tensor, factor: torch.Tensor) -> tuple[bool, bool]:
    """Whether ``base`` beside ``factor (..., n, m)`` can be read as variances (shaped like
    ``factor`` without its last axis) and as a full ``(..., n, n)`` matrix (leading axes
    broadcasting with ``factor``'s)."""
    n = factor.shape[-2]
    diagonal = tuple(base.shape) == tuple(factor.shape[:-1])
    full = base.ndim >= 2 and tuple(base.shape[-2:]) == (n, n)
    if full:
        try:
            torch.broadcast_shapes(base.shape[:-2], factor.shape[:-2])
        except RuntimeError:
            full = False
    return diagonal, full


@dataclass(frozen=True)
class LowRankCovariance:
    """``base − factor @ factorᵀ``: a covariance after a rank-``m`` update, kept unassembled.

    ``base`` is diagonal ``(..., n)`` (variances) or full ``(..., n, n)``; ``factor`` is
    ``(..., n, m)``. A full base may be shared by the factor's slices (``(n, n)`` beside
    ``(B, n, m)``). ``diagonal`` says which ``base`` is; left ``None`` it is read from the shapes,
    and must be given where both fit (a base ``(B, n)`` with ``B == n`` beside ``(B, n, m)``).
    Never materialised as a new ``n × n`` matrix unless asked (:meth:`dense`), so a constraint
    costs one pass over ``base``; :meth:`variance` costs ``O(n m)`` more.
    """

    base: torch.Tensor
    factor: torch.Tensor
    diagonal: bool | None = None

    def __post_init__(self) -> None:
        if self.diagonal is not None and not isinstance(self.diagonal, bool):
            raise TypeError(f"diagonal must be True, False or None, got {self.diagonal!r}")
        tensors = isinstance(self.base, torch.Tensor) and isinstance(self.factor, torch.Tensor)
        if not tensors or self.factor.ndim < 2:
            return  # a Gaussian holding it names the problem
        as_diagonal, as_full = _base_readings(self.base, self.factor)
        shapes = f"base {tuple(self.base.shape)} beside factor {tuple(self.factor.shape)}"
        n = self.factor.shape[-2]
        if self.diagonal is None and as_diagonal and as_full and n > 1:  # n = 1: the same
            raise ValueError(
                f"LowRankCovariance: {shapes} is ambiguous: it may be variances, one row per "
                f"slice, or one full ({n}, {n}) matrix shared by the slices; pass diagonal=True "
                "or diagonal=False (or expand a shared full base to one per slice)"
            )
        if self.diagonal is True and not as_diagonal:
            raise ValueError(
                f"LowRankCovariance: diagonal=True needs base of shape "
                f"{tuple(self.factor.shape[:-1])} (factor's without its last axis), got {shapes}"
            )
        if self.diagonal is False and not as_full:
            raise ValueError(
                f"LowRankCovariance: diagonal=False needs a full base (..., {n}, {n}) whose "
                f"leading axes broadcast with the factor's, got {shapes}"
            )
        if self.diagonal is None and (as_diagonal or as_full):
            object.__setattr__(self, "diagonal", as_diagonal)

    @property
    def base_is_diagonal(self) -> bool:
        """``base`` holds variances (``diagonal``, or read from the shapes when ``None``)."""
        if self.diagonal is not None:
            return self.diagonal
        return _base_readings(self.base, self.factor)[0]

    def variance(self) -> torch.Tensor:
        """The diagonal ``(..., n)``: ``diag(base)`` minus the row sums of ``factor²``."""
        base = self.base if self.base_is_diagonal else torch.diagonal(self.base, dim1=-2, dim2=-1)
        return base - self.factor.pow(2).sum(-1)

    def dense(self) -> torch.Tensor:
        """The assembled covariance ``(..., n, n)``."""
        base = torch.diag_embed(self.base) if self.base_is_diagonal else self.base
        return base - self.factor @ self.factor.transpose(-1, -2)

    def matmul(self, other: torch.Tensor) -> torch.Tensor:
        """``cov @ other`` for ``other (..., n, k)`` without assembling ``cov``."""
        base = self.base[..., :, None] * other if self.base_is_diagonal else self.base @ other
        return base - self.factor @ (self.factor.transpose(-1, -2) @ other)


@dataclass(frozen=True)
class Gaussian:
    """A Gaussian prediction ``N(mean, cov)`` over the last axis.

    ``cov`` is full ``(..., n, n)``, diagonal ``(..., n)`` (variances), or a
    :class:`LowRankCovariance` (what a constraint returns) whose ``factor`` is ``(..., n, m)``
    and ``base`` one of the first two, all with the mean's leading axes. ``diagonal`` says which
    a tensor ``cov`` is: ``None`` reads it from the shapes, and a ``cov`` of the mean's shape is
    variances. Where that shape is also a symmetric matrix, ``(B, n)`` beside a mean ``(B, n)``
    with ``B == n``, it may have been meant as one full covariance shared by the rows: that
    warns unless ``diagonal=True`` (a shared one is given expanded, ``cov.expand(B, n, n)``, as
    a Gaussian's full :class:`LowRankCovariance` base is). ``diagonal=False`` asks for a full
    ``cov``. ``diagonal`` is kept as given and :attr:`is_diagonal` says how ``cov`` was read; to
    swap the covariance for one of another kind, ``dataclasses.replace(g, cov=..., diagonal=None)``
    (the toolkit's own Gaussians say ``diagonal=True``).
    """

    mean: torch.Tensor
    cov: torch.Tensor | LowRankCovariance
    diagonal: bool | None = None

    def __post_init__(self) -> None:
        if self.diagonal is not None and not isinstance(self.diagonal, bool):
            raise TypeError(f"diagonal must be True, False or None, got {self.diagonal!r}")
        self._check()

    @classmethod
    def posterior(cls, mean: torch.Tensor, cov: LowRankCovariance, prior: Gaussian) -> Gaussian:
        """``Gaussian(mean, cov)`` for an update of ``prior`` (what a constraint returns) whose
        ``cov.base`` may be the prior's own covariance tensor: found finite when the prior was
        built, it is not scanned again (a full pass over an ``n × n`` matrix per slice)."""
        if not isinstance(prior, Gaussian):
            raise TypeError(f"prior must be a Gaussian, got {type(prior).__name__}")
        posterior = object.__new__(cls)
        object.__setattr__(posterior, "mean", mean)
        object.__setattr__(posterior, "cov", cov)
        object.__setattr__(posterior, "diagonal", None)
        checked = prior.cov.base if isinstance(prior.cov, LowRankCovariance) else prior.cov
        posterior._check(checked)
        return posterior

    def _check(self, checked: torch.Tensor | None = None) -> None:
        """Refuse a mean or covariance of the wrong kind, shape or values; a covariance base
        that is ``checked`` is not scanned for NaN and inf."""
        if not isinstance(self.mean, torch.Tensor) or self.mean.ndim < 1:
            raise TypeError("mean must be a tensor of shape (..., n)")
        if not self.mean.is_floating_point():
            raise TypeError(
                f"mean must hold real floating-point values, got dtype {self.mean.dtype}"
            )
        _finite("mean", self.mean)
        n = self.mean.shape[-1]
        shape = tuple(self.mean.shape)
        if isinstance(self.cov, LowRankCovariance):
            if self.diagonal is not None:
                raise TypeError(
                    "diagonal is for a tensor cov: a LowRankCovariance says which its base is "
                    "with its own diagonal"
                )
            base, factor = self.cov.base, self.cov.factor
            _real_tensor("cov.base", base)
            _real_tensor("cov.factor", factor)
            if tuple(factor.shape[:-1]) != shape or factor.ndim != len(shape) + 1:
                raise ValueError(
                    f"cov.factor must have shape ({', '.join(map(str, shape))}, m) to match the "
                    f"mean, got {tuple(factor.shape)}"
                )
            if tuple(base.shape) not in (shape, (*shape, n)):
                raise ValueError(
                    f"cov.base must have shape {shape} (diagonal) or {(*shape, n)} (full) to "
                    f"match the mean, got {tuple(base.shape)}"
                )
            if not self.cov.base_is_diagonal and tuple(base.shape) == shape:
                raise ValueError(
                    f"cov.base is full (diagonal=False) but has the mean's shape {shape}: a "
                    f"Gaussian wants a full base per slice, {(*shape, n)} (expand a shared one)"
                )
            if base is not checked:
                _finite("cov", base)
            _finite("cov", factor)
            return
        if not isinstance(self.cov, torch.Tensor):
            raise TypeError(f"cov must be a tensor or LowRankCovariance, got {type(self.cov)}")
        _real_tensor("cov", self.cov)
        expected = {None: (shape, (*shape, n)), True: (shape,), False: ((*shape, n),)}
        if tuple(self.cov.shape) not in expected[self.diagonal]:
            readings = {shape: "diagonal", (*shape, n): "full"}
            wanted = " or ".join(f"{s} ({readings[s]})" for s in expected[self.diagonal])
            said = "" if self.diagonal is None else f" (diagonal={self.diagonal})"
            raise ValueError(
                f"cov must have shape {wanted} to match the mean{said}, got {tuple(self.cov.shape)}"
            )
        _finite("cov", self.cov)
        if self.is_diagonal:
            shared = self._shared_reading()
            if (self.cov < 0).any():
                hint = f"; {shared}" if shared else ""
                raise ValueError(f"cov: a diagonal covariance must be >= 0 (variances){hint}")
            if shared and _symmetric(self.cov):
                warnings.warn(
                    f"Gaussian: {shared}; pass diagonal=True to say they are variances",
                    stacklevel=user_stacklevel(),
                )

    def _shared_reading(self) -> str:
        """Where a diagonal ``cov`` ``(..., B, n)`` with ``B == n`` might be one full covariance
        shared by the ``B`` rows: how to give that instead; ``""`` elsewhere."""
        shape = tuple(self.mean.shape)
        if self.diagonal is not None or len(shape) < 2 or shape[-1] != shape[-2] or shape[-1] < 2:
            return ""
        return (
            f"cov {shape} is read as variances, one row of {shape[-1]} per slice; if it is one "
            f"full ({shape[-1]}, {shape[-1]}) covariance shared by the {shape[-2]} rows, give it "
            f"expanded to one per row, {(*shape, shape[-1])}"
        )

    @property
    def is_diagonal(self) -> bool:
        """True where ``cov`` is read as variances, a tensor of the mean's shape."""
        return isinstance(self.cov, torch.Tensor) and self.cov.shape == self.mean.shape

    def variance(self) -> torch.Tensor:
        """Marginal variances ``(..., n)``."""
        if isinstance(self.cov, LowRankCovariance):
            return self.cov.variance()
        return self.cov if self.is_diagonal else torch.diagonal(self.cov, dim1=-2, dim2=-1)

    def dense_cov(self) -> torch.Tensor:
        """The covariance as ``(..., n, n)``."""
        if isinstance(self.cov, LowRankCovariance):
            return self.cov.dense()
        return torch.diag_embed(self.cov) if self.is_diagonal else self.cov


def _symmetric(matrices: torch.Tensor) -> bool:
    """Whether ``matrices (..., n, n)`` equal their transposes to ``1e-8`` of their largest
    entry."""
    largest = matrices.abs().amax()
    return bool((matrices - matrices.mT).abs().amax() <= 1e-8 * largest)


@dataclass(frozen=True)
class Ensemble:
    """Samples ``(member, ..., n)`` of a predictive distribution (deep ensembles, diffusion)."""

    samples: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.samples, torch.Tensor) or self.samples.ndim < 2:
            raise TypeError("samples must be a tensor of shape (member, ..., n)")
        if not self.samples.is_floating_point():
            raise TypeError(
                f"samples must hold real floating-point values, got dtype {self.samples.dtype}"
            )
        if self.samples.shape[0] < 2:
            raise ValueError(f"an Ensemble needs at least 2 members, got {self.samples.shape[0]}")
        _finite("samples", self.samples)

    def mean(self) -> torch.Tensor:
        return self.samples.mean(0)

    def covariance(self) -> torch.Tensor:
        """The members' sample covariance ``(..., n, n)`` (denominator ``members − 1``)."""
        centred = self.samples - self.samples.mean(0)
        return torch.einsum("s...i,s...j->...ij", centred, centred) / (self.samples.shape[0] - 1)
