"""The `physml` command line's own checks and dispatch, against sizes and messages worked out by
hand: memory and disk room per shard, out-file names, convert's arguments, the progress switch."""

import argparse
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_cli import _fake_tasks
from test_progress import OutStream, ZMQInteractiveShell, fake_ipython

import physml._checks
from pdes import problems
from physml import cli
from physml.cli import main
from physml.signals import Terminated
from physml.training import load_checkpoint

HEAT = ["--nx", "17", "--nt", "3"]
"""A heat sample is (nt, nx) = (3, 17): 51 float64 values, 408 bytes."""


def _generate_args(tmp_path, *extra):
    return cli.build_parser().parse_args(
        ["generate", "heat", "--out", str(tmp_path / "x.h5"), "--quiet", *HEAT, *extra]
    )


def _check(args):
    options = {k.removeprefix("option_"): v for k, v in vars(args).items() if "option_" in k}
    cli._check_generate(args, options)


def _memory(monkeypatch, free):
    monkeypatch.setattr(physml._checks, "available_memory", lambda: free)


def _disk(monkeypatch, free):
    usage = shutil.disk_usage(".")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=free))


def test_a_chunk_needs_memory_for_its_samples_of_this_shard(tmp_path, monkeypatch):
    # n=5 over 2 shards: this shard holds ceil(5/2) = 3 samples, so a chunk of 4 holds 3:
    # 3 x 51 values x 8 bytes = 1224 bytes
    args = _generate_args(tmp_path, "--n", "5", "--num-shards", "2", "--chunk", "4")
    _memory(monkeypatch, 1224)
    _check(args)
    _memory(monkeypatch, 1223)
    expected = (
        "chunk: 3 samples of shape (3, 17) would need about 1.22e-06 GB, but this machine has "
        "1.22e-06 GB of memory available"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        _check(args)


def test_the_disk_room_counts_the_samples_of_this_shard_twice(tmp_path, monkeypatch):
    # 3 samples x 51 values x 8 bytes, chunks and assembled file together: 2448 bytes
    args = _generate_args(tmp_path, "--n", "5", "--num-shards", "2")
    _disk(monkeypatch, 2448)
    _check(args)
    _disk(monkeypatch, 2447)
    expected = (
        "n: 3 samples (shard 0 of 2) of shape (3, 17) need about 2.45e-06 GB (float64, chunks "
        f"and file), but the disk of --out {str(tmp_path)!r} has 2.45e-06 GB free"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        _check(args)


def test_a_disk_with_no_room_at_all_is_blamed_on_out(tmp_path, monkeypatch):
    _disk(monkeypatch, 0)  # as /proc reports
    expected = (
        "--out: 1 samples of shape (3, 17) need about 8.16e-07 GB (float64, chunks and file), "
        f"but the disk of --out {str(tmp_path)!r} has 0 GB free"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        _check(_generate_args(tmp_path, "--n", "1"))


def test_one_sample_must_fit_before_its_axes_are_built(monkeypatch):
    # nx=1000 x nt=2000 float64 values: 16e6 bytes, named after the larger axis
    settings = {"nx": 1000, "nt": 2000, "kappa": 0.5, "bc": "dirichlet"}
    _memory(monkeypatch, 16_000_000)
    cli._check_sample_size(settings)
    _memory(monkeypatch, 15_999_999)
    expected = (
        "nt: one sample of at least nx=1000 x nt=2000 float64 values would need about 0.016 GB, "
        "but this machine has 0.016 GB of memory available"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        cli._check_sample_size(settings)


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        (["--n", "0"], ValueError, "n must be an integer >= 1, got 0"),
        (["--n", "2", "--chunk", "0"], ValueError, "chunk must be an integer >= 1, got 0"),
        (
            ["--n", "2", "--num-shards", "0"],
            ValueError,
            "num_shards must be an integer >= 1, got 0",
        ),
    ],
)
def test_generate_checks_its_counts_itself(tmp_path, extra, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        _check(_generate_args(tmp_path, *extra))


def test_generate_checks_the_device_itself(tmp_path):
    expected = "device must be 'cpu', 'cuda' or 'cuda:N', got 'bogus'"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        _check(_generate_args(tmp_path, "--n", "2", "--device", "bogus"))


def test_an_out_path_that_ends_in_dot_dot_is_not_a_file_name(tmp_path):
    args = _generate_args(tmp_path, "--n", "2")
    args.out = tmp_path / "missing" / ".."
    expected = f"--out must name a file (e.g. data.h5), got {str(args.out)!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        _check(args)


class _Fake(problems.Problem):
    """A recipe whose shape or attributes fail as a recipe's lookups can."""

    name = "fake-recipe"
    description = "a fake"
    options = {"nx": problems.Option(4, "points")}

    def __init__(self, failure: BaseException, where: str):
        self.failure, self.where = failure, where

    def sample_shape(self, settings):
        if self.where == "shape":
            raise self.failure
        return (2, settings["nx"])

    def attributes(self, settings):
        if self.where == "attributes":
            raise self.failure
        return {}


@pytest.mark.parametrize(
    ("failure", "where", "message"),
    [
        (KeyError("bogus"), "attributes", "fake-recipe: unknown setting value 'bogus'"),
        (KeyError("bogus"), "shape", "fake-recipe: unknown setting value 'bogus'"),
        (MemoryError(), "shape", "fake-recipe: the grid settings are too large for memory"),
    ],
)
def test_a_recipe_failing_to_describe_its_samples_is_one_error_line(
    tmp_path, monkeypatch, capsys, failure, where, message
):
    monkeypatch.setitem(problems._REGISTERED, "fake-recipe", _Fake(failure, where))
    args = ["generate", "fake-recipe", "--n", "1", "--out", str(tmp_path / "x.h5"), "--quiet"]
    assert main(args) == 2
    assert capsys.readouterr().err == f"physml generate: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def heat_file(tmp_path, capsys):
    path = tmp_path / "heat.h5"
    assert main(["generate", "heat", "--n", "2", "--out", str(path), "--quiet", *HEAT]) == 0
    capsys.readouterr()
    return path


def test_merge_refuses_to_replace_without_overwrite(tmp_path, capsys):
    for shard in (0, 1):
        args = ["generate", "heat", "--n", "3", "--num-shards", "2", "--shard", str(shard)]
        assert main([*args, "--out", str(tmp_path / "d.h5"), "--quiet", *HEAT]) == 0
    shards = sorted(tmp_path.glob("d.shard-*.h5"))
    assert len(shards) == 2
    merged = tmp_path / "m.h5"
    assert main(["merge", *map(str, shards), "-o", str(merged)]) == 0
    assert main(["merge", *map(str, shards), "-o", str(merged)]) == 2
    assert capsys.readouterr().err == (
        f"physml merge: error: out: {str(merged)!r} already exists (pass --overwrite)\n"
    )
    assert main(["merge", *map(str, shards), "-o", str(merged), "--overwrite"]) == 0
    with h5py.File(merged) as f:
        assert f["u"].shape == (3, 3, 17)  # 2 + 1 samples


def test_convert_round_trips_through_pdebench(heat_file, tmp_path, capsys):
    bench, back = tmp_path / "bench.h5", tmp_path / "back.h5"
    assert main(["convert", str(heat_file), str(bench), "--to", "pdebench"]) == 0
    assert main(["convert", str(bench), "-o", str(back)]) == 0
    with h5py.File(heat_file) as original, h5py.File(back) as returned:
        np.testing.assert_array_equal(returned["u"][()], original["u"][()])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "out: name the output file, as OUT after IN or with -o/--out"),
        (
            ["A.h5", "-o", "B.h5"],
            "out: name the output file once, as OUT or with -o/--out, got 'A.h5' and 'B.h5'",
        ),
        (
            ["A.h5"],
            "to: name the output format for a physml source: 'physml' (a self-contained copy), "
            "'pdebench' or 'well'",
        ),
        (
            ["A.h5", "--to", "pdebench", "--field", "u"],
            "field: only for a The Well source, got a physml file",
        ),
        (
            ["A.h5", "--to", "well", "--layout", "tensor"],
            "layout: only for to='pdebench', got to='well'",
        ),
    ],
)
def test_convert_refuses_its_arguments_by_name(
    heat_file, tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(heat_file), *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"physml convert: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.h5"]


