"""Deployed operating points: chosen on train rows for named targets, then measured on test."""

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


def table(train_cut: float = 0.5, test_cut: float = 0.8) -> pd.DataFrame:
    """Query i has difficulty x = (i + .5) / N. Model a ($1) is right when x < cut, model b ($10)
    always. The cut differs between train and test, so the test-optimal knob (send x >= t to b)
    is t = test_cut while train can only justify t = train_cut."""
    rows = []
    for split, cut in (("train", train_cut), ("test", test_cut)):
        for i in range(N):
            x = (i + 0.5) / N
            qid = f"{split[:2]}{i}"
            rows.append({"query_id": qid, "query": f"x={x:.6f}", "model": "a",
                         "score": float(x < cut), "cost_usd": 1.0, "split": split})
            rows.append({"query_id": qid, "query": f"x={x:.6f}", "model": "b", "score": 1.0,
                         "cost_usd": 10.0, "split": split})
    return pd.DataFrame(rows)


class KnobRouter:
    """Send a query to b when its difficulty is at least the knob t; records the rows it sees."""

    kind = "router"

    def __init__(self, name: str = "knob") -> None:
        self.name = name

    def fit(self, train: OutcomeTable) -> KnobRouter:
        self.fitted_on_ = set(train.query_ids)
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        self.swept_ = set(test.query_ids)
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


def test_setting_is_chosen_on_train_not_on_test():
    d = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=50).to_json()
    s = next(s for s in d["strategies"] if s["name"] == "knob")
    assert s["headline_point"]["setting"] == {"t": 0.8}  # the old, test-chosen pick
    dep = deployed(d)
    assert dep["best_quality"]["setting"] == {"t": 0.5}  # what train justifies
    assert dep["best_quality"]["train"]["quality"] == 1.0
    # replayed on test: x < .5 go to a (right on test too), the rest to b
    assert dep["best_quality"]["test"]["cost_usd"] == pytest.approx(5.5)
    assert dep["best_quality"]["test"]["cost_ratio"] == pytest.approx(0.55)
    assert dep["best_quality"]["test"]["quality"] == 1.0
    assert s["deployed_target"] == "best_quality"


def test_changing_only_test_labels_does_not_change_settings():
    a = evaluate(table(test_cut=0.8), strategies=[KnobRouter()], n_bootstrap=0).to_json()
    b = evaluate(table(test_cut=0.2), strategies=[KnobRouter()], n_bootstrap=0).to_json()
    for name in ("knob", "random-mix", "model:a", "model:b"):
        da, db = deployed(a, name), deployed(b, name)
        assert [x["setting"] for x in da.values()] == [x["setting"] for x in db.values()]
        assert [x["train"] for x in da.values()] == [x["train"] for x in db.values()]
    assert deployed(b)["best_quality"]["test"]["quality"] < 1.0  # the test figures do move


def test_budgets_are_respected_on_train_and_reported_on_test():
    d = evaluate(table(), strategies=[KnobRouter()], n_bootstrap=50).to_json()
    ref = d["deployment"]["best_model"]
    assert ref["model"] == "b" and d["deployment"]["method"] == "calibration"
    for name in ("knob", "random-mix", "model:a", "model:b"):
        dep = deployed(d, name)
        assert list(dep) == list(TARGETS)
        for target, x in dep.items():
            f = budget_of(target)
            if not x["met"]:
                assert x["setting"] is None and x["note"]
                continue
            assert {"setting", "train", "test"} <= set(x)
            assert set(x["test"]["ci95"]) >= {"cost_usd", "quality"}
            if f is None:
                assert x["train"]["quality"] >= ref["train"]["quality"] - 1e-12
            else:
                assert x["train"]["cost_usd"] <= f * ref["train"]["cost_usd"] * (1 + 1e-9)
                assert x["test_budget_ratio"] == pytest.approx(
                    x["test"]["cost_usd"] / (f * ref["test"]["cost_usd"]))
    # a fixed strategy has one setting: it meets the targets its one point meets
    assert not deployed(d, "model:a")["best_quality"]["met"]
    assert deployed(d, "model:a")["budget:0.1"]["setting"] == {"model": "a"}
    assert deployed(d, "model:b")["best_quality"]["setting"] == {"model": "b"}
    assert not deployed(d, "model:b")["budget:0.5"]["met"]
    assert deployed(d, "model:b")["best_quality"]["saving_in_doubt"]  # it *is* the best model
    assert not deployed(d)["best_quality"]["saving_in_doubt"]
    oracle = next(s for s in d["strategies"] if s["name"] == "oracle")
    assert oracle["deployed"] == [] and "upper bound" in oracle["deployed_note"]


def test_calibration_rows_are_held_out_of_fitting():
    r = KnobRouter()
    d = evaluate(table(), strategies=[r], n_bootstrap=0).to_json()
    train = {f"tr{i}" for i in range(N)}
    assert r.fitted_on_ == train and r.swept_ == {f"te{i}" for i in range(N)}  # the test curve
    dep = d["deployment"]
    assert dep["n_fit_queries"] + dep["n_calibration_queries"] == N
    assert dep["n_calibration_queries"] == round(N * dep["calibration_fraction"])


def test_cli_json_and_reports_use_deployed_points(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table().to_csv("t.csv", index=False)
    register_strategy("test-knob")(lambda train: KnobRouter(name="test-knob"))
    try:
        res = CliRunner().invoke(app, ["eval", "t.csv", "-s", "test-knob", "--bootstrap", "30",
                                       "--json", "out.json", "--markdown", "out.md"])
    finally:
        _REGISTRY.pop("test-knob", None)
    assert res.exit_code == 0, res.output
    assert "deployed: knob chosen on train" in res.output
    assert "what to ship, chosen on train" in res.output
    assert "  best_quality: test-knob · test quality 1.000 at 55.0% of the best model's cost" in res.output
    d = json.loads((tmp_path / "out.json").read_text())
    dep = deployed(d, "test-knob")
    assert list(dep) == list(TARGETS)
    x = dep["best_quality"]
    assert x["setting"] == {"t": 0.5}
    assert set(x["train"]) == {"cost_usd", "quality"}
    assert {"cost_usd", "quality", "ci95"} <= set(x["test"])
    assert "test_budget_ratio" in dep["budget:0.5"] and "test_budget_ratio" not in x
    head = "At the best_quality target, chosen on train: test-knob at 55.0% of the best model's cost"
    assert head in (tmp_path / "out.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert html.escape(head) in page and "best_quality target, chosen on train" in page
    assert "not a deployable number" in page
