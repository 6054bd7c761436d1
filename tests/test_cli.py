"""The command line: list, generate, run, demo — the summary they print and the index they write."""

import argparse
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import physml.cli
from pdes import problems
from physml import tasks
from physml.cli import build_parser, main
from physml.data import generate_dataset


def test_list_names_recipes_and_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("heat", "burgers", "burgers-dirichlet", "wave", "stokes", "diffusion", "pme"):
        assert f"  {name} " in out
    assert "verify" in out


def test_version_prints_the_package_version(capsys):
    import physml

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"physml {physml.__version__}"


@pytest.mark.parametrize("columns", [60, 100, 200])
def test_list_aligns_and_wraps_descriptions(monkeypatch, capsys, columns):
    monkeypatch.setenv("COLUMNS", str(columns))  # shutil.get_terminal_size reads it first
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PDE recipes") and "tasks (physml run TASK):" in lines
    entries = [line for line in lines if line.startswith("  ") and not line.startswith("   ")]
    continuations = [line for line in lines if line.startswith("   ")]
    names = [line.split()[0] for line in entries]
    assert {"heat", "cavity", "verify", "boon-burgers-periodic"} <= set(names)
    column = 2 + max(len(name) for name in names) + 2
    for line in entries:  # every description starts at the same column, in both sections
        assert line[column - 2 : column] == "  " and line[column] != " ", line
    for line in continuations:  # wrapped lines sit under the description column
        assert len(line) - len(line.lstrip()) == column, line
    assert continuations  # the long recipe descriptions did wrap
    assert all(len(line) <= max(columns, column + 20) for line in lines)


def test_generate_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "heat.h5"
    args = ["generate", "heat", "--n", "3", "--out", str(out), "--nx", "17", "--nt", "3"]
    assert main([*args, "--seed", "5", "--quiet"]) == 0
    with h5py.File(out) as f:
        assert f["u"].shape == (3, 3, 17)
        assert f.attrs["pde"] == "heat" and f.attrs["seed"] == 5
    assert "wrote" in capsys.readouterr().out
    assert main([*args, "--quiet"]) == 2  # exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--quiet", "--overwrite"]) == 0


def test_generate_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "heat", "--n", "2", "--out", str(tmp_path / "x.h5"), "--nx", "ten"])
    assert "invalid int value" in capsys.readouterr().err
    code = main(["generate", "heat", "--n", "0", "--out", str(tmp_path / "x.h5"), "--quiet"])
    assert code == 2 and "n must be an integer >= 1" in capsys.readouterr().err
    code = main(["generate", "heat", "--n", "2", "--out", str(tmp_path / "x.h5"), "--kappa", "-1"])
    assert code == 2 and "kappa" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


SMALL = {
    "diffusion": dict(nx=11, nt=3),
    "pme": dict(nx=11, nt=3),
    "stefan": dict(nx=11, nt=3),
    "heat": dict(nx=9, nt=3),
    "burgers": dict(nx=16, nt=3),
    "burgers-dirichlet": dict(nx=17, nt=3),
    "wave": dict(nx=16, nt=3),
    "stokes": dict(nx=9, nt=3),
    "cavity": dict(nx=9, nt=3, t_end=0.1),
    "navier-stokes": dict(nx=8, nt=3, t_end=0.1),
    "ns-tracer": dict(nx=8, nt=3, t_end=0.1),
    "ns-tracer-source": dict(nx=8, nt=3, t_end=0.1),
    "nbody-digits": dict(frames=4, size=16, digits=2),
    "moving-digits": dict(frames=4, size=16, digits=2),
}


def test_every_recipe_declares_the_fields_it_outputs():
    """The generate command's memory and disk checks count the fields a recipe declares."""
    built_in = [
        name
        for name, problem in problems.registry().items()
        if type(problem).__module__.startswith(("pdes.", "physml."))
    ]
    assert sorted(built_in) == sorted(SMALL)
    for name in built_in:
        problem = problems.get(name)
        settings = problem.settings(**SMALL[name])
        batch = problem.generate([3, 4], settings)
        assert problem.sample_shape(settings) == tuple(batch.u.shape[1:]), name
        shapes = {key: tuple(value.shape[1:]) for key, value in batch.fields.items()}
        assert problem.field_shapes(settings) == shapes, name


@pytest.mark.parametrize("pde", ["navier-stokes", "cavity", "ns-tracer-source"])
def test_generate_asks_for_disk_room_for_u_and_the_fields(tmp_path, capsys, monkeypatch, pde):
    reference = generate_dataset(pde, tmp_path / "reference.h5", n=4, progress=False, **SMALL[pde])
    with h5py.File(reference) as f:
        u_bytes = f["u"].nbytes
        stored = u_bytes + sum(item.nbytes for item in f["fields"].values())
    assert stored >= 3 * u_bytes  # vx and vy are as large as u
    options = [f"--{key.replace('_', '-')}={value}" for key, value in SMALL[pde].items()]
    args = ["generate", pde, "--n", "4", "--out", str(tmp_path / "x.h5"), "--quiet", *options]
    usage = physml.cli.shutil.disk_usage(tmp_path)

    for free, code in ((2 * stored - 1, 2), (2 * stored + 1, 0)):  # chunks and file: twice
        monkeypatch.setattr(
            physml.cli.shutil, "disk_usage", lambda _, free=free: usage._replace(free=free)
        )
        assert main(args) == code, free
        err = capsys.readouterr().err
        if code:
            assert "n: 4 samples of shape" in err and "with fields vx, vy" in err, err
            assert not (tmp_path / "x.h5").exists()
    with h5py.File(tmp_path / "x.h5") as f:
        assert f["u"].nbytes + sum(item.nbytes for item in f["fields"].values()) == stored


