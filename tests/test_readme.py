"""Every ```python and ```bash block of README.md runs, in order, in one fresh folder.

Python blocks share one namespace (a later snippet may use the names of an earlier one, as a reader
following the tour would) and run with the folder as the working directory; bash blocks run line by
line (backslash continuations joined) through ``bash -c`` in the same folder, with ``.venv/bin/``
pointing at the running interpreter's ``bin`` folder.

The commands are the README's own; only the numbers that set their cost are shrunk, by the explicit
rules in ``SHRINK`` (each a regular expression and its toy replacement). What needs more than this
machine is checked as far as it can be without running it, by ``NOT_RUN``: the ``make`` targets by a
dry run (``make -n``: the target exists and its recipe expands; ``make test`` would run this test
again) and the Slurm script by ``bash -n`` (its syntax).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (pattern, replacement, why): applied to every block before it runs.
SHRINK = [
    (r"--n \d+", "--n 48", "samples: above the default batch of 32, so train runs"),
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
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # One torch thread per command, as conftest sets for this process: on a busy two-core machine
    # torch's spinning worker threads made the toy commands up to 50 times slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run_bash_block(code: str, cwd: Path, where: str) -> None:
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
        _bash(command, cwd, where)


def test_readme_blocks_are_found():
    languages = [language for language, _, _ in _blocks()]
    assert languages.count("python") >= 3 and languages.count("bash") >= 3


def test_every_readme_code_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for language, line, code in _blocks():
        where = f"README.md:{line}"
        code = _shrink(code)
        started = time.perf_counter()
        if language == "python":
            exec(compile(code, where, "exec"), namespace)
        else:
            _run_bash_block(code, tmp_path, where)
        print(f"{where} ({language}): {time.perf_counter() - started:.1f} s")


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
