"""Datasets over ``pdes`` output: generation to HDF5 and loading as torch datasets; synthetic
N-body digit videos (importing this package registers their ``nbody-digits`` and
``moving-digits`` recipes); GPME functions and point sets for the point-based surrogates."""

from .datasets import (
    DatasetFileError,
    MultiStepDataset,
    PDEData,
    SingleStepDataset,
    load,
)
from .generate import RepeatedSamplesWarning, generate_dataset, repeated_streams, sample_seed
from .gpme_sampler import GPMEFunctions, GPMESampler, gpme_sampler
from .interchange import (
    convert,
    read_pdebench,
    read_well,
    write_pdebench,
    write_physml,
    write_well,
)
from .merge import IndexNotWritten, ShardError, check_shards, merge_shards
from .nbody import NBodyDigits, canvas_lengths, nbody_digits
from .points import PointRows, PointSets, grid_points

__all__ = [
    "DatasetFileError",
    "GPMEFunctions",
    "GPMESampler",
    "IndexNotWritten",
    "MultiStepDataset",
    "NBodyDigits",
    "PDEData",
    "PointRows",
    "PointSets",
    "RepeatedSamplesWarning",
    "ShardError",
    "SingleStepDataset",
    "canvas_lengths",
    "check_shards",
    "convert",
    "generate_dataset",
    "gpme_sampler",
    "grid_points",
    "load",
    "merge_shards",
    "nbody_digits",
    "read_pdebench",
    "read_well",
    "repeated_streams",
    "sample_seed",
    "write_pdebench",
    "write_physml",
    "write_well",
]
