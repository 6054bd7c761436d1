"""Earthformer on 2-D Navier–Stokes vorticity, against FNO-2D and persistence.

Data: the ``navier-stokes`` recipe (periodic unit torus, ν = 1e-3, FNO's forcing, Gaussian random
initial vorticity) on a 32×32 grid, one frame per unit of time; the first ``T_in`` frames of a
sequence are the context and the next ``T_out`` the target. Methods, trained for the same
wall-clock budget with :func:`physml.training.forecasting.train_forecaster` (the toy size: fixed
steps, so that a run repeats; a few seconds each, not equal times: 3–5 s for the Earthformer's,
about 3 s for the FNO's on a busy 2-core machine): Earthformer (axial
cuboid attention, global vectors), FNO-2D with time as channels (``neuralop.models.FNO``,
``in_channels = T_in``, ``out_channels = T_out``) and persistence (the last context frame). Both
networks are built for the torus: the Earthformer's convolutions wrap around
(``periodic=True``) and the FNO reads position as periodic coordinates
(``benchmarks/results/earthformer_ns_periodic.md``: in one run each, the Earthformer's error
went from 0.110 to 0.074).
Metric: relative L2 per lead time (per sample, then the mean) and its mean over lead times.
Plots: relative L2 against lead time and a forecast strip of one test sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

from pdes.problems import get as get_recipe

from .. import metrics
from .. import models as surrogates  # FNO builders: neuralop loads on first use
from ..io import atomic_write_text, save_figure, strict_json
from ..models.baselines import Persistence, count_parameters
from ..models.earthformer import Earthformer
from ..training.forecasting import check_no_old_checkpoint, train_forecaster
from . import Context, Row, Task, check_steps, register, run_label, run_settings

NAME = "earthformer-ns"
METHODS = ("earthformer", "fno", "persistence")
TRAINED = METHODS[:2]
"""The methods that train (persistence has no weights)."""
TEST_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: grid, frames in / out, sequences, training budget per model (s) or
    fixed ``steps`` per method (a run that repeats step for step, whatever the machine's load)."""

    nx: int
    t_in: int
    t_out: int
    train: int
    test: int
    budget_s: float | None
    batch_size: int
    base_units: int
    modes: int
    steps: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.budget_s is None and self.steps is None:
            raise ValueError("give budget_s or steps: training needs a stopping rule")
        check_steps(self.steps, TRAINED)


SIZES = {
    "toy": Scale(
        nx=32,
        t_in=5,
        t_out=5,
        train=48,
        test=8,
        budget_s=None,
        batch_size=8,
        base_units=16,
        modes=12,
        steps={"earthformer": 24, "fno": 45},  # 3-5 s and ~3 s on a busy 2-core machine
    ),
    "full": Scale(
        nx=32,
        t_in=10,
        t_out=10,
        train=512,
        test=64,
        budget_s=150.0,
        batch_size=8,
        base_units=32,
        modes=12,
    ),
}
NU = 1e-3
FRAME_DT = 1.0


def vorticity_sequences(
    count: int, first_seed: int, nx: int, frames: int, nu: float = NU, frame_dt: float = FRAME_DT
) -> torch.Tensor:
    """``count`` vorticity videos ``(count, frames, 1, nx, nx)`` float32 from the NS recipe.

    Sequence ``i`` starts from the Gaussian random field of seed ``first_seed + i`` at ``t = 0``
    and is sampled every ``frame_dt`` time units (the solver runs in float64).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    if not frame_dt > 0:
        raise ValueError(f"frame_dt must be > 0, got {frame_dt!r}")
    recipe = get_recipe("navier-stokes")
    settings = recipe.settings(nx=nx, nu=nu, t_end=frame_dt * (frames - 1), nt=frames)
    batch = recipe.generate(list(range(first_seed, first_seed + count)), settings)
    return batch.u.to(torch.float32)[:, :, None]


class FramesAsChannels(nn.Module):
    """Runs a 2-D operator ``(B, T_in, H, W) -> (B, T_out, H, W)`` on sequences ``(B, T, 1, H, W)``.

    How FNO-2D forecasts: the context frames are its input channels, the forecast its outputs.
    """

    def __init__(self, operator: nn.Module) -> None:
        super().__init__()
        self.operator = operator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[2] != 1:
            raise ValueError(f"x must have shape (B, T, 1, H, W), got {tuple(x.shape)}")
        return self.operator(x[:, :, 0])[:, :, None]


ARCHITECTURES: dict[str, dict[str, object]] = {
    "earthformer": dict(
        num_heads=4,
        depth=(1, 1),
        downsample=4,
        pattern="axial",
        global_vectors=8,
        periodic=True,
    ),
    "fno": dict(hidden_channels=32, n_layers=4, periodic=True),
    "persistence": {},
}
"""Each method's settings besides its sizes (see :func:`build`)."""


