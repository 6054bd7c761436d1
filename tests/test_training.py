"""The one Trainer: bitwise resume after a crash, data fingerprints, bad settings, two processes."""

import contextlib
import dataclasses
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from damage import flip_a_bit_of_a_zip_entry
from torch import nn
from torch.utils.data import Dataset, TensorDataset, default_collate
from two_ranks import leave

from physml.data import gpme_sampler
from physml.models import AttentiveNeuralProcess, DeepEnsemble
from physml.models.baselines import Persistence
from physml.training import (
    CheckpointError,
    MemberRows,
    TrainConfig,
    Trainer,
    fit_ensemble,
    load_checkpoint,
    train_anp,
)
from physml.training.checkpoint import REMEDY
from physml.training.forecasting import train_forecaster
from physml.training.trainer import _batch

F64 = torch.float64


def data(seed=0, n=24):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, generator=gen)
    return TensorDataset(x, x.roll(1, -1) * 0.5 + 0.1)


def model(dropout=0.1):
    torch.manual_seed(1)
    layers = [nn.Conv1d(1, 8, 3, padding=1), nn.Dropout(dropout), nn.GELU(), nn.Conv1d(8, 1, 1)]
    return nn.Sequential(*layers)


def mse(net, batch):
    x, y = batch
    return (net(x) - y).square().mean()


CONFIG = TrainConfig(steps=12, batch=6, lr=1e-2, clip=1.0, checkpoint_every=4, seed=3)


class Crash(Exception):
    pass


def crashing(at_step):
    calls = {"n": 0}

    def loss(net, batch):
        calls["n"] += 1
        if calls["n"] > at_step:
            raise Crash
        return mse(net, batch)

    return loss


def test_after_step_sees_every_step_once_and_its_state_resumes_with_the_model(tmp_path):
    class Averaged(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model()
            self.register_buffer("updates", torch.zeros(()))

        def forward(self, x):
            return self.net(x)

    seen = []

    def count(net, step):
        seen.append(step)
        net.updates += 1

    with pytest.raises(Crash):
        Trainer(Averaged(), crashing(7), CONFIG, tmp_path, quiet=True, after_step=count).fit(data())
    resumed = Averaged()
    Trainer(resumed, mse, CONFIG, tmp_path, quiet=True, after_step=count).fit(data())
    assert seen == list(range(1, 8)) + list(range(5, 13))
    assert int(resumed.updates) == CONFIG.steps
    with pytest.raises(TypeError, match="after_step"):
        Trainer(model(), mse, CONFIG, after_step=3)


NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def test_a_run_resumed_after_a_crash_is_bitwise_the_uninterrupted_run(
    tmp_path, device, monkeypatch
):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    config = dataclasses.replace(CONFIG, device=device)  # dropout draws from the device's RNG
    whole = Trainer(model(), mse, config, tmp_path / "whole", quiet=True)
    report = whole.fit(data())
    with pytest.raises(Crash):
        Trainer(model(), crashing(7), config, tmp_path / "cut", quiet=True).fit(data())
    assert load_checkpoint(tmp_path / "cut")["step"] == 4
    resumed_model = model()
    resumed = Trainer(resumed_model, mse, config, tmp_path / "cut", quiet=True).fit(data())
    assert resumed.resumed_from == 4
    assert resumed.losses == report.losses
    for a, b in zip(
        whole.model.state_dict().values(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert report.losses[-1] < report.losses[0]


def test_resuming_on_other_data_or_another_model_is_an_error(tmp_path):
    Trainer(model(), mse, CONFIG, tmp_path, model_config={"name": "a"}, quiet=True).fit(data())
    with pytest.raises(CheckpointError, match="other data.*sample_hash"):
        Trainer(model(), mse, CONFIG, tmp_path, model_config={"name": "a"}, quiet=True).fit(
            data(seed=9)
        )
    with pytest.raises(CheckpointError, match="samples 24 → 30"):
        Trainer(model(), mse, CONFIG, tmp_path, model_config={"name": "a"}, quiet=True).fit(
            data(n=30)
        )
    with pytest.raises(CheckpointError, match=r"another model \(name 'a' → 'b'\)"):
        Trainer(model(), mse, CONFIG, tmp_path, model_config={"name": "b"}, quiet=True).fit(data())
    other = {"name": "a", "options": {"hidden": 8}}  # and other data: the model is named first
    with pytest.raises(CheckpointError, match=r"another model \(options None → \{'hidden': 8\}"):
        Trainer(model(), mse, CONFIG, tmp_path, model_config=other, quiet=True).fit(data(n=30))


def test_resuming_with_another_validation_set_is_an_error_once_losses_on_it_are_kept(tmp_path):
    config = dataclasses.replace(CONFIG, validate_every=4)

    def crash_at_6(net, step):
        if step == 6:
            raise Crash

    crashed = Trainer(model(), mse, config, tmp_path, quiet=True, after_step=crash_at_6)
    with pytest.raises(Crash):
        crashed.fit(data(), data(seed=5))
    with pytest.raises(CheckpointError, match="another validation set.*sample_hash"):
        Trainer(model(), mse, config, tmp_path, quiet=True).fit(data(), data(seed=6))

    def crash_at_10(net, step):
        if step == 10:
            raise Crash

    with pytest.raises(Crash):  # a stretch without validation keeps the set the losses are on
        Trainer(model(), mse, config, tmp_path, quiet=True, after_step=crash_at_10).fit(data())
    with pytest.raises(CheckpointError, match="another validation set"):
        Trainer(model(), mse, config, tmp_path, quiet=True).fit(data(), data(seed=6))
    report = Trainer(model(), mse, config, tmp_path, quiet=True).fit(data(), data(seed=5))
    assert [step for step, _ in report.validation] == [4, 12]
    Trainer(model(), mse, CONFIG, tmp_path / "plain", quiet=True).fit(data())  # none kept yet
    Trainer(model(), mse, config, tmp_path / "plain", quiet=True).fit(data(), data(seed=6))


def test_another_model_is_reported_by_the_settings_that_differ():
    from physml.training.checkpoint import check_same_model

    saved = {"model": "fno", "options": {"hidden": 32, "modes": 8}, "task": "operator"}
    check_same_model({"model_config": saved}, dict(saved), "run")
    changed = {**saved, "options": {"hidden": 8, "modes": 8}}
    with pytest.raises(CheckpointError, match=r"another model \(options.hidden 32 → 8\);"):
        check_same_model({"model_config": saved}, changed, "run")


def test_the_resume_checks_take_the_remedy_a_caller_without_out_advises():
    """A Python API has no --out flag: the checks advise what the caller says, and still name
    each difference; recorded losses may be a tensor of (step, loss) rows under another key."""
    from physml.training.checkpoint import (
        check_same_data,
        check_same_model,
        check_same_validation,
    )

    saved = {"samples": 4, "sample_hash": "aa"}
    current = {"samples": 4, "sample_hash": "bb"}
    state = {
        "fingerprint": saved,
        "validation_fingerprint": saved,
        "val_losses": torch.tensor([[1.0, 0.5]]),
        "model_config": {"base": 4},
    }
    remedy = "use another checkpoint path"
    checks = [
        (lambda: check_same_data(state, current, "run.pt", remedy), "other data"),
        (
            lambda: check_same_validation(
                state, current, "run.pt", remedy, losses_key="val_losses"
            ),
            "another validation set",
        ),
        (lambda: check_same_model(state, {"base": 8}, "run.pt", remedy), r"base 4 → 8"),
    ]
    for check, difference in checks:
        with pytest.raises(CheckpointError, match=difference) as refused:
            check()
        message = str(refused.value)
        assert "--out" not in message and "another checkpoint path" in message, message
        if difference != r"base 4 → 8":
            assert "sample_hash 'aa' → 'bb'" in message
    nothing_recorded = {**state, "val_losses": torch.zeros(0, 2)}
    check_same_validation(nothing_recorded, current, "run.pt", remedy, losses_key="val_losses")
    with pytest.raises(CheckpointError, match="Use another --out"):  # physml train's default
        check_same_data(state, current, "run")


class Described(TensorDataset):
    """A dataset with a file's description, as the datasets read from files carry."""

    def __init__(self, attributes: dict, **kwargs) -> None:
        super().__init__(*data(**kwargs).tensors)
        self.attributes = attributes


def test_resuming_on_another_pde_names_the_pdes_before_the_model(tmp_path):
    """Another PDE's data builds another model and differs in every attribute: the PDE is named,
    in the Python caller's words (out=, the training data), not physml train's flags."""
    heat, burgers = Described({"pde": "heat"}), Described({"pde": "burgers"}, seed=2)
    Trainer(model(), mse, CONFIG, tmp_path, model_config={"name": "a"}, quiet=True).fit(heat)
    with pytest.raises(CheckpointError) as refused:
        Trainer(model(), mse, CONFIG, tmp_path, model_config={"name": "b"}, quiet=True).fit(burgers)
    assert str(refused.value) == (
        f"checkpoint: {str(tmp_path)!r} was trained on 'heat' solutions, but this training data "
        "holds 'burgers' ones; refusing to resume. Use another out= folder, or the data it was "
        "made on."
    )
    with pytest.raises(CheckpointError, match=r"another model \(name 'a' → 'b'\)"):
        Trainer(model(), mse, CONFIG, tmp_path, model_config={"name": "b"}, quiet=True).fit(heat)


def test_the_same_data_packaged_again_resumes_and_other_settings_do_not(tmp_path):
    first = {"pde": "heat", "seed": 0, "created": "2026-12-06T02:28:23+00:00"}
    config = dataclasses.replace(CONFIG, steps=4, schedule="constant")
    Trainer(model(), mse, config, tmp_path, quiet=True).fit(Described(first))
    again = dict(first, created="2026-12-06T02:51:12+00:00", merged_from='["a.h5", "b.h5"]')
    longer = dataclasses.replace(config, steps=8)
    report = Trainer(model(), mse, longer, tmp_path, quiet=True).fit(Described(again))
    assert report.resumed_from == 4
    with pytest.raises(CheckpointError, match="attribute 'seed' 0 → 1"):
        Trainer(model(), mse, longer, tmp_path, quiet=True).fit(Described(dict(first, seed=1)))


def test_validation_and_checkpoint_contents(tmp_path):
    config = TrainConfig(steps=6, batch=4, validate_every=3, checkpoint_every=3)
    report = Trainer(model(), mse, config, tmp_path, quiet=True).fit(data(), data(seed=5, n=10))
    assert [step for step, _ in report.validation] == [3, 6]
    state = load_checkpoint(tmp_path)
    assert state["step"] == 6 and state["fingerprint"]["samples"] == 24
    assert set(state) >= {"model", "optimizer", "rng", "config", "losses", "fingerprint"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"batch": 2.5}, "batch must be an integer"),  # a TypeError, see below
        ({"accumulate": 0}, "accumulate must be an integer >= 1"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"clip": -1.0}, "clip must be a finite number > 0 or None"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"device": "bogus"}, "device must be"),
    ],
)
def test_bad_settings(kwargs, match):
    error = TypeError if kwargs == {"batch": 2.5} else ValueError
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


