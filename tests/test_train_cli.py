"""The scientist's walk at toy size, from a fresh folder: generate → train → evaluate → resume."""

import itertools
import json
import re
import shutil
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pdes import Grid1D
from pdes.gpme import stefan_total_mass
from physml import _clock, constrain, mass_conservation
from physml.cli import main
from physml.data import PointRows, PointSets, load
from physml.models import AttentiveNeuralProcess
from physml.tasks.probconserv import OnGrid
from physml.training import CheckpointError, load_anp, load_checkpoint, load_run
from physml.training.checkpoint import save_checkpoint
from physml.training.commands import (
    check_run_folder,
    file_name_parameters_to_declare,
    settings_differ,
)
from physml.training.families import check_same_pairs

SMALL = ["--modes", "4", "--hidden", "8", "--layers", "2", "--batch", "4", "--quiet"]


@pytest.fixture
def heat(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "12", "--nx", "33", "--out", "heat.h5", "--quiet"]) == 0
    return tmp_path


def test_generate_train_evaluate_and_resume(heat, capsys):
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "6", *SMALL]) == 0
    report = json.loads((heat / "run" / "report.json").read_text())
    assert report["steps"] == 6 and report["resumed_from"] == 0 and report["validation"]
    assert main(["evaluate", "--checkpoint", "run", "--data", "heat.h5"]) == 0
    out = capsys.readouterr().out
    assert "rel_l2" in out and (heat / "run" / "evaluation" / "samples.png").exists()
    scores = json.loads((heat / "run" / "evaluation" / "metrics.json").read_text())
    assert scores["samples"] == 12 and scores["rel_l2"] > 0
    assert main([*train, "--steps", "10", *SMALL]) == 2  # the cosine decay ended at step 6
    assert "cosine learning-rate schedule over 6 steps" in capsys.readouterr().err
    constant = [*train[:-1], "constant-run", "--schedule", "constant", *SMALL]
    assert main([*constant, "--steps", "6"]) == 0
    assert main([*constant, "--steps", "10"]) == 0  # trains on from step 6
    assert json.loads((heat / "constant-run" / "report.json").read_text())["resumed_from"] == 6
    assert main([*train, "--steps", "12", "--lr", "0.5", *SMALL]) == 2  # another setting
    assert "other settings (lr" in capsys.readouterr().err


def test_train_refuses_an_out_folder_of_other_files_and_starts_over_where_a_run_was(heat, capsys):
    """A folder holding the user's own report.json is not written in; the run's log or config
    beside it, an empty folder, or one a run left after its checkpoint was deleted (to start
    over), is trained in."""
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out"]
    mine = heat / "mine"
    mine.mkdir()
    (mine / "report.json").write_text('{"my": "results"}')
    (mine / "notes.txt").write_text("notes")
    assert main([*train, "mine", "--steps", "2", *SMALL]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --out: 'mine' holds a report.json that is not a report of physml "
        "train, which the run would write over: move it, or use a new or empty folder\n"
    )
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "report.json"]
    assert (mine / "report.json").read_text() == '{"my": "results"}'
    logged = heat / "logged"
    logged.mkdir()
    (logged / "train.log").write_text("")  # as `physml train ... > logged/train.log` leaves it
    assert main([*train, "logged", "--steps", "1", *SMALL]) == 0
    assert (logged / "checkpoint.pt").exists() and (logged / "train.log").exists()
    (heat / "empty").mkdir()
    assert main([*train, "empty", "--steps", "1", *SMALL]) == 0
    (heat / "empty" / "evaluation").mkdir()  # where physml evaluate writes
    (heat / "empty" / "checkpoint.pt").unlink()
    assert main([*train, "empty", "--steps", "2", *SMALL]) == 0
    assert json.loads((heat / "empty" / "report.json").read_text())["steps"] == 2


def _rewritten(source: str, out: str, samples: slice = slice(None), times: slice = slice(None)):
    """A copy of the dataset file ``source`` holding only ``samples`` and ``times``."""
    with h5py.File(source) as f, h5py.File(out, "w") as g:
        count = f["u"].shape[0]
        for name, value in f.attrs.items():
            g.attrs[name] = value
        settings = json.loads(f.attrs["settings"])
        settings["nt"] = len(f["t"][times])
        g.attrs["settings"] = json.dumps(settings, sort_keys=True)

        def copy(name, item):
            if isinstance(item, h5py.Group):
                g.require_group(name)
                return
            value = item[()]
            if value.shape[:1] == (count,):
                value = value[samples]
            g[name] = value[:, times] if name == "u" else value[times] if name == "t" else value

        f.visititems(copy)


HASH = "'[0-9a-f]{64}'"


def test_resuming_with_another_val_fraction_names_the_split(heat, capsys):
    """12 samples: --val-fraction 0.25 trains on 9, 0.5 on 6, of the same file."""
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", "--val-fraction", "0.25", *SMALL]) == 0
    assert main([*train, "--steps", "2", "--val-fraction", "0.5", *SMALL]) == 2
    assert re.fullmatch(
        rf"physml train: error: checkpoint: 'run' was trained on other data \(samples 9 → 6; "
        rf"sample_hash {HASH} → {HASH}; the file's attributes are the same: the run trained on 9 "
        r"of its 12 samples, this command on 6, holding another share out for validation "
        r"\(another --val-fraction\)\); refusing to resume\. Use another --out, or the data it "
        r"was made on\.\n",
        capsys.readouterr().err,
    )
    other = ["generate", "heat", "--n", "12", "--nx", "33", "--seed", "1", "--out", "other.h5"]
    assert main([*other, "--quiet"]) == 0
    assert main([*train[:2], "other.h5", *train[3:], "--steps", "2", *SMALL]) == 2
    err = capsys.readouterr().err  # another file (its seed): no word of the split
    assert "attribute 'seed' 0 → 1" in err and "--val-fraction" not in err


@pytest.mark.parametrize("other", ["burgers", "burgers-dirichlet"])
def test_resuming_on_another_pde_names_the_two_pdes_first(heat, capsys, other):
    """Burgers on the periodic [0, 1) builds another model than heat (periodic); Burgers with
    walls the same model, but differs in every attribute: either way the PDE is what differs."""
    size = ["--n", "4", "--nx", "32", "--nt", "6", "--quiet"]
    assert main(["generate", other, *size, "--out", "other.h5"]) == 0
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    assert main([*train[:2], "other.h5", *train[3:], "--steps", "1", *SMALL]) == 2
    assert capsys.readouterr().err == (
        f"physml train: error: checkpoint: 'run' was trained on 'heat' solutions, but --data "
        f"holds {other!r} ones; refusing to resume. Use another --out, or the data it was made "
        "on.\n"
    )


def test_a_file_no_split_could_give_is_not_blamed_on_val_fraction(heat, capsys):
    """Trained on 11 of 12 samples (one held out); resumed on a copy of the first 4 with the same
    attributes: 4 samples hold no share of 11, whatever is held out."""
    _rewritten("heat.h5", "first4.h5", samples=slice(0, 4))
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    assert main([*train[:2], "first4.h5", *train[3:], "--steps", "2", *SMALL]) == 2
    assert re.fullmatch(
        rf"physml train: error: checkpoint: 'run' was trained on other data \(samples 11 → 4; "
        rf"sample_hash {HASH} → {HASH}\); refusing to resume\. Use another --out, or the data it "
        r"was made on\.\n",
        capsys.readouterr().err,
    )
    # a checkpoint from before the validation set was recorded: a guess, where a split could fit
    state = torch.load("run/checkpoint.pt", weights_only=True)
    del state["validation_fingerprint"]
    torch.save(state, "run/checkpoint.pt")
    assert main([*train[:2], "first4.h5", *train[3:], "--steps", "2", *SMALL]) == 2
    assert "--val-fraction" not in capsys.readouterr().err  # 11 > 4: no split of it
    assert main([*train, "--steps", "2", "--val-fraction", "0.5", *SMALL]) == 2
    assert (
        "; the file's attributes are the same, so another share of it was held out for "
        "validation (another --val-fraction?)); refusing to resume"
    ) in capsys.readouterr().err


