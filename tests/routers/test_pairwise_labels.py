"""The three Hybrid LLM label variants (Ding et al. 2024)."""

from __future__ import annotations

import numpy as np

from ponder.routers._pairwise import _spread, choose_relaxation, pairwise_labels


def test_binary_scores_collapse_probabilistic_onto_deterministic():
    sw = np.array([1.0, 0.0, 1.0, 0.0])
    ss = np.array([1.0, 1.0, 0.0, 0.0])
    det = pairwise_labels(sw, ss, "deterministic")
    prob = pairwise_labels(sw, ss, "probabilistic")
    assert det.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert np.array_equal(det, prob)  # one 0/1 outcome per model: P(W ≥ S) is 0 or 1
    assert choose_relaxation(sw, ss, "transformed") == 0.0  # every t < 1 gives these labels


def test_graded_scores_give_soft_labels_and_relaxation_balances_them():
    rng = np.random.default_rng(0)
    ss = rng.uniform(0.5, 1.0, 400)
    sw = ss - rng.uniform(0.0, 0.4, 400)  # the weak model is always a bit worse
    prob = pairwise_labels(sw, ss, "probabilistic")
    assert prob.mean() < 0.1 and ((prob > 0) & (prob < 1)).any()  # nearly all "strong needed"
    t = choose_relaxation(sw, ss, "transformed")
    y = pairwise_labels(sw, ss, "transformed", t)
    # the relaxation makes labels informative again: about half the queries become "weak is fine"
    assert 0.1 < t < 0.4 and 0.3 < y.mean() < 0.7
    assert _spread(y) > _spread(prob)


def test_spread_matches_the_pairwise_definition():
    y = np.array([0.1, 0.9, 0.4, 0.4, 1.0])
    brute = np.mean([abs(a - b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j])
    assert abs(_spread(y) - brute) < 1e-12
