"""Certifying operating points on :mod:`._deploy`'s pooled calibration rows: Waudby-Smith–Ramdas
betting upper bounds at 1 − δ/m over every candidate tried, on the paired quality drop against
the best single model or the paired spend ratio; the pick per target; what ships (the best
single model when nothing certifies, with a power calculation). Test figures never pick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from .. import _bounds, _risk
from . import _metrics as M
from ._baselines import _nanmean_rows, wmeans
from ._deploy import NEEDED_CAP, TARGETS, Later, Plan, Reference, Replay, Run, _mean, budget_of


# ---- bounds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bounds:
    """Every candidate (strategy × setting) flattened: ``owner``/``index`` say whose setting."""

    owner: np.ndarray
    index: np.ndarray
    cost: np.ndarray  # mean cost per query
    quality: np.ndarray
    drop: np.ndarray  # mean paired quality drop against the reference (negative: better)
    ratio: np.ndarray  # paired spend ratio against the reference
    drop_bound: np.ndarray
    ratio_bound: np.ndarray
    exact: np.ndarray  # the reference itself: figures exact, no bound needed
    m: int
    epsilon: float
    delta: float

    def certified(self, target: str) -> np.ndarray:
        f = budget_of(target)
        if f is None:
            return self.drop_bound <= self.epsilon * (1 + M._RTOL)
        return self.ratio_bound <= f * (1 + M._RTOL)

    def met(self, target: str) -> np.ndarray:
        """Meets the target by its point estimate, with no guarantee and no slack."""
        f = budget_of(target)
        if f is None:
            return M._reaches(-np.nan_to_num(self.drop, nan=np.inf), 0.0)
        return self.ratio <= f * (1 + M._RTOL)

    def bound(self, target: str) -> np.ndarray:
        return self.drop_bound if budget_of(target) is None else self.ratio_bound

    def calibration(self, i: int) -> dict[str, float]:
        return {"cost_usd": float(self.cost[i]), "quality": float(self.quality[i]),
                "cost_ratio": float(self.ratio[i]), "quality_vs_best": float(-self.drop[i])}


def _paired(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(C, Q): NaN where the candidate or the reference lacks a query."""
    return np.where(np.isfinite(x) & np.isfinite(ref)[None, :], x, np.nan)