def test_convert_takes_the_same_out_twice(heat_file, tmp_path, capsys):
    out = str(tmp_path / "bench.h5")
    assert main(["convert", str(heat_file), out, "-o", out, "--to", "pdebench"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"


def test_convert_takes_out_after_an_option(heat_file, tmp_path, capsys):
    out = str(tmp_path / "bench.h5")
    assert main(["convert", str(heat_file), "--to", "pdebench", out]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"


def test_after_a_double_dash_convert_reads_names_that_begin_with_a_dash(
    heat_file, tmp_path, capsys, monkeypatch
):
    """``--`` ends the options: ``-out.h5`` after it is the output's name, not ``-o ut.h5``."""
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "--to", "pdebench", "--", str(heat_file), "-out.h5"]) == 0
    assert capsys.readouterr().out == "wrote -out.h5\n"
    assert (tmp_path / "-out.h5").is_file() and not (tmp_path / "ut.h5").exists()


def test_an_options_own_name_after_a_double_dash_gets_no_hint(capsys):
    _, error = _usage_error(["run", "--", "verify", "--size", "toy"], capsys)
    assert error == "physml run: error: unrecognized arguments: --size toy"


def _usage_error(argv, capsys) -> tuple[str, str]:
    """The usage line and the error line a parse error of ``argv`` prints (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    return lines[0], lines[-1]


@pytest.mark.parametrize(
    ("argv", "usage", "error"),
    [
        (
            ["train", "--data", "d.h5", "--out", "r", "--stpes", "5"],
            "usage: physml train ",
            "physml train: error: unrecognized arguments: --stpes 5; did you mean --steps?",
        ),
        (
            ["generate", "heat", "--n", "4", "--out", "x.h5", "--sed=3", "--quiet", "-z"],
            "usage: physml generate heat ",
            "physml generate heat: error: unrecognized arguments: --sed=3 -z; did you mean --seed?",
        ),
        (
            ["convert", "a.h5", "b.h5", "c.h5"],
            "usage: physml convert ",
            "physml convert: error: unrecognized arguments: c.h5",
        ),
        (
            ["--verison", "list"],
            "usage: physml ",
            "physml: error: unrecognized arguments: --verison; did you mean --version?",
        ),
    ],
)
def test_each_command_reports_its_own_unknown_arguments(argv, usage, error, capsys):
    usage_line, error_line = _usage_error(argv, capsys)
    assert usage_line.startswith(usage) and error_line == error


@pytest.mark.parametrize(
    ("argv", "error", "close"),
    [
        (
            ["trian"],
            "physml: error: argument command: invalid choice: 'trian' (choose from ",
            "train",
        ),
        (
            ["generate", "haet"],
            "physml generate: error: argument PDE: invalid choice: 'haet' ",
            "heat",
        ),
        (
            ["train", "--data", "d.h5", "--out", "r", "--model", "fnoo"],
            "physml train: error: argument --model: invalid choice: 'fnoo' (choose from 'anp', ",
            "fno",
        ),
    ],
)
def test_a_misspelt_choice_names_the_close_one(argv, error, close, capsys):
    line = _usage_error(argv, capsys)[1]
    assert line.startswith(error) and line.endswith(f"; did you mean {close!r}?")


def test_a_misspelt_task_names_the_close_one_and_a_far_one_none(capsys):
    assert main(["run", "verfy"]) == 2
    assert capsys.readouterr().err.endswith("'verify']; did you mean 'verify'?\n")
    assert main(["run", "zzzz"]) == 2
    assert capsys.readouterr().err.endswith("'verify']\n")


@pytest.mark.parametrize(
    ("quiet", "tty", "wanted"), [(False, True, True), (True, True, False), (False, False, False)]
)
def test_a_progress_bar_only_on_a_terminal_and_not_quiet(monkeypatch, quiet, tty, wanted):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    assert cli._progress_wanted(argparse.Namespace(quiet=quiet)) is wanted


@pytest.mark.parametrize(("quiet", "wanted"), [(False, True), (True, False)])
def test_a_command_called_from_a_notebook_draws_its_bar_unless_quiet(
    tmp_path, monkeypatch, quiet, wanted
):
    # a Jupyter kernel's stderr is no terminal, yet its frontend redraws the bar in place
    fake_ipython(monkeypatch, ZMQInteractiveShell())
    monkeypatch.setattr(sys, "stderr", OutStream())
    assert cli._progress_wanted(argparse.Namespace(quiet=quiet)) is wanted
    out = tmp_path / "x.h5"
    argv = ["generate", "heat", "--n", "2", "--out", str(out), *HEAT] + ["--quiet"] * quiet
    assert main(argv) == 0
    written = sys.stderr.getvalue()
    assert ("2/2" in written and "\r" in written) is wanted


class _Console(io.StringIO):
    """A standard output with a chosen ``encoding`` that keeps what is printed."""

    def __init__(self, encoding):
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self):
        return self._encoding


@pytest.mark.parametrize("encoding", ["ascii", "no-such-codec"])
def test_marks_and_signs_are_spelt_out_where_stdout_cannot_encode_them(monkeypatch, encoding):
    console = _Console(encoding)
    monkeypatch.setattr(sys, "stdout", console)
    assert cli._marks() == ("met", "MISSED")
    cli._print_text("café: u ≥ 2 × σ")  # é has no spelling: a question mark
    assert console.getvalue() == "caf?: u >= 2 x sigma\n"


def test_a_strict_ascii_stdout_gets_question_marks_not_an_error(monkeypatch):
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    cli._print_text("résultats ≤ 1")
    stdout.flush()
    assert stdout.buffer.getvalue() == b"r?sultats <= 1\n"


def _rows(*verdicts):
    from physml import tasks

    return lambda context: [
        tasks.Row("toy", f"case{i}", "score", 1.0, "<= 2" if ok is not None else "", ok)
        for i, ok in enumerate(verdicts)
    ]


@pytest.mark.parametrize(
    ("verdicts", "code"),
    [((None,), 0), ((True, None), 0), ((True, False), 1), ((False, False), 1), ((True,), 0)],
)
def test_the_run_exits_1_when_any_target_is_missed(tmp_path, monkeypatch, capsys, verdicts, code):
    _fake_tasks(monkeypatch, toy_a=_rows(*verdicts))
    assert main(["run", "toy-a", "--out", str(tmp_path), "--quiet"]) == code
    capsys.readouterr()


def test_run_keeps_its_size_and_demo_runs_toy(tmp_path, monkeypatch, capsys):
    seen = _fake_tasks(monkeypatch, toy_a=_rows(True))
    assert main(["run", "toy-a", "--out", str(tmp_path), "--quiet"]) == 0
    assert main(["run", "toy-a", "--size", "toy", "--out", str(tmp_path), "--quiet"]) == 0
    assert main(["demo", "--tasks", "toy-a", "--out", str(tmp_path), "--quiet"]) == 0
    assert [context.size for context in seen["toy_a"]] == ["full", "toy", "toy"]
    assert sorted(p.name for p in (tmp_path / "toy-a").glob("rows-*")) == [
        "rows-full-seed0.json",
        "rows-toy-seed0.json",
    ]
    capsys.readouterr()


@pytest.mark.parametrize(
    ("flags", "tty", "quiet"), [(["--quiet"], True, True), ([], True, False), ([], False, True)]
)
def test_the_tasks_are_quiet_with_quiet_or_off_a_terminal(
    tmp_path, monkeypatch, capsys, flags, tty, quiet
):
    seen = _fake_tasks(monkeypatch, toy_a=_rows(True))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    assert main(["run", "toy-a", "--out", str(tmp_path), *flags]) == 0
    assert seen["toy_a"][0].quiet is quiet
    capsys.readouterr()


def test_each_finished_task_reports_its_wall_time(tmp_path, monkeypatch, capsys):
    _fake_tasks(monkeypatch, toy_a=_rows(True), toy_b=_rows(True))
    assert main(["demo", "--tasks", "toy-a", "toy-b", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^toy-[ab] +\(all\) +wall time \[s\] ", out, re.MULTILINE)) == 2, out


def test_an_os_error_of_a_task_is_one_line(tmp_path, monkeypatch, capsys):
    def fails(context):
        raise OSError("disk gone")

    _fake_tasks(monkeypatch, toy_os=fails)
    assert main(["run", "toy-os", "--out", str(tmp_path), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "physml run: error: task 'toy-os' failed: disk gone\n"


@pytest.mark.parametrize("where", ["task", "rows"])
def test_an_index_that_cannot_be_written_does_not_hide_why_the_task_failed(
    tmp_path, monkeypatch, capsys, where
):
    from physml import tasks
    from physml.tasks import report

    def fails(*args):
        raise OSError("disk gone")

    def no_index(*args, **kwargs):
        raise OSError("no room for index.html")

    _fake_tasks(monkeypatch, toy_os=fails if where == "task" else _rows(True))
    if where == "rows":
        monkeypatch.setattr(tasks, "save_rows", fails)
    monkeypatch.setattr(report, "write_index", no_index)
    assert main(["run", "toy-os", "--out", str(tmp_path), "--quiet"]) == 2
    during = "" if where == "task" else " writing its rows"
    assert capsys.readouterr().err == (
        f"physml run: error: task 'toy-os' failed{during}: disk gone "
        "(and index.html could not be written: no room for index.html)\n"
    )


def test_ctrl_c_stays_ctrl_c_when_the_index_cannot_be_written(tmp_path, monkeypatch, capsys):
    from physml.tasks import report

    def stops(context):
        raise KeyboardInterrupt

    def no_index(*args, **kwargs):
        raise OSError("no room for index.html")

    _fake_tasks(monkeypatch, toy_stop=stops)
    monkeypatch.setattr(report, "write_index", no_index)
    assert main(["run", "toy-stop", "--out", str(tmp_path), "--quiet"]) == 130
    capsys.readouterr()


def test_ctrl_c_after_a_finished_task_prints_no_tables(tmp_path, monkeypatch, capsys):
    def stops(context):
        raise KeyboardInterrupt

    _fake_tasks(monkeypatch, toy_a=_rows(True), toy_stop=stops)
    assert main(["demo", "--tasks", "toy-a", "toy-stop", "--out", str(tmp_path), "--quiet"]) == 130
    assert capsys.readouterr().out == ""
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "interrupted during task" in page and "<td>toy-a</td>" in page


def test_an_existing_out_folder_that_is_not_writable_is_refused(tmp_path, monkeypatch, capsys):
    import os

    out = tmp_path / "results"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(  # as for a non-root user without write permission on out
        os, "access", lambda path, mode: Path(path) != out and real_access(path, mode)
    )
    _fake_tasks(monkeypatch, toy_a=_rows(True))
    assert main(["run", "toy-a", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"physml run: error: out: {str(out)!r} is not a writable folder\n"
    )
    assert list(out.iterdir()) == []
    monkeypatch.setattr(os, "access", lambda path, mode: mode == os.R_OK)  # read-only
    assert main(["run", "toy-a", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.endswith("is not a writable folder\n")


def test_demo_without_tasks_runs_the_demo_tasks_only(tmp_path, monkeypatch, capsys):
    import dataclasses

    from physml import tasks

    seen = _fake_tasks(monkeypatch, toy_in=_rows(True), toy_out=_rows(True))
    demo_only = {
        name: dataclasses.replace(task, in_demo=False) for name, task in tasks._TASKS.items()
    }
    demo_only["toy-in"] = dataclasses.replace(demo_only["toy-in"], in_demo=True)
    monkeypatch.setattr(tasks, "_TASKS", demo_only)
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    assert len(seen["toy_in"]) == 1 and seen["toy_out"] == []
    capsys.readouterr()


def test_run_task_help_says_whether_demo_runs_it(monkeypatch, capsys):
    import dataclasses

    from physml import tasks

    _fake_tasks(monkeypatch, toy_a=_rows(True))
    for in_demo, ending in ((True, "`physml demo` runs it at toy size."), (False, "under --out.")):
        monkeypatch.setitem(
            tasks._TASKS, "toy-a", dataclasses.replace(tasks._TASKS["toy-a"], in_demo=in_demo)
        )
        with pytest.raises(SystemExit):
            main(["run", "toy-a", "--help"])
        words = " ".join(capsys.readouterr().out.split())
        assert words.endswith(ending), words


def _entry(description):
    return types.SimpleNamespace(description=description)


def test_format_list_at_a_width_counted_by_hand(monkeypatch):
    from physml import tasks

    recipes = {"ab": _entry("alpha  beta gamma de-lta\n zeta")}
    monkeypatch.setattr(problems, "registry", lambda: recipes)
    monkeypatch.setattr(tasks, "registry", lambda: {"wxyz": _entry("short"), "t": _entry("")})
    # names padded to 4, descriptions from column 8: 30 - 8 = 22 characters a line, which
    # "alpha beta gamma de-lta" (23) overflows, and the hyphen is no place to break
    expected = "\n".join(
        [
            "PDE recipes (physml generate PDE):",
            "  ab    alpha beta gamma",
            "        de-lta zeta",
            "",
            "tasks (physml run TASK):",
            "  t",
            "  wxyz  short",
        ]
    )
    assert cli.format_list(30) == expected
    assert cli.format_list(10) == expected  # at least 20 characters a line: the same breaks
    wide = cli.format_list(31)  # 23 characters a line: the first line holds de-lta
    assert wide.splitlines()[1:3] == ["  ab    alpha beta gamma de-lta", "        zeta"]
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(
        shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size(fallback)
    )
    # 99 characters: 18 words a line at 100 columns (92 after the name column), 14 at 80
    recipes["ab"] = _entry(" ".join(["word"] * 20))
    assert cli.format_list() == cli.format_list(100) != cli.format_list(80)
    assert cli.format_list().splitlines()[1] == "  ab    " + " ".join(["word"] * 18)


def test_a_blank_out_is_refused_as_it_came(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fake_tasks(monkeypatch, toy_a=_rows(True))
    assert main(["run", "toy-a", "--out", "  ", "--quiet"]) == 2
    assert capsys.readouterr().err == "physml run: error: --out must name a folder, got '  '\n"
    assert list(tmp_path.iterdir()) == []  # no folder named by blanks


def test_the_summary_marks_are_words_on_an_ascii_stdout(tmp_path, monkeypatch):
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)
    _fake_tasks(monkeypatch, toy_a=_rows(True, False))
    assert main(["run", "toy-a", "--out", str(tmp_path), "--quiet"]) == 1
    stdout.flush()
    lines = stdout.buffer.getvalue().decode("ascii").splitlines()
    summary = [line.split() for line in lines if line.startswith("toy ")]  # the judged rows
    assert [(words[1], words[-1]) for words in summary] == [("case0", "met"), ("case1", "MISSED")]


def test_an_error_line_an_ascii_stderr_cannot_encode_is_replaced_not_fatal(monkeypatch):
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["run", "café"]) == 2
    stderr.flush()
    assert (
        stderr.buffer.getvalue()
        .decode("ascii")
        .startswith("physml run: error: unknown task 'caf?'; choose one of ")
    )


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


TRAIN_R = ["train", "--data", "x.h5", "--model", "fno", "--task", "operator", "--out", "r"]


@pytest.mark.parametrize(
    "command, worker, hint",
    [
        (
            ["generate", "heat", "--n", "1", "--out", "x.h5", "--quiet"],
            "_generate",
            " before its first chunk of samples (--chunk 32) was saved; rerunning the same command "
            "starts over",
        ),
        (
            TRAIN_R,
            "run_train",
            " before its first checkpoint (written every --checkpoint-every 100 steps); rerunning "
            "the same command starts over",
        ),
        (
            [*TRAIN_R, "--checkpoint-every", "7"],
            "run_train",
            " before its first checkpoint (written every --checkpoint-every 7 steps); rerunning "
            "the same command starts over",
        ),
        (["evaluate", "--checkpoint", "r", "--data", "x.h5"], "run_evaluate", ""),
        (["merge", "a.h5", "-o", "m.h5"], "_run_merge", ""),
        (["convert", "a.h5", "b.h5"], "_run_convert", ""),
    ],
    ids=["generate", "train", "train-every-7", "evaluate", "merge", "convert"],
)
def test_ctrl_c_is_one_line_and_exit_130_naming_a_resume_only_where_one_exists(
    tmp_path, monkeypatch, capsys, command, worker, hint
):
    from physml.training import commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli if hasattr(cli, worker) else commands, worker, _interrupted)
    try:
        code = main(command)
    except KeyboardInterrupt:
        pytest.fail(f"Ctrl-C on physml {command[0]} escaped as a traceback")
    assert code == 130
    assert capsys.readouterr().err == f"\nphysml {command[0]}: interrupted{hint}\n"


def test_ctrl_c_on_train_reads_the_run_folder_and_checkpoints_of_the_config(
    tmp_path, monkeypatch, capsys
):
    from physml.training import commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(commands, "run_train", _interrupted)
    (tmp_path / "r").mkdir()
    (tmp_path / "run.toml").write_text('data = "x.h5"\nout = "r"\ncheckpoint_every = 7\n')
    assert main(["train", "--model", "fno", "--task", "operator", "--config", "run.toml"]) == 130
    assert capsys.readouterr().err == (
        "\nphysml train: interrupted before its first checkpoint (written every "
        "--checkpoint-every 7 steps); rerunning the same command starts over\n"
    )
    assert main(["train", "--model", "fno", "--task", "operator"]) == 130  # no run folder named
    assert capsys.readouterr().err == "\nphysml train: interrupted\n"


EVALUATE_R = ["evaluate", "--checkpoint", "r", "--data", "x.h5"]


@pytest.mark.parametrize(
    "command, worker",
    [(TRAIN_R, "run_train"), (EVALUATE_R, "run_evaluate")],
    ids=["train", "evaluate"],
)
def test_ctrl_c_under_torchrun_is_said_once_by_rank_zero(
    tmp_path, monkeypatch, capsys, command, worker
):
    """Ctrl-C reaches every process torchrun started; each exits 130, only rank 0 prints."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.training_commands, worker, _interrupted)
    monkeypatch.setenv("WORLD_SIZE", "2")
    said = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        assert main(command) == 130
        said[rank] = capsys.readouterr().err
    assert said["0"].startswith(f"\nphysml {command[0]}: interrupted") and said["1"] == ""


def test_evaluate_under_torchrun_runs_and_prints_on_rank_zero_only(tmp_path, monkeypatch, capsys):
    """Rank 1 returns at once, reading nothing (here: files that do not exist); rank 0 evaluates."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(EVALUATE_R) == 0
    assert capsys.readouterr() == ("", "") and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    assert main(EVALUATE_R) == 2
    assert capsys.readouterr().err == (
        "physml evaluate: error: --checkpoint: no run folder or checkpoint file at 'r'\n"
    )


def test_evaluate_with_a_stray_rank_and_no_world_size_evaluates(tmp_path, monkeypatch, capsys):
    """RANK=1 without WORLD_SIZE is a world of one process: it evaluates (here: says the
    checkpoint is missing), where it returned at once with exit status 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    assert main(EVALUATE_R) == 2
    assert capsys.readouterr().err == (
        "physml evaluate: error: --checkpoint: no run folder or checkpoint file at 'r'\n"
    )


TORCHRUN_NAMED = "the environment variable RANK must be an integer (torchrun sets it), got 'abc'"


def test_a_rank_that_is_not_an_integer_is_an_error_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "abc")
    assert main(EVALUATE_R) == 2
    assert capsys.readouterr().err == f"physml evaluate: error: {TORCHRUN_NAMED}\n"


