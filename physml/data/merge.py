"""Joining dataset shards into one HDF5 file without copying: ``physml merge SHARD... -o FILE``.

Shards (``STEM.shard-I-of-N.h5`` from ``physml generate --shard I --num-shards N``) are independent
jobs, so before they are joined (or read through an index) they are checked to form one dataset: the
same PDE, settings and attributes (all but the per-shard ``shard``, ``num_shards``, ``created`` and,
in a shard converted to PDEBench or The Well and back, ``source_format`` and ``source_file``, so
such a shard joins the others; the attributes The Well's reader adds, ``dataset_name``,
``grid_type``, ``field`` and ``well_boundary_conditions``, count only where another shard has them
or they say more than the shard's own (:func:`~physml.data.interchange.well_restated`); an
``equation`` that shards written before physml recorded it lack is taken from those that have it),
the same package and format version, the same seed scheme (each stored ``sample_seed`` is
:func:`~physml.data.generate.sample_seed` ``(seed, i)`` of its ``sample_index`` ``i``, and the
``seed_scheme`` attribute, how the samples drew from those seeds, agrees: a shard without it,
written by physml before the default scheme, counts as ``"torch-manual-seed"``), the same
per-sample shapes, dtypes and
coordinates, and sample ranges that cover ``0..n_total-1`` once. Each disagreement is a
:class:`ShardError` naming the shard file and the attribute. Sample ``i`` depends on ``(seed, i)``
and the settings alone, so shards of different splits join as long as their ranges do (shard 0
of 2 with shards 2 and 3 of 4: a failed shard job redone as smaller ones).

The merged file holds HDF5 virtual datasets ``u``, ``params/*``, ``fields/*``, ``sample_index`` and
``sample_seed`` that read from the shards, copies of the coordinates and the attributes, and
``merged_from`` (the shard paths as stored). Path rule: a shard is stored by its path relative to
the merged file's folder (absolute only where none exists, e.g. on another Windows drive), so the
merged file and its shards can be moved or copied together, keeping their relative places; a shard
moved alone is missing. :func:`physml.data.load` checks the shards of a merged file before reading
it: a missing or changed shard is an error, never the fill values HDF5 reads for a missing source.
A damaged shard (a failed checksum) is refused by the merge, which reads every shard once, chunk by
chunk (``physml merge --no-verify`` skips that read); reading the merged file names it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from pdes.problems import MANUAL_SEED_SCHEME

from .._checks import file_path, flag, one_memory_reading
from .._io import atomic_path, existing_file
from .datasets import (
    REGENERATE,
    DatasetFileError,
    check_self_contained,
    check_settings,
    damaged,
    open_hdf5,
    read_whole,
    shard_names,
)
from .generate import (
    ADDED_LATER,
    FORMAT,
    INDEX_FORMAT,
    OVERWRITE_HINT,
    _check_output,
    sample_seed,
    seed_scheme_of,
    write_checksummed,
)
from .interchange import WELL_READ, well_restated

PER_SHARD_ATTRIBUTES = ("shard", "num_shards", "created", "source_format", "source_file")
"""Attributes of one shard file, not of the dataset, saying when and how it was written (a
shard converted to PDEBench or The Well and back names the file it was read from)."""
MERGED_ATTRIBUTES = (*PER_SHARD_ATTRIBUTES, "merged_from")  # set by the merge itself
SAMPLE_ARRAYS = ("u", "sample_index", "sample_seed")  # plus every array under the groups below
SAMPLE_GROUPS = ("params", "fields")
FIRST_COMPARED = ("pde", "format", "physml_version", "seed", "seed_scheme", "n_total", "settings")


class ShardError(DatasetFileError):
    """Shard files that do not form one dataset, or a merged file whose shards changed."""


class IndexNotWritten(ShardError):
    """Every shard is in but they do not form one dataset: no index is written (an old one is
    removed), the shard files are kept (a shard run raises it after writing its own file)."""


@dataclass
class Shard:
    """One checked shard file: its global samples and what must agree with the other shards.

    ``arrays`` maps each per-sample array (``"u"``, ``"params/a"``, ...) to its shape after the
    sample axis and its dtype; ``coordinates`` holds the copied arrays (``t``, ``x``, ``y``);
    ``num_shards`` the split it was generated in (shards of different splits may join);
    ``restated`` the attributes The Well's reader gave a shard read back from The Well that
    restate its others (:func:`~physml.data.interchange.well_restated`), left out of
    ``attrs`` unless another shard has them; ``from_the_well`` whether the shard was read back
    from The Well (its ``source_format`` is ``"the_well"``), so that a refusal over attributes
    The Well's reader adds can say why they differ.
    """

    path: Path
    samples: range
    attrs: dict[str, object]
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]]
    coordinates: dict[str, np.ndarray]
    num_shards: object = None
    restated: dict[str, object] = field(default_factory=dict)
    from_the_well: bool = False


def _sample_array_names(f: h5py.File) -> list[str]:
    names = [name for name in SAMPLE_ARRAYS if name in f]
    for group in SAMPLE_GROUPS:
        names += [f"{group}/{key}" for key in f.get(group, {})]
    return names


def _plain(value: object) -> object:
    """An HDF5 attribute's numpy scalar as the Python one (other values as they are)."""
    return value.item() if isinstance(value, np.generic) else value


