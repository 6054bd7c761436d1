"""The constraint matrix benchmark: its quick mode runs, and the committed results hold the targets
that are not timings (exactness, dtype, coverage)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "constraint_matrix.py"
COMMITTED = ROOT / "benchmarks" / "results" / "constraint_matrix.json"
CASES = {
    "mlp",
    "fno-1d",
    "fno-2d",
    "gp",
    "anp",
    "ensemble-gaussian",
    "ensemble-members",
    "earthformer",
    "earthformer-ensemble",
    "ensemble-update",
}


def check_rows(rows: list[dict]) -> None:
    assert {row["case"] for row in rows} == CASES
    for row in rows:
        label = f"{row['case']} / {row['method']}"
        assert row["violation_after"] <= 1e-6, label
        assert row["dtype_kept"], label
    methods = {(row["case"], row["method"]) for row in rows}
    assert ("earthformer", "mass-2d-per-frame") in methods
    assert ("earthformer-ensemble", "mass-2d-per-frame") in methods
    assert sum("+" in method for _, method in methods) >= 2  # two combinations
    seams = {row["seam"] for row in rows if row["case"].startswith("fno")}
    assert seams == {"output", "operator+output"}


def test_quick_mode_runs_every_pair_exactly(tmp_path):
    command = [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)]
    subprocess.run(command, check=True, cwd=ROOT, timeout=600)
    result = json.loads((tmp_path / "constraint_matrix.json").read_text())
    check_rows(result["rows"])
    assert "--quick" in result["command"]


def test_committed_results_are_a_full_run_meeting_the_exactness_targets():
    result = json.loads(COMMITTED.read_text())
    assert "--quick" not in result["command"]
    check_rows(result["rows"])
    sides = {row["method"] for row in result["rows"] if row["case"] == "ensemble-update"}
    assert sides == {"mass-2d-64x64", "mass-2d-128x128"}