def test_ctrl_c_with_a_rank_that_is_not_an_integer_names_it_without_a_traceback(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.training_commands, "run_train", _interrupted)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "abc")
    assert main(TRAIN_R) == 130
    err = capsys.readouterr().err
    assert err.startswith(f"physml train: error: {TORCHRUN_NAMED}\n\nphysml train: interrupted")


def test_ctrl_c_names_what_a_rerun_resumes_from_only_once_it_was_saved(
    tmp_path, monkeypatch, capsys
):
    from physml.training.checkpoint import KEYS, save_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_generate", _interrupted)
    monkeypatch.setattr(cli.training_commands, "run_train", _interrupted)
    Path("x.h5.partial").mkdir()
    for start in (0, 4):
        Path(f"x.h5.partial/chunk-{start:09d}.npz").touch()
    Path("x.h5.partial/.chunk-000000008.npz.abc.tmp").touch()  # a chunk cut off mid-write
    generate = ["generate", "heat", "--n", "12", "--chunk", "4", "--out", "x.h5", "--quiet"]
    assert main(generate) == 130
    assert capsys.readouterr().err == (
        "\nphysml generate: interrupted; rerunning the same command resumes from the 2 chunk(s) "
        "of samples written\n"
    )
    save_checkpoint("r", {**dict.fromkeys(KEYS), "step": 300})
    assert main(TRAIN_R) == 130
    assert capsys.readouterr().err == (
        "\nphysml train: interrupted; rerunning the same command resumes from the checkpoint at "
        "step 300\n"
    )


