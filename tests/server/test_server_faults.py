"""Fault tolerance against upstreams that fail on purpose: down, 429, 5xx, timeouts, malformed,
dropped connections. Each request falls through to the next rung; when every rung fails the caller
gets one clear error; under concurrency no request is lost or duplicated."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from ponder import Client
from ponder.server import FallbackChain, create_app
from tests.server._serverkit import Action, FakeLLMServer, LiveServer, free_port, make_config

FAULTS = {
    "429": (Action(kind="status", status=429, headers={"retry-after": "0.05"}), "RateLimited"),
    "500": (Action(kind="status", status=500), "ProviderUnavailable"),
    "503": (Action(kind="status", status=503), "ProviderUnavailable"),
    "timeout": (Action(kind="ok", delay_s=1.5), "ProviderTimeout"),
    "malformed": (Action(kind="malformed"), "BadResponse"),
    "drop": (Action(kind="drop"), "ProviderUnavailable"),
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeLLMServer, FakeLLMServer]]:
    with FakeLLMServer() as a, FakeLLMServer() as b:
        yield a, b


@pytest.fixture
def upstream(upstreams: tuple[FakeLLMServer, FakeLLMServer]) -> FakeLLMServer:
    return upstreams[0]


@pytest.fixture
def upstream2(upstreams: tuple[FakeLLMServer, FakeLLMServer]) -> FakeLLMServer:
    return upstreams[1]


@pytest.fixture(autouse=True)
def _fresh(upstreams: tuple[FakeLLMServer, FakeLLMServer]) -> None:
    for srv in upstreams:  # each test starts with empty queues and records
        with srv._lock:
            srv.actions.clear()
            srv.requests.clear()


@pytest.fixture(scope="module")
def chain_server(upstreams: tuple[FakeLLMServer, FakeLLMServer]) -> Iterator[LiveServer]:
    a, b = upstreams
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here: "down"
    cfg = make_config({"a": a.url, "b": b.url, "dead": dead}, timeout_s=0.5)
    # Faults (timeouts included) are injected at rung a only: rung b, the fallback that must
    # answer, gets a generous timeout so that 40 fallbacks at once on a loaded machine still do.
    cfg.providers["b"] = cfg.providers["b"].model_copy(update={"timeout_s": 30.0})
    client = Client(cfg, cache=False)
    app = create_app(client, {
        "ab": FallbackChain(["a:m", "b:m"]),
        "dead-b": FallbackChain(["dead:m", "b:m"]),
        "dead-a": FallbackChain(["dead:m", "a:m"]),
        "a-a": FallbackChain(["a:m", "a:m"]),
    })
    with LiveServer(app) as live:
        yield live
    client.close()


def sdk(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def ask(server: LiveServer, model: str, prompt: str, stream: bool = False) -> tuple[str, dict[str, Any], str]:
    """(text, ponder info, x-ponder-model header) from one request."""
    client = sdk(server)
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": prompt}])
        resp = raw.parse()
        return resp.choices[0].message.content or "", resp.model_extra["ponder"], raw.headers["x-ponder-model"]
    with client.chat.completions.with_streaming_response.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True) as raw:
        chunks = list(raw.parse())
        header = raw.headers["x-ponder-model"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    info = next(c.model_extra["ponder"] for c in chunks if c.choices and c.choices[0].finish_reason)
    return text, info, header


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_rung_falls_through_to_the_next(chain_server: LiveServer, upstream: FakeLLMServer,
                                                   upstream2: FakeLLMServer, fault: str, stream: bool) -> None:
    action, error_class = FAULTS[fault]
    upstream.queue(action)
    text, info, header = ask(chain_server, "ponder/ab", f"fault {fault}", stream)
    assert text == f"echo: fault {fault}"
    assert header == "b:m" and info["model"] == "b:m"
    first, second = info["trace"]
    assert first["model"] == "a:m" and not first["accepted"] and first["error"].startswith(error_class)
    assert second["model"] == "b:m" and second["accepted"]
    assert upstream.count == 1 and upstream2.count == 1  # no retries hidden, nothing duplicated


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_down_rung_falls_through(chain_server: LiveServer, upstream2: FakeLLMServer, stream: bool) -> None:
    text, info, header = ask(chain_server, "ponder/dead-b", "anyone there?", stream)
    assert text == "echo: anyone there?" and header == "b:m"
    assert info["trace"][0]["error"].startswith("ProviderUnavailable")
    assert upstream2.count == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_every_rung_failing_gives_one_clear_error(chain_server: LiveServer, upstream: FakeLLMServer,
                                                  stream: bool) -> None:
    upstream.queue(Action(kind="status", status=500))
    with pytest.raises(openai.APIStatusError) as err:
        sdk(chain_server).chat.completions.create(
            model="ponder/dead-a", messages=[{"role": "user", "content": "doomed"}], stream=stream)
    assert err.value.status_code == 502
    body = err.value.body
    assert body["code"] == "all_models_failed" and body["type"] == "upstream_error"
    assert "all 2 models failed" in body["message"]
    assert "dead:m" in body["message"] and "a:m" in body["message"] and "HTTP 500" in body["message"]
    assert upstream.count == 1


def test_every_rung_rate_limited_is_a_429(chain_server: LiveServer, upstream: FakeLLMServer) -> None:
    upstream.queue(Action(kind="status", status=429, headers={"retry-after": "3"}),
                   Action(kind="status", status=429, headers={"retry-after": "2"}))
    with pytest.raises(openai.RateLimitError) as err:
        sdk(chain_server).chat.completions.create(model="ponder/a-a", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "all_models_failed"
    assert float(err.value.response.headers["retry-after"]) == 2.0


@pytest.mark.slow
def test_concurrent_faults_lose_and_duplicate_nothing(chain_server: LiveServer, upstream: FakeLLMServer,
                                                     upstream2: FakeLLMServer) -> None:
    n, n_fail = 80, 40
    rng = random.Random(7)
    kinds = ["429", "500", "503", "malformed", "drop", "timeout"]
    injected = [rng.choice(kinds) for _ in range(n_fail)]
    upstream.queue(*[FAULTS[kind][0] for kind in injected])
    prompts = [f"request {i}" for i in range(n)]

    async def main() -> list[tuple[str, str]]:
        client = openai.AsyncOpenAI(base_url=chain_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        try:
            async def one(p: str) -> tuple[str, str]:
                raw = await client.chat.completions.with_raw_response.create(
                    model="ponder/ab", messages=[{"role": "user", "content": p}])
                return (raw.parse().choices[0].message.content or ""), raw.headers["x-ponder-model"]
            return await asyncio.gather(*[one(p) for p in prompts])
        finally:
            await client.close()

    results = asyncio.run(main())
    assert [text for text, _ in results] == [f"echo: {p}" for p in prompts]  # each its own answer
    a_prompts = [r["body"]["messages"][-1]["content"] for r in upstream.requests]
    b_prompts = [r["body"]["messages"][-1]["content"] for r in upstream2.requests]
    assert len(a_prompts) == len(set(a_prompts))  # no request reached rung 1 twice
    # every request reached rung 1, except (on a loaded machine) one whose 0.5 s timeout ran out
    # before the upstream even read it: that one must have gone on to rung 2
    assert set(prompts) - set(a_prompts) <= set(b_prompts) and set(a_prompts) <= set(prompts)
    # the server pops one queued action per request, in order: these got an error, a dropped
    # connection or a malformed body (a slow answer's timeout depends on the machine's load)
    failed_at_a = {p for p, kind in zip(a_prompts[:n_fail], injected, strict=True) if kind != "timeout"}
    assert len(b_prompts) == len(set(b_prompts))  # no request reached rung 2 twice
    # each such failure went on to rung 2; on a loaded machine a healthy but slow answer from
    # rung 1 may also miss its 0.5 s timeout and fall through, which loses and duplicates nothing
    assert failed_at_a <= set(b_prompts)
    answered_by = {p: model for p, (_, model) in zip(prompts, results, strict=True)}
    assert all(answered_by[p] == ("b:m" if p in b_prompts else "a:m") for p in prompts)
