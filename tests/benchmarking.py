"""Load a ``benchmarks/<name>.py`` script as a module for tests, without touching ``sys.path``
(each script puts its own folder there for ``common``)."""

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The module of ``benchmarks/<name>.py``, executed once per call; registered in
    ``sys.modules`` as ``benchmark_<name>`` (a dataclass looks up its module there)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sleep_until_interrupted(folder: str) -> None:
    """A stand-in for a benchmark variant in a worker of ``side_by_side``: it makes ``folder``
    (with a file ``started``), sleeps up to 20 s, and if interrupted writes the exception's name
    to ``folder/saved``, as a variant keeps its checkpoint, before letting it go on."""
    Path(folder).mkdir()
    (Path(folder) / "started").touch()
    try:
        time.sleep(20)
    except KeyboardInterrupt as error:
        (Path(folder) / "saved").write_text(type(error).__name__)
        raise
