"""Datasets over ``pdes`` output: generation to HDF5 and loading as torch datasets."""

from .datasets import (
    DatasetFileError,
    MultiStepDataset,
    PDEData,
    SingleStepDataset,
    load,
)
from .generate import generate_dataset, sample_seed

__all__ = [
    "DatasetFileError",
    "MultiStepDataset",
    "PDEData",
    "SingleStepDataset",
    "generate_dataset",
    "load",
    "sample_seed",
]
