"""Small linear pieces shared by the routers: a soft-label logistic regression whose learned
state is two arrays (so prediction is one sparse mat-vec, not an sklearn call per model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_soft_logistic(X: Any, y: np.ndarray, *, C: float = 1.0, class_weight: Any = None,
                      random_state: int = 0) -> tuple[np.ndarray, float]:
    """Logistic regression on labels in [0, 1]: each row enters twice, as a positive with weight
    y and a negative with weight 1 − y (the cross-entropy with a soft target). Returns (w, b).
    Constant labels give w = 0 and the clipped log-odds as intercept. ``random_state`` seeds
    liblinear's dual solver, which shuffles rows: without it two fits differ in the 6th digit."""
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
    dual = n_features > Xf.shape[0]
    clf = LogisticRegression(C=C, solver="liblinear", dual=dual, max_iter=1000,
                             class_weight=class_weight, random_state=random_state)
    clf.fit(Xf, yf, sample_weight=wf)
    return clf.coef_.ravel().astype(float), float(clf.intercept_[0])


def linear_scores(X: Any, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """X (n, D) sparse or dense times W (D, M) plus b (M,) → dense (n, M)."""
    out = X @ W
    if sp.issparse(out):
        out = out.toarray()
    scores: np.ndarray = np.asarray(out) + b[None, :]
    return scores
