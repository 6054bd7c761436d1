"""The Trainer's time budget: a stop at ``budget_s`` seconds of training on the ``wall`` or
``cpu`` clock, the seconds carried across a resume, a cosine schedule over the budget, the
resume rules, and the ``physml train`` flags. Clocks are faked: a training forward moves them."""

import json
import math
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset
from two_ranks import leave

from physml import _clock
from physml.cli import main
from physml.training import CheckpointError, TrainConfig, Trainer, load_checkpoint
from physml.training.distributed import group_device

F64 = torch.float64


class Ticking(nn.Module):
    """A float64 weight whose loss is the weight itself (its gradient is 1 at every step); each
    training forward moves ``clock`` by ``tick`` seconds, a validation forward moves it by 100."""

    def __init__(self, clock: list[float], tick: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=F64))
        self.clock, self.tick = clock, tick

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock[0] += self.tick if self.training else 100.0
        return self.weight + 0.0 * x.sum()


def weight_loss(net, batch):
    (x,) = batch
    return net(x)


def data(n: int = 8) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=F64).reshape(n, 1))


def fake_clocks(monkeypatch, name: str = "wall") -> list[float]:
    """Replace the clock ``name`` by one read from the returned cell, and the other clock by one
    that fails the test if the run reads it."""
    clock = [0.0]

    def other() -> float:
        raise AssertionError(f"the run read a clock other than {name!r}")

    for key in _clock.CLOCKS:
        monkeypatch.setitem(_clock.CLOCKS, key, (lambda: clock[0]) if key == name else other)
    return clock


def config(**changes) -> TrainConfig:
    settings = dict(steps=100, batch=2, lr=0.1, schedule="constant", checkpoint_every=100)
    return TrainConfig(**{**settings, **changes})


def test_the_clocks_are_elapsed_and_process_cpu_time():
    assert _clock.CLOCKS == {"wall": time.perf_counter, "cpu": time.process_time}


@pytest.mark.parametrize("name", ["wall", "cpu"])
def test_a_budget_stops_the_run_and_checkpoints_and_validates_at_that_step(
    monkeypatch, tmp_path, name
):
    """1 s per step and a 3.5 s budget: 4 steps (the fourth starts at 3 s), then a checkpoint
    and a validation at step 4 though neither is due; validation time does not count."""
    clock = fake_clocks(monkeypatch, name)
    net = Ticking(clock, 1.0)
    trainer = Trainer(net, weight_loss, config(budget_s=3.5, clock=name), tmp_path, quiet=True)
    report = trainer.fit(data(), data(3))
    assert report.steps == report.stopped_at == 4 and len(report.losses) == 4
    assert report.train_s == 4.0 and [step for step, _ in report.validation] == [4]
    saved = load_checkpoint(tmp_path)
    assert saved["step"] == 4 and saved["train_s"] == 4.0
    assert (saved["config"]["budget_s"], saved["config"]["clock"]) == (3.5, name)


def test_steps_stop_a_run_before_its_budget(monkeypatch):
    clock = fake_clocks(monkeypatch)
    report = Trainer(
        Ticking(clock, 1.0), weight_loss, config(steps=3, budget_s=10.0), quiet=True
    ).fit(data())
    assert report.steps == 3 and report.stopped_at is None and report.train_s == 3.0


