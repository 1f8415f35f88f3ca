"""Hybrid LLM pairwise router (Ding et al. 2024): the weak model where p(x) = P(s_weak ≥ s_strong − t)
≥ threshold. Labels: ``deterministic`` 1[s_weak ≥ s_strong]; ``probabilistic`` P(W ≥ S), scores
read as Bernoulli success probabilities; ``transformed`` P(W ≥ S − t), t chosen on train to
maximise label spread (mean |y_i − y_j|), as in the paper. Beside it, the reference routers:
random (P(strong) = knob) and the oracle (the cheapest model with the best recorded score)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._exceptions import ConfigError, DataError
from ._base import BaseRouter, check_in_table, model_means, table_arrays
from ._utility import fit_soft_logistic, logistic, sigmoid

VARIANTS = ("deterministic", "probabilistic", "transformed")


def _spread(y: np.ndarray) -> float:
    """Mean |y_i − y_j| over all pairs, in O(n log n)."""
    n = len(y)
    if n < 2:
        return 0.0
    s = np.sort(y)
    i = np.arange(n)
    return float(2.0 * np.sum((2 * i - n + 1) * s) / (n * (n - 1)))


def pairwise_labels(s_weak: np.ndarray, s_strong: np.ndarray, variant: str, t: float = 0.0,
                    ) -> np.ndarray:
    binary = np.all(np.isin(s_weak, (0.0, 1.0))) and np.all(np.isin(s_strong, (0.0, 1.0)))
    if variant == "deterministic":
        return (s_weak >= s_strong - t).astype(float)
    if binary:
        # Bernoulli reading: W ≥ S − t fails only when W = 0 and S = 1 (for t < 1).
        fail = (1.0 - s_weak) * s_strong
        return 1.0 - fail if t < 1.0 else np.ones_like(s_weak)
    # Graded scores: P(W ≥ S − t) with W, S the recorded values (a soft step of width 0.05 so
    # near-ties count half instead of flipping on rounding noise).
    return sigmoid((s_weak - s_strong + t) / 0.05)


def choose_relaxation(s_weak: np.ndarray, s_strong: np.ndarray, variant: str) -> float:
    """The t in [0, 1] that maximises label spread (ties → smallest t)."""
    diffs = np.abs(s_strong - s_weak)
    cands = np.unique(np.concatenate([[0.0], np.quantile(diffs, np.linspace(0, 1, 41))]))
    best_t, best = 0.0, -1.0
    for t in cands:
        sp_ = _spread(pairwise_labels(s_weak, s_strong, variant, float(t)))
        if sp_ > best + 1e-12:
            best_t, best = float(t), sp_
    return best_t


class PairwiseRouter(BaseRouter):
    """Weak (default: cheapest) vs strong (default: best train mean); knob: threshold on P(weak ok)."""

    kind = "pairwise"
    _default_knob = 0.5
    _knob_cheaper_when_larger = False
    _state = ("coef", "intercept")

    def __init__(self, *, variant: str = "deterministic", weak: str | None = None,
                 strong: str | None = None, featurizer: Any = "tfidf", C: float = 1.0,
                 knob: float | None = None) -> None:
        self.variant = variant
        self.weak = weak
        self.strong = strong
        self.featurizer = featurizer
        self.C = C
        self.knob = knob

    def _select_models(self, table: Any) -> list[str]:
        if self.variant not in VARIANTS:
            raise ConfigError(f"pairwise variant must be one of {VARIANTS}, got {self.variant!r}")
        check_in_table([m for m in (self.weak, self.strong) if m is not None], table,
                       "weak/strong model")
        weak = self.weak or table.models[0]
        if self.strong is not None:
            strong = self.strong
        else:
            order = [m for _, m in sorted(zip(-model_means(table), table.models, strict=True),
                                          key=lambda t: t[0])]
            strong = next((m for m in order if m != weak), weak)
        if weak == strong:
            raise DataError(f"pairwise router needs two different models; weak and strong are both "
                            f"{weak!r}", file=table.name)
        return [weak, strong]

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        both = present.all(axis=1)
        if both.sum() < 2:
            raise DataError("pairwise router needs queries that have outcomes for both models")
        sw, ss = scores[both, 0], scores[both, 1]
        t = choose_relaxation(sw, ss, self.variant) if self.variant == "transformed" else 0.0
        y = pairwise_labels(sw, ss, self.variant, t)
        Xb = X[np.flatnonzero(both)]
        w, b = fit_soft_logistic(Xb, y, C=self.C)
        self.coef_ = w
        self.intercept_ = np.array([b])
        self.relaxation_ = float(t)
        self.label_mean_ = float(np.mean(y))
        self.strong_ = 1

    def predict_proba(self, queries: list[str]) -> np.ndarray:
        """P(weak model good enough) per query."""
        return self.predict_quality(queries)[:, 0]

    def _predict_core(self, X: Any) -> np.ndarray:
        p = logistic(X, self.coef_[:, None], self.intercept_)[:, 0]
        return np.stack([p, 1.0 - p], axis=1)

    def _weak_score(self, qhat: np.ndarray) -> np.ndarray:
        return qhat[:, 0]

    def _knob_grid(self, qhat: np.ndarray, chat: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.unique(qhat[:, 0]) + 1e-12, [1.0 + 1e-9]])


class RandomRouter(BaseRouter):
    """The cheapest vs the best-train-quality model by a coin; quality is each model's train mean."""

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
