"""Certified operating points: a setting chosen on train rows *with a guarantee*, then measured
on test (a point picked off a test-swept curve used the test labels)::

    train ──K folds──▶ fit on K−1 folds ──replay the settings──▶ outcomes on the held fold ──┐
    train ──────────── fit on every row ─▶ the deployed strategy ─sweep(test)─▶ its settings ┤
                  pooled: every train row once, as a calibration row for each candidate ◀────┘
    per candidate: upper bounds on the quality drop and the spend ratio (1 − δ, union bound)
    per target: the cheapest / best certified candidate ──▶ that very setting's test rows

A router's λ or a cascade's budget keeps its meaning across fits, so the pooled rows estimate the
deployed setting on new queries (train rows and future queries assumed exchangeable).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._baselines import Curve, _nanmean_rows, compute_baselines, mix_curve, model_column
from ._rows import Rows, compact
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


def budget_of(target: str) -> float | None:
    return float(target.partition(":")[2]) if target.startswith("budget:") else None


def target_text(target: str, epsilon: float = EPSILON) -> str:
    f = budget_of(target)
    if f is None:
        return f"the best model's quality (within {100 * epsilon:g} pt)"
    return f"at most {100 * f:g}% of the best model's cost"


# ---- data --------------------------------------------------------------------------------------
@dataclass
class Replay:
    """One strategy's (P, Q) rows per setting: on the pooled calibration (train) rows and on test."""

    name: str
    kind: str
    settings: list[dict[str, Any]]
    cal_cost: Rows
    cal_quality: Rows
    test_cost: Rows
    test_quality: Rows


@dataclass(frozen=True)
class Reference:
    """The best single model chosen on train: per query on the calibration (train) and test rows."""

    model: str
    cal_cost: np.ndarray
    cal_quality: np.ndarray
    test_cost: np.ndarray
    test_quality: np.ndarray
    # resampled test means, each (replay, setting)'s once per bootstrap weights (``_certify``)
    boot: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cal_mean_cost(self) -> float:
        return _mean(self.cal_cost)


@dataclass(frozen=True)
class Plan:
    train: OutcomeTable
    test: OutcomeTable
    fold_of: np.ndarray  # (Qc,) fold of each train query, train.query_ids order
    reference: Reference
    baselines: list[Replay]
    parts: list[tuple[OutcomeTable, OutcomeTable, np.ndarray]] = field(repr=False)

    @property
    def folds(self) -> int:
        return len(self.parts)


def _mean(x: np.ndarray) -> float:
    return float(_nanmean_rows(np.asarray(x, dtype=float)[None])[0])


def fit_rows(table: OutcomeTable, cap: int | None, seed: int) -> OutcomeTable:
    """``table``, or a seeded sample of ``cap`` queries: fitting past ~10^4 queries buys little
    and costs time linear in the size (calibration and test still use every query)."""
    ids = table.query_ids
    if cap is None or len(ids) <= cap:
        return table
    pick = np.sort(np.random.default_rng(seed + 7919).choice(len(ids), cap, replace=False))
    return table.subset(np.asarray(ids, dtype=object)[pick], name=table.name)


def plan(train: OutcomeTable, test: OutcomeTable, *, seed: int, folds: int | None = None,
         max_fit_queries: int | None = None) -> Plan | None:
    """Seeded K folds over the train queries; None when train has under two queries."""
    ids = list(train.query_ids)
    if len(ids) < 2:
        return None
    # 5 folds on small tables; 3 from 500 on, where fitting dominates and 2/3 of train suffices
    k = max(2, min(len(ids), folds or (5 if len(ids) < 500 else 3)))
    fold_of = np.random.default_rng(seed + 104729).permutation(len(ids)) % k
    arr = np.array(ids, dtype=object)
    parts = []
    for j in range(k):  # a subset keeps train's query order: the held rows are fold j's
        parts.append((fit_rows(train.subset(list(arr[fold_of != j])), max_fit_queries, seed + j),
                      train.subset(list(arr[fold_of == j])), np.flatnonzero(fold_of == j)))

    base = compute_baselines(train)  # identities chosen on train rows
    best, cheap = base.models[base.best], base.models[base.cheapest]
    ref = Reference(best, *model_column(train, best), *model_column(test, best))
    replays = []
    for c in base.curves[:-1]:  # the single models and the random mix, not the oracle
        if c.name == "random-mix":
            t = mix_curve(test, cheap, best)
            tc, tq = t.cost, t.quality
        else:
            tc, tq = (x[None] for x in model_column(test, c.settings[0]["model"]))
        replays.append(Replay(c.name, c.kind, c.settings, c.cost, c.quality, tc, tq))
    return Plan(train, test, fold_of, ref, replays, parts)


