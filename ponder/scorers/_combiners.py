"""Stage 2 of the scorer: a logistic or gradient-boosted combiner (its trees flattened into arrays,
so a saved scorer needs no pickle) and its calibration (Platt or isotonic, as two arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np

LEARNERS = ("logistic", "hgb")


def fit_combiner(Z: Any, y: np.ndarray, *, learner: str, C: float, max_iter: int,
                 random_state: int) -> tuple[Any, ...]:
    if learner == "logistic":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=C, solver="liblinear", max_iter=max_iter,
                                random_state=random_state)
        lr.fit(Z, y)
        return ("logistic", lr.coef_.ravel().astype(np.float64), float(lr.intercept_[0]))
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    hgb = HistGradientBoostingClassifier(
        max_iter=max_iter // 2, learning_rate=0.05, max_leaf_nodes=15,
        min_samples_leaf=40, l2_regularization=1.0, random_state=random_state,
        early_stopping=False,
    )
    # One OpenMP thread: the data are small, and on a busy 2-core machine spin-waiting
    # threads made fits an order of magnitude slower.
    with threadpool_limits(limits=1, user_api="openmp"):
        hgb.fit(Z, y)
    return ("hgb", export_trees(hgb))


def combiner_decision(params: tuple[Any, ...], Z: Any) -> np.ndarray:
    """Log-odds of a combiner returned by :func:`fit_combiner`."""
    if params[0] == "logistic":
        logit: np.ndarray = np.asarray(Z @ params[1]).ravel() + params[2]
        return logit
    return tree_decision(params[1], Z)


# ---- calibration ------------------------------------------------------------------------------

#: (kind, a, b): "sigmoid" → P = σ(a[0]·d + b[0]); "isotonic" → P = interp(d, a, b)
Calibrator = tuple[str, np.ndarray, np.ndarray]

CALIBRATIONS = ("sigmoid", "isotonic", None)


def sigmoid(z: np.ndarray) -> np.ndarray:
    p: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return p


def fit_calibrator(kind: str, d: np.ndarray, y: np.ndarray) -> Calibrator:
    if kind == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(d[:, None], y)
        return "sigmoid", np.array([float(lr.coef_[0, 0])]), np.array([float(lr.intercept_[0])])
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(d, y)
    return "isotonic", np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float)


def calibrate(calibrator: Calibrator | None, d: np.ndarray) -> np.ndarray:
    """P(acceptable) from log-odds ``d`` (a plain sigmoid without a calibrator)."""
    if calibrator is None:
        return sigmoid(d)
    kind, a, b = calibrator
    if kind == "sigmoid":
        return sigmoid(a[0] * d + b[0])
    p: np.ndarray = np.interp(d, a, b)
    return p


# ---- gradient-boosted trees as plain arrays -----------------------------------------------------

TREE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf",
               "value")


def export_trees(hgb: Any) -> dict[str, np.ndarray]:
    """Flatten sklearn's fitted HistGradientBoosting trees into plain arrays."""
    nodes, offsets = [], [0]
    for predictors in hgb._predictors:
        tree = predictors[0].nodes
        if tree["is_categorical"].any():
            raise ValueError("categorical splits are not exportable")
        nodes.append(tree)
        offsets.append(offsets[-1] + len(tree))
    allnodes = np.concatenate(nodes)
    out = {f: np.ascontiguousarray(allnodes[f]) for f in TREE_FIELDS}
    out["offsets"] = np.asarray(offsets, dtype=np.int64)
    out["baseline"] = np.asarray(hgb._baseline_prediction, dtype=np.float64).ravel()
    return out


def tree_decision(trees: dict[str, np.ndarray], Z: np.ndarray) -> np.ndarray:
    """Sum of leaf values over all trees plus the baseline: the boosted log-odds."""
    n = Z.shape[0]
    offsets = trees["offsets"]
    feat, thr = trees["feature_idx"], trees["num_threshold"]
    mleft, left, right = trees["missing_go_to_left"].astype(bool), trees["left"], trees["right"]
    leaf, value = trees["is_leaf"].astype(bool), trees["value"]
    out = np.full(n, float(trees["baseline"][0]))
    rows = np.arange(n)
    for t in range(len(offsets) - 1):
        base = int(offsets[t])
        node = np.full(n, base, dtype=np.int64)
        active = ~leaf[node]
        while active.any():
            idx = node[active]
            x = Z[rows[active], feat[idx]]
            go_left = np.where(np.isnan(x), mleft[idx], x <= thr[idx])
            node[active] = base + np.where(go_left, left[idx], right[idx]).astype(np.int64)
            active = ~leaf[node]
        out += value[node]
    return out
