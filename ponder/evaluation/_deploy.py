"""Certified operating points: a knob setting chosen on train rows *with a guarantee*, then
measured on test (a point picked off a test-swept curve used the test labels; one picked by its
point estimate on a small calibration set is optimistic)::

    train ──K folds──▶ fit on K−1 folds ──replay the settings──▶ outcomes on the held fold ──┐
    train ──────────── fit on every row ─▶ the deployed strategy ─sweep(test)─▶ its settings ┤
                  pooled: every train row once, as a calibration row for each candidate ◀────┘
    per candidate: upper bounds on the quality drop and the spend ratio (1 − δ, union bound)
    per target: the cheapest / best certified candidate ──▶ that very setting's test rows

The deployed strategy is the one fitted on every train row; its sweep of the test *queries*
fixes the settings, which each fold's copy replays on its held fold (``replay(table,
settings)``, else matched on equal settings). A router's λ or a cascade's budget keeps its
meaning across fits, so the pooled rows estimate what the deployed setting does on new queries.
Bounds (:mod:`._certify`) are Waudby-Smith–Ramdas betting bounds at 1 − δ/m over every
candidate tried, on the paired quality drop against the best single model (``best_quality``) or
the paired spend ratio (``budget:f``); when nothing certifies, the best single model ships. The
guarantee assumes train rows and future queries are exchangeable; test figures never influence
a choice.

Here: the targets, the data the steps pass along and the K-fold calibration; the bounds and
picks are in :mod:`._certify`, writing them in :mod:`._write_ship`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ._baselines import Curve, _nanmean_rows, compute_baselines, mix_curve, model_column
from ._rows import Rows, compact
from ._strategy import Replayable, Strategy
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


def _mean(x: np.ndarray) -> float:
    return float(_nanmean_rows(np.asarray(x, dtype=float)[None])[0])


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


class Later:
    """A job run where its result is first asked for (``jobs=1``: the order of a plain loop);
    ``concurrent.futures.Future`` has the same ``result()``."""

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
    """Start fitting a copy of ``spare`` (unfitted) on each fold's fit rows: jobs whose
    ``result()`` is the fitted copy. The copies are made here, on the caller's thread."""

    def fit(model: Strategy, rows: OutcomeTable) -> Strategy:
        model.fit(rows)
        return model

    return [run(partial(fit, _unfitted(spare), part)) for part, _, _ in p.parts]


def calibrate(fits: list[Any], curve: Curve, p: Plan, tick: Any = None,
              run: Run = Later) -> Replay:
    """Replay the test ``curve``'s settings (the deployed fit's) on each held fold with the copy
    fitted on the other folds (``fits``, from :func:`fold_fits`); the pooled rows are every train
    query once."""
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
    """A copy of ``s`` to fit: ``sklearn.base.clone`` (its parameters, none of its fit) for a
    scikit-learn estimator, as the built-in strategies are; ``copy.deepcopy`` for another
    strategy, or an estimator that ``clone`` cannot rebuild from its parameters."""
    from sklearn.base import BaseEstimator, clone

    if isinstance(s, BaseEstimator):
        try:
            out: Strategy = clone(s)
            return out
        except Exception:  # noqa: BLE001 - not rebuildable from get_params: copy it whole
            pass
    return copy.deepcopy(s)


def fresh_copy(s: Strategy) -> Strategy | None:
    """An unfitted copy for the fold fits, so the caller's object keeps its full-train fit: see
    :func:`_unfitted`; None when ``s`` cannot be copied."""
    try:
        return _unfitted(s)
    except Exception:  # noqa: BLE001 - an uncopyable strategy only loses its certified points
        return None
