"""The official openai SDK, unchanged, against ``ponder serve`` over real HTTP (uvicorn)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from ponder import Client, SingleModel
from ponder.server import FallbackChain, create_app
from tests.server._serverkit import FakeLLMServer, LiveServer, make_config

COST_IN, COST_OUT = 1.0, 2.0  # USD per 1M tokens for "up:m" (see make_config)


def expected_cost(prompt: str, answer: str) -> float:
    return (len(prompt.split()) * COST_IN + len(answer.split()) * COST_OUT) / 1e6


class AnswerFirst:
    """A strategy that must answer before it can stream (as a cascade does)."""

    kind = "answer-first"

    def __init__(self, model: str) -> None:
        self.inner = SingleModel(model)
        self.models = [model]
        self.name = "answer-first"

    def run(self, request: Any, client: Any) -> Any:
        return self.inner.run(request, client)

    async def arun(self, request: Any, client: Any) -> Any:
        return await self.inner.arun(request, client)


@pytest.fixture
def server(upstream: FakeLLMServer) -> Iterator[LiveServer]:
    client = Client(make_config({"up": upstream.url}), cache=False)
    app = create_app(client, {"chain": FallbackChain(["up:m"]), "later": AnswerFirst("up:m")})
    with LiveServer(app) as live:
        yield live
    client.close()


def sdk(server: LiveServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def test_sync_completion_carries_model_and_exact_cost(server: LiveServer, upstream: FakeLLMServer) -> None:
    raw = sdk(server).chat.completions.with_raw_response.create(
        model="up:m", messages=[{"role": "user", "content": "hello there"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "echo: hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "up:m"
    assert raw.headers["x-ponder-model"] == "up:m"
    cost = expected_cost("hello there", "echo: hello there")
    assert float(raw.headers["x-ponder-cost-usd"]) == pytest.approx(cost)
    info = resp.model_extra["ponder"]
    assert info["cost_usd"] == pytest.approx(cost) and info["model"] == "up:m"
    assert resp.usage.prompt_tokens == 2 and resp.usage.completion_tokens == 3
    assert upstream.count == 1 and upstream.requests[0]["body"]["model"] == "m"


def test_strategy_is_a_model_id_and_bare_names_resolve(server: LiveServer) -> None:
    client = sdk(server)
    ids = {m.id for m in client.models.list()}
    assert {"ponder/chain", "ponder/later", "up:m"} <= ids
    for name in ("ponder/chain", "chain", "m"):
        resp = client.chat.completions.create(model=name, messages=[{"role": "user", "content": name}])
        assert resp.choices[0].message.content == f"echo: {name}"
        assert resp.model == "up:m"


def test_async_concurrent_requests_each_get_their_own_answer(server: LiveServer, upstream: FakeLLMServer) -> None:
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        try:
            outs = await asyncio.gather(*[client.chat.completions.create(
                model="ponder/chain", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(30)])
        finally:
            await client.close()
        return [o.choices[0].message.content or "" for o in outs]

    answers = asyncio.run(main())
    assert answers == [f"echo: q{i}" for i in range(30)]
    assert sorted(r["body"]["messages"][-1]["content"] for r in upstream.requests) == sorted(f"q{i}" for i in range(30))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["up:m", "ponder/chain", "ponder/later"])
def test_sync_streaming(server: LiveServer, model: str) -> None:
    stream = sdk(server).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "stream me please"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me please"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["ponder"]["model"] == "up:m"
    cost = expected_cost("stream me please", "echo: stream me please")
    assert finals[0].model_extra["ponder"]["cost_usd"] == pytest.approx(cost)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 4
    if model != "ponder/later":  # a directly streamed answer arrives in several deltas
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1


def test_async_streaming(server: LiveServer) -> None:
    async def main() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        try:
            parts: list[str] = []
            async with client.chat.completions.with_streaming_response.create(
                    model="ponder/chain", messages=[{"role": "user", "content": "async stream"}],
                    stream=True) as resp:
                header = resp.headers["x-ponder-model"]
                async for chunk in await resp.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
            return "".join(parts), header
        finally:
            await client.close()

    text, header = asyncio.run(main())
    assert text == "echo: async stream" and header == "up:m"


def test_unknown_model_is_a_404_in_openai_format(server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        sdk(server).chat.completions.create(model="nope:x", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found" and "ponder/chain" in err.value.body["message"]


def test_invalid_body_is_a_400_naming_the_field(server: LiveServer) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "up:m", "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages.0.role"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "up:m", "messages": [{"role": "user", "content": "x"}],
                                                               "tools": [{"type": "function"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools.0.function"


def test_upstream_rate_limit_becomes_429_with_retry_after(server: LiveServer, upstream: FakeLLMServer) -> None:
    from tests.server._serverkit import Action

    upstream.queue(Action(kind="status", status=429, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as err:
        sdk(server).chat.completions.create(model="up:m", messages=[{"role": "user", "content": "x"}])
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.body["type"] == "rate_limit_error"


def test_bearer_auth_and_body_limit(upstream: FakeLLMServer) -> None:
    client = Client(make_config({"up": upstream.url}), cache=False)
    app = create_app(client, {}, models=["up:m"], api_key="server-token-123", max_body_bytes=2000)
    with LiveServer(app) as live:
        with pytest.raises(openai.AuthenticationError) as err:
            sdk(live, api_key="guess-XYZ-987").chat.completions.create(model="up:m", messages=[{"role": "user", "content": "x"}])
        assert "guess-XYZ-987" not in err.value.response.text
        assert httpx.get(live.url + "/metrics").status_code == 401
        assert httpx.get(live.url + "/healthz").json()["status"] == "ok"
        good = sdk(live, api_key="server-token-123")
        assert good.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "ok"}]).choices[0].message.content == "echo: ok"
        big = {"model": "up:m", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(live.url + "/v1/chat/completions", json=big, headers={"authorization": "Bearer server-token-123"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no content-length: the limit is enforced while reading
            yield b'{"model": "up:m", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = httpx.post(live.url + "/v1/chat/completions", content=chunked(),
                       headers={"authorization": "Bearer server-token-123", "content-type": "application/json"})
        assert r.status_code == 413
        assert upstream.count == 1
    client.close()


def test_metrics_count_requests_calls_cost_and_latency(server: LiveServer) -> None:
    client = sdk(server)
    for i in range(3):
        client.chat.completions.create(model="ponder/chain", messages=[{"role": "user", "content": f"m{i}"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    text = httpx.get(server.url + "/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert lines['ponder_requests_total{model="ponder/chain",status="200"}'] == "3"
    assert lines['ponder_requests_total{model="unknown",status="404"}'] == "1"
    assert lines['ponder_model_calls_total{model="up:m",outcome="ok"}'] == "3"
    cost = sum(expected_cost(f"m{i}", f"echo: m{i}") for i in range(3))
    assert float(lines['ponder_cost_usd_total{model="up:m"}']) == pytest.approx(cost)
    assert lines["ponder_request_duration_seconds_count"] == "4"
    assert lines['ponder_request_duration_seconds_bucket{le="+Inf"}'] == "4"


@pytest.mark.slow
def test_in_flight_gauge_returns_to_zero_after_streams_and_disconnects(server: LiveServer, upstream: FakeLLMServer) -> None:
    from tests.server._serverkit import Action

    client = sdk(server)
    for _ in range(2):
        list(client.chat.completions.create(model="up:m", messages=[{"role": "user", "content": "s"}], stream=True))
    upstream.queue(Action(kind="ok", delay_s=0.6))  # the client gives up before the first token
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=0.2,
                          json={"model": "up:m", "messages": [{"role": "user", "content": "gone"}], "stream": True}) as r:
            r.read()
    time.sleep(1.0)
    text = httpx.get(server.url + "/metrics").text
    assert "ponder_requests_in_flight 0\n" in text
    assert "ponder_request_duration_seconds_count 3\n" in text  # the abandoned one is counted too
