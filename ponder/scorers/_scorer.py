"""AnswerScorer, joining ``_features``, ``_stacking`` (stage 1), ``_combiners`` (stage 2) and ``_io``.
Agreement with earlier rungs' answers, already paid for, is the strongest signal on closed tasks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from .._exceptions import NotFittedError
from .._features import SentenceEmbedder, TextFeaturizer, response_stats
from ._combiners import (
    CALIBRATIONS,
    LEARNERS,
    Calibrator,
    calibrate,
    combiner_decision,
    fit_calibrator,
    fit_combiner,
)
from ._features import (
    agree_columns,
    check_frame,
    combiner_input,
    dense_features,
    model_index,
    scorer_frame,
    text_matrix,
)
from ._io import load_scorer, save_scorer
from ._signals import SIGNAL_NAMES, frame_signals, signal_dense, signals_in
from ._stacking import fit_text_heads, group_folds, text_logit

__all__ = ["AnswerScorer", "scorer_frame"]


class AnswerScorer(BaseEstimator):  # type: ignore[misc]
    """Calibrated P(acceptable) for an answer, in two stacked stages.

    1. *Text head* per model (logistic regression on query and response TF-IDF, or query
       embeddings): which queries the model gets right; its out-of-fold log-odds feed stage 2.
    2. *Combiner* on the text log-odds, response statistics, agreement with earlier rungs, the
       model and any verification signals in ``X``; the linear learner has a shared and a
       per-model copy of each column, so agreement can weigh more for one model.

    Parameters: ``learner`` "logistic" | "hgb"; ``calibration`` "sigmoid" | "isotonic" | None (on
    out-of-fold decisions); ``C``/``text_C`` inverse regularisation of combiner/text heads; ``text``
    "tfidf" | "embed" | "none" (the query's features); ``response_text`` adds the response's TF-IDF;
    ``max_features`` the query vocabulary (responses: a quarter); ``cv`` folds; ``accept_at`` the
    acceptable threshold of a fractional ``y``; ``signals`` use X's (``signals_``: those in fit).
    """

    def __init__(
        self,
        learner: str = "logistic",
        calibration: str | None = "sigmoid",
        C: float = 1.0,
        text_C: float = 1.0,
        text: str = "tfidf",
        response_text: bool = True,
        max_features: int = 5000,
        max_iter: int = 300,
        cv: int = 3,
        accept_at: float = 0.5,
        random_state: int = 0,
        signals: bool = True,
    ) -> None:
        self.learner = learner
        self.calibration = calibration
        self.C = C
        self.text_C = text_C
        self.text = text
        self.response_text = response_text
        self.max_features = max_features
        self.max_iter = max_iter
        self.cv = cv
        self.accept_at = accept_at
        self.random_state = random_state
        self.signals = signals

    # ---- scikit-learn estimator protocol (get_params, clone... from BaseEstimator) ----------
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "models_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError("this AnswerScorer is not fitted yet; call fit(X, y) first")

    # ---- features of fitted pieces --------------------------------------------------------------
    def _query_features(self) -> Any:
        return self.query_features_ if self.text in ("tfidf", "embed") else None

    def _response_features(self) -> Any:
        return self.response_features_ if self.response_text else None

    def _combiner_input(self, dense: np.ndarray, model_idx: np.ndarray) -> Any:
        return combiner_input(dense, model_idx, learner=self.learner, mean=self.dense_mean_,
                              scale=self.dense_scale_, n_models=len(self.models_))

    def _fit_combiner(self, Z: Any, y: np.ndarray) -> tuple[Any, ...]:
        return fit_combiner(Z, y, learner=self.learner, C=self.C, max_iter=self.max_iter,
                            random_state=self.random_state)

    # ---- learning -----------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Sequence[float] | np.ndarray) -> AnswerScorer:
        """Learn the text heads, the combiner and its calibration from rows ``X`` and labels ``y``."""
        queries, responses, models = check_frame(X)
        if self.learner not in LEARNERS:
            raise ValueError(f"learner must be one of {LEARNERS}, got {self.learner!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.text not in ("tfidf", "embed", "none"):
            raise ValueError(f"text must be 'tfidf', 'embed' or 'none', got {self.text!r}")
        yv = np.asarray(y, dtype=np.float64)
        if yv.shape != (len(X),):
            raise ValueError(f"y has shape {yv.shape}, expected ({len(X)},)")
        labels = (yv >= self.accept_at).astype(np.int64)
        if labels.min() == labels.max():
            raise ValueError("y holds a single class; a scorer needs acceptable and unacceptable answers")
        groups = X["group"].astype(str).to_numpy() if "group" in X.columns else np.array(queries)
        self.models_ = sorted(set(models))
        model_idx = model_index(self.models_, models)

        # Groups as integers in the strings' sorted order: GroupKFold then splits exactly as on
        # the strings, without sorting strings at every split.
        gcodes = pd.factorize(groups, sort=True)[0]
        # Stage 1 trains on one row per (query, model): the earlier-rung copies add nothing there.
        pair = pd.factorize(gcodes.astype(np.int64) * (len(self.models_) + 1) + model_idx)[0]
        first = np.flatnonzero(~pd.Series(pair).duplicated().to_numpy())  # pair i first at first[i]
        uq = list(dict.fromkeys(queries[i] for i in first))
        if self.text == "tfidf":
            self.query_features_: Any = TextFeaturizer(max_features=self.max_features).fit(uq)
        elif self.text == "embed":
            self.query_features_ = SentenceEmbedder()
        if self.response_text:
            # Document frequency counts *queries*: a token only in one query's answers (its
            # correct number) is shared by the models that got it right and would leak the label.
            per_query: dict[str, list[str]] = {}
            for i in first:
                per_query.setdefault(str(groups[i]), []).append(responses[i])
            self.response_features_ = TextFeaturizer(
                max_features=max(1000, self.max_features // 4), ngram_range=(1, 1), min_df=3,
            ).fit(["\n".join(v) for v in per_query.values()])
        T = text_matrix([queries[i] for i in first], [responses[i] for i in first],
                        self._query_features(), self._response_features())
        self.text_coef_, self.text_intercept_, oof_first = fit_text_heads(
            T, model_idx[first], labels[first], gcodes[first], n_models=len(self.models_),
            C=self.text_C, cv=self.cv, random_state=self.random_state)
        text_logits = oof_first[pair]

        agree = agree_columns(X, self.models_)
        sig = frame_signals(X)
        self.signals_: tuple[str, ...] = signals_in(sig) if self.signals else ()
        dense = dense_features(text_logits, response_stats(queries, responses), model_idx, agree,
                               len(self.models_), signal_dense(sig, self.signals_))
        self.dense_mean_ = dense.mean(axis=0)
        scale = dense.std(axis=0)
        self.dense_scale_ = np.where(scale > 1e-12, scale, 1.0)
        Z = self._combiner_input(dense, model_idx)

        self.calibrator_: Calibrator | None = None
        if self.calibration is not None and self.cv >= 2:
            oof = np.zeros(len(X))
            n_groups = int(gcodes.max()) + 1
            for tr, te in group_folds(gcodes, min(self.cv, n_groups)):
                if labels[tr].min() == labels[tr].max():
                    continue
                oof[te] = combiner_decision(self._fit_combiner(Z[tr], labels[tr]), Z[te])
            self.calibrator_ = fit_calibrator(self.calibration, oof, labels)
        params = self._fit_combiner(Z, labels)
        if params[0] == "logistic":
            self.coef_, self.intercept_ = params[1], params[2]
        else:
            self.trees_ = params[1]
        self.n_features_in_ = Z.shape[1]
        return self

    # ---- prediction ---------------------------------------------------------------------------
    def _decision_dense(self, dense: np.ndarray, model_idx: np.ndarray) -> np.ndarray:
        params = ("logistic", self.coef_, self.intercept_) if hasattr(self, "coef_") else (
            "hgb", self.trees_)
        return combiner_decision(params, self._combiner_input(dense, model_idx))

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated log-odds of acceptability, one per row."""
        self._check_fitted()
        queries, responses, models = check_frame(X)
        model_idx = model_index(self.models_, models)
        T = text_matrix(queries, responses, self._query_features(), self._response_features())
        tl = text_logit(T, model_idx, self.text_coef_, self.text_intercept_)
        dense = dense_features(tl, response_stats(queries, responses), model_idx,
                               agree_columns(X, self.models_), len(self.models_),
                               signal_dense(frame_signals(X), self.signals_))
        return self._decision_dense(dense, model_idx)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2): column 1 is the calibrated P(acceptable)."""
        d = self.decision_function(X)  # checks that the scorer is fitted
        p = calibrate(self.calibrator_, d)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def score_one(self, query: str, response: str, model: str,
                  earlier: Sequence[tuple[str, str]] = (), *, samples: Sequence[str] = (),
                  logprob_mean: float | None = None, logprob_min: float | None = None) -> float:
        """P(acceptable) for one live answer (the cascade's call per rung), with its signals."""
        X = scorer_frame([query], [response], [model], [list(earlier)],
                         samples=[list(samples)], logprob_mean=[logprob_mean],
                         logprob_min=[logprob_min])
        return float(self.predict_proba(X)[0, 1])

    def score_grid(self, queries: Sequence[str], responses: np.ndarray, models: Sequence[str],
                   agree: np.ndarray, signals: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
        """For the optimizer, from (Q, M) ``responses``, (Q, M, M) ``agree`` and (Q, M, S) ``signals``:
        ``s1[q, m]`` = P(m acceptable | no earlier rung), ``s2[q, b, a]`` = P(b | a before it)."""
        self._check_fitted()
        nq, nm = responses.shape
        queries = [str(q) for q in queries]
        own = model_index(self.models_, models)
        s1 = np.zeros((nq, nm))
        s2 = np.full((nq, nm, nm), np.nan)
        # Blocks of queries (rows are scored alone, so no number changes) bound the combiner's input.
        for lo in range(0, nq, self._grid_block):
            at = slice(lo, min(nq, lo + self._grid_block))
            self._score_block(queries[at], responses[at], own, agree[at],
                              None if signals is None else signals[at], s1[at], s2[at])
        return s1, s2

    _grid_block = 4096

    def _score_block(self, queries: list[str], responses: np.ndarray, own: np.ndarray,
                     agree: np.ndarray, signals: np.ndarray | None, s1: np.ndarray,
                     s2: np.ndarray) -> None:
        nq, nm = responses.shape
        qf = self._query_features()
        qtext = None if qf is None else sp.csr_matrix(qf.transform(queries))
        for b in range(nm):
            resp_b = [str(r) for r in responses[:, b]]
            parts = [] if qtext is None else [qtext]
            if self.response_text:
                parts.append(self.response_features_.transform(resp_b))
            T = sp.hstack(parts, format="csr") if parts else sp.csr_matrix((nq, 0))
            mi = np.full(nq, own[b], dtype=np.int64)
            tl = text_logit(T, mi, self.text_coef_, self.text_intercept_)
            stats = response_stats(queries, resp_b)
            sig_b = signal_dense(np.full((nq, len(SIGNAL_NAMES)), np.nan) if signals is None else signals[:, b],
                                 self.signals_)
            none = np.full((nq, len(self.models_)), np.nan)
            variants: list[tuple[int | None, np.ndarray]] = [(None, none)]
            for a in range(nm):
                if a != b and own[a] >= 0:
                    ag = none.copy()
                    ag[:, own[a]] = agree[:, b, a]
                    variants.append((a, ag))
            k = len(variants)
            dense = dense_features(np.tile(tl, k), np.tile(stats, (k, 1)), np.tile(mi, k),
                                   np.vstack([v[1] for v in variants]), len(self.models_),
                                   np.tile(sig_b, (k, 1)))
            d = self._decision_dense(dense, np.tile(mi, k))
            p = calibrate(self.calibrator_, d).reshape(k, nq)
            s1[:, b] = p[0]
            for j, (prev, _) in enumerate(variants[1:], start=1):
                s2[:, b, prev] = p[j]

    # ---- persistence (the format lives in _io) ------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        return save_scorer(self, directory)

    @classmethod
    def load(cls, directory: str | Path, *, max_bytes: int | None = None) -> AnswerScorer:
        """Load a saved scorer (fields type-checked, foreign ones refused: ModelFileError);
        ``max_bytes`` caps the arrays' decompressed size."""
        return load_scorer(cls, directory, max_bytes=max_bytes)
