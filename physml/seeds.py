"""Seeds derived from other integers, so that related draws (the members of an ensemble, the
chunks of a sampling run) get independent streams from one user seed.

:func:`physml.data.sample_seed`, the seed of a generated dataset's sample, derives from the same
``SeedSequence([seed, index])`` but combines two 32-bit words; it is kept as it is, since the
files store it.
"""

from __future__ import annotations

import numpy as np

from pdes.checks import positive_int


def derived_seed(*parts: int) -> int:
    """A 63-bit seed (what ``torch.Generator.manual_seed`` takes) derived from the non-negative
    integers ``parts`` (at least one): the first 64-bit word of numpy's ``SeedSequence(parts)``,
    shifted right by one bit. Other ``parts`` (another count or order) give an unrelated seed."""
    if not parts:
        raise TypeError("derived_seed needs at least one integer to derive a seed from")
    parts = tuple(positive_int(f"parts[{i}]", part, minimum=0) for i, part in enumerate(parts))
    state = np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))
