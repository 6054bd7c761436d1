"""Periodic coordinates for the FNO (``physml.models.coordinates``, ``fast_fno(periodic=True)``).

The coordinates are checked against their formula, against the wrap of the box (smooth there,
where neuralop's grid embedding jumps) and across resolutions; the periodic FNO against neuralop's
FNO without an embedding fed the same channels by hand; ``physml train`` against the file's
domain and against checkpoints that predate the choice.
"""

from __future__ import annotations

import math

import pytest
import torch
from neuralop.layers.embeddings import GridEmbeddingND
from neuralop.models import FNO

from physml.models import PeriodicCoordinates, fast_fno


def by_formula(batch: int, space: tuple[int, ...]) -> torch.Tensor:
    """cos and sin of 2π k / n per axis, built point by point."""
    out = torch.empty(batch, 2 * len(space), *space, dtype=torch.float64)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in space)).reshape(-1, len(space)):
        where = tuple(int(i) for i in index)
        for axis, (k, n) in enumerate(zip(where, space, strict=True)):
            out[(slice(None), 2 * axis, *where)] = math.cos(2 * math.pi * k / n)
            out[(slice(None), 2 * axis + 1, *where)] = math.sin(2 * math.pi * k / n)
    return out


@pytest.mark.parametrize("space", [(7,), (8,), (4, 6), (3, 4, 5)])
def test_the_channels_follow_their_formula_after_the_input(space):
    x = torch.randn(2, 3, *space, dtype=torch.float64)
    out = PeriodicCoordinates(len(space))(x)
    assert out.shape == (2, 3 + 2 * len(space), *space) and out.dtype == x.dtype
    torch.testing.assert_close(out[:, :3], x, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3:], by_formula(2, space), rtol=0, atol=1e-15)


def test_they_are_smooth_across_the_wrap_where_the_grid_embedding_jumps():
    n = 32
    x = torch.zeros(1, 1, n)
    periodic = PeriodicCoordinates(1)(x)[0, 1:]
    grid = GridEmbeddingND(in_channels=1, dim=1, grid_boundaries=[[0, 1]])(x)[0, 1:]
    step = 2 * math.pi / n  # the largest change of cos or sin between neighbours
    wrap = (periodic[:, 0] - periodic[:, -1]).abs().max()
    inside = (periodic[:, 1:] - periodic[:, :-1]).abs().max()
    assert wrap <= step + 1e-6 and inside <= step + 1e-6
    assert (grid[:, 0] - grid[:, -1]).abs().max() > 0.9  # x = 0 beside x = 1 - 1/n


def test_a_finer_grid_of_the_same_period_gives_the_same_values_at_the_same_places():
    coarse = PeriodicCoordinates(2)(torch.zeros(1, 1, 6, 10))
    fine = PeriodicCoordinates(2)(torch.zeros(1, 1, 12, 20))
    torch.testing.assert_close(fine[..., ::2, ::2], coarse, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [0, -1, 1.5, True, "2"])
def test_dims_must_be_a_positive_integer(dims):
    with pytest.raises(ValueError, match="dims must be a positive integer"):
        PeriodicCoordinates(dims)


def test_an_input_with_another_number_of_axes_is_refused():
    with pytest.raises(ValueError, match=r"x must be \(batch, channel, \*space\) with 2 space"):
        PeriodicCoordinates(2)(torch.zeros(1, 1, 8))


@pytest.mark.parametrize("x", [torch.zeros(1, 1, 8, dtype=torch.int64), [[[0.0] * 8]]])
def test_an_input_that_is_not_a_floating_point_tensor_is_refused(x):
    """An integer tensor would get its cosines and sines truncated to 0 and ±1."""
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        PeriodicCoordinates(1)(x)