def test_ctrl_c_before_the_first_checkpoint_says_the_rerun_starts_over(
    tmp_path, monkeypatch, capsys
):
    from physml.training import trainer

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", "x.h5", "--quiet"]) == 0
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    backward, calls = trainer.Trainer._backward, []

    def stopped_at_step_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return backward(self, *args, **kwargs)

    for every, hint in (
        (
            5,
            " before its first checkpoint (written every --checkpoint-every 5 steps); "
            "rerunning the same command starts over",
        ),
        (2, "; rerunning the same command resumes from the checkpoint at step 2"),
    ):
        calls.clear()
        monkeypatch.setattr(trainer.Trainer, "_backward", stopped_at_step_3)
        out = f"every{every}"
        train = [*TRAIN_R[:-1], out, "--steps", "6", "--checkpoint-every", str(every), *tiny]
        assert main(train) == 130
        assert capsys.readouterr().err == f"\nphysml train: interrupted{hint}\n"
        monkeypatch.setattr(trainer.Trainer, "_backward", backward)
        assert main(train) == 0
        resumed = json.loads(Path(out, "report.json").read_text())["resumed_from"]
        assert resumed == (0 if every == 5 else 2)


CUT_SHORT = (
    "cannot be read as a checkpoint of physml train: it is an incomplete zip archive (a "
    "truncated copy? zipfile: File is not a zip file); restore an intact copy, or delete it to "
    "start that training over"
)


