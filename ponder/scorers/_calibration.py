"""Calibration of the combiner's log-odds into P(acceptable): Platt scaling or isotonic
regression, fitted on out-of-fold decisions and kept as two plain arrays."""

from __future__ import annotations

import numpy as np

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
