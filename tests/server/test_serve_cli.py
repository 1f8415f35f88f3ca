"""``ponder serve`` as a user runs it: a real process, a config file with strategies, the openai SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.server._serverkit import FakeLLMServer, free_port

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

ROOT = Path(__file__).resolve().parents[2]


def launch(args: list[str], env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-c", "from ponder.cli import main; main()", "serve", *args,
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("ponder serve did not start: " + proc.communicate()[1].decode()[-2000:])
        time.sleep(0.1)


@pytest.fixture
def served(tmp_path: Path, upstream: FakeLLMServer) -> Iterator[str]:
    (tmp_path / "chain.json").write_text(json.dumps({
        "format": "ponder-strategy", "version": 1, "kind": "fallback", "name": "chain",
        "models": ["down:m", "up:m"]}))
    (tmp_path / "ponder.toml").write_text(f"""
[providers.up]
type = "openai"
base_url = "{upstream.url}"
max_retries = 0

[providers.down]
type = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
max_retries = 0

[prices."up:m"]
input = 1.0
output = 2.0

[models]
fast = "up:m"

[strategies.default]
path = "chain.json"

[cache]
path = "{tmp_path / 'cache'}"
""")
    proc, url = launch(["--config", str(tmp_path / "ponder.toml")])
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_serve_with_a_config_answers_the_openai_sdk(served: str) -> None:
    sdk = openai.OpenAI(base_url=served + "/v1", api_key="unused", max_retries=0)
    assert {m.id for m in sdk.models.list()} >= {"ponder/default", "fast", "up:m", "down:m"}
    raw = sdk.chat.completions.with_raw_response.create(
        model="ponder/default", messages=[{"role": "user", "content": "from the config"}], temperature=0)
    assert raw.parse().choices[0].message.content == "echo: from the config"
    assert raw.headers["x-ponder-model"] == "up:m"  # the first rung is down; the chain fell through
    stream = sdk.chat.completions.create(model="fast", messages=[{"role": "user", "content": "stream it"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: stream it"
    again = sdk.chat.completions.with_raw_response.create(
        model="ponder/default", messages=[{"role": "user", "content": "from the config"}], temperature=0)
    assert again.headers["x-ponder-cached"] == "true" and float(again.headers["x-ponder-cost-usd"]) == 0.0
    metrics = httpx.get(served + "/metrics").text
    assert "ponder_cache_hits_total 1\n" in metrics
    # both chain requests tried the dead first rung (failures are never cached)
    assert 'ponder_model_calls_total{model="down:m",outcome="error"} 2' in metrics
    assert 'ponder_model_calls_total{model="up:m",outcome="cached"} 1' in metrics
    saved = next(line for line in metrics.splitlines() if line.startswith("ponder_cache_saved_usd_total "))
    assert float(saved.split()[1]) > 0.0  # the hit saved what the first call cost


def test_models_retrieve_answers_as_openai_does(served: str) -> None:
    """``models.retrieve`` for every listed id (strategy ids hold a '/') and the names a chat
    request accepts (a strategy without its prefix), and OpenAI's 404 otherwise."""
    sdk = openai.OpenAI(base_url=served + "/v1", api_key="unused", max_retries=0)
    for listed in sdk.models.list():
        got = sdk.models.retrieve(listed.id)
        assert (got.id, got.object, got.owned_by, got.created) == \
            (listed.id, "model", listed.owned_by, listed.created)
    assert sdk.models.retrieve("default").id == "ponder/default"
    for unknown in ("no-such-model", "m"):  # "m" is ambiguous (up:m, down:m), as in a chat request
        with pytest.raises(openai.NotFoundError) as info:
            sdk.models.retrieve(unknown)
        body = info.value.body
        assert isinstance(body, dict) and body["code"] == "model_not_found", body
        assert body["param"] == "model" and body["type"] == "invalid_request_error"
        assert repr(unknown) in body["message"]


def test_serve_one_model_with_an_api_key(upstream: FakeLLMServer, tmp_path: Path) -> None:
    proc, url = launch(["--model", "openai:m", "--base-url", upstream.url, "--api-key-env", "PONDER_SERVER_KEY"],
                       {"PONDER_SERVER_KEY": "let-me-in", "PONDER_CACHE_DIR": str(tmp_path / "cache")})
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
        sdk = openai.OpenAI(base_url=url + "/v1", api_key="let-me-in", max_retries=0)
        resp = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "simple"}])
        assert resp.choices[0].message.content == "echo: simple" and resp.model == "openai:m"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_refuses_to_start_with_nothing_to_serve(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", "from ponder.cli import main; main()", "serve", "--port", "0"],
                       env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and "nothing to serve" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-c", "from ponder.cli import main; main()", "serve", "--model", "openai:m",
                        "--api-key-env", "SURELY_UNSET_VAR_X"], env=env, capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 1 and "SURELY_UNSET_VAR_X" in r.stderr and "Traceback" not in r.stderr
