"""Verification signals of an answer, live or from ``ponder collect``'s columns: self-consistency
of its samples (``sc_agree``: the response with each other sample, ``sc_pairwise``: every pair) and
its token logprobs. Missing is NaN, and the combiner sees 0 plus a flag, so one scorer fits both."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .._features import agreement
from ..evaluation._table import parse_samples

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable

SIGNAL_NAMES = ("sc_agree", "sc_pairwise", "logprob_mean", "logprob_min")
#: the X / outcome-table columns the signals are computed from
SIGNAL_COLUMNS = ("samples", "logprob_mean", "logprob_min")


def self_consistency(samples: Sequence[str]) -> tuple[float, float]:
    """``(sc_agree, sc_pairwise)`` of one answer's samples (the response first); NaN below two."""
    if len(samples) < 2:
        return math.nan, math.nan
    head = samples[0]
    agree = float(np.mean([agreement(head, s) for s in samples[1:]]))
    pairwise = float(np.mean([agreement(a, b) for a, b in combinations(samples, 2)]))
    return agree, pairwise


def _num(value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def signal_rows(samples: Sequence[Any], logprob_mean: Sequence[Any], logprob_min: Sequence[Any],
                ) -> np.ndarray:
    """(n, len(SIGNAL_NAMES)) signals from parallel per-row values (NaN where missing)."""
    out = np.full((len(samples), len(SIGNAL_NAMES)), np.nan)
    for i, (s, lm, ln) in enumerate(zip(samples, logprob_mean, logprob_min, strict=True)):
        out[i, 0], out[i, 1] = self_consistency(parse_samples(s))
        out[i, 2], out[i, 3] = _num(lm), _num(ln)
    return out


def frame_signals(X: pd.DataFrame) -> np.ndarray:
    """The signals of a scorer frame's rows (columns it lacks are NaN)."""
    if not any(c in X.columns for c in SIGNAL_COLUMNS):
        return np.full((len(X), len(SIGNAL_NAMES)), np.nan)  # what signal_rows gives rows of Nones
    none: list[Any] = [None] * len(X)
    return signal_rows(*(X[c].tolist() if c in X.columns else none for c in SIGNAL_COLUMNS))


def table_signals(table: OutcomeTable) -> np.ndarray:
    """(Q, M, S) signals of every answer in an outcome table, for ``AnswerScorer.score_grid``."""
    S, LM, LN = table.samples, table.logprob_mean, table.logprob_min
    nq, nm = S.shape
    if not any(c in table.df.columns for c in SIGNAL_COLUMNS):
        return np.full((nq, nm, len(SIGNAL_NAMES)), np.nan)
    flat = signal_rows(list(S.ravel()), list(LM.ravel()), list(LN.ravel()))
    return flat.reshape(nq, nm, len(SIGNAL_NAMES))


def signal_columns(table: OutcomeTable, q: ArrayLike, m: ArrayLike) -> dict[str, list[Any]]:
    """The raw signal columns of the answers at ``(q[i], m[i])``, to add to a scorer frame."""
    if not any(c in table.df.columns for c in SIGNAL_COLUMNS):
        return {}
    qi, mi = np.asarray(q, dtype=np.int64), np.asarray(m, dtype=np.int64)
    return {"samples": [list(v) for v in table.samples[qi, mi]],
            "logprob_mean": table.logprob_mean[qi, mi].tolist(),
            "logprob_min": table.logprob_min[qi, mi].tolist()}


def signals_in(signals: np.ndarray) -> tuple[str, ...]:
    """The signals a training set holds at least one value of (what a scorer will use)."""
    has = ~np.isnan(signals)
    return tuple(name for j, name in enumerate(SIGNAL_NAMES) if has[:, j].any())


def signal_dense(signals: np.ndarray, used: Sequence[str]) -> np.ndarray:
    """Combiner columns for the ``used`` signals: values (NaN → 0), then presence flags."""
    if not used:
        return np.zeros((signals.shape[0], 0))
    idx = [SIGNAL_NAMES.index(u) for u in used]
    vals = signals[:, idx]
    has = ~np.isnan(vals)
    return np.hstack([np.where(has, vals, 0.0), has.astype(float)])
