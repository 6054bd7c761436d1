"""The ``earthformer-ns`` task: Navier–Stokes sequences, the FNO adapter, the metric, a tiny run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from pdes.problems import get as get_recipe
from physml.tasks import Context
from physml.tasks import earthformer as task


def test_vorticity_sequences_shape_zero_mean_and_per_sample_seeds():
    videos = task.vorticity_sequences(2, 5, nx=16, frames=3)
    assert videos.shape == (2, 3, 1, 16, 16) and videos.dtype == torch.float32
    assert torch.isfinite(videos).all()
    # The periodic solver keeps the (zero) mean vorticity of the random initial field.
    assert videos.double().mean((-2, -1)).abs().max() < 1e-6
    # Frames differ over time: the flow evolves.
    assert (videos[:, 0] - videos[:, -1]).abs().max() > 1e-3
    # Sequence i depends on seed first_seed + i only.
    alone = task.vorticity_sequences(1, 6, nx=16, frames=3)
    assert torch.equal(alone[0], videos[1])


@pytest.mark.parametrize(("nu", "frame_dt"), [(task.NU, task.FRAME_DT), (2e-2, 0.5)])
def test_vorticity_sequences_frames_are_frame_dt_apart_at_the_given_viscosity(nu, frame_dt):
    """Frame ``k`` is the state at ``t = k·frame_dt`` of viscosity ``nu``: it matches a separate
    run of the ``navier-stokes`` recipe that ends there (to the time-stepping error, ~3e-5)."""
    videos = task.vorticity_sequences(1, 5, nx=16, frames=3, nu=nu, frame_dt=frame_dt)
    recipe = get_recipe("navier-stokes")
    for k in (1, 2):
        settings = recipe.settings(nx=16, nu=nu, t_end=k * frame_dt, nt=2)
        alone = recipe.generate([5], settings).u[0, 1]
        difference = (videos[0, k, 0].double() - alone).abs().max() / alone.abs().max()
        assert difference < 1e-3, (k, float(difference))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(count=0, first_seed=0, nx=16, frames=3), "count"),
        (dict(count=1, first_seed=0, nx=16, frames=1), "frames"),
        (dict(count=1, first_seed=0, nx=16, frames=3, frame_dt=0.0), "frame_dt"),
    ],
)
def test_vorticity_sequences_rejects_bad_sizes(kwargs, name):
    with pytest.raises(ValueError, match=name):
        task.vorticity_sequences(**kwargs)


def test_relative_l2_per_lead_matches_a_direct_formula():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(3, 4, 1, 5, 5, generator=gen)
    prediction = target + 0.1 * torch.randn(3, 4, 1, 5, 5, generator=gen)
    got = task.relative_l2_per_lead(prediction, target).numpy()
    p, t = prediction.numpy().astype(np.float64), target.numpy().astype(np.float64)
    expected = [
        np.mean([np.linalg.norm(p[b, k] - t[b, k]) / np.linalg.norm(t[b, k]) for b in range(3)])
        for k in range(4)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_frames_as_channels_maps_sequences_through_a_2d_operator():
    operator = nn.Conv2d(3, 2, 1, bias=False)
    model = task.FramesAsChannels(operator)
    x = torch.randn(4, 3, 1, 8, 8)
    y = model(x)
    assert y.shape == (4, 2, 1, 8, 8)
    torch.testing.assert_close(y[:, :, 0], operator(x[:, :, 0]))
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(4, 3, 2, 8, 8))


def test_build_knows_the_methods_and_rejects_others():
    scale = task.Scale(
        nx=16, t_in=2, t_out=3, train=4, test=2, budget_s=1.0, batch_size=2, base_units=8, modes=4
    )
    x = torch.randn(2, 2, 1, 16, 16)
    for method in task.METHODS:
        assert task.build(method, scale, seed=0)(x).shape == (2, 3, 1, 16, 16)
    with pytest.raises(ValueError, match="method must be one of"):
        task.build("transformer", scale, seed=0)


def test_both_networks_are_built_for_the_torus():
    """Circular padding for the Earthformer, periodic coordinates for the FNO: built for the
    torus the flow lives on."""
    from physml.models import PeriodicCoordinates

    scale = task.Scale(
        nx=16, t_in=2, t_out=3, train=4, test=2, budget_s=1.0, batch_size=2, base_units=8, modes=4
    )
    assert task.build("earthformer", scale, seed=0).periodic is True
    fno = task.build("fno", scale, seed=0).operator
    assert isinstance(fno.positional_embedding, PeriodicCoordinates)


def _recording(monkeypatch) -> tuple[list, dict, list, list]:
    """Record the task's data draws, training inputs, forecast strips and figures (none saved)."""
    calls, trained, strips, figures = [], {}, [], []
    sequences, train_forecaster = task.vorticity_sequences, task.train_forecaster

    def recording(count, first_seed, nx, frames):
        calls.append((count, first_seed, nx, frames))
        return sequences(count, first_seed, nx, frames)

    def recording_training(model, train_x, train_y, **kwargs):
        trained[kwargs["model_config"]["method"]] = (train_x, train_y)
        return train_forecaster(model, train_x, train_y, **kwargs)

    monkeypatch.setattr(task, "vorticity_sequences", recording)
    monkeypatch.setattr(task, "train_forecaster", recording_training)
    monkeypatch.setattr(
        task, "plot_strip", lambda path, truth, forecasts: strips.append((truth, forecasts))
    )
    monkeypatch.setattr(task, "save_figure", lambda fig, path, dpi: figures.append(fig))
    return calls, trained, strips, figures


