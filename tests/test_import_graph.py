"""DESIGN §2, the dependency direction: every import points down the layers (the constraints load
no model module, the models no training code), no package imports a private name (``_x``) of
another, and the benchmarks and notebooks use the public API only."""

from __future__ import annotations

import ast
import importlib
import json
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


def dotted(node: ast.expr) -> list[str] | None:
    """``["a", "b", "c"]`` for the expression ``a.b.c``; ``None`` for anything else."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute) and (base := dotted(node.value)) is not None:
        return [*base, node.attr]
    return None


def private_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """``line: name`` for each private name the code ``source`` of ``module`` takes from another
    package: imported by name, or read (as an attribute, at any depth, or with ``getattr``) from
    a module it imported; the segments naming the imported module itself are not judged."""
    own = package_of(module)
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> what it names: a module of pdes or physml
    imported: set[str] = set()  # modules imported whole, each a dotted name
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
                bound[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and package_of(alias.name) != own:
                    bound[alias.asname] = alias.name
                elif alias.name.split(".")[0] in ("pdes", "physml"):
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
                    imported.add(alias.name)

    def crosses(names: list[str]) -> bool:
        """Whether ``names`` (a bound name, then attributes; the last private) reads a private
        name of another package, past the module part."""
        path = [*bound[names[0]].split("."), *names[1:]]
        modules = [m.split(".") for m in (*imported, bound[names[0]])]
        module_part = max(len(m) for m in modules if path[: len(m)] == m)
        past = path[module_part:]
        return (
            len(past) > 0
            and not any(private(name) for name in past[:-1])
            and package_of(".".join(path)) != own
        )

    for node in ast.walk(tree):
        names = None
        if isinstance(node, ast.Attribute) and private(node.attr):
            names = dotted(node)
            shown = ".".join(names or ())
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
            and (target := dotted(node.args[0])) is not None
        ):
            names = [*target, node.args[1].value]
            shown = f"getattr({'.'.join(target)}, {node.args[1].value!r})"
        if names is not None and names[0] in bound and crosses(names):
            found.append(f"{node.lineno}: {shown}")
    return found


def _fresh_python(code: str) -> list[str]:
    """The lines ``code`` prints in a new interpreter that imports this checkout (no module of
    the test process loaded)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment
    ).stdout.splitlines()


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
        "import physml.metrics, pdes.heat, physml._checks\n"
        "physml.metrics._a(pdes.heat._b, physml._checks.c, physml.constraints._own)\n"
        "from .. import outputs\n"
        "outputs.Gaussian._c._d + outputs.Gaussian.__name__\n"
        "getattr(metrics, '_e') + getattr(pdes.heat, '_f') + getattr(metrics, 'g')\n"
    )
    assert sorted(private_imports(source, "physml.constraints.probe")) == sorted(
        [
            "1: physml.metrics._x",
            "5: metrics._w",
            "5: grid._v",
            "7: physml.metrics._a",
            "7: pdes.heat._b",
            "9: outputs.Gaussian._c",
            "10: getattr(metrics, '_e')",
            "10: getattr(pdes.heat, '_f')",
        ]
    )
    assert private_imports("from . import _z\n", "physml.constraints", is_package=True) == []


