"""Merging shards into virtual datasets, and the checks that shards form one dataset."""

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from damage import flip_a_bit_of_chunk, flip_a_bit_of_the_first_chunk
from recipes import ToyProblem

from pdes import problems
from physml.cli import main
from physml.data import (
    DatasetFileError,
    ShardError,
    check_shards,
    convert,
    generate_dataset,
    load,
    merge_shards,
    write_physml,
)
from physml.data.generate import sample_seed, write_checksummed


class OtherToy(ToyProblem):
    name = "other-toy"
    description = "the toy recipe under another name (tests only)"


problems.register(OtherToy())


class TotalsToy(ToyProblem):
    name = "totals-toy"
    description = "the toy recipe with a total per frame, as the tracer recipes (tests only)"

    def generate(self, seeds, settings, device="cpu"):
        batch = super().generate(seeds, settings, device)
        return problems.Batch(u=batch.u, params=batch.params, fields={"total": batch.u.sum(-1)})


problems.register(TotalsToy())


class EquationToy(ToyProblem):
    name = "equation-toy"
    description = "the toy recipe stating its equation, as the solver recipes do (tests only)"

    def attributes(self, settings):
        return {**super().attributes(settings), "pde": "toy: u = a exp(-t) sin(pi x)"}


problems.register(EquationToy())

N, SEED, SHARDS = 11, 5, 3  # shards hold samples 0-2, 3-6 and 7-10


def make(out, pde="toy", **kwargs):
    kwargs = {"n": N, "seed": SEED, "num_shards": SHARDS, "chunk": 2, "progress": False, **kwargs}
    return generate_dataset(pde, out, **kwargs)


@pytest.fixture
def sharded(tmp_path):
    """``data/ds.h5`` (the index) and its three shards, in shard order."""
    folder = tmp_path / "data"
    folder.mkdir()
    shards = [make(folder / "ds.h5", shard=i) for i in range(SHARDS)]
    return folder / "ds.h5", shards


def test_merged_file_loads_bitwise_like_one_process(tmp_path, sharded):
    _, shards = sharded
    whole = load(make(tmp_path / "whole.h5", num_shards=1, chunk=4))
    merged_path = merge_shards(shards[::-1], tmp_path / "data" / "merged.h5")  # any order
    with h5py.File(merged_path) as f:
        for name in ("u", "params/a", "fields/u_squared", "sample_index", "sample_seed"):
            assert f[name].is_virtual and f[name].id.get_storage_size() == 0, name  # no copy
        assert not f["t"].is_virtual and not f["x"].is_virtual
        sources = {source.file_name for source in f["u"].virtual_sources()}
        assert sources == {p.name for p in shards}  # relative to the merged file's folder
    merged = load(merged_path)
    assert torch.equal(merged.u, whole.u) and merged.u.dtype == torch.float64
    assert torch.equal(merged.params["a"], whole.params["a"])
    assert torch.equal(merged.fields["u_squared"], whole.fields["u_squared"])
    assert torch.equal(merged.sample_index, torch.arange(N))
    assert torch.equal(merged.t, whole.t) and torch.equal(merged.coords["x"], whole.coords["x"])
    for key in ("pde", "seed", "n_total", "settings", "physml_version", "nx"):
        assert merged.attrs[key] == whole.attrs[key], key
    assert merged.attrs["num_shards"] == 1
    assert not list((tmp_path / "data").glob(".*tmp"))  # the temporary name is gone


@pytest.mark.parametrize("via", [None, "pdebench", "well"])
def test_a_copy_of_a_merged_file_is_a_plain_file_that_loads(tmp_path, sharded, via):
    """The copy holds real arrays: it must not say ``merged_from`` (load would check it as a
    merged file of virtual datasets and refuse it)."""
    _, shards = sharded
    merged_path = merge_shards(shards, tmp_path / "data" / "merged.h5")
    merged = load(merged_path)
    source = merged_path
    if via is not None:
        source = convert(merged_path, tmp_path / f"{via}.h5", to=via)
        assert "merged_from" not in load(source).attrs
    copy = convert(source, tmp_path / "copy.h5", to="physml")
    with h5py.File(copy) as f:
        assert "merged_from" not in f.attrs and not f["u"].is_virtual
    back = load(copy)
    assert torch.equal(back.u, merged.u) and torch.equal(back.sample_index, torch.arange(N))
    assert torch.equal(back.params["a"], merged.params["a"])
    for key in ("pde", "seed", "n_total", "settings"):
        assert back.attrs[key] == merged.attrs[key], key
    write_physml(merged, tmp_path / "written.h5")
    assert torch.equal(load(tmp_path / "written.h5").u, merged.u)