def test_a_single_time_file_is_one_line_naming_data(heat, capsys):
    """Valid output of the code before nt >= 2 was required: no pair of times to train on."""
    _rewritten("heat.h5", "one.h5", times=slice(0, 1))
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    assert main([*train[:2], "one.h5", *train[3:-1], "one", "--steps", "1", *SMALL]) == 2
    line = (
        "--data: 'one.h5' holds a single time (u of shape (12, 1, 33): sample, time, *space); "
        "the fno of task operator maps fields at one time to another and needs at least two "
        "(generate with --nt >= 2)\n"
    )
    assert capsys.readouterr().err == "physml train: error: " + line
    assert not (heat / "one").exists()
    assert main(["evaluate", "--checkpoint", "run", "--data", "one.h5"]) == 2
    assert capsys.readouterr().err == "physml evaluate: error: " + line
    ensemble = ["train", "--data", "one.h5", "--model", "ensemble", "--task", "operator"]
    tiny = ["--hidden", "4", "--layers", "1", "--members", "2", "--batch", "4", "--quiet"]
    assert main([*ensemble, "--out", "points", "--steps", "1", *tiny]) == 0  # (t, x) rows


def test_a_series_of_one_point_is_one_line_naming_u_for_the_fno(tmp_path, monkeypatch, capsys):
    """u (sample, time, 1) loads, but an FNO keeps no Fourier mode of one point (before: "n_modes
    entries must be >= 1, got (0,)")."""
    monkeypatch.chdir(tmp_path)
    with h5py.File("series.h5", "w") as f:
        f.attrs["format"] = "physml-dataset/1"
        f["u"], f["t"] = np.zeros((8, 5, 1)), np.arange(5.0)
    train = ["train", "--data", "series.h5", "--model", "fno", "--task", "operator"]
    assert main([*train, "--out", "run", "--steps", "1", *SMALL]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --data: model fno keeps Fourier modes up to half of each space "
        "axis, so it needs 2 points at least on each, the file holds 1 on one (u of shape "
        "(8, 5, 1): sample, time, *space)\n"
    )


def test_a_file_of_no_samples_is_one_line_naming_data_exit_2(heat, capsys):
    """Before: an IndexError traceback (exit 1) from the first item of an empty dataset."""
    _rewritten("heat.h5", "empty.h5", samples=slice(0, 0))
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    assert main([*train[:2], "empty.h5", *train[3:-1], "none", "--steps", "1", *SMALL]) == 2
    line = "--data: 'empty.h5': holds no samples: u has shape (0, 26, 33)\n"
    assert capsys.readouterr().err == "physml train: error: " + line
    assert main(["evaluate", "--checkpoint", "run", "--data", "empty.h5"]) == 2
    assert capsys.readouterr().err == "physml evaluate: error: " + line


def test_a_run_on_a_file_from_before_the_equation_was_kept_resumes_on_it_regenerated(heat):
    """The file regenerated by this physml keeps the recipe's equation, which the checkpoint of
    the earlier file lacks: the same data, so the run resumes."""
    with h5py.File("heat.h5", "r+") as f:
        equation = f.attrs["equation"]
        del f.attrs["equation"]  # as an earlier physml wrote it
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", "--schedule", "constant", *SMALL]) == 0
    with h5py.File("heat.h5", "r+") as f:
        f.attrs["equation"] = equation
    assert main([*train, "--steps", "2", "--schedule", "constant", *SMALL]) == 0
    assert json.loads((heat / "run" / "report.json").read_text())["resumed_from"] == 1


def test_rerunning_a_finished_run_keeps_its_report(heat):
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "2", *SMALL]) == 0
    first = (heat / "run" / "report.json").read_text()
    assert main([*train, "--steps", "2", *SMALL]) == 0  # nothing left to train
    assert (heat / "run" / "report.json").read_text() == first


def test_rerunning_a_finished_run_rewrites_a_report_an_earlier_call_left(heat):
    """A run killed after its last checkpoint and before its report.json keeps the report of an
    earlier call (here of the 2 steps a constant run began with): rerun with nothing left to
    train, it leaves a report of the run at its last step, with the keys of any report."""
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    train += ["--schedule", "constant", *SMALL]
    assert main([*train, "--steps", "2"]) == 0
    earlier = (heat / "run" / "report.json").read_text()
    assert main([*train, "--steps", "4"]) == 0
    keys = set(json.loads((heat / "run" / "report.json").read_text()))
    (heat / "run" / "report.json").write_text(earlier)  # as the kill left it
    assert main([*train, "--steps", "4"]) == 0
    report = json.loads((heat / "run" / "report.json").read_text())
    state = load_checkpoint(heat / "run")
    assert set(report) == keys
    assert (report["steps"], report["resumed_from"], report["samples_per_s"]) == (4, 4, 0.0)
    assert report["final_loss"] == state["losses"][-1] and len(state["losses"]) == 4
    assert [at for at, _ in state["validation"]] == [2, 4]
    assert report["validation"] == state["validation"]
    assert report["train_s"] == state["train_s"]
    assert (report["stopped_at"], report["budget_s"], report["clock"]) == (None, None, "wall")
    assert not list((heat / "run").glob("*.tmp"))


def test_rerunning_a_finished_run_reports_its_new_budget_and_final_validation(heat, monkeypatch):
    """A run the budget stopped with no validation recorded, rerun with a smaller budget (spent
    already) and a validation set: nothing is trained, the run validates at its step, and
    report.json gives that validation and the new budget; the timing stays that of the call
    that trained."""
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    train += ["--steps", "100", *SMALL]
    ticks = iter(range(10**6))  # 1 s a reading: a step reads the clock twice
    monkeypatch.setitem(_clock.CLOCKS, "wall", lambda: float(next(ticks)))
    assert main([*train, "--budget-s", "2.5"]) == 0
    first = json.loads((heat / "run" / "report.json").read_text())
    assert first["steps"] == first["stopped_at"] == 3 and first["validation"]
    first["validation"] = []  # as a run that validated nothing leaves its folder
    (heat / "run" / "report.json").write_text(json.dumps(first))
    state = load_checkpoint(heat / "run")
    save_checkpoint(heat / "run", {**state, "validation": []})
    assert main([*train, "--budget-s", "2.0"]) == 0
    report = json.loads((heat / "run" / "report.json").read_text())
    state = load_checkpoint(heat / "run")
    assert [at for at, _ in state["validation"]] == [3]
    assert report == {**first, "validation": state["validation"], "budget_s": 2.0}


def test_a_checkpoint_file_of_any_name_is_evaluated_into_its_folder(heat, capsys):
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    (heat / "run" / "best.pt").write_bytes((heat / "run" / "checkpoint.pt").read_bytes())
    assert main(["evaluate", "--checkpoint", "run/best.pt", "--data", "heat.h5"]) == 0
    assert json.loads((heat / "run" / "evaluation" / "metrics.json").read_text())["samples"] == 12


