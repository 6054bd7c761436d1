"""Grids: coordinates, spacing, quadrature exactness, boundary indices, bad input."""

import json
import math

import numpy as np
import pytest
import scipy.special
import torch

from pdes import Grid1D, Grid2D


@pytest.mark.parametrize(
    "kind, periodic, n, dx, first, last",
    [
        ("node", False, 11, 0.1, 0.0, 1.0),
        ("node", True, 10, 0.1, 0.0, 0.9),
        ("cell", False, 10, 0.1, 0.05, 0.95),
    ],
)
def test_coordinates_and_spacing(kind, periodic, n, dx, first, last):
    grid = Grid1D(n, 0.0, 1.0, kind, periodic)
    x = grid.coordinates()
    assert grid.dx == pytest.approx(dx)
    assert x.shape == (n,) and x.dtype == torch.float64
    assert x[0].item() == pytest.approx(first) and x[-1].item() == pytest.approx(last)
    assert torch.allclose(x.diff(), torch.full((n - 1,), dx, dtype=torch.float64))


def test_trapezoid_weights_integrate_linear_functions_exactly():
    grid = Grid1D(7, -1.0, 2.0)
    x = grid.coordinates()
    assert grid.integrate(3 * x + 1).item() == pytest.approx(1.5 * (4 - 1) + 3, abs=1e-14)
    assert grid.weights().sum().item() == pytest.approx(3.0, abs=1e-14)


def test_trapezoid_is_second_order_and_periodic_rule_is_spectral():
    errors = []
    for n in (17, 33, 65):
        grid = Grid1D(n, 0.0, 1.0)
        errors.append(abs(grid.integrate(torch.exp(grid.coordinates())).item() - (math.e - 1)))
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(order - 2) < 0.05 for order in orders)
    periodic = Grid1D(16, 0.0, 2 * math.pi, periodic=True)
    value = periodic.integrate(torch.exp(torch.sin(periodic.coordinates()))).item()
    assert value == pytest.approx(2 * math.pi * scipy.special.i0(1.0), rel=1e-13)


def test_boundary_indices():
    assert Grid1D(5).boundary_indices == (0, 4)
    assert Grid1D(5, kind="cell").boundary_indices == (0, 4)
    assert Grid1D(5, periodic=True).boundary_indices == ()


def test_refined_keeps_nodes():
    grid = Grid1D(5, 0.0, 2.0)
    fine = grid.refined(2)
    assert fine.n == 9 and fine.dx == pytest.approx(grid.dx / 2)
    assert torch.allclose(fine.coordinates()[::2], grid.coordinates())
    assert Grid1D(8, kind="cell").refined(2).n == 16