@pytest.mark.parametrize(
    "command, error",
    [
        (
            [*TRAIN_R[:-1], "notes.txt/r"],
            "physml train: error: --out: 'notes.txt' is a file, not a folder",
        ),
        (
            ["generate", "heat", "--n", "2", "--out", "notes.txt/x.h5", "--quiet"],
            "physml generate: error: out: 'notes.txt' is a file, not a folder",
        ),
        (
            [*TRAIN_R[:-1], "locked/r"],
            "physml train: error: --out: 'locked' is not a writable folder",
        ),
        (
            ["evaluate", "--checkpoint", "notes.txt", "--data", "notes.txt"],
            "physml evaluate: error: --checkpoint: 'notes.txt' is not a checkpoint of physml "
            "train (not a zip archive, as torch.save writes)",
        ),
        (
            ["evaluate", "--checkpoint", "data.h5", "--data", "data.h5"],
            "physml evaluate: error: --checkpoint: 'data.h5' is an HDF5 file (a dataset?), not "
            "a checkpoint of physml train; pass it as --data",
        ),
        (
            ["evaluate", "--checkpoint", "arrays.npz", "--data", "data.h5"],
            "physml evaluate: error: --checkpoint: 'arrays.npz' is not a checkpoint of physml "
            "train (a zip archive, but not one torch.save writes: it holds no data.pkl)",
        ),
        (
            ["evaluate", "--checkpoint", "cut", "--data", "notes.txt"],
            f"physml evaluate: error: --checkpoint: {str(Path('cut/checkpoint.pt'))!r} "
            + CUT_SHORT,
        ),
    ],
    ids=[
        "train-out-under-a-file",
        "generate-out-under-a-file",
        "train-out-read-only",
        "evaluate-a-text-file",
        "evaluate-a-dataset",
        "evaluate-another-zip-archive",
        "evaluate-a-truncated-checkpoint",
    ],
)
def test_a_path_that_cannot_serve_is_one_line_naming_its_flag(
    tmp_path, monkeypatch, capsys, command, error
):
    import os

    from physml.training.checkpoint import KEYS, save_checkpoint

    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("a note, not a folder\n")
    h5py.File("data.h5", "w").close()
    np.savez("arrays.npz", u=np.zeros(3))
    Path("locked").mkdir()
    real_access = os.access
    monkeypatch.setattr(  # as for a user without write permission on locked (root has it)
        os, "access", lambda path, mode: Path(path) != Path("locked") and real_access(path, mode)
    )
    whole = save_checkpoint("cut", {**dict.fromkeys(KEYS), "step": 2})
    whole.write_bytes(whole.read_bytes()[:100])  # a copy cut short
    assert main(command) == 2
    assert capsys.readouterr().err == error + "\n"


