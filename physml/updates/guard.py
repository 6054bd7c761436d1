"""A guarded surrogate: the surrogate's answer where every check passes, the solver's elsewhere.

``guard(surrogate, checks, fallback)`` runs the surrogate on a batch, scores every prediction with
every check (:mod:`physml.updates.checks`) and sends the samples where one fails to ``fallback``
(e.g. the ``pdes`` solver of the problem). It reports per sample which check fired, keeps the
inputs it sent with the solver's answers — new training pairs where the surrogate failed — and
:func:`refine` retrains on them and measures again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pdes.checks import positive_int

from .checks import Check, point_prediction

Model = Callable[[torch.Tensor], object]


@dataclass(frozen=True)
class GuardResult:
    """One guarded batch.

    ``output`` ``(batch, ...)``: the answers, in the surrogate's dtype and device; ``fired`` and
    ``scores`` ``(batch, checks)``: which check failed where and its score (float64); ``names``
    the checks' names in column order; ``sent_inputs`` and ``solved`` the inputs sent to the
    fallback and its answers (the fallback's own dtype), in batch order; ``non_finite``
    ``(batch,)``: the surrogate answered NaN or inf there (always sent to the fallback, reported
    as ``"finite"``).
    """

    output: torch.Tensor
    fired: torch.Tensor
    scores: torch.Tensor
    names: tuple[str, ...]
    sent_inputs: torch.Tensor
    solved: torch.Tensor | None
    non_finite: torch.Tensor | None = None

    @property
    def fallback(self) -> torch.Tensor:
        """``(batch,)`` booleans: the samples answered by the fallback."""
        fired = self.fired.any(1)
        return fired if self.non_finite is None else fired | self.non_finite

    @property
    def surrogate_fraction(self) -> float:
        """The share of the batch answered by the surrogate."""
        return 1.0 - float(self.fallback.to(torch.float64).mean())

    def report(self) -> list[dict]:
        """Per sample: who answered, which checks fired and every check's score."""
        rows = []
        for i in range(self.fired.shape[0]):
            hits = zip(self.names, self.fired[i].tolist(), strict=True)
            fired = [name for name, hit in hits if hit]
            if self.non_finite is not None and bool(self.non_finite[i]):
                fired.insert(0, "finite")
            rows.append(
                {
                    "sample": i,
                    "answered_by": "fallback" if fired else "surrogate",
                    "fired": fired,
                    "scores": dict(zip(self.names, self.scores[i].tolist(), strict=True)),
                }
            )
        return rows

    def counts(self) -> dict[str, int]:
        """How many samples each check failed (a sample may fail several), and ``"finite"``
        where the surrogate answered NaN or inf somewhere."""
        counts = dict(zip(self.names, self.fired.sum(0).tolist(), strict=True))
        if self.non_finite is not None and bool(self.non_finite.any()):
            counts = {"finite": int(self.non_finite.sum()), **counts}
        return counts


class Guard:
    """A surrogate answering only where its checks pass; see :func:`guard`."""

    def __init__(self, surrogate: Model, checks: Sequence[Check], fallback: Model) -> None:
        if not callable(surrogate):
            raise TypeError(f"surrogate must be callable(inputs), got {type(surrogate).__name__}")
        if not callable(fallback):
            raise TypeError(f"fallback must be callable(inputs), got {type(fallback).__name__}")
        if isinstance(checks, Check) or not isinstance(checks, Sequence):
            raise TypeError(f"checks must be a list of Check objects, got {type(checks).__name__}")
        bad = [type(c).__name__ for c in checks if not isinstance(c, Check)]
        if bad:
            raise TypeError(f"checks must hold physml.updates.Check objects, got {bad}")
        names = [c.name for c in checks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"checks must have distinct names, {repeated} repeat")
        self.surrogate, self.checks, self.fallback = surrogate, list(checks), fallback
        self.sent: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, inputs: torch.Tensor) -> GuardResult:
        """Answer ``inputs`` ``(batch, ...)``; the samples sent to the fallback are kept."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim == 0 or inputs.shape[0] == 0:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"inputs must be a non-empty batch tensor (batch, ...), got {got}")
        batch = inputs.shape[0]
        with torch.no_grad():
            prediction = self.surrogate(inputs)
            point = point_prediction(prediction)
            if point.ndim == 0 or point.shape[0] != batch:
                raise ValueError(
                    f"the surrogate must answer each of the {batch} inputs, got shape "
                    f"{tuple(point.shape)}"
                )
            results = [check(inputs, prediction) for check in self.checks]
        fired = torch.stack([r[0] for r in results], 1) if results else _none(batch, point.device)
        scores = (
            torch.stack([r[1] for r in results], 1)
            if results
            else torch.zeros(batch, 0, dtype=torch.float64, device=point.device)
        )
        non_finite = ~torch.isfinite(point.reshape(batch, -1)).all(1)  # never a trusted answer
        fails = fired.any(1) | non_finite.to(fired.device)
        output, sent_inputs, solved = point, inputs[fails.to(inputs.device)], None
        if fails.any():
            solved = self.fallback(sent_inputs)
            expected = (int(fails.sum()), *point.shape[1:])
            if not isinstance(solved, torch.Tensor) or tuple(solved.shape) != expected:
                got = tuple(solved.shape) if isinstance(solved, torch.Tensor) else type(solved)
                raise ValueError(
                    f"fallback must answer the {expected[0]} inputs sent to it with a tensor of "
                    f"shape {expected}, got {got}"
                )
            output = point.clone()
            output[fails.to(point.device)] = solved.to(point.dtype).to(point.device)
            self.sent.append((sent_inputs, solved))
        names = tuple(c.name for c in self.checks)
        return GuardResult(output, fired, scores, names, sent_inputs, solved, non_finite)

    def collected(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(inputs, answers)`` the fallback gave since the last :meth:`clear` — training pairs
        where the surrogate failed, ready to append to a training set; ``None`` if none."""
        if not self.sent:
            return None
        return torch.cat([x for x, _ in self.sent]), torch.cat([y for _, y in self.sent])

    def clear(self) -> None:
        """Forget the inputs sent so far."""
        self.sent.clear()