def test_a_resumed_run_counts_the_seconds_its_checkpoint_used(monkeypatch, tmp_path):
    """Killed after step 3 (checkpoints every 2 steps), resumed: the seconds of the 2 saved
    steps count, so a 5 s budget allows 3 more."""
    clock = fake_clocks(monkeypatch)
    every_two = config(budget_s=5.0, checkpoint_every=2)

    class Killed(Exception):
        pass

    def kill_at_three(net, step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        Trainer(
            Ticking(clock, 1.0),
            weight_loss,
            every_two,
            tmp_path,
            quiet=True,
            after_step=kill_at_three,
        ).fit(data())
    assert load_checkpoint(tmp_path)["train_s"] == 2.0
    clock[0] = 1000.0  # another process: its clock reads anything
    report = Trainer(Ticking(clock, 1.0), weight_loss, every_two, tmp_path, quiet=True).fit(data())
    assert report.resumed_from == 2 and report.steps == 5 and report.train_s == 5.0
    assert len(report.losses) == 5
    again = Trainer(Ticking(clock, 1.0), weight_loss, every_two, tmp_path, quiet=True).fit(data())
    assert again.resumed_from == again.steps == again.stopped_at == 5  # the budget is spent


def test_the_cosine_schedule_decays_over_the_budget_when_no_steps_are_given(monkeypatch):
    """Adam's step on a gradient of 1 at every step is ``lr / (1 + eps)``: the weight's moves
    give each step's rate, ``lr (1 + cos(π min(used / budget_s, 1))) / 2`` at the seconds used
    when the step began (0, 0.7, 1.4, 2.1 s of a 2.5 s budget)."""
    clock = fake_clocks(monkeypatch)
    net, weights = Ticking(clock, 0.7), []
    budget = config(steps=None, budget_s=2.5, schedule="cosine")
    record = lambda model, step: weights.append(float(model.weight.detach()))  # noqa: E731
    report = Trainer(net, weight_loss, budget, quiet=True, after_step=record).fit(data())
    assert report.steps == 4 and report.stopped_at == 4
    moves = -torch.tensor([0.0, *weights], dtype=F64).diff() * (1 + 1e-8)
    used = torch.tensor([0.0, 0.7, 1.4, 2.1], dtype=F64)
    expected = 0.1 * (1 + torch.cos(math.pi * used / 2.5)) / 2
    torch.testing.assert_close(moves, expected, rtol=1e-12, atol=0)
    for step, seconds in enumerate(used.tolist()):
        closed = 0.05 * (1 + math.cos(math.pi * seconds / 2.5))
        assert budget.learning_rate(step, seconds) == pytest.approx(closed, rel=1e-14)
    assert budget.learning_rate(9, 7.0) == 0.0  # past the budget: the end of the decay


def test_a_budget_decayed_cosine_run_refuses_another_budget_and_a_step_run_takes_one(
    monkeypatch, tmp_path
):
    clock = fake_clocks(monkeypatch)
    over_budget = config(steps=None, budget_s=2.0, schedule="cosine")
    Trainer(Ticking(clock, 1.0), weight_loss, over_budget, tmp_path / "b", quiet=True).fit(data())
    for changed in (dict(budget_s=3.0), dict(steps=10)):
        other = config(**{"steps": None, "budget_s": 2.0, "schedule": "cosine", **changed})
        with pytest.raises(CheckpointError) as refused:
            Trainer(Ticking(clock, 1.0), weight_loss, other, tmp_path / "b", quiet=True).fit(data())
        message = str(refused.value)
        assert "schedule over budget_s=2.0 seconds (no steps); resumed over " in message
        assert "afresh (use another out= folder), or resume over budget_s=2.0 seconds" in message
    over_steps = config(steps=4, schedule="cosine")
    Trainer(Ticking(clock, 1.0), weight_loss, over_steps, tmp_path / "s", quiet=True).fit(data())
    longer = config(steps=4, budget_s=60.0, schedule="cosine")  # the budget only stops it
    report = Trainer(Ticking(clock, 1.0), weight_loss, longer, tmp_path / "s", quiet=True).fit(
        data()
    )
    assert report.resumed_from == 4 and report.steps == 4
    constant = config(steps=None, budget_s=2.0)  # the constant schedule may be extended
    Trainer(Ticking(clock, 1.0), weight_loss, constant, tmp_path / "c", quiet=True).fit(data())
    extended = config(steps=None, budget_s=3.0)
    report = Trainer(Ticking(clock, 1.0), weight_loss, extended, tmp_path / "c", quiet=True).fit(
        data()
    )
    assert report.resumed_from == 2 and report.steps == 3


def test_a_resume_on_another_clock_is_refused(monkeypatch, tmp_path):
    clock = fake_clocks(monkeypatch)
    Trainer(Ticking(clock, 1.0), weight_loss, config(steps=2), tmp_path, quiet=True).fit(data())
    with pytest.raises(CheckpointError, match=r"other settings \(clock 'wall' → 'cpu'\); use "):
        Trainer(
            Ticking(clock, 1.0), weight_loss, config(steps=2, clock="cpu"), tmp_path, quiet=True
        ).fit(data())


@pytest.mark.parametrize(
    "settings, kind, error",
    [
        (
            dict(steps=None),
            ValueError,
            r"^steps may be None only with a time budget: .*steps=None and budget_s",
        ),
        (
            dict(budget_s=0),
            ValueError,
            r"^budget_s must be a finite number of seconds > 0 or None, got 0 "
            r"\(for no time budget pass None\)$",
        ),
        (dict(budget_s=-1.0), ValueError, r"^budget_s must be a finite number of seconds > 0"),
        (dict(budget_s=math.inf), ValueError, r"^budget_s must be a finite number of seconds > 0"),
        (dict(budget_s=math.nan), ValueError, r"^budget_s must be a finite number of seconds > 0"),
        (
            dict(budget_s=True),
            TypeError,
            r"^budget_s must be a finite number of seconds > 0 or None, got True$",
        ),
        (
            dict(budget_s="5"),
            TypeError,
            r"^budget_s must be a finite number of seconds > 0 or None, got '5'$",
        ),
        (dict(clock="gpu"), ValueError, r"^clock must be one of \('wall', 'cpu'\) .*, got 'gpu'$"),
        (dict(clock=1), TypeError, r"^clock must be one of \('wall', 'cpu'\) .*, got 1$"),
    ],
)
def test_bad_budgets_and_clocks_are_refused_by_name(settings, kind, error):
    """A value of the wrong type (text, a boolean) is a TypeError, a number out of range or an
    unknown clock a ValueError."""
    with pytest.raises(kind, match=error):
        TrainConfig(**settings)


def test_a_validation_loss_scores_validation_and_bad_hooks_are_named(monkeypatch):
    """validation_loss replaces the training loss on the validation batches only."""
    clock = fake_clocks(monkeypatch)
    doubled = lambda net, batch: 2.0 * weight_loss(net, batch)  # noqa: E731
    net = Ticking(clock, 1.0)
    trainer = Trainer(net, weight_loss, config(steps=2), quiet=True, validation_loss=doubled)
    report = trainer.fit(data(), data(3))
    assert report.validation == [(2, 2.0 * float(net.weight.detach()))]
    for name, value in (("validation_loss", 3), ("restore", "")):
        with pytest.raises(TypeError, match=f"^{name} must be a"):
            Trainer(net, weight_loss, config(steps=2), **{name: value})


def test_a_progress_bar_of_a_run_without_steps_has_no_total(monkeypatch):
    from physml.training import trainer as module

    totals, shown = [], module.progress_bar

    def recording_bar(iterable, enabled, desc, total=None, **options):
        totals.append(total)
        return shown(iterable, enabled, desc, total, **options)

    monkeypatch.setattr(module, "progress_bar", recording_bar)
    clock = fake_clocks(monkeypatch)
    Trainer(Ticking(clock, 1.0), weight_loss, config(steps=None, budget_s=2.0), quiet=True).fit(
        data()
    )
    assert totals == [None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _budget_rank(rank: int, port: int, queue) -> None:
    """Rank 1's clock runs 10 times faster than rank 0's: on its own it would stop after one
    step and decay its rate faster."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank)
    )
    torch.set_num_threads(1)
    clock = [0.0]
    _clock.CLOCKS["wall"] = lambda: clock[0]
    net = Ticking(clock, 1.0 if rank == 0 else 10.0)
    budget = config(steps=None, budget_s=3.5, schedule="cosine")
    pickled, sent = [], torch.distributed.broadcast_object_list

    def counted(*args, **options):
        pickled.append(args)
        return sent(*args, **options)

    torch.distributed.broadcast_object_list = counted
    report = Trainer(net, weight_loss, budget, quiet=True).fit(data())
    place = str(group_device())
    queue.put((rank, report.steps, report.train_s, float(net.weight.detach()), len(pickled), place))
    leave(queue)


def _answers_of_two_ranks(target) -> dict:
    """Run ``target(rank, port, queue)`` as two spawned gloo ranks; what each put on the queue
    (``(rank, *answer)``), by rank, once both exited cleanly."""
    context, port = mp.get_context("spawn"), _free_port()
    queue = context.Queue()
    processes = [context.Process(target=target, args=(r, port, queue)) for r in range(2)]
    for process in processes:
        process.start()
    answers = dict((rank, rest) for rank, *rest in (queue.get(timeout=120) for _ in processes))
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return answers


def test_every_rank_stops_at_rank_zeros_budget_on_rank_zeros_schedule():
    """Ranks reading their own clocks would stop at other steps (a deadlock in the next
    all-reduce) and step at other rates (other weights): rank 0's seconds rule both, sent as a
    tensor on the process group's device (gloo: the CPU), no pickled object a step."""
    answers = _answers_of_two_ranks(_budget_rank)
    assert answers[0] == answers[1]
    assert answers[0][:2] == [4, 4.0]
    assert answers[0][3:] == [0, "cpu"]


def _validation_rank(rank: int, port: int, queue) -> None:
    """Validating every step, rank 1's ``on_validation`` asks to stop at step 1, rank 0's at
    step 3: every rank must stop where rank 0 says (another step would deadlock)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank)
    )
    torch.set_num_threads(1)
    stop_from = 3 if rank == 0 else 1
    pickled, sent = [], torch.distributed.broadcast_object_list

    def counted(*args, **options):
        pickled.append(args)
        return sent(*args, **options)

    torch.distributed.broadcast_object_list = counted
    trainer = Trainer(
        Ticking([0.0], 1.0),
        weight_loss,
        config(steps=6, validate_every=1),
        quiet=True,
        on_validation=lambda net, step, loss: step >= stop_from,
    )
    report = trainer.fit(data(), data(2))
    counts = (len(report.losses), len(report.validation), len(pickled))
    queue.put((rank, report.stopped_at, *counts))
    leave(queue)


def test_every_rank_stops_where_rank_zeros_on_validation_says_with_no_pickled_object():
    """``on_validation``'s answer goes from rank 0 to the others as a tensor, not a pickled
    object, at every validation: both ranks stop at step 3 after 3 steps and 3 validations."""
    answers = _answers_of_two_ranks(_validation_rank)
    assert answers[0] == answers[1] == [3, 3, 3, 0]


def test_train_takes_the_budget_and_clock_as_flags_and_config_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "6", "--nx", "17", "--out", "heat.h5", "--quiet"]) == 0
    small = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", *small]
    flags = ["--steps", "2", "--budget-s", "1e6", "--clock", "cpu"]
    assert main([*train, "--out", "flags", *flags]) == 0
    (tmp_path / "run.toml").write_text('steps = 2\nbudget_s = 1e6\nclock = "cpu"\n')
    assert main([*train, "--out", "file", "--config", "run.toml"]) == 0
    for out in ("flags", "file"):
        saved = load_checkpoint(tmp_path / out)["config"]
        assert (saved["steps"], saved["budget_s"], saved["clock"]) == (2, 1e6, "cpu")
    (tmp_path / "bad.toml").write_text("steps = 2\nclock = []\n")
    for bad, refusal in [
        (["--steps", "2", "--clock", "gpu"], "clock must be one of ('wall', 'cpu') "),
        (["--steps", "2", "--budget-s", "0"], "--budget-s must be a finite number of seconds > 0"),
        (["--config", "bad.toml"], "clock must be one of ('wall', 'cpu') "),
    ]:
        capsys.readouterr()
        assert main([*train, "--out", "bad", *bad]) == 2
        assert capsys.readouterr().err.startswith(f"physml train: error: {refusal}"), bad
    assert not (tmp_path / "bad").exists()  # refused before any run folder is made


def test_train_says_to_leave_an_optional_setting_out_where_python_says_pass_none(
    tmp_path, monkeypatch, capsys
):
    """A command line cannot pass None: a budget or clip out of range, as a flag or a --config
    key, is refused by its source with the way to ask for none there."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", "heat.h5", "--quiet"]) == 0
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--steps", "2"]
    (tmp_path / "run.toml").write_text("clip = 0\n")
    for bad, refusal in [
        (
            ["--budget-s", "0"],
            "--budget-s must be a finite number of seconds > 0, got 0.0 "
            "(for no time budget leave --budget-s out)",
        ),
        (
            ["--budget-s", "nan"],
            "--budget-s must be a finite number of seconds > 0, got nan "
            "(for no time budget leave --budget-s out)",
        ),
        (
            ["--clip", "inf"],
            "--clip must be a finite number > 0, got inf (for no clipping leave --clip out)",
        ),
        (
            ["--config", "run.toml"],
            "clip in --config 'run.toml' must be a finite number > 0, got 0 "
            "(for no clipping leave the key out)",
        ),
    ]:
        capsys.readouterr()
        assert main([*train, "--out", "bad", *bad]) == 2
        assert capsys.readouterr().err == f"physml train: error: {refusal}\n", bad
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("clock", [[], {}, ["wall"]])
def test_an_unhashable_clock_is_refused_by_name(clock):
    with pytest.raises(TypeError, match=r"^clock must be one of \('wall', 'cpu'\) .*, got "):
        TrainConfig(clock=clock)


