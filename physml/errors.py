"""The toolkit's own exceptions (the solvers' :class:`pdes.SolverError` lives in ``pdes``), and
the stack level that makes its warnings name the user's line."""

from __future__ import annotations

import os
import sys


class ConstraintError(ValueError):
    """A constraint that cannot be applied: infeasible, rank-deficient, or the wrong output kind."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here: another format, other data, another model."""


class PythonObjectsError(CheckpointError):
    """A ``torch.save`` file holding Python objects besides tensors, which are not loaded
    (unpickling them could run any code)."""


class ZeroNormError(ValueError):
    """A relative error asked of a target of zero norm, where it is undefined (a ``ValueError``,
    typed so that a caller can offer another error)."""


def user_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the caller that names the first frame outside
    physml and torch (Python 3.10 has no ``skip_file_prefixes``); the ``__init__`` a dataclass
    of physml is given (its ``__post_init__`` warning) counts as inside."""
    import torch

    inside = tuple(
        os.path.dirname(path) + os.sep for path in (__file__, torch.__file__) if path is not None
    )
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_code.co_filename.startswith(inside) or _dataclass_init(frame)
    ):
        frame, level = frame.f_back, level + 1
    return level


def _dataclass_init(frame) -> bool:
    """Whether ``frame`` runs the ``__init__`` :mod:`dataclasses` wrote for a physml class."""
    code = frame.f_code
    if code.co_name != "__init__" or code.co_filename != "<string>":
        return False
    return type(frame.f_locals.get("self")).__module__.startswith("physml.")
