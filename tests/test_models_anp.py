"""Attentive neural process: shapes, set symmetries, training, checkpoints, GPME data, SoftC."""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch

from pdes.gpme import stefan_exact, stefan_z1
from physml.data import GPMEFunctions, gpme_sampler
from physml.models import DeepEnsemble, anp
from physml.models.anp import AttentiveNeuralProcess
from physml.models.anp_losses import (
    elbo_loss,
    gpme_residual,
    latent_noise,
    softc_loss_extra,
    softc_residual_loss,
)
from physml.outputs import Gaussian
from physml.training import CheckpointError, fit_ensemble, load_anp, load_checkpoint, train_anp

T_SMALL = torch.linspace(0.0, 1.0, 21)
X_SMALL = torch.linspace(0.0, 2 * math.pi, 33)[:-1]


def small_model(**overrides) -> AttentiveNeuralProcess:
    settings = {"hidden": 32, "latent": 32, "attention_layers": 1, "seed": 0}
    settings.update(overrides)
    return AttentiveNeuralProcess(**settings)


def small_sampler(batch: int = 8, n_target: int | None = 50):
    return gpme_sampler(
        "diffusion",
        batch,
        n_context=25,
        context_times=5,
        n_target=n_target,
        t_grid=T_SMALL,
        x_grid=X_SMALL,
    )


def random_sets(batch: int, n_context: int, n_target: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, n_context, 2, generator=g),
        torch.randn(batch, n_context, generator=g),
        torch.rand(batch, n_target, 2, generator=g),
        torch.randn(batch, n_target, generator=g),
    )


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("batch, n_context, n_target", [(1, 1, 1), (3, 7, 5), (2, 100, 64)])
@pytest.mark.parametrize("samples", [0, 3])
def test_prediction_shapes(batch, n_context, n_target, samples):
    model = small_model().eval()
    cx, cy, tx, _ = random_sets(batch, n_context, n_target)
    with torch.no_grad():
        out = model(cx, cy, tx, samples=samples, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, Gaussian) and out.is_diagonal
    assert out.mean.shape == (batch, n_target) and out.cov.shape == (batch, n_target)
    assert out.mean.dtype == torch.float32
    assert (out.cov >= model.min_std**2 * (1 - 1e-6)).all()


def test_elbo_loss_shapes_and_value_are_finite():
    model = small_model()
    cx, cy, tx, ty = random_sets(3, 9, 11)
    loss, mean = model.elbo_loss(cx, cy, tx, ty, generator=torch.Generator().manual_seed(0))
    assert loss.shape == () and torch.isfinite(loss)
    assert mean.shape == (3, 11)


def test_context_permutation_changes_nothing():
    model = small_model().eval()
    cx, cy, tx, _ = random_sets(2, 30, 17)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = model(cx, cy, tx)
        b = model(cx[:, perm], cy[:, perm], tx)
        moved = cy.clone()
        moved[:, 0] += 1.0
        c = model(cx, moved, tx)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.cov, b.cov, rtol=0, atol=1e-5)
    assert (a.mean - c.mean).abs().max() > 1e-4, "the prediction ignores the context values"


def test_targets_are_predicted_independently_of_their_order():
    model = small_model().eval()
    cx, cy, tx, _ = random_sets(2, 12, 20)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(cx, cy, tx)
        b = model(cx, cy, tx[:, perm])
        single = model(cx, cy, tx[:, :1])
    torch.testing.assert_close(a.mean[:, perm], b.mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.mean[:, :1], single.mean, rtol=0, atol=1e-5)


def test_averaged_latent_samples_give_the_mixture_moments(monkeypatch):
    """samples=S is the moment match of the S one-draw predictions (law of total variance)."""
    model = small_model().eval()
    cx, cy, tx, _ = random_sets(2, 10, 6)
    eps = torch.randn(5, 2, model.latent, generator=torch.Generator().manual_seed(0))
    queue = [eps, *eps.split(1)]

    def fixed_draws(shape, generator, like):
        draws = queue.pop(0)
        assert tuple(draws.shape) == tuple(shape)
        return draws

    monkeypatch.setattr(anp, "_standard_normal", fixed_draws)
    with torch.no_grad():
        mixture = model(cx, cy, tx, samples=5)
        draws = [model(cx, cy, tx, samples=1) for _ in range(5)]
    means = torch.stack([d.mean for d in draws])
    variances = torch.stack([d.cov for d in draws])
    assert means.std(0).min() > 1e-4, "latent draws should move the mean"
    torch.testing.assert_close(mixture.mean, means.mean(0))
    torch.testing.assert_close(mixture.cov, variances.mean(0) + means.var(0, unbiased=False))


def test_latent_draws_follow_the_generator():
    model = small_model().eval()
    cx, cy, tx, _ = random_sets(2, 10, 6)
    with torch.no_grad():
        a = model(cx, cy, tx, samples=4, generator=torch.Generator().manual_seed(1))
        b = model(cx, cy, tx, samples=4, generator=torch.Generator().manual_seed(1))
        c = model(cx, cy, tx, samples=4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.mean, b.mean) and torch.equal(a.cov, b.cov)
    assert not torch.equal(a.mean, c.mean)


