"""PreDiff with knowledge control on N-body digits, against Earthformer and persistence.

N-body digits (64², 10 → 10 frames) from the energy-conserving generator; every model trains
through :class:`physml.training.Trainer` for a step count fixed in advance from its measured
seconds per step on one thread (:data:`STEP_COST`), so each learned forecaster gets about the
same CPU budget (:data:`BUDGET_S`). Stages, each resumable in ``--work`` (trainings resume from
their checkpoints bitwise; finished evaluations are cached as JSON and skipped):

``data`` (drift, energy and intensity statistics), ``autoencoder`` (reconstruction MSE / SSIM),
``judge`` (energy judge, clean frames, own seed), ``regressor`` (``U_φ(z_t, t)``), ``denoiser``
(PreDiff per ``--denoisers``), ``earthformer`` (the ``earthformer_nbody`` model at 64²), and
``evaluate``: persistence, Earthformer, ``prediff`` per denoiser, a λ sweep of ``prediff-kc``
on validation videos, the best λ on the test set, intensity control and two figures. The
building blocks are :mod:`physml.tasks.prediff`'s (the ``prediff-nbody`` task).

    python benchmarks/prediff_nbody.py --quick                  # smoke (toy sizes, < 1 min)
    OMP_NUM_THREADS=1 python benchmarks/prediff_nbody.py --work benchmarks/work/prediff_nbody
    python benchmarks/prediff_nbody.py --stages denoiser --denoisers cuboid   # one part
    ... --work benchmarks/work/prediff_nbody --reverse   # a second process sharing the sampling
    python benchmarks/prediff_nbody.py --device cuda --work /tmp/prediff   # -> prediff_nbody_gpu

On an accelerator (``--device cuda``) the same steps train and sample there, the judge scores
there, and the results go to ``prediff_nbody_gpu.{json,md}`` beside the CPU run's.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbody_forecasting  # noqa: E402
from common import (  # noqa: E402
    arguments,
    check_same_setup,
    device_arg,
    drawn_setup,
    names_arg,
    run_main,
    work_folder,
    write_results,
)

from physml.io import atomic_write_text  # noqa: E402
from physml.models.baselines import count_parameters  # noqa: E402
from physml.models.prediff import reconstruction_scores  # noqa: E402
from physml.tasks import prediff as blocks  # noqa: E402

NAME = "prediff_nbody"
STAGES = ("data", "autoencoder", "judge", "regressor", "denoiser", "earthformer", "evaluate")

STEP_COST = {
    "autoencoder": 0.8,
    "conv": 0.3,
    "cuboid": 3.3,
    "earthformer": 1.22,
    "judge": 0.155,
    "regressor": 0.015,
}
"""Measured CPU seconds per training step on one thread at the full scale's batches (autoencoder
16 frames, denoisers 32, Earthformer 16, judge and regressor 32)."""

BUDGET_S = 3600.0
"""CPU seconds of training per forecaster (conv / cuboid PreDiff, Earthformer)."""


def results_name(device: str) -> str:
    """``prediff_nbody`` for a CPU run, ``prediff_nbody_gpu`` for one on an accelerator."""
    return NAME if device == "cpu" else f"{NAME}_gpu"


def steps(model: str, seconds: float = BUDGET_S) -> int:
    return max(1, round(seconds / STEP_COST[model]))


FULL = blocks.Scale(
    size=64,
    t_in=10,
    t_out=10,
    train=2048,
    validation=64,
    test=256,
    latent_channels=4,
    downsample=4,
    autoencoder_width=16,
    autoencoder_steps=steps("autoencoder", 2400.0),
    autoencoder_batch=16,
    conv=dict(widths=(48, 96, 96)),
    cuboid=dict(dim=64, depth=(2, 2), num_heads=4, patch=2),
    denoiser_steps={"conv": steps("conv"), "cuboid": steps("cuboid")},
    denoiser_batch=32,
    regressor_hidden=32,
    regressor_steps=steps("regressor", 60.0),
    judge_hidden=16,
    judge_depth=3,
    judge_steps=steps("judge", 600.0),
    batch=32,
    lr=1e-3,
    members=8,
    contexts=256,
    sweep_members=4,
    sweep_contexts=64,
    intensity_members=4,
    intensity_contexts=64,
    ddim_steps=20,
    lambdas=(0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4),
    intensity_lambdas=(1.0, 10.0, 100.0, 1e3, 1e4, 1e5),
    extra={"earthformer_steps": steps("earthformer"), "earthformer_batch": 16},
)
QUICK = replace(
    blocks.TOY,
    extra={"earthformer_steps": 4, "earthformer_batch": 8},
    denoiser_steps={"conv": 20, "cuboid": 4},
)
"""Toy sizes: a smoke run of every stage."""
SCALES = {"quick": QUICK, "full": FULL}
GUIDES = {
    "quick": blocks.GuideSize(window=3, hidden=4, depth=2, steps=5, lambdas=(0.3,)),
    "full": blocks.GuideSize(
        window=5, hidden=24, depth=4, steps=2000, lambdas=(0.1, 0.3, 0.5, 1.0)
    ),
}
"""The frame-space energy regressor that guides sampling (its own shape and seed; the judge is
a window of 3, 16 channels, depth 3)."""


class OnDevice(nn.Module):
    """``module`` on ``device`` behind a CPU interface: inputs go there, outputs come back."""

    def __init__(self, module: nn.Module, device: str) -> None:
        super().__init__()
        self.module, self.device = module.to(device), device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.device)).cpu()


class Stages:
    """The work folder: each stage's cached JSON (checked against the run's setup, with its seed
    scheme as :func:`~common.drawn_setup` names it, by :func:`~common.check_same_setup`), named
    ``prefix`` + its key. ``ledger`` records what this process did with each stage (by that
    name): ``None`` computed it, a number read it (the time the file was written, by an earlier
    run or a concurrent one)."""

    def __init__(
        self,
        work: Path,
        setup: dict,
        ledger: dict[str, float | None] | None = None,
        prefix: str = "",
    ) -> None:
        self.work = work
        self.setup = json.loads(json.dumps(drawn_setup(setup)))  # as saved: tuples become lists
        self.ledger = {} if ledger is None else ledger
        self.prefix = prefix
        work.mkdir(parents=True, exist_ok=True)

    def derived(self, prefix: str = "", **more: object) -> Stages:
        """The same folder with more settings in the setup (and ``prefix`` added before its
        stages' names), sharing the ledger."""
        return Stages(self.work, {**self.setup, **more}, self.ledger, self.prefix + prefix)

    def name(self, key: str) -> str:
        return self.prefix + key

    def path(self, key: str) -> Path:
        return self.work / f"{self.name(key)}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        check_same_setup(path, saved["setup"], self.setup)
        self.ledger.setdefault(self.name(key), path.stat().st_mtime)
        return saved["result"]

    def put(self, key: str, result: dict) -> dict:
        text = json.dumps({"setup": self.setup, "result": result}, indent=1) + "\n"
        atomic_write_text(self.path(key), text)
        self.ledger[self.name(key)] = None
        return result

    def cached(self, key: str, compute) -> dict:
        found = self.get(key)
        return found if found is not None else self.put(key, compute())


def kc_stages(stages: Stages, kc_denoiser: str) -> Stages:
    """The stages of knowledge control, which sample the ``kc_denoiser`` (the validation
    reference, both guidances' λ sweeps and test rows, intensity): the denoiser in their setup
    and in their names (``kc-conv-sweep-1``), so a run with another ``--kc-denoiser`` on the same
    ``--work`` computes its own (and its own sampling chunks) while reading back the stages that
    do not depend on it (data, trainings, the plain rows)."""
    return stages.derived(prefix=f"kc-{kc_denoiser}-", kc_denoiser=kc_denoiser)


def trained(stages: Stages, key: str, train) -> tuple[torch.nn.Module, dict]:
    """Run (or resume, or reload at its last step) a training; its cost is cached on the
    first run that finishes it. An unknown ``train_s`` (NaN: a reload that found no cost
    record) is cached as ``null``, so that the stage stays strict JSON, and read back as NaN."""
    result = train()
    seconds = result.train_s if math.isfinite(result.train_s) else None
    cost = stages.cached(
        f"train-{key}",
        lambda: {"steps": result.steps, "train_s": seconds, "final_loss": result.final_loss},
    )
    return result.model, {
        **cost,
        "train_s": math.nan if cost["train_s"] is None else cost["train_s"],
    }


def earthformer_model(scale: blocks.Scale, seed: int) -> torch.nn.Module:
    """The Earthformer of ``earthformer_nbody`` (8 global vectors, clamped head, from
    :func:`nbody_forecasting.build`) at this scale."""
    sizes = replace(
        nbody_forecasting.SCALES["quick" if scale.size < 64 else "full"],
        size=scale.size,
        t_in=scale.t_in,
        t_out=scale.t_out,
    )
    return nbody_forecasting.build("earthformer", sizes, seed)


def earthformer_loss(model, batch) -> torch.Tensor:
    x, y = batch
    return nbody_forecasting.training_loss(model(x), y)


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--work", type=Path, default=None, help="checkpoints and cached stages")
        parser.add_argument(
            "--stages", type=names_arg(STAGES), default=",".join(STAGES),
            help="comma-separated stages",
        )  # fmt: skip
        parser.add_argument(
            "--denoisers", type=names_arg(blocks.DENOISERS), default=",".join(blocks.DENOISERS)
        )
        parser.add_argument("--kc-denoiser", default="conv", choices=blocks.DENOISERS)
        parser.add_argument(
            "--reverse",
            action="store_true",
            help="a second process on the same --work shares the evaluation with the first: the "
            "frame guide first (λ and sampling chunks last first), then intensity, the latent "
            "sweep and the plain rows",
        )
        parser.add_argument(
            "--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:N"
        )

    args = arguments(__doc__, argv, extra)
    started = time.perf_counter()
    device = args.device
    if device == "cpu":
        torch.set_num_threads(1)
    stages_asked, denoisers = args.stages, args.denoisers
    mode = "quick" if args.quick else "full"
    scale, seed, quiet = SCALES[mode], args.seed, not sys.stderr.isatty()
    with tempfile.TemporaryDirectory() as scratch:
        work = work_folder(
            args.work, scratch, args.quick, Path("benchmarks/work") / NAME, ("data.json",)
        )
        where = {} if device == "cpu" else {"device": device}
        stages = Stages(work, {"mode": mode, "seed": seed, "scale": scale.setup(), **where})
        rows = run(
            scale, seed, quiet, stages, stages_asked, denoisers, args.kc_denoiser, args.out,
            args.reverse, device,
        )  # fmt: skip
        if "evaluate" in stages_asked:
            write(rows, scale, seed, started, args.out, stages, device)
    return 0


def run(
    scale, seed, quiet, stages, asked, denoisers, kc_denoiser, out, reverse, device="cpu"
) -> list[dict]:
    work = stages.work
    data = blocks.videos(scale, seed)
    test_x, test_y = data["test"].split(scale.t_in)
    energy0 = blocks.context_energy(data["test"], scale.t_in)
    intensity = blocks.mean_intensity(test_y)

    def data_stats() -> dict:
        energy = data["train"].energy
        return {
            "drift_max": max(blocks.energy_drift(part) for part in data.values()),
            "energy_mean": float(energy.mean()),
            "energy_std": float(energy.std()),
            "intensity_mean": float(intensity.mean()),
            "intensity_std": float(intensity.std()),
        }

    stats = stages.cached("data", data_stats)
    print(f"data: {stats}", flush=True)
    if asked == ["data"]:
        return []

    def need(stage: str) -> bool:
        return stage in asked or "evaluate" in asked

    autoencoder, ae_cost = trained(
        stages,
        "autoencoder",
        lambda: blocks.train_autoencoder(
            scale, data["train"], work / "autoencoder", seed, quiet, device
        ),
    )
    recon = stages.cached(
        "autoencoder-scores",
        lambda: reconstruction_scores(autoencoder, test_y, batch=8),
    )
    print(f"autoencoder: {recon} {ae_cost}", flush=True)
    judge = floor = floor_se = floor_per_lead = None
    if need("judge"):
        judge, _ = trained(
            stages,
            "judge",
            lambda: blocks.train_judge(scale, data["train"], work / "judge", seed, quiet, device),
        )
        judge = judge if device == "cpu" else OnDevice(judge, device)
        floor, floor_se, floor_per_lead = blocks.judge_error(judge, test_y, energy0, seed)
        print(f"judge floor {floor:.4g} ± {floor_se:.2g}", flush=True)

    models: dict[str, tuple] = {}
    latents = first = None
    for kind in denoisers if need("denoiser") or need("regressor") else []:
        prediff = blocks.build_prediff(scale, kind, autoencoder, seed).to(device)
        if first is None:  # the denoisers share the autoencoder, so its latents too
            first, latents = blocks.calibrated(prediff, data["train"], scale.t_in)
        else:
            prediff.latent_mean.copy_(first.latent_mean)
            prediff.latent_std.copy_(first.latent_std)
        if need("denoiser"):
            models[kind] = trained(
                stages,
                f"denoiser-{kind}",
                lambda prediff=prediff, kind=kind, latents=latents: blocks.train_denoiser(
                    scale, prediff, latents, kind, work / f"denoiser-{kind}", seed, quiet, device
                ),
            )
    regressor = None
    if need("regressor") and latents is not None:
        regressor, _ = trained(
            stages,
            "regressor",
            lambda: blocks.train_regressor(
                scale, first, latents, data["train"], work / "regressor", seed, quiet, device
            ),
        )
    earthformer = None
    if need("earthformer"):
        model = earthformer_model(scale, seed)
        earthformer = trained(
            stages,
            "earthformer",
            lambda: blocks.fit(
                model,
                earthformer_loss,
                blocks.forecast_pairs(data["train"], scale.t_in),
                scale.extra["earthformer_steps"],
                scale.extra["earthformer_batch"],
                scale.lr,
                seed,
                work / "earthformer",
                quiet,
                device=device,
            ),
        )
    if "evaluate" not in asked:
        return []
    return evaluate(
        scale,
        seed,
        stages,
        data,
        models,
        regressor,
        judge,
        earthformer,
        kc_denoiser,
        (floor, floor_se, floor_per_lead),
        recon,
        ae_cost,
        stats,
        out,
        reverse,
        device,
    )


LATENT = "latent regressor"
FRAMES = "frame regressor"


def chunk_folder(stages: Stages, name: str) -> Path:
    """Where a long sampling stage keeps its chunks, named by the stage and its setup (so a
    changed setup never reads another's chunks)."""
    digest = hashlib.sha1(json.dumps(stages.setup, sort_keys=True).encode()).hexdigest()[:12]
    return stages.work / "chunks" / f"{name}-{digest}"


def frame_guided(
    scale,
    seed,
    stages,
    data,
    prediff,
    cost,
    judge,
    floor,
    reference,
    case,
    kc_denoiser,
    reverse,
    device="cpu",
) -> tuple[torch.nn.Module, list[dict], dict, dict]:
    """Knowledge control by a frame-space energy regressor (the guide, trained here; never the
    judge): its λ sweep on the validation videos against ``reference`` (unguided, same videos)
    and the chosen λ on the test videos. Returns the guide, its rows, the test row and the
    chosen λ's validation row. ``reverse``: λ and sampling chunks last first (``--reverse``)."""
    guide_size = GUIDES["full" if scale == FULL else "quick"]
    shape = {k: v for k, v in asdict(guide_size).items() if k != "lambdas"}
    own = kc_stages(stages, kc_denoiser).derived(guide=asdict(guide_size))
    guide, _ = trained(
        stages.derived(guide=shape),  # training: not the λ sweep's
        "guide",
        lambda: blocks.train_guide(
            scale,
            guide_size,
            data["train"],
            stages.work / "guide",
            seed,
            not sys.stderr.isatty(),
            device,
        ),
    )
    val_x, val_y = data["validation"].split(scale.t_in)
    val_energy0 = blocks.context_energy(data["validation"], scale.t_in)
    energy0 = blocks.context_energy(data["test"], scale.t_in)
    n_sweep, m_sweep, ddim = scale.sweep_contexts, scale.sweep_members, scale.ddim_steps
    found = {}
    for lam in reversed(guide_size.lambdas) if reverse else guide_size.lambdas:

        def guided(lam=lam) -> dict:
            control = blocks.frame_energy_control(guide, val_energy0[:n_sweep], lam)
            forecast = blocks.controlled_sample(
                prediff, control, val_x[:n_sweep], val_energy0[:n_sweep], m_sweep, ddim, seed,
                scale.sample_batch, keep=chunk_folder(own, f"sweep-frames-{lam:g}"),
                reverse=reverse,
            )  # fmt: skip
            return {
                "lambda": lam,
                **blocks.evaluate_ensemble(
                    forecast, val_y[:n_sweep], val_energy0[:n_sweep], judge, floor, seed
                ),
            }

        found[lam] = own.cached(f"sweep-frames-{lam:g}", guided)
        print(f"frame sweep λ={lam:g}: energy_error {found[lam]['energy_error']:.4g}", flush=True)
    sweep = [found[lam] for lam in guide_size.lambdas]
    rows = [
        {
            "case": "lambda-sweep",
            "method": "prediff-kc",
            "denoiser": kc_denoiser,
            "guidance": FRAMES,
            "members": m_sweep,
            **row,
        }
        for row in sweep
    ]
    chosen = blocks.best_lambda(sweep, reference)
    best = chosen["lambda"]
    n_eval, members = scale.contexts, scale.members

    tested = own.cached(
        "eval-prediff-kc-frames",
        lambda: test_row(
            prediff, blocks.frame_energy_control(guide, energy0[:n_eval], best), best, cost,
            data, judge, floor, scale, seed, chunk_folder(own, f"eval-prediff-kc-frames-{best:g}"),
            reverse,
        ),
    )  # fmt: skip
    rows.append(
        {
            "case": case,
            "method": "prediff-kc",
            "denoiser": kc_denoiser,
            "guidance": FRAMES,
            "members": members,
            **tested,
        }
    )
    return guide, rows, tested, chosen


def chosen_guidance(candidates: dict[str, tuple[dict, dict]], reference: dict) -> tuple[str, dict]:
    """The guidance the done-when checks read, chosen on validation videos like each one's λ:
    ``candidates`` maps each guidance to its chosen λ's validation sweep row and its test row;
    the λ rule (:func:`physml.tasks.prediff.best_lambda`) against ``reference`` (unguided, the
    same validation videos) picks among the validation rows (the first on a tie). Returns the
    guidance's name and its test row."""
    names = list(candidates)
    best = blocks.best_lambda([candidates[name][0] for name in names], reference)
    name = next(name for name in names if candidates[name][0] is best)
    return name, candidates[name][1]


def test_row(
    prediff, control, lam, cost, data, judge, floor, scale, seed, keep=None, reverse=False
) -> dict:
    """A knowledge-controlled row on the test videos: ``contexts`` × ``members`` samples of
    ``constrain(prediff, control)`` toward each context's energy, scored by the judge."""
    test_x, test_y = data["test"].split(scale.t_in)
    energy0 = blocks.context_energy(data["test"], scale.t_in)
    n = scale.contexts
    forecast = blocks.controlled_sample(
        prediff, control, test_x[:n], energy0[:n], scale.members, scale.ddim_steps, seed,
        scale.sample_batch, keep=keep, reverse=reverse,
    )  # fmt: skip
    scores = blocks.evaluate_ensemble(forecast, test_y[:n], energy0[:n], judge, floor, seed)
    return {"lambda": lam, **cost, **scores}


def evaluate(
    scale,
    seed,
    stages,
    data,
    models,
    regressor,
    judge,
    earthformer,
    kc_denoiser,
    floor_info,
    recon,
    ae_cost,
    stats,
    out,
    reverse=False,
    device="cpu",
) -> list[dict]:
    floor, floor_se, floor_per_lead = floor_info
    test_x, test_y = data["test"].split(scale.t_in)
    val_x, val_y = data["validation"].split(scale.t_in)
    energy0 = blocks.context_energy(data["test"], scale.t_in)
    val_energy0 = blocks.context_energy(data["validation"], scale.t_in)
    case = f"nbody-{scale.size}px-{scale.t_in}to{scale.t_out}"
    n_eval, members, ddim = scale.contexts, scale.members, scale.ddim_steps
    batch = scale.sample_batch
    rows = [
        {
            "case": "autoencoder",
            "method": "autoencoder",
            **ae_cost,
            "mse": recon["frame_mse"],
            "mse_pixel": recon["mse"],
            "ssim": recon["ssim"],
        },
        {
            "case": case,
            "method": "judge",
            "energy_error": floor,
            "energy_error_se": floor_se,
            "judge_floor": floor,
        },
    ]

    def persistence() -> dict:
        started = time.perf_counter()
        prediction = test_x[:, -1:].repeat(1, scale.t_out, 1, 1, 1)
        seconds = time.perf_counter() - started
        return blocks.evaluate_deterministic(
            prediction, test_y, energy0, judge, floor, seconds, seed
        )

    rows.append(
        {"case": case, "method": "persistence", **stages.cached("eval-persistence", persistence)}
    )

    if earthformer is not None:
        model, cost = earthformer

        def score_earthformer() -> dict:
            model.eval()
            started = time.perf_counter()
            with torch.no_grad():
                prediction = torch.cat([model(x.to(device)).cpu() for x in test_x.split(16)])
            seconds = time.perf_counter() - started
            return {
                "params": count_parameters(model),
                **cost,
                **blocks.evaluate_deterministic(
                    prediction, test_y, energy0, judge, floor, seconds, seed
                ),
            }

        rows.append(
            {
                "case": case,
                "method": "earthformer",
                **stages.cached("eval-earthformer", score_earthformer),
            }
        )

    plain_rows = {}
    for kind, (prediff, cost) in () if reverse else models.items():  # --reverse: at the end

        def score_prediff(prediff=prediff, cost=cost) -> dict:
            forecast = blocks.sample(prediff, test_x[:n_eval], members, ddim, seed, batch)
            scores = blocks.evaluate_ensemble(
                forecast, test_y[:n_eval], energy0[:n_eval], judge, floor, seed
            )
            return {"params": count_parameters(prediff.denoiser), **cost, **scores}

        plain_rows[kind] = stages.cached(f"eval-prediff-{kind}", score_prediff)
        rows.append(
            {
                "case": case,
                "method": "prediff",
                "denoiser": kind,
                "members": members,
                **plain_rows[kind],
            }
        )
        print(
            f"prediff {kind}: mse {plain_rows[kind]['mse']:.4g} energy_error "
            f"{plain_rows[kind]['energy_error']:.4g}",
            flush=True,
        )

    if kc_denoiser not in models or regressor is None:
        return rows
    prediff, cost = models[kc_denoiser]
    kc = kc_stages(stages, kc_denoiser)
    n_sweep, m_sweep = scale.sweep_contexts, scale.sweep_members
    sweep_x, sweep_y, sweep_e0 = val_x[:n_sweep], val_y[:n_sweep], val_energy0[:n_sweep]

    def reference() -> dict:
        return kc.cached(
            "sweep-reference",
            lambda: blocks.evaluate_ensemble(
                blocks.sample(prediff, sweep_x, m_sweep, ddim, seed, batch),
                sweep_y,
                sweep_e0,
                judge,
                floor,
                seed,
            ),
        )

    def latent_part() -> tuple[list[dict], dict, dict]:
        """The latent regressor's λ sweep on validation videos and its chosen λ on test: the
        rows, the test row and the chosen λ's validation row."""
        part = [
            {
                "case": "lambda-sweep",
                "method": "prediff",
                "denoiser": kc_denoiser,
                "lambda": 0.0,
                "members": m_sweep,
                **reference(),
            }
        ]
        sweep = []
        for lam in scale.lambdas:

            def guided(lam=lam) -> dict:
                control = blocks.energy_control(regressor, sweep_e0, lam)
                forecast = blocks.controlled_sample(
                    prediff, control, sweep_x, sweep_e0, m_sweep, ddim, seed, batch
                )
                return {
                    "lambda": lam,
                    **blocks.evaluate_ensemble(forecast, sweep_y, sweep_e0, judge, floor, seed),
                }

            sweep.append(kc.cached(f"sweep-{lam:g}", guided))
            part.append(
                {
                    "case": "lambda-sweep",
                    "method": "prediff-kc",
                    "denoiser": kc_denoiser,
                    "guidance": LATENT,
                    "members": m_sweep,
                    **sweep[-1],
                }
            )
            print(
                f"sweep λ={lam:g}: energy_error {sweep[-1]['energy_error']:.4g} "
                f"mse {sweep[-1]['mse']:.4g}",
                flush=True,
            )
        chosen_latent = blocks.best_lambda(sweep, reference())
        best_latent = chosen_latent["lambda"]
        controlled = kc.cached(
            "eval-prediff-kc",
            lambda: test_row(
                prediff, blocks.energy_control(regressor, energy0[:n_eval], best_latent),
                best_latent, cost, data, judge, floor, scale, seed,
            ),
        )  # fmt: skip
        part.append(
            {
                "case": case,
                "method": "prediff-kc",
                "denoiser": kc_denoiser,
                "guidance": LATENT,
                "members": members,
                **controlled,
            }
        )
        return part, controlled, chosen_latent

    # Intensity: the λ of a small sweep at n = 2 on validation videos, then every n on test.
    mu_sigma = (stats["intensity_mean"], stats["intensity_std"])
    n_int = scale.intensity_contexts

    def intensity_part() -> list[dict]:
        def intensity_sweep() -> dict:
            misses = {}
            lams = scale.intensity_lambdas
            for lam in reversed(lams) if reverse else lams:
                got = blocks.intensity_rows(
                    prediff, val_x[: max(2, n_int // 4)], mu_sigma,
                    replace(scale, intensity_n=(2,)), lam, seed,
                    keep=chunk_folder(kc, "intensity-sweep"), reverse=reverse,
                )  # fmt: skip
                misses[str(lam)] = next(r["miss_sigma"] for r in got if r["method"] == "prediff-kc")
            return {str(lam): misses[str(lam)] for lam in lams}

        misses = kc.cached("intensity-sweep", intensity_sweep)
        lam_int = float(min(misses, key=misses.get))
        return kc.cached(
            "intensity",
            lambda: {
                "rows": blocks.intensity_rows(
                    prediff,
                    test_x[:n_int],
                    mu_sigma,
                    scale,
                    lam_int,
                    seed,
                    keep=chunk_folder(kc, "intensity"),
                    reverse=reverse,
                )  # fmt: skip
            },
        )["rows"]

    def frames_part() -> tuple[torch.nn.Module, list[dict], dict, dict]:
        return frame_guided(
            scale, seed, stages, data, prediff, cost, judge, floor, reference(), case,
            kc_denoiser, reverse, device,
        )  # fmt: skip

    # Two processes on one --work share the work: the second (--reverse) takes the frame guide
    # first, then intensity, then the latent sweep, each with its λ, n and sampling chunks last
    # first, so the two meet in the middle of the frame guide's chunks and of intensity's.
    parts = {"latent": latent_part, "frames": frames_part, "intensity": intensity_part}
    order = ("frames", "intensity", "latent") if reverse else ("latent", "frames", "intensity")
    done = {name: parts[name]() for name in order}
    if reverse:  # the plain rows of the other denoisers, last
        return evaluate(
            scale, seed, stages, data, models, regressor, judge, earthformer, kc_denoiser,
            floor_info, recon, ae_cost, stats, out, False, device,
        )  # fmt: skip
    latent_rows, controlled, latent_validation = done["latent"]
    guide, frame_rows, framed, frames_validation = done["frames"]
    intensity = done["intensity"]
    rows += latent_rows + frame_rows
    plain = plain_rows[kc_denoiser]
    chosen, best_row = chosen_guidance(  # on validation, as each guidance's λ
        {LATENT: (latent_validation, controlled), FRAMES: (frames_validation, framed)},
        reference(),
    )
    best = best_row["lambda"]

    def control_for(target: torch.Tensor):
        if chosen == LATENT:
            return blocks.energy_control(regressor, target, best)
        return blocks.frame_energy_control(guide, target, best)

    for row in intensity:
        rows.append({**row, "denoiser": kc_denoiser, "members": scale.intensity_members})

    # Figures from a fresh draw for the first test video (cheap: one context).
    shown = min(2, members)
    plain_one = blocks.sample(prediff, test_x[:1], max(2, shown), ddim, seed, batch).samples
    control = control_for(energy0[:1])
    kc_one = blocks.controlled_sample(
        prediff, control, test_x[:1], energy0[:1], max(2, shown), ddim, seed, batch
    ).samples
    out.mkdir(parents=True, exist_ok=True)
    blocks.plot_strip(
        out / f"{results_name(device)}-strip.png",
        test_x[0],
        test_y[0],
        plain_one[:shown, 0],
        kc_one[:shown, 0],
        best,
    )
    with torch.no_grad():
        one = {
            "truth": judge(test_y[:1])[0],
            "PreDiff": judge(plain_one[:, 0]),
            "PreDiff-KC": judge(kc_one[:, 0]),
        }
    blocks.plot_energy(
        out / f"{results_name(device)}-energy.png",
        {
            "PreDiff": plain_rows[kc_denoiser]["energy_per_lead"],
            "PreDiff-KC": best_row["energy_per_lead"],
        },
        floor_per_lead,
        one,
        float(energy0[0]),
    )
    checks = blocks.done_when(plain, best_row, intensity)
    for what, value, target, met in checks:
        print(
            f"done-when {what}: {value:.4g} (target {target}) {'MET' if met else 'NOT MET'}",
            flush=True,
        )
    rows.append(
        {
            "case": "done-when",
            "method": "checks",
            "checks": [{"what": w, "value": v, "target": t, "met": m} for w, v, t, m in checks],
        }
    )
    return rows


COLUMNS = [
    "case",
    "method",
    "denoiser",
    "guidance",
    "lambda",
    "members",
    "n",
    "asked",
    "achieved",
    "mse",
    "mse_member",
    "mae",
    "ssim",
    "ssim_member",
    "crps",
    "crps_fair",
    "spread_skill",
    "energy_error",
    "energy_error_se",
    "judge_floor",
    "train_s",
    "fwd_ms",
    "steps",
]

NOTES = """
Data: N-body digits {size}×{size}, {t_in} → {t_out} frames, the energy-conserving generator
(leapfrog, 8 substeps, no velocity clip; largest energy drift over a video {drift:.2%}),
{train} training videos (train handwriting), {validation} validation videos (λ sweeps) and
{test} test videos (disjoint handwriting). Energies: mean {energy_mean:.3g}, std
{energy_std:.3g} (pixels²/step²). `mse` / `mae` / `crps*` are summed over a frame's pixels
([0, 1] scale) and averaged over frames and videos; `mse`, `mae`, `ssim` score the ensemble mean,
`*_member` one member. `crps` is the ensemble CRPS, plain (biased) estimator (the MAE for one
member), `crps_fair` the unbiased one (NaN for one member);
`spread_skill` = √((M+1)/M · mean member variance) / RMSE of the mean. `energy_error` =
mean over target frames of |E_judge(x̂_t) − E₀| (E₀ the simulator's energy of the context, mean
over its frames), averaged over members and videos, `energy_error_se` a bootstrap over videos;
`judge_floor` is the judge's error on the true target frames. `train_s` is CPU seconds of one
thread; {steps}. `fwd_ms` is sampling wall time per context (all members). DDIM {ddim} steps, η = 1.
Knowledge control uses the `{kc}` denoiser, guided either by the latent regressor U_φ(z_t, t)
(`guidance` = latent regressor) or by a frame-space energy regressor of its own shape and seed
(window {guide_window}, {guide_hidden} channels, depth {guide_depth}, {guide_steps} steps; never
the judge) read on the decoded denoised frames of every step with the normalised step
(`guidance` = frame regressor); λ chosen on validation videos (the smallest energy error with
MSE ≤ 1.02× and SSIM ≥ −0.01 of unguided PreDiff on the same videos), and the done-when checks
read the test row of the guidance whose chosen λ is the better on validation by the same rule.
Intensity rows: the mean target intensity asked μ + nσ (μ = {intensity_mean:.4g}, σ =
{intensity_std:.3g} over the test targets), λ chosen at n = 2 on validation videos; `miss_sigma`
in the JSON.

Done-when checks:

{checks}
"""


ON_DEVICE = """
This run trained, sampled and judged on one {device}, at the CPU run's step counts and sizes:
`train_s` and `fwd_ms` are wall seconds there, not CPU seconds; the models are the CPU run's in
every setting, retrained from the same seed (the numbers differ by the device's arithmetic).
"""


def steps_note(scale: blocks.Scale) -> str:
    """How the notes say the training steps were chosen: from :data:`STEP_COST` for
    :data:`BUDGET_S` at the full scale, by the scale itself otherwise (``--quick``)."""
    if scale == FULL:
        return (
            f"steps were fixed from measured s/step ({STEP_COST}) for a budget of "
            f"{BUDGET_S:.0f} CPU-s per forecaster"
        )
    return "steps were fixed by the scale (the `*_steps` of `setup` in the JSON), not by a budget"


def cached_stages(ledger: dict[str, float | None]) -> str:
    """The stages this run read from ``--work`` rather than computed, with the time each was
    written (the wall time above covers only what this run computed)."""
    older = sorted((mtime, key) for key, mtime in ledger.items() if mtime is not None)
    if not older:
        return "Every stage was computed by this run."
    when = ", ".join(
        f"{key} ({datetime.fromtimestamp(mtime, timezone.utc):%Y-%m-%d %H:%M})"
        for mtime, key in older
    )
    return (
        "Stages read from `--work`, written by earlier or concurrent runs of this benchmark on "
        f"the same folder (stage subsets, or a second process with `--reverse`) (UTC): {when}. "
        "Sampling chunks under `chunks/` may likewise come from the second process. Training "
        "costs are the `train_s` column."
    )


def write(rows, scale, seed, started, out, stages, device="cpu") -> None:
    work = stages.work
    stats = json.loads((work / "data.json").read_text())["result"]
    checks = next((r["checks"] for r in rows if r["case"] == "done-when"), [])
    table = (
        "\n".join(
            f"- {c['what']}: {c['value']:.4g} (target {c['target']}): "
            + ("met" if c["met"] else "NOT met")
            for c in checks
        )
        or "- not reached (a stage missing)"
    )
    kc = next((r.get("denoiser") for r in rows if r["method"] == "prediff-kc"), "-")
    notes = NOTES.format(
        **scale.setup(),
        drift=stats["drift_max"],
        energy_mean=stats["energy_mean"],
        energy_std=stats["energy_std"],
        intensity_mean=stats["intensity_mean"],
        intensity_std=stats["intensity_std"],
        steps=steps_note(scale),
        ddim=scale.ddim_steps,
        kc=kc,
        checks=table,
        **{
            f"guide_{k}": v for k, v in asdict(GUIDES["full" if scale == FULL else "quick"]).items()
        },
    )
    if device != "cpu":
        notes += ON_DEVICE.format(device=torch.cuda.get_device_name(device))
    notes += "\n" + cached_stages(stages.ledger) + "\n"
    extra = {"threads": torch.get_num_threads(), "setup": scale.setup(), "data": stats}
    extra["device"] = device
    write_results(results_name(device), rows, seed, started, out, COLUMNS, notes, extra)


if __name__ == "__main__":
    sys.exit(run_main(main))
