"""The vectorised scorer-frame paths equal the row-by-row ones they replaced (issue 21)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ponder._features import (
    _CODE,
    _HEDGE,
    _REFUSAL,
    _WORD,
    RESPONSE_STAT_NAMES,
    extract_answer,
    response_stats,
)
from ponder.cascade import _fit as F
from ponder.evaluation import OutcomeTable


def _response_stats_reference(queries: list[str], responses: list[str]) -> np.ndarray:
    """The row-by-row form :func:`response_stats` must equal."""
    out = np.zeros((len(responses), len(RESPONSE_STAT_NAMES)), dtype=np.float64)
    for i, (q, r) in enumerate(zip(queries, responses, strict=True)):
        r = str(r or "")
        out[i, 0] = math.log1p(len(r))
        out[i, 1] = math.log1p(len(_WORD.findall(r)))
        out[i, 2] = 1.0 if _REFUSAL.search(r) else 0.0
        out[i, 3] = 1.0 if _HEDGE.search(r) else 0.0
        out[i, 4] = 1.0 if not r.strip() or r.strip() in ("['']", "[]") else 0.0
        out[i, 5] = 1.0 if extract_answer(r) is not None else 0.0
        out[i, 6] = 1.0 if _CODE.search(r.replace("\\n", "\n")) else 0.0
        out[i, 7] = math.log1p(len(str(q or "")))
    return out


def _ragged(seed: int) -> OutcomeTable:
    """Missing cells, queries with one and with no other answer, empty and repeated responses."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(80):
        keep = rng.random(6) > 0.35
        if q % 10 == 0:
            keep[:] = False
            keep[q % 6] = True  # one answer only: no earlier-rung variant, no draw
        for m in np.flatnonzero(keep):
            rows.append({"query_id": f"q{q}", "query": f"what is {q}?" * (1 + q % 3),
                         "model": f"m{m}", "score": float(rng.random() < 0.5),
                         "cost_usd": 0.001 * (m + 1),
                         "response": "" if rng.random() < 0.2 else
                         rng.choice(["I'm sorry, I can't", "maybe 42", "```x=1```", "The answer is 7"])})
    return OutcomeTable.read(pd.DataFrame(rows))


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_training_frame_equals_loop(seed):
    t = _ragged(seed)
    fast, y_fast = F.training_frame(t, seed=seed)
    slow, y_slow = F._training_frame_loop(t, seed=seed)
    pd.testing.assert_frame_equal(fast, slow)
    np.testing.assert_array_equal(y_fast, y_slow)
    assert len(fast) > len(t)  # the earlier-answer variants are there


def test_training_frame_fixture_equals_loop(split):
    train = split[0]
    fast, y_fast = F.training_frame(train, seed=3)
    slow, y_slow = F._training_frame_loop(train, seed=3)
    pd.testing.assert_frame_equal(fast, slow)
    np.testing.assert_array_equal(y_fast, y_slow)


def test_response_stats_equals_row_by_row():
    frame, _ = F.training_frame(_ragged(2))
    qs, rs = list(frame["query"]), list(frame["response"])
    rs[:3] = [None, float("nan"), "[]"]
    np.testing.assert_array_equal(response_stats(qs, rs), _response_stats_reference(qs, rs))
    assert response_stats([], []).shape == _response_stats_reference([], []).shape


def _same_fit(a, b) -> None:
    np.testing.assert_array_equal(a.s1_, b.s1_)
    np.testing.assert_array_equal(a.s2_, b.s2_)
    for f in ("chains", "thresholds", "cost", "quality"):
        np.testing.assert_array_equal(getattr(a.frontier_, f), getattr(b.frontier_, f))
    X = F.training_frame(a.train_)[0].head(40)
    np.testing.assert_array_equal(a.scorer_.predict_proba(X), b.scorer_.predict_proba(X))


