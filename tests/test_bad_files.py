"""Files that must not be trusted: datasets reading other files, arrays that do not fit together,
two writers, leftovers of a killed run, and the modes written files get."""

import os
import re
import shutil
import threading
import time

import h5py
import numpy as np
import pytest
import torch
from recipes import TOY  # noqa: F401  (registers the toy recipe)

import physml._checks
from physml._io import atomic_path, exclusive_lock, remove_leftovers
from physml.data import DatasetFileError, MultiStepDataset, generate_dataset, load
from physml.data.datasets import check_self_contained


@pytest.fixture
def dataset(tmp_path):
    return generate_dataset("toy", tmp_path / "toy.h5", n=6, chunk=3, progress=False)


def rewrite(path, edit):
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def replace(name, data):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=data)

    return edit


def test_a_generated_dataset_loads(dataset):
    assert load(dataset).u.shape == (6, 4, 9)


def no_frames(f):
    replace("u", np.zeros((6, 0, 9)))(f)
    replace("t", np.zeros(0))(f)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (replace("u", np.zeros((6, 4, 9), dtype=np.complex128)), "u must hold real floating"),
        (replace("u", np.zeros((6, 4, 9), dtype="S3")), "u must hold real floating"),
        (replace("u", np.zeros(6)), r"u must have dims \(sample, time, \*space\)"),
        (replace("t", np.array([0.0, 0.5, 0.4, 1.0])), "t must be strictly increasing"),
        (replace("t", np.array([0.0, 0.5, 0.5, 1.0])), "t must be strictly increasing"),
        (replace("t", np.array([b"a", b"b", b"c", b"d"])), "t must be strictly increasing"),
        (replace("u", np.zeros((6, 4, 9), dtype=np.int64)), "u must hold real floating"),
        (lambda f: f.create_dataset("y", data=np.arange(9.0)), r"y has shape \(9,\), u has"),
        (replace("t", np.arange(5.0)), "t has shape"),
        (replace("x", np.arange(8.0)), "x has shape"),
        (replace("params/a", np.arange(5.0)), "params/a has shape"),
        (replace("sample_index", np.arange(7)), "sample_index has shape"),
        (replace("fields/u_squared", np.zeros((2, 4, 9))), "fields/u_squared has shape"),
        (replace("u", np.zeros((0, 4, 9))), r"holds no samples: u has shape \(0, 4, 9\)"),
        (no_frames, r"holds no time frames: u has shape \(6, 0, 9\)"),
        (
            replace("u", np.zeros((6, 4, 9, 1))),
            r"u has shape \(6, 4, 9, 1\), a space axis of size 1: u is \(sample, time, \*space\) "
            r"with no channel axis .* further channels as arrays under fields/",
        ),
        (replace("u", np.zeros((6, 4, 0))), r"holds no space points: u has shape \(6, 4, 0\)"),
    ],
    ids=[
        "complex-u",
        "bytes-u",
        "1d-u",
        "decreasing-t",
        "repeated-t",
        "string-t",
        "integer-u",
        "y-in-1d",
        "t-length",
        "x-length",
        "params-length",
        "sample-index-length",
        "fields-length",
        "no-samples",
        "no-frames",
        "channel-axis",
        "no-points",
    ],
)
def test_arrays_that_do_not_fit_together_are_refused(dataset, edit, message):
    rewrite(dataset, edit)
    with pytest.raises(DatasetFileError, match=message):
        load(dataset)


def test_a_series_of_one_point_loads_and_windows(tmp_path):
    """u (sample, time, 1): one point per frame, the only way to store a plain time series (u
    needs a space axis), loads and gives its windows."""
    u = np.arange(6 * 5, dtype=np.float64).reshape(6, 5, 1)
    with h5py.File(tmp_path / "series.h5", "w") as f:
        f.attrs["format"] = "physml-dataset/1"
        f["u"], f["t"] = u, np.arange(5.0)
    assert load(tmp_path / "series.h5").u.shape == (6, 5, 1)
    x, y = MultiStepDataset(tmp_path / "series.h5", steps=2)[0]
    assert x.tolist() == [[0.0]] and y.tolist() == [[2.0], [4.0]]  # every 2nd of 4 steps


