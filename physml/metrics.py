"""Evaluation metrics, each defined once: errors, conservation, probabilistic scores, images.

Every metric takes torch tensors (array-likes are converted), checks them (shapes, NaN/inf, empty
inputs) and computes in float64 on the first input's device, so a float32 network output and a
float64 reference give the same score. The exceptions judge a value against a tolerance or a label:
:func:`tolerance_flips`, :func:`flip_rate_curve` and :func:`physics_flips` compare each error or
residual with its tolerance rounded to that input's own precision (:func:`within`: a float32 error
equal to ``float32(τ)`` is within ``τ``; in float64 it would be above it), and
:func:`negative_flip_rate` compares integer labels in their integer dtypes. ``reduction='mean'``
returns a scalar tensor and ``reduction='none'`` the values before the final average (their shape
is given per metric).

Numerical floors, chosen once here:

- :data:`VARIANCE_FLOOR`: variances below it are raised to it in :func:`gaussian_log_likelihood`,
  so a constrained prediction with zero variance at pinned points gives a finite log density.
- :data:`ROUNDOFF`: a variance counts as negative only below ``-ROUNDOFF × (largest |variance|)``;
  smaller negatives are round-off (e.g. ``diag − FFᵀ`` after an exact ProbConserv update) and are
  treated as zero.
- :data:`SINGULAR_SNAP`: when sampling ``B − FFᵀ``, directions whose variance is below this
  fraction of ``B``'s are given exactly zero variance; otherwise the square root would turn
  round-off (~1e-16) into noise of ~1e-8 along directions an exact constraint has pinned.
  :data:`SINGULAR_EXCESS`: how far a squared singular value of ``L⁻¹F`` (``B = LLᵀ``) may exceed 1.
- :data:`SYMMETRY`: a full covariance may differ from its transpose by this × its largest variance.
- :data:`CHOLESKY_JITTERS`: multiples of the mean variance added to a full covariance's diagonal,
  tried in order, when its Cholesky factorisation fails (a singular posterior covariance); then
  up to its storage round-off, :data:`STORAGE_EIGENVALUE` × ``eps / 2`` × its largest absolute
  row sum (``eps`` as below): rounding each entry to ``eps`` moves no eigenvalue further than
  ``eps / 2`` × that; the factor 2 leaves room for the round-off of computing the matrix before
  it was stored and of factorising it in float64 (each ~``n × 1e-16`` × its norm: far below
  float32's ``eps / 2``, of its order in float64).
- :data:`STORAGE_ROUNDOFF`, :data:`STORAGE_ASYMMETRY`: the round-off of a covariance stored in a
  lower precision (a float32 model's ProbConserv posterior), with ``eps`` the machine epsilon of
  the least precise of the mean's and the covariance's dtypes. Each tolerance above is raised to
  it: negative variances down to ``STORAGE_ROUNDOFF × eps`` × the largest prior (base) variance,
  and ``s² − 1`` of ``L⁻¹F`` up to ``STORAGE_ROUNDOFF × eps × ρ`` (also the snap threshold),
  ``ρ`` = 1 for a diagonal base, else the ratio of the largest to the smallest diagonal entry of
  ``L``. Measured on float32 posteriors (mass rows, pinned points, dense GP priors): at most
  ``1 eps`` and ``1.3 ρ eps``. A full covariance computed in a lower precision
  (``K − K_xs K_ss⁻¹ K_sx``) is symmetric to ``STORAGE_ASYMMETRY × eps`` (measured: ``150 eps``).
  In float64 these exceed the constants above only where the round-off does (a posterior with
  almost no variance left, ``ρ`` above ~10⁴).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as nnf

from pdes.checks import finite
from pdes.checks import positive_int as _positive_int
from pdes.grid import Grid1D, Grid2D
from pdes.heat import one_sided_flux

from ._checks import NonFiniteError, as_tensor, layouts_for
from .errors import ZeroNormError
from .outputs import Ensemble, Gaussian, LowRankCovariance, safe_sqrt

__all__ = [
    "VARIANCE_FLOOR",
    "ROUNDOFF",
    "CHOLESKY_JITTERS",
    "SINGULAR_SNAP",
    "SINGULAR_EXCESS",
    "SYMMETRY",
    "STORAGE_ROUNDOFF",
    "STORAGE_ASYMMETRY",
    "STORAGE_EIGENVALUE",
    "stored_eps",
    "asymmetry_tolerance",
    "mse",
    "mae",
    "frame_mse",
    "frame_mae",
    "relative_l2",
    "boundary_error",
    "flux_error",
    "conservation_error",
    "abs_conservation_error",
    "marginal_std",
    "gaussian_log_likelihood",
    "crps_gaussian",
    "crps_ensemble",
    "crps_ensemble_in_chunks",
    "spearman",
    "spread_skill",
    "coverage",
    "pit",
    "mean_se",
    "bootstrap_se",
    "shock_position",
    "gaussian_samples",
    "low_rank_noise",
    "ssim",
    "csi",
    "energy_error",
    "within",
    "rounded_to",
    "negative_flip_rate",
    "tolerance_flips",
    "flip_rate_curve",
    "degradation_flips",
    "physics_flips",
    "crps_per_sample",
]

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
#: Variances below it are raised to it in :func:`gaussian_log_likelihood`.
VARIANCE_FLOOR = 1e-12
#: A variance is negative only below ``-ROUNDOFF × (largest |variance|)``.
ROUNDOFF = 1e-9
#: Multiples of the mean variance added to a full covariance's diagonal, tried in order, when its
#: Cholesky factorisation fails.
CHOLESKY_JITTERS = (0.0, 1e-12, 1e-10, 1e-8, 1e-6)
#: Directions of ``B − FFᵀ`` with variance below this fraction of ``B``'s are sampled with none.
SINGULAR_SNAP = 1e-10
#: How far a squared singular value of ``L⁻¹F`` (``B = LLᵀ``) may exceed 1.
SINGULAR_EXCESS = 1e-8
#: A full covariance may differ from its transpose by this × its largest variance.
SYMMETRY = 1e-8
#: The round-off of a covariance stored in a lower precision, in units of its ``eps``.
STORAGE_ROUNDOFF = 16
#: How far a covariance computed in a lower precision may be asymmetric, in units of its ``eps``.
STORAGE_ASYMMETRY = 4096
#: The last Cholesky jitter is this × ``eps / 2`` × the covariance's largest absolute row sum.
STORAGE_EIGENVALUE = 2
#: The ``|z|`` beyond which :func:`crps_gaussian` holds ``z`` still, since ``Φ(z)`` is 0 or 1
#: and ``φ(z)`` 0 in float64 from ``|z| ≈ 38.6`` on, and ``z``'s slope ``−z/σ`` would overflow
#: for a tiny ``σ``.
Z_SATURATED = 40.0

Reduction = Literal["mean", "none"]
Dims = int | Sequence[int] | None
ArrayLike = torch.Tensor | float | Sequence[float]


# ---------------------------------------------------------------------------------------- checks


def _tensor(
    name: str,
    value: object,
    device: torch.device | None = None,
    dtype: torch.dtype | None = F64,
    finite: bool = True,
) -> torch.Tensor:
    return as_tensor(name, value, "(...)", None, dtype=dtype, device=device, finite=finite)


def _pair(
    names: tuple[str, str],
    first: object,
    second: object,
    dtype: torch.dtype | None = F64,
    finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    a = _tensor(names[0], first, dtype=dtype, finite=finite)
    b = _tensor(names[1], second, a.device, dtype, finite)
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if a.numel() == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty (shape {tuple(a.shape)})")
    return a, b


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _dims(dims: Dims, ndim: int) -> tuple[int, ...] | None:
    if dims is None:
        return None
    items = (dims,) if isinstance(dims, int) else tuple(dims) if isinstance(dims, Sequence) else ()
    if not items or any(isinstance(d, bool) or not isinstance(d, int) for d in items):
        raise TypeError(f"dims must be an int or a non-empty sequence of ints, got {dims!r}")
    normal = [d + ndim if d < 0 else d for d in items]
    if any(not 0 <= d < ndim for d in normal) or len(set(normal)) != len(normal):
        raise ValueError(f"dims must be distinct axes of a {ndim}-D input, got {dims!r}")
    return tuple(normal)


def _number(name: str, value: object, positive: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or (positive and number <= 0):
        expected = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def stored_eps(*values: object) -> float:
    """Machine epsilon of the least precise floating-point tensor among ``values`` (float64's
    when there is none): the ``eps`` the storage tolerances (:data:`STORAGE_ROUNDOFF`,
    :data:`STORAGE_ASYMMETRY`, :data:`STORAGE_EIGENVALUE`) scale with."""
    floats = [v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return max((torch.finfo(v.dtype).eps for v in floats), default=EPS64)


def _checked_variance(
    name: str,
    variance: torch.Tensor,
    floor: float,
    eps: float = EPS64,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """``variance`` raised to ``floor``; negatives beyond round-off raise. Round-off is the larger
    of ``ROUNDOFF × largest |variance|`` and ``STORAGE_ROUNDOFF × eps × largest prior variance``
    (``prior``: a low-rank covariance's base variances, else ``variance`` itself)."""
    if not variance.numel():
        return variance
    largest = float(variance.detach().abs().amax())
    scale = largest if prior is None else max(largest, float(prior.detach().abs().amax()))
    tolerance = max(ROUNDOFF * largest, STORAGE_ROUNDOFF * eps * scale)
    if (variance < -tolerance).any():
        raise ValueError(
            f"{name} has negative variances (minimum {float(variance.min()):.3g}, beyond round-off "
            f"{tolerance:.3g}): the covariance is not positive semi-definite"
        )
    return variance.clamp_min(floor)


def _fitting(
    name: str, value: object, shape: torch.Size, what: str, device: torch.device
) -> torch.Tensor:
    """``value`` as a float64 tensor on ``device``, checked to broadcast to ``shape`` without
    adding axes (``what`` describes ``shape`` in the error)."""
    tensor = _tensor(name, value, device)
    try:
        broadcast = torch.broadcast_shapes(tensor.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"{name} must broadcast to {what}, got {tuple(tensor.shape)}")
    return tensor


def _samples(name: str, samples: object) -> torch.Tensor:
    if isinstance(samples, Ensemble):
        samples = samples.samples
    tensor = _tensor(name, samples)
    if tensor.ndim == 0:
        raise ValueError(f"{name} must have shape (member, ...), got a scalar")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is an empty ensemble: it has 0 members (shape {tensor.shape})")
    return tensor


def _members_and_truth(
    samples: object, truth: object, name: str = "target"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Members ``samples (member, ...)`` and ``truth`` (named ``name``) of shape ``(...)``, both
    float64 on the members' device."""
    samples = _samples("samples", samples)
    truth = _tensor(name, truth, samples.device)
    if truth.shape != samples.shape[1:]:
        raise ValueError(
            f"{name} must have shape {tuple(samples.shape[1:])} (samples without the member axis), "
            f"got {tuple(truth.shape)}"
        )
    if truth.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(truth.shape)})")
    return samples, truth


