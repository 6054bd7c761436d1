"""What a checkpoint keeps to resume on the same data only, bitwise: the hash of every sample (and
the five samples older checkpoints hashed), numpy's and Python's random numbers, items drawn at
random, a module's extra state, and refusals worded for the caller."""

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import random
import warnings

import numpy as np
import pytest
import torch
from test_training import CONFIG, Crash, crashing, data, model, mse
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from physml.training import CheckpointError, MemberRows, Trainer, fingerprint, load_checkpoint
from physml.training.checkpoint import check_same_config, load_weights
from physml.training.fingerprint import differences

CONSTANT = dataclasses.replace(CONFIG, steps=4, schedule="constant")


def relabelled(index: int) -> TensorDataset:
    x, y = data().tensors
    y = y.clone()
    y[index] += 1.0
    return TensorDataset(x, y)


def test_a_run_resumed_on_data_with_any_one_sample_changed_is_refused(tmp_path):
    Trainer(model(), mse, CONSTANT, tmp_path, quiet=True).fit(data())
    longer = dataclasses.replace(CONSTANT, steps=8)
    for index in (2, 13, 22):  # none of the five samples older checkpoints hashed
        with pytest.raises(CheckpointError, match="other data.*sample_hash"):
            Trainer(model(), mse, longer, tmp_path, quiet=True).fit(relabelled(index))
    assert Trainer(model(), mse, longer, tmp_path, quiet=True).fit(data()).resumed_from == 4


def test_a_checkpoint_from_before_every_sample_was_hashed_resumes_checked_by_its_five(tmp_path):
    whole = Trainer(model(), mse, CONFIG, tmp_path / "whole", quiet=True).fit(data())
    with pytest.raises(Crash):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(data())
    x, y = data().tensors
    five = hashlib.sha256()
    for i in (0, 6, 12, 17, 23):  # evenly spread over the 24, as those checkpoints chose them
        five.update(x[i].numpy().tobytes() + y[i].numpy().tobytes())
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for key in ("numpy_rng", "python_rng"):
        del state[key]
    state["fingerprint"] = {
        "samples": 24,
        "shapes": [[1, 16], [1, 16]],
        "dtypes": ["torch.float32", "torch.float32"],
        "attributes": {},
        "sample_hash": five.hexdigest(),
    }
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="other data.*sample_hash"):
        Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(relabelled(6))
    resumed = Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(data())
    assert resumed.resumed_from == 4 and resumed.losses == whole.losses
    assert load_checkpoint(tmp_path)["fingerprint"]["hashed"] == "every sample"


class Augmented(Dataset):
    """``data()`` with noise drawn from numpy's and Python's global generators on each read."""

    def __init__(self) -> None:
        self.pairs = data()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.pairs[i]
        noise = np.random.standard_normal(x.shape).astype(np.float32)  # noqa: NPY002
        return x + 0.01 * torch.from_numpy(noise) + 0.01 * random.random(), y


def noisy_mse(net, batch):
    """``mse`` times a term drawn from numpy's and Python's global generators, by their normal
    draws (numpy's legacy one and ``random.gauss``), which make normals in pairs and keep the
    second for their next call."""
    draw = np.random.standard_normal() + random.gauss(0.0, 1.0)  # noqa: NPY002
    return mse(net, batch) * (1.0 + 0.01 * draw)


