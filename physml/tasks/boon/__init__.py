"""BOON experiments: FNO, FNO with overwritten walls and BOON on the paper's boundary problems.

One home for the pieces that the ``boon-*`` tasks and ``benchmarks/boon.py`` share, one module
per concern:

- :mod:`.walls`: :class:`Walls` — a case's :class:`~physml.constraints.BoundaryCondition` objects
  filled with each batch's values, the independent float64 violation measure, the interior.
- :mod:`.data`: :data:`~physml.tasks.boon.data.CASES` (dataset builders with the boundary values
  prescribed by each problem) and their :class:`Budget` per size.
- :mod:`.models`: :func:`build_model` — the plain FNO, or ``physml.constrain(fno, *conditions)``
  around an identically initialised FNO (BOON; ``kernel=False`` for the output-only ablation).
- :mod:`.training`: :func:`train` — the same training for every method, by the toolkit's
  :class:`~physml.training.Trainer`.
- :mod:`.evaluation`: :func:`evaluate` and :func:`run_case` — one (case, method, seed)
  experiment → rows for the results table.
- :mod:`.plots`, :mod:`.tasks`: the figures and the registered ``boon-*`` tasks.
"""

from .data import (
    CASES,
    FNO_LAYOUTS,
    MULTI_NT,
    MULTI_T,
    SINGLE_T,
    SIZES,
    TEST_SEED,
    TRAIN_SEED,
    VARYING_FREQUENCY,
    Budget,
    Case,
    CaseData,
    axis_walls,
    budget,
    case_data,
)
from .evaluation import CaseResult, error_over_time, evaluate, run_case
from .models import (
    ABLATION,
    METHODS,
    PEER,
    TRAINED,
    BoundaryModel,
    build_model,
    overwriting,
    with_walls,
)
from .plots import plot_boundary_zoom, plot_error_over_time
from .tasks import TASKS, TOLERANCE, task_runner
from .training import predict, train
from .walls import F64, AxisWalls, CavityWalls, Walls, float32_flux_floor

__all__ = [
    "ABLATION",
    "CASES",
    "F64",
    "FNO_LAYOUTS",
    "METHODS",
    "MULTI_NT",
    "MULTI_T",
    "PEER",
    "SINGLE_T",
    "SIZES",
    "TASKS",
    "TEST_SEED",
    "TOLERANCE",
    "TRAINED",
    "TRAIN_SEED",
    "VARYING_FREQUENCY",
    "AxisWalls",
    "BoundaryModel",
    "Budget",
    "Case",
    "CaseData",
    "CaseResult",
    "CavityWalls",
    "Walls",
    "axis_walls",
    "budget",
    "build_model",
    "case_data",
    "error_over_time",
    "evaluate",
    "float32_flux_floor",
    "overwriting",
    "plot_boundary_zoom",
    "plot_error_over_time",
    "predict",
    "run_case",
    "task_runner",
    "train",
    "with_walls",
]
