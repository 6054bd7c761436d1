"""What the task figures draw: the data of every line, band and image, the titles and scales, and
that each figure is written as a whole PNG and closed (the BOON, PreDiff, conservation-forecast and
model-update plots; inputs are small cases whose drawn values are known by hand)."""

import math
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from pdes import Dirichlet, Grid1D, Neumann, Periodic
from physml.constraints import BoundaryCondition
from physml.tasks import boon, figures
from physml.tasks.boon import plots as boon_plots
from physml.tasks.conservation_forecast import plots as conservation_plots
from physml.tasks.prediff import plots as prediff_plots
from physml.tasks.updates import plots as updates_plots

matplotlib.use("Agg")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Record the figure each plot module hands to ``save_figure`` (the real one still writes)."""
    figures = []

    def record(module):
        real = module.save_figure

        def save(fig, path, **options):
            figures.append(fig)
            real(fig, path, **options)

        monkeypatch.setattr(module, "save_figure", save)

    for module in (boon_plots, prediff_plots, conservation_plots, updates_plots):
        record(module)
    plt.close("all")
    return figures


def written_and_closed(figures, path):
    """One figure went through ``save_figure``: a whole PNG alone in its folder, the figure shut."""
    assert len(figures) == 1
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over
    assert plt.get_fignums() == []
    return figures[0]


def labelled(ax):
    return [line for line in ax.lines if not line.get_label().startswith("_")]


def fill_ys(collection):
    """The y values of a ``fill_between`` band's outline, rounded for set comparisons."""
    vertices = np.concatenate([p.vertices for p in collection.get_paths()])
    assert np.isfinite(vertices).all()
    return {round(float(y), 5) for y in vertices[:, 1]}


def span_ys(patch):
    """The lower and upper y of an ``axhspan`` (a Rectangle or, in older matplotlib, a Polygon)."""
    if hasattr(patch, "get_height"):
        return sorted([patch.get_y(), patch.get_y() + patch.get_height()])
    ys = np.asarray(patch.get_xy())[:, 1]
    return [float(ys.min()), float(ys.max())]


# ------------------------------------------------------------------------------------------ BOON

X = torch.linspace(0, 1, 9, dtype=torch.float64)  # Grid1D(9) on [0, 1]: dx = 1/8


def quadratic(c, a):
    """``u_s(x) = c_s + a_s x + x²`` on the 9 nodes: ``(S, 1, 9)`` float32; ``du/dx(0) = a_s``
    exactly for the second-order one-sided stencil, ``u(0) = c_s``, ``u(1) = c_s + a_s + 1``."""
    c, a = torch.tensor(c, dtype=torch.float64), torch.tensor(a, dtype=torch.float64)
    return (c[:, None] + a[:, None] * X + X**2)[:, None].float()


def boon_case(bc, left, right=(7.0, 7.0, 7.0)):
    walls = boon.AxisWalls(BoundaryCondition(bc, Grid1D(9), axis=-1))
    values = torch.tensor([left, right], dtype=torch.float64).T
    target = quadratic([1.0, 2.0, 3.0], [0.5, 1.0, 2.0])
    return boon.CaseData(target, target, target, target, values, values, walls)


