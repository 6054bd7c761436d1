"""PreDiff with knowledge control on N-body digits: energy kept, intensity asked for.

Data: N-body digit videos (:func:`physml.data.nbody_digits`) with the energy-conserving generator
(:data:`~physml.data.nbody.ENERGY_CONSERVING`), lengths scaled to the frame size
(:func:`generator_settings`); ``T_in`` context frames → ``T_out`` target frames; every frame
carries the simulator's energy. Models, each trained by :class:`physml.training.Trainer` into its
own folder (a rerun resumes): the frame autoencoder, PreDiff's denoiser on its latents (EMA), the
frame-space energy regressor that guides (clean frames, its own seed), the energy judge (clean
frames only, its own seed; never guides) and, for the benchmark only, the article's knowledge
regressor ``U_φ(z_t, t)`` (the target frames' mean energy from noisy target latents). The task's
PreDiff-KC is ``constrain(prediff, KnowledgeControl(guide, E₀, λ, on="frames"))`` with ``E₀`` the
true energy of the context (mean over its frames): the route that cuts the judged error in
``benchmarks/prediff_nbody.py``, where the latent regressor barely moves it. Intensity:
``KnowledgeControl`` on the decoded frames' mean intensity, asked ``μ_τ + n σ_τ`` (statistics of
the test targets).

The building blocks ``benchmarks/prediff_nbody.py`` (and ``conservation-forecast``) share, one
module per concern, and the toy-size task ``prediff-nbody``:

- :mod:`.data`: the run's :class:`Scale`, the videos and their energy, the mean intensity;
- :mod:`.training`: :func:`fit` (one Trainer run, timed), PreDiff's two stages through
  :func:`physml.training.train_prediff` (:func:`trained_prediff`) and every model's training;
- :mod:`.evaluation`: :func:`sample` / :func:`controlled_sample`, the scores of an ensemble,
  the λ choice and the issue's targets;
- :mod:`.plots`: the figures.
"""

from __future__ import annotations

import dataclasses

import torch

from ...io import atomic_write_text, strict_json
from ...metrics import bootstrap_se, spread_skill
from .. import Context, Row, Task, register, run_label, run_settings
from .data import (
    DENOISERS,
    SIZES,
    TOY,
    FrameIntensity,
    Scale,
    clean_windows,
    context_energy,
    energy_drift,
    generator_settings,
    mean_intensity,
    videos,
)
from .evaluation import (
    EnsembleForecast,
    best_lambda,
    controlled_sample,
    done_when,
    energy_control,
    evaluate_deterministic,
    evaluate_ensemble,
    frame_energy_control,
    intensity_rows,
    judge_error,
    sample,
)
from .plots import plot_energy, plot_strip
from .training import (
    COST_FILE,
    GUIDE_SEED_OFFSET,
    JUDGE_SEED_OFFSET,
    TOY_GUIDE,
    GuideSize,
    TimedStages,
    Trained,
    autoencoder_frames,
    build_prediff,
    calibrated,
    fit,
    forecast_pairs,
    new_autoencoder,
    stage_config,
    timed,
    train_autoencoder,
    train_denoiser,
    train_guide,
    train_judge,
    train_regressor,
    trained_prediff,
)

NAME = "prediff-nbody"
__all__ = [
    "COST_FILE",
    "DENOISERS",
    "EnsembleForecast",
    "FrameIntensity",
    "GUIDE_SEED_OFFSET",
    "GuideSize",
    "JUDGE_SEED_OFFSET",
    "NAME",
    "SIZES",
    "Scale",
    "TOY",
    "TOY_GUIDE",
    "TimedStages",
    "Trained",
    "autoencoder_frames",
    "best_lambda",
    "bootstrap_se",
    "build_prediff",
    "calibrated",
    "clean_windows",
    "context_energy",
    "controlled_sample",
    "done_when",
    "energy_control",
    "energy_drift",
    "evaluate_deterministic",
    "evaluate_ensemble",
    "fit",
    "forecast_pairs",
    "frame_energy_control",
    "generator_settings",
    "intensity_rows",
    "judge_error",
    "mean_intensity",
    "new_autoencoder",
    "plot_energy",
    "plot_strip",
    "run",
    "sample",
    "spread_skill",
    "stage_config",
    "timed",
    "train_autoencoder",
    "train_denoiser",
    "train_guide",
    "train_judge",
    "train_regressor",
    "trained_prediff",
    "videos",
]