def test_latent_mean_prediction_is_deterministic_and_default():
    model = small_model(eval_samples=0).eval()
    cx, cy, tx, _ = random_sets(2, 10, 6)
    with torch.no_grad():
        a = model(cx, cy, tx)
        b = model(cx, cy, tx, samples=0)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.cov, b.cov)


def test_gradients_reach_every_parameter():
    model = small_model(attention_layers=2)
    cx, cy, tx, ty = random_sets(3, 15, 10)
    loss, _ = model.elbo_loss(cx, cy, tx, ty, generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_same_seed_same_weights_and_no_global_rng_use():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = small_model(seed=4), small_model(seed=4)
    after = torch.rand(1)
    assert torch.equal(before, after)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    c = small_model(seed=5)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


# --------------------------------------------------------------------------- training


def test_training_on_diffusion_lowers_loss_and_fits():
    sampler = small_sampler(batch=8, n_target=50)
    model = small_model(input_range=sampler.input_range)
    test = small_sampler(batch=16, n_target=None)(torch.Generator().manual_seed(99))
    cx, cy, tx, ty, _ = test
    with torch.no_grad():
        before = (model(cx, cy, tx).mean - ty).square().mean()
    losses = train_anp(model, sampler, steps=300, lr=3e-3, seed=0, progress=False)
    assert len(losses) == 300 and all(math.isfinite(v) for v in losses)
    # The margins hold over seeds and CPUs: on an AMD EPYC, seeds 0-3 lower the mean NLL per
    # target point by 0.46-1.85 nats and reach mse/var 0.02-0.21 and mse/before 0.02-0.21 (seed 0
    # is the weakest there; an Intel Xeon trains seed 0 to mse/var < 0.2); untrained is ~1.
    assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30 - 0.25
    assert not model.training
    with torch.no_grad():
        out = model(cx, cy, tx)
    mse = (out.mean - ty).square().mean()
    assert mse < 0.3 * ty.var(), (mse, ty.var())
    assert mse < 0.3 * before
    # the predicted variance is on the scale of the actual error, not wildly off
    assert 0.1 < (out.cov.mean() / mse).item() < 10


def test_loss_extra_is_added_to_the_loss():
    sampler = small_sampler(batch=2, n_target=10)
    plain = train_anp(small_model(), sampler, steps=1, seed=3, progress=False)
    extra = train_anp(
        small_model(),
        sampler,
        steps=1,
        seed=3,
        progress=False,
        loss_extra=lambda model, batch: torch.tensor(5.0),
    )
    assert extra[0] == pytest.approx(plain[0] + 5.0, abs=1e-5)


class Interrupt(Exception):
    pass


def interrupted(after: int):
    """A loss term of zero that crashes the run at call ``after + 1``."""
    calls = {"n": 0}

    def extra(model, batch):
        calls["n"] += 1
        if calls["n"] > after:
            raise Interrupt
        return torch.zeros(())

    return extra


@pytest.mark.parametrize("other", [{"heads": 4}, {"min_std": 0.2}])
def test_resuming_an_anp_with_settings_no_shape_shows_is_refused(tmp_path, other):
    sampler = small_sampler(batch=4, n_target=20)
    settings = {"steps": 4, "lr": 1e-3, "seed": 7, "progress": False, "checkpoint_every": 2}
    with pytest.raises(Interrupt):
        train_anp(small_model(), sampler, out=tmp_path, loss_extra=interrupted(3), **settings)
    with pytest.raises(CheckpointError, match="another model"):
        train_anp(
            small_model(**other), sampler, out=tmp_path, loss_extra=interrupted(99), **settings
        )
    assert small_model().settings == {}  # the defaults add nothing: older runs resume


@pytest.mark.parametrize("first, then", [({}, {"eval_samples": 3}), ({"eval_samples": 5}, {})])
def test_an_anp_run_resumes_with_another_eval_samples_as_load_anp_takes_it(tmp_path, first, then):
    """eval_samples is a default of forward, in no weight and no training loss: the resumed run
    ends where an uninterrupted one does and keeps the setting it recorded."""
    sampler = small_sampler(batch=4, n_target=20)
    settings = {"steps": 4, "lr": 1e-3, "seed": 7, "progress": False, "checkpoint_every": 2}
    full_model = small_model(**first)
    full = train_anp(full_model, sampler, loss_extra=interrupted(10**6), **settings)
    with pytest.raises(Interrupt):
        train_anp(
            small_model(**first), sampler, out=tmp_path, loss_extra=interrupted(3), **settings
        )
    resumed_model = small_model(**then)
    resumed = train_anp(
        resumed_model, sampler, out=tmp_path, loss_extra=interrupted(99), **settings
    )
    assert resumed == full
    for p, q in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)
    state = load_checkpoint(tmp_path)
    assert state["step"] == 4
    assert state["model_config"].get("settings", {}) == first


