"""Where must a mass correction go to beat a uniform one? Correction shapes on forecast ensembles.

An exact mass update moves each member by ``v · (M − ∫u) / ∫v``: the shape ``v`` is a diagonal
covariance. HardC is ``v = 1``; the ensemble-variance update (``probconserv_shrunk``) is
``v = var`` of the members. On the Earthformer and FNO ensembles of
``forecast_conservation.py`` the members' spread does not say where the error is, so this study
asks what any diagonal shape could win there, on the same trained models (the same ``--work``):

* ``gradient``: ``v = 1 + κ |∇ū|² / mean |∇ū|²`` — the variance of a forecast whose fronts are
  misplaced, κ chosen on the validation windows;
* ``ceiling``: ``v`` a step function of (ū, |∇ū|²) in 6 × 6 quantile bins, fitted by least
  squares to the test windows' own errors — no method can know it: what a shape of these two
  features gains when it is told the answer (an in-sample fit of the mean's error, not a bound
  on CRPS: a validation-chosen shape can edge past it);
* ``learned``: ``v`` the output of a small CNN trained (Gaussian likelihood) on the training
  windows' errors of the ensemble mean, from the mean, the last context frame, the lead time
  and the members' spread — the error variance a heteroscedastic forecaster would learn;
* ``oracle``: ``v`` the squared error of the test ensemble's mean, averaged over 9 × 9 pixels —
  the variance a perfectly informative ensemble would carry: the headroom an update that
  follows the spread has over HardC when the spread is right;
* ``shifted-σ`` ensembles: every member also run from a context displaced by a random
  sub-pixel shift of σ pixels (Fourier shift, mass exact), the classic perturbed-initial-
  condition ensemble, with the package's own ``raw``/``hardc``/``probconserv*`` methods.

Two cross-checks against the package: the uniform shape reproduces ``hardc`` and the variance
shape ``probconserv_shrunk`` (to round-off, asserted). ::

    OMP_NUM_THREADS=1 python benchmarks/forecast_correction_shapes.py \
        --work benchmarks/work/forecast_conservation
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK_REMEDY, arguments, run_main, work_folder, write_results  # noqa: E402

from physml import metrics  # noqa: E402
from physml.io import save_figure  # noqa: E402
from physml.tasks import conservation_forecast as blocks  # noqa: E402

NAME = "forecast_correction_shapes"
KAPPAS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)
SHIFTS = (1.0, 2.0)
BINS = 6
TOP = 1.1  # the CRPS ratio figure's upper limit (taller bars are labelled)
COLUMNS = (
    "case",
    "ensemble",
    "method",
    "kappa",
    "crps",
    "crps_fair",
    "crps_vs_hardc",
    "crps_vs_raw",
    "mse_vs_raw",
    "spearman_spread",
    "error_spread_rho",
    "learned_error_rho",
    "spread_skill",
)
NOTES = """
`crps`: the ensemble CRPS per pixel, plain (biased) estimator; `crps_fair` the unbiased one (the
ratios and `kappa`'s choice read `crps`).
`crps_vs_hardc` / `crps_vs_raw` / `mse_vs_raw`: the row's ensemble CRPS (MSE of the mean) over
HardC's and the raw ensemble's of the same `ensemble` (below 1: better). `spearman_spread`:
Spearman's ρ between the mean |correction| per pixel and the raw members' standard deviation
(the issue asks > 0.5); `error_spread_rho` (raw rows): ρ between the mean's |error| and the
members' standard deviation; `learned_error_rho`: ρ between the learned variance and the
mean's |error|. `kappa`: the gradient shape's weight, chosen on the validation
windows (smallest CRPS). `oracle` rows shape the update by the test mean's own squared
error (9 × 9 average): the headroom if the spread were right. `ceiling` rows are fitted on
the test windows themselves (an in-sample least-squares fit to the mean's error: what the
shape gains when told the answer).
"""


def gradient_squared(mean: torch.Tensor) -> torch.Tensor:
    """``|∇ū|²`` per pixel by centred differences on the periodic grid (grid units)."""
    dx = (mean.roll(-1, -1) - mean.roll(1, -1)) / 2
    dy = (mean.roll(-1, -2) - mean.roll(1, -2)) / 2
    return dx**2 + dy**2


def shaped_update(samples: torch.Tensor, known: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Each member of ``samples (M, N, T, 1, H, W)`` moved by ``shape · (known − ∫u) / ∫shape``
    (uniform weights of a periodic grid, so the mean stands for the integral)."""
    frame = (-1, -2, -3)
    defect = known[None, :, :, None, None, None] - samples.mean(frame, keepdim=True)
    return samples + shape * defect / shape.mean(frame, keepdim=True)


def gradient_shape(samples: torch.Tensor, kappa: float) -> torch.Tensor:
    g = gradient_squared(samples.mean(0, keepdim=True))
    return 1.0 + kappa * g / g.mean((-1, -2, -3), keepdim=True).clamp_min(1e-300)


def bin_index(samples: torch.Tensor, edges: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mean = samples.mean(0, keepdim=True)
    features = (mean, gradient_squared(mean))
    a, b = (torch.bucketize(f.contiguous(), e) for f, e in zip(features, edges, strict=True))
    return (a * BINS + b).expand_as(samples)


def ceiling_shape(samples: torch.Tensor, target: torch.Tensor, edges) -> torch.Tensor:
    """The step shape over (ū, |∇ū|²) bins whose correction best fits the errors ``target − u``
    of every member in the least-squares sense, kept positive (a variance)."""
    index = bin_index(samples, edges)
    error = target[None] - samples
    defect = error.mean((-1, -2, -3), keepdim=True).expand_as(error)
    num = torch.zeros(BINS * BINS, dtype=samples.dtype).index_add_(
        0, index.flatten(), (error * defect).flatten()
    )
    den = torch.zeros_like(num).index_add_(0, index.flatten(), (defect * defect).flatten())
    beta = num / den.clamp_min(1e-300)
    return beta.clamp_min(1e-3 * float(beta.abs().max()))[index]


VARIANCE_NET_STEPS = 600


def variance_features(samples: torch.Tensor, context: torch.Tensor, scales: torch.Tensor):
    """Per-frame inputs of the error-variance net ``(N·T, C + 3, H, W)``: the ensemble mean,
    the last context frame (every channel), the lead fraction and the members' spread, each
    channel divided by ``scales`` (tracer first)."""
    mean, spread = samples.mean(0), samples.std(0)
    n, t = mean.shape[:2]
    last = context[:, -1:].expand(n, t, *context.shape[2:]) / scales.reshape(1, 1, -1, 1, 1)
    lead = torch.linspace(0, 1, t, dtype=mean.dtype).reshape(1, t, 1, 1, 1)
    lead = lead.expand(n, t, 1, *mean.shape[-2:])
    frames = torch.cat([mean / scales[0], last, lead, spread / scales[0]], 2)
    return frames.flatten(0, 1).to(torch.float32)


def learned_shape(train: tuple, test: tuple, seed: int, steps: int) -> torch.Tensor:
    """The error variance of the test ensemble's mean ``(1, N, T, 1, H, W)`` by a 3-layer CNN
    fitted to the training windows' errors (Gaussian negative log-likelihood, Adam, ``steps``
    batches of 32 frames); ``train`` / ``test``: ``(samples, windows)``."""
    (t_samples, t_windows), (samples, windows_) = train, test
    context = t_windows.context
    scales = torch.stack([context[:, :, c].abs().max() for c in range(context.shape[2])])
    inputs = variance_features(t_samples, context, scales)
    errors = ((t_windows.target - t_samples.mean(0)) / scales[0]).flatten(0, 1).to(torch.float32)
    torch.manual_seed(seed)
    conv = [inputs.shape[1], 16, 16, 1]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(conv[:-1], conv[1:], strict=True)):
        layers.append(torch.nn.Conv2d(a, b, 5, padding=2, padding_mode="circular"))
        layers += [torch.nn.GELU()] if i < len(conv) - 2 else []
    net = torch.nn.Sequential(*layers)
    optimiser = torch.optim.Adam(net.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(0, inputs.shape[0], (32,), generator=generator)
        log_variance = net(inputs[pick])
        loss = (log_variance + errors[pick] ** 2 / log_variance.exp()).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        found = net(variance_features(samples, windows_.context, scales)).exp()
    return found.to(samples.dtype).reshape(1, *samples.shape[1:])


def oracle_shape(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean's squared error ``(1, N, T, 1, H, W)`` averaged over 9 × 9 periodic pixels."""
    error = (samples.mean(0) - target) ** 2
    flat = error.flatten(0, 2)[:, None]
    smooth = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(flat, (4, 4, 4, 4), mode="circular"), 9, stride=1
    )
    return smooth.reshape(error.shape)[None] + 1e-300


def shifted(context: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``context (N, T, C, H, W)`` displaced per window by a random shift ~ N(0, σ²) pixels in
    each direction (a Fourier phase shift: periodic, mass exact)."""
    n, _, _, h, w = context.shape
    dy, dx = (torch.randn(n, generator=generator, dtype=context.dtype) * sigma for _ in range(2))
    ky = torch.fft.fftfreq(h, dtype=context.dtype)[:, None]
    kx = torch.fft.fftfreq(w, dtype=context.dtype)[None, :]
    phase = torch.exp(
        -2j * math.pi * (kx * dx[:, None, None, None, None] + ky * dy[:, None, None, None, None])
    )
    return torch.fft.ifft2(torch.fft.fft2(context) * phase).real


def mse(samples: torch.Tensor, target: torch.Tensor) -> float:
    return float(metrics.mse(samples.mean(0), target))


def row(case, ensemble, method, samples, raw, hardc, test, extra=None) -> dict:
    """The columns of one (case, ensemble, method)."""
    found = {
        "case": case,
        "ensemble": ensemble,
        "method": method,
        "crps": blocks.mean_crps(samples, test.target),
        "crps_fair": blocks.mean_crps(samples, test.target, fair=True),
        "mse": mse(samples, test.target),
        "spread_skill": metrics.spread_skill(samples, test.target),
        **(extra or {}),
    }
    found["crps_vs_hardc"] = found["crps"] / blocks.mean_crps(hardc, test.target)
    found["crps_vs_raw"] = found["crps"] / blocks.mean_crps(raw, test.target)
    found["mse_vs_raw"] = found["mse"] / mse(raw, test.target)
    if method == "raw":
        found["error_spread_rho"] = blocks.error_spread(raw, test.target)
    else:
        found["spearman_spread"] = blocks.correction_shape(raw, samples)["spearman_spread"]
    return found


def shape_rows(case: str, validation: tuple, test, grid, learned: torch.Tensor) -> list[dict]:
    """Uniform, variance, gradient (κ on validation), learned, ceiling and oracle shapes on one
    plain ensemble; ``validation = (samples, windows)``, ``test`` ``(samples, windows)``,
    ``learned`` the learned variance of the test windows."""
    (v_samples, v_windows), (samples, windows_) = validation, test
    package = {
        m: blocks.constrained(samples, windows_.known_mass, grid, m)[0]
        for m in ("hardc", "probconserv", "probconserv_shrunk")
    }
    uniform = shaped_update(samples, windows_.known_mass, torch.ones_like(samples[:1]))
    variance = shaped_update(samples, windows_.known_mass, samples.var(0, keepdim=True))
    for mine, theirs in ((uniform, "hardc"), (variance, "probconserv_shrunk")):
        gap = float((mine - package[theirs]).abs().max() / samples.abs().max())
        if gap > 1e-9:
            raise AssertionError(f"the {theirs} cross-check is off by {gap:.3g} (relative)")
    scores = {
        k: blocks.mean_crps(
            shaped_update(v_samples, v_windows.known_mass, gradient_shape(v_samples, k)),
            v_windows.target,
        )
        for k in KAPPAS
    }
    kappa = min(scores, key=scores.get)
    gradient = shaped_update(samples, windows_.known_mass, gradient_shape(samples, kappa))
    mean = samples.mean(0)
    quantiles = torch.linspace(0, 1, BINS + 1, dtype=samples.dtype)[1:-1]
    edges = tuple(
        torch.quantile(f.flatten()[:: max(1, f.numel() // 200_000)], quantiles)
        for f in (mean, gradient_squared(mean))
    )
    ceiling = shaped_update(
        samples, windows_.known_mass, ceiling_shape(samples, windows_.target, edges)
    )
    learned_update = shaped_update(samples, windows_.known_mass, learned)
    learned_rho = blocks.frame_spearman(learned[0], (samples.mean(0) - windows_.target).abs())
    oracle = shaped_update(samples, windows_.known_mass, oracle_shape(samples, windows_.target))
    hardc = package["hardc"]
    out = [row(case, "plain", "raw", samples, samples, hardc, windows_)]
    for method, updated, extra in (
        ("hardc", hardc, None),
        ("probconserv", package["probconserv"], None),
        ("probconserv_shrunk", package["probconserv_shrunk"], None),
        ("gradient", gradient, {"kappa": kappa}),
        ("learned", learned_update, {"learned_error_rho": learned_rho}),
        ("ceiling", ceiling, None),
        ("oracle", oracle, None),
    ):
        out.append(row(case, "plain", method, updated, samples, hardc, windows_, extra))
    return out


def shifted_rows(case: str, forecast, context, windows_, grid, sigma, seed) -> list[dict]:
    """The package's methods on a perturbed-context ensemble: each model run from the plain
    context and from one shifted by σ pixels (twice the members)."""
    generator = torch.Generator().manual_seed(seed)
    samples = torch.cat([forecast(context), forecast(shifted(context, sigma, generator))])
    hardc = blocks.constrained(samples, windows_.known_mass, grid, "hardc")[0]
    out = []
    for method in ("raw", "hardc", "probconserv", "probconserv_shrunk"):
        updated = blocks.constrained(samples, windows_.known_mass, grid, method)[0]
        out.append(row(case, f"shifted-{sigma:g}", method, updated, samples, hardc, windows_))
    return out


def forecasters(models: blocks.Forecasters, units: blocks.Units, t_out: int) -> dict:
    """``{model: context (N, T_in, C, H, W) → members (M, N, T_out, 1, H, W)}``."""
    return {
        model: partial(
            blocks.member_forecasts, model, getattr(models, model), t_out=t_out, units=units
        )
        for model in ("earthformer", "fno")
    }


def summary(rows: list[dict]) -> str:
    """One line per case: the best spread-following update and the shapes against HardC."""
    lines = ["", "Per case (CRPS over HardC's on the same ensemble; below 1 beats it):", ""]
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = {(r["ensemble"], r["method"]): r["crps_vs_hardc"] for r in rows if r["case"] == case}
        spread = min(v for (_, m), v in mine.items() if m.startswith("probconserv"))
        shapes = "; ".join(
            f"{m} {mine[('plain', m)]:.3f}" for m in ("gradient", "learned", "ceiling", "oracle")
        )
        lines.append(
            f"- {case}: best spread-following update (any ensemble) {spread:.3f}; {shapes}"
        )
    return "\n".join(lines) + "\n"


def plot_maps(path: Path, maps: dict) -> None:
    """Where the error is and where each shape would put the correction: the ensemble mean's
    |error|, the members' standard deviation, the learned and the oracle standard deviations
    (one window, last lead)."""
    panels = ("error", "spread", "learned", "oracle")
    titles = ("|error| of the mean", "members' std", "learned std", "oracle std (smoothed |error|)")
    figure, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    for ax, key, title in zip(axes, panels, titles, strict=True):
        image = ax.imshow(maps[key].T, origin="lower", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        figure.colorbar(image, ax=ax, fraction=0.046)
    figure.suptitle(f"{maps['case']}: test window 0, last lead", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def plot_ratios(path: Path, rows: list[dict]) -> None:
    """CRPS over HardC's per case for every shape on the plain ensembles (below 1 beats it)."""
    methods = ("probconserv", "probconserv_shrunk", "gradient", "learned", "ceiling", "oracle")
    cases = list(dict.fromkeys(r["case"] for r in rows))
    ratio = {(r["case"], r["method"]): r["crps_vs_hardc"] for r in rows if r["ensemble"] == "plain"}
    figure, ax = plt.subplots(figsize=(9, 4.0))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        heights = [ratio[(case, method)] for case in cases]
        where = [c + i * width for c in range(len(cases))]
        ax.bar(where, heights, width, label=method)
        for x, height in zip(where, heights, strict=True):
            if height > TOP:  # clipped: say how far
                ax.text(x, TOP - 0.004, f"{height:.2f}", rotation=90, ha="center", va="top",
                        fontsize=6, color="white")  # fmt: skip
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, fontsize=8)
    ax.set_ylabel("CRPS / HardC's CRPS")
    ax.set_ylim(0.9, TOP)
    ax.legend(fontsize=7, ncol=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    figure.tight_layout()
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--work", type=Path, default=None, help="forecast_conservation's work")

    args = arguments(__doc__, argv, extra)
    started = time.perf_counter()
    torch.set_num_threads(1)
    scale = blocks.TOY if args.quick else blocks.FULL
    quiet = not sys.stderr.isatty()
    rows, maps = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        work = work_folder(
            args.work,
            scratch,
            args.quick,
            Path("benchmarks/work") / "forecast_conservation",
            blocks.VARIANTS,
        )
        for variant in blocks.VARIANTS:
            split, units, models = blocks.data_and_models(
                variant, scale, work, args.seed, quiet, WORK_REMEDY
            )
            grid = blocks.grid_of(scale)
            forecasts = forecasters(models, units, scale.t_out)
            for model, forecast in forecasts.items():
                case = f"{model}-{variant}"
                validation, test = split["validation"], split["test"]
                test_samples = forecast(test.context)
                train_samples = torch.cat(
                    [forecast(c) for c in split["train"].context.split(64)], 1
                )
                learned = learned_shape(
                    (train_samples, split["train"]),
                    (test_samples, test),
                    args.seed,
                    5 if args.quick else VARIANCE_NET_STEPS,
                )
                rows += shape_rows(
                    case,
                    (forecast(validation.context), validation),
                    (test_samples, test),
                    grid,
                    learned,
                )
                if not maps:  # the first case's first window at the last lead
                    maps.update(
                        case=case,
                        error=(test_samples.mean(0) - test.target)[0, -1, 0].abs(),
                        spread=test_samples.std(0)[0, -1, 0],
                        learned=learned[0, 0, -1, 0].sqrt(),
                        oracle=oracle_shape(test_samples, test.target)[0, 0, -1, 0].sqrt(),
                    )
                for sigma in SHIFTS:
                    rows += shifted_rows(case, forecast, test.context, test, grid, sigma, args.seed)
    plot_maps(args.out / f"{NAME}-maps.png", maps)
    plot_ratios(args.out / f"{NAME}-crps.png", rows)
    write_results(
        NAME,
        rows,
        args.seed,
        started,
        args.out,
        COLUMNS,
        NOTES + summary(rows),
        extra={"threads": torch.get_num_threads(), "kappas": KAPPAS, "bins": BINS},
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
