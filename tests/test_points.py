"""Point sampling of (t, x) grids: grid order, context/target draws, PointSets and PointRows."""

import pytest
import torch

from physml.data import PDEData, PointRows, PointSets
from physml.data.points import check_point_counts, draw_point_indices, grid_points

T_AXIS = torch.tensor([0.0, 0.5, 1.0])
X_AXIS = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
N = 3


def small_data(coordinate="x"):
    """u[n, i, j] = 100 n + 10 i + j: every value names its solution and grid point."""
    n, i, j = torch.meshgrid(torch.arange(N), torch.arange(3), torch.arange(5), indexing="ij")
    u = (100 * n + 10 * i + j).double()
    params = {"b": torch.tensor([7.0, 8.0, 9.0]), "a": torch.tensor([1.0, 2.0, 3.0])}
    return PDEData(u=u, t=T_AXIS.double(), coords={coordinate: X_AXIS.double()}, params=params)


def grid_place(point):
    """``(i, j)`` of a point ``(t, x)`` on the small grid, found by looking it up."""
    (i,) = (T_AXIS == point[0]).nonzero()[0]
    (j,) = (X_AXIS == point[1]).nonzero()[0]
    return int(i), int(j)


def test_grid_points_are_t_major_and_keep_a_floating_dtype():
    points = grid_points(torch.tensor([0.0, 1.0], dtype=torch.float32), [10.0, 20.0, 30.0])
    expected = [[0, 10], [0, 20], [0, 30], [1, 10], [1, 20], [1, 30]]
    assert points.dtype == torch.float32
    assert torch.equal(points, torch.tensor(expected, dtype=torch.float32))
    assert grid_points([0.0, 1.0], [2.0]).dtype == torch.float64


def test_point_counts_accept_the_largest_and_refuse_one_more():
    assert check_point_counts(3, 5, 15, 3, 15) == 5
    assert check_point_counts(3, 5, 4, 2, None) == 2
    with pytest.raises(ValueError, match="n_context=12 as 2 times × 6 x needs a grid"):
        check_point_counts(3, 5, 12, 2, None)
    with pytest.raises(ValueError, match="n_context=8 as 4 times × 2 x needs a grid"):
        check_point_counts(3, 5, 8, 4, None)
    with pytest.raises(ValueError, match="n_target must be <= 15 grid points, got 16"):
        check_point_counts(3, 5, 4, 2, 16)
    with pytest.raises(ValueError, match="n_context must be a multiple of context_times=2"):
        check_point_counts(3, 5, 5, 2, None)


def test_context_is_random_times_by_random_places_and_targets_distinct_points():
    generator = torch.Generator().manual_seed(3)
    context, target = draw_point_indices(generator, 50, 3, 5, 2, 4, 7)
    assert context.shape == (50, 8) and target.shape == (50, 7)
    for row in context:
        times, places = row // 5, row % 5
        chosen_times, chosen_places = set(times.tolist()), set(places.tolist())
        assert len(chosen_times) == 2 and len(chosen_places) == 4
        assert chosen_times <= {0, 1, 2} and chosen_places <= {0, 1, 2, 3, 4}
        grid = {(i, j) for i in chosen_times for j in chosen_places}
        assert set(zip(times.tolist(), places.tolist(), strict=True)) == grid
    assert all(len(set(row.tolist())) == 7 for row in target) and target.max() < 15
    seen_places = set((context % 5).reshape(-1).tolist())
    assert seen_places == {0, 1, 2, 3, 4}, "every place can be drawn"
    _, whole = draw_point_indices(generator, 2, 3, 5, 1, 1, None)
    assert torch.equal(whole, torch.arange(15).expand(2, -1))


def test_point_sets_serve_the_values_and_parameters_of_their_solution():
    sets = PointSets(small_data(), n_context=4, context_times=2, n_target=5, views=2, seed=1)
    assert len(sets) == 2 * N
    for item in range(2 * N):
        context_x, context_y, target_x, target_y, params, seed = sets[item]
        n = item % N
        assert context_x.dtype == target_x.dtype == context_y.dtype == torch.float32
        for points, values in ((context_x, context_y), (target_x, target_y)):
            for point, value in zip(points, values, strict=True):
                i, j = grid_place(point)
                assert value == 100 * n + 10 * i + j
        assert torch.equal(params, torch.tensor([1.0 + n, 7.0 + n])), "a before b"
        assert seed.dtype == torch.int64
    first, again = sets[0], sets[N]
    assert not torch.equal(first[0], again[0]), "each view draws its own points"
    assert first[5] != again[5]


def test_an_items_latent_seed_is_not_the_seed_of_its_points():
    sets = PointSets(small_data(), n_context=4, context_times=2, n_target=5, seed=0)
    for item in range(N):
        context_x, *_, seed = sets[item]
        replay = torch.Generator().manual_seed(int(seed))
        context, _ = draw_point_indices(replay, 1, 3, 5, 2, 2, 5)
        assert not torch.equal(grid_points(T_AXIS, X_AXIS)[context[0]], context_x)


def test_point_sets_fingerprint_names_every_setting():
    a = PointSets(small_data(), n_context=4, context_times=2, n_target=5, views=1)
    b = PointSets(small_data(), n_context=4, context_times=2, n_target=5, views=2)
    settings = {"n_context": 4, "context_times": 2, "n_target": 5, "seed": 0}
    settings["seed_scheme"] = "seedsequence-mt19937"
    assert a.attributes["point_sets"] == {**settings, "views": 1}
    assert b.attributes["point_sets"] == {**settings, "views": 2}


def test_point_sets_and_rows_need_an_x_coordinate():
    for build in (PointSets, PointRows):
        with pytest.raises(ValueError, match="with an x coordinate"):
            build(small_data(coordinate="y"))


def test_point_rows_are_parameters_then_t_and_x():
    rows = PointRows(small_data())
    assert rows.features == 4 and len(rows) == N * 15
    inputs, targets = rows.all_rows()
    assert inputs.shape == (N * 15, 4) and targets.shape == (N * 15,)
    for k in range(N * 15):
        n, rest = divmod(k, 15)
        i, j = divmod(rest, 5)
        expected = torch.tensor([1.0 + n, 7.0 + n, T_AXIS[i], X_AXIS[j]])
        row, value = rows[k]
        assert torch.equal(row, expected) and value == 100 * n + 10 * i + j
        assert torch.equal(inputs[k], expected) and targets[k] == value


def test_point_sets_made_in_the_old_seed_scheme_are_described_as_before_it_was_named():
    """Checkpoints of runs on point sets drawn before seed schemes were named resume in it."""
    from pdes.problems import seed_scheme

    with seed_scheme("torch-manual-seed"):
        old = PointSets(small_data(), n_context=4, context_times=2, n_target=5)
    expected = {"n_context": 4, "context_times": 2, "n_target": 5, "seed": 0, "views": 1}
    assert old.attributes["point_sets"] == expected
