"""From the command line: train a scorer, optimise a cascade, answer live with its trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.fakeserver import Action

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)


def ponder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


MAP = ["--model-map", "small=openai:small-model", "--model-map", "medium=openai:medium-model",
       "--model-map", "large=openai:large-model"]


def test_train_scorer_cli(tmp_path, outcomes_path):
    from ponder.scorers import AnswerScorer

    r = ponder("train", "scorer", str(outcomes_path), "--output", str(tmp_path / "sc"))
    assert r.returncode == 0, r.stderr
    assert "trained on 170 queries" in r.stdout  # the train split only
    s = AnswerScorer.load(tmp_path / "sc")
    assert s.models_ == ["large", "medium", "small"]
    bad = ponder("train", "scorer", str(outcomes_path), "--output", str(tmp_path / "x"),
                 "--learner", "svm")
    assert bad.returncode == 1 and "--learner must be logistic or hgb" in bad.stderr


def test_optimize_then_ask_live_with_trace(tmp_path, outcomes_path, fake_server):
    out = tmp_path / "arith.json"
    r = ponder("optimize", str(outcomes_path), "--output", str(out), "--budget", "0.004",
               "--folds", "3", "--cap", "0.05", *MAP)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["kind"] == "cascade" and doc["expected"]["cost_usd"] <= 0.004
    assert doc["budget_usd"] == 0.05
    assert (tmp_path / doc["rungs"][0]["scorer"] / "meta.json").exists()

    fake_server.queue(*[Action(text="I'm sorry, I cannot compute that exactly.")] * 3)
    env = {"OPENAI_API_KEY": "sk-cascade-secret"}
    a = ponder("ask", "What is 4821 * 7734? Reply 'The answer is N.'", "--strategy", str(out),
               "--base-url", fake_server.url, "--json", "--no-cache", env=env)
    assert a.returncode == 0, a.stderr
    ans = json.loads(a.stdout)
    specs = [doc["model_map"][r["model"]] for r in doc["rungs"]]
    trace = ans["trace"]
    assert len(trace) == fake_server.count >= 1
    assert [t["model"] for t in trace] == specs[: len(trace)]
    assert [r["body"]["model"] for r in fake_server.requests] == [s.split(":")[1] for s in specs[: len(trace)]]
    assert trace[-1]["accepted"] and not any(t["accepted"] for t in trace[:-1])
    assert all(t["score"] is not None for t in trace if t["model"] != specs[-1])
    assert ans["text"] == trace[-1]["response"]
    assert abs(ans["cost_usd"] - sum(t["cost_usd"] for t in trace)) < 1e-12
    assert "sk-cascade-secret" not in a.stdout + a.stderr


def test_optimize_with_guarantee_and_tampered_scorer(tmp_path, outcomes_path, fake_server):
    out = tmp_path / "safe.json"
    r = ponder("optimize", str(outcomes_path), "--output", str(out), "--epsilon", "0.05",
               "--delta", "0.2", "--folds", "3", "--calibration-fraction", "0.3", *MAP)
    assert r.returncode == 0, r.stderr
    g = json.loads(out.read_text())["guarantee"]
    assert g["epsilon"] == 0.05 and g["delta"] == 0.2 and g["n_calibration"] == 51
    assert ("certified: drop vs" in r.stdout) == g["certified"]

    npz = tmp_path / "safe.scorer" / "arrays.npz"
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["coef"] = arrays["coef"] * 1.01  # someone "adjusts" the weights
    np.savez_compressed(npz, **arrays)
    a = ponder("ask", "What is 1 + 1?", "--strategy", str(out), "--base-url", fake_server.url)
    assert a.returncode == 1 and fake_server.count == 0
    lines = [ln for ln in a.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "safe.scorer" in lines[0]
    assert "content hash mismatch" in lines[0] and "refusing to load" in lines[0]


def test_optimize_bad_arguments(tmp_path, outcomes_path):
    r = ponder("optimize", str(outcomes_path), "--output", str(tmp_path / "s.json"))
    assert r.returncode == 1 and "give --budget" in r.stderr
    r = ponder("optimize", str(outcomes_path), "--output", str(tmp_path / "s.json"),
               "--budget", "0.00000001", "--folds", "3")
    assert r.returncode == 1 and "no cascade costs" in r.stderr and "Traceback" not in r.stderr


def test_optimize_with_a_trained_scorer_keeps_samples_logprobs_and_sets(tmp_path, outcomes_path,
                                                                         scorer, monkeypatch):
    """``--scorer`` swaps in a trained scorer's path; every rung keeps the rest of what it is."""
    from typer.testing import CliRunner

    import ponder.cascade
    from ponder.cascade import AgreementSet, Cascade, Rung, load_strategy_file
    from ponder.cli import app

    shipped = scorer.save(tmp_path / "trained")
    chosen = Cascade([Rung("small", 0.4, scorer, samples=3, logprobs=True, expected_cost_usd=0.001),
                      Rung("{medium + large}", 0.6, scorer, agree=AgreementSet(("medium", "large"))),
                      Rung("large")], info={"expected": {"quality": 0.9, "cost_usd": 0.002}})

    class Picks:  # the optimizer's search is tested elsewhere: here it settles on `chosen`
        scorer_ = calibration_ = None

        def __init__(self, **params):
            pass

        def fit(self, table):
            return self

        def cascade(self, **choice):
            return chosen

    monkeypatch.setattr(ponder.cascade, "CascadeOptimizer", Picks)
    out = tmp_path / "s.json"
    r = CliRunner().invoke(app, ["optimize", str(outcomes_path), "-o", str(out), "--budget", "0.01",
                                 "--scorer", str(shipped)])
    assert r.exit_code == 0, r.output
    rungs = json.loads(out.read_text())["rungs"]
    assert rungs[0]["samples"] == 3 and rungs[0]["logprobs"] is True
    assert rungs[1]["agree"]["members"] == ["medium", "large"]
    assert [x.get("scorer") for x in rungs] == ["trained", "trained", None]
    loaded = load_strategy_file(out)
    assert [(x.samples, x.logprobs, x.agree is not None) for x in loaded.rungs] == [
        (3, True, False), (1, False, True), (1, False, False)]
