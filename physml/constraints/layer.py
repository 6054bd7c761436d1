"""``physml.constrain(model, *constraints)``: the one door between constraints and models.

At wrap time the operator-seam constraints correct the model's kernel layers (when it offers
them); while sampling the sampler-seam constraints shift every reverse step (when it samples);
after every forward the output-seam constraints act on the output, in the order given.

Composition: boundary conditions come first, and the constraints after them keep them. A
Gaussian keeps them through its covariance (conditioning), an Ensemble through its members'
(Dirichlet walls always; see :func:`constrain` for the limits); on a tensor a
:class:`LinearConstraint` projects onto its rows and the conditions' rows together
(:meth:`.BoundaryCondition.wall_rows`), and :class:`NonNegative` leaves the points those rows touch
as they are. A boundary condition after a :class:`LinearConstraint` or :class:`NonNegative` is
refused at wrap time (its walls would break them); they are never reordered.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .._state import without_neuralop_metadata
from ..errors import ConstraintError
from .base import Constraint, check_finite
from .boundary import BoundaryCondition
from .linear import LinearConstraint
from .nonnegative import NonNegative
from .operator import OperatorCorrection, install, operator_view

KEEPS_WALLS = (LinearConstraint, NonNegative)
"""The constraints that keep the boundary conditions set before them on a tensor output."""


@dataclass(frozen=True)
class ReverseStep:
    """What a diffusion sampler tells the guidance at one reverse step (its ``t`` argument).

    ``timestep``: the training timestep ``t`` of this step (an int in ``[0, T)``); ``index``: the
    step's position in the sampling loop (0 first); ``alpha_bar``: ᾱ_t of the noise schedule;
    ``denoise``: ``z_t ↦ ẑ_0``, the denoiser's differentiable estimate of the clean latents;
    ``decode``: latents ↦ frames, differentiable (``None`` when the sampler works in data space).
    A guide needing only ``t`` reads ``timestep``; a quantity of clean frames is
    ``quantity(decode(denoise(z_t)))``.
    """

    timestep: int
    index: int
    alpha_bar: float
    denoise: Callable[[torch.Tensor], torch.Tensor] | None = None
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None


@runtime_checkable
class Sampler(Protocol):
    """The sampler seam's protocol: ``sample(context, guidance=None, **options)``.

    At every reverse step the sampler calls ``guidance(z_t, t)`` (when given; ``t`` an int or a
    :class:`ReverseStep`) and applies the returned tensor ``g``, shaped like ``z_t``, as its scheme
    documents: a plain sampler adds it to the step's mean; a DDPM step shifts its mean by
    ``σ_t g``; a DDIM step shifts its noise estimate by ``−√(1 − ᾱ_t) g``.
    """

    def sample(self, context: object, guidance=None, **options: object) -> object: ...


class Constrained(nn.Module):
    """A model and its constraints; ``forward`` takes the model's own arguments.

    ``forward(*args, time=None, constraints=None, **kwargs)``: ``time`` reaches the constraints
    only (the time at which boundary values given as functions of time are evaluated);
    ``constraints`` replaces the wrapped constraints for this call only (e.g. a batch's own
    boundary values) and must match them one by one (kind, and for boundary conditions axis,
    sides and grid). With sampler-seam constraints ``forward`` samples (:meth:`sample`).

    A ``model`` that is itself a :class:`Constrained`, at any depth, is unwrapped: its
    constraints come first and its ``kernel`` and ``pivot_floor`` hold where these are left at
    their defaults (:func:`constrain`), so ``constraints=`` lists the inner ones first. A
    wrapper inside another module (``nn.DataParallel(constrain(m, a))``) is kept as a model.
    A state dict saved by a nested wrapper before it was unwrapped (``model.model.*``,
    ``model.constraints.i.*``) loads into the flat one.
    """

    def __init__(
        self,
        model: nn.Module,
        constraints: Sequence[Constraint],
        kernel: bool | str = "auto",
        pivot_floor: float = 0.1,
    ) -> None:
        super().__init__()
        constraints = tuple(constraints)
        while isinstance(model, Constrained):
            kernel, pivot_floor = _merged_options(model, kernel, pivot_floor)
            model, constraints = model.model, (*model.constraints, *constraints)
        self.model = model
        self.constraints = nn.ModuleList(constraints)
        self.options = {"kernel": kernel, "pivot_floor": pivot_floor}
        name = type(model).__name__
        boundary = [c for c in constraints if isinstance(c, BoundaryCondition)]
        _check_grids(boundary)
        _check_order(list(constraints))
        self.correction: OperatorCorrection | None = install(model, boundary, kernel, pivot_floor)
        self._values_kept: dict[tuple, tuple[tuple, tuple[list, list, list]]] = {}
        self.guided = any("sampler" in c.seams for c in constraints)
        if self.guided:
            first = next(c for c in constraints if "sampler" in c.seams)
            start = f"constrain: {name} cannot take {type(first).__name__} at the sampler seam: "
            if not isinstance(model, Sampler):
                raise ConstraintError(
                    start + "it has no sample(context, guidance=None, ...) method "
                    "(physml.constraints.Sampler)"
                )
            signature = _signature(model.sample)
            if signature is not None and not _takes_guidance(signature):
                raise ConstraintError(
                    start + f"its sample({', '.join(signature.parameters)}) takes no guidance= "
                    "keyword (the sampler seam needs sample(context, guidance=None, ...): "
                    "physml.constraints.Sampler)"
                )

    def state_dict(self, *args, **kwargs):
        """The model's and constraints' tensors, without neuralop's top-level ``_metadata``
        (its init arguments, functions and classes among them: once wrapped they break
        ``load_state_dict``, an unexpected key, and ``torch.load(..., weights_only=True)``)."""
        return without_neuralop_metadata(super().state_dict(*args, **kwargs))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        expected = set(self.state_dict(keep_vars=True))
        _rename_nested(state_dict, prefix, expected, len(self.constraints))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def kernel(self) -> bool:
        """Whether the model's kernel layers are corrected (the operator seam is in use)."""
        return self.correction is not None

    def forget(self) -> None:
        """Drop the kernel layers' kept probes: the next forward reads them again.

        Probes read without gradient are kept while the weights stay the same (changes through
        ``parameter.data`` included); after changing ``K`` in a way the weights do not show (a
        plain attribute its forward reads, a hook), call this.
        """
        if self.correction is not None:
            for layer in self.correction.layers:
                layer.forget()

    def forward(self, *args: object, time: object = None, constraints=None, **kwargs: object):
        if self.guided:
            return self.sample(*args, time=time, constraints=constraints, **kwargs)
        active = self._active(constraints)
        if self.correction is None:
            return self._output_seam(self.model(*args, **kwargs), active, args, kwargs, time)
        output, walls = self._corrected_forward(active, args, kwargs, time)
        return self._output_seam(output, active, args, kwargs, time, walls)

    def sample(self, context: object, *args: object, time=None, constraints=None, **kwargs):
        """The model's samples with every reverse step guided, then the output seam.

        A guide of the caller's own (``guidance=``, or positionally where the model's ``sample``
        takes it there) is added after the constraints' guides, so each step the sampler gets
        ``Σ_c c.guide(z_t, t, context) + guidance(z_t, t)``, summed in that order. Without
        sampler-seam constraints the model's ``sample`` gets the arguments as given."""
        if not isinstance(self.model, Sampler):
            raise ConstraintError(f"{type(self.model).__name__} has no sample method")
        active = self._active(constraints)
        guides = [c for c in active if "sampler" in c.seams]
        position = _guidance_position(self.model.sample, args)
        theirs = kwargs.get("guidance") if position is None else args[position]
        if theirs is not None and not callable(theirs):
            raise TypeError(f"guidance must be callable(z_t, step), got {type(theirs).__name__}")

        def guidance(z_t: torch.Tensor, t: object) -> torch.Tensor:
            shift = sum(c.guide(z_t, t, context) for c in guides)
            return shift if theirs is None else shift + theirs(z_t, t)

        model_args, model_kwargs = args, kwargs
        if guides and position is None:
            model_kwargs = {**kwargs, "guidance": guidance}
        elif guides:
            model_args = (*args[:position], guidance, *args[position + 1 :])
        output = self.model.sample(context, *model_args, **model_kwargs)
        return self._output_seam(output, active, (context, *args), kwargs, time)

    def _active(self, constraints) -> tuple[Constraint, ...]:
        mine = tuple(self.constraints)
        if constraints is None:
            return mine
        theirs = tuple(constraints)
        same = len(theirs) == len(mine) and all(
            type(a) is type(b)
            and (not isinstance(a, BoundaryCondition) or a.walls_key == b.walls_key)
            for a, b in zip(mine, theirs, strict=False)
        )
        if not same:
            raise ConstraintError(
                "constraints must match the wrapped ones one by one (kind, and for boundary "
                f"conditions axis, sides and grid; only values may differ): expected {list(mine)},"
                f" got {list(theirs)}"
            )
        return theirs

    def _corrected_forward(self, active, args, kwargs, time):
        correction = self.correction
        x = self._input(args, kwargs)
        correction.check_input(x)
        originals = [c for c in active if isinstance(c, BoundaryCondition)]
        conditions, values, hidden = self._wall_values(originals, x, time)
        with correction.attached(values, hidden):
            output = self.model(*args, **kwargs)
        if isinstance(output, torch.Tensor) and not torch.isfinite(output.sum()):
            correction.check_finite_input(x)  # blame the input when it is the cause
        return output, dict(zip(originals, zip(conditions, values, strict=True), strict=True))

    def _input(self, args: tuple, kwargs: dict) -> object:
        """The model's input ``x``: its first positional argument, else the keyword naming the
        first parameter of its ``forward`` (``x`` when that cannot be read)."""
        if args:
            return args[0]
        try:
            first = next(iter(inspect.signature(self.model.forward).parameters))
        except (StopIteration, TypeError, ValueError):
            first = "x"
        if first in kwargs:
            return kwargs[first]
        raise ConstraintError(
            f"the operator seam needs the model's input: pass it positionally (model(x)) or as "
            f"{first}=, got keywords {sorted(kwargs)}"
        )

    def _wall_values(self, originals, x: torch.Tensor, time) -> tuple[list, list, list]:
        """The conditions at ``time``, their values shaped for the output and the hidden layers'
        values; kept between calls on inputs alike when they cannot change (constant values of
        the wrapped conditions, no gradient through them; a tensor value is told apart by its
        identity and version counter, so changing it in place is seen)."""
        values_key = _values_key(originals)
        key = (tuple(x.shape), x.dtype, x.device, torch.is_inference_mode_enabled())
        reusable = (
            time is None
            and values_key is not None
            and all(a is b for a, b in zip(originals, self.constraints, strict=False))
        )
        kept = self._values_kept.get(key)
        if reusable and kept is not None and kept[0] == values_key:
            return kept[1]
        shape = self.correction.output_shape(x)
        conditions = [c.at(time) for c in originals]
        values = [
            (None, None)
            if condition.kind == "periodic"
            else condition.values(x.shape[0], x.dtype, x.device, shape)
            for condition in conditions
        ]
        found = (conditions, values, self.correction.hidden_values(values))
        constant = not any(c.time_dependent for c in originals) and not any(
            v is not None and v.requires_grad for pair in values for v in pair
        )
        if reusable and constant:
            self._values_kept[key] = (values_key, found)
        return found

    @staticmethod
    def _output_seam(output, active, args, kwargs, time, walls=None):
        """The output-seam constraints in order; boundary conditions whose values the operator
        seam already evaluated for this call (``walls``) set them without evaluating again.

        On a tensor, a :class:`LinearConstraint` or :class:`NonNegative` after boundary
        conditions keeps them (they are handed over as ``kept``); a Gaussian or an Ensemble
        keeps them through its covariance."""
        walls = walls or {}
        set_walls: list[BoundaryCondition] = []  # conditions set on the tensor so far
        for constraint in active:
            if "output" not in constraint.seams:
                continue
            tensor = isinstance(output, torch.Tensor)
            if constraint in walls and tensor:
                check_finite("output", output)
                bound, values = walls[constraint]
                output = bound.enforce(output, values=values)
                set_walls.append(bound)
            elif set_walls and tensor and isinstance(constraint, KEEPS_WALLS):
                check_finite("output", output)
                state = constraint.prepare(*args, time=time, **kwargs)
                output = constraint.apply_tensor(output, state, kept=tuple(set_walls))
            else:
                output = constraint(output, *args, time=time, **kwargs)
                if tensor and isinstance(constraint, BoundaryCondition):
                    set_walls.append(constraint)
        return output


