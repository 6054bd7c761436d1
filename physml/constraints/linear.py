"""Linear constraints ``G u = b + ε``, ``ε ~ N(0, σ² I)``, and the updates that enforce them.

- Gaussian output ``N(μ, Σ)``: the ProbConserv update, the Gaussian conditioned on the
  constraint: new mean ``μ − Σ Gᵀ S⁻¹ (G μ − b)``, new covariance ``Σ − Σ Gᵀ S⁻¹ G Σ``, with
  ``S = σ² I + G Σ Gᵀ``. With ``σ = 0`` the updated mean meets the constraint exactly and the
  correction goes where ``Σ`` is largest. ``projection="euclidean"`` gives the HardC baseline
  (``Σ`` replaced by ``I`` for the mean, the variance left as it was).
- Tensor output: the Euclidean projection onto ``G u = b`` (after boundary conditions, onto
  ``G u = b`` and their rows together, so they still hold: :meth:`LinearConstraint.apply_tensor`).
- Ensemble output: every member is moved with the ensemble covariance (``projection= "euclidean"``:
  projected on its own, HardC), the covariance built from the centred members ``A`` and never as an
  ``n × n`` matrix: ``K = A (GA)ᵀ [(GA)(GA)ᵀ + (m−1) σ² I]⁻¹``, cost ``O(n·m·k)``. When the members
  cannot span the rows (more rows than members − 1, or no spread along one, equal members having
  none; judged without the noise, and by that spread alone: members that span the rows get
  their own update, checked as every exact one and refused, not replaced, if it misses them)
  a small ``γ I`` (``jitter`` times the ensemble's mean
  variance; only at the points where the members differ, so a point they all agree at, such as
  a wall an earlier boundary condition set, stays) joins the covariance, so every member still
  meets every row (exactly if ``σ = 0``).
  With ``σ = 0`` every member moves by the same gain ``K``: the members' mean and sample covariance
  are the Gaussian update's. With ``σ > 0`` the deterministic square-root form (ensemble
  square-root filter, no random numbers): the mean moves by ``K``, the centred members by ``K̃ = Σ
  Gᵀ L⁻ᵀ (L + σ I)⁻¹`` (``L Lᵀ = S = G Σ Gᵀ + σ² I``), so their sample covariance is the
  posterior's ``(I − K G) Σ`` (one gain ``K`` for all would leave it narrower by ``σ² K Kᵀ``).

``G`` is ``(k, n)`` and acts on the trailing ``space`` axes of a field (``n`` their product: one
axis for a 1-D grid, two for a 2-D one); every leading index (sample, time, channel, ...) is a
slice with its own ``k`` rows, and ``b`` is ``(..., k)`` over those slices. ``channels`` restricts
the rows to some channels (the axis before ``space``). Everything is solved in float64 (a
projection and a diagonal Gaussian's update by QR, never through ``G Gᵀ``, whose condition
number is ``G``'s squared) and returned in the input's dtype and device; after an exact update
(``σ = 0``, or a projection) the residual is checked, slice by slice, against the round-off of
the problem's data (the field before the update and the target, the rows taken at their own
scales or each scaled to unit sum of magnitudes), so an ill-conditioned ``G`` raises instead of
returning a field that misses the rows, or one so large (nearly dependent rows asking for
different targets) that its float64 values cannot meet them; a 16-bit result is checked once
rounded (no overflow, the rows still met to its round-off).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import torch

from pdes.checks import non_negative, positive

from .._checks import as_tensor, integers
from ..errors import ConstraintError, user_stacklevel
from ..metrics import asymmetry_tolerance, stored_eps
from ..outputs import Ensemble, Gaussian, LowRankCovariance, safe_sqrt
from .base import Constraint, fingerprint

Value = TypeVar("Value")

F64 = torch.float64
EPS = torch.finfo(F64).eps
TINY = torch.finfo(F64).tiny
Target = torch.Tensor | Callable[..., torch.Tensor]
RESIDUAL_TOLERANCE = 1e-9
"""After an exact float64 update, the most ``|G u − b|`` may reach in a slice relative to that
slice's own data, ``max_i Σ_j |G_ij| · max|u before| + max|b|`` (not the result, which nearly
dependent rows inflate), ``|G u − b|`` taken as at least ``eps Σ_j |G_ij u_j|``, its round-off on
the result; or the same with every row scaled to ``Σ_j |G_ij| = 1``."""
VARIANCE_ROUNDOFF = 1e-9  # a constrained variance below -this × the largest prior one: not PSD
KEPT_RANK = 1e-10
"""Relative size (of squared norms, eigenvalues) below which a boundary condition's rows, or
``G``'s rows beyond them, count as dependent when a tensor is projected keeping those rows."""
UNSPANNED = 1e-12
"""An ensemble whose spread along a row, ``Σ_m (G_i A_m)²`` (with several rows, beyond what the
rows before it fix), is below this × ``|G_i|² Σ_m |A_m|²`` (its members agree on that total to
~1e-6 of their spread) says nothing about where the row's miss should go: round-off would set the
update's shape, so the ``γ I`` fallback decides, whatever the noise."""
REFINEMENTS = 3
"""The most refinement steps a noise-free ensemble update takes. It takes one always, and more
only while the cheap residual bound of :data:`RESIDUAL_TOLERANCE` still fails."""
LARGEST_NOISE = math.sqrt(sys.float_info.max)
"""The largest ``noise`` σ whose square, the variance σ², is a finite float64."""


def _largest(u: torch.Tensor) -> torch.Tensor:
    """``max|u|`` over the last axis, ``(...)``, without a copy of ``u``'s magnitudes (and
    faster on a CPU than ``aminmax`` along an axis)."""
    return torch.maximum(-u.amin(-1), u.amax(-1))


def _check_matrix(G: torch.Tensor) -> torch.Tensor:
    if not isinstance(G, torch.Tensor) or G.ndim != 2:
        raise ConstraintError(f"G must be a tensor of shape (k, n), got {getattr(G, 'shape', G)}")
    if 0 in G.shape:
        raise ConstraintError(
            f"G must have at least one row and one column, got shape {tuple(G.shape)}"
        )
    if G.is_complex() or G.dtype == torch.bool:
        raise ConstraintError(f"G must hold real numbers, got dtype {G.dtype}")
    G = G.detach().to(F64, copy=True)
    if not torch.isfinite(G).all():
        raise ConstraintError("G contains NaN or inf values")
    zero = torch.nonzero(G.abs().amax(1) == 0).flatten()
    if zero.numel():
        raise ConstraintError(f"G has zero rows {zero.tolist()}: each row must constrain something")
    rank = int(torch.linalg.matrix_rank(G))
    if rank < G.shape[0]:
        raise ConstraintError(
            f"G's {G.shape[0]} rows are linearly dependent (rank {rank}, condition number "
            f"{torch.linalg.cond(G).item():.3g}): drop the redundant ones"
        )
    return G


def _setting(check: Callable[[str, object], Value], name: str, value: object) -> Value:
    """``check(name, value)`` (a number check of :mod:`pdes.checks` or :func:`integers`), its
    refusal as a ConstraintError."""
    try:
        return check(name, value)
    except (TypeError, ValueError) as error:
        raise ConstraintError(str(error)) from None


def _check_target(b: object, k: int, name: str = "b") -> torch.Tensor:
    try:  # real, finite, float64, (..., k) or (..., 1): the shared check, as a ConstraintError
        return as_tensor(name, b, f"(..., {k}) to match G's {k} rows", None, last=(1, k))
    except (TypeError, ValueError) as error:
        raise ConstraintError(str(error)) from None


