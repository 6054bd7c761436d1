"""What training data a checkpoint was made on: size, shapes, file attributes, a hash of samples."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, SEED_SCHEME_VARIABLE

from ..data.datasets import native_order
from ..data.generate import ADDED_LATER, seed_scheme_of
from ..data.interchange import PDEBENCH_GRID_KIND, pdebench_grid_kind
from ..errors import user_stacklevel
from .generators import generators_kept

HASHED = "every sample"
"""How ``sample_hash`` is taken (the fingerprint's ``hashed``), from the bytes of every item.
Checkpoints without ``hashed`` hashed the bytes of :data:`SAMPLED` items only."""
SAMPLED = 5
"""The evenly spread samples (first and last included) that checkpoints before ``hashed``
hashed."""
FOLLOW_ATTRIBUTES = f"{SAMPLED} evenly spread samples: the items follow the attributes"
"""``hashed`` of a dataset that draws its items from its ``attributes`` when asked (one whose
``items_follow_attributes`` is ``True``, as :class:`physml.data.GPMEFunctions`): the attributes
tell other draws, and a few items another code version, without drawing a whole run's items."""
RANDOM_ITEMS = "size, shapes and dtypes: the items differ from one read to the next"
"""``hashed`` of a dataset whose items are drawn anew on each read (random augmentation)."""
ROWS = 4096
"""Items hashed at once from the tensors they are rows of (a ``TensorDataset``'s)."""
READ_LATER = {"grid_kind": PDEBENCH_GRID_KIND}
"""File attributes, with the value read now, that the readers of PDEBench data record and earlier
readers did not (``grid_kind``: cell centres): a checkpoint made on such data
(:func:`physml.data.interchange.pdebench_grid_kind`) read before lacks them and still resumes
on it (its model keeps the position channels it learned); on other data they are differences."""
PROVENANCE = ("created", "merged_from")
"""File attributes that say when and how a file was packaged, not what it holds (the same data
regenerated or merged again must resume the same run)."""


def item_tensors(item: object) -> list[torch.Tensor]:
    """The tensors of a dataset item (tensors, numpy arrays and numbers, nested in tuples, lists
    and dicts, keys in sorted order); strings and other objects hold none."""
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, (np.ndarray, np.generic, int, float)):  # a bool is an int
        array = np.asarray(item)
        try:
            return [torch.from_numpy(np.array(native_order(array), order="C"))]
        except TypeError:  # strings, objects, dates: no tensor to hash
            return []
    if isinstance(item, (tuple, list)):
        return [t for part in item for t in item_tensors(part)]
    if isinstance(item, dict):
        return [t for key in sorted(item) for t in item_tensors(item[key])]
    return []


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The bytes of ``tensor`` in C order, as a flat ``uint8`` tensor on the CPU."""
    plain = tensor.detach().cpu().resolve_conj().resolve_neg()
    return plain.contiguous().reshape(-1).view(torch.uint8)


def _hash_items(dataset: Dataset, indices: Iterable[int]) -> str | None:
    """The sha256 of the bytes of the items at ``indices`` in turn; ``None`` when an item read
    a second time differs."""
    digest = hashlib.sha256()
    for index in indices:
        tensors, again = item_tensors(dataset[index]), item_tensors(dataset[index])
        if len(tensors) != len(again):
            return None
        for tensor, other in zip(tensors, again, strict=True):
            content = _bytes(tensor)
            if (other.shape, other.dtype) != (tensor.shape, tensor.dtype) or not torch.equal(
                content, _bytes(other)
            ):
                return None
            digest.update(content.numpy())
    return digest.hexdigest()


def _hash_rows(tensors: Sequence[torch.Tensor], rows: torch.Tensor | None) -> str:
    """What :func:`_hash_items` gives for items ``tuple(t[rows[i]] for t in tensors)`` (``rows``
    ``None``: item ``i`` is row ``i``), :data:`ROWS` items at a time."""
    digest = hashlib.sha256()
    count = len(tensors[0]) if rows is None else len(rows)
    for start in range(0, count, ROWS):
        stop = min(start + ROWS, count)
        block = slice(start, stop) if rows is None else rows[start:stop]
        parts = [_bytes(tensor[block]) for tensor in tensors]
        items = stop - start
        digest.update(torch.cat([p.reshape(items, len(p) // items) for p in parts], 1).numpy())
    return digest.hexdigest()


_ROW_METHODS = ("__getitem__", "item_rows")
"""A dataset's ``item_rows()`` is trusted when one class defines both of these."""


