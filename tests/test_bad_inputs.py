"""The bad-input catalogue: each class of bad input the toolkit must refuse, area by area.

A case is a small callable of the shared :class:`Context`, the exception it must raise and a regex
its message must match. The regex names the argument (the house rule: a message says which
argument, what was expected and what came), so a refusal that does not say what was wrong fails.
Cases still silent or unclear at the source are ``xfail(strict=True)`` with the reason: fixing
them turns the mark into a failure to remove. Files (links, dtypes, locks, leftovers) live in
``test_bad_files.py``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from recipes import TOY  # noqa: F401  (registers the toy recipe)
from torch import nn

import physml
import physml.data.nbody as nbody
import physml.tasks
import physml.tasks.conservation_forecast
import physml.tasks.earthformer
from pdes import (
    Dirichlet,
    Grid1D,
    Grid2D,
    Neumann,
    Periodic,
    SolverError,
    cavity,
    gpme,
    heat,
    problems,
    random_fields,
    stokes,
    tracer,
    wave,
)
from pdes import burgers as burgers_module
from pdes import navier_stokes as ns
from physml import (
    ConstraintError,
    Ensemble,
    Gaussian,
    LinearConstraint,
    constrain,
    mass_conservation,
    metrics,
)
from physml.constraints import BoundaryCondition, NonNegative, cumulative_inflow
from physml.data import (
    DatasetFileError,
    MultiStepDataset,
    PointSets,
    SingleStepDataset,
    check_shards,
    convert,
    generate_dataset,
    gpme_sampler,
    grid_points,
    load,
    merge_shards,
)
from physml.data.windows import ForecastDataset, RolloutDataset
from physml.models import (
    AttentiveNeuralProcess,
    ConvLSTM,
    ConvLSTMCell,
    CuboidCrossAttention,
    CuboidCrossBlock,
    CuboidSelfAttention,
    CuboidTransformerBlock,
    DeepEnsemble,
    Earthformer,
    EnergyJudge,
    ExactGPSurrogate,
    KnowledgeRegressor,
    LeanSpectralConv,
    Persistence,
    UNet,
    count_parameters,
    fast_fno,
    plain_fno,
    train_forecaster,
    unflatten,
    with_parameters,
)
from physml.models.prediff import ConvDenoiser, FrameAutoencoder, PreDiff, TimeEmbedding
from physml.models.prediff.autoencoder import ResidualBlock
from physml.tasks.probconserv import true_mass
from physml.training import CheckpointError, MemberRows, TrainConfig, Trainer, load_checkpoint
from physml.training.families import model_config

INF, NAN = math.inf, math.nan


@dataclass
class Context:
    """What the cases share: a toy dataset file (6 samples, 4 times, 9 points), a text file, and
    fresh folders on demand."""

    root: Path
    dataset: Path
    text: Path

    def fresh(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))

    @functools.cached_property
    def data(self) -> physml.data.PDEData:
        return load(self.dataset)


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Context:
    root = tmp_path_factory.mktemp("bad_inputs")
    dataset = generate_dataset("toy", root / "toy.h5", n=6, chunk=3, progress=False)
    text = root / "notes.txt"
    text.write_text("not a dataset\n")
    return Context(root, dataset, text)


def case(name: str, call, error: type[BaseException], match: str, xfail: str | None = None):
    """One class of bad input; ``xfail`` gives the reason it is still silent or unclear."""
    marks = []
    if xfail is not None:
        marks.append(pytest.mark.xfail(strict=True, reason=xfail))
    return pytest.param(call, error, match, id=name, marks=marks)


def check(call, error, match, context):
    with pytest.raises(error, match=match):
        call(context)


# ----------------------------------------------------------------------------- shared toys

G9 = Grid1D(9)
PERIODIC8 = Grid1D(8, periodic=True)
U0 = torch.zeros(2, 9)
T = [0.0, 0.1]
TASK_SCALE = {
    "earthformer": physml.tasks.earthformer.SIZES["toy"],
    "conservation": physml.tasks.conservation_forecast.TOY,
}
C128 = torch.complex128
P8 = Grid2D.square(8, periodic=True)


def square(n: int = 9, **kwargs) -> Grid2D:
    return Grid2D.square(n, **kwargs)


@functools.cache
def tiny_fno():
    from neuralop.models import FNO

    torch.manual_seed(0)
    return FNO(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=1)


@functools.cache
def boon():
    return constrain(tiny_fno(), BoundaryCondition(Dirichlet(0.0, 0.0), Grid1D(16)))


@functools.cache
def earthformer() -> Earthformer:
    torch.manual_seed(0)
    return Earthformer(
        (2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, depth=(1,), global_vectors=0
    )


@functools.cache
def fitted_gp() -> ExactGPSurrogate:
    x = torch.rand(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return ExactGPSurrogate(iterations=0).fit(x, torch.sin(3 * x).sum(1))


def gaussian(n: int = 4, cov=None) -> Gaussian:
    return Gaussian(torch.zeros(n, dtype=torch.float64), torch.eye(n) if cov is None else cov)


def mass(total, n: int = 5, noise: float = 0.0):
    return mass_conservation(Grid1D(n), torch.tensor(total, dtype=torch.float64), noise)


def not_psd(n: int = 4) -> torch.Tensor:
    """A symmetric matrix with positive diagonal and a negative eigenvalue."""
    cov = torch.full((n, n), 0.9, dtype=torch.float64)
    cov.fill_diagonal_(1.0)
    cov[0, 1] = cov[1, 0] = -0.9
    return cov


def infeasible_nonnegative(n: int, full: bool):
    """Conserve a negative total mass exactly, then ask for ``u >= 0``: no field does both.

    The prior is a random mean over ``n`` points with a diagonal (``full=False``: the update
    stays low rank) or a squared-exponential covariance (dense)."""
    mean = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    x = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    if full:
        cov = torch.exp(-((x[:, None] - x[None]) ** 2) / 0.1) + 1e-6 * torch.eye(n)
    else:
        cov = 0.5 + x
    model = constrain(nn.Identity(), mass(-1.0, n), NonNegative())
    return model(Gaussian(mean, cov.double()))


# ----------------------------------------------------------------------------------- solvers

GRID_CASES = [
    case("grid1d-n-zero", lambda c: Grid1D(0), ValueError, r"n must be an integer >= 3"),
    case("grid1d-n-float", lambda c: Grid1D(9.5), TypeError, r"n must be an integer"),
    case("grid1d-n-bool", lambda c: Grid1D(True), TypeError, r"n must be an integer"),
    case(
        "grid1d-n-numpy-bool", lambda c: Grid1D(np.bool_(True)), TypeError, r"n must be an integer"
    ),
    case("grid1d-n-numpy-float", lambda c: Grid1D(np.float64(9)), TypeError, r"n must be an int"),
    case("grid1d-two-nodes", lambda c: Grid1D(2), ValueError, r"n must be an integer >= 3"),
    case("grid1d-one-cell", lambda c: Grid1D(1, kind="cell"), ValueError, r"n must .* >= 2"),
    case("grid1d-reversed-ends", lambda c: Grid1D(9, 1.0, 0.0), ValueError, r"upper must exceed"),
    case("grid1d-equal-ends", lambda c: Grid1D(9, 1.0, 1.0), ValueError, r"upper must exceed"),
    case("grid1d-infinite-length", lambda c: Grid1D(17, 0, INF), ValueError, r"upper must be"),
    case("grid1d-infinite-lower", lambda c: Grid1D(17, -INF, 0), ValueError, r"lower must be"),
    case("grid1d-nan-lower", lambda c: Grid1D(9, NAN, 1.0), ValueError, r"lower must be"),
    case("grid1d-text-upper", lambda c: Grid1D(9, 0, "one"), TypeError, r"upper must be"),
    case(
        "grid1d-periodic-text",
        lambda c: Grid1D(9, periodic="yes"),
        TypeError,
        r"periodic must be True or False",
    ),
    case("grid1d-kind-unknown", lambda c: Grid1D(9, kind="edge"), ValueError, r"kind must be"),
    case("grid1d-refine-by-zero", lambda c: G9.refined(0), ValueError, r"factor must be"),
    case(
        "grid1d-integrate-wrong-length",
        lambda c: G9.integrate(torch.zeros(8)),
        ValueError,
        r"u must have 9 entries",
    ),
    case("grid2d-axes-not-grids", lambda c: Grid2D(9, 9), TypeError, r"x must be a .*Grid1D"),
    case("grid2d-square-too-small", lambda c: square(2), ValueError, r"n must be an integer"),
    case(
        "grid2d-integrate-wrong-shape",
        lambda c: square().integrate(torch.zeros(9, 8)),
        ValueError,
        r"u must end in shape \(9, 9\)",
    ),
]

BOUNDARY_CASES = [
    case("bc-name-unknown", lambda c: heat.solve_heat(U0, G9, 1.0, T, "robin"), ValueError, r"bc"),
    case("bc-not-a-condition", lambda c: heat.solve_heat(U0, G9, 1.0, T, 5), TypeError, r"bc"),
    case(
        "dirichlet-values-per-sample-mismatch",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, Dirichlet(torch.ones(3), 0.0)),
        ValueError,
        r"Dirichlet\.left must be a number or hold one value per sample \(2,\)",
    ),
    case(
        "dirichlet-nan-value",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, Dirichlet(NAN, 0.0)),
        ValueError,
        r"Dirichlet\.left is NaN or inf",
    ),
    case(
        "neumann-function-turns-infinite",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, Neumann(0.0, lambda t: INF)),
        ValueError,
        r"Neumann\.right is NaN or inf",
    ),
    case(
        "dirichlet-boolean-value",
        lambda c: gpme.solve_gpme(U0, G9, 1.0, T, Dirichlet(True, 0.0)),
        TypeError,
        r"Dirichlet\.left must be a number or hold one value per sample \(2,\), got True",
    ),
    case(
        "dirichlet-boolean-value-per-sample",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, Dirichlet(lambda t: torch.ones(2) > 0, 0.0)),
        TypeError,
        r"Dirichlet\.left must hold real numbers, got dtype torch.bool",
    ),
    case(
        "dirichlet-text-value",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, Dirichlet("1", 0.0)),
        TypeError,
        r"Dirichlet\.left must be a number or one value per sample, got '1'",
    ),
    case(
        "neumann-complex-value",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, Neumann(0.0, 1j)),
        TypeError,
        r"Neumann\.right must be a number",
    ),
    case(
        "neumann-three-nodes",
        lambda c: heat.solve_heat(torch.zeros(1, 3), Grid1D(3), 1.0, T, Neumann()),
        ValueError,
        r"grid must have at least 4 nodes",
    ),
]

HEAT_CASES = [
    case(
        "heat-u0-list",
        lambda c: heat.solve_heat([0.0] * 9, G9, 1.0, T, "dirichlet"),
        TypeError,
        r"u0 must be a torch.Tensor",
    ),
    case(
        "heat-u0-3d",
        lambda c: heat.solve_heat(torch.zeros(1, 2, 9), G9, 1.0, T, "dirichlet"),
        ValueError,
        r"u0 must have shape \(sample, x\)",
    ),
    case(
        "heat-u0-wrong-length",
        lambda c: heat.solve_heat(torch.zeros(2, 8), G9, 1.0, T, "dirichlet"),
        ValueError,
        r"u0 must have 9 points",
    ),
    case(
        "heat-u0-nan",
        lambda c: heat.solve_heat(torch.full((1, 9), NAN), G9, 1.0, T, "dirichlet"),
        ValueError,
        r"u0 contains NaN",
    ),
    case(
        "heat-kappa-negative",
        lambda c: heat.solve_heat(U0, G9, -1.0, T, "dirichlet"),
        ValueError,
        r"kappa must be a finite number > 0",
    ),
    case(
        "heat-kappa-zero",
        lambda c: heat.solve_heat(U0, G9, 0.0, T, "dirichlet"),
        ValueError,
        r"kappa must be a finite number > 0",
    ),
    case(
        "heat-kappa-nan",
        lambda c: heat.solve_heat(U0, G9, NAN, T, "dirichlet"),
        ValueError,
        r"kappa must be a finite number > 0",
    ),
    case(
        "heat-kappa-text",
        lambda c: heat.solve_heat(U0, G9, "fast", T, "dirichlet"),
        TypeError,
        r"kappa must be a positive number",
    ),
    case(
        "heat-kappa-numeric-text",  # float("0.1") would take it
        lambda c: heat.solve_heat(U0, G9, "0.1", T, "dirichlet"),
        TypeError,
        r"kappa must be a positive number, got '0.1'",
    ),
    case(
        "heat-kappa-per-sample-count",
        lambda c: heat.solve_heat(U0, G9, torch.ones(3), T, "dirichlet"),
        ValueError,
        r"kappa must be a number or hold one value per sample \(2,\)",
    ),
    case(
        "heat-kappa-one-negative-sample",
        lambda c: heat.solve_heat(U0, G9, torch.tensor([1.0, -1.0]), T, "dirichlet"),
        ValueError,
        r"kappa must be finite and > 0",
    ),
    case(
        "heat-kappa-overflows",
        lambda c: heat.solve_heat(torch.ones(1, 9), G9, 1e300, T, Neumann(0.0, math.sin)),
        ValueError,
        r"kappa up to 1e\+300 is too large",
    ),
    case(
        "stokes-nu-overflows",
        lambda c: stokes.solve_stokes(G9, [0.0, 1.0], 1.0, 1.0, 1e300),
        ValueError,
        r"too large for times up to 1",
    ),
    case(
        "heat-u0-complex",
        lambda c: heat.solve_heat(
            torch.zeros(2, 9, dtype=torch.complex128), G9, 1.0, T, "dirichlet"
        ),
        TypeError,
        r"u0 must hold real numbers",
    ),
    case(
        "heat-u0-boolean",
        lambda c: heat.solve_heat(torch.zeros(2, 9, dtype=torch.bool), G9, 1.0, T, "dirichlet"),
        TypeError,
        r"u0 must hold real numbers",
    ),
    case(
        "heat-u0-no-samples",
        lambda c: heat.solve_heat(torch.zeros(0, 9), G9, 1.0, T, "dirichlet"),
        ValueError,
        r"u0 must hold at least one sample, got shape \(0, 9\)",
    ),
    case(
        "heat-kappa-complex",
        lambda c: heat.solve_heat(U0, G9, torch.tensor([1 + 1j, 1 + 0j]), T, "dirichlet"),
        TypeError,
        r"kappa must hold real numbers",
    ),
    case(
        "heat-kappa-boolean-tensor",
        lambda c: heat.solve_heat(U0, G9, torch.tensor(True), T, "dirichlet"),
        TypeError,
        r"kappa must be a positive number, got True",
    ),
    case(
        "heat-kappa-column",  # flattened to (2,) before
        lambda c: heat.solve_heat(U0, G9, torch.ones(2, 1), T, "dirichlet"),
        ValueError,
        r"kappa must be a number or hold one value per sample \(2,\), got shape \(2, 1\)",
    ),
    case(
        "heat-kappa-row",
        lambda c: heat.solve_heat(U0, G9, torch.ones(1, 2), T, "dirichlet"),
        ValueError,
        r"kappa must be a number or hold one value per sample \(2,\), got shape \(1, 2\)",
    ),
    case(
        "heat-times-table",
        lambda c: heat.solve_heat(U0, G9, 1.0, [[0.0, 0.1], [0.2, 0.3]], "dirichlet"),
        ValueError,
        r"times must be a 1-D sequence",
    ),
    case(
        "heat-times-text",
        lambda c: heat.solve_heat(U0, G9, 1.0, "0.1", "dirichlet"),
        TypeError,
        r"times must be a sequence of numbers",
    ),
    case(
        "heat-times-empty",
        lambda c: heat.solve_heat(U0, G9, 1.0, [], "dirichlet"),
        ValueError,
        r"times must hold at least one time",
    ),
    case(
        "heat-times-negative",
        lambda c: heat.solve_heat(U0, G9, 1.0, [-1.0, 0.0], "dirichlet"),
        ValueError,
        r"times must be >= 0",
    ),
    case(
        "heat-times-decreasing",
        lambda c: heat.solve_heat(U0, G9, 1.0, [0.2, 0.1], "dirichlet"),
        ValueError,
        r"times must be non-decreasing",
    ),
    case(
        "heat-times-infinite",
        lambda c: heat.solve_heat(U0, G9, 1.0, [0.0, INF], "dirichlet"),
        ValueError,
        r"times must be finite",
    ),
    case(
        "heat-max-step-zero",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, "dirichlet", 0.0),
        ValueError,
        r"max_step must be a finite number > 0",
    ),
    case(
        "heat-dirichlet-on-periodic-grid",
        lambda c: heat.solve_heat(torch.zeros(2, 8), PERIODIC8, 1.0, T, "dirichlet"),
        ValueError,
        r"grid must be a non-periodic node grid",
    ),
    case(
        "heat-periodic-on-walled-grid",
        lambda c: heat.solve_heat(U0, G9, 1.0, T, "periodic"),
        ValueError,
        r"grid must be periodic",
    ),
    case(
        "heat-grid-not-grid1d",
        lambda c: heat.solve_heat(U0, square(), 1.0, T, "dirichlet"),
        TypeError,
        r"grid must be a pdes.Grid1D",
    ),
    case(
        "heat-cell-grid",
        lambda c: heat.solve_heat(U0, Grid1D(9, kind="cell"), 1.0, T, "neumann"),
        ValueError,
        r"grid must be a non-periodic node grid",
    ),
]

GPME_CASES = [
    case(
        "gpme-grid-not-grid1d",
        lambda c: gpme.solve_gpme(U0, square(), 1.0, T, "dirichlet"),
        TypeError,
        r"grid must be a pdes.Grid1D",
    ),
    case(
        "gpme-u0-nan",
        lambda c: gpme.solve_gpme(torch.full((1, 9), NAN), G9, 1.0, T, "dirichlet"),
        ValueError,
        r"u0 contains NaN",
    ),
    case(
        "gpme-u0-no-samples",
        lambda c: gpme.solve_gpme(torch.zeros(0, 9), G9, 1.0, T, "dirichlet"),
        ValueError,
        r"u0 must hold at least one sample",
    ),
    case(
        "gpme-k-negative",
        lambda c: gpme.solve_gpme(U0, G9, -1.0, T, "dirichlet"),
        ValueError,
        r"k must be",
    ),
    case(
        "gpme-k-boolean-tensor",
        lambda c: gpme.solve_gpme(U0, G9, torch.tensor(True), T, "dirichlet"),
        TypeError,
        r"k must hold real numbers, got dtype torch.bool",
    ),
    case(
        "gpme-k-complex-tensor",
        lambda c: gpme.solve_gpme(U0, G9, torch.tensor([1 + 1j, 1]), T, "dirichlet"),
        TypeError,
        r"k must hold real numbers, got dtype torch.complex",
    ),
    case(
        "pme-exact-m-numpy-boolean",
        lambda c: gpme.pme_exact([0.5], [1.0], np.bool_(True)),
        TypeError,
        r"m must be a number or one value per sample \(sample,\), got (np\.)?True",
    ),
    case(
        "gpme-times-boolean",
        lambda c: gpme.solve_gpme(U0, G9, 1.0, [True], "dirichlet"),
        TypeError,
        r"times must be a sequence of numbers, got \[True\]",
    ),
    case(
        "gpme-k-text",
        lambda c: gpme.solve_gpme(U0, G9, "k", T, "dirichlet"),
        TypeError,
        r"k must be a callable",
    ),
    case(
        "gpme-k-wrong-shape",
        lambda c: gpme.solve_gpme(U0, G9, lambda u: torch.ones(3), T, "dirichlet"),
        ValueError,
        r"k\(u\) must accept u of shape",
    ),
    case(
        "gpme-dt-zero",
        lambda c: gpme.solve_gpme(U0, G9, 1.0, T, "dirichlet", dt=0.0),
        ValueError,
        r"dt must be a finite number > 0",
    ),
    case(
        "gpme-dt-unstable",
        lambda c: gpme.solve_gpme(torch.ones(1, 9), G9, 1.0, T, "dirichlet", dt=0.05),
        SolverError,
        r"dt=0.05 exceeds the stability limit",
    ),
    case(
        "gpme-periodic-bc-walled-grid",
        lambda c: gpme.solve_gpme(U0, G9, 1.0, T, "periodic"),
        ValueError,
        r"bc must be periodic exactly when the grid is periodic",
    ),
    case(
        "gpme-times-decreasing",
        lambda c: gpme.solve_gpme(U0, G9, 1.0, [0.1, 0.0], "dirichlet"),
        ValueError,
        r"times must be non-decreasing",
    ),
    case(
        "gpme-k-negative-values",
        lambda c: gpme.solve_gpme(
            torch.ones(1, 9), G9, lambda u: -torch.ones_like(u), T, "dirichlet"
        ),
        ValueError,
        r"k\(u\) must be finite and >= 0",
    ),
    case(
        "gpme-k-huge",
        lambda c: gpme.solve_gpme(torch.ones(1, 9), G9, 1e300, T, "dirichlet"),
        SolverError,
        r"k_max=1e\+300",
    ),
    case(
        "pme-exact-m-zero",
        lambda c: gpme.pme_exact([0.5], [1.0], 0.0),
        ValueError,
        r"m must be > 0",
    ),
    case(
        "pme-exact-negative-time",
        lambda c: gpme.pme_exact([0.5], [-1.0], 2.0),
        ValueError,
        r"t must be >= 0",
    ),
    case(
        "diffusion-exact-x-2d",
        lambda c: gpme.diffusion_exact(torch.zeros(2, 2), [0.0], 1.0),
        ValueError,
        r"x must be a 1-D array",
    ),
    case(
        "stefan-exact-u-star-one",
        lambda c: gpme.stefan_exact([0.5], [1.0], 1.0),
        ValueError,
        r"u_star must lie in the open interval \(0, 1\)",
    ),
    case(
        "stefan-exact-u-star-bool",
        lambda c: gpme.stefan_exact([0.5], [1.0], True),
        TypeError,
        r"u_star must be a number",
    ),
]


WAVE_CASES = [
    case(
        "wave-inhomogeneous-neumann",
        lambda c: wave.solve_wave(U0, U0, G9, 1.0, T, Neumann(1.0, 0.0)),
        ValueError,
        r"bc: only homogeneous Neumann",
    ),
    case(
        "wave-dirichlet",
        lambda c: wave.solve_wave(U0, U0, G9, 1.0, T, "dirichlet"),
        ValueError,
        r"bc must be one of \['neumann'\]",
    ),
    case(
        "wave-v0-other-batch",
        lambda c: wave.solve_wave(U0, torch.zeros(3, 9), G9, 1.0, T),
        ValueError,
        r"v0 must have the shape of u0",
    ),
    case(
        "wave-speed-negative",
        lambda c: wave.solve_wave(U0, U0, G9, -1.0, T),
        ValueError,
        r"c must be a finite number > 0",
    ),
    case(
        "wave-periodic-grid",
        lambda c: wave.solve_wave(torch.zeros(2, 8), torch.zeros(2, 8), PERIODIC8, 1.0, T),
        ValueError,
        r"grid must be a non-periodic node grid",
    ),
    case(
        "wave-v0-nan",
        lambda c: wave.solve_wave(U0, torch.full((2, 9), NAN), G9, 1.0, T),
        ValueError,
        r"v0 contains NaN",
    ),
]

STOKES_CASES = [
    case(
        "stokes-omega-negative",
        lambda c: stokes.solve_stokes(G9, T, 1.0, -1.0, 0.1),
        ValueError,
        r"omega must be a finite number > 0",
    ),
    case(
        "stokes-nu-zero",
        lambda c: stokes.solve_stokes(G9, T, 1.0, 1.0, 0.0),
        ValueError,
        r"nu must be a finite number > 0",
    ),
    case(
        "stokes-amplitude-nan",
        lambda c: stokes.solve_stokes(G9, T, NAN, 1.0, 0.1),
        ValueError,
        r"U must be finite",
    ),
    case(
        "stokes-amplitude-count",
        lambda c: stokes.solve_stokes(G9, T, torch.ones(2), 1.0, torch.ones(3)),
        ValueError,
        r"U must be a number or hold one value per sample \(3,\)",
    ),
    case(
        "stokes-amplitude-boolean",
        lambda c: stokes.solve_stokes(G9, T, True, 1.0, 0.1),
        TypeError,
        r"U must be a number or one value per sample \(sample,\), got True",
    ),
    case(
        "stokes-amplitude-boolean-tensor",
        lambda c: stokes.solve_stokes(G9, T, torch.tensor([True, False]), 1.0, 0.1),
        TypeError,
        r"U must hold real numbers, got dtype torch.bool",
    ),
    case(
        "stokes-amplitude-complex",
        lambda c: stokes.solve_stokes(G9, T, 1 + 1j, 1.0, 0.1),
        TypeError,
        r"U must be a number or one value per sample \(sample,\), got \(1\+1j\)",
    ),
    case(
        "stokes-amplitude-text",
        lambda c: stokes.solve_stokes(G9, T, "a", 1.0, 0.1),
        TypeError,
        r"U must be a number or one value per sample \(sample,\), got 'a'",
    ),
    case(
        "stokes-grid-2d",
        lambda c: stokes.solve_stokes(square(), T, 1.0, 1.0, 0.1),
        TypeError,
        r"grid must be a pdes.Grid1D",
    ),
]

CAVITY_CASES = [
    case(
        "cavity-grid-1d",
        lambda c: cavity.solve_cavity(G9, T, 10.0),
        TypeError,
        r"grid must be a pdes.Grid2D",
    ),
    case(
        "cavity-grid-periodic",
        lambda c: cavity.solve_cavity(square(8, periodic=True), T, 10.0),
        ValueError,
        r"grid must be a square, non-periodic node grid",
    ),
    case(
        "cavity-grid-too-small",
        lambda c: cavity.solve_cavity(square(4), T, 10.0),
        ValueError,
        r"grid.n \(nodes per side\) must be an integer >= 5",
    ),
    case(
        "cavity-reynolds-negative",
        lambda c: cavity.solve_cavity(square(), T, -5.0),
        ValueError,
        r"reynolds must be finite and > 0",
    ),
    case(
        "cavity-lid-velocity-text",
        lambda c: cavity.solve_cavity(square(), T, 10.0, "fast"),
        TypeError,
        r"lid_velocity must be a positive number",
    ),
    case(
        "cavity-reynolds-boolean-tensor",
        lambda c: cavity.solve_cavity(square(), T, torch.tensor(True)),
        TypeError,
        r"reynolds must hold real numbers, got dtype torch.bool",
    ),
    case(
        "cavity-w0-wrong-shape",
        lambda c: cavity.solve_cavity(square(), T, 10.0, w0=torch.zeros(1, 8, 8)),
        ValueError,
        r"w0 must have shape \(sample, 9, 9\)",
    ),
    case(
        "cavity-w0-nan",
        lambda c: cavity.solve_cavity(square(), T, 10.0, w0=torch.full((1, 9, 9), NAN)),
        ValueError,
        r"w0 contains NaN",
    ),
    case(
        "cavity-w0-complex",
        lambda c: cavity.solve_cavity(square(), T, 10.0, w0=torch.zeros(1, 9, 9, dtype=C128)),
        TypeError,
        r"w0 must hold real numbers, got dtype torch.complex128",
    ),
    case(
        "cavity-w0-boolean",
        lambda c: cavity.solve_cavity(square(), T, 10.0, w0=torch.zeros(1, 9, 9, dtype=torch.bool)),
        TypeError,
        r"w0 must hold real numbers, got dtype torch.bool",
    ),
    case(
        "streamfunction-w-complex",
        lambda c: cavity.streamfunction(torch.zeros(9, 9, dtype=C128), square()),
        TypeError,
        r"w must hold real numbers",
    ),
    case(
        "cavity-sample-counts-disagree",
        lambda c: cavity.solve_cavity(square(), T, torch.ones(2) * 10, torch.ones(3)),
        ValueError,
        r"reynolds, lid_velocity and w0 disagree on the number of samples",
    ),
    case(
        "cavity-advection-unknown",
        lambda c: cavity.solve_cavity(square(), T, 10.0, advection="weno"),
        ValueError,
        r"advection must be one of",
    ),
    case(
        "cavity-dt-negative",
        lambda c: cavity.solve_cavity(square(), T, 10.0, dt=-1.0),
        ValueError,
        r"dt must be a finite number > 0",
    ),
    case(
        "steady-cavity-tol-zero",
        lambda c: cavity.steady_cavity(square(), 10.0, tol=0.0),
        ValueError,
        r"tol must be a finite number > 0",
    ),
    case(
        "steady-cavity-max-time-infinite",
        lambda c: cavity.steady_cavity(square(), 10.0, max_time=INF),
        ValueError,
        r"max_time must be a finite number > 0",
    ),
]

RANDOM_FIELD_CASES = [
    case(
        "grf1d-n-one",
        lambda c: random_fields.gaussian_random_field_1d(1),
        ValueError,
        r"n must be an integer >= 2",
    ),
    case(
        "grf1d-length-negative",
        lambda c: random_fields.gaussian_random_field_1d(8, -1.0),
        ValueError,
        r"length must be a finite number > 0",
    ),
    case(
        "grf1d-alpha-zero",
        lambda c: random_fields.gaussian_random_field_1d(8, alpha=0.0),
        ValueError,
        r"alpha must be a finite number > 0",
    ),
    case(
        "grf1d-generator-seed-int",
        lambda c: random_fields.gaussian_random_field_1d(8, generator=3),
        TypeError,
        r"generator must be a torch.Generator",
    ),
    case(
        "grf1d-batch-zero",
        lambda c: random_fields.gaussian_random_field_1d(8, batch=0),
        ValueError,
        r"batch must be an integer >= 1",
    ),
    case(
        "grf2d-sigma-nan",
        lambda c: random_fields.gaussian_random_field_2d(8, sigma=NAN),
        ValueError,
        r"sigma must be a finite number > 0",
    ),
    case(
        "grf1d-zero-mean-text",
        lambda c: random_fields.gaussian_random_field_1d(8, zero_mean="no"),
        TypeError,
        r"zero_mean must be True or False",
    ),
    case(
        "grf2d-tau-text",
        lambda c: random_fields.gaussian_random_field_2d(8, tau="x"),
        TypeError,
        r"tau must be a positive number",
    ),
]

BURGERS_CASES = [
    case(
        "burgers-periodic-bc-walled-grid",
        lambda c: burgers_module.solve_burgers(U0, G9, 0.1, T),
        ValueError,
        r"bc='periodic' needs a periodic grid",
    ),
    case(
        "burgers-neumann",
        lambda c: burgers_module.solve_burgers(U0, G9, 0.1, T, "neumann"),
        ValueError,
        r"bc must be one of \['periodic', 'dirichlet'\]",
    ),
    case(
        "burgers-transform-unknown",
        lambda c: burgers_module.solve_burgers(
            torch.zeros(2, 8), PERIODIC8, 0.1, T, transform="dct"
        ),
        ValueError,
        r"transform must be one of",
    ),
    case(
        "burgers-nu-negative",
        lambda c: burgers_module.solve_burgers(torch.zeros(2, 8), PERIODIC8, -0.1, T),
        ValueError,
        r"nu",
    ),
    case(
        "burgers-nu-boolean",
        lambda c: burgers_module.solve_burgers(torch.zeros(2, 8), PERIODIC8, torch.tensor(True), T),
        TypeError,
        r"nu must be a positive number, got True",
    ),
    case(
        "burgers-nu-boolean-per-sample",
        lambda c: burgers_module.solve_burgers(
            torch.zeros(2, 8), PERIODIC8, torch.tensor([True, True]), T
        ),
        TypeError,
        r"nu must hold real numbers, got dtype torch.bool",
    ),
    case(
        "burgers-nu-complex-per-sample",
        lambda c: burgers_module.solve_burgers(
            torch.zeros(2, 8), PERIODIC8, torch.tensor([0.1 + 0j, 0.1]), T
        ),
        TypeError,
        r"nu must hold real numbers, got dtype torch.complex",
    ),
    case(
        "burgers-grid-2d",
        lambda c: burgers_module.solve_burgers(U0, square(), 0.1, T),
        TypeError,
        r"grid must be a pdes.Grid1D",
    ),
    case(
        "burgers-nu-overflows",
        lambda c: burgers_module.solve_burgers(
            torch.zeros(1, 9), G9, 1e300, T, Dirichlet(0.0, 1.0)
        ),
        ValueError,
        r"nu up to 1e\+300 is too large",
    ),
    case(
        "burgers-max-step-negative",
        lambda c: burgers_module.solve_burgers(torch.zeros(2, 8), PERIODIC8, 0.1, T, max_step=-1.0),
        ValueError,
        r"max_step must be a finite number > 0",
    ),
]

NAVIER_STOKES_CASES = [
    case(
        "vorticity-walled-grid",
        lambda c: ns.solve_vorticity(torch.zeros(1, 8, 8), square(8), 0.01, T),
        ValueError,
        r"grid must be periodic along x and y",
    ),
    case(
        "vorticity-w0-wrong-shape",
        lambda c: ns.solve_vorticity(torch.zeros(1, 4, 4), square(8, periodic=True), 0.01, T),
        ValueError,
        r"w0 must have shape \(sample, 8, 8\)",
    ),
    case(
        "vorticity-nu-negative",
        lambda c: ns.solve_vorticity(torch.zeros(1, 8, 8), square(8, periodic=True), -0.01, T),
        ValueError,
        r"nu",
    ),
    case(
        "vorticity-forcing-unknown",
        lambda c: ns.solve_vorticity(
            torch.zeros(1, 8, 8), square(8, periodic=True), 0.01, T, forcing="kolmogorov"
        ),
        ValueError,
        r"forcing",
    ),
    case(
        "vorticity-nu-overflows",
        lambda c: ns.solve_vorticity(torch.ones(1, 8, 8), square(8, periodic=True), 1e300, T),
        ValueError,
        r"nu up to 1e\+300 is too large",
    ),
    case(
        "vorticity-forcing-wrong-grid",
        lambda c: ns.solve_vorticity(
            torch.zeros(1, 8, 8), square(8, periodic=True), 0.01, T, forcing=torch.zeros(4, 4)
        ),
        ValueError,
        r"forcing must have shape \(sample, 8, 8\)",
    ),
    case(
        "vorticity-w0-complex",
        lambda c: ns.solve_vorticity(torch.zeros(1, 8, 8, dtype=C128), P8, 0.01, T),
        TypeError,
        r"w0 must hold real numbers, got dtype torch.complex128",
    ),
    case(
        "vorticity-w0-boolean",
        lambda c: ns.solve_vorticity(torch.zeros(1, 8, 8, dtype=torch.bool), P8, 0.01, T),
        TypeError,
        r"w0 must hold real numbers, got dtype torch.bool",
    ),
    case(
        "vorticity-forcing-complex",
        lambda c: ns.solve_vorticity(
            torch.zeros(1, 8, 8), P8, 0.01, T, forcing=torch.zeros(8, 8, dtype=C128)
        ),
        TypeError,
        r"forcing must hold real numbers",
    ),
    case(
        "vorticity-w0-no-samples",
        lambda c: ns.solve_vorticity(torch.zeros(0, 8, 8), P8, 0.01, T),
        ValueError,
        r"w0 must hold at least one sample, got shape \(0, 8, 8\)",
    ),
    case(
        "velocity-w-complex",
        lambda c: ns.velocity(torch.zeros(8, 8, dtype=C128), P8),
        TypeError,
        r"w must hold real numbers",
    ),
    case(
        "tracer-kappa-boolean",
        lambda c: tracer.solve_tracer(torch.zeros(1, 8, 8), P8, True, T, (1.0, 0.0)),
        TypeError,
        r"kappa must be a number or one value per sample \(sample,\), got True",
    ),
    case(
        "tracer-kappa-complex",
        lambda c: tracer.solve_tracer(torch.zeros(1, 8, 8), P8, 1j, T, (1.0, 0.0)),
        TypeError,
        r"kappa must be a number or one value per sample \(sample,\), got 1j",
    ),
    case(
        "gaussian-blob-std-boolean",
        lambda c: tracer.gaussian_blob(P8, (0.5, 0.5), std=True),
        TypeError,
        r"std must be a number or one value per sample \(sample,\), got True",
    ),
    case(
        "tracer-c0-complex",
        lambda c: tracer.solve_tracer(torch.zeros(1, 8, 8, dtype=C128), P8, 0.0, T, (1.0, 0.0)),
        TypeError,
        r"c0 must hold real numbers",
    ),
    case(
        "tracer-c0-boolean",
        lambda c: tracer.solve_tracer(
            torch.ones(1, 8, 8, dtype=torch.bool), P8, 0.0, T, (1.0, 0.0)
        ),
        TypeError,
        r"c0 must hold real numbers",
    ),
    case(
        "taylor-green-amplitude-nan",
        lambda c: ns.taylor_green(square(8, periodic=True), T, 0.01, amplitude=NAN),
        ValueError,
        r"amplitude must be a finite number",
    ),
    case(
        "taylor-green-k-zero",
        lambda c: ns.taylor_green(square(8, periodic=True), T, 0.01, k=0),
        ValueError,
        r"k must be an integer >= 1",
    ),
    # the exact solutions the tests compare against take numbers only, by name
    case(
        "gaussian-blob-centre-booleans",
        lambda c: tracer.gaussian_blob(P8, (True, False), std=0.1),
        TypeError,
        r"centre must be a pair \(x, y\) or \(sample, 2\) of numbers, got \(True, False\)",
    ),
    case(
        "drifting-blob-flow-text",
        lambda c: tracer.drifting_blob(P8, T, (0.5, 0.5), 0.1, ("1", "0"), 0.0),
        TypeError,
        r"flow must be a pair \(Ux, Uy\) of numbers, got \('1', '0'\)",
    ),
    case(
        "drifting-blob-flow-triple",
        lambda c: tracer.drifting_blob(P8, T, (0.5, 0.5), 0.1, (1.0, 0.0, 0.0), 0.0),
        ValueError,
        r"flow must be a pair \(Ux, Uy\), got shape \(3,\)",
    ),
    case(
        "drifting-blob-centre-triple",
        lambda c: tracer.drifting_blob(P8, T, (0.5, 0.5, 0.5), 0.1, (1.0, 0.0), 0.0),
        ValueError,
        r"centre must be a pair \(x, y\) or \(sample, 2\), got shape \(3,\)",
    ),
    case(
        "taylor-green-times-boolean-tensor",
        lambda c: ns.taylor_green(square(8, periodic=True), torch.tensor([True]), 0.01),
        TypeError,
        r"t must hold real numbers, got dtype torch.bool",
    ),
    case(
        "taylor-green-nu-complex",
        lambda c: ns.taylor_green(square(8, periodic=True), T, 0.01j),
        TypeError,
        r"nu must be a number or one per sample \(sample,\), got 0.01j",
    ),
    case(
        "cole-hopf-phases-booleans",
        lambda c: burgers_module.cole_hopf_solution(
            torch.linspace(0, 1, 5), T, 0.1, 2.0, [0.5], [math.pi], [True]
        ),
        TypeError,
        r"phases must be numbers \(B, J\) or \(J,\), got \[True\]",
    ),
    case(
        "cole-hopf-times-nan",
        lambda c: burgers_module.cole_hopf_solution(
            torch.linspace(0, 1, 5), [NAN], 0.1, 2.0, [0.5], [math.pi], [0.0]
        ),
        ValueError,
        r"t must be finite, got \[nan\]",
    ),
    case(
        "stokes-exact-depths-text",
        lambda c: stokes.stokes_exact("0.1", T, 1.0, 1.0, 0.1),
        TypeError,
        r"y must be coordinates \(Y,\), got '0.1'",
    ),
    case(
        "wave-exact-mode-boolean",
        lambda c: wave.wave_exact(torch.linspace(0, 1, 5), T, True, 1.0),
        TypeError,
        r"mode must be a number or one per sample \(S,\), got True",
    ),
    case(
        "wave-exact-length-zero",
        lambda c: wave.wave_exact(torch.linspace(0, 1, 5), T, 1, 1.0, length=0.0),
        ValueError,
        r"length must be a finite number > 0, got 0.0",
    ),
]

RECIPE_CASES = [
    case("recipe-unknown", lambda c: problems.get("heat2"), ValueError, r"unknown PDE 'heat2'"),
    case(
        "recipe-stefan-front-leaves-the-domain",
        lambda c: problems.get("stefan").generate([0], problems.get("stefan").settings(t_end=3.0)),
        ValueError,
        r"t_end must be <= 0\.7637 with solver 'exact' and u\* in \[0\.55, 0\.7\]: the fastest "
        r"front .* got 3\.0",
    ),
    case(
        "recipe-pme-front-leaves-the-domain",
        lambda c: problems.get("pme").generate([0], problems.get("pme").settings(t_end=2.0)),
        ValueError,
        r"t_end must be <= 1 with solver 'exact': the front x = t leaves \[0, 1\] .* got 2\.0",
    ),
    case(
        "recipe-option-unknown",
        lambda c: problems.get("heat").settings(nx2=5),
        ValueError,
        r"unknown option\(s\) \['nx2'\]",
    ),
    case(
        "recipe-option-wrong-type",
        lambda c: problems.get("heat").settings(nx="many"),
        ValueError,
        r"option nx must be a int",
    ),
    case(
        "recipe-float-option-boolean",  # float(True) is 1.0
        lambda c: problems.get("heat").settings(t_end=True),
        ValueError,
        r"heat: option t_end must be a float, got True",
    ),
    case(
        "recipe-int-option-numpy-boolean",
        lambda c: problems.get("heat").settings(nx=np.bool_(True)),
        ValueError,
        r"heat: option nx must be a int, got (np\.)?True",
    ),
    case(
        "recipe-viscosity-option-boolean",
        lambda c: problems.get("burgers").settings(nu=True),
        ValueError,
        r"burgers: option nu must be a float, got True",
    ),
    case(
        "recipe-register-non-problem",
        lambda c: problems.register("heat"),
        TypeError,
        r"problem must be a Problem instance",
    ),
]

SOLVER_CASES = [
    *GRID_CASES,
    *BOUNDARY_CASES,
    *HEAT_CASES,
    *GPME_CASES,
    *WAVE_CASES,
    *STOKES_CASES,
    *CAVITY_CASES,
    *RANDOM_FIELD_CASES,
    *BURGERS_CASES,
    *NAVIER_STOKES_CASES,
    *RECIPE_CASES,
]


@pytest.mark.parametrize(("call", "error", "match"), SOLVER_CASES)
def test_solvers_refuse_bad_input(call, error, match, context):
    check(call, error, match, context)


# -------------------------------------------------------------------------------------- data


def generate(c: Context, **overrides):
    arguments = {"pde": "toy", "out": c.fresh() / "x.h5", "n": 2, "progress": False}
    return generate_dataset(**{**arguments, **overrides})


DATA_CASES = [
    case("load-missing-file", lambda c: load(c.root / "absent.h5"), FileNotFoundError, r"path"),
    case("load-text-file", lambda c: load(c.text), DatasetFileError, r"path: .* is not a readable"),
    case("load-folder", lambda c: load(c.root), DatasetFileError, r"path"),
    case(
        "single-step-input-time-out-of-range",
        lambda c: SingleStepDataset(c.data, input_time=4),
        IndexError,
        r"input_time must index one of 4 times",
    ),
    case(
        "single-step-target-time-out-of-range",
        lambda c: SingleStepDataset(c.data, target_time=-5),
        IndexError,
        r"target_time must index one of 4 times",
    ),
    case(
        "single-step-target-before-input",
        lambda c: SingleStepDataset(c.data, input_time=-1, target_time=1),
        ValueError,
        r"target_time must not come before input_time, got target_time=1 \(index 1\) and "
        r"input_time=-1 \(index 3\)",
    ),
    case(
        "single-step-input-time-float",
        lambda c: SingleStepDataset(c.data, input_time=1.5),
        TypeError,
        r"input_time must be an integer index",
    ),
    case(
        "single-step-with-grid-without-coordinates",
        lambda c: SingleStepDataset(
            physml.data.PDEData(torch.zeros(2, 3, 4), torch.arange(3.0), {}, {}), with_grid=True
        ),
        DatasetFileError,
        r"with_grid: the file lacks coordinates",
    ),
    case(
        "multi-step-dtype-text",
        lambda c: MultiStepDataset(c.data, dtype="float32"),
        TypeError,
        r"dtype must be a floating-point torch.dtype",
    ),
    case(
        "forecast-dtype-integer",
        lambda c: ForecastDataset(c.data, 1, 1, dtype=torch.int64),
        TypeError,
        r"dtype must be a floating-point torch.dtype",
    ),
    case("load-path-none", lambda c: load(None), TypeError, r"path must be a file path"),
    case(
        "multi-step-steps-zero",
        lambda c: MultiStepDataset(c.data, steps=0),
        ValueError,
        r"steps must be an integer in \[1, 3\]",
    ),
    case(
        "multi-step-steps-not-dividing",
        lambda c: MultiStepDataset(c.data, steps=2),
        ValueError,
        r"steps must divide the 3 stored steps",
    ),
    case(
        "multi-step-steps-bool",
        lambda c: MultiStepDataset(c.data, steps=True),
        TypeError,
        r"steps must be an integer in \[1, 3\], got True",
    ),
    case(
        "multi-step-steps-float",
        lambda c: MultiStepDataset(c.data, steps=3.0),
        TypeError,
        r"steps must be an integer in \[1, 3\], got 3\.0",
    ),
    case(
        "multi-step-steps-text",
        lambda c: MultiStepDataset(c.data, steps="3"),
        TypeError,
        r"steps must be an integer in \[1, 3\], got '3'",
    ),
    case(
        "multi-step-steps-numpy-bool",
        lambda c: MultiStepDataset(c.data, steps=np.True_),
        TypeError,
        r"steps must be an integer in \[1, 3\], got np.True_",
    ),
    case(
        "rollout-k-zero",
        lambda c: RolloutDataset(c.data, k=0),
        ValueError,
        r"k must be an integer >= 1",
    ),
    case(
        "rollout-k-beyond-the-times",
        lambda c: RolloutDataset(c.data, k=4),
        ValueError,
        r"k \+ 1 must not exceed the dataset's 4 times",
    ),
    case(
        "forecast-t-in-zero",
        lambda c: ForecastDataset(c.data, t_in=0),
        ValueError,
        r"t_in must be an integer >= 1",
    ),
    case(
        "forecast-window-beyond-the-times",
        lambda c: ForecastDataset(c.data, t_in=3, t_out=3),
        ValueError,
        r"t_in \+ t_out must not exceed the dataset's 4 times",
    ),
    case(
        "rollout-index-out-of-range",
        lambda c: RolloutDataset(c.data)[100],
        IndexError,
        r"index 100 out of range",
    ),
    case("generate-n-zero", lambda c: generate(c, n=0), ValueError, r"n must be an integer >= 1"),
    case("generate-n-float", lambda c: generate(c, n=2.0), ValueError, r"n must be an integer"),
    case(
        "generate-seed-negative",
        lambda c: generate(c, seed=-1),
        ValueError,
        r"seed must be a non-negative integer",
    ),
    case(
        "generate-seed-beyond-int64",
        lambda c: generate(c, seed=2**63),
        ValueError,
        r"seed must be a non-negative integer below 2\*\*63",
    ),
    case(
        "generate-shard-out-of-range",
        lambda c: generate(c, shard=2, num_shards=2),
        ValueError,
        r"shard must be an integer in \[0, 2\)",
    ),
    case(
        "generate-more-shards-than-samples",
        lambda c: generate(c, num_shards=3),
        ValueError,
        r"num_shards must not exceed n=2",
    ),
    case(
        "generate-chunk-zero",
        lambda c: generate(c, chunk=0),
        ValueError,
        r"chunk must be an integer >= 1",
    ),
    case(
        "generate-recipe-unknown",
        lambda c: generate(c, pde="toy2"),
        ValueError,
        r"unknown PDE 'toy2'",
    ),
    case(
        "generate-option-unknown",
        lambda c: generate(c, nz=3),
        ValueError,
        r"unknown option\(s\) \['nz'\]",
    ),
    case(
        "generate-out-folder-missing",
        lambda c: generate(c, out=c.root / "no" / "x.h5"),
        ValueError,
        r"out: folder .* does not exist",
    ),
    case(
        "generate-out-exists",
        lambda c: generate(c, out=c.dataset),
        FileExistsError,
        r"out: .* already exists",
    ),
    case(
        "generate-device-unknown",
        lambda c: generate(c, device="bogus"),
        ValueError,
        r"device must be 'cpu', 'cuda' or 'cuda:N', got 'bogus'",
    ),
    case(
        "generate-device-cuda-absent",
        lambda c: generate(c, device="cuda:7"),
        ValueError,
        r"device 'cuda:7' asked for",
    ),
    case(
        "generate-out-is-a-folder",
        lambda c: generate(c, out=c.fresh()),
        ValueError,
        r"out: .* is a folder",
    ),
    case(
        "generate-heat-nx-negative",
        lambda c: generate(c, pde="heat", nx=-5),
        ValueError,
        r"nx must be an integer >= 4",
    ),
    case(
        "generate-wave-nx-two",
        lambda c: generate(c, pde="wave", nx=2),
        ValueError,
        r"nx must be an integer >= 4",
    ),
    case(
        "generate-stokes-nt-one",
        lambda c: generate(c, pde="stokes", nt=1),
        ValueError,
        r"nt must be an integer >= 2",
    ),
    case(
        "generate-heat-bc-unknown",
        lambda c: generate(c, pde="heat", bc="robin"),
        ValueError,
        r"bc must be one of",
    ),
    case(
        "merge-no-shards",
        lambda c: merge_shards([], c.fresh() / "m.h5"),
        ValueError,
        r"paths|shards",
    ),
    case(
        "merge-shard-missing",
        lambda c: merge_shards([c.root / "gone.h5"], c.fresh() / "m.h5"),
        FileNotFoundError,
        r"shard",
    ),
    case(
        "merge-shard-not-hdf5",
        lambda c: check_shards([c.text]),
        DatasetFileError,
        r"shard: .* is not a readable HDF5 file",
    ),
    case(
        "convert-source-missing",
        lambda c: convert(c.root / "gone.h5", c.fresh() / "o.h5"),
        FileNotFoundError,
        r"source: no file",
    ),
    case(
        "convert-source-not-a-dataset",
        lambda c: convert(c.text, c.fresh() / "o.h5"),
        DatasetFileError,
        r"source: .*notes.txt' is not a readable HDF5 file",
    ),
    case(
        "convert-physml-without-to",
        lambda c: convert(c.dataset, c.fresh() / "o.h5"),
        ValueError,
        r"to: name the output format",
    ),
    case(
        "convert-to-unknown",
        lambda c: convert(c.dataset, c.fresh() / "o.h5", to="netcdf"),
        ValueError,
        r"to must be one of",
    ),
    case(
        "convert-layout-without-pdebench",
        lambda c: convert(c.dataset, c.fresh() / "o.h5", to="well", layout="ns"),
        ValueError,
        r"layout: only for to='pdebench'",
    ),
    case(
        "convert-field-for-physml-source",
        lambda c: convert(c.dataset, c.fresh() / "o.h5", to="well", field="u"),
        ValueError,
        r"field: only for a The Well source",
    ),
    case(
        "convert-onto-itself",
        lambda c: convert(c.dataset, c.dataset, to="well"),
        ValueError,
        r"out: .* is the source itself",
    ),
    case(
        "grid-points-2d-t",
        lambda c: grid_points(torch.zeros(2, 2), torch.zeros(3)),
        ValueError,
        r"t must",
    ),
    case(
        "point-sets-too-many-context",
        lambda c: PointSets(c.data, n_context=1000),
        ValueError,
        r"n_context",
    ),
    case(
        "point-sets-index-not-an-integer",
        lambda c: PointSets(c.data, n_context=4, context_times=2, n_target=4)[1.0],
        TypeError,
        r"index must be an integer, got 1.0",
    ),
    case(
        "point-sets-index-out-of-range",
        lambda c: PointSets(c.data, n_context=4, context_times=2, n_target=4)[10**6],
        IndexError,
        r"index 1000000 out of range for \d+ point sets",
    ),
    case(
        "point-sets-views-zero",
        lambda c: PointSets(c.data, n_context=4, context_times=2, n_target=4, views=0),
        ValueError,
        r"views must be an integer >= 1",
    ),
    case("gpme-sampler-case-unknown", lambda c: gpme_sampler("burgers", 2), ValueError, r"case"),
    case(
        "gpme-sampler-front-leaves-before-t-grid-ends",
        lambda c: gpme_sampler("pme", 1, t_grid=torch.linspace(0, 2, 11), param_range=(2.0, 2.0)),
        ValueError,
        r"t_grid ends at 2: t_end must be <= 1",
    ),
    case(
        "true-mass-case-unknown",
        lambda c: true_mass("PME", torch.linspace(0, 1, 3), torch.tensor([0.5])),
        ValueError,
        r"case must be one of \['diffusion', 'pme', 'stefan'\], got 'PME'",
    ),
    case(
        "nbody-frames-zero",
        lambda c: nbody.nbody_digits(1, frames=0, size=16),
        ValueError,
        r"frames must be an integer >= 1",
    ),
    case(
        "nbody-sprite-too-large",
        lambda c: nbody.nbody_digits(1, size=16, sprite=16),
        ValueError,
        r"sprite must be smaller than size=16",
    ),
    case(
        "nbody-speed-reversed",
        lambda c: nbody.nbody_digits(1, size=16, speed=(2.0, 1.0)),
        ValueError,
        r"speed must be \(min, max\) with min <= max",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), DATA_CASES)
def test_data_refuses_bad_input(call, error, match, context):
    check(call, error, match, context)


# ------------------------------------------------------------------------------- constraints

CONSTRAINT_CASES = [
    case(
        "constrain-model-not-a-module",
        lambda c: constrain(lambda x: x, mass(1.0)),
        TypeError,
        r"model must be an nn.Module",
    ),
    case(
        "constrain-no-constraints",
        lambda c: constrain(nn.Identity()),
        ConstraintError,
        r"constrain needs at least one constraint",
    ),
    case(
        "constrain-bare-pdes-condition",
        lambda c: constrain(nn.Identity(), Dirichlet()),
        TypeError,
        r"constraints must be Constraint objects",
    ),
    case(
        "constrain-kernel-unknown",
        lambda c: constrain(nn.Identity(), mass(1.0), kernel="maybe"),
        (ValueError, TypeError),
        r"kernel",
    ),
    case(
        "constrain-kernel-required-on-mlp",
        lambda c: constrain(nn.Linear(9, 9), BoundaryCondition(Dirichlet(), G9), kernel=True),
        ConstraintError,
        r"Linear cannot take BoundaryCondition at the operator seam",
    ),
    case(
        "constrain-pivot-floor-negative",
        lambda c: constrain(nn.Identity(), mass(1.0), pivot_floor=-1.0),
        (ValueError, ConstraintError),
        r"pivot_floor",
    ),
    case(
        "linear-g-one-axis",
        lambda c: LinearConstraint(torch.ones(5), 1.0),
        ConstraintError,
        r"G must be a tensor of shape \(k, n\)",
    ),
    case(
        "linear-g-nan",
        lambda c: LinearConstraint(torch.full((1, 5), NAN), 1.0),
        ConstraintError,
        r"G contains NaN",
    ),
    case(
        "linear-g-zero-row",
        lambda c: LinearConstraint(torch.zeros(1, 5), 1.0),
        ConstraintError,
        r"G has zero rows \[0\]",
    ),
    case(
        "linear-g-dependent-rows",
        lambda c: LinearConstraint(torch.ones(2, 5), [1.0, 1.0]),
        ConstraintError,
        r"G's 2 rows are linearly dependent",
    ),
    case(
        "linear-g-no-rows",
        lambda c: LinearConstraint(torch.zeros(0, 5), torch.zeros(0)),
        ConstraintError,
        r"G must have at least one row and one column, got shape \(0, 5\)",
    ),
    case(
        "linear-g-no-columns",
        lambda c: LinearConstraint(torch.zeros(1, 0), [1.0]),
        ConstraintError,
        r"G must have at least one row and one column, got shape \(1, 0\)",
    ),
    case(
        "linear-b-wrong-length",
        lambda c: LinearConstraint(torch.eye(2, 5), [1.0, 2.0, 3.0]),
        ConstraintError,
        r"b must have shape \(\.\.\., 2\)",
    ),
    case(
        "linear-b-nan",
        lambda c: LinearConstraint(torch.ones(1, 5), [NAN]),
        ConstraintError,
        r"b contains NaN",
    ),
    case(
        "linear-noise-negative",
        lambda c: LinearConstraint(torch.ones(1, 5), [1.0], noise=-1.0),
        ConstraintError,
        r"noise must be a finite number >= 0",
    ),
    case(
        "linear-noise-not-a-number",
        lambda c: LinearConstraint(torch.ones(1, 5), [1.0], noise="a"),
        ConstraintError,
        r"noise must be a non-negative number, got 'a'",
    ),
    case(
        "linear-noise-square-overflows",
        lambda c: mass_conservation(Grid1D(5), 0.5, noise=1e155),
        ConstraintError,
        r"noise must be at most 1\.341e\+154 \(its square, the variance σ², must be a finite "
        r"float64\), got 1e\+155",
    ),
    case(
        "linear-projection-unknown",
        lambda c: LinearConstraint(torch.ones(1, 5), [1.0], projection="oblique"),
        ConstraintError,
        r"projection must be",
    ),
    case(
        "linear-space-mismatch",
        lambda c: LinearConstraint(torch.ones(1, 6), [1.0], space=(2, 2)),
        ConstraintError,
        r"space \(2, 2\) must hold G's 6 columns",
    ),
    case(
        "linear-channels-negative",
        lambda c: LinearConstraint(torch.ones(1, 5), [1.0], channels=(-1,)),
        ConstraintError,
        r"^channels entries must be >= 0, got \(-1,\)",
    ),
    case(
        "linear-jitter-zero",
        lambda c: LinearConstraint(torch.ones(1, 5), [1.0], jitter=0.0),
        ConstraintError,
        r"jitter must be a finite number > 0",
    ),
    case(
        "linear-jitter-not-a-number",
        lambda c: LinearConstraint(torch.ones(1, 5), [1.0], jitter="a"),
        ConstraintError,
        r"jitter must be a positive number, got 'a'",
    ),
    case(
        "linear-jitter-none",
        lambda c: LinearConstraint(torch.ones(1, 5), [1.0], jitter=None),
        ConstraintError,
        r"jitter must be a positive number, got None",
    ),
    case(
        "linear-output-wrong-grid",
        lambda c: constrain(nn.Identity(), mass(1.0))(torch.zeros(2, 6)),
        ConstraintError,
        r"output of shape \(2, 6\) does not end in",
    ),
    case(
        "linear-output-zero-dim",
        lambda c: constrain(nn.Identity(), mass(1.0))(torch.tensor(1.0)),
        ConstraintError,
        r"output of shape \(\) does not end in the constraint's grid \(5,\): it has no axes "
        r"but G has 5 columns",
    ),
    case(
        "nonnegative-keep-output-zero-dim",
        lambda c: constrain(nn.Identity(), NonNegative(keep=mass(1.0)))(torch.tensor(-1.0)),
        ConstraintError,
        r"output of shape \(\) does not end in the constraint's grid \(5,\): it has no axes",
    ),
    case(
        "linear-target-does-not-broadcast",
        lambda c: constrain(nn.Identity(), mass([1.0, 2.0, 3.0]))(torch.zeros(2, 5)),
        ConstraintError,
        r"total_mass of shape \(3,\) does not fit",
    ),
    case(
        "linear-output-nan",
        lambda c: constrain(nn.Identity(), mass(1.0))(torch.full((2, 5), NAN)),
        ConstraintError,
        r"output contains NaN or inf",
    ),
    case(
        "linear-channels-absent",
        lambda c: constrain(
            nn.Identity(), LinearConstraint(torch.ones(1, 5), [1.0], channels=(3,))
        )(torch.zeros(2, 2, 5)),
        ConstraintError,
        r"channels \(3,\) do not exist in output",
    ),
    case(
        "linear-check-psd",
        lambda c: constrain(
            nn.Identity(), LinearConstraint(torch.ones(1, 4), [1.0], check_psd=True)
        )(gaussian(cov=not_psd())),
        ConstraintError,
        r"cov is not positive semi-definite",
    ),
    case(
        "linear-cov-not-psd-negative-variance",
        lambda c: constrain(
            nn.Identity(), LinearConstraint(torch.tensor([[1.0, 1.0, 0.0, 0.0]]), [1.0])
        )(gaussian(cov=not_psd())),
        ConstraintError,
        r"cov is not positive semi-definite",
    ),
    case(
        "linear-gaussian-with-channels",
        lambda c: constrain(
            nn.Identity(), LinearConstraint(torch.ones(1, 4), [1.0], channels=(0,))
        )(gaussian()),
        ConstraintError,
        r"channels=\(0,\) is not supported for a Gaussian output",
    ),
    case(
        "gaussian-mean-not-tensor",
        lambda c: Gaussian([0.0, 1.0], torch.ones(2)),
        TypeError,
        r"mean must be a tensor",
    ),
    case(
        "gaussian-cov-wrong-shape",
        lambda c: Gaussian(torch.zeros(3), torch.ones(4)),
        ValueError,
        r"cov must have shape \(3,\) \(diagonal\) or \(3, 3\) \(full\)",
    ),
    case(
        "gaussian-cov-nan",
        lambda c: Gaussian(torch.zeros(3), torch.full((3,), NAN)),
        ValueError,
        r"cov contains NaN",
    ),
    case(
        "gaussian-low-rank-cov-nan",
        lambda c: Gaussian(
            torch.zeros(3),
            physml.LowRankCovariance(torch.full((3,), NAN), torch.zeros(3, 1)),
        ),
        ValueError,
        r"cov contains NaN",
    ),
    case(
        "gaussian-low-rank-factor-wrong-points",
        lambda c: Gaussian(
            torch.zeros(5), physml.LowRankCovariance(torch.ones(5), torch.ones(6, 2))
        ),
        ValueError,
        r"cov.factor must have shape \(5, m\) to match the mean, got \(6, 2\)",
    ),
    case(
        "gaussian-low-rank-factor-wrong-slices",
        lambda c: Gaussian(
            torch.zeros(3, 5), physml.LowRankCovariance(torch.ones(3, 5), torch.zeros(2, 5, 1))
        ),
        ValueError,
        r"cov.factor must have shape \(3, 5, m\) to match the mean, got \(2, 5, 1\)",
    ),
    case(
        "gaussian-low-rank-base-wrong-points",
        lambda c: Gaussian(
            torch.zeros(5), physml.LowRankCovariance(torch.ones(6), torch.ones(5, 2))
        ),
        ValueError,
        r"cov.base must have shape \(5,\) \(diagonal\) or \(5, 5\) \(full\) to match the "
        r"mean, got \(6,\)",
    ),
    case(
        "gaussian-low-rank-base-not-a-tensor",
        lambda c: Gaussian(torch.zeros(5), physml.LowRankCovariance(1.0, torch.ones(5, 2))),
        TypeError,
        r"cov.base must be a tensor, got float",
    ),
    case(
        "gaussian-cov-complex",
        lambda c: Gaussian(torch.zeros(3), torch.ones(3, dtype=torch.complex64)),
        TypeError,
        r"cov must hold real numbers, got dtype torch.complex64",
    ),
    case(
        "constrain-integer-output",
        lambda c: constrain(nn.Identity(), mass(1.0))(torch.ones(2, 5, dtype=torch.long)),
        TypeError,
        r"output must hold real floating-point values to be constrained, got dtype torch.int64",
    ),
    case(
        "linear-target-function-returns-none",
        lambda c: constrain(nn.Identity(), LinearConstraint(torch.ones(1, 5), lambda x: None))(
            torch.zeros(2, 5)
        ),
        ConstraintError,
        r"b \(the target function's result\) must be a tensor .* got NoneType",
    ),
    case(
        "nonnegative-tolerance-not-a-number",
        lambda c: NonNegative("a"),
        TypeError,
        r"tolerance must be a number, got 'a'",
    ),
    case(
        "nonnegative-jitter-not-a-number",
        lambda c: NonNegative(jitter=None),
        TypeError,
        r"jitter must be a number, got None",
    ),
    case(
        "gaussian-negative-variance",
        lambda c: Gaussian(torch.zeros(3), -torch.ones(3)),
        ValueError,
        r"cov: a diagonal covariance must be >= 0",
    ),
    case(
        "gaussian-cov-list",
        lambda c: Gaussian(torch.zeros(3), [1.0, 1.0, 1.0]),
        TypeError,
        r"cov must be a tensor or LowRankCovariance",
    ),
    case(
        "gaussian-mean-inf",
        lambda c: Gaussian(torch.tensor([INF]), torch.ones(1)),
        ValueError,
        r"mean contains NaN or inf",
    ),
    case(
        "ensemble-one-member",
        lambda c: Ensemble(torch.zeros(1, 5)),
        ValueError,
        r"an Ensemble needs at least 2 members",
    ),
    case(
        "ensemble-one-axis",
        lambda c: Ensemble(torch.zeros(5)),
        TypeError,
        r"samples must be a tensor of shape \(member, \.\.\., n\)",
    ),
    case(
        "ensemble-nan",
        lambda c: Ensemble(torch.full((3, 5), NAN)),
        ValueError,
        r"samples contains NaN",
    ),
    case(
        "mass-total-nan",
        lambda c: mass_conservation(Grid1D(5), NAN),
        ConstraintError,
        r"total_mass contains NaN",
    ),
    case(
        "linear-g-complex",
        lambda c: LinearConstraint(torch.ones(1, 3, dtype=torch.complex64), [1.0]),
        ConstraintError,
        r"G must hold real numbers",
    ),
    case(
        "linear-b-complex",
        lambda c: LinearConstraint(torch.ones(1, 3), [1 + 1j]),
        ConstraintError,
        r"b must hold real numbers",
    ),
    case(
        "gaussian-mean-integer",
        lambda c: Gaussian(torch.zeros(5, dtype=torch.long), torch.ones(5)),
        TypeError,
        r"mean must hold real floating-point values",
    ),
    case(
        "ensemble-samples-integer",
        lambda c: Ensemble(torch.zeros(3, 5, dtype=torch.long)),
        TypeError,
        r"samples must hold real floating-point values",
    ),
    case(
        "mass-grid-not-a-grid",
        lambda c: mass_conservation(5, 1.0),
        ConstraintError,
        r"grid must be a pdes.Grid1D or Grid2D",
    ),
    case(
        "mass-layout-unknown",
        lambda c: mass_conservation(Grid1D(5), 1.0, layout="xt"),
        ConstraintError,
        r"layout must be one of",
    ),
    case(
        "mass-layout-of-other-grid",
        lambda c: mass_conservation(Grid1D(5), 1.0, layout="bchw"),
        ConstraintError,
        r"layout must be one of \('tx', 'bcx', 'btcx'\) for a Grid1D",
    ),
    case(
        "mass-four-axes-without-layout",
        lambda c: constrain(nn.Identity(), mass(1.0))(torch.zeros(1, 1, 1, 5)),
        ConstraintError,
        r"output has 4 axes .*layout='btcx'",
    ),
    case(
        "mass-2d-grid-on-1d-field",
        lambda c: constrain(nn.Identity(), mass_conservation(square(5), 1.0))(torch.zeros(2, 5)),
        ConstraintError,
        r"does not end in the constraint",
    ),
    case(
        "cumulative-inflow-decreasing-times",
        lambda c: cumulative_inflow(torch.tensor([0.0, 2.0, 1.0]), torch.zeros(3)),
        ConstraintError,
        r"times must be a 1-D sequence of finite, non-decreasing times",
    ),
    case(
        "boundary-dirichlet-nan-in-use",
        lambda c: constrain(nn.Identity(), BoundaryCondition(Dirichlet(NAN, 0.0), G9))(
            torch.zeros(2, 1, 9)
        ),
        ValueError,
        r"Dirichlet.left is NaN",
    ),
    case(
        "constrained-time-nan",
        lambda c: constrain(nn.Identity(), BoundaryCondition(Dirichlet(lambda t: t, 0.0), G9))(
            torch.zeros(2, 1, 9), time=NAN
        ),
        ValueError,
        r"time must be a finite number",
    ),
    case(
        "cumulative-inflow-infinite-rate",
        lambda c: cumulative_inflow(torch.linspace(0, 1, 4), 1 / torch.linspace(0, 1, 4).sqrt()),
        ConstraintError,
        r"inflow_rate must be finite at every time.*start after 0",
    ),
    case(
        "cumulative-inflow-nan-rate",
        lambda c: cumulative_inflow(torch.linspace(0, 1, 3), torch.tensor([0.0, NAN, 1.0])),
        ConstraintError,
        r"inflow_rate must be finite",
    ),
    case(
        "cumulative-inflow-scalar-rate",
        lambda c: cumulative_inflow(torch.linspace(0, 1, 3), torch.tensor(1.0)),
        ConstraintError,
        r"inflow_rate must have 3 entries on its last axis",
    ),
    case(
        "cumulative-inflow-shapes",
        lambda c: cumulative_inflow(torch.linspace(0, 1, 4), torch.zeros(2, 3)),
        ConstraintError,
        r"inflow_rate",
    ),
    case(
        "boundary-bc-name",
        lambda c: BoundaryCondition("dirichlet", Grid1D(9)),
        TypeError,
        r"bc must be a pdes Dirichlet, Neumann or Periodic",
    ),
    case(
        "boundary-grid-2d",
        lambda c: BoundaryCondition(Dirichlet(), square()),
        TypeError,
        r"grid must be a pdes.Grid1D",
    ),
    case(
        "boundary-axis-non-negative",
        lambda c: BoundaryCondition(Dirichlet(), G9, axis=1),
        ConstraintError,
        r"axis must be a negative int",
    ),
    case(
        "boundary-side-unknown",
        lambda c: BoundaryCondition(Dirichlet(), G9, side="top"),
        ValueError,
        r"side must be one of",
    ),
    case(
        "boundary-periodic-one-side",
        lambda c: BoundaryCondition(Periodic(), PERIODIC8, side="left"),
        ConstraintError,
        r"side must be 'both'",
    ),
    case(
        "boundary-dirichlet-on-periodic-grid",
        lambda c: BoundaryCondition(Dirichlet(), PERIODIC8),
        ConstraintError,
        r"grid must be a non-periodic node grid",
    ),
    case(
        "boundary-cell-grid",
        lambda c: BoundaryCondition(Dirichlet(), Grid1D(9, kind="cell")),
        ConstraintError,
        r"grid must be a node grid",
    ),
    case(
        "boundary-neumann-three-nodes",
        lambda c: BoundaryCondition(Neumann(), Grid1D(3)),
        ConstraintError,
        r"grid must have at least 4 nodes",
    ),
    case(
        "boundary-time-nan",
        lambda c: BoundaryCondition(Dirichlet(), G9, time=NAN),
        ValueError,
        r"time must be a finite number",
    ),
    case(
        "boundary-time-axis-equals-axis",
        lambda c: BoundaryCondition(Dirichlet(), G9, time=[0.0, 1.0], time_axis=-1),
        ConstraintError,
        r"time_axis must differ from axis",
    ),
    case(
        "boundary-output-wrong-grid",
        lambda c: constrain(nn.Identity(), BoundaryCondition(Dirichlet(), G9))(
            torch.zeros(2, 1, 8)
        ),
        ConstraintError,
        r"output has 8 points along axis -1 but the grid has 9",
    ),
    case(
        "boundary-other-grid-per-call",
        lambda c: constrain(nn.Identity(), BoundaryCondition(Dirichlet(), G9))(
            torch.zeros(2, 1, 9), constraints=[BoundaryCondition(Neumann(), G9)]
        ),
        ConstraintError,
        r"only values may differ",
    ),
    case(
        "nonnegative-tolerance-negative",
        lambda c: NonNegative(-1.0),
        ConstraintError,
        r"tolerance must be a finite number >= 0, got -1",
    ),
    case(
        "nonnegative-tolerance-infinite",  # every value would count as non-negative
        lambda c: NonNegative(INF),
        ConstraintError,
        r"tolerance must be a finite number >= 0, got inf",
    ),
    case(
        "linear-space-float",  # was truncated to (2, 2)
        lambda c: LinearConstraint(torch.ones(1, 4), [1.0], space=(2.7, 2)),
        ConstraintError,
        r"^space must hold integers, got \(2.7, 2\)",
    ),
    case(
        "linear-space-negative",  # (-2) · (-2) = 4 columns
        lambda c: LinearConstraint(torch.ones(1, 4), [1.0], space=(-2, -2)),
        ConstraintError,
        r"^space entries must be >= 1, got \(-2, -2\)",
    ),
    case(
        "linear-channels-float",  # was truncated to (1,)
        lambda c: LinearConstraint(torch.ones(1, 4), [1.0], channels=(1.9,)),
        ConstraintError,
        r"^channels must hold integers, got \(1.9,\)",
    ),
    case(
        "linear-check-psd-text",  # "no" is truthy
        lambda c: LinearConstraint(torch.ones(1, 4), [1.0], check_psd="no"),
        ConstraintError,
        r"^check_psd must be True or False, got 'no'",
    ),
    case(
        "linear-layout-hint-not-text",
        lambda c: LinearConstraint(torch.ones(1, 4), [1.0], layout_hint=3),
        ConstraintError,
        r"^layout_hint must be a string, got 3",
    ),
    case(
        "linear-ndims-fewer-than-space",
        lambda c: LinearConstraint(torch.ones(1, 4), [1.0], space=(2, 2), ndims=(1, 3)),
        ConstraintError,
        r"^ndims entries must be >= 2, got \(1, 3\)",
    ),
    case(
        "linear-ndims-zero",
        lambda c: LinearConstraint(torch.ones(1, 4), [1.0], ndims=(0,)),
        ConstraintError,
        r"^ndims entries must be >= 1, got \(0,\)",
    ),
    case(
        "nonnegative-tensor-output",
        lambda c: constrain(nn.Identity(), NonNegative())(torch.zeros(2, 5)),
        ConstraintError,
        r"NonNegative on a tensor needs keep=",
    ),
    case(
        "nonnegative-infeasible-target-low-rank",
        lambda c: infeasible_nonnegative(9, False),
        ConstraintError,
        r"non-negativity is infeasible",
    ),
    case(
        "nonnegative-infeasible-target-dense",
        lambda c: infeasible_nonnegative(65, True),
        ConstraintError,
        r"non-negativity is infeasible",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CONSTRAINT_CASES)
def test_constraints_refuse_bad_input(call, error, match, context):
    check(call, error, match, context)


# ------------------------------------------------------------------------------------ models

MODEL_CASES = [
    case(
        "gp-iterations-negative",
        lambda c: ExactGPSurrogate(iterations=-1),
        ValueError,
        r"iterations must be an integer >= 0",
    ),
    case(
        "gp-lr-zero",
        lambda c: ExactGPSurrogate(lr=0.0),
        ValueError,
        r"lr must be a finite number > 0",
    ),
    case(
        "gp-optimizer-unknown",
        lambda c: ExactGPSurrogate(optimizer="sgd"),
        ValueError,
        r"optimizer must be one of",
    ),
    case(
        "gp-seed-float", lambda c: ExactGPSurrogate(seed=1.5), TypeError, r"seed must be an integer"
    ),
    case(
        "gp-context-one-point",
        lambda c: ExactGPSurrogate().fit(torch.zeros(1, 2), torch.zeros(1)),
        ValueError,
        r"context_x must hold at least 2 points",
    ),
    case(
        "gp-context-y-count",
        lambda c: ExactGPSurrogate().fit(torch.zeros(4, 2), torch.zeros(3)),
        ValueError,
        r"context_y must have shape \(4,\)",
    ),
    case(
        "gp-context-x-three-columns",
        lambda c: ExactGPSurrogate().fit(torch.zeros(4, 3), torch.zeros(4)),
        ValueError,
        r"context_x must have shape \(Nc, 2\)",
    ),
    case(
        "gp-context-y-nan",
        lambda c: ExactGPSurrogate().fit(torch.rand(4, 2), torch.full((4,), NAN)),
        ValueError,
        r"context_y contains NaN",
    ),
    case(
        "gp-predict-before-fit",
        lambda c: ExactGPSurrogate().predict(torch.zeros(2), torch.zeros(2)),
        (RuntimeError, ValueError),
        r"fit",
    ),
    case(
        "gp-covariance-unknown",
        lambda c: fitted_gp().predict(torch.zeros(2), torch.zeros(2), covariance="full"),
        ValueError,
        r"covariance must be one of",
    ),
    case(
        "gp-target-x-nan",
        lambda c: fitted_gp().predict_points(torch.full((2, 2), NAN)),
        ValueError,
        r"target_x contains NaN",
    ),
    case(
        "ensemble-one-member-model",
        lambda c: DeepEnsemble(3, members=1),
        ValueError,
        r"members must be an integer >= 2",
    ),
    case(
        "ensemble-min-variance-zero",
        lambda c: DeepEnsemble(3, min_variance=0.0),
        ValueError,
        r"min_variance must be a finite number > 0",
    ),
    case(
        "ensemble-min-variance-inf",
        lambda c: DeepEnsemble(3, min_variance=float("inf")),
        ValueError,
        r"min_variance must be a finite number > 0, got inf",
    ),
    case(
        "ensemble-sample-seed-not-an-integer",
        lambda c: DeepEnsemble(3).sample(torch.zeros(2, 3), 2, seed="a"),
        TypeError,
        r"seed must be an integer >= 0, got 'a'",
    ),
    case(
        "ensemble-kind-unknown",
        lambda c: DeepEnsemble(3).predict(torch.zeros(2, 3), kind="median"),
        ValueError,
        r"kind must be one of",
    ),
    case(
        "anp-hidden-not-divisible",
        lambda c: AttentiveNeuralProcess(hidden=10, heads=3),
        ValueError,
        r"hidden must be divisible by heads",
    ),
    case(
        "anp-input-range-reversed",
        lambda c: AttentiveNeuralProcess(input_range=[(1.0, 0.0), (0.0, 1.0)]),
        ValueError,
        r"input_range needs finite pairs",
    ),
    case(
        "anp-min-std-zero",
        lambda c: AttentiveNeuralProcess(min_std=0.0),
        ValueError,
        r"min_std must be a finite number > 0",
    ),
    case(
        "anp-samples-negative",
        lambda c: AttentiveNeuralProcess(hidden=8, latent=8)(
            torch.zeros(1, 3, 2), torch.zeros(1, 3), torch.zeros(1, 2, 2), samples=-1
        ),
        ValueError,
        r"samples must be an integer >= 0",
    ),
    case(
        "anp-target-three-coordinates",
        lambda c: AttentiveNeuralProcess(hidden=8, latent=8)(
            torch.zeros(1, 3, 2), torch.zeros(1, 3), torch.zeros(1, 2, 3)
        ),
        ValueError,
        r"context_x and target_x must have 2 coordinates",
    ),
    case(
        "ensemble-predict-before-fit",
        lambda c: DeepEnsemble(3).predict(torch.zeros(2, 3)),
        RuntimeError,
        r"this DeepEnsemble is not fitted yet",
    ),
    case(
        "anp-context-y-nan",
        lambda c: AttentiveNeuralProcess(hidden=8, latent=8)(
            torch.zeros(1, 3, 2), torch.full((1, 3), NAN), torch.zeros(1, 2, 2)
        ),
        ValueError,
        r"context_y contains NaN",
    ),
    case(
        "earthformer-target-other-frame",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 4, 4)),
        ValueError,
        r"target_shape must have the input's \(H, W\)",
    ),
    case(
        "earthformer-shape-three-numbers",
        lambda c: Earthformer((2, 8, 8), (2, 1, 8, 8)),
        ValueError,
        r"input_shape must be a sequence of 4 integers \(T, C, H, W\), got \(2, 8, 8\)",
    ),
    case(
        "earthformer-heads-zero",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=0),
        ValueError,
        r"num_heads must be an integer >= 1, got 0",
    ),
    case(
        "earthformer-mlp-ratio-zero",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, mlp_ratio=0),
        ValueError,
        r"mlp_ratio must be a finite number > 0",
    ),
    case(
        "earthformer-pattern-unknown",
        lambda c: Earthformer(
            (2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, depth=(1,), pattern="diagonal"
        ),
        ValueError,
        r"pattern must be one of",
    ),
    case(
        "earthformer-padding-unknown",
        lambda c: Earthformer(
            (2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, depth=(1,), padding="reflect"
        ),
        ValueError,
        r"padding must be one of",
    ),
    case(
        "earthformer-downsample-zero",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), downsample=0),
        ValueError,
        r"downsample must be an integer >= 1, got 0",
    ),
    case(
        "earthformer-heads-not-dividing",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), base_units=6, num_heads=4),
        ValueError,
        r"base_units must be divisible by num_heads",
    ),
    case(
        "earthformer-frame-not-divisible",
        lambda c: Earthformer((2, 1, 6, 6), (2, 1, 6, 6), downsample=4),
        ValueError,
        r"input_shape \(H, W\) = \(6, 6\) must be divisible",
    ),
    case(
        "earthformer-depth-an-int",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, depth=2),
        TypeError,
        r"depth must be a sequence of block counts, one per level .*got 2",
    ),
    case(
        "earthformer-cross-cuboid-three-entries",
        lambda c: Earthformer(
            (2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, cross_cuboid_hw=(2, 2, 2)
        ),
        ValueError,
        r"^cross_cuboid_hw must be a sequence of 2 integers \(H, W\), got \(2, 2, 2\)",
    ),
    case(
        "earthformer-cross-cuboid-zero",
        lambda c: Earthformer(
            (2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, cross_cuboid_hw=(0, 2)
        ),
        ValueError,
        r"^cross_cuboid_hw entries must be >= 1, got \(0, 2\)",
    ),
    case(
        "earthformer-cross-cuboid-float",
        lambda c: Earthformer(
            (2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, cross_cuboid_hw=(2.0, 2)
        ),
        TypeError,
        r"^cross_cuboid_hw must hold integers, got \(2.0, 2\)",
    ),
    case(
        "earthformer-ffn-kernel-even",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, ffn_kernel=2),
        ValueError,
        r"^ffn_kernel must be 0 or odd and positive, got 2",
    ),
    case(
        "earthformer-ffn-kernel-bool",
        lambda c: Earthformer(
            (2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, ffn_kernel=True
        ),
        TypeError,
        r"^ffn_kernel must be an int, got True",
    ),
    case(
        "cuboid-block-global-vectors-unexpected",
        lambda c: CuboidTransformerBlock(8, 2, (3, 4, 4), global_vectors=0)(
            torch.randn(1, 3, 4, 4, 8), torch.randn(1, 2, 8)
        ),
        ValueError,
        r"^global_vectors given to a block built with global_vectors=0",
    ),
    case(
        "forecaster-model-config-a-list",
        lambda c: train_forecaster(
            UNet(2, 2), *torch.rand(2, 2, 2, 1, 8, 8), max_steps=1, model_config=["unet"]
        ),
        TypeError,
        r"^model_config must be a dict of the model's settings, got list",
    ),
    case(
        "forecaster-model-config-not-json",
        lambda c: train_forecaster(
            UNet(2, 2), *torch.rand(2, 2, 2, 1, 8, 8), max_steps=1, model_config={"act": nn.GELU}
        ),
        TypeError,
        r"^model_config must hold JSON values .*GELU",
    ),
    case(
        "forecaster-loss-name-for-a-named-loss",
        lambda c: train_forecaster(
            UNet(2, 2), *torch.rand(2, 2, 2, 1, 8, 8), max_steps=1, loss="l1", loss_name="mine"
        ),
        ValueError,
        r"^loss_name names a callable loss; loss is already the name 'l1', got loss_name='mine'",
    ),
    case(
        "forecaster-loss-name-empty",
        lambda c: train_forecaster(
            UNet(2, 2), *torch.rand(2, 2, 2, 1, 8, 8), max_steps=1, loss=torch.dist, loss_name=""
        ),
        TypeError,
        r"^loss_name must be a non-empty string, got ''",
    ),
    case(
        "earthformer-input-channels-first",
        lambda c: earthformer()(torch.zeros(1, 1, 2, 8, 8)),
        ValueError,
        r"x must have shape \(B, T, C, H, W\)",
    ),
    case(
        "earthformer-input-integer",
        lambda c: earthformer()(torch.zeros(1, 2, 1, 8, 8, dtype=torch.long)),
        TypeError,
        r"x must be a floating tensor",
    ),
    case(
        "earthformer-input-nan",
        lambda c: earthformer()(torch.full((1, 2, 1, 8, 8), NAN)),
        ValueError,
        r"x contains NaN or inf",
    ),
    case(
        "fno-input-nan",
        lambda c: fast_fno(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4)(
            torch.full((1, 1, 16), NAN)
        ),
        ValueError,
        r"x contains NaN or inf",
    ),
    case(
        "fno-input-float64",
        lambda c: fast_fno(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4)(
            torch.zeros(1, 1, 16, dtype=torch.float64)
        ),
        TypeError,
        r"x has dtype torch.float64 but the FNO's weights are torch.float32.*pass x.float\(\)",
    ),
    case(
        "unet-input-nan",
        lambda c: UNet(2, 2, depth=1)(torch.full((1, 2, 1, 8, 8), NAN)),
        ValueError,
        r"x contains NaN or inf",
    ),
    case(
        "convlstm-input-inf",
        lambda c: ConvLSTM(hidden=4, target_frames=1)(torch.full((1, 2, 1, 8, 8), INF)),
        ValueError,
        r"x contains NaN or inf",
    ),
    case("unet-frames-zero", lambda c: UNet(0, 1), ValueError, r"in_frames must be an integer"),
    case(
        "unet-output-unknown",
        lambda c: UNet(2, 2, output="tanh"),
        ValueError,
        r"output must be one of",
    ),
    case(
        "unet-input-four-axes",
        lambda c: UNet(2, 2, depth=1)(torch.zeros(1, 2, 8, 8)),
        ValueError,
        r"x must have shape \(B, T, C, H, W\)",
    ),
    case(
        "unet-frame-not-divisible",
        lambda c: UNet(2, 2, depth=2)(torch.zeros(1, 2, 1, 6, 6)),
        ValueError,
        r"x must have H and W divisible by 2\^depth=4",
    ),
    case("convlstm-kernel-even", lambda c: ConvLSTM(kernel=4), ValueError, r"kernel must be odd"),
    case(
        "convlstm-input-integer",
        lambda c: ConvLSTM(hidden=4, target_frames=1)(
            torch.zeros(1, 2, 1, 8, 8, dtype=torch.int64)
        ),
        TypeError,
        r"x must be a floating-point tensor",
    ),
    case("persistence-frames-zero", lambda c: Persistence(0), ValueError, r"target_frames"),
    case(
        "count-parameters-not-a-module",
        lambda c: count_parameters("net"),
        TypeError,
        r"model must be a torch.nn.Module",
    ),
    case(
        "unflatten-wrong-size",
        lambda c: unflatten(torch.zeros(2, 10), 3, 3),
        ValueError,
        r"values must have T\*X = 9 entries",
    ),
    case(
        "with-parameters-points-three-columns",
        lambda c: with_parameters(torch.zeros(2), torch.zeros(4, 3)),
        ValueError,
        r"points must have shape \(N, 2\)",
    ),
    case(
        "energy-judge-scale-zero",  # the output would be offset whatever the weights
        lambda c: EnergyJudge(scale=0.0),
        ValueError,
        r"^scale must be a finite number > 0, got 0.0",
    ),
    case(
        "energy-judge-scale-negative",
        lambda c: EnergyJudge(scale=-1.0),
        ValueError,
        r"^scale must be a finite number > 0, got -1.0",
    ),
    case(
        "energy-judge-offset-nan",
        lambda c: EnergyJudge(offset=NAN),
        ValueError,
        r"^offset must be a finite number, got nan",
    ),
    case(
        "knowledge-regressor-scale-zero",
        lambda c: KnowledgeRegressor((1, 1, 4, 4), scale=0.0),
        ValueError,
        r"^scale must be a finite number > 0, got 0.0",
    ),
    case(
        "knowledge-regressor-offset-inf",
        lambda c: KnowledgeRegressor((1, 1, 4, 4), offset=INF),
        ValueError,
        r"^offset must be a finite number, got inf",
    ),
    case(
        "cuboid-attention-attn-drop-above-one",  # was refused only by the first train() forward
        lambda c: CuboidSelfAttention(8, 2, (2, 2, 2), attn_drop=2.0),
        ValueError,
        r"^attn_drop must be a probability in \[0, 1\], got 2.0",
    ),
    case(
        "cuboid-cross-attention-attn-drop-negative",
        lambda c: CuboidCrossAttention(8, 2, attn_drop=-1.0),
        ValueError,
        r"^attn_drop must be a probability in \[0, 1\], got -1.0",
    ),
    case(
        "cuboid-cross-attention-proj-drop-negative",
        lambda c: CuboidCrossAttention(8, 2, proj_drop=-1.0),
        ValueError,
        r"^proj_drop must be a probability in \[0, 1\], got -1.0",
    ),
    case(
        "cuboid-block-ffn-drop-above-one",
        lambda c: CuboidTransformerBlock(8, 2, (2, 4, 4), ffn_drop=5.0),
        ValueError,
        r"^ffn_drop must be a probability in \[0, 1\], got 5.0",
    ),
    case(
        "cuboid-cross-block-attn-drop-nan",
        lambda c: CuboidCrossBlock(8, 2, attn_drop=NAN),
        ValueError,
        r"^attn_drop must be a finite number, got nan",
    ),
    case(
        "earthformer-dropout-above-one",
        lambda c: Earthformer((2, 1, 8, 8), (2, 1, 8, 8), base_units=8, num_heads=2, dropout=2.0),
        ValueError,
        r"^dropout must be a probability in \[0, 1\], got 2.0",
    ),
    case(
        "convlstm-cell-hidden-zero",
        lambda c: ConvLSTMCell(1, 0, 3),
        ValueError,
        r"^hidden must be an integer >= 1, got 0",
    ),
    case(
        "convlstm-cell-kernel-even",  # the frame would grow by one pixel a step
        lambda c: ConvLSTMCell(1, 2, 2),
        ValueError,
        r"^kernel must be odd to keep the frame size, got 2",
    ),
    case(
        "fno-n-modes-zero",
        lambda c: fast_fno(n_modes=(0,), in_channels=1, out_channels=1, hidden_channels=4),
        ValueError,
        r"^n_modes entries must be >= 1, got \(0,\)",
    ),
    case(
        "plain-fno-n-modes-zero",
        lambda c: plain_fno((0,), 1, 1, 8, 2),
        ValueError,
        r"^n_modes entries must be >= 1, got \(0,\)",
    ),
    case(
        "spectral-conv-n-modes-float",
        lambda c: LeanSpectralConv(2, 2, n_modes=(4.5,)),
        TypeError,
        r"^n_modes must hold integers, got \(4.5,\)",
    ),
    case(
        "time-embedding-dim-zero",
        lambda c: TimeEmbedding(0),
        ValueError,
        r"^dim must be an integer >= 2, got 0",
    ),
    case(
        "residual-block-channels-zero",
        lambda c: ResidualBlock(0),
        ValueError,
        r"^channels must be an integer >= 1, got 0",
    ),
    case(
        "prediff-schedule-a-name",  # was an AttributeError
        lambda c: PreDiff(
            FrameAutoencoder(1, 4, 4, width=4),
            ConvDenoiser(2, 2, (4, 4, 4), widths=(8, 16)),
            schedule="cos",
        ),
        TypeError,
        r"^schedule must be a NoiseSchedule .* or None, got 'cos'",
    ),
    case(
        "boon-input-nan",
        lambda c: boon()(torch.full((1, 1, 16), NAN)),
        ConstraintError,
        r"NaN or inf",
    ),
    case(
        "boon-input-wrong-grid",
        lambda c: boon()(torch.zeros(1, 1, 12)),
        ValueError,
        r"x must be a tensor \(batch, channel, 16\), got \(1, 1, 12\)",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), MODEL_CASES)
def test_models_refuse_bad_input(call, error, match, context):
    check(call, error, match, context)


# ----------------------------------------------------------------------------------- metrics

M3 = torch.zeros(3)

METRIC_CASES = [
    case(
        "mse-shapes-differ",
        lambda c: metrics.mse(M3, torch.zeros(4)),
        ValueError,
        r"pred and target must have the same shape",
    ),
    case(
        "mse-empty",
        lambda c: metrics.mse(torch.zeros(0), torch.zeros(0)),
        ValueError,
        r"pred and target are empty",
    ),
    case(
        "mse-target-nan",
        lambda c: metrics.mse(M3, torch.full((3,), NAN)),
        ValueError,
        r"target contains NaN",
    ),
    case(
        "mse-dims-out-of-range",
        lambda c: metrics.mse(M3, M3, dims=3),
        ValueError,
        r"dims must be distinct axes",
    ),
    case(
        "mse-dims-text", lambda c: metrics.mse(M3, M3, dims="x"), TypeError, r"dims must be an int"
    ),
    case(
        "mae-complex",
        lambda c: metrics.mae(M3, torch.zeros(3, dtype=torch.complex64)),
        TypeError,
        r"target must hold real numbers",
    ),
    case(
        "relative-l2-reduction-unknown",
        lambda c: metrics.relative_l2(torch.ones(2, 3), torch.ones(2, 3), reduction="sum"),
        ValueError,
        r"reduction must be 'mean' or 'none'",
    ),
    case(
        "frame-mse-frame-ndim-zero",
        lambda c: metrics.frame_mse(M3, M3, frame_ndim=0),
        (ValueError, TypeError),
        r"frame_ndim",
    ),
    case(
        "boundary-error-grid-not-a-grid",
        lambda c: metrics.boundary_error(M3, M3, 3),
        TypeError,
        r"grid",
    ),
    case(
        "conservation-error-grid-mismatch",
        lambda c: metrics.conservation_error(torch.zeros(2, 8), G9, torch.zeros(2)),
        ValueError,
        r"u must have shape \(\.\.\., time, 9\) to match the grid",
    ),
    case(
        "log-likelihood-negative-variance",
        lambda c: metrics.gaussian_log_likelihood((M3, -torch.ones(3)), M3),
        ValueError,
        r"has negative variances",
    ),
    case(
        "crps-gaussian-negative-std",
        lambda c: metrics.crps_gaussian(M3, -torch.ones(3), M3),
        ValueError,
        r"std",
    ),
    case(
        "crps-ensemble-no-members",
        lambda c: metrics.crps_ensemble(torch.zeros(0, 3), M3),
        ValueError,
        r"samples is an empty ensemble",
    ),
    case(
        "shock-position-x-length",
        lambda c: metrics.shock_position(torch.zeros(2, 5), torch.zeros(4)),
        ValueError,
        r"samples must have shape \(\.\.\., 4\) to match x",
    ),
    case(
        "gaussian-samples-count-zero",
        lambda c: metrics.gaussian_samples(gaussian(), 0, 0),
        ValueError,
        r"count must be an integer >= 1",
    ),
    case(
        "gaussian-samples-generator-text",
        lambda c: metrics.gaussian_samples(gaussian(), 2, "seed"),
        TypeError,
        r"generator",
    ),
    case(
        "ssim-data-range-zero",
        lambda c: metrics.ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), data_range=0.0),
        ValueError,
        r"data_range must be a finite",
    ),
    case(
        "ssim-window-beyond-the-image",
        lambda c: metrics.ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), 1.0),
        ValueError,
        r"H, W >= window_size=11",
    ),
    case("csi-threshold-nan", lambda c: metrics.csi(M3, M3, NAN), ValueError, r"threshold"),
    case(
        "negative-flip-rate-shapes",
        lambda c: metrics.negative_flip_rate(M3, torch.zeros(4), M3),
        ValueError,
        r"new_pred",
    ),
    case("marginal-std-not-gaussian", lambda c: metrics.marginal_std(M3), TypeError, r"gaussian"),
]


@pytest.mark.parametrize(("call", "error", "match"), METRIC_CASES)
def test_metrics_refuse_bad_input(call, error, match, context):
    check(call, error, match, context)


# ---------------------------------------------------------------------------------- training


def identity_loss(model, batch):
    return model(batch[0]).sum()


def fit_with_batch(c: Context, batch: int):
    data = SingleStepDataset(c.data)
    trainer = Trainer(nn.Linear(9, 9), identity_loss, TrainConfig(steps=1, batch=batch), quiet=True)
    return trainer.fit(data)


def fit_with_loss(c: Context, loss, validation=None):
    data = SingleStepDataset(c.data)
    trainer = Trainer(nn.Linear(9, 9), loss, TrainConfig(steps=1, batch=2), quiet=True)
    return trainer.fit(data, validation)


def resume_with_other_model(c: Context):
    folder, data = c.fresh(), SingleStepDataset(c.data)
    config = TrainConfig(steps=1, batch=2, checkpoint_every=1)
    Trainer(
        nn.Conv1d(1, 1, 3, padding=1),
        lambda m, b: m(b[0]).square().mean(),
        config,
        folder,
        {"model": "a"},
        quiet=True,
    ).fit(data)
    return Trainer(
        nn.Conv1d(1, 1, 3, padding=1),
        lambda m, b: m(b[0]).square().mean(),
        TrainConfig(steps=2, batch=2, checkpoint_every=1),
        folder,
        {"model": "b"},
        quiet=True,
    ).fit(data)


def weights_that_do_not_fit(c: Context, edit):
    """A checkpoint whose weights were altered after writing (``edit`` of its state dict)."""
    folder, data = c.fresh(), SingleStepDataset(c.data)
    config = TrainConfig(steps=1, batch=2, checkpoint_every=1, schedule="constant")
    net = nn.Conv1d(1, 1, 3, padding=1)
    Trainer(net, lambda m, b: m(b[0]).square().mean(), config, folder, quiet=True).fit(data)
    path = folder / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    edit(state["model"])
    torch.save(state, path)
    more = TrainConfig(steps=2, batch=2, checkpoint_every=1, schedule="constant")
    trainer = Trainer(nn.Conv1d(1, 1, 3, padding=1), lambda m, b: m(b[0]).square().mean(), more)
    trainer.out, trainer.quiet = folder, True
    return trainer.fit(data)


def checkpoint_without_fingerprint(c: Context):
    folder = c.fresh()
    config, data = TrainConfig(steps=1, batch=2), SingleStepDataset(c.data)
    Trainer(nn.Linear(9, 9), identity_loss, config, folder, quiet=True).fit(data)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    del state["fingerprint"]
    torch.save(state, folder / "checkpoint.pt")
    return load_checkpoint(folder)


def damaged_checkpoint(c: Context):
    folder = c.fresh()
    (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04, then cut short")
    return load_checkpoint(folder)


TRAINING_CASES = [
    case(
        "config-steps-zero",
        lambda c: TrainConfig(steps=0),
        ValueError,
        r"steps must be an integer >= 1",
    ),
    case(
        "config-batch-float",
        lambda c: TrainConfig(batch=2.5),
        TypeError,
        r"batch must be an integer",
    ),
    case(
        "config-lr-zero",
        lambda c: TrainConfig(lr=0.0),
        ValueError,
        r"^lr must be a finite number > 0, got 0\.0$",
    ),
    case(
        "config-lr-negative",
        lambda c: TrainConfig(lr=-1.0),
        ValueError,
        r"^lr must be a finite number > 0, got -1\.0$",
    ),
    case(
        "config-clip-infinite",
        lambda c: TrainConfig(clip=INF),
        ValueError,
        r"^clip must be a finite number > 0 or None, got inf \(for no clipping pass None\)$",
    ),
    case(
        "config-validate-every-negative",
        lambda c: TrainConfig(validate_every=-1),
        ValueError,
        r"validate_every must be an integer >= 0",
    ),
    case(
        "config-lr-nan",
        lambda c: TrainConfig(lr=NAN),
        ValueError,
        r"^lr must be a finite number > 0, got nan$",
    ),
    case(
        "config-weight-decay-negative",
        lambda c: TrainConfig(weight_decay=-1.0),
        ValueError,
        r"weight_decay must be a finite number >= 0",
    ),
    case(
        "config-clip-zero",
        lambda c: TrainConfig(clip=0.0),
        ValueError,
        r"^clip must be a finite number > 0 or None, got 0\.0 \(for no clipping pass None\)$",
    ),
    case(
        "config-schedule-unknown",
        lambda c: TrainConfig(schedule="linear"),
        ValueError,
        r"schedule must be one of",
    ),
    case(
        "config-seed-negative",
        lambda c: TrainConfig(seed=-1),
        ValueError,
        r"seed must be an integer >= 0",
    ),
    case(
        "config-checkpoint-every-zero",
        lambda c: TrainConfig(checkpoint_every=0),
        ValueError,
        r"checkpoint_every must be an integer >= 1",
    ),
    case(
        "config-device-unknown",
        lambda c: TrainConfig(device="bogus"),
        ValueError,
        r"device must be 'cpu', 'cuda' or 'cuda:N'",
    ),
    case(
        "config-device-tpu",
        lambda c: TrainConfig(device="meta"),
        ValueError,
        r"device must be 'cpu', 'cuda' or 'cuda:N'",
    ),
    case(
        "config-lr-bool",
        lambda c: TrainConfig(lr=True),
        TypeError,
        r"^lr must be a finite number > 0, got True$",
    ),
    case(
        "config-weight-decay-bool",
        lambda c: TrainConfig(weight_decay=True),
        TypeError,
        r"weight_decay must be a non-negative number, got True",
    ),
    case(
        "config-seed-huge",
        lambda c: TrainConfig(seed=2**64 - 1),
        ValueError,
        r"seed must be an integer in \[0, 2\*\*62\], got 18446744073709551615",
    ),
    case(
        "trainer-model-config-not-plain",
        lambda c: Trainer(nn.Linear(2, 2), identity_loss, TrainConfig(), None, {"s": {1, 2}}),
        TypeError,
        r"model_config\['s'\] must be a number, string, boolean, None, or a list or dict of them",
    ),
    case(
        "trainer-loss-vector",
        lambda c: fit_with_loss(c, lambda m, b: m(b[0]).square()),
        ValueError,
        r"loss must return a 0-d tensor \(the batch's scalar loss\), got shape \(2, 1, 9\)",
    ),
    case(
        "trainer-loss-float",
        lambda c: fit_with_loss(c, lambda m, b: 1.0),
        TypeError,
        r"loss must return a 0-d tensor \(the batch's scalar loss\), got float",
    ),
    case(
        "trainer-loss-none",
        lambda c: fit_with_loss(c, lambda m, b: None),
        TypeError,
        r"loss must return a 0-d tensor .*, got NoneType",
    ),
    case(
        "trainer-validation-empty",
        lambda c: fit_with_loss(c, identity_loss, validation=[]),
        ValueError,
        r"validation must hold at least one sample, got an empty dataset",
    ),
    case(
        "trainer-out-not-a-path",
        lambda c: Trainer(nn.Linear(2, 2), identity_loss, TrainConfig(), 3),
        TypeError,
        r"out must be a folder path \(str or Path\) or None, got 3",
    ),
    case(
        "trainer-out-empty",
        lambda c: Trainer(nn.Linear(2, 2), identity_loss, TrainConfig(), ""),
        ValueError,
        r"out must be a folder path or None, got the empty path '' \(which would train into the "
        r"working folder: pass '\.' for that\)",
    ),
    case(
        "trainer-model-without-parameters",
        lambda c: Trainer(nn.Identity(), identity_loss, TrainConfig(steps=1, batch=2)).fit(
            SingleStepDataset(c.data)
        ),
        ValueError,
        r"model has no parameters \(Identity\): nothing to train",
    ),
    case(
        "trainer-model-not-a-module",
        lambda c: Trainer(lambda x: x, identity_loss, TrainConfig()),
        TypeError,
        r"model must be an nn.Module",
    ),
    case(
        "trainer-loss-not-callable",
        lambda c: Trainer(nn.Linear(2, 2), "mse", TrainConfig()),
        TypeError,
        r"loss must be a callable",
    ),
    case(
        "trainer-config-dict",
        lambda c: Trainer(nn.Linear(2, 2), identity_loss, {"steps": 1}),
        TypeError,
        r"config must be a TrainConfig",
    ),
    case(
        "trainer-after-step-not-callable",
        lambda c: Trainer(nn.Linear(2, 2), identity_loss, TrainConfig(), after_step=3),
        TypeError,
        r"after_step must be callable",
    ),
    case(
        "trainer-batch-beyond-data",
        lambda c: fit_with_batch(c, 7),
        ValueError,
        r"batch \(7\) exceeds the 6 training samples",
    ),
    case(
        "checkpoint-folder-empty",
        lambda c: load_checkpoint(c.fresh()),
        FileNotFoundError,
        r"checkpoint: no",
    ),
    case(
        "checkpoint-damaged",
        damaged_checkpoint,
        CheckpointError,
        r"checkpoint: .* cannot be read .*: it is an incomplete zip archive",
    ),
    case(
        "checkpoint-key-missing",
        checkpoint_without_fingerprint,
        CheckpointError,
        r"checkpoint: .*checkpoint.pt' lacks the key\(s\) \['fingerprint'\]",
    ),
    case("checkpoint-other-model-config", resume_with_other_model, CheckpointError, r"model"),
    case(
        "checkpoint-weights-unknown-key",
        lambda c: weights_that_do_not_fit(c, lambda w: w.__setitem__("extra", torch.zeros(1))),
        CheckpointError,
        r"checkpoint: the weights in .* do not fit this model .*extra",
    ),
    case(
        "checkpoint-weights-reshaped",
        lambda c: weights_that_do_not_fit(c, lambda w: w.__setitem__("weight", torch.zeros(2))),
        CheckpointError,
        r"checkpoint: the weights in .* do not fit .*weight",
    ),
    case(
        "task-context-size-unknown",
        lambda c: physml.tasks.Context(out=c.fresh(), size="huge"),
        ValueError,
        r"size must be one of \['toy', 'full'\], got 'huge'",
    ),
    case(
        "task-scale-steps-missing-a-family",
        lambda c: replace(TASK_SCALE["earthformer"], steps={"earthformer": 3}),
        ValueError,
        r"steps must give the step count of each of \['earthformer', 'fno'\], got",
    ),
    case(
        "task-scale-steps-not-a-count",
        lambda c: replace(
            TASK_SCALE["conservation"], steps={**TASK_SCALE["conservation"].steps, "fno": 2.5}
        ),
        TypeError,
        r"steps\['fno'\] must be an integer",
    ),
    case(
        "task-scale-no-stopping-rule",
        lambda c: replace(TASK_SCALE["earthformer"], steps=None),
        ValueError,
        r"give budget_s or steps",
    ),
    case(
        "family-option-huge",
        lambda c: model_config("fno", "operator", {"modes": 10**6}),
        ValueError,
        r"modes must be at most 1024, got 1000000",
    ),
    case(
        "family-unknown",
        lambda c: model_config("transformer", "operator", {}),
        ValueError,
        r"model must be one of",
    ),
    case(
        "family-name-list",
        lambda c: model_config(["fno"], "operator", {}),
        ValueError,
        r"model must be one of \[.*\], got \['fno'\]",
    ),
    case(
        "member-rows-list",
        lambda c: MemberRows([[0.0, 1.0]], [0.0], 2),
        TypeError,
        r"inputs must be a torch.Tensor, got list",
    ),
    case(
        "member-rows-targets-numpy",
        lambda c: MemberRows(torch.zeros(3, 2), np.zeros(3), 2),
        TypeError,
        r"targets must be a torch.Tensor, got ndarray",
    ),
    case(
        "family-task-not-served",
        lambda c: model_config("earthformer", "operator", {}),
        ValueError,
        r"model 'earthformer' serves the task\(s\)",
    ),
    case(
        "family-option-zero",
        lambda c: model_config("fno", "operator", {"modes": 0}),
        ValueError,
        r"modes must be an integer >= 1",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), TRAINING_CASES)
def test_training_refuses_bad_input(call, error, match, context):
    check(call, error, match, context)


# --------------------------------------------------------------------------------------- CLI


class UserError(Exception):
    """What the command line told the user: exit code 2 and one message on stderr."""


def cli(c: Context, *argv: str, out_folder: Path | None = None):
    """Run ``physml ARGV`` in-process; a user error (exit 2, no traceback) becomes ``UserError``
    carrying stderr. With ``out_folder``, the refusal must leave that folder as it was."""
    from physml.cli import main

    before = sorted(out_folder.iterdir()) if out_folder is not None else None
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_info:  # argparse's own refusals
            code = exit_info.code
    message = stderr.getvalue()
    assert "Traceback" not in message, message
    if out_folder is not None:
        assert sorted(out_folder.iterdir()) == before, "a refused command wrote files"
    if code == 2:
        raise UserError(message)
    return code


def gen(c: Context, *extra: str):
    folder = c.fresh()
    return cli(
        c, "generate", "heat", "--out", folder / "x.h5", "--quiet", *extra, out_folder=folder
    )


def train(c: Context, *extra: str, data: Path | None = None):
    folder = c.fresh()
    return cli(
        c,
        "train",
        "--data",
        data or c.dataset,
        "--out",
        folder / "run",
        "--quiet",
        *extra,
        out_folder=folder,
    )


def bad_toml(c: Context, text: str):
    path = c.fresh() / "config.toml"
    path.write_text(text)
    return train(c, "--config", path)


CLI_CASES = [
    case("cli-command-unknown", lambda c: cli(c, "fit"), UserError, r"invalid choice: 'fit'"),
    case(
        "cli-generate-pde-unknown",
        lambda c: cli(c, "generate", "heat2", "--n", "1", "--out", c.fresh() / "x.h5"),
        UserError,
        r"PDE.*invalid choice: 'heat2'",
    ),
    case(
        "cli-generate-n-missing",
        lambda c: cli(c, "generate", "heat", "--out", c.fresh() / "x.h5"),
        UserError,
        r"the following arguments are required: --n",
    ),
    case(
        "cli-generate-n-zero",
        lambda c: gen(c, "--n", "0"),
        UserError,
        r"^physml generate: error: --n: n must be an integer >= 1",
    ),
    case(
        "cli-generate-n-huge",
        lambda c: gen(c, "--n", str(10**9)),
        UserError,
        r"^physml generate: error: --n: 1000000000 samples .* need about .* the disk of --out",
    ),
    case(
        "cli-generate-option-named-by-its-flag",
        lambda c: gen(c, "--n", "2", "--t-end", "0"),
        UserError,
        r"^physml generate: error: --t-end: t_end must be a finite number > 0, got 0\.0$",
    ),
    case(
        "cli-generate-out-empty",
        lambda c: gen(c, "--n", "2", "--out", ""),
        UserError,
        r"--out must name a file \(e.g. data.h5\), got '.'",
    ),
    case(
        "cli-generate-out-a-folder",
        lambda c: gen(c, "--n", "2", "--out", c.fresh()),
        UserError,
        r"--out: .* is a folder; name the dataset file in it",
    ),
    case(
        "cli-generate-nx-huge",
        lambda c: gen(c, "--n", "1", "--nx", str(10**9)),
        UserError,
        r"nx: one sample of at least nx=1000000000 .* would need about",
    ),
    case(
        "cli-generate-nt-huge",
        lambda c: gen(c, "--n", "1", "--nt", str(10**9)),
        UserError,
        r"nt: one sample of at least .*nt=1000000000 .* would need about",
    ),
    case(
        "cli-generate-chunk-huge",
        lambda c: gen(c, "--n", str(10**9), "--chunk", str(10**9), "--nx", "10001"),
        UserError,
        r"chunk: 1000000000 samples of shape .* would need about",
    ),
    case(
        "cli-generate-nx-text",
        lambda c: gen(c, "--n", "1", "--nx", "ten"),
        UserError,
        r"--nx.*invalid int value: 'ten'",
    ),
    case(
        "cli-generate-kappa-negative",
        lambda c: gen(c, "--n", "1", "--kappa", "-1"),
        UserError,
        r"kappa",
    ),
    case(
        "cli-generate-bc-unknown", lambda c: gen(c, "--n", "1", "--bc", "robin"), UserError, r"bc"
    ),
    case(
        "cli-generate-device-cuda",
        lambda c: gen(c, "--n", "1", "--device", "cuda"),
        UserError,
        r"device 'cuda' asked for, but this machine has no CUDA device",
    ),
    case(
        "cli-generate-device-bogus",
        lambda c: gen(c, "--n", "1", "--device", "bogus"),
        UserError,
        r"device must be 'cpu', 'cuda' or 'cuda:N', got 'bogus'",
    ),
    case(
        "cli-generate-shard-out-of-range",
        lambda c: gen(c, "--n", "2", "--shard", "5", "--num-shards", "2"),
        UserError,
        r"shard must be an integer in \[0, 2\)",
    ),
    case(
        "cli-generate-num-shards-zero",
        lambda c: gen(c, "--n", "2", "--num-shards", "0"),
        UserError,
        r"num_shards must be an integer >= 1",
    ),
    case(
        "cli-generate-chunk-zero",
        lambda c: gen(c, "--n", "2", "--chunk", "0"),
        UserError,
        r"chunk must be an integer >= 1",
    ),
    case(
        "cli-generate-seed-negative",
        lambda c: gen(c, "--n", "2", "--seed", "-1"),
        UserError,
        r"seed must be a non-negative integer",
    ),
    case(
        "cli-generate-seed-beyond-int64",
        lambda c: gen(c, "--n", "2", "--seed", str(2**64)),
        UserError,
        r"seed must be a non-negative integer below 2\*\*63 \(stored as int64\), got 1844",
    ),
    case(
        "cli-generate-out-is-a-folder",
        lambda c: cli(c, "generate", "heat", "--n", "1", "--out", c.fresh(), "--quiet"),
        UserError,
        r"out: .* (folder|directory)",
    ),
    case(
        "cli-generate-out-folder-missing",
        lambda c: cli(
            c, "generate", "heat", "--n", "1", "--out", c.root / "none" / "x.h5", "--quiet"
        ),
        UserError,
        r"out: folder .* does not",
    ),
    case(
        "cli-train-data-missing",
        lambda c: train(c, "--model", "fno", "--task", "operator", data=c.root / "gone.h5"),
        UserError,
        r"physml train: error: --data: no dataset file at '.*gone\.h5'",
    ),
    case(
        "cli-train-model-missing",
        lambda c: train(c, "--task", "operator"),
        UserError,
        r"--model is required",
    ),
    case(
        "cli-train-model-unknown",
        lambda c: train(c, "--model", "gpt", "--task", "operator"),
        UserError,
        r"--model: invalid choice: 'gpt'",
    ),
    case(
        "cli-train-val-fraction-one",
        lambda c: train(c, "--model", "fno", "--task", "operator", "--val-fraction", "1"),
        UserError,
        r"--val-fraction must be in \[0, 1\)",
    ),
    case(
        "cli-train-steps-zero",
        lambda c: train(c, "--model", "fno", "--task", "operator", "--steps", "0"),
        UserError,
        r"steps must be an integer >= 1",
    ),
    case(
        "cli-train-device-bogus",
        lambda c: train(c, "--model", "fno", "--task", "operator", "--device", "bogus"),
        UserError,
        r"device must be 'cpu', 'cuda' or 'cuda:N'",
    ),
    case(
        "cli-train-hidden-huge",
        lambda c: train(c, "--model", "fno", "--task", "operator", "--hidden", str(10**9)),
        UserError,
        r"hidden must be at most 8192, got 1000000000",
    ),
    case(
        "cli-train-config-missing",
        lambda c: train(c, "--config", c.root / "none.toml"),
        UserError,
        r"--config: no file at",
    ),
    case(
        "cli-train-config-not-toml",
        lambda c: bad_toml(c, "steps = = 3"),
        UserError,
        r"--config: .* is not valid TOML",
    ),
    case(
        "cli-train-val-fraction-all",
        lambda c: train(c, "--model", "fno", "--task", "operator", "--val-fraction", "0.99"),
        UserError,
        r"--val-fraction 0.99 holds out all 6 samples of the file, leaving none to train on",
    ),
    case(
        "cli-train-config-val-fraction-text",
        lambda c: bad_toml(c, 'model = "fno"\ntask = "operator"\nval_fraction = "x"'),
        UserError,
        r"--val-fraction must be a finite number, got 'x'",
    ),
    case(
        "cli-train-config-model-list",
        lambda c: bad_toml(c, 'model = ["fno"]\ntask = "operator"'),
        UserError,
        r"--config: model must be a string, one of \[.*'fno'.*\], got \['fno'\]",
    ),
    case(
        "cli-train-config-task-number",
        lambda c: bad_toml(c, 'model = "fno"\ntask = 3'),
        UserError,
        r"--config: task must be a string, one of \['operator', 'rollout', 'forecast'\], got 3",
    ),
    case(
        "cli-train-config-distill-from-number",
        lambda c: bad_toml(c, 'model = "fno"\ntask = "operator"\ndistill_from = 3'),
        UserError,
        r"--config: distill_from must be a string, the run folder of the old model, got 3",
    ),
    case(
        "cli-train-config-unknown-key",
        lambda c: bad_toml(c, "stepz = 3"),
        UserError,
        r"--config: unknown key\(s\) \['stepz'\]",
    ),
    case(
        "cli-train-task-not-served",
        lambda c: train(c, "--model", "earthformer", "--task", "operator"),
        UserError,
        r"model 'earthformer' serves the task\(s\)",
    ),
    case(
        "cli-evaluate-checkpoint-missing",
        lambda c: cli(c, "evaluate", "--checkpoint", c.fresh(), "--data", c.dataset),
        UserError,
        r"physml evaluate: error: --checkpoint: '.*' holds no checkpoint\.pt: not a run folder",
    ),
    case(
        "cli-evaluate-device-bogus",
        lambda c: cli(
            c, "evaluate", "--checkpoint", c.fresh(), "--data", c.dataset, "--device", "bogus"
        ),
        UserError,
        r"device must be",
    ),
    case(
        "cli-run-task-unknown",
        lambda c: cli(c, "run", "nosuch", "--out", c.fresh() / "o"),
        UserError,
        r"unknown task 'nosuch'",
    ),
    case(
        "cli-run-device-bogus",
        lambda c: cli(c, "run", "verify", "--out", c.fresh() / "o", "--device", "bogus"),
        UserError,
        r"device must be 'cpu', 'cuda' or 'cuda:N'",
    ),
    case(
        "cli-run-seed-negative",
        lambda c: cli(c, "run", "verify", "--out", c.fresh() / "o", "--seed", "-1"),
        UserError,
        r"--seed must be an integer in \[0, 2\*\*62\), got -1",
    ),
    case(
        "cli-run-out-is-a-file",
        lambda c: cli(c, "run", "verify", "--out", c.text),
        UserError,
        r"out: .* is a file, not a folder",
    ),
    case(
        "cli-run-size-unknown",
        lambda c: cli(c, "run", "verify", "--size", "huge"),
        UserError,
        r"--size: invalid choice: 'huge'",
    ),
    case(
        "cli-demo-task-unknown",
        lambda c: cli(c, "demo", "--tasks", "nosuch", "--out", c.fresh() / "o"),
        UserError,
        r"unknown task 'nosuch'",
    ),
    case(
        "cli-merge-shard-missing",
        lambda c: cli(c, "merge", c.root / "gone.h5", "-o", c.fresh() / "m.h5"),
        UserError,
        r"shard",
    ),
    case("cli-merge-out-missing", lambda c: cli(c, "merge", c.dataset), UserError, r"-o/--out"),
    case(
        "cli-convert-source-missing",
        lambda c: cli(c, "convert", c.root / "gone.h5", c.fresh() / "o.h5"),
        UserError,
        r"physml convert: error: IN: no dataset file at '.*gone\.h5'",
    ),
    case(
        "cli-convert-to-unknown",
        lambda c: cli(c, "convert", c.dataset, c.fresh() / "o.h5", "--to", "netcdf"),
        UserError,
        r"--to: invalid choice: 'netcdf'",
    ),
    case(
        "cli-convert-physml-without-to",
        lambda c: cli(c, "convert", c.dataset, c.fresh() / "o.h5"),
        UserError,
        r"to: name the output format",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CLI_CASES)
def test_cli_refuses_bad_input_with_exit_code_2(call, error, match, context):
    check(call, error, match, context)


# ---------------------------------------------------------------------------------- the size

ALL_CASES = [
    *SOLVER_CASES,
    *DATA_CASES,
    *CONSTRAINT_CASES,
    *MODEL_CASES,
    *METRIC_CASES,
    *TRAINING_CASES,
    *CLI_CASES,
]


def test_the_catalogue_holds_at_least_150_distinct_classes():
    names = [param.id for param in ALL_CASES]
    assert len(set(names)) == len(names), "two cases share a name"
    assert len(names) >= 150, len(names)
