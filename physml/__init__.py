"""physml: physics-constrained scientific machine learning.

Surrogates, a constraint layer that wraps any model, and the tasks and command line that tie them
to the data made by the ``pdes`` solvers.
"""

# Helpers under private names: a public one would read as part of physml's API.
import functools as _functools
import importlib as _importlib
import importlib.metadata as _metadata
import pkgutil as _pkgutil
import typing as _typing

try:
    __version__ = _metadata.version("physml")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

if _typing.TYPE_CHECKING:
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


@_functools.cache
def _submodules() -> frozenset[str]:
    """The names of physml's public submodules and subpackages (``metrics``, ``models``, ...):
    those in its folder whose name has no leading underscore; the folder is listed once, not on
    every missing attribute (``hasattr`` asks this)."""
    names = (module.name for module in _pkgutil.iter_modules(__path__))
    return frozenset(name for name in names if name.isidentifier() and not name.startswith("_"))


def __getattr__(name: str):
    """The exports and the public submodules load on first use, torch with them, so
    ``import physml`` is quick and the command line takes a Ctrl-C before torch has loaded."""
    if name in _EXPORTS:
        return getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _submodules():  # physml.metrics etc., as a plain import did
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's own dunder names, the exports, ``__version__`` and every public submodule
    (each loads on first use)."""
    dunders = {name for name in globals() if name.startswith("__") and name.endswith("__")}
    return sorted({*dunders, *_EXPORTS, *_submodules()})


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
