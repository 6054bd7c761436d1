"""Reading physml HDF5 datasets and serving them as torch input/target pairs.

``load`` reads a dataset (or a sharded dataset's index) into a :class:`PDEData`. The two torch
datasets turn it into training pairs, channel-first as ``neuraloperator`` expects:

- :class:`SingleStepDataset`: ``a(x) = u(x, t_in)`` ``(1, *space)`` -> ``u(x, T)`` ``(1, *space)``;
- :class:`MultiStepDataset`: ``u(x, 0)`` ``(1, *space)`` -> ``u(x, t_1..t_K)`` ``(K, *space)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pdes.checks import floating_dtype

from .._checks import file_path, fits_in_memory, integer, json_value, one_memory_reading
from .generate import FORMAT, INDEX_FORMAT, shards_beside

AXES = ("x", "y", "z")
"""The coordinate datasets of the space axes of ``u``, in order."""
PER_SAMPLE_ROWS = ("sample_index", "sample_seed")
"""The root datasets of one entry per sample that a generated file holds."""


class DatasetFileError(ValueError):
    """A file that is not a complete physml dataset."""


@dataclass
class PDEData:
    """A whole dataset in memory: ``u`` ``(sample, time, *space)`` plus its description.

    ``u`` keeps the dtype the file stores: float64 from the PDE solvers, float32 for the N-body
    frames (pixel intensities in [0, 1]). ``t`` ``(time,)``: the output times; ``coords``: each
    space axis's coordinates by name (e.g. ``{"x": (nx,)}``); ``params``: each sampled parameter
    by name, ``(sample,)``; ``attrs``: the file's description (the PDE, the grid, the recipe's
    settings); ``fields``: further arrays of ``u``'s leading shape the problem writes beside it
    (e.g. velocity components), by name. ``sample_index`` and ``sample_seed`` ``(sample,)``: each
    sample's place in the generated dataset and the seed it was drawn from (``None`` where the
    file has none).
    """

    u: torch.Tensor
    t: torch.Tensor
    coords: dict[str, torch.Tensor]
    params: dict[str, torch.Tensor]
    attrs: dict[str, object] = field(default_factory=dict)
    sample_index: torch.Tensor | None = None
    fields: dict[str, torch.Tensor] = field(default_factory=dict)
    sample_seed: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.u.shape[0]

    @property
    def space_shape(self) -> tuple[int, ...]:
        return tuple(self.u.shape[2:])


REGENERATE = "generate or copy it again"
"""What the refusal of a damaged dataset file advises by default."""


def damaged(label: str, path: Path, name: str, error: OSError, remedy: str = REGENERATE):
    """The :class:`DatasetFileError` for the array ``name`` of the file ``path`` (named as
    ``label``: ``"path:"``, ``"shard"``) that HDF5 could not read: one failing its checksum
    (fletcher32, a filter) is said to, naming the damaged file and ``remedy``."""
    checksum = "filter returned failure" in str(error)
    failed = "failed its checksum" if checksum else "could not be read"
    return DatasetFileError(
        f"{label} {str(path)!r} is damaged: its array {name!r} {failed} ({error}); {remedy}"
    )


def open_hdf5(path: Path, label: str) -> h5py.File:
    """``path`` opened read-only; a file HDF5 cannot read is a :class:`DatasetFileError` naming
    it as ``label`` (``"path"``, ``"shard"``)."""
    if Path(path).is_dir():
        raise DatasetFileError(f"{label}: {str(path)!r} is a folder, not a dataset file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DatasetFileError(
            f"{label}: {str(path)!r} is not a readable HDF5 file ({error})"
        ) from None


def check_self_contained(
    path: Path, f: h5py.File, virtual_ok: bool = False, label: str = "path"
) -> None:
    """Refuse a file (named as ``label``: ``"path"``, ``"shard"``) whose data would be read from
    other files: external links, datasets with external raw storage, and (unless ``virtual_ok``,
    for a merged file whose shards are checked separately) virtual datasets. Soft and hard links
    within the file are followed, each object checked once, so links back to a group already
    seen (a cycle) end the walk there; one that resolves into another file is refused."""
    root = f["/"]
    seen, waiting = {_address(root)}, [(root, "")]
    while waiting:
        group, prefix = waiting.pop()
        for name in group:
            where = f"{prefix}{name}"
            if isinstance(group.get(name, getlink=True), h5py.ExternalLink):
                raise DatasetFileError(
                    f"{label}: {str(path)!r}: {where!r} is an external link to another file; "
                    "datasets must hold their own data"
                )
            item = group.get(name)
            if item is None:  # a soft link to nothing
                raise DatasetFileError(
                    f"{label}: {str(path)!r}: {where!r} is a link to an object the file lacks"
                )
            if item.id.fileno != f.id.fileno:  # a soft link through an external one
                raise DatasetFileError(
                    f"{label}: {str(path)!r}: {where!r} is a link into another file; datasets "
                    "must hold their own data"
                )
            address = _address(item)
            if address in seen:
                continue
            seen.add(address)
            if isinstance(item, h5py.Group):
                waiting.append((item, f"{where}/"))
            elif not isinstance(item, h5py.Dataset):  # a named datatype: no data
                continue
            elif item.external:
                raise DatasetFileError(
                    f"{label}: {str(path)!r}: {where!r} stores its values in external files "
                    f"{[entry[0] for entry in item.external]}; datasets must hold their own data"
                )
            elif item.is_virtual and not virtual_ok:
                raise DatasetFileError(
                    f"{label}: {str(path)!r}: {where!r} is a virtual dataset (its values are "
                    "mapped from other datasets); only a merged physml dataset (physml merge) may "
                    "hold them"
                )


def _address(item: h5py.HLObject) -> int:
    """Where ``item`` lies in its file: one object reached by several links has one address."""
    return h5py.h5o.get_info(item.id).addr


def check_settings(where: str, raw: object) -> None:
    """Refuse a ``settings`` attribute ``raw`` (JSON text) nesting deeper than Python's
    recursion limit can parse, naming it after ``where``: training would keep it and every
    later reading of it (evaluate, predict) fail. Text that is not JSON is left to its readers."""
    if not isinstance(raw, (str, bytes)):
        return
    try:
        json.loads(raw)
    except RecursionError:
        raise DatasetFileError(
            f"{where} its attribute 'settings' nests JSON deeper than Python's recursion limit "
            "lets it parse; physml generate writes a flat JSON object"
        ) from None
    except ValueError:
        pass


def check_fits(
    name: str, shape: tuple[int, ...], dtype: np.dtype, error: type[Exception] = DatasetFileError
) -> float:
    """The bytes of an array ``name`` of ``shape`` and ``dtype``; more than the memory available
    now is refused as ``error`` naming its shape and bytes, before anything is allocated."""
    nbytes = float(np.prod(shape, dtype=float)) * np.dtype(dtype).itemsize
    try:
        fits_in_memory(name, nbytes, f"{tuple(shape)} {np.dtype(dtype)} values")
    except ValueError as refusal:
        raise error(str(refusal)) from None
    return nbytes


def read_whole(
    dataset: h5py.Dataset, name: str, error: type[Exception] = DatasetFileError
) -> np.ndarray:
    """All of ``dataset`` (the array ``name``) in memory. A few KB of file can declare terabytes
    of chunks never written, read back as the fill value: one beyond the memory available is
    refused before reading (:func:`check_fits`), and a ``MemoryError`` while reading is the same
    refusal, as ``error``."""
    shape = dataset.shape or ()
    nbytes = check_fits(name, shape, dataset.dtype, error)
    try:
        return dataset[()]
    except MemoryError:
        raise error(
            f"{name}: {shape} {dataset.dtype} values would need about {nbytes / 1e9:.3g} GB, "
            "more than this process could allocate"
        ) from None


def native_order(value: np.ndarray) -> np.ndarray:
    """``value`` in this machine's byte order: HDF5 gives arrays in the order the writer stored
    them (big-endian from some platforms and tools), and torch takes the native order only."""
    if not isinstance(value, (np.ndarray, np.generic)) or value.dtype.isnative:
        return value
    return value.astype(value.dtype.newbyteorder("="))


def _read_file(path: Path) -> dict:
    with open_hdf5(path, "path") as f:
        kind = f.attrs.get("format")
        if kind == INDEX_FORMAT:
            return {"shards": shard_names(path, f.attrs.get("shards"))}
        if kind != FORMAT or "u" not in f or "t" not in f:
            raise DatasetFileError(
                f"path: {str(path)!r} is not a physml dataset (format {kind!r}, keys {list(f)})"
            )
        u = f.get("u")  # older converted copies of a merged file kept merged_from: real arrays
        merged = "merged_from" in f.attrs and isinstance(u, h5py.Dataset) and u.is_virtual
        check_self_contained(path, f, virtual_ok=merged)
        check_settings(f"path: {str(path)!r}:", f.attrs.get("settings"))
        for name in ("u", "t", *AXES, *PER_SAMPLE_ROWS):
            if name in f and not isinstance(f.get(name), h5py.Dataset):
                raise DatasetFileError(
                    f"path: {str(path)!r}: {name!r} must be a dataset, got a group"
                )
        if merged:  # virtual datasets over shard files: check the shards before reading them
            from .merge import check_merged, damaged_shards

            check_merged(path, f)
        for group in ("params", "fields"):
            if group in f and not isinstance(f[group], h5py.Group):
                raise DatasetFileError(
                    f"path: {str(path)!r}: {group!r} must be a group of arrays, got a dataset"
                )

        def read(name: str) -> np.ndarray:
            try:
                return native_order(read_whole(f[name], f"path: {str(path)!r}: its array {name!r}"))
            except OSError as error:
                if merged:  # the shards behind it say which is damaged
                    raise
                raise damaged("path:", path, name, error) from None

        try:
            content = {
                "u": read("u"),
                "t": read("t"),
                "coords": {k: read(k) for k in AXES if k in f},
                "params": _arrays(f, "params", read),
                "fields": _arrays(f, "fields", read),
                **{name: read(name) if name in f else None for name in PER_SAMPLE_ROWS},
                "attrs": {
                    k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()
                },
            }
        except (KeyError, TypeError, OSError) as error:  # a dangling link, an odd object
            behind = damaged_shards(path, f) if merged and isinstance(error, OSError) else []
            raise DatasetFileError(
                f"path: {str(path)!r} could not be read: {error}"
                + "".join(f"; its {message}" for message in behind)
            ) from None
    index = content["sample_index"]
    if merged and not np.array_equal(index, np.arange(len(index))):
        wrong = np.count_nonzero(index != np.arange(len(index)))
        raise DatasetFileError(
            f"path: {str(path)!r}: {wrong} of {len(index)} samples read back as other samples or "
            "fill values; HDF5 did not find the shards where they were checked (is "
            "HDF5_VDS_PREFIX set?)"
        )
    return content


def _arrays(f: h5py.File, group: str, read) -> dict[str, np.ndarray]:
    """The arrays of ``group`` (empty if absent), each as ``read(name)`` gives it: each member
    must be an array, not a group."""
    out = {}
    for key, item in f.get(group, {}).items():
        if not isinstance(item, h5py.Dataset):
            raise TypeError(f"{group}/{key} must be an array, got a group")
        out[key] = read(f"{group}/{key}")
    return out


def shard_names(path: Path, raw: object, argument: str = "path") -> list[str]:
    """The shard file names the index file ``path`` (given as ``argument``) lists in its
    ``shards`` attribute ``raw``: a JSON list of names of files in the index's folder."""
    return json_value(
        f"{argument}: {str(path)!r} is a shard index whose 'shards' attribute",
        raw,
        "a JSON list of shard file names in its folder",
        lambda names: (
            isinstance(names, list)
            and bool(names)
            and all(isinstance(n, str) and n and Path(n).name == n for n in names)
        ),
        DatasetFileError,
    )


