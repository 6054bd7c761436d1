"""Solutions ``u(t, x)`` served as points, for the point-based surrogates (ANP, deep ensembles).

A full grid of ``T × X`` points is flattened in t-major order (row ``i·X + j`` is ``(t[i],
x[j])``), so values ``(B, T·X)`` reshape to ``(B, T, X)``: one time slice per row.

- :func:`grid_points`: the ``(t, x)`` pairs of a grid;
- :func:`draw_point_indices`: random context points (``times × places`` of the grid, the
  ProbConserv protocol) and target points;
- :class:`PointSets`: one item = context and target points of one solution of a 1-D dataset
  (the ANP's input);
- :class:`PointRows`: one item = one grid point of one solution as a row ``(params..., t, x) → u``
  (the deep ensemble's input).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from pdes.checks import positive_int
from pdes.problems import active_seed_scheme, generator, seed_scheme

from .._checks import as_tensor
from .datasets import PDEData, item_index, load
from .generate import named_scheme, sample_seed


def grid_points(t: object, x: object) -> torch.Tensor:
    """All ``(t, x)`` pairs of a grid, t-major: ``t (T,)``, ``x (X,)`` → ``(T·X, 2)``.

    Row ``i·X + j`` is ``(t[i], x[j])``. Keeps ``t``'s dtype when it is a floating tensor, else
    float64; the device follows ``t``.
    """
    dtype = t.dtype if isinstance(t, torch.Tensor) and t.is_floating_point() else torch.float64
    t = as_tensor("t", t, "(T,)", 1, dtype=dtype)
    x = as_tensor("x", x, "(X,)", 1, dtype=t.dtype, device=t.device)
    if t.numel() == 0 or x.numel() == 0:
        raise ValueError(f"t and x must be non-empty, got {t.numel()} times and {x.numel()} x")
    tt, xx = torch.meshgrid(t, x, indexing="ij")
    return torch.stack([tt.reshape(-1), xx.reshape(-1)], dim=-1)


def check_point_counts(
    n_times: int, n_places: int, n_context: int, context_times: int, n_target: int | None
) -> int:
    """Validate a context of ``context_times`` times × ``n_context / context_times`` places and
    ``n_target`` targets (``None``: the whole grid) on a ``n_times × n_places`` grid; returns
    the number of places per context time."""
    positive_int("n_context", n_context)
    positive_int("context_times", context_times)
    if n_context % context_times:
        raise ValueError(
            f"n_context must be a multiple of context_times={context_times} (times × x), "
            f"got {n_context}"
        )
    places = n_context // context_times
    if context_times > n_times or places > n_places:
        raise ValueError(
            f"n_context={n_context} as {context_times} times × {places} x needs a grid of at "
            f"least that size, got {n_times} times × {n_places} x"
        )
    if n_target is not None:
        positive_int("n_target", n_target)
        if n_target > n_times * n_places:
            raise ValueError(
                f"n_target must be <= {n_times * n_places} grid points, got {n_target}"
            )
    return places


def draw_point_indices(
    generator: torch.Generator,
    batch: int,
    n_times: int,
    n_places: int,
    context_times: int,
    context_places: int,
    n_target: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat grid indices ``(batch, context_times·context_places)`` of the context — distinct random
    times × distinct random places — and ``(batch, n_target)`` of the targets (distinct random
    points, or every point in order when ``n_target`` is ``None``)."""
    times = torch.rand(batch, n_times, generator=generator).argsort(dim=1)[:, :context_times]
    places = torch.rand(batch, n_places, generator=generator).argsort(dim=1)[:, :context_places]
    context = (times[:, :, None] * n_places + places[:, None, :]).reshape(batch, -1)
    if n_target is None:
        return context, torch.arange(n_times * n_places).expand(batch, -1)
    scores = torch.rand(batch, n_times * n_places, generator=generator)
    return context, scores.topk(n_target, dim=1).indices


def _one_dimensional(source: PDEData | str | os.PathLike, who: str) -> PDEData:
    data = source if isinstance(source, PDEData) else load(source)
    if len(data.space_shape) != 1 or "x" not in data.coords:
        raise ValueError(
            f"{who} needs a 1-D dataset u (sample, time, x) with an x coordinate, got u of shape "
            f"{tuple(data.u.shape)}"
        )
    return data


def _parameters(data: PDEData) -> torch.Tensor:
    """The PDE parameters ``(sample, p)`` in the order of their names (``p`` may be 0)."""
    columns = [data.params[name].reshape(len(data), -1) for name in sorted(data.params)]
    if not columns:
        return torch.zeros(len(data), 0, dtype=torch.float64)
    return torch.cat([torch.as_tensor(c, dtype=torch.float64) for c in columns], dim=1)


