"""Verification signals (issue 14 §3): self-consistency among ``samples`` and token logprobs.

Features from the columns ``ponder collect`` records, the scorer trained on them (and still
loading files from before them), the cascade replaying them offline, and the same cascade asking
for them live over real HTTP (tests/fakeserver.py, through the official SDK): with ``n`` where
the server honours it (the input paid once), one call per sample where it ignores ``n`` (as
llama.cpp's server does), and the same decisions live as offline on the same answers.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from ponder import ChatRequest, Client, ConfigError, DataError, ModelFileError
from ponder.cascade import (
    Cascade,
    CascadeOptimizer,
    ChainChoice,
    Rung,
    fit_scorer,
    load_strategy_file,
)
from ponder.collect import collect
from ponder.evaluation import OutcomeTable
from ponder.scorers import SIGNAL_NAMES, AnswerScorer, scorer_frame, signal_columns, table_signals
from ponder.scorers._signals import frame_signals, parse_samples, self_consistency
from tests import fakeserver

MINI, BIG = "openai:gpt-4o-mini", "openai:gpt-4o"


# ---- features ------------------------------------------------------------------------------
def test_self_consistency_is_agreement_among_the_samples():
    agree, pairwise = self_consistency(["The answer is 4.", "Answer: 4", "The answer is 5."])
    assert agree == pytest.approx(0.5)  # the response agrees with one of the two others
    assert pairwise == pytest.approx(1 / 3)  # one pair of three agrees
    assert all(math.isnan(v) for v in self_consistency(["only one"]))
    assert parse_samples('["a", "b"]') == ("a", "b") and parse_samples(None) == ()
    assert parse_samples(np.array(["x", "y"], dtype=object)) == ("x", "y")
    with pytest.raises(ValueError, match="JSON list"):
        parse_samples("not json")


def test_frame_signals_nan_where_not_recorded():
    X = scorer_frame(["q", "q"], ["A", "A"], ["m", "m"], samples=[["A", "A", "B"], []],
                     logprob_mean=[-0.5, None], logprob_min=[-2.0, None])
    S = frame_signals(X)
    assert S.shape == (2, len(SIGNAL_NAMES))
    assert S[0].tolist() == pytest.approx([0.5, 1 / 3, -0.5, -2.0])
    assert np.isnan(S[1]).all()
    assert np.isnan(frame_signals(scorer_frame(["q"], ["A"], ["m"]))).all()


def test_outcome_table_carries_the_collect_columns():
    df = pd.DataFrame({"query_id": ["1", "1", "2"], "query": ["a", "a", "b"],
                       "model": ["x", "y", "x"], "score": [1.0, 0.0, 1.0], "cost_usd": [0.1, 0.2, 0.1],
                       "samples": ['["r1", "r1b"]', None, '["r2"]'],
                       "logprob_mean": [-0.2, None, -1.0], "logprob_min": [-1.0, None, -3.0]})
    t = OutcomeTable.read(df)
    assert t.samples[0, t.models.index("x")] == ("r1", "r1b") and t.samples[0, t.models.index("y")] == ()
    assert t.logprob_mean[1, t.models.index("x")] == -1.0 and np.isnan(t.logprob_mean[1, t.models.index("y")])
    S = table_signals(t)
    assert S.shape == (2, 2, len(SIGNAL_NAMES)) and np.isnan(S[1, :, 0]).all()
    with pytest.raises(DataError, match=r"row 2.*samples.*JSON list"):
        OutcomeTable.read(df.assign(samples=['["a"]', "{oops", None]))
    with pytest.raises(DataError, match=r"row 1.*logprob_mean.*<= 0"):
        OutcomeTable.read(df.assign(logprob_mean=[0.5, None, -1.0]))
    with pytest.raises(DataError, match=r"row 3.*logprob_min.*not a number"):
        OutcomeTable.read(df.assign(logprob_min=[-1.0, None, "high"]))


def test_a_resumed_n_job_is_seeded():
    """A job for samples 1..k (resuming a row that has sample 0) carries seed = 1: a server that
    ignores n answers it once, and an unseeded draw could repeat sample 0 (llama.cpp's server
    derives unseeded draws from a chain that restarts with the server)."""
    from ponder.collect import CollectPrompt, Job, job_request

    p = CollectPrompt(id="a", request=ChatRequest.of("hi"), query="hi")
    kw = {"temperature": 0.7, "max_tokens": None, "logprobs": True}
    assert job_request(Job(p, MINI, (1, 2)), **kw).seed == 1
    assert job_request(Job(p, MINI, (1, 2)), **kw).n == 2
    assert job_request(Job(p, MINI, (0, 1, 2)), **kw).seed is None
    assert job_request(Job(p, MINI, (2,)), **kw).seed == 2


# ---- a table whose answers' quality shows only in their signals ----------------------------
def _signal_table(n: int = 240, seed: int = 0) -> OutcomeTable:
    """Two models; whether an answer is right is seen in its samples' agreement and logprobs,
    not in its text (every response reads alike)."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n):
        for model, p_right in (("small", 0.5), ("big", 0.8)):
            right = rng.random() < p_right
            ans = f"The answer is {q % 7}."
            other = [ans if (right or rng.random() < 0.15) else f"The answer is {q % 7 + 1 + k}."
                     for k in range(2)]
            lm = (-0.3 if right else -1.2) + rng.normal(0, 0.25)
            rows.append({"query_id": f"q{q}", "query": f"question {q} about item {q % 11}",
                         "model": model, "response": ans, "score": float(right),
                         "cost_usd": 0.001 if model == "small" else 0.01,
                         "samples": json.dumps([ans, *other]), "logprob_mean": min(lm, 0.0),
                         "logprob_min": min(lm * 3, 0.0)})
    return OutcomeTable.read(pd.DataFrame(rows), name="signals")


