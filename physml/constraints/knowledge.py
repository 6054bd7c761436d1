"""Knowledge control (PreDiff): steer each reverse step of a diffusion sampler toward a known value.

At each reverse step the guide returns, per sample ``i``,

    g_i = −λ ∇_{z_t,i} ½ ‖Q_i(z_t) − F₀,i‖²

where ``Q`` is either a regressor ``U_φ(z_t, t)`` trained on noisy latents or a closed
form ``F`` of the frames the step's denoiser and decoder make of ``z_t``. The sampler applies
``g`` as its scheme says (:class:`~physml.constraints.Sampler`): a DDIM step shifts its noise
estimate by ``−√(1 − ᾱ_t) g``, i.e. ``ε̂′ = ε̂ + λ √(1 − ᾱ_t) ∇ ½‖Q − F₀‖²`` (the DDIM
formula); a DDPM step shifts its mean by ``σ_t g``. The half squared norm, not the norm itself:
for a scalar quantity ``∇‖Q − F₀‖ = sign(Q − F₀) ∇Q`` keeps its size up to the target and
chatters across it, while the squared norm's pull shrinks as the miss does. The norm is taken per
sample (the reference code takes it over the whole batch, which couples the samples): a sample's
guidance depends on its own latent and target only.

``normalized=True`` rescales each sample's gradient to a Gauss–Newton step in ``z_t``-space,

    g_i = −λ ‖r_i‖² / ‖∇ ½‖r_i‖²‖² · ∇ ½‖r_i‖²,   r_i = Q_i(z_t) − F₀,i,

which puts ``Q`` of ``z_t + g`` on the target of a linear quantity (a scalar one, or rows of equal
norm that do not overlap) at λ = 1, whatever the units of ``Q``: λ is the fraction of the miss
removed per step for a sampler that adds ``g`` to ``z_t``. A DDIM step applies ``g`` as a score
instead, which moves its clean estimate ``ẑ₀ = (z_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t`` by
``(1 − ᾱ_t)/√ᾱ_t · g``: there λ is no such fraction (where ``ẑ₀ = √ᾱ_t z_t``, λ = 1 moves
``F(ẑ₀)`` by ``(1 − ᾱ_t)/ᾱ_t`` times its miss, ≈ 170 at ``t = 950`` of the cosine schedule) and
is chosen by a sweep.

``normalized="clean"`` (``on="frames"`` only) takes the Gauss–Newton step ``δ_i`` on the clean
estimate ``ẑ₀ = denoise(z_t)`` instead, held fixed (no gradient through the denoiser, so no
backward pass through it), ``r_i = F(decode(ẑ₀))_i − F₀,i``, and returns
``g_i = √ᾱ_t/(1 − ᾱ_t) · δ_i``, the score whose DDIM correction moves ``ẑ₀`` by exactly ``δ_i``:
under DDIM λ is the fraction of ``ẑ₀``'s miss removed per step (λ = 1: on target) for a
quantity linear in ``ẑ₀``. Where ``F ∘ decode`` is far from linear over the step — a quantity
whose gradient is small next to its curvature, as through an untrained decoder — the step
overshoots into that curvature and the miss need not shrink: take λ well below 1 there. At
ᾱ_t = 1 no score moves ``ẑ₀`` (``ẑ₀ = z_t``) and the guide returns 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .._checks import as_tensor
from ..errors import ConstraintError
from .base import Constraint
from .layer import ReverseStep

ON = ("noisy", "frames")


class KnowledgeControl(Constraint):
    """Steer a :class:`~physml.constraints.Sampler` toward ``quantity = target`` (sampler seam).

    Args:
        quantity: ``on="noisy"`` (the default for an ``nn.Module``): a regressor
            ``U_φ(z, timesteps) → (N,)`` or ``(N, *k)`` on noisy latents ``z`` ``(N, *latent)``
            and integer timesteps ``(N,)``, e.g. :class:`physml.models.KnowledgeRegressor`; it is
            a submodule, so it moves with ``.to()`` and saves with ``state_dict``.
            ``on="frames"`` (the default for a plain function): a differentiable
            ``F(frames) → (N,)`` or ``(N, *k)`` of the clean frames ``decode(denoise(z_t))`` the
            step's :class:`~physml.constraints.ReverseStep` offers (``decode`` ``None``: the
            sampler works in data space and ``F`` sees ``denoise(z_t)``).
        target: the value ``F₀`` per context, ``(batch,)`` or ``(batch, *k)`` (an anticipated
            value; a tensor is copied when the control is built, without gradient: later
            changes to it do not reach the control), or ``target(context) → (batch, …)``
            evaluated without gradient at every step (conservation: e.g. the context's energy).
            A ``(batch,)`` target is broadcast over a quantity's trailing axes (one energy for
            every target frame). Per-call targets:
            ``constrained(x, constraints=[control.with_target(new), ...])``.
        scale: λ ≥ 0, in units of 1 / (quantity units)² per latent unit of the step.
        on: ``"noisy"`` or ``"frames"`` (see ``quantity``); ``None`` chooses as described.
        normalized: ``False``: the raw gradient (λ in units of 1 / (quantity units)²);
            ``True``: the Gauss–Newton step in ``z_t`` above (λ dimensionless; under DDIM not
            the fraction of the miss removed, choose it by a sweep); ``"clean"``
            (``on="frames"``): the Gauss–Newton step on ``ẑ₀`` returned as DDIM's score (λ the
            fraction of ``ẑ₀``'s miss removed per step).

    ``guide(z_t, t, context)``: ``z_t`` ``(members, batch, *latent)``; the quantity sees the
    members and batch axes flattened, ``(members · batch, *latent)``. The gradient is taken with
    autograd enabled and outside inference mode even if the sampler runs under ``no_grad`` or
    ``inference_mode``; with ``on="frames"`` the step's ``denoise`` and ``decode`` must then not
    hold inference-mode tensors (samplers should use ``no_grad``). Per-sample independence holds
    as long as ``quantity`` treats samples independently (a regressor in ``eval`` mode).
    """

    seams = ("sampler",)
    needs = ("sampler",)

    def __init__(
        self,
        quantity: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        target: torch.Tensor | Callable[[object], torch.Tensor],
        scale: float = 1.0,
        on: str | None = None,
        normalized: bool | str = False,
    ) -> None:
        super().__init__()
        if not callable(quantity):
            raise TypeError(
                "quantity must be an nn.Module regressor U(z_t, timesteps) or a function of "
                f"frames F(frames), got {type(quantity).__name__}"
            )
        chosen = on is None
        if on is None:
            on = "noisy" if isinstance(quantity, nn.Module) else "frames"
        if on not in ON:
            raise ValueError(f"on must be one of {list(ON)} or None, got {on!r}")
        if not isinstance(normalized, (bool, str)):
            raise TypeError(f'normalized must be True, False or "clean", got {normalized!r}')
        if isinstance(normalized, str) and normalized != "clean":
            raise ValueError(f'normalized must be True, False or "clean", got {normalized!r}')
        if normalized == "clean" and on != "frames":
            raise ValueError(
                f'normalized="clean" steps the clean estimate denoise(z_t), so it needs '
                f'on="frames", got on={on!r}'
                + (" (the default for an nn.Module)" if chosen else "")
            )
        self.on, self.normalized = on, normalized
        self.quantity = quantity  # an nn.Module becomes a submodule
        self.scale = _scale(scale)
        self.target_function: Callable[[object], torch.Tensor] | None = None
        if isinstance(target, torch.Tensor) or not callable(target):
            self.register_buffer("target_value", _target(target).detach().clone(), persistent=False)
        else:
            self.target_function = target
            self.target_value = None

    def extra_repr(self) -> str:
        given = "callable" if self.target_function is not None else "tensor"
        norm = f", normalized={self.normalized!r}" if self.normalized else ""
        return f"on={self.on!r}, scale={self.scale:g}{norm}, target={given}"

    def with_target(self, target: torch.Tensor | Callable[[object], torch.Tensor]):
        """The same control (shared ``quantity``, ``scale``, ``on``) toward another target."""
        return KnowledgeControl(self.quantity, target, self.scale, self.on, self.normalized)

    def guide(self, z_t: torch.Tensor, t: object, context: object) -> torch.Tensor:
        """``g = −λ ∇_{z_t} Σ_i ½ ‖Q_i − F₀,i‖²`` (or its normalized forms), shaped like ``z_t``
        (each term has its own sample's gradient only). The miss, ``|∇F|²`` and their ratio are
        taken in float64 and the shift returned in ``z_t``'s dtype (a float16 ``|∇F|²``
        underflows to 0); for a float16 ``z_t`` the backward pass is scaled so that the
        gradient itself does not underflow (one power of 2 per sample); a sample whose gradient
        is still 0 where it misses its target gets no shift if its float32 gradient is 0 too (a
        quantity that does not move there, e.g. clamped), else it is a
        :class:`~physml.errors.ConstraintError`."""
        if not isinstance(z_t, torch.Tensor) or z_t.ndim < 2 or not z_t.is_floating_point():
            raise ConstraintError(
                "KnowledgeControl needs z_t as a float tensor (members, batch, *latent), got "
                f"{tuple(z_t.shape) if isinstance(z_t, torch.Tensor) else type(z_t).__name__}"
            )
        if self.scale == 0.0:
            return torch.zeros_like(z_t)
        clean = self.normalized == "clean"
        if clean and _alpha_bar(t) == 1.0:
            return torch.zeros_like(z_t)
        members, batch = z_t.shape[:2]
        target = self._target_for(context, batch, z_t.device)
        with torch.inference_mode(False), torch.enable_grad():
            z = z_t.detach().clone()
            if clean:  # differentiate at ẑ₀, not through the denoiser
                with torch.no_grad():
                    z = self._denoise(z, t).detach()
            z.requires_grad_(True)
            value = self._quantity(z, t, members * batch, denoised=clean)
            value = value.reshape(members, batch, *value.shape[1:])
            if target.ndim > value.ndim - 1 or target.shape[1:] != value.shape[2 : target.ndim + 1]:
                raise ConstraintError(
                    f"target has shape {tuple(target.shape)}, but the quantity gives "
                    f"{tuple(value.shape[2:])} per sample: expected (batch={batch},) or "
                    f"(batch, *{tuple(value.shape[2:])}) leading axes"
                )
            aligned = target.to(torch.float64).reshape(
                1, *target.shape, *([1] * (value.ndim - 1 - target.ndim))
            )
            residual = value.to(torch.float64) - aligned
            miss = residual.square().reshape(members, batch, -1).sum(-1)  # ‖r_i‖²
            if not miss.requires_grad:
                raise ConstraintError(
                    "quantity must be differentiable in the frames it is given (no .detach(), "
                    "no numpy): KnowledgeControl steers along its gradient"
                )
            gradient = _gradient(value, residual.detach(), z)
        if not torch.isfinite(gradient).all():
            raise ConstraintError(_diverged(t, None, self.normalized))
        miss = miss.detach()
        size = gradient.square().reshape(members, batch, -1).sum(-1)
        stuck = (size == 0) & (miss > 0)
        if _narrow(z.dtype) and stuck.any():
            moving = stuck & ~self._stationary(z.detach(), t, residual.detach(), clean)
            if moving.any():
                raise ConstraintError(
                    f"KnowledgeControl's gradient at timestep {_timestep(t)} is 0 in z_t's "
                    f"{z_t.dtype} for a sample that misses its target (its ‖r‖² "
                    f"{float(miss[moving][0]):.3g}) although the quantity moves with z_t in "
                    "float32: it underflows that dtype even after scaling — sample in float32"
                )
        if self.normalized:
            ratio = torch.where(size > 0, miss / size.clamp_min(1e-300), 0.0)
            gradient = gradient * ratio.reshape(*ratio.shape, *[1] * (z_t.ndim - 2))
            if not torch.isfinite(gradient).all():
                raise ConstraintError(_diverged(t, size, True))
        if clean:  # DDIM's ε̂ − √(1 − ᾱ) g moves ẑ₀ by (1 − ᾱ)/√ᾱ · g
            alpha_bar = _alpha_bar(t)
            gradient = gradient * (math.sqrt(alpha_bar) / (1.0 - alpha_bar))
            if not torch.isfinite(gradient).all():
                raise ConstraintError(_diverged(t, None, True))
        shift = (-self.scale * gradient).to(z_t.dtype)
        if not torch.isfinite(shift).all():
            raise ConstraintError(
                f"KnowledgeControl's shift at timestep {_timestep(t)} is finite in float64 "
                f"(largest |shift| {float(gradient.abs().max()) * self.scale:.3g}) but overflows "
                f"z_t's {z_t.dtype}: lower scale, or sample in a wider dtype"
            )
        return shift.detach()

    # --------------------------------------------------------------------------------- parts

    def _target_for(self, context: object, batch: int, device: torch.device) -> torch.Tensor:
        if self.target_function is None:
            target = self.target_value
        else:
            with torch.no_grad():
                target = _target(self.target_function(context), "target(context)")
        if target.shape[0] != batch:
            raise ConstraintError(
                f"target has {target.shape[0]} entries along its batch axis (shape "
                f"{tuple(target.shape)}), but the sampler's z_t holds {batch} contexts"
            )
        return target.to(device)

    def _denoise(self, z: torch.Tensor, t: object) -> torch.Tensor:
        """The step's clean estimate ``ẑ₀ = denoise(z_t)``, shaped like ``z_t``."""
        _check_step(t)
        clean = t.denoise(z)
        if not isinstance(clean, torch.Tensor) or clean.shape != z.shape:
            raise ConstraintError(
                f'normalized="clean" steps ẑ₀ = denoise(z_t), which must be shaped like z_t '
                f"{tuple(z.shape)}, got "
                f"{tuple(clean.shape) if isinstance(clean, torch.Tensor) else clean!r}"
            )
        return clean

    def _stationary(
        self, z: torch.Tensor, t: object, residual: torch.Tensor, clean: bool
    ) -> torch.Tensor:
        """Per sample ``(members, batch)``: whether ``Q``'s float32 gradient at ``z`` (a float16
        one is 0 where ``Q`` does not move or where it underflows) is exactly 0; all False when
        the quantity cannot be taken in float32."""
        members, batch = z.shape[:2]
        with torch.inference_mode(False), torch.enable_grad():
            wide = z.to(torch.float32).requires_grad_(True)
            try:
                value = self._quantity(wide, t, members * batch, denoised=clean)
                (gradient,) = torch.autograd.grad(
                    value.reshape(residual.shape), wide, residual.to(value.dtype)
                )
            except (RuntimeError, TypeError, ConstraintError):
                return torch.zeros(members, batch, dtype=torch.bool, device=z.device)
        return gradient.reshape(members, batch, -1).abs().amax(-1) == 0

    def _quantity(
        self, z: torch.Tensor, t: object, count: int, denoised: bool = False
    ) -> torch.Tensor:
        """``Q`` per sample ``(count, …)``; ``denoised``: ``z`` is already ``ẑ₀``."""
        flat = z.reshape(count, *z.shape[2:])
        if self.on == "noisy":
            timestep = _timestep(t)
            if isinstance(timestep, torch.Tensor) and timestep.numel() == 1:
                timestep = timestep.item()  # a float that is not whole stays a float
                if isinstance(timestep, float) and timestep.is_integer():
                    timestep = int(timestep)
            if isinstance(timestep, bool) or not isinstance(timestep, int):
                raise ConstraintError(
                    "KnowledgeControl on noisy latents needs the step's integer timestep (an int "
                    f"or a ReverseStep), got {timestep!r} from a {type(t).__name__}"
                )
            steps = torch.full((count,), timestep, dtype=torch.long, device=z.device)
            value = self.quantity(flat, steps)
        else:
            _check_step(t)
            frames = z if denoised else t.denoise(z)
            if t.decode is not None:
                frames = t.decode(frames)
            if not isinstance(frames, torch.Tensor) or frames.shape[:2] != z.shape[:2]:
                raise ConstraintError(
                    "decode(denoise(z_t)) must keep z_t's (members, batch) axes "
                    f"{tuple(z.shape[:2])}, got "
                    f"{tuple(frames.shape) if isinstance(frames, torch.Tensor) else frames!r}"
                )
            value = self.quantity(frames.reshape(count, *frames.shape[2:]))
        if not isinstance(value, torch.Tensor) or value.ndim < 1 or value.shape[0] != count:
            raise ConstraintError(
                f"quantity must return one value per sample, ({count},) or ({count}, ...), got "
                f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
            )
        return value