def test_grid2d_weights_and_mask():
    grid = Grid2D(Grid1D(5, 0, 1), Grid1D(9, 0, 2))
    X, Y = grid.coordinates()
    assert X.shape == (5, 9) and Y[0, -1].item() == pytest.approx(2.0)
    assert grid.integrate(X * Y).item() == pytest.approx(0.5 * 2.0, abs=1e-14)
    mask = grid.boundary_mask()
    assert mask.sum().item() == 2 * 5 + 2 * 9 - 4
    assert not mask[1:-1, 1:-1].any()
    torus = Grid2D.square(8, periodic=True)
    assert not torus.boundary_mask().any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 2}, "n must be an integer >= 3"),
        ({"n": 4.0}, "n must be an integer"),
        ({"n": 10, "lower": 1.0, "upper": 1.0}, "upper must exceed lower"),
        ({"n": 10, "kind": "edge"}, "kind must be one of"),
    ],
)
def test_bad_grids(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Grid1D(**kwargs)


def test_integrate_checks_size():
    with pytest.raises(ValueError, match="must have 5 entries"):
        Grid1D(5).integrate(torch.ones(4))


@pytest.mark.parametrize("grid", [Grid1D(5), Grid2D(Grid1D(5), Grid1D(4))], ids=["1d", "2d"])
def test_integrate_refuses_what_its_weights_cannot_take(grid):
    shape = (5,) if isinstance(grid, Grid1D) else (5, 4)
    for dtype in (torch.int64, torch.bool):  # weights of dtype int would be rounded to zero
        with pytest.raises(
            TypeError, match=f"u must hold floating-point values, got dtype {dtype}"
        ):
            grid.integrate(torch.ones(shape, dtype=dtype))
    with pytest.raises(TypeError, match="u must be a torch.Tensor, got ndarray"):
        grid.integrate(np.ones(shape))
    with pytest.raises(ValueError, match="u must have at least"):
        grid.integrate(torch.tensor(1.0))
    assert float(grid.integrate(torch.ones(shape, dtype=torch.float64))) == pytest.approx(1.0)
    assert grid.integrate(torch.ones(shape, dtype=torch.complex128)).imag == 0


def test_numpy_integer_sizes_are_accepted_as_ints():
    grid = Grid1D(np.int64(9))
    assert grid.n == 9
    assert torch.equal(grid.coordinates(), Grid1D(9).coordinates())


def test_numpy_integer_size_is_stored_as_a_python_int():
    grid = Grid1D(np.int64(9))
    assert type(grid.n) is int
    assert json.loads(json.dumps(grid.describe()))["n"] == 9


def test_two_point_periodic_node_grid_is_allowed():
    grid = Grid1D(2, 0.0, 1.0, periodic=True)
    assert grid.dx == 0.5
    assert grid.coordinates().tolist() == [0.0, 0.5]
    assert grid.weights().tolist() == [0.5, 0.5]


def test_cell_weights_are_midpoint_and_integrate_a_quadratic_with_known_error():
    grid = Grid1D(4, 0.0, 2.0, kind="cell")
    assert grid.weights().tolist() == [0.5, 0.5, 0.5, 0.5]
    # midpoint rule: integral of x**2 over [0, L] with spacing h is L**3/3 - L*h**2/12
    x = grid.coordinates()
    assert grid.integrate(x**2).item() == pytest.approx(8 / 3 - 2 * 0.25 / 12, abs=1e-14)
    # trapezoid rule on nodes: L**3/3 + L*h**2/6
    nodes = Grid1D(5, 0.0, 2.0)
    assert nodes.weights().tolist() == [0.25, 0.5, 0.5, 0.5, 0.25]
    value = nodes.integrate(nodes.coordinates() ** 2).item()
    assert value == pytest.approx(8 / 3 + 2 * 0.25 / 6, abs=1e-14)


def test_periodic_rule_gives_exact_mean_and_variance_of_a_sine():
    grid = Grid1D(8, 0.0, 2 * math.pi, periodic=True)
    u = 3.0 + 2.0 * torch.sin(grid.coordinates())
    mean = grid.integrate(u) / grid.length
    assert mean.item() == pytest.approx(3.0, abs=1e-14)
    assert (grid.integrate((u - mean) ** 2) / grid.length).item() == pytest.approx(2.0, abs=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    grid = Grid1D(5, kind="cell")
    plane = Grid2D(Grid1D(5), Grid1D(4, kind="cell"))
    assert grid.coordinates(dtype).dtype == dtype and grid.weights(dtype).dtype == dtype
    assert plane.coordinates(dtype)[0].dtype == dtype and plane.weights(dtype).dtype == dtype
    assert grid.integrate(torch.ones(5, dtype=dtype)).dtype == dtype
    assert plane.integrate(torch.ones(5, 4, dtype=dtype)).dtype == dtype


def test_refined_keeps_periodicity_and_kind():
    fine = Grid1D(6, 0.0, 3.0, kind="node", periodic=True).refined(3)
    assert (fine.n, fine.kind, fine.periodic) == (18, "node", True)
    assert fine.dx == pytest.approx(3.0 / 18)
    cells = Grid1D(4, -1.0, 1.0, kind="cell").refined(2)
    assert (cells.n, cells.kind, cells.periodic) == (8, "cell", False)
    assert cells.coordinates()[0].item() == pytest.approx(-1.0 + 0.125)


def test_describe_and_spacing():
    grid = Grid2D(Grid1D(5, 0.0, 2.0, "cell", True), Grid1D(9, -1.0, 1.0))
    assert grid.describe() == {
        "x": {"n": 5, "lower": 0.0, "upper": 2.0, "kind": "cell", "periodic": True},
        "y": {"n": 9, "lower": -1.0, "upper": 1.0, "kind": "node", "periodic": False},
    }
    assert grid.spacing == pytest.approx((0.4, 0.25))
    assert grid.shape == (5, 9)


def test_grid2d_refuses_a_y_axis_that_is_not_a_grid():
    with pytest.raises(TypeError, match="y must be a pdes.Grid1D, got int"):
        Grid2D(Grid1D(5), 5)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Grid1D(1, periodic=True), ValueError, "n must be an integer >= 2, got 1"),
        (lambda: Grid1D(5, periodic=1), TypeError, "periodic must be True or False, got 1"),
        (lambda: Grid1D(5, math.nan, 1.0), ValueError, "lower must be a finite number"),
        (lambda: Grid1D(5, 0.0, math.inf), ValueError, "upper must be a finite number"),
        (lambda: Grid1D(5).refined(0), ValueError, "factor must be an integer >= 1, got 0"),
        (
            lambda: Grid2D(Grid1D(5), Grid1D(4)).integrate(torch.ones(4, 5)),
            ValueError,
            r"u must end in shape \(5, 4\), got \(4, 5\)",
        ),
    ],
)
def test_more_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_grid2d_integrate_names_the_missing_axis():
    with pytest.raises(ValueError, match=r"u must have at least 2 axes, got shape \(5,\)"):
        Grid2D(Grid1D(5), Grid1D(4)).integrate(torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("dtype", ["float32", torch.int64, torch.bool, torch.complex128, None])
@pytest.mark.parametrize("method", ["weights", "coordinates"])
@pytest.mark.parametrize("grid", [Grid1D(5), Grid2D(Grid1D(5), Grid1D(4))], ids=["1d", "2d"])
def test_weights_and_coordinates_refuse_a_dtype_that_is_not_floating(grid, method, dtype):
    # a string or None gave torch's own TypeError; int64 gave weights rounded to 0 (dx = 0.25)
    with pytest.raises(TypeError, match=r"^dtype must be a floating-point torch\.dtype, got "):
        getattr(grid, method)(dtype=dtype)
