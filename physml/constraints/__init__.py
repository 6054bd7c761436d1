"""The constraint layer: ``nn.Module`` constraints that meet any model through
:func:`~physml.constraints.layer.constrain`.

Three seams: the operator seam (BOON's kernel correction, for a neuralop FNO or an
:class:`OperatorModel`), the sampler seam (a mean shift at every reverse step of a
:class:`Sampler`) and the output seam (a tensor, :class:`~physml.outputs.Gaussian` or
:class:`~physml.outputs.Ensemble` after every forward).
"""

from .base import SEAMS, Constraint
from .boundary import BoundaryCondition
from .conservation import cumulative_inflow, mass_conservation
from .knowledge import KnowledgeControl
from .layer import Constrained, ReverseStep, Sampler, constrain
from .linear import LinearConstraint
from .nonnegative import NonNegative
from .operator import KernelLayer, OperatorModel

__all__ = [
    "SEAMS",
    "BoundaryCondition",
    "Constrained",
    "Constraint",
    "KernelLayer",
    "KnowledgeControl",
    "LinearConstraint",
    "NonNegative",
    "OperatorModel",
    "ReverseStep",
    "Sampler",
    "constrain",
    "cumulative_inflow",
    "mass_conservation",
]