def test_an_older_copy_that_kept_merged_from_over_real_arrays_still_loads(tmp_path, sharded):
    _, shards = sharded
    merged = load(merge_shards(shards, tmp_path / "data" / "merged.h5"))
    old = shutil.copy(make(tmp_path / "whole.h5", num_shards=1), tmp_path / "old.h5")
    with h5py.File(old, "r+") as f:
        f.attrs["merged_from"] = '["data/ds.shard-000-of-003.h5"]'
    assert torch.equal(load(old).u, merged.u)


def test_an_index_stands_for_its_shards(tmp_path, sharded):
    index, shards = sharded
    merged = load(merge_shards([index], tmp_path / "data" / "merged.h5"))
    assert torch.equal(merged.u, load(index).u)


def test_moved_together_still_loads(tmp_path, sharded, monkeypatch):
    _, shards = sharded
    (tmp_path / "data" / "merged").mkdir()
    merge_shards(shards, tmp_path / "data" / "merged" / "all.h5")  # shards stored as ../NAME
    expected = load(tmp_path / "data" / "merged" / "all.h5").u
    moved = tmp_path / "elsewhere" / "data-moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "data", moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert torch.equal(load(moved / "merged" / "all.h5").u, expected)
    assert torch.equal(load("data-moved/merged/all.h5").u, expected)  # a relative path too


def test_missing_shard_file_is_an_error_not_fill_values(tmp_path, sharded, monkeypatch):
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    shards[1].rename(tmp_path / "away.h5")
    with h5py.File(merged) as f:  # what plain h5py gives: fill values, no error
        assert np.isnan(f["u"][3:7]).all()
    with pytest.raises(FileNotFoundError, match=f"reads the shard '{shards[1].name}'.*missing"):
        load(merged)
    # HDF5 falls back to the working directory for a relative source: a stray copy there is
    # not taken for the shard that belongs beside the merged file.
    monkeypatch.chdir(tmp_path)
    shutil.copy(tmp_path / "away.h5", tmp_path / shards[1].name)
    with pytest.raises(FileNotFoundError, match="missing"):
        load(merged)


@pytest.mark.parametrize(
    "regenerate, match",
    [
        ({"seed": 6}, "seed 6 vs 5"),
        ({"nx": 11}, r"nx 11 vs 9.*u per-sample shape \(4, 11\) vs \(4, 9\)"),
        ({"pde": "other-toy"}, "pde 'other-toy' vs 'toy'"),
    ],
)
def test_inconsistent_shards_are_refused_by_merge_index_and_merged_file(
    tmp_path, sharded, regenerate, match
):
    index, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    named = f"'{shards[1]}' vs '{shards[0]}'"
    removed = f"{match}.*; the old index '{index}' was removed"
    with pytest.raises(ShardError, match=f"not written: shards disagree: {named}: .*{removed}"):
        make(index, shard=1, overwrite=True, **regenerate)  # shard 1 made again, differently
    with pytest.raises(ShardError, match=f"shards disagree, {named}: .*{match}"):
        merge_shards(shards, tmp_path / "data" / "again.h5")
    assert not (tmp_path / "data" / "again.h5").exists()
    with pytest.raises(FileNotFoundError, match="no dataset at .*, but its shard files"):
        load(index)  # not a silent join by index
    with pytest.raises(ShardError, match=match):
        load(merged)


def test_merged_file_refuses_shards_remade_alike_with_other_settings(tmp_path, sharded):
    index, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    for shard in range(SHARDS - 1):  # the shards not remade yet disagree: no index till the last
        with pytest.raises(ShardError, match="not written: shards disagree: .*: seed 5 vs 6; "):
            make(index, shard=shard, seed=6, overwrite=True)
    make(index, shard=SHARDS - 1, seed=6, overwrite=True)
    assert load(index).attrs["seed"] == 6  # consistent among themselves
    with pytest.raises(ShardError, match="changed since the merge.*: seed 6 vs 5"):
        load(merged)