def _check_recorded_run(rows, summary, tiny, recorded) -> None:
    """Training seeds 0…, test seeds 10 000…; the strip shows test sequence 0 and its forecasts,
    each lead's row is that lead's error, and only the trained methods report training time."""
    calls, trained, strips, figures = recorded
    assert calls == [(4, 0, 16, 4), (2, 10_000, 16, 4)]
    train = task.vorticity_sequences(4, 0, 16, 4)  # context frames 0-1, targets 2-3
    for train_x, train_y in trained.values():
        assert torch.equal(train_x, train[:, :2]) and torch.equal(train_y, train[:, 2:])
    assert set(trained) == set(task.METHODS)
    test = task.vorticity_sequences(2, 10_000, 16, 4).double()
    ((truth, forecasts),) = strips
    assert torch.equal(truth, test[0, 2:].float())
    assert torch.equal(forecasts["persistence"], test[0, 1:2].float().expand(2, -1, -1, -1))
    values = {row.metric: row for row in rows}
    for k in range(2):  # ||w(1) − w(2 + k)|| / ||w(2 + k)||, mean over the two sequences
        future = test[:, 2 + k].flatten(1)
        expected = float(((test[:, 1].flatten(1) - future).norm(dim=1) / future.norm(dim=1)).mean())
        assert values[f"rel L2 t+{k + 1} persistence"].value == pytest.approx(expected, rel=1e-6)
        assert summary["methods"]["persistence"]["rel_l2_per_lead"][k] == pytest.approx(
            expected, rel=1e-6
        )
    assert "train s persistence" not in values and "train s earthformer" in values
    assert values["rel L2 earthformer / persistence"].ok is None  # judged at full size only
    assert summary["methods"]["persistence"]["params"] == 0
    built = task.build("earthformer", tiny, seed=0)
    assert summary["methods"]["earthformer"]["params"] == sum(p.numel() for p in built.parameters())
    (lead_axes,) = figures[0].axes  # relative L2 against lead times 1 and 2 (FRAME_DT = 1)
    assert [list(line.get_xdata()) for line in lead_axes.lines] == [[1, 2]] * 3


def test_tiny_run_writes_rows_plots_and_an_independent_persistence_score(tmp_path, monkeypatch):
    tiny = task.Scale(
        nx=16, t_in=2, t_out=2, train=4, test=2, budget_s=None, batch_size=2, base_units=8,
        modes=4, steps={"earthformer": 3, "fno": 3},
    )  # fmt: skip
    monkeypatch.setitem(task.SIZES, "toy", tiny)
    rows = task.run(Context(out=tmp_path, size="toy", quiet=True))
    values = {row.metric: row.value for row in rows}
    # fixed steps: a second run in another folder repeats every error exactly, whatever the load
    recorded = _recording(monkeypatch)  # the second run's draws, trainings and figures
    again = task.run(Context(out=tmp_path / "again", size="toy", quiet=True))
    summary = json.loads((tmp_path / "again" / task.NAME / "summary-toy-seed0.json").read_text())
    _check_recorded_run(again, summary, tiny, recorded)
    errors = {row.metric: row.value for row in again if row.metric.startswith("rel L2")}
    assert errors == {k: v for k, v in values.items() if k.startswith("rel L2")}
    for method in task.METHODS:
        assert np.isfinite(values[f"rel L2 {method}"])
    folder = tmp_path / task.NAME
    assert (folder / "rel-l2-vs-lead-toy-seed0.png").stat().st_size > 0
    assert (folder / "forecast-strip-toy-seed0.png").stat().st_size > 0
    summary = json.loads((folder / "summary-toy-seed0.json").read_text())
    assert len(summary["methods"]["earthformer"]["rel_l2_per_lead"]) == 2
    assert summary["settings"]["seed"] == 0 and summary["settings"]["device"] == "cpu"

    # Persistence from the solver's own frames: ||w(t_in - 1) - w(t_in + k)|| / ||w(t_in + k)||.
    test = task.vorticity_sequences(2, task.TEST_SEED_OFFSET, 16, 4).double()
    last, future = test[:, 1], test[:, 2:]
    ratios = [
        ((last - future[:, k]).flatten(1).norm(dim=1) / future[:, k].flatten(1).norm(dim=1)).mean()
        for k in range(2)
    ]
    assert values["rel L2 persistence"] == pytest.approx(float(sum(ratios) / 2), rel=1e-6)
    ratio = values["rel L2 earthformer / persistence"]
    assert ratio == pytest.approx(values["rel L2 earthformer"] / values["rel L2 persistence"])


