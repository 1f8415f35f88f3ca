"""Providers through the official openai and anthropic SDKs, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time

import pytest

import ponder
from ponder import ChatRequest, ProviderSettings
from ponder._pricing import PriceTable
from ponder.providers import RetryPolicy, build_provider, retry_delay
from tests.fakeserver import Action

KEY = "sk-test-planted-key-0123456789"


def make(kind: str, srv, **kw):
    base = srv.url if kind == "openai" else srv.base
    settings = ProviderSettings(type=kind, base_url=base, api_key=KEY, backoff_initial_s=0.01,
                                backoff_max_s=2.0, **kw)
    return build_provider(kind, settings, PriceTable.default())


MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_completion_cost_and_usage(fake_server, kind):
    p = make(kind, fake_server)
    c = p.complete(ChatRequest.of("hello world"), MODEL[kind])
    assert c.text == "echo: hello world"
    assert c.provider == kind and c.model == MODEL[kind] and not c.cached
    assert (c.usage.input_tokens, c.usage.output_tokens) == (2, 3)
    price = PriceTable.default().lookup(kind, MODEL[kind])
    assert c.cost_usd == pytest.approx((2 * price.input + 3 * price.output) / 1e6)
    assert c.latency_s > 0 and c.finish_reason in ("stop", "end_turn")
    # the key went over the wire as a header, and the request body never carries it
    req = fake_server.requests[-1]
    assert KEY not in str(req["body"])
    p.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_streaming_yields_deltas_then_priced_completion(fake_server, kind):
    p = make(kind, fake_server)
    items = list(p.stream(ChatRequest.of("stream this please"), MODEL[kind]))
    *deltas, final = items
    assert len(deltas) > 1 and "".join(deltas) == "echo: stream this please"
    assert isinstance(final, ponder.Completion) and final.text == "".join(deltas)
    assert final.usage.output_tokens == 4 and final.cost_usd > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_async_and_async_streaming(fake_server, kind):
    p = make(kind, fake_server)
    c = await p.acomplete(ChatRequest.of("async hello"), MODEL[kind])
    assert c.text == "echo: async hello"
    items = [x async for x in p.astream(ChatRequest.of("async stream"), MODEL[kind])]
    assert items[-1].text == "echo: async stream"
    await p.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_429_retry_after_is_honoured(fake_server, kind):
    p = make(kind, fake_server)
    fake_server.queue(Action(kind="status", status=429, headers={"retry-after": "0.6"},
                             body={"error": {"message": "slow down", "type": "rate_limit_error"}}))
    t0 = time.perf_counter()
    c = p.complete(ChatRequest.of("again"), MODEL[kind])
    assert c.text == "echo: again"
    assert time.perf_counter() - t0 >= 0.55  # waited for Retry-After, not the 10 ms backoff
    assert fake_server.count == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_5xx_retried_then_gives_up_with_clear_error(fake_server, kind):
    p = make(kind, fake_server, max_retries=2)
    fake_server.queue(Action(kind="status", status=500))
    assert p.complete(ChatRequest.of("x"), MODEL[kind]).text == "echo: x"
    fake_server.queue(*[Action(kind="status", status=503)] * 3)
    with pytest.raises(ponder.ProviderUnavailable) as exc:
        p.complete(ChatRequest.of("y"), MODEL[kind])
    assert exc.value.provider == kind and exc.value.model == MODEL[kind]
    assert "503" in str(exc.value)
    assert fake_server.count == 2 + 3  # 1 retry + success, then 1 try + 2 retries


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_auth_error_never_shows_the_key(fake_server, kind):
    p = make(kind, fake_server)
    fake_server.queue(Action(kind="status", status=401, body={"error": {
        "message": f"Incorrect API key provided: {KEY}. Also sk-abc1****wxyz", "type": "authentication_error"}}))
    with pytest.raises(ponder.AuthError) as exc:
        p.complete(ChatRequest.of("x"), MODEL[kind])
    assert KEY not in str(exc.value) and "sk-abc1" not in str(exc.value)
    assert fake_server.count == 1  # auth errors are not retried


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_context_too_long(fake_server, kind):
    p = make(kind, fake_server)
    fake_server.queue(Action(kind="status", status=400, body={"error": {
        "message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error",
        "code": "context_length_exceeded"}}))
    with pytest.raises(ponder.ContextTooLong):
        p.complete(ChatRequest.of("x"), MODEL[kind])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_malformed_json_is_a_bad_response(fake_server, kind):
    p = make(kind, fake_server, max_retries=0)
    fake_server.queue(Action(kind="malformed"))
    with pytest.raises(ponder.BadResponse):
        p.complete(ChatRequest.of("x"), MODEL[kind])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_slow_answer_times_out(fake_server, kind):
    p = make(kind, fake_server, timeout_s=0.3, max_retries=0)
    fake_server.queue(Action(delay_s=1.5))
    with pytest.raises(ponder.ProviderTimeout):
        p.complete(ChatRequest.of("x"), MODEL[kind])


def test_unreachable_server_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ProviderSettings(type="openai", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1,
                                backoff_initial_s=0.01)
    p = build_provider("openai", settings, PriceTable.default())
    with pytest.raises(ponder.ProviderUnavailable, match="cannot connect"):
        p.complete(ChatRequest.of("x"), "m")


def test_missing_key_is_an_auth_error_at_build_time():
    with pytest.raises(ponder.AuthError, match="OPENAI_API_KEY"):
        build_provider("openai", ProviderSettings(), PriceTable.default())
    with pytest.raises(ponder.AuthError, match="ANTHROPIC_API_KEY"):
        build_provider("anthropic", ProviderSettings(), PriceTable.default())


def test_concurrency_limit_per_provider(fake_server):
    p = make("openai", fake_server, max_concurrency=2)
    fake_server.default = Action(delay_s=0.2)
    live, peak, lock = [0], [0], threading.Lock()
    orig = p._send

    def counting(req, model):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            return orig(req, model)
        finally:
            with lock:
                live[0] -= 1

    p._send = counting  # observe in-flight calls; the real HTTP call still happens
    threads = [threading.Thread(target=p.complete, args=(ChatRequest.of(f"q{i}"), "m")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and fake_server.count == 6


@pytest.mark.slow
async def test_async_concurrency_limit(fake_server):
    p = make("openai", fake_server, max_concurrency=3)
    fake_server.default = Action(delay_s=0.3)
    t0 = time.perf_counter()
    await asyncio.gather(*[p.acomplete(ChatRequest.of(f"q{i}"), "m") for i in range(6)])
    # 6 requests, 3 at a time, 0.3 s each: two waves
    assert time.perf_counter() - t0 >= 0.55


def test_retry_delay_policy():
    pol = RetryPolicy(max_retries=3, initial_s=1.0, max_s=10.0, jitter=0.0)
    err = ponder.ProviderUnavailable("x")
    assert [retry_delay(pol, a, err) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, None]
    assert retry_delay(pol, 1, ponder.AuthError("x")) is None
    assert retry_delay(pol, 1, ponder.RateLimited("x", retry_after=7.0)) == 7.0
    assert retry_delay(pol, 1, ponder.RateLimited("x", retry_after=99.0)) == 10.0
    jit = RetryPolicy(initial_s=1.0, jitter=0.25)
    rng = random.Random(0)
    ds = [retry_delay(jit, 1, err, rng) for _ in range(200)]
    assert 0.75 <= min(ds) < max(ds) <= 1.25
