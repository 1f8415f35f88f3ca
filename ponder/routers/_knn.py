"""kNN router: a query's predicted quality for each model is the similarity-weighted mean score of
its k nearest train queries (cosine on the query embedding), shrunk toward the model's train mean
so that a thin neighbourhood does not swing the choice. Knob λ as in the utility router."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._base import BaseRouter


def _l2_normalize(X: Any) -> Any:
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.diags(1.0 / norms) @ X
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


class KNNRouter(BaseRouter):
    """Multi-model router over query embeddings; knob λ ≥ 0 (larger = cheaper)."""

    kind = "knn"
    _default_knob = 0.0

    def __init__(self, *, models: list[str] | None = None, featurizer: Any = "tfidf",
                 n_neighbors: int = 25, shrinkage: float = 1.0, knob: float | None = None) -> None:
        self.models = models
        self.featurizer = featurizer
        self.n_neighbors = n_neighbors
        self.shrinkage = shrinkage
        self.knob = knob

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        Xn = _l2_normalize(X)
        self.train_X_ = Xn.T.tocsr() if sp.issparse(Xn) else np.ascontiguousarray(Xn.T)
        self.train_scores_ = np.where(present, scores, 0.0)
        self.train_present_ = present.astype(np.float64)
        self.prior_ = np.array([scores[present[:, j], j].mean() if present[:, j].any() else 0.0
                                for j in range(scores.shape[1])])

    def _predict_core(self, X: Any) -> np.ndarray:
        sims = _l2_normalize(X) @ self.train_X_
        sims = sims.toarray() if sp.issparse(sims) else np.asarray(sims)
        n, N = sims.shape
        k = min(int(self.n_neighbors), N)
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.clip(np.take_along_axis(sims, idx, axis=1), 0.0, None) + 1e-6  # (n, k)
        num = np.einsum("nk,nkm->nm", w, self.train_scores_[idx] * self.train_present_[idx])
        den = np.einsum("nk,nkm->nm", w, self.train_present_[idx])
        a = float(self.shrinkage) * (w.sum(axis=1, keepdims=True) / k)
        return (num + a * self.prior_[None, :]) / (den + a)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        out = {"train_scores": self.train_scores_, "train_present": self.train_present_,
               "prior": self.prior_}
        if sp.issparse(self.train_X_):
            m = self.train_X_.tocsr()
            out |= {"X_data": m.data, "X_indices": m.indices, "X_indptr": m.indptr,
                    "X_shape": np.array(m.shape)}
        else:
            out["X_dense"] = self.train_X_
        return out

    def _set_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.train_scores_ = arrays["train_scores"]
        self.train_present_ = arrays["train_present"]
        self.prior_ = arrays["prior"]
        if "X_dense" in arrays:
            self.train_X_ = arrays["X_dense"]
        else:
            self.train_X_ = sp.csr_matrix(
                (arrays["X_data"], arrays["X_indices"], arrays["X_indptr"]),
                shape=tuple(int(s) for s in arrays["X_shape"]))
