"""Where keys go, what error texts may say about them, and streamed requests that fail early.

Real SDKs over real HTTP against tests/fakeserver.py on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import secrets
import time

import pytest

import ponder
from ponder import ChatRequest, Client, Config, ProviderSettings
from ponder._pricing import PriceTable
from ponder._secrets import (
    SecretFilter,
    forget_secrets,
    install_log_scrubbing,
    register_secret,
    scrub,
)
from ponder.providers import build_provider
from tests.fakeserver import Action

MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
DEFAULT_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@pytest.fixture(autouse=True)
def _fresh_secrets():
    """Keys planted by one test must not redact words in the next one's messages."""
    forget_secrets()
    yield
    forget_secrets()


def base(kind: str, srv) -> str:
    return srv.url if kind == "openai" else srv.base


def build(kind: str, srv, **kw):
    settings = ProviderSettings(type=kind, base_url=base(kind, srv), backoff_initial_s=0.01,
                                backoff_max_s=2.0, **kw)
    return build_provider(f"my{kind}", settings, PriceTable.default())


def random_key(prefix: str = "sk-proj-") -> str:
    return prefix + secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")


# --- 1. a key goes only where the user pointed it ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_default_env_key_is_not_sent_to_a_custom_base_url(fake_server, monkeypatch, kind):
    vendor_key = random_key()
    monkeypatch.setenv(DEFAULT_ENV[kind], vendor_key)
    p = build(kind, fake_server)  # like [providers.vllm] type = "openai", base_url = "http://..."
    assert p.complete(ChatRequest.of("hi"), MODEL[kind]).text == "echo: hi"
    sent = fake_server.auth_headers()[-1]
    assert vendor_key not in sent and "not-needed" in sent


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_explicit_api_key_env_goes_to_its_base_url(fake_server, monkeypatch, kind):
    vendor_key, own_key = random_key(), random_key("")
    monkeypatch.setenv(DEFAULT_ENV[kind], vendor_key)
    monkeypatch.setenv("MY_VLLM_KEY", own_key)
    p = build(kind, fake_server, api_key_env="MY_VLLM_KEY")
    p.complete(ChatRequest.of("hi"), MODEL[kind])
    sent = fake_server.auth_headers()[-1]
    assert own_key in sent and vendor_key not in sent


def test_base_url_override_sends_no_vendor_key(fake_server, monkeypatch):
    """``ponder ask --base-url URL`` and ``ponder serve --base-url URL`` go through Client.base_urls."""
    vendor_key = random_key()
    monkeypatch.setenv("OPENAI_API_KEY", vendor_key)
    with Client(Config(), cache=False, base_urls={"openai": fake_server.url}) as client:
        assert client.complete("hi", model="openai:gpt-4o-mini").text == "echo: hi"
    assert vendor_key not in fake_server.auth_headers()[-1]


def test_vendor_key_goes_with_the_base_url_set_beside_it(fake_server, monkeypatch):
    """OPENAI_BASE_URL and OPENAI_API_KEY set together in the environment belong together."""
    vendor_key = random_key()
    monkeypatch.setenv("OPENAI_API_KEY", vendor_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.url)
    p = build_provider("openai", ProviderSettings(), PriceTable.default())
    p.complete(ChatRequest.of("hi"), "gpt-4o-mini")
    assert vendor_key in fake_server.auth_headers()[-1]


def test_api_key_env_naming_an_empty_variable_is_an_auth_error(fake_server, monkeypatch):
    monkeypatch.delenv("MY_VLLM_KEY", raising=False)
    with pytest.raises(ponder.AuthError, match="MY_VLLM_KEY"):
        build("openai", fake_server, api_key_env="MY_VLLM_KEY")


# --- 2. streams are retried until their first token, never after ---------------------------------
async def collect(p, kind: str, asynchronous: bool, prompt: str = "stream this please") -> list:
    req = ChatRequest.of(prompt)
    if asynchronous:
        return [x async for x in p.astream(req, MODEL[kind])]
    return list(p.stream(req, MODEL[kind]))


BOTH = pytest.mark.parametrize("kind,asynchronous", [(k, a) for k in ("openai", "anthropic")
                                                     for a in (False, True)])


@pytest.mark.slow
@BOTH
async def test_stream_429_before_first_token_is_retried_after_retry_after(fake_server, kind, asynchronous):
    p = build(kind, fake_server, api_key="k-" + secrets.token_hex(8))
    fake_server.fail_first(1, Action(kind="status", status=429, headers={"retry-after": "0.5"},
                                     body={"error": {"message": "slow down", "type": "rate_limit_error"}}))
    t0 = time.perf_counter()
    *deltas, final = await collect(p, kind, asynchronous)
    assert "".join(deltas) == final.text == "echo: stream this please"
    assert time.perf_counter() - t0 >= 0.45  # waited for Retry-After, not the 10 ms backoff
    assert fake_server.count == 2


@pytest.mark.slow
@BOTH
async def test_stream_5xx_drop_and_timeout_before_first_token_are_retried(fake_server, kind, asynchronous):
    p = build(kind, fake_server, api_key="k-" + secrets.token_hex(8), max_retries=3, timeout_s=0.5)
    fake_server.queue(Action(kind="status", status=503), Action(kind="drop"), Action(delay_s=1.5))
    *deltas, final = await collect(p, kind, asynchronous)
    assert final.text == "echo: stream this please"
    assert fake_server.count == 4  # three failures, then the answer


