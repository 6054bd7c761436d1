"""The model families ``physml train`` knows: how each is built for a dataset, and its loss.

A family is built from a JSON-able ``model_config`` (saved in the checkpoint, so ``physml
evaluate`` rebuilds the same network) and the training dataset (shapes, and for ``boon-fno`` the
boundary condition its recipe states for every sample: ``recipe.boundary(settings)``).

The point-based models read a 1-D dataset ``u (sample, time, x)`` (e.g. GPME data from ``physml
generate diffusion|pme|stefan``) as functions of ``(t, x)``; their ``operator`` task maps what is
known of a solution to the whole solution ``u(t, x)``:

- ``anp``: ``context_points`` observed points ``(t, x, u)`` of a solution (``context_times``
  random times × random places, the ProbConserv protocol) → a Gaussian at ``target_points``
  random points (``views`` point sets per solution, drawn once: every epoch revisits them;
  evaluated on the whole grid);
- ``ensemble``: the PDE parameters and ``(t, x)`` → a Gaussian ``u(t, x)``, ``members`` MLPs
  of ``layers`` hidden layers of ``hidden`` units, each point of each solution a row.

Both report the Gaussian scores (``ll``, ``crps``) besides ``rel_l2`` and ``mse`` in ``physml
evaluate``.

Each family reads some of the model options (:attr:`~physml.training.families.Family.reads`) and
each task its own (:data:`TASK_OPTIONS`); an option given that neither reads is refused by
:func:`model_config`. The ConvLSTM has 2 layers unless another ``layers`` is given (then recorded as
``recurrent_layers``, so the runs that did not give it keep their model); :func:`same_model`
lets a run that recorded options its family does not read resume without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pdes import Grid1D
from pdes.checks import positive_int
from pdes.problems import get as get_recipe

from .. import metrics
from .. import models as surrogates  # its FNO builders load neuralop on first use
from .._checks import fits_in_memory, integer, json_value
from ..constraints import BoundaryCondition, constrain
from ..data import PDEData, PointRows, PointSets, SingleStepDataset
from ..data.windows import ForecastDataset, RolloutDataset
from ..models import (
    AttentiveNeuralProcess,
    ConvLSTM,
    DeepEnsemble,
    Earthformer,
    UNet,
    elbo_loss,
)
from ..models.coordinates import GRID_KINDS
from ..outputs import Gaussian
from .checkpoint import CheckpointError
from .probabilistic import MemberRows, Objective, ensemble_nll, objective_loss

TASKS = ("operator", "rollout", "forecast")
TASK_OPTIONS: dict[str, tuple[str, ...]] = {
    "operator": (),
    "rollout": ("k",),
    "forecast": ("t_in", "t_out"),
}
"""The options each task reads (the pairs it trains on)."""
CONVLSTM_LAYERS = 2
"""The ConvLSTM's layers when ``layers`` is not given (all runs before it was read)."""
DEFAULTS: dict[str, object] = {
    "modes": 16,
    "hidden": 32,
    "layers": 4,
    "k": 1,
    "t_in": 10,
    "t_out": 10,
    "base_units": 16,
    "context_points": 100,
    "context_times": 10,
    "target_points": 256,
    "views": 8,
    "members": 5,
}
"""Every model option and its value when a run does not give it."""
MAXIMA: dict[str, int] = {
    "modes": 1024,
    "hidden": 8192,
    "layers": 256,
    "k": 100_000,
    "t_in": 100_000,
    "t_out": 100_000,
    "base_units": 8192,
    "context_points": 10**7,
    "context_times": 100_000,
    "target_points": 10**7,
    "views": 100_000,
    "members": 1024,
}
"""The largest value ``model_config`` accepts for each option, far beyond any model these
families train, and small enough that a size check, not the allocator, refuses a typo."""
EVALUATION_SEED = 1
"""Seed of the context points the ANP is shown in ``physml evaluate`` (training uses 0)."""


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
    """The relative L2 error (:func:`physml.metrics.relative_l2`) of ``model(x)`` on ``y`` over a
    batch ``(x, y)``."""
    x, y = batch
    return metrics.relative_l2(model(x), y)


def mse_loss(model: nn.Module, batch) -> torch.Tensor:
    """The mean squared error of ``model(x)`` on ``y`` over a batch ``(x, y)``."""
    x, y = batch
    return (model(x) - y).square().mean()


