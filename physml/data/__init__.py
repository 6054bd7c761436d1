"""Datasets over ``pdes`` output: generation to HDF5 and loading as torch datasets; synthetic
N-body digit videos (importing this package registers their ``nbody-digits`` and
``moving-digits`` recipes)."""

from .datasets import (
    DatasetFileError,
    MultiStepDataset,
    PDEData,
    SingleStepDataset,
    load,
)
from .generate import generate_dataset, sample_seed
from .nbody import NBodyDigits, nbody_digits

__all__ = [
    "DatasetFileError",
    "MultiStepDataset",
    "NBodyDigits",
    "PDEData",
    "SingleStepDataset",
    "generate_dataset",
    "load",
    "nbody_digits",
    "sample_seed",
]
