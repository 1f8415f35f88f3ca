"""Route-cascade's sweep and replay on the vectorised cascade replay equal the subset-and-loop
path they replaced (issue 21 §3), query for query."""

from __future__ import annotations

import numpy as np
import pytest

from ponder.cascade import Cascade
from ponder.routers._strategies import RouteCascadeStrategy, start_rungs


@pytest.fixture(scope="module")
def fitted(split):
    return RouteCascadeStrategy(n_budgets=6, n_knobs=4).fit(split[0])


def _ragged(test, seed):
    """The test table with a quarter of its rows gone: missing answers are failed calls."""
    df = test.df
    keep = np.random.default_rng(seed).random(len(df)) > 0.25
    from ponder.evaluation import OutcomeTable

    return OutcomeTable.read(df[keep].reset_index(drop=True))


def _same(fast, slow):
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.setting == b.setting and a.extra == b.extra
        np.testing.assert_array_equal(a.cost, b.cost)
        np.testing.assert_array_equal(a.quality, b.quality)


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_sweep_and_replay_equal_the_loop(fitted, split, seed, monkeypatch):
    test = split[1] if seed is None else _ragged(split[1], seed)
    fast = fitted.sweep(test)
    settings = [p.setting for p in fast]
    fast_replay = fitted.replay(test, settings)
    assert any(p.setting["knob"] is not None and p.extra["start_share"][0] < 1 for p in fast)

    calls = []
    real = Cascade.replay

    def loop(self, table, *a, **k):  # the old path: a subset table per start rung, the loop
        calls.append(len(table.query_ids))
        return real(self, table, *a, **k)

    monkeypatch.setattr(Cascade, "_replay_many", lambda *a, **k: None)
    monkeypatch.setattr(Cascade, "replay", loop)
    _same(fast, fitted.sweep(test))
    _same(fast_replay, fitted.replay(test, settings))
    assert calls  # the loop did run


def test_start_rungs_with_predictions_given(fitted, split):
    router, test = fitted.router_, split[1]
    opt = fitted.cascade_.optimizer_
    names = opt.describe(list(fitted.cascade_.choices()[-1][1].chain))[::-1]
    qhat, chat = router.predict_quality(test.queries), router.predict_cost(test.queries)
    idx = router._model_indices(names)
    allowed = np.zeros(qhat.shape, dtype=bool)
    allowed[:, idx] = True
    for knob in [0.0, *router.knob_grid(qhat[:, idx], chat[:, idx], n=6)]:
        pos = {int(m): k for k, m in enumerate(idx)}  # the dict it replaced
        want = [pos[int(j)] for j in router.choose(qhat, chat, knob, allowed=allowed)]
        assert start_rungs(router, test.queries, names, knob).tolist() == want
        assert start_rungs(router, test.queries, names, knob, (qhat, chat)).tolist() == want