def _cholesky(S: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(S)
    if (info > 0).any():
        _not_definite(G)
    return L


def _symmetric_product(cov: torch.Tensor, G: torch.Tensor, eps: float, name: str) -> torch.Tensor:
    """``(cov + covᵀ) / 2 · Gᵀ`` ``(..., n, k)`` for a full covariance ``cov`` ``(..., n, n)``,
    from ``cov Gᵀ`` and ``(G cov)ᵀ``: ``cov`` is read twice, never transposed or copied. Where
    the two differ, ``(cov − covᵀ) G_iᵀ``, by more than its storage's round-off
    (``eps``: :func:`physml.metrics.asymmetry_tolerance`) × its largest variance × ``Σ_j |G_ij|``
    (what an elementwise asymmetry of that size can reach), it raises, naming ``name``."""
    right, left = cov @ G.T, (G @ cov).transpose(-1, -2)
    if not cov.numel():  # an empty batch: nothing to check
        return right
    largest = cov.detach().diagonal(dim1=-2, dim2=-1).abs().amax()
    scale = largest.clamp_min(torch.finfo(F64).tiny) * G.abs().sum(-1)
    asymmetry = float(((right - left).detach().abs() / scale).amax())
    tolerance = asymmetry_tolerance(eps)
    if asymmetry > tolerance:
        raise ConstraintError(
            f"{name} is not symmetric: |({name} − {name}ᵀ) G_iᵀ| reaches {asymmetry:.3g} × its "
            f"largest variance × Σ_j |G_ij| (round-off allows {tolerance:.3g})"
        )
    return (right + left) / 2


def _not_definite(G: torch.Tensor) -> None:
    raise ConstraintError(
        "G Σ Gᵀ + σ² I is not positive definite: the covariance is not positive semi-definite "
        "along the constraint, or it is singular there while the noise σ is 0, or G is "
        f"ill-conditioned (condition number {torch.linalg.cond(G).item():.3g})"
    )


class LinearConstraint(Constraint):
    """``G u = b`` (+ Gaussian noise of standard deviation ``noise``) on a field's trailing axes.

    Args:
        G: ``(k, n)`` constraint matrix with independent, non-zero rows.
        b: target ``(..., k)`` over the leading axes, or a callable receiving the model's inputs
            and returning it.
        noise: ``σ_G >= 0``; 0 enforces the constraint exactly (and checks the residual). It
            weighs the covariance updates only: a tensor output and ``projection="euclidean"``
            are projected exactly whatever its value (they carry no variance to weigh it with).
            An ensemble with ``σ_G > 0`` gets the square-root update: its mean and spread are
            the Gaussian posterior's, and its members meet the rows only approximately.
        projection: ``"covariance"`` (ProbConserv) or ``"euclidean"`` (HardC) for Gaussians.
        check_psd: also verify that a full input covariance is positive semi-definite.
        space: the trailing axes the rows act on (default ``(n,)``; ``(H, W)`` for a 2-D grid;
            a Gaussian holds them flattened on its last axis: :meth:`apply_gaussian`).
        channels: constrain only these channels (the axis before ``space``); others pass as is.
            Not for a Gaussian.
        ndims: the numbers of axes a field (a tensor, a mean, one member) may have; ``None``
            allows any. ``layout_hint`` completes the error message for another number.
        jitter: ``γ`` relative to the ensemble's mean variance, used when members cannot span
            the rows.
        shrinkage: ``α`` in ``[0, 1]``: an ensemble's update uses ``(1 − α) Σ + α diag(Σ)``,
            its covariance shrunk toward its own variances. A few members estimate long-range
            correlations badly and may agree on the total they all miss; shrinkage damps the
            first and keeps the correction where the members spread (``α = 1``: each point
            moves in proportion to its variance). The rows stay exact.
        target_name: how errors name a one-row constraint's target given without its row axis
            (``b`` is then that target with a trailing axis of size 1), e.g. ``"total_mass"``.

    ``b`` broadcasts against the field's leading axes aligned from the right, as in numpy: a
    per-sample tensor is read by position in the batch, so a shuffled training batch needs the
    callable form (the target computed from each batch's inputs). ``G`` and a tensor ``b`` are
    copied when the constraint is built (without gradient: later changes to the tensors given
    do not reach it, and a ``b`` that requires grad warns; a callable's result keeps its
    gradient, so a target to learn or differentiate is given as ``lambda *inputs: b``) into
    buffers: a model's state dict holds them and loading one restores
    them, so a wrapper built for another target and then loaded enforces the saved target
    (build it after loading, or load the state into the model before wrapping it).
    An ensemble of ``m`` members spans ``m − 1`` directions: with ``k = m − 1`` rows per slice,
    ``noise = 0`` and no ``shrinkage`` the exact update leaves every member equal (it warns;
    more rows fall back to ``γ`` and keep little spread); use more members or ``shrinkage > 0``.
    """

    def __init__(
        self,
        G: torch.Tensor,
        b: Target,
        noise: float = 0.0,
        projection: str = "covariance",
        check_psd: bool = False,
        *,
        space: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        ndims: Sequence[int] | None = None,
        layout_hint: str = "",
        jitter: float = 1e-3,
        shrinkage: float = 0.0,
        target_name: str = "b",
    ) -> None:
        super().__init__()
        with torch.inference_mode(False):  # buffers built in inference mode could not train later
            self.register_buffer("G", _check_matrix(G))
        k, n = self.G.shape
        if target_name != "b" and k != 1:
            raise ConstraintError(f"target_name is for one-row constraints, G has {k} rows")
        self.target_name = target_name
        if callable(b):
            self.target_fn: Callable[..., torch.Tensor] | None = b
            self.register_buffer("b", None)
        else:
            self.target_fn = None
            if isinstance(b, torch.Tensor) and b.requires_grad:
                warnings.warn(
                    f"LinearConstraint: {target_name} requires grad, but a tensor target is "
                    "stored without gradient (a copy, in a buffer): no gradient reaches it "
                    f"through the constraint; give it as a callable, e.g. lambda *inputs: "
                    f"{target_name}, to keep it differentiable",
                    stacklevel=user_stacklevel(),
                )
            with torch.inference_mode(False):
                self.register_buffer("b", _check_target(b, k, target_name).detach().clone())
        noise = _setting(non_negative, "noise", noise)
        if not math.isfinite(noise * noise):
            raise ConstraintError(
                f"noise must be at most {LARGEST_NOISE:.4g} (its square, the variance σ², must "
                f"be a finite float64), got {noise!r}"
            )
        if projection not in ("covariance", "euclidean"):
            raise ConstraintError(
                f"projection must be 'covariance' or 'euclidean', got {projection!r}"
            )
        if not isinstance(check_psd, bool):
            raise ConstraintError(f"check_psd must be True or False, got {check_psd!r}")
        self.space = (
            (n,) if space is None else _setting(partial(integers, minimum=1), "space", space)
        )
        if math.prod(self.space) != n:
            raise ConstraintError(f"space {self.space} must hold G's {n} columns")
        if channels is not None:
            channels = _setting(partial(integers, minimum=0), "channels", channels)
            if len(set(channels)) != len(channels):
                raise ConstraintError(
                    f"channels must be distinct channel indices >= 0, got {channels}"
                )
        self.channels = channels
        if ndims is not None:
            ndims = _setting(partial(integers, minimum=len(self.space)), "ndims", ndims)
        self.ndims = ndims
        if not isinstance(layout_hint, str):
            raise ConstraintError(f"layout_hint must be a string, got {layout_hint!r}")
        self.layout_hint = layout_hint
        jitter = _setting(positive, "jitter", jitter)
        if not (
            isinstance(shrinkage, (int, float))
            and not isinstance(shrinkage, bool)
            and math.isfinite(shrinkage)
            and 0 <= shrinkage <= 1
        ):
            raise ConstraintError(f"shrinkage must be a number in [0, 1], got {shrinkage}")
        self.noise, self.projection, self.check_psd, self.jitter = (
            noise,
            projection,
            check_psd,
            float(jitter),
        )
        self.shrinkage = float(shrinkage)

    def extra_repr(self) -> str:
        rows, columns = self.G.shape
        channels = "" if self.channels is None else f", channels={self.channels}"
        target = "callable" if self.target_fn is not None else f"tensor {tuple(self.b.shape)}"
        return (
            f"G={rows}×{columns}, space={self.space}{channels}, noise={self.noise:g}, "
            f"projection={self.projection!r}, shrinkage={self.shrinkage:g}, target={target}"
        )

    def _apply(self, fn, recurse: bool = True):
        """``.to(device)`` moves ``G`` and ``b``; ``.float()``/``.half()`` must not round them.

        They stay float64, the dtype of the solve (a wrapped model cast to float32 would
        otherwise leave float32 rows that no longer match the float64 field they multiply).
        """
        kept = {name: self._buffers[name] for name in ("G", "b") if self._buffers[name] is not None}
        super()._apply(fn, recurse)
        for name, tensor in kept.items():
            self._buffers[name] = tensor.to(self._buffers[name].device)
        return self

    # ------------------------------------------------------------------------------ layout

    def prepare(self, *inputs: object, time: object = None, **kwargs: object) -> torch.Tensor:
        """The target ``b`` of this call (``b(*inputs)`` when ``b`` is a function of the inputs)."""
        if self.target_fn is None:
            return self.b
        found = self.target_fn(*inputs, **kwargs)
        name = self.__dict__.get("target_name", "b")
        return _check_target(found, self.G.shape[0], f"{name} (the target function's result)")

    def _layout(self, field: torch.Tensor, name: str) -> tuple[int, ...]:
        """``field``'s leading shape, after checking its trailing axes and number of axes."""
        s = len(self.space)
        if field.ndim < s or tuple(field.shape[field.ndim - s :]) != self.space:
            found = f"{field.shape[-1]} points on its last axis" if field.ndim else "no axes"
            raise ConstraintError(
                f"{name} of shape {tuple(field.shape)} does not end in the constraint's grid "
                f"{self.space}"
                + (f": it has {found} but G has {self.G.shape[1]} columns" if s == 1 else "")
            )
        if self.ndims is not None and field.ndim not in self.ndims:
            raise ConstraintError(
                f"{name} has {field.ndim} axes {tuple(field.shape)}, expected "
                f"{' or '.join(map(str, self.ndims))}{self.layout_hint}"
            )
        if self.channels is not None:
            if field.ndim < s + 1 or max(self.channels) >= field.shape[-s - 1]:
                raise ConstraintError(
                    f"channels {self.channels} do not exist in {name} of shape "
                    f"{tuple(field.shape)} (channel axis {-s - 1})"
                )
        return tuple(field.shape[: field.ndim - s])

    def _flat(self, field: torch.Tensor) -> torch.Tensor:
        """``(..., *space)`` → float64 ``(..., n)``, restricted to ``channels``."""
        flat = field.flatten(field.ndim - len(self.space)).to(F64)
        if self.channels is not None:
            flat = flat.index_select(-2, self._channel_index(flat))
        return flat

    def _channel_index(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.channels, device=like.device)

    def _unflat(
        self,
        new: torch.Tensor,
        field: torch.Tensor,
        b: torch.Tensor | None = None,
        ensemble: bool = False,
    ) -> torch.Tensor:
        """Put the updated ``(..., n)`` values back into a field shaped and typed like ``field``
        (a 16-bit ``field`` checked to hold them: :meth:`_check_rounded`; ``b``: the rows' target
        after an exact update; ``ensemble``: ``field``'s first axis holds the members)."""
        rounded = new.to(field.dtype)
        if torch.finfo(field.dtype).bits < 32:
            self._check_rounded(new, rounded, b, ensemble)
        new = rounded
        if self.channels is not None:
            flat = field.flatten(field.ndim - len(self.space))
            new = flat.index_copy(-2, self._channel_index(flat), new)
        return new.reshape(field.shape)

    def _target_for(
        self, b: torch.Tensor, leading: tuple[int, ...], field: torch.Tensor, name: str
    ):
        """``b`` on ``field``'s device, checked to broadcast to its rows; ``name`` describes
        ``field`` in the error (``{shape}`` stands for its shape)."""
        if self.channels is not None:
            leading = (*leading[:-1], len(self.channels))
        rows = (*leading, self.G.shape[0])
        shape = tuple(b.shape)
        fits = len(shape) <= len(rows) and all(
            s in (1, r) for s, r in zip(reversed(shape), reversed(rows), strict=False)
        )
        if not fits:
            what = name.format(shape=tuple(field.shape))
            target = self.__dict__.get("target_name", "b")
            if target == "b":
                raise ConstraintError(
                    f"b of shape {shape} does not fit {what}: b must broadcast to {rows} "
                    "(one target per row and slice) without adding axes"
                )
            hint = ""
            if not leading:
                hint = f"; a single field's {target} is a 0-d tensor or a float, e.g. 0.3"
            elif len(leading) > 1:
                ones = ", ".join(["1"] * (len(leading) - 1))
                hint = f"; one {target} per sample is written ({leading[0]}, {ones})"
            raise ConstraintError(
                f"{target} of shape {shape[:-1]} does not fit {what}: {target} must broadcast to "
                f"{leading} (one value per slice) without adding axes, its axes aligned with the "
                f"field's leading ones from the right, as in numpy{hint}"
            )
        return b if b.device == field.device else b.to(field.device)

    def _warn_if_collapsed(self, members: int, k: int) -> None:
        """Warn after an exact update that spanned ``k = members − 1`` rows: it left every
        member equal (their covariance has rank ``members − 1``, all of it along the rows)."""
        if k == members - 1 and not self.noise and not self.shrinkage:
            warnings.warn(
                f"LinearConstraint: the exact update of an ensemble of {members} members with "
                f"{k} row{'s' if k > 1 else ''} per slice leaves every member equal (their "
                "covariance has rank m - 1, all of it along the rows): use more members or "
                "shrinkage > 0",
                stacklevel=user_stacklevel(),
            )

    def _matrices_key(self, device) -> tuple:
        """What the cached matrices depend on (:meth:`_matrices`)."""
        rows = self._buffers["G"]
        mode = torch.is_inference_mode_enabled()
        return (rows.data_ptr(), rows._version, fingerprint([rows]), device, mode)

    def _matrices(self, device) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``G`` and the projector ``Gᵀ (G Gᵀ)⁻¹`` on ``device`` (:func:`_projector`) and the
        largest row sum ``max_i Σ_j |G_ij|``, cached; ``G`` checked again as at construction
        (rows written since may be dependent).

        The cache follows ``G``'s storage, version counter (``load_state_dict`` copies in),
        :func:`.base.fingerprint` (writes through ``G.data``), the device and inference mode
        (inference tensors cannot be saved for a later backward pass).
        """
        key = self._matrices_key(device)
        if self.__dict__.get("_cache_key") != key:
            G = _check_matrix(self._buffers["G"].to(device))
            self._cache = (G, _projector(G)[0], float(G.abs().sum(-1).max()))
            self._cache_key = key
        return self._cache

    def _keeping(self, kept: Sequence, device) -> torch.Tensor:
        """The projector ``G_⊥ᵀ (G_⊥ G_⊥ᵀ)⁻¹`` ``(n, k)`` onto ``G u = b`` that leaves the rows
        ``R`` of the boundary conditions ``kept`` as they are: ``G_⊥ = G (I − Rᵀ (R Rᵀ)⁺ R)``,
        ``G``'s rows with their part in ``R``'s span removed (``R`` on the few points it touches,
        ``(R Rᵀ)⁺`` its pseudo-inverse: conditions meeting at a corner share rows). Cached per
        conditions."""
        key = (*self._matrices_key(device), tuple(c.walls_key for c in kept))
        if self.__dict__.get("_kept_key") == key:
            return self._kept_projector
        G = self._matrices(device)[0]
        found = [c.wall_rows(self.space) for c in kept]
        nodes = torch.cat([f[0] for f in found]).to(device)
        weights = torch.cat([f[1] for f in found]).to(device)
        if not nodes.shape[0]:
            return self._matrices(device)[1]
        # R on the points it touches only: R_U (count, touched), dense and small
        touched, where = torch.unique(nodes, return_inverse=True)
        R = torch.zeros(nodes.shape[0], touched.numel(), dtype=F64, device=device)
        lines = torch.arange(nodes.shape[0], device=device)[:, None].expand(nodes.shape)
        R.index_put_((lines, where), weights.to(F64), accumulate=True)
        values, vectors = torch.linalg.eigh(R @ R.T)
        used = values > KEPT_RANK * values.max()
        G_U = G[:, touched]
        coefficients = (G_U @ R.T @ vectors[:, used]) / values[used] @ vectors[:, used].T
        G_free = G.clone()
        G_free[:, touched] = G_U - coefficients @ R
        pinned = nodes[:, 0][(weights[:, 1:] == 0).all(-1)]
        G_free[:, pinned] = 0.0  # exactly: a point a row pins alone cannot move
        projector, pivots = _projector(G_free)
        if not bool((pivots > KEPT_RANK * G.square().sum(-1)).all()):
            raise ConstraintError(
                f"{type(self).__name__} cannot be met while keeping the boundary conditions "
                f"applied before it ({', '.join(f'{c.kind} on axis {c.axis}' for c in kept)}): "
                "a combination of G's rows constrains only values those conditions set; drop "
                "that row or the condition"
            )
        self._kept_projector, self._kept_key = projector, key
        return projector

    def _check_rounded(
        self,
        u: torch.Tensor,
        rounded: torch.Tensor,
        b: torch.Tensor | None = None,
        ensemble: bool = False,
    ) -> None:
        """The field ``u`` ``(..., n)`` float64 as returned, ``rounded`` to a 16-bit dtype: finite
        there, and with the target ``b`` of an exact update, every slice still meeting the rows
        to that dtype's round-off (``eps`` of its own ``max|u| · max_i Σ_j |G_ij| + max|b|``, not
        the batch's, which would let a larger slice cover another's miss; rounding each value to
        nearest costs at most half of it, unless values fall below the smallest normal number,
        where the dtype has no relative precision left). A miss names the slice that misses
        most (``ensemble``: ``u``'s first axis holds the members, as errors name them)."""
        if not u.numel():  # an empty batch: nothing to round
            return
        info = torch.finfo(rounded.dtype)
        if not bool(torch.isfinite(rounded).all()):
            raise ConstraintError(
                f"the constrained field does not fit {rounded.dtype}: its largest value "
                f"{u.abs().max().item():.3g} overflows to inf (the dtype's largest is "
                f"{info.max:.3g}); compute it in float32"
            )
        if b is None:
            return
        G, _, rowsum = self._matrices(u.device)
        largest = _largest(u)  # (...): every slice judged on its own values and target
        miss = (rounded.to(F64) @ G.T - b).abs().amax(-1)
        scale = (largest * rowsum + b.abs().amax(-1)).clamp_min(TINY)
        relative = miss / scale
        shape, relative = relative.shape, relative.flatten()
        at = int(relative.argmax())
        if relative[at].item() > info.eps:
            raise ConstraintError(
                f"rounded to {rounded.dtype}, the constrained field misses G u = b by "
                f"{relative[at].item():.3g} of its scale{_slice_named(at, shape, ensemble)}, "
                "beyond the dtype's round-off "
                f"{info.eps:.3g}: its values (largest "
                f"{largest.expand(miss.shape).flatten()[at].item():.3g}) lose their precision "
                f"below {info.tiny:.3g}, its smallest normal number; compute it in float32 or "
                "rescale the field"
            )

    def _check_update(
        self,
        G: torch.Tensor,
        u: torch.Tensor,
        b: torch.Tensor,
        before: torch.Tensor,
        pivots: torch.Tensor | None = None,
        variances: tuple[torch.Tensor, torch.Tensor] | None = None,
        euclidean: bool = False,
        ensemble: bool = False,
    ) -> None:
        """After an update, every check read at once (one synchronisation; ``ensemble``: ``u``'s
        first axis holds the members, as errors name them):

        - exact update (``σ = 0``, or ``euclidean``: a projection, exact whatever the noise):
          in every slice (leading index: sample, time, member, ...) ``|G u − b|`` within
          :data:`RESIDUAL_TOLERANCE` of that slice's data, ``max_i Σ_j |G_ij| · max|before| +
          max|b|`` (the field before the update: a row met at zero, ``b = 0``, is judged against
          it), else the rows are ill-conditioned. Not against the result ``u``: nearly dependent
          rows blow it up (``1/δ`` for rows ``δ`` apart), and a bound that grew with it would
          pass them all; nor against other slices' data, which would let large targets in one
          slice pass another's miss. The residual is taken as at least ``eps Σ_j |G_ij u_j|``,
          the round-off of ``G u`` on a field that large (a field too large to meet the rows to
          the data's round-off may still evaluate to a zero residual): its cheap bound ``eps
          max_i Σ_j |G_ij| · max|u|`` first, and only where that fails the exact sum, with a
          slice also passing when it meets the rows each scaled to ``Σ_j |G_ij| = 1`` (the
          update does not depend on the rows' scales: ``_judge_exactly``);
        - a Gaussian update: its ``pivots`` (``G Σ Gᵀ + σ²`` of one row, or the diagonal of a
          factorised one) positive, and ``variances = (constrained, prior)``: the constrained not
          below zero beyond round-off of the prior ones (a negative one means the input
          covariance was not positive semi-definite: conditioning a valid Gaussian only removes
          variance down to zero; ``O(n m)``, unlike ``check_psd``).
        """
        if not u.numel():  # an empty batch: nothing to check
            return
        exact = self.noise == 0 or euclidean
        tensors = ()
        if exact:  # every slice judged on its own data, the cheap bound first
            u, before, b = u.detach(), before.detach(), b.detach()
            missed, scale, cheap = self._slice_residuals(G, u, before, b)
            tensors = (cheap,)
        tensors += (() if pivots is None else (pivots,)) + (variances or ())
        if not tensors:
            return
        extremes = torch.stack([v for t in tensors for v in torch.aminmax(t)]).tolist()
        lows, highs = extremes[::2], extremes[1::2]
        if pivots is not None and not lows[1 if exact else 0] > 0:
            _cholesky(torch.diag_embed(pivots), G)  # raises with the reason
        if exact and not highs[0] <= RESIDUAL_TOLERANCE:
            self._judge_exactly(G, u, before, b, missed, scale, euclidean, ensemble)
        if variances is not None:
            lowest, scale = lows[-2], max(-lows[-1], highs[-1], torch.finfo(F64).tiny)
            if lowest < -VARIANCE_ROUNDOFF * scale:
                raise ConstraintError(
                    f"the constrained variance would be negative (minimum {lowest:.3g}, largest "
                    f"prior variance {scale:.3g}): either cov is not positive semi-definite "
                    "(check_psd=True finds the offending eigenvalue of a full cov) or it is "
                    "singular or nearly so along G (rank-deficient), where conditioning on G "
                    "amplifies its round-off; then add a small jitter to it, e.g. "
                    "1e-12 * trace(cov) / n * I"
                )

    def _slice_residuals(
        self, G: torch.Tensor, u: torch.Tensor, before: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per slice (every leading index of the field ``u`` ``(..., n)`` after an exact update,
        ``before`` it, and of the target ``b`` ``(..., k)``): ``|G u − b|`` ``(..., k)``, the
        data's scale ``max_i Σ_j |G_ij| · max|before| + max|b|`` ``(...)``, and the relative
        residual's cheap bound ``(...)``, the round-off of ``G u`` taken as ``eps max_i Σ_j
        |G_ij| · max|u|``. A few reductions, no synchronisation."""
        rowsum = self._matrices(u.device)[2]
        missed = (u @ G.T - b).abs()
        scale = _data_scale(before, b, rowsum)
        return missed, scale, _cheap_residual(missed, u, scale, rowsum)

    def _judge_exactly(
        self,
        G: torch.Tensor,
        u: torch.Tensor,
        before: torch.Tensor,
        b: torch.Tensor,
        missed: torch.Tensor,
        scale: torch.Tensor,
        euclidean: bool,
        ensemble: bool = False,
    ) -> None:
        """The residual check where the cheap bound failed (``_check_update``; arguments
        from ``_slice_residuals``): the round-off of ``G u`` row by row, ``eps Σ_j |G_ij
        u_j|``, and a slice accepted when it meets its rows either on the data's scale or with
        every row scaled to ``Σ_j |G_ij| = 1`` (the same constraint, met by the same field: a
        row of small weights is not judged against the others' larger ones). Raises, naming
        ``G``'s condition number, where neither holds."""
        absolute = G.abs()
        rows = absolute.sum(-1)  # (k,)
        missed = torch.maximum(missed, EPS * (u.abs() @ absolute.T))
        plain = missed.amax(-1) / scale
        data = _largest(before) + (b.abs() / rows).amax(-1)
        equilibrated = (missed / rows).amax(-1) / data.clamp_min(torch.finfo(F64).tiny)
        worst = torch.minimum(plain, equilibrated)
        if bool(worst.amax() <= RESIDUAL_TOLERANCE):
            return
        shape = worst.shape
        at = int(torch.where(worst.isnan(), math.inf, worst).flatten().argmax())
        where = _slice_named(at, shape, ensemble)
        pick = [t.expand(shape).flatten()[at].item() for t in (plain, equilibrated, scale)]
        after = _largest(u).expand(shape).flatten()[at].item()
        condition = torch.linalg.cond(G).item()
        raise ConstraintError(
            f"the exact update left a relative residual {pick[0]:.3g}{where} (tolerance "
            f"{RESIDUAL_TOLERANCE:g}; |G u − b|, or the round-off of G u on the result, whose "
            f"largest value there is {after:.3g}, relative to max_i Σ_j |G_ij| · max|u before| "
            f"+ max|b| = {pick[2]:.3g}; {pick[1]:.3g} with each row scaled to Σ_j |G_ij| = 1): "
            f"G is ill-conditioned (condition number {condition:.3g})"
            + ("" if euclidean else " or the covariance is singular along G")
        )

    # ------------------------------------------------------------------------------ measure

    def residual(self, u: torch.Tensor, *inputs: object) -> torch.Tensor:
        """``G u − b`` ``(..., k)`` in float64: how far a field ``u`` is from meeting the rows."""
        leading = self._layout(u, "u")
        b = self._target_for(self.prepare(*inputs), leading, u, "u")
        return self._flat(u) @ self._matrices(u.device)[0].T - b

    # ------------------------------------------------------------------------------ updates

    def apply_tensor(
        self, output: torch.Tensor, state: torch.Tensor, kept: Sequence = ()
    ) -> torch.Tensor:
        """The Euclidean projection of ``output`` onto ``G u = b`` (HardC).

        ``kept``: boundary conditions already set on ``output`` (:class:`BoundaryCondition`, on
        axes of the constraint's grid): the projection is onto ``G u = b`` and ``R u = R
        output`` together, ``R`` their :meth:`.BoundaryCondition.wall_rows`, so they still hold.
        """
        leading = self._layout(output, "output")
        b = self._target_for(state, leading, output, "output of shape {shape}")
        G, projector, _ = self._matrices(output.device)
        if kept:
            projector = self._keeping(kept, output.device)
        u = self._flat(output)
        new = u - (u @ G.T - b) @ projector.T
        self._check_update(G, new.detach(), b, u, euclidean=True)
        return self._unflat(new, output, b)

    def apply_gaussian(self, output: Gaussian, state: torch.Tensor) -> Gaussian:
        """ProbConserv (or HardC with ``projection="euclidean"``) over the last axis.

        The last axis holds the grid's ``n`` points, flattened on a 2-D grid (``mean (..., H·W)``,
        as ``field.flatten(-2)`` orders them) with any covariance over them — a diagonal
        ``(..., H, W)`` one is refused rather than returned in another shape: the update couples
        every point of the grid, which a covariance per row cannot hold. A full covariance (or a
        low-rank one's full base) is read through ``(cov + covᵀ) / 2 · Gᵀ`` when it is symmetric
        along the rows to round-off (:data:`physml.metrics.SYMMETRY`, or its storage's;
        ``_symmetric_product``), and refused beyond; the posterior keeps the given matrix as
        its base. With ``σ = 0`` and several rows, a full or low-rank covariance's mean is
        refined once (the solve with ``G Σ Gᵀ`` has ``G``'s condition number squared), so it
        meets the rows to the round-off of the data, as the residual check asks."""
        output = self._over_points(output)
        grid_mean = output.mean if len(self.space) == 1 else output.mean.unflatten(-1, self.space)
        if self.projection == "euclidean":
            mean = self.apply_tensor(grid_mean, state).flatten(grid_mean.ndim - len(self.space))
            return Gaussian(mean, output.cov, output.is_diagonal or None)
        leading = self._layout(grid_mean, self._read_as("mean", output.mean))
        b = self._target_for(state, leading, output.mean, "mean of shape {shape}")
        dtype = output.mean.dtype
        G, mean = self._matrices(output.mean.device)[0], output.mean.to(F64)
        cov = output.cov
        low_rank = isinstance(cov, LowRankCovariance)
        given = cov.base if low_rank else cov
        diagonal_base = cov.base_is_diagonal if low_rank else output.is_diagonal
        base, factor = given.to(F64), cov.factor.to(F64) if low_rank else None
        if diagonal_base:
            K = base[..., :, None] * G.T
        else:
            name = "cov.base" if low_rank else "cov"
            K = _symmetric_product(base, G, stored_eps(output.mean, given), name)  # (..., n, k)
            if self.check_psd and not low_rank:
                _check_psd(base)
        if low_rank:
            K = K - factor @ (factor.transpose(-1, -2) @ G.T)
        S = G @ K  # (..., k, k)
        if self.noise:
            S = S + self.noise**2 * torch.eye(G.shape[0], dtype=F64, device=G.device)
        mismatch = (mean @ G.T - b).unsqueeze(-1)
        if G.shape[0] == 1:  # one row: S is a number per slice, no factorisation needed
            new_mean = mean - (K * (mismatch / S)).squeeze(-1)
            update = K / S.sqrt()
        elif output.is_diagonal:
            new_mean, update = _whitened_update(mean, base, G, mismatch, self.noise)
        else:
            L = _cholesky(S, G)
            new_mean = mean - (K @ torch.cholesky_solve(mismatch, L)).squeeze(-1)
            if not self.noise:  # one step of refinement: S has G's condition number squared
                missed = (new_mean @ G.T - b).unsqueeze(-1)
                new_mean = new_mean - (K @ torch.cholesky_solve(missed, L)).squeeze(-1)
            update = torch.linalg.solve_triangular(L, K.transpose(-1, -2), upper=False)
            update = update.transpose(-1, -2)
        factor = update if factor is None else torch.cat([factor, update], dim=-1)
        variances = None
        if not output.is_diagonal:
            prior = base if diagonal_base else torch.diagonal(base, dim1=-2, dim2=-1)
            variances = (prior - factor.pow(2).sum(-1), prior)
        pivots = torch.diagonal(S, dim1=-2, dim2=-1)
        self._check_update(G, new_mean.detach(), b, mean, pivots, variances)
        covariance = LowRankCovariance(base.to(dtype), factor.to(dtype), diagonal_base)
        met = None if self.noise else b
        return Gaussian.posterior(self._unflat(new_mean, output.mean, met), covariance, output)

    def _over_points(self, output: Gaussian) -> Gaussian:
        """``output``, which must hold the grid's ``n`` points on its last axis (flattened on a
        2-D grid, so that the result has the shape it came with); one that does not, or one for
        ``channels``, is refused with what to give instead."""
        if self.channels is not None:
            raise ConstraintError(
                f"channels={self.channels} is not supported for a Gaussian output: constrain a "
                "Gaussian of those channels alone, e.g. Gaussian(mean[:, channels], "
                "variance[:, channels]), with a constraint built without channels"
            )
        n, s, mean = self.G.shape[1], len(self.space), output.mean
        if s == 1 or mean.shape[-1] == n:
            return output
        kind = "diagonal" if output.is_diagonal else "full or low-rank"
        raise ConstraintError(
            f"a Gaussian is constrained over its last axis, which must hold the grid's {n} "
            f"points {self.space} flattened; got mean {tuple(mean.shape)} with a {kind} "
            f"covariance: give Gaussian(mean.flatten({-s}), variance.flatten({-s})) for a "
            f"diagonal one, or a covariance over the {n} points, (..., {n}, {n})"
        )

    def _read_as(self, name: str, flat: torch.Tensor) -> str:
        """How errors name a Gaussian's ``flat`` field ``(..., n)`` once read over the grid."""
        if len(self.space) == 1:
            return name
        return f"{name} {tuple(flat.shape)} read over the grid {self.space} as a field"

    def apply_ensemble(self, output: Ensemble, state: torch.Tensor) -> Ensemble:
        """Move the members ``(member, ..., *space)`` with the ensemble covariance ``Σ``.

        ``noise = 0``: every member ``x − K (G x − b)``, ``K = Σ Gᵀ (G Σ Gᵀ)⁻¹``, meets the rows.
        ``noise = σ > 0`` (square root, ``_update``): the mean ``x̄ − K (G x̄ −
        b)`` and the centred members ``A − K̃ G A``; with no shrinkage and members that span
        the rows their mean and sample covariance are the posterior's ``x̄ − K (G x̄ − b)`` and
        ``(I − K G) Σ``. With ``shrinkage`` or the ``γ I`` fallback ``K`` and ``K̃`` use that
        ``Σ``: the mean is the posterior mean for it, but it is not the members' covariance, so
        their spread is the posterior's only approximately.

        Whether the members span the rows (their own ``Σ``, else ``γ I`` joins it) is decided
        by their spread along each row alone (:data:`UNSPANNED`), never by the result: an
        update of members that span the rows which then misses them beyond the data's round-off
        (``G`` ill-conditioned, the spread along a row barely above that threshold) raises
        rather than falling back to another update. With ``σ = 0`` the update is refined
        (``_update``)."""
        samples = output.samples
        leading = self._layout(samples[0], "each member")
        b = self._target_for(state, leading, samples, "samples of shape {shape} (member first)")
        G, _, rowsum = self._matrices(samples.device)
        X = self._flat(samples)
        if self.projection == "euclidean":  # HardC: each member projected on its own
            projector = self._matrices(samples.device)[1]
            new = X - (X @ G.T - b) @ projector.T
            self._check_update(G, new.detach(), b, X, euclidean=True, ensemble=True)
            return Ensemble(self._unflat(new, samples, b, ensemble=True))
        members, k = X.shape[0], G.shape[0]
        if math.isinf((members - 1) * self.noise**2):
            raise ConstraintError(
                f"noise must be at most {LARGEST_NOISE / math.sqrt(members - 1):.4g} for an "
                f"ensemble of {members} members (the update sums (members − 1) σ², which "
                f"overflows float64 beyond it), got {self.noise:.4g}"
            )
        met = None if self.noise else b  # the target the members meet exactly
        if k == 1 and members > 1:  # one row per slice (mass per frame): scalars, no solves
            new = _one_row_update(X, G[0], b, self.shrinkage, self.noise)
            if new is not None:  # the members span the row: the update meets it
                self._check_update(G, new.detach(), b, X, ensemble=True)
                self._warn_if_collapsed(members, k)
                return Ensemble(self._unflat(new, samples, met, ensemble=True))
        GX = X @ G.T  # (member, ..., k)
        # the centred members A, not X: members that agree closely on a total they all miss
        # would otherwise lose the update to cancellation (Σ_m GX_m is not 0 in floating point)
        A = _centred(X)
        GA = A @ G.T
        members_last = GA.movedim(0, -2)  # (..., member, k)
        CG = (A.movedim(0, -1) @ members_last) / (members - 1)  # Σ Gᵀ = A (GA)ᵀ / (m − 1)
        S = (members_last.transpose(-1, -2) @ members_last) / (members - 1)
        if self.shrinkage:
            variance = A.square().sum(0) / (members - 1)  # (..., n)
            CG = (1 - self.shrinkage) * CG + self.shrinkage * variance[..., None] * G.T
            S = (1 - self.shrinkage) * S + self.shrinkage * (G * variance[..., None, :]) @ G.T
        mismatch = (GX - b).movedim(0, -1)  # (..., k, member)
        noisy = S
        if self.noise:
            noisy = S + self.noise**2 * torch.eye(k, dtype=F64, device=G.device)
        L = _spanning_factor(S, A, G) if 1 < k and (k <= members - 1 or self.shrinkage) else None
        if L is not None:
            if self.noise:
                L = _cholesky(noisy, G)
            new = _update(X, A, GA, mismatch, CG, noisy, L, self.noise, G, b, rowsum)
            self._check_update(G, new.detach(), b, X, ensemble=True)
            self._warn_if_collapsed(members, k)
            return Ensemble(self._unflat(new, samples, met, ensemble=True))
        variance = A.square().sum(0).mean(-1) / (members - 1)  # (...,) mean variance per slice
        gamma = torch.where(variance > 0, self.jitter * variance, torch.ones_like(variance))
        varying = _jitter_support(A, G)
        if varying is None:  # every point varies in every slice: γ I
            CG = CG + gamma[..., None, None] * G.T
            S = noisy + gamma[..., None, None] * (G @ G.T)
        else:  # γ only where members vary: a point all agree at (a set wall) stays as it is
            CG = CG * varying[..., None] + gamma[..., None, None] * (varying[..., None] * G.T)
            S = noisy + gamma[..., None, None] * ((G * varying[..., None, :]) @ G.T)
        L = _cholesky(S, G)
        new = _update(X, A, GA, mismatch, CG, S, L, self.noise, G, b, rowsum)
        self._check_update(G, new.detach(), b, X, ensemble=True)
        return Ensemble(self._unflat(new, samples, met, ensemble=True))


def _slice_named(at: int, shape: torch.Size, ensemble: bool = False) -> str:
    """Where an error points, after a space: the slice at the flat index ``at`` of ``shape``
    (the field's leading axes) as ``at leading index (i, j)``, or ``at member m, slice (i,)``
    when the first leading axis holds an ensemble's members; empty for a single field."""
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(at), shape))
    if not index:
        return ""
    if ensemble:  # the first leading index is the member
        return f" at member {index[0]}" + (f", slice {index[1:]}" if index[1:] else "")
    return f" at leading index {index}"


def _whitened_update(
    mean: torch.Tensor,
    variance: torch.Tensor,
    G: torch.Tensor,
    mismatch: torch.Tensor,
    noise: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A diagonal Gaussian's update without ``S = G D Gᵀ + σ² I``, whose condition number is the
    rows' squared: mean ``(..., n)``, variances ``D`` ``(..., n)``, ``mismatch = G mean − b``
    ``(..., k, 1)``. With ``[D^½ Gᵀ; σ I] = Q R`` (``S = Rᵀ R``, ``Q_n`` the first ``n`` rows of
    ``Q``): the new mean ``mean − D^½ Q_n R⁻ᵀ mismatch`` and the factor ``D^½ Q_n`` ``(..., n,
    k)`` the covariance loses. A pivot ``R_ii²`` at or below ``(16 n eps)²`` of its own column's
    ``|D^½ G_i|² + σ²`` (no variance along a row beyond the rows before it; QR's round-off
    leaves a dependent column's pivot a few ``n eps`` of its norm, not zero) raises: rows of
    very different scales are judged each on its own. A variance of exactly 0 passes a
    gradient of 0 through ``D^½`` (:func:`~physml.outputs.safe_sqrt`: the posterior mean and
    covariance are even in ``D^½``, so their slope in it is 0 there) where a plain ``sqrt``
    gives inf, and NaN beside a zero slope upstream (a head ``σ²`` at ``σ = 0``): its gradient
    is only what reaches it outside this update (the posterior's base ``D``), not the update's
    one-sided slope in ``D``; positive variances get the exact gradient."""
    k, n = G.shape
    root = safe_sqrt(variance).copysign(variance)[..., None]  # sqrt(-0.0) is -0.0
    rows = root * G.T
    if noise:
        sigma = noise * torch.eye(k, dtype=F64, device=G.device).expand(*rows.shape[:-2], k, k)
        rows = torch.cat([rows, sigma], dim=-2)
    Q, R = torch.linalg.qr(rows)
    pivots = torch.diagonal(R, dim1=-2, dim2=-1).square()
    if not bool((pivots > (16 * n * EPS) ** 2 * rows.square().sum(-2)).all()):
        _not_definite(G)
    factor = root * Q[..., :n, :]
    shift = torch.linalg.solve_triangular(R.transpose(-1, -2), mismatch, upper=False)
    return mean - (factor @ shift).squeeze(-1), factor


def _centred(X: torch.Tensor) -> torch.Tensor:
    """The members ``X`` ``(member, ..., n)`` float64 minus their mean, ``A``; exactly zero at a
    point where every member holds the same value (their mean may round a few ulps off it:
    left there, that round-off would set the gain, a correction of the field's own size rather
    than of the row's miss). Any difference between members, however small, is a spread."""
    plain = X - X.mean(0)
    return torch.where(_shared(X), plain - plain.detach(), plain)  # 0 there, plain's gradient


def _shared(X: torch.Tensor) -> torch.Tensor:
    """Where every member ``X (m, ...)`` holds the same value ``(...)`` bool."""
    return X.amin(0) == X.amax(0)


def _centre(X: torch.Tensor) -> torch.Tensor:
    """The members' mean ``(...)``, exactly their common value where they all agree (the mean of
    equal values can miss it by an ulp, which would move a wall an earlier condition set), with
    the mean's gradient everywhere."""
    mean = X.mean(0)
    return torch.where(_shared(X), X[0].detach() + (mean - mean.detach()), mean)


def _projector(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Gᵀ (G Gᵀ)⁻¹ = Q R⁻ᵀ`` ``(n, k)`` from ``Gᵀ = Q R`` for ``G`` ``(k, n)``, and the pivots
    ``R_ii²`` ``(k,)`` (each row's squared norm beyond the rows before it). ``G Gᵀ`` is never
    formed: the projection's error grows with ``G``'s condition number, not with its square."""
    Q, R = torch.linalg.qr(G.T)
    projector = torch.linalg.solve_triangular(R.T, Q, upper=False, left=False)
    return projector, torch.diagonal(R).square()


def _spanning_factor(S: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor | None:
    """The Cholesky factor of the noise-free ``S = G Σ Gᵀ`` ``(..., k, k)``, or ``None`` where
    the centred members ``A`` ``(member, ..., n)`` do not span the rows: a pivot (a row's spread
    beyond what the rows before it fix) at or below :data:`UNSPANNED` of ``|G_i|² Σ_m |A_m|² /
    (m − 1)`` (the spread on ``S``'s scale), or no factor at all. The noise does not enter: a
    small ``σ`` would pass the test without giving the members a direction to move along."""
    L, info = torch.linalg.cholesky_ex(S)
    spread = A.square().sum((0, -1))[..., None] * G.square().sum(-1) / (A.shape[0] - 1)
    pivots = torch.diagonal(L, dim1=-2, dim2=-1).square()
    return L if bool(((info == 0)[..., None] & (pivots > UNSPANNED * spread)).all()) else None


def _jitter_support(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor | None:
    """Where the ``γ`` fallback acts: ``(..., n)`` 1.0 at the points where the members differ
    (their centred values ``A`` ``(member, ..., n)``, :func:`_centred`, are not all zero), 0.0
    where they all agree (there ``Σ`` is zero and the update leaves them as they are); ``None``
    where the members differ at every point of every slice (``γ I``).

    A slice whose varying points cannot carry ``G``'s rows (a row's pivot in ``G_V G_Vᵀ``,
    ``G_V`` its columns there, at or below :data:`UNSPANNED` of ``|G_i|²``; e.g. no point
    varies) keeps ``γ`` everywhere: its rows are met by moving the points the members agree at.
    """
    varying = (A != 0).any(0)
    if bool(varying.all()):
        return None
    support = varying.to(G.dtype)
    gram = (G * support[..., None, :]) @ G.T
    L, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(L, dim1=-2, dim2=-1).square()
    carried = (info == 0) & (pivots > UNSPANNED * G.square().sum(-1)).all(-1)
    return torch.where(carried[..., None], support, torch.ones_like(support))


def _one_row_update(
    X: torch.Tensor, g: torch.Tensor, b: torch.Tensor, shrinkage: float, noise: float
) -> torch.Tensor | None:
    """The ensemble update for one row ``g`` ``(n,)`` per slice: members ``X`` ``(member, ...,
    n)`` float64, targets ``b`` ``(..., 1)``, ``Σ`` the members' covariance (shrunk by
    ``shrinkage`` toward its diagonal), ``K = Σg (gᵀΣg + σ²)⁻¹``, ``σ`` the ``noise``.
    ``σ = 0``: ``X − K (gX − b)``. ``σ > 0``: the mean ``x̄ − K (gx̄ − b)`` and the centred
    members ``A − α K gA``, ``α = 1 / (1 + sqrt(σ² / (gᵀΣg + σ²)))`` (the square-root gain
    ``K̃`` of one row). A dozen elementwise passes; ``None`` where the members do not span ``g``
    somewhere (``gᵀΣg`` zero, or below :data:`UNSPANNED` of their spread, whatever ``σ``)."""
    A = _centred(X)  # not X: X in place of A would cancel (see apply_ensemble)
    GX, GA = X @ g, A @ g  # (member, ...)
    S = GA.square().sum(0)  # (m − 1) gᵀΣg, per slice
    CG = (A * GA[..., None]).sum(0)  # (m − 1) Σg
    if shrinkage:
        variance = A.square().sum(0)  # (m − 1) diag Σ, (..., n)
        CG = (1 - shrinkage) * CG + shrinkage * variance * g
        S = (1 - shrinkage) * S + shrinkage * (variance * g.square()).sum(-1)
    spread = A.square().sum((0, -1)) * g.square().sum()  # |g|² Σ_m |A_m|², per slice
    if not bool(((S > 0) & (S > UNSPANNED * spread)).all()):  # noise-free: σ cannot span g
        return None
    S = S + (X.shape[0] - 1) * noise**2
    if not noise:
        return X - CG * ((GX - b[..., 0]) / S)[..., None]
    alpha = 1 / (1 + ((X.shape[0] - 1) * noise**2 / S).sqrt())  # S is (m − 1)(gᵀΣg + σ²)
    mean = _centre(X) - CG * ((GX.mean(0) - b[..., 0]) / S)[..., None]
    return mean + A - CG * (alpha * GA / S)[..., None]


def _update(
    X: torch.Tensor,
    A: torch.Tensor,
    GA: torch.Tensor,
    mismatch: torch.Tensor,
    CG: torch.Tensor,
    S: torch.Tensor,
    L: torch.Tensor,
    noise: float,
    G: torch.Tensor,
    b: torch.Tensor,
    rowsum: float,
) -> torch.Tensor:
    """The members after the update with ``K = Σ Gᵀ S⁻¹``: ``X`` and centred ``A`` ``(member,
    ..., n)``, ``GA`` ``(member, ..., k)``, ``mismatch = G X − b`` ``(..., k, member)``, ``CG =
    Σ Gᵀ`` ``(..., n, k)``, ``S = G Σ Gᵀ + σ² I`` ``(..., k, k)`` and its Cholesky factor ``L``,
    the rows ``G`` ``(k, n)`` and targets ``b`` ``(..., k)``.

    ``σ = 0``: every member ``x − K (G x − b)``, refined (the same step again on the result,
    with the same factor: ``S`` has ``G``'s condition number squared, and the first step alone
    can leave the rows missed well above the round-off of the data): once always, then while the
    cheap residual bound fails (``rowsum = max_i Σ_j |G_ij|``), :data:`REFINEMENTS` steps at
    most. ``σ > 0``: the mean
    ``x̄ − K (G x̄ − b)`` and the centred members ``A − K̃ G A``, ``K̃ = Σ Gᵀ L⁻ᵀ (L + σ I)⁻¹``
    with ``L`` the Cholesky factor of ``S`` (the square-root form: Andrews 1968; Whitaker &
    Hamill 2002; any square root of ``S`` serves when the noise is ``σ² I``, and this one has a
    finite gradient everywhere). No random numbers; when ``Σ`` is the members' covariance their
    new one is ``(I − K G) Σ`` exactly (one gain ``K`` for all would leave it narrower by ``σ² K
    Kᵀ``)."""
    if not noise:  # refined: S, G Σ Gᵀ, has G's condition number squared
        new = X - _members_last(CG @ torch.cholesky_solve(mismatch, L))
        scale = _data_scale(X.detach(), b.detach(), rowsum)
        for step in range(REFINEMENTS):
            missed = new @ G.T - b  # (member, ..., k)
            if step:  # the first refinement always; more while the cheap bound fails
                cheap = _cheap_residual(missed.detach(), new.detach(), scale, rowsum)
                if bool((cheap <= RESIDUAL_TOLERANCE).all()):
                    break
            new = new - _members_last(CG @ torch.cholesky_solve(missed.movedim(0, -1), L))
        return new
    mean = _centre(X) - (CG @ torch.cholesky_solve(mismatch.mean(-1, keepdim=True), L))[..., 0]
    eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
    # K̃ G A = CG L⁻ᵀ (L + σ I)⁻¹ G A: two triangular solves on the (k, member) right-hand side
    inner = torch.linalg.solve_triangular(L + noise * eye, GA.movedim(0, -1), upper=False)
    inner = torch.linalg.solve_triangular(L.transpose(-1, -2), inner, upper=True)
    return mean + A - _members_last(CG @ inner)


def _data_scale(before: torch.Tensor, b: torch.Tensor, rowsum: float) -> torch.Tensor:
    """Per slice, the scale of an exact update's data, ``max_i Σ_j |G_ij| · max|before| +
    max|b|`` ``(...)`` (``rowsum = max_i Σ_j |G_ij|``; ``before`` ``(..., n)``, the target ``b``
    ``(..., k)``), at least float64's smallest normal number: what :data:`RESIDUAL_TOLERANCE` is
    relative to."""
    return (_largest(before) * rowsum + b.abs().amax(-1)).clamp_min(TINY)


def _cheap_residual(
    missed: torch.Tensor, u: torch.Tensor, scale: torch.Tensor, rowsum: float
) -> torch.Tensor:
    """Per slice, the cheap bound of the relative residual ``(...)``: the largest ``|G u − b|``
    of ``missed`` ``(..., k)``, at least the round-off of ``G u``, ``eps · rowsum · max|u|``,
    over the data's ``scale`` ``(...)`` (``_data_scale``)."""
    return torch.maximum(missed.abs().amax(-1), EPS * rowsum * _largest(u)) / scale


def _members_last(correction: torch.Tensor) -> torch.Tensor:
    """``(..., n, member)`` → ``(member, ..., n)``."""
    return correction.movedim(-1, 0)


def _check_psd(cov: torch.Tensor) -> None:
    eigenvalues = torch.linalg.eigvalsh(cov)
    scale = eigenvalues.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(F64).tiny)
    if (eigenvalues < -1e-10 * scale).any():
        worst = (eigenvalues / scale).min().item()
        raise ConstraintError(
            f"cov is not positive semi-definite (smallest eigenvalue {worst:.3g} × the largest)"
        )
