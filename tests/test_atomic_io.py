"""``physml.io`` and ``physml._io``: atomic writes (all or nothing, beside the target, no
temporaries left), the lock of an output, strict JSON and figures, each checked against values
written out by hand."""

import contextlib
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import physml._io as io
from physml._io import atomic_path, exclusive_lock, remove_leftovers
from physml.io import atomic_write_text, save_figure, strict_json

EVERY_BYTE = bytes(range(256)) * 3


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_a_write_broken_off_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path, interrupt):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old contents")
    with pytest.raises(interrupt):
        with atomic_path(path) as temporary:
            temporary.write_bytes(EVERY_BYTE[:100])
            raise interrupt("cut")
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_write_that_fails_inside_write_text_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    path.write_text("[1]\n")
    real = io.Path.write_text

    def half(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(io.Path, "write_text", half)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, strict_json({"a": [1.0, 2.0]}))
    assert path.read_text() == "[1]\n" and sorted(tmp_path.iterdir()) == [path]


def test_a_round_trip_is_equal_bit_for_bit(tmp_path):
    with atomic_path(tmp_path / "a.bin") as temporary:
        temporary.write_bytes(EVERY_BYTE)
    assert (tmp_path / "a.bin").read_bytes() == EVERY_BYTE
    text = "ü ✓ \u00a0 line\nnext\n"
    atomic_write_text(tmp_path / "a.txt", text)
    assert (tmp_path / "a.txt").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.txt"]


def test_the_temporary_lies_hidden_beside_the_file_and_is_a_leftover_of_it(tmp_path):
    """Beside it (so the rename stays on one file system), named ``.<name>.<random><suffix>.tmp``
    (so ``np.savez`` and ``h5py`` see their suffix, and :func:`remove_leftovers` finds it)."""
    path = tmp_path / "a.npz"
    with atomic_path(path, suffix=".npz") as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".a.npz.") and temporary.name.endswith(".npz.tmp")
        assert remove_leftovers(tmp_path, "a.npz") == [temporary]  # what a kill -9 would leave
        temporary.write_bytes(b"x")
    assert path.read_bytes() == b"x"


