"""The fallback chain outside the server: sync and async twins, its strategy file, its one error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import ponder
from ponder import Client, ConfigError
from ponder.server import AllModelsFailed, FallbackChain
from tests.server._serverkit import Action, FakeLLMServer, free_port, make_config


@pytest.mark.slow
def test_sync_and_async_twins_take_the_same_path(upstream: FakeLLMServer, upstream2: FakeLLMServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    client = Client(make_config({"a": upstream.url, "b": upstream2.url, "dead": dead}), cache=False)
    chain = FallbackChain(["dead:m", "a:m", "b:m"])
    upstream.queue(Action(kind="status", status=500), Action(kind="status", status=500))
    sync = chain.run(ponder.ChatRequest.of("x"), client)
    client2 = Client(make_config({"a": upstream.url, "b": upstream2.url, "dead": dead}), cache=False)
    asyn = asyncio.run(chain.arun(ponder.ChatRequest.of("x"), client2))
    for answer in (sync, asyn):
        assert answer.completion.spec == "b:m" and answer.completion.text == "echo: x"
        assert [a.model for a in answer.trace] == ["dead:m", "a:m", "b:m"]
        assert [a.accepted for a in answer.trace] == [False, False, True]
        assert answer.cost_usd == answer.trace[-1].cost_usd > 0  # failed rungs cost nothing
    assert (upstream.count, upstream2.count) == (2, 2)


def test_every_rung_failing_raises_one_error_naming_each(upstream: FakeLLMServer) -> None:
    client = Client(make_config({"a": upstream.url}), cache=False)
    upstream.queue(Action(kind="status", status=429, headers={"retry-after": "1"}), Action(kind="status", status=503))
    with pytest.raises(AllModelsFailed) as err:
        FallbackChain(["a:m", "a:m"]).run(ponder.ChatRequest.of("x"), client)
    assert "all 2 models failed" in str(err.value) and "HTTP 429" in str(err.value) and "HTTP 503" in str(err.value)
    assert err.value.uniform is None and isinstance(err.value, ponder.ProviderError)


def test_strategy_file_loads_through_ponder_and_bad_files_name_the_key(tmp_path: Path) -> None:
    good = tmp_path / "chain.json"
    good.write_text(json.dumps({"format": "ponder-strategy", "version": 1, "kind": "fallback",
                                "models": ["openai:a", "anthropic:b"]}))
    chain = ponder.load_strategy(good)
    assert isinstance(chain, FallbackChain) and chain.models == ["openai:a", "anthropic:b"] and chain.name == "chain"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "ponder-strategy", "version": 1, "kind": "fallback", "models": ["no-provider"]}))
    with pytest.raises(ConfigError) as err:
        ponder.load_strategy(bad)
    assert err.value.file == str(bad) and err.value.key == "models"
