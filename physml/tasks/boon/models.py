"""The networks of the BOON comparison, all through :func:`physml.constrain`.

Methods: ``fno``; ``fno-overwrite`` — the trained FNO's output with its wall nodes replaced to meet
the condition (no retraining; it comes with the ``fno`` run); ``boon`` — ``constrain(fno,
*conditions)``: the kernels of every Fourier layer corrected (the operator seam) and the output
set (the output seam). The ablation ``boon-output`` trains through the output seam alone
(``kernel=False``): it tells what the kernel corrections add to imposing the condition during
training. The peer ``fno-wall-input`` is the plain FNO given the prescribed wall values as two
extra input channels: on the ``varying`` cases it is the fair comparison for a model that is told
the boundary forcing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ... import models as surrogates  # FNO builders: neuralop loads on first use
from ...constraints import BoundaryCondition, constrain
from .data import Budget, CaseData
from .walls import Walls

METHODS = ("fno", "fno-overwrite", "boon")
TRAINED = ("fno", "boon")
ABLATION = "boon-output"  # BOON's output seam alone (kernel=False), trained through it
#: The peer baseline, the plain FNO given the prescribed wall values as input channels.
PEER = "fno-wall-input"


class BoundaryModel(nn.Module):
    """A network called as ``model(x, values)``: the plain FNO (neuralop's ``FNO`` or the
    toolkit's plain one), or the FNO through :func:`physml.constrain` fed each batch's values.

    ``kernel=None``: the plain FNO (``values`` ignored unless ``wall_input``: then they are
    appended to ``x`` as channels, :meth:`~physml.tasks.boon.walls.Walls.channels`). ``True``:
    ``constrain(fno, *conditions)`` with the kernel corrections (BOON); ``False``: the output seam
    alone. The batch's conditions (:meth:`~physml.tasks.boon.walls.Walls.conditions`) replace the
    wrapped ones for each call (``constraints=``), so per-sample values follow the batch;
    ``default`` are the values the wrapper is built with (any batch's: only the kinds, axes and
    grids matter).
    """

    def __init__(
        self,
        fno: nn.Module,
        walls: Walls,
        kernel: bool | None,
        default: torch.Tensor | None,
        wall_input: bool = False,
        pivot_floor: float = 0.1,
    ) -> None:
        super().__init__()
        self.fno, self.walls, self.wall_input = fno, walls, wall_input
        self.constrained = None
        if kernel is not None:
            conditions = walls.conditions(default)
            self.constrained = constrain(fno, *conditions, kernel=kernel, pivot_floor=pivot_floor)

    def forward(self, x: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        if self.constrained is None:
            if self.wall_input:
                x = torch.cat([x, self.walls.channels(values, x)], dim=1)
            return self.fno(x)
        return self.constrained(x, constraints=self.walls.conditions(values))


def _default(data: CaseData) -> torch.Tensor | None:
    return None if data.train_values is None else data.train_values[:1]


def build_model(method: str, data: CaseData, plan: Budget, seed: int) -> BoundaryModel:
    """The network of ``method`` (``fno``, ``boon``, the ablation ``boon-output`` or the peer
    ``fno-wall-input``); all start from the same FNO weights for the same seed (the peer's lifting
    layer has two more input channels)."""
    if method not in (*TRAINED, ABLATION, PEER):
        raise ValueError(
            f"method must be one of {(*TRAINED, ABLATION, PEER)} (fno-overwrite comes with "
            f"fno), got {method!r}"
        )
    wall_input = method == PEER
    if wall_input and data.train_values is None:
        raise ValueError(f"method {PEER!r} needs prescribed wall values; this case has none")
    torch.manual_seed(seed)
    fno = {"neuralop": surrogates.fast_fno, "plain": surrogates.plain_fno}[plan.fno](
        n_modes=plan.modes,
        in_channels=data.train_x.shape[1] + (2 if wall_input else 0),
        out_channels=data.train_y.shape[1],
        hidden_channels=plan.hidden,
        n_layers=plan.layers,
    )
    kernel = {"fno": None, "boon": True, ABLATION: False, PEER: None}[method]
    return BoundaryModel(fno, data.walls, kernel, _default(data), wall_input, plan.pivot_floor)


def overwriting(model: BoundaryModel, data: CaseData) -> BoundaryModel:
    """``fno-overwrite`` as a network: ``model``'s trained plain FNO wrapped with the output seam
    alone (``kernel=False``; the FNO is shared, not copied)."""
    if model.constrained is not None or model.wall_input:
        raise ValueError("fno-overwrite wraps the trained plain FNO (method 'fno')")
    return BoundaryModel(model.fno, data.walls, False, _default(data))


def with_walls(u: torch.Tensor, conditions: Sequence[BoundaryCondition]) -> torch.Tensor:
    """Predictions already made, ``u``, with their walls replaced to meet ``conditions``, in
    ``u``'s dtype: the output seam alone, through an identity model."""
    return constrain(nn.Identity(), *conditions, kernel=False)(u)
