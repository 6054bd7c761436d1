"""What training data a checkpoint was made on: size, shapes, file attributes, a hash of samples."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch.utils.data import Dataset

SAMPLED = 5  # samples hashed: evenly spread, first and last included
PROVENANCE = ("created", "merged_from")
"""File attributes that say when and how a file was packaged, not what it holds: the same data
regenerated or merged again must resume the same run."""


def _tensors(item: object) -> list[torch.Tensor]:
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, (np.ndarray, np.generic, int, float)):  # a bool is an int
        array = np.asarray(item)
        try:
            return [torch.from_numpy(array.astype(array.dtype.newbyteorder("="), order="C"))]
        except TypeError:  # strings, objects, dates: no tensor to hash
            return []
    if isinstance(item, (tuple, list)):
        return [t for part in item for t in _tensors(part)]
    if isinstance(item, dict):
        return [t for key in sorted(item) for t in _tensors(item[key])]
    return []


def fingerprint(dataset: Dataset) -> dict[str, object]:
    """``{"samples", "shapes", "dtypes", "attributes", "sample_hash"}`` of a map-style dataset.

    ``attributes`` is the dataset's ``attributes`` dict when it has one (a file's description);
    ``sample_hash`` hashes the bytes of a few samples, so the same file regenerated with another
    seed or solver setting is told apart.
    """
    count = len(dataset)
    if count == 0:
        raise ValueError("dataset is empty: there is nothing to train on")
    picks = sorted({round(i * (count - 1) / max(SAMPLED - 1, 1)) for i in range(SAMPLED)})
    digest = hashlib.sha256()
    shapes, dtypes = None, None
    for index in picks:
        tensors = _tensors(dataset[index])
        if shapes is None:
            shapes = [list(t.shape) for t in tensors]
            dtypes = [str(t.dtype) for t in tensors]
        for tensor in tensors:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    attributes = getattr(dataset, "attributes", None) or {}
    attributes = {k: v for k, v in attributes.items() if k not in PROVENANCE}
    return {
        "samples": count,
        "shapes": shapes,
        "dtypes": dtypes,
        "attributes": json.loads(json.dumps(attributes, sort_keys=True, default=str)),
        "sample_hash": digest.hexdigest(),
    }


def differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they agree)."""
    out = []
    for key in ("samples", "shapes", "dtypes", "sample_hash"):
        if saved.get(key) != current.get(key):
            out.append(f"{key} {saved.get(key)!r} → {current.get(key)!r}")
    old, new = saved.get("attributes", {}), current.get("attributes", {})
    for key in sorted((set(old) | set(new)) - set(PROVENANCE)):  # older checkpoints kept them
        if old.get(key) != new.get(key):
            out.append(f"attribute {key!r} {old.get(key)!r} → {new.get(key)!r}")
    return out
