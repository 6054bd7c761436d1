"""Progress bars show on a terminal and in a running Jupyter kernel, never in a pipe or a log,
and never when turned off (physml._progress)."""

from __future__ import annotations

import io
import sys
import types

import pytest

from physml._progress import in_jupyter_kernel, progress_bar


class OutStream(io.StringIO):
    """Stands for ipykernel's stream: no terminal (``isatty`` False), shown by the frontend."""

    def isatty(self) -> bool:
        return False


class ZMQInteractiveShell:
    """Stands for ipykernel's shell."""


class HostedShell(ZMQInteractiveShell):
    """A hosted notebook's shell (Colab's subclasses ipykernel's)."""


class TerminalInteractiveShell:
    """IPython in a terminal: no kernel, whatever ipykernel modules it loaded."""


def fake_ipython(monkeypatch, shell: object) -> None:
    """Modules as a kernel has them loaded, with ``shell`` the running IPython shell."""
    ipykernel = types.ModuleType("ipykernel")
    zmqshell = types.ModuleType("ipykernel.zmqshell")
    zmqshell.ZMQInteractiveShell = ZMQInteractiveShell
    iostream = types.ModuleType("ipykernel.iostream")
    iostream.OutStream = OutStream
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    for name, module in [
        ("ipykernel", ipykernel),
        ("ipykernel.zmqshell", zmqshell),
        ("ipykernel.iostream", iostream),
        ("IPython", ipython),
    ]:
        monkeypatch.setitem(sys.modules, name, module)


def drawn(enabled: bool) -> str:
    """What a bar of three steps wrote to stderr (nothing where it was not shown)."""
    bar = progress_bar(range(3), enabled, "probe")
    assert list(bar) == [0, 1, 2]
    bar.close()
    return sys.stderr.getvalue()


@pytest.mark.parametrize("shell", [ZMQInteractiveShell(), HostedShell()])
def test_a_jupyter_kernel_shows_the_bar_in_plain_text(monkeypatch, shell):
    fake_ipython(monkeypatch, shell)
    monkeypatch.setattr(sys, "stderr", OutStream())
    assert in_jupyter_kernel(sys.stderr)
    written = drawn(True)
    assert "probe" in written and "3/3" in written and "\r" in written


def test_a_kernel_still_turns_the_bar_off_when_asked(monkeypatch):
    fake_ipython(monkeypatch, ZMQInteractiveShell())
    monkeypatch.setattr(sys, "stderr", OutStream())
    assert drawn(False) == ""


@pytest.mark.parametrize(
    ("shell", "stream"),
    [
        (TerminalInteractiveShell(), OutStream()),  # IPython in a terminal, stderr piped
        (None, OutStream()),  # ipykernel imported, no shell running
        (ZMQInteractiveShell(), io.StringIO()),  # a kernel whose stderr a cell redirected
    ],
    ids=["terminal-ipython", "no-shell", "redirected"],
)
def test_no_bar_outside_a_kernel_s_own_output(monkeypatch, shell, stream):
    fake_ipython(monkeypatch, shell)
    monkeypatch.setattr(sys, "stderr", stream)
    assert not in_jupyter_kernel(sys.stderr)
    assert drawn(True) == ""


def test_a_pipe_gets_no_bar_and_nothing_is_imported_to_tell(monkeypatch):
    for name in ("ipykernel", "ipykernel.zmqshell", "ipykernel.iostream", "IPython"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "stderr", OutStream())
    assert drawn(True) == ""
    assert not {"ipykernel", "IPython"} & set(sys.modules)
