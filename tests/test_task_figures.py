"""Figures of the verification and ProbConserv tasks draw what their captions say."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from pdes.grid import Grid1D
from pdes.verification import convergence, exact_cases
from physml.outputs import Gaussian
from physml.tasks.probconserv import plot_case
from physml.tasks.verification import (
    SQUARE_CASES,
    _plot_field_and_error,
    _plot_profiles,
    plot_study,
)
from physml.training.commands import plot_samples as plot_evaluation


def test_square_cases_are_the_flattened_two_dimensional_ones():
    """Each name in SQUARE_CASES is a registered case whose points form an n × n grid."""
    cases = {case.name: case for case in exact_cases()}
    assert SQUARE_CASES <= cases.keys()
    for name in SQUARE_CASES:
        points = cases[name].run(cases[name].resolutions[0]).exact.shape[-1]
        assert math.isqrt(points) ** 2 == points


def test_two_dimensional_case_is_drawn_as_field_and_error_images(tmp_path):
    case = next(c for c in exact_cases() if c.name == "navier-stokes-taylor-green-time")
    study = convergence(case, [10, 20])
    fig, (field, error) = plt.subplots(1, 2)
    _plot_field_and_error(study, field, error)
    finest = study.finest
    n = math.isqrt(finest.exact.shape[-1])
    errors = [(finest.numerical[k] - finest.exact[k]).abs().max() for k in range(2)]
    worst = int(errors[1] > errors[0])  # the max-norm case's worst sample
    expected = finest.exact[worst, -1].reshape(n, n).T.numpy()
    difference = (finest.numerical[worst, -1] - finest.exact[worst, -1]).reshape(n, n).T.numpy()
    assert field.images[0].get_array().shape == (n, n)
    assert (field.images[0].get_array() == expected).all()
    assert (error.images[0].get_array() == difference).all()
    plt.close(fig)
    plot_study(study, tmp_path / "tg.png")
    assert (tmp_path / "tg.png").stat().st_size > 0


def test_mass_plot_shows_each_conservation_error_on_a_log_axis(tmp_path, monkeypatch):
    grid = Grid1D(9)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    mass = torch.ones(1, 4, dtype=torch.float64)
    exact = torch.ones(1, 4, 9, dtype=torch.float64)
    drift = torch.linspace(0.0, 0.3, 4, dtype=torch.float64)[None, :, None]
    predictions = {
        "anp": Gaussian(exact + drift, torch.full_like(exact, 0.01)),
        "probconserv-anp": Gaussian(exact.clone(), torch.full_like(exact, 0.01)),
    }
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures to look into them
    plot_case(tmp_path, "toy", predictions, exact, mass, grid, t, {}, None, label="toy-seed0")
    profile, mass_figure = figures
    top, bottom = mass_figure.axes
    assert bottom.get_yscale() == "log"
    errors = {line.get_label(): line.get_ydata() for line in bottom.get_lines()}
    assert errors["anp"] == pytest.approx((drift.flatten() * 1.0).clamp(min=1e-17).tolist())
    assert (errors["probconserv-anp"] <= 1e-15).all()
    lines = {line.get_label(): line for line in profile.axes[0].get_lines()}
    assert lines["anp"].get_zorder() < lines["probconserv-anp"].get_zorder()
    assert lines["anp"].get_linestyle() != lines["probconserv-anp"].get_linestyle()
    monkeypatch.undo()
    for figure in figures:
        plt.close(figure)


def test_the_evaluation_figure_draws_lines_over_the_coordinate_and_names_its_axes(
    tmp_path, monkeypatch
):
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures to look into them
    x = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    line = torch.arange(8.0).reshape(2, 1, 4)
    plot_evaluation(line, line + 1, tmp_path / "a.png", {"x": x}, "fno (operator), on h.h5")
    plot_evaluation(line, line, tmp_path / "b.png", {"x": torch.zeros(3)})  # 3 points: not u's 4
    frames = torch.zeros(1, 2, 3, 5)
    plot_evaluation(frames, frames, tmp_path / "c.png", {"x": torch.zeros(3), "y": torch.zeros(5)})
    over_x, by_point, images = figures
    assert over_x.get_suptitle() == "fno (operator), on h.h5" and by_point.get_suptitle() == ""
    first = over_x.axes[0]
    assert first.get_xlabel() == "x" and first.get_title() == "sample 0"
    assert [list(drawn.get_xdata()) for drawn in first.get_lines()] == [[0.0, 0.25, 0.5, 1.0]] * 2
    assert list(first.get_lines()[0].get_ydata()) == [1.0, 2.0, 3.0, 4.0]  # the truth: target
    assert by_point.axes[1].get_xlabel() == "grid point"
    assert list(by_point.axes[1].get_lines()[0].get_xdata()) == [0, 1, 2, 3]
    (image,) = images.axes
    assert (image.get_xlabel(), image.get_ylabel()) == ("y index", "x index")
    assert image.images[0].get_array().shape == (3, 10)  # the last frame: truth | prediction
    monkeypatch.undo()
    for figure in figures:
        plt.close(figure)


def test_a_failed_write_leaves_neither_a_figure_nor_a_temporary_file(tmp_path, monkeypatch):
    """Figures are written atomically: a write that breaks off part-way leaves the folder empty."""

    def broken(fig, target, **options):
        Path(target).write_bytes(b"\x89PNG cut short")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    case = next(c for c in exact_cases() if c.name == "heat-neumann")
    study = convergence(case, case.resolutions[:2])
    grid, t = Grid1D(9), torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    exact = torch.ones(1, 4, 9, dtype=torch.float64)
    predictions = {
        name: Gaussian(exact.clone(), torch.full_like(exact, 0.01))
        for name in ("anp", "probconserv-anp")
    }
    writes = {
        "verification": lambda folder: plot_study(study, folder / "study.png"),
        "probconserv": lambda folder: plot_case(
            folder, "toy", predictions, exact, exact[:, :, 0], grid, t, {}, None, label="toy-seed0"
        ),
        "evaluation": lambda folder: plot_evaluation(
            torch.rand(2, 1, 8), torch.rand(2, 1, 8), folder / "samples.png"
        ),
    }
    for name, write in writes.items():
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(OSError, match="disk full"):
            write(folder)
        assert list(folder.iterdir()) == [], name
    plt.close("all")


@pytest.mark.parametrize(
    ("measured", "met"), [(1.068, False), (1.072, True), (1.06996, True), (1.0694, False)]
)
def test_verify_judges_the_order_it_prints(tmp_path, monkeypatch, measured, met):
    """Theory 4/3: 0.8 × 4/3 = 1.0667 is printed and judged as 1.07, so an order of 1.068 is
    missed beside the printed target, not met below it; an order of 1.06996 is printed 1.07
    (four digits) and met, 1.0694 printed 1.069 and missed."""
    import physml.tasks.verification as verification
    from pdes.verification import Comparison, ExactCase
    from physml.tasks import Context

    def run(n):
        h, zeros = 1.0 / n, torch.zeros(1, 2, 4, dtype=torch.float64)
        grid, times = torch.linspace(0, 1, 4), torch.tensor([0.0, 1.0])
        return Comparison(zeros + h**measured, zeros, grid, times, h)

    case = ExactCase("synthetic-4/3", run, (10, 20, 40), order=4 / 3, norm="l1")
    monkeypatch.setattr(verification, "exact_cases", lambda: [case])
    rows = verification.run(Context(out=tmp_path, quiet=True))
    order = next(row for row in rows if row.metric.startswith("order"))
    assert order.value == pytest.approx(measured)
    assert order.target.startswith(">= 1.07 ") and order.ok is met


def _synthetic_case(order: float, resolutions: tuple[int, ...], refines: str = "space"):
    """A case whose l1 error at resolution n is exactly (1/n)**order."""
    from pdes.verification import Comparison, ExactCase

    def run(n):
        zeros = torch.zeros(1, 3, 4, dtype=torch.float64)
        grid, times = torch.linspace(0, 1, 4), torch.tensor([0.0, 0.5, 1.0])
        return Comparison(zeros + (1.0 / n) ** order, zeros, grid, times, 1.0 / n)

    return ExactCase("synthetic", run, resolutions, order=order, norm="l1", refines=refines)


@pytest.mark.parametrize(
    ("size", "resolutions", "finest"),
    [("toy", (10, 20, 40), 40), ("full", (10, 20, 40), 80), ("full", (11, 21, 41), 81)],
)
def test_verify_reports_the_error_at_the_finest_resolution_it_ran(
    tmp_path, monkeypatch, size, resolutions, finest
):
    """``full`` halves the spacing once more: 2n points on a periodic grid (n even), 2n − 1 on
    one with both ends (n odd)."""
    import physml.tasks.verification as verification
    from physml.tasks import Context

    monkeypatch.setattr(verification, "exact_cases", lambda: [_synthetic_case(2.0, resolutions)])
    rows = verification.run(Context(out=tmp_path, size=size, quiet=True))
    order, error = rows
    assert order.metric == "order (space, l1)" and order.value == pytest.approx(2.0)
    assert order.target == ">= 1.6 (theory 2)" and order.ok is True
    assert error.metric == f"error at finest ({finest})" and error.ok is None
    assert error.value == pytest.approx(1.0 / finest**2, rel=1e-12)
    assert (tmp_path / "verify" / f"synthetic-{size}.png").stat().st_size > 0


def test_convergence_panel_draws_the_theory_slope_through_the_finest_error(monkeypatch):
    import physml.tasks.verification as verification

    figures = []
    monkeypatch.setattr(verification, "save_figure", lambda fig, path: figures.append(fig))
    for refines, label in (("space", "dx"), ("time", "dt")):
        study = convergence(_synthetic_case(1.5, (4, 8, 16), refines))
        verification.plot_study(study, Path("unused.png"))
        profile, panel = figures[-1].axes
        assert panel.get_xlabel() == label
        measured, reference = panel.get_lines()
        h, e = reference.get_xdata(), reference.get_ydata()
        assert h[-1] == 1 / 16 and e[-1] == pytest.approx(16**-1.5, rel=1e-12)
        assert math.log(e[0] / e[-1]) / math.log(h[0] / h[-1]) == pytest.approx(1.5)
        labels = sorted(
            line.get_label() for line in profile.get_lines() if "t=" in line.get_label()
        )
        assert labels == ["t=0", "t=0.5", "t=1"]
        plt.close(figures[-1])


def test_error_image_colours_are_symmetric_about_zero():
    from pdes.verification import Comparison, ConvergenceStudy

    exact = torch.zeros(1, 2, 9, dtype=torch.float64)
    numerical = exact.clone()
    numerical[0, -1, 4], numerical[0, -1, 0] = -3.0, 1.0  # the larger error is negative
    finest = Comparison(numerical, exact, torch.arange(9.0), torch.tensor([0.0, 1.0]), 0.5)
    study = ConvergenceStudy(_synthetic_case(1.0, (2,)), [0.5], [1.0], finest)
    fig, (field, error) = plt.subplots(1, 2)
    _plot_field_and_error(study, field, error)
    assert error.images[0].get_clim() == (-3.0, 3.0)
    plt.close(fig)


@pytest.mark.parametrize("norm", ["max", "l1"])
def test_the_error_image_is_the_sample_with_the_largest_error_named_in_the_titles(norm):
    """Three samples on a 3 × 3 grid: sample 1 has the largest error in either norm, though sample
    0 has the largest single point at the last time under ``l1``."""
    from pdes.verification import Comparison, ConvergenceStudy

    exact = torch.arange(3 * 2 * 9, dtype=torch.float64).reshape(3, 2, 9)
    numerical = exact.clone()
    numerical[0, -1, 0] += 1.5 if norm == "l1" else 0.5
    numerical[1] += 1.0  # 1.0 everywhere: max 1.0, mean 1.0
    numerical[2, 0, 3] -= 0.25
    finest = Comparison(numerical, exact, torch.arange(9.0), torch.tensor([0.0, 1.0]), 0.5)
    case = replace(_synthetic_case(1.0, (2,)), norm=norm)
    study = ConvergenceStudy(case, [0.5], [1.0], finest)
    fig, (field, error) = plt.subplots(1, 2)
    _plot_field_and_error(study, field, error)
    assert (field.images[0].get_array() == exact[1, -1].reshape(3, 3).T.numpy()).all()
    assert (error.images[0].get_array() == np.ones((3, 3))).all()
    assert "sample 1" in field.get_title() and "sample 1 of 3" in error.get_title()
    plt.close(fig)


@pytest.mark.parametrize("norm", ["max", "l1", "l2"])
def test_the_profiles_are_the_sample_with_the_largest_error_named_in_the_title(norm):
    """Three samples of 5 points at 3 times: sample 2 has the largest error in each norm
    (max 0.8; mean 0.8 / 5; mean square 0.64 / 5), though sample 0 has the largest single point
    under ``l1`` and ``l2`` (1.2; mean 1.2 / 15, mean square 1.44 / 15)."""
    from pdes.verification import Comparison, ConvergenceStudy

    exact = torch.arange(3 * 3 * 5, dtype=torch.float64).reshape(3, 3, 5)
    numerical = exact.clone()
    numerical[0, 1, 2] += 1.2 if norm != "max" else 0.6
    numerical[1, 0, 0] -= 0.3
    numerical[2, :, 1] += 0.8
    x, t = torch.linspace(0.0, 1.0, 5), torch.tensor([0.0, 0.5, 1.0])
    finest = Comparison(numerical, exact, x, t, 0.25)
    case = replace(_synthetic_case(1.0, (5,)), norm=norm)
    fig, ax = plt.subplots()
    _plot_profiles(ConvergenceStudy(case, [0.25], [1.0], finest), ax)
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(lines) == len(dashed) == 3
    for j, (thick, solver) in enumerate(zip(lines, dashed, strict=True)):
        assert (thick.get_xdata() == x.numpy()).all()
        assert (thick.get_ydata() == exact[2, j].numpy()).all()
        assert (solver.get_ydata() == numerical[2, j].numpy()).all()
    assert ax.get_title().endswith("\nsample 2 of 3 (largest error)")
    plt.close(fig)


def test_a_single_sample_profile_title_names_no_sample():
    from pdes.verification import Comparison, ConvergenceStudy

    exact = torch.zeros(1, 2, 4, dtype=torch.float64)
    finest = Comparison(exact + 0.5, exact, torch.arange(4.0), torch.tensor([0.0, 1.0]), 0.5)
    fig, ax = plt.subplots()
    _plot_profiles(ConvergenceStudy(_synthetic_case(1.0, (4,)), [0.5], [1.0], finest), ax)
    assert "sample" not in ax.get_title()
    plt.close(fig)


def test_every_case_on_a_square_grid_is_drawn_as_images():
    """The 2-D cases run an ``n × n`` grid at resolution ``n``; no 1-D case has ``n²`` points."""
    square = set()
    for case in exact_cases():
        n = case.resolutions[0]
        if case.run(n).exact.shape[-1] == n * n:
            square.add(case.name)
    assert square == SQUARE_CASES


def _strip(monkeypatch, tmp_path, rows, titles=(), **options):
    """Draw ``frame_strip`` and keep the figure and the dpi it was written at."""
    from physml.tasks import figures

    written = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, dpi: written.append((fig, dpi)))
    figures.frame_strip(tmp_path / "strip.png", rows, titles, **options)
    ((fig, dpi),) = written
    return fig, dpi


def test_frame_strip_draws_row_r_column_c_as_frame_c_of_row_r(monkeypatch, tmp_path):
    """A row of 3 frames and one of 2 (T, 1, H, W): 2 × 3 axes, the short row's last one blank."""
    long = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 1, 2, 4) / 24
    short = torch.tensor([[-1.0, 0.5], [2.0, 0.25]]).expand(2, 1, 2, 2).clone()
    short[1] = 0.75
    rows = [("truth", long), ("model", short)]
    titles = [("t=1", "t=2", "t=3"), ("a",)]
    # grey level of each pixel: values outside [0, 1] drawn as black or white
    expected = [
        [np.arange(8.0).reshape(2, 4) / 24 + 8 * c / 24 for c in range(3)],
        [np.array([[0.0, 0.5], [1.0, 0.25]]), np.full((2, 2), 0.75)],
    ]
    fig, dpi = _strip(monkeypatch, tmp_path, rows, titles, label_size=5, dpi=42)
    assert dpi == 42
    axes = [fig.axes[i : i + 3] for i in (0, 3)]
    assert len(fig.axes) == 6
    for r, (label, frames) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            assert ax.get_ylabel() == (label if c == 0 else "")
            title = titles[r][c] if c < len(titles[r]) else ""
            assert ax.get_title() == title
            if c >= frames.shape[0]:
                assert not ax.axison and not ax.images
                continue
            (image,) = ax.images
            assert image.get_cmap().name == "gray"
            assert (image.norm.vmin, image.norm.vmax) == (0, 1)  # grey levels are not rescaled
            drawn = image.to_rgba(image.get_array())  # the colours on the page
            assert (drawn == plt.get_cmap("gray")(expected[r][c])).all()
    assert axes[0][0].yaxis.label.get_fontsize() == 5
    plt.close(fig)


def test_frame_strip_of_one_row_writes_a_png(tmp_path):
    from physml.tasks.figures import frame_strip

    before = plt.get_fignums()
    frame_strip(tmp_path / "one" / "strip.png", [("only", torch.full((2, 1, 3, 3), 0.5))])
    image = plt.imread(tmp_path / "one" / "strip.png")
    assert image.ndim == 3 and image.shape[0] > 0
    assert plt.get_fignums() == before