def _auc(y, p):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, p)


def test_scorer_learns_from_signals_and_ignores_them_when_told():
    train, test = _signal_table().split(test_fraction=0.5, seed=1)
    with_sig = fit_scorer(train)
    without = fit_scorer(train, {"signals": False})
    assert with_sig.signals_ == SIGNAL_NAMES and without.signals_ == ()
    casc = Cascade([Rung("small", 0.5, with_sig), Rung("big")])
    plain = Cascade([Rung("small", 0.5, without), Rung("big")])
    y = test.scores[:, test.models.index("small")]
    auc_with = _auc(y, casc.rung_scores(test)[:, 0])
    auc_without = _auc(y, plain.rung_scores(test)[:, 0])
    assert auc_with > 0.9 and auc_without < 0.65, (auc_with, auc_without)
    # rows without signals (a table or a live answer that lacks them) still get a probability
    X = scorer_frame(test.queries[:5], ["The answer is 1."] * 5, ["small"] * 5)
    p = with_sig.predict_proba(X)[:, 1]
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("learner", ["logistic", "hgb"])
def test_score_grid_matches_predict_proba_with_signals(learner):
    table = _signal_table(90)
    scorer = fit_scorer(table, {"learner": learner})
    from ponder._features import agreement_matrix

    s1, s2 = scorer.score_grid(table.queries, table.responses, table.models,
                               agreement_matrix(table.responses), table_signals(table))
    nq, (a, b) = len(table.query_ids), (0, 1)
    first = scorer_frame(table.queries, list(table.responses[:, a]), [table.models[a]] * nq)
    second = scorer_frame(table.queries, list(table.responses[:, b]), [table.models[b]] * nq,
                          [[(table.models[a], r)] for r in table.responses[:, a]])
    first = first.assign(**signal_columns(table, range(nq), [a] * nq))
    second = second.assign(**signal_columns(table, range(nq), [b] * nq))
    assert np.allclose(s1[:, a], scorer.predict_proba(first)[:, 1])  # no earlier answer
    assert np.allclose(s2[:, b, a], scorer.predict_proba(second)[:, 1])  # a's answer in view


