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
