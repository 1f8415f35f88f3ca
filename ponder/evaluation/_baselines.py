"""Baselines every evaluation shows: each single model, random mixes of the cheapest and the best
model, and the oracle, vectorised over the dense (query × model) views. A missing cell is NaN: a
single model is measured on the queries it has, mixes and the oracle use what the query has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._rows import Rows
from ._table import OutcomeTable


@dataclass
class Curve:
    """One strategy's operating points on the test queries: ``cost``/``quality`` are (P, Q)."""

    name: str
    kind: str
    settings: list[dict[str, Any]]
    cost: Rows
    quality: Rows
    strong_share: np.ndarray | None = None  # (P,) share of queries that called the strong model

    @property
    def mean_cost(self) -> np.ndarray:
        return _nanmean_rows(self.cost)

    @property
    def mean_quality(self) -> np.ndarray:
        return _nanmean_rows(self.quality)


def _nanmean_rows(rows: Any) -> np.ndarray:
    a = np.asarray(rows)
    ok = np.isfinite(a)
    n = ok.sum(axis=1)
    s = np.where(ok, a, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def wmeans(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(B, Q) resampling counts × (Q, ...) per-query values → (B, ...) NaN-aware means."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        m: np.ndarray = (w @ np.where(ok, x, 0.0)) / (w @ ok.astype(float))
        return m


@dataclass(frozen=True)
class Baselines:
    models: list[str]
    quality: np.ndarray  # (M,) mean test score over the queries that have the model
    cost: np.ndarray  # (M,) mean test USD per query, same queries
    n_queries: np.ndarray  # (M,) test queries that have the model
    best: int  # highest quality, cheaper on a tie
    cheapest: int  # lowest mean cost, better on a tie
    oracle_choice: np.ndarray  # (Q,) model index the oracle picks
    oracle_quality: np.ndarray  # (Q,)
    oracle_cost: np.ndarray  # (Q,)
    curves: list[Curve]


def _pick(primary: np.ndarray, secondary: np.ndarray) -> int:
    """Index with the largest primary, then the smallest secondary (NaN primary never wins)."""
    p = np.where(np.isnan(primary), -np.inf, primary)
    cand = np.flatnonzero(p == p.max())
    return int(cand[np.argmin(secondary[cand])])


def compute_baselines(test: OutcomeTable) -> Baselines:
    scores, costs, present = test.scores, test.costs, test.present
    models = list(test.models)
    n = present.sum(axis=0)
    # Same reduction as Curve.mean_*: a single model's figure is bit-identical wherever it shows.
    quality = _nanmean_rows(np.where(present, scores, np.nan).T)
    cost = _nanmean_rows(np.where(present, costs, np.nan).T)
    best = _pick(quality, cost)
    cheapest = _pick(-np.where(np.isnan(cost), np.inf, cost), -np.nan_to_num(quality, nan=-1.0))

    # Oracle: per query the best score, and among the models reaching it the cheapest.
    top = np.nanmax(np.where(present, scores, -np.inf), axis=1)
    cand = present & (scores == top[:, None])
    choice = np.argmin(np.where(cand, costs, np.inf), axis=1)
    rows = np.arange(len(choice))
    o_quality, o_cost = scores[rows, choice], costs[rows, choice]

    two = len(models) == 2  # the best model is the strong one
    curves = [Curve(f"model:{name}", "baseline", [{"model": name}], costs[None, :, m],
                    scores[None, :, m], np.array([1.0 if m == best else 0.0]) if two else None)
              for m, name in enumerate(models)]
    if cheapest != best:
        curves.append(mix_curve(test, models[cheapest], models[best], two))
    curves.append(_oracle_curve(scores, costs, present, choice, best if two else None))
    return Baselines(models, quality, cost, n, best, cheapest, choice, o_quality, o_cost, curves)


def model_column(table: OutcomeTable, model: str) -> tuple[np.ndarray, np.ndarray]:
    """(cost, quality) per query of ``model``: NaN where the table lacks it."""
    if model not in table.models:
        return np.full(len(table.query_ids), np.nan), np.full(len(table.query_ids), np.nan)
    j = table.models.index(model)
    return table.costs[:, j], table.scores[:, j]


def mix_curve(table: OutcomeTable, cheap: str, best: str, two: bool = False) -> Curve:
    """Random routing between two models (expected values); a query lacking one goes to the other."""
    p = np.linspace(0.0, 1.0, 11)[:, None]
    cc, qc = model_column(table, cheap)
    cb, qb = model_column(table, best)
    qc2, qb2 = np.where(np.isnan(qc), qb, qc), np.where(np.isnan(qb), qc, qb)
    cc2, cb2 = np.where(np.isnan(cc), cb, cc), np.where(np.isnan(cb), cc, cb)
    settings = [{"p_best": round(float(v), 6), "cheap": cheap, "best": best} for v in p[:, 0]]
    return Curve("random-mix", "baseline", settings, (1 - p) * cc2 + p * cb2,
                 (1 - p) * qc2 + p * qb2, p[:, 0].copy() if two else None)


def _oracle_curve(scores: np.ndarray, costs: np.ndarray, present: np.ndarray, choice: np.ndarray,
                  strong: int | None) -> Curve:
    """The oracle under a budget (RouteLLM's "optimal" line, for any number of models): each query
    switches from its cheapest model to the oracle's pick in order of quality gained per dollar."""
    rows = np.arange(len(choice))
    start = np.argmin(np.where(present, costs, np.inf), axis=1)
    gain = scores[rows, choice] - scores[rows, start]
    extra = costs[rows, choice] - costs[rows, start]
    moves = np.flatnonzero(choice != start)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(extra[moves] <= 0, np.inf, gain[moves] / extra[moves])
    order = moves[np.argsort(-value, kind="stable")]
    ks = np.unique(np.round(np.linspace(0, len(order), 21)).astype(int))
    pick = np.empty((len(ks), len(choice)), dtype=int)
    for i, k in enumerate(ks):
        pick[i] = start
        pick[i, order[:k]] = choice[order[:k]]
    settings = [{"switched_queries": int(k), "of": int(len(order))} for k in ks]
    share = (pick == strong).mean(axis=1) if strong is not None else None
    return Curve("oracle", "baseline", settings, costs[rows, pick], scores[rows, pick], share)