def _unindexed_shards(path: Path) -> str:
    """What a missing dataset ``path`` has instead where its shard files are beside it (its
    index not written): them, and how to find out why; ``""`` where none are."""
    found = shards_beside(path)
    if not found:
        return ""
    names = ", ".join(repr(shard.name) for shard in found[:4])
    if len(found) > 4:
        names += f" and {len(found) - 4} more"
    pattern = path.with_name(f"{path.stem}.shard-*{path.suffix}")
    return (
        f", but its shard files {names} are beside it: their index is written only once every "
        "shard is in and they form one dataset (shards of another seed or other settings get "
        f"none); `physml merge {pattern} -o merged.h5` names what is missing or differs"
    )


@one_memory_reading()
def load(path: str | os.PathLike) -> PDEData:
    """Read a dataset file, a merged file or the index of a sharded one.

    The shards behind an index or a merged file are first checked to form one dataset
    (:func:`physml.data.merge.check_shards`); a mismatch is a ``ShardError``, a missing shard a
    ``FileNotFoundError``, as is a missing index, naming the shard files beside it.
    """
    from .interchange import (  # PDEBench / The Well files (lazy: it imports us)
        pdebench_grid_kind,
        read_foreign,
    )

    file_path("path", path)
    foreign = read_foreign(path)  # checked as check_content checks ours
    if foreign is not None:
        return foreign
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: no dataset at {str(path)!r}{_unindexed_shards(path)}")
    content = _read_file(path)
    if "shards" in content:
        from .merge import check_shards, joined_attributes, named_shards

        # Same settings, seed scheme and versions, ranges covering 0..n-1: not a blind join.
        shards = check_shards(named_shards("path", path, content["shards"]))
        parts = [_read_file(shard.path) for shard in shards]
        content = parts[0]
        content["u"] = np.concatenate([p["u"] for p in parts])
        for group in ("params", "fields"):
            content[group] = {
                k: np.concatenate([p[group][k] for p in parts]) for k in content[group]
            }
        for name in PER_SAMPLE_ROWS:  # every shard holds both
            content[name] = np.concatenate([p[name] for p in parts])
        content["attrs"] = joined_attributes(shards)  # as merge_shards writes them
    check_content(path, content)
    kind = pdebench_grid_kind(content["attrs"])  # a copy of PDEBench data: the mark it lacks
    if kind is not None:
        content["attrs"].setdefault("grid_kind", kind)
    u = torch.from_numpy(content["u"])
    return PDEData(
        u=u,
        t=torch.from_numpy(content["t"]),
        coords={k: torch.from_numpy(v) for k, v in content["coords"].items()},
        params={k: torch.from_numpy(v) for k, v in content["params"].items()},
        fields={k: torch.from_numpy(v) for k, v in content["fields"].items()},
        attrs=content["attrs"],
        **{
            name: None if content[name] is None else torch.from_numpy(content[name])
            for name in PER_SAMPLE_ROWS
        },
    )