@pytest.mark.parametrize(
    ("bc", "left", "error", "exact_error", "ylabel"),
    [  # near: a = 0.75 against g = 1; c = 1.5 against g = 2; |a + 1|
        (Neumann(), [0.5, 1.0, 2.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.0], "|du/dx − g|"),
        (Dirichlet(), [1.0, 2.0, 3.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0], "|u − g|"),
        (Periodic(), [0.0, 0.0, 0.0], [1.5, 1.75, 3.0], [1.5, 2.0, 3.0], "|u₀ − u_N|"),
    ],
)
def test_boundary_zoom_draws_both_wall_windows_and_each_samples_left_wall_error(
    drawn, tmp_path, bc, left, error, exact_error, ylabel
):
    """The solver's own fields meet Dirichlet and Neumann walls exactly; they are not periodic
    (``u(1) − u(0) = a + 1``). Every value is a dyadic fraction, so each error is exact."""
    data = boon_case(bc, left)
    near = quadratic([1.0, 1.5, 3.0], [0.5, 0.75, 2.0])
    exact = data.test_y.clone()
    path = tmp_path / "zoom.png"
    boon.plot_boundary_zoom(data, {"near": near, "exact": exact}, path, sample=1)
    fig = written_and_closed(drawn, path)
    left_ax, right_ax, wall_ax = fig.axes
    for ax, nodes, title in ((left_ax, range(0, 6), "left"), (right_ax, range(3, 9), "right")):
        assert ax.get_title() == f"{title} wall, test sample 1"
        solver, *methods = ax.lines
        assert [line.get_label() for line in ax.lines] == ["solver", "near", "exact"]
        for line, field in zip(ax.lines, (data.test_y, near, exact), strict=True):
            np.testing.assert_allclose(line.get_xdata(), [j / 8 for j in nodes])
            np.testing.assert_allclose(line.get_ydata(), field[1, 0, list(nodes)].double())
    assert [t.get_text() for t in left_ax.get_legend().get_texts()] == ["solver", "near", "exact"]
    assert wall_ax.get_yscale() == "log" and wall_ax.get_ylabel() == ylabel
    assert wall_ax.get_title() == "left wall (exact 0 drawn at 1e-17)"
    near_line, exact_line = wall_ax.lines
    assert (near_line.get_marker(), exact_line.get_marker()) == ("o", "x")
    np.testing.assert_allclose(near_line.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(near_line.get_ydata(), np.array(error) + 1e-17, rtol=1e-15, atol=0)
    np.testing.assert_allclose(exact_line.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(
        exact_line.get_ydata(), np.array(exact_error) + 1e-17, rtol=1e-15, atol=0
    )
    assert [t.get_text() for t in wall_ax.get_legend().get_texts()] == ["near", "exact"]


def test_boundary_zoom_refuses_fields_that_are_not_one_dimensional_axis_walls(tmp_path):
    data = boon_case(Dirichlet(), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D cases"):  # (x, t) fields on axis walls
        boon.plot_boundary_zoom(
            boon.CaseData(*[data.test_y[..., None]] * 4, None, None, data.walls), {}, tmp_path
        )
    other = SimpleNamespace(kind="dirichlet", grid=Grid1D(9))  # 1-D fields, other walls
    with pytest.raises(ValueError, match="1-D cases"):
        boon.plot_boundary_zoom(boon.CaseData(*[data.test_y] * 4, None, None, other), {}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_error_over_time_draws_every_run_faint_and_the_mean_bold_in_one_colour(drawn, tmp_path):
    curves = {"fno": [[1.0, 0.5, 0.25]], "boon": [[0.5, 0.25, 0.1], [0.7, 0.35, 0.3]]}
    path = tmp_path / "time.png"
    boon.plot_error_over_time(curves, [0.1, 0.2, 0.3], path, "heat")
    (ax,) = written_and_closed(drawn, path).axes
    expected = [  # (colour, bold, values): the runs, then their mean
        ("C0", False, [1.0, 0.5, 0.25]),
        ("C0", True, [1.0, 0.5, 0.25]),
        ("C1", False, [0.5, 0.25, 0.1]),
        ("C1", False, [0.7, 0.35, 0.3]),
        ("C1", True, [0.6, 0.3, 0.2]),
    ]
    assert len(ax.lines) == len(expected)
    for line, (colour, bold, values) in zip(ax.lines, expected, strict=True):
        np.testing.assert_allclose(line.get_xdata(), [0.1, 0.2, 0.3])
        np.testing.assert_allclose(line.get_ydata(), values)
        assert to_rgba(line.get_color())[:3] == to_rgba(colour)[:3]
        assert (line.get_alpha() is None) is bold and (line.get_linewidth() == 2) is bold
    assert [line.get_label() for line in labelled(ax)] == ["fno", "boon"]
    assert (ax.get_title(), ax.get_yscale(), ax.get_xlabel()) == ("heat", "log", "t")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fno", "boon"]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"predictions": [torch.zeros(3, 1, 9)]},
            TypeError,
            "predictions must be a dict of method",
        ),
        (
            {"predictions": {"fno": torch.zeros(3, 1, 8)}},
            ValueError,
            r"predictions\['fno'\] must have the test targets' shape \(3, 1, 9\), got \(3, 1, 8\)",
        ),
        (
            {"predictions": {"fno": torch.zeros(3, 9)}},
            ValueError,
            r"predictions\['fno'\] must have shape \(3, 1, 9\), got \(3, 9\)",
        ),
        ({"sample": 3}, ValueError, r"sample must be an int in \[-3, 3\), got 3"),
        ({"sample": 1.0}, ValueError, r"sample must be an int in \[-3, 3\), got 1.0"),
    ],
    ids=["not-a-dict", "other-length", "no-channel-axis", "sample-out-of-range", "sample-float"],
)
def test_boundary_zoom_names_a_bad_prediction_or_sample(tmp_path, change, error, message):
    data = boon_case(Dirichlet(), [1.0, 2.0, 3.0])
    arguments = {"predictions": {"fno": data.test_y}, "sample": 0, **change}
    with pytest.raises(error, match=message):
        boon.plot_boundary_zoom(
            data, arguments["predictions"], tmp_path / "z.png", arguments["sample"]
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("curves", "times", "message"),
    [
        (
            {"fno": [[1.0, 0.5]]},
            [[0.1, 0.2]],
            r"times must have shape \(T,\), T >= 1, got \(1, 2\)",
        ),
        ({"fno": [[]]}, [], r"times must hold at least one time, got none"),
        ({}, [0.1, 0.2], r"curves must map at least one method to its runs, got \{\}"),
        ({"fno": []}, [0.1, 0.2], r"curves\['fno'\] must be a non-empty list of runs, got \[\]"),
        (
            {"fno": [[1.0, 0.5], [1.0]]},
            [0.1, 0.2],
            r"curves\['fno'\]\[1\] must hold a value per time \(2\), got 1",
        ),
    ],
    ids=["2-d-times", "no-times", "no-methods", "no-runs", "short-run"],
)
def test_error_over_time_names_bad_curves_and_times(tmp_path, curves, times, message):
    with pytest.raises(ValueError, match=message):
        boon.plot_error_over_time(curves, times, tmp_path / "t.png", "heat")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- frame strips


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ([], ValueError, r"rows must hold at least one \(label, frames\) pair, got none"),
        (torch.zeros(2, 1, 4, 4), TypeError, "rows must be a sequence of .* got Tensor"),
        ([torch.zeros(2, 1, 4, 4)], TypeError, r"rows\[0\] must be a \(label, frames\) pair"),
        ([("a", torch.zeros(2, 4, 4))], ValueError, r"\(2, 4, 4\)"),
        (
            [("a", torch.zeros(2, 1, 4, 4)), ("b", torch.zeros(0, 1, 4, 4))],
            ValueError,
            r"\(0, 1, 4, 4\)",
        ),
        ([("a", torch.zeros(2, 3, 4, 4))], ValueError, r"\(2, 3, 4, 4\)"),
    ],
    ids=["empty", "a-tensor", "not-a-pair", "no-channel-axis", "no-frames", "three-channels"],
)
def test_frame_strip_names_the_row_that_is_not_frames(tmp_path, rows, error, message):
    with pytest.raises(error, match=message):
        figures.frame_strip(tmp_path / "s.png", rows)
    assert list(tmp_path.iterdir()) == []


