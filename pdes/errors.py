"""Exceptions raised by the solvers and by the recipes' checks of their settings."""


class SolverError(RuntimeError):
    """A solver cannot proceed: an unstable time step, a blow-up, an impossible configuration."""


class SettingError(ValueError):
    """A recipe setting out of its range, naming the ``setting`` that failed, so a caller that
    took the value under another name (a sampler's ``t_grid`` for ``t_end``) can say so without
    parsing the message."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting
