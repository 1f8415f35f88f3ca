"""How far to trust a grader: its agreement with scores you already trust."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Agreement:
    """Agreement on pass/fail (scores binarised at ``threshold``) over ``n`` rows that have both.
    ``trusted_only``: only the trusted score passes; ``kappa``: Cohen's κ (NaN when undefined)."""

    n: int
    accuracy: float
    kappa: float
    both_positive: int
    both_negative: int
    trusted_only: int
    grader_only: int
    threshold: float = 0.5

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


def agreement(trusted: Iterable[float], graded: Iterable[float], *, threshold: float = 0.5) -> Agreement:
    """Accuracy and Cohen's κ between trusted scores and a grader's, on rows where both exist."""
    pairs = [(float(t), float(g)) for t, g in zip(trusted, graded, strict=True)
             if t is not None and g is not None and not math.isnan(float(t)) and not math.isnan(float(g))]
    tp = sum(1 for t, g in pairs if t >= threshold and g >= threshold)
    tn = sum(1 for t, g in pairs if t < threshold and g < threshold)
    t_only = sum(1 for t, g in pairs if t >= threshold > g)
    g_only = sum(1 for t, g in pairs if g >= threshold > t)
    n = len(pairs)
    if n == 0:
        return Agreement(0, math.nan, math.nan, 0, 0, 0, 0, threshold)
    po = (tp + tn) / n
    pe = ((tp + t_only) * (tp + g_only) + (tn + g_only) * (tn + t_only)) / (n * n)
    kappa = (po - pe) / (1 - pe) if pe < 1 else math.nan
    return Agreement(n, po, kappa, tp, tn, t_only, g_only, threshold)