def test_a_full_disk_while_train_checkpoints_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", "x.h5", "--quiet"]) == 0

    def disk_full(value, path):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 0")

    monkeypatch.setattr(torch, "save", disk_full)
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    assert main([*TRAIN_R, "--steps", "2", *tiny]) == 2
    err = capsys.readouterr().err
    written = str(Path("r", "checkpoint.pt"))
    assert err.startswith(
        f"physml train: error: {written!r} could not be written (torch.save: [enforce fail at "
        "inline_container.cc:664] . unexpected pos 512 vs 0); "
    )
    assert err.endswith(f" MB free on its disk, and {written!r} is left as it was\n")
    assert err.count("\n") == 1
    assert not [p for p in Path(".").rglob(".*") if p.name.endswith((".tmp", ".lock"))]


def _takes_sigterm() -> None:
    """In a child before it runs: SIGTERM as a scheduler sends it, whatever the parent set."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_sigterm_stops_train_as_ctrl_c_does_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    """Slurm's time limit or scancel: the one line of Ctrl-C naming the signal, exit 143 (128 +
    15), the run's lock released, though a second SIGTERM came 2 ms after the first (Slurm signals
    every process of a job step and torchrun forwards its own); the same command (on the constant
    schedule, extended) goes on from the checkpoint the line names."""
    from physml.training.trainer import LOCK

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", "x.h5", "--quiet"]) == 0
    tiny = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    train = [*TRAIN_R, "--schedule", "constant", "--checkpoint-every", "2", *tiny]
    command = [sys.executable, "-m", "physml.cli", *train, "--steps", "1000000"]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=_takes_sigterm)
    deadline = time.monotonic() + 60
    while not Path("r/checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    time.sleep(0.002)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    step = int(load_checkpoint("r")["step"])
    assert (run.returncode, err) == (
        143,
        "\nphysml train: interrupted by SIGTERM; rerunning the same command resumes from the "
        f"checkpoint at step {step}\n",
    )
    assert not Path("r", LOCK).exists()
    assert main([*train, "--steps", str(step + 2)]) == 0
    assert json.loads(Path("r/report.json").read_text())["resumed_from"] == step
    assert capsys.readouterr().err == ""


@pytest.fixture
def sigterm_ends_the_process():
    """SIGTERM's default action (the process ends) for the test, as a scheduler sends it; the
    handlers pytest had come back after."""
    from physml.signals import STOPPING

    before = {signum: signal.signal(signum, signal.SIG_DFL) for signum in STOPPING}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def _sigterm() -> None:
    """A SIGTERM to this process, its handler run before this returns."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        pytest.fail("this SIGTERM would end the process (pytest with it)")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)


