"""Under the seed scheme ``"torch-manual-seed"`` (physml's before the default), samples of one
dataset whose seeds agree in their low 32 bits are identical (``manual_seed`` keeps only those
bits): generation under it warns naming them, and ``repeated_streams`` lists them beforehand.
Under the default scheme, which draws from every bit of the seeds, they differ, unwarned."""

import functools
import re
import warnings

import h5py
import numpy as np
import pytest
import torch
from recipes import TOY  # noqa: F401 (registers the toy recipe)

import physml.data.generate as generate_module
from pdes import problems
from physml.data import generate_dataset
from physml.data.generate import sample_seed, shard_range

OLD = "torch-manual-seed"
NEW_SCHEME_ADVICE = (
    ". For a new dataset, the default seed scheme 'seedsequence-mt19937' draws every sample from "
    "its whole seed"
)

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


def repeats_of(record) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, generate_module.RepeatedSamplesWarning)]


@pytest.fixture(autouse=True)
def default_scheme(monkeypatch):
    monkeypatch.delenv("PHYSML_SEED_SCHEME", raising=False)


@pytest.fixture
def old_scheme_in_the_environment(default_scheme, monkeypatch):
    monkeypatch.setenv("PHYSML_SEED_SCHEME", OLD)


old_scheme = pytest.mark.usefixtures("old_scheme_in_the_environment")
"""The old scheme, named by ``PHYSML_SEED_SCHEME``, for the whole test."""


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


@old_scheme
def test_the_file_holds_the_two_samples_of_a_repeat_twice_and_only_shard_0_warns(tmp_path):
    (pair,) = pairs_by_brute_force(SEED, N)
    num_shards = N // (N - pair[0])  # the last shard, of N // num_shards >= N - i samples,
    shard = num_shards - 1  # holds both samples (j = N - 1), a fifth of the dataset at most
    assert set(pair) <= set(shard_range(N, shard, num_shards)) and num_shards >= 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", generate_module.RepeatedSamplesWarning)
        path = generate_dataset(
            "toy", tmp_path / "toy.h5", n=N, seed=SEED, shard=shard, num_shards=num_shards,
            chunk=N, progress=False,
        )  # fmt: skip
    with h5py.File(path) as f:
        rows = np.searchsorted(f["sample_index"][()], pair)
        assert f["sample_index"][()][rows].tolist() == list(pair)
        seeds = f["sample_seed"][()][rows]
        assert seeds[0] != seeds[1]  # two seeds, one sample: bitwise
        for name in ("u", "params/a", "fields/u_squared"):
            first, second = f[name][rows[0]], f[name][rows[1]]
            assert np.array_equal(first, second) and first.tobytes() == second.tobytes()
        assert not np.array_equal(f["u"][rows[0]], f["u"][rows[0] + 1])


@old_scheme
@pytest.mark.parametrize(("pde", "settings"), [("heat", {"nx": 9, "nt": 3}), ("wave", {"nt": 3})])
def test_a_built_in_recipe_solves_the_two_seeds_of_a_repeat_to_one_sample(pde, settings):
    """Their draws are bitwise one; the solutions are one to round-off (a batched solve may round
    two rows of a batch apart)."""
    (pair,) = pairs_by_brute_force(SEED, N)
    recipe = problems.get(pde)
    seeds = [sample_seed(SEED, i) for i in (pair[0], pair[0] + 1, pair[1])]
    batch = recipe.generate(seeds, recipe.settings(**settings))
    for name, values in batch.params.items():
        assert values[0].numpy().tobytes() == values[2].numpy().tobytes(), name
    scale = batch.u.abs().max().item()
    torch.testing.assert_close(batch.u[0], batch.u[2], rtol=0, atol=1e-14 * scale)
    assert (batch.u[0] - batch.u[1]).abs().max() > 1e-3 * scale


