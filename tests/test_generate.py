"""Dataset generation: layout, determinism, sharding, resume after a kill, and bad requests."""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from damage import flip_a_bit_of_the_first_chunk
from recipes import TOY

import physml.data
import physml.data.generate as generate_module
from pdes import problems
from physml._checks import integer
from physml.data import (
    DatasetFileError,
    IndexNotWritten,
    MultiStepDataset,
    ShardError,
    SingleStepDataset,
    generate_dataset,
    load,
    merge_shards,
)
from physml.data.datasets import PDEData, item_index
from physml.data.generate import sample_seed
from physml.data.nbody import nbody_digits_from_seeds
from physml.data.windows import ForecastDataset, RolloutDataset

ROOT = Path(__file__).resolve().parents[1]


def make(path, **kwargs):
    kwargs.setdefault("n", 10)
    kwargs.setdefault("progress", False)
    return generate_dataset("toy", path, **kwargs)


def test_layout_and_values(tmp_path):
    path = make(tmp_path / "toy.h5", seed=3, chunk=4)
    with h5py.File(path) as f:
        assert f["u"].shape == (10, 4, 9)
        assert f["t"].shape == (4,) and f["x"].shape == (9,)
        assert f["params/a"].shape == (10,)
        assert f["fields/u_squared"].shape == (10, 4, 9)
        assert list(f["sample_index"][()]) == list(range(10))
        for key in ("pde", "boundary", "solver", "physml_version", "seed", "settings", "created"):
            assert key in f.attrs, key
        assert f.attrs["pde"] == "toy" and f.attrs["seed"] == 3
    data = load(path)
    expected = TOY.generate(
        [sample_seed(3, i) for i in range(10)], TOY.settings()
    ).u  # the recipe called directly, sample by sample seeds
    assert torch.equal(data.u, expected)
    assert torch.equal(data.fields["u_squared"], expected**2)
    assert not (tmp_path / "toy.h5.partial").exists()


@pytest.mark.parametrize(
    ("pde", "equation"),
    [
        ("heat", "heat: u_t = kappa u_xx"),  # the recipe states it as its pde
        ("diffusion", "u_t = d/dx(k(u) du/dx)"),  # the GPME recipes as their equation
    ],
)
def test_a_generated_file_keeps_the_recipes_equation_beside_its_name(tmp_path, pde, equation):
    path = generate_dataset(pde, tmp_path / "a.h5", n=2, nx=9, nt=3, progress=False)
    with h5py.File(path) as f:
        assert f.attrs["pde"] == pde and f.attrs["equation"] == equation
    assert load(path).attrs["equation"] == equation


def test_a_file_written_before_the_equation_was_kept_is_kept_by_a_rerun(tmp_path):
    """A requeued job finding the file an earlier physml wrote (no ``equation``) keeps it."""
    path = generate_dataset("heat", tmp_path / "a.h5", n=2, nx=9, nt=3, progress=False)
    with h5py.File(path, "r+") as f:
        del f.attrs["equation"]
        created = f.attrs["created"]
    again = generate_dataset("heat", tmp_path / "a.h5", n=2, nx=9, nt=3, progress=False)
    with h5py.File(again) as f:
        assert f.attrs["created"] == created and "equation" not in f.attrs


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = load(make(tmp_path / "a.h5", seed=1, chunk=3)).u
    b = load(make(tmp_path / "b.h5", seed=1, chunk=7)).u
    c = load(make(tmp_path / "c.h5", seed=2)).u
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len(set(a[:, 0, 4].tolist())) == 10  # every sample differs


def test_shards_together_equal_one_run(tmp_path):
    whole = load(make(tmp_path / "whole.h5", n=11, seed=5)).u
    out = tmp_path / "sharded.h5"
    for shard in (2, 0, 1):
        make(out, n=11, seed=5, shard=shard, num_shards=3, chunk=2)
    assert sorted(p.name for p in tmp_path.glob("sharded.shard-*")) == [
        f"sharded.shard-00{i}-of-003.h5" for i in range(3)
    ]
    sharded = load(out)
    assert torch.equal(sharded.u, whole)
    assert torch.equal(sharded.fields["u_squared"], whole**2)
    assert torch.equal(sharded.sample_index, torch.arange(11))


@pytest.mark.parametrize("pde", ["heat", "burgers"])
def test_a_solver_recipe_gives_the_same_samples_to_round_off_in_any_chunks(tmp_path, pde):
    """Batched dense solves may round a sample's last bits differently in another batch: the
    samples agree to round-off whatever the chunk size or sharding (bitwise is not promised)."""
    settings = dict(nx=17, nt=4) if pde == "heat" else dict(nx=16, nt=4)
    one = tmp_path / "one.h5"
    generate_dataset(pde, one, n=5, seed=3, chunk=1, progress=False, **settings)
    whole = load(one).u
    sharded = tmp_path / "sharded.h5"
    for shard in (0, 1):
        generate_dataset(
            pde, sharded, n=5, seed=3, chunk=3, shard=shard, num_shards=2, progress=False,
            **settings,
        )  # fmt: skip
    other = load(sharded).u
    scale = whole.abs().max()
    torch.testing.assert_close(other, whole, rtol=0, atol=1e-13 * float(scale))


