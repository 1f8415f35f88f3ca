"""The test curves' metrics and headline points, the report's dict and its bootstrap intervals."""

from __future__ import annotations

import datetime as _dt
import platform
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from . import _metrics as M
from ._baselines import Baselines, Curve, wmeans
from ._rows import Rows
from ._table import OutcomeTable

Progress = Callable[[str, int, int], None]
CPT_LEVELS = (0.5, 0.8, 0.95)
HEADLINE = ("cost_ratio_at_best_quality", "quality_at_best_cost", "auc", "oracle_share", "apgr")


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        ponder_v = version("ponder")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        ponder_v = "0+unknown"
    import matplotlib

    return {"ponder": ponder_v, "python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "matplotlib": matplotlib.__version__}


def _infer_strong_share(curve: Curve, test: OutcomeTable, strong: int) -> np.ndarray:
    """Share of queries whose cost includes the strong model's call (``cost >= strong cost``),
    where a strategy does not state it in ``OperatingPoint.extra["strong_share"]``."""
    sc = test.costs[:, strong]
    ok = np.isfinite(sc) & (sc > 0)
    hit = (np.asarray(curve.cost) >= sc[None, :] * (1 - 1e-9)) & ok[None, :]
    share: np.ndarray = hit.sum(axis=1) / max(int(ok.sum()), 1)
    return share


def _metrics_for(costs: np.ndarray, quals: np.ndarray, share: np.ndarray | None, *,
                 best_q: float, best_c: float, c_min: float, c_max: float, oracle_q: float,
                 weak_q: float | None, strong_q: float | None) -> dict[str, Any]:
    ok = np.isfinite(costs) & np.isfinite(quals)
    costs, quals = costs[ok], quals[ok]
    if costs.size == 0:
        return {k: None for k in HEADLINE}
    qbc = M.quality_at_best_cost(costs, quals, best_c)
    out: dict[str, Any] = {
        "cost_ratio_at_best_quality": M.cost_ratio_at_best_quality(costs, quals, best_q, best_c),
        "quality_at_best_cost": qbc,
        "auc": M.auc(costs, quals, c_min, c_max),
        "oracle_share": (qbc / oracle_q) if (qbc is not None and oracle_q > 0) else None,
        "apgr": None,
    }
    if (share is not None and weak_q is not None and strong_q is not None
            and np.unique(np.asarray(share, dtype=float)[ok]).size >= 2):
        pct = np.asarray(share, dtype=float)[ok] * 100
        out["apgr"] = M.apgr(pct, quals, weak_q, strong_q)
        out["cpt"] = {f"{int(round(f * 100))}": M.cpt(pct, quals, weak_q, strong_q, f)
                      for f in CPT_LEVELS}
    return out


def _headline_point(curve: Curve, metrics: dict[str, Any], best_q: float, best_c: float) -> int:
    """The point a reader should look at: cheapest reaching the best model, else best affordable."""
    mc, mq = curve.mean_cost, curve.mean_quality
    reach = M._reaches(np.nan_to_num(mq, nan=-np.inf), best_q)
    if reach.any():
        idx = np.flatnonzero(reach)
        return int(idx[np.argmin(mc[idx])])
    afford = np.flatnonzero(mc <= best_c * (1 + 1e-9))
    if afford.size:
        return int(afford[np.argmax(mq[afford])])
    return int(np.nanargmin(mc))


def _assemble(tbl: OutcomeTable, train: OutcomeTable, test: OutcomeTable, base: Baselines,
              curves: list[Curve], skipped: list[dict[str, str]], *, two: bool, weak: int | None,
              split: dict[str, Any]) -> dict[str, Any]:
    b = base.best
    best_q, best_c = float(base.quality[b]), float(base.cost[b])
    c_min, c_max = float(np.nanmin(base.cost)), float(np.nanmax(base.cost))
    oracle_q, oracle_c = float(np.mean(base.oracle_quality)), float(np.mean(base.oracle_cost))
    weak_q = float(base.quality[weak]) if weak is not None else None
    strong_q = best_q if two else None

    strategies = []
    headline_idx = {}
    for c in curves:
        mc, mq = c.mean_cost, c.mean_quality
        metrics = _metrics_for(mc, mq, c.strong_share, best_q=best_q, best_c=best_c, c_min=c_min,
                               c_max=c_max, oracle_q=oracle_q, weak_q=weak_q, strong_q=strong_q)
        pts = [{"cost_usd": mc[i], "quality": mq[i], "setting": c.settings[i],
                **({} if c.strong_share is None else {"strong_share": c.strong_share[i]})}
               for i in np.argsort(mc, kind="stable")]
        h = _headline_point(c, metrics, best_q, best_c)
        headline_idx[c.name] = h
        strategies.append({"name": c.name, "kind": c.kind, "curve": pts, **metrics,
                           "headline_point": {"cost_usd": mc[h], "quality": mq[h],
                                              "setting": c.settings[h]}})

    # Pareto frontier over every achievable point (baselines included; the oracle is a bound).
    all_pts = [(s["name"], p) for s in strategies for p in s["curve"] if s["name"] != "oracle"]
    pc = np.array([p["cost_usd"] for _, p in all_pts], dtype=float)
    pq = np.array([p["quality"] for _, p in all_pts], dtype=float)
    ok = np.isfinite(pc) & np.isfinite(pq)
    front = M.pareto_front(np.where(ok, pc, np.inf), np.where(ok, pq, -np.inf))
    pareto = [{"strategy": all_pts[i][0], "cost_usd": pc[i], "quality": pq[i]}
              for i in front if ok[i]]

    present = test.present
    models = [{"model": m, "quality": base.quality[i], "cost_usd": base.cost[i],
               "n_queries": int(base.n_queries[i]),
               "oracle_pick_share": float(np.mean(base.oracle_choice == i))}
              for i, m in enumerate(base.models)]
    return {
        "format": "ponder-eval",
        "version": 1,
        "dataset": tbl.name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "versions": _versions(),
        "n_rows": len(tbl),
        "n_models": len(base.models),
        "n_train_queries": len(train.query_ids),
        "n_test_queries": len(test.query_ids),
        "split": split,
        "missing": {"n_incomplete_test_queries": int((~present.all(axis=1)).sum()),
                    "n_missing_test_cells": int((~present).sum()),
                    "n_incomplete_queries_all": tbl.n_incomplete_queries},
        "best_model": {"model": base.models[b], "quality": best_q, "cost_usd": best_c},
        "cheapest_model": {"model": base.models[base.cheapest],
                           "quality": float(base.quality[base.cheapest]),
                           "cost_usd": float(base.cost[base.cheapest])},
        "cost_range": {"min": c_min, "max": c_max},
        "models": models,
        "oracle": {"quality": oracle_q, "cost_usd": oracle_c},
        "two_model": {"strong": base.models[b], "weak": base.models[weak],
                      "strong_quality": strong_q, "weak_quality": weak_q}
        if two and weak is not None else None,
        "strategies": strategies,
        "pareto": pareto,
        "tasks": _per_task(test, base, base.curves[-1], headline_idx["oracle"]),
        "skipped": skipped,
    }


def task_point(cost: Rows, quality: Rows, k: int, sel: np.ndarray) -> dict[str, Any]:
    """Setting ``k``'s mean quality and cost on the queries ``sel`` (NaN-aware)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a task without a finite value
        return {"quality": float(np.nanmean(quality[k, sel])),
                "cost_usd": float(np.nanmean(cost[k, sel]))}


def _per_task(test: OutcomeTable, base: Baselines, oracle: Curve, h: int) -> list[dict[str, Any]]:
    """Each task's models and oracle curve at its headline point ``h`` (strategies join later)."""
    tasks = np.asarray(test.tasks, dtype=object)
    out = []
    scores, costs, present = test.scores, test.costs, test.present
    for t in sorted(x for x in pd.unique(tasks) if x != ""):
        sel = tasks == t
        with np.errstate(invalid="ignore"):
            per_model = {m: {k: float(np.nanmean(np.where(present[sel, i], v[sel, i], np.nan)))
                             if present[sel, i].any() else None
                             for k, v in (("quality", scores), ("cost_usd", costs))}
                         for i, m in enumerate(base.models)}
        out.append({"task": t, "n_queries": int(sel.sum()), "models": per_model,
                    "oracle": {"quality": float(np.mean(base.oracle_quality[sel])),
                               "cost_usd": float(np.mean(base.oracle_cost[sel]))},
                    "strategies": {"oracle": task_point(oracle.cost, oracle.quality, h, sel)}})
    return out


def _boot_weights(q: int, n_boot: int, seed: int) -> np.ndarray:
    """(B, Q) counts: how often each test query appears in each bootstrap resample."""
    rng = np.random.default_rng(seed + 7919)
    return rng.multinomial(q, np.full(q, 1.0 / q), size=n_boot).astype(float)


def _bootstrap(data: dict[str, Any], test: OutcomeTable, base: Baselines, curves: list[Curve],
               w: np.ndarray, weak: int | None, tick: Progress) -> None:
    """Percentile 95% intervals over resampled test queries, for the test-curve figures."""
    n_boot = w.shape[0]

    def means(rows: Any) -> np.ndarray:  # (P, Q) -> (B, P)
        return wmeans(w, np.asarray(rows).T)

    m_q = means(np.where(test.present, test.scores, np.nan).T)
    m_c = means(np.where(test.present, test.costs, np.nan).T)
    o_q = means(base.oracle_quality[None, :])[:, 0]
    o_c = means(base.oracle_cost[None, :])[:, 0]
    b = base.best
    tick("bootstrap", 0, len(curves))
    samples: dict[str, dict[str, list[float]]] = {}
    for k, c in enumerate(curves):
        cq, cc = means(c.quality), means(c.cost)
        acc: dict[str, list[float]] = {h: [] for h in HEADLINE}
        for r in range(n_boot):
            met = _metrics_for(cc[r], cq[r], c.strong_share, best_q=m_q[r, b], best_c=m_c[r, b],
                               c_min=float(np.nanmin(m_c[r])), c_max=float(np.nanmax(m_c[r])),
                               oracle_q=o_q[r], weak_q=m_q[r, weak] if weak is not None else None,
                               strong_q=m_q[r, b] if weak is not None else None)
            for h in HEADLINE:
                v = met.get(h)
                # "never reaches the best model" is an infinitely expensive answer, not a gap.
                acc[h].append(np.inf if v is None and h == "cost_ratio_at_best_quality"
                              else (np.nan if v is None else v))
        samples[c.name] = acc
        tick("bootstrap", k + 1, len(curves))
    for s in data["strategies"]:
        s["ci95"] = {h: M.percentile_ci(np.asarray(v)) for h, v in samples[s["name"]].items()}
    data["bootstrap"] = {"n": n_boot, "level": 0.95, "method": "percentile, queries resampled"}
    data["best_model"]["ci95"] = {"quality": M.percentile_ci(m_q[:, b]),
                                  "cost_usd": M.percentile_ci(m_c[:, b])}
    data["oracle"]["ci95"] = {"quality": M.percentile_ci(o_q), "cost_usd": M.percentile_ci(o_c)}
    for i, m in enumerate(data["models"]):
        m["ci95"] = {"quality": M.percentile_ci(m_q[:, i])}
