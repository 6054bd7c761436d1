"""Interchange with PDEBench and The Well: their HDF5 files read as :class:`PDEData`, and back.

:func:`physml.data.load` reads either kind directly (the format is told from the file's structure),
so ``SingleStepDataset`` and ``MultiStepDataset`` accept them too; :func:`convert` (``physml convert
IN OUT --to ...``) rewrites a file in another format, atomically.

**PDEBench**, three layouts, all of cell centres (its solvers are finite-volume ones: ``x_i =
x_0 + (i + 1/2)·dx``), so read with the attribute ``grid_kind`` = ``"cell"`` unless the file
says otherwise (a ``grid_kind`` root attribute; a file our writer made carries ours, and one
of PDEBench data without it reads as cells too: :func:`pdebench_grid_kind`):

- ``tensor`` ``(N, T, X[, Y[, Z]])`` with ``x-coordinate`` (``y-``, ``z-``) and ``t-coordinate``
  (advection, Burgers, reaction-diffusion, Darcy): ``u`` = ``tensor``; 1-D CFD files (``density``,
  ``pressure``, ``Vx``, no ``tensor``) read with ``u`` = ``density``. PDEBench's generators save
  ``T + 1`` times (``arange(T + 1) * dt_save``) beside ``T`` snapshots, the first ``T`` being the
  snapshot times: a ``t-coordinate`` of ``T + 1`` entries is cut to its first ``T`` (as PDEBench's
  loaders do), other lengths are errors; without one, only ``T = 1`` is accepted (Darcy: ``t = 0``).
  Further numeric datasets shaped like ``u`` go to ``fields``, others with ``N`` rows (Darcy's
  ``nu``) to ``params``; the rest (text, other shapes) are named in the attribute ``dropped``.
  Parameters: numeric root attributes (``beta``, ``Nu``, ``rho``, ...; in a file our writer made,
  bool and complex ones too) -> ``params`` ``(N,)``; without any, name-number tokens of the file
  name (``..._Nu0.001.hdf5``) are used.
- 2-D incompressible NS: ``u`` = ``particles`` ``(B, T, X, Y, 1)`` (the density advected by the
  flow, its scalar field); ``velocity`` ``(B, T, X, Y, 2)`` -> ``fields`` ``vx``, ``vy`` (the names
  of our ``navier-stokes`` recipe); ``force`` ``(B, X, Y, 2)``, constant in time -> ``params``
  ``force_x``, ``force_y``; ``t`` ``(B, T)`` must be one time axis for all samples. The files hold
  no coordinates: PDEBench simulates on the box ``[0, X] x [0, Y]`` with unit cells, so ``x`` =
  ``arange(X) + 0.5`` (``y`` alike) unless ``x-coordinate``/``y-coordinate`` are present.
- one group per sample (``0000/data`` ``(T, X[, Y], C)``, ``0000/grid/x``, ``y``, ``t``; 2-D
  reaction-diffusion, shallow water, diffusion-sorption), read only: channel 0 is ``u``, further
  channels ``fields`` ``channel_1``, ...; coordinates and times from the first sample.

**The Well**: each ``t0_fields`` (scalar), ``t1_fields`` (vector, trailing ``D``) and ``t2_fields``
(trailing ``D, D``) dataset is split into components named as The Well's loader names them
(``velocity_x``, ``stress_xy``); axes a field does not store (``sample_varying``,
``time_varying``, ``dim_varying`` false) are broadcast. Time-varying components go to ``fields`` and
the first of them (or ``field=``) becomes ``u``; time-constant ones go to ``params`` ``(n_traj,
*space)``. ``scalars/`` -> ``params`` ``(n_traj[, T])``; ``simulation_parameters`` that ``scalars/``
lacks -> ``params`` ``(n_traj,)`` from the root attributes. ``dimensions/`` -> ``t`` and
coordinates, named ``x``, ``y``, ``z`` by position (the file's names kept in ``well_spatial_dims``).
``boundary_conditions/`` -> attribute ``boundary`` (``"x: periodic; y: wall"``) and, in full (mask
as flat indices, values), the JSON attribute ``well_boundary_conditions``. Root attributes other
than the parameters and the counts are kept (``dataset_name`` also as ``pde``). Dropped: the t2
``symmetric``/``antisymmetric`` flags (recomputed on writing) and the storage savings of fields
that lack an axis (written back full size).

**Writing** keeps the dtype (both formats store float32 by habit, their readers take float64) and
puts what a format has no place for where its readers ignore it: our attributes in the JSON
attribute ``physml_attrs``, ``sample_index`` and ``sample_seed`` as root datasets (so a shard
converted to PDEBench or The Well and back is a shard ``physml merge`` takes: the ``dataset_name``,
``field``, ``grid_type`` and ``well_boundary_conditions`` The Well's reader adds restate its own
attributes, :func:`well_restated`), coordinates of an NS file as
``x-coordinate``/``y-coordinate``. So ours -> either -> ours is bitwise on ``u``, ``t``,
coordinates, ``params`` and ``fields``. A physml file takes fields of any per-sample shape; in
PDEBench and The Well files fields must have the shape of ``u`` (the N-body recipes' extra arrays
and the tracer recipes' totals per frame, ``mass`` and ``released`` ``(sample, time)``, do not:
such data are refused, not half written). PDEBench: parameters equal
over samples become root attributes, the others datasets (none may have the shape of ``u``: it
would read back as a field); ``layout="ns"`` needs fields ``vx``, ``vy``.
The Well: ``u`` is the t0 field named by attribute ``field`` (else ``u``); fields ``NAME_x``,
``NAME_y`` (one per axis) become the t1 field ``NAME`` (``NAME_xx``, ...: t2); ``params`` ``(N,)``
go to ``scalars/`` and are listed in ``simulation_parameters`` (with a root attribute when equal
over samples), ``(N, T)`` to time-varying scalars, ``(N, *space)`` to time-constant fields (on a
1-D grid of ``T`` points the two are one shape: the attribute ``well_time_varying_scalars``, which
the reader writes there, names the scalars; without it such a parameter is refused). Boundary
conditions come from ``well_boundary_conditions`` or from our ``boundary`` text: periodic ->
PERIODIC, Dirichlet, Neumann, no-slip, reflecting -> WALL on every axis (The Well knows only WALL,
OPEN, PERIODIC; the exact text stays in ``physml_attrs``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import __version__
from .._checks import file_path, flag, json_value, one_memory_reading
from .._io import atomic_path
from .datasets import (
    AXES,
    PER_SAMPLE_ROWS,
    DatasetFileError,
    PDEData,
    check_content,
    check_fits,
    check_self_contained,
    check_settings,
    load,
    native_order,
    open_hdf5,
    read_whole,
    strictly_increasing,
)
from .generate import (
    FORMAT,
    OVERWRITE_HINT,
    _check_output,
    _write_attributes,
    write_checksummed,
)

FORMATS = ("physml", "pdebench", "well")
PDEBENCH_LAYOUTS = ("tensor", "ns")
PDEBENCH_PREFIX = "pdebench: "  # a converted PDEBench file's pde: this, then its file name
_PDEBENCH_SOURCES = ("pdebench", "pdebench-ns", "pdebench-groups")  # its source_format


PDEBENCH_GRID_KIND = "cell"
"""The ``grid_kind`` of PDEBench data, whose finite-volume solvers store cell centres
(``x_i = x_0 + (i + 1/2)·dx``)."""


def pdebench_origin(attrs: Mapping[str, object]) -> bool:
    """Whether a file's attributes describe PDEBench data: read from a PDEBench file
    (``source_format`` ``"pdebench"``, ``"pdebench-ns"`` or ``"pdebench-groups"``) and named
    by the PDEBench reader (``pde`` = ``"pdebench: "`` and the file's name), as a PDEBench file
    is and a copy of one our writers made keeps. Such data are cell centres where no
    ``grid_kind`` says otherwise (copies made before it was recorded)."""
    return attrs.get("source_format") in _PDEBENCH_SOURCES and str(attrs.get("pde", "")).startswith(
        PDEBENCH_PREFIX
    )


def pdebench_grid_kind(attrs: Mapping[str, object], may_be_ours: bool = True) -> str | None:
    """The ``grid_kind`` data of attributes ``attrs`` are read with where no ``grid_kind`` of
    theirs says otherwise: :data:`PDEBENCH_GRID_KIND` for PDEBench data, else ``None``.

    ``may_be_ours`` ``True``: ``attrs`` may be those of data our writers made (e.g. a file
    carrying ``physml_attrs``), which are PDEBench data only where :func:`pdebench_origin` says
    so: ours written in PDEBench's layout stay nodes. ``False``: a PDEBench ``source_format``
    alone makes them PDEBench data, whatever their ``pde``: for a PDEBench file's own attributes
    (no ``physml_attrs``), and for attributes that cannot tell a PDEBench file from a copy ours
    made in its layout (a run's data fingerprint), where any such file counts as PDEBench's."""
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs must be a mapping of attributes, got {type(attrs).__name__}")
    if flag("may_be_ours", may_be_ours):
        return PDEBENCH_GRID_KIND if pdebench_origin(attrs) else None
    return PDEBENCH_GRID_KIND if attrs.get("source_format") in _PDEBENCH_SOURCES else None


_NOT_CARRIED = ("format", "source_format", "source_file", "merged_from")  # not in physml_attrs
_NOT_PARAMETERS = ("latestIndex",)  # numeric root attributes of PDEBench NS files
_NAME_NUMBER = re.compile(r"^([A-Za-z][A-Za-z-]*?)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")
_WELL_ROOT = ("dataset_name", "grid_type", "n_spatial_dims", "n_trajectories")
TIME_VARYING_SCALARS = "well_time_varying_scalars"
"""The attribute (a JSON list) naming the ``(N, T)`` parameters that are time-varying scalars,
where a 1-D grid of ``T`` points gives time-constant fields the same shape."""
_SPATIAL_DIMS = "well_spatial_dims"  # a JSON list: a The Well file's axis names
_BOUNDARY_CONDITIONS = "well_boundary_conditions"  # a JSON list: its boundary condition groups
_WALLS = ("dirichlet", "neumann", "no-slip", "reflecting", "wall")


# ----------------------------------------------------------------------------- small helpers


class _ContentError(DatasetFileError):
    """A foreign file's dataset that physml cannot read; :func:`_naming` adds the file."""


def _fail(name: str, message: str) -> DatasetFileError:
    return _ContentError(f"{name}: {message}")


@contextmanager
def _naming(path: Path) -> Iterator[h5py.File]:
    """``path`` opened read-only, refused if it would read data from other files (as physml
    files are: :func:`~physml.data.datasets.check_self_contained`); an error about one of its
    datasets also names the file."""
    with open_hdf5(path, "path") as f:
        check_self_contained(path, f)
        try:
            yield f
        except _ContentError as error:
            raise DatasetFileError(f"path: {str(path)!r}: {error}") from None


def _check_finite(name: str, value: np.ndarray) -> None:
    if value.dtype.kind in "fc":
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise _fail(name, f"{bad} non-finite value(s) (NaN or inf)")


def _read(group: h5py.Group, name: str, label: str | None = None) -> np.ndarray:
    """Dataset ``name`` of ``group`` as a finite array of numbers; missing, not a dataset, not
    numbers or unreadable (a damaged compressed chunk) is an error."""
    label = label or name
    item = group.get(name)
    if not isinstance(item, h5py.Dataset):
        found = sorted(group)
        raise _fail(label, f"missing dataset (found {found[:12]}{' ...' * (len(found) > 12)})")
    if item.dtype.kind not in "biufc":
        raise _fail(label, f"expected numbers, got dtype {item.dtype}")
    try:
        value = np.asarray(read_whole(item, label, _ContentError))
    except OSError as error:
        raise _fail(label, f"could not be read ({error})") from None
    value = native_order(value)
    _check_finite(label, value)
    return value


def _increasing(name: str, value: np.ndarray) -> np.ndarray:
    if not strictly_increasing(value):
        raise _fail(name, f"must be strictly increasing real numbers, got {value[:8]}...")
    return value


def _coordinate(name: str, value: np.ndarray, length: int, axis: str) -> np.ndarray:
    if value.ndim != 1 or value.shape[0] != length:
        raise _fail(name, f"shape {value.shape}, but the data have {length} points along {axis}")
    return _increasing(name, value)


def _times(name: str, value: np.ndarray, steps: int, allow_extra: bool = False) -> np.ndarray:
    """A 1-D time axis of ``steps`` entries (``allow_extra``: ``steps + 1`` cut to ``steps``)."""
    if value.ndim != 1:
        raise _fail(name, f"expected one time axis, got shape {value.shape}")
    if allow_extra and value.shape[0] == steps + 1:
        value = value[:steps]
    if value.shape[0] != steps:
        accepted = f"{steps} or {steps + 1}" if allow_extra else f"{steps}"
        raise _fail(name, f"{value.shape[0]} entries, expected {accepted} for {steps} time steps")
    if not strictly_increasing(value):
        raise _fail(name, f"times must increase (real numbers), got {value[:8]}...")
    return value


def _shared_row(name: str, value: np.ndarray, rows: int | None = None) -> np.ndarray:
    """The one row of a per-sample array ``(rows, n)`` whose rows must agree."""
    if value.ndim != 2 or (rows is not None and value.shape[0] != rows):
        raise _fail(name, f"expected ({rows or 'sample'}, n), got shape {value.shape}")
    if not np.allclose(value, value[:1], rtol=1e-6, atol=1e-12):
        raise _fail(name, "differs between samples; physml needs one axis for all samples")
    return value[0]


def _python(value: object) -> object:
    """An HDF5 attribute as plain Python (str, int, float, bool or lists of them)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return _python(value.item())
    if isinstance(value, np.ndarray):
        return [_python(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value


def _names(value: object) -> list[str]:
    value = _python(value)
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _attr_value(value: object) -> object:
    """An attribute as PDEData keeps it: scalars as they are, lists as a JSON string."""
    value = _python(value)
    return json.dumps(value) if isinstance(value, list) else value


def _numeric(value: object, kinds: str = "iuf") -> bool:
    return isinstance(value, np.generic) and value.dtype.kind in kinds


def _constant(value: np.ndarray) -> bool:
    """Whether every sample (axis 0) holds bitwise the same values."""
    return value.tobytes() == np.broadcast_to(value[:1], value.shape).tobytes()


def _string_list(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=h5py.string_dtype())


def _carried_attrs(f: h5py.File, skip: set[str]) -> dict[str, object]:
    """Root attributes (less ``skip``), with our own attributes restored from ``physml_attrs``."""
    attrs = {k: _attr_value(v) for k, v in f.attrs.items() if k not in skip | {"physml_attrs"}}
    if "physml_attrs" in f.attrs:
        raw = f.attrs["physml_attrs"]  # bytes stay bytes: text that is no UTF-8 is refused
        ours = json_value(
            "physml_attrs",
            raw.item() if isinstance(raw, np.generic) else raw,
            "a JSON object of attributes (as physml's writers store)",
            lambda value: isinstance(value, dict),
            _ContentError,
        )
        attrs.update(ours)
    return attrs


def _pdedata(u, t, coords, params, fields, attrs, rows=None) -> PDEData:
    def tensor(value):
        value = np.ascontiguousarray(value)
        return torch.from_numpy(value if value.flags.writeable else value.copy())

    return PDEData(
        u=tensor(u),
        t=tensor(t),
        coords={k: tensor(v) for k, v in coords.items()},
        params={k: tensor(v) for k, v in params.items()},
        fields={k: tensor(v) for k, v in fields.items()},
        attrs=attrs,
        **{name: tensor(value) for name, value in (rows or {}).items() if value is not None},
    )


def _sample_rows(f: h5py.Group, n: int) -> dict[str, np.ndarray]:
    """The root datasets of one entry per sample (:data:`PER_SAMPLE_ROWS`) that ``f`` holds."""
    rows = {}
    for name in PER_SAMPLE_ROWS:
        if name in f:
            rows[name] = _read(f, name)
            if rows[name].shape != (n,):
                raise _fail(name, f"expected shape ({n},), got {rows[name].shape}")
    return rows


# ----------------------------------------------------------------------------- detection


def _sample_groups(f: h5py.File) -> list[str]:
    return [k for k in f if isinstance(f.get(k), h5py.Group) and {"data", "grid"} <= set(f[k])]


def detect_format(path: str | os.PathLike, label: str = "path") -> str | None:
    """``"physml"``, ``"pdebench"`` or ``"well"`` from the file's structure; ``None`` if neither.
    A file HDF5 cannot read is a :class:`DatasetFileError` naming it as ``label``."""
    with open_hdf5(Path(path), label) as f:
        if str(_python(f.attrs.get("format", ""))).startswith("physml-"):
            return "physml"  # FORMAT, INDEX_FORMAT and any later physml kind
        if any(f"t{order}_fields" in f for order in range(3)):
            return "well"
        if {"tensor", "density", "particles", "velocity"} & set(f) or _sample_groups(f):
            return "pdebench"
    return None


def read_foreign(path: str | os.PathLike) -> PDEData | None:
    """A PDEBench or The Well file as :class:`PDEData`; ``None`` for anything else (a physml file,
    a missing or unreadable one), which :func:`physml.data.load` then handles itself."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        kind = detect_format(path)
    except DatasetFileError:
        return None
    if kind == "pdebench":
        return read_pdebench(path)
    if kind == "well":
        return read_well(path)
    return None


# ----------------------------------------------------------------------------- PDEBench


def pdebench_family(pde: str) -> str:
    """The PDE of a converted PDEBench file's ``pde`` name without its parameters: the file
    name's name-number tokens dropped (``"pdebench: 1D_Burgers_Sols_Nu0.01"`` →
    ``"1D_Burgers_Sols"``), so two viscosities of one PDE share it and Burgers and advection
    do not."""
    if not isinstance(pde, str):
        raise TypeError(f"pde must be a PDE name (str), got {type(pde).__name__}")
    stem = pde.removeprefix(PDEBENCH_PREFIX)
    return "_".join(token for token in stem.split("_") if not _NAME_NUMBER.match(token))


def _pdebench_parameters(f: h5py.File, path: Path, n: int) -> tuple[dict, list[str]]:
    """Numeric root attributes as ``(n,)`` arrays (and their names); without any, name-number
    tokens of the file name (and no names: the attribute ``params_from_file_name`` says so).
    In a file our writer made (``physml_attrs``) bool and complex attributes are parameters too."""
    params = {}
    kinds = "biufc" if "physml_attrs" in f.attrs else "iuf"
    for key, value in f.attrs.items():
        if key not in _NOT_PARAMETERS and _numeric(value, kinds):
            _check_finite(f"attribute {key}", np.asarray(value))
            params[key] = np.full(n, value, dtype=value.dtype)
    if params or "physml_attrs" in f.attrs:
        return params, list(params)
    named = file_name_parameters(path.stem)
    return {name: np.full(n, value) for name, value in named.items()}, []


def file_name_parameters(stem: str) -> dict[str, float]:
    """The parameters a PDEBench file name ``stem`` states in its name-number tokens
    (``"1D_Advection_Sols_beta1.0"`` → ``{"beta": 1.0}``), read where the file has no numeric
    root attributes."""
    matches = (_NAME_NUMBER.match(token) for token in stem.split("_"))
    return {match.group(1): float(match.group(2)) for match in matches if match}


def _pdebench_extras(f: h5py.File, known: set[str], u_shape: tuple) -> tuple[dict, dict, list]:
    """Numeric datasets beyond the layout's own: shaped like ``u`` -> fields, ``N`` rows ->
    params; the others (text, groups, other shapes) are listed as dropped."""
    fields, params, dropped = {}, {}, []
    for key in f:
        if key in known:
            continue
        item = f[key]
        numeric = isinstance(item, h5py.Dataset) and item.dtype.kind in "biufc"
        if numeric and item.shape == u_shape:
            fields[key] = _read(f, key)
        elif numeric and item.ndim >= 1 and item.shape[0] == u_shape[0]:
            params[key] = _read(f, key)
        else:
            dropped.append(key)
    return fields, params, dropped


def _pdebench_description(f: h5py.File, path: Path, layout: str, n: int) -> tuple[dict, dict]:
    """The parameters and the attributes of a PDEBench file. PDEBench's solvers are finite
    volume ones and store cell centres, ``x_i = x_0 + (i + 1/2)·dx``: its files are marked
    ``grid_kind = "cell"`` unless they say otherwise (a ``grid_kind`` root attribute, or ours in
    ``physml_attrs``, where none means nodes unless the data came from PDEBench:
    :func:`pdebench_grid_kind`)."""
    params, consumed = _pdebench_parameters(f, path, n)
    attrs = _carried_attrs(f, set(consumed))
    if params and not consumed:
        attrs["params_from_file_name"] = json.dumps(list(params))
    ours = "physml_attrs" in f.attrs  # ours: a copy of a PDEBench file keeps its pde
    attrs.setdefault("pde", f"{PDEBENCH_PREFIX}{path.stem}")
    attrs.update(source_format=layout, source_file=path.name)
    kind = pdebench_grid_kind(attrs, may_be_ours=ours)
    if kind is not None:
        attrs.setdefault("grid_kind", kind)
    return params, attrs


def _pdebench_data(f, path, layout, u, t, coords, fields, params, known) -> PDEData:
    extra_fields, extra_params, dropped = _pdebench_extras(f, known, u.shape)
    attribute_params, attrs = _pdebench_description(f, path, layout, u.shape[0])
    if dropped:
        attrs["dropped"] = json.dumps(dropped)
    return _pdedata(
        u,
        t,
        coords,
        {**attribute_params, **params, **extra_params},
        {**fields, **extra_fields},
        attrs,
        _sample_rows(f, u.shape[0]),
    )


def _read_pdebench_tensor(f: h5py.File, path: Path) -> PDEData:
    primary = "tensor" if "tensor" in f else "density"
    u = _read(f, primary)
    if not 3 <= u.ndim <= 5:
        raise _fail(primary, f"expected (N, T, X), (N, T, X, Y) or (N, T, X, Y, Z), got {u.shape}")
    steps, space = u.shape[1], u.shape[2:]
    coords = {
        axis: _coordinate(f"{axis}-coordinate", _read(f, f"{axis}-coordinate"), size, axis)
        for axis, size in zip(AXES, space, strict=False)
    }
    if "t-coordinate" in f:
        t = _times("t-coordinate", _read(f, "t-coordinate"), steps, allow_extra=True)
    elif steps == 1:
        t = np.zeros(1)
    else:
        raise _fail("t-coordinate", f"missing dataset ({primary} has {steps} time steps)")
    known = {primary, "t-coordinate", *PER_SAMPLE_ROWS, *(f"{a}-coordinate" for a in AXES)}
    return _pdebench_data(f, path, "pdebench", u, t, coords, {}, {}, known)


def _read_pdebench_ns(f: h5py.File, path: Path) -> PDEData:
    particles = _read(f, "particles")
    if particles.ndim != 5 or particles.shape[-1] != 1:
        raise _fail("particles", f"expected (B, T, X, Y, 1), got shape {particles.shape}")
    n, steps, nx, ny = particles.shape[:4]
    velocity = _read(f, "velocity")
    if velocity.shape != (n, steps, nx, ny, 2):
        raise _fail(
            "velocity", f"expected (B, T, X, Y, 2) = {(n, steps, nx, ny, 2)}, got {velocity.shape}"
        )
    t = _read(f, "t")
    t = _times("t", _shared_row("t", t, n) if t.ndim == 2 else t, steps)
    params = {}
    if "force" in f:
        force = _read(f, "force")
        if force.shape != (n, nx, ny, 2):
            raise _fail("force", f"expected (B, X, Y, 2) = {(n, nx, ny, 2)}, got {force.shape}")
        params = {"force_x": force[..., 0], "force_y": force[..., 1]}
    coords = {}
    for axis, size in (("x", nx), ("y", ny)):
        name = f"{axis}-coordinate"
        cells = np.arange(size, dtype=np.float64) + 0.5  # PDEBench's box [0, size], unit cells
        coords[axis] = _coordinate(name, _read(f, name), size, axis) if name in f else cells
    fields = {"vx": velocity[..., 0], "vy": velocity[..., 1]}
    known = {"particles", "velocity", "force", "t", "x-coordinate", "y-coordinate"}
    known |= set(PER_SAMPLE_ROWS)
    data = _pdebench_data(
        f, path, "pdebench-ns", particles[..., 0], t, coords, fields, params, known
    )
    data.attrs.setdefault("field", "particles")
    return data


def _read_pdebench_groups(f: h5py.File, path: Path, names: list[str]) -> PDEData:
    arrays = [_read(f[name], "data", f"{name}/data") for name in names]
    first = arrays[0]
    if not 3 <= first.ndim <= 5 or any(a.shape != first.shape for a in arrays):
        shapes = sorted({a.shape for a in arrays})
        raise _fail(
            f"{names[0]}/data", f"expected (T, X[, Y[, Z]], C) alike in all samples, got {shapes}"
        )
    data = np.stack(arrays)
    steps, space = first.shape[0], first.shape[1:-1]
    grid = f[names[0]]["grid"]
    coords = {
        axis: _coordinate(
            f"{names[0]}/grid/{axis}", _read(grid, axis, f"{names[0]}/grid/{axis}"), size, axis
        )
        for axis, size in zip(AXES, space, strict=False)
    }
    t = _times(f"{names[0]}/grid/t", _read(grid, "t", f"{names[0]}/grid/t"), steps, True)
    fields = {f"channel_{c}": data[..., c] for c in range(1, data.shape[-1])}
    params, attrs = _pdebench_description(f, path, "pdebench-groups", len(names))
    return _pdedata(data[..., 0], t, coords, params, fields, attrs)


def _checked(path: Path, data: PDEData, source: str) -> PDEData:
    """``data`` read from the foreign file ``path``, if it passes :func:`check_content`, as a
    physml file must on :func:`~physml.data.load`; ``source`` (the format and where ``u`` came
    from) goes into the messages."""
    content = {
        "u": data.u.numpy(),
        "t": data.t.numpy(),
        "coords": {k: v.numpy() for k, v in data.coords.items()},
        "params": {k: v.numpy() for k, v in data.params.items()},
        "fields": {k: v.numpy() for k, v in data.fields.items()},
        **{
            name: None if getattr(data, name) is None else getattr(data, name).numpy()
            for name in PER_SAMPLE_ROWS
        },
    }
    where = f"path: {str(path)!r} ({source}):"
    check_content(path, content, where=where)
    check_settings(where, data.attrs.get("settings"))
    return data


@one_memory_reading()
def read_pdebench(path: str | os.PathLike) -> PDEData:
    """A PDEBench file (``tensor``, 2-D NS or per-sample-group layout) as :class:`PDEData`,
    checked as :func:`~physml.data.load` checks a physml file."""
    path = file_path("path", path)
    with _naming(path) as f:
        if "tensor" in f or "density" in f:
            source = f"a pdebench file, u read from {'tensor' if 'tensor' in f else 'density'!r}"
            return _checked(path, _read_pdebench_tensor(f, path), source)
        if "particles" in f or "velocity" in f:
            source = "a pdebench file, u read from 'particles'"
            return _checked(path, _read_pdebench_ns(f, path), source)
        groups = _sample_groups(f)
        if groups:
            source = "a pdebench file, u read from channel 0 of each sample group's 'data'"
            return _checked(path, _read_pdebench_groups(f, path, groups), source)
        keys = sorted(f)
    raise DatasetFileError(
        f"path: {str(path)!r} is not a PDEBench file: no tensor, particles/velocity or sample "
        f"groups (keys {keys})"
    )


# ----------------------------------------------------------------------------- The Well


def _well_coordinates(f: h5py.File) -> tuple[list[str], dict, np.ndarray]:
    dims = f.get("dimensions")
    if not isinstance(dims, h5py.Group):
        raise _fail("dimensions", f"missing group (found {sorted(f)})")
    names = _names(dims.attrs.get("spatial_dims"))
    if not 1 <= len(names) <= 3:
        raise _fail("dimensions", f"attribute spatial_dims must name 1 to 3 axes, got {names}")
    if "n_spatial_dims" in f.attrs and int(f.attrs["n_spatial_dims"]) != len(names):
        raise _fail("n_spatial_dims", f"{f.attrs['n_spatial_dims']}, but spatial_dims is {names}")
    coords = {}
    for axis, name in zip(AXES, names, strict=False):
        value = _read(dims, name, f"dimensions/{name}")
        value = _shared_row(f"dimensions/{name}", value) if value.ndim == 2 else value
        if value.ndim != 1:
            raise _fail(f"dimensions/{name}", f"expected one axis, got shape {value.shape}")
        coords[axis] = _increasing(f"dimensions/{name}", value)
    time = _read(dims, "time", "dimensions/time")
    time = _shared_row("dimensions/time", time) if time.ndim == 2 else time
    return names, coords, _times("dimensions/time", time, len(time) if time.ndim == 1 else 0)


def _well_trajectories(f: h5py.File) -> int:
    if "n_trajectories" in f.attrs:
        return int(f.attrs["n_trajectories"])
    for order in range(3):
        group = f.get(f"t{order}_fields", {})
        for name in group:
            if group[name].attrs.get("sample_varying", True):
                return int(group[name].shape[0])
    raise _fail("n_trajectories", "missing attribute and no sample-varying field to count")


def _flags(item: h5py.HLObject, default: bool) -> tuple[bool, bool]:
    return tuple(bool(item.attrs.get(k, default)) for k in ("sample_varying", "time_varying"))


def _well_fields(f, names, n_traj, steps, space) -> tuple[dict, dict]:
    """Every field component, broadcast to ``(n_traj, [T,] *space)``: time-varying, constant."""
    varying, constant = {}, {}
    dims = len(space)
    for order in range(3):
        group_name = f"t{order}_fields"
        group = f.get(group_name)
        if group is None:
            continue
        for name in _names(group.attrs.get("field_names")) or list(group):
            label = f"{group_name}/{name}"
            value = _read(group, name, label)
            by_sample, by_time = _flags(group[name], True)
            by_axis = [bool(v) for v in group[name].attrs.get("dim_varying", [True] * dims)]
            if len(by_axis) != dims:
                raise _fail(label, f"dim_varying {by_axis} does not match {dims} spatial axes")
            keep = [by_sample, by_time, *by_axis] + [True] * order
            sizes = [n_traj, steps, *space] + [dims] * order
            expected = tuple(size for size, kept in zip(sizes, keep, strict=True) if kept)
            if value.shape != expected:
                raise _fail(
                    label,
                    f"shape {value.shape}, expected {expected} from n_trajectories, "
                    f"dimensions/time and the coordinates (sample_varying={by_sample}, "
                    f"time_varying={by_time}, dim_varying={by_axis})",
                )
            stored = [size if kept else 1 for size, kept in zip(sizes, keep, strict=True)]
            value = np.broadcast_to(value.reshape(stored), [n_traj, stored[1], *sizes[2:]])
            value = value if by_time else value[:, 0]
            check_fits(label, value.shape, value.dtype, _ContentError)
            for components in itertools.product(range(dims), repeat=order):
                suffix = "".join(names[c] for c in components)
                key = f"{name}_{suffix}" if order else name
                (varying if by_time else constant)[key] = np.ascontiguousarray(
                    value[(..., *components)]
                )
    return varying, constant


def _well_scalars(f, n_traj, steps) -> dict:
    params = {}
    group = f.get("scalars")
    for name in [] if group is None else _names(group.attrs.get("field_names")) or list(group):
        label = f"scalars/{name}"
        value = _read(group, name, label)
        by_sample, by_time = _flags(group[name], False)
        expected = tuple([n_traj] * by_sample + [steps] * by_time)
        if value.shape == (1,) and not expected:
            value = value.reshape(())
        if value.shape != expected:
            raise _fail(
                label,
                f"shape {value.shape}, expected {expected} "
                f"(sample_varying={by_sample}, time_varying={by_time})",
            )
        stored = ([n_traj] if by_sample else [1]) + ([steps] if by_time else [])
        full = [n_traj] + ([steps] if by_time else [])
        params[name] = np.ascontiguousarray(np.broadcast_to(value.reshape(stored), full))
    return params


def _well_boundaries(f: h5py.File) -> list[dict]:
    entries = []
    group = f.get("boundary_conditions")
    for name in [] if group is None else group:
        item = group[name]
        entry = {"name": name, **{k: _python(v) for k, v in item.attrs.items()}}
        if "mask" in item:
            mask = _read(item, "mask", f"boundary_conditions/{name}/mask").astype(bool)
            entry.update(mask_shape=list(mask.shape), mask_true=np.flatnonzero(mask).tolist())
        if "values" in item:
            values = _read(item, "values", f"boundary_conditions/{name}/values")
            entry.update(values=values.tolist(), values_dtype=str(values.dtype))
        entries.append(entry)
    return entries


@one_memory_reading()
def read_well(path: str | os.PathLike, field: str | None = None) -> PDEData:
    """A The Well file as :class:`PDEData`, checked as :func:`~physml.data.load` checks a physml
    file; ``field`` picks ``u`` among the time-varying field components (default: the one our
    writer marked, else the first)."""
    path = file_path("path", path)
    with _naming(path) as f:
        names, coords, t = _well_coordinates(f)
        n_traj = _well_trajectories(f)
        space = tuple(len(c) for c in coords.values())
        varying, constant = _well_fields(f, names, n_traj, len(t), space)
        params = {**constant, **_well_scalars(f, n_traj, len(t))}
        listed = _names(f.attrs.get("simulation_parameters"))
        for name in listed:
            if name not in params and _numeric(f.attrs.get(name), "biufc"):
                params[name] = np.full(n_traj, f.attrs[name], dtype=f.attrs[name].dtype)
        boundaries = _well_boundaries(f)
        derived = {"simulation_parameters", "n_spatial_dims", "n_trajectories"}
        attrs = _carried_attrs(f, set(listed) | derived)
        rows = _sample_rows(f, n_traj)
        if not varying:
            raise _fail("t0_fields", "no time-varying field to serve as u")
        marked = attrs.get("field") if attrs.get("field") in varying else None
        field = field if field is not None else marked or next(iter(varying))
        if field not in varying:
            raise ValueError(
                f"field must name a time-varying field {sorted(varying)}, got {field!r}"
            )
        u = varying.pop(field)
        if u.dtype.kind != "f":
            raise _fail(
                f"field {field!r}",
                f"u must hold real floating-point values, got dtype {u.dtype} (pick a "
                f"floating-point field with field=, one of {sorted(varying)})",
            )
        if names != list(AXES[: len(names)]):
            attrs[_SPATIAL_DIMS] = json.dumps(names)
        if boundaries:
            attrs[_BOUNDARY_CONDITIONS] = json.dumps(boundaries)
            attrs.setdefault(
                "boundary",
                "; ".join(
                    f"{','.join(_names(entry.get('associated_dims')))}: "
                    f"{str(entry.get('bc_type', '?')).lower()}"
                    for entry in boundaries
                ),
            )
        timed = sorted(
            k for k, v in params.items() if v.shape == (n_traj, len(t)) and k not in constant
        )
        if space == (len(t),) and timed:  # (N, T) is also (N, X): say which these are
            attrs[TIME_VARYING_SCALARS] = json.dumps(timed)
        attrs.setdefault("pde", str(attrs.get("dataset_name", f"the well: {path.stem}")))
        attrs.update(source_format="the_well", source_file=path.name, field=field)
    data = _pdedata(u, t, coords, params, varying, attrs, rows)
    return _checked(path, data, f"a well file, u read from field {field!r}")


# ----------------------------------------------------------------------------- writing


def _arrays(data: PDEData) -> dict:
    """``data`` as numpy arrays, checked: shapes agree, every value is finite."""
    if not isinstance(data, PDEData):
        raise TypeError(f"data must be a PDEData, got {type(data).__name__}")
    for group in ("coords", "params", "fields", "attrs"):
        if not isinstance(getattr(data, group), Mapping):
            raise TypeError(
                f"data.{group}: expected a dict by name, got {type(getattr(data, group)).__name__}"
            )

    def array(name, value):
        value = (
            value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        )
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ValueError(f"{name}: {int((~np.isfinite(value)).sum())} non-finite value(s)")
        return value

    u = array("data.u", data.u)
    if not 3 <= u.ndim <= 5:
        raise ValueError(
            f"data.u: expected (sample, time, *space) with 1 to 3 space axes, got {u.shape}"
        )
    n, steps, space = u.shape[0], u.shape[1], u.shape[2:]
    t = array("data.t", data.t)
    if t.shape != (steps,):
        raise ValueError(f"data.t: expected shape ({steps},), got {tuple(t.shape)}")
    coords = {}
    for axis, size in zip(AXES, space, strict=False):
        if axis not in data.coords:
            raise ValueError(
                f"data.coords: no {axis!r} coordinate for a space axis (has {sorted(data.coords)})"
            )
        coords[axis] = array(f"data.coords[{axis!r}]", data.coords[axis])
        if coords[axis].shape != (size,):
            raise ValueError(
                f"data.coords[{axis!r}]: expected shape ({size},), got {coords[axis].shape}"
            )
    arrays = dict(u=u, t=t, coords=coords)
    for group in ("params", "fields"):
        given = getattr(data, group)
        arrays[group] = {name: array(f"data.{group}[{name!r}]", v) for name, v in given.items()}
        for name, value in arrays[group].items():
            if value.ndim == 0 or value.shape[0] != n:
                raise ValueError(
                    f"data.{group}[{name!r}]: expected {n} rows, got shape {value.shape}"
                )
    for name in PER_SAMPLE_ROWS:
        value = getattr(data, name)
        arrays[name] = None if value is None else array(f"data.{name}", value)
        if arrays[name] is not None and arrays[name].shape != (n,):
            raise ValueError(f"data.{name}: expected shape ({n},), got {arrays[name].shape}")
    return arrays


def _fields_like_u(arrays: dict, writer: str) -> None:
    """PDEBench and The Well keep fields on the grid of ``u``: another shape is refused before
    anything is written."""
    u = arrays["u"]
    for name, value in arrays["fields"].items():
        if value.shape != u.shape:
            raise ValueError(
                f"data.fields[{name!r}]: expected the shape of u {u.shape}, got {value.shape} "
                f"({writer} keeps fields on the grid of u; a physml file (--to physml / "
                "write_physml) takes any shape)"
            )


def _physml_attrs(data: PDEData) -> str:
    attrs = {k: _python(v) for k, v in data.attrs.items() if k not in _NOT_CARRIED}
    return json.dumps(attrs, default=str)


def write_physml(data: PDEData, path: str | os.PathLike) -> Path:
    """Write ``data`` as one physml dataset file, atomically; data that
    :func:`~physml.data.load` would refuse (``u`` not real floating-point, coordinates or times
    not increasing, a parameter or field without one row per sample) is refused. Fields may have
    any per-sample shape, as generated files' do; ``sample_index`` and ``sample_seed`` are kept,
    so a copy of a generated file is a shard ``physml merge`` takes. Every array carries
    fletcher32 checksums, as in generated files."""
    arrays, path = _arrays(data), file_path("path", path)
    check_content(path, arrays, where=f"data (not written to {str(path)!r}):")
    attrs = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in data.attrs.items()}
    attrs.pop("merged_from", None)  # a merged file's mark: the copy holds its own arrays
    attrs.update(format=FORMAT, physml_version=__version__)
    attrs.setdefault("pde", "unknown")
    for key, value in (("n_total", len(arrays["u"])), ("shard", 0), ("num_shards", 1)):
        attrs.setdefault(key, value)
    with atomic_path(path, suffix=".h5") as temporary:
        with h5py.File(temporary, "w") as f:
            write_checksummed(f, "u", arrays["u"])
            write_checksummed(f, "t", arrays["t"])
            for axis, value in arrays["coords"].items():
                write_checksummed(f, axis, value)
            for group_name in ("params", "fields"):
                group = f.create_group(group_name)
                for name, value in arrays[group_name].items():
                    write_checksummed(group, name, value)
            _write_sample_rows(f, arrays)
            _write_attributes(f.attrs, attrs)
    return path


def write_pdebench(data: PDEData, path: str | os.PathLike, layout: str | None = None) -> Path:
    """Write ``data`` as a PDEBench file, atomically: ``layout="tensor"`` (1-3 space axes) or
    ``"ns"`` (2-D incompressible NS; needs fields ``vx``, ``vy``). Default: ``"ns"`` for data read
    from such a file, else ``"tensor"``."""
    arrays, path = _arrays(data), file_path("path", path)
    _fields_like_u(arrays, "write_pdebench")
    if layout is None:
        layout = "ns" if data.attrs.get("source_format") == "pdebench-ns" else "tensor"
    if layout not in PDEBENCH_LAYOUTS:
        raise ValueError(f"layout must be one of {PDEBENCH_LAYOUTS}, got {layout!r}")
    u, params, fields = arrays["u"], dict(arrays["params"]), dict(arrays["fields"])
    coordinate_names = {f"{axis}-coordinate": v for axis, v in arrays["coords"].items()}
    if layout == "tensor":
        main = {"tensor": u, "t-coordinate": arrays["t"], **coordinate_names}
    else:
        if u.ndim != 4 or "vx" not in fields or "vy" not in fields:
            raise ValueError(
                f"layout: 'ns' needs 2-D data with fields vx and vy, got u {u.shape} and fields "
                f"{sorted(fields)}"
            )
        main = {
            "particles": u[..., None],
            "velocity": np.stack([fields.pop("vx"), fields.pop("vy")], axis=-1),
            "t": np.broadcast_to(arrays["t"], u.shape[:2]),
            **coordinate_names,
        }
        if "force_x" in params and "force_y" in params:
            main["force"] = np.stack([params.pop("force_x"), params.pop("force_y")], axis=-1)
    reserved = set(main) | {*PER_SAMPLE_ROWS, "physml_attrs", *_NOT_PARAMETERS}
    for name in [*params, *fields]:
        if name in reserved or "/" in name:
            raise ValueError(f"data: name {name!r} is reserved in the PDEBench {layout} layout")
    for name, value in params.items():
        if value.shape == u.shape:
            raise ValueError(
                f"data.params[{name!r}]: shape {value.shape} is the shape of u, which a PDEBench "
                "file keeps for fields: it would read back as a field (make it one)"
            )
    with atomic_path(path, suffix=".h5") as temporary:
        with h5py.File(temporary, "w") as f:
            for name, value in {**main, **fields}.items():
                write_checksummed(f, name, value)
            for name, value in params.items():
                if value.ndim == 1 and _constant(value):
                    f.attrs[name] = value[0]
                else:
                    write_checksummed(f, name, value)
            _write_sample_rows(f, arrays)
            f.attrs["physml_attrs"] = _physml_attrs(data)
    return path


def _write_sample_rows(f: h5py.File, arrays: dict) -> None:
    """The per-sample rows ``arrays`` holds (:data:`PER_SAMPLE_ROWS`) as root datasets."""
    for name in PER_SAMPLE_ROWS:
        if arrays[name] is not None:
            write_checksummed(f, name, arrays[name])


def _tensor_groups(arrays: dict, names: list[str]) -> list[tuple[int, str, np.ndarray]]:
    """``(order, name, value)``: components ``NAME_x``, ``NAME_y`` stacked into one t1 field
    ``NAME`` (``NAME_xx`` ...: t2), any other array a t0 field."""
    suffixes = {
        order: [
            "".join(names[c] for c in comps)
            for comps in itertools.product(range(len(names)), repeat=order)
        ]
        for order in (1, 2)
    }
    left, groups = dict(arrays), []
    for name in arrays:
        if name not in left:
            continue
        for order in (2, 1):
            base = next(
                (name[: -len(s) - 1] for s in suffixes[order] if name.endswith(f"_{s}")), None
            )
            members = [f"{base}_{s}" for s in suffixes[order]] if base else []
            if base and all(m in left and left[m].shape == left[name].shape for m in members):
                value = np.stack([left.pop(m) for m in members], axis=-1)
                if order == 2:
                    value = value.reshape(value.shape[:-1] + (len(names), len(names)))
                groups.append((order, base, value))
                break
        else:
            groups.append((0, name, left.pop(name)))
    return groups


def _boundary_entries(data: PDEData) -> list[dict] | None:
    """The boundary conditions ``data.attrs['well_boundary_conditions']`` lists (as
    :func:`read_well` records them: a JSON list of objects, each with its group's ``name``);
    ``None`` where absent."""
    if _BOUNDARY_CONDITIONS not in data.attrs:
        return None
    return json_value(
        f"data.attrs[{_BOUNDARY_CONDITIONS!r}]",
        data.attrs[_BOUNDARY_CONDITIONS],
        "a JSON list of boundary conditions, each an object with a group name",
        lambda value: (
            isinstance(value, list)
            and all(
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and entry["name"] not in ("", ".", "..")
                and "/" not in entry["name"]
                for entry in value
            )
        ),
    )


def _well_boundary_group(group: h5py.Group, entry: dict) -> None:
    """The group of one boundary condition ``entry`` of :func:`_boundary_entries`."""
    item = group.create_group(entry["name"])
    for key, value in entry.items():
        if key in ("name", "mask_shape", "mask_true", "values", "values_dtype"):
            continue
        is_text = isinstance(value, list) and all(isinstance(v, str) for v in value)
        item.attrs[key] = _string_list(value) if is_text else value
    if "mask_shape" in entry:
        shape = tuple(entry["mask_shape"])
        check_fits("mask", shape, np.dtype(bool), ValueError)
        mask = np.zeros(shape, dtype=bool)
        true = entry.get("mask_true")
        if not isinstance(true, list) or not all(
            type(index) is int and 0 <= index < mask.size for index in true
        ):
            raise ValueError(
                f"mask_true must be a list of the mask's flat indices, integers in [0, "
                f"{mask.size}), got {str(true)[:60]}"
            )
        mask.flat[true] = True
        write_checksummed(item, "mask", mask)
    if "values" in entry:
        write_checksummed(item, "values", np.asarray(entry["values"], entry["values_dtype"]))


def _well_boundary_groups(f: h5py.File, data: PDEData, names: list[str], coords: dict) -> None:
    group = f.create_group("boundary_conditions")
    entries = _boundary_entries(data)
    if entries is not None:
        for entry in entries:
            try:
                _well_boundary_group(group, entry)
            except (KeyError, TypeError, ValueError, IndexError, OverflowError) as error:
                raise ValueError(
                    f"data.attrs[{_BOUNDARY_CONDITIONS!r}]: the entry {entry['name']!r} could not "
                    f"be written as The Well stores it ({type(error).__name__}: {error})"
                ) from None
        return
    sizes = [len(coords[axis]) for axis in AXES[: len(names)]]
    for entry in _text_boundary_entries(data.attrs.get("boundary", ""), names, sizes):
        _well_boundary_group(group, entry)


def _text_boundary_entries(boundary: object, names: list[str], sizes: list[int]) -> list[dict]:
    """The boundary conditions The Well's layout gives our ``boundary`` text on axes ``names`` of
    ``sizes`` points, as :func:`_well_boundaries` reads them back: periodic -> PERIODIC, a wall
    kind -> WALL, on both ends of every axis; none for other text."""
    text = str(boundary).strip().lower()
    kind = (
        "PERIODIC" if text.startswith("periodic") else "WALL" if text.startswith(_WALLS) else None
    )
    if kind is None:
        return []
    entries = []
    for name, size in zip(names, sizes, strict=True):
        mask = np.zeros(size, dtype=bool)
        mask[[0, -1]] = True
        entries.append(
            {
                "name": f"{name}_{kind.lower()}",
                "bc_type": kind,
                "sample_varying": False,
                "time_varying": False,
                "associated_dims": [name],
                "associated_fields": [],
                "mask_shape": [size],
                "mask_true": np.flatnonzero(mask).tolist(),
            }
        )
    return entries


def _as_text(entries: list) -> list[str]:
    """Boundary condition entries as sorted JSON texts, to compare whatever their order."""
    return sorted(json.dumps(entry, sort_keys=True) for entry in entries)


WELL_READ = ("dataset_name", "grid_type", "field", _BOUNDARY_CONDITIONS)
"""Attributes :func:`read_well` gives data besides those a file our writer made carries in
``physml_attrs``; there they restate that data's own (see :func:`well_restated`)."""


def well_restated(attrs: Mapping[str, object], space: tuple[int, ...]) -> list[str]:
    """Which of the :data:`WELL_READ` attributes among ``attrs`` (of data ``(n, time, *space)``)
    say no more than the others: what :func:`write_well` writes for data of the other attributes
    and :func:`read_well` reads back (``dataset_name`` the ``pde``, ``grid_type``
    ``"cartesian"``, ``field`` ``"u"``, ``well_boundary_conditions`` what the ``boundary`` text
    gives on this grid), so that a copy of ours read back from The Well describes the same data
    as the original, which lacks them."""
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs must be a mapping of attributes, got {type(attrs).__name__}")
    sizes = (int, np.integer)
    if not isinstance(space, (tuple, list)) or not all(
        isinstance(n, sizes) and not isinstance(n, bool) for n in space
    ):
        raise TypeError(f"space must be a tuple of grid sizes (integers), got {space!r}")
    space = tuple(int(n) for n in space)
    if not 1 <= len(space) <= len(AXES) or min(space) <= 0:
        raise ValueError(f"space must be 1 to {len(AXES)} positive sizes, got {space}")
    others = {key: value for key, value in attrs.items() if key not in WELL_READ}
    names = list(AXES[: len(space)])
    if _SPATIAL_DIMS in others:
        try:
            names = json_value(_SPATIAL_DIMS, others[_SPATIAL_DIMS], "JSON text")
        except ValueError:  # no JSON, or nested too deep to parse: no axis names
            names = None
    written = {
        "dataset_name": str(others.get("pde", "physml")),
        "grid_type": "cartesian",
        "field": "u",
    }
    restated = [key for key, value in written.items() if attrs.get(key) == value]
    if _BOUNDARY_CONDITIONS in attrs and isinstance(names, list) and len(names) == len(space):
        try:
            read = json_value(_BOUNDARY_CONDITIONS, attrs[_BOUNDARY_CONDITIONS], "JSON text")
            given = _text_boundary_entries(others.get("boundary", ""), names, list(space))
            if isinstance(read, list) and read and _as_text(read) == _as_text(given):
                restated.append(_BOUNDARY_CONDITIONS)
        except (TypeError, ValueError):
            pass  # not JSON (or nested too deep to parse): nothing our reader wrote
    return restated


def _time_varying_scalars(attrs: dict) -> list[str] | None:
    """The names ``attrs[TIME_VARYING_SCALARS]`` lists (``None`` where absent)."""
    if TIME_VARYING_SCALARS not in attrs:
        return None
    return json_value(
        f"data.attrs[{TIME_VARYING_SCALARS!r}]",
        attrs[TIME_VARYING_SCALARS],
        "a JSON list of parameter names",
        lambda names: isinstance(names, list) and all(isinstance(k, str) for k in names),
    )


def write_well(data: PDEData, path: str | os.PathLike) -> Path:
    """Write ``data`` in The Well's layout, atomically (see the module notes for the mapping)."""
    arrays, path = _arrays(data), file_path("path", path)
    _fields_like_u(arrays, "write_well")
    u, coords = arrays["u"], arrays["coords"]
    n, steps, space = u.shape[0], u.shape[1], u.shape[2:]
    names = list(AXES[: len(space)])
    if _SPATIAL_DIMS in data.attrs:
        names = json_value(
            f"data.attrs[{_SPATIAL_DIMS!r}]",
            data.attrs[_SPATIAL_DIMS],
            f"a JSON list of {len(space)} distinct axis name(s), none of them 'time' (the "
            "time axis), '.', '..' or holding '/'",
            lambda value: (
                isinstance(value, list)
                and len(value) == len(space)
                and all(
                    isinstance(k, str) and k not in ("", ".", "..", "time") and "/" not in k
                    for k in value
                )
                and len(set(value)) == len(value)
            ),
        )
    u_name = str(data.attrs.get("field", "u"))
    if u_name in arrays["fields"]:
        raise ValueError(f"data.attrs['field']: {u_name!r} is also the name of a field")
    timed = _time_varying_scalars(data.attrs)
    on_grid = {
        k: v
        for k, v in arrays["params"].items()
        if v.shape[1:] == space and not (timed is not None and k in timed)
    }
    scalars = {k: v for k, v in arrays["params"].items() if k not in on_grid}
    for name, value in on_grid.items():
        if value.shape == (n, steps) and timed is None:
            raise ValueError(
                f"data.params[{name!r}]: shape {value.shape} is both a value per time and one per "
                f"point of the {space[0]}-point grid, and The Well keeps the two apart; the shape "
                f"cannot say which it is (list the time-varying ones in data.attrs"
                f"[{TIME_VARYING_SCALARS!r}] as JSON, or write data whose time and space sizes "
                "differ)"
            )
    for name, value in scalars.items():
        if value.shape not in ((n,), (n, steps)):
            raise ValueError(
                f"data.params[{name!r}]: shape {value.shape} has no place in The Well "
                f"(expected ({n},), ({n}, {steps}) or ({n}, *{space}))"
            )
    fields = [(*g, True) for g in _tensor_groups({u_name: u, **arrays["fields"]}, names)]
    fields += [(*g, False) for g in _tensor_groups(on_grid, names)]
    constant_scalars = [k for k, v in scalars.items() if v.ndim == 1 and _constant(v)]
    with atomic_path(path, suffix=".h5") as temporary:
        with h5py.File(temporary, "w") as f:
            f.attrs.update(
                dataset_name=str(data.attrs.get("dataset_name", data.attrs.get("pde", "physml"))),
                grid_type=str(data.attrs.get("grid_type", "cartesian")),
                n_spatial_dims=len(space),
                n_trajectories=n,
            )
            f.attrs["simulation_parameters"] = _string_list(
                [k for k, v in scalars.items() if v.ndim == 1]
            )
            for name in constant_scalars:
                if name not in _WELL_ROOT and name not in ("physml_attrs", "simulation_parameters"):
                    f.attrs[name] = scalars[name][0]
            f.attrs["physml_attrs"] = _physml_attrs(data)
            dims = f.create_group("dimensions")
            dims.attrs["spatial_dims"] = _string_list(names)
            write_checksummed(dims, "time", arrays["t"])
            dims["time"].attrs.update(sample_varying=False, time_varying=True)
            for axis, name in zip(AXES, names, strict=False):
                write_checksummed(dims, name, coords[axis])
                dims[name].attrs.update(sample_varying=False, time_varying=False)
            _well_boundary_groups(f, data, names, coords)
            groups = [f.create_group(f"t{order}_fields") for order in range(3)]
            listed = [[], [], []]
            for order, name, value, by_time in fields:
                if name in groups[order]:
                    raise ValueError(f"data: two t{order} fields would be named {name!r}")
                item = write_checksummed(groups[order], name, value)
                item.attrs.update(sample_varying=True, time_varying=by_time)
                item.attrs["dim_varying"] = np.ones(len(space), dtype=bool)
                if order == 2:
                    transposed = np.swapaxes(value, -1, -2)
                    item.attrs["symmetric"] = bool(np.array_equal(value, transposed))
                    item.attrs["antisymmetric"] = bool(np.array_equal(value, -transposed))
                listed[order].append(name)
            for group, field_names in zip(groups, listed, strict=True):
                group.attrs["field_names"] = _string_list(field_names)
            group = f.create_group("scalars")
            group.attrs["field_names"] = _string_list(list(scalars))
            for name, value in scalars.items():
                shared = _constant(value)
                item = write_checksummed(group, name, value[0] if shared else value)
                item.attrs.update(sample_varying=not shared, time_varying=value.ndim == 2)
            _write_sample_rows(f, arrays)
    return path


# ----------------------------------------------------------------------------- conversion


def convert(
    source: str | os.PathLike,
    out: str | os.PathLike,
    to: str | None = None,
    field: str | None = None,
    layout: str | None = None,
    overwrite: bool = False,
    overwrite_hint: str = OVERWRITE_HINT,
) -> Path:
    """Rewrite the dataset ``source`` (physml, PDEBench or The Well; a physml index reads its
    shards) as ``out`` in the format ``to`` (default ``"physml"`` for a foreign source; required
    for a physml one). ``field`` picks ``u`` of a The Well source; ``layout`` is PDEBench's;
    ``overwrite_hint`` is how the refusal of an existing ``out`` tells to pass ``overwrite``."""
    source, out = file_path("source", source), file_path("out", out)
    if not source.is_file():
        raise FileNotFoundError(f"source: no file at {str(source)!r}")
    kind = detect_format(source, "source")
    if kind is None:
        raise DatasetFileError(
            f"source: {str(source)!r} is neither a physml dataset nor a PDEBench or The Well file"
        )
    if to is None and kind == "physml":
        raise ValueError(
            "to: name the output format for a physml source: 'physml' (a self-contained copy), "
            "'pdebench' or 'well'"
        )
    to = to or "physml"
    if to not in FORMATS:
        raise ValueError(f"to must be one of {FORMATS}, got {to!r}")
    if layout is not None and to != "pdebench":
        raise ValueError(f"layout: only for to='pdebench', got to={to!r}")
    if field is not None and kind != "well":
        raise ValueError(f"field: only for a The Well source, got a {kind} file")
    if out.resolve() == source.resolve():
        raise ValueError(f"out: {str(out)!r} is the source itself")
    _check_output(out, overwrite, overwrite_hint)
    data = read_well(source, field) if kind == "well" else load(source)
    if to == "pdebench":
        return write_pdebench(data, out, layout)
    if to == "well":
        return write_well(data, out)
    return write_physml(data, out)
