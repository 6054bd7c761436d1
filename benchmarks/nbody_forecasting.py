"""The N-body digits forecasting set-up shared by the N-body benchmarks.

What ``earthformer_nbody.py`` compares and ``prediff_nbody.py`` and ``earthformer_nbody_variant.py``
reuse: the sizes of each mode (:data:`SCALES`), the models at comparable widths (:func:`build`,
every learned one ending in :class:`ClampedOutput`), the loss they all train with
(:func:`training_loss`), the videos (:func:`datasets`, :func:`validation`: the generator's lengths
scaled to the canvas by :func:`physml.data.nbody.canvas_lengths`) and the yardstick that knows
the true state (:func:`physics_reference`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from pdes import checks
from physml.data.nbody import NBodyDigits, canvas_lengths, nbody_digits, render, simulate
from physml.models.baselines import ConvLSTM, Persistence, UNet
from physml.models.earthformer import Earthformer


@dataclass(frozen=True)
class Scale:
    """Data and training sizes of one mode; the budget is per learned model, in CPU seconds.

    ``base_units`` is the Earthformer's width, ``unet_base`` the UNet's and ``convlstm_hidden``
    the ConvLSTM's: the learned models then have comparable parameter counts.
    """

    size: int
    t_in: int
    t_out: int
    train: int
    test: int
    budget_s: float
    max_steps: int | None
    batch_size: int
    lr: float
    base_units: int
    unet_base: int
    convlstm_hidden: int
    stride: int = 5


SCALES = {
    "quick": Scale(
        size=16,
        t_in=4,
        t_out=4,
        train=16,
        test=4,
        budget_s=30.0,
        max_steps=2,
        batch_size=4,
        lr=1e-3,
        base_units=16,
        unet_base=8,
        convlstm_hidden=16,
    ),
    "full": Scale(
        size=32,
        t_in=10,
        t_out=10,
        train=3000,
        test=256,
        budget_s=450.0,
        max_steps=None,
        batch_size=16,
        lr=2e-3,
        base_units=24,
        unet_base=24,
        convlstm_hidden=32,
    ),
}
SCALES["long"] = replace(SCALES["full"], train=20000, budget_s=7200.0)
"""``long``: the full set-up with 20000 training videos (the full run's 3000 first) and two
CPU-hours per learned model, to see whether the ranking turns with scale (the article trains for
GPU-hours); written as ``earthformer_nbody-long.*``. Its four learned models take about 2
wall-hours each, so a run is spread over processes sharing ``--work`` (``--methods``, one per
core) and may be killed and continued."""


EARTHFORMER: dict[str, object] = dict(
    num_heads=2,
    depth=(1, 1),
    downsample=4,
    pattern="divided_st",
    relative_position=False,
    mlp_ratio=2.0,
    stem_channels=8,
    ffn_kernel=3,
)
"""Earthformer's settings besides its width and global vectors (see :func:`build`)."""
GLOBAL_VECTORS = {"earthformer": 8, "earthformer-noglobal": 0}
MODELS = (*GLOBAL_VECTORS, "unet", "convlstm", "persistence", "blank")
"""The methods :func:`build` makes: the learned models, then two without weights."""


L1_WEIGHT = 0.1
"""The benchmark's weight of the L1 term of :func:`training_loss` (fixed when the function is
defined: another weight is :func:`weighted_training_loss`'s, which a checkpoint records)."""


def training_loss(
    prediction: torch.Tensor, target: torch.Tensor, l1_weight: float = L1_WEIGHT
) -> torch.Tensor:
    """MSE plus ``l1_weight`` (the benchmark's :data:`L1_WEIGHT`) times the mean absolute error,
    for every learned model.

    The L1 term's constant pull sets to exactly 0 (black) the pixels whose error is below about
    ``L1_WEIGHT / 2``, where the MSE's gradient is weaker: it removes the faint haze an MSE-trained
    forecast leaves over the background, which SSIM punishes hard (a window whose truth is black
    scores ``C₁ / (μ² + C₁)``, 0.2 for a haze of 0.02), while the MSE of sprite pixels is barely
    moved. At 450 CPU-s it raised the UNet's SSIM from 0.26 to 0.35 for +0.4 in MSE.
    """
    error = prediction - target
    return error.square().mean() + l1_weight * error.abs().mean()


def weighted_training_loss(l1_weight: float) -> Callable[..., torch.Tensor]:
    """:func:`training_loss` with the L1 weight ``l1_weight`` (>= 0), as a checkpoint of
    :func:`~physml.training.forecasting.train_forecaster` can tell it apart: the benchmark's own
    weight is :func:`training_loss` itself (recorded by its name, as before), another a
    ``functools.partial`` (recorded with its argument, ``training_loss(l1_weight=1.0)``), so a
    run resumed with another weight is refused instead of going on with a different loss."""
    weight = checks.non_negative("l1_weight", l1_weight)
    if weight == L1_WEIGHT:
        return training_loss
    return functools.partial(training_loss, l1_weight=weight)


class ClampedOutput(nn.Module):
    """``model(x)`` clamped to [0, 1] in the forward pass, with the identity's gradient.

    A straight-through clamp: a background pixel predicted at or below 0 is exactly 0, and a
    sprite pixel predicted below 0 still gets a gradient. A sigmoid instead keeps pushing the
    background's logits down until it saturates (with one the Earthformer predicted black frames
    after 150 CPU-seconds); the UNet's SSIM at 150 CPU-s rose from 0.05 to 0.21 with this head.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y + (y.clamp(0.0, 1.0) - y).detach()


class Blank(nn.Module):
    """The all-black forecast (every pixel 0): what SSIM gives a forecast of nothing."""

    def __init__(self, target_frames: int) -> None:
        super().__init__()
        self.target_frames = target_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, -1:]).repeat(1, self.target_frames, 1, 1, 1)


def build(method: str, scale: Scale, seed: int) -> nn.Module:
    """The model ``method`` for frames ``(T_in, 1, size, size)``, initialised from ``seed``.

    Every learned model ends in the same head, :class:`ClampedOutput`.
    """
    torch.manual_seed(seed)
    shape_in = (scale.t_in, 1, scale.size, scale.size)
    shape_out = (scale.t_out, 1, scale.size, scale.size)

    def earthformer() -> nn.Module:
        return ClampedOutput(
            Earthformer(
                shape_in,
                shape_out,
                base_units=scale.base_units,
                global_vectors=GLOBAL_VECTORS[method],
                **EARTHFORMER,
            )
        )

    def unet() -> nn.Module:
        return ClampedOutput(
            UNet(scale.t_in, scale.t_out, base=scale.unet_base, depth=2, output="linear")
        )

    def convlstm() -> nn.Module:
        return ClampedOutput(
            ConvLSTM(
                hidden=scale.convlstm_hidden, layers=2, target_frames=scale.t_out, output="linear"
            )
        )

    builders: dict[str, Callable[[], nn.Module]] = {
        "earthformer": earthformer,
        "earthformer-noglobal": earthformer,
        "unet": unet,
        "convlstm": convlstm,
        "persistence": lambda: Persistence(scale.t_out),
        "blank": lambda: Blank(scale.t_out),
    }
    return builders[method]()


def model_config(method: str, scale: Scale) -> dict[str, object]:
    """The settings :func:`build` makes ``method`` from (besides the seed): what a checkpoint of
    :func:`~physml.training.forecasting.train_forecaster` records of the model."""
    sizes = {"method": method, "t_in": scale.t_in, "t_out": scale.t_out, "size": scale.size}
    if method in GLOBAL_VECTORS:
        return {
            **sizes,
            "base_units": scale.base_units,
            "global_vectors": GLOBAL_VECTORS[method],
            **EARTHFORMER,
        }
    widths = {
        "unet": {"unet_base": scale.unet_base},
        "convlstm": {"convlstm_hidden": scale.convlstm_hidden},
    }
    return {**sizes, **widths.get(method, {})}


def _generate(scale: Scale, count: int, seed: int, split: str) -> NBodyDigits:
    """``count`` videos of ``t_in + t_out`` frames at the scale's size and scaled dynamics."""
    return nbody_digits(
        count,
        seed=seed,
        split=split,
        frames=scale.t_in + scale.t_out,
        size=scale.size,
        digits=3,
        stride=scale.stride,
        **canvas_lengths(scale.size),
    )


def datasets(scale: Scale, seed: int) -> tuple[NBodyDigits, NBodyDigits]:
    """Train and test videos with their states; disjoint handwriting pools and seeds."""
    train = _generate(scale, scale.train, seed, "train")
    return train, _generate(scale, scale.test, seed + 1, "test")


def validation(scale: Scale, seed: int, count: int = 256) -> NBodyDigits:
    """Held-out videos for choosing settings: the training handwriting pool, fresh trajectories
    and sprite draws (seed ``seed + 2``), so the test set is left for the final comparison."""
    return _generate(scale, count, seed + 2, "train")


def videos(scale: Scale, seed: int) -> tuple[torch.Tensor, ...]:
    """Train and test ``(inputs, targets)`` of :func:`datasets`."""
    train, test = datasets(scale, seed)
    return (*train.split(scale.t_in), *test.split(scale.t_in))


REFERENCE = dict(position_sd=0.3, velocity_sd=0.01, samples=32)
"""The physics reference's blur of the true state (pixels, pixels/step) and its sample count."""


def physics_reference(
    test: NBodyDigits,
    scale: Scale,
    seed: int,
    position_sd: float,
    velocity_sd: float,
    samples: int,
) -> torch.Tensor:
    """Forecasts ``(N, T_out, 1, H, W)``: the mean of ``samples`` renders of the generator's own
    dynamics run on from the last context frame's true state, each with Gaussian noise of
    ``position_sd`` on the positions and ``velocity_sd`` on the velocities.

    It knows what no model is told (the physics, the sprites, the state), so it is a yardstick,
    not a competitor: about what a forecaster that has learned the dynamics perfectly could reach.
    The default noise is what ten rendered frames leave unknown: rounding to whole pixels hides
    ±0.5 px of position (standard deviation 0.29), and a straight-line fit through ten such
    positions 5 steps apart fixes a velocity to about 0.29 / √(25 · 82.5) ≈ 0.006 px/step;
    :data:`REFERENCE` allows 0.01 for the curvature that gravity adds to the path.
    """
    position_sd = checks.non_negative("position_sd", position_sd)
    velocity_sd = checks.non_negative("velocity_sd", velocity_sd)
    samples = checks.positive_int("samples", samples)
    if not isinstance(test, NBodyDigits):
        raise TypeError(
            f"test must be NBodyDigits (it holds the states), got {type(test).__name__}"
        )
    if test.frames.shape[1] != scale.t_in + scale.t_out:
        raise ValueError(
            f"test must hold videos of t_in + t_out = {scale.t_in + scale.t_out} frames, "
            f"got {test.frames.shape[1]}"
        )
    generator = torch.Generator().manual_seed(seed)
    last = scale.t_in - 1
    x0, v0 = test.positions[:, last], test.velocities[:, last]
    box = float(scale.size - test.sprites.shape[-1])
    lengths = canvas_lengths(scale.size)
    total = torch.zeros_like(test.frames[:, scale.t_in :])
    for _ in range(samples):
        noise = torch.randn(2, *x0.shape, generator=generator, dtype=x0.dtype)
        x = (x0 + position_sd * noise[0]).clamp(0.0, box)
        v = v0 + velocity_sd * noise[1]
        future, _ = simulate(
            x,
            v,
            scale.t_out * scale.stride,
            box=box,
            g=lengths["g"],
            softening=lengths["softening"],
            clip=lengths["clip"],
            record_every=scale.stride,
        )
        total += render(future[:, 1:], test.sprites, scale.size)
    return total / samples


if __name__ == "__main__":
    from common import not_a_benchmark

    not_a_benchmark("the N-body set-up of earthformer_nbody.py and prediff_nbody.py")