def test_an_anp_records_the_shapeless_settings_that_differ_from_its_signature(monkeypatch):
    """The checkpoint's record of the settings no shape shows compares with the defaults the
    constructor itself has: changing one there changes what counts as a default."""
    assert small_model().settings == {}
    assert small_model(heads=4, eval_samples=3).settings == {"heads": 4, "eval_samples": 3}
    assert small_model(min_std=0.2).settings == {"min_std": 0.2}
    assert small_model(heads=2, min_std=0.01, eval_samples=0).settings == {}

    init = AttentiveNeuralProcess.__init__
    names = list(inspect.signature(init).parameters)[-len(init.__defaults__) :]
    defaults = dict(zip(names, init.__defaults__, strict=True))
    monkeypatch.setattr(init, "__defaults__", tuple({**defaults, "heads": 4}.values()))
    model = small_model()
    assert model.cross.attention.num_heads == 4
    assert model.settings == {}
    assert small_model(heads=2).settings == {"heads": 2}


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    sampler = small_sampler(batch=4, n_target=20)
    settings = {"steps": 20, "lr": 1e-3, "seed": 7, "progress": False, "checkpoint_every": 5}
    full_model = small_model()
    full = train_anp(full_model, sampler, loss_extra=interrupted(10**6), **settings)

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train_anp(small_model(), sampler, out=run, loss_extra=interrupted(13), **settings)
    assert load_checkpoint(run)["step"] == 10
    resumed_model = small_model()
    resumed = train_anp(resumed_model, sampler, out=run, loss_extra=interrupted(99), **settings)
    assert resumed == full
    for (name, p), q in zip(full_model.named_parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not resumed_model.training
    assert load_checkpoint(run)["step"] == 20
    assert sorted(f.name for f in run.iterdir()) == ["checkpoint.pt"], "temporary files left"

    # a finished run resumes to nothing and leaves the trained weights in the model
    again = small_model()
    assert train_anp(again, sampler, out=run, loss_extra=interrupted(0), **settings) == full
    for p, q in zip(full_model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_batch_split_in_two_gives_the_whole_batch_loss():
    """Each function's latent draw is keyed by its own seed: what DDP ranks rely on."""
    model = small_model()
    functions = GPMEFunctions(small_sampler(n_target=20), size=6, seed=2)
    items = [functions[i] for i in range(6)]
    whole = elbo_loss(model, torch.utils.data.default_collate(items))
    halves = [elbo_loss(model, torch.utils.data.default_collate(items[k : k + 3])) for k in (0, 3)]
    torch.testing.assert_close(whole, (halves[0] + halves[1]) / 2, rtol=1e-6, atol=0)
    seeds = torch.stack([item[5] for item in items])
    noise = latent_noise(seeds, 5, torch.zeros(()))
    torch.testing.assert_close(noise[3:], latent_noise(seeds[3:], 5, torch.zeros(())))
    assert noise.shape == (6, 5) and abs(noise.mean()) < 1.0
    with pytest.raises(TypeError, match="batch must be"):
        elbo_loss(model, items[0][:5])
    with pytest.raises(ValueError, match="noise must have shape"):
        model.elbo_loss(*random_sets(1, 3, 2), noise=torch.zeros(2))


def test_functions_dataset_items_follow_their_seed_and_the_sampler():
    sampler = small_sampler(n_target=30)
    functions = GPMEFunctions(sampler, size=5, seed=1)
    a, b = functions[3], GPMEFunctions(sampler, size=9, seed=1)[3]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(functions[2][1], a[1])
    assert not torch.equal(GPMEFunctions(sampler, size=5, seed=2)[3][1], a[1])
    cx, cy, tx, ty, k, seed = a
    assert cx.shape == (25, 2) and ty.shape == (30,) and k.shape == () and seed.dtype == torch.int64
    exact = torch.exp(-k.double() * tx[:, 0].double()) * torch.sin(tx[:, 1].double())
    torch.testing.assert_close(ty.double(), exact, rtol=0, atol=1e-6)
    assert functions.attributes["seed"] == 1 and functions.attributes["case"] == "diffusion"
    with pytest.raises(IndexError):
        functions[5]
    assert all(torch.equal(u, v) for u, v in zip(functions[-1], functions[4], strict=True))
    for index in (1.5, True):  # as the datasets of files refuse them: not a silent int()
        with pytest.raises(TypeError, match="index must be an integer"):
            functions[index]
    with pytest.raises(TypeError, match="GPMESampler"):
        GPMEFunctions("diffusion", 4)
    with pytest.raises(ValueError, match="size"):
        GPMEFunctions(sampler, 0)


def test_a_sampler_is_judged_at_its_own_last_time():
    # u* = 0.02: the front leaves [0, 1] near t = 0.089, after this grid's end (was refused at
    # the recipe's default t_end); the data's mass is then Stefan's exact mass
    from physml.tasks.probconserv import true_mass

    sampler = gpme_sampler(
        "stefan", 1, t_grid=torch.linspace(0, 0.02, 11), param_range=(0.02, 0.02)
    )
    u = sampler.exact(torch.tensor([0.02])).double()[0]
    x = sampler.x.double()
    mass = ((u[:, 1:] + u[:, :-1]) / 2 * x.diff()).sum(-1)
    expected = true_mass("stefan", sampler.t, torch.tensor([0.02]))[0]
    torch.testing.assert_close(mass[1:], expected[1:], rtol=2e-2, atol=0)  # t = 0: a wall jump


def test_checkpoint_problems_are_reported(tmp_path):
    sampler = small_sampler(batch=2, n_target=10)
    run = tmp_path / "run"
    train_anp(small_model(), sampler, steps=4, seed=1, progress=False, out=run)
    with pytest.raises(CheckpointError, match="other data"):
        train_anp(small_model(), sampler, steps=4, seed=2, progress=False, out=run)
    with pytest.raises(CheckpointError, match="another model"):
        train_anp(small_model(hidden=16), sampler, steps=4, seed=1, progress=False, out=run)
    with pytest.raises(CheckpointError, match="other settings"):
        train_anp(small_model(), sampler, steps=4, lr=0.1, seed=1, progress=False, out=run)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match="is not a checkpoint of physml train .not a zip archive"
    ):
        train_anp(small_model(), sampler, steps=4, seed=1, progress=False, out=run)


def test_refusals_to_resume_name_the_python_argument_and_the_setting(tmp_path):
    sampler = small_sampler(batch=2, n_target=10)
    run = tmp_path / "run"
    settings = {"sampler": sampler, "steps": 4, "seed": 1, "progress": False, "out": run}
    train_anp(small_model(), **settings)
    refusals = [
        ({"seed": 2}, ["other data"]),
        ({"model": small_model(hidden=16)}, ["another model"]),
        ({"lr": 0.1}, ["other settings (lr 0.001 → 0.1)"]),
        ({"model": small_model(min_std=0.05)}, ["another model (settings.min_std 0.01 → 0.05)"]),
        ({"steps": 6}, ["(steps 4 → 6)", "cannot resume it. Ask for steps=4"]),
        ({"sampler": small_sampler(batch=4, n_target=10)}, ["(batch 2 → 4)"]),
    ]
    for change, expected in refusals:
        with pytest.raises(CheckpointError) as refusal:
            train_anp(**{"model": small_model(), **settings, **change})
        message = str(refusal.value)
        assert all(part in message for part in expected), message
        assert "another out= folder" in message and "--out" not in message
        assert "None →" not in message


def test_load_anp_gives_back_the_trained_model(tmp_path):
    sampler = small_sampler(batch=2, n_target=10)
    trained = small_model(input_range=sampler.input_range, min_std=0.05)
    train_anp(trained, sampler, steps=3, seed=1, progress=False, out=tmp_path / "run")
    loaded = load_anp(small_model(min_std=0.05, seed=7), tmp_path / "run")
    assert not loaded.training
    for key, value in trained.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    cx, cy, tx, _ = random_sets(2, 6, 5)
    with torch.no_grad():
        expected, got = trained(cx, cy, tx), loaded(cx, cy, tx)
    assert torch.equal(expected.mean, got.mean) and torch.equal(expected.cov, got.cov)
    with pytest.raises(CheckpointError, match=r"settings\.min_std 0\.05 → 0\.01"):
        load_anp(small_model(), tmp_path / "run")
    with pytest.raises(CheckpointError, match="another model than the one given"):
        load_anp(small_model(hidden=16, min_std=0.05), tmp_path / "run")


def test_load_anp_refuses_a_half_trained_run_unless_asked_for_it(tmp_path):
    sampler = small_sampler(batch=2, n_target=10)
    calls = []

    def killed_at_step_3(model, batch):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("killed")
        return torch.zeros(())

    trained = small_model()
    with pytest.raises(RuntimeError, match="killed"):
        train_anp(
            trained,
            sampler,
            steps=6,
            seed=1,
            progress=False,
            out=tmp_path / "run",
            loss_extra=killed_at_step_3,
            checkpoint_every=2,
        )
    with pytest.raises(CheckpointError, match=r"stopped at step 2 of the 6 steps planned"):
        load_anp(small_model(), tmp_path / "run")
    loaded = load_anp(small_model(seed=5), tmp_path / "run", partial=True)
    saved = load_checkpoint(tmp_path / "run")["model"]
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[f"model.{key}"]), key
    with pytest.raises(TypeError, match="partial must be True or False, got 'yes'"):
        load_anp(small_model(), tmp_path / "run", partial="yes")


