"""GPME functions drawn from their closed forms (:mod:`pdes.gpme`): the ProbConserv training data.

- :class:`GPMESampler`: batches of functions — a parameter drawn per function, random context
  and target points of its ``(t, x)`` grid — from a ``torch.Generator``;
- :class:`GPMEFunctions`: a fixed, lazily drawn map-style dataset of such functions (one per
  item, each from its own seed), which is what :class:`physml.training.Trainer` trains on;
- :func:`gpme_recipe`, :func:`coordinate_axis`: the checks they share with the GPME residual.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from pdes import gpme
from pdes.checks import finite, positive_int
from pdes.errors import SettingError
from pdes.problems import Problem, active_seed_scheme, generator, seed_scheme

from .datasets import item_index
from .generate import named_scheme, sample_seed
from .points import check_point_counts, draw_point_indices, grid_points

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(context_x (B, Nc, 2), context_y (B, Nc), target_x (B, Nt, 2), target_y (B, Nt),
params (B,))``."""


def gpme_recipe(case: str) -> Problem:
    """The :mod:`pdes.gpme` recipe of ``case`` ('diffusion' | 'pme' | 'stefan')."""
    recipes = {problem.name: problem for problem in gpme.PROBLEMS}
    if not isinstance(case, str) or case not in recipes:
        raise ValueError(f"case must be one of {sorted(recipes)}, got {case!r}")
    return recipes[case]


def coordinate_axis(name: str, value: object) -> torch.Tensor:
    """``value`` as a strictly increasing, finite float64 CPU axis of >= 2 points."""
    try:
        axis = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-D array of coordinates, got {value!r}") from None
    if axis.ndim != 1 or axis.numel() < 2:
        raise ValueError(
            f"{name} must be a 1-D array of >= 2 points, got shape {tuple(axis.shape)}"
        )
    finite(name, axis)
    if (axis.diff() <= 0).any():
        raise ValueError(f"{name} must be strictly increasing")
    return axis.cpu()


