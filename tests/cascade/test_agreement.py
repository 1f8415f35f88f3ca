"""Agreement rungs: the pure set policy, learned acceptance, the optimizer's set search, the
strategy file, and live answers over real HTTP that take the offline replay's decisions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ponder._exceptions import ConfigError, ModelFileError
from ponder.cascade import (
    Acceptor,
    AgreementSet,
    Cascade,
    Rung,
    decide,
    load_strategy_file,
    set_state,
)
from ponder.cascade._agreement import answer_key, n_features, set_outcomes
from ponder.cascade._cascade import _Tried
from ponder.evaluation import read_outcomes

# ---- a multiple-choice outcome table: three cheap models and a strong one -------------------------
MODELS = {  # name: (accuracy on "easy", on "hard", cost per call, answer format)
    "a": (0.85, 0.35, 1e-4, "{}"),
    "b": (0.85, 0.40, 2e-4, "({})"),
    "c": (0.90, 0.45, 4e-4, "The answer is {}."),
    "d": (0.95, 0.85, 8e-3, "Answer: {}"),
}


def _mc_table(n: int = 260, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        task = "easy" if i % 2 else "hard"
        truth = "ABCD"[rng.integers(4)]
        q = f"Question {i}, {task} topic {rng.integers(5)}: which option is right? A) B) C) D)"
        for m, (easy, hard, cost, fmt) in MODELS.items():
            right = rng.random() < (easy if task == "easy" else hard)
            ans = truth if right else rng.choice([x for x in "ABCD" if x != truth])
            rows.append({"query_id": f"q{i:03d}", "query": q, "model": m, "score": float(right),
                         "cost_usd": cost, "response": fmt.format(ans), "task": task,
                         "split": "train" if i < int(n * 0.7) else "test"})
    return read_outcomes(pd.DataFrame(rows), name="mc")


@pytest.fixture(scope="module")
def mc():
    return _mc_table().split()


@pytest.fixture(scope="module")
def opt(mc):
    from ponder.cascade import CascadeOptimizer

    return CascadeOptimizer(folds=3, set_pool=3).fit(mc[0])


def _set_cascade(opt, threshold: float, *, concurrent: bool = False, name: str = "agree"):  # type: ignore[no-untyped-def]
    """{a + b, c only on disagreement} → d, with the optimizer's learned acceptor."""
    from dataclasses import replace

    agree = next(s for s in opt.sets_ if s.members == ("a", "b", "c"))
    agree = replace(agree, concurrent=concurrent,
                    specs=tuple(f"openai:{m}-model" for m in agree.members))
    return Cascade([Rung(agree.name, threshold, opt.scorer_, agree=agree,
                         expected_cost_usd=7e-4),
                    Rung("d", spec="openai:d-model", expected_cost_usd=8e-3)], name=name)


# ---- the pure policy ------------------------------------------------------------------------------
ABC = AgreementSet(("a", "b", "c"), compare="choice")


def test_set_state_calls_two_then_the_third_only_on_disagreement():
    assert set_state(ABC, []).next == (0,)
    assert set_state(ABC, [(0, "B", 0.6)]).next == (1,)
    agreed = set_state(ABC, [(0, "B", 0.6), (1, "(B)", 0.9)])
    assert agreed.next == () and agreed.majority == (0, 1)
    assert agreed.answer == 1  # the more reliable of the agreeing members answers
    assert agreed.score == pytest.approx(2 / 3)  # no acceptor: the majority's share of the set
    assert set_state(ABC, [(0, "B", 0.6), (1, "C", 0.9)]).next == (2,)
    two_one = set_state(ABC, [(0, "B", 0.6), (1, "C", 0.9), (2, "The answer is (C)", 0.5)])
    assert two_one.next == () and two_one.majority == (1, 2) and two_one.answer == 1
    split3 = set_state(ABC, [(0, "A", 0.2), (1, "B", 0.3), (2, "C", 0.8)])
    assert split3.majority == (2,) and split3.answer == 2  # no majority: the most reliable
    assert split3.features is not None and split3.features[4] == 1.0  # "no two agree"
    # A failed member call gets no vote: the next member is called; all failed → no answer.
    assert set_state(ABC, [(0, None, None)]).next == (1,)
    assert set_state(ABC, [(0, None, None), (1, "B", 0.5)]).next == (2,)
    none = set_state(ABC, [(0, None, None), (1, None, None), (2, None, None)])
    assert none.next == () and none.answer is None


