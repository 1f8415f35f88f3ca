"""AnswerScorer: P(response acceptable | query, response, model, earlier rungs' answers).

One estimator covers every model: a text head per model learns which queries that model gets
right, and a combiner weighs the head's log-odds with response statistics, model identity and
agreement with the earlier rungs' answers. Agreement with the earlier rungs' answers is what a cascade has
already paid for; it is the strongest signal on multiple-choice and yes/no tasks.

Input ``X`` is a DataFrame with columns ``query``, ``response``, ``model`` and optional
``earlier`` (a list of ``(model, response)`` pairs, the answers of earlier rungs) and ``group``
(query id; rows of one query never straddle calibration folds).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _persist
from .._exceptions import ModelFileError, NotFittedError
from .._features import (
    RESPONSE_STAT_NAMES,
    SentenceEmbedder,
    TextFeaturizer,
    agreement,
    response_stats,
)

__all__ = ["AnswerScorer", "scorer_frame"]

_KIND = "ponder-scorer"
_LEARNERS = ("logistic", "hgb")
_CALIBRATIONS = ("sigmoid", "isotonic", None)


def scorer_frame(
    queries: Sequence[str],
    responses: Sequence[str],
    models: Sequence[str],
    earlier: Sequence[Sequence[tuple[str, str]]] | None = None,
    groups: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Build the ``X`` a scorer takes from parallel lists."""
    df = pd.DataFrame({"query": list(queries), "response": list(responses), "model": list(models)})
    if earlier is not None:
        df["earlier"] = [list(e) for e in earlier]
    if groups is not None:
        df["group"] = list(groups)
    return df


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


