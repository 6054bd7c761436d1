"""The kinds of model output that constraints act on.

A model may return a plain tensor (a deterministic prediction), a :class:`Gaussian` or an
:class:`Ensemble`. Predictions over a 1-D grid of ``n`` points have the points on the last axis and
any number of leading axes (sample, time slice, ...): ``mean (..., n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pdes.checks import finite


def _finite(name: str, value: torch.Tensor) -> None:
    # a sum is NaN/inf if any entry is (or if finite entries overflow): one cheap pass first
    if value.numel() and not math.isfinite(value.sum().item()):
        finite(name, value)


def _real_tensor(name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")


@dataclass(frozen=True)
class LowRankCovariance:
    """``base − factor @ factorᵀ``: a covariance after a rank-``m`` update, kept unassembled.

    ``base`` is diagonal ``(..., n)`` (variances) or full ``(..., n, n)``; ``factor`` is
    ``(..., n, m)``. Never materialised as a new ``n × n`` matrix unless asked (:meth:`dense`), so
    a constraint costs one pass over ``base``; :meth:`variance` costs ``O(n m)`` more.
    """

    base: torch.Tensor
    factor: torch.Tensor

    @property
    def base_is_diagonal(self) -> bool:
        """``base`` holds variances: shaped like ``factor`` without its last axis (a full
        ``(n, n)`` base beside a factor ``(B, n, m)`` is full, shared by the ``B`` slices)."""
        return self.base.ndim == self.factor.ndim - 1 and self.base.shape == self.factor.shape[:-1]

    def variance(self) -> torch.Tensor:
        base = self.base if self.base_is_diagonal else torch.diagonal(self.base, dim1=-2, dim2=-1)
        return base - self.factor.pow(2).sum(-1)

    def dense(self) -> torch.Tensor:
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
    and ``base`` one of the first two, all with the mean's leading axes.
    """

    mean: torch.Tensor
    cov: torch.Tensor | LowRankCovariance

    def __post_init__(self) -> None:
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
            _finite("cov", base)
            _finite("cov", factor)
            return
        if not isinstance(self.cov, torch.Tensor):
            raise TypeError(f"cov must be a tensor or LowRankCovariance, got {type(self.cov)}")
        _real_tensor("cov", self.cov)
        if tuple(self.cov.shape) not in (shape, (*shape, n)):
            raise ValueError(
                f"cov must have shape {shape} (diagonal) or {(*shape, n)} (full) to match the "
                f"mean, got {tuple(self.cov.shape)}"
            )
        _finite("cov", self.cov)
        if self.is_diagonal and (self.cov < 0).any():
            raise ValueError("cov: a diagonal covariance must be >= 0 (variances)")

    @property
    def is_diagonal(self) -> bool:
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
