"""The evaluator's strategies are scikit-learn estimators, and a fitted one produces its live
strategy in code: ``live(setting)`` answers as the file ``save(setting, folder)`` writes does.

- ``clone`` keeps every parameter and none of the fit; the fold fits of ``ponder eval`` are
  clones (a strategy of your own that is no estimator is deep-copied, as before);
- for a router, the same model is chosen for every test query; for a cascade, the same rungs,
  thresholds and live specs, and the same answers through the replay provider; for
  route-then-cascade, the same start rung and the same answers, routed or not (λ = ∞).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sklearn.exceptions
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

import ponder
from ponder.cascade import Cascade, CascadeStrategy
from ponder.evaluation._deploy import fold_fits, fresh_copy, plan
from ponder.evaluation._strategy import Liveable, Shippable
from ponder.routers import LiveRouter, RouteThenCascade, UtilityRouter
from ponder.routers._strategies import RouteCascadeStrategy, RouterStrategy
from ponder.strategies import live_model_map, load_strategy


def _make_utility() -> UtilityRouter:
    return UtilityRouter(C=0.5)


# Each with non-default parameters, so that clone must carry them over.
def _unfitted() -> list[BaseEstimator]:
    return [RouterStrategy("router-u", _make_utility, n_points=7),
            CascadeStrategy("casc", n_budgets=5, max_length=2, folds=2, seed=3,
                            scorer_params={"C": 0.5}, n_pareto=2),
            RouteCascadeStrategy("rc", n_budgets=4, n_knobs=3, seed=2, folds=2,
                                 scorer_params={"C": 0.5})]


@pytest.fixture(scope="module")
def router(split):
    return RouterStrategy("router-utility", UtilityRouter).fit(split[0])


@pytest.fixture(scope="module")
def cascade(split):
    return CascadeStrategy(n_budgets=6).fit(split[0])


@pytest.fixture(scope="module")
def route_cascade(split):
    return RouteCascadeStrategy(n_budgets=6, n_knobs=4).fit(split[0])


# ---- scikit-learn estimators ---------------------------------------------------------------------
@pytest.mark.parametrize("s", _unfitted(), ids=lambda s: type(s).__name__)
def test_clone_keeps_the_parameters_and_is_unfitted(s):
    assert isinstance(s, BaseEstimator) and isinstance(s, Liveable) and isinstance(s, Shippable)
    c = clone(s)
    assert c is not s and type(c) is type(s)
    assert c.get_params() == s.get_params()
    assert (c.name, c.kind) == (s.name, s.kind)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(c)
    c.set_params(name="other")
    assert c.name == "other" and s.name != "other"


def test_clone_of_a_fitted_strategy_drops_its_fit(router, cascade, route_cascade):
    for s, learned in ((router, ["router_"]), (cascade, ["optimizer_"]),
                       (route_cascade, ["cascade_", "router_", "skips_"])):
        check_is_fitted(s)
        c = clone(s)
        assert c.get_params() == s.get_params()
        assert not any(hasattr(c, a) for a in learned), type(s).__name__
        assert all(hasattr(s, a) for a in learned)


class _Plain:
    """A strategy of one's own: no estimator."""

    name, kind = "plain", "router"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def fit(self, train):
        self.seen.append(len(train.query_ids))
        return self

    def sweep(self, test):
        return []


class _Uncopyable(_Plain):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()  # neither clone nor deepcopy can copy a lock


class _OddEstimator(BaseEstimator):
    """An estimator whose __init__ does not store its parameter as is: clone refuses it."""

    name, kind = "odd", "router"

    def __init__(self, k: int = 1) -> None:
        self.k = k + 1

    def fit(self, train):
        return self

    def sweep(self, test):
        return []


def test_fresh_copies_are_clones_else_deep_copies(router, split):
    c = fresh_copy(router)
    assert isinstance(c, RouterStrategy) and c.get_params() == router.get_params()
    assert not hasattr(c, "router_")  # a clone: none of the fit
    plain = _Plain().fit(split[0])
    p = fresh_copy(plain)
    assert isinstance(p, _Plain) and p is not plain and p.seen == plain.seen  # a deep copy
    assert fresh_copy(_Uncopyable()) is None
    odd = fresh_copy(_OddEstimator(k=1))
    assert isinstance(odd, _OddEstimator) and odd.k == 2  # clone refused it; deep-copied


def test_fold_fits_fit_one_unfitted_clone_per_fold(split):
    train, test = split
    spare = fresh_copy(RouterStrategy("router-u", _make_utility, n_points=7))
    p = plan(train, test, seed=0, folds=3)
    fits = [job.result() for job in fold_fits(spare, p)]
    assert len(fits) == 3 and len({id(f) for f in fits} | {id(spare)}) == 4
    assert not hasattr(spare, "router_")
    for f, (rows, _, _) in zip(fits, p.parts, strict=True):
        assert f.get_params() == spare.get_params()
        assert f.router_.C == 0.5 and len(f.router_.models_) == len(rows.models)


# ---- live(setting) answers as save(setting) does -------------------------------------------------
def _client(fixture_path):
    cfg = ponder.Config(providers={"replay": ponder.ProviderSettings(path=str(fixture_path))})
    return ponder.Client(cfg, cache=False)


