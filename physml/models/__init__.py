"""Surrogates and forecasters: exact GPs, deep ensembles, ANPs, Earthformer.

Probabilistic models return the toolkit's output kinds (:class:`~physml.outputs.Gaussian`,
:class:`~physml.outputs.Ensemble`), so the constraint layer applies to them unchanged; sequence
forecasters (Earthformer and the baselines) map ``(batch, time, channel, H, W)`` context frames to
target frames.
"""

from .anp import AttentiveNeuralProcess, gpme_sampler, softc_loss_extra, train_anp
from .baselines import ConvLSTM, ConvLSTMCell, Persistence, UNet, count_parameters
from .common import grid_points, unflatten, with_parameters
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
from .ensemble import DeepEnsemble
from .forecasting import (
    ForecastScores,
    TrainReport,
    evaluate_forecaster,
    score_forecast,
    train_forecaster,
)
from .gp import ExactGPSurrogate

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
    "score_forecast",
    "train_forecaster",
    "AttentiveNeuralProcess",
    "DeepEnsemble",
    "ExactGPSurrogate",
    "gpme_sampler",
    "grid_points",
    "softc_loss_extra",
    "train_anp",
    "unflatten",
    "with_parameters",
]
