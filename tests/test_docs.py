"""The API reference: Sphinx builds it from the docstrings with warnings as errors, and every
public module has a page."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Nitpicky (-n) warnings still tolerated: a type napoleon reads from prose or a third-party class.
UNRESOLVED_CLASSES = re.compile(r"WARNING: py:class reference target not found")

# Modules (or packages: a prefix) with a reason to stay out of the reference for now.
LEFT_OUT: dict[str, str] = {}  # module name -> why it has no page yet


def public_modules() -> list[str]:
    """Dotted names of every module in ``pdes`` and ``physml`` whose path has no ``_`` part."""
    names = []
    for package in ("pdes", "physml"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(part.startswith("_") for part in parts):
                continue
            names.append(".".join(parts))
    return names


def test_every_public_module_has_a_page():
    documented = set()
    for page in DOCS.glob("*.rst"):
        documented |= set(re.findall(r"^\.\. automodule:: (\S+)", page.read_text(), re.M))
    missing = [
        name
        for name in public_modules()
        if name not in documented and not any(name.startswith(left) for left in LEFT_OUT)
    ]
    assert not missing, f"modules without a page in docs/: {missing}"


@pytest.fixture(scope="module")
def built_reference(tmp_path_factory) -> Path:
    """The HTML reference, built once with warnings as errors (nitpicky: every reference to a
    function, method, attribute or constant resolves); its folder."""
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[docs]')")
    pytest.importorskip("furo", reason="the furo theme is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs") / "html"
    command = [sys.executable, "-m", "sphinx", "-n", "--keep-going", "-q", "-b", "html"]
    result = subprocess.run(
        [*command, str(DOCS), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    warnings = [line for line in result.stderr.splitlines() if not UNRESOLVED_CLASSES.search(line)]
    assert not any(line.strip() for line in warnings), "\n".join(warnings)[-4000:]
    return out


def test_the_reference_builds_without_warnings(built_reference):
    out = built_reference
    index = (out / "index.html").read_text()
    for page in ("concepts", "cli", "pdes", "constraints", "models", "data", "training", "tasks"):
        assert f'href="{page}.html"' in index
    constraints = (out / "constraints.html").read_text()
    assert 'id="physml.constraints.layer.constrain"' in constraints  # autodoc ran
    tasks = (out / "tasks.html").read_text()  # `physml.constrain` is a re-export
    assert 'href="constraints.html#physml.constraints.layer.constrain"' in tasks
    member = "physml.constraints.knowledge.KnowledgeControl.with_target"  # of a re-export
    assert f'href="constraints.html#{member}"' in tasks
    cli = (out / "cli.html").read_text()
    assert "usage: physml generate heat" in cli  # the parser's help is rendered


EXPORTING = (
    "physml",
    "physml.constraints",
    "physml.models",
    "physml.metrics",
    "physml.io",
    "physml.signals",
    "physml.training",
    "physml.updates",
    "physml.data",
    "pdes",
)


def test_every_exported_name_has_an_entry(built_reference):
    """autodoc follows each module's ``__all__``: a name a package exports but its defining module
    leaves out of ``__all__`` (or a constant without a doc comment) gets no entry."""
    html = "".join(page.read_text() for page in built_reference.glob("*.html"))
    entries = set(re.findall(r'id="([^"]+)"', html))
    missing = []
    for package_name in EXPORTING:
        package = importlib.import_module(package_name)
        for name in package.__all__:
            if name.startswith("__"):
                continue
            exported = getattr(package, name)
            if inspect.isclass(exported) or inspect.isfunction(exported):
                found = f"{exported.__module__}.{exported.__qualname__}" in entries
            else:
                found = any(
                    getattr(sys.modules.get(entry.rpartition(".")[0]), name, None) is exported
                    for entry in entries
                    if entry.endswith(f".{name}")
                )
            if not found:
                missing.append(f"{package_name}.{name}")
    assert not missing, f"exported but without an entry in the reference: {missing}"


def test_a_re_exported_name_resolves_to_where_it_is_defined():
    """The docs' resolver of re-exported names (`physml.constrain`), members included."""
    sys.path.insert(0, str(DOCS))
    try:
        from conf import canonical_name
    finally:
        sys.path.remove(str(DOCS))
    from physml.constraints.knowledge import KnowledgeControl
    from physml.constraints.layer import constrain

    assert canonical_name("physml.constrain") == f"{constrain.__module__}.constrain"
    method = canonical_name("physml.constraints.KnowledgeControl.with_target")
    assert method == f"{KnowledgeControl.__module__}.KnowledgeControl.with_target"
    assert KnowledgeControl.__module__ != "physml.constraints"  # a re-export indeed
    assert canonical_name("physml.no_such_name") is None


def documented_attributes() -> list[tuple[str, str]]:
    """``(name, docstring)`` of every attribute autodoc documents from a docstring of its own: the
    string (or ``#:`` comment) after a module constant or class attribute, and each property's."""
    from sphinx.pycode import ModuleAnalyzer

    found = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for (scope, name), lines in ModuleAnalyzer.for_module(module_name).find_attr_docs().items():
            found.append((f"{module_name}.{scope + '.' if scope else ''}{name}", "\n".join(lines)))
        for cls_name, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == module_name:
                for name, member in vars(cls).items():
                    if isinstance(member, property) and member.__doc__:
                        found.append((f"{module_name}.{cls_name}.{name}", member.__doc__))
    return found


def test_no_attribute_docstring_is_rendered_as_a_type():
    """napoleon reads an attribute docstring whose first line has ``text: more`` as ``type:
    description`` and renders "Type: text" (``"Slope limiters: mc, ..."`` became a type called
    "Slope limiters")."""
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[docs]')")
    from sphinx.ext.napoleon import Config
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    config = Config(napoleon_google_docstring=True, napoleon_numpy_docstring=True)
    typed = []
    for name, doc in documented_attributes():
        lines = str(GoogleDocstring(inspect.cleandoc(doc), config, what="attribute", name=name))
        typed += [f"{name}: {line}" for line in lines.splitlines() if line.startswith(":type:")]
    assert not typed, "first lines read as a type (reword them):\n" + "\n".join(typed)