def _description(f: h5py.File, ignore: Sequence[str]) -> tuple[dict, dict, dict]:
    """``(attributes, per-sample arrays, coordinates)`` of an open dataset file."""
    attrs = {key: _plain(value) for key, value in f.attrs.items() if key not in ignore}
    arrays = {name: (f[name].shape[1:], f[name].dtype) for name in _sample_array_names(f)}
    coordinates = {
        key: _read(f, key)
        for key in f
        if isinstance(f[key], h5py.Dataset) and key not in SAMPLE_ARRAYS
    }
    return attrs, arrays, coordinates


def _read(f: h5py.File, name: str) -> np.ndarray:
    """Dataset ``name`` of ``f``; a damaged one (a failed checksum) is a DatasetFileError."""
    try:
        return read_whole(f[name], f"{f.filename!r}: {name}")
    except OSError as error:
        raise DatasetFileError(f"{f.filename!r} could not be read: {name}: {error}") from None


def _span(start: int, stop: int) -> str:
    return f"{start}" if stop == start + 1 else f"{start}-{stop - 1}"


def _shown(values: dict, key: str) -> str:
    if key not in values:
        return "(absent)"
    text = repr(values[key])
    return text if len(text) <= 80 else text[:77] + "..."


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def _changed(theirs: dict, ours: dict) -> list[str]:
    """The keys whose values differ between two dicts (or that one lacks), ours first."""
    keys = [*ours, *(key for key in theirs if key not in ours)]
    return [
        key
        for key in keys
        if key not in ours or key not in theirs or not _same(theirs[key], ours[key])
    ]


def _settings_differences(theirs: dict, ours: dict, reported: list[str]) -> list[str]:
    """The ``settings`` attributes (JSON) of two shards, key by key (``"settings.modes 8 vs
    4"``), less the keys ``reported`` as attributes of their own; shown whole where they are
    not two JSON objects or differ only in how they are written."""
    whole = [f"settings {_shown(theirs, 'settings')} vs {_shown(ours, 'settings')}"]
    try:
        settings = [json.loads(attrs["settings"]) for attrs in (theirs, ours)]
    except (KeyError, TypeError, ValueError):
        return whole
    if not all(isinstance(value, dict) for value in settings) or not _changed(*settings):
        return whole
    return [
        f"settings.{key} {_shown(settings[0], key)} vs {_shown(settings[1], key)}"
        for key in _changed(*settings)
        if key not in reported
    ]


def _with_scheme(attrs: dict) -> dict:
    """``attrs`` with the ``seed_scheme`` it was drawn by, for comparison: a shard without one,
    ``"torch-manual-seed"`` (:func:`~physml.data.generate.seed_scheme_of`)."""
    return dict(attrs, seed_scheme=seed_scheme_of(attrs))


