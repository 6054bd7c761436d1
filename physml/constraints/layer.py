"""``physml.constrain(model, *constraints)``: run any model, then enforce the constraints."""

from __future__ import annotations

from torch import nn

from ..errors import ConstraintError
from .base import Constraint


class Constrained(nn.Module):
    """A model followed by constraints, applied in order to whatever kind of output it returns.

    A constraint whose target depends on the inputs is bound to each call's inputs first.
    """

    def __init__(self, model: nn.Module, constraints: tuple[Constraint, ...]) -> None:
        super().__init__()
        self.model = model
        self.constraints = constraints

    def forward(self, *args: object, **kwargs: object):
        output = self.model(*args, **kwargs)
        for constraint in self.constraints:
            output = constraint.bind(*args, **kwargs).apply(output)
        return output


def constrain(model: nn.Module, *constraints: Constraint) -> Constrained:
    """Wrap ``model`` (any ``nn.Module`` returning a tensor, Gaussian or Ensemble)."""
    if not callable(model):
        raise TypeError(f"model must be a callable nn.Module, got {type(model)}")
    if not constraints:
        raise ConstraintError("constrain needs at least one constraint")
    for constraint in constraints:
        if not isinstance(constraint, Constraint):
            raise TypeError(f"constraints must be Constraint objects, got {type(constraint)}")
    return Constrained(model, tuple(constraints))
