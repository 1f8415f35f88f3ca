"""The scorer's input ``X`` (``query``, ``response``, ``model``, optional ``earlier``: earlier rungs'
``(model, response)`` pairs, and ``group``: rows of one group never straddle folds) and features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._features import RESPONSE_STAT_NAMES, agreement


def scorer_frame(
    queries: Sequence[str],
    responses: Sequence[str],
    models: Sequence[str],
    earlier: Sequence[Sequence[tuple[str, str]]] | None = None,
    groups: Sequence[str] | None = None,
    *,
    samples: Sequence[Sequence[str]] | None = None,
    logprob_mean: Sequence[float | None] | None = None,
    logprob_min: Sequence[float | None] | None = None,
) -> pd.DataFrame:
    """The ``X`` a scorer takes, from parallel lists (the last three: verification signals)."""
    df = pd.DataFrame({"query": list(queries), "response": list(responses), "model": list(models)})
    if earlier is not None:
        df["earlier"] = [list(e) for e in earlier]
    if groups is not None:
        df["group"] = list(groups)
    if samples is not None:
        df["samples"] = [list(s) for s in samples]
    for name, values in (("logprob_mean", logprob_mean), ("logprob_min", logprob_min)):
        if values is not None:
            df[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return df


def check_frame(X: Any) -> tuple[list[str], list[str], list[str]]:
    """The query, response and model of each row of ``X``, once it is a scorer frame."""
    if not isinstance(X, pd.DataFrame):
        raise TypeError("X must be a DataFrame with columns query, response, model "
                        "(see ponder.scorers.scorer_frame)")
    missing = [c for c in ("query", "response", "model") if c not in X.columns]
    if missing:
        raise ValueError(f"X lacks column(s) {', '.join(missing)}")
    queries, responses, models = (X[c].astype(str).tolist() for c in ("query", "response", "model"))
    return queries, responses, models


def model_index(known: Sequence[str], models: Sequence[str]) -> np.ndarray:
    """Position of each of ``models`` in ``known`` (-1 for a model the scorer never saw)."""
    index = {name: j for j, name in enumerate(known)}
    return np.array([index.get(str(m), -1) for m in models], dtype=np.int64)


def agree_columns(X: pd.DataFrame, known: Sequence[str]) -> np.ndarray:
    """(n, M) agreement of each row's response with each earlier rung's; NaN = not earlier."""
    out = np.full((len(X), len(known)), np.nan)
    if "earlier" not in X.columns:
        return out
    index = {name: j for j, name in enumerate(known)}
    seen: dict[tuple[str, str], float] = {}  # a pair of answers is compared once
    for i, (resp, earlier) in enumerate(zip(X["response"].tolist(), X["earlier"].tolist(), strict=True)):
        if not isinstance(earlier, (list, tuple)):
            continue
        for item in earlier:
            j = index.get(str(item[0]))
            if j is not None:
                pair = (str(resp), str(item[1]))
                v = seen.get(pair)
                if v is None:
                    v = seen[pair] = agreement(*pair)
                out[i, j] = v
    return out


def text_matrix(queries: Sequence[str], responses: Sequence[str], query_features: Any,
                response_features: Any) -> Any:
    """Stage-1 input: query features and response TF-IDF side by side (either may be None)."""
    parts: list[Any] = []
    if query_features is not None:
        # Encode each distinct query once (prompts repeat once per model and are long).
        uniq = list(dict.fromkeys(queries))
        pos = {q: i for i, q in enumerate(uniq)}
        enc = sp.csr_matrix(query_features.transform(uniq))
        parts.append(enc[np.array([pos[q] for q in queries], dtype=np.int64)])
    if response_features is not None:
        parts.append(response_features.transform(responses))
    if not parts:
        return sp.csr_matrix((len(queries), 0))
    return sp.hstack(parts, format="csr")


def dense_features(text_logit: np.ndarray, stats: np.ndarray, model_idx: np.ndarray,
                   agree: np.ndarray, n_models: int, signals: np.ndarray | None = None
                   ) -> np.ndarray:
    """Combiner input: text log-odds, response stats, agreement, one-hot model, signals."""
    n = len(model_idx)
    has = ~np.isnan(agree)
    n_earlier = has.sum(axis=1)
    a0 = np.where(has, agree, 0.0)
    mean_agree = np.where(n_earlier > 0, a0.sum(axis=1) / np.maximum(n_earlier, 1), 0.0)
    max_agree = np.where(n_earlier > 0, np.where(has, agree, -1.0).max(axis=1), 0.0)
    onehot = np.zeros((n, n_models))
    known = model_idx >= 0
    onehot[np.flatnonzero(known), model_idx[known]] = 1.0
    extra = np.zeros((n, 0)) if signals is None else signals
    return np.hstack([text_logit[:, None], stats, (n_earlier > 0)[:, None].astype(float),
                      mean_agree[:, None], max_agree[:, None], a0, has.astype(float), onehot, extra])


def combiner_input(dense: np.ndarray, model_idx: np.ndarray, *, learner: str, mean: np.ndarray,
                   scale: np.ndarray, n_models: int) -> Any:
    """Standardised dense columns; for the linear learner also one copy of them per model."""
    if learner == "hgb":
        return (dense - mean) / scale
    # Scaled, not centred (the intercepts absorb the shift), so the design stays sparse:
    # a shared copy + one copy per model; unknown models get only the shared copy.
    k = 1 + len(RESPONSE_STAT_NAMES)  # text log-odds and stats are dense anyway: centre them
    z = dense / scale
    z[:, :k] -= (mean / scale)[:k]
    z = sp.csr_matrix(z)
    coo = z.tocoo()
    d = z.shape[1]
    mid = model_idx[coo.row]
    keep = mid >= 0
    rows = np.concatenate([coo.row, coo.row[keep]])
    cols = np.concatenate([coo.col, coo.col[keep] + (1 + mid[keep]) * d])
    data = np.concatenate([coo.data, coo.data[keep]])
    return sp.csr_matrix((data, (rows, cols)), shape=(z.shape[0], d * (1 + n_models)))
