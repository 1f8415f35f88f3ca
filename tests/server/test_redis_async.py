"""The Redis cache on the async path (redis.asyncio: a slow Redis never blocks the event loop) and
its outages: each one, and each recovery, is reported once."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from ponder import Client
from ponder._redis_cache import RedisBackend
from tests.server._serverkit import FakeLLMServer, make_config, start_redis


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers: a hung Redis."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"redis://127.0.0.1:{s.getsockname()[1]}/0"


class _NoSync:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the sync redis client was used on the async path ({name})")


@pytest.mark.slow
def test_a_hung_redis_does_not_block_the_event_loop(silent_redis: str, upstream: FakeLLMServer) -> None:
    backend = RedisBackend(silent_redis, timeout_s=1.0, retry_s=60)
    client = Client(make_config({"up": upstream.url}, cache={"enabled": True}), cache=backend)

    async def main() -> tuple[str, float, float]:
        beats: list[float] = []

        async def heartbeat() -> None:
            while True:
                beats.append(time.perf_counter())
                await asyncio.sleep(0.01)

        # warm the provider's own async client first (not cached: temperature > 0), so what is timed
        # below is the cache lookup alone
        await client.acomplete("warm-up", model="up:m", temperature=0.5)
        hb = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        answer = await client.acomplete("hello", model="up:m", temperature=0)
        took = time.perf_counter() - start
        await asyncio.sleep(0.05)
        hb.cancel()
        await client.aclose()
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        return answer.text, took, max(gaps)

    text, took, worst_gap = asyncio.run(main())
    client.close()
    assert text == "echo: hello"
    assert took >= 0.9  # the lookup really waited on the hung Redis ...
    assert worst_gap < 0.5  # ... while the loop went on running other tasks (10 ms ticks)


def test_async_hits_across_event_loops_use_redis_asyncio(redis_url: str, upstream: FakeLLMServer) -> None:
    backend = RedisBackend(redis_url)
    backend.clear()
    sync_client, backend._redis = backend._redis, _NoSync()
    client = Client(make_config({"up": upstream.url}, cache={"enabled": True}), cache=backend)

    async def ask() -> list[bool]:
        try:
            answers = [await client.acomplete("shared", model="up:m", temperature=0) for _ in range(2)]
            streamed = [item async for item in client.astream("streamed", model="up:m", temperature=0)]
            return [a.cached for a in answers] + [streamed[-1].cached]  # type: ignore[union-attr]
        finally:
            await client.aclose()

    assert asyncio.run(ask()) == [False, True, False]
    assert asyncio.run(ask()) == [True, True, True]  # a second loop gets its own connections
    assert upstream.count == 2
    backend._redis = sync_client
    assert backend.counters()["hits"] == 4 and backend.counters()["misses"] == 2
    client.close()


def _states(caplog: pytest.LogCaptureFixture) -> list[str]:
    return ["down" if "cache unavailable" in r.getMessage() else "up" if "recovered" in r.getMessage()
            else r.getMessage() for r in caplog.records if r.name == "ponder.cache"]


@pytest.mark.slow
@pytest.mark.parametrize("use_async", [False, True])
def test_each_outage_and_each_recovery_warns_once(upstream: FakeLLMServer, caplog: pytest.LogCaptureFixture,
                                                  use_async: bool) -> None:
    proc, url = start_redis()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    # A generous socket timeout: this test is about outages (refused connections fail at once),
    # and the 0.25 s default can expire on a loaded 2-core box while Redis is up (seen once).
    backend = RedisBackend(url, retry_s=0.2, timeout_s=2.0)
    client = Client(make_config({"up": upstream.url}, cache={"enabled": True}), cache=backend)
    caplog.set_level(logging.WARNING, logger="ponder.cache")

    def ask(prompt: str, n: int = 3) -> list[bool]:
        if use_async:
            async def main() -> list[bool]:
                try:
                    return [(await client.acomplete(prompt, model="up:m", temperature=0)).cached
                            for _ in range(n)]
                finally:
                    await client.aclose()
            return asyncio.run(main())
        return [client.complete(prompt, model="up:m", temperature=0).cached for _ in range(n)]

    try:
        assert ask("a") == [False, True, True]
        for outage in range(2):
            proc.kill()
            proc.wait(timeout=10)
            assert ask(f"down {outage}") == [False, False, False]
            time.sleep(0.3)  # past the open circuit: still down, still no second warning
            assert ask(f"down {outage}", 1) == [False]
            proc, _ = start_redis(port=port)
            time.sleep(0.3)
            assert ask(f"up {outage}") == [False, True, True]
        assert _states(caplog) == ["down", "up", "down", "up"]
        down = next(r.getMessage() for r in caplog.records if "unavailable" in r.getMessage())
        assert f"127.0.0.1:{port}" in down and "continuing without it" in down
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()


def test_the_password_of_a_redis_url_stays_out_of_warnings(silent_redis: str, upstream: FakeLLMServer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    url = silent_redis.replace("redis://", "redis://user:hunter2-secret@")
    client = Client(make_config({"up": upstream.url}, cache={"enabled": True}),
                    cache=RedisBackend(url, timeout_s=0.1))
    caplog.set_level(logging.WARNING, logger="ponder.cache")
    try:
        assert client.complete("q", model="up:m", temperature=0).text == "echo: q"
    finally:
        client.close()
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "cache unavailable" in text and "user:[redacted]@127.0.0.1" in text and "hunter2" not in text
