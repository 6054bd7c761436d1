"""Positive-congruent training: a new model pulled toward the old one where the old one was right.

Focal distillation (graceful-model-updates, adapted to regression) wraps any model's
``loss(model, batch)``::

    L = L_data + λ Σ_i w_i ‖f_new(x_i) − f_old(x_i)‖² / Σ_i w_i,   w_i = α + β·1[e_old,i ≤ τ]

with ``e_old,i`` the old model's error on sample ``i`` (relative L2 by default). ``β = 0`` is the
uniform distillation baseline (``pc-uniform``); ``λ = 0`` is plain training. ``‖·‖²`` is taken per
point (the mean over the sample's entries), so ``λ`` does not depend on the grid size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from pdes.checks import non_negative, positive_int

from .. import metrics
from ..errors import ZeroNormError, user_stacklevel

Batch = object
Unpack = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]
SampleError = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def input_target(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a batch that is an ``(input, target, ...)`` sequence (the task pairs)."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"batch must be an (input, target, ...) sequence, got {type(batch).__name__}: pass "
            "unpack= to say how to get (x, y) from it"
        )
    return batch[0], batch[1]


def relative_l2_per_sample(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The default per-sample error ``(batch,)``: :func:`physml.metrics.relative_l2`, undefined
    for a target of zero norm (the message then names ``error=``, the way to another error)."""
    try:
        return metrics.relative_l2(prediction, target, reduction="none")
    except ZeroNormError as error:
        raise ZeroNormError(
            f"{error}. Relative L2 is the default error of FocalDistillation and sample_errors: "
            "for data with zero targets pass them error=(prediction, target) -> (batch,), e.g. "
            "the absolute error=lambda p, y: (p - y).flatten(1).norm(dim=1), with tau in its units"
        ) from None


def focal_weights(old_error: torch.Tensor, tau: float, alpha: float, beta: float) -> torch.Tensor:
    """``w_i = α + β·1[e_old,i ≤ τ]`` ``(batch,)`` float64 from the old errors ``(batch,)``.

    ``old_error``: the old model's error per sample (e.g. relative L2); ``tau``: the error at or
    below which the old model counts as right, judged as the flip metrics judge it; ``alpha``: the
    weight of every sample; ``beta``: the extra weight of the samples the old model got right."""
    old_error = torch.as_tensor(old_error)
    if not old_error.is_floating_point():
        old_error = old_error.to(torch.float64)
    right = metrics.within(old_error, tau)  # as the flip metrics judge "right"
    return alpha + beta * right.to(torch.float64)


def _module(name: str, value: object) -> nn.Module:
    """``value``, the model given as ``name``; anything but an ``nn.Module`` (a plain function
    too: its parameters, mode and hooks are needed) is a ``TypeError`` naming ``name``."""
    if not isinstance(value, nn.Module):
        raise TypeError(
            f"{name} must be an nn.Module, got {type(value).__name__} (wrap a plain function in "
            "an nn.Module whose forward calls it)"
        )
    return value


def _callables(**named: object) -> None:
    """A ``TypeError`` naming the first of ``named`` that is not callable."""
    for name, value in named.items():
        if not callable(value):
            raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with every parameter's ``requires_grad`` off (changed in place)."""
    return _module("old_model", model).eval().requires_grad_(False)


