"""Interchange: PDEBench and The Well files read by ``load`` and written by ``convert``.

Nothing is downloaded: the foreign files are written here with h5py, following each format's
published layout (PDEBench's generators, The Well's ``docs/data_format.md``).
"""

import io
import json
import re

import h5py
import numpy as np
import pytest
import torch
from damage import flip_a_bit_of_the_first_chunk

import physml._checks
from physml.cli import main
from physml.data import (
    DatasetFileError,
    MultiStepDataset,
    PDEData,
    ShardError,
    SingleStepDataset,
    convert,
    generate_dataset,
    load,
    merge_shards,
    read_pdebench,
    read_well,
    write_pdebench,
    write_physml,
    write_well,
)
from physml.data.generate import sample_seed, write_checksummed
from physml.data.interchange import pdebench_grid_kind, well_restated

N, T, X, Y = 3, 5, 8, 6


def _ours_2d() -> PDEData:
    """A 2-D dataset with every kind of parameter and field our writers must carry."""
    rng = np.random.default_rng(0)

    def tensor(*shape):
        return torch.from_numpy(rng.normal(size=shape))

    return PDEData(
        u=tensor(N, T, X, Y),
        t=torch.linspace(0.0, 0.4, T, dtype=torch.float64),
        coords={
            "x": torch.linspace(0.0, 1.0, X, dtype=torch.float64),
            "y": torch.linspace(0.0, 2.0, Y, dtype=torch.float64),
        },
        params={
            "nu": torch.full((N,), 1e-3, dtype=torch.float64),
            "amplitude": tensor(N),
            "forcing": tensor(N, T),
            "force_x": tensor(N, X, Y),
            "force_y": tensor(N, X, Y),
        },
        fields={"vx": tensor(N, T, X, Y), "vy": tensor(N, T, X, Y)},
        attrs={"pde": "synthetic", "boundary": "periodic", "seed": 7},
        sample_index=torch.arange(N),
        sample_seed=torch.tensor([2**62 + 1, 7, 2**40], dtype=torch.int64),
    )


def _assert_same(back: PDEData, data: PDEData) -> None:
    """Bitwise equal u, t, coordinates, params, fields and sample index (dtype included)."""
    assert torch.equal(back.u, data.u) and back.u.dtype == data.u.dtype
    assert torch.equal(back.t, data.t)
    assert back.coords.keys() == data.coords.keys()
    for group in ("coords", "params", "fields"):
        ours, theirs = getattr(data, group), getattr(back, group)
        assert ours.keys() == theirs.keys(), group
        for name in ours:
            assert torch.equal(theirs[name], ours[name]), f"{group}[{name}]"
            assert theirs[name].dtype == ours[name].dtype
    assert torch.equal(back.sample_index, data.sample_index)
    assert (back.sample_seed is None) == (data.sample_seed is None)
    assert data.sample_seed is None or torch.equal(back.sample_seed, data.sample_seed)


def _pdebench_1d(path, n=4, steps=6, nx=16, t_entries=None, **overrides):
    """PDEBench 1-D layout: float32 ``tensor`` (N, T, X), cell centres, T + 1 times."""
    rng = np.random.default_rng(1)
    content = {
        "tensor": rng.normal(size=(n, steps, nx)).astype(np.float32),
        "x-coordinate": ((np.arange(nx) + 0.5) / nx).astype(np.float32),
        "t-coordinate": (np.arange(t_entries or steps + 1) * 0.05).astype(np.float32),
    }
    content.update(overrides)
    with h5py.File(path, "w") as f:
        for name, value in content.items():
            if value is not None:
                f.create_dataset(name, data=value)
    return content


def _pdebench_ns(path, velocity_shape=(2, 4, 8, 8, 2)):
    """PDEBench 2-D incompressible NS layout (``data_io.dims_for``)."""
    rng = np.random.default_rng(2)
    b, steps, nx, ny = 2, 4, 8, 8
    with h5py.File(path, "w") as f:
        f["velocity"] = rng.normal(size=velocity_shape).astype(np.float32)
        f["particles"] = rng.random((b, steps, nx, ny, 1)).astype(np.float32)
        f["force"] = rng.normal(size=(b, nx, ny, 2)).astype(np.float32)
        f["t"] = np.tile(np.arange(steps, dtype=np.float32) * 0.01, (b, 1))
        f.attrs["config"] = "NU: 0.01\nn_steps: 4\nseed: 0\n"
        f.attrs["latestIndex"] = steps - 1


def _well_2d(path, density=None, time=None, drop=()):
    """The Well layout (``docs/data_format.md``), 2-D, with a scalar, a vector, a tensor field,
    a field constant in time and samples, scalars, boundary conditions and root parameters."""
    rng = np.random.default_rng(3)
    b, steps, w, h = 2, 5, 8, 6
    with h5py.File(path, "w") as f:
        f.attrs.update(dataset_name="shear_flow", grid_type="cartesian", n_spatial_dims=2)
        f.attrs.update(n_trajectories=b, Reynolds=1e4)
        f.attrs["simulation_parameters"] = ["Reynolds", "Schmidt"]
        f.attrs["Schmidt"] = 2.0
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        dims["time"] = np.arange(steps, dtype=np.float32) * 0.1 if time is None else time
        dims["x"] = np.linspace(0, 1, w, endpoint=False, dtype=np.float32)
        dims["y"] = np.linspace(-1, 1, h, dtype=np.float32)
        for name in ("time", "x", "y"):
            dims[name].attrs.update(sample_varying=False, time_varying=name == "time")
        bcs = f.create_group("boundary_conditions")
        for name, kind, size in (("x_periodic", "PERIODIC", w), ("y_wall", "WALL", h)):
            group = bcs.create_group(name)
            group.attrs.update(bc_type=kind, sample_varying=False, time_varying=False)
            group.attrs["associated_dims"] = [name[0]]
            group.attrs["associated_fields"] = []
            group["mask"] = np.isin(np.arange(size), [0, size - 1])
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = ["Reynolds", "energy"]
        scalars["Reynolds"] = np.float32(1e4)
        scalars["Reynolds"].attrs.update(sample_varying=False, time_varying=False)
        scalars["energy"] = rng.random((b, steps)).astype(np.float32)
        scalars["energy"].attrs.update(sample_varying=True, time_varying=True)
        stored = {
            0: {
                "density": rng.random((b, steps, w, h)) if density is None else density,
                "obstacle": rng.random((w, h)),  # neither sample- nor time-varying
            },
            1: {"velocity": rng.normal(size=(b, steps, w, h, 2))},
            2: {"stress": rng.normal(size=(b, steps, w, h, 2, 2))},
        }
        for order, fields in stored.items():
            group = f.create_group(f"t{order}_fields")
            group.attrs["field_names"] = [k for k in fields if k not in drop]
            for name, value in fields.items():
                if name in drop:
                    continue
                group[name] = value.astype(np.float32)
                varying = name != "obstacle"
                group[name].attrs.update(sample_varying=varying, time_varying=varying)
                group[name].attrs["dim_varying"] = [True, True]
    return stored


# ------------------------------------------------------------------------------------ round trips


def test_ours_to_pdebench_and_back_is_bitwise(tmp_path):
    source = generate_dataset(
        "heat", tmp_path / "heat.h5", n=3, seed=4, nx=17, nt=4, progress=False
    )
    ours = load(source)
    assert convert(source, tmp_path / "heat.pdebench.h5", to="pdebench") == (
        tmp_path / "heat.pdebench.h5"
    )
    with h5py.File(tmp_path / "heat.pdebench.h5") as f:
        assert f["tensor"].shape == (3, 4, 17) and f["t-coordinate"].shape == (4,)
        assert f["x-coordinate"].shape == (17,)
    back = load(tmp_path / "heat.pdebench.h5")
    _assert_same(back, ours)
    assert back.attrs["pde"] == ours.attrs["pde"] and back.attrs["seed"] == 4
    convert(tmp_path / "heat.pdebench.h5", tmp_path / "again.h5")  # default: to physml
    again = load(tmp_path / "again.h5")
    _assert_same(again, ours)
    assert again.attrs["format"] == "physml-dataset/1"


def _heat_shards(tmp_path, **settings):
    index = tmp_path / "heat.h5"
    shards = [
        generate_dataset(
            "heat",
            index,
            n=4,
            seed=3,
            shard=i,
            num_shards=2,
            nx=9,
            nt=3,
            progress=False,
            **settings,
        )
        for i in range(2)
    ]
    return index, shards


def _there_and_back(tmp_path, shard, to):
    """A physml copy of ``shard`` written as ``to`` and read back, in a folder of its own."""
    foreign = convert(shard, tmp_path / f"{shard.stem}.{to}.h5", to=to)
    (tmp_path / f"back-{shard.stem}").mkdir()
    return convert(foreign, tmp_path / f"back-{shard.stem}" / shard.name, to="physml")


@pytest.mark.parametrize("to", ["pdebench", "well"])
def test_a_shard_converted_there_and_back_is_still_a_shard_merge_takes(tmp_path, to):
    """The round trip keeps each sample's seed (and index) and, the file it was read from being
    the shard's own business, it merges with the shards never converted: the attributes The
    Well's reader adds restate the shard's own (its pde, 'u', its Neumann walls)."""
    index, shards = _heat_shards(tmp_path)
    back = _there_and_back(tmp_path, shards[1], to)
    original = load(shards[1])
    assert torch.equal(load(back).sample_seed, original.sample_seed)
    assert original.sample_seed.tolist() == [sample_seed(3, 2), sample_seed(3, 3)]
    assert load(back).attrs["source_file"] == f"{shards[1].stem}.{to}.h5"
    merged = merge_shards([shards[0], back], tmp_path / "merged.h5")
    assert torch.equal(load(merged).u, load(index).u)
    assert main(["merge", str(back), str(shards[0]), "-o", str(tmp_path / "again.h5")]) == 0
    for path in (merged, tmp_path / "again.h5"):
        with h5py.File(path) as f, h5py.File(shards[0]) as original_file:
            kept = set(original_file.attrs) - {"created", "shard", "num_shards"}
            assert set(f.attrs) == kept | {"created", "shard", "num_shards", "merged_from"}


