"""physml: physics-constrained scientific machine learning.

Surrogates, a constraint layer that wraps any model, and the tasks and command line that tie them
to the data made by the ``pdes`` solvers.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("physml")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