def strictly_increasing(values: np.ndarray) -> bool:
    """Whether ``values`` ``(n,)`` are real numbers, each above the one before (compared as
    float64, so that unsigned integers do not wrap)."""
    return values.dtype.kind in "fiu" and bool((np.diff(values.astype(np.float64)) > 0).all())


def check_content(path: Path, content: dict, where: str | None = None) -> None:
    """The arrays read from ``path`` must form a dataset: real floating-point ``u`` ``(sample,
    time, *space)`` without NaN or inf, of one sample, one frame and one point at least and no
    channel axis (a last space axis of size 1 after another), increasing ``t`` of one entry per
    frame, coordinates of one entry per node and one parameter value, field, index and seed entry
    per sample. ``where`` starts the messages (default: the path)."""
    where = where or f"path: {str(path)!r}:"
    u = content["u"]
    if u.dtype.kind != "f":
        raise DatasetFileError(
            f"{where} u must hold real floating-point values, got dtype {u.dtype}"
        )
    if u.ndim < 3:
        raise DatasetFileError(
            f"{where} u must have dims (sample, time, *space), got shape {u.shape}"
            + (" (a series of one point is (sample, time, 1))" if u.ndim == 2 else "")
        )
    samples, frames = u.shape[:2]
    if samples == 0:
        raise DatasetFileError(f"{where} holds no samples: u has shape {u.shape}")
    if frames == 0:
        raise DatasetFileError(f"{where} holds no time frames: u has shape {u.shape}")
    if min(u.shape[2:]) == 0:
        raise DatasetFileError(f"{where} holds no space points: u has shape {u.shape}")
    if u.ndim >= 4 and u.shape[-1] == 1:
        raise DatasetFileError(
            f"{where} u has shape {u.shape}, a space axis of size 1: u is "
            "(sample, time, *space) with no channel axis (a trailing channel axis of size 1 "
            "reads as a space axis of one point); store u without it, and further channels as "
            "arrays under fields/ (kept beside u; physml train learns u alone)"
        )
    t = content["t"]
    if t.ndim != 1 or t.shape[0] != frames:
        raise DatasetFileError(f"{where} t has shape {t.shape}, u has {frames} frames")
    if not strictly_increasing(t):
        raise DatasetFileError(f"{where} t must be strictly increasing numbers, got {t[:8]}...")
    for axis, name in enumerate(AXES):
        values = content["coords"].get(name)
        if values is not None and (
            values.ndim != 1 or 2 + axis >= u.ndim or values.shape[0] != u.shape[2 + axis]
        ):
            raise DatasetFileError(
                f"{where} {name} has shape {values.shape}, u has shape {u.shape}"
            )
        if values is not None and (
            not strictly_increasing(values) or not np.isfinite(values.astype(np.float64)).all()
        ):
            raise DatasetFileError(
                f"{where} {name} must be strictly increasing finite numbers, got {values[:8]}..."
            )
    per_sample = {
        **{f"params/{k}": v for k, v in content["params"].items()},
        **{f"fields/{k}": v for k, v in content["fields"].items()},
    }
    for name, values in per_sample.items():
        if values.dtype.kind not in "biufc":
            raise DatasetFileError(f"{where} {name} must hold numbers, got dtype {values.dtype}")
    for name in PER_SAMPLE_ROWS:
        if content.get(name) is not None:
            per_sample[name] = content[name]
    for name, values in per_sample.items():
        if values.ndim == 0 or values.shape[0] != samples:
            raise DatasetFileError(
                f"{where} {name} has shape {values.shape}, expected {samples} entries (one per "
                "sample)"
            )
    if not np.isfinite(u).all():
        bad = np.flatnonzero(~np.isfinite(u).reshape(samples, -1).all(1))
        raise DatasetFileError(
            f"{where} u contains NaN or inf values (samples {bad[:5].tolist()}"
            f"{'...' if len(bad) > 5 else ''})"
        )


