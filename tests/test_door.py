"""The one door: every seam reached through ``constrain`` with models the toolkit has never seen.

Output seam: a plain MLP. Sampler seam: a toy linear sampler whose guided result has a closed form.
Operator seam: see ``test_boon*.py``. Also: wrap-time errors, and a search of the code showing that
nothing outside ``physml/constraints`` calls a constraint's internals.
"""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from pdes import Dirichlet, Grid1D
from physml import ConstraintError, Ensemble, constrain, mass_conservation
from physml.constraints import BoundaryCondition, Constraint, Sampler
from physml.models.ensemble import DeepEnsemble

ROOT = Path(__file__).resolve().parents[1]


class MLP(nn.Module):
    """A model the toolkit has never seen: (batch, 8) -> (batch, 1, 16)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 16))

    def forward(self, x):
        return self.net(x).unsqueeze(1)


def test_output_seam_on_an_unseen_mlp_conserves_keeps_dtype_and_trains():
    grid = Grid1D(16, 0.0, 3.0)
    mass = torch.linspace(1.0, 2.0, 5)[:, None]  # (batch, channel)
    model = constrain(MLP(), mass_conservation(grid, mass))
    out = model(torch.randn(5, 8))
    assert out.dtype == torch.float32 and out.shape == (5, 1, 16)
    integral = (out.double() * grid.weights()).sum(-1)
    assert torch.allclose(integral, mass.double(), rtol=1e-6, atol=0)
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # the unconstrained MLP misses the mass: the constraint did the work
    raw = model.model(torch.randn(5, 8))
    assert ((raw.double() * grid.weights()).sum(-1) - mass).abs().max() > 1e-2


def test_boundary_condition_on_a_model_without_kernel_layers_uses_the_output_seam():
    grid = Grid1D(16)
    model = constrain(MLP(), BoundaryCondition(Dirichlet(1.0, -2.0), grid))
    assert not model.kernel
    out = model(torch.randn(3, 8))
    assert torch.all(out[..., 0] == 1.0) and torch.all(out[..., -1] == -2.0)
    with pytest.raises(ConstraintError, match=r"MLP cannot take BoundaryCondition at the operator"):
        constrain(MLP(), BoundaryCondition(Dirichlet(), grid), kernel=True)


class LinearSampler(nn.Module):
    """A toy reverse process: ``z ← a z + guidance(z, t)`` for ``t = steps-1, …, 0``, from the
    context. Guided by ``s (c − z)`` the result is ``r^N z₀ + s c (1 − r^N) / (1 − r)``,
    ``r = a − s``.
    """

    def __init__(self, a: float = 0.9):
        super().__init__()
        self.a = a

    def sample(self, context, guidance=None, steps: int = 10):
        z = context.clone()
        for t in reversed(range(steps)):
            shift = 0.0 if guidance is None else guidance(z, t)
            z = self.a * z + shift
        return Ensemble(z)


class Pull(Constraint):
    """A sampler-seam constraint: shift every step's mean by ``scale (target − z)``."""

    seams = ("sampler",)

    def __init__(self, target: float, scale: float):
        super().__init__()
        self.target, self.scale = target, scale
        self.calls: list[object] = []

    def guide(self, z_t, t, context):
        self.calls.append(t)
        return self.scale * (self.target - z_t)


