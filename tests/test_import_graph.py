"""DESIGN §2, the dependency direction: the constraints load no model module, and no package
imports a private name (``_x``) of another."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_of(module: str) -> str:
    """The package a dotted module name belongs to: ``pdes``, or ``physml`` and its first part
    (``physml.constraints.linear`` → ``physml.constraints``, ``physml.metrics`` → itself)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "physml" else parts[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module ``node`` imports from, in ``module`` (a package's ``__init__``
    when ``is_package``)."""
    if not node.level:
        return node.module or ""
    here = module.split(".")
    base = here if is_package else here[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """``line: name`` for each private name the code ``source`` of ``module`` takes from another
    package: imported by name, or read as an attribute of a module it imported."""
    own = package_of(module)
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> module of another package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            origin = imported_from(node, module, is_package)
            for alias in node.names:
                full = f"{origin}.{alias.name}"
                if package_of(full) == own or origin.split(".")[0] not in ("pdes", "physml"):
                    continue
                if private(alias.name):
                    found.append(f"{node.lineno}: {full}")
                modules[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and package_of(alias.name) != own:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and private(node.attr)
        ):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_package_imports_a_private_name_of_another():
    offenders = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in sorted(ROOT.glob("physml/**/*.py"))
        for hit in private_imports(
            path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"
        )
    ]
    assert offenders == []


def test_the_check_sees_a_private_name_imported_or_read_across_packages():
    source = (
        "from ..metrics import _x, y\n"
        "from .. import metrics\n"
        "import pdes.grid as grid\n"
        "from .base import _z\n"
        "metrics._w + grid._v + metrics.y\n"
    )
    assert private_imports(source, "physml.constraints.probe") == [
        "1: physml.metrics._x",
        "5: metrics._w",
        "5: grid._v",
    ]
    assert private_imports("from . import _z\n", "physml.constraints", is_package=True) == []


def test_a_boon_wrapped_fno_runs_without_loading_a_model_module():
    """The operator seam adapts a neuralop FNO through protocols: wrapping one and calling it
    loads neither ``physml.models`` nor what it imports (gpytorch)."""
    code = (
        "import sys, torch\n"
        "from neuralop.models import FNO\n"
        "from pdes import Dirichlet, Grid1D\n"
        "from physml.constraints import BoundaryCondition, constrain\n"
        "fno = FNO(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=4, n_layers=1)\n"
        "model = constrain(fno, BoundaryCondition(Dirichlet(0.0, 1.0), Grid1D(9)))\n"
        "y = model(torch.rand(2, 1, 9))\n"
        "print(y[0, 0, 0].item(), y[0, 0, -1].item())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('physml.models', 'gpytorch'))))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment
    ).stdout.splitlines()
    assert out == ["0.0 1.0", "[]"]