class GPMESampler:
    """Batches of GPME functions from their closed forms (``case`` 'diffusion' | 'pme' | 'stefan').

    Each function draws its parameter uniformly from ``param_range`` and its context points as
    ``context_times`` distinct random grid times × ``n_context / context_times`` distinct random
    grid x (the ProbConserv protocol: 10 × 10); targets are ``n_target`` distinct random grid
    points, or the whole grid in t-major order when ``None``.

    Calling it with a generator returns float32 ``(context_x (B, Nc, 2), context_y (B, Nc),
    target_x (B, Nt, 2), target_y (B, Nt), params (B,))``; points are ``(t, x)``.

    Args:
        case: the :mod:`pdes.gpme` recipe: ``'diffusion'`` (``u = e^(-kt) sin x``, periodic on
            ``[0, 2π)``), ``'pme'`` or ``'stefan'`` (both on ``[0, 1]``).
        batch: functions per call, ``B``.
        n_context: context points per function, ``Nc``, a multiple of ``context_times``.
        n_target: target points per function, ``Nt``; ``None``: the whole grid, ``Nt = T·X``.
        t_grid: the times ``(T,)`` the points are drawn from: increasing, ``>= 0`` and, for
            ``'pme'`` and ``'stefan'``, ending before the front leaves the domain (where the
            closed form breaks); default the recipe's 201 times on ``[0, t_end]`` (``t_end``
            1, 1 and 0.1).
        x_grid: the positions ``(X,)``, increasing; default the recipe's 201 grid nodes.
        param_range: ``(low, high)`` of the parameter (``k``, ``m`` or ``u*``); default the
            recipe's: ``k`` in ``[1, 5]``, ``m`` in ``[1, 6]``, ``u*`` in ``[0.55, 0.7]``.
        context_times: how many grid times the context is drawn at.
    """

    def __init__(
        self,
        case: str,
        batch: int,
        n_context: int = 100,
        n_target: int | None = None,
        t_grid: Sequence[float] | torch.Tensor | None = None,
        x_grid: Sequence[float] | torch.Tensor | None = None,
        param_range: tuple[float, float] | None = None,
        context_times: int = 10,
    ) -> None:
        self.recipe = gpme_recipe(case)
        self.case = case
        self.batch = positive_int("batch", batch)
        defaults = self.recipe.settings()
        self.t = coordinate_axis(
            "t_grid", self.recipe.times(defaults) if t_grid is None else t_grid
        )
        self.x = coordinate_axis(
            "x_grid", self.recipe.grid(defaults).coordinates() if x_grid is None else x_grid
        )
        if (self.t < 0).any():
            raise ValueError(f"t_grid must be >= 0, got minimum {self.t.min().item()}")
        self.context_points = check_point_counts(
            self.t.numel(), self.x.numel(), n_context, context_times, n_target
        )
        self.n_context, self.context_times, self.n_target = n_context, context_times, n_target
        low_name, high_name = self.recipe.bounds
        if param_range is None:
            param_range = (defaults[low_name], defaults[high_name])
        if not isinstance(param_range, (tuple, list)) or len(param_range) != 2:
            raise TypeError(f"param_range must be a pair (low, high), got {param_range!r}")
        low, high = param_range
        settings = {low_name: low, high_name: high}
        if self.t[-1] > 0:  # the closed forms hold until a front leaves: judged at t_grid's end
            settings["t_end"] = float(self.t[-1])
        try:
            self.recipe.checked(settings)
        except SettingError as error:
            if error.setting == "t_end":  # the recipe's name for this sampler's t_grid[-1]
                raise ValueError(f"t_grid ends at {settings['t_end']:g}: {error}") from None
            raise
        self.param_range = (float(low), float(high))
        self.points = grid_points(self.t, self.x)

    @property
    def input_range(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((t_min, t_max), (x_min, x_max))`` of the grid, for the model's ``input_range``."""
        return (
            (self.t[0].item(), self.t[-1].item()),
            (self.x[0].item(), self.x[-1].item()),
        )

    @property
    def settings(self) -> dict:
        """What determines the functions drawn from a generator (JSON-able)."""
        return {
            "case": self.case,
            "t": [self.t[0].item(), self.t[-1].item(), self.t.numel()],
            "x": [self.x[0].item(), self.x[-1].item(), self.x.numel()],
            "param_range": list(self.param_range),
            "n_context": self.n_context,
            "context_times": self.context_times,
            "n_target": self.n_target,
        }

    def exact(self, params: torch.Tensor) -> torch.Tensor:
        """The functions on the full grid, float64 ``(B, T, X)``."""
        return self.recipe.exact(self.x, self.t, params.to(torch.float64))

    def draw(self, generator: torch.Generator, count: int) -> Batch:
        """``count`` functions (a :data:`Batch`) from ``generator``."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        n_t, n_x = self.t.numel(), self.x.numel()
        low, high = self.param_range
        params = low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)
        u = self.exact(params).reshape(count, n_t * n_x)
        context, target = draw_point_indices(
            generator, count, n_t, n_x, self.context_times, self.context_points, self.n_target
        )
        return (
            self.points[context].float(),
            u.gather(1, context).float(),
            self.points[target].float(),
            u.gather(1, target).float(),
            params.float(),
        )

    def __call__(self, generator: torch.Generator) -> Batch:
        """``batch`` functions (a :data:`Batch`) from ``generator``: :meth:`draw`."""
        return self.draw(generator, self.batch)


gpme_sampler = GPMESampler
"""The name the tasks and notebooks use for :class:`GPMESampler`."""


class GPMEFunctions(Dataset):
    """``size`` functions of ``sampler``, item ``i`` drawn from its own generator seeded by
    ``(seed, i)`` (:func:`pdes.problems.generator`, under the seed scheme active when the
    dataset is made): ``(context_x (Nc, 2), context_y (Nc,), target_x (Nt, 2), target_y (Nt,),
    param (), seed ())``.

    ``seed`` (int64) keys the item's own random draws in training (the ANP's latent sample), so
    a run does not depend on how items are batched or split among processes. Items are drawn
    when asked for (nothing is stored), so a dataset as long as a whole run costs nothing.
    """

    items_follow_attributes = True
    """Its items are drawn from its attributes, so a checkpoint's fingerprint hashes a few of
    them, not the whole run's (:data:`physml.training.fingerprint.FOLLOW_ATTRIBUTES`)."""

    def __init__(self, sampler: GPMESampler, size: int, seed: int = 0) -> None:
        if not isinstance(sampler, GPMESampler):
            raise TypeError(f"sampler must be a GPMESampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.size = positive_int("size", size)
        self.seed = positive_int("seed", seed, 0)
        self.seed_scheme = active_seed_scheme()  # fixed here: items drawn in worker processes too

    @property
    def attributes(self) -> dict:
        """The sampler's settings, the seed and the seed scheme (part of a checkpoint's data
        fingerprint; the old scheme unnamed, as datasets drawn in it were described)."""
        return {**self.sampler.settings, "seed": self.seed, **named_scheme(self.seed_scheme)}

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        i = item_index(i, self.size, "functions")
        item_seed = sample_seed(self.seed, i)
        with seed_scheme(self.seed_scheme):
            batch = self.sampler.draw(generator(item_seed), 1)
        noise_seed = torch.tensor(sample_seed(item_seed, 1), dtype=torch.int64)
        return (*(part[0] for part in batch), noise_seed)
