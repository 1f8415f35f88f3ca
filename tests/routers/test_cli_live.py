"""``ponder train router`` and ``ponder ask --strategy router.json``, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ponder
from ponder._exceptions import UnknownModel
from ponder.routers import load_router


def ponder_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          env=dict(os.environ), cwd=cwd, timeout=120)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def _check_answer(out_model: str, text: str, cost: float, router, query: str, table) -> None:
    chosen = router.route(query).model
    assert out_model == f"replay:{chosen}"
    qi = table.query_ids[table.queries.index(query)]
    recorded = table.df[(table.df.query_id == qi) & (table.df.model == chosen)].iloc[0]
    assert text == recorded["response"] and cost == pytest.approx(recorded["cost_usd"])


@pytest.mark.slow
def test_train_then_ask_as_a_user_does(fixture_path, table, tmp_path):
    """The real commands in a subprocess: train a router, then ``ponder ask --strategy``."""
    r = ponder_cli("train", "router", str(fixture_path), "--kind", "utility", "--output", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    strategy = tmp_path / "out" / "router.json"
    doc = json.loads(strategy.read_text())
    assert doc["format"] == "ponder-strategy" and doc["kind"] == "router" and doc["router"] == "router"
    router = load_router(tmp_path / "out" / "router")
    assert router.n_train_ == 100  # the fixture's train rows only
    (tmp_path / "ponder.toml").write_text(f'[providers.replay]\npath = "{fixture_path}"\n')
    _, test = table.split()
    query = test.queries[1]
    r = ponder_cli("ask", "--strategy", str(strategy), query, "--json", "--config",
                   str(tmp_path / "ponder.toml"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    _check_answer(out["model"], out["text"], out["cost_usd"], router, query, table)


@pytest.mark.parametrize("kind", ["pairwise", "utility", "knn", "mf"])
def test_every_kind_trains_from_the_cli_and_routes_live(kind, fixture_path, table, tmp_path):
    from typer.testing import CliRunner

    from ponder.cli import app

    res = CliRunner().invoke(app, ["train", "router", str(fixture_path), "--kind", kind,
                                   "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert f"trained {kind} router on 100 queries" in res.output
    router = load_router(tmp_path / "out" / "router")
    strat = ponder.load_strategy(tmp_path / "out" / "router.json")
    cfg = ponder.Config(providers={"replay": ponder.ProviderSettings(path=str(fixture_path))})
    _, test = table.split()
    with ponder.Client(cfg) as client:
        for query in test.queries[:3]:
            ans = strat.run(ponder.ChatRequest.of(query), client)
            _check_answer(ans.completion.spec, ans.completion.text, ans.cost_usd, router, query, table)


@pytest.mark.slow
def test_calibrated_training_and_model_map_over_real_http(fixture_path, tmp_path, fake_server):
    mm = {"small": "openai:tiny-model", "medium": "openai:mid-model", "large": "openai:big-model"}
    r = ponder_cli("train", "router", str(fixture_path), "--kind", "utility", "--output",
                   str(tmp_path / "out"), "--strong-share", "0.3", "--model-map", json.dumps(mm))
    assert r.returncode == 0, r.stderr
    assert "calibrated on 25 held-out queries for strong_share=0.3" in r.stdout
    cfg = ponder.Config(providers={"openai": ponder.ProviderSettings(
        base_url=fake_server.url, api_key="sk-test-not-real")})
    strat = ponder.load_strategy(tmp_path / "out" / "router.json")
    assert sorted(strat.models) == sorted(mm.values())
    with ponder.Client(cfg) as client:
        answers = [strat.run(ponder.ChatRequest.of(q), client) for q in
                   ("prove the lemma by induction on the integral bound", "add the numbers plus sum")]
    assert answers[0].completion.model == "big-model"  # a proof needs the large model
    assert answers[1].completion.model != "big-model"  # arithmetic does not
    assert answers[0].completion.text.startswith("echo: prove the lemma")
    assert answers[0].extra["chosen"] == "large" and set(answers[0].extra["predicted_quality"]) == set(mm)
    assert answers[0].cost_usd == answers[0].completion.cost_usd and len(answers[0].trace) == 1
    assert fake_server.count == 2


async def test_arun_matches_run(fixture_path, tmp_path, fake_server):
    from ponder.routers import UtilityRouter, save_router, write_strategy_file

    router = UtilityRouter().fit(ponder.evaluation.read_outcomes(fixture_path))
    save_router(router, tmp_path / "r")
    path = write_strategy_file(tmp_path / "s.json", tmp_path / "r", knob=0.0,
                               model_map={m: f"openai:{m}" for m in router.models_})
    strat = ponder.load_strategy(path)
    cfg = ponder.Config(providers={"openai": ponder.ProviderSettings(base_url=fake_server.url,
                                                                     api_key="sk-x")})
    req = ponder.ChatRequest.of("prove the theorem by induction")
    with ponder.Client(cfg) as client:
        a = await strat.arun(req, client)
        b = strat.run(req, client)
    assert a.completion.model == b.completion.model == "large"


@pytest.mark.slow
def test_model_the_router_never_saw(fixture_path, tmp_path):
    r = ponder_cli("train", "router", str(fixture_path), "--kind", "knn", "--output", str(tmp_path / "o"),
                   "--model-map", '{"gpt-5": "openai:gpt-5"}')
    line = _one_error_line(r)
    assert "'gpt-5'" in line and "never saw" in line
    r = ponder_cli("train", "router", str(fixture_path), "--kind", "knn", "--output", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "o" / "router.json").read_text())
    doc["candidates"] = ["small", "claude-9"]
    (tmp_path / "o" / "router.json").write_text(json.dumps(doc))
    with pytest.raises(UnknownModel, match="never saw 'claude-9'"):
        ponder.load_strategy(tmp_path / "o" / "router.json")
    r = ponder_cli("ask", "--strategy", str(tmp_path / "o" / "router.json"), "hi")
    line = _one_error_line(r)
    assert "claude-9" in line and "router.json" in line


@pytest.mark.slow
def test_bad_cli_input_is_one_line(fixture_path, tmp_path):
    r = ponder_cli("train", "router", str(fixture_path), "--kind", "utility", "--output",
                   str(tmp_path / "o"), "--model-map", "{not json")
    assert "invalid JSON" in _one_error_line(r)
    r = ponder_cli("train", "router", str(tmp_path / "nope.csv"), "--kind", "mf", "--output", str(tmp_path / "o"))
    assert "nope.csv" in _one_error_line(r)
    bad = tmp_path / "bad.csv"
    bad.write_text("query_id,query,model,score,cost_usd\nq1,hi,a,1.5,0.1\n")
    line = _one_error_line(ponder_cli("train", "router", str(bad), "--kind", "knn", "--output", str(tmp_path / "o")))
    assert "row 1" in line and "score" in line