def _as_data(source: PDEData | str | os.PathLike) -> PDEData:
    return source if isinstance(source, PDEData) else load(source)


def _index(given: object, count: int, not_integer: str, out_of_range: str) -> int:
    """``given`` as an index in ``[0, count)`` (negative ones count from the end), else a
    ``TypeError``/``IndexError`` with the message given (``{index}`` stands for the value)."""
    index = integer(given)
    if index is None:
        raise TypeError(not_integer)
    if not -count <= index < count:
        raise IndexError(out_of_range.format(index=index))
    return index % count


def item_index(given: object, count: int, what: str = "samples") -> int:
    """A dataset item's index in ``[0, count)``; negative ones count from the end."""
    return _index(
        given,
        count,
        f"index must be an integer, got {given!r}",
        f"index {{index}} out of range for {count} {what}",
    )


def _time_index(name: str, given: int, count: int) -> int:
    return _index(
        given,
        count,
        f"{name} must be an integer index of one of {count} times, got {given!r}",
        f"{name} must index one of {count} times, got {{index}}",
    )


def _grid_channels(data: PDEData) -> torch.Tensor:
    """Coordinate channels ``(dim, *space)`` matching the data's space axes (x, y, z)."""
    space = data.space_shape
    axes = [data.coords.get(name) for name in AXES[: len(space)]]
    if len(space) > len(AXES) or any(
        axis is None or tuple(axis.shape) != (size,) for axis, size in zip(axes, space, strict=True)
    ):
        shapes = {name: tuple(value.shape) for name, value in data.coords.items()}
        raise DatasetFileError(
            f"with_grid: the file lacks coordinates for every space axis: u has space shape "
            f"{space}, the coordinates {shapes} (x, y, z for the axes in order)"
        )
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


