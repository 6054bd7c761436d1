"""The registry of dataset recipes that ``physml generate PDE`` can run.

A :class:`Problem` turns settings (PDE parameters, grid size, output times) and one integer seed per
sample into a batch of solutions. Each sample's randomness comes only from its own seed, so a
dataset holds the same samples whatever the batch size, the sharding or the number of resumes
that made it: bitwise for one chunk size (a resumed run equals an uninterrupted one), to round-off
across chunk sizes and shardings (batched linear algebra may round the last bits of a sample
differently in another batch).
Solver modules define their recipes in a module-level list ``PROBLEMS``; this module collects them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch

RECIPE_MODULES = ("gpme", "heat", "burgers", "wave", "stokes", "cavity", "navier_stokes", "tracer")


@dataclass(frozen=True)
class Option:
    """One setting of a recipe: its default, its type and a line of help (a CLI flag ``--name``)."""

    default: float | int | str
    help: str

    @property
    def type(self) -> type:
        return type(self.default)


@dataclass
class Batch:
    """Solutions ``u`` ``(sample, time, *space)`` and parameters ``params[name]`` ``(sample,)``.

    ``fields`` holds further arrays of the same leading shape that a problem outputs beside ``u``
    (e.g. velocity components beside the vorticity); they are written under ``fields/<name>``.
    """

    u: torch.Tensor
    params: dict[str, torch.Tensor]
    fields: dict[str, torch.Tensor] = dataclass_field(default_factory=dict)


class Problem:
    """A dataset recipe: subclasses set name, description and options, and implement the rest."""

    name: str = ""
    description: str = ""
    options: dict[str, Option] = {}

    def settings(self, **overrides: object) -> dict[str, object]:
        """Defaults updated by ``overrides``; unknown names and wrong types raise ``ValueError``."""
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown option(s) {unknown}; known options: {sorted(self.options)}"
            )
        result: dict[str, object] = {}
        for key, option in self.options.items():
            value = overrides.get(key, option.default)
            if option.type in (int, float) and isinstance(value, (bool, np.bool_)):
                raise ValueError(
                    f"{self.name}: option {key} must be a {option.type.__name__}, got {value!r}"
                )
            if option.type is int and isinstance(value, (float, np.floating)):
                if not float(value).is_integer():  # int() would cut 17.9 to 17 in silence
                    raise ValueError(f"{self.name}: option {key} must be an int, got {value!r}")
            try:
                result[key] = option.type(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.name}: option {key} must be a {option.type.__name__}, got {value!r}"
                ) from None
            if isinstance(result[key], float) and not math.isfinite(result[key]):
                raise ValueError(f"{self.name}: option {key} must be finite, got {value!r}")
        return result

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        """Coordinate arrays of the output, e.g. ``{"t": (T,), "x": (X,)}``."""
        raise NotImplementedError

    def attributes(self, settings: dict) -> dict[str, object]:
        """What the file should say about the data: ``pde``, ``boundary``, ``solver``, settings."""
        raise NotImplementedError

    def sample_shape(self, settings: dict) -> tuple[int, ...]:
        """The shape of one sample of ``u``, ``(time, *space)``: the coordinates' lengths."""
        return tuple(len(axis) for axis in self.coordinates(settings).values())

    def field_shapes(self, settings: dict) -> dict[str, tuple[int, ...]]:
        """The shape of one sample of each array ``generate`` puts in ``Batch.fields``, e.g.
        ``{"vx": (T, X, Y)}``: what a dataset stores beside ``u`` (the command line counts it
        before generating). None unless a recipe says so."""
        return {}

    def generate(
        self, seeds: Sequence[int], settings: dict, device: torch.device | str = "cpu"
    ) -> Batch:
        """Solve one sample per seed; sample ``i`` depends on ``seeds[i]`` and ``settings`` only."""
        raise NotImplementedError


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for one sample's draws (on the CPU, so results match on every device).

    torch's CPU generator keeps only the seed's low 32 bits: seeds that agree there draw alike.
    """
    del device
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be a non-negative integer below 2**64, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


_REGISTERED: dict[str, Problem] = {}


def register(problem: Problem) -> Problem:
    """Make a user-defined recipe available to ``generate_dataset`` under ``problem.name``."""
    if not isinstance(problem, Problem) or not problem.name:
        raise TypeError(f"problem must be a Problem instance with a name, got {problem!r}")
    _REGISTERED[problem.name] = problem
    return problem


def registry() -> dict[str, Problem]:
    """All recipes by name: the built-in ones, then those added with :func:`register`."""
    problems: dict[str, Problem] = {}
    for module_name in RECIPE_MODULES:
        module = importlib.import_module(f"pdes.{module_name}")
        for problem in getattr(module, "PROBLEMS", []):
            problems[problem.name] = problem
    problems.update(_REGISTERED)
    return problems


def get(name: str) -> Problem:
    """The recipe called ``name``, or a ``ValueError`` listing the known ones."""
    problems = registry()
    if name not in problems:
        raise ValueError(f"unknown PDE {name!r}; choose one of {sorted(problems)}")
    return problems[name]
