"""The ``seed_scheme`` of generated datasets: how their samples drew from their seeds. Files and
work folders without it were drawn by an earlier physml (from the low 32 bits of each seed):
they stay readable, but are not resumed, kept by a rerun, nor joined with new shards."""

import json
import re

import h5py
import numpy as np
import pytest
import torch
from recipes import TOY  # noqa: F401 (registers the toy recipe)

from physml.data import (
    IndexNotWritten,
    ShardError,
    check_shards,
    generate_dataset,
    load,
    merge_shards,
)
from physml.data.generate import SEED_SCHEME
from physml.data.interchange import write_physml

EARLIER = "samples drawn from the low 32 bits of their seeds by an earlier physml"


def make(out, **kwargs):
    kwargs = {"n": 6, "seed": 3, "chunk": 2, "progress": False, **kwargs}
    return generate_dataset("toy", out, **kwargs)


def as_earlier(path):
    """The file as an earlier physml wrote it: no ``seed_scheme``."""
    with h5py.File(path, "r+") as f:
        del f.attrs["seed_scheme"]


def stop_after_one_chunk(done, total):
    raise KeyboardInterrupt


def test_a_generated_file_and_its_work_folder_record_the_seed_scheme(tmp_path):
    out = tmp_path / "toy.h5"
    with pytest.raises(KeyboardInterrupt):
        make(out, on_chunk=stop_after_one_chunk)
    manifest = json.loads((tmp_path / "toy.h5.partial" / "manifest.json").read_text())
    assert manifest["seed_scheme"] == SEED_SCHEME == "seedsequence-mt19937"
    make(out)
    with h5py.File(out) as f:
        assert f.attrs["seed_scheme"] == SEED_SCHEME
    assert load(out).attrs["seed_scheme"] == SEED_SCHEME


def test_a_work_folder_of_an_earlier_physml_is_not_resumed_and_says_why(tmp_path):
    out = tmp_path / "toy.h5"
    partial = tmp_path / "toy.h5.partial"
    with pytest.raises(KeyboardInterrupt):
        make(out, on_chunk=stop_after_one_chunk)
    manifest = json.loads((partial / "manifest.json").read_text())
    del manifest["seed_scheme"]  # as an earlier physml wrote it
    (partial / "manifest.json").write_text(json.dumps(manifest))
    chunks = sorted(p.name for p in partial.glob("chunk-*"))
    solved = []
    with pytest.raises(FileExistsError) as refusal:
        make(out, overwrite_hint="--overwrite", on_chunk=lambda *a: solved.append(a))
    assert str(refusal.value) == (
        f"cannot resume {partial}/: its samples were drawn from the low 32 bits of their seeds by "
        "an earlier physml (its manifest.json has no seed_scheme), so this version cannot "
        "continue it: its samples would be drawn another way; remove the folder or pass "
        "--overwrite"
    )
    assert solved == [] and not out.exists()
    assert sorted(p.name for p in partial.glob("chunk-*")) == chunks
    make(out, overwrite=True)  # every sample solved anew, none of the earlier chunks kept
    assert not partial.exists()
    assert torch.equal(load(out).u, load(make(tmp_path / "fresh.h5")).u)


def test_a_finished_file_of_an_earlier_physml_is_not_taken_for_the_dataset_asked(tmp_path):
    out = make(tmp_path / "toy.h5")
    as_earlier(out)
    with h5py.File(out) as f:
        before = dict(f.attrs)
    with pytest.raises(FileExistsError) as refusal:
        make(out)
    assert str(refusal.value) == (
        f"out: {str(out)!r} already exists and holds another dataset (seed_scheme was not "
        f"recorded ({EARLIER}), now {SEED_SCHEME!r}); pass overwrite=True to replace it"
    )
    with h5py.File(out) as f:
        assert dict(f.attrs).keys() == before.keys()
    assert load(out).u.shape == (6, 4, 9)  # still readable
    make(out, overwrite=True)
    assert load(out).attrs["seed_scheme"] == SEED_SCHEME


def shards_of(index, count=3):
    return [index.with_name(f"{index.stem}.shard-00{i}-of-00{count}.h5") for i in range(count)]


def test_a_shard_of_an_earlier_physml_joins_no_new_one_by_index_merge_or_check(tmp_path):
    index = tmp_path / "ds.h5"
    shards = shards_of(index)
    make(index, shard=0, num_shards=3)
    as_earlier(shards[0])
    make(index, shard=1, num_shards=3)
    why = rf"seed_scheme '{SEED_SCHEME}' vs \(absent\)\. " + re.escape(
        f"{str(shards[0])!r} has no seed_scheme ({EARLIER}; the other's drew from their whole "
        "seeds), so they are not one dataset: generate it again with this version"
    )
    with pytest.raises(IndexNotWritten, match=f"not written: shards disagree: .*{why}"):
        make(index, shard=2, num_shards=3)
    assert not index.exists()
    with pytest.raises(
        ShardError, match=f"^shards disagree, '{shards[1]}' vs '{shards[0]}': {why}$"
    ):
        check_shards(shards)
    with pytest.raises(ShardError, match=why):
        merge_shards(shards, tmp_path / "merged.h5")
    assert not (tmp_path / "merged.h5").exists()
    make(index, shard=0, num_shards=3, overwrite=True)  # generated again: the index is written
    assert load(index).attrs["seed_scheme"] == SEED_SCHEME


def test_the_shards_of_an_earlier_physml_still_join_and_read(tmp_path):
    index = tmp_path / "ds.h5"
    whole = make(tmp_path / "whole.h5")
    for shard in range(3):
        make(index, shard=shard, num_shards=3)
    for path in [*shards_of(index), whole]:
        as_earlier(path)
    merged = merge_shards(shards_of(index), tmp_path / "merged.h5")
    for path in (index, merged, whole):
        data = load(path)
        assert "seed_scheme" not in data.attrs
        assert torch.equal(data.u, load(whole).u)


def test_a_physml_copy_keeps_the_seed_scheme_it_was_given_and_adds_none(tmp_path):
    new = load(make(tmp_path / "new.h5"))
    write_physml(new, tmp_path / "copy.h5")
    assert load(tmp_path / "copy.h5").attrs["seed_scheme"] == SEED_SCHEME
    foreign = tmp_path / "pdebench.hdf5"  # a PDEBench file: no seeds, no scheme
    with h5py.File(foreign, "w") as f:
        f["tensor"] = np.zeros((2, 3, 5))
        f["x-coordinate"] = np.linspace(0, 1, 5)
        f["t-coordinate"] = np.linspace(0, 1, 3)
    write_physml(load(foreign), tmp_path / "converted.h5")
    assert "seed_scheme" not in load(tmp_path / "converted.h5").attrs