class FocalDistillation:
    """``loss(model, batch)`` plus λ × the focal-weighted squared gap to a frozen old model.

    Args:
        loss: the new model's own loss ``loss(model, batch) -> scalar`` (e.g. a family's loss).
        old_model: the model being replaced; frozen here (eval mode, no gradient) and moved to
            the batch's device. It is not a submodule of the new model, so it is not trained or
            checkpointed with it. A new model sharing its parameters keeps them frozen: one
            with nothing else to train (built around it, e.g. ``constrain(old, ...)``) is
            refused, one that trains others too (a new head on the old encoder) warns; both
            name them. To train them, build it on ``copy.deepcopy(old).requires_grad_(True)``.
        tau: the tolerance τ under which the old model counts as right (the error's units).
        strength: λ, the weight of the distillation term (``0``: plain training).
        alpha, beta: the weights ``α + β·1[e_old ≤ τ]`` (``β = 0``: uniform distillation).
        unpack: ``(x, y)`` of a batch; by default its first two entries.
        error: per-sample error ``error(prediction, target) -> (batch,)``; relative L2 by default.

    An instance is the ``loss`` a :class:`physml.training.Trainer` takes. Outputs must be
    tensors of one shape for both models. When ``loss`` calls the model once on ``x`` that
    output is reused (no second forward pass); otherwise the model is run on ``x`` again.
    """

    def __init__(
        self,
        loss: Callable[[nn.Module, Batch], torch.Tensor],
        old_model: nn.Module,
        tau: float,
        strength: float = 1.0,
        alpha: float = 1.0,
        beta: float = 5.0,
        unpack: Unpack = input_target,
        error: SampleError = relative_l2_per_sample,
    ) -> None:
        _callables(loss=loss, unpack=unpack, error=error)
        self.loss, self.old_model = loss, frozen(old_model)
        self.tau = non_negative("tau", tau)
        self.strength = non_negative("strength", strength)
        self.alpha = non_negative("alpha", alpha)
        self.beta = non_negative("beta", beta)
        if self.alpha + self.beta == 0:
            raise ValueError("alpha and beta are both 0: every weight would be 0")
        self.unpack, self.error = unpack, error
        self._warned_shared = False

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        _module("model", model)
        if model is self.old_model:
            raise ValueError(
                "the new model is the old_model itself: distillation needs a separate copy "
                "(the old one is frozen)"
            )
        self._check_shared(model)
        if self.strength == 0:  # plain training: the old model is not consulted
            return self.loss(model, batch)
        x, y = self.unpack(batch)
        seen: list[object] = []

        def keep(module: nn.Module, args: tuple, output: object) -> None:
            if args and args[0] is x:
                seen.append(output)

        hook = model.register_forward_hook(keep)
        try:
            data = self.loss(model, batch)
        finally:
            hook.remove()
        # reuse the loss's own forward on x: one forward per step (and one per step under DDP)
        new = seen[0] if len(seen) == 1 else model(x)
        old = self.old_outputs(x)
        if not isinstance(new, torch.Tensor) or new.shape != old.shape:
            got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise ValueError(
                f"the new model's output must be a tensor of the old model's shape "
                f"{tuple(old.shape)}, got {got}"
            )
        errors = self.error(old, y)
        if not isinstance(errors, torch.Tensor) or tuple(errors.shape) != (old.shape[0],):
            got = tuple(errors.shape) if isinstance(errors, torch.Tensor) else type(errors)
            raise ValueError(
                f"error must return one value per sample, shape ({old.shape[0]},), got {got}"
            )
        weights = focal_weights(errors, self.tau, self.alpha, self.beta)
        gap = (new - old.to(new.dtype)).square().flatten(1).mean(1)
        weights = weights.to(device=gap.device, dtype=gap.dtype)
        total = weights.sum().clamp_min(torch.finfo(gap.dtype).tiny)
        return data + self.strength * (weights * gap).sum() / total

    def _check_shared(self, model: nn.Module) -> None:
        """Refuse a new model whose every trainable parameter is one of old_model's (frozen here:
        nothing would train); warn, once, where it shares some and trains others (e.g. a new
        head on the old encoder). Both name the shared parameters."""
        old_ids = {id(p) for p in self.old_model.parameters()}
        shared = [name for name, p in model.named_parameters() if id(p) in old_ids]
        if not shared:
            return
        names = ", ".join(shared[:4]) + (f" and {len(shared) - 4} more" if len(shared) > 4 else "")
        if not any(p.requires_grad and id(p) not in old_ids for p in model.parameters()):
            raise ValueError(
                f"the new model shares parameters with old_model ({names}) and has no other "
                "trainable ones (built around it, e.g. constrain(old, ...)?): FocalDistillation "
                "froze them, so nothing would train; build the new model on a trainable copy, "
                "copy.deepcopy(old).requires_grad_(True)"
            )
        if self._warned_shared:
            return
        self._warned_shared = True
        warnings.warn(
            f"the new model shares parameters with old_model ({names}): FocalDistillation froze "
            "them, so only its other parameters train (to train them too, build it on "
            "copy.deepcopy(old).requires_grad_(True))",
            stacklevel=user_stacklevel(),
        )

    def old_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen old model's output on ``x`` (no gradient), on ``x``'s device."""
        parameter = next(self.old_model.parameters(), None)
        if parameter is not None and parameter.device != x.device:
            self.old_model.to(x.device)
        if parameter is not None and x.is_floating_point() and parameter.is_floating_point():
            x = x.to(parameter.dtype)  # a float32 old model on a float64 batch
        with torch.no_grad():
            out = self.old_model(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the old model must return a tensor, got {type(out).__name__}")
        return out


def sample_errors(
    model: nn.Module,
    items: Dataset,
    unpack: Unpack = input_target,
    error: SampleError = relative_l2_per_sample,
    batch: int = 64,
) -> torch.Tensor:
    """Per-sample errors ``(len(items),)`` float64 of ``model`` on a dataset of items, no gradient.

    The items are collated ``batch`` at a time, ``unpack(batch) -> (x, y)`` takes the input and
    target out of each batch, and ``error(model(x), y)`` gives each sample's error. E.g. the old
    model's median error on the training set, a natural τ. ``model`` must be an ``nn.Module``
    and ``items`` have a length and items by index (a map-style ``Dataset``, a list).
    """
    _module("model", model)
    _callables(unpack=unpack, error=error)
    positive_int("batch", batch)
    if not (hasattr(items, "__len__") and hasattr(items, "__getitem__")):
        raise TypeError(
            "items must be a dataset with a length and items by index (a map-style Dataset, a "
            f"list), got {type(items).__name__}"
        )
    if len(items) == 0:
        raise ValueError("items is empty")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    errors = []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            collated = default_collate(
                [items[i] for i in range(start, min(start + batch, len(items)))]
            )
            x, y = unpack(collated)
            errors.append(error(model(x.to(device)), y.to(device)).to(torch.float64).cpu())
    model.train(was_training)
    return torch.cat(errors)
