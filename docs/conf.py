"""Sphinx configuration: the API reference is built from the docstrings (``make docs``)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from physml import __version__  # noqa: E402

project = "physml"
author = "the physml authors"
copyright = "the physml authors, Apache-2.0"  # noqa: A001 (the name Sphinx reads)
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"physml {__version__}"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = True
default_role = "code"


class CommandHelp(Directive):
    """``.. physml-help:: generate heat`` — the ``--help`` text of a ``physml`` command, as shown
    by the command line itself, so the page cannot drift from the parser."""

    optional_arguments = 8
    has_content = False

    def run(self) -> list[nodes.Node]:
        from physml.cli import build_parser

        os.environ["COLUMNS"] = "100"  # the same wrapping on every terminal
        parser = build_parser()
        for word in self.arguments:
            parser = _subparser(parser, word)
        text = parser.format_help()
        return [nodes.literal_block(text, text, language="text")]


def _subparser(parser, word: str):
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and word in choices:
            return choices[word]
    raise ValueError(f"physml-help: no subcommand {word!r}")


def canonical_name(target: str) -> str | None:
    """Where the object ``target`` names is defined: ``physml.constrain`` →
    ``physml.constraints.layer.constrain``, a member of a re-exported class likewise
    (``physml.constraints.KnowledgeControl.with_target``); ``None`` when it cannot be found."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            owner = getattr(found, parts[cut])
            module, qualname = owner.__module__, owner.__qualname__
        except AttributeError:
            return None
        return ".".join([module, qualname, *parts[cut + 1 :]])
    return None


def resolve_reexport(app, env, node, contnode):
    """A reference to a name a package re-exports (``physml.constrain``) resolves to the page
    where the object is documented; Sphinx alone leaves it as plain text."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith(("physml.", "pdes.")):
        return None
    canonical = canonical_name(target)
    if canonical is None or canonical == target:
        return None
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
    )


def setup(app) -> None:
    app.add_directive("physml-help", CommandHelp)
    app.connect("missing-reference", resolve_reexport)
