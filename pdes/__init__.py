"""pdes: batched numerical solvers that generate physml's training data.

Every solver works on a batch of samples in float64 on any torch device and returns
``(sample, time, *space)``. This package depends on numpy, scipy and torch only.
"""

from .boundary import Dirichlet, Neumann, Periodic
from .errors import SettingError, SolverError
from .grid import Grid1D, Grid2D

__all__ = ["Dirichlet", "Grid1D", "Grid2D", "Neumann", "Periodic", "SettingError", "SolverError"]
