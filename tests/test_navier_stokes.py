"""Periodic vorticity solver: Taylor–Green, velocity, conservation, time order, recipe, errors."""

from __future__ import annotations

import math
import re

import h5py
import numpy as np
import pytest
import torch

from pdes import navier_stokes as ns
from pdes.errors import SolverError
from pdes.grid import Grid1D, Grid2D
from pdes.random_fields import gaussian_random_field_2d
from pdes.verification import convergence
from physml.data import generate_dataset

F64 = torch.float64
UNIT = Grid2D.square(16, periodic=True)
BOX = Grid2D(Grid1D(16, 0.0, 2.0, periodic=True), Grid1D(24, -1.0, 2.0, periodic=True))
ODD = Grid2D(Grid1D(15, 0.0, 1.0, periodic=True), Grid1D(20, 0.0, 1.5, kind="cell", periodic=True))


def random_field(grid: Grid2D, batch: int, seed: int = 0, mean: float = 0.0) -> torch.Tensor:
    """A smooth random vorticity on a periodic grid: low Fourier modes with random weights."""
    g = torch.Generator().manual_seed(seed)
    x, y = grid.coordinates()
    a, b = 2 * math.pi / grid.x.length, 2 * math.pi / grid.y.length
    w = torch.full((batch, *grid.shape), mean, dtype=F64)
    for p in range(-2, 3):
        for q in range(-2, 3):
            if p or q:
                c, s = torch.randn(2, batch, 1, 1, generator=g, dtype=F64) / (p * p + q * q)
                w += c * torch.cos(a * p * x + b * q * y) + s * torch.sin(a * p * x + b * q * y)
    return w


