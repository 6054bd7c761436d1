"""Deep ensembles (Lakshminarayanan et al., 2017): ``M`` small MLPs, each predicting a mean and a
log-variance and trained with the Gaussian negative log-likelihood from its own random start.

The members are stored stacked (weights ``(M, in, out)``) and trained together with batched
matrix products (:meth:`DeepEnsemble.nll`; training goes through
:func:`physml.training.fit_ensemble`); Adam acts elementwise, so this is the same as training each
member alone with its own initialisation and its own order of the data. Inputs are rows of the
PDE parameter(s) followed by ``(t, x)`` (see :func:`physml.models.common.with_parameters`);
inputs and targets are standardised with statistics of the training data, kept as buffers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from pdes.checks import positive_int

from .._checks import as_tensor, choice
from ..io import load_torch_file, save_torch_file
from ..outputs import Ensemble, Gaussian
from ..seeds import derived_seed

KINDS = ("gaussian", "ensemble")
"""What :meth:`DeepEnsemble.forward` (the ``output`` setting) and :meth:`DeepEnsemble.predict`
can return: the mixture :class:`Gaussian` or the members' :class:`Ensemble`."""
RESAVE = "restore an intact copy, or save the ensemble again (DeepEnsemble.save)"
"""What the refusal of a damaged file of :meth:`DeepEnsemble.save` advises."""