WRONG_TYPES = {
    "steps": ["2", 2.0, True],
    "batch": ["2", 2.5, np.True_],
    "accumulate": [1.0, True],
    "lr": ["0.1", True, np.True_, None],
    "schedule": [1, None, ["cosine"]],
    "clip": ["1", True],
    "weight_decay": ["0", False, None],
    "seed": [1.0, True],
    "checkpoint_every": ["1", None],
    "validate_every": [None, False],
    "device": [0, None, ["cpu"]],
    "budget_s": ["5", True, np.True_],
    "clock": [1, None, ["wall"]],
}
"""Values of the wrong type for every TrainConfig field: text, booleans (no numbers), floats
where an integer is wanted, None where it means nothing, other types where a name is wanted."""
OUT_OF_RANGE = {
    "steps": 0,
    "batch": 0,
    "accumulate": 0,
    "lr": 0.0,
    "schedule": "linear",
    "clip": float("nan"),
    "weight_decay": -1.0,
    "seed": 2**63,
    "checkpoint_every": 0,
    "validate_every": -1,
    "device": "gpu",
    "budget_s": -1.0,
    "clock": "gpu",
}
"""A value of the right type out of range for every TrainConfig field."""


def test_the_bad_setting_tables_cover_every_field():
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    assert set(WRONG_TYPES) == set(OUT_OF_RANGE) == names


@pytest.mark.parametrize(
    "name, value", [(name, value) for name, values in WRONG_TYPES.items() for value in values]
)
def test_a_setting_of_the_wrong_type_is_a_type_error_naming_it(name, value):
    """The message names the setting, what it must be and the value given."""
    with pytest.raises(TypeError, match=rf"^{name} must be .+, got {re.escape(repr(value))}"):
        TrainConfig(**{name: value})


@pytest.mark.parametrize("name, value", OUT_OF_RANGE.items())
def test_a_setting_of_the_right_type_out_of_range_is_a_value_error_naming_it(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be .+, got {re.escape(repr(value))}"):
        TrainConfig(**{name: value})


def _with_switch(function: str, value: object) -> None:
    """Call ``function`` (a public training entry point) on toy inputs with ``value`` as its
    progress switch (``quiet`` or ``progress``); a fit_ensemble refused leaves the ensemble's
    weights as they were."""
    if function == "Trainer":
        Trainer(model(), mse, CONFIG, quiet=value)
    elif function == "train_forecaster":  # no trainable parameters: returned before any Trainer
        frames = torch.zeros(2, 1, 1, 4, 4)
        train_forecaster(Persistence(1), frames, frames, max_steps=1, quiet=value)
    elif function == "train_anp":
        anp = AttentiveNeuralProcess(hidden=8, latent=8, attention_layers=1, seed=0)
        train_anp(anp, gpme_sampler("diffusion", 2), steps=1, progress=value)
    else:
        ensemble = DeepEnsemble(1, members=2, width=4, depth=1)
        before = {key: tensor.clone() for key, tensor in ensemble.state_dict().items()}
        try:
            fit_ensemble(ensemble, torch.zeros(4, 1), torch.zeros(4), epochs=1, progress=value)
        finally:
            after = ensemble.state_dict()
            assert all(torch.equal(before[key], after[key]) for key in before)


@pytest.mark.parametrize("value", ["no", "False", 1, 0, None, torch.tensor(True)])
@pytest.mark.parametrize(
    "function, name",
    [
        ("Trainer", "quiet"),
        ("train_forecaster", "quiet"),
        ("train_anp", "progress"),
        ("fit_ensemble", "progress"),
    ],
)
def test_a_progress_switch_that_is_no_bool_is_refused_by_name(function, name, value):
    """Truthy or not, what is no True or False is a TypeError naming the argument."""
    message = rf"^{name} must be True or False, got {re.escape(repr(value))}$"
    with pytest.raises(TypeError, match=message):
        _with_switch(function, value)


def test_bad_runs(tmp_path):
    with pytest.raises(ValueError, match="exceeds the 24 training samples"):
        Trainer(model(), mse, TrainConfig(batch=30), quiet=True).fit(data())
    with pytest.raises(
        ValueError, match=r"batch \(6\) must be divisible by the 1 processes × accumulate \(4\)"
    ):
        Trainer(model(), mse, TrainConfig(batch=6, accumulate=4), quiet=True).fit(data())
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match="is not a checkpoint of physml train .not a zip archive"
    ):
        Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            TrainConfig(device="cuda")


def test_bad_trainer_arguments_are_named():
    with pytest.raises(TypeError, match=r"quiet must be True or False, got 'no'"):
        Trainer(model(), mse, CONFIG, quiet="no")
    with pytest.raises(TypeError, match=r"train must be a dataset .* got NoneType"):
        Trainer(model(), mse, CONFIG, quiet=True).fit(None)
    with pytest.raises(ValueError, match="train must hold at least one sample"):
        Trainer(model(), mse, CONFIG, quiet=True).fit(TensorDataset(torch.zeros(0, 1, 16)))
    with pytest.raises(TypeError, match=r"validation must be a dataset .* got int"):
        Trainer(model(), mse, CONFIG, quiet=True).fit(data(), 5)


