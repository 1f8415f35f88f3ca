"""The cascade: try the cheapest rung first, stop at the first answer its scorer accepts.

One pure function, :func:`decide`, looks at the attempts so far and says what to do next; the
sync loop (:meth:`Cascade.run`), the async loop (:meth:`Cascade.arun`) and the offline replay on
an outcome table (:meth:`Cascade.replay`) all call it, so live and offline behaviour cannot drift.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import AllModelsFailed, ConfigError
from .._types import Answer, Attempt, ChatRequest, Completion
from ..strategies import FallThrough, StreamEvent, answered, failed_attempt
from ._signals import acomplete_rung, complete_rung

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable
    from ..scorers import AnswerScorer

__all__ = ["Rung", "Cascade", "Step", "decide", "live_spec"]

STRATEGY_FORMAT = "ponder-strategy"
STRATEGY_VERSION = 1


def live_spec(model: str, model_map: dict[str, str] | None = None) -> str:
    """Outcome-table model name → ``provider:model`` (map first, ``a:b`` as is, else replay)."""
    if model_map and model in model_map:
        return model_map[model]
    return model if ":" in model else f"replay:{model}"


@dataclass(frozen=True)
class Rung:
    """A model, the scorer that judges its answers and the threshold for accepting them.

    ``model`` is the name the scorer knows (the outcome table's model name); ``spec`` is the
    live ``provider:model`` to call. The last rung's threshold is ignored: it always answers.
    ``samples`` > 1 and ``logprobs`` ask the model for that many answers and for token
    log-probabilities, the scorer's verification signals (see :mod:`ponder.cascade._signals`).
    """

    model: str
    threshold: float = 0.5
    scorer: AnswerScorer | None = None
    spec: str | None = None
    expected_cost_usd: float | None = None  # mean cost per call on train (for the budget cap)
    scorer_path: str | None = None
    samples: int = 1
    logprobs: bool = False

    @property
    def live(self) -> str:
        return self.spec or live_spec(self.model)


@dataclass(frozen=True)
class Step:
    """What :func:`decide` says: call rung ``call``, or stop and answer with attempt ``answer``."""

    call: int | None = None
    answer: int | None = None


@dataclass
class _Tried:
    rung: int
    text: str | None
    score: float | None
    cost: float
    error: str | None = None


def decide(rungs: Sequence[Rung], tried: Sequence[_Tried], budget_usd: float | None) -> Step:
    """The cascade's whole policy, free of I/O.

    - Nothing tried yet: call rung 0.
    - The last attempt succeeded and scored ≥ its threshold, or it is the last rung: answer it.
    - Otherwise call the next rung, unless the per-query budget would be exceeded by its
      expected cost (or there is no next rung): then answer with the best-scored success so far.
    - A failed call falls through to the next rung. If every rung failed, ``answer`` is None.
    """
    if not tried:
        return Step(call=0)
    last = tried[-1]
    final = last.rung == len(rungs) - 1
    if last.error is None and (final or (last.score is not None
                                         and last.score >= rungs[last.rung].threshold)):
        return Step(answer=len(tried) - 1)
    nxt = last.rung + 1
    spent = sum(t.cost for t in tried)
    over = (budget_usd is not None and nxt < len(rungs)
            and spent + (rungs[nxt].expected_cost_usd or 0.0) > budget_usd)
    if nxt < len(rungs) and not over:
        return Step(call=nxt)
    ok = [i for i, t in enumerate(tried) if t.error is None]
    if not ok:
        return Step()
    return Step(answer=max(ok, key=lambda i: (tried[i].score if tried[i].score is not None
                                              else np.inf, tried[i].rung)))


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
        for r in rungs[:-1]:
            if r.scorer is None:
                raise ConfigError(f"rung {r.model!r} is not the last rung, so it needs a scorer")
        self.rungs = list(rungs)
        self.budget_usd = budget_usd
        self.name = name
        self.info = dict(info or {})

    @property
    def models(self) -> list[str]:
        return [r.live for r in self.rungs]

    def __repr__(self) -> str:
        chain = " → ".join(f"{r.model}@{r.threshold:.3f}" for r in self.rungs[:-1])
        chain = f"{chain} → {self.rungs[-1].model}" if chain else self.rungs[-1].model
        return f"Cascade({chain})"

    # ---- live ---------------------------------------------------------------------------------
    def _score(self, i: int, query: str, result: Completion, tried: list[_Tried]) -> float | None:
        rung = self.rungs[i]
        if i == len(self.rungs) - 1 or rung.scorer is None:
            return None
        earlier = [(self.rungs[t.rung].model, t.text or "") for t in tried if t.error is None]
        lp = result.logprobs
        return rung.scorer.score_one(query, result.text, rung.model, earlier,
                                     samples=result.samples or (result.text,),
                                     logprob_mean=lp.mean if lp else None,
                                     logprob_min=lp.min if lp else None)

    def _record(self, i: int, query: str, tried: list[_Tried], trace: list[Attempt],
                completions: list[Completion | None], result: Completion | Exception,
                started: float) -> None:
        rung = self.rungs[i]
        if isinstance(result, Exception):
            failed = failed_attempt(rung.live, result, time.perf_counter() - started)
            tried.append(_Tried(i, None, None, 0.0, error=failed.error))
            trace.append(failed)
            completions.append(None)
            return
        score = self._score(i, query, result, tried)
        tried.append(_Tried(i, result.text, score, result.cost_usd))
        trace.append(Attempt(model=rung.live, response=result.text, score=score,
                             cost_usd=result.cost_usd, latency_s=result.latency_s,
                             cached=result.cached))
        completions.append(result)

    def _finish(self, step: Step, trace: list[Attempt], completions: list[Completion | None],
                errors: list[tuple[str, Exception]]) -> Answer:
        if step.answer is None:  # every rung called failed: one error that names each of them
            raise AllModelsFailed(errors)
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
        while (step := decide(self.rungs, tried, self.budget_usd)).call is not None:
            started = time.perf_counter()
            rung = self.rungs[step.call]
            result = tries.attempt(rung.live, partial(complete_rung, client, req, rung))
            self._record(step.call, req.prompt_text, tried, trace, completions, result, started)
        return self._finish(step, trace, completions, tries.errors)

    async def arun(self, request: ChatRequest | str, client: Any) -> Answer:
        """Async twin of :meth:`run` (``await client.acomplete``); same decisions."""
        req = request if isinstance(request, ChatRequest) else ChatRequest.of(request)
        tried: list[_Tried] = []
        trace: list[Attempt] = []
        completions: list[Completion | None] = []
        tries = FallThrough()
        while (step := decide(self.rungs, tried, self.budget_usd)).call is not None:
            started = time.perf_counter()
            rung = self.rungs[step.call]
            result = await tries.aattempt(rung.live, partial(acomplete_rung, client, req, rung))
            self._record(step.call, req.prompt_text, tried, trace, completions, result, started)
        return self._finish(step, trace, completions, tries.errors)

    async def astream(self, request: ChatRequest | str, client: Any) -> AsyncIterator[StreamEvent]:
        """The accepted answer, streamed once the cascade has decided (it needs whole answers)."""
        for event in answered(await self.arun(request, client)):
            yield event

    # ---- offline ------------------------------------------------------------------------------
    def rung_scores(self, table: OutcomeTable) -> np.ndarray:
        """(Q, L) scores of each rung on each query, with all earlier rungs' answers (and the
        verification signals the table recorded) in view."""
        from ..scorers import scorer_frame, signal_columns

        idx = [table.models.index(r.model) for r in self.rungs]
        nq = len(table.query_ids)
        out = np.full((nq, len(self.rungs)), np.nan)
        resp = table.responses
        for k, rung in enumerate(self.rungs[:-1]):
            assert rung.scorer is not None
            earlier = [[(self.rungs[j].model, str(resp[q, idx[j]])) for j in range(k)
                        if table.present[q, idx[j]]] for q in range(nq)]
            X = scorer_frame(table.queries, [str(r) for r in resp[:, idx[k]]],
                             [rung.model] * nq, earlier)
            X = X.assign(**signal_columns(table, range(nq), [idx[k]] * nq))
            out[:, k] = rung.scorer.predict_proba(X)[:, 1]
        return out

    def replay(self, table: OutcomeTable, scores: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run :func:`decide` on every query of ``table`` using its recorded answers and costs.

        Returns per-query (cost, quality, answering rung). A model missing for a query counts
        as a failed call. ``scores`` may be passed in (from :meth:`rung_scores`) to sweep
        thresholds without rescoring.
        """
        missing = [r.model for r in self.rungs if r.model not in table.models]
        if missing:
            raise ConfigError(f"the table has no rows for model(s) {', '.join(missing)}")
        idx = [table.models.index(r.model) for r in self.rungs]
        S = self.rung_scores(table) if scores is None else scores
        Y, C, P = table.scores, table.costs, table.present
        nq = len(table.query_ids)
        cost, qual, who = np.zeros(nq), np.zeros(nq), np.full(nq, -1)
        for q in range(nq):
            tried: list[_Tried] = []
            while (step := decide(self.rungs, tried, self.budget_usd)).call is not None:
                k = step.call
                m = idx[k]
                if not P[q, m]:
                    tried.append(_Tried(k, None, None, 0.0, error="missing"))
                    continue
                sc = None if k == len(self.rungs) - 1 else float(S[q, k])
                tried.append(_Tried(k, "", sc, float(C[q, m])))
            cost[q] = sum(t.cost for t in tried)
            if step.answer is not None:
                k = tried[step.answer].rung
                qual[q], who[q] = Y[q, idx[k]], k
        return cost, qual, who

    # ---- persistence --------------------------------------------------------------------------
    def to_json(self, *, base: Path | None = None, model_map: dict[str, str] | None = None
                ) -> dict[str, Any]:
        rungs = []
        for r in self.rungs:
            d: dict[str, Any] = {"model": r.model}
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
            if r.spec and r.spec != live_spec(r.model):
                mm.setdefault(r.model, r.spec)
        return {"format": STRATEGY_FORMAT, "version": STRATEGY_VERSION, "kind": self.kind,
                "name": self.name, "rungs": rungs, "budget_usd": self.budget_usd,
                "model_map": mm, **self.info}

    def save(self, path: str | Path, *, model_map: dict[str, str] | None = None) -> Path:
        """Write the strategy JSON (chain, thresholds, scorer paths relative to it, expectations).

        Rungs whose scorer has no ``scorer_path`` get it saved into ``<stem>.scorer/`` beside it.
        """
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        saved: dict[int, str] = {}
        rungs = []
        for r in self.rungs:
            if r.scorer is not None and r.scorer_path is None and r is not self.rungs[-1]:
                key = id(r.scorer)
                if key not in saved:
                    target = p.parent / f"{p.stem}.scorer"
                    if len(saved):
                        target = p.parent / f"{p.stem}.scorer{len(saved)}"
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
    """Build a :class:`Cascade` from a strategy JSON (``kind: "cascade"``); scorers load safely.

    Scorer folders must lie in the strategy file's folder unless ``allow_outside`` (see
    :func:`ponder._strategies.resolve_reference`).
    """
    from .._strategies import read_strategy_json, resolve_reference
    from ..scorers import AnswerScorer

    p = Path(path)
    if data is None:
        data = read_strategy_json(p)
    if data.get("format") != STRATEGY_FORMAT:
        raise ConfigError("not a ponder strategy file (format)", file=str(p), key="format")
    if data.get("version") != STRATEGY_VERSION:
        raise ConfigError(f"strategy version {data.get('version')!r} is not supported "
                          f"(this ponder reads {STRATEGY_VERSION})", file=str(p), key="version")
    if data.get("kind") != "cascade":
        raise ConfigError(f"kind {data.get('kind')!r} is not a cascade", file=str(p), key="kind")
    raw = data.get("rungs")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("'rungs' must be a non-empty list", file=str(p), key="rungs")
    model_map = data.get("model_map") or {}
    cache: dict[str, AnswerScorer] = {}
    rungs = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict) or "model" not in r:
            raise ConfigError("each rung needs a 'model'", file=str(p), key=f"rungs[{i}]")
        scorer = None
        spath = r.get("scorer")
        if i < len(raw) - 1:
            if not spath:
                raise ConfigError("every rung but the last needs a 'scorer' path", file=str(p),
                                  key=f"rungs[{i}].scorer")
            full = resolve_reference(p, spath, key=f"rungs[{i}].scorer",
                                     allow_outside=allow_outside)
            if str(full) not in cache:
                cache[str(full)] = AnswerScorer.load(full)
            scorer = cache[str(full)]
        try:
            threshold = float(r.get("threshold", 0.5))
        except (TypeError, ValueError):
            raise ConfigError("threshold must be a number", file=str(p),
                              key=f"rungs[{i}].threshold") from None
        samples, logprobs = r.get("samples", 1), r.get("logprobs", False)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError("samples must be a whole number >= 1", file=str(p),
                              key=f"rungs[{i}].samples")
        if not isinstance(logprobs, bool):
            raise ConfigError("logprobs must be true or false", file=str(p),
                              key=f"rungs[{i}].logprobs")
        rungs.append(Rung(
            model=str(r["model"]), threshold=threshold, scorer=scorer,
            spec=live_spec(str(r["model"]), model_map),
            expected_cost_usd=r.get("expected_cost_usd"),
            scorer_path=str(spath) if spath else None, samples=samples, logprobs=logprobs,
        ))
    info = {k: v for k, v in data.items()
            if k not in ("format", "version", "kind", "name", "rungs", "budget_usd", "model_map")}
    return Cascade(rungs, budget_usd=data.get("budget_usd"), name=str(data.get("name", p.stem)),
                   info=info)