def test_a_big_endian_file_loads_equal_to_the_native_one(dataset):
    """Arrays another platform or tool stored big-endian ('>f8', '>i8') read back in this
    machine's order, every value the same."""
    native = load(dataset)

    def swap_every_array(f):
        arrays = []
        f.visititems(
            lambda name, item: arrays.append(name) if isinstance(item, h5py.Dataset) else None
        )
        for name in arrays:
            value = f[name][()]
            del f[name]
            f.create_dataset(name, data=value.astype(value.dtype.newbyteorder(">")))

    rewrite(dataset, swap_every_array)
    with h5py.File(dataset) as f:
        assert f["u"].dtype.str == ">f8" and f["sample_seed"].dtype.str == ">i8"
    swapped = load(dataset)
    for name in ("u", "t", "sample_index", "sample_seed"):
        assert torch.equal(getattr(swapped, name), getattr(native, name)), name
    for group in ("coords", "params", "fields"):
        for name, value in getattr(native, group).items():
            assert torch.equal(getattr(swapped, group)[name], value), f"{group}/{name}"


def test_a_single_time_file_is_refused_for_multi_step_naming_the_file(dataset):
    def one_time(f):
        replace("u", f["u"][:, :1])(f)
        replace("t", f["t"][:1])(f)

    rewrite(dataset, one_time)
    with pytest.raises(
        DatasetFileError, match=rf"path: {re.escape(repr(str(dataset)))} holds a single time"
    ):
        MultiStepDataset(dataset)
    with pytest.raises(DatasetFileError, match=r"source: the data holds a single time"):
        MultiStepDataset(load(dataset))


def test_nan_in_u_is_refused_naming_the_samples(dataset):
    def poison(f):
        u = f["u"][()]
        u[2, 1, 3] = np.nan
        u[4, 0, 0] = np.inf
        f["u"][...] = u

    rewrite(dataset, poison)
    with pytest.raises(DatasetFileError, match=r"u contains NaN or inf values \(samples \[2, 4\]"):
        load(dataset)


def test_u_stored_as_a_group_is_refused(dataset):
    def group(f):
        del f["u"]
        f.create_group("u")

    rewrite(dataset, group)
    with pytest.raises(DatasetFileError, match="'u' must be a dataset, got a group"):
        load(dataset)


def as_dataset(name):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=np.zeros(6))

    return edit


def nested_group(f):
    f["params"].create_group("sub")


def dangling_t(f):
    del f["t"]
    f["t"] = h5py.SoftLink("/nothing")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (as_dataset("params"), "'params' must be a group of arrays, got a dataset"),
        (as_dataset("fields"), "'fields' must be a group of arrays, got a dataset"),
        (nested_group, "could not be read: params/sub must be an array, got a group"),
        (replace("params/a", np.array([b"a"] * 6)), "params/a must hold numbers"),
        (replace("x", np.array([b"a"] * 9)), "x must be strictly increasing finite numbers"),
        (dangling_t, "'t' is a link to an object the file lacks"),
    ],
    ids=["params-dataset", "fields-dataset", "nested-group", "string-param", "string-x", "link"],
)
def test_a_damaged_layout_is_refused_naming_the_object(dataset, edit, message):
    rewrite(dataset, edit)
    with pytest.raises(DatasetFileError, match=message):
        load(dataset)


