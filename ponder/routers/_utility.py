"""Per-model quality predictor: a logistic regression per model; route to argmax(quality − λ·cost),
λ in quality points per USD. The λ rule compares qualities across models, so ``recalibrate=k``
Platt-rescales each model's logit on k-fold out-of-fold predictions (strong regularisation leaves
each model under-confident by its own amount); the rescaling folds into the weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._base import BaseRouter


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_soft_logistic(X: Any, y: np.ndarray, *, C: float = 1.0,
                      random_state: int = 0) -> tuple[np.ndarray, float]:
    """(w, b) of a logistic regression on labels in [0, 1]: each row enters as a positive with
    weight y and a negative with weight 1 − y. Constant labels: w = 0, the clipped log-odds.
    ``random_state`` seeds liblinear's dual solver (it shuffles rows: fits differ in the 6th digit)."""
    from sklearn.linear_model import LogisticRegression

    y = np.clip(np.asarray(y, dtype=float), 0.0, 1.0)
    n_features = X.shape[1]
    if np.all((y == 0.0) | (y == 1.0)):
        Xf, yf, wf = X, y.astype(int), None
    else:
        Xf = sp.vstack([X, X]).tocsr() if sp.issparse(X) else np.vstack([X, X])
        yf = np.concatenate([np.ones(len(y), int), np.zeros(len(y), int)])
        wf = np.concatenate([y, 1.0 - y])
        keep = wf > 0
        Xf, yf, wf = Xf[keep], yf[keep], wf[keep]
    if np.unique(yf).size < 2:  # one class (or no rows): no weights, the clipped log-odds
        p = min(max(float(np.mean(y)) if y.size else 0.5, 1e-3), 1 - 1e-3)
        return np.zeros(n_features), float(np.log(p / (1 - p)))
    # liblinear's dual solver is the fast one when features outnumber rows (TF-IDF)
    clf = LogisticRegression(C=C, solver="liblinear", dual=n_features > Xf.shape[0], max_iter=1000,
                             random_state=random_state)
    clf.fit(Xf, yf, sample_weight=wf)
    return clf.coef_.ravel().astype(float), float(clf.intercept_[0])


def logistic(X: Any, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """σ(X W + b): X (n, D) sparse or dense, W (D, M), b (M,) → dense (n, M)."""
    out = X @ W
    return sigmoid(np.asarray(out.toarray() if sp.issparse(out) else out) + b[None, :])


class UtilityRouter(BaseRouter):
    """Multi-model router; knob λ ≥ 0 (larger = cheaper)."""

    kind = "utility"
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
        return logistic(X, self.coef_, self.intercept_)