def _differences(theirs: Shard, ours: Shard) -> list[str]:
    """What differs between two descriptions, as ``"seed 7 vs 5"`` (theirs first)."""
    keys = [
        key
        for key in _changed(_with_scheme(theirs.attrs), _with_scheme(ours.attrs))
        if key not in ADDED_LATER or (key in theirs.attrs and key in ours.attrs)
    ]
    keys.sort(key=lambda k: FIRST_COMPARED.index(k) if k in FIRST_COMPARED else len(FIRST_COMPARED))
    found = []
    for key in keys:
        if key == "settings":
            found += _settings_differences(theirs.attrs, ours.attrs, keys)
        else:
            found.append(f"{key} {_shown(theirs.attrs, key)} vs {_shown(ours.attrs, key)}")
    for name in [*ours.arrays, *(n for n in theirs.arrays if n not in ours.arrays)]:
        if name not in ours.arrays or name not in theirs.arrays:
            present = "present vs absent" if name in theirs.arrays else "absent vs present"
            found.append(f"array {name} {present}")
            continue
        (shape, dtype), (our_shape, our_dtype) = theirs.arrays[name], ours.arrays[name]
        if shape != our_shape:
            found.append(f"{name} per-sample shape {shape} vs {our_shape}")
        if dtype != our_dtype:
            found.append(f"{name} dtype {dtype} vs {our_dtype}")
    for key in sorted(set(ours.coordinates) | set(theirs.coordinates)):
        mine, other = ours.coordinates.get(key), theirs.coordinates.get(key)
        if mine is None or other is None or not _same(other, mine):
            describe = [
                "(absent)" if c is None else f"shape {c.shape} {c.dtype}" for c in (other, mine)
            ]
            if describe[0] == describe[1]:
                found.append(f"coordinate {key} values differ")
            else:
                found.append(f"coordinate {key} {describe[0]} vs {describe[1]}")
    return found


@one_memory_reading()
def read_shard(path: str | os.PathLike) -> Shard:
    """Open one shard file and check it on its own: a dataset (not an index nor a merged file),
    per-sample arrays of one length, consecutive ``sample_index``, seeds of the seed scheme."""
    path = existing_file("path", path, "shard file")
    with open_hdf5(path, "shard") as f:
        kind = f.attrs.get("format")
        if kind == INDEX_FORMAT:
            raise ShardError(f"{str(path)!r} is the index of a sharded dataset, not a shard")
        if kind != FORMAT:
            raise DatasetFileError(
                f"{str(path)!r} is not a physml dataset shard (format {kind!r}, keys {list(f)})"
            )
        lacking = [name for name in SAMPLE_ARRAYS if name not in f]
        if lacking:
            raise DatasetFileError(
                f"{str(path)!r} is not a physml dataset shard: it lacks {lacking} (keys "
                f"{list(f)}); a shard is a file physml generate wrote, or a physml copy of one"
            )
        if "merged_from" in f.attrs:
            raise ShardError(f"{str(path)!r} is a merged file; give the shards it reads instead")
        check_self_contained(path, f, label="shard")
        check_settings(f"shard: {str(path)!r}:", f.attrs.get("settings"))
        attrs, arrays, coordinates = _description(f, PER_SHARD_ATTRIBUTES)
        restated, from_the_well = {}, _plain(f.attrs.get("source_format")) == "the_well"
        if from_the_well:
            restated = {key: attrs.pop(key) for key in well_restated(attrs, arrays["u"][0][1:])}
        num_shards = _plain(f.attrs.get("num_shards"))
        index = _read(f, "sample_index")
        seeds = _read(f, "sample_seed")
        for name in arrays:
            if f[name].shape[0] != index.size:
                raise ShardError(
                    f"{str(path)!r}: {name} holds {f[name].shape[0]} samples, "
                    f"sample_index {index.size}"
                )
    if index.size == 0:
        raise ShardError(f"{str(path)!r} holds no samples")
    start = int(index[0])
    if not np.array_equal(index, np.arange(start, start + index.size)):
        raise ShardError(f"{str(path)!r}: sample_index is not one run of consecutive samples")
    if "seed" not in attrs:
        raise ShardError(f"{str(path)!r} has no seed attribute")
    seed = attrs["seed"]
    expected = np.array([sample_seed(seed, int(i)) for i in index], dtype=np.int64)
    wrong = np.flatnonzero(expected != seeds)
    if wrong.size:
        first = wrong[0]
        raise ShardError(
            f"{str(path)!r}: sample_seed of sample {index[first]} is {seeds[first]}, but "
            f"sample_seed(seed={seed}, {index[first]}) is {expected[first]} ({wrong.size} of "
            f"{index.size} samples differ): not this dataset's seed scheme"
        )
    samples = range(start, start + index.size)
    return Shard(path, samples, attrs, arrays, coordinates, num_shards, restated, from_the_well)


