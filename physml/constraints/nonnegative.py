"""Non-negativity as a second step after a conservation update (ProbConserv's optional step).

Conditioning a Gaussian on ``u_i = 0`` for the points ``i`` of a set ``A`` pulls them to zero
through the covariance — the other points make up the difference in proportion to how strongly
they co-vary. With the right ``A`` the conditioned mean is the Mahalanobis projection of the mean
onto ``{u >= 0}`` within the constraints already imposed: ``u = m + Σ ν`` with multipliers
``ν >= 0`` on ``A``, zero off it, and ``u >= 0``. Pinning every point found negative, round after
round, usually finds that set; where strong correlations make a pinned point's multiplier negative
(pinning it pushed another point up more than needed), the set is found exactly by an active-set
method (Lawson–Hanson) on the dual ``min_{ν >= 0} ½ νᵀΣν + mᵀν``, which needs no ``Σ⁻¹``. Because
conditioning composes, applying it to a posterior that meets ``G u = b`` exactly (``σ = 0``) keeps
``G u = b`` exactly.

An ensemble carries no covariance that could hold the rows, and clipping its negative values
breaks them (Janjić et al., MWR 2014): each member ``x`` becomes instead the solution of the
small quadratic program ``min ½ (u − x)ᵀ D⁻¹ (u − x)`` subject to ``w·u = w·x`` and ``u >= 0``
(one row ``w >= 0`` per slice, the conservation row it was updated with: its mass kept as it is,
or at that row's target ``b`` where that update met ``b`` exactly and ``w·x`` is ``b`` rounded
to the field's dtype, e.g. a float32 output missing a small total by its rounding). ``D`` is the
update's own metric on its diagonal: the ensemble's variance per point for a covariance update
(a point no member varies at, such as a wall an earlier constraint fixed, stays where it is,
unless it is negative: then ``γ`` lets it move), the identity for a Euclidean one and for a
tensor output (HardC followed by non-negativity). The solution is ``u = max(x − λ D w, 0)`` with
the one ``λ`` that keeps the row, found exactly from the sorted breakpoints ``x_i / (D_i w_i)``
(a weighted projection onto a simplex). On a tensor after boundary conditions, ``D`` is zero at
the points their rows touch, so they still hold (:meth:`NonNegative.apply_tensor`).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence

import torch

from .. import metrics
from ..errors import ConstraintError
from ..outputs import Ensemble, Gaussian, LowRankCovariance, safe_sqrt
from .base import Constraint
from .linear import LinearConstraint

F64 = torch.float64
EPS64 = torch.finfo(F64).eps


PINNING_TOLERANCE = 1e-6
"""Relative miss of ``Σ_AA w = m_A`` beyond which pinning is judged infeasible (round-off in a
feasible, ill-conditioned solve stays well below; an infeasible one misses by order one)."""
ROW_TOLERANCE = 1e-9
"""Relative miss of a member's kept row (to ``Σ_j w_j |x_j|``) beyond which the exact
solution is judged to have failed; round-off stays far below."""
ROUNDED_TOTAL = 4
"""A one-row Gaussian posterior whose total is below zero by at most this × ``eps`` × ``Σ_j w_j
|x_j|`` (``eps`` the least precise of its mean's and covariance's dtypes) is zero rounded:
storing the mean moves the total by at most ``eps / 2`` of that sum, the row ``w = f / D`` read
from the stored covariance by about ``eps`` more; 4 leaves room."""
UPDATE_ROUND_OFF = 8
"""How far, in float64's ``eps`` × ``Σ_j w_j |x_j|``, the float64 update before a field was
rounded to its dtype, and the sum ``w·x`` itself, may leave a total from its target."""
KKT_TOLERANCE = 1e-9
"""A pinned point whose multiplier is below ``-KKT_TOLERANCE`` times the slice's largest one
marks its active set as not optimal (round-off in an optimal one stays far below)."""
ROUND_OFF = 1e-12
"""Values of a conditioned mean above ``-ROUND_OFF`` times the slice's largest ``|mean|`` count as
zero: pinning them would chase round-off."""
DEGENERATE = 1e-9
"""``|Σ_i f_i² / D_i − 1|`` up to which ``diag(D) − f fᵀ`` counts as singular along its row (an
exact update's posterior; ``σ > 0`` leaves ``σ² / (gᵀDg + σ²)`` of the variance along it). A
covariance stored in a lower precision is allowed four of its ``eps``."""
SINGULAR_PIVOT = 16
"""A pinned block whose Cholesky pivot ``L_ii²`` is below this × ``n × eps`` × the slice's largest
variance counts as singular (its point's value fixed by the others). Rounding ``Σ`` to ``eps``
moves its eigenvalues by up to ``n eps / 2`` × its largest variance, so a null direction of an
exact update (``Gᵀc``) stored in ``eps`` is not told from a small variance below that; 16 leaves
room for the float64 round-off of assembling and factorising ``Σ``."""
INFEASIBLE = (
    "non-negativity is infeasible here: the points to pin at zero have (nearly) no variance "
    "left, or pinning them contradicts the constraints already imposed"
)


def _dense_float64(cov: torch.Tensor | LowRankCovariance, n: int) -> torch.Tensor:
    """``cov`` as float64 slices ``(s, n, n)``; a :class:`LowRankCovariance` ``B − FFᵀ`` as
    ``R Rᵀ``, ``R`` the square root :func:`~physml.metrics.gaussian_samples` draws with, so
    positive semi-definite by construction.

    ``B − FFᵀ`` of an exact update stored in float32 is singular only to ~eps × ``B``'s
    variances, which can exceed the posterior's own many times over; conditioning on pinned
    points amplifies that further, and the result, scaled to its own variances, could no longer
    be told from an indefinite matrix. ``R`` clamps those round-off directions to zero and
    refuses a ``B − FFᵀ`` that is indefinite beyond its storage round-off. Its gradient is
    that of ``B − FFᵀ``, which ``R Rᵀ`` is up to round-off: ``R``'s own backward goes through
    an SVD whose singular values, all 1 after several exact rows, make it NaN.
    """
    if not isinstance(cov, LowRankCovariance):
        return cov.to(F64).reshape(-1, n, n)
    batch = cov.factor.shape[:-2]
    eye = torch.eye(n, dtype=F64, device=cov.factor.device)
    unit = eye.reshape(n, *(1,) * len(batch), n).expand(n, *batch, n)  # e_i per slice
    eps = metrics.stored_eps(cov.base, cov.factor)  # the covariance's own round-off
    try:
        root = metrics.low_rank_noise(cov, unit, eps).movedim(0, -1)  # columns R e_i
    except ValueError as error:
        raise ConstraintError(f"NonNegative: the Gaussian's {error}") from None
    dense = root @ root.mT
    if torch.is_grad_enabled() and (cov.base.requires_grad or cov.factor.requires_grad):
        exact = cov.dense().to(F64)  # the value R Rᵀ rounds, with its finite slope
        dense = dense.detach() + (exact - exact.detach())
    return dense.reshape(-1, n, n)


def _storage_eps(output: Gaussian) -> float:
    """The machine epsilon of the least precise of ``output``'s mean and covariance dtypes."""
    cov = output.cov
    parts = (cov.base, cov.factor) if isinstance(cov, LowRankCovariance) else (cov,)
    return metrics.stored_eps(output.mean, *parts)


def _check_pinned(moved: torch.Tensor, mean: torch.Tensor, active: torch.Tensor) -> None:
    """``moved = Σ_A· Σ_AA⁻¹ m_A`` must reproduce ``m_A`` on the active set (each row ``(s, n)``).

    Where ``Σ_AA`` is singular and ``m_A`` lies outside its range (e.g. a total the posterior
    already fixes at a negative value), no conditioning reaches zero: the solve misses ``m_A``.
    """
    miss = torch.where(active, moved - mean, 0.0).abs().amax(-1)
    scale = torch.where(active, mean, 0.0).abs().amax(-1)
    if bool((miss > PINNING_TOLERANCE * scale).any()):
        raise ConstraintError(INFEASIBLE)


def _pinned_system(
    cov: torch.Tensor, active: torch.Tensor, eps: float = EPS64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The active mask as numbers and the Cholesky factor of ``M = D Σ D + (I − D)``.

    ``M`` holds ``Σ_AA`` on the active block and the identity elsewhere, so ``M⁻¹ D`` is
    ``Σ_AA⁻¹`` padded with zeros; one batched factorisation serves every slice ``(s, n, n)``.
    A pivot of the active block at or below :func:`_singular_floor` (``eps``: the storage
    precision) makes it singular: :data:`INFEASIBLE` (pinning all of ``A`` is).
    """
    pinned = active.to(cov.dtype)
    M = cov * pinned[:, :, None] * pinned[:, None, :] + torch.diag_embed(1.0 - pinned)
    L, info = torch.linalg.cholesky_ex(M)
    pivots = torch.where(active, L.diagonal(dim1=-2, dim2=-1).square(), torch.inf)
    if (info > 0).any() or (pivots <= _singular_floor(cov, eps)).any():
        raise ConstraintError(INFEASIBLE)
    return pinned, L


def _pinned_mean(mean, cov, active, pinned, L) -> tuple[torch.Tensor, torch.Tensor]:
    """Means ``(s, n)`` conditioned on ``u_i = 0`` where ``active`` (exact zeros there) and the
    weights ``Σ_AA⁻¹ m_A`` ``(s, n)`` that moved them (zero off the active set; ``−ν``)."""
    weights = torch.cholesky_solve((pinned * mean)[..., None], L)
    moved = (cov @ weights)[..., 0]
    _check_pinned(moved, mean, active)
    return torch.where(active, 0.0, mean - moved), weights[..., 0]


def _not_optimal(weights: torch.Tensor) -> torch.Tensor:
    """Slices ``(s,)`` whose active set holds a point with a negative multiplier ``ν = −w``."""
    scale = weights.abs().amax(-1)
    return (weights > KKT_TOLERANCE * scale[..., None]).any(-1)


def _snapped(new_mean: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``new_mean`` ``(s, n)`` with round-off negatives (above ``-ROUND_OFF`` times the slice's
    largest ``|mean|``) set to zero: the active-set search stops short of pinning them."""
    floor = ROUND_OFF * mean.abs().amax(-1, keepdim=True)
    return torch.where((new_mean < 0) & (new_mean >= -floor), 0.0, new_mean)


def _optimal_active(
    mean: torch.Tensor, cov: torch.Tensor, tolerance: float, eps: float = EPS64
) -> torch.Tensor:
    """The active set ``(n,)`` of ``min_{ν >= 0} ½ νᵀΣν + mᵀν`` for one slice (Lawson–Hanson):
    add the most negative point of ``u = m + Σν``; when the free solve makes a multiplier
    non-positive, step back to where the first one reaches zero and release it.

    ``Σ`` may be singular (a full prior after exact rows has rank ``n − m``): a point whose
    block ``Σ_PP`` is singular with the pinned ones (:func:`_singular_direction`) cannot be
    pinned with all of them, yet a solution may exist. Its null direction ``d`` (``Σd = 0``)
    keeps ``u`` and lowers the objective: ``ν`` moves along it until a multiplier reaches zero
    and that point is released. Where none does (``d >= 0``), ``dᵀu = dᵀm < 0`` for every ``u``
    the constraints allow, and none is ``>= 0``: infeasible. ``eps``: the storage precision.
    """
    n = mean.shape[-1]
    floor = max(tolerance, ROUND_OFF * mean.abs().max().item())
    singular = _singular_floor(cov, eps)
    passive = torch.zeros(n, dtype=torch.bool, device=mean.device)
    nu, u = torch.zeros_like(mean), mean.clone()
    for _ in range(3 * n):
        candidates = ~passive & (u < -floor)
        if not bool(candidates.any()):
            return passive
        newest = torch.where(candidates, u, torch.inf).argmin()
        passive[newest] = True
        for _ in range(n + 1):
            # the newest point last: its pivot is its variance given the others pinned
            others = (passive & (torch.arange(n, device=mean.device) != newest)).nonzero()
            index = torch.cat([others.flatten(), newest[None][passive[newest, None]]])
            block = cov[index][:, index]
            L, info = torch.linalg.cholesky_ex(block)
            if info > 0 or bool((L.diagonal().square() <= singular[index]).any()):
                direction = _singular_direction(block, u[index])
                blocking = direction < -KKT_TOLERANCE * direction.abs().max()
                if not bool(blocking.any()):
                    raise ConstraintError(INFEASIBLE)
                ratios = torch.where(blocking, nu[index] / direction.abs(), torch.inf)
                nu[index] = (nu[index] + ratios.min() * direction).clamp_min(0.0)
                nu[index[ratios.argmin()]] = 0.0
                passive &= nu > 0
                continue
            free = torch.zeros_like(mean)
            free[index] = torch.cholesky_solve(-mean[index, None], L)[:, 0]
            if bool((free[index] > 0).all()):
                nu = free
                break
            blocking = (passive & (free <= 0)).nonzero().flatten()
            gap = nu[blocking] - free[blocking]
            ratios = torch.where(gap > 0, nu[blocking] / gap.clamp_min(1e-300), 0.0)
            nu = nu + ratios.min() * (free - nu)
            nu[blocking[ratios.argmin()]] = 0.0
            passive &= nu > 0
        u = mean + cov @ nu
    if not _has_nonnegative_point(mean, cov, eps):
        raise ConstraintError(INFEASIBLE)
    raise ConstraintError("NonNegative's active-set search did not converge")


def _has_nonnegative_point(mean: torch.Tensor, cov: torch.Tensor, eps: float) -> bool:
    """Whether some ``u >= 0`` differs from ``mean`` ``(n,)`` only within the range of ``cov``
    ``(n, n)`` (``Nᵀu = Nᵀmean``, ``N`` its numerical null space), by a linear program: where the
    search cycles among singular blocks, this tells an infeasible problem from a hard one."""
    from scipy.optimize import linprog

    values, vectors = torch.linalg.eigh(cov.to(F64))
    null = vectors[:, values <= _singular_floor(cov, eps).max().to(F64)]
    if null.shape[1] == 0:
        return True
    rows, target = null.mT.cpu().numpy(), (null.mT @ mean.to(F64)).cpu().numpy()
    found = linprog(c=[0.0] * len(mean), A_eq=rows, b_eq=target, bounds=(0, None))
    return found.status != 2  # 2: infeasible


def _singular_floor(cov: torch.Tensor, eps: float) -> torch.Tensor:
    """The Cholesky pivot ``L_ii²`` of each point of ``cov`` ``(..., n, n)`` up to which a pinned
    block counts as singular, ``(..., n)``: :data:`SINGULAR_PIVOT` × ``n × eps`` × the point's own
    variance. A pivot is the point's variance given the points pinned before it: a dependent
    point's is round-off of its own; a precisely known point's variance may be far below the
    slice's largest and still be pinned exactly."""
    return SINGULAR_PIVOT * cov.shape[-1] * eps * cov.diagonal(dim1=-2, dim2=-1).abs()


def _singular_direction(block: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """The null direction ``d`` ``(k,)`` of a singular pinned block ``Σ_PP`` ``(k, k)`` (its
    eigenvector of the smallest eigenvalue), signed to lower the objective: ``gradient · d < 0``
    for ``gradient = u_P``."""
    direction = torch.linalg.eigh(block).eigenvectors[:, 0]
    return -direction if float(gradient @ direction) > 0 else direction


def _low_rank_condition(mean, variance, factor, active, eps=EPS64):
    """``N(mean, diag(variance) − F Fᵀ)`` slices ``(s, n)`` conditioned on ``u_i = 0`` where
    ``active``, by Woodbury, ``O(n k²)`` a slice: ``(mean, variance, L, weights)``, the new
    factor left to :func:`_low_rank_factor` (the active-set search needs only the mean).

    With ``C = I − F_AᵀD_A⁻¹F_A = L Lᵀ``, ``Σ_AA⁻¹ = D_A⁻¹ + D_A⁻¹F_A C⁻¹ F_AᵀD_A⁻¹`` gives the
    mean, and off the active set ``Σ′ = D − F C⁻¹ Fᵀ`` (``I + F_AᵀΣ_AA⁻¹F_A = C⁻¹``): the new
    factor is ``F L⁻ᵀ``, zero on the active set with the variance. ``None`` where that does not
    hold (no variance at a pinned point, or ``C`` not positive definite): the dense route then
    decides. Last, the weights ``Σ_AA⁻¹ m_A`` (``−ν``, for the optimality check).
    """
    pinned = active.to(variance.dtype)
    if bool((active & (variance <= 0)).any()):
        return None
    inverse = pinned / torch.where(active, variance, 1.0)  # D_A⁻¹, zero off the active set
    weighted = inverse * mean
    factor_t = factor.transpose(-1, -2)
    scaled = inverse[..., None] * factor  # D_A⁻¹ F_A
    eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    L, info = torch.linalg.cholesky_ex(eye - factor_t @ scaled)
    pivots = L.diagonal(dim1=-2, dim2=-1).square()
    if bool((info > 0).any()) or bool((pivots <= SINGULAR_PIVOT * factor.shape[-1] * eps).any()):
        return None
    inner = torch.cholesky_solve((factor_t @ weighted[..., None]), L)
    weights = weighted + (scaled @ inner)[..., 0]  # Σ_AA⁻¹ m_A, zero off the active set
    covariance_times = variance * weights - (factor @ (factor_t @ weights[..., None]))[..., 0]
    _check_pinned(covariance_times, mean, active)
    new_mean = torch.where(active, 0.0, mean - covariance_times)
    return new_mean, torch.where(active, 0.0, variance), L, weights


def _low_rank_factor(factor: torch.Tensor, L: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The conditioned factor ``F L⁻ᵀ`` ``(s, n, k)``, zero on the active set."""
    new_factor = torch.linalg.solve_triangular(L, factor.transpose(-1, -2), upper=False)
    return torch.where(active[..., None], 0.0, new_factor.transpose(-1, -2))


def simplex_projection(
    x: torch.Tensor, w: torch.Tensor, d: torch.Tensor, total: torch.Tensor | None = None
) -> torch.Tensor:
    """Rows ``x`` ``(r, n)`` moved to ``argmin Σ_i (u_i − x_i)² / d_i`` subject to
    ``w·u = s`` and ``u >= 0``, for weights ``w`` ``(n,)`` ``>= 0`` and metrics ``d`` ``(r, n)``
    ``>= 0``; the totals ``s`` ``(r,)`` (``total``, by default ``w·x``) must be ``>= 0``. A point
    with ``d = 0`` cannot move: it keeps ``x_i`` (which must be ``>= 0``).

    KKT: ``u = max(x − λ d w, 0)``. Sorting the breakpoints ``τ_i = x_i / (d_i w_i)`` in
    descending order, ``λ_j = (Σ_{i<=j} w_i x_i − s) / Σ_{i<=j} d_i w_i²`` and the last ``j``
    with ``τ_j > λ_j`` gives ``λ``; no such ``j`` means ``s = 0`` and ``u = 0`` where ``w > 0``.
    Weights ``w`` ``(r, n)`` give each row its own.
    """
    if total is not None and not isinstance(total, torch.Tensor):
        raise TypeError(f"total must be a tensor of shape {tuple(x.shape[:-1])}, got {total!r}")
    if total is not None and (
        total.shape != x.shape[:-1] or bool((total < 0).any()) or not bool(total.isfinite().all())
    ):
        raise ValueError(
            f"total must hold one finite total >= 0 per row, shape {tuple(x.shape[:-1])}, got "
            f"shape {tuple(total.shape)} "
            f"(smallest {float(total.min()) if total.numel() else 'none'})"
        )
    xw, weighted = x * w, d * w
    uncoupled = w <= 0
    fixed = ~uncoupled & (weighted <= 0)  # d = 0: the point stays (it must be >= 0)
    tau = x / torch.where(uncoupled | fixed, 1.0, weighted)
    tau = tau.masked_fill(uncoupled, -torch.inf).masked_fill(fixed, torch.inf)
    tau_sorted, order = tau.sort(-1, descending=True)  # fixed points first, never pinned
    s = xw.sum(-1, keepdim=True) if total is None else total[..., None]
    numerator = xw.gather(-1, order).cumsum(-1) - s
    denominator = (weighted * w).gather(-1, order).cumsum(-1)
    lam = torch.where(
        denominator > 0, numerator / denominator.clamp_min(torch.finfo(x.dtype).tiny), -torch.inf
    )
    count = (tau_sorted > lam).sum(-1, keepdim=True)  # the valid j form a prefix
    # no valid j beyond the fixed points: λ = inf, every other coupled point at 0
    to_zero = count <= fixed.sum(-1, keepdim=True)
    chosen = lam.gather(-1, (count - 1).clamp_min(0)).masked_fill(to_zero, 0.0)
    moved = (x - chosen * weighted).clamp_min(0.0).masked_fill(to_zero, 0.0)
    return torch.where(uncoupled, x.clamp_min(0.0), torch.where(fixed, x, moved))


def _one_row_posterior(
    mean: torch.Tensor, cov: LowRankCovariance, eps: float = EPS64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``N(mean, diag(D) − f fᵀ)`` ``(..., n)`` float64 conditioned on ``u >= 0`` in one step:
    ``(mean, D, f)`` of the result, or ``None`` where ``f`` is not one row of one sign or the
    covariance is not singular along it (``Σ_i f_i² / D_i ≠ 1``: a noisy update, whose mass
    may still move).

    Such a posterior is a diagonal Gaussian conditioned exactly on one row ``w ∝ f / D`` (a mass
    conservation update with ``σ = 0``); conditioning it on ``u_A = 0`` as well is the
    Mahalanobis projection of its mean onto ``{w·u = w·mean, u >= 0}`` in the metric ``D⁻¹``:
    the weighted simplex projection, the active set ``A`` its zeros. Pinning the negative points
    one round at a time reaches the same set (for ``w >= 0`` the multiplier only grows), so this
    is the iterative route's answer without its rounds. Slices without a negative mean are
    returned as they are. A total negative only by the rounding of a mean stored to ``eps``
    (:data:`ROUNDED_TOTAL`) counts as zero. Gradients stay finite at the boundaries: a point
    with ``D = 0`` passes none through its weight ``f / D`` (held at 0), and a slice whose
    points are all pinned (total 0) none through the new factor's zero norm.
    """
    variance = cov.base.to(F64).expand(mean.shape)
    factor = cov.factor[..., 0].to(F64).expand(mean.shape)
    w = factor / variance.clamp_min(torch.finfo(F64).tiny)  # zero where f is (D = 0: f = 0)
    w = torch.where(variance > 0, w, w.detach())  # no 1 / tiny slope into f where D = 0
    tolerance = max(DEGENERATE, 4 * torch.finfo(cov.factor.dtype).eps)
    along = (factor * w).sum(-1)  # Σ f² / D: 1 where the row is held exactly
    w = w * w.sum(-1, keepdim=True).sign()  # a row is defined up to its sign
    negative = mean < 0
    total, size = (mean * w).sum(-1), (mean.abs() * w).sum(-1)
    general, infeasible = torch.stack(
        [
            (w < 0).any() | ((along - 1).abs() > tolerance).any(),  # the general route decides
            (negative & (variance <= 0)).any()
            | (total < -max(ROW_TOLERANCE, ROUNDED_TOTAL * eps) * size).any(),
        ]
    ).tolist()
    if general:
        return None
    if infeasible:  # a negative mean that cannot move, or a row fixing a negative total
        raise ConstraintError(INFEASIBLE)
    moves = negative.any(-1, keepdim=True)
    total = total.clamp_min(0.0)
    new = torch.where(moves, simplex_projection(mean, w, variance, total), mean)
    raised = ((mean < 0) & (w > 0)).any(-1, keepdim=True)  # λ > 0: a zero mean it reaches is pinned
    pinned = (new == 0) & ((mean != 0) | (raised & (variance * w > 0)))
    new_variance = variance.masked_fill(pinned, 0.0)
    pulled = new_variance * w
    norm = safe_sqrt((pulled * w).sum(-1, keepdim=True)).clamp_min(torch.finfo(F64).tiny)
    new_factor = torch.where(moves, pulled / norm, factor)
    miss = ((new * w).sum(-1) - total).abs()
    if bool((miss > ROW_TOLERANCE * size.clamp_min(torch.finfo(F64).tiny)).any()):
        raise ConstraintError(f"NonNegative missed the row by {miss.max().item():.3g}")
    return new, new_variance, new_factor[..., None]


def _rounding(size: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """How far a total ``w·x`` of values stored in ``dtype`` may be from the float64 total they
    were rounded from, ``size`` ``(...)`` the stored ``Σ_j w_j |x_j|``: ``eps / 2`` of it (a value
    rounded to nearest moves by at most ``eps / 2`` of itself) and :data:`UPDATE_ROUND_OFF`."""
    return (torch.finfo(dtype).eps / 2 + UPDATE_ROUND_OFF * EPS64) * size


def _totals(
    keep: LinearConstraint,
    b: torch.Tensor | Callable[[], torch.Tensor | None] | None,
    leading: tuple[int, ...],
    field: torch.Tensor,
    X: torch.Tensor,
) -> torch.Tensor | None:
    """``keep``'s target ``b`` (or the function :meth:`NonNegative.prepare` left to give it) as
    one total per slice of ``X`` ``(..., n)``, ``(...)`` float64 (``leading``: ``field``'s
    leading shape); ``None`` without one, or when it does not fit ``field`` (``keep`` then names
    only the row)."""
    if callable(b):
        b = b()
    if b is None:
        return None
    try:
        b = keep._target_for(b, leading, field, "")
    except ConstraintError:
        return None
    return b[..., 0].expand(X.shape[:-1])


def _members_equal(X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(...)``: whether the members ``X`` ``(member, ..., n)`` agree at every point of a slice,
    to round-off of ``dtype`` (relative to the slice's largest value)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(F64).eps
    spread = (X - X.mean(0)).abs().amax(0).amax(-1)
    return spread <= 64 * eps * X.abs().amax(0).amax(-1)


class NonNegative(Constraint):
    """``u >= 0`` for Gaussian outputs, by the optimal active set of points conditioned to zero
    (the Mahalanobis projection of the mean), and for ensembles (member by member) and tensors,
    keeping a conservation row exact (module docstring).

    Args:
        tolerance: means (members' values) above ``-tolerance`` count as non-negative.
        keep: ensembles and tensors: the :class:`LinearConstraint` (e.g. a
            ``mass_conservation``) whose row each member (each field) keeps at its present
            value (at ``keep``'s target where ``keep``'s update meets it exactly, a tensor's
            projection or an ensemble's with noise 0 or ``projection="euclidean"``, and the
            present value is that target
            rounded to the field's dtype: within ``eps / 2`` of ``Σ_j w_j |x_j|`` and
            :data:`UPDATE_ROUND_OFF`); for ensembles its ``projection`` picks the
            metric (``"covariance"``: the ensemble variance per point, ``"euclidean"``: the
            identity). One row ``w >= 0`` per slice (a total per frame and channel). Only
            ``keep``'s channels are made non-negative: the others (a velocity, say) pass as
            they are.
        jitter: ``γ`` relative to a slice's mean ensemble variance: the metric of a negative
            point no member varies at, so that it can still move.

    A diagonal covariance stays diagonal and a :class:`~physml.outputs.LowRankCovariance` over a
    diagonal base (a conservation update's posterior) stays low rank, each iteration ``O(n k²)``
    a slice (one exact row of one sign, ``σ = 0``, and ``tolerance = 0``: no iterations, one
    sorted pass); otherwise the covariance is dense ``(..., n, n)`` and each iteration one
    batched solve over all slices. A slice whose grown set is not optimal is searched again on
    its own (Lawson–Hanson, one small solve per step).
    """

    def __init__(
        self,
        tolerance: float = 0.0,
        *,
        keep: LinearConstraint | None = None,
        jitter: float = 1e-3,
    ) -> None:
        super().__init__()
        for name, value in (("tolerance", tolerance), ("jitter", jitter)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if not 0 <= tolerance < float("inf"):
            raise ConstraintError(f"tolerance must be a finite number >= 0, got {tolerance}")
        if keep is not None and not isinstance(keep, LinearConstraint):
            raise ConstraintError(
                f"keep must be a LinearConstraint (e.g. mass_conservation), got {type(keep)}"
            )
        if keep is not None and (keep.G.shape[0] != 1 or bool((keep.G < 0).any())):
            raise ConstraintError(
                "keep must have one row of non-negative weights per slice (a total), got G of "
                f"shape {tuple(keep.G.shape)} with minimum {keep.G.min().item():.3g}"
            )
        if not (jitter > 0 and jitter < float("inf")):
            raise ConstraintError(f"jitter must be a finite number > 0, got {jitter}")
        self.tolerance, self.jitter = float(tolerance), float(jitter)
        self.keep = keep

    def extra_repr(self) -> str:
        kept = "" if self.keep is not None else ", keep=None"
        return f"tolerance={self.tolerance:g}, jitter={self.jitter:g}{kept}"

    def prepare(self, *inputs: object, time: object = None, **kwargs: object) -> object:
        """A function giving ``keep``'s target ``b`` of this call, called only once a slice is
        negative (``None`` without ``keep``, or when ``b`` is a function and no inputs came): a
        total that is ``b`` rounded to the field's dtype is brought back to ``b``."""
        keep = self.keep
        if keep is None or (keep.target_fn is not None and not (inputs or kwargs)):
            return None
        return functools.partial(keep.prepare, *inputs, time=time, **kwargs)

    def _kept(self, kind: str) -> LinearConstraint:
        if self.keep is None:
            raise ConstraintError(
                f"NonNegative on {kind} needs keep=<the LinearConstraint whose row it must "
                "keep> (clipping alone would change the totals)"
            )
        return self.keep

    def apply_tensor(
        self, output: torch.Tensor, state: object = None, kept: Sequence = ()
    ) -> torch.Tensor:
        """The Euclidean projection onto ``{u >= 0}`` keeping ``keep``'s row (HardC's metric:
        a tensor carries no variance).

        ``kept``: boundary conditions already set on ``output``: every point their
        :meth:`.BoundaryCondition.wall_rows` touch (a Dirichlet wall; a Neumann wall and its two
        stencil neighbours) stays as it is, so they still hold; periodic walls, equal and of
        equal weight in ``keep``'s row, move alike (else they stay too). One of the points kept
        negative, or together holding more than the total, raises :class:`ConstraintError`.
        """
        keep = self._kept("a tensor")
        leading = keep._layout(output, "output")
        X = keep._flat(output)
        negative = (X < -self.tolerance).any(-1)
        if not bool(negative.any()):
            return output
        metric = torch.ones_like(X)
        if kept:
            w = keep._matrices(X.device)[0][0]
            fixed = torch.zeros(X.shape[-1], dtype=torch.bool, device=X.device)
            for condition in kept:
                nodes, weights = (t.to(X.device) for t in condition.wall_rows(keep.space))
                if condition.kind == "periodic":  # equal walls of equal weight move alike
                    nodes = nodes[w[nodes[:, 0]] != w[nodes[:, 1]]]
                fixed[nodes[weights[: len(nodes)] != 0]] = True
            held, total, size = (X * fixed) @ w, X @ w, X.abs() @ w
            over = held > total + ROW_TOLERANCE * size
            if bool((fixed & (X < -self.tolerance)).any()) or bool(over.any()):
                raise ConstraintError(
                    "NonNegative cannot keep the boundary conditions applied before it: the "
                    "points they set or read (walls, and a Neumann wall's two neighbours) stay "
                    "as they are, and one of them is negative or together they hold more than "
                    "the total (the other points would have to go negative); a model still "
                    "learning its walls meets this: train it without NonNegative and add "
                    "NonNegative for inference"
                )
            metric = metric.masked_fill(fixed, 0.0)
        target = _totals(keep, state, leading, output, X)
        new = self._project(X, metric, negative, keep, output.dtype, target)
        return keep._unflat(new, output)

    def apply_ensemble(self, output: Ensemble, state: object = None) -> Ensemble:
        """Every member with a negative value replaced by its quadratic program's solution."""
        keep = self._kept("an Ensemble")
        samples = output.samples
        leading = keep._layout(samples[0], "each member")
        X = keep._flat(samples)  # (member, ..., n)
        negative = (X < -self.tolerance).any(-1)
        if not bool(negative.any()):
            return output
        collapsed = None
        if keep.projection == "euclidean":
            metric = torch.ones_like(X)
        else:
            variance = X.var(0)
            mean = variance.mean(-1, keepdim=True)
            gamma = torch.where(mean > 0, self.jitter * mean, 1.0)
            # a point no member varies at stays where it is (e.g. a wall an earlier constraint
            # fixed) unless it is negative: then γ lets it move
            metric = torch.where(variance > 0, variance, torch.where(X < 0, gamma, 0.0))
            collapsed = _members_equal(X, samples.dtype).expand(negative.shape)
        exact = not keep.noise or keep.projection == "euclidean"  # keep's update meets b
        target = _totals(keep, state, leading, samples, X) if exact else None
        new = self._project(X, metric, negative, keep, samples.dtype, target, collapsed)
        return Ensemble(keep._unflat(new, samples))

    def _project(
        self,
        X: torch.Tensor,
        metric: torch.Tensor,
        negative: torch.Tensor,
        keep: LinearConstraint,
        dtype: torch.dtype,
        target: torch.Tensor | None = None,
        collapsed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The slices of ``X`` ``(..., n)`` marked ``negative`` ``(...)`` moved to their
        quadratic program's solution in the diagonal ``metric`` (shaped like ``X``), keeping
        each slice's total ``w·x``, or its ``target`` ``(...)`` where ``w·x`` is that target
        rounded to ``dtype``, the field's (:func:`_rounding`; a negative total so rounded counts
        as zero); ``collapsed`` (like ``negative``): where an ensemble's members all agree (for
        the error)."""
        n = X.shape[-1]
        w = keep._matrices(X.device)[0][0]
        rows = negative.flatten().nonzero().flatten()
        flat = X.reshape(-1, n)
        x = flat[rows]
        d = metric.reshape(-1, n)[rows]
        total, size = x @ w, x.abs() @ w
        rounding = _rounding(size, dtype)
        if target is not None:
            wanted = target.reshape(-1)[rows]
            total = torch.where((total - wanted).abs() <= rounding, wanted, total)
        if bool((total < -torch.maximum(ROW_TOLERANCE * size, rounding)).any()):
            worst = total.min().item()
            rounded = "" if dtype == F64 else f" (beyond the rounding of {dtype} values)"
            raise ConstraintError(
                f"non-negativity is infeasible here: a total is {worst:.3g} < 0{rounded}, and "
                "no non-negative field has a negative total"
            )
        total = total.clamp_min(0.0)
        held = (x * ((d <= 0) & (w > 0))) @ w
        over = held > total + ROW_TOLERANCE * size
        if bool(over.any()):
            why = ""
            if collapsed is not None and bool(collapsed.flatten()[rows][over].any()):
                why = (
                    "; here the ensemble's members are all equal — an exact update before it "
                    "(noise 0, no shrinkage) with m - 1 rows per slice leaves its m members "
                    "equal (e.g. mass conservation on 2 members): use more members or "
                    "shrinkage > 0"
                )
            raise ConstraintError(
                "non-negativity is infeasible here: the points that cannot move (no member "
                "varies at them, or a boundary condition set them) hold more than the total, "
                f"so the others would have to go negative{why}"
            )
        new = simplex_projection(x, w, d, total)
        miss = (new @ w - total).abs()
        if bool((miss > ROW_TOLERANCE * size.clamp_min(torch.finfo(F64).tiny)).any()):
            raise ConstraintError(
                f"NonNegative missed a kept row by {miss.max().item():.3g} (relative tolerance "
                f"{ROW_TOLERANCE:g})"
            )
        return flat.index_copy(0, rows, new).reshape(X.shape)

    def apply_gaussian(self, output: Gaussian, state: object = None) -> Gaussian:
        dtype = output.mean.dtype
        mean = output.mean.to(F64)
        n = mean.shape[-1]
        means = mean.reshape(-1, n)
        active = means < -self.tolerance
        if not bool(active.any()):
            return output
        if output.is_diagonal:  # independent points: conditioning on u_i = 0 touches i alone
            pinned = active.reshape(mean.shape)
            variance = torch.where(pinned, 0.0, output.cov)
            return Gaussian(torch.where(pinned, 0.0, output.mean), variance, diagonal=True)
        cov = output.cov
        one_row = isinstance(cov, LowRankCovariance) and cov.factor.shape[-1] == 1
        if one_row and cov.base_is_diagonal and self.tolerance == 0:
            kept = _one_row_posterior(mean, cov, _storage_eps(output))
            if kept is not None:
                new_mean, variance, factor = (t.to(dtype) for t in kept)
                return Gaussian(new_mean, LowRankCovariance(variance, factor, diagonal=True))
        rows = active.any(-1).nonzero().flatten()  # only slices with a negative mean move
        eps = _storage_eps(output)
        if isinstance(cov, LowRankCovariance) and cov.base_is_diagonal:
            kept = self._low_rank(mean, cov, rows, active[rows], n, dtype, eps)
            if kept is not None:
                return kept
        all_covs = _dense_float64(output.cov, n)
        means, covs, active = means[rows], all_covs[rows], active[rows]
        try:
            active, wrong = self._grown(means, covs, active, eps)
        except ConstraintError:  # pinning every negative point may over-constrain a slice
            wrong = torch.ones(len(rows), dtype=torch.bool)
        if bool(wrong.any()):
            active = self._exact_active(means, covs, active, wrong, eps)
        pinned, L = _pinned_system(covs, active, eps)
        new_mean, weights = _pinned_mean(means, covs, active, pinned, L)
        new_mean = self._verified(_snapped(new_mean, means), weights, means)
        new_cov = covs - covs @ torch.cholesky_solve(pinned[:, :, None] * covs, L)  # Σ_A· removed
        new_mean = mean.reshape(-1, n).index_copy(0, rows, new_mean)
        new_cov = all_covs.index_copy(0, rows, new_cov)
        shape = (*mean.shape, n)
        return Gaussian(new_mean.reshape(mean.shape).to(dtype), new_cov.reshape(shape).to(dtype))

    def _grown(self, means, covs, active, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The active sets ``(s, n)`` grown by pinning every negative point, round after round,
        and the slices ``(s,)`` where that set is not optimal (``eps``: the storage)."""
        for _ in range(means.shape[-1]):
            pinned, L = _pinned_system(covs, active, eps)
            new_mean, weights = _pinned_mean(means, covs, active, pinned, L)
            negative = new_mean < -self.tolerance
            if not bool(negative.any()):
                break
            active = active | negative
        return active, _not_optimal(weights)

    def _exact_active(self, means, covs, active, wrong, eps: float) -> torch.Tensor:
        """``active`` ``(s, n)`` with the slices marked ``wrong`` replaced by their optimal set
        (:func:`_optimal_active`, one slice at a time; ``eps``: the covariance's storage)."""
        active = active.clone()
        for i in wrong.nonzero().flatten().tolist():
            active[i] = _optimal_active(means[i], covs[i], self.tolerance, eps)
        return active

    def _verified(
        self, new_mean: torch.Tensor, weights: torch.Tensor, means: torch.Tensor
    ) -> torch.Tensor:
        """``new_mean`` ``(s, n)`` once its active set is checked optimal: no mean below
        ``-tolerance`` (or round-off, ``ROUND_OFF`` × the slice's largest ``|mean|``) and no
        negative multiplier (``weights`` ``(s, n)``, ``−ν``)."""
        floor = torch.clamp_min(ROUND_OFF * means.abs().amax(-1, keepdim=True), self.tolerance)
        below = (new_mean < -floor).any(-1)
        if bool((below | _not_optimal(weights)).any()):
            raise ConstraintError(
                "NonNegative's active-set search ended on a set that is not optimal (a mean left "
                "below zero or a negative multiplier): the covariance is too ill-conditioned for "
                "its precision"
            )
        return new_mean

    def _low_rank(
        self, mean, cov: LowRankCovariance, rows, active, n: int, dtype: torch.dtype, eps: float
    ) -> Gaussian | None:
        """The active set grown by Woodbury conditioning, the result kept low rank (``None``
        where Woodbury does not apply: the dense route then decides)."""
        m = cov.factor.shape[-1]
        variances = cov.base.to(F64).expand(mean.shape).reshape(-1, n)
        factors = cov.factor.to(F64).expand(*mean.shape, m).reshape(-1, n, m)
        means, slice_variances, slice_factors = (
            mean.reshape(-1, n)[rows],
            variances[rows],
            factors[rows],
        )
        for _ in range(n):
            found, used = (
                _low_rank_condition(means, slice_variances, slice_factors, active, eps),
                active,
            )
            if found is None:
                return None
            negative = found[0] < -self.tolerance
            if not bool(negative.any()):
                break
            active = active | negative
        wrong = _not_optimal(found[3])
        if bool(wrong.any()):
            dense = torch.diag_embed(slice_variances) - slice_factors @ slice_factors.mT
            used = self._exact_active(means, dense, used, wrong, eps)
            found = _low_rank_condition(means, slice_variances, slice_factors, used, eps)
            if found is None:
                return None
            self._verified(_snapped(found[0], means), found[3], means)
        found = (
            _snapped(found[0], means),
            found[1],
            _low_rank_factor(slice_factors, found[2], used),
        )
        new_mean, new_variance, new_factor = (
            whole.index_copy(0, rows, part)
            for whole, part in zip((mean.reshape(-1, n), variances, factors), found, strict=True)
        )
        covariance = LowRankCovariance(
            new_variance.reshape(mean.shape).to(dtype),
            new_factor.reshape(*mean.shape, m).to(dtype),
            diagonal=True,
        )
        return Gaussian(new_mean.reshape(mean.shape).to(dtype), covariance)