def item_rows(dataset: Dataset) -> tuple[Sequence[torch.Tensor], torch.Tensor | None] | None:
    """``(tensors, rows)`` of a dataset whose item ``i`` is ``tuple(t[rows[i]] for t in
    tensors)``: a ``TensorDataset`` (``rows`` ``None``: row ``i``) or one offering them as
    ``item_rows()`` (as :class:`physml.training.MemberRows`), defined by the class that defines
    its ``__getitem__`` (a subclass reading its items another way gets ``None``); else ``None``."""
    kind = type(dataset)
    if kind.__getitem__ is TensorDataset.__getitem__:
        return dataset.tensors, None
    owners = {next((k for k in kind.__mro__ if name in vars(k)), None) for name in _ROW_METHODS}
    return dataset.item_rows() if len(owners) == 1 else None


def _hash_every_item(dataset: Dataset, picks: list[int], sampled: str) -> str | None:
    """The hash of every item of ``dataset`` (``None``: they differ between reads): from its
    :func:`item_rows` in blocks when those give the items at ``picks`` (hashed ``sampled``),
    else item by item."""
    backing = item_rows(dataset)
    if backing is not None:
        tensors, rows = backing
        picked = torch.tensor(picks) if rows is None else rows[picks]
        if _hash_rows(tensors, picked) == sampled:
            return _hash_rows(tensors, rows)
    return _hash_items(dataset, range(len(dataset)))


