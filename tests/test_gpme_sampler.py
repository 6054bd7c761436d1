"""The GPME sampler against the closed forms at the points it draws, and its checks."""

import math

import pytest
import torch

from physml.data import GPMEFunctions, gpme_sampler
from physml.data.gpme_sampler import coordinate_axis

T_GRID = torch.linspace(0.0, 1.0, 6)
X_GRID = torch.linspace(0.0, 2 * math.pi, 9)


def diffusion(**overrides):
    settings = {"n_context": 12, "context_times": 2, "n_target": 20}
    settings.update(overrides)
    return gpme_sampler("diffusion", 200, t_grid=T_GRID, x_grid=X_GRID, **settings)


def test_context_of_two_times_by_six_places_holds_the_exact_diffusion_values():
    cx, cy, tx, ty, k = diffusion(param_range=(2.0, 2.5))(torch.Generator().manual_seed(0))
    assert cx.shape == (200, 12, 2) and tx.shape == (200, 20, 2)
    for b in range(200):
        assert cx[b, :, 0].unique().numel() == 2 and cx[b, :, 1].unique().numel() == 6
    assert ((k >= 2.0) & (k <= 2.5)).all() and k.min() < 2.05 and k.max() > 2.45
    for x, y in ((cx, cy), (tx, ty)):
        exact = torch.exp(-k[:, None].double() * x[..., 0].double()) * torch.sin(x[..., 1].double())
        torch.testing.assert_close(y.double(), exact, rtol=0, atol=1e-6)


def test_settings_and_input_range_name_the_grid_and_every_drawing_setting():
    sampler = diffusion()
    assert sampler.input_range == ((0.0, 1.0), (0.0, pytest.approx(2 * math.pi)))
    others = [
        diffusion(n_context=12, context_times=3),
        diffusion(param_range=(1.0, 2.0)),
        gpme_sampler("diffusion", 2, 12, 20, torch.linspace(0.0, 1.0, 11), X_GRID, None, 2),
    ]
    for other in others:
        assert other.settings != sampler.settings


def test_a_functions_latent_seed_is_not_the_seed_of_its_points():
    sampler = diffusion()
    functions = GPMEFunctions(sampler, size=4, seed=3)
    for item in range(4):
        cx, *_, seed = functions[item]
        replay = sampler.draw(torch.Generator().manual_seed(int(seed)), 1)
        assert not torch.equal(replay[0][0], cx)


@pytest.mark.parametrize(
    "value, match",
    [
        ([0.5], r"t_grid must be a 1-D array of >= 2 points, got shape \(1,\)"),
        ([0.0, 0.5, 0.5, 1.0], "t_grid must be strictly increasing"),
        ([0.0, 1.0, math.inf], r"^t_grid contains NaN or inf values$"),
    ],
)
def test_coordinate_axes_need_two_increasing_finite_points(value, match):
    with pytest.raises(ValueError, match=match):
        coordinate_axis("t_grid", value)


def test_the_pme_front_is_judged_at_the_last_time_not_an_earlier_one():
    """PME's front x = t leaves [0, 1] at t = 1: a grid whose last time only is past it."""
    x_grid = torch.linspace(0.0, 1.0, 11)
    points = {"n_context": 3, "context_times": 3, "x_grid": x_grid}
    with pytest.raises(ValueError, match=r"^t_grid ends at 1.01: "):
        gpme_sampler("pme", 1, t_grid=torch.tensor([0.0, 0.5, 1.01]), **points)
    gpme_sampler("pme", 1, t_grid=torch.tensor([0.0, 0.5, 1.0]), **points)


@pytest.mark.parametrize("param_range", [(1.0, 2.0, 3.0), (1.0,), 2.0])
def test_param_range_must_be_a_pair(param_range):
    with pytest.raises(TypeError, match=r"param_range must be a pair \(low, high\), got "):
        diffusion(param_range=param_range)


def test_drawing_needs_a_generator_by_name():
    with pytest.raises(TypeError, match="^generator must be a torch.Generator, got int$"):
        diffusion().draw(0, 1)


def test_functions_name_their_seed_scheme_but_the_old_one():
    from pdes.problems import seed_scheme

    with seed_scheme("torch-manual-seed"):
        old = GPMEFunctions(diffusion(), size=4, seed=3)
    assert old.attributes == {**diffusion().settings, "seed": 3}
    new = GPMEFunctions(diffusion(), size=4, seed=3)
    assert new.attributes == {
        **diffusion().settings,
        "seed": 3,
        "seed_scheme": "seedsequence-mt19937",
    }
