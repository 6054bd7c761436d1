"""Seconds per video of PreDiff sampling: plain, and with knowledge control on decoded frames.

Knowledge control on frames reads ``quantity(decode(denoise(z_t)))`` at every DDIM step and
differentiates it, so each step runs the denoiser with gradients, the decoder, the quantity and
their backward pass. The sampler reuses the guide's noise estimate at ``z_t`` for the step itself
(``shared``); ``separate`` forces the step's own denoiser pass, as before that reuse. The shapes
are ``prediff_nbody.py``'s full scale (64 px, 10 → 10 frames, the convolutional denoiser, the
frame guide's size); the weights are fresh (timing does not depend on them; the target energy
is the untrained guide's own reading of the last context frames, so its Gauss–Newton steps
stay finite), and the latents of ``shared`` and ``separate`` are checked to agree. Each setting
is timed ``--repeats`` times, alternating, and the median kept::

    OMP_NUM_THREADS=1 python benchmarks/guided_sampling_cost.py
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prediff_nbody as bench  # noqa: E402
from common import arguments, at_least, run_main, write_results  # noqa: E402

from physml import constrain  # noqa: E402
from physml.models.energy_judge import EnergyJudge  # noqa: E402
from physml.models.prediff import FrameAutoencoder  # noqa: E402
from physml.models.prediff import sampler as ddim  # noqa: E402

blocks = bench.blocks
NAME = "guided_sampling_cost"
COLUMNS = ("case", "method", "s_per_video", "vs_plain", "vs_separate", "denoiser_passes")
NOTES = """
`s_per_video`: median wall seconds of one call sampling `members` members of `contexts`
videos, divided by `contexts`; `vs_plain` / `vs_separate`: over plain sampling's and the
two-pass guided step's time. `denoiser_passes`: denoiser calls per DDIM step.
"""


def setup(quick: bool, seed: int):
    """A fresh PreDiff, a frame guide, contexts and energies of the scale's shapes."""
    scale = bench.QUICK if quick else bench.FULL
    guide_size = bench.GUIDES["quick" if quick else "full"]
    autoencoder = FrameAutoencoder(
        1, scale.latent_channels, scale.downsample, scale.autoencoder_width
    )
    prediff = blocks.build_prediff(scale, "conv", autoencoder, seed).eval()
    shape = dict(window=guide_size.window, hidden=guide_size.hidden, depth=guide_size.depth)
    guide = EnergyJudge(1, **shape, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    contexts = 2 if quick else 4
    context = torch.rand(contexts, scale.t_in, 1, scale.size, scale.size, generator=generator)
    with torch.no_grad():  # a reachable target for an untrained guide: its own reading
        energy = guide(context[:, -scale.t_out :]).mean(1)
    return scale, prediff, guide, context, energy


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument(
            "--repeats", type=at_least(1), default=3, help="timed calls per setting (>= 1)"
        )

    args = arguments(__doc__, argv, extra)
    started = time.perf_counter()
    torch.set_num_threads(1)
    scale, prediff, guide, context, energy = setup(args.quick, args.seed)
    members, steps = (2, 3) if args.quick else (scale.members, scale.ddim_steps)
    control = blocks.frame_energy_control(guide, energy, 1.0)
    guided = constrain(prediff, control)
    passes = {"plain": 0, "shared": 0, "separate": 0}
    denoiser_forward = prediff.denoiser.forward

    def counted(method):
        def forward(*a, **k):
            passes[method] += 1
            return denoiser_forward(*a, **k)

        return forward

    def run(method: str) -> tuple[float, torch.Tensor]:
        model = prediff if method == "plain" else guided
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(prediff.denoiser, "forward", counted(method)))
            if method == "separate":
                stack.enter_context(mock.patch.object(ddim, "_same", lambda z_t, z: False))
            tic = time.perf_counter()
            out = model(context, members=members, steps=steps, seed=args.seed)
            return time.perf_counter() - tic, out.samples

    seconds: dict[str, list[float]] = {m: [] for m in passes}
    samples = {}
    for _ in range(args.repeats):
        for method in passes:
            spent, samples[method] = run(method)
            seconds[method].append(spent)
    gap = float((samples["shared"] - samples["separate"]).abs().max())
    if gap > 1e-5:
        raise AssertionError(f"shared and separate passes disagree by {gap:.3g}")
    per_video = {m: statistics.median(s) / len(context) for m, s in seconds.items()}
    case = f"{scale.size}px-{scale.t_in}to{scale.t_out}-members{members}-steps{steps}"
    rows = [
        {
            "case": case,
            "method": method,
            "s_per_video": per_video[method],
            "vs_plain": per_video[method] / per_video["plain"],
            "vs_separate": per_video[method] / per_video["separate"],
            "denoiser_passes": passes[method] / (args.repeats * steps),
            "seconds": seconds[method],
        }
        for method in passes
    ]
    write_results(
        NAME,
        rows,
        args.seed,
        started,
        args.out,
        COLUMNS,
        NOTES + f"\nLargest difference between the shared and separate samples: {gap:.3g}.\n",
        extra={"threads": torch.get_num_threads(), "contexts": len(context)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