def test_a_repeated_sigterm_is_let_go_while_the_first_is_handled_and_until_the_process_ends(
    sigterm_ends_the_process,
):
    """The first SIGTERM stops the block; more of them (Slurm and torchrun both send one), while
    its cleanup runs, while the command says it stopped and after, are let go: they would end the
    process before its line, its lock release and its exit status 143."""
    from physml.signals import signals_interrupt

    with pytest.raises(Terminated):
        try:
            with signals_interrupt():
                try:
                    _sigterm()
                finally:
                    _sigterm()
        except Terminated:
            _sigterm()
            raise
    _sigterm()


class _SignalledInFinalizer:
    """An object whose ``__del__`` takes a SIGTERM, as an h5py object freed mid-walk may."""

    def __del__(self) -> None:
        _sigterm()


def _swallowed_in_del() -> None:
    _SignalledInFinalizer()


def _caught_and_carried_on() -> None:
    try:
        _sigterm()
    except KeyboardInterrupt:
        pass


@pytest.mark.parametrize("swallow", [_swallowed_in_del, _caught_and_carried_on])
def test_a_sigterm_swallowed_before_the_command_caught_it_leaves_the_next_one_to_stop_it(
    sigterm_ends_the_process, monkeypatch, swallow
):
    """Python ignores an exception raised in a ``__del__`` or a weakref callback (code may also
    catch it and carry on): the command never stopped, so the next SIGTERM stops it."""
    from physml.signals import signals_interrupt

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: ignored.append(unraisable))
    with pytest.raises(Terminated):
        with signals_interrupt():
            swallow()
            _sigterm()
    expected = [Terminated] if swallow is _swallowed_in_del else []
    assert [type(unraisable.exc_value) for unraisable in ignored] == expected