def test_load_anp_takes_another_eval_samples_and_names_a_missing_or_foreign_run(tmp_path):
    sampler = small_sampler(batch=2, n_target=10)
    trained = small_model()
    train_anp(trained, sampler, steps=2, seed=1, progress=False, out=tmp_path / "run")
    loaded = load_anp(small_model(eval_samples=8, seed=3), tmp_path / "run")
    assert loaded.eval_samples == 8
    for key, value in trained.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    missing = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError, match=rf"out: no train_anp checkpoint .* in '{missing}'"):
        load_anp(small_model(), missing)
    inputs = torch.linspace(0.0, 1.0, 8).reshape(8, 1)
    fit_ensemble(DeepEnsemble(1, members=2), inputs, inputs[:, 0], epochs=1, out=tmp_path / "ens")
    with pytest.raises(CheckpointError, match=r"a run of DeepEnsemble, not a train_anp run"):
        load_anp(small_model(), tmp_path / "ens")


def test_a_run_with_another_penalty_is_not_resumed_as_this_one(tmp_path):
    sampler = small_sampler(batch=2, n_target=10)
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    x = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    settings = dict(steps=2, seed=1, progress=False, out=tmp_path / "softc")
    light = softc_loss_extra("diffusion", t, x, softc_weight=1e-3)
    done = train_anp(small_model(), sampler, loss_extra=light, **settings)
    again = softc_loss_extra("diffusion", t, x, softc_weight=1e-3)  # the same term: resumed
    assert train_anp(small_model(), sampler, loss_extra=again, **settings) == done
    with pytest.raises(CheckpointError, match=r"another model \(loss_extra\.weight 0\.001 → 1000"):
        heavy = softc_loss_extra("diffusion", t, x, softc_weight=1e3)
        train_anp(small_model(), sampler, loss_extra=heavy, **settings)
    with pytest.raises(CheckpointError, match="another model"):  # a term without a description
        train_anp(small_model(), sampler, loss_extra=lambda model, batch: 0.0, **settings)
    x_grid = "x [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] → [0.0, 0.4, 0.8, 1.2, 1.6, 2.0]"
    for other, change in (
        (softc_loss_extra("diffusion", t, 2 * x, softc_weight=1e-3), x_grid),
        (
            softc_loss_extra("diffusion", torch.linspace(0.0, 1.0, 3), x, softc_weight=1e-3),
            "t [0.0, 0.25, 0.5, 0.75, 1.0] → [0.0, 0.5, 1.0]",
        ),
        (softc_loss_extra("pme", t, x, softc_weight=1e-3), "softc 'diffusion' → 'pme'"),
    ):
        with pytest.raises(
            CheckpointError, match=re.escape(f"another model (loss_extra.{change});")
        ):
            train_anp(small_model(), sampler, loss_extra=other, **settings)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": -1}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"seed": -3}, ValueError, "seed"),
        ({"checkpoint_every": 0}, ValueError, "checkpoint_every"),
        ({"device": "bogus"}, ValueError, "device"),
        ({"loss_extra": 3}, TypeError, "loss_extra"),
        ({"sampler": "diffusion"}, TypeError, "sampler"),
        ({"model": torch.nn.Linear(2, 2)}, TypeError, "model"),
        (
            {"loss_extra": lambda model, batch: torch.tensor(float("nan"))},
            FloatingPointError,
            "the loss became nan",
        ),
    ],
)
def test_bad_training_arguments(kwargs, error, match):
    arguments = {"model": small_model(), "sampler": small_sampler(2, 10), "steps": 2}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        train_anp(progress=False, **arguments)