def fingerprint(dataset: Dataset, name: str = "dataset") -> dict[str, object]:
    """``{"samples", "shapes", "dtypes", "attributes", "hashed", "sample_hash", "sampled_hash"}``
    of a map-style dataset.

    ``attributes`` is the dataset's ``attributes`` mapping when it has one (a file's description);
    ``sample_hash`` hashes every sample (``hashed``: :data:`HASHED`), so the same file regenerated
    with another seed or solver setting, or one changed sample, is told apart; a dataset whose
    ``items_follow_attributes`` is ``True`` has :data:`SAMPLED` samples hashed
    (:data:`FOLLOW_ATTRIBUTES`). A ``TensorDataset``, or a dataset whose ``item_rows()`` gives
    ``(tensors, rows)``, item ``i`` being ``tuple(t[rows[i]] for t in tensors)`` (``rows`` an
    integer tensor, as :meth:`physml.training.MemberRows.item_rows`, or ``None`` for row ``i``),
    is hashed from those tensors :data:`ROWS` items at a time, to the same hash, once the
    :data:`SAMPLED` items read agree with them. Each item is read twice: items that differ
    between the reads (random augmentation) cannot be hashed, and ``sample_hash`` then hashes the
    size, shapes and dtypes only (:data:`RANDOM_ITEMS`), with a warning naming ``name``.
    ``sampled_hash`` hashes the :data:`SAMPLED` items that checkpoints written before ``hashed``
    hashed, to check those (``None`` for random items). The random generators are left as they were.
    """
    count = len(dataset)
    if count == 0:
        raise ValueError("dataset is empty: there is nothing to train on")
    picks = sorted({round(i * (count - 1) / max(SAMPLED - 1, 1)) for i in range(SAMPLED)})
    with generators_kept():
        first = item_tensors(dataset[0])
        sampled = _hash_items(dataset, picks)
        if sampled is not None and getattr(dataset, "items_follow_attributes", False) is True:
            hashed, sample_hash = FOLLOW_ATTRIBUTES, sampled
        else:
            hashed = HASHED
            sample_hash = None if sampled is None else _hash_every_item(dataset, picks, sampled)
    shapes, dtypes = [list(t.shape) for t in first], [str(t.dtype) for t in first]
    if sample_hash is None:
        warnings.warn(
            f"{name}: its items differ from one read to the next (random augmentation?), so "
            "the checkpoint's data check compares its size, shapes and dtypes only: resuming on "
            "other data of the same shapes is not detected",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
        hashed = RANDOM_ITEMS
        sample_hash = hashlib.sha256(json.dumps([count, shapes, dtypes]).encode()).hexdigest()
    attributes = getattr(dataset, "attributes", None)
    attributes = attributes if isinstance(attributes, Mapping) else {}
    attributes = {k: v for k, v in attributes.items() if k not in PROVENANCE}
    return {
        "samples": count,
        "shapes": shapes,
        "dtypes": dtypes,
        "attributes": json.loads(json.dumps(attributes, sort_keys=True, default=str)),
        "hashed": hashed,
        "sample_hash": sample_hash,
        "sampled_hash": None if hashed == RANDOM_ITEMS else sampled,
    }


def differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they agree): ``saved``
    may be one from before ``hashed``, checked by the samples it hashed."""
    out = [
        f"{key} {saved.get(key)!r} → {current.get(key)!r}"
        for key in ("samples", "shapes", "dtypes")
        if saved.get(key) != current.get(key)
    ]
    out += _hash_differences(saved, current)
    old, new = (
        {k: v for k, v in printed.get("attributes", {}).items() if k not in PROVENANCE}
        for printed in (saved, current)  # older checkpoints kept the provenance
    )
    if bool(old) != bool(new):
        return [*out, f"attributes: {_described(old)} → {_described(new)}"]
    for key in sorted(set(old) | set(new)):
        if key not in old and (key in ADDED_LATER or _read_later(key, old, new)):
            continue  # written or read before
        if key == "seed_scheme" and seed_scheme_of(old) == seed_scheme_of(new):
            continue  # none recorded: "torch-manual-seed"
        if old.get(key) != new.get(key):
            out.append(f"attribute {key!r} {old.get(key)!r} → {new.get(key)!r}")
    return out


def seed_scheme_hint(saved: dict, current: dict) -> str:
    """A sentence for the refusal of ``current`` data where the fingerprint ``saved`` was taken
    on data drawn under ``"torch-manual-seed"`` (none recorded) and ``current`` under the default
    scheme: how to draw the data as before. ``""`` otherwise."""
    old, new = (printed.get("attributes") or {} for printed in (saved, current))
    if not old or new.get("seed_scheme") != SEED_SCHEME:
        return ""
    if seed_scheme_of(old) != MANUAL_SEED_SCHEME:
        return ""
    return (
        f" The data it was made on drew under the seed scheme {MANUAL_SEED_SCHEME!r}: "
        f"{SEED_SCHEME_VARIABLE}={MANUAL_SEED_SCHEME} draws data as physml did before."
    )


def _read_later(key: str, old: dict, new: dict) -> bool:
    """Whether ``key``, which the attributes ``old`` lack, is one the PDEBench readers now
    record (:data:`READ_LATER`) with the value they record, on data read from a PDEBench file:
    the attributes do not tell a PDEBench file from a copy our writers made in its layout, so
    any such file counts as PDEBench's own, its ``pde`` its reader's or the file's."""
    kind = pdebench_grid_kind(old, may_be_ours=False)
    return key in READ_LATER and new.get(key) == READ_LATER[key] == kind


def _described(attributes: dict) -> str:
    if not attributes:
        return "none (a dataset without attributes, e.g. a Subset)"
    return f"a file's description ({len(attributes)} entries)"


def _hash_differences(saved: dict, current: dict) -> list[str]:
    if "hashed" in saved:
        key = "hashed" if saved["hashed"] != current.get("hashed") else "sample_hash"
        new = current.get(key)
    elif current.get("hashed") == RANDOM_ITEMS:
        return []  # random items: the bytes an older checkpoint hashed cannot be compared
    else:  # written before "hashed": the SAMPLED items hashed
        key, new = "sample_hash", current.get("sampled_hash", current.get("sample_hash"))
    return [] if saved.get(key) == new else [f"{key} {saved.get(key)!r} → {new!r}"]
