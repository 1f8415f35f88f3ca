"""Pieces of a key quoted by an upstream (masked, truncated, upper-cased) never reach a client of
``ponder serve``: not in error bodies, not in streamed errors."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from ponder import Client
from ponder._secrets import forget_secrets
from ponder.server import FallbackChain, create_app
from tests.server._serverkit import Action, FakeLLMServer, LiveServer, make_config

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


@pytest.mark.parametrize("prefix", ["sk-proj-", ""])
def test_key_fragments_quoted_upstream_never_reach_the_client(
        prefix: str, upstream: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    key = prefix + secrets.token_hex(24)
    monkeypatch.setenv("FRAG_KEY", key)
    fragments = (f"sk-...{key[-4:]}", key[-6:], key.upper(), key[:8] if prefix else key[3:11])
    client = Client(make_config({"up": upstream.url}, api_key_env="FRAG_KEY"), cache=False)
    app = create_app(client, {"chain": FallbackChain(["up:m"])}, models=["up:m"])
    bodies = []
    with LiveServer(app) as live:
        for status in (401, 400, 429, 500):
            for model in ("up:m", "ponder/chain"):
                for stream in (False, True):
                    upstream.queue(Action(kind="status", status=status, body={"error": {
                        "message": "Incorrect API key provided: " + " | ".join(fragments),
                        "type": "invalid_request_error"}}))
                    r = httpx.post(live.url + "/v1/chat/completions", timeout=30, json={
                        "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
                    bodies.append(r.text)
                    upstream.actions.clear()
    client.close()
    # the key really went upstream, so the checks below are not vacuous
    assert any(key in h for h in upstream.auth_headers())
    text = "\n".join(bodies).lower()
    assert "[redacted]" in text
    assert key[-4:].lower() not in text and key[8:12].lower() not in text
