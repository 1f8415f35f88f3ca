"""The fast paths ``ponder eval`` takes at scale give the numbers of the plain ones (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest

from ponder.routers import KNNRouter, UtilityRouter


def test_knn_blocks_equal_one_block(split):
    train, test = split
    r = KNNRouter().fit(train)
    whole = r._predict_core(r.transform(test.queries))
    r._block_cells = 3 * train.scores.shape[0]  # three test queries per block, ragged last one
    rows: list[int] = []
    sims = r._similarities
    r._similarities = lambda X: (rows.append(X.shape[0]), sims(X))[1]  # type: ignore[method-assign]
    blocked = r._predict_core(r.transform(test.queries))
    assert max(rows) == 3 and sum(rows) == len(test.queries)  # never the whole matrix at once
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [UtilityRouter, KNNRouter])
def test_prediction_cache_is_exact_and_invalidated(split, make):
    train, test = split
    r = make().fit(train)
    qs = list(test.queries)
    first = r.predict_quality(qs)
    assert "_pred_cache" in r.__dict__
    np.testing.assert_array_equal(r.predict_quality(list(qs)), first)  # an equal list hits
    first[:] = -1.0  # callers own their copy: the cache is untouched
    np.testing.assert_array_equal(r.predict_quality(qs), r._predict_core(r.transform(qs)))
    other = qs[::-1]
    np.testing.assert_array_equal(r.predict_quality(other), r._predict_core(r.transform(other)))
    sub = [r.models_[0], r.models_[-1]]
    np.testing.assert_array_equal(r.predict_quality(qs, sub),
                                  r._predict_core(r.transform(qs))[:, [0, len(r.models_) - 1]])
    # a refit on other rows must not answer from the old fit's cache
    r.predict_quality(qs)
    half = train.subset(train.query_ids[: len(train.query_ids) // 2])
    r.fit(half)
    np.testing.assert_array_equal(r.predict_quality(qs), make().fit(half).predict_quality(qs))


def test_prediction_cache_follows_parameters(split):
    train, test = split
    r = KNNRouter(n_neighbors=3).fit(train)
    a = r.predict_quality(test.queries)
    r.set_params(n_neighbors=15)
    b = r.predict_quality(test.queries)
    np.testing.assert_array_equal(b, r._predict_core(r.transform(test.queries)))
    assert not np.array_equal(a, b)


def test_predicted_cost_lengths_remembered_and_exact(split):
    train, test = split
    r = UtilityRouter().fit(train)
    qs = list(test.queries)
    n_chars = np.array([len(q) for q in qs], dtype=float)[:, None] / 1000.0
    want = r.cost_intercept_[None, :] + r.cost_slope_[None, :] * n_chars
    np.testing.assert_array_equal(r.predict_cost(qs), want)
    assert r._kchars_cache[0] == tuple(qs)
    np.testing.assert_array_equal(r.predict_cost(list(qs)), want)  # from the cache
    longer = [q + " and more" for q in qs]
    assert (r.predict_cost(longer) >= want).all() and r._kchars_cache[0] == tuple(longer)