@pytest.mark.parametrize("drawn_by", ["dataset", "loss"])
def test_a_run_drawing_numpy_and_python_random_numbers_resumes_bitwise(tmp_path, drawn_by):
    """Checkpoints every 5 steps: by the one the run resumes from, the loss has drawn five
    normals from each generator, which keeps the sixth for its next draw."""
    pairs, loss = (Augmented(), mse) if drawn_by == "dataset" else (data(), noisy_mse)
    config = dataclasses.replace(CONFIG, checkpoint_every=5)

    def run(out, crash, seed):
        np.random.seed(seed)  # noqa: NPY002
        random.seed(seed)
        net = model()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "train: its items differ", RuntimeWarning)
            trainer = Trainer(net, loss, config, out, quiet=True, after_step=crash)
            return net, trainer.fit(pairs)

    def crash_at_7(net, step):
        if step == 7:
            raise Crash

    whole, report = run(tmp_path / "whole", None, 0)
    with pytest.raises(Crash):
        run(tmp_path / "cut", crash_at_7, 0)
    resumed, again = run(tmp_path / "cut", None, 99)  # a new process draws from other states
    assert again.resumed_from == 5 and again.losses == report.losses
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_two_fresh_runs_at_one_seed_draw_the_same_numpy_and_python_numbers():
    """The seed seeds numpy's and Python's global generators too, whatever state they were in:
    the first numbers the loss draws are those of generators seeded with it."""
    weights, first = [], []

    def drawing_mse(net, batch):
        draw = (np.random.standard_normal(), random.random())  # noqa: NPY002
        first.append(draw)
        return mse(net, batch) * (1.0 + 0.01 * sum(draw))

    for before in (1, 2):
        np.random.seed(before)  # noqa: NPY002
        random.seed(before)
        net = model()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "train: its items differ", RuntimeWarning)
            Trainer(net, mse, CONFIG, quiet=True).fit(Augmented())
        weights.append(net.state_dict())
        first.clear()
        Trainer(model(), drawing_mse, CONFIG, quiet=True).fit(data())
        seeded = np.random.RandomState(CONFIG.seed), random.Random(CONFIG.seed)  # noqa: NPY002
        assert first[0] == (seeded[0].standard_normal(), seeded[1].random())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