class AnswerScorer:
    """Calibrated P(acceptable) for an answer, in two stacked stages.

    1. *Text head*, one per model: a logistic regression on the TF-IDF of the query and the
       response (or MiniLM embeddings of the query, ``text="embed"``). It learns which queries a
       model gets right. Its out-of-fold log-odds feed stage 2, so stage 2 never trains on
       in-sample text scores.
    2. *Combiner*: logistic regression (``learner="logistic"``) or histogram gradient boosting
       (``learner="hgb"``) on the text log-odds, response statistics, agreement with the earlier
       rungs' answers and the model's identity. For the linear learner every column has a shared
       copy and a per-model copy, so agreement can weigh more for one model than another.

    Parameters
    ----------
    learner : "logistic" | "hgb" (the combiner)
    calibration : "sigmoid" (Platt) | "isotonic" | None, fitted on out-of-fold decisions
    C : inverse regularisation of the combiner (logistic); the text heads use ``text_C``
    text : "tfidf" | "embed" | "none": how the query is featurised in the text heads
    response_text : add the response's TF-IDF to the text heads
    max_features : TF-IDF vocabulary size for queries (responses get a quarter)
    cv : folds for the out-of-fold text log-odds and the calibration
    accept_at : a score ≥ this counts as acceptable when ``y`` is fractional
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

    # ---- sklearn plumbing -----------------------------------------------------------------
    _PARAMS = ("learner", "calibration", "C", "text_C", "text", "response_text", "max_features",
               "max_iter", "cv", "accept_at", "random_state")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> AnswerScorer:
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"unknown parameter {k!r} for AnswerScorer")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in ("learner", "calibration", "text"))
        return f"AnswerScorer({args})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError("this AnswerScorer is not fitted yet; call fit(X, y) first")

    # ---- features ---------------------------------------------------------------------------
    @staticmethod
    def _validate_X(X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("X must be a DataFrame with columns query, response, model "
                            "(see ponder.scorers.scorer_frame)")
        missing = [c for c in ("query", "response", "model") if c not in X.columns]
        if missing:
            raise ValueError(f"X lacks column(s) {', '.join(missing)}")
        return X

    def _model_index(self, models: Sequence[str]) -> np.ndarray:
        index = {name: j for j, name in enumerate(self.models_)}
        return np.array([index.get(str(m), -1) for m in models], dtype=np.int64)

    def _agree_columns(self, X: pd.DataFrame) -> np.ndarray:
        """(n, M) agreement of each row's response with each earlier rung's; NaN = not earlier."""
        n, m = len(X), len(self.models_)
        out = np.full((n, m), np.nan)
        if "earlier" not in X.columns:
            return out
        index = {name: j for j, name in enumerate(self.models_)}
        for i, (resp, earlier) in enumerate(zip(X["response"], X["earlier"], strict=True)):
            if not isinstance(earlier, (list, tuple)):
                continue
            for item in earlier:
                j = index.get(str(item[0]))
                if j is not None:
                    out[i, j] = agreement(str(resp), str(item[1]))
        return out

    def _text_matrix(self, queries: Sequence[str], responses: Sequence[str]) -> Any:
        parts: list[Any] = []
        if self.text in ("tfidf", "embed"):
            # Encode each distinct query once (prompts repeat once per model and are long).
            uniq = list(dict.fromkeys(queries))
            pos = {q: i for i, q in enumerate(uniq)}
            enc = sp.csr_matrix(self.query_features_.transform(uniq))
            parts.append(enc[np.array([pos[q] for q in queries], dtype=np.int64)])
        if self.response_text:
            parts.append(self.response_features_.transform(responses))
        if not parts:
            return sp.csr_matrix((len(queries), 0))
        return sp.hstack(parts, format="csr")

    def _text_logit(self, T: Any, model_idx: np.ndarray) -> np.ndarray:
        """Stage-1 log-odds of each row's own model (0 for models never seen in fit)."""
        out = np.zeros(T.shape[0])
        known = model_idx >= 0
        if T.shape[1] == 0 or not known.any():
            return out
        full = np.asarray(T @ self.text_coef_.T)  # (n, M)
        rows = np.flatnonzero(known)
        out[rows] = full[rows, model_idx[rows]] + self.text_intercept_[model_idx[rows]]
        return out

    def _dense(self, text_logit: np.ndarray, stats: np.ndarray, model_idx: np.ndarray,
               agree: np.ndarray) -> np.ndarray:
        """Combiner input: text log-odds, response stats, earlier-rung agreement, one-hot."""
        n, m = len(model_idx), len(self.models_)
        has = ~np.isnan(agree)
        n_earlier = has.sum(axis=1)
        a0 = np.where(has, agree, 0.0)
        mean_agree = np.where(n_earlier > 0, a0.sum(axis=1) / np.maximum(n_earlier, 1), 0.0)
        max_agree = np.where(n_earlier > 0, np.where(has, agree, -1.0).max(axis=1), 0.0)
        onehot = np.zeros((n, m))
        known = model_idx >= 0
        onehot[np.flatnonzero(known), model_idx[known]] = 1.0
        return np.hstack([text_logit[:, None], stats, (n_earlier > 0)[:, None].astype(float),
                          mean_agree[:, None], max_agree[:, None], a0, has.astype(float), onehot])

    def _combiner_input(self, dense: np.ndarray, model_idx: np.ndarray) -> Any:
        if self.learner == "hgb":
            return (dense - self.dense_mean_) / self.dense_scale_
        # Scaled, not centred (the intercepts absorb the shift), so the design stays sparse:
        # a shared copy + one copy per model; unknown models get only the shared copy.
        k = 1 + len(RESPONSE_STAT_NAMES)  # text log-odds and stats are dense anyway: centre them
        z = dense / self.dense_scale_
        z[:, :k] -= (self.dense_mean_ / self.dense_scale_)[:k]
        z = sp.csr_matrix(z)
        coo = z.tocoo()
        d, m = z.shape[1], len(self.models_)
        mid = model_idx[coo.row]
        keep = mid >= 0
        rows = np.concatenate([coo.row, coo.row[keep]])
        cols = np.concatenate([coo.col, coo.col[keep] + (1 + mid[keep]) * d])
        data = np.concatenate([coo.data, coo.data[keep]])
        return sp.csr_matrix((data, (rows, cols)), shape=(z.shape[0], d * (1 + m)))

    # ---- learning -----------------------------------------------------------------------------
    def _fit_text_heads(self, T: Any, model_idx: np.ndarray, labels: np.ndarray,
                        groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-model text LR: coefficients (M, D), intercepts (M,) and out-of-fold log-odds."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold

        m, d = len(self.models_), T.shape[1]
        coef, icpt = np.zeros((m, d)), np.zeros(m)
        oof = np.zeros(T.shape[0])
        if d == 0:
            return coef, icpt, oof
        for j in range(m):
            rows = np.flatnonzero(model_idx == j)
            y = labels[rows]
            if y.min() == y.max():  # a model always right (or wrong) on train: constant prior
                p = np.clip(y.mean(), 0.01, 0.99)
                icpt[j] = np.log(p / (1 - p))
                oof[rows] = icpt[j]
                continue

            def lr() -> Any:
                return LogisticRegression(C=self.text_C, solver="liblinear")

            g = groups[rows]
            k = min(self.cv, len(set(g)))
            if k >= 2:
                for tr, te in GroupKFold(n_splits=k).split(rows, y, g):
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

    def _fit_combiner(self, Z: np.ndarray, y: np.ndarray) -> tuple[Any, ...]:
        if self.learner == "logistic":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=self.C, solver="liblinear", max_iter=self.max_iter)
            lr.fit(Z, y)
            return ("logistic", lr.coef_.ravel().astype(np.float64), float(lr.intercept_[0]))
        from sklearn.ensemble import HistGradientBoostingClassifier

        hgb = HistGradientBoostingClassifier(
            max_iter=self.max_iter // 2, learning_rate=0.05, max_leaf_nodes=15,
            min_samples_leaf=40, l2_regularization=1.0, random_state=self.random_state,
            early_stopping=False,
        )
        from threadpoolctl import threadpool_limits

        # One OpenMP thread: the data are small, and on a busy 2-core machine spin-waiting
        # threads made fits an order of magnitude slower.
        with threadpool_limits(limits=1, user_api="openmp"):
            hgb.fit(Z, y)
        return ("hgb", _export_trees(hgb))

    @staticmethod
    def _decide(params: tuple[Any, ...], Z: np.ndarray) -> np.ndarray:
        if params[0] == "logistic":
            return np.asarray(Z @ params[1]).ravel() + params[2]
        return _tree_decision(params[1], Z)

    def fit(self, X: pd.DataFrame, y: Sequence[float] | np.ndarray) -> AnswerScorer:
        """Learn the text heads, the combiner and its calibration from rows ``X`` and labels ``y``."""
        X = self._validate_X(X)
        if self.learner not in _LEARNERS:
            raise ValueError(f"learner must be one of {_LEARNERS}, got {self.learner!r}")
        if self.calibration not in _CALIBRATIONS:
            raise ValueError(f"calibration must be one of {_CALIBRATIONS}, got {self.calibration!r}")
        if self.text not in ("tfidf", "embed", "none"):
            raise ValueError(f"text must be 'tfidf', 'embed' or 'none', got {self.text!r}")
        yv = np.asarray(y, dtype=np.float64)
        if yv.shape != (len(X),):
            raise ValueError(f"y has shape {yv.shape}, expected ({len(X)},)")
        labels = (yv >= self.accept_at).astype(np.int64)
        if labels.min() == labels.max():
            raise ValueError("y holds a single class; a scorer needs acceptable and unacceptable answers")
        queries = X["query"].astype(str).tolist()
        responses = X["response"].astype(str).tolist()
        models = X["model"].astype(str).tolist()
        groups = X["group"].astype(str).to_numpy() if "group" in X.columns else np.array(queries)
        self.models_ = sorted(set(models))
        model_idx = self._model_index(models)

        # Stage 1 trains on one row per (query, model): the earlier-rung copies add nothing there.
        key = pd.Series([f"{g}\x00{m}" for g, m in zip(groups, models, strict=True)])
        first = np.flatnonzero(~key.duplicated().to_numpy())
        uq = list(dict.fromkeys(queries[i] for i in first))
        if self.text == "tfidf":
            self.query_features_: Any = TextFeaturizer(max_features=self.max_features).fit(uq)
        elif self.text == "embed":
            self.query_features_ = SentenceEmbedder()
        if self.response_text:
            # Document frequency counts *queries*, not rows: a token that only occurs in the
            # answers to one query (its correct number, its function name) is shared by the
            # models that got it right and would leak the label into the vocabulary.
            per_query: dict[str, list[str]] = {}
            for i in first:
                per_query.setdefault(str(groups[i]), []).append(responses[i])
            self.response_features_ = TextFeaturizer(
                max_features=max(1000, self.max_features // 4), ngram_range=(1, 1), min_df=3,
            ).fit(["\n".join(v) for v in per_query.values()])
        T = self._text_matrix([queries[i] for i in first], [responses[i] for i in first])
        self.text_coef_, self.text_intercept_, oof_first = self._fit_text_heads(
            T, model_idx[first], labels[first], groups[first])
        oof_map = dict(zip(key.iloc[first], oof_first, strict=True))
        text_logit = np.array([oof_map[k] for k in key])

        agree = self._agree_columns(X)
        dense = self._dense(text_logit, response_stats(queries, responses), model_idx, agree)
        self.dense_mean_ = dense.mean(axis=0)
        scale = dense.std(axis=0)
        self.dense_scale_ = np.where(scale > 1e-12, scale, 1.0)
        Z = self._combiner_input(dense, model_idx)

        self.calibrator_: tuple[str, np.ndarray, np.ndarray] | None = None
        if self.calibration is not None and self.cv >= 2:
            from sklearn.model_selection import GroupKFold

            oof = np.zeros(len(X))
            for tr, te in GroupKFold(n_splits=min(self.cv, len(set(groups)))).split(Z, labels, groups):
                if labels[tr].min() == labels[tr].max():
                    continue
                oof[te] = self._decide(self._fit_combiner(Z[tr], labels[tr]), Z[te])
            self.calibrator_ = _fit_calibrator(self.calibration, oof, labels)
        params = self._fit_combiner(Z, labels)
        if params[0] == "logistic":
            self.coef_, self.intercept_ = params[1], params[2]
        else:
            self.trees_ = params[1]
        self.n_features_in_ = Z.shape[1]
        return self

    # ---- prediction ---------------------------------------------------------------------------
    def _decision_dense(self, dense: np.ndarray, model_idx: np.ndarray) -> np.ndarray:
        Z = self._combiner_input(dense, model_idx)
        if hasattr(self, "coef_"):
            return np.asarray(Z @ self.coef_).ravel() + self.intercept_
        return _tree_decision(self.trees_, Z)

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated log-odds of acceptability, one per row."""
        self._check_fitted()
        X = self._validate_X(X)
        queries = X["query"].astype(str).tolist()
        responses = X["response"].astype(str).tolist()
        model_idx = self._model_index(X["model"].astype(str).tolist())
        text_logit = self._text_logit(self._text_matrix(queries, responses), model_idx)
        dense = self._dense(text_logit, response_stats(queries, responses), model_idx,
                            self._agree_columns(X))
        return self._decision_dense(dense, model_idx)

    def _calibrate(self, d: np.ndarray) -> np.ndarray:
        if self.calibrator_ is None:
            return _sigmoid(d)
        kind, a, b = self.calibrator_
        if kind == "sigmoid":
            return _sigmoid(a[0] * d + b[0])
        return np.interp(d, a, b)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2): column 1 is the calibrated P(acceptable)."""
        p = self._calibrate(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def score_one(self, query: str, response: str, model: str,
                  earlier: Sequence[tuple[str, str]] = ()) -> float:
        """P(acceptable) for one live answer (what the cascade calls per rung)."""
        X = scorer_frame([query], [response], [model], [list(earlier)])
        return float(self.predict_proba(X)[0, 1])

    def score_grid(self, queries: Sequence[str], responses: np.ndarray, models: Sequence[str],
                   agree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores for every first rung and every (rung, one earlier rung) pair, for the optimizer.

        ``responses`` is (Q, M) over ``models``; ``agree`` the (Q, M, M) agreement matrix.
        Returns ``s1`` (Q, M) = P(m acceptable | no earlier rung) and ``s2`` (Q, M, M) with
        ``s2[q, b, a]`` = P(b acceptable | rung a answered before it); the diagonal is NaN.
        """
        self._check_fitted()
        nq, nm = responses.shape
        queries = [str(q) for q in queries]
        own = self._model_index(models)
        s1 = np.zeros((nq, nm))
        s2 = np.full((nq, nm, nm), np.nan)
        qtext = None
        if self.text == "tfidf":
            qtext = self.query_features_.transform(queries)
        elif self.text == "embed":
            qtext = sp.csr_matrix(self.query_features_.transform(queries))
        for b in range(nm):
            resp_b = [str(r) for r in responses[:, b]]
            parts = [] if qtext is None else [qtext]
            if self.response_text:
                parts.append(self.response_features_.transform(resp_b))
            T = sp.hstack(parts, format="csr") if parts else sp.csr_matrix((nq, 0))
            mi = np.full(nq, own[b], dtype=np.int64)
            tl = self._text_logit(T, mi)
            stats = response_stats(queries, resp_b)
            none = np.full((nq, len(self.models_)), np.nan)
            variants: list[tuple[int | None, np.ndarray]] = [(None, none)]
            for a in range(nm):
                if a != b and own[a] >= 0:
                    ag = none.copy()
                    ag[:, own[a]] = agree[:, b, a]
                    variants.append((a, ag))
            k = len(variants)
            dense = self._dense(np.tile(tl, k), np.tile(stats, (k, 1)), np.tile(mi, k),
                                np.vstack([v[1] for v in variants]))
            p = self._calibrate(self._decision_dense(dense, np.tile(mi, k))).reshape(k, nq)
            s1[:, b] = p[0]
            for j, (prev, _) in enumerate(variants[1:], start=1):
                s2[:, b, prev] = p[j]
        return s1, s2

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write JSON + npz (no pickle) with a format version and content hash."""
        self._check_fitted()
        meta: dict[str, Any] = {"params": self.get_params(), "models": list(self.models_),
                                "stat_names": list(RESPONSE_STAT_NAMES),
                                "n_features_in": int(self.n_features_in_)}
        arrays: dict[str, np.ndarray] = {
            "dense_mean": self.dense_mean_, "dense_scale": self.dense_scale_,
            "text_coef": self.text_coef_, "text_intercept": self.text_intercept_,
        }
        if self.text in ("tfidf", "embed"):
            m, a = self.query_features_.to_state()
            meta["query_features"] = m
            arrays.update({f"qf__{k}": v for k, v in a.items()})
        if self.response_text:
            m, a = self.response_features_.to_state()
            meta["response_features"] = m
            arrays.update({f"rf__{k}": v for k, v in a.items()})
        if hasattr(self, "coef_"):
            meta["learner_state"] = "logistic"
            arrays["coef"] = self.coef_
            arrays["intercept"] = np.array([self.intercept_])
        else:
            meta["learner_state"] = "hgb"
            arrays.update({f"tree__{k}": v for k, v in self.trees_.items()})
        if self.calibrator_ is not None:
            meta["calibrator"] = self.calibrator_[0]
            arrays["cal_a"], arrays["cal_b"] = self.calibrator_[1], self.calibrator_[2]
        return _persist.save(directory, meta, arrays, kind=_KIND)

    @classmethod
    def load(cls, directory: str | Path, *, max_bytes: int | None = None) -> AnswerScorer:
        """Load a saved scorer; corrupted or foreign files raise ModelFileError.

        Only the fields the scorer format defines are read, each type-checked; a file holding
        any other field or array is refused. ``max_bytes`` caps the arrays' decompressed size
        (see :func:`ponder._persist.load`).
        """
        meta, arrays = _persist.load(directory, kind=_KIND, max_bytes=max_bytes)
        _check_file(cls, meta, arrays, str(directory))
        try:
            obj = cls(**meta["params"])
            obj.models_ = list(meta["models"])
            obj.n_features_in_ = int(meta["n_features_in"])
            for name in ("dense_mean", "dense_scale", "text_coef", "text_intercept"):
                setattr(obj, name + "_", arrays[name])

            def sub(prefix: str) -> dict[str, np.ndarray]:
                return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

            if "query_features" in meta:
                qm = meta["query_features"]
                obj.query_features_ = (TextFeaturizer.from_state(qm, sub("qf__"))
                                       if qm["type"] == "TextFeaturizer"
                                       else SentenceEmbedder.from_state(qm, sub("qf__")))
            if "response_features" in meta:
                obj.response_features_ = TextFeaturizer.from_state(meta["response_features"],
                                                                   sub("rf__"))
            if meta["learner_state"] == "logistic":
                obj.coef_ = arrays["coef"]
                obj.intercept_ = float(arrays["intercept"][0])
            else:
                obj.trees_ = sub("tree__")
            obj.calibrator_ = ((meta["calibrator"], arrays["cal_a"], arrays["cal_b"])
                               if "calibrator" in meta else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"scorer file is incomplete or inconsistent ({exc})",
                                 path=str(directory)) from None
        return obj


# What a scorer file holds: exactly these fields and arrays (see _persist.check_fields).
_META_FIELDS: dict[str, Any] = {
    "params": dict, "models": list[str], "stat_names": list[str], "n_features_in": int,
    "query_features": dict, "response_features": dict, "learner_state": str, "calibrator": str,
}
_ARRAYS = ("dense_mean", "dense_scale", "text_coef", "text_intercept", "coef", "intercept",
           "cal_a", "cal_b")
_ARRAY_PREFIXES = ("qf__", "rf__", "tree__")


def _check_file(cls: type, meta: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> None:
    _persist.check_fields(meta, _META_FIELDS, where=where, what="meta",
                          required=("params", "models", "n_features_in", "learner_state"))
    _persist.check_fields(meta["params"], _persist.init_fields(cls), where=where, what="params")
    if meta["learner_state"] not in _LEARNERS:
        raise ModelFileError(f"meta.json: learner_state must be one of {_LEARNERS}, got "
                             f"{meta['learner_state']!r}", path=where)
    if meta.get("calibrator", "sigmoid") not in ("sigmoid", "isotonic"):
        raise ModelFileError(f"meta.json: unknown calibrator {meta['calibrator']!r}", path=where)
    unknown = sorted(k for k in arrays if k not in _ARRAYS and not k.startswith(_ARRAY_PREFIXES))
    if unknown:
        raise ModelFileError(f"arrays.npz: unknown array {unknown[0]!r} in a scorer file",
                             path=where)


# ---- calibration --------------------------------------------------------------------------------

def _fit_calibrator(kind: str, d: np.ndarray, y: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    if kind == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(d[:, None], y)
        return "sigmoid", np.array([float(lr.coef_[0, 0])]), np.array([float(lr.intercept_[0])])
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(d, y)
    return "isotonic", np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float)


# ---- gradient-boosted trees as plain arrays -----------------------------------------------------

_TREE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf",
                "value")


def _export_trees(hgb: Any) -> dict[str, np.ndarray]:
    """Flatten sklearn's fitted HistGradientBoosting trees into plain arrays (no pickle needed)."""
    nodes, offsets = [], [0]
    for predictors in hgb._predictors:
        tree = predictors[0].nodes
        if tree["is_categorical"].any():
            raise ValueError("categorical splits are not exportable")
        nodes.append(tree)
        offsets.append(offsets[-1] + len(tree))
    allnodes = np.concatenate(nodes)
    out = {f: np.ascontiguousarray(allnodes[f]) for f in _TREE_FIELDS}
    out["offsets"] = np.asarray(offsets, dtype=np.int64)
    out["baseline"] = np.asarray(hgb._baseline_prediction, dtype=np.float64).ravel()
    return out


def _tree_decision(trees: dict[str, np.ndarray], Z: np.ndarray) -> np.ndarray:
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