def test_a_model_on_data_of_another_dimension_is_one_clear_line(heat, capsys):
    frames = ["generate", "navier-stokes", "--n", "3", "--nx", "16", "--nt", "6", "--quiet"]
    assert main([*frames, "--t-end", "0.5", "--out", "ns.h5"]) == 0
    for model, task, data, wanted in (  # the file's shape: 12 samples, not the 11 of training
        ("unet", "forecast", "heat.h5", "needs 2-D data, the file holds 1-D fields (u of shape "
         "(12, 26, 33): sample, time, *space)"),
        ("anp", "operator", "ns.h5", "needs 1-D data, the file holds 2-D fields (u of shape "
         "(3, 6, 16, 16): sample, time, *space)"),
    ):  # fmt: skip
        command = ["train", "--data", data, "--model", model, "--task", task, "--out", model]
        assert main([*command, "--steps", "1", "--batch", "2", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"model {model} {wanted}" in err and err.count("\n") == 0
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "fno"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    assert main(["evaluate", "--checkpoint", "fno", "--data", "ns.h5"]) == 2
    err = capsys.readouterr().err  # another PDE: named before the shapes are compared
    named = "--data: 'ns.h5' holds 'navier-stokes' solutions, but the fno of 'fno' was trained on "
    assert named + "'heat' ones" in err and "2-D" not in err
    with h5py.File("ns.h5", "r+") as file:
        del file.attrs["pde"]  # a file that names no PDE: only its shapes tell
    assert main(["evaluate", "--checkpoint", "fno", "--data", "ns.h5"]) == 2
    assert "--data holds 2-D fields, but the model was trained on 1-D ones" in (
        capsys.readouterr().err
    )


def test_an_fno_scored_on_another_pde_of_the_same_shapes_is_refused(heat, capsys):
    """A heat-trained FNO on a Burgers file of the same grid: pairs of the same shapes, so only
    the PDE the checkpoint recorded tells them apart; both are named."""
    assert main(["generate", "burgers", "--n", "4", "--nx", "33", "--out", "b.h5", "--quiet"]) == 0
    for model, task in (("fno", "operator"), ("boon-fno", "operator"), ("fno", "rollout")):
        train = ["train", "--data", "heat.h5", "--model", model, "--task", task, "--out", "r"]
        assert main([*train[:-1], f"{model}-{task}", "--steps", "1", *SMALL]) == 0
        assert main(["evaluate", "--checkpoint", f"{model}-{task}", "--data", "b.h5"]) == 2
        err = capsys.readouterr().err
        assert "'b.h5' holds 'burgers' solutions" in err
        assert f"the {model} of '{model}-{task}' was trained on 'heat' ones" in err
    assert main(["evaluate", "--checkpoint", "fno-operator", "--data", "heat.h5"]) == 0


def test_evaluate_names_and_records_the_settings_a_file_differs_in(heat, capsys):
    """The heat fixture: nx 33, the recipe's defaults (bc neumann, kappa 0.01, t_end 1, nt 26).
    A file of another grid, kappa, t_end and nt is scored, and each difference is listed."""
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    other = ["generate", "heat", "--n", "4", "--nx", "17", "--kappa", "0.02", "--t-end", "0.5"]
    assert main([*other, "--nt", "5", "--out", "other.h5", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "r", "--data", "other.h5"]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: 'other.h5' was generated with other settings than the training file: kappa 0.01 "
        "→ 0.02, nt 26 → 5, nx 33 → 17, t_end 1.0 → 0.5 (scored all the same)"
    ]
    assert "rel_l2" in out
    scores = json.loads((heat / "r" / "evaluation" / "metrics.json").read_text())
    assert scores["settings_differ"] == {
        "kappa": {"training": 0.01, "data": 0.02},
        "nt": {"training": 26, "data": 5},
        "nx": {"training": 33, "data": 17},
        "t_end": {"training": 1.0, "data": 0.5},
    }
    assert scores["solutions"] == 4
    assert main(["evaluate", "--checkpoint", "r", "--data", "heat.h5"]) == 0  # its own settings
    assert "note:" not in capsys.readouterr().out
    scores = json.loads((heat / "r" / "evaluation" / "metrics.json").read_text())
    assert "settings_differ" not in scores


def test_a_file_that_names_no_pde_is_scored_with_a_note_and_pde_unchecked(heat, capsys):
    """Either file without a 'pde' attribute: the cross-PDE refusal cannot judge, and says so."""
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    _rewritten("heat.h5", "unnamed.h5")
    with h5py.File("unnamed.h5", "r+") as f:
        del f.attrs["pde"]
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "r", "--data", "unnamed.h5"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: no PDE is recorded (attribute 'pde') in 'unnamed.h5', so whether the data hold "
        "the PDE the run learned was not checked (pde_unchecked in metrics.json)"
    ]
    scores = json.loads((heat / "r" / "evaluation" / "metrics.json").read_text())
    assert scores["pde_unchecked"] is True
    assert main([*train[:2], "unnamed.h5", *train[3:-1], "u", "--steps", "1", *SMALL]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "u", "--data", "heat.h5"]) == 0
    assert "attribute 'pde') in the training file, so" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", "r", "--data", "heat.h5"]) == 0  # both named
    assert "note:" not in capsys.readouterr().out
    scores = json.loads((heat / "r" / "evaluation" / "metrics.json").read_text())
    assert "pde_unchecked" not in scores


def advection_file_and_copy(samples: int, points: int) -> None:
    """A PDEBench advection file named for beta = 1.0 in the working folder, and a byte-identical
    copy of it, ``advection_test.hdf5``."""
    rng = np.random.default_rng(0)
    with h5py.File("1D_Advection_Sols_beta1.0.hdf5", "w") as f:
        f["tensor"] = rng.normal(size=(samples, 3, points))
        f["t-coordinate"] = np.arange(4) * 0.1
        f["x-coordinate"] = (np.arange(points) + 0.5) / points
    shutil.copy("1D_Advection_Sols_beta1.0.hdf5", "advection_test.hdf5")


def test_a_pdebench_copy_under_another_name_is_refused_saying_how_to_declare_its_pde(
    tmp_path, monkeypatch, capsys
):
    """A PDEBench file's PDE is its file name: a byte-identical copy under another name is
    another PDE until the file says otherwise, as the refusal tells how to."""
    monkeypatch.chdir(tmp_path)
    advection_file_and_copy(samples=8, points=16)
    train = ["train", "--data", "1D_Advection_Sols_beta1.0.hdf5", "--model", "fno"]
    assert main([*train, "--task", "operator", "--out", "r", "--steps", "1", *SMALL]) == 0
    assert main(["evaluate", "--checkpoint", "r", "--data", "advection_test.hdf5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "physml evaluate: error: --data: 'advection_test.hdf5' holds 'pdebench: advection_test' "
        "solutions, but the fno of 'r' was trained on 'pdebench: 1D_Advection_Sols_beta1.0' ones"
    )
    assert err.endswith(
        ". A PDEBench file without a root attribute 'pde' is named after its file name "
        "('pdebench: 1D_Advection_Sols_beta1.0', 'pdebench: advection_test'); if "
        "'advection_test.hdf5' holds the PDE the run learned, say so: "
        "h5py.File('advection_test.hdf5', 'a').attrs['pde'] = "
        "'pdebench: 1D_Advection_Sols_beta1.0'\n"
    )
    with h5py.File("advection_test.hdf5", "a") as f:  # what the message says, done
        f.attrs["pde"] = "pdebench: 1D_Advection_Sols_beta1.0"
    assert main(["evaluate", "--checkpoint", "r", "--data", "advection_test.hdf5"]) == 0


def test_a_pdebench_copy_declared_as_told_scores_an_ensemble_that_read_the_file_names_beta(
    tmp_path, monkeypatch, capsys
):
    """The ensemble reads beta, which the training file's name gave (beta1.0): declaring the
    copy's PDE alone left it without beta, another refusal; the line the refusal gives sets both."""
    monkeypatch.chdir(tmp_path)
    advection_file_and_copy(samples=4, points=8)
    train = ["train", "--data", "1D_Advection_Sols_beta1.0.hdf5", "--model", "ensemble"]
    options = ["--hidden", "4", "--layers", "1", "--members", "2", "--batch", "8", "--quiet"]
    assert main([*train, "--task", "operator", "--out", "r", "--steps", "1", *options]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "r", "--data", "advection_test.hdf5"]) == 2
    line = (
        "h5py.File('advection_test.hdf5', 'a').attrs.update({'pde': 'pdebench: "
        "1D_Advection_Sols_beta1.0', 'beta': 1.0})"
    )
    assert capsys.readouterr().err.endswith(
        f"say so: {line} (the run read those parameters from its file's name)\n"
    )
    exec(line, {"h5py": h5py})  # what the message says, done
    assert main(["evaluate", "--checkpoint", "r", "--data", "advection_test.hdf5"]) == 0


def test_converted_pdebench_files_of_one_pde_may_score_each_other():
    """Converted PDEBench files name their PDE by file name: two of one PDE (another viscosity,
    another name) may score each other; another PDE, or a converted file against a recipe, not."""
    from physml.training.commands import same_problem

    a, b = "pdebench: 1D_Burgers_Sols_Nu0.01", "pdebench: 1D_Burgers_Sols_Nu0.1"
    assert same_problem(a, b) and same_problem("heat", "heat")
    assert same_problem(None, "heat") and same_problem("heat", None)
    assert not same_problem("heat", "burgers") and not same_problem(a, "burgers")
    assert not same_problem(a, "pdebench: 1D_Advection_Sols_beta0.1")  # another PDE, same shapes
    assert same_problem("pdebench: ReacDiff_Nu0.5_Rho1.0", "pdebench: ReacDiff_Nu2.0_Rho1.0")


def test_train_help_shows_every_default(capsys):
    from dataclasses import fields

    from physml.training import TrainConfig
    from physml.training.families import DEFAULTS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in fields(TrainConfig):
        if field.name in ("steps", "batch", "lr", "seed", "accumulate"):
            assert f"--{field.name} {field.name.upper()} default {field.default}" in text
    for name, default in DEFAULTS.items():
        flag = name.replace("_", "-")
        assert f"--{flag} {name.upper()} model setting, default {default}" in text


def test_data_that_is_a_folder_is_named_as_such(heat, capsys):
    (heat / "folder").mkdir()
    command = ["train", "--data", "folder", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main(command) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --data: 'folder' is a folder, not a dataset file\n"
    )
    assert main([*command[:2], "missing.h5", *command[3:]]) == 2
    assert (
        capsys.readouterr().err == "physml train: error: --data: no dataset file at 'missing.h5'\n"
    )
    onto = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out"]
    assert main([*onto, "heat.h5"]) == 2
    assert "--out: 'heat.h5' is a file; physml train writes a run folder" in (
        capsys.readouterr().err
    )