def test_a_shard_written_before_the_equation_was_kept_joins_those_that_keep_it(tmp_path):
    """Generated files keep the recipe's equation since physml wrote ``pde`` as the recipe's
    name alone: an earlier shard (no ``equation``) still forms one dataset with later ones, and
    the index and the merged file describe it with the equation; two equations still differ."""
    index = tmp_path / "eq.h5"
    shards = [tmp_path / f"eq.shard-00{i}-of-003.h5" for i in range(SHARDS)]
    make(index, pde="equation-toy", shard=0)
    with h5py.File(shards[0], "r+") as f:
        assert f.attrs["pde"] == "equation-toy"
        assert f.attrs["equation"] == "toy: u = a exp(-t) sin(pi x)"
        del f.attrs["equation"]  # as an earlier physml wrote it
    for shard in (1, 2):  # the last writes the index: the shards form one dataset
        make(index, pde="equation-toy", shard=shard)
    assert load(index).u.shape == (N, 4, 9)
    assert load(index).attrs["equation"] == "toy: u = a exp(-t) sin(pi x)"  # not shard 0's
    merged = merge_shards(shards, tmp_path / "merged.h5")
    assert load(merged).attrs["equation"] == "toy: u = a exp(-t) sin(pi x)"
    when = ("created", "merged_from")  # a run trained on one resumes on the other
    described = [{k: v for k, v in load(f).attrs.items() if k not in when} for f in (index, merged)]
    assert described[0] == described[1]
    _set_attribute(shards[2:], "equation", "u_t = 0")
    with pytest.raises(
        ShardError,
        match=rf"'{shards[2]}' vs '{shards[1]}': equation 'u_t = 0' vs 'toy: u = a exp",
    ):
        check_shards(shards)


