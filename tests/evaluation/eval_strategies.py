"""Small but real strategies for testing the evaluator (the real routers live in ponder.routers).

Both learn from train rows only and replay per-query choices on the test table.
"""

from __future__ import annotations

import numpy as np

from ponder.evaluation import OperatingPoint, OutcomeTable


def _replay(test: OutcomeTable, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(len(choice))
    return test.costs[rows, choice], test.scores[rows, choice]


def _fallback(test: OutcomeTable, want: np.ndarray) -> np.ndarray:
    """Use the wanted model if the query has it, else the query's cheapest present model."""
    present = test.present
    rows = np.arange(len(want))
    cheapest_present = np.argmax(present, axis=1)  # models are sorted cheapest first
    return np.where(present[rows, want], want, cheapest_present)


class LengthThresholdRouter:
    """Send long prompts to the strongest train model, short ones to the cheapest.

    The knob is a prompt-length threshold, taken at quantiles of the train prompt lengths.
    """

    kind = "router"

    def __init__(self, n_thresholds: int = 9, name: str = "length-threshold") -> None:
        self.n_thresholds = n_thresholds
        self.name = name

    def fit(self, train: OutcomeTable) -> LengthThresholdRouter:
        q = np.nanmean(train.scores, axis=0)
        self.models_ = list(train.models)
        self.strong_ = self.models_[int(np.nanargmax(q))]
        self.weak_ = self.models_[0]
        lengths = np.array([len(x) for x in train.queries], dtype=float)
        qs = np.linspace(0, 1, self.n_thresholds)
        self.thresholds_ = np.unique(np.concatenate([np.quantile(lengths, qs), [np.inf]]))
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        lengths = np.array([len(x) for x in test.queries], dtype=float)
        s, w = test.models.index(self.strong_), test.models.index(self.weak_)
        points = []
        for t in self.thresholds_:
            want = np.where(lengths >= t, s, w)
            cost, quality = _replay(test, _fallback(test, want))
            points.append(OperatingPoint({"min_length": float(t)}, cost, quality))
        return points


class TaskRouter:
    """Per task, pick the model maximising train quality − λ·cost; the knob is λ."""

    kind = "router"

    def __init__(self, lambdas: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3,
                                                      3e3, 1e4, 1e5), name: str = "task-router"):
        self.lambdas = lambdas
        self.name = name

    def fit(self, train: OutcomeTable) -> TaskRouter:
        tasks = np.asarray(train.tasks, dtype=object)
        self.models_ = list(train.models)
        self.table_ = {}
        for t in np.unique(tasks):
            sel = tasks == t
            self.table_[t] = (np.nanmean(train.scores[sel], axis=0),
                              np.nanmean(train.costs[sel], axis=0))
        self.global_ = (np.nanmean(train.scores, axis=0), np.nanmean(train.costs, axis=0))
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        idx = [test.models.index(m) for m in self.models_]
        points = []
        for lam in self.lambdas:
            want = np.empty(len(test.query_ids), dtype=int)
            for i, t in enumerate(test.tasks):
                q, c = self.table_.get(t, self.global_)
                want[i] = idx[int(np.nanargmax(np.nan_to_num(q - lam * c, nan=-np.inf)))]
            cost, quality = _replay(test, _fallback(test, want))
            points.append(OperatingPoint({"lambda": lam}, cost, quality))
        return points