def _setting_key(setting: dict[str, Any]) -> str:
    return json.dumps(setting, sort_keys=True, default=str)


def _replay_on(s: Strategy, table: OutcomeTable, settings: list[dict[str, Any]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) cost and quality of ``settings`` by a strategy fitted elsewhere: its ``replay``,
    else its own sweep matched on equal settings (NaN: not found)."""
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


class Later:
    """A job run when its result is first asked for (the order of a plain loop); the same
    ``result()``/``cancel()`` as ``concurrent.futures.Future``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn: Callable[[], Any] | None = fn
        self._value: Any = None

    def result(self) -> Any:
        if self._fn is not None:
            self._value, self._fn = self._fn(), None
        return self._value

    def cancel(self) -> bool:
        self._fn = None  # never run
        return True


# How a job is started: ``Later`` (in order, on this thread) or a thread pool's ``submit``.
Run = Callable[[Callable[[], Any]], Any]


def fold_fits(spare: Strategy, p: Plan, run: Run = Later) -> list[Any]:
    """Jobs fitting a copy of the unfitted ``spare`` on each fold's fit rows (copies made here,
    on the caller's thread)."""

    def fit(model: Strategy, rows: OutcomeTable) -> Strategy:
        model.fit(rows)
        return model

    return [run(partial(fit, _unfitted(spare), part)) for part, _, _ in p.parts]


def calibrate(fits: list[Any], curve: Curve, p: Plan, tick: Any = None,
              run: Run = Later) -> Replay:
    """Replay the full fit's test ``curve`` settings on each held fold with that fold's copy
    (``fits``, from :func:`fold_fits`): the pooled rows are every train query once."""
    settings = curve.settings
    n = len(p.train.query_ids)
    cost = np.full((len(settings), n), np.nan)
    quality = np.full((len(settings), n), np.nan)
    found = np.ones(len(settings), dtype=bool)

    def replay(k: int) -> tuple[np.ndarray, np.ndarray]:
        return _replay_on(fits[k].result(), p.parts[k][1], settings)

    jobs = [run(partial(replay, k)) for k in range(len(p.parts))]
    for k, job in enumerate(jobs):
        c, q = job.result()
        fits[k] = None  # the fold's copy is done with: free it before the next one
        found &= ~np.isnan(c).all(axis=1) | (c.shape[1] == 0)
        rows = p.parts[k][2]
        cost[:, rows], quality[:, rows] = c, q
        if tick is not None:
            tick(k + 1)
    if not found.any():
        raise ValueError("the fold fits swept none of the settings of the fit on every train row "
                         "(its settings depend on the fit: give the strategy a "
                         "replay(table, settings) method)")
    cost[~found], quality[~found] = np.nan, np.nan  # a setting some fold lacks: no candidate
    return Replay(curve.name, curve.kind, [dict(s) for s in settings],
                  compact(p.train.costs, cost), compact(p.train.scores, quality), curve.cost,
                  curve.quality)


def _unfitted(s: Strategy) -> Strategy:
    """``sklearn.base.clone`` (parameters, no fit) for an estimator it can rebuild, else
    ``copy.deepcopy``."""
    from sklearn.base import BaseEstimator, clone

    if isinstance(s, BaseEstimator):
        try:
            out: Strategy = clone(s)
            return out
        except Exception:  # noqa: BLE001 - not rebuildable from get_params: copy it whole
            pass
    return copy.deepcopy(s)


def fresh_copy(s: Strategy) -> Strategy | None:
    """An unfitted copy for the fold fits (the caller's object keeps its full-train fit); None
    when ``s`` cannot be copied."""
    try:
        return _unfitted(s)
    except Exception:  # noqa: BLE001 - an uncopyable strategy only loses its certified points
        return None


# ---- writing what ships ------------------------------------------------------------------------
def ship_folder(entry: dict[str, Any]) -> str:
    """The folder (under the --ship directory) of a ship pick, named after the pick and its first
    target (``route-cascade-budget-20pct``); also its ``[strategies]`` name, so no dots."""
    first = entry.get("same_as") or entry["target"]
    f = budget_of(first)
    target = "best-quality" if f is None else f"budget-{100 * f:g}pct".replace(".", "_")
    text = f"{entry['strategy'].removeprefix('model:')}-{target}"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "strategy"


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
                m = e["setting"]["model"]
                live = str(model_map[m]) if model_map and m in model_map else (
                    m if ":" in m else f"replay:{m}")
                doc = {"format": "ponder-strategy", "version": 1, "kind": "single",
                       "name": folder, "model": live}
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
    (root / "ship.json").write_text(json.dumps(jsonable(ship), indent=1) + "\n", encoding="utf-8")


def jsonable(x: Any) -> Any:
    """A JSON-able copy: numpy values as Python ones, non-finite numbers as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
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