class _PairDataset(Dataset):
    def __init__(self, data: PDEData, dtype: torch.dtype, with_grid: bool) -> None:
        self.data = data
        self.dtype = floating_dtype("dtype", dtype)
        if not isinstance(with_grid, (bool, np.bool_)):
            raise TypeError(f"with_grid must be a bool, got {with_grid!r}")
        self.grid = _grid_channels(data).to(dtype) if with_grid else None

    @property
    def attributes(self) -> dict:
        """The file's description (part of a checkpoint's data fingerprint)."""
        return self.data.attrs

    def __len__(self) -> int:
        return len(self.data)

    def _input(self, frame: torch.Tensor) -> torch.Tensor:
        x = frame.unsqueeze(0).to(self.dtype)
        return x if self.grid is None else torch.cat([x, self.grid])


def _check_two_times(source, data: PDEData, pairs: str) -> None:
    """A :class:`DatasetFileError` naming ``source`` (the path, or "the data") when ``data``
    holds a single time: ``pairs`` says what the dataset pairs."""
    if data.u.shape[1] < 2:
        where = "source: the data" if isinstance(source, PDEData) else f"path: {str(source)!r}"
        raise DatasetFileError(
            f"{where} holds a single time (t = {data.t.tolist()}); {pairs} and needs at least "
            "two (generate with --nt >= 2)"
        )