def spectral_derivatives(f: torch.Tensor, grid: Grid2D) -> tuple[torch.Tensor, torch.Tensor]:
    """``∂_x f`` and ``∂_y f`` by full complex FFTs, Nyquist derivatives set to zero."""
    nx, ny = grid.shape
    kx = torch.fft.fftfreq(nx, d=grid.x.length / nx, dtype=F64) * 2 * math.pi
    ky = torch.fft.fftfreq(ny, d=grid.y.length / ny, dtype=F64) * 2 * math.pi
    if nx % 2 == 0:
        kx[nx // 2] = 0.0
    if ny % 2 == 0:
        ky[ny // 2] = 0.0
    hat = torch.fft.fft2(f)
    dx = torch.fft.ifft2(1j * kx[:, None] * hat).real
    dy = torch.fft.ifft2(1j * ky[None, :] * hat).real
    return dx, dy


def without_mean_and_nyquist(w: torch.Tensor, grid: Grid2D) -> torch.Tensor:
    nx, ny = grid.shape
    hat = torch.fft.fft2(w)
    hat[..., 0, 0] = 0.0
    if nx % 2 == 0:
        hat[..., nx // 2, :] = 0.0
    if ny % 2 == 0:
        hat[..., :, ny // 2] = 0.0
    return torch.fft.ifft2(hat).real


# ----------------------------------------------------------------------------- Taylor–Green


def test_taylor_green_formula_and_its_velocity_on_the_unit_torus():
    """w = 2Ak' cos k'x cos k'y e^{-2νk'²t}, velocity A(-cos k'x sin k'y, sin k'x cos k'y)."""
    k, amplitude, nu, t = 2, 1.5, 0.01, 0.3
    w = ns.taylor_green(UNIT, [0.0, t], nu, k=k, amplitude=amplitude)
    assert w.shape == (1, 2, 16, 16)
    kk = 2 * math.pi * k
    x, y = UNIT.coordinates()
    expected = 2 * amplitude * kk * torch.cos(kk * x) * torch.cos(kk * y)
    torch.testing.assert_close(w[0, 0], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        w[0, 1], expected * math.exp(-2 * nu * kk**2 * t), rtol=0, atol=1e-12
    )
    vx, vy = ns.velocity(w[0, 0], UNIT)
    torch.testing.assert_close(
        vx, -amplitude * torch.cos(kk * x) * torch.sin(kk * y), atol=1e-13, rtol=0
    )
    torch.testing.assert_close(
        vy, amplitude * torch.sin(kk * x) * torch.cos(kk * y), atol=1e-13, rtol=0
    )
    wx, wy = spectral_derivatives(w[0, 0], UNIT)
    assert (vx * wx + vy * wy).abs().max() < 1e-11 * w.abs().max() ** 2


# CN's relative error is about t ν³|k|⁶ h²/12 (module docstring); each step below keeps it < 1e-13.
@pytest.mark.parametrize(
    "grid, k, nu, step",
    [
        (UNIT, 1, torch.tensor([1e-4, 4e-4, 1e-3]), 1e-4),
        (UNIT, 2, torch.tensor([2e-5, 5e-5]), 2e-4),
        (BOX, 1, torch.tensor([5e-4, 2e-3]), 5e-4),
    ],
    ids=["unit-k1", "unit-k2", "box-2x3"],
)
def test_taylor_green_decays_exactly(grid, k, nu, step):
    t = [0.0, 0.25, 0.5, 1.0]
    exact = ns.taylor_green(grid, t, nu.to(F64), k=k, amplitude=3.0)
    k2 = (exact[0, 0].abs().max() / 3.0) ** 2 / 2  # |k|² from the peak A√(2|k|²)
    bound = (t[-1] * nu.max() ** 3 * k2**3 * step**2 / 12).item()
    assert bound < 1e-12
    numerical = ns.solve_vorticity(exact[:, 0], grid, nu, t, forcing=None, max_step=step)
    scale = exact[:, :1].abs().amax(dim=(-2, -1), keepdim=True)
    error = ((numerical - exact).abs() / scale).max().item()
    assert error < 1e-12


def test_taylor_green_at_a_large_step_follows_crank_nicolson_exactly():
    """The advection of Taylor–Green vanishes in the scheme, so each step multiplies by CN's
    (1 - z/2)/(1 + z/2), z = hν|k|², to round-off however large the step."""
    nu = torch.tensor([0.01, 0.03], dtype=F64)
    t = torch.tensor([0.0, 0.2, 0.6], dtype=F64)
    w0 = ns.taylor_green(UNIT, 0.0, nu, amplitude=0.5)[:, 0]
    h = 0.02
    numerical = ns.solve_vorticity(w0, UNIT, nu, t, forcing=None, max_step=h)
    z = h * nu * 2 * (2 * math.pi) ** 2
    factor = ((1 - z / 2) / (1 + z / 2))[:, None] ** torch.round(t / h)[None, :]
    expected = factor[:, :, None, None] * w0[:, None]
    torch.testing.assert_close(numerical, expected, rtol=0, atol=1e-13 * w0.abs().max().item())
    exact = ns.taylor_green(UNIT, t, nu, amplitude=0.5)
    assert (numerical - exact).abs().max() > 1e-8  # the CN error is visible at this step


def test_a_step_reuses_its_work_arrays_and_leaves_its_input_alone():
    """Taylor–Green's advection vanishes, so each CN–Heun step multiplies its coefficients by
    (1 - z/2)/(1 + z/2), z = hν|k|²: the same from work arrays kept by the scheme, made once."""
    nu = torch.tensor([0.01, 0.03], dtype=F64)
    w0 = ns.taylor_green(UNIT, 0.0, nu, amplitude=0.5)[:, 0]
    scheme = ns.VorticityScheme(UNIT, nu, None, "cpu")
    c = torch.fft.rfft2(w0)
    before = c.clone()
    h, steps = 0.02, 3
    first, _ = scheme.advance(c, h, steps)
    arrays = scheme._work(c)
    second, _ = scheme.advance(c, h, steps)
    assert scheme._work(c) is arrays
    assert torch.equal(c, before) and torch.equal(first, second)
    assert first.data_ptr() != second.data_ptr()
    z = h * nu * 2 * (2 * math.pi) ** 2
    expected = ((1 - z / 2) / (1 + z / 2))[:, None, None] ** steps * w0
    got = torch.fft.irfft2(first, s=UNIT.shape)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13 * w0.abs().max().item())


@pytest.mark.parametrize("case", ns.EXACT_CASES, ids=lambda c: c.name)
def test_exact_case_converges_at_its_order(case):
    study = convergence(case)
    assert study.order >= case.order - 0.05, (study.errors, study.orders)
    assert study.errors[-1] < 1e-3


# ----------------------------------------------------------------------------- velocity


@pytest.mark.parametrize("grid", [UNIT, BOX, ODD], ids=["unit", "box", "odd-cell"])
def test_velocity_is_divergence_free_and_its_curl_is_the_vorticity(grid):
    w = random_field(grid, 3, seed=1, mean=0.7)
    w = w + 0.1 * torch.randn(w.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    vx, vy = ns.velocity(w[:, None], grid)  # extra leading axes are kept
    assert vx.shape == vy.shape == (3, 1, *grid.shape)
    vx, vy = vx[:, 0], vy[:, 0]
    dvx_dx, dvx_dy = spectral_derivatives(vx, grid)
    dvy_dx, dvy_dy = spectral_derivatives(vy, grid)
    scale = w.abs().max().item()
    assert (dvx_dx + dvy_dy).abs().max() < 1e-13 * scale
    curl = dvy_dx - dvx_dy
    torch.testing.assert_close(curl, without_mean_and_nyquist(w, grid), rtol=0, atol=1e-13 * scale)


def test_velocity_rejects_mismatched_fields():
    with pytest.raises(ValueError, match="shape"):
        ns.velocity(torch.zeros(2, 16, 15, dtype=F64), UNIT)
    with pytest.raises(ValueError, match="NaN"):
        ns.velocity(torch.full((16, 16), float("nan"), dtype=F64), UNIT)


def test_fno_forcing_is_the_documented_formula_on_a_box():
    """``0.1 (sin θ + cos θ)``, ``θ = 2π(x/Lx + y/Ly)``, on coordinates built here (BOX: x in
    [0, 2) on 16 nodes, y in [-1, 2) on 24); at the origin of the unit torus it is 0.1."""
    x = np.arange(16) * 2.0 / 16
    y = -1.0 + np.arange(24) * 3.0 / 24
    theta = 2 * np.pi * (x[:, None] / 2.0 + y[None, :] / 3.0)
    expected = 0.1 * (np.sin(theta) + np.cos(theta))
    np.testing.assert_allclose(ns.fno_forcing(BOX).numpy(), expected, rtol=0, atol=1e-15)
    assert ns.fno_forcing(UNIT)[0, 0].item() == pytest.approx(0.1, rel=0, abs=1e-15)


# ----------------------------------------------------------------------------- the solver


@pytest.mark.parametrize(
    "forcing",
    ["fno", "per-sample"],
)
def test_mean_vorticity_is_conserved_with_forcing(forcing):
    grid = Grid2D.square(32, periodic=True)
    w0 = gaussian_random_field_2d(32, batch=3, generator=torch.Generator().manual_seed(3))
    w0 = w0 + torch.tensor([0.0, 0.5, -2.0], dtype=F64)[:, None, None]
    if forcing == "per-sample":
        forcing = random_field(grid, 3, seed=4)
        forcing = forcing - forcing.mean(dim=(-2, -1), keepdim=True)
    nu = torch.tensor([1e-3, 1e-2, 1e-4], dtype=F64)
    w = ns.solve_vorticity(w0, grid, nu, [0.0, 0.5, 1.0, 2.0], forcing=forcing)
    means = w.mean(dim=(-2, -1))
    torch.testing.assert_close(
        means, w0.mean(dim=(-2, -1))[:, None].expand_as(means), rtol=0, atol=1e-14
    )
    assert (w[:, -1] - w0).abs().max() > 0.05  # the flow did move


def test_dealiased_advection_conserves_energy_and_enstrophy_of_the_kept_modes():
    """With the 2/3 rule the advection is the Galerkin truncation: orthogonal to the kept w and ψ
    (an aliased product, or one built from all modes as FNO's generator does, is not)."""
    grid = Grid2D.square(24, periodic=True)
    w = gaussian_random_field_2d(24, batch=2, zero_mean=True, generator=torch.Generator())
    scheme = ns.VorticityScheme(grid, torch.full((2,), 1e-3, dtype=F64), None, "cpu")
    advection = torch.fft.irfft2(scheme.nonlinear(torch.fft.rfft2(w)), s=grid.shape)
    m = torch.fft.fftfreq(24, d=1 / 24, dtype=F64).abs()
    kept = ((m[:, None] < 8) & (m[None, :] < 8)).to(F64)
    kept_w = torch.fft.ifft2(torch.fft.fft2(w) * kept).real
    k2 = (2 * math.pi) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    psi = torch.fft.ifft2(torch.fft.fft2(kept_w) / torch.where(k2 > 0, k2, 1.0)).real
    for field in (kept_w, psi):
        product = (field * advection).sum(dim=(-2, -1))
        assert product.abs().max() < 1e-13 * (field.abs() * advection.abs()).sum(dim=(-2, -1)).min()
    assert advection.abs().max() > 0.1


def test_modes_outside_the_two_thirds_band_only_decay_by_crank_nicolson():
    grid = Grid2D.square(24, periodic=True)
    w0 = gaussian_random_field_2d(24, batch=2, zero_mean=True, generator=torch.Generator())
    nu = torch.tensor([1e-3, 1e-2], dtype=F64)
    h, steps = 0.01, 20
    w = ns.solve_vorticity(w0, grid, nu, [h * steps], forcing=None, max_step=h)[:, -1]
    m = torch.fft.fftfreq(24, d=1 / 24, dtype=F64).abs()
    outside = ~((m[:, None] < 8) & (m[None, :] < 8))
    z = h * nu[:, None, None] * (2 * math.pi) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    expected = torch.fft.fft2(w0) * ((1 - z / 2) / (1 + z / 2)) ** steps
    got = torch.fft.fft2(w)
    torch.testing.assert_close(got[:, outside], expected[:, outside], rtol=0, atol=1e-13 * 24**2)
    assert (got[:, ~outside] - expected[:, ~outside]).abs().max() > 1e-3  # the band is advected


def test_the_solution_satisfies_the_vorticity_equation():
    """Central differences in time against -u·∇w + νΔw + f built here from ``velocity`` (checked on
    Taylor–Green above) and FFT derivatives, projected onto the 2/3 band the solver keeps."""
    grid = Grid2D.square(32, periodic=True)
    w0 = 2.0 * random_field(grid, 2, seed=14)
    nu = torch.tensor([1e-2, 3e-2], dtype=F64)
    t, delta = 0.1, 5e-4
    w = ns.solve_vorticity(w0, grid, nu, [t - delta, t, t + delta], max_step=1e-4)
    w_t = (w[:, 2] - w[:, 0]) / (2 * delta)
    mid = w[:, 1]
    vx, vy = ns.velocity(mid, grid)
    wx, wy = spectral_derivatives(mid, grid)
    laplacian = sum(spectral_derivatives(d, grid)[i] for i, d in enumerate((wx, wy)))
    m = torch.fft.fftfreq(32, d=1 / 32, dtype=F64).abs()
    band = ((m[:, None] < 32 / 3) & (m[None, :] < 32 / 3)).to(F64)
    advection = torch.fft.ifft2(torch.fft.fft2(vx * wx + vy * wy) * band).real
    rhs = -advection + nu[:, None, None] * laplacian + ns.fno_forcing(grid)
    scale = advection.abs().max().item()
    assert (w_t - rhs).abs().max() < 1e-4 * scale
    assert scale > 1.0


def test_second_order_in_time_on_a_random_field():
    grid = Grid2D.square(32, periodic=True)
    w0 = random_field(grid, 2, seed=5)
    nu = torch.tensor([5e-3, 2e-2], dtype=F64)
    reference = ns.solve_vorticity(w0, grid, nu, [1.0], max_step=1 / 1024)[:, -1]
    assert (reference - w0).abs().max() > 1.0  # a strongly nonlinear change
    errors = []
    for steps in (32, 64, 128):
        w = ns.solve_vorticity(w0, grid, nu, [1.0], max_step=1 / steps)[:, -1]
        errors.append((w - reference).abs().max().item())
    orders = [math.log2(e0 / e1) for e0, e1 in zip(errors, errors[1:], strict=False)]
    assert errors[-1] > 1e-6  # far above round-off: a genuine time error
    assert min(orders) > 1.9 and max(orders) < 2.1, (errors, orders)


def test_first_output_is_w0_and_times_may_repeat_or_start_late():
    w0 = random_field(UNIT, 2, seed=6)
    w = ns.solve_vorticity(w0, UNIT, 1e-2, [0.0, 0.0, 0.1, 0.1])
    assert w.shape == (2, 4, 16, 16)
    assert torch.equal(w[:, 0], w0) and torch.equal(w[:, 1], w0)
    assert torch.equal(w[:, 2], w[:, 3])
    late = ns.solve_vorticity(w0, UNIT, 1e-2, [0.1])
    torch.testing.assert_close(late[:, 0], w[:, 2], rtol=0, atol=1e-13)
    pair = ns.solve_vorticity(w0, UNIT, 1e-2, [0.0, 0.1], max_step=0.01)
    single = ns.solve_vorticity(w0[0], UNIT, 1e-2, [0.0, 0.1], max_step=0.01)
    assert single.shape == (1, 2, 16, 16)
    torch.testing.assert_close(single[0], pair[0], rtol=0, atol=1e-13)


def test_stability_limit_is_where_the_model_amplification_reaches_one():
    """Apply the CN–Heun step to e^{ik·x} under w_t + U·∇w = νΔw, |U| = U along k."""
    grid = Grid2D.square(24, periodic=True)
    nu, speed = 2e-3, 0.7
    limit = ns.stability_limit(grid, nu, speed)
    m = torch.arange(-7, 8, dtype=F64)
    kappa = (2 * math.pi * torch.sqrt(m[:, None] ** 2 + m[None, :] ** 2)).flatten()

    def amplification(h: float) -> float:
        lam, beta = -nu * kappa**2, speed * kappa
        guess = ((1 + h * lam / 2) + 1j * h * beta) / (1 - h * lam / 2)
        return (((1 + h * lam / 2) + 0.5j * h * beta * (1 + guess)) / (1 - h * lam / 2)).abs().max()

    assert amplification(0.999 * limit) <= 1.0
    assert amplification(1.001 * limit) > 1.0
    assert ns.stability_limit(grid, nu, 0.0) == math.inf
    assert ns.default_step(grid, nu, speed) <= ns.SAFETY * limit


def largest_kept_wavenumber(grid: Grid2D) -> float:
    """``max |k|`` over the kept modes ``|m_x| < n_x/3, |m_y| < n_y/3``, ``k = 2π m/L``."""
    nx, ny = grid.shape
    return max(
        math.hypot(2 * math.pi * mx / grid.x.length, 2 * math.pi * my / grid.y.length)
        for mx in range(-nx, nx + 1)
        for my in range(-ny, ny + 1)
        if abs(mx) < nx / 3 and abs(my) < ny / 3
    )


@pytest.mark.parametrize(
    ("grid", "nu", "speed", "binding"),
    [
        (UNIT, 1e-2, 1.0, "cfl"),
        (BOX, 2e-2, 2.0, "cfl"),
        (UNIT, 1e-3, 2.0, "stability"),
        (UNIT, 2e-2, 0.01, "diffusion"),
        (BOX, torch.tensor([1e-3, 3e-2], dtype=F64), torch.tensor([0.5, 1.0], dtype=F64), "cfl"),
        (
            UNIT,
            torch.tensor([1e-3, 2e-2], dtype=F64),
            torch.tensor([0.01, 0.005], dtype=F64),
            "diffusion",
        ),
    ],
)
def test_default_step_is_the_documented_minimum(grid, nu, speed, binding):
    """``min(CFL/(U κ_max), DIFFUSION_NUMBER/(ν κ_max²), SAFETY · stability_limit)``, ``U`` and
    ``ν`` the batch's largest, ``κ_max`` the largest kept ``|k|`` (not ``|k|²``)."""
    k_max = largest_kept_wavenumber(grid)
    largest_speed = float(torch.as_tensor(speed, dtype=F64).max())
    largest_nu = float(torch.as_tensor(nu, dtype=F64).max())
    bounds = {
        "cfl": ns.CFL / (largest_speed * k_max),
        "diffusion": ns.DIFFUSION_NUMBER / (largest_nu * k_max**2),
        "stability": ns.SAFETY * ns.stability_limit(grid, nu, speed),
    }
    assert min(bounds, key=bounds.get) == binding
    assert ns.default_step(grid, nu, speed) == pytest.approx(bounds[binding], rel=1e-12)


def test_a_default_step_too_large_is_lowered_and_redone(monkeypatch):
    grid = Grid2D.square(16, periodic=True)
    w0 = 3.0 * random_field(grid, 2, seed=7)
    fine = ns.solve_vorticity(w0, grid, 1e-3, [0.0, 0.3], forcing=None, max_step=1e-3)
    with pytest.raises(SolverError, match="stability limit"):
        ns.solve_vorticity(w0, grid, 1e-3, [0.0, 0.3], forcing=None, max_step=0.3)
    monkeypatch.setattr(ns, "_default_step", lambda *args: 0.3)
    redone = ns.solve_vorticity(w0, grid, 1e-3, [0.0, 0.3], forcing=None)
    assert (redone - fine).abs().max() < 1e-3 * w0.abs().max()


def test_the_default_step_from_rest_is_set_by_the_speed_the_forcing_adds():
    """From rest (``U0 = 0``) the default step is :func:`default_step` at ``U = t_end U_f``, ``U_f
    = 0.05/π`` the largest speed of ``∇⊥(−Δ)⁻¹f`` for FNO's forcing (``|k|² = 8π²``, amplitude
    ``0.1√2``; the grid holds its peak), not the viscous bound alone that ``U = 0`` would give."""
    rest = torch.zeros(1, 16, 16, dtype=F64)
    t_end = 10.0
    step = ns.default_step(UNIT, 1e-3, t_end * 0.05 / math.pi)
    assert step < 0.5 * ns.default_step(UNIT, 1e-3, 0.0)  # the two would differ
    default = ns.solve_vorticity(rest, UNIT, 1e-3, [0.0, t_end])
    fixed = ns.solve_vorticity(rest, UNIT, 1e-3, [0.0, t_end], max_step=step)
    torch.testing.assert_close(default, fixed, rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- bad input


def good_call(**changes):
    arguments = {
        "w0": random_field(UNIT, 2, seed=8),
        "grid": UNIT,
        "nu": 1e-3,
        "times": [0.0, 0.1],
        "forcing": "fno",
        "max_step": None,
    }
    arguments.update(changes)
    return ns.solve_vorticity(**arguments)


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"nu": 0.0}, ValueError, "nu"),
        ({"nu": -1e-3}, ValueError, "nu"),
        ({"nu": torch.tensor([1e-3, -1e-3])}, ValueError, "nu"),
        ({"nu": torch.tensor([1e-3, 1e-3, 1e-3])}, ValueError, "nu"),
        ({"grid": Grid2D.square(16)}, ValueError, "periodic"),
        ({"grid": Grid2D.square(3, periodic=True)}, ValueError, "at least 4"),
        ({"grid": "unit torus"}, TypeError, "Grid2D"),
        ({"w0": torch.zeros(2, 16, 17, dtype=F64)}, ValueError, "w0 must have shape"),
        ({"w0": torch.zeros(1, 2, 16, 16, dtype=F64)}, ValueError, "w0 must have shape"),
        ({"w0": torch.zeros(0, 16, 16, dtype=F64)}, ValueError, "w0 must hold at least one"),
        ({"w0": torch.full((16, 16), float("inf"), dtype=F64)}, ValueError, "w0 contains NaN"),
        ({"w0": np.zeros((16, 16))}, TypeError, "w0"),
        ({"times": [0.2, 0.1]}, ValueError, "non-decreasing"),
        ({"times": [-0.1]}, ValueError, "times"),
        ({"max_step": 0.0}, ValueError, "max_step"),
        ({"forcing": "kolmogorov"}, ValueError, "forcing"),
        ({"forcing": torch.zeros(16, 8, dtype=F64)}, ValueError, "forcing"),
        ({"forcing": torch.zeros(3, 16, 16, dtype=F64)}, ValueError, "forcing"),
        ({"forcing": torch.ones(16, 16, dtype=F64)}, ValueError, "zero mean"),
        ({"forcing": 0.1}, TypeError, "forcing"),
    ],
)
def test_bad_input_is_named(changes, error, match):
    with pytest.raises(error, match=match):
        good_call(**changes)


def test_a_step_beyond_the_stability_limit_names_the_limit():
    w0 = 5.0 * random_field(UNIT, 2, seed=9)
    vx, vy = ns.velocity(w0, UNIT)
    limit = ns.stability_limit(UNIT, 1e-3, (vx**2 + vy**2).sqrt().amax(dim=(-2, -1)))
    with pytest.raises(SolverError, match=f"stability limit {limit:.4g}"):
        good_call(w0=w0, max_step=1.01 * limit)
    good_call(w0=w0, forcing=None, max_step=0.9 * limit, times=[0.0, 1.8 * limit])


def test_a_flow_that_outgrows_the_step_raises():
    """Strong forcing speeds the flow up until the fixed step is beyond the limit."""
    w0 = 0.01 * random_field(UNIT, 2, seed=10)
    forcing = 200.0 * random_field(UNIT, 1, seed=11)[0]
    vx, vy = ns.velocity(w0, UNIT)
    limit = ns.stability_limit(UNIT, 1e-3, (vx**2 + vy**2).sqrt().amax(dim=(-2, -1)))
    with pytest.raises(SolverError, match="stability limit"):
        good_call(w0=w0, forcing=forcing, max_step=0.5 * limit, times=[0.0, 1.0])


def test_a_flow_that_outgrows_the_step_by_less_than_twice_raises():
    """One block of steps just inside the limit at t = 0: the forcing speeds the flow up ~28%,
    enough to bring the limit at the speed met below the step, though not below half of it."""
    w0 = random_field(UNIT, 1, seed=10)
    forcing = 2.0 * random_field(UNIT, 1, seed=11)[0]
    vx, vy = ns.velocity(w0, UNIT)
    step = 0.99 * ns.stability_limit(UNIT, 1e-3, (vx**2 + vy**2).sqrt().amax(dim=(-2, -1)))
    with pytest.raises(SolverError, match="stability limit") as raised:
        good_call(w0=w0, forcing=forcing, max_step=step, times=[0.0, ns.CHECK_EVERY * step])
    found = re.search(r"max\|u\| = (\S+), where the stability limit is (\S+) <", str(raised.value))
    speed, limit = float(found[1]), float(found[2])
    assert limit == pytest.approx(ns.stability_limit(UNIT, 1e-3, speed), rel=1e-3)
    assert limit < step < 2 * limit


def test_a_blow_up_raises():
    w0 = 0.01 * random_field(UNIT, 2, seed=12)
    forcing = 1e150 * random_field(UNIT, 1, seed=13)[0]
    with pytest.raises(SolverError, match="NaN or inf"):
        good_call(w0=w0, forcing=forcing, max_step=1e-3, times=[0.0, 0.01])


# ----------------------------------------------------------------------------- recipe

SMALL = {"nx": 16, "t_end": 0.5, "nt": 3}


def test_recipe_samples_depend_only_on_their_seed():
    (problem,) = ns.PROBLEMS
    settings = problem.settings(**SMALL)
    pair = problem.generate([5, 7], settings)
    again = problem.generate([5, 7], settings)
    alone = problem.generate([7], settings)
    assert torch.equal(pair.u, again.u)
    torch.testing.assert_close(alone.u[0], pair.u[1], rtol=0, atol=1e-13)
    assert not torch.allclose(pair.u[0], pair.u[1])
    assert pair.u.shape == (2, 3, 16, 16) and pair.u.dtype == F64
    grid = problem.grid(settings)
    vx, vy = ns.velocity(pair.u, grid)
    assert torch.equal(pair.fields["vx"], vx) and torch.equal(pair.fields["vy"], vy)
    torch.testing.assert_close(pair.params["nu"], torch.full((2,), 1e-3, dtype=F64))
    assert pair.u[:, 0].mean(dim=(-2, -1)).abs().max() < 1e-14  # FNO's zero-mean GRF
    coordinates = problem.coordinates(settings)
    assert coordinates["t"].tolist() == [0.0, 0.25, 0.5]
    np.testing.assert_allclose(coordinates["x"], np.arange(16) / 16)
    np.testing.assert_allclose(coordinates["y"], np.arange(16) / 16)
    attributes = problem.attributes(settings)
    assert attributes["boundary"] == "periodic" and attributes["nu"] == 1e-3
    assert {"pde", "solver", "forcing"} <= set(attributes)
    assert 0 < attributes["max_step"] <= ns.SAFETY * ns.stability_limit(grid, 1e-3, 0.1)


def test_recipe_default_is_cheap_and_its_step_covers_the_grf_speeds():
    (problem,) = ns.PROBLEMS
    settings = problem.settings()
    assert (settings["nx"], settings["nu"], settings["t_end"], settings["nt"]) == (64, 1e-3, 10, 11)
    std = ns.grf_velocity_std(64, 2.5, 7.0, 7.0**1.5)
    w0 = gaussian_random_field_2d(64, batch=8, zero_mean=True, generator=torch.Generator())
    vx, vy = ns.velocity(w0, problem.grid(settings))
    torch.testing.assert_close(torch.cat([vx, vy]).std().item(), std, rtol=0.15, atol=0)
    assert (vx**2 + vy**2).sqrt().max() < ns.TAIL * std


def test_recipe_through_generate_dataset(tmp_path):
    path = generate_dataset(
        "navier-stokes", tmp_path / "ns.h5", n=3, seed=2, chunk=2, progress=False, **SMALL
    )
    with h5py.File(path, "r") as f:
        assert f["u"].shape == (3, 3, 16, 16)
        assert f["fields/vx"].shape == f["fields/vy"].shape == (3, 3, 16, 16)
        assert f["params/nu"].shape == (3,)
        assert f["y"].shape == (16,)
        assert f.attrs["boundary"] == "periodic"


@pytest.mark.parametrize("solve", ["vorticity", "tracer"])
def test_the_default_step_resolves_the_viscous_decay_of_a_slow_flow(solve):
    """A slow, viscous Taylor–Green vortex: the CFL and stability bounds alone allow a step at
    which Crank–Nicolson's factor per step is near −1 (the vortex barely decays and flips sign
    each step); the default step must follow the exact decay."""
    grid = Grid2D.square(16, periodic=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    exact = ns.taylor_green(grid, t, 0.02, k=4, amplitude=0.01)
    if solve == "vorticity":
        w = ns.solve_vorticity(exact[:, 0], grid, 0.02, t, forcing=None)
    else:
        from pdes.tracer import solve_ns_tracer

        c0 = torch.ones_like(exact[:, 0])
        w, _ = solve_ns_tracer(exact[:, 0], c0, grid, 0.02, 0.0, t, forcing=None)
    scale = exact[:, 0].abs().max()
    assert (w - exact).abs().max() <= 1e-3 * scale


# ----------------------------------------------------------------------------- from a mutation pass


@pytest.mark.parametrize("x_periodic", [True, False])
def test_a_grid_periodic_along_one_axis_only_is_refused(x_periodic):
    grid = Grid2D(
        Grid1D(16, 0.0, 1.0, periodic=x_periodic), Grid1D(16, 0.0, 1.0, periodic=not x_periodic)
    )
    with pytest.raises(ValueError, match="periodic along x and y"):
        ns.solve_vorticity(torch.zeros(16, 16, dtype=F64), grid, 1e-3, [0.0, 0.1])


@pytest.mark.parametrize(
    ("nu", "speed", "match"),
    [
        (0.0, 1.0, "nu"),
        (torch.tensor([1e-3, 0.0], dtype=F64), 1.0, "nu"),
        (float("nan"), 1.0, "nu"),
        (1e-3, -1.0, "speed"),
        (1e-3, torch.tensor([1.0, -0.5], dtype=F64), "speed"),
        (1e-3, float("inf"), "speed"),
    ],
)
def test_stability_limit_and_default_step_refuse_bad_nu_and_speed(nu, speed, match):
    for function in (ns.stability_limit, ns.default_step):
        with pytest.raises(ValueError, match=match):
            function(UNIT, nu, speed)


@pytest.mark.parametrize(
    ("grid", "nu", "speed"),
    [(UNIT, 2.0, 0.01), (UNIT, 1e-3, 30.0), (BOX, 0.05, 3.0), (ODD, 1e-4, 0.2)],
)
def test_stability_limit_is_the_smallest_positive_root_of_the_documented_cubic(grid, nu, speed):
    """``4a(1 + ah)² − b²(a² + b²/4) h³ = 0`` solved by ``numpy.roots`` for every kept ``|k|``."""
    nx, ny = grid.shape
    roots = []
    for mx in range(-nx, nx + 1):
        for my in range(0, ny + 1):
            if (mx or my) and abs(mx) < nx / 3 and my < ny / 3:
                k2 = (2 * math.pi * mx / grid.x.length) ** 2 + (
                    2 * math.pi * my / grid.y.length
                ) ** 2
                a, b2 = nu * k2 / 2, speed**2 * k2
                cubic = [-b2 * (a * a + b2 / 4), 4 * a**3, 8 * a**2, 4 * a]
                real = [
                    r.real for r in np.roots(cubic) if abs(r.imag) < 1e-9 * abs(r) and r.real > 0
                ]
                roots.append(min(real))
    assert ns.stability_limit(grid, nu, speed) == pytest.approx(min(roots), rel=1e-10)


def test_a_forcing_mean_is_refused_unless_it_is_round_off_which_is_then_dropped():
    """A mean above 1e-12 of the forcing's peak is refused; one below is removed, so the mean
    vorticity stays fixed to round-off (with it, the mean would grow by ``t · mean``)."""
    forcing = random_field(UNIT, 1, seed=4)[0]
    forcing = forcing - forcing.mean()
    peak = forcing.abs().max().item()
    w0 = random_field(UNIT, 1, seed=6)
    with pytest.raises(ValueError, match="zero mean"):
        ns.solve_vorticity(w0, UNIT, 1e-2, [0.0, 0.1], forcing=forcing + 1e-9 * peak)
    t_end = 2.0
    w = ns.solve_vorticity(w0, UNIT, 1e-2, [0.0, t_end], forcing=forcing + 0.5e-12 * peak)
    drift = (w[:, -1].mean() - w0.mean()).abs().item()
    assert drift < 0.05 * t_end * 0.5e-12 * peak


def test_viscosity_too_large_for_the_time_span_is_refused():
    """``ν t / L² > 1e12`` is refused: the field is steady to round-off long before."""
    w0 = random_field(UNIT, 1, seed=8)
    with pytest.raises(ValueError, match="nu up to"):
        ns.solve_vorticity(w0, UNIT, 1e7, [0.0, 1e6], forcing=None, max_step=1e6)


@pytest.mark.parametrize("nu", [0.0, -1e-2, float("nan"), torch.tensor([1e-2, -1e-2], dtype=F64)])
def test_taylor_green_refuses_a_viscosity_that_is_not_positive(nu):
    with pytest.raises(ValueError, match="nu"):
        ns.taylor_green(UNIT, [0.0, 1.0], nu)


def test_recipe_speed_adds_t_end_times_the_speed_of_the_forcing_s_stream_function():
    """``U = TAIL σ_u + t_end U_f``, ``U_f = 0.05/π`` for FNO's forcing on the unit torus (its
    ``∇⊥(−Δ)⁻¹f`` has amplitude ``0.1√2/√(8π²)``, which the 16-point grid holds at a node)."""
    (problem,) = ns.PROBLEMS
    grid = Grid2D.square(16, periodic=True)
    for t_end in (1.0, 10.0):
        settings = problem.settings(nx=16, t_end=t_end)
        calm = ns.recipe_speed(grid, {**settings, "forcing": "none"})
        assert calm == pytest.approx(ns.TAIL * ns.grf_velocity_std(16, 2.5, 7.0, 7.0**1.5))
        forced = ns.recipe_speed(grid, settings)
        assert forced - calm == pytest.approx(t_end * 0.05 / math.pi, rel=1e-12)
