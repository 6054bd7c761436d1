"""The tracer data of ``conservation-forecast``: the run's :class:`Scale` (toy and full), the
forecast :class:`Windows` of each split and the network :class:`Units`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pdes.grid import Grid2D
from pdes.problems import active_seed_scheme

from ..._checks import flag
from ...data import load
from ...data.generate import generate_dataset, path_in_scheme
from .. import check_steps

VARIANTS = {"conserved": "ns-tracer", "source": "ns-tracer-source"}
F64 = torch.float64
SAMPLING_FIELDS = ("ddim_steps", "kc_scales", "sample_batch")
STEP_FAMILIES = ("earthformer", "fno", "autoencoder", "denoiser")
"""What :attr:`~physml.tasks.conservation_forecast.data.Scale.steps` fixes the step counts of."""


@dataclass(frozen=True)
class Scale:
    """Sizes of one run. ``budget_s`` CPU seconds of training per model family and variant
    (an ensemble's members share it; PreDiff gives ``autoencoder_share`` of it to the
    autoencoder); step counts are ``budget / measured s per step``, at least ``min_steps``, unless
    ``steps`` fixes them."""

    nx: int
    nt: int
    t_end: float
    train: int
    validation: int
    test: int
    t_in: int
    t_out: int
    velocity: bool
    members: int
    prediff_members: int
    budget_s: float
    min_steps: int
    batch: int
    lr: float
    earthformer: dict
    fno: dict
    latent_channels: int
    downsample: int
    autoencoder_width: int
    denoiser: dict
    ddim_steps: int
    kc_scales: tuple
    autoencoder_share: float = 0.3
    ema_decay: float = 0.99
    sample_batch: int = 32
    extra: dict = field(default_factory=dict)
    steps: dict | None = None
    """Step counts per family (``earthformer``, ``fno``, ``autoencoder``, ``denoiser``) instead
    of the budget's, so that a run repeats step for step whatever the machine's load."""

    def __post_init__(self) -> None:
        check_steps(self.steps, STEP_FAMILIES)

    def setup(self) -> dict:
        """The scale as plain JSON values (``steps`` only when it is set: a measured plan's
        scale reads as it did before the field was there)."""
        values = asdict(self)
        if values["steps"] is None:
            del values["steps"]
        return json.loads(json.dumps(values))

    def training_setup(self) -> dict:
        """What the trainings depend on (what a cached plan is checked against): the setup
        without the sampling settings, so a new λ sweep reuses the trained models."""
        return {k: v for k, v in self.setup().items() if k not in SAMPLING_FIELDS}


TOY = Scale(
    nx=16,
    nt=7,
    t_end=3.0,
    train=4,
    validation=1,
    test=2,
    t_in=3,
    t_out=3,
    velocity=True,
    members=4,
    prediff_members=4,
    budget_s=0.5,
    min_steps=2,
    batch=4,
    lr=2e-3,
    earthformer=dict(base_units=8, num_heads=2, depth=(1,)),
    fno=dict(modes=4, hidden=8, layers=2),
    latent_channels=2,
    downsample=2,
    autoencoder_width=4,
    denoiser=dict(widths=(8, 8)),
    ddim_steps=3,
    kc_scales=(1.0,),
    steps={"earthformer": 2, "fno": 8, "autoencoder": 8, "denoiser": 12},
)
"""A smoke run of every stage (fixed steps, about the budget's, so repeatable), not a
forecaster."""

FULL = Scale(
    nx=64,
    nt=21,
    t_end=10.0,
    train=48,
    validation=4,
    test=16,
    t_in=5,
    t_out=5,
    velocity=True,
    members=4,
    prediff_members=8,
    budget_s=900.0,
    min_steps=50,
    batch=8,
    lr=1e-3,
    earthformer=dict(base_units=16, num_heads=2, depth=(1, 1)),
    fno=dict(modes=12, hidden=24, layers=4),
    latent_channels=4,
    downsample=4,
    autoencoder_width=16,
    denoiser=dict(widths=(32, 64)),
    ddim_steps=20,
    kc_scales=(0.5, 1.0, 1.5),
)
"""The benchmark's run (``benchmarks/forecast_conservation.py`` without ``--quick``), a 64² grid,
900 CPU seconds of training per family and variant, step counts from the budget."""
SIZES = {"toy": TOY, "full": FULL}


@dataclass
class Windows:
    """Forecast windows of one split: ``context (N, T_in, C, H, W)`` (tracer first, then
    ``vx, vy`` when used), ``target (N, T_out, 1, H, W)``, ``truth_mass (N, T_out)`` from the
    file and ``known_mass (N, T_out)`` (the last context frame's mass plus the release since),
    and the ``states`` they were cut from; all float64, physical units."""

    context: torch.Tensor
    target: torch.Tensor
    truth_mass: torch.Tensor
    known_mass: torch.Tensor
    states: torch.Tensor | None = None
    """The split's whole trajectories ``(S, nt, C, H, W)`` the windows were cut from (what the
    FNO's steps and PreDiff's autoencoder train on); ``None`` where only windows are known."""


def generate(variant: str, scale: Scale, folder: Path, seed: int, quiet: bool) -> Path:
    """The variant's trajectories (train + validation + test, resumable) in ``folder``; the file
    name carries everything the data depend on (grid, times, count, seed and the seed scheme,
    :func:`pdes.problems.active_seed_scheme`), so a run of another scale, seed or scheme on the
    same folder makes its own file instead of reading this one. A file named without the scheme
    (kept before it was named) is read where it records the active scheme."""
    quiet = flag("quiet", quiet)
    count = scale.train + scale.validation + scale.test
    scheme = active_seed_scheme()
    spec = f"{scale.nx}-nt{scale.nt}-t{scale.t_end:g}-n{count}-seed{seed}"
    path = path_in_scheme(folder / f"data-{variant}-{spec}.h5", scheme)
    if path.exists():
        return path
    return generate_dataset(
        VARIANTS[variant],
        path,
        count,
        seed=seed,
        progress=not quiet,
        seed_scheme=scheme,
        nx=scale.nx,
        nt=scale.nt,
        t_end=scale.t_end,
    )


def grid_of(scale: Scale) -> Grid2D:
    return Grid2D.square(scale.nx, periodic=True)


def windows(path: Path, scale: Scale, split: str) -> Windows:
    """Every window of ``T_in + T_out`` frames (stride 1 for ``train``, ``T_out`` otherwise)
    and the split's whole trajectories
    (:attr:`~physml.tasks.conservation_forecast.data.Windows.states`)."""
    data = load(path)
    bounds = {
        "train": (0, scale.train),
        "validation": (scale.train, scale.train + scale.validation),
        "test": (scale.train + scale.validation, len(data)),
    }
    lo, hi = bounds[split]
    u = data.u[lo:hi].to(F64)[:, :, None]
    if scale.velocity:
        u = torch.cat([u, data.fields["vx"][lo:hi, :, None], data.fields["vy"][lo:hi, :, None]], 2)
    released = data.fields.get("released", torch.zeros_like(data.fields["mass"]))[lo:hi]
    mass = data.fields["mass"][lo:hi]
    span, stride = scale.t_in + scale.t_out, 1 if split == "train" else scale.t_out
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    grid = grid_of(scale)
    for start in range(0, u.shape[1] - span + 1, stride):
        context = u[:, start : start + scale.t_in]
        stop = start + span
        last = start + scale.t_in - 1
        known = grid.integrate(context[:, -1, 0]).unsqueeze(1) + (
            released[:, start + scale.t_in : stop] - released[:, last : last + 1]
        )
        for part, value in zip(
            parts,
            (
                context,
                u[:, start + scale.t_in : stop, :1],
                mass[:, start + scale.t_in : stop],
                known,
            ),
            strict=True,
        ):
            part.append(value)
    return Windows(*(torch.cat(part) for part in parts), states=u)


@dataclass(frozen=True)
class Units:
    """Network units: every channel divided by its scale (tracer: 1.25 × its training maximum,
    so PreDiff's sigmoid decoder can reach it; velocity: its standard deviation)."""

    scales: tuple

    @classmethod
    def of(cls, train: Windows) -> Units:
        tracer = 1.25 * float(train.context[:, :, 0].max())
        others = [float(train.context[:, :, c].std()) for c in range(1, train.context.shape[2])]
        return cls((tracer, *others))

    def to_net(self, frames: torch.Tensor) -> torch.Tensor:
        shape = (-1, 1, 1) if frames.shape[-3] == len(self.scales) else (1, 1, 1)
        divisor = torch.tensor(self.scales[: frames.shape[-3]], dtype=F64).reshape(shape)
        return (frames.to(F64) / divisor).to(torch.float32)

    def tracer(self, frames: torch.Tensor) -> torch.Tensor:
        """Network tracer frames back in physical units, float64."""
        return frames.to(F64) * self.scales[0]