class PointSets(Dataset):
    """Context and target points of the solutions of a 1-D dataset ``u (sample, time, x)``.

    Item ``i`` is solution ``i mod N`` seen through its own random points (``views`` point sets
    per solution, so a dataset of ``N · views`` items): float32 ``(context_x (Nc, 2), context_y
    (Nc,), target_x (Nt, 2), target_y (Nt,), params (p,), seed ())`` with points ``(t, x)``;
    ``seed`` (int64) keys the item's own random draws in training (the ANP's latent sample), so
    they do not depend on how items are batched or split among processes. The points depend on
    ``seed`` and ``i`` only, drawn by :func:`pdes.problems.generator` under the seed scheme
    active when the dataset is made (kept for its life). ``n_target=None`` targets the whole
    grid in t-major order.
    ``source``: a :class:`~physml.data.PDEData` with an ``x`` coordinate, or a dataset file's
    path.

    The context is a grid of its own: ``context_times`` distinct random times × ``n_context /
    context_times`` distinct random places, so ``n_context`` must be a multiple of
    ``context_times`` and both factors must fit the file's grid; the ``n_target`` targets are
    distinct random points of the whole grid.

    The draws are fixed for the dataset's life: an epoch revisits the same ``N · views`` point
    sets and latent seeds, so a training run sees that many Monte-Carlo draws of its objective
    (more ``views``, more draws), where :func:`~physml.training.train_anp` draws afresh each step.
    """

    def __init__(
        self,
        source: PDEData | str | os.PathLike,
        n_context: int = 100,
        context_times: int = 10,
        n_target: int | None = 256,
        views: int = 1,
        seed: int = 0,
    ) -> None:
        self.data = _one_dimensional(source, "PointSets")
        self.t, self.x = self.data.t, self.data.coords["x"]
        self.places = check_point_counts(
            self.t.numel(), self.x.numel(), n_context, context_times, n_target
        )
        self.n_context, self.context_times, self.n_target = n_context, context_times, n_target
        self.views = positive_int("views", views)
        self.seed = positive_int("seed", seed, 0)
        self.seed_scheme = active_seed_scheme()  # fixed here: items drawn in worker processes too
        self.points = grid_points(self.t, self.x).float()
        self.values = self.data.u.reshape(len(self.data), -1)
        self.params = _parameters(self.data).float()

    @property
    def attributes(self) -> dict:
        """The file's description and the point settings (a checkpoint's data fingerprint)."""
        settings = {
            "n_context": self.n_context,
            "context_times": self.context_times,
            "n_target": self.n_target,
            "views": self.views,
            "seed": self.seed,
            **named_scheme(self.seed_scheme),
        }
        return {**self.data.attrs, "point_sets": settings}

    def __len__(self) -> int:
        return len(self.data) * self.views

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        i = item_index(i, len(self), "point sets")
        item_seed = sample_seed(self.seed, i)
        with seed_scheme(self.seed_scheme):
            drawn = generator(item_seed)
        context, target = draw_point_indices(
            drawn,
            1,
            self.t.numel(),
            self.x.numel(),
            self.context_times,
            self.places,
            self.n_target,
        )
        u = self.values[i % len(self.data)].float()
        context, target = context[0], target[0]
        return (
            self.points[context],
            u[context],
            self.points[target],
            u[target],
            self.params[i % len(self.data)],
            torch.tensor(sample_seed(item_seed, 1), dtype=torch.int64),
        )


class PointRows(Dataset):
    """Every grid point of every solution of a 1-D dataset as a row: float32 ``inputs (p + 2,)``
    = ``(params..., t, x)`` and ``target ()`` = ``u(t, x)``; item ``k`` is point ``k mod T·X``
    (t-major) of solution ``k // T·X``. ``source``: a :class:`~physml.data.PDEData` ``u (sample,
    time, x)`` with an ``x`` coordinate, or a dataset file's path."""

    def __init__(self, source: PDEData | str | os.PathLike) -> None:
        self.data = _one_dimensional(source, "PointRows")
        self.points = grid_points(self.data.t, self.data.coords["x"]).float()
        self.values = self.data.u.reshape(len(self.data), -1).float()
        self.params = _parameters(self.data).float()

    @property
    def attributes(self) -> dict:
        return self.data.attrs

    @property
    def features(self) -> int:
        """How many columns a row has (the PDE parameters, then ``t`` and ``x``)."""
        return self.params.shape[1] + 2

    def __len__(self) -> int:
        return self.values.numel()

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = item_index(k, len(self), "rows")
        sample, point = divmod(k, self.points.shape[0])
        return torch.cat([self.params[sample], self.points[point]]), self.values[sample, point]

    def all_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row at once: ``inputs (N·T·X, p + 2)``, ``targets (N·T·X,)``."""
        n, m = self.values.shape
        inputs = torch.cat(
            [
                self.params[:, None, :].expand(n, m, -1),
                self.points[None].expand(n, m, 2),
            ],
            dim=-1,
        )
        return inputs.reshape(n * m, -1), self.values.reshape(-1)
