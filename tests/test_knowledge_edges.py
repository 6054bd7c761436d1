"""KnowledgeControl, KnowledgeRegressor, NoisyLatentLoss and EnergyJudge against hand-computed
values: the guidance of a total mass by finite differences and on uniform frames, the input checks
a sampler can trip, the regressors' output units and the loss's noising in closed form."""

import math

import pytest
import torch
from test_knowledge_control import TimesSum
from torch import nn

from physml import ConstraintError
from physml.constraints import KnowledgeControl, ReverseStep
from physml.models.energy_judge import EnergyJudge, standardise
from physml.models.knowledge_regressor import KnowledgeRegressor, NoisyLatentLoss
from physml.models.prediff import NoiseSchedule

F64 = torch.float64


def silu(x: float) -> float:
    return x / (1.0 + math.exp(-x))


def total_mass(cell_area: float):
    """Each frame's mass ``Σ u · h²``: ``(N, T, H, W) → (N, T)``."""
    return lambda frames: frames.sum((-2, -1)) * cell_area


# ------------------------------------------------------------------------- the guidance itself


def test_mass_guidance_is_minus_lambda_times_the_finite_difference_gradient():
    # g_i = −λ ∇ ½ ‖M(decode(denoise(z))) − F₀‖², checked entry by entry by central differences
    cell, scale = 0.25, 0.3
    z_t = torch.randn(2, 3, 2, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1.0, -0.5, 2.0], dtype=F64)  # one mass per context, every frame
    step = ReverseStep(7, 0, 0.5, denoise=lambda z: z**3, decode=lambda x: 2 * x + 1)
    shift = KnowledgeControl(total_mass(cell), target, scale).guide(z_t, step, None)

    def penalty(z):  # ½ Σ_k (h² Σ (2 z³ + 1) − F₀)², per sample, by hand
        mass = (2 * z**3 + 1).sum((-2, -1)) * cell
        return 0.5 * ((mass - target[None, :, None]) ** 2).sum(-1)

    eps = 1e-5  # truncation error O(eps²) ≈ 1e-10, well inside the tolerance
    expected = torch.zeros_like(z_t)
    flat, out = z_t.reshape(-1), expected.reshape(-1)
    for k in range(flat.numel()):
        up, down = flat.clone(), flat.clone()
        up[k] += eps
        down[k] -= eps
        difference = penalty(up.reshape(z_t.shape)) - penalty(down.reshape(z_t.shape))
        out[k] = -scale * difference.sum() / (2 * eps)  # other samples cancel exactly
    torch.testing.assert_close(shift, expected, rtol=1e-7, atol=1e-7)


def test_mass_of_uniform_frames_and_a_hot_pixel_gives_the_hand_shift():
    # identity denoise and decode: g = −λ h² (M − F₀) at every pixel of the frame
    cell, scale, side = 0.25, 2.0, 4  # h = ½
    z_t = torch.zeros(1, 2, 1, side, side, dtype=F64)
    z_t[0, 0] = 0.75  # uniform frame: M = 0.75 · 16 · h² = 3
    z_t[0, 1, 0, 2, 1] = 8.0  # one hot pixel: M = 8 h² = 2
    target = torch.tensor([1.0, 5.0], dtype=F64)
    step = ReverseStep(0, 0, 1.0, denoise=lambda z: z)
    shift = KnowledgeControl(total_mass(cell), target, scale).guide(z_t, step, None)
    expected = torch.empty_like(z_t)
    expected[0, 0] = -scale * cell * (3.0 - 1.0)
    expected[0, 1] = -scale * cell * (2.0 - 5.0)
    torch.testing.assert_close(shift, expected, rtol=1e-15, atol=0)