def test_sampler_seam_matches_the_closed_form_and_composes_with_the_output_seam():
    assert isinstance(LinearSampler(), Sampler)
    z0 = torch.randn(4, 3, 12, dtype=torch.float64)  # (member, batch, x)
    a, s, c, steps = 0.9, 0.2, 1.5, 10
    pull = Pull(c, s)
    out = constrain(LinearSampler(a), pull)(z0, steps=steps)
    r = a - s
    expected = r**steps * z0 + s * c * (1 - r**steps) / (1 - r)
    assert torch.allclose(out.samples, expected, atol=1e-12)
    assert pull.calls == list(reversed(range(steps)))
    unguided = constrain(LinearSampler(a), Pull(c, 0.0))(z0, steps=steps)
    assert torch.allclose(unguided.samples, a**steps * z0, atol=1e-12)
    # sampler seam while sampling, then the output seam: every member meets the mass
    grid = Grid1D(12)
    conserved = constrain(LinearSampler(a), pull, mass_conservation(grid, torch.ones(3)))
    members = conserved(z0, steps=steps).samples
    ones = torch.ones(4, 3, dtype=torch.float64)
    assert torch.allclose((members * grid.weights()).sum(-1), ones, atol=1e-12)


def test_a_sampler_constraint_on_a_model_that_does_not_sample_fails_at_wrap_time():
    with pytest.raises(ConstraintError, match=r"MLP cannot take Pull at the sampler seam.*sample"):
        constrain(MLP(), Pull(0.0, 0.1))


def test_a_sampler_constraint_on_a_sample_without_guidance_fails_at_wrap_time():
    """A DeepEnsemble has ``sample(inputs, n, seed)``: a method named sample, but no guidance."""
    ensemble = DeepEnsemble(in_features=2, members=2, width=4, depth=1)
    with pytest.raises(
        ConstraintError,
        match=r"DeepEnsemble cannot take Pull at the sampler seam: its sample\(inputs, n, seed\) "
        "takes no guidance= keyword",
    ):
        constrain(ensemble, Pull(0.0, 0.1))

    class KeywordsSampler(nn.Module):  # guidance reaches it through **options
        def sample(self, context, **options):
            return LinearSampler(0.9).sample(context, **options)

    class PositionalGuidance(nn.Module):  # guidance= cannot bind to a positional-only name
        def sample(self, context, guidance, /):
            return context

    z0 = torch.randn(2, 3, dtype=torch.float64)
    out = constrain(KeywordsSampler(), Pull(1.5, 0.2))(z0, steps=4)
    r = 0.9 - 0.2
    assert torch.allclose(out.samples, r**4 * z0 + 0.2 * 1.5 * (1 - r**4) / (1 - r), atol=1e-12)
    with pytest.raises(
        ConstraintError, match=r"its sample\(context, guidance\) takes no guidance= keyword"
    ):
        constrain(PositionalGuidance(), Pull(0.0, 0.1))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((), ConstraintError, "at least one constraint"),
        (("not a constraint",), TypeError, "Constraint objects"),
    ],
)
def test_bad_arguments_to_constrain(args, error, match):
    with pytest.raises(error, match=match):
        constrain(MLP(), *args)
    with pytest.raises(TypeError, match="nn.Module"):
        constrain(lambda x: x, mass_conservation(Grid1D(4), torch.zeros(1)))


def test_nan_output_raises():
    class Broken(nn.Module):
        def forward(self, x):
            return torch.full((2, 1, 16), float("nan"))

    model = constrain(Broken(), mass_conservation(Grid1D(16), torch.zeros(2, 1)))
    with pytest.raises(ConstraintError, match="NaN or inf"):
        model(None)


INTERNALS = re.compile(
    r"\.(apply|apply_tensor|apply_gaussian|apply_ensemble|enforce|prepare|guide|bind|"
    r"map_gaussian|at)\(|physml\.models\.boon|\bBOON\("
)


def test_nothing_outside_the_constraint_package_calls_constraint_internals():
    """Tasks, benchmarks, notebooks and the README reach constraints through ``constrain``."""
    files = [
        *[p for p in (ROOT / "physml").rglob("*.py") if "constraints" not in p.parts],
        *(ROOT / "benchmarks").glob("*.py"),
        *(ROOT / "notebooks").glob("*.ipynb"),
        ROOT / "README.md",
    ]
    offenders = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # pandas-style .apply( on data frames does not occur here; any match is a constraint
            if INTERNALS.search(line) and "torch.autograd" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
