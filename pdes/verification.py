"""Solver verification against exact solutions, the cases that tests and the demo share.

Each solver module lists ``EXACT_CASES``; a case runs the solver at a given resolution beside the
exact solution. :func:`convergence` refines the resolution and measures the order of accuracy.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .problems import RECIPE_MODULES


@dataclass
class Comparison:
    """A numerical solution beside the exact one, both ``(sample, time, x)``.

    ``spacing`` is the quantity refined in a convergence study (``dx``, or ``dt`` for a time-order
    study); ``x`` and ``t`` are the coordinates, for plots.
    """

    numerical: torch.Tensor
    exact: torch.Tensor
    x: torch.Tensor
    t: torch.Tensor
    spacing: float

    def error(self, norm: str = "max") -> float:
        diff = (self.numerical - self.exact).abs()
        if norm == "max":
            return diff.max().item()
        if norm == "l1":
            return diff.mean().item()
        if norm == "l2":
            return diff.pow(2).mean().sqrt().item()
        raise ValueError(f"norm must be 'max', 'l1' or 'l2', got {norm!r}")


@dataclass(frozen=True)
class ExactCase:
    """A solver run with a closed-form answer.

    Attributes:
        name: e.g. ``"heat-dirichlet"``.
        run: resolution (grid points, or time steps) -> :class:`Comparison`.
        resolutions: a cheap refinement sequence for tests and the demo (seconds in all).
        order: the order of accuracy that theory predicts for this discretisation.
        norm: the error norm in which that order holds (``max``, ``l1`` or ``l2``).
        refines: ``"space"`` or ``"time"``: what the resolution refines.
    """

    name: str
    run: Callable[[int], Comparison]
    resolutions: tuple[int, ...]
    order: float
    norm: str = "max"
    refines: str = "space"


@dataclass
class ConvergenceStudy:
    case: ExactCase
    spacings: list[float]
    errors: list[float]
    finest: Comparison

    @property
    def orders(self) -> list[float]:
        """Observed orders between successive resolutions."""
        return [
            math.log(e0 / e1) / math.log(h0 / h1)
            for h0, e0, h1, e1 in zip(
                self.spacings, self.errors, self.spacings[1:], self.errors[1:], strict=False
            )
        ]

    @property
    def order(self) -> float:
        """Least-squares slope of log(error) against log(spacing)."""
        logs_h = torch.log(torch.tensor(self.spacings, dtype=torch.float64))
        logs_e = torch.log(torch.tensor(self.errors, dtype=torch.float64))
        h_c = logs_h - logs_h.mean()
        return float((h_c * (logs_e - logs_e.mean())).sum() / (h_c**2).sum())


def convergence(case: ExactCase, resolutions: Sequence[int] | None = None) -> ConvergenceStudy:
    """Run ``case`` at each resolution (its own when ``resolutions`` is None) and collect spacing
    and error; an order needs at least two resolutions, all different."""
    name = "resolutions"
    if resolutions is None:
        name, resolutions = "case.resolutions", case.resolutions
    if len(resolutions) < 2 or len(set(resolutions)) != len(resolutions):
        raise ValueError(
            f"{name} must hold at least two different resolutions to measure an order, got "
            f"{resolutions!r}"
        )
    spacings, errors = [], []
    comparison = None
    for resolution in resolutions:
        comparison = case.run(resolution)
        spacings.append(comparison.spacing)
        errors.append(comparison.error(case.norm))
    assert comparison is not None
    return ConvergenceStudy(case, spacings, errors, comparison)


def exact_cases() -> list[ExactCase]:
    """Every solver module's exact cases."""
    cases: list[ExactCase] = []
    for module_name in RECIPE_MODULES:
        module = importlib.import_module(f"pdes.{module_name}")
        cases.extend(getattr(module, "EXACT_CASES", []))
    return cases