@pytest.mark.parametrize(
    "loss",
    [
        lambda net, batch: batch[1].square().mean(),  # the batch alone
        lambda net, batch: mse(net, batch).detach(),
    ],
    ids=["data-only", "detached"],
)
def test_a_loss_without_gradient_is_refused_by_name(loss):
    with pytest.raises(ValueError, match=r"loss\(model, batch\) must depend on the model's"):
        Trainer(model(), loss, CONFIG, quiet=True).fit(data())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str, queue) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank)
    )
    torch.set_num_threads(1)
    net = model(dropout=0.0)
    report = Trainer(net, mse, CONFIG, out, quiet=True).fit(data())
    if rank == 0:
        queue.put((report.losses, [p.detach().tolist() for p in net.parameters()]))
    leave(queue)


def test_two_gloo_processes_match_one_with_the_same_global_batch(tmp_path):
    """Each rank draws its own dropout masks, so the comparison uses a model without dropout."""
    one = model(dropout=0.0)
    single = Trainer(one, mse, CONFIG, tmp_path / "one", quiet=True).fit(data())
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    processes = [
        context.Process(target=_rank, args=(r, 2, port, str(tmp_path / "two"), queue))
        for r in range(2)
    ]
    for process in processes:
        process.start()
    losses, parameters = queue.get(timeout=120)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(losses) == len(single.losses)
    relative = max(abs(a - b) / abs(b) for a, b in zip(losses, single.losses, strict=True))
    assert relative <= 1e-5
    for p, q in zip(parameters, one.parameters(), strict=True):
        assert torch.allclose(torch.tensor(p), q, rtol=1e-5, atol=1e-6)
    # the rank-0 checkpoint loads into a single process
    state = load_checkpoint(tmp_path / "two")
    model().load_state_dict(state["model"])
    # one process adding the same two micro-batches in the same order: the same bits
    split = model(dropout=0.0)
    config = dataclasses.replace(CONFIG, accumulate=2)
    accumulated = Trainer(split, mse, config, tmp_path / "split", quiet=True).fit(data())
    assert accumulated.losses == losses
    for p, q in zip(parameters, split.parameters(), strict=True):
        assert torch.equal(torch.tensor(p, dtype=q.dtype), q)


def _refused_rank(rank: int, world: int, port: int, out: str, queue) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank)
    )
    torch.set_num_threads(1)
    try:
        Trainer(model(dropout=0.0), mse, CONFIG, out, quiet=True).fit(data())
        queue.put((rank, "trained"))
    except OSError as error:
        queue.put((rank, str(error)))
    leave(queue)


def test_every_rank_is_refused_a_run_folder_another_run_holds(tmp_path):
    """Rank 0 takes the lock and tells the others: no rank waits on a collective forever."""
    from physml._io import exclusive_lock
    from physml.training.trainer import LOCK

    context, port = mp.get_context("spawn"), _free_port()
    queue = context.Queue()
    with exclusive_lock(tmp_path / LOCK, "the test's hold"):
        processes = [
            context.Process(target=_refused_rank, args=(r, 2, port, str(tmp_path), queue))
            for r in range(2)
        ]
        for process in processes:
            process.start()
        answers = dict(queue.get(timeout=120) for _ in processes)
        for process in processes:
            process.join(timeout=60)
    assert "is being written by another process" in answers[0]
    assert answers[1].startswith("rank 0 could not take the run folder: out: the run folder")
    assert not (tmp_path / "checkpoint.pt").exists()


def test_accumulated_micro_batches_take_the_whole_batch_step():
    """Micro-batch gradients add up to the whole batch's (to rounding); the loss is their mean."""
    whole, split = model(dropout=0.0), model(dropout=0.0)
    one = Trainer(whole, mse, CONFIG, quiet=True).fit(data())
    three = Trainer(split, mse, dataclasses.replace(CONFIG, accumulate=3), quiet=True).fit(data())
    assert max(abs(a - b) / b for a, b in zip(three.losses, one.losses, strict=True)) < 1e-5
    for p, q in zip(whole.parameters(), split.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)


def test_checkpoints_written_before_accumulate_existed_still_resume(tmp_path):
    with pytest.raises(Crash):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(data())
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["config"]["accumulate"]
    torch.save(state, tmp_path / "checkpoint.pt")
    report = Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data())
    assert report.resumed_from == 4 and len(report.losses) == CONFIG.steps


def test_a_checkpoint_beyond_the_steps_asked_for_is_an_error(tmp_path):
    constant = dataclasses.replace(CONFIG, schedule="constant")
    Trainer(model(), mse, constant, tmp_path, quiet=True).fit(data())
    with pytest.raises(CheckpointError, match="at step 12, beyond the 8 steps"):
        Trainer(model(), mse, dataclasses.replace(constant, steps=8), tmp_path, quiet=True).fit(
            data()
        )


def test_a_constant_schedule_run_may_be_extended(tmp_path):
    constant = dataclasses.replace(CONFIG, steps=4, schedule="constant")
    Trainer(model(), mse, constant, tmp_path, quiet=True).fit(data())
    report = Trainer(
        model(), mse, dataclasses.replace(constant, steps=8), tmp_path, quiet=True
    ).fit(data())
    assert report.resumed_from == 4 and len(report.losses) == 8


@pytest.mark.parametrize("crash", [None, 5], ids=["finished", "crashed"])
def test_a_cosine_schedule_run_resumed_for_other_steps_is_an_error(tmp_path, crash):
    """The cosine schedule decays over ``steps``: extending (or shortening) a run on it would
    give neither the saved schedule nor that of a fresh run of the new length."""
    with contextlib.suppress(Crash):
        Trainer(
            model(), mse if crash is None else crashing(crash), CONFIG, tmp_path, quiet=True
        ).fit(data())
    step = load_checkpoint(tmp_path)["step"]
    for steps in (CONFIG.steps + 4, CONFIG.steps - 4):
        with pytest.raises(CheckpointError) as error:
            Trainer(
                model(), mse, dataclasses.replace(CONFIG, steps=steps), tmp_path, quiet=True
            ).fit(data())
        message = str(error.value)
        assert (
            f"step {step} of a run on the cosine learning-rate schedule over {CONFIG.steps} steps"
            in message
        )
        assert f"resuming it for {steps} steps" in message
        assert f"resume for the {CONFIG.steps} steps the run began with" in message
    assert Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data()).resumed_from == step


POINT_OPTIONS = {  # the options each family reads
    "anp": dict(hidden=8, layers=1, context_points=8, context_times=2, target_points=10, views=2),
    "ensemble": dict(hidden=8, layers=1, members=2),
}


