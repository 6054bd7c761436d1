"""Every ```python and ```bash block of README.md runs, in order, in one fresh folder.

Python blocks share one namespace (a later snippet may use the names of an earlier one, as a reader
following the tour would) and run with the folder as the working directory; bash blocks run line by
line (backslash continuations joined) through ``bash -c`` in the same folder, with ``.venv/bin/``
pointing at the running interpreter's ``bin`` folder.

A plain ``.venv/bin/physml ARGS`` line (no pipe, redirection, expansion or other shell syntax) runs
in this process instead: ``physml.__main__.main(ARGS)``, the console script's entry point, in
the same folder, its exit status (returned or raised as ``SystemExit``) checked as the shell's
would be, and the process state a command can change (working directory, environment,
``sys.argv``, torch's thread count, default dtype and grad mode, the global random generators,
matplotlib's settings, backend and figures, warning filters) put back afterwards, so no command
leaks into the next block.
Each fresh interpreter cost 3-4 s of imports. The first ``physml`` line still runs as a real
subprocess of the installed console script, which proves the entry point itself.

The commands are the README's own; only the numbers that set their cost are shrunk, by the explicit
rules in ``SHRINK`` (each a regular expression and its toy replacement). What needs more than this
machine is checked as far as it can be without running it, by ``NOT_RUN``: the ``make`` targets by a
dry run (``make -n``: the target exists and its recipe expands; ``make test`` would run this test
again) and the Slurm script by ``bash -n`` (its syntax).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (pattern, replacement, why): applied to every block before it runs, in this order.
SHRINK = [
    (r"--n \d+", "--n 48", "samples: above the default batch of 32, so train runs"),
    (r"burgers --n \d+", "burgers --n 8", "burgers samples: no later command reads the file"),
    (r"--steps \d+", "--steps 2", "training steps"),
    (r"budget_s=\d+", "budget_s=2", "the forecaster's training budget in seconds"),
    (r"nbody_digits\(\d+", "nbody_digits(16", "videos generated"),
    (r"steps=\d+, seed", "steps=3, seed", "the sampler's reverse steps"),
]


def _blocks() -> list[tuple[str, int, str]]:
    """(language, first line number, code) of each ```python / ```bash block, in order."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```(python|bash)[ \t]*\n(.*?)^```", text, re.M | re.S):
        line = text.count("\n", 0, match.start(2)) + 1
        blocks.append((match.group(1), line, match.group(2)))
    return blocks


def _shrink(code: str) -> str:
    for pattern, replacement, _ in SHRINK:
        code = re.sub(pattern, replacement, code)
    return code