def test_rerun_with_another_architecture_is_refused(tmp_path, monkeypatch):
    """The checkpoints record the settings :func:`build` used: a rerun in the same folder with
    the Earthformer built otherwise (here without circular padding) is refused, not resumed."""
    tiny = task.Scale(
        nx=16, t_in=2, t_out=2, train=4, test=2, budget_s=None, batch_size=2, base_units=8,
        modes=4, steps={"earthformer": 1, "fno": 1},
    )  # fmt: skip
    monkeypatch.setitem(task.SIZES, "toy", tiny)
    task.run(Context(out=tmp_path, size="toy", quiet=True))
    walled = {**task.ARCHITECTURES["earthformer"], "periodic": False}
    monkeypatch.setitem(task.ARCHITECTURES, "earthformer", walled)
    assert task.build("earthformer", tiny, seed=0).periodic is False
    with pytest.raises(ValueError, match=r"another model \(model_config.periodic True → False\)"):
        task.run(Context(out=tmp_path, size="toy", quiet=True))


def test_forecast_strip_titles_the_leads_and_centres_the_colours(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(task, "save_figure", lambda fig, path, dpi: figures.append(fig))
    truth = torch.zeros(3, 1, 4, 4)
    truth[0, 0, 0, 0], truth[2, 0, 1, 1] = -2.0, 1.0  # largest magnitude is negative
    task.plot_strip(tmp_path / "strip.png", truth, {"persistence": truth})
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes[:3]] == ["t+1", "t+2", "t+3"]
    assert all(ax.images[0].get_clim() == (-2.0, 2.0) for ax in axes)


def test_the_error_figure_ticks_the_lead_times_the_forecasts_have(tmp_path, monkeypatch):
    """Leads 1, 2, 3 (frames FRAME_DT = 1 apart): no ticks at 1.5 or 2.5, where no forecast is."""
    figures = []
    monkeypatch.setattr(task, "save_figure", lambda fig, path, dpi: figures.append(fig))
    task.plot_errors(tmp_path / "errors.png", {"persistence": torch.tensor([0.1, 0.2, 0.3])})
    ax = figures[0].axes[0]
    low, high = ax.get_xlim()
    assert [tick for tick in ax.get_xticks() if low <= tick <= high] == [1.0, 2.0, 3.0]


def test_vorticity_sequences_refuse_a_boolean_count():
    with pytest.raises(ValueError, match="count must be an integer >= 1, got True"):
        task.vorticity_sequences(True, 0, nx=16, frames=3)


def test_model_config_records_the_sizes_the_model_is_built_with():
    scale = task.Scale(
        nx=16, t_in=2, t_out=3, train=4, test=2, budget_s=1.0, batch_size=2, base_units=8, modes=4
    )
    fno = task.model_config("fno", scale)
    assert {k: fno[k] for k in ("method", "t_in", "t_out", "nx", "modes")} == dict(
        method="fno", t_in=2, t_out=3, nx=16, modes=4
    )
    assert "base_units" not in fno
    former = task.model_config("earthformer", scale)
    assert {k: former[k] for k in ("t_in", "t_out", "nx", "base_units")} == dict(
        t_in=2, t_out=3, nx=16, base_units=8
    )
    assert "modes" not in former
    expected = "method must be one of ('earthformer', 'fno', 'persistence'), got 'transformer'"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        task.model_config("transformer", scale)


