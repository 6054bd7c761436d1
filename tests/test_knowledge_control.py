"""KnowledgeControl at the sampler seam: closed-form toy samplers, per-sample guidance, moving and
saving with the model, composing with an output-seam constraint, the regressor and its loss."""

import copy
import math

import pytest
import torch
from torch import nn

from pdes import Grid1D
from physml import ConstraintError, constrain
from physml.constraints import KnowledgeControl, ReverseStep, mass_conservation
from physml.models.knowledge_regressor import KnowledgeRegressor, NoisyLatentLoss
from physml.models.prediff.sampler import ddim_sample
from physml.models.prediff.schedule import NoiseSchedule
from physml.outputs import Ensemble
from physml.training import TrainConfig, Trainer

F64 = torch.float64


class ToySampler(nn.Module):
    """``z ← a z + guidance(z, step)`` for timesteps ``steps−1 … 0`` from ``z = context``
    ``(members, batch, *x)``; the step's ``denoise`` is the identity and ``decode`` doubles."""

    def __init__(self, a: float = 1.0):
        super().__init__()
        self.a = a

    def sample(self, context, guidance=None, steps: int = 10):
        z = context.clone()
        for index, timestep in enumerate(reversed(range(steps))):
            step = ReverseStep(timestep, index, 1.0, denoise=lambda x: x, decode=lambda x: 2 * x)
            z = self.a * z + (0.0 if guidance is None else guidance(z, step))
        return Ensemble(z)


class IntSampler(ToySampler):
    """The same loop, telling the guide only the integer timestep."""

    def sample(self, context, guidance=None, steps: int = 10):
        z = context.clone()
        for timestep in reversed(range(steps)):
            z = self.a * z + (0.0 if guidance is None else guidance(z, timestep))
        return Ensemble(z)


class MeanOfLatents(nn.Module):
    """``U(z, t)`` = the mean of each sample's latents, a linear quantity with a closed form."""

    def forward(self, z, t):
        assert t.shape == (z.shape[0],) and t.dtype == torch.long
        return z.flatten(1).mean(1)


def mean_of_frames(frames):
    return frames.flatten(1).mean(1)


def closed_form(z0, target, a, gain, steps):
    """The toy loop guided toward ``mean = target`` with pull ``gain`` on the sample mean:
    ``m ← a m − gain (m − target)``; deviations from the mean only shrink by ``a``."""
    mean = z0.flatten(2).mean(-1)
    r = a - gain
    final = r**steps * mean + gain * target * (1 - r**steps) / (1 - r)
    shape = (*mean.shape, *[1] * (z0.ndim - 2))
    return a**steps * (z0 - mean.reshape(shape)) + final.reshape(shape)


def test_regressor_guidance_matches_the_closed_form_and_reaches_the_target():
    z0 = torch.randn(3, 4, 2, 5, dtype=F64)  # (members, batch, *latent)
    n = 10  # latent entries per sample: the mean's gradient is 1/n each
    target = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    a, scale, steps = 0.9, 2.0, 8
    out = constrain(ToySampler(a), KnowledgeControl(MeanOfLatents(), target, scale))(
        z0, steps=steps
    )
    expected = closed_form(z0, target[None], a, scale / n, steps)
    torch.testing.assert_close(out.samples, expected, rtol=0, atol=1e-12)
    # a = 1, pull 1/2 per step: the mean reaches the target geometrically, deviations are kept
    reached = constrain(ToySampler(), KnowledgeControl(MeanOfLatents(), target, n / 2))(
        z0, steps=40
    )
    means = reached.samples.flatten(2).mean(-1)
    torch.testing.assert_close(means, target.expand(3, 4), rtol=0, atol=1e-10)
    deviation = reached.samples - means[..., None, None]
    torch.testing.assert_close(deviation, z0 - z0.flatten(2).mean(-1)[..., None, None])


class TimesSum(nn.Module):
    """``U(z, t) = t · Σ z`` per sample: a regressor whose value depends on the timestep."""

    def forward(self, z, t):
        return t.to(z.dtype) * z.flatten(1).sum(1)


@pytest.mark.parametrize("as_step", [True, False], ids=["reverse_step", "int"])
def test_a_regressor_is_given_the_step_timestep(as_step):
    # g = −λ ∇ ½ (t Σz − F₀)² = −λ t (t Σz − F₀) at every latent entry of the sample
    z = torch.arange(24, dtype=F64).reshape(2, 3, 4) / 10  # (members, batch, latent)
    target = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    timestep, scale = 3, 0.5
    step = ReverseStep(timestep, 0, 1.0) if as_step else timestep
    shift = KnowledgeControl(TimesSum(), target, scale).guide(z, step, None)
    miss = timestep * z.sum(-1) - target  # (members, batch)
    expected = (-scale * timestep * miss)[..., None].expand_as(z)
    torch.testing.assert_close(shift, expected, rtol=1e-14, atol=0)


def test_a_quantity_of_decoded_frames_reaches_its_target():
    z0 = torch.randn(2, 3, 4, 4, dtype=F64)
    target = torch.tensor([1.0, -2.0, 0.25], dtype=F64)
    n, scale, steps = 16, 1.0, 6
    control = KnowledgeControl(mean_of_frames, target, scale)
    assert control.on == "frames"
    out = constrain(ToySampler(), control)(z0, steps=steps)
    # frames = 2 z: m ← m − (4 s / n)(m − target / 2)
    expected = closed_form(z0, target[None] / 2, 1.0, 4 * scale / n, steps)
    torch.testing.assert_close(out.samples, expected, rtol=0, atol=1e-12)
    done = constrain(ToySampler(), KnowledgeControl(mean_of_frames, target, n / 4))(z0, steps=1)
    torch.testing.assert_close(2 * done.samples.flatten(2).mean(-1), target.expand(2, 3))