def test_scorer_work_shared_between_equal_fits(split, monkeypatch):
    from ponder.cascade import CascadeOptimizer

    train = split[0]
    F.clear_scorer_cache()
    monkeypatch.setattr(F, "SCORER_CACHE_SIZE", 0)
    plain = CascadeOptimizer(folds=3).fit(train)
    assert not F._SCORER_CACHE
    monkeypatch.setattr(F, "SCORER_CACHE_SIZE", 6)
    first = CascadeOptimizer(folds=3).fit(train)
    assert len(F._SCORER_CACHE) == 1
    again = CascadeOptimizer(folds=3).fit(train.subset(list(train.query_ids)))  # equal, not same
    assert len(F._SCORER_CACHE) == 1  # a hit
    for fit in (first, again):
        _same_fit(fit, plain)
    assert again.scorer_ is not first.scorer_ and again.s1_ is not first.s1_  # copies
    again.s1_[:] = 0.0  # a caller's change does not reach the next fit
    _same_fit(CascadeOptimizer(folds=3).fit(train), plain)
    half = train.subset(list(train.query_ids)[: len(train.query_ids) // 2])
    CascadeOptimizer(folds=3).fit(half)  # other rows: its own fit
    CascadeOptimizer(folds=3, seed=1).fit(train)  # other seed: its own fit
    assert len(F._SCORER_CACHE) == 3
    F.clear_scorer_cache()


def test_frame_signals_without_signal_columns(monkeypatch):
    from ponder.scorers import _signals as S

    frame, _ = F.training_frame(_ragged(1))
    n = len(frame)
    want = S.signal_rows([None] * n, [None] * n, [None] * n)

    def boom(*a, **k):
        raise AssertionError("row by row for a frame without signals")

    monkeypatch.setattr(S, "signal_rows", boom)
    np.testing.assert_array_equal(S.frame_signals(frame), want)


def test_agree_columns_compares_each_pair_once(monkeypatch):
    from ponder._features import agreement
    from ponder.scorers import _features as SF

    frame, _ = F.training_frame(_ragged(4))
    models = sorted(set(frame["model"]))
    want = np.full((len(frame), len(models)), np.nan)
    for i, (resp, earlier) in enumerate(zip(frame["response"], frame["earlier"], strict=True)):
        for name, other in earlier:
            want[i, models.index(name)] = agreement(str(resp), str(other))
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(SF, "agreement", lambda a, b: (calls.append((a, b)), agreement(a, b))[1])
    np.testing.assert_array_equal(SF.agree_columns(frame, models), want)
    assert len(calls) == len(set(calls)) < sum(len(e) for e in frame["earlier"])


# ---- offline replay: decide_many (arrays) against the loop over decide ------------------------
class _Scored:
    """Stands in for a scorer: replay reads given scores, and only asks whether a rung has one."""


def _random_rungs(rng: np.random.Generator, n: int, models: list[str]):
    from ponder.cascade import Rung

    grid = [0.25, 0.5, 0.75, 1.0]  # thresholds, scores and costs share values: ties happen
    return [Rung(model=models[k], threshold=float(rng.choice(grid)),
                 scorer=_Scored() if rng.random() < 0.7 else None,  # type: ignore[arg-type]
                 expected_cost_usd=None if rng.random() < 0.2 else float(rng.choice(grid)))
            for k in range(n)]


def _decide_loop(rungs, present, scores, costs, budget, fails):
    """The reference: decide() on each query, one attempt at a time (as Cascade.replay's loop)."""
    from ponder.cascade._policy import _Tried, decide

    out = []
    for q in range(present.shape[0]):
        tried: list[_Tried] = []
        while (step := decide(rungs, tried, budget)).call is not None:
            k = step.call
            if not present[q, k]:
                tried.append(_Tried(k, None, None, 0.0, error="missing"))
                continue
            check = "json" if fails[q, k] else None
            sc = None if np.isnan(scores[q, k]) or check else float(scores[q, k])
            tried.append(_Tried(k, "x", sc, float(costs[q, k]), check=check))
        rung = -1 if step.answer is None else tried[step.answer].rung
        out.append((rung, sum(t.cost for t in tried), len(tried)))
    return out


def _one_decide_case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    from ponder.cascade._policy import decide_many

    rng = np.random.default_rng(seed)
    n, nq = int(rng.integers(1, 5)), 200
    rungs = _random_rungs(rng, n, [f"m{k}" for k in range(n)])
    present = rng.random((nq, n)) < rng.choice([0.5, 0.8, 1.0])
    scores = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, 0.3], (nq, n))
    scores[:, [r.scorer is None for r in rungs]] = np.nan  # no scorer: no score
    scores[:, -1] = np.nan
    costs = np.where(present, rng.choice([0.25, 0.5, 0.1, 0.2], (nq, n)), np.nan)
    budget = None if seed % 4 == 0 else float(rng.choice([0.25, 0.5, 0.6, 0.75, 1.0]))
    fails = rng.random((nq, n)) < (0.3 if seed % 3 == 0 else 0.0)
    asked: list[tuple[int, int]] = []

    def failed(k, rows):
        asked.extend((int(q), k) for q in rows)
        return fails[rows, k]

    who, spent, called = decide_many(rungs, present, scores, costs, budget,
                                     failed if fails.any() else None)
    want = _decide_loop(rungs, present, scores, costs, budget, fails)
    assert who.tolist() == [w[0] for w in want], seed
    assert spent.tolist() == [w[1] for w in want], seed  # exactly: same additions, same order
    assert called.tolist() == [w[2] for w in want], seed
    if fails.any():  # the verifiers ran on exactly the answers the loop got
        assert sorted(asked) == sorted((q, k) for q in range(nq) for k in range(called[q])
                                       if present[q, k])
    return who, called - 1, n