def test_leftovers_of_another_name_that_starts_alike_are_kept(tmp_path):
    own, longer = tmp_path / ".a.h5.k2j.h5.tmp", tmp_path / ".a.h5x.k2j.h5.tmp"
    own.touch()
    longer.touch()
    assert remove_leftovers(tmp_path, "a.h5") == [own]
    assert not own.exists() and longer.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_atomic_writes_leave_no_file_open(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        atomic_write_text(tmp_path / f"{i}.txt", "x")
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_lock_is_removed_before_it_is_let_go(tmp_path, monkeypatch):
    """A writer that takes the lock in the moment the holder lets go must lock the file that a
    third writer would open: the holder removes its file first, then unlocks it."""
    import fcntl

    lock, holders = tmp_path / ".out.lock", contextlib.ExitStack()
    real = fcntl.flock

    def flock(handle, operation):
        real(handle, operation)
        if operation == fcntl.LOCK_UN and not len(holders._exit_callbacks):
            holders.enter_context(exclusive_lock(lock, "out"))  # the second writer

    with exclusive_lock(lock, "out"):
        monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(fcntl, "flock", real)
    with holders:
        with pytest.raises(FileExistsError, match="being written by another process"):
            with exclusive_lock(lock, "out"):
                pass
    assert not lock.exists()


def test_a_symbolic_link_at_the_locks_name_is_refused_not_followed(tmp_path):
    """A link planted where the lock goes would have the lock create (or lock) its target."""
    elsewhere, lock = tmp_path / "elsewhere", tmp_path / ".out.lock"
    elsewhere.mkdir()
    lock.symlink_to(elsewhere / "created")
    expected = (
        f"out: its lock {str(lock)!r} is a symbolic link, which is not followed (it would create "
        "or lock the file it points to); remove it"
    )
    with pytest.raises(FileExistsError) as refused:
        with exclusive_lock(lock, "out"):
            pytest.fail("the block ran")
    assert str(refused.value) == expected
    assert list(elsewhere.iterdir()) == [] and lock.is_symlink()


def test_strict_json_writes_non_finite_floats_as_null_everywhere():
    value = {"a": (1.5, math.nan), "b": {"c": -math.inf, "d": [math.inf, 2]}, "e": "NaN"}
    expected = (
        '{\n "a": [\n  1.5,\n  null\n ],\n "b": {\n  "c": null,\n  "d": [\n   null,\n   2\n'
        '  ]\n },\n "e": "NaN"\n}\n'
    )
    assert strict_json(value) == expected
    assert json.loads(expected) == {"a": [1.5, None], "b": {"c": None, "d": [None, 2]}, "e": "NaN"}


def _png_size(path) -> tuple[int, int]:
    """Width and height from the IHDR chunk of a PNG (bytes 16 to 24, big-endian)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_figure_is_written_at_its_dpi_into_a_new_folder_and_closed(tmp_path):
    fig = plt.figure(figsize=(2, 1))
    path = tmp_path / "new" / "deeper" / "f.png"
    save_figure(fig, path, dpi=40)
    assert _png_size(path) == (80, 40)  # 2 × 1 inches at 40 dots per inch
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.png"]


def test_a_figure_whose_write_fails_is_closed_and_leaves_nothing(tmp_path, monkeypatch):
    fig = plt.figure(figsize=(2, 1))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "f.png")
    assert not plt.fignum_exists(fig.number) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fig", [None, "figure.png", plt.figure, object()])
def test_save_figure_refuses_what_is_no_figure_by_name_and_closes_nothing(tmp_path, fig):
    """Refused before matplotlib is asked anything: ``plt.close(None)`` would close the current
    figure, someone else's."""
    current = plt.figure()
    with pytest.raises(
        TypeError, match=rf"^fig must be a matplotlib Figure, got {type(fig).__name__}$"
    ):
        save_figure(fig, tmp_path / "f.png")
    assert plt.fignum_exists(current.number) and list(tmp_path.iterdir()) == []
    plt.close(current)


@pytest.mark.parametrize("path", [None, 3, b"f.png", ["f.png"]])
def test_save_figure_and_atomic_write_text_refuse_a_path_of_another_type_by_name(tmp_path, path):
    fig = plt.figure()
    said = rf"^path must be a file path \(str or os.PathLike\), got {type(path).__name__}$"
    with pytest.raises(TypeError, match=said):
        save_figure(fig, path)
    assert not plt.fignum_exists(fig.number)  # handed over to be saved and closed
    with pytest.raises(TypeError, match=said):
        atomic_write_text(path, "text")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", [None, 3, b"f.pt", ["f.pt"]])
def test_the_torch_file_functions_refuse_a_path_of_another_type_by_name(tmp_path, path):
    """Refused before torch or the file system is asked: the message names the argument."""
    from physml.io import load_torch_file, save_torch_file

    kind = type(path).__name__
    with pytest.raises(
        TypeError, match=rf"^path must be a file path \(str or os.PathLike\), got {kind}$"
    ):
        save_torch_file(path, {"x": 1})
    with pytest.raises(
        TypeError, match=rf"^--keep must be a file path \(str or os.PathLike\), got {kind}$"
    ):
        load_torch_file(path, "kept values", "--keep")
    assert list(tmp_path.iterdir()) == []


def test_a_figure_is_written_at_its_own_dpi_when_asked_for_figure(tmp_path):
    fig = plt.figure(figsize=(2, 1), dpi=30)
    path = tmp_path / "f.png"
    save_figure(fig, path, dpi="figure")
    assert _png_size(path) == (60, 30)  # 2 × 1 inches at the figure's 30 dots per inch
    assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize(
    "dpi, error, said",
    [
        ("high", ValueError, "got 'high'"),
        ("Figure", ValueError, "got 'Figure'"),
        (True, TypeError, "got bool"),
        (None, TypeError, "got NoneType"),
        (b"figure", TypeError, "got bytes"),
        (0, ValueError, "got 0"),
        (-40.0, ValueError, "got -40.0"),
        (math.nan, ValueError, "got nan"),
    ],
)
def test_save_figure_refuses_a_dpi_that_is_no_positive_number_by_name_and_closes_the_figure(
    tmp_path, dpi, error, said
):
    """The figure was handed over to be saved and closed: a refusal closes it too."""
    fig = plt.figure()
    expected = re.escape(f"dpi must be a number of dots per inch > 0 or 'figure', {said}")
    with pytest.raises(error, match=f"^{expected}$"):
        save_figure(fig, tmp_path / "f.png", dpi=dpi)
    assert not plt.fignum_exists(fig.number)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_refuses_text_that_is_no_str_by_name(tmp_path):
    with pytest.raises(TypeError, match="^text must be a str, got bytes$"):
        atomic_write_text(tmp_path / "a.txt", b"bytes")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="sets a POSIX locale")
