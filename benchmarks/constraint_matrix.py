"""Every constraint on every model it makes sense for, through ``physml.constrain`` alone.

One row per (model ``case``, constraint ``method``): the violation before and after (relative to
the magnitudes of the terms the constraint compares, so float32 round-off is ~1e-7), whether the
output kept its dtype, the constrained ÷ unconstrained forward time measured in the same run
(``fwd_ratio``) and the extra peak memory of the constrained forward (``peak_mb``). The models are
untrained (the constraint's work does not depend on training) apart from the GP and the deep
ensemble, which are fitted in a few steps on a smooth field. Rows ``case = "ensemble-update"``
time the ensemble update for 16 members × 10 frames at 64² and 128² beside the n × n route.

    python benchmarks/constraint_matrix.py          # full run -> results/constraint_matrix.*
    python benchmarks/constraint_matrix.py --quick  # smoke run
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from neuralop.models import FNO
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    arguments,
    at_least,
    best_time,
    paired_ms,
    run_main,
    steady_allocations,
    unpooled_large_allocations,
    write_results,
)

from pdes import Dirichlet, Grid1D, Grid2D, Neumann, Periodic  # noqa: E402
from physml import Ensemble, Gaussian, constrain, mass_conservation  # noqa: E402
from physml.constraints import BoundaryCondition, NonNegative, cumulative_inflow  # noqa: E402
from physml.models import AttentiveNeuralProcess, DeepEnsemble, Earthformer  # noqa: E402
from physml.models.gp import ExactGPSurrogate  # noqa: E402
from physml.training import fit_ensemble  # noqa: E402

F64 = torch.float64
EXACT_TOLERANCE = 1e-6
COLUMNS = (
    "case",
    "method",
    "output",
    "seam",
    "violation_before",
    "violation_after",
    "dtype_kept",
    "fwd_ms",
    "fwd_ratio",
    "peak_mb",
    "nxn_fwd_ms",
    "nxn_peak_mb",
)


# ----------------------------------------------------------------------------------- memory


def _status(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def peak_mb(function: Callable[[], object]) -> float:
    """Peak resident memory (MiB) of one call above the resident memory before it (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    except OSError:
        return float("nan")
    before = _status("VmRSS")
    result = function()
    peak = _status("VmHWM")
    del result
    return max(peak - before, 0.0)


# ----------------------------------------------------------------------------------- violations


def _fields(output) -> torch.Tensor:
    """What a constraint acts on, in float64: a tensor, a Gaussian's mean, an Ensemble's members."""
    if isinstance(output, Gaussian):
        return output.mean.double()
    if isinstance(output, Ensemble):
        return output.samples.double()
    return output.double()


def _dtype(output) -> torch.dtype:
    if isinstance(output, Gaussian):
        return output.mean.dtype
    if isinstance(output, Ensemble):
        return output.samples.dtype
    return output.dtype


def mass_violation(weights: torch.Tensor, mass: torch.Tensor, axes: int) -> Callable:
    """``|∫u − M| / (∫|u| + |M|)``, largest over slices (``axes`` trailing space axes)."""

    def measure(u: torch.Tensor) -> float:
        dims = tuple(range(-axes, 0))
        integral = (u * weights).sum(dims)
        scale = (u.abs() * weights).sum(dims) + mass.abs()
        return ((integral - mass).abs() / scale.clamp(min=1e-300)).max().item()

    return measure


def wall_violation(kind: str, axis: int, dx: float, left: float, right: float) -> Callable:
    """Dirichlet ``|u − g|``, Neumann the one-sided stencil's residual, periodic ``|u₀ − u_N|``,
    each relative to the magnitudes of the terms it compares."""

    def measure(u: torch.Tensor) -> float:
        u = u.movedim(axis, -1)
        if kind == "dirichlet":
            scale = u.abs().amax() + abs(left) + abs(right)
            error = torch.stack([(u[..., 0] - left).abs(), (u[..., -1] - right).abs()])
        elif kind == "periodic":
            scale = u[..., 0].abs() + u[..., -1].abs()
            error = (u[..., 0] - u[..., -1]).abs() / scale.clamp(min=1e-300)
            return error.max().item()
        else:
            lhs = (-3 * u[..., 0] + 4 * u[..., 1] - u[..., 2], 3 * u[..., -1] - 4 * u[..., -2])
            lhs = (lhs[0], lhs[1] + u[..., -3])
            targets = (2 * dx * left, 2 * dx * right)
            terms = (
                3 * u[..., 0].abs() + 4 * u[..., 1].abs() + u[..., 2].abs() + abs(targets[0]),
                3 * u[..., -1].abs() + 4 * u[..., -2].abs() + u[..., -3].abs() + abs(targets[1]),
            )
            error = torch.stack([(lhs[i] - targets[i]).abs() / terms[i] for i in range(2)])
            return error.max().item()
        return (error / scale).max().item()

    return measure


def negative_violation(u: torch.Tensor) -> float:
    return (torch.clamp(-u.amin(), min=0) / u.abs().amax()).item()


# ----------------------------------------------------------------------------------- models


class MLP(nn.Module):
    """A model the toolkit has never seen: ``(batch, 8)`` → a field ``(batch, 1, n)``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh())
        self.head = nn.Linear(256, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x)).unsqueeze(1)


class GPOnGrid(nn.Module):
    """A fitted exact GP's posterior on a (t, x) grid: Gaussian, full covariance per time slice."""

    def __init__(self, gp: ExactGPSurrogate) -> None:
        super().__init__()
        self.gp = gp

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> Gaussian:
        return self.gp.predict(t, x)


class ANPOnGrid(nn.Module):
    """An ANP's prediction at every (t, x) grid point, reshaped to ``(batch, T, X)``."""

    def __init__(self, anp: AttentiveNeuralProcess, shape: tuple[int, int]) -> None:
        super().__init__()
        self.anp, self.shape = anp, shape

    def forward(self, context_x, context_y, target_x) -> Gaussian:
        out = self.anp(context_x, context_y, target_x)
        shape = (out.mean.shape[0], *self.shape)
        return Gaussian(out.mean.reshape(shape), out.cov.reshape(shape))


class EnsembleOnGrid(nn.Module):
    """A deep ensemble at every (t, x) grid point: the mixture Gaussian or the members.

    The same as ``DeepEnsemble(..., output=kind)`` called on the points shaped ``(T, X, d)``.
    """

    def __init__(self, ensemble: DeepEnsemble, shape: tuple[int, int], kind: str) -> None:
        super().__init__()
        self.ensemble, self.shape, self.kind = ensemble, shape, kind

    def forward(self, points: torch.Tensor):
        if self.kind == "gaussian":
            out = self.ensemble(points)
            return Gaussian(out.mean.reshape(self.shape), out.cov.reshape(self.shape))
        means, _ = self.ensemble.member_outputs(points)
        return Ensemble(means.reshape(-1, *self.shape))


class ForecastEnsemble(nn.Module):
    """Independently initialised Earthformers: an :class:`Ensemble` of ``(batch, T, C, H, W)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> Ensemble:
        return Ensemble(torch.stack([member(x) for member in self.members]))


@dataclass
class Case:
    """A model, its inputs, and the constraints worth putting on it."""

    name: str
    model: nn.Module
    inputs: tuple
    constraints: dict[str, tuple[tuple, list[Callable]]]  # method -> (constraints, measures)


def smooth_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (torch.exp(-t)[:, None] * torch.sin(math.pi * x)[None, :]) + 0.2


def build_cases(quick: bool, seed: int) -> list[Case]:
    torch.manual_seed(seed)
    n1 = 33 if quick else 65
    n2 = 17 if quick else 33
    line = Grid1D(n1, 0.0, 2.0)
    w1 = line.weights()
    cases = []

    # a plain MLP the toolkit has never seen
    batch = 8
    mass = torch.linspace(0.5, 1.5, batch)[:, None]
    inflow = 0.3 + cumulative_inflow(torch.linspace(0, 1, batch), torch.ones(batch))[:, None]
    dirichlet = BoundaryCondition(Dirichlet(0.5, -1.0), line)
    neumann = BoundaryCondition(Neumann(-2.0, 3.0), line)
    periodic = BoundaryCondition(Periodic(), line)
    boundary_rows = {
        "dirichlet": ((dirichlet,), [wall_violation("dirichlet", -1, line.dx, 0.5, -1.0)]),
        "neumann": ((neumann,), [wall_violation("neumann", -1, line.dx, -2.0, 3.0)]),
        "periodic": ((periodic,), [wall_violation("periodic", -1, line.dx, 0, 0)]),
    }
    one_d = {
        "mass-1d": ((mass_conservation(line, mass),), [mass_violation(w1, mass, 1)]),
        "mass-inflow": ((mass_conservation(line, inflow),), [mass_violation(w1, inflow, 1)]),
        **boundary_rows,
    }
    cases.append(Case("mlp", MLP(n1), (torch.randn(batch, 8),), one_d))

    # neuralop FNO 1-D: boundary conditions at the operator seam
    fno1 = FNO(n_modes=(16,), in_channels=1, out_channels=1, hidden_channels=32, n_layers=4)
    cases.append(Case("fno-1d", fno1, (torch.randn(batch, 1, n1),), one_d))

    # neuralop FNO 2-D on (b, c, h, w): per-frame mass, walls, a mixed combination
    square = Grid2D(Grid1D(n2, 0.0, 1.0), Grid1D(n2, 0.0, 2.0))
    w2 = square.weights()
    mass2 = torch.full((batch, 1), 0.7)
    wall_x = BoundaryCondition(Dirichlet(0.0, 1.0), square.x, axis=-2)
    flux_y = BoundaryCondition(Neumann(0.5, -0.5), square.y, axis=-1)
    fno2 = FNO(n_modes=(12, 12), in_channels=1, out_channels=1, hidden_channels=24, n_layers=4)
    cases.append(
        Case(
            "fno-2d",
            fno2,
            (torch.randn(batch, 1, n2, n2),),
            {
                "mass-2d": ((mass_conservation(square, mass2),), [mass_violation(w2, mass2, 2)]),
                "dirichlet": (
                    (BoundaryCondition(Dirichlet(0.0, 1.0), square.y, axis=-1),),
                    [wall_violation("dirichlet", -1, square.y.dx, 0.0, 1.0)],
                ),
                "dirichlet-x+neumann-y": (
                    (wall_x, flux_y),
                    [
                        # the y walls win at the four corners: measure x walls off the corners
                        lambda u: wall_violation("dirichlet", -2, 0, 0.0, 1.0)(u[..., 1:-1]),
                        wall_violation("neumann", -1, square.y.dx, 0.5, -0.5),
                    ],
                ),
            },
        )
    )

    # probabilistic surrogates on a (t, x) grid: one mass row per time slice
    nt = 6 if quick else 11
    t = torch.linspace(0.0, 1.0, nt, dtype=F64)
    x = line.coordinates()
    truth = smooth_field(t, x)
    mass_t = (truth * w1).sum(-1)  # (T,)
    points = torch.stack(torch.meshgrid(t, x, indexing="ij"), -1).reshape(-1, 2)
    pick = torch.randperm(points.shape[0])[: 12 if quick else 40]
    gp = ExactGPSurrogate(iterations=5 if quick else 30).fit(points[pick], truth.flatten()[pick])
    nonneg = NonNegative()
    gaussian_rows = {
        "mass-1d": ((mass_conservation(line, mass_t),), [mass_violation(w1, mass_t, 1)]),
        "dirichlet": (
            (BoundaryCondition(Dirichlet(0.2, 0.2), line),),
            [wall_violation("dirichlet", -1, line.dx, 0.2, 0.2)],
        ),
        "nonnegative": ((nonneg,), [negative_violation]),
        "mass-1d+nonnegative": (
            (mass_conservation(line, mass_t), nonneg),
            [mass_violation(w1, mass_t, 1), negative_violation],
        ),
    }
    gp_rows = {k: gaussian_rows[k] for k in ("mass-1d", "dirichlet")}
    cases.append(Case("gp", GPOnGrid(gp), (t, x), gp_rows))

    anp = AttentiveNeuralProcess(hidden=32, latent=32, seed=seed)
    context_x = points[pick].float()[None]
    context_y = truth.flatten()[pick].float()[None]
    mass_anp = mass_t.float()[None]  # (batch 1, T)
    cases.append(
        Case(
            "anp",
            ANPOnGrid(anp, (nt, n1)),
            (context_x, context_y, points.float()[None]),
            {
                "mass-1d": (
                    (mass_conservation(line, mass_anp),),
                    [mass_violation(w1, mass_anp.double(), 1)],
                ),
                "dirichlet": gaussian_rows["dirichlet"],
            },
        )
    )

    ensemble = DeepEnsemble(2, members=5, width=32, depth=2)
    fit_ensemble(
        ensemble, points.float(), truth.flatten().float(), epochs=2 if quick else 20, seed=seed
    )
    cases.append(
        Case(
            "ensemble-gaussian",
            EnsembleOnGrid(ensemble, (nt, n1), "gaussian"),
            (points.float(),),
            {k: gaussian_rows[k] for k in ("mass-1d", "nonnegative", "mass-1d+nonnegative")},
        )
    )
    cases.append(
        Case(
            "ensemble-members",
            EnsembleOnGrid(ensemble, (nt, n1), "ensemble"),
            (points.float(),),
            {k: gaussian_rows[k] for k in ("mass-1d", "dirichlet")},
        )
    )

    # forecasters on (b, t, c, h, w): per-frame 2-D mass
    side = 16 if quick else 32
    frames = Grid2D.square(side, 0.0, 1.0)
    wf = frames.weights()
    shape = (4, 1, side, side)
    mass_f = torch.full((2, 4, 1), 0.25)

    def earthformer() -> Earthformer:
        return Earthformer(shape, shape, base_units=16, num_heads=2, depth=(1, 1))

    forecast_rows = {
        "mass-2d-per-frame": (
            (mass_conservation(frames, mass_f),),
            [mass_violation(wf, mass_f.double(), 2)],
        ),
        "dirichlet": (
            (BoundaryCondition(Dirichlet(0.0, 0.0), frames.y, axis=-1),),
            [wall_violation("dirichlet", -1, frames.y.dx, 0.0, 0.0)],
        ),
    }
    x_f = torch.rand(2, *shape)
    cases.append(Case("earthformer", earthformer(), (x_f,), forecast_rows))
    members = ForecastEnsemble([earthformer() for _ in range(2 if quick else 4)])
    cases.append(
        Case(
            "earthformer-ensemble",
            members,
            (x_f,),
            {"mass-2d-per-frame": forecast_rows["mass-2d-per-frame"]},
        )
    )
    return cases


# ----------------------------------------------------------------------------------- rows


def output_kind(output) -> str:
    return type(output).__name__.lower() if not isinstance(output, torch.Tensor) else "tensor"


def run_case(case: Case, repeats: float) -> list[dict]:
    """Violations, dtype and forward times of each constraint on ``case`` (peaks: :func:`peaks`)."""
    rows = []
    case.model.eval()
    with torch.no_grad():
        plain = case.model(*case.inputs)
        pairs = max(15, math.ceil(repeats / best_time(lambda: case.model(*case.inputs), 1, 0.0)))
        for method, (constraints, measures) in case.constraints.items():
            wrapped = constrain(case.model, *constraints)
            out = wrapped(*case.inputs)
            plain_ms, wrapped_ms, ratios = paired_ms(
                lambda: case.model(*case.inputs), lambda w=wrapped: w(*case.inputs), pairs
            )
            rows.append(
                {
                    "case": case.name,
                    "method": method,
                    "output": output_kind(out),
                    "seam": "operator+output" if wrapped.kernel else "output",
                    "violation_before": max(measure(_fields(plain)) for measure in measures),
                    "violation_after": max(measure(_fields(out)) for measure in measures),
                    "exact": True,
                    "dtype_kept": _dtype(out) == _dtype(plain),
                    "fwd_ms": wrapped_ms,
                    "plain_fwd_ms": plain_ms,
                    "fwd_ratio": statistics.median(ratios),
                    "pairs": pairs,
                }
            )
    return rows


def peaks(case: Case, rows: list[dict]) -> None:
    """Add the constrained and plain forwards' peak memory to ``case``'s rows."""
    with torch.no_grad():
        plain = peak_mb(lambda: case.model(*case.inputs))
        for row in rows:
            if row["case"] != case.name:
                continue
            wrapped = constrain(case.model, *case.constraints[row["method"]][0])
            row["peak_mb"] = peak_mb(lambda w=wrapped: w(*case.inputs))
            row["plain_peak_mb"] = plain


def dense_route(samples: torch.Tensor, weights: torch.Tensor, mass: torch.Tensor):
    """The n × n route: the ensemble covariance per frame, then the textbook update."""
    X = samples.double().flatten(-2)
    A = X - X.mean(0)
    cov = torch.einsum("m...i,m...j->...ij", A, A) / (X.shape[0] - 1)
    g = weights.flatten()
    K = cov @ g  # (..., n)
    s = K @ g
    return X - K * (((X @ g) - mass) / s)[..., None]


def ensemble_update_rows(sides: list[int], seed: int, repeats: float) -> list[dict]:
    rows = []
    for side in sides:
        grid = Grid2D.square(side)
        gen = torch.Generator().manual_seed(seed)
        samples = torch.rand(16, 1, 10, 1, side, side, generator=gen)
        mass = torch.full((1, 10, 1), 0.5)
        model = constrain(nn.Identity(), mass_conservation(grid, mass))
        ensemble = Ensemble(samples)
        seconds = best_time(lambda m=model, e=ensemble: m(e), 3, repeats)
        out = model(ensemble).samples.double()
        violation = mass_violation(grid.weights(), mass.double(), 2)(out)
        row = {
            "case": "ensemble-update",
            "method": f"mass-2d-{side}x{side}",
            "output": "ensemble",
            "members": 16,
            "frames": 10,
            "violation_before": mass_violation(grid.weights(), mass.double(), 2)(samples.double()),
            "violation_after": violation,
            "exact": True,
            "dtype_kept": True,
            "fwd_ms": 1e3 * seconds,
        }
        deferred = {"peak_mb": lambda m=model, e=ensemble: m(e)}
        n = side * side
        dense_bytes = 10 * n * n * 8
        if dense_bytes < 4 * 2**30:
            flat_mass = mass.double().reshape(1, 10, 1)[..., 0]
            weights = grid.weights()

            def dense(samples=samples, weights=weights, mass=flat_mass):
                return dense_route(samples, weights, mass)

            row["nxn_fwd_ms"] = 1e3 * best_time(dense, 1, 0.0)
            deferred["nxn_peak_mb"] = dense
        else:
            size = dense_bytes / 2**30
            row["nxn_note"] = f"not run: the n x n covariances alone take {size:.0f} GiB"
        row["peaks"] = lambda deferred=deferred: {k: peak_mb(f) for k, f in deferred.items()}
        rows.append(row)
    return rows


NOTES = """
`violation_*`: the largest residual of the constraint relative to the magnitudes of the terms it
compares (mass: |∫u − M| / (∫|u| + |M|); Dirichlet: |u − g| / (max|u| + |g|); Neumann: the
one-sided stencil's residual over the sum of its terms' magnitudes; periodic: |u₀ − u_N| /
(|u₀| + |u_N|); non-negative: −min(u) / max|u|), on the tensor, the Gaussian's mean or every
member. Every row is an exact constraint (noise 0): the target is `violation_after` ≤ 1e-6.
`seam`: `operator+output` where the model's kernel layers were corrected (BOON). `fwd_ms`:
median process CPU time of the constrained forward (no gradient) over `pairs` calls alternating
with the unconstrained one (`plain_fwd_ms` in the JSON); `fwd_ratio`: the median of the pairs'
ratios, so both calls of a pair see the same load. `peak_mb`: the constrained
forward's peak resident memory above the memory before it (Linux VmHWM reset); `plain_peak_mb`
in the JSON is the same for the unconstrained forward. `ensemble-update`: 16 members × 10 frames,
one mass row per frame, through `constrain`; `nxn_*` the textbook route with the ensemble
covariance formed per frame, in the same run.
"""


def verdict(rows: list[dict]) -> str:
    """The targets, counted on this run's rows."""
    exact = [row for row in rows if row["violation_after"] <= EXACT_TOLERANCE]
    kept = [row for row in rows if row["dtype_kept"]]
    timed = [
        row for row in rows if row.get("seam") == "output" and row.get("plain_fwd_ms", 0.0) >= 1.0
    ]
    over = [f"{r['case']} / {r['method']} ({r['fwd_ratio']:.2f})" for r in timed]
    over = [text for text, r in zip(over, timed, strict=True) if r["fwd_ratio"] > 1.2]
    update = [row for row in rows if row["method"] == "mass-2d-64x64"]
    lines = [
        f"Targets on this run: violation_after ≤ 1e-6 on {len(exact)} of {len(rows)} rows; "
        f"dtype kept on {len(kept)} of {len(rows)}; output-seam fwd_ratio ≤ 1.2 on "
        f"{len(timed) - len(over)} of the {len(timed)} rows whose model takes ≥ 1 ms"
        + (f" (over: {', '.join(over)})" if over else "")
        + "."
    ]
    for row in update:
        lines.append(
            f"Ensemble update at 64²: {row['fwd_ms']:.0f} ms and {row['peak_mb']:.0f} MB "
            "(targets 100 ms, 100 MB)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = arguments(
        __doc__,
        argv,
        lambda p: p.add_argument("--threads", type=at_least(1), default=1, help="torch threads"),
    )
    torch.set_num_threads(args.threads)
    steady_allocations()
    started = time.perf_counter()
    repeats = 0.02 if args.quick else 0.3
    rows = []
    cases = build_cases(args.quick, args.seed)
    for case in cases:
        rows += run_case(case, repeats)
        print(f"{case.name}: {len(case.constraints)} rows", flush=True)
    rows += ensemble_update_rows([32] if args.quick else [64, 128], args.seed, repeats)
    unpooled_large_allocations()  # after the timings: it slows allocation-heavy models down
    for case in cases:
        peaks(case, rows)
    for row in rows:
        if row["case"] == "ensemble-update":
            row.update(row.pop("peaks")())
    write_results(
        "constraint_matrix",
        rows,
        args.seed,
        started,
        args.out,
        COLUMNS,
        NOTES + "\n" + verdict(rows),
        extra={"torch_threads": torch.get_num_threads()},
    )
    worst = max(row["violation_after"] for row in rows)
    print(f"{len(rows)} rows; largest violation after: {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
