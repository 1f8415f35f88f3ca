"""The evaluator: split an outcome table, fit strategies on train, replay them on test, measure.

    table ──split──▶ train ──fit──▶ strategies ──sweep(test)──▶ curves ─┐
                     test ──────────▶ baselines (models, mixes, oracle) ─┴▶ metrics + bootstrap CIs
                     train ─▶ K-fold calibration ─▶ bounds ─▶ certified picks ─┘  ▶ EvalResult

The curves and their metrics (``cost_ratio_at_best_quality``, ``auc``, …) show what a knob can
reach on test; choosing a point off them uses test labels. The ``deployed`` points and the
``ship`` picks are chosen on train rows only, each with an upper confidence bound, and then
measured on test (see ``_deploy``): those are what a user can ship, and the reports lead with
them. ``ship_dir`` writes the picks' strategy files, exactly what was measured.

Everything the reports show lives in one JSON-able dict inside :class:`EvalResult`, so the three
renderings cannot disagree.
"""

from __future__ import annotations

import copy
import datetime as _dt
import platform
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._exceptions import PonderError
from . import _deploy as D
from . import _metrics as M
from ._baselines import Baselines, Curve, compute_baselines
from ._strategy import Strategy, default_strategies, registered_strategies
from ._table import OutcomeTable

Progress = Callable[[str, int, int], None]
CPT_LEVELS = (0.5, 0.8, 0.95)
HEADLINE = ("cost_ratio_at_best_quality", "quality_at_best_cost", "auc", "oracle_share", "apgr")


@dataclass(frozen=True)
class EvalResult:
    """The outcome of :func:`evaluate`: one dict rendered three ways."""

    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    def to_markdown(self) -> str:
        from ._report import render_markdown

        return render_markdown(self.data)

    def to_html(self) -> str:
        from ._report import render_html

        return render_html(self.data)

    @property
    def strategies(self) -> list[dict[str, Any]]:
        return self.data["strategies"]

    def strategy(self, name: str) -> dict[str, Any]:
        for s in self.data["strategies"]:
            if s["name"] == name:
                return s
        raise KeyError(name)


