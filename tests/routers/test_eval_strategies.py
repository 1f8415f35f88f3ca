"""Routers appear in ``ponder eval`` and are measured on the test rows."""

from __future__ import annotations

from ponder.evaluation import evaluate, registered_strategies
from ponder.routers._strategies import RouterStrategy

NAMES = ["router-pairwise-det", "router-pairwise-prob", "router-pairwise-trans", "router-utility",
         "router-knn", "router-mf"]


def test_router_strategies_are_registered():
    assert set(NAMES) <= set(registered_strategies())


def test_evaluate_runs_every_router(table):
    res = evaluate(table, strategies=NAMES, n_bootstrap=0).to_json()
    got = {s["name"]: s for s in res["strategies"]}
    assert set(NAMES) <= set(got), res.get("skipped")
    oracle_q = got["oracle"]["quality_at_best_cost"]
    for name in NAMES:
        m = got[name]
        assert m["auc"] > got["random-mix"]["auc"], name
        assert m["quality_at_best_cost"] <= oracle_q + 1e-12


def test_pairwise_not_offered_when_cheapest_is_best(table):
    from ponder.evaluation import read_outcomes

    df = table.df.copy()
    df.loc[df["model"] == "small", "score"] = 1.0  # the cheapest model is now the best
    t = read_outcomes(df)
    factory = registered_strategies()["router-pairwise-det"]
    assert factory(t) is None
    assert isinstance(registered_strategies()["router-utility"](t), RouterStrategy)