class _Index(HTMLParser):
    """The links, image sources and captions of an index.html."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.captions, self._in_caption = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])
        self._in_caption = tag == "figcaption"

    def handle_data(self, data):
        if self._in_caption:
            self.captions.append(data)
            self._in_caption = False


def _index(folder: Path) -> _Index:
    parser = _Index()
    parser.feed((folder / "index.html").read_text(encoding="utf-8"))
    return parser


def test_demo_ends_with_the_targets_summary_and_an_index_of_its_figures(tmp_path, capsys):
    assert main(["demo", "--tasks", "verify", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    cases = ("heat-neumann", "burgers-periodic-time", "gpme-stefan", "stokes", "wave-neumann")
    for case in cases:
        assert case in out
        assert (tmp_path / "verify" / f"{case}-toy.png").stat().st_size > 10_000
    # measurements once (no blank target column: none of them has a target), then the targets
    measured, summary = out.split("\n\n")[:2]
    assert measured.splitlines()[0].split() == ["task", "case", "metric", "value"]
    assert summary.splitlines()[0].split() == ["task", "case", "metric", "value", "target", "met"]
    judged = [line for line in summary.splitlines()[2:] if line.startswith("verify ")]
    assert len(judged) >= len(cases) and all(line.endswith("✓") for line in judged)
    assert f"{len(judged)} of {len(judged)} targets met" in out
    for line in judged:  # each target appears once, in the summary only
        assert out.count(line.split("  ")[0] + "  ") >= 1 and line not in measured
    assert "✗" not in out
    # index.html: every PNG written, by a relative link, with a caption of its own
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    index = _index(tmp_path)
    assert sorted(index.images) == sorted(index.links) == written
    assert len(index.captions) == len(written)
    for path, caption in zip(sorted(index.images), index.captions, strict=True):
        stem = Path(path).stem
        assert caption.startswith(f"{stem}: ") and "exact solution" in caption
    assert f"{len(judged)} of {len(judged)} targets met" in (tmp_path / "index.html").read_text()


@pytest.mark.parametrize("command", [["run", "nope"], ["demo", "--tasks", "verify", "nope"]])
def test_unknown_task_is_an_error_before_any_folder_is_made(tmp_path, capsys, command):
    out = tmp_path / "results"
    assert main([*command, "--out", str(out)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert not out.exists()


def test_run_task_help_describes_that_task(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "verify", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: physml run verify ")
    assert " ".join(tasks.get("verify").description.split()) in " ".join(out.split())
    assert "--size" in out and "--out" in out

    with pytest.raises(SystemExit):
        main(["run", "--help"])  # before a task's name: the help of `physml run`
    out = capsys.readouterr().out
    words = " ".join(out.split())
    assert words.startswith("usage: physml run [-h]") and "physml run TASK --help" in words
    assert " ".join(tasks.get("verify").description.split()) not in words

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "nope", "-h"])
    assert exit_info.value.code == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_a_task_name_is_registered_once():
    assert "verify" in tasks.registry()  # the built-in tasks loaded, whatever ran before
    task = tasks.Task("verify", "another", run=lambda context: [])
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(task)


def test_format_table_aligns_columns_and_leaves_out_targets_and_blank_columns():
    rows = [
        tasks.Row("a", "case-1", "m", 1.5, ">= 1", True),
        tasks.Row("bb", "case-22", "m", 2e-9),
        tasks.Row("ccc", "z", "m", 3.0),
    ]
    lines = tasks.format_table(rows).splitlines()
    assert len(lines) == 4 and lines[1].startswith("----")  # the judged row is not a measurement
    assert lines[0].split() == ["task", "case", "metric", "value"]  # no blank target column
    assert lines[2].index("case-22") == lines[3].index(" z ") + 1 == lines[0].index("case")
    assert "2e-09" in lines[2]
    with_target = tasks.format_table([*rows, tasks.Row("d", "c", "m", 0.5, "< 1 at full size")])
    assert with_target.splitlines()[-1].endswith("< 1 at full size")
    assert tasks.format_table(rows[:1]) == ""


def test_format_summary_marks_each_target_and_counts_them():
    rows = [
        tasks.Row("a", "c", "error", 1e-9, "<= 1e-6", True),
        tasks.Row("a", "c", "order", 0.5, ">= 1.6", False),
        tasks.Row("b", "c", "loss", 0.1),
        tasks.Row("b", "c", "ratio", 0.9, "< 1 at full size"),
    ]
    text = tasks.format_summary(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["task", "case", "metric", "value", "target", "met"]
    assert lines[2].endswith("✓") and "<= 1e-6" in lines[2]
    assert lines[3].endswith("✗") and ">= 1.6" in lines[3]
    assert len(lines) == 6 and lines[-1] == "1 of 2 targets met"
    assert tasks.format_summary(rows, ("met", "MISSED")).splitlines()[3].endswith("MISSED")
    assert tasks.format_summary(rows[2:]) == "0 of 0 targets met"


def test_index_links_every_figure_with_its_caption(tmp_path):
    from physml.tasks.report import write_index

    for relative in ("t/a.png", "t/sub dir/b<1>.png", "other/c.png", "top.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"png")
    (tmp_path / "t" / "notes.txt").write_text("not a figure")
    task = tasks.Task("t", "a task", run=lambda context: [], figures={"t/*.png": "{name} & more"})
    rows = [tasks.Row("t", "c", "m", 1.0, "<= 2", True), tasks.Row("t", "c", "n", 3.0)]
    index = _index(write_index(tmp_path, rows, [task]).parent)
    assert index.images == index.links
    assert sorted(index.images) == ["other/c.png", "t/a.png", "t/sub%20dir/b%3C1%3E.png", "top.png"]
    captions = dict(zip(index.images, index.captions, strict=True))
    assert (
        captions["t/a.png"] == "a & more" and captions["t/sub%20dir/b%3C1%3E.png"] == "b<1> & more"
    )
    assert captions["other/c.png"] == "other/c.png"  # no pattern: the path stands in
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "1 of 1 targets met" in text and "✓" in text and "notes.txt" not in text
    assert re.search(r"<td>n</td><td class=\"number\">3</td>", text)


def test_probconserv_stefan_task_prints_its_table_and_writes_plots(tmp_path, capsys, monkeypatch):
    from physml.tasks import probconserv

    # the toy grid with a tenth of its training: the test checks the pipeline, not the fits (the
    # ProbConserv target, exact mass, holds for any trained model)
    toy = probconserv.SCALES["toy"]
    few_steps = dataclasses.replace(toy, train_steps=20, softc_steps=10)
    monkeypatch.setitem(probconserv.SCALES, "toy", few_steps)
    args = ["run", "probconserv-stefan", "--size", "toy", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "probconserv-stefan"
    table = (folder / "table-toy-seed0.txt").read_text()
    for method in ("anp", "softc-anp", "hardc-anp", "probconserv-anp"):
        assert f" {method} " in table
    assert "softc-anp" not in out  # the per-method details stay in the file, printed once
    assert out.count("|CE| probconserv-anp") == 2 and "✗" not in out
    assert "2 of 2 targets met" in out
    cases, plots = ("stefan-u0.6", "stefan-u0.5"), ("profile", "mass", "shock")
    figures = [f"{name}-{plot}" for name in cases for plot in plots]
    for figure in figures:
        assert (folder / f"{figure}-toy-seed0.png").stat().st_size > 5_000
    saved = {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").rglob("*.pt")}
    assert len({p.parent for p in saved}) == 2  # the ANP and the SoftC ANP
    assert main(args) == 0  # the second run reuses the cached checkpoints
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").rglob("*.pt")} == saved
    assert all(p.parent.parent.name == "toy-seed0" for p in saved)
    assert main([*args, "--seed", "1"]) == 0  # another seed trains apart, in the same folder
    assert len({p.parent for p in (tmp_path / "checkpoints" / "toy-seed1").rglob("*.pt")}) == 2
    for seed in (0, 1):  # and writes its results beside the first run's, which are kept
        results = json.loads((folder / f"results-toy-seed{seed}.json").read_text())
        assert results["setup"]["settings"]["seed"] == seed
        assert (folder / f"table-toy-seed{seed}.txt").is_file()
        for figure in figures:
            assert (folder / f"{figure}-toy-seed{seed}.png").is_file()


def test_boon_heat_task_meets_the_fluxes_and_saves_the_zoom(tmp_path, capsys):
    args = ["run", "boon-heat", "--size", "toy", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for method in ("fno", "fno-overwrite", "boon"):
        assert f"flux error {method} " in out
    assert "✗" not in out and "2 of 2 targets met" in out
    assert (tmp_path / "boon-heat" / "boundary-zoom-toy-seed0.png").stat().st_size > 5_000


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--bc", "bogus"], "bc"),
        (["--kappa", "-1"], "kappa"),
        (["--device", "bogus"], "device"),
        (["--device", "cuda:99"], "device"),
        (["--n", str(10**9)], "n: 1000000000 samples"),
        (["--n", "0"], "n must be"),
        (["--seed", "-1"], "seed"),
        (["--seed", str(2**63)], "seed must be a non-negative integer below 2**63"),
        (["--num-shards", "0"], "num_shards"),
        (["--shard", "3", "--num-shards", "2"], "shard"),
        (["--chunk", "0"], "chunk"),
    ],
)
def test_generate_checks_every_argument_before_writing(tmp_path, capsys, extra, named):
    args = ["generate", "heat", "--n", "2", "--out", str(tmp_path / "x.h5"), "--quiet"]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no dataset, no .partial work folder


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--device", "bogus"], "device"),
        (["--device", "cuda:99"], "device"),
        (["--seed", "-1"], "seed"),
        (["--seed", str(2**64)], "--seed"),
        (["--seed", str(2**62)], "--seed"),
        (["--out", ""], "--out"),
        (["--out", "FILE"], "out: "),
        (["--out", "FILE/below"], "out: "),
    ],
)
@pytest.mark.parametrize("command", [["run", "verify"], ["demo", "--tasks", "verify"]])
def test_run_and_demo_check_every_argument_before_writing(tmp_path, capsys, command, extra, named):
    (tmp_path / "FILE").write_text("a file, not a folder")
    extra = [str(tmp_path / e) if e.startswith("FILE") else e for e in extra]
    out = ["--out", str(tmp_path / "results")] if "--out" not in extra else []
    assert main([*command, *out, *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--device", "bogus"], "device"),
        (["--device", "cuda:99"], "device"),
        (["--steps", "0"], "steps"),
        (["--lr", "-1"], "lr"),
        (["--seed", "-1"], "seed"),
        (["--batch", str(10**9)], "batch"),
    ],
)
def test_train_checks_every_argument_before_writing(tmp_path, capsys, extra, named):
    data = tmp_path / "d.h5"
    args = ["generate", "heat", "--n", "4", "--nx", "17", "--nt", "5", "--out", str(data)]
    assert main([*args, "--quiet"]) == 0
    capsys.readouterr()
    train = ["train", "--data", str(data), "--model", "fno", "--task", "operator"]
    assert main([*train, "--out", str(tmp_path / "run"), *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_the_command_line_starts_without_the_fourier_layers_libraries():
    """neuralop (with the wandb and tensorly it imports) and scipy.optimize load on first use,
    not with ``physml``, its command line or the task registry (``physml list``); the FNO
    builders still resolve."""
    import subprocess
    import sys

    heavy = ("neuralop", "wandb", "tensorly", "scipy.optimize")
    code = (
        "import sys, physml, physml.cli, physml.models, physml.tasks\n"
        "physml.tasks.registry()\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
        "from physml.models import fast_fno\n"
        "print('neuralop' in sys.modules, hasattr(physml.models, 'no_such_model'),"
        " 'fast_fno' in dir(physml.models))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", "True False True"]


def _fake_tasks(monkeypatch, **runs) -> dict[str, list]:
    """Register toy tasks ``name=run``; returns the contexts each ran with."""
    seen = {name: [] for name in runs}
    for name, run in runs.items():

        def wrapped(context, name=name, run=run):
            seen[name].append(context)
            return run(context)

        task = tasks.Task(name=name.replace("_", "-"), description="a toy", run=wrapped)
        monkeypatch.setitem(tasks._TASKS, task.name, task)
    return seen


def _rows_of(name):
    return lambda context: [tasks.Row(name, "case", "score", 1.5, "<= 2", True)]


def _fails(error):
    def run(context):
        raise error

    return run


def test_each_run_keeps_its_rows_beside_the_other_runs(tmp_path, monkeypatch, capsys):
    def rows(context):
        return [
            tasks.Row("toy-a", "case", "score", float(context.seed), "<= 2", context.seed <= 2),
            tasks.Row("toy-a", "case", "blown", math.nan),
        ]

    _fake_tasks(monkeypatch, toy_a=rows)
    for seed in (1, 3):  # index.html keeps the last run's rows; the records keep both
        args = ["--size", "toy", "--seed", str(seed), "--out", str(tmp_path), "--quiet"]
        main(["run", "toy-a", *args])
    for seed in (1, 3):
        record = json.loads((tmp_path / "toy-a" / f"rows-toy-seed{seed}.json").read_text())
        assert record["settings"]["seed"] == seed and record["wall_s"] >= 0
        assert record["rows"][0] == {
            "task": "toy-a", "case": "case", "metric": "score", "value": float(seed),
            "target": "<= 2", "ok": seed <= 2,
        }  # fmt: skip
        assert record["rows"][1]["value"] is None  # NaN is not JSON
    capsys.readouterr()


def test_a_failing_task_keeps_the_report_of_the_tasks_before_it(tmp_path, monkeypatch, capsys):
    _fake_tasks(monkeypatch, toy_a=_rows_of("toy-a"), toy_bad=_fails(ValueError("boom")))
    (tmp_path / "index.html").write_text("an old, finished-looking index")
    args = ["demo", "--tasks", "toy-a", "toy-bad", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "toy-a" in captured.out and "1 of 1 targets met" in captured.out
    assert "incomplete: task 'toy-bad' failed: boom" in captured.out
    err = captured.err.strip().splitlines()
    assert err == ["physml demo: error: task 'toy-bad' failed: boom"]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Incomplete: task &#x27;toy-bad&#x27; failed: boom" in page
    assert "<td>toy-a</td>" in page and "1 of 1 targets met" in page
    # a run whose only task fails: no empty tables, the error line alone; the index says it
    assert main(["run", "toy-bad", "--out", str(tmp_path / "alone"), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "Incomplete" in (tmp_path / "alone" / "index.html").read_text(encoding="utf-8")


def test_an_unexpected_error_keeps_the_report_and_its_traceback(tmp_path, monkeypatch, capsys):
    _fake_tasks(monkeypatch, toy_a=_rows_of("toy-a"), toy_bug=_fails(KeyError("bug")))
    args = ["demo", "--tasks", "toy-a", "toy-bug", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 2  # a crash is an error, not a missed target (1)
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'bug'" in err
    assert (
        err.strip().splitlines()[-1] == "physml demo: error: task 'toy-bug' failed: KeyError: 'bug'"
    )
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Incomplete" in page and "<td>toy-a</td>" in page


@pytest.mark.parametrize("command", [["run", "toy-stop"], ["demo", "--tasks", "toy-stop"]])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys, command):
    _fake_tasks(monkeypatch, toy_stop=_fails(KeyboardInterrupt()))
    assert main([*command, "--out", str(tmp_path), "--quiet"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted; rerunning the same command resumes" in err[0]
    assert "Incomplete" in (tmp_path / "index.html").read_text(encoding="utf-8")


def _task_without_checkpoints(monkeypatch, name, run):
    task = tasks.Task(name=name, description="a toy", run=run, checkpoints=False)
    monkeypatch.setitem(tasks._TASKS, name, task)


@pytest.mark.parametrize(
    "command, hint",
    [
        (["run", "toy-stop"], "resumes from the checkpoints"),
        (["run", "toy-quick"], "starts over (this task saves no checkpoints)"),
        (
            ["demo", "--tasks", "toy-stop", "toy-quick"],
            "resumes toy-stop from its checkpoints and starts toy-quick over (it saves none)",
        ),
        (
            ["demo", "--tasks", "toy-stop", "toy-also", "toy-quick"],
            "resumes toy-stop, toy-also from their checkpoints and starts toy-quick over "
            "(it saves none)",
        ),
        (["demo", "--tasks", "toy-quick"], "starts over (this task saves no checkpoints)"),
    ],
    ids=["run-saving", "run-not-saving", "demo-mixed", "demo-mixed-several", "demo-not-saving"],
)
def test_ctrl_c_promises_a_resume_only_for_tasks_that_save_checkpoints(
    tmp_path, monkeypatch, capsys, command, hint
):
    _fake_tasks(monkeypatch, toy_stop=_fails(KeyboardInterrupt()), toy_also=_rows_of("toy-also"))
    _task_without_checkpoints(monkeypatch, "toy-quick", _fails(KeyboardInterrupt()))
    assert main([*command, "--out", str(tmp_path), "--quiet"]) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"physml {command[0]}: interrupted; rerunning the same command {hint}"


def test_the_builtin_tasks_say_whether_a_rerun_resumes():
    registry = tasks.registry()
    assert not registry["verify"].checkpoints
    assert not any(task.checkpoints for name, task in registry.items() if name.startswith("boon"))
    saving = ("earthformer-ns", "prediff-nbody", "conservation-forecast", "model-update")
    assert all(registry[name].checkpoints for name in saving)


def test_demo_runs_each_named_task_once_and_refuses_an_empty_list(tmp_path, monkeypatch, capsys):
    calls = _fake_tasks(monkeypatch, toy_a=_rows_of("toy-a"))
    out = ["--out", str(tmp_path / "results"), "--quiet"]
    assert main(["demo", "--tasks", "toy-a", "toy-a", "--seed", "3", *out]) == 0
    assert len(calls["toy_a"]) == 1
    page = (tmp_path / "results" / "index.html").read_text(encoding="utf-8")
    assert "size toy, seed 3, device cpu, physml " in page  # the run's settings, then the date
    capsys.readouterr()
    assert main(["demo", "--tasks", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tasks must name at least one task" in err[0]
    assert len(calls["toy_a"]) == 1


def test_the_report_prints_on_a_stdout_that_cannot_encode_its_signs(tmp_path, monkeypatch):
    import io
    import sys

    def run(context):
        return [
            tasks.Row("toy-signs", "case", "miss in σ", 0.5, "≥ 0.5 (full benchmark)"),
            tasks.Row("toy-signs", "case", "error", 1e-3, "≤ 1e-2 at ≥ 3×", True),
        ]

    _fake_tasks(monkeypatch, toy_signs=run)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["run", "toy-signs", "--out", str(tmp_path), "--quiet"]) == 0
    stdout.flush()
    text = stdout.buffer.getvalue().decode("cp1252")
    assert ">= 0.5 (full benchmark)" in text and "<= 1e-2 at >= 3x" in text
    assert "miss in sigma" in text and "1 of 1 targets met" in text and "met" in text


def test_a_failure_and_the_folder_print_on_a_stdout_that_cannot_encode_them(
    tmp_path, monkeypatch, capsys
):
    import io
    import sys

    _fake_tasks(monkeypatch, toy_a=_rows_of("toy-a"), toy_bad=_fails(ValueError("need x ≥ 3")))
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)
    out = tmp_path / "résultats"
    assert main(["demo", "--tasks", "toy-a", "toy-bad", "--out", str(out), "--quiet"]) == 2
    stdout.flush()
    text = stdout.buffer.getvalue().decode("ascii")
    assert "incomplete: task 'toy-bad' failed: need x >= 3" in text
    assert "figures and files:" in text and "r?sultats" in text
    assert "task 'toy-bad' failed: need x ≥ 3" in capsys.readouterr().err  # the real error


def test_a_task_whose_rows_cannot_be_saved_keeps_the_report_of_the_tasks_before_it(
    tmp_path, monkeypatch, capsys
):
    save = tasks.save_rows

    def full_disk(context, name, rows, wall_s):
        if name == "toy-odd":
            raise OSError("no space left on device")
        return save(context, name, rows, wall_s)

    monkeypatch.setattr(tasks, "save_rows", full_disk)
    _fake_tasks(monkeypatch, toy_a=_rows_of("toy-a"), toy_odd=_rows_of("toy-odd"))
    assert main(["demo", "--tasks", "toy-a", "toy-odd", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "task 'toy-odd' failed writing its rows" in err
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Incomplete" in page and "<td>toy-a</td>" in page


def test_a_cpu_only_task_refuses_another_device(tmp_path, monkeypatch, capsys):
    from physml import cli

    monkeypatch.setattr(cli, "check_device", lambda device: device)  # as if CUDA were there
    calls = _fake_tasks(monkeypatch, toy_cpu=_rows_of("toy-cpu"))
    monkeypatch.setitem(
        tasks._TASKS, "toy-cpu", dataclasses.replace(tasks._TASKS["toy-cpu"], cpu_only=True)
    )
    out = tmp_path / "results"
    assert main(["run", "toy-cpu", "--device", "cuda", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device" in err[0] and "CPU only" in err[0] and "'cuda'" in err[0]
    takers = err[0].split("(the tasks that take 'cuda': ")[1].rstrip(")").split(", ")
    assert "earthformer-ns" in takers and "toy-cpu" not in takers and "verify" not in takers
    assert calls == {"toy_cpu": []} and not out.exists()
    assert main(["run", "toy-cpu", "--device", "cpu", "--out", str(out), "--quiet"]) == 0


def test_demo_runs_the_cpu_only_tasks_on_the_cpu_and_the_others_on_the_device(
    tmp_path, monkeypatch, capsys
):
    """`demo --device cuda` refused every task when one ran on the CPU only: now that one runs
    on the CPU, the run says so in one line, and its rows record the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    calls = _fake_tasks(monkeypatch, toy_gpu=_rows_of("toy-gpu"), toy_cpu=_rows_of("toy-cpu"))
    monkeypatch.setitem(
        tasks._TASKS, "toy-cpu", dataclasses.replace(tasks._TASKS["toy-cpu"], cpu_only=True)
    )
    argv = ["demo", "--tasks", "toy-gpu", "toy-cpu", "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--device", "cuda"]) == 0
    assert [c.device for c in calls["toy_gpu"]] == ["cuda"]
    assert [c.device for c in calls["toy_cpu"]] == ["cpu"]
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "CPU" in line] == [
        "on the CPU (they run on the CPU only): toy-cpu"
    ]
    for name, device in (("toy-gpu", "cuda"), ("toy-cpu", "cpu")):
        record = json.loads((tmp_path / name / "rows-toy-seed0.json").read_text())
        assert record["settings"]["device"] == device
    assert main([*argv, "--device", "cpu"]) == 0
    assert "CPU only" not in capsys.readouterr().out


