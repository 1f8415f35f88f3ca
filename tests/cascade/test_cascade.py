"""The cascade's policy, offline replay, strategy files and live answers over real HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ponder
from ponder._exceptions import ConfigError, ModelFileError, ProviderError
from ponder.cascade import Cascade, Rung, decide, load_strategy_file
from ponder.cascade._cascade import _Tried
from tests.fakeserver import Action

R3 = [Rung("a", 0.7, expected_cost_usd=1.0), Rung("b", 0.5, expected_cost_usd=2.0),
      Rung("c", expected_cost_usd=5.0)]


def test_decide_policy():
    assert decide(R3, [], None).call == 0
    assert decide(R3, [_Tried(0, "x", 0.8, 1.0)], None).answer == 0  # accepted
    assert decide(R3, [_Tried(0, "x", 0.6, 1.0)], None).call == 1  # rejected: climb
    tried = [_Tried(0, "x", 0.1, 1.0), _Tried(1, "y", 0.2, 2.0), _Tried(2, "z", None, 5.0)]
    assert decide(R3, tried, None).answer == 2  # the last rung always answers
    assert decide(R3, [_Tried(0, None, None, 0.0, error="boom")], None).call == 1  # error: fall through
    # Budget cap: 1 spent + 2 expected for rung b > 2.5 → stop with the best answer so far.
    assert decide(R3, [_Tried(0, "x", 0.3, 1.0)], 2.5) == decide(R3, [_Tried(0, "x", 0.3, 1.0)], 2.5)
    step = decide(R3, [_Tried(0, "x", 0.3, 1.0)], 2.5)
    assert step.call is None and step.answer == 0
    all_failed = [_Tried(i, None, None, 0.0, error="e") for i in range(3)]
    assert decide(R3, all_failed, None).answer is None and decide(R3, all_failed, None).call is None
    # Last rung failed: answer with the best-scored earlier success.
    tried = [_Tried(0, "x", 0.3, 1.0), _Tried(1, "y", 0.45, 2.0), _Tried(2, None, None, 0.0, "e")]
    assert decide(R3, tried, None).answer == 1


def test_a_cascade_needs_rungs_but_not_scorers():
    """A rung without a scorer accepts any answer its verifiers pass (the verifier-only cascade)."""
    assert decide([Rung("a"), Rung("b")], [_Tried(0, "x", None, 1.0)], None).answer == 0
    assert decide([Rung("a"), Rung("b")], [_Tried(0, "", None, 1.0, check="empty")], None).call == 1
    with pytest.raises(ConfigError):
        Cascade([])


def test_replay_equals_manual_policy(split, optimizer):
    """Offline replay of a chosen chain reproduces the train frontier's numbers on train scores,
    and on test it matches a hand-written loop over the same decisions."""
    train, test = split
    choice = optimizer.choose(budget=0.3 * float(np.nanmean(train.costs[:, -1])))
    cascade = optimizer.build(choice)
    assert choice.cost <= 0.3 * float(np.nanmean(train.costs[:, -1]))
    S = cascade.rung_scores(test)
    cost, qual, who = cascade.replay(test, S)
    idx = [test.models.index(r.model) for r in cascade.rungs]
    for q in range(len(test.query_ids)):
        c = 0.0
        for k, m in enumerate(idx):
            c += test.costs[q, m]
            if k == len(idx) - 1 or S[q, k] >= cascade.rungs[k].threshold:
                assert who[q] == k and qual[q] == test.scores[q, m]
                break
        assert cost[q] == pytest.approx(c)


def test_eval_strategy_sweeps_test_budgets(split):
    from ponder.cascade import CascadeStrategy
    from ponder.evaluation import registered_strategies

    assert "cascade" in registered_strategies()
    train, test = split
    s = CascadeStrategy(n_budgets=6, folds=3).fit(train)
    points = s.sweep(test)
    assert len(points) >= 2
    for p in points:
        assert p.cost.shape == (len(test.query_ids),) and p.quality.shape == p.cost.shape
    costs = [p.mean_cost for p in points]
    assert max(costs) > 2 * min(costs)  # the sweep spans cheap and expensive settings


@pytest.fixture
def strategy_file(tmp_path, optimizer):
    cascade = optimizer.cascade(budget=0.004, name="arith")
    mm = {m: f"openai:{m}-model" for m in optimizer.models_}
    path = cascade.save(tmp_path / "arith.json", model_map=mm)
    return path


def test_strategy_file_round_trip(strategy_file):
    doc = json.loads(strategy_file.read_text())
    assert doc["format"] == "ponder-strategy" and doc["kind"] == "cascade" and doc["version"] == 1
    assert doc["rungs"][0]["scorer"] == "arith.scorer"  # relative to the JSON
    assert {"cost_usd", "quality"} <= set(doc["expected"])
    c = load_strategy_file(strategy_file)
    assert c.models == [f"openai:{r['model']}-model" for r in doc["rungs"]]
    assert [r.threshold for r in c.rungs[:-1]] == [r["threshold"] for r in doc["rungs"][:-1]]


def test_strategy_with_tampered_scorer_is_refused(strategy_file):
    meta = strategy_file.parent / "arith.scorer" / "meta.json"
    doc = json.loads(meta.read_text())
    doc["meta"]["models"] = ["x", "y", "z"]
    meta.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="content hash mismatch"):
        load_strategy_file(strategy_file)


def _client(url):
    from ponder import Client

    return Client(cache=False, base_urls={"openai": url})


def _two_rungs(scorer, threshold):
    return Cascade([Rung("small", threshold, scorer, spec="openai:small-model"),
                    Rung("large", spec="openai:large-model")], name="t")


def test_live_run_escalates_and_traces(fake_server, scorer, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cascade")
    q = "What is 4821 * 7734? Reply 'The answer is N.'"
    fake_server.queue(Action(text="I'm sorry, I cannot compute that exactly."),
                      Action(text="The answer is 37285614."))
    with _client(fake_server.url) as client:
        ans = _two_rungs(scorer, 0.5).run(q, client)
    assert [r["body"]["model"] for r in fake_server.requests] == ["small-model", "large-model"]
    assert ans.completion.text == "The answer is 37285614."
    assert [a.model for a in ans.trace] == ["openai:small-model", "openai:large-model"]
    assert ans.trace[0].score is not None and ans.trace[0].score < 0.5 and not ans.trace[0].accepted
    assert ans.trace[1].accepted and ans.trace[1].score is None
    assert ans.cost_usd == pytest.approx(sum(a.cost_usd for a in ans.trace))


async def test_async_run_accepts_first_rung(fake_server, scorer, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cascade")
    fake_server.queue(Action(text="The answer is 7."))
    async with _client(fake_server.url) as client:
        ans = await _two_rungs(scorer, 0.0).arun("What is 3 + 4? Reply 'The answer is N.'", client)
    assert fake_server.count == 1 and len(ans.trace) == 1 and ans.trace[0].accepted
    assert ans.completion.text == "The answer is 7."


def test_provider_error_falls_through(fake_server, scorer, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cascade")
    fake_server.queue(Action(kind="status", status=401,
                             body={"error": {"message": "bad key sk-test-cascade"}}),
                      Action(text="The answer is 12."))
    with _client(fake_server.url) as client:
        ans = _two_rungs(scorer, 0.0).run("What is 5 + 7?", client)
    assert ans.trace[0].error and "sk-test-cascade" not in ans.trace[0].error
    assert ans.completion.text == "The answer is 12." and ans.trace[1].accepted
    fake_server.queue(*[Action(kind="status", status=401) for _ in range(2)])
    with _client(fake_server.url) as client, pytest.raises(ponder.AllModelsFailed) as err:
        _two_rungs(scorer, 0.0).run("What is 5 + 7?", client)
    # one clear error that names every rung, and no key
    assert len(err.value.errors) == 2 and all(isinstance(e, ProviderError) for _, e in err.value.errors)
    assert "all 2 models failed" in str(err.value) and "sk-test-cascade" not in str(err.value)