def _bash(command: str, cwd: Path, where: str, timeout: float = 120) -> None:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    assert result.returncode == 0, (
        f"{where}: `{command}` exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # One torch thread per command, as conftest sets for this process: on a busy two-core machine
    # torch's spinning worker threads made the toy commands up to 50 times slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _physml_argv(command: str, bin_dir: Path) -> list[str] | None:
    """The arguments of a plain ``BIN/physml ARGS`` line, or ``None`` for any other command or one
    that needs the shell (pipes, redirections, ``;``/``&&``, expansions, globs)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell will say
        return None
    if not tokens or any(token and set(token) <= set("();<>|&") for token in tokens):
        return None
    if tokens[0] != f"{bin_dir}/physml":
        return None
    if any(char in token for token in tokens[1:] for char in "$`*?[]{}~\\"):
        return None  # expansions and globs (quoted or not: the shell decides, not this test)
    return tokens[1:]


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives the shell: 0 for ``None``, 1 for a non-integer."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@contextlib.contextmanager
def _as_a_fresh_command(cwd: Path, argv0: str, argv: list[str]):
    """Run the body in ``cwd`` as ``argv0 ARGV`` would start, then put back all a command may
    change of this process's state."""
    import matplotlib
    import numpy as np
    import torch

    saved_cwd, saved_env, saved_argv = os.getcwd(), os.environ.copy(), sys.argv[:]
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    grad, deterministic = torch.is_grad_enabled(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # the legacy global generators are what a command could reseed
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002
    backend = matplotlib.get_backend(auto_select=False)
    pyplot = sys.modules.get("matplotlib.pyplot")
    figures = set(pyplot.get_fignums()) if pyplot else set()
    os.chdir(cwd)
    os.environ.update({k: v for k, v in _env().items() if os.environ.get(k) != v})
    sys.argv = [argv0, *argv]
    # a fresh interpreter's, whatever a block before set
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    try:
        with matplotlib.rc_context(), warnings.catch_warnings():
            yield
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        mode = torch.are_deterministic_algorithms_enabled()
        mode = (mode, torch.is_deterministic_algorithms_warn_only_enabled())
        if mode != (deterministic, warn_only):  # the call imports torch._dynamo: only if needed
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        random.setstate(rng[0])
        np.random.set_state(rng[1])  # noqa: NPY002
        torch.set_rng_state(rng[2])
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot:
            for number in set(pyplot.get_fignums()) - figures:
                pyplot.close(number)
            if backend is not None and matplotlib.get_backend(auto_select=False) != backend:
                pyplot.switch_backend(backend)
        if os.environ != saved_env:  # last: torch's lazy imports above may set variables
            os.environ.clear()
            os.environ.update(saved_env)


def _physml_in_process(argv: list[str], command: str, cwd: Path, where: str) -> None:
    """``physml ARGV`` as the console script runs it (``sys.exit(physml.__main__.main(ARGV))``),
    in this process."""
    from physml.__main__ import main

    out, err = _utf8_pipe(), _utf8_pipe()
    with (
        _as_a_fresh_command(cwd, command.split()[0], argv),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = _exit_status(main(argv))
        except SystemExit as exit_:  # argparse's --help and usage errors, or a sys.exit inside
            status = _exit_status(exit_.code)
    assert status == 0, (
        f"{where}: `{command}` (in process) exited with {status}\n"
        f"stdout:\n{_written(out)[-3000:]}\nstderr:\n{_written(err)[-3000:]}"
    )


def _utf8_pipe() -> io.TextIOWrapper:
    """An in-memory stream that says ``encoding == "utf-8"``, as the subprocess's pipe does, so
    that in-process commands print what they print there (marks, not their ASCII spellings)."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)


def _written(stream: io.TextIOWrapper) -> str:
    return stream.buffer.getvalue().decode("utf-8")


def _run_bash_block(code: str, cwd: Path, where: str, physml: dict[str, list[str]]) -> None:
    """Run the block's lines; ``physml["subprocess"]`` collects the ``physml`` lines run as a real
    subprocess of the console script (the README's first), ``physml["in process"]`` the others."""
    if code.startswith("#!") and "#SBATCH" in code:  # NOT_RUN: a Slurm job needs a cluster
        script = cwd / "job.sbatch"
        script.write_text(code)
        _bash(f"bash -n {script}", cwd, where)
        return
    bin_dir = Path(sys.executable).parent  # not resolved: a venv's python is a link
    lines = re.sub(r"\\\n[ \t]*", " ", code).splitlines()
    for line in lines:
        command = line.strip()
        if not command or command.startswith("#"):
            continue
        command = command.replace(".venv/bin/", f"{bin_dir}/")
        if command.startswith("make "):  # NOT_RUN: dry run of the target in the repository
            target = command.split("#")[0].split()[1]
            _bash(f"make -n -C {ROOT} {target}", cwd, where)
            continue
        argv = _physml_argv(command, bin_dir)
        if argv is not None and physml["subprocess"]:
            _physml_in_process(argv, command, cwd, where)
            physml["in process"].append(command)
            continue
        if argv is not None:
            physml["subprocess"].append(command)
        _bash(command, cwd, where)


def test_readme_blocks_are_found():
    languages = [language for language, _, _ in _blocks()]
    assert languages.count("python") >= 3 and languages.count("bash") >= 3


def test_every_readme_code_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    physml: dict[str, list[str]] = {"subprocess": [], "in process": []}
    for language, line, code in _blocks():
        where = f"README.md:{line}"
        code = _shrink(code)
        started = time.perf_counter()
        if language == "python":
            exec(compile(code, where, "exec"), namespace)
        else:
            _run_bash_block(code, tmp_path, where, physml)
        print(f"{where} ({language}): {time.perf_counter() - started:.1f} s")
    print(physml)
    assert len(physml["subprocess"]) == 1, "the installed console script ran in no fresh process"
    assert physml["in process"]


@pytest.mark.parametrize("rule", SHRINK, ids=[rule[0] for rule in SHRINK])
def test_shrink_rules_are_used(rule):
    """A rule the README no longer needs is dead weight: remove it with the command it shrank."""
    pattern, _, _ = rule
    assert any(re.search(pattern, code) for _, _, code in _blocks()), pattern


def test_the_readme_is_a_guide_not_a_record_of_the_work():
    """No issue numbers, commit hashes or links outside the repository."""
    text = README.read_text()
    assert not re.search(r"\bissues?\b", text, re.IGNORECASE)
    assert not re.search(r"\bcommits?\b[^.\n]*\b[0-9a-f]{7,40}\b", text)
    assert not re.search(r"(?<![0-9a-zA-Z_])[0-9a-f]{7,40}(?![0-9a-zA-Z_])", text)
    assert "../shared" not in text


def _tracked() -> set[str] | None:
    """The repository's tracked files (relative paths), or ``None`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.splitlines())


def test_every_relative_link_of_the_readme_and_the_records_is_a_tracked_file():
    """A figure or record the README points at must reach a fresh clone, not only this folder."""
    tracked = _tracked()
    pages = [README, *sorted((ROOT / "benchmarks" / "results").glob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            path = (page.parent / target.split("#")[0]).resolve()
            relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else None
            if relative is None or not path.exists():
                missing.append(f"{page.name}: {target}")
            elif tracked is not None and path.is_file() and relative not in tracked:
                missing.append(f"{page.name}: {target} (not tracked by git)")
    assert not missing, missing


def test_a_plain_physml_line_runs_in_process_and_shell_syntax_goes_to_bash():
    bin_dir = Path(sys.executable).parent
    physml = f"{bin_dir}/physml"
    assert _physml_argv(f"{physml} generate heat --n 8  # ~6 s", bin_dir) == [
        "generate", "heat", "--n", "8",
    ]  # fmt: skip
    assert _physml_argv(f"{physml} train --out 'a b'", bin_dir) == ["train", "--out", "a b"]
    for shell in ("| head", "> list.txt", "&& ls", "; ls", "--out $HOME", "--data *.h5", "&"):
        assert _physml_argv(f"{physml} list {shell}", bin_dir) is None, shell
    assert _physml_argv(f"{bin_dir}/torchrun -m physml.cli train", bin_dir) is None


def test_an_in_process_command_leaks_no_state_and_its_exit_status_is_checked(tmp_path):
    import matplotlib
    import numpy as np
    import torch

    def state() -> tuple:
        return (
            os.getcwd(),
            dict(os.environ),
            sys.argv[:],
            torch.get_num_threads(),
            torch.get_rng_state(),
            np.random.get_state()[1].copy(),  # noqa: NPY002
            random.getstate(),
            matplotlib.rcParams["lines.linewidth"],
        )

    before = state()
    with _as_a_fresh_command(tmp_path, "physml", ["list"]):
        assert Path.cwd() == tmp_path and sys.argv == ["physml", "list"]
        os.environ["PHYSML_README_PROBE"] = "1"
        torch.set_num_threads(2)
        torch.manual_seed(123)
        np.random.seed(123)  # noqa: NPY002
        random.seed(123)
        matplotlib.rcParams["lines.linewidth"] = 9.0
    after = state()
    assert before[:4] == after[:4] and before[6:] == after[6:]
    assert torch.equal(before[4], after[4]) and np.array_equal(before[5], after[5])

    _physml_in_process(["list"], "physml list", tmp_path, "probe")
    with pytest.raises(AssertionError, match="exited with 2"):  # argparse: SystemExit(2)
        _physml_in_process(["generate", "no-such-pde"], "physml generate", tmp_path, "probe")
    with pytest.raises(AssertionError, match="exited with 2"):  # returned: physml's own error
        _physml_in_process(["merge", "missing.h5", "-o", "m.h5"], "physml merge", tmp_path, "p")


def test_an_in_process_command_prints_marks_as_through_a_utf8_pipe():
    from physml import cli

    out = _utf8_pipe()
    with contextlib.redirect_stdout(out):
        marks = cli._marks()
        cli._print_text("done ≥ 2")
    assert marks == ("✓", "✗") and _written(out) == "done ≥ 2\n"
