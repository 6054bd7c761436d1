"""Every teaching notebook runs top to bottom in a fresh kernel and is stored without outputs; a
kernel shows progress bars."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
PROBE = "import sys\nprint(sys.executable)\nprint(sys.prefix)"


def by_name(path: Path) -> str:
    return path.name


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks under {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=by_name)
def test_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    executed = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not executed, (
        f"{path.name}: code cells {executed} hold outputs; clear them before saving"
    )


def pin_python3_kernel(folder: Path, monkeypatch) -> None:
    """Make the kernel ``python3`` start this interpreter, whatever kernelspecs the user has.

    The spec is ipykernel's own (``sys.executable -m ipykernel_launcher``), found first because
    ``JUPYTER_PATH`` comes before every other data folder.
    """
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (tests)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(folder))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=by_name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    pin_python3_kernel(tmp_path / "jupyter", monkeypatch)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))
    )
    workdir = tmp_path / "run"
    workdir.mkdir()

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on the first error

    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs).split("\n")
    assert printed[:2] == [sys.executable, sys.prefix], "the kernel ran another interpreter"


def test_a_progress_bar_shows_in_a_running_kernel(tmp_path, monkeypatch):
    """A kernel's stderr is no terminal, yet the frontend redraws a line ended by ``\\r`` in
    place: a bar asked for shows there, in plain text, on stderr."""
    pin_python3_kernel(tmp_path / "jupyter", monkeypatch)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))
    )
    code = (
        "from physml._progress import progress_bar\n"
        "bar = progress_bar(range(3), True, 'probe')\n"
        "assert list(bar) == [0, 1, 2]\n"
        "bar.close()"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S).execute()
    outputs = notebook.cells[0].outputs
    written = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "probe" in written and "3/3" in written, outputs
