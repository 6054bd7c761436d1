"""Seed schemes: how samples draw from their seeds. ``"seedsequence-mt19937"`` (the default)
uses every bit of a seed; ``"torch-manual-seed"`` (``manual_seed``: the low 32 bits) is how
physml drew before, and files and work folders that record no ``seed_scheme`` were drawn by it:
they are resumed, kept by a rerun and finished as shards under it."""

import json
import re

import h5py
import numpy as np
import pytest
import torch
from recipes import TOY  # noqa: F401 (registers the toy recipe)

from pdes import problems
from pdes.problems import (
    SEED_SCHEMES,
    active_seed_scheme,
    checked_seed_scheme,
    generator,
    seed_scheme,
)
from physml.data import (
    DatasetFileError,
    IndexNotWritten,
    ShardError,
    SingleStepDataset,
    check_shards,
    generate_dataset,
    load,
    merge_shards,
)
from physml.data.generate import SEED_SCHEME, sample_seed
from physml.data.interchange import write_physml
from physml.errors import CheckpointError
from physml.training import fingerprint
from physml.training.checkpoint import check_same_data, check_same_validation
from physml.training.fingerprint import differences

NEW, OLD = "seedsequence-mt19937", "torch-manual-seed"
SEEDS = [0, 5, 2**32 + 5, 2**63 + 12345, 2**64 - 1]


@pytest.fixture(autouse=True)
def no_scheme_in_the_environment(monkeypatch):
    monkeypatch.delenv("PHYSML_SEED_SCHEME", raising=False)


def make(out, **kwargs):
    kwargs = {"n": 6, "seed": 3, "chunk": 2, "progress": False, **kwargs}
    return generate_dataset("toy", out, **kwargs)


def as_earlier(path):
    """The file as physml wrote it before it recorded a scheme: no ``seed_scheme``."""
    with h5py.File(path, "r+") as f:
        del f.attrs["seed_scheme"]


def stop_after_one_chunk(done, total):
    raise KeyboardInterrupt


def toy_amplitudes(seed, n, draw):
    """The toy recipe's amplitudes of a dataset ``(seed, n)``, redrawn by hand: one normal draw
    from ``draw(sample_seed(seed, i))``."""
    drawn = [torch.randn((), generator=draw(sample_seed(seed, i))) for i in range(n)]
    return torch.stack(drawn).double()


def manual(seed):
    return torch.Generator().manual_seed(seed)


def whole(seed):
    """A torch generator whose mt19937 state is written by hand from the 624 words of numpy's
    ``SeedSequence(seed)`` into a fresh ``manual_seed`` state (which leaves ``left`` = 1)."""
    state = manual(0).get_state().numpy().copy()
    state[:8] = np.array([seed], dtype=np.uint64).view(np.uint8)
    words = np.random.SeedSequence(seed).generate_state(624, dtype=np.uint32)
    state[24 : 24 + 8 * 624] = words.astype(np.uint64).view(np.uint8)
    drawn = torch.Generator()
    drawn.set_state(torch.from_numpy(state))
    return drawn


# pdes.problems: the schemes, the block, the environment variable


def test_the_schemes_are_named_with_the_default_first():
    assert SEED_SCHEMES == (NEW, OLD) and problems.SEED_SCHEME == SEED_SCHEME == NEW
    assert active_seed_scheme() == NEW


@pytest.mark.parametrize("seed", SEEDS)
def test_a_seed_scheme_block_switches_the_generator_and_restores_it(seed):
    def draws():
        g = generator(seed)
        return torch.rand(700, generator=g, dtype=torch.float64), g.initial_seed()

    new, new_seed = draws()
    with seed_scheme(OLD) as name:
        assert name == OLD and active_seed_scheme() == OLD
        old, old_seed = draws()
        with seed_scheme(NEW):  # nested: the inner block rules, then the outer one again
            assert active_seed_scheme() == NEW
            assert torch.equal(draws()[0], new)
        assert active_seed_scheme() == OLD
        assert torch.equal(draws()[0], old)
    assert active_seed_scheme() == NEW and torch.equal(draws()[0], new)
    expected_old = torch.rand(700, generator=manual(seed), dtype=torch.float64)
    assert old.numpy().tobytes() == expected_old.numpy().tobytes()
    expected_new = torch.rand(700, generator=whole(seed), dtype=torch.float64)
    assert new.numpy().tobytes() == expected_new.numpy().tobytes()
    assert old_seed == new_seed == seed
    with seed_scheme(OLD):
        assert torch.equal(generator(seed).get_state(), manual(seed).get_state())
    words = generator(seed).get_state().numpy()[24 : 24 + 8 * 624].view(np.uint64)
    assert np.array_equal(words, np.random.SeedSequence(seed).generate_state(624, np.uint32))