@pytest.mark.parametrize("family", ["anp", "ensemble"])
def test_point_families_resume_bitwise_after_a_crash(tmp_path, family):
    """`physml train --model anp|ensemble` models: crash mid-run, resume, same bits."""
    from physml.data import generate_dataset, load
    from physml.training.families import FAMILIES, build, model_config

    path = generate_dataset("diffusion", tmp_path / "d.h5", 6, progress=False, nx=9, nt=6)
    data = load(path)
    config = model_config(family, "operator", POINT_OPTIONS[family])
    settings = TrainConfig(steps=7, batch=4, lr=1e-2, checkpoint_every=3, seed=1)
    loss = FAMILIES[family].loss

    def crashing_loss(at_call):
        calls = {"n": 0}

        def wrapped(net, batch):
            calls["n"] += 1
            if calls["n"] > at_call:
                raise Crash
            return loss(net, batch)

        return wrapped

    def fresh():
        torch.manual_seed(5)
        return build(config, data)

    whole_model, items = fresh()
    whole = Trainer(whole_model, loss, settings, tmp_path / "whole", config, quiet=True).fit(items)
    cut_model, items = fresh()
    with pytest.raises(Crash):
        Trainer(cut_model, crashing_loss(4), settings, tmp_path / "cut", config, quiet=True).fit(
            items
        )
    assert load_checkpoint(tmp_path / "cut")["step"] == 3
    resumed_model, items = fresh()
    resumed = Trainer(resumed_model, loss, settings, tmp_path / "cut", config, quiet=True).fit(
        items
    )
    assert resumed.resumed_from == 3 and resumed.losses == whole.losses
    for (key, a), b in zip(
        whole_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key


@pytest.mark.parametrize(
    "boundary, periodic",
    [
        ("periodic", True),
        ("x: periodic; y: periodic", True),
        ("x: periodic; y: wall", False),
        ("dirichlet: u(0,t) = u(1,t) = 0", False),
        ("", False),
    ],
)
def test_a_file_is_periodic_when_its_boundary_says_so_on_every_axis(boundary, periodic):
    from types import SimpleNamespace

    from physml.training.families import periodic_domain

    assert periodic_domain(SimpleNamespace(attrs={"boundary": boundary})) is periodic


@pytest.mark.parametrize("family", ["earthformer", "unet", "convlstm"])
def test_the_frame_families_wrap_their_convolutions_on_a_periodic_file(tmp_path, family):
    from physml.data import load
    from physml.data.generate import generate_dataset
    from physml.training.families import build, model_config

    path = generate_dataset(
        "navier-stokes", tmp_path / "ns.h5", n=2, progress=False, nx=16, t_end=0.5, nt=6
    )
    size = {"hidden": 8} if family == "convlstm" else {"base_units": 8}
    config = model_config(family, "forecast", {"t_in": 3, "t_out": 2, **size})
    model, items = build(config, load(path))
    assert model.periodic
    x, y = items[0]
    assert model(x[None]).shape == (1, *y.shape)


@pytest.mark.parametrize("family", ["earthformer", "unet", "convlstm"])
def test_the_cli_refuses_the_frame_sizes_its_model_refuses(family):
    """``physml train`` checks the frame size before building (for its ``--nx`` hint); it must
    refuse exactly the sizes the model itself refuses, both read from ``frame_multiple``."""
    from physml.data import PDEData
    from physml.models import ConvLSTM, Earthformer, UNet
    from physml.training.families import (
        CONVLSTM_PATCH,
        EARTHFORMER,
        UNET_DEPTH,
        build,
        model_config,
    )

    size = {"hidden": 4} if family == "convlstm" else {"base_units": 4}
    config = model_config(family, "forecast", {"t_in": 1, "t_out": 1, **size})

    def model_refuses(height: int, width: int) -> bool:
        frames = torch.zeros(1, 1, 1, height, width)
        try:
            if family == "earthformer":
                Earthformer(
                    (1, 1, height, width), (1, 1, height, width), base_units=4, **EARTHFORMER
                )
            elif family == "unet":
                UNet(1, 1, base=4, depth=UNET_DEPTH)(frames)
            else:
                ConvLSTM(hidden=4, target_frames=1, patch=CONVLSTM_PATCH)(frames)
        except ValueError as error:
            assert "divisible" in str(error), error
            return True
        return False

    def cli_refuses(height: int, width: int) -> bool:
        u = torch.zeros(1, 2, height, width, dtype=torch.float64)
        data = PDEData(u=u, t=torch.arange(2.0), coords={}, params={})
        try:
            build(config, data)
        except ValueError as error:
            assert f"model {family} needs frames whose sides" in str(error), error
            return True
        return False

    sizes = [(h, w) for h in (2, 3, 4, 6, 8, 10, 12) for w in (4, 6, 8)]
    refused = {(h, w) for h, w in sizes if h % 4 or w % 4}
    assert {hw for hw in sizes if cli_refuses(*hw)} == refused
    assert {hw for hw in sizes if model_refuses(*hw)} == refused
    multiple = {
        "earthformer": lambda: Earthformer.frame_multiple(
            EARTHFORMER["depth"], EARTHFORMER["downsample"]
        ),
        "unet": lambda: UNet.frame_multiple(UNET_DEPTH),
        "convlstm": lambda: ConvLSTM.frame_multiple(CONVLSTM_PATCH),
    }[family]()
    assert multiple == 4


@pytest.mark.parametrize("family", ["earthformer", "unet", "convlstm"])
def test_the_checkpoint_records_the_padding_and_a_rebuild_follows_it(tmp_path, family, capsys):
    """A resume or an evaluation must rebuild the padding the weights were trained with, not
    the one the file handed to it suggests; a checkpoint that does not say is not resumed."""
    from physml.cli import main
    from physml.data import load
    from physml.data.generate import generate_dataset
    from physml.training import load_checkpoint
    from physml.training.checkpoint import save_checkpoint
    from physml.training.families import build

    path = generate_dataset(
        "navier-stokes", tmp_path / "ns.h5", n=3, progress=False, nx=16, t_end=0.5, nt=6
    )
    run = tmp_path / "run"
    command = ["train", "--data", str(path), "--model", family, "--task", "forecast"]
    command += ["--t-in", "3", "--t-out", "2"]
    command += ["--hidden", "8"] if family == "convlstm" else ["--base-units", "8"]
    command += ["--batch", "2", "--out", str(run), "--quiet"]
    assert main([*command, "--steps", "1"]) == 0
    state = load_checkpoint(run)
    assert state["model_config"]["periodic"] is True
    model, _ = build({**state["model_config"], "periodic": False}, load(path))
    assert not model.periodic
    del state["model_config"]["periodic"]  # as written before the padding was recorded
    save_checkpoint(run, state)
    assert main([*command, "--steps", "2"]) == 2
    assert "holds another model" in capsys.readouterr().err


def test_numpy_settings_are_stored_as_python_numbers_and_the_run_resumes(tmp_path):
    """numpy numbers would be pickled into the checkpoint, which weights_only=True then refuses."""
    config = TrainConfig(
        steps=np.int64(12),
        batch=np.int64(6),
        lr=np.float64(1e-2),
        clip=np.float32(1.0),
        checkpoint_every=np.int64(4),
        seed=np.int64(3),
    )
    for name in ("steps", "batch", "lr", "clip", "checkpoint_every", "seed"):
        assert type(getattr(config, name)) in (int, float), name
    described = {"hidden": np.int64(8), "sizes": [np.float64(0.5)]}
    whole = model()
    Trainer(whole, mse, CONFIG, tmp_path / "whole", quiet=True).fit(data())
    with pytest.raises(Crash):
        Trainer(model(), crashing(7), config, tmp_path / "cut", described, quiet=True).fit(data())
    resumed = model()
    report = Trainer(resumed, mse, config, tmp_path / "cut", described, quiet=True).fit(data())
    assert report.resumed_from == 4
    assert load_checkpoint(tmp_path / "cut")["model_config"] == {"hidden": 8, "sizes": [0.5]}
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match=r"model_config\['path'\] must be a number, .* got Posix"):
        Trainer(model(), mse, CONFIG, tmp_path, {"path": Path("/x")})


def test_numpy_epochs_of_an_ensemble_resume(tmp_path):
    from physml.models import DeepEnsemble
    from physml.training import fit_ensemble

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # the second call reloads the finished run
        ensemble = DeepEnsemble(2, members=2, width=4, depth=1)
        fit_ensemble(ensemble, x, x.sum(1), epochs=np.int64(2), batch_size=8, out=tmp_path)
    assert len(ensemble.loss_curve_) == 2


def test_finite_loss_with_nan_gradients_stops_before_the_step_and_keeps_the_checkpoint(tmp_path):
    calls = {"n": 0}

    def loss(net, batch):
        calls["n"] += 1
        value = mse(net, batch)
        if calls["n"] == 6:  # sqrt at 0: a finite value, a NaN gradient
            value = value + torch.sqrt((net(batch[0]) * 0).sum())
        return value

    config = dataclasses.replace(CONFIG, clip=None)
    for settings in (config, CONFIG):  # without and with clipping
        calls["n"] = 0
        out = tmp_path / str(settings.clip)
        with pytest.raises(FloatingPointError, match=r"gradient norm became nan at step 6 on"):
            Trainer(model(), loss, settings, out, quiet=True).fit(data())
        state = load_checkpoint(out)
        assert state["step"] == 4
        assert all(bool(torch.isfinite(w).all()) for w in state["model"].values())
        report = Trainer(model(), mse, settings, out, quiet=True).fit(data())
        assert report.resumed_from == 4 and np.isfinite(report.losses).all()


