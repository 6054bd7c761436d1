"""The constraint layer: value objects that enforce physics on any model's output.

Each constraint knows how to apply itself to a tensor, a :class:`~physml.outputs.Gaussian` or an
:class:`~physml.outputs.Ensemble`; :func:`constrain` wraps a model so its outputs pass through them.
"""

from .base import Constraint
from .boundary import BoundaryCondition
from .conservation import cumulative_inflow, mass_conservation
from .layer import Constrained, constrain
from .linear import LinearConstraint
from .nonnegative import NonNegative

__all__ = [
    "BoundaryCondition",
    "Constrained",
    "Constraint",
    "LinearConstraint",
    "NonNegative",
    "constrain",
    "cumulative_inflow",
    "mass_conservation",
]