@old_scheme
def test_shard_0_checks_the_whole_dataset_and_says_another_seed_cannot_help_at_this_size(
    tmp_path,
):
    """Shard 0 of 100 holds neither sample of the pair, and still warns of them; at N samples
    every seed repeats about N**2 / 2**33 = 1.24 samples, so the warning says to drop them."""
    (pair,) = pairs_by_brute_force(SEED, N)
    assert pair[0] not in shard_range(N, 0, 100) and pair[1] not in shard_range(N, 0, 100)
    with pytest.warns(UserWarning, match=rf"samples {pair[0]} = {pair[1]} have seeds") as record:
        generate_dataset(
            "toy", tmp_path / "toy.h5", n=N, seed=SEED, num_shards=100, chunk=2000,
            progress=False,
        )  # fmt: skip
    (repeat,) = repeats_of(record)
    message = str(repeat.message)
    assert f"seed=0, n={N}: 1 sample repeats another" in message
    assert "leaks the test into training" in message
    assert (
        f"At this size every seed repeats about {N * N / 2**33:.3g} samples, so another seed "
        "does not help: keep the first sample of each group that "
        "physml.data.repeated_streams(seed, n) lists and drop the others, or generate fewer "
        "samples" + NEW_SCHEME_ADVICE
    ) in message
    assert message.endswith(NEW_SCHEME_ADVICE)
    assert "another seed or fewer" not in message
    assert repeat.filename == __file__  # names the user's line
    with warnings.catch_warnings():  # the other shards leave the check to shard 0
        warnings.simplefilter("error", generate_module.RepeatedSamplesWarning)
        generate_dataset(
            "toy", tmp_path / "toy.h5", n=N, seed=SEED, shard=99, num_shards=100, chunk=2000,
            progress=False,
        )  # fmt: skip


def test_physml_generate_warns_of_the_repeat_under_the_old_scheme_only(tmp_path, capsys):
    from physml.cli import main

    (pair,) = pairs_by_brute_force(SEED, N)
    out = str(tmp_path / "toy.h5")
    args = ["generate", "toy", "--n", str(N), "--num-shards", "100", "--out", out, "--quiet"]
    with pytest.warns(UserWarning, match=rf"samples {pair[0]} = {pair[1]} have seeds") as record:
        assert main([*args, "--seed", str(SEED), "--chunk", "2000", "--seed-scheme", OLD]) == 0
    assert len(repeats_of(record)) == 1
    new = ["--seed", str(SEED), "--chunk", "2000", "--out", str(tmp_path / "new.h5")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", generate_module.RepeatedSamplesWarning)
        assert main([*args, *new]) == 0


@old_scheme
def test_a_dataset_without_repeats_does_not_warn(tmp_path):
    category = generate_module.RepeatedSamplesWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", category)
        generate_dataset(
            "toy", tmp_path / "toy.h5", n=N - 1, seed=SEED, num_shards=100, chunk=2000,
            progress=False,
        )  # fmt: skip
        generate_dataset("toy", tmp_path / "small.h5", n=10, seed=SEED, progress=False)


@old_scheme
def test_the_warning_names_the_first_groups_and_counts_every_repeated_sample(tmp_path, monkeypatch):
    low = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1]  # 7 groups, 8 repeated samples
    hand = [word + (index << 40) for index, word in enumerate(low)]
    monkeypatch.setattr(
        generate_module,
        "_sample_seeds",
        lambda seed, start, stop: np.array(hand[start:stop], dtype=np.int64),
    )
    with pytest.warns(UserWarning) as record:
        path = generate_dataset("toy", tmp_path / "toy.h5", n=len(low), chunk=4, progress=False)
    (repeat,) = repeats_of(record)
    message = str(repeat.message)
    shown = "0 = 7 = 14; 1 = 8; 2 = 9; 3 = 10; 4 = 11; and 2 more"
    assert f"8 samples repeat others: samples {shown} have seeds" in message
    assert not re.search(r"\b5 = 12\b", message)
    with h5py.File(path) as f:
        assert f["sample_seed"][()].tolist() == hand
        u = f["u"][()]
    for group in ((0, 7, 14), (1, 8), (6, 13)):
        assert all(u[i].tobytes() == u[group[0]].tobytes() for i in group)
    assert len({u[i].tobytes() for i in range(7)}) == 7