def test_the_divergence_advice_is_a_fresh_folder_since_a_resume_keeps_the_settings():
    from physml.training.trainer import _diverged

    message = str(_diverged(4, "the loss became nan"))
    assert "another folder (out, --out)" in message and "--lr" in message and "--clip" in message


def noisy_mse(net, batch):
    """A loss that draws random numbers (input noise), as augmentations and latent samples do."""
    x, y = batch
    return (net(x + 0.1 * torch.randn_like(x)) - y).square().mean()


def test_validation_leaves_the_random_numbers_of_training_as_they_were():
    weights = []
    for validation, every in ((None, 0), (data(seed=5, n=10), 2)):
        net = model()
        config = dataclasses.replace(CONFIG, validate_every=every)
        Trainer(net, noisy_mse, config, quiet=True).fit(data(), validation)
        weights.append([w.clone() for w in net.state_dict().values()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_a_validation_loss_that_is_not_finite_is_recorded_as_none_with_a_warning(tmp_path):
    def loss(net, batch):
        return mse(net, batch) * (1.0 if net.training else float("nan"))

    config = TrainConfig(steps=4, batch=6, validate_every=2)
    with pytest.warns(RuntimeWarning, match=r"validation loss at step \d is nan; recorded as None"):
        report = Trainer(model(), loss, config, tmp_path, quiet=True).fit(data(), data())
    assert report.validation == [(2, None), (4, None)]
    assert load_checkpoint(tmp_path)["validation"] == [[2, None], [4, None]]


def test_a_second_run_into_a_folder_being_trained_is_refused(tmp_path):
    refused = []

    def second_run(net, step):
        if step == 2:
            with pytest.raises(FileExistsError) as error:
                Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data())
            refused.append(str(error.value))

    Trainer(model(), mse, CONFIG, tmp_path, quiet=True, after_step=second_run).fit(data())
    assert refused and "out: the run folder" in refused[0]
    assert "is being written by another process" in refused[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # the lock is gone
    assert Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data()).resumed_from == 12


def test_a_checkpoint_write_cut_by_a_kill_leaves_nothing_after_the_next_run(tmp_path):
    with pytest.raises(Crash):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(data())
    leftover = tmp_path / ".checkpoint.pt.k9x2ab.tmp"  # what atomic_path leaves on a kill -9
    leftover.write_bytes(b"half a checkpoint")
    other = tmp_path / ".report.json.k9x2ab.tmp"  # not the Trainer's: left alone
    other.write_bytes(b"{")
    report = Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data())
    assert report.resumed_from == 4 and not leftover.exists() and other.exists()


def test_a_run_refused_in_a_folder_it_made_leaves_no_folder(tmp_path):
    with pytest.raises(Crash):
        Trainer(model(), crashing(0), CONFIG, tmp_path / "new" / "run", quiet=True).fit(data())
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out: .*/file' is a file; the Trainer writes a run"):
        Trainer(model(), mse, CONFIG, tmp_path / "file", quiet=True).fit(data())


def test_weights_that_are_not_finite_are_never_checkpointed(tmp_path):
    def blow_up(net, step):  # e.g. an after_step hook whose average overflowed
        net[0].weight.data[0] = float("inf")

    config = TrainConfig(steps=2, batch=6, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match=r"step 1 \(the weights became NaN or inf\)"):
        Trainer(model(), mse, config, tmp_path, quiet=True, after_step=blow_up).fit(data())
    assert not (tmp_path / "checkpoint.pt").exists()


class NumpyItems:
    """The pairs of ``data(seed)`` served as numpy arrays, the target's first entry as a float."""

    def __init__(self, seed=0, number=False):
        x, y = data(seed).tensors
        self.x, self.y, self.number = x.numpy(), y.numpy(), number

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], float(self.y[i, 0, 0]) if self.number else self.y[i]


def test_numpy_arrays_and_python_numbers_in_items_are_fingerprinted(tmp_path):
    import hashlib

    from physml.training import fingerprint

    x, y = data().tensors
    every, sampled = hashlib.sha256(), hashlib.sha256()  # the bytes of tensor items
    for i in range(24):
        every.update(x[i].numpy().tobytes() + y[i].numpy().tobytes())
        if i in (0, 6, 12, 17, 23):  # five samples evenly spread, as older checkpoints hashed
            sampled.update(x[i].numpy().tobytes() + y[i].numpy().tobytes())
    printed = fingerprint(data())
    assert printed["hashed"] == "every sample"
    assert printed["sample_hash"] == every.hexdigest()
    assert printed["sampled_hash"] == sampled.hexdigest()
    assert fingerprint(NumpyItems()) == fingerprint(data())
    numbers = TensorDataset(x, y[:, 0, 0].double())  # a float collates to float64
    assert fingerprint(NumpyItems(number=True)) == fingerprint(numbers)
    config = dataclasses.replace(CONFIG, steps=4, schedule="constant")
    longer = dataclasses.replace(config, steps=8)

    def first_point(net, batch):
        x, y = batch
        return (net(x)[:, 0, 0] - y).square().mean()

    for number, loss in ((False, mse), (True, first_point)):
        out = tmp_path / str(number)
        Trainer(model(), loss, config, out, quiet=True).fit(NumpyItems(0, number))
        with pytest.raises(CheckpointError, match="other data.*sample_hash"):
            Trainer(model(), loss, longer, out, quiet=True).fit(NumpyItems(9, number))
        resumed = Trainer(model(), loss, longer, out, quiet=True).fit(NumpyItems(0, number))
        assert resumed.resumed_from == 4


def test_validate_takes_a_device_by_name():
    net, pairs = model(), data()
    trainer = Trainer(net, mse, CONFIG, quiet=True)
    net.eval()
    with torch.no_grad():
        whole = float(mse(net, pairs.tensors))  # 24 pairs in 4 batches of 6: the same mean
    assert trainer.validate(net, pairs, "cpu") == pytest.approx(whole, rel=1e-6)
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        trainer.validate(net, pairs, "gpu")


def test_the_learning_rate_schedules_take_their_closed_form_values():
    """Cosine: lr (1 + cos(π t / T)) / 2 = lr, lr/2, 0 at t = 0, T/2, T; constant: lr."""
    cosine = TrainConfig(steps=8, batch=2, lr=0.4, schedule="cosine")
    assert [cosine.learning_rate(t) for t in (0, 4, 8)] == pytest.approx([0.4, 0.2, 0.0], abs=1e-15)
    assert cosine.learning_rate(2) == pytest.approx(0.2 * (1 + 2**-0.5))
    constant = TrainConfig(steps=8, batch=2, lr=0.4, schedule="constant")
    assert [constant.learning_rate(t) for t in (0, 5, 8)] == [0.4, 0.4, 0.4]


@pytest.mark.parametrize(
    "schedule, clip, weight_decay",
    [("cosine", None, 0.0), ("constant", 3.0, 0.0), ("cosine", 3.0, 0.3), ("constant", None, 0.3)],
)
def test_the_steps_are_adam_on_the_clipped_gradient_at_the_scheduled_rate(
    schedule, clip, weight_decay
):
    """Full-batch steps match a hand loop: lr(t) set before step t, the gradient scaled by
    min(1, clip / ‖g‖), then Adam with L2 weight decay added to the clipped gradient."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 3, generator=gen)
    y = x @ torch.tensor([[2.0], [-1.0], [0.5]]) + 1.0
    config = TrainConfig(
        steps=10, batch=16, lr=0.2, schedule=schedule, clip=clip, weight_decay=weight_decay
    )
    torch.manual_seed(0)
    trained = nn.Linear(3, 1)
    by_hand = nn.Linear(3, 1)
    by_hand.load_state_dict(trained.state_dict())
    Trainer(trained, mse, config, quiet=True).fit(TensorDataset(x, y))

    params = list(by_hand.parameters())
    adam = torch.optim.Adam(params, lr=config.lr, weight_decay=weight_decay)
    norms = []
    for t in range(config.steps):
        rate = 0.2 if schedule == "constant" else 0.1 * (1 + np.cos(np.pi * t / config.steps))
        adam.param_groups[0]["lr"] = rate
        adam.zero_grad()
        (by_hand(x) - y).square().mean().backward()
        norm = torch.cat([p.grad.flatten() for p in params]).norm().item()
        norms.append(norm)
        if clip is not None and norm > clip:
            for p in params:
                p.grad *= clip / norm
        adam.step()
    if clip is not None:  # clipping is on at some steps and off at others
        assert min(norms) < clip < max(norms) / 2
    for p, q in zip(trained.parameters(), params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def indexed(n=24, seed=0):
    """``data(seed, n)`` with each sample's index as a third item."""
    return TensorDataset(*data(seed, n).tensors, torch.arange(n))