def test_an_early_stop_of_a_run_without_steps_reports_the_step_it_stopped_at(monkeypatch):
    clock = fake_clocks(monkeypatch)
    budget = config(steps=None, budget_s=50.0, validate_every=2)
    stop_at_four = lambda net, step, loss: step >= 4  # noqa: E731
    trainer = Trainer(
        Ticking(clock, 1.0), weight_loss, budget, quiet=True, on_validation=stop_at_four
    )
    report = trainer.fit(data(), data(2))
    assert report.steps == report.stopped_at == 4 and len(report.losses) == 4


def test_a_refused_run_removes_the_empty_folders_it_made(monkeypatch, tmp_path):
    """A run into ``tmp/made/sub/run`` that fails before its first checkpoint leaves none of
    the three folders it made; a folder that held something before stays."""
    clock = fake_clocks(monkeypatch)
    not_finite = lambda net, batch: net(batch[0]) * math.nan  # noqa: E731
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "file").write_text("x")
    for out in (tmp_path / "made" / "sub" / "run", tmp_path / "kept" / "sub" / "run"):
        with pytest.raises(FloatingPointError):
            Trainer(Ticking(clock, 1.0), not_finite, config(steps=2), out, quiet=True).fit(data())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["file"]


def test_a_resume_with_its_budget_spent_validates_at_its_step_once(monkeypatch, tmp_path):
    """Trained without validation until the budget ran out, resumed with a validation set: the
    run has nothing left to train, but ends on a validation (checkpointed, so not taken again);
    the same holds for a run whose steps are done."""
    clock = fake_clocks(monkeypatch)
    for name, settings in (("budget", dict(budget_s=2.5)), ("steps", dict(steps=3))):
        out = tmp_path / name
        Trainer(Ticking(clock, 1.0), weight_loss, config(**settings), out, quiet=True).fit(data())
        net = Ticking(clock, 1.0)
        report = Trainer(net, weight_loss, config(**settings), out, quiet=True).fit(data(), data(2))
        assert report.resumed_from == 3 and report.steps == 3
        assert report.validation == [(3, float(net.weight.detach()))]
        assert load_checkpoint(out)["validation"] == [[3, float(net.weight.detach())]]
        again = Trainer(Ticking(clock, 1.0), weight_loss, config(**settings), out, quiet=True)
        assert again.fit(data(), data(2)).validation == report.validation