def _shift_samples(source, target, offset):
    """A copy of a shard claiming other samples, with seeds consistent with the claim."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        index = f["sample_index"][()] + offset
        f["sample_index"][...] = index
        f["sample_seed"][...] = [sample_seed(SEED, int(i)) for i in index]


def test_overlapping_missing_and_repeated_ranges_are_refused(tmp_path, sharded):
    _, (first, middle, last) = sharded
    with pytest.raises(ShardError, match=r"samples 3-6 of 0\.\.10 are in no shard given"):
        check_shards([first, last])
    with pytest.raises(ShardError, match=r"\(shard 1 of 3 not given\?\)"):
        merge_shards([last, first], tmp_path / "merged.h5")
    shifted = tmp_path / "data" / "shifted.h5"
    _shift_samples(middle, shifted, -1)  # claims 2-5
    with pytest.raises(ShardError, match=f"'{first}' and '{shifted}' both hold samples 2$"):
        check_shards([first, shifted, last])
    with pytest.raises(ShardError, match="given twice"):
        check_shards([first, middle, middle, last])
    assert [s.samples for s in check_shards([last, first, middle])] == [
        range(0, 3),
        range(3, 7),
        range(7, 11),
    ]


def test_seeds_of_another_scheme_are_refused(tmp_path, sharded):
    _, shards = sharded
    with h5py.File(shards[2], "r+") as f:
        f["sample_seed"][1] += 1
    with pytest.raises(ShardError, match="sample_seed of sample 8 .* seed scheme"):
        check_shards(shards)


def test_bad_outputs_and_inputs(tmp_path, sharded):
    index, shards = sharded
    with pytest.raises(ValueError, match="one of the shards"):
        merge_shards(shards, shards[0], overwrite=True)
    out = merge_shards(shards, tmp_path / "merged.h5")
    with pytest.raises(FileExistsError, match=r"already exists \(pass overwrite=True\)$"):
        merge_shards(shards, out)
    with pytest.raises(ShardError, match="is a merged file"):
        check_shards([out])
    absent = str(tmp_path / "absent.h5")
    with pytest.raises(
        FileNotFoundError, match=f"^paths: no shard file at {re.escape(repr(absent))}$"
    ):
        merge_shards([*shards, absent], tmp_path / "other.h5")
    with pytest.raises(
        FileNotFoundError, match=f"^path: no shard file at {re.escape(repr(absent))}$"
    ):
        check_shards([*shards, absent])
    with pytest.raises(ValueError, match="at least one shard"):
        check_shards([])


def test_a_folder_as_the_output_is_refused_with_or_without_overwrite(tmp_path, sharded, capsys):
    _, shards = sharded
    folder = tmp_path / "outdir"
    folder.mkdir()
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"out: .*outdir' is a folder; name the dataset file"):
            merge_shards(shards, folder, overwrite=overwrite)
    assert main(["merge", *map(str, shards), "-o", str(folder), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"physml merge: error: out: {str(folder)!r} is a folder" in err and "Errno" not in err
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert not list(tmp_path.glob(".*tmp"))


def test_cli_merge(tmp_path, sharded, capsys):
    _, shards = sharded
    out = tmp_path / "merged.h5"
    assert main(["merge", *map(str, shards), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert torch.equal(load(out).sample_index, torch.arange(N))

    code = main(["merge", str(shards[0]), str(shards[2]), "-o", str(tmp_path / "bad.h5")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("physml merge: error: samples 3-6")
    assert "Traceback" not in err and not (tmp_path / "bad.h5").exists()
    assert main(["merge", str(shards[0]), str(tmp_path / "nope.h5"), "-o", str(out)]) == 2
    missing = f"physml merge: error: SHARD: no shard file at {str(tmp_path / 'nope.h5')!r}\n"
    assert capsys.readouterr().err == missing
    assert main(["merge", str(tmp_path), "-o", str(tmp_path / "bad.h5")]) == 2
    folder = f"physml merge: error: SHARD: {str(tmp_path)!r} is a folder, not a shard file\n"
    assert capsys.readouterr().err == folder
    with pytest.raises(SystemExit) as exit_:
        main(["merge", str(shards[0])])
    assert exit_.value.code == 2 and "-o/--out" in capsys.readouterr().err


def test_a_shard_an_index_names_but_that_is_gone_is_named_with_the_index(
    tmp_path, sharded, capsys, monkeypatch
):
    index, shards = sharded
    shards[1].unlink()
    monkeypatch.chdir(index.parent)
    assert main(["merge", "ds.h5", "-o", "m.h5"]) == 2
    assert capsys.readouterr().err == (
        f"physml merge: error: SHARD: index 'ds.h5' names {shards[1].name!r}, which does not "
        "exist\n"
    )
    assert not Path("m.h5").exists()
    with pytest.raises(FileNotFoundError) as missing:
        load(index)
    assert (
        str(missing.value)
        == f"path: index {str(index)!r} names {str(shards[1])!r}, which does not exist"
    )


def test_a_gap_of_one_sample_is_named(tmp_path, sharded):
    _, (first, middle, _) = sharded
    shifted = tmp_path / "data" / "shifted.h5"
    _shift_samples(middle, shifted, 1)  # claims 4-7: sample 3 and 8-10 are in no shard
    with pytest.raises(ShardError, match=r"samples 3, 8-10 of 0\.\.10 are in no shard given"):
        check_shards([first, shifted])


def _grow_by_one_sample(merged):
    """Rewrite every per-sample virtual dataset of ``merged`` one sample longer: the same sources
    at the same places, and a last sample that no shard holds (it reads the fill value)."""
    with h5py.File(merged, "r+") as f:
        names = [n for n in ("u", "sample_index", "sample_seed") if n in f]
        names += [f"{g}/{k}" for g in ("params", "fields") for k in f.get(g, {})]
        for name in names:
            dataset = f[name]
            shape, dtype, fill = dataset.shape, dataset.dtype, dataset.fillvalue
            layout = h5py.VirtualLayout(shape=(shape[0] + 1, *shape[1:]), dtype=dtype)
            for source in dataset.virtual_sources():
                start, end = source.vspace.get_select_bounds()
                count = end[0] + 1 - start[0]
                layout[start[0] : end[0] + 1] = h5py.VirtualSource(
                    source.file_name, source.dset_name, shape=(count, *shape[1:]), dtype=dtype
                )
            del f[name]
            f.create_virtual_dataset(name, layout, fillvalue=fill)


def test_a_merged_file_with_a_sample_its_shards_lack_is_refused(tmp_path, sharded):
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    _grow_by_one_sample(merged)
    with h5py.File(merged) as f:
        assert f["u"].shape[0] == N + 1 and f["u"].is_virtual
    named = re.escape(f"'{merged}' holds {N + 1} samples, its shards {N}")
    with pytest.raises(ShardError, match=f"{named}$"):
        load(merged)


def test_shards_found_elsewhere_through_hdf5_vds_prefix_are_refused(tmp_path, sharded, monkeypatch):
    """HDF5 looks in HDF5_VDS_PREFIX before the merged file's folder: a file there under a
    shard's name is read in its place, so the samples read back are checked."""
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    shutil.copy(shards[2], decoy / shards[1].name)  # samples 7-10 where 3-6 belong
    monkeypatch.setenv("HDF5_VDS_PREFIX", str(decoy))
    with h5py.File(merged) as f:
        assert f["sample_index"][3:7].tolist() == [7, 8, 9, 10]
    with pytest.raises(DatasetFileError, match=r"HDF5_VDS_PREFIX=.* read the shard .*decoy"):
        load(merged)
    monkeypatch.setenv("HDF5_VDS_PREFIX", f"{tmp_path / 'absent'}{os.pathsep}${{ORIGIN}}")
    assert load(merged).sample_index.tolist() == list(range(11))  # finds the checked shards
    monkeypatch.delenv("HDF5_VDS_PREFIX")
    assert load(merged).sample_index.tolist() == list(range(11))


def test_shards_of_another_run_found_through_hdf5_vds_prefix_are_refused(
    tmp_path, sharded, monkeypatch
):
    """Same names, same sample indices, another seed: nothing in the samples read back tells."""
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    for shard in range(SHARDS):
        make(decoy / "ds.h5", seed=SEED + 1, shard=shard)
    for prefix in (str(decoy), "${ORIGIN}/../decoy"):  # ${ORIGIN}: the merged file's folder
        monkeypatch.setenv("HDF5_VDS_PREFIX", prefix)
        with pytest.raises(DatasetFileError, match=r"read the shard 'ds\.shard-000-of-003\.h5'"):
            load(merged)