def test_a_setting_only_the_solver_refuses_leaves_no_work_folder(tmp_path):
    out = tmp_path / "refused.h5"
    with pytest.raises(ValueError, match="heat: option amplitude must be finite, got nan"):
        generate_dataset("heat", out, n=1, nx=17, nt=3, amplitude=float("nan"), progress=False)
    with pytest.raises(ValueError, match="sigma"):
        generate_dataset("burgers", out, n=2, nx=16, nt=3, sigma=-1.0, progress=False)
    assert not (tmp_path / "refused.h5.partial").exists()
    assert load(generate_dataset("burgers", out, n=2, nx=16, nt=3, progress=False)).u.shape[0] == 2


def test_interrupted_run_resumes_without_loss_or_doubling(tmp_path):
    reference = load(make(tmp_path / "reference.h5", n=10, seed=9, chunk=3)).u
    out = tmp_path / "resumed.h5"

    def stop_after_two(done, total):
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(out, n=10, seed=9, chunk=3, on_chunk=stop_after_two)
    assert not out.exists()
    partial = tmp_path / "resumed.h5.partial"
    assert len(list(partial.glob("chunk-*.npz"))) == 2
    leftover = partial / ".chunk-000000006.npz.garbage.tmp"
    leftover.write_bytes(b"half-written")  # killed mid-write

    calls = []
    make(
        out, n=10, seed=9, chunk=3, on_chunk=lambda done, _: calls.append((done, leftover.exists()))
    )
    assert calls == [(9, False), (10, False)]  # the two missing chunks solved, the leftover gone
    resumed = load(out)
    assert torch.equal(resumed.u, reference)
    assert torch.equal(resumed.sample_index, torch.arange(10))
    assert not partial.exists()