@pytest.mark.parametrize("n_modes, space", [((6,), (16,)), ((4, 4), (12, 10))])
def test_the_periodic_fno_is_neuralops_fno_fed_the_coordinates(n_modes, space):
    """Same weights in neuralop's FNO without an embedding, the channels appended by hand."""
    options = dict(n_modes=n_modes, out_channels=2, hidden_channels=8, n_layers=2)
    torch.manual_seed(0)
    model = fast_fno(in_channels=3, periodic=True, **options)
    reference = FNO(in_channels=3 + 2 * len(space), positional_embedding=None, **options)
    reference.load_state_dict(model.state_dict())
    assert model.in_channels == 3 and model.lifting.fcs[0].in_channels == 3 + 2 * len(space)
    x = torch.randn(2, 3, *space, requires_grad=True)
    expected = reference(torch.cat([x, by_formula(2, space).float()], 1))
    actual = model(x)
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 * scale)
    actual.square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_the_periodic_fno_refuses_an_embedding_a_flag_that_is_not_a_bool_and_nan():
    options = dict(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=1)
    with pytest.raises(ValueError, match="periodic=True sets the positional embedding"):
        fast_fno(periodic=True, positional_embedding=None, **options)
    with pytest.raises(TypeError, match="periodic must be True or False, got 'yes'"):
        fast_fno(periodic="yes", **options)
    with pytest.raises(TypeError, match="needs in_channels"):
        fast_fno(periodic=True, n_modes=(4,), out_channels=1, hidden_channels=4, n_layers=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        fast_fno(periodic=True, **options)(torch.full((1, 1, 8), float("nan")))


def test_physml_train_gives_the_fno_periodic_coordinates_on_a_periodic_file_only(tmp_path):
    """The checkpoint records the choice; one written before it (no ``periodic``) rebuilds
    neuralop's grid embedding, which its weights were trained with."""
    from physml.cli import main
    from physml.data import generate_dataset, load
    from physml.training import load_checkpoint
    from physml.training.families import build

    runs = {}
    for pde, options in (("burgers", {"nx": 32}), ("heat", {"nx": 17})):
        path = generate_dataset(pde, tmp_path / f"{pde}.h5", 6, progress=False, **options)
        run = tmp_path / pde
        command = ["train", "--data", str(path), "--model", "fno", "--task", "operator"]
        command += ["--modes", "4", "--hidden", "4", "--layers", "1", "--batch", "2"]
        assert main([*command, "--steps", "1", "--out", str(run), "--quiet"]) == 0
        runs[pde] = load_checkpoint(run), load(path)
    state, data = runs["burgers"]
    assert state["model_config"]["periodic"] is True
    model, _ = build(state["model_config"], data)
    assert isinstance(model.positional_embedding, PeriodicCoordinates)
    model.load_state_dict(state["model"])
    older = {k: v for k, v in state["model_config"].items() if k != "periodic"}
    assert isinstance(build(older, data)[0].positional_embedding, GridEmbeddingND)
    state, data = runs["heat"]
    assert state["model_config"]["periodic"] is False
    assert isinstance(build(state["model_config"], data)[0].positional_embedding, GridEmbeddingND)


def test_boon_gives_the_periodic_fno_its_boundary_values_exactly():
    """The coordinates enter before the lifting, outside the kernel layers BOON corrects."""
    from pdes import Dirichlet, Grid1D
    from physml import constrain
    from physml.constraints import BoundaryCondition

    torch.manual_seed(0)
    fno = fast_fno(
        n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=8, n_layers=2, periodic=True
    )
    model = constrain(fno, BoundaryCondition(Dirichlet(0.5, -1.0), Grid1D(33, 0.0, 1.0)))
    assert model.kernel
    y = model(torch.randn(4, 1, 33))
    torch.testing.assert_close(y[..., 0], torch.full((4, 1), 0.5), rtol=0, atol=1e-5)
    torch.testing.assert_close(y[..., -1], torch.full((4, 1), -1.0), rtol=0, atol=1e-5)
