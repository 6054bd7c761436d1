"""The small-grid form of the spectral solvers: DFT matrices give the FFT form's numbers to
round-off at every grid size they serve, the automatic choice switches at the crossover, small
solves run on one thread."""

from __future__ import annotations

import pytest
import torch

from pdes.burgers import MATRIX_MAX_POINTS, periodic_transform, solve_burgers
from pdes.errors import SolverError
from pdes.grid import Grid1D
from pdes.integrators import DenseETDRK4, DiagonalOperator, etdrk4
from pdes.random_fields import gaussian_random_field_1d

F64 = torch.float64
ROUND_OFF = 1e-13


def random_problem(n: int, seed: int, batch: int = 3):
    """A GRF initial condition, a viscosity and output times, all drawn."""
    generator = torch.Generator().manual_seed(seed)
    u0 = gaussian_random_field_1d(
        n, alpha=2.0, tau=3.0, sigma=3.0, generator=generator, batch=batch
    )
    nu = 0.01 + 0.1 * torch.rand((), generator=generator, dtype=F64).item()
    times = torch.cat([torch.zeros(1, dtype=F64), torch.rand(2, generator=generator).sort()[0]])
    return u0, nu, 0.3 * times


@pytest.mark.parametrize("n", range(2, MATRIX_MAX_POINTS + 1))
def test_matrix_form_equals_fft_form_on_random_inputs(n):
    u0, nu, times = random_problem(n, seed=n)
    grid = Grid1D(n, 0.0, 1.0 + n / 100, periodic=True)
    matrix = solve_burgers(u0, grid, nu, times, transform="matrix")
    fft = solve_burgers(u0, grid, nu, times, transform="fft")
    scale = fft.abs().max()
    assert (matrix - fft).abs().max() <= ROUND_OFF * scale, n
    assert torch.equal(matrix[:, 0], u0)


def test_matrix_form_equals_fft_form_with_small_steps_and_many_outputs():
    u0, nu, _ = random_problem(24, seed=1, batch=5)
    grid = Grid1D(24, periodic=True)
    times = torch.linspace(0.0, 0.5, 11, dtype=F64)
    matrix = solve_burgers(u0, grid, nu, times, max_step=1e-3, transform="matrix")
    fft = solve_burgers(u0, grid, nu, times, max_step=1e-3, transform="fft")
    assert (matrix - fft).abs().max() <= ROUND_OFF * fft.abs().max()
    assert (fft[:, -1] - u0).abs().max() > 0.1 * u0.abs().max()  # the solution moved


@pytest.mark.parametrize("n", [MATRIX_MAX_POINTS - 1, MATRIX_MAX_POINTS, MATRIX_MAX_POINTS + 1])
def test_automatic_choice_switches_at_the_crossover(n):
    u0, nu, times = random_problem(n, seed=3)
    grid = Grid1D(n, periodic=True)
    expected = "matrix" if n <= MATRIX_MAX_POINTS else "fft"
    assert periodic_transform(n) == expected
    auto = solve_burgers(u0, grid, nu, times)
    assert torch.equal(auto, solve_burgers(u0, grid, nu, times, transform=expected))


def test_per_sample_viscosities_use_ffts():
    u0, _, times = random_problem(16, seed=4, batch=2)
    grid = Grid1D(16, periodic=True)
    nu = torch.tensor([0.02, 0.1], dtype=F64)
    auto = solve_burgers(u0, grid, nu, times)
    assert torch.equal(auto, solve_burgers(u0, grid, nu, times, transform="fft"))
    with pytest.raises(ValueError, match="transform='matrix' needs one viscosity"):
        solve_burgers(u0, grid, nu, times, transform="matrix")


def test_bad_transform():
    u0, nu, times = random_problem(8, seed=5)
    with pytest.raises(ValueError, match="transform must be one of"):
        solve_burgers(u0, Grid1D(8, periodic=True), nu, times, transform="dft")


def test_matrix_form_reports_an_unstable_step():
    grid = Grid1D(16, periodic=True)
    u0 = 2.0 + torch.sin(2 * torch.pi * grid.coordinates())[None]
    with pytest.raises(SolverError, match="limit"), pytest.warns(UserWarning, match="limit"):
        solve_burgers(u0, grid, 1e-4, [0.0, 5.0], max_step=1.0, transform="matrix")


def test_output_is_an_ordinary_tensor():
    u0, nu, times = random_problem(12, seed=6)
    u = solve_burgers(u0, Grid1D(12, periodic=True), nu, times)
    assert not u.is_inference()
    u[:, 0] = 0.0  # writable outside inference mode


def test_dense_etdrk4_equals_etdrk4_with_the_same_nonlinearity():
    """A pointwise sin between two random maps, integrated by both forms of the scheme."""
    generator = torch.Generator().manual_seed(7)
    p, n = 6, 9
    lam = -torch.rand(p, generator=generator, dtype=F64) * torch.logspace(-2, 2, p, dtype=F64)
    P = torch.randn(p, n, generator=generator, dtype=F64)
    R = torch.randn(n, p, generator=generator, dtype=F64) / n
    r0 = torch.randn(4, p, generator=generator, dtype=F64)
    times = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    dense = DenseETDRK4(lam, P, R, torch.sin).run(r0, times, max_step=0.05)
    identity = DiagonalOperator(lam, forward=lambda u: u, inverse=lambda c: c)
    reference = etdrk4(identity, r0, times, 0.05, nonlinear=lambda c, t: torch.sin(c @ P) @ R)
    assert dense.shape == (4, 3, p)
    assert (dense - reference).abs().max() <= ROUND_OFF * reference.abs().max()


def test_dense_etdrk4_checks_shapes():
    lam = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="to_physical"):
        DenseETDRK4(lam, torch.zeros(4, 5, dtype=F64), torch.zeros(5, 4, dtype=F64), torch.sin)
    with pytest.raises(ValueError, match="to_rate"):
        DenseETDRK4(lam, torch.zeros(3, 5, dtype=F64), torch.zeros(3, 5, dtype=F64), torch.sin)


def test_a_small_solve_restores_the_callers_thread_setting():
    """The boundary itself and threads_for are tested in test_threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        u0, nu, times = random_problem(8, seed=8)
        solve_burgers(u0, Grid1D(8, periodic=True), nu, times)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matrix_form_on_cuda_equals_the_cpu():
    u0, nu, times = random_problem(32, seed=9)
    grid = Grid1D(32, periodic=True)
    cpu = solve_burgers(u0, grid, nu, times, transform="matrix")
    gpu = solve_burgers(u0.cuda(), grid, nu, times, transform="matrix")
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() <= ROUND_OFF * cpu.abs().max()
