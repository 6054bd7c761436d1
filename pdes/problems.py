"""The registry of dataset recipes that ``physml generate PDE`` can run.

A :class:`Problem` turns settings (PDE parameters, grid size, output times) and one integer seed per
sample into a batch of solutions. Each sample's randomness comes only from its own seed, so a
dataset holds the same samples whatever the batch size, the sharding or the number of resumes
that made it: bitwise for one chunk size (a resumed run equals an uninterrupted one), to round-off
across chunk sizes and shardings (batched linear algebra may round the last bits of a sample
differently in another batch).
Solver modules define their recipes in a module-level list ``PROBLEMS``; this module collects them.
A sample's draws come from :func:`generator`, under the seed scheme in force
(:func:`active_seed_scheme`, set for a block by :func:`seed_scheme`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch

RECIPE_MODULES = ("gpme", "heat", "burgers", "wave", "stokes", "cavity", "navier_stokes", "tracer")


@dataclass(frozen=True)
class Option:
    """One setting of a recipe: its default, its type and a line of help (a CLI flag ``--name``)."""

    default: float | int | str
    help: str

    @property
    def type(self) -> type:
        return type(self.default)


@dataclass
class Batch:
    """Solutions ``u`` ``(sample, time, *space)`` and parameters ``params[name]`` ``(sample,)``.

    ``fields`` holds further arrays of the same leading shape that a problem outputs beside ``u``
    (e.g. velocity components beside the vorticity); they are written under ``fields/<name>``.
    """

    u: torch.Tensor
    params: dict[str, torch.Tensor]
    fields: dict[str, torch.Tensor] = dataclass_field(default_factory=dict)


class Problem:
    """A dataset recipe: subclasses set name, description and options, and implement the rest."""

    name: str = ""
    description: str = ""
    options: dict[str, Option] = {}

    def settings(self, **overrides: object) -> dict[str, object]:
        """Defaults updated by ``overrides``; unknown names and wrong types raise ``ValueError``."""
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown option(s) {unknown}; known options: {sorted(self.options)}"
            )
        result: dict[str, object] = {}
        for key, option in self.options.items():
            value = overrides.get(key, option.default)
            if option.type in (int, float) and isinstance(value, (bool, np.bool_)):
                raise ValueError(
                    f"{self.name}: option {key} must be a {option.type.__name__}, got {value!r}"
                )
            if option.type is int and isinstance(value, (float, np.floating)):
                if not float(value).is_integer():  # int() would cut 17.9 to 17 in silence
                    raise ValueError(f"{self.name}: option {key} must be an int, got {value!r}")
            try:
                result[key] = option.type(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.name}: option {key} must be a {option.type.__name__}, got {value!r}"
                ) from None
            if isinstance(result[key], float) and not math.isfinite(result[key]):
                raise ValueError(f"{self.name}: option {key} must be finite, got {value!r}")
        return result

    def coordinates(self, settings: dict) -> dict[str, np.ndarray]:
        """Coordinate arrays of the output, e.g. ``{"t": (T,), "x": (X,)}``."""
        raise NotImplementedError

    def attributes(self, settings: dict) -> dict[str, object]:
        """What the file should say about the data: ``pde``, ``boundary``, ``solver``, settings."""
        raise NotImplementedError

    def sample_shape(self, settings: dict) -> tuple[int, ...]:
        """The shape of one sample of ``u``, ``(time, *space)``: the coordinates' lengths."""
        return tuple(len(axis) for axis in self.coordinates(settings).values())

    def field_shapes(self, settings: dict) -> dict[str, tuple[int, ...]]:
        """The shape of one sample of each array ``generate`` puts in ``Batch.fields``, e.g.
        ``{"vx": (T, X, Y)}``: what a dataset stores beside ``u`` (the command line counts it
        before generating). None unless a recipe says so."""
        return {}

    def generate(
        self, seeds: Sequence[int], settings: dict, device: torch.device | str = "cpu"
    ) -> Batch:
        """Solve one sample per seed; sample ``i`` depends on ``seeds[i]`` and ``settings`` only.

        Draw sample ``i``'s random inputs from ``pdes.problems.generator(seeds[i])``: the seeds are
        63-bit, and it uses every bit under the default seed scheme, where a generator of one's
        own made with ``manual_seed`` keeps only the low 32 (two samples would coincide)."""
        raise NotImplementedError


