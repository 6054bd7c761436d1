"""The model families ``physml train`` knows: how each is built for a dataset, and its loss.

A family is built from a JSON-able ``model_config`` (saved in the checkpoint, so ``physml
evaluate`` rebuilds the same network) and the training dataset (shapes, and for ``boon-fno`` the
boundary condition its recipe states).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from neuralop.models import FNO
from torch import nn

from pdes import Grid1D
from pdes.checks import positive_int
from pdes.problems import get as get_recipe

from .. import metrics
from ..constraints import BoundaryCondition, constrain
from ..data import PDEData, SingleStepDataset
from ..data.windows import ForecastDataset, RolloutDataset
from ..models import ConvLSTM, Earthformer, UNet

TASKS = ("operator", "rollout", "forecast")
DEFAULTS: dict[str, object] = {
    "modes": 16,
    "hidden": 32,
    "layers": 4,
    "k": 1,
    "t_in": 10,
    "t_out": 10,
    "base_units": 16,
}


def dataset(task: str, data: PDEData, options: dict) -> torch.utils.data.Dataset:
    """The training pairs of ``task`` over ``data``: ``operator`` ``u(t_0) → u(T)``, ``rollout``
    ``u(t) → u(t + k)``, ``forecast`` ``t_in`` frames → ``t_out`` frames."""
    if task == "operator":
        return SingleStepDataset(data)
    if task == "rollout":
        return RolloutDataset(data, k=options["k"])
    if task == "forecast":
        return ForecastDataset(data, t_in=options["t_in"], t_out=options["t_out"])
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def relative_l2_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return metrics.relative_l2(model(x), y)


def mse_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return (model(x) - y).square().mean()


def _fno(config: dict, data: PDEData, shapes) -> nn.Module:
    (x_shape, y_shape), space = shapes, len(data.space_shape)
    modes = min(config["options"]["modes"], *(n // 2 for n in data.space_shape))
    return FNO(
        n_modes=(modes,) * space,
        in_channels=x_shape[0],
        out_channels=y_shape[0],
        hidden_channels=config["options"]["hidden"],
        n_layers=config["options"]["layers"],
    )


def _boon(config: dict, data: PDEData, shapes) -> nn.Module:
    recipe = get_recipe(str(data.attrs.get("pde", "")).split(":")[0].strip())
    boundary = getattr(recipe, "boundary", None)
    if boundary is None or len(data.space_shape) != 1:
        raise ValueError(
            f"model boon-fno needs a 1-D dataset whose recipe states its boundary condition; "
            f"recipe {recipe.name!r} does not"
        )
    settings = recipe.settings(**_settings(data))
    x = data.coords["x"]
    grid = Grid1D(x.numel(), float(x[0]), float(x[-1]))
    condition = BoundaryCondition(boundary(settings), grid, time=float(data.t[-1]))
    return constrain(_fno(config, data, shapes), condition)


def _earthformer(config: dict, data: PDEData, shapes) -> nn.Module:
    x_shape, y_shape = shapes
    units = config["options"]["base_units"]
    return Earthformer(x_shape, y_shape, base_units=units, num_heads=2, depth=(1, 1))


def _unet(config: dict, data: PDEData, shapes) -> nn.Module:
    x_shape, y_shape = shapes
    return UNet(x_shape[0], y_shape[0], base=config["options"]["base_units"], output="linear")


def _convlstm(config: dict, data: PDEData, shapes) -> nn.Module:
    _, y_shape = shapes
    hidden = config["options"]["hidden"]
    return ConvLSTM(hidden=hidden, target_frames=y_shape[0], output="linear")


@dataclass(frozen=True)
class Family:
    """A trainable model: the tasks it serves, its builder and its loss."""

    tasks: tuple[str, ...]
    build: Callable[[dict, PDEData, tuple], nn.Module]
    loss: Callable[[nn.Module, object], torch.Tensor]


FAMILIES = {
    "fno": Family(("operator", "rollout"), _fno, relative_l2_loss),
    "boon-fno": Family(("operator",), _boon, relative_l2_loss),
    "earthformer": Family(("forecast",), _earthformer, mse_loss),
    "unet": Family(("forecast",), _unet, mse_loss),
    "convlstm": Family(("forecast",), _convlstm, mse_loss),
}


def model_config(name: str, task: str, options: dict) -> dict:
    """The JSON-able description that rebuilds a family's model (checked before anything runs)."""
    if name not in FAMILIES:
        raise ValueError(f"model must be one of {sorted(FAMILIES)}, got {name!r}")
    if task not in FAMILIES[name].tasks:
        raise ValueError(
            f"model {name!r} serves the task(s) {FAMILIES[name].tasks}, got task {task!r}"
        )
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    for key, value in merged.items():
        positive_int(key, value)
    return {"model": name, "task": task, "options": merged}


def build(config: dict, data: PDEData) -> tuple[nn.Module, torch.utils.data.Dataset]:
    """The model of ``config`` for ``data``, and the task's dataset over ``data``."""
    pairs = dataset(config["task"], data, config["options"])
    x, y = pairs[0]
    model = FAMILIES[config["model"]].build(config, data, (tuple(x.shape), tuple(y.shape)))
    return model, pairs


def _settings(data: PDEData) -> dict:
    raw = data.attrs.get("settings")
    return json.loads(raw) if isinstance(raw, str) else {}