def _against(q: np.ndarray, c: np.ndarray, ref_q: np.ndarray, ref_c: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired (C, Q) quality and cost, the per-query quality drops, each candidate's spend ratio."""
    qp, cp = _paired(q, ref_q), _paired(c, ref_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.nansum(cp, axis=1) / np.nansum(np.where(np.isfinite(cp), ref_c, np.nan), axis=1)
        return qp, cp, ref_q[None, :] - qp, ratio


def bound_all(replays: list[Replay], ref: Reference, *, epsilon: float, delta: float,
              seed: int = 0, run: Run = Later) -> Bounds:
    """Upper bounds at 1 − δ/m (m: every candidate but the reference), a slice of candidates at
    a time (the same numbers as all at once, in memory for one slice), each slice a ``run`` job."""
    owner = np.concatenate([np.full(len(r.settings), k) for k, r in enumerate(replays)])
    index = np.concatenate([np.arange(len(r.settings)) for r in replays])
    exact = np.array([replays[o].name == f"model:{ref.model}" for o in owner])
    m = max(1, int((~exact).sum()))
    level = delta / m
    k, n = len(owner), len(ref.cal_quality)

    def bound(sl: slice) -> tuple[np.ndarray, ...]:
        rows = list(zip(owner[sl].tolist(), index[sl].tolist(), strict=True))
        q = np.stack([replays[o].cal_quality[i] for o, i in rows])
        c = np.stack([replays[o].cal_cost[i] for o, i in rows])
        _, cp, drops, ratio = _against(q, c, ref.cal_quality, ref.cal_cost)
        return (_nanmean_rows(c), _nanmean_rows(q), _nanmean_rows(drops), ratio,
                _bounds.upper_bound(np.clip(drops.T, -1, 1), level, signed=True, seed=seed),
                _bounds.ratio_upper_bound(cp.T, ref.cal_cost, level, seed=seed))

    out = np.empty((6, k))
    chunks = _bounds.column_chunks(n, k)
    for sl, job in zip(chunks, [run(partial(bound, sl)) for sl in chunks], strict=True):
        out[:, sl] = job.result()
    cost, quality, drop, ratio, drop_bound, ratio_bound = out
    drop_bound = np.where(exact, 0.0, drop_bound)
    ratio_bound = np.where(exact, 1.0, ratio_bound)
    return Bounds(owner, index, cost, quality, drop, ratio, drop_bound, ratio_bound, exact, m,
                  epsilon, delta)


def _same(a: float, b: float) -> bool:
    """Equal up to rounding (a route-cascade sending every query to the best model sums the same
    costs in another order)."""
    return math.isclose(a, b, rel_tol=M._RTOL, abs_tol=1e-12)


def pick(target: str, cost: np.ndarray, quality: np.ndarray, idx: np.ndarray,
         simple: np.ndarray | None = None) -> int | None:
    """The best of ``idx`` for ``target``; among ties up to rounding, a ``simple`` one (a single
    model: the same figures with nothing to train)."""
    if idx.size == 0:
        return None
    # best first: cheapest (then better) for best_quality, better (then cheaper) for a budget
    keys = (-quality[idx], cost[idx])
    order = idx[np.lexsort(keys if budget_of(target) is None else keys[::-1])]
    top = int(order[0])
    if simple is None:
        return top
    tied = [int(i) for i in order if _same(cost[i], cost[top]) and _same(quality[i], quality[top])]
    return next((i for i in tied if simple[i]), top)


# ---- entries -----------------------------------------------------------------------------------
def _boot_means(ref: Reference, w: np.ndarray, owner: Replay | None, k: int, cost: np.ndarray,
                quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``wmeans`` of a setting's test cost and quality, kept on ``ref`` for these weights (an
    entry holds its replay, so the replay's id stays its own)."""
    if ref.boot.get("w") is not w:
        ref.boot.clear()
        ref.boot["w"] = w
    if (id(owner), k) not in ref.boot:
        ref.boot[id(owner), k] = owner, wmeans(w, cost), wmeans(w, quality)
    means: tuple[np.ndarray, np.ndarray] = ref.boot[id(owner), k][1:]
    return means


def _figures(b: Bounds, i: int, target: str, r: Replay, ref: Reference,
             w: np.ndarray | None) -> dict[str, Any]:
    f = budget_of(target)
    k = int(b.index[i])
    tc, tq = r.test_cost[k], r.test_quality[k]
    ref_c, ref_q = _mean(ref.test_cost), _mean(ref.test_quality)
    c, q = _mean(tc), _mean(tq)
    test: dict[str, Any] = {"cost_usd": c, "quality": q,
                            "cost_ratio": c / ref_c if ref_c > 0 else None,
                            "quality_vs_best": q - ref_q}
    out: dict[str, Any] = {"setting": r.settings[k], "certified": bool(b.certified(target)[i]),
                           "bound": float(b.bound(target)[i]), "calibration": b.calibration(i),
                           "test": test}
    if f is not None:
        out["budget_usd"] = f * ref.cal_mean_cost
        out["test_budget_ratio"] = c / (f * ref_c) if ref_c > 0 else None
        out["over_budget"] = bool(out["test_budget_ratio"] is not None
                                  and out["test_budget_ratio"] > 1 + M._RTOL)
    if w is not None:
        bc, bq = _boot_means(ref, w, r, k, tc, tq)
        rc, rq = _boot_means(ref, w, None, 0, ref.test_cost, ref.test_quality)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = bc / rc
        test["ci95"] = {"cost_usd": M.percentile_ci(bc), "quality": M.percentile_ci(bq),
                        "cost_ratio": M.percentile_ci(ratio),
                        "quality_vs_best": M.percentile_ci(bq - rq)}
        hi = (test["ci95"]["cost_ratio"] or (None, None))[1]
        out["saving_in_doubt"] = bool(hi is not None and hi >= 1.0)
        if f is not None:
            out["test_budget_ratio_ci95"] = M.percentile_ci(ratio / f)
    return out


def deployed_points(r: Replay, k: int, b: Bounds, ref: Reference, w: np.ndarray | None
                    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per target, strategy ``k``'s certified pick, else its point estimates' pick (uncertified),
    else none; and the chosen setting per target."""
    out: list[dict[str, Any]] = []
    chosen: dict[str, int] = {}
    mine = np.flatnonzero(b.owner == k)
    for target in TARGETS:
        f = budget_of(target)
        entry: dict[str, Any] = {"target": target}
        cert = mine[b.certified(target)[mine]]
        met = mine[b.met(target)[mine] & np.isfinite(b.cost[mine])]
        i = pick(target, b.cost, b.quality, cert if cert.size else met)
        if i is None:
            entry.update(met=False, certified=False, setting=None, calibration=None, test=None,
                         bound=None, note="no setting reaches the best model's quality on the "
                                          "calibration rows" if f is None else
                         "every setting costs more than the budget on the calibration rows")
        else:
            chosen[target] = int(b.index[i])
            entry.update(met=True, **_figures(b, i, target, r, ref, w))
        out.append(entry)
    return out, chosen


# ---- what to ship ------------------------------------------------------------------------------
def _eligible(target: str, b: Bounds, ship: np.ndarray, ref_cost: float, *, certified: bool
              ) -> np.ndarray:
    """Candidates that may ship: certified (or met), not the reference; for best_quality, saving."""
    ok = ship & (b.certified(target) if certified else b.met(target)) & np.isfinite(b.cost)
    f = budget_of(target)
    if f is None:
        ok &= (b.cost < ref_cost * (1 - M._RTOL)) & ~b.exact
    elif f < 1.0 - M._RTOL:  # the best model itself keeps only a budget of its own cost
        ok &= ~b.exact
    return np.flatnonzero(ok)


def _needed(target: str, b: Bounds, replays: list[Replay], ref: Reference, ship: np.ndarray,
            simple: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """For a target nothing certifies: how many labelled queries like these would certify the
    best candidate, and where that is out of reach, the candidate closest to certification."""
    f = budget_of(target)
    idx = _eligible(target, b, ship, ref.cal_mean_cost, certified=False)
    idx = idx[~b.certified(target)[idx]]
    if idx.size == 0:
        return []
    level = b.delta / b.m

    def units(i: int) -> tuple[np.ndarray, float]:
        r = replays[int(b.owner[i])]
        k = int(b.index[i])
        if f is None:
            d = ref.cal_quality - r.cal_quality[k]
            return (np.clip(d, -1, 1) + 1) / 2, (b.epsilon + 1) / 2
        c = _paired(r.cal_cost[k][None], ref.cal_cost)[0]
        x = _bounds.ratio_units(c[:, None], ref.cal_cost, np.array([f]))[:, 0]
        return x, 0.5

    def approx(i: int) -> float:  # normal theory, to rank candidates cheaply
        x, eps = units(i)
        x = x[np.isfinite(x)]
        gap = eps - float(x.mean())
        return np.inf if gap <= 0 else 2 * max(float(x.var()), 1e-4) * math.log(1 / level) / gap**2

    def entry(i: int, why: str) -> dict[str, Any]:
        x, eps = units(i)
        n_have = int(np.isfinite(x).sum())
        n = _risk.samples_needed(x, eps, level, seed=seed, cap=NEEDED_CAP)
        at_limit = bool(np.nanmean(x) >= eps)  # no amount of data like these would certify it
        r = replays[int(b.owner[i])]
        return {"why": why, "strategy": r.name, "setting": r.settings[int(b.index[i])],
                "calibration": b.calibration(i), "n_labelled": n_have, "n_needed": n,
                "at_limit": at_limit, "n_more": None if n is None else max(0, n - n_have)}

    best = pick(target, b.cost, b.quality, idx, simple)
    assert best is not None
    out = [entry(best, "best")]
    if out[0]["n_needed"] is None:
        near = min(idx, key=lambda i: (approx(int(i)), b.cost[i]))
        if int(near) != best and np.isfinite(approx(int(near))):
            out.append(entry(int(near), "closest"))
    return out


def _fold_bounds(b: Bounds, replays: list[Replay], p: Plan) -> list[Bounds]:
    """Each fold's point estimates (the ``*_bound`` fields repeat them), a replay at a time."""
    out = []
    for k in range(p.folds):
        cols = p.fold_of == k
        ref_q, ref_c = p.reference.cal_quality[cols], p.reference.cal_cost[cols]
        parts = []
        for r in replays:
            qk, ck, drops, ratio = _against(r.cal_quality[:, cols], r.cal_cost[:, cols], ref_q,
                                            ref_c)
            parts.append((_nanmean_rows(ck), _nanmean_rows(qk), _nanmean_rows(drops), ratio))
        cost, quality, drop, ratio = (np.concatenate(x) for x in zip(*parts, strict=True))
        out.append(Bounds(b.owner, b.index, cost, quality, drop, ratio, drop, ratio, b.exact,
                          b.m, b.epsilon, b.delta))
    return out


def _stability(target: str, b: Bounds, replays: list[Replay], p: Plan, folds: list[Bounds],
               ship: np.ndarray, simple: np.ndarray, shipped: tuple[str, int]) -> dict[str, Any]:
    """What each fold alone would pick by its point estimates (too small to certify), against
    the ship pick."""
    picks = []
    for k, fold in enumerate(folds):
        ref_c = p.reference.cal_cost[p.fold_of == k]
        i = pick(target, fold.cost, fold.quality,
                 _eligible(target, fold, ship, _mean(ref_c), certified=False), simple)
        if i is None:
            picks.append({"strategy": f"model:{p.reference.model}", "index": 0})
        else:
            picks.append({"strategy": replays[int(b.owner[i])].name, "index": int(b.index[i])})
    name, index = shipped
    return {"folds": p.folds,
            "same_strategy": sum(x["strategy"] == name for x in picks),
            "same_setting": sum(x["strategy"] == name and x["index"] == index for x in picks),
            "picks": [x["strategy"] for x in picks]}


def ship_picks(replays: list[Replay], b: Bounds, p: Plan, w: np.ndarray | None, *,
               seed: int = 0) -> list[dict[str, Any]]:
    """Per target: the cheapest certified candidate that saves, or the best certified one within
    the budget; else the best single model, with the data that would certify one."""
    ref = p.reference
    names = [replays[o].name for o in b.owner]
    ship = np.array([n != "random-mix" for n in names])  # single models and strategies may ship
    simple = np.array([n.startswith("model:") for n in names])
    ref_i = int(np.flatnonzero(b.exact)[0])
    out: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], str] = {}
    folds = _fold_bounds(b, replays, p)
    for target in TARGETS:
        idx = _eligible(target, b, ship, ref.cal_mean_cost, certified=True)
        i = pick(target, b.cost, b.quality, idx, simple)
        fallback = i is None
        i = ref_i if i is None else i
        r = replays[int(b.owner[i])]
        entry: dict[str, Any] = {"target": target, "strategy": r.name, "kind": r.kind,
                                 **_figures(b, i, target, r, ref, w)}
        entry.update(bound_of="quality drop vs the best model" if budget_of(target) is None
                     else "spend / the best model's spend", fallback=fallback,
                     needed=_needed(target, b, replays, ref, ship, simple, seed) if fallback
                     else None)
        if fallback:
            entry["certified"] = False
        key = (r.name, int(b.index[i]))
        entry["same_as"] = seen.get(key)
        seen.setdefault(key, target)
        entry["stability"] = _stability(target, b, replays, p, folds, ship, simple, key)
        out.append(entry)
    return out