def test_train_reports_how_its_run_stopped(tmp_path, monkeypatch, capsys):
    """A clock moving 1 s a reading: 1 s a step (read at its start and end, 2 readings apart),
    so a 2.5 s budget stops the run after 3 of its 100 steps."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "6", "--nx", "17", "--out", "heat.h5", "--quiet"]) == 0
    small = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", *small]
    ticks = iter(range(10**6))
    monkeypatch.setitem(_clock.CLOCKS, "wall", lambda: float(next(ticks)))
    capsys.readouterr()
    assert main([*train, "--out", "budget", "--steps", "100", "--budget-s", "2.5"]) == 0
    assert "stopped by the time budget after 3 steps: loss " in capsys.readouterr().out
    report = json.loads((tmp_path / "budget" / "report.json").read_text())
    assert report["steps"] == report["stopped_at"] == 3 and report["train_s"] == 3.0
    assert (report["budget_s"], report["clock"]) == (2.5, "wall")
    assert main([*train, "--out", "steps", "--steps", "2"]) == 0
    assert "trained 2 steps: loss " in capsys.readouterr().out
    report = json.loads((tmp_path / "steps" / "report.json").read_text())
    assert report["stopped_at"] is None and (report["budget_s"], report["clock"]) == (None, "wall")


class Killed(Exception):
    """What a faked clock raises to end a run as a kill -9 would (no handler catches it)."""


def train_command(tmp_path, monkeypatch) -> list[str]:
    """``physml train`` of a small FNO on a generated heat file in ``tmp_path`` (the working
    folder), without ``--out`` and without steps or budget."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "6", "--nx", "17", "--out", "heat.h5", "--quiet"]) == 0
    small = ["--modes", "2", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    return ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", *small]


def ticking_wall(monkeypatch, kill_at: int | None = None) -> None:
    """A wall clock moving 1 s a reading: a step reads it at its start and end, so step ``k``
    (from 0) of a run begins with ``k`` seconds used. Reading number ``kill_at`` raises Killed."""
    ticks = iter(range(10**6))

    def wall() -> float:
        tick = next(ticks)
        if tick == kill_at:
            raise Killed
        return float(tick)

    monkeypatch.setitem(_clock.CLOCKS, "wall", wall)


def cosine(used: float, over: float) -> float:
    """The rate of the default cosine schedule (lr 1e-3) at ``used`` of ``over`` (s or steps)."""
    return 0.5e-3 * (1.0 + math.cos(math.pi * used / over))


def last_rate(out) -> float:
    """The learning rate of the last step a run's checkpoint holds."""
    return load_checkpoint(out)["optimizer"]["param_groups"][0]["lr"]


@pytest.mark.parametrize("given", ["flag", "key"])
def test_train_with_a_budget_and_no_steps_trains_until_it_is_spent_decaying_over_it(
    tmp_path, monkeypatch, capsys, given
):
    """A 2.5 s budget and no steps, as a flag or a TOML key: 3 steps, the last one at 2 s used,
    whose rate is the cosine's at 2 of 2.5 s (over 1000 steps it would be nearly lr)."""
    train = train_command(tmp_path, monkeypatch)
    (tmp_path / "run.toml").write_text("budget_s = 2.5\n")
    budget = ["--budget-s", "2.5"] if given == "flag" else ["--config", "run.toml"]
    ticking_wall(monkeypatch)
    capsys.readouterr()
    assert main([*train, "--out", "run", *budget]) == 0
    assert "stopped by the time budget after 3 steps: loss " in capsys.readouterr().out
    saved = load_checkpoint(tmp_path / "run")
    assert (saved["step"], saved["config"]["steps"], saved["config"]["budget_s"]) == (3, None, 2.5)
    assert last_rate(tmp_path / "run") == pytest.approx(cosine(2.0, 2.5), rel=1e-12)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["steps"] == report["stopped_at"] == 3 and report["train_s"] == 3.0


@pytest.mark.parametrize(
    "flags, keys",
    [
        (["--steps", "100", "--budget-s", "2.5"], ""),
        (["--budget-s", "2.5"], "steps = 100\n"),
        (["--steps", "100"], "budget_s = 2.5\n"),
        ([], "steps = 100\nbudget_s = 2.5\n"),
    ],
)
def test_train_with_a_budget_and_steps_decays_over_the_steps(tmp_path, monkeypatch, flags, keys):
    """Steps given as a flag or a key keep the cosine over them; the budget only stops the run."""
    train = train_command(tmp_path, monkeypatch)
    (tmp_path / "run.toml").write_text(keys)
    ticking_wall(monkeypatch)
    assert main([*train, "--out", "run", "--config", "run.toml", *flags]) == 0
    saved = load_checkpoint(tmp_path / "run")
    assert (saved["step"], saved["config"]["steps"], saved["config"]["budget_s"]) == (3, 100, 2.5)
    assert last_rate(tmp_path / "run") == pytest.approx(cosine(2, 100), rel=1e-12)


def test_a_budget_run_without_steps_resumes_with_its_command_and_keeps_its_schedule(
    tmp_path, monkeypatch, capsys
):
    """Killed in its fourth step (checkpoints every 2 steps), a 5.5 s run without steps resumes
    with the same command from step 2 and its 2 s: steps 2 to 5 begin at 2 to 5 s, the last at
    the cosine's rate at 5 of 5.5 s. Resumed with --steps or another budget, it is refused."""
    train = [*train_command(tmp_path, monkeypatch), "--out", "run", "--checkpoint-every", "2"]
    budget = [*train, "--budget-s", "5.5"]
    ticking_wall(monkeypatch, kill_at=7)  # the end of step 3: readings 6 and 7
    with pytest.raises(Killed):
        main(budget)
    assert load_checkpoint(tmp_path / "run")["step"] == 2
    ticking_wall(monkeypatch)
    assert main(budget) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["resumed_from"], report["steps"], report["train_s"]) == (2, 6, 6.0)
    assert last_rate(tmp_path / "run") == pytest.approx(cosine(5.0, 5.5), rel=1e-12)
    capsys.readouterr()
    for changed, after in ((["--steps", "50"], "50 steps"), (["--budget-s", "7"], "budget_s=7.0")):
        assert main([*budget, *changed]) == 2
        assert (
            "of a run on the cosine learning-rate schedule over budget_s=5.5 seconds (no steps); "
            f"resumed over {after}"
        ) in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run")["step"] == 6


def test_a_budget_run_over_steps_resumed_without_steps_is_told_to_give_them(
    tmp_path, monkeypatch, capsys
):
    """A run on the cosine over 1000 steps (what a budget run without --steps decayed over
    before), resumed with --budget-s and no --steps, would decay over the budget: refused,
    naming the --steps to resume with."""
    train = [*train_command(tmp_path, monkeypatch), "--out", "run", "--budget-s", "2.5"]
    ticking_wall(monkeypatch)
    assert main([*train, "--steps", "1000"]) == 0
    capsys.readouterr()
    assert main(train) == 2
    error = capsys.readouterr().err
    assert "of a run on the cosine learning-rate schedule over 1000 steps; resumed over " in error
    assert "afresh in another --out, or resume with --steps 1000" in error
