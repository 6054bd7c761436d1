"""The toolkit's own exceptions (the solvers' :class:`pdes.SolverError` lives in ``pdes``)."""


class ConstraintError(ValueError):
    """A constraint that cannot be applied: infeasible, rank-deficient, or the wrong output kind."""
