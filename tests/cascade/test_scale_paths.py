"""The vectorised scorer-frame paths equal the row-by-row ones they replaced (issue 21)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ponder._features import _response_stats_reference, response_stats
from ponder.cascade import _fit as F
from ponder.evaluation import OutcomeTable


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