def test_text_is_written_as_utf8_under_an_ascii_locale(tmp_path):
    """A table of ``mean ± se`` must not fail at the end of a run whose locale is ``C``."""
    import subprocess
    import sys

    path = tmp_path / "table.txt"
    script = (  # the text as escapes: arguments too are decoded with the locale
        "import sys; from physml.io import atomic_write_text as w; "
        "w(sys.argv[1], '1.0e-3 \\u00b1 2e-4 \\u2713')"
    )
    environment = {
        **os.environ,
        "LC_ALL": "C",
        "LANG": "C",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONUTF8": "0",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    subprocess.run([sys.executable, "-c", script, str(path)], env=environment, check=True)
    assert path.read_bytes() == b"1.0e-3 \xc2\xb1 2e-4 \xe2\x9c\x93"


def test_every_json_file_a_task_writes_goes_through_strict_json():
    """A task's summary holding NaN (the spread-skill of a perfect ensemble, a flip rate of an
    empty set) written by ``json.dumps`` is not JSON; only in-memory round trips
    (``json.loads(json.dumps(...))``) may use it."""
    import ast
    from pathlib import Path

    tasks = Path(io.__file__).parent / "tasks"
    offenders = []
    for path in sorted(tasks.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside_loads = {
            id(argument)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "json.loads"
            for argument in node.args
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "json.dumps":
                if id(node) not in inside_loads:
                    offenders.append(f"{path.relative_to(tasks)}:{node.lineno}")
    assert offenders == []
    assert json.loads(strict_json({"a": math.nan, "b": [math.inf, 1.0]})) == {
        "a": None,
        "b": [None, 1.0],
    }


def test_a_killed_holder_leaves_an_empty_lock_file_that_the_next_run_takes_and_removes(tmp_path):
    lock = tmp_path / ".data.h5.lock"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from physml._io import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'out'):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)",
            str(lock),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert killed.returncode == -signal.SIGKILL
    assert lock.is_file() and lock.stat().st_size == 0
    with exclusive_lock(lock, "out"):
        pass
    assert not lock.exists()


def test_the_writers_for_scripts_have_one_public_home():
    """Benchmarks and notebooks take the writers from ``physml.io``, where they are defined; no
    other public module lists them as its own."""
    import physml.io
    import physml.tasks.figures

    assert sorted(physml.io.__all__) == [
        "atomic_write_text",
        "load_torch_file",
        "save_figure",
        "save_torch_file",
        "strict_json",
    ]
    assert {getattr(physml.io, name).__module__ for name in physml.io.__all__} == {"physml.io"}
    assert not set(physml.io.__all__) & set(physml.tasks.figures.__all__)


def test_a_torch_file_is_written_atomically_and_read_back_with_tensors_only(tmp_path, monkeypatch):
    """``physml.io``'s torch files: what was saved reads back equal, an interrupted write keeps
    the old file and leaves no temporary, and a file holding a Python object is refused, not
    unpickled; the models save with them, and ``physml.training`` reads the same functions."""
    import fractions

    import torch

    import physml.training.checkpoint as checkpoint
    from physml.errors import CheckpointError, PythonObjectsError
    from physml.io import load_torch_file, save_torch_file

    path = tmp_path / "kept.pt"
    saved = {"x": torch.arange(6.0).reshape(2, 3), "n": 3, "name": "u", "rows": [1.5, None]}
    save_torch_file(path, saved)
    read = load_torch_file(path, "kept values", "--keep")
    assert read.keys() == saved.keys() and torch.equal(read["x"], saved["x"])
    assert (read["n"], read["name"], read["rows"]) == (3, "u", [1.5, None])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt"]

    def full_disk(value, file):
        Path(file).write_bytes(b"PK\x03\x04 half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=re.escape(f"{str(path)!r} could not be written")):
        save_torch_file(path, {"x": torch.zeros(2)})
    monkeypatch.undo()
    assert torch.equal(load_torch_file(path, "kept values")["x"], saved["x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt"]

    other = tmp_path / "object.pt"
    torch.save({"x": fractions.Fraction(1, 3)}, other)
    with pytest.raises(PythonObjectsError, match=r"^--keep: .*object\.pt.* Python objects"):
        load_torch_file(other, "kept values", "--keep")
    assert issubclass(PythonObjectsError, CheckpointError)
    assert (checkpoint.save_torch_file, checkpoint.load_torch_file) == (
        save_torch_file,
        load_torch_file,
    )
    assert (checkpoint.CheckpointError, checkpoint.PythonObjectsError) == (
        CheckpointError,
        PythonObjectsError,
    )
