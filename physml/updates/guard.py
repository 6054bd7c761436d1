"""A guarded surrogate: the surrogate's answer where every check passes, the solver's elsewhere.

``guard(surrogate, checks, fallback)`` runs the surrogate on a batch, scores every finite
prediction with every check (:mod:`physml.updates.checks`) and sends the samples where one fails,
or where the prediction holds NaN or inf, to ``fallback`` (e.g. the ``pdes`` solver of the
problem). It reports per sample which check fired, keeps the
inputs it sent with the solver's answers — new training pairs where the surrogate failed — and
:func:`refine` retrains on them and measures again.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pdes.checks import positive_int

from .._checks import NonFiniteError
from ..errors import user_stacklevel
from ..outputs import Ensemble, Gaussian, LowRankCovariance
from .checks import Check, point_prediction

Model = Callable[[torch.Tensor], object]


class NonFiniteAnswer(NonFiniteError):
    """A surrogate's NaN or inf answer to some samples of a batch, which its output (a Gaussian or
    an Ensemble) cannot hold (``message`` says so): ``samples`` their indices in the batch.
    :class:`Guard` sends them to the fallback and answers the others with ``answer`` (the output
    for the other samples, in batch order), or, where that is ``None``, by asking the surrogate
    again for them."""

    def __init__(self, message: str, samples: Sequence[int], answer: object = None) -> None:
        super().__init__(message)
        self.samples = tuple(int(i) for i in samples)
        self.answer = answer


@dataclass(frozen=True)
class GuardResult:
    """One guarded batch.

    ``output`` ``(batch, ...)``: the answers, whoever gave them, in one dtype in every batch: the
    surrogate's (the fallback's answers cast to it), or ``torch.promote_types`` of it and the
    guard's ``fallback_dtype`` where one is given; where the surrogate answered no sample, its
    dtype is that of its last answer to the guard, and before its first one that of its first
    floating-point parameter or buffer (a :class:`torch.nn.Module`; a plain callable has none:
    the output is then in ``fallback_dtype``, without one in the fallback's own dtype). On the
    surrogate's device (the fallback's where the surrogate answered none); ``fired`` and
    ``scores`` ``(batch, checks)``: which check failed where and its score (float64); ``names``
    the checks' names in column order; ``sent_inputs`` and ``solved`` the inputs sent to the
    fallback and its answers (the fallback's own dtype), in batch order, without gradient;
    ``non_finite`` ``(batch,)``: the surrogate answered NaN or inf there (always sent to the
    fallback, reported as ``"finite"``, not scored: ``fired`` False, ``scores`` NaN);
    ``fallback_non_finite``: see below. A Gaussian or Ensemble cannot hold NaN or inf, so a
    surrogate returning one refuses those samples (:class:`NonFiniteAnswer`, or any
    :class:`~physml._checks.NonFiniteError`): they are ``non_finite`` too, and the others answered
    as usual.
    """

    output: torch.Tensor
    fired: torch.Tensor
    scores: torch.Tensor
    names: tuple[str, ...]
    sent_inputs: torch.Tensor
    solved: torch.Tensor | None
    non_finite: torch.Tensor | None = None
    fallback_non_finite: torch.Tensor | None = None
    """Where the fallback answered NaN or inf ``(batch,)``, or values beyond the range of the
    output's dtype, which the cast to it overflows to inf (a warning says how many)."""

    @property
    def fallback(self) -> torch.Tensor:
        """The samples answered by the fallback, ``(batch,)`` booleans."""
        fired = self.fired.any(1)
        return fired if self.non_finite is None else fired | self.non_finite

    @property
    def surrogate_fraction(self) -> float:
        """The share of the batch answered by the surrogate."""
        return 1.0 - float(self.fallback.to(torch.float64).mean())

    def report(self) -> list[dict]:
        """Per sample: ``answered_by`` (``"surrogate"`` or ``"fallback"``), the checks that
        ``fired`` and ``scores``, every check's score of the inputs and the surrogate's answer
        to them (NaN where that answer was NaN or inf): for a sample the fallback answered the
        scores show why it was sent, not the quality of the fallback's answer, which no check
        scores."""
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
    """A surrogate answering only where its checks pass; see :func:`guard`. ``fallback``: a
    callable of the inputs the checks refused ``(k, ...)``, answering them in the surrogate's
    output shape (the problem's numerical solver); ``fallback_dtype``: its answers' dtype in the
    output (``None``: the surrogate's). ``surrogate_dtype``
    is the dtype of the surrogate's last answer (``None`` before its first: the output's dtype
    then comes from the surrogate's first floating-point parameter or buffer where it is a
    :class:`torch.nn.Module`)."""

    def __init__(
        self,
        surrogate: Model,
        checks: Sequence[Check],
        fallback: Model,
        fallback_dtype: torch.dtype | None = None,
    ) -> None:
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
        floating = isinstance(fallback_dtype, torch.dtype) and fallback_dtype.is_floating_point
        if fallback_dtype is not None and not floating:
            raise TypeError(
                f"fallback_dtype must be None or a floating-point torch dtype (e.g. "
                f"torch.float64), got {fallback_dtype!r}"
            )
        self.surrogate, self.checks, self.fallback = surrogate, list(checks), fallback
        self.fallback_dtype = fallback_dtype
        self.surrogate_dtype: torch.dtype | None = None
        self.sent: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, inputs: torch.Tensor) -> GuardResult:
        """Answer ``inputs`` ``(batch, ...)``; the samples sent to the fallback are kept."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim == 0 or inputs.shape[0] == 0:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"inputs must be a non-empty batch tensor (batch, ...), got {got}")
        with torch.no_grad():
            prediction, answered = self._answer(inputs)
            point = None if prediction is None else _point(prediction, int(answered.sum()))
            scored = answered.clone()
            if point is not None:  # never trust NaN or inf
                scored[answered] = _finite_rows(point).to(scored.device)
            fired, scores = self._scores(inputs, prediction, answered, scored)
        non_finite = ~scored
        fails = fired.any(1) | non_finite
        if point is not None:
            self.surrogate_dtype = point.dtype
        dtype = self._output_dtype()
        output = None
        if point is not None:
            output = _spread(point.detach().to(dtype), answered.to(point.device), torch.nan)
        sent_inputs, solved = inputs[fails].detach(), None
        fallback_non_finite = torch.zeros_like(fails)
        if fails.any():
            solved, answers, finite = self._solve(sent_inputs, point, dtype)
            fallback_non_finite[fails] = ~finite.to(fails.device)
            if output is None:
                output = answers
            else:
                output = output.clone()
                output[fails.to(output.device)] = answers.to(output.device)
            self.sent.append((sent_inputs, solved))
        names = tuple(c.name for c in self.checks)
        return GuardResult(
            output, fired, scores, names, sent_inputs, solved, non_finite, fallback_non_finite
        )

    def _scores(
        self,
        inputs: torch.Tensor,
        prediction: object,
        answered: torch.Tensor,
        scored: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fired, scores)`` ``(batch, checks)`` of the ``scored`` samples (answered, finite:
        only a tensor answer can hold NaN or inf); False and NaN elsewhere."""
        batch, count, device = inputs.shape[0], len(self.checks), inputs.device
        fired = torch.zeros(batch, count, dtype=torch.bool, device=device)
        scores = torch.full((batch, count), torch.nan, dtype=torch.float64, device=device)
        if count and scored.any():
            finite = scored[answered]
            checked = prediction if finite.all() else prediction[finite.to(prediction.device)]
            asked = inputs if scored.all() else inputs[scored]
            results = [check(asked, checked) for check in self.checks]
            fired[scored] = torch.stack([r[0].to(device) for r in results], 1)
            scores[scored] = torch.stack([r[1].to(device) for r in results], 1)
        return fired, scores

    def _output_dtype(self) -> torch.dtype | None:
        """The output's dtype: the surrogate's, promoted with ``fallback_dtype`` where one is
        given; ``fallback_dtype`` where the surrogate's is not known yet (``None``: the
        fallback's)."""
        surrogate_dtype = self._surrogate_dtype()
        if surrogate_dtype is None or self.fallback_dtype is None:
            return surrogate_dtype or self.fallback_dtype
        return torch.promote_types(surrogate_dtype, self.fallback_dtype)

    def _surrogate_dtype(self) -> torch.dtype | None:
        """The dtype of the surrogate's last answer; before its first, that of its first
        floating-point parameter or buffer (``None`` for a plain callable)."""
        if self.surrogate_dtype is not None or not isinstance(self.surrogate, torch.nn.Module):
            return self.surrogate_dtype
        tensors = itertools.chain(self.surrogate.parameters(), self.surrogate.buffers())
        return next((t.dtype for t in tensors if t.is_floating_point()), None)

    def _solve(
        self, sent: torch.Tensor, point: torch.Tensor | None, dtype: torch.dtype | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fallback's answers to ``sent``, checked (one per sample, of the surrogate's shape
        where it answered, in a dtype the output's ``dtype`` holds where ``fallback_dtype`` is
        given), without gradient, as given and cast to ``dtype`` (``None``: kept), and the
        ``(sent,)`` samples whose cast answers hold no NaN or inf (a warning counts the
        others)."""
        solved = self.fallback(sent)
        rest = tuple(point.shape[1:]) if point is not None else None
        if rest is None and isinstance(solved, torch.Tensor) and solved.ndim:
            rest = tuple(solved.shape[1:])  # nothing answered: the fallback's shape
        expected = (sent.shape[0], *(rest or ()))
        if not isinstance(solved, torch.Tensor) or tuple(solved.shape) != expected:
            got = tuple(solved.shape) if isinstance(solved, torch.Tensor) else type(solved)
            raise ValueError(
                f"fallback must answer the {expected[0]} inputs sent to it with a tensor of "
                f"shape {expected}, got {got}"
            )
        solved = solved.detach()
        if self.fallback_dtype is not None and torch.promote_types(dtype, solved.dtype) != dtype:
            widened = torch.promote_types(self._surrogate_dtype() or solved.dtype, solved.dtype)
            raise TypeError(
                f"the fallback answered in {solved.dtype}, which the output's {dtype} cannot "
                f"hold: pass guard(..., fallback_dtype={solved.dtype}) (the output is then in "
                f"{widened}), or have the fallback answer in {dtype}"
            )
        answers = solved.to(dtype or solved.dtype)
        finite, kept = _finite_rows(solved), _finite_rows(answers)
        sent_count, problems = sent.shape[0], []
        if not bool(finite.all()):
            problems.append(
                f"the fallback answered NaN or inf to {int((~finite).sum())} of the {sent_count} "
                "samples sent to it"
            )
        overflowed = int((finite & ~kept).sum())
        if overflowed:
            problems.append(
                f"the fallback's answers to {overflowed} of the {sent_count} samples sent to it "
                f"overflow to inf in the output's {dtype}, beyond its range (pass guard(..., "
                f"fallback_dtype={solved.dtype}) to keep them)"
            )
        if problems:
            warnings.warn(
                f"{'; '.join(problems)}: see GuardResult.fallback_non_finite",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        return solved, answers, kept

    def _answer(self, inputs: torch.Tensor) -> tuple[object | None, torch.Tensor]:
        """The surrogate's prediction and the ``(batch,)`` samples it is for: all of them, unless
        the surrogate refuses NaN or inf answers (a :class:`~physml._checks.NonFiniteError`);
        then without the samples it names (:class:`NonFiniteAnswer`) or, halving the batch, those
        it refuses alone. ``None`` where it refuses every sample. Each sample it answers is
        answered once: the halves' answers are joined, not asked for again."""
        answered = torch.ones(inputs.shape[0], dtype=torch.bool, device=inputs.device)
        while bool(answered.any()):
            asked = inputs if bool(answered.all()) else inputs[answered]
            try:
                return self.surrogate(asked), answered
            except NonFiniteError as error:
                refused, answers = self._refused(asked, error)
                if not bool(refused.any()):
                    raise
                answered[answered.nonzero().flatten()[refused]] = False
                joined = _joined(answers) if answers else None
                if joined is not None:
                    return joined, answered
        return None, answered

    def _refused(
        self, inputs: torch.Tensor, error: NonFiniteError
    ) -> tuple[torch.Tensor, list[object] | None]:
        """``(batch,)`` booleans: the samples of ``inputs`` the surrogate refused with ``error``
        (a batch of one: itself; else those :class:`NonFiniteAnswer` names, or those of each half
        it refuses, found the same way), and the surrogate's answers to the others, in batch
        order (``None`` after a :class:`NonFiniteAnswer` at the top: they are still to ask)."""
        batch = inputs.shape[0]
        refused = torch.zeros(batch, dtype=torch.bool, device=inputs.device)
        if isinstance(error, NonFiniteAnswer):
            wrong = [i for i in error.samples if not 0 <= i < batch]
            if wrong:
                raise ValueError(
                    f"the surrogate's NonFiniteAnswer must name samples of its batch of {batch}, "
                    f"got {wrong}"
                ) from error
            refused[list(error.samples)] = True
            if error.answer is None:
                return refused, None
            _check_answer(error.answer, int((~refused).sum()))
            return refused, [error.answer]
        if batch == 1:
            return ~refused, []
        half, answers = batch // 2, []
        for part in (slice(0, half), slice(half, batch)):
            inner, found = self._ask(inputs[part])
            refused[part] = inner
            answers.extend(found)
        return refused, answers

    def _ask(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[object]]:
        """``inputs``, a part of a refused batch, asked: the ``(part,)`` samples the surrogate
        refuses and its answers to the others, in order (after a :class:`NonFiniteAnswer`,
        which holds no answers, those it did not name are asked once more)."""
        try:
            answer = self.surrogate(inputs)
        except NonFiniteError as error:
            refused, answers = self._refused(inputs, error)
            if not bool(refused.any()):  # refused as a batch, no sample alone: as at the top
                raise
            if answers is not None:
                return refused, answers
            if bool(refused.all()):
                return refused, []
            kept = (~refused).nonzero().flatten()
            inner, answers = self._ask(inputs[kept])
            refused[kept[inner]] = True
            return refused, answers
        return torch.zeros(inputs.shape[0], dtype=torch.bool, device=inputs.device), [answer]

    def collected(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(inputs, answers)`` the fallback gave since the last :meth:`clear` — training pairs
        where the surrogate failed, ready to append to a training set; ``None`` if none. The
        answers are kept as the fallback gave them, NaN or inf included (flagged in
        :attr:`GuardResult.fallback_non_finite`, with those the output's dtype cannot hold;
        :func:`refine` leaves them out): drop those rows before training on them."""
        if not self.sent:
            return None
        return torch.cat([x for x, _ in self.sent]), torch.cat([y for _, y in self.sent])

    def clear(self) -> None:
        """Forget the inputs sent so far."""
        self.sent.clear()


def _finite_rows(values: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` booleans: the samples of ``values`` ``(batch, ...)`` free of NaN and inf."""
    return torch.isfinite(values.reshape(values.shape[0], -1)).all(1)


def _point(prediction: object, batch: int) -> torch.Tensor:
    """The surrogate's answer to its ``batch`` samples: a floating-point ``(batch, ...)``."""
    point = point_prediction(prediction)
    if point.ndim == 0 or point.shape[0] != batch:
        raise ValueError(
            f"the surrogate must answer each of the {batch} inputs, got shape {tuple(point.shape)}"
        )
    if not point.is_floating_point():
        raise TypeError(f"the surrogate must answer in a floating-point dtype, got {point.dtype}")
    return point


def _check_answer(answer: object, batch: int) -> None:
    """A :class:`NonFiniteAnswer`'s ``answer`` must answer the ``batch`` samples it did not name."""
    got = point_prediction(answer).shape
    if len(got) == 0 or got[0] != batch:
        raise ValueError(
            f"the surrogate's NonFiniteAnswer.answer must answer the {batch} samples it does not "
            f"name, got an answer of shape {tuple(got)}"
        )


def _joined(answers: list[object]) -> object | None:
    """The surrogate's answers to consecutive parts of a batch as one answer to them all
    (tensors, Gaussians or Ensembles joined along the batch axis); ``None`` where they cannot be
    (different kinds, shapes, dtypes or devices, or a mean ``(batch,)``, whose covariance may
    couple the samples): the surrogate is then asked again."""
    if len(answers) == 1:
        return answers[0]
    if all(isinstance(a, torch.Tensor) for a in answers):
        return _cat(answers, 0)
    if all(isinstance(a, Ensemble) for a in answers):
        samples = _cat([a.samples for a in answers], 1)
        return None if samples is None else Ensemble(samples)
    if not all(isinstance(a, Gaussian) and a.mean.ndim > 1 for a in answers):
        return None
    mean, covs = _cat([a.mean for a in answers], 0), [a.cov for a in answers]
    cov = None
    if all(isinstance(c, torch.Tensor) for c in covs):
        cov = _cat(covs, 0)
    elif all(isinstance(c, LowRankCovariance) for c in covs):
        diagonal = {c.base_is_diagonal for c in covs}
        base, factor = _cat([c.base for c in covs], 0), _cat([c.factor for c in covs], 0)
        if len(diagonal) == 1 and base is not None and factor is not None:
            cov = LowRankCovariance(base, factor, diagonal.pop())
    return (
        None if mean is None or cov is None else Gaussian(mean, cov, answers[0].is_diagonal or None)
    )


def _cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor | None:
    """``parts`` joined along ``dim`` where they agree on every other axis, dtype and device."""
    first = parts[0]
    rest = [(p.ndim, p.dtype, p.device, p.shape[:dim] + p.shape[dim + 1 :]) for p in parts]
    if first.ndim <= dim or len(set(rest)) != 1:
        return None
    return torch.cat(parts, dim)


def _spread(rows: torch.Tensor, answered: torch.Tensor, fill: object) -> torch.Tensor:
    """``rows`` ``(answered, ...)`` at the ``answered`` samples of the batch, ``fill`` elsewhere."""
    if bool(answered.all()):
        return rows
    shape = (answered.shape[0], *rows.shape[1:])
    out = torch.full(shape, fill, dtype=rows.dtype, device=rows.device)
    out[answered.to(rows.device)] = rows
    return out


def guard(
    surrogate: Model,
    checks: Sequence[Check],
    fallback: Model,
    fallback_dtype: torch.dtype | None = None,
) -> Guard:
    """``surrogate`` answering where every check of ``checks`` passes, ``fallback`` elsewhere.

    Args:
        surrogate: ``surrogate(inputs) -> (batch, ...)`` (a tensor, or a Gaussian or Ensemble
            whose mean is the answer and whose spread the checks may read), in a floating-point
            dtype; run without gradient. Its NaN or inf answers go to ``fallback`` unscored (the
            checks see only the finite answers, a subset of the batch); one returning a Gaussian
            or Ensemble, which cannot hold them, raises a :class:`NonFiniteAnswer` naming those
            samples, and is asked again for the others (else the batch is halved to find them,
            and the halves' answers are kept: each sample answered once, so each answer must not
            depend on the other samples of its batch). A batch refused with no sample refused
            alone raises.
        checks: :class:`~physml.updates.checks.Check` objects with distinct names (an empty list
            answers with the surrogate everywhere).
        fallback: ``fallback(inputs[failed]) -> (failed, ...)``, e.g. the problem's solver; called
            only on the samples where a check failed, once per batch (with autograd as the
            caller has it, so a Newton or adjoint solver may use it); its answers are kept
            without gradient.
        fallback_dtype: ``None`` (the default): the output is in the surrogate's dtype, the
            guard a drop-in for the surrogate, and the fallback's answers are cast to it (lossy
            for a low-precision surrogate: a float32 or bfloat16 one rounds the solver's
            float64). A floating-point dtype, the one the fallback answers in (e.g.
            ``torch.float64``, that of the ``pdes`` solvers), keeps the fallback's answers
            exact: the output is then in ``torch.promote_types`` of it and the surrogate's dtype
            (a float32 surrogate and a float64 solver: float64), and a fallback answering in a
            dtype that does not fit raises ``TypeError``. Without one, the cast may overflow: a
            solver's answer beyond the surrogate dtype's range (65504 for float16) becomes inf,
            flagged in :attr:`GuardResult.fallback_non_finite` with a warning. Either way the
            dtype is the same in every batch, whoever answered. A batch that comes before the
            surrogate's first answer to this guard (every sample refused) takes the surrogate's
            dtype from its first floating-point parameter or buffer where it is a
            :class:`torch.nn.Module`; the one exception, a plain callable surrogate (or a
            module without one): that batch is in ``fallback_dtype``, or without one in the
            fallback's own dtype. Later batches the surrogate refuses entirely keep the dtype
            of its last answer.
    """
    return Guard(surrogate, checks, fallback, fallback_dtype)


@dataclass(frozen=True)
class RefineRound:
    """One measurement of :func:`refine`: ``round`` (0 before any retraining), the surrogate's
    share of the inputs ``surrogate_fraction``, ``sent`` the samples the fallback answered and
    ``fired`` how many samples each check failed (:meth:`GuardResult.counts`)."""

    round: int
    surrogate_fraction: float
    sent: int
    fired: dict[str, int]


def _finite_pairs(result: GuardResult) -> tuple[torch.Tensor, torch.Tensor]:
    """``result``'s ``(sent inputs, fallback answers)`` without the NaN or inf answers (a warning
    counts them)."""
    bad = result.fallback_non_finite[result.fallback]
    if not bool(bad.any()):
        return result.sent_inputs, result.solved
    warnings.warn(
        f"refine leaves out {int(bad.sum())} of the {bad.shape[0]} samples sent to the fallback: "
        "it answered them with NaN or inf, or beyond the range of the output's dtype",
        RuntimeWarning,
        stacklevel=user_stacklevel(),
    )
    return result.sent_inputs[~bad], result.solved[~bad.to(result.solved.device)]


def refine(
    guarded: Guard,
    inputs: torch.Tensor,
    retrain: Callable[[torch.Tensor, torch.Tensor], Model | None],
    rounds: int = 1,
) -> list[RefineRound]:
    """Measure, retrain on what the fallback answered, measure again, ``rounds`` times.

    Each round runs ``guarded`` on ``inputs`` and hands that round's ``(sent inputs, solver
    answers)`` to ``retrain(x, y)``, which updates the surrogate in place or returns a new one
    (it replaces ``guarded.surrogate``). The fallback's NaN or inf answers, and those the
    output's dtype cannot hold (:attr:`GuardResult.fallback_non_finite`), are left out, a warning
    says how many. Stops early when nothing was sent, or nothing finite came back. Returns every
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
        x, y = _finite_pairs(result)
        if x.shape[0] == 0:
            break
        replaced = retrain(x, y)
        if replaced is not None:
            if not callable(replaced):
                raise TypeError(f"retrain must return a surrogate or None, got {type(replaced)}")
            guarded.surrogate = replaced
    return history