@pytest.mark.parametrize(
    "shards",
    [
        None,
        "not json[",
        '{"a": 1}',
        "[1, 2]",
        "[]",
        '["../toy.h5"]',
        '["/tmp/toy.h5"]',
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["missing", "not-json", "object", "numbers", "empty", "parent", "absolute", "deep"],
)
def test_a_damaged_shard_index_is_refused_naming_the_file(tmp_path, shards):
    index = tmp_path / "index.h5"
    with h5py.File(index, "w") as f:
        f.attrs["format"] = "physml-dataset-index/1"
        if shards is not None:
            f.attrs["shards"] = shards
    message = (
        f"path: {str(index)!r} is a shard index whose 'shards' attribute: expected a JSON list "
        "of shard file names in its folder, got "
    )
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        load(index)


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_an_external_link_is_refused(tmp_path, dataset, relative):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("values", data=np.arange(9.0))
    target = secret.name if relative else str(secret)
    rewrite(dataset, lambda f: f.__setitem__("params/b", h5py.ExternalLink(target, "values")))
    with pytest.raises(DatasetFileError, match="'params/b' is an external link"):
        load(dataset)


def test_external_raw_storage_is_refused(tmp_path, dataset):
    raw = tmp_path / "raw.bin"
    np.arange(6.0).tofile(raw)

    def external(f):
        del f["params/a"]
        f["params"].create_dataset("a", shape=(6,), dtype="f8", external=[(str(raw), 0, 48)])

    rewrite(dataset, external)
    with pytest.raises(DatasetFileError, match="'params/a' stores its values in external files"):
        load(dataset)


def test_a_virtual_dataset_outside_a_merged_file_is_refused(tmp_path, dataset):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("a", data=np.arange(6.0))

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(6,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(other), "a", shape=(6,))
        del f["params/a"]
        f["params"].create_virtual_dataset("a", layout)

    rewrite(dataset, virtual)
    with pytest.raises(DatasetFileError, match="'params/a' is a virtual dataset"):
        load(dataset)


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.txt") as temporary:
            temporary.write_text("x")
        path = generate_dataset("toy", tmp_path / "toy.h5", n=2, progress=False)
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_second_writer_to_the_same_output_is_refused(tmp_path):
    lock = tmp_path / ".toy.h5.lock"
    entered, release = threading.Event(), threading.Event()

    def hold():
        with exclusive_lock(lock, "out: 'toy.h5'"):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(10)
    try:
        # flock locks belong to open files: a second open in this process conflicts like a
        # second process would
        with pytest.raises(FileExistsError, match="being written by another process"):
            generate_dataset("toy", tmp_path / "toy.h5", n=2, progress=False)
    finally:
        release.set()
        holder.join()
    assert generate_dataset("toy", tmp_path / "toy.h5", n=2, progress=False).exists()
    assert not lock.exists()


def test_a_lock_released_while_a_second_writer_waits_to_take_it_stays_one_lock(
    tmp_path, monkeypatch
):
    """The holder removes the file as it lets go: a writer that opened the file before must not
    hold a lock on the removed file while a third writer locks the new one."""
    import contextlib
    import fcntl

    lock, first = tmp_path / ".toy.h5.lock", contextlib.ExitStack()
    first.enter_context(exclusive_lock(lock, "out: 'toy.h5'"))
    real, releases = fcntl.flock, []

    def flock(handle, operation):
        if operation & fcntl.LOCK_EX and not releases:
            releases.append(first.close())  # the holder finishes between open and flock
        return real(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    with exclusive_lock(lock, "out: 'toy.h5'"):
        assert releases
        with pytest.raises(FileExistsError, match="being written by another process"):
            with exclusive_lock(lock, "out: 'toy.h5'"):
                pass
        assert lock.exists()
    assert not lock.exists()


def test_leftovers_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    out = tmp_path / "toy.h5"
    stale = tmp_path / ".toy.h5.abc123.h5.tmp"
    stale.write_bytes(b"half a file")
    workdir = tmp_path / "toy.h5.partial"
    generate_dataset("toy", out, n=4, chunk=2, progress=False)
    assert not stale.exists() and not workdir.exists()


def test_leftovers_are_found_by_the_literal_name_of_the_output(tmp_path):
    """``[1]`` in a name is no glob class: ``run[1].h5`` has its own temporaries removed, never
    those of ``run1.h5`` (a pattern is taken only when asked for)."""
    own, other = tmp_path / ".run[1].h5.abc.h5.tmp", tmp_path / ".run1.h5.xyz.h5.tmp"
    chunk = tmp_path / ".chunk-000000004.npz.k2j.npz.tmp"
    for path in (own, other, chunk):
        path.touch()
    assert remove_leftovers(tmp_path, "run[1].h5") == [own]
    assert not own.exists() and other.exists()
    assert remove_leftovers(tmp_path, "chunk-*") == []
    assert remove_leftovers(tmp_path, "chunk-*", pattern=True) == [chunk]
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]


def test_a_generated_output_with_glob_characters_removes_only_its_own_leftovers(tmp_path):
    out = tmp_path / "run[1].h5"
    own, other = tmp_path / ".run[1].h5.abc.h5.tmp", tmp_path / ".run1.h5.xyz.h5.tmp"
    own.touch()
    other.touch()
    generate_dataset("toy", out, n=4, chunk=2, progress=False)
    assert load(out).u.shape[0] == 4
    assert not own.exists() and other.exists()


def test_a_finished_runs_leftover_work_folder_is_removed_on_a_rerun(tmp_path, monkeypatch):
    out, workdir = tmp_path / "toy.h5", tmp_path / "toy.h5.partial"

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # killed between the final rename and the clean-up
        patch.setattr(shutil, "rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            generate_dataset("toy", out, n=4, chunk=2, seed=3, progress=False)
    assert workdir.is_dir()
    written = load(out).u
    assert generate_dataset("toy", out, n=4, chunk=2, seed=3, progress=False) == out  # complete
    assert not workdir.exists()
    assert torch.equal(load(out).u, written)
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            generate_dataset("toy", out, n=4, chunk=2, seed=4, progress=False, overwrite=True)
    with pytest.raises(
        FileExistsError, match=r"seed was 4, now 3\); .*; removed .*toy\.h5\.partial"
    ):
        generate_dataset("toy", out, n=4, chunk=2, seed=3, progress=False)
    assert not workdir.exists()


def test_an_unfinished_overwrite_beside_a_finished_file_is_kept(tmp_path):
    """The work folder of an interrupted --overwrite run with other settings holds samples the
    file lacks: a rerun without --overwrite keeps it."""
    out, workdir = tmp_path / "toy.h5", tmp_path / "toy.h5.partial"
    generate_dataset("toy", out, n=4, chunk=2, seed=3, progress=False)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(
            "toy", out, n=4, chunk=2, seed=4, overwrite=True, progress=False, on_chunk=stop
        )
    with pytest.raises(FileExistsError) as error:
        generate_dataset("toy", out, n=4, chunk=2, seed=4, progress=False)
    assert "removed" not in str(error.value)
    assert len(list(workdir.glob("chunk-*.npz"))) == 1


def test_a_damaged_chunk_is_named_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "toy.h5"
    calls = {"n": 0}
    original = TOY.generate

    def crash_on_second(seeds, settings, device="cpu"):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(seeds, settings, device)

    monkeypatch.setattr(TOY, "generate", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset("toy", out, n=4, chunk=2, progress=False)
    monkeypatch.setattr(TOY, "generate", original)
    chunk = next((tmp_path / "toy.h5.partial").glob("chunk-*.npz"))
    chunk.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"chunk .* is damaged .*delete it"):
        generate_dataset("toy", out, n=4, chunk=2, progress=False)


def test_an_atomic_write_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    import physml._io as io
    from physml.io import atomic_write_text

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(io.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(io.os, "replace", lambda *a: events.append("replace") or real_replace(*a))
    atomic_write_text(tmp_path / "a.txt", "x")
    assert events == ["fsync", "replace", "fsync"]  # the file, the rename, then its folder
    assert (tmp_path / "a.txt").read_text() == "x"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda arrays: arrays.update(u=arrays["u"][:1]), r"chunk-000000002.npz' is damaged \(u"),
        (lambda arrays: arrays.pop("field:u_squared"), r"chunk-000000002.npz' is damaged \(it"),
        (lambda arrays: arrays.update(sample_index=arrays["sample_index"] + 1), "once each"),
        (lambda arrays: arrays.update(u=arrays["u"].astype(np.float32)), r"u is float32"),
    ],
    ids=["short-u", "missing-field", "other-samples", "other-dtype"],
)
def test_a_chunk_that_does_not_fit_the_others_is_refused_at_assembly(tmp_path, edit, message):
    out, workdir = tmp_path / "toy.h5", tmp_path / "toy.h5.partial"

    def stop(done, total):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset("toy", out, n=6, chunk=2, progress=False, on_chunk=stop)
    chunk = workdir / "chunk-000000002.npz"
    with np.load(chunk) as stored:
        arrays = dict(stored)
    edit(arrays)
    np.savez(chunk, **arrays)
    with pytest.raises(ValueError, match=message):
        generate_dataset("toy", out, n=6, chunk=2, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))
    assert len(list(workdir.glob("chunk-*.npz"))) == 3