def test_set_state_concurrent_call_all_and_pairs():
    conc = AgreementSet(("a", "b", "c"), concurrent=True)
    assert set_state(conc, []).next == (0, 1)
    assert set_state(conc, [(0, "B", None), (1, "C", None)]).next == (2,)
    every = AgreementSet(("a", "b", "c"), stop_early=False)
    assert set_state(every, [(0, "B", None), (1, "B", None)]).next == (2,)  # even when two agree
    st = set_state(every, [(0, "B", None), (1, "B", None), (2, "B", None)])
    assert st.score == 1.0 and st.features is not None and st.features[3] == 1.0
    pair = AgreementSet(("a", "b"))
    assert set_state(pair, [(0, "B", None), (1, "C", None)]).next == ()  # nothing left to call
    with pytest.raises(ConfigError, match="2 or 3 members"):
        AgreementSet(("a",))
    with pytest.raises(ConfigError, match="compare"):
        AgreementSet(("a", "b"), compare="fuzzy")


@pytest.mark.parametrize("compare,x,y,same", [
    ("choice", "The answer is (B).", "B) because ...", True),
    ("choice", "A", "B", False),
    ("number", "It costs $1,234.50", "1234.5", True),
    ("number", "12", "13", False),
    ("exact", "The Eiffel Tower!", "eiffel tower", True),
    ("auto", "[Yes]", "after thinking: [yes]", True),
    ("text", "def add(a, b):\n    return a + b", "def add(a, b):\n    return a + b\n", True),
    ("text", "def add(a, b): return a + b", "print('hello world')", False),
])
def test_answers_are_compared_after_normalisation(compare, x, y, same):
    s = AgreementSet(("a", "b"), compare=compare)
    assert s.same(x, y, answer_key(x, compare), answer_key(y, compare))[0] is same


def test_decide_runs_a_set_rung_then_climbs_or_answers():
    rungs = [Rung("set", 0.9, agree=ABC, expected_cost_usd=1.0), Rung("d", expected_cost_usd=5.0)]
    assert decide(rungs, [], None).call == 0 and decide(rungs, [], None).members == (0,)
    t = [_Tried(0, "B", 0.6, 0.1, member=0)]
    assert decide(rungs, t, None).members == (1,)
    t.append(_Tried(0, "B", 0.7, 0.2, member=1))
    assert decide(rungs, t, None).call == 1  # 2/3 < 0.9: climb to the last rung
    lenient = [Rung("set", 0.6, agree=ABC), rungs[1]]
    assert decide(lenient, t, None).answer == 1  # accepted: the more reliable agreeing member
    t2 = [*t, _Tried(1, None, None, 0.0, error="boom")]
    assert decide(rungs, t2, None).answer == 1  # the last rung failed: the set's answer stands
    assert decide(rungs, t, 0.5).answer == 1  # the budget forbids the last rung: the set answers
    all_failed = [_Tried(0, None, None, 0.0, error="e", member=j) for j in range(3)]
    assert decide(rungs, all_failed, None).call == 1  # no member answered: fall through


