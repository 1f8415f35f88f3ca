"""(1 − δ) upper bounds on a candidate's mean loss or spend ratio: the WSR test of
:mod:`ponder._risk` inverted (how certified picks are checked)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator

import numpy as np

from ._risk import _wsr_bets, _wsr_log_wealth

__all__ = [
    "ratio_units",
    "ratio_upper_bound",
    "upper_bound",
    "wsr_upper_bound",
]

# The ``_*_simple`` versions (the reference, and the answer for odd inputs) redo all (n, K) work
# at every search step. The fast ones give the same numbers (same float operations in the same
# order; tests/evaluation/test_certify.py compares them): identical columns are bounded once, on
# contiguous (b, m) blocks without missing rows, only while open; the mean's search is regula
# falsi (wealth is monotone in ε), the ratio's bisection (not monotone in r) stops within rtol.

# The simple versions' chunks of (n, K) cells (they shape the ratio's widening, hence its answers).
_CHUNK_CELLS = 1_000_000
# A block's (b, m) work arrays: a few of this many cells fit a core's cache.
_BLOCK_CELLS = 1 << 15
# The blocked versions run where no number can overflow (inputs and ranges up to this size).
_TAME = 1e50


def column_chunks(n: int, k: int) -> list[slice]:
    """Slices of k columns that bound alone to the same numbers as all k, in (n × slice) memory."""
    step = max(1, _CHUNK_CELLS // max(n, 1))
    return [slice(i, min(k, i + step)) for i in range(0, k, step)]


def _columns(x: np.ndarray, seed: int) -> np.ndarray:
    """``x`` as float64 columns (n, K) (1-d: one column), rows in the seeded visiting order."""
    X = np.asarray(x, dtype=np.float64)
    X = X[:, None] if X.ndim == 1 else X
    return X[np.random.default_rng(seed).permutation(len(X))]


def _paired(num: np.ndarray, den: np.ndarray, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num`` (n, K) and ``den`` (n,) in the visiting order, and the rows both have."""
    N, D = _columns(num, seed), _columns(den, seed).ravel()
    return N, D, np.isfinite(N) & np.isfinite(D)[:, None]


def _wsr_upper_bound_simple(x: np.ndarray, delta: float, *, seed: int = 0, iters: int = 40
                            ) -> np.ndarray:
    """:func:`wsr_upper_bound` written plainly: the reference for the fast version."""
    X = _columns(x, seed)
    n, k = X.shape
    out = np.ones(k)
    if n == 0 or k == 0:
        return out
    thr = math.log(1 / delta)
    for sl in column_chunks(n, k):
        xs = X[:, sl]
        nu = _wsr_bets(xs, np.isfinite(xs), delta)
        every = np.arange(xs.shape[1])
        never = _wsr_log_wealth(xs, nu, np.ones(every.size)) < thr
        hi = _bisect(lambda _, eps: _wsr_log_wealth(xs, nu, eps) >= thr,  # noqa: B023
                     np.ones(every.size), every, iters, 0.0)
        out[sl] = np.where(never, 1.0, hi)
    return out


def _ratio_upper_bound_simple(num: np.ndarray, den: np.ndarray, delta: float, *, seed: int = 0,
                              iters: int = 40, r_max: float = 1e6) -> np.ndarray:
    """:func:`ratio_upper_bound` written plainly (``rtol`` 0): the reference for the fast one."""
    N, D, ok = _paired(num, den, seed)
    n, k = N.shape
    out = np.full(k, np.inf)
    if n == 0 or k == 0:
        return out
    thr = math.log(1 / delta)
    half = np.full(k, 0.5)

    def rejects(r: np.ndarray, sl: slice) -> np.ndarray:
        x = ratio_units(N[:, sl], D, r)
        good = ok[:, sl]
        return _wsr_log_wealth(np.where(good, x, np.nan), _wsr_bets(x, good, delta),
                               half[sl]) >= thr

    for sl in column_chunks(n, k):
        m = sl.stop - sl.start
        hi = np.maximum(2.0 * _pooled_ratio(N[:, sl], D, ok[:, sl]), 1e-12)
        done = rejects(hi, sl)
        while not done.all() and hi[~done].min() < r_max:
            hi = np.where(done, hi, hi * 4)
            done = rejects(hi, sl)
        hi = _bisect(lambda _, r: rejects(r, sl), hi, np.arange(m), iters, 0.0)  # noqa: B023
        out[sl] = np.where(done, hi, np.inf)
    return out