class Jittered(TensorDataset):
    """Pairs with noise from torch's generator on each read."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitem__(i)
        return x + 0.01 * torch.randn_like(x), y


def test_items_drawn_at_random_resume_with_a_warning_that_only_sizes_are_checked(tmp_path):
    from physml.training.fingerprint import RANDOM_ITEMS

    with pytest.raises(Crash), pytest.warns(RuntimeWarning, match="train: its items differ"):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(Jittered(*data().tensors))
    with pytest.warns(RuntimeWarning, match="size, shapes and dtypes only") as caught:
        report = Trainer(model(), mse, CONFIG, tmp_path, quiet=True).fit(Jittered(*data().tensors))
    assert report.resumed_from == 4 and len(caught) == 1
    printed = load_checkpoint(tmp_path)["fingerprint"]
    shapes, dtypes = [[1, 16], [1, 16]], ["torch.float32", "torch.float32"]
    assert printed["hashed"] == RANDOM_ITEMS and printed["sampled_hash"] is None
    assert (
        printed["sample_hash"]
        == hashlib.sha256(json.dumps([24, shapes, dtypes]).encode()).hexdigest()
    )
    longer = dataclasses.replace(CONFIG, steps=16)
    with pytest.raises(CheckpointError, match="hashed 'size, shapes and dtypes: .*' → 'every"):
        Trainer(model(), mse, longer, tmp_path, quiet=True).fit(data())


def test_the_fingerprint_leaves_every_random_generator_as_it_was():
    np.random.seed(3)  # noqa: NPY002
    random.seed(3)
    torch.manual_seed(3)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    with pytest.warns(RuntimeWarning, match="dataset: its items differ"):
        fingerprint(Augmented())
    with pytest.warns(RuntimeWarning):
        fingerprint(Jittered(*data().tensors))
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])  # noqa: NPY002
    assert random.getstate() == before[2]


class Rows(Dataset):
    """The items of a TensorDataset (or of numpy arrays) served one by one (no row-block
    hashing)."""

    def __init__(self, *tensors: torch.Tensor | np.ndarray) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[i] for t in self.tensors)


def test_a_tensor_dataset_hashed_in_blocks_of_rows_hashes_every_item_in_turn(monkeypatch):
    module = importlib.import_module("physml.training.fingerprint")  # not the function
    monkeypatch.setattr(module, "ROWS", 5)  # 24 rows: four whole blocks and a part
    x = torch.arange(24 * 3, dtype=torch.float64).reshape(24, 3)
    labels, empty = torch.arange(24) % 4, torch.zeros(24, 0)
    every = hashlib.sha256()
    for i in range(24):
        every.update(x[i].numpy().tobytes() + labels[i].numpy().tobytes())
    printed = fingerprint(TensorDataset(x, labels, empty))
    assert printed["sample_hash"] == every.hexdigest()
    assert printed == fingerprint(Rows(x, labels, empty))
    assert printed["shapes"] == [[3], [], [0]]


def every_item_hashed(dataset: Dataset) -> str:
    """The sha256 of the bytes of every item of ``dataset`` in turn."""
    every = hashlib.sha256()
    for i in range(len(dataset)):
        every.update(b"".join(part.numpy().tobytes() for part in dataset[i]))
    return every.hexdigest()


def test_member_rows_hash_every_item_from_their_rows_without_reading_each(monkeypatch):
    module = importlib.import_module("physml.training.fingerprint")
    monkeypatch.setattr(module, "ROWS", 5)  # 24 items: four whole blocks and a part
    reads = []
    read = MemberRows.__getitem__
    monkeypatch.setattr(MemberRows, "__getitem__", lambda rows, i: reads.append(i) or read(rows, i))
    x, y = torch.arange(24 * 3, dtype=torch.float32).reshape(24, 3), -torch.arange(24.0)
    rows = MemberRows(x, y, members=3, seed=1)
    printed = fingerprint(rows)
    assert len(reads) == 1 + 2 * 5  # the first item, and five read twice
    assert printed["hashed"] == "every sample"
    assert printed["sample_hash"] == every_item_hashed(rows)  # as checkpoints recorded it
    one_input, one_target = x.clone(), y.clone()
    one_input[7, 1] += 1.0
    one_target[17] += 1.0
    for inputs, targets in ((one_input, y), (x, one_target)):
        other = fingerprint(MemberRows(inputs, targets, members=3, seed=1))
        assert differences(printed, other)[0].startswith("sample_hash")


def test_big_endian_items_are_hashed_by_their_values():
    """Arrays read from a big-endian file (``>f8``) hash as the same values in native order: by
    value, not by the bytes of their order."""
    values = torch.arange(12.0, dtype=torch.float64).reshape(4, 3)
    big_endian = values.numpy().astype(">f8")
    assert fingerprint(Rows(big_endian))["sample_hash"] == every_item_hashed(Rows(values))


class Keyed(Dataset):
    """Items ``{"y": y[i], "x": x[i]}``: dicts whose keys are not in sorted order."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"y": self.y[i], "x": self.x[i]}


def test_dict_items_are_hashed_in_the_sorted_order_of_their_keys():
    """``{"y": y, "x": x}`` hashes as ``(x, y)``: the same items whatever the order their keys
    were written in."""
    x, y = data().tensors
    assert fingerprint(Keyed(x, y))["sample_hash"] == every_item_hashed(Rows(x, y))


