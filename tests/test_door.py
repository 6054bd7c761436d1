"""The one door: every seam reached through ``constrain`` with models the toolkit has never seen.

Output seam: a plain MLP. Sampler seam: a toy linear sampler whose guided result has a closed form.
Operator seam: see ``test_boon*.py``. Also: wrap-time errors, and a search of the code showing that
nothing outside ``physml/constraints`` calls a constraint's internals.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pdes import Dirichlet, Grid1D, Grid2D, Neumann, Periodic
from pdes.heat import one_sided_flux
from physml import (
    ConstraintError,
    Ensemble,
    Gaussian,
    LinearConstraint,
    constrain,
    mass_conservation,
)
from physml.constraints import BoundaryCondition, Constraint, NonNegative, Sampler
from physml.models.ensemble import DeepEnsemble

F64 = torch.float64
MASS = torch.tensor([[0.5]], dtype=F64)

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


# ------------------------------------------------------------------------------------------
# Composition on a tensor: constraints after boundary conditions keep them


def dense_rows(kind: str, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """numpy, by hand: the rows a ``kind`` condition on ``axis`` of a field ``shape`` meets,
    over the flattened field (Dirichlet: the walls; Neumann: ``3u₀ − 4u₁ + u₂``; periodic)."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    lines = np.moveaxis(index, axis, -1).reshape(-1, shape[axis])
    stencil = {"dirichlet": [1.0], "neumann": [3.0, -4.0, 1.0]}[kind]
    rows = []
    for line in lines:
        for nodes in (line, line[::-1]):
            row = np.zeros(index.size)
            row[nodes[: len(stencil)]] = stencil
            rows.append(row)
    return np.array(rows)


def keeping_projection(v: np.ndarray, G: np.ndarray, b: np.ndarray, R: np.ndarray) -> np.ndarray:
    """numpy: the nearest ``u`` to ``v`` with ``G u = b`` and ``R u = R v`` (the minimum-norm
    change meeting the stacked rows, from the pseudo-inverse: ``R`` may repeat rows)."""
    C = np.vstack([G, R])
    d = np.concatenate([b - G @ v, np.zeros(R.shape[0])])
    return v + np.linalg.pinv(C) @ d


CASES_1D = {
    "dirichlet": (Dirichlet(0.2, 0.2), [("dirichlet", -1)]),
    "neumann": (Neumann(0.5, -1.0), [("neumann", -1)]),
}


@pytest.mark.parametrize("kind", list(CASES_1D))
def test_mass_after_a_condition_on_a_1d_tensor_keeps_the_condition(kind):
    """compose3's 8-point grid: walls (or fluxes) first, then the mass: both hold to round-off
    and the result is the nearest field meeting both (numpy's stacked projection)."""
    grid = Grid1D(8)
    field = torch.tensor([[[0.5, 0.9, -0.3, 0.4, 0.8, -0.2, 0.6, 0.1]]], dtype=F64)
    condition = BoundaryCondition(CASES_1D[kind][0], grid)
    walls = constrain(nn.Identity(), condition)(field)
    out = constrain(nn.Identity(), condition, mass_conservation(grid, MASS), kernel=False)(field)
    w = grid.weights(dtype=F64)
    assert abs(float(out[0, 0] @ w) - 0.5) < 1e-14
    if kind == "dirichlet":
        assert (out[..., [0, -1]] == 0.2).all()
    else:
        left, right = one_sided_flux(out, grid.dx)
        assert abs(float(left) - 0.5) < 1e-12 and abs(float(right) + 1.0) < 1e-12
    R = dense_rows(kind, (8,), 0)
    expected = keeping_projection(walls[0, 0].numpy(), w.numpy()[None], np.array([0.5]), R)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=0, atol=1e-13)