def _check_order(constraints: Sequence[Constraint]) -> None:
    """Boundary conditions before the constraints that keep them: a condition after a
    :class:`LinearConstraint` or :class:`NonNegative` would set walls that constraint relied on
    (a mass, a non-negative value) and break it."""
    for position, constraint in enumerate(constraints):
        if not isinstance(constraint, BoundaryCondition) or constraint.is_identity:
            continue
        earlier = [
            (i, c) for i, c in enumerate(constraints[:position]) if isinstance(c, KEEPS_WALLS)
        ]
        if earlier:
            i, first = earlier[0]
            raise ConstraintError(
                f"constraints[{position}] ({constraint.kind} condition on axis "
                f"{constraint.axis}) comes after constraints[{i}] ({type(first).__name__}): "
                "setting its walls would break that constraint. Put boundary conditions first; "
                "the constraints after them keep them"
            )


def _values_key(conditions: Sequence[BoundaryCondition]) -> tuple | None:
    """What the conditions' values are, for the kept wall values: numbers as they are; ``None``
    when a value is anything else (a tensor or array can change in place unseen — through
    ``.data`` or a numpy array sharing its memory — so its wall values are not kept)."""
    key = []
    for condition in conditions:
        for value in (getattr(condition.bc, "left", None), getattr(condition.bc, "right", None)):
            if value is None or callable(value) or isinstance(value, (int, float)):
                key.append(value if isinstance(value, (int, float)) else None)
            else:
                return None
    return tuple(key)


