"""Checks a guarded surrogate runs on each prediction: small objects with a threshold each.

A check scores every sample of a batch, ``score(inputs, prediction) -> (batch,)`` float64 (how far
the prediction is from what the physics or the training data allow, in the units named per
check), and *fails* a sample whose score is above its ``threshold`` (or NaN). A threshold of
``math.inf`` fails only NaN scores. Checks compose as a list given to
:func:`physml.updates.guard`; a sample goes to the fallback when any one fails.

``inputs`` are what the surrogate was called with ``(batch, ...)``; ``prediction`` is its output:
a tensor ``(batch, ...)``, a :class:`~physml.outputs.Gaussian` or an
:class:`~physml.outputs.Ensemble` (members first).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from pdes import Dirichlet, Grid1D, Neumann
from pdes.checks import non_negative
from pdes.heat import one_sided_flux

from .. import metrics
from .._checks import as_tensor
from ..constraints import Constraint
from ..errors import user_stacklevel
from ..outputs import Ensemble, Gaussian

F64 = torch.float64
CONDITION = "a pdes.Dirichlet or pdes.Neumann"


def point_prediction(prediction: object) -> torch.Tensor:
    """The tensor a prediction answers with: itself, a Gaussian's mean or an ensemble's mean."""
    if isinstance(prediction, Gaussian):
        return prediction.mean
    if isinstance(prediction, Ensemble):
        return prediction.samples.mean(0)
    if isinstance(prediction, torch.Tensor):
        return prediction
    raise TypeError(
        f"the surrogate must return a tensor, a Gaussian or an Ensemble, got "
        f"{type(prediction).__name__}"
    )


def _per_sample_max(values: torch.Tensor) -> torch.Tensor:
    return values.to(F64).abs().reshape(values.shape[0], -1).amax(1)


def _threshold(value: object) -> float:
    """``value`` as a threshold: a number ``>= 0``, or ``inf`` for a check that fails only NaN."""
    try:
        return non_negative("threshold", value)
    except ValueError:
        if float(value) == math.inf:
            return math.inf
        raise ValueError(f"threshold must be a number >= 0 or inf, got {value!r}") from None


class Check:
    """A check: :meth:`score` per sample, failed above ``threshold`` (in the score's units;
    :meth:`calibrate` sets it from samples the surrogate is trusted on); ``name`` labels reports.
    Calling it on ``inputs (batch, ...)`` and the surrogate's ``prediction`` for them scores
    each sample."""

    name = "check"

    def __init__(self, threshold: float) -> None:
        self.threshold = _threshold(threshold)

    def score(self, inputs: torch.Tensor, prediction: object) -> torch.Tensor:
        """The score ``(batch,)`` of each sample of ``prediction`` for ``inputs``."""
        raise NotImplementedError

    def calibrate(self, inputs: torch.Tensor, prediction: object, level: float) -> Check:
        """Set ``threshold`` to the ``level`` quantile (in ``(0, 1]``; 1: the largest) of the
        scores on samples the surrogate is trusted on, e.g. in-range validation inputs and its
        predictions there, so that it fails about ``1 − level`` of such samples. Returns itself."""
        if isinstance(level, bool) or not isinstance(level, (int, float)):
            raise TypeError(f"level must be a number in (0, 1], got {type(level).__name__}")
        if not 0 < level <= 1:
            raise ValueError(f"level must be in (0, 1], got {level!r}")
        if not isinstance(inputs, torch.Tensor) or inputs.ndim == 0 or inputs.shape[0] == 0:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(
                f"inputs must be a non-empty batch (batch, ...) to calibrate on, got {got}"
            )
        scores = self(inputs, prediction)[1]
        if not torch.isfinite(scores).all():
            bad = torch.nonzero(~torch.isfinite(scores)).flatten()[:5].tolist()
            raise ValueError(
                f"check {self.name!r} scores NaN or inf on calibration samples {bad}: a "
                "threshold needs finite scores"
            )
        self.threshold = _threshold(float(torch.quantile(scores, float(level))))
        return self

    def __call__(
        self, inputs: torch.Tensor, prediction: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fails, score)``: booleans and float64 scores ``(batch,)``."""
        score = self.score(inputs, prediction)
        batch = inputs.shape[0]
        if not isinstance(score, torch.Tensor) or score.shape != (batch,):
            got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise ValueError(f"check {self.name!r} must score each sample ({batch},), got {got}")
        score = score.to(F64)
        return ~(score <= self.threshold), score

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, threshold={self.threshold:g})"