def private_modules(source: str) -> list[str]:
    """``line: module`` for each module of ``pdes`` or ``physml`` with a private part
    (``physml._io``) that the code ``source`` imports, whole (``import``) or a name from it
    (``from ... import``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            first, *rest = module.split(".")
            if first in ("pdes", "physml") and any(private(part) for part in rest):
                found.append(f"{node.lineno}: {module}")
    return found


def script_private_imports(source: str) -> list[str]:
    """``line: name`` for each private module or name of ``pdes`` or ``physml`` that the script
    ``source`` (a benchmark, a notebook's cell) imports or reads: none of it is public API."""
    return sorted(set(private_imports(source, "script.main") + private_modules(source)))


def notebook_code(path: Path) -> list[str]:
    """The code cells of the notebook ``path``, each as Python: an IPython line magic or shell
    line (``%matplotlib inline``, ``!ls``) becomes a blank line, so line numbers are kept."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [
        "\n".join(
            "" if line.lstrip().startswith(("%", "!")) else line
            for line in "".join(cell["source"]).splitlines()
        )
        for cell in cells
        if cell["cell_type"] == "code"
    ]


def test_benchmarks_and_notebooks_use_the_public_api_only():
    offenders = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in sorted(ROOT.glob("benchmarks/*.py"))
        for hit in script_private_imports(path.read_text(encoding="utf-8"))
    ]
    offenders += [
        f"{path.relative_to(ROOT)} cell {number}:{hit}"
        for path in sorted(ROOT.glob("notebooks/*.ipynb"))
        for number, code in enumerate(notebook_code(path), 1)
        for hit in script_private_imports(code)
    ]
    assert offenders == []


def test_the_script_check_sees_private_modules_and_names(tmp_path):
    source = (
        "import physml._io\n"
        "import physml.data._cache as cache\n"
        "from physml._signals import interrupted\n"
        "from physml import _checks, metrics\n"
        "from physml.training.trainer import _to, check_device\n"
        "from pdes._grid import Grid1D\n"
        "import physml\n"
        "physml.metrics._relative(1, 2)\n"
        "from physml.io import atomic_write_text\n"
        "import physml.signals, pdes.heat\n"
        "from common import _own_helper\n"
        "from . import _sibling\n"
        "model._private_attribute\n"
    )
    assert script_private_imports(source) == sorted(
        [
            "1: physml._io",
            "2: physml.data._cache",
            "3: physml._signals",
            "4: physml._checks",
            "5: physml.training.trainer._to",
            "6: pdes._grid",
            "8: physml.metrics._relative",
        ]
    )
    notebook = tmp_path / "n.ipynb"
    cells = [
        {"cell_type": "markdown", "source": ["from physml._io import save_figure\n"]},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "!ls\n", "import physml\n"]},
        {"cell_type": "code", "source": ["x = 1\n", "from physml._io import save_figure"]},
    ]
    notebook.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    assert [script_private_imports(code) for code in notebook_code(notebook)] == [
        [],
        ["2: physml._io"],
    ]


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
    out = _fresh_python(code)
    assert out == ["0.0 1.0", "[]"]


# ------------------------------------------------------------------ layers

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pdes", ("pdes",)),
    (
        "core",
        (
            "physml._checks",
            "physml._clock",
            "physml._fno",
            "physml._io",
            "physml._progress",
            "physml._ranks",
            "physml._state",
            "physml.errors",
            "physml.io",
            "physml.metrics",
            "physml.outputs",
            "physml.seeds",
            "physml.signals",
        ),
    ),
    ("data", ("physml.data",)),
    ("constraints", ("physml.constraints",)),
    ("models", ("physml.models",)),
    ("training", ("physml.training",)),
    ("updates", ("physml.updates",)),
    ("tasks", ("physml.tasks",)),
    ("cli", ("physml.cli", "physml.__main__")),
)
"""DESIGN §2's house, lowest first: a module may import from its own layer and the ones below,
never from one above. ``physml`` itself (its ``__init__``) is no layer: it loads nothing but what
a user asks of it, and a name read from it counts as an import of the module that defines it."""

ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("physml.models.forecasting", "physml.training.forecasting"): (
        "the old import paths physml.models(.forecasting).train_forecaster and the names that go "
        "with it, forwarded by a module __getattr__ on first use; no model code calls them"
    ),
}
"""Imports up the layers that are kept on purpose: ``(importer, imported) -> why``."""


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the layer ``module`` belongs to (``None`` for ``physml``
    itself and for modules of neither package)."""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def is_module(name: str) -> bool:
    """Whether the dotted ``name`` is a module or package of the source tree."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def root_exports() -> dict[str, str]:
    """The names ``physml`` itself offers, each with the module that defines it."""
    exports = importlib.import_module("physml")._EXPORTS  # the package's own table of names
    return {name: f"physml.{module}" for name, module in exports.items()}


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` for each module of ``pdes`` or ``physml`` the code ``source`` of
    ``module`` imports, anywhere (a lazy import inside a function counts): ``import``,
    ``from ... import`` (a submodule by its own name, a name read from ``physml`` by the module
    that defines it) and ``importlib.import_module`` / ``__import__`` of a string constant, given
    in the call or bound to a name at the module's top level."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = imported_from(node, module, is_package)
            for alias in node.names:
                full = f"{origin}.{alias.name}"
                if is_module(full):
                    found.append((node.lineno, full))
                elif origin == "physml":
                    found.append((node.lineno, root_exports().get(alias.name, origin)))
                else:
                    found.append((node.lineno, origin))
        elif isinstance(node, ast.Call) and node.args:
            function = dotted(node.func)
            if function not in (["importlib", "import_module"], ["import_module"], ["__import__"]):
                continue
            argument = node.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                name = argument.value
            elif isinstance(argument, ast.Name) and argument.id in constants:
                name = constants[argument.id]
            else:
                continue
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                relative = ast.ImportFrom(module=name[level:] or None, names=[], level=level)
                name = imported_from(relative, module, is_package)
            found.append((node.lineno, name))
    ours = (item for item in found if item[1].split(".")[0] in ("pdes", "physml"))
    return list(dict.fromkeys(ours))  # each module once per line


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """``line: imported (layer above layer)`` for each import of the code ``source`` of
    ``module`` from a higher layer of :data:`LAYERS` than its own."""
    own = layer_of(module)
    found = []
    for line, name in imported_modules(source, module, is_package):
        theirs = layer_of(name)
        if own is not None and theirs is not None and theirs > own:
            found.append(f"{line}: {name} ({LAYERS[theirs][0]} above {LAYERS[own][0]})")
    return found


def source_modules() -> list[tuple[Path, str]]:
    """Every module of ``pdes`` and ``physml`` with its dotted name."""
    paths = sorted([*ROOT.glob("pdes/**/*.py"), *ROOT.glob("physml/**/*.py")])
    return [(path, module_name(path)) for path in paths]


def test_every_module_has_a_layer():
    """A new package is placed in the house on purpose, not left out of the check."""
    unplaced = [name for _, name in source_modules() if name != "physml" and layer_of(name) is None]
    assert unplaced == []


def test_imports_point_down_the_layers():
    found = {}
    for path, module in source_modules():
        source = path.read_text(encoding="utf-8")
        for hit in upward_imports(source, module, path.name == "__init__.py"):
            imported = hit.split(": ", 1)[1].split(" (")[0]
            found.setdefault((module, imported), []).append(f"{path.relative_to(ROOT)}:{hit}")
    offenders = [hit for edge, hits in found.items() if edge not in ALLOWED_UPWARD for hit in hits]
    assert offenders == []
    assert sorted(set(ALLOWED_UPWARD) - set(found)) == [], "an allowed edge no longer exists"


def test_the_concepts_page_names_every_import_kept_up_the_layers():
    """docs/concepts.rst says imports never point up; each exception kept is named there."""
    text = " ".join((ROOT / "docs" / "concepts.rst").read_text(encoding="utf-8").split())
    unnamed = [
        edge for edge in ALLOWED_UPWARD if not all(f":mod:`{module}`" in text for module in edge)
    ]
    assert unnamed == []


def test_the_layer_check_sees_every_kind_of_import_up():
    source = (
        "import importlib\n"
        "from ..training.checkpoint import load_checkpoint\n"
        "from .. import training, metrics\n"
        "from physml import constrain, __version__\n"
        "import physml.tasks.report\n"
        "from .baselines import check_sequence\n"
        "TRAINING = 'physml.training.forecasting'\n"
        "def lazy():\n"
        "    from ..training.generators import generators_kept\n"
        "    from ..cli import main\n"
        "    importlib.import_module(TRAINING)\n"
        "    importlib.import_module('..updates', __package__)\n"
        "    __import__('pdes.grid')\n"
        "    from ..constraints import constrain\n"
    )
    assert upward_imports(source, "physml.models.probe") == [
        "2: physml.training.checkpoint (training above models)",
        "3: physml.training (training above models)",
        "5: physml.tasks.report (tasks above models)",
        "9: physml.training.generators (training above models)",
        "10: physml.cli (cli above models)",
        "11: physml.training.forecasting (training above models)",
        "12: physml.updates (updates above models)",
    ]
    assert upward_imports(source, "physml.cli") == []
    assert upward_imports("from physml import constrain\n", "physml.data.probe") == [
        "1: physml.constraints (constraints above data)"
    ]
    assert upward_imports("from physml import __version__\n", "physml.data.probe") == []
    assert upward_imports("import physml.metrics\n", "pdes.grid") == [
        "1: physml.metrics (core above pdes)"
    ]


def test_the_models_load_no_training_code_yet_offer_the_forecasters_trainer_by_its_old_paths():
    """Importing the models (and scoring, saving an ensemble) loads nothing of
    ``physml.training``; ``train_forecaster`` and its names, at home there, still read from
    ``physml.models`` and ``physml.models.forecasting``, loaded on first use."""
    code = (
        "import sys, tempfile, torch\n"
        "from pathlib import Path\n"
        "import physml.models\n"
        "from physml.models import DeepEnsemble, Persistence, evaluate_forecaster\n"
        "x = torch.rand(2, 3, 1, 4, 4)\n"
        "evaluate_forecaster(Persistence(3), x, x)\n"
        "path = Path(tempfile.mkdtemp()) / 'e.pt'\n"
        "DeepEnsemble(in_features=1, members=2, width=4, depth=1).save(path)\n"
        "DeepEnsemble.load(path)\n"
        "print(sorted(m for m in sys.modules if m.startswith('physml.training')))\n"
        "from physml.models import TrainReport, load_forecaster, train_forecaster\n"
        "from physml.models.forecasting import LOSSES, check_no_old_checkpoint\n"
        "import physml.training as training\n"
        "import physml.training.forecasting as home\n"
        "print(train_forecaster is home.train_forecaster is training.train_forecaster,\n"
        "      load_forecaster is home.load_forecaster is training.load_forecaster,\n"
        "      check_no_old_checkpoint is home.check_no_old_checkpoint,\n"
        "      TrainReport is home.TrainReport, LOSSES is home.LOSSES)\n"
        "print(all(hasattr(physml.models, name) for name in physml.models.__all__),\n"
        "      {'TrainReport', 'train_forecaster'} <= set(dir(physml.models)))\n"
        "try:\n"
        "    physml.models.forecasting.Trainer\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
        "star = {}\n"
        "exec('from physml.models.forecasting import *', star)\n"
        "print(sorted(set(star) & {'LOSSES', 'TrainReport', 'evaluate_forecaster',\n"
        "                          'load_forecaster', 'train_forecaster', 'Trainer'}))\n"
        "report = getattr(training, 'ForecasterReport', 1)\n"
        "print(star.get('TrainReport', 0) is report is not training.TrainReport)\n"
        "print([n for m in (physml.models, physml.models.forecasting) for n in dir(m)\n"
        "       if n in ('training_name', 'TRAINING', 'TRAINING_NAMES')])\n"
    )
    out = _fresh_python(code)
    assert out == [
        "[]",
        "True True True True True",
        "True True",
        "module 'physml.models.forecasting' has no attribute 'Trainer'",
        "['LOSSES', 'TrainReport', 'evaluate_forecaster', 'load_forecaster', 'train_forecaster']",
        "True",
        "[]",
    ]