def _signature(method: Callable) -> inspect.Signature | None:
    """``method``'s signature, ``None`` where Python cannot tell it."""
    try:
        return inspect.signature(method)
    except (TypeError, ValueError):
        return None


def _guidance_position(sample: Callable, args: tuple) -> int | None:
    """The index in ``args`` of the guide in a call ``sample(context, *args)``: where ``sample``
    takes ``guidance`` positionally and ``args`` reach it; ``None`` otherwise."""
    signature = _signature(sample)
    if signature is None:
        return None
    by_position = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in signature.parameters.values() if p.kind in by_position]
    index = names.index("guidance") - 1 if "guidance" in names[1:] else len(args)
    return index if index < len(args) else None


def _takes_guidance(signature: inspect.Signature) -> bool:
    """Whether a call with ``guidance=`` binds: a parameter of that name passed by keyword, or
    ``**kwargs``."""
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(
        p.kind == inspect.Parameter.VAR_KEYWORD or (p.name == "guidance" and p.kind in by_keyword)
        for p in signature.parameters.values()
    )


def _check_grids(conditions: Sequence[BoundaryCondition]) -> None:
    """One grid per axis, and a periodic condition not mixed with others on its axis."""
    grids: dict[int, object] = {}
    periodic: dict[int, bool] = {}
    for condition in conditions:
        axis = condition.axis
        if grids.setdefault(axis, condition.grid) != condition.grid:
            raise ConstraintError(
                f"the condition on axis {axis} is on {condition.grid}, but an earlier condition "
                f"puts {grids[axis]} on that axis"
            )
        is_periodic = condition.kind == "periodic"
        if periodic.setdefault(axis, is_periodic) != is_periodic:
            raise ConstraintError(
                f"axis {axis} carries a periodic condition and a {condition.kind} one; a periodic "
                "condition cannot be mixed with others on the same axis"
            )