def test_the_old_scheme_draws_alike_from_seeds_agreeing_in_their_low_32_bits():
    with seed_scheme(OLD):
        a = torch.randn(5, generator=generator(7), dtype=torch.float64)
        b = torch.randn(5, generator=generator(2**40 + 7), dtype=torch.float64)
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.randn(5, generator=generator(2**40 + 7), dtype=torch.float64))


def test_a_block_is_left_restored_on_an_error():
    with pytest.raises(RuntimeError, match="inside"):
        with seed_scheme(OLD):
            raise RuntimeError("inside")
    assert active_seed_scheme() == NEW


def test_the_environment_variable_names_the_scheme_outside_a_block(monkeypatch):
    monkeypatch.setenv("PHYSML_SEED_SCHEME", OLD)
    assert active_seed_scheme() == OLD
    expected = torch.rand(4, generator=manual(2**33 + 1), dtype=torch.float64)
    assert torch.equal(torch.rand(4, generator=generator(2**33 + 1), dtype=torch.float64), expected)
    with seed_scheme(NEW):  # a block rules over the variable
        assert active_seed_scheme() == NEW
    monkeypatch.setenv("PHYSML_SEED_SCHEME", NEW)
    assert active_seed_scheme() == NEW


@pytest.mark.parametrize("value", ["", "manual", "Torch-Manual-Seed", " torch-manual-seed"])
def test_an_environment_variable_naming_no_scheme_is_refused_naming_it(monkeypatch, value):
    monkeypatch.setenv("PHYSML_SEED_SCHEME", value)
    message = (
        "PHYSML_SEED_SCHEME must name a seed scheme, one of 'seedsequence-mt19937', "
        f"'torch-manual-seed'; got {value!r}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        active_seed_scheme()
    with pytest.raises(ValueError, match="^PHYSML_SEED_SCHEME must"):
        generator(3)
    with seed_scheme(OLD):  # a block does not read it
        generator(3)


@pytest.mark.parametrize("value", ["old", "SEEDSEQUENCE-MT19937", ""])
def test_a_block_of_an_unknown_scheme_is_refused_naming_the_argument(value):
    message = (
        "name must name a seed scheme, one of 'seedsequence-mt19937', 'torch-manual-seed'; "
        f"got {value!r}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        seed_scheme(value)
    assert active_seed_scheme() == NEW


@pytest.mark.parametrize("value", [None, 1, b"torch-manual-seed", ("torch-manual-seed",)])
def test_a_scheme_that_is_no_str_is_a_type_error_naming_the_argument(value):
    with pytest.raises(TypeError, match=r"^name must be a str naming a seed scheme .*got "):
        seed_scheme(value)
    with pytest.raises(TypeError, match=r"^seed_scheme must be a str .*got "):
        checked_seed_scheme("seed_scheme", value)


# generated files and work folders


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
    torch.testing.assert_close(load(out).params["a"], toy_amplitudes(3, 6, whole), rtol=0, atol=0)


@pytest.mark.parametrize("how", ["argument", "block", "environment"])
def test_a_dataset_drawn_under_the_old_scheme_records_it_explicitly(tmp_path, monkeypatch, how):
    out = tmp_path / "toy.h5"
    if how == "argument":
        make(out, seed_scheme=OLD)
    elif how == "block":
        with seed_scheme(OLD):
            make(out)
    else:
        monkeypatch.setenv("PHYSML_SEED_SCHEME", OLD)
        make(out)
    with h5py.File(out) as f:
        assert f.attrs["seed_scheme"] == OLD
        a = f["params/a"][()]
    assert a.tobytes() == toy_amplitudes(3, 6, manual).double().numpy().tobytes()


@pytest.mark.parametrize(
    ("value", "error"), [("manual", ValueError), ("", ValueError), (1, TypeError)]
)
def test_generate_dataset_refuses_a_bad_scheme_by_name_before_writing(tmp_path, value, error):
    with pytest.raises(error, match="^seed_scheme must "):
        make(tmp_path / "toy.h5", seed_scheme=value)
    assert list(tmp_path.iterdir()) == []


def old_work_folder(out, **kwargs):
    """A work folder of physml before it recorded a scheme: one chunk of the old scheme's
    samples, a manifest without ``seed_scheme`` (``kwargs``: :func:`make`'s)."""
    with pytest.raises(KeyboardInterrupt):
        make(out, seed_scheme=OLD, on_chunk=stop_after_one_chunk, **kwargs)
    num_shards = kwargs.get("num_shards", 1)
    if num_shards > 1:
        out = out.with_name(f"{out.stem}.shard-00{kwargs['shard']}-of-00{num_shards}.h5")
    partial = out.with_name(out.name + ".partial")
    manifest = json.loads((partial / "manifest.json").read_text())
    del manifest["seed_scheme"]
    (partial / "manifest.json").write_text(json.dumps(manifest))
    return partial


def test_a_work_folder_without_a_scheme_is_resumed_under_the_old_one_bitwise(tmp_path):
    out = tmp_path / "toy.h5"
    partial = old_work_folder(out)
    chunks = sorted(p.name for p in partial.glob("chunk-*"))
    assert len(chunks) == 1
    solved = []
    make(out, on_chunk=lambda done, total: solved.append(done))
    assert solved == [4, 6] and not partial.exists()  # the old chunk kept, two solved
    uninterrupted = make(tmp_path / "whole.h5", seed_scheme=OLD)
    with h5py.File(out) as f, h5py.File(uninterrupted) as g:
        assert f.attrs["seed_scheme"] == OLD
        for name in ("u", "params/a", "fields/u_squared", "sample_seed"):
            assert f[name][()].tobytes() == g[name][()].tobytes(), name
        assert f["params/a"][()].tobytes() == toy_amplitudes(3, 6, manual).numpy().tobytes()


def test_a_scheme_named_against_a_resumed_folder_is_refused_naming_it(tmp_path):
    out = tmp_path / "toy.h5"
    partial = old_work_folder(out)
    with pytest.raises(FileExistsError) as refusal:
        make(out, seed_scheme=NEW, overwrite_hint="--overwrite")
    assert str(refusal.value) == (
        f"cannot resume {partial}/: seed_scheme was not recorded, so 'torch-manual-seed', now "
        "'seedsequence-mt19937' (an unfinished run with different settings; remove the folder "
        "or pass --overwrite)"
    )
    assert not out.exists()
    make(out, seed_scheme=OLD)  # the folder's own scheme named: resumed
    assert load(out).attrs["seed_scheme"] == OLD and not partial.exists()


def test_overwrite_replaces_a_folder_of_another_dataset_under_the_active_scheme(tmp_path):
    out = tmp_path / "toy.h5"
    partial = old_work_folder(out)
    make(out, seed=4, overwrite=True)  # another seed: the old folder is not resumed
    assert load(out).attrs["seed_scheme"] == NEW and not partial.exists()


def test_a_finished_file_without_a_scheme_is_kept_by_a_rerun(tmp_path):
    out = make(tmp_path / "toy.h5", seed_scheme=OLD)
    as_earlier(out)
    with h5py.File(out) as f:
        before = {key: f.attrs[key] for key in f.attrs}
    assert make(out) == out  # a requeued job of the old dataset: its file is returned
    with h5py.File(out) as f:
        assert {key: f.attrs[key] for key in f.attrs}.keys() == before.keys()
    assert make(out, seed_scheme=OLD) == out
    with pytest.raises(FileExistsError) as refusal:
        make(out, seed_scheme=NEW)
    assert str(refusal.value) == (
        f"out: {str(out)!r} already exists and holds another dataset (seed_scheme was not "
        "recorded, so 'torch-manual-seed', now 'seedsequence-mt19937'); pass overwrite=True to "
        "replace it"
    )
    make(out, overwrite=True)  # replaced: a new dataset, under the active scheme
    assert load(out).attrs["seed_scheme"] == NEW


def test_a_finished_file_of_the_new_scheme_refuses_the_old_one(tmp_path):
    out = make(tmp_path / "toy.h5")
    assert make(out) == out
    with pytest.raises(FileExistsError, match="seed_scheme was 'seedsequence-mt19937', now "):
        make(out, seed_scheme=OLD)


def shards_of(index, count=3):
    return [index.with_name(f"{index.stem}.shard-00{i}-of-00{count}.h5") for i in range(count)]


def test_an_old_sharded_dataset_is_finished_under_its_scheme(tmp_path):
    index = tmp_path / "ds.h5"
    shards = shards_of(index, 2)
    make(index, shard=0, num_shards=2, seed_scheme=OLD)
    as_earlier(shards[0])
    make(tmp_path / "other.h5", shard=1, num_shards=2, seed=9)  # another dataset beside it
    make(index, shard=1, num_shards=2)  # None: takes shard 0's scheme
    with h5py.File(shards[1]) as f:
        assert f.attrs["seed_scheme"] == OLD
    assert index.exists()
    uninterrupted = load(make(tmp_path / "whole.h5", seed_scheme=OLD))
    merged = merge_shards(shards, tmp_path / "merged.h5")
    for path in (index, merged):
        data = load(path)
        assert data.attrs["seed_scheme"] == OLD
        assert torch.equal(data.u, uninterrupted.u)
        assert torch.equal(data.params["a"], toy_amplitudes(3, 6, manual).double())


def test_an_old_sharded_dataset_stopped_in_its_first_shards_is_finished_under_its_scheme(
    tmp_path,
):
    index = tmp_path / "ds.h5"
    shards = shards_of(index, 4)
    for shard in (0, 1):  # stopped after one chunk by physml before it recorded a scheme
        old_work_folder(index, n=8, chunk=1, shard=shard, num_shards=4)
    for shard in (2, 3):  # no scheme named: the unfinished shards beside say theirs
        make(index, n=8, chunk=1, shard=shard, num_shards=4)
    for shard in (0, 1):
        make(index, n=8, chunk=1, shard=shard, num_shards=4)
    for path in shards:
        with h5py.File(path) as f:
            assert f.attrs["seed_scheme"] == OLD, path
    data = load(index)
    assert data.attrs["seed_scheme"] == OLD
    assert data.params["a"].numpy().tobytes() == toy_amplitudes(3, 8, manual).numpy().tobytes()


def test_unfinished_shards_of_another_dataset_leave_a_shard_the_active_scheme(tmp_path):
    index = tmp_path / "ds.h5"
    old_work_folder(index, n=8, chunk=1, seed=4, shard=0, num_shards=4)  # seed 4: another
    old_work_folder(tmp_path / "other.h5", n=8, chunk=1, shard=1, num_shards=4)  # other stem
    make(index, n=8, chunk=1, shard=2, num_shards=4)
    with h5py.File(shards_of(index, 4)[2]) as f:
        assert f.attrs["seed_scheme"] == NEW


def test_unfinished_shards_of_two_schemes_leave_a_shard_the_active_scheme(tmp_path):
    index = tmp_path / "ds.h5"
    old_work_folder(index, n=8, chunk=1, shard=0, num_shards=4)
    with pytest.raises(KeyboardInterrupt):
        make(
            index,
            n=8,
            chunk=1,
            shard=1,
            num_shards=4,
            seed_scheme=NEW,
            on_chunk=stop_after_one_chunk,
        )
    make(index, n=8, chunk=1, shard=2, num_shards=4)
    with h5py.File(shards_of(index, 4)[2]) as f:
        assert f.attrs["seed_scheme"] == NEW


def test_a_shard_whose_others_are_of_another_dataset_takes_the_active_scheme(tmp_path):
    index = tmp_path / "ds.h5"
    make(index, shard=0, num_shards=2, seed=4, seed_scheme=OLD)  # seed 4: not this dataset
    with pytest.raises(IndexNotWritten):
        make(index, shard=1, num_shards=2)
    with h5py.File(shards_of(index, 2)[1]) as f:
        assert f.attrs["seed_scheme"] == NEW


def test_shards_of_two_schemes_join_by_no_index_merge_or_check(tmp_path):
    index = tmp_path / "ds.h5"
    shards = shards_of(index)
    make(index, shard=0, num_shards=3, seed_scheme=OLD)
    as_earlier(shards[0])
    make(index, shard=1, num_shards=3, seed_scheme=NEW)
    why = rf"seed_scheme \(absent\) vs '{NEW}'\. " + re.escape(
        "Their samples drew from their seeds under other seed schemes "
        f"({str(shards[0])!r} records none: 'torch-manual-seed'), so they are not one dataset: "
        "generate those that differ again under the others' scheme "
        f"(seed_scheme={NEW!r}; physml generate --seed-scheme {NEW})"
    )
    with pytest.raises(IndexNotWritten, match=f"not written: shards disagree: .*{why}"):
        make(index, shard=2, num_shards=3, seed_scheme=NEW)
    assert not index.exists()
    with pytest.raises(
        ShardError, match=f"^shards disagree, '{shards[0]}' vs '{shards[1]}': {why}$"
    ):
        check_shards(shards)
    with pytest.raises(ShardError, match=why):
        merge_shards(shards, tmp_path / "merged.h5")
    assert not (tmp_path / "merged.h5").exists()
    make(index, shard=0, num_shards=3, overwrite=True, seed_scheme=NEW)
    assert load(index).attrs["seed_scheme"] == SEED_SCHEME


def test_an_old_shard_and_one_that_records_the_old_scheme_join(tmp_path):
    index = tmp_path / "ds.h5"
    shards = shards_of(index)
    for shard in range(3):
        make(index, shard=shard, num_shards=3, seed_scheme=OLD)
    as_earlier(shards[1])
    assert [s.path for s in check_shards(shards)] == shards
    merged = load(merge_shards(shards, tmp_path / "merged.h5"))
    assert merged.attrs["seed_scheme"] == OLD


def test_the_shards_of_an_earlier_physml_still_join_and_read(tmp_path):
    index = tmp_path / "ds.h5"
    whole_file = make(tmp_path / "whole.h5")
    for shard in range(3):
        make(index, shard=shard, num_shards=3)
    for path in [*shards_of(index), whole_file]:
        as_earlier(path)
    merged = merge_shards(shards_of(index), tmp_path / "merged.h5")
    for path in (index, merged, whole_file):
        data = load(path)
        assert "seed_scheme" not in data.attrs
        assert torch.equal(data.u, load(whole_file).u)


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


# repairs: the advice names the scheme that overwrite would not take

OLD_SCHEME_ADVICE = [
    ("overwrite=True", "overwrite=True, seed_scheme='torch-manual-seed'"),
    ("--overwrite", "--overwrite --seed-scheme torch-manual-seed"),
]
"""Each wording of ``overwrite`` with the old scheme named beside it, as advice spells it."""


@pytest.mark.parametrize(("hint", "advice"), OLD_SCHEME_ADVICE)
def test_a_damaged_old_file_is_to_be_generated_again_in_its_scheme(tmp_path, hint, advice):
    from damage import flip_a_bit_of_the_first_chunk

    out = make(tmp_path / "toy.h5", seed_scheme=OLD)
    as_earlier(out)
    flip_a_bit_of_the_first_chunk(out, "u")
    with pytest.raises(DatasetFileError) as refusal:
        make(out, overwrite_hint=hint)
    assert str(refusal.value).endswith(f"; generate it again (pass {advice})")


def test_a_damaged_file_of_the_default_scheme_is_to_be_generated_again_as_before(tmp_path):
    from damage import flip_a_bit_of_the_first_chunk

    out = make(tmp_path / "toy.h5")
    flip_a_bit_of_the_first_chunk(out, "u")
    with pytest.raises(DatasetFileError, match=r"; generate it again \(pass overwrite=True\)$"):
        make(out)


def old_dataset_with_a_stray_shard(index):
    """Shards 0 and 2 of 3 of an old dataset, and shard 1 made with seed 4 (another dataset,
    so the default scheme): every shard is in, and they disagree."""
    for shard in (0, 2):
        make(index, shard=shard, num_shards=3, seed_scheme=OLD)
        as_earlier(shards_of(index)[shard])
    with pytest.raises(IndexNotWritten) as refusal:
        make(index, shard=1, num_shards=3, seed=4)
    return str(refusal.value)


def test_shards_of_an_old_dataset_that_disagree_are_to_be_generated_again_in_its_scheme(
    tmp_path,
):
    index = tmp_path / "ds.h5"
    message = old_dataset_with_a_stray_shard(index)
    advice = "(pass overwrite=True, seed_scheme='torch-manual-seed')"
    assert message.endswith(
        f"generate those that differ again with the same settings {advice}, and the last to "
        "finish writes the index"
    )
    make(index, shard=1, num_shards=3, overwrite=True, seed_scheme=OLD)  # as advised
    data = load(index)
    assert data.params["a"].numpy().tobytes() == toy_amplitudes(3, 6, manual).numpy().tobytes()


def test_physml_generate_advises_the_flags_of_the_old_scheme(tmp_path, capsys, monkeypatch):
    from physml.cli import main

    monkeypatch.chdir(tmp_path)
    index = tmp_path / "ds.h5"
    for shard in (0, 2):
        make(index, shard=shard, num_shards=3, seed_scheme=OLD)
        as_earlier(shards_of(index)[shard])
    args = ["generate", "toy", "--n", "6", "--seed", "3", "--out", "ds.h5", "--quiet"]
    args += ["--chunk", "2", "--num-shards", "3", "--shard", "1"]
    assert main([*args, "--seed", "4"]) == 2
    assert capsys.readouterr().err.endswith(
        "(pass --overwrite --seed-scheme torch-manual-seed), and the last to finish writes the "
        "index\n"
    )
    assert main([*args, "--overwrite", "--seed-scheme", OLD]) == 0
    assert load(index).attrs["seed_scheme"] == OLD


def old_shards_beside(index):
    """Shards 0 and 2 of 3 of an old dataset (seed 3, n 6, no scheme recorded)."""
    for shard in (0, 2):
        make(index, shard=shard, num_shards=3, seed_scheme=OLD)
        as_earlier(shards_of(index)[shard])


def replace_shard_one_as_advised(index):
    """Follow the advice (overwrite, the old scheme named): the index is written, in that scheme."""
    make(index, shard=1, num_shards=3, overwrite=True, seed_scheme=OLD)
    assert load(index).attrs["seed_scheme"] == OLD


@pytest.mark.parametrize(("hint", "advice"), OLD_SCHEME_ADVICE)
def test_a_lost_shard_of_an_indexed_dataset_is_drawn_again_in_its_shards_scheme(
    tmp_path, hint, advice
):
    index = tmp_path / "ds.h5"
    for shard in range(3):
        make(index, shard=shard, num_shards=3, seed_scheme=OLD)
    shards_of(index)[1].unlink()
    with pytest.raises(FileExistsError) as refusal:
        make(index, shard=1, num_shards=3, overwrite_hint=hint)
    assert str(refusal.value) == f"out: index {str(index)!r} already exists (pass {advice})"
    replace_shard_one_as_advised(index)


@pytest.mark.parametrize(("hint", "advice"), OLD_SCHEME_ADVICE)
def test_a_shard_file_of_another_dataset_is_replaced_in_its_shards_scheme(tmp_path, hint, advice):
    index = tmp_path / "ds.h5"
    old_shards_beside(index)
    stray = shards_of(index)[1]
    with pytest.raises(IndexNotWritten):
        make(index, shard=1, num_shards=3, seed=4)  # another dataset, so the default scheme
    with pytest.raises(FileExistsError) as refusal:
        make(index, shard=1, num_shards=3, overwrite_hint=hint)
    assert str(refusal.value) == (
        f"out: {str(stray)!r} already exists and holds another dataset (seed was 4, now 3); "
        f"pass {advice} to replace it"
    )
    replace_shard_one_as_advised(index)


@pytest.mark.parametrize(("hint", "advice"), OLD_SCHEME_ADVICE)
def test_a_shard_run_of_other_settings_is_replaced_in_its_shards_scheme(tmp_path, hint, advice):
    index = tmp_path / "ds.h5"
    old_shards_beside(index)
    with pytest.raises(KeyboardInterrupt):  # chunk 1: other settings, under the shards' scheme
        make(index, shard=1, num_shards=3, chunk=1, on_chunk=stop_after_one_chunk)
    partial = shards_of(index)[1].with_name(shards_of(index)[1].name + ".partial")
    with pytest.raises(FileExistsError) as refusal:
        make(index, shard=1, num_shards=3, overwrite_hint=hint)
    assert str(refusal.value) == (
        f"cannot resume {partial}/: chunk was 1, now 2 (an unfinished run with different "
        f"settings; remove the folder or pass {advice})"
    )
    replace_shard_one_as_advised(index)
    assert not partial.exists()


def test_physml_generate_advises_the_flags_to_replace_a_shard_in_its_shards_scheme(
    tmp_path, capsys, monkeypatch
):
    from physml.cli import main

    monkeypatch.chdir(tmp_path)
    old_shards_beside(tmp_path / "ds.h5")
    args = ["generate", "toy", "--n", "6", "--seed", "3", "--out", "ds.h5", "--quiet"]
    args += ["--chunk", "2", "--num-shards", "3", "--shard", "1"]
    assert main([*args, "--seed", "4"]) == 2  # another dataset: no index
    capsys.readouterr()
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "physml generate: error: out: 'ds.shard-001-of-003.h5' already exists and holds another "
        "dataset (seed was 4, now 3); pass --overwrite --seed-scheme torch-manual-seed to "
        "replace it\n"
    )
    assert main([*args, "--overwrite", "--seed-scheme", OLD]) == 0
    assert load(tmp_path / "ds.h5").attrs["seed_scheme"] == OLD


def test_a_shard_whose_plain_overwrite_keeps_its_shards_scheme_is_advised_the_plain_flag(
    tmp_path, monkeypatch
):
    index = tmp_path / "ds.h5"
    old_shards_beside(index)
    monkeypatch.setenv("PHYSML_SEED_SCHEME", OLD)  # overwrite draws under the old scheme too
    with pytest.raises(IndexNotWritten):
        make(index, shard=1, num_shards=3, seed=4)
    with pytest.raises(FileExistsError) as refusal:
        make(index, shard=1, num_shards=3)
    assert str(refusal.value) == (
        f"out: {str(shards_of(index)[1])!r} already exists and holds another dataset (seed was "
        "4, now 3); pass overwrite=True to replace it"
    )


def test_a_single_file_of_another_old_dataset_is_replaced_by_the_plain_flag(tmp_path):
    out = make(tmp_path / "toy.h5", seed_scheme=OLD)
    as_earlier(out)
    with pytest.raises(FileExistsError) as refusal:
        make(out, seed=4)  # a new dataset: the default scheme is the one asked for
    assert str(refusal.value) == (
        f"out: {str(out)!r} already exists and holds another dataset (seed was 3, now 4); pass "
        "overwrite=True to replace it"
    )
    partial = old_work_folder(tmp_path / "run.h5", chunk=1)
    with pytest.raises(FileExistsError) as refusal:
        make(tmp_path / "run.h5")
    assert str(refusal.value) == (
        f"cannot resume {partial}/: chunk was 1, now 2 (an unfinished run with different "
        "settings; remove the folder or pass overwrite=True)"
    )
    make(tmp_path / "run.h5", overwrite=True)
    assert load(tmp_path / "run.h5").attrs["seed_scheme"] == NEW and not partial.exists()


def test_shards_of_the_default_scheme_that_disagree_are_advised_as_before(tmp_path):
    index = tmp_path / "ds.h5"
    make(index, shard=0, num_shards=2)
    with pytest.raises(IndexNotWritten, match=r"\(pass overwrite=True\), and the last"):
        make(index, shard=1, num_shards=2, seed=4)


# training data: fingerprints


def printed(path):
    return fingerprint(SingleStepDataset(str(path)))


def test_old_data_and_the_same_data_recording_the_old_scheme_have_no_difference(tmp_path):
    earlier = make(tmp_path / "earlier.h5", seed_scheme=OLD)
    as_earlier(earlier)  # as physml wrote it before it recorded a scheme
    again = make(tmp_path / "again.h5", seed_scheme=OLD)  # the same data, regenerated
    with h5py.File(again) as f:
        assert f.attrs["seed_scheme"] == OLD
    old, recorded = printed(earlier), printed(again)
    assert "seed_scheme" not in old["attributes"]
    assert differences(old, recorded) == [] and differences(recorded, old) == []
    check_same_data({"fingerprint": old}, recorded, tmp_path)  # resumes


def test_old_data_and_data_of_the_default_scheme_differ_in_the_scheme(tmp_path):
    earlier = make(tmp_path / "earlier.h5", seed_scheme=OLD)
    as_earlier(earlier)
    old, new = printed(earlier), printed(make(tmp_path / "new.h5"))
    found = differences(old, new)
    assert f"attribute 'seed_scheme' None → {NEW!r}" in found
    assert f"attribute 'seed_scheme' {NEW!r} → None" in differences(new, old)


HINT = (
    " The data it was made on drew under the seed scheme 'torch-manual-seed': "
    "PHYSML_SEED_SCHEME=torch-manual-seed draws data as physml did before."
)


@pytest.mark.parametrize("earlier", ["absent", "recorded"])
def test_a_resume_refused_on_data_of_the_default_scheme_tells_how_to_draw_the_old(
    tmp_path, earlier
):
    before = make(tmp_path / "before.h5", seed_scheme=OLD)
    if earlier == "absent":
        as_earlier(before)
    old, new = printed(before), printed(make(tmp_path / "new.h5"))
    with pytest.raises(CheckpointError) as refusal:
        check_same_data({"fingerprint": old}, new, tmp_path)
    message = str(refusal.value)
    assert message.startswith(f"checkpoint: {str(tmp_path)!r} was trained on other data (")
    assert message.endswith(
        "; refusing to resume. Use another --out, or the data it was made on." + HINT
    )
    state = {"validation_fingerprint": old, "validation": [1.0]}
    with pytest.raises(CheckpointError) as refusal:
        check_same_validation(state, new, tmp_path)
    assert str(refusal.value).endswith(", or that set." + HINT)


def test_no_scheme_hint_where_the_scheme_is_not_what_differs(tmp_path):
    one, other = printed(make(tmp_path / "one.h5")), printed(make(tmp_path / "two.h5", seed=4))
    with pytest.raises(CheckpointError) as refusal:
        check_same_data({"fingerprint": one}, other, tmp_path)
    assert "PHYSML_SEED_SCHEME" not in str(refusal.value)
    before = make(tmp_path / "before.h5", seed_scheme=OLD)
    with pytest.raises(CheckpointError) as refusal:  # the other way round: no old data asked
        check_same_data(
            {"fingerprint": printed(make(tmp_path / "new.h5"))}, printed(before), tmp_path
        )
    assert "PHYSML_SEED_SCHEME" not in str(refusal.value)


# the command line


def test_physml_generate_takes_the_seed_scheme(tmp_path, capsys):
    from physml.cli import main

    out = tmp_path / "toy.h5"
    args = ["generate", "toy", "--n", "4", "--out", str(out), "--quiet", "--seed", "3"]
    assert main([*args, "--seed-scheme", OLD]) == 0
    with h5py.File(out) as f:
        assert f.attrs["seed_scheme"] == OLD
        assert f["params/a"][()].tobytes() == toy_amplitudes(3, 4, manual).numpy().tobytes()
    said = "; its samples drew in the seed scheme 'torch-manual-seed', not the default"
    assert said in capsys.readouterr().out
    as_earlier(out)
    assert main(args) == 0  # a rerun of the old dataset keeps its file
    out_text = capsys.readouterr().out
    assert "was already written" in out_text and said in out_text
    assert main([*args, "--seed-scheme", NEW]) == 2
    assert "seed_scheme was not recorded, so 'torch-manual-seed'" in capsys.readouterr().err
    assert main([*args, "--seed-scheme", NEW, "--overwrite"]) == 0
    assert load(out).attrs["seed_scheme"] == NEW
    assert "seed scheme" not in capsys.readouterr().out


def test_physml_generate_refuses_an_unknown_seed_scheme(tmp_path, capsys, monkeypatch):
    from physml.cli import main

    out = tmp_path / "toy.h5"
    args = ["generate", "toy", "--n", "4", "--out", str(out), "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--seed-scheme", "manual"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--seed-scheme: invalid choice: 'manual'" in err
    assert "'seedsequence-mt19937', 'torch-manual-seed'" in err
    monkeypatch.setenv("PHYSML_SEED_SCHEME", "manual")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "PHYSML_SEED_SCHEME must name a seed scheme" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
