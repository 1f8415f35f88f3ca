"""The Redis cache backend against a real redis-server: sharing, concurrent writers in several
processes, and Redis going away mid-run (degrades to no cache with one warning, never an error)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import openai
import pytest

from ponder import Client
from ponder._redis_cache import RedisBackend
from ponder.server import create_app
from tests.server._serverkit import FakeLLMServer, LiveServer, make_config, start_redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def backend(redis_url: str) -> RedisBackend:
    b = RedisBackend(redis_url)
    b.clear()
    return b


def test_roundtrip_ttl_counters_and_clear(backend: RedisBackend) -> None:
    assert backend.get("ponder:missing") is None
    backend.set("ponder:a", b"\x00bytes\xff")
    backend.set("ponder:b", b"short-lived", ttl_s=0.2)
    assert backend.get("ponder:a") == b"\x00bytes\xff" and backend.get("ponder:b") == b"short-lived"
    time.sleep(0.3)
    assert backend.get("ponder:b") is None
    backend.incr("hits", 2)
    backend.incr("misses")
    assert backend.counters() == {"hits": 2, "misses": 1, "saved_nano_usd": 0}
    assert backend.entries() == 1
    assert backend.clear() == 1 and backend.get("ponder:a") is None
    assert backend.counters()["hits"] == 0


def test_two_clients_share_one_cache(redis_url: str, backend: RedisBackend, upstream: FakeLLMServer) -> None:
    cfg = make_config({"up": upstream.url}, cache={"enabled": True, "backend": "redis", "url": redis_url})
    with Client(cfg) as first, Client(cfg) as second:
        paid = first.complete("shared question", model="up:m", temperature=0)
        free = second.complete("shared question", model="up:m", temperature=0)
    assert not paid.cached and paid.cost_usd > 0
    assert free.cached and free.cost_usd == 0 and free.saved_usd == pytest.approx(paid.cost_usd)
    assert free.text == paid.text and upstream.count == 1


WRITER = textwrap.dedent("""
    import json, sys
    from ponder import Client, Config
    from ponder._redis_cache import RedisBackend
    url, base, proc = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = Config.model_validate({"providers": {"up": {"type": "openai", "base_url": base, "max_retries": 0}},
                                 "cache": {"enabled": True, "backend": "redis", "url": url}})
    backend = RedisBackend(url)
    for j in range(200):
        backend.set(f"ponder:writer:{proc}:{j}", json.dumps([proc, j]).encode())
        backend.set("ponder:contended", json.dumps([proc, j]).encode())
        backend.incr("writes")
    with Client(cfg) as client:
        texts = [client.complete(f"q{k}", model="up:m", temperature=0).text for k in range(20)]
    assert texts == [f"echo: q{k}" for k in range(20)], texts
    print("done", proc)
""")


@pytest.mark.slow
def test_concurrent_writers_in_several_processes(redis_url: str, backend: RedisBackend,
                                                 upstream: FakeLLMServer) -> None:
    n_proc = 4
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, redis_url, upstream.url, str(p)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in range(n_proc)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    for p in range(n_proc):  # every write by every process landed, intact
        for j in range(200):
            assert json.loads(backend.get(f"ponder:writer:{p}:{j}") or b"null") == [p, j]
    last = json.loads(backend.get("ponder:contended") or b"null")
    assert last[1] == 199  # whichever process wrote last, its value is whole
    raw = backend._redis.hget("ponder:stats", "writes")
    assert int(raw) == n_proc * 200  # counters are atomic across processes
    c = backend.counters()
    assert c["hits"] + c["misses"] == n_proc * 20  # one lookup per completion, none lost
    assert upstream.count == c["misses"] and c["misses"] >= 20  # each miss paid once, each hit free
    with Client(make_config({"up": upstream.url}, cache={"enabled": True, "backend": "redis", "url": redis_url})) as client:
        again = [client.complete(f"q{k}", model="up:m", temperature=0) for k in range(20)]
    assert all(a.cached and a.cost_usd == 0 for a in again)


def test_redis_going_away_degrades_to_no_cache_with_one_warning(upstream: FakeLLMServer,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    proc, url = start_redis()
    backend = RedisBackend(url, retry_s=0.3)
    cfg = make_config({"up": upstream.url}, cache={"enabled": True})
    client = Client(cfg, cache=backend)
    try:
        assert not client.complete("before", model="up:m", temperature=0).cached
        assert client.complete("before", model="up:m", temperature=0).cached
        proc.kill()
        proc.wait(timeout=10)
        caplog.set_level(logging.WARNING, logger="ponder.cache")
        start = time.perf_counter()
        answers = [client.complete(f"during {i}", model="up:m", temperature=0) for i in range(20)]
        elapsed = time.perf_counter() - start
        assert [a.text for a in answers] == [f"echo: during {i}" for i in range(20)]
        assert not any(a.cached for a in answers)
        again = client.complete("before", model="up:m", temperature=0)  # was cached; now answered live
        assert again.text == "echo: before" and not again.cached
        warnings = [r for r in caplog.records if r.name == "ponder.cache"]
        assert len(warnings) == 1 and "cache unavailable" in warnings[0].getMessage()
        assert elapsed < 5.0  # short timeouts + open circuit: a dead Redis does not stall requests
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()


def test_a_restarted_redis_is_used_again(upstream: FakeLLMServer) -> None:
    proc, url = start_redis()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    client = Client(make_config({"up": upstream.url}, cache={"enabled": True}),
                    cache=RedisBackend(url, retry_s=0.2))
    try:
        proc.kill()
        proc.wait(timeout=10)
        assert not client.complete("while down", model="up:m", temperature=0).cached  # degraded, answered live
        proc, _ = start_redis(port=port)
        time.sleep(0.3)  # past the open-circuit window
        client.complete("after restart", model="up:m", temperature=0)
        again = client.complete("after restart", model="up:m", temperature=0)
        assert again.cached and upstream.count == 2
    finally:
        client.close()
        proc.kill()


def test_server_keeps_answering_when_redis_dies(upstream: FakeLLMServer) -> None:
    proc, url = start_redis()
    client = Client(make_config({"up": upstream.url}, cache={"enabled": True, "backend": "redis", "url": url}))
    try:
        with LiveServer(create_app(client, {}, models=["up:m"])) as live:
            sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
            ask = lambda p: sdk.chat.completions.with_raw_response.create(  # noqa: E731
                model="up:m", messages=[{"role": "user", "content": p}], temperature=0)
            ask("warm")
            assert ask("warm").headers["x-ponder-cached"] == "true"
            proc.kill()
            proc.wait(timeout=10)
            for i in range(5):
                r = ask(f"after {i}")
                assert r.status_code == 200 and r.parse().choices[0].message.content == f"echo: after {i}"
                assert r.headers["x-ponder-cached"] == "false"
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
