"""Certified operating points: a knob setting chosen on train rows *with a guarantee*, then
measured on test.

A point picked off a test-swept curve was picked with the test labels; a point picked on a small
calibration set by its point estimate is optimistic (the best of many noisy candidates looks
better than it is). Here every candidate (each strategy × each of its settings, and each single
model) carries an upper confidence bound computed on train rows only, and a target ships the
cheapest (or best) candidate whose bound meets it::

    train ──K folds──▶ fit on K−1 folds ──replay the settings──▶ outcomes on the held fold ──┐
    train ──────────── fit on every row ─▶ the deployed strategy ─sweep(test)─▶ its settings ┤
                  pooled: every train row once, as a calibration row for each candidate ◀────┘
    per candidate: upper bounds on the quality drop and the spend ratio (1 − δ, union bound)
    per target: the cheapest / best certified candidate ──▶ that very setting's test rows

- **K-fold calibration.** The deployed strategy is the one fitted on every train row (the test
  curve's fit): its sweep of the test *queries* (never their labels) fixes the settings. Each
  fold's copy, fitted on the other K−1 folds, replays those settings on its held fold
  (``replay(table, settings)``; a strategy without it is matched on equal settings), so every
  train row is a calibration row once. A router's λ or a cascade's budget keeps its meaning
  across fits, so the pooled rows estimate what the deployed setting does on new queries.
- **Bounds.** ``best_quality``: the paired quality drop against the best single model (chosen on
  train) on the same queries, an upper confidence bound at 1 − δ/m; ``budget:f``: the spend
  ratio E[cost] / E[best model's cost], paired too. m counts every candidate tried (a union
  bound), so the bound holds for whichever candidate is picked. Both are Waudby-Smith–Ramdas
  betting bounds (:mod:`ponder._risk`, the mechanism the cascade's Learn-then-Test uses),
  tight when most per-query differences are 0, as they are between similar strategies.
- **Certified** means the bound meets the target: drop ≤ ε, or spend ratio ≤ f. The ship pick is
  the cheapest certified candidate that saves (``best_quality``) or the best certified one
  within the budget; when none is certified it is the best single model, said plainly, with a
  power calculation: how many labelled queries like these would certify the best candidate.

The guarantee assumes the train rows and future queries are exchangeable; pooling K fold-fits
estimates the *procedure* (fit on train, then this setting), which is what ships. Test figures
are reported next to each bound and never influence a choice.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _risk
from . import _metrics as M
from ._baselines import _nanmean_rows, compute_baselines
from ._strategy import Replayable, Shippable, Strategy
from ._table import OutcomeTable

TARGETS = ("best_quality", "budget:0.1", "budget:0.2", "budget:0.3", "budget:0.5", "budget:1.0")
EPSILON = 0.01  # the quality a best_quality pick may lose, in score units (1 point of 100)
DELTA = 0.1  # the chance the guarantee may fail
ORACLE_NOTE = "upper bound: it reads every query's scores, so it has no deployable setting"
MIX_NOTE = "a reference line (random routing between the cheapest and the best model), not a " \
           "strategy to ship"
NEEDED_CAP = 1_000_000


MAX_FIT_QUERIES = 10_000  # strategies are fitted on at most this many train queries (sampled)


def default_folds(n_train: int) -> int:
    """K: 5 on small tables (each fold's fit sees 80% of train), 3 from 500 train queries on,
    where fitting dominates the run and 2/3 of train already fits almost as the whole does."""
    return max(2, min(n_train, 5 if n_train < 500 else 3))


def budget_of(target: str) -> float | None:
    return float(target.partition(":")[2]) if target.startswith("budget:") else None


def target_text(target: str, epsilon: float = EPSILON) -> str:
    """A target in words, for headings and sentences."""
    f = budget_of(target)
    if f is None:
        return f"the best model's quality (within {100 * epsilon:g} pt)"
    return f"at most {100 * f:g}% of the best model's cost"


# ---- data --------------------------------------------------------------------------------------
@dataclass
class Replay:
    """One strategy's settings, per query: on the pooled calibration rows (train order) and on
    the test rows (``test.query_ids`` order). Arrays are (P, Q)."""

    name: str
    kind: str
    settings: list[dict[str, Any]]
    cal_cost: np.ndarray
    cal_quality: np.ndarray
    test_cost: np.ndarray
    test_quality: np.ndarray


@dataclass(frozen=True)
class Reference:
    """The best single model chosen on train: per query on the calibration (train) and test rows."""

    model: str
    cal_cost: np.ndarray
    cal_quality: np.ndarray
    test_cost: np.ndarray
    test_quality: np.ndarray

    @property
    def cal_mean_cost(self) -> float:
        return _mean(self.cal_cost)

    @property
    def cal_mean_quality(self) -> float:
        return _mean(self.cal_quality)


@dataclass(frozen=True)
class Plan:
    """How operating points are calibrated for one evaluation."""

    train: OutcomeTable
    test: OutcomeTable
    fold_of: np.ndarray  # (Qc,) fold of each train query, train.query_ids order
    reference: Reference
    baselines: list[Replay]
    parts: list[tuple[OutcomeTable, OutcomeTable, np.ndarray]] = field(repr=False)

    @property
    def folds(self) -> int:
        return len(self.parts)


def _column(table: OutcomeTable, model: str) -> tuple[np.ndarray, np.ndarray]:
    q = len(table.query_ids)
    if model not in table.models:
        return np.full(q, np.nan), np.full(q, np.nan)
    j = table.models.index(model)
    return table.costs[:, j], table.scores[:, j]


def _mix(table: OutcomeTable, cheap: str, best: str, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random routing between two models, as in :func:`compute_baselines` (expected values)."""
    cc, qc = _column(table, cheap)
    cb, qb = _column(table, best)
    qc2, qb2 = np.where(np.isnan(qc), qb, qc), np.where(np.isnan(qb), qc, qb)
    cc2, cb2 = np.where(np.isnan(cc), cb, cc), np.where(np.isnan(cb), cc, cb)
    return (1 - p) * cc2 + p * cb2, (1 - p) * qc2 + p * qb2


def fit_rows(table: OutcomeTable, cap: int | None, seed: int) -> OutcomeTable:
    """The rows a strategy is fitted on: all of ``table`` up to ``cap`` queries, else a seeded
    sample of ``cap`` of them. Fitting past ~10^4 queries buys little and costs time linear in
    the size; calibration, certification and test still use every query."""
    ids = table.query_ids
    if cap is None or len(ids) <= cap:
        return table
    pick = np.sort(np.random.default_rng(seed + 7919).choice(len(ids), cap, replace=False))
    return table.subset(np.asarray(ids, dtype=object)[pick], name=table.name)


def plan(train: OutcomeTable, test: OutcomeTable, *, seed: int, folds: int | None = None,
         max_fit_queries: int | None = None) -> Plan | None:
    """Seeded K folds over the train queries (each fold's fit rows capped by ``max_fit_queries``,
    as the full fit's are); None when train has under two queries."""
    ids = list(train.query_ids)
    if len(ids) < 2:
        return None
    k = max(2, min(len(ids), folds or default_folds(len(ids))))
    fold_of = np.random.default_rng(seed + 104729).permutation(len(ids)) % k
    pos = {q: i for i, q in enumerate(ids)}
    arr = np.array(ids, dtype=object)
    parts = []
    for j in range(k):
        held = train.subset(list(arr[fold_of == j]))
        rows = np.array([pos[q] for q in held.query_ids], dtype=int)
        parts.append((fit_rows(train.subset(list(arr[fold_of != j])), max_fit_queries, seed + j),
                      held, rows))

    base = compute_baselines(train)  # identities chosen on train rows
    best, cheap = base.models[base.best], base.models[base.cheapest]
    ref = Reference(best, *_column(train, best), *_column(test, best))
    replays = []
    for m in base.models:
        c1, q1 = _column(train, m)
        c2, q2 = _column(test, m)
        replays.append(Replay(f"model:{m}", "baseline", [{"model": m}], c1[None], q1[None],
                              c2[None], q2[None]))
    if cheap != best:
        p = np.linspace(0.0, 1.0, 11)[:, None]
        settings = [{"p_best": round(float(v), 6), "cheap": cheap, "best": best} for v in p[:, 0]]
        replays.append(Replay("random-mix", "baseline", settings, *_mix(train, cheap, best, p),
                              *_mix(test, cheap, best, p)))
    return Plan(train, test, fold_of, ref, replays, parts)


def _setting_key(setting: dict[str, Any]) -> str:
    return json.dumps(setting, sort_keys=True, default=str)


def _replay_on(s: Strategy, table: OutcomeTable, settings: list[dict[str, Any]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) cost and quality of ``settings`` on ``table`` by a strategy fitted elsewhere: its
    ``replay`` where it has one, else its own sweep matched on equal settings (NaN: not found)."""
    n = len(table.query_ids)
    if isinstance(s, Replayable):
        points: list[Any] = list(s.replay(table, settings))
        if len(points) != len(settings):
            raise ValueError(f"replay returned {len(points)} points for {len(settings)} settings")
    else:
        own = {_setting_key(p.setting): p for p in s.sweep(table)}
        points = [own.get(_setting_key(x)) for x in settings]
    cost = np.full((len(settings), n), np.nan)
    quality = np.full((len(settings), n), np.nan)
    for i, pt in enumerate(points):
        if pt is None:
            continue
        c, v = np.asarray(pt.cost, dtype=float), np.asarray(pt.quality, dtype=float)
        if c.shape != (n,) or v.shape != (n,):
            raise ValueError(f"operating point {i} has shape {c.shape}/{v.shape}, expected ({n},)")
        cost[i], quality[i] = c, v
    return cost, quality


def calibrate(spare: Strategy, name: str, kind: str, settings: list[dict[str, Any]],
              test_cost: np.ndarray, test_quality: np.ndarray, p: Plan,
              tick: Any = None) -> Replay:
    """Fit a copy of ``spare`` (unfitted) on each K−1 folds and replay ``settings`` (the deployed
    fit's) on the held fold; the pooled rows are every train query once."""
    n = len(p.train.query_ids)
    cost = np.full((len(settings), n), np.nan)
    quality = np.full((len(settings), n), np.nan)
    found = np.ones(len(settings), dtype=bool)
    for k, (fit, held, rows) in enumerate(p.parts):
        model = copy.deepcopy(spare)
        model.fit(fit)
        c, q = _replay_on(model, held, settings)
        found &= ~np.isnan(c).all(axis=1) | (c.shape[1] == 0)
        cost[:, rows], quality[:, rows] = c, q
        if tick is not None:
            tick(k + 1)
    if not found.any():
        raise ValueError("the fold fits swept none of the settings of the fit on every train row "
                         "(its settings depend on the fit: give the strategy a "
                         "replay(table, settings) method)")
    cost[~found], quality[~found] = np.nan, np.nan  # a setting some fold lacks: no candidate
    return Replay(name, kind, [dict(s) for s in settings], cost, quality,
                  np.asarray(test_cost, dtype=float), np.asarray(test_quality, dtype=float))


def fresh_copy(s: Strategy) -> Strategy | None:
    """An unfitted copy for the fold fits, so the caller's object keeps its full-train fit."""
    try:
        return copy.deepcopy(s)
    except Exception:  # noqa: BLE001 - an uncopyable strategy only loses its certified points
        return None


# ---- bounds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bounds:
    """Every candidate (strategy × setting), flattened: point estimates and upper bounds on the
    pooled calibration rows. ``owner``/``index`` say whose setting a candidate is."""

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
        """Meets the target by its point estimate on the calibration rows, with no guarantee and
        no slack: the best model's quality reached, or the budget kept."""
        f = budget_of(target)
        if f is None:
            return M._reaches(-np.nan_to_num(self.drop, nan=np.inf), 0.0)
        return self.ratio <= f * (1 + M._RTOL)

    def bound(self, target: str) -> np.ndarray:
        return self.drop_bound if budget_of(target) is None else self.ratio_bound


def _paired(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(C, Q) → NaN where the candidate or the reference lacks a query."""
    return np.where(np.isfinite(x) & np.isfinite(ref)[None, :], x, np.nan)


def bound_all(replays: list[Replay], ref: Reference, *, epsilon: float, delta: float,
              seed: int = 0) -> Bounds:
    """Upper bounds for every candidate at 1 − δ/m (m: every candidate but the reference)."""
    owner = np.concatenate([np.full(len(r.settings), k) for k, r in enumerate(replays)])
    index = np.concatenate([np.arange(len(r.settings)) for r in replays])
    q = np.vstack([r.cal_quality for r in replays])
    c = np.vstack([r.cal_cost for r in replays])
    exact = np.array([replays[o].name == f"model:{ref.model}" for o in owner])
    m = max(1, int((~exact).sum()))
    qp, cp = _paired(q, ref.cal_quality), _paired(c, ref.cal_cost)
    with np.errstate(invalid="ignore", divide="ignore"):
        drops = ref.cal_quality[None, :] - qp
        drop = _nanmean_rows(drops)
        ref_c = np.where(np.isfinite(cp), ref.cal_cost[None, :], np.nan)
        ratio = np.nansum(cp, axis=1) / np.nansum(ref_c, axis=1)
    level = delta / m
    drop_bound = _risk.upper_bound(np.clip(drops.T, -1, 1), level, signed=True, seed=seed)
    ratio_bound = _risk.ratio_upper_bound(cp.T, ref.cal_cost, level, seed=seed)
    drop_bound = np.where(exact, 0.0, drop_bound)
    ratio_bound = np.where(exact, 1.0, ratio_bound)
    return Bounds(owner, index, _nanmean_rows(c), _nanmean_rows(q), drop, ratio, drop_bound,
                  ratio_bound, exact, m, epsilon, delta)


def _rank(target: str, cost: np.ndarray, quality: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` ordered best first: cheapest (then better) for best_quality, better (then
    cheaper) for a budget."""
    if budget_of(target) is None:
        return idx[np.lexsort((-quality[idx], cost[idx]))]
    return idx[np.lexsort((cost[idx], -quality[idx]))]


def _same(a: float, b: float) -> bool:
    """Equal up to floating-point rounding (a route-cascade that sends every query to the best
    model sums the same costs in another order)."""
    return math.isclose(a, b, rel_tol=M._RTOL, abs_tol=1e-12)


def pick(target: str, cost: np.ndarray, quality: np.ndarray, idx: np.ndarray,
         simple: np.ndarray | None = None) -> int | None:
    """The best of ``idx`` for ``target``; among candidates tied up to rounding, a simple one
    (``simple``: a single model, the same figures with nothing to train)."""
    if idx.size == 0:
        return None
    order = _rank(target, cost, quality, idx)
    top = int(order[0])
    if simple is None:
        return top
    tied = [int(i) for i in order if _same(cost[i], cost[top]) and _same(quality[i], quality[top])]
    return next((i for i in tied if simple[i]), top)


def _saves(b: Bounds, ref_cost: float) -> np.ndarray:
    return b.cost < ref_cost * (1 - M._RTOL)


# ---- entries -----------------------------------------------------------------------------------
def _wmeans(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(B, Q) resampling counts × (Q,) per-query values → (B,) NaN-aware means."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.where(ok, x, 0.0)) / (w @ ok.astype(float))


def _mean(x: np.ndarray) -> float:
    return float(_nanmean_rows(np.asarray(x, dtype=float)[None])[0])


def _figures(b: Bounds, i: int, target: str, r: Replay, ref: Reference,
             w: np.ndarray | None) -> dict[str, Any]:
    """Calibration figures, bound and test figures of candidate ``i`` for ``target``."""
    f = budget_of(target)
    k = int(b.index[i])
    tc, tq = r.test_cost[k], r.test_quality[k]
    ref_c, ref_q = _mean(ref.test_cost), _mean(ref.test_quality)
    c, q = _mean(tc), _mean(tq)
    out: dict[str, Any] = {
        "setting": r.settings[k],
        "certified": bool(b.certified(target)[i]),
        "bound": float(b.bound(target)[i]),
        "calibration": {"cost_usd": float(b.cost[i]), "quality": float(b.quality[i]),
                        "cost_ratio": float(b.ratio[i]), "quality_vs_best": float(-b.drop[i])},
    }
    test: dict[str, Any] = {"cost_usd": c, "quality": q,
                            "cost_ratio": c / ref_c if ref_c > 0 else None,
                            "quality_vs_best": q - ref_q}
    out["test"] = test
    if f is not None:
        out["budget_usd"] = f * ref.cal_mean_cost
        out["test_budget_ratio"] = c / (f * ref_c) if ref_c > 0 else None
        out["over_budget"] = bool(out["test_budget_ratio"] is not None
                                  and out["test_budget_ratio"] > 1 + M._RTOL)
    if w is not None:
        bc, bq = _wmeans(w, tc), _wmeans(w, tq)
        rc, rq = _wmeans(w, ref.test_cost), _wmeans(w, ref.test_quality)
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
    """One entry per target for strategy ``k`` (= ``r``): its certified pick, else the pick its
    point estimates make (``certified: false``), else none; and the chosen setting per target."""
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
            out.append(entry)
            continue
        chosen[target] = int(b.index[i])
        entry.update(met=True, **_figures(b, i, target, r, ref, w))
        out.append(entry)
    return out, chosen


def headline_target(chosen: dict[str, int]) -> str | None:
    """The target a strategy's one-number summaries use: best_quality, else the full budget."""
    for t in ("best_quality", "budget:1.0"):
        if t in chosen:
            return t
    return None


# ---- what to ship ------------------------------------------------------------------------------
def _shippable(replays: list[Replay], b: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """Candidates that may ship (single models and strategies; not the random mix) and which of
    them are single models."""
    names = [r.name for r in replays]
    ship = np.array([names[o] != "random-mix" for o in b.owner])
    simple = np.array([names[o].startswith("model:") for o in b.owner])
    return ship, simple


def _eligible(target: str, b: Bounds, ship: np.ndarray, ref_cost: float, *, certified: bool
              ) -> np.ndarray:
    """Candidates that may be the ship pick: certified (or meeting the target by the point
    estimate), never the reference itself; for best_quality only those that save."""
    ok = ship & (b.certified(target) if certified else b.met(target)) & np.isfinite(b.cost)
    f = budget_of(target)
    if f is None:
        ok &= _saves(b, ref_cost) & ~b.exact
    elif f < 1.0 - M._RTOL:  # the best model itself keeps only a budget of its own cost
        ok &= ~b.exact
    return np.flatnonzero(ok)


def _needed(target: str, b: Bounds, replays: list[Replay], ref: Reference, ship: np.ndarray,
            simple: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """Power calculation for a target nothing certifies: how many labelled queries like these
    would certify the best candidate by its point estimate, and, where that is out of reach, the
    candidate closest to certification."""
    f = budget_of(target)
    ref_cost = ref.cal_mean_cost
    idx = _eligible(target, b, ship, ref_cost, certified=False)
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
        x = _risk.ratio_units(c[:, None], ref.cal_cost, np.array([f]))[:, 0]
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
                "calibration": {"cost_usd": float(b.cost[i]), "quality": float(b.quality[i]),
                                "cost_ratio": float(b.ratio[i]),
                                "quality_vs_best": float(-b.drop[i])},
                "n_labelled": n_have, "n_needed": n, "at_limit": at_limit,
                "n_more": None if n is None else max(0, n - n_have)}

    best = pick(target, b.cost, b.quality, idx, simple)
    assert best is not None
    out = [entry(best, "best")]
    if out[0]["n_needed"] is None:
        near = min(idx, key=lambda i: (approx(int(i)), b.cost[i]))
        if int(near) != best and np.isfinite(approx(int(near))):
            out.append(entry(int(near), "closest"))
    return out


def _stability(target: str, b: Bounds, replays: list[Replay], p: Plan, ship: np.ndarray,
               simple: np.ndarray, shipped: tuple[str, int]) -> dict[str, Any]:
    """What each fold alone would pick by its point estimates (no bound: a fold is too small to
    certify much), against the ship pick."""
    picks = []
    q = np.vstack([r.cal_quality for r in replays])
    c = np.vstack([r.cal_cost for r in replays])
    for k in range(p.folds):
        cols = p.fold_of == k
        ref_q, ref_c = p.reference.cal_quality[cols], p.reference.cal_cost[cols]
        qk, ck = _paired(q[:, cols], ref_q), _paired(c[:, cols], ref_c)
        with np.errstate(invalid="ignore", divide="ignore"):
            cost, quality = _nanmean_rows(ck), _nanmean_rows(qk)
            drop = _nanmean_rows(ref_q[None, :] - qk)
            ratio = np.nansum(ck, axis=1) / np.nansum(np.where(np.isfinite(ck), ref_c, np.nan),
                                                       axis=1)
        fold = Bounds(b.owner, b.index, cost, quality, drop, ratio, drop, ratio, b.exact, b.m,
                      b.epsilon, b.delta)
        i = pick(target, cost, quality,
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
    """Per target, what to ship: the cheapest certified candidate that saves (best_quality) or
    the best certified one within the budget; else the best single model, with the number of
    labelled queries that would certify the best candidate."""
    ref = p.reference
    ship, simple = _shippable(replays, b)
    ref_i = int(np.flatnonzero(b.exact)[0])
    out: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], str] = {}
    for target in TARGETS:
        idx = _eligible(target, b, ship, ref.cal_mean_cost, certified=True)
        i = pick(target, b.cost, b.quality, idx, simple)
        fallback = i is None
        if i is None:
            i = ref_i
        r = replays[int(b.owner[i])]
        entry: dict[str, Any] = {"target": target, "strategy": r.name, "kind": r.kind,
                                 **_figures(b, i, target, r, ref, w)}
        entry["bound_of"] = ("quality drop vs the best model" if budget_of(target) is None
                             else "spend / the best model's spend")
        entry["fallback"] = fallback
        entry["needed"] = None
        if fallback:
            entry["certified"] = False
            entry["needed"] = _needed(target, b, replays, ref, ship, simple, seed)
        key = (r.name, int(b.index[i]))
        entry["same_as"] = seen.get(key)
        seen.setdefault(key, target)
        entry["stability"] = _stability(target, b, replays, p, ship, simple, key)
        out.append(entry)
    return out


# ---- writing what ships ------------------------------------------------------------------------
def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")
    return out or "strategy"


def ship_folder(entry: dict[str, Any]) -> str:
    """The folder (under the --ship directory) of a ship pick, named after the pick and its first
    target (``route-cascade-budget-20pct``); also its ``[strategies]`` name, so no dots."""
    first = entry.get("same_as") or entry["target"]
    f = budget_of(first)
    target = "best-quality" if f is None else f"budget-{100 * f:g}pct".replace(".", "_")
    return _slug(f"{entry['strategy'].removeprefix('model:')}-{target}")


def _live_name(model: str, model_map: dict[str, str] | None) -> str:
    if model_map and model in model_map:
        return str(model_map[model])
    return model if ":" in model else f"replay:{model}"


def write_ship(ship: list[dict[str, Any]], fitted: dict[str, Strategy], directory: str | Path,
               *, model_map: dict[str, str] | None = None) -> None:
    """Write each distinct ship pick's strategy files, exactly as measured, into ``directory``,
    and a ``ponder.toml`` holding their ``[strategies]`` entries; record the paths in ``ship``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    entries: list[str] = []
    for e in ship:
        folder = ship_folder(e)
        if e.get("same_as"):
            first = next(x for x in ship if x["target"] == e["same_as"])
            e["files"] = dict(first["files"]) if first.get("files") else None
            continue
        out = root / folder
        name = e["strategy"]
        try:
            if name.startswith("model:"):
                out.mkdir(parents=True, exist_ok=True)
                path = out / "strategy.json"
                doc = {"format": "ponder-strategy", "version": 1, "kind": "single",
                       "name": folder, "model": _live_name(e["setting"]["model"], model_map)}
                path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            else:
                s = fitted.get(name)
                if not isinstance(s, Shippable):
                    raise NotImplementedError(f"the {name} strategy cannot write its files (it "
                                              "has no save(setting, directory))")
                path = Path(s.save(e["setting"], out, name=folder, model_map=model_map))
        except Exception as exc:  # noqa: BLE001 - said in the report; the other picks still ship
            e["files"] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        rel = path.relative_to(root).as_posix()
        e["files"] = {"folder": str(out), "strategy_file": str(path), "name": folder,
                      "config": f'[strategies.{folder}]\npath = "{root.as_posix()}/{rel}"'}
        targets = ", ".join(x["target"] for x in ship if ship_folder(x) == folder)
        entries.append(f"# {targets}: {name}\n[strategies.{folder}]\npath = \"{rel}\"\n")
    (root / "ponder.toml").write_text(
        "# Written by `ponder eval --ship`: the strategies it measured, one per pick (paths are "
        "relative to this file).\n# Serve one: ponder serve --config THIS_FILE, or ponder run "
        "--strategy FOLDER/strategy.json\n\n" + "\n".join(entries), encoding="utf-8")
    (root / "ship.json").write_text(json.dumps(_plain(ship), indent=1) + "\n", encoding="utf-8")


def _plain(x: Any) -> Any:
    """JSON-able copy (numpy scalars → Python, non-finite → None)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    return x