def model_config(method: str, scale: Scale) -> dict[str, object]:
    """The settings :func:`build` makes ``method`` from (besides the seed): what a checkpoint
    records of the model."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    sizes = {"t_in": scale.t_in, "t_out": scale.t_out, "nx": scale.nx}
    width = {"earthformer": {"base_units": scale.base_units}, "fno": {"modes": scale.modes}}
    return {"method": method, **sizes, **width.get(method, {}), **ARCHITECTURES[method]}


def build(method: str, scale: Scale, seed: int) -> nn.Module:
    """The ``method`` model for ``(T_in, 1, nx, nx)`` → ``(T_out, 1, nx, nx)``, seeded."""
    torch.manual_seed(seed)
    if method == "earthformer":
        return Earthformer(
            (scale.t_in, 1, scale.nx, scale.nx),
            (scale.t_out, 1, scale.nx, scale.nx),
            base_units=scale.base_units,
            **ARCHITECTURES[method],
        )
    if method == "fno":
        return FramesAsChannels(
            surrogates.fast_fno(
                n_modes=(scale.modes, scale.modes),
                in_channels=scale.t_in,
                out_channels=scale.t_out,
                **ARCHITECTURES[method],
            )
        )
    if method == "persistence":
        return Persistence(scale.t_out)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def relative_l2_per_lead(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative L2 ``(T_out,)``: per sample over ``(C, H, W)`` at each lead time, then the mean.

    ``prediction`` and ``target`` are ``(B, T_out, C, H, W)`` (any trailing axes) of one shape.
    """
    if prediction.shape != target.shape or target.ndim < 3:
        raise ValueError(
            "prediction and target must be (B, T_out, ...) tensors of one shape, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    prediction, target = prediction.double(), target.double()
    leads = range(target.shape[1])
    return torch.stack([metrics.relative_l2(prediction[:, k], target[:, k]) for k in leads])


def plot_errors(path: Path, errors: dict[str, torch.Tensor]) -> None:
    """Relative L2 against lead time (whole multiples of ``FRAME_DT = 1``), one line per
    method."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for method, values in errors.items():
        leads = torch.arange(1, len(values) + 1) * FRAME_DT
        ax.plot(leads, values, "o-", ms=3, label=method)
    ax.set(xlabel="lead time", ylabel="relative L2", title="Navier–Stokes vorticity, test set")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_strip(path: Path, truth: torch.Tensor, forecasts: dict[str, torch.Tensor]) -> None:
    """Truth and each forecast ``(T_out, 1, H, W)`` of one sequence, one row each, same colours."""
    rows = [("truth", truth), *forecasts.items()]
    leads = truth.shape[0]
    limit = float(truth.abs().max())
    fig, axes = plt.subplots(
        len(rows), leads, figsize=(1.2 * leads, 1.25 * len(rows)), squeeze=False
    )
    for r, (label, frames) in enumerate(rows):
        for k in range(leads):
            ax = axes[r, k]
            ax.imshow(frames[k, 0].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t+{(k + 1) * FRAME_DT:g}", fontsize=8)
            if k == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout(pad=0.2)
    save_figure(fig, path, dpi=110)


def run(context: Context) -> list[Row]:
    """Train Earthformer and FNO-2D for the same budget, score them and persistence, plot.

    Checkpoints live in the run folders ``out/earthformer-ns/<size>-seed<seed>/<method>/``: a
    rerun resumes (or reuses) them. Also writes ``summary-<size>-seed<seed>.json`` with the
    per-lead errors, parameters and steps, beside the two figures named the same way
    (:func:`~physml.tasks.run_label`).
    """
    scale = SIZES[context.size]
    folder = context.out / NAME
    label = run_label(context)
    work = folder / label
    for method in METHODS:  # before any training: the run would start them over
        check_no_old_checkpoint(work / method, "--out")
    work.mkdir(parents=True, exist_ok=True)
    frames = scale.t_in + scale.t_out
    train = vorticity_sequences(scale.train, 0, scale.nx, frames)
    test = vorticity_sequences(scale.test, TEST_SEED_OFFSET, scale.nx, frames)
    train_x, train_y = train[:, : scale.t_in], train[:, scale.t_in :]
    test_x, test_y = test[:, : scale.t_in], test[:, scale.t_in :]

    case = f"ns-{scale.nx}px-{scale.t_in}to{scale.t_out}"
    rows: list[Row] = []
    errors: dict[str, torch.Tensor] = {}
    forecasts: dict[str, torch.Tensor] = {}
    summary: dict[str, dict] = {}
    for method in METHODS:
        model = build(method, scale, context.seed)
        report = train_forecaster(
            model,
            train_x,
            train_y,
            budget_s=scale.budget_s,
            # persistence has nothing to train: any stopping rule returns it untouched
            max_steps=None if scale.steps is None else scale.steps.get(method, 1),
            batch_size=scale.batch_size,
            lr=1e-3,
            seed=context.seed,
            checkpoint=work / method,
            device=context.device,
            quiet=context.quiet,
            model_config=model_config(method, scale),
        )
        model = model.cpu().eval()
        with torch.no_grad():
            prediction = torch.cat([model(x) for x in test_x.split(16)])
        errors[method] = relative_l2_per_lead(prediction, test_y)
        forecasts[method] = prediction[0]
        mean = float(errors[method].mean())
        summary[method] = {
            "params": count_parameters(model),
            "steps": report.steps,
            "train_s": report.seconds,
            "rel_l2": mean,
            "rel_l2_per_lead": errors[method].tolist(),
        }
        rows.append(Row(NAME, case, f"rel L2 {method}", mean))
        rows.append(Row(NAME, case, f"rel L2 t+1 {method}", float(errors[method][0])))
        rows.append(Row(NAME, case, f"rel L2 t+{scale.t_out} {method}", float(errors[method][-1])))
        if report.steps:
            rows.append(Row(NAME, case, f"train s {method}", report.seconds))
    ours, reference = summary["earthformer"]["rel_l2"], summary["persistence"]["rel_l2"]
    ratio = ours / reference
    # A few toy steps are not a forecaster: the ratio is reported there, judged at full size.
    judged = context.size == "full"
    rows.append(
        Row(
            NAME,
            case,
            "rel L2 earthformer / persistence",
            ratio,
            "< 1" if judged else "< 1 at full size",
            (ratio < 1) if judged else None,
        )
    )
    plot_errors(folder / f"rel-l2-vs-lead-{label}.png", errors)
    plot_strip(folder / f"forecast-strip-{label}.png", test_y[0], forecasts)
    atomic_write_text(
        folder / f"summary-{label}.json",
        strict_json(
            {
                "settings": run_settings(context),
                "case": case,
                "scale": scale.__dict__,
                "methods": summary,
            }
        ),
    )
    return rows


register(
    Task(
        name=NAME,
        description=(
            "Earthformer vs FNO-2D (time as channels) vs persistence on 2-D Navier-Stokes "
            "vorticity sequences: relative L2 per lead time at equal training time (fixed steps at "
            "toy size)"
        ),
        run=run,
        figures={
            f"{NAME}/rel-l2-vs-lead-*.png": "{name}: relative L2 error of the test forecasts "
            "against lead time, Earthformer, FNO-2D and persistence.",
            f"{NAME}/forecast-strip-*.png": "{name}: one test sequence, the true vorticity "
            "frames (top row) and each method's forecast below, on one colour scale.",
        },
    )
)
