"""Position channels of an FNO on a periodic domain: neuralop's grid, periodic coordinates, none.

neuralop's FNO appends ``x ∈ [0, 1]`` per axis to its input (``grid``), a channel that jumps where
a periodic box wraps. ``physml train --model fno`` on a periodic file now appends the cosine and
sine of each axis's phase instead (``periodic``, :class:`physml.models.PeriodicCoordinates`);
``none`` gives no position at all (a translation-equivariant operator). Each arm trains the
``physml train`` FNO (same options, loss, optimiser, schedule, steps and seeds; only the position
channels differ) and is scored by relative L2 on a test file of other seeds:

* ``burgers``: 1-D viscous Burgers on the periodic [0, 1), ``u(0) → u(1)`` (operator): the map
  commutes with shifts, so position is information the operator does not need;
* ``navier-stokes``: 2-D vorticity on the unit torus under FNO's forcing
  ``0.1 (sin 2π(x+y) + cos 2π(x+y))``, one frame to the next (rollout): the forcing depends on
  position, periodically. ::

    OMP_NUM_THREADS=1 python benchmarks/fno_coordinates.py --work benchmarks/work/fno_coordinates

Trained models are kept under ``--work`` (a second run re-scores them; a killed one resumes).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK_REMEDY, arguments, run_main, work_folder, write_results  # noqa: E402

from pdes.problems import active_seed_scheme  # noqa: E402
from physml import metrics  # noqa: E402
from physml.data import generate_dataset, load  # noqa: E402
from physml.data.generate import path_in_scheme  # noqa: E402
from physml.io import atomic_write_text, save_figure  # noqa: E402
from physml.models import fast_fno  # noqa: E402
from physml.training import TrainConfig, Trainer  # noqa: E402
from physml.training.families import (  # noqa: E402
    FAMILIES,
    fno_options,
    model_config,
    training_items,
)

NAME = "fno_coordinates"
ARMS = ("grid", "periodic", "none")
CASES = {
    # name: (recipe, task, recipe options, train samples, test samples, model options, steps)
    "burgers": ("burgers", "operator", {}, 512, 200, {}, 500),
    "navier-stokes": (
        "navier-stokes",
        "rollout",
        {"nx": 32, "t_end": 10.0, "nt": 11},
        100,
        40,
        {"modes": 12, "hidden": 24},
        400,
    ),
}
QUICK = {
    "burgers": ("burgers", "operator", {"nx": 64}, 16, 8, {"modes": 8, "hidden": 8}, 3),
    "navier-stokes": (
        "navier-stokes",
        "rollout",
        {"nx": 16, "t_end": 0.5, "nt": 4},
        6,
        3,
        {"modes": 4, "hidden": 8},
        3,
    ),
}
SEEDS = (0, 1, 2)
COLUMNS = (
    "case",
    "method",
    "rel_l2",
    "rel_l2_se",
    "vs_grid",
    "seeds",
    "steps",
    "parameters",
    "train_s",
)
NOTES = """
`rel_l2`: mean over seeds of the test set's mean relative L2 error (`rel_l2_se` its standard
error over seeds); `vs_grid`: over the grid method's. `train_s`: CPU seconds of one training
(mean over seeds). `parameters`: the model's (the position channels add lifting weights only).
"""


def fno(arm: str, config: dict, data, shapes) -> torch.nn.Module:
    """The ``physml train`` FNO of ``config`` with the arm's position channels."""
    if arm in ("grid", "periodic"):
        return FAMILIES["fno"].build({**config, "periodic": arm == "periodic"}, data, shapes)
    return fast_fno(**fno_options(config, data, shapes), positional_embedding=None)


def test_error(model: torch.nn.Module, items) -> float:
    model.eval()
    errors = []
    with torch.no_grad():
        for start in range(0, len(items), 64):
            pairs = [items[i] for i in range(start, min(start + 64, len(items)))]
            x = torch.stack([p[0] for p in pairs])
            y = torch.stack([p[1] for p in pairs])
            errors.append(metrics.relative_l2(model(x), y, reduction="none"))
    return float(torch.cat(errors).mean())


def data_path(work: Path, name: str, part: str, count: int, options: dict) -> Path:
    """The case's data file under ``work`` as named before names carried the seed scheme; its
    name carries the sample count and the recipe options, so that runs of other sizes
    (``--quick``) on one ``--work`` never share a file."""
    spec = "".join(f"-{key}{value}" for key, value in sorted(options.items()))
    return work / f"{name}-{part}-{count}{spec}.h5"


def part_data(
    recipe: str, work: Path, name: str, part: str, n: int, seed: int, options: dict, quiet: bool
):
    """The ``n`` samples of the case's ``part`` from seed ``seed``, drawn under the active seed
    scheme once, into :func:`data_path` as :func:`physml.data.generate.path_in_scheme` names it
    for that scheme (so that runs under two schemes on one ``--work`` never share a file)."""
    scheme = active_seed_scheme()
    path = path_in_scheme(data_path(work, name, part, n, options), scheme)
    if not path.exists():
        generate_dataset(
            recipe, path, n, seed=seed, progress=not quiet, seed_scheme=scheme, **options
        )
    return load(path)