class _ClosedTerminal(io.TextIOBase):
    """stderr of a process whose terminal went away: every write fails with EIO."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


def test_a_hangup_from_a_closed_terminal_stops_with_129_though_the_line_cannot_be_written(
    monkeypatch,
):
    def hung_up(args):
        raise Terminated(signal.SIGHUP)

    monkeypatch.setattr(cli, "_dispatch", hung_up)
    monkeypatch.setattr(sys, "stderr", _ClosedTerminal())
    assert main(["list"]) == 128 + 1


def test_a_reader_that_stops_early_is_not_an_error(monkeypatch):
    def reader_gone():
        raise BrokenPipeError

    redirected = []
    monkeypatch.setattr(cli, "format_list", reader_gone)
    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(fileno=lambda: 99, encoding="utf-8"))
    monkeypatch.setattr(os, "open", lambda path, flags: redirected.append(path) or 42)
    monkeypatch.setattr(os, "dup2", lambda source, target: redirected.append((source, target)))
    assert main(["list"]) == 0  # `physml list | head`: the rest of the output goes nowhere
    assert redirected == [os.devnull, (42, 99)]


def test_the_wrote_line_says_whether_the_index_was_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = ["generate", "heat", "--n", "3", "--out", "s.h5", "--num-shards", "3", "--quiet", *HEAT]
    for shard, note in (
        ("2", "waiting for shard(s) 0, 1 of 3: the last to finish writes the index s.h5"),
        ("0", "waiting for shard(s) 1 of 3: the last to finish writes the index s.h5"),
        ("1", "index s.h5 written"),
    ):
        assert main([*run, "--shard", shard]) == 0
        written = rf"wrote s\.shard-00{shard}-of-003\.h5 \(\d+\.\d s\); {re.escape(note)}\n"
        assert re.fullmatch(written, capsys.readouterr().out)


@pytest.mark.parametrize(
    "num_shards, shard, note",
    [
        (6, "5", "waiting for shard(s) 0, 1, 2, 3, 4 of 6"),
        (7, "3", "waiting for 6 of 7 shards (0, 1, 2, ..., 6)"),
        (1000, "0", "waiting for 999 of 1000 shards (1, 2, 3, ..., 999)"),
    ],
)
def test_the_wrote_line_counts_many_missing_shards_and_names_a_few(
    tmp_path, monkeypatch, capsys, num_shards, shard, note
):
    """Up to five missing shards are named; past that the line counts them and names the first
    three and the last, not one number a shard (999 of them for a 1000-shard dataset)."""
    monkeypatch.chdir(tmp_path)
    run = ["generate", "heat", "--n", str(num_shards), "--out", "s.h5", "--quiet", *HEAT]
    assert main([*run, "--num-shards", str(num_shards), "--shard", shard]) == 0
    wrote = f"wrote s.shard-{int(shard):03d}-of-{num_shards:03d}.h5"
    index = ": the last to finish writes the index s.h5"
    out = capsys.readouterr().out
    assert re.fullmatch(rf"{re.escape(wrote)} \(\d+\.\d s\); {re.escape(note + index)}\n", out)


def test_shards_that_disagree_fail_the_run_that_did_not_regenerate_in_place(
    tmp_path, monkeypatch, capsys
):
    """A shard job given another seed (no --overwrite) exited 0, so an afterok job ran and found
    no dataset: it exits 2, the wrote line on stdout, the reason as an error on stderr."""
    monkeypatch.chdir(tmp_path)
    run = ["generate", "heat", "--n", "2", "--out", "s.h5", "--num-shards", "2", "--quiet", *HEAT]
    assert main([*run, "--shard", "0", "--seed", "5"]) == 0
    capsys.readouterr()
    assert main([*run, "--shard", "1"]) == 2
    captured = capsys.readouterr()
    assert re.fullmatch(r"wrote s\.shard-001-of-002\.h5 \(\d+\.\d s\)\n", captured.out)
    assert captured.err == (
        "physml generate: error: index 's.h5' not written: shards disagree: "
        "'s.shard-001-of-002.h5' vs 's.shard-000-of-002.h5': seed 0 vs 5; the shard files are "
        "kept: generate those that differ again with the same settings (pass --overwrite), and "
        "the last to finish writes the index\n"
    )
    assert not Path("s.h5").exists()
    assert Path("s.shard-001-of-002.h5").exists()
    assert main([*run, "--shard", "1"]) == 2  # run again: kept, and still no index
    assert "was already written" in capsys.readouterr().out
    assert not Path("s.h5").exists()


def test_a_dataset_regenerated_in_place_says_its_old_index_was_removed(
    tmp_path, monkeypatch, capsys
):
    """With --overwrite the shards meet the old ones until the last: exit 0, and the wrote line
    says the old index, which stayed on disk before, was removed; the last shard writes it."""
    monkeypatch.chdir(tmp_path)
    run = ["generate", "heat", "--n", "2", "--out", "s.h5", "--num-shards", "2", "--quiet", *HEAT]
    for shard in ("0", "1"):
        assert main([*run, "--shard", shard]) == 0
    capsys.readouterr()
    assert main([*run, "--shard", "0", "--seed", "5", "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.endswith(
        "s); index 's.h5' not written: shards disagree: 's.shard-001-of-002.h5' vs "
        "'s.shard-000-of-002.h5': seed 0 vs 5; the old index 's.h5' was removed; the shard files "
        "are kept: generate those that differ again with the same settings (pass --overwrite), "
        "and the last to finish writes the index\n"
    )
    assert not Path("s.h5").exists()
    assert main([*run, "--shard", "1", "--seed", "5", "--overwrite"]) == 0
    assert capsys.readouterr().out.endswith("; index s.h5 written\n")
    assert Path("s.h5").exists()


def test_a_shard_regenerated_with_another_grid_gets_no_index(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = ["generate", "heat", "--n", "2", "--out", "s.h5", "--num-shards", "2", "--quiet"]
    for shard in ("0", "1"):
        assert main([*run, *HEAT, "--shard", shard]) == 0
    Path("s.h5").unlink()
    capsys.readouterr()
    assert main([*run, "--nx", "33", "--nt", "3", "--shard", "0", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "; index 's.h5' not written: shards disagree: " in out
    assert "nx 17 vs 33; u per-sample shape (3, 17) vs (3, 33); " in out
    assert not Path("s.h5").exists()


def test_a_finished_generate_rerun_with_the_same_arguments_keeps_the_file_and_exits_0(
    tmp_path, monkeypatch, capsys
):
    """A requeued job rerunning `generate ... && train ...`: the file already holding the
    request is kept untouched (no room asked for it on disk), one with other settings refused,
    naming them; the same for a shard after its index was written."""
    monkeypatch.chdir(tmp_path)
    run = ["generate", "heat", "--n", "2", "--quiet", *HEAT]
    sharded = [*run, "--out", "s.h5", "--num-shards", "2"]
    assert main([*run, "--out", "x.h5"]) == 0
    for shard in ("0", "1"):
        assert main([*sharded, "--shard", shard]) == 0
    before = (Path("x.h5").read_bytes(), Path("x.h5").stat().st_mtime_ns)
    capsys.readouterr()
    _disk(monkeypatch, 0)
    assert main([*run, "--out", "x.h5"]) == 0
    assert re.fullmatch(r"x\.h5 was already written \(\d+\.\d s\)\n", capsys.readouterr().out)
    assert (Path("x.h5").read_bytes(), Path("x.h5").stat().st_mtime_ns) == before
    assert main([*sharded, "--shard", "0"]) == 0
    assert capsys.readouterr().out.startswith("s.shard-000-of-002.h5 was already written (")
    assert main([*run, "--out", "x.h5", "--seed", "1", "--nx", "9"]) == 2
    assert capsys.readouterr().err == (
        "physml generate: error: out: 'x.h5' already exists and holds another dataset (seed was "
        "0, now 1; settings.nx was 17, now 9); pass --overwrite to replace it\n"
    )


def test_a_data_file_failing_its_checksum_is_named_by_its_flag_and_array(
    tmp_path, monkeypatch, capsys
):
    from damage import flip_a_bit_of_the_first_chunk

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "2", "--out", "x.h5", "--quiet", *HEAT]) == 0
    flip_a_bit_of_the_first_chunk("x.h5", "x")
    assert main(TRAIN_R) == 2
    assert re.fullmatch(
        r"physml train: error: --data: 'x\.h5' is damaged: its array 'x' failed its checksum "
        r"\(.*filter.*\); generate or copy it again\n",
        capsys.readouterr().err,
    )


def _stopped_before_the_index(*args, **kwargs):
    raise KeyboardInterrupt


def test_a_shard_stopped_before_the_index_says_so_and_a_rerun_writes_it(
    tmp_path, monkeypatch, capsys
):
    import physml.data.generate as generate_module

    monkeypatch.chdir(tmp_path)
    run = ["generate", "heat", "--n", "2", "--out", "s.h5", "--num-shards", "2", "--quiet", *HEAT]
    write_index = generate_module._write_index
    monkeypatch.setattr(generate_module, "_write_index", _stopped_before_the_index)
    assert main([*run, "--shard", "0"]) == 130
    assert capsys.readouterr().err == (
        "\nphysml generate: interrupted after s.shard-000-of-002.h5 was written; waiting for "
        "shard(s) 1 of 2: the last to finish writes the index s.h5\n"
    )
    assert main([*run, "--shard", "1"]) == 130
    assert capsys.readouterr().err == (
        "\nphysml generate: interrupted after s.shard-001-of-002.h5 was written, before the index "
        "s.h5; rerunning the same command writes the index\n"
    )
    monkeypatch.setattr(generate_module, "_write_index", write_index)
    assert main([*run, "--shard", "1"]) == 0
    assert re.fullmatch(
        r"s\.shard-001-of-002\.h5 was already written \(\d+\.\d s\); index s\.h5 written\n",
        capsys.readouterr().out,
    )
    assert Path("s.h5").is_file()
