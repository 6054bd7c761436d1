"""What neuraloperator's FNO costs beyond a plain hand-written FNO1d at equal modes and width.

The plain FNO1d is the one of the FNO and BOON reference code: the grid appended as a channel, a
linear lifting, layers of (spectral convolution + 1×1 convolution, GELU between layers), a
projection through 128 hidden channels. The neuralop FNO is built first with neuralop's defaults
(``FNO(n_modes, in, out, hidden, n_layers)``), then with one default changed at a time, in order,
so each row's ratio says what that default costs:

- ``neuralop``: neuralop's defaults (channel MLP in every layer with a soft-gating skip, a
  two-layer lifting through ``2 × hidden`` channels, a two-layer projection through ``2 ×
  hidden``);
- ``neuralop-no-channel-mlp``: ``use_channel_mlp=False``;
- ``neuralop-linear-lifting``: and ``lifting_channel_ratio=0`` (one linear lifting, as the plain);
- ``neuralop-matched``: and ``projection_channel_ratio = 128 / hidden`` (the plain's projection);
- ``lean``, ``lean-matched``: ``neuralop`` and ``neuralop-matched`` with
  ``conv_module=LeanSpectralConv`` (:mod:`physml.models.spectral`: the same layers, weights and
  outputs without neuralop's per-call Python);
- ``toolkit``, ``toolkit-matched``: ``neuralop`` and ``neuralop-matched`` built by
  :func:`physml.models.fast_fno` (lean spectral convolutions, and the 1×1 convolutions of the
  channel MLPs and skips as batched matmuls, :class:`physml.models.spectral.PointwiseConv1d`);
  ``toolkit`` is the FNO of ``benchmarks/boon.py --fno neuralop`` and of the toolkit's other
  tasks;
- ``plain_fno``: :func:`physml.models.plain_fno`, the ``toolkit-matched`` layout with one
  nonlinearity per layer as in the plain FNO1d (neuralop's block without a channel MLP applies
  GELU twice): the same function as the plain FNO1d, built from neuralop's modules; the FNO the
  BOON comparison trains (``physml/tasks/boon/models.py``).

Neither has padding or a factorised weight (the toolkit's FNO uses neuralop's defaults: no domain
padding, dense complex weights), and both skips are linear 1×1 convolutions. Equal modes means
the same Fourier modes kept: neuralop's ``n_modes=(m,)`` keeps the real-FFT modes ``0 … m//2``
(``m//2 + 1`` of them), so the plain FNO1d keeps as many. Two cases: the BOON 1-D budget (65
points, hidden 32, ``n_modes=(16,)``, 4 layers) and the reference code's width and modes (256
points, hidden 64, 16 Fourier modes: ``n_modes=(30,)``, 4 layers). Each is timed at batch 1, 20
and 128, forward in eval mode without gradients and forward + backward of a mean-square loss in
train mode. One torch thread; the plain and the variant alternate call by call; times are thread
CPU time (robust to other processes sharing the cores); ``ratio`` is the median over the pairs of
the variant's time over the plain's.

    python benchmarks/fno_overhead.py          # full run -> results/fno_overhead.{json,md}
    python benchmarks/fno_overhead.py --quick  # smoke run (one case, batch 1, few pairs)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from neuralop.models import FNO
from torch import nn
from torch.nn import functional

from physml.models import LeanSpectralConv, fast_fno, plain_fno

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    arguments,
    paired_ms,
    run_main,
    steady_allocations,
    timed_call,
    write_results,
)

NAME = "fno_overhead"
PROJECTION = 128  # hidden channels of the reference code's projection
CASES = {  # name: (points, hidden, neuralop's n_modes, layers)
    "boon-1d": (65, 32, 16, 4),
    "reference-1d": (256, 64, 30, 4),
}
CALLS = ("forward", "forward-backward")
TIMED = {"forward": "eval-forward", "forward-backward": "train-forward-backward"}


class SpectralConv1d(nn.Module):
    """``irfft(W · rfft(x)[:modes])``: complex weights ``(in, out, modes)``, the others zero."""

    def __init__(self, channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (channels * channels)
        self.weight = nn.Parameter(
            scale * torch.rand(channels, channels, modes, dtype=torch.cfloat)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x)
        out = torch.zeros(
            x.shape[0],
            self.weight.shape[1],
            spectrum.shape[-1],
            dtype=torch.cfloat,
            device=x.device,
        )
        out[..., : self.modes] = torch.einsum(
            "bix,iox->box", spectrum[..., : self.modes], self.weight
        )
        return torch.fft.irfft(out, n=x.shape[-1])


class PlainFNO1d(nn.Module):
    """The reference code's FNO1d on ``(batch, channel, x)``, the grid on ``[0, 1]`` appended."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, modes: int, layers: int):
        super().__init__()
        self.lifting = nn.Linear(in_channels + 1, hidden)
        self.spectral = nn.ModuleList(SpectralConv1d(hidden, modes) for _ in range(layers))
        self.skips = nn.ModuleList(nn.Conv1d(hidden, hidden, 1) for _ in range(layers))
        self.hidden_layer = nn.Linear(hidden, PROJECTION)
        self.output = nn.Linear(PROJECTION, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.linspace(0.0, 1.0, x.shape[-1], device=x.device).expand(x.shape[0], 1, -1)
        x = self.lifting(torch.cat([x, grid], dim=1).transpose(1, 2)).transpose(1, 2)
        for index, (spectral, skip) in enumerate(zip(self.spectral, self.skips, strict=True)):
            x = spectral(x) + skip(x)
            if index < len(self.spectral) - 1:
                x = functional.gelu(x)
        x = functional.gelu(self.hidden_layer(x.transpose(1, 2)))
        return self.output(x).transpose(1, 2)


def variants(hidden: int, modes: int, layers: int) -> dict[str, dict]:
    """neuralop FNO options, cumulative (each ``neuralop-*`` variant changes one more default),
    then the toolkit's and the matched FNO with lean spectral convolutions."""
    common = {"n_modes": (modes,), "in_channels": 1, "out_channels": 1}
    toolkit = {**common, "hidden_channels": hidden, "n_layers": layers}
    no_mlp = {**toolkit, "use_channel_mlp": False}
    linear_lifting = {**no_mlp, "lifting_channel_ratio": 0}
    matched = {**linear_lifting, "projection_channel_ratio": PROJECTION / hidden}
    return {
        "neuralop": toolkit,
        "neuralop-no-channel-mlp": no_mlp,
        "neuralop-linear-lifting": linear_lifting,
        "neuralop-matched": matched,
        "lean": {**toolkit, "conv_module": LeanSpectralConv},
        "lean-matched": {**matched, "conv_module": LeanSpectralConv},
        "toolkit": toolkit,
        "toolkit-matched": matched,
        "plain_fno": matched,
    }


def build(method: str, options: dict) -> nn.Module:
    """The variant's model: ``toolkit*`` through :func:`physml.models.fast_fno`, ``plain_fno``
    through :func:`physml.models.plain_fno`, the others neuralop's ``FNO``."""
    if method == "plain_fno":
        names = ("n_modes", "in_channels", "out_channels", "hidden_channels", "n_layers")
        return plain_fno(**{name: options[name] for name in names})
    if method.startswith("toolkit"):
        return fast_fno(**options)
    return FNO(**options)


def parameters(model: nn.Module) -> int:
    """Real parameters (a complex weight counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    steady_allocations()
    cases = ["boon-1d"] if args.quick else list(CASES)
    batches = (1,) if args.quick else (1, 20, 128)
    rows = []
    for case in cases:
        points, hidden, modes, layers = CASES[case]
        torch.manual_seed(args.seed)
        plain = PlainFNO1d(1, 1, hidden, modes // 2 + 1, layers)
        for method, options in variants(hidden, modes, layers).items():
            torch.manual_seed(args.seed)
            model = build(method, options)
            for batch in batches:
                generator = torch.Generator().manual_seed(args.seed)
                x = torch.randn(batch, 1, points, generator=generator)
                pairs = 3 if args.quick else max(15, 600 // batch)
                for kind in CALLS:
                    plain_ms, ms, ratios = paired_ms(
                        timed_call(plain, x, TIMED[kind]),
                        timed_call(model, x, TIMED[kind]),
                        pairs,
                        time.thread_time,
                    )
                    ratio = statistics.median(ratios)
                    rows.append(
                        {
                            "case": case,
                            "method": method,
                            "call": kind,
                            "batch": batch,
                            "nx": points,
                            "hidden": hidden,
                            "n_modes": modes,
                            "modes": modes // 2 + 1,
                            "layers": layers,
                            "params": parameters(model),
                            "plain_params": parameters(plain),
                            "pairs": pairs,
                            "plain_ms": plain_ms,
                            "fwd_ms": ms,
                            "ratio": ratio,
                            "threads": 1,
                        }
                    )
                    print(f"{case} {method} {kind} batch {batch}: {ratio:.2f}x", flush=True)
    notes = (
        "`plain_ms`, `fwd_ms`: median thread CPU time of one call of the plain FNO1d and of the "
        "neuralop variant (one torch thread); `ratio`: median over `pairs` alternating calls of "
        "the variant's time over the plain's. `params` counts real parameters (complex ones "
        "twice). `n_modes`: neuralop's option; `modes`: the Fourier modes both keep. `neuralop-*` "
        "variants are cumulative; `lean` is `neuralop` and `lean-matched` is `neuralop-matched` "
        "with LeanSpectralConv layers; `toolkit` and `toolkit-matched` are `neuralop` and "
        "`neuralop-matched` through `physml.models.fast_fno` (also the 1×1 convolutions of the "
        "channel MLPs and skips as batched matmuls); `toolkit` is the FNO of `boon.py --fno "
        "neuralop` and the other tasks; `plain_fno` is `physml.models.plain_fno` (one GELU per "
        "layer, as the plain FNO1d), the FNO the BOON comparison trains (see the script's "
        "docstring)."
    )
    target = 1.1
    for case in cases:
        plain_rows = [r for r in rows if r["case"] == case and r["method"] == "plain_fno"]
        worst = max(plain_rows, key=lambda r: r["ratio"])
        verdict = "met" if worst["ratio"] <= target else "NOT met"
        notes += (
            f"\n\n- {case}: `plain_fno` at most {worst['ratio']:.3g}× the plain FNO1d over "
            f"batches {sorted({r['batch'] for r in plain_rows})} and both calls (worst: "
            f"{worst['call']}, batch {worst['batch']}; target <= {target}: {verdict})"
        )
    columns = [
        "case",
        "method",
        "call",
        "batch",
        "nx",
        "hidden",
        "n_modes",
        "modes",
        "params",
        "plain_params",
        "plain_ms",
        "fwd_ms",
        "ratio",
    ]
    write_results(NAME, rows, args.seed, started, args.out, columns, notes, {"threads": 1})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