def run_case(name: str, spec, work: Path, quiet: bool) -> tuple[list[dict], dict]:
    """The case's rows (one per method) and, for the figure, the first test pair's target and
    each method's prediction by its seed-0 model."""
    recipe, task, options, n_train, n_test, model_options, steps = spec
    paths = {}
    for part, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        paths[part] = part_data(recipe, work, name, part, n, seed, options, quiet)
    config = model_config("fno", task, model_options)
    items, test_items = (training_items(config, paths[part]) for part in ("train", "test"))
    shapes = tuple(tuple(part.shape) for part in items[0])[:2]
    rows, shown = [], {"target": test_items[0][1]}
    for arm in ARMS:
        errors, seconds, parameters = [], [], 0
        for seed in SEEDS:
            torch.manual_seed(seed)
            model = fno(arm, config, paths["train"], shapes)
            parameters = sum(p.numel() for p in model.parameters())
            batch = min(TrainConfig.batch, len(items))
            settings = TrainConfig(steps=steps, batch=batch, seed=seed, checkpoint_every=100)
            out = work / f"{name}-{arm}-{seed}"
            described = {**config, "arm": arm}
            started = time.process_time()
            trainer = Trainer(
                model,
                FAMILIES["fno"].loss,
                settings,
                out,
                described,
                quiet=quiet,
                remedy=WORK_REMEDY,
            )
            trainer.fit(items)
            timing = out / "train_s.json"  # a re-scoring run trains nothing: keep the first's
            if not timing.exists():
                atomic_write_text(timing, json.dumps(time.process_time() - started))
            seconds.append(json.loads(timing.read_text()))
            errors.append(test_error(model, test_items))
            if seed == SEEDS[0]:
                with torch.no_grad():
                    shown[arm] = model(test_items[0][0][None])[0]
        _, se = metrics.mean_se(errors)
        rows.append(
            {
                "case": name,
                "method": arm,
                "rel_l2": statistics.mean(errors),
                "rel_l2_se": se,
                "per_seed": errors,
                "seeds": len(errors),
                "steps": steps,
                "parameters": parameters,
                "train_s": statistics.mean(seconds),
            }
        )
    grid = rows[0]["rel_l2"]
    for row in rows:
        row["vs_grid"] = row["rel_l2"] / grid
    return rows, shown


def plot_case(path: Path, name: str, shown: dict) -> None:
    """The first test pair: its target and each method's error (seed-0 models), one colour
    scale for the errors (2-D) or one axis (1-D)."""
    target = shown["target"][0]  # first channel
    errors = {arm: (shown[arm][0] - target).abs() for arm in ARMS}
    relative = {
        arm: float((shown[arm] - shown["target"]).norm() / shown["target"].norm()) for arm in ARMS
    }
    if target.ndim == 1:
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
        top.plot(target, color="black", label="target")
        for arm in ARMS:
            top.plot(shown[arm][0], lw=1, label=arm)
            bottom.plot(errors[arm], lw=1, label=f"{arm} (rel. L2 {relative[arm]:.3f})")
        top.set_ylabel("u")
        bottom.set_ylabel("|error|")
        bottom.set_xlabel("grid point (the domain wraps at both ends)")
        top.legend(fontsize=8)
        bottom.legend(fontsize=8)
    else:
        figure, axes = plt.subplots(1, 1 + len(ARMS), figsize=(3.4 * (1 + len(ARMS)), 3.4))
        image = axes[0].imshow(target.T, origin="lower", cmap="RdBu_r")
        axes[0].set_title("target", fontsize=9)
        figure.colorbar(image, ax=axes[0], fraction=0.046)
        top = max(float(e.max()) for e in errors.values())
        for ax, arm in zip(axes[1:], ARMS, strict=True):
            image = ax.imshow(errors[arm].T, origin="lower", cmap="magma", vmin=0, vmax=top)
            ax.set_title(f"|error|, {arm} (rel. L2 {relative[arm]:.3f})", fontsize=9)
            figure.colorbar(image, ax=ax, fraction=0.046)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(
        f"{name}: first test pair, the seed-0 model of each position choice", fontsize=10
    )
    figure.tight_layout()
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    args = arguments(
        __doc__, argv, lambda p: p.add_argument("--work", type=Path, help="trained models")
    )
    started = time.perf_counter()
    cases = QUICK if args.quick else CASES
    with tempfile.TemporaryDirectory() as scratch:
        default = Path("benchmarks/work") / NAME
        work = work_folder(args.work, scratch, args.quick, default, [f"{c}-*" for c in cases])
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for name, spec in cases.items():
            found, shown = run_case(name, spec, work, quiet=args.quick)
            rows += found
            plot_case(args.out / f"{NAME}-{name}.png", name, shown)
    write_results(NAME, rows, args.seed, started, args.out, COLUMNS, NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