class InputRange(Check):
    """Inputs outside the training range: per-parameter bounds ``lower ≤ p ≤ upper``.

    ``parameters(inputs) -> (batch, P)`` gives the parameters of each input (by default the
    inputs themselves, which must then be ``(batch, P)``). The score is the largest distance
    outside the box in units of each parameter's range ``upper − lower`` (absolute where the
    range is 0); 0 inside; infinite for parameters holding NaN or inf, so those fail at any
    finite threshold. The default threshold 0 fails every input outside the box. Parameters in a
    lower precision are judged against the bounds rounded to it (as the flip metrics judge
    errors): a float32 parameter equal to ``float32(upper)`` is inside; the range, the score's
    unit, is that of the bounds as given (float64), whatever the parameters' precision.
    """

    name = "input_range"

    def __init__(
        self,
        lower: torch.Tensor,
        upper: torch.Tensor,
        parameters: Callable[[torch.Tensor], torch.Tensor] | None = None,
        threshold: float = 0.0,
    ) -> None:
        super().__init__(threshold)
        self.lower = as_tensor("lower", lower, "(P,)", 1)
        self.upper = as_tensor("upper", upper, "(P,)", 1)
        if self.lower.shape != self.upper.shape:
            raise ValueError(
                f"lower and upper must have the same shape (P,), got {tuple(self.lower.shape)} "
                f"and {tuple(self.upper.shape)}"
            )
        if (self.lower > self.upper).any():
            raise ValueError("lower must be <= upper for every parameter")
        if parameters is not None and not callable(parameters):
            raise TypeError(
                f"parameters must be callable(inputs) -> (batch, P), got {parameters!r}"
            )
        self.parameters = parameters

    @classmethod
    def from_training(
        cls,
        training_parameters: torch.Tensor,
        parameters: Callable[[torch.Tensor], torch.Tensor] | None = None,
        threshold: float = 0.0,
    ) -> InputRange:
        """Bounds from the parameters ``(N, P)`` the surrogate was trained on: their min and max."""
        values = as_tensor("training_parameters", training_parameters, "(N, P)", 2)
        if values.shape[0] == 0:
            raise ValueError("training_parameters is empty")
        return cls(values.amin(0), values.amax(0), parameters, threshold)

    def score(self, inputs: torch.Tensor, prediction: object) -> torch.Tensor:
        raw = inputs if self.parameters is None else self.parameters(inputs)
        name = "inputs" if self.parameters is None else "parameters(inputs)"
        own = as_tensor(name, raw, f"(batch, {self.lower.numel()})", 2, dtype=None, finite=False)
        if own.shape[1] != self.lower.numel() or own.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{name} must be ({inputs.shape[0]}, {self.lower.numel()}) (batch, P), got "
                f"{tuple(own.shape)}"
            )
        values = own.to(F64)
        lower, upper = (
            metrics.rounded_to(bound, own.dtype).to(values.device, F64)
            for bound in (self.lower, self.upper)
        )
        width = (self.upper - self.lower).to(values.device)
        scale = torch.where(width > 0, width, torch.ones_like(width))
        outside = torch.maximum(lower - values, values - upper).clamp_min(0) / scale
        return outside.amax(1).masked_fill(~torch.isfinite(values).all(1), torch.inf)