def recording(seen):
    def loss(net, batch):
        seen.append(batch[2].tolist())
        return mse(net, batch[:2])

    return loss


@pytest.mark.parametrize("seed", [3, 4])
def test_each_epoch_takes_the_samples_in_the_permutation_its_seed_and_epoch_draw(seed):
    """Epoch e goes through torch.randperm(n) drawn with seed + e (DistributedSampler's order),
    batch after batch, each sample once; micro-batch j takes every accumulate-th sample."""
    seen = []
    config = dataclasses.replace(CONFIG, seed=seed, steps=13)  # 4 steps an epoch, 1 into the 4th
    Trainer(model(), recording(seen), config, quiet=True).fit(indexed(26))
    expected = []
    for epoch in range(4):
        order = torch.randperm(26, generator=torch.Generator().manual_seed(seed + epoch))
        expected += [order[6 * s : 6 * s + 6].tolist() for s in range(4)]
    assert seen == expected[:13]
    seen.clear()
    Trainer(model(), recording(seen), dataclasses.replace(config, accumulate=2), quiet=True).fit(
        indexed(26)
    )
    assert seen == [part for batch in expected[:13] for part in (batch[0::2], batch[1::2])]


def test_a_run_is_fixed_by_its_seed_whatever_random_numbers_were_drawn_before():
    weights = []
    for before in (0, 1):
        net = model()  # dropout: the steps draw from the global generator
        torch.manual_seed(100 + before)
        Trainer(net, mse, CONFIG, quiet=True).fit(data())
        weights.append([w.clone() for w in net.state_dict().values()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_the_micro_batch_gradients_add_up_to_the_whole_batch_gradient():
    """The gradient a step takes is that of the batch's mean loss, however it is split."""
    start = model(dropout=0.0)
    x, y = data().tensors
    (start(x) - y).square().mean().backward()
    expected = [p.grad.clone() for p in start.parameters()]
    for accumulate in (1, 2, 3):
        got = []

        def grab(net, step, got=got):
            got.extend(p.grad.clone() for p in net.parameters())

        config = TrainConfig(steps=1, batch=24, accumulate=accumulate, lr=1e-3)
        Trainer(model(dropout=0.0), mse, config, quiet=True, after_step=grab).fit(data())
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_validation_weighs_each_sample_once_when_the_last_batch_is_short():
    net, pairs = model(), data(seed=5, n=10)  # batches of 6 and 4
    trainer = Trainer(net, mse, CONFIG, quiet=True)
    net.eval()
    with torch.no_grad():
        whole = float(mse(net, pairs.tensors))
    assert trainer.validate(net, pairs, "cpu") == pytest.approx(whole, rel=1e-6)


@pytest.mark.parametrize("every, steps", [(0, [12]), (5, [5, 10, 12])])
def test_the_last_step_is_always_validated_and_checkpointed(tmp_path, every, steps):
    config = dataclasses.replace(CONFIG, validate_every=every, checkpoint_every=5)
    report = Trainer(model(), mse, config, tmp_path, quiet=True).fit(data(), data(seed=5, n=10))
    assert [step for step, _ in report.validation] == steps
    state = load_checkpoint(tmp_path)
    assert state["step"] == 12 and [step for step, _ in state["validation"]] == steps


def test_a_resumed_run_may_checkpoint_and_validate_at_other_steps_and_keeps_accumulating(
    tmp_path,
):
    config = dataclasses.replace(CONFIG, accumulate=2)
    whole = model()
    report = Trainer(whole, mse, config, tmp_path / "whole", quiet=True).fit(data())
    with pytest.raises(Crash):
        Trainer(model(), crashing(2 * 7), config, tmp_path / "cut", quiet=True).fit(data())
    other = dataclasses.replace(config, checkpoint_every=3, validate_every=5)
    resumed_model = model()
    resumed = Trainer(resumed_model, mse, other, tmp_path / "cut", quiet=True).fit(data())
    assert resumed.resumed_from == 4 and resumed.losses == report.losses
    for a, b in zip(whole.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.samples_per_s * resumed.wall_s == pytest.approx((12 - 4) * 6)


def test_a_checkpoint_write_cut_midway_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    with pytest.raises(Crash):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(data())
    save = torch.save

    def cut(state, path, *args, **kwargs):
        Path(path).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data())
    monkeypatch.setattr(torch, "save", save)
    assert load_checkpoint(tmp_path)["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


UNPICKLED = []


def _unpickled() -> list:
    UNPICKLED.append(True)
    return UNPICKLED


class Payload:
    """An object whose unpickling runs code, as a hostile checkpoint's would."""

    def __reduce__(self):
        return _unpickled, ()


def test_a_checkpoint_holding_arbitrary_objects_is_refused_unread(tmp_path):
    from physml.training.checkpoint import FORMAT, KEYS

    torch.save({"format": FORMAT, **dict.fromkeys(KEYS), "extra": Payload()}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "c.pt")
    assert UNPICKLED == []
    assert str(refused.value) == (  # not torch's advice to load it unsafely, in terminal escapes
        f"checkpoint: {str(tmp_path / 'c.pt')!r} cannot be read as a checkpoint of physml train: "
        f"it holds Python objects besides tensors (among them {_name(_unpickled)!r}), which are "
        "not loaded (only tensors, numbers, strings and containers are); restore an intact copy, "
        "or delete it to start that training over"
    )
    torch.save({"format": "other/1", **dict.fromkeys(KEYS)}, tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError, match="has format 'other/1', expected 'physml-checkpoint/1'"
    ):
        load_checkpoint(tmp_path / "other.pt")


def _name(function) -> str:
    return f"{function.__module__}.{function.__qualname__}"


class Command:
    """An object whose unpickling runs a shell command (``os.system``, of a module torch blocks
    outright), as a hostile checkpoint's would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class Harmless:
    """A custom class: no code runs, but the weights-only unpickler reads none."""


@pytest.mark.parametrize("held", ["command", "class"])
def test_a_checkpoint_running_a_command_or_holding_a_class_is_refused_unread_as_python_objects(
    tmp_path, held
):
    """Both of torch's wordings (a module it blocks, a global it does not allow) are the refusal
    of Python objects, naming the object, never torch's advice to load with weights_only=False."""
    from physml.training.checkpoint import FORMAT, KEYS, PythonObjectsError

    marker = tmp_path / "ran"
    value, name = (
        (Command(marker), f"{os.system.__module__}.system")
        if held == "command"
        else (Harmless(), _name(Harmless))
    )
    torch.save({"format": FORMAT, **dict.fromkeys(KEYS), "model": value}, tmp_path / "c.pt")
    with pytest.raises(PythonObjectsError) as refused:
        load_checkpoint(tmp_path / "c.pt")
    assert not marker.exists()
    assert f"it holds Python objects besides tensors (among them {name!r})" in str(refused.value)
    assert "weights_only" not in str(refused.value)


def test_a_damaged_pickle_with_a_matching_crc_is_damaged_not_python_objects(tmp_path):
    """A pickle of bad opcodes (its CRC-32 rewritten to match) failed torch's unpickler with an
    UnpicklingError naming no object: it is a damaged file, told with the unpickler's own line."""
    import zipfile

    from physml.training.checkpoint import FORMAT, PythonObjectsError

    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save({"format": FORMAT, "x": torch.zeros(3)}, good)
    with zipfile.ZipFile(good) as archive, zipfile.ZipFile(bad, "w") as copy:
        for info in archive.infolist():
            data = archive.read(info.filename)
            copy.writestr(info, bytes(len(data)) if info.filename.endswith("data.pkl") else data)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(bad)
    assert not isinstance(refused.value, PythonObjectsError)
    assert "(torch.load: UnpicklingError Unsupported operand 0); restore" in str(refused.value)


def test_a_torchscript_file_is_refused_without_torchs_advice_to_load_it_unsafely(tmp_path):
    """torch.jit.save compresses its code, which torch.save never does; stored uncompressed,
    torch.load refuses the archive with its advice to load it with weights_only=False, left out."""
    import zipfile

    scripted, stored = tmp_path / "scripted.pt", tmp_path / "stored.pt"
    torch.jit.save(torch.jit.trace(nn.Linear(2, 1), torch.zeros(1, 2)), scripted)
    with pytest.raises(CheckpointError, match=r"compressed, .* torch.jit.save\?"):
        load_checkpoint(scripted)
    with zipfile.ZipFile(scripted) as archive, zipfile.ZipFile(stored, "w") as copy:
        for entry in archive.infolist():
            copy.writestr(entry.filename, archive.read(entry))
    with pytest.raises(CheckpointError) as refused, pytest.warns(UserWarning, match="TorchScript"):
        load_checkpoint(stored)
    assert "TorchScript archives" in str(refused.value)
    assert "False" not in str(refused.value) and "code execution" not in str(refused.value)


def test_a_checkpoint_with_a_flipped_bit_is_refused_naming_the_file_and_its_entry(tmp_path):
    """torch.load checks no CRC-32: the flipped bit would load as another weight."""
    from physml.training.checkpoint import KEYS, save_checkpoint

    weights = torch.arange(16, dtype=torch.float64)
    for run in ("intact", "damaged"):
        save_checkpoint(tmp_path / run, {**dict.fromkeys(KEYS), "model": {"w": weights}})
    path = tmp_path / "damaged" / "checkpoint.pt"
    flip_a_bit_of_a_zip_entry(path)
    expected = (
        f"checkpoint: {str(path)!r} cannot be read as a checkpoint of physml train: it is "
        "damaged (its entry 'data/0' fails its CRC-32 check: a bit changed on disk or in a "
        "copy); restore an intact copy, or delete it to start that training over"
    )
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "damaged")
    assert str(refused.value) == expected
    assert torch.equal(load_checkpoint(tmp_path / "intact")["model"]["w"], weights)


def test_a_checkpoint_with_a_compressed_entry_is_refused_unpacked_naming_the_entry(tmp_path):
    """torch.save stores every entry as it is; a deflated one (a few MB may unpack to GBs, which
    the CRC-32 check would inflate) is refused before any is read."""
    import zipfile

    from physml.training.checkpoint import KEYS, save_checkpoint

    path = save_checkpoint(tmp_path, {**dict.fromkeys(KEYS), "step": 3})
    with zipfile.ZipFile(path) as archive:
        assert {entry.compress_type for entry in archive.infolist()} == {zipfile.ZIP_STORED}
        folder = archive.namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{folder}/extra", bytes(1000))
    expected = (
        f"checkpoint: {str(path)!r} cannot be read as a checkpoint of physml train: its entry "
        "'extra' is compressed, which torch.save never does (an altered file, or one of "
        "torch.jit.save?), and is not unpacked; restore an intact copy, or delete it to start "
        "that training over"
    )
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path)
    assert str(refused.value) == expected


def test_a_checkpoint_write_that_fails_keeps_the_previous_one(tmp_path, monkeypatch):
    """A full disk: torch.save raises RuntimeError after writing part of the file. It comes out as
    an OSError naming the file and the free space; the last checkpoint stays, no temporary."""
    import shutil

    from physml.training.checkpoint import KEYS, save_checkpoint

    save_checkpoint(tmp_path, {**dict.fromkeys(KEYS), "step": 4})
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def disk_full(value, path):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 0")

    usage = shutil.disk_usage(tmp_path)._replace(free=1_234_000)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage)
    monkeypatch.setattr(torch, "save", disk_full)
    path = str(tmp_path / "checkpoint.pt")
    expected = (
        f"{path!r} could not be written (torch.save: [enforce fail at inline_container.cc:664] . "
        f"unexpected pos 512 vs 0); 1.23 MB free on its disk, and {path!r} is left as it was"
    )
    with pytest.raises(OSError) as failed:
        save_checkpoint(tmp_path, {**dict.fromkeys(KEYS), "step": 8})
    assert str(failed.value) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_the_fingerprint_tells_shapes_dtypes_and_every_sampled_sample_apart():
    from physml.training import fingerprint
    from physml.training.fingerprint import differences

    x, y = data().tensors
    first = fingerprint(TensorDataset(x, y))
    reshaped = fingerprint(TensorDataset(x.reshape(24, 16, 1), y))  # the same bytes
    assert differences(first, reshaped) == ["shapes [[1, 16], [1, 16]] → [[16, 1], [1, 16]]"]
    retyped = fingerprint(TensorDataset(x.view(torch.int32), y))  # the same bytes
    assert differences(first, retyped) == [
        "dtypes ['torch.float32', 'torch.float32'] → ['torch.int32', 'torch.float32']"
    ]
    last = x.clone()
    last[-1, 0, 0] += 1
    assert [d.split()[0] for d in differences(first, fingerprint(TensorDataset(last, y)))] == [
        "sample_hash"
    ]