@old_scheme
def test_a_dataset_too_large_to_list_is_warned_of_with_the_expected_number(tmp_path, monkeypatch):
    def unlisted(seed, n):
        raise AssertionError("a dataset above LISTED_UP_TO is not listed")

    monkeypatch.setattr(generate_module, "LISTED_UP_TO", 9)
    monkeypatch.setattr(generate_module, "repeated_streams", unlisted)
    expected = f"{10 * 10 / 2**33:.3g}"  # n**2 / 2**33 samples repeat others, for n << 2**32
    with pytest.warns(UserWarning, match=rf"seed=4, n=10: about {expected} samples repeat") as got:
        generate_dataset("toy", tmp_path / "toy.h5", n=10, seed=4, progress=False)
    (repeat,) = repeats_of(got)
    assert str(repeat.message).endswith(
        f"At this size every seed repeats about {expected} samples, so another seed does not "
        "help: keep the first sample of each group that physml.data.repeated_streams(seed, n) "
        "lists and drop the others, or generate fewer samples" + NEW_SCHEME_ADVICE
    )
    monkeypatch.undo()
    monkeypatch.setenv("PHYSML_SEED_SCHEME", OLD)
    monkeypatch.setattr(generate_module, "LISTED_UP_TO", 9)  # 9 samples: listed, none repeat
    with warnings.catch_warnings():
        warnings.simplefilter("error", generate_module.RepeatedSamplesWarning)
        generate_dataset("toy", tmp_path / "nine.h5", n=9, seed=4, progress=False)


def _seeds_repeating(pairs: dict[int, int]):
    """A stand-in for ``_sample_seeds``: sample ``i`` has low word ``i`` (its high word ``i``
    too), but the low word of sample ``j`` is ``pairs[j]``'s: each ``(pairs[j], j)`` repeats."""

    def seeds(seed, start, stop):
        index = np.arange(start, stop, dtype=np.int64)
        low = np.array([pairs.get(i, i) for i in range(start, stop)], dtype=np.int64)
        return (index << 32) + low

    return seeds


@old_scheme
def test_below_one_expected_repeat_the_warning_says_to_take_another_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(generate_module, "_sample_seeds", _seeds_repeating({9: 2}))
    with pytest.warns(UserWarning) as record:
        generate_dataset("toy", tmp_path / "toy.h5", n=10, seed=4, progress=False)
    (repeat,) = repeats_of(record)
    assert str(repeat.message).endswith(
        "leaks the test into training. Generate with another seed or fewer samples "
        "(physml.data.repeated_streams(seed, n) lists them beforehand)" + NEW_SCHEME_ADVICE
    )


