"""Routers learn from train rows and are judged on test rows of a synthetic table whose best model
depends on the query's topic (tests/fixtures/routers/make_outcomes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ponder import NotFittedError
from ponder._exceptions import ConfigError, DataError, UnknownModel
from ponder.routers import (
    KNNRouter,
    MFRouter,
    OracleRouter,
    PairwiseRouter,
    RandomRouter,
    RouteDecision,
    UtilityRouter,
)

MULTI = [UtilityRouter, KNNRouter, MFRouter]


def _curve(router, test):
    return [(float(np.mean(c)), float(np.mean(q))) for _, c, q, _ in router.replay(test)]


def _random_mix_quality(test, cost):
    """Quality of mixing the cheapest and the best model at random for this mean cost."""
    s, c = np.nanmean(test.scores, axis=0), np.nanmean(test.costs, axis=0)
    best = int(np.argmax(s))
    p = np.clip((cost - c[0]) / (c[best] - c[0]), 0, 1)
    return (1 - p) * s[0] + p * s[best]


@pytest.mark.parametrize("cls", MULTI)
def test_multi_model_router_beats_random_mix_on_held_out_queries(cls, split):
    train, test = split
    router = cls().fit(train)
    assert router.models_ == ["small", "medium", "large"]
    large_cost = float(np.nanmean(test.costs[:, 2]))
    curve = _curve(router, test)
    cheap = [(c, q) for c, q in curve if c <= 0.4 * large_cost]
    assert cheap, curve
    c, q = max(cheap, key=lambda t: t[1])
    # Sending proofs to the large model and history to the medium one is worth far more than a
    # coin flip at the same spend.
    assert q >= _random_mix_quality(test, c) + 0.15, (c / large_cost, q)


@pytest.mark.parametrize("variant", ["deterministic", "probabilistic", "transformed"])
def test_pairwise_router_sends_hard_topics_to_strong_model(variant, split):
    train, test = split
    router = PairwiseRouter(variant=variant).fit(train)
    assert router.models_ == ["small", "large"]  # weak = cheapest, strong = best train quality
    p = router.predict_proba(test.queries)
    tasks = np.array(test.tasks)
    # P(small is good enough) is high on arithmetic and low on proofs
    assert p[tasks == "arithmetic"].mean() > p[tasks == "proof"].mean() + 0.3
    d = router.route(test.queries[0])
    assert isinstance(d, RouteDecision) and d.model in ("small", "large")
    assert d.quality["small"] == pytest.approx(p[0]) and set(d.cost) == {"small", "large"}


def test_pairwise_explicit_pair_and_bad_names(split):
    train, _ = split
    r = PairwiseRouter(weak="medium", strong="large").fit(train)
    assert r.models_ == ["medium", "large"]
    with pytest.raises(UnknownModel, match="'gpt-9'"):
        PairwiseRouter(strong="gpt-9").fit(train)
    with pytest.raises(ConfigError, match="variant"):
        PairwiseRouter(variant="fuzzy").fit(train)
    with pytest.raises(DataError, match="two different models"):
        PairwiseRouter(weak="large", strong="large").fit(train)


def test_route_returns_model_and_quality_per_model(split):
    train, test = split
    router = UtilityRouter().fit(train)
    d = router.route("prove the lemma by induction on the bound", knob=0.0)
    assert set(d.quality) == {"small", "medium", "large"}
    assert d.model == "large"  # λ = 0: best predicted quality
    assert d.quality["large"] > d.quality["small"]
    cheap = router.route("prove the lemma by induction on the bound", knob=1e7)
    assert cheap.model == "small"  # huge λ: cost dominates
    easy = router.route("add the numbers: sum plus total", knob=200.0)
    assert easy.model != "large"


def test_unseen_model_gives_clear_error(split):
    train, test = split
    router = KNNRouter().fit(train)
    with pytest.raises(UnknownModel) as exc:
        router.route("prove it", models=["large", "gpt-4o"])
    msg = str(exc.value)
    assert "'gpt-4o'" in msg and "small, medium, large" in msg and "never saw" in msg
    with pytest.raises(UnknownModel, match="never saw"):
        router.predict_quality(["x"], models=["claude-9"])
    # replaying on a table that lacks one of the router's models
    with pytest.raises(UnknownModel, match="'medium'"):
        router.replay(test.select_models(["small", "large"]))


def test_candidates_restrict_the_choice(split):
    train, _ = split
    router = UtilityRouter().fit(train)
    d = router.route("prove the lemma by induction", knob=0.0, models=["small", "medium"])
    assert d.model in ("small", "medium") and set(d.quality) == {"small", "medium"}


@pytest.mark.parametrize("cls", [*MULTI, PairwiseRouter])
def test_not_fitted(cls):
    with pytest.raises(NotFittedError, match="fit"):
        cls().route("hello")


def test_sklearn_parameter_protocol():
    r = UtilityRouter(C=3.0)
    assert r.get_params()["C"] == 3.0 and not hasattr(r, "models_")
    r.set_params(C=0.5)
    assert r.C == 0.5
    with pytest.raises(ValueError, match="Invalid parameter .nope."):  # scikit-learn's error
        r.set_params(nope=1)
    from sklearn.base import clone

    assert clone(r).get_params() == r.get_params()


def test_fit_needs_an_outcome_table():
    with pytest.raises(DataError, match="OutcomeTable"):
        UtilityRouter().fit([["q", 1.0]])


def test_cost_model_tracks_prompt_length(split):
    train, _ = split
    r = UtilityRouter().fit(train)
    short, long = r.predict_cost(["a b", "word " * 200])
    assert (long > short).all() and (short > 0).all()
    assert short[0] < short[1] < short[2]  # small < medium < large


def test_missing_outcomes_are_never_chosen(table):
    # drop the large model's row for a quarter of the queries: those can't route there
    df = table.df
    drop = df["model"].eq("large") & df["query_id"].isin(table.query_ids[::4])
    from ponder.evaluation import read_outcomes

    holey = read_outcomes(df[~drop])
    train, test = holey.split()
    router = UtilityRouter().fit(train)
    _, cost, quality, choice = router.replay(test, [0.0])[0]
    present = test.present[:, [test.models.index(m) for m in router.models_]]
    assert present[np.arange(len(choice)), choice].all()
    assert np.isfinite(cost).all() and np.isfinite(quality).all()


def test_random_and_oracle_bracket_the_learned_router(split):
    train, test = split
    oracle = OracleRouter().fit(test)  # the oracle reads outcomes: an upper bound, not a router
    (_, oc, oq, _), = oracle.replay(test)
    rnd = RandomRouter(random_state=1).fit(train)
    assert rnd.models_ == ["small", "large"]
    learned = UtilityRouter().fit(train)
    best_learned = max(q for _, q in _curve(learned, test))
    assert float(np.mean(oq)) >= best_learned
    shares = [float(np.mean(j == 1)) for _, _, _, j in rnd.replay(test, [0.0, 0.5, 1.0])]
    assert shares[0] == 0.0 and shares[2] == 1.0 and 0.25 < shares[1] < 0.75
    with pytest.raises(DataError, match="only knows"):
        oracle.route("a query it never saw")