def run(context: Context) -> list[Row]:
    """The whole pipeline at toy size with the conv denoiser, whatever ``context.size`` (the
    full-scale study is ``benchmarks/prediff_nbody.py``): train (resumable, under
    ``out/prediff-nbody/toy-seed<seed>/``), score PreDiff and PreDiff-KC (best λ of a sweep on
    validation videos), intensity control, two figures and ``summary-toy-seed<seed>.json``."""
    size = "toy"  # SIZES["full"] is the toy scale: its files are the toy run's
    scale, seed, quiet = SIZES[size], context.seed, context.quiet
    folder = context.out / NAME
    label = run_label(dataclasses.replace(context, size=size))
    work = folder / label
    work.mkdir(parents=True, exist_ok=True)
    data = videos(scale, seed)
    test_x, test_y = data["test"].split(scale.t_in)
    val_x, val_y = data["validation"].split(scale.t_in)
    energy0 = context_energy(data["test"], scale.t_in)
    val_energy0 = context_energy(data["validation"], scale.t_in)

    prediff, autoencoder, denoiser = trained_prediff(
        scale, data["train"], "conv", work, seed, quiet
    )
    guide = train_guide(scale, TOY_GUIDE, data["train"], work / "guide", seed, quiet).model
    judge = train_judge(scale, data["train"], work / "judge", seed, quiet).model
    floor, _, floor_per_lead = judge_error(judge, test_y, energy0, seed)

    members, steps, batch = scale.members, scale.ddim_steps, scale.sample_batch
    progress = not quiet  # the sampling's bars, as the training's
    reference = evaluate_ensemble(
        sample(prediff, val_x, scale.sweep_members, steps, seed, batch, progress=progress),
        val_y,
        val_energy0,
        judge,
        floor,
        seed,
    )
    sweep = []
    for lam in TOY_GUIDE.lambdas:
        control = frame_energy_control(guide, val_energy0, lam)
        forecast = controlled_sample(
            prediff,
            control,
            val_x,
            val_energy0,
            scale.sweep_members,
            steps,
            seed,
            batch,
            progress=progress,
        )
        sweep.append(
            {"lambda": lam, **evaluate_ensemble(forecast, val_y, val_energy0, judge, floor, seed)}
        )
    best = best_lambda(sweep, reference)["lambda"]
    plain_forecast = sample(prediff, test_x, members, steps, seed, batch, progress=progress)
    plain = evaluate_ensemble(plain_forecast, test_y, energy0, judge, floor, seed)
    control = frame_energy_control(guide, energy0, best)
    kc_forecast = controlled_sample(
        prediff, control, test_x, energy0, members, steps, seed, batch, progress=progress
    )
    controlled = evaluate_ensemble(kc_forecast, test_y, energy0, judge, floor, seed)

    intensity = mean_intensity(test_y)
    stats = (float(intensity.mean()), float(intensity.std()))
    context_frames = test_x[: scale.intensity_contexts]
    lam_intensity = scale.intensity_lambdas[-1]
    intensity_table = intensity_rows(
        prediff, context_frames, stats, scale, lam_intensity, seed, progress=progress
    )

    case = f"nbody-{scale.size}px-{scale.t_in}to{scale.t_out}"
    rows = [Row(NAME, case, "judge floor", floor)]
    for method, scores in (("prediff", plain), ("prediff-kc", controlled)):
        for metric in ("mse", "ssim", "crps", "spread_skill", "energy_error"):
            rows.append(Row(NAME, case, f"{metric} {method}", scores[metric]))
    rows.append(Row(NAME, case, "lambda prediff-kc", best))
    for what, value, target, _ in done_when(plain, controlled, intensity_table):
        rows.append(Row(NAME, case, what, value, f"{target} (benchmarks/prediff_nbody.py)"))
    for row in intensity_table:
        if row["method"] == "prediff-kc":
            rows.append(
                Row(NAME, f"intensity n={row['n']}", "miss in σ prediff-kc", row["miss_sigma"])
            )

    shown = min(2, members)
    plot_strip(
        folder / f"strip-{label}.png",
        test_x[0],
        test_y[0],
        plain_forecast.samples[:shown, 0],
        kc_forecast.samples[:shown, 0],
        best,
    )
    with torch.no_grad():
        one = {
            "truth": judge(test_y[:1])[0],
            "PreDiff": judge(plain_forecast.samples[:, 0]),
            "PreDiff-KC": judge(kc_forecast.samples[:, 0]),
        }
    plot_energy(
        folder / f"energy-{label}.png",
        {"PreDiff": plain["energy_per_lead"], "PreDiff-KC": controlled["energy_per_lead"]},
        floor_per_lead,
        one,
        float(energy0[0]),
    )
    summary = {
        "settings": {**run_settings(context), "size": size},
        "case": case,
        "scale": scale.setup(),
        "train_s": {"autoencoder": autoencoder.train_s, "denoiser": denoiser.train_s},
        "prediff": plain,
        "prediff-kc": {"lambda": best, **controlled},
        "sweep": sweep,
        "intensity": intensity_table,
    }
    atomic_write_text(folder / f"summary-{label}.json", strict_json(summary))
    return rows


register(
    Task(
        name=NAME,
        description=(
            "PreDiff (latent diffusion) on N-body digits with knowledge control: energy kept "
            "to the context's, and an anticipated mean intensity, judged by an independent "
            "energy regressor. Toy scale only (--size full runs the same): the full-scale study "
            "and its targets are benchmarks/prediff_nbody.py"
        ),
        run=run,
        cpu_only=True,  # sampling, scores and figures run on the CPU
        figures={
            f"{NAME}/strip-*.png": "{name}: one test video, its context and true future, then "
            "PreDiff's ensemble members without and with knowledge control (energy).",
            f"{NAME}/energy-*.png": "{name}: judged energy against lead time for the truth, "
            "PreDiff and PreDiff-KC, the energy judge's own error on true frames as a band.",
        },
    )
)