# --------------------------------------------------------------------------- GPME sampler


def test_sampler_follows_the_context_protocol():
    sampler = gpme_sampler("diffusion", 4, n_target=300)
    cx, cy, tx, ty, k = sampler(torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in (cx, cy, tx, ty, k)] == [
        (4, 100, 2),
        (4, 100),
        (4, 300, 2),
        (4, 300),
        (4,),
    ]
    assert all(v.dtype == torch.float32 for v in (cx, cy, tx, ty, k))
    assert ((k >= 1.0) & (k <= 5.0)).all() and k.unique().numel() == 4
    for b in range(4):
        times, places = cx[b, :, 0].unique(), cx[b, :, 1].unique()
        assert times.numel() == 10 and places.numel() == 10, "10 times × 10 x per function"
        assert tx[b].unique(dim=0).shape[0] == 300, "targets are distinct grid points"
    assert not torch.equal(cx[0], cx[1]), "each function draws its own context"
    for x, y in ((cx, cy), (tx, ty)):
        exact = torch.exp(-k[:, None].double() * x[..., 0].double()) * torch.sin(x[..., 1].double())
        torch.testing.assert_close(y.double(), exact, rtol=0, atol=1e-6)
    t_grid, x_grid = torch.linspace(0, 1, 201), torch.linspace(0, 2 * math.pi, 202)[:-1]
    on_t = (cx[..., 0, None] - t_grid).abs().min(-1).values
    on_x = (cx[..., 1, None] - x_grid).abs().min(-1).values
    assert on_t.max() < 1e-6 and on_x.max() < 1e-5, "context points lie on the 201 x 201 grid"


def test_sampler_is_deterministic_by_generator_and_full_grid_targets():
    sampler = small_sampler(batch=3, n_target=None)
    a = sampler(torch.Generator().manual_seed(4))
    b = sampler(torch.Generator().manual_seed(4))
    c = sampler(torch.Generator().manual_seed(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[4], c[4])
    tx = a[2]
    assert tx.shape == (3, 21 * 32, 2)
    torch.testing.assert_close(tx[0, :32, 0], torch.zeros(32))
    torch.testing.assert_close(tx[0, :32, 1], X_SMALL)
    torch.testing.assert_close(tx[0, ::32, 0], T_SMALL)


def test_pme_and_stefan_samplers_match_their_closed_forms():
    cx, cy, tx, ty, m = gpme_sampler("pme", 3, n_target=200)(torch.Generator().manual_seed(1))
    assert ((m >= 1.0) & (m <= 6.0)).all()
    lag = (tx[..., 0] - tx[..., 1]).double().clamp(min=0.0)
    exact = (m[:, None].double() * lag) ** (1.0 / m[:, None].double())
    torch.testing.assert_close(ty.double(), exact, rtol=0, atol=1e-5)

    sampler = gpme_sampler("stefan", 3, n_target=200, param_range=(0.6, 0.6))
    cx, cy, tx, ty, u_star = sampler(torch.Generator().manual_seed(2))
    torch.testing.assert_close(u_star, torch.full((3,), 0.6))
    z1 = stefan_z1(0.6)
    c1 = 0.4 / math.erf(z1)
    t, x = tx[..., 0].double(), tx[..., 1].double()
    behind = (t > 0) & (x < 2 * z1 * t.sqrt() - 1e-6)
    ahead = (t > 0) & (x > 2 * z1 * t.sqrt() + 1e-6)
    profile = 1.0 - c1 * torch.erf(x / (2.0 * t.clamp(min=1e-12).sqrt()))
    torch.testing.assert_close(ty.double()[behind], profile[behind], rtol=0, atol=1e-5)
    assert (ty[ahead] == 0).all() and behind.any() and ahead.any()
    assert tx[..., 0].max() <= 0.1 + 1e-7


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"case": "burgers"}, ValueError, "case must be one of"),
        ({"batch": 0}, ValueError, "batch"),
        ({"n_context": 95}, ValueError, "multiple of context_times"),
        ({"n_context": 300, "context_times": 300}, ValueError, "grid of at least"),
        ({"n_target": 201 * 201 + 1}, ValueError, "n_target"),
        ({"param_range": (-1.0, 5.0)}, ValueError, "k_min"),
        ({"param_range": (4.0, 2.0)}, ValueError, "k_max"),
        ({"param_range": 3.0}, TypeError, "param_range"),
        ({"case": "stefan", "param_range": (0.5, 1.5)}, ValueError, "u_star_max"),
        ({"t_grid": [0.0, 0.5, 0.2]}, ValueError, "t_grid must be strictly increasing"),
        ({"x_grid": [0.0, float("nan"), 1.0]}, ValueError, "x_grid contains NaN"),
        ({"t_grid": [-1.0, 0.0, 1.0]}, ValueError, "t_grid must be >= 0"),
    ],
)
def test_bad_sampler_arguments(kwargs, error, match):
    arguments = {"case": "diffusion", "batch": 2}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        gpme_sampler(**arguments)