def test_a_row_of_frames_with_no_channel_axis_names_its_label_and_the_shape(tmp_path):
    message = (
        r"^rows\[1\] \('truth'\) frames must have shape \(T, 1, H, W\), none of them 0, "
        r"got \(2, 4, 4\)$"
    )
    with pytest.raises(ValueError, match=message):
        figures.frame_strip(
            tmp_path / "s.png",
            [("context", torch.zeros(2, 1, 4, 4)), ("truth", torch.zeros(2, 4, 4))],
        )


def test_frame_strip_draws_numpy_frames_as_tensors(monkeypatch, tmp_path):
    """Each frame is drawn clamped to [0, 1]: the values 2 and -1 are shown as 1 and 0."""
    shown = []
    monkeypatch.setattr(
        figures, "save_figure", lambda fig, path, **k: shown.append(fig) or plt.close(fig)
    )
    frames = np.array([[[[2.0, 0.5], [-1.0, 0.25]]]])
    figures.frame_strip(tmp_path / "s.png", [("numpy", frames)])
    (ax,) = shown[0].axes
    np.testing.assert_array_equal(ax.images[0].get_array(), [[1.0, 0.5], [0.0, 0.25]])


# --------------------------------------------------------------------------------------- PreDiff


def test_strip_rows_are_context_truth_then_each_member_of_both_models(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(prediff_plots, "frame_strip", lambda *a, **k: calls.append((a, k)))
    context, truth = torch.rand(2, 1, 4, 4), torch.rand(3, 1, 4, 4)
    plain, controlled = torch.rand(2, 3, 1, 4, 4), torch.rand(3, 3, 1, 4, 4)
    prediff_plots.plot_strip(tmp_path / "strip.png", context, truth, plain, controlled, 0.5)
    (((path, rows), _),) = calls
    assert path == tmp_path / "strip.png"
    assert [label for label, _ in rows] == [
        "context", "truth", "PreDiff 1", "PreDiff 2", "KC λ=0.5 1", "KC λ=0.5 2", "KC λ=0.5 3"
    ]  # fmt: skip
    shown = [context, truth, plain[0], plain[1], controlled[0], controlled[1], controlled[2]]
    for (_, frames), expected in zip(rows, shown, strict=True):
        assert torch.equal(frames, expected)


def test_energy_plot_draws_the_band_the_member_spread_and_the_per_lead_errors(drawn, tmp_path):
    floor, energy0 = [0.1, 0.3], 2.0  # the band is E0 ± the mean floor, 0.2
    one = {"truth": torch.tensor([2.0, 2.1]), "PreDiff": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    per_lead = {"PreDiff": [0.5, 0.7], "KC": [0.1, 0.2]}
    path = tmp_path / "energy.png"
    prediff_plots.plot_energy(path, per_lead, floor, one, energy0)
    left, right = written_and_closed(drawn, path).axes
    (band,) = left.patches
    np.testing.assert_allclose(span_ys(band), [1.8, 2.2])
    np.testing.assert_allclose(left.lines[0].get_ydata(), [2.0, 2.0])  # E0
    truth_line, prediff_line = labelled(left)
    np.testing.assert_allclose(truth_line.get_xdata(), [1, 2])
    np.testing.assert_allclose(truth_line.get_ydata(), [2.0, 2.1])
    np.testing.assert_allclose(prediff_line.get_ydata(), [2.0, 3.0])  # member mean
    truth_band, prediff_band = left.collections
    assert fill_ys(truth_band) == {2.0, 2.1}  # one video: no spread
    s = math.sqrt(2.0)  # sample std of (1, 3) and of (2, 4)
    assert fill_ys(prediff_band) == {round(v, 5) for v in (2 - s, 2 + s, 3 - s, 3 + s)}
    (floor_band,) = right.collections
    assert fill_ys(floor_band) == {0.0, 0.1, 0.3}
    for line, values in zip(labelled(right), per_lead.values(), strict=True):
        np.testing.assert_allclose(line.get_xdata(), [1, 2])
        np.testing.assert_allclose(line.get_ydata(), values)
    assert right.get_ylim()[0] == 0
    assert (left.get_title(), right.get_title()) == ("one test video", "test set")
    assert right.get_ylabel() == "|E_judge − E₀|"


# --------------------------------------------------------------------------- conservation forecast


def constant_fields(values):
    """Fields ``(..., 1, 2, 2)`` equal to ``values`` everywhere: mass 4·value on a unit-cell sum."""
    return torch.as_tensor(values, dtype=torch.float64)[..., None, None, None].expand(
        *torch.as_tensor(values).shape, 1, 2, 2
    )


def forecast(samples, target=None):
    target = torch.arange(24.0).reshape(2, 3, 1, 2, 2) if target is None else target
    test = SimpleNamespace(target=target, truth_mass=torch.tensor([[9.0, 9, 9], [5.0, 6, 7]]))
    grid = SimpleNamespace(integrate=lambda field: field.sum((-2, -1)))
    return {"test": test, "grid": grid, "samples": samples}


def test_mass_plot_draws_the_truth_and_each_methods_member_mean_and_spread(drawn, tmp_path):
    members = constant_fields([[[0, 0, 0], [1, 2, 3]], [[0, 0, 0], [3, 4, 5]]])  # (M, W, L)
    samples = {"earthformer": {"raw": members, "hardc": members + 1}, "fno": {"raw": members}}
    path = tmp_path / "mass.png"
    conservation_plots.plot_mass(path, forecast(samples), window=1)
    fig = written_and_closed(drawn, path)
    assert [ax.get_title() for ax in fig.axes] == ["earthformer", "fno"]
    ax = fig.axes[0]
    truth, raw, hardc = ax.lines
    for line in ax.lines:
        np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(truth.get_ydata(), [5, 6, 7])
    np.testing.assert_allclose(raw.get_ydata(), [8, 12, 16])  # 4 × mean of (1, 3), (2, 4), (3, 5)
    np.testing.assert_allclose(hardc.get_ydata(), [12, 16, 20])
    s = 4 * math.sqrt(2.0)  # 4 × the sample std of two values 2 apart
    assert fill_ys(ax.collections[0]) == {round(v, 5) for c in (8, 12, 16) for v in (c - s, c + s)}
    assert [line.get_label() for line in ax.lines] == ["truth", "raw", "hardc"]


def test_frame_plot_shows_the_last_lead_of_the_truth_and_member_zero_on_one_scale(drawn, tmp_path):
    raw = -torch.arange(2 * 2 * 3 * 4.0).reshape(2, 2, 3, 1, 2, 2)  # negative: its own floor
    hardc = torch.arange(2 * 2 * 3 * 4.0).reshape(2, 2, 3, 1, 2, 2) + 100  # the largest values
    path = tmp_path / "frame.png"
    conservation_plots.plot_frame(path, forecast({"fno": {"raw": raw, "hardc": hardc}}), "fno", 1)
    fig = written_and_closed(drawn, path)
    assert [ax.get_title() for ax in fig.axes] == ["truth", "raw member", "hardc member"]
    truth = torch.tensor([[20.0, 21.0], [22.0, 23.0]])  # arange(24) at window 1, lead 2
    raw_frame = -torch.tensor([[20.0, 21.0], [22.0, 23.0]])  # member 0, window 1, lead 2
    hardc_frame = torch.tensor([[120.0, 121.0], [122.0, 123.0]])
    for ax, image, low in zip(fig.axes, (truth, raw_frame, hardc_frame), (0, -23, 0), strict=True):
        (shown,) = ax.images
        np.testing.assert_array_equal(shown.get_array(), image.numpy())
        assert shown.get_clim() == (low, 123.0)


def test_correction_maps_show_spread_mean_error_and_each_updates_mean_absolute_move(
    drawn, tmp_path
):
    raw = torch.full((2, 2, 3, 1, 2, 2), 100.0)  # other windows and leads: far off
    raw[0, 1, -1, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    raw[1, 1, -1, 0] = torch.tensor([[3.0, 2.0], [7.0, 4.0]])
    move = torch.zeros_like(raw)
    move[0, 1, -1, 0] = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    move[1, 1, -1, 0] = torch.tensor([[-1.0, 0.0], [0.5, 0.0]])  # opposite moves of member 0
    target = torch.full((2, 3, 1, 2, 2), -50.0)
    target[1, -1, 0] = torch.tensor([[2.0, 1.0], [6.0, 4.0]])
    methods = {"raw": raw, "kc": raw * 10, "probconserv": raw + 2, "hardc": raw + move}
    path = tmp_path / "correction.png"
    conservation_plots.plot_correction(path, forecast({"fno": methods}, target), "fno", 1)
    fig = written_and_closed(drawn, path)
    panels = fig.axes[:4]
    assert len(fig.axes) == 8  # and a colour bar each
    s = math.sqrt(2.0)
    expected = [  # (title, image, colour limits)
        ("ensemble std", [[s, 0], [2 * s, 0]], (0, 2 * s)),
        ("|ensemble mean error|", [[0, 1], [1, 0]], (0, 1)),
        ("|hardc correction|", [[1, 0], [0.5, 0]], (0, 2)),
        ("|probconserv correction|", [[2, 2], [2, 2]], (0, 2)),
    ]
    for ax, (title, image, limits) in zip(panels, expected, strict=True):
        assert ax.get_title() == title
        (shown,) = ax.images
        np.testing.assert_allclose(shown.get_array(), image, rtol=1e-6)
        np.testing.assert_allclose(shown.get_clim(), limits, rtol=1e-6)


# --------------------------------------------------------------------------------- model updates


def test_flip_curves_are_drawn_against_the_tau_grid_on_a_log_axis(drawn, tmp_path):
    curves = {"retrain": [0.1 * k for k in range(21)], "pc-focal": [0.05] * 21}
    path = tmp_path / "nfr.png"
    updates_plots.plot_flip_curves(curves, path, "heat-fno")
    (ax,) = written_and_closed(drawn, path).axes
    taus = 10 ** np.linspace(-1, 1, 21)  # τ / τ_median from 0.1 to 10, 21 points
    for line, curve in zip(labelled(ax), curves.values(), strict=True):
        np.testing.assert_allclose(line.get_xdata(), taus, rtol=1e-12)
        np.testing.assert_allclose(line.get_ydata(), curve)
    (median,) = [line for line in ax.lines if line.get_label().startswith("_")]
    np.testing.assert_allclose(median.get_xdata(), [1.0, 1.0])
    assert (ax.get_xscale(), ax.get_title(), ax.get_ylabel()) == ("log", "heat-fno", "NFR(τ)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["retrain", "pc-focal"]


def test_guard_curve_draws_the_guards_max_and_p99_and_the_surrogate_alone(drawn, tmp_path):
    rows = [
        {"method": "guard", "speedup": 2.0, "max_error": 0.1, "p99_error": 0.02},
        {"method": "solver", "speedup": 1.0, "max_error": 0.0, "p99_error": 0.0},
        {"method": "guard", "speedup": 4.0, "max_error": 0.05, "p99_error": 0.01},
        {"method": "surrogate", "speedup": 100.0, "max_error": 0.3, "p99_error": 0.2},
    ]
    path = tmp_path / "guard.png"
    updates_plots.plot_guard_curve(rows, path, "heat")
    (ax,) = written_and_closed(drawn, path).axes
    most, p99, alone = labelled(ax)
    expected = [([2, 4], [0.1, 0.05]), ([2, 4], [0.02, 0.01]), ([100], [0.3])]
    for line, (x, y) in zip((most, p99, alone), expected, strict=True):
        np.testing.assert_allclose(line.get_xdata(), x)
        np.testing.assert_allclose(line.get_ydata(), y)
    assert [line.get_label() for line in (most, p99, alone)] == [
        "guard, max", "guard, p99", "surrogate alone, max"
    ]  # fmt: skip
    tolerance, unit_speed = [line for line in ax.lines if line.get_label().startswith("_")]
    np.testing.assert_allclose(tolerance.get_ydata(), [1e-2, 1e-2])
    np.testing.assert_allclose(unit_speed.get_xdata(), [1.0, 1.0])
    assert (ax.get_xscale(), ax.get_yscale(), ax.get_title()) == ("log", "log", "heat")
