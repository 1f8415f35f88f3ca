"""The cascade's policy, free of I/O: its rungs and :func:`decide`, what to do next.

:func:`decide` looks at the attempts so far and says: call a rung (for a set rung, which
members), or answer with one attempt. The live and offline loops around it are in
:mod:`ponder.cascade._cascade`; :func:`decide_many` restates it for a table of queries at once
(single-model rungs only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..strategies import live_spec
from ._agreement import set_state

if TYPE_CHECKING:
    from ..scorers import AnswerScorer
    from ._agreement import AgreementSet

__all__ = ["Rung", "Step", "decide", "decide_many"]


@dataclass(frozen=True)
class Rung:
    """A model, the scorer that judges its answers and the threshold for accepting them.

    ``model`` is the name the scorer knows (the outcome table's model name); ``spec`` is the
    live ``provider:model`` to call. The last rung's threshold is ignored: it always answers.
    ``samples`` > 1 and ``logprobs`` ask the model for that many answers and for token
    log-probabilities, the scorer's verification signals (see :mod:`ponder.cascade._signals`).

    With ``agree`` set, the rung is a set of models (:class:`AgreementSet`): ``model`` is only
    its display name, ``scorer`` (optional) gives each member answer's reliability, and the
    threshold applies to the set's acceptance probability.
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
        """The calls the rung makes: None (its model), or each member of its set."""
        return [None] if self.agree is None else list(range(len(self.agree.members)))

    def live_of(self, member: int | None) -> str:
        """The ``provider:model`` to call for this rung (or its ``member``)."""
        if member is None or self.agree is None:
            return self.live
        return self.agree.spec(member)

    def model_of(self, member: int | None) -> str:
        """The outcome-table model name behind this rung (or its ``member``)."""
        if member is None or self.agree is None:
            return self.model
        return self.agree.members[member]


@dataclass(frozen=True)
class Step:
    """What :func:`decide` says: call rung ``call``, or stop and answer with attempt ``answer``.

    For a set rung, ``members`` names the members to call now (more than one: concurrently).
    """

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
    """Start rung ``k``: a single model, or a set's first members."""
    agree = rungs[k].agree
    return Step(call=k, members=() if agree is None else set_state(agree, []).next)


def _set_of(tried: Sequence[_Tried], k: int) -> tuple[list[int], list[tuple[int, str | None,
                                                                             float | None]]]:
    """Positions in ``tried`` of rung ``k``'s member attempts, and their (member, text, reliability)."""
    pos = [i for i, t in enumerate(tried) if t.rung == k and t.member is not None]
    return pos, [(tried[i].member or 0, tried[i].text if tried[i].error is None else None,
                  tried[i].score) for i in pos]


def _outcomes(rungs: Sequence[Rung], tried: Sequence[_Tried]) -> list[tuple[int, float | None]]:
    """Each finished rung's answer so far: (its position in ``tried``, its acceptance score)."""
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
    """The cascade's whole policy, free of I/O.

    - Nothing tried yet: call rung 0.
    - The last attempt succeeded, passed its verifiers (:mod:`ponder._verify`) and scored ≥ its
      threshold (no score, from a rung without a scorer: passing the verifiers is enough), or it is the last
      rung: answer it. An answer that failed a verifier is never accepted while a rung is left.
      A set rung first calls its members as :func:`set_state` says (two; the third only when
      they disagree); its attempt is the majority answer and its score the acceptance probability.
    - Otherwise call the next rung, unless the per-query budget would be exceeded by its
      expected cost (or there is no next rung): then answer with the best-scored success so far
      that passed its verifiers, or, when none did, the last answer.
    - A failed call falls through to the next rung. If every rung failed, ``answer`` is None.
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
    """:func:`decide` for Q queries at once, one rung at a time, with the same rules in the same
    order; a test pins the two together (``tests/cascade/test_scale_paths.py``): change both.

    Single-model rungs only. ``present[q, k]``: the call answered (else it falls through, free);
    ``scores[q, k]``: its score (NaN: none, as ``score=None``; never a scorer's NaN);
    ``costs[q, k]``: its cost; ``failed(k, rows)``: which answers at rung ``k`` of the queries
    ``rows`` fail a verifier. Returns per query the answering rung (-1: every call failed), the
    cost spent (summed in call order) and the number of rungs called.
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