def _chunked_array_names(f: h5py.File) -> list[str]:
    """The names of ``f``'s arrays stored in chunks, those in groups too: the ones carrying a
    checksum."""
    names = []

    def add_chunked(name: str, item) -> None:
        if isinstance(item, h5py.Dataset) and item.chunks is not None:
            names.append(name)

    f.visititems(add_chunked)
    return names


def verify_arrays(path: Path, label: str = "shard", remedy: str = REGENERATE) -> None:
    """Read every chunked array of the file ``path`` (named as ``label``: the per-sample ones,
    the coordinates ``t`` and ``x`` too), one HDF5 chunk at a time: a failed checksum is a
    :class:`DatasetFileError` naming the file and the array, ending with ``remedy``. Costs one
    full read of the file; arrays stored unchunked carry no checksum and are not read."""
    with open_hdf5(path, label.rstrip(":")) as f:
        for name in _chunked_array_names(f):
            dataset = f[name]
            try:
                for block in dataset.iter_chunks():
                    dataset[block]
            except OSError as error:
                raise damaged(label, path, name, error, remedy) from None


def _located(path: Path, stored: str) -> Path:
    """Where the shard a merged file at ``path`` stores as ``stored`` lies (the path rule)."""
    return Path(stored) if os.path.isabs(stored) else path.parent / stored


def damaged_shards(path: Path, f: h5py.File) -> list[str]:
    """Why the shards behind the merged file ``f`` (at ``path``) fail a read: one message per
    damaged shard (see :func:`verify_arrays`)."""
    stored = {
        source.file_name for name in _sample_array_names(f) for source in f[name].virtual_sources()
    }
    found = []
    for name in sorted(stored):
        try:
            verify_arrays(_located(path, name))
        except DatasetFileError as error:
            found.append(str(error))
    return found


def _check_coverage(shards: list[Shard]) -> None:
    """Ranges disjoint and together ``0..n_total-1``; else say which samples overlap or lack."""
    n_total = shards[0].attrs.get("n_total")
    if isinstance(n_total, bool) or not isinstance(n_total, int):
        raise ShardError(f"{str(shards[0].path)!r} has no integer n_total attribute")
    for before, after in zip(shards, shards[1:], strict=False):
        if after.samples.start < before.samples.stop:
            overlap = _span(after.samples.start, min(before.samples.stop, after.samples.stop))
            raise ShardError(
                f"shards {str(before.path)!r} and {str(after.path)!r} both hold samples {overlap}"
            )
    if shards[-1].samples.stop > n_total:
        raise ShardError(
            f"{str(shards[-1].path)!r} holds samples up to {shards[-1].samples.stop - 1}, "
            f"beyond n_total={n_total}"
        )
    gaps, covered = [], 0
    for shard in [*shards, None]:
        start = n_total if shard is None else shard.samples.start
        if start > covered:
            gaps.append((covered, start))
        covered = n_total if shard is None else shard.samples.stop
    if gaps:
        splits = {shard.num_shards for shard in shards}
        num_shards = splits.pop() if len(splits) == 1 else None
        hint = ""
        if isinstance(num_shards, int) and 0 < num_shards <= n_total:
            lacking = [
                i
                for i in range(num_shards)
                if any(
                    i * n_total // num_shards < stop and (i + 1) * n_total // num_shards > start
                    for start, stop in gaps
                )
            ]
            hint = f" (shard {', '.join(map(str, lacking))} of {num_shards} not given?)"
        raise ShardError(
            f"samples {', '.join(_span(*gap) for gap in gaps)} of 0..{n_total - 1} are in no "
            f"shard given{hint}"
        )