def test_a_target_missed_by_a_numpy_or_torch_verdict_fails_the_run(tmp_path, monkeypatch, capsys):
    def rows(context):  # np.False_ and a 0-d tensor are not the bool False
        return [
            tasks.Row("toy-a", "numpy", "score", 3.0, "<= 2", np.float64(3.0) <= 2),
            tasks.Row("toy-a", "torch", "score", 3.0, "<= 2", torch.tensor(3.0) <= 2),
        ]

    _fake_tasks(monkeypatch, toy_a=rows)
    assert main(["run", "toy-a", "--size", "toy", "--out", str(tmp_path), "--quiet"]) == 1
    record = json.loads((tmp_path / "toy-a" / "rows-toy-seed0.json").read_text())
    assert [row["ok"] for row in record["rows"]] == [False, False]
    capsys.readouterr()


@pytest.mark.parametrize(
    "value",
    [np.float32(1.5), torch.tensor(1.5), np.int64(2), True],
    ids=["f32", "tensor", "i64", "bool"],
)
def test_a_row_value_of_numpy_or_torch_is_kept_as_a_float(value):
    row = tasks.Row("t", "c", "m", value)
    assert type(row.value) is float and row.value == float(value)
    json.dumps(dataclasses.asdict(row))  # as save_rows writes it


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _scripts_by_hand(folder: Path) -> dict[str, str]:
    """The benchmark scripts of ``folder`` found without physml: the files with a top-level
    ``def main(`` and ``if __name__ == "__main__":``, each with its docstring's first line."""
    scripts = {}
    for path in folder.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"^def main\(", text, re.M) and re.search(
            r'^if __name__ == "__main__":', text, re.M
        ):
            scripts[path.stem] = text.removeprefix('"""').split("\n")[0].removesuffix('"""')
    return scripts


