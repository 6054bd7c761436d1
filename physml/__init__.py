"""physml: physics-constrained scientific machine learning.

Surrogates, a constraint layer that wraps any model, and the tasks and command line that tie them
to the data made by the ``pdes`` solvers.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("physml")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

from .constraints import LinearConstraint, constrain, mass_conservation  # noqa: E402
from .errors import ConstraintError  # noqa: E402
from .outputs import Ensemble, Gaussian, LowRankCovariance  # noqa: E402

__all__ = [
    "ConstraintError",
    "Ensemble",
    "Gaussian",
    "LinearConstraint",
    "LowRankCovariance",
    "__version__",
    "constrain",
    "mass_conservation",
]
