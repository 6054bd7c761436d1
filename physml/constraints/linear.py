"""Linear constraints ``G u = b + ε``, ``ε ~ N(0, σ² I)``, and the updates that enforce them.

- Gaussian output ``N(μ, Σ)``: the ProbConserv update, the Gaussian conditioned on the
  constraint: new mean ``μ − Σ Gᵀ S⁻¹ (G μ − b)``, new covariance ``Σ − Σ Gᵀ S⁻¹ G Σ``, with
  ``S = σ² I + G Σ Gᵀ``. With ``σ = 0`` the updated mean meets the constraint exactly and the
  correction goes where ``Σ`` is largest. ``projection="euclidean"`` gives the HardC baseline
  (``Σ`` replaced by ``I`` for the mean, the variance left as it was).
- Tensor output: the Euclidean projection onto ``G u = b``.
- Ensemble output: every member is updated with the ensemble's covariance, so with ``σ = 0`` each
  member meets the constraint and the members' covariance becomes the posterior covariance.

``G`` is ``(m, n)`` and acts on the last axis; ``b`` broadcasts against ``(..., m)`` so one
constraint row per time slice and per sample is a ``b`` of shape ``(sample, time, 1)``. Everything
is solved in float64 with Cholesky factorisations of the small ``m × m`` matrix ``S``; no ``n × n``
inverse is formed, and the posterior covariance is returned as a :class:`LowRankCovariance`
(``Σ − F Fᵀ`` with ``F`` of rank ``m``), assembled only when asked (``.dense()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import ConstraintError
from ..outputs import Ensemble, Gaussian, LowRankCovariance
from .base import Constraint

F64 = torch.float64
Target = torch.Tensor | Callable[..., torch.Tensor]


def _check_matrix(G: torch.Tensor) -> torch.Tensor:
    if not isinstance(G, torch.Tensor) or G.ndim != 2:
        raise ConstraintError(f"G must be a tensor of shape (m, n), got {getattr(G, 'shape', G)}")
    G = G.to(F64)
    if not torch.isfinite(G).all():
        raise ConstraintError("G contains NaN or inf values")
    zero = torch.nonzero(G.abs().amax(1) == 0).flatten()
    if zero.numel():
        raise ConstraintError(f"G has zero rows {zero.tolist()}: each row must constrain something")
    rank = int(torch.linalg.matrix_rank(G))
    if rank < G.shape[0]:
        raise ConstraintError(
            f"G's {G.shape[0]} rows are linearly dependent (rank {rank}): drop the redundant ones"
        )
    return G


def _check_target(b: torch.Tensor, m: int) -> torch.Tensor:
    b = torch.as_tensor(b, dtype=F64)
    if b.ndim == 0 or b.shape[-1] not in (1, m):
        raise ConstraintError(
            f"b must have shape (..., {m}) to match G's {m} rows, got {tuple(b.shape)}"
        )
    if not torch.isfinite(b).all():
        raise ConstraintError("b contains NaN or inf values")
    return b


def _cholesky(S: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(S)
    if (info > 0).any():
        raise ConstraintError(
            "G Σ Gᵀ + σ² I is not positive definite: the covariance is not positive semi-definite "
            "along the constraint, or it is singular there while the noise σ is 0"
        )
    return L


class LinearConstraint(Constraint):
    """``G u = b`` (+ Gaussian noise of standard deviation ``noise``) on the last axis of outputs.

    Args:
        G: ``(m, n)`` constraint matrix with independent, non-zero rows.
        b: target ``(..., m)``, or a callable receiving the model's inputs and returning it.
        noise: ``σ_G >= 0``; 0 enforces the constraint exactly.
        projection: ``"covariance"`` (ProbConserv) or ``"euclidean"`` (HardC) for Gaussians.
        check_psd: also verify that a full input covariance is positive semi-definite (an
            eigendecomposition per matrix; off by default for speed, the ``S`` factorisation
            already catches a covariance that is indefinite along ``G``).
    """

    def __init__(
        self,
        G: torch.Tensor,
        b: Target,
        noise: float = 0.0,
        projection: str = "covariance",
        check_psd: bool = False,
    ) -> None:
        self.G = _check_matrix(G)
        self.b = b if callable(b) else _check_target(b, self.G.shape[0])
        noise = float(noise)
        if not math.isfinite(noise) or noise < 0:
            raise ConstraintError(f"noise must be a finite number >= 0, got {noise}")
        if projection not in ("covariance", "euclidean"):
            raise ConstraintError(
                f"projection must be 'covariance' or 'euclidean', got {projection!r}"
            )
        self.noise = noise
        self.projection = projection
        self.check_psd = check_psd

    def bind(self, *args: object, **kwargs: object) -> LinearConstraint:
        if not callable(self.b):
            return self
        return LinearConstraint(
            self.G, self.b(*args, **kwargs), self.noise, self.projection, self.check_psd
        )

    def _target(self) -> torch.Tensor:
        if callable(self.b):
            raise ConstraintError("b is a function of the model inputs: call bind(*inputs) first")
        return self.b

    def _prepare(self, values: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if values.shape[-1] != self.G.shape[1]:
            raise ConstraintError(
                f"{name} has {values.shape[-1]} points on its last axis but G has "
                f"{self.G.shape[1]} columns"
            )
        b = self._target()
        leading = values.shape[:-1] if name != "samples" else values.shape[1:-1]
        try:
            torch.broadcast_shapes((*leading, self.G.shape[0]), b.shape)
        except RuntimeError:
            raise ConstraintError(
                f"b of shape {tuple(b.shape)} does not fit {name} of shape {tuple(values.shape)}: "
                f"b must broadcast to {(*leading, self.G.shape[0])} (one target per row and slice)"
            ) from None
        return self.G.to(values.device), b.to(values.device)

    def residual(self, u: torch.Tensor) -> torch.Tensor:
        """``G u − b`` ``(..., m)``: how far ``u`` is from meeting the constraint."""
        G, b = self._prepare(u, "u")
        return u.to(F64) @ G.T - b

    def apply_tensor(self, output: torch.Tensor) -> torch.Tensor:
        """The Euclidean projection of ``output`` onto ``G u = b`` (HardC), in float64."""
        G, b = self._prepare(output, "output")
        u = output.to(F64)
        L = _cholesky(G @ G.T)
        correction = torch.cholesky_solve((u @ G.T - b).unsqueeze(-1), L).squeeze(-1)
        return u - correction @ G

    def apply_gaussian(self, output: Gaussian) -> Gaussian:
        """ProbConserv (or HardC with ``projection="euclidean"``), in float64."""
        if self.projection == "euclidean":
            return Gaussian(self.apply_tensor(output.mean), output.cov)
        G, b = self._prepare(output.mean, "mean")
        mean = output.mean.to(F64)
        cov = output.cov
        if isinstance(cov, LowRankCovariance):
            base, factor = cov.base.to(F64), cov.factor.to(F64)
            K = LowRankCovariance(base, factor).matmul(G.T)
        elif output.is_diagonal:
            base, factor = cov.to(F64), None
            K = base[..., :, None] * G.T
        else:
            base, factor = cov.to(F64), None
            if self.check_psd:
                _check_psd(base)
            K = base @ G.T  # (..., n, m)
        S = G @ K + self.noise**2 * torch.eye(G.shape[0], dtype=F64, device=G.device)
        L = _cholesky(S)
        mismatch = (mean @ G.T - b).unsqueeze(-1)
        new_mean = mean - (K @ torch.cholesky_solve(mismatch, L)).squeeze(-1)
        update = torch.linalg.solve_triangular(L, K.transpose(-1, -2), upper=False).transpose(
            -1, -2
        )
        factor = update if factor is None else torch.cat([factor, update], dim=-1)
        return Gaussian(new_mean, LowRankCovariance(base, factor))

    def apply_ensemble(self, output: Ensemble) -> Ensemble:
        """Move every member with the ensemble covariance so that each meets the constraint."""
        G, b = self._prepare(output.samples, "samples")
        samples = output.samples.to(F64)
        K = Ensemble(samples).covariance() @ G.T  # (..., n, m)
        S = G @ K + self.noise**2 * torch.eye(G.shape[0], dtype=F64, device=G.device)
        L = _cholesky(S)
        mismatch = (samples @ G.T - b).unsqueeze(-1)  # (member, ..., m, 1)
        solved = torch.cholesky_solve(mismatch, L.expand(samples.shape[0], *L.shape))
        return Ensemble(samples - (K @ solved).squeeze(-1))


def _check_psd(cov: torch.Tensor) -> None:
    eigenvalues = torch.linalg.eigvalsh(cov)
    scale = eigenvalues.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(F64).tiny)
    if (eigenvalues < -1e-10 * scale).any():
        worst = (eigenvalues / scale).min().item()
        raise ConstraintError(
            f"cov is not positive semi-definite (smallest eigenvalue {worst:.3g} × the largest)"
        )
