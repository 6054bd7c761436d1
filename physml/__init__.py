"""physml: physics-constrained scientific machine learning.

Surrogates, a constraint layer that wraps any model, and the tasks and command line that tie them
to the data made by the ``pdes`` solvers.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from typing import TYPE_CHECKING

try:
    __version__ = version("physml")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

if TYPE_CHECKING:
    from .constraints import LinearConstraint, constrain, mass_conservation
    from .errors import ConstraintError
    from .outputs import Ensemble, Gaussian, LowRankCovariance

_EXPORTS = {
    "ConstraintError": "errors",
    "Ensemble": "outputs",
    "Gaussian": "outputs",
    "LinearConstraint": "constraints",
    "LowRankCovariance": "outputs",
    "constrain": "constraints",
    "mass_conservation": "constraints",
}
_SUBMODULES = ("constraints", "errors", "outputs")


def __getattr__(name: str):
    """The exports and the public submodules load on first use, torch with them, so
    ``import physml`` is quick and the command line takes a Ctrl-C before torch has loaded."""
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    if not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
        return import_module(f".{name}", __name__)  # physml.metrics etc., as a plain import did
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


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
