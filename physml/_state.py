"""State dicts that load back with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations


def without_neuralop_metadata(state: dict) -> dict:
    """``state`` (changed in place) without neuralop's unprefixed ``_metadata``: a neuralop
    model writes its init arguments there, functions and classes among them, which
    ``torch.load(..., weights_only=True)`` refuses; only its own ``load_state_dict`` removes
    the key, so a model holding one would see it as an unexpected key."""
    state.pop("_metadata", None)
    return state
