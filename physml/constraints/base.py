"""The constraint protocol: an ``nn.Module`` acting at one or more seams of a model.

Seams: ``"operator"`` (each kernel layer corrected once, at wrap time),
``"sampler"`` (a mean shift at every reverse step of a diffusion sampler) and ``"output"`` (after
every forward, on a tensor, :class:`~physml.outputs.Gaussian` or :class:`~physml.outputs.Ensemble`).
:func:`physml.constrain` is the only caller: it picks the seams a model offers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConstraintError
from ..outputs import Ensemble, Gaussian

#: The seams a constraint may act at; its ``seams`` names some of these.
SEAMS = ("operator", "sampler", "output")
Output = torch.Tensor | Gaussian | Ensemble


_BLOCK = 4096  # fingerprint weights per block: a tensor's values are summed block by block
_WEIGHTS: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}  # per device and dtype


def _fingerprint_weights(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``_BLOCK`` fixed weights in ``[0.5, 1.5)``, distinct per index: ``0.5 + frac(i·φ)``."""
    weights = _WEIGHTS.get((device, dtype))
    if weights is None:
        with torch.inference_mode(False), torch.no_grad():
            index = torch.arange(1, _BLOCK + 1, dtype=torch.float64, device=device)
            weights = (torch.frac(index * 0.6180339887498949) + 0.5).to(dtype)
        _WEIGHTS[(device, dtype)] = weights
    return weights


def fingerprint(tensors: Sequence[torch.Tensor]) -> tuple[float, ...]:
    """Per tensor and block of ``_BLOCK`` values, the sum of the values times fixed weights that
    differ per index, in the tensor's own real dtype (complex as real pairs; half precision and
    integers in float32 and float64).

    Writes through ``tensor.data`` (an EMA or target-network update) leave the version counter
    alone; they change these sums (a permutation of the values as well). A write too small to
    move a block's sum past its round-off (one value moved by a few tens of its ulps at most)
    may go unnoticed: it moves the output by about the round-off of the model's dtype.
    """
    if not tensors:
        return ()
    with torch.no_grad():
        sums = []
        for tensor in tensors:
            values = torch.view_as_real(tensor.resolve_conj()) if tensor.is_complex() else tensor
            values = values.detach().reshape(-1)
            if not values.is_floating_point():
                values = values.to(torch.float64)
            elif values.element_size() < 4:
                values = values.to(torch.float32)
            weights = _fingerprint_weights(values.device, values.dtype)
            whole = values.numel() - values.numel() % _BLOCK
            if whole:
                sums.append(torch.mv(values[:whole].view(-1, _BLOCK), weights).double())
            if whole < values.numel():
                tail = torch.dot(values[whole:], weights[: values.numel() - whole])
                sums.append(tail.double().reshape(1))
        if not sums:
            return ()
        device = sums[0].device
        return tuple(torch.cat([s.to(device) for s in sums]).tolist())


def check_finite(name: str, output: object) -> None:
    """Raise :class:`ConstraintError` if ``output`` (any kind) holds NaN or inf, and
    ``TypeError`` if its values are not real floating point (an update of integers would be
    rounded away on the way back to their dtype)."""
    tensors = {
        Gaussian: lambda g: (g.mean,),
        Ensemble: lambda e: (e.samples,),
    }.get(type(output), lambda t: (t,) if isinstance(t, torch.Tensor) else ())(output)
    for tensor in tensors:
        if not tensor.is_floating_point():
            raise TypeError(
                f"{name} must hold real floating-point values to be constrained, got dtype "
                f"{tensor.dtype}"
            )
        # one cheap pass: a sum is finite unless an entry is NaN/inf (or finite entries overflow)
        if tensor.is_floating_point() and not math.isfinite(tensor.sum().item()):
            if not bool(torch.isfinite(tensor).all()):
                raise ConstraintError(f"{name} contains NaN or inf values")


class Constraint(nn.Module):
    """Base class of every constraint.

    ``seams`` lists where the constraint can act. Output-seam constraints implement
    :meth:`apply_tensor`, :meth:`apply_gaussian` and :meth:`apply_ensemble` for the output kinds
    they support, each receiving the per-call state returned by :meth:`prepare` (e.g. a target
    computed from the model's inputs). Sampler-seam constraints implement :meth:`guide`.
    ``torch.func``'s ``grad``, ``jacrev`` and ``jacfwd`` go through a constraint, ``vmap`` does
    not: the NaN check of every output (:func:`check_finite`) reads a value (``.item()``), which
    ``vmap`` refuses; give the batch as a leading axis instead.
    """

    seams: tuple[str, ...] = ("output",)
    needs: tuple[str, ...] = ()  # seams without which the constraint cannot act at all

    def prepare(self, *inputs: object, time: object = None, **kwargs: object) -> object:
        """Per-call state from the model's inputs (and the call's ``time``); ``None`` by default."""
        return None

    def forward(self, output: Output, *inputs: object, time: object = None, **kwargs: object):
        """The output seam: the constrained ``output``, of the same kind, dtype and device.

        ``inputs``, ``time`` (the time the output stands at, for a target that varies in time)
        and any other keywords are the model's call, handed to :meth:`prepare`.
        """
        check_finite("output", output)
        state = self.prepare(*inputs, time=time, **kwargs)
        if isinstance(output, Gaussian):
            return self.apply_gaussian(output, state)
        if isinstance(output, Ensemble):
            return self.apply_ensemble(output, state)
        if isinstance(output, torch.Tensor):
            return self.apply_tensor(output, state)
        raise ConstraintError(
            f"{type(self).__name__} applies to a tensor, Gaussian or Ensemble, got {type(output)}"
        )

    def _unsupported(self, kind: str):
        raise ConstraintError(f"{type(self).__name__} cannot be applied to a {kind} output")

    def apply_tensor(self, output: torch.Tensor, state: object = None) -> torch.Tensor:
        """A constrained tensor ``output``; refused unless a subclass has it."""
        return self._unsupported("tensor")

    def apply_gaussian(self, output: Gaussian, state: object = None) -> Gaussian:
        """A constrained :class:`~physml.outputs.Gaussian`; refused unless a subclass has it."""
        return self._unsupported("Gaussian")

    def apply_ensemble(self, output: Ensemble, state: object = None) -> Ensemble:
        """A constrained :class:`~physml.outputs.Ensemble`; refused unless a subclass has it."""
        return self._unsupported("Ensemble")

    def guide(self, z_t: torch.Tensor, t: object, context: object) -> torch.Tensor:
        """The sampler seam: a mean shift for the latent ``z_t`` at reverse step ``t``."""
        raise ConstraintError(f"{type(self).__name__} does not act at the sampler seam")