def _options(wrapper: Constrained) -> dict[str, object]:
    """The ``kernel`` and ``pivot_floor`` ``wrapper`` was built with; for one pickled before it
    kept them, those its correction shows (``kernel=False``: boundary conditions and a model
    offering the operator seam, but no correction), the others unknown."""
    if "options" in wrapper.__dict__:
        return wrapper.options
    if wrapper.correction is not None:
        return {"pivot_floor": wrapper.correction.layers[0].pivot_floor}
    walls = any(isinstance(c, BoundaryCondition) for c in wrapper.constraints)
    return {"kernel": False} if walls and operator_view(wrapper.model)[0] else {}


def _merged_options(
    inner: Constrained, kernel: bool | str, pivot_floor: float
) -> tuple[bool | str, float]:
    """``kernel`` and ``pivot_floor`` of a wrapper unwrapping ``inner``: each one the call that
    set it gave (set: other than the default), refused where both set it differently."""
    kept = _options(inner)
    merged = []
    for name, ours in (("kernel", kernel), ("pivot_floor", pivot_floor)):
        default = inspect.signature(Constrained).parameters[name].default
        theirs = kept.get(name, default)
        if ours == default or theirs == ours:
            merged.append(theirs)
        elif theirs == default:
            merged.append(ours)
        else:
            raise ConstraintError(
                f"constrain: the model is already constrained with {name}={theirs!r} and this "
                f"call asks {name}={ours!r}; give all the constraints in one call, "
                f"constrain(model, *constraints, {name}=...)"
            )
    return merged[0], merged[1]


