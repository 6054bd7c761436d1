"""Non-negativity as a second step after a conservation update (ProbConserv's optional step).

Conditioning a Gaussian on ``u_i = 0`` for the points ``i`` whose mean is negative pulls them to
zero through the covariance — the other points make up the difference in proportion to how
strongly they co-vary. Repeating with the union of all points ever found negative (an active set)
ends with a mean ``>= 0``; when the active set is the optimal one this is the Mahalanobis projection
onto ``{u >= 0}`` within the constraints already imposed. Because conditioning composes, applying
it to a posterior that meets ``G u = b`` exactly (``σ = 0``) keeps ``G u = b`` exactly.
"""

from __future__ import annotations

import torch

from ..errors import ConstraintError
from ..outputs import Gaussian
from .base import Constraint

F64 = torch.float64


def _pin_to_zero(mean: torch.Tensor, cov: torch.Tensor, index: torch.Tensor):
    """``(mean, cov)`` of one Gaussian ``(n,), (n, n)`` conditioned on ``u[index] = 0``."""
    K = cov[:, index]
    L, info = torch.linalg.cholesky_ex(cov[index][:, index])
    if info > 0:
        raise ConstraintError(
            "non-negativity is infeasible here: the points to pin at zero have (nearly) no "
            "variance left, or pinning them contradicts the constraints already imposed"
        )
    gain = torch.cholesky_solve(K.T, L).T  # (n, |index|)
    return mean - gain @ mean[index], cov - gain @ K.T


class NonNegative(Constraint):
    """``u >= 0`` for Gaussian outputs, by an active set of points conditioned to zero.

    Args:
        tolerance: means above ``-tolerance`` count as non-negative.

    The output's covariance is dense ``(..., n, n)``; the work is one small solve per time slice
    and active-set iteration.
    """

    def __init__(self, tolerance: float = 0.0) -> None:
        super().__init__()
        if not tolerance >= 0:
            raise ConstraintError(f"tolerance must be >= 0, got {tolerance}")
        self.tolerance = float(tolerance)

    def apply_gaussian(self, output: Gaussian, state: object = None) -> Gaussian:
        mean = output.mean.to(F64)
        cov = output.dense_cov().to(F64)
        n = mean.shape[-1]
        means, covs = mean.reshape(-1, n).clone(), cov.reshape(-1, n, n).clone()
        for k in range(means.shape[0]):
            active = torch.zeros(n, dtype=torch.bool, device=mean.device)
            m, c = means[k], covs[k]
            while True:
                negative = m < -self.tolerance
                if not negative.any():
                    break
                active |= negative
                m, c = _pin_to_zero(means[k], covs[k], active.nonzero().flatten())
                m = torch.where(active, torch.zeros_like(m), m)  # exactly zero, not round-off
            means[k], covs[k] = m, c
        dtype = output.mean.dtype
        return Gaussian(means.reshape(mean.shape).to(dtype), covs.reshape(cov.shape).to(dtype))