def test_scorer_file_keeps_signals_and_files_from_before_signals_load(tmp_path):
    from ponder import _persist
    from ponder.scorers._io import KIND

    table = _signal_table(90)
    scorer = fit_scorer(table)
    X = scorer_frame(table.queries, list(table.responses[:, 0]), [table.models[0]] * 90,
                     samples=[list(s) for s in table.samples[:, 0]],
                     logprob_mean=list(table.logprob_mean[:, 0]),
                     logprob_min=list(table.logprob_min[:, 0]))
    back = AnswerScorer.load(scorer.save(tmp_path / "with"))
    assert back.signals_ == scorer.signals_
    assert np.allclose(back.predict_proba(X), scorer.predict_proba(X))

    # a file written before signals existed: no "signals" field, no "signals" parameter
    plain = fit_scorer(table, {"signals": False})
    meta, arrays = _persist.load(plain.save(tmp_path / "plain"), kind=KIND)
    assert "signals" not in meta
    del meta["params"]["signals"]
    _persist.save(tmp_path / "old", meta, arrays, kind=KIND)
    old = AnswerScorer.load(tmp_path / "old")
    assert old.signals_ == () and old.signals is True
    assert np.allclose(old.predict_proba(X), plain.predict_proba(X))

    # an unknown signal name is refused, naming the field
    meta, arrays = _persist.load(tmp_path / "with", kind=KIND)
    meta["signals"] = ["sc_agree", "telepathy"]
    _persist.save(tmp_path / "bad", meta, arrays, kind=KIND)
    with pytest.raises(ModelFileError, match="unknown signal 'telepathy'"):
        AnswerScorer.load(tmp_path / "bad")


def test_optimizer_rungs_ask_for_what_the_scorer_uses(tmp_path):
    train, _ = _signal_table().split(test_fraction=0.5, seed=1)
    opt = CascadeOptimizer(folds=3, max_length=2).fit(train)
    casc = opt.build(ChainChoice(chain=(0, 1), thresholds=(0.5,), cost=0.0, quality=0.0))
    assert casc.rungs[-1].samples == 1 and not casc.rungs[-1].logprobs  # the last rung is not scored
    for r in casc.rungs[:-1]:
        assert r.samples == 3 and r.logprobs
    path = casc.save(tmp_path / "s.json")
    doc = json.loads(path.read_text())
    assert all(d.get("samples") == 3 and d.get("logprobs") is True for d in doc["rungs"][:-1])
    back = load_strategy_file(path)
    assert [(r.samples, r.logprobs) for r in back.rungs] == [(r.samples, r.logprobs) for r in casc.rungs]
    doc["rungs"][0]["samples"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"rungs\[0\]\.samples"):
        load_strategy_file(path)


# ---- live over real HTTP: the same decisions as offline ---------------------------------------
PROMPTS = [{"id": f"p{i}", "prompt": f"Question {i}: what is {i} plus {i % 5}?"} for i in range(40)]


def _replier(body):
    """Deterministic answers that depend on the model, the prompt and the seed: the small model
    wavers on every third prompt (its samples disagree), the big one never does."""
    prompt = body["messages"][-1]["content"]
    i = int(prompt.split()[1].rstrip(":"))
    seed = body.get("seed") or 0
    right = i + i % 5
    if body["model"] == "gpt-4o-mini" and i % 3 == 0:
        return f"The answer is {right + seed + 1}."  # wrong, and different for every sample
    words = " ".join(["so"] * (i % 4))  # lengths vary, and with them the logprob statistics
    return f"The answer is {right}. {words}".strip()


@pytest.fixture
def ignore_n(monkeypatch):
    """Make the fake server answer one choice whatever ``n`` says (as llama.cpp's server does)."""
    plain = fakeserver._choices_n_logprobs

    def one(obj, body):
        return plain(obj, {k: v for k, v in body.items() if k != "n"})

    monkeypatch.setattr(fakeserver, "_choices_n_logprobs", one)


def _graded(fake_server, client) -> OutcomeTable:
    """The small model's answers with 3 samples and logprobs (its rung asks for them), the big
    model's plain (the last rung is not scored), graded against the references."""
    small = collect(PROMPTS, [MINI], client=client, samples=3, logprobs=True, concurrency=4)
    big = collect(PROMPTS, [BIG], client=client, concurrency=4)
    return _grade(pd.concat([small.df, big.df], ignore_index=True))