@pytest.mark.slow
@BOTH
async def test_stream_gives_up_after_max_retries(fake_server, kind, asynchronous):
    p = build(kind, fake_server, api_key="k-" + secrets.token_hex(8), max_retries=2)
    fake_server.fail_first(3, Action(kind="status", status=500))
    with pytest.raises(ponder.ProviderUnavailable, match="500"):
        await collect(p, kind, asynchronous)
    assert fake_server.count == 3  # 1 + max_retries attempts


@pytest.mark.slow
@BOTH
async def test_stream_failing_after_a_token_is_not_retried(fake_server, kind, asynchronous):
    p = build(kind, fake_server, api_key="k-" + secrets.token_hex(8), max_retries=3)
    fake_server.queue(Action(kind="cut"))
    got: list = []
    req = ChatRequest.of("stream this please")
    with pytest.raises(ponder.ProviderError):
        if asynchronous:
            async for x in p.astream(req, MODEL[kind]):
                got.append(x)
        else:
            for x in p.stream(req, MODEL[kind]):
                got.append(x)
    assert got == ["echo"]  # the caller had the first delta ...
    assert fake_server.count == 1  # ... so nothing was sent again


# --- 3. no fragment of a key in any error text ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("prefix", ["sk-proj-", "gsk_", ""])
def test_error_texts_hold_no_fragment_of_the_key(fake_server, kind, prefix):
    key = random_key(prefix)
    p = build(kind, fake_server, api_key=key)
    echoes = (f"sk-...{key[-4:]}", key[-6:], key.upper(), key[:8] if prefix else key[2:10], key[5:15])
    for status, error in ((401, ponder.AuthError), (400, ponder.ProviderError), (429, ponder.RateLimited)):
        fake_server.queue(Action(kind="status", status=status, body={"error": {
            "message": "Incorrect API key provided: " + " / ".join(echoes), "type": "invalid_request_error"}}))
        with pytest.raises(error) as info:
            build(kind, fake_server, api_key=key, max_retries=0).complete(ChatRequest.of("x"), MODEL[kind])
        exc = info.value
        texts = [str(exc), repr(exc), repr(exc.args), str(exc.reason)]
        for text in texts:
            low = text.lower()
            for echo in echoes:
                assert echo.lower()[-4:] not in low, (echo, text)
            assert key.lower()[-4:] not in low
    p.close()


def test_any_ponder_error_is_scrubbed_when_built():
    key = random_key("tok")
    register_secret(key)
    for exc in (ponder.ConfigError(f"bad value {key[3:12]}", key="providers.x.api_key"),
                ponder.DataError(f"row says {key.upper()}", row=3),
                ponder.ProviderError(f"failed with sk-...{key[-4:]}", provider="p", model="m"),
                ponder.AllModelsFailed([("m", ponder.ProviderError(key[-6:]))])):
        for text in (str(exc), repr(exc), str(getattr(exc, "reason", ""))):
            assert key[-4:].lower() not in text.lower() and "[redacted]" in text


def test_public_prefixes_and_ordinary_words_survive():
    for prefix in ("sk-proj-", "sk-ant-api03-", "sk-svcacct-"):
        register_secret(random_key(prefix))
    text = "proj, ant-api03 and svcacct are public words; projects have an api03 endpoint"
    assert scrub(text) == text
    assert scrub(scrub(f"x {random_key()} y")) == scrub(f"x {random_key()} y") == "x [redacted] y"


def test_log_records_are_scrubbed():
    key = random_key("")
    register_secret(key)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(SecretFilter())
    log = logging.getLogger("ponder.test_keys")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("upstream said %s (%r)", key.upper(), {"k": key[-6:]})
        record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                   ("127.0.0.1:5", "GET", f"/v1/models?key={key}", "1.1", 200), None)
        handler.handle(record)
        assert isinstance(record.args, tuple) and len(record.args) == 5  # uvicorn's formatter reads them
        try:
            raise RuntimeError(f"boom {key}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    out = buf.getvalue()
    assert "[redacted]" in out and "boom" in out and "Traceback" in out
    assert key[-4:].lower() not in out.lower()


def test_install_log_scrubbing_covers_uvicorn_handlers():
    key = random_key("srv-")
    register_secret(key)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)  # setLevel, not .level =: it clears the logger's enabled-for cache
    try:
        install_log_scrubbing()
        install_log_scrubbing()  # twice is harmless
        assert len(handler.filters) == 1
        access.info("GET /?token=%s", key)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert key[-4:] not in buf.getvalue() and "[redacted]" in buf.getvalue()


# --- 4. one semaphore per live event loop, not per loop ever seen ---------------------------------
@pytest.mark.slow
def test_async_slots_do_not_grow_with_event_loops(fake_server):
    p = build("openai", fake_server, api_key="k-" + secrets.token_hex(8), max_concurrency=1)

    async def two() -> None:  # two at once, so the semaphore really waits (and binds its loop)
        await asyncio.gather(*(p.acomplete(ChatRequest.of(f"q{i}"), "m") for i in range(2)))
        await p.aclose()  # the SDK's async client belongs to one loop

    loops = []
    for _ in range(20):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(two())
        loop.close()
        loops.append(loop)  # kept alive: only pruning can shrink the table
    gc.collect()
    assert len(p._async_slots) <= 1
    assert fake_server.count == 40


# --- 5. a huge body is sent whole, built without the SDK's per-message transform ----------------
@pytest.mark.slow
async def test_huge_request_is_sent_whole(fake_server):
    p = build("openai", fake_server, api_key="k-" + secrets.token_hex(8))
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(115_000)]
    msgs.append({"role": "user", "content": "last"})
    c = await p.acomplete(ChatRequest.of(msgs), "m")
    assert c.text == "echo: last"
    assert len(fake_server.requests[-1]["body"]["messages"]) == 115_001