def _rewrite(path, name, data):
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, data=data)


def _set_attribute(paths, key, value):
    for path in paths:
        with h5py.File(path, "r+") as f:
            f.attrs[key] = value


def _as_float32(path, name):
    with h5py.File(path) as f:
        data = f[name][()]
    _rewrite(path, name, data.astype(np.float32))


def _x_moved(path):
    with h5py.File(path) as f:
        x = f["x"][()]
    _rewrite(path, "x", x + 1.0)


def _array_attribute(paths):
    _set_attribute(paths, "weights", np.array([1, 2], dtype=np.int64))
    _set_attribute(paths[1:2], "weights", np.array([1, 2], dtype=np.int32))


@pytest.mark.parametrize(
    "spoil, match",
    [
        (lambda shards: _set_attribute(shards[1:2], "nx", 9.0), r"nx 9\.0 vs 9(;|$)"),
        (_array_attribute, r"weights array\(\[1, 2\], dtype=int32\) vs array\(\[1, 2\]\)"),
        (lambda shards: _as_float32(shards[1], "params/a"), "params/a dtype float32 vs float64"),
        (lambda shards: _x_moved(shards[1]), "coordinate x values differ"),
    ],
    ids=["attribute-of-another-type", "array-attribute-of-another-dtype", "dtype", "x"],
)
def test_shards_differing_in_a_type_a_dtype_or_coordinate_values_are_refused(sharded, spoil, match):
    _, shards = sharded
    spoil(shards)
    with pytest.raises(
        ShardError, match=f"shards disagree, '{shards[1]}' vs '{shards[0]}': {match}"
    ):
        check_shards(shards)


def _index_permuted(path):
    with h5py.File(path, "r+") as f:
        index = f["sample_index"][()][[0, 2, 1, 3]]  # 3, 5, 4, 6 with seeds of the claim
        f["sample_index"][...] = index
        f["sample_seed"][...] = [sample_seed(SEED, int(i)) for i in index]


def _emptied(path):
    with h5py.File(path) as f:
        arrays = {n: f[n][()] for n in ("u", "sample_index", "sample_seed", "params/a")}
        arrays["fields/u_squared"] = f["fields/u_squared"][()]
    for name, data in arrays.items():
        _rewrite(path, name, data[:0])


def _first_seed_changed(path):
    with h5py.File(path, "r+") as f:
        f["sample_seed"][0] += 1


def _without_seeds(path):
    with h5py.File(path, "r+") as f:
        del f["sample_seed"]


def _short_parameter(path):
    with h5py.File(path) as f:
        a = f["params/a"][()]
    _rewrite(path, "params/a", a[:3])


def _parameter_stored_elsewhere(path):
    """``params/a`` read by HDF5 from another file (standing for /etc/passwd)."""
    raw = path.with_name("elsewhere.bin")
    raw.write_bytes(bytes(range(32)))
    with h5py.File(path, "r+") as f:
        del f["params/a"]
        f["params"].create_dataset("a", (4,), "<f8", external=[(str(raw), 0, 32)])


def _settings_nested_deep(path):
    with h5py.File(path, "r+") as f:
        f.attrs["settings"] = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "spoil_middle, error, match",
    [
        (_without_seeds, DatasetFileError, "is not a physml dataset shard"),
        (_parameter_stored_elsewhere, DatasetFileError, "'params/a' stores its values in external"),
        (_settings_nested_deep, DatasetFileError, "its attribute 'settings' nests JSON deeper"),
        (_short_parameter, ShardError, "params/a holds 3 samples, sample_index 4$"),
        (_emptied, ShardError, "holds no samples$"),
        (_index_permuted, ShardError, "sample_index is not one run of consecutive samples"),
        (_first_seed_changed, ShardError, "sample_seed of sample 3 is"),
    ],
    ids=[
        "no-sample_seed",
        "external",
        "deep-settings",
        "short-params",
        "empty",
        "permuted-index",
        "first-seed",
    ],
)
def test_a_shard_that_is_not_whole_on_its_own_is_refused(sharded, spoil_middle, error, match):
    _, (first, middle, last) = sharded
    spoil_middle(middle)
    with pytest.raises(error, match=f"'{middle}'.*{match}"):
        check_shards([first, middle, last])


def test_n_total_must_be_an_integer_that_holds_every_shard(sharded):
    _, shards = sharded
    _set_attribute(shards, "n_total", 10)  # the last shard holds samples 7-10
    with pytest.raises(
        ShardError, match=f"'{shards[2]}' holds samples up to 10, beyond n_total=10"
    ):
        check_shards(shards)
    _set_attribute(shards, "n_total", True)
    with pytest.raises(ShardError, match="has no integer n_total attribute"):
        check_shards(shards)


