"""The recipe registry: settings round trips, sample shapes, seeds and registration."""

import math
import re

import numpy as np
import pytest
import torch

from pdes import problems
from pdes.problems import Problem


def test_settings_round_trip_and_coerce_whole_floats_for_int_options():
    recipe = problems.get("wave")
    settings = recipe.settings(nx=17.0, nt=np.int64(5), t_end=1)
    assert settings["nx"] == 17 and type(settings["nx"]) is int
    assert settings["t_end"] == 1.0 and type(settings["t_end"]) is float
    assert recipe.settings(**settings) == settings


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_an_infinite_setting_is_refused_by_name(value):
    with pytest.raises(ValueError, match=r"wave: option amplitude must be finite, got -?inf"):
        problems.get("wave").settings(amplitude=value)


def test_sample_shape_is_times_by_nodes():
    recipe = problems.get("wave")
    assert recipe.sample_shape(recipe.settings(nx=17, nt=5)) == (5, 17)


def test_seeds_that_differ_above_two_to_the_32_draw_different_samples():
    high = torch.rand(4, generator=problems.generator(2**32 + 7))
    assert not torch.equal(high, torch.rand(4, generator=problems.generator(7)))


def init_genrand(seed: int) -> list[int]:
    """mt19937's 624 state words after Matsumoto and Nishimura's ``init_genrand(seed mod
    2**32)``, the seeding torch's ``manual_seed`` does."""
    words = [seed % 2**32]
    for i in range(1, 624):
        words.append((1812433253 * (words[-1] ^ (words[-1] >> 30)) + i) % 2**32)
    return words


@pytest.fixture
def fresh_layout_check():
    """The generator state layout checked anew in the test, and again after it."""
    problems._state_template.cache_clear()
    yield
    problems._state_template.cache_clear()


@pytest.mark.parametrize("bit", range(32, 64))
def test_seeds_that_differ_in_any_bit_above_the_low_32_draw_different_numbers(bit):
    low = 123_456_789
    a = torch.rand(8, generator=problems.generator(low), dtype=torch.float64)
    b = torch.rand(8, generator=problems.generator(low + 2**bit), dtype=torch.float64)
    assert not torch.equal(a, b)
    assert not torch.isin(a, b).any()


@pytest.mark.parametrize("seed", [0, 7, 2**32 + 7, 123_456_789_012_345, 2**63 - 1, 2**64 - 1])
def test_a_seed_draws_the_same_numbers_every_time_and_is_the_initial_seed(seed):
    draws = []
    for _ in range(2):
        gen = problems.generator(seed)
        assert gen.initial_seed() == seed and gen.device == torch.device("cpu")
        draws.append(
            (
                torch.rand(5, generator=gen, dtype=torch.float64),
                torch.randn(3, generator=gen, dtype=torch.float64),
                torch.randn(3, generator=gen),
                torch.randint(0, 2**62, (4,), generator=gen),
            )
        )
    for first, second in zip(*draws, strict=True):
        assert first.numpy().tobytes() == second.numpy().tobytes()
    assert problems.generator(np.uint64(seed)).initial_seed() == seed


@pytest.mark.parametrize("seed", [0, 7, 2**32 + 7, 2**64 - 1])
def test_the_generator_holds_the_seed_sequence_words_as_its_mt19937_state(seed):
    words = np.random.SeedSequence(seed).generate_state(624, dtype=np.uint32)
    state = problems.generator(seed).get_state().numpy()
    assert state[24 : 24 + 8 * 624].view(np.uint64).tolist() == words.tolist()


@pytest.mark.parametrize("seed", [0, 5, 2**31 + 3, 2**32 - 1])
def test_words_written_as_the_generator_writes_them_draw_what_manual_seed_draws(seed):
    """The words of ``init_genrand(seed)`` written into a state the way :func:`generator`
    writes its own draw bitwise what ``manual_seed(seed)`` draws: the state is written whole
    (the first draw twists it first, no normal draw is cached)."""
    written = problems._mt19937(seed, np.array(init_genrand(seed), dtype=np.uint64))
    seeded = torch.Generator().manual_seed(seed)
    assert written.initial_seed() == seeded.initial_seed() == seed
    for draw in (
        lambda g: torch.rand(700, generator=g, dtype=torch.float64),  # past one twist
        lambda g: torch.randn(5, generator=g, dtype=torch.float64),
        lambda g: torch.randn(5, generator=g),
        lambda g: torch.randint(0, 1000, (7,), generator=g),
        lambda g: torch.normal(0.0, 1.0, (3,), generator=g),
    ):
        assert torch.equal(draw(written), draw(seeded))
    assert torch.equal(written.get_state(), seeded.get_state())


@pytest.mark.parametrize("seed", [1, 2**32 + 1, 2**63 + 12345])
def test_uniform_and_normal_draws_have_their_distributions_moments(seed):
    """A broken state (zero words, a stuck cache) would draw far from these."""
    n = 10**5
    uniform = torch.rand(n, generator=problems.generator(seed), dtype=torch.float64)
    assert abs(uniform.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert 0 <= uniform.min() and uniform.max() < 1
    normal = torch.randn(n, generator=problems.generator(seed + 1), dtype=torch.float64)
    assert torch.isfinite(normal).all()
    assert abs(normal.mean().item()) < 5 / math.sqrt(n)
    assert abs(normal.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert len(set(normal.tolist())) == n


def _shifted(state):
    """The state's bytes moved by 8: the words where a layout with another header has them."""
    return torch.roll(state, 8)


def _cached_normal(state):
    """A state with a normal draw cached after the words."""
    state = state.clone()
    state[24 + 8 * 624 + 24] = 1
    return state


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s[:-8],
        lambda s: torch.cat([s, s[:8]]),
        _shifted,
        _cached_normal,
        lambda s: s.to(torch.int16),
    ],
    ids=["shorter", "longer", "other-header", "normal-cached", "other-dtype"],
)
def test_a_generator_state_laid_out_otherwise_is_refused_naming_the_torch_version(
    change, monkeypatch, fresh_layout_check
):
    class Other(torch.Generator):
        def get_state(self):
            return change(super().get_state())

    monkeypatch.setattr(torch, "Generator", Other)
    message = (
        rf"^torch {re.escape(torch.__version__)}: its CPU generator's state .* is not laid out"
    )
    for _ in range(2):  # nothing is cached, no generator falls back to manual_seed
        with pytest.raises(RuntimeError, match=message):
            problems.generator(5)
    monkeypatch.undo()
    assert problems.generator(5).initial_seed() == 5


def test_the_layout_is_checked_once_a_process(monkeypatch, fresh_layout_check):
    checks = []

    class Counted(torch.Generator):
        def get_state(self):
            checks.append(1)
            return super().get_state()

    monkeypatch.setattr(torch, "Generator", Counted)
    for seed in range(3):
        problems.generator(seed)
    assert len(checks) == 1


def test_a_registered_recipe_replaces_a_built_in_one_of_that_name(monkeypatch):
    class Mine(Problem):
        name = "wave"

    mine = Mine()
    monkeypatch.setitem(problems._REGISTERED, "wave", mine)
    assert problems.registry()["wave"] is mine and problems.get("wave") is mine


def test_a_recipe_without_a_name_is_refused():
    with pytest.raises(TypeError, match="problem must be a Problem instance with a name"):
        problems.register(Problem())
