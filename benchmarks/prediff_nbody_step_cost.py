"""Seconds per training step of each ``prediff_nbody`` model, to size a run on a device.

:data:`prediff_nbody.STEP_COST` holds the CPU figures (one thread); this measures the same
trainings (the full scale's shapes and batches, a small training set) on ``--device``, plus one
sampling chunk (64 samples, 20 DDIM steps) per denoiser, and prints a JSON line. A figure is a
whole training's wall time (setup and checkpoints included) over its steps, so few ``--steps``
are dominated by the setup:

    python benchmarks/prediff_nbody_step_cost.py --device cuda --steps 40
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prediff_nbody as bench  # noqa: E402
from common import at_least, device_arg, run_main  # noqa: E402

blocks = bench.blocks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", type=device_arg, default="cpu")
    parser.add_argument(
        "--steps", type=at_least(1), default=40,
        help="timed steps (after 5 warm-up); few are dominated by each training's setup",
    )  # fmt: skip
    parser.add_argument("--threads", type=at_least(1), default=1)
    args = parser.parse_args(argv)
    device = args.device
    torch.set_num_threads(args.threads)
    scale = replace(bench.FULL, train=64, validation=8, test=8)
    data = blocks.videos(scale, 0)
    train, costs = data["train"], {}

    def timed(name: str, run) -> None:
        for steps in (5, args.steps):  # warm-up (kernels, allocator), then the timed run
            with tempfile.TemporaryDirectory() as work:
                started = time.perf_counter()
                run(steps, Path(work))
                if device != "cpu":
                    torch.cuda.synchronize(device)
                costs[name] = (time.perf_counter() - started) / steps
        print(f"{name}: {1e3 * costs[name]:.1f} ms/step", flush=True)

    trained = {}

    def autoencoder(steps: int, work: Path) -> None:
        sized = replace(scale, autoencoder_steps=steps)
        trained["ae"] = blocks.train_autoencoder(sized, train, work, 0, True, device).model

    timed("autoencoder", autoencoder)
    timed(
        "judge",
        lambda n, w: blocks.train_judge(replace(scale, judge_steps=n), train, w, 0, True, device),
    )
    guide = bench.GUIDES["full"]
    timed(
        "guide",
        lambda n, w: blocks.train_guide(scale, replace(guide, steps=n), train, w, 0, True, device),
    )
    context = data["test"].split(scale.t_in)[0][:8]
    for kind in blocks.DENOISERS:
        prediff = blocks.build_prediff(scale, kind, trained["ae"], 0).to(device)
        prediff, latents = blocks.calibrated(prediff, train, scale.t_in)

        def denoiser(n, w, prediff=prediff, latents=latents, kind=kind):
            sized = replace(scale, denoiser_steps={kind: n})
            blocks.train_denoiser(sized, prediff, latents, kind, w, 0, True, device)

        timed(kind, denoiser)
        for _ in range(1 if device == "cpu" else 2):  # the second draw runs warm
            forecast = blocks.sample(prediff, context, 8, scale.ddim_steps, 0, 64)
        costs[f"{kind}_sample_64x20"] = forecast.seconds
    model = bench.earthformer_model(scale, 0)
    pairs = blocks.forecast_pairs(train, scale.t_in)
    timed(
        "earthformer",
        lambda n, w: blocks.fit(
            model, bench.earthformer_loss, pairs, n, 16, scale.lr, 0, w, True, device=device
        ),
    )
    print(json.dumps({"device": device, **{k: round(v, 4) for k, v in costs.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
