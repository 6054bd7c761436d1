"""The ``physml`` command's entry (physml.__main__): a Ctrl-C while the command line loads (torch
takes seconds) or before the command starts ends it with one line and status 130, no traceback;
otherwise it is the command line's own ``main``."""

from __future__ import annotations

import builtins
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import physml.cli
from physml.__main__ import main
from physml.signals import Terminated, say_interrupted

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("stop", "status", "said"),
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (Terminated(signal.SIGTERM), 143, "interrupted by SIGTERM"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_while_the_command_line_loads_ends_with_one_line(
    monkeypatch, capsys, stop, status, said
):
    real_import = builtins.__import__

    def interrupted_import(name, *args, **kwargs):
        if name == "physml.cli":
            raise stop
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    assert main(["list"]) == status
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"\nphysml: {said}\n")


def _interrupt_the_command_line_import(monkeypatch):
    real_import = builtins.__import__

    def interrupted_import(name, *args, **kwargs):
        if name == "physml.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)


@pytest.mark.parametrize(
    ("world_size", "rank", "said"),
    [
        ("2", "0", "\nphysml: interrupted\n"),
        ("2", "1", ""),
        ("4", "3", ""),
        (None, "1", "\nphysml: interrupted\n"),  # no torchrun world: a process of its own
        ("1", "1", "\nphysml: interrupted\n"),
    ],
)
def test_a_ctrl_c_while_the_command_line_loads_is_said_by_rank_zero_only(
    monkeypatch, capsys, world_size, rank, said
):
    """Under torchrun the interruption reaches every rank; one line, as the commands say it."""
    for name, value in (("WORLD_SIZE", world_size), ("RANK", rank)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    _interrupt_the_command_line_import(monkeypatch)
    assert main(["list"]) == 130
    assert capsys.readouterr() == ("", said)


def test_a_ctrl_c_while_loading_with_a_rank_that_is_no_integer_is_said_with_the_problem(
    monkeypatch, capsys
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "first")
    _interrupt_the_command_line_import(monkeypatch)
    assert main(["list"]) == 130
    assert capsys.readouterr() == (
        "",
        "physml: error: the environment variable RANK must be an integer (torchrun sets it), "
        "got 'first'\n\nphysml: interrupted\n",
    )


def test_say_interrupted_says_one_line_on_rank_zero_and_asks_the_hint_only_there(capsys):
    """The one helper both the entry and the command line say a stop with."""
    asked = []

    def hint() -> str:
        asked.append(True)
        return "; rerun it"

    def no_integer() -> int:
        raise ValueError("the environment variable RANK must be an integer, got 'x'")

    assert say_interrupted("physml run", Terminated(signal.SIGTERM), lambda: 1, hint) == 143
    assert capsys.readouterr() == ("", "") and asked == []
    assert say_interrupted("physml run", KeyboardInterrupt(), lambda: 0, hint) == 130
    assert capsys.readouterr() == ("", "\nphysml run: interrupted; rerun it\n")
    assert say_interrupted("physml", KeyboardInterrupt(), no_integer) == 130
    assert capsys.readouterr().err == (
        "physml: error: the environment variable RANK must be an integer, got 'x'\n"
        "\nphysml: interrupted\n"
    )


def test_a_ctrl_c_while_the_parser_is_built_ends_with_one_line(monkeypatch, capsys):
    def interrupted_parser():
        raise KeyboardInterrupt

    monkeypatch.setattr(physml.cli, "build_parser", interrupted_parser)
    assert main(["list"]) == 130
    assert capsys.readouterr() == ("", "\nphysml: interrupted\n")


def test_a_ctrl_c_during_the_command_keeps_the_command_s_own_line(monkeypatch, capsys):
    def interrupted_listing():
        raise KeyboardInterrupt

    monkeypatch.setattr(physml.cli, "format_list", interrupted_listing)
    assert main(["list"]) == 130
    assert capsys.readouterr() == ("", "\nphysml list: interrupted\n")


def test_otherwise_the_entry_is_the_command_line(capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr()
    assert physml.cli.main(["list"]) == 0
    assert capsys.readouterr() == listed
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"physml {physml.__version__}\n"


def test_a_ctrl_c_while_torch_loads_in_a_fresh_process_ends_with_one_line():
    """The console script imports the entry before the guard runs: that import must not load
    torch, or a Ctrl-C there still prints a traceback."""
    code = (
        "import sys\n"
        "from physml.__main__ import main\n"
        "loaded = sorted(m for m in ('torch', 'physml.cli') if m in sys.modules)\n"
        "assert loaded == [], loaded\n"
        "class Interrupted:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupted())\n"
        "sys.exit(main(['list']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (130, "", "\nphysml: interrupted\n")


def test_python_m_physml_cli_loads_under_the_entry_s_guard(tmp_path):
    """``python -m physml.cli`` runs the module's body as ``__main__``: a Ctrl-C while it loads
    torch ends it with the entry's one line, as ``physml`` and ``python -m physml`` do."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Interrupted:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupted())\n"
    )
    paths = [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
    result = subprocess.run(
        [sys.executable, "-m", "physml.cli", "list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert (result.returncode, result.stdout, result.stderr) == (130, "", "\nphysml: interrupted\n")


def test_import_physml_still_reaches_every_public_submodule_and_export():
    """``import physml`` loads nothing heavy, yet ``physml.metrics`` and the like (which a plain
    import used to load on the way) and the exports are reachable as attributes."""
    code = (
        "import sys, physml\n"
        "assert 'torch' not in sys.modules\n"
        "assert callable(physml.metrics.relative_l2)\n"
        "assert physml.constrain is physml.constraints.constrain\n"
        "assert physml.models.CuboidSelfAttention is not None\n"
        "assert not hasattr(physml, 'no_such_module')\n"
        "print('ok')\n"
    )
    _runs_ok_in_a_fresh_process(code)


def test_a_missing_attribute_does_not_list_the_package_folder_again(monkeypatch):
    """``hasattr(physml, name)`` on a missing name asks which submodules exist: the folder is
    listed once a process, not at every miss."""
    import physml

    listed = []
    iter_modules = physml._pkgutil.iter_modules

    def counted(*args, **kwargs):
        listed.append(args)
        return iter_modules(*args, **kwargs)

    monkeypatch.setattr(physml._pkgutil, "iter_modules", counted)
    for _ in range(3):
        assert not hasattr(physml, "no_such_module")
    assert physml.metrics is not None and "metrics" in dir(physml)
    assert len(listed) <= 1


def test_dir_physml_lists_what_it_serves_and_no_helper():
    """``dir(physml)`` lists every public submodule (served on first use) and the exports, but
    no helper the package imports for itself; a dotted name is no attribute."""
    code = (
        "import sys, physml\n"
        "listed = dir(physml)\n"
        "assert 'torch' not in sys.modules\n"
        "wanted = {'cli', 'constraints', 'data', 'errors', 'io', 'metrics', 'models',\n"
        "          'outputs', 'seeds', 'signals', 'tasks', 'training', 'updates',\n"
        "          '__version__', *physml.__all__}\n"
        "assert wanted <= set(listed), wanted - set(listed)\n"
        "helpers = {'find_spec', 'import_module', 'TYPE_CHECKING', 'version',\n"
        "           'PackageNotFoundError'}\n"
        "assert not helpers & set(listed), helpers & set(listed)\n"
        "assert not [name for name in helpers if hasattr(physml, name)]\n"
        "assert not [name for name in listed if name.startswith('_') and not name.endswith('__')]\n"
        "for name in ('data.points', 'tasks.prediff', '_checks', '__main__', 'no_such_module'):\n"
        "    try:\n"
        "        getattr(physml, name)\n"
        "    except AttributeError as error:\n"
        "        assert repr(name) in str(error), error\n"
        "    else:\n"
        "        raise AssertionError(name)\n"
        "assert all(getattr(physml, name) is not None for name in listed)\n"
        "print('ok')\n"
    )
    _runs_ok_in_a_fresh_process(code)


def _runs_ok_in_a_fresh_process(code: str) -> None:
    """``code`` run by a new Python in the checkout's root prints ``ok`` and exits 0."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