def test_shards_all_read_back_from_the_well_merge_and_keep_attributes_their_data_had(tmp_path):
    """Every shard read back from The Well: they merge into the dataset the originals make;
    attributes the original data had (a field name, a dataset name of its own) stay."""
    index, shards = _heat_shards(tmp_path)
    backs = [_there_and_back(tmp_path, shard, "well") for shard in shards]
    merged = load(merge_shards(backs, tmp_path / "merged.h5"))
    assert torch.equal(merged.u, load(index).u)
    assert not {"dataset_name", "field", "grid_type", "well_boundary_conditions"} & set(
        merged.attrs
    )
    for shard in shards:
        with h5py.File(shard, "a") as f:
            f.attrs.update(field="u", dataset_name="heat-walls")
    (tmp_path / "named").mkdir()
    backs = [_there_and_back(tmp_path / "named", shard, "well") for shard in shards[1:]]
    merged = load(merge_shards([shards[0], *backs], tmp_path / "named.h5"))
    assert (merged.attrs["field"], merged.attrs["dataset_name"]) == ("u", "heat-walls")
    assert "well_boundary_conditions" not in merged.attrs


def test_the_well_attributes_that_restate_the_others_are_told_apart():
    """Written by hand: what The Well's writer derives from a 1-D periodic dataset of 5 points
    and its reader gives back; a value of another kind is no restatement."""
    entry = {
        "name": "x_periodic",
        "bc_type": "PERIODIC",
        "sample_varying": False,
        "time_varying": False,
        "associated_dims": ["x"],
        "associated_fields": [],
        "mask_shape": [5],
        "mask_true": [0, 4],
    }
    attrs = {"pde": "burgers", "boundary": "periodic", "nu": 0.1}
    read = {
        **attrs,
        "dataset_name": "burgers",
        "grid_type": "cartesian",
        "field": "u",
        "well_boundary_conditions": json.dumps([dict(reversed(entry.items()))]),
    }
    assert well_restated(read, (5,)) == [
        "dataset_name",
        "grid_type",
        "field",
        "well_boundary_conditions",
    ]
    assert well_restated(attrs, (5,)) == []
    other = {
        **read,
        "dataset_name": "burgers-1d",
        "grid_type": "polar",
        "field": "vx",
        "well_boundary_conditions": json.dumps([{**entry, "mask_true": [0]}]),
    }
    assert well_restated(other, (5,)) == []
    assert well_restated({**read, "boundary": "dirichlet"}, (5,)) == [
        "dataset_name",
        "grid_type",
        "field",
    ]
    assert well_restated(read, (6,)) == ["dataset_name", "grid_type", "field"]
    deep = "[" * 100_000 + "]" * 100_000  # JSON nested deeper than Python parses: no restatement
    assert well_restated({**read, "well_spatial_dims": deep}, (5,)) == [
        "dataset_name",
        "grid_type",
        "field",
    ]
    assert well_restated({**read, "well_boundary_conditions": deep}, (5,)) == [
        "dataset_name",
        "grid_type",
        "field",
    ]
    with pytest.raises(TypeError, match="^attrs must be a mapping of attributes, got list$"):
        well_restated([read], (5,))
    for space in [(), (0,), (2, 2, 2, 2)]:
        with pytest.raises(ValueError, match=r"^space must be 1 to 3 positive sizes, got "):
            well_restated(read, space)
    for space in [(5.0,), (True,), 5, "5"]:
        with pytest.raises(TypeError, match=r"^space must be a tuple of grid sizes \(integers\)"):
            well_restated(read, space)


def test_a_shard_read_back_from_a_changed_well_file_is_refused_saying_what_differs(tmp_path):
    """A The Well file whose own attributes say more than the shard's (another dataset name,
    other boundary conditions) is another description: refused, naming each and what to do."""
    _, shards = _heat_shards(tmp_path)
    foreign = convert(shards[1], tmp_path / "s1.well.h5", to="well")
    with h5py.File(foreign, "a") as f:
        f.attrs["dataset_name"] = "diffusion"
        f["boundary_conditions/x_wall"].attrs["bc_type"] = "OPEN"
    (tmp_path / "back").mkdir()
    back = convert(foreign, tmp_path / "back" / shards[1].name, to="physml")
    with pytest.raises(ShardError) as refusal:
        merge_shards([shards[0], back], tmp_path / "merged.h5")
    message = str(refusal.value)
    assert message.startswith(
        f"shards disagree, {str(back)!r} vs {str(shards[0])!r}: dataset_name 'diffusion' vs "
        "(absent); well_boundary_conditions '[{"
    )
    assert f"... vs (absent). {str(back)!r} read back" in message  # their JSON, cut short
    assert message.endswith(
        f". {str(back)!r} read back from The Well: its reader adds dataset_name, "
        "well_boundary_conditions, which the merge passes over only where they restate the "
        "shard's own attributes (its pde as dataset_name, 'u' as field, its boundary text as "
        "well_boundary_conditions); these do not (The Well file changed, or u read from another "
        "field?): convert the shard from its physml original, or from The Well file as written"
    )
    assert not (tmp_path / "merged.h5").exists()


@pytest.mark.parametrize("layout", ["tensor", "ns"])
def test_ours_2d_to_pdebench_and_back_is_bitwise(tmp_path, layout):
    data = _ours_2d()
    out = write_pdebench(data, tmp_path / "out.h5", layout=layout)
    with h5py.File(out) as f:
        if layout == "ns":
            assert f["velocity"].shape == (N, T, X, Y, 2) and f["particles"].shape[-1] == 1
            assert f["force"].shape == (N, X, Y, 2) and f["t"].shape == (N, T)
        assert f.attrs["nu"] == 1e-3  # a parameter shared by all samples: a root attribute
    _assert_same(load(out), data)


def test_ours_to_the_well_and_back_is_bitwise(tmp_path):
    data = _ours_2d()
    data.fields = {"velocity_x": data.fields["vx"], "velocity_y": data.fields["vy"]}
    out = write_well(data, tmp_path / "out.h5")
    with h5py.File(out) as f:
        assert list(f["t0_fields"].attrs["field_names"]) == ["u"]
        assert list(f["t1_fields"].attrs["field_names"]) == ["velocity", "force"]
        assert f["t1_fields/velocity"].shape == (N, T, X, Y, 2)
        assert f["t1_fields/force"].shape == (N, X, Y, 2)  # a parameter: constant in time
        assert not f["t1_fields/force"].attrs["time_varying"]
        assert f["scalars/nu"].shape == () and not f["scalars/nu"].attrs["sample_varying"]
        assert f["scalars/forcing"].attrs["time_varying"]
        assert f.attrs["nu"] == 1e-3 and list(f.attrs["simulation_parameters"]) == [
            "nu",
            "amplitude",
        ]
        assert sorted(f["boundary_conditions"]) == ["x_periodic", "y_periodic"]
        assert f["boundary_conditions/x_periodic"].attrs["bc_type"] == "PERIODIC"
        assert list(f["dimensions"].attrs["spatial_dims"]) == ["x", "y"]
    back = load(out)
    _assert_same(back, data)
    assert back.attrs["seed"] == 7 and back.attrs["boundary"] == "periodic"
    convert(out, tmp_path / "ours.h5")
    _assert_same(load(tmp_path / "ours.h5"), data)


def test_constant_bool_and_complex_parameters_come_back_from_root_attributes(tmp_path):
    data = _ours_2d()
    data.params = {
        "flag": torch.ones(N, dtype=torch.bool),
        "phase": torch.full((N,), 1.0 - 2.0j, dtype=torch.complex128),
        "level": torch.full((N,), 7, dtype=torch.int64),
        "nu": data.params["nu"],
    }
    out = write_pdebench(data, tmp_path / "out.h5")
    with h5py.File(out) as f:
        assert {"flag", "phase", "level", "nu"} <= set(f.attrs) and "flag" not in f
    _assert_same(load(out), data)
    _assert_same(load(convert(out, tmp_path / "ours.h5")), data)
    well = write_well(data, tmp_path / "well.h5")
    with h5py.File(well, "r+") as f:  # a Well file that lists its parameters as attributes only
        for name in ("flag", "phase"):
            del f["scalars"][name]
        f["scalars"].attrs["field_names"] = ["level", "nu"]
        assert list(f.attrs["simulation_parameters"]) == ["flag", "phase", "level", "nu"]
    _assert_same(load(well), data)


def test_a_foreign_pdebench_bool_attribute_stays_an_attribute(tmp_path):
    path = tmp_path / "1D_Advection_Sols_beta0.4.hdf5"
    _pdebench_1d(path)
    with h5py.File(path, "a") as f:
        f.attrs["periodic"] = True
    data = load(path)
    assert data.attrs["periodic"] is True and "periodic" not in data.params


def _ours_3d() -> PDEData:
    rng = np.random.default_rng(5)
    n, steps, nx, ny, nz = 2, 3, 4, 5, 6
    return PDEData(
        u=torch.from_numpy(rng.normal(size=(n, steps, nx, ny, nz))),
        t=torch.linspace(0.0, 1.0, steps, dtype=torch.float64),
        coords={
            "x": torch.arange(nx, dtype=torch.float64) * 0.5,
            "y": torch.arange(ny, dtype=torch.float64) * 0.5 - 1.0,
            "z": torch.arange(nz, dtype=torch.float64) * 0.25,
        },
        params={"nu": torch.full((n,), 0.1, dtype=torch.float64)},
        fields={"vz": torch.from_numpy(rng.normal(size=(n, steps, nx, ny, nz)))},
        attrs={"pde": "synthetic 3-D", "boundary": "periodic"},
        sample_index=torch.arange(n),
    )


