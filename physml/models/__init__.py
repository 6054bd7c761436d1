"""Surrogates and forecasters: exact GPs, deep ensembles, ANPs, Earthformer.

Probabilistic models return the toolkit's output kinds (:class:`~physml.outputs.Gaussian`,
:class:`~physml.outputs.Ensemble`), so the constraint layer applies to them unchanged; sequence
forecasters (Earthformer and the baselines) map ``(batch, time, channel, H, W)`` context frames to
target frames.
"""

from ..data.points import grid_points
from .anp import AttentiveNeuralProcess
from .anp_losses import elbo_loss, gpme_residual, softc_loss_extra, softc_residual_loss
from .baselines import ConvLSTM, ConvLSTMCell, Persistence, UNet, count_parameters
from .common import unflatten, with_parameters
from .coordinates import GridCoordinates, PeriodicCoordinates
from .cuboid import (
    PATTERNS,
    CuboidCrossAttention,
    CuboidCrossBlock,
    CuboidSelfAttention,
    CuboidTransformerBlock,
    cuboid_reorder,
    cuboid_reverse,
)
from .earthformer import Earthformer
from .energy_judge import EnergyJudge
from .ensemble import DeepEnsemble
from .forecasting import ForecastScores, _training_name, evaluate_forecaster, score_forecast
from .gp import ExactGPSurrogate, GridGP
from .knowledge_regressor import KnowledgeRegressor, NoisyLatentLoss
from .prediff import PreDiff

_SPECTRAL = ("LeanSpectralConv", "OneActivationBlocks", "fast_fno", "plain_fno")
_TRAINING = ("TrainReport", "load_forecaster", "train_forecaster")


def __getattr__(name: str):
    """The FNO builders load :mod:`.spectral` (and neuralop, ~2 s) on first use, so importing
    the models that need no Fourier layer stays quick; the forecaster's trainer
    (:func:`~physml.training.forecasting.train_forecaster`, which lives above the models in
    :mod:`physml.training`) is forwarded the same way."""
    if name in _SPECTRAL:
        from . import spectral

        return getattr(spectral, name)
    if name in _TRAINING:
        return _training_name(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SPECTRAL, *_TRAINING})


__all__ = [
    "PATTERNS",
    "CuboidCrossAttention",
    "CuboidCrossBlock",
    "CuboidSelfAttention",
    "CuboidTransformerBlock",
    "Earthformer",
    "cuboid_reorder",
    "cuboid_reverse",
    "ConvLSTM",
    "ConvLSTMCell",
    "ForecastScores",
    "Persistence",
    "TrainReport",
    "UNet",
    "count_parameters",
    "evaluate_forecaster",
    "load_forecaster",
    "score_forecast",
    "train_forecaster",
    "AttentiveNeuralProcess",
    "DeepEnsemble",
    "ExactGPSurrogate",
    "GridGP",
    "EnergyJudge",
    "KnowledgeRegressor",
    "LeanSpectralConv",
    "OneActivationBlocks",
    "NoisyLatentLoss",
    "GridCoordinates",
    "PeriodicCoordinates",
    "PreDiff",
    "elbo_loss",
    "fast_fno",
    "plain_fno",
    "gpme_residual",
    "grid_points",
    "softc_loss_extra",
    "softc_residual_loss",
    "unflatten",
    "with_parameters",
]
