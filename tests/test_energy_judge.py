"""The energy judge (an independent frames → energy regressor) and the energy error it reads."""

import numpy as np
import pytest
import torch

from physml.data.nbody import nbody_digits
from physml.metrics import energy_error
from physml.models.energy_judge import EnergyJudge, standardise
from physml.outputs import Ensemble
from physml.training import TrainConfig, Trainer
from physml.training.families import mse_loss


def brightness(frames):
    """A judge in closed form: each frame's mean pixel value, ``(N, T)``."""
    return frames.mean((2, 3, 4))


def test_energy_error_in_closed_form():
    levels = torch.tensor([[0.1, 0.2, 0.4], [0.5, 0.5, 0.8]])  # (B, T): each frame's brightness
    frames = levels[:, :, None, None, None].expand(2, 3, 1, 4, 4).clone()
    energy0 = torch.tensor([0.2, 0.6])
    expected = torch.tensor([(0.1 + 0.0 + 0.2) / 3, (0.1 + 0.1 + 0.2) / 3], dtype=torch.float64)
    per_sample = energy_error(frames, energy0, brightness, reduction="none")
    torch.testing.assert_close(per_sample, expected)
    torch.testing.assert_close(energy_error(frames, energy0, brightness), expected.mean())
    members = torch.stack([frames, frames + 1.0])  # (M, B, T, C, H, W)
    for given in (members, Ensemble(members)):
        both = energy_error(given, energy0, brightness, reduction="none")
        assert both.shape == (2, 2)
        torch.testing.assert_close(both[0], expected)
        torch.testing.assert_close(
            both[1], (levels + 1.0 - energy0[:, None]).abs().mean(1).double()
        )


@pytest.mark.parametrize(
    ("frames", "energy0", "judge", "error", "match"),
    [
        (torch.zeros(2, 3, 4, 4), torch.zeros(2), brightness, ValueError, "frames must be"),
        (torch.zeros(2, 3, 1, 4, 4), torch.zeros(3), brightness, ValueError, "energy0"),
        (torch.zeros(2, 3, 1, 4, 4), torch.zeros(2), "judge", TypeError, "judge must be callable"),
        (torch.zeros(2, 3, 1, 4, 4), torch.zeros(2), lambda f: f.mean(), ValueError, "judge must"),
        (torch.full((2, 3, 1, 4, 4), torch.nan), torch.zeros(2), brightness, ValueError, "NaN"),
        (
            torch.zeros(2, 3, 1, 4, 4),
            torch.zeros(2),
            lambda frames: torch.full(frames.shape[:2], torch.nan),
            ValueError,
            r"judge\(frames\) contains NaN or inf values",
        ),
    ],
)
def test_energy_error_rejects_bad_input(frames, energy0, judge, error, match):
    with pytest.raises(error, match=match):
        energy_error(frames, energy0, judge)


def test_judge_shapes_window_and_independence():
    judge = EnergyJudge(window=3, hidden=4, depth=2, offset=2.0, scale=0.5).eval()
    frames = torch.rand(3, 5, 1, 16, 16)
    with torch.no_grad():
        energies = judge(frames)
        assert energies.shape == (3, 5) and energies.dtype == torch.float32
        assert judge(frames[:, :1]).shape == (3, 1)  # one frame: its window repeats it
        later = frames.clone()
        later[:, 3:] = torch.rand(3, 2, 1, 16, 16)  # frame 1 sees frames 0..2 only
        assert torch.equal(judge(later)[:, :2], energies[:, :2])
        others = frames.clone()
        others[1:] = 0.0  # one sample's energy does not depend on the others
        assert torch.equal(judge(others)[0], energies[0])


def test_judge_has_its_own_seed_and_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    a, b, c = EnergyJudge(seed=1), EnergyJudge(seed=1), EnergyJudge(seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.head[0].weight, c.head[0].weight)


def test_judge_sizes_and_seed_given_as_numpy_integers_build_the_judge_the_ints_build():
    """``seed=np.int64(1)`` passed the check, then torch's generator refused it ("an integer
    is required")."""
    sizes = dict(channels=1, window=3, hidden=4, depth=2, seed=1)
    given = EnergyJudge(**{name: np.int64(value) for name, value in sizes.items()})
    expected = EnergyJudge(**sizes)
    assert (type(given.channels), type(given.window)) == (int, int)
    assert all(
        torch.equal(p, q) for p, q in zip(given.parameters(), expected.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 2}, ValueError, "window must be odd"),
        ({"hidden": 0}, ValueError, "hidden"),
        ({"seed": -1}, ValueError, "seed"),
        ({"channels": 1.5}, TypeError, "channels"),
    ],
)
def test_judge_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        EnergyJudge(**kwargs)


def test_judge_rejects_frames_of_the_wrong_layout():
    with pytest.raises(ValueError, match="channel"):
        EnergyJudge(channels=1)(torch.rand(1, 2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        EnergyJudge()(torch.rand(2, 16, 16))


class Frames(torch.utils.data.Dataset):
    def __init__(self, frames, values):
        self.frames, self.values = frames, values

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return self.frames[i], self.values[i]


def test_judge_trains_through_the_trainer_on_a_learnable_quantity(tmp_path):
    """At toy size the judge cannot learn the N-body energy in seconds (measured: at 32², 256
    videos, 300 steps it barely beats the mean); a per-frame quantity of N-body frames that a CNN
    reads easily (the brightness of frames dimmed by a random factor each) checks the training
    path end to end, and ``energy_error`` on true frames is then the judge's floor."""
    data = nbody_digits(96, seed=0, frames=4, size=16, digits=3)
    dim = 0.5 + torch.rand(96, 4, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    frames = data.frames * dim
    values = 100 * brightness(frames)
    offset, scale = standardise(values[:80])
    judge = EnergyJudge(hidden=8, depth=2, offset=offset, scale=scale, seed=3)
    config = TrainConfig(steps=200, batch=16, lr=3e-3, seed=0, checkpoint_every=200)
    Trainer(judge, mse_loss, config, out=tmp_path, quiet=True).fit(Frames(frames[:80], values[:80]))
    truth = values[80:]
    judge.eval()
    with torch.no_grad():
        error = (judge(frames[80:]) - truth).abs().mean()
    assert error < 0.2 * (truth - truth.mean()).abs().mean(), float(error)
    # the floor: energy_error of the true frames against their own first value, within the
    # judge's error of the exact |value_t − value_0| average
    floor = energy_error(frames[80:], truth[:, 0], judge, reduction="none")
    exact = (truth - truth[:, :1]).abs().mean(1).double()
    assert floor.shape == (16,)
    assert (floor - exact).abs().mean() <= 2 * error