def test_a_missing_shard_reads_as_values_no_sample_has(tmp_path, sharded):
    """Plain HDF5 reads fill values for a missing shard: NaN for floats, -1 for the indices and
    seeds, which no sample has (samples count from 0, seeds are 63-bit non-negative)."""
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    shards[1].rename(tmp_path / "away.h5")
    with h5py.File(merged) as f:
        assert f["sample_index"][()].tolist() == [0, 1, 2, -1, -1, -1, -1, 7, 8, 9, 10]
        assert (f["sample_seed"][3:7] == -1).all() and (f["sample_seed"][:3] >= 0).all()
        assert np.isnan(f["params/a"][3:7]).all() and not np.isnan(f["params/a"][:3]).any()


def test_a_merged_file_with_a_real_array_among_its_virtual_ones_is_refused(tmp_path, sharded):
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    _rewrite(merged, "params/a", np.zeros(N))
    with pytest.raises(ShardError, match="params/a is not a virtual dataset in a merged file"):
        load(merged)


def _rebuild(merged, name, source_of):
    """Rewrite the virtual dataset ``name`` of ``merged``, reading each sample range from
    ``source_of(file_name, dset_name)`` (a pair), or from nothing where it gives ``None``."""
    with h5py.File(merged, "r+") as f:
        dataset = f[name]
        shape, dtype, fill = dataset.shape, dataset.dtype, dataset.fillvalue
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        for source in dataset.virtual_sources():
            start, end = source.vspace.get_select_bounds()
            new = source_of(source.file_name, source.dset_name)
            if new is not None:
                count = end[0] + 1 - start[0]
                layout[start[0] : end[0] + 1] = h5py.VirtualSource(
                    *new, shape=(count, *shape[1:]), dtype=dtype
                )
        del f[name]
        f.create_virtual_dataset(name, layout, fillvalue=fill)


def test_a_merged_array_that_skips_a_shard_is_refused(tmp_path, sharded):
    """params/a rebuilt without shard 1's samples would read NaN for samples 3-6."""
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    _rebuild(
        merged, "params/a", lambda file, dset: None if file == shards[1].name else (file, dset)
    )
    lacking = r"\['fields/u_squared', 'sample_index', 'sample_seed', 'u'\]"
    with pytest.raises(ShardError, match=rf"reads {lacking} from .*{shards[1].name}', not every"):
        load(merged)


def test_a_merged_array_that_reads_another_array_of_its_shape_is_refused(tmp_path, sharded):
    """fields/u_squared reading shard 1's u: the same samples, the wrong values."""
    _, shards = sharded
    merged = merge_shards(shards, tmp_path / "data" / "merged.h5")
    wrong = lambda file, dset: (file, "u") if file == shards[1].name else (file, dset)  # noqa: E731
    _rebuild(merged, "fields/u_squared", wrong)
    with pytest.raises(ShardError, match="reads samples 3-6 of fields/u_squared from u in"):
        load(merged)


def test_a_physml_copy_keeps_fields_of_any_shape_and_the_seeds_and_merges_again(tmp_path, capsys):
    for shard in range(2):
        make(tmp_path / "t.h5", pde="totals-toy", shard=shard, num_shards=2)
    merged = merge_shards([tmp_path / "t.h5"], tmp_path / "merged.h5")
    copy = tmp_path / "copy.h5"
    assert main(["convert", str(merged), str(copy), "--to", "physml"]) == 0
    data = load(copy)
    x, t = np.linspace(0.0, 1.0, 9), np.linspace(0.0, 1.0, 4)
    a = data.params["a"].numpy()[:, None]
    np.testing.assert_allclose(
        data.fields["total"].numpy(), a * np.exp(-t) * np.sin(np.pi * x).sum(), rtol=1e-12
    )
    assert data.sample_seed.tolist() == [sample_seed(SEED, i) for i in range(N)]
    assert torch.equal(load(merge_shards([copy], tmp_path / "again.h5")).u, load(merged).u)
    for writer in ("pdebench", "well"):
        assert main(["convert", str(copy), str(tmp_path / f"{writer}.h5"), "--to", writer]) == 2
        assert (
            "data.fields['total']: expected the shape of u (11, 4, 9), got (11, 4) "
            f"(write_{writer} keeps fields on the grid of u; a physml file (--to physml / "
            "write_physml) takes any shape)\n" in capsys.readouterr().err
        )


