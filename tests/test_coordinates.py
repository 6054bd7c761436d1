"""Position channels for the FNO (``physml.models.coordinates``, ``fast_fno(periodic=True)``,
``fast_fno(position=GridCoordinates(...))``).

The periodic coordinates are checked against their formula, against the wrap of the box (smooth
there, where neuralop's grid embedding jumps) and across resolutions; the periodic FNO against
neuralop's FNO without an embedding fed the same channels by hand; ``physml train`` against the
file's domain and against checkpoints that predate the choice. The grid coordinates of a
non-periodic file are checked against the pdes grids' own coordinates, node and cell, at two
resolutions, and an FNO run's channel on a fine grid against the coarse one at the same points.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from neuralop.layers.embeddings import GridEmbeddingND
from neuralop.models import FNO

from pdes import Grid1D
from physml.models import GridCoordinates, PeriodicCoordinates, fast_fno


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
    assert isinstance(build(state["model_config"], data)[0].positional_embedding, GridCoordinates)


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


# ------------------------------------------------------------- coordinates of a non-periodic grid


@pytest.mark.parametrize("kind", ["node", "cell"])
@pytest.mark.parametrize("n", [33, 65])
def test_grid_coordinates_are_the_pdes_grids_points_on_each_axis(kind, n):
    """2-D box [0, 1] × [-1, 2]: each channel is the pdes grid's coordinate along its axis, as a
    fraction of the box."""
    x = Grid1D(n, 0.0, 1.0, kind=kind).coordinates()
    y = Grid1D(n - 8, -1.0, 2.0, kind=kind).coordinates()
    inputs = torch.randn(2, 3, n, n - 8, dtype=torch.float64)
    out = GridCoordinates(2, kind)(inputs)
    assert out.shape == (2, 5, n, n - 8) and out.dtype == torch.float64
    torch.testing.assert_close(out[:, :3], inputs, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3], x[:, None].expand(2, n, n - 8), rtol=0, atol=1e-15)
    fraction = (y + 1.0) / 3.0
    torch.testing.assert_close(out[:, 4], fraction[None, :].expand(2, n, n - 8), rtol=0, atol=1e-15)


def test_a_point_keeps_its_coordinate_bit_for_bit_on_a_finer_grid():
    """Nodes j of 33 are nodes 2j of 65 and 3j of 97; cell k of 11 is cell 3k + 1 of 33."""
    nodes = {n: GridCoordinates(1)(torch.zeros(1, 1, n))[0, 1] for n in (33, 65, 97)}
    assert torch.equal(nodes[65][::2], nodes[33]) and torch.equal(nodes[97][::3], nodes[33])
    assert nodes[33][0] == 0 and nodes[33][-1] == 1  # the walls
    cells = {n: GridCoordinates(1, "cell")(torch.zeros(1, 1, n))[0, 1] for n in (11, 33)}
    assert torch.equal(cells[33][1::3], cells[11])


def test_grid_coordinates_refuse_bad_dims_kinds_and_inputs():
    with pytest.raises(ValueError, match="kind must be one of"):
        GridCoordinates(1, "nodes")
    for dims in (0, -1, 1.0, True, "1"):
        with pytest.raises(ValueError, match="dims must be a positive integer"):
            GridCoordinates(dims)
    expected = "x must be (batch, channel, *space) with 2 space axes, got shape (1, 1, 8)"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        GridCoordinates(2)(torch.zeros(1, 1, 8))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        GridCoordinates(1)(torch.zeros(1, 1, 8, dtype=torch.int64))
    options = dict(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=1)
    with pytest.raises(ValueError, match=r"as many space axes as n_modes \(4,\) \(1\), got 2"):
        fast_fno(position=GridCoordinates(2), **options)
    with pytest.raises(ValueError, match="not both"):
        fast_fno(position=GridCoordinates(1), periodic=True, **options)
    with pytest.raises(TypeError, match="position must be a GridCoordinates or None"):
        fast_fno(position=[(0, 1)], **options)


def test_the_fno_with_grid_coordinates_has_the_grid_fnos_weights_fed_the_coordinates():
    """Same seed, same parameters and state_dict as neuralop's layout; the channel differs."""
    options = dict(n_modes=(4,), in_channels=2, out_channels=1, hidden_channels=4, n_layers=2)
    torch.manual_seed(0)
    grid = fast_fno(**options)
    torch.manual_seed(0)
    nodes = fast_fno(position=GridCoordinates(1), **options)
    before, after = grid.state_dict(), nodes.state_dict()
    assert list(before) == list(after)
    for key, value in before.items():
        same = torch.equal(value, after[key]) if torch.is_tensor(value) else value == after[key]
        assert same, key
    reference = FNO(positional_embedding=None, **{**options, "in_channels": 3})
    reference.load_state_dict(nodes.state_dict())
    x = torch.randn(3, 2, 17)
    fed = torch.cat([x, torch.linspace(0, 1, 17).expand(3, 1, 17)], 1)
    expected = reference(fed)
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(nodes(x), expected, rtol=0, atol=1e-5 * scale)


