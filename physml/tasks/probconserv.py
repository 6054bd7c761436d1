"""ProbConserv on the generalized porous medium equation: diffusion, PME and Stefan.

An attentive neural process (ANP) sees 100 context points of one solution u(t, x) and predicts a
Gaussian on the whole (t, x) grid. The methods compared:

- ``anp``: the unconstrained prediction;
- ``softc-anp``: an ANP trained with the PDE residual as a penalty (conserves nothing exactly),
  for fewer steps than the base ANP (each of its steps costs about five): see :class:`Scale`;
- ``hardc-anp``: the ANP mean projected onto the conservation constraint (Euclidean);
- ``probconserv-anp``: the ANP Gaussian conditioned on the conservation constraint — one row of
  trapezoid weights per time slice, the total mass from the integral form.

Each task trains (or reuses the cached checkpoints of) the two ANPs, evaluates every method on test
functions with fixed PDE parameters and fresh random context points, writes the table (MSE, CE, LL,
CRPS and, for Stefan, the error of the posterior shock position) to ``table-<label>.txt`` and
``results-<label>.json`` in its folder, and saves the plots: a profile with its uncertainty band,
total mass over time, and the shock-position histogram. ``<label>`` is the run's
``<size>-seed<seed>`` (:func:`~physml.tasks.run_label`), so runs of other sizes or seeds keep
their files side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from pdes import problems  # noqa: E402
from pdes.gpme import pme_total_mass, stefan_total_mass, stefan_z1  # noqa: E402

from .. import metrics  # noqa: E402
from ..constraints import constrain, mass_conservation  # noqa: E402
from ..data import gpme_sampler  # noqa: E402
from ..io import atomic_write_text, save_figure, strict_json  # noqa: E402
from ..models import AttentiveNeuralProcess, softc_loss_extra, unflatten  # noqa: E402
from ..outputs import Gaussian, LowRankCovariance  # noqa: E402
from ..training import train_anp  # noqa: E402
from . import Context, Row, Task, offset_seed, register, run_label, run_settings  # noqa: E402

F64 = torch.float64
TESTS = {"diffusion": (1.0, 5.0), "pme": (1.0, 3.0, 6.0), "stefan": (0.6, 0.5)}
SYMBOL = {"diffusion": "k", "pme": "m", "stefan": "u"}
METHODS = ("anp", "softc-anp", "hardc-anp", "probconserv-anp")


@dataclass(frozen=True)
class Scale:
    """How big a run is: grid, training budget, number of test functions and posterior samples."""

    nt: int
    nx: int
    train_steps: int
    batch: int
    n_target: int
    test_functions: int
    posterior_samples: int
    hidden: int
    softc_weight: float = 1e-3
    softc_steps: int | None = None
    """SoftC's training steps (default ``train_steps``). Its residual term makes a step about five
    times slower. The full scale gives it a quarter of the base ANP's steps; the toy scale half (at
    a quarter its Stefan MSE was 7x the base ANP's, at half 1.1-1.6x, near full scale's 1.7x)."""


SCALES = {
    "toy": Scale(41, 41, 200, 8, 256, 6, 100, 48, softc_steps=100),
    "full": Scale(201, 201, 4000, 8, 256, 30, 500, 48, softc_steps=1000),
}


def case_name(case: str, value: float) -> str:
    """``diffusion-k1``, ``pme-m3``, ``stefan-u0.6``, …"""
    return f"{case}-{SYMBOL[case]}{value:g}"


def true_mass(case: str, t: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The exact total mass ``(function, time)`` from the integral form of each case."""
    if case == "diffusion":  # a sine over a whole period, with no boundary flux
        return torch.zeros(params.numel(), t.numel(), dtype=F64)
    formulas = {"pme": pme_total_mass, "stefan": stefan_total_mass}
    if case not in formulas:
        raise ValueError(f"case must be one of ['diffusion', 'pme', 'stefan'], got {case!r}")
    return formulas[case](t.to(F64), params.to(F64))


def stefan_front(u_star: float | torch.Tensor, t: float) -> float | torch.Tensor:
    """The exact Stefan front ``2 z₁ √t`` (one per ``u*``, as :func:`~pdes.gpme.stefan_z1`)."""
    return 2 * stefan_z1(u_star) * math.sqrt(t)


def grids(case: str, scale: Scale):
    """The case's ``Grid1D`` and its time and space coordinates at this scale."""
    recipe = problems.get(case)
    settings = recipe.settings(nx=scale.nx, nt=scale.nt)
    grid = recipe.grid(settings)
    t = torch.as_tensor(recipe.times(settings), dtype=F64)
    return grid, t, grid.coordinates()


