"""Per-model quality predictor: one logistic regression per model on the query features; route to
argmax(predicted quality − λ·predicted cost). λ = 0 buys the best predicted quality; larger λ
trades quality for cost (in quality points per USD).

The λ rule compares predicted qualities across models, so they must be calibrated, not just
ranked: with ``recalibrate=k`` each model's logit is rescaled by Platt scaling fitted on k-fold
out-of-fold predictions (a strongly regularised model is under-confident, and by a different
amount per model). The rescaling folds into the weights, so prediction costs nothing extra."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import BaseRouter
from ._linear import fit_soft_logistic, linear_scores, sigmoid


class UtilityRouter(BaseRouter):
    """Multi-model router; knob λ ≥ 0 (larger = cheaper)."""

    kind = "utility"
    _default_knob = 0.0
    _state = ("coef", "intercept")

    def __init__(self, *, models: list[str] | None = None, featurizer: Any = "tfidf",
                 C: float = 0.1, recalibrate: int | None = 5, random_state: int = 0,
                 cost_model: str = "length", knob: float | None = None) -> None:
        self.models = models
        self.featurizer = featurizer
        self.cost_model = cost_model
        self.C = C
        self.recalibrate = recalibrate
        self.random_state = random_state
        self.knob = knob

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        M = scores.shape[1]
        W = np.zeros((X.shape[1], M))
        b = np.zeros(M)
        k = int(self.recalibrate or 0)
        seed = self.random_state
        fold = np.random.default_rng(seed).permutation(X.shape[0]) % max(k, 1)
        for j in range(M):
            rows = np.flatnonzero(present[:, j])
            W[:, j], b[j] = fit_soft_logistic(X[rows], scores[rows, j], C=self.C, random_state=seed)
            if k >= 2 and rows.size >= 5 * k:
                oof = np.zeros(rows.size)
                for f in range(k):
                    tr, te = rows[fold[rows] != f], fold[rows] == f
                    w_f, b_f = fit_soft_logistic(X[tr], scores[tr, j], C=self.C, random_state=seed)
                    oof[te] = np.asarray(X[rows[te]] @ w_f).ravel() + b_f
                a, c = fit_soft_logistic(oof[:, None], scores[rows, j], C=100.0, random_state=seed)
                a_ = max(float(a[0]), 0.0)  # never flip the ranking
                W[:, j], b[j] = a_ * W[:, j], a_ * b[j] + c
        self.coef_, self.intercept_ = W, b

    def _predict_core(self, X: Any) -> np.ndarray:
        return sigmoid(linear_scores(X, self.coef_, self.intercept_))