def test_a_target_given_as_a_list_is_kept_in_float64():
    # U = mean of the sample's n latents: g = −λ (m − F₀) / n, with F₀ exact in float64
    z_t = torch.zeros(1, 2, 5, dtype=F64)
    target = [0.1, 1.0 / 3.0]
    shift = KnowledgeControl(lambda f: f.mean(-1), target, 1.0).guide(
        z_t, ReverseStep(3, 0, 0.5, denoise=lambda z: z), None
    )
    expected = torch.tensor([0.1 / 5, 1.0 / 15], dtype=F64)[None, :, None].expand(1, 2, 5)
    torch.testing.assert_close(shift, expected, rtol=1e-15, atol=0)


def test_with_target_keeps_on_frames_for_a_module_quantity():
    class Mass(nn.Module):
        def forward(self, frames):
            return frames.sum((-2, -1))

    control = KnowledgeControl(Mass(), torch.zeros(2, dtype=F64), 0.5, on="frames")
    moved = control.with_target(torch.ones(2, dtype=F64))
    assert moved.on == "frames"
    z_t = torch.ones(1, 2, 1, 2, 2, dtype=F64)  # M = 4 per frame, target 1: g = −½ · 3
    step = ReverseStep(1, 0, 0.5, denoise=lambda z: z)
    expected = torch.full_like(z_t, -0.5 * 3.0)
    torch.testing.assert_close(moved.guide(z_t, step, None), expected, rtol=0, atol=0)


def test_a_sample_at_a_stationary_point_is_left_alone_in_float32():
    # Q = mean z² has ∇Q = 0 at z = 0: the Gauss–Newton ratio miss/|∇|² is 1/0 there
    z_t = torch.zeros(1, 2, 4)
    z_t[0, 1] = 1.0
    control = KnowledgeControl(
        lambda f: f.square().mean(-1), torch.ones(2) * 2, 1.0, normalized=True
    )
    shift = control.guide(z_t, ReverseStep(0, 0, 1.0, denoise=lambda z: z), None)
    assert torch.equal(shift[0, 0], torch.zeros(4))
    # sample 1: r = 1 − 2 = −1, ∇ ½ r² = r z / 2 = −½ per entry, |∇|² = 1: g = +½ per entry
    torch.testing.assert_close(shift[0, 1], torch.full((4,), 0.5))


def test_clean_scales_the_gauss_newton_step_by_sqrt_alpha_bar_over_one_minus_alpha_bar():
    # F = mean of ẑ₀ = z (identity denoiser), n entries: δ = −λ r per entry, g = √ᾱ/(1 − ᾱ) δ
    z_t = torch.arange(6, dtype=F64).reshape(1, 2, 3) / 4
    target = torch.tensor([1.0, -1.0], dtype=F64)
    r = z_t.mean(-1) - target
    for alpha_bar in (0.3, 0.995):
        step = ReverseStep(5, 0, alpha_bar, denoise=lambda z: z)
        control = KnowledgeControl(lambda f: f.mean(-1), target, 0.5, normalized="clean")
        expected = (-0.5 * r * math.sqrt(alpha_bar) / (1 - alpha_bar))[..., None].expand_as(z_t)
        torch.testing.assert_close(control.guide(z_t, step, None), expected, rtol=1e-13, atol=0)
        as_tensor = ReverseStep(5, 0, torch.tensor(alpha_bar), denoise=lambda z: z)
        torch.testing.assert_close(control.guide(z_t, as_tensor, None), expected, rtol=1e-6, atol=0)


def test_a_zero_scale_never_evaluates_the_quantity():
    calls = []

    def quantity(frames):
        calls.append(1)
        return frames.sum(-1)

    control = KnowledgeControl(quantity, torch.zeros(2), 0.0)
    z_t = torch.randn(1, 2, 3)
    assert torch.equal(
        control.guide(z_t, ReverseStep(0, 0, 1.0, denoise=lambda z: z), None), 0 * z_t
    )
    assert calls == []


