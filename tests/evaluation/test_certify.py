"""The bounds behind certified picks (``ponder._bounds``): they cover the truth at 1 − δ, widen with
the number of candidates tried, and the power calculation says how many queries would certify."""

from __future__ import annotations

import numpy as np
import pytest

from ponder import _bounds as B
from ponder import _risk as R
from ponder.evaluation import _certify as C
from ponder.evaluation import _deploy as D

DELTA = 0.1


def _drops(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Paired quality drops of a router against the best model: mostly 0, sometimes ±1."""
    return rng.choice([-1.0, 0.0, 1.0], p=[0.05, 0.88, 0.07], size=shape)


def test_the_quality_drop_bound_covers_the_true_drop():
    rng = np.random.default_rng(0)
    true = 0.07 - 0.05
    x = _drops(rng, (150, 400))  # 400 calibration sets of 150 queries
    bound = B.upper_bound(x, DELTA, signed=True)
    assert (bound >= x.mean(axis=0) - 1e-12).all()
    assert np.mean(bound < true) <= DELTA + 0.03  # 400 trials: 2 standard errors of slack
    assert np.median(bound - x.mean(axis=0)) < 0.07  # and it is not vacuous


def test_the_spend_ratio_bound_covers_the_true_ratio():
    rng = np.random.default_rng(1)
    n, trials = 300, 300
    length = rng.lognormal(0.0, 1.2, (n, trials))  # heavy-tailed, and shared by both models
    ref = 0.01 * length * rng.uniform(0.8, 1.2, (n, trials))
    routed = rng.random((n, trials)) < 0.2
    cost = np.where(routed, ref, 0.0005 * length) + 0.0004 * length
    true = 0.2 + (0.8 * 0.0005 + 0.0004) / 0.01  # E[cost] / E[ref]; E[length] cancels
    bound = np.array([B.ratio_upper_bound(cost[:, [t]], ref[:, t], DELTA, seed=t)[0]
                      for t in range(trials)])
    point = cost.mean(axis=0) / ref.mean(axis=0)
    assert (bound >= point - 1e-12).all()
    assert np.mean(bound < true) <= DELTA + 0.035


def test_missing_rows_are_left_out_of_a_column():
    rng = np.random.default_rng(2)
    x = _drops(rng, (200, 2))
    x[::3, 1] = np.nan
    b = B.upper_bound(x, DELTA, signed=True)
    assert np.isfinite(b).all() and b[1] >= np.nanmean(x[:, 1])
    num = rng.random((200, 2))
    num[::4, 0] = np.nan
    r = B.ratio_upper_bound(num, np.ones(200), DELTA)
    assert np.isfinite(r).all() and r[0] >= np.nanmean(num[:, 0])


def test_the_bound_widens_with_the_number_of_candidates_tried():
    """The union bound: the same candidate's bound at δ / m grows with m."""
    rng = np.random.default_rng(3)
    n = 400
    ref = D.Reference("best", np.full(n, 10.0), np.ones(n), np.full(n, 10.0), np.ones(n))

    def replay(name: str, k: int) -> D.Replay:
        q = 1.0 - (rng.random((k, n)) < 0.02)
        c = np.where(rng.random((k, n)) < 0.3, 10.0, 1.0)
        return D.Replay(name, "router", [{"k": i} for i in range(k)], c, q, c, q)

    one = replay("x", 1)
    best = D.Replay("model:best", "baseline", [{"model": "best"}], ref.cal_cost[None],
                    ref.cal_quality[None], ref.test_cost[None], ref.test_quality[None])
    few = C.bound_all([one, best], ref, epsilon=0.01, delta=DELTA)
    many = C.bound_all([one, best, replay("y", 99)], ref, epsilon=0.01, delta=DELTA)
    assert (few.m, many.m) == (1, 100)
    assert many.drop_bound[0] > few.drop_bound[0] and many.ratio_bound[0] > few.ratio_bound[0]
    assert few.drop_bound[1] == 0.0 and few.ratio_bound[1] == 1.0  # the reference: exact


def test_the_power_calculation_names_a_size_that_certifies():
    rng = np.random.default_rng(4)
    drops = rng.permutation(np.repeat([-1.0, 0.0, 1.0], [30, 246, 24]))  # a 2 point gain
    x, eps = (drops + 1) / 2, (0.01 + 1) / 2  # ε = 1 point, on the [0, 1] scale
    level = DELTA / 30
    assert R.wsr_pvalue(x, eps, level) > level  # 300 queries do not certify it
    n = R.samples_needed(x, eps, level)
    assert n is not None and n > 300

    def certifies(size: int) -> int:
        return sum(R.wsr_pvalue(np.resize(x, size), eps, level, seed=k) <= level for k in range(5))

    assert certifies(n) >= 3 and certifies(n // 2) < 3
    assert R.samples_needed((np.ones(50) + 1) / 2, eps, level) is None  # it loses: never
    assert R.samples_needed(np.full(50, eps), eps, level) is None  # at the target: never


# ---- the fast bounds give the simple versions' numbers ----------------------------------------
def _cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, drops or spends (n, K), the reference's spend (n,)): ties, gaps, edges."""
    rng = np.random.default_rng(5)
    cases = []
    for n, k in [(1, 1), (2, 3), (5, 4), (40, 1), (120, 30), (300, 12)]:
        drops = _drops(rng, (n, k))
        ref = rng.lognormal(0.0, 1.0, n)
        spend = np.where(rng.random((n, k)) < 0.3, ref[:, None], 0.05 * ref[:, None])
        spend *= rng.uniform(0.5, 1.5, (1, k))
        cases.append((f"{n}x{k}", drops, ref, spend))
    n, k = 150, 40  # many candidates, and everything odd at once
    drops, ref = _drops(rng, (n, k)), rng.lognormal(0.0, 1.0, n)
    spend = ref[:, None] * rng.uniform(0.0, 2.0, (n, k)) ** 3
    drops[:, 1] = drops[:, 0]  # identical candidates
    spend[:, 1] = spend[:, 0]
    spend[:, 30] = spend[:, 0]  # identical, in another chunk
    drops[:, 2] = 0.0  # all ties
    spend[:, 2] = 0.0  # spends nothing
    spend[:, 3] = ref  # the reference itself
    spend[:, 4] = 3e5 * ref  # a ratio near r_max
    drops[::3, 5] = np.nan  # missing rows
    spend[::3, 5] = np.nan
    drops[:, 6] = np.nan  # no rows at all
    spend[:, 6] = np.nan
    spend[:-3, 7] = np.nan  # too few rows to ever reject
    spend[:, 8] = 1e5 * ref * rng.uniform(0.0, 3.0, n)  # widens past r_max with its chunk
    drops[:, 9] = 1.0  # always worse
    drops[:, 10] = -1.0  # always better
    cases.append(("odd", drops, ref, spend))
    ref_gaps = ref.copy()
    ref_gaps[::7] = np.nan  # the reference misses rows
    cases.append(("ref-gaps", drops, ref_gaps, spend))
    cases.append(("zeros", np.zeros((50, 3)), np.zeros(50), np.zeros((50, 3))))
    return cases


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few columns and blocks of a few cells, so the small cases cross their edges."""
    monkeypatch.setattr(B, "_CHUNK_CELLS", 1_000)
    monkeypatch.setattr(B, "_BLOCK_CELLS", 400)


@pytest.mark.parametrize("delta", [DELTA, 1e-4])
def test_the_fast_mean_bound_is_the_simple_one(small_chunks, delta):
    for name, drops, _, _ in _cases():
        x = (drops + 1.0) / 2.0
        for seed, iters in [(0, 40), (1, 40), (0, 7), (0, 0)]:
            fast = B.wsr_upper_bound(x, delta, seed=seed, iters=iters)
            simple = B._wsr_upper_bound_simple(x, delta, seed=seed, iters=iters)
            assert np.array_equal(fast, simple), (name, seed, iters)
    assert np.array_equal(B.upper_bound(drops, delta, signed=True),
                          2.0 * B._wsr_upper_bound_simple(x, delta) - 1.0)


@pytest.mark.parametrize("delta", [DELTA, 1e-4])
def test_the_fast_ratio_bound_is_the_simple_one(small_chunks, delta):
    """Exactly with rtol=0; by default never below, and above by at most rtol (relative)."""
    for name, _, ref, spend in _cases():
        for seed, r_max in [(0, 1e6), (3, 1e6), (0, 50.0)]:
            simple = B._ratio_upper_bound_simple(spend, ref, delta, seed=seed, r_max=r_max)
            exact = B.ratio_upper_bound(spend, ref, delta, seed=seed, r_max=r_max, rtol=0.0)
            assert np.array_equal(exact, simple), (name, seed, r_max)
            fast = B.ratio_upper_bound(spend, ref, delta, seed=seed, r_max=r_max)
            finite = np.isfinite(simple)
            assert np.array_equal(np.isfinite(fast), finite), (name, seed, r_max)
            assert (fast[finite] >= simple[finite]).all(), (name, seed, r_max)
            assert (fast[finite] <= simple[finite] * (1 + 1e-4)).all(), (name, seed, r_max)


def test_the_fast_bounds_hand_odd_inputs_to_the_simple_versions():
    """Infinite entries, δ ≥ 1 or iters past float precision: the simple versions answer."""
    rng = np.random.default_rng(6)
    spend, ref = rng.random((60, 3)), rng.random(60) + 0.5
    spend[4, 1] = np.inf
    assert np.array_equal(B.ratio_upper_bound(spend, ref, DELTA, rtol=0.0),
                          B._ratio_upper_bound_simple(spend, ref, DELTA))
    x = (_drops(rng, (60, 3)) + 1) / 2
    assert np.array_equal(B.wsr_upper_bound(x, DELTA, iters=60),
                          B._wsr_upper_bound_simple(x, DELTA, iters=60))
    assert np.array_equal(B.wsr_upper_bound(x, 1.0), B._wsr_upper_bound_simple(x, 1.0))


def test_candidates_bounded_a_slice_at_a_time_match_all_at_once(small_chunks):
    """bound_all bounds a slice of candidates at a time (memory); the numbers are those of the
    bounds taken over every candidate at once, the chunk-shaped ratio widening included."""
    rng = np.random.default_rng(11)
    n = 300
    ref = D.Reference("best", rng.uniform(1, 2, n), (rng.random(n) < 0.8).astype(float),
                      rng.uniform(1, 2, n), (rng.random(n) < 0.8).astype(float))
    replays = []
    for r in range(4):
        k = int(rng.integers(3, 9))
        c = ref.cal_cost[None, :] * rng.uniform(0.05, 1.5, (k, 1)) * rng.uniform(0.5, 1.5, (k, n))
        c[:, rng.random(n) < 0.1] = np.nan  # some queries a candidate lacks
        q = (rng.random((k, n)) < rng.uniform(0.5, 0.95, (k, 1))).astype(float)
        c[0] = 1e7 * ref.cal_cost  # a ratio past r_max
        replays.append(D.Replay(f"s{r}", "router", [{"k": i} for i in range(k)], c, q, c, q))
    replays.append(D.Replay("model:best", "baseline", [{"model": "best"}], ref.cal_cost[None],
                            ref.cal_quality[None], ref.test_cost[None], ref.test_quality[None]))
    b = C.bound_all(replays, ref, epsilon=0.01, delta=DELTA)
    assert len(B.column_chunks(n, len(b.owner))) > 3  # the small chunks cut the candidates
    q = np.vstack([r.cal_quality for r in replays])
    c = np.vstack([r.cal_cost for r in replays])
    drops = ref.cal_quality[None, :] - q
    level = DELTA / b.m
    assert np.array_equal(b.drop_bound[:-1], B.upper_bound(np.clip(drops.T, -1, 1), level,
                                                           signed=True)[:-1])
    assert np.array_equal(b.ratio_bound[:-1], B.ratio_upper_bound(c.T, ref.cal_cost, level)[:-1],
                          equal_nan=True)
    assert b.ratio_bound[0] > 1e6 and b.exact[-1] and b.drop_bound[-1] == 0.0