def test_bench_lists_the_benchmark_scripts_with_their_docstrings(monkeypatch, capsys):
    expected = _scripts_by_hand(BENCHMARKS)
    assert {"boon", "solvers", "probconserv_gpme"} <= set(expected)
    assert not {"common", "nbody_forecasting"} & set(expected)  # modules of shared pieces
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: one line a script
    assert main(["bench"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("benchmark scripts of ")
    listed = dict(re.fullmatch(r"  (\S+) +(.*)", line).groups() for line in lines[1:])
    assert listed == expected
    assert list(listed) == sorted(expected)


def test_bench_runs_a_benchmark_with_its_arguments(capfd):
    assert main(["bench", "exact_mass_floor", "--help"]) == 0
    out = capfd.readouterr().out
    assert out.startswith("usage: exact_mass_floor.py [-h] [--quick]")
    assert "How far the exact GPME solutions miss their analytic mass" in out


FAKE_SCRIPT = '''"""A fake benchmark: prints its Python, folder and arguments, exits {status}."""
import os, sys


def main():
    print(sys.executable, os.getcwd(), sys.argv[1:], sep="\\n")
    {ending}


if __name__ == "__main__":
    raise SystemExit(main())
'''


PHYSML_PYPROJECT = '[build-system]\nrequires = ["setuptools"]\n\n[project]\nname = "physml"\n'
"""A pyproject.toml that makes its folder a physml checkout."""


def _fake_benchmarks(folder: Path) -> Path:
    """A benchmarks folder: scripts ``exits3`` and ``killed`` (SIGTERM), a module of pieces with
    a ``main`` but no ``__main__`` guard, a script without ``main`` and a file that does not
    parse; beside it the pyproject.toml of a physml checkout."""
    folder.mkdir(parents=True)
    (folder.parent / "pyproject.toml").write_text(PHYSML_PYPROJECT)
    (folder / "exits3.py").write_text(FAKE_SCRIPT.format(status=3, ending="return 3"))
    ending = "os.kill(os.getpid(), 15)"
    (folder / "killed.py").write_text(FAKE_SCRIPT.format(status="by SIGTERM", ending=ending))
    (folder / "pieces.py").write_text('"""Pieces."""\n\n\ndef main():\n    pass\n')
    (folder / "guarded.py").write_text('"""No main."""\nif __name__ == "__main__":\n    pass\n')
    (folder / "broken.py").write_text("def main(:\n")
    return folder


def test_bench_passes_the_arguments_and_the_exit_status_through(tmp_path, monkeypatch, capfd):
    folder = _fake_benchmarks(tmp_path / "benchmarks")
    monkeypatch.setattr(physml.cli, "BENCHMARKS", folder)
    monkeypatch.chdir(tmp_path)
    scripts = physml.cli.benchmark_scripts()
    broken = scripts.pop("broken")  # listed, saying why it cannot be told a script or not
    assert broken.startswith("(cannot be parsed: ") and "line 1" in broken, broken
    assert scripts == {
        "exits3": "A fake benchmark: prints its Python, folder and arguments, exits 3.",
        "killed": "A fake benchmark: prints its Python, folder and arguments, exits by SIGTERM.",
    }
    given = ["--seed", "1", "--", "-x", "a b"]
    assert main(["bench", "exits3", *given]) == 3
    assert capfd.readouterr().out.splitlines() == [sys.executable, str(tmp_path), repr(given)]
    assert main(["bench", "exits3.py"]) == 3  # the file's name names it too
    capfd.readouterr()
    if hasattr(os, "kill") and os.name == "posix":
        assert main(["bench", "killed"]) == 128 + 15  # as a shell says a signal's end


def test_bench_gives_the_script_an_empty_input(tmp_path, monkeypatch, capfd):
    """Outside the terminal's foreground group a read of the terminal would stop the script for
    good (SIGTTIN): its standard input is empty instead, whatever physml's is."""
    folder = _fake_benchmarks(tmp_path / "benchmarks")
    reads = '"""Reads its input."""\nimport sys\n\n\ndef main():\n    print(repr(sys.stdin.read()))'
    (folder / "reads.py").write_text(reads + '\n\n\nif __name__ == "__main__":\n    main()\n')
    monkeypatch.setattr(physml.cli, "BENCHMARKS", folder)
    read, write = os.pipe()
    os.write(write, b"typed")
    os.close(write)
    monkeypatch.setattr(sys, "stdin", os.fdopen(read))
    with os.fdopen(os.dup(0)) as kept:
        os.dup2(read, 0)
        try:
            assert main(["bench", "reads"]) == 0
        finally:
            os.dup2(kept.fileno(), 0)
    assert capfd.readouterr().out.strip() == "''"


STOPS_SCRIPT = '''"""Records its process id and the stops it gets; exits 3 after {count}."""
import os, signal, time

LOG = {log!r}


def main():
    got = []

    def note(signum, frame):
        got.append(signal.Signals(signum).name)
        with open(LOG, "a") as log:
            log.write(got[-1] + "\\n")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, note)
    with open(LOG + ".pid", "w") as pid:
        pid.write(str(os.getpid()))
    with open(LOG, "a") as log:
        log.write("ready\\n")
    end = time.monotonic() + 60  # the test's safety net, not reached where it passes
    while time.monotonic() < end:
        if len(got) >= {count}:
            return 3
        time.sleep(0.01)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
'''

BENCH_DRIVER = """import signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whoever starts it
import physml.cli as cli
cli.BENCHMARKS = Path(sys.argv[1])
sys.exit(cli.main(["bench", sys.argv[2]]))
"""


def _log_lines(log: Path, until: str, process: subprocess.Popen) -> list[str]:
    """The lines of ``log`` once one is ``until``, or once ``process`` has ended, or after a
    minute: waited for, not timed."""
    for _ in range(6000):
        lines = log.read_text().splitlines() if log.exists() else []
        if until in lines or process.poll() is not None:
            break
        time.sleep(0.01)
    return lines


def _stops_benchmark(tmp_path: Path, count: int) -> tuple[Path, Path]:
    """A benchmarks folder whose script ``stops`` logs the stops it gets to the returned log
    and exits 3 after ``count`` of them."""
    folder = _fake_benchmarks(tmp_path / "benchmarks")
    log = tmp_path / "signals.log"
    (folder / "stops.py").write_text(STOPS_SCRIPT.format(log=str(log), count=count))
    return folder, log


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    "stops",
    [
        # a stop sent to physml alone (not its process group) reaches the script, and so does a
        # second one arriving while the first is handled; physml ends with the script's status
        [signal.SIGINT, signal.SIGTERM],
        [signal.SIGTERM, signal.SIGINT],
        [signal.SIGTERM],
        [signal.SIGHUP],
        [signal.SIGINT],
        # a second Ctrl-C is passed on as the first; nothing is sent of physml's own accord
        [signal.SIGINT, signal.SIGINT],
    ],
)
def test_bench_passes_every_stop_on_to_the_script_and_ends_with_it(tmp_path, stops):
    folder, log = _stops_benchmark(tmp_path, count=len(stops))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    physml_process = subprocess.Popen(
        [sys.executable, "-c", BENCH_DRIVER, str(folder), "stops"], env=environment, cwd=tmp_path
    )
    names = [signal.Signals(signum).name for signum in stops]
    try:
        assert _log_lines(log, "ready", physml_process) == ["ready"]
        for sent, signum in enumerate(stops, 1):
            physml_process.send_signal(signum)  # to physml alone, as `kill PID` or a runner does
            for _ in range(6000):  # until the script has logged as many stops
                if len(log.read_text().splitlines()) > sent or physml_process.poll() is not None:
                    break
                time.sleep(0.01)
            assert log.read_text().splitlines() == ["ready", *names[:sent]]
        assert physml_process.wait(timeout=60) == 3
        assert log.read_text().splitlines() == ["ready", *names]
    finally:
        if physml_process.poll() is None:
            physml_process.kill()
            physml_process.wait()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_bench_passes_a_stop_sent_to_its_process_group_on_once(tmp_path):
    """``kill -INT -PGID``, coreutils ``timeout`` and job schedulers signal physml's process
    group: the script, in a group of its own, gets the stop once, from physml."""
    folder, log = _stops_benchmark(tmp_path, count=2)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    physml_process = subprocess.Popen(
        [sys.executable, "-c", BENCH_DRIVER, str(folder), "stops"],
        env=environment,
        cwd=tmp_path,
        start_new_session=True,  # a group of physml's own, not the test's
    )
    try:
        assert _log_lines(log, "ready", physml_process) == ["ready"]
        script_pid = int(Path(f"{log}.pid").read_text())
        assert os.getpgid(script_pid) == script_pid  # not in the group the stop is sent to
        os.killpg(physml_process.pid, signal.SIGINT)
        _ends_after_one_sigint_and_a_sigterm(physml_process, log)
    finally:
        _killed_if_running(physml_process)


def _ends_after_one_sigint_and_a_sigterm(physml_process, log: Path) -> None:
    """The script got exactly one SIGINT; a SIGTERM to physml ends it (its status 3), and its log
    holds those two stops and no other."""
    assert _log_lines(log, "SIGINT", physml_process) == ["ready", "SIGINT"]
    physml_process.send_signal(signal.SIGTERM)  # ends the script after one more stop
    assert physml_process.wait(timeout=60) == 3
    assert log.read_text().splitlines() == ["ready", "SIGINT", "SIGTERM"]


def _killed_if_running(physml_process) -> None:
    """A failed test leaves neither physml nor its script behind."""
    if physml_process.poll() is None:
        os.killpg(physml_process.pid, signal.SIGKILL)
        physml_process.wait()


PTY_DRIVER = (
    """import fcntl, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # its terminal: the one the test types Ctrl-C into
"""
    + BENCH_DRIVER
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux terminals")
def test_bench_passes_a_ctrl_c_typed_in_the_terminal_on_once(tmp_path):
    """A Ctrl-C typed in the terminal signals its foreground process group, physml's; the
    script runs in a group of its own, out of the Ctrl-C's way, and gets it once, from physml."""
    import pty

    folder, log = _stops_benchmark(tmp_path, count=2)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    terminal, its_end = pty.openpty()
    physml_process = subprocess.Popen(
        [sys.executable, "-c", PTY_DRIVER, str(folder), "stops"],
        env=environment,
        cwd=tmp_path,
        stdin=its_end,
        stdout=its_end,
        stderr=its_end,
        start_new_session=True,
    )
    os.close(its_end)
    try:
        assert _log_lines(log, "ready", physml_process) == ["ready"]
        script_pid = int(Path(f"{log}.pid").read_text())
        assert os.tcgetpgrp(terminal) == physml_process.pid  # the foreground group: physml's
        assert os.getpgid(script_pid) == script_pid  # the script's own
        os.write(terminal, b"\x03")  # Ctrl-C, typed
        _ends_after_one_sigint_and_a_sigterm(physml_process, log)
    finally:
        _killed_if_running(physml_process)
        os.close(terminal)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_bench_terminates_and_reaps_the_script_when_its_wait_fails(tmp_path, monkeypatch):
    """An exception while physml waits (here the wait itself failing once) ends the script with
    a SIGTERM, waits for it and is raised; the stop handlers from before are back."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("stop handlers are set on the main thread only")
    folder, log = _stops_benchmark(tmp_path, count=1)
    started = []
    wait = subprocess.Popen.wait

    def fails_once(process, *args, **kwargs):
        if not started:
            started.append(process)
            assert _log_lines(log, "ready", process) == ["ready"]
            raise RuntimeError("the wait failed")
        return wait(process, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "wait", fails_once)
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {signum: signal.getsignal(signum) for signum in stops}
    with pytest.raises(RuntimeError, match="the wait failed"):
        physml.cli._run_passing_stops_on([sys.executable, str(folder / "stops.py")])
    (script,) = started
    assert script.returncode == 3  # its end after the SIGTERM, waited for
    assert log.read_text().splitlines() == ["ready", "SIGTERM"]
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(script.pid, os.WNOHANG)
    assert {signum: signal.getsignal(signum) for signum in stops} == handlers


def test_bench_refuses_a_benchmarks_folder_outside_a_physml_checkout(tmp_path, monkeypatch, capfd):
    """In an installed physml, ``site-packages/benchmarks`` may be another package's: not run."""
    folder = _fake_benchmarks(tmp_path / "site-packages" / "benchmarks")
    monkeypatch.setattr(physml.cli, "BENCHMARKS", folder)
    ship = (
        ": the benchmark scripts ship with the source repository, not with the installed "
        "package; clone the repository, install it with `pip install -e .` and run `physml "
        "bench` there (or `python benchmarks/NAME.py`)\n"
    )
    refused = (
        f"physml bench: error: {folder} is not the benchmarks folder of a physml source checkout"
        f" (no pyproject.toml of physml beside it){ship}"
    )
    for pyproject in (None, '[project]\nname = "otherpkg"\n', "[tool.physml]\nname = 'physml'\n"):
        (folder.parent / "pyproject.toml").unlink(missing_ok=True)
        if pyproject is not None:
            (folder.parent / "pyproject.toml").write_text(pyproject)
        for command in (["bench"], ["bench", "exits3"]):
            assert main(command) == 2
            assert capfd.readouterr() == ("", refused)
    (folder.parent / "pyproject.toml").write_text(PHYSML_PYPROJECT)
    assert main(["bench", "exits3"]) == 3  # beside physml's pyproject.toml: a checkout's


@pytest.mark.parametrize(
    "name, error",
    [
        (
            "bon",
            "no benchmark script 'bon' in {folder} (`physml bench` lists them); did you mean "
            "'boon'?",
        ),
        (
            "nothing_like_it",
            "no benchmark script 'nothing_like_it' in {folder} (`physml bench` lists them)",
        ),
        (
            "common",
            "benchmarks/common.py holds pieces the scripts share, not a benchmark script "
            "(`physml bench` lists them)",
        ),
    ],
)
def test_bench_refuses_a_name_that_is_not_a_benchmark_script(capfd, name, error):
    assert main(["bench", name]) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == f"physml bench: error: NAME: {error.format(folder=BENCHMARKS)}\n"


@pytest.mark.parametrize("command", [["bench"], ["bench", "boon", "--help"]])
def test_bench_without_the_benchmarks_folder_says_where_they_are(
    tmp_path, monkeypatch, capfd, command
):
    missing = tmp_path / "site-packages" / "benchmarks"
    monkeypatch.setattr(physml.cli, "BENCHMARKS", missing)
    assert main(command) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"physml bench: error: no benchmarks folder at {missing}: the benchmark scripts ship "
        "with the source repository, not with the installed package; clone the repository, "
        "install it with `pip install -e .` and run `physml bench` there (or `python "
        "benchmarks/NAME.py`)\n"
    )


@pytest.mark.parametrize(
    "value", [None, "1.5", torch.ones(2), np.complex128(1 + 2j), torch.tensor(1 + 2j), np.str_("1")]
)
def test_a_row_value_that_is_not_a_number_is_refused_by_name(value):
    with pytest.raises(TypeError, match=r"Row.value of 't' / 'c' / 'm' must be a real number"):
        tasks.Row("t", "c", "m", value)


@pytest.mark.parametrize("command", [["list"], ["generate", "--help"], ["--help"]])
def test_output_an_ascii_console_cannot_encode_is_replaced_not_fatal(tmp_path, command):
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run(
        [sys.executable, "-m", "physml.cli", *command], capture_output=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.strip()


def test_index_counts_marks_and_formats_the_rows_built_by_hand(tmp_path):
    from physml.tasks.report import write_index

    rows = [
        tasks.Row("t", "c", "a", 1.23456, "<= 2", True),
        tasks.Row("t", "c", "b", 0.5, ">= 1", False),
        tasks.Row("t", "c", "m", 3.0),
    ]
    text = write_index(tmp_path, rows, []).read_text(encoding="utf-8")
    assert "1 of 2 targets met" in text
    assert '<td class="number">1.235</td>' in text and '<td class="number">0.5</td>' in text
    assert text.count('<td class="met">✓</td>') == text.count('<td class="missed">✗</td>') == 1
    assert text.count("<table>") == 2 and "target (not judged)" not in text
    assert '<td>m</td><td class="number">3</td></tr>' in text  # no blank target cell

    only_measured = [tasks.Row("t", "c", "m", 3.0), tasks.Row("t", "c", "r", 0.9, "< 1 at full")]
    text = write_index(tmp_path, only_measured, []).read_text(encoding="utf-8")
    assert "0 of 0 targets met" in text and text.count("<table>") == 1
    assert "<th>target (not judged)</th>" in text and "<td>&lt; 1 at full</td>" in text


def test_index_groups_figures_by_task_folder_and_takes_the_first_matching_caption(tmp_path):
    from physml.tasks.report import caption, write_index

    for relative in ("t/a1.png", "t/sub/b.png", "top.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"png")
    first = tasks.Task("t", "", run=lambda c: [], figures={"t/a*": "A {name}", "t/*": "T {name}"})
    second = tasks.Task("u", "", run=lambda c: [], figures={"t/*": "U {name}"})
    assert caption("t/a1.png", [first, second]) == "A a1"
    assert caption("t/sub/b.png", [second, first]) == "U b"
    text = write_index(tmp_path, [], [first, second]).read_text(encoding="utf-8")
    assert "<p>3 figure(s);" in text
    headings = re.findall(r"<h3>(.*?)</h3>", text)
    assert headings == ["t", "."]
    section_t = text.split("<h3>t</h3>")[1].split("<h3>")[0]
    assert "t/a1.png" in section_t and "t/sub/b.png" in section_t


def test_index_states_the_run_settings_escaped(tmp_path):
    from pdes.problems import seed_scheme
    from physml.tasks.report import write_index

    context = tasks.Context(out=tmp_path, size="full", seed=7, device="cpu<&>")
    text = write_index(tmp_path, [], [], context=context).read_text(encoding="utf-8")
    assert "size full, seed 7, device cpu&lt;&amp;&gt;, physml " in text
    assert ", seed scheme seedsequence-mt19937</p>" in text
    with seed_scheme("torch-manual-seed"):
        text = write_index(tmp_path, [], [], context=context).read_text(encoding="utf-8")
    assert ", seed scheme torch-manual-seed</p>" in text
    assert "seed" not in write_index(tmp_path, [], []).read_text(encoding="utf-8")


def test_demo_help_describes_the_demo_and_its_tasks(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    words = " ".join(capsys.readouterr().out.split())
    assert words.startswith("usage: physml demo [-h]") and "toy size" in words
    in_demo = [name for name, task in tasks.registry().items() if task.in_demo]
    assert ", ".join(in_demo) in words and "boon-cavity" not in words.split("--tasks")[0]
    assert "outside the demo" in words and "--out" in words and "--seed" in words


def test_demo_parser_has_its_description_without_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    words = " ".join(subparsers.choices["demo"].format_help().split())
    assert "Run the demo tasks at toy size" in words and "outside the demo" in words