# ---------------------------------------------------------------------------- point-wise errors


def mse(pred: ArrayLike, target: ArrayLike, dims: Dims = None) -> torch.Tensor:
    """Mean squared error averaged over ``dims`` (every axis when ``None``, giving a scalar)."""
    pred, target = _pair(("pred", "target"), pred, target)
    squared = (pred - target).square()
    axes = _dims(dims, squared.ndim)
    return squared.mean() if axes is None else squared.mean(axes)


def mae(pred: ArrayLike, target: ArrayLike, dims: Dims = None) -> torch.Tensor:
    """Mean absolute error averaged over ``dims`` (every axis when ``None``, giving a scalar)."""
    pred, target = _pair(("pred", "target"), pred, target)
    absolute = (pred - target).abs()
    axes = _dims(dims, absolute.ndim)
    return absolute.mean() if axes is None else absolute.mean(axes)


def _frame_error(pred: ArrayLike, target: ArrayLike, frame_ndim: int, power: int) -> torch.Tensor:
    pred, target = _pair(("pred", "target"), pred, target)
    _positive_int("frame_ndim", frame_ndim)
    if pred.ndim < frame_ndim:
        raise ValueError(
            f"pred must have at least frame_ndim={frame_ndim} axes, got shape {tuple(pred.shape)}"
        )
    error = (pred - target).abs().pow(power)
    return error.sum(tuple(range(-frame_ndim, 0))).mean()


def frame_mse(pred: ArrayLike, target: ArrayLike, frame_ndim: int = 2) -> torch.Tensor:
    """Squared error summed over each frame (the last ``frame_ndim`` axes), averaged over frames.

    The Earthformer convention for ``(..., H, W)`` video on a [0, 1] scale.
    """
    return _frame_error(pred, target, frame_ndim, 2)


def frame_mae(pred: ArrayLike, target: ArrayLike, frame_ndim: int = 2) -> torch.Tensor:
    """Absolute error summed over each frame (the last ``frame_ndim`` axes), averaged over frames.

    The Earthformer convention for ``(..., H, W)`` video on a [0, 1] scale.
    """
    return _frame_error(pred, target, frame_ndim, 1)


def relative_l2(pred: ArrayLike, target: ArrayLike, reduction: Reduction = "mean") -> torch.Tensor:
    """``‖pred − target‖₂ / ‖target‖₂`` per sample over all non-batch axes, then the batch mean.

    ``pred`` and ``target`` are ``(batch, ...)``; ``reduction='none'`` returns ``(batch,)``. A
    target sample of zero norm raises :class:`~physml.errors.ZeroNormError`.
    """
    pred, target = _pair(("pred", "target"), pred, target)
    if pred.ndim < 2:
        raise ValueError(
            f"pred and target must be (batch, ...) with at least one axis besides the batch, got "
            f"shape {tuple(pred.shape)} (use x[None] for a single sample)"
        )
    norms = target.flatten(1).norm(dim=1)
    zero = torch.nonzero(norms == 0).flatten()
    if zero.numel():
        raise ZeroNormError(
            f"target samples {zero.tolist()} have zero L2 norm: their relative error is undefined"
        )
    return _reduce((pred - target).flatten(1).norm(dim=1) / norms, reduction)


