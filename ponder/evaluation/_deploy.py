"""Deployable operating points: a knob setting chosen without test labels, then measured on test.

The test-swept curve shows what a knob *can* reach on test. A point picked off that curve was
picked with the test labels, so no user could deploy it. Here every strategy's setting is chosen
for a named target on train rows and only then replayed on the test rows::

    train ──split──▶ fit part ─────────fit──────────▶ a copy of the strategy
                     calibration part ─┐                        │
    test ──────────────────────────────┴─▶ sweep(calibration ∪ test), one set of settings
    per target: choose a setting on the calibration rows ──▶ the same setting's test rows

Why a calibration part, not the train rows or cross-fitting:

- Scoring a strategy on the rows it was fitted on flatters it (a router remembers its train
  queries), so it would pick settings that are too cheap.
- The :class:`~ponder.evaluation.Strategy` protocol offers ``fit`` and ``sweep`` only. A router's
  knob grid is quantiles of its own predictions, so k fold-fits give k different sets of settings
  and no setting to aggregate across folds: cross-fitting cannot be done for every strategy.
  (The cascade already cross-fits its scorers inside ``fit``; that still holds here.)

So a seeded share of the train queries (``CALIBRATION_FRACTION``) is held out of fitting: the
deployed strategy is fitted on the rest, its settings are judged on the calibration rows, and the
chosen setting is read off the test rows of the same sweep. A sweep may look at the test *queries*
(a router's knob grid is quantiles of its predictions) but never at test scores, so changing test
labels cannot change a chosen setting. This assumes each query's outcome depends only on the
setting and that query, which holds for routers and cascades.

Targets, all relative to the best single model *chosen on train* and measured on the calibration
rows: ``best_quality`` is the cheapest setting reaching that model's quality; ``budget:f`` is the
best-quality setting costing at most ``f`` times that model's cost. Single models and the random
mix are not fitted and are judged on the same calibration rows; the oracle reads labels per query
and has nothing to deploy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import _metrics as M
from ._baselines import _nanmean_rows, compute_baselines
from ._strategy import Strategy
from ._table import OutcomeTable

TARGETS = ("best_quality", "budget:0.1", "budget:0.2", "budget:0.3", "budget:0.5", "budget:1.0")
CALIBRATION_FRACTION = 0.3
ORACLE_NOTE = "upper bound: it reads every query's scores, so it has no deployable setting"


@dataclass
class Replay:
    """One strategy's settings on the calibration rows and on the test rows: arrays are (P, Q)."""

    name: str
    settings: list[dict[str, Any]]
    cal_cost: np.ndarray
    cal_quality: np.ndarray
    test_cost: np.ndarray  # test.query_ids order
    test_quality: np.ndarray


@dataclass(frozen=True)
class Reference:
    """The best single model chosen on train: its means on the calibration rows, per-query on test."""

    model: str
    cal_quality: float
    cal_cost: float
    test_cost: np.ndarray  # (Qt,), NaN where the test query lacks the model
    test_quality: np.ndarray


@dataclass(frozen=True)
class Plan:
    """How operating points are chosen for one evaluation."""

    fit: OutcomeTable
    cal: OutcomeTable
    test: OutcomeTable
    reference: Reference
    baselines: list[Replay]


def budget_of(target: str) -> float | None:
    return float(target.partition(":")[2]) if target.startswith("budget:") else None


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


def plan(train: OutcomeTable, test: OutcomeTable, *, seed: int,
         fraction: float = CALIBRATION_FRACTION) -> Plan | None:
    """Split train into fit and calibration parts; None when train has under two queries."""
    ids = np.array(train.query_ids, dtype=object)
    if len(ids) < 2:
        return None
    rng = np.random.default_rng(seed + 104729)
    n_cal = min(len(ids) - 1, max(1, int(round(len(ids) * fraction))))
    cal_set = set(ids[rng.permutation(len(ids))[:n_cal]])
    fit = train.subset([q for q in train.query_ids if q not in cal_set])
    cal = train.subset([q for q in train.query_ids if q in cal_set])

    base = compute_baselines(train)  # identities chosen on (all) train rows
    best, cheap = base.models[base.best], base.models[base.cheapest]
    cc, cq = _column(cal, best)
    tc, tq = _column(test, best)
    ref = Reference(best, float(np.nanmean(cq)), float(np.nanmean(cc)), tc, tq)
    replays = []
    for m in base.models:
        c1, q1 = _column(cal, m)
        c2, q2 = _column(test, m)
        replays.append(Replay(f"model:{m}", [{"model": m}], c1[None], q1[None], c2[None], q2[None]))
    if cheap != best:
        p = np.linspace(0.0, 1.0, 11)[:, None]
        settings = [{"p_best": round(float(v), 6), "cheap": cheap, "best": best} for v in p[:, 0]]
        replays.append(Replay("random-mix", settings, *_mix(cal, cheap, best, p),
                              *_mix(test, cheap, best, p)))
    return Plan(fit, cal, test, ref, replays)