def _fullest(shards: list[Shard]) -> Shard:
    """The first of ``shards`` that has the most :data:`ADDED_LATER` attributes and a
    ``seed_scheme`` (which shards written before it was recorded lack)."""
    recorded = (*ADDED_LATER, "seed_scheme")
    return max(shards, key=lambda shard: sum(key in shard.attrs for key in recorded))


def joined_attributes(shards: list[Shard]) -> dict[str, object]:
    """The dataset's attributes of checked ``shards`` joined into one, as a merged file and a
    shard index describe it: the fullest shard's, without its per-shard ones, as shard 0 of 1."""
    return dict(_fullest(shards).attrs, shard=0, num_shards=1)


@one_memory_reading()
def check_shards(paths: Sequence[str | os.PathLike]) -> list[Shard]:
    """Check that the shard files form one dataset; return them in sample order.

    Raises :class:`ShardError` naming the file and the attribute for each kind of disagreement
    (see the module docstring), ``FileNotFoundError`` for a missing file.
    """
    if not paths:
        raise ValueError("shards: give at least one shard file")
    shards = [read_shard(path) for path in paths]
    seen: dict[str, Path] = {}
    for shard in shards:
        key = os.path.normcase(os.path.abspath(shard.path))
        if key in seen:
            raise ShardError(f"shard {str(shard.path)!r} is given twice")
        seen[key] = shard.path
    described = {key for shard in shards for key in shard.attrs}
    for shard in shards:  # what The Well's reader restated counts where another shard says it
        shard.attrs.update({k: v for k, v in shard.restated.items() if k in described})
    first = _fullest(shards)
    for other in (shard for shard in shards if shard is not first):
        differences = _differences(other, first)
        if differences:
            raise ShardError(
                f"shards disagree, {str(other.path)!r} vs {str(first.path)!r}: "
                + "; ".join(differences)
                + _well_hint(other, first, differences)
                + _scheme_hint(other, first)
            )
    shards.sort(key=lambda shard: shard.samples.start)
    _check_coverage(shards)
    return shards


def _scheme_hint(other: Shard, first: Shard) -> str:
    """What a ``seed_scheme`` that differs between two shards means: ``""`` where it agrees."""
    schemes = [seed_scheme_of(shard.attrs) for shard in (other, first)]
    if schemes[0] == schemes[1]:
        return ""
    unrecorded = [str(shard.path) for shard in (other, first) if "seed_scheme" not in shard.attrs]
    none = f" ({unrecorded[0]!r} records none: {MANUAL_SEED_SCHEME!r})" if unrecorded else ""
    return (
        f". Their samples drew from their seeds under other seed schemes{none}, so they are "
        "not one dataset: generate those that differ again under the others' scheme "
        f"(seed_scheme={schemes[1]!r}; physml generate --seed-scheme {schemes[1]})"
    )


def _well_hint(other: Shard, first: Shard, differences: list[str]) -> str:
    """Why shards read back from The Well may differ in :data:`WELL_READ` attributes: ``""``
    where neither is such a shard or no such attribute differs."""
    keys = [key for key in WELL_READ if any(line.startswith(f"{key} ") for line in differences)]
    read_back = [str(shard.path) for shard in (other, first) if shard.from_the_well]
    if not keys or not read_back:
        return ""
    return (
        f". {' and '.join(map(repr, read_back))} read back from The Well: its reader adds "
        f"{', '.join(keys)}, which the merge passes over only where they restate the shard's own "
        "attributes (its pde as dataset_name, 'u' as field, its boundary text as "
        "well_boundary_conditions); these do not (The Well file changed, or u read from another "
        "field?): convert the shard from its physml original, or from The Well file as written"
    )


def named_shards(argument: str, index: Path, names: Sequence[str]) -> list[Path]:
    """The shard files ``names`` beside ``index``, the index file given as ``argument``: a
    missing one is a ``FileNotFoundError`` naming both."""
    shards = [index.with_name(name) for name in names]
    for shard in shards:
        if not shard.is_file():
            raise FileNotFoundError(
                f"{argument}: index {str(index)!r} names {str(shard)!r}, which does not exist"
            )
    return shards