def test_a_last_chunk_short_of_samples_is_refused_at_assembly(tmp_path):
    """Every chunk saved, the last one cut to fewer samples: the file would end in empty rows."""
    out, workdir = tmp_path / "toy.h5", tmp_path / "toy.h5.partial"

    def stop(done, total):
        if done == total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset("toy", out, n=6, chunk=4, progress=False, on_chunk=stop)
    last = workdir / "chunk-000000004.npz"
    with np.load(last) as stored:
        arrays = {key: values[:1] for key, values in stored.items()}
    np.savez(last, **arrays)
    with pytest.raises(ValueError, match=r"do not hold samples 0\.\.5 once each"):
        generate_dataset("toy", out, n=6, chunk=4, progress=False)
    assert not out.exists()


def loop_to_root(f):
    f.create_group("notes")["loop"] = f["/"]


def soft_loop_to_root(f):
    f.create_group("notes")["loop"] = h5py.SoftLink("/")


@pytest.mark.parametrize("edit", [loop_to_root, soft_loop_to_root], ids=["hard", "soft"])
def test_a_link_back_to_the_root_is_walked_once(tmp_path, dataset, edit):
    """Links within the file are no reading of other files: the cycle loads, and the walk still
    reaches an external link it passes on the way."""
    rewrite(dataset, edit)
    assert load(dataset).u.shape == (6, 4, 9)
    rewrite(dataset, lambda f: f.__setitem__("notes/far", h5py.ExternalLink("other.h5", "a")))
    with pytest.raises(DatasetFileError, match="'notes/far' is an external link"):
        load(dataset)