def _pooled_ratio(N: np.ndarray, D: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Σ num / Σ den over each column's rows (the ratio search starts at twice it)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio: np.ndarray = np.nansum(np.where(ok, N, 0.0), axis=0) / np.maximum(
            (np.where(ok, D[:, None], 0.0)).sum(axis=0), 1e-300)
    return ratio


def _column_ids(X: np.ndarray) -> np.ndarray:
    """Each column's first bit-identical column (by hash: ``np.unique(axis=0)`` is 10x slower)."""
    ids = np.empty(X.shape[1], dtype=np.int64)
    seen: dict[bytes, list[int]] = {}
    for j in range(X.shape[1]):
        col = np.ascontiguousarray(X[:, j])
        alike = seen.setdefault(hashlib.blake2b(col.data).digest(), [])
        same = next((i for i in alike if np.array_equal(col.view(np.int64),
                                                        X[:, i].view(np.int64))), None)
        if same is None:
            alike.append(j)
        ids[j] = j if same is None else ids[same]
    return ids


def _alike(cols: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(one column per group, each column's group) of ``cols`` grouped bitwise by ``keys``."""
    if not cols.size:
        return cols, cols
    bits = np.stack([np.ascontiguousarray(key[cols]).view(np.int64) for key in keys], axis=1)
    _, first, group = np.unique(bits, axis=0, return_index=True, return_inverse=True)
    return cols[first], group.reshape(-1)


def _blocks(X: np.ndarray, ok: np.ndarray, common: np.ndarray, cols: np.ndarray
            ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(columns, rows, contiguous (b, m) block of them on their ``ok`` rows); b > 1 only for
    columns with exactly the ``common`` rows; a column with no row is left out."""
    same = (ok[:, cols] == common[:, None]).all(axis=0)
    rows = np.flatnonzero(common)
    group = cols[same]
    if rows.size:
        step = max(1, _BLOCK_CELLS // rows.size)
        for i in range(0, group.size, step):
            cb = group[i:i + step]
            yield cb, rows, np.ascontiguousarray(X[np.ix_(rows, cb)].T)
    for j in cols[~same]:
        r = np.flatnonzero(ok[:, j])
        if r.size:
            yield np.array([j]), r, np.ascontiguousarray(X[r, j][None, :])


def _bets(x: np.ndarray, c: float, s: np.ndarray, out: np.ndarray) -> np.ndarray:
    """:func:`_wsr_bets` of a full block into ``out``; ``c`` = 2·log(1/δ), ``s`` a work array."""
    m = x.shape[1]
    cnt = np.arange(2.0, m + 2.0)  # rows so far, plus one
    np.cumsum(x, axis=1, out=s)
    s += 0.5
    s /= cnt  # running mean
    np.subtract(x, s, out=s)
    np.square(s, out=s)
    np.cumsum(s, axis=1, out=s)
    s += 0.25
    s /= cnt  # running variance
    out[:, 0] = m * 0.25  # a bet uses the variance of the rows before it (¼ before any)
    np.multiply(s[:, :-1], m, out=out[:, 1:])
    np.divide(c, out, out=out)
    np.sqrt(out, out=out)
    nu: np.ndarray = np.minimum(out, 1.0, out=out)
    return nu


def _max_log_wealth(x: np.ndarray, nu: np.ndarray, eps: np.ndarray, work: np.ndarray
                    ) -> np.ndarray:
    """:func:`_wsr_log_wealth` of a block (b, m) with every row present (so every ν > 0)."""
    np.subtract(eps[:, None], x, out=work)
    work *= nu
    np.log1p(work, out=work)
    np.cumsum(work, axis=1, out=work)
    best: np.ndarray = work.max(axis=1)
    return best


# ``f(act, value)``: something about the columns ``act`` (positions in a block) at ``value``.
_PerColumn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _subsets(block: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``rows(act)``: the block's rows ``act``, copied once per set (sets only shrink)."""
    last: dict[int, np.ndarray] = {block.shape[0]: block}

    def rows(act: np.ndarray) -> np.ndarray:
        if act.size not in last:
            last.clear()
            last[act.size] = block[act]
        return last[act.size]
    return rows


def _wsr_excess(x: np.ndarray, delta: float) -> _PerColumn:
    """``excess(act, eps)``: log-wealth − log(1/δ) of the columns ``act`` betting on "mean < eps"
    (≥ 0: rejected); the bets do not depend on eps, so they are computed once."""
    work = np.empty_like(x)
    nu = _bets(x, 2 * math.log(1 / delta), work, np.empty_like(x))
    xs, nus = _subsets(x), _subsets(nu)
    thr = math.log(1 / delta)

    def excess(act: np.ndarray, eps: np.ndarray) -> np.ndarray:
        return _max_log_wealth(xs(act), nus(act), eps, work[:act.size]) - thr
    return excess


def _ratio_test(num: np.ndarray, den: np.ndarray, thr: float, c: float) -> _PerColumn:
    """``test(act, r)``: which columns ``act`` reject H0 "E[num − r·den] ≥ 0" (WSR at ½)."""
    work = np.empty((4, *num.shape))
    nums = _subsets(num)

    def test(act: np.ndarray, r: np.ndarray) -> np.ndarray:
        d, x, s, nu = work[:, :act.size]
        np.multiply(r[:, None], den, out=d)
        np.subtract(nums(act), d, out=d)
        scale = np.maximum(d.max(axis=1), -d.min(axis=1))  # = max |d|
        scale = np.where(scale > 0, scale, 1.0)
        np.divide(d, scale[:, None], out=x)
        x += 1.0
        x /= 2.0
        _bets(x, c, s, nu)
        return _max_log_wealth(x, nu, np.full(act.size, 0.5), d) >= thr
    return test


def _bisect(test: _PerColumn, hi: np.ndarray, act: np.ndarray, iters: int, rtol: float
            ) -> np.ndarray:
    """The simple versions' bisection on [0, hi]; a column stops once hi − lo ≤ rtol·lo, so it
    ends at most rtol above the full ``iters`` steps' answer."""
    lo, hi = np.zeros(hi.size), hi.copy()
    for _ in range(iters):
        if rtol > 0:
            act = act[hi[act] - lo[act] > rtol * lo[act]]
        if not act.size:
            break
        mid = (lo[act] + hi[act]) / 2
        rej = test(act, mid)
        hi[act], lo[act] = np.where(rej, mid, hi[act]), np.where(rej, lo[act], mid)
    return hi


def _first_rejected(excess: _PerColumn, top: np.ndarray, probes: list[np.ndarray],
                    act: np.ndarray, steps: int) -> np.ndarray:
    """Where ``steps`` bisection steps on [0, 1] end: the smallest multiple of 2^-steps at which
    ``excess`` (nondecreasing, ``top`` at 1) is ≥ 0, by Illinois regula falsi on that grid after
    ``probes``; bisection where the bracket does not halve within two steps."""
    size = float(2**steps)
    lo, hi = np.zeros(top.size), np.full(top.size, size)  # grid units; excess(lo) < 0 unless 0
    f_lo, f_hi = np.full(top.size, np.nan), top.astype(np.float64)  # nan: not evaluated
    moved = np.zeros(top.size, dtype=np.int8)  # the end the last step moved: +1 hi, −1 lo
    width = np.full((2, top.size), np.inf)  # the bracket one and two steps back
    guess = [np.clip(np.round(np.ldexp(p, steps)), 1, size - 1) for p in probes]
    at = guess.pop(0) if guess else np.floor(hi / 2)
    act = act[hi[act] - lo[act] > 1]
    while act.size:
        f = excess(act, np.ldexp(at[act], -steps))
        up, down = act[f >= 0], act[f < 0]
        hi[up], f_hi[up] = at[up], f[f >= 0]
        f_lo[up[moved[up] == 1]] /= 2  # Illinois: the end kept twice counts half
        lo[down], f_lo[down] = at[down], f[f < 0]
        f_hi[down[moved[down] == -1]] /= 2
        moved[up], moved[down] = 1, -1
        act = act[hi[act] - lo[act] > 1]
        a, b = lo[act], hi[act]
        if guess:
            nxt = guess.pop(0)[act]
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                nxt = np.round(a + (b - a) * f_lo[act] / (f_lo[act] - f_hi[act]))
            slow = ~np.isfinite(nxt) | (b - a > width[1, act] / 2)
            nxt = np.where(slow, np.floor((a + b) / 2), nxt)
            width[1, act], width[0, act] = width[0, act], b - a
        at[act] = np.clip(nxt, a + 1, b - 1)
    bound: np.ndarray = np.ldexp(hi, -steps)
    return bound


def wsr_upper_bound(x: np.ndarray, delta: float, *, seed: int = 0, iters: int = 40
                    ) -> np.ndarray:
    """Per column of ``x`` (n, K) in [0, 1], NaN missing: the smallest ε ``iters`` bisection steps
    reach where "mean ≥ ε" is rejected at level δ (1 where ε = 1 is not)."""
    X = _columns(x, seed)
    n, k = X.shape
    out = np.ones(k)
    if n == 0 or k == 0:
        return out
    thr = math.log(1 / delta)
    ok = np.isfinite(X)
    if thr <= 0 or iters > 52 or np.abs(X, where=ok, out=np.zeros_like(X)).max() > _TAME:
        return _wsr_upper_bound_simple(x, delta, seed=seed, iters=iters)
    reps, group = _alike(np.arange(k), _column_ids(X))
    for cols, _, block in _blocks(X, ok, np.ones(n, dtype=bool), reps):
        excess = _wsr_excess(block, delta)
        every = np.arange(cols.size)
        top = excess(every, np.ones(cols.size))  # < 0: cannot reject, the bound is 1
        mean = block.mean(axis=1)
        spread = block.std(axis=1) * math.sqrt(2 * thr / block.shape[1])  # normal theory
        probes = [mean + 0.95 * spread, mean + 1.02 * spread]
        out[cols] = np.where(top >= 0, _first_rejected(excess, top, probes, every[top >= 0],
                                                       iters), 1.0)
    every_column: np.ndarray = out[reps][group]
    return every_column


def upper_bound(losses: np.ndarray, delta: float, *, signed: bool = False, seed: int = 0
                ) -> np.ndarray:
    """Each column's mean-loss bound; ``signed``: losses in [−1, 1] (a candidate may beat the
    reference)."""
    L = np.asarray(losses, dtype=np.float64)
    if signed:
        return 2.0 * wsr_upper_bound((L + 1.0) / 2.0, delta, seed=seed) - 1.0
    return wsr_upper_bound(L, delta, seed=seed)


def ratio_units(num: np.ndarray, den: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(num − r·den) scaled per column by its largest size into [0, 1]: mean < ½ says
    E[num] < r·E[den]."""
    diff = num - r[None, :] * den[:, None]
    scale = np.nanmax(np.abs(diff), axis=0, initial=0.0)
    scale = np.where(scale > 0, scale, 1.0)
    units: np.ndarray = (diff / scale[None, :] + 1.0) / 2.0
    return units


def ratio_upper_bound(num: np.ndarray, den: np.ndarray, delta: float, *, seed: int = 0,
                      iters: int = 40, r_max: float = 1e6, rtol: float = 1e-4) -> np.ndarray:
    """Bound on E[num_k] / E[den] per column (paired rows ≥ 0, e.g. spend vs. the reference's):
    the smallest r rejecting "E[num − r·den] ≥ 0" (``inf`` past ``r_max``), assuming future rows
    stay in the seen range; r widens ×4 from twice the pooled ratio, then bisects."""
    N, D, ok = _paired(num, den, seed)
    n, k = N.shape
    out = np.full(k, np.inf)
    if n == 0 or k == 0:
        return out
    thr = math.log(1 / delta)
    common = np.isfinite(D)
    hi = np.empty(k)
    for sl in column_chunks(n, k):  # the simple version's first guesses, chunk by chunk
        hi[sl] = np.maximum(2.0 * _pooled_ratio(N[:, sl], D, ok[:, sl]), 1e-12)
    if thr <= 0 or np.isinf(N).any() or np.isinf(D).any() or max(
            np.abs(N, where=ok, out=np.zeros_like(N)).max(), r_max, hi.max(),
            np.abs(D, where=common, out=np.zeros_like(D)).max()) > _TAME:
        return _ratio_upper_bound_simple(num, den, delta, seed=seed, iters=iters, r_max=r_max)
    c = 2 * math.log(1 / delta)
    ids = _column_ids(N)
    done = np.zeros(k, dtype=bool)
    widened = np.zeros(k, dtype=np.int64)

    def tests(cols: np.ndarray) -> Iterator[tuple[np.ndarray, _PerColumn]]:
        for cb, rows, block in _blocks(N, ok, common, cols):
            yield cb, _ratio_test(block, D[rows], thr, c)

    def widen(cols: np.ndarray, test: _PerColumn, last: np.ndarray, first: bool) -> None:
        """r ×4 until rejected or past r_max after ``last`` widenings (``first``: test r first)."""
        h, t = hi[cols], widened[cols]
        d = test(np.arange(cols.size), h) if first else done[cols]
        act = np.flatnonzero(~d & ((h < r_max) | (t < last)))
        while act.size:
            h[act] *= 4
            t[act] += 1
            d[act] = test(act, h[act])
            act = act[~d[act] & ((h[act] < r_max) | (t[act] < last[act]))]
        hi[cols], done[cols], widened[cols] = h, d, t

    # 1. Each column alone: widen until it rejects, or r reaches r_max.
    live = np.flatnonzero(ok.any(axis=0))
    reps, group = _alike(live, ids, hi)
    for cols, test in tests(reps):
        widen(cols, test, np.zeros(cols.size), first=True)
    hi[live], done[live], widened[live] = hi[reps][group], done[reps][group], widened[reps][group]
    for j in np.flatnonzero(~ok.any(axis=0)):  # no row: never rejects
        while hi[j] < r_max:
            hi[j] *= 4
            widened[j] += 1

    # 2. The simple version widens a chunk's columns together while any of them may still
    # reject below r_max, so a column that stopped at r_max widens further with its chunk.
    rounds = np.concatenate([np.full(sl.stop - sl.start, widened[sl].max())
                             for sl in column_chunks(n, k)])
    late = np.flatnonzero(~done & (widened < rounds) & ok.any(axis=0))
    reps, group = _alike(late, ids, hi, rounds)
    for cols, test in tests(reps):
        widen(cols, test, rounds[cols], first=False)
    hi[late], done[late] = hi[reps][group], done[reps][group]

    # 3. Bisection on [0, hi] for the columns that rejected.
    reps, group = _alike(np.flatnonzero(done), ids, hi)
    for cols, test in tests(reps):
        out[cols] = _bisect(test, hi[cols], np.arange(cols.size), iters, rtol)
    out[done] = out[reps][group]
    return out