@old_scheme
def test_a_built_in_recipe_is_said_to_draw_alike_and_one_of_ones_own_only_if_it_draws_so(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(generate_module, "_sample_seeds", _seeds_repeating({2: 0}))
    found = {}
    for pde, settings in (("heat", {"nx": 9, "nt": 3}), ("toy", {})):
        with pytest.warns(UserWarning) as record:
            generate_dataset(pde, tmp_path / f"{pde}.h5", n=3, progress=False, **settings)
        (repeat,) = repeats_of(record)
        found[pde] = str(repeat.message)
    low_bits = (
        "samples 0 = 2 have seeds that agree in their low 32 bits, all that the seed scheme "
        "'torch-manual-seed' (torch's manual_seed) keeps, "
    )
    assert (
        low_bits + "so they draw the same numbers (pdes.problems.generator, which every built-in "
        "recipe draws with): identical samples; split between"
    ) in found["heat"]
    assert (
        low_bits + "so they are identical samples if recipe 'toy' draws with "
        "pdes.problems.generator, as every built-in recipe does, or another torch generator "
        "seeded by manual_seed; split between"
    ) in found["toy"]


@old_scheme
@pytest.mark.parametrize("num_shards", [1, 2])
def test_a_rerun_of_a_finished_dataset_does_not_warn_again(tmp_path, monkeypatch, num_shards):
    monkeypatch.setattr(generate_module, "_sample_seeds", _seeds_repeating({3: 1}))
    out = tmp_path / "toy.h5"
    with pytest.warns(UserWarning) as record:
        written = generate_dataset("toy", out, n=4, num_shards=num_shards, progress=False)
    assert len(repeats_of(record)) == 1
    with warnings.catch_warnings():  # a requeued job: the file is kept and returned
        warnings.simplefilter("error", generate_module.RepeatedSamplesWarning)
        assert generate_dataset("toy", out, n=4, num_shards=num_shards, progress=False) == written


@old_scheme
def test_a_refused_call_does_not_warn(tmp_path, monkeypatch):
    monkeypatch.setattr(generate_module, "_sample_seeds", _seeds_repeating({3: 1}))
    other = tmp_path / "other.h5"
    generate_dataset("toy", other, n=6, progress=False)  # its seeds repeat too: warned of
    index = tmp_path / "index.h5"
    index.write_bytes(b"")  # stands for the index of an earlier dataset
    (tmp_path / "folder.h5").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", generate_module.RepeatedSamplesWarning)
        with pytest.raises(FileExistsError, match="already exists"):
            generate_dataset("toy", other, n=4, progress=False)  # holds another dataset
        with pytest.raises(FileExistsError, match=r"^out: index .* already exists"):
            generate_dataset("toy", index, n=4, num_shards=2, progress=False)
        with pytest.raises(ValueError, match="is a folder"):
            generate_dataset("toy", tmp_path / "folder.h5", n=4, progress=False)


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


def test_the_default_scheme_does_not_warn_of_a_dataset_of_low_word_pairs(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", generate_module.RepeatedSamplesWarning)
        generate_dataset(
            "toy", tmp_path / "toy.h5", n=N, seed=SEED, num_shards=100, chunk=2000,
            progress=False,
        )  # fmt: skip
    with pytest.warns(generate_module.RepeatedSamplesWarning):  # the same request, old scheme
        generate_dataset(
            "toy", tmp_path / "old.h5", n=N, seed=SEED, num_shards=100, chunk=2000,
            progress=False, seed_scheme=OLD,
        )  # fmt: skip


def _item_datasets():
    """A GPME function dataset and a point-set dataset long enough to hold the low-word pair."""
    from physml.data import GPMEFunctions, PDEData, PointSets, gpme_sampler

    sampler = gpme_sampler(
        "diffusion",
        1,
        n_context=12,
        context_times=2,
        n_target=20,
        t_grid=torch.linspace(0.0, 1.0, 6),
        x_grid=torch.linspace(0.0, 6.0, 9),
    )
    u = torch.arange(3 * 6 * 9, dtype=torch.float64).reshape(3, 6, 9)
    grid = {"t": torch.linspace(0.0, 1.0, 6), "coords": {"x": torch.linspace(0.0, 1.0, 9)}}
    data = PDEData(u=u, params={"a": torch.tensor([1.0, 2.0, 3.0])}, **grid)
    views = -(-N // 3)
    return {
        "functions": lambda: GPMEFunctions(sampler, size=N, seed=SEED),
        "point sets": lambda: PointSets(
            data, n_context=4, context_times=2, n_target=5, views=views
        ),
    }


@pytest.mark.parametrize("kind", ["functions", "point sets"])
def test_items_of_seeds_agreeing_in_their_low_32_bits_differ_and_keep_their_scheme(
    kind, monkeypatch
):
    """Training items drawn from ``(seed, i)`` are as distinct as samples: the pair that is one
    item twice under the old scheme (which a dataset made in it keeps, whatever is active when
    its items are drawn) is two items under the default."""
    (pair,) = pairs_by_brute_force(SEED, N)
    make = _item_datasets()[kind]
    default = make()
    with problems.seed_scheme(OLD):
        old = make()
        again = default[pair[0]]
    assert default.seed_scheme == problems.SEED_SCHEME and old.seed_scheme == OLD
    drawn = (0, 2)  # the context and target points: what the item's own generator draws
    first, second = default[pair[0]], default[pair[1]]
    assert any(not torch.equal(first[k], second[k]) for k in drawn)
    assert all(torch.equal(a, b) for a, b in zip(again, first, strict=True))
    assert all(torch.equal(old[pair[0]][k], old[pair[1]][k]) for k in drawn)