def _grade(df: pd.DataFrame) -> OutcomeTable:
    # a reference grader: right when the response states i + i % 5
    ref = {p["prompt"]: str(int(p["id"][1:]) + int(p["id"][1:]) % 5) for p in PROMPTS}
    df["score"] = [float(f"is {ref[q]}." in r) for q, r in zip(df["query"], df["response"], strict=True)]
    return OutcomeTable.read(df, name="fake")


@pytest.mark.slow
@pytest.mark.parametrize("honour_n", [True, False], ids=["n-honoured", "n-ignored"])
def test_live_cascade_asks_for_signals_and_decides_as_offline(fake_server, monkeypatch, request,
                                                             honour_n):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-signals")
    if not honour_n:
        request.getfixturevalue("ignore_n")
    fake_server.replier = _replier
    with Client(cache=False, base_urls={"openai": fake_server.url}) as client:
        table = _graded(fake_server, client)
        mini = table.models.index(MINI)
        assert all(len(s) == 3 for s in table.samples[:, mini])
        assert np.isfinite(table.logprob_mean[:, mini]).all()
        scorer = fit_scorer(table)
        assert set(scorer.signals_) == set(SIGNAL_NAMES)
        cascade = Cascade([Rung(MINI, 0.5, scorer, samples=3, logprobs=True), Rung(BIG)], name="sig")
        offline = cascade.rung_scores(table)[:, 0]
        cascade.rungs[0] = Rung(MINI, float(np.median(offline)), scorer, samples=3, logprobs=True)
        cost, _, who = cascade.replay(table)
        assert 0 < (who == 0).sum() < len(who)  # both branches are exercised

        before = fake_server.count
        for q, p in enumerate(PROMPTS):
            ans = cascade.run(ChatRequest.of(p["prompt"]), client)
            first = ans.trace[0]
            assert first.score == pytest.approx(offline[q], abs=1e-9)
            assert len(ans.trace) - 1 == who[q]
            # what the table says the answers cost (with n: the input paid once)
            assert ans.cost_usd == pytest.approx(cost[q], rel=1e-9)
        calls = fake_server.count - before
        per_rung0 = 1 if honour_n else 3
        assert calls == len(PROMPTS) * per_rung0 + int((who == 1).sum())
    bodies = [r["body"] for r in fake_server.requests[-calls:] if r["body"]["model"] == "gpt-4o-mini"]
    assert all(b.get("logprobs") is True and b.get("top_logprobs") == 0 for b in bodies)
    if honour_n:
        assert all(b.get("n") == 3 for b in bodies)
    else:  # one n=3 request the server answered once, then samples 1 and 2 with their seeds
        assert sorted({b.get("seed") for b in bodies}, key=str) == [1, 2, None]


async def test_async_run_decides_as_sync(fake_server, monkeypatch, ignore_n):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-signals")
    fake_server.replier = _replier
    async with Client(cache=False, base_urls={"openai": fake_server.url}) as client:
        table = await _acollect_graded(client)
        scorer = fit_scorer(table)
        offline = Cascade([Rung(MINI, 0.5, scorer, samples=3, logprobs=True), Rung(BIG)]).rung_scores(table)[:, 0]
        cascade = Cascade([Rung(MINI, float(np.median(offline)), scorer, samples=3, logprobs=True),
                           Rung(BIG)])
        _, _, who = cascade.replay(table)
        picks = random.Random(0).sample(range(len(PROMPTS)), 8)
        for q in picks:
            ans = await cascade.arun(ChatRequest.of(PROMPTS[q]["prompt"]), client)
            assert ans.trace[0].score == pytest.approx(offline[q], abs=1e-9)
            assert len(ans.trace) - 1 == who[q]


async def _acollect_graded(client) -> OutcomeTable:
    from ponder.collect import acollect

    small = await acollect(PROMPTS, [MINI], client=client, samples=3, logprobs=True, concurrency=4)
    big = await acollect(PROMPTS, [BIG], client=client, concurrency=4)
    return _grade(pd.concat([small.df, big.df], ignore_index=True))