def test_linear_rows_after_conditions_on_both_axes_of_a_2d_tensor_keep_them():
    """Dirichlet on x (axis -2), then Neumann on y (axis -1; it wins at the corners), then two
    rows (the mass and a first moment) on every frame: the y fluxes, the x walls off the corners
    and both rows hold, and the field is numpy's stacked projection (rows shared at corners)."""
    square = Grid2D(Grid1D(7, 0.0, 1.0), Grid1D(6, 0.0, 2.0))
    gen = torch.Generator().manual_seed(2)
    field = torch.randn(3, 1, 7, 6, generator=gen, dtype=F64)
    walls_x = BoundaryCondition(Dirichlet(0.0, 1.0), square.x, axis=-2)
    flux_y = BoundaryCondition(Neumann(0.5, -0.5), square.y, axis=-1)
    weights = square.weights().to(F64)
    G = torch.stack([weights, weights * torch.arange(7, dtype=F64)[:, None]]).reshape(2, -1)
    b = torch.tensor([0.7, 2.0], dtype=F64)
    rows = LinearConstraint(G, b, space=(7, 6))
    set_walls = constrain(nn.Identity(), walls_x, flux_y)(field)
    out = constrain(nn.Identity(), walls_x, flux_y, rows)(field)
    flat = out.reshape(3, 1, -1)
    torch.testing.assert_close(flat @ G.T, b.expand(3, 1, 2), rtol=0, atol=1e-13)
    assert (out[..., 0, 1:-1] == 0.0).all() and (out[..., -1, 1:-1] == 1.0).all()
    left, right = one_sided_flux(out, square.y.dx)
    torch.testing.assert_close(left, torch.full_like(left, 0.5), rtol=0, atol=1e-11)
    torch.testing.assert_close(right, torch.full_like(right, -0.5), rtol=0, atol=1e-11)
    R = np.vstack([dense_rows("dirichlet", (7, 6), 0), dense_rows("neumann", (7, 6), 1)])
    for i in range(3):
        v = set_walls[i, 0].reshape(-1).numpy()
        expected = keeping_projection(v, G.numpy(), b.numpy(), R)
        np.testing.assert_allclose(flat[i, 0].numpy(), expected, rtol=0, atol=1e-12)


def test_nonnegativity_after_walls_on_a_tensor_keeps_them_and_the_mass():
    """compose3: walls 0.2, then the mass, then non-negativity: all three hold; the walls do not
    move (a Neumann wall's stencil points neither; periodic walls move together)."""
    for condition, values in (
        (Dirichlet(0.2, 0.2), [0.5, 0.9, -0.3, 0.4, 0.8, -0.2, 0.6, 0.1]),
        (Neumann(0.1, -0.1), [0.5, 0.1, 0.1, 0.9, -0.4, -0.8, 0.9, 1.0, 0.2, 0.1, 0.1, 0.1]),
    ):
        grid = Grid1D(len(values))
        mass = mass_conservation(grid, MASS)
        w = grid.weights(dtype=F64)
        field = torch.tensor([[values]], dtype=F64)
        wall = BoundaryCondition(condition, grid)
        out = constrain(nn.Identity(), wall, mass, NonNegative(keep=mass))(field)
        assert out.min() >= 0 and abs(float(out[0, 0] @ w) - 0.5) < 1e-14
        before = constrain(nn.Identity(), wall, mass)(field)
        fixed = [0, -1] if condition.name == "dirichlet" else [0, 1, 2, -3, -2, -1]
        assert torch.equal(out[..., fixed], before[..., fixed])
    grid = Grid1D(8)
    mass = mass_conservation(grid, MASS)
    w = grid.weights(dtype=F64)
    field = torch.tensor([[[-0.3, 0.9, 0.3, 0.4, 0.8, -0.2, 0.6, -0.3]]], dtype=F64)
    periodic = BoundaryCondition(Periodic(), grid)  # its walls, alike in the row, move alike
    out = constrain(nn.Identity(), periodic, mass, NonNegative(keep=mass))(field)
    assert out[..., 0] == out[..., -1] and out.min() >= 0
    assert abs(float(out[0, 0] @ w) - 0.5) < 1e-14
    field = torch.tensor([[[0.5, 0.9, -0.3, 0.4, 0.8, -0.2, 0.6, 0.1]]], dtype=F64)
    only_walls = constrain(nn.Identity(), BoundaryCondition(Dirichlet(0.2, 0.2), grid))(field)
    out = constrain(
        nn.Identity(), BoundaryCondition(Dirichlet(0.2, 0.2), grid), NonNegative(keep=mass)
    )(field)
    assert (out[..., [0, -1]] == 0.2).all() and out.min() >= 0
    assert abs(float((out - only_walls)[0, 0] @ w)) < 1e-14  # the total as the walls left it


