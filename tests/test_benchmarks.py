"""Each benchmark's --quick mode runs and writes results in the agreed format (DESIGN.md §5)."""

import argparse
import dataclasses
import errno
import io
import json
import math
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from benchmarking import load_benchmark
from damage import flip_a_bit_of_a_zip_entry

from physml.signals import STOPPING, Terminated
from physml.training import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"benchmark", "command", "seed", "machine", "torch", "wall_s", "date", "rows"}


def benchmark(name: str, *arguments: str) -> list[str]:
    """The command line that runs ``benchmarks/<name>.py`` with ``arguments``."""
    return [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *arguments]


@pytest.mark.parametrize(
    "name",
    [
        "solvers",
        "probconserv_update",
        "probconserv_gpme",
        "exact_mass_floor",
        "boon_overhead",
        "training",
        "nbody_energy",
        "fno_overhead",
        "forecast_correction_shapes",
        "earthformer_artifacts",
        "guided_sampling_cost",
        "model_update",
        "model_update_extra_inputs",
        "guarded_surrogate",
        "fno_coordinates",
    ],
)
def test_quick_mode_writes_results(tmp_path, name):
    out, here = tmp_path / "out", tmp_path / "here"
    here.mkdir()
    subprocess.run(benchmark(name, "--quick", "--out", str(out)), check=True, cwd=here, timeout=600)
    assert not list(here.iterdir())  # a smoke run keeps its work out of the working folder
    result = json.loads((out / f"{name}.json").read_text())
    assert KEYS <= set(result)
    assert result["rows"] and all("case" in row and "method" in row for row in result["rows"])
    assert "--quick" in result["command"]
    markdown = (out / f"{name}.md").read_text()
    assert markdown.startswith(f"# {name}") and markdown.count("\n|") >= len(result["rows"]) + 1
    if name == "fno_coordinates":  # one figure per case
        cases = {row["case"] for row in result["rows"]}
        assert {p.name for p in out.glob("*.png")} == {f"{name}-{case}.png" for case in cases}
    if name == "training":  # two processes and the resumed run end on the reference's weights
        rows = {row["method"]: row for row in result["rows"]}
        assert rows["2-proc-gloo"]["bitwise_model"] is True
        assert rows["resume-after-kill"]["bitwise_resume"] is True
    if name == "guarded_surrogate":  # the setup records every per-equation override it ran with
        scale = load_benchmark(name).SCALES["quick"]
        assert result["setup"]["train"] == scale.get("train", {})
        assert result["setup"]["steps"] == scale.get("steps", {})