# ---- helpers -----------------------------------------------------------------------------------
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if np.isfinite(v) else None
    if x is None or isinstance(x, (str, int)):
        return x
    return str(x)


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        ponder_v = version("ponder")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        ponder_v = "0+unknown"
    import matplotlib

    return {"ponder": ponder_v, "python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "matplotlib": matplotlib.__version__}


def _resolve_table(table: OutcomeTable | str | Path | pd.DataFrame) -> OutcomeTable:
    if isinstance(table, OutcomeTable):
        return table
    if isinstance(table, pd.DataFrame):
        return OutcomeTable.read(table)
    from ._bundled import load_dataset

    return load_dataset(table)


def _collect_strategies(
    strategies: Iterable[Strategy | str] | None, train: OutcomeTable
) -> tuple[list[Strategy], list[dict[str, str]]]:
    """Registered ones (all, or those named) plus any strategy objects passed in."""
    skipped: list[dict[str, str]] = []
    registry = registered_strategies()
    if strategies is None:
        wanted: list[Strategy | str] = list(default_strategies())
    else:
        wanted = list(strategies)
    out: list[Strategy] = []
    for item in wanted:
        if isinstance(item, str):
            if item not in registry:
                raise PonderError(
                    f"unknown strategy {item!r}; registered: {', '.join(sorted(registry)) or 'none'}")
            try:
                built = registry[item](train)
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not sink the report
                skipped.append({"name": item, "reason": f"{type(exc).__name__}: {exc}"})
                continue
            if built is not None:
                out.append(built)
        else:
            out.append(item)
    return out, skipped


def _run_strategy(s: Strategy, train: OutcomeTable, test: OutcomeTable) -> Curve:
    s.fit(train)
    points = s.sweep(test)
    q = len(test.query_ids)
    if not points:
        raise PonderError("sweep returned no operating points")
    cost = np.empty((len(points), q))
    quality = np.empty((len(points), q))
    shares = []
    for i, p in enumerate(points):
        c, v = np.asarray(p.cost, dtype=float), np.asarray(p.quality, dtype=float)
        if c.shape != (q,) or v.shape != (q,):
            raise PonderError(f"operating point {i} has shape {c.shape}/{v.shape}, expected ({q},)")
        cost[i], quality[i] = c, v
        shares.append(p.extra.get("strong_share"))
    share = None
    if all(x is not None for x in shares):
        share = np.asarray(shares, dtype=float)
    return Curve(str(s.name), str(getattr(s, "kind", "strategy")), [dict(p.setting) for p in points],
                 cost, quality, share)


def _infer_strong_share(curve: Curve, test: OutcomeTable, strong: int) -> np.ndarray:
    """Share of queries whose realised cost includes the strong model's call.

    A router pays exactly the strong model's cost when it picks it, a cascade pays it on top of the
    cheaper calls, so ``cost >= strong cost`` marks a strong call. Strategies can state the share
    exactly with ``OperatingPoint.extra["strong_share"]``.
    """
    sc = test.costs[:, strong]
    ok = np.isfinite(sc) & (sc > 0)
    hit = (curve.cost >= sc[None, :] * (1 - 1e-9)) & ok[None, :]
    return hit.sum(axis=1) / max(int(ok.sum()), 1)


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


# ---- the evaluator -----------------------------------------------------------------------------
def evaluate(
    table: OutcomeTable | str | Path | pd.DataFrame,
    *,
    strategies: Sequence[Strategy | str] | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
    split_column: str | None = "split",
    n_bootstrap: int = 200,
    progress: Progress | None = None,
    source: str | None = None,
    epsilon: float = D.EPSILON,
    delta: float = D.DELTA,
    folds: int | None = None,
    ship_dir: str | Path | None = None,
    model_map: dict[str, str] | None = None,
    command: str | None = None,
    max_fit_queries: int | None = D.MAX_FIT_QUERIES,
) -> EvalResult:
    """Fit strategies on train queries, replay them and all baselines on test queries, measure.

    ``strategies``: None for every registered strategy, or names from ``registered_strategies()``
    and/or strategy objects. The ``split`` column is used when present, else a seeded fraction of
    queries is held out. Bootstrap 95% intervals resample test queries ``n_bootstrap`` times.
    ``source`` names the table in the report (default: the path or name given as ``table``, else
    the table's name).

    What to ship is chosen on train rows with a guarantee (see ``_deploy``): ``folds``-fold
    calibration (default: 5 below 500 train queries, else 3), and for each target the cheapest or
    best candidate whose upper confidence bound at 1 − ``delta`` meets it (a quality drop of at
    most ``epsilon`` against the best single model, or the budget). ``ship_dir`` writes the
    picks' strategy files there, ``model_map`` naming live ``provider:model`` specs for the
    table's model names; ``command`` is the command line that reproduces this run (shown with
    ``--ship`` in the report). Strategies are fitted on at most ``max_fit_queries`` train
    queries (a seeded sample; None: all), in the full fit and in each fold's.
    """
    if not 0.0 < delta < 1.0:
        raise PonderError(f"delta must be in (0, 1), got {delta}")
    if not 0.0 <= epsilon < 1.0:
        raise PonderError(f"epsilon must be in [0, 1) (score units), got {epsilon}")
    if folds is not None and folds < 2:
        raise PonderError(f"folds must be at least 2, got {folds}")
    if max_fit_queries is not None and max_fit_queries < 2:
        raise PonderError(f"max_fit_queries must be at least 2, got {max_fit_queries}")
    tick: Progress = progress or (lambda stage, i, n: None)
    tbl = _resolve_table(table)
    train, test = tbl.split(test_fraction=test_fraction, seed=seed, split_column=split_column)
    uses_column = bool(split_column and split_column in tbl.df.columns)
    tick("baselines", 0, 1)
    base = compute_baselines(test)
    tick("baselines", 1, 1)

    found, skipped = _collect_strategies(strategies, train)
    curves: list[Curve] = list(base.curves)
    deploy = D.plan(train, test, seed=seed, folds=folds, max_fit_queries=max_fit_queries)
    fit_on = D.fit_rows(train, max_fit_queries, seed)
    replays: dict[str, D.Replay | str] = {r.name: r for r in deploy.baselines} if deploy else {}
    fitted: dict[str, Strategy] = {}
    steps = 1 + (deploy.folds if deploy else 0)
    for i, s in enumerate(found):
        stage = f"strategy {getattr(s, 'name', i)}"
        tick(stage, 0, steps)
        spare = D.fresh_copy(s)
        try:
            curve = _run_strategy(s, fit_on, test)
        except Exception as exc:  # noqa: BLE001 - report it, keep the other strategies
            warnings.warn(f"strategy {getattr(s, 'name', s)!r} skipped: {exc}", stacklevel=2)
            skipped.append({"name": str(getattr(s, "name", s)), "reason": f"{type(exc).__name__}: {exc}"})
            tick(stage, steps, steps)
            continue
        tick(stage, 1, steps)
        curves.append(curve)
        fitted[curve.name] = s
        if deploy is not None and spare is None:
            replays[curve.name] = "the strategy object cannot be copied for the fold fits"
        elif deploy is not None and spare is not None:
            try:
                replays[curve.name] = D.calibrate(
                    spare, curve.name, curve.kind, curve.settings, curve.cost, curve.quality,
                    deploy, tick=lambda k, stage=stage: tick(stage, 1 + k, steps))
            except Exception as exc:  # noqa: BLE001 - the test curve still stands
                replays[curve.name] = f"K-fold calibration failed: {type(exc).__name__}: {exc}"
        tick(stage, steps, steps)

    two = len(base.models) == 2
    strong = base.best
    weak = 1 - strong if two else None
    if two:
        for c in curves:
            if c.strong_share is None:
                c.strong_share = _infer_strong_share(c, test, strong)

    data = _assemble(tbl, train, test, base, curves, skipped, two=two, weak=weak,
                     split={"method": "column" if uses_column else "random",
                            "column": split_column if uses_column else None,
                            "test_fraction": None if uses_column else test_fraction,
                            "seed": None if uses_column else seed})
    w = _boot_weights(len(test.query_ids), n_bootstrap, seed) if n_bootstrap > 0 else None
    data["source"] = source or (str(table) if isinstance(table, (str, Path)) else tbl.name)
    data["command"] = command
    data["fit_sample"] = {"max_fit_queries": max_fit_queries, "n_fit_queries": len(fit_on.query_ids)}
    tick("certifying", 0, 1)
    _attach_deployed(data, deploy, replays, test, w, epsilon=epsilon, delta=delta, seed=seed)
    tick("certifying", 1, 1)
    if ship_dir is not None and data["ship"]:
        D.write_ship(data["ship"], fitted, ship_dir, model_map=model_map)
        data["ship_dir"] = str(ship_dir)
    if w is not None:
        _bootstrap(data, test, base, curves, w, weak, tick)
    return EvalResult(_jsonable(data))


def _attach_deployed(data: dict[str, Any], deploy: D.Plan | None,
                     replays: dict[str, D.Replay | str], test: OutcomeTable,
                     w: np.ndarray | None, *, epsilon: float, delta: float, seed: int = 0) -> None:
    """Each strategy's ``deployed`` list, the ``deployment`` summary, the ``ship`` picks, and
    per-task figures at the deployed headline setting (best_quality, else budget:1.0)."""
    data["ship"] = []
    if deploy is None:
        data["deployment"] = {"method": "none", "targets": list(D.TARGETS), "epsilon": epsilon,
                              "delta": delta,
                              "note": "train has under two queries: nothing to choose settings on"}
    else:
        ref = deploy.reference
        usable = [r for r in replays.values() if isinstance(r, D.Replay)]
        bounds = D.bound_all(usable, ref, epsilon=epsilon, delta=delta, seed=seed)
        data["ship"] = D.ship_picks(usable, bounds, deploy, w, seed=seed)
        data["deployment"] = {
            "method": "k-fold calibration", "folds": deploy.folds,
            "n_calibration_queries": len(deploy.train.query_ids), "targets": list(D.TARGETS),
            "epsilon": epsilon, "delta": delta, "confidence": 1 - delta,
            "n_candidates": bounds.m,
            "correction": f"union bound over the {bounds.m} candidates tried (every strategy × "
                          "setting and every single model but the best)",
            "bound_method": "Waudby-Smith–Ramdas betting confidence bounds on paired per-query "
                            "differences (quality drop; spend against the best model's)",
            "best_model": {"model": ref.model,
                           "calibration": {"cost_usd": ref.cal_mean_cost,
                                           "quality": ref.cal_mean_quality},
                           "test": {"cost_usd": D._mean(ref.test_cost),
                                    "quality": D._mean(ref.test_quality)}},
            "note": f"settings are calibrated by {deploy.folds}-fold cross-fitting on the train "
                    "rows (each fold's copy fitted on the other folds) and the strategy that "
                    "ships is the one fitted on every train row; 'calibration' figures are on "
                    "the pooled held-out folds, targets are relative to the best single model "
                    "chosen on train"}
    tasks = np.asarray(test.tasks, dtype=object)
    by_task = {t["task"]: t for t in data.get("tasks") or []}
    usable_names = [r.name for r in replays.values() if isinstance(r, D.Replay)]
    for s in data["strategies"]:
        s["deployed"], s["deployed_target"], s["deployed_note"] = [], None, None
        r = replays.get(s["name"])
        chosen: dict[str, int] = {}
        if s["name"] == "oracle":
            s["deployed_note"] = D.ORACLE_NOTE
        elif deploy is None:
            s["deployed_note"] = data["deployment"]["note"]
        elif isinstance(r, str) or r is None:
            s["deployed_note"] = r or "not calibrated"
        else:
            k = usable_names.index(s["name"])
            s["deployed"], chosen = D.deployed_points(r, k, bounds, deploy.reference, w)
            s["deployed_target"] = D.headline_target(chosen)
            if s["name"] == "random-mix":
                s["deployed_note"] = D.MIX_NOTE
        if s["kind"] == "baseline":
            continue
        head = s["deployed_target"]
        for t, row in by_task.items():  # the test-chosen headline point is not deployable
            sel = tasks == t
            if head is None or not isinstance(r, D.Replay):
                row["strategies"][s["name"]] = {"quality": None, "cost_usd": None, "at": None}
                continue
            k = chosen[head]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a task without a finite value
                row["strategies"][s["name"]] = {
                    "quality": float(np.nanmean(r.test_quality[k, sel])),
                    "cost_usd": float(np.nanmean(r.test_cost[k, sel])), "at": head}


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
        order = np.argsort(mc, kind="stable")
        pts = []
        for i in order:
            pt: dict[str, Any] = {"cost_usd": mc[i], "quality": mq[i], "setting": c.settings[i]}
            if c.strong_share is not None:
                pt["strong_share"] = c.strong_share[i]
            pts.append(pt)
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
    n_missing_cells = int((~present).sum())
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
                    "n_missing_test_cells": n_missing_cells,
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
        "tasks": _per_task(test, base, curves, headline_idx),
        "skipped": skipped,
    }