def test_a_damaged_shard_is_refused_by_merge_and_named_when_merged_without_verifying(
    tmp_path, sharded, capsys
):
    _, shards = sharded
    flip_a_bit_of_the_first_chunk(shards[1], "u")
    damaged = f"shard {str(shards[1])!r} is damaged: its array 'u' failed its checksum ("
    with pytest.raises(DatasetFileError, match=re.escape(damaged)):
        merge_shards(shards, tmp_path / "merged.h5")
    assert not (tmp_path / "merged.h5").exists()
    merged = tmp_path / "data" / "merged.h5"
    assert main(["merge", *map(str, shards), "-o", str(merged), "--no-verify"]) == 0
    with pytest.raises(DatasetFileError, match=re.escape(damaged)) as error:
        load(merged)
    assert str(error.value).startswith(f"path: {str(merged)!r} could not be read: ")
    assert str(shards[0]) not in str(error.value) and str(shards[2]) not in str(error.value)


def test_a_damaged_chunk_past_the_first_is_found(tmp_path):
    """Frames of 8193 points: a sample of ``u`` (262 kB) fills a chunk of its own, so the
    middle shard's ``u`` is 4 chunks; a bit flipped in the last one is found as in the first."""
    shards = [make(tmp_path / "ds.h5", shard=i, nx=8193) for i in range(SHARDS)]
    with h5py.File(shards[1]) as f:
        assert f["u"].id.get_num_chunks() == 4
    flip_a_bit_of_chunk(shards[1], "u", 3)
    damaged = f"shard {str(shards[1])!r} is damaged: its array 'u' failed its checksum ("
    with pytest.raises(DatasetFileError, match=re.escape(damaged)):
        merge_shards(shards, tmp_path / "merged.h5")


def test_an_array_stored_unchunked_does_not_end_the_verification(tmp_path, sharded):
    """A per-sample string parameter is stored plainly (HDF5 cannot checksum it), among the
    parameters read before the fields: the damaged field after it is still found."""
    _, shards = sharded
    for path in shards:
        with h5py.File(path, "r+") as f:
            labels = np.array([f"sample {i}" for i in f["sample_index"][()]], dtype=object)
            assert write_checksummed(f["params"], "label", labels).chunks is None
    flip_a_bit_of_the_first_chunk(shards[1], "fields/u_squared")
    damaged = (
        f"shard {str(shards[1])!r} is damaged: its array 'fields/u_squared' failed its checksum ("
    )
    with pytest.raises(DatasetFileError, match=re.escape(damaged)):
        merge_shards(shards, tmp_path / "merged.h5")


def test_shards_of_two_splits_join_when_their_ranges_do(tmp_path):
    """Shard 0 of 2 holds samples 0-4 of 11, shards 2 and 3 of 4 samples 5-7 and 8-10: a failed
    shard 1 of 2 redone as two smaller jobs."""
    first = make(tmp_path / "re.h5", shard=0, num_shards=2)
    quarters = [make(tmp_path / "re.h5", shard=i, num_shards=4) for i in (3, 2)]
    whole = load(make(tmp_path / "whole.h5", num_shards=1))
    merged = load(merge_shards([first, *quarters], tmp_path / "merged.h5"))
    assert torch.equal(merged.u, whole.u) and torch.equal(merged.sample_index, torch.arange(N))
    with pytest.raises(ShardError, match=r"samples 5-7 of 0\.\.10 are in no shard given$"):
        check_shards([first, quarters[0]])  # no shard number to suggest: the splits differ


def test_differing_settings_are_named_key_by_key_not_cut_to_one_look(tmp_path, sharded):
    _, shards = sharded
    long = "a" * 90  # the settings text of both runs is longer than a message shows
    _set_attribute(shards[:1], "settings", f'{{"grid": "{long}", "note": 1, "nt": 4, "nx": 9}}')
    _set_attribute(shards[1:2], "settings", f'{{"grid": "{long}", "note": 2, "nt": 4, "nx": 9}}')
    with pytest.raises(ShardError, match=r": settings\.note 2 vs 1$"):
        check_shards(shards[:2])
    with pytest.raises(ShardError, match="not written: shards disagree: "):
        make(tmp_path / "data" / "ds.h5", shard=1, nx=11, overwrite=True)
    with pytest.raises(ShardError, match=r"'[^']*': nx 11 vs 9; u per-sample") as error:
        check_shards([shards[2], shards[1]])  # settings.nx is the attribute nx: said once
    assert "settings" not in str(error.value).split(".h5': ")[-1]