def test_3d_data_keep_z_in_a_physml_file_and_serve_grid_channels(tmp_path):
    data = _ours_3d()
    out = write_physml(data, tmp_path / "ours.h5")
    back = load(out)
    _assert_same(back, data)
    for to in ("pdebench", "well"):
        _assert_same(load(convert(out, tmp_path / f"{to}.h5", to=to)), data)
    x, y = SingleStepDataset(out, with_grid=True, dtype=torch.float64)[1]
    assert x.shape == (4, 4, 5, 6) and y.shape == (1, 4, 5, 6)
    assert torch.equal(x[0], data.u[1, 0]) and torch.equal(y[0], data.u[1, -1])
    for i, j, k in ((0, 0, 0), (3, 1, 5), (2, 4, 1)):
        assert x[1:, i, j, k].tolist() == [i * 0.5, j * 0.5 - 1.0, k * 0.25]
    with h5py.File(out, "r+") as f:
        del f["z"]
        f["z"] = np.arange(5.0)
    with pytest.raises(DatasetFileError, match=r"z has shape \(5,\), u has shape"):
        load(out)


def test_with_grid_without_a_coordinate_for_each_axis_says_which_are_there():
    data = _ours_3d()
    del data.coords["y"]
    with pytest.raises(DatasetFileError, match=r"space shape \(4, 5, 6\), the coordinates "):
        SingleStepDataset(data, with_grid=True)


# ------------------------------------------------------------------------------ reading directly


def test_a_pdebench_1d_file_loads_and_serves_pairs(tmp_path):
    path = tmp_path / "1D_Advection_Sols_beta0.4.hdf5"
    content = _pdebench_1d(path)
    data = load(path)
    assert data.u.shape == (4, 6, 16) and data.u.dtype == torch.float32
    np.testing.assert_array_equal(data.t.numpy(), content["t-coordinate"][:6])  # T + 1 -> T
    np.testing.assert_array_equal(data.coords["x"].numpy(), content["x-coordinate"])
    assert torch.equal(data.params["beta"], torch.full((4,), 0.4, dtype=torch.float64))
    assert json.loads(data.attrs["params_from_file_name"]) == ["beta"]
    x, y = SingleStepDataset(path, with_grid=True)[1]
    assert x.shape == (2, 16) and y.shape == (1, 16)
    assert torch.equal(y[0], data.u[1, -1])
    x, y = MultiStepDataset(path)[0]
    assert x.shape == (1, 16) and y.shape == (5, 16)
    with h5py.File(path, "a") as f:  # a parameter attribute wins over the file name
        f.attrs["beta"] = np.float32(0.5)
    assert torch.equal(load(path).params["beta"], torch.full((4,), 0.5))


def test_a_pdebench_file_with_exactly_t_times_and_darcy_without_times(tmp_path):
    _pdebench_1d(tmp_path / "exact.h5", t_entries=6)
    assert load(tmp_path / "exact.h5").t.shape == (6,)
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "darcy.hdf5", "w") as f:
        f["tensor"] = rng.random((3, 1, 8, 8)).astype(np.float32)
        f["nu"] = rng.random((3, 8, 8)).astype(np.float32)
        f["x-coordinate"] = np.linspace(0, 1, 8, dtype=np.float32)
        f["y-coordinate"] = np.linspace(0, 1, 8, dtype=np.float32)
        f.attrs["beta"] = 1.0
    data = load(tmp_path / "darcy.hdf5")
    assert data.u.shape == (3, 1, 8, 8) and data.t.tolist() == [0.0]
    assert data.params["nu"].shape == (3, 8, 8) and data.params["beta"].tolist() == [1.0] * 3


def test_a_pdebench_1d_cfd_file_reads_density_as_u(tmp_path):
    path = tmp_path / "1D_CFD_Rand_Eta0.01_Zeta0.01_periodic_Train.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for name in ("density", "pressure", "Vx"):
            f[name] = rng.random((2, 4, 16)).astype(np.float32)
        f["x-coordinate"] = np.linspace(0, 1, 16, dtype=np.float32)
        f["t-coordinate"] = np.linspace(0, 1, 5, dtype=np.float32)
        f.attrs.update(eta=0.01, zeta=0.01)
    data = load(path)
    assert data.u.shape == (2, 4, 16) and sorted(data.fields) == ["Vx", "pressure"]
    assert sorted(data.params) == ["eta", "zeta"] and "params_from_file_name" not in data.attrs


def test_a_pdebench_ns_file_loads_with_velocity_and_force(tmp_path):
    path = tmp_path / "ns_incom_inhom_2d_512-0.h5"
    _pdebench_ns(path)
    data = load(path)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(data.u.numpy(), f["particles"][..., 0])
        np.testing.assert_array_equal(data.fields["vy"].numpy(), f["velocity"][..., 1])
        np.testing.assert_array_equal(data.params["force_x"].numpy(), f["force"][..., 0])
    assert data.u.shape == (2, 4, 8, 8) and sorted(data.fields) == ["vx", "vy"]
    assert data.coords["x"].tolist() == [i + 0.5 for i in range(8)]
    assert "latestIndex" not in data.params and "NU: 0.01" in data.attrs["config"]
    x, y = SingleStepDataset(path, with_grid=True)[0]
    assert x.shape == (3, 8, 8) and y.shape == (1, 8, 8)
    out = convert(path, tmp_path / "ns.physml.h5")
    again = convert(out, tmp_path / "ns.again.h5", to="pdebench")
    with h5py.File(path) as f, h5py.File(again) as g:  # the NS layout comes back
        for name in ("velocity", "particles", "force", "t"):
            np.testing.assert_array_equal(g[name][()], f[name][()])


def test_a_pdebench_per_sample_group_file_loads(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "2D_diff-react_NA_NA.h5"
    with h5py.File(path, "w") as f:
        for i in range(3):
            group = f.create_group(f"{i:04d}")
            group["data"] = rng.random((5, 8, 8, 2)).astype(np.float32)
            group["grid/x"] = np.linspace(-1, 1, 8, dtype=np.float32)
            group["grid/y"] = np.linspace(-1, 1, 8, dtype=np.float32)
            group["grid/t"] = np.linspace(0, 5, 5, dtype=np.float32)
    data = load(path)
    assert data.u.shape == (3, 5, 8, 8) and list(data.fields) == ["channel_1"]
    with h5py.File(path) as f:
        np.testing.assert_array_equal(data.fields["channel_1"][2].numpy(), f["0002/data"][..., 1])


def test_a_well_file_loads_every_field_and_serves_pairs(tmp_path):
    path = tmp_path / "shear_flow.hdf5"
    stored = _well_2d(path)
    data = load(path)
    assert data.u.shape == (2, 5, 8, 6) and data.attrs["field"] == "density"
    np.testing.assert_array_equal(data.u.numpy(), stored[0]["density"].astype(np.float32))
    assert list(data.fields) == ["velocity_x", "velocity_y"] + [
        f"stress_{a}{b}" for a in "xy" for b in "xy"
    ]
    velocity = stored[1]["velocity"].astype(np.float32)
    np.testing.assert_array_equal(data.fields["velocity_y"].numpy(), velocity[..., 1])
    stress = stored[2]["stress"].astype(np.float32)
    np.testing.assert_array_equal(data.fields["stress_yx"].numpy(), stress[..., 1, 0])
    obstacle = data.params["obstacle"]  # constant field: broadcast over samples, a parameter
    assert obstacle.shape == (2, 8, 6) and torch.equal(obstacle[0], obstacle[1])
    assert data.params["Reynolds"].tolist() == [1e4, 1e4] and data.params["energy"].shape == (2, 5)
    assert data.params["Schmidt"].tolist() == [2.0, 2.0]  # root-listed, not under scalars/
    assert data.attrs["boundary"] == "x: periodic; y: wall" and data.attrs["pde"] == "shear_flow"
    x, y = SingleStepDataset(path, input_time=1, with_grid=True)[1]
    assert x.shape == (3, 8, 6) and y.shape == (1, 8, 6)
    x, y = MultiStepDataset(path, steps=2)[0]
    assert x.shape == (1, 8, 6) and y.shape == (2, 8, 6)
    chosen = read_well(path, field="velocity_x")
    assert torch.equal(chosen.u, data.fields["velocity_x"]) and "density" in chosen.fields
    # The Well -> ours -> The Well keeps the fields, their tensor order and the boundaries.
    ours = convert(path, tmp_path / "ours.h5", field="velocity_x")
    again = convert(ours, tmp_path / "again.hdf5", to="well")
    with h5py.File(path) as f, h5py.File(again) as g:
        for name in ("t0_fields/density", "t1_fields/velocity", "t2_fields/stress"):
            np.testing.assert_array_equal(g[name][()], f[name][()])
        assert g["boundary_conditions/y_wall"].attrs["bc_type"] == "WALL"
        np.testing.assert_array_equal(
            g["boundary_conditions/y_wall/mask"][()], f["boundary_conditions/y_wall/mask"][()]
        )
    assert load(again).attrs["field"] == "velocity_x"


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"t-coordinate": None}, "t-coordinate: missing dataset"),
        ({"tensor": np.zeros((4, 16), np.float32)}, r"tensor: expected \(N, T, X\)"),
        (
            {"x-coordinate": np.zeros(15, np.float32)},
            "x-coordinate: shape .15,., but the data have 16",
        ),
        ({"t-coordinate": np.arange(9.0)}, "t-coordinate: 9 entries, expected 6 or 7"),
        ({"t-coordinate": np.zeros(7)}, "t-coordinate: times must increase"),
    ],
)
def test_bad_pdebench_files_are_refused_naming_the_dataset(tmp_path, overrides, message):
    _pdebench_1d(tmp_path / "bad.h5", **overrides)
    with pytest.raises(DatasetFileError, match=message):
        load(tmp_path / "bad.h5")


