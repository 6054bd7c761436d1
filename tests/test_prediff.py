"""PreDiff: autoencoder, denoisers, the guided DDIM sampler, training and resume, the sampler seam.

Closed forms: for data concentrated at one latent ``c`` the exact noise estimate is
``ε*(z, t) = (z − √ᾱ_t c)/√(1 − ᾱ_t)``, and DDIM with it returns ``c`` exactly (every ``ẑ_0``
is ``c``), whatever η and the number of steps. A denoiser exact for data at 0 guided by
``g = √ᾱ_t c/(1 − ᾱ_t)`` (the score of data at ``c`` minus that of data at 0) becomes exact for
``c``: the guided sample is ``c``.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset, default_collate

from physml import Ensemble, constrain
from physml.constraints import Constraint, ReverseStep, Sampler
from physml.data.nbody import nbody_digits
from physml.models.cuboid import CuboidSelfAttention
from physml.models.prediff import (
    ConvDenoiser,
    CuboidDenoiser,
    FrameAutoencoder,
    LatentPairs,
    NoiseSchedule,
    PreDiff,
    autoencoder_loss,
    ddim_sample,
    diffusion_loss,
    reconstruction_scores,
    timestep_embedding,
    update_ema,
)
from physml.training import TrainConfig, Trainer
from physml.training.trainer import _batch

T_IN, T_OUT, SIZE = 2, 2, 16
LATENT = (2, 8, 8)


def autoencoder() -> FrameAutoencoder:
    return FrameAutoencoder(channels=1, latent_channels=2, downsample=2, width=8)


def denoiser(kind: str) -> nn.Module:
    torch.manual_seed(1)
    if kind == "conv":
        return ConvDenoiser(T_IN, T_OUT, LATENT, widths=(8, 16))
    return CuboidDenoiser(T_IN, T_OUT, LATENT, dim=8, depth=(1, 1), num_heads=2)


def live(module: nn.Module) -> nn.Module:
    """Give the zero-initialised output layer weights, so ε̂ depends on the inputs."""
    head = module.head[-1] if isinstance(module.head, nn.Sequential) else module.head
    with torch.no_grad():
        head.weight.normal_(0.0, 0.1)
    return module


def frames(count: int = 8, seed: int = 0) -> torch.Tensor:
    return nbody_digits(count, seed=seed, frames=T_IN + T_OUT, size=SIZE).frames


def pairs(count: int = 8) -> TensorDataset:
    video = frames(count)
    return TensorDataset(video[:, :T_IN], video[:, T_IN:])


class Exact(nn.Module):
    """The exact ε for data concentrated at ``point`` (0 if None): ``(z − √ᾱ c)/√(1 − ᾱ)``."""

    context_frames, target_frames, latent_shape = T_IN, T_OUT, LATENT

    def __init__(self, point: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("alpha_bar", NoiseSchedule().alphas_cumprod())
        self.point = point

    def forward(self, z_t, t, context):
        a = self.alpha_bar[t].view(-1, *([1] * (z_t.ndim - 1)))
        point = 0.0 if self.point is None else self.point
        return (z_t - a.sqrt() * point) / (1 - a).sqrt()


class Toward(Constraint):
    """Guides data at 0 to ``point``: ``g = √ᾱ c/(1 − ᾱ)``; records what it is handed."""

    seams = ("sampler",)

    def __init__(self, point: torch.Tensor) -> None:
        super().__init__()
        self.point = point
        self.seen: list[tuple[tuple[int, ...], ReverseStep, object]] = []

    def guide(self, z_t, t, context):
        self.seen.append((tuple(z_t.shape), t, context))
        return math.sqrt(t.alpha_bar) / (1 - t.alpha_bar) * self.point.expand_as(z_t)


def schedule_timesteps(steps: int) -> list[int]:
    return NoiseSchedule().sampling(steps).timesteps.tolist()


# ------------------------------------------------------------------------------ schedule


def test_schedule_is_the_cosine_schedule():
    """ᾱ_t = f(t + 1)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008 (uncapped steps)."""
    alpha_bar = NoiseSchedule().alphas_cumprod().double()
    t = torch.arange(1, 901, dtype=torch.float64)

    def f(u):
        return torch.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    assert torch.allclose(alpha_bar[:900], f(t) / f(torch.zeros(1, dtype=torch.float64)), rtol=1e-5)
    assert schedule_timesteps(4) == [750, 500, 250, 0]


def test_schedules_match_their_papers_over_every_step():
    """Cosine (Nichol & Dhariwal): β_t = min(1 − f(t)/f(t − 1), 0.999), ᾱ = Π(1 − β), the cap
    biting at the last steps; linear (Ho et al.): β from 1e-4 to 0.02 in T equal steps."""
    t = torch.arange(1, 1001, dtype=torch.float64)

    def f(u):
        return torch.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    beta = (1 - f(t) / f(t - 1)).clamp(max=0.999)
    assert beta[-1] == 0.999  # the cap is reached
    cosine = NoiseSchedule(1000, "squaredcos_cap_v2").alphas_cumprod().double()
    torch.testing.assert_close(cosine, torch.cumprod(1 - beta, 0), rtol=1e-4, atol=1e-12)
    linear = NoiseSchedule(1000, "linear").alphas_cumprod().double()
    expected = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(linear, expected, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------- autoencoder


def test_autoencoder_shapes_and_default_compression():
    model = FrameAutoencoder()
    x = torch.rand(2, 3, 1, 64, 64)
    z = model.encode(x)
    assert z.shape == (2, 3, 4, 16, 16)
    assert model.decode(z).shape == x.shape
    assert model.decode(z[None]).shape == (1, *x.shape)  # any leading axes
    with pytest.raises(ValueError, match="frames must have shape"):
        model.encode(torch.rand(2, 3, 2, 64, 64))
    with pytest.raises(ValueError, match="divisible by downsample=4"):
        model.encode(torch.rand(2, 3, 1, 30, 30))
    with pytest.raises(ValueError, match="downsample must be a power of 2"):
        FrameAutoencoder(downsample=3)
    torch.testing.assert_close(model.encode(x.double()), z, rtol=0, atol=0)  # cast to float32
    poisoned = x.clone()
    poisoned[1, 0, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="frames contains NaN or inf values"):
        model.encode(poisoned)


def test_calibrated_latents_are_standardised_and_invert():
    prediff = PreDiff(autoencoder(), denoiser("conv"))
    video = frames()
    prediff.calibrate(video)
    z = prediff.encode(video)
    per_channel = z.transpose(0, 2).reshape(2, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(per_channel.std(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(prediff.decode(z), prediff.autoencoder(video), atol=1e-5)
    assert not any(p.requires_grad for p in prediff.autoencoder.parameters())
    with pytest.raises(TypeError, match="frames must be a tensor"):
        prediff.calibrate([video])


def test_sizes_and_batches_given_as_numpy_integers_act_as_the_ints():
    """A numpy ``downsample`` failed (numpy integers have no ``bit_length``) and numpy sizes were
    kept in the autoencoder's config; a numpy ``batch`` failed to split the frames in
    ``reconstruction_scores`` and ``calibrate``; a numpy ``timesteps`` stayed numpy."""
    torch.manual_seed(0)
    sizes = dict(channels=1, latent_channels=2, downsample=2, width=8)
    given = FrameAutoencoder(**{name: np.int64(value) for name, value in sizes.items()})
    torch.manual_seed(0)
    expected = FrameAutoencoder(**sizes)
    assert json.loads(json.dumps(given.config)) == sizes
    assert {type(value) for value in given.config.values()} == {int}
    assert all(
        torch.equal(a, b) for a, b in zip(given.parameters(), expected.parameters(), strict=True)
    )
    video = frames(5)
    scores = reconstruction_scores(expected, video, batch=np.int64(2))
    assert scores == reconstruction_scores(expected, video, batch=2)
    calibrated = []
    for batch in (np.int64(2), 2):
        torch.manual_seed(0)
        prediff = PreDiff(autoencoder(), denoiser("conv"))
        prediff.calibrate(video, batch=batch)
        calibrated.append(torch.cat([prediff.latent_mean, prediff.latent_std]))
    assert torch.equal(*calibrated)
    schedule = NoiseSchedule(np.int64(10))
    assert type(schedule.timesteps) is int and schedule == NoiseSchedule(10)


# -------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [2, 5, 20])
def test_ddim_with_the_exact_denoiser_lands_on_the_data_point(eta, steps):
    point = torch.randn(T_OUT, *LATENT, generator=torch.Generator().manual_seed(3))
    exact = Exact(point)
    shape = (3, 2, T_OUT, *LATENT)

    def predict(z, t):
        return exact(z, torch.full(z.shape[:1], t), None)

    z = ddim_sample(predict, shape, NoiseSchedule(), torch.Generator().manual_seed(0), steps, eta)
    assert torch.allclose(z, point.expand(shape), atol=1e-4)


def trailing_timesteps(steps: int, total: int = 1000) -> list[int]:
    """``round(T − kT/N) − 1`` for ``k = 0 … N − 1`` in integers: ``T(N − k)/N = q + r/N``
    rounds up when ``2r > N`` and at a tie (``2r = N``) to the even one of ``q, q + 1``."""
    rounded = []
    for k in range(steps):
        q, r = divmod(total * (steps - k), steps)
        rounded.append(q + (2 * r > steps or (2 * r == steps and q % 2 == 1)) - 1)
    return rounded


def test_spacings_are_leading_and_trailing_timesteps():
    """Leading: ``t_k = k⌊T/N⌋`` (first ``(N − 1)⌊T/N⌋``); trailing: ``round(T − kT/N) − 1``
    (first ``T − 1``)."""
    schedule = NoiseSchedule()
    for steps in (2, 3, 5, 7, 16, 20, 1000):
        leading = [k * (1000 // steps) for k in reversed(range(steps))]
        assert schedule.sampling(steps).timesteps.tolist() == leading
        assert schedule.sampling(steps, "leading").timesteps.tolist() == leading
        assert schedule.sampling(steps, "trailing").timesteps.tolist() == trailing_timesteps(steps)
    assert schedule.sampling(1, "trailing").timesteps.tolist() == [999]
    assert schedule.sampling(20, "trailing").timesteps[:2].tolist() == [999, 949]
    for bad in ("Trailing", "linspace", None, 1):
        with pytest.raises(ValueError, match=r"spacing must be one of \('leading', 'trailing'\)"):
            schedule.sampling(5, bad)
    with pytest.raises(ValueError, match="steps must be >= 2 with spacing='leading'.*got 1"):
        schedule.sampling(1)


@pytest.mark.parametrize("total", [1000, 50])
def test_leading_timesteps_are_diffusers_and_trailing_ones_are_n_rounded_never_negative(total):
    """For every ``N``: leading as diffusers' ``DDIMScheduler`` spaces them; trailing exactly
    ``N`` of ``round(T − kT/N) − 1``, all >= 0. diffusers' trailing list, summed in floating
    point, has ``N + 1`` entries ending at −1 for N = 61 (and 29 with T = 50): ᾱ_{−1} read ᾱ_{T−1}
    ≈ 0 and the samples collapsed to a point."""
    from diffusers import DDIMScheduler

    schedule = NoiseSchedule(total)
    theirs = DDIMScheduler(
        num_train_timesteps=total,
        beta_schedule="squaredcos_cap_v2",
        timestep_spacing="leading",
        steps_offset=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the low leading starts, tested below
        for steps in range(2, total + 1):
            theirs.set_timesteps(steps)
            assert schedule.sampling_timesteps(steps) == theirs.timesteps.tolist()
    for steps in range(1, total + 1):
        trailing = schedule.sampling_timesteps(steps, "trailing")
        assert trailing == trailing_timesteps(steps, total) and min(trailing) >= 0
    collapsing = 61 if total == 1000 else 29
    scheduler = schedule.sampling(collapsing, "trailing")
    assert scheduler.timesteps.tolist() == trailing_timesteps(collapsing, total)
    theirs = DDIMScheduler(num_train_timesteps=total, timestep_spacing="trailing", steps_offset=0)
    theirs.set_timesteps(collapsing)
    assert theirs.timesteps.tolist() == trailing_timesteps(collapsing, total) + [-1]


def test_a_leading_start_far_below_the_last_timestep_warns_naming_it_and_the_remedies():
    """``N = 334`` of ``T = 1000``: leading starts at ``333·⌊1000/334⌋ = 666`` where cosine
    ᾱ = f(667)/f(0) ≈ 0.25, against ᾱ ≈ 1e-5 at ``1000 − ⌈1000/334⌉ = 997`` where a full stride
    would start; 250 and 500 are the step counts dividing 1000 on either side. Silent: the few
    steps 2, 3, 5 (their start is one full stride below 1000, the documented few-step bias), the
    counts 20, 250, 1000 dividing 1000, and 48, 80 whose starts (940, 948) keep under 0.01 more
    ᾱ than 979 and 987; and trailing steps, all starting at 999."""

    def f(u):
        return math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    def alpha(t):  # ᾱ of timestep t (diffusers clips β at 0.999, unseen here)
        return f(t + 1) / f(0)

    schedule = NoiseSchedule()
    with pytest.warns(UserWarning, match="steps=334 with spacing='leading'") as caught:
        timesteps = schedule.sampling_timesteps(334)
    assert timesteps == [2 * k for k in reversed(range(334))]
    message = str(caught[0].message)
    assert "starts at timestep 666 of the 1000" in message
    assert f"ᾱ = {alpha(666):.2g})" in message
    assert "Use steps dividing 1000 (e.g. 250 or 500)" in message
    assert "spacing='trailing' starts at the top but suits only" in message
    assert caught[0].filename == __file__
    with pytest.warns(UserWarning, match=r"steps=501 .* timestep 500 .*\(e\.g\. 500 or 1000\)"):
        ddim_sample(
            lambda z, t: torch.zeros_like(z), (1, 1, 1, 1, 1, 1), schedule,
            torch.Generator().manual_seed(0), 501, 0.0,
        )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for steps in (2, 3, 5, 20, 48, 80, 250, 1000):
            first = schedule.sampling_timesteps(steps)[0]
            assert alpha(first) - alpha(1000 - math.ceil(1000 / steps)) < 0.01
        for steps in (1, 334, 501, 600, 999):
            assert schedule.sampling_timesteps(steps, "trailing")[0] == 999
    with pytest.warns(UserWarning, match=r"steps=600 .* timestep 599 "):
        schedule.sampling_timesteps(600)
    with warnings.catch_warnings():  # T = 50: N = 3, 4, 6 start one timestep below T − ⌈T/N⌉
        warnings.simplefilter("error")
        short = NoiseSchedule(timesteps=50)
        assert [short.sampling_timesteps(n)[0] for n in (3, 4, 6)] == [32, 36, 40]


class ListedSchedule(NoiseSchedule):
    """A schedule listing the given reverse timesteps, whatever the steps and spacing."""

    def __init__(self, listed: list[int]) -> None:
        super().__init__()
        object.__setattr__(self, "listed", listed)

    def sampling_timesteps(self, steps, spacing="leading"):
        return self.listed


def test_a_negative_timestep_is_refused_not_read_from_the_end_of_the_schedule():
    listed = [*trailing_timesteps(61), -1]
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 1000\).*, 15, -1\]"):
        ddim_sample(
            lambda z, t: torch.zeros_like(z), (1, 1, 1, 1, 1, 1), ListedSchedule(listed),
            torch.Generator().manual_seed(0), 61, 0.0, spacing="trailing",
        )  # fmt: skip


def gaussian_noise_estimate(mean: float, std: float, schedule: NoiseSchedule | None = None):
    """The exact ε̂ for data ``N(mean, std²)`` per element, at ``z_t ~ N(√ᾱ mean, ᾱ std² + 1 − ᾱ)``:
    ``E[ε | z_t] = √(1 − ᾱ)(z_t − √ᾱ mean)/(ᾱ std² + 1 − ᾱ)``, ᾱ of ``schedule`` (the default)."""
    alpha_bar = (schedule or NoiseSchedule()).alphas_cumprod().double()

    def predict(z, t):
        a = float(alpha_bar[t])
        return math.sqrt(1 - a) * (z - math.sqrt(a) * mean) / (a * std**2 + 1 - a)

    return predict


def affine_fit(start: torch.Tensor, end: torch.Tensor) -> tuple[float, float, float]:
    """``end ≈ slope · start + intercept`` by least squares, and the largest residual."""
    x, y = start.flatten(), end.flatten()
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum())
    intercept = float(y.mean() - slope * x.mean())
    return slope, intercept, float((y - slope * x - intercept).abs().max())


def exact_ddim_std(steps: int, eta: float, spacing: str, mean=1.5, std=0.5) -> float:
    """The samples' standard deviation for data ``N(mean, std²)`` and its exact noise estimate
    ``ε̂ = c (z − √ᾱ mean)``: each DDIM step ``z' = √ᾱ' ẑ_0 + √(1 − ᾱ' − σ²) ε̂ + σ n`` is
    ``K z + const + σ n``, so the variance goes ``v' = K² v + σ²`` from ``v = 1``."""
    schedule = NoiseSchedule()
    alpha_bars = schedule.alphas_cumprod().double().tolist()
    timesteps = schedule.sampling_timesteps(steps, spacing)
    variance = 1.0
    for index, timestep in enumerate(timesteps):
        a = alpha_bars[timestep]
        a_next = alpha_bars[timesteps[index + 1]] if index + 1 < len(timesteps) else 1.0
        sigma2 = eta**2 * (1 - a_next) * (1 - a / a_next) / (1 - a)
        c = math.sqrt(1 - a) / (a * std**2 + 1 - a)
        kept = math.sqrt(a_next / a) * (1 - math.sqrt(1 - a) * c)  # of z, through ẑ_0
        gain = kept + math.sqrt(1 - a_next - sigma2) * c
        variance = gain**2 * variance + sigma2
    return math.sqrt(variance)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_coarse_ddim_steps_narrow_exact_samples_as_the_schedule_docs_say(spacing):
    """η = 0: the samples are affine in the start, their slope the exact std; η = 1 (PreDiff's
    default, 20 steps): 20 000 samples' std within 4 standard errors of the exact 0.432."""
    predict, shape = gaussian_noise_estimate(1.5, 0.5), (20_000, 1, 1, 1, 1, 1)

    def samples(eta):
        generator = torch.Generator().manual_seed(3)
        return ddim_sample(predict, shape, NoiseSchedule(), generator, 20, eta, spacing=spacing,
                           dtype=torch.float64)  # fmt: skip

    start = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    slope = affine_fit(start, samples(0.0))[0]
    assert slope == pytest.approx(exact_ddim_std(20, 0.0, spacing), rel=1e-9)
    expected = exact_ddim_std(20, 1.0, spacing)
    assert expected == pytest.approx(0.432, abs=5e-4)  # schedule.py's docstring
    assert float(samples(1.0).std()) == pytest.approx(expected, abs=4 * expected / 200)
    for steps, documented in ((50, 0.468), (100, 0.482), (250, 0.492), (5, 0.329)):
        assert exact_ddim_std(steps, 1.0, "leading") == pytest.approx(documented, abs=5e-4)


@pytest.mark.parametrize("steps", [1, 2, 5, 20])
def test_trailing_ddim_with_the_exact_gaussian_denoiser_has_the_data_mean(steps):
    """Deterministic DDIM is affine in its start ``z ~ N(0, I)`` for Gaussian data, ``z_0 = A z +
    b``, so the samples' mean is ``b``. Trailing timesteps start where ᾱ = 2e-9, so ``N(0, I)`` is
    the right start and ``b`` is the data mean (up to ``A √ᾱ_{T−1} mean`` < 1e-4); leading ones
    start at ``t = (N − 1)⌊T/N⌋`` as if ᾱ were 0 there, and miss it (1.198, 1.322, 1.444 for
    ``N = 2, 5, 20`` and data mean 1.5)."""
    mean, std, shape = 1.5, 0.5, (64, 1, 1, 1, 1, 1)
    predict = gaussian_noise_estimate(mean, std)

    def run(spacing):
        generator = torch.Generator().manual_seed(0)
        z = ddim_sample(
            predict,
            shape,
            NoiseSchedule(),
            generator,
            steps,
            0.0,
            spacing=spacing,
            dtype=torch.float64,
        )
        start = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return start, z

    start, end = run("trailing")
    slope, intercept, residual = affine_fit(start, end)
    assert end.dtype == torch.float64 and residual < 1e-9
    assert intercept == pytest.approx(mean, abs=1e-4)
    assert abs(slope) > 1e-6  # the start still matters (N = 1: the posterior's own slope)
    assert not torch.allclose(end, start, atol=0.1)
    if steps > 1:
        leading = affine_fit(*run("leading"))[1]
        assert abs(leading - mean) > 0.05


@pytest.mark.parametrize(
    "spacing, steps, total",
    [
        ("trailing", 7, 1000),
        ("trailing", 30, 1000),
        ("trailing", 61, 1000),
        ("trailing", 29, 50),
        ("leading", 7, 1000),
    ],
)
def test_ddim_with_an_exact_noise_estimate_is_exact_in_float64(spacing, steps, total):
    """η = 0, float64. Data at a point ``μ``: ``ẑ_0 = μ`` at every step, so every sample is ``μ``
    once the last step reaches ᾱ = 1. Gaussian data ``N(m, s²)``: each step from ᾱ = ``a`` to
    ᾱ′ multiplies ``z_t − √a m`` by ``√ᾱ′ (1 − (1 − a)c)/√a + √(1 − ᾱ′) √(1 − a) c``, ``c =
    1/(a s² + 1 − a)``, so ``z_0 = A z + b`` with ``A`` their product over the listed timesteps
    and ``b + A √ᾱ_{T_1} m = m`` (``T_1`` the first). With ``N`` not dividing ``T`` diffusers'
    step went to ``t − ⌊T/N⌋``, one off the trailing timesteps (and ᾱ = 0.99996 at the end for
    N = 7); for N = 61 (T = 50: N = 29) its list ended at −1, read as ᾱ_{T−1} ≈ 0 (A ≈ 0)."""
    schedule, shape = NoiseSchedule(total), (64, 1, 1, 1, 1, 1)
    bars = schedule.alphas_cumprod().double().tolist()
    if spacing == "trailing":
        times = trailing_timesteps(steps, total)
    else:
        times = [k * (total // steps) for k in reversed(range(steps))]
    seen = []

    def run(predict):
        generator = torch.Generator().manual_seed(0)
        return ddim_sample(
            predict, shape, schedule, generator, steps, 0.0, spacing=spacing, dtype=torch.float64
        )

    point = 1.5
    at_point = run(lambda z, t: (z - math.sqrt(bars[t]) * point) / math.sqrt(1 - bars[t]))
    assert (at_point - point).abs().max() < 1e-12
    mean, std = 1.5, 0.5
    gaussian = gaussian_noise_estimate(mean, std, schedule)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    slope, intercept, residual = affine_fit(
        start, run(lambda z, t: seen.append(t) or gaussian(z, t))
    )
    assert seen == times
    gain = 1.0
    for a, after in zip(
        [bars[t] for t in times], [bars[t] for t in times[1:]] + [1.0], strict=True
    ):
        c = 1 / (a * std**2 + 1 - a)
        gain *= (
            math.sqrt(after) * (1 - (1 - a) * c) / math.sqrt(a)
            + math.sqrt((1 - after) * (1 - a)) * c
        )
    assert residual < 1e-10 and slope == pytest.approx(gain, rel=1e-9)
    assert intercept + slope * math.sqrt(bars[times[0]]) * mean == pytest.approx(mean, abs=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_trailing_ddim_steps_follow_their_formula_by_hand_to_the_next_listed_timestep(eta):
    """N = 7 trailing steps (timesteps 999, 856, …, 142: not ⌊T/N⌋ = 142 apart), a nonlinear
    ε̂ and a constant guide ``g``, float64: ``ε̂′ = ε̂ − √(1 − ᾱ_t) g``, ``x̂_0 = (z − √(1 − ᾱ_t)
    ε̂′)/√ᾱ_t``, ``z′ = √ᾱ′ x̂_0 + √(1 − ᾱ′ − σ²) ε̂′ + σ ξ``, ``σ² = η² (1 − ᾱ′)/(1 − ᾱ_t) (1 −
    ᾱ_t/ᾱ′)`` with ᾱ′ the next listed timestep's (1 after the last); ``z`` and then one ``ξ``
    per step from the generator in that order."""
    bars = NoiseSchedule().alphas_cumprod().double()
    shape, g, steps = (2, 1, 1, 1, 2, 3), 0.3, 7
    times = trailing_timesteps(steps)

    def predict(z, t):
        return torch.tanh(z) * (1 + t / 1000)

    generator = torch.Generator().manual_seed(9)
    z = torch.randn(shape, generator=generator, dtype=torch.float64)
    for i, t in enumerate(times):
        a = float(bars[t])
        after = float(bars[times[i + 1]]) if i + 1 < steps else 1.0
        eps = predict(z, t) - math.sqrt(1 - a) * g
        clean = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        sigma2 = eta**2 * (1 - after) / (1 - a) * (1 - a / after)
        z = math.sqrt(after) * clean + math.sqrt(1 - after - sigma2) * eps
        if eta > 0:
            z = z + math.sqrt(sigma2) * torch.randn(shape, generator=generator, dtype=torch.float64)
    out = ddim_sample(
        predict, shape, NoiseSchedule(), torch.Generator().manual_seed(9), steps, eta,
        lambda z_t, step: torch.full_like(z_t, g), spacing="trailing", dtype=torch.float64,
    )  # fmt: skip
    torch.testing.assert_close(out, z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("guided", [False, True])
def test_a_noise_estimate_of_the_wrong_shape_or_not_finite_is_refused(guided):
    """A wrong-shaped ε̂ would broadcast, a NaN one turn every latent NaN: both are refused,
    naming ``predict`` and the timestep, also when a guide's ``denoise`` asks for it."""

    def guidance(z_t, step):
        step.denoise(z_t)
        return torch.zeros_like(z_t)

    def run(predict):
        ddim_sample(
            predict, (2, 1, 1, 1, 1, 3), NoiseSchedule(), torch.Generator().manual_seed(0), 5,
            0.0, guidance if guided else None,
        )  # fmt: skip

    shape = r"\(2, 1, 1, 1, 1, 3\)"
    not_finite = r"^predict returned NaN or inf values at timestep 600$"
    with pytest.raises(ValueError, match=rf"^predict must return a tensor shaped like z_t {shape}"):
        run(lambda z, t: 0.5 * z[:1])
    with pytest.raises(ValueError, match=r"got \(1, 1, 1, 1, 3\) at timestep 800$"):
        run(lambda z, t: 0.5 * z[0])
    with pytest.raises(ValueError, match=r"^predict must return a tensor.*got list at timestep"):
        run(lambda z, t: [0.0])
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match=not_finite):
            run(lambda z, t, bad=bad: z * (bad if t == 600 else 0.5))


def test_eta0_is_deterministic_and_eta1_draws_noise_every_step():
    shape = (2, 1, T_OUT, *LATENT)
    model = live(denoiser("conv"))
    context = torch.randn(2, T_IN, *LATENT)

    def predict(z, t):
        return model(z.flatten(0, 1), torch.full((2,), t), context).reshape(z.shape)

    def run(seed, eta):
        generator = torch.Generator().manual_seed(seed)
        z = ddim_sample(predict, shape, NoiseSchedule(), generator, 5, eta)
        return z, generator

    a, generator = run(0, 0.0)
    assert torch.equal(a, run(0, 0.0)[0])
    # eta = 0 draws z_T and nothing else: the generator stands where one draw leaves it
    once = torch.Generator().manual_seed(0)
    torch.randn(shape, generator=once)
    assert torch.equal(generator.get_state(), once.get_state())
    b, _ = run(0, 1.0)
    assert torch.equal(b, run(0, 1.0)[0])
    assert not torch.equal(b, run(1, 1.0)[0]) and not torch.equal(a, b)


def test_guidance_reaches_its_analytic_target_and_sees_each_step():
    point = torch.randn(T_OUT, *LATENT, generator=torch.Generator().manual_seed(4))
    exact, shape, steps = Exact(), (3, 2, T_OUT, *LATENT), 6
    seen = []

    def predict(z, t):
        return exact(z, torch.full(z.shape[:1], t), None)

    def guidance(z_t, step):
        seen.append(step)
        z = z_t.clone().requires_grad_()
        estimate = step.denoise(z)  # exact for data at 0: ẑ_0 = 0, and differentiable
        assert torch.allclose(estimate, torch.zeros_like(z), atol=1e-3) and estimate.requires_grad
        return math.sqrt(step.alpha_bar) / (1 - step.alpha_bar) * point.expand_as(z_t)

    for eta in (0.0, 1.0):
        seen.clear()
        generator = torch.Generator().manual_seed(0)
        z = ddim_sample(predict, shape, NoiseSchedule(), generator, steps, eta, guidance)
        assert torch.allclose(z, point.expand(shape), atol=1e-4)
        alpha_bar = NoiseSchedule().alphas_cumprod()
        assert [s.index for s in seen] == list(range(steps))
        assert [s.timestep for s in seen] == schedule_timesteps(steps)
        assert all(s.alpha_bar == float(alpha_bar[s.timestep]) for s in seen)
    unguided = ddim_sample(predict, shape, NoiseSchedule(), torch.Generator(), steps, 0.0)
    assert unguided.abs().max() < 1e-4


def test_a_guide_that_denoises_z_t_shares_the_steps_denoiser_pass(monkeypatch):
    model = live(denoiser("conv"))
    shape, steps = (2, 1, T_OUT, *LATENT), 4
    context = torch.randn(2, T_IN, *LATENT)
    calls = []

    def predict(z, t):
        calls.append(t)
        return model(z.flatten(0, 1), torch.full((2,), t), context).reshape(z.shape)

    def guidance(z_t, step):  # pulls the clean estimate's mean toward 0.3
        z = z_t.clone().requires_grad_()
        loss = (step.denoise(z).mean() - 0.3).square()
        return -torch.autograd.grad(loss, z)[0]

    def run():
        calls.clear()
        generator = torch.Generator().manual_seed(0)
        return ddim_sample(predict, shape, NoiseSchedule(), generator, steps, 1.0, guidance)

    shared = run()
    assert len(calls) == steps  # one pass per step: the guide's, reused by the step
    # the step's own pass (what a guide that denoises elsewhere gets) lands on the same latents
    monkeypatch.setattr("physml.models.prediff.sampler._same", lambda z_t, z: False)
    separate = run()
    assert len(calls) == 2 * steps
    assert torch.allclose(shared, separate, atol=1e-6)


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_guided_samples_do_not_depend_on_other_batch_entries(kind):
    prediff = PreDiff(autoencoder(), live(denoiser(kind)))
    target = torch.tensor([0.2, 0.4])

    def guidance(z_t, step):  # per-sample: each sample's decoded mean intensity to its target
        z = z_t.clone().requires_grad_()
        intensity = step.decode(step.denoise(z)).mean((2, 3, 4, 5))
        loss = 0.5 * (intensity - target).square().sum()
        return -10.0 * torch.autograd.grad(loss, z)[0]

    context = frames(2)[:, :T_IN]
    other = context.clone()
    other[1] = frames(1, seed=5)[0, :T_IN]
    options = dict(guidance=guidance, members=2, steps=3, eta=1.0, seed=7)
    first, second = prediff.sample(context, **options), prediff.sample(other, **options)
    assert torch.equal(first.samples[:, 0], second.samples[:, 0])
    assert not torch.equal(first.samples[:, 1], second.samples[:, 1])
    unguided = prediff.sample(context, members=2, steps=3, eta=1.0, seed=7)
    assert not torch.equal(first.samples, unguided.samples)


# ------------------------------------------------------------------------------ the model


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_sample_returns_an_ensemble_of_frames(kind):
    prediff = PreDiff(autoencoder(), live(denoiser(kind)))
    assert isinstance(prediff, Sampler)
    context = frames(3)[:, :T_IN]
    out = prediff(context, members=4, steps=2, seed=0)
    assert isinstance(out, Ensemble) and out.samples.shape == (4, 3, T_OUT, 1, SIZE, SIZE)
    assert 0.0 <= float(out.samples.min()) and float(out.samples.max()) <= 1.0
    again = prediff.sample(context, members=4, steps=2, seed=torch.Generator().manual_seed(0))
    assert torch.equal(out.samples, again.samples)
    rebuilt = PreDiff.from_config(json.loads(json.dumps(prediff.config)))
    rebuilt.load_state_dict(prediff.state_dict())
    assert torch.equal(rebuilt(context, members=4, steps=2, seed=0).samples, out.samples)


def test_the_same_contexts_and_seed_draw_the_same_samples_whatever_ran_before():
    prediff = PreDiff(autoencoder(), live(denoiser("conv")))
    context = frames(3)[:, :T_IN]
    first = prediff.sample(context, members=3, steps=3, seed=5).samples
    torch.manual_seed(123)
    torch.rand(7)
    prediff.sample(context[1:], members=2, steps=4, seed=6)
    again = prediff.sample(context, members=3, steps=3, seed=5).samples
    assert torch.equal(first, again)


def test_constrain_steers_prediff_through_the_sampler_seam():
    prediff = PreDiff(autoencoder(), Exact())
    point = torch.randn(T_OUT, *LATENT, generator=torch.Generator().manual_seed(5))
    toward = Toward(point)
    context = frames(2)[:, :T_IN]
    out = constrain(prediff, toward)(context, members=3, steps=4, eta=1.0, seed=0)
    expected = prediff.decode(point).expand(3, 2, T_OUT, 1, SIZE, SIZE)
    assert torch.allclose(out.samples, expected, atol=1e-4)
    assert [s.index for _, s, _ in toward.seen] == [0, 1, 2, 3]
    assert all(shape == (3, 2, T_OUT, *LATENT) for shape, _, _ in toward.seen)
    assert all(seen_context is context for _, _, seen_context in toward.seen)
    plain = prediff(context, members=3, steps=4, eta=1.0, seed=0)
    zero = prediff.decode(torch.zeros(T_OUT, *LATENT)).expand_as(plain.samples)
    assert torch.allclose(plain.samples, zero, atol=1e-4)


def test_spacing_reaches_the_sampler_through_constrain():
    prediff = PreDiff(autoencoder(), Exact())
    point = torch.randn(T_OUT, *LATENT, generator=torch.Generator().manual_seed(6))
    context = frames(2)[:, :T_IN]
    for spacing, timesteps in (("trailing", [999, 749, 499, 249]), ("leading", [750, 500, 250, 0])):
        toward = Toward(point)
        constrain(prediff, toward)(context, members=2, steps=4, eta=0.0, seed=0, spacing=spacing)
        assert [step.timestep for _, step, _ in toward.seen] == timesteps
    plain = prediff.sample(context, members=2, steps=1, spacing="trailing")
    zero = prediff.decode(torch.zeros(T_OUT, *LATENT)).expand_as(plain.samples)
    assert torch.allclose(plain.samples, zero, atol=1e-3)


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_a_float64_prediff_samples_and_trains_in_float64(kind):
    prediff = PreDiff(autoencoder(), live(denoiser(kind))).double()
    context = frames(2)[:, :T_IN]  # float32 frames: the autoencoder casts them
    starts = []

    def record(z_t, step):
        if step.index == 0:
            starts.append(z_t)
        return torch.zeros_like(z_t)

    out = prediff.sample(context, guidance=record, members=2, steps=3, eta=1.0, seed=4)
    assert out.samples.dtype == torch.float64 and torch.isfinite(out.samples).all()
    drawn = torch.randn(
        (2, 2, T_OUT, *LATENT), generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    assert starts[0].dtype == torch.float64 and torch.equal(starts[0], drawn)
    target = prediff.encode(frames(2)[:, T_IN:])
    batch = (prediff.encode(context), target)
    assert batch[0].dtype == torch.float64
    torch.manual_seed(0)
    loss = diffusion_loss(prediff, batch)
    loss.backward()
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    grads = [p.grad for p in prediff.denoiser.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float64 for g in grads)


def test_check_context_is_public_and_returns_a_good_context_unchanged():
    """What :meth:`PreDiff.sample` takes, checked (training's pair check calls it too)."""
    prediff = PreDiff(autoencoder(), denoiser("conv"))
    context = frames(2)[:, :T_IN]
    assert prediff.check_context(context) is context
    with pytest.raises(TypeError, match=r"^context must be a tensor \(B, T, C, H, W\), got list"):
        prediff.check_context(context.tolist())
    with pytest.raises(TypeError, match=r"^context must be a floating-point tensor"):
        prediff.check_context(context.long())
    small = r"^context must have frames of 16 × 16 .*\(2, 2, 1, 8, 8\)"
    with pytest.raises(ValueError, match=small):
        prediff.check_context(context[..., :8, :8])
    with pytest.raises(ValueError, match=r"^context must have 2 frame\(s\) on axis 1"):
        prediff.check_context(context[:, :1])


def test_bad_input_names_the_argument():
    prediff = PreDiff(autoencoder(), denoiser("conv"))
    context = frames(2)[:, :T_IN]
    bad_contexts = [
        (context[:, :1], "context must have 2 frame"),
        (torch.rand(2, T_IN, 3, SIZE, SIZE), "context must have 1 channel"),
        (torch.rand(2, T_IN, 1, 32, 32), "context must have frames of 16 × 16"),
        (
            torch.rand(2, T_IN, 1, 17, 16),
            r"context must have frames of 16 × 16 .*\(2, 2, 1, 17, 16\)",
        ),
        (torch.rand(T_IN, 1, SIZE, SIZE), r"context must have shape \(B, T, C, H, W\)"),
    ]
    for bad, match in bad_contexts:
        with pytest.raises(ValueError, match=match):
            prediff.sample(bad)
    for options, match in [
        (dict(members=1), "members must be an integer >= 2"),
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=2000), "steps must be <= the 1000"),
        (dict(eta=-0.1), r"eta must be a number in \[0, 1\]"),
        (dict(eta=1.5), r"eta must be a number in \[0, 1\]"),
        (dict(guidance=lambda z, s: z[0]), "guidance must return a tensor shaped like z_t"),
    ]:
        with pytest.raises(ValueError, match=match):
            prediff.sample(context, steps=options.pop("steps", 2), **options)
    for bad in ("lead", None):
        with pytest.raises(ValueError, match=r"spacing must be one of .*, got " + repr(bad)):
            prediff.sample(context, steps=2, spacing=bad)
    with pytest.raises(ValueError, match="steps must be >= 2 with spacing='leading'"):
        prediff.sample(context, steps=1)
    with pytest.raises(TypeError, match="seed must be"):
        prediff.sample(context, steps=1, seed=-1)
    with pytest.raises(ValueError, match="denoiser works on 2 latent channels"):
        PreDiff(FrameAutoencoder(latent_channels=4), denoiser("conv"))
    with pytest.raises(TypeError, match="Denoiser protocol"):
        PreDiff(autoencoder(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="z_t must have shape"):
        denoiser("conv")(
            torch.rand(1, 3, *LATENT),
            torch.zeros(1, dtype=torch.long),
            torch.rand(1, T_IN, *LATENT),
        )
    for kind in ("conv", "cuboid"):  # a NaN latent would spread over the whole ε̂
        for bad in (float("nan"), float("inf")):
            z_t, context = torch.rand(1, T_OUT, *LATENT), torch.rand(1, T_IN, *LATENT)
            step = torch.zeros(1, dtype=torch.long)
            with pytest.raises(ValueError, match="^z_t contains NaN or inf values"):
                denoiser(kind)(z_t.index_fill(3, torch.tensor([1]), bad), step, context)
            with pytest.raises(ValueError, match="^context contains NaN or inf values"):
                denoiser(kind)(z_t, step, context.index_fill(4, torch.tensor([2]), bad))
    with pytest.raises(ValueError, match=r"t must be an integer tensor .* got torch.float32"):
        denoiser("conv")(torch.rand(1, T_OUT, *LATENT), torch.ones(1), torch.rand(1, T_IN, *LATENT))
    for widths in ((8.7,), ("a",)):
        with pytest.raises(TypeError, match="widths must be an integer >= 1"):
            ConvDenoiser(T_IN, T_OUT, LATENT, widths=widths)


# ------------------------------------------------------------------------------ progress


class Terminal(io.StringIO):
    """Stands for stderr on a terminal, where a bar is drawn."""

    def isatty(self) -> bool:
        return True


def written(monkeypatch, draw, *args, **kwargs):
    """What ``draw(*args, **kwargs)`` returns and what it wrote to a terminal's stderr."""
    monkeypatch.setattr(sys, "stderr", Terminal())
    return draw(*args, **kwargs), sys.stderr.getvalue()


def test_ddim_sample_shows_a_bar_of_its_steps_and_draws_the_same_latents_without(monkeypatch):
    exact = Exact(torch.full((T_OUT, *LATENT), 0.3))

    def predict(z, t):  # latents (members, batch, T_out, c, h, w)
        flat = z.flatten(0, 1)
        return exact(flat, torch.full((len(flat),), t), None).view(z.shape)

    def draw(progress):
        generator = torch.Generator().manual_seed(4)
        guide = lambda z_t, step: torch.full_like(z_t, 0.5)  # noqa: E731
        shape = (2, 1, T_OUT, *LATENT)
        schedule = NoiseSchedule()
        return ddim_sample(
            predict, shape, schedule, generator, 5, guidance=guide, progress=progress
        )

    shown, drawn = written(monkeypatch, draw, True)
    quiet, silent = written(monkeypatch, draw, False)
    assert torch.equal(shown, quiet)
    assert "DDIM steps" in drawn and "/5" in drawn and silent == ""


def test_prediff_samples_with_and_without_a_bar_are_equal_guided_or_not(monkeypatch):
    prediff = PreDiff(autoencoder(), live(denoiser("conv")))
    point = torch.randn(T_OUT, *LATENT, generator=torch.Generator().manual_seed(5))
    guided = constrain(prediff, Toward(point))
    context = frames(2)[:, :T_IN]
    options = dict(members=2, steps=3, seed=1)
    for call in (prediff, prediff.sample, guided, guided.sample):
        shown, drawn = written(monkeypatch, call, context, **options, progress=True)
        quiet, silent = written(monkeypatch, call, context, **options, progress=False)
        assert torch.equal(shown.samples, quiet.samples)
        assert "DDIM steps" in drawn and "/3" in drawn and silent == ""
    unguided = prediff.sample(context, **options).samples
    assert not torch.equal(guided(context, **options).samples, unguided)


@pytest.mark.parametrize("progress", ["yes", 1, None, np.int64(0)])
def test_a_progress_that_is_not_a_bool_is_refused_by_name(progress):
    prediff = PreDiff(autoencoder(), denoiser("conv"))
    match = rf"^progress must be True or False, got {re.escape(repr(progress))}$"
    with pytest.raises(TypeError, match=match):
        prediff.sample(frames(1)[:, :T_IN], members=2, steps=2, progress=progress)
    with pytest.raises(TypeError, match=match):
        ddim_sample(
            lambda z, t: z, (2, 1, 1), NoiseSchedule(), torch.Generator(), 2, progress=progress
        )


def test_denoiser_sizes_are_refused_by_name_not_truncated_or_divided_by():
    """``latent_shape`` and ``depth`` entries were truncated (4.5 → 4), ``num_heads = 0`` a bare
    ZeroDivisionError; a ratio <= 0 or NaN gave one hidden unit."""
    for kind in (ConvDenoiser, CuboidDenoiser):
        with pytest.raises(TypeError, match=r"^latent_shape must hold integers, got \(2, 4.5, 4\)"):
            kind(T_IN, T_OUT, (2, 4.5, 4))
        with pytest.raises(ValueError, match=r"^latent_shape must be a sequence of 3 integers"):
            kind(T_IN, T_OUT, (2, 8))
        with pytest.raises(
            ValueError, match=r"^latent_shape entries must be >= 1, got \(0, 8, 8\)"
        ):
            kind(T_IN, T_OUT, (0, 8, 8))
    with pytest.raises(TypeError, match=r"^depth must hold integers, got \(1.5, 1\)"):
        CuboidDenoiser(T_IN, T_OUT, LATENT, dim=8, depth=(1.5, 1), num_heads=2)
    for heads, error in ((0, ValueError), (-2, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match=rf"^num_heads must be an integer >= 1, got {heads}"):
            CuboidDenoiser(T_IN, T_OUT, LATENT, dim=8, num_heads=heads)
    for ratio in (-1.0, 0, math.nan):
        with pytest.raises(ValueError, match=r"^mlp_ratio must be a finite number > 0"):
            CuboidDenoiser(T_IN, T_OUT, LATENT, dim=8, num_heads=2, mlp_ratio=ratio)


def test_denoiser_sizes_take_numpy_integers_and_integer_arrays_as_python_ints():
    """``latent_shape`` and ``depth`` holding numpy integers, or given as a 1-D integer array,
    were refused as not integers once ``_ints`` checked them; they are plain ints in the config
    (which JSON writes)."""
    for kind in (ConvDenoiser, CuboidDenoiser):
        sizes = dict(dim=8, num_heads=2) if kind is CuboidDenoiser else {}
        for shape in ((np.int64(2), np.int32(8), 8), np.array([2, 8, 8]), torch.tensor([2, 8, 8])):
            model = kind(T_IN, T_OUT, shape, **sizes)
            assert model.latent_shape == (2, 8, 8)
            assert {type(size) for size in model.latent_shape} == {int}
        with pytest.raises(TypeError, match=r"^latent_shape must hold integers, got array"):
            kind(T_IN, T_OUT, np.array([2.0, 8.0, 8.0]), **sizes)
        with pytest.raises(ValueError, match=r"^latent_shape must be a sequence of 3 integers"):
            kind(T_IN, T_OUT, np.array([2, 8]), **sizes)
    model = CuboidDenoiser(T_IN, T_OUT, LATENT, dim=8, num_heads=2, depth=np.array([1, 2]))
    assert (len(model.encoder), len(model.middle)) == (1, 2)
    assert json.loads(json.dumps(model.config))["depth"] == [1, 2]
    with pytest.raises(TypeError, match=r"^depth must hold integers, got \("):
        CuboidDenoiser(T_IN, T_OUT, LATENT, dim=8, num_heads=2, depth=(np.True_, 1))


def test_attention_sizes_take_numpy_integers_as_python_ints():
    """``num_heads`` and ``dim`` as numpy integers passed the denoiser's own check, then were
    refused inside the attention blocks as "not a positive integer"."""
    model = CuboidDenoiser(T_IN, T_OUT, LATENT, dim=np.int64(8), num_heads=np.int64(2))
    blocks = [m for m in model.modules() if hasattr(m, "head_dim")]
    assert blocks and all(block.head_dim * 2 == block.dim for block in blocks)
    assert {(type(block.dim), block.num_heads, type(block.num_heads)) for block in blocks} == {
        (int, 2, int)
    }
    with pytest.raises(ValueError, match=r"^num_heads must be an integer >= 1, got 0$"):
        CuboidSelfAttention(8, np.int64(0), (1, 2, 2))
    for heads in (2.0, np.True_):
        with pytest.raises(TypeError, match=rf"^num_heads must be an integer >= 1, got {heads!r}$"):
            CuboidSelfAttention(8, heads, (1, 2, 2))


def test_denoiser_configs_hold_python_numbers_json_writes():
    """Sizes given as numpy numbers were kept so in the config, and json.dumps refused it."""
    frames = dict(context_frames=np.int64(T_IN), target_frames=np.int32(T_OUT))
    cuboid = CuboidDenoiser(
        **frames,
        latent_shape=LATENT,
        dim=np.int64(8),
        depth=(1, 1),
        num_heads=np.int64(2),
        patch=np.int64(1),
        mlp_ratio=np.float32(2.0),
    )
    conv = ConvDenoiser(**frames, latent_shape=LATENT, widths=(np.int64(8),), blocks=np.int64(1))
    expected = dict(context_frames=T_IN, target_frames=T_OUT, latent_shape=list(LATENT))
    assert json.loads(json.dumps(cuboid.config)) == dict(
        kind="cuboid",
        **expected,
        dim=8,
        depth=[1, 1],
        num_heads=2,
        patch=1,
        pattern="axial",
        mlp_ratio=2.0,
    )
    assert json.loads(json.dumps(conv.config)) == dict(
        kind="conv", **expected, widths=[8], blocks=1
    )


# --------------------------------------------------------------------------------- training


class Interrupted(Exception):
    pass


def interrupt_after(loss, calls: int):
    count = 0

    def wrapped(model, batch):
        nonlocal count
        count += 1
        if count > calls:
            raise Interrupted
        return loss(model, batch)

    return wrapped


def _train(model, loss, data, out, steps=6, after_step=None, interrupt=None):
    config = TrainConfig(steps=steps, batch=4, lr=3e-3, checkpoint_every=2, seed=0)
    if interrupt is not None:
        loss = interrupt_after(loss, interrupt)
    trainer = Trainer(model, loss, config, out=out, quiet=True, after_step=after_step)
    return trainer.fit(data)


def _same(a: nn.Module, b: nn.Module) -> bool:
    one, two = a.state_dict(), b.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_both_stages_train_and_resume_bitwise(tmp_path, kind):
    data = pairs()

    def stage_one(out, interrupt=None):
        torch.manual_seed(0)
        model = PreDiff(autoencoder(), denoiser(kind))
        args = (model.autoencoder, autoencoder_loss, data, out)
        if interrupt is not None:
            with pytest.raises(Interrupted):
                _train(*args, interrupt=interrupt)
            torch.manual_seed(0)
            model = PreDiff(autoencoder(), denoiser(kind))
            args = (model.autoencoder, autoencoder_loss, data, out)
        return model, _train(*args)

    whole, report = stage_one(tmp_path / "ae-whole")
    resumed, resumed_report = stage_one(tmp_path / "ae-killed", interrupt=5)
    assert resumed_report.resumed_from == 4 and resumed_report.losses == report.losses
    assert _same(whole.autoencoder, resumed.autoencoder)
    before = reconstruction_scores(autoencoder(), frames())
    after = reconstruction_scores(whole.autoencoder, frames())
    assert after["mse"] < before["mse"] and set(after) == {"mse", "frame_mse", "ssim"}

    def stage_two(model, out, interrupt=None):
        model.calibrate(frames())
        latents = LatentPairs(model, data)
        if interrupt is not None:
            with pytest.raises(Interrupted):
                _train(model, diffusion_loss, latents, out, 6, update_ema, interrupt)
            model = PreDiff(autoencoder(), denoiser(kind))
            model.autoencoder.load_state_dict(whole.autoencoder.state_dict())
            model.calibrate(frames())
        return model, _train(model, diffusion_loss, latents, out, 6, update_ema)

    first, report = stage_two(whole, tmp_path / "dn-whole")
    second, resumed_report = stage_two(resumed, tmp_path / "dn-killed", interrupt=3)
    assert resumed_report.resumed_from == 2 and resumed_report.losses == report.losses
    assert _same(first, second) and int(first.ema.n_averaged) == 6
    ema = dict(first.ema.module.named_parameters())
    assert any(not torch.equal(p, ema[n]) for n, p in first.denoiser.named_parameters())


def test_latent_pairs_and_the_diffusion_loss_of_a_silent_denoiser():
    prediff = PreDiff(autoencoder(), denoiser("conv"))  # zero output layer: ε̂ = 0
    data = pairs(4)
    latents = LatentPairs(prediff, data)
    context, target = data[1]
    assert torch.equal(latents[1][0], prediff.encode(context[None])[0])
    assert torch.equal(latents[1][1], prediff.encode(target[None])[0])
    batch = (latents.context, latents.target)
    torch.manual_seed(0)
    loss = diffusion_loss(prediff, batch)
    torch.manual_seed(0)
    torch.randint(0, 1000, (4,))
    assert torch.allclose(loss, torch.randn_like(latents.target).square().mean())


def test_stochastic_ddim_has_the_variance_of_its_own_recurrence():
    """Gaussian data N(m, s²), the exact ε̂, η = 1: each step z' = √ᾱ' x̂ + √(1 − ᾱ' − σ²) ε̂ + σξ
    is affine in (z, ξ), so the samples' mean and variance follow a scalar recurrence with
    σ² = η²(1 − ᾱ')/(1 − ᾱ)·(1 − ᾱ/ᾱ') (DDIM); 20 000 samples against it."""
    mean, std, eta, steps = 1.5, 0.5, 1.0, 10
    schedule = NoiseSchedule()
    bars = schedule.alphas_cumprod().double()
    times = schedule.sampling(steps, "trailing").timesteps.tolist()

    def predict(z, t):
        a = float(bars[t])
        return math.sqrt(1 - a) * (z - math.sqrt(a) * mean) / (a * std**2 + 1 - a)

    shape = (20000, 1, 1, 1, 1, 1)
    out = ddim_sample(
        predict, shape, schedule, torch.Generator().manual_seed(0), steps, eta,
        spacing="trailing", dtype=torch.float64,
    )  # fmt: skip
    mu, var = 0.0, 1.0
    for i, t in enumerate(times):
        a = float(bars[t])
        after = float(bars[times[i + 1]]) if i + 1 < len(times) else 1.0
        c = 1.0 / (a * std**2 + 1 - a)
        sigma2 = eta**2 * (1 - after) / (1 - a) * (1 - a / after)
        rest = math.sqrt(1 - after - sigma2) * math.sqrt(1 - a) * c
        gain = math.sqrt(after) * (1 - (1 - a) * c) / math.sqrt(a) + rest
        shift = math.sqrt(after) * (1 - a) * c * mean - rest * math.sqrt(a) * mean
        mu, var = gain * mu + shift, gain**2 * var + sigma2
    assert float(out.var()) == pytest.approx(var, rel=0.05)
    assert float(out.mean()) == pytest.approx(mu, abs=0.02)


def cosine_alpha_bar(timesteps: int = 1000) -> torch.Tensor:
    """ᾱ_t = Π_{i ≤ t} (1 − β_i), β_i = min(1 − f((i+1)/T)/f(i/T), 0.999), f(s) = cos²((s +
    0.008)/1.008 · π/2) (Nichol & Dhariwal's cosine schedule)."""

    def f(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / timesteps) / f(i / timesteps), 0.999) for i in range(timesteps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)


def test_the_cosine_schedule_has_the_closed_form_alpha_bar():
    ours = NoiseSchedule().alphas_cumprod().double()
    assert torch.allclose(ours, cosine_alpha_bar(), rtol=1e-5, atol=1e-9)
    assert NoiseSchedule(timesteps=50).alphas_cumprod().shape == (50,)


def test_diffusion_loss_is_the_noise_error_at_uniform_timesteps_of_the_forward_process():
    prediff = PreDiff(autoencoder(), live(denoiser("conv")))
    generator = torch.Generator().manual_seed(3)
    context = torch.randn(4, T_IN, *LATENT, generator=generator)
    target = torch.randn(4, T_OUT, *LATENT, generator=generator)
    torch.manual_seed(11)
    loss = diffusion_loss(prediff, (context, target))
    torch.manual_seed(11)
    t = torch.randint(0, 1000, (4,))
    noise = torch.randn_like(target)
    a = cosine_alpha_bar()[t].float()[:, None, None, None, None]
    noisy = a.sqrt() * target + (1 - a).sqrt() * noise
    with torch.no_grad():
        expected = (prediff.denoiser(noisy, t, context) - noise).square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_noise_is_the_forward_process_at_each_entry_s_own_timestep(dtype):
    generator = torch.Generator().manual_seed(8)
    clean = torch.randn(3, T_OUT, *LATENT, generator=generator, dtype=dtype)
    noise = torch.randn(3, T_OUT, *LATENT, generator=generator, dtype=dtype)
    t = torch.tensor([0, 517, 999])
    noisy = NoiseSchedule().add_noise(clean, noise, t)
    a = cosine_alpha_bar()[t][:, None, None, None, None]  # the closed form, float64
    expected = a.sqrt() * clean.double() + (1 - a).sqrt() * noise.double()
    assert noisy.dtype == dtype  # diffusers' ᾱ is float32 (1e-6 from the closed form) either way
    torch.testing.assert_close(noisy.double(), expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"noise": torch.zeros(1, 4)}, ValueError, r"^noise must have the shape of clean \(3, 4\)"),
        ({"noise": [0.0] * 4}, TypeError, "^noise must be a tensor, got list$"),
        ({"timesteps": torch.tensor([0.0, 1.0, 2.0])}, TypeError, "^timesteps must be integers"),
        ({"timesteps": torch.tensor([0, 1])}, ValueError, r"^timesteps must have shape \(B,\)"),
        ({"timesteps": torch.tensor([[0, 1, 2]])}, ValueError, r"^timesteps must have shape"),
        ({"timesteps": [0, 1, 2]}, TypeError, "^timesteps must be a tensor, got list$"),
    ],
)
def test_add_noise_refuses_arguments_of_another_type_or_shape_by_name(change, error, message):
    """Refused before diffusers sees them: a noise of another shape would broadcast silently."""
    arguments = {"clean": torch.ones(3, 4), "noise": torch.zeros(3, 4)}
    arguments["timesteps"] = torch.tensor([0, 1, 2])
    with pytest.raises(error, match=message):
        NoiseSchedule(10).add_noise(**{**arguments, **change})


def test_the_ema_moves_by_one_minus_decay_toward_the_denoiser():
    prediff = PreDiff(autoencoder(), denoiser("conv"), ema_decay=0.9)
    update_ema(prediff, 1)  # the first update copies the weights
    before = [p.detach().clone() for p in prediff.ema.module.parameters()]
    with torch.no_grad():
        for p in prediff.denoiser.parameters():
            p.add_(1.0)
    update_ema(prediff, 2)
    for p, q in zip(prediff.ema.module.parameters(), before, strict=True):
        torch.testing.assert_close(p, q + 0.1)


def test_a_prediff_pickles_whole_and_its_ema_keeps_its_decay():
    """``pickle`` and ``torch.save(model)`` take it (the EMA's averaging function was torch's
    local one); the copies sample the same at the same seed, and an EMA update in either is
    ``ema + (1 − decay) (denoiser − ema)``, bitwise ``torch.lerp``'s."""
    decay = 0.9
    prediff = PreDiff(autoencoder(), live(denoiser("conv")), ema_decay=decay)
    update_ema(prediff, 1)
    with torch.no_grad():
        for p in prediff.denoiser.parameters():
            p.mul_(1.5)
    update_ema(prediff, 2)  # the EMA now differs from both the first and the live weights
    saved = io.BytesIO()
    torch.save(prediff, saved)
    saved.seek(0)
    copies = [pickle.loads(pickle.dumps(prediff)), torch.load(saved, weights_only=False)]
    context = torch.rand(2, T_IN, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    options = dict(members=2, steps=2, seed=3)
    expected = prediff.sample(context, **options).samples
    for copy in copies:
        assert torch.equal(copy.sample(context, **options).samples, expected)
    for model in (prediff, *copies):
        before = [p.clone() for p in model.ema.module.parameters()]
        with torch.no_grad():
            for p in model.denoiser.parameters():
                p.add_(0.25)
        update_ema(model, 3)
        pairs = zip(model.ema.module.parameters(), before, model.denoiser.parameters(), strict=True)
        for new, old, current in pairs:
            assert torch.equal(new, torch.lerp(old, current, 1 - decay))
            torch.testing.assert_close(new, decay * old + (1 - decay) * current)


def test_autoencoder_loss_is_mse_plus_a_tenth_of_l1_over_every_frame_of_a_pair():
    model = autoencoder()
    generator = torch.Generator().manual_seed(5)
    context = torch.rand(2, 3, 1, SIZE, SIZE, generator=generator)
    target = torch.rand(2, 1, 1, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        error_c, error_t = model(context) - context, model(target) - target
        mse = (error_c.square().sum() + error_t.square().sum()) / (4 * 2 * SIZE**2)
        l1 = (error_c.abs().sum() + error_t.abs().sum()) / (4 * 2 * SIZE**2)
        loss = autoencoder_loss(model, (context, target))
    assert float(loss) == pytest.approx(float(mse + 0.1 * l1), rel=1e-5)


def test_the_guides_denoise_is_the_clean_latent_of_the_noise_estimate():
    """``denoise(z_t) = (z_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t`` with ᾱ from the closed form."""
    alpha_bar, seen = cosine_alpha_bar(), []

    def guidance(z, step):
        seen.append((step.timestep, step.alpha_bar, z, step.denoise(z)))
        return torch.zeros_like(z)

    shape = (2, 1, 1, 1, 2, 2)
    ddim_sample(
        lambda z, t: torch.full_like(z, 0.5), shape, NoiseSchedule(),
        torch.Generator().manual_seed(0), 3, 0.0, guidance, dtype=torch.float64,
    )  # fmt: skip
    assert len(seen) == 3
    for timestep, a, z, clean in seen:
        assert a == pytest.approx(float(alpha_bar[timestep]), rel=1e-5)
        torch.testing.assert_close(clean, (z - (1 - a) ** 0.5 * 0.5) / a**0.5, rtol=1e-5, atol=0)


# ----------------------------------------------------------------- from a mutation pass


def test_ddim_steps_follow_their_formula_by_hand_with_the_guidance_shift():
    """Constant ε̂ = c and constant guide g: every step is ``ε̂′ = c − √(1 − ᾱ_t) g``,
    ``x̂_0 = (z − √(1 − ᾱ_t) ε̂′)/√ᾱ_t``, ``z′ = √ᾱ′ x̂_0 + √(1 − ᾱ′ − σ²) ε̂′ + σ ξ`` with
    ``σ² = η² (1 − ᾱ′)/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ′)``, ᾱ′ = 1 after the last step, ``z`` and then one
    ``ξ`` per step drawn from the generator in that order; ᾱ from the closed form."""
    alpha_bar = cosine_alpha_bar()
    shape, c, g = (2, 1, 1, 1, 2, 3), 0.5, 0.3
    for eta, steps in ((1.0, 2), (1.0, 4), (0.5, 3), (0.0, 3)):
        times = [k * (1000 // steps) for k in reversed(range(steps))]
        generator = torch.Generator().manual_seed(9)
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        for i, t in enumerate(times):
            a = float(alpha_bar[t])
            after = float(alpha_bar[times[i + 1]]) if i + 1 < steps else 1.0
            eps = c - math.sqrt(1 - a) * g
            clean = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
            sigma2 = eta**2 * (1 - after) / (1 - a) * (1 - a / after)
            z = math.sqrt(after) * clean + math.sqrt(1 - after - sigma2) * eps
            if eta > 0:
                z = z + math.sqrt(sigma2) * torch.randn(
                    shape, generator=generator, dtype=torch.float64
                )
        out = ddim_sample(
            lambda z_t, t: torch.full_like(z_t, c), shape, NoiseSchedule(),
            torch.Generator().manual_seed(9), steps, eta, lambda z_t, step: torch.full_like(z_t, g),
            dtype=torch.float64,
        )  # fmt: skip
        torch.testing.assert_close(out, z, rtol=1e-5, atol=1e-5)


def test_alphas_cumprod_is_a_copy_of_the_shared_schedule():
    first = NoiseSchedule().alphas_cumprod()
    first.zero_()
    assert torch.allclose(NoiseSchedule().alphas_cumprod().double(), cosine_alpha_bar(), rtol=1e-5)
    assert torch.allclose(
        NoiseSchedule().training().alphas_cumprod.double(), cosine_alpha_bar(), rtol=1e-5
    )


def test_the_step_reuses_only_the_noise_estimate_of_its_own_latents():
    """A guide that denoises other latents (``z_t + 0.5``) leaves the step's ε̂(z_t) alone: with
    a zero shift the sample is the unguided one."""
    shape = (2, 1, 1, 1, 2, 2)

    def predict(z, t):
        return 0.3 * z + 0.1

    def elsewhere(z_t, step):
        step.denoise(z_t + 0.5)
        return torch.zeros_like(z_t)

    def run(guidance):
        generator = torch.Generator().manual_seed(2)
        return ddim_sample(predict, shape, NoiseSchedule(), generator, 3, 1.0, guidance)

    torch.testing.assert_close(run(elsewhere), run(None), rtol=0, atol=0)


def test_a_float64_guide_keeps_float32_latents():
    shape = (2, 1, 1, 1, 2, 2)

    def run(dtype):
        def guidance(z_t, step):
            return torch.full(z_t.shape, 0.25, dtype=dtype)

        generator = torch.Generator().manual_seed(3)
        return ddim_sample(
            lambda z, t: 0.3 * z, shape, NoiseSchedule(), generator, 3, 1.0, guidance
        )

    wide, narrow = run(torch.float64), run(torch.float32)
    assert wide.dtype == torch.float32
    torch.testing.assert_close(wide, narrow, rtol=0, atol=0)


def test_a_guide_returning_nan_or_inf_is_refused():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance returned NaN or inf values at timestep 500"):
            ddim_sample(
                lambda z, t: torch.zeros_like(z), (2, 1, 1, 1, 2, 2), NoiseSchedule(),
                torch.Generator(), 2, 0.0, lambda z_t, step, bad=bad: torch.full_like(z_t, bad),
            )  # fmt: skip


def test_sampling_uses_the_ema_once_it_has_been_updated_and_keeps_the_training_mode():
    prediff = PreDiff(autoencoder(), live(denoiser("conv")))
    context = frames(2)[:, :T_IN]
    options = dict(members=2, steps=2, eta=0.0, seed=0)
    fresh = prediff.sample(context, **options).samples
    update_ema(prediff, 1)  # the EMA copies the live weights ...
    with torch.no_grad():
        for p in prediff.denoiser.parameters():
            p.mul_(1.5)  # ... and the denoiser moves on
    own = prediff.sample(context, use_ema=False, **options).samples
    default = prediff.sample(context, **options).samples
    assert torch.equal(default, fresh)  # the EMA: the weights before the move
    assert torch.equal(prediff.sample(context, use_ema=True, **options).samples, fresh)
    assert not torch.equal(own, fresh)
    for mode in (True, False):
        prediff.train(mode)
        prediff.sample(context, **options)
        assert prediff.training is mode and prediff.denoiser.training is mode


def test_latent_pairs_keep_the_source_attributes():
    data = pairs(2)
    data.attributes = {"pde": "nbody", "seed": 3}
    latents = LatentPairs(PreDiff(autoencoder(), denoiser("conv")), data)
    assert latents.attributes == {"pde": "nbody", "seed": 3}
    assert LatentPairs(PreDiff(autoencoder(), denoiser("conv")), pairs(2)).attributes == {}


def test_latent_pairs_batches_are_indexed_at_once_and_train_as_item_by_item(tmp_path, monkeypatch):
    """The Trainer's batch of latent pairs is the collated items, no item read once the steps have
    begun; the diffusion losses are those of the same run reading item by item."""

    def fresh() -> PreDiff:
        torch.manual_seed(0)
        prediff = PreDiff(autoencoder(), denoiser("conv"))
        prediff.calibrate(frames(4))
        return prediff

    latents = LatentPairs(fresh(), pairs(4))
    picks = [3, 1, 1, 0]
    batch = _batch(latents, picks)
    expected = default_collate([latents[i] for i in picks])
    assert type(batch) is type(expected) and len(batch) == 2
    assert all(
        torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(batch, expected, strict=True)
    )
    losses, reads = [], []
    read = LatentPairs.__getitem__

    def noted(pairs: LatentPairs, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if losses:
            reads.append(i)
        return read(pairs, i)

    def loss(model: PreDiff, batch: object) -> torch.Tensor:
        losses.append(diffusion_loss(model, batch))
        return losses[-1]

    def run(out: str) -> list[float]:
        losses.clear()
        reads.clear()
        return _train(fresh(), loss, latents, tmp_path / out, steps=2).losses

    monkeypatch.setattr(LatentPairs, "__getitem__", noted)
    at_once = run("at-once")
    assert reads == []
    monkeypatch.delattr(LatentPairs, "item_rows")
    assert run("item-by-item") == at_once
    assert len(reads) == 4  # the second step's batch


def test_timestep_embedding_is_the_sinusoidal_closed_form():
    """``[cos(t ω_k), sin(t ω_k)]``, ``ω_k = 10000^(−k/(dim/2))``, a zero column for odd dim."""
    t = torch.tensor([0, 1, 37, 999])
    for dim in (6, 7):
        half = dim // 2
        omega = [10000.0 ** (-k / half) for k in range(half)]
        expected = [
            [math.cos(s * w) for w in omega] + [math.sin(s * w) for w in omega] + [0.0] * (dim % 2)
            for s in t.tolist()
        ]
        got = timestep_embedding(t, dim)
        torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv", "cuboid"])
def test_an_untrained_denoiser_predicts_zero_and_a_trained_one_depends_on_t(kind):
    generator = torch.Generator().manual_seed(0)
    z_t = torch.randn(2, T_OUT, *LATENT, generator=generator)
    context = torch.randn(2, T_IN, *LATENT, generator=generator)
    early, late = torch.tensor([1, 1]), torch.tensor([900, 900])
    silent = denoiser(kind)
    assert torch.equal(silent(z_t, early, context), torch.zeros_like(z_t))
    model = live(denoiser(kind))
    assert (model(z_t, early, context) - model(z_t, late, context)).abs().max() > 1e-4


def test_more_bad_input_names_the_argument():
    schedule = NoiseSchedule()
    with pytest.raises(ValueError, match="steps must be <= the 1000 training timesteps, got 1001"):
        schedule.sampling(1001, "trailing")
    assert len(schedule.sampling(1000, "trailing").timesteps) == 1000
    with pytest.raises(ValueError, match="timesteps must be an integer >= 2, got 1"):
        NoiseSchedule(timesteps=1)
    with pytest.raises(ValueError, match="beta_schedule must be one of .*, got 'cosine'"):
        NoiseSchedule(beta_schedule="cosine")
    prediff = PreDiff(autoencoder(), denoiser("conv"))
    context = frames(2)[:, :T_IN]
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\].*got True"):
        prediff.sample(context, steps=2, eta=True)
    with pytest.raises(TypeError, match="guidance must be callable"):
        prediff.sample(context, steps=2, guidance=torch.zeros(1))
    with pytest.raises(ValueError, match=r"context must have z_t's batch 1, got \(2,"):
        denoiser("conv")(
            torch.rand(1, T_OUT, *LATENT), torch.zeros(1, dtype=torch.long),
            torch.rand(2, T_IN, *LATENT),
        )  # fmt: skip
    model = FrameAutoencoder()
    with pytest.raises(ValueError, match="at least one leading axis, got \\(1, 64, 64\\)"):
        model.encode(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="divisible by downsample=4"):
        model.encode(torch.rand(1, 1, 30, 32))


def test_reconstruction_scores_keep_the_training_mode():
    model = autoencoder()
    for mode in (True, False):
        model.train(mode)
        reconstruction_scores(model, frames(2))
        assert model.training is mode and all(m.training is mode for m in model.modules())


@pytest.mark.parametrize(
    ("frames", "said"),
    [(torch.zeros(1, 1, 8, 8, dtype=torch.long), "a tensor of dtype torch.int64"), ([0.0], "list")],
)
def test_the_autoencoder_refuses_frames_that_are_not_floating_naming_what_came(frames, said):
    with pytest.raises(TypeError, match=rf"frames must be a floating tensor .*, got {said}$"):
        FrameAutoencoder(channels=1, latent_channels=2, downsample=2, width=8).encode(frames)
