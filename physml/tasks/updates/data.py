"""The model-update problems: Burgers and heat pairs ``u(x, 0) → u(x, T)`` scaled to a drawn
RMS amplitude, and the problem's solver as a fallback (one solve per sample)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from pdes import Dirichlet, Grid1D, Neumann
from pdes.burgers import SAFETY, advective_step_limit, solve_burgers
from pdes.heat import random_modes, solve_heat
from pdes.problems import active_seed_scheme, generator
from pdes.random_fields import gaussian_random_field_1d

from ...errors import CheckpointError
from ...io import load_torch_file, save_torch_file

F64 = torch.float64
EQUATIONS = ("burgers", "heat")
TEST_SEED, VALIDATION_SEED = 1_000_000, 2_000_000  # first seeds of the held-out samples
PEAK_OVER_RMS = 4.0  # the largest |u0| over its RMS that the fixed Burgers step allows for


@dataclass(frozen=True)
class Equation:
    """One problem: grid size, final time, coefficient and the amplitude ranges (RMS of ``u0``).

    ``inside`` is the training range of the amplitude; ``outside`` the range of the test inputs
    that lie beyond it.
    """

    name: str
    nx: int
    t_end: float
    coefficient: float  # ν for Burgers, κ for heat
    inside: tuple[float, float]
    outside: tuple[float, float]
    flux: float = 5.0  # heat: U of the right wall's flux U sin(πt)

    def grid(self) -> Grid1D:
        return Grid1D(self.nx, 0.0, 1.0)

    def boundary(self) -> Dirichlet | Neumann:
        """The walls: zero Dirichlet (Burgers), or no flux left and ``U sin(πt)`` right (heat)."""
        if self.name == "burgers":
            return Dirichlet(0.0, 0.0)
        flux = self.flux
        return Neumann(0.0, lambda t: flux * math.sin(math.pi * t))


EQUATION = {
    "burgers": Equation("burgers", 65, 0.5, 0.1, (0.5, 1.0), (1.6, 2.4)),
    "heat": Equation("heat", 65, 0.5, 0.05, (0.5, 1.0), (3.0, 5.0)),
}


def equation(name: str) -> Equation:
    if name not in EQUATION:
        raise ValueError(f"equation must be one of {EQUATIONS}, got {name!r}")
    return EQUATION[name]


def initial_fields(problem: Equation, seeds: list[int], amplitudes: torch.Tensor) -> torch.Tensor:
    """``u0`` ``(sample, nx)`` float64: the recipe's random field of each seed, scaled to RMS
    ``amplitudes[i]`` (Burgers: ``g − g(0)`` of a periodic GRF; heat: cosine modes)."""
    grid, fields = problem.grid(), []
    for seed in seeds:
        if problem.name == "burgers":
            g = gaussian_random_field_1d(problem.nx - 1, generator=generator(seed))[0]
            field = torch.cat([g, g[:1]]) - g[0]
        else:
            field = random_modes(generator(seed), grid.coordinates(), "neumann", 8, 2.0, 1.0)
        fields.append(field.to(F64))
    u0 = torch.stack(fields)
    return u0 / u0.square().mean(-1, keepdim=True).sqrt() * amplitudes.to(F64)[:, None]


class Solver:
    """The problem's solver as a fallback: ``(batch, 1, nx)`` float32 inputs → ``u(x, T)``.

    One solve per sample (a query answered on its own, as a guarded service would) in float64,
    each with the same step (Burgers: half the advective limit at ``PEAK_OVER_RMS`` × the largest
    amplitude of the problem), so a sample's answer does not depend on its batch.
    """

    def __init__(self, problem: Equation) -> None:
        self.problem, self.grid = problem, problem.grid()
        speed = PEAK_OVER_RMS * max(*problem.inside, *problem.outside)
        self.step = SAFETY * advective_step_limit(self.grid, speed, spectral=False)

    def solve(self, u0: torch.Tensor) -> torch.Tensor:
        """``u(x, T)`` ``(sample, nx)`` float64 from ``u0`` ``(sample, nx)`` (one batched solve)."""
        p, times = self.problem, [0.0, self.problem.t_end]
        if p.name == "burgers":
            peak = float(u0.abs().max())
            if peak > PEAK_OVER_RMS * max(*p.inside, *p.outside):
                step = SAFETY * advective_step_limit(self.grid, peak, spectral=False)
            else:
                step = self.step
            return solve_burgers(u0, self.grid, p.coefficient, times, p.boundary(), step)[:, -1]
        return solve_heat(u0, self.grid, p.coefficient, times, p.boundary())[:, -1]

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        u0 = inputs[:, 0].to(F64)
        answers = [self.solve(u0[i : i + 1]) for i in range(u0.shape[0])]
        return torch.cat(answers)[:, None].to(inputs.dtype)


def amplitudes(count: int, span: tuple[float, float], seed: int) -> torch.Tensor:
    """``count`` amplitudes uniform in ``span`` (float64), from ``seed``."""
    draw = torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return span[0] + (span[1] - span[0]) * draw


def pairs(problem: Equation, count: int, first_seed: int, outside: int = 0) -> TensorDataset:
    """``(u0, u(T))`` pairs ``(sample, 1, nx)`` float32: ``count − outside`` amplitudes inside the
    training range, then ``outside`` beyond it; sample ``i`` uses seed ``first_seed + i``."""
    if not 0 <= outside <= count:
        raise ValueError(f"outside must be in [0, count={count}], got {outside}")
    seeds = list(range(first_seed, first_seed + count))
    a = torch.cat(
        [
            amplitudes(count - outside, problem.inside, first_seed),
            amplitudes(outside, problem.outside, first_seed + 1),
        ]
    )
    u0 = initial_fields(problem, seeds, a)
    solver = Solver(problem)
    u_end = torch.cat([solver.solve(u0[i : i + 16]) for i in range(0, count, 16)])
    return TensorDataset(u0[:, None].float(), u_end[:, None].float())


def cached_pairs(path: Path, problem: Equation, count: int, first_seed: int, outside: int = 0):
    """:func:`pairs`, kept in ``path`` (a ``.pt`` file) so a rerun does not solve them again.

    The file records what it holds (the problem's settings, count, first seed, outside count and
    the seed scheme the fields were drawn under, :func:`pdes.problems.active_seed_scheme`): a
    file made for other settings or under another scheme (or one that names none: it cannot say
    which drew it), or damaged, is solved again and replaced.
    """
    key = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(problem).items()},
        "count": count,
        "first_seed": first_seed,
        "outside": outside,
        "seed_scheme": active_seed_scheme(),
    }
    if path.exists():
        with contextlib.suppress(CheckpointError):  # a damaged file is solved again
            kept = load_torch_file(path, "kept pairs", "cache")
            if isinstance(kept, dict) and kept.get("key") == key:
                return TensorDataset(kept["x"], kept["y"])
    data = pairs(problem, count, first_seed, outside)
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y = data.tensors
    save_torch_file(path, {"key": key, "x": x, "y": y})
    return data


def rms(inputs: torch.Tensor) -> torch.Tensor:
    """The amplitude parameter of each input ``(batch, 1, nx)``: its RMS, ``(batch, 1)``."""
    return inputs.to(F64).flatten(1).square().mean(1, keepdim=True).sqrt()