def _heat_run(tmp_path, sizes=(33, 65)):
    """``physml train --model fno`` (1 step) on a heat file of ``sizes[0]`` nodes; the
    checkpoint's state and each size's file."""
    from physml.cli import main
    from physml.data import generate_dataset, load
    from physml.training import load_checkpoint

    files = {}
    for nx in sizes:
        path = generate_dataset("heat", tmp_path / f"heat{nx}.h5", 3, progress=False, nx=nx)
        files[nx] = (path, load(path))
    run = tmp_path / "run"
    command = ["train", "--data", str(files[sizes[0]][0]), "--model", "fno", "--task", "operator"]
    command += ["--modes", "4", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    command += ["--schedule", "constant", "--val-fraction", "0"]
    assert main([*command, "--steps", "1", "--out", str(run)]) == 0
    return run, load_checkpoint(run), files


def test_an_fno_run_reads_the_files_coordinates_at_33_and_65_nodes(tmp_path):
    """Trained on 33 nodes of [0, 1], built for either file: its position channel is that file's
    x, and at the 33 shared points the 65-node channel is the 33-node one, bit for bit (neuralop's
    k/n put x = 1 at 0.9697 and at 0.9846)."""
    from physml.training.families import build

    run, state, files = _heat_run(tmp_path)
    config = state["model_config"]
    assert config["position"] == "node"
    channels = {}
    for nx, (_, data) in files.items():
        model, pairs = build(config, data)
        model.load_state_dict(state["model"])
        inputs = torch.stack([pairs[i][0] for i in range(len(pairs))])
        channels[nx] = model.positional_embedding(inputs)[:, -1]
        x = data.coords["x"].to(channels[nx].dtype)
        assert torch.equal(channels[nx], x.expand_as(channels[nx]))
        assert model(inputs).shape == inputs.shape
    assert torch.equal(channels[65][..., ::2], channels[33])


def test_an_fno_run_on_cells_places_the_centres_of_the_files_box(tmp_path):
    """A file whose ``grid_kind`` is ``cell``: a finer file's centres get their own places in the
    box, half a cell in from each wall."""
    from physml.data import PDEData
    from physml.training.families import build, model_config, with_domain

    def cells(nx, ny):
        x = Grid1D(nx, 0.0, 2.0, kind="cell").coordinates()
        y = Grid1D(ny, -1.0, 1.0, kind="cell").coordinates()
        u = torch.randn(4, 3, nx, ny, dtype=torch.float64)
        attrs = {"boundary": "dirichlet", "grid_kind": "cell"}
        return PDEData(u, torch.arange(3.0), {"x": x, "y": y}, {}, attrs), x, y

    coarse, _, _ = cells(8, 6)
    config = with_domain(model_config("fno", "rollout", {"modes": 2, "hidden": 4}), coarse)
    assert config["position"] == "cell"
    fine, x, y = cells(16, 12)
    model, pairs = build(config, fine)
    out = model.positional_embedding(pairs[0][0][None])[0, -2:]
    x, y = x / 2.0, (y + 1.0) / 2.0  # as fractions of the box [0, 2] x [-1, 1]
    torch.testing.assert_close(out[0], x[:, None].float().expand(16, 12), rtol=0, atol=1e-7)
    torch.testing.assert_close(out[1], y[None, :].float().expand(16, 12), rtol=0, atol=1e-7)


def test_a_run_recorded_before_the_position_rebuilds_neuralops_grid_and_resumes(tmp_path):
    """A checkpoint without ``position`` was trained on neuralop's ``k/n``: build, evaluate and
    resume give that model, bit for bit the FNO of neuralop's grid embedding, and keep the
    record as it was."""
    from physml.cli import main
    from physml.training import load_checkpoint
    from physml.training.checkpoint import save_checkpoint
    from physml.training.families import build, fno_options

    run, state, files = _heat_run(tmp_path, sizes=(17,))
    del state["model_config"]["position"]  # as written before the position was recorded
    save_checkpoint(run, state)
    path, data = files[17]
    model, pairs = build(state["model_config"], data)
    assert isinstance(model.positional_embedding, GridEmbeddingND)
    assert model.positional_embedding.grid_boundaries == [[0.0, 1.0]]
    model.load_state_dict(state["model"])
    shapes = tuple(tuple(part.shape) for part in pairs[0])
    reference = fast_fno(**fno_options(state["model_config"], data, shapes))
    reference.load_state_dict(state["model"])
    inputs = torch.stack([pairs[i][0] for i in range(len(pairs))])
    assert torch.equal(model(inputs), reference(inputs))
    position = model.positional_embedding(inputs)[:, -1]
    expected = (torch.arange(17) / 17).expand_as(position)
    torch.testing.assert_close(position, expected, rtol=0, atol=1e-7)
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(path)]) == 0
    command = ["train", "--data", str(path), "--model", "fno", "--task", "operator"]
    command += ["--modes", "4", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    command += ["--schedule", "constant", "--val-fraction", "0"]
    assert main([*command, "--steps", "2", "--out", str(run)]) == 0
    assert json.loads((run / "report.json").read_text())["resumed_from"] == 1
    assert load_checkpoint(run)["model_config"] == state["model_config"]


# ------------------------------------------------------------------------- small cases by hand


def test_coordinates_on_four_and_five_points_by_hand():
    """Nodes on 5 points: 0, ¼, ½, ¾, 1; cells on 4: ⅛, ⅜, ⅝, ⅞; the periodic phases on 4
    points are quarter turns: cos 1, 0, −1, 0 and sin 0, 1, 0, −1."""
    nodes = GridCoordinates(1)(torch.zeros(1, 1, 5, dtype=torch.float64))[0, 1]
    assert nodes.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    cells = GridCoordinates(1, "cell")(torch.zeros(1, 1, 4, dtype=torch.float64))[0, 1]
    assert cells.tolist() == [0.125, 0.375, 0.625, 0.875]
    periodic = PeriodicCoordinates(1)(torch.zeros(1, 1, 4, dtype=torch.float64))[0, 1:]
    expected = torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(periodic, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("module", [PeriodicCoordinates(1), GridCoordinates(1)])
def test_an_input_with_more_space_axes_than_dims_is_refused(module):
    expected = "x must be (batch, channel, *space) with 1 space axes, got shape (1, 1, 4, 4)"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        module(torch.zeros(1, 1, 4, 4))


def test_grid_coordinates_follow_the_inputs_dtype_and_size_from_call_to_call():
    """One module called on float32, then float64 and another size: each time the channels have
    the input's dtype and size (0.1 = 1/10 on 11 nodes is not a float32 number)."""
    module = GridCoordinates(1)
    single = module(torch.zeros(1, 1, 11))[0, 1]
    double = module(torch.zeros(2, 1, 11, dtype=torch.float64))[:, 1]
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    assert double[0, 1].item() == 0.1 and single[1].item() != 0.1
    assert module(torch.zeros(1, 1, 3, dtype=torch.float64))[0, 1].tolist() == [0.0, 0.5, 1.0]
    assert module(torch.zeros(1, 1, 11))[0, 1].dtype == torch.float32


def test_grid_coordinates_follow_the_inputs_device_from_call_to_call():
    """Called on one device, then on another (``meta`` stands in for a GPU on a CPU machine):
    the channels are on the input's device each time."""
    module = GridCoordinates(1)
    assert module(torch.zeros(1, 1, 5, device="meta")).device.type == "meta"
    out = module(torch.zeros(1, 1, 5))
    assert out.device.type == "cpu" and out[0, 1].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert module(torch.zeros(1, 1, 5, device="meta")).device.type == "meta"
