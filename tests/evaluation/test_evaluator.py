"""The evaluator on a table computed by hand, with real (tiny) strategies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ponder.evaluation import OutcomeTable, evaluate, register_strategy
from ponder.evaluation._report import render_markdown
from ponder.evaluation._strategy import _REGISTRY
from tests.evaluation.eval_strategies import LengthThresholdRouter, TaskRouter


def by_name(items, key="model"):
    return {x[key]: x for x in items}


def test_single_models_and_oracle_match_hand_computation(hand_df):
    d = evaluate(hand_df, strategies=[], n_bootstrap=0).to_json()
    assert (d["n_train_queries"], d["n_test_queries"]) == (4, 4)
    assert d["split"]["method"] == "column"
    m = by_name(d["models"])
    assert (m["a"]["quality"], m["a"]["cost_usd"]) == (0.375, 0.25)  # (1+0+0+.5)/4
    assert (m["b"]["quality"], m["b"]["cost_usd"]) == (0.625, 0.5625)  # (1+1+0+.5)/4, 2.25/4
    assert (m["c"]["quality"], m["c"]["cost_usd"]) == (0.8125, 2.5)  # 3.25/4, 10/4
    assert d["best_model"] == {"model": "c", "quality": 0.8125, "cost_usd": 2.5}
    # oracle: q1→a ($.25), q2→b ($.5), q3→c ($2), q4→a (a and b tie at .5; a is cheaper)
    assert d["oracle"] == {"quality": 0.875, "cost_usd": 0.75}
    assert by_name(d["models"])["a"]["oracle_pick_share"] == 0.5
    s = by_name(d["strategies"], "name")
    assert s["oracle"]["cost_ratio_at_best_quality"] == 0.75 / 2.5
    assert s["model:c"]["cost_ratio_at_best_quality"] == 1.0
    assert s["model:a"]["cost_ratio_at_best_quality"] is None
    mix = {p["setting"]["p_best"]: p for p in s["random-mix"]["curve"]}
    assert mix[0.5]["quality"] == (0.375 + 0.8125) / 2 and mix[0.5]["cost_usd"] == (0.25 + 2.5) / 2
    assert {x["kind"] for x in d["strategies"] if x["name"] in ("oracle", "random-mix", "model:a")} == {"baseline"}


def test_missing_model_is_allowed_and_counted(hand_df):
    df = hand_df[~((hand_df.query_id == "q2") & (hand_df.model == "c"))]
    d = evaluate(df, strategies=[], n_bootstrap=0).to_json()
    c = by_name(d["models"])["c"]
    assert c["n_queries"] == 3 and c["quality"] == 2.25 / 3 and c["cost_usd"] == 8 / 3
    assert d["missing"]["n_incomplete_test_queries"] == 1
    assert d["missing"]["n_missing_test_cells"] == 1
    assert d["oracle"]["quality"] == 0.875  # q2 still has b with score 1
    assert "1 test queries lack some models" in evaluate(df, strategies=[], n_bootstrap=0).to_markdown()


def test_seeded_split_is_grouped_and_reproducible(hand_df):
    df = hand_df.drop(columns="split")
    a = evaluate(df, strategies=[], test_fraction=0.25, seed=5, n_bootstrap=0).to_json()
    b = evaluate(df, strategies=[], test_fraction=0.25, seed=5, n_bootstrap=0).to_json()
    assert a["split"] == {"method": "random", "column": None, "test_fraction": 0.25, "seed": 5}
    assert (a["n_train_queries"], a["n_test_queries"]) == (6, 2)
    assert a["models"] == b["models"]


class RecordingRouter(LengthThresholdRouter):
    def fit(self, train: OutcomeTable) -> RecordingRouter:
        self.seen_train_ = set(train.query_ids)
        return super().fit(train)

    def sweep(self, test: OutcomeTable):
        self.seen_test_ = set(test.query_ids)
        return super().sweep(test)


def test_strategies_fit_on_train_and_are_measured_on_test(hand_df):
    r = RecordingRouter(name="recorder")
    res = evaluate(hand_df, strategies=[r], n_bootstrap=0)
    assert r.seen_train_ == {"t1", "t2", "t3", "t4"}
    assert r.seen_test_ == {"q1", "q2", "q3", "q4"}
    s = res.strategy("recorder")
    assert s["kind"] == "router"
    # the threshold at +inf sends everything to the cheapest model: model a's point
    cheapest = min(s["curve"], key=lambda p: p["cost_usd"])
    assert (cheapest["cost_usd"], cheapest["quality"]) == (0.25, 0.375)


class FitSizeRecorder(LengthThresholdRouter):
    """Records the train queries of every fit, copies (the K-fold fits) included."""

    fits: list[set[str]] = []

    def fit(self, train: OutcomeTable) -> FitSizeRecorder:
        FitSizeRecorder.fits.append(set(train.query_ids))
        return super().fit(train)


def test_fits_use_a_seeded_sample_when_train_is_over_the_cap():
    rng = np.random.default_rng(3)
    rows = [{"query_id": f"q{i}", "query": "x" * int(rng.integers(1, 50)), "model": m,
             "score": float(rng.random() < p), "cost_usd": c}
            for i in range(120) for m, p, c in (("a", 0.4, 1.0), ("b", 0.8, 3.0))]
    df = pd.DataFrame(rows)
    FitSizeRecorder.fits = []
    res = evaluate(df, strategies=[FitSizeRecorder(name="rec")], n_bootstrap=0, folds=3,
                   max_fit_queries=25).to_json()
    train = set(OutcomeTable.read(df).split(seed=0)[0].query_ids)
    assert len(FitSizeRecorder.fits) == 4  # the full fit and three fold fits
    assert all(len(f) == 25 and f <= train for f in FitSizeRecorder.fits)
    assert res["fit_sample"] == {"max_fit_queries": 25, "n_fit_queries": 25}
    # calibration still covers every train query: the replays span all of them
    assert res["n_train_queries"] == len(train) == 60
    said = "fitted on a seeded sample of 25 of the 60 train queries (--max-fit-queries 25)"
    assert said in render_markdown(res)
    FitSizeRecorder.fits = []
    again = evaluate(df, strategies=[FitSizeRecorder(name="rec")], n_bootstrap=0, folds=3,
                     max_fit_queries=None).to_json()
    assert [len(f) for f in FitSizeRecorder.fits] == [60, 40, 40, 40]
    assert again["fit_sample"]["n_fit_queries"] == 60
    assert "seeded sample" not in render_markdown(again)


def test_task_router_beats_random_mix_and_metrics_follow_curve(hand_df):
    res = evaluate(hand_df, strategies=[TaskRouter()], n_bootstrap=0).to_json()
    s = by_name(res["strategies"], "name")["task-router"]
    # per task (odd: q1,q3; even: q2,q4) the router can pick c on odd and b on even
    pts = {(p["cost_usd"], p["quality"]) for p in s["curve"]}
    assert ((2.0 + 0.5 + 2.0 + 0.75) / 4, (1 + 1 + 1 + 0.5) / 4) in pts
    reach = [p["cost_usd"] for p in s["curve"] if p["quality"] >= 0.8125]
    assert s["cost_ratio_at_best_quality"] == pytest.approx(min(reach) / 2.5)
    assert s["auc"] > by_name(res["strategies"], "name")["random-mix"]["auc"]


@pytest.mark.slow  # every default strategy, K-fold calibrated: over a second on 2 cores
def test_registered_strategies_appear_and_broken_ones_are_skipped(hand_df):
    register_strategy("test-length")(lambda train: LengthThresholdRouter(name="test-length"))

    class Broken(LengthThresholdRouter):
        def sweep(self, test):
            raise RuntimeError("boom")

    register_strategy("test-broken")(lambda train: Broken(name="test-broken"))
    register_strategy("test-not-applicable")(lambda train: None)
    try:
        with pytest.warns(UserWarning, match="boom"):
            d = evaluate(hand_df, n_bootstrap=0).to_json()  # None: every registered strategy
    finally:
        for k in ("test-length", "test-broken", "test-not-applicable"):
            _REGISTRY.pop(k, None)
    names = {s["name"] for s in d["strategies"]}
    assert "test-length" in names and "test-broken" not in names
    assert {"name": "test-broken", "reason": "RuntimeError: boom"} in d["skipped"]


def test_two_model_table_gets_routellm_metrics(hand_df):
    df = hand_df[hand_df.model != "b"]
    d = evaluate(df, strategies=[LengthThresholdRouter()], n_bootstrap=0).to_json()
    assert d["two_model"]["strong"] == "c" and d["two_model"]["weak"] == "a"
    s = by_name(d["strategies"], "name")
    mix = s["random-mix"]
    assert mix["apgr"] == pytest.approx(0.5) and mix["cpt"]["80"] == pytest.approx(80.0)
    router = s["length-threshold"]
    # strong share is inferred from realised cost; it must equal the router's actual choices
    lengths = [len(f"question {k}" + " long" * k) for k in (1, 2, 3, 4)]
    for p in router["curve"]:
        t = p["setting"]["min_length"]  # JSON has no inf: the "never" threshold is null
        n_strong = 0 if t is None else sum(n >= t for n in lengths)
        assert p["strong_share"] == n_strong / 4
    assert router["apgr"] is not None and set(router["cpt"]) == {"50", "80", "95"}


def test_bootstrap_intervals_bracket_the_estimate(hand_df):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):  # a bigger random table so intervals are non-degenerate
        for m, base, cost in (("a", 0.5, 0.001), ("b", 0.8, 0.01)):
            rows.append({"query_id": f"x{i}", "query": "q" * (1 + i % 50), "model": m,
                         "score": float(rng.random() < base), "cost_usd": cost * (1 + rng.random())})
    d = evaluate(pd.DataFrame(rows), strategies=[], n_bootstrap=100, seed=1).to_json()
    lo, hi = d["best_model"]["ci95"]["quality"]
    assert lo < d["best_model"]["quality"] < hi
    mix = by_name(d["strategies"], "name")["random-mix"]
    lo, hi = mix["ci95"]["auc"]
    assert lo <= mix["auc"] <= hi and hi - lo > 0


def test_oracle_curve_switches_best_value_queries_first(hand_df):
    d = evaluate(hand_df, strategies=[], n_bootstrap=0).to_json()
    oracle = by_name(d["strategies"], "name")["oracle"]
    # start on a everywhere; q2→b gains 1 for $0.25, q3→c gains 1 for $1.75; q1, q4 stay on a
    assert [(p["cost_usd"], p["quality"]) for p in oracle["curve"]] == [
        (0.25, 0.375), (0.3125, 0.625), (0.75, 0.875)]
    assert oracle["curve"][-1]["quality"] == d["oracle"]["quality"]


def test_best_model_tie_goes_to_the_cheaper(hand_df):
    df = hand_df.copy()
    df.loc[df.model == "b", "score"] = df.loc[df.model == "c", "score"].to_numpy()
    d = evaluate(df, strategies=[], n_bootstrap=0).to_json()
    assert by_name(d["models"])["b"]["quality"] == by_name(d["models"])["c"]["quality"]
    assert d["best_model"]["model"] == "b"


class FreezeRecorder(LengthThresholdRouter):
    """Records how many objects the garbage collector had frozen while it fitted."""

    frozen: list[int] = []

    def fit(self, train: OutcomeTable) -> FreezeRecorder:
        import gc

        FreezeRecorder.frozen.append(gc.get_freeze_count())
        return super().fit(train)


def test_fits_run_with_the_tables_out_of_the_collectors_passes_and_it_is_undone(hand_df):
    import gc

    assert gc.get_freeze_count() == 0
    FreezeRecorder.frozen = []
    evaluate(hand_df, strategies=[FreezeRecorder(name="f")], n_bootstrap=0, jobs=1)
    assert FreezeRecorder.frozen and min(FreezeRecorder.frozen) > 0
    assert gc.get_freeze_count() == 0  # thawed after the run
    gc.freeze()  # a caller that froze objects itself keeps them frozen
    try:
        evaluate(hand_df, strategies=[FreezeRecorder(name="f")], n_bootstrap=0, jobs=1)
        assert gc.get_freeze_count() > 0  # (gc.unfreeze would leave none)
    finally:
        gc.unfreeze()