_MT_WORDS = 624  # the 32-bit words of mt19937's state
_WORDS_AT = 24  # byte offset of those words (each a uint64) in torch's CPU generator state
_STATE_BYTES = 5056  # the_initial_seed, left, seeded, next, state[624], the normal-draw caches
_NORMAL_VALID_AT = _WORDS_AT + 8 * _MT_WORDS + 24  # int32 normal_is_valid, after 3 doubles
_FLOAT_NORMAL_VALID_AT = _NORMAL_VALID_AT + 12  # bool, after the pad and a float
_PROBE_SEED = 0x9E3779B97F4A7C15  # any seed: one with high bits, as the words hold only the low


def _init_genrand(seed: int) -> np.ndarray:
    """mt19937's state words after ``init_genrand(seed mod 2**32)`` (Matsumoto and Nishimura's
    seeding, as torch's ``manual_seed`` does it), as uint64 ``(624,)``."""
    words = [seed & 0xFFFFFFFF]
    for i in range(1, _MT_WORDS):
        previous = words[-1]
        words.append((1812433253 * (previous ^ (previous >> 30)) + i) & 0xFFFFFFFF)
    return np.array(words, dtype=np.uint64)


@functools.cache
def _state_template() -> np.ndarray:
    """A fresh torch CPU generator's state bytes (uint8 ``(5056,)``), once checked to be laid out
    as :func:`generator` writes it: a ``RuntimeError`` naming the torch version where not."""
    state = torch.Generator().manual_seed(_PROBE_SEED).get_state()
    found = state.numpy() if state.dtype == torch.uint8 and state.dim() == 1 else None
    if found is not None and found.size == _STATE_BYTES:
        header = found[:_WORDS_AT]
        words = found[_WORDS_AT : _WORDS_AT + 8 * _MT_WORDS].view(np.uint64)
        laid_out = (
            header[:8].view(np.uint64)[0] == _PROBE_SEED  # the_initial_seed
            and header[8:16].view(np.int32).tolist() == [1, 1]  # left, seeded
            and header[16:].view(np.uint64)[0] == 0  # next
            and np.array_equal(words, _init_genrand(_PROBE_SEED))
            and not found[_WORDS_AT + 8 * _MT_WORDS :].any()  # no normal draw cached
        )
        if laid_out:
            return found.copy()
    shape = f"{state.dtype} {tuple(state.shape)}"
    raise RuntimeError(
        f"torch {torch.__version__}: its CPU generator's state ({shape}) is not laid out as "
        f"pdes.problems.generator writes it ({_STATE_BYTES} uint8: the initial seed, left, "
        f"seeded, next, then mt19937's {_MT_WORDS} words as uint64 from byte {_WORDS_AT}), so "
        "samples cannot be drawn from their whole seeds with this torch version"
    )


SEED_SCHEMES = ("seedsequence-mt19937", "torch-manual-seed")
"""How :func:`generator` turns a seed into a sample's torch generator, the default first.

``"seedsequence-mt19937"`` writes the 624 words of numpy's ``SeedSequence(seed)`` as the
mt19937 state, so every bit of the seed counts. ``"torch-manual-seed"`` is
``torch.Generator().manual_seed(seed)``, which keeps only the seed's low 32 bits (seeds agreeing
there draw alike); it is how physml drew before the default existed, kept to continue the data
and reproduce the results made then."""
SEED_SCHEME = SEED_SCHEMES[0]
"""The default seed scheme, ``"seedsequence-mt19937"``, in which every bit of a seed counts."""
MANUAL_SEED_SCHEME = SEED_SCHEMES[1]
"""``"torch-manual-seed"``, the scheme of data made by physml before :data:`SEED_SCHEME` (a
dataset file or work folder that records no scheme was drawn by it)."""
SEED_SCHEME_VARIABLE = "PHYSML_SEED_SCHEME"
"""The environment variable naming the seed scheme in force outside a :func:`seed_scheme` block."""

_ACTIVE_SCHEME: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pdes_seed_scheme", default=None
)


def checked_seed_scheme(name: str, value: object) -> str:
    """``value`` if it names one of :data:`SEED_SCHEMES`: else a ``ValueError`` (a ``TypeError``
    for a non-str) naming ``name``, the choices and what came."""
    choices = ", ".join(map(repr, SEED_SCHEMES))
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a str naming a seed scheme ({choices}), got "
            f"{type(value).__name__} {value!r}"
        )
    if value not in SEED_SCHEMES:
        raise ValueError(f"{name} must name a seed scheme, one of {choices}; got {value!r}")
    return value