class ConstraintResidual(Check):
    """A constraint's residual on the prediction, e.g. :func:`physml.constraints.mass_conservation`.

    Score: the largest ``|constraint.residual(u, inputs)|`` of each sample (the constraint's
    units, e.g. mass), ``u`` the point prediction; ``inputs`` reach a target given as a function
    of the model's inputs. Fails above ``threshold``; ``name`` labels it in reports.
    """

    def __init__(self, constraint: Constraint, threshold: float, name: str = "conservation"):
        super().__init__(threshold)
        if not callable(getattr(constraint, "residual", None)):
            raise TypeError(
                f"constraint must offer residual(u, *inputs) (a LinearConstraint, e.g. "
                f"mass_conservation), got {type(constraint).__name__}"
            )
        self.constraint, self.name = constraint, name

    def score(self, inputs: torch.Tensor, prediction: object) -> torch.Tensor:
        return _per_sample_max(self.constraint.residual(point_prediction(prediction), inputs))


class BoundaryError(Check):
    """How far the prediction is from a 1-D boundary condition on its last axis.

    Dirichlet: ``|u − value|`` at each wall; Neumann: ``|∂u/∂x − flux|`` with the second-order
    one-sided difference ``(∓3u₀ ± 4u₁ ∓ u₂) / (2 dx)``. Score: the largest over walls (and any
    channel or time axis) of each sample, in the field's units (per unit length for Neumann).
    ``time`` is where values given as functions of time are evaluated; ``grid`` is the
    :class:`pdes.Grid1D` of the last axis; a sample fails above ``threshold``.

    ``bc`` is a :class:`pdes.Dirichlet` or :class:`pdes.Neumann`, or, for walls that differ per
    sample, a function of the inputs returning one, ``bc(inputs)`` (e.g.
    ``lambda inputs: Dirichlet(inputs[:, 0, 0], 0.0)``): its values ``(batch,)`` then follow the
    samples scored, whichever of a batch the guard scores. Values per sample held by ``bc``
    itself fit only batches of exactly that many samples (a warning says so): the guard scores
    a subset of a batch wherever the surrogate answers NaN or inf, or refuses samples. The same
    holds for a wall given as a function of time returning values per sample, ``left(t) ->
    (batch,)``, but no warning says so (it is not called before scoring): give such walls as
    ``bc(inputs)`` too.
    """

    name = "boundary"

    def __init__(
        self,
        bc: Dirichlet | Neumann | Callable[[torch.Tensor], Dirichlet | Neumann],
        grid: Grid1D,
        threshold: float,
        time: float = 0.0,
    ) -> None:
        super().__init__(threshold)
        if not isinstance(grid, Grid1D):
            raise TypeError(f"grid must be a pdes.Grid1D, got {type(grid).__name__}")
        if grid.kind != "node" or grid.periodic:
            raise ValueError("grid must be a non-periodic node grid (its ends on the walls)")
        self.grid = grid
        if not callable(bc):
            self._condition(
                bc, f"bc must be {CONDITION}, or a function of the inputs returning one"
            )
            _warn_per_sample(bc)
        self.bc, self.time = bc, float(time)

    def _condition(self, bc: object, expected: str) -> Dirichlet | Neumann:
        """``bc``, a condition this grid can check; ``expected`` opens the message if not."""
        if not isinstance(bc, (Dirichlet, Neumann)):
            raise TypeError(f"{expected}, got {type(bc).__name__}")
        if isinstance(bc, Neumann) and self.grid.n < 3:
            raise ValueError(
                f"grid must have at least 3 points for a Neumann check, got {self.grid.n}"
            )
        return bc

    def _walls(
        self, inputs: torch.Tensor, batch: int, device: torch.device
    ) -> tuple[Dirichlet | Neumann, tuple[torch.Tensor, torch.Tensor]]:
        """The condition of ``inputs`` and its values ``(batch,)`` at each wall at ``time``."""
        if callable(self.bc):
            bc = self._condition(self.bc(inputs), f"bc(inputs) must return {CONDITION}")
            return bc, bc.values(self.time, batch, device)
        try:
            return self.bc, self.bc.values(self.time, batch, device)
        except ValueError as error:
            raise ValueError(
                f"{error} (scoring {batch} samples): for walls that differ per sample, give bc "
                "as a function of the inputs, bc(inputs) -> Dirichlet or Neumann"
            ) from None

    def score(self, inputs: torch.Tensor, prediction: object) -> torch.Tensor:
        u = point_prediction(prediction).to(F64)
        if u.ndim < 2 or u.shape[-1] != self.grid.n:
            raise ValueError(
                f"prediction must be (batch, ..., {self.grid.n}) on the grid, got {tuple(u.shape)}"
            )
        batch, view = u.shape[0], (u.shape[0],) + (1,) * (u.ndim - 2)
        bc, values = self._walls(inputs, batch, u.device)
        left, right = (v.reshape(view) for v in values)
        if isinstance(bc, Dirichlet):
            walls = torch.stack([u[..., 0] - left, u[..., -1] - right], -1)
        else:
            slope_left, slope_right = one_sided_flux(u, self.grid.dx)
            walls = torch.stack([slope_left - left, slope_right - right], -1)
        return _per_sample_max(walls)