def _per_task(test: OutcomeTable, base: Baselines, curves: list[Curve],
              headline_idx: dict[str, int]) -> list[dict[str, Any]]:
    tasks = np.asarray(test.tasks, dtype=object)
    names = [t for t in pd.unique(tasks) if t != ""]
    if not names:
        return []
    out = []
    scores, costs, present = test.scores, test.costs, test.present
    for t in sorted(names):
        sel = tasks == t
        with np.errstate(invalid="ignore"):
            per_model = {m: {"quality": float(np.nanmean(np.where(present[sel, i], scores[sel, i], np.nan)))
                             if present[sel, i].any() else None,
                             "cost_usd": float(np.nanmean(np.where(present[sel, i], costs[sel, i], np.nan)))
                             if present[sel, i].any() else None}
                         for i, m in enumerate(base.models)}
        strat = {}
        for c in curves:
            if c.kind == "baseline" and c.name != "oracle":
                continue
            h = headline_idx[c.name]
            strat[c.name] = {"quality": float(np.nanmean(c.quality[h, sel])),
                             "cost_usd": float(np.nanmean(c.cost[h, sel]))}
        out.append({"task": t, "n_queries": int(sel.sum()), "models": per_model,
                    "oracle": {"quality": float(np.mean(base.oracle_quality[sel])),
                               "cost_usd": float(np.mean(base.oracle_cost[sel]))},
                    "strategies": strat})
    return out


def _boot_weights(q: int, n_boot: int, seed: int) -> np.ndarray:
    """(B, Q) counts: how often each test query appears in each bootstrap resample."""
    rng = np.random.default_rng(seed + 7919)
    return rng.multinomial(q, np.full(q, 1.0 / q), size=n_boot).astype(float)


def _bootstrap(data: dict[str, Any], test: OutcomeTable, base: Baselines, curves: list[Curve],
               w: np.ndarray, weak: int | None, tick: Progress) -> None:
    """Percentile 95% intervals over resampled test queries, for the test-curve figures."""
    n_boot = w.shape[0]

    def means(x: np.ndarray) -> np.ndarray:  # (P, Q) -> (B, P), NaN-aware
        ok = np.isfinite(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ np.where(ok, x, 0.0).T) / (w @ ok.T.astype(float))

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