def test_a_front_leaving_before_t_grid_ends_is_named_by_t_grid():
    """The recipe judges its t_end; the sampler's user gave t_grid, so the refusal names t_grid.
    u* = 0.6 (both bounds): the front 2 z1 √t reaches x = 1 at t = 1 / (4 z1²)."""
    leaves = 1.0 / (4.0 * stefan_z1(0.6) ** 2)
    end = 1.5 * leaves
    with pytest.raises(ValueError, match=rf"^t_grid ends at {end:g}: t_end must be <= "):
        gpme_sampler("stefan", 1, t_grid=torch.linspace(0, end, 11), param_range=(0.6, 0.6))
    gpme_sampler("stefan", 1, t_grid=torch.linspace(0, 0.99 * leaves, 11), param_range=(0.6, 0.6))


def test_pme_refuses_a_t_grid_ending_after_its_front_leaves_by_t_grid():
    """PME's front x = t leaves [0, 1] at t = 1 (whatever m): a t_grid ending later is refused
    naming t_grid and its end, one ending there is drawn from."""
    with pytest.raises(ValueError, match=r"^t_grid ends at 1.5: t_end must be <= 1 "):
        gpme_sampler("pme", 1, t_grid=torch.linspace(0, 1.5, 11), x_grid=torch.linspace(0, 1, 11))
    gpme_sampler("pme", 1, t_grid=torch.linspace(0, 1.0, 11), x_grid=torch.linspace(0, 1, 11))


def test_the_sampler_names_t_grid_by_the_setting_the_recipe_refused_not_by_its_wording(
    monkeypatch,
):
    """Reworded recipe messages still name t_grid; a refusal of another setting passes as is."""
    from pdes.errors import SettingError
    from pdes.gpme import PMERecipe

    def reworded(self, t_end, low, high):
        if t_end > 0.25:
            raise SettingError("t_end", f"the front leaves [0, 1] before {t_end}")

    monkeypatch.setattr(PMERecipe, "check_front", reworded)
    with pytest.raises(ValueError, match=r"^t_grid ends at 0.5: the front leaves \[0, 1\]"):
        gpme_sampler("pme", 1, t_grid=torch.linspace(0, 0.5, 11), x_grid=torch.linspace(0, 1, 11))

    def other(self, t_end, low, high):
        if t_end > 0.25:
            raise SettingError("m_max", "t_end-like wording about m_max")

    monkeypatch.setattr(PMERecipe, "check_front", other)
    with pytest.raises(SettingError, match=r"^t_end-like wording about m_max$"):
        gpme_sampler("pme", 1, t_grid=torch.linspace(0, 0.5, 11), x_grid=torch.linspace(0, 1, 11))


def test_sampler_needs_a_generator():
    with pytest.raises(TypeError, match="generator"):
        small_sampler()(0)


# --------------------------------------------------------------------------- SoftC


def diffusion_grid(n: int, k: torch.Tensor):
    t = torch.linspace(0.0, 0.5, n + 1, dtype=torch.float64)
    x = torch.linspace(0.0, 2 * math.pi, 2 * n + 1, dtype=torch.float64)
    u = torch.exp(-k[:, None, None] * t[None, :, None]) * torch.sin(x)[None, None, :]
    return t, x, u


def test_softc_residual_vanishes_at_second_order_on_the_exact_diffusion_solution():
    k = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
    rms = []
    for n in (10, 20, 40, 80):
        t, x, u = diffusion_grid(n, k)
        rms.append(softc_residual_loss(u.reshape(3, -1), t, x, "diffusion", k).sqrt().item())
    orders = [math.log2(a / b) for a, b in zip(rms[:-1], rms[1:], strict=True)]
    assert min(orders) > 1.8, (rms, orders)
    # u_t alone has rms ~ k e^{-kt}/√2: the finest residual is a tiny fraction of it
    assert rms[-1] < 1e-2

    t, x, u = diffusion_grid(80, k)
    perturbed = u + 0.05 * torch.sin(2 * x) * t[:, None]
    assert softc_residual_loss(perturbed, t, x, "diffusion", k).sqrt() > 0.02
    wrong_k = softc_residual_loss(u, t, x, "diffusion", k + 1.0).sqrt()
    assert wrong_k > 100 * rms[-1]


