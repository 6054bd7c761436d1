"""The command line: list, generate, run, demo — and the summary table they print."""

import h5py
import pytest

from physml import tasks
from physml.cli import main


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


def test_demo_prints_the_verification_table_and_saves_figures(tmp_path, capsys):
    assert main(["demo", "--tasks", "verify", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["task", "case", "metric", "value", "target", "ok"]
    for case in ("heat-neumann", "burgers-periodic-time", "gpme-stefan", "stokes", "wave-neumann"):
        assert case in out
        assert (tmp_path / "verify" / f"{case}.png").stat().st_size > 10_000
    assert " NO" not in out


def test_unknown_task_is_an_error(tmp_path, capsys):
    assert main(["run", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_a_task_name_is_registered_once():
    task = tasks.Task("verify", "another", run=lambda context: [])
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(task)


def test_format_table_aligns_columns():
    rows = [tasks.Row("a", "case-1", "m", 1.5, ">= 1", True), tasks.Row("bb", "c", "m", 2e-9)]
    lines = tasks.format_table(rows).splitlines()
    assert len(lines) == 4 and lines[1].startswith("----")
    assert lines[2].index("case-1") == lines[3].index("c ") == lines[0].index("case")
    assert lines[2].endswith("yes") and "2e-09" in lines[3]


def test_probconserv_stefan_task_prints_its_table_and_writes_plots(tmp_path, capsys):
    args = ["run", "probconserv-stefan", "--size", "toy", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for method in ("anp", "softc-anp", "hardc-anp", "probconserv-anp"):
        assert f" {method} " in out
    assert out.count("|CE| probconserv-anp") == 2 and " NO" not in out
    for name in ("stefan-u0.6", "stefan-u0.5"):
        for plot in ("profile", "mass", "shock"):
            assert (tmp_path / "probconserv-stefan" / f"{name}-{plot}.png").stat().st_size > 5_000
    assert (tmp_path / "checkpoints").is_dir()
    assert main(args) == 0  # the second run reuses the cached checkpoints


def test_boon_heat_task_meets_the_fluxes_and_saves_the_zoom(tmp_path, capsys):
    args = ["run", "boon-heat", "--size", "toy", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for method in ("fno", "fno-overwrite", "boon"):
        assert f"flux error {method} " in out
    assert " NO" not in out
    assert (tmp_path / "boon-heat" / "boundary-zoom.png").stat().st_size > 5_000
