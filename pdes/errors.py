"""Exceptions raised by the solvers."""


class SolverError(RuntimeError):
    """A solver cannot proceed: an unstable time step, a blow-up, an impossible configuration."""