def _none(batch: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(batch, 0, dtype=torch.bool, device=device)


def guard(surrogate: Model, checks: Sequence[Check], fallback: Model) -> Guard:
    """``surrogate`` answering where every check of ``checks`` passes, ``fallback`` elsewhere.

    Args:
        surrogate: ``surrogate(inputs) -> (batch, ...)`` (a tensor, or a Gaussian or Ensemble
            whose mean is the answer and whose spread the checks may read); run without gradient.
        checks: :class:`~physml.updates.checks.Check` objects with distinct names (an empty list
            answers with the surrogate everywhere).
        fallback: ``fallback(inputs[failed]) -> (failed, ...)``, e.g. the problem's solver; called
            only on the samples where a check failed, once per batch.
    """
    return Guard(surrogate, checks, fallback)


@dataclass(frozen=True)
class RefineRound:
    """One measurement of :func:`refine`: the surrogate's share and how often each check fired."""

    round: int
    surrogate_fraction: float
    sent: int
    fired: dict[str, int]


def refine(
    guarded: Guard,
    inputs: torch.Tensor,
    retrain: Callable[[torch.Tensor, torch.Tensor], Model | None],
    rounds: int = 1,
) -> list[RefineRound]:
    """Measure, retrain on what the fallback answered, measure again, ``rounds`` times.

    Each round runs ``guarded`` on ``inputs`` and hands that round's ``(sent inputs, solver
    answers)`` to ``retrain(x, y)``, which updates the surrogate in place or returns a new one
    (it replaces ``guarded.surrogate``). Stops early when nothing was sent. Returns every
    measurement, the last after the last retraining.
    """
    if not isinstance(guarded, Guard):
        raise TypeError(f"guarded must be a Guard (physml.updates.guard), got {type(guarded)}")
    if not callable(retrain):
        raise TypeError(f"retrain must be callable(x, y), got {type(retrain).__name__}")
    positive_int("rounds", rounds)
    history = []
    for step in range(rounds + 1):
        result = guarded(inputs)
        sent = int(result.fallback.sum())
        history.append(RefineRound(step, result.surrogate_fraction, sent, result.counts()))
        if step == rounds or sent == 0:
            break
        replaced = retrain(result.sent_inputs, result.solved)
        if replaced is not None:
            if not callable(replaced):
                raise TypeError(f"retrain must return a surrogate or None, got {type(replaced)}")
            guarded.surrogate = replaced
    return history