def test_a_run_that_diverges_says_so_with_the_step_and_what_to_change(heat, capsys):
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main([*train, "--steps", "5", "--lr", "1e8", "--schedule", "constant", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "--lr" in err and "--clip" in err
    assert not (heat / "r" / "checkpoint.pt").exists()


def test_config_file_mirrors_the_flags(heat):
    (heat / "run.toml").write_text(
        'model = "fno"\ntask = "rollout"\nsteps = 3\nbatch = 4\nmodes = 4\nhidden = 8\nlayers = 2\n'
    )
    command = ["train", "--data", "heat.h5", "--config", "run.toml", "--out", "r", "--quiet"]
    assert main(command) == 0
    assert json.loads((heat / "r" / "report.json").read_text())["steps"] == 3
    (heat / "bad.toml").write_text('model = "fno"\nlearning_rate = 1\n')
    assert main(["train", "--data", "heat.h5", "--config", "bad.toml", "--out", "b"]) == 2


def test_config_file_may_name_the_data_and_the_run_folder(heat, capsys):
    settings = 'model = "fno"\ntask = "operator"\nsteps = 2\nbatch = 4\nmodes = 4\nhidden = 8\n'
    (heat / "run.toml").write_text(f'data = "heat.h5"\nout = "r"\n{settings}')
    assert main(["train", "--config", "run.toml", "--quiet"]) == 0
    assert (heat / "r" / "checkpoint.pt").is_file()
    assert main(["train", "--config", "run.toml", "--out", "flag", "--quiet"]) == 0
    assert (heat / "flag" / "checkpoint.pt").is_file()  # the flag wins over the key
    capsys.readouterr()
    (heat / "no-out.toml").write_text(f'data = "heat.h5"\n{settings}')
    assert main(["train", "--config", "no-out.toml"]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --out is required (as a flag or in --config)\n"
    )
    (heat / "number.toml").write_text(f'data = "heat.h5"\nout = 3\n{settings}')
    assert main(["train", "--config", "number.toml"]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --config: out must be a string, the run folder, got 3\n"
    )
    (heat / "missing.toml").write_text(f'data = "gone.h5"\nout = "r2"\n{settings}')
    assert main(["train", "--config", "missing.toml"]) == 2
    assert capsys.readouterr().err == (  # the path came from the file, not from a flag
        "physml train: error: data in --config 'missing.toml': no dataset file at 'gone.h5'\n"
    )
    assert main(["train", "--config", "missing.toml", "--data", "gone2.h5"]) == 2
    assert capsys.readouterr().err.startswith("physml train: error: --data: no dataset file")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "earthformer", "--task", "operator"], "serves the task"),
        (["--model", "fno", "--task", "operator", "--device", "cuda:99"], "device"),
        (["--model", "fno", "--task", "operator", "--batch", "100"], "exceeds the"),
        (["--model", "fno", "--task", "operator", "--val-fraction", "1.5"], "val-fraction"),
        (["--task", "operator"], "--model is required"),
    ],
)
def test_bad_training_requests_are_one_clear_line(heat, capsys, arguments, message):
    assert main(["train", "--data", "heat.h5", "--out", "x", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_the_same_command_twice_gives_the_same_weights(heat):
    """--seed fixes the initial weights too, not only the batches."""
    from physml.training import load_checkpoint

    for out in ("a", "b"):
        command = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator"]
        assert main([*command, "--out", out, "--steps", "2", *SMALL]) == 0
    first, second = load_checkpoint(heat / "a")["model"], load_checkpoint(heat / "b")["model"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_evaluating_on_pairs_the_model_cannot_take_is_one_clear_line(heat, capsys):
    command = ["train", "--data", "heat.h5", "--model", "fno", "--task", "rollout", "--out", "r"]
    assert main([*command, "--k", "2", "--steps", "1", *SMALL]) == 0
    coarse = ["generate", "heat", "--n", "4", "--nx", "17", "--out", "coarse.h5", "--quiet"]
    assert main(coarse) == 0
    assert main(["evaluate", "--checkpoint", "r", "--data", "coarse.h5"]) == 0  # FNO: any grid
    assert "rel_l2" in capsys.readouterr().out
    scores = json.loads((heat / "r" / "evaluation" / "metrics.json").read_text())
    times = load("coarse.h5").u.shape[1]  # u(t) -> u(t + 2): times - 2 pairs per solution
    assert scores["solutions"] == 4 and scores["samples"] == 4 * (times - 2)
    assert main(["evaluate", "--checkpoint", "nowhere", "--data", "heat.h5"]) == 2
    assert capsys.readouterr().err == (
        "physml evaluate: error: --checkpoint: no run folder or checkpoint file at 'nowhere'\n"
    )
    (heat / "empty").mkdir()
    assert main(["evaluate", "--checkpoint", "empty", "--data", "heat.h5"]) == 2
    assert capsys.readouterr().err == (
        "physml evaluate: error: --checkpoint: 'empty' holds no checkpoint.pt: not a run folder "
        "of physml train\n"
    )
    assert main(["evaluate", "--checkpoint", "r", "--data", "missing.h5"]) == 2
    assert capsys.readouterr().err == (
        "physml evaluate: error: --data: no dataset file at 'missing.h5'\n"
    )
    frames = (torch.zeros(4, 1, 16, 16), torch.zeros(4, 1, 16, 16))
    check_same_pairs("unet", [frames], [[4, 1, 16, 16], [4, 1, 16, 16]])
    with pytest.raises(ValueError, match="trained on"):
        check_same_pairs("unet", [frames], [[4, 1, 32, 32], [4, 1, 32, 32]])
    fno = r"--data gives .* of shapes \[\[2, 33\], \[1, 33\]\], but the model was trained on "
    with pytest.raises(ValueError, match=fno + r"\[\[1, 33\], \[1, 33\]\] \(an FNO takes any grid"):
        check_same_pairs("fno", [(torch.zeros(2, 33), torch.zeros(1, 33))], [[1, 33], [1, 33]])
    check_same_pairs("fno", [(torch.zeros(1, 17), torch.zeros(1, 17))], [[1, 33], [1, 33]])
    teacher = "the old run 'c'"  # physml.updates.load_previous's wording
    with pytest.raises(
        ValueError,
        match=r"^--distill-from: this --data holds 1-D fields, but "
        r"the old run 'c' was trained on 2-D ones \(pairs of shapes \[\[1, 17\]",
    ):
        check_same_pairs(
            "fno",
            [(torch.zeros(1, 17),) * 2],
            [[1, 9, 9]] * 2,
            "--distill-from: this --data",
            teacher,
        )


POINTS = {  # the options each reads, the last one changed on a resume
    "anp": ["--hidden", "8", "--layers", "1", "--context-points", "8", "--context-times", "2"]
    + ["--target-points", "16", "--views", "2"],
    "ensemble": ["--hidden", "8", "--layers", "1", "--members", "2"],
}


@pytest.mark.parametrize("model, batch", [("anp", "4"), ("ensemble", "32")])
def test_point_models_train_and_report_gaussian_scores(tmp_path, monkeypatch, capsys, model, batch):
    """GPME data from `physml generate` → `physml train --model anp|ensemble` → evaluate."""
    monkeypatch.chdir(tmp_path)
    generate = ["generate", "diffusion", "--n", "8", "--nx", "9", "--nt", "6", "--out", "d.h5"]
    assert main([*generate, "--quiet"]) == 0
    train = ["train", "--data", "d.h5", "--model", model, "--task", "operator", "--out", "run"]
    options = [*POINTS[model], "--quiet"]
    assert main([*train, "--steps", "3", "--batch", batch, *options]) == 0
    assert main(["evaluate", "--checkpoint", "run", "--data", "d.h5"]) == 0
    scores = json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text())
    assert scores["samples"] == 8 and scores["mse"] > 0
    assert scores["crps"] > 0 and scores["ll"] < 10
    out = capsys.readouterr().out
    assert "crps" in out and "ll" in out
    assert main(["evaluate", "--checkpoint", "run/checkpoint.pt", "--data", "d.h5"]) == 0
    assert json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text()) == scores
    capsys.readouterr()
    other = ["generate", "pme", "--n", "8", "--nx", "9", "--nt", "6", "--out", "p.h5", "--quiet"]
    assert main(other) == 0  # one parameter too, read in the place of the diffusivity
    assert main(["evaluate", "--checkpoint", "run", "--data", "p.h5"]) == 2
    assert "trained on 'diffusion'" in capsys.readouterr().err
    changed = [*POINTS[model][:-1], "3", "--quiet"]
    assert main([*train, "--steps", "3", "--batch", batch, *changed]) == 2
    assert "'run' holds another model" in capsys.readouterr().err
    assert main([*train, "--task", "rollout", "--steps", "3", *options]) == 2
    assert "serves the task" in capsys.readouterr().err


def _inputs(model: str, data, nt: int, nx: int) -> tuple[torch.Tensor, ...]:
    """What physml evaluate feeds a point model on every grid point of every solution of
    ``data``: the ANP its evaluation context (seed 1, the POINTS counts), the ensemble
    ``(params, t, x)`` rows."""
    if model == "ensemble":
        rows, _ = PointRows(data).all_rows()
        return (rows.reshape(len(data), nt * nx, -1),)
    sets = PointSets(data, n_context=8, context_times=2, n_target=None, seed=1)
    items = [sets[i] for i in range(len(sets))]
    return tuple(torch.stack([item[k] for item in items]) for k in range(3))


@pytest.mark.parametrize("model, batch", [("anp", "4"), ("ensemble", "32")])
def test_a_point_model_of_physml_train_loads_as_evaluate_scores_it_and_takes_probconserv(
    tmp_path, monkeypatch, model, batch
):
    """load_run gives the network physml evaluate scored (its MSE on the same inputs), leaves
    the global random state alone, and ProbConserv on it meets the exact Stefan mass of every
    time slice to round-off."""
    monkeypatch.chdir(tmp_path)
    generate = ["generate", "stefan", "--n", "4", "--nx", "9", "--nt", "6", "--out", "s.h5"]
    assert main([*generate, "--quiet"]) == 0
    train = ["train", "--data", "s.h5", "--model", model, "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "3", "--batch", batch, *POINTS[model], "--quiet"]) == 0
    assert main(["evaluate", "--checkpoint", "run", "--data", "s.h5"]) == 0
    scores = json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text())
    random_state = torch.random.get_rng_state()
    network = load_run("run", "s.h5")
    assert torch.equal(torch.random.get_rng_state(), random_state) and not network.training
    data = load("s.h5")
    nt, nx = data.u.shape[1:]
    inputs = _inputs(model, data, nt, nx)
    with torch.no_grad():
        mean = network(*inputs).mean.double()
    truth = data.u.reshape(len(data), -1).float().double()  # scored in the model's float32
    assert float((mean - truth).square().mean()) == pytest.approx(scores["mse"], rel=1e-12)
    grid = Grid1D(nx, 0.0, 1.0)
    mass = stefan_total_mass(data.t.double(), data.params["u_star"].double())  # (sample, T)
    probconserv = constrain(OnGrid(network, nt, nx), mass_conservation(grid, mass))
    with torch.no_grad():
        posterior = probconserv(*inputs)
    assert float((grid.integrate(posterior.mean) - mass).abs().max()) < 1e-13


def test_the_docs_example_gives_probconserv_on_a_run_of_physml_train(tmp_path, monkeypatch):
    """docs/training.rst's code, on the run and file it names: the posterior mean on the whole
    grid meets the exact Stefan mass of every time slice to round-off."""
    monkeypatch.chdir(tmp_path)
    generate = ["generate", "stefan", "--n", "2", "--nx", "21", "--nt", "11", "--quiet"]
    assert main([*generate, "--out", "stefan.h5"]) == 0
    train = ["train", "--data", "stefan.h5", "--model", "anp", "--task", "operator"]
    small = ["--hidden", "8", "--layers", "1", "--target-points", "64", "--quiet"]
    assert main([*train, "--out", "run", "--steps", "1", "--batch", "2", *small]) == 0
    page = (Path(__file__).resolve().parents[1] / "docs" / "training.rst").read_text()
    after = page.split(".. code-block:: python\n")[1].splitlines()
    block = "\n".join(itertools.takewhile(lambda line: not line or line[0] == " ", after))
    names = {}
    exec(textwrap.dedent(block), names)
    posterior, grid, mass = names["posterior"], names["grid"], names["mass"]
    assert posterior.mean.shape == (2, 11, 21)
    assert float((grid.integrate(posterior.mean) - mass).abs().max()) < 1e-13


def test_load_run_names_what_it_cannot_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    size = ["--n", "4", "--nx", "9", "--nt", "6", "--quiet"]
    assert main(["generate", "stefan", *size, "--out", "s.h5"]) == 0
    assert main(["generate", "pme", *size, "--out", "p.h5"]) == 0
    train = ["train", "--data", "s.h5", "--model", "anp", "--task", "operator", "--out", "run"]
    assert main([*train, "--steps", "1", "--batch", "4", *POINTS["anp"], "--quiet"]) == 0
    with pytest.raises(FileNotFoundError, match="^checkpoint: no run folder"):
        load_run("elsewhere", "s.h5")
    with pytest.raises(TypeError, match=r"^data must be a path \(str or Path\), got PDEData"):
        load_run("run", load("s.h5"))
    with pytest.raises(ValueError, match="^data: 'p.h5' holds 'pme' solutions"):
        load_run("run", "p.h5")
    with pytest.raises(CheckpointError) as swapped:
        load_run("s.h5", "s.h5")
    assert str(swapped.value) == (
        "checkpoint: 's.h5' is an HDF5 file (a dataset?), not a checkpoint of physml train; pass "
        "it as data"
    )
    anp = AttentiveNeuralProcess(hidden=8, latent=8, attention_layers=1)
    with pytest.raises(CheckpointError, match=r"physml train loads with physml.training.load_run"):
        load_anp(anp, "run")


def test_a_device_that_does_not_exist_is_one_clear_line(tmp_path, capsys):
    assert (
        main(["run", "verify", "--size", "toy", "--device", "bogus", "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "device" in err and "bogus" in err


def test_more_modes_than_the_grid_holds_are_noted_with_the_largest_kept(heat, capsys):
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--steps", "1"]
    small = ["--hidden", "4", "--layers", "1", "--batch", "4", "--quiet"]
    assert main([*train, "--out", "many", "--modes", "1000", *small]) == 0
    assert capsys.readouterr().out.startswith(
        "note: --modes 1000 is more than the 33-point grid holds: at most 16 Fourier modes per "
        "axis (half its smallest axis); training with 16\ntrained 1 steps"
    )
    assert main([*train, "--out", "all", "--modes", "16", *small]) == 0
    assert main([*train, "--out", "default", *small]) == 0  # the default 16: nothing asked
    assert "note" not in capsys.readouterr().out


def test_an_fno_trained_with_capped_modes_evaluates_on_another_grid(heat):
    """The modes kept on the training grid are recorded: an evaluation on a grid that would cap
    them otherwise rebuilds the trained weights' shapes, in both directions."""
    from physml.training import load_checkpoint
    from physml.training.checkpoint import save_checkpoint

    coarse = ["generate", "heat", "--n", "4", "--nx", "9", "--out", "coarse.h5", "--quiet"]
    assert main(coarse) == 0
    options = ["--modes", "8", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]
    options += ["--schedule", "constant"]
    for data, kept, other in (("heat.h5", 8, "coarse.h5"), ("coarse.h5", 4, "heat.h5")):
        run = f"on-{data}"
        command = ["train", "--data", data, "--model", "fno", "--task", "operator"]
        assert main([*command, "--out", run, "--steps", "1", *options]) == 0
        assert load_checkpoint(run)["model_config"]["n_modes"] == kept  # 8, or 9 // 2
        assert main(["evaluate", "--checkpoint", run, "--data", other]) == 0
        scores = json.loads((heat / run / "evaluation" / "metrics.json").read_text())
        assert all(0 < scores[key] < float("inf") for key in ("rel_l2", "mse"))
    older = "on-coarse.h5"
    state = load_checkpoint(older)
    del state["model_config"]["n_modes"]  # as written before the modes were recorded
    save_checkpoint(older, state)
    assert main(["evaluate", "--checkpoint", older, "--data", "coarse.h5"]) == 0
    command = ["train", "--data", "coarse.h5", "--model", "fno", "--task", "operator"]
    assert main([*command, "--out", older, "--steps", "2", *options]) == 0  # the same model
    assert json.loads((heat / older / "report.json").read_text())["resumed_from"] == 1
    assert "n_modes" not in load_checkpoint(older)["model_config"]


def _strict_json(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"metrics.json holds {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_scores_of_large_fields_are_computed_in_double_precision(heat):
    import numpy as np

    from physml.training import load_checkpoint
    from physml.training.families import build

    with h5py.File("heat.h5", "r+") as file:
        file["u"][...] = file["u"][...] * 1e25  # squares beyond float32 (3.4e38)
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    assert main(["evaluate", "--checkpoint", "r", "--data", "heat.h5"]) == 0
    scores = _strict_json((heat / "r" / "evaluation" / "metrics.json").read_text())
    state = load_checkpoint("r")
    model, pairs = build(state["model_config"], load("heat.h5"))
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        prediction = model(torch.stack([pairs[i][0] for i in range(len(pairs))]))
    target = np.stack([pairs[i][1].numpy() for i in range(len(pairs))]).astype(np.float64)
    wanted = np.mean((prediction.numpy().astype(np.float64) - target) ** 2)
    assert np.isfinite(wanted) and scores["mse"] == pytest.approx(wanted, rel=1e-6)


def test_scores_that_are_not_finite_are_written_as_null(heat, monkeypatch):
    from physml.training import commands

    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main([*train, "--steps", "1", *SMALL]) == 0
    not_finite = {"samples": 12, "rel_l2": float("nan"), "mse": float("inf")}
    monkeypatch.setattr(commands, "_scores", lambda prediction, target: dict(not_finite))
    assert main(["evaluate", "--checkpoint", "r", "--data", "heat.h5"]) == 0
    scores = _strict_json((heat / "r" / "evaluation" / "metrics.json").read_text())
    scored = {"data": str((heat / "heat.h5").resolve()), "step": 1}
    assert scores == {**scored, "solutions": 12, "samples": 12, "rel_l2": None, "mse": None}


def test_evaluations_of_two_files_are_kept_apart_with_out_and_name_what_they_scored(
    heat, monkeypatch, capsys
):
    monkeypatch.chdir(heat)
    other = ["generate", "heat", "--n", "12", "--nx", "33", "--seed", "1"]
    assert main([*other, "--out", "held-out.h5", "--quiet"]) == 0
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main([*train, "--steps", "2", *SMALL]) == 0
    assert main(["evaluate", "--checkpoint", "r", "--data", "heat.h5"]) == 0
    args = ["evaluate", "--checkpoint", "r", "--data", "held-out.h5", "--out", "r/held-out"]
    assert main(args) == 0
    seen = json.loads((heat / "r" / "evaluation" / "metrics.json").read_text())
    unseen = json.loads((heat / "r" / "held-out" / "metrics.json").read_text())
    assert seen["data"] == str((heat / "heat.h5").resolve()) and seen["step"] == 2
    assert unseen["data"] == str((heat / "held-out.h5").resolve())
    assert seen["rel_l2"] != unseen["rel_l2"] and (heat / "r" / "held-out" / "samples.png").exists()
    (heat / "a-file").write_text("")
    capsys.readouterr()
    for out in ("a-file", "", " "):
        assert main(["evaluate", "--checkpoint", "r", "--data", "heat.h5", "--out", out]) == 2
        assert f"--out must name a folder, got {out!r}" in capsys.readouterr().err
    assert not (heat / "metrics.json").exists()  # '' is not the working folder


# ------------------------------------------------------------------------------------------
# Options a model does not read


@pytest.mark.parametrize(
    "model, task, given, message",
    [
        ("unet", "forecast", ["--hidden", "8"], "--hidden: model unet on task forecast does not"),
        ("unet", "forecast", ["--layers", "3"], "--layers: model unet"),
        ("earthformer", "forecast", ["--modes", "4", "--layers", "2"], "--modes, --layers: model"),
        ("convlstm", "forecast", ["--base-units", "8"], "--base-units: model convlstm"),
        ("fno", "operator", ["--t-in", "3"], "--t-in: model fno on task operator"),
        ("fno", "rollout", ["--t-out", "3"], "--t-out: model fno on task rollout"),
        ("anp", "operator", ["--members", "2"], "--members: model anp"),
        ("ensemble", "operator", ["--views", "2"], "--views: model ensemble"),
    ],
)
def test_an_option_the_model_does_not_read_is_one_clear_line(
    tmp_path, monkeypatch, capsys, model, task, given, message
):
    from physml.training.families import FAMILIES, TASK_OPTIONS

    monkeypatch.chdir(tmp_path)
    reads = [*FAMILIES[model].reads, *TASK_OPTIONS[task]]
    wanted = "it reads " + ", ".join(f"--{name.replace('_', '-')}" for name in reads)
    command = ["train", "--data", "none.h5", "--model", model, "--task", task, "--out", "r"]
    assert main([*command, *given]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and wanted in err and err.count("\n") == 0
    assert not (tmp_path / "r").exists()
    key = given[0][2:].replace("-", "_")
    (tmp_path / "run.toml").write_text(f"{key} = {given[1]}\n")  # the same from --config
    assert main([*command, "--config", "run.toml"]) == 2
    assert f"{given[0]}: model {model} on task {task} does not read it" in capsys.readouterr().err


def test_the_options_each_family_reads_are_those_its_model_depends_on(tmp_path):
    """Every option in a family's reads changes its model (or its items); none outside them
    does: ``reads`` is what the refusal above and a resume's comparison rely on."""
    from physml.data import generate_dataset
    from physml.training.families import DEFAULTS, FAMILIES, TASK_OPTIONS, build, model_config

    files = {
        1: load(generate_dataset("diffusion", tmp_path / "d.h5", 4, progress=False, nx=9, nt=6)),
        2: load(
            generate_dataset(
                "navier-stokes", tmp_path / "ns.h5", n=2, progress=False, nx=16, t_end=0.5, nt=6
            )
        ),
    }
    small = {"modes": 2, "hidden": 4, "layers": 1, "base_units": 4, "t_in": 2, "t_out": 1}
    small |= {"k": 1, "context_points": 4, "context_times": 2, "target_points": 4, "views": 1}
    small |= {"members": 2}

    def described(name, task, options):
        torch.manual_seed(0)
        data = files[FAMILIES[name].dims[-1]] if name != "fno" else files[1]
        model, items = build(model_config(name, task, options), data)
        parts = tuple((tuple(part.shape), float(part.sum())) for part in items[0])
        return sum(p.numel() for p in model.parameters()), len(items), parts

    for name, family in FAMILIES.items():
        if name == "boon-fno":
            continue  # the fno's builder, on a recipe with a boundary condition
        task = family.tasks[-1]
        reads = (*family.reads, *TASK_OPTIONS[task])
        options = {key: small[key] for key in reads}
        base = described(name, task, options)
        for key in reads:
            changed = described(name, task, {**options, key: small[key] + 2})
            assert changed != base, (name, key)
        assert set(reads) <= set(DEFAULTS)


@pytest.fixture
def frames(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = ["generate", "navier-stokes", "--n", "3", "--nx", "16", "--nt", "6", "--quiet"]
    assert main([*command, "--t-end", "0.5", "--out", "ns.h5"]) == 0
    return tmp_path


FRAMES = ["--data", "ns.h5", "--task", "forecast", "--t-in", "3", "--t-out", "2", "--batch", "2"]


def test_convlstm_builds_the_layers_given_and_two_without(frames):
    from physml.training import load_checkpoint

    def cells(run: str) -> int:
        return len(
            {key.split(".")[1] for key in load_checkpoint(run)["model"] if "encoder." in key}
        )

    command = ["train", *FRAMES, "--model", "convlstm", "--hidden", "4", "--quiet", "--steps", "1"]
    for run, given, layers in (("default", [], 2), ("three", ["--layers", "3"], 3)):
        assert main([*command, "--out", run, *given]) == 0
        assert cells(run) == layers
        assert main(["evaluate", "--checkpoint", run, "--data", "ns.h5"]) == 0
    assert "recurrent_layers" not in load_checkpoint("default")["model_config"]
    assert main([*command, "--out", "two", "--layers", "2"]) == 0  # the default: the same model
    assert "recurrent_layers" not in load_checkpoint("two")["model_config"] and cells("two") == 2


def test_a_run_that_recorded_options_its_model_does_not_read_resumes_without_them(frames, capsys):
    """Runs before the refusal recorded such options (``--hidden`` of a UNet, ``--layers`` of a
    ConvLSTM, which built 2 layers): the same command less those options resumes them."""
    from physml.training import load_checkpoint
    from physml.training.checkpoint import save_checkpoint

    for model, size, ignored in (
        ("unet", ["--base-units", "4"], {"hidden": 8}),
        ("convlstm", ["--hidden", "4"], {"layers": 7}),
    ):
        command = ["train", *FRAMES, "--model", model, *size, "--quiet", "--out", model]
        assert main([*command, "--steps", "1", "--schedule", "constant"]) == 0
        state = load_checkpoint(model)
        state["model_config"]["options"].update(ignored)  # as the earlier runs wrote it
        save_checkpoint(model, state)
        assert main([*command, "--steps", "2", "--schedule", "constant"]) == 0
        assert json.loads((frames / model / "report.json").read_text())["resumed_from"] == 1
        assert load_checkpoint(model)["model_config"]["options"] == state["model_config"]["options"]
    command = ["train", *FRAMES, "--model", "convlstm", "--hidden", "4", "--quiet"]
    assert main([*command, "--out", "convlstm", "--steps", "3", "--layers", "7"]) == 2
    assert "holds another model (recurrent_layers None → 7)" in capsys.readouterr().err


TINY = ["--modes", "4", "--hidden", "4", "--layers", "1", "--batch", "2", "--quiet"]


@pytest.mark.parametrize("pde", [None, "advection"])
def test_an_fno_on_a_pdebench_file_places_cell_centres_and_a_run_from_before_resumes(
    tmp_path, monkeypatch, pde
):
    """A PDEBench file (cell centres, no boundary: not periodic) gives the FNO position channels
    ``(k + 1/2)/n``. A run whose checkpoint recorded ``node`` positions on the same file read
    without its grid kind (what physml wrote before it read PDEBench's cells) resumes with its
    own positions, whether the file is named by its reader or carries a ``pde`` of its own."""
    from physml.training import load_checkpoint
    from physml.training.checkpoint import save_checkpoint

    monkeypatch.chdir(tmp_path)
    with h5py.File("1D_Advection_Sols_beta1.0.h5", "w") as f:
        f["tensor"] = np.random.default_rng(1).normal(size=(4, 3, 8)).astype(np.float32)
        f["x-coordinate"] = ((np.arange(8) + 0.5) / 8).astype(np.float32)
        f["t-coordinate"] = (np.arange(4) * 0.05).astype(np.float32)
        if pde is not None:
            f.attrs["pde"] = pde
    command = ["train", "--data", "1D_Advection_Sols_beta1.0.h5", "--model", "fno"]
    command += ["--task", "operator", "--out", "run", *TINY, "--schedule", "constant"]
    command += ["--val-fraction", "0"]
    assert main([*command, "--steps", "1"]) == 0
    assert load_checkpoint("run")["model_config"]["position"] == "cell"
    state = load_checkpoint("run")
    named = pde or "pdebench: 1D_Advection_Sols_beta1.0"  # the file's, else its reader's
    assert state["fingerprint"]["attributes"]["pde"] == named
    state["model_config"]["position"] = "node"
    del state["fingerprint"]["attributes"]["grid_kind"]
    save_checkpoint("run", state)
    assert main([*command, "--steps", "2"]) == 0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["resumed_from"] == 1
    assert load_checkpoint("run")["model_config"]["position"] == "node"
    assert main([*command, "--steps", "3"]) == 0  # and again, from the checkpoint it wrote
    assert json.loads((tmp_path / "run" / "report.json").read_text())["resumed_from"] == 2
    assert load_checkpoint("run")["model_config"]["position"] == "node"


def test_a_physml_file_whose_grid_kind_changed_to_cells_does_not_resume_its_run(
    tmp_path, monkeypatch, capsys
):
    """Only PDEBench data were read as nodes before being read as cell centres: a physml file
    of nodes marked ``grid_kind`` "cell" afterwards is other data, and its run is refused."""
    from physml.data import PDEData
    from physml.data.interchange import write_physml
    from physml.training import load_checkpoint

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    data = PDEData(
        u=torch.from_numpy(rng.normal(size=(4, 3, 8)).astype(np.float32)),
        t=torch.arange(3, dtype=torch.float32) * 0.05,
        coords={"x": torch.linspace(0, 1, 8)},
        params={},
        attrs={"pde": "toy", "boundary": "dirichlet"},
    )
    write_physml(data, "toy.h5")
    command = ["train", "--data", "toy.h5", "--model", "fno", "--task", "operator", "--out"]
    command += ["run", *TINY, "--schedule", "constant", "--val-fraction", "0"]
    assert main([*command, "--steps", "1"]) == 0
    assert load_checkpoint("run")["model_config"]["position"] == "node"
    with h5py.File("toy.h5", "a") as f:
        f.attrs["grid_kind"] = "cell"
    capsys.readouterr()
    assert main([*command, "--steps", "2"]) == 2
    assert "holds another model (position 'node' → 'cell')" in capsys.readouterr().err
    assert load_checkpoint("run")["step"] == 1


def _predictions(run: str, path: str) -> torch.Tensor:
    """The model of ``run`` on every input pair of ``path``, ``(pair, channel, *space)``."""
    from physml.training import load_checkpoint
    from physml.training.checkpoint import load_weights
    from physml.training.families import build

    state = load_checkpoint(run)
    model, pairs = build(state["model_config"], load(path))
    load_weights(model, state, run)
    with torch.no_grad():
        return model.eval()(torch.stack([pairs[i][0] for i in range(len(pairs))])).double()


def test_boon_fno_meets_the_walls_of_burgers_dirichlet_wave_and_fixed_stokes(tmp_path, monkeypatch):
    """Their files state plain walls: boon-fno imposes them (Dirichlet values, or the one-sided
    second-order flux of the Neumann wave) on every prediction at the final time."""
    import math

    monkeypatch.chdir(tmp_path)
    size = ["--n", "4", "--nx", "17", "--nt", "3", "--quiet"]
    stokes = ["--nu-min", "0.05", "--nu-max", "0.05", "--omega-min", "8", "--omega-max", "8"]
    for recipe, extra in (("burgers-dirichlet", []), ("wave", []), ("stokes", stokes)):
        assert main(["generate", recipe, *size, *extra, "--out", f"{recipe}.h5"]) == 0
        command = ["train", "--data", f"{recipe}.h5", "--model", "boon-fno", "--task", "operator"]
        assert main([*command, "--out", recipe, "--steps", "2", *TINY]) == 0
        u = _predictions(recipe, f"{recipe}.h5")[:, 0]  # (sample, x)
        data = load(f"{recipe}.h5")
        h, end = 1 / 16, float(data.t[-1])
        if recipe == "wave":
            left = (-3 * u[:, 0] + 4 * u[:, 1] - u[:, 2]) / (2 * h)
            right = (3 * u[:, -1] - 4 * u[:, -2] + u[:, -3]) / (2 * h)
            walls, wanted = torch.stack([left, right]), torch.zeros(2, 1)
            scale = float(u.abs().max()) / h
        else:
            walls, scale = torch.stack([u[:, 0], u[:, -1]]), float(u.abs().max())
            wanted = torch.zeros(2, 1)
            if recipe == "stokes":  # U cos(ωT) at the plate, the exact state at y = 1
                k = math.sqrt(8 / (2 * 0.05))
                plate, far = 2 * math.cos(8 * end), 2 * math.exp(-k) * math.cos(8 * end - k)
                wanted = torch.tensor([[plate], [far]], dtype=torch.float64)
                truth = data.u[:, -1].double()
                assert torch.allclose(truth[:, [0, -1]].T, wanted, atol=1e-9)  # the file's own
        assert torch.allclose(walls, wanted.double().expand_as(walls), atol=1e-5 * scale), recipe


def test_boon_fno_refuses_files_without_a_condition_for_every_sample_by_name(
    tmp_path, monkeypatch, capsys
):
    """Periodic files have no walls (on a node grid holding x = 0 and 1 - h the periodic
    condition forced two different points equal); GPME recipes state their walls as text only;
    Stokes' walls follow each sample's nu and omega."""
    monkeypatch.chdir(tmp_path)
    size = ["--n", "4", "--nx", "16", "--nt", "3", "--quiet"]
    for recipe, extra, wanted in (
        ("heat", ["--bc", "periodic"], "a periodic file has no walls to enforce"),
        ("diffusion", [], "a periodic file has no walls to enforce"),
        ("pme", [], "recipe 'pme' gives no boundary condition to impose"),
        ("stefan", [], "recipe 'stefan' gives no boundary condition to impose"),
        ("stokes", [], "stokes: the walls follow each sample's nu and omega"),
    ):
        path = f"{recipe}.h5"
        assert main(["generate", recipe, *size, *extra, "--out", path]) == 0
        command = ["train", "--data", path, "--model", "boon-fno", "--task", "operator"]
        assert main([*command, "--out", "run", "--steps", "1", *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--model boon-fno: {wanted}" in err and "--model fno" in err, err
        assert err.count("\n") == 0 and not (tmp_path / "run").exists()
    assert "boon-stokes task" in err  # the last: per-sample walls, and where they are imposed
    # evaluate has no --model: its advice names what it can do
    assert main(["generate", "heat", *size, "--out", "walls.h5"]) == 0
    command = ["train", "--data", "walls.h5", "--model", "boon-fno", "--task", "operator"]
    assert main([*command, "--out", "boon", "--steps", "1", *TINY]) == 0
    assert main(["evaluate", "--checkpoint", "boon", "--data", "heat.h5"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "--data: the boon-fno of 'boon' cannot score 'heat.h5': a periodic file has no walls to "
        "enforce (its boundary is 'periodic'); evaluate it on files with walls like its training "
        "file's, or train a --model fno for this one"
    ) in err, err
    assert "use --model fno" not in err and err.count("\n") == 0


def test_forecast_models_name_the_frame_size_they_need(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    generate = ["generate", "cavity", "--n", "2", "--nt", "3", "--t-end", "0.05", "--quiet"]
    assert main([*generate, "--out", "cavity.h5"]) == 0  # the default 65 × 65 nodes
    for model in ("earthformer", "unet", "convlstm"):
        command = ["train", "--data", "cavity.h5", "--model", model, "--task", "forecast"]
        command += ["--t-in", "1", "--t-out", "1", "--steps", "1", "--batch", "1", "--quiet"]
        assert main([*command, "--out", model]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"error: --data: model {model} needs frames" in err
        assert "multiples of 4" in err and "65×65" in err and "--nx 64" in err


def test_an_fno_on_a_grid_with_an_odd_leading_axis_records_its_spectral_shift(
    tmp_path, monkeypatch, capsys
):
    """Before the fix of the spectral convolution (ifftshift), an odd axis before the last put
    each frequency one bin off: an FNO checkpoint of such a grid without the record is refused on
    resume and in evaluate. 1-D and even grids record nothing (the two agree there)."""
    from physml.training import load_checkpoint
    from physml.training.checkpoint import save_checkpoint

    monkeypatch.chdir(tmp_path)
    generate = ["generate", "cavity", "--n", "3", "--nt", "3", "--t-end", "0.05", "--quiet"]
    assert main([*generate, "--nx", "9", "--out", "odd.h5"]) == 0
    assert main([*generate, "--nx", "8", "--out", "even.h5"]) == 0
    heat = ["generate", "heat", "--n", "3", "--nx", "9", "--nt", "3", "--quiet"]
    assert main([*heat, "--out", "heat.h5"]) == 0
    options = [*TINY, "--schedule", "constant", "--val-fraction", "0"]
    for path, recorded in (("odd.h5", "ifftshift"), ("even.h5", None), ("heat.h5", None)):
        command = ["train", "--data", path, "--model", "fno", "--task", "operator"]
        assert main([*command, "--out", path[:-3], "--steps", "1", *options]) == 0
        config = load_checkpoint(path[:-3])["model_config"]
        assert config.get("spectral") == recorded
        recorded_keys = {"model", "task", "options", "periodic", "n_modes"}
        recorded_keys |= {"position"}  # walls: the points' places in the domain
        assert set(config) == recorded_keys | ({"spectral"} if recorded else set())
        assert main([*command, "--out", path[:-3], "--steps", "2", *options]) == 0  # resumes
        assert json.loads((tmp_path / path[:-3] / "report.json").read_text())["resumed_from"] == 1
    state = load_checkpoint("odd")
    del state["model_config"]["spectral"]  # as written before the fix
    save_checkpoint("odd", state)
    command = ["train", "--data", "odd.h5", "--model", "fno", "--task", "operator", "--out", "odd"]
    assert main([*command, "--steps", "3", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint: 'odd': its fno was trained on 9×9 grids with the earlier spectral" in err
    assert "train it again into a new --out" in err and err.count("\n") == 0
    assert main(["evaluate", "--checkpoint", "odd", "--data", "odd.h5"]) == 2
    assert "--checkpoint: 'odd': its fno was trained on 9×9 grids" in capsys.readouterr().err
    for run in ("even", "heat"):  # the same edit leaves the unaffected runs as they were
        state = load_checkpoint(run)
        state["model_config"].pop("spectral", None)
        save_checkpoint(run, state)
        assert main(["evaluate", "--checkpoint", run, "--data", f"{run}.h5"]) == 0


def test_the_validation_split_cuts_the_sample_seeds_with_the_samples(heat):
    from physml.data.generate import sample_seed
    from physml.training.commands import split

    train, held = split(load("heat.h5"), 0.25)
    assert train.sample_seed.tolist() == [sample_seed(0, i) for i in range(9)]
    assert held.sample_seed.tolist() == [sample_seed(0, i) for i in range(9, 12)]
    assert held.sample_index.tolist() == [9, 10, 11]


DEEP = "[" * 100_000 + "]" * 100_000


def test_nesting_deeper_than_python_parses_is_one_line_naming_the_config_or_the_data(heat, capsys):
    (heat / "deep.toml").write_text(f"steps = {DEEP}\n")
    train = ["train", "--data", "heat.h5", "--model", "fno", "--task", "operator", "--out", "r"]
    assert main([*train, "--config", "deep.toml"]) == 2
    assert capsys.readouterr().err == (
        "physml train: error: --config: 'deep.toml' nests arrays or tables deeper than Python's "
        "recursion limit lets it read\n"
    )
    with h5py.File(heat / "heat.h5", "r+") as f:
        f.attrs["settings"] = DEEP
    assert main([*train, *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "physml train: error: --data: 'heat.h5': its attribute 'settings' nests JSON deeper"
    )
    assert err.count("\n") == 1 and not (heat / "r").exists()


def test_settings_recorded_too_deep_to_parse_are_no_settings_to_compare():
    """A checkpoint of a file read before such settings were refused: evaluate says nothing."""
    flat = {"settings": '{"nx": 33}'}
    assert settings_differ({"settings": DEEP}, flat) == {}
    assert settings_differ(flat, {"settings": DEEP}) == {}
    assert settings_differ(flat, {"settings": '{"nx": 17}'}) == {"nx": {"training": 33, "data": 17}}
    for bad in ("{", b"\xff", "[1]", None, 3):
        assert settings_differ(flat, {"settings": bad}) == {}
        assert settings_differ({"settings": bad}, flat) == {}


@pytest.mark.parametrize(
    "text",
    ["{", "[" * 100_000, b"\xff", "[1]", '{"steps": 3}'],
    ids=["malformed", "deep", "no-utf-8", "list", "other-keys"],
)
def test_a_report_json_that_is_no_report_of_physml_train_is_not_written_over(tmp_path, text):
    (tmp_path / "report.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    message = f"--out: {str(tmp_path)!r} holds a report.json that is not a report of physml train"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_run_folder("--out", tmp_path)
    (tmp_path / "report.json").write_text('{"steps": 3, "resumed_from": null}')
    check_run_folder("--out", tmp_path)


def test_a_params_from_file_name_nested_too_deep_for_json_declares_no_parameters():
    deep = {"params_from_file_name": "[" * 100_000 + "]" * 100_000}
    assert file_name_parameters_to_declare(deep, None, "any.h5") == {}
    for bad in ("[", b"\xff", '{"beta": 1}', None):
        assert file_name_parameters_to_declare({"params_from_file_name": bad}, None, "a.h5") == {}


def test_a_file_of_another_pde_is_refused_by_name_whatever_the_runs_params_from_file_name(
    tmp_path, monkeypatch, capsys
):
    # neither name is a PDEBench file's: the refusal says only that the PDEs differ
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "heat", "--n", "4", "--nx", "9", "--out", "heat.h5", "--quiet"]) == 0
    with h5py.File("heat.h5", "a") as f:
        f.attrs["params_from_file_name"] = "[" * 100_000 + "]" * 100_000
    shutil.copy("heat.h5", "other.h5")
    with h5py.File("other.h5", "a") as f:
        f.attrs["pde"] = "something-else"
    small = ["--hidden", "4", "--layers", "1", "--members", "2", "--batch", "2", "--quiet"]
    train = ["train", "--data", "heat.h5", "--model", "ensemble", "--task", "operator"]
    assert main([*train, "--out", "run", "--steps", "1", *small]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", "run", "--data", "other.h5"]) == 2
    refused = capsys.readouterr().err
    assert "'other.h5' holds 'something-else' solutions" in refused
    assert "PDEBench" not in refused