def _same_answers(live, loaded, queries, fixture_path):
    """Both strategies run on every query through the replay provider: the same calls, the same
    answer, the same cost."""
    assert live.models == loaded.models and live.name == loaded.name
    with _client(fixture_path) as client:
        for q in queries:
            a = live.run(ponder.ChatRequest.of(q), client)
            b = loaded.run(ponder.ChatRequest.of(q), client)
            assert [t.model for t in a.trace] == [t.model for t in b.trace], q
            assert [t.accepted for t in a.trace] == [t.accepted for t in b.trace], q
            assert a.completion.text == b.completion.text and a.cost_usd == b.cost_usd, q
            assert {k: v for k, v in a.extra.items() if k != "latency_s"} == \
                   {k: v for k, v in b.extra.items() if k != "latency_s"}, q


def _same_rungs(a: Cascade, b: Cascade) -> None:
    assert [(r.model, r.live, r.samples, r.logprobs, r.expected_cost_usd) for r in a.rungs] == \
           [(r.model, r.live, r.samples, r.logprobs, r.expected_cost_usd) for r in b.rungs]
    assert [r.threshold for r in a.rungs[:-1]] == pytest.approx([r.threshold for r in b.rungs[:-1]])
    assert [r.scorer is None for r in a.rungs] == [r.scorer is None for r in b.rungs]
    assert a.budget_usd == b.budget_usd and a.name == b.name


def test_a_router_live_chooses_as_its_saved_file(router, split, tmp_path):
    _, test = split
    points = router.sweep(test)
    shares = [p.extra["strong_share"] for p in points]
    tried = [points[int(np.argmin(np.abs(np.array(shares) - f)))] for f in (0.25, 0.5, 0.75)]
    assert any(0 < p.extra["strong_share"] < 1 for p in tried)  # settings that mix models
    mm = {"large": "openai:large-model"}
    for k, p in enumerate(tried):
        live = router.live(p.setting, name=f"r{k}", model_map=mm)
        loaded = load_strategy(router.save(p.setting, tmp_path / f"r{k}", name=f"r{k}",
                                           model_map=mm))
        assert isinstance(live, LiveRouter) and isinstance(loaded, LiveRouter)
        assert (live.name, live.knob, live.models) == (loaded.name, loaded.knob, loaded.models)
        for q in test.queries:
            d1, spec1 = live.decide(ponder.ChatRequest.of(q))
            d2, spec2 = loaded.decide(ponder.ChatRequest.of(q))
            assert (d1.model, spec1) == (d2.model, spec2), q
            assert d1.quality == pytest.approx(d2.quality)
    assert router.live(tried[0].setting).name == "router-utility"  # its own name by default


def test_a_cascade_live_is_its_saved_file(cascade, split, fixture_path, tmp_path):
    _, test = split
    points = cascade.sweep(test)
    tried = [p for p in points if len(p.setting["chain"]) > 1][:2] + points[:1]
    assert len(tried) == 3
    for k, p in enumerate(tried):
        live = cascade.live(p.setting, name=f"c{k}")
        loaded = load_strategy(cascade.save(p.setting, tmp_path / f"c{k}", name=f"c{k}"))
        assert isinstance(live, Cascade) and isinstance(loaded, Cascade)
        assert [r.model for r in live.rungs] == p.setting["chain"]
        assert [round(r.threshold, 4) for r in live.rungs[:-1]] == p.setting["thresholds"]
        _same_rungs(live, loaded)
        _same_answers(live, loaded, test.queries[:12], fixture_path)


def test_a_route_cascade_live_is_its_saved_file(route_cascade, split, fixture_path, tmp_path):
    _, test = split
    points = [p for p in route_cascade.sweep(test) if len(p.setting["chain"]) > 1]
    routed = [p for p in points if p.setting["knob"] is not None
              and 0 < p.extra["start_share"][0] < 1]
    plain = [p for p in points if p.setting["knob"] is None]
    assert routed and plain
    for k, p in enumerate(routed[:2] + plain[:1]):
        live = route_cascade.live(p.setting, name=f"rc{k}")
        loaded = load_strategy(route_cascade.save(p.setting, tmp_path / f"rc{k}", name=f"rc{k}"))
        assert type(live) is type(loaded)
        if p.setting["knob"] is None:  # λ = ∞: the plain cascade
            assert isinstance(live, Cascade)
            _same_rungs(live, loaded)
        else:
            assert isinstance(live, RouteThenCascade)
            assert (live.knob, live.rungs) == (loaded.knob, loaded.rungs)
            _same_rungs(live.cascade, loaded.cascade)
            starts = [live.start_rung(ponder.ChatRequest.of(q))[0] for q in test.queries]
            assert starts == [loaded.start_rung(ponder.ChatRequest.of(q))[0] for q in test.queries]
            assert len(set(starts)) > 1
        _same_answers(live, loaded, test.queries[:12], fixture_path)


def test_live_names_models_by_model_map_then_config_aliases(router, cascade, split):
    _, test = split
    setting = router.sweep(test)[0].setting
    cfg = ponder.Config(models={"small": "openai:small-model", "large": "openai:large-model",
                                "elsewhere": "openai:x"})
    live = router.live(setting, model_map={"large": "anthropic:large"}, config=cfg)
    assert live.model_map == {"small": "openai:small-model", "large": "anthropic:large"}
    assert "openai:small-model" in live.models and "anthropic:large" in live.models
    chain = next(p for p in cascade.sweep(test) if "small" in p.setting["chain"])
    c = cascade.live(chain.setting, config=cfg)
    assert "openai:small-model" in c.models and not any(m.startswith("replay:small")
                                                         for m in c.models)
    assert live_model_map(["a", "b"]) is None
    assert live_model_map(["a", "b"], {"b": "x:b"}, cfg) == {"b": "x:b"}
