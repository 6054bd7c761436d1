"""BOON and boundary constraints on n-D outputs: 2-D walls, multi-step (x, t), mixed, periodic;
the operator seam of a model the toolkit has never seen; moving and saving a constrained FNO.

Every check of a condition is independent of the code under test: Dirichlet values are compared
with the prescribed numbers, Neumann fluxes with :func:`pdes.heat.one_sided_flux`, and the
decoupling of a corrected layer with Jacobians of the plain layer built from unit spikes.
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from neuralop.models import FNO
from torch import nn

from pdes import Dirichlet, Grid1D, Neumann, Periodic
from pdes.heat import one_sided_flux
from physml import ConstraintError, Ensemble, Gaussian, constrain
from physml.constraints import BoundaryCondition, KernelLayer, OperatorModel
from physml.constraints.operator import CorrectedLayer, probe_in_closed_form

TOL = 1e-5
NX, NY, NT = 12, 10, 9  # cavity walls (non-square, to catch axis mix-ups); (x, t) sizes
GX, GY = Grid1D(NX), Grid1D(NY)
TIMES = torch.linspace(0.1, 0.9, NT, dtype=torch.float64)


def fno(
    in_channels=2, out_channels=1, hidden=8, layers=3, modes=(5, 4), seed=0, conv="neuralop", **kw
) -> FNO:
    """neuralop's FNO (``conv="neuralop"``) or the toolkit's ``fast_fno`` (``"lean"``)."""
    from physml.models import fast_fno

    torch.manual_seed(seed)
    return (FNO if conv == "neuralop" else fast_fno)(
        n_modes=modes,
        in_channels=in_channels,
        out_channels=out_channels,
        hidden_channels=hidden,
        n_layers=layers,
        **kw,
    )


def through(output, *conditions: BoundaryCondition, time=None):
    """``output`` (tensor, Gaussian or Ensemble) constrained through the door, as it stands."""
    return constrain(nn.Identity(), *conditions)(output, time=time)


def close(actual: torch.Tensor, expected, scale: torch.Tensor | None = None) -> None:
    """``|actual - expected| < TOL`` (relative to the field's size when it exceeds 1)."""
    actual = actual.detach().double()
    expected = torch.as_tensor(expected, dtype=torch.float64).expand_as(actual)
    size = 1.0 if scale is None else max(1.0, scale.detach().abs().max().item())
    error = (actual - expected).abs().max().item()
    assert error < TOL * size, f"error {error:.3g}"


def flux(u: torch.Tensor, axis: int, dx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Second-order one-sided ``du/dx`` at both walls of ``axis`` (the pdes.heat formula)."""
    return one_sided_flux(u.detach().double().movedim(axis, -1), dx)


# ------------------------------------------------------------------------------------------
# Cavity: Dirichlet on four walls, lid per sample


LIDS = torch.tensor([1.0, -0.5, 2.0])


def cavity(lids=LIDS) -> list[BoundaryCondition]:
    """No-slip walls and a lid moving at ``lids`` on the top wall (``y = 1``, axis -1, right)."""
    return [
        BoundaryCondition(Dirichlet(0.0, 0.0), GX, axis=-2),
        BoundaryCondition(Dirichlet(0.0, lids), GY, axis=-1),
    ]


def assert_cavity(u: torch.Tensor, lids=LIDS) -> None:
    """Lid row (corners included: the lid condition comes last) and the three fixed walls."""
    top = lids.double().reshape(-1, *[1] * (u.ndim - 2)).expand_as(u[..., -1])
    close(u[..., :, -1], top)
    close(u[..., :, 0], 0.0)
    close(u[..., 0, :-1], 0.0)
    close(u[..., -1, :-1], 0.0)


def train_steps(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int = 4):
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        optimiser.step()
    return model


@pytest.mark.parametrize("hidden, layers", [(8, 2), (6, 3)])
def test_cavity_walls_untrained_and_trained(hidden, layers):
    model = constrain(fno(3, 4, hidden, layers), *cavity())
    assert model.kernel
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, NX, NY, generator=gen)
    out = model(x)
    assert out.shape == (3, 4, NX, NY) and out.dtype == torch.float32
    assert_cavity(out)
    train_steps(model, x, torch.randn(3, 4, NX, NY, generator=gen))
    with torch.no_grad():
        assert_cavity(model(torch.randn(3, 3, NX, NY, generator=gen)))
    assert_cavity(model(torch.randn(3, 3, NX, NY, generator=gen)))


def test_per_batch_conditions_and_per_channel_values():
    base = fno(3, 2)
    model = constrain(base, *cavity(torch.zeros(3)))
    lids = torch.tensor([0.3, 4.0, -1.0])
    x = torch.randn(3, 3, NX, NY)
    assert_cavity(model(x, constraints=cavity(lids)), lids)
    assert_cavity(model(x), torch.zeros(3))  # the wrapped values again after the call
    # vx and vy in two channels: the lid moves vx only -> per-channel values (batch, channel, 1)
    per_channel = torch.stack([lids, torch.zeros(3)], 1)[..., None]
    walls = [cavity()[0], BoundaryCondition(Dirichlet(0.0, per_channel), GY, axis=-1)]
    out = constrain(base, *walls)(x)
    assert_cavity(out[:, :1], lids)
    assert_cavity(out[:, 1:], torch.zeros(3))
    different = [BoundaryCondition(Neumann(0.0, 0.0), GX, axis=-2), cavity()[1]]
    with pytest.raises(ConstraintError, match="only values may differ"):
        model(x, constraints=different)


# ------------------------------------------------------------------------------------------
# Multi-step (x, t): conditions on x with values along t


def heater(t: float) -> float:
    return 3.0 * math.sin(math.pi * t) + 0.5


def inflow(t: float) -> float:
    return -1.0 - 2.0 * t


AMPLITUDES = torch.tensor([1.0, -2.0, 0.5, 3.0])


def x_t_conditions(kind: str) -> list[BoundaryCondition]:
    """Time-dependent, non-zero values on both sides of x (axis -2), times along axis -1."""
    if kind == "neumann":
        bc = Neumann(inflow, heater)
    elif kind == "dirichlet":
        bc = Dirichlet(lambda t: math.cos(2.0 * t), lambda t: AMPLITUDES * t)
    else:  # mixed: Dirichlet on the left, Neumann on the right
        return [
            BoundaryCondition(Dirichlet(lambda t: math.cos(2.0 * t)), GX, -2, TIMES, side="left"),
            BoundaryCondition(Neumann(right=heater), GX, -2, TIMES, side="right"),
        ]
    return [BoundaryCondition(bc, GX, axis=-2, time=TIMES, time_axis=-1)]


def assert_x_t(u: torch.Tensor, kind: str) -> None:
    times = TIMES.tolist()
    left_flux, right_flux = flux(u, -2, GX.dx)
    if kind in ("dirichlet", "mixed"):
        close(u[..., 0, :], torch.tensor([math.cos(2.0 * t) for t in times]))
    if kind == "dirichlet":
        close(u[..., -1, :], AMPLITUDES[:, None, None].double() * TIMES)
    if kind == "neumann":
        close(left_flux, torch.tensor([inflow(t) for t in times]), scale=u)
    if kind in ("neumann", "mixed"):
        close(right_flux, torch.tensor([heater(t) for t in times]), scale=u)


@pytest.mark.parametrize("kind", ["neumann", "dirichlet", "mixed"])
def test_multi_step_time_dependent_values(kind):
    assert min(abs(inflow(t)) for t in TIMES.tolist()) > 0.1  # non-zero fluxes on both sides
    model = constrain(fno(2, 1, modes=(5, 3)), *x_t_conditions(kind))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, NX, NT, generator=gen)
    assert_x_t(model(x), kind)
    train_steps(model, x, torch.randn(4, 1, NX, NT, generator=gen))
    with torch.no_grad():
        assert_x_t(model(torch.randn(4, 2, NX, NT, generator=gen)), kind)


def test_values_along_time_equal_a_tensor_of_values():
    """A function of time on a time grid is the same as its values given as ``(batch, nt)``."""
    u = torch.randn(4, 2, NX, NT)
    along = through(u, BoundaryCondition(Dirichlet(0.0, lambda t: AMPLITUDES * t), GX, -2, TIMES))
    table = AMPLITUDES[:, None].double() * TIMES  # (batch, nt)
    direct = through(u, BoundaryCondition(Dirichlet(0.0, table), GX, axis=-2))
    torch.testing.assert_close(along, direct)
    close(direct[:, :, -1, :], table[:, None, :])
    assert torch.equal(direct[:, :, 1:, :][:, :, :-1], u[:, :, 1:-1, :])


def test_time_given_at_call_and_ensemble_members():
    condition = BoundaryCondition(Neumann(inflow, heater), GX, axis=-2)
    model = constrain(fno(2, 1, modes=(5, 3)), condition)
    out = model(torch.randn(2, 2, NX, NT), time=TIMES)
    assert_x_t(out, "neumann")
    members = torch.randn(5, 4, 1, NX, NT)
    assert_x_t(through(Ensemble(members), condition, time=TIMES).samples, "neumann")


# ------------------------------------------------------------------------------------------
# Odd grids, either spectral layer


@pytest.mark.parametrize("conv", ["neuralop", "lean"])
@pytest.mark.parametrize("setup", ["cavity-33x33", "x-t-65x25"])
def test_walls_hold_on_the_benchmarks_odd_grids_with_either_spectral_layer(setup, conv):
    """The BOON benchmark's cavity and (x, t) grids have an odd non-last axis, where neuralop
    2.0's layer lands each frequency one bin off and ``LeanSpectralConv`` in its own: the walls
    hold with either, the probes read from the weights."""
    if setup == "cavity-33x33":
        grid, shape, channels = Grid1D(33), (33, 33), (2, 3)
        conditions = [
            BoundaryCondition(Dirichlet(0.0, 0.0), grid, axis=-2),
            BoundaryCondition(Dirichlet(0.0, LIDS), grid, axis=-1),
        ]
    else:
        grid, shape, channels = Grid1D(65), (65, 25), (2, 1)
        times = torch.linspace(0.04, 1.0, 25, dtype=torch.float64)
        bc = Neumann(inflow, heater)
        conditions = [BoundaryCondition(bc, grid, axis=-2, time=times, time_axis=-1)]

    def check(u: torch.Tensor) -> None:
        if setup == "cavity-33x33":
            assert_cavity(u)
            return
        left, right = flux(u, -2, grid.dx)
        close(left, torch.tensor([inflow(t) for t in times.tolist()]), scale=u)
        close(right, torch.tensor([heater(t) for t in times.tolist()]), scale=u)

    model = constrain(fno(*channels, hidden=6, layers=2, modes=(8, 8), conv=conv), *conditions)
    assert model.kernel and len(model.correction.groups) == 1  # read in closed form
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, channels[0], *shape, generator=gen)
    check(model(x))
    train_steps(model, x, torch.randn(3, channels[1], *shape, generator=gen), steps=2)
    with torch.no_grad():
        check(model(torch.randn(3, channels[0], *shape, generator=gen)))


# ------------------------------------------------------------------------------------------
# Mixed sides, corners and the order of conditions


def test_mixed_kinds_on_two_axes_and_corners():
    """Neumann on x then Dirichlet on y: each met away from the corners, Dirichlet wins there."""
    conditions = [
        BoundaryCondition(Neumann(0.7, -1.2), GX, axis=-2),
        BoundaryCondition(Dirichlet(right=0.25), GY, axis=-1, side="right"),
    ]
    u = torch.randn(3, 2, NX, NY)
    for out in (constrain(fno(2, 2), *conditions)(u), through(u, *conditions)):
        close(out[..., -1], 0.25)
        left, right = flux(out[..., :-1], -2, GX.dx)  # the corners on y = 1 belong to the lid
        close(left, 0.7, scale=out)
        close(right, -1.2, scale=out)
    assert torch.equal(out[..., 1:-1, :-1], u[..., 1:-1, :-1])
    assert torch.equal(out[..., :, 0], through(u, conditions[0])[..., :, 0])


def test_one_side_changes_one_wall_only():
    u = torch.randn(2, 1, 17)
    out = through(u, BoundaryCondition(Neumann(right=2.0), Grid1D(17), side="right"))
    assert torch.equal(out[..., :-1], u[..., :-1])
    close(flux(out, -1, 1 / 16)[1], 2.0, scale=out)


@pytest.mark.parametrize("kind", ["dirichlet", "neumann"])
def test_a_one_sided_layer_leaves_the_free_wall_to_the_elimination(kind):
    """A layer under a right-side condition, given values for both sides (the ``left, right``
    shorthand): only the right wall is set, the left one stays the eliminated ``K̃x``."""
    bc = Dirichlet(right=2.0) if kind == "dirichlet" else Neumann(right=2.0)
    blocks = fno(2, 1).fno_blocks
    condition = BoundaryCondition(bc, GY, axis=-1, side="right")
    layer = CorrectedLayer(blocks.convs[0], blocks.fno_skips[0], [condition])
    x = torch.randn(2, 8, NX, NY)
    left, right = torch.tensor(5.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    with torch.no_grad():
        eliminated = layer.linear(x)
        y = layer(x, left, right)
    assert torch.equal(y[..., :-1], eliminated[..., :-1])
    if kind == "dirichlet":
        assert (y[..., -1] == 2.0).all()
    else:
        close(flux(y, -1, GY.dx)[1], 2.0, scale=y)


def test_layer_values_need_one_pair_per_condition():
    blocks = fno(2, 1).fno_blocks
    layer = CorrectedLayer(blocks.convs[0], blocks.fno_skips[0], cavity())
    y = torch.randn(2, 8, NX, NY)
    with pytest.raises(ValueError, match=r"values must hold one pair per condition \(2\), got 1"):
        layer.set_values(y, [(None, None)])


# ------------------------------------------------------------------------------------------
# Periodic


def test_periodic_on_a_periodic_grid_is_the_plain_fno():
    grid = Grid1D(NY, 0.0, 2 * math.pi, periodic=True)
    base = fno(2, 1)
    x = torch.randn(2, 2, NX, NY)
    model = constrain(base, BoundaryCondition(Periodic(), grid, axis=-1))
    assert model.kernel
    assert torch.equal(model(x), base(x))
    u = torch.randn(3, 1, NY)
    assert through(u, BoundaryCondition(Periodic(), grid)) is u
    one_d = FNO(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=6, n_layers=2)
    assert torch.equal(constrain(one_d, BoundaryCondition(Periodic(), grid))(u), one_d(u))


def test_periodic_on_a_node_grid_sets_walls_to_their_mean():
    model = constrain(fno(2, 1), BoundaryCondition(Periodic(), GX, axis=-2), *cavity()[1:])
    out = model(torch.randn(3, 2, NX, NY))
    close(out[..., 0, :-1] - out[..., -1, :-1], 0.0)
    close(out[..., :, -1], LIDS[:, None, None].expand(3, 1, NX))


def test_periodic_on_a_node_grid_sets_the_layer_walls_to_their_mean_without_elimination():
    """A hidden layer under a periodic condition on a node grid is the plain ``K x`` with both
    walls replaced by their mean: no probe column reaches the interior."""
    blocks = fno(2, 1).fno_blocks
    condition = BoundaryCondition(Periodic(), GX, axis=-2)
    layer = CorrectedLayer(blocks.convs[1], blocks.fno_skips[1], [condition])
    x = torch.randn(2, 8, NX, NY)
    with torch.no_grad():
        plain, y = layer.plain(x), layer(x)
    assert torch.equal(y[..., 1:-1, :], plain[..., 1:-1, :])
    mean = (plain[..., 0, :] + plain[..., -1, :]) / 2
    torch.testing.assert_close(y[..., 0, :], mean)
    torch.testing.assert_close(y[..., -1, :], mean)


# ------------------------------------------------------------------------------------------
# The corrected layer, probed along each axis


def jacobian(fn, shape: tuple[int, ...]) -> torch.Tensor:
    """``J[input index, output index]`` of an affine ``fn`` on inputs ``(channel, *space)``."""
    size = math.prod(shape)
    spikes = torch.eye(size).reshape(size, *shape)
    zero = fn(torch.zeros(1, *shape))
    return (fn(spikes) - zero).reshape(size, size)


def wall_pivots(J: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """Independent ``K̃₀₀ = K₀₀ - K₀ₙKₙ₀/Kₙₙ`` per channel and wall point from wall spikes."""
    J = J.reshape(*shape, *shape).double()
    d = len(shape)
    first = J.select(axis - d, 0).sum(tuple(range(d - 1)))  # all channels, whole wall
    last = J.select(axis - d, -1).sum(tuple(range(d - 1)))
    k00, kn0 = first.select(axis, 0), first.select(axis, -1)
    k0n, knn = last.select(axis, 0), last.select(axis, -1)
    return k00 - k0n * kn0 / knn, knn


def assert_decoupled(corrected: torch.Tensor, shape, axis: int, diagonal=None) -> None:
    """Rows 0 and N of ``axis`` depend only on the same channel and node of the input.

    Wall points at the corners with other walls are skipped; ``diagonal``, when given, holds the
    expected ``(first, last)`` coefficients ``(channel, *wall)``.
    """
    d = len(shape)
    J = corrected.reshape(*shape, *shape)  # (input channel, *space, output channel, *space)
    scale = J.abs().max()
    wall = list(shape[1:])
    del wall[axis]
    points = torch.cartesian_prod(*[torch.arange(1, s - 1) for s in wall]).reshape(-1, len(wall))
    for row, index in enumerate((0, shape[axis] - 1)):
        rows = J.select(axis, index)  # the output's wall: (input channel, *space, channel, *wall)
        for c in range(shape[0]):
            for w in points.tolist():
                column = rows[(Ellipsis, c, *w)].clone()  # its dependence on every input node
                same = [c, *w]
                same.insert(d + axis, index)  # the input node at the same place on the wall
                value = column[tuple(same)].item()
                column[tuple(same)] = 0.0
                assert column.abs().max() < 1e-5 * scale, (row, c, w)
                if diagonal is not None:
                    expected = diagonal[row][(c, *w)].item()
                    assert abs(value - expected) < 1e-4 * max(1.0, abs(expected)), (row, c, w)


LAYER_SHAPE = (3, 7, 6)  # (channel, nx, ny): odd non-last axis
PROBES = [("neuralop", False), ("neuralop", True), ("lean", False), ("lean", True)]
"""(spectral layer, probes read from the weights in closed form rather than by running it)"""


def probed_layer(
    axes: tuple[int, ...], conv: str = "neuralop", closed: bool | None = None
) -> tuple[CorrectedLayer, FNO]:
    """Layer 1 of a small FNO corrected along ``axes``, its probes read from the weights
    (``closed``), from ``K`` run on the spikes (``False``) or as the layer reads them (``None``)."""
    model = fno(2, 1, hidden=LAYER_SHAPE[0], layers=2, modes=(4, 3), conv=conv)
    blocks = model.fno_blocks
    grids = {-2: Grid1D(LAYER_SHAPE[1]), -1: Grid1D(LAYER_SHAPE[2])}
    conditions = [BoundaryCondition(Dirichlet(), grids[a], axis=a) for a in axes]
    layer = CorrectedLayer(blocks.convs[1], blocks.fno_skips[1], conditions)
    like = torch.zeros(1, *LAYER_SHAPE)
    if closed:
        assert probe_in_closed_form([layer], like)
    else:
        layer.probe(like, None if closed is None else layer.plain(layer.spikes(like)))
    return layer, model


@pytest.mark.parametrize("conv, closed", PROBES)
@pytest.mark.parametrize("axis", [-2, -1])
def test_probed_layer_decouples_one_axis(axis, conv, closed):
    layer, _ = probed_layer((axis,), conv, closed)
    K = jacobian(layer.plain, LAYER_SHAPE)
    corrected = jacobian(layer.linear, LAYER_SHAPE)
    pivot, knn = wall_pivots(K, LAYER_SHAPE, axis)
    assert_decoupled(corrected, LAYER_SHAPE, axis, diagonal=(pivot, knn))
    assert (corrected - K).abs().max() > 1e-3  # the correction did something


@pytest.mark.parametrize("conv, closed", PROBES)
def test_probed_layer_decouples_both_axes_in_order(conv, closed):
    layer, _ = probed_layer((-2, -1), conv, closed)
    first_only, _ = probed_layer((-2,), conv, closed)
    corrected = jacobian(layer.linear, LAYER_SHAPE)
    # axis -1 is eliminated on K̃ of axis -2, whose pivots come from its own Jacobian
    pivot, knn = wall_pivots(jacobian(first_only.linear, LAYER_SHAPE), LAYER_SHAPE, -1)
    assert_decoupled(corrected, LAYER_SHAPE, -1, diagonal=(pivot, knn))
    assert_decoupled(corrected, LAYER_SHAPE, -2)
    # an interior input node leaves every wall of the layer's output unchanged
    J = corrected.reshape(*LAYER_SHAPE, *LAYER_SHAPE)
    interior = J[:, 1:-1, 1:-1]
    walls = torch.cat([interior[..., 0, :], interior[..., -1, :]], -1).abs().max()
    walls = max(walls, torch.cat([interior[..., 0], interior[..., -1]], -1).abs().max())
    assert walls < 1e-5 * J.abs().max()


def test_perturbing_an_interior_node_leaves_boon_walls_and_fluxes_alone():
    """End to end: Neumann values depend on the interior, Dirichlet ones do not at all."""
    model = constrain(fno(2, 1), *cavity())
    x = torch.randn(3, 2, NX, NY)
    bumped = x.clone()
    bumped[:, :, NX // 2, NY // 2] += 1.0
    a, b = model(x), model(bumped)
    assert torch.equal(a[..., 0, :], b[..., 0, :]) and torch.equal(a[..., :, -1], b[..., :, -1])
    assert (a - b).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------
# Gradients, probe reuse


@pytest.mark.parametrize("name", ["cavity", "x-t neumann"])
def test_gradients_reach_every_parameter(name):
    if name == "cavity":
        model, x = constrain(fno(3, 2), *cavity()), torch.randn(3, 3, NX, NY)
    else:
        model, x = (
            constrain(fno(2, 1, modes=(5, 3)), *x_t_conditions("neumann")),
            torch.randn(4, 2, NX, NT),
        )
    model.train()
    (model(x) ** 2).mean().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


def test_probes_are_reused_without_gradient_and_refreshed_after_a_step():
    model = constrain(fno(3, 2), *cavity())
    x = torch.randn(3, 3, NX, NY)
    with torch.no_grad():
        first = model(x)
        assert not model.correction.layers[0].needs_probe(torch.zeros(1, 8, NX, NY))
        torch.testing.assert_close(model(x), first)  # data alone: batched rounding differs
    train_steps(model, x, torch.zeros(3, 2, NX, NY), steps=1)
    with torch.no_grad():
        after = model(x)
    fresh = model(x)  # with gradients: probed in this forward
    assert (after - first).abs().max() > 1e-4
    torch.testing.assert_close(after, fresh.detach())


def _fast_fno_1d(seed: int):
    from physml.models.spectral import fast_fno

    torch.manual_seed(seed)
    return fast_fno(n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=2)


@pytest.mark.parametrize("closed_form", [True, False])
def test_probes_read_in_inference_mode_are_not_reused_for_a_backward_pass(closed_form, monkeypatch):
    """A frozen model validated under ``inference_mode``, then differentiated in its input (an
    inverse problem): the stored probes are inference tensors and must be read again."""
    from physml.constraints import operator as seam

    if not closed_form:
        monkeypatch.setattr(seam, "probe_in_closed_form", lambda layer, like: False)
    model = _fast_fno_1d(0).requires_grad_(False)
    wrapped = constrain(model, BoundaryCondition(Dirichlet(1.0, 2.0), Grid1D(33))).eval()
    x = torch.randn(2, 1, 33)
    with torch.inference_mode():
        wrapped(x)
    given = x.clone().requires_grad_(True)
    out = wrapped(given)
    out.sum().backward()
    assert torch.isfinite(given.grad).all() and given.grad.abs().sum() > 0
    assert (out[:, 0, 0] == 1.0).all() and (out[:, 0, -1] == 2.0).all()


def test_probes_follow_parameters_put_in_place_of_the_old_ones():
    """``load_state_dict(..., assign=True)`` replaces the parameter objects: the probes of the
    old weights must not be reused for the new ones."""
    condition = BoundaryCondition(Dirichlet(1.0, 2.0), Grid1D(33))
    a, b = _fast_fno_1d(0), _fast_fno_1d(1)
    x = torch.randn(3, 1, 33)
    with torch.no_grad():
        expected = constrain(b, condition)(x)
        wrapped = constrain(a, condition)
        wrapped(x)  # probes of a's weights, kept
        a.load_state_dict(b.state_dict(), assign=True)
        torch.testing.assert_close(wrapped(x), expected, rtol=0, atol=1e-6)


def test_kept_wall_values_follow_the_shape_of_the_input():
    """Values kept for inputs (2, 1, 13, 8) must not be reused for (2, 1, 13, 6): the same
    named error as a fresh wrapper's, not a bare broadcasting error."""
    from physml.models.spectral import fast_fno

    torch.manual_seed(0)
    model = fast_fno(n_modes=(6, 4), in_channels=1, out_channels=1, hidden_channels=3, n_layers=2)
    left = torch.randn(2, 8, dtype=torch.float64)
    wrapped = constrain(model, BoundaryCondition(Dirichlet(left, 0.0), Grid1D(13), axis=-2))
    with torch.no_grad():
        out = wrapped(torch.randn(2, 1, 13, 8))
        torch.testing.assert_close(out[:, 0, 0].double(), left, rtol=0, atol=1e-6)
        with pytest.raises(ValueError, match=r"Dirichlet.left must be .* \(2, 6\)"):
            wrapped(torch.randn(2, 1, 13, 6))


def test_probes_kept_for_inference_follow_the_size_of_an_unconstrained_axis():
    """Probes read for inputs (2, 1, 7, 13) are not reused for (2, 1, 9, 13): neuralop's
    responses to the spikes on the walls of axis -1 vary along the odd axis -2."""
    condition = BoundaryCondition(Dirichlet(1.0, -1.0), Grid1D(13), axis=-1)
    model = fno(1, 1, hidden=4, layers=2, modes=(4, 4))
    x = torch.randn(2, 1, 9, 13)
    with torch.no_grad():
        expected = constrain(model, condition)(x)
        wrapped = constrain(model, condition)
        wrapped(torch.randn(2, 1, 7, 13))
        out = wrapped(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert (out[..., 0] == 1.0).all() and (out[..., -1] == -1.0).all()


N_DENSE = 9
DENSE_WALLS = (0.5, -1.5)
FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}


class DenseKernel(nn.Module):
    """``K x = A x`` along the last axis (one channel), ``A`` a parameter or a buffer, or, for
    ``seed=None``, a fixed circular stencil with no tensors at all (any dtype)."""

    def __init__(self, seed: int | None, buffer: bool = False) -> None:
        super().__init__()
        if seed is None:
            self.A = None
            return
        gen = torch.Generator().manual_seed(seed)
        A = torch.randn(N_DENSE, N_DENSE, generator=gen) + 4 * torch.eye(N_DENSE)
        if buffer:
            self.register_buffer("A", A)
        else:
            self.A = nn.Parameter(A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.A is not None:
            return x @ self.A.T
        stencil = torch.tensor([0.2, 1.0, -0.3], dtype=x.dtype).view(1, 1, 3)
        return F.conv1d(F.pad(x, (1, 1), mode="circular"), stencil) + 0.1 * x.roll(3, -1)

    def matrix(self) -> torch.Tensor:
        """``A`` in float64, read off the unit vectors."""
        eye = torch.eye(N_DENSE, dtype=torch.float64)
        kernel = self if self.A is None else (lambda x: x @ self.A.double().T)
        return kernel(eye[:, None])[:, 0].T


class DenseOperator(nn.Module):
    """One :class:`DenseKernel` layer, its output the model's (the operator seam)."""

    n_dim = 1
    out_channels = 1

    def __init__(self, seed: int | None, buffer: bool = False) -> None:
        super().__init__()
        self.kernel = DenseKernel(seed, buffer)

    def kernel_layers(self) -> list[KernelLayer]:
        return [KernelLayer(self.kernel, None)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel(x)


def dense_boon(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """BOON's layer for ``K = A`` and Dirichlet :data:`DENSE_WALLS`, by hand in float64: the
    columns ``A[:, 0]``, ``A[:, N]`` added with the weights that make row 0 ``K̃₀₀ x₀`` and row
    N ``Kₙₙ x_N``, then the walls set."""
    x = x.double()
    kx = x @ A.T
    corners = A[[0, -1]][:, [0, -1]]
    pivot = A[0, 0] - A[0, -1] * A[-1, 0] / A[-1, -1]
    rows = torch.stack([pivot * x[..., 0] - kx[..., 0], A[-1, -1] * x[..., -1] - kx[..., -1]])
    d = torch.linalg.solve(corners, rows.reshape(2, -1)).reshape(rows.shape)
    out = kx + d[0, ..., None] * A[:, 0] + d[1, ..., None] * A[:, -1]
    out[..., 0], out[..., -1] = DENSE_WALLS
    return out


def dense_condition() -> BoundaryCondition:
    return BoundaryCondition(Dirichlet(*DENSE_WALLS), Grid1D(N_DENSE))


def test_dense_operator_is_boon_by_hand():
    net = DenseOperator(0)
    x = torch.randn(3, 1, N_DENSE, dtype=torch.float64)
    out = constrain(net.double(), dense_condition(), pivot_floor=0.0)(x)
    torch.testing.assert_close(out, dense_boon(net.kernel.matrix(), x), rtol=1e-12, atol=1e-12)


def test_probes_kept_for_inference_follow_buffers_changed_in_place():
    """``K``'s weights in a buffer: ``load_state_dict`` copies new ones in place, and the probes
    kept for inference must be read again."""
    net, other = DenseOperator(0, buffer=True), DenseOperator(1, buffer=True)
    wrapped = constrain(net, dense_condition(), pivot_floor=0.0)
    x = torch.randn(3, 1, N_DENSE)
    with torch.no_grad():
        torch.testing.assert_close(
            wrapped(x).double(), dense_boon(net.kernel.matrix(), x), **FLOAT32
        )
        net.load_state_dict(other.state_dict())
        out = wrapped(x)
    torch.testing.assert_close(out.double(), dense_boon(other.kernel.matrix(), x), **FLOAT32)


@pytest.mark.parametrize("first", [torch.float32, torch.float64])
def test_probes_kept_for_inference_follow_the_dtype_of_the_input(first):
    """A layer with no tensors runs in the input's dtype: probes (and spikes) kept for one dtype
    are not reused for the other, so a float64 input gets float64 probes and a float32 one a
    float32 output."""
    net = DenseOperator(None)
    wrapped = constrain(net, dense_condition(), pivot_floor=0.0)
    x = torch.randn(3, 1, N_DENSE, dtype=torch.float64)
    expected = dense_boon(net.kernel.matrix(), x)
    second = torch.float64 if first == torch.float32 else torch.float32
    with torch.no_grad():
        outs = {dtype: wrapped(x.to(dtype)) for dtype in (first, second)}
    for dtype, out in outs.items():
        assert out.dtype == dtype
    torch.testing.assert_close(outs[torch.float64], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[torch.float32].double(), expected, **FLOAT32)


def test_probes_kept_for_inference_follow_weights_written_through_data():
    """Writes through ``parameter.data`` (EMA, target networks) leave the version counters
    alone; the kept probes must still be read again for the new weights."""
    net = DenseOperator(0)
    wrapped = constrain(net, dense_condition(), pivot_floor=0.0)
    x = torch.randn(3, 1, N_DENSE)
    changed = DenseOperator(1).kernel
    with torch.no_grad():
        wrapped(x)
        net.kernel.A.data.copy_(changed.A)
        out = wrapped(x)
    torch.testing.assert_close(out.double(), dense_boon(changed.matrix(), x), **FLOAT32)


@pytest.mark.parametrize("update", ["mul", "copy"])
def test_fno_probes_from_the_weights_follow_an_update_through_data(update):
    """A neuralop FNO (probes in closed form) after a Polyak-style ``.data`` update answers as a
    freshly wrapped FNO with the same weights, interior included."""
    condition = BoundaryCondition(Neumann(0.5, -0.5), Grid1D(33))

    def make(seed):
        torch.manual_seed(seed)
        return FNO(n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=8, n_layers=3)

    model, target = make(0), make(1)
    wrapped = constrain(model, condition)
    x = torch.rand(2, 1, 33)
    with torch.no_grad():
        before = wrapped(x)
        for parameter, new in zip(model.parameters(), target.parameters(), strict=True):
            if update == "mul":
                parameter.data.mul_(1.3)
            else:
                parameter.data.copy_(new)
        out = wrapped(x)
        fresh = make(2)
        fresh.load_state_dict(model.state_dict())
        expected = constrain(fresh, condition)(x)
    assert (expected - before).abs().max() > 1e-2 * expected.abs().max()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("net", ["fno", "dense"])
def test_probes_read_again_fingerprint_each_layer_once_per_forward(monkeypatch, net):
    """The weights' fingerprint is the costly part of the key the kept probes are checked
    against: a forward that reads the probes again (first use, a ``.data`` write) takes it once
    per layer and stores the probes under it, whether they come from the weights in closed form
    (an FNO) or from spikes run through the layer (a dense kernel)."""
    import physml.constraints.operator as operator

    taken = []
    real = operator.fingerprint
    monkeypatch.setattr(operator, "fingerprint", lambda tensors: taken.append(1) or real(tensors))
    if net == "fno":
        torch.manual_seed(0)
        model = FNO(n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=8, n_layers=3)
        condition, x, layers = (
            BoundaryCondition(Neumann(0.5, -0.5), Grid1D(33)),
            torch.rand(2, 1, 33),
            3,
        )
    else:
        model, condition, x, layers = (
            DenseOperator(0),
            dense_condition(),
            torch.randn(3, 1, N_DENSE),
            1,
        )
    wrapped = constrain(model, condition)
    with torch.no_grad():
        counts = []
        for write in (None, None, 1.3, None):
            if write is not None:
                for parameter in model.parameters():
                    parameter.data.mul_(write)
            taken.clear()
            out = wrapped(x)
            counts.append(len(taken))
        fresh = constrain(copy.deepcopy(model), condition)(x)
    assert counts == [layers] * 4
    torch.testing.assert_close(out, fresh, rtol=0, atol=1e-6)


def test_the_fingerprint_sees_writes_a_block_apart_and_in_the_tail():
    """The fingerprint sums blocks of values with the same fixed weights: a swap of two values
    that share a weight (one block apart), a write to the last few values and a write in a
    complex or half-precision tensor still change it; equal values give equal fingerprints."""
    from physml.constraints.base import fingerprint

    values = torch.randn(3 * 4096 + 5, generator=torch.Generator().manual_seed(0))
    assert fingerprint([values]) == fingerprint([values.clone()])
    swapped = values.clone()
    swapped[[7, 7 + 4096]] = values[[7 + 4096, 7]]
    tail = values.clone()
    tail[-1] += 1e-3
    for changed in (swapped, tail, values * (1 + 1e-4)):
        assert fingerprint([changed]) != fingerprint([values])
    spectral = torch.randn(4, 4, 9, dtype=torch.complex64)
    assert fingerprint([spectral]) != fingerprint([spectral.conj().resolve_conj()])
    half = values.half()
    assert fingerprint([half]) != fingerprint([half.flip(0)])


class GainedKernel(nn.Module):
    """``K x = gain · A x`` with ``gain`` a plain attribute: changing it leaves the weights as
    they are."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = DenseKernel(0)
        self.gain = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.kernel(x)


def test_forget_makes_the_next_forward_probe_again():
    """``K`` changed in a way its weights do not show: after ``wrapped.forget()`` the next
    forward reads the changed operator."""
    net = DenseOperator(0)
    net.kernel = GainedKernel()
    wrapped = constrain(net, dense_condition(), pivot_floor=0.0)
    layer = wrapped.correction.layers[0]
    x = torch.randn(3, 1, N_DENSE)
    A = net.kernel.kernel.matrix()
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x).double(), dense_boon(A, x), **FLOAT32)
        net.kernel.gain = -2.0
        assert not layer.needs_probe(x)
        wrapped.forget()
        assert layer.needs_probe(x)
        out = wrapped(x)
    torch.testing.assert_close(out.double(), dense_boon(-2.0 * A, x), **FLOAT32)


@pytest.mark.parametrize("closed_form", [True, False])
def test_a_wrapped_fno_deep_copies_after_a_training_step(closed_form, monkeypatch):
    """``best = copy.deepcopy(model)`` and ``AveragedModel`` after a step: probes read with
    gradients used to stay on the layers with the step's graph, and deepcopy refused them."""
    from torch.optim.swa_utils import AveragedModel

    from physml.constraints import operator as seam

    if not closed_form:
        monkeypatch.setattr(seam, "probe_in_closed_form", lambda layer, like: False)
    wrapped = constrain(_fast_fno_1d(0), BoundaryCondition(Dirichlet(1.0, 2.0), Grid1D(33)))
    x = torch.randn(2, 1, 33)
    train_steps(wrapped, x, torch.zeros(2, 1, 33), steps=1)
    best = copy.deepcopy(wrapped)
    AveragedModel(wrapped)
    with torch.no_grad():
        out = best(x)
        assert torch.equal(out, wrapped(x))
    assert (out[:, 0, 0] == 1.0).all() and (out[:, 0, -1] == 2.0).all()


def test_a_frozen_operator_takes_input_gradients_step_after_step():
    """An inverse problem: frozen weights (probes kept between forwards), gradients in the
    input. Probes read with the data batch used to keep its graph, so the second step's backward
    went through the first step's freed graph; each gradient is the by-hand BOON layer's."""
    net = DenseOperator(0).double().requires_grad_(False)
    wrapped = constrain(net, dense_condition(), pivot_floor=0.0)
    A = net.kernel.matrix()
    for seed in range(2):
        x = torch.randn(
            3, 1, N_DENSE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
        given, by_hand = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        wrapped(given).square().sum().backward()
        dense_boon(A, by_hand).square().sum().backward()
        torch.testing.assert_close(given.grad, by_hand.grad, rtol=1e-10, atol=1e-10)
    copy.deepcopy(wrapped)


def test_forget_on_a_model_without_kernel_correction_does_nothing():
    wrapped = constrain(nn.Identity(), dense_condition())
    wrapped.forget()
    out = wrapped(torch.zeros(2, 1, N_DENSE))
    assert (out[..., 0] == DENSE_WALLS[0]).all() and (out[..., -1] == DENSE_WALLS[1]).all()


# ------------------------------------------------------------------------------------------
# constrain on n-D outputs; Gaussians


def test_constrain_any_model_on_nd_outputs():
    class Smoother(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 3, 1, 1)

    out = constrain(Smoother(), *cavity())(torch.randn(3, 2, NX, NY))
    assert_cavity(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no kernel layers: the output seam, silently
        model = constrain(Smoother(), *x_t_conditions("neumann"))
    assert not model.kernel
    assert_x_t(model(torch.randn(4, 1, NX, NT)), "neumann")


def test_gaussian_on_last_axis_with_one_side():
    mean, var = torch.randn(2, NY, dtype=torch.float64), torch.rand(2, NY, dtype=torch.float64)
    out = through(Gaussian(mean, var), BoundaryCondition(Dirichlet(left=1.5), GY, side="left"))
    assert (out.mean[:, 0] == 1.5).all() and torch.equal(out.mean[:, 1:], mean[:, 1:])
    assert (out.cov[:, 0] == 0).all() and torch.equal(out.cov[:, 1:], var[:, 1:])
    with pytest.raises(ConstraintError, match="axis must be -1"):
        field = Gaussian(torch.zeros(2, NX, NY), torch.ones(2, NX, NY))
        through(field, BoundaryCondition(Dirichlet(), GX, axis=-2))


# ------------------------------------------------------------------------------------------
# Bad input


def test_bad_grids_sides_and_axes():
    with pytest.raises(ConstraintError, match="at least 4 nodes"):
        BoundaryCondition(Neumann(), Grid1D(3), axis=-2)
    with pytest.raises(ConstraintError, match="periodic axis has no boundary"):
        BoundaryCondition(Neumann(), Grid1D(8, periodic=True), axis=-2)
    with pytest.raises(ConstraintError, match="two-sided"):
        BoundaryCondition(Periodic(), GX, side="left")
    with pytest.raises(ValueError, match="side must be"):
        BoundaryCondition(Dirichlet(), GX, side="top")
    for axis in (0, 1, -1.0):
        with pytest.raises(ConstraintError, match="axis must be a negative int"):
            BoundaryCondition(Dirichlet(), GX, axis=axis)
    with pytest.raises(ConstraintError, match="time_axis must differ"):
        BoundaryCondition(Dirichlet(), GX, axis=-2, time=TIMES, time_axis=-2)
    with pytest.raises(ConstraintError, match="axis -3 does not exist"):
        constrain(fno(2, 1), BoundaryCondition(Dirichlet(), GX, axis=-3))
    with pytest.raises(ConstraintError, match="axis -3"):
        through(torch.randn(2, NX, NY), BoundaryCondition(Dirichlet(), GX, axis=-3))
    # one grid per axis and no periodic mixed with others, checked at wrap time for any model
    for model in (fno(2, 1), nn.Identity()):
        with pytest.raises(ConstraintError, match="cannot be mixed"):
            constrain(model, BoundaryCondition(Periodic(), GX, -2), cavity()[0])
        with pytest.raises(ConstraintError, match="on axis -2 is on .* on that axis"):
            constrain(model, cavity()[0], BoundaryCondition(Dirichlet(), Grid1D(NX, 0, 2), -2))
    # the same grid on another axis is fine
    constrain(nn.Identity(), BoundaryCondition(Dirichlet(), GX, -1), cavity()[0])


def test_bad_values_and_shapes():
    u = torch.randn(4, 1, NX, NT)
    cases = [
        (Dirichlet(torch.ones(3)), None),  # wrong batch
        (Dirichlet(torch.ones(4, NT + 1)), None),  # wrong wall size
        (Dirichlet(torch.ones(4, 2, NT)), None),  # wrong channel count
        (Dirichlet(lambda t: torch.ones(4, 2)), TIMES),  # a function on a time grid: (batch,)
    ]
    for bc, time in cases:
        with pytest.raises(ValueError, match="Dirichlet.left must be"):
            through(u, BoundaryCondition(bc, GX, axis=-2, time=time))
    with pytest.raises(ConstraintError, match=f"{NT + 1} times"):
        through(u, BoundaryCondition(Dirichlet(inflow), GX, axis=-2, time=torch.zeros(NT + 1)))
    with pytest.raises(ConstraintError, match=f"{NY} points along axis -2"):
        through(torch.randn(4, 1, NY, NT), BoundaryCondition(Dirichlet(), GX, axis=-2))
    with pytest.raises(ValueError, match="NaN or inf"):
        through(u, BoundaryCondition(Dirichlet(lambda t: math.inf), GX, -2, TIMES))
    with pytest.raises(ValueError, match="time must hold finite"):
        BoundaryCondition(Dirichlet(), GX, axis=-2, time=[0.0, math.nan])
    with pytest.raises(ValueError, match="x must be a tensor"):
        constrain(fno(3, 2), *cavity())(torch.randn(3, 3, NX, NY + 1))
    with pytest.raises(ConstraintError, match="functions of time"):
        constrain(fno(2, 1), BoundaryCondition(Neumann(inflow), GX, -2))(torch.randn(4, 2, NX, NT))
    with pytest.raises(ConstraintError, match="x contains NaN or inf"):
        constrain(fno(3, 2), *cavity())(torch.full((3, 3, NX, NY), math.nan))


def test_a_constant_of_the_batch_length_that_is_also_the_wall_length_is_per_sample_with_a_warning():
    """Batch ``NT`` on a wall of ``NT`` nodes (e.g. a training loop's last batch): ``(NT,)`` is
    read per sample, as at any other batch size, with a warning at the user's line naming the
    spellings that say which is meant; either spelling does what it says, without a warning."""
    u = torch.zeros(NT, 1, NX, NT)
    ramp = torch.arange(NT, dtype=torch.float64)
    message = (
        rf"Dirichlet.left of shape \({NT},\) was read as one value per sample.* "
        rf"\(1, {NT}\) .* \({NT}, 1\)"
    )
    with pytest.warns(UserWarning, match=message) as caught:
        read = through(u, BoundaryCondition(Dirichlet(ramp), GX, axis=-2, side="left"))
    assert [w.filename for w in caught] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_sample = through(u, BoundaryCondition(Dirichlet(ramp[:, None]), GX, -2, side="left"))
        profile = through(u, BoundaryCondition(Dirichlet(ramp[None]), GX, -2, side="left"))
        four = through(u[:4], BoundaryCondition(Dirichlet(ramp[:4]), GX, axis=-2, side="left"))
    for b in range(NT):
        close(read[b, 0, 0], float(b))
        close(per_sample[b, 0, 0], float(b))
        close(profile[b, 0, 0], ramp)
    close(four[:, 0, 0], ramp[:4, None].expand(4, NT))


def test_a_function_of_time_gives_one_value_per_sample_at_a_number_time_without_a_warning():
    u = torch.zeros(NT, 1, NX, NT)
    ramp = torch.arange(NT, dtype=torch.float64)
    bc = BoundaryCondition(Dirichlet(lambda s: s * ramp), GX, axis=-2, side="left", time=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = through(u, bc)
    for b in range(NT):
        close(out[b, 0, 0], 0.5 * b)


def test_one_value_for_a_batch_of_one_on_a_wall_of_one_node_is_not_ambiguous():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bc = BoundaryCondition(Dirichlet(torch.ones(1), torch.full((1,), 2.0)), GX, -2)
        out = through(torch.zeros(1, 1, NX, 1), bc)
    close(out[:, :, 0], 1.0)
    close(out[:, :, -1], 2.0)


def test_a_wrong_value_shape_is_reported_as_passed_with_the_forms_of_this_output():
    line = Grid1D(7)
    expected = (
        "Dirichlet.left must be a number, one value per sample (3,), or a tensor (3, 1) "
        "(batch, channel) for outputs with this wall, got shape (4,)"
    )
    with pytest.raises(ValueError) as caught:
        through(torch.zeros(3, 1, 7), BoundaryCondition(Dirichlet(torch.ones(4)), line))
    assert str(caught.value) == expected
    expected = (
        f"Dirichlet.left must be a number, one value per sample (4,), or a tensor (4, {NT}) "
        f"(batch, *wall) or (4, 1, {NT}) (batch, channel, *wall) for outputs with this wall, "
        f"got shape (4, {NT + 1})"
    )
    with pytest.raises(ValueError) as caught:
        bc = Dirichlet(torch.ones(4, NT + 1))
        through(torch.zeros(4, 1, NX, NT), BoundaryCondition(bc, GX, axis=-2, side="left"))
    assert str(caught.value) == expected


def test_one_time_in_an_array_on_an_output_without_a_time_axis_is_that_time():
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    line = Grid1D(7)
    u = through(
        torch.zeros(2, 1, 7), BoundaryCondition(Dirichlet(lambda s: s, -1.0), line), time=t[5:6]
    )
    close(u[..., 0], 0.5)
    close(u[..., -1], -1.0)
    with pytest.raises(ConstraintError, match=r"time holds 2 times.* float\(t\[k\]\)"):
        BoundaryCondition(Dirichlet(lambda s: s), line, time=t[5:7])
    with pytest.raises(ConstraintError, match=rf"{NY} points along time_axis -1 .*float\(t\[k\]\)"):
        through(
            torch.zeros(2, 1, NX, NY), BoundaryCondition(Dirichlet(lambda s: s), GX, -2, t[5:6])
        )


def test_model_that_is_not_an_fno_falls_back_or_is_refused():
    class Mixer(torch.nn.Module):
        def forward(self, x):
            return x.flip(-1).cumsum(-2)

    x = torch.randn(3, 2, NX, NY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no kernel layers: the output seam, silently
        model = constrain(Mixer(), *cavity())
        assert not constrain(Mixer(), *cavity(), kernel=False).kernel
    assert not model.kernel
    assert_cavity(model(x))
    with pytest.raises(
        ConstraintError, match="Mixer cannot take BoundaryCondition at the operator"
    ):
        constrain(Mixer(), *cavity(), kernel=True)
    padded = fno(2, 1, domain_padding=0.25)
    with pytest.warns(UserWarning, match=r"cannot take the kernel correction \(.*domain padding"):
        model = constrain(padded, *cavity())
    assert not model.kernel
    assert_cavity(model(x))


def test_three_axes_of_a_3d_fno():
    """Neumann on x, then Dirichlet on y and z: each met away from later conditions' walls."""
    grids = Grid1D(7), Grid1D(6), Grid1D(5)
    conditions = [
        BoundaryCondition(Neumann(0.5, -0.5), grids[0], axis=-3),
        BoundaryCondition(Dirichlet(1.0, 2.0), grids[1], axis=-2),
        BoundaryCondition(Dirichlet(3.0, 4.0), grids[2], axis=-1),
    ]
    model = constrain(fno(1, 1, hidden=4, layers=2, modes=(3, 3, 3)), *conditions)
    assert model.kernel
    u = model(torch.randn(2, 1, 7, 6, 5))
    close(u[..., 0], 3.0)
    close(u[..., -1], 4.0)
    close(u[..., 0, 1:-1], 1.0)
    close(u[..., -1, 1:-1], 2.0)
    left, right = flux(u[..., 1:-1, 1:-1], -3, grids[0].dx)
    close(left, 0.5, scale=u)
    close(right, -0.5, scale=u)


def test_pivot_floor_bounds_the_pivots_and_keeps_the_others_exact():
    floor = 0.5  # between the test layer's smallest pivot/column ratio (~0.1) and the others
    exact, model = probed_layer((-2,))
    blocks = model.fno_blocks
    grid = Grid1D(LAYER_SHAPE[1])
    condition = [BoundaryCondition(Dirichlet(), grid, axis=-2)]
    floored = CorrectedLayer(blocks.convs[1], blocks.fno_skips[1], condition, pivot_floor=floor)
    floored.probe(torch.zeros(1, *LAYER_SHAPE))
    (reference,), (guarded,) = exact._probes[1], floored._probes[1]
    scale = reference.first.square().mean(dim=-2).sqrt()  # RMS of p₀ along x, written out
    small = reference.pivot.abs() < floor * scale
    assert small.any() and not small.all(), "the test layer should have pivots on both sides"
    torch.testing.assert_close(guarded.pivot[~small], reference.pivot[~small])
    torch.testing.assert_close(guarded.pivot.abs()[small], floor * scale[small])
    assert torch.equal(torch.sign(guarded.pivot[small]), torch.sign(reference.pivot[small]))


@pytest.mark.parametrize("floor", [-0.1, math.inf, math.nan])
def test_pivot_floor_out_of_range_is_refused(floor):
    blocks = fno(2, 1).fno_blocks
    with pytest.raises(ValueError, match=f"pivot_floor must be a finite number >= 0, got {floor}"):
        CorrectedLayer(blocks.convs[0], blocks.fno_skips[0], cavity(), pivot_floor=floor)


# ------------------------------------------------------------------------------------------
# The operator seam of a model the toolkit has never seen (physml.constraints.OperatorModel)


class TinyNet(nn.Module):
    """A 1-D operator network: 1x1 lifting, two layers ``x -> gelu(conv(x) + skip(x))``, 1x1
    projection; ``conv`` a learned size-5 convolution (circular or zero padded).

    ``skip_first`` calls ``skip`` before ``conv`` (the FNO's order); otherwise the plain
    ``conv(h) + skip(h)``. Each layer's input and pre-activation are kept in ``seen``.
    """

    n_dim = 1

    def __init__(self, out_channels=1, width=5, padding_mode="circular", skip_first=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.out_channels = out_channels
        self.skip_first = skip_first
        self.lift = nn.Conv1d(1, width, 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, 5, padding=2, padding_mode=padding_mode) for _ in range(2)
        )
        self.skips = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(2))
        self.project = nn.Conv1d(width, out_channels, 1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.clear()
        h = self.lift(x)
        for conv, skip in zip(self.convs, self.skips, strict=True):
            if self.skip_first:
                s = skip(h)
                pre = conv(h) + s
            else:
                pre = conv(h) + skip(h)
            self.seen.append((h, pre))
            h = F.gelu(pre)
        return self.project(h)


class TinyOperator(TinyNet):
    """:class:`TinyNet` offering the operator seam."""

    def kernel_layers(self) -> list[KernelLayer]:
        return [KernelLayer(c, s) for c, s in zip(self.convs, self.skips, strict=True)]


N_TINY = 21
G_TINY = Grid1D(N_TINY)


def tiny_condition(kind: str) -> BoundaryCondition:
    bc = Dirichlet(0.5, -1.5) if kind == "dirichlet" else Neumann(2.0, -1.0)
    return BoundaryCondition(bc, G_TINY)


def assert_tiny(u: torch.Tensor, kind: str, tol: float = TOL) -> None:
    if kind == "dirichlet":
        assert (u[..., 0] - 0.5).abs().max() < tol and (u[..., -1] + 1.5).abs().max() < tol
    else:
        left, right = flux(u, -1, G_TINY.dx)
        scale = max(1.0, u.detach().abs().max().item())
        assert (left - 2.0).abs().max() < tol * scale and (right + 1.0).abs().max() < tol * scale


@pytest.mark.parametrize("skip_first", [False, True])
@pytest.mark.parametrize("kind", ["dirichlet", "neumann"])
def test_operator_model_meets_condition_in_every_layer(kind, skip_first):
    net = TinyOperator(out_channels=2, skip_first=skip_first)
    assert isinstance(net, OperatorModel)
    model = constrain(net, tiny_condition(kind))
    assert model.kernel and len(model.correction.layers) == 2
    x = torch.randn(4, 1, N_TINY)
    out = model(x)
    assert out.shape == (4, 2, N_TINY)
    assert_tiny(out, kind)
    # every hidden layer's pre-activation is the corrected layer (walls met in every channel)
    for layer, (h, pre) in zip(model.correction.layers, net.seen, strict=True):
        assert_tiny(pre, kind)
        left, right = tiny_condition(kind).bc.left, tiny_condition(kind).bc.right
        expected = layer(h, torch.tensor(left), torch.tensor(right))
        torch.testing.assert_close(pre, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net(x), net(x))  # hooks are gone: the plain net
    assert (net(x) - out).abs().max() > 1e-3


@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_operator_model_layer_rows_decoupled(padding_mode):
    width = 5
    net = TinyOperator(width=width, padding_mode=padding_mode)
    model = constrain(net, tiny_condition("dirichlet"), pivot_floor=0.0)  # exact elimination
    layer = model.correction.layers[0]
    layer.probe(torch.zeros(1, width, N_TINY))
    # perturb the layer's interior input nodes: rows 0 and N of the eliminated operator stay
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(3, width, N_TINY, generator=gen)
    bumped = h.clone()
    bumped[..., 1:-1] += torch.randn(3, width, N_TINY - 2, generator=gen)
    plain, corrected = layer.plain(h), layer.linear(h)
    plain_bumped, corrected_bumped = layer.plain(bumped), layer.linear(bumped)
    assert (plain[..., [0, -1]] - plain_bumped[..., [0, -1]]).abs().max() > 1e-2  # K couples
    torch.testing.assert_close(corrected_bumped[..., [0, -1]], corrected[..., [0, -1]])
    assert (corrected_bumped - corrected)[..., 1:-1].abs().max() > 1e-2
    # and row 0 (N) of channel c depends on input row 0 (N) of channel c alone: unit spikes
    J = jacobian(layer.linear, (width, N_TINY)).reshape(width, N_TINY, width, N_TINY)
    scale = J.abs().max()
    for row in (0, N_TINY - 1):
        for c in range(width):
            column = J[:, :, c, row].clone()  # (input channel, input node)
            assert column[c, row].abs() > 1e-3 * scale
            column[c, row] = 0.0
            assert column.abs().max() < 1e-5 * scale, (row, c)
    # with the wall values set, the layer's rows are the values whatever the interior
    y = model.correction.layers[0](bumped, torch.tensor(0.5), torch.tensor(-1.5))
    assert (y[..., 0] == 0.5).all() and (y[..., -1] == -1.5).all()


def test_operator_model_refused_without_kernel_layers():
    condition = tiny_condition("dirichlet")
    with pytest.raises(
        ConstraintError,
        match=r"TinyNet cannot take BoundaryCondition at the operator seam: no kernel layers.*"
        r"kernel_layers\(\), n_dim and out_channels",
    ):
        constrain(TinyNet(), condition, kernel=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = constrain(TinyNet(), condition)  # "auto": the output seam, silently
    assert not model.kernel
    assert_tiny(model(torch.randn(2, 1, N_TINY)), "dirichlet")

    class Empty(TinyOperator):
        def kernel_layers(self) -> list[KernelLayer]:
            return []

    with pytest.raises(ConstraintError, match="Empty cannot take .* kernel_layers\\(\\) lists no"):
        constrain(Empty(), condition, kernel=True)
    with pytest.warns(UserWarning, match="Empty cannot take the kernel correction"):
        assert not constrain(Empty(), condition).kernel
    with pytest.raises(ConstraintError, match="axis -2 does not exist: the operator has 1 spatial"):
        constrain(TinyOperator(), BoundaryCondition(Dirichlet(), Grid1D(4), axis=-2))


def test_operator_model_in_float64_and_train_mode_gradients():
    model = constrain(TinyOperator(out_channels=2), tiny_condition("neumann"))
    x = torch.randn(3, 1, N_TINY)
    single = model(x)
    double = model.to(torch.float64)(x.double())
    assert double.dtype == torch.float64 and model.model.seen[0][1].dtype == torch.float64
    assert_tiny(double, "neumann", tol=1e-12)
    torch.testing.assert_close(double, single.double(), rtol=1e-4, atol=1e-4)
    model.train()
    (model(x.double()) ** 2).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------
# Moving and saving a constrained FNO


def test_state_dict_round_trip_refreshes_probes():
    source = constrain(fno(3, 2, seed=0), *cavity())
    target = constrain(fno(3, 2, seed=1), *cavity())
    x = torch.randn(3, 3, NX, NY)
    with torch.no_grad():
        stale = target(x)  # probes of the seed-1 weights, kept for inference
    state = source.state_dict()  # the FNO's tensors (boundary conditions hold none)
    assert all(k.startswith("model.") and torch.is_tensor(v) for k, v in state.items())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True))  # strict: every key matches
    with torch.no_grad():
        expected, loaded = source(x), target(x)
    assert torch.equal(loaded, expected)
    assert (loaded - stale).abs().max() > 1e-3
    assert_cavity(loaded)


def test_a_float64_input_to_a_float32_fno_is_refused_by_name():
    model = constrain(fno(3, 2), *cavity())
    with pytest.raises(
        TypeError,
        match=r"x has dtype torch.float64 but the FNO's weights are torch.float32: pass x.float",
    ):
        model(torch.randn(3, 3, NX, NY, dtype=torch.float64))


@pytest.mark.parametrize("cast", ["double", "to"])
def test_an_fno_cast_to_float64_as_a_module_is_refused_by_name(cast):
    """``.double()`` leaves neuralop's spectral weights complex64; ``.to(torch.float64)`` makes
    them real: the wrapped FNO says so instead of failing inside the probes or a matmul."""
    model = constrain(fno(3, 2), *cavity())
    if cast == "double":
        model = model.double()
    else:  # what .to(torch.float64) does, without using up torch's warn-once on the cast
        for parameter in model.parameters():
            parameter.data = (parameter.data.real if parameter.is_complex() else parameter.data).to(
                torch.float64
            )
    spectral = "complex64" if cast == "double" else "float64"
    for x in (torch.randn(3, 3, NX, NY, dtype=torch.float64), torch.randn(3, 3, NX, NY)):
        with pytest.raises(
            TypeError,
            match=rf"weights are torch.float64 and its spectral weights \['torch.{spectral}'\]: "
            "only float32 FNOs are supported as built.*cast every parameter by hand",
        ):
            model(x)


def test_fno_in_float64():
    """A constrained FNO with its weights in double precision: every wall met to 1e-12.

    Cast by hand: ``Module.to(torch.float64)`` would drop the imaginary part of neuralop's
    complex64 spectral weights (and ``.double()`` leaves them complex64), a neuralop limit.
    """
    model = constrain(fno(3, 2), *cavity())
    x = torch.randn(3, 3, NX, NY)
    single = model(x)
    for parameter in model.parameters():
        parameter.data = parameter.data.to(
            torch.complex128 if parameter.is_complex() else torch.float64
        )
    double = model(x.double())
    assert double.dtype == torch.float64
    top = LIDS.double()[:, None, None].expand(3, 2, NX)
    assert (double[..., -1] - top).abs().max() < 1e-12
    assert double[..., 0].abs().max() < 1e-12 and double[..., [0, -1], :-1].abs().max() < 1e-12
    torch.testing.assert_close(double, single.double(), rtol=1e-4, atol=1e-4)
