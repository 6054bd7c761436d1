"""The families' losses, pairs and sizes, and ``physml train``'s settings, against hand values."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from physml.data import PDEData
from physml.training import commands, families


def _data(samples: int, times: int, *space: int, **attrs) -> PDEData:
    """Solutions ``u[s, t, x...] = 100 s + 10 t + x`` (flattened place index), so every value
    names its sample, time and place."""
    place = torch.arange(math.prod(space), dtype=torch.float64).reshape(space)
    s = torch.arange(samples, dtype=torch.float64).reshape(-1, 1, *[1] * len(space))
    t = torch.arange(times, dtype=torch.float64).reshape(1, -1, *[1] * len(space))
    u = 100 * s + 10 * t + place
    coords = {name: torch.linspace(0, 1, n) for name, n in zip("xy", space, strict=False)}
    return PDEData(
        u=u,
        t=torch.linspace(0, 1, times, dtype=torch.float64),
        coords=coords,
        params={"a": torch.arange(samples, dtype=torch.float64)},
        attrs=attrs,
        sample_index=torch.arange(samples) + 7,
    )


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


BATCH = (torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]]), torch.tensor([[[1.0, 0.0]], [[0.0, 3.0]]]))
"""Inputs ``(2, 1, 2)`` whose doubles miss the targets by ``[1, 4]`` and ``[6, 5]``."""


def test_the_mse_loss_is_the_mean_square_error_of_a_two_sample_batch():
    assert families.mse_loss(Double(), BATCH).item() == pytest.approx((1 + 16 + 36 + 25) / 4)


def test_the_relative_l2_loss_is_the_mean_of_each_samples_relative_error():
    expected = (math.sqrt(17) / 1 + math.sqrt(61) / 3) / 2
    assert families.relative_l2_loss(Double(), BATCH).item() == pytest.approx(expected)


def test_the_rollout_pairs_are_k_steps_apart_and_forecast_windows_take_t_in_then_t_out():
    data = _data(2, 6, 4)
    pairs = families.dataset("rollout", data, {"k": 3})
    assert len(pairs) == 2 * 3  # starts 0, 1, 2 of each solution
    x, y = pairs[4]  # sample 1, start 1
    assert x.tolist() == [[110.0, 111.0, 112.0, 113.0]]
    assert y.tolist() == [[140.0, 141.0, 142.0, 143.0]]
    windows = families.dataset("forecast", data, {"t_in": 2, "t_out": 3})
    assert len(windows) == 2 * 2
    x, y = windows[3]  # sample 1, start 1
    assert x.shape == (2, 1, 4) and y.shape == (3, 1, 4)
    assert x[:, 0, 0].tolist() == [110.0, 120.0] and y[:, 0, 0].tolist() == [130.0, 140.0, 150.0]


@pytest.mark.parametrize(
    ("space", "modes", "kept"), [((33,), 16, 16), ((33,), 20, 16), ((10, 7), 16, 3), ((9,), 3, 3)]
)
def test_the_fno_keeps_at_most_half_of_each_axis_in_modes(space, modes, kept):
    config = {"options": {"modes": modes}}
    assert families.kept_modes(config, _data(1, 2, *space)) == kept


def test_the_fno_options_take_the_channels_of_each_side_and_check_their_bytes(monkeypatch):
    asked = []
    monkeypatch.setattr(families, "fits_in_memory", lambda name, nbytes, what: asked.append(nbytes))
    config = {"options": {"modes": 3, "hidden": 4, "layers": 2}}
    options = families.fno_options(config, _data(1, 2, 8, 8), ((3, 8, 8), (1, 8, 8)))
    assert options == {
        "n_modes": (3, 3),
        "in_channels": 3,
        "out_channels": 1,
        "hidden_channels": 4,
        "n_layers": 2,
    }
    assert asked == [2 * 4 * 4 * 3 * 3 * 8]  # layers · hidden² · modes² complex64 of 8 bytes


@pytest.mark.parametrize(
    ("space", "odd"), [((5, 8), True), ((8, 5), False), ((5,), False), ((4, 6, 8), False)]
)
def test_an_odd_axis_counts_only_before_the_last(space, odd):
    assert families.odd_before_last(space) is odd


def test_an_fno_takes_pairs_on_another_grid_and_other_families_do_not():
    items = [(torch.zeros(1, 16), torch.zeros(1, 16))]
    assert families.same_pairs("fno", items, [[1, 32], [1, 32]])
    assert not families.same_pairs("fno", items, [[2, 16], [1, 16]])  # channels
    assert not families.same_pairs("fno", items, [[1, 4, 4], [1, 16]])  # axes
    assert not families.same_pairs("unet", items, [[1, 32], [1, 32]])
    assert families.same_pairs("unet", items, [[1, 16], [1, 16]])


@pytest.mark.parametrize(("fraction", "held"), [(0.29, 3), (0.25, 2), (0.35, 4), (0.04, 0)])
def test_the_validation_split_holds_the_rounded_fraction_of_the_last_samples(fraction, held):
    data = _data(10, 2, 3)
    train, validation = commands.split(data, fraction)
    assert len(train) == 10 - held
    assert train.params["a"].tolist() == list(range(10 - held))
    assert train.sample_index.tolist() == [7 + i for i in range(10 - held)]
    if held == 0:
        assert validation is None
        return
    assert validation.u[:, 0, 0].tolist() == [100.0 * i for i in range(10 - held, 10)]
    assert validation.params["a"].tolist() == list(range(10 - held, 10))
    assert validation.sample_index.tolist() == [7 + i for i in range(10 - held, 10)]


def test_a_split_that_would_hold_every_sample_or_a_fraction_of_one_is_refused():
    with pytest.raises(ValueError, match="holds out all 2 samples"):
        commands.split(_data(2, 2, 3), 0.9)
    with pytest.raises(ValueError, match=r"--val-fraction must be in \[0, 1\), got 1"):
        commands.split(_data(2, 2, 3), 1.0)


def _arguments(**given) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--data", "d.h5", "--out", "run"])
    for key, value in given.items():
        setattr(args, key, value)
    return args


def test_settings_take_the_toml_file_and_let_the_flags_given_win(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = "fno"\ntask = "rollout"\nlr = 0.01\nk = 3\nval_fraction = 0.2\n')
    chosen = commands.settings(_arguments(config=str(path), k=5))
    assert chosen["lr"] == 0.01 and chosen["val_fraction"] == 0.2  # no flag: the file's
    assert chosen["k"] == 5 and chosen["model"] == "fno" and chosen["task"] == "rollout"
    assert chosen["data"] == "d.h5" and chosen["out"] == "run"  # the flags: none in the file


def test_a_toml_model_that_is_not_a_string_is_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = 3\ntask = "operator"\n')
    with pytest.raises(TypeError, match="--config: model must be a string"):
        commands.settings(_arguments(config=str(path)))


@pytest.mark.parametrize("key", ["modes", "members", "views"])
def test_each_option_may_be_as_large_as_its_maximum_and_no_larger(key):
    name = {"modes": "fno", "members": "ensemble", "views": "anp"}[key]
    most = families.MAXIMA[key]
    assert families.model_config(name, "operator", {key: most})["options"][key] == most
    with pytest.raises(ValueError, match=f"{key} must be at most {most}, got {most + 1}"):
        families.model_config(name, "operator", {key: most + 1})


def test_options_left_unset_take_the_defaults_and_given_ones_win():
    config = families.model_config("fno", "rollout", {"modes": 3, "hidden": None, "k": 2})
    assert config["options"]["modes"] == 3 and config["options"]["k"] == 2
    assert config["options"]["hidden"] == families.DEFAULTS["hidden"]


def test_options_given_as_numpy_integers_are_recorded_as_ints():
    """The JSON config kept a numpy option as it came, and json.dumps refused it."""
    config = families.model_config(
        "convlstm", "forecast", {"hidden": np.int64(8), "layers": np.int32(3)}
    )
    assert json.loads(json.dumps(config))["options"]["hidden"] == 8
    assert type(config["options"]["hidden"]) is int and type(config["recurrent_layers"]) is int


def test_the_anp_trains_on_its_views_of_random_points_and_is_scored_on_the_whole_grid():
    options = {"context_points": 6, "context_times": 3, "target_points": 5, "views": 4}
    data = _data(3, 4, 8)
    training = families._point_sets(data, options).attributes["point_sets"]
    scoring = families._point_sets(data, options, evaluation=True).attributes["point_sets"]
    assert training == {
        "n_context": 6,
        "context_times": 3,
        "n_target": 5,
        "views": 4,
        "seed": 0,
        "seed_scheme": "seedsequence-mt19937",
    }
    assert scoring == {
        "n_context": 6,
        "context_times": 3,
        "n_target": None,
        "views": 1,
        "seed": 1,
        "seed_scheme": "seedsequence-mt19937",
    }
    assert len(families._point_sets(data, options)) == 3 * 4
    context_x, _, target_x = families._point_sets(data, options, evaluation=True)[0][:3]
    assert context_x.shape == (6, 2) and target_x.shape == (4 * 8, 2)


@pytest.mark.parametrize("name", ["anp", "ensemble"])
def test_the_point_models_predict_every_point_of_every_solution_past_one_batch(name):
    torch.manual_seed(0)
    options = {
        "hidden": 4,
        "layers": 1,
        "context_points": 4,
        "context_times": 2,
        "target_points": 6,
    }
    if name == "ensemble":
        options = {"hidden": 4, "layers": 1, "members": 2}
    config = families.model_config(name, "operator", options)
    data = _data(37, 3, 5)
    data.u = data.u / 1000
    model, _ = families.build(config, data)
    gaussian = families.FAMILIES[name].predict(model, data, config["options"], "cpu")
    assert gaussian.mean.shape == (37, 3 * 5)
    with torch.no_grad():  # every solution at once: no batches
        if name == "anp":
            sets = families._point_sets(data, config["options"], evaluation=True)
            context_x, context_y, target_x = (
                torch.stack([sets[i][k] for i in range(37)]) for k in range(3)
            )
            whole = model.model(context_x, context_y, target_x)
        else:
            inputs = families.PointRows(data).all_rows()[0].reshape(37, 15, -1)
            whole = model.model(inputs)
    torch.testing.assert_close(gaussian.mean, whole.mean)
    torch.testing.assert_close(gaussian.variance(), whole.variance())


@pytest.mark.parametrize(
    ("boundary", "periodic"),
    [
        ("Periodic", True),
        (" x: Periodic ; y: PERIODIC ", True),
        ("x: wall; y: periodic", False),
        ("periodic: no", False),
        ("   ", False),
    ],
)
def test_the_periodic_boundary_is_read_per_axis_whatever_its_case(boundary, periodic):
    assert families.periodic_domain(_data(1, 2, 4, boundary=boundary)) is periodic


@pytest.mark.parametrize(
    ("attrs", "periodic"),
    [
        ({"periodic": 1}, True),  # as the GPME recipes write it, with or without a boundary
        ({"periodic": np.int64(1), "boundary": "periodic"}, True),
        ({"periodic": np.int64(0), "boundary": "dirichlet: u(t,0) = 1, u(t,1) = 0"}, False),
        ({"periodic": True}, True),
        ({"periodic": np.bool_(False)}, False),
        ({"periodic": 1, "boundary": "periodic in x"}, True),  # the flag decides
        ({"periodic": 0, "boundary": "periodic"}, False),
    ],
)
def test_the_periodic_flag_decides_where_a_file_has_one(attrs, periodic):
    data = _data(1, 2, 4, **attrs)
    assert families.periodic_domain(data) is periodic
    assert families.with_domain({"model": "unet"}, data)["periodic"] is periodic


@pytest.mark.parametrize("flag", [2, -1, 1.0, "yes", "periodic"])
def test_a_periodic_flag_that_is_not_a_bool_nor_0_or_1_is_named(flag):
    with pytest.raises(
        ValueError, match=rf"attribute periodic must be true or false \(1 or 0\), got {flag!r}"
    ):
        families.periodic_domain(_data(1, 2, 4, periodic=flag))


@pytest.mark.parametrize(("attrs", "kind"), [({}, "node"), ({"grid_kind": "cell"}, "cell")])
def test_the_grid_kind_is_the_files_else_node(attrs, kind):
    assert families.grid_kind(_data(1, 2, 4, **attrs)) == kind


def test_a_grid_kind_that_is_not_known_is_named():
    with pytest.raises(ValueError, match="grid_kind must be one of .* got 'corner'"):
        families.grid_kind(_data(1, 2, 4, grid_kind="corner"))


def test_the_domain_recorded_for_each_family():
    walls, ring = _data(1, 2, 5, 8), _data(1, 2, 5, 8, boundary="periodic")
    fno = families.model_config("fno", "operator", {"modes": 16})
    assert families.with_domain(fno, walls) == {
        **fno,
        "periodic": False,
        "n_modes": 2,
        "position": "node",
        "spectral": families.EXACT_SHIFT,
    }
    assert families.with_domain(fno, ring) == {
        **fno,
        "periodic": True,
        "n_modes": 2,
        "spectral": families.EXACT_SHIFT,
    }
    even = _data(1, 2, 8, 5, grid_kind="cell")
    assert families.with_domain(fno, even) == {
        **fno,
        "periodic": False,
        "n_modes": 2,
        "position": "cell",
    }
    unet = families.model_config("unet", "forecast", {})
    assert families.with_domain(unet, ring) == {**unet, "periodic": True}
    ensemble = families.model_config("ensemble", "operator", {})
    assert families.with_domain(ensemble, ring) == ensemble


@pytest.mark.parametrize("model", ["fno", "boon-fno"])
def test_a_spectral_model_trained_before_the_exact_shift_on_an_odd_axis_is_refused(model):
    config = {"model": model}
    with pytest.raises(families.CheckpointError, match="run: its .* 5×8 grids"):
        families.check_spectral_shift(config, [[1, 5, 8], [1, 5, 8]], "run")
    families.check_spectral_shift(config, [[1, 8, 5], [1, 8, 5]], "run")  # odd last axis
    families.check_spectral_shift(config, [[3, 8], [1, 8]], "run")  # 1-D
    families.check_spectral_shift({**config, "spectral": "ifftshift"}, [[1, 5, 8]], "run")
    families.check_spectral_shift({"model": "unet"}, [[1, 5, 8]], "run")


@pytest.mark.parametrize(("height", "width"), [(8, 6), (6, 8), (3, 3)])
def test_frames_whose_sides_are_not_multiples_are_refused(height, width):
    config = {"model": "unet"}
    shapes = ((2, 1, height, width), (2, 1, height, width))
    with pytest.raises(ValueError, match=f"multiples of 4; the file's are {height}×{width}"):
        families._check_frames(config, _data(1, 2, height, width), shapes, 4)
    families._check_frames(config, _data(1, 2, 8, 4), ((2, 1, 8, 4), (2, 1, 8, 4)), 4)


def test_the_options_a_family_does_not_read_do_not_make_another_model():
    fno = families.model_config("fno", "rollout", {"k": 2})
    assert families.same_model({**fno, "options": {**fno["options"], "base_units": 99}}, fno)
    assert not families.same_model({**fno, "options": {**fno["options"], "k": 3}}, fno)
    assert not families.same_model({**fno, "options": {**fno["options"], "modes": 3}}, fno)
    convlstm = families.model_config("convlstm", "forecast", {"layers": 3})
    assert convlstm["recurrent_layers"] == 3
    assert families.same_model(
        {**convlstm, "options": {**convlstm["options"], "layers": 4}}, convlstm
    )
    assert not families.same_model({**convlstm, "recurrent_layers": 4}, convlstm)
    assert "recurrent_layers" not in families.model_config("convlstm", "forecast", {"layers": 2})
    assert "recurrent_layers" not in families.model_config("convlstm", "forecast", {})


@pytest.mark.parametrize(
    ("name", "task", "options", "match"),
    [
        ("fno", "operator", {"k": 2}, "--k: model fno on task operator does not read it"),
        ("unet", "forecast", {"modes": 4, "k": 1}, "--modes, --k: .* does not read them"),
        ("anp", "rollout", {}, "model 'anp' serves the task.*got task 'rollout'"),
        ("FNO", "operator", {}, "model must be one of .* got 'FNO'"),
        ("fno", "operator", {"modes": 0}, "^modes must be an integer >= 1, got 0$"),
        ("fno", "operator", {"hidden": 2.5}, r"^hidden must be an integer >= 1, got 2\.5$"),
    ],
)
def test_model_configs_that_cannot_be_built_are_named(name, task, options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        families.model_config(name, task, options)


def test_a_family_is_refused_data_of_a_dimension_it_does_not_take():
    config = families.model_config("boon-fno", "operator", {})
    with pytest.raises(ValueError, match="model boon-fno needs 1-D data, the file holds 2-D"):
        families.training_items(config, _data(2, 3, 4, 4))
    fno = families.model_config("fno", "operator", {})
    x, y = families.training_items(fno, _data(2, 3, 4, 4))[1]
    assert x.shape == (1, 4, 4) and y[0, 0, 0].item() == 120.0


@pytest.mark.parametrize(
    ("trained_on", "holds", "same"),
    [
        (None, "heat", True),
        ("heat", None, True),
        ("heat", "heat", True),
        ("heat", "pme", False),
        ("pdebench: 1D_Burgers_Sols_Nu0.01", "pdebench: 1D_Burgers_Sols_Nu0.1", True),
        ("pdebench: 1D_Burgers_Sols_Nu0.01", "pdebench: 1D_Advection_Sols_beta0.1", False),
        ("pdebench: 1D_Burgers_Sols_Nu0.01", "burgers", False),
    ],
)
def test_a_file_measures_a_model_of_the_same_problem(trained_on, holds, same):
    assert commands.same_problem(trained_on, holds) is same


def test_the_scores_are_the_relative_l2_and_mse_of_each_pair():
    prediction = torch.tensor([[2.0, 4.0], [6.0, 8.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    scores = commands._scores(prediction, target)
    assert scores["samples"] == 2
    assert scores["rel_l2"] == pytest.approx((math.sqrt(17) + math.sqrt(61) / 3) / 2)
    assert scores["mse"] == pytest.approx((1 + 16 + 36 + 25) / 4)


def _stretched(samples: int, times: int, places: int) -> PDEData:
    """:func:`_data` on ``t`` in ``[0, 2]`` and ``x`` in ``[-1, 3]``, values scaled to order 1."""
    data = _data(samples, times, places)
    data.u = data.u / 1000
    data.t = torch.linspace(0, 2, times, dtype=torch.float64)
    data.coords = {"x": torch.linspace(-1, 3, places, dtype=torch.float64)}
    return data


def test_the_anp_is_built_from_its_options_on_the_files_ranges():
    options = {"hidden": 4, "layers": 3, "context_points": 4, "context_times": 2}
    config = families.model_config("anp", "operator", {**options, "target_points": 6})
    anp = families.build(config, _stretched(2, 3, 5))[0].model
    assert anp.latent == 4 and len(anp.deterministic.attention) == 3
    corners = torch.tensor([[0.0, -1.0], [2.0, 3.0], [1.0, 1.0]])
    mapped = (corners - anp.input_shift) / anp.input_scale  # (t, x) → [-1, 1]²
    torch.testing.assert_close(mapped, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))


def test_the_ensemble_is_built_from_its_options_and_standardised_on_the_file():
    config = families.model_config("ensemble", "operator", {"hidden": 4, "layers": 3, "members": 2})
    data = _stretched(3, 4, 5)
    ensemble = families.build(config, data)[0].model
    assert {k: ensemble.config[k] for k in ("members", "width", "depth")} == {
        "members": 2,
        "width": 4,
        "depth": 3,
    }
    assert ensemble.target_shift.item() == pytest.approx((100 + 10 * 1.5 + 2) / 1000)
    assert families._member_rows(data, config["options"]).order.shape == (2, 3 * 4 * 5)


@pytest.mark.parametrize("name", ["anp", "ensemble"])
def test_the_point_models_weights_follow_the_global_seed(name):
    options = {"hidden": 4, "layers": 1}
    options |= {"members": 2} if name == "ensemble" else {"context_points": 4, "target_points": 6}
    config = families.model_config(
        name, "operator", {**options, "context_times": 2} if name == "anp" else options
    )
    data = _stretched(2, 3, 5)

    def weights(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torch.cat(
            [p.detach().flatten() for p in families.build(config, data)[0].parameters()]
        )

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


@pytest.mark.parametrize("pde", ["", "pdebench: 1D_Burgers_Sols_Nu0.01"])
def test_a_boon_fno_on_a_file_of_no_recipe_is_told_to_use_the_fno(pde):
    config = families.model_config("boon-fno", "operator", {"modes": 4, "hidden": 4, "layers": 1})
    with pytest.raises(ValueError, match=f"--model boon-fno: the file's pde '{pde}' is no physml"):
        families.build(config, _data(2, 3, 9, pde=pde))


@pytest.mark.parametrize("change", [{"model": ["fno"]}, {"task": {"operator": 1}}])
def test_a_config_whose_model_or_task_is_no_name_is_another_model(change):
    fno = families.model_config("fno", "operator", {})
    assert not families.same_model({**fno, **change}, fno)


def test_evaluating_a_checkpoint_whose_model_is_no_name_is_one_clear_line(tmp_path, capsys):
    from physml.cli import main

    data, run = str(tmp_path / "heat.h5"), str(tmp_path / "run")
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", data, "--quiet"]) == 0
    train = ["train", "--data", data, "--model", "fno", "--task", "operator", "--out", run]
    options = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    assert main([*train, "--steps", "1", *options]) == 0
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["model_config"]["model"] = ["fno"]
    torch.save(state, path)
    assert main(["evaluate", "--checkpoint", run, "--data", data]) == 2
    assert "was not written by physml train" in capsys.readouterr().err


def test_a_boon_fno_finds_its_recipe_by_the_name_before_the_colon_of_the_pde():
    config = families.model_config("boon-fno", "operator", {"modes": 4, "hidden": 4, "layers": 1})
    data = _data(2, 3, 9, pde="heat: u_t = kappa u_xx", boundary="neumann")
    model, items = families.build(config, data)
    assert model(items[0][0][None]).shape == (1, 1, 9)


@pytest.mark.parametrize(
    "raw",
    ["{kappa: 0.1", "[0.1]", "null", "[" * 100_000],
    ids=["malformed", "list", "null", "deep"],
)
def test_a_boon_fno_on_a_file_whose_settings_are_no_json_object_is_refused_by_name(raw):
    config = families.model_config("boon-fno", "operator", {"modes": 4, "hidden": 4, "layers": 1})
    data = _data(2, 3, 9, pde="heat: u_t = kappa u_xx", boundary="neumann", settings=raw)
    expected = "--data: the file's 'settings' attribute: expected a JSON object"
    with pytest.raises(ValueError, match=rf"^{expected} \(as physml generate writes\), got "):
        families.build(config, data)


def test_distillation_settings_need_the_old_run_and_are_recorded_with_it(tmp_path, capsys):
    from physml.cli import main
    from physml.training import load_checkpoint

    data = str(tmp_path / "heat.h5")
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", data, "--quiet"]) == 0
    options = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    train = ["train", "--data", data, "--model", "fno", "--task", "operator", *options]
    assert main([*train, "--out", str(tmp_path / "old"), "--steps", "1"]) == 0
    assert main([*train, "--out", str(tmp_path / "lone"), "--distill-alpha", "2"]) == 2
    assert "--distill-lambda/-alpha/-beta/-tau need --distill-from" in capsys.readouterr().err
    new = ["--out", str(tmp_path / "new"), "--steps", "1", "--distill-from", str(tmp_path / "old")]
    assert main([*train, *new, "--distill-lambda", "0.5", "--distill-tau", "0.25"]) == 0
    recorded = load_checkpoint(tmp_path / "new")["model_config"]["distill"]
    assert recorded == {"strength": 0.5, "alpha": 1.0, "beta": 5.0, "tau": 0.25}


def test_a_point_model_is_not_scored_on_a_file_that_names_no_pde(tmp_path, capsys):
    import h5py

    from physml.cli import main

    data, bare = tmp_path / "d.h5", tmp_path / "bare.h5"
    generate = ["generate", "diffusion", "--n", "4", "--nx", "9", "--nt", "6", "--out", str(data)]
    assert main([*generate, "--quiet"]) == 0
    train = ["train", "--data", str(data), "--model", "ensemble", "--task", "operator"]
    options = ["--hidden", "4", "--layers", "1", "--members", "2", "--batch", "8", "--quiet"]
    assert main([*train, "--out", str(tmp_path / "run"), "--steps", "1", *options]) == 0
    bare.write_bytes(data.read_bytes())
    with h5py.File(bare, "a") as f:
        del f.attrs["pde"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(bare)]) == 2
    assert (
        f"physml evaluate: error: --data: {str(bare)!r} names no PDE (no attribute 'pde'; "
        f"parameters ['k']), but the ensemble of "
        f"{str(tmp_path / 'run')!r} was trained on 'diffusion' ones: it reads the parameters"
    ) in capsys.readouterr().err
    unnamed = ["--data", str(bare), "--out", str(tmp_path / "unnamed"), "--steps", "1"]
    assert main([train[0], *train[3:], *unnamed, *options]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "unnamed"), "--data", str(data)]) == 2
    assert "was trained on a file that names none: it reads" in capsys.readouterr().err


def test_the_crps_of_a_point_model_takes_the_standard_deviation(tmp_path, monkeypatch):
    """A Gaussian of variance 4 centred on every target: CRPS ``σ (√(2/π) − 1/√π)``, σ = 2."""
    import dataclasses
    import json

    from physml.cli import main
    from physml.outputs import Gaussian

    data = tmp_path / "d.h5"
    generate = ["generate", "diffusion", "--n", "4", "--nx", "9", "--nt", "6", "--out", str(data)]
    assert main([*generate, "--quiet"]) == 0
    train = ["train", "--data", str(data), "--model", "ensemble", "--task", "operator"]
    options = ["--hidden", "4", "--layers", "1", "--members", "2", "--batch", "8", "--quiet"]
    assert main([*train, "--out", str(tmp_path / "run"), "--steps", "1", *options]) == 0

    def centred(model, data, options, device):
        target = data.u.reshape(len(data), -1).double()
        return Gaussian(target, torch.full_like(target, 4.0))

    family = dataclasses.replace(families.FAMILIES["ensemble"], predict=centred)
    monkeypatch.setitem(families.FAMILIES, "ensemble", family)
    monkeypatch.setitem(commands.FAMILIES, "ensemble", family)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data)]) == 0
    scores = json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text())
    expected = 2 * (math.sqrt(2 / math.pi) - 1 / math.sqrt(math.pi))
    assert scores["crps"] == pytest.approx(expected) and scores["mse"] == 0