def test_relative_l2_per_lead_refuses_forecasts_of_another_shape():
    # a forecast with more lead times than the target was scored on its first ones only
    target = torch.ones(2, 3, 1, 4, 4)
    for frames in (5, 2):
        with pytest.raises(
            ValueError, match=rf"got \(2, {frames}, 1, 4, 4\) and \(2, 3, 1, 4, 4\)"
        ):
            task.relative_l2_per_lead(torch.ones(2, frames, 1, 4, 4), target)
    shape_error = r"^prediction and target must be \(B, T_out, \.\.\.\) tensors of one shape, got "
    with pytest.raises(ValueError, match=shape_error + r"\(2, 3\) and \(2, 3\)$"):
        task.relative_l2_per_lead(torch.ones(2, 3), torch.ones(2, 3))


TINY_FNO = task.Scale(
    nx=16, t_in=2, t_out=2, train=4, test=2, budget_s=None, batch_size=2, base_units=8,
    modes=4, steps={"earthformer": 3, "fno": 3},
)  # fmt: skip


def test_a_neuralop_forecaster_resumes_from_the_checkpoint_it_wrote(tmp_path):
    """A second train_forecaster on the same checkpoint (a rerun of the task into the same --out)
    reads the first one's file: stopped at 2 steps and resumed to 3, the weights equal 3 steps
    in one go."""
    from physml.training.forecasting import train_forecaster

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 1, 16, 16, generator=generator)
    y = torch.randn(4, 2, 1, 16, 16, generator=generator)
    options = dict(max_steps=3, batch_size=2, seed=0, schedule="none")
    straight = task.build("fno", TINY_FNO, 0)
    train_forecaster(straight, x, y, **options)

    class Killed(Exception):
        pass

    def kill_at_two(step, loss):
        if step == 2:
            raise Killed

    path = tmp_path / "fno"
    with pytest.raises(Killed):
        train_forecaster(
            task.build("fno", TINY_FNO, 0), x, y, checkpoint=path, checkpoint_every=1,
            on_step=kill_at_two, **options,
        )  # fmt: skip
    resumed = task.build("fno", TINY_FNO, 0)
    report = train_forecaster(resumed, x, y, checkpoint=path, **options)
    assert report.steps == 3
    expected = dict(straight.named_parameters())
    for name, value in resumed.named_parameters():
        assert torch.equal(value, expected[name]), name


def test_an_old_neuralop_forecaster_checkpoint_is_refused_in_one_line(tmp_path):
    """Older physml saved the raw state dict, whose neuralop ``_metadata`` holds classes (the
    FNO's init arguments, which neuralop wrote under that key; the FNO now leaves it out), in a
    single file: refused in one line, as any file where the run folder goes."""
    from physml.training.forecasting import train_forecaster

    model = task.build("fno", TINY_FNO, 0)
    fno = next(module for module in model.modules() if hasattr(module, "_init_kwargs"))
    raw = {**model.state_dict(), "_metadata": fno._init_kwargs}
    assert any(not isinstance(value, torch.Tensor) for value in raw.values())
    path = tmp_path / "fno.pt"
    torch.save({"format": "physml-forecaster-checkpoint/1", "model": raw}, path)
    x = torch.randn(4, 2, 1, 16, 16)
    with pytest.raises(ValueError) as caught:
        train_forecaster(task.build("fno", TINY_FNO, 0), x, x, max_steps=1, checkpoint=path)
    message = str(caught.value)
    assert "\n" not in message and repr(str(path)) in message
    assert "delete it" in message and "another --out" in message and "weights_only" not in message


def test_a_work_folder_with_an_old_single_file_checkpoint_is_refused_before_training(
    tmp_path, monkeypatch
):
    """An older physml kept ``<method>.pt`` where the run folder ``<method>/`` goes now: the
    task would otherwise train that model over from step 0."""
    from physml.tasks import run_label
    from physml.training import CheckpointError

    context = Context(out=tmp_path, size="toy", quiet=True)
    work = tmp_path / task.NAME / run_label(context)
    work.mkdir(parents=True)
    (work / "fno.pt").write_bytes(b"an old checkpoint")

    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(task, "train_forecaster", no_training)
    with pytest.raises(CheckpointError) as refused:
        task.run(context)
    assert str(refused.value) == (
        f"--out: {str(work / 'fno.pt')!r} is an old single-file forecaster checkpoint, which can "
        f"no longer be resumed (train_forecaster keeps a run folder, {str(work / 'fno')!r}): "
        "delete it or use another --out"
    )