def kept_modes(config: dict, data: PDEData) -> int:
    """The Fourier modes per axis the FNO of ``config`` keeps on ``data``: the ``modes`` option
    capped at half of each axis."""
    return min(config["options"]["modes"], *(n // 2 for n in data.space_shape))


def fno_options(config: dict, data: PDEData, shapes) -> dict:
    """The ``fast_fno`` keywords of the ``fno`` family's ``config`` for ``data`` (the modes its
    ``n_modes`` records, else :func:`kept_modes` on ``data``), its size checked against the
    memory."""
    (x_shape, y_shape), space = shapes, len(data.space_shape)
    modes = config.get("n_modes", kept_modes(config, data))
    hidden, layers = config["options"]["hidden"], config["options"]["layers"]
    spectral_weights = layers * hidden**2 * modes**space  # complex64, 8 bytes each
    fits_in_memory(
        "hidden", 8 * spectral_weights, f"an FNO of {layers} layers x {hidden}² channels"
    )
    return {
        "n_modes": (modes,) * space,
        "in_channels": x_shape[0],
        "out_channels": y_shape[0],
        "hidden_channels": hidden,
        "n_layers": layers,
    }


def _fno(config: dict, data: PDEData, shapes) -> nn.Module:
    return surrogates.fast_fno(
        **fno_options(config, data, shapes),
        periodic=bool(config.get("periodic", False)),  # an older checkpoint: the grid embedding
        position=_position(config, len(data.space_shape)),
    )


def _position(config: dict, dims: int) -> surrogates.GridCoordinates | None:
    """The FNO's recorded position channels (``position``: the grid's kind); none recorded (a
    periodic file, or a run from before they were): neuralop's grid embedding, ``k/n``."""
    if "position" not in config:
        return None
    try:
        return surrogates.GridCoordinates(dims, config["position"])
    except ValueError as error:
        raise ValueError(f"model_config: position {config['position']!r} ({error})") from None


def grid_kind(data: PDEData) -> str:
    """How ``data``'s points sit on its domain, for :class:`~physml.models.GridCoordinates`: its
    ``grid_kind`` attribute, else ``"node"`` (the pdes recipes' grids, both walls included)."""
    kind = str(data.attrs.get("grid_kind", "node"))
    if kind not in GRID_KINDS:
        raise ValueError(f"--data: attribute grid_kind must be one of {GRID_KINDS}, got {kind!r}")
    return kind


class WallsUnknownError(ValueError):
    """boon-fno cannot impose the walls of a file; ``reason`` says why (the message adds what
    ``physml train`` can do instead)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"--model boon-fno: {reason}; use --model fno")
        self.reason = reason


def _boon(config: dict, data: PDEData, shapes) -> nn.Module:
    if periodic_domain(data):
        raise WallsUnknownError(
            "a periodic file has no walls to enforce (its boundary is "
            f"{data.attrs.get('boundary')!r})"
        )
    pde = str(data.attrs.get("pde", ""))
    try:
        recipe = get_recipe(pde.split(":")[0].strip())
    except ValueError:
        raise WallsUnknownError(
            f"the file's pde {pde!r} is no physml recipe, so no boundary condition is known to "
            "impose (boon-fno takes the files of physml generate)"
        ) from None
    boundary = getattr(recipe, "boundary", None)
    if not callable(boundary):
        stated = data.attrs.get("boundary")
        how = "only as text" if isinstance(boundary, str) else "nowhere"
        raise WallsUnknownError(
            f"recipe {recipe.name!r} gives no boundary condition to impose (it states its walls "
            f"{how}; its file says {stated!r})"
        )
    settings = recipe.settings(**_settings(data))
    try:
        condition = boundary(settings)
    except ValueError as error:
        raise WallsUnknownError(
            f"{error}. Wall values that differ from sample to sample are not supported by "
            "boon-fno on the command line (the boon-stokes task, physml.tasks.boon, shows how to "
            "impose them)"
        ) from None
    x = data.coords["x"]
    grid = Grid1D(x.numel(), float(x[0]), float(x[-1]))
    return constrain(
        _fno(config, data, shapes), BoundaryCondition(condition, grid, time=float(data.t[-1]))
    )


def periodic_domain(data: PDEData) -> bool:
    """Whether the file says every spatial axis is periodic: its ``periodic`` flag (true or false,
    1 or 0, as the GPME recipes write it) where it has one, else its ``boundary`` attribute is
    ``"periodic"`` or, per axis, ``"x: periodic; y: periodic"``."""
    flag = data.attrs.get("periodic")
    if flag is not None:
        if not isinstance(flag, (bool, np.bool_)) and integer(flag) not in (0, 1):
            raise ValueError(
                f"--data: attribute periodic must be true or false (1 or 0), got {flag!r}"
            )
        return bool(flag)
    text = str(data.attrs.get("boundary", "")).strip().lower()
    parts = [part.split(":")[-1].strip() for part in text.split(";") if part.strip()]
    return bool(parts) and all(part == "periodic" for part in parts)


WRAPPING = ("earthformer", "unet", "convlstm")
"""The families whose convolutions wrap around on a periodic domain (``periodic=True``)."""

DOMAIN_AWARE = (*WRAPPING, "fno")
"""The families built for the domain, the wrapping ones and the FNO, which reads position as
periodic coordinates there (:class:`~physml.models.coordinates.PeriodicCoordinates`)."""

SPECTRAL = ("fno", "boon-fno")
"""The families whose weights hold as many modes as the training grid allowed."""

EXACT_SHIFT = "ifftshift"
"""A spectral family's ``spectral`` on a grid with an odd axis before the last, where its Fourier
layers shift the spectrum back exactly (:class:`~physml.models.LeanSpectralConv`). Runs there
before that (a second ``fftshift``, each frequency of such an axis landing one bin off) lack it;
on 1-D and even grids the two agree, and nothing is recorded."""


def same_pairs(model: str, items, trained: list) -> bool:
    """Whether ``items`` (a dataset of (input, target) pairs) holds pairs of the ``trained``
    shapes: the same axes and channels, and for the families that are not resolution-free (all
    but :data:`SPECTRAL`) the same grid."""
    now = [list(part.shape) for part in items[0]]
    trained = [list(shape) for shape in trained]
    if model not in SPECTRAL:
        return now == trained
    return len(now) == len(trained) and all(
        len(a) == len(b) and a[:1] == b[:1] for a, b in zip(now, trained, strict=False)
    )


def check_same_pairs(
    model: str, items, trained: list, where: str = "--data", trained_by: str = "the model"
) -> None:
    """A ValueError unless ``items`` holds pairs of the ``trained`` shapes (:func:`same_pairs`):
    ``where`` names the new data (``"--data"``), ``trained_by`` the trained model (``"the
    model"``); the message names both shapes, and for an FNO that the grid may change."""
    now = [list(part.shape) for part in items[0]]
    trained = [list(shape) for shape in trained]
    if len(now[0]) != len(trained[0]):
        raise ValueError(
            f"{where} holds {len(now[0]) - 1}-D fields, but {trained_by} was trained on "
            f"{len(trained[0]) - 1}-D ones (pairs of shapes {now}, trained on {trained})"
        )
    if not same_pairs(model, items, trained):
        grids = " (an FNO takes any grid, but as many axes and channels)"
        raise ValueError(
            f"{where} gives (input, target) pairs of shapes {now}, but {trained_by} was trained "
            f"on {trained}{grids if model in SPECTRAL else ''}"
        )


def odd_before_last(space: Sequence[int]) -> bool:
    """Whether a grid ``space`` (its sizes) has an odd axis before the last."""
    return any(n % 2 for n in space[:-1])


def with_domain(config: dict, data: PDEData) -> dict:
    """``config`` with what the training file says of its domain, for the families that use it:
    ``periodic``, ``n_modes`` (:func:`kept_modes` on the training grid) and, for an FNO on a
    domain that is not periodic, ``position`` (:func:`grid_kind`: its position channels are the
    points' places in the domain, the same at a point on any grid), saved in the
    checkpoint, so a resume or an evaluation rebuilds the same model whatever file it is
    handed."""
    config = dict(config)
    if config["model"] in DOMAIN_AWARE:
        config["periodic"] = periodic_domain(data)
    if config["model"] in SPECTRAL:
        config["n_modes"] = kept_modes(config, data)
        if not periodic_domain(data):
            config["position"] = grid_kind(data)
        if odd_before_last(data.space_shape):
            config["spectral"] = EXACT_SHIFT
    return config


def check_spectral_shift(config: object, trained_shapes: list, where: str) -> None:
    """Refuse a checkpoint's FNO trained on a grid with an odd axis before the last without
    :data:`EXACT_SHIFT` (``trained_shapes``: its fingerprint's, ``(channels, *space)`` first):
    physml then put each frequency of that axis one bin off, so its weights now compute another
    function."""
    if not isinstance(config, dict) or config.get("model") not in SPECTRAL:
        return
    space = list(trained_shapes[0][1:]) if trained_shapes else []
    if "spectral" in config or not odd_before_last(space):
        return
    raise CheckpointError(
        f"{where}: its {config['model']} was trained on {'×'.join(map(str, space))} grids with the "
        "earlier spectral convolution (on an odd-sized axis before the last it put each "
        "frequency one bin off, corrected since), so these weights would now compute another "
        "function: train it again into a new --out"
    )


def _periodic(config: dict, data: PDEData) -> bool:
    """The recorded ``periodic``; a checkpoint written before it was recorded: the file's."""
    return bool(config.get("periodic", periodic_domain(data)))


def _check_frames(config: dict, data: PDEData, shapes, multiple: int) -> None:
    """The frames ``(..., H, W)`` of ``shapes`` must be multiples of ``multiple`` on each side
    (the model's ``frame_multiple``), or a ``--data`` error naming a size that is."""
    height, width = shapes[0][-2:]
    if height % multiple == 0 and width % multiple == 0:
        return
    nearest = max(multiple, round(max(height, width) / multiple) * multiple)
    settings = _settings(data)
    hint = f" (e.g. --nx {nearest})" if "nx" in settings else ""
    raise ValueError(
        f"--data: model {config['model']} needs frames whose sides are multiples of {multiple}; "
        f"the file's are {height}×{width}: generate it again at such a size{hint}"
    )


EARTHFORMER = {"num_heads": 2, "depth": (1, 1), "downsample": 2}
UNET_DEPTH = 2
CONVLSTM_PATCH = 4
"""The forecast families' fixed architecture (their frame sides must be multiples of what it
cuts them by, each model's ``frame_multiple``: 4 each)."""


def _earthformer(config: dict, data: PDEData, shapes) -> nn.Module:
    x_shape, y_shape = shapes
    depth, downsample = EARTHFORMER["depth"], EARTHFORMER["downsample"]
    _check_frames(config, data, shapes, Earthformer.frame_multiple(depth, downsample))
    units = config["options"]["base_units"]
    return Earthformer(
        x_shape, y_shape, base_units=units, **EARTHFORMER, periodic=_periodic(config, data)
    )


def _unet(config: dict, data: PDEData, shapes) -> nn.Module:
    x_shape, y_shape = shapes
    _check_frames(config, data, shapes, UNet.frame_multiple(UNET_DEPTH))
    base = config["options"]["base_units"]
    return UNet(
        x_shape[0],
        y_shape[0],
        base=base,
        depth=UNET_DEPTH,
        output="linear",
        periodic=_periodic(config, data),
    )


def _convlstm(config: dict, data: PDEData, shapes) -> nn.Module:
    _, y_shape = shapes
    _check_frames(config, data, shapes, ConvLSTM.frame_multiple(CONVLSTM_PATCH))
    return ConvLSTM(
        hidden=config["options"]["hidden"],
        layers=config.get("recurrent_layers", CONVLSTM_LAYERS),
        target_frames=y_shape[0],
        patch=CONVLSTM_PATCH,
        output="linear",
        periodic=_periodic(config, data),
    )


# ------------------------------------------------------------------------ point-based models


def _point_sets(data: PDEData, options: dict, evaluation: bool = False) -> PointSets:
    return PointSets(
        data,
        n_context=options["context_points"],
        context_times=options["context_times"],
        n_target=None if evaluation else options["target_points"],
        views=1 if evaluation else options["views"],
        seed=EVALUATION_SEED if evaluation else 0,
    )


def _member_rows(data: PDEData, options: dict) -> MemberRows:
    rows = PointRows(data)
    return MemberRows(*rows.all_rows(), options["members"], attributes=rows.attributes)


def _weights_seed() -> int:
    """A seed for a model that seeds its own weights, drawn from the global RNG (``--seed``)."""
    return int(torch.randint(2**31 - 1, ()))


def _anp(config: dict, data: PDEData, shapes) -> nn.Module:
    options, t, x = config["options"], data.t, data.coords["x"]
    model = AttentiveNeuralProcess(
        hidden=options["hidden"],
        latent=options["hidden"],
        attention_layers=options["layers"],
        input_range=((float(t[0]), float(t[-1])), (float(x[0]), float(x[-1]))),
        seed=_weights_seed(),
    )
    return Objective(model, elbo_loss)


def _ensemble(config: dict, data: PDEData, shapes) -> nn.Module:
    options, rows = config["options"], PointRows(data)
    model = DeepEnsemble(
        rows.features, members=options["members"], width=options["hidden"], depth=options["layers"]
    )
    model.reset(_weights_seed())
    model.standardise(*rows.all_rows())
    return Objective(model, ensemble_nll)


def _predict_anp(model: nn.Module, data: PDEData, options: dict, device) -> Gaussian:
    """The ANP's Gaussian on every grid point of every solution, from its evaluation context."""
    sets = _point_sets(data, options, evaluation=True)
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, len(sets), 16):
            items = [sets[i] for i in range(start, min(start + 16, len(sets)))]
            context_x, context_y, target_x = (
                torch.stack([item[k] for item in items]).to(device) for k in range(3)
            )
            out = model.model(context_x, context_y, target_x)
            means.append(out.mean.cpu())
            variances.append(out.variance().cpu())
    return Gaussian(torch.cat(means), torch.cat(variances), diagonal=True)


def _predict_ensemble(model: nn.Module, data: PDEData, options: dict, device) -> Gaussian:
    """The ensemble's mixture Gaussian on every grid point of every solution."""
    inputs, _ = PointRows(data).all_rows()
    inputs = inputs.reshape(len(data), -1, inputs.shape[-1])
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, len(data), 16):
            out = model.model(inputs[start : start + 16].to(device))
            means.append(out.mean.cpu())
            variances.append(out.variance().cpu())
    return Gaussian(torch.cat(means), torch.cat(variances), diagonal=True)


@dataclass(frozen=True)
class Family:
    """A trainable model: the tasks it serves, its builder and its loss.

    ``pairs`` builds its training items when they are not the task's pairs; ``predict`` gives
    a point-based model's Gaussian on the whole grid of every solution ``(sample, T·X)``.
    """

    tasks: tuple[str, ...]
    build: Callable[[dict, PDEData, tuple], nn.Module]
    loss: Callable[[nn.Module, object], torch.Tensor]
    reads: tuple[str, ...]
    """The model options (keys of :data:`DEFAULTS`) its builder and items read."""
    pairs: Callable[[PDEData, dict], torch.utils.data.Dataset] | None = None
    predict: Callable[[nn.Module, PDEData, dict, torch.device], Gaussian] | None = None
    dims: tuple[int, ...] = (1, 2)  # the space dimensions of the data it takes


FNO_OPTIONS = ("modes", "hidden", "layers")
POINT_OPTIONS = ("context_points", "context_times", "target_points", "views")
FAMILIES = {
    "fno": Family(("operator", "rollout"), _fno, relative_l2_loss, FNO_OPTIONS),
    "boon-fno": Family(("operator",), _boon, relative_l2_loss, FNO_OPTIONS, dims=(1,)),
    "earthformer": Family(("forecast",), _earthformer, mse_loss, ("base_units",), dims=(2,)),
    "unet": Family(("forecast",), _unet, mse_loss, ("base_units",), dims=(2,)),
    "convlstm": Family(("forecast",), _convlstm, mse_loss, ("hidden", "layers"), dims=(2,)),
    "anp": Family(
        ("operator",),
        _anp,
        objective_loss,
        ("hidden", "layers", *POINT_OPTIONS),
        _point_sets,
        _predict_anp,
        dims=(1,),
    ),
    "ensemble": Family(
        ("operator",),
        _ensemble,
        objective_loss,
        ("hidden", "layers", "members"),
        _member_rows,
        _predict_ensemble,
        dims=(1,),
    ),
}


def readers(option: str) -> str:
    """Who reads ``option``: the families or the task, for ``physml train --help``."""
    tasks = [task for task, read in TASK_OPTIONS.items() if option in read]
    if tasks:
        return f"task {' and '.join(tasks)}"
    names = [name for name, family in FAMILIES.items() if option in family.reads]
    if option == "layers":
        names = [
            f"{name} (default {CONVLSTM_LAYERS})" if name == "convlstm" else name for name in names
        ]
    return ", ".join(names)


def model_config(name: str, task: str, options: dict) -> dict:
    """The JSON-able description that rebuilds a family's model (checked before anything runs)."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"model must be one of {sorted(FAMILIES)}, got {name!r}")
    if task not in FAMILIES[name].tasks:
        raise ValueError(
            f"model {name!r} serves the task(s) {FAMILIES[name].tasks}, got task {task!r}"
        )
    given = {k: v for k, v in options.items() if v is not None}
    reads = (*FAMILIES[name].reads, *TASK_OPTIONS[task])
    unread = [key for key in given if key not in reads]
    if unread:
        flags = lambda keys: ", ".join(f"--{key.replace('_', '-')}" for key in keys)  # noqa: E731
        raise ValueError(
            f"{flags(unread)}: model {name} on task {task} does not read "
            f"{'it' if len(unread) == 1 else 'them'}; it reads {flags(reads) or 'no options'}"
        )
    merged = {key: positive_int(key, value) for key, value in {**DEFAULTS, **given}.items()}
    for key, value in merged.items():
        if key in MAXIMA and value > MAXIMA[key]:
            raise ValueError(f"{key} must be at most {MAXIMA[key]}, got {value}")
    config = {"model": name, "task": task, "options": merged}
    if name == "convlstm" and given.get("layers", CONVLSTM_LAYERS) != CONVLSTM_LAYERS:
        config["recurrent_layers"] = merged["layers"]  # absent: 2, as in the earlier runs
    return config


def same_model(saved: object, current: object) -> bool:
    """Whether two model configs build the same network: equal but for the options their
    family and task do not read (runs before those were refused recorded them)."""
    return _as_built(saved) == _as_built(current)


def _as_built(config: object) -> object:
    """``config`` with only the options its family's builder and its task read."""
    if not isinstance(config, dict) or not isinstance(config.get("options"), dict):
        return config
    model, task = config.get("model"), config.get("task")
    named = isinstance(model, str) and isinstance(task, str)
    if not named or model not in FAMILIES or task not in TASK_OPTIONS:
        return config
    family = FAMILIES[model]
    reads = {*family.reads, *TASK_OPTIONS[task]} - (
        {"layers"} if config["model"] == "convlstm" else set()  # built from recurrent_layers
    )
    return {**config, "options": {k: v for k, v in config["options"].items() if k in reads}}


def check_dimensions(config: dict, data: PDEData) -> None:
    """``data`` must hold fields of as many space axes as the family of ``config`` takes, and of
    two points at least on each for a spectral one (:func:`kept_modes`: half of each axis) (check
    the whole file, before ``--val-fraction`` splits it: the message shows its shape)."""
    family = FAMILIES[config["model"]]
    dims = len(data.space_shape)
    shape = f"u of shape {tuple(data.u.shape)}: sample, time, *space"
    if dims not in family.dims:
        wanted = " or ".join(f"{d}-D" for d in family.dims)
        raise ValueError(
            f"--data: model {config['model']} needs {wanted} data, the file holds {dims}-D "
            f"fields ({shape})"
        )
    if config["model"] in SPECTRAL and min(data.space_shape) < 2:
        raise ValueError(
            f"--data: model {config['model']} keeps Fourier modes up to half of each space axis, "
            f"so it needs 2 points at least on each, the file holds {min(data.space_shape)} on "
            f"one ({shape})"
        )


def training_items(config: dict, data: PDEData) -> torch.utils.data.Dataset:
    """What the family of ``config`` trains on over ``data``: its own items or the task's
    pairs."""
    check_dimensions(config, data)
    family = FAMILIES[config["model"]]
    if family.pairs is not None:
        return family.pairs(data, config["options"])
    return dataset(config["task"], data, config["options"])


def build(
    config: dict, data: PDEData, items: torch.utils.data.Dataset | None = None
) -> tuple[nn.Module, torch.utils.data.Dataset]:
    """The model of ``config`` for ``data``, and its training items over ``data`` (``items``
    when given: :func:`training_items` made already)."""
    items = training_items(config, data) if items is None else items
    shapes = tuple(tuple(part.shape) for part in items[0])
    model = FAMILIES[config["model"]].build(config, data, shapes[:2])
    return model, items


def _settings(data: PDEData) -> dict:
    """The recipe settings a generated file records (``{}`` when it records none)."""
    raw = data.attrs.get("settings")
    if not isinstance(raw, str):
        return {}
    return json_value(
        "--data: the file's 'settings' attribute",
        raw,
        "a JSON object (as physml generate writes)",
        lambda settings: isinstance(settings, dict),
    )
