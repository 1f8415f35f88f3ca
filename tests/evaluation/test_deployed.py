"""Certified operating points: settings chosen on train rows by K-fold calibration, each with an
upper confidence bound, then measured on test; what ships, and "not enough data" said plainly."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.evaluation import OperatingPoint, OutcomeTable, evaluate, register_strategy
from ponder.evaluation._deploy import TARGETS, budget_of
from ponder.evaluation._strategy import _REGISTRY

N = 200
GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, np.inf)


def table(train_cut: float = 0.5, test_cut: float = 0.8, n: int = N) -> pd.DataFrame:
    """Query i has difficulty x = (i + .5) / n. Model a ($1) is right when x < cut, model b ($10)
    always. The cut differs between train and test, so the test-optimal knob (send x >= t to b)
    is t = test_cut while train can only justify t = train_cut."""
    rows = []
    for split, cut in (("train", train_cut), ("test", test_cut)):
        for i in range(n):
            x = (i + 0.5) / n
            qid = f"{split[:2]}{i}"
            rows.append({"query_id": qid, "query": f"x={x:.6f}", "model": "a",
                         "score": float(x < cut), "cost_usd": 1.0, "split": split})
            rows.append({"query_id": qid, "query": f"x={x:.6f}", "model": "b", "score": 1.0,
                         "cost_usd": 10.0, "split": split})
    return pd.DataFrame(rows)


class KnobRouter:
    """Send a query to b when its difficulty is at least the knob t (a fixed grid: fold fits
    sweep the very same settings, matched without a replay method)."""

    kind = "router"
    log: list[tuple[str, frozenset[str]]] = []  # (fit | sweep, query ids), across copies

    def __init__(self, name: str = "knob") -> None:
        self.name = name

    def fit(self, train: OutcomeTable) -> KnobRouter:
        KnobRouter.log.append(("fit", frozenset(train.query_ids)))
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        KnobRouter.log.append(("sweep", frozenset(test.query_ids)))
        x = np.array([float(q[2:]) for q in test.queries])
        a, b = test.models.index("a"), test.models.index("b")
        rows = np.arange(len(x))
        out = []
        for t in GRID:
            pick = np.where(x >= t, b, a)
            out.append(OperatingPoint({"t": t}, test.costs[rows, pick], test.scores[rows, pick]))
        return out


def deployed(d: dict, name: str = "knob") -> dict[str, dict]:
    s = next(s for s in d["strategies"] if s["name"] == name)
    return {x["target"]: x for x in s["deployed"]}


def ship(d: dict) -> dict[str, dict]:
    return {x["target"]: x for x in d["ship"]}


def test_setting_is_chosen_on_train_not_on_test():
    d = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=50).to_json()
    s = next(s for s in d["strategies"] if s["name"] == "knob")
    assert s["headline_point"]["setting"] == {"t": 0.8}  # the old, test-chosen pick
    x = deployed(d)["best_quality"]
    assert x["setting"] == {"t": 0.5}  # what train justifies
    assert x["calibration"]["quality"] == 1.0 and x["calibration"]["quality_vs_best"] == 0.0
    # replayed on test: x < .5 go to a (right on test too), the rest to b
    assert x["test"]["cost_usd"] == pytest.approx(5.5)
    assert x["test"]["cost_ratio"] == pytest.approx(0.55)
    assert x["test"]["quality"] == 1.0
    assert s["deployed_target"] == "best_quality"


def test_the_pooled_calibration_rows_are_every_train_row_once():
    KnobRouter.log = []
    d = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=0, jobs=1).to_json()
    train, test = {f"tr{i}" for i in range(N)}, {f"te{i}" for i in range(N)}
    dep = d["deployment"]
    k = dep["folds"]
    assert dep["method"] == "k-fold calibration" and k == 5  # under 500 train queries
    assert dep["n_calibration_queries"] == N
    # the deployed copy: every train row, swept on test; then K copies, each fitted on the other
    # folds and swept on its own held fold; the held folds partition train
    assert KnobRouter.log[:2] == [("fit", train), ("sweep", test)]
    folds = KnobRouter.log[2:]
    assert [kind for kind, _ in folds] == ["fit", "sweep"] * k
    held = [ids for kind, ids in folds if kind == "sweep"]
    fits = [ids for kind, ids in folds if kind == "fit"]
    assert sorted(q for h in held for q in h) == sorted(train)
    assert all(f == train - h for f, h in zip(fits, held, strict=True))
    # pooled: the calibration figures of a fixed rule are its means over every train row
    x = deployed(d)["budget:0.5"]
    t = x["setting"]["t"]
    xs = (np.arange(N) + 0.5) / N
    want_cost = np.where(xs >= t, 10.0, 1.0).mean()
    assert x["calibration"]["cost_usd"] == pytest.approx(want_cost)


def test_fold_fits_on_threads_give_the_numbers_of_one_thread():
    """``jobs=3``: the full fit and the fold copies run at once, in any order; every figure,
    bound and pick is that of ``jobs=1``."""
    one = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=20, jobs=1).to_json()
    KnobRouter.log = []
    three = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=20, jobs=3).to_json()
    for d in (one, three):
        d.pop("created_at", None)
        d.pop("versions", None)
    assert three == one
    assert sorted(k for k, _ in KnobRouter.log) == ["fit"] * 6 + ["sweep"] * 6



class BrokenRouter(KnobRouter):
    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        raise RuntimeError("no points today")


def test_strategies_queued_behind_each_other_on_threads_give_the_numbers_of_one_thread():
    """``jobs=2``: the next strategy's fits are queued before this one's replays; a strategy
    that fails in between is skipped as it is with ``jobs=1``."""
    def run(jobs: int) -> dict:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = evaluate(table(), strategies=[KnobRouter("k1"), BrokenRouter("broken"),
                                              KnobRouter("k2")], n_bootstrap=20, jobs=jobs).to_json()
        d.pop("created_at", None)
        d.pop("versions", None)
        return d

    one = run(1)
    KnobRouter.log = []
    two = run(2)
    assert two == one
    assert [s["name"] for s in one["skipped"]] == ["broken"]
    assert {s["name"] for s in one["strategies"]} >= {"k1", "k2"}


def test_changing_only_test_labels_changes_no_pick_or_bound():
    a = evaluate(table(test_cut=0.8), strategies=[KnobRouter()], n_bootstrap=0).to_json()
    b = evaluate(table(test_cut=0.2), strategies=[KnobRouter()], n_bootstrap=0).to_json()
    for name in ("knob", "random-mix", "model:a", "model:b"):
        da, db = deployed(a, name), deployed(b, name)
        for key in ("setting", "calibration", "certified", "bound"):
            assert [x[key] for x in da.values()] == [x[key] for x in db.values()], (name, key)
    keep = ("strategy", "setting", "certified", "bound", "calibration", "fallback", "needed")
    assert [{k: x[k] for k in keep} for x in a["ship"]] == [{k: x[k] for k in keep}
                                                            for x in b["ship"]]
    assert deployed(b)["best_quality"]["test"]["quality"] < 1.0  # the test figures do move


def test_bounds_cover_the_point_estimates_and_certify_what_they_say():
    d = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=50, epsilon=0.1).to_json()
    dep = d["deployment"]
    assert (dep["epsilon"], dep["delta"]) == (0.1, 0.1)
    # every candidate but the reference is counted in the union bound
    assert dep["n_candidates"] == len(GRID) + 11 + 1  # knob settings, the mix, model a
    for name in ("knob", "random-mix", "model:a", "model:b"):
        for target, x in deployed(d, name).items():
            f = budget_of(target)
            if not x["met"]:
                assert x["setting"] is None and x["note"] and not x["certified"]
                continue
            cal = x["calibration"]
            if f is None:
                assert x["bound"] >= -cal["quality_vs_best"] - 1e-12
                assert x["certified"] == (x["bound"] <= 0.1 * (1 + 1e-9))
            else:
                assert x["bound"] >= cal["cost_ratio"] - 1e-12
                assert x["certified"] == (x["bound"] <= f * (1 + 1e-9))
                assert x["test_budget_ratio"] == pytest.approx(
                    x["test"]["cost_usd"] / (f * dep["best_model"]["test"]["cost_usd"]))
                assert x["over_budget"] == (x["test_budget_ratio"] > 1 + 1e-9)
    # the best model is the reference: exact, no bound needed
    assert deployed(d, "model:b")["best_quality"]["bound"] == 0.0
    assert deployed(d, "model:b")["budget:1.0"]["bound"] == 1.0
    assert not deployed(d, "model:b")["budget:0.5"]["met"]
    assert deployed(d, "model:b")["best_quality"]["saving_in_doubt"]  # it *is* the best model
    oracle = next(s for s in d["strategies"] if s["name"] == "oracle")
    assert oracle["deployed"] == [] and "upper bound" in oracle["deployed_note"]
    # with ε = 10 pt, 200 train rows certify t = .5 (it loses nothing on train); t = .6 loses
    # 10 pt there and is not certified: the cheapest certified setting ships
    x = ship(d)["best_quality"]
    assert (x["strategy"], x["setting"], x["certified"], x["fallback"]) == (
        "knob", {"t": 0.5}, True, False)
    assert 0.0 <= x["bound"] <= 0.1
    assert x["test"]["cost_ratio"] == pytest.approx(0.55)


def test_nothing_certified_ships_the_best_model_and_says_what_it_would_take():
    """At ε = 1 pt, 200 train rows cannot rule out a 1 pt loss even for a setting that lost
    nothing: the best model ships, with the number of labelled queries that would do."""
    d = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=20).to_json()
    x = ship(d)["best_quality"]
    assert (x["strategy"], x["fallback"], x["certified"]) == ("model:b", True, False)
    need = x["needed"][0]
    assert need["why"] == "best" and need["strategy"] == "knob" and need["setting"] == {"t": 0.5}
    assert need["n_labelled"] == N and need["n_needed"] > N
    assert need["n_more"] == need["n_needed"] - N
    budget = ship(d)["budget:0.5"]  # a cheaper single model or setting is certified there
    assert budget["certified"] and not budget["fallback"]


def test_six_calibration_queries_ship_the_best_model_and_say_how_many_it_needs(tmp_path,
                                                                                monkeypatch):
    """The issue's case: a table whose train part has 6 queries (K-fold calibration pools all
    of them). A strategy that looks cheaper and as good on them is not shipped; the report says
    how many labelled queries would certify it, and how to get them."""
    df = table(n=6)
    d = evaluate(df, strategies=[KnobRouter()], n_bootstrap=20).to_json()
    assert d["deployment"]["n_calibration_queries"] == 6
    x = ship(d)["best_quality"]
    assert (x["strategy"], x["fallback"], x["certified"]) == ("model:b", True, False)
    need = x["needed"][0]
    assert need["n_labelled"] == 6 and need["n_needed"] > 6 and need["n_more"] > 0
    monkeypatch.chdir(tmp_path)
    df.to_csv("six.csv", index=False)
    register_strategy("test-knob-six")(lambda train: KnobRouter(name="test-knob-six"))
    try:
        res = CliRunner().invoke(app, ["eval", "six.csv", "-s", "test-knob-six", "--bootstrap",
                                       "10", "--markdown", "out.md"])
    finally:
        _REGISTRY.pop("test-knob-six", None)
    assert res.exit_code == 0, res.output
    n = f"{need['n_needed']:,}"
    for text in (res.output, (tmp_path / "out.md").read_text(),
                 html.unescape((tmp_path / "report.html").read_text())):
        flat = " ".join(text.split())
        assert "keep the best single model, b" in flat or "ship the best single model, b" in flat
        assert "6 labelled train queries" in flat
        assert f"about {n} labelled queries" in flat
        assert "ponder collect more-prompts.jsonl --model PROVIDER:a --model PROVIDER:b" in flat
        assert "ponder grade more.parquet --grader SPEC" in flat


def test_cli_json_carries_the_ship_picks_the_reports_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table().to_csv("t.csv", index=False)
    register_strategy("test-knob")(lambda train: KnobRouter(name="test-knob"))
    try:
        res = CliRunner().invoke(app, ["eval", "t.csv", "-s", "test-knob", "--bootstrap", "30",
                                       "--epsilon", "0.1", "--delta", "0.2", "--folds", "4",
                                       "--json", "out.json", "--markdown", "out.md"])
    finally:
        _REGISTRY.pop("test-knob", None)
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "out.json").read_text())
    dep = d["deployment"]
    assert (dep["epsilon"], dep["delta"], dep["folds"]) == (0.1, 0.2, 4)
    assert [x["target"] for x in d["ship"]] == list(TARGETS)
    for x in d["ship"]:
        assert {"target", "strategy", "setting", "certified", "bound", "calibration",
                "test"} <= set(x)
        assert {"cost_usd", "quality"} <= set(x["calibration"]) and {"cost_usd", "quality"} <= set(
            x["test"])
        st = x["stability"]  # what each held-out fold alone would pick, against the pick
        assert st["folds"] == 4 and len(st["picks"]) == 4
        assert st["same_strategy"] == st["picks"].count(x["strategy"]) >= st["same_setting"]
    x = ship(d)["best_quality"]
    assert (x["strategy"], x["setting"], x["certified"]) == ("test-knob", {"t": 0.5}, True)
    assert "each fold alone would pick: test-knob (" in (tmp_path / "out.md").read_text()
    assert "what to ship, chosen on train rows only (80% guarantees" in res.output
    line = next(s for s in res.output.splitlines() if s.startswith("  the best model's quality"))
    assert "test-knob · ✓ certified (80%)" in line and "55.0% of the best model's cost" in line
    head = "For the best model's quality (within 10 pt), ship test-knob: ✓ certified (80%)"
    assert head in (tmp_path / "out.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert html.escape(head) in page and "not a deployable number" in page
    # the command that writes the files reproduces this run
    assert "ponder eval t.csv -s test-knob --epsilon 0.1 --delta 0.2 --folds 4 --ship ship" in (
        html.unescape(page))


class FitDependentKnob(KnobRouter):
    """Its settings are numbers learned on the train rows it saw: each fold fit has others."""

    def fit(self, train: OutcomeTable) -> FitDependentKnob:
        self.shift_ = float(np.mean([float(q[2:]) for q in train.queries])) - 0.5
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        return [OperatingPoint({"t": p.setting["t"] + self.shift_}, p.cost, p.quality)
                for p in super().sweep(test) if np.isfinite(p.setting["t"])]


def test_a_strategy_whose_settings_depend_on_the_fit_needs_replay_to_be_certified():
    d = evaluate(table(), strategies=[FitDependentKnob("fit-knob")], n_bootstrap=0).to_json()
    s = next(s for s in d["strategies"] if s["name"] == "fit-knob")
    assert s["deployed"] == [] and "replay(table, settings)" in s["deployed_note"]
    assert all(x["strategy"] != "fit-knob" for x in d["ship"])
    assert s["curve"]  # its test curve still stands


def test_a_router_setting_is_replayed_by_its_spend_and_dropped_where_a_fit_cannot_reach_it():
    """Fold fits replay a router setting at the knob with the same predicted spend (λ alone
    means another spend for another fit); a fit that cannot come near it leaves it NaN, so the
    setting is not calibrated on rows that never saw it."""
    from ponder.routers import UtilityRouter
    from ponder.routers._strategies import RouterStrategy

    df = table(train_cut=0.5, test_cut=0.5)
    df["query"] = np.where(df["score"] == 1.0, "easy ", "hard ") + df["query"]  # learnable
    train, test = OutcomeTable.read(df).split(split_column="split")
    half = train.subset(train.query_ids[::2])
    a = RouterStrategy("u", lambda: UtilityRouter()).fit(train)
    b = RouterStrategy("u", lambda: UtilityRouter()).fit(half)
    settings = [p.setting for p in a.sweep(test)]
    spends = [s["predicted_cost_usd"] for s in settings]
    assert max(spends) > 2 * min(spends)  # a real range of spends
    for s, p in zip(settings, b.replay(test, settings), strict=True):
        assert np.isfinite(p.cost).all()
        assert abs(p.setting["predicted_cost_usd"] - s["predicted_cost_usd"]) <= (
            0.1 * s["predicted_cost_usd"])
    # a fit that sends every query to a (it is always right there): no spend but a's
    lazy = df.assign(score=1.0)
    c = RouterStrategy("u", lambda: UtilityRouter()).fit(
        OutcomeTable.read(lazy).split(split_column="split")[0])
    far, near = dict(settings[0], predicted_cost_usd=5.0), dict(settings[0], predicted_cost_usd=1.0)
    p_far, p_near = c.replay(test, [far, near])
    assert np.isnan(p_far.cost).all() and np.isfinite(p_near.cost).all()