class Shifted(MemberRows):
    """Member rows whose targets are read shifted: not what its ``item_rows`` say."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = super().__getitem__(i)
        return inputs, targets + 1.0


def test_items_that_are_not_the_rows_a_dataset_names_are_hashed_one_by_one():
    shifted = Shifted(torch.ones(24, 2), torch.zeros(24), members=2)
    assert fingerprint(shifted)["sample_hash"] == every_item_hashed(shifted)


class Drawn(Dataset):
    """Items drawn from a seed on demand, its attributes saying which; counts its reads."""

    items_follow_attributes = True
    attributes = {"seed": 0}

    def __init__(self) -> None:
        self.reads = 0

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, i: int) -> torch.Tensor:
        self.reads += 1
        return torch.randn(4, generator=torch.Generator().manual_seed(i))


def test_a_dataset_drawing_its_items_from_its_attributes_has_five_of_them_hashed():
    from physml.training.fingerprint import FOLLOW_ATTRIBUTES

    drawn = Drawn()
    printed = fingerprint(drawn)
    five = hashlib.sha256()
    for i in (0, 250, 500, 749, 999):
        five.update(drawn[i].numpy().tobytes())
    assert printed["hashed"] == FOLLOW_ATTRIBUTES
    assert printed["sample_hash"] == printed["sampled_hash"] == five.hexdigest()
    assert drawn.reads == 1 + 2 * 5 + 5


class Noted(nn.Module):
    """A model keeping a note in its extra state (``get_extra_state``)."""

    def __init__(self, note: object = None) -> None:
        super().__init__()
        self.net = model()
        self.note = {"steps": 0, "scale": torch.ones(2)} if note is None else note

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def get_extra_state(self) -> object:
        return self.note

    def set_extra_state(self, state: object) -> None:
        self.note = state


@pytest.mark.parametrize("nested", [False, True], ids=["model", "submodule"])
def test_a_models_extra_state_is_checkpointed_and_resumed(tmp_path, nested):
    """The model's own extra state (state dict key ``_extra_state``) or a submodule's
    (``0._extra_state``)."""

    def build() -> nn.Module:
        return nn.Sequential(Noted()) if nested else Noted()

    def noted(net: nn.Module) -> Noted:
        return net[0] if nested else net

    def count(net, step):
        noted(net).note = {"steps": step, "scale": noted(net).note["scale"] * 2}

    with pytest.raises(Crash):
        Trainer(build(), crashing(5), CONFIG, tmp_path, quiet=True, after_step=count).fit(data())
    resumed = build()
    Trainer(resumed, mse, CONFIG, tmp_path, quiet=True, after_step=count).fit(data())
    assert noted(resumed).note["steps"] == CONFIG.steps
    assert torch.equal(noted(resumed).note["scale"], torch.full((2,), 2.0**CONFIG.steps))


def test_extra_state_a_checkpoint_cannot_hold_is_refused_before_the_first_step(tmp_path):
    done = []
    for note, held in (({"how": object()}, "'object'"), ({"mean": np.zeros(3)}, "'numpy")):
        trainer = Trainer(
            Noted(note), mse, CONFIG, tmp_path / "run", quiet=True, after_step=done.append
        )
        with pytest.raises(
            TypeError, match=rf"extra state .*\['_extra_state'\] cannot be checkpointed .*: {held}"
        ):
            trainer.fit(data())
    assert done == [] and not (tmp_path / "run").exists()


def test_extra_state_holding_a_function_of_a_blocked_module_is_refused_naming_it(tmp_path):
    """torch refuses ``os.system`` in other words than a class it does not allow; the refusal
    names it and never quotes torch's advice to load with weights_only=False."""
    trainer = Trainer(Noted({"run": os.system}), mse, CONFIG, tmp_path / "run", quiet=True)
    with pytest.raises(TypeError) as refused:
        trainer.fit(data())
    message = str(refused.value)
    reason = f"weights_only=True: '{os.system.__module__}.system' is not a type it reads)"
    assert f"cannot be checkpointed (torch.save, then torch.load with {reason}" in message
    assert "False" not in message


def test_extra_state_a_checkpoint_reads_back_is_resumed_though_its_keys_are_integers(tmp_path):
    seen = []

    def count(net, step):
        seen.append(sorted(net.note))
        net.note = {step: torch.full((2,), float(step))}

    with pytest.raises(Crash):
        Trainer(
            Noted({0: torch.zeros(2)}), crashing(5), CONFIG, tmp_path, quiet=True, after_step=count
        ).fit(data())
    resumed = Noted({0: torch.zeros(2)})
    Trainer(resumed, mse, CONFIG, tmp_path, quiet=True, after_step=count).fit(data())
    assert seen == [[0], [1], [2], [3], [4], [4], *([step] for step in range(5, 12))]
    assert resumed.note.keys() == {12} and torch.equal(resumed.note[12], torch.full((2,), 12.0))