class _Times(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = torch.nn.Parameter(torch.tensor(factor))

    def forward(self, x):
        return self.factor * x


def test_the_unlabelled_gap_is_lambda_times_the_relative_squared_gap_by_hand():
    """New ``a x``, old ``b x`` on any pool: the gap term is ``λ (a − b)² / b²`` whatever inputs
    are drawn; ``λ = 0`` is the data loss alone; the old model gets no gradient."""
    bench = load_benchmark("model_update_extra_inputs")
    pool = torch.randn(5, 1, 7, generator=torch.Generator().manual_seed(0))
    new, old = _Times(3.0), _Times(2.0)

    def data_loss(model, batch):
        return model.factor * 0.0 + 0.25

    gap = bench.UnlabelledGap(data_loss, old, pool, 0.5, batch=3, seed=1)
    value = gap(new, None)
    assert float(value) == pytest.approx(0.25 + 0.5 * (3.0 - 2.0) ** 2 / 2.0**2, rel=1e-6)
    value.backward()  # d/da of λ (a − b)²/b² at a = 3: 2 λ (a − b)/b² = 0.25
    assert float(new.factor.grad) == pytest.approx(0.25, rel=1e-6)
    assert old.factor.grad is None and not old.factor.requires_grad
    plain = bench.UnlabelledGap(data_loss, old, pool, 0.0, batch=3, seed=1)
    assert float(plain(new, None)) == 0.25


def test_committed_solver_results_meet_the_format():
    path = ROOT / "benchmarks" / "results" / "solvers.json"
    result = json.loads(path.read_text())
    assert KEYS <= set(result) and "--quick" not in result["command"]
    cases = {row["case"] for row in result["rows"]}
    expected = {"heat-dirichlet", "burgers-periodic", "gpme-stefan", "heat-vs-py-pde", "cavity"}
    assert expected | {"navier-stokes-periodic"} <= cases
    batches = {row["batch"] for row in result["rows"] if row.get("part") == "throughput"}
    assert {1, 1024} <= batches


def test_committed_probconserv_results_conserve():
    for name in ("probconserv_gpme", "probconserv_update"):
        result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        assert KEYS <= set(result) and "--quick" not in result["command"]
        for row in result["rows"]:
            if row["method"].startswith(("probconserv", "hardc")) or name.endswith("update"):
                assert row["ce_abs"] <= 1e-6, row


def committed(name: str) -> dict:
    result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
    assert KEYS <= set(result) and "--quick" not in result["command"]
    return result


def test_committed_exact_mass_floor_is_the_trapezoid_miss_of_the_pme_front_by_hand():
    """Every probconserv_gpme case at its 201 × 201 grid; PME's at t = 0.5: the trapezoid sum of
    ``(m (t − x)₊)^(1/m)`` on 201 nodes minus ``m^(1/m) t^(1+1/m) / (1 + 1/m)``."""
    rows = {row["case"]: row for row in committed("exact_mass_floor")["rows"]}
    cases = {"diffusion-k1", "diffusion-k5", "pme-m1", "pme-m3", "pme-m6"}
    assert set(rows) == cases | {"stefan-u0.6", "stefan-u0.5"}
    t, h = 0.5, 1 / 200
    for m in (1, 3, 6):
        u = [(m * max(t - i * h, 0.0)) ** (1 / m) for i in range(201)]
        trapezoid = h * (sum(u) - (u[0] + u[-1]) / 2)
        mass = m ** (1 / m) * t ** (1 + 1 / m) / (1 + 1 / m)
        row = rows[f"pme-m{m}"]
        assert (row["nx"], row["t_ce"]) == (201, t)
        assert row["ce"] == pytest.approx(trapezoid - mass, rel=1e-9, abs=1e-15)
    assert abs(rows["pme-m6"]["ce"]) > 1e-3  # the floor the README states


def test_committed_nbody_energy_results_conserve_with_the_chosen_setting():
    rows = {
        row["method"]: row
        for row in committed("nbody_energy")["rows"]
        if "gravity" not in row["case"]
    }
    assert rows["energy-conserving"]["drift_max"] <= 0.01
    assert rows["default (euler, clip 2)"]["drift_max"] > 0.01
    assert (
        abs(rows["energy-conserving"]["speed"] / rows["default (euler, clip 2)"]["speed"] - 1)
        < 0.05
    )


def test_committed_boon_results_meet_the_walls_on_every_dataset():
    rows = committed("boon")["rows"]
    cases = {row["case"] for row in rows}
    assert len(cases) >= 8
    for case in cases:
        methods = {row["method"]: row for row in rows if row["case"] == case}
        assert {"fno", "fno-overwrite", "boon"} <= set(methods), case
        assert methods["boon"]["seeds"] >= 3
        for method in ("fno-overwrite", "boon"):
            assert methods[method]["boundary_error"] <= 1e-5, (case, method)


def test_committed_forecasting_results_cover_every_method():
    rows = committed("earthformer_nbody")["rows"]
    methods = {row["method"] for row in rows}
    assert {"earthformer", "earthformer-noglobal", "unet", "convlstm", "persistence"} <= methods
    for row in rows:
        assert row["mse"] > 0 and row["mae"] > 0 and -1 <= row["ssim"] <= 1, row
    # The long scale: every method, each learned model trained for the whole, equal budget.
    long = committed("earthformer_nbody-long")
    budget = long["setup"]["scale"]["budget_s"]
    learned = {row["method"]: row for row in long["rows"] if row["steps"]}
    assert {row["method"] for row in long["rows"]} == methods
    assert set(learned) == {"earthformer", "earthformer-noglobal", "unet", "convlstm"}
    assert all(budget <= row["train_s"] < 1.01 * budget for row in learned.values())
    scaling = committed("cuboid_scaling")["rows"]
    full = [row for row in scaling if row["method"] == "full-attention"]
    assert any(row["fits"] for row in full) and not all(row["fits"] for row in full)


RECORDS = sorted(path.stem for path in (ROOT / "benchmarks" / "results").glob("*.json"))


@pytest.mark.parametrize("name", RECORDS)
def test_committed_record_table_is_its_json_rendered(name):
    """The table of each committed ``.md`` (the last one with a row per recorded row) is the one
    ``render_markdown`` writes from its ``.json``: a null cell empty, not ``None``."""
    result = committed(name)
    page = (ROOT / "benchmarks" / "results" / f"{name}.md").read_text().splitlines()
    size = len(result["rows"]) + 2
    starts = [
        start
        for start in range(len(page) - size + 1)
        if page[start + 1].startswith("|---")
        and all(line.startswith("|") for line in page[start : start + size])
        and (start + size == len(page) or not page[start + size].startswith("|"))
    ]
    assert starts, f"{name}.md has no table of {size - 2} rows"
    table = page[starts[-1] : starts[-1] + size]
    columns = [column.strip() for column in table[0].strip("|").split("|")]
    rendered = load_benchmark("common").render_markdown(result, columns).splitlines()
    assert table == rendered[-size:]


def test_readme_names_the_machine_and_dates_of_every_record():
    """The README's Benchmarks sentence lists the Intel Xeon records by name (AMD EPYC the rest)
    and spans the oldest to the newest record's date."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    sentence = readme.split("Machine: 2-core AMD EPYC", 1)[1].split("each dated in its record")[0]
    listed, dates = sentence.split("(a 2-core Intel Xeon")
    xeon = set(listed.split("`")[1::2])
    machines = {name: committed(name)["machine"] for name in RECORDS}
    assert xeon == {name for name, machine in machines.items() if "Xeon" in machine}
    assert all("AMD EPYC" in machines[name] for name in set(RECORDS) - xeon)
    days = sorted(committed(name)["date"][:10] for name in RECORDS)
    assert f"runs from {days[0]} to {days[-1]}," in dates


def test_readme_py_pde_ratios_are_the_records_rounded_once():
    """Each physml ÷ py-pde cell of the README's Solvers table is the recorded ratio rounded to
    an integer, once (1354.47 reads 1354×)."""
    ratios = {
        (row["case"], row["pypde_nx"], row["batch"]): row["ratio"]
        for row in committed("solvers")["rows"]
        if row.get("part") == "py-pde" and row["method"] == "physml"
    }
    cases = {"heat, Dirichlet": "heat-vs-py-pde", "Burgers, periodic": "burgers-vs-py-pde"}
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| problem | py-pde grid (error) |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    assert len(rows) == 6
    for problem, grid, *cells in rows:
        nx = int(grid.split()[0])
        for batch, cell in zip((64, 256, 1024), cells, strict=True):
            expected = round(ratios[(cases[problem.strip()], nx, batch)])
            assert cell.strip().strip("*") == f"{expected}×", (problem, nx, batch)


def test_nbody_model_config_names_what_build_makes():
    """The forecasting benchmarks' checkpoints record the settings the model was built from:
    the two Earthformers (global vectors or none) and the widths tell each model apart."""
    bench = load_benchmark("earthformer_nbody")  # its set-up, nbody_forecasting's
    scale = bench.SCALES["quick"]
    configs = {method: bench.model_config(method, scale) for method in ("earthformer",
               "earthformer-noglobal", "unet", "convlstm")}  # fmt: skip
    assert len({json.dumps(config, sort_keys=True) for config in configs.values()}) == 4
    for method in ("earthformer", "earthformer-noglobal"):
        built = bench.build(method, scale, 0).model
        assert configs[method]["global_vectors"] == built.global_vectors
        assert configs[method]["global_vectors"] == (8 if method == "earthformer" else 0)
        assert configs[method]["pattern"] == bench.EARTHFORMER["pattern"]
    assert configs["unet"]["unet_base"] == scale.unet_base
    assert configs["convlstm"]["convlstm_hidden"] == scale.convlstm_hidden


def test_boon_quick_mode_meets_the_conditions_and_resumes(tmp_path):
    script = benchmark("boon", "--quick", "--out")
    subprocess.run([*script, str(tmp_path)], check=True, cwd=ROOT, timeout=600)
    result = json.loads((tmp_path / "boon.json").read_text())
    assert KEYS <= set(result) and "--quick" in result["command"]
    rows = {(row["case"], row["method"]): row for row in result["rows"]}
    cases = {case for case, _ in rows}
    assert len(cases) == 10 and {"heat-neumann", "cavity", "burgers-periodic"} <= cases
    methods = {"fno", "fno-overwrite", "boon", "boon-output", "fno-wall-input"}
    assert {method for _, method in rows} == methods
    peers = {case for case, method in rows if method == "fno-wall-input"}
    assert peers == {"stokes-varying-frequency", "stokes-varying-frequency-multistep"}
    fields = {"rel_l2", "rel_l2_interior", "boundary_error", "train_s", "fwd_ms", "params"}
    for (case, method), row in rows.items():
        assert fields <= set(row), (case, method)
        if method not in ("fno", "fno-wall-input"):  # the constrained ones meet them exactly
            assert row["boundary_error"] <= 1e-5, (case, method, row["boundary_error"])
    for name in ("boon-boundary-zoom.png", "boon-cavity-error-over-time.png"):
        assert (tmp_path / name).stat().st_size > 5_000
    assert not list(tmp_path.glob(".boon-*"))  # the resume files are gone once results exist

    # a run that finds a finished (case, method, seed) in the partial file reuses it
    from physml.tasks.boon import budget

    planted = {**result["runs"][0], "rel_l2": 123.0}
    assert planted["case"] == "heat-neumann" and planted["method"] == "fno"
    run = {"rows": [planted], "budget": repr(budget("heat-neumann", "quick"))}
    run["seed_scheme"] = "seedsequence-mt19937"  # drawn under the default, as the script runs
    partial = {"size": "quick", "runs": {"heat-neumann|fno|0": run}}
    (tmp_path / ".boon-partial-quick.json").write_text(json.dumps(partial))
    args = [str(tmp_path), "--cases", "heat-neumann"]
    subprocess.run([*script, *args], check=True, cwd=ROOT, timeout=600)
    resumed = json.loads((tmp_path / "boon.json").read_text())
    fno = [row for row in resumed["rows"] if row["method"] == "fno"]
    assert len(fno) == 1 and fno[0]["rel_l2"] == 123.0
    assert {row["case"] for row in resumed["rows"]} == {"heat-neumann"}


def test_boon_kept_predictions_that_fail_their_check_are_named_by_out(tmp_path):
    """The boundary zoom's predictions lie in --out: a damaged one is refused naming that flag
    (not physml's checkpoint:) and what deleting it costs."""
    from physml.io import save_torch_file

    bench = load_benchmark("boon")
    zoom = tmp_path / ".boon-zoom-quick.pt"
    files = [zoom.with_name(f"{zoom.stem}-{method}.pt") for method in bench.boon.TRAINED]
    for path in files:
        save_torch_file(path, {"u": torch.zeros(8)})
    flip_a_bit_of_a_zip_entry(files[0])
    with pytest.raises(CheckpointError) as refused:
        bench.draw([], [], ["heat-neumann"], "quick", tmp_path, zoom)
    assert str(refused.value) == (
        f"--out: {str(files[0])!r} cannot be read as kept predictions: it is damaged (its entry "
        "'data/0' fails its CRC-32 check: a bit changed on disk or in a copy); delete it to write "
        "the results without the boundary-zoom figure"
    )


def test_boon_on_neuralops_layout_writes_its_own_results(tmp_path):
    script = benchmark("boon", "--quick", "--fno", "neuralop", "--cases", "heat-neumann")
    subprocess.run([*script, "--out", str(tmp_path)], check=True, cwd=ROOT, timeout=600)
    result = json.loads((tmp_path / "boon_neuralop_fno.json").read_text())
    assert result["fno"] == "neuralop" and not (tmp_path / "boon.json").exists()
    assert {row["case"] for row in result["rows"]} == {"heat-neumann"}
    # the committed plain-layout record is of the full size: nothing to set beside a quick run
    assert result["summary"]["against_other_layout"] == {}


def _quick(name: str, out: Path, *extra: str) -> dict:
    """Run ``benchmarks/<name>.py --quick --out out [extra]`` and return its checked results
    JSON."""
    subprocess.run(
        benchmark(name, "--quick", "--out", str(out), *extra),
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    result = json.loads((out / f"{name}.json").read_text())
    assert KEYS <= set(result) and "--quick" in result["command"]
    markdown = (out / f"{name}.md").read_text()
    assert markdown.startswith(f"# {name}") and markdown.count("\n|") >= len(result["rows"]) + 1
    return result


def test_prediff_nbody_quick_mode_scores_every_method_and_a_reverse_process_the_same_rows(
    tmp_path,
):
    """One quick run computes every stage, in reverse order (``--reverse``); a second process on
    the same --work, in the plain order, reads every stage back and gives the same rows. The rows
    (checked on the run that computed them) hold every method and the intensity rows."""
    work = tmp_path / "work"
    result = _quick("prediff_nbody", tmp_path / "reverse", "--work", str(work), "--reverse")
    forward = _quick("prediff_nbody", tmp_path / "forward", "--work", str(work))
    assert result["rows"] == forward["rows"]  # the second run read every stage the first computed
    notes = (tmp_path / "reverse" / "prediff_nbody.md").read_text()
    assert "Every stage was computed" in notes and "steps were fixed by the scale" in notes
    assert "eval-prediff-kc-frames (" in (tmp_path / "forward" / "prediff_nbody.md").read_text()

    rows = result["rows"]
    methods = {(row["case"], row["method"], row.get("denoiser")) for row in rows}
    case = "nbody-16px-4to4"
    for expected in [
        (case, "persistence", None),
        (case, "earthformer", None),
        (case, "prediff", "conv"),
        (case, "prediff", "cuboid"),
        (case, "prediff-kc", "conv"),
    ]:
        assert expected in methods
    sweep = [row for row in rows if row["case"] == "lambda-sweep"]
    latent = {row["lambda"] for row in sweep if row.get("guidance") != "frame regressor"}
    assert latent == {0.0, *result["setup"]["lambdas"]}
    framed = [row for row in rows if row.get("guidance") == "frame regressor"]
    assert {row["case"] for row in framed} == {"lambda-sweep", case}  # its sweep and test row
    intensity = [row for row in rows if row["case"] == "intensity"]
    assert {(row["method"], row["n"]) for row in intensity} == {
        (m, n) for m in ("prediff", "prediff-kc") for n in (-2, 0, 2, 4)
    }
    persistence = next(row for row in rows if row["method"] == "persistence")
    assert persistence["crps"] == pytest.approx(persistence["mae"], rel=1e-5)  # one member
    for row in rows:
        if row["case"] == case and row["method"] != "judge":
            assert row["judge_floor"] > 0 and row["energy_error"] > 0 and -1 <= row["ssim"] <= 1
    for figure in ("strip", "energy"):
        for run in ("reverse", "forward"):
            assert (tmp_path / run / f"prediff_nbody-{figure}.png").stat().st_size > 0


def test_prediff_nbody_stages_remember_what_this_process_read_and_computed(tmp_path):
    prediff_nbody = load_benchmark("prediff_nbody")
    first = prediff_nbody.Stages(tmp_path, {"scale": {"lambdas": (0.3, 1.0)}})
    assert first.cached("sweep", lambda: {"x": 1}) == {"x": 1}
    assert first.cached("sweep", lambda: {"x": 2}) == {"x": 1}  # read back, not recomputed
    guide = first.derived(guide={"window": 5})
    guide.cached("guided", lambda: {"y": 3})
    assert first.ledger == {"sweep": None, "guided": None}  # computed here, ledger shared
    # another process on the same folder: a setup holding tuples matches its JSON lists
    second = prediff_nbody.Stages(tmp_path, {"scale": {"lambdas": (0.3, 1.0)}})
    assert second.cached("sweep", lambda: {"x": 2}) == {"x": 1}
    written = (tmp_path / "sweep.json").stat().st_mtime
    assert second.ledger == {"sweep": written}
    assert "sweep (" in prediff_nbody.cached_stages(second.ledger)
    assert prediff_nbody.cached_stages(first.ledger) == "Every stage was computed by this run."
    with pytest.raises(ValueError, match="another setup"):
        prediff_nbody.Stages(tmp_path, {"scale": {"lambdas": (0.3,)}}).cached("sweep", dict)


def test_prediff_nbody_caches_an_unknown_training_cost_as_strict_json_null(tmp_path):
    """A reload that finds no cost record reports NaN (unknown): its stage holds ``null``, not
    the ``NaN`` strict JSON readers refuse, and reads back as NaN, as the rows hold it."""
    prediff_nbody = load_benchmark("prediff_nbody")
    stages = prediff_nbody.Stages(tmp_path, {"seed": 0})
    done = SimpleNamespace(model="model", steps=6, train_s=math.nan, final_loss=0.5)
    for _ in ("computed", "read back"):
        model, cost = prediff_nbody.trained(stages, "autoencoder", lambda: done)
        assert model == "model" and cost.keys() == {"steps", "train_s", "final_loss"}
        assert (cost["steps"], cost["final_loss"]) == (6, 0.5) and math.isnan(cost["train_s"])
        text = (tmp_path / "train-autoencoder.json").read_text()
        saved = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a stage"))
        assert saved["result"]["train_s"] is None
        stages = prediff_nbody.Stages(tmp_path, {"seed": 0})


def test_prediff_nbody_knowledge_control_stages_are_kept_per_denoiser(tmp_path):
    """The stages that sample the knowledge-control denoiser are cached per denoiser: one
    computed for conv is not read back for cuboid (nor its sampling chunks), the same denoiser's
    is, and the stages that do not depend on it are shared."""
    prediff_nbody = load_benchmark("prediff_nbody")
    setup = {"mode": "quick", "seed": 0}
    first = prediff_nbody.Stages(tmp_path, setup)
    first.cached("data", lambda: {"d": 1})
    conv = prediff_nbody.kc_stages(first, "conv")
    assert conv.cached("sweep-1", lambda: {"x": 1}) == {"x": 1}
    conv.derived(guide={"window": 3}).cached("sweep-frames-0.3", lambda: {"f": 1})
    # a later process on the same folder with the other denoiser
    second = prediff_nbody.Stages(tmp_path, setup)
    cuboid = prediff_nbody.kc_stages(second, "cuboid")
    assert cuboid.cached("sweep-1", lambda: {"x": 2}) == {"x": 2}  # computed, not conv's
    framed = cuboid.derived(guide={"window": 3})
    assert framed.cached("sweep-frames-0.3", lambda: {"f": 2}) == {"f": 2}
    assert second.cached("data", lambda: {"d": 2}) == {"d": 1}  # shared: read back
    names = {name for name, when in second.ledger.items() if when is None}
    assert names == {"kc-cuboid-sweep-1", "kc-cuboid-sweep-frames-0.3"}
    assert prediff_nbody.chunk_folder(framed, "sweep-frames-0.3") != prediff_nbody.chunk_folder(
        conv.derived(guide={"window": 3}), "sweep-frames-0.3"
    )
    # and back to conv: its own results, read back
    third = prediff_nbody.kc_stages(prediff_nbody.Stages(tmp_path, setup), "conv")
    assert third.cached("sweep-1", lambda: {"x": 3}) == {"x": 1}
    assert third.derived(guide={"window": 3}).cached("sweep-frames-0.3", dict) == {"f": 1}


def test_prediff_nbody_resumed_with_another_kc_denoiser_gives_a_fresh_runs_rows(tmp_path):
    """A quick run with the conv denoiser, then one with --kc-denoiser cuboid on the same
    --work: the second's rows are those of a cuboid run on a fresh --work (bar timings), not the
    conv run's knowledge-control rows under the cuboid's name."""
    work = tmp_path / "work"
    conv = _quick("prediff_nbody", tmp_path / "conv", "--work", str(work))["rows"]
    cuboid = "--kc-denoiser", "cuboid"
    resumed = _quick("prediff_nbody", tmp_path / "resumed", "--work", str(work), *cuboid)["rows"]
    fresh = _quick("prediff_nbody", tmp_path / "fresh", "--work", str(tmp_path / "w2"), *cuboid)

    def untimed(rows):
        return [{k: v for k, v in row.items() if k not in ("train_s", "fwd_ms")} for row in rows]

    assert untimed(resumed) == untimed(fresh["rows"])
    controlled = [row for row in resumed if row["method"] == "prediff-kc"]
    assert controlled and {row["denoiser"] for row in controlled} == {"cuboid"}
    before = [row for row in conv if row["method"] == "prediff-kc"]
    assert [row.get("mse") for row in controlled] != [row.get("mse") for row in before]

    def plain(rows):
        return [row for row in rows if row["method"] == "prediff" and row["case"].startswith("nb")]

    assert len(plain(resumed)) == 2 and plain(resumed) == plain(conv)  # read back
    markdown = (tmp_path / "resumed" / "prediff_nbody.md").read_text()
    assert "eval-prediff-conv (" in markdown and "kc-conv-" not in markdown


def test_prediff_nbody_chooses_the_guidance_on_validation_rows():
    """The done-when checks read the guidance whose chosen λ is the better on validation (by the
    λ rule against unguided PreDiff on the same videos), with its test row, whatever the test
    rows say."""
    prediff_nbody = load_benchmark("prediff_nbody")
    latent, frames = prediff_nbody.LATENT, prediff_nbody.FRAMES
    reference = {"energy_error": 1.0, "mse": 100.0, "ssim": 0.3}
    val_latent = {"lambda": 10.0, "energy_error": 0.8, "mse": 101.0, "ssim": 0.3}
    val_frames = {"lambda": 1.0, "energy_error": 0.55, "mse": 101.0, "ssim": 0.3}
    test_latent = {"lambda": 10.0, "energy_error": 0.49, "mse": 101.0, "ssim": 0.3}
    test_frames = {"lambda": 1.0, "energy_error": 0.52, "mse": 101.0, "ssim": 0.3}
    candidates = {latent: (val_latent, test_latent), frames: (val_frames, test_frames)}
    name, row = prediff_nbody.chosen_guidance(candidates, reference)
    assert name == frames and row is test_frames  # the test rows would pick the latent one
    # the rule's limits on validation: frames' lower error costs too much MSE there
    costly = {**val_frames, "mse": 103.0}
    candidates = {latent: (val_latent, test_latent), frames: (costly, test_frames)}
    assert prediff_nbody.chosen_guidance(candidates, reference) == (latent, test_latent)
    # a tie on validation: the first
    tied = {latent: (val_latent, test_latent), frames: (dict(val_latent), test_frames)}
    assert prediff_nbody.chosen_guidance(tied, reference) == (latent, test_latent)


def test_boon_comparison_with_a_recorded_run_of_unknown_standard_errors(tmp_path):
    """A recorded run of one seed has no standard error (NaN, saved as null): the comparison
    with it gives the ratio and an unknown z instead of a crash after all the training; so does
    a run of one seed now."""
    boon_bench = load_benchmark("boon")
    recorded = tmp_path / "boon.json"
    old = [
        {"case": "heat-neumann", "method": "fno", "rel_l2": 0.02, "rel_l2_se": None},
        {"case": "heat-neumann", "method": "boon", "rel_l2": 0.01, "rel_l2_se": 0.002},
        {"case": "cavity", "method": "boon", "rel_l2": 0.02, "rel_l2_se": 0.004},
    ]
    recorded.write_text(json.dumps({"size": "full", "rows": old}))
    rows = [
        {"case": "heat-neumann", "method": "fno", "rel_l2": 0.025, "rel_l2_se": 0.001},
        {"case": "heat-neumann", "method": "boon", "rel_l2": 0.008, "rel_l2_se": math.nan},
        {"case": "cavity", "method": "boon", "rel_l2": 0.028, "rel_l2_se": 0.003},
    ]
    out, prose = boon_bench.against_recorded(rows, recorded, "neuralop", "full")
    assert out["heat-neumann/fno"]["z"] is None
    assert out["heat-neumann/fno"]["ratio"] == pytest.approx(1.25)
    assert out["heat-neumann/boon"]["z"] is None
    assert out["heat-neumann/boon"]["ratio"] == pytest.approx(0.8)
    assert out["cavity/boon"]["z"] == pytest.approx(0.008 / 0.005)  # both known
    assert "2 of 3 rows no worse or within 2 standard errors" in prose
    assert "| heat-neumann/fno | 0.025 | 0.02 | 1.25 |  |" in prose
    assert math.isnan(boon_bench.known_se(None)) and math.isnan(boon_bench.known_se(math.inf))
    assert boon_bench.known_se(0.5) == 0.5


def test_earthformer_nbody_quick_mode_scores_every_method(tmp_path):
    from physml.data.nbody import nbody_digits

    result = _quick("earthformer_nbody", tmp_path)
    rows = {row["method"]: row for row in result["rows"]}
    expected = {"earthformer", "earthformer-noglobal", "unet", "convlstm", "persistence", "blank"}
    assert set(rows) == expected | {"physics-reference"}
    for figure in ("strip", "curves"):
        assert (tmp_path / f"earthformer_nbody-{figure}.png").stat().st_size > 0
    scale = result["setup"]["scale"]
    for row in rows.values():
        assert len(row["mse_per_lead"]) == scale["t_out"]
        assert row["mse"] == pytest.approx(sum(row["mse_per_lead"]) / scale["t_out"])
        assert 0 < row["mse"] and -1 <= row["ssim"] <= 1
    assert rows["persistence"]["params"] == 0 and rows["persistence"]["steps"] == 0
    assert rows["earthformer"]["params"] > rows["earthformer-noglobal"]["params"] > 0

    # Persistence scored independently: the last context frame against each target frame,
    # squared error summed over the frame's pixels, averaged over sequences and lead times.
    frames = scale["t_in"] + scale["t_out"]
    test = nbody_digits(
        scale["test"],
        seed=result["seed"] + 1,
        frames=frames,
        size=scale["size"],
        split="test",
        stride=scale["stride"],
        **result["setup"]["physics"],
    ).frames.double()
    last, future = test[:, scale["t_in"] - 1], test[:, scale["t_in"] :]
    expected_mse = (future - last[:, None]).square().sum((-3, -2, -1)).mean()
    assert rows["persistence"]["mse"] == pytest.approx(float(expected_mse), rel=1e-5)
    blank_mse = future.square().sum((-3, -2, -1)).mean()  # the all-black forecast's error
    assert rows["blank"]["mse"] == pytest.approx(float(blank_mse), rel=1e-5)
    # The physics reference beats every model, and without noise it is the truth itself.
    assert all(
        rows["physics-reference"]["mse"] < row["mse"] for row in rows.values() if row["steps"]
    )


def test_physics_reference_without_noise_is_the_truth_and_blurs_with_it(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import nbody_forecasting as bench

    scale = bench.SCALES["quick"]
    _, test = bench.datasets(scale, 0)
    truth = test.frames[:, scale.t_in :]
    exact = bench.physics_reference(test, scale, 0, position_sd=0, velocity_sd=0, samples=1)
    assert torch.equal(exact, truth)
    blurred = bench.physics_reference(test, scale, 0, **bench.REFERENCE)
    assert 0 < (blurred - truth).square().mean() < truth.square().mean()
    assert torch.allclose(blurred.sum((-2, -1)), truth.sum((-2, -1)), rtol=0.2)  # same ink


def test_validation_videos_are_new_trajectories_with_training_handwriting(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import nbody_forecasting as bench

    from physml.data.nbody import sprite_pool

    scale = bench.SCALES["quick"]
    train, test = bench.datasets(scale, 0)
    held_out = bench.validation(scale, 0, count=scale.train)
    assert held_out.frames.shape == train.frames.shape
    assert set(held_out.sprite_index.flatten().tolist()) <= set(sprite_pool("train").tolist())
    starts = {tuple(p.flatten().tolist()) for p in train.positions[:, 0]}
    assert not starts & {tuple(p.flatten().tolist()) for p in held_out.positions[:, 0]}


def test_earthformer_nbody_rejects_quick_with_another_scale():
    script = benchmark("earthformer_nbody")
    for bad in (["--quick", "--scale", "long"], ["--scale", "huge"]):
        done = subprocess.run([*script, *bad], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 2 and "--scale" in done.stderr, (bad, done.stderr)


def test_earthformer_nbody_reuses_rows_of_an_earlier_process_and_says_so(tmp_path):
    """A second process sharing --work reads the first one's finished row back unchanged, and
    the results name it as reused (their command and wall time are the assembler's)."""
    script = benchmark("earthformer_nbody", "--quick")
    work, first, second = tmp_path / "work", tmp_path / "first", tmp_path / "second"
    for out, methods in ((first, ["unet"]), (second, ["unet", "blank"])):
        arguments = ["--work", str(work), "--out", str(out), "--methods", *methods]
        subprocess.run([*script, *arguments], check=True, cwd=ROOT, timeout=600)
    trained = json.loads((first / "earthformer_nbody.json").read_text())
    assembled = json.loads((second / "earthformer_nbody.json").read_text())
    assert trained["reused_rows"] == [] and assembled["reused_rows"] == ["unet"]
    assert assembled["rows"][0] == trained["rows"][0]
    assert [row["method"] for row in assembled["rows"]] == ["unet", "blank"]
    assert "earlier processes" not in (first / "earthformer_nbody.md").read_text()
    assert "Rows `unet` were trained" in (second / "earthformer_nbody.md").read_text()


def test_earthformer_nbody_trains_no_finished_model_again_and_refuses_old_checkpoints(
    tmp_path, monkeypatch, capsys
):
    """A rerun on a --work folder whose rows are finished reads the learned models back from
    their run folders instead of training them (one whose checkpoint is gone keeps its row and
    is left out of the figures); an older single-file checkpoint where a run folder goes is
    refused before any training, naming the file."""
    bench = load_benchmark("earthformer_nbody")
    trained, shown = [], []

    def counting(model, *args, **kwargs):
        if any(p.requires_grad for p in model.parameters()):
            trained.append(kwargs["checkpoint"].name)
        return train_forecaster(model, *args, **kwargs)

    def drawn(path, context, truth, forecasts):
        shown.append(list(forecasts))

    train_forecaster = bench.train_forecaster
    monkeypatch.setattr(bench, "train_forecaster", counting)
    monkeypatch.setattr(bench, "strip_figure", drawn)
    work = tmp_path / "work"
    runs = [["--work", str(work), "--out", str(tmp_path / f"out{i}")] for i in range(3)]
    methods = ["--quick", "--methods", "unet", "persistence"]
    assert bench.main([*methods, *runs[0]]) == 0
    assert trained == ["unet"] and shown == [["unet", "persistence"]]
    first = json.loads((tmp_path / "out0" / "earthformer_nbody.json").read_text())
    assert bench.main([*methods, *runs[1]]) == 0
    assert trained == ["unet"] and shown[1] == ["unet", "persistence"]
    again = json.loads((tmp_path / "out1" / "earthformer_nbody.json").read_text())
    assert again["rows"] == first["rows"] and again["reused_rows"] == ["unet", "persistence"]
    (work / "unet" / "checkpoint.pt").unlink()
    capsys.readouterr()
    assert bench.main([*methods, *runs[2]]) == 0
    assert trained == ["unet"] and shown[2] == ["persistence"]
    assert "unet's row is read back from " in capsys.readouterr().err
    last = json.loads((tmp_path / "out2" / "earthformer_nbody.json").read_text())
    assert last["rows"] == first["rows"]

    old = tmp_path / "old"
    old.mkdir()
    (old / "convlstm.pt").write_bytes(b"a checkpoint of older physml")
    with pytest.raises(CheckpointError) as refused:
        bench.main(["--quick", "--work", str(old), "--out", str(tmp_path / "o"), "--methods",
                    "unet", "convlstm"])  # fmt: skip
    assert str(refused.value).startswith(
        f"--work: {str(old / 'convlstm.pt')!r} is an old single-file forecaster checkpoint"
    )
    assert trained == ["unet"] and sorted(p.name for p in old.iterdir()) == ["convlstm.pt"]


def test_more_training_videos_extend_the_same_training_set(monkeypatch):
    """The long scale's 20000 training videos start with the full scale's 3000: a larger count
    appends videos and leaves the first ones as they were, so the two runs are comparable."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import nbody_forecasting as bench

    small = bench.SCALES["quick"]
    large = dataclasses.replace(small, train=3 * small.train)
    first, _ = bench.datasets(small, 0)
    extended, test = bench.datasets(large, 0)
    assert torch.equal(extended.frames[: small.train], first.frames)
    assert not torch.equal(extended.frames[small.train : 2 * small.train], first.frames)
    _, same_test = bench.datasets(small, 0)
    assert torch.equal(test.frames, same_test.frames)


class _Killed(Exception):
    """Stands for a run killed after a checkpoint."""


def test_a_run_resumed_with_another_l1_weight_is_refused(monkeypatch, tmp_path):
    """The L1 weight is part of the loss a checkpoint records: a run killed part-way resumes
    with its own weight and is refused with another (or with the benchmark's own)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import nbody_forecasting as bench

    from physml.training.forecasting import train_forecaster

    gen = torch.Generator().manual_seed(0)
    prediction, target = torch.rand(2, 3, 4, generator=gen), torch.rand(2, 3, 4, generator=gen)
    error = prediction - target
    for weight in (0.0, 0.1, 1.0):
        expected = error.square().mean() + weight * error.abs().mean()
        assert torch.allclose(bench.weighted_training_loss(weight)(prediction, target), expected)
    assert bench.weighted_training_loss(0.1) is bench.training_loss  # recorded as before
    with pytest.raises(ValueError, match="l1_weight must be a finite number >= 0"):
        bench.weighted_training_loss(-1.0)

    class Scaled(torch.nn.Module):  # the last input frame times a learned factor, per target
        def __init__(self) -> None:
            super().__init__()
            self.factor = torch.nn.Parameter(torch.ones(3, 1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.factor * x[:, -1:]

    x, y = torch.rand(4, 2, 1, 4, 4, generator=gen), torch.rand(4, 3, 1, 4, 4, generator=gen)
    path = tmp_path / "run.pt"

    taken = []

    def run(loss, stop_at=None):
        def on_step(step, value):
            taken.append(step)
            if step == stop_at:
                raise _Killed

        settings = dict(max_steps=4, batch_size=2, checkpoint=path, checkpoint_every=1)
        return train_forecaster(Scaled(), x, y, **settings, loss=loss, on_step=on_step)

    with pytest.raises(_Killed):
        run(bench.weighted_training_loss(1.0), stop_at=2)
    for other in (bench.weighted_training_loss(0.5), bench.training_loss):
        with pytest.raises(ValueError, match=r"\(loss 'nbody_forecasting.training_loss\(l1_w"):
            run(other)
    assert taken == [1, 2]
    report = run(bench.weighted_training_loss(1.0))  # from step 1's checkpoint: step 2 again
    assert report.steps == 4 and len(report.losses) == 4 and taken == [1, 2, 2, 3, 4]


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (dict(position_sd=-0.1), ValueError, "position_sd"),
        (dict(velocity_sd=float("nan")), ValueError, "velocity_sd"),
        (dict(samples=0), ValueError, "samples"),
        (dict(samples=2.0), TypeError, "samples"),
        (dict(test="videos"), TypeError, "test must be NBodyDigits"),
        (dict(frames=3), ValueError, "t_in \\+ t_out"),
    ],
)
def test_physics_reference_rejects_bad_arguments(monkeypatch, bad, error, message):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import nbody_forecasting as bench

    scale = bench.SCALES["quick"]
    _, test = bench.datasets(scale, 0)
    bad = dict(bad)  # a copy: the parametrized dict is shared between runs
    if "frames" in bad:
        test = dataclasses.replace(test, frames=test.frames[:, : bad.pop("frames")])
    arguments = dict(test=test, scale=scale, seed=0, **bench.REFERENCE) | bad
    with pytest.raises(error, match=message):
        bench.physics_reference(**arguments)


def test_cuboid_scaling_quick_mode_times_every_pattern(tmp_path):
    result = _quick("cuboid_scaling", tmp_path)
    sweep = [row for row in result["rows"] if row["case"].startswith("thw-")]
    methods = {"cuboid-axial", "cuboid-local", "full-attention"}
    cases = {row["case"] for row in sweep}
    assert {row["method"] for row in sweep} == methods
    assert len(sweep) == len(methods) * len(cases) >= 6
    for row in sweep:
        assert row["fits"] is True and row["fwd_ms"] > 0 and row["peak_mb"] >= 0
    # Full attention's score tensor is (THW)² per head; a local cuboid's is THW·V.
    for row in sweep:
        if row["method"] == "full-attention":
            assert row["scores_mb"] * 2**20 == 4 * 4 * row["thw"] ** 2
    assert set(result["slopes"]) == methods
    targets = [row for row in result["rows"] if row["case"].startswith("target-")]
    assert {row["reference_ms"] for row in targets} == {167.0, 17.0}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["x", "unet", "probe"], "argument BUDGET_S: must be CPU seconds > 0, got 'x'"),
        (["0", "unet", "probe"], "argument BUDGET_S: must be CPU seconds > 0, got '0'"),
        (["1", "physics-reference", "probe"], "argument METHOD: invalid choice: 'physics-ref"),
        (["1", "unet", "probe", "lr=1"], "argument OVERRIDES: must be a JSON object such as"),
        (["1", "unet"], "the following arguments are required: TAG"),
    ],
)
def test_earthformer_variant_script_reads_its_arguments_before_any_work(argv, message, capsys):
    variant = load_benchmark("earthformer_nbody_variant")
    with pytest.raises(SystemExit) as stop:
        variant.main(["--help"])
    assert stop.value.code == 0
    assert "BUDGET_S METHOD TAG [OVERRIDES]" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        variant.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_earthformer_variant_script_prints_a_scored_line_and_the_loss_curve():
    script = ROOT / "benchmarks" / "earthformer_nbody_variant.py"
    overrides = '{"loss": "mse+0.1l1", "lr": 0.001, "ffn_kernel": 5}'
    done = subprocess.run(
        [sys.executable, str(script), "1", "earthformer-noglobal", "probe", overrides],
        check=True,
        cwd=ROOT,
        timeout=600,
        capture_output=True,
        text=True,
    )
    scored, curve = done.stdout.splitlines()
    words = scored.split()
    assert words[:2] == ["probe", "earthformer-noglobal"]
    fields = dict(zip(words[2::2], words[3::2], strict=True))
    assert fields["seed"] == "0" and int(fields["steps"]) >= 1
    assert float(fields["mse"]) > 0 and -1 <= float(fields["ssim"]) <= 1
    assert float(fields["val_mse"]) > 0 and -1 <= float(fields["val_ssim"]) <= 1
    assert fields["val_mse"] != fields["mse"]  # other videos
    assert curve.startswith("probe training loss")
    marks = [mark.split(":") for mark in curve.split()[-5:]]
    steps = [int(step) for step, _ in marks]
    assert steps == sorted(steps) and steps[-1] == int(fields["steps"])
    assert all(float(loss) > 0 for _, loss in marks)


def test_exploration_figure_reads_the_run_table_and_keeps_benchmark_like_runs(
    monkeypatch, tmp_path
):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import earthformer_nbody_exploration_figure as exploration

    rows = [
        "| a | convlstm | 450 | loss mse+0.1l1 | 10 | 31.20 | 66.0 | 0.380 | 21.0 | 35.0 |",
        "| b | unet (32) | 450 | loss mse | 10 | 31.80 | 77.0 | 0.260 | 21.0 | 35.0 |",
        "| c | earthformer-noglobal | 900 | as a | 10 | 31.70 | 66.0 | 0.410 | 21.0 | 35.0 |",
        "| d | earthformer | 450 | as a + 20000 training videos | 10 | 30.0 | 66 | 0.4 | 2 | 3 |",
        "| e | earthformer-noglobal | 450 | as a + axial | 10 | 31.66 | 67 | 0.37 | 2 | 3 |",
    ]
    record = tmp_path / "record.md"
    record.write_text("\n".join(["intro", "", exploration.HEADER, "|---|", *rows, "", "after"]))
    runs = exploration.read_runs(record)
    assert [run.tag for run in runs] == ["a", "b", "c", "d", "e"]
    assert runs[1].method == "unet" and runs[4].mse == 31.66 and runs[0].ssim == 0.38
    # b changed the loss, c the budget, d the data: only a and e share the benchmark's set-up
    assert [run.tag for run in runs if exploration.benchmark_like(run)] == ["a", "e"]
    exploration.figure(runs, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0

    record.write_text("\n".join([exploration.HEADER, "|---|", "| a | unet | 450 |"]))
    with pytest.raises(ValueError, match="10 cells"):
        exploration.read_runs(record)
    record.write_text("no table here")
    with pytest.raises(ValueError, match="no run table"):
        exploration.read_runs(record)


def test_exploration_figure_takes_help_and_draws_into_the_out_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import earthformer_nbody_exploration_figure as exploration

    recorded = exploration.FIGURE.read_bytes()
    with pytest.raises(SystemExit) as stop:
        exploration.main(["--help"])
    assert stop.value.code == 0 and "--out" in capsys.readouterr().out
    assert exploration.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / exploration.FIGURE.name).stat().st_size > 0
    assert exploration.FIGURE.read_bytes() == recorded


def test_step_search_finds_the_fewest_steps(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from solvers import fewest_steps

    def fourth_order(steps: int) -> float:  # unstable (inf) below 3 steps
        return math.inf if steps < 3 else 7.0 / steps**4

    for target in (1e-1, 3e-3, 1e-6):
        expected = max(3, math.ceil((7.0 / target) ** 0.25 - 1e-9))
        assert fewest_steps(fourth_order, target) == expected
    floor = fewest_steps(lambda steps: 1e-3 + fourth_order(steps), 1e-4)
    assert floor is None  # the error stops halving: the grid, not the step, limits it
    assert fewest_steps(fourth_order, 1e-30, most=64) is None


def _usage_error(capsys, main, arguments: list[str]) -> str:
    """The last line ``main(arguments)`` writes on stderr, refusing them as argparse does: exit
    status 2, the usage first."""
    with pytest.raises(SystemExit) as refusal:
        main(arguments)
    err = capsys.readouterr().err
    assert refusal.value.code == 2 and err.startswith("usage: ")
    return err.splitlines()[-1]


def test_guided_sampling_cost_refuses_no_repeats(tmp_path, capsys):
    bench = load_benchmark("guided_sampling_cost")
    line = _usage_error(capsys, bench.main, ["--quick", "--repeats", "0", "--out", str(tmp_path)])
    assert line.endswith(": error: argument --repeats: must be an integer >= 1, got '0'")


def test_earthformer_artifacts_names_the_variants_it_knows(tmp_path, capsys):
    bench = load_benchmark("earthformer_artifacts")
    arguments = ["--quick", "--variants", "conserved,other", "--out", str(tmp_path)]
    assert _usage_error(capsys, bench.main, arguments).endswith(
        ": error: argument --variants: must name some of ['conserved', 'source'], "
        "comma-separated, got ['conserved', 'other']"
    )


def test_the_budget_benchmarks_refuse_a_damaged_plan_naming_their_work_option(tmp_path):
    """Their plans are ``--work``'s: a damaged one is refused with that remedy, before any
    training (no windows needed)."""
    from physml.tasks import conservation_forecast as blocks

    (tmp_path / "plan.json").write_text("[]")
    scale, split = dataclasses.replace(blocks.TOY, steps=None), {"train": None}
    budget = load_benchmark("forecast_budget")
    artifacts = load_benchmark("earthformer_artifacts")
    for call in (
        lambda: budget.members("fno", 1, [0], scale, split, None, tmp_path, 0, True),
        lambda: artifacts.ensemble("zero-pad", scale, split, None, tmp_path, 0, True),
    ):
        with pytest.raises(ValueError, match=r"plan\.json: .*use another --work$"):
            call()


def test_names_options_refuse_a_name_given_twice(capsys):
    """A name repeated in a comma-separated option (``--variants conserved,conserved``) is a
    usage error naming the option and the repeated name, exit status 2."""
    common = load_benchmark("common")
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--variants", type=common.names_arg(["conserved", "source"]))
    assert parser.parse_args(["--variants", "source,conserved"]).variants == ["source", "conserved"]
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--variants", "conserved,source,conserved"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "bench: error: argument --variants: must name each of ['conserved', 'source'] at most "
        "once, got ['conserved', 'source', 'conserved'] (conserved repeated)"
    )


def test_forecast_budget_trains_members_side_by_side_and_scores_every_configuration(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    first = ["--quick", "--work", str(work), "--out", str(out), "--configs", "4x2,6x1"]
    subprocess.run(
        benchmark("forecast_budget", *first, "--train-only", "--members", "0,5"),
        check=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    trained = sorted(p.name for p in (work / "conserved").glob("earthformer-*"))
    assert trained == [  # member 5 only where a configuration has six members
        "earthformer-periodic+icnr-0",
        "earthformer-periodic+icnr-5",
        "earthformer-periodic+icnr-x2-0",
    ]
    assert not out.exists()  # a training-only invocation writes no results
    result = _quick("forecast_budget", out, "--work", str(work), "--configs", "4x1,4x2,6x1")
    rows = {(row["case"], row["method"]): row for row in result["rows"]}
    methods = ("raw", "hardc", "probconserv", "probconserv_shrunk")
    assert set(rows) == {(c, m) for c in ("4x1", "4x2", "6x1") for m in methods}
    assert rows["4x2", "raw"]["steps"] == 2 * rows["4x1", "raw"]["steps"]
    assert rows["6x1", "raw"]["members"] == 6
    for case in ("4x1", "4x2", "6x1"):
        for method in ("hardc", "probconserv"):
            assert rows[case, method]["ce_abs_max"] <= 1e-6
    assert (out / "forecast_budget.png").stat().st_size > 0


def test_forecast_budget_of_the_fno_rolls_its_members_out_into_its_own_record(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    arguments = ["--quick", "--out", str(out), "--work", str(work), "--configs", "2x1,2x2"]
    subprocess.run(
        benchmark("forecast_budget", *arguments, "--model", "fno"),
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    result = json.loads((out / "forecast_budget_fno.json").read_text())
    assert (out / "forecast_budget_fno.md").read_text().startswith("# forecast_budget_fno")
    assert sorted(p.name for p in (work / "conserved").glob("fno*")) == [
        "fno-trajectories-0", "fno-trajectories-1",
        "fno-trajectories-x2-0", "fno-trajectories-x2-1",
    ]  # fmt: skip
    assert result["benchmark"] == "forecast_budget_fno" and result["model"] == "fno"
    rows = {(row["case"], row["method"]): row for row in result["rows"]}
    assert {row["model"] for row in result["rows"]} == {"fno"}
    assert rows["2x2", "raw"]["steps"] == 2 * rows["2x1", "raw"]["steps"]
    assert rows["2x1", "raw"]["members"] == 2
    assert rows["2x2", "hardc"]["ce_abs_max"] <= 1e-6
    assert not (out / "forecast_budget.json").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--configs", "4x0"], "argument --configs: must be <members>x<factor> items"),
        (["--configs", "1x2"], "(members ≥ 2, factor ≥ 1), got '1x2'"),
        (["--configs", "four"], "argument --configs: must be <members>x<factor> items"),
        (["--members", "0"], "--members needs --train-only"),
        (["--members", "9", "--train-only"], "--members must be among 0..7, got '9'"),
        (["--members", "a", "--train-only"], "--members must be among 0..7, got 'a'"),
        (["--members", "2", "--train-only", "--configs", "2x1"], "among 0..1, got '2'"),
    ],
)
def test_forecast_budget_refuses_bad_arguments(tmp_path, capsys, arguments, message):
    bench = load_benchmark("forecast_budget")
    line = _usage_error(capsys, bench.main, ["--quick", "--out", str(tmp_path), *arguments])
    assert ": error: " in line and message in line


def test_forecast_conservation_side_by_side_variants_give_the_rows_of_one_process(tmp_path):
    """Its quick mode, run with both variants in two processes and again in one (reloading the
    models the first trained)."""
    work = tmp_path / "work"
    parallel = _quick("forecast_conservation", tmp_path / "two", "--work", str(work), "--jobs", "2")
    serial = _quick("forecast_conservation", tmp_path / "one", "--work", str(work))  # reloads
    timing = {"fwd_ms"}

    def comparable(result):
        return [{k: v for k, v in row.items() if k not in timing} for row in result["rows"]]

    assert {row["variant"] for row in parallel["rows"]} == {"conserved", "source"}
    assert comparable(parallel) == comparable(serial)
    assert parallel["jobs"] == 2 and parallel["kc_sweep"] == serial["kc_sweep"]
    from physml.tasks.conservation_forecast import TOY

    markdown = (tmp_path / "one" / "forecast_conservation.md").read_text()
    for variant in ("conserved", "source"):
        assert (tmp_path / "two" / f"forecast_conservation-mass-{variant}.png").stat().st_size > 0
        assert parallel["plan"][variant] == serial["plan"][variant]
        assert parallel["plan"][variant]["steps"] == dict(TOY.steps)  # the record says its steps
        steps = ", ".join(f"{family} {count}" for family, count in TOY.steps.items())
        assert f"{variant}: {steps}" in markdown
    assert "fixed by the scale" in markdown and "measured" not in markdown
    assert all(f"| {row['error']} |" in markdown for row in serial["rows"] if "error" in row)


def test_forecast_conservation_says_how_its_training_steps_were_chosen():
    bench = load_benchmark("forecast_conservation")
    steps = {"earthformer": 2, "fno": 8}
    fixed = bench.steps_note({"conserved": {"s_per_step": None, "steps": steps}})
    assert "fixed by the scale" in fixed and "measured" not in fixed
    assert fixed.endswith(": conserved: earthformer 2, fno 8.\n")
    bought = bench.steps_note({"source": {"s_per_step": {"earthformer": 0.5}, "steps": steps}})
    assert "bought by `budget_s` at the CPU seconds per step measured" in bought
    assert "fixed" not in bought and bought.endswith(": source: earthformer 2, fno 8.\n")


def test_forecast_conservation_table_says_why_a_row_has_no_scores(tmp_path):
    """A -nonneg row that could not be made non-negative has only `error`: the table shows it."""
    bench = load_benchmark("forecast_conservation")
    reason = "non-negativity is infeasible here: a total is -0.0864 < 0"
    row = {"case": "earthformer-conserved", "method": "raw-nonneg", "train_s": 0.5, "error": reason}
    sys.modules["common"].write_results("probe", [row], 0, 0.0, tmp_path, bench.COLUMNS)
    table = (tmp_path / "probe.md").read_text().splitlines()
    assert table[-3].endswith("| train_s | error |") and table[-1].endswith(f"| 0.5 | {reason} |")


def test_prediff_nbody_says_when_the_scale_fixed_its_steps():
    """--quick trains the toy scale's step counts; only the full scale's come from the budget."""
    bench = load_benchmark("prediff_nbody")
    quick = bench.steps_note(bench.QUICK)
    assert "fixed by the scale" in quick and "CPU-s" not in quick
    assert "for a budget of 3600 CPU-s per forecaster" in bench.steps_note(bench.FULL)


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_forecast_conservation_refuses_no_processes(tmp_path, capsys, jobs):
    bench = load_benchmark("forecast_conservation")
    line = _usage_error(capsys, bench.main, ["--quick", "--out", str(tmp_path), "--jobs", jobs])
    assert line.endswith(f": error: argument --jobs: must be an integer >= 1, got '{jobs}'")


def test_fno_coordinates_keeps_the_data_of_each_size_in_its_own_file(tmp_path):
    coordinates = load_benchmark("fno_coordinates")
    for name in coordinates.CASES:
        full, quick = coordinates.CASES[name], coordinates.QUICK[name]
        paths = {
            coordinates.data_path(tmp_path, name, part, spec[n], spec[2])
            for spec in (full, quick)
            for part, n in (("train", 3), ("test", 4))
        }
        assert len(paths) == 4 and all(path.parent == tmp_path for path in paths)


def test_fno_coordinates_draws_its_data_again_under_another_seed_scheme_only(tmp_path, monkeypatch):
    from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme

    coordinates = load_benchmark("fno_coordinates")
    made, generate = [], coordinates.generate_dataset
    monkeypatch.setattr(
        coordinates, "generate_dataset", lambda *a, **k: made.append(a[1]) or generate(*a, **k)
    )
    options = {"nx": 9, "nt": 3}

    def data(folder):
        return coordinates.part_data("heat", folder, "heat", "train", 2, 0, options, True)

    with seed_scheme(SEED_SCHEME):
        default = data(tmp_path).u
    with seed_scheme(MANUAL_SEED_SCHEME):
        manual = data(tmp_path).u
        assert torch.equal(data(tmp_path).u, manual)
    with seed_scheme(SEED_SCHEME):
        assert torch.equal(data(tmp_path).u, default)
    assert len(made) == 2 and not torch.equal(default, manual)
    kept = tmp_path / "kept" / "heat-train-2-nt3-nx9.h5"  # as named before names held the scheme
    kept.parent.mkdir()
    made[0].rename(kept)
    with seed_scheme(SEED_SCHEME):
        assert torch.equal(data(kept.parent).u, default) and len(made) == 2
    with seed_scheme(MANUAL_SEED_SCHEME):
        assert torch.equal(data(kept.parent).u, manual) and len(made) == 3


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("cuboid_scaling", ["--cap-gib", "-1"], "argument --cap-gib: must be a finite number > 0"),
        (
            "earthformer_artifacts",
            ["--variants", "nope"],
            "argument --variants: must name some of ['conserved', 'source'], comma-separated, "
            "got ['nope']",
        ),
        ("forecast_budget", ["--configs", "nope"], "argument --configs: must be <members>x"),
        ("forecast_budget", ["--members", "0"], "--members needs --train-only"),
        ("forecast_conservation", ["--jobs", "0"], "argument --jobs: must be an integer >= 1"),
        ("forecast_conservation", ["--variants", "nope"], "argument --variants: must name some"),
        ("guided_sampling_cost", ["--repeats", "0"], "argument --repeats: must be an integer >= 1"),
        ("prediff_nbody", ["--stages", "nope"], "argument --stages: must name some of ['data'"),
        ("prediff_nbody", ["--denoisers", "nope"], "argument --denoisers: must name some of"),
        (
            "prediff_nbody",
            ["--device", "nope"],
            "argument --device: device must be 'cpu', 'cuda' or 'cuda:N', got 'nope'",
        ),
        (
            "prediff_nbody_step_cost",
            ["--device", "nope"],
            "argument --device: device must be 'cpu', 'cuda' or 'cuda:N', got 'nope'",
        ),
        ("updates_figures", ["--results", "."], "--results: no model_update.json or guarded_"),
    ],
)
def test_a_bad_option_value_is_a_usage_error_with_exit_status_2(tmp_path, name, arguments, error):
    """argparse's convention, as the benchmarks' other options follow it: the usage and one
    line naming the option on stderr, exit status 2, before any work (nothing written)."""
    done = subprocess.run(
        benchmark(name, *arguments), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith("usage: ")
    assert done.stderr.splitlines()[-1].startswith(f"{name}.py: error: {error}")
    assert list(tmp_path.iterdir()) == []


def test_results_are_strict_json_and_their_tables_keep_their_columns(tmp_path):
    common = load_benchmark("common")
    rows = [{"case": "a|b", "method": None, "value": math.nan, "curve": [1.0, math.inf]}]
    result = common.write_results("probe", rows, 0, 0.0, tmp_path, ("case", "method", "value"))

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    written = json.loads((tmp_path / "probe.json").read_text(), parse_constant=refuse)
    assert written["rows"] == [{"case": "a|b", "method": None, "value": None, "curve": [1.0, None]}]
    assert math.isnan(result["rows"][0]["value"])  # the caller keeps its numbers
    table = (tmp_path / "probe.md").read_text().splitlines()[-1]
    assert table == "| a\\|b |  |  |"  # NaN empty, as its record keeps it (null)


@pytest.mark.parametrize("unknown", [math.nan, None, math.inf, -math.inf])
def test_an_unknown_train_s_is_an_empty_cell_live_and_rendered_again_from_json(unknown):
    """A live run's row (an unknown training time: NaN or None) and the row its strict-JSON
    record gives back render the same table: an empty cell."""
    from physml.io import strict_json

    common = load_benchmark("common")
    live = {"benchmark": "probe", "command": "python probe.py", "seed": 0, "machine": "m"}
    live |= {"torch": "2", "wall_s": 1.0, "date": "2026-12-08"}
    live["rows"] = [{"method": "fno", "train_s": unknown, "rel_l2": 0.25}]
    columns = ("method", "train_s", "rel_l2")
    table = common.render_markdown(live, columns)
    assert table.splitlines()[-1] == "| fno |  | 0.25 |"
    assert common.render_markdown(json.loads(strict_json(live)), columns) == table


@pytest.mark.parametrize("scheme", ["seedsequence-mt19937", "torch-manual-seed"])
def test_a_record_names_the_seed_scheme_its_samples_drew_under(tmp_path, scheme):
    """The record's JSON and page carry the scheme in force when it was written; a record
    without one (written before it was recorded) renders without the line."""
    from pdes.problems import seed_scheme

    common = load_benchmark("common")
    with seed_scheme(scheme):
        result = common.write_results("probe", [], 0, 0.0, tmp_path, ("case",))
    assert json.loads((tmp_path / "probe.json").read_text())["seed_scheme"] == scheme
    page = (tmp_path / "probe.md").read_text().splitlines()
    assert page[page.index(f"- date: {result['date']}") + 1] == f"- seed scheme: {scheme}"
    del result["seed_scheme"]
    assert "seed scheme" not in common.render_markdown(result, ("case",))
    with pytest.raises(ValueError, match=r"own keys \['seed_scheme'\]"):
        common.write_results("probe", [], 0, 0.0, tmp_path, ("case",), extra={"seed_scheme": 1})


def test_results_refuse_extra_keys_that_would_overwrite_the_record(tmp_path):
    common = load_benchmark("common")
    with pytest.raises(ValueError, match=r"extra must not set the record's own keys \['seed'\]"):
        common.write_results("probe", [], 0, 0.0, tmp_path, ("case",), extra={"seed": 7})
    assert not (tmp_path / "probe.json").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**62), got '-1'"),
        (["--seed", "x"], "argument --seed: must be an integer in [0, 2**62), got 'x'"),
        (
            ["--seed", str(2**62)],
            f"argument --seed: must be an integer in [0, 2**62), got '{2**62}'",
        ),
        (["--equations", "heat,heat"], "argument --equations: each equation once, got 'heat,heat'"),
        (
            ["--equations", "heat,nope"],
            "argument --equations: equation must be one of ('burgers', 'heat'), got 'nope'",
        ),
    ],
)
def test_benchmark_arguments_are_usage_errors_before_any_work(argv, message, capsys):
    """A bad --seed or --equations stops at parsing, not after the first equation's training."""
    bench = load_benchmark("model_update_extra_inputs")
    with pytest.raises(SystemExit) as stop:
        bench.main([*argv, "--quick"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().endswith(message)


@pytest.mark.parametrize(
    "name",
    [
        "boon",
        "cuboid_scaling",
        "earthformer_nbody",
        "probconserv_gpme",
        "probconserv_update",
        "solvers",
        "training",
    ],
)
def test_a_negative_seed_is_a_usage_error_in_scripts_parsing_their_own(name, tmp_path, capsys):
    """--seed -1 stops at parsing, as with common.arguments: not a traceback after work started,
    nor a record saying seed -1."""
    bench = load_benchmark(name)
    with pytest.raises(SystemExit) as stop:
        bench.main(["--quick", "--out", str(tmp_path), "--seed", "-1"])
    message = "argument --seed: must be an integer in [0, 2**62), got '-1'"
    assert stop.value.code == 2 and capsys.readouterr().err.strip().endswith(message)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quick", "--upgrade", "large"], "it cannot go with --upgrade large"),
        (["--quick", "--upgrade", "broaden"], "it cannot go with --upgrade broaden"),
        (["--warm-start", "--upgrade", "large"], "--warm-start needs the incremental upgrade"),
    ],
)
def test_model_update_refuses_options_it_would_ignore_before_any_work(
    argv, message, tmp_path, capsys
):
    """--quick has one scale: with --upgrade large it ran that scale and recorded "quick"."""
    bench = load_benchmark("model_update")
    with pytest.raises(SystemExit) as stop:
        bench.main([*argv, "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("option", ["--steps", "--threads"])
def test_prediff_nbody_step_cost_refuses_no_steps_before_any_work(option, capsys):
    """--steps 0 failed with a traceback after the data and the warm-up trainings."""
    bench = load_benchmark("prediff_nbody_step_cost")
    with pytest.raises(SystemExit) as stop:
        bench.main([option, "0"])
    message = f"argument {option}: must be an integer >= 1, got '0'"
    assert stop.value.code == 2 and capsys.readouterr().err.strip().endswith(message)


def test_benchmark_arguments_give_the_equations_as_names():
    bench = load_benchmark("model_update")
    common = sys.modules["common"]
    args = common.arguments(
        "doc",
        ["--equations", "heat,burgers", "--seed", "3"],
        lambda parser: common.work_and_equations(
            parser, ("burgers", "heat"), bench.blocks.equation
        ),
    )
    assert args.equations == ["heat", "burgers"] and args.seed == 3
    default = common.arguments(
        "doc", [], lambda parser: common.work_and_equations(parser, ("burgers", "heat"), str)
    )
    assert default.equations == ["burgers", "heat"]


@pytest.mark.parametrize(
    "name, argv",
    [
        ("nbody_energy", ["--quick"]),  # common.arguments
        ("earthformer_nbody", ["--scale", "quick", "--methods", "persistence"]),  # its own parser
    ],
)
def test_a_quick_run_without_out_leaves_the_recorded_results_alone(
    tmp_path, monkeypatch, capsys, name, argv
):
    bench = load_benchmark(name)
    recorded, scratch = tmp_path / "results", tmp_path / "tmp"
    recorded.mkdir(), scratch.mkdir()
    (recorded / f"{name}.json").write_text("the recorded run")
    monkeypatch.setattr(sys.modules["common"], "RESULTS", recorded)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert bench.main(argv) == 0
    assert [path.name for path in recorded.iterdir()] == [f"{name}.json"]
    assert (recorded / f"{name}.json").read_text() == "the recorded run"
    (folder,) = [path for path in scratch.iterdir() if path.name.startswith("physml-quick-")]
    assert json.loads((folder / f"{name}.json").read_text())["benchmark"] == name
    assert f"--quick without --out: the results go to {folder}\n" in capsys.readouterr().err


def test_out_is_the_given_folder_else_the_recorded_results_or_a_new_one_for_quick(
    tmp_path, monkeypatch
):
    common = load_benchmark("common")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert common.arguments("doc", []).out == common.RESULTS
    assert common.arguments("doc", ["--quick", "--out", "there"]).out == Path("there")
    first, second = (common.arguments("doc", ["--quick"]).out for _ in range(2))
    assert first != second and first.parent == second.parent == tmp_path


def test_ctrl_c_and_a_refused_checkpoint_end_a_benchmark_in_one_line(tmp_path, monkeypatch, capsys):
    common = load_benchmark("common")
    monkeypatch.setattr(sys, "argv", ["probe.py", "--work", "w"])
    work, default = tmp_path / "work", tmp_path / "default"

    def interrupted_on(given, quick):
        def main():
            common.work_folder(given, str(tmp_path / "scratch"), quick, default, ["plan.json"])
            raise KeyboardInterrupt

        return main

    assert common.run_main(interrupted_on(work, True)) == 130
    rerun = f"a rerun on the same folder resumes from {work}"
    assert capsys.readouterr().err == f"\nprobe.py: interrupted; {rerun}\n"  # nothing to resume
    work.mkdir()
    (work / "plan.json").write_text("{}")
    assert common.work_folder(work, "scratch", False, default, ["plan.json"]) == work
    assert capsys.readouterr().err == f"probe.py: resuming from {work}\n"
    assert common.run_main(interrupted_on(None, True)) == 130
    temporary = "its --quick work folder was temporary, so a rerun starts over (--work keeps one)"
    assert capsys.readouterr().err == f"\nprobe.py: interrupted; {temporary}\n"
    assert common.work_folder(None, "scratch", True, default, ["plan.json"]) == Path("scratch")
    assert common.work_folder(None, "scratch", False, default, ["plan.json"]) == default

    def refused():
        raise CheckpointError("checkpoint: 'w/a' was trained on other data. Use another --work")

    assert common.run_main(refused) == 2
    error = "probe.py: error: checkpoint: 'w/a' was trained on other data. Use another --work\n"
    assert capsys.readouterr().err == error


@pytest.mark.parametrize("name, status", [("SIGTERM", 128 + 15), ("SIGHUP", 128 + 1)])
def test_a_scheduler_signal_ends_a_benchmark_as_ctrl_c_does(monkeypatch, capsys, name, status):
    """SIGTERM (Slurm's time limit, scancel) and SIGHUP: the Ctrl-C line naming the signal, exit
    128 + its number as a shell reports it; a repeated one is let go from then on (its exit stands),
    and a run no signal stopped puts back the handler that was there before."""
    common = load_benchmark("common")
    monkeypatch.setattr(sys, "argv", ["probe.py"])
    signum = getattr(signal, name)
    before = {stopping: signal.signal(stopping, signal.SIG_DFL) for stopping in STOPPING}

    def signalled():
        if signal.getsignal(signum) is signal.SIG_DFL:  # it would end pytest
            pytest.fail(f"run_main left {name} to end the process")
        os.kill(os.getpid(), signum)
        pytest.fail(f"{name} did not stop the benchmark")

    try:
        assert common.run_main(signalled) == status
        assert signal.getsignal(signum) is not signal.SIG_DFL
        os.kill(os.getpid(), signum)
        for stopping in STOPPING:
            signal.signal(stopping, signal.SIG_DFL)
        assert common.run_main(lambda: 0) == 0
        assert signal.getsignal(signum) is signal.SIG_DFL
        signal.signal(signum, signal.SIG_IGN)  # nohup's SIGHUP, say: ignored, it stays so
        assert common.run_main(lambda: os.kill(os.getpid(), signum) or 0) == 0
        assert signal.getsignal(signum) is signal.SIG_IGN
    finally:
        for stopping, handler in before.items():
            signal.signal(stopping, handler)
    assert capsys.readouterr().err == f"\nprobe.py: interrupted by {name}\n"


def test_a_benchmark_hung_up_on_by_its_closed_terminal_stops_with_129(monkeypatch):
    """SIGHUP from a terminal that went away: its line cannot be written (EIO), the exit status
    still says the signal."""
    common = load_benchmark("common")

    class ClosedTerminal(io.TextIOBase):
        def write(self, text: str) -> int:
            raise OSError(errno.EIO, "Input/output error")

    def hung_up():
        raise Terminated(signal.SIGHUP)

    monkeypatch.setattr(sys, "stderr", ClosedTerminal())
    assert common.run_main(hung_up) == 128 + 1


@pytest.mark.parametrize("name", ["common", "nbody_forecasting"])
def test_the_shared_modules_run_as_scripts_say_they_are_not_benchmarks(monkeypatch, capsys, name):
    script = ROOT / "benchmarks" / f"{name}.py"
    monkeypatch.syspath_prepend(str(script.parent))  # as `python benchmarks/<name>.py` has it
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"{name}.py: ") and err.count("\n") == 1
    assert "not a benchmark; run one of the others" in err


def _tiny_update_scale(blocks, old_width: int = 4, new_width: int = 4) -> dict:
    """A model-update scale of seconds: FNOs of ``*_width`` channels, a few samples, one step."""
    return dict(
        old=blocks.Size(old_width, 2, 1, 4, 1, 4),
        new=blocks.Size(new_width, 2, 1, 4, 1, 4),
        test=2,
        validation=2,
        lambdas=(1.0,),
        scenarios=("fno",),
        pool=4,
        extra_batch=2,
        model=blocks.Size(old_width, 2, 1, 4, 1, 4),
        members=2,
        levels=(1.0,),
    )


def _model_update_runs(bench, scale, work):
    bench.runs_of_seed(bench.blocks.equation("heat"), scale, 0, work, True)


def _guarded_surrogate_runs(bench, scale, work):
    bench.sweep(bench.blocks.equation("heat"), scale, 0, work, True)


@pytest.mark.parametrize(
    "name, runs, changed",
    [
        ("model_update", _model_update_runs, ("new", "old")),
        ("model_update_extra_inputs", _model_update_runs, ("new", "old")),
        ("guarded_surrogate", _guarded_surrogate_runs, ("old",)),
    ],
)
def test_a_model_update_training_refused_on_its_work_folder_advises_another_work(
    tmp_path, name, runs, changed
):
    """Every training of the benchmark (the old model's, the new ones') resumes under --work: a
    run of other settings there is refused with "use another --work", not physml's --out."""
    bench = load_benchmark(name)
    runs(bench, _tiny_update_scale(bench.blocks), tmp_path)
    for part in changed:
        other = _tiny_update_scale(bench.blocks, **{f"{part}_width": 6})
        with pytest.raises(CheckpointError, match="; use another --work or the same model") as no:
            runs(bench, other, tmp_path)
        assert "size.hidden 4 → 6" in str(no.value) and "--out" not in str(no.value)


def test_an_fno_coordinates_training_refused_on_its_work_folder_advises_another_work(
    tmp_path, monkeypatch
):
    bench = load_benchmark("fno_coordinates")
    monkeypatch.setattr(bench, "SEEDS", (0,))
    spec = ("burgers", "operator", {"nx": 16}, 4, 2, {"modes": 2, "hidden": 4}, 1)
    bench.run_case("burgers", spec, tmp_path, quiet=True)
    wider = (*spec[:5], {"modes": 2, "hidden": 6}, 1)
    with pytest.raises(CheckpointError, match="; use another --work or the same model") as no:
        bench.run_case("burgers", wider, tmp_path, quiet=True)
    assert "--out" not in str(no.value)


def test_another_seed_on_an_nbody_work_folder_ends_in_one_line_naming_the_seed(
    tmp_path, monkeypatch, capsys
):
    """earthformer_nbody's finished rows and prediff_nbody's stages are kept per setup: a run of
    another --seed on the same --work is refused in one line (exit 2), not a traceback."""
    bench = load_benchmark("earthformer_nbody")
    common = sys.modules["common"]  # the one the script raises from
    monkeypatch.setattr(sys, "argv", ["probe.py"])
    argv = ["--quick", "--methods", "persistence", "--out", str(tmp_path / "out")]
    argv += ["--work", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    capsys.readouterr()
    assert common.run_main(lambda: bench.main([*argv, "--seed", "1"])) == 2
    rows = tmp_path / "work" / "rows.json"
    assert capsys.readouterr().err.splitlines() == [
        f"probe.py: resuming from {tmp_path / 'work'}",
        f"probe.py: error: --work: {str(rows)!r} comes from a run with another setup "
        "(setup.seed 0 there, 1 now); remove the folder or choose another --work",
    ]
    prediff = load_benchmark("prediff_nbody")
    prediff.Stages(tmp_path, {"seed": 0, "scale": {"steps": 2}}).cached("data", dict)
    stages = prediff.Stages(tmp_path, {"seed": 1, "scale": {"steps": 3}, "device": "cuda"})
    assert common.run_main(lambda: stages.cached("data", dict)) == 2
    assert capsys.readouterr().err == (
        f"probe.py: error: --work: {str(tmp_path / 'data.json')!r} comes from a run with another "
        "setup (setup.device None there, 'cuda' now; setup.scale.steps 2 there, 3 now; "
        "setup.seed 0 there, 1 now); remove the folder or choose another --work\n"
    )


def test_an_nbody_work_folder_of_another_seed_scheme_is_refused_naming_it(
    tmp_path, monkeypatch, capsys
):
    """earthformer_nbody's rows and prediff_nbody's stages record the seed scheme their data
    drew under (none for "torch-manual-seed", as kept before): another scheme is refused."""
    from pdes.problems import MANUAL_SEED_SCHEME, seed_scheme

    bench = load_benchmark("earthformer_nbody")
    common = sys.modules["common"]
    monkeypatch.setattr(sys, "argv", ["probe.py"])
    argv = ["--quick", "--methods", "persistence", "--out", str(tmp_path / "out")]
    argv += ["--work", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    capsys.readouterr()
    with seed_scheme(MANUAL_SEED_SCHEME):
        assert common.run_main(lambda: bench.main(argv)) == 2
    rows = tmp_path / "work" / "rows.json"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"probe.py: error: --work: {str(rows)!r} comes from a run with another setup "
        "(setup.seed_scheme 'seedsequence-mt19937' there, None now); remove the folder or "
        "choose another --work"
    )
    prediff = load_benchmark("prediff_nbody")
    assert prediff.Stages(tmp_path, {"seed": 0}).cached("data", lambda: {"x": 1}) == {"x": 1}
    with seed_scheme(MANUAL_SEED_SCHEME):
        assert common.run_main(lambda: prediff.Stages(tmp_path, {"seed": 0}).get("data")) == 2
    assert "(setup.seed_scheme 'seedsequence-mt19937' there, None now)" in capsys.readouterr().err
    kept = tmp_path / "kept"  # a stage kept before the scheme was recorded
    kept.mkdir()
    (kept / "data.json").write_text(json.dumps({"setup": {"seed": 0}, "result": {"x": 2}}))
    with seed_scheme(MANUAL_SEED_SCHEME):
        assert prediff.Stages(kept, {"seed": 0}).get("data") == {"x": 2}
    assert common.run_main(lambda: prediff.Stages(kept, {"seed": 0}).get("data")) == 2


def test_boon_finished_runs_are_read_back_under_their_seed_scheme_only(tmp_path):
    from pdes.problems import MANUAL_SEED_SCHEME, SEED_SCHEME, seed_scheme

    bench = load_benchmark("boon")
    plan = bench.boon.budget("heat-neumann", "quick")
    run = {"rows": [{"rel_l2": 1.0}]}
    progress = bench.Progress(tmp_path / "partial.json", "quick")
    progress.put("heat-neumann", "fno", 0, plan, run)  # under the default
    with seed_scheme(MANUAL_SEED_SCHEME):
        progress.put("heat-neumann", "fno", 1, plan, run)
    again = bench.Progress(tmp_path / "partial.json", "quick")
    with seed_scheme(SEED_SCHEME):
        assert again.get("heat-neumann", "fno", 0, plan)["rows"] == run["rows"]
        assert again.get("heat-neumann", "fno", 1, plan) is None
    with seed_scheme(MANUAL_SEED_SCHEME):
        assert again.get("heat-neumann", "fno", 0, plan) is None
        assert again.get("heat-neumann", "fno", 1, plan)["rows"] == run["rows"]
    assert "seed_scheme" not in again.runs["heat-neumann|fno|1"]  # as kept before: none named


@pytest.mark.parametrize("method", ["persistence", "blank"])
def test_the_variant_script_scores_the_models_without_weights(monkeypatch, capsys, method):
    """``persistence`` and ``blank``, which build() makes, are scored as before: the last
    context frame (or black) against each target frame, squared error summed over each frame's
    pixels, averaged over sequences and lead times (at the quick scale)."""
    from physml.data.nbody import canvas_lengths, nbody_digits

    variant = load_benchmark("earthformer_nbody_variant")
    assert {"persistence", "blank"} <= set(variant.METHODS)
    scale = variant.bench.SCALES["quick"]
    monkeypatch.setitem(variant.bench.SCALES, "full", scale)
    assert variant.main(["1", method, "probe"]) == 0
    words = capsys.readouterr().out.split()
    fields = dict(zip(words[2::2], words[3::2], strict=False))
    test = nbody_digits(
        scale.test,
        seed=1,
        frames=scale.t_in + scale.t_out,
        size=scale.size,
        split="test",
        stride=scale.stride,
        **canvas_lengths(scale.size),
    ).frames.double()
    last, future = test[:, scale.t_in - 1], test[:, scale.t_in :]
    forecast = last[:, None] if method == "persistence" else torch.zeros_like(last[:, None])
    expected = (future - forecast).square().sum((-3, -2, -1)).mean()
    assert words[:2] == ["probe", method] and fields["steps"] == "0"
    assert float(fields["mse"]) == pytest.approx(float(expected), abs=0.005)


def test_a_work_folder_is_said_to_resume_only_when_it_holds_the_benchmarks_own_files(
    tmp_path, monkeypatch, capsys
):
    """probconserv_gpme's default --work is physml run's default output folder: its index and
    another run's checkpoints are no run of this benchmark to resume."""
    bench = load_benchmark("probconserv_gpme")
    monkeypatch.setattr(sys, "argv", ["probconserv_gpme.py"])
    monkeypatch.setattr(bench, "evaluate", lambda case, context, **options: ([], {}))
    work = tmp_path / "physml_output"
    (work / "checkpoints" / "toy-seed1" / "anp-stefan-16x16-40").mkdir(parents=True)
    (work / "checkpoints" / "toy-seed0" / "anp-pme-16x16-40").mkdir(parents=True)
    (work / "index.html").write_text("physml run's page")
    argv = ["--quick", "--out", str(tmp_path / "out"), "--work", str(work)]
    assert bench.main(argv) == 0
    assert "resuming" not in capsys.readouterr().err
    (work / "checkpoints" / "toy-seed0" / "anp-stefan-16x16-40").mkdir()
    assert bench.main(argv) == 0
    assert capsys.readouterr().err == f"probconserv_gpme.py: resuming from {work}\n"


def quick_probconserv_cases(tmp_path, monkeypatch, *arguments: str) -> list[str]:
    """The cases ``probconserv_gpme.py --quick --out tmp_path/out *arguments`` evaluates (none
    is trained: the evaluation is replaced by one that returns no rows)."""
    bench = load_benchmark("probconserv_gpme")
    monkeypatch.setattr(sys, "argv", ["probconserv_gpme.py"])
    cases = []
    monkeypatch.setattr(
        bench, "evaluate", lambda case, context, **options: cases.append(case) or ([], {})
    )
    assert bench.main(["--quick", "--out", str(tmp_path / "out"), *arguments]) == 0
    return cases


def test_probconserv_quick_runs_the_cases_asked_and_stefan_when_none_is(tmp_path, monkeypatch):
    assert quick_probconserv_cases(tmp_path, monkeypatch, "--cases", "diffusion", "pme") == [
        "diffusion",
        "pme",
    ]
    assert quick_probconserv_cases(tmp_path, monkeypatch) == ["stefan"]


def test_probconserv_notes_state_the_training_steps_of_the_scale_run(tmp_path, monkeypatch):
    """A --quick run's notes give its own steps, as its JSON's setup does; the full run's its."""
    quick_probconserv_cases(tmp_path, monkeypatch)
    out = tmp_path / "out"
    scale = json.loads((out / "probconserv_gpme.json").read_text())["setup"]["scale"]
    assert (scale["train_steps"], scale["softc_steps"]) == (40, 20)
    notes = (out / "probconserv_gpme.md").read_text()
    assert "`softc_steps` (20), 1/2 of the base ANP's 40:" in notes
    bench = load_benchmark("probconserv_gpme")
    full = bench.notes(bench.SCALES["full"])
    assert "`softc_steps` (1000), 1/4 of the base ANP's 4000:" in full


def test_boon_quick_without_out_interrupted_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """Its --quick temporary folder is kept, but a plain rerun makes a new one: the Ctrl-C line
    names the --out that resumes; with --out given, the same folder does."""
    bench = load_benchmark("boon")
    common = sys.modules["common"]
    monkeypatch.setattr(sys, "argv", ["boon.py"])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupted(*arguments, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.boon, "run_case", interrupted)
    assert common.run_main(lambda: bench.main(["--quick"])) == 130
    (folder,) = tmp_path.iterdir()
    partial = folder / ".boon-partial-quick.json"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"boon.py: interrupted; rerun with --out {folder} to resume from {partial}"
    )
    assert common.run_main(lambda: bench.main(["--quick", "--out", str(folder)])) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"boon.py: interrupted; a rerun on the same folder resumes from {partial}"
    )


def _spawned_workers(parent: int) -> list[int]:
    """The pids of ``parent``'s multiprocessing spawn workers (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def test_a_ctrl_c_pending_as_a_side_by_side_job_starts_ends_it_and_blocks_ctrl_c_again():
    """A worker holds Ctrl-C and SIGTERM back between jobs: one that came while it imported is
    raised as the job lets them in, and the worker holds the next ones back again."""
    bench = load_benchmark("forecast_conservation")
    bench._start_worker(threading.Event())
    # a pytest-xdist worker ignores Ctrl-C; a benchmark run from a shell takes it
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, *STOPPING)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            bench._interruptible_rows(lambda: pytest.fail("the job ran"))
        held = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        assert {signal.SIGINT, signal.SIGTERM} <= held
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _takes_ctrl_c() -> None:
    """In a child before it runs: Ctrl-C as from a shell (a pytest-xdist worker ignores it, and
    an ignored SIGINT is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_ctrl_c_while_the_side_by_side_workers_start_is_one_line(tmp_path):
    """Ctrl-C (SIGINT to the process group) while the --jobs 2 workers import: no traceback of
    theirs, the parent's one line, exit 130, and no worker left behind."""
    command = benchmark("forecast_conservation", "--quick", "--jobs", "2")
    command += ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    run = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_takes_ctrl_c,
    )
    deadline = time.monotonic() + 60
    while len(workers := _spawned_workers(run.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert len(workers) == 2
    rerun = f"a rerun on the same folder resumes from {tmp_path / 'work'}"
    assert (run.returncode, err) == (130, f"\nforecast_conservation.py: interrupted; {rerun}\n")
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def _takes_ctrl_c_and_sigterm() -> None:
    """In a child before it runs: Ctrl-C and SIGTERM as from a shell or a scheduler."""
    _takes_ctrl_c()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_sigterm_to_a_side_by_side_benchmark_alone_stops_its_workers_jobs_as_ctrl_c_does(tmp_path):
    """SIGTERM to the --jobs process only (its workers get none): the running jobs are
    interrupted and keep what they can, the job not started is not, one line, exit 143, no
    worker left (the workers' jobs would otherwise run to their end: 20 s here)."""
    folders = [str(tmp_path / name) for name in "abc"]
    script = f"""import sys
sys.path[:0] = [{str(ROOT / "benchmarks")!r}, {str(ROOT / "tests")!r}]
sys.argv[0] = "probe.py"
import forecast_conservation as bench
from benchmarking import sleep_until_interrupted
from common import run_main
jobs = [(folder,) for folder in {folders!r}]
sys.exit(run_main(lambda: bench.side_by_side(jobs, 2, sleep_until_interrupted)))
"""
    run = subprocess.Popen(
        [sys.executable, "-c", script],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_takes_ctrl_c_and_sigterm,
    )
    try:
        deadline = time.monotonic() + 60
        while not all(Path(folder, "started").exists() for folder in folders[:2]):
            assert time.monotonic() < deadline and run.poll() is None, run.stderr.read()
            time.sleep(0.01)
        workers = _spawned_workers(run.pid)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=10)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert (run.returncode, err) == (143, "\nprobe.py: interrupted by SIGTERM\n")
    saved = [Path(folder, "saved").read_text() for folder in folders[:2]]
    assert saved == ["Terminated", "Terminated"] and not Path(folders[2]).exists()
    assert len(workers) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize(
    "name, argv",
    [
        ("solvers", ["--threads", "0"]),
        ("constraint_matrix", ["--threads", "0"]),
        ("boon", ["--seeds", "-1"]),
        ("boon", ["--seeds", "0"]),
    ],
)
def test_thread_and_seed_counts_below_one_are_usage_errors(name, argv, tmp_path, capsys):
    """--threads 0 failed in torch.set_num_threads after parsing, --seeds -1 in max() of an empty
    list, and --seeds 0 silently meant the default."""
    bench = load_benchmark(name)
    with pytest.raises(SystemExit) as stop:
        bench.main(["--quick", "--out", str(tmp_path), *argv])
    assert stop.value.code == 2
    message = f"argument {argv[0]}: must be an integer >= 1, got '{argv[1]}'"
    assert message in capsys.readouterr().err