def replay_strategy(s: Strategy, p: Plan) -> Replay:
    """Fit ``s`` on the fit part, sweep calibration ∪ test rows once, split the points by rows."""
    s.fit(p.fit)
    both = OutcomeTable(pd.concat([p.cal.df, p.test.df], ignore_index=True), name=p.test.name)
    points = s.sweep(both)
    if not points:
        raise ValueError("sweep returned no operating points")
    pos = {q: i for i, q in enumerate(both.query_ids)}
    ci = np.array([pos[q] for q in p.cal.query_ids], dtype=int)
    ti = np.array([pos[q] for q in p.test.query_ids], dtype=int)
    n = len(both.query_ids)
    cost = np.empty((len(points), n))
    quality = np.empty((len(points), n))
    for i, pt in enumerate(points):
        c, v = np.asarray(pt.cost, dtype=float), np.asarray(pt.quality, dtype=float)
        if c.shape != (n,) or v.shape != (n,):
            raise ValueError(f"operating point {i} has shape {c.shape}/{v.shape}, expected ({n},)")
        cost[i], quality[i] = c, v
    return Replay(str(s.name), [dict(pt.setting) for pt in points], cost[:, ci], quality[:, ci],
                  cost[:, ti], quality[:, ti])


def fresh_copy(s: Strategy) -> Strategy | None:
    """A copy to fit on the fit part, so the caller's object keeps its full-train fit."""
    try:
        return copy.deepcopy(s)
    except Exception:  # noqa: BLE001 - an uncopyable strategy only loses its deployed points
        return None


def choose(target: str, cost: np.ndarray, quality: np.ndarray, ref: Reference) -> int | None:
    """Index of the setting chosen for ``target`` from calibration means, or None if none meets it."""
    ok = np.isfinite(cost) & np.isfinite(quality)
    f = budget_of(target)
    if f is None:
        idx = np.flatnonzero(ok & M._reaches(np.nan_to_num(quality, nan=-np.inf), ref.cal_quality))
        order = np.lexsort((-quality[idx], cost[idx]))  # cheapest, then better
    else:
        idx = np.flatnonzero(ok & (cost <= f * ref.cal_cost * (1 + M._RTOL)))
        order = np.lexsort((cost[idx], -quality[idx]))  # best quality, then cheaper
    return int(idx[order[0]]) if idx.size else None