def test_a_soft_link_through_an_external_one_is_refused_where_it_leaves_the_file(tmp_path):
    """A soft link through an external link lands on another file's object, whose address may be
    that of a group of this file (here victim's /secret and the file's /g): the walk then
    skipped /g, never met its external link, and u was read from the other file."""
    victim, evil = tmp_path / "victim.h5", tmp_path / "evil.h5"
    with h5py.File(victim, "w") as v:
        v["big"] = np.zeros(4000)
        v["secret"] = np.full((4, 3, 8), 42.0)
    with h5py.File(evil, "w") as f:
        f["x"] = (np.arange(8) + 0.5) / 8
        group = f.create_group("g")
        f["t"] = np.arange(3) * 0.1
        group["ext"] = h5py.ExternalLink(str(victim), "/secret")
        f["a"] = h5py.SoftLink("/g/ext")
        f["u"] = h5py.SoftLink("/g/ext")
        f.attrs["format"] = "physml-dataset/1"
    with pytest.raises(DatasetFileError, match="'a' is a link into another file"):
        load(evil)


def test_a_chain_of_groups_each_linked_twice_is_checked_in_linear_time(dataset):
    """40 groups, each linking twice to the next: 2**40 paths, 40 objects."""

    def chain(f):
        groups = [f.create_group(f"extra/g{i}") for i in range(40)]
        for first, second in zip(groups, groups[1:], strict=False):
            first["l"] = first["r"] = second

    rewrite(dataset, chain)
    with h5py.File(dataset, "r") as f:
        start = time.perf_counter()
        check_self_contained(dataset, f)
        assert time.perf_counter() - start < 0.5
    rewrite(dataset, lambda f: f.__setitem__("extra/g39/far", h5py.ExternalLink("o.h5", "a")))
    with pytest.raises(DatasetFileError, match="/far' is an external link"):
        load(dataset)


def test_an_array_beyond_the_memory_available_is_refused_before_it_is_read(dataset, monkeypatch):
    """u (6, 4, 9) float64 is 1728 bytes, the largest array of the file, read first; the load
    needs the bytes of all its arrays together, one fewer refuses the last one read."""
    arrays = []
    with h5py.File(dataset) as f:
        f.visititems(
            lambda name, item: (
                arrays.append(item.nbytes) if isinstance(item, h5py.Dataset) else None
            )
        )
    assert 1728 in arrays
    monkeypatch.setattr(physml._checks, "available_memory", lambda: sum(arrays))
    assert load(dataset).u.shape == (6, 4, 9)
    monkeypatch.setattr(physml._checks, "available_memory", lambda: sum(arrays) - 1)
    with pytest.raises(DatasetFileError, match="less what this read has taken before"):
        load(dataset)
    monkeypatch.setattr(physml._checks, "available_memory", lambda: 1727)
    message = r"its array 'u': \(6, 4, 9\) float64 values would need about 1.73e-06 GB"
    with pytest.raises(DatasetFileError, match=message):
        load(dataset)


def test_a_never_written_array_declaring_terabytes_is_refused(dataset):
    """A chunked u never written reads back as its fill value: the file is small, the array
    declared 8e12 bytes, beyond any machine's memory."""
    rewrite(dataset, lambda f: f.__delitem__("u"))
    rewrite(dataset, lambda f: f.create_dataset("u", (10**11, 4, 9), "f8", chunks=(1, 4, 9)))
    assert dataset.stat().st_size < 100_000
    with pytest.raises(DatasetFileError, match=r"'u': \(100000000000, 4, 9\) float64 values"):
        load(dataset)


def test_running_out_of_memory_while_reading_is_a_dataset_file_error(dataset, monkeypatch):
    def exhausted(self, key):
        raise MemoryError

    monkeypatch.setattr(h5py.Dataset, "__getitem__", exhausted)
    message = r"its array 'u': \(6, 4, 9\) float64 values would need .* more than this process"
    with pytest.raises(DatasetFileError, match=message):
        load(dataset)


def test_settings_nested_deeper_than_python_parses_are_refused_naming_the_file(dataset):
    rewrite(dataset, lambda f: f.attrs.__setitem__("settings", "[" * 100_000 + "]" * 100_000))
    message = f"path: '{dataset}': its attribute 'settings' nests JSON deeper than"
    with pytest.raises(DatasetFileError, match=re.escape(message)):
        load(dataset)
