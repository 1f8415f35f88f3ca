"""The (ε, δ) guarantee: p-values are valid and Learn-then-Test holds over many random splits."""

from __future__ import annotations

import numpy as np
import pytest

from ponder._risk import binomial_pvalue, hb_pvalue, ltt_select, wsr_pvalue


@pytest.mark.parametrize("method", ["hb", "binomial", "wsr"])
def test_pvalues_are_valid_under_the_null(method):
    """With the true risk exactly ε, P(p ≤ δ) must not exceed δ."""
    rng = np.random.default_rng(0)
    eps, delta, n, trials = 0.1, 0.1, 300, 600
    rejections = 0
    for t in range(trials):
        x = (rng.random(n) < eps).astype(float)
        if method == "hb":
            p = hb_pvalue(x.mean(), n, eps)
        elif method == "binomial":
            p = binomial_pvalue(x.mean(), n, eps)
        else:
            p = wsr_pvalue(x, eps, delta, seed=t)
        rejections += p <= delta
    assert rejections / trials <= delta + 0.03  # Monte-Carlo slack (3 s.e.)


def test_pvalues_have_power():
    rng = np.random.default_rng(1)
    x = (rng.random(1000) < 0.02).astype(float)
    assert hb_pvalue(x.mean(), 1000, 0.06) < 1e-3
    assert wsr_pvalue(x, 0.06, 0.1) < 1e-3
    assert hb_pvalue(0.2, 1000, 0.1) == 1.0


def _cascade_losses(rng, n, thresholds):
    """A synthetic cascade: a cheap model right with prob. p(score), the last rung with 0.85.

    Loss per query and threshold = last-rung quality − cascade quality, in {−1, 0, 1}.
    """
    score = rng.random(n)
    cheap = rng.random(n) < 0.35 + 0.6 * score
    last = rng.random(n) < 0.85
    accept = score[:, None] >= thresholds[None, :]
    quality = np.where(accept, cheap[:, None], last[:, None]).astype(float)
    return last[:, None].astype(float) - quality


def test_ltt_guarantee_over_random_splits():
    """Certify on n calibration queries, measure the true drop on a huge population: the drop
    exceeds ε in at most a δ share of the trials."""
    eps, delta = 0.03, 0.1
    thresholds = np.linspace(1.0, 0.0, 41)  # safest (accept nothing) first
    rng = np.random.default_rng(2)
    pop = _cascade_losses(rng, 200_000, thresholds)
    true_risk = pop.mean(axis=0)
    violations, chosen = 0, []
    trials = 300
    for t in range(trials):
        cal = _cascade_losses(np.random.default_rng(100 + t), 500, thresholds)
        sel = ltt_select(cal, eps, delta, method="wsr", signed=True, seed=t)
        if sel.index is not None:
            violations += true_risk[sel.index] > eps
            chosen.append(sel.index)
    assert violations / trials <= delta
    # And it is not vacuous: it certifies thresholds that accept a real share of queries.
    assert np.mean(chosen) > 10


def test_ltt_fixed_sequence_and_validation():
    L = np.zeros((200, 5))
    L[:, 3:] = 1.0  # candidates 3 and 4 always lose
    sel = ltt_select(L, 0.05, 0.1, method="binomial")
    assert sel.index == 2 and sel.certified and sel.pvalues[3] > 0.1
    none = ltt_select(np.ones((50, 2)), 0.05, 0.1)
    assert none.index is None and not none.certified
    with pytest.raises(ValueError, match="binomial"):
        ltt_select(np.full((10, 1), 0.5), 0.1, 0.1, method="binomial")
    with pytest.raises(ValueError, match="losses must lie"):
        ltt_select(-np.ones((10, 1)), 0.1, 0.1)
    with pytest.raises(ValueError, match="delta"):
        ltt_select(L, 0.1, 1.5)


def test_certify_a_trained_cascade(split, optimizer):
    """certify() keeps the cascade's drop vs its last rung ≤ ε on the calibration set."""
    from ponder.cascade import certify

    train, test = split
    cascade = optimizer.cascade(budget=0.003)
    chosen, cert = certify(cascade, test, epsilon=0.05, delta=0.2)
    g = chosen.info["guarantee"]
    assert g["epsilon"] == 0.05 and g["n_calibration"] == len(test.query_ids)
    if g["certified"]:
        _, qual, _ = chosen.replay(test)
        last = test.models.index(cascade.rungs[-1].model)
        assert np.mean(test.scores[:, last] - qual) <= 0.05
    else:
        assert all(r.threshold > 1 for r in chosen.rungs[:-1])
