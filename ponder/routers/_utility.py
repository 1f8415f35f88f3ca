"""Per-model quality predictor: one logistic regression per model on the query features; route to
argmax(predicted quality − λ·predicted cost). λ = 0 buys the best predicted quality; larger λ
trades quality for cost (in quality points per USD)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import BaseRouter
from ._linear import fit_soft_logistic, linear_scores, sigmoid


class UtilityRouter(BaseRouter):
    """Multi-model router; knob λ ≥ 0 (larger = cheaper)."""

    kind = "utility"
    _default_knob = 0.0

    def __init__(self, *, models: list[str] | None = None, featurizer: Any = "tfidf",
                 C: float = 1.0, knob: float | None = None) -> None:
        self.models = models
        self.featurizer = featurizer
        self.C = C
        self.knob = knob

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        M = scores.shape[1]
        W = np.zeros((X.shape[1], M))
        b = np.zeros(M)
        for j in range(M):
            rows = np.flatnonzero(present[:, j])
            W[:, j], b[j] = fit_soft_logistic(X[rows], scores[rows, j], C=self.C)
        self.coef_, self.intercept_ = W, b

    def _predict_core(self, X: Any) -> np.ndarray:
        return sigmoid(linear_scores(X, self.coef_, self.intercept_))

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_}

    def _set_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.coef_, self.intercept_ = arrays["coef"], arrays["intercept"]