NESTED = ("model.model.", "model.constraints.")
"""How the keys of a nested wrapper's state dict begin (its model a wrapper)."""


def _rename_nested(state_dict: dict, prefix: str, expected: set[str], n_constraints: int) -> None:
    """Rename in place the keys under ``prefix`` saved by a nested wrapper (before nesting was
    unwrapped) to those of the flat one, ``expected``; nothing where no split of the constraints
    fits them (torch then reports the keys that do not fit, or ``strict=False`` returns them)."""
    given = {key[len(prefix) :] for key in state_dict if key.startswith(prefix)}
    strange = sorted(key for key in given - expected if key.startswith(NESTED))
    if not strange:
        return
    model = {key[len("model.") :] for key in expected if key.startswith("model.")}
    constraints = [_constraint_keys(expected, i) for i in range(n_constraints)]
    names = _flat_names(given, model, constraints, nested=True)
    if names is None:  # not an old nested layout after all (e.g. a model with its own .model)
        return
    renamed = {prefix + new: state_dict.pop(prefix + old) for old, new in names.items()}
    state_dict.update(renamed)


def _constraint_keys(keys: set[str], index: int) -> set[str]:
    """The names in ``keys`` under ``constraints.<index>.``, without that prefix."""
    head = f"constraints.{index}."
    return {key[len(head) :] for key in keys if key.startswith(head)}


def _flat_names(
    given: set[str], model: set[str], constraints: list[set[str]], nested: bool
) -> dict[str, str] | None:
    """Old name -> flat name of each key in ``given``: the state of a wrapper of the model
    whose keys are ``model`` (``nested``: of a wrapper of it, at any depth) and of the
    constraints whose keys are ``constraints``, each wrapper's own after those inside it;
    ``None`` where no split of the constraints gives exactly ``given``."""
    inner, own = set(), {}
    for key in given:
        head, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if head == "model":
            inner.add(rest)
        elif head == "constraints" and index.isdigit():
            own.setdefault(int(index), set()).add(name)
        else:
            return None
    total = len(constraints)
    for first in range(1, total) if nested else (0,):
        count = total - first
        if max(own, default=-1) >= count:
            break
        if any(own.get(i, set()) != constraints[first + i] for i in range(count)):
            continue
        names = {
            f"constraints.{i}.{name}": f"constraints.{first + i}.{name}"
            for i, kept in own.items()
            for name in kept
        }
        if not nested:
            same = {f"model.{key}": f"model.{key}" for key in inner}
            return names | same if inner == model else None
        for deeper in (False, True):
            below = _flat_names(inner, model, constraints[:first], deeper)
            if below is not None:
                return names | {f"model.{old}": new for old, new in below.items()}
    return None