class Columns(TensorDataset):
    """A dataset naming its columns in a list called ``attributes``."""

    attributes = ["x", "y"]


def test_a_dataset_whose_attributes_are_no_mapping_trains_without_them(tmp_path):
    report = Trainer(model(), mse, CONSTANT, tmp_path, quiet=True).fit(Columns(*data().tensors))
    assert len(report.losses) == CONSTANT.steps
    assert load_checkpoint(tmp_path)["fingerprint"]["attributes"] == {}


def test_a_subset_of_a_described_file_is_named_once_not_attribute_by_attribute():
    class Described(TensorDataset):
        attributes = {"pde": "heat", "seed": 0, "nx": 16}

    whole = fingerprint(Described(*data().tensors))
    part = fingerprint(Subset(Described(*data().tensors), range(24)))
    assert differences(whole, part) == [
        "attributes: a file's description (3 entries) → none (a dataset without attributes, "
        "e.g. a Subset)"
    ]


def test_the_cosine_refusal_advises_a_python_caller_without_flags():
    state = {"step": 4, "config": {"schedule": "cosine", "steps": 12}}
    asked = {"schedule": "cosine", "steps": 20}
    with pytest.raises(CheckpointError) as refused:
        check_same_config(state, asked, "run", "pass another out= folder")
    message = str(refused.value)
    assert "--" not in message, message
    assert "afresh (pass another out= folder), or resume for the 12 steps" in message
    with pytest.raises(CheckpointError, match="in another --out, or resume with --steps 12"):
        check_same_config(state, asked, "run")


def test_weights_that_do_not_fit_a_model_given_without_config_name_no_config(tmp_path):
    with contextlib.suppress(Crash):
        Trainer(model(), crashing(5), CONFIG, tmp_path, quiet=True).fit(data())
    wider = nn.Sequential(nn.Conv1d(1, 16, 3, padding=1), nn.GELU(), nn.Conv1d(16, 1, 1))
    with pytest.raises(CheckpointError) as refused:
        Trainer(wider, mse, CONFIG, tmp_path, quiet=True).fit(data())
    assert "do not fit this model (" in str(refused.value)
    assert "config" not in str(refused.value)
    with pytest.raises(CheckpointError, match="do not fit the model its config describes"):
        load_weights(wider, load_checkpoint(tmp_path), tmp_path)


def test_validation_leaves_numpy_and_python_random_numbers_of_training_as_they_were():
    losses = []
    for validation, every in ((None, 0), (data(seed=5, n=10), 2)):
        np.random.seed(0)  # noqa: NPY002
        random.seed(0)
        config = dataclasses.replace(CONFIG, validate_every=every)
        report = Trainer(model(), noisy_mse, config, quiet=True).fit(data(), validation)
        losses.append(report.losses)
    assert losses[0] == losses[1]


def test_a_grid_kind_read_later_is_no_difference_on_pdebench_data_only():
    """The cell centres the PDEBench reader now records (``grid_kind``) are no difference from a
    fingerprint of PDEBench data read before (named by the reader, or by the file's own ``pde``);
    on other data, or as another value, they are."""
    pdebench = {"pde": "pdebench: 1D_Advection", "source_format": "pdebench"}
    named = {"pde": "advection", "source_format": "pdebench-ns"}
    ours = {"pde": "heat", "boundary": "dirichlet"}
    for old, new, expected in [
        (pdebench, {**pdebench, "grid_kind": "cell"}, []),
        (named, {**named, "grid_kind": "cell"}, []),
        (pdebench, {**pdebench, "grid_kind": "node"}, ["attribute 'grid_kind' None → 'node'"]),
        (ours, {**ours, "grid_kind": "cell"}, ["attribute 'grid_kind' None → 'cell'"]),
    ]:
        assert differences({"attributes": old}, {"attributes": new}) == expected
