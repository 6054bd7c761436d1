"""Derived seeds: one formula for the ensemble's members and PreDiff's sampling chunks."""

import numpy as np
import pytest
import torch

from physml.data import sample_seed
from physml.models import DeepEnsemble
from physml.seeds import derived_seed
from physml.tasks.prediff.evaluation import chunk_seed

PARTS = [(0,), (0, 0), (7, 3), (5, 2, 0), (2**63 - 1, 12)]


@pytest.mark.parametrize("parts", PARTS)
def test_a_derived_seed_is_the_first_64_bit_word_of_the_seed_sequence_halved(parts):
    word = np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0]
    assert derived_seed(*parts) == int(word) // 2
    assert 0 <= derived_seed(*parts) < 2**63


def test_chunk_seeds_and_ensemble_members_draw_from_derived_seeds():
    assert [chunk_seed(7, i) for i in range(3)] == [derived_seed(7, i) for i in range(3)]
    model = DeepEnsemble(in_features=1, members=2, width=1, depth=1)
    model.reset(seed=4)
    first = torch.Generator().manual_seed(derived_seed(4, 0, 0))
    weight, bias = torch.rand(1, 1, generator=first), torch.rand(1, 1, generator=first)
    assert torch.equal(model.layers[0].weight[0], 2 * weight - 1)  # bound 1/√fan_in = 1
    assert torch.equal(model.layers[0].bias[0], 2 * bias - 1)


def test_a_sample_seed_is_another_number_from_the_same_seed_sequence():
    words = np.random.SeedSequence([7, 3]).generate_state(2, dtype=np.uint32)
    assert sample_seed(7, 3) == (int(words[0]) << 31) ^ int(words[1]) != derived_seed(7, 3)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_seed_that_is_no_non_negative_integer_is_refused_by_name(bad):
    """A negative seed failed inside numpy's SeedSequence ("expected non-negative integer"),
    a bool was read as 1."""
    model = DeepEnsemble(in_features=1, members=2, width=1, depth=1)
    for call, name in (
        (lambda: model.reset(seed=bad), "seed"),
        (lambda: chunk_seed(bad, 0), "seed"),
        (lambda: chunk_seed(0, bad), "index"),
        (lambda: derived_seed(3, bad), r"parts\[1\]"),
    ):
        with pytest.raises((TypeError, ValueError), match=rf"^{name} must be an integer >= 0"):
            call()
    with pytest.raises(TypeError, match="at least one integer"):
        derived_seed()