def boundary_error(
    pred: ArrayLike, target: ArrayLike, grid: Grid1D | Grid2D, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Root-mean-square error on the grid's boundary nodes (the walls that are not periodic).

    Fields are ``(..., x)`` for a :class:`Grid1D` or ``(..., x, y)`` for a :class:`Grid2D`;
    ``reduction='none'`` gives the RMSE per leading index ``(...)``, ``'mean'`` the RMSE over all.
    """
    pred, target = _pair(("pred", "target"), pred, target)
    if isinstance(grid, Grid1D):
        shape: tuple[int, ...] = (grid.n,)
        mask = torch.zeros(grid.n, dtype=torch.bool, device=pred.device)
        mask[list(grid.boundary_indices)] = True
    elif isinstance(grid, Grid2D):
        shape = grid.shape
        mask = grid.boundary_mask(pred.device)
    else:
        raise TypeError(f"grid must be a pdes.Grid1D or pdes.Grid2D, got {type(grid).__name__}")
    if pred.ndim < len(shape) or tuple(pred.shape[pred.ndim - len(shape) :]) != shape:
        raise ValueError(f"pred must end in the grid's shape {shape}, got {tuple(pred.shape)}")
    if not mask.any():
        raise ValueError("grid is periodic on every axis: it has no boundary nodes")
    return _root_mean_square((pred - target).square()[..., mask], reduction)


def flux_error(
    pred: ArrayLike,
    grid: Grid1D,
    left: ArrayLike,
    right: ArrayLike,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Root-mean-square error of the wall derivatives ``du/dx`` against prescribed Neumann fluxes.

    ``pred`` is ``(..., x)`` on a node :class:`Grid1D` with walls (not periodic); its derivatives
    at ``lower`` and ``upper`` are the second-order one-sided stencils of
    :func:`pdes.heat.one_sided_flux` (those the heat solver and a Neumann
    :class:`~physml.constraints.BoundaryCondition` meet). ``left`` and ``right``, the fluxes there,
    broadcast to ``(...)``. ``reduction='none'`` gives the RMSE over each leading index's two
    walls ``(...)``, ``'mean'`` the RMSE over all.
    """
    pred = _tensor("pred", pred)
    if not isinstance(grid, Grid1D):
        raise TypeError(f"grid must be a pdes.Grid1D, got {type(grid).__name__}")
    if grid.periodic or grid.kind != "node":
        raise ValueError(f"grid must be a node Grid1D with walls (not periodic), got {grid!r}")
    if pred.ndim == 0 or pred.shape[-1] != grid.n:
        raise ValueError(f"pred must end in the grid's {grid.n} nodes, got {tuple(pred.shape)}")
    if pred.numel() == 0:
        raise ValueError(f"pred is empty (shape {tuple(pred.shape)})")
    walls = pred.shape[:-1]
    prescribed = [
        _fitting(name, value, walls, f"pred's leading shape {tuple(walls)}", pred.device)
        for name, value in (("left", left), ("right", right))
    ]
    errors = [
        (flux - target).square()
        for flux, target in zip(one_sided_flux(pred, grid.dx), prescribed, strict=True)
    ]
    return _root_mean_square(torch.stack(errors, -1), reduction)


def _root_mean_square(squared: torch.Tensor, reduction: str) -> torch.Tensor:
    """``'none'``: the RMSE over the last axis of ``squared`` ``(...)``; ``'mean'``: over all."""
    if reduction == "none":
        return squared.mean(-1).sqrt()
    return _reduce(squared, reduction).sqrt()


# --------------------------------------------------------------------------------- conservation


def conservation_error(
    u: ArrayLike | Gaussian | Ensemble,
    grid: Grid1D | Grid2D,
    true_mass: ArrayLike,
    time_index: int | None = None,
    absolute: bool = False,
    reduction: Reduction = "none",
    *,
    layout: str | None = None,
) -> torch.Tensor:
    """Conservation error CE: the mass ``∫ u dx`` by ``grid``'s weights minus ``true_mass``.

    ``u`` is ``(..., time, x)`` (``(..., time, x, y)`` on a :class:`Grid2D`), or a Gaussian or
    Ensemble whose mean is used; ``true_mass`` broadcasts to ``(..., time)``. Returns the signed
    CE ``(..., time)`` (``|CE|`` when ``absolute``), only slice ``time_index`` when given (e.g. 100
    for t = 0.5 on 201 times in [0, 1]); ``reduction='mean'`` averages over the leading axes (the
    test functions), keeping the time axis unless one slice was picked.

    ``layout`` names ``u``'s axes as :func:`physml.mass_conservation` does, for time elsewhere:
    ``"tx"`` or ``"btcx"`` on a :class:`Grid1D`, ``"btchw"`` (the toolkit's forecasts) on a
    :class:`Grid2D`. The CE is then shaped like ``u`` without its space axes (``(b, t, c)``),
    ``true_mass`` broadcasts to that, ``time_index`` picks on the ``t`` axis and
    ``reduction='mean'`` averages over ``b`` alone, keeping ``t`` and ``c``.
    """
    if isinstance(u, Gaussian):
        u = u.mean
    elif isinstance(u, Ensemble):
        u = u.samples.mean(0)
    u = _tensor("u", u)
    if isinstance(grid, Grid1D):
        space: tuple[int, ...] = (grid.n,)
    elif isinstance(grid, Grid2D):
        space = grid.shape
    else:
        raise TypeError(f"grid must be a pdes.Grid1D or pdes.Grid2D, got {type(grid).__name__}")
    if layout is None:
        names, fit = "..., time", "the grid"
        time_axis = u.ndim - len(space) - 1
        batch_axes = tuple(range(time_axis))
    else:
        allowed = layouts_for(len(space), timed=True)
        if layout not in allowed:
            raise ValueError(
                f"layout must be one of {allowed} (those with a time axis) for a "
                f"{type(grid).__name__}, got {layout!r}"
            )
        names, fit = ", ".join(layout[: -len(space)]), f"layout {layout!r} and the grid"
        time_axis = layout.index("t")
        batch_axes = (layout.index("b"),) if "b" in layout else ()
    wrong_count = time_axis < 0 if layout is None else u.ndim != len(layout)
    if wrong_count or tuple(u.shape[u.ndim - len(space) :]) != space:
        raise ValueError(
            f"u must have shape ({names}, {', '.join(map(str, space))}) to match {fit}, got "
            f"{tuple(u.shape)}"
        )
    mass = grid.integrate(u)
    what = f"the masses' shape {tuple(mass.shape)} ({names})"
    error = mass - _fitting("true_mass", true_mass, mass.shape, what, u.device)
    if time_index is not None:
        count = error.shape[time_axis]
        if isinstance(time_index, bool) or not isinstance(time_index, int):
            raise TypeError(f"time_index must be an int or None, got {time_index!r}")
        if not -count <= time_index < count:
            where = (
                "the one before the grid's; layout= names another"
                if layout is None
                else f"'t' of layout {layout!r}"
            )
            raise ValueError(
                f"time_index must be in [{-count}, {count}) on the time axis (axis {time_axis} of "
                f"u {tuple(u.shape)}, {where}), got {time_index}"
            )
        error = error.select(time_axis, time_index)
        batch_axes = tuple(a - (a > time_axis) for a in batch_axes)
    if absolute:
        error = error.abs()
    if reduction == "none":
        return error
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return error.mean(batch_axes) if batch_axes else error


def abs_conservation_error(
    u: ArrayLike | Gaussian | Ensemble,
    grid: Grid1D | Grid2D,
    true_mass: ArrayLike,
    time_index: int | None = None,
    reduction: Reduction = "none",
    *,
    layout: str | None = None,
) -> torch.Tensor:
    """``|CE|``: :func:`conservation_error` with ``absolute=True`` (the same ``u``, ``grid``,
    ``true_mass``, ``time_index``, ``reduction`` and ``layout``)."""
    return conservation_error(
        u, grid, true_mass, time_index, absolute=True, reduction=reduction, layout=layout
    )


# ------------------------------------------------------------------------ probabilistic scores


def _mean_variance(
    prediction: object,
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]:
    """``(mean, variance)`` in float64, the storage ``eps`` and the prior variances (a low-rank
    covariance's base, ``None`` otherwise) for :func:`_checked_variance`."""
    prior = None
    if isinstance(prediction, Gaussian):
        mean = _tensor("mean", prediction.mean)
        cov = prediction.cov
        if isinstance(cov, LowRankCovariance):
            eps = stored_eps(prediction.mean, cov.base, cov.factor)
            base = _tensor("cov.base", cov.base, mean.device)
            factor = _tensor("cov.factor", cov.factor, mean.device)
            diagonal = cov.base_is_diagonal
            variance = LowRankCovariance(base, factor, diagonal).variance()
            prior = base if diagonal else torch.diagonal(base, dim1=-2, dim2=-1)
        else:
            eps = stored_eps(prediction.mean, cov)
            variance = _tensor("variance", prediction.variance(), mean.device)
    elif isinstance(prediction, tuple | list) and len(prediction) == 2:
        eps = stored_eps(*prediction)
        mean = _tensor("mean", prediction[0])
        variance = _tensor("variance", prediction[1], mean.device)
        try:
            variance = variance.expand(mean.shape)
        except RuntimeError:
            raise ValueError(
                f"variance must broadcast to the mean's shape {tuple(mean.shape)}, got "
                f"{tuple(variance.shape)}"
            ) from None
    else:
        raise TypeError(
            f"prediction must be a physml.Gaussian or a (mean, variance) pair, got "
            f"{type(prediction).__name__}"
        )
    return mean, variance, eps, prior


def marginal_std(gaussian: Gaussian) -> torch.Tensor:
    """Marginal standard deviations ``(..., n)`` of ``gaussian`` (any covariance kind), float64.

    Round-off negatives (see :data:`ROUNDOFF`, :data:`STORAGE_ROUNDOFF`) become 0; larger
    negatives raise ``ValueError``.
    """
    if not isinstance(gaussian, Gaussian):
        raise TypeError(f"gaussian must be a physml.Gaussian, got {type(gaussian).__name__}")
    return _mean_std("gaussian", gaussian)[1]


def _mean_std(name: str, prediction: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` in float64 of a :class:`Gaussian` or a ``(mean, variance)`` pair; round-off
    negative variances become 0, larger ones raise naming ``name``."""
    mean, variance, eps, prior = _mean_variance(prediction)
    return mean, safe_sqrt(_checked_variance(name, variance, 0.0, eps, prior))


def gaussian_log_likelihood(
    prediction: Gaussian | tuple[ArrayLike, ArrayLike],
    target: ArrayLike,
    reduction: Reduction = "mean",
    min_variance: float = VARIANCE_FLOOR,
) -> torch.Tensor:
    """Mean Gaussian log density of ``target`` under the prediction's marginals (diagonal).

    ``prediction`` is a :class:`Gaussian` (diagonal, full or low-rank covariance: its marginal
    variances are used) or a ``(mean, variance)`` pair, the variance broadcast to the mean's
    shape aligned from the right, as in numpy (on a ``(B, C, N)`` mean a per-sample variance is
    written ``(B, 1, N)``: ``(B, N)`` would be read per channel where ``B == C``). Variances are
    raised to ``min_variance``; negative ones raise ``ValueError``. ``reduction='none'`` returns
    the log density per point.
    """
    mean, variance, eps, prior = _mean_variance(prediction)
    floor = _number("min_variance", min_variance, positive=True)
    variance = _checked_variance("prediction", variance, floor, eps, prior)
    mean, target = _pair(("mean", "target"), mean, target)
    log_density = -0.5 * (torch.log(2 * math.pi * variance) + (target - mean).square() / variance)
    return _reduce(log_density, reduction)


def crps_gaussian(
    mean: ArrayLike, std: ArrayLike, target: ArrayLike, reduction: Reduction = "mean"
) -> torch.Tensor:
    """CRPS of ``N(mean, std²)`` at ``target`` in closed form, averaged over points.

    ``σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π]`` with ``z = (y − μ)/σ``, computed as
    ``(y − μ)(2Φ(z) − 1) + σ (2φ(z) − 1/√π)`` with ``z`` held at ``±Z_SATURATED`` beyond it
    (``Φ`` is 0 or 1 there, ``φ`` 0), so that its slope in ``σ`` is ``2φ(z) − 1/√π`` down to
    ``σ → 0+``: ``σ = 0`` gives ``|y − μ|`` and that limit (``(√2 − 1)/√π`` at ``y = μ``,
    ``−1/√π`` elsewhere). ``std`` broadcasts to ``mean``'s shape aligned from the right, as in
    numpy (on a ``(B, C, N)`` mean a per-sample std is written ``(B, 1, N)``: ``(B, N)`` would be
    read per channel where ``B == C``); ``reduction='none'`` returns the score per point.
    """
    mean, target = _pair(("mean", "target"), mean, target)
    std = _tensor("std", std, mean.device)
    try:
        std = std.expand(mean.shape)
    except RuntimeError:
        raise ValueError(
            f"std must broadcast to the mean's shape {tuple(mean.shape)}, got {tuple(std.shape)}"
        ) from None
    if (std < 0).any():
        raise ValueError(f"std must be >= 0, got minimum {float(std.min()):.3g}")
    gap = target - mean
    inside = (std > 0) & (gap.abs() <= Z_SATURATED * std)
    z = torch.where(inside, gap / torch.where(inside, std, 1.0), Z_SATURATED * gap.sign())
    density = torch.exp(-0.5 * z.square()) / math.sqrt(2 * math.pi)
    score = gap * (2 * torch.special.ndtr(z) - 1) + std * (2 * density - 1 / math.sqrt(math.pi))
    return _reduce(score, reduction)


def crps_ensemble(
    samples: ArrayLike | Ensemble,
    target: ArrayLike,
    fair: bool = False,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Ensemble CRPS ``E|X − y| − ½ E|X − X'|`` over members ``samples (member, ...)``.

    ``fair=False``: the plain form, the CRPS of the members' empirical distribution (``E|X − X'|``
    over all ``M²`` ordered pairs). ``fair=True``: the unbiased form (``M (M − 1)`` distinct pairs),
    which needs 2 members. ``target`` is ``samples.shape[1:]``; ``reduction='none'`` gives the
    score per point. Costs ``O(M log M)`` per point.
    """
    samples, target = _members_and_truth(samples, target)
    members = samples.shape[0]
    if fair and members < 2:
        raise ValueError(f"the fair ensemble CRPS needs at least 2 members, got {members}")
    skill = (samples - target).abs().mean(0)
    ordered = samples.sort(0).values
    rank = torch.arange(members, dtype=F64, device=samples.device)
    weights = (2 * rank - members + 1).reshape(-1, *([1] * target.ndim))
    pair_sum = 2 * (weights * ordered).sum(0)
    pairs = members * (members - 1) if fair else members**2
    return _reduce(skill - 0.5 * pair_sum / pairs, reduction)


def crps_ensemble_in_chunks(
    samples: torch.Tensor, target: torch.Tensor, fair: bool = False, chunk: int = 8
) -> torch.Tensor:
    """:func:`crps_ensemble` per point (``reduction='none'``) of members ``samples (M, N, ...)``
    against ``target (N, ...)``, ``chunk`` of the ``N`` items at a time: the sort copies the
    members, so a large ensemble is scored in bounded memory."""
    chunk = _positive_int("chunk", chunk)
    samples, target = _members_and_truth(samples, target)
    if samples.ndim < 2:
        raise ValueError(f"samples must be (member, item, ...), got shape {tuple(samples.shape)}")
    parts = zip(samples.split(chunk, 1), target.split(chunk), strict=True)
    return torch.cat([crps_ensemble(part, truth, fair, "none") for part, truth in parts])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equally shaped tensors (flattened): the Pearson
    correlation of their ranks, tied values sharing their average rank; 0 when either is
    constant (nothing to rank)."""
    a, b = _pair(("a", "b"), a, b)
    if a.numel() < 2:
        raise ValueError(f"a and b must hold at least 2 values to rank, got {a.numel()}")
    ra, rb = (r - r.mean() for r in (_average_ranks(a), _average_ranks(b)))
    return float(((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-300)).detach())


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``x``'s values (flattened), ties given the mean of the ranks they span."""
    _, inverse, counts = torch.unique(x.flatten(), return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(F64)
    return (ends - (counts.to(F64) - 1) / 2)[inverse]


def spread_skill(samples: ArrayLike | Ensemble, truth: ArrayLike) -> float:
    """Spread over skill: ``√((M + 1)/M · mean var) / √(mean (x̄ − y)²)`` of members
    ``samples (M, ...)`` against ``truth`` ``(...)`` (unbiased member variance; 1 for a
    calibrated ensemble, < 1 over-confident). An ensemble mean equal to ``truth`` gives ``inf``
    when the members spread; with no spread either the ratio is 0/0 and raises ``ValueError``."""
    samples, truth = _members_and_truth(samples, truth, "truth")
    members = samples.shape[0]
    if members < 2:
        raise ValueError(f"spread_skill needs at least 2 members, got {members}")
    spread = samples.var(0).mean() * (members + 1) / members
    skill = (samples.mean(0) - truth).square().mean()
    if skill == 0 and spread == 0:
        raise ValueError(
            "spread_skill is undefined (0/0): the members of samples are identical and equal "
            "to truth"
        )
    return float((spread / skill).detach().sqrt())


def _is_gaussian(prediction: object) -> bool:
    """Whether ``prediction`` is a :class:`Gaussian` or a ``(mean, variance)`` pair (``False``
    for an :class:`Ensemble`; anything else raises naming its type)."""
    if isinstance(prediction, Ensemble):
        return False
    if isinstance(prediction, Gaussian) or (
        isinstance(prediction, tuple | list) and len(prediction) == 2
    ):
        return True
    raise TypeError(
        f"prediction must be a physml.Gaussian, an Ensemble or a (mean, variance) pair, got "
        f"{type(prediction).__name__}"
    )


def _marginals_and_target(
    prediction: object, target: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, std, target)`` in float64 of a :class:`Gaussian` or ``(mean, variance)`` pair and
    a ``target`` shaped like its mean."""
    mean, std = _mean_std("prediction", prediction)
    mean, target = _pair(("mean", "target"), mean, target)
    return mean, std, target


def _level(level: object) -> float:
    value = _number("level", level)
    if not 0 < value < 1:
        raise ValueError(f"level must be a probability in (0, 1), got {level!r}")
    return value


def _plotting_quantile(ordered: torch.Tensor, probability: float) -> torch.Tensor:
    """The ``probability`` quantile of sorted members ``ordered (M, ...)``: the ``k``-th smallest
    is the ``k / (M + 1)`` quantile, linear in between, the smallest and largest beyond
    (numpy's ``method="weibull"``)."""
    members = ordered.shape[0]
    position = min(max(probability * (members + 1) - 1, 0.0), members - 1.0)
    below = math.floor(position)
    above = min(below + 1, members - 1)
    return torch.lerp(ordered[below], ordered[above], position - below)


def coverage(
    prediction: Gaussian | Ensemble | tuple[ArrayLike, ArrayLike],
    target: ArrayLike,
    level: float = 0.9,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Share of ``target`` points inside the prediction's central ``level`` interval (ends in).

    ``prediction`` is a :class:`Gaussian` (any covariance: its marginal variances) or a
    ``(mean, variance)`` pair (the variance aligned with the mean from the right, as
    :func:`gaussian_log_likelihood` reads it), ``target`` shaped like the mean: the interval is
    ``μ ± zσ`` with ``Φ(z) = (1 + level)/2``. Or an :class:`Ensemble` of ``M`` members ``(M,
    ...)``, ``target`` ``(...)``: the interval between the members' ``(1 ∓ level)/2``
    quantiles, the ``k``-th smallest member being the ``k/(M + 1)`` quantile (linear in between;
    numpy's ``method="weibull"``), so that a calibrated ensemble covers about ``level``, but no
    more than ``(M − 1)/(M + 1)``: beyond its smallest and largest member the interval stops.
    ``level`` in (0, 1); ``reduction='none'`` gives 1 (inside) or 0 per point.
    """
    probability = _level(level)
    if _is_gaussian(prediction):
        mean, std, target = _marginals_and_target(prediction, target)
        half_width = NormalDist().inv_cdf((1 + probability) / 2) * std
        inside = (target - mean).abs() <= half_width
    else:
        samples, target = _members_and_truth(prediction, target)
        ordered = samples.sort(0).values
        low = _plotting_quantile(ordered, (1 - probability) / 2)
        high = _plotting_quantile(ordered, (1 + probability) / 2)
        inside = (low <= target) & (target <= high)
    return _reduce(inside.to(F64), reduction)


def pit(
    prediction: Gaussian | Ensemble | tuple[ArrayLike, ArrayLike], target: ArrayLike
) -> torch.Tensor:
    """Probability integral transform: the predictive CDF at each ``target`` point, shaped like
    ``target``; uniform on [0, 1] for a calibrated prediction (a U-shaped histogram: too narrow,
    a hump: too wide).

    ``prediction`` is a :class:`Gaussian` (its marginals) or a ``(mean, variance)`` pair (read as
    :func:`gaussian_log_likelihood` reads it): ``Φ((y − μ)/σ)``, and with ``σ = 0`` 0, ½ or 1 as
    ``y`` is below, at or above ``μ``. Or an :class:`Ensemble` of ``M`` members ``(M, ...)`` and
    ``target`` ``(...)``: the mid-rank
    ``(#{x < y} + ½ #{x = y} + ½) / (M + 1)``, the middle of ``y``'s place among the ``M + 1``
    gaps the sorted members leave (not randomised): a calibrated ensemble without ties gives each
    of ``(k + ½)/(M + 1)``, ``k = 0 … M``, equally often (binned in ``M + 1``, the rank
    histogram). Ties (members clipped at 0 by :class:`~physml.constraints.NonNegative`, a
    discrete target) put ``y`` in the middle of its tied run, so even a calibrated ensemble's
    histogram then piles up at the middle of the tied ranks (the low ranks for members clipped
    at 0) and empties the run's outer bins: read it on the tie-free points.
    """
    if _is_gaussian(prediction):
        mean, std, target = _marginals_and_target(prediction, target)
        spread = std > 0
        z = (target - mean) / torch.where(spread, std, torch.ones_like(std))
        return torch.where(spread, torch.special.ndtr(z), (torch.sign(target - mean) + 1) / 2)
    samples, target = _members_and_truth(prediction, target)
    below = (samples < target).sum(0).to(F64)
    ties = (samples == target).sum(0).to(F64)
    return (below + ties / 2 + 0.5) / (samples.shape[0] + 1)


def mean_se(values: ArrayLike) -> tuple[float, float]:
    """Mean of ``values`` (flattened) and its standard error ``s / √n`` (``s`` the sample standard
    deviation, ``n − 1`` in its denominator): NaN for one value, which has no spread to read it
    from. A NaN among ``values`` (an unknown one) makes both NaN."""
    values = _tensor("values", values, finite=False).flatten()
    if values.numel() == 0:
        raise ValueError("values is empty")
    count = values.numel()
    se = float(values.std()) / math.sqrt(count) if count > 1 else math.nan
    return float(values.mean()), se


_PICKS_AT_ONCE = 1 << 22
"""How many bootstrap picks are drawn, and values gathered, at once (tens of MB), in whole
resamples, at least 2."""


def bootstrap_se(values: ArrayLike, seed: int = 0, resamples: int = 1000) -> float:
    """Bootstrap standard error of the mean of ``values`` (flattened; ``resamples >= 2`` draws).

    The picks are the ``(resamples, N)`` draw of a generator seeded by ``seed``, drawn a block of
    whole resamples at a time (the same numbers in the same order) into arrays made once, so the
    memory stays bounded and is not fragmented. No gradient: ``values`` is read detached."""
    values = _tensor("values", values).flatten().detach()
    if values.numel() == 0:
        raise ValueError("values is empty")
    resamples = _positive_int("resamples", resamples, minimum=2)  # one resample mean has no spread
    generator = torch.Generator().manual_seed(seed)
    count = len(values)
    blocks = _row_blocks(resamples, max(2, _PICKS_AT_ONCE // count))
    picks = torch.empty((max(blocks), count), dtype=torch.int64)
    picked = torch.empty(picks.shape, dtype=values.dtype, device=values.device)
    means = torch.empty(resamples, dtype=values.dtype, device=values.device)
    start = 0
    for rows in blocks:
        torch.randint(count, (rows, count), generator=generator, out=picks[:rows])
        torch.take(values, picks[:rows].to(values.device), out=picked[:rows])
        torch.mean(picked[:rows], 1, out=means[start : start + rows])
        start += rows
    return float(means.std())


def _row_blocks(rows: int, most: int) -> list[int]:
    """Sizes of consecutive blocks of ``most`` of ``rows >= 2`` rows, the rest in a last block, a
    lone last row joining the block before: torch sums the row of a one-row reduction in parallel
    pieces (its last bits depend on the threads), each row of a larger one whole, as in one draw."""
    sizes = [most] * (rows // most) + [rows % most] * (rows % most > 0)
    if sizes[-1] == 1:
        sizes[-2:] = [sizes[-2] + 1]
    return sizes


# ----------------------------------------------------------------------- shocks and sampling


def shock_position(
    samples: ArrayLike | Ensemble,
    x: ArrayLike,
    threshold: float = 0.0,
    interpolate: bool = False,
) -> torch.Tensor:
    """The first ``x`` at which each profile is ``<= threshold``: ``samples (..., X)`` → ``(...)``.

    The ProbConserv protocol (posterior samples, first x where the sample is <= 0). ``x`` is
    increasing ``(X,)``. A profile that never reaches the threshold gives ``+inf`` (the infimum of
    an empty set: the front lies beyond the domain). ``interpolate=True`` places the crossing by
    linear interpolation between the last point above the threshold and the first one at or below.
    """
    if isinstance(samples, Ensemble):
        samples = samples.samples
    samples = _tensor("samples", samples)
    x = _tensor("x", x, samples.device)
    level = _number("threshold", threshold)
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 1-D tensor (X,), got shape {tuple(x.shape)}")
    if samples.ndim == 0 or samples.shape[-1] != x.numel():
        raise ValueError(
            f"samples must have shape (..., {x.numel()}) to match x, got {tuple(samples.shape)}"
        )
    if (x.diff() <= 0).any():
        raise ValueError("x must be strictly increasing")
    below = samples <= level
    first = below.to(torch.uint8).argmax(-1)
    position = x[first]
    if interpolate:
        previous = (first - 1).clamp_min(0)
        above_value = samples.gather(-1, previous.unsqueeze(-1)).squeeze(-1)
        below_value = samples.gather(-1, first.unsqueeze(-1)).squeeze(-1)
        gap = torch.where(first > 0, above_value - below_value, torch.ones_like(above_value))
        fraction = torch.where(first > 0, (above_value - level) / gap, torch.ones_like(gap))
        position = x[previous] + fraction * (x[first] - x[previous])
    return torch.where(below.any(-1), position, torch.full_like(position, math.inf))


def _generator(generator: torch.Generator | int, device: torch.device) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        if generator.device.type != device.type:
            raise ValueError(
                f"generator is on {generator.device} but the Gaussian is on {device}: use a "
                f"generator on the same device (or pass an integer seed)"
            )
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator must be a torch.Generator or an int seed, got {generator!r}")
    return torch.Generator(device=device).manual_seed(generator)


def asymmetry_tolerance(eps: float = EPS64) -> float:
    """How far a full covariance stored with machine epsilon ``eps`` may differ from its
    transpose, relative to its largest variance: :data:`SYMMETRY`, or ``STORAGE_ASYMMETRY × eps``
    when larger."""
    return max(SYMMETRY, STORAGE_ASYMMETRY * _number("eps", eps, positive=True))


def _symmetrised(
    cov: torch.Tensor, eps: float = EPS64, name: str = "the Gaussian's full covariance"
) -> torch.Tensor:
    """``(cov + covᵀ) / 2`` for a full covariance ``(..., n, n)`` that differs from its
    transpose by at most :func:`asymmetry_tolerance` × its largest variance (round-off); a
    larger asymmetry is a ``ValueError`` naming ``name``."""
    values = cov.detach()
    scale = values.diagonal(dim1=-2, dim2=-1).abs().amax().clamp_min(torch.finfo(F64).tiny)
    tolerance = asymmetry_tolerance(eps)
    asymmetry = float((values - values.mT).abs().amax() / scale)
    if asymmetry > tolerance:
        raise ValueError(
            f"{name} is not symmetric: |cov − covᵀ| reaches "
            f"{asymmetry:.3g} × its largest variance (round-off allows {tolerance:.3g})"
        )
    return (cov + cov.mT) / 2


def _cholesky_with_jitter(
    cov: torch.Tensor, eps: float = EPS64, name: str = "the Gaussian's full covariance"
) -> torch.Tensor:
    """The lower Cholesky factor of ``cov`` (symmetric to :data:`SYMMETRY`, or to
    ``STORAGE_ASYMMETRY × eps`` of its storage; symmetrised first); ``name`` says which matrix
    in an error.

    Jitters tried, smallest first: :data:`CHOLESKY_JITTERS` × the mean variance, then up to the
    storage round-off :data:`STORAGE_EIGENVALUE` × ``eps / 2`` × the largest absolute row sum
    (per slice) in steps of 10: rounding each entry to ``eps`` (by at most ``eps / 2`` of
    itself) adds an error ``E`` with ``‖E‖₂ <= eps / 2 × max_i Σ_j |cov_ij|``, which bounds how
    far it moves any eigenvalue. An eigenvalue below the last is refused.
    """
    cov = _symmetrised(cov, eps, name)
    mean_variance = cov.diagonal(dim1=-2, dim2=-1).clamp_min(0).mean(-1)[..., None, None]
    row_sum = cov.abs().sum(-1).amax(-1)[..., None, None]
    storage = STORAGE_EIGENVALUE * eps / 2 * row_sum
    jitters = [jitter * mean_variance for jitter in CHOLESKY_JITTERS]
    jitters += [torch.maximum(jitters[-1], share * storage) for share in (1e-3, 1e-2, 1e-1, 1)]
    eye = torch.eye(cov.shape[-1], dtype=F64, device=cov.device)
    for jitter in jitters:
        factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if not (info > 0).any():
            return factor
    raise ValueError(
        f"{name} is not positive semi-definite: its Cholesky factorisation fails even with the "
        f"larger of {CHOLESKY_JITTERS[-1]:g} × the mean variance and the storage round-off "
        f"{STORAGE_EIGENVALUE:g} × eps / 2 × its largest absolute row sum (eps = {eps:.3g}) added "
        "to the diagonal"
    )


def low_rank_noise(cov: LowRankCovariance, z: torch.Tensor, eps: float = EPS64) -> torch.Tensor:
    """``cov``'s square root applied to ``z (count, ..., n)``, as :func:`gaussian_samples` draws
    (``z`` standard normal gives samples of ``N(0, cov)``); ``eps``: its storage precision
    (:func:`stored_eps`)."""
    if not isinstance(cov, LowRankCovariance):
        raise TypeError(f"cov must be a LowRankCovariance, got {type(cov).__name__}")
    n = cov.base.shape[-1]
    z = as_tensor("z", z, f"(count, ..., {n})", None, n)
    if z.ndim < 2:
        raise ValueError(f"z must have shape (count, ..., {n}), got {tuple(z.shape)}")
    eps = _number("eps", eps, positive=True)
    base = _tensor("cov.base", cov.base, z.device)
    factor = _tensor("cov.factor", cov.factor, z.device)
    diagonal = cov.base_is_diagonal
    prior = base if diagonal else torch.diagonal(base, dim1=-2, dim2=-1)
    _checked_variance("cov", LowRankCovariance(base, factor, diagonal).variance(), 0.0, eps, prior)
    if diagonal:
        root = safe_sqrt(base.clamp_min(0))
        inverse = torch.where(root > 0, 1 / torch.where(root > 0, root, 1.0), 0.0)
        whitened = factor * inverse.unsqueeze(-1)
        spread = torch.ones(base.shape[:-1], dtype=F64, device=z.device)

        def apply_root(v: torch.Tensor) -> torch.Tensor:
            return root * v

    else:
        lower = _cholesky_with_jitter(base, eps, "cov.base")
        whitened = torch.linalg.solve_triangular(lower, factor, upper=False)
        pivots = lower.diagonal(dim1=-2, dim2=-1)
        spread = pivots.amax(-1) / pivots.amin(-1).clamp_min(torch.finfo(F64).tiny)

        def apply_root(v: torch.Tensor) -> torch.Tensor:
            return (lower @ v.movedim(0, -1)).movedim(-1, 0)

    basis, singular, _ = torch.linalg.svd(whitened, full_matrices=False)
    squared = singular.square()
    roundoff = (STORAGE_ROUNDOFF * eps * spread).unsqueeze(-1)
    allowed = roundoff.clamp_min(SINGULAR_EXCESS).expand_as(squared)
    excess = squared - 1 - allowed
    if (excess > 0).any():
        worst = int(excess.flatten().argmax())
        value = float(singular.flatten()[worst])
        raise ValueError(
            "cov (base − FFᵀ) is not positive semi-definite: L⁻¹F (base = LLᵀ) has a singular "
            f"value 1 + {(value**2 - 1) / (value + 1):.2e} > 1 (its square may exceed 1 by "
            f"{float(allowed.flatten()[worst]):.2e} of round-off)"
        )
    remaining = 1 - squared.clamp_max(1)
    snap = roundoff.clamp_min(SINGULAR_SNAP)
    shrink = 1 - safe_sqrt(torch.where(remaining < snap, 0.0, remaining))
    coefficients = torch.einsum("...nk,s...n->s...k", basis, z) * shrink
    return apply_root(z - torch.einsum("...nk,s...k->s...n", basis, coefficients))


def gaussian_samples(
    gaussian: Gaussian, count: int, generator: torch.Generator | int
) -> torch.Tensor:
    """``count`` draws ``(count, ..., n)`` (float64) from ``gaussian``, e.g. posterior samples.

    Diagonal covariance: independent normals. Full: through its Cholesky factor, adding
    :data:`CHOLESKY_JITTERS` × the mean variance to the diagonal only if the factorisation fails.
    :class:`LowRankCovariance` ``B − FFᵀ`` (a constrained posterior, often singular): exact, with
    ``B = LLᵀ`` (``L = B^(1/2)`` for a diagonal ``B``, no ``n × n`` matrix formed) and
    ``L⁻¹F = U S Vᵀ``, the square root is ``L (I − U diag(1 − √(1 − S²)) Uᵀ)``, so samples of
    an exactly constrained posterior meet the constraint to the round-off of the covariance's
    storage precision (:data:`STORAGE_ROUNDOFF`) when ``B`` factorises as it is. A numerically
    singular ``B`` (a smooth prior, e.g. a GP's) is factorised with a jitter ``δ``, as a full
    covariance is: the samples then miss each constraint row ``g`` by a standard deviation of
    at most ``√δ ‖g‖`` (about 1e-6 on a GP's diffusion posterior, ``δ`` = 1e-8 × its mean
    variance); the mean is not affected. ``generator`` is a ``torch.Generator`` on the
    Gaussian's device or an integer seed.
    """
    if not isinstance(gaussian, Gaussian):
        raise TypeError(f"gaussian must be a physml.Gaussian, got {type(gaussian).__name__}")
    count = _positive_int("count", count)
    mean = _tensor("mean", gaussian.mean)
    source = _generator(generator, mean.device)
    z = torch.randn((count, *mean.shape), generator=source, dtype=F64, device=mean.device)
    cov = gaussian.cov
    if isinstance(cov, LowRankCovariance):
        eps = stored_eps(gaussian.mean, cov.base, cov.factor)
        return mean + low_rank_noise(cov, z, eps)
    eps = stored_eps(gaussian.mean, cov)
    cov = _tensor("cov", cov, mean.device)
    if gaussian.is_diagonal:
        return mean + safe_sqrt(_checked_variance("cov", cov, 0.0, eps)) * z
    factor = _cholesky_with_jitter(cov, eps)
    return mean + (factor @ z.movedim(0, -1)).movedim(-1, 0)


# ------------------------------------------------------------------------------------- images


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(size, dtype=F64, device=device) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma).square())
    return weights / weights.sum()


def ssim(
    a: ArrayLike,
    b: ArrayLike,
    data_range: float,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Structural similarity of images ``(..., H, W)`` (Wang et al. 2004): 1 for identical images.

    ``a`` and ``b`` are the two images (one shape). Local statistics under a normalised Gaussian
    window of ``window_size × window_size`` pixels and standard deviation ``sigma`` pixels (11 ×
    11, σ = 1.5) at every position where it fits inside the image; ``C₁ = (k1 L)²``, ``C₂ =
    (k2 L)²`` with ``L = data_range``; biased local (co)variances. Each image's SSIM is the mean
    of its map; ``reduction='none'`` → ``(...)``.
    """
    a, b = _pair(("a", "b"), a, b)
    size = _positive_int("window_size", window_size)
    spread = _number("sigma", sigma, positive=True)
    level = _number("data_range", data_range, positive=True)
    c1 = (_number("k1", k1, positive=True) * level) ** 2
    c2 = (_number("k2", k2, positive=True) * level) ** 2
    if a.ndim < 2 or min(a.shape[-2:]) < size:
        raise ValueError(
            f"a and b must be images (..., H, W) with H, W >= window_size={size}, got shape "
            f"{tuple(a.shape)}"
        )
    height, width = a.shape[-2:]
    window = _gaussian_window(size, spread, a.device)

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        rows = nnf.conv2d(image.reshape(-1, 1, height, width), window.view(1, 1, size, 1))
        return nnf.conv2d(rows, window.view(1, 1, 1, size))

    mean_a, mean_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mean_a.square()
    var_b = local_mean(b * b) - mean_b.square()
    covariance = local_mean(a * b) - mean_a * mean_b
    luminance = (2 * mean_a * mean_b + c1) / (mean_a.square() + mean_b.square() + c1)
    structure = (2 * covariance + c2) / (var_a + var_b + c2)
    per_image = (luminance * structure).mean((-3, -2, -1)).reshape(a.shape[:-2])
    return _reduce(per_image, reduction)


def csi(
    pred: ArrayLike,
    target: ArrayLike,
    threshold: float | Sequence[float] | torch.Tensor,
    dims: Dims = None,
) -> torch.Tensor:
    """Critical success index ``hits / (hits + misses + false alarms)`` for events ``>= threshold``.

    Counts are summed over ``dims`` (every axis when ``None``) before the ratio. A sequence of
    thresholds adds a leading axis. Where no event is predicted or observed the index is
    undefined and the result is NaN.
    """
    pred, target = _pair(("pred", "target"), pred, target)
    levels = _tensor("threshold", threshold, pred.device)
    if levels.ndim > 1 or levels.numel() == 0:
        raise ValueError(f"threshold must be a number or a 1-D sequence, got {tuple(levels.shape)}")
    axes = _dims(dims, pred.ndim)
    scores = []
    for level in levels.reshape(-1):
        predicted, observed = pred >= level, target >= level
        counts = [
            (p & o).to(F64).sum() if axes is None else (p & o).to(F64).sum(axes)
            for p, o in ((predicted, observed), (~predicted, observed), (predicted, ~observed))
        ]
        hits, misses, false_alarms = counts
        scores.append(hits / (hits + misses + false_alarms))
    return scores[0] if levels.ndim == 0 else torch.stack(scores)


# ------------------------------------------------------------------------------------- energy


def energy_error(
    frames: torch.Tensor | Ensemble,
    energy0: ArrayLike,
    judge,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """``mean_t |E_judge(x̂_t) − E₀|`` over a forecast's frames, per sample (PreDiff's energy error).

    ``frames`` ``(B, T, C, H, W)``, or ensemble members ``(M, B, T, C, H, W)`` (a tensor or an
    :class:`~physml.outputs.Ensemble`), are handed to ``judge`` as they come (its dtype);
    ``judge(frames (N, T, C, H, W)) → (N, T)`` is an independent energy regressor (e.g.
    :class:`physml.models.energy_judge.EnergyJudge`), run without gradient. ``energy0`` ``(B,)``:
    the energy each forecast should keep. ``reduction='none'`` → ``(B,)`` or ``(M, B)``. The
    judge's own error on true frames (the same function on the truth) is the noise floor.
    """
    if isinstance(frames, Ensemble):
        frames = frames.samples
    if not isinstance(frames, torch.Tensor) or frames.ndim not in (5, 6):
        got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be (B, T, C, H, W) or (M, B, T, C, H, W), got {got}")
    if not callable(judge):
        raise TypeError(f"judge must be callable(frames) -> (N, T), got {type(judge).__name__}")
    finite("frames", frames)
    leading, steps = frames.shape[:-4], frames.shape[-4]
    target = as_tensor("energy0", energy0, f"({leading[-1]},)", 1, device=frames.device)
    if target.shape[0] != leading[-1]:
        raise ValueError(f"energy0 must have shape ({leading[-1]},), got {tuple(target.shape)}")
    with torch.no_grad():
        judged = judge(frames.reshape(-1, *frames.shape[-4:]))
    if not isinstance(judged, torch.Tensor) or judged.shape != (math.prod(leading), steps):
        got = tuple(judged.shape) if isinstance(judged, torch.Tensor) else type(judged).__name__
        raise ValueError(f"judge must return (N, T) = ({math.prod(leading)}, {steps}), got {got}")
    judged = finite("judge(frames)", judged).to(F64).reshape(*leading, steps)
    return _reduce((judged - target[:, None]).abs().mean(-1), reduction)


# ------------------------------------------------------------------------------- model updates


def negative_flip_rate(old_pred: ArrayLike, new_pred: ArrayLike, labels: ArrayLike) -> torch.Tensor:
    """Fraction of examples the old model got right and the new model gets wrong.

    ``old_pred``, ``new_pred`` and ``labels`` are the two models' predicted and the true class
    labels, of one shape (integers). Integer labels are compared exactly, in their integer dtypes
    (float64 would merge labels above 2**53).
    """
    old, new = _pair(("old_pred", "new_pred"), old_pred, new_pred, dtype=None)
    _, truth = _pair(("old_pred", "labels"), old, labels, dtype=None)
    if any(x.is_floating_point() for x in (old, new, truth)):
        old, new, truth = old.to(F64), new.to(F64), truth.to(F64)
    return ((old == truth) & (new != truth)).to(F64).mean()


# ---------------------------------------------------------------- negative flips in regression


def _flip_pair(
    names: tuple[str, str], old: ArrayLike, new: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """An old and a new model's errors or residuals of one shape, each in its own floating dtype
    (integers as float64). Infinite values are kept: a diverged model is wrong at every
    tolerance. NaN says nothing about right or wrong and is refused."""
    pair = _own_precision(*_pair(names, old, new, None, finite=False))
    for name, values in zip(names, pair, strict=True):
        if values.isnan().any():
            raise NonFiniteError(
                f"{name} contains NaN values (inf is accepted: wrong at every tolerance)"
            )
    return pair


def _error_pair(old_error: ArrayLike, new_error: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The errors checked, each in its own floating dtype (integers as float64); ``inf`` allowed."""
    old, new = _flip_pair(("old_error", "new_error"), old_error, new_error)
    if old.ndim != 1:
        raise ValueError(
            f"old_error and new_error must be per-sample errors (batch,), got shape "
            f"{tuple(old.shape)}"
        )
    for name, error in (("old_error", old), ("new_error", new)):
        if (error < 0).any():
            raise ValueError(f"{name} must be >= 0, got minimum {float(error.min()):.3g}")
    return old, new


def _own_precision(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t if t.is_floating_point() else t.to(F64) for t in tensors)


def rounded_to(level: float | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``level`` rounded to the floating-point ``dtype`` of the values judged against it (kept in
    float64 for other dtypes), as :func:`within` rounds it: a value stored in ``dtype`` can
    equal the level, not only miss it by its round-off. A finite level beyond ``dtype``'s range
    becomes its largest finite value, not ``inf``, so an infinite value stays beyond every
    finite level."""
    level = _tensor("level", level, finite=False)
    if level.isnan().any():
        raise ValueError("level must not be NaN")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    if not dtype.is_floating_point:
        return level
    largest = torch.finfo(dtype).max
    return torch.where(level.isinf(), level, level.clamp(-largest, largest)).to(dtype)


def within(values: torch.Tensor, level: float | torch.Tensor) -> torch.Tensor:
    """``values <= level`` with ``level`` rounded to ``values``' dtype (:func:`rounded_to`): a
    float32 error equal to ``float32(τ)`` is within ``τ`` (compared in float64, ``0.1f`` would be
    above ``0.1``). What "right" means for the flip metrics and for regression-free updates: a
    model is right on a sample whose error is within the tolerance. ``level`` is a number or a
    tensor that broadcasts against ``values`` (else a ``ValueError`` naming both shapes)."""
    values = _tensor("values", values, dtype=None, finite=False)
    level = rounded_to(level, values.dtype).to(values.device)
    try:
        torch.broadcast_shapes(values.shape, level.shape)
    except RuntimeError:
        raise ValueError(
            f"level of shape {tuple(level.shape)} does not broadcast against values of shape "
            f"{tuple(values.shape)}: give one level, or one per value"
        ) from None
    return values <= level


def _flips(flipped: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return flipped
    return _reduce(flipped.to(F64), reduction)


def tolerance_flips(
    old_error: ArrayLike, new_error: ArrayLike, tau: float, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Negative flips at tolerance ``tau``: ``1[e_old ≤ τ ∧ e_new > τ]``.

    ``old_error`` and ``new_error`` are per-sample errors ``(batch,)`` of the old and the new
    model on the same inputs (e.g. :func:`relative_l2` with ``reduction='none'``, or
    :func:`crps_per_sample` for probabilistic models). ``'mean'``: the negative flip rate NFR(τ);
    ``'none'``: the flips as a boolean ``(batch,)``. Each error is compared with ``tau`` rounded
    to its own precision: a float32 error equal to ``float32(tau)`` is within ``tau``. An
    infinite error (a diverged model) is wrong at every ``tau``; NaN is refused.
    """
    old, new = _error_pair(old_error, new_error)
    level = _number("tau", tau)
    if level < 0:
        raise ValueError(f"tau must be >= 0, got {tau!r}")
    return _flips(within(old, level) & ~within(new, level), reduction)


def flip_rate_curve(old_error: ArrayLike, new_error: ArrayLike, taus: ArrayLike) -> torch.Tensor:
    """The curve NFR(τ): :func:`tolerance_flips` rates ``(len(taus),)`` over a 1-D grid ``taus``
    of the per-sample errors ``old_error`` and ``new_error`` ``(batch,)``.

    A single tolerance hides flips just above or below it; the curve shows them all. The
    errors are compared with the ``taus`` rounded to their precision, as in :func:`tolerance_flips`.
    """
    old, new = _error_pair(old_error, new_error)
    levels = _tensor("taus", taus, old.device)
    if levels.ndim != 1 or levels.numel() == 0:
        raise ValueError(f"taus must be a non-empty 1-D grid, got shape {tuple(levels.shape)}")
    if (levels < 0).any():
        raise ValueError(f"taus must be >= 0, got minimum {float(levels.min()):.3g}")
    flipped = within(old[None], levels[:, None]) & ~within(new[None], levels[:, None])
    return flipped.to(F64).mean(1)


def degradation_flips(
    old_error: ArrayLike,
    new_error: ArrayLike,
    delta: float = 0.1,
    floor: float = 0.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Degradation flips ``1[e_new > (1 + δ) e_old + ε_floor]``: the new model is worse by more
    than a relative ``delta`` and an absolute ``floor`` (in the errors' units) on that input;
    ``old_error`` and ``new_error`` ``(batch,)`` are the per-sample errors ``e_old``, ``e_new``.

    Unlike :func:`tolerance_flips` no tolerance says what "right" is: any clear worsening counts.
    ``'mean'`` gives the rate, ``'none'`` the flips as a boolean ``(batch,)``. An infinite new
    error after a finite old one is a flip; two infinite errors are not.
    """
    old, new = (error.to(F64) for error in _error_pair(old_error, new_error))
    relative = _number("delta", delta)
    absolute = _number("floor", floor)
    for name, value in (("delta", relative), ("floor", absolute)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    return _flips(new > (1 + relative) * old + absolute, reduction)


def physics_flips(
    old_residual: ArrayLike,
    new_residual: ArrayLike,
    tolerance: float,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Physics flips: a constraint met by the old model's output and violated by the new one's.

    ``old_residual`` and ``new_residual`` ``(batch, ...)`` are the constraint's residuals on
    each output (e.g. ``constraint.residual(u)``, a conservation error, a boundary error); a
    sample meets the constraint when its largest ``|residual|`` is ``<= tolerance`` (rounded to
    the residual's precision, as in :func:`tolerance_flips`); an infinite residual of either sign
    violates it. ``'mean'`` gives the rate, ``'none'`` the flips as a boolean ``(batch,)``.
    """
    old, new = _flip_pair(("old_residual", "new_residual"), old_residual, new_residual)
    level = _number("tolerance", tolerance)
    if level < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    if old.ndim == 0:
        raise ValueError("old_residual and new_residual must be (batch, ...), got scalars")

    def met(residual: torch.Tensor) -> torch.Tensor:
        return within(residual.reshape(residual.shape[0], -1).abs().amax(1), level)

    return _flips(met(old) & ~met(new), reduction)


def crps_per_sample(
    prediction: Gaussian | Ensemble | tuple[ArrayLike, ArrayLike],
    target: ArrayLike,
    fair: bool = False,
) -> torch.Tensor:
    """The mean CRPS over each sample's points ``(batch,)``: the per-sample error of a
    probabilistic model, to feed :func:`tolerance_flips` and :func:`degradation_flips`.

    ``prediction`` is a :class:`Gaussian` or a ``(mean, variance)`` pair, read as
    :func:`gaussian_log_likelihood` reads them (closed form, :func:`crps_gaussian`), or an
    :class:`Ensemble` (members ``(member, batch, ...)``, :func:`crps_ensemble`: the plain form,
    or with ``fair=True`` the unbiased one); ``target`` is ``(batch, ...)``.
    """
    if _is_gaussian(prediction):
        mean, std = _mean_std("prediction", prediction)
        scores = crps_gaussian(mean, std, target, "none")
    else:
        scores = crps_ensemble(prediction, target, fair, "none")
    if scores.ndim == 0:
        raise ValueError("target must be (batch, ...), got a scalar")
    return scores.reshape(scores.shape[0], -1).mean(1)