def _gradient(value: torch.Tensor, residual: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``∇_z Σ_i ½ ‖r_i‖²`` in float64, shaped like ``z``, from ``Q = value`` and its ``residual``.

    For a ``z`` no wider than float16 the backward pass runs on ``2^e_i · r_i``, a power of 2 per
    sample ``i`` undone in float64, chosen so that that sample's largest gradient entry lands in
    [1, 2¹²], else as near as the scaled ``r_i`` allows (float16 spans 2⁻²⁴ … 2¹⁶: ``r / n`` of a
    mean of 2²⁰ entries underflows unscaled). A pass that overflows caps ``e_i`` one below, and the
    next finite pass is kept.
    """
    narrow = _narrow(z.dtype)
    samples = residual.shape[:2]
    largest = residual.abs().reshape(*samples, -1).amax(-1) if residual.numel() else None
    if not narrow or largest is None or not torch.isfinite(largest).all():
        (gradient,) = torch.autograd.grad(value, z, residual.to(value.dtype))
        return gradient.to(torch.float64)
    top = math.floor(math.log2(torch.finfo(z.dtype).max))  # 15 for float16
    order = torch.where(largest > 0, torch.log2(largest).ceil(), 0.0)
    exponent, highest = top // 2 - order, top - order  # scale · |r| ≤ 2^7, ≤ 2^15
    done, overflowed = largest == 0, torch.zeros_like(largest, dtype=torch.bool)
    kept = None
    for _ in range(6):
        seed = residual * _per_sample(2.0**exponent, residual)
        (scaled,) = torch.autograd.grad(value, z, seed.to(value.dtype), retain_graph=True)
        unscaled = scaled.to(torch.float64) * _per_sample(2.0**-exponent, scaled)
        peak = scaled.abs().reshape(*samples, -1).amax(-1).to(torch.float64)
        finite = torch.isfinite(peak)
        if kept is not None:
            unscaled = torch.where(_per_sample(finite & ~done, z), unscaled, kept)
        kept = unscaled
        settled = (peak >= 1.0) & (peak <= 2.0 ** (top - 3)) | overflowed  # 14 octaves below it
        wanted = torch.where(peak == 0, highest, exponent + top // 2 - torch.log2(peak).ceil())
        wanted = torch.where(finite, wanted, exponent - top // 2)
        highest = torch.where(finite, highest, torch.minimum(highest, exponent - 1))
        wanted = torch.minimum(wanted, highest)
        done |= finite & (settled | (wanted == exponent))
        overflowed |= ~finite
        if done.all():
            break
        exponent = torch.where(done, exponent, wanted)
    return kept


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` (members, batch) shaped to broadcast against ``like`` (members, batch, …)."""
    return values.reshape(*values.shape, *[1] * (like.ndim - 2))


def _narrow(dtype: torch.dtype) -> bool:
    """A dtype whose range is no wider than float16's (a gradient of many entries underflows)."""
    return torch.finfo(dtype).max <= torch.finfo(torch.float16).max


def _check_step(t: object) -> None:
    if not isinstance(t, ReverseStep) or t.denoise is None:
        raise ConstraintError(
            "KnowledgeControl on frames needs the sampler to pass a ReverseStep with a "
            f"denoise function (and decode for latents), got {t!r}"
        )


def _alpha_bar(t: object) -> float:
    """The step's ᾱ_t in (0, 1] (``normalized="clean"``)."""
    _check_step(t)
    alpha_bar = t.alpha_bar
    if isinstance(alpha_bar, torch.Tensor) and alpha_bar.numel() == 1:
        alpha_bar = float(alpha_bar)
    if isinstance(alpha_bar, bool) or not isinstance(alpha_bar, (int, float)):
        raise ConstraintError(
            f'normalized="clean" needs the step\'s alpha_bar as a number, got {alpha_bar!r}'
        )
    if not 0.0 < alpha_bar <= 1.0:
        raise ConstraintError(
            f'normalized="clean" needs the step\'s alpha_bar in (0, 1], got {alpha_bar!r}'
        )
    return float(alpha_bar)


def _diverged(t: object, size: torch.Tensor | None, normalized: bool) -> str:
    """Why a shift came out NaN or inf, for the error."""
    message = f"KnowledgeControl's shift at timestep {_timestep(t)} is not finite: "
    step = (
        "the normalized (Gauss–Newton) step divides the miss by |∇F|², so a quantity that barely "
        "moves with z_t asks for steps so large that the latents diverge — lower scale, or use "
        "normalized=False"
    )
    if size is None:
        cause = "the quantity or its gradient at z_t is NaN or inf"
        return message + cause + (f" (if earlier steps were huge: {step})" if normalized else "")
    return message + f"{step} (smallest |∇F|² here {float(size.min()):.3g})"


def _timestep(t: object) -> object:
    return t.timestep if isinstance(t, ReverseStep) else t


def _scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number >= 0, got {scale!r}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    return float(scale)


def _target(value: object, name: str = "target") -> torch.Tensor:
    if not isinstance(value, torch.Tensor) and not isinstance(value, (list, tuple)):
        raise TypeError(
            f"{name} must be a tensor (batch,) or (batch, ...) or a callable target(context), "
            f"got {type(value).__name__}"
        )
    tensor = as_tensor(name, value, "(batch,) or (batch, ...)", None, dtype=_float(value))
    if tensor.ndim == 0:
        raise ValueError(f"{name} must have shape (batch,) or (batch, ...), got a scalar")
    return tensor


def _float(value: object) -> torch.dtype:
    floating = isinstance(value, torch.Tensor) and value.is_floating_point()
    return value.dtype if floating else torch.float64
