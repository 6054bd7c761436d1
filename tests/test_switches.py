"""Boolean switches of the public functions (``progress``, ``quiet``, ``verify``) take True or
False only: a truthy ``"no"`` or ``1`` is a TypeError naming the switch, raised before any work."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from physml.data import merge_shards
from physml.data.generate import generate_dataset
from physml.models.gp import ExactGPSurrogate
from physml.tasks import Context
from physml.tasks.conservation_forecast import data as forecast_data


def _gp_fit_predict(tmp_path, value):
    context_x = torch.rand(1, 4, 2, dtype=torch.float64)
    grid = torch.linspace(0, 1, 3, dtype=torch.float64)
    ExactGPSurrogate(iterations=0).fit_predict(
        context_x, context_x.sum(-1), grid, grid, progress=value
    )


def _generate(tmp_path, value):
    generate_dataset("heat", tmp_path / "x.h5", 2, progress=value, nx=9, nt=3)


def _merge(tmp_path, value):
    merge_shards([tmp_path / "a.h5"], tmp_path / "merged.h5", verify=value)


def _context(tmp_path, value):
    Context(out=tmp_path, quiet=value)


def _forecast_data(tmp_path, value):
    forecast_data.generate("conserved", None, tmp_path, 0, value)


SWITCHES = {
    "ExactGPSurrogate.fit_predict": (_gp_fit_predict, "progress"),
    "generate_dataset": (_generate, "progress"),
    "merge_shards": (_merge, "verify"),
    "tasks.Context": (_context, "quiet"),
    "conservation_forecast.generate": (_forecast_data, "quiet"),
}


@pytest.mark.parametrize("value", ["no", "False", 1, 0, None, torch.tensor(True)])
@pytest.mark.parametrize("function", list(SWITCHES))
def test_a_switch_that_is_no_bool_is_refused_by_name(tmp_path, function, value):
    call, name = SWITCHES[function]
    message = rf"^{name} must be True or False, got {re.escape(repr(value))}$"
    with pytest.raises(TypeError, match=message):
        call(tmp_path, value)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("value", [False, np.True_])
def test_a_bool_switch_is_taken(tmp_path, value):
    _gp_fit_predict(tmp_path, value)
    assert Context(out=tmp_path, quiet=value).quiet is bool(value)
