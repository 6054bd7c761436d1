"""Seeds that agree in their low 32 bits: earlier physml drew identical samples from them
(``repeated_streams`` lists those of such a dataset); samples are now drawn from every bit of
their seeds, so they differ."""

import functools
import warnings

import h5py
import numpy as np
import pytest

import physml.data.generate as generate_module
from pdes import problems
from physml.data import generate_dataset
from physml.data.generate import sample_seed

SEED, N = 0, 103_381
"""A dataset with a repeat: seed 0's first two samples of equal low words lie below 103 381 (the
brute force below finds them; the smallest such size for seed 0, so ``N - 1`` samples have none)."""


@functools.cache
def pairs_by_brute_force(seed: int, n: int) -> tuple[tuple[int, int], ...]:
    """The pairs ``(i, j)``, ``i < j < n``, of ``sample_seed`` values that agree in their low 32
    bits, found one ``sample_seed`` at a time with a dict (each later index paired with the first
    of its low word)."""
    first_of, pairs = {}, []
    for j in range(n):
        low = sample_seed(seed, j) & 0xFFFFFFFF
        if low in first_of:
            pairs.append((first_of[low], j))
        else:
            first_of[low] = j
    return tuple(pairs)


def test_the_dataset_used_here_has_exactly_one_pair_and_its_last_sample_is_in_it():
    pairs = pairs_by_brute_force(SEED, N)
    assert len(pairs) == 1 and pairs[0][1] == N - 1
    i, j = pairs[0]
    assert sample_seed(SEED, i) != sample_seed(SEED, j)


def test_repeated_streams_lists_the_samples_whose_seeds_agree_in_their_low_32_bits():
    pairs = pairs_by_brute_force(SEED, N)
    assert generate_module.repeated_streams(SEED, N) == list(pairs)
    assert generate_module.repeated_streams(SEED, N - 1) == []
    assert generate_module.repeated_streams(SEED, 0) == []
    assert generate_module.repeated_streams(np.int64(SEED), np.int32(N)) == list(pairs)


def test_repeated_streams_groups_a_hand_made_seed_list(monkeypatch):
    hand = [5, 2**32 + 5, 7, 9, 2**33 + 7, 2**40 + 5, 11, 2**62 + 11, 12, 2**32]
    # low words: 5 5 7 9 7 5 11 11 12 0 -> samples 0, 1, 5; 2, 4; 6, 7 are the same sample
    monkeypatch.setattr(
        generate_module,
        "_sample_seeds",
        lambda seed, start, stop: np.array(hand[start:stop], dtype=np.int64),
    )
    assert generate_module.repeated_streams(3, 10) == [(0, 1, 5), (2, 4), (6, 7)]
    assert generate_module.repeated_streams(3, 5) == [(0, 1), (2, 4)]
    monkeypatch.setattr(generate_module, "_BLOCK", 3)  # groups across the blocks of seeds
    assert generate_module.repeated_streams(3, 10) == [(0, 1, 5), (2, 4), (6, 7)]


@pytest.mark.parametrize(
    ("seed", "n", "match"),
    [
        (-1, 4, r"seed must be a non-negative integer below 2\*\*63 .*got -1"),
        (2**63, 4, r"seed must be a non-negative integer .*got 9223372036854775808"),
        (1.5, 4, r"seed must be a non-negative integer .*got 1\.5"),
        (True, 4, r"seed must be a non-negative integer .*got True"),
        (0, -1, r"^n must be a non-negative integer, got -1$"),
        (0, 2.0, r"^n must be a non-negative integer, got 2\.0$"),
        (0, "3", r"^n must be a non-negative integer, got '3'$"),
        (0, True, r"^n must be a non-negative integer, got True$"),
    ],
)
def test_repeated_streams_refuses_what_is_not_a_seed_and_a_size_by_name(seed, n, match):
    with pytest.raises(ValueError, match=match):
        generate_module.repeated_streams(seed, n)


@pytest.mark.parametrize(
    "seed", [0, 1, 5, 2**32 - 1, 2**32, 2**32 + 5, 2**40, 123_456_789_012_345, 2**63 - 1]
)
def test_the_seeds_of_a_block_of_samples_are_sample_seed_s(seed, monkeypatch):
    """Generation and the check take a block's seeds at once; each is ``sample_seed``'s, for a
    seed of one 32-bit word or two and indices of one word or two, across blocks."""
    monkeypatch.setattr(generate_module, "_BLOCK", 7)
    blocks = ((0, 20), (2**32 - 3, 2**32 + 3), (2**63 - 2, 2**63 + 2), (2**64 - 3, 2**64))
    for start, stop in blocks:
        got = generate_module._sample_seeds(seed, start, stop)
        assert got.dtype == np.int64
        assert got.tolist() == [sample_seed(seed, i) for i in range(start, stop)]


def test_a_built_in_recipe_solves_the_two_seeds_of_a_low_word_pair_to_two_samples():
    """Solutions that differ as two samples do, where earlier physml drew one sample twice."""
    (pair,) = pairs_by_brute_force(SEED, N)
    for pde, settings in (("heat", {"nx": 9, "nt": 3}), ("wave", {"nt": 3})):
        recipe = problems.get(pde)
        seeds = [sample_seed(SEED, i) for i in pair]
        batch = recipe.generate(seeds, recipe.settings(**settings))
        assert (batch.u[0] - batch.u[1]).abs().max() > 1e-3 * batch.u.abs().max(), pde


def test_a_file_of_seeds_agreeing_in_their_low_32_bits_holds_different_samples_unwarned(
    tmp_path, monkeypatch
):
    hand = [5, 2**32 + 5, 2**40 + 5, 2**62 + 5, 7]  # one low word but the last
    monkeypatch.setattr(
        generate_module,
        "_sample_seeds",
        lambda seed, start, stop: np.array(hand[start:stop], dtype=np.int64),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = generate_dataset("heat", tmp_path / "heat.h5", n=5, nx=9, nt=3, progress=False)
    with h5py.File(path) as f:
        assert f["sample_seed"][()].tolist() == hand
        assert len({f["u"][i].tobytes() for i in range(5)}) == 5
