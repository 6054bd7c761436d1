"""Dataset generation: run a ``pdes`` recipe for many samples and write one HDF5 file.

The run is atomic, resumable and shardable. Samples are solved in chunks; each finished chunk is
saved atomically in a work folder ``OUT.partial/`` beside the output. A killed run leaves only that
folder, never a file that looks finished; running the same command again skips the chunks already
there, so no sample is lost or computed twice. The folder's ``manifest.json`` records every
setting (chunk size, sharding, seed, PDE settings, package version); resuming with any other one is
refused. When every chunk is in, the HDF5 file is assembled under a temporary name and renamed;
a run stopped between that rename and the folder's removal leaves both, and the next run on that
output removes the folder once it finds that the file holds the same dataset.
Sample ``i`` is drawn from a seed derived from ``(seed, i)`` alone, so the data do not depend on
interruptions (bitwise) nor on chunk size or sharding (to round-off: a batched solve may round
the last bits of a sample differently in another batch). The recipes draw from torch generators
(:func:`pdes.problems.generator`) under a seed scheme that the files' ``seed_scheme`` attribute
and the work folders' manifests record: by default ``"seedsequence-mt19937"``, which seeds them
with every bit of the sample's seed. ``"torch-manual-seed"`` keeps only each seed's low 32 bits,
as physml did before the default existed; it continues and redraws data made then (a file or
work folder that records no scheme was drawn by it: its run resumes under it, and the other
shards of its dataset, run with no scheme named, draw under it too), and generation under it
warns of the identical samples it draws (:class:`RepeatedSamplesWarning`;
:func:`repeated_streams` lists them beforehand). A new dataset
takes :func:`pdes.problems.active_seed_scheme` (the environment variable ``PHYSML_SEED_SCHEME``,
else the default) unless ``generate_dataset(..., seed_scheme=...)`` (``physml generate
--seed-scheme``) names one.

File layout: ``u`` ``(sample, time, *space)``, coordinates ``t``, ``x`` (``y``), one
array per PDE parameter under ``params/``, further output fields under ``fields/``,
``sample_index`` and ``sample_seed``, and attributes naming the PDE (``pde``, the recipe's name,
and ``equation``, its equation as the recipe states it), the boundary conditions, the solver, its
settings, the package version, the seed and the seed scheme.

With ``num_shards > 1`` each shard writes ``STEM.shard-I-of-N.h5`` and the last shard to finish
writes ``OUT`` as a small index naming the shard files (read by :func:`physml.data.load`), once
they are checked to form one dataset (:func:`physml.data.check_shards`; shards of another seed or
other settings get no index: the run raises :class:`~physml.data.IndexNotWritten`, a
:class:`~physml.data.ShardError`, after writing its own shard file, and removes the old index of
a dataset regenerated in place). A
shard run stopped after its file was renamed into place but before the index was written is
finished by running the same command again: it finds the shard file holding the dataset asked for
and writes the index if every shard is in (else leaves it to the shards still running);
:func:`physml.data.merge_shards` (``physml merge``) joins shards into one file without copying.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import torch

from pdes import problems
from pdes.errors import SolverError
from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, checked_seed_scheme

from .. import __version__
from .._checks import device as checked_device
from .._checks import file_path, flag, integer, json_value
from .._io import atomic_path, exclusive_lock, remove_leftovers
from .._progress import progress_bar
from ..errors import user_stacklevel
from ..io import atomic_write_text

FORMAT = "physml-dataset/1"
INDEX_FORMAT = "physml-dataset-index/1"
OVERWRITE_HINT = "overwrite=True"
"""How the refusals to replace a file tell a Python caller to replace it; physml's command line
passes its own wording, ``--overwrite``."""
ADDED_LATER = ("equation",)
"""Attributes of generated files that files written by an earlier physml lack; a file without
one still matches one with it (shards joined by :func:`physml.data.merge_shards`, a run
resumed on the file regenerated)."""
UNRECORDED_SCHEME = f"not recorded, so {MANUAL_SEED_SCHEME!r}"
"""How refusals show a missing ``seed_scheme``. A file or work folder without it was drawn by
``"torch-manual-seed"`` (:data:`pdes.problems.MANUAL_SEED_SCHEME`)."""
MAX_SEED = 2**63
"""Dataset seeds lie in ``[0, MAX_SEED)``, as the file stores the seed as an int64 attribute."""


def _checked_seed(name: str, value: object) -> int:
    seed = integer(value)
    if seed is None or not 0 <= seed < MAX_SEED:
        raise ValueError(
            f"{name} must be a non-negative integer below 2**63 (stored as int64), got {value!r}"
        )
    return seed


def named_scheme(scheme: str) -> dict[str, str]:
    """``{"seed_scheme": scheme}`` for a training dataset's fingerprint attributes, ``{}`` for the
    old ``"torch-manual-seed"``: datasets drawn in it were described without a scheme, so their
    checkpoints resume under it."""
    return {} if scheme == problems.MANUAL_SEED_SCHEME else {"seed_scheme": scheme}


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a dataset generated with ``seed`` (a 63-bit integer).

    Numpy's ``SeedSequence([seed, index])``, as :func:`physml.seeds.derived_seed` ``(seed,
    index)``, but its first two 32-bit words combined (``(w0 << 31) ^ w1``): another number, kept
    since generated files store it and merges check it.

    The recipes draw with :func:`pdes.problems.generator`, which under the default seed scheme
    uses every bit of it (two samples draw alike only where their seeds are equal) and under
    ``"torch-manual-seed"`` its low 32 bits (:func:`repeated_streams`)."""
    seed = _checked_seed("seed", seed)
    position = integer(index)
    if position is None or position < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    state = np.random.SeedSequence([seed, position]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# numpy's SeedSequence constants (O'Neill's seed_seq_fe, as numpy.random.bit_generator has them)
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_BLOCK = 1 << 20  # indices hashed at a time: bounds the temporaries to a few MB


def _sample_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """:func:`sample_seed` ``(seed, i)`` for ``i`` in ``range(start, stop)`` as int64 ``(stop -
    start,)``: numpy's ``SeedSequence([seed, i]).generate_state(2)`` computed for many ``i`` at
    once (a million in a fraction of a second, where one ``SeedSequence`` a sample takes
    seconds). ``seed`` is checked; ``0 <= start <= stop <= 2**64``."""
    seed = _checked_seed("seed", seed)
    out = np.empty(stop - start, dtype=np.int64)
    for first in range(start, stop, _BLOCK):
        index = np.arange(first, min(first + _BLOCK, stop), dtype=np.uint64)
        w0, w1 = (word.astype(np.int64) for word in _generate_two_words(_pool(seed, index)))
        out[first - start : first - start + len(index)] = (w0 << 31) ^ w1
    return out


def _pool(seed: int, index: np.ndarray) -> list[np.ndarray]:
    """The four uint32 pool words of ``SeedSequence([seed, i])`` for each ``i`` of ``index``
    (uint64): the entropy is ``seed``'s 32-bit words (one, or two from ``2**32`` on), then the
    index's (its high word only from ``2**32`` on: below, the zero padding stands in its place)."""
    entropy = [np.uint32(seed & 0xFFFFFFFF)] + ([np.uint32(seed >> 32)] if seed >= 2**32 else [])
    entropy += [(index & 0xFFFFFFFF).astype(np.uint32), (index >> 32).astype(np.uint32)]
    entropy += [np.uint32(0)] * (4 - len(entropy))
    constant = _INIT_A

    def hashmix(value):
        nonlocal constant
        value = value ^ np.uint32(constant)
        constant = (constant * _MULT_A) & 0xFFFFFFFF
        value = value * np.uint32(constant)
        return value ^ (value >> np.uint32(16))

    with np.errstate(over="ignore"):
        pool = [np.broadcast_to(hashmix(word), index.shape).astype(np.uint32) for word in entropy]
        for source in range(4):
            for target in range(4):
                if source != target:
                    mixed = np.uint32(_MIX_L) * pool[target] - np.uint32(_MIX_R) * hashmix(
                        pool[source]
                    )
                    pool[target] = mixed ^ (mixed >> np.uint32(16))
    return pool


def _generate_two_words(pool: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``generate_state(2, dtype=np.uint32)`` of a SeedSequence whose pool is ``pool``."""
    words, constant = [], _INIT_B
    with np.errstate(over="ignore"):
        for value in pool[:2]:
            value = value ^ np.uint32(constant)
            constant = (constant * _MULT_B) & 0xFFFFFFFF
            value = value * np.uint32(constant)
            words.append(value ^ (value >> np.uint32(16)))
    return words[0], words[1]


class RepeatedSamplesWarning(UserWarning):
    """Samples of one dataset, drawn under the seed scheme ``"torch-manual-seed"``, whose seeds
    agree in their low 32 bits: torch's ``manual_seed`` keeps only those, so they are the same
    sample."""


SHOWN_REPEATS = 5
"""How many groups of identical samples the :class:`RepeatedSamplesWarning` names."""


def repeated_streams(seed: int, n: int) -> list[tuple[int, ...]]:
    """The identical samples of a dataset of ``n`` samples generated with ``seed`` under the seed
    scheme ``"torch-manual-seed"`` (files and work folders with that ``seed_scheme`` or none):
    the groups of sample indices (each ascending, ordered by its first) whose :func:`sample_seed`
    values agree in their low 32 bits, all that its recipes draw from; ``[]`` when the ``n``
    samples draw ``n`` different streams.

    Check such a dataset before splitting it into training and test data: a pair split between
    them leaks the test into training. For ``n`` random seeds a pair shares its low 32 bits with
    probability about ``1 - exp(-n**2 / 2**33)``: 1.2 % at 10 000 samples, 69 % at 100 000.
    Takes about 0.15 s a million samples, and 9 bytes a sample beside some 60 MB."""
    seed = _checked_seed("seed", seed)
    count = integer(n)
    if count is None or count < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    low = np.empty(count, dtype=np.uint32)  # the bits torch keeps of each sample's seed
    for first in range(0, count, _BLOCK):
        stop = min(first + _BLOCK, count)
        low[first:stop] = _sample_seeds(seed, first, stop) & 0xFFFFFFFF
    ordered = np.sort(low)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if len(repeated) == 0:
        return []
    members = []  # the indices whose word repeats, ascending
    for first in range(0, count, _BLOCK):
        block = low[first : first + _BLOCK]
        at = np.minimum(np.searchsorted(repeated, block), len(repeated) - 1)
        members.append(first + np.flatnonzero(repeated[at] == block))
    indices = np.concatenate(members)
    words = low[indices]
    order = np.argsort(words, kind="stable")  # by word, each word's indices kept ascending
    indices, words = indices[order], words[order]
    starts = np.flatnonzero(words[1:] != words[:-1]) + 1
    return sorted(tuple(group.tolist()) for group in np.split(indices, starts))


LISTED_UP_TO = 2**27
"""The largest dataset whose generation lists its identical samples (the listing takes about
1.3 GB and 20 s there); a larger one, sure to hold millions, is warned of with their expected
number."""


def _warn_of_repeated_samples(seed: int, n: int, problem: problems.Problem) -> None:
    """A :class:`RepeatedSamplesWarning` naming the identical samples of the dataset ``(seed,
    n)`` of recipe ``problem``, if it has any. Where ``n**2 / 2**33``, about how many samples
    of any seed repeat others, is 1 or more, another seed cannot help: the warning says to drop
    the repeats instead. A recipe of one's own (:func:`pdes.problems.register`) is warned of
    on the condition that it draws as the built-in ones do: it may draw its own way."""
    if type(problem).__module__.split(".")[0] == "pdes":
        draws = (
            "so they draw the same numbers (pdes.problems.generator, which every built-in "
            "recipe draws with): identical samples"
        )
    else:
        draws = (
            f"so they are identical samples if recipe {problem.name!r} draws with "
            "pdes.problems.generator, as every built-in recipe does, or another torch "
            "generator seeded by manual_seed"
        )
    why = (
        "seeds that agree in their low 32 bits, all that the seed scheme "
        f"{MANUAL_SEED_SCHEME!r} (torch's manual_seed) keeps, "
        f"{draws}; split between training and test data, such a pair leaks the test into training"
    )
    expected = n * n / 2**33
    drop = (
        f"At this size every seed repeats about {expected:.3g} samples, so another seed does "
        "not help: keep the first sample of each group that physml.data.repeated_streams(seed, "
        "n) lists and drop the others, or generate fewer samples"
    )
    if n > LISTED_UP_TO:
        warnings.warn(
            f"seed={seed}, n={n}: about {expected:.3g} samples repeat others: they have {why}. "
            f"{drop}{DEFAULT_DRAWS_WHOLE_SEEDS}",
            RepeatedSamplesWarning,
            stacklevel=user_stacklevel(),
        )
        return
    groups = repeated_streams(seed, n)
    if not groups:
        return
    repeats = sum(len(group) - 1 for group in groups)
    repeat = "1 sample repeats another" if repeats == 1 else f"{repeats} samples repeat others"
    shown = "; ".join(" = ".join(map(str, group)) for group in groups[:SHOWN_REPEATS])
    more = f"; and {len(groups) - SHOWN_REPEATS} more" if len(groups) > SHOWN_REPEATS else ""
    advice = (
        drop
        if expected >= 1
        else "Generate with another seed or fewer samples (physml.data.repeated_streams(seed, "
        "n) lists them beforehand)"
    )
    warnings.warn(
        f"seed={seed}, n={n}: {repeat}: samples {shown}{more} have {why}. "
        f"{advice}{DEFAULT_DRAWS_WHOLE_SEEDS}",
        RepeatedSamplesWarning,
        stacklevel=user_stacklevel(),
    )


DEFAULT_DRAWS_WHOLE_SEEDS = (
    f". For a new dataset, the default seed scheme {SEED_SCHEME!r} draws every sample from its "
    "whole seed"
)
"""The end of every :class:`RepeatedSamplesWarning`, the advice that holds whatever the size."""


def shard_path(out: Path, shard: int, num_shards: int) -> Path:
    """Where shard ``shard`` of ``num_shards`` is written for the dataset ``out``."""
    if num_shards == 1:
        return out
    return out.with_name(f"{out.stem}.shard-{shard:03d}-of-{num_shards:03d}{out.suffix}")


def shard_range(n: int, shard: int, num_shards: int) -> range:
    """The global sample indices of one shard: contiguous blocks that cover ``range(n)`` once."""
    return range(shard * n // num_shards, (shard + 1) * n // num_shards)


def _check_request(
    n: int, seed: int, shard: int, num_shards: int, chunk: int
) -> tuple[int, int, int, int, int]:
    """The request as plain ints (numpy integers accepted), checked."""
    given = {"n": n, "num_shards": num_shards, "chunk": chunk}
    counts = {name: integer(value) for name, value in given.items()}
    for name, value in counts.items():
        if value is None or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {given[name]!r}")
    n, num_shards, chunk = counts["n"], counts["num_shards"], counts["chunk"]
    seed = _checked_seed("seed", seed)
    which = integer(shard)
    if which is None or not 0 <= which < num_shards:
        raise ValueError(f"shard must be an integer in [0, {num_shards}), got {shard!r}")
    if num_shards > n:
        raise ValueError(f"num_shards must not exceed n={n}, got {num_shards}")
    return n, seed, which, num_shards, chunk


def _check_output(final: Path, overwrite: bool, overwrite_hint: str = OVERWRITE_HINT) -> None:
    """Refuse to write ``final`` where it cannot be written, or exists and ``overwrite`` (a bool:
    text such as ``"no"`` would read as true and replace the file) is false."""
    flag("overwrite", overwrite)
    if final.is_dir():
        raise ValueError(
            f"out: {str(final)!r} is a folder; name the dataset file to write, e.g. "
            f"{str(final / 'data.h5')!r}"
        )
    parent = final.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"out: {str(parent)!r} is a file, not a folder")
    if not parent.is_dir():
        raise ValueError(f"out: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"out: folder {str(parent)!r} is not writable")
    if final.exists() and not overwrite:
        raise FileExistsError(f"out: {str(final)!r} already exists (pass {overwrite_hint})")


def _written(final: Path) -> dict | None:
    """The manifest of the dataset file ``final`` holds, as :func:`_manifest` gives it, without
    the chunk size (which the file does not record); ``None`` for a file that is not one."""
    try:
        with h5py.File(final, "r") as f:
            attributes = {
                key: value.item() if isinstance(value, np.generic) else value
                for key, value in f.attrs.items()
            }
    except (OSError, ValueError, TypeError):
        return None
    try:
        settings = json_value("settings", attributes.get("settings", "null"), "JSON text")
    except ValueError:
        return None
    return {
        "format": attributes.get("format"),
        "physml_version": attributes.get("physml_version"),
        "pde": attributes.get("pde"),
        "n": attributes.get("n_total"),
        "seed": attributes.get("seed"),
        "seed_scheme": attributes.get("seed_scheme"),
        "shard": attributes.get("shard"),
        "num_shards": attributes.get("num_shards"),
        "settings": settings,
    }


def seed_scheme_of(description: Mapping) -> str:
    """The seed scheme that a dataset file's attributes, a work folder's manifest or a training
    dataset's fingerprint attributes record: ``"torch-manual-seed"`` where they record none
    (data drawn by physml before the default scheme)."""
    return description.get("seed_scheme") or MANUAL_SEED_SCHEME


def path_in_scheme(path: Path, scheme: str) -> Path:
    """Where a workflow that keeps its dataset as ``path`` (``name.h5``) keeps the one drawn
    under the seed scheme ``scheme``: ``name-<scheme>.h5``, or ``path`` itself where only it
    exists and records ``scheme`` (a file kept before its name carried the scheme), so that
    runs under two schemes on one folder never read each other's samples."""
    named = path.with_name(f"{path.stem}-{scheme}{path.suffix}")
    if not named.exists() and (kept := _written(path)) is not None:
        if seed_scheme_of(kept) == scheme:
            return path
    return named


def _holds(final: Path, manifest: object) -> bool:
    """Whether the dataset file ``final`` holds the dataset ``manifest`` describes (every entry
    but the chunk size; a missing seed scheme is ``"torch-manual-seed"``)."""
    written = _written(final)
    if written is None or not isinstance(manifest, dict):
        return False
    return seed_scheme_of(written) == seed_scheme_of(manifest) and all(
        manifest.get(k) == v for k, v in written.items() if k != "seed_scheme"
    )


def _holds_other(final: Path, manifest: dict, overwrite_hint: str) -> FileExistsError:
    """The refusal to replace the existing ``final`` without ``overwrite``, naming how the
    dataset it holds differs from ``manifest`` where it is a dataset file."""
    written = _written(final)
    if written is None:
        return FileExistsError(f"out: {str(final)!r} already exists (pass {overwrite_hint})")
    asked = {key: value for key, value in manifest.items() if key != "chunk"}
    differences = "; ".join(_manifest_differences(written, asked))
    return FileExistsError(
        f"out: {str(final)!r} already exists and holds another dataset ({differences}); pass "
        f"{overwrite_hint} to replace it"
    )


def _remove_finished_workdir(final: Path, workdir: Path) -> bool:
    """Remove ``workdir`` if it is the work folder of the run that wrote ``final`` (one stopped
    between the file's rename and the folder's removal): its manifest describes the dataset the
    file holds, so its chunks hold no sample the file lacks. Return whether it was removed."""
    if not workdir.is_dir():
        return False
    try:
        manifest = json_value("manifest.json", (workdir / "manifest.json").read_text(), "JSON")
    except (OSError, ValueError):
        return False
    if not _holds(final, manifest):
        return False
    shutil.rmtree(workdir)
    return True


def _check_settings(problem: problems.Problem, settings: dict) -> None:
    """Build what the file will describe (coordinates, attributes) before anything is written, so
    a grid or option the recipe refuses fails here and leaves no work folder."""
    try:
        problem.coordinates(settings)
        problem.attributes(settings)
    except KeyError as error:
        raise ValueError(f"{problem.name}: unknown setting value {error}") from None


def _manifest(
    pde: str,
    settings: dict,
    n: int,
    seed: int,
    shard: int,
    num_shards: int,
    chunk: int,
    seed_scheme: str = SEED_SCHEME,
) -> dict:
    """Every setting a run's chunks depend on, as JSON would give it back (the resume check)."""
    manifest = {
        "format": FORMAT,
        "physml_version": __version__,
        "pde": pde,
        "n": n,
        "seed": seed,
        "seed_scheme": seed_scheme,
        "shard": shard,
        "num_shards": num_shards,
        "chunk": chunk,
        "settings": settings,
    }
    return json.loads(json.dumps(manifest))


def _manifest_differences(previous: dict, current: dict) -> list[str]:
    """``["chunk was 8, now 16", "settings.nx was 9, now 11", ...]`` in the manifest's order."""

    def flat(manifest: dict) -> dict:
        items = {}
        for key, value in manifest.items():
            if isinstance(value, dict):
                items.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                items[key] = value
        return items

    def shown(manifest: dict, key: str) -> str:
        if manifest.get(key) is None and key == "seed_scheme":
            return UNRECORDED_SCHEME
        return repr(manifest[key]) if key in manifest else "(not recorded)"

    def differs(key: str) -> bool:
        if key == "seed_scheme":  # none recorded: "torch-manual-seed"
            return seed_scheme_of(before) != seed_scheme_of(now)
        return key not in before or key not in now or before[key] != now[key]

    before, now = flat(previous), flat(current)
    keys = [*now, *(key for key in before if key not in now)]
    return [
        f"{key} was {shown(before, key)}, now {shown(now, key)}" for key in keys if differs(key)
    ]


def _prepare_workdir(
    workdir: Path, manifest: dict, overwrite: bool, replace: Callable[[], str]
) -> None:
    """Create the work folder, or check that the unfinished run in it had exactly these settings.

    A resume with any other setting would mix chunks of two runs (another chunk size, for one,
    starts its chunks at other indices and loses or doubles samples), so it is refused before
    anything is solved or written, naming each difference and how to pass ``overwrite`` (as
    ``replace()`` says), which discards the old run.
    """
    manifest_file = workdir / "manifest.json"
    if workdir.exists():
        try:
            previous = json_value("manifest.json", manifest_file.read_text(), "JSON")
            differences = _manifest_differences(previous, manifest)
        except (OSError, ValueError, AttributeError):
            differences = ["its manifest.json is missing or unreadable"]
        if differences:
            if not overwrite:
                raise FileExistsError(
                    f"cannot resume {workdir}/: " + "; ".join(differences) + " (an unfinished "
                    f"run with different settings; remove the folder or pass {replace()})"
                )
            shutil.rmtree(workdir)
    workdir.mkdir(exist_ok=True)
    if not manifest_file.exists():
        atomic_write_text(manifest_file, json.dumps(manifest, indent=1, sort_keys=True))


def _previous_manifest(workdir: Path) -> dict | None:
    """The manifest of the unfinished run in ``workdir``; ``None`` where there is none readable."""
    try:
        previous = json_value("manifest.json", (workdir / "manifest.json").read_text(), "JSON")
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def _chosen_scheme(
    seed_scheme: str | None, manifest: dict, final: Path, out: Path, overwrite: bool
) -> str:
    """The seed scheme a run draws under (see :func:`generate_dataset`'s ``seed_scheme``): the
    one named, else that of the dataset already begun (``final`` kept by a rerun, the unfinished
    run in its work folder, the same dataset's other shards beside ``out``, finished or not),
    else the active one (:func:`pdes.problems.active_seed_scheme`). ``manifest`` is the run's,
    without the scheme."""
    if seed_scheme is not None:
        return seed_scheme
    if final.is_file() and not overwrite:
        written = _written(final)
        if written is not None:
            return seed_scheme_of(written)
    previous = _previous_manifest(final.with_name(final.name + ".partial"))
    if previous is not None:
        as_begun = dict(manifest, seed_scheme=seed_scheme_of(previous))
        same_run = not _manifest_differences(previous, as_begun)
        if same_run or not overwrite:  # resumed, or refused naming only what else differs
            return seed_scheme_of(previous)
    if not overwrite:
        scheme = _other_shards_scheme(manifest, final, out)
        if scheme is not None:
            return scheme
    return problems.active_seed_scheme()


def _other_shards_scheme(manifest: dict, final: Path, out: Path) -> str | None:
    """The seed scheme that the other shards beside ``out`` of the dataset ``manifest`` asks
    for (same recipe, n, seed and settings; their files or the work folders of their unfinished
    runs) agree on; ``None`` where there are none or they do not agree, or for one file."""
    if manifest["num_shards"] == 1:
        return None
    dataset = ("format", "pde", "n", "seed", "settings")
    workdir = final.with_name(final.name + ".partial")
    begun = [_written(path) for path in shards_beside(out) if path != final]
    begun += [_previous_manifest(path) for path in _work_folders_beside(out) if path != workdir]
    schemes = {
        seed_scheme_of(other)
        for other in begun
        if other is not None and all(other.get(key) == manifest[key] for key in dataset)
    }
    return schemes.pop() if len(schemes) == 1 else None


def _replacing(
    overwrite_hint: str, seed_scheme: str | None, manifest: dict, final: Path, out: Path
) -> str:
    """How to pass ``overwrite`` to replace what ``final`` (or its work folder) holds by the
    dataset ``manifest`` asks for: ``overwrite_hint``, with the seed scheme of the other shards
    beside ``out`` named too where ``overwrite`` alone would draw this shard under another one
    (the index would refuse it). A scheme the caller named (``seed_scheme``) is kept by the
    rerun, and a dataset of one file replaced is a new one: there the plain flag is right."""
    if seed_scheme is not None:
        return overwrite_hint
    needed = _other_shards_scheme(manifest, final, out)
    if needed is None or needed == _chosen_scheme(None, manifest, final, out, overwrite=True):
        return overwrite_hint
    return _with_scheme(overwrite_hint, needed)


def _chunk_file(workdir: Path, start: int) -> Path:
    return workdir / f"chunk-{start:09d}.npz"


def _save_chunk(path: Path, indices: list[int], seeds: list[int], batch: problems.Batch) -> None:
    arrays = {
        "u": batch.u.detach().cpu().numpy(),
        "sample_index": np.asarray(indices, dtype=np.int64),
        "sample_seed": np.asarray(seeds, dtype=np.int64),
    }
    for name, values in batch.params.items():
        arrays[f"param:{name}"] = values.detach().cpu().numpy()
    for name, values in batch.fields.items():
        arrays[f"field:{name}"] = values.detach().cpu().numpy()
    with atomic_path(path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)


def _damaged(path: Path, detail: object) -> ValueError:
    return ValueError(
        f"work folder chunk {str(path)!r} is damaged ({detail}); delete it and run again to "
        "solve its samples anew"
    )


def _load_chunk(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a saved chunk, or a clear error naming it when it is damaged (truncated,
    emptied, not a chunk): deleting it makes the next run solve its samples again."""
    try:
        with np.load(path) as chunk:
            arrays = {key: chunk[key] for key in chunk.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _damaged(path, error) from None
    if not {"u", "sample_index", "sample_seed"} <= set(arrays):
        raise _damaged(path, f"it holds {list(arrays)}")
    return arrays


def _write_attributes(target: h5py.AttributeManager, attributes: dict) -> None:
    for key, value in attributes.items():
        target[key] = value if isinstance(value, (int, float, str, np.ndarray)) else str(value)


def sample_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """HDF5 chunks of whole samples (axis 0) for an array ``shape``: about 256 KiB (within
    h5py's 1 MiB chunk cache), at least one sample, the samples spread evenly over the chunks
    (an edge chunk is stored full size)."""
    per_sample = max(int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize, 1)
    count = -(-shape[0] * per_sample // 2**18)
    return (max(1, -(-shape[0] // count)), *shape[1:])


def write_checksummed(group: h5py.Group, name: str, value: np.ndarray) -> h5py.Dataset:
    """``value`` as dataset ``name`` of ``group``, in chunks of whole samples (see
    :func:`sample_chunks`) with HDF5's fletcher32 checksums; an empty or 0-d ``value``, which HDF5
    cannot chunk, and variable-length (object) strings, which it cannot filter, are stored
    plainly."""
    value = np.asarray(value)
    if value.size == 0 or value.ndim == 0 or value.dtype.kind == "O":
        return group.create_dataset(name, data=value)
    chunks = sample_chunks(value.shape, value.dtype)
    return group.create_dataset(name, data=value, chunks=chunks, fletcher32=True)


def _create_sample_datasets(f: h5py.File, first: dict, samples: int) -> dict:
    """Empty datasets ``u``, ``sample_index``, ``sample_seed``, ``params/*`` and ``fields/*`` of
    ``samples`` rows, shaped and typed as the first chunk's arrays; by chunk key. Each carries
    checksums (HDF5's fletcher32, chunked storage), so a corrupted chunk is an error on reading,
    not a wrong value."""
    datasets = {}
    for key in ("u", "sample_index", "sample_seed"):
        shape, dtype = (samples, *first[key].shape[1:]), first[key].dtype
        datasets[key] = f.create_dataset(
            key, shape, dtype, chunks=sample_chunks(shape, dtype), fletcher32=True
        )
    for prefix, group_name in (("param:", "params"), ("field:", "fields")):
        group = f.create_group(group_name)
        for key, values in first.items():
            if key.startswith(prefix):
                name = key.removeprefix(prefix)
                shape = (samples, *values.shape[1:])
                datasets[key] = group.create_dataset(
                    name,
                    shape,
                    values.dtype,
                    chunks=sample_chunks(shape, values.dtype),
                    fletcher32=True,
                )
    return datasets


def _write_chunk(path: Path, arrays: dict, datasets: dict, row: int) -> None:
    """Write the arrays of the chunk at ``path`` into the sample datasets from row ``row`` on."""
    if set(arrays) != set(datasets):
        raise _damaged(path, f"it holds {sorted(arrays)}, not {sorted(datasets)}")
    count = len(arrays["sample_index"])
    for key, values in arrays.items():
        target = datasets[key]
        if values.shape != (count, *target.shape[1:]) or values.dtype != target.dtype:
            raise _damaged(
                path,
                f"{key} is {values.dtype} {values.shape}, expected {target.dtype} "
                f"{(count, *target.shape[1:])}",
            )
        target[row : row + count] = values


def _assemble(
    final: Path, workdir: Path, starts: list[int], problem, settings, manifest: dict
) -> None:
    """Write the file from the saved chunks, one chunk in memory at a time."""
    expected = shard_range(manifest["n"], manifest["shard"], manifest["num_shards"])
    misplaced = ValueError(
        f"work folder {str(workdir)!r}: its chunks do not hold samples "
        f"{expected.start}..{expected.stop - 1} once each, in order; remove it"
    )
    coordinates = problem.coordinates(settings)
    with atomic_path(final, suffix=".h5") as temporary:
        with h5py.File(temporary, "w") as f:
            datasets, done = None, 0
            for start in starts:
                path = _chunk_file(workdir, start)
                arrays = _load_chunk(path)
                count = len(arrays["sample_index"])
                if not np.array_equal(arrays["sample_index"], expected[done : done + count]):
                    raise misplaced
                if datasets is None:
                    datasets = _create_sample_datasets(f, arrays, len(expected))
                _write_chunk(path, arrays, datasets, done)
                done += count
                del arrays
            if done != len(expected):
                raise misplaced
            for name, values in coordinates.items():
                write_checksummed(f, name, np.asarray(values))
            attributes = dict(problem.attributes(settings))
            if attributes.get("pde", problem.name) != problem.name:  # the recipe's equation
                attributes.setdefault("equation", attributes["pde"])
            attributes.update(
                format=FORMAT,
                pde=problem.name,
                physml_version=__version__,
                seed=manifest["seed"],
                seed_scheme=manifest["seed_scheme"],
                n_total=manifest["n"],
                shard=manifest["shard"],
                num_shards=manifest["num_shards"],
                settings=json.dumps(settings, sort_keys=True),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            _write_attributes(f.attrs, attributes)


def missing_shards(out: Path, num_shards: int) -> list[int]:
    """The shards of the dataset ``out`` whose files do not exist (yet)."""
    return [i for i in range(num_shards) if not shard_path(out, i, num_shards).exists()]


def shards_beside(out: Path) -> list[Path]:
    """The shard files of the dataset ``out`` found beside it (of any split), sorted."""
    pattern = f"{glob.escape(out.stem)}.shard-*-of-*{glob.escape(out.suffix)}"
    return sorted(out.parent.glob(pattern))


def _work_folders_beside(out: Path) -> list[Path]:
    """The work folders of unfinished shard runs of the dataset ``out`` (of any split), sorted."""
    pattern = f"{glob.escape(out.stem)}.shard-*-of-*{glob.escape(out.suffix)}.partial"
    return sorted(path for path in out.parent.glob(pattern) if path.is_dir())


def _disagreement(paths: list[Path]) -> str | None:
    """Why the shard files ``paths`` do not form one dataset (:func:`physml.data.check_shards`),
    or ``None`` where they do."""
    from .datasets import DatasetFileError
    from .merge import check_shards

    try:
        check_shards(paths)
    except DatasetFileError as error:
        return str(error).removeprefix("shards disagree, ")
    return None


def _in_scheme(overwrite_hint: str, manifest: Mapping) -> str:
    """How to pass ``overwrite`` to generate a file of the dataset ``manifest`` again: as
    ``overwrite_hint`` says, and with its seed scheme named where it is not the default (a file
    replaced draws under the active scheme, the default unless ``PHYSML_SEED_SCHEME`` says
    otherwise), as :func:`_with_scheme` writes it."""
    scheme = seed_scheme_of(manifest)
    return overwrite_hint if scheme == SEED_SCHEME else _with_scheme(overwrite_hint, scheme)


def _with_scheme(overwrite_hint: str, scheme: str) -> str:
    """``overwrite_hint`` and the seed scheme ``scheme`` in the same form: a flag after a flag
    (``--overwrite --seed-scheme torch-manual-seed``), else an argument (``overwrite=True,
    seed_scheme='torch-manual-seed'``)."""
    if overwrite_hint.startswith("--"):
        return f"{overwrite_hint} --seed-scheme {scheme}"
    return f"{overwrite_hint}, seed_scheme={scheme!r}"


def _write_index(out: Path, num_shards: int, overwrite_hint: str = OVERWRITE_HINT) -> bool:
    """Write the index naming every shard once they all exist; return whether it was written.

    The shards are first checked to form one dataset, as :func:`physml.data.load` checks them
    (:func:`physml.data.check_shards`): shards of another seed or other settings are a
    :class:`~physml.data.IndexNotWritten` and no index, the shard files kept, and an old index
    (a dataset regenerated in place) removed; its advice names the seed scheme most shard files
    record where that is not the default. They are checked again once it is removed: a shard
    finishing meanwhile may have made them agree, and its index is then written anew."""
    from .merge import IndexNotWritten

    if missing_shards(out, num_shards):
        return False
    paths = [shard_path(out, i, num_shards) for i in range(num_shards)]
    reason = _disagreement(paths)
    removed = reason is not None and out.exists()
    if removed:
        out.unlink(missing_ok=True)
        reason = _disagreement(paths)
    if reason is not None:
        old = f"; the old index {str(out)!r} was removed" if removed else ""
        schemes = [seed_scheme_of(written) for written in map(_written, paths) if written]
        scheme = max(schemes, key=schemes.count, default=SEED_SCHEME)  # the first of the most
        raise IndexNotWritten(
            f"index {str(out)!r} not written: shards disagree: {reason}{old}; the shard files "
            "are kept: generate those that differ again with the same settings (pass "
            f"{_in_scheme(overwrite_hint, {'seed_scheme': scheme})}), and the last to finish "
            "writes the index"
        )
    with atomic_path(out, suffix=".h5") as temporary:
        with h5py.File(temporary, "w") as f:
            f.attrs["format"] = INDEX_FORMAT
            f.attrs["shards"] = json.dumps([p.name for p in paths])
    return True


def generate_dataset(
    pde: str,
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    shard: int = 0,
    num_shards: int = 1,
    chunk: int = 32,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
    overwrite_hint: str = OVERWRITE_HINT,
    seed_scheme: str | None = None,
    **options: object,
) -> Path:
    """Generate ``n`` samples of the recipe ``pde`` into the HDF5 file ``out``; return its path.

    Args:
        pde: a recipe name from :func:`pdes.problems.registry` (``heat``, ``burgers``, ...).
        out: the dataset file (with shards, the index file; shards are written beside it). A
            file already holding this request (every setting but ``chunk``; its arrays'
            checksums are read) is kept and returned, as by a requeued job rerunning a finished
            command: a shard's missing index is then written if every shard is in
            (:func:`missing_shards` says which are not). A file holding another dataset is
            refused, naming the differences, unless ``overwrite``. Shards that do not
            form one dataset (another seed, other settings) are a
            :class:`~physml.data.IndexNotWritten` naming the difference, raised after this
            shard is written (an old index, of a dataset regenerated in place, is removed).
        n: samples in the whole dataset (all shards together).
        seed: the dataset seed; sample ``i`` uses :func:`sample_seed` ``(seed, i)``.
        shard, num_shards: which contiguous block of samples this call makes.
        chunk: samples solved together in one batch and saved as one resumable unit.
        overwrite: replace an existing output (or an unfinished run with other settings).
        device: where the solver runs (``"cpu"``, ``"cuda"``, ...).
        progress: show a progress bar of the samples (True or False; drawn on stderr when it
            is a terminal or a Jupyter kernel's output).
        on_chunk: called as ``on_chunk(done, total)`` after each saved chunk.
        overwrite_hint: how the refusals tell to pass ``overwrite`` (physml's command line:
            ``--overwrite``); advice to generate a file of a dataset not in the default seed
            scheme again names its scheme too, in the same form (``--seed-scheme ...`` after a
            flag, else ``seed_scheme=...``), and so does advice to replace a shard whose other
            shards agree on a scheme that ``overwrite`` alone would not draw it under.
        seed_scheme: how samples draw from their seeds, one of
            :data:`pdes.problems.SEED_SCHEMES`, recorded in the file and its work folder.
            ``None`` continues the dataset already begun: a file kept by a rerun and an
            unfinished run resumed keep theirs, and a shard whose dataset's other shards (same
            recipe, n, seed and settings; their files or the work folders of their unfinished
            runs) lie beside ``out`` takes theirs where they agree on one, so a dataset
            begun by physml before the default scheme (no scheme recorded:
            ``"torch-manual-seed"``) is finished as it was begun; a new dataset (or one
            replaced with ``overwrite``) takes :func:`pdes.problems.active_seed_scheme`. A
            scheme named must agree with the file or unfinished run it would keep (else the
            refusals above, naming ``seed_scheme``). Under ``"torch-manual-seed"``, samples
            whose seeds agree in their low 32 bits are identical: a
            :class:`RepeatedSamplesWarning` names them.
        **options: recipe settings (see ``physml generate PDE --help``).
    """
    n, seed, shard, num_shards, chunk = _check_request(n, seed, shard, num_shards, chunk)
    if seed_scheme is not None:
        seed_scheme = checked_seed_scheme("seed_scheme", seed_scheme)
    checked_device("device", device)
    progress = flag("progress", progress)
    problem = problems.get(pde)
    settings = problem.settings(**options)
    _check_settings(problem, settings)
    out_path = file_path("out", out)
    final = shard_path(out_path, shard, num_shards)
    workdir = final.with_name(final.name + ".partial")
    lock = final.with_name(f".{final.name}.lock")
    manifest = _manifest(problem.name, settings, n, seed, shard, num_shards, chunk)
    manifest["seed_scheme"] = _chosen_scheme(seed_scheme, manifest, final, out_path, overwrite)
    try:
        _check_output(final, overwrite, overwrite_hint)
    except FileExistsError:
        with exclusive_lock(lock, f"out: {str(final)!r}"):
            removed = _remove_finished_workdir(final, workdir)
            if _holds(final, manifest):  # a rerun of a finished command (a requeued job)
                from .merge import verify_arrays

                again = f"generate it again (pass {_in_scheme(overwrite_hint, manifest)})"
                verify_arrays(final, "out:", again)
                if num_shards > 1 and not out_path.exists():
                    _write_index(out_path, num_shards, overwrite_hint)  # its run was stopped
                return final
        replace = _replacing(overwrite_hint, seed_scheme, manifest, final, out_path)
        refusal = _holds_other(final, manifest, replace)
        if removed:
            refusal = FileExistsError(
                f"{refusal}; removed {str(workdir)!r}, the work folder of the run that wrote it "
                "(that run was stopped before it could remove the folder)"
            )
        raise refusal from None
    if num_shards > 1 and out_path.exists() and not overwrite:
        replace = _replacing(overwrite_hint, seed_scheme, manifest, final, out_path)
        raise FileExistsError(f"out: index {str(out_path)!r} already exists (pass {replace})")

    with exclusive_lock(lock, f"out: {str(final)!r}"):
        remove_leftovers(final.parent, final.name)
        fresh = not workdir.is_dir()
        if not fresh:
            remove_leftovers(workdir, "chunk-*", pattern=True)
        replace = partial(_replacing, overwrite_hint, seed_scheme, manifest, final, out_path)
        _prepare_workdir(workdir, manifest, overwrite, replace)
        try:
            return _generate_locked(
                problem,
                settings,
                manifest,
                final,
                workdir,
                out_path,
                device,
                progress,
                on_chunk,
                overwrite_hint,
            )
        except (ValueError, TypeError, SolverError):
            # a setting only the solver checks: leave no work folder that holds no sample (it
            # would refuse the corrected rerun as another run's)
            if fresh and workdir.is_dir() and not any(workdir.glob("chunk*")):
                shutil.rmtree(workdir, ignore_errors=True)
            raise


def _generate_locked(
    problem,
    settings,
    manifest,
    final,
    workdir,
    out_path,
    device,
    progress,
    on_chunk,
    overwrite_hint,
) -> Path:
    """The solving, chunk by chunk, and the assembly, under the output's lock."""
    n, seed, chunk = manifest["n"], manifest["seed"], manifest["chunk"]
    shard, num_shards = manifest["shard"], manifest["num_shards"]

    indices = shard_range(n, shard, num_shards)
    starts = list(range(indices.start, indices.stop, chunk))
    done = sum(min(chunk, indices.stop - s) for s in starts if _chunk_file(workdir, s).exists())
    scheme = manifest["seed_scheme"]
    if scheme == MANUAL_SEED_SCHEME and shard == 0 and done < len(indices):  # once a dataset
        _warn_of_repeated_samples(seed, n, problem)
    desc = f"{problem.name} [{shard + 1}/{num_shards}]"
    bar = progress_bar(None, progress, desc, len(indices), initial=done, unit="sample")
    with bar:
        for start in starts:
            path = _chunk_file(workdir, start)
            if path.exists():
                continue
            block = list(range(start, min(start + chunk, indices.stop)))
            seeds = _sample_seeds(seed, block[0], block[-1] + 1).tolist()
            with problems.seed_scheme(scheme):
                batch = problem.generate(seeds, settings, device=device)
            _save_chunk(path, block, seeds, batch)
            bar.update(len(block))
            done += len(block)
            if on_chunk is not None:
                on_chunk(done, len(indices))

    _assemble(final, workdir, starts, problem, settings, manifest)
    shutil.rmtree(workdir)
    if num_shards > 1:
        _write_index(out_path, num_shards, overwrite_hint)
    return final