def test_killed_process_resumes(tmp_path):
    out = tmp_path / "killed.h5"
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import recipes  # registers the toy recipe
            from physml.data import generate_dataset
            generate_dataset("toy", {str(out)!r}, n=12, seed=4, chunk=2, progress=False)
            """
        )
    )
    slow = dict(os.environ, TOY_RECIPE_DELAY="0.3")
    process = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=slow)
    partial = tmp_path / "killed.h5.partial"
    deadline = time.monotonic() + 60
    while len(list(partial.glob("chunk-*.npz"))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "the generator stopped before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not out.exists()
    assert 2 <= len(list(partial.glob("chunk-*.npz"))) < 6
    subprocess.run([sys.executable, str(script)], cwd=ROOT, check=True)
    reference = load(make(tmp_path / "reference.h5", n=12, seed=4, chunk=5)).u
    assert torch.equal(load(out).u, reference)


def test_assembly_holds_one_chunk_in_memory_not_the_whole_dataset(tmp_path, monkeypatch):
    n, nt, nx, chunk = 20, 10, 2001, 2
    u_bytes = n * nt * nx * 8  # and as much again for fields/u_squared
    assemble, peaks = generate_module._assemble, []

    def traced(*args, **kwargs):
        tracemalloc.start()
        try:
            assemble(*args, **kwargs)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(generate_module, "_assemble", traced)
    data = load(make(tmp_path / "big.h5", n=n, nt=nt, nx=nx, chunk=chunk, seed=2))
    assert data.u.shape == (n, nt, nx)
    assert torch.equal(data.u, load(make(tmp_path / "small.h5", n=n, nt=nt, nx=nx, seed=2)).u)
    chunk_bytes = 2 * chunk * nt * nx * 8  # u and u_squared of one chunk: a tenth of the file
    assert peaks[0] < 3 * chunk_bytes < u_bytes, (peaks[0], chunk_bytes)  # all at once: 2 x u


def test_existing_output_needs_overwrite(tmp_path):
    path = make(tmp_path / "x.h5", seed=1)
    with pytest.raises(FileExistsError, match=r"; pass overwrite=True to replace it$"):
        make(path, seed=2)
    make(path, seed=2, overwrite=True)
    assert load(path).attrs["seed"] == 2


def test_unfinished_run_with_other_settings_is_not_mixed_in(tmp_path):
    out = tmp_path / "mixed.h5"

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(out, seed=1, chunk=2, on_chunk=stop)
    with pytest.raises(FileExistsError, match="settings.nx was 9, now 11.*different settings"):
        make(out, seed=1, chunk=2, nx=11)
    data = load(make(out, seed=1, chunk=2, nx=11, overwrite=True))
    assert data.u.shape[-1] == 11


def test_resume_with_another_chunk_size_is_refused_before_anything_is_written(tmp_path):
    """Chunk files are named by their first sample: resuming an n=10 run of chunk 3 (chunks at
    0, 3, 6, 9) with chunk 2 would reuse chunk 0 (samples 0-2), solve 2-3 again, reuse chunk 6
    (6-8) and solve 8-9: samples 2 and 8 twice. The manifest records the chunk size to refuse it."""
    out = tmp_path / "chunks.h5"

    def stop_after_two(done, total):
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(out, n=10, seed=9, chunk=3, on_chunk=stop_after_two)
    partial = tmp_path / "chunks.h5.partial"
    before = {p.name: p.stat().st_mtime_ns for p in partial.iterdir()}
    solved = []
    with pytest.raises(FileExistsError) as error:
        make(out, n=10, seed=9, chunk=2, on_chunk=lambda d, t: solved.append(d))
    assert str(error.value).startswith(f"cannot resume {partial}/: chunk was 3, now 2 (")
    with pytest.raises(FileExistsError) as error:
        make(out, n=10, seed=9, chunk=2, nx=11, on_chunk=lambda d, t: solved.append(d))
    message = str(error.value)
    assert "chunk was 3, now 2; settings.nx was 9, now 11" in message
    assert "seed" not in message  # only the differences are named
    assert solved == [] and not out.exists()
    assert {p.name: p.stat().st_mtime_ns for p in partial.iterdir()} == before

    make(out, n=10, seed=9, chunk=3)  # the same settings resume
    assert torch.equal(load(out).sample_index, torch.arange(10))


def test_resume_refuses_a_work_folder_without_manifest(tmp_path):
    out = tmp_path / "bare.h5"
    (tmp_path / "bare.h5.partial").mkdir()
    with pytest.raises(FileExistsError, match="manifest.json is missing or unreadable"):
        make(out)
    assert load(make(out, overwrite=True)).u.shape[0] == 10


@pytest.mark.parametrize(
    "manifest", ["{", "[" * 100_000, b"\xff"], ids=["malformed", "deep", "no-utf-8"]
)
def test_a_work_folder_whose_manifest_is_unreadable_is_refused_or_left_alone(tmp_path, manifest):
    """Resuming into it is refused as for a missing manifest; beside the finished file a rerun
    leaves it (it cannot tell whose it is) and returns the file."""
    out = tmp_path / "bare.h5"
    partial = tmp_path / "bare.h5.partial"
    partial.mkdir()
    write = (partial / "manifest.json").write_bytes
    write(manifest if isinstance(manifest, bytes) else manifest.encode())
    with pytest.raises(FileExistsError, match="manifest.json is missing or unreadable"):
        make(out)
    shutil.move(partial, tmp_path / "kept")
    assert make(out) == out
    shutil.move(tmp_path / "kept", partial)
    assert make(out) == out and (partial / "manifest.json").exists()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, "n must be an integer >= 1"),
        ({"seed": -1}, ValueError, "seed must be a non-negative integer"),
        ({"seed": 2**63}, ValueError, r"seed must be .* below 2\*\*63 .*got 9223372036854775808"),
        ({"shard": 3, "num_shards": 3}, ValueError, r"shard must be an integer in \[0, 3\)"),
        ({"chunk": 0}, ValueError, "chunk must be an integer >= 1"),
        ({"num_shards": 20}, ValueError, "num_shards must not exceed"),
        ({"nx": "many"}, ValueError, "option nx must be a int"),
        ({"nx": 9.5}, ValueError, "option nx must be an int, got 9.5"),
        ({"speed": 1}, ValueError, "unknown option"),
    ],
)
def test_bad_requests(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        make(tmp_path / "bad.h5", **kwargs)


def test_a_seed_beyond_int64_is_refused_before_solving_and_the_largest_one_works(tmp_path):
    out = tmp_path / "big.h5"
    solved = []
    with pytest.raises(ValueError, match=r"seed must be .* below 2\*\*63"):
        make(out, seed=2**64, chunk=2, on_chunk=lambda done, total: solved.append(done))
    assert solved == [] and list(tmp_path.iterdir()) == []
    largest = 2**63 - 1
    data = load(make(out, n=3, seed=largest))
    assert data.attrs["seed"] == largest
    with h5py.File(out) as f:
        seeds = f["sample_seed"][()]
    assert seeds.tolist() == [sample_seed(largest, i) for i in range(3)]
    assert all(0 <= sample_seed(largest, i) < 2**63 for i in (0, 1, 10**12, 2**63 - 1))


def test_bad_outputs(tmp_path):
    with pytest.raises(ValueError, match="unknown PDE 'nope'"):
        generate_dataset("nope", tmp_path / "x.h5", n=1)
    with pytest.raises(ValueError, match="does not exist"):
        make(tmp_path / "missing" / "x.h5")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"^out: '.*file' is a file, not a folder$"):
        make(tmp_path / "file" / "x.h5")


BUILT_IN_TIMED_RECIPES = [
    problem.name
    for module in problems.RECIPE_MODULES
    for problem in __import__(f"pdes.{module}", fromlist=["PROBLEMS"]).PROBLEMS
    if "nt" in problem.options
]


def test_every_built_in_recipe_with_nt_is_listed():
    assert {"heat", "burgers", "burgers-dirichlet", "navier-stokes", "ns-tracer", "diffusion"} <= (
        set(BUILT_IN_TIMED_RECIPES)
    )


@pytest.mark.parametrize("name", BUILT_IN_TIMED_RECIPES)
def test_every_recipe_refuses_a_single_output_time(name):
    """nt counts t=0: one output time would drop t_end and leave nothing to predict."""
    problem = problems.get(name)
    with pytest.raises(ValueError, match=r"^nt must be an integer >= 2, got 1$"):
        problem.coordinates(problem.settings(nt=1))


def test_generate_refuses_nt_1_before_writing(tmp_path):
    out = tmp_path / "b.h5"
    with pytest.raises(ValueError, match=r"^nt must be an integer >= 2, got 1$"):
        generate_dataset("burgers", out, n=1, nx=16, nt=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_single_step_pairs_refuse_a_file_of_one_time(tmp_path):
    """The only pair of a single-time file is u(0) -> u(0): refused, naming --nt."""
    path = make(tmp_path / "one.h5", nt=1)
    with pytest.raises(
        DatasetFileError,
        match=r"^path: '.*one\.h5' holds a single time \(t = \[0\.0\]\); SingleStepDataset .*"
        r"needs at least two \(generate with --nt >= 2\)$",
    ):
        SingleStepDataset(str(path))
    with pytest.raises(DatasetFileError, match=r"^source: the data holds a single time"):
        SingleStepDataset(load(path))
    assert len(SingleStepDataset(make(tmp_path / "two.h5", nt=2))) == 10


def test_datasets_serve_pairs(tmp_path):
    data = load(make(tmp_path / "pairs.h5", nt=5))
    single = SingleStepDataset(data)
    x, y = single[3]
    assert x.shape == (1, 9) and y.shape == (1, 9) and x.dtype == torch.float32
    assert torch.allclose(y, x * np.exp(-1.0), atol=1e-6)  # u(T) = e^{-T} u(0) for the toy recipe
    gridded = SingleStepDataset(data, with_grid=True)[0][0]
    assert gridded.shape == (2, 9) and torch.allclose(
        gridded[1].double(), data.coords["x"].float().double()
    )
    multi = MultiStepDataset(data, steps=2)
    x, y = multi[1]
    assert x.shape == (1, 9) and y.shape == (2, 9)
    assert torch.allclose(y[-1], data.u[1, -1].float())
    assert torch.allclose(y[0], data.u[1, 2].float())
    with pytest.raises(ValueError, match="steps must divide"):
        MultiStepDataset(data, steps=3)
    numpy_steps = MultiStepDataset(data, steps=np.int64(2))  # e.g. read from a config array
    assert numpy_steps.target_times == multi.target_times and torch.equal(numpy_steps[1][1], y)
    tensor_steps = MultiStepDataset(data, steps=torch.tensor(2))  # as SingleStepDataset's times
    assert tensor_steps.target_times == multi.target_times == [2, 4]
    with pytest.raises(IndexError, match="target_time"):
        SingleStepDataset(data, target_time=7)
    numpy_index = SingleStepDataset(data, input_time=np.int64(1), target_time=torch.tensor(4))
    assert torch.equal(numpy_index[0][0], SingleStepDataset(data, input_time=1)[0][0])
    with pytest.raises(TypeError, match="input_time must be an integer index"):
        SingleStepDataset(data, input_time=1.0)
    with pytest.raises(TypeError, match="with_grid must be a bool, got 'yes'"):
        SingleStepDataset(data, with_grid="yes")


def test_every_dataset_takes_the_same_item_indices(tmp_path):
    from physml.data.windows import ForecastDataset, RolloutDataset

    data = load(make(tmp_path / "items.h5", nt=5))
    for dataset in (
        SingleStepDataset(data),
        MultiStepDataset(data, steps=2),
        RolloutDataset(data, k=1),
        ForecastDataset(data, t_in=2, t_out=2),
    ):
        last = dataset[len(dataset) - 1]
        for same in (-1, np.int64(len(dataset) - 1), torch.tensor(len(dataset) - 1)):
            assert all(torch.equal(a, b) for a, b in zip(dataset[same], last, strict=True))
        beyond = ((len(dataset), IndexError), (-len(dataset) - 1, IndexError))
        for bad, error in (*beyond, (slice(0, 2), TypeError), (1.0, TypeError), (True, TypeError)):
            with pytest.raises(error, match="index"):
                dataset[bad]


def test_corrupted_and_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(DatasetFileError, match="not a readable HDF5"):
        load(garbage)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(DatasetFileError, match="not a physml dataset"):
        load(foreign)
    with pytest.raises(FileNotFoundError, match="no dataset"):
        load(tmp_path / "absent.h5")
    for name, values in (("nan", [0.0, np.nan]), ("decreasing", [1.0, 0.0])):
        path = make(tmp_path / f"coords-{name}.h5")
        with h5py.File(path, "r+") as f:
            x = f["x"][...]
            x[3:5] = values
            f["x"][...] = x
        with pytest.raises(DatasetFileError, match="x must be strictly increasing finite"):
            load(path)


def _marked_data(samples=3, times=6, space=4):
    """u[s, t, x] = 100 s + t + x / 10: every value names its sample, time and point."""
    s = torch.arange(samples, dtype=torch.float64)[:, None, None]
    t = torch.arange(times, dtype=torch.float64)[None, :, None]
    x = torch.arange(space, dtype=torch.float64)[None, None, :]
    u = 100 * s + t + x / 10
    return PDEData(
        u=u, t=torch.arange(times, dtype=torch.float64), coords={"x": x.flatten()}, params={}
    )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rollout_pairs_are_u_t_and_u_t_plus_k(k):
    """RolloutDataset item i is (u[s, t], u[s, t + k]) with s, t = divmod(i, times − k)."""
    data = _marked_data()
    dataset = RolloutDataset(data, k=k, dtype=torch.float64)
    starts = 6 - k
    assert len(dataset) == 3 * starts
    for i in range(len(dataset)):
        sample, start = divmod(i, starts)
        source, target = dataset[i]
        assert source.shape == target.shape == (1, 4)
        torch.testing.assert_close(source[0], data.u[sample, start])
        torch.testing.assert_close(target[0], data.u[sample, start + k])


@pytest.mark.parametrize("t_in, t_out", [(1, 1), (2, 3), (4, 2)])
def test_forecast_windows_are_consecutive_context_then_targets(t_in, t_out):
    """ForecastDataset item i is t_in consecutive frames then the next t_out frames."""
    data = _marked_data()
    dataset = ForecastDataset(data, t_in=t_in, t_out=t_out, dtype=torch.float64)
    starts = 6 - t_in - t_out + 1
    assert len(dataset) == 3 * starts
    for i in range(len(dataset)):
        sample, start = divmod(i, starts)
        context, target = dataset[i]
        assert context.shape == (t_in, 1, 4) and target.shape == (t_out, 1, 4)
        torch.testing.assert_close(context[:, 0], data.u[sample, start : start + t_in])
        torch.testing.assert_close(
            target[:, 0], data.u[sample, start + t_in : start + t_in + t_out]
        )


@pytest.mark.parametrize(
    "window",
    [lambda d, **o: RolloutDataset(d, k=2, **o), lambda d, **o: ForecastDataset(d, 2, 1, **o)],
    ids=["rollout", "forecast"],
)
def test_windows_come_in_the_dtype_asked_for_float32_by_default(window):
    """The stored float64 frames are cast: float32 unless ``dtype`` says otherwise."""
    data = _marked_data()
    for options, dtype in (({}, torch.float32), ({"dtype": torch.float64}, torch.float64)):
        dataset = window(data, **options)
        assert all(tensor.dtype == dtype for tensor in dataset[4])
    pair = window(data, dtype=torch.float16)[4]  # item 4 = sample 1, start 0: frames 100.x..102.x
    assert [p.dtype for p in pair] == [torch.float16] * 2
    # 102.3 rounds to 102.3125 in float16 (a step of 1/16 between 64 and 128)
    assert pair[0].flatten()[0].item() == 100.0 and pair[1].flatten()[-1].item() == 102.3125


def test_windows_carry_the_files_attributes_and_default_sizes():
    data = _marked_data()
    data.attrs["problem"] = "marked"
    rollout, forecast = RolloutDataset(data), ForecastDataset(_marked_data(times=20))
    assert rollout.attributes == {"problem": "marked"}
    assert rollout.k == 1 and len(rollout) == 3 * 5  # u(t) → u(t + 1): 5 starts of 6 times
    assert (forecast.t_in, forecast.t_out) == (10, 10) and len(forecast) == 3 * 1


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda d: ForecastDataset(d, t_in=2, t_out=0),
            ValueError,
            "t_out must be an integer >= 1, got 0",
        ),
        (
            lambda d: ForecastDataset(d, t_in=2, t_out=1.0),
            TypeError,
            "t_out must be an integer >= 1, got 1.0",
        ),
        (
            lambda d: ForecastDataset(d, t_in=True),
            TypeError,
            "t_in must be an integer >= 1, got True",
        ),
        (lambda d: RolloutDataset(d, k=-1), ValueError, "k must be an integer >= 1, got -1"),
    ],
)
def test_a_window_of_no_frames_or_fractional_frames_is_refused_by_name(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make(_marked_data())


def _marked_pairs(dataset, i):
    return [tensor.squeeze().tolist() for tensor in dataset[i]]


def test_single_step_pairs_are_the_frames_named():
    """u[s, t, x] = 100 s + t + x / 10: the pair names its sample and times."""
    data = _marked_data()
    assert _marked_pairs(SingleStepDataset(data, 2, 4, dtype=torch.float64), 1) == [
        [102.0, 102.1, 102.2, 102.3],
        [104.0, 104.1, 104.2, 104.3],
    ]
    assert _marked_pairs(SingleStepDataset(data, -3, -1, dtype=torch.float64), 2) == [
        [203.0, 203.1, 203.2, 203.3],
        [205.0, 205.1, 205.2, 205.3],
    ]
    same = SingleStepDataset(data, input_time=3, target_time=3, dtype=torch.float64)
    assert _marked_pairs(same, 0) == [[3.0, 3.1, 3.2, 3.3]] * 2  # an identity pair is allowed


@pytest.mark.parametrize(("steps", "times"), [(1, [5]), (5, [1, 2, 3, 4, 5])])
def test_multi_step_pairs_are_the_first_frame_then_the_listed_ones(steps, times):
    data = _marked_data()
    dataset = MultiStepDataset(data, steps=steps, dtype=torch.float64)
    assert dataset.target_times == times
    source, target = dataset[2]
    assert source.squeeze(0).tolist() == [200.0, 200.1, 200.2, 200.3]
    assert target[:, 0].tolist() == [200.0 + t for t in times]


def test_grid_channels_follow_each_axis_of_a_non_square_grid():
    """u (1 sample, 2 times, 3 x, 2 y): channel 1 is x[i] at node (i, j), channel 2 is y[j]."""
    x, y = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64), torch.tensor([-1.0, 2.0])
    data = PDEData(
        u=torch.zeros(1, 2, 3, 2, dtype=torch.float64),
        t=torch.tensor([0.0, 1.0]),
        coords={"x": x, "y": y.double()},
        params={},
    )
    source, target = SingleStepDataset(data, with_grid=True)[0]
    assert source.shape == (3, 3, 2) and target.shape == (1, 3, 2)
    assert source.dtype == target.dtype == torch.float32
    assert source[1].tolist() == [[0.0, 0.0], [0.25, 0.25], [1.0, 1.0]]
    assert source[2].tolist() == [[-1.0, 2.0]] * 3
    wide = MultiStepDataset(data, with_grid=True, dtype=torch.float64)[0][0]
    assert wide.dtype == torch.float64 and wide[2].tolist() == [[-1.0, 2.0]] * 3


def test_sample_seeds_are_drawn_from_seed_and_index_together():
    """The documented scheme: SeedSequence([seed, i]) gives two words w0, w1; the seed is
    (w0 << 31) ^ w1. Neither seed + i nor the words swapped."""
    for seed, index in ((0, 0), (0, 1), (1, 0), (5, 7), (2**63 - 1, 3)):
        w0, w1 = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
        assert sample_seed(seed, index) == (int(w0) << 31) ^ int(w1)
    seeds = {sample_seed(seed, index) for seed in range(4) for index in range(4)}
    assert len(seeds) == 16  # (1, 0) and (0, 1) differ, as every other pair


@pytest.mark.parametrize(
    ("seed", "index", "match"),
    [
        (1.5, 0, r"seed must be a non-negative integer below 2\*\*63 .*got 1\.5"),
        ("3", 0, r"seed must be a non-negative integer .*got '3'"),
        (True, 0, r"seed must be a non-negative integer .*got True"),
        (2**63, 0, r"seed must be a non-negative integer .*got 9223372036854775808"),
        (-1, 0, r"seed must be a non-negative integer .*got -1"),
        (0, -1, r"index must be a non-negative integer, got -1"),
        (0, 2.0, r"index must be a non-negative integer, got 2\.0"),
        (0, np.bool_(True), r"index must be a non-negative integer, got .*True"),
    ],
)
def test_sample_seed_refuses_what_is_not_a_seed_and_an_index_by_name(seed, index, match):
    with pytest.raises(ValueError, match=match):
        sample_seed(seed, index)


def test_sample_seed_takes_numpy_integers_as_the_ints_they_are():
    w0, w1 = np.random.SeedSequence([3, 5]).generate_state(2, dtype=np.uint32)
    expected = (int(w0) << 31) ^ int(w1)
    assert sample_seed(np.int64(3), np.uint8(5)) == sample_seed(3, 5) == expected
    assert type(sample_seed(np.int64(3), 5)) is int


def test_numpy_integer_requests_generate_the_dataset_of_plain_ints(tmp_path):
    plain = load(make(tmp_path / "plain.h5", n=4, seed=3, chunk=2))
    numpy = load(
        make(
            tmp_path / "numpy.h5",
            n=np.int64(4),
            seed=np.int64(3),
            chunk=np.int32(2),
            shard=np.int64(0),
            num_shards=np.int64(1),
        )
    )
    assert torch.equal(numpy.u, plain.u)
    assert numpy.attrs["seed"] == 3 and type(numpy.attrs["seed"]) is int
    assert numpy.attrs["n_total"] == 4
    same = {k: v for k, v in numpy.attrs.items() if k != "created"}
    assert same == {k: v for k, v in plain.attrs.items() if k != "created"}


def test_a_sharded_dataset_loads_with_the_attributes_of_one_run(tmp_path):
    whole = load(make(tmp_path / "whole.h5", n=5, seed=2)).attrs
    for shard in range(2):
        make(tmp_path / "sharded.h5", n=5, seed=2, shard=shard, num_shards=2)
    sharded = load(tmp_path / "sharded.h5").attrs
    assert sharded["shard"] == 0 and sharded["num_shards"] == 1 and sharded["n_total"] == 5
    assert {k: v for k, v in sharded.items() if k != "created"} == {
        k: v for k, v in whole.items() if k != "created"
    }


def test_an_existing_file_at_the_index_path_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "sharded.h5"
    out.write_text("someone else's file")
    solved = []
    with pytest.raises(FileExistsError, match=r"out: index .*sharded\.h5.* already exists"):
        make(out, n=4, shard=0, num_shards=2, on_chunk=lambda done, total: solved.append(done))
    assert solved == [] and out.read_text() == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.h5"]


def test_a_setting_the_recipe_cannot_describe_is_refused_before_solving(tmp_path, monkeypatch):
    from pdes import problems

    class Grids(type(TOY)):
        name = "toy-grids"
        options = {**type(TOY).options, "grid": problems.Option("uniform", "node spacing")}
        solved = []

        def coordinates(self, settings):
            spacing = {"uniform": np.linspace(0.0, 1.0, settings["nx"])}[settings["grid"]]
            return {"t": np.linspace(0.0, 1.0, settings["nt"]), "x": spacing}

        def generate(self, seeds, settings, device="cpu"):
            self.solved.append(len(seeds))
            return super().generate(seeds, settings, device)

    recipe = Grids()
    monkeypatch.setitem(problems._REGISTERED, recipe.name, recipe)
    out = tmp_path / "grids.h5"
    with pytest.raises(ValueError, match="toy-grids: unknown setting value 'chebyshev'"):
        generate_dataset("toy-grids", out, n=2, grid="chebyshev", progress=False)
    assert recipe.solved == [] and list(tmp_path.iterdir()) == []
    assert load(generate_dataset("toy-grids", out, n=2, progress=False)).u.shape == (2, 4, 9)


@pytest.mark.parametrize("seed", [1.5, -1, 2**64, True, "3", torch.tensor(2)])
def test_a_sample_seed_that_is_not_a_non_negative_integer_is_refused_by_name(seed):
    """A fractional seed was truncated and a negative one wrapped, silently; numpy integers pass."""
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer"):
        problems.generator(seed)
    first = torch.rand(3, generator=problems.generator(np.uint32(7)))
    assert torch.equal(first, torch.rand(3, generator=problems.generator(7)))


@pytest.mark.parametrize(
    "flag", [True, np.bool_(False), np.array(True), torch.tensor(True), torch.tensor(False)]
)
def test_bools_are_no_sample_or_seed_index_anywhere(flag):
    with pytest.raises(ValueError, match="index must be a non-negative integer, got"):
        sample_seed(1, flag)
    with pytest.raises(ValueError, match="seed must be a non-negative integer below 2"):
        sample_seed(flag, 1)
    with pytest.raises(TypeError, match="index must be an integer, got"):
        item_index(flag, 4)
    data = PDEData(u=torch.zeros(3, 2, 4), t=torch.arange(2.0), coords={}, params={})
    with pytest.raises(TypeError, match="index must be an integer, got"):
        SingleStepDataset(data)[flag]


@pytest.mark.parametrize(
    ("given", "expected"),
    [(3, 3), (np.int64(4), 4), (np.array(5), 5), (torch.tensor(6), 6), (2.0, None), ("1", None)],
)
def test_integers_are_read_from_python_numpy_and_torch(given, expected):
    assert integer(given) == expected


@pytest.mark.parametrize("given", [torch.tensor([6]), torch.tensor([[6]]), np.array([6])])
def test_one_element_tensors_and_arrays_are_no_index_seed_or_count(given):
    assert integer(given) is None
    with pytest.raises(TypeError, match=r"^index must be an integer, got"):
        item_index(given, 8)
    with pytest.raises(ValueError, match=r"^index must be a non-negative integer, got"):
        sample_seed(1, given)
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer below 2\*\*63"):
        sample_seed(given, 1)


def test_nbody_sample_seeds_are_checked_as_every_recipe_s():
    refused = r"seed must be a non-negative integer below 2\*\*64, got 1\.5"
    with pytest.raises(ValueError, match=refused):
        nbody_digits_from_seeds([1.5], frames=2, size=16, digits=1)


@pytest.mark.parametrize("name", ["u", "params/a", "fields/u_squared", "t", "x", "sample_index"])
def test_a_flipped_bit_in_a_generated_file_is_an_error_not_a_wrong_value(tmp_path, name):
    out = make(tmp_path / "data.h5", n=4)
    with h5py.File(out, "r") as f:
        assert f[name].fletcher32 and f[name].chunks is not None
    flip_a_bit_of_the_first_chunk(out, name)
    damaged = rf"data\.h5' is damaged: its array '{name}' failed its checksum \(.*filter.*\); "
    with pytest.raises(DatasetFileError, match=damaged + "generate or copy it again$"):
        load(out)


@pytest.mark.parametrize("name", ["u", "t", "x"])
def test_a_finished_file_failing_its_checksum_is_not_kept_by_a_rerun(tmp_path, name):
    """A rerun of a finished request keeps the file only once every checksummed array of it,
    the coordinates too, reads back: a damaged one is refused, naming the array."""
    out = make(tmp_path / "data.h5", n=4)
    flip_a_bit_of_the_first_chunk(out, name)
    damaged = rf"^out: '.*data\.h5' is damaged: its array '{name}' failed its checksum \(.*\); "
    with pytest.raises(DatasetFileError, match=damaged + r"generate it again \(pass "):
        make(out, n=4)


@pytest.mark.parametrize("name", ["sample_seed", "x"])
def test_a_flipped_bit_in_a_shard_s_seeds_or_coordinates_is_an_error_on_merging(tmp_path, name):
    for shard in range(2):
        make(tmp_path / "data.h5", n=4, shard=shard, num_shards=2)
    shards = sorted(tmp_path.glob("data*of*.h5"))
    with h5py.File(shards[1], "r") as f:
        assert f[name].fletcher32 and f[name].chunks is not None
    flip_a_bit_of_the_first_chunk(shards[1], name)
    with pytest.raises(DatasetFileError, match=rf"could not be read: {name}: .*filter"):
        merge_shards(shards, tmp_path / "merged.h5")


def _stopped_before_the_index(*args, **kwargs):
    raise KeyboardInterrupt


def test_a_shard_stopped_before_the_index_is_finished_by_running_it_again(tmp_path, monkeypatch):
    whole = load(make(tmp_path / "whole.h5", n=6, seed=4)).u
    out = tmp_path / "sharded.h5"
    write_index = generate_module._write_index
    monkeypatch.setattr(generate_module, "_write_index", _stopped_before_the_index)
    for shard in range(2):
        with pytest.raises(KeyboardInterrupt):
            make(out, n=6, seed=4, shard=shard, num_shards=2)
    monkeypatch.setattr(generate_module, "_write_index", write_index)
    assert not out.exists()
    with pytest.raises(FileExistsError, match="already exists"):  # not the dataset asked for
        make(out, n=6, seed=5, shard=1, num_shards=2)
    assert not out.exists()
    solved = []
    shard = make(out, n=6, seed=4, shard=1, num_shards=2, on_chunk=lambda *a: solved.append(a))
    assert shard == tmp_path / "sharded.shard-001-of-002.h5" and solved == []
    assert torch.equal(load(out).u, whole)


def test_shards_of_another_seed_get_no_index_neither_at_the_end_nor_when_run_again(tmp_path):
    out = tmp_path / "sharded.h5"
    make(out, n=4, seed=5, shard=0, num_shards=2)
    refusal = r"index .*sharded\.h5' not written: shards disagree: .*: seed 0 vs 5; "
    for _ in range(2):  # the run that writes shard 1, then the rerun that would repair the index
        with pytest.raises(ShardError, match=refusal):
            make(out, n=4, seed=0, shard=1, num_shards=2)
        assert not out.exists()
    assert generate_module.missing_shards(out, 2) == []
    make(out, n=4, seed=5, shard=1, num_shards=2, overwrite=True)
    assert load(out).sample_seed.tolist() == [sample_seed(5, i) for i in range(4)]


def test_a_shard_generated_again_with_other_settings_gets_no_index(tmp_path):
    out = tmp_path / "sharded.h5"
    for shard in range(2):
        make(out, n=4, shard=shard, num_shards=2)
    out.unlink()
    with pytest.raises(ShardError, match=r"not written: shards disagree: .*: nx 9 vs 17; "):
        make(out, n=4, shard=0, num_shards=2, nx=17, overwrite=True)
    assert not out.exists()


def test_a_dataset_regenerated_in_place_loses_its_old_index_until_the_shards_agree(tmp_path):
    """The old index (seed 0) stayed on disk while the run said it was not written; it is
    removed, and the shard regenerated last writes the new one (seed 5)."""
    out = tmp_path / "sharded.h5"
    for shard in range(2):
        make(out, n=4, shard=shard, num_shards=2)
    assert out.exists()
    removed = rf"seed 0 vs 5; the old index {re.escape(repr(str(out)))} was removed; the shard"
    with pytest.raises(IndexNotWritten, match=removed):
        make(out, n=4, seed=5, shard=0, num_shards=2, overwrite=True)
    assert not out.exists() and generate_module.missing_shards(out, 2) == []
    make(out, n=4, seed=5, shard=1, num_shards=2, overwrite=True)
    assert load(out).sample_seed.tolist() == [sample_seed(5, i) for i in range(4)]


def test_shards_that_come_to_agree_while_the_old_index_is_removed_get_it_written(
    tmp_path, monkeypatch
):
    """Shard 1 finished (and wrote the index) between this run's check and its removal of the
    old index: the shards are checked again, and the index written anew."""
    out = tmp_path / "sharded.h5"
    for shard in range(2):
        make(out, n=4, shard=shard, num_shards=2)
    answers = iter(["'a' vs 'b': seed 0 vs 5", None])
    monkeypatch.setattr(generate_module, "_disagreement", lambda paths: next(answers))
    assert generate_module._write_index(out, 2) is True
    assert out.exists() and next(answers, "checked twice") == "checked twice"


def test_loading_a_missing_index_names_the_shard_files_beside_it(tmp_path):
    out = tmp_path / "sharded.h5"
    make(out, n=4, seed=5, shard=0, num_shards=2)
    with pytest.raises(IndexNotWritten):
        make(out, n=4, shard=1, num_shards=2)
    shards = r"'sharded\.shard-000-of-002\.h5', 'sharded\.shard-001-of-002\.h5' are beside it"
    merge = re.escape(f"`physml merge {tmp_path / 'sharded.shard-*.h5'} -o merged.h5`")
    with pytest.raises(FileNotFoundError, match=rf"no dataset at .*, but its shard files {shards}"):
        load(out)
    with pytest.raises(FileNotFoundError, match=f"{merge} names what is missing or differs$"):
        load(out)
    with pytest.raises(FileNotFoundError, match=r"no dataset at '[^']*other\.h5'$"):
        load(tmp_path / "other.h5")
    assert issubclass(IndexNotWritten, ShardError) and "IndexNotWritten" in physml.data.__all__


def test_a_finished_shard_run_again_waits_for_the_others(tmp_path):
    out = tmp_path / "sharded.h5"
    make(out, n=6, shard=2, num_shards=3)
    assert generate_module.missing_shards(out, 3) == [0, 1]
    assert make(out, n=6, shard=2, num_shards=3) == tmp_path / "sharded.shard-002-of-003.h5"
    assert not out.exists()


def test_a_dataset_generated_with_progress_off_a_terminal_draws_no_bar(tmp_path, capsys):
    generate_dataset("heat", tmp_path / "a.h5", n=2, nx=9, nt=3, progress=True)
    assert capsys.readouterr().err == ""


def test_an_existing_output_whose_settings_nest_too_deep_is_no_dataset_of_ours(tmp_path):
    out = generate_dataset("toy", tmp_path / "toy.h5", n=4, chunk=2, progress=False)
    with h5py.File(out, "r+") as f:
        f.attrs["settings"] = "[" * 100_000 + "]" * 100_000
    with pytest.raises(FileExistsError, match=r"already exists \(pass overwrite=True\)$"):
        generate_dataset("toy", out, n=4, chunk=2, progress=False)