def test_a_zero_dim_tensor_timestep_counts_as_its_int_and_a_bool_does_not():
    z_t = torch.ones(1, 2, 3, dtype=F64)
    control = KnowledgeControl(TimesSum(), torch.zeros(2, dtype=F64), 1.0)
    # g = −λ t (t Σz − 0) = −2 · 6 per entry at t = 2
    expected = torch.full_like(z_t, -12.0)
    torch.testing.assert_close(control.guide(z_t, torch.tensor(2), None), expected)
    with pytest.raises(ConstraintError, match="integer timestep"):
        control.guide(z_t, True, None)
    torch.testing.assert_close(control.guide(z_t, torch.tensor(2.0), None), expected)
    for fractional in (torch.tensor(2.5), ReverseStep(torch.tensor(2.7), 0, 0.5)):
        with pytest.raises(ConstraintError, match=r"integer timestep .*got 2\.[57]"):
            control.guide(z_t, fractional, None)  # never truncated to 2
    with pytest.raises(ConstraintError, match="integer timestep"):
        control.guide(z_t, ReverseStep(True, 0, 0.5), None)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: torch.zeros(4, dtype=F64), r"z_t as a float tensor \(members, batch, \*latent\)"),
        (lambda: torch.zeros(1, 2, 4, dtype=torch.long), "z_t as a float tensor"),
    ],
)
def test_z_t_must_be_float_with_members_and_batch_axes(make, match):
    control = KnowledgeControl(lambda f: f.sum(-1), torch.zeros(2), 1.0)
    with pytest.raises(ConstraintError, match=match):
        control.guide(make(), ReverseStep(0, 0, 1.0, denoise=lambda z: z), None)


def test_steps_and_quantities_that_cannot_work_are_constraint_errors():
    z_t = torch.randn(2, 3, 4, dtype=F64)
    mean = KnowledgeControl(lambda f: f.mean(-1), torch.zeros(3, dtype=F64), 1.0)
    with pytest.raises(ConstraintError, match="ReverseStep with a denoise"):
        mean.guide(z_t, ReverseStep(5, 0, 0.5), None)  # no denoise offered
    clean = KnowledgeControl(lambda f: f.mean(-1), torch.zeros(3), 1.0, normalized="clean")
    with pytest.raises(ConstraintError, match="ReverseStep with a denoise"):
        clean.guide(z_t, ReverseStep(5, 0, 0.5), None)
    for alpha_bar in (True, "0.5"):
        with pytest.raises(ConstraintError, match="alpha_bar as a number"):
            clean.guide(z_t, ReverseStep(5, 0, alpha_bar, denoise=lambda z: z), None)
    dropped = ReverseStep(5, 0, 0.5, denoise=lambda z: z, decode=lambda x: x[:, :1])
    with pytest.raises(ConstraintError, match=r"keep z_t's \(members, batch\) axes \(2, 3\)"):
        mean.guide(z_t, dropped, None)
    flattened = KnowledgeControl(lambda f: f.flatten(), torch.zeros(3, dtype=F64), 1.0)
    with pytest.raises(ConstraintError, match=r"one value per sample, \(6,\)"):
        flattened.guide(z_t, ReverseStep(5, 0, 0.5, denoise=lambda z: z), None)
    per_frame = KnowledgeControl(
        lambda f: f.reshape(6, 2, 2).sum(-1), torch.zeros(3, 5, dtype=F64), 1.0
    )
    with pytest.raises(ConstraintError, match=r"target has shape \(3, 5\)"):
        per_frame.guide(z_t, ReverseStep(5, 0, 0.5, denoise=lambda z: z), None)


# --------------------------------------------------------------- the regressor and its loss


