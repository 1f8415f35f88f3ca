"""The cascade's policy, free of I/O: its rungs and :func:`decide`, what to do next
(:func:`decide_many`: the same for a table of queries at once, single-model rungs only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..strategies import live_spec
from ._agreement import Result, set_state

if TYPE_CHECKING:
    from ..scorers import AnswerScorer
    from ._agreement import AgreementSet

__all__ = ["Rung", "Step", "decide", "decide_many"]


@dataclass(frozen=True)
class Rung:
    """A model (the table's name; ``spec``: the live one), the scorer that judges its answers and
    the threshold for accepting them (ignored on the last rung). ``samples``/``logprobs``: the
    scorer's verification signals to ask for. With ``agree`` the rung is a set: ``model`` is its
    display name, ``scorer`` gives member reliabilities, the threshold applies to the set's score.
    """

    model: str
    threshold: float = 0.5
    scorer: AnswerScorer | None = None
    spec: str | None = None
    expected_cost_usd: float | None = None  # mean cost per call on train (for the budget cap)
    scorer_path: str | None = None
    samples: int = 1
    logprobs: bool = False
    agree: AgreementSet | None = None

    @property
    def live(self) -> str:
        return self.spec or live_spec(self.model)

    @property
    def slots(self) -> list[int | None]:
        return [None] if self.agree is None else list(range(len(self.agree.members)))

    def live_of(self, member: int | None) -> str:
        """The ``provider:model`` to call for this rung (or its ``member``)."""
        return self.live if member is None or self.agree is None else self.agree.spec(member)

    def model_of(self, member: int | None) -> str:
        """The outcome-table model name behind this rung (or its ``member``)."""
        return self.model if member is None or self.agree is None else self.agree.members[member]


@dataclass(frozen=True)
class Step:
    """Call rung ``call`` (a set's ``members``: concurrently), or answer with attempt ``answer``."""

    call: int | None = None
    answer: int | None = None
    members: tuple[int, ...] = ()


@dataclass
class _Tried:
    rung: int
    text: str | None
    score: float | None
    cost: float
    error: str | None = None
    member: int | None = None  # set rungs: which member answered (score = its reliability)
    check: str | None = None  # the verifier this answer failed (ponder._verify), if any


def _enter(rungs: Sequence[Rung], k: int) -> Step:
    agree = rungs[k].agree
    return Step(call=k, members=() if agree is None else set_state(agree, []).next)


def _set_of(tried: Sequence[_Tried], k: int) -> tuple[list[int], list[Result]]:
    pos = [i for i, t in enumerate(tried) if t.rung == k and t.member is not None]
    return pos, [(tried[i].member or 0, tried[i].text if tried[i].error is None else None,
                  tried[i].score) for i in pos]


def _outcomes(rungs: Sequence[Rung], tried: Sequence[_Tried]) -> list[tuple[int, float | None]]:
    """Each finished rung's answer so far: (position in ``tried``, acceptance score)."""
    out: list[tuple[int, float | None]] = []
    for k in sorted({t.rung for t in tried}):
        agree = rungs[k].agree
        if agree is None:
            out += [(i, t.score) for i, t in enumerate(tried) if t.rung == k and t.error is None
                    and t.check is None]
            continue
        pos, results = _set_of(tried, k)
        st = set_state(agree, results)
        if not st.next and st.answer is not None:
            out.append((pos[st.answer], st.score))
    return out


def decide(rungs: Sequence[Rung], tried: Sequence[_Tried], budget_usd: float | None) -> Step:
    """The cascade's whole policy: answer the last attempt if it passed its verifiers and scored ≥
    its threshold (no scorer: the verifiers suffice), or is the last rung's; else climb, unless
    the budget forbids it or no rung is left: then answer the best-scored verified success, or
    the last answer. A failed call falls through; all failed: ``answer`` is None.
    """
    if not tried:
        return _enter(rungs, 0)
    last = tried[-1]
    k = last.rung
    final = k == len(rungs) - 1
    agree = rungs[k].agree
    if agree is not None:
        pos, results = _set_of(tried, k)
        st = set_state(agree, results)
        if st.next:
            return Step(call=k, members=st.next)
        if st.answer is not None and (final or (st.score is not None
                                                and st.score >= rungs[k].threshold)):
            return Step(answer=pos[st.answer])
    elif last.error is None and last.check is None and (
            final or last.score is None or last.score >= rungs[k].threshold):
        return Step(answer=len(tried) - 1)
    nxt = k + 1
    spent = sum(t.cost for t in tried)
    over = (budget_usd is not None and nxt < len(rungs)
            and spent + (rungs[nxt].expected_cost_usd or 0.0) > budget_usd)
    if nxt < len(rungs) and not over:
        return _enter(rungs, nxt)
    ok = _outcomes(rungs, tried)
    if not ok:  # nothing passed its verifiers: the last answer there is (its trace says why)
        answered = [i for i, t in enumerate(tried) if t.error is None]
        return Step(answer=answered[-1]) if answered else Step()
    best = max(ok, key=lambda o: (o[1] if o[1] is not None else np.inf, tried[o[0]].rung))
    return Step(answer=best[0])


def decide_many(rungs: Sequence[Rung], present: np.ndarray, scores: np.ndarray,
                costs: np.ndarray, budget_usd: float | None,
                failed: Callable[[int, np.ndarray], np.ndarray] | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`decide` for Q queries at once, single-model rungs only; a test pins the two together
    (change both). ``scores`` NaN means no score (never a scorer's NaN); ``failed(k, rows)``: the
    rows whose answer at rung ``k`` fails a verifier. Returns per query the answering rung (-1:
    all failed), the cost spent and the number of rungs called.
    """
    nq, n = present.shape
    answer = np.full(nq, -1, dtype=np.int64)
    spent = np.zeros(nq)
    called = np.zeros(nq, dtype=np.int64)
    climbing = np.ones(nq, dtype=bool)
    best = np.full(nq, -1, dtype=np.int64)  # best-scored success so far (passed its verifiers)
    best_key = np.full(nq, -np.inf)
    answered = np.full(nq, -1, dtype=np.int64)  # the last rung that answered at all
    for k in range(n):
        if not climbing.any():
            break
        final = k == n - 1
        called[climbing] = k + 1
        got = climbing & present[:, k]
        spent = np.where(got, spent + costs[:, k], spent)
        answered[got] = k
        ok = got.copy()
        if failed is not None:
            rows = np.flatnonzero(got)
            if rows.size:
                ok[rows[np.asarray(failed(k, rows), dtype=bool)]] = False
        s = scores[:, k]
        none = np.isnan(s)
        accept = ok & (final | none | (s >= rungs[k].threshold))
        answer[accept] = k
        climbing &= ~accept
        # decide's max over (score, None = ∞; then the later rung): a later rung wins ties
        key = np.where(none, np.inf, s)
        better = ok & climbing & (key >= best_key)
        best[better], best_key[better] = k, key[better]
        stop = climbing.copy()
        if not final and budget_usd is not None:
            stop &= spent + (rungs[k + 1].expected_cost_usd or 0.0) > budget_usd
        elif not final:
            stop[:] = False
        answer[stop] = np.where(best >= 0, best, answered)[stop]
        climbing &= ~stop
    return answer, spent, called