def constrain(
    model: nn.Module,
    *constraints: Constraint,
    kernel: bool | str = "auto",
    pivot_floor: float = 0.1,
) -> Constrained:
    """Wrap ``model`` so that its outputs (and, where it offers them, its layers and sampler
    steps) meet ``constraints``.

    Args:
        model: any ``nn.Module`` returning a tensor, ``Gaussian`` or ``Ensemble``; a neuralop
            FNO or an :class:`~physml.constraints.OperatorModel` also offers the operator seam, a
            :class:`Sampler` the sampler seam.
        constraints: one or more :class:`Constraint` objects, applied in the order given, each
            keeping what the ones before it imposed where it can: boundary conditions first
            (one after a :class:`LinearConstraint` or :class:`NonNegative` raises
            :class:`ConstraintError`: it would set walls they relied on). On a tensor output a
            :class:`LinearConstraint` after boundary conditions is the nearest field meeting
            its rows and keeping theirs (Dirichlet walls, Neumann stencils, periodic ends; a
            ConstraintError where its rows fix only values they set); :class:`NonNegative`
            after them keeps its row and leaves the Dirichlet walls, the Neumann walls with
            their two stencil neighbours (and periodic walls of unequal weight) as they are (a
            ConstraintError where one is negative). On a tensor two linear constraints do not
            keep each other: give their rows in one. A Gaussian keeps earlier constraints
            through its covariance (conditioning); an Ensemble through its members' covariance
            where they span the rows, and where its update falls back to a diagonal metric
            (``γ``, :class:`NonNegative`) it keeps the points every member agrees at (Dirichlet
            walls) but not a Neumann stencil.
        kernel: boundary conditions at the operator seam: ``"auto"`` where the model offers it,
            ``True`` to require it (else :class:`ConstraintError`), ``False`` output seam only.
        pivot_floor: the kernel correction divides by a pivot per layer, channel and wall point;
            one smaller than ``pivot_floor`` times the RMS of its probe column is moved out to
            that size (bounding the correction; there the wall row keeps a damped dependence on
            the interior). ``0`` is the exact elimination everywhere; the output is exact either
            way.

    A model already wrapped by ``constrain`` is unwrapped: ``constrain(constrain(m, a), b)``
    is ``constrain(m, a, b)``, its constraints first, so the order check and the composition
    above see them all. The inner wrapper's ``kernel`` and ``pivot_floor`` hold where this call
    leaves them at their defaults; set differently in both calls, they raise
    :class:`ConstraintError`. A per-call ``constraints=`` lists them all, the inner wrapper's
    first: ``wrapped(x, constraints=[a2, b2])``.

    Without gradients each layer's probes are kept between forwards while its weights stay the
    same; ``wrapped.forget()`` drops them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model)}")
    if not constraints:
        raise ConstraintError("constrain needs at least one constraint")
    for constraint in constraints:
        if not isinstance(constraint, Constraint):
            raise TypeError(f"constraints must be Constraint objects, got {type(constraint)}")
    if isinstance(pivot_floor, bool) or not isinstance(pivot_floor, (int, float)):
        raise TypeError(f"pivot_floor must be a number >= 0, got {pivot_floor!r}")
    if not (math.isfinite(pivot_floor) and pivot_floor >= 0):
        raise ValueError(f"pivot_floor must be a finite number >= 0, got {pivot_floor!r}")
    return Constrained(model, constraints, kernel, pivot_floor)
