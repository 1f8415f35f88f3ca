"""Route then cascade: the router picks the starting rung, offline and live."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ponder
import ponder.cascade as cascade_mod  # noqa: E402  (core: an import failure must fail, not skip)
from ponder._exceptions import UnknownModel
from ponder.evaluation import evaluate
from ponder.routers import RouteThenCascade, UtilityRouter, save_router
from ponder.routers._live import write_route_cascade
from ponder.routers._strategies import RouteCascadeStrategy


@pytest.fixture(scope="module")
def fitted(split):
    train, test = split
    strat = RouteCascadeStrategy(n_budgets=6, n_knobs=4).fit(train)
    return strat, strat.sweep(test)


def test_route_cascade_is_its_own_eval_strategy(table):
    res = evaluate(table, strategies=["route-cascade"], n_bootstrap=0).to_json()
    names = [s["name"] for s in res["strategies"]]
    assert "route-cascade" in names, res.get("skipped")


def _multi_rung(opt):
    for b in np.geomspace(1e-5, 2e-3, 30):
        choice = opt.frontier_.best_for_budget(float(b))
        if choice is not None and len(choice.chain) >= 2:
            return opt.build(choice)
    raise AssertionError("no multi-rung cascade on the frontier")


def test_knob_infinity_is_the_plain_cascade_and_routing_changes_starts(fitted, split):
    strat, points = fitted
    _, test = split
    plain = [p for p in points if p.setting["knob"] is None]
    routed = [p for p in points if p.setting["knob"] is not None]
    assert plain and routed
    reference = {(tuple(p.setting["chain"]), tuple(p.setting["thresholds"])): p
                 for p in strat.cascade_.sweep(test)}
    for p in plain:  # same numbers as the cascade strategy's own replay
        assert p.extra["start_share"][0] == 1.0
        ref = reference[(tuple(p.setting["chain"]), tuple(p.setting["thresholds"]))]
        np.testing.assert_allclose(p.cost, ref.cost)
        np.testing.assert_allclose(p.quality, ref.quality)
    multi = [p for p in routed if len(p.setting["chain"]) > 1]
    assert any(p.extra["start_share"][0] < 1.0 for p in multi)  # some queries skip rung 0


def test_live_route_cascade_skips_cheap_rungs_for_hard_queries(split, fixture_path, tmp_path):
    train, _ = split
    cascade = _multi_rung(cascade_mod.CascadeOptimizer().fit(train))
    cpath = cascade.save(tmp_path / "cascade.json")
    router = UtilityRouter().fit(train)
    rdir = save_router(router, tmp_path / "router")
    spath = write_route_cascade(tmp_path / "route-cascade.json", rdir, cpath)
    doc = json.loads(spath.read_text())
    assert doc["kind"] == "route-cascade" and doc["cascade"] == "cascade.json"
    doc["knob"] = 0.0  # λ = 0: start at the rung with the best predicted quality
    spath.write_text(json.dumps(doc))
    strat = ponder.load_strategy(spath)
    assert isinstance(strat, RouteThenCascade) and strat.models == cascade.models
    cfg = ponder.Config(providers={"replay": ponder.ProviderSettings(path=str(fixture_path))})
    hard = next(q for q, t in zip(train.queries, train.tasks, strict=True) if t == "proof")
    with ponder.Client(cfg) as client:
        ans = strat.run(ponder.ChatRequest.of(hard), client)
        again = strat.run(ponder.ChatRequest.of(hard), client)
    start = ans.extra["start_rung"]
    expected = router.route(hard, knob=0.0, models=strat.rungs).model
    assert strat.rungs[start] == expected == ans.extra["start_model"]
    assert start > 0  # a proof skips the cheapest rung
    assert ans.trace[0].model == cascade.rungs[start].live  # nothing below it was called
    assert ans.cost_usd == pytest.approx(sum(a.cost_usd for a in ans.trace)) and ans.cost_usd > 0
    assert again.completion.text == ans.completion.text


def test_cascade_rung_the_router_never_saw(split):
    train, _ = split
    cascade = _multi_rung(cascade_mod.CascadeOptimizer().fit(train))
    rung_models = [r.model for r in cascade.rungs]
    keep = [m for m in ("small", "medium", "large") if m != rung_models[-1]]
    router = UtilityRouter(models=keep).fit(train)
    with pytest.raises(UnknownModel, match="never saw"):
        RouteThenCascade(router, cascade)