def test_a_target_taken_from_the_context_is_conserved():
    z0 = torch.randn(2, 3, 6, dtype=F64)
    initial = z0.flatten(2).mean(-1)

    def target(context):
        return context[0].mean(-1)  # member 0's mean of each context, (batch,)

    out = constrain(ToySampler(), KnowledgeControl(MeanOfLatents(), target, 6 * 0.5))(z0, steps=40)
    torch.testing.assert_close(out.samples.mean(-1), initial[0].expand(2, 3), rtol=0, atol=1e-8)


def test_a_batch_target_is_broadcast_over_the_quantity_trailing_axes():
    z0 = torch.randn(2, 3, 4, 5, dtype=F64)  # four "frames" of five entries per sample

    class PerFrame(nn.Module):
        def forward(self, z, t):
            return z.mean(-1)  # (N, 4)

    target = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    out = constrain(ToySampler(), KnowledgeControl(PerFrame(), target, 5.0))(z0, steps=1)
    torch.testing.assert_close(out.samples.mean(-1), target[None, :, None].expand(2, 3, 4))
    per_frame = torch.arange(12, dtype=F64).reshape(3, 4)
    out = constrain(ToySampler(), KnowledgeControl(PerFrame(), per_frame, 5.0))(z0, steps=1)
    torch.testing.assert_close(out.samples.mean(-1), per_frame.expand(2, 3, 4))


def regressor(seed: int = 0) -> KnowledgeRegressor:
    torch.manual_seed(seed)
    return KnowledgeRegressor((2, 2, 8, 8), hidden=8).eval()


def test_guidance_is_per_sample_bitwise():
    torch.manual_seed(1)
    z0 = torch.randn(3, 4, 2, 2, 8, 8)
    target = torch.randn(4)
    wrapped = constrain(ToySampler(0.9), KnowledgeControl(regressor(), target, 5.0))
    first = wrapped(z0, steps=4).samples
    others = z0.clone()
    others[:, 1:] = torch.randn(3, 3, 2, 2, 8, 8) * 3
    moved = target.clone()
    moved[1:] += 10.0
    again = wrapped(
        others, steps=4, constraints=[KnowledgeControl(wrapped.constraints[0].quantity, moved, 5.0)]
    ).samples
    assert torch.equal(first[:, 0], again[:, 0])
    assert not torch.allclose(first[:, 1:], again[:, 1:])
    assert not torch.allclose(first, 0.9**4 * z0)  # the guidance acted


def test_guidance_works_under_no_grad_and_inference_mode():
    z0 = torch.randn(2, 3, 2, 2, 8, 8)
    wrapped = constrain(IntSampler(0.9), KnowledgeControl(regressor(), torch.zeros(3), 3.0))
    plain = wrapped(z0, steps=3).samples
    with torch.no_grad():
        assert torch.equal(wrapped(z0, steps=3).samples, plain)
    with torch.inference_mode():
        assert torch.equal(wrapped(z0.clone(), steps=3).samples, plain)
    assert all(p.grad is None for p in wrapped.parameters())  # only z_t is differentiated