def _warn_per_sample(bc: Dirichlet | Neumann) -> None:
    """A warning where ``bc`` holds values per sample (a tensor, array or list, not a number)."""
    kind = type(bc).__name__
    held = [
        f"{kind}.{side}"
        for side, value in (("left", bc.left), ("right", bc.right))
        if not callable(value) and np.ndim(value) > 0
    ]
    if held:
        warnings.warn(
            f"bc holds values per sample ({', '.join(held)}): they fit only batches of exactly "
            "that many samples, but the guard scores a subset of a batch wherever the surrogate "
            "answers NaN or inf (or refuses samples); give bc as a function of the inputs, "
            "bc(inputs) -> Dirichlet or Neumann, so the walls follow the samples scored",
            UserWarning,
            stacklevel=user_stacklevel(),
        )


class EnsembleSpread(Check):
    """The prediction's own uncertainty: how far its members (or its Gaussian) spread.

    The prediction must be an :class:`~physml.outputs.Ensemble` (unbiased member std) or a
    :class:`~physml.outputs.Gaussian` (marginal std). Score: the largest std over each sample's
    points, in the field's units; with ``relative`` the std's L2 norm over the sample's points
    over its mean's, ``‖σ‖₂ / ‖μ‖₂`` — dimensionless, on the scale of the mean's relative L2
    error, so one threshold serves inputs of any amplitude (a zero mean fails).
    """

    name = "spread"

    def __init__(self, threshold: float, relative: bool = False) -> None:
        super().__init__(threshold)
        if not isinstance(relative, bool):
            raise TypeError(f"relative must be True or False, got {relative!r}")
        self.relative = relative

    def score(self, inputs: torch.Tensor, prediction: object) -> torch.Tensor:
        if isinstance(prediction, Ensemble):
            if prediction.samples.shape[0] < 2:
                raise ValueError("an ensemble spread needs at least 2 members")
            std = prediction.samples.to(F64).std(0)
        elif isinstance(prediction, Gaussian):
            std = metrics.marginal_std(prediction)
        else:
            raise TypeError(
                f"the spread check needs an Ensemble or Gaussian prediction, got "
                f"{type(prediction).__name__}"
            )
        if not self.relative:
            return _per_sample_max(std)
        mean = point_prediction(prediction).to(F64)
        batch = std.shape[0]
        return std.reshape(batch, -1).norm(dim=1) / mean.reshape(batch, -1).norm(dim=1)


class PDEResidual(Check):
    """The PDE's residual on the predicted solution, e.g. a finite-difference one.

    ``residual(inputs, u) -> (batch, ...)`` is the equation evaluated on the point prediction
    ``u`` (e.g. ``u_t + u u_x − ν u_xx`` by differences on a predicted trajectory); the score is
    its root mean square over each sample, in the equation's units; a sample fails above
    ``threshold``.
    """

    name = "pde_residual"

    def __init__(
        self, residual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], threshold: float
    ) -> None:
        super().__init__(threshold)
        if not callable(residual):
            raise TypeError(f"residual must be callable(inputs, u), got {type(residual).__name__}")
        self.residual = residual

    def score(self, inputs: torch.Tensor, prediction: object) -> torch.Tensor:
        values = self.residual(inputs, point_prediction(prediction))
        if not isinstance(values, torch.Tensor) or values.ndim == 0:
            raise ValueError("residual must return a tensor (batch, ...)")
        return values.to(F64).reshape(values.shape[0], -1).square().mean(1).sqrt()