def test_residual_uses_the_kirchhoff_potential_for_pme_and_stefan():
    # PME with m = 1: u = (t - x)_+ and Φ = u²/2 are polynomials behind the front, so the
    # central differences are exact there: u_t = 1 = Φ_xx.
    t = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    x = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    u = (t[:, None] - x[None, :]).clamp(min=0.0)[None]
    r = gpme_residual(u, t, x, "pme", 1.0)[0]
    behind = t[:-2, None] - x[None, 2:] > 1e-9
    assert behind.sum() > 100
    assert r[behind].abs().max() < 1e-9
    wrong = gpme_residual(u, t, x, "pme", 2.0)[0]  # Φ = u³/3: Φ_xx = 2u ≠ u_t
    torch.testing.assert_close(wrong[behind], 1.0 - 2.0 * u[0, 1:-1, 1:-1][behind])

    # Stefan behind the front: Φ = u − u*, so the residual is the heat equation's, O(h²)
    errors = []
    for n in (40, 80, 160):
        t = torch.linspace(0.02, 0.1, n + 1, dtype=torch.float64)
        x = torch.linspace(0.0, 1.0, 2 * n + 1, dtype=torch.float64)
        u = stefan_exact(x, t, 0.6)
        r = gpme_residual(u, t, x, "stefan", torch.tensor([0.6]))[0]
        front = 2 * stefan_z1(0.6) * t[:-2].sqrt()
        inside = x[None, 2:] < front[:, None] - 1e-9
        errors.append(r[inside].abs().max().item())
    assert errors[0] / errors[1] > 3.5 and errors[1] / errors[2] > 3.5, errors


def test_softc_loss_extra_matches_the_residual_of_the_grid_prediction():
    model = small_model()
    t = torch.linspace(0.0, 1.0, 6)
    x = torch.linspace(0.0, 2 * math.pi, 9)
    extra = softc_loss_extra("diffusion", t, x, softc_weight=0.3)
    batch = small_sampler(batch=2, n_target=10)(torch.Generator().manual_seed(0))
    value = extra(model, batch)
    points = torch.stack(torch.meshgrid(t, x, indexing="ij"), dim=-1).reshape(-1, 2)
    mean = model(batch[0], batch[1], points.expand(2, -1, -1)).mean.reshape(2, 6, 9)
    dt, dx = t[1] - t[0], x[1] - x[0]
    phi = batch[4][:, None, None] * mean
    u_t = (mean[:, 2:, 1:-1] - mean[:, :-2, 1:-1]) / (2 * dt)
    phi_xx = (phi[:, 1:-1, 2:] - 2 * phi[:, 1:-1, 1:-1] + phi[:, 1:-1, :-2]) / dx**2
    expected = 0.3 * (u_t - phi_xx).square().mean()
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)
    value.backward()
    assert next(model.decoder.parameters()).grad.abs().sum() > 0
    losses = train_anp(model, small_sampler(2, 10), steps=3, progress=False, loss_extra=extra)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(2, 30), torch.linspace(0, 1, 5), torch.linspace(0, 1, 5)), ValueError, "u"),
        (
            (torch.zeros(2, 5, 5), torch.linspace(0, 1, 2), torch.linspace(0, 1, 5)),
            ValueError,
            ">= 3",
        ),
        (
            (
                torch.zeros(2, 5, 5),
                torch.tensor([0.0, 0.1, 0.5, 0.6, 1.0]),
                torch.linspace(0, 1, 5),
            ),
            ValueError,
            "uniformly spaced",
        ),
        (
            (torch.full((2, 5, 5), float("nan")), torch.linspace(0, 1, 5), torch.linspace(0, 1, 5)),
            ValueError,
            "NaN",
        ),
        ("params3", ValueError, "params"),
        ("case", ValueError, "case must be one of"),
        ("negative_k", ValueError, "k"),
        ("list", TypeError, "u must be a torch.Tensor"),
    ],
)
def test_bad_residual_arguments(args, error, match):
    t = x = torch.linspace(0, 1, 5)
    u = torch.zeros(2, 5, 5)
    if args == "params3":
        call = (u, t, x, "diffusion", torch.ones(3))
    elif args == "case":
        call = (u, t, x, "heat", torch.ones(2))
    elif args == "negative_k":
        call = (u, t, x, "diffusion", -torch.ones(2))
    elif args == "list":
        call = (u.tolist(), t, x, "diffusion", torch.ones(2))
    else:
        call = (*args, "diffusion", torch.ones(2))
    with pytest.raises(error, match=match):
        softc_residual_loss(*call)


def test_bad_softc_extra_arguments():
    t = x = torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="softc_weight"):
        softc_loss_extra("diffusion", t, x, softc_weight=-1.0)
    with pytest.raises(ValueError, match="case"):
        softc_loss_extra("heat", t, x)
    with pytest.raises(ValueError, match=">= 3"):
        softc_loss_extra("diffusion", t[:2], x)