def test_constraints_that_cannot_keep_the_conditions_raise():
    grid = Grid1D(8)
    field = torch.rand(2, 1, 8, dtype=F64)
    mass = mass_conservation(grid, MASS)
    wall = BoundaryCondition(Dirichlet(0.2, 0.2), grid)
    for first in (mass, NonNegative(keep=mass)):
        with pytest.raises(ConstraintError, match=r"constraints\[1\] \(dirichlet condition on"):
            constrain(nn.Identity(), first, wall)
    pin = LinearConstraint(torch.eye(8, dtype=F64)[:1], torch.tensor([1.0], dtype=F64))
    with pytest.raises(ConstraintError, match="cannot be met while keeping the boundary"):
        constrain(nn.Identity(), wall, pin)(field)
    negative = BoundaryCondition(Dirichlet(-0.1, 0.2), grid)
    with pytest.raises(ConstraintError, match="NonNegative cannot keep the boundary conditions"):
        constrain(nn.Identity(), negative, NonNegative(keep=mass))(field - 0.5)
    heavy = torch.tensor([[[0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]], dtype=F64)
    with pytest.raises(ConstraintError, match="together they hold more than the total"):
        constrain(nn.Identity(), wall, NonNegative(keep=mass))(heavy)
    outside = BoundaryCondition(Dirichlet(0.0, 0.0), Grid1D(3), axis=-2)
    with pytest.raises(ConstraintError, match="outside the constraint's grid axes"):
        constrain(nn.Identity(), outside, mass)(torch.rand(2, 3, 8, dtype=F64))


def test_an_fno_with_walls_mass_and_nonnegativity_meets_all_three():
    """state.py: the operator seam sets the walls, then the mass and non-negativity keep them."""
    from physml.models import fast_fno

    n = 16
    grid = Grid1D(n)
    torch.manual_seed(0)
    fno = fast_fno(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=2)
    mass = mass_conservation(grid, torch.tensor([[0.01]]))  # small: the mass alone leaves u < 0
    walls = BoundaryCondition(Dirichlet(0.0, 0.0), grid)
    model = constrain(fno, walls, mass, NonNegative(keep=mass))
    assert model.kernel
    x = torch.rand(1, 1, n)
    with torch.no_grad():
        out = model(x)
        without = constrain(fno, walls, mass)(x)
    assert without.min() < 0  # so the non-negativity has work to do
    assert (out[..., [0, -1]] == 0).all() and out.min() >= 0
    assert abs(float(out[0, 0].double() @ grid.weights(dtype=F64)) - 0.01) < 1e-6


def test_nonnegativity_refuses_a_negative_wall_even_when_the_total_is_ample():
    """A wall set negative cannot move (it would break its condition), so no field keeps it
    and is non-negative: an error, not a field left negative at the wall."""
    grid = Grid1D(8)
    mass = mass_conservation(grid, MASS)
    negative = BoundaryCondition(Dirichlet(-0.1, 0.2), grid)
    field = torch.full((1, 1, 8), 2.0, dtype=F64)
    with pytest.raises(ConstraintError, match="one of them is negative"):
        constrain(nn.Identity(), negative, NonNegative(keep=mass))(field)


# ------------------------------------------------------------------------------------------
# Nesting: constrain(constrain(m, a), b) is constrain(m, a, b)


class Outputs(nn.Module):
    """``(batch, 9) -> (batch, 9)`` as a tensor, a Gaussian or an ensemble of four members."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(9, 9).double()
        self.kind = kind

    def forward(self, x):
        y = self.linear(x)
        if self.kind == "tensor":
            return y
        if self.kind == "gaussian":
            return Gaussian(y, 0.1 + y.square())
        wave = torch.sin(torch.arange(9, dtype=F64))
        return Ensemble(torch.stack([y + 0.1 * k * wave**k for k in range(4)]))


def fields(output) -> list[torch.Tensor]:
    """The tensors an output holds: a tensor; a Gaussian's mean and covariance; the members."""
    if isinstance(output, Gaussian):
        return [output.mean, output.dense_cov()]
    return [output.samples if isinstance(output, Ensemble) else output]


@pytest.mark.parametrize("kind", ["tensor", "gaussian", "ensemble"])
def test_a_constrained_model_constrained_again_meets_every_constraint_as_one_call(kind):
    """Walls 0 and 1, then a mass of 0.5 added by a second ``constrain``: a tensor output used
    to lose its walls (the mass projection of the outer wrapper did not know them)."""
    grid = Grid1D(9, 0.0, 1.0)
    walls = BoundaryCondition(Dirichlet(0.0, 1.0), grid)
    mass = mass_conservation(grid, 0.5)
    model = Outputs(kind)
    nested = constrain(constrain(model, walls), mass)
    x = torch.rand(2, 9, dtype=F64, generator=torch.Generator().manual_seed(1))
    out = nested(x)
    field = fields(out)[0]
    assert (field[..., 0] == 0.0).all() and (field[..., -1] == 1.0).all()
    trapezoid = torch.tensor([1.0, 2, 2, 2, 2, 2, 2, 2, 1], dtype=F64) / 16
    torch.testing.assert_close(field @ trapezoid, torch.full(field.shape[:-1], 0.5, dtype=F64))
    for a, b in zip(fields(out), fields(constrain(model, walls, mass)(x)), strict=True):
        assert torch.equal(a, b)
    assert nested.model is model and list(nested.constraints) == [walls, mass]


def test_a_constrained_model_constrained_again_is_refused_where_the_one_call_is():
    """A boundary condition added after a mass or non-negativity used to get past the order
    check and break them."""
    grid = Grid1D(8)
    mass = mass_conservation(grid, MASS)
    wall = BoundaryCondition(Dirichlet(0.2, 0.2), grid)
    for first in (mass, NonNegative(keep=mass)):
        with pytest.raises(ConstraintError, match=r"constraints\[1\] \(dirichlet condition on"):
            constrain(constrain(nn.Identity(), first), wall)


def test_a_constrained_fno_constrained_again_is_the_one_call_bitwise():
    """The operator seam: the kernel correction of the inner wrapper's walls, then the mass."""
    from physml.models import fast_fno

    grid = Grid1D(16)
    torch.manual_seed(0)
    fno = fast_fno(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=2)
    walls = BoundaryCondition(Dirichlet(0.0, 0.5), grid)
    mass = mass_conservation(grid, torch.tensor([[0.3]]))
    inner = constrain(fno, walls)
    x = torch.rand(2, 1, 16)
    inner(x)  # the inner wrapper has run (and read its probes) before it is wrapped again
    nested, flat = constrain(inner, mass), constrain(fno, walls, mass)
    out = nested(x)
    assert (out[..., 0] == 0.0).all() and (out[..., -1] == 0.5).all()
    assert abs(float(out.detach()[0, 0].double() @ grid.weights(dtype=F64)) - 0.3) < 1e-6
    assert torch.equal(out, flat(x))
    assert nested.kernel and nested.model is fno


def test_options_of_a_constrained_model_constrained_again():
    """The inner call's kernel and pivot_floor hold where the outer call leaves its defaults;
    the outer call's hold where the inner left its defaults; set differently in both: refused."""
    from physml.models import fast_fno

    grid = Grid1D(16)
    fno = fast_fno(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=2)
    walls = BoundaryCondition(Dirichlet(0.0, 0.5), grid)
    mass = mass_conservation(grid, torch.tensor([[0.3]]))
    assert not constrain(constrain(fno, walls, kernel=False), mass).kernel
    assert not constrain(constrain(fno, walls), mass, kernel=False).kernel
    for nested in (
        constrain(constrain(fno, walls, pivot_floor=0.0), mass),
        constrain(constrain(fno, walls), mass, pivot_floor=0.0),
    ):
        assert all(layer.pivot_floor == 0.0 for layer in nested.correction.layers)
    with pytest.raises(ConstraintError, match=r"pivot_floor=0.0 and this call asks pivot_floor="):
        constrain(constrain(fno, walls, pivot_floor=0.0), mass, pivot_floor=0.5)
    with pytest.raises(ConstraintError, match=r"kernel=False and this call asks kernel=True"):
        constrain(constrain(fno, walls, kernel=False), mass, kernel=True)


def test_a_constrained_model_given_to_constrained_directly_is_unwrapped_at_any_depth():
    """``Constrained(constrain(m, walls), [mass])`` used to nest, and its mass broke the walls;
    a wrapper inside another module stays a model."""
    from physml.constraints import Constrained

    grid = Grid1D(9, 0.0, 1.0)
    walls = BoundaryCondition(Dirichlet(0.0, 1.0), grid)
    mass = mass_conservation(grid, 0.5)
    keep = NonNegative(keep=mass)
    model = Outputs("tensor")
    x = torch.rand(2, 9, dtype=F64, generator=torch.Generator().manual_seed(1))
    for wrapped in (
        Constrained(constrain(model, walls), [mass]),
        Constrained(Constrained(Constrained(model, [walls]), [mass]), [keep]),
    ):
        out = wrapped(x)
        assert wrapped.model is model and list(wrapped.constraints)[:2] == [walls, mass]
        assert (out[:, 0] == 0.0).all() and (out[:, -1] == 1.0).all()
        trapezoid = torch.tensor([1.0, 2, 2, 2, 2, 2, 2, 2, 1], dtype=F64) / 16
        torch.testing.assert_close(out @ trapezoid, torch.full((2,), 0.5, dtype=F64))
    parallel = nn.DataParallel(constrain(model, walls))
    assert Constrained(parallel, [mass]).model is parallel


def test_a_wrapper_pickled_before_it_kept_its_options_passes_them_on_when_wrapped_again():
    """Its kernel=False and pivot_floor=0 were lost: the defaults were assumed."""
    from physml.models import fast_fno

    grid = Grid1D(16)
    fno = fast_fno(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=2)
    walls = BoundaryCondition(Dirichlet(0.0, 0.5), grid)
    mass = mass_conservation(grid, torch.tensor([[0.3]]))
    without_kernel = constrain(fno, walls, kernel=False)
    floor_zero = constrain(fno, walls, pivot_floor=0)
    for old in (without_kernel, floor_zero):
        del old.options
    assert not constrain(without_kernel, mass).kernel
    with pytest.raises(ConstraintError, match="kernel=False and this call asks kernel=True"):
        constrain(without_kernel, mass, kernel=True)
    assert all(layer.pivot_floor == 0.0 for layer in constrain(floor_zero, mass).correction.layers)
    on_output = constrain(nn.Linear(16, 16), walls)  # no operator seam: kernel unknown, not False
    del on_output.options
    with pytest.raises(ConstraintError, match="cannot take BoundaryCondition at the operator seam"):
        constrain(on_output, mass, kernel=True)


NESTED_LAYOUTS = {  # the keys constrain(constrain(...), ...) saved before it was unwrapped
    "constrain(constrain(m, walls, mass), keep)": {
        "model.": "model.model.",
        "constraints.1.": "model.constraints.1.",
        "constraints.2.": "constraints.0.",
    },
    "constrain(constrain(constrain(m, walls), mass), keep)": {
        "model.": "model.model.model.",
        "constraints.1.": "model.constraints.0.",
        "constraints.2.": "constraints.0.",
    },
}


def nested_wrapper(target: float, seed: int):
    """``constrain(m, walls, mass, NonNegative(keep=mass))`` over a linear map of 9 points."""
    grid = Grid1D(9, 0.0, 1.0)
    mass = mass_conservation(grid, target)
    torch.manual_seed(seed)
    return constrain(
        nn.Linear(9, 9).double(),
        BoundaryCondition(Dirichlet(0.0, 1.0), grid),
        mass,
        NonNegative(keep=mass),
    )


def renamed(state: dict, layout: dict[str, str]) -> dict:
    """``state`` with each key's first matching prefix in ``layout`` replaced."""
    old = {}
    for key, value in state.items():
        head = next(head for head in layout if key.startswith(head))
        old[layout[head] + key[len(head) :]] = value
    return old


@pytest.mark.parametrize("layout", NESTED_LAYOUTS)
def test_a_state_dict_of_a_nested_wrapper_loads_into_the_flat_one(layout):
    """Keys saved as model.model.*, model.constraints.i.* and the outer constraints.j.* were
    unexpected (and the flat ones missing), so a strict load and a resume failed."""
    saved, fresh = nested_wrapper(0.5, seed=0), nested_wrapper(0.7, seed=1)
    fresh.load_state_dict(renamed(saved.state_dict(), NESTED_LAYOUTS[layout]))
    assert float(fresh.constraints[1].b) == 0.5
    x = torch.rand(3, 9, dtype=F64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(fresh(x), saved(x))


def test_a_state_dict_of_a_nested_wrapper_that_fits_no_nesting_is_left_to_torch():
    """Keys that look nested but fit no split are not renamed: a strict load lists them as
    torch does, ``strict=False`` returns them, and load_weights names the mismatch."""
    from physml.training.checkpoint import CheckpointError, load_weights

    layout = NESTED_LAYOUTS["constrain(constrain(m, walls, mass), keep)"]
    old = renamed(nested_wrapper(0.5, seed=0).state_dict(), layout)
    old["constraints.1.keep.G"] = old["constraints.0.keep.G"]
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: .*model\.model\."):
        nested_wrapper(0.5, seed=1).load_state_dict(old)
    result = nested_wrapper(0.5, seed=1).load_state_dict(old, strict=False)
    assert "constraints.1.keep.G" in result.unexpected_keys
    assert any(key.startswith("model.model.") for key in result.unexpected_keys)
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_weights(nested_wrapper(0.5, seed=1), {"model": old}, "run", "this model")


def test_a_model_holding_a_model_of_other_weights_is_reported_by_torch():
    """A wrapped model with its own child ``model`` (as OnGrid has) whose saved weights do not
    fit: torch's lists, not a nested-layout refusal, also under ``strict=False``."""
    grid = Grid1D(9, 0.0, 1.0)

    def wrapped(width):
        holder = nn.Sequential()
        holder.add_module("model", nn.Sequential(nn.Linear(9, width), nn.Linear(width, 9)))
        return constrain(holder.double(), mass_conservation(grid, 0.5))

    state = wrapped(4).state_dict()
    state["model.model.2.weight"] = torch.zeros(9, 9, dtype=F64)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: .model\.model\.2"):
        wrapped(4).load_state_dict(state)
    assert wrapped(4).load_state_dict(state, strict=False).unexpected_keys == [
        "model.model.2.weight"
    ]


def test_a_model_holding_a_model_is_not_taken_for_a_nested_wrapper():
    grid = Grid1D(9, 0.0, 1.0)
    holder = nn.Sequential()
    holder.add_module("model", nn.Linear(9, 9).double())
    wrapped = constrain(holder, mass_conservation(grid, 0.5))
    state = wrapped.state_dict()
    assert sorted(state) == [
        "constraints.0.G",
        "constraints.0.b",
        "model.model.bias",
        "model.model.weight",
    ]
    wrapped.load_state_dict(state)


def test_a_nested_wrapper_called_with_its_own_constraints_lists_the_inner_ones_first():
    grid = Grid1D(9, 0.0, 1.0)
    walls = BoundaryCondition(Dirichlet(0.0, 1.0), grid)
    nested = constrain(constrain(Outputs("tensor"), walls), mass_conservation(grid, 0.5))
    x = torch.rand(2, 9, dtype=F64, generator=torch.Generator().manual_seed(1))
    out = nested(x, constraints=[walls, mass_conservation(grid, 0.7)])
    trapezoid = torch.tensor([1.0, 2, 2, 2, 2, 2, 2, 2, 1], dtype=F64) / 16
    torch.testing.assert_close(out @ trapezoid, torch.full((2,), 0.7, dtype=F64))
    with pytest.raises(ConstraintError, match="must match the wrapped ones one by one"):
        nested(x, constraints=[mass_conservation(grid, 0.7)])