def test_settings_written_with_their_keys_in_another_order_are_shown_whole(sharded):
    """The same settings JSON with its keys reversed: not the same file contents, so the shards
    are refused, with both texts shown whole (no key differs to name one by one)."""
    _, shards = sharded
    with h5py.File(shards[1], "r+") as f:
        settings = json.loads(f.attrs["settings"])
        f.attrs["settings"] = json.dumps(dict(reversed(settings.items())))
    assert len(settings) > 1
    with pytest.raises(ShardError, match=r": settings '\{.*\}' vs '\{.*\}'$"):
        check_shards(shards)


@pytest.mark.parametrize("one", ["s.h5", Path("s.h5")])
def test_one_path_in_place_of_a_list_of_shards_is_refused_naming_it(tmp_path, one):
    """A plain string was read letter by letter ("no shard file at 's'")."""
    with pytest.raises(TypeError, match=r"^paths must be a list of shard files, got the one path"):
        merge_shards(one, tmp_path / "m.h5")


def test_an_index_whose_shard_list_nests_too_deep_is_refused_naming_it(tmp_path, sharded):
    index, _ = sharded
    _set_attribute([index], "shards", "[" * 100_000 + "]" * 100_000)
    message = (
        f"paths: {str(index)!r} is a shard index whose 'shards' attribute: expected a JSON list "
        "of shard file names in its folder, got JSON nested deeper than Python's recursion limit"
    )
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        merge_shards([index], tmp_path / "m.h5")


def test_an_index_and_its_merged_file_agree_where_a_shard_was_converted_there_and_back(tmp_path):
    """A shard converted to PDEBench and back names its source file; the index read the shard's
    attributes whole (source_format, source_file) while the merged file drops them per shard, so
    a run trained on the one refused to resume on the other."""
    from physml.data.interchange import convert

    folder = tmp_path / "data"
    folder.mkdir()
    shards = [make(folder / "ds.h5", shard=i) for i in range(SHARDS)]
    convert(shards[0], tmp_path / "s0.hdf5", to="pdebench")
    convert(tmp_path / "s0.hdf5", tmp_path / "s0back.h5", to="physml")
    shutil.copy(tmp_path / "s0back.h5", shards[0])
    merged = merge_shards(shards, tmp_path / "merged.h5")
    when = ("created", "merged_from")
    described = [
        {k: v for k, v in load(f).attrs.items() if k not in when}
        for f in (folder / "ds.h5", merged)
    ]
    assert "source_file" not in described[0]
    assert described[0] == described[1]


@pytest.mark.parametrize(
    "shards",
    [None, "not json", '{"a": 1}', '"ab"', "[1]", '["../ds-00000-of-00002.h5"]', "[" * 100_000],
    ids=["missing", "not-json", "object", "text", "numbers", "parent", "deep"],
)
def test_an_index_whose_shard_list_is_damaged_is_refused_naming_it(
    sharded, capsys, monkeypatch, shards
):
    index, _ = sharded
    with h5py.File(index, "a") as f:
        del f.attrs["shards"]
        if shards is not None:
            f.attrs["shards"] = shards
    monkeypatch.chdir(index.parent)
    assert main(["merge", index.name, "-o", "m.h5"]) == 2
    assert capsys.readouterr().err.startswith(
        f"physml merge: error: SHARD: {index.name!r} is a shard index whose 'shards' attribute: "
        "expected a JSON list of shard file names in its folder, got "
    )
    assert not Path("m.h5").exists()


def test_merge_and_generate_refuse_paths_that_are_no_paths_naming_them(tmp_path):
    from physml.data import generate_dataset

    message = "must be a file path (str or os.PathLike), got int"
    with pytest.raises(TypeError, match=re.escape(f"out {message}")):
        generate_dataset("toy", 3, n=2, progress=False)
    with pytest.raises(TypeError, match=re.escape(f"out {message}")):
        merge_shards([tmp_path / "a.h5"], 3)
    with pytest.raises(TypeError, match=re.escape(f"paths {message}")):
        merge_shards([3], tmp_path / "m.h5")
    with pytest.raises(TypeError, match=re.escape("paths must be a list of shard files, got int")):
        merge_shards(3, tmp_path / "m.h5")
    assert list(tmp_path.iterdir()) == []


def test_merge_generate_and_convert_refuse_an_overwrite_that_is_no_bool(tmp_path):
    """``overwrite="no"`` would read as true and replace the file: refused, the file kept."""
    from physml.data import convert, generate_dataset

    source = generate_dataset("toy", tmp_path / "a.h5", n=2, progress=False)
    out = tmp_path / "out.h5"
    out.write_bytes(b"kept")
    calls = [
        lambda: generate_dataset("toy", out, n=2, progress=False, overwrite="no"),
        lambda: merge_shards([source], out, overwrite="no"),
        lambda: convert(source, out, to="physml", overwrite="no"),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="^overwrite must be True or False, got 'no'$"):
            call()
        assert out.read_bytes() == b"kept"