def test_regressor_output_is_offset_plus_scale_times_the_head_of_the_spatial_mean():
    # zero every weight: the last convolution gives its bias b everywhere, SiLU(b) is averaged
    # over space (2 × 2 after two stride-2 convolutions of 8 × 8), the head maps it linearly
    model = KnowledgeRegressor((2, 1, 8, 8), hidden=2, outputs=2, offset=3.0, scale=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.body[3].bias.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]))
        model.head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, -1.0, 0.0]]))
        model.head.bias.copy_(torch.tensor([0.25, 0.0]))
        out = model(torch.randn(3, 2, 1, 8, 8), torch.tensor([0, 10, 999]))
    head = [silu(1.0) + silu(2.0) + 0.25, 2 * silu(-1.0) - silu(0.5)]
    expected = torch.tensor([3.0 + 0.5 * h for h in head]).expand(3, 2)
    torch.testing.assert_close(out, expected)


def test_regressor_depends_on_the_timestep_and_checks_it():
    torch.manual_seed(0)
    model = KnowledgeRegressor((1, 1, 4, 4), hidden=4).eval()
    z = torch.randn(2, 1, 1, 4, 4)
    with torch.no_grad():
        early, late = model(z, torch.tensor([0, 0])), model(z, torch.tensor([500, 500]))
    assert not torch.allclose(early, late)
    with pytest.raises(ValueError, match=r"t must be a tensor of 2 timesteps \(N,\), got \(3,\)"):
        model(z, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"hidden": 0}, "hidden"), ({"outputs": 0}, "outputs")]
)
def test_regressor_sizes_must_be_positive(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got 0"):
        KnowledgeRegressor((1, 1, 4, 4), **kwargs)


class Recorder(nn.Module):
    """Records ``(z_t, t)`` and predicts 0."""

    def forward(self, z, t):
        self.seen = (z.clone(), t.clone())
        return torch.zeros(z.shape[0], dtype=z.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_noisy_latent_loss_noises_by_the_schedule_and_is_the_mean_squared_miss(dtype):
    # z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε for the t and ε its generator draws (t first, then ε), with
    # ᾱ the schedule's own: the schedule's add_noise exactly, and the formula written out here
    schedule, count = NoiseSchedule(4, "linear"), 64
    z0 = torch.randn(count, 1, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=dtype)
    y = (torch.arange(count) % 3).to(dtype)  # 0, 1, 2, ...: the loss of predicting 0 is mean y²
    loss_fn = NoisyLatentLoss(schedule, torch.Generator().manual_seed(0))
    model = Recorder()
    loss = loss_fn(model, (z0, y))
    torch.testing.assert_close(loss, (y**2).mean(), rtol=1e-6, atol=0)
    z_t, t = model.seen
    again = torch.Generator().manual_seed(0)
    drawn_t = torch.randint(4, (count,), generator=again)
    noise = torch.randn(z0.shape, generator=again, dtype=dtype)
    assert torch.equal(t, drawn_t) and set(t.tolist()) == {0, 1, 2, 3}
    assert torch.equal(z_t, schedule.add_noise(z0, noise, t))
    assert torch.equal(z_t, schedule.training().add_noise(z0, noise, t))
    bars = schedule.alphas_cumprod().tolist()
    by_hand = torch.stack(
        [
            math.sqrt(bars[step]) * z0[i].double() + math.sqrt(1.0 - bars[step]) * noise[i].double()
            for i, step in enumerate(t.tolist())
        ]
    )
    tolerance = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(z_t.double(), by_hand, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "schedule",
    [
        torch.tensor([1.0, 0.25]),  # its ᾱ by hand: the schedule is the sampler's, not a copy
        [0.9, 0.5],
        None,
        NoiseSchedule,  # the class, not a schedule
    ],
)
def test_noisy_latent_loss_takes_a_noise_schedule_only(schedule):
    expected = type(schedule).__name__
    with pytest.raises(
        TypeError,
        match=rf"^schedule must be the NoiseSchedule the sampler uses \(e\.g\. "
        rf"prediff\.schedule\), got {expected}$",
    ):
        NoisyLatentLoss(schedule)


def test_noisy_latent_loss_rejects_a_bad_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        NoisyLatentLoss(NoiseSchedule(2), generator=0)


# ------------------------------------------------------------------------------ energy judge


def test_judge_output_is_offset_plus_scale_times_the_head():
    judge = EnergyJudge(hidden=2, depth=2, offset=-4.0, scale=3.0).eval()
    with torch.no_grad():
        judge.head[2].weight.zero_()
        judge.head[2].bias.fill_(0.5)
        out = judge(torch.rand(2, 3, 1, 8, 8))
    torch.testing.assert_close(out, torch.full((2, 3), -4.0 + 3.0 * 0.5))


def test_judge_repeats_the_first_and_last_frames_at_the_ends():
    judge = EnergyJudge(window=3, hidden=4, depth=2).eval()
    frames = torch.rand(2, 3, 1, 8, 8)
    f0, f1, f2 = frames[:, :1], frames[:, 1:2], frames[:, 2:]
    with torch.no_grad():
        energies = judge(frames)
        first = judge(torch.cat([f0, f0, f1], 1))[:, 1]
        last = judge(torch.cat([f1, f2, f2], 1))[:, 1]
    torch.testing.assert_close(energies[:, 0], first, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(energies[:, 2], last, rtol=1e-6, atol=1e-7)


def test_judge_stacks_each_window_frame_by_frame():
    # the first convolution reads only input channel 1: frame t − 1's channel 1 (window-major)
    judge = EnergyJudge(channels=2, window=3, hidden=2, depth=1).eval()
    with torch.no_grad():
        conv = judge.features[0]
        assert conv.out_channels == 2
        conv.weight.zero_()
        conv.weight[:, 1] = 1.0
        frames = torch.rand(1, 3, 2, 8, 8)
        base = judge(frames)
        other = frames.clone()
        other[:, 0, 0] += 1.0  # frame 0, channel 0: read by nobody
        assert torch.equal(judge(other), base)
        other = frames.clone()
        other[:, 1, 1] += 1.0  # frame 1, channel 1: read by frame 2 only
        moved = judge(other)
        assert torch.equal(moved[:, :2], base[:, :2]) and not torch.equal(moved[:, 2], base[:, 2])


def test_judge_widths_double_per_level():
    judge = EnergyJudge(hidden=3, depth=3)
    widths = [m.out_channels for m in judge.features if isinstance(m, nn.Conv2d)]
    assert widths == [3, 6, 12]


def test_standardise_in_closed_form_and_rejects_what_it_cannot_standardise():
    offset, scale = standardise(torch.tensor([1e8 + 1, 1e8 + 3], dtype=F64))
    assert offset == 1e8 + 2 and scale == pytest.approx(math.sqrt(2), rel=1e-12)
    offset, scale = standardise([1.0, 2.0, 3.0, 4.0])  # sample variance 5/3
    assert offset == 2.5 and scale == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    offset, scale = standardise([2.0, 2.0])  # no spread: a positive floor, never 0
    assert offset == 2.0 and scale > 0
    for bad in ([1.0], [1.0, math.nan], [1.0, math.inf]):
        with pytest.raises(ValueError, match="at least two finite values"):
            standardise(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_callable_target_on_the_cpu_meets_latents_on_the_gpu():
    # mean of 4 latents at 0, target ±1: g = −λ (0 − F₀) / 4
    control = KnowledgeControl(
        lambda f: f.mean(-1), lambda context: torch.tensor([1.0, -1.0], dtype=F64), 2.0
    )
    shift = control.guide(
        torch.zeros(1, 2, 4, dtype=F64, device="cuda"),
        ReverseStep(0, 0, 1.0, denoise=lambda z: z),
        None,
    )
    assert shift.is_cuda
    expected = torch.tensor([0.5, -0.5], dtype=F64)[None, :, None].expand(1, 2, 4)
    torch.testing.assert_close(shift.cpu(), expected, rtol=0, atol=0)
