"""The operator seam: BOON's kernel correction of every kernel layer of an operator model.

A model offers the seam through :class:`OperatorModel` (``kernel_layers()``, ``n_dim``,
``out_channels``); a :class:`neuralop.models.FNO` (1-, 2- or 3-D) is adapted here. Each kernel
layer applies an affine operator ``K x = conv(x) + skip(x)`` — for the FNO the spectral
convolution (with its bias) plus the pointwise skip path — before its nonlinearity and channel
MLP. :class:`OperatorCorrection` corrects ``K`` in every layer along each axis that carries a
Dirichlet or Neumann :class:`~physml.constraints.BoundaryCondition`, and the output seam corrects
the model output once more with the conditions themselves:

- Probes. ``K`` is probed *once per forward and layer* with ``1 + 2·(corrected axes)`` inputs: zero
  and, per axis, a *wall spike* filling the whole first wall (index 0 of the axis) and one filling
  the last wall, the same in every channel. The probes are appended to the data batch, so ``conv``
  and ``skip`` still run once (the layers treat batch entries independently). For the Fourier
  layers of a neuralop FNO (dense spectral weights, a pointwise skip: :mod:`.spectral_probes`)
  the responses of all layers are instead computed together from the weights, in closed form,
  when the first layer runs, and no probes join the batch. The responses give the bias and, per
  output channel ``c`` and wall point ``w``, the columns ``p₀, p_N`` and the corner entries
  ``K₀₀ K₀ₙ Kₙ₀ Kₙₙ`` (rows 0 and N of the responses). Probes read without gradient
  (inference) are kept while the version counters and a weighted sum of the layer's parameters
  and buffers stay the same (the sum sees writes through ``.data``), so that inference runs ``K``
  on the data alone; with gradients they are read in every forward and dropped after it.
- Elimination. The corrected operator is ``K̃x = Kx + p₀ d₀ + p_N d_N`` with ``(d₀, d_N)``, per
  channel and wall point, solved from the 2 × 2 corner system with the pivots ``Kₙₙ`` and
  ``K̃₀₀ = K₀₀ − K₀ₙKₙ₀/Kₙₙ`` such that ``(K̃x)₀(w) = K̃₀₀(w) x₀(w)`` and ``(K̃x)_N(w) = Kₙₙ(w)
  x_N(w)`` (plus the bias): row 0 depends only on the input's row 0 and row N only on row N,
  exactly, for every input; the correction reaches the interior through the probe responses —
  no second pass of ``K`` over the data.
- Several axes compose: ``K̃₁`` (first axis) is affine and known from ``K``'s responses, so the
  second axis' probes are the first axis' elimination applied to ``K``'s responses to the second
  axis' spikes; and so on. A later axis' correction touches an earlier axis' walls only at the
  corners where the walls meet, so row 0 of every corrected axis still depends on its row 0 only
  (away from those corners, point by point as above).
- Values. Then every hidden channel's walls are set, condition by condition in the order given
  (later conditions win where walls meet): Dirichlet to the prescribed values, Neumann to the
  values that make the one-sided second-order stencil equal the prescribed flux (grid spacing on
  both sides), per wall point (values varying along a wall — e.g. along time in an ``(x, t)``
  output — are written point by point). Values given per output channel are averaged over the
  channels for the hidden layers (hidden channels do not correspond to output channels).
- Periodic on a node grid holding both ends: the walls of every hidden channel are set to their
  mean (no elimination). Periodic on a periodic grid: nothing to correct, the FNO is periodic by
  construction and the output is the plain FNO's.

Channel mixing. ``K`` mixes channels; like the reference BOON the correction is channel-wise: the
wall spike fills all input channels and the whole wall, so the corner entries of output channel
``c`` at wall point ``w`` are summed over input channels and over the wall's input points, and the
elimination for channel ``c`` at ``w`` uses channel ``c`` of the input at ``w``. The entries need
not be constant along a wall: neuralop 2.0's spectral convolution is not translation invariant
along a non-last axis of odd size (its double ``fftshift``, see :mod:`.spectral_probes`; the
toolkit's ``LeanSpectralConv`` is), and the responses to a spike on the last axis' walls vary
along such an axis. The decoupling above is
exact for every input (a property of ``K̃``, checked by probing in the tests); what is
channel-wise is only which probe columns carry the correction.

In the hidden layers the block's pointwise nonlinearity and channel MLP act on the wall values as
on any node, so the exact guarantee is the one at the output (to float32 round-off). The hooks
that do this are attached to the wrapped model only while :func:`physml.constrain`'s wrapper runs
it; calling the model directly gives the plain model. FNOs with domain padding, normalisation, a
stabiliser, resolution scaling or complex data are not supported by the kernel correction (output
correction only).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from functools import partial
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from .._fno import fno_dtype_problem
from ..errors import ConstraintError
from .base import fingerprint
from .boundary import BoundaryCondition, Values, set_walls
from .spectral_probes import signature, unsupported, wall_responses

TOLERANCE = 1e-7


class KernelLayer(NamedTuple):
    """One kernel layer of an operator model: its output is ``conv(x) + skip(x)``.

    ``conv`` and ``skip`` (``None`` when absent) are affine maps ``(batch, channel, *space)`` to
    the same shape, acting on each batch entry independently; the model adds their outputs before
    anything else happens to them.
    """

    conv: nn.Module
    skip: nn.Module | None


@runtime_checkable
class OperatorModel(Protocol):
    """The operator seam's protocol: ``(batch, in, *space) → (batch, out_channels, *space)``.

    ``n_dim`` is the number of spatial axes; ``kernel_layers()`` lists the layers to correct, in
    the order the forward runs them.
    """

    n_dim: int
    out_channels: int

    def kernel_layers(self) -> Sequence[KernelLayer]: ...


def _safe(value: torch.Tensor, floor: torch.Tensor | None = None) -> torch.Tensor:
    """``value`` with entries below ``floor`` (at least ``TOLERANCE``; default ``TOLERANCE``) in
    magnitude moved out to ``±floor``, keeping their sign (no zero pivots)."""
    if floor is None:
        return value.abs().clamp_min(TOLERANCE).copysign(value)
    return torch.maximum(value.abs(), floor).copysign(value)


@dataclass(frozen=True)
class AxisProbe:
    """``K``'s (or an earlier axis' ``K̃``'s) probe columns along one axis, and its elimination.

    ``first``/``last`` ``(..., channel, *space)`` are the columns ``p₀``/``p_N`` (responses to the
    wall spikes minus the response to zero; size 1 along the wall where constant there). The
    others, ``(..., channel, *wall)`` (broadcasting), are the response to zero on the first and
    the last wall ``b₀, b_N``, the diagonal entries the decoupled wall rows keep (``pivot``
    ``K̃₀₀`` and ``knn`` ``Kₙₙ``) and ``ratio = K₀ₙ/Kₙₙ``, ``k0n``, ``kn0``, so that, with
    ``u = Kx − b`` on the walls, the elimination takes few operations::

        d₀ = x₀ − (u₀ − (K₀ₙ/Kₙₙ) u_N + K₀ₙ x_N) / K̃₀₀,      d_N = x_N − (u_N + Kₙ₀ d₀) / Kₙₙ

    Leading axes ``...`` (layers read together) are split by :meth:`unbind`.
    """

    axis: int
    first: torch.Tensor
    last: torch.Tensor
    b0: torch.Tensor
    bn: torch.Tensor
    pivot: torch.Tensor
    knn: torch.Tensor
    ratio: torch.Tensor
    k0n: torch.Tensor
    kn0: torch.Tensor

    @classmethod
    def read(
        cls, axis: int, bias: torch.Tensor, columns: torch.Tensor, pivot_floor: float = 0.0
    ) -> AxisProbe:
        """From the columns ``(2, ..., channel, *space)`` (``p₀``, ``p_N``) and the response to
        zero ``bias`` (broadcast against a column).

        Pivots smaller in magnitude than ``pivot_floor`` times the RMS of their probe column are
        moved out to that size (see :func:`physml.constrain`).
        """
        k00, k0n = columns.select(axis, 0).unbind(0)
        kn0, knn = columns.select(axis, -1).unbind(0)
        floor_first = floor_last = None
        if pivot_floor > 0:  # pivot_floor × RMS of the column along the axis
            scale = pivot_floor / math.sqrt(columns.shape[axis])
            floors = torch.linalg.vector_norm(columns, dim=axis) * scale
            floor_first, floor_last = floors.clamp_min(TOLERANCE).unbind(0)
        knn = _safe(knn, floor_last)
        ratio = k0n / knn
        pivot = _safe(torch.addcmul(k00, ratio, kn0, value=-1.0), floor_first)
        first, last = columns.unbind(0)
        b0 = bias.select(axis, 0)
        bn = b0 if bias.shape[axis] == 1 else bias.select(axis, -1)  # one view when constant
        return cls(axis, first, last, b0, bn, pivot, knn, ratio, k0n, kn0)

    def detach(self) -> AxisProbe:
        """The probe without the autograd graph it was read in."""
        return AxisProbe(self.axis, *(getattr(self, name).detach() for name in _TENSOR_FIELDS))

    def unbind(self) -> tuple[AxisProbe, ...]:
        """One probe per entry of the leading axis (layers read together)."""
        split = {}  # a tensor shared by two fields is split once
        for name in _TENSOR_FIELDS:
            tensor = getattr(self, name)
            if id(tensor) not in split:
                split[id(tensor)] = tensor.unbind(0)
        parts = [split[id(getattr(self, name))] for name in _TENSOR_FIELDS]
        return tuple(AxisProbe(self.axis, *layer) for layer in zip(*parts, strict=True))

    def eliminate(self, kx: torch.Tensor, x: torch.Tensor, bias_free: bool = False) -> torch.Tensor:
        """``K̃x`` from ``kx = Kx`` and ``x`` ``(..., channel, *space)`` (broadcasting).

        ``(d₀, d_N)`` solve, per channel and wall point, ``(K̃x)₀ = K̃₀₀ x₀`` and
        ``(K̃x)_N = Kₙₙ x_N`` (plus the bias) for ``K̃x = Kx + p₀ d₀ + p_N d_N``. ``bias_free``:
        ``kx`` is ``Kx − b`` (a probe column), and so is the result.
        """
        a = self.axis
        u0, un = kx.select(a, 0), kx.select(a, -1)
        if not bias_free:
            u0, un = u0 - self.b0, un - self.bn
        x0, xn = x.select(a, 0), x.select(a, -1)
        coupled = torch.addcmul(torch.addcmul(u0, self.ratio, un, value=-1.0), self.k0n, xn)
        d0 = torch.addcdiv(x0, coupled, self.pivot, value=-1.0)
        dn = torch.addcdiv(xn, torch.addcmul(un, self.kn0, d0), self.knn, value=-1.0)
        return torch.addcmul(
            torch.addcmul(kx, d0.unsqueeze(a), self.first), dn.unsqueeze(a), self.last
        )


_TENSOR_FIELDS = tuple(field.name for field in fields(AxisProbe)[1:])


def read_axes(
    axes: Sequence[int],
    bias: torch.Tensor,
    columns: Sequence[torch.Tensor],
    spikes: Sequence[torch.Tensor],
    pivot_floor: float,
) -> tuple[AxisProbe, ...]:
    """The :class:`AxisProbe` of each axis in turn, a later axis read on ``K̃`` of the earlier ones.

    ``columns``/``spikes``: per axis ``K``'s responses to its two wall spikes minus ``bias`` (the
    response to zero), and the spikes, ``(2, ..., channel, *space)`` (broadcasting). A later
    axis' columns go through the earlier axes' eliminations first (``K̃`` is affine and keeps
    ``K``'s response to zero).
    """
    probes: list[AxisProbe] = []
    for axis, column, spike in zip(axes, columns, spikes, strict=True):
        for earlier in probes:
            column = earlier.eliminate(column, spike, bias_free=True)
        probes.append(AxisProbe.read(axis, bias, column, pivot_floor))
    return tuple(probes)


def probe_in_closed_form(layers: Sequence[CorrectedLayer], like: torch.Tensor) -> bool:
    """Read the probes of ``layers`` together from their weights (:mod:`.spectral_probes`).

    ``layers`` share their conditions and a :func:`.spectral_probes.signature`. ``False``, nothing
    read, where the closed form does not apply to inputs like ``like``.
    """
    first = layers[0]
    if first.no_closed_form is not None:
        return False
    found = wall_responses([(layer.conv, layer.skip) for layer in layers], first.axes, like)
    if found is None:
        return False
    probes = read_axes(first.axes, found.bias, found.columns, found.spikes, first.pivot_floor)
    per_layer = zip(*(probe.unbind() for probe in probes), strict=True)
    for layer, bias, own in zip(layers, found.bias.unbind(0), per_layer, strict=True):
        layer.store(bias, own, like)
    return True


class DirichletRows:
    """A Dirichlet condition's values for the hidden layers of one forward, as wall rows.

    ``left``/``right`` broadcast against a wall slice (``None``: a free wall); :meth:`write` sets
    the walls of a layer output by one ``cat``, with the rows cast and expanded once per shape;
    :func:`write_rows` sets those of consecutive conditions together.
    """

    def __init__(self, axis: int, left: torch.Tensor | None, right: torch.Tensor | None) -> None:
        self.axis = axis
        self.values = (left, right)
        self._rows: dict[tuple, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.merged: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # see write_rows

    def write(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` ``(batch, channel, *space)`` with the constrained walls set to the values."""
        axis = self.axis
        key = (tuple(y.shape), y.dtype)
        if key not in self._rows:
            row = list(y.shape)
            row[axis] = 1
            self._rows[key] = tuple(
                None if value is None else value.to(y.dtype).unsqueeze(axis).expand(row)
                for value in self.values
            )
        first, last = self._rows[key]
        n = y.shape[axis]
        start, stop = (0 if first is None else 1), (n if last is None else n - 1)
        pieces = [first, y.narrow(axis, start, stop - start), last]
        return torch.cat([piece for piece in pieces if piece is not None], dim=axis)

    def lay_out(self, filled: torch.Tensor, mask: torch.Tensor) -> None:
        """Write the values into the walls of ``filled`` ``(batch | 1, channel | 1, *space)`` and
        mark those walls in ``mask`` ``(*space)`` (bool)."""
        axis = self.axis
        for index, value in zip((0, -1), self.values, strict=True):
            if value is not None:
                wall = filled.select(axis, index)
                wall.copy_(value.to(filled.dtype).expand(wall.shape))
                mask.select(axis, index).fill_(True)


def write_rows(rows: Sequence[DirichletRows], y: torch.Tensor) -> torch.Tensor:
    """``y`` ``(batch, channel, *space)`` with the walls of several Dirichlet conditions set, in
    order (later ones win where walls meet): one ``where`` with the values laid out once per
    shape (kept by the first condition), instead of one ``cat`` per condition."""
    if len(rows) < 2:
        return rows[0].write(y) if rows else y
    key = (tuple(map(id, rows)), tuple(y.shape), y.dtype)
    kept = rows[0].merged
    if key not in kept:
        lead = [1, 1]
        for value in (value for row in rows for value in row.values if value is not None):
            lead = [max(size, value.shape[i]) for i, size in enumerate(lead)]
        filled = torch.zeros(*lead, *y.shape[2:], dtype=y.dtype, device=y.device)
        mask = torch.zeros(y.shape[2:], dtype=torch.bool, device=y.device)
        for row in rows:
            row.lay_out(filled, mask)
        kept[key] = (mask, filled)
    mask, filled = kept[key]
    return torch.where(mask, filled, y)


class CorrectedLayer:
    """BOON's correction of one kernel layer's affine operator ``x ↦ conv(x) + skip(x)``.

    Args:
        conv, skip: the layer's modules (``skip`` may be ``None``).
        conditions: the :class:`BoundaryCondition` objects (one axis each, applied in order).

    The probes are refreshed by :meth:`probe` (once per forward).
    """

    def __init__(
        self,
        conv: nn.Module,
        skip: nn.Module | None,
        conditions: Sequence[BoundaryCondition],
        pivot_floor: float = 0.0,
    ) -> None:
        pivot_floor = float(pivot_floor)
        if not (math.isfinite(pivot_floor) and pivot_floor >= 0.0):
            raise ValueError(f"pivot_floor must be a finite number >= 0, got {pivot_floor}")
        self.pivot_floor = pivot_floor
        self.walls = tuple(conditions)
        self.conv = conv
        self.skip = skip
        self.axes = tuple(dict.fromkeys(w.axis for w in self.walls if w.kind != "periodic"))
        self._probes: tuple[torch.Tensor, tuple[AxisProbe, ...]] | None = None
        self._probed_for: tuple | None = None  # what the probes were read for, when reusable
        self._key_taken: tuple | None = None  # the key needs_probe took, until store uses it
        self._spikes: tuple[tuple, torch.Tensor] | None = None
        self.no_closed_form = unsupported(conv, skip)  # None: probes from the weights

    @property
    def probing(self) -> bool:
        """Whether ``K`` needs probes (some axis carries a Dirichlet or Neumann condition)."""
        return bool(self.axes)

    @property
    def identity(self) -> bool:
        """Whether the layer is left as it is (only periodic conditions on periodic grids)."""
        return all(w.is_identity for w in self.walls)

    def _live_tensors(self) -> list[torch.Tensor]:
        """The layer's parameters and buffers as the modules hold them now
        (``load_state_dict(..., assign=True)`` or ``functional_call`` put new objects in their
        place); a buffer may carry ``K``'s weights as well as a parameter."""
        modules = (self.conv,) if self.skip is None else (self.conv, self.skip)
        return [t for m in modules for t in (*m.parameters(), *m.buffers())]

    def _reusable_key(self, like: torch.Tensor) -> tuple | None:
        """What the probes depend on, when they carry no gradient (else ``None``).

        The parameters and buffers (identity, storage and version counters, bumped by in-place
        updates such as an optimiser step or ``load_state_dict``, and their :func:`fingerprint`,
        which also sees writes through ``parameter.data``), the shape, dtype and device,
        inference mode (inference tensors cannot be saved for a later backward pass) and
        ``torch.autocast``'s state on that device (on or off, its dtype: ``K`` runs in it). The
        fingerprint, the costly part, is taken once per forward: :meth:`store` reuses the one
        :meth:`needs_probe` took while the rest of the key is unchanged.
        """
        tensors = self._live_tensors()
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return None
        versions = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
        cheap = (versions, tuple(like.shape[1:]), like.dtype, like.device)
        autocast = like.device.type
        cheap += (torch.is_inference_mode_enabled(), torch.is_autocast_enabled(autocast))
        cheap += (torch.get_autocast_dtype(autocast),)
        taken, self._key_taken = getattr(self, "_key_taken", None), None
        if taken is not None and taken[0] == cheap:
            return taken
        return (cheap, fingerprint(tensors))

    def needs_probe(self, like: torch.Tensor) -> bool:
        """Whether ``K`` must be probed for inputs like ``like``.

        Probes read without gradient are reused while the parameters and buffers are unchanged
        (inference then runs ``K`` on the data alone); with gradients they are read in every
        forward.
        """
        if not self.probing:
            return False
        key = self._reusable_key(like)
        needed = key is None or self._probes is None or key != self._probed_for
        self._key_taken = key if needed else None  # for store(), in this forward
        return needed

    def forget(self) -> None:
        """Drop the stored probes (the next forward probes ``K`` again)."""
        self._probes = self._probed_for = self._key_taken = None

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """``K x`` without correction ``(batch, channel, *space)``."""
        out = self.conv.forward(x)
        return out if self.skip is None else out + self.skip.forward(x)

    def spikes(self, like: torch.Tensor) -> torch.Tensor:
        """The probe batch: zero, then per corrected axis a unit first-wall and last-wall spike."""
        shape = tuple(like.shape[1:])
        key = (shape, like.dtype, like.device, torch.is_inference_mode_enabled())
        if self._spikes is None or self._spikes[0] != key:
            spikes = torch.zeros(
                (1 + 2 * len(self.axes), *shape), dtype=like.dtype, device=like.device
            )
            for k, axis in enumerate(self.axes):
                spikes[1 + 2 * k].select(axis, 0).fill_(1.0)
                spikes[2 + 2 * k].select(axis, -1).fill_(1.0)
            self._spikes = (key, spikes)
        return self._spikes[1]

    def probe(self, like: torch.Tensor, response: torch.Tensor | None = None) -> None:
        """Read the bias and, axis after axis, the probe columns and corner entries.

        ``response`` is ``K`` applied to :meth:`spikes` when the caller already has it (the hooks
        append the spikes to the data batch so that ``K`` runs once). Otherwise they come from
        the weights of a supported neuralop Fourier layer (:mod:`.spectral_probes`), or ``K``
        runs on the spikes here.
        """
        if not self.probing:
            return
        if response is None and probe_in_closed_form([self], like):
            return
        spikes = self.spikes(like)
        if response is None:
            response = self.plain(spikes)
        pairs = (len(self.axes), 2)
        bias = response[0]
        columns = (response[1:] - bias).unflatten(0, pairs).unbind(0)
        probes = read_axes(
            self.axes, bias, columns, spikes[1:].unflatten(0, pairs).unbind(0), self.pivot_floor
        )
        self.store(bias, probes, like)

    def store(self, bias: torch.Tensor, probes: tuple[AxisProbe, ...], like: torch.Tensor) -> None:
        """Keep the response to zero and the axes' probes, read for inputs like ``like``.

        Probes kept for later forwards are detached: with frozen weights they depend on nothing
        that needs a gradient, yet read with the data batch they carry its graph.
        """
        self._probed_for = self._reusable_key(like)
        if self._probed_for is not None:
            bias, probes = bias.detach(), tuple(probe.detach() for probe in probes)
        self._probes = (bias, probes)

    def release(self) -> None:
        """After a forward: drop probes read with gradients (the next forward reads them again;
        kept, they would hold this forward's graph, and ``copy.deepcopy`` refuses such tensors)."""
        if self._probed_for is None:
            self._probes = None

    def linear(self, x: torch.Tensor, kx: torch.Tensor | None = None) -> torch.Tensor:
        """The eliminated operator ``K̃ x`` before values are set; ``kx = K x`` if known."""
        kx = self.plain(x) if kx is None else kx
        if not self.probing:
            return kx
        if self._probes is None:
            self.probe(x)
        for probe in self._probes[1]:
            kx = probe.eliminate(kx, x)
        return kx

    def set_values(self, y: torch.Tensor, values: Sequence[Values | DirichletRows]) -> torch.Tensor:
        """``y`` with every channel's walls set, condition by condition (values per condition:
        a ``(left, right)`` pair, or for a Dirichlet condition its :class:`DirichletRows`)."""
        if len(values) != len(self.walls):
            raise ValueError(
                f"values must hold one pair per condition ({len(self.walls)}), got {len(values)}"
            )
        rows: list[DirichletRows] = []  # consecutive Dirichlet conditions, written together
        for wall, value in zip(self.walls, values, strict=True):
            if wall.is_identity:
                continue
            if isinstance(value, DirichletRows):
                rows.append(value)
                continue
            y, rows = write_rows(rows, y), []
            left, right = value
            left = left if wall.sides[0] else None
            right = right if wall.sides[1] else None
            y = set_walls(y, wall.axis, wall.kind, wall.grid.dx, left, right, precise=False)
        return write_rows(rows, y)

    def __call__(
        self,
        x: torch.Tensor,
        left: torch.Tensor | None = None,
        right: torch.Tensor | None = None,
        kx: torch.Tensor | None = None,
        values: Sequence[Values | DirichletRows] | None = None,
    ) -> torch.Tensor:
        """The corrected layer: eliminated operator, then wall values set.

        ``values``: one ``(left, right)`` pair per condition, each broadcast against a wall slice
        ``(batch, channel, *wall)``; ``left``/``right`` are the shorthand for a single condition.
        """
        if values is None:
            values = [(left, right)] * len(self.walls)
        return self.set_values(self.linear(x, kx), values)


def _attach(
    stack: ExitStack,
    layer: CorrectedLayer,
    values: Sequence[Values | DirichletRows],
    probes_ready: Callable[[torch.Tensor], bool] | None = None,
) -> None:
    """Hooks for one forward of one Fourier layer.

    ``probes_ready(x)``, called when the layer first runs, says whether the layer's probes for
    this forward are in place (kept, or read from the weights with those of the layers computed
    with it). Otherwise, when the layer needs probes, the probe spikes are appended to the batch
    of the conv (and skip) call, so ``K`` runs once on ``batch + probes`` inputs. The skip output
    is kept, and the conv output becomes ``K̃x − skip(x)`` so that the block's sum ``conv + skip``
    is the corrected layer. A model that calls conv before skip (``conv(x) + skip(x)``) gets skip
    run inside the conv hook; its own skip call then passes through unchanged.
    """
    kept: dict[str, torch.Tensor | None] = {}
    state: dict[str, bool] = {}

    def append(module, args):
        if state.get("skip_done"):  # conv ran first and ran skip itself: leave this call alone
            return None
        x = args[0]
        if "probing" not in state:  # decided by the first of the skip and conv calls
            ready = probes_ready is not None and probes_ready(x)
            state["probing"] = not ready and layer.needs_probe(x)
        return (torch.cat([x, layer.spikes(x)]), *args[1:]) if state["probing"] else None

    def split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not state["probing"]:
            return output, None
        batch = output.shape[0] - (1 + 2 * len(layer.axes))
        return output[:batch], output[batch:]

    if layer.skip is not None:

        def keep(module, args, output):
            if state.pop("skip_done", False):
                return None
            kept["skip"], kept["skip_probe"] = split(output)
            return kept["skip"]

        stack.enter_context(layer.skip.register_forward_pre_hook(append))
        stack.enter_context(layer.skip.register_forward_hook(keep))

    def correct(module, args, output):
        conv, probe = split(output)
        if layer.skip is not None and "skip" not in kept:  # skip not called yet: run it here
            kept["skip"], kept["skip_probe"] = split(layer.skip.forward(args[0]))
            state["skip_done"] = True
        x = args[0] if probe is None else args[0][: conv.shape[0]]
        skip = kept.pop("skip", None)
        kx = conv if skip is None else conv + skip
        if state.pop("probing"):
            skip_probe = kept.pop("skip_probe", None)
            layer.probe(x, probe if skip_probe is None else probe + skip_probe)
        y = layer(x, kx=kx, values=values)
        return y if skip is None else y - skip

    stack.enter_context(layer.conv.register_forward_pre_hook(append))
    stack.enter_context(layer.conv.register_forward_hook(correct))


def _hidden_values(
    conditions: Sequence[BoundaryCondition], values: Sequence[Values]
) -> list[Values | DirichletRows]:
    """The hidden layers' wall values: channel means, a Dirichlet condition's as its rows."""
    hidden: list[Values | DirichletRows] = []
    for condition, (left, right) in zip(conditions, values, strict=True):
        left, right = _channel_mean(left), _channel_mean(right)
        if condition.kind == "dirichlet":
            hidden.append(DirichletRows(condition.axis, left, right))
        else:
            hidden.append((left, right))
    return hidden


def _channel_mean(value: torch.Tensor | None) -> torch.Tensor | None:
    """Values per output channel averaged for the hidden channels (axis 1 of a wall slice)."""
    if value is None or value.ndim < 2 or value.shape[1] == 1:
        return value
    return value.mean(1, keepdim=True)


def _fno_class():
    try:
        from neuralop.models import FNO
    except ImportError:  # pragma: no cover - neuralop is a dependency
        return None
    return FNO


def fno_support(model: nn.Module) -> str | None:
    """Why a :class:`neuralop.models.FNO` cannot take the kernel correction, or ``None``."""
    blocks = model.fno_blocks
    if model.domain_padding is not None:
        return "the FNO uses domain padding (the boundary nodes move inside the padded domain)"
    if blocks.norm is not None:
        return "the FNO normalises inside its Fourier layers"
    if blocks.stabilizer is not None:
        return "the FNO applies a stabiliser before its spectral convolutions"
    if blocks.resolution_scaling_factor is not None:
        return "the FNO rescales the resolution inside its Fourier layers"
    if blocks.complex_data:
        return "the FNO works on complex data"
    if blocks.in_channels != blocks.out_channels:
        return "the FNO's Fourier layers change the number of channels"
    return None


@dataclass(frozen=True)
class OperatorView:
    """What the operator seam needs of a model: its layers, spatial axes and output channels
    (``fno``: the model, when it is a neuralop FNO)."""

    layers: tuple[KernelLayer, ...]
    n_dim: int
    out_channels: int
    fno: nn.Module | None = None


def operator_view(model: nn.Module) -> tuple[OperatorView | None, str]:
    """The model's :class:`OperatorView`, or ``None`` and what the model lacks for the seam."""
    fno = _fno_class()
    if fno is not None and isinstance(model, fno):
        reason = fno_support(model)
        if reason is not None:
            return None, reason
        skips = model.fno_blocks.fno_skips
        layers = tuple(
            KernelLayer(conv, None if skips is None else skips[i])
            for i, conv in enumerate(model.fno_blocks.convs)
        )
        return OperatorView(layers, model.n_dim, model.out_channels, model), ""
    if isinstance(model, OperatorModel):
        layers = tuple(KernelLayer(*layer) for layer in model.kernel_layers())
        if not layers:
            return None, "kernel_layers() lists no layer"
        return OperatorView(layers, int(model.n_dim), int(model.out_channels)), ""
    return None, (
        "no kernel layers: it is neither a neuralop FNO nor offers kernel_layers(), n_dim and "
        "out_channels (physml.constraints.OperatorModel)"
    )


class OperatorCorrection:
    """BOON's kernel correction of every layer of an operator model, for a list of conditions.

    Built once at wrap time; :meth:`attached` installs the hooks for one forward with that
    call's boundary values, one ``(left, right)`` pair per condition (see
    :meth:`.BoundaryCondition.values`), each shaped for the output. ``groups``: the layers whose
    probes come from their weights (:mod:`.spectral_probes`), by signature; a group is read
    together, once per forward, when its first layer runs.
    """

    def __init__(
        self, view: OperatorView, conditions: Sequence[BoundaryCondition], pivot_floor: float
    ) -> None:
        for condition in conditions:
            if condition.axis < -view.n_dim:
                raise ConstraintError(
                    f"axis {condition.axis} does not exist: the operator has {view.n_dim} spatial "
                    f"ax{'is' if view.n_dim == 1 else 'es'} (axes -1 to {-view.n_dim})"
                )
        self.view = view
        self.conditions = tuple(conditions)
        self.layers = [
            CorrectedLayer(layer.conv, layer.skip, self.conditions, pivot_floor)
            for layer in view.layers
        ]
        groups: dict[tuple, list[int]] = {}
        for position, layer in enumerate(self.layers):
            if layer.probing and layer.no_closed_form is None:
                groups.setdefault(signature(layer.conv, layer.skip), []).append(position)
        self.groups = [tuple(self.layers[i] for i in positions) for positions in groups.values()]
        self._group_of = {i: g for g, positions in enumerate(groups.values()) for i in positions}

    def check_input(self, x: object) -> None:
        """``x`` must be ``(batch, channel, *space)`` with each condition's grid on its axis; for
        a neuralop FNO also in its weights' dtype, the weights consistent
        (``fno_dtype_problem``)."""
        sizes = {c.axis: c.grid.n for c in self.conditions}
        expected = ["batch", "channel"] + ["n"] * self.view.n_dim
        for axis, n in sizes.items():
            expected[axis] = str(n)
        ok = (
            isinstance(x, torch.Tensor)
            and x.ndim == 2 + self.view.n_dim
            and all(x.shape[axis] == n for axis, n in sizes.items())
        )
        if not ok:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
            raise ValueError(f"x must be a tensor ({', '.join(expected)}), got {got}")
        problem = None if self.view.fno is None else fno_dtype_problem(self.view.fno, x)
        if problem is not None:
            raise TypeError(problem)

    @staticmethod
    def check_finite_input(x: torch.Tensor) -> None:
        """Raise when ``x`` holds NaN or inf (called when the output does: NaN in ``x`` reaches
        every output node through the spectral transforms, so the output check sees it)."""
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ConstraintError("x contains NaN or inf values")

    def output_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], self.view.out_channels, *x.shape[2:])

    def hidden_values(self, values: Sequence[Values]) -> list[Values | DirichletRows]:
        """The hidden layers' values for the output's ``values`` (channel means)."""
        return _hidden_values(self.conditions, values)

    @contextmanager
    def attached(
        self, values: Sequence[Values], hidden: Sequence[Values | DirichletRows] | None = None
    ) -> Iterator[None]:
        """The layers corrected while the block runs (hidden channels get the channel mean of
        ``values``, or ``hidden`` when given by :meth:`hidden_values`)."""
        if self.layers[0].identity:
            yield
            return
        hidden = self.hidden_values(values) if hidden is None else hidden
        ready: dict[int, bool] = {}  # per group: its probes are in place for this forward

        def probes_ready(group: int, x: torch.Tensor) -> bool:
            """Kept from an earlier forward, else read now from the weights (if they can be)."""
            if group not in ready:
                layers = self.groups[group]
                needed = any(layer.needs_probe(x) for layer in layers)
                ready[group] = not needed or probe_in_closed_form(layers, x)
            return ready[group]

        with ExitStack() as stack:
            for position, layer in enumerate(self.layers):
                stack.callback(layer.release)
                group = self._group_of.get(position)
                _attach(
                    stack, layer, hidden, None if group is None else partial(probes_ready, group)
                )
            yield


def install(
    model: nn.Module,
    conditions: Sequence[BoundaryCondition],
    kernel: bool | str,
    pivot_floor: float,
) -> OperatorCorrection | None:
    """The operator correction for ``model`` (``None``: output correction only).

    ``kernel="auto"`` corrects the layers of a model offering the seam, warns for an FNO that
    cannot take it, and leaves other models to the output seam; ``True`` refuses a model that does
    not offer it; ``False`` never corrects the layers.
    """
    if kernel not in (True, False, "auto"):
        raise ValueError(f"kernel must be True, False or 'auto', got {kernel!r}")
    if not kernel or not conditions:
        return None
    view, reason = operator_view(model)
    if view is None:
        name = type(model).__name__
        if kernel is True:
            raise ConstraintError(
                f"constrain: {name} cannot take {type(conditions[0]).__name__} at the operator "
                f"seam: {reason}"
            )
        fno = _fno_class()
        if (fno is not None and isinstance(model, fno)) or hasattr(model, "kernel_layers"):
            warnings.warn(
                f"constrain: {name} cannot take the kernel correction ({reason}); only the "
                "output is corrected",
                stacklevel=3,
            )
        return None
    return OperatorCorrection(view, conditions, pivot_floor)
