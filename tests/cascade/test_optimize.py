from __future__ import annotations

import numpy as np
import pytest

from ponder.cascade import optimize_chains


def _brute(Y, C, s1, s2, chain, th):
    qs, cs = [], []
    for q in range(Y.shape[0]):
        cost = 0.0
        for k, m in enumerate(chain):
            cost += C[q, m]
            if k == len(chain) - 1:
                qs.append(Y[q, m])
                break
            sc = s1[q, m] if k == 0 else s2[q, m, chain[k - 1]]
            if sc >= th[k]:
                qs.append(Y[q, m])
                break
        cs.append(cost)
    return float(np.mean(qs)), float(np.mean(cs))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(1)
    Q, M = 200, 5
    Y = (rng.random((Q, M)) < np.linspace(0.4, 0.9, M)).astype(float)
    C = np.linspace(1, 10, M) * rng.uniform(0.5, 1.5, (Q, M))
    s1 = np.clip(0.3 * Y + 0.7 * rng.random((Q, M)), 0, 1)
    s2 = np.clip(0.3 * Y[:, :, None] + 0.7 * rng.random((Q, M, M)), 0, 1)
    return Y, C, s1, s2


def test_every_point_matches_a_brute_force_replay(problem):
    Y, C, s1, s2 = problem
    F = optimize_chains(s1, s2, Y, C, n_thresholds=8)
    assert F.n_chains == 5 + 5 * 4 + 5 * 4 * 3
    rng = np.random.default_rng(0)
    for i in rng.choice(len(F.cost), 150, replace=False):
        chain = [int(m) for m in F.chains[i] if m >= 0]
        q, c = _brute(Y, C, s1, s2, chain, F.thresholds[i])
        assert q == pytest.approx(F.quality[i], abs=1e-12)
        assert c == pytest.approx(F.cost[i], abs=1e-12)


def test_budget_target_and_pareto(problem):
    Y, C, s1, s2 = problem
    F = optimize_chains(s1, s2, Y, C, n_thresholds=8)
    for budget in (2.0, 4.0, 8.0):
        ch = F.best_for_budget(budget)
        assert ch is not None and ch.cost <= budget
        assert ch.quality == pytest.approx(F.quality[F.cost <= budget].max())
    assert F.best_for_budget(0.01) is None
    t = F.cheapest_for_quality(0.85)
    assert t is not None and t.quality >= 0.85
    assert t.cost == pytest.approx(F.cost[F.quality >= 0.85].min())
    front = F.pareto()
    costs = [p.cost for p in front]
    quals = [p.quality for p in front]
    assert costs == sorted(costs) and quals == sorted(quals)


def test_max_length_and_missing_models(problem):
    Y, C, s1, s2 = problem
    F1 = optimize_chains(s1, s2, Y, C, max_length=1)
    assert len(F1.cost) == 5 and F1.n_chains == 5
    Ym = Y.copy()
    Ym[:50, 0] = np.nan  # model 0 missing for some queries: counts as a failed call
    F = optimize_chains(s1, s2, Ym, C, max_length=2, n_thresholds=4)
    assert np.isfinite(F.quality).all()
    with pytest.raises(ValueError):
        optimize_chains(s1, s2, Y, C, max_length=4)


def test_a_frontier_is_kept_by_its_inputs_and_handed_out_as_a_copy(monkeypatch):
    """The cascade and route-cascade strategies optimize the same scores: the second gets the
    first's frontier (equal, not the same object); other inputs get their own."""
    from ponder.cascade import _optimize as O

    rng = np.random.default_rng(11)
    s1, s2 = rng.random((400, 4)), rng.random((400, 4, 4))
    y, c = (rng.random((400, 4)) < 0.6).astype(float), rng.random((400, 4))
    calls = []
    real = O._optimize
    monkeypatch.setattr(O, "_optimize", lambda *a: calls.append(1) or real(*a))
    first = optimize_chains(s1, s2, y, c)
    want = {f: getattr(first, f).copy() for f in ("chains", "thresholds", "cost", "quality")}
    first.cost[:] = -1.0  # what a caller does to its copy stays there
    again = optimize_chains(s1, s2, y, c)
    assert len(calls) == 1  # found, not computed again
    for f, v in want.items():
        assert np.array_equal(getattr(again, f), v, equal_nan=True)
    s1[0, 0] += 1e-12
    other = optimize_chains(s1, s2, y, c, n_thresholds=8)
    assert len(calls) == 2 and other.cost.size != again.cost.size
