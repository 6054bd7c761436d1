"""One training path for every model family: a :class:`Trainer`, its checkpoints and scale-out.

- :class:`Trainer` — the loop: a fixed global batch drawn by step from ``(seed, epoch)``, Adam with
  a cosine learning-rate schedule by default (or a constant rate), gradient clipping, validation,
  a time budget in wall or CPU seconds, tqdm progress, ``--device``;
- checkpoints (:mod:`.checkpoint`) — one format: model and optimiser state, RNG state, step, the
  model's config and a fingerprint of the training data; resuming on other data is an error, and a
  kill -9 followed by a resume gives the bitwise result of an uninterrupted run;
- :mod:`.distributed` — ``torchrun`` processes (gloo on CPU, nccl on GPU): DDP, each rank a slice
  of the same global batch, checkpoints written by rank 0 and loadable at any world size;
- :mod:`.probabilistic` — the ANP (:func:`~physml.training.train_anp`, reloaded by
  :func:`~physml.training.load_anp`) and deep ensembles (:func:`~physml.training.fit_ensemble`)
  trained through the same Trainer;
- :func:`~physml.training.train_prediff` — PreDiff's two stages (autoencoder, then the latent
  denoiser with its EMA copy), each a Trainer run resumed from its own folder;
- :mod:`.forecasting` — video forecasters (:func:`~physml.training.train_forecaster`, which
  returns a :class:`~physml.training.ForecasterReport`, reloaded by
  :func:`~physml.training.load_forecaster`) trained through the same Trainer;
- :func:`~physml.training.load_run` — the model of a ``physml train`` run, rebuilt as
  ``physml evaluate`` does.
"""

from .checkpoint import CheckpointError, load_checkpoint
from .commands import load_run
from .distributed import World, world
from .fingerprint import fingerprint
from .forecasting import (
    ForecasterReport,
    check_no_old_checkpoint,
    load_forecaster,
    train_forecaster,
)
from .prediff import train_prediff
from .probabilistic import MemberRows, Objective, fit_ensemble, load_anp, train_anp
from .trainer import TrainConfig, Trainer, TrainReport

__all__ = [
    "CheckpointError",
    "MemberRows",
    "Objective",
    "TrainConfig",
    "TrainReport",
    "Trainer",
    "World",
    "fingerprint",
    "fit_ensemble",
    "load_anp",
    "load_checkpoint",
    "load_run",
    "train_anp",
    "train_prediff",
    "world",
    # the video forecasters' trainer and its report
    "ForecasterReport",
    "check_no_old_checkpoint",
    "load_forecaster",
    "train_forecaster",
]