class SingleStepDataset(_PairDataset):
    """Pairs ``u(t_in) -> u(t_out)``, each ``(channel, *space)``; with ``with_grid`` the input also
    carries the coordinates as extra channels (``x, y, z`` for the space axes in order).

    ``source``: a :class:`PDEData` or a dataset file's path. ``input_time`` and ``target_time``:
    indices into the file's times (negative from the end, Python's way; by default the first and
    the last), the target not before the input. ``dtype``: the floating-point dtype the pairs are
    served in.
    """

    def __init__(
        self,
        source: PDEData | str | os.PathLike,
        input_time: int = 0,
        target_time: int = -1,
        with_grid: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(_as_data(source), dtype, with_grid)
        _check_two_times(source, self.data, "SingleStepDataset pairs u(t_in) -> u(t_out)")
        steps = self.data.u.shape[1]
        self.input_time = _time_index("input_time", input_time, steps)
        self.target_time = _time_index("target_time", target_time, steps)
        if self.target_time < self.input_time:
            raise ValueError(
                "target_time must not come before input_time, got "
                f"target_time={target_time!r} (index {self.target_time}) and "
                f"input_time={input_time!r} (index {self.input_time})"
            )

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.data.u[item_index(i, len(self))]
        return self._input(sample[self.input_time]), sample[self.target_time].unsqueeze(0).to(
            self.dtype
        )


class MultiStepDataset(_PairDataset):
    """Pairs ``u(t_0) -> (u(t_1), ..., u(t_K))``: input ``(1, *space)``, target ``(K, *space)``.

    ``steps`` picks K snapshots evenly from the file's times after the first (all by default):
    it must divide the number of stored steps (times after the first), and the targets are every
    ``(stored steps / K)``-th time. ``source``, ``with_grid`` and ``dtype`` as in
    :class:`SingleStepDataset` (with the grid the input is ``(1 + dim, *space)``).
    """

    def __init__(
        self,
        source: PDEData | str | os.PathLike,
        steps: int | None = None,
        with_grid: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(_as_data(source), dtype, with_grid)
        _check_two_times(source, self.data, "MultiStepDataset pairs u(t_0) -> u(t_1), ...")
        available = self.data.u.shape[1] - 1
        steps = available if steps is None else steps
        count = integer(steps)  # as the time indices: Python, numpy or 0-d torch integers
        if count is None or not 1 <= count <= available:
            error = TypeError if count is None else ValueError  # a bool or 2.0 is no integer
            raise error(f"steps must be an integer in [1, {available}], got {steps!r}")
        steps = count
        if available % steps:
            raise ValueError(f"steps must divide the {available} stored steps, got {steps}")
        self.target_times = list(range(available // steps, available + 1, available // steps))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.data.u[item_index(i, len(self))]
        return self._input(sample[0]), sample[self.target_times].to(self.dtype)