def active_seed_scheme() -> str:
    """The seed scheme :func:`generator` draws under now: the innermost :func:`seed_scheme`
    block's, else the environment variable ``PHYSML_SEED_SCHEME``'s (refused, naming it, where
    it names no scheme), else the default :data:`SEED_SCHEME`."""
    active = _ACTIVE_SCHEME.get()
    if active is not None:
        return active
    if SEED_SCHEME_VARIABLE in os.environ:
        return checked_seed_scheme(SEED_SCHEME_VARIABLE, os.environ[SEED_SCHEME_VARIABLE])
    return SEED_SCHEME


def seed_scheme(name: str) -> contextlib.AbstractContextManager[str]:
    """A ``with`` block in which :func:`generator` draws under the seed scheme ``name`` (one of
    :data:`SEED_SCHEMES`), restored on leaving it; blocks nest, and each thread or asyncio task
    has its own (a ``contextvars`` variable). ``"torch-manual-seed"`` redraws data made by
    physml before the default scheme: to continue such a dataset or reproduce its results."""
    return _scheme_block(checked_seed_scheme("name", name))


@contextlib.contextmanager
def _scheme_block(name: str) -> Iterator[str]:
    token = _ACTIVE_SCHEME.set(name)
    try:
        yield name
    finally:
        _ACTIVE_SCHEME.reset(token)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for one sample's draws (on the CPU, so results match on every device),
    seeded under :func:`active_seed_scheme`; ``initial_seed()`` is ``seed``.

    Under the default ``"seedsequence-mt19937"`` its mt19937 state is the 624 words of numpy's
    ``SeedSequence(seed)``, so every bit of the seed counts; it raises ``RuntimeError`` where
    torch's generator state is not laid out as written here (checked once a process), rather
    than seed another way. Under ``"torch-manual-seed"`` it is ``manual_seed(seed)``, which keeps
    only the low 32 bits (seeds agreeing there draw alike), as physml drew before.
    """
    del device
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be a non-negative integer below 2**64, got {seed!r}")
    seed = int(seed)
    if active_seed_scheme() == MANUAL_SEED_SCHEME:
        return torch.Generator().manual_seed(seed)
    words = np.random.SeedSequence(seed).generate_state(_MT_WORDS, dtype=np.uint32)
    return _mt19937(seed, words)


def _mt19937(seed: int, words: np.ndarray) -> torch.Generator:
    """A torch CPU generator whose mt19937 state is ``words`` (``(624,)``, each below ``2**32``)
    and ``initial_seed()`` ``seed``, as ``manual_seed`` leaves it: its first draw twists the
    state first, no normal draw cached."""
    state = _state_template().copy()
    state[:8] = np.array([seed], dtype=np.uint64).view(np.uint8)  # the_initial_seed
    state[8:16] = np.array([1, 1], dtype=np.int32).view(np.uint8)  # left: twist first; seeded
    state[16:_WORDS_AT] = 0  # next
    state[_WORDS_AT : _WORDS_AT + 8 * _MT_WORDS] = words.astype(np.uint64).view(np.uint8)
    state[_NORMAL_VALID_AT : _NORMAL_VALID_AT + 4] = 0  # no cached double normal draw
    state[_FLOAT_NORMAL_VALID_AT] = 0  # no cached float normal draw
    drawn = torch.Generator()
    drawn.set_state(torch.from_numpy(state))
    return drawn


_REGISTERED: dict[str, Problem] = {}


def register(problem: Problem) -> Problem:
    """Make a user-defined recipe available to ``generate_dataset`` under ``problem.name``."""
    if not isinstance(problem, Problem) or not problem.name:
        raise TypeError(f"problem must be a Problem instance with a name, got {problem!r}")
    _REGISTERED[problem.name] = problem
    return problem


def registry() -> dict[str, Problem]:
    """All recipes by name: the built-in ones, then those added with :func:`register`."""
    problems: dict[str, Problem] = {}
    for module_name in RECIPE_MODULES:
        module = importlib.import_module(f"pdes.{module_name}")
        for problem in getattr(module, "PROBLEMS", []):
            problems[problem.name] = problem
    problems.update(_REGISTERED)
    return problems


def get(name: str) -> Problem:
    """The recipe called ``name``, or a ``ValueError`` listing the known ones."""
    problems = registry()
    if name not in problems:
        raise ValueError(f"unknown PDE {name!r}; choose one of {sorted(problems)}")
    return problems[name]