FROM_TENSOR = r" \(a pdebench file, u read from 'tensor'\)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x-coordinate": -np.arange(16.0)}, ": x-coordinate: must be strictly increasing"),
        ({"x-coordinate": np.zeros(16)}, ": x-coordinate: must be strictly increasing"),
        ({"t-coordinate": -np.arange(7.0)}, ": t-coordinate: times must increase"),
        ({"tensor": np.ones((4, 6, 16), np.int32)}, f"{FROM_TENSOR}: u must hold real floating"),
        ({"tensor": np.ones((4, 6, 16), bool)}, f"{FROM_TENSOR}: u must hold real floating"),
        ({"tensor": np.ones((4, 6, 16), np.complex64)}, f"{FROM_TENSOR}: u must hold real"),
        ({"t-coordinate": np.arange(7, dtype=np.uint32)[::-1]}, ": t-coordinate: times must"),
        ({"x-coordinate": np.arange(16, dtype=np.uint16)[::-1]}, ": x-coordinate: must be strict"),
    ],
)
def test_foreign_files_get_the_content_checks_of_physml_files(tmp_path, overrides, message):
    """Errors name the file and the dataset: the one at fault, or for the content checks the
    format and the dataset u was read from."""
    path = tmp_path / "odd.h5"
    _pdebench_1d(path, **overrides)
    named = rf"path: '{path}'{message}"
    with pytest.raises(DatasetFileError, match=named):
        read_pdebench(path)
    with pytest.raises(DatasetFileError, match=named):
        load(path)
    with pytest.raises(DatasetFileError, match=named):
        convert(path, tmp_path / "out.h5", to="well")
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("to", ["physml", "pdebench"])
def test_a_well_file_with_decreasing_unsigned_times_is_refused(tmp_path, to):
    path = tmp_path / "odd.h5"
    _well_2d(path, time=np.array([4, 3, 2, 1, 0], np.uint16))
    named = rf"path: '{path}': dimensions/time: times must increase"
    with pytest.raises(DatasetFileError, match=named):
        read_well(path)
    with pytest.raises(DatasetFileError, match=named):
        load(path)
    with pytest.raises(DatasetFileError, match=named):
        convert(path, tmp_path / "out.h5", to=to, field="density")
    assert not (tmp_path / "out.h5").exists()


def test_integer_valued_float_and_integer_coordinates_still_load(tmp_path):
    _pdebench_1d(
        tmp_path / "ok.h5",
        tensor=np.ones((4, 6, 16), np.float32),
        **{"x-coordinate": np.arange(16), "t-coordinate": np.arange(7)},
    )
    data = load(tmp_path / "ok.h5")
    assert data.u.dtype == torch.float32 and data.coords["x"].tolist() == list(range(16))
    assert data.t.tolist() == list(range(6))


def test_well_files_with_repeated_coordinates_or_an_integer_u_are_refused(tmp_path):
    _well_2d(tmp_path / "x.h5")
    with h5py.File(tmp_path / "x.h5", "a") as f:
        del f["dimensions/x"]
        f["dimensions/x"] = np.zeros(8)
    with pytest.raises(DatasetFileError, match="x.h5': dimensions/x: must be strictly increas"):
        load(tmp_path / "x.h5")
    _well_2d(tmp_path / "int.h5")
    with h5py.File(tmp_path / "int.h5", "a") as f:
        attrs = dict(f["t0_fields/density"].attrs)
        del f["t0_fields/density"]
        f["t0_fields/density"] = np.ones((2, 5, 8, 6), np.int64)
        f["t0_fields/density"].attrs.update(attrs)
    with pytest.raises(DatasetFileError, match="field 'density': u must hold real floating"):
        read_well(tmp_path / "int.h5", field="density")


