"""The constraint protocol: one value object, applied to whatever kind of output a model gives."""

from __future__ import annotations

import torch

from ..errors import ConstraintError
from ..outputs import Ensemble, Gaussian


class Constraint:
    """Base class. Subclasses implement the ``apply_*`` methods for the output kinds they support.

    ``bind(*inputs)`` returns the constraint for one call of the model (a constraint whose target
    depends on the model's inputs resolves it there); by default it is the constraint itself.
    """

    def bind(self, *args: object, **kwargs: object) -> Constraint:
        return self

    def apply(self, output: torch.Tensor | Gaussian | Ensemble):
        """The constrained version of ``output``, of the same kind."""
        if isinstance(output, Gaussian):
            return self.apply_gaussian(output)
        if isinstance(output, Ensemble):
            return self.apply_ensemble(output)
        if isinstance(output, torch.Tensor):
            return self.apply_tensor(output)
        raise ConstraintError(
            f"{type(self).__name__} applies to a tensor, Gaussian or Ensemble, got {type(output)}"
        )

    def _unsupported(self, kind: str):
        raise ConstraintError(f"{type(self).__name__} cannot be applied to a {kind} output")

    def apply_tensor(self, output: torch.Tensor) -> torch.Tensor:
        return self._unsupported("tensor")

    def apply_gaussian(self, output: Gaussian) -> Gaussian:
        return self._unsupported("Gaussian")

    def apply_ensemble(self, output: Ensemble) -> Ensemble:
        return self._unsupported("Ensemble")