def train_models(
    case: str, scale: Scale, folder: Path, seed: int, progress: bool, device: str = "cpu"
) -> dict[str, AttentiveNeuralProcess]:
    """The base ANP and the SoftC ANP trained on ``device``, or resumed from their checkpoints
    in ``folder`` (one run folder per model, case, grid and budget)."""
    _, t, x = grids(case, scale)
    sampler = gpme_sampler(case, scale.batch, n_target=scale.n_target, t_grid=t, x_grid=x)
    coarse_t, coarse_x = t[:: max(1, scale.nt // 20)], x[:: max(1, scale.nx // 20)]
    models = {}
    for name, extra, steps, tag in (
        ("anp", None, scale.train_steps, ""),
        (
            "softc-anp",
            softc_loss_extra(case, coarse_t, coarse_x, scale.softc_weight),
            scale.softc_steps or scale.train_steps,
            f"-w{scale.softc_weight:g}",  # another penalty weight trains its own run
        ),
    ):
        model = AttentiveNeuralProcess(
            hidden=scale.hidden, latent=scale.hidden, input_range=sampler.input_range, seed=seed
        )
        train_anp(
            model,
            sampler,
            steps,
            seed=seed,
            progress=progress,
            out=folder / f"{name}-{case}-{scale.nt}x{scale.nx}-{steps}{tag}",
            loss_extra=extra,
            device=device,
        )
        models[name] = model.eval()
    return models


class OnGrid(nn.Module):
    """A surrogate's Gaussian at the grid points reshaped onto the (t, x) grid, in float64 on the
    CPU (where the constraint and the scores are computed, whatever device the model runs on).

    ``forward(*inputs)`` → mean and diagonal variance ``(function, T, X)``: one row of a
    conservation constraint per time slice.
    """

    def __init__(self, model: nn.Module, nt: int, nx: int) -> None:
        super().__init__()
        self.model, self.nt, self.nx = model, nt, nx

    def forward(self, *inputs: torch.Tensor) -> Gaussian:
        prediction = self.model(*inputs)
        mean, variance = prediction.mean.to("cpu", F64), prediction.variance().to("cpu", F64)
        variance = unflatten(variance, self.nt, self.nx)
        return Gaussian(unflatten(mean, self.nt, self.nx), variance, diagonal=True)


def predict(
    models: dict[str, AttentiveNeuralProcess], batch, grid, mass: torch.Tensor, nt: int, nx: int
) -> dict[str, Gaussian]:
    """Every method's Gaussian over the (t, x) grid, mean ``(function, T, X)``."""
    inputs = batch[0], batch[1], batch[2]  # context x, context y, target x
    anp = OnGrid(models["anp"], nt, nx)
    methods = {
        "anp": anp,
        "softc-anp": OnGrid(models["softc-anp"], nt, nx),
        "hardc-anp": constrain(anp, mass_conservation(grid, mass, projection="euclidean")),
        "probconserv-anp": constrain(anp, mass_conservation(grid, mass)),
    }
    with torch.no_grad():
        return {name: model(*inputs) for name, model in methods.items()}


def _slice(gaussian: Gaussian, index: int) -> Gaussian:
    """The Gaussian of one time slice: mean ``(function, X)``."""
    cov = gaussian.cov
    if isinstance(cov, LowRankCovariance):
        sliced = LowRankCovariance(cov.base[:, index], cov.factor[:, index], cov.base_is_diagonal)
    else:
        sliced = cov[:, index]
    return Gaussian(gaussian.mean[:, index], sliced, gaussian.is_diagonal or None)


def shock_positions(
    gaussian: Gaussian, x: torch.Tensor, index: int, count: int, seed: int
) -> torch.Tensor:
    """Posterior shock positions ``(count, function)``: first x where a sample is ≤ 0.

    A sample that stays positive across the domain puts the front at its right end.
    """
    samples = metrics.gaussian_samples(_slice(gaussian, index), count, seed)
    return metrics.shock_position(samples, x).clamp(max=x[-1].item())


def score(
    case: str,
    predictions: dict[str, Gaussian],
    exact: torch.Tensor,
    grid,
    mass: torch.Tensor,
    t: torch.Tensor,
    params: torch.Tensor,
    scale: Scale,
    seed: int,
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Metric rows (mean ± standard error over test functions) and, for Stefan, shock samples.

    A case's test functions share one PDE parameter and exact solution and differ in their
    context points only: the standard errors are of context resampling (none for a model that
    sees no context; the shock error's also holds the noise of each function's posterior
    samples), NaN for one function."""
    mid = int(torch.argmin((t - 0.5 * t[-1]).abs()))
    last = t.numel() - 1
    rows, shocks = [], {}
    for method, gaussian in predictions.items():
        per_function_mse = ((gaussian.mean - exact) ** 2).flatten(1).mean(1)
        ce = metrics.conservation_error(gaussian.mean, grid, mass, time_index=mid)
        ll = metrics.gaussian_log_likelihood(gaussian, exact, reduction="none").flatten(1).mean(1)
        std = gaussian.variance().clamp(min=0).sqrt()
        crps = metrics.crps_gaussian(gaussian.mean, std, exact, reduction="none").flatten(1).mean(1)
        row = {"method": method, "t_ce": t[mid].item()}
        for key, values in (
            ("mse", per_function_mse),
            ("ce", ce),
            ("ce_abs", ce.abs()),
            ("ll", ll),
            ("crps", crps),
        ):
            row[key], row[f"{key}_se"] = metrics.mean_se(values)
        if case == "stefan":
            positions = shock_positions(
                gaussian, grid.coordinates(), last, scale.posterior_samples, seed
            )
            front = stefan_front(params.to(F64), t[last].item())
            shocks[method] = positions
            error = (positions.mean(0) - front).abs()
            row["shock_error"], row["shock_error_se"] = metrics.mean_se(error)
        rows.append(row)
    return rows, shocks


def plot_case(
    folder: Path,
    name: str,
    predictions: dict[str, Gaussian],
    exact: torch.Tensor,
    mass: torch.Tensor,
    grid,
    t: torch.Tensor,
    shocks: dict[str, torch.Tensor],
    front: float | None,
    *,
    label: str,
) -> None:
    """Profile with ±2σ bands at mid-time, total mass over time, and the shock histogram, saved
    in ``folder`` as ``<name>-profile-<label>.png``, ``-mass-`` and ``-shock-`` (``label``: the
    run's, from :func:`~physml.tasks.run_label`)."""
    x = grid.coordinates()
    mid = int(torch.argmin((t - 0.5 * t[-1]).abs()))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(x, exact[0, mid], "k", lw=4, alpha=0.3, zorder=1, label="exact")
    styles = (("anp", "tab:blue", "-", 2.0), ("probconserv-anp", "tab:red", "--", 1.5))
    for layer, (method, colour, line, width) in enumerate(styles):
        g = predictions[method]
        mean, std = g.mean[0, mid], g.variance()[0, mid].clamp(min=0).sqrt()
        ax.fill_between(x, mean - 2 * std, mean + 2 * std, color=colour, alpha=0.15, lw=0, zorder=2)
        ax.plot(x, mean, line, color=colour, lw=width, zorder=3 + layer, label=method)
    ax.set(xlabel="x", ylabel="u", title=f"{name}: t = {t[mid].item():.3g}, mean ± 2σ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, folder / f"{name}-profile-{label}.png")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.4), sharex=True)
    top.plot(t, mass[0], "k", lw=4, alpha=0.3, label="true mass")
    for method, g in predictions.items():
        total = grid.integrate(g.mean[0])
        (line,) = top.plot(t, total, "--", label=method)
        error = (total - mass[0]).abs().clamp(min=1e-17)  # round-off zeros stay on the log axis
        bottom.semilogy(t, error, "o-", ms=3, color=line.get_color(), label=method)
    top.set(ylabel="∫u dx", title=f"{name}: total mass of one test function")
    top.legend(fontsize=8)
    bottom.set(xlabel="t", ylabel="|∫u dx − true mass|", title="conservation error (log scale)")
    fig.tight_layout()
    save_figure(fig, folder / f"{name}-mass-{label}.png")

    if shocks and front is not None:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for method in ("anp", "probconserv-anp"):
            values = shocks[method][:, 0]
            ax.hist(values[torch.isfinite(values)].numpy(), bins=30, alpha=0.5, label=method)
        ax.axvline(front, color="k", lw=2, label="true front")
        ax.set(xlabel="shock position x*", ylabel="posterior samples", title=f"{name}: final time")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, folder / f"{name}-shock-{label}.png")


def format_rows(rows: list[dict]) -> str:
    """A readable table of method rows."""
    keys = [k for k in ("mse", "ce", "ce_abs", "ll", "crps", "shock_error") if k in rows[0]]
    header = f"{'case':16s} {'method':18s} " + " ".join(f"{k:>20s}" for k in keys)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = " ".join(f"{row[k]:>11.3e} ± {row[k + '_se']:.1e}" for k in keys)
        lines.append(f"{row['case']:16s} {row['method']:18s} {cells}")
    return "\n".join(lines)


def evaluate(
    case: str,
    context: Context,
    extra_methods: Callable[..., dict[str, Gaussian]] | None = None,
    scale: Scale | None = None,
) -> tuple[list[dict], dict]:
    """Train or reuse the ANPs (under ``out/checkpoints/<size>-seed<seed>/``), then score every
    method on every test value of ``case``; its figures and ``results-<size>-seed<seed>.json``
    go to ``out/probconserv-<case>/``. The functions of test value ``index`` are drawn from
    :func:`pdes.problems.generator` ``(seed + 1000 + index)`` under the active seed scheme, as
    the training functions are.

    ``extra_methods(case, batch, grid, t, x, mass, params)`` may add predictions (the benchmark
    adds the GP and the ensemble). ``scale``: instead of ``context.size``'s (a smoke run's).
    Returns the rows and the provenance of the run.
    """
    scale = scale or SCALES[context.size]
    folder = context.out / f"probconserv-{case}"
    folder.mkdir(parents=True, exist_ok=True)
    grid, t, x = grids(case, scale)
    label = run_label(context)
    checkpoints = context.out / "checkpoints" / label
    checkpoints.mkdir(parents=True, exist_ok=True)
    models = train_models(case, scale, checkpoints, context.seed, not context.quiet, context.device)
    rows = []
    for index, value in enumerate(TESTS[case]):
        name = case_name(case, value)
        sampler = gpme_sampler(
            case, scale.test_functions, t_grid=t, x_grid=x, param_range=(value, value)
        )
        batch = sampler(problems.generator(offset_seed(context.seed, 1000 + index)))
        params = batch[4].to(F64)
        exact = sampler.exact(params)
        mass = true_mass(case, t, params)
        predictions = predict(models, batch, grid, mass, scale.nt, scale.nx)
        if extra_methods is not None:
            predictions.update(extra_methods(case, batch, grid, t, x, mass, params))
        case_rows, shocks = score(
            case, predictions, exact, grid, mass, t, params, scale, context.seed
        )
        for row in case_rows:
            row.update(case=name, **{SYMBOL[case]: value})
        rows.extend(case_rows)
        front = stefan_front(value, t[-1].item()) if case == "stefan" else None
        plot_case(folder, name, predictions, exact, mass, grid, t, shocks, front, label=label)
    setup = {
        "settings": run_settings(context),
        "scale": scale.__dict__,
        "tests": TESTS[case],
        "seed": context.seed,
    }
    results = strict_json({"setup": setup, "rows": rows})
    atomic_write_text(folder / f"results-{label}.json", results)
    return rows, setup


def summary(task: str, rows: list[dict]) -> list[Row]:
    """The demo table's lines: exact conservation (a guarantee) and ProbConserv's MSE ratio."""
    out = []
    for name in dict.fromkeys(row["case"] for row in rows):
        by_method = {row["method"]: row for row in rows if row["case"] == name}
        ce = by_method["probconserv-anp"]["ce_abs"]
        out.append(Row(task, name, "|CE| probconserv-anp", ce, "<= 1e-6", ce <= 1e-6))
        out.append(Row(task, name, "|CE| anp", by_method["anp"]["ce_abs"]))
        ratio = by_method["probconserv-anp"]["mse"] / by_method["anp"]["mse"]
        out.append(Row(task, name, "MSE probconserv / anp", ratio))
    return out


def _runner(case: str) -> Callable[[Context], list[Row]]:
    def run(context: Context) -> list[Row]:
        rows, _ = evaluate(case, context)
        table = f"probconserv-{case} ({context.size} scale)\n{format_rows(rows)}\n"
        label = run_label(context)
        atomic_write_text(context.out / f"probconserv-{case}" / f"table-{label}.txt", table)
        return summary(f"probconserv-{case}", rows)

    return run


for _case in TESTS:
    register(
        Task(
            name=f"probconserv-{_case}",
            description=f"ProbConserv vs ANP, SoftC and HardC on the GPME {_case} case",
            run=_runner(_case),
            figures={
                f"probconserv-{_case}/*-profile-*.png": "{name}: the solution at mid-time, exact "
                "(thick grey), the ANP's mean (solid blue) and ProbConserv's (dashed red) with "
                "their ±2σ bands.",
                f"probconserv-{_case}/*-mass-*.png": "{name}: the total mass ∫u dx of one test "
                "function over time, true (thick grey) and each method's prediction (dashed), "
                "top; each method's conservation error |∫u dx − true mass| on a log scale, "
                "bottom (round-off zeros drawn at 1e-17).",
                f"probconserv-{_case}/*-shock-*.png": "{name}: posterior samples of the shock "
                "position at the final time, ANP and ProbConserv, beside the true front (black).",
            },
        )
    )