def test_write_physml_refuses_what_load_would_refuse(tmp_path):
    data = _ours_2d()
    data.coords["x"] = data.coords["x"].flip(0)
    with pytest.raises(ValueError, match="not written to .*: x must be strictly increasing"):
        write_physml(data, tmp_path / "out.h5")
    data = _ours_2d()
    data.u = torch.ones(data.u.shape, dtype=torch.int32)
    with pytest.raises(ValueError, match="u must hold real floating-point values, got dtype int32"):
        write_physml(data, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_a_damaged_compressed_foreign_file_is_a_dataset_file_error(tmp_path):
    path = tmp_path / "gz.h5"
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        tensor = rng.normal(size=(4, 6, 256)).astype(np.float32)
        f.create_dataset("tensor", data=tensor, compression="gzip", chunks=(1, 6, 256))
        f["x-coordinate"] = np.linspace(0, 1, 256)
        f["t-coordinate"] = np.arange(7) * 0.1
    with h5py.File(path, "r") as f:
        offset = f["tensor"].id.get_chunk_info(1).byte_offset
    with open(path, "r+b") as raw:
        raw.seek(offset + 20)
        raw.write(b"\xff" * 16)
    with pytest.raises(DatasetFileError, match=rf"path: '{path}': tensor: could not be read"):
        load(path)
    with pytest.raises(DatasetFileError, match="tensor: could not be read"):
        convert(path, tmp_path / "out.h5")


def test_text_datasets_of_a_pdebench_file_are_dropped_not_parameters(tmp_path):
    _pdebench_1d(
        tmp_path / "text.h5",
        label=np.array([b"a", b"b", b"c", b"d"]),
        notes=np.array(["one", "two", "three", "four"], dtype=h5py.string_dtype()),
        beta=np.arange(4.0),
    )
    data = load(tmp_path / "text.h5")
    assert sorted(json.loads(data.attrs["dropped"])) == ["label", "notes"]
    assert list(data.params) == ["beta"] and data.params["beta"].tolist() == [0, 1, 2, 3]
    pair = SingleStepDataset(tmp_path / "text.h5")[0]
    assert pair[0].shape == (1, 16)


@pytest.mark.parametrize("name", ["fields/vx", "t", "x", "y", "sample_index"])
def test_write_physml_checksums_every_array(tmp_path, name):
    out = write_physml(_ours_2d(), tmp_path / "out.h5")
    with h5py.File(out, "r") as f:
        assert all(f[k].fletcher32 for k in ("u", "params/amplitude", "fields/vx", name))
    flip_a_bit_of_the_first_chunk(out, name)
    with pytest.raises(DatasetFileError, match=f"its array '{name}' failed its checksum"):
        load(out)


def _well_fields(data: PDEData) -> PDEData:
    data.fields = {"velocity_x": data.fields["vx"], "velocity_y": data.fields["vy"]}
    return data


@pytest.mark.parametrize(
    "writer, name",
    [
        (lambda d, p: write_pdebench(d, p, layout="tensor"), "tensor"),
        (lambda d, p: write_pdebench(d, p, layout="tensor"), "vx"),
        (lambda d, p: write_pdebench(d, p, layout="ns"), "velocity"),
        (lambda d, p: write_well(_well_fields(d), p), "t0_fields/u"),
        (lambda d, p: write_well(_well_fields(d), p), "t1_fields/velocity"),
        (lambda d, p: write_well(_well_fields(d), p), "dimensions/x"),
    ],
    ids=["pdebench-tensor", "pdebench-field", "pdebench-ns", "well-t0", "well-t1", "well-x"],
)
def test_a_flipped_bit_in_a_written_pdebench_or_well_file_is_an_error(tmp_path, writer, name):
    out = writer(_ours_2d(), tmp_path / "out.h5")
    with h5py.File(out, "r") as f:
        assert f[name].fletcher32 and f[name].chunks is not None
    flip_a_bit_of_the_first_chunk(out, name)
    with pytest.raises(DatasetFileError, match="could not be read"):
        load(out)


def test_write_checksummed_stores_variable_length_text_plainly(tmp_path):
    text = np.array(["one", "three"], dtype=h5py.string_dtype())
    with h5py.File(tmp_path / "text.h5", "w") as f:
        write_checksummed(f, "notes", text)
        write_checksummed(f, "labels", np.array([b"a", b"bc"]))
    with h5py.File(tmp_path / "text.h5", "r") as f:
        assert not f["notes"].fletcher32 and f["labels"].fletcher32
        assert f["notes"].asstr()[:].tolist() == ["one", "three"]
        assert f["labels"][:].tolist() == [b"a", b"bc"]


def test_nan_and_broken_ns_files_are_refused(tmp_path):
    tensor = np.ones((4, 6, 16), np.float32)
    tensor[2, 3, 1] = np.nan
    _pdebench_1d(tmp_path / "nan.h5", tensor=tensor)
    with pytest.raises(DatasetFileError, match=r"tensor: 1 non-finite value\(s\) \(NaN or inf\)"):
        load(tmp_path / "nan.h5")
    _pdebench_ns(tmp_path / "ns.h5", velocity_shape=(2, 4, 8, 8, 3))
    with pytest.raises(DatasetFileError, match=r"velocity: expected \(B, T, X, Y, 2\)"):
        load(tmp_path / "ns.h5")
    with h5py.File(tmp_path / "ns.h5", "a") as f:
        del f["velocity"]
    with pytest.raises(DatasetFileError, match="velocity: missing dataset"):
        load(tmp_path / "ns.h5")


def test_bad_well_files_are_refused_naming_the_dataset(tmp_path):
    _well_2d(tmp_path / "mismatch.h5", density=np.zeros((2, 5, 8, 7)))
    with pytest.raises(
        DatasetFileError, match=r"t0_fields/density: shape \(2, 5, 8, 7\), expected"
    ):
        load(tmp_path / "mismatch.h5")
    density = np.zeros((2, 5, 8, 6))
    density[0, 0, 0, 0] = np.inf
    _well_2d(tmp_path / "inf.h5", density=density)
    with pytest.raises(DatasetFileError, match="t0_fields/density: 1 non-finite"):
        load(tmp_path / "inf.h5")
    _well_2d(tmp_path / "time.h5", time=np.zeros((2, 5)))
    with pytest.raises(DatasetFileError, match="dimensions/time: times must increase"):
        load(tmp_path / "time.h5")
    _well_2d(tmp_path / "ok.h5")
    with h5py.File(tmp_path / "ok.h5", "a") as f:
        del f["dimensions"]
    with pytest.raises(DatasetFileError, match="dimensions: missing group"):
        load(tmp_path / "ok.h5")
    _well_2d(tmp_path / "ok.h5")
    with pytest.raises(ValueError, match="field must name a time-varying field"):
        read_well(tmp_path / "ok.h5", field="obstacle")


def test_writers_refuse_bad_data_and_leave_nothing_behind(tmp_path):
    data = _ours_2d()
    data.u[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="data.u: 1 non-finite"):
        write_well(data, tmp_path / "out.h5")
    data = _ours_2d()
    del data.coords["y"]
    with pytest.raises(ValueError, match="data.coords: no 'y' coordinate"):
        write_pdebench(data, tmp_path / "out.h5")
    data = _ours_2d()
    data.fields["tensor"] = data.fields.pop("vx")
    with pytest.raises(ValueError, match="'tensor' is reserved"):
        write_pdebench(data, tmp_path / "out.h5")
    with pytest.raises(ValueError, match="layout: 'ns' needs 2-D data with fields vx and vy"):
        write_pdebench(data, tmp_path / "out.h5", layout="ns")
    data = _ours_2d()
    data.params["odd"] = torch.zeros(N, 2, 2)
    with pytest.raises(ValueError, match=r"data.params\['odd'\]: shape .* no place in The Well"):
        write_well(data, tmp_path / "out.h5")
    data = _ours_2d()  # force_x, force_y both as fields and as parameters: found while writing
    data.fields.update(force_x=data.fields.pop("vx"), force_y=data.fields.pop("vy"))
    with pytest.raises(ValueError, match="two t1 fields would be named 'force'"):
        write_well(data, tmp_path / "out.h5")
    assert list(tmp_path.iterdir()) == []  # atomic: no output, no temporary file
    write_physml(_ours_2d(), tmp_path / "ours.h5")
    _assert_same(load(tmp_path / "ours.h5"), _ours_2d())


# ------------------------------------------------------------------------------------------- CLI


def test_cli_convert_writes_and_refuses_bad_arguments(tmp_path, capsys):
    source = tmp_path / "in.h5"
    _pdebench_1d(source)
    out = tmp_path / "out.h5"
    assert main(["convert", str(source), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and load(out).attrs["format"] == "physml-dataset/1"
    assert main(["convert", str(out), str(tmp_path / "w.h5"), "--to", "well"]) == 0
    assert load(tmp_path / "w.h5").attrs["source_format"] == "the_well"
    capsys.readouterr()
    absent = tmp_path / "absent.h5"
    cases = [
        (
            ["convert", str(absent), str(tmp_path / "x.h5")],
            f"IN: no dataset file at {str(absent)!r}",
        ),
        (
            ["convert", str(tmp_path), str(tmp_path / "x.h5"), "--to", "pdebench"],
            f"IN: {str(tmp_path)!r} is a folder, not a dataset file",
        ),
        (
            ["convert", str(source), str(out)],
            f"out: {str(out)!r} already exists (pass --overwrite)\n",
        ),
        (["convert", str(out), str(tmp_path / "x.h5")], "to: name the output format"),
        (["convert", str(source), str(tmp_path / "x.h5"), "--layout", "ns"], "layout: only for"),
        (
            ["convert", str(source), str(tmp_path / "x.h5"), "--to", "pdebench", "--layout", "ns"],
            "layout: 'ns' needs",
        ),
        (
            ["convert", str(source), str(tmp_path / "no" / "x.h5")],
            f"out: folder {str(tmp_path / 'no')!r} does not exist",
        ),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        # one line, the CLI's prefix, then the message that names the argument
        assert err.startswith(f"physml convert: error: {message}"), (args, err)
        assert err.count("\n") == 1, (args, err)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "x.h5"), "--to", "csv"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
    assert main(["convert", str(source), str(out), "--overwrite", "--to", "pdebench"]) == 0


def test_cli_convert_takes_the_output_as_merge_does(tmp_path, capsys):
    source = tmp_path / "in.h5"
    _pdebench_1d(source)
    for flag in ("-o", "--out"):
        out = tmp_path / f"out{flag}.h5"
        assert main(["convert", str(source), flag, str(out)]) == 0
        assert load(out).attrs["format"] == "physml-dataset/1"
    capsys.readouterr()
    same = tmp_path / "same.h5"
    assert main(["convert", str(source), str(same), "-o", str(same)]) == 0  # named twice alike
    capsys.readouterr()
    cases = [
        (["convert", str(source)], "out: name the output file, as OUT after IN or with -o/--out"),
        (
            ["convert", str(source), str(tmp_path / "a.h5"), "-o", str(tmp_path / "b.h5")],
            "out: name the output file once",
        ),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert f"physml convert: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()


def test_a_folder_as_the_output_is_refused_with_or_without_overwrite(tmp_path, capsys):
    source = tmp_path / "in.h5"
    _pdebench_1d(source)
    folder = tmp_path / "outdir"
    folder.mkdir()
    for extra in ([], ["--overwrite"]):
        assert main(["convert", str(source), str(folder), "--to", "well", *extra]) == 2
        err = capsys.readouterr().err
        assert f"physml convert: error: out: {str(folder)!r} is a folder" in err, err
        assert "Errno" not in err and "already exists" not in err
    with pytest.raises(ValueError, match=r"out: .*outdir' is a folder; name the dataset file"):
        convert(source, folder, overwrite=True)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5", "outdir"]  # no temporary


def test_a_pdebench_ns_file_whose_samples_have_other_times_is_refused(tmp_path):
    _pdebench_ns(tmp_path / "ns.h5")
    with h5py.File(tmp_path / "ns.h5", "a") as f:
        f["t"][1] = f["t"][1] * 2  # the second sample saved at other times
    with pytest.raises(DatasetFileError, match="t: differs between samples"):
        load(tmp_path / "ns.h5")


# ------------------------------------------------------------------ layouts read value by value


def test_pdebench_times_of_two_steps_must_increase(tmp_path):
    _pdebench_1d(tmp_path / "bad.h5", steps=2, **{"t-coordinate": np.array([0.1, 0.0, 0.2])})
    with pytest.raises(DatasetFileError, match="t-coordinate: times must increase"):
        load(tmp_path / "bad.h5")


def test_a_non_finite_complex_parameter_is_refused(tmp_path):
    data = _ours_2d()
    data.params = {"phase": torch.tensor([1 + 1j, 2 - 1j, 0.5j], dtype=torch.complex128)}
    out = write_pdebench(data, tmp_path / "out.h5")
    with h5py.File(out, "r+") as f:
        f["phase"][1] = complex(np.nan, 1.0)
    with pytest.raises(DatasetFileError, match=r"phase: 1 non-finite value\(s\)"):
        load(out)


def test_our_pdebench_file_without_parameters_takes_none_from_its_name(tmp_path):
    data = _ours_2d()
    data.params = {}
    out = write_pdebench(data, tmp_path / "2D_Burgers_Sols_Nu0.01.hdf5")
    back = load(out)
    assert back.params == {} and "params_from_file_name" not in back.attrs
    _pdebench_1d(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5")  # a foreign file: taken from the name
    assert load(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5").params["Nu"].tolist() == [0.01] * 4


def test_pdebench_datasets_of_other_rows_are_dropped_and_listed(tmp_path):
    path = tmp_path / "extra.h5"
    _pdebench_1d(path, notes=np.arange(7.0), scale=np.float64(2.0), rows=np.arange(4.0))
    data = load(path)
    assert sorted(json.loads(data.attrs["dropped"])) == ["notes", "scale"]
    assert list(data.params) == ["rows"] and data.params["rows"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert data.fields == {}


def test_a_pdebench_ns_file_goes_to_the_well_with_particles_as_u(tmp_path):
    path = tmp_path / "ns.h5"
    _pdebench_ns(path)
    out = convert(path, tmp_path / "ns.well.h5", to="well")
    with h5py.File(path) as f, h5py.File(out) as g:
        assert list(g["t0_fields"].attrs["field_names"]) == ["particles", "vx", "vy"]
        np.testing.assert_array_equal(g["t0_fields/particles"][()], f["particles"][..., 0])
        np.testing.assert_array_equal(g["t0_fields/vy"][()], f["velocity"][..., 1])


def test_a_pdebench_ns_force_of_three_components_is_refused(tmp_path):
    _pdebench_ns(tmp_path / "ns.h5")
    with h5py.File(tmp_path / "ns.h5", "a") as f:
        del f["force"]
        f["force"] = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(DatasetFileError, match=r"force: expected \(B, X, Y, 2\)"):
        load(tmp_path / "ns.h5")


def _pdebench_groups(path, steps=5, times=5, shapes=None):
    """PDEBench per-sample groups: channel ``c`` of sample ``i`` at ``(k, a, b)`` holds
    ``1000 i + 100 c + 10 k + a + b / 10``."""
    with h5py.File(path, "w") as f:
        for i in range(3):
            k, a, b, c = np.meshgrid(
                *(np.arange(s) for s in (shapes or {}).get(i, (steps, 4, 3, 2))), indexing="ij"
            )
            group = f.create_group(f"{i:04d}")
            group["data"] = 1000.0 * i + 100 * c + 10 * k + a + b / 10
            group["grid/x"] = np.arange(4) * 0.25
            group["grid/y"] = np.arange(3) * 0.5
            group["grid/t"] = np.arange(times) * 0.1


def test_a_pdebench_group_file_takes_u_from_channel_0(tmp_path):
    _pdebench_groups(tmp_path / "g.h5", times=6)  # T + 1 times, as PDEBench saves them
    data = load(tmp_path / "g.h5")
    assert data.u.shape == (3, 5, 4, 3)
    assert data.u[2, 3, 1, 2].item() == 2000 + 30 + 1 + 0.2
    assert data.fields["channel_1"][1, 4, 3, 0].item() == 1000 + 100 + 40 + 3
    assert data.t.tolist() == (np.arange(5) * 0.1).tolist()  # the file's first T times
    assert data.coords["x"].tolist() == [0.0, 0.25, 0.5, 0.75] and data.coords["y"].shape == (3,)


def test_pdebench_groups_of_other_shapes_are_refused(tmp_path):
    _pdebench_groups(tmp_path / "g.h5", shapes={1: (5, 4, 2, 2)})
    with pytest.raises(DatasetFileError, match=r"0000/data: expected .* alike in all samples"):
        load(tmp_path / "g.h5")


def test_a_well_file_whose_n_spatial_dims_disagrees_is_refused(tmp_path):
    _well_2d(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "a") as f:
        f.attrs["n_spatial_dims"] = 3
    with pytest.raises(DatasetFileError, match=r"n_spatial_dims: 3, but spatial_dims is"):
        load(tmp_path / "w.h5")


def test_a_well_field_constant_along_an_axis_is_broadcast_along_it(tmp_path):
    path = tmp_path / "w.h5"
    _well_2d(path)
    height = np.arange(2 * 5 * 8, dtype=np.float32).reshape(2, 5, 8)  # no y axis stored
    with h5py.File(path, "a") as f:
        group = f["t0_fields"]
        group["height"] = height
        group["height"].attrs.update(sample_varying=True, time_varying=True)
        group["height"].attrs["dim_varying"] = [True, False]
        group.attrs["field_names"] = ["density", "obstacle", "height"]
    data = load(path)
    assert data.fields["height"].shape == (2, 5, 8, 6)
    for j in range(6):
        np.testing.assert_array_equal(data.fields["height"][..., j].numpy(), height)


def test_well_fields_and_scalars_without_flags_take_the_documented_defaults(tmp_path):
    path = tmp_path / "w.h5"
    stored = _well_2d(path)
    with h5py.File(path, "a") as f:  # a field: sample- and time-varying; a scalar: neither
        for name in ("sample_varying", "time_varying"):
            del f["t0_fields/density"].attrs[name]
            del f["scalars/Reynolds"].attrs[name]
    data = load(path)
    np.testing.assert_array_equal(data.u.numpy(), stored[0]["density"].astype(np.float32))
    assert data.params["Reynolds"].tolist() == [1e4, 1e4]
    with h5py.File(path, "a") as f:  # a one-element scalar reads as the number
        del f["scalars/Reynolds"]
        f["scalars/Reynolds"] = np.array([250.0])
    assert load(path).params["Reynolds"].tolist() == [250.0, 250.0]


def test_per_sample_well_scalars_win_over_the_root_attribute(tmp_path):
    path = tmp_path / "w.h5"
    _well_2d(path)
    with h5py.File(path, "a") as f:
        del f["scalars/Reynolds"]
        f["scalars/Reynolds"] = np.array([1e3, 1e5])
        f["scalars/Reynolds"].attrs.update(sample_varying=True, time_varying=False)
    assert load(path).params["Reynolds"].tolist() == [1e3, 1e5]


def test_well_axis_names_survive_the_way_through_ours(tmp_path):
    path = tmp_path / "w.h5"
    _well_2d(path)
    with h5py.File(path, "a") as f:
        dims = f["dimensions"]
        for old, new in (("x", "r"), ("y", "z")):
            dims.move(old, new)
        dims.attrs["spatial_dims"] = ["r", "z"]
    data = load(path)
    assert "velocity_z" in data.fields and "stress_rz" in data.fields
    assert data.coords["y"].tolist() == np.linspace(-1, 1, 6, dtype=np.float32).tolist()
    again = convert(convert(path, tmp_path / "ours.h5"), tmp_path / "again.h5", to="well")
    with h5py.File(path) as f, h5py.File(again) as g:
        assert list(g["dimensions"].attrs["spatial_dims"]) == ["r", "z"]
        for name in ("t1_fields/velocity", "t2_fields/stress", "dimensions/z"):
            np.testing.assert_array_equal(g[name][()], f[name][()])


# ------------------------------------------------------------------------ writing, value by value


def test_writers_refuse_arrays_that_do_not_fit_u(tmp_path):
    cases = [
        ("t", lambda d: setattr(d, "t", d.t[:-1]), r"data.t: expected shape \(5,\)"),
        ("params", lambda d: d.params.update(nu=d.params["nu"][:2]), r"params\['nu'\]: expected 3"),
        (
            "fields",
            lambda d: d.fields.update(vx=d.fields["vx"][:2]),
            r"fields\['vx'\]: expected 3 rows",
        ),
        ("index", lambda d: setattr(d, "sample_index", torch.arange(4)), "sample_index: expected"),
    ]
    for writer in (write_physml, write_pdebench, write_well):
        for what, spoil, message in cases:
            data = _ours_2d()
            spoil(data)
            with pytest.raises(ValueError, match=message):
                writer(data, tmp_path / "out.h5")
            assert list(tmp_path.iterdir()) == [], (writer.__name__, what)


def test_writers_refuse_descriptions_that_are_no_dicts_naming_them(tmp_path):
    for writer in (write_physml, write_pdebench, write_well):
        for group, value in (
            ("coords", [torch.zeros(X)]),
            ("params", None),
            ("fields", ()),
            ("attrs", None),
        ):
            data = _ours_2d()
            setattr(data, group, value)
            message = f"data.{group}: expected a dict by name, got {type(value).__name__}"
            with pytest.raises(TypeError, match=re.escape(message)):
                writer(data, tmp_path / "out.h5")
            assert list(tmp_path.iterdir()) == [], (writer.__name__, group)


def test_readers_writers_and_convert_refuse_a_path_that_is_no_path_naming_it(tmp_path):
    calls = [
        ("path", lambda: write_physml(_ours_2d(), 3)),
        ("path", lambda: write_pdebench(_ours_2d(), 3)),
        ("path", lambda: write_well(_ours_2d(), 3)),
        ("path", lambda: read_pdebench(3)),
        ("path", lambda: read_well(None)),
        ("source", lambda: convert(3, tmp_path / "out.h5")),
        ("out", lambda: convert(tmp_path / "in.h5", 3)),
    ]
    for name, call in calls:
        message = f"{name} must be a file path (str or os.PathLike), got "
        with pytest.raises(TypeError, match=re.escape(message)):
            call()
    assert list(tmp_path.iterdir()) == []


def test_a_parameter_shaped_like_u_is_refused_by_the_pdebench_writer(tmp_path):
    data = _ours_2d()
    data.params["source"] = data.fields["vx"].clone()
    with pytest.raises(ValueError, match=r"data.params\['source'\]: shape \(3, 5, 8, 6\) is the"):
        write_pdebench(data, tmp_path / "out.h5")
    assert list(tmp_path.iterdir()) == []


def test_a_time_varying_parameter_equal_over_samples_comes_back(tmp_path):
    data = _ours_2d()
    data.params = {"forcing": torch.tensor([[0.5, 1.0, 1.5, 2.0, 2.5]] * N, dtype=torch.float64)}
    back = load(write_pdebench(data, tmp_path / "out.h5"))
    assert back.params["forcing"].tolist() == [[0.5, 1.0, 1.5, 2.0, 2.5]] * N


def test_the_well_writer_flags_symmetric_and_antisymmetric_tensors(tmp_path):
    data = _ours_2d()
    a, b = data.fields["vx"], data.fields["vy"]
    data.fields = {
        "stress_xx": a, "stress_xy": b, "stress_yx": b, "stress_yy": a,
        "spin_xx": 0 * a, "spin_xy": b, "spin_yx": -b, "spin_yy": 0 * a,
        "grad_xx": a, "grad_xy": a, "grad_yx": b, "grad_yy": b,
    }  # fmt: skip
    out = write_well(data, tmp_path / "out.h5")
    with h5py.File(out) as f:
        flags = {
            name: (item.attrs["symmetric"], item.attrs["antisymmetric"])
            for name, item in f["t2_fields"].items()
        }
        np.testing.assert_array_equal(f["t2_fields/spin"][..., 1, 0], -b.numpy())
    assert flags == {"stress": (True, False), "spin": (False, True), "grad": (False, False)}


@pytest.mark.parametrize(
    ("boundary", "kind"),
    [("periodic", "periodic"), ("Dirichlet u = 0", "wall"), ("no-slip", "wall")],
)
def test_the_well_writer_marks_both_ends_of_each_axis(tmp_path, boundary, kind):
    data = _ours_2d()
    data.attrs["boundary"] = boundary
    out = write_well(data, tmp_path / "out.h5")
    with h5py.File(out) as f:
        assert sorted(f["boundary_conditions"]) == [f"x_{kind}", f"y_{kind}"]
        x, y = f[f"boundary_conditions/x_{kind}"], f[f"boundary_conditions/y_{kind}"]
        assert x.attrs["bc_type"] == kind.upper() and list(y.attrs["associated_dims"]) == ["y"]
        assert x["mask"][()].tolist() == [True] + [False] * (X - 2) + [True]
        assert y["mask"][()].tolist() == [True] + [False] * (Y - 2) + [True]


_DEEP = "[" * 100_000 + "]" * 100_000  # beyond Python's recursion limit for json.loads
_WELL_JSON = {
    "well_spatial_dims": (
        "a JSON list of 2 distinct axis name(s), none of them 'time' (the time axis), '.', '..' "
        "or holding '/'"
    ),
    "well_boundary_conditions": (
        "a JSON list of boundary conditions, each an object with a group name"
    ),
    "well_time_varying_scalars": "a JSON list of parameter names",
}


@pytest.mark.parametrize("attribute", sorted(_WELL_JSON))
@pytest.mark.parametrize(
    ("text", "came"),
    [
        (_DEEP, "JSON nested deeper than Python's recursion limit lets it parse ('[[[["),
        ("[1, ", "'[1, ', no JSON (Expecting value: line 1 column 5 (char 4))"),
        ('{"x": 1}', "'{\"x\": 1}'"),
        ("[[]]", "'[[]]'"),
    ],
)
def test_a_json_attribute_the_well_writer_reads_is_refused_by_name_in_one_line(
    tmp_path, capsys, attribute, text, came
):
    """Too deep, no JSON, or JSON of another kind: a ValueError naming the attribute, what it
    must hold and what came, in one line, from the writer and from ``physml convert``."""
    data = _ours_2d()
    data.attrs[attribute] = text
    expected = f"data.attrs[{attribute!r}]: expected {_WELL_JSON[attribute]}, got {came}"
    with pytest.raises(ValueError) as refusal:
        write_well(data, tmp_path / "out.h5")
    assert str(refusal.value).startswith(expected) and "\n" not in str(refusal.value)
    assert list(tmp_path.iterdir()) == []
    source = write_physml(data, tmp_path / "ours.h5")
    assert main(["convert", str(source), str(tmp_path / "w.h5"), "--to", "well"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"physml convert: error: {expected}") and error.count("\n") == 1


_FLAT = "ValueError: mask_true must be a list of the mask's flat indices, integers in [0, 3)"


@pytest.mark.parametrize(
    ("entry", "came"),
    [
        ({"name": "b", "mask_shape": [3], "mask_true": [7]}, f"{_FLAT}, got [7])"),
        ({"name": "b", "mask_shape": [3], "mask_true": [-1]}, f"{_FLAT}, got [-1])"),
        ({"name": "b", "mask_shape": [3], "mask_true": [10**30]}, f"{_FLAT}, got [{10**30}])"),
        ({"name": "b", "mask_shape": [3], "mask_true": [1.5]}, f"{_FLAT}, got [1.5])"),
        ({"name": "b", "mask_shape": [3], "mask_true": [True]}, f"{_FLAT}, got [True])"),
        ({"name": "b", "mask_shape": [3]}, f"{_FLAT}, got None)"),
        ({"name": "b", "values": [10**400], "values_dtype": "int64"}, "OverflowError: "),
        ({"name": "b", "values": [1.0], "values_dtype": "nope"}, "TypeError: data type 'nope'"),
        ({"name": "b", "mask_shape": [10**8, 10**8], "mask_true": []}, "ValueError: mask: (1"),
    ],
)
def test_a_boundary_condition_the_well_writer_cannot_write_is_refused_by_name(
    tmp_path, entry, came
):
    data = _ours_2d()
    data.attrs["well_boundary_conditions"] = json.dumps([entry])
    expected = (
        "data.attrs['well_boundary_conditions']: the entry 'b' could not be written as The Well "
        f"stores it ({came}"
    )
    with pytest.raises(ValueError) as refusal:
        write_well(data, tmp_path / "out.h5")
    assert str(refusal.value).startswith(expected) and "\n" not in str(refusal.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("names", [["time", "y"], [".", "y"], ["x", ".."], ["", "y"]])
def test_axis_names_the_well_cannot_hold_are_refused_by_name(tmp_path, capsys, names):
    """``dimensions/`` holds ``time`` beside the axes: an axis named ``time``, ``.``, ``..`` or
    empty has no place there, refused naming the attribute, from the writer and the CLI."""
    data = _ours_2d()
    data.attrs["well_spatial_dims"] = json.dumps(names)
    expected = (
        f"data.attrs['well_spatial_dims']: expected {_WELL_JSON['well_spatial_dims']}, "
        f"got {json.dumps(names)!r}"
    )
    with pytest.raises(ValueError) as refusal:
        write_well(data, tmp_path / "out.h5")
    assert str(refusal.value) == expected
    source = write_physml(data, tmp_path / "ours.h5")
    assert main(["convert", str(source), str(tmp_path / "w.h5"), "--to", "well"]) == 2
    assert capsys.readouterr().err == f"physml convert: error: {expected}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.h5"]


def test_pdebench_files_are_read_as_cell_centres_unless_they_say_otherwise(tmp_path):
    """PDEBench's finite-volume solvers store cell centres, x_i = x_0 + (i + 1/2)·dx, in each
    layout: read as ``grid_kind`` "cell" (where the FNO's position channels put the points);
    a ``grid_kind`` root attribute of the file wins, and a file our writer made of node data
    (none in its ``physml_attrs``) stays nodes."""
    from physml.training.families import grid_kind

    _pdebench_1d(tmp_path / "1d.h5")
    _pdebench_ns(tmp_path / "ns.h5")
    _pdebench_groups(tmp_path / "groups.h5")
    for name in ("1d.h5", "ns.h5", "groups.h5"):
        data = load(tmp_path / name)
        assert data.attrs["grid_kind"] == "cell" and grid_kind(data) == "cell"
        assert read_pdebench(tmp_path / name).attrs["grid_kind"] == "cell"
    with h5py.File(tmp_path / "1d.h5", "a") as f:
        f.attrs["grid_kind"] = "node"
    assert load(tmp_path / "1d.h5").attrs["grid_kind"] == "node"
    nodes = write_pdebench(_ours_2d(), tmp_path / "ours.h5")
    assert "grid_kind" not in load(nodes).attrs
    physml_copy = convert(tmp_path / "groups.h5", tmp_path / "copy.h5")  # the mark is kept
    assert load(physml_copy).attrs["grid_kind"] == "cell"
    again = convert(physml_copy, tmp_path / "again.h5", to="pdebench")
    assert load(again).attrs["grid_kind"] == "cell"


def test_copies_of_pdebench_data_made_without_a_grid_kind_are_read_as_cell_centres(tmp_path):
    """A copy our writers made of PDEBench data before ``grid_kind`` was read holds none: a
    PDEBench copy (``physml_attrs`` naming the PDEBench ``pde``) and a physml copy (its
    ``source_format`` a PDEBench one) read as the original does, cell centres; node data written
    as PDEBench stay nodes."""
    _pdebench_1d(tmp_path / "1d.h5")
    original = load(tmp_path / "1d.h5")
    assert original.attrs["grid_kind"] == "cell"
    del original.attrs["grid_kind"]  # as read before
    as_pdebench = write_pdebench(original, tmp_path / "old_pdebench.h5")
    with h5py.File(as_pdebench) as f:
        assert "grid_kind" not in json.loads(f.attrs["physml_attrs"])
    assert load(as_pdebench).attrs["grid_kind"] == "cell"
    as_physml = write_physml(original, tmp_path / "old_physml.h5")
    with h5py.File(as_physml) as f:
        assert "grid_kind" not in f.attrs and f.attrs["source_format"] == "pdebench"
    assert load(as_physml).attrs["grid_kind"] == "cell"
    nodes = _ours_2d()
    nodes.attrs["pde"] = "heat"
    assert "grid_kind" not in load(write_pdebench(nodes, tmp_path / "nodes.h5")).attrs


def test_the_grid_kind_of_pdebench_data_is_cell_for_a_pdebench_file_whatever_its_pde():
    """A PDEBench file's own attributes are PDEBench data whatever their ``pde``; attributes that
    may be of data ours made are so only when named by the PDEBench reader."""
    named = {"pde": "pdebench: 1D_Advection_Sols", "source_format": "pdebench"}
    own = {"pde": "advection", "source_format": "pdebench-groups"}
    ours = {"pde": "heat"}
    theirs = [pdebench_grid_kind(a, may_be_ours=False) for a in (named, own, ours)]
    assert theirs == ["cell", "cell", None]
    assert [pdebench_grid_kind(a, may_be_ours=np.False_) for a in (named, own)] == ["cell"] * 2
    assert [pdebench_grid_kind(a, may_be_ours=True) for a in (named, own, ours)] == [
        "cell",
        None,
        None,
    ]
    assert [pdebench_grid_kind(a) for a in (named, own, ours)] == ["cell", None, None]
    for bad in (0, None, "no"):
        with pytest.raises(TypeError, match=rf"^may_be_ours must be True or False, got {bad!r}$"):
            pdebench_grid_kind(named, may_be_ours=bad)
    with pytest.raises(TypeError, match="^attrs must be a mapping of attributes, got list$"):
        pdebench_grid_kind([named])


def test_a_sample_index_of_another_length_is_refused_on_reading(tmp_path):
    path = tmp_path / "p.h5"
    _pdebench_1d(path, sample_index=np.arange(5))
    with pytest.raises(DatasetFileError, match=r"sample_index: expected shape \(4,\), got \(5,\)"):
        load(path)


def test_read_parameters_and_counts_are_not_kept_twice_as_attributes(tmp_path):
    _pdebench_1d(tmp_path / "p.h5")
    with h5py.File(tmp_path / "p.h5", "a") as f:
        f.attrs.update(beta=0.4, solver="upwind")
    data = load(tmp_path / "p.h5")
    assert data.params["beta"].tolist() == [0.4] * 4
    assert "beta" not in data.attrs and data.attrs["solver"] == "upwind"
    _well_2d(tmp_path / "w.h5")
    data = load(tmp_path / "w.h5")
    assert data.params["Schmidt"].tolist() == [2.0, 2.0]
    for name in ("Schmidt", "Reynolds", "n_trajectories", "n_spatial_dims"):
        assert name not in data.attrs, name
    assert data.attrs["dataset_name"] == "shear_flow"


def test_a_well_file_of_vector_fields_only_without_counts_loads(tmp_path):
    path = tmp_path / "w.h5"
    stored = _well_2d(path, drop=("density", "obstacle"))
    with h5py.File(path, "a") as f:
        del f["t0_fields"], f.attrs["n_trajectories"]
    data = load(path)
    assert data.u.shape == (2, 5, 8, 6) and data.attrs["field"] == "velocity_x"
    np.testing.assert_array_equal(data.u.numpy(), stored[1]["velocity"][..., 0].astype(np.float32))


def test_a_well_file_without_a_time_varying_field_is_refused(tmp_path):
    path = tmp_path / "w.h5"
    _well_2d(path, drop=("density",))
    with h5py.File(path, "a") as f:
        del f["t1_fields"], f["t2_fields"]
    with pytest.raises(DatasetFileError, match="t0_fields: no time-varying field to serve as u"):
        load(path)


def test_the_well_writer_refuses_a_field_named_as_u(tmp_path):
    data = _ours_2d()
    data.attrs["field"] = "vx"
    with pytest.raises(ValueError, match=r"data.attrs\['field'\]: 'vx' is also the name of a"):
        write_well(data, tmp_path / "out.h5")
    assert list(tmp_path.iterdir()) == []


def test_the_well_writer_refuses_a_parameter_that_may_vary_in_time_or_in_space(tmp_path):
    square = PDEData(  # 1-D, as many times as points: (N, T) is also (N, X)
        u=torch.zeros(N, T, T, dtype=torch.float64),
        t=torch.linspace(0.0, 1.0, T, dtype=torch.float64),
        coords={"x": torch.linspace(0.0, 1.0, T, dtype=torch.float64)},
        params={"inflow": torch.ones(N, T, dtype=torch.float64)},
        attrs={"pde": "synthetic", "boundary": "dirichlet"},
    )
    with pytest.raises(ValueError, match=r"data.params\['inflow'\]: shape \(3, 5\) is both"):
        write_well(square, tmp_path / "out.h5")
    assert list(tmp_path.iterdir()) == []
    square.params["kappa"] = torch.arange(N * T, dtype=torch.float64).reshape(N, T)
    square.attrs["well_time_varying_scalars"] = '["inflow"]'  # kappa: a field on the grid
    write_well(square, tmp_path / "out.h5")
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["scalars/inflow"].attrs["time_varying"]
        assert not f["t0_fields/kappa"].attrs["time_varying"]
    back = read_well(tmp_path / "out.h5")  # the reader says which is which, for the next write
    assert json.loads(back.attrs["well_time_varying_scalars"]) == ["inflow"]
    assert torch.equal(back.params["kappa"], square.params["kappa"])
    write_well(back, tmp_path / "again.h5")
    with h5py.File(tmp_path / "again.h5") as f:
        assert f["scalars/inflow"].attrs["time_varying"] and "kappa" in f["t0_fields"]
    for bad in ("inflow", '{"inflow": 1}', "[1]"):
        square.attrs["well_time_varying_scalars"] = bad
        with pytest.raises(ValueError, match="expected a JSON list of parameter names"):
            write_well(square, tmp_path / "bad.h5")


def test_pdebench_family_drops_name_numbers_and_refuses_a_non_string():
    from physml.data.interchange import pdebench_family

    burgers = pdebench_family("pdebench: 1D_Burgers_Sols_Nu0.01")
    assert burgers == "1D_Burgers_Sols" == pdebench_family("pdebench: 1D_Burgers_Sols_Nu1.0")
    assert pdebench_family("pdebench: 1D_Advection_Sols_beta0.1") != burgers
    with pytest.raises(TypeError, match="pde must be a PDE name"):
        pdebench_family(None)


def test_big_endian_pdebench_data_reads_as_the_native_values(tmp_path):
    """Big-endian datasets (written on another machine or by another tool) read as their values."""
    native = _pdebench_1d(tmp_path / "native.h5")
    swapped = {name: value.astype(value.dtype.newbyteorder(">")) for name, value in native.items()}
    _pdebench_1d(tmp_path / "big.h5", **swapped)
    data = load(tmp_path / "big.h5")
    assert torch.equal(data.u, torch.from_numpy(native["tensor"]))
    assert torch.equal(data.coords["x"], torch.from_numpy(native["x-coordinate"]))


# ------------------------------------------------------------------------------------ hostile files


def _tensor_stored_in(raw):
    def edit(f):
        del f["tensor"]
        f.create_dataset("tensor", (4, 6, 16), "<f4", external=[(str(raw), 0, 4 * 6 * 16 * 4)])

    return edit


def _tensor_linked_to(other):
    def edit(f):
        del f["tensor"]
        f["tensor"] = h5py.ExternalLink(str(other), "/tensor")

    return edit


def _density_linked_to(other):
    def edit(f):
        del f["t0_fields/density"]
        f["t0_fields/density"] = h5py.ExternalLink(str(other), "/tensor")

    return edit


@pytest.mark.parametrize(
    ("make", "edit", "message"),
    [
        (_pdebench_1d, _tensor_stored_in, "'tensor' stores its values in external files [{}]"),
        (_pdebench_1d, _tensor_linked_to, "'tensor' is an external link to another file"),
        (_well_2d, _density_linked_to, "'t0_fields/density' is an external link to another file"),
    ],
    ids=["pdebench-raw", "pdebench-link", "well-link"],
)
def test_foreign_files_reading_other_files_are_refused_as_ours_are(tmp_path, make, edit, message):
    """A file whose data HDF5 reads from elsewhere (here another file standing for /etc/passwd)
    would copy that file's bytes into u: load and convert refuse it before reading."""
    secret = tmp_path / "secret.h5"
    secret.write_bytes(bytes(range(256)) * 8)
    if edit is not _tensor_stored_in:
        with h5py.File(secret, "w") as f:
            f["tensor"] = np.ones((4, 6, 16), np.float32)
    path = tmp_path / "in.h5"
    make(path)
    with h5py.File(path, "a") as f:
        edit(secret)(f)
    expected = f"path: '{path}': {message.format(repr(str(secret)))}; datasets must hold"
    with pytest.raises(DatasetFileError, match=re.escape(expected)):
        load(path)
    out = tmp_path / "copy.h5"
    assert main(["convert", str(path), "--to", "physml", "-o", str(out)]) == 2
    assert not out.exists()


def test_a_dangling_external_link_beside_no_known_dataset_is_no_foreign_file(tmp_path):
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f["s0"] = h5py.ExternalLink(str(tmp_path / "absent.h5"), "/")
    with pytest.raises(DatasetFileError, match="is not a physml dataset"):
        load(path)


def test_a_foreign_array_beyond_the_memory_available_is_refused(tmp_path, monkeypatch):
    """The PDEBench tensor (4, 6, 16) float32 is 1536 bytes, the file's largest array, read
    first; with its coordinates, (16,) and (7,) float32, the file needs 1628 bytes: one fewer
    refuses the last array read, 1535 the tensor."""
    path = tmp_path / "in.h5"
    _pdebench_1d(path)
    with h5py.File(path) as f:
        assert sum(f[name].nbytes for name in f) == 1536 + 64 + 28
    monkeypatch.setattr(physml._checks, "available_memory", lambda: 1628)
    assert load(path).u.shape == (4, 6, 16)
    monkeypatch.setattr(physml._checks, "available_memory", lambda: 1627)
    message = f"path: '{path}': t-coordinate: (7,) float32 values would need about 2.8e-08 GB"
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        load(path)
    monkeypatch.setattr(physml._checks, "available_memory", lambda: 1535)
    message = f"path: '{path}': tensor: (4, 6, 16) float32 values would need about 1.54e-06 GB"
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        load(path)


def _many_arrays(path):
    """40 PDEBench sample groups, 120 arrays: each ``data`` (2, 256, 1) float32 and ``grid/x``
    (256,) float64 is 2048 bytes, each ``grid/t`` 16; 164480 bytes in all."""
    with h5py.File(path, "w") as f:
        for i in range(40):
            f[f"{i:04d}/data"] = np.full((2, 256, 1), i, dtype=np.float32)
            f[f"{i:04d}/grid/x"] = (np.arange(256) + 0.5) / 256
            f[f"{i:04d}/grid/t"] = np.arange(2.0)


def _meminfo(kib, reads):
    """An ``open`` for :mod:`physml._checks` whose /proc/meminfo says ``kib`` KiB are available
    and records each file it opens in ``reads``."""

    def opened(name, *args, **kwargs):
        reads.append(name)
        return io.StringIO(f"MemTotal: 9999999 kB\nMemAvailable: {kib} kB\n")

    return opened


def test_a_file_of_many_arrays_reads_the_memory_available_once_per_load(tmp_path, monkeypatch):
    """One reading of /proc/meminfo per load, not one per array: with 1 GiB available the
    file reads, again at the next call; with 1 KiB its first sample's data is refused."""
    path, reads = tmp_path / "groups.h5", []
    _many_arrays(path)
    monkeypatch.setattr(physml._checks, "open", _meminfo(2**20, reads), raising=False)
    assert load(path).u.shape == (40, 2, 256)
    assert reads == ["/proc/meminfo"]
    assert read_pdebench(path).u[39, 1, 255].item() == 39.0
    assert reads == ["/proc/meminfo"] * 2  # read again by the next call, not kept from the last
    monkeypatch.setattr(physml._checks, "open", _meminfo(1, reads), raising=False)
    message = f"path: '{path}': 0000/data: (2, 256, 1) float32 values would need about 2.05e-06 GB"
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        load(path)
    assert reads == ["/proc/meminfo"] * 3


@pytest.mark.parametrize("kib", [2, 64])
def test_arrays_that_fit_one_by_one_but_not_together_are_refused(tmp_path, monkeypatch, kib):
    """The figure read once per load shrinks by each array admitted: with 2 KiB or 64 KiB
    available each array of the file (2048 bytes at most) fits but their 164480 bytes do not,
    and the load is refused naming a sample's array, with one reading of /proc/meminfo."""
    path, reads = tmp_path / "groups.h5", []
    _many_arrays(path)
    monkeypatch.setattr(physml._checks, "open", _meminfo(kib, reads), raising=False)
    pattern = (
        rf"path: '{re.escape(str(path))}': \d{{4}}/(data|grid/[xt]): .* would need about .* GB, "
        r"but this machine has .* GB of memory available \(less what this read has taken before\)"
    )
    with pytest.raises(DatasetFileError, match=pattern):
        load(path)
    assert reads == ["/proc/meminfo"]


def test_a_well_field_broadcast_to_more_trajectories_than_fit_is_refused(tmp_path):
    """``obstacle`` (8, 6), constant over samples, is served as (n_trajectories, 8, 6): a count
    of 10**12 would be 1.92e14 bytes, refused before numpy is asked for them."""
    path = tmp_path / "w.h5"
    _well_2d(path, drop=("density", "velocity", "stress"))
    with h5py.File(path, "a") as f:
        f.attrs["n_trajectories"] = 10**12
    message = "t0_fields/obstacle: (1000000000000, 8, 6) float32 values would need about 1.92e+05"
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        load(path)


def test_running_out_of_memory_reading_a_foreign_file_is_a_dataset_file_error(
    tmp_path, monkeypatch
):
    path = tmp_path / "in.h5"
    _pdebench_1d(path)

    def exhausted(self, key):
        raise MemoryError

    monkeypatch.setattr(h5py.Dataset, "__getitem__", exhausted)
    with pytest.raises(DatasetFileError, match=r"tensor: .* more than this process could"):
        load(path)


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1, 2]", DEEP, np.bytes_(b"\xff{}")],
    ids=["text", "list", "deep", "no-utf-8"],
)
def test_a_physml_attrs_that_is_no_json_object_is_refused_naming_it(tmp_path, raw):
    path = tmp_path / "in.h5"
    _pdebench_1d(path)
    with h5py.File(path, "a") as f:
        f.attrs["physml_attrs"] = raw
    message = f"path: {str(path)!r}: physml_attrs: expected a JSON object of attributes"
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        load(path)


def test_foreign_settings_nested_deeper_than_python_parses_are_refused(tmp_path):
    path = tmp_path / "in.h5"
    _pdebench_1d(path)
    with h5py.File(path, "a") as f:
        f.attrs["settings"] = DEEP
    with pytest.raises(DatasetFileError, match="its attribute 'settings' nests JSON deeper"):
        load(path)