def test_acceptor_is_calibrated_and_round_trips(mc):
    train = mc[0]
    cols = [train.models.index(m) for m in ("a", "b", "c")]
    rel = np.full((len(train.query_ids), 3), 0.5)
    out = set_outcomes(ABC, train.responses[:, cols], train.present[:, cols],
                       train.scores[:, cols], train.costs[:, cols], rel)
    acc = Acceptor().fit(out.features, out.quality)
    p = acc.predict_proba(out.features)
    assert abs(p.mean() - out.quality.mean()) < 0.05  # calibrated in the mean
    agree_all = out.features[:, 3] == 1.0
    assert p[agree_all].mean() > p[~agree_all].mean() + 0.2  # agreement raises acceptance
    back = Acceptor.from_json(json.loads(json.dumps(acc.to_json())))
    np.testing.assert_array_equal(back.predict_proba(out.features), p)
    bad = acc.to_json() | {"coef": acc.to_json()["coef"][:-1]}
    with pytest.raises(ModelFileError, match="differ in length"):
        Acceptor.from_json(bad)
    with pytest.raises(ModelFileError, match="list of numbers"):
        Acceptor.from_json(acc.to_json() | {"mean": "__import__('os')"})
    assert n_features(3) == len(out.features[0])


# ---- the optimizer --------------------------------------------------------------------------------
@pytest.mark.slow
def test_optimizer_searches_sets_and_replay_matches_the_set_policy(mc, opt):
    train, test = mc
    assert {s.members for s in opt.sets_} >= {("a", "b"), ("a", "b", "c"), ("b", "c", "a")}
    n = len(opt.models_)
    set_chains = [c for c in opt.frontier_.chains if c[0] >= n]
    assert set_chains and all(c[2] < 0 for c in set_chains)  # sets start chains of ≤ 2 rungs
    assert all(m < n for c in opt.frontier_.chains for m in c[1:])  # and never follow a rung
    # Here agreement of the cheap models is worth buying: the train frontier uses a set.
    best = opt.choose(target=float(np.nanmean(train.scores[:, train.models.index("d")])))
    assert best.chain[0] >= n, opt.describe(best.chain)
    # The replay's decisions equal the vectorised set policy with the shipped acceptor.
    cascade = _set_cascade(opt, 0.8)
    agree = cascade.rungs[0].agree
    cols = [test.models.index(m) for m in agree.members]
    rel = cascade.member_scores(test)[0]
    out = set_outcomes(agree, test.responses[:, cols], test.present[:, cols], test.scores[:, cols],
                       test.costs[:, cols], rel)
    accept = agree.acceptor.predict_proba(out.features) >= 0.8
    d = test.models.index("d")
    cost, qual, who = cascade.replay(test)
    np.testing.assert_allclose(cost, out.cost + np.where(accept, 0.0, test.costs[:, d]))
    np.testing.assert_array_equal(qual, np.where(accept, out.quality, test.scores[:, d]))
    assert 0.1 < accept.mean() < 0.9 and set(who) == {0, 1}


def test_strategy_file_carries_set_rungs(tmp_path, mc, opt):
    train, test = mc
    cascade = opt.cascade(target=float(np.nanmean(train.scores[:, train.models.index("d")])))
    assert cascade.rungs[0].agree is not None
    path = cascade.save(tmp_path / "agree.json", model_map={m: f"openai:{m}-x" for m in MODELS})
    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and doc["rungs"][0]["agree"]["members"] == list(
        cascade.rungs[0].agree.members)
    assert doc["rungs"][0]["agree"]["acceptor"]["type"] == "logistic"
    back = load_strategy_file(path)
    assert back.rungs[0].agree.specs == tuple(f"openai:{m}-x" for m in back.rungs[0].agree.members)
    assert back.models[:2] == ["openai:a-x", "openai:b-x"]
    for a, b in zip(cascade.replay(test), back.replay(test), strict=True):
        np.testing.assert_array_equal(a, b)
    # A cascade without sets still writes (and reads) version 1.
    plain = opt.cascade(budget=1e-4)
    assert all(r.agree is None for r in plain.rungs)
    assert json.loads(plain.save(tmp_path / "plain.json").read_text())["version"] == 1
    # Bad set rungs: clear errors that name the file and the key.
    doc["rungs"][0]["agree"]["acceptor"]["coef"] = doc["rungs"][0]["agree"]["acceptor"]["coef"][:3]
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="agree.json"):
        load_strategy_file(path)
    doc["rungs"][0]["agree"] = {"members": ["a"]}
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"rungs\[0\]\.agree.*2 or 3 members"):
        load_strategy_file(path)
    doc["version"] = 1
    doc["rungs"][0]["agree"] = {"members": ["a", "b"]}
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="version 2"):
        load_strategy_file(path)


