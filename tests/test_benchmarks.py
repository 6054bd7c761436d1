"""Each benchmark's --quick mode runs and writes results in the agreed format (DESIGN.md §5)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"benchmark", "command", "seed", "machine", "torch", "wall_s", "date", "rows"}


@pytest.mark.parametrize("name", ["solvers", "probconserv_update", "probconserv_gpme"])
def test_quick_mode_writes_results(tmp_path, name):
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / f"{name}.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert KEYS <= set(result)
    assert result["rows"] and all("case" in row and "method" in row for row in result["rows"])
    assert "--quick" in result["command"]
    markdown = (tmp_path / f"{name}.md").read_text()
    assert markdown.startswith(f"# {name}") and markdown.count("\n|") >= len(result["rows"]) + 1


def test_committed_solver_results_meet_the_format():
    path = ROOT / "benchmarks" / "results" / "solvers.json"
    result = json.loads(path.read_text())
    assert KEYS <= set(result) and "--quick" not in result["command"]
    cases = {row["case"] for row in result["rows"]}
    expected = {"heat-dirichlet", "burgers-periodic", "gpme-stefan", "heat-vs-py-pde", "cavity"}
    assert expected | {"navier-stokes-periodic"} <= cases
    batches = {row["batch"] for row in result["rows"] if row.get("part") == "throughput"}
    assert {1, 1024} <= batches


def test_committed_probconserv_results_conserve():
    for name in ("probconserv_gpme", "probconserv_update"):
        result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        assert KEYS <= set(result) and "--quick" not in result["command"]
        for row in result["rows"]:
            if row["method"].startswith(("probconserv", "hardc")) or name.endswith("update"):
                assert row["ce_abs"] <= 1e-6, row
