"""Setting the knob for a target: strong-call share, budget, quality floor with (ε, δ)."""

from __future__ import annotations

import numpy as np
import pytest

from ponder._exceptions import ConfigError
from ponder.routers import PairwiseRouter, UtilityRouter


def _cal_split(train):
    return train.split(test_fraction=0.4, seed=3, split_column=None)


def test_strong_share_target(split):
    train, test = split
    fit_part, cal = _cal_split(train)
    r = PairwiseRouter().fit(fit_part).calibrate(cal, strong_share=0.3)
    c = r.calibration_
    assert c.target == "strong_share" and abs(c.reached_strong_share - 0.3) <= 0.1
    # the knob carries over to new queries: the test share lands near the target too
    _, _, _, choice = r.replay(test, [r.knob_])[0]
    assert abs(np.mean(choice == 1) - 0.3) < 0.2


def test_budget_target_is_met_on_calibration_rows(split):
    train, _ = split
    fit_part, cal = _cal_split(train)
    large = float(np.nanmean(cal.costs[:, 2]))
    r = UtilityRouter().fit(fit_part)
    for frac in (0.1, 0.4):
        r.calibrate(cal, budget=frac * large)
        assert r.calibration_.reached_cost <= frac * large
    q_small_budget = r.calibrate(cal, budget=0.1 * large).calibration_.reached_quality
    q_big_budget = r.calibrate(cal, budget=0.4 * large).calibration_.reached_quality
    assert q_big_budget >= q_small_budget
    # the calibrated knob is the default for route()
    assert r.route("prove the theorem by induction").knob == r.knob_


def test_bad_targets(split):
    train, _ = split
    r = UtilityRouter().fit(train)
    with pytest.raises(ConfigError, match="exactly one"):
        r.calibrate(train, budget=1.0, strong_share=0.2)
    with pytest.raises(ConfigError, match="exactly one"):
        r.calibrate(train)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        r.calibrate(train, strong_share=1.5)
    with pytest.raises(ConfigError, match=">= 0"):
        r.calibrate(train, budget=-1)


def test_quality_floor_holds_with_probability_one_minus_delta(table, split):
    """Learn-then-Test: over many calibration draws, the chosen knob's true risk exceeds ε in at
    most about a δ share of draws. The population is the whole fixture; the router is fixed."""
    train, _ = split
    router = UtilityRouter().fit(train)
    knobs = router.knob_grid(router.predict_quality(table.queries), router.predict_cost(table.queries))
    true_q = {k: float(np.mean(q)) for k, _, q, _ in router.replay(table, knobs)}
    floor, delta = 0.80, 0.2
    rng = np.random.default_rng(0)
    ids = np.array(table.query_ids, dtype=object)
    misses, certified, cheaper = 0, 0, 0
    for _ in range(40):
        draw = table.subset(list(rng.choice(ids, size=90, replace=False)))
        router.calibrate(draw, quality_floor=floor, delta=delta)
        c = router.calibration_
        if not c.guaranteed:
            continue
        certified += 1
        assert c.reached_quality >= floor  # certified ⇒ the calibration mean clears the floor
        nearest = min(true_q, key=lambda k: abs(k - router.knob_))
        misses += true_q[nearest] < floor
        cheaper += c.reached_strong_share < 1.0
    assert certified >= 20 and cheaper >= 10  # it does certify cheaper-than-always-strong knobs
    assert misses / certified <= delta


def test_unreachable_floor_falls_back_to_the_safest_knob(split):
    train, _ = split
    fit_part, cal = _cal_split(train)
    r = UtilityRouter().fit(fit_part).calibrate(cal, quality_floor=0.999, delta=0.1)
    assert r.calibration_.guaranteed is False
    assert r.knob_ == r.knob_grid(r.predict_quality(cal.queries), r.predict_cost(cal.queries))[0]
    with pytest.raises(ConfigError, match="delta"):
        r.calibrate(cal, quality_floor=0.9, delta=1.5)