def test_a_checkpoint_that_kept_provenance_attributes_resumes_the_same_data():
    """Checkpoints written before provenance was dropped hold it in their fingerprint."""
    from physml.training.checkpoint import check_same_data

    current = {"samples": 4, "sample_hash": "aa", "attributes": {"pde": "heat"}}
    saved = {**current, "attributes": {"pde": "heat", "created": "2026-12-06T02:28:23+00:00"}}
    check_same_data({"fingerprint": saved}, current, "run")


def test_a_model_without_a_config_is_resumed_unchecked():
    from physml.training.checkpoint import check_same_model

    check_same_model({"model_config": {"name": "fno"}}, None, "run")


def test_a_loss_that_is_not_finite_is_blamed_on_the_loss_at_step_1_and_on_it_or_the_updates_later():
    def nan_at(call):
        calls = {"n": 0}

        def loss(net, batch):
            calls["n"] += 1
            return mse(net, batch) * (float("nan") if calls["n"] == call else 1.0)

        return loss

    with pytest.raises(FloatingPointError, match="nan at step 1, before any update: the loss or"):
        Trainer(model(), nan_at(1), CONFIG, quiet=True).fit(data())
    with pytest.raises(FloatingPointError, match=r"nan at step 3 on .* or training diverged at"):
        Trainer(model(), nan_at(3), CONFIG, quiet=True).fit(data())


@pytest.mark.parametrize(
    "change, named",
    [
        ({"lr": 2e-2}, "lr 0.01 → 0.02"),
        ({"seed": 4}, "seed 3 → 4"),
        ({"batch": 4}, "batch 6 → 4"),
        ({"accumulate": 2}, "accumulate 1 → 2"),
        ({"clip": None}, "clip 1.0 → None"),
        ({"weight_decay": 0.1}, "weight_decay 0.0 → 0.1"),
        ({"schedule": "constant"}, "schedule 'cosine' → 'constant'"),
    ],
)
def test_resuming_with_a_setting_that_shapes_the_steps_changed_is_an_error(tmp_path, change, named):
    with pytest.raises(Crash):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(data())
    other = dataclasses.replace(CONFIG, **change)
    with pytest.raises(CheckpointError, match=rf"other settings \({named}\); use another out="):
        Trainer(model(), mse, other, tmp_path, quiet=True).fit(data())


def test_a_trainer_called_from_python_advises_its_arguments_not_physml_train_s_flags(tmp_path):
    with pytest.raises(Crash):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(data())
    longer = dataclasses.replace(CONFIG, steps=20)
    with pytest.raises(CheckpointError) as refused:
        Trainer(model(), mse, longer, tmp_path, quiet=True).fit(data())
    message = str(refused.value)
    assert "--" not in message, message
    assert (
        "Train the 20 steps afresh (use another out= folder), or resume for the 12 steps" in message
    )
    with pytest.raises(CheckpointError, match="trained with other settings .*; use another --out"):
        Trainer(
            model(), mse, dataclasses.replace(CONFIG, lr=0.5), tmp_path, quiet=True, remedy=REMEDY
        ).fit(data())