def shard_files(argument: str, paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The shard files of ``paths`` (given as ``argument``), an index standing for the shards it
    names; a missing one is a ``FileNotFoundError`` naming ``argument`` (and the index)."""
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a list of shard files, got the one path {paths!r}")
    if not isinstance(paths, Iterable):
        raise TypeError(f"{argument} must be a list of shard files, got {type(paths).__name__}")
    found: list[Path] = []
    for path in (file_path(argument, path) for path in paths):
        names = _index_names(argument, path)
        if names is None:
            found.append(existing_file(argument, path, "shard file"))
        else:
            found += named_shards(argument, path, names)
    return found


def _index_names(argument: str, path: Path) -> list[str] | None:
    """The shard names the index file ``path`` (given as ``argument``) lists, or ``None`` if
    it is no index; an index whose ``shards`` attribute is damaged is a ``DatasetFileError``."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != INDEX_FORMAT:
                return None
            raw = f.attrs.get("shards")
    except (OSError, ValueError):
        return None
    return shard_names(path, raw, argument)


def _stored_path(shard: Path, out: Path) -> str:
    """How the merged file names a shard: relative to the merged file's folder where possible."""
    target = os.path.abspath(shard)
    try:
        return Path(os.path.relpath(target, os.path.abspath(out.parent))).as_posix()
    except ValueError:  # another drive: no relative path exists
        return target


def _fill_value(dtype: np.dtype) -> object:
    """What a virtual dataset reads where a source is missing: NaN or -1 where possible."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "i":
        return -1
    return None


def merge_shards(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    overwrite: bool = False,
    argument: str = "paths",
    verify: bool = True,
    overwrite_hint: str = OVERWRITE_HINT,
) -> Path:
    """Check the shard files and join them into ``out`` as HDF5 virtual datasets; return its path.

    ``paths`` are shard files in any order (an index file stands for the shards it names). No
    sample is copied: ``u`` ``(n_total, time, *space)`` and the other per-sample arrays read from
    the shards, which must stay beside ``out`` (see the module docstring for the path rule).
    ``verify`` reads every shard once, chunk by chunk (:func:`verify_arrays`), so that a damaged
    shard is refused now rather than when the merged file is read; ``verify=False`` (``physml
    merge --no-verify``) skips that read, and :func:`physml.data.load` then names the damaged
    shard. The file is written under a temporary name and renamed. A missing shard is a
    ``FileNotFoundError`` naming ``argument`` (``physml merge``: ``SHARD``) and the index that
    names it, an index whose ``shards`` attribute is no JSON list of file names in its folder a
    ``DatasetFileError`` naming both; an existing ``out`` is refused unless ``overwrite``,
    telling to pass it as ``overwrite_hint`` says (``physml merge``: ``--overwrite``).
    """
    out = file_path("out", out)
    verify = flag("verify", verify)
    shards = check_shards(shard_files(argument, paths))
    for shard in shards:
        if out.is_file() and os.path.samefile(out, shard.path):
            raise ValueError(f"out: {str(out)!r} is one of the shards; choose another name")
    _check_output(out, overwrite, overwrite_hint)
    if verify:
        for shard in shards:
            verify_arrays(shard.path)
    n_total = shards[-1].samples.stop
    stored = [_stored_path(shard.path, out) for shard in shards]
    with atomic_path(out, suffix=".h5") as temporary:
        with h5py.File(temporary, "w") as f:
            for group in SAMPLE_GROUPS:
                f.create_group(group)
            for name, (shape, dtype) in shards[0].arrays.items():
                layout = h5py.VirtualLayout(shape=(n_total, *shape), dtype=dtype)
                for shard, source_path in zip(shards, stored, strict=True):
                    layout[shard.samples.start : shard.samples.stop] = h5py.VirtualSource(
                        source_path, name, shape=(len(shard.samples), *shape), dtype=dtype
                    )
                f.create_virtual_dataset(name, layout, fillvalue=_fill_value(dtype))
            for key, values in shards[0].coordinates.items():
                write_checksummed(f, key, values)
            for key, value in joined_attributes(shards).items():
                f.attrs[key] = value
            f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            f.attrs["merged_from"] = json.dumps(stored)
    return out


def _check_vds_prefix(path: Path, f: h5py.File) -> None:
    """Refuse a merged file whose shards HDF5 would read from elsewhere than the checked ones:
    it looks in each folder of ``HDF5_VDS_PREFIX`` (``${ORIGIN}`` is the merged file's folder)
    before the merged file's folder, for a shard stored by a relative name."""
    prefix = os.environ.get("HDF5_VDS_PREFIX")
    if not prefix:
        return
    for source in sorted({source.file_name for source in f["u"].virtual_sources()}):
        if os.path.isabs(source):
            continue
        checked = path.parent / source
        for folder in prefix.split(os.pathsep):
            found = Path(folder.replace("${ORIGIN}", str(path.parent))) / source
            if found.is_file():
                if not os.path.samefile(found, checked):
                    raise ShardError(
                        f"path: {str(path)!r}: HDF5_VDS_PREFIX={prefix!r} makes HDF5 read the "
                        f"shard {source!r} from {str(found)!r}, not the checked {str(checked)!r}; "
                        "unset it or point it at the shards' folder"
                    )
                break


def check_merged(path: Path, f: h5py.File) -> None:
    """Refuse to read a merged file whose shards are missing or no longer the ones it joined.

    HDF5 reads fill values for a missing source (or, failing the merged file's folder, looks in the
    working directory), so every source is resolved as the path rule says and checked first.
    """
    sources: dict[str, dict[str, tuple[int, int, str]]] = {}
    for name in _sample_array_names(f):
        dataset = f[name]
        if not dataset.is_virtual:
            raise ShardError(f"{str(path)!r}: {name} is not a virtual dataset in a merged file")
        for source in dataset.virtual_sources():
            start, end = source.vspace.get_select_bounds()
            sources.setdefault(source.file_name, {})[name] = (
                start[0],
                end[0] + 1,
                source.dset_name,
            )
    located = {}
    for stored in sources:
        shard = _located(path, stored)
        if not shard.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is a merged file that reads the shard {stored!r}, which is "
                f"missing (looked for {str(shard)!r}); keep the shards beside it, at the same "
                "relative paths"
            )
        located[stored] = shard
    _check_vds_prefix(path, f)
    try:
        shards = check_shards(list(located.values()))
    except ShardError as error:
        raise ShardError(f"merged file {str(path)!r}: {error}") from None
    attrs, arrays, coordinates = _description(f, MERGED_ATTRIBUTES)
    merged = Shard(path, range(f["u"].shape[0]), attrs, arrays, coordinates)
    reference = replace(
        shards[0],
        attrs={k: v for k, v in shards[0].attrs.items() if k not in MERGED_ATTRIBUTES},
    )
    differences = _differences(reference, merged)
    if differences:
        raise ShardError(
            f"{str(path)!r}: its shards changed since the merge, {str(reference.path)!r} vs the "
            "merged file: " + "; ".join(differences)
        )
    if shards[-1].samples.stop != len(merged.samples):
        raise ShardError(
            f"{str(path)!r} holds {len(merged.samples)} samples, its shards "
            f"{shards[-1].samples.stop}"
        )
    by_path = {shard.path: shard for shard in shards}
    for stored, shard_path in located.items():
        shard = by_path[shard_path]
        if set(sources[stored]) != set(arrays):
            raise ShardError(
                f"{str(path)!r} reads {sorted(sources[stored])} from {str(shard_path)!r}, "
                f"not every per-sample array {sorted(arrays)}"
            )
        for name, (start, stop, dataset_name) in sources[stored].items():
            if (start, stop, dataset_name) != (shard.samples.start, shard.samples.stop, name):
                raise ShardError(
                    f"{str(path)!r} reads samples {_span(start, stop)} of {name} from "
                    f"{dataset_name} in {str(shard_path)!r}, which now holds samples "
                    f"{_span(shard.samples.start, shard.samples.stop)}"
                )