def _wmeans(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(B, Q) resampling counts × (Q,) per-query values → (B,) NaN-aware means."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.where(ok, x, 0.0)) / (w @ ok.astype(float))


def _mean(x: np.ndarray) -> float:
    return float(_nanmean_rows(np.asarray(x, dtype=float)[None])[0])


def deployed_points(r: Replay, ref: Reference, w: np.ndarray | None) -> tuple[list[dict[str, Any]],
                                                                             dict[str, int]]:
    """One entry per target, and the chosen setting's index per met target.

    ``w`` holds bootstrap resampling counts over test queries (the evaluator's), or None.
    """
    mc, mq = _nanmean_rows(r.cal_cost), _nanmean_rows(r.cal_quality)
    ref_c, ref_q = _mean(ref.test_cost), _mean(ref.test_quality)
    out: list[dict[str, Any]] = []
    chosen: dict[str, int] = {}
    for target in TARGETS:
        f = budget_of(target)
        entry: dict[str, Any] = {"target": target}
        if f is not None:
            entry["budget_usd_train"] = f * ref.cal_cost
        i = choose(target, mc, mq, ref)
        if i is None:
            entry.update(met=False, setting=None, train=None, test=None,
                         note="no setting reaches the best model's train quality" if f is None
                         else "every setting costs more than the budget on train")
            out.append(entry)
            continue
        chosen[target] = i
        tc, tq = r.test_cost[i], r.test_quality[i]
        c, q = _mean(tc), _mean(tq)
        test: dict[str, Any] = {"cost_usd": c, "quality": q,
                                "cost_ratio": c / ref_c if ref_c > 0 else None,
                                "quality_vs_best": q - ref_q}
        entry.update(met=True, setting=r.settings[i],
                     train={"cost_usd": float(mc[i]), "quality": float(mq[i])}, test=test)
        if f is not None:
            entry["budget_usd_test"] = f * ref_c
            entry["test_budget_ratio"] = c / (f * ref_c) if ref_c > 0 else None
        if w is not None:
            bc, bq = _wmeans(w, tc), _wmeans(w, tq)
            rc, rq = _wmeans(w, ref.test_cost), _wmeans(w, ref.test_quality)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = bc / rc
            test["ci95"] = {"cost_usd": M.percentile_ci(bc), "quality": M.percentile_ci(bq),
                            "cost_ratio": M.percentile_ci(ratio),
                            "quality_vs_best": M.percentile_ci(bq - rq)}
            hi = (test["ci95"]["cost_ratio"] or (None, None))[1]
            entry["saving_in_doubt"] = bool(hi is not None and hi >= 1.0)
            if f is not None:
                entry["test_budget_ratio_ci95"] = M.percentile_ci(ratio / f)
        out.append(entry)
    return out, chosen


def headline_target(chosen: dict[str, int]) -> str | None:
    """The target a strategy's one-number summaries use: best_quality, else the full budget."""
    for t in ("best_quality", "budget:1.0"):
        if t in chosen:
            return t
    return None


# ---- how to ship a deployed point ------------------------------------------------------------------
# Registered strategies whose parameters the CLI can rebuild exactly (name -> `ponder train router`
# arguments). A router strategy under another name (a benchmark's variant) has parameters the CLI
# does not take: its recipe names the Python API instead.
ROUTER_CLI = {
    "router-utility": "--kind utility",
    "router-knn": "--kind knn",
    "router-mf": "--kind mf",
    "router-pairwise-det": "--kind pairwise --variant deterministic",
    "router-pairwise-prob": "--kind pairwise --variant probabilistic",
    "router-pairwise-trans": "--kind pairwise --variant transformed",
}


def _up(x: float, digits: int = 4) -> str:
    """``x`` rounded *up* to ``digits`` significant digits: a budget printed for a command must
    not fall below the cost it has to admit."""
    if x <= 0 or not np.isfinite(x):
        return f"{x:g}"
    e = int(np.floor(np.log10(x))) - digits + 1
    v = np.ceil(x / 10.0 ** e - 1e-9) * 10.0 ** e
    return f"{v:.{digits}g}"


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")
    return out or "strategy"


def _split_args(split: dict[str, Any], *, router: bool) -> tuple[str, str]:
    """Arguments that make a training command see the evaluation's train rows, and a caveat."""
    if split.get("method") == "column":
        if split.get("column") in (None, "split"):
            return "", ""
        return "", (f"the commands read train rows from a 'split' column; this table splits on "
                    f"{split['column']!r}: rename it to 'split' first")
    if router:  # `ponder train router` has no seeded split: it trains on every row
        return "", ("the table has no split column, so this trains on every row (what a "
                    "deployment wants; the evaluation's test rows are then no longer held out)")
    # the split's seed is the evaluation's seed, which every command passes as --seed
    return f" --test-fraction {split.get('test_fraction') or 0.5:g}", ""


def deploy_recipe(name: str, kind: str, entry: dict[str, Any], *, source: str,
                  split: dict[str, Any], seed: int = 0,
                  reference_quality: float | None = None) -> dict[str, Any]:
    """How to ship one deployed point: ``{"command", "serve", "exact", "note"}``.

    ``command`` writes a strategy file (None when there is nothing to run), ``serve`` is the
    ``[strategies.NAME]`` entry that serves it through ``ponder serve`` / ``ponder run
    --strategy``, ``exact`` says whether the command rebuilds the very setting measured here or
    re-chooses it with the same rule on its own draw of train rows. ``reference_quality`` is the
    best single model's train quality (the best_quality target).
    """
    import shlex

    setting = entry.get("setting") or {}
    target = str(entry["target"])
    f = budget_of(target)
    src = shlex.quote(source)
    out = f"ship/{_slug(name)}-{_slug(target.replace(':', '-'))}"
    recipe: dict[str, Any] = {"command": None, "serve": None, "exact": False, "note": ""}

    def serve(path: str) -> str:
        return f'[strategies.{_slug(name)}]\npath = "{path}"'

    if name.startswith("model:") and "model" in setting:
        m = str(setting["model"])
        recipe.update(command=f"ponder serve --model PROVIDER:{shlex.quote(m)}", exact=True,
                      note=f"one model, no knob: call {m} through its provider (PROVIDER is "
                           "yours, e.g. openai)")
        return recipe
    if name == "random-mix":
        recipe["note"] = ("a reference line (random routing between the cheapest and the best "
                          "model), not a strategy to ship")
        return recipe
    if kind == "router" and "knob" in setting:
        knob = float(setting["knob"])
        args, caveat = _split_args(split, router=True)
        cli = ROUTER_CLI.get(name)
        fitted = (f"λ = {knob:.6g} was chosen on the calibration part for a router fitted on "
                  f"{1 - CALIBRATION_FRACTION:.0%} of train; the command fits on every train row "
                  "and pins that λ (re-choosing it on a fresh calibration draw moves it more)")
        if cli is None:
            router = str(setting.get("router", "?"))
            recipe["note"] = (f"a {router} router with parameters the CLI does not take: fit it "
                              "on the train rows with the Python API, save it with "
                              "ponder.routers.save_router and write its strategy file with "
                              f"knob={knob:.6g} (ponder.routers._live.write_strategy_file); "
                              + fitted)
            return recipe
        recipe.update(
            command=f"ponder train router {src} {cli} --knob {knob:.6g}{args} -o {out}",
            serve=serve(f"{out}/router.json"),
            note="; ".join(x for x in (fitted, caveat) if x))
        return recipe
    if kind == "cascade" and "budget_usd" in setting:
        args, caveat = _split_args(split, router=False)
        chain = " › ".join(setting.get("chain") or [])
        th = ", ".join(f"{t:g}" for t in setting.get("thresholds") or [])
        recipe.update(
            command=(f"ponder optimize {src} --budget {_up(float(setting['budget_usd']))} "
                     f"--folds 3 --seed {seed}{args}"
                     + (f" --set-pool {int(setting['set_pool'])}" if setting.get("set_pool") else "")
                     + f" -o {out}.json"),
            serve=serve(f"{out}.json"),
            note="; ".join(x for x in (
                f"measured here: {chain} [{th}], chosen on the train frontier of the fit part; "
                "the command refits on every train row, so check that it prints this chain",
                caveat) if x))
        return recipe
    if kind == "route-cascade" and "chain" in setting:
        args, caveat = _split_args(split, router=False)
        rargs, rcaveat = _split_args(split, router=True)
        names = [str(m) for m in setting.get("chain") or []]
        th = ", ".join(f"{t:g}" for t in setting.get("thresholds") or [])
        goal = (f"--budget {_up(float(entry['budget_usd_train']))}" if f is not None
                else f"--target-quality {reference_quality if reference_quality is not None else entry['train']['quality']:.4f}")
        lam = setting.get("knob")
        optimize = (f"ponder optimize {src} --models {shlex.quote(','.join(names))} {goal} "
                    f"--folds 3 --seed {seed}{args} -o {out}/cascade.json")
        measured = f"measured here: {' › '.join(names)} [{th}]"
        if lam is None:  # λ = ∞: every query starts at the bottom, i.e. the plain cascade
            recipe.update(command=optimize, serve=serve(f"{out}/cascade.json"),
                          note="; ".join(x for x in (measured + ", router off (every query starts "
                                                     "at the bottom): ship the cascade alone",
                                                     caveat) if x))
            return recipe
        recipe.update(
            command=(f"{optimize} && ponder train router {src} --kind utility --cascade "
                     f"{out}/cascade.json --knob {float(lam):.6g}{rargs} -o {out}"),
            serve=serve(f"{out}/route-cascade.json"),
            note="; ".join(x for x in (
                f"{measured}, router λ = {float(lam):.6g} (pinned in route-cascade.json); the "
                "cascade is re-optimized on every train row for the same target, so check that "
                "it prints this chain", caveat, rcaveat) if x))
        return recipe
    recipe["note"] = (f"no deploy recipe for a {kind!r} strategy: ship the setting "
                      f"{setting} through its own API")
    return recipe