class _StackedLinear(nn.Module):
    """``M`` independent affine maps applied to ``(M, N, fan_in)``."""

    def __init__(self, members: int, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(members, 1, fan_out))

    def reset(self, generators: list[torch.Generator]) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            for m, generator in enumerate(generators):
                weight = torch.rand(self.weight.shape[1:], generator=generator)
                bias = torch.rand(self.bias.shape[1:], generator=generator)
                self.weight[m].copy_((2 * weight - 1) * bound)
                self.bias[m].copy_((2 * bias - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class DeepEnsemble(nn.Module):
    """``members`` MLPs ``in_features → width (× depth hidden layers) → (mean, log-variance)``.

    Calling the module (differentiable) returns what ``output`` names, so that
    :func:`physml.constrain` gives the update that fits it: ``"gaussian"`` the mixture's moments
    as a diagonal :class:`Gaussian` (ProbConserv on the mixture), ``"ensemble"`` the members'
    means as an :class:`Ensemble` ``(M, ...)`` (each member moved with the ensemble covariance).

    Args:
        in_features: columns of the inputs (PDE parameters + 2 for ``(t, x)``).
        members: ensemble size ``M >= 2``.
        width: hidden units per layer.
        depth: number of hidden layers.
        min_variance: floor added to each member's variance, in standardised units.
        output: what ``forward`` returns, ``"gaussian"`` or ``"ensemble"`` (kept as the
            attribute ``output``, which may be set later). The weights and their training do not
            depend on it: it is not part of ``config``, so a :func:`~physml.training.fit_ensemble`
            run resumes whichever output the ensemble returns; :meth:`save` records it.
    """

    def __init__(
        self,
        in_features: int,
        members: int = 5,
        width: int = 64,
        depth: int = 3,
        min_variance: float = 1e-6,
        output: str = "gaussian",
    ) -> None:
        super().__init__()
        self.output = output
        in_features = positive_int("in_features", in_features)
        members = positive_int("members", members, 2)
        width = positive_int("width", width)
        depth = positive_int("depth", depth)
        if not isinstance(min_variance, (int, float)) or not 0 < min_variance < float("inf"):
            raise ValueError(f"min_variance must be a finite number > 0, got {min_variance!r}")
        self.config = {
            "in_features": in_features,
            "members": members,
            "width": width,
            "depth": depth,
            "min_variance": float(min_variance),
        }
        sizes = [in_features] + [width] * depth + [2]
        self.layers = nn.ModuleList(
            _StackedLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.register_buffer("input_shift", torch.zeros(in_features))
        self.register_buffer("input_scale", torch.ones(in_features))
        self.register_buffer("target_shift", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.reset(seed=0)
        self.loss_curve_: list[float] = []

    @property
    def members(self) -> int:
        return self.config["members"]

    @property
    def output(self) -> str:
        """The kind of output ``forward`` returns, ``"gaussian"`` (the mixture) or
        ``"ensemble"`` (the members); setting another value is refused by name (a ``TypeError``
        for what is no string, a ``ValueError`` for another string)."""
        return self._output

    @output.setter
    def output(self, value: str) -> None:
        self._output = choice("output", value, KINDS)

    def extra_repr(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"{settings}, output={self.output!r}"

    def reset(self, seed: int) -> None:
        """Fresh weights: member ``m`` draws from its own generator seeded by ``(seed, m)``."""
        seed = positive_int("seed", seed, minimum=0)
        generators = [
            torch.Generator().manual_seed(derived_seed(seed, m, 0)) for m in range(self.members)
        ]
        for layer in self.layers:
            layer.reset(generators)

    # ------------------------------------------------------------------ forward

    def _heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Member means and variances ``(M, N)`` for standardised inputs ``(M, N, d)``."""
        for layer in self.layers[:-1]:
            h = torch.nn.functional.silu(layer(h))
        out = self.layers[-1](h)
        return out[..., 0], out[..., 1].exp() + self.config["min_variance"]

    def _as_buffers(self) -> dict:
        """The dtype and device of the model's buffers (``.double()``, ``.to``), which inputs and
        targets are read in."""
        return {"dtype": self.input_shift.dtype, "device": self.input_shift.device}

    def _inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        d = self.config["in_features"]
        tensor = as_tensor("inputs", inputs, f"(..., {d})", None, last=d, **self._as_buffers())
        if tensor.ndim < 2:
            raise ValueError(
                f"inputs must have shape (..., {d}) with a point axis, got {tuple(tensor.shape)}"
            )
        if tensor.numel() == 0:
            shape = tuple(tensor.shape)
            raise ValueError(f"inputs must hold at least one point, got shape {shape}")
        return tensor

    def member_outputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's mean and variance in the data's units: ``inputs (..., d)`` → two
        ``(M, ...)`` tensors."""
        if not bool(self.fitted):
            raise RuntimeError(
                "this DeepEnsemble is not fitted yet: train it (physml.training.fit_ensemble) "
                "or load() one"
            )
        inputs = self._inputs(inputs)
        lead = inputs.shape[:-1]
        flat = (inputs.reshape(-1, inputs.shape[-1]) - self.input_shift) / self.input_scale
        mean, variance = self._heads(flat.expand(self.members, -1, -1))
        mean = self.target_shift + self.target_scale * mean
        variance = variance * self.target_scale**2
        return mean.reshape(-1, *lead), variance.reshape(-1, *lead)

    def forward(self, inputs: torch.Tensor) -> Gaussian | Ensemble:
        """At ``inputs (..., d)``, with ``output="gaussian"`` the mixture's moments: mean
        ``(...)``, variances ``(...)``; with ``output="ensemble"`` the members' means ``(M,
        ...)``, member first (put the grid's axes last in ``inputs``, e.g. ``(B, T, X, d)``, for
        a constraint on the grid)."""
        return self._kind(inputs, self.output)

    def _kind(self, inputs: torch.Tensor, kind: str) -> Gaussian | Ensemble:
        means, variances = self.member_outputs(inputs)
        if kind == "ensemble":
            return Ensemble(means)
        mean = means.mean(0)
        variance = variances.mean(0) + (means - mean).pow(2).mean(0)
        return Gaussian(mean, variance, diagonal=True)

    def predict(self, inputs: torch.Tensor, kind: str | None = None) -> Gaussian | Ensemble:
        """Without gradients: the mixture :class:`Gaussian` (mean of the means; variance = mean
        of the variances + variance of the means) with ``kind="gaussian"``, the members' means
        as an :class:`Ensemble` ``(M, ...)`` with ``kind="ensemble"``; ``None``: what ``output``
        names."""
        if kind is None:
            kind = self.output
        choice("kind", kind, KINDS)
        with torch.no_grad():
            return self._kind(inputs, kind)

    def sample(self, inputs: torch.Tensor, n: int, seed: int = 0) -> Ensemble:
        """``n`` draws ``(n, ...)`` from the mixture: a member at random, then its Gaussian."""
        n = positive_int("n", n)
        seed = positive_int("seed", seed, 0)
        with torch.no_grad():
            means, variances = self.member_outputs(inputs)
            generator = torch.Generator().manual_seed(derived_seed(seed))
            pick = torch.randint(self.members, (n,), generator=generator).to(means.device)
            noise = torch.randn((n, *means.shape[1:]), generator=generator).to(means.device)
            return Ensemble(means[pick] + variances[pick].sqrt() * noise)

    # ------------------------------------------------------------------ training

    def standardise(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Fix the input and target statistics from training rows ``inputs (N, d)``,
        ``targets (N,)`` (a constant column or target keeps scale 1); marks the model fitted."""
        d = self.config["in_features"]
        x = as_tensor("inputs", inputs, f"(N, {d})", 2, last=d, **self._as_buffers())
        y = as_tensor("targets", targets, "(N,)", 1, **self._as_buffers())
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"targets must have shape ({x.shape[0]},) to match inputs, got {tuple(y.shape)}"
            )
        if x.shape[0] < 2:
            raise ValueError(f"inputs must hold at least 2 rows, got {x.shape[0]}")
        spread = x.std(0)
        target_spread = y.std()
        self.input_shift.copy_(x.mean(0))
        self.input_scale.copy_(torch.where(spread > 0, spread, torch.ones_like(spread)))
        self.target_shift.copy_(y.mean())
        self.target_scale.copy_(target_spread if target_spread > 0 else torch.ones(()))
        self.fitted.fill_(True)

    def nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss: the sum over members of each member's mean Gaussian NLL (standardised
        units, constant dropped) on its own rows ``inputs (M, N, d)``, ``targets (M, N)``.

        Each member's term depends on its own weights only, so with an elementwise optimiser
        (Adam) training the stack is training every member alone.
        """
        x = (inputs.to(self.input_shift) - self.input_shift) / self.input_scale
        y = (targets.to(self.target_shift) - self.target_shift) / self.target_scale
        mean, variance = self._heads(x)
        per_point = 0.5 * (variance.log() + (y - mean).pow(2) / variance)
        return per_point.mean(1).sum()

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write the configuration (``output`` too where it is not the default), the dtype
        (``"float64"``) and the weights to ``path`` atomically."""
        config = dict(self.config)
        if self.output != KINDS[0]:
            config["output"] = self.output
        dtype = str(self.input_shift.dtype).removeprefix("torch.")
        save_torch_file(path, {"config": config, "state": self.state_dict(), "dtype": dtype})

    @classmethod
    def load(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> DeepEnsemble:
        """A :class:`DeepEnsemble` from a file written by :meth:`save`, in the dtype it was
        saved in (float32 for a file that records none); read with ``weights_only=True``."""
        content = _read(Path(path), map_location)
        dtype = _saved_dtype(Path(path), content)
        model = cls(**content["config"]).to(device=map_location, dtype=dtype)
        model.load_state_dict(content["state"])
        model.eval()
        return model


def _read(path: Path, map_location: str | torch.device) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no DeepEnsemble checkpoint at {path}")
    content = load_torch_file(path, "a DeepEnsemble checkpoint", "path", RESAVE, map_location)
    if not isinstance(content, dict) or not {"config", "state"} <= set(content):
        raise ValueError(f"{path} is not a DeepEnsemble checkpoint (no 'config' and 'state')")
    return content


def _saved_dtype(path: Path, content: dict) -> torch.dtype:
    """The floating-point dtype the checkpoint ``content`` of ``path`` records (``"float64"``),
    float32 where it records none (a file written before the dtype was saved)."""
    name = content.get("dtype", "float32")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"{path} is not a DeepEnsemble checkpoint: its dtype must name a floating-point "
            f"torch dtype (e.g. 'float64'), got {name!r}"
        )
    return dtype