# ---- live over real HTTP: the same decisions as the replay -------------------------------------
def _replier(table):  # type: ignore[no-untyped-def]
    by = {(table.queries[q], m): str(table.responses[q, j])
          for q in range(len(table.query_ids)) for j, m in enumerate(table.models)}

    def reply(body):  # type: ignore[no-untyped-def]
        query = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        return by[(query, body["model"].removesuffix("-model"))]
    return reply


def _live_calls(ans) -> list[tuple[str, bool]]:  # type: ignore[no-untyped-def]
    return [(a.model.removeprefix("openai:").removesuffix("-model"), a.accepted) for a in ans.trace]


def _client(url):  # type: ignore[no-untyped-def]
    from ponder import Client

    return Client(cache=False, base_urls={"openai": url})


@pytest.mark.slow
def test_live_set_rung_takes_the_replay_decisions(fake_server, mc, opt, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-agree")
    test = mc[1]
    cascade = _set_cascade(opt, 0.8)
    calls: list[list[tuple[str, bool]]] = []
    cascade.replay(test, calls=calls)
    fake_server.replier = _replier(test)
    seen = set()
    with _client(fake_server.url) as client:
        for q in range(40):
            ans = cascade.run(test.queries[q], client)
            assert _live_calls(ans) == calls[q], test.query_ids[q]
            seen.add(tuple(m for m, _ in calls[q]))
            accepted = next(a for a in ans.trace if a.accepted)
            assert ans.completion.text == accepted.response
            assert ans.cost_usd == pytest.approx(sum(a.cost_usd for a in ans.trace))
    # every path was taken: two agree, a third on disagreement, and the climb to d
    assert {("a", "b"), ("a", "b", "c")} <= {s[:3] for s in seen} and any("d" in s for s in seen)


async def test_async_concurrent_set_rung_takes_the_same_decisions(fake_server, mc, opt, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-agree")
    test = mc[1]
    cascade = _set_cascade(opt, 0.8, concurrent=True)
    calls: list[list[tuple[str, bool]]] = []
    cascade.replay(test, calls=calls)
    fake_server.replier = _replier(test)
    async with _client(fake_server.url) as client:
        for q in range(20):
            ans = await cascade.arun(test.queries[q], client)
            assert _live_calls(ans) == calls[q]
    firsts = [r["body"]["model"] for r in fake_server.requests[:2]]
    assert sorted(firsts) == ["a-model", "b-model"]


def test_a_failing_member_gets_no_vote(fake_server, mc, opt, monkeypatch):
    from tests.fakeserver import Action

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-agree")
    cascade = _set_cascade(opt, 0.0)
    fake_server.queue(Action(kind="status", status=401, body={"error": {"message": "bad key"}}),
                      Action(text="(B)"), Action(text="The answer is B."))
    with _client(fake_server.url) as client:
        ans = cascade.run("Question 999, easy topic 1: which option is right? A) B) C) D)",
                          client)
    assert [a.model for a in ans.trace] == ["openai:a-model", "openai:b-model", "openai:c-model"]
    assert ans.trace[0].error and not ans.trace[0].accepted
    assert ans.completion.text in ("(B)", "The answer is B.")


def test_gain_acceptor_prefers_queries_the_strong_model_gets_wrong(mc):
    train = mc[0]
    cols = [train.models.index(m) for m in ("a", "b", "c")]
    rel = np.full((len(train.query_ids), 3), 0.5)
    out = set_outcomes(ABC, train.responses[:, cols], train.present[:, cols],
                       train.scores[:, cols], train.costs[:, cols], rel)
    y_ref = train.scores[:, train.models.index("d")]
    gain = Acceptor().fit(out.features, out.quality, y_ref)
    plain = Acceptor().fit(out.features, out.quality)
    g, p = gain.predict_proba(out.features), plain.predict_proba(out.features)
    assert np.all((g >= 0) & (g <= 1)) and not np.allclose(g, p)
    # higher gain score ⇒ more often the set is right where the strong model is not
    hi = g >= np.quantile(g, 0.75)
    assert (out.quality - y_ref)[hi].mean() > (out.quality - y_ref).mean()
    back = Acceptor.from_json(json.loads(json.dumps(gain.to_json())))
    np.testing.assert_array_equal(back.predict_proba(out.features), g)
    doc = gain.to_json()
    doc["reference"]["coef"] = doc["reference"]["coef"][:2]
    with pytest.raises(ModelFileError, match="differ in length"):
        Acceptor.from_json(doc)


@pytest.mark.slow
def test_route_then_cascade_skips_sets_where_they_rarely_agree(mc):
    from ponder.routers._strategies import RouteCascadeStrategy

    train, test = mc
    s = RouteCascadeStrategy(n_budgets=6, n_knobs=3, set_pool=3).fit(train)
    points = s.sweep(test)
    n = len(s.cascade_.optimizer_.models_)
    set_points = [pt for pt in points if pt.setting["chain"][0].startswith("{")
                  and len(pt.setting["chain"]) == 2]
    assert set_points, [pt.setting for pt in points]
    by_chain: dict = {}
    for pt in set_points:
        by_chain.setdefault((tuple(pt.setting["chain"]), tuple(pt.setting["thresholds"])),
                            []).append(pt)
    for pts in by_chain.values():
        plain = next(pt for pt in pts if pt.setting["knob"] is None)
        routed = [pt for pt in pts if pt.setting["knob"] is not None]
        assert routed and any(0 < pt.extra["start_share"][1] < 1 for pt in routed)
        d = test.costs[:, test.models.index(plain.setting["chain"][1])]
        for pt in (pt for pt in routed if pt.extra["start_share"][1] > 0):
            # a query sent straight up pays for the next rung alone
            moved = ~np.isclose(pt.cost, plain.cost)
            assert moved.any() and np.allclose(pt.cost[moved], d[moved])
    assert n == 4


# ---- reachable from the command line and from `ponder eval` -------------------------------------
@pytest.mark.slow
def test_ponder_optimize_set_pool_writes_set_rungs(tmp_path, mc):
    import subprocess
    import sys

    train, test = mc
    src = tmp_path / "mc.parquet"
    pd.concat([train.df, test.df]).to_parquet(src)
    target = float(np.nanmean(train.scores[:, train.models.index("d")]))
    out = tmp_path / "agree.json"
    r = subprocess.run([sys.executable, "-m", "ponder", "optimize", str(src), "--target-quality",
                        f"{target:.4f}", "--set-pool", "3", "--folds", "3", "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["version"] == 2 and "agree" in doc["rungs"][0]
    assert load_strategy_file(out).rungs[0].agree is not None


@pytest.mark.slow
def test_cascade_agree_is_opt_in_for_eval_and_its_recipe_searches_sets(mc, tmp_path):
    from ponder.evaluation import evaluate
    from ponder.evaluation._strategy import default_strategies

    assert "cascade-agree" not in default_strategies() and "cascade" in default_strategies()
    train, test = mc
    table = read_outcomes(pd.concat([train.df, test.df]), name="mc")
    res = evaluate(table, strategies=["cascade-agree"], n_bootstrap=50)
    (s,) = [s for s in res.to_json()["strategies"] if s["name"] == "cascade-agree"]
    chosen = [d for d in s["deployed"] if d["setting"]]
    assert chosen and all(d["setting"].get("set_pool") == 3 for d in chosen)
    # what `ponder eval --ship` writes for a set setting: the set search's own cascade
    from ponder.cascade import CascadeStrategy

    fitted = CascadeStrategy("cascade-agree", set_pool=3).fit(train)
    setting = chosen[0]["setting"]
    path = fitted.save(setting, tmp_path / "ship", name="cascade-agree")
    assert [r["model"] for r in json.loads(path.read_text())["rungs"]] == setting["chain"]