def test_softc_extra_refuses_an_uneven_grid_when_built():
    even = torch.linspace(0.0, 1.0, 5)
    uneven = torch.tensor([0.0, 0.1, 0.5, 0.6, 1.0])
    with pytest.raises(ValueError, match="t must be uniformly spaced"):
        softc_loss_extra("diffusion", uneven, even)
    with pytest.raises(ValueError, match="x must be uniformly spaced"):
        softc_loss_extra("diffusion", even, uneven)


def test_softc_extra_uses_the_latent_mean_whatever_eval_samples_says():
    t, x = torch.linspace(0.0, 1.0, 4), torch.linspace(0.0, 1.0, 5)
    extra = softc_loss_extra("diffusion", t, x)
    batch = small_sampler(batch=2, n_target=10)(torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    sampling = extra(small_model(eval_samples=3), batch)
    torch.manual_seed(1)
    assert torch.equal(sampling, extra(small_model(eval_samples=3), batch))
    torch.testing.assert_close(sampling, extra(small_model(), batch), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------- bad input


def bad(name):
    cx, cy, tx, ty = random_sets(2, 5, 4)
    cases = {
        "context_y length": ((cx, cy[:, :4], tx), ValueError, "context_y must have shape"),
        "target batch": ((cx, cy, tx[:1]), ValueError, "target_x must have batch size 2"),
        "coordinates": ((cx[..., :1], cy, tx), ValueError, "2 coordinates"),
        "context_x rank": ((cx[0], cy, tx), ValueError, "context_x must have shape"),
        "nan context": (
            (cx, torch.where(cy > 0, float("nan"), cy), tx),
            ValueError,
            "context_y contains NaN",
        ),
        "inf target": ((cx, cy, tx.clone().fill_(float("inf"))), ValueError, "target_x contains"),
        "empty context": ((cx[:, :0], cy[:, :0], tx), ValueError, "empty context"),
        "empty targets": ((cx, cy, tx[:, :0]), ValueError, "at least one target"),
        "empty batch": ((cx[:0], cy[:0], tx[:0]), ValueError, "batch >= 1"),
        "not a tensor": ((cx.tolist(), cy, tx), TypeError, "context_x must be a torch.Tensor"),
        "complex": ((cx, cy.to(torch.complex64), tx), TypeError, "real numbers"),
    }
    return cases[name]


@pytest.mark.parametrize(
    "name",
    [
        "context_y length",
        "target batch",
        "coordinates",
        "context_x rank",
        "nan context",
        "inf target",
        "empty context",
        "empty targets",
        "empty batch",
        "not a tensor",
        "complex",
    ],
)
def test_bad_model_input(name):
    args, error, match = bad(name)
    model = small_model()
    with pytest.raises(error, match=match):
        model(*args)


def test_bad_targets_and_samples():
    model = small_model()
    cx, cy, tx, ty = random_sets(2, 5, 4)
    with pytest.raises(ValueError, match="target_y must have shape"):
        model.elbo_loss(cx, cy, tx, ty[:, :3])
    with pytest.raises(ValueError, match="target_y contains NaN"):
        model.elbo_loss(cx, cy, tx, ty * float("nan"))
    with pytest.raises(ValueError, match="samples"):
        model(cx, cy, tx, samples=-1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"hidden": 33, "heads": 2}, ValueError, "divisible by heads"),
        ({"hidden": 0}, ValueError, "hidden"),
        ({"min_std": 0.0}, ValueError, "min_std"),
        ({"input_range": ((0.0, 1.0),)}, ValueError, "input_range"),
        ({"input_range": ((0.0, 1.0), (2.0, 2.0))}, ValueError, "low < high"),
        ({"input_range": "abc"}, TypeError, "input_range"),
        ({"eval_samples": -1}, ValueError, "eval_samples"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AttentiveNeuralProcess(**kwargs)


def test_input_range_is_part_of_the_saved_state():
    model = small_model(input_range=((0.0, 1.0), (0.0, 2 * math.pi)))
    copy = small_model()
    copy.load_state_dict(model.state_dict())
    cx, cy, tx, _ = random_sets(1, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(cx, cy, tx).mean, copy(cx, cy, tx).mean)


def test_anp_elbo_is_nll_plus_kl_by_torch_distributions():
    """The training loss against torch.distributions: the Gaussian likelihood of the targets
    plus KL(q(z | C ∪ T) ‖ q(z | C)), per target point, averaged over functions."""
    model = small_model().double()
    cx, cy, tx, ty = (a.double() for a in random_sets(3, 9, 11))
    noise = torch.randn(
        3, model.latent, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    loss, _ = model.elbo_loss(cx, cy, tx, ty, noise=noise)
    ncx, ntx = model._normalise(cx), model._normalise(tx)
    r = model._representation(ncx, cy, ntx)
    pm, ps = model._latent(ncx, cy)
    qm, qs = model._latent(torch.cat([ncx, ntx], 1), torch.cat([cy, ty], 1))
    m, s = model._decode(ntx, r, qm + qs * noise)
    normal = torch.distributions.Normal
    nll = -normal(m, s).log_prob(ty).sum(-1)
    kl = torch.distributions.kl_divergence(normal(qm, qs), normal(pm, ps)).sum(-1)
    torch.testing.assert_close(loss, ((nll + kl) / 11).mean(), rtol=1e-12, atol=0)
