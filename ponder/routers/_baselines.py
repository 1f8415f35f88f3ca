"""Reference routers: random (a coin with P(strong) = knob) and the oracle (the cheapest model
with the best recorded score; it reads the outcomes, so it only routes queries it has seen)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._exceptions import DataError
from ._base import BaseRouter, model_means, table_arrays


class RandomRouter(BaseRouter):
    """Between the cheapest and the best-train-quality model; knob = P(strong). Predicted quality
    is each model's train mean (it ignores the query)."""

    kind = "random"
    _default_knob = 0.5
    _knob_cheaper_when_larger = False

    def __init__(self, *, featurizer: Any = "tfidf", random_state: int = 0,
                 knob: float | None = None) -> None:
        self.featurizer = featurizer
        self.random_state = random_state
        self.knob = knob

    def _select_models(self, table: Any) -> list[str]:
        best = table.models[int(np.nanargmax(model_means(table)))]
        if best == table.models[0]:
            raise DataError("the cheapest model is also the best: nothing to route", file=table.name)
        return [table.models[0], best]

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        self.strong_ = 1
        self._rng = np.random.default_rng(self.random_state)

    def _predict_core(self, X: Any) -> np.ndarray:
        return np.repeat(self.train_quality_[None, :], X.shape[0], axis=0)

    def _weak_score(self, qhat: np.ndarray) -> np.ndarray:  # a coin per query
        rng = self.__dict__.setdefault("_rng", np.random.default_rng(self.random_state))
        return np.asarray(rng.random(len(qhat)))

    def _knob_grid(self, qhat: np.ndarray, chat: np.ndarray) -> np.ndarray:
        return np.linspace(0.0, 1.0, 21)


class OracleRouter(BaseRouter):
    """Upper bound: for each query it has outcomes for, the cheapest model with the best score."""

    kind = "oracle"

    def __init__(self, *, featurizer: Any = "tfidf") -> None:
        self.featurizer = featurizer

    def fit(self, table: Any, y: Any = None) -> OracleRouter:
        super().fit(table)
        scores, costs, present = table_arrays(table, self.models_)
        self.query_index_ = {q: i for i, q in enumerate(table.queries)}
        self.outcome_scores_ = np.where(present, scores, -np.inf)
        self.outcome_costs_ = np.where(present, costs, np.inf)
        return self

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        pass

    def transform(self, queries: list[str]) -> Any:
        return list(queries)

    def _predict_core(self, X: Any) -> np.ndarray:
        missing = [q for q in X if q not in self.query_index_]
        if missing:
            raise DataError(f"the oracle only knows queries of its outcome table; "
                            f"{len(missing)} unknown, e.g. {missing[0][:60]!r}")
        return self.outcome_scores_[[self.query_index_[q] for q in X]]

    def _decide(self, qhat: np.ndarray, chat: np.ndarray, knob: float,
                allowed: np.ndarray) -> np.ndarray:
        s = np.where(allowed, qhat, -np.inf)
        top = s.max(axis=1, keepdims=True)
        choice: np.ndarray = np.argmin(np.where(s == top, chat, np.inf), axis=1)
        return choice

    def _knob_grid(self, qhat: np.ndarray, chat: np.ndarray) -> np.ndarray:
        return np.array([0.0])