def test_the_regressor_moves_and_saves_with_the_constrained_model(tmp_path):
    target = torch.tensor([0.3, -0.2])
    wrapped = constrain(ToySampler(0.9), KnowledgeControl(regressor(0), target, 4.0))
    wrapped.to(F64)
    control = wrapped.constraints[0]
    assert all(p.dtype == F64 for p in control.quantity.parameters())
    assert control.target_value.dtype == F64
    z0 = torch.randn(2, 2, 2, 2, 8, 8, dtype=F64)
    out = wrapped(z0, steps=3).samples
    assert out.dtype == F64
    state = wrapped.state_dict()
    assert (
        "constraints.0.quantity.stem.weight" in state and "constraints.0.quantity.offset" in state
    )
    assert not any("target" in key for key in state)  # per-call values are not weights
    torch.save(state, tmp_path / "model.pt")
    fresh = constrain(ToySampler(0.9), KnowledgeControl(regressor(7), target, 4.0)).to(F64)
    assert not torch.equal(fresh(z0, steps=3).samples, out)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert torch.equal(fresh(z0, steps=3).samples, out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_regressor_moves_to_the_gpu():
    wrapped = constrain(ToySampler(0.9), KnowledgeControl(regressor(), torch.zeros(2), 2.0))
    z0 = torch.randn(2, 2, 2, 2, 8, 8)
    cpu = wrapped(z0, steps=2).samples
    gpu = wrapped.to("cuda")(z0.cuda(), steps=2).samples
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_composes_with_an_output_seam_constraint_and_takes_per_call_targets():
    grid = Grid1D(6)
    z0 = torch.randn(4, 3, 6, dtype=F64)  # (members, batch, x)
    target, mass = torch.tensor([1.0, 0.0, -1.0], dtype=F64), torch.ones(3, dtype=F64)
    control = KnowledgeControl(MeanOfLatents(), target, 2.0)
    guided = constrain(ToySampler(0.9), control)(z0, steps=5)
    both = constrain(ToySampler(0.9), control, mass_conservation(grid, mass))
    members = both(z0, steps=5).samples
    weights = grid.weights()
    torch.testing.assert_close(
        (members * weights).sum(-1), torch.ones(4, 3, dtype=F64), rtol=0, atol=1e-12
    )
    # the sampler seam acts first, then the output seam on its result
    projected = constrain(nn.Identity(), mass_conservation(grid, mass))(guided).samples
    torch.testing.assert_close(members, projected, rtol=0, atol=1e-12)
    # per call: another target through the same wrapper
    new = torch.tensor([3.0, 3.0, 3.0], dtype=F64)
    call = both(z0, steps=5, constraints=[control.with_target(new), mass_conservation(grid, mass)])
    built = constrain(ToySampler(0.9), KnowledgeControl(MeanOfLatents(), new, 2.0))(z0, steps=5)
    expected = constrain(nn.Identity(), mass_conservation(grid, mass))(built).samples
    torch.testing.assert_close(call.samples, expected, rtol=0, atol=1e-12)
    with pytest.raises(ConstraintError, match="only values may differ"):
        both(z0, constraints=[mass_conservation(grid, mass), control])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": -1.0}, ValueError, "scale"),
        ({"scale": "big"}, TypeError, "scale"),
        ({"scale": True}, TypeError, "scale"),
        ({"scale": math.inf}, ValueError, "scale"),
        ({"target": torch.tensor(1.0)}, ValueError, "target"),
        ({"target": "energy"}, TypeError, "target"),
        ({"target": torch.tensor([1.0, math.nan])}, ValueError, "target"),
        ({"quantity": 3.0}, TypeError, "quantity"),
        ({"on": "latent"}, ValueError, "on"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    arguments = {"quantity": MeanOfLatents(), "target": torch.zeros(2), "scale": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        KnowledgeControl(**arguments)


def test_mismatches_found_while_sampling_are_constraint_errors():
    z0 = torch.randn(2, 3, 4, dtype=F64)
    wrong_batch = KnowledgeControl(MeanOfLatents(), torch.zeros(5), 1.0)
    with pytest.raises(ConstraintError, match="target has 5 entries"):
        constrain(ToySampler(), wrong_batch)(z0, steps=1)
    wrong_tail = KnowledgeControl(MeanOfLatents(), torch.zeros(3, 2), 1.0)
    with pytest.raises(ConstraintError, match="target has shape"):
        constrain(ToySampler(), wrong_tail)(z0, steps=1)
    with pytest.raises(ConstraintError, match="ReverseStep with a denoise"):
        constrain(IntSampler(), KnowledgeControl(mean_of_frames, torch.zeros(3)))(z0, steps=1)
    detached = KnowledgeControl(lambda z: z.detach().mean(-1), torch.zeros(3), 1.0)
    with pytest.raises(ConstraintError, match="quantity must be differentiable"):
        constrain(ToySampler(), detached)(z0, steps=1)
    scalar = KnowledgeControl(lambda frames: frames.sum(), torch.zeros(3), on="frames")
    with pytest.raises(ConstraintError, match="quantity must return one value per sample"):
        constrain(ToySampler(), scalar)(z0, steps=1)
    bad_target = KnowledgeControl(MeanOfLatents(), lambda context: 1.0)
    with pytest.raises(TypeError, match=r"target\(context\)"):
        constrain(ToySampler(), bad_target)(z0, steps=1)


def test_zero_scale_leaves_the_sampler_alone():
    z0 = torch.randn(2, 3, 4, dtype=F64)
    out = constrain(ToySampler(0.7), KnowledgeControl(MeanOfLatents(), torch.ones(3), 0.0))
    assert torch.equal(out(z0, steps=3).samples, ToySampler(0.7).sample(z0, steps=3).samples)


@pytest.mark.parametrize("call", ["forward", "sample", "positional"])
def test_a_callers_guide_is_added_to_the_controls(call):
    """``guidance=`` of the caller's own next to a KnowledgeControl (used to be a raw TypeError,
    'multiple values for keyword argument guidance'): each step gets both shifts. A constant push
    ``c`` moves the mean recursion ``m ← a m − gain (m − target) + c`` to the target
    ``target + c / gain``; deviations from the mean are left as they are."""
    z0 = torch.randn(3, 4, 2, 5, dtype=F64)
    n, a, scale, steps, c = 10, 0.9, 2.0, 8, 0.3
    target = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    wrapped = constrain(ToySampler(a), KnowledgeControl(MeanOfLatents(), target, scale))

    def push(z, step):
        return torch.full_like(z, c)

    if call == "forward":
        out = wrapped(z0, guidance=push, steps=steps)
    elif call == "sample":
        out = wrapped.sample(z0, guidance=push, steps=steps)
    else:
        out = wrapped.sample(z0, push, steps)
    gain = scale / n
    expected = closed_form(z0, target[None] + c / gain, a, gain, steps)
    torch.testing.assert_close(out.samples, expected, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="guidance must be callable.*float"):
        wrapped.sample(z0, guidance=1.0, steps=steps)


def tiny_prediff():
    """An untrained PreDiff on 8² frames of one channel, 2 context and 2 target frames."""
    from physml.models.prediff import ConvDenoiser, FrameAutoencoder, PreDiff

    torch.manual_seed(0)
    autoencoder = FrameAutoencoder(channels=1, latent_channels=2, downsample=2, width=8)
    denoiser = ConvDenoiser(2, 2, latent_shape=(2, 4, 4), widths=(8, 16))
    return PreDiff(autoencoder, denoiser), torch.rand(2, 2, 1, 8, 8)


def test_a_callers_guide_on_prediff_is_the_sum_by_hand_bitwise():
    """Both call forms sample what PreDiff samples with the control's guide plus the caller's,
    summed by hand, at the same seed."""
    prediff, context = tiny_prediff()
    control = KnowledgeControl(mean_of_frames, torch.tensor([0.2, 0.8]), 0.5)
    wrapped = constrain(prediff, control)

    def damp(z, step):
        return -0.1 * z

    def both(z, step):
        return control.guide(z, step, context) + damp(z, step)

    options = {"members": 2, "steps": 3, "seed": 5}
    by_hand = prediff.sample(context, guidance=both, **options).samples
    assert not torch.equal(wrapped(context, **options).samples, by_hand)
    assert torch.equal(wrapped(context, guidance=damp, **options).samples, by_hand)
    assert torch.equal(wrapped.sample(context, guidance=damp, **options).samples, by_hand)


def test_a_callers_guide_reaches_prediff_wrapped_for_its_output_only():
    """With only an output-seam constraint, ``wrapped.sample(..., guidance=)`` (used to raise
    the same TypeError) samples as ``wrapped(..., guidance=)`` does: the caller's guide at every
    step, then the constraint on the samples."""
    from pdes import Grid2D

    prediff, context = tiny_prediff()
    grid = Grid2D(Grid1D(8, 0.0, 1.0), Grid1D(8, 0.0, 1.0))
    mass = mass_conservation(grid, torch.tensor([[[0.3], [0.4]], [[0.5], [0.6]]]))
    wrapped = constrain(prediff, mass)
    timesteps = []

    def damp(z, step):
        timesteps.append(step.timestep)
        return -0.1 * z

    options = {"members": 3, "steps": 3, "seed": 5}
    expected = mass(prediff.sample(context, guidance=damp, **options)).samples
    assert not torch.equal(expected, mass(prediff.sample(context, **options)).samples)
    assert torch.equal(wrapped(context, guidance=damp, **options).samples, expected)
    assert torch.equal(wrapped.sample(context, guidance=damp, **options).samples, expected)
    assert timesteps == 3 * prediff.schedule.sampling_timesteps(3, "leading")


def test_a_target_changed_after_building_the_control_leaves_it_as_built():
    """``target += 1`` in user code after the control is built: it steers to the target given
    (a tensor of its own dtype used to be kept by reference), ``g = −λ (mean − F₀) / n``."""
    z = torch.arange(12, dtype=F64).reshape(2, 3, 2) / 10  # (members, batch, latent)
    for dtype in (F64, torch.float32):
        target = torch.tensor([1.0, -2.0, 0.5], dtype=dtype)
        control = KnowledgeControl(MeanOfLatents(), target, 3.0)
        target += 1.0
        shift = control.guide(z, 4, None)
        given = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
        expected = (-3.0 * (z.mean(-1) - given) / 2)[..., None].expand_as(z)
        torch.testing.assert_close(shift, expected, rtol=1e-6, atol=0)


def test_a_target_carrying_a_gradient_is_kept_without_it():
    """A target computed from a tensor that needs a gradient: the control keeps its value, not
    its graph, so it deep-copies (refused for a non-leaf tensor) and steers alike."""
    weights = torch.tensor([1.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    control = KnowledgeControl(MeanOfLatents(), 2 * weights, 3.0)
    assert not control.target_value.requires_grad
    z = torch.randn(2, 3, 4, dtype=F64)
    assert torch.equal(copy.deepcopy(control).guide(z, 1, None), control.guide(z, 1, None))


# ---------------------------------------------------------------------- regressor and its loss


class Pairs(torch.utils.data.Dataset):
    def __init__(self, z0, y):
        self.z0, self.y = z0, y

    def __len__(self):
        return len(self.z0)

    def __getitem__(self, i):
        return self.z0[i], self.y[i]


def test_the_regressor_learns_a_quantity_from_noisy_latents(tmp_path):
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(512, 2, 1, 4, 4, generator=gen)
    y = 3.0 * z0.flatten(1).mean(1) + 1.0  # std ≈ 0.53
    schedule = NoiseSchedule(50)
    model = KnowledgeRegressor((2, 1, 4, 4), hidden=16, offset=1.0)
    config = TrainConfig(steps=300, batch=64, lr=3e-3, seed=0, checkpoint_every=300)
    report = Trainer(model, NoisyLatentLoss(schedule), config, out=tmp_path, quiet=True).fit(
        Pairs(z0[:448], y[:448])
    )
    assert report.losses[-1] < report.losses[0]
    model.eval()
    with torch.no_grad():
        clean = model(z0[448:], torch.zeros(64, dtype=torch.long))
    error = (clean - y[448:]).square().mean().sqrt()
    assert error < 0.3 * y[448:].std(), (float(error), float(y.std()))


def test_noisy_latent_loss_draws_from_its_generator_and_checks_shapes():
    schedule = NoiseSchedule(10, "linear")
    model = KnowledgeRegressor((2, 1, 4, 4), hidden=4).eval()
    batch = (torch.randn(5, 2, 1, 4, 4), torch.randn(5))
    first = NoisyLatentLoss(schedule, torch.Generator().manual_seed(3))(model, batch)
    second = NoisyLatentLoss(schedule, torch.Generator().manual_seed(3))(model, batch)
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="y has shape"):
        NoisyLatentLoss(schedule)(model, (batch[0], torch.randn(5, 2)))
    with pytest.raises(ValueError, match="z must have 2 frame"):
        model(torch.randn(5, 3, 1, 4, 4), torch.zeros(5, dtype=torch.long))


def test_a_normalized_control_takes_a_gauss_newton_step_whatever_the_units():
    z0 = torch.randn(2, 3, 4, 5, dtype=F64)
    target = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    for units in (1e-3, 1.0, 1e4):  # quantity units: a raw control's pull scales with units²

        class Scaled(nn.Module):
            def forward(self, z, t, units=units):
                return units * z.flatten(1).mean(1)

        control = KnowledgeControl(Scaled(), units * target, 0.25, normalized=True)
        out = constrain(ToySampler(), control)(z0, steps=3)
        # the mean moves by a quarter of its miss per step (m ← m − ¼ (m − target))
        torch.testing.assert_close(out.samples, closed_form(z0, target[None], 1.0, 0.25, 3))
        one = constrain(ToySampler(), control.with_target(units * target))
        assert one.constraints[0].normalized

    # λ = 1: a linear quantity with non-overlapping rows (one per frame) lands in one step
    class PerFrame(nn.Module):
        def forward(self, z, t):
            return z.mean(-1)

    per_frame = torch.arange(12, dtype=F64).reshape(3, 4)
    out = constrain(ToySampler(), KnowledgeControl(PerFrame(), per_frame, 1.0, normalized=True))(
        z0, steps=1
    )
    torch.testing.assert_close(out.samples.mean(-1), per_frame.expand(2, 3, 4))
    # a sample already on its target is left alone (no 0 / 0)
    on_target = KnowledgeControl(PerFrame(), z0[0].mean(-1), 1.0, normalized=True)
    hit = constrain(ToySampler(), on_target)
    torch.testing.assert_close(hit(z0, steps=1).samples[0], z0[0], rtol=0, atol=0)


def test_a_shift_that_is_not_finite_is_a_constraint_error_saying_why():
    z0 = torch.randn(2, 3, 4, dtype=F64)

    class Root(nn.Module):  # infinite slope where the latents are 0
        def forward(self, z, t):
            return z.abs().sqrt().flatten(1).mean(1)

    for normalized in (False, True):
        root = KnowledgeControl(Root(), torch.ones(3), 1.0, normalized=normalized)
        with pytest.raises(ConstraintError, match="quantity or its gradient at z_t is NaN or inf"):
            constrain(ToySampler(), root)(z0 * 0, steps=1)

    class Flat(nn.Module):  # barely moves with z: |∇F|² underflows to subnormal numbers
        def forward(self, z, t):
            return 1e-160 * z.flatten(1).mean(1)

    far = torch.full((3,), 1e10, dtype=F64)  # miss² / |∇F|² overflows
    flat = KnowledgeControl(Flat(), far, 1.0, normalized=True)
    with pytest.raises(ConstraintError, match=r"divides the miss by \|∇F\|²"):
        constrain(ToySampler(), flat)(z0, steps=1)
    # the same quantity unnormalized takes a tiny, finite step
    out = constrain(ToySampler(), KnowledgeControl(Flat(), far, 1.0))(z0, steps=1)
    assert torch.isfinite(out.samples).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"normalized": "yes"},
            ValueError,
            "normalized must be True, False or \"clean\", got 'yes'",
        ),
        ({"normalized": 1}, TypeError, 'normalized must be True, False or "clean", got 1'),
        ({"normalized": None}, TypeError, 'normalized must be True, False or "clean", got None'),
        ({"normalized": "clean", "on": "noisy"}, ValueError, "needs on=\"frames\", got on='noisy'"),
        ({"normalized": "clean"}, ValueError, r"got on='noisy' \(the default for an nn.Module\)"),
    ],
)
def test_normalized_must_be_true_false_or_clean_on_frames(kwargs, error, match):
    with pytest.raises(error, match=match):
        KnowledgeControl(MeanOfLatents(), torch.zeros(3), **kwargs)