def test_decide_many_equals_decide():
    """Random cascades of 1-4 rungs (scorer-less rungs, thresholds equal to scores, budgets,
    missing answers, failed verifiers) decide the same both ways; every way of ending occurs."""
    ends = {"all failed": 0, "answered by the top rung called": 0, "an earlier answer": 0,
            "budget stop": 0}
    for seed in range(60):
        who, top, n = _one_decide_case(seed)
        ends["all failed"] += int((who == -1).sum())
        ends["answered by the top rung called"] += int((who == top).sum())
        ends["an earlier answer"] += int(((who >= 0) & (who < top)).sum())  # best or last answer
        ends["budget stop"] += int(((top < n - 1) & (who < top)).sum())  # stopped, not accepted
    assert min(ends.values()) > 0, ends


def _replay_table(rng: np.random.Generator, n_models: int, checks: bool) -> OutcomeTable:
    import json

    rows = []
    for q in range(150):
        for m in range(n_models):
            if rng.random() < 0.25:
                continue  # missing: a failed call
            rows.append({"query_id": f"q{q}", "query": f"q {q}", "model": f"m{m}",
                         "score": float(rng.choice([0.0, 0.5, 1.0])),
                         "cost_usd": float(rng.choice([0.25, 0.5, 0.1])),
                         "response": str(rng.choice(['{"a": 1}', '{"a": 1', "I'm sorry, I can't help with that.",
                                                     ""])),
                         **({"response_format": json.dumps({"type": "json_object"})} if checks else {})})
    return OutcomeTable.read(pd.DataFrame(rows))


@pytest.mark.parametrize("seed", range(24))
def test_replay_fast_path_equals_loop(seed, monkeypatch):
    """Cascade.replay through decide_many equals its loop over decide: cost, quality, answering
    rung and calls, on tables with missing answers (and, for some, recorded verifier checks)."""
    from ponder.cascade import Cascade

    rng = np.random.default_rng(100 + seed)
    table = _replay_table(rng, 5, checks=seed % 2 == 1)
    n = int(rng.integers(1, 5))
    models = [str(m) for m in rng.permutation(table.models)[:n]]
    cascade = Cascade(_random_rungs(rng, n, models),
                      budget_usd=None if seed % 3 == 0 else float(rng.choice([0.3, 0.5, 0.75])))
    scores = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], (len(table.query_ids), n))
    fast_calls: list = []
    fast = cascade.replay(table, scores, calls=fast_calls)
    rows = np.flatnonzero(rng.random(len(table.query_ids)) < 0.6)
    fast_rows = cascade.replay_rows(table, rows, scores[rows])
    ids = list(np.asarray(table.query_ids, dtype=object)[rows])

    monkeypatch.setattr(Cascade, "_replay_many", lambda *a, **k: None)  # the loop
    slow_calls: list = []
    slow = cascade.replay(table, scores, calls=slow_calls)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fast_calls == slow_calls
    for a, b in zip(fast_rows, cascade.replay(table.subset(ids), scores[rows]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_replay_nan_score_on_an_answer_takes_the_loop(monkeypatch):
    """A scorer's NaN is not 'no score': decide never accepts it and, among NaN-scored answers,
    keeps the first; such a replay keeps the loop."""
    from ponder.cascade import Cascade, Rung, _cascade

    table = _replay_table(np.random.default_rng(7), 3, checks=False)
    cascade = Cascade([Rung(model=m, threshold=0.0, scorer=_Scored())  # type: ignore[arg-type]
                       for m in table.models])

    def boom(*a, **k):
        raise AssertionError("decide_many on NaN scores")

    monkeypatch.setattr(_cascade, "decide_many", boom)
    _, _, who = cascade.replay(table, np.full((len(table.query_ids), 3), np.nan))
    P = table.present
    assert (who[P[:, 2]] == 2).all()
    first_nan = P[:, 0] & P[:, 1] & ~P[:, 2]  # None would score ∞ and the later rung would win
    assert first_nan.any() and (who[first_nan] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_pareto_equals_the_loop_over_every_point(seed):
    """Frontier.pareto loops over the running records only; the loop over every point (below)
    picks the same points, near-ties within its 1e-12 tolerance and NaN qualities included."""
    from ponder.cascade._optimize import Frontier

    rng = np.random.default_rng(seed)
    n = 400
    cost = rng.choice(np.linspace(0.001, 0.01, 40), n)
    quality = (np.round(cost * 50 + rng.random(n) * 0.3, 1)  # ties, and dearer near-ties:
               + rng.choice([0, 4e-13, 9e-13, 1.6e-12, 2.5e-12], n) * (cost * 100))
    quality[rng.random(n) < 0.01] = np.nan
    chains = np.column_stack([rng.integers(0, 4, n), -np.ones((n, 2), int)])
    f = Frontier(chains=chains, thresholds=np.full((n, 2), np.nan), cost=cost, quality=quality,
                 n_chains=n)
    want, best, near = [], -np.inf, 0
    for i in np.lexsort((-quality, cost)):
        if quality[i] > best + 1e-12:
            want.append(f._choice(int(i)))
            best = quality[i]
        else:
            near += bool(quality[i] > best)  # better, but within the tolerance: left out
    got = f.pareto()
    assert got == want and len(want) > 3 and near > 0
    got.pop()
    assert f.pareto() == want  # computed once; a caller's list is its own
