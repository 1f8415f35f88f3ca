"""The cascade: try the cheapest rung first, stop at the first answer its scorer accepts.

The sync, async and offline (:meth:`Cascade.replay`) loops all call :func:`decide`, so live and
offline behaviour cannot drift; :meth:`Cascade.save` writes the strategy file that
:func:`load_strategy_file` reads back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import AllModelsFailed, ConfigError, ModelFileError
from .._types import Answer, Attempt, ChatRequest, Choice, Completion, Message
from .._verify import verify
from ..strategies import (
    STRATEGY_FORMAT,
    FallThrough,
    StreamEvent,
    answered,
    failed_attempt,
    live_spec,
    read_strategy_json,
    resolve_reference,
)
from ._agreement import AgreementSet
from ._policy import Rung, Step, _outcomes, _Tried, decide, decide_many
from ._signals import acomplete_rung, complete_rung

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable

__all__ = ["Cascade", "load_strategy_file"]

STRATEGY_VERSION = 1
SET_STRATEGY_VERSION = 2  # files with set rungs (older ponder would read a set as one model)


def recorded_checks(table: OutcomeTable) -> Callable[[int, int, bool], str | None] | None:
    """``check(q, m, final)``: the verifier query ``q``'s answer from model ``m`` fails, as live;
    None for tables without ``response_format``/``tool_calls`` columns. The tools a row offered
    are not recorded, so tool names and argument schemas go unchecked offline."""
    df = table.df
    if "response_format" not in df.columns and "tool_calls" not in df.columns:
        return None
    formats: dict[str, Any] = {}
    if "response_format" in df.columns:
        for qid, fmt in zip(df["query_id"].astype(str), df["response_format"], strict=True):
            if isinstance(fmt, str) and fmt.strip():
                formats.setdefault(qid, json.loads(fmt))
            elif isinstance(fmt, dict):
                formats.setdefault(qid, fmt)
    asked = (Message(role="user", content=""),)  # the checks read the format, not the messages
    requests = [ChatRequest(messages=asked, response_format=formats.get(str(qid))) for qid in table.query_ids]
    responses, calls = table.responses, table.tool_calls

    def check(q: int, m: int, final: bool) -> str | None:
        answer = Choice(content=str(responses[q, m]), tool_calls=tuple(calls[q, m]))
        return verify(requests[q], answer, final=final)

    return check


class Cascade:
    """An ordered list of rungs; the same object answers live requests and replays tables."""

    kind = "cascade"

    def __init__(
        self,
        rungs: Sequence[Rung],
        *,
        budget_usd: float | None = None,
        name: str = "cascade",
        info: dict[str, Any] | None = None,
    ) -> None:
        if not rungs:
            raise ConfigError("a cascade needs at least one rung")
        self.rungs = list(rungs)
        self.budget_usd = budget_usd
        self.name = name
        self.info = dict(info or {})

    @property
    def models(self) -> list[str]:
        return [r.live_of(j) for r in self.rungs for j in r.slots]

    def __repr__(self) -> str:
        chain = " → ".join(f"{r.model}@{r.threshold:.3f}" for r in self.rungs[:-1])
        chain = f"{chain} → {self.rungs[-1].model}" if chain else self.rungs[-1].model
        return f"Cascade({chain})"

    # ---- live ---------------------------------------------------------------------------------
    def _score(self, i: int, query: str, text: str, tried: list[_Tried], member: int | None = None,
               **signals: Any) -> float | None:
        """The rung's scorer on one answer (``signals``: its samples and logprob statistics)."""
        rung = self.rungs[i]
        if rung.scorer is None or (rung.agree is None and i == len(self.rungs) - 1):
            return None
        if rung.agree is not None:  # a member's reliability, judged alone (as on train)
            return rung.scorer.score_one(query, text, rung.model_of(member), [])
        earlier = [(self.rungs[t.rung].model_of(t.member), t.text or "") for t in tried
                   if t.error is None]
        return rung.scorer.score_one(query, text, rung.model, earlier, **signals)

    def _record(self, i: int, request: ChatRequest, tried: list[_Tried], trace: list[Attempt],
                completions: list[Completion | None], result: Completion | Exception,
                started: float, member: int | None = None) -> None:
        rung = self.rungs[i]
        if isinstance(result, Exception):
            failed = failed_attempt(rung.live_of(member), result, time.perf_counter() - started)
            tried.append(_Tried(i, None, None, 0.0, error=failed.error, member=member))
            trace.append(failed)
            completions.append(None)
            return
        # an answer failing a hard check is not scored (a set's members: judged by agreement)
        check = None if member is not None else verify(request, result.answers()[0],
                                                       final=i == len(self.rungs) - 1)
        lp = result.logprobs
        score = None if check is not None else self._score(
            i, request.query, result.text, tried, member, samples=result.samples or (result.text,),
            logprob_mean=lp.mean if lp else None, logprob_min=lp.min if lp else None)
        tried.append(_Tried(i, result.text, score, result.cost_usd, member=member, check=check))
        trace.append(Attempt(model=rung.live_of(member), response=result.text, score=score,
                             cost_usd=result.cost_usd, latency_s=result.latency_s,
                             cached=result.cached, check=check))
        completions.append(result)

    def _finish(self, step: Step, tried: list[_Tried], trace: list[Attempt],
                completions: list[Completion | None], errors: list[tuple[str, Exception]]
                ) -> Answer:
        if step.answer is None:  # every rung called failed: one error that names each of them
            raise AllModelsFailed(errors)
        if tried[step.answer].member is not None:  # a set's answer: its acceptance score
            for pos, score in _outcomes(self.rungs, tried):
                if pos == step.answer:
                    trace[pos] = trace[pos].model_copy(update={"score": score})
        trace = [a.model_copy(update={"accepted": j == step.answer}) for j, a in enumerate(trace)]
        comp = completions[step.answer]
        assert comp is not None
        return Answer(completion=comp, trace=tuple(trace), cost_usd=sum(a.cost_usd for a in trace),
                      strategy=self.name)

    def run(self, request: ChatRequest | str, client: Any) -> Answer:
        """Answer one request through ``client.complete`` (a :class:`ponder.Client`)."""
        req = request if isinstance(request, ChatRequest) else ChatRequest.of(request)
        tried: list[_Tried] = []
        trace: list[Attempt] = []
        completions: list[Completion | None] = []
        tries = FallThrough()  # a failed call falls through, as everywhere: decide() picks the next rung

        def call(k: int, member: int | None) -> tuple[Completion | Exception, float]:
            started, rung = time.perf_counter(), self.rungs[k]
            if member is None:  # a single model, with the samples/logprobs its scorer reads
                return tries.attempt(rung.live, partial(complete_rung, client, req, rung)), started
            return tries.call(client, req, rung.live_of(member)), started

        while (step := decide(self.rungs, tried, self.budget_usd)).call is not None:
            k, members = step.call, step.members or (None,)
            if len(members) > 1:  # a set's members at once (concurrent=True)
                with ThreadPoolExecutor(max_workers=len(members)) as pool:
                    results = list(pool.map(call, [k] * len(members), members))
            else:
                results = [call(k, members[0])]
            for j, (result, started) in zip(members, results, strict=True):
                self._record(k, req, tried, trace, completions, result, started, j)
        return self._finish(step, tried, trace, completions, tries.errors)

    async def arun(self, request: ChatRequest | str, client: Any) -> Answer:
        """Async twin of :meth:`run` (``await client.acomplete``); same decisions."""
        req = request if isinstance(request, ChatRequest) else ChatRequest.of(request)
        tried: list[_Tried] = []
        trace: list[Attempt] = []
        completions: list[Completion | None] = []
        tries = FallThrough()

        async def call(k: int, member: int | None) -> tuple[Completion | Exception, float]:
            started, rung = time.perf_counter(), self.rungs[k]
            if member is None:
                return await tries.aattempt(rung.live, partial(acomplete_rung, client, req, rung)), started
            return await tries.acall(client, req, rung.live_of(member)), started

        while (step := decide(self.rungs, tried, self.budget_usd)).call is not None:
            k, members = step.call, step.members or (None,)
            results = await asyncio.gather(*(call(k, j) for j in members))
            for j, (result, started) in zip(members, results, strict=True):
                self._record(k, req, tried, trace, completions, result, started, j)
        return self._finish(step, tried, trace, completions, tries.errors)

    async def astream(self, request: ChatRequest | str, client: Any) -> AsyncIterator[StreamEvent]:
        """The accepted answer, streamed once the cascade has decided (it needs whole answers)."""
        for event in answered(await self.arun(request, client)):
            yield event

    # ---- offline ------------------------------------------------------------------------------
    def _columns(self, table: OutcomeTable) -> list[list[int]]:
        names = [[r.model_of(j) for j in r.slots] for r in self.rungs]
        missing = sorted({m for ns in names for m in ns if m not in table.models})
        if missing:
            raise ConfigError(f"the table has no rows for model(s) {', '.join(missing)}")
        return [[table.models.index(m) for m in ns] for ns in names]

    def _lazy(self) -> list[bool]:
        """Single scored rungs after a set rung, whose earlier answers vary: scored per query."""
        first = next((k for k, r in enumerate(self.rungs) if r.agree is not None), len(self.rungs))
        return [first < k < len(self.rungs) - 1 and r.agree is None for k, r in enumerate(self.rungs)]

    def rung_scores(self, table: OutcomeTable) -> np.ndarray:
        """(Q, L) scores of each rung with all earlier rungs' answers in view (NaN: set rungs, the
        rungs :meth:`_lazy` names, and rungs without a scorer)."""
        from ..scorers import scorer_frame, signal_columns

        cols = self._columns(table)
        lazy = self._lazy()
        nq = len(table.query_ids)
        out = np.full((nq, len(self.rungs)), np.nan)
        resp = table.responses
        for k, rung in enumerate(self.rungs[:-1]):
            if rung.agree is not None or lazy[k] or rung.scorer is None:
                continue  # (a rung without a scorer accepts on its verifiers: NaN here)
            earlier = [[(self.rungs[j].model, str(resp[q, cols[j][0]])) for j in range(k)
                        if table.present[q, cols[j][0]]] for q in range(nq)]
            X = scorer_frame(table.queries, [str(r) for r in resp[:, cols[k][0]]],
                             [rung.model] * nq, earlier)
            X = X.assign(**signal_columns(table, range(nq), [cols[k][0]] * nq))
            out[:, k] = rung.scorer.predict_proba(X)[:, 1]
        return out

    def member_scores(self, table: OutcomeTable) -> dict[int, np.ndarray]:
        """Set rung index → (Q, members) reliability of each member's recorded answer."""
        from ..scorers import scorer_frame

        cols = self._columns(table)
        nq = len(table.query_ids)
        out: dict[int, np.ndarray] = {}
        for k, rung in enumerate(self.rungs):
            if rung.agree is None:
                continue
            R = np.full((nq, len(rung.agree.members)), np.nan)
            if rung.scorer is not None:
                for j, m in enumerate(rung.agree.members):
                    X = scorer_frame(table.queries, [str(r) for r in table.responses[:, cols[k][j]]],
                                     [m] * nq, [[] for _ in range(nq)])
                    R[:, j] = rung.scorer.predict_proba(X)[:, 1]
            out[k] = R
        return out

    def replay(self, table: OutcomeTable, scores: np.ndarray | None = None,
               member_scores: dict[int, np.ndarray] | None = None,
               calls: list[list[tuple[str, bool]]] | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-query (cost, quality, answering rung) of :func:`decide` on the recorded answers.

        ``scores``/``member_scores`` may be passed in to sweep thresholds without rescoring;
        ``calls`` receives each query's (model, answered) calls. Single-model chains go through
        :func:`decide_many`, all queries at once; set rungs and NaN scores take the loop.
        """
        from ..scorers import signal_columns

        cols = self._columns(table)
        S = self.rung_scores(table) if scores is None else scores
        fast = self._replay_many(table, cols, S, np.arange(len(table.query_ids)), calls)
        if fast is not None:
            return fast
        MS = self.member_scores(table) if member_scores is None else member_scores
        lazy = self._lazy()
        Y, C, P, R = table.scores, table.costs, table.present, table.responses
        checks = recorded_checks(table)
        nq = len(table.query_ids)
        last = len(self.rungs) - 1
        cost, qual, who = np.zeros(nq), np.zeros(nq), np.full(nq, -1)
        for q in range(nq):
            tried: list[_Tried] = []
            while (step := decide(self.rungs, tried, self.budget_usd)).call is not None:
                k = step.call
                for j in step.members or (None,):
                    m = cols[k][0 if j is None else j]
                    if not P[q, m]:
                        tried.append(_Tried(k, None, None, 0.0, error="missing", member=j))
                        continue
                    text = str(R[q, m])
                    if j is not None:
                        rel = float(MS[k][q, j])
                        sc: float | None = rel if np.isfinite(rel) else None
                    elif k == last or self.rungs[k].scorer is None:
                        sc = None  # (a rung without a scorer accepts what its verifiers pass)
                    elif lazy[k]:
                        sig = {c: v[0] for c, v in signal_columns(table, [q], [m]).items()}
                        sc = self._score(k, table.queries[q], text, tried, **sig)
                    else:
                        sc = float(S[q, k])
                    check = checks(q, m, k == last) if checks is not None and j is None else None
                    tried.append(_Tried(k, text, None if check else sc, float(C[q, m]), member=j, check=check))
            cost[q] = sum(t.cost for t in tried)
            if calls is not None:
                calls.append([(self.rungs[t.rung].model_of(t.member), i == step.answer)
                              for i, t in enumerate(tried)])
            if step.answer is not None:
                t = tried[step.answer]
                qual[q], who[q] = Y[q, cols[t.rung][0 if t.member is None else t.member]], t.rung
        return cost, qual, who

    def replay_rows(self, table: OutcomeTable, rows: np.ndarray, scores: np.ndarray,
                    member_scores: dict[int, np.ndarray] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``replay(table.subset(...))`` of the (increasing) positions ``rows``, without building
        the subset where :func:`decide_many` applies."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size > 1 and np.any(np.diff(rows) <= 0):
            raise ValueError("rows must be increasing positions")
        if all(r.agree is None for r in self.rungs):
            fast = self._replay_many(table, self._columns(table), scores, rows, None)
            if fast is not None:
                return fast
        ids = np.asarray(table.query_ids, dtype=object)[rows]
        return self.replay(table.subset(list(ids)), scores, member_scores)

    def _replay_many(self, table: OutcomeTable, cols: list[list[int]], S: np.ndarray,
                     rows: np.ndarray, calls: list[list[tuple[str, bool]]] | None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """:meth:`replay` of ``rows`` by :func:`decide_many`; None where it does not apply."""
        if any(r.agree is not None for r in self.rungs):
            return None
        m = [c[0] for c in cols]
        last = len(self.rungs) - 1
        P = table.present[rows][:, m]
        V = np.full(P.shape, np.nan)
        for k, rung in enumerate(self.rungs[:-1]):
            if rung.scorer is not None:  # (a rung without a scorer accepts what its verifiers pass)
                V[:, k] = S[:, k]
                if np.isnan(V[:, k][P[:, k]]).any():
                    return None  # decide() reads a NaN score otherwise than no score
        checks = recorded_checks(table)

        def failed(k: int, at: np.ndarray) -> np.ndarray:  # the live loop's verifiers, as recorded
            assert checks is not None
            return np.array([checks(int(q), m[k], k == last) is not None for q in rows[at]],
                            dtype=bool)

        who, cost, n_called = decide_many(self.rungs, P, V, table.costs[rows][:, m],
                                          self.budget_usd, None if checks is None else failed)
        Y = table.scores[rows][:, m]
        qual = np.where(who >= 0, Y[np.arange(len(rows)), np.maximum(who, 0)], 0.0)
        if calls is not None:
            for a, n in zip(who.tolist(), n_called.tolist(), strict=True):
                calls.append([(self.rungs[k].model, k == a) for k in range(n)])
        return cost, qual, who

    # ---- persistence --------------------------------------------------------------------------
    def to_json(self, *, base: Path | None = None, model_map: dict[str, str] | None = None
                ) -> dict[str, Any]:
        rungs = []
        for r in self.rungs:
            d: dict[str, Any] = {"model": r.model}
            if r.agree is not None:
                d["agree"] = r.agree.to_json()
            if (r is not self.rungs[-1] and (r.scorer is not None or r.agree is not None)) or (
                    r.agree is not None and r.scorer_path is not None):
                if r is not self.rungs[-1]:
                    d["threshold"] = float(r.threshold)
                path = r.scorer_path
                if path is not None and base is not None:
                    try:
                        path = str(Path(path).resolve().relative_to(base.resolve()))
                    except ValueError:
                        path = str(Path(path).resolve())
                d["scorer"] = path
            if r.expected_cost_usd is not None:
                d["expected_cost_usd"] = float(r.expected_cost_usd)
            if r.samples > 1:
                d["samples"] = int(r.samples)
            if r.logprobs:
                d["logprobs"] = True
            rungs.append(d)
        mm = dict(model_map or {})
        for r in self.rungs:
            for j in r.slots:
                if r.live_of(j) != live_spec(r.model_of(j)):
                    mm.setdefault(r.model_of(j), r.live_of(j))
        version = SET_STRATEGY_VERSION if any(r.agree for r in self.rungs) else STRATEGY_VERSION
        return {"format": STRATEGY_FORMAT, "version": version, "kind": self.kind,
                "name": self.name, "rungs": rungs, "budget_usd": self.budget_usd,
                "model_map": mm, **self.info}

    def save(self, path: str | Path, *, model_map: dict[str, str] | None = None) -> Path:
        """Write the strategy JSON; scorers without a ``scorer_path`` go to ``<stem>.scorer/``."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        saved: dict[int, str] = {}
        rungs = []
        for r in self.rungs:
            if (r.scorer is not None and r.scorer_path is None
                    and (r is not self.rungs[-1] or r.agree is not None)):
                key = id(r.scorer)
                if key not in saved:
                    target = p.parent / f"{p.stem}.scorer{len(saved) or ''}"
                    r.scorer.save(target)
                    saved[key] = str(target)
                r = replace(r, scorer_path=saved[key])
            rungs.append(r)
        self.rungs = rungs
        doc = self.to_json(base=p.parent, model_map=model_map)
        p.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return p


def load_strategy_file(path: str | Path, data: dict[str, Any] | None = None, *,
                       allow_outside: bool = False) -> Cascade:
    """A :class:`Cascade` from a strategy JSON; scorers load safely, from the file's folder only
    unless ``allow_outside``."""
    from ..scorers import AnswerScorer

    p = Path(path)
    if data is None:
        data = read_strategy_json(p)

    def bad(reason: str, key: str) -> ConfigError:
        return ConfigError(reason, file=str(p), key=key)

    if data.get("format") != STRATEGY_FORMAT:
        raise bad("not a ponder strategy file (format)", "format")
    if data.get("version") not in (STRATEGY_VERSION, SET_STRATEGY_VERSION):
        raise bad(f"strategy version {data.get('version')!r} is not supported (this ponder reads "
                  f"{STRATEGY_VERSION} and {SET_STRATEGY_VERSION})", "version")
    if data.get("kind") != "cascade":
        raise bad(f"kind {data.get('kind')!r} is not a cascade", "kind")
    raw = data.get("rungs")
    if not isinstance(raw, list) or not raw:
        raise bad("'rungs' must be a non-empty list", "rungs")
    model_map = data.get("model_map") or {}
    cache: dict[str, AnswerScorer] = {}
    rungs = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict) or "model" not in r:
            raise bad("each rung needs a 'model'", f"rungs[{i}]")
        scorer = None
        spath = r.get("scorer")
        agree = None
        if r.get("agree") is not None:
            if data.get("version") != SET_STRATEGY_VERSION:
                raise bad(f"set rungs need strategy version {SET_STRATEGY_VERSION}", "version")
            try:
                agree = AgreementSet.from_json(r["agree"], where=f"rungs[{i}].agree")
            except ConfigError as exc:
                raise bad(exc.reason, f"rungs[{i}].agree") from None
            except ModelFileError as exc:
                raise ModelFileError(str(exc), path=str(p)) from None
            agree = replace(agree, specs=tuple(live_spec(m, model_map) for m in agree.members))
        if spath is not None and not isinstance(spath, str):
            raise bad("'scorer' must be a path (a rung without one accepts any answer its "
                      "verifiers pass)", f"rungs[{i}].scorer")
        if spath:
            full = resolve_reference(p, spath, key=f"rungs[{i}].scorer",
                                     allow_outside=allow_outside)
            if str(full) not in cache:
                cache[str(full)] = AnswerScorer.load(full)
            scorer = cache[str(full)]
        try:
            threshold = float(r.get("threshold", 0.5))
        except (TypeError, ValueError):
            raise bad("threshold must be a number", f"rungs[{i}].threshold") from None
        samples, logprobs = r.get("samples", 1), r.get("logprobs", False)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise bad("samples must be a whole number >= 1", f"rungs[{i}].samples")
        if not isinstance(logprobs, bool):
            raise bad("logprobs must be true or false", f"rungs[{i}].logprobs")
        rungs.append(Rung(
            model=str(r["model"]), threshold=threshold, scorer=scorer,
            spec=live_spec(str(r["model"]), model_map),
            expected_cost_usd=r.get("expected_cost_usd"),
            scorer_path=str(spath) if spath else None, samples=samples, logprobs=logprobs,
            agree=agree,
        ))
    info = {k: v for k, v in data.items()
            if k not in ("format", "version", "kind", "name", "rungs", "budget_usd", "model_map")}
    return Cascade(rungs, budget_usd=data.get("budget_usd"), name=str(data.get("name", p.stem)),
                   info=info)
