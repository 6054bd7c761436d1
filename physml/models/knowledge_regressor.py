"""PreDiff's knowledge regressor ``U_φ(z_t, t)``: a quantity of clean frames, from noisy latents.

:class:`physml.constraints.KnowledgeControl` steers a sampler with ``∇_{z_t}`` of this
regressor's miss, so it must predict the quantity (e.g. the total energy, or the mean intensity)
from latents at every noise level: :class:`NoisyLatentLoss` trains it on ``z_t = √ᾱ_t z_0 +
√(1 − ᾱ_t) ε`` with ``t`` uniform, as PreDiff does. Each sample is processed alone
(no batch statistics), so one sample's guidance never depends on another's.
"""

from __future__ import annotations

import torch
from torch import nn

from pdes.checks import finite_number, positive, positive_int

from .baselines import check_sequence
from .common import in_model_dtype
from .prediff import NoiseSchedule, timestep_embedding


class KnowledgeRegressor(nn.Module):
    """``U_φ(z, t)``: latents ``(N, T, c, h, w)`` (``latent_shape = (T, c, h, w)``) and
    timesteps ``(N,)`` → ``(N,)`` (``outputs = 1``) or ``(N, outputs)`` (e.g. one value per target
    frame).

    The ``T · c`` latent channels are stacked, passed through three 3×3 convolutions of ``hidden``,
    ``hidden`` and ``2 · hidden`` channels (the last two with stride 2; the timestep's sinusoidal
    embedding added after the first), averaged over space and mapped linearly to the outputs.
    ``offset`` and ``scale`` (buffers, saved with the weights; finite, ``scale > 0``) set the
    output's units: the network learns ``(quantity − offset) / scale``.
    """

    def __init__(
        self,
        latent_shape: tuple[int, int, int, int],
        hidden: int = 32,
        outputs: int = 1,
        offset: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if len(latent_shape) != 4:
            raise ValueError(f"latent_shape must be (T, c, h, w), got {latent_shape!r}")
        for name, value in zip(("T", "c", "h", "w"), latent_shape, strict=True):
            positive_int(f"latent_shape {name}", value)
        positive_int("hidden", hidden)
        positive_int("outputs", outputs)
        self.latent_shape = tuple(latent_shape)
        self.hidden, self.outputs = hidden, outputs
        frames, channels = latent_shape[:2]
        self.stem = nn.Conv2d(frames * channels, hidden, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.body = nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(hidden, 2 * hidden, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        self.head = nn.Linear(2 * hidden, outputs)
        self.register_buffer("offset", torch.tensor(finite_number("offset", offset)))
        self.register_buffer("scale", torch.tensor(positive("scale", scale)))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = check_sequence("z", z, channels=self.latent_shape[1], frames=self.latent_shape[0])
        z = in_model_dtype(self, z)
        if not isinstance(t, torch.Tensor) or t.shape != (z.shape[0],):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t must be a tensor of {z.shape[0]} timesteps (N,), got {got}")
        features = self.stem(z.flatten(1, 2))
        embedding = self.time(timestep_embedding(t, self.hidden).to(features.dtype))
        features = self.body(features + embedding[:, :, None, None])
        value = self.head(features.mean((-2, -1)))
        value = self.offset + self.scale * value
        return value[:, 0] if self.outputs == 1 else value


class NoisyLatentLoss:
    """``loss(model, (z_0, y))``: the mean squared miss of ``model(z_t, t)`` on ``y``.

    ``z_0`` ``(B, T, c, h, w)`` clean latents and ``y`` the quantity of their frames, shaped
    like the model's output; ``t`` uniform on ``[0, T)`` and ``z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε``
    by :meth:`NoiseSchedule.add_noise <physml.models.prediff.NoiseSchedule.add_noise>` of
    ``schedule``, the sampler's (e.g. ``prediff.schedule``), as the denoiser is trained.
    Draws come from ``generator``, or (``None``) torch's global generator, which
    :class:`physml.training.Trainer` seeds and checkpoints for a bitwise resume.
    """

    def __init__(self, schedule: NoiseSchedule, generator: torch.Generator | None = None) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(
                "schedule must be the NoiseSchedule the sampler uses (e.g. prediff.schedule), "
                f"got {type(schedule).__name__}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
        self.schedule, self.generator = schedule, generator

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        z0, y = batch
        count, where = z0.shape[0], self.generator.device if self.generator else z0.device
        t = torch.randint(self.schedule.timesteps, (count,), generator=self.generator, device=where)
        noise = torch.randn(z0.shape, generator=self.generator, device=where, dtype=z0.dtype)
        t, noise = t.to(z0.device), noise.to(z0.device)
        z_t = self.schedule.add_noise(z0, noise, t)
        prediction = model(z_t, t)
        if prediction.shape != y.shape:
            raise ValueError(
                f"the model predicts {tuple(prediction.shape)} but y has shape {tuple(y.shape)}"
            )
        return (prediction - y.to(prediction.dtype)).square().mean()
