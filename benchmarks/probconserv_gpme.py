"""ProbConserv on the GPME family at CPU scale, against the unconstrained and baseline models.

Cases (DESIGN.md §4): diffusion k ∈ {1, 5}, PME m ∈ {1, 3, 6}, Stefan u* = 0.6 (in the training
range) and 0.5 (outside it). Methods: ANP, SoftC-ANP, HardC-ANP, ProbConserv-ANP (from the
``probconserv-*`` tasks, which train or reuse the ANPs), plus an exact GP fitted to each test
function's context points and a deep ensemble of MLPs over (parameter, t, x), each with and
without the ProbConserv update. Metrics are mean ± standard error over the test functions. The GP's
noise variance is bounded below by 1e-4 of the data variance: with 1e-6 its marginal-likelihood
fit failed (matrix not positive definite) on one PME m = 1 context set.

    python benchmarks/probconserv_gpme.py           # full run -> results/probconserv_gpme.*
    python benchmarks/probconserv_gpme.py --quick   # smoke run (toy scale, Stefan unless --cases)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_out, results_folder, run_main, seed_arg, work_folder, write_results  # noqa: E402

from physml import Gaussian, constrain, mass_conservation  # noqa: E402
from physml.data import gpme_sampler, grid_points  # noqa: E402
from physml.models import DeepEnsemble, ExactGPSurrogate, with_parameters  # noqa: E402
from physml.tasks import Context, run_label  # noqa: E402
from physml.tasks.probconserv import SCALES, TESTS, OnGrid, Scale, evaluate  # noqa: E402
from physml.training import fit_ensemble  # noqa: E402

F64 = torch.float64
# --quick: the toy grid with a fifth of its training (the smoke run checks the pipeline, not fits)
SMOKE = dataclasses.replace(SCALES["toy"], train_steps=40, softc_steps=20)

# The paper's diffusion rows (ANP base, t = 0.5): CE in units of 1e-3, MSE in units of 1e-4.
PAPER_DIFFUSION = {
    "anp": {"ce": 4.68e-3, "mse": 1.71e-4},
    "softc-anp": {"ce": 3.47e-3, "mse": 2.24e-4},
    "hardc-anp": {"ce": 0.0, "mse": 1.37e-4},
    "probconserv-anp": {"ce": 0.0, "mse": 1.55e-4},
}


class GridGP(nn.Module):
    """An exact GP fitted to each function's context and predicted on the (t, x) grid.

    ``forward(context_x (B, Nc, 2), context_y (B, Nc))`` → mean ``(B, T, X)`` and a full
    covariance per time slice ``(B, T, X, X)``. Fits are seeded, so every call gives the same.
    The same as the toolkit's ``gp.on_grid(t, x)`` (:class:`physml.models.GridGP`).
    """

    def __init__(self, gp: ExactGPSurrogate, t: torch.Tensor, x: torch.Tensor) -> None:
        super().__init__()
        self.gp, self.t, self.x = gp, t, x

    def forward(self, context_x: torch.Tensor, context_y: torch.Tensor) -> Gaussian:
        return self.gp.fit_predict(context_x, context_y, self.t, self.x, covariance="time-slices")


class Peers:
    """The GP and the ensemble as extra methods for :func:`physml.tasks.probconserv.evaluate`."""

    def __init__(self, size: str, seed: int, progress: bool) -> None:
        self.size, self.seed, self.progress = size, seed, progress
        self.ensembles: dict[str, DeepEnsemble] = {}

    def ensemble(self, case: str, t: torch.Tensor, x: torch.Tensor) -> DeepEnsemble:
        """A deep ensemble trained on exact solutions, parameters drawn from the training range."""
        if case not in self.ensembles:
            functions = 16 if self.size == "toy" else 64
            points = 300 if self.size == "toy" else 2000
            sampler = gpme_sampler(case, functions, n_target=points, t_grid=t, x_grid=x)
            _, _, target_x, target_y, params = sampler(torch.Generator().manual_seed(self.seed))
            inputs = torch.cat(
                [params[:, None, None].expand(-1, points, 1), target_x], dim=-1
            ).reshape(-1, 3)
            model = DeepEnsemble(in_features=3, members=5, width=64, depth=3)
            fit_ensemble(
                model,
                inputs,
                target_y.reshape(-1),
                epochs=20 if self.size == "toy" else 60,
                batch_size=512,
                seed=self.seed,
                progress=self.progress,
            )
            self.ensembles[case] = model.eval()
        return self.ensembles[case]

    def __call__(self, case, batch, grid, t, x, mass, params) -> dict[str, Gaussian]:
        gp = GridGP(ExactGPSurrogate(seed=self.seed, noise_floor=1e-4), t, x)
        gp_inputs = batch[0].to(F64), batch[1].to(F64)  # context x (B, Nc, 2), y (B, Nc)
        ensemble = OnGrid(self.ensemble(case, t, x), t.numel(), x.numel())
        ensemble_inputs = (with_parameters(params.float(), grid_points(t, x).float()),)
        constraint = mass_conservation(grid, mass)
        out = {  # the GP fits by gradient steps: not under no_grad
            "gp": gp(*gp_inputs),
            "probconserv-gp": constrain(gp, constraint)(*gp_inputs),
        }
        with torch.no_grad():
            out["ensemble"] = ensemble(*ensemble_inputs)
            out["probconserv-ensemble"] = constrain(ensemble, constraint)(*ensemble_inputs)
        return out


NOTES = """
Scale: see `setup` in the JSON (grid, ANP training steps, test functions, posterior samples). The
SoftC ANP trains for `softc_steps` ({softc_steps}), {share} of the base ANP's {train_steps}: its
residual penalty makes each step about five times slower on this CPU, so its rows are not at equal
training.
`ce` is the signed conservation error (trapezoid mass of the mean minus the true mass) at the
middle time slice (`t_ce`), `ce_abs` its absolute value; `ll` the mean Gaussian log density per
point; `crps` the Gaussian CRPS; `shock_error` (Stefan) the distance between the mean posterior
shock position at the final time (first x where a posterior sample is ≤ 0, a sample that stays
positive counts as x = 1) and the true front. `*_se` are standard errors over a case's test
functions, which share its PDE parameter and exact solution and differ in their context points
only: they measure context resampling alone, and are 0 up to round-off for the deep ensemble
(which sees no context), except `shock_error_se`, which also holds the noise of each function's
own posterior samples. Rows with `paper_*` set the diffusion results beside the ProbConserv
article's (ANP base, t = 0.5).
"""

COLUMNS = (
    "case method mse mse_se ce ce_abs ce_abs_se ll crps shock_error shock_error_se "
    "paper_mse paper_ce"
).split()


def notes(scale: Scale) -> str:
    """:data:`NOTES` with the training steps ``scale`` gives the two ANPs."""
    softc_steps = scale.softc_steps or scale.train_steps
    share = Fraction(softc_steps, scale.train_steps)
    return NOTES.format(softc_steps=softc_steps, train_steps=scale.train_steps, share=share)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    add_out(parser)
    parser.add_argument(
        "--work", type=Path, default=None,
        help="checkpoints, plots (default physml_output; --quick: a temporary folder)",
    )  # fmt: skip
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument(
        "--cases", nargs="+", choices=list(TESTS), default=None,
        help="the cases to run (default all; --quick: stefan)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.out = results_folder(args.out, args.quick)
    started = time.perf_counter()
    size = "toy" if args.quick else "full"
    scale = SMOKE if args.quick else SCALES[size]
    cases = args.cases or (["stefan"] if args.quick else list(TESTS))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        context = Context(out=Path(), size=size, seed=args.seed, quiet=not sys.stderr.isatty())
        trained = [f"checkpoints/{run_label(context)}/*-{case}-*" for case in cases]
        work = work_folder(args.work, scratch, args.quick, Path("physml_output"), trained)
        context = dataclasses.replace(context, out=work)
        peers = Peers(size, args.seed, progress=not context.quiet)
        for case in cases:
            case_rows, _ = evaluate(case, context, extra_methods=peers, scale=scale)
            for row in case_rows:
                if case == "diffusion" and row["method"] in PAPER_DIFFUSION:
                    paper = PAPER_DIFFUSION[row["method"]]
                    row.update(paper_mse=paper["mse"], paper_ce=paper["ce"])
                print(
                    f"{row['case']:14s} {row['method']:22s} mse {row['mse']:.3e} "
                    f"|ce| {row['ce_abs']:.2e} ll {row['ll']:.3f}",
                    flush=True,
                )
            rows += case_rows
    extra = {"setup": {"scale": scale.__dict__, "cases": cases}}
    write_results(
        "probconserv_gpme", rows, args.seed, started, args.out, COLUMNS, notes(scale), extra
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
