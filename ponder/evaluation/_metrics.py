"""Cost-quality metrics on a strategy's (mean cost, mean quality) points, in any order, defined as
in their papers so figures compare: FrugalGPT's cost saving (as a ratio), RouterBench's AIQ
(``auc``), RouteLLM's APGR and CPT (as ``routellm/evals/evaluate.py`` computes them)."""

from __future__ import annotations

import numpy as np

# Two means computed from the same per-query numbers in a different order can differ in the last
# bits; "reaches the best model's quality" must not depend on summation order.
_RTOL = 1e-9


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return 0.0
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def _reaches(value: np.ndarray | float, target: float) -> np.ndarray:
    return np.asarray(value) >= target - _RTOL * max(1.0, abs(target))


def pareto_front(costs: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, cheapest first (strictly rising quality)."""
    costs = np.asarray(costs, dtype=float)
    qualities = np.asarray(qualities, dtype=float)
    order = np.lexsort((-qualities, costs))  # by cost, then best quality first
    q = qualities[order]
    best_before = np.fmax.accumulate(np.concatenate([[-np.inf], q]))[:-1]  # NaN never counts
    return order[q > best_before]


def nondecreasing_hull(costs: np.ndarray, qualities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The upper concave hull, cut where it stops rising (RouterBench's NDCH): mixing two points at
    random reaches the segment between them, so the hull is what a strategy can achieve."""
    idx = pareto_front(costs, qualities)
    xs = np.asarray(costs, dtype=float)[idx]
    ys = np.asarray(qualities, dtype=float)[idx]
    hull: list[int] = []
    for i in range(len(xs)):  # monotone chain, upper hull; pareto points are sorted by x
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (xs[b] - xs[a]) * (ys[i] - ys[a]) - (ys[b] - ys[a]) * (xs[i] - xs[a])
            if cross >= 0:  # b lies on or below segment a-i
                hull.pop()
            else:
                break
        hull.append(i)
    return xs[hull], ys[hull]


def auc(costs: np.ndarray, qualities: np.ndarray, c_min: float, c_max: float) -> float:
    """RouterBench's AIQ: mean hull quality over ``[c_min, c_max]`` (0 below the cheapest point,
    flat beyond the dearest)."""
    hx, hy = nondecreasing_hull(costs, qualities)
    if len(hx) == 0:
        return 0.0
    if c_max <= c_min:
        return float(hy[-1]) if hx[0] <= c_min else 0.0
    lo = max(c_min, float(hx[0]))
    if lo >= c_max * (1 - _RTOL):
        return 0.0
    grid = np.unique(np.concatenate([[lo, c_max], hx[(hx > lo) & (hx < c_max)]]))
    area = _trapezoid(np.interp(grid, hx, hy), grid)
    return float(area / (c_max - c_min))


def cost_ratio_at_best_quality(
    costs: np.ndarray, qualities: np.ndarray, best_quality: float, best_cost: float
) -> float | None:
    """Cheapest point reaching the best model's quality over that model's cost (None if none does);
    on points, not the hull, like FrugalGPT's figure."""
    costs = np.asarray(costs, dtype=float)
    ok = _reaches(qualities, best_quality)
    if not ok.any() or best_cost <= 0:
        return None
    return float(costs[ok].min() / best_cost)


def quality_at_best_cost(costs: np.ndarray, qualities: np.ndarray, best_cost: float) -> float | None:
    """Best quality among points costing no more than the best model. None if all cost more."""
    costs = np.asarray(costs, dtype=float)
    ok = costs <= best_cost * (1 + _RTOL)
    if not ok.any():
        return None
    return float(np.asarray(qualities, dtype=float)[ok].max())


def apgr(strong_pct: np.ndarray, quality: np.ndarray, weak_quality: float,
         strong_quality: float) -> float | None:
    """RouteLLM's average performance gap recovered over ``strong_pct`` (% of calls to the strong
    model); None when the models tie or the curve spans no range of calls."""
    x = np.sort(np.asarray(strong_pct, dtype=float)) / 100
    span = x[-1] - x[0] if len(x) else 0.0
    weak_auc, strong_auc = weak_quality * span, strong_quality * span
    if strong_auc == weak_auc:
        return None
    order = np.argsort(strong_pct, kind="stable")  # RouteLLM's AUC: over strong-call share
    area = _trapezoid(np.asarray(quality, float)[order], np.asarray(strong_pct, float)[order] / 100)
    return float((area - weak_auc) / (strong_auc - weak_auc))


def cpt(strong_pct: np.ndarray, quality: np.ndarray, weak_quality: float, strong_quality: float,
        fraction: float) -> float:
    """RouteLLM's call-performance threshold: % strong calls that recover ``fraction`` of the gap."""
    order = np.argsort(strong_pct, kind="stable")
    target = fraction * (strong_quality - weak_quality) + weak_quality
    return float(np.interp(target, np.asarray(quality, float)[order],
                           np.asarray(strong_pct, float)[order]))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval. ``inf`` samples (never reached) give an infinite bound."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return None
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    if np.isinf(s).any():  # inf - inf would interpolate to NaN
        lo, hi = np.percentile(s, q, method="nearest")
    else:
        lo, hi = np.percentile(s, q)
    return float(lo), float(hi)