def test_a_run_may_resume_on_another_device():
    from physml.training.checkpoint import check_same_config

    saved = {**dataclasses.asdict(CONFIG), "device": "cuda"}  # written on a GPU machine
    check_same_config({"config": saved, "step": 4}, dataclasses.asdict(CONFIG), "run")


def test_another_split_of_one_file_is_named_in_the_callers_words(tmp_path):
    """A run trained on 20 of a file's 24 samples resumed on 16 of them (the rest held out): the
    clause says another share was held out, as other validation data from Python and as
    another --val-fraction where physml train's remedy is passed."""

    class FileData(TensorDataset):
        attributes = {"pde": "heat", "seed": 0}  # a file's description, as PDEData has

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=generator), torch.randn(24, 4, generator=generator)
    config = dataclasses.replace(CONFIG, steps=4, batch=4, checkpoint_every=2)

    def fit(held_out: int, **options) -> None:
        torch.manual_seed(0)
        trainer = Trainer(nn.Linear(4, 4), mse, config, tmp_path, quiet=True, **options)
        trainer.fit(FileData(x[:held_out], y[:held_out]), FileData(x[held_out:], y[held_out:]))

    fit(20)
    clause = "the run trained on 20 of its 24 samples, this command on 16, holding another share"
    with pytest.raises(CheckpointError) as refused:
        fit(16)
    assert f"{clause} out for validation (other validation data))" in str(refused.value)
    assert "--" not in str(refused.value)
    with pytest.raises(CheckpointError) as refused:
        fit(16, remedy=REMEDY)
    assert f"{clause} out for validation (another --val-fraction))" in str(refused.value)


def test_a_checkpoint_whose_first_bytes_flipped_is_damaged_not_foreign(tmp_path):
    """A bit flipped in the zip signature at byte 0: the archive's directory at its end still
    reads, so it is a damaged checkpoint (with the remedy), not 'not a zip archive'."""
    from physml.training.checkpoint import KEYS, save_checkpoint

    save_checkpoint(tmp_path, {**dict.fromkeys(KEYS), "model": {"w": torch.ones(4)}})
    path = tmp_path / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path)
    assert "not a zip archive" not in str(refused.value)
    assert str(refused.value).endswith(
        "restore an intact copy, or delete it to start that training over"
    )


class Keyed(Dataset):
    """Rows served as ``{"x", "y"}`` items, also through torch's batched fetch ``__getitems__``
    (a list of the items, as DataLoader asks), which counts its calls."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.fetches = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        self.fetches += 1
        return [self[i] for i in indices]


class Offset(MemberRows):
    """Member rows whose targets are read shifted: not what the ``item_rows`` it inherits say."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = super().__getitem__(i)
        return inputs, targets + 1.0


def rows(cls=MemberRows, n=24):
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(7))
    return cls(x, x.sum(1).to(F64), members=3, seed=2)


def same_batch(got: object, expected: object) -> bool:
    """The same nesting of lists, tuples and dicts (keys in order) of equal tensors (and dtypes)."""
    if isinstance(expected, torch.Tensor):
        return got.dtype == expected.dtype and torch.equal(got, expected)
    if isinstance(expected, str):
        return got == expected
    if isinstance(expected, dict):
        got, expected = list(got.items()), list(expected.items())
    same_parts = len(got) == len(expected) and all(map(same_batch, got, expected))
    return type(got) is type(expected) and same_parts


@pytest.mark.parametrize(
    "dataset",
    [rows(), rows(Offset), data(), indexed(), Keyed(*data().tensors)],
    ids=["member-rows", "subclass-reading-otherwise", "tensors", "three-tensors", "getitems"],
)
def test_a_batch_is_the_collated_items_whether_fetched_at_once_or_not(dataset):
    picks = [5, 0, 17, 5, 23]
    expected = default_collate([dataset[i] for i in picks])
    assert same_batch(_batch(dataset, picks), expected)


def test_a_member_rows_batch_is_indexed_at_once_and_trains_as_item_by_item(monkeypatch):
    """fit_ensemble reads no MemberRows item in its steps (its fingerprint reads a few), and its
    losses are those of the same run fetching item by item."""
    from physml.models import DeepEnsemble
    from physml.training import fit_ensemble
    from physml.training import trainer as trainer_module

    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    reads = []
    read = MemberRows.__getitem__
    monkeypatch.setattr(MemberRows, "__getitem__", lambda rows, i: reads.append(i) or read(rows, i))

    def loss_curve() -> list[float]:
        reads.clear()
        ensemble = DeepEnsemble(2, members=2, width=4, depth=1)
        return fit_ensemble(ensemble, x, x.sum(1), epochs=3, batch_size=20).loss_curve_

    at_once = loss_curve()
    assert len(reads) < 20
    monkeypatch.setattr(trainer_module, "item_rows", lambda dataset: None)
    assert loss_curve() == at_once
    assert len(reads) >= 3 * 40


def test_a_dataset_with_getitems_is_fetched_a_batch_at_a_time_and_trains_the_same(monkeypatch):
    """Each micro-batch is one __getitems__ call; the losses are those of item-by-item reads."""
    config = dataclasses.replace(CONFIG, accumulate=2, checkpoint_every=12)
    x, y = data().tensors

    def keyed_mse(net, batch):
        return mse(net, (batch["x"], batch["y"]))

    def run() -> tuple[list, list, int]:
        train = Keyed(x, y)
        report = Trainer(model(), keyed_mse, config, quiet=True).fit(train, Keyed(x[:10], y[:10]))
        return report.losses, report.validation, train.fetches

    losses, validation, fetches = run()
    assert fetches == 12 * 2
    monkeypatch.delattr(Keyed, "__getitems__")
    assert run() == (losses, validation, 0)


def test_a_batch_indexed_at_once_is_contiguous_as_a_stacked_one_is():
    """A TensorDataset of permuted (or channels_last) data gave batches in its layout, which a
    model's ``.view`` refused; stacked items are contiguous."""
    x = torch.randn(8, 6, 3, generator=torch.Generator().manual_seed(0)).transpose(1, 2)
    dataset = TensorDataset(x, x.sum((1, 2)))
    batch = _batch(dataset, [4, 1, 6])
    assert all(part.is_contiguous() for part in batch)
    assert torch.equal(batch[0].view(3, -1), x[[4, 1, 6]].reshape(3, -1))


@pytest.mark.parametrize("argument", ["setting_names", "schedule_names"])
@pytest.mark.parametrize("value", [3, {"batch": 3}, {"": "x"}, {"batch": ""}, ["batch"]])
def test_the_trainers_word_maps_must_map_strings_to_strings(argument, value):
    model = nn.Linear(1, 1)
    with pytest.raises(TypeError, match=rf"^{argument} must map non-empty strings to non-empty"):
        Trainer(model, lambda m, b: m(b[0]).sum(), TrainConfig(steps=1), **{argument: value})


def test_the_trainers_refusals_use_the_callers_words(tmp_path):
    """``setting_names`` and ``schedule_names`` name the settings and the constant schedule in
    the refusals to resume, and leave the quoted run folder as it is."""
    out = tmp_path / "the constant schedule (no steps)"
    data = TensorDataset(torch.ones(4, 1))

    def fit(**config):
        config = {"steps": 2, "batch": 2, "schedule": "constant", "checkpoint_every": 1, **config}
        words = {"setting_names": {"batch": "size"}, "schedule_names": {"constant": "flat"}}
        trainer = Trainer(
            nn.Linear(1, 1), lambda m, b: m(b[0]).sum(), TrainConfig(**config), out, **words
        )
        return trainer.fit(data)

    fit()
    with pytest.raises(CheckpointError) as refused:
        fit(batch=1, schedule="cosine")
    assert str(refused.value) == (
        f"checkpoint: {str(out)!r} was trained with other settings (size 2 → 1; "
        "schedule 'flat' → 'cosine'); use another out= folder or the same settings"
    )
