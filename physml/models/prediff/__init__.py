"""PreDiff: latent diffusion forecasts of video, steerable at the sampler seam.

:class:`FrameAutoencoder` (frames ↔ latents), two denoisers behind one interface
(:class:`ConvDenoiser`, :class:`CuboidDenoiser`), the diffusers-kept :class:`NoiseSchedule`, the
guided DDIM loop :func:`.ddim_sample`, and :class:`PreDiff` which holds them and returns an
:class:`~physml.outputs.Ensemble` of forecasts.
"""

from .autoencoder import FrameAutoencoder, autoencoder_loss, reconstruction_scores
from .denoisers import ConvDenoiser, CuboidDenoiser, Denoiser, TimeEmbedding, timestep_embedding
from .prediff import LatentPairs, PreDiff, diffusion_loss, update_ema
from .sampler import ddim_sample
from .schedule import NoiseSchedule

__all__ = [
    "ConvDenoiser",
    "CuboidDenoiser",
    "Denoiser",
    "FrameAutoencoder",
    "LatentPairs",
    "NoiseSchedule",
    "PreDiff",
    "TimeEmbedding",
    "autoencoder_loss",
    "ddim_sample",
    "diffusion_loss",
    "reconstruction_scores",
    "timestep_embedding",
    "update_ema",
]
