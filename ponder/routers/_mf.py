"""Matrix-factorisation router after RouteLLM's MF: logit P(m answers q well) = v_m · (Pᵀ x_q) + c_m
(RouteLLM's w₂ folds into v_m, its bias into c_m). RouteLLM fits arena preferences (Bradley–Terry);
an outcome table has a score per model, so this fits each (query, model) score by cross-entropy,
which makes the output a calibrated quality for the λ knob, with L2 on P and V, by L-BFGS."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from ._base import BaseRouter
from ._utility import sigmoid


class MFRouter(BaseRouter):
    """Low-rank (query × model) quality model; knob λ ≥ 0 (larger = cheaper)."""

    kind = "mf"
    _state = ("proj", "model_emb", "model_bias", "colmap")

    def __init__(self, *, models: list[str] | None = None, featurizer: Any = "tfidf",
                 dim: int = 16, alpha: float = 1e-3, max_iter: int = 300, random_state: int = 0,
                 cost_model: str = "length", knob: float | None = None) -> None:
        self.models = models
        self.featurizer = featurizer
        self.cost_model = cost_model
        self.dim = dim
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state
        self.knob = knob

    def _compress(self, X: Any) -> Any:  # sparse: projection rows only for columns seen in train
        if not sp.issparse(X):
            return np.asarray(X, dtype=np.float64)
        X = sp.csr_matrix(X, dtype=np.float64)
        m = self.colmap_[X.indices]
        keep = m >= 0
        cum = np.concatenate([[0], np.cumsum(keep)])
        return sp.csr_matrix((X.data[keep], m[keep], cum[X.indptr]),
                             shape=(X.shape[0], int(self.colmap_.max(initial=-1)) + 1))

    def _fit_core(self, X: Any, scores: np.ndarray, present: np.ndarray) -> None:
        if sp.issparse(X):
            X = sp.csr_matrix(X)
            active = np.unique(X.indices)
            self.colmap_ = np.full(X.shape[1], -1, dtype=np.int64)
            self.colmap_[active] = np.arange(active.size)
        else:
            self.colmap_ = np.arange(X.shape[1], dtype=np.int64)
        Xc = self._compress(X)
        n, D = Xc.shape
        M = scores.shape[1]
        d = int(self.dim)
        rng = np.random.default_rng(self.random_state)
        mask = present.astype(np.float64)
        y = np.where(present, scores, 0.0)
        n_obs = max(mask.sum(), 1.0)
        alpha = float(self.alpha)
        prior = np.clip((y.sum(0) + 0.5) / (mask.sum(0) + 1.0), 1e-3, 1 - 1e-3)
        x0 = np.concatenate([rng.normal(0, 0.1, D * d), rng.normal(0, 0.1, M * d),
                             np.log(prior / (1 - prior))])

        def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            P = theta[: D * d].reshape(D, d)
            V = theta[D * d: D * d + M * d].reshape(M, d)
            return P, V, theta[D * d + M * d:]

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            P, V, c = unpack(theta)
            Z = np.asarray(Xc @ P)  # (n, d)
            logit = Z @ V.T + c
            # cross-entropy with soft targets, numerically stable
            ll = np.logaddexp(0.0, logit) - y * logit
            loss = float((ll * mask).sum() / n_obs + 0.5 * alpha * (np.sum(P * P) + np.sum(V * V)))
            G = (sigmoid(logit) - y) * mask / n_obs  # (n, M)
            gV = G.T @ Z + alpha * V
            gP = np.asarray(Xc.T @ (G @ V)) + alpha * P
            gc = G.sum(axis=0)
            return loss, np.concatenate([gP.ravel(), gV.ravel(), gc])

        res = minimize(loss_grad, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": int(self.max_iter)})
        P, V, c = unpack(res.x)
        self.proj_, self.model_emb_, self.model_bias_ = P, V, c
        self.n_iter_ = int(res.nit)
        self.train_loss_ = float(res.fun)

    def _predict_core(self, X: Any) -> np.ndarray:
        Z = np.asarray(self._compress(X) @ self.proj_)
        return sigmoid(Z @ self.model_emb_.T + self.model_bias_)