# ------------------------------------------------------- normalized="clean" under the real DDIM


def per_frame_mean(frames):
    """Each frame's mean, ``(N, T, *x) → (N, T)``: linear, rows of equal norm, no overlap."""
    return frames.flatten(2).mean(-1)


def test_true_is_the_gauss_newton_step_in_z_t_through_the_denoiser():
    # denoise(z) = z³, F = mean: ∇_z ½ r² = r · 3 z² / n, so g = −λ r n z² / (3 Σ z⁴)
    z_t = torch.randn(2, 3, 6, dtype=F64)
    target = torch.tensor([0.5, -1.0, 0.0], dtype=F64)
    target[2] = (z_t[1, 2] ** 3).mean()  # sample (1, 2) already on target: no step
    step = ReverseStep(500, 0, 0.3, denoise=lambda z: z**3)
    control = KnowledgeControl(mean_of_frames, target, 0.7, normalized=True)
    r = (z_t**3).mean(-1) - target
    expected = -0.7 * r[..., None] * 6 * z_t**2 / (3 * (z_t**4).sum(-1, keepdim=True))
    expected[1, 2] = 0.0
    torch.testing.assert_close(control.guide(z_t, step, None), expected, rtol=1e-12, atol=1e-14)


def test_clean_moves_the_ddim_clean_estimate_by_the_gauss_newton_step():
    alpha_bar, n = 0.3, 5
    z_t = torch.randn(2, 3, 2, n, dtype=F64)  # (members, batch, frames, entries)
    target = torch.tensor([[1.0, -0.5], [0.0, 2.0], [0.3, 0.3]], dtype=F64)
    grad_enabled = []

    def predict(z):  # a nonlinear noise estimate, called like the sampler's
        grad_enabled.append(torch.is_grad_enabled())
        return 0.5 * torch.tanh(z) + 0.1 * z

    def denoise(z):  # sampler.py: ẑ₀ = (z_t − √(1 − ᾱ) ε̂) / √ᾱ
        return (z - math.sqrt(1 - alpha_bar) * predict(z)) / math.sqrt(alpha_bar)

    step = ReverseStep(400, 3, alpha_bar, denoise=denoise, decode=lambda x: 2 * x)
    before = denoise(z_t)
    r = (2 * before).mean(-1) - target
    for scale in (0.25, 1.0):
        grad_enabled.clear()
        control = KnowledgeControl(per_frame_mean, target, scale, normalized="clean")
        g = control.guide(z_t, step, None)
        assert grad_enabled == [False]  # one denoiser pass, not differentiated
        # DDIM's correction ε̂ − √(1 − ᾱ) g, then sampler.py's ẑ₀
        eps = predict(z_t) - math.sqrt(1 - alpha_bar) * g
        after = (z_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        # the Gauss–Newton step on ẑ₀ for F = mean of 2 ẑ₀ per frame: δ = −λ r_k / 2 per entry
        delta = -scale * r[..., None] / 2
        torch.testing.assert_close(after - before, delta.expand_as(z_t), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close((2 * after).mean(-1) - target, (1 - scale) * r)
    # at ᾱ = 1 no score moves ẑ₀ = z_t: the guide returns 0
    still = ReverseStep(0, 9, 1.0, denoise=denoise, decode=lambda x: 2 * x)
    zero = KnowledgeControl(per_frame_mean, target, 1.0, normalized="clean").guide(z_t, still, None)
    assert torch.equal(zero, torch.zeros_like(z_t))


def exact_ddim_frame_means(z_T, target, scale, steps):
    """The frame means of η = 0 DDIM guided by ``normalized="clean"`` on N(0, I) latents, by a
    scalar recurrence: the exact denoiser gives ẑ₀ = √ᾱ z_t; the step moves ẑ₀'s mean ``m₀`` to
    ``m₀ − λ (m₀ − F₀)`` and ε̂ = (z_t − √ᾱ ẑ₀)/√(1 − ᾱ); z_t′ = √ᾱ′ ẑ₀ + √(1 − ᾱ′) ε̂."""
    bars = NoiseSchedule().alphas_cumprod().double()
    stride = 1000 // steps
    timesteps = list(range(1000 - stride, -1, -stride))  # "leading", last ᾱ′ = 1
    m = per_frame_mean(z_T.double().flatten(0, 1)).reshape(*z_T.shape[:2], -1)
    for t in timesteps:
        a = float(bars[t])
        a_next = float(bars[t - stride]) if t >= stride else 1.0
        m0 = math.sqrt(a) * m
        m0 = m0 - scale * (m0 - target)
        eps = (m - math.sqrt(a) * m0) / math.sqrt(1 - a)
        m = math.sqrt(a_next) * m0 + math.sqrt(1 - a_next) * eps
    return m


def test_clean_under_the_real_ddim_removes_the_fraction_lambda_and_lands_at_one():
    schedule, steps, shape = NoiseSchedule(), 20, (2, 3, 2, 1, 4, 4)
    bars = schedule.alphas_cumprod()
    target = torch.tensor([[1.0, 0.5], [-1.0, 0.0], [0.25, 2.0]])
    calls = []

    def predict(z, t):  # the exact noise estimate for N(0, I) latents: ε̂ = √(1 − ᾱ_t) z
        calls.append(t)
        return math.sqrt(1 - float(bars[t])) * z

    z_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    misses = []
    for scale in (0.0, 0.25, 0.5, 1.0):
        control = KnowledgeControl(per_frame_mean, target, scale, normalized="clean")
        calls.clear()
        out = ddim_sample(
            predict,
            shape,
            schedule,
            torch.Generator().manual_seed(0),
            steps,
            eta=0.0,
            guidance=lambda z, step, control=control: control.guide(z, step, None),
        )
        assert len(calls) == steps  # the guide's denoiser pass is the step's
        means = per_frame_mean(out.flatten(0, 1)).reshape(2, 3, 2).double()
        expected = exact_ddim_frame_means(z_T, target.double(), scale, steps)
        torch.testing.assert_close(means, expected, rtol=0, atol=1e-5)
        misses.append(float((means - target).abs().max()))
    unguided, *guided = misses
    assert unguided > 0.5
    assert guided[0] < unguided and guided[1] < guided[0] and guided[2] < guided[1], misses
    # λ = 1: the last step puts ẑ₀ on the target and its ᾱ′ = 1 returns ẑ₀ (float32 round-off)
    assert guided[2] < 1e-5 * unguided, misses


@pytest.mark.parametrize("steps", [7, 30])
def test_clean_at_lambda_one_lands_on_the_target_at_trailing_steps_not_dividing_t(steps):
    """Trailing timesteps ``N`` not dividing ``T = 1000`` (not ⌊T/N⌋ apart), float64: the guide
    and the step see the same ᾱ and the last step reaches ᾱ′ = 1, so λ = 1 puts every sample's
    frame means on the target to round-off."""
    bars, shape = NoiseSchedule().alphas_cumprod().double(), (2, 3, 2, 1, 4, 4)
    target = torch.tensor([[1.0, 0.5], [-1.0, 0.0], [0.25, 2.0]], dtype=F64)
    control = KnowledgeControl(per_frame_mean, target, 1.0, normalized="clean")
    out = ddim_sample(
        lambda z, t: math.sqrt(1 - bars[t]) * z, shape, NoiseSchedule(),
        torch.Generator().manual_seed(0), steps, eta=0.0,
        guidance=lambda z, step: control.guide(z, step, None), spacing="trailing", dtype=F64,
    )  # fmt: skip
    means = per_frame_mean(out.flatten(0, 1)).reshape(2, 3, 2)
    assert (means - target).abs().max() < 1e-12


def test_clean_refuses_a_step_it_cannot_turn_into_a_score():
    z_t = torch.randn(2, 3, 2, 4, dtype=F64)
    control = KnowledgeControl(per_frame_mean, torch.zeros(3, dtype=F64), 1.0, normalized="clean")
    for alpha_bar in (0.0, 1.5, math.nan):
        step = ReverseStep(5, 0, alpha_bar, denoise=lambda z: z)
        with pytest.raises(ConstraintError, match=r"alpha_bar in \(0, 1\], got"):
            control.guide(z_t, step, None)
    squeezed = ReverseStep(5, 0, 0.5, denoise=lambda z: z[..., :2])
    with pytest.raises(ConstraintError, match=r"must be shaped like z_t \(2, 3, 2, 4\), got"):
        control.guide(z_t, squeezed, None)
    with pytest.raises(ConstraintError, match="ReverseStep with a denoise"):
        control.guide(z_t, 5, None)


def test_clean_carries_through_with_target_and_repr():
    control = KnowledgeControl(per_frame_mean, torch.zeros(3), 0.5, normalized="clean")
    assert control.with_target(torch.ones(3)).normalized == "clean"
    assert "normalized='clean'" in repr(control)
    assert "normalized=True" in repr(
        KnowledgeControl(MeanOfLatents(), torch.zeros(3), normalized=True)
    )


def test_target_callable_receives_the_context_not_the_latents():
    """A target that is not a fixed point of the latents, and the object it is handed: the
    context itself at every step (the latents would pass the other test unnoticed)."""
    z0 = torch.randn(2, 3, 6, dtype=F64)
    seen = []

    def target(context):
        seen.append(context)
        return context[0].mean(-1) + 1.0

    constrain(ToySampler(), KnowledgeControl(MeanOfLatents(), target, 3.0))(z0, steps=5)
    assert len(seen) == 5 and all(c is z0 for c in seen)


@pytest.mark.parametrize("normalized", [True, "clean"])
def test_a_float16_sampler_takes_the_float64_gauss_newton_step(normalized):
    # F = mean of 4096 entries: ∇ ½ r² = r / n per entry, whose square underflows in float16;
    # the Gauss–Newton step is −λ r per entry, times √ᾱ/(1 − ᾱ) = √2 for "clean" at ᾱ = 0.5
    n, scale = 4096, 0.5
    z_t = (0.1 * torch.randn(2, 3, n, dtype=F64)).half()
    target = torch.full((3,), 0.5)
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    control = KnowledgeControl(mean_of_frames, target, scale, on="frames", normalized=normalized)
    shift = control.guide(z_t, step, None)
    r = z_t.double().mean(-1) - 0.5
    clean_score = math.sqrt(2) if normalized == "clean" else 1.0
    expected = -scale * clean_score * r[..., None].expand(2, 3, n)
    assert shift.dtype == torch.float16
    torch.testing.assert_close(shift.double(), expected, rtol=2e-3, atol=1e-4)


def test_a_float16_step_too_large_for_float16_arithmetic_is_still_taken():
    # Q = z / 512 on one entry: |∇F|² = (r/512)², miss / |∇F|² = 512² overflows float16, the
    # Gauss–Newton step −λ · 512 r does not: z + step puts Q on the target at λ = 1
    z_t = torch.tensor([[[64.0], [-32.0]]], dtype=torch.float16)
    target = torch.tensor([1.0, 0.5])
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    control = KnowledgeControl(lambda z: z.flatten(1).sum(1) / 512, target, 1.0, normalized=True)
    shift = control.guide(z_t, step, None)
    assert shift.dtype == torch.float16
    torch.testing.assert_close((z_t + shift).double().reshape(2) / 512, target.double())


def test_a_step_beyond_the_samplers_dtype_is_a_constraint_error_naming_it():
    # Q = z / 2²⁰ from 0 to 1: the Gauss–Newton step is 2²⁰, past float16's largest 65504
    z_t = torch.zeros(1, 1, 1, dtype=torch.float16)
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    flat = KnowledgeControl(lambda z: z.flatten(1).sum(1) / 2**20, torch.ones(1), normalized=True)
    overflows = r"largest \|shift\| 1.05e\+06\) but overflows z_t's torch.float16"
    with pytest.raises(ConstraintError, match=overflows):
        flat.guide(z_t, step, None)


@pytest.mark.parametrize("normalized", [True, "clean"])
def test_a_float16_mean_of_a_million_entries_still_gets_its_gauss_newton_step(normalized):
    # ∇ ½ r² = r / n per entry: r = −0.01, n = 2²⁰ gives 1e−8, under float16's smallest 6e−8,
    # unless the backward pass is scaled; the step is still −λ r per entry (√2 more for "clean")
    n, scale = 2**20, 0.5
    z_t = (0.1 * torch.randn(1, 2, n, dtype=F64)).half()
    target = z_t.double().mean(-1)[0] + 0.01
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    control = KnowledgeControl(mean_of_frames, target, scale, on="frames", normalized=normalized)
    shift = control.guide(z_t, step, None)
    clean_score = math.sqrt(2) if normalized == "clean" else 1.0
    expected = torch.full((1, 2, n), scale * clean_score * 0.01, dtype=F64)
    assert shift.dtype == torch.float16
    torch.testing.assert_close(shift.double(), expected, rtol=2e-3, atol=1e-5)


def test_a_float16_gradient_that_underflows_even_scaled_is_a_constraint_error():
    # Q = mean / 2²⁴ over 2²⁰ entries: ∂Q/∂z = 2⁻⁴⁴, below float16's 2⁻²⁴ even times 2¹⁵
    z_t = torch.ones(1, 1, 2**20, dtype=torch.float16)
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    tiny = KnowledgeControl(lambda z: mean_of_frames(z) / 2**24, torch.ones(1), normalized=True)
    underflows = r"gradient at timestep 500 is 0 in z_t's torch.float16"
    with pytest.raises(ConstraintError, match=underflows):
        tiny.guide(z_t, step, None)


def test_a_float16_gradient_that_overflows_when_scaled_up_is_retaken_lower():
    # Q = 2¹² z: the scaled backward pass (2⁷ r) gives 2¹⁹ r, past float16's 65504; at r itself
    # 2¹² r fits, and the Gauss–Newton step −r / 2¹² puts Q on the target at λ = 1
    z_t = torch.tensor([[[0.001]]], dtype=torch.float16)
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    target = torch.tensor([5.0], dtype=F64)
    steep = KnowledgeControl(lambda z: z.flatten(1).sum(1) * 2**12, target, normalized=True)
    shift = steep.guide(z_t, step, None)
    assert shift.dtype == torch.float16
    reached = (z_t + shift).double().reshape(1) * 2**12
    torch.testing.assert_close(reached, target, rtol=2e-3, atol=0)


def test_a_float16_sample_whose_quantity_does_not_move_gets_no_shift_and_the_others_theirs():
    # sample 0 is past the clamp (∂Q/∂z = 0 exactly): no shift, as in float32; sample 1:
    # Q = mean of 2 frames = 0.25, r = −0.25, ∂Q/∂z = ½ each, Gauss–Newton step −r = 0.25 each
    z_t = torch.tensor([[[2.0, 3.0], [0.2, 0.3]]], dtype=torch.float16)
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    clamped = KnowledgeControl(
        lambda f: f.clamp(-1, 1).mean(-1), torch.tensor([0.0, 0.5]), on="frames", normalized=True
    )
    shift = clamped.guide(z_t, step, None)
    expected = torch.tensor([[[0.0, 0.0], [0.25, 0.25]]], dtype=F64)
    torch.testing.assert_close(shift.double(), expected, rtol=2e-3, atol=0)


def test_float16_misses_of_very_different_sizes_each_get_their_gauss_newton_step():
    # Q = mean of 2²⁰ zeros, misses 8 and 1e−6: steps −r = 8 and 1e−6 per entry; one scale for
    # both (set by the 8) puts the second's 1e−6 / 2²⁰ · 2⁴ under float16's 2⁻²⁴
    n = 2**20
    z_t = torch.zeros(1, 2, n, dtype=torch.float16)
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    target = torch.tensor([8.0, 1e-6], dtype=F64)
    shift = KnowledgeControl(mean_of_frames, target, on="frames", normalized=True).guide(
        z_t, step, None
    )
    torch.testing.assert_close(shift.double().mean(-1)[0], target, rtol=2e-2, atol=0)


def test_a_float16_gradient_that_overflowed_once_is_kept_at_the_next_finite_pass():
    # Q = 1000 · mean of 4096 zeros, r = −3, 5: the first scaled pass (2⁴ r · 1000) overflows;
    # the one below it is kept (2 backward passes). Step −r g/|g|² = −r / 1000 per entry
    passes = []

    class Counted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            passes.append(1)
            return grad

    z_t = torch.zeros(1, 2, 4096, dtype=torch.float16)
    step = ReverseStep(500, 5, 0.5, denoise=lambda z: z)
    target = torch.tensor([3.0, -5.0], dtype=F64)
    steep = KnowledgeControl(
        lambda f: 1000 * Counted.apply(f).mean(-1), target, on="frames", normalized=True
    )
    shift = steep.guide(z_t, step, None)
    assert len(passes) == 2
    torch.testing.assert_close(shift.double().mean(-1)[0], target / 1000, rtol=2e-3, atol=0)
