"""Metric definitions checked by hand and against RouteLLM's own formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ponder.evaluation import _metrics as M

# strong-call %, quality: a router's curve between weak (0.60) and strong (0.80)
PCT = np.array([0.0, 25.0, 50.0, 100.0])
QUAL = np.array([0.60, 0.70, 0.76, 0.80])
WEAK, STRONG = 0.60, 0.80


def routellm_reference(pct: np.ndarray, acc: np.ndarray, weak: float, strong: float) -> dict:
    """Transcribed from routellm/evals/evaluate.py (generate_results): auc_metric, apgr_metric,
    pct_call_metric, with np.trapz → np.trapezoid (renamed in NumPy 2)."""
    df = pd.DataFrame({"strong_percentage": pct, "accuracy": acc}).sort_values(by=["strong_percentage"])
    auc = np.trapezoid(df["accuracy"], df["strong_percentage"] / 100)
    weak_auc = np.trapezoid(np.full(len(df), weak), df["strong_percentage"] / 100)
    strong_auc = np.trapezoid(np.full(len(df), strong), df["strong_percentage"] / 100)
    cpts = {p: np.interp(p * (strong - weak) + weak, df["accuracy"], df["strong_percentage"])
            for p in (0.5, 0.8, 0.95)}
    return {"apgr": (auc - weak_auc) / (strong_auc - weak_auc), "cpt": cpts}


def test_apgr_by_hand():
    # AUC = 0.25*(0.6+0.7)/2 + 0.25*(0.7+0.76)/2 + 0.5*(0.76+0.8)/2 = 0.735; (0.735-0.6)/0.2
    assert M.apgr(PCT, QUAL, WEAK, STRONG) == pytest.approx(0.675, abs=1e-12)


def test_cpt_by_hand():
    assert M.cpt(PCT, QUAL, WEAK, STRONG, 0.5) == pytest.approx(25.0)  # target 0.70
    assert M.cpt(PCT, QUAL, WEAK, STRONG, 0.8) == pytest.approx(50.0)  # target 0.76
    assert M.cpt(PCT, QUAL, WEAK, STRONG, 0.95) == pytest.approx(87.5)  # 0.79: 50 + 0.75*50


def test_apgr_cpt_match_routellm_code_on_shuffled_curve():
    rng = np.random.default_rng(3)
    pct = np.concatenate([[0, 100], rng.uniform(0, 100, 9)])
    acc = np.interp(pct, [0, 30, 100], [0.55, 0.74, 0.81]) + rng.normal(0, 0.004, pct.size)
    perm = rng.permutation(pct.size)  # order of operating points must not matter
    ref = routellm_reference(pct, acc, 0.55, 0.81)
    assert M.apgr(pct[perm], acc[perm], 0.55, 0.81) == pytest.approx(ref["apgr"], rel=1e-12)
    for p, v in ref["cpt"].items():
        assert M.cpt(pct[perm], acc[perm], 0.55, 0.81, p) == pytest.approx(v, rel=1e-12)


def test_random_routing_recovers_half_the_gap():
    pct = np.linspace(0, 100, 11)
    acc = WEAK + (STRONG - WEAK) * pct / 100
    assert M.apgr(pct, acc, WEAK, STRONG) == pytest.approx(0.5)
    assert M.cpt(pct, acc, WEAK, STRONG, 0.8) == pytest.approx(80.0)


def test_cost_ratio_on_hand_curve():
    cost = np.array([0.90, 0.20, 0.50, 0.35])
    qual = np.array([0.79, 0.70, 0.82, 0.80])
    # best model: quality 0.80 at $1.00 → cheapest point with quality ≥ 0.80 costs $0.35
    assert M.cost_ratio_at_best_quality(cost, qual, 0.80, 1.00) == pytest.approx(0.35)
    assert M.cost_ratio_at_best_quality(cost, qual, 0.80, 2.00) == pytest.approx(0.175)
    assert M.cost_ratio_at_best_quality(cost, qual, 0.83, 1.00) is None
    assert M.quality_at_best_cost(cost, qual, 0.40) == pytest.approx(0.80)
    assert M.quality_at_best_cost(cost, qual, 0.10) is None


def test_auc_uses_nondecreasing_convex_hull():
    cost = np.array([1.0, 2.0, 3.0, 4.0])
    qual = np.array([0.5, 0.6, 0.9, 0.85])
    hx, hy = M.nondecreasing_hull(cost, qual)
    assert hx.tolist() == [1.0, 3.0] and hy.tolist() == [0.5, 0.9]  # (2, .6) under the chord
    # [1,3]: (0.5+0.9)/2*2 = 1.4; [3,5] flat 0.9*2 = 1.8; (1.4+1.8)/(5-1)
    assert M.auc(cost, qual, 1.0, 5.0) == pytest.approx(0.8)
    # nothing below the cheapest point: [2,3] only, 0.75 / 2
    assert M.auc(np.array([2.0, 3.0]), np.array([0.6, 0.9]), 1.0, 3.0) == pytest.approx(0.375)
    # a flat single model over the whole range scores its quality
    assert M.auc(np.array([1.0]), np.array([0.7]), 1.0, 4.0) == pytest.approx(0.7)


def test_pareto_front():
    cost = np.array([3.0, 1.0, 2.0, 2.0, 4.0])
    qual = np.array([0.9, 0.5, 0.4, 0.7, 0.8])
    assert M.pareto_front(cost, qual).tolist() == [1, 3, 0]


def test_percentile_ci_handles_never():
    assert M.percentile_ci(np.array([0.1, 0.2, np.inf])) is not None
    lo, hi = M.percentile_ci(np.r_[np.full(90, 0.3), np.full(10, np.inf)])
    assert lo == 0.3 and hi == np.inf
