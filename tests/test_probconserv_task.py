"""ProbConserv task pieces: names, grids, true mass, predictions, scores and the summary."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from pdes.gpme import diffusion_exact, pme_exact, stefan_exact, stefan_z1
from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme
from physml.data import gpme_sampler
from physml.outputs import Gaussian
from physml.tasks import Context, probconserv
from physml.tasks.probconserv import (
    Scale,
    case_name,
    grids,
    predict,
    score,
    shock_positions,
    stefan_front,
    summary,
    true_mass,
)

F64 = torch.float64
SMALL = Scale(
    nt=21,
    nx=41,
    train_steps=1,
    batch=1,
    n_target=1,
    test_functions=3,
    posterior_samples=50,
    hidden=4,
)


def test_case_names_drop_trailing_zeros():
    assert case_name("pme", 1.0) == "pme-m1"
    assert case_name("diffusion", 5.0) == "diffusion-k5"
    assert case_name("stefan", 0.6) == "stefan-u0.6"


@pytest.mark.parametrize(
    ("case", "t_end", "upper"),
    [("diffusion", 1.0, 2 * math.pi), ("pme", 1.0, 1.0), ("stefan", 0.1, 1.0)],
)
def test_grids_follow_the_scale(case, t_end, upper):
    """``nt`` times on [0, t_end] and ``nx`` nodes: a scale with nt != nx keeps them apart."""
    scale = replace(SMALL, nt=5, nx=9, test_functions=1, posterior_samples=1)
    grid, t, x = grids(case, scale)
    assert grid.n == 9 and x.shape == (9,)
    assert torch.allclose(t, torch.linspace(0.0, t_end, 5, dtype=F64), rtol=0, atol=1e-15)
    assert x[0].item() == 0.0
    assert x[-1].item() == pytest.approx(upper * (8 / 9 if case == "diffusion" else 1.0))


@pytest.mark.parametrize(
    ("case", "params", "exact"),
    [
        ("diffusion", [1.0, 5.0], diffusion_exact),
        ("pme", [1.0, 3.0], pme_exact),
        ("stefan", [0.6, 0.5], stefan_exact),
    ],
)
def test_true_mass_is_the_integral_of_the_exact_solution(case, params, exact):
    """The mass from the integral form against a fine trapezoid sum of the closed form."""
    t = torch.linspace(0.0, 0.1, 5, dtype=F64)
    if case == "diffusion":  # periodic: the trapezoid rule is spectrally exact on [0, 2π]
        x = torch.linspace(0.0, 2 * math.pi, 2001, dtype=F64)
    else:
        x = torch.linspace(0.0, 1.0, 200_001, dtype=F64)
    u = exact(x, t, torch.tensor(params, dtype=F64)).numpy()
    reference = np.trapezoid(u, x.numpy(), axis=-1)
    mass = true_mass(case, t, torch.tensor(params, dtype=F64))
    assert mass.shape == (2, 5) and mass.dtype == F64
    assert np.allclose(mass[:, 1:].numpy(), reference[:, 1:], rtol=1e-4, atol=1e-12)
    assert (mass[:, 0] == 0).all()


class _Flat(nn.Module):
    """A stand-in surrogate: a fixed Gaussian with diagonal variance, flat ``(function, T·X)``."""

    def __init__(self, mean: torch.Tensor, variance: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.variance = mean.flatten(1), variance.flatten(1)

    def forward(self, *inputs):
        return Gaussian(self.mean, self.variance)


def test_predict_projects_hardc_euclidean_and_probconserv_by_the_covariance():
    """Per time slice with trapezoid weights w and mass b (σ_G = 0): HardC moves the mean by
    w (b - w·μ)/(w·w) and keeps the variance; ProbConserv by Σw (b - w·μ)/(wᵀΣw) and shrinks
    the variance to σ² - (σ² w)²/(wᵀΣw)."""
    scale = replace(SMALL, nt=3, nx=6, test_functions=2, posterior_samples=1)
    grid, t, x = grids("stefan", scale)
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand(2, 3, 6, generator=gen, dtype=F64)
    variance = 0.1 + torch.rand(2, 3, 6, generator=gen, dtype=F64)
    mass = torch.rand(2, 3, generator=gen, dtype=F64)
    models = {"anp": _Flat(mean, variance), "softc-anp": _Flat(mean + 1.0, 2 * variance)}
    dx = 1.0 / 5
    w = torch.tensor([0.5, 1, 1, 1, 1, 0.5], dtype=F64) * dx
    out = predict(models, (None, None, None), grid, mass, 3, 6)
    assert set(out) == {"anp", "softc-anp", "hardc-anp", "probconserv-anp"}
    torch.testing.assert_close(out["anp"].mean, mean, rtol=0, atol=0)
    torch.testing.assert_close(out["anp"].variance(), variance, rtol=0, atol=0)
    torch.testing.assert_close(out["softc-anp"].mean, mean + 1.0, rtol=0, atol=0)
    gap = (mass - (mean * w).sum(-1))[..., None]
    hard = mean + w * gap / (w * w).sum()
    torch.testing.assert_close(out["hardc-anp"].mean, hard, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out["hardc-anp"].variance(), variance, rtol=1e-12, atol=1e-14)
    spread = (variance * w * w).sum(-1, keepdim=True)
    torch.testing.assert_close(
        out["probconserv-anp"].mean, mean + variance * w * gap / spread, rtol=1e-12, atol=1e-14
    )
    torch.testing.assert_close(
        out["probconserv-anp"].variance(),
        variance - (variance * w) ** 2 / spread,
        rtol=1e-10,
        atol=1e-14,
    )
    for name in ("hardc-anp", "probconserv-anp"):
        torch.testing.assert_close((out[name].mean * w).sum(-1), mass, rtol=0, atol=1e-14)


def test_one_test_function_has_no_standard_error():
    grid, t, x = grids("diffusion", SMALL)
    params = torch.full((1,), 1.0, dtype=F64)
    exact = diffusion_exact(x, t, params)
    prediction = {"shifted": Gaussian(exact - 0.1, torch.full_like(exact, 0.01))}
    mass = true_mass("diffusion", t, params)
    (row,), _ = score("diffusion", prediction, exact, grid, mass, t, params, SMALL, seed=0)
    assert row["mse"] == pytest.approx(0.01, rel=1e-9)
    for key in ("mse", "ce", "ce_abs", "ll", "crps"):
        assert math.isnan(row[f"{key}_se"]), key


def test_score_rows_against_independent_values():
    """Stefan u* = 0.6, three functions: a mean shifted down by s_f (variance 0.01) scores
    MSE s_f², CE at the middle time = the exact slice's trapezoid error - s_f (the domain has
    length 1), the Gaussian LL and CRPS of an error s_f; a sharp mean one hair below the exact
    solution puts the final shock on the first node past 2 z₁ √t."""
    grid, t, x = grids("stefan", SMALL)
    params = torch.full((3,), 0.6, dtype=F64)
    exact = stefan_exact(x, t, params)
    mass = true_mass("stefan", t, params)
    shifts = torch.tensor([0.1, 0.2, 0.4], dtype=F64)
    predictions = {
        "shifted": Gaussian(exact - shifts[:, None, None], torch.full_like(exact, 0.01)),
        "sharp": Gaussian(exact - 1e-6, torch.full_like(exact, 1e-20)),
    }
    rows, shocks = score("stefan", predictions, exact, grid, mass, t, params, SMALL, seed=3)
    by = {row["method"]: row for row in rows}
    mid = 10
    assert by["shifted"]["t_ce"] == pytest.approx(0.05, abs=1e-15)

    def mean_se(values):
        values = np.asarray(values, dtype=float)
        return values.mean(), values.std(ddof=1) / math.sqrt(values.size)

    slice_error = np.trapezoid(exact[:, mid].numpy(), x.numpy(), axis=-1) - mass[:, mid].numpy()
    ce = slice_error - shifts.numpy()
    ll = -0.5 * (np.log(2 * np.pi * 0.01) + shifts.numpy() ** 2 / 0.01)
    z = shifts.numpy() / 0.1
    crps = 0.1 * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))
    expected = {"mse": shifts.numpy() ** 2, "ce": ce, "ce_abs": np.abs(ce), "ll": ll, "crps": crps}
    for key, values in expected.items():
        value, se = mean_se(values)
        assert by["shifted"][key] == pytest.approx(value, rel=1e-9, abs=1e-15), key
        assert by["shifted"][f"{key}_se"] == pytest.approx(se, rel=1e-6, abs=1e-15), key
    assert by["shifted"]["ce"] < 0 < by["shifted"]["ce_abs"]
    front = 2 * stefan_z1(0.6) * math.sqrt(0.1)
    first_past = x[x > front][0].item()
    assert shocks["sharp"].shape == (SMALL.posterior_samples, 3)
    assert torch.allclose(shocks["sharp"], torch.full_like(shocks["sharp"], first_past))
    assert by["sharp"]["shock_error"] == pytest.approx(first_past - front, rel=1e-9)
    assert by["sharp"]["shock_error_se"] == 0


def test_a_sample_that_never_drops_to_zero_puts_the_shock_at_the_right_end():
    x = torch.linspace(0.0, 1.0, 11, dtype=F64)
    gaussian = Gaussian(torch.ones(2, 3, 11, dtype=F64), torch.full((2, 3, 11), 1e-6, dtype=F64))
    positions = shock_positions(gaussian, x, 2, 7, seed=0)
    assert positions.shape == (7, 2) and (positions == 1.0).all()


def test_summary_judges_exact_conservation_and_reports_the_mse_ratio():
    rows = [
        {"case": "c", "method": "anp", "ce_abs": 0.5, "mse": 4.0},
        {"case": "c", "method": "probconserv-anp", "ce_abs": 1e-4, "mse": 1.0},
        {"case": "d", "method": "anp", "ce_abs": 0.5, "mse": 4.0},
        {"case": "d", "method": "probconserv-anp", "ce_abs": 1e-7, "mse": 3.0},
    ]
    lines = {(row.case, row.metric): row for row in summary("t", rows)}
    assert lines["c", "|CE| probconserv-anp"].ok is False
    assert lines["d", "|CE| probconserv-anp"].ok is True
    assert lines["c", "|CE| anp"].value == 0.5
    assert lines["c", "MSE probconserv / anp"].value == pytest.approx(0.25)
    assert lines["d", "MSE probconserv / anp"].value == pytest.approx(0.75)


def test_the_stefan_front_is_where_the_exact_solution_drops_to_zero():
    """The front the shock errors and plots are judged against: behind it u >= u*, past it 0."""
    for u_star in (0.5, 0.6):
        front = stefan_front(u_star, 0.1)
        x = torch.tensor([front * (1 - 1e-9), front * (1 + 1e-9)], dtype=F64)
        behind, past = stefan_exact(x, torch.tensor([0.1], dtype=F64), u_star)[0, 0].tolist()
        assert behind == pytest.approx(u_star, abs=1e-6) and past == 0.0
    fronts = stefan_front(torch.tensor([0.5, 0.6], dtype=F64), 0.1)
    assert fronts.tolist() == pytest.approx([stefan_front(0.5, 0.1), stefan_front(0.6, 0.1)])


class _Drawn(Exception):
    """Stops :func:`evaluate` once it has drawn its first test case."""


def first_test_case(monkeypatch, tmp_path, seed: int) -> tuple[torch.Tensor, ...]:
    """The functions :func:`evaluate` scores for PME's first test value with task seed ``seed``
    (no model trained: the evaluation stops where the models would predict them)."""
    drawn = []

    def stop(models, batch, *rest):
        drawn.append(batch)
        raise _Drawn

    monkeypatch.setattr(probconserv, "train_models", lambda *arguments: {})
    monkeypatch.setattr(probconserv, "predict", stop)
    with pytest.raises(_Drawn):
        probconserv.evaluate("pme", Context(tmp_path, seed=seed, quiet=True), scale=SMALL)
    return drawn[0]


def test_test_cases_of_seeds_agreeing_in_their_low_32_bits_differ_by_default(monkeypatch, tmp_path):
    with seed_scheme(SEED_SCHEME):
        first, other = (first_test_case(monkeypatch, tmp_path, s) for s in (5, 5 + 2**32))
    assert not torch.equal(first[0], other[0])  # the context points drawn


def test_test_cases_in_the_manual_seed_scheme_are_manual_seeds_bitwise(monkeypatch, tmp_path):
    """The test functions of runs made before the default seed scheme are drawn again."""
    _, t, x = grids("pme", SMALL)
    value = probconserv.TESTS["pme"][0]
    sampler = gpme_sampler(
        "pme", SMALL.test_functions, t_grid=t, x_grid=x, param_range=(value, value)
    )
    expected = sampler(torch.Generator().manual_seed(5 + 1000))
    with seed_scheme(MANUAL_SEED_SCHEME):
        for seed in (5, 5 + 2**32):
            drawn = first_test_case(monkeypatch, tmp_path, seed)
            assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))
