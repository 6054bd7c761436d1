"""One exploratory run of the N-body benchmark: one model, one budget, settings overridden.

The runs behind the README's "how the set-up got here" table; each prints one line (steps, MSE,
MAE, SSIM, lead-1 and lead-10 MSE, lead-1 SSIM on the test set, then MSE and SSIM on the
held-out :func:`nbody_forecasting.validation` videos, which are what a choice of settings should
be made on) and one of the training loss at 10, 25, 50, 75 and 100 % of its steps, and is
recorded in
``results/earthformer_nbody-exploration.md``. Settings not overridden are those of
``nbody_forecasting.py`` (before it, ``earthformer_nbody.py``) at the time of the run (see the
files' history).

    python benchmarks/earthformer_nbody_variant.py BUDGET_S METHOD TAG '{"lr": 0.003, ...}'

Overrides: ``loss`` ("mse", "l1", "mse+0.1l1", "mse+l1"), ``lr``, ``base_units``, ``seed`` (the
model's initialisation and batch order; the data are always seed 0's), ``train`` (the number of
training videos; the first 3000 are the benchmark's), ``batch_size``, the baselines' widths
``unet_base`` and ``convlstm_hidden``, and any
Earthformer setting of ``EARTHFORMER`` (``pattern``, ``stem_channels``, ``ffn_kernel``,
``depth``, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbody_forecasting as bench  # noqa: E402
from common import run_main  # noqa: E402

from physml.models.forecasting import evaluate_forecaster  # noqa: E402
from physml.training.forecasting import train_forecaster  # noqa: E402

LOSSES = {"mse": None, "l1": None, "mse+0.1l1": 0.1, "mse+l1": 1.0}
"""Loss names -> the L1 weight of :func:`nbody_forecasting.weighted_training_loss` (``None``:
the named loss of :func:`~physml.training.forecasting.train_forecaster`)."""


METHODS = bench.MODELS
"""Every model :func:`nbody_forecasting.build` makes (``persistence`` and ``blank`` train no
step: their lines score them)."""


def _budget(text: str) -> float:
    """``BUDGET_S``: CPU seconds of training, a finite number > 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be CPU seconds > 0, got {text!r}")
    return seconds


def _overrides(text: str) -> dict:
    """``OVERRIDES``: a JSON object of settings."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError:
        settings = None
    if not isinstance(settings, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object such as '{{\"lr\": 0.003}}', got {text!r}"
        )
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="OVERRIDES: " + __doc__.split("Overrides: ")[1]
    )
    parser.add_argument("budget", metavar="BUDGET_S", type=_budget, help="CPU seconds of training")
    parser.add_argument("method", metavar="METHOD", choices=METHODS, help=", ".join(METHODS))
    parser.add_argument("tag", metavar="TAG", help="the run's name, first on each printed line")
    parser.add_argument(
        "over", metavar="OVERRIDES", nargs="?", type=_overrides, default={}, help="(see below)"
    )
    args = parser.parse_args(argv)
    budget, method, tag, over = args.budget, args.method, args.tag, dict(args.over)
    loss = over.pop("loss", "mse")
    if loss not in LOSSES:
        raise ValueError(f"overrides: loss must be one of {list(LOSSES)}, got {loss!r}")
    if LOSSES[loss] is not None:
        loss = bench.weighted_training_loss(LOSSES[loss])
    lr = over.pop("lr", 2e-3)
    base_units = over.pop("base_units", bench.SCALES["full"].base_units)
    seed = over.pop("seed", 0)
    train = over.pop("train", bench.SCALES["full"].train)
    batch_size = over.pop("batch_size", bench.SCALES["full"].batch_size)
    widths = {key: over.pop(key) for key in ("unet_base", "convlstm_hidden") if key in over}
    for key in ("depth", "cross_cuboid_hw"):
        if key in over:
            over[key] = tuple(over[key])
    bench.EARTHFORMER.update(over)
    torch.set_num_threads(1)
    scale = replace(
        bench.SCALES["full"],
        budget_s=budget,
        lr=lr,
        base_units=base_units,
        train=train,
        batch_size=batch_size,
        **widths,
    )
    train_x, train_y, test_x, test_y = bench.videos(scale, 0)
    model = bench.build(method, scale, seed)
    report = train_forecaster(
        model,
        train_x,
        train_y,
        budget_s=budget,
        batch_size=scale.batch_size,
        lr=lr,
        seed=seed,
        clock="cpu",
        loss=loss,
        model_config=bench.model_config(method, scale),
    )
    s = evaluate_forecaster(model, test_x, test_y, batch_size=32)
    v = evaluate_forecaster(model, *bench.validation(scale, 0).split(scale.t_in), batch_size=32)
    print(
        f"{tag} {method} seed {seed} steps {report.steps} "
        f"mse {s.mse:.2f} mae {s.mae:.1f} ssim {s.ssim:.4f} "
        f"lead1 {s.mse_per_lead[0]:.2f} lead10 {s.mse_per_lead[-1]:.2f} "
        f"ssim1 {s.ssim_per_lead[0]:.3f} val_mse {v.mse:.2f} val_ssim {v.ssim:.4f}",
        flush=True,
    )
    losses = torch.tensor(report.losses)
    marks = [max(int(len(losses) * f), 1) for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
    curve = " ".join(f"{m}:{losses[max(m - 50, 0) : m].mean():.5f}" for m in marks)
    print(f"{tag} training loss (50-step mean) at step {curve}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
