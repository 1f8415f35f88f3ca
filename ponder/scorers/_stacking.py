"""Stage 1 of the scorer: one logistic text head per model; the combiner trains on their
*out-of-fold* log-odds (folds by query group), never on in-sample text scores."""

from __future__ import annotations

from typing import Any

import numpy as np


def fit_text_heads(T: Any, model_idx: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
                   n_models: int, C: float, cv: int, random_state: int,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-model text LR: coefficients (M, D), intercepts (M,) and out-of-fold log-odds."""
    from sklearn.linear_model import LogisticRegression

    d = T.shape[1]
    coef, icpt = np.zeros((n_models, d)), np.zeros(n_models)
    oof = np.zeros(T.shape[0])
    if d == 0:
        return coef, icpt, oof

    def lr() -> Any:
        return LogisticRegression(C=C, solver="liblinear", random_state=random_state)

    for j in range(n_models):
        rows = np.flatnonzero(model_idx == j)
        y = labels[rows]
        if y.min() == y.max():  # a model always right (or wrong) on train: constant prior
            p = np.clip(y.mean(), 0.01, 0.99)
            icpt[j] = np.log(p / (1 - p))
            oof[rows] = icpt[j]
            continue
        g = groups[rows]
        k = min(cv, len(np.unique(g)))
        if k >= 2:
            for tr, te in group_folds(g, k):
                if y[tr].min() == y[tr].max():
                    oof[rows[te]] = 0.0
                    continue
                fold = lr().fit(T[rows[tr]], y[tr])
                oof[rows[te]] = fold.decision_function(T[rows[te]])
        full = lr().fit(T[rows], y)
        coef[j], icpt[j] = full.coef_.ravel(), float(full.intercept_[0])
        if k < 2:
            oof[rows] = full.decision_function(T[rows])
    return coef, icpt, oof


def group_folds(groups: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``GroupKFold(n_splits=k)``'s folds; dealt out directly (last group first) where groups are
    equal-sized, as a text head's are: its per-group loop cost half a second per cascade fit."""
    from sklearn.model_selection import GroupKFold

    _, idx, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if counts.size < k or counts.min() != counts.max():
        return list(GroupKFold(n_splits=k).split(groups, groups, groups))
    fold_of_group = np.empty(counts.size, dtype=np.int64)
    fold_of_group[::-1] = np.arange(counts.size) % k  # the stable size order, reversed
    fold = fold_of_group[idx]
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def text_logit(T: Any, model_idx: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
               ) -> np.ndarray:
    """Stage-1 log-odds of each row's own model (0 for models never seen in fit)."""
    out = np.zeros(T.shape[0])
    known = model_idx >= 0
    if T.shape[1] == 0 or not known.any():
        return out
    full = np.asarray(T @ coef.T)  # (n, M)
    rows = np.flatnonzero(known)
    out[rows] = full[rows, model_idx[rows]] + intercept[model_idx[rows]]
    return out
