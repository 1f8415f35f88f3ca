from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

import ponder
from ponder import CachedProvider, ChatRequest, Completion, DiskCacheBackend, Usage, cache_key
from ponder._cache import cache_stats


class CountingProvider:
    """A real (in-process) provider with a known price, counting the calls that reach it."""

    name = "count"
    endpoint = "mem://"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request: ChatRequest, model: str) -> Completion:
        self.calls += 1
        return Completion(text=f"answer {self.calls}", model=model, provider=self.name,
                          usage=Usage(input_tokens=10, output_tokens=5), cost_usd=0.25)

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        return self.complete(request, model)

    def close(self) -> None:
        pass


def test_hit_is_free_and_records_saving(tmp_path: Path):
    backend = DiskCacheBackend(tmp_path / "c")
    inner = CountingProvider()
    p = CachedProvider(inner, backend)
    req = ChatRequest.of("q", temperature=0)
    first = p.complete(req, "m")
    second = p.complete(req, "m")
    assert inner.calls == 1
    assert (first.cached, first.cost_usd) == (False, 0.25)
    assert (second.cached, second.cost_usd, second.saved_usd) == (True, 0.0, 0.25)
    assert second.text == first.text and second.usage == first.usage
    s = cache_stats(backend)
    assert (s.hits, s.misses, s.saved_usd, s.entries) == (1, 1, 0.25, 1)


async def test_async_path_shares_the_cache(tmp_path: Path):
    inner = CountingProvider()
    p = CachedProvider(inner, DiskCacheBackend(tmp_path / "c"))
    a = await p.acomplete(ChatRequest.of("q", temperature=0), "m")
    b = p.complete(ChatRequest.of("q", temperature=0), "m")
    assert inner.calls == 1 and b.cached and b.text == a.text


def test_sampled_requests_are_cached_only_on_opt_in(tmp_path: Path):
    inner = CountingProvider()
    p = CachedProvider(inner, DiskCacheBackend(tmp_path / "c"))
    req = ChatRequest.of("q", temperature=0.7)
    p.complete(req, "m")
    assert not p.complete(req, "m").cached and inner.calls == 2
    opted = CachedProvider(inner, DiskCacheBackend(tmp_path / "d"), cache_sampled=True)
    opted.complete(req, "m")
    assert opted.complete(req, "m").cached and inner.calls == 3


def test_key_depends_on_what_determines_the_answer_only():
    base = dict(provider="openai", endpoint="https://x/v1", model="m", request=ChatRequest.of("q", temperature=0))
    k = cache_key(**base)
    assert k == cache_key(**base)
    assert k != cache_key(**{**base, "model": "m2"})
    assert k != cache_key(**{**base, "endpoint": "https://y/v1"})
    assert k != cache_key(**{**base, "request": ChatRequest.of("q", max_tokens=5)})
    assert k != cache_key(**{**base, "request": ChatRequest.of("q2", temperature=0)})


def test_ttl_expires_entries(tmp_path: Path):
    inner = CountingProvider()
    p = CachedProvider(inner, DiskCacheBackend(tmp_path / "c"), ttl_s=0.3)
    p.complete(ChatRequest.of("q", temperature=0), "m")
    assert p.complete(ChatRequest.of("q", temperature=0), "m").cached
    time.sleep(0.5)
    assert not p.complete(ChatRequest.of("q", temperature=0), "m").cached


def test_broken_backend_degrades_to_no_cache(tmp_path: Path, caplog):
    class Broken:
        def get(self, key): raise ConnectionError("down")
        def set(self, key, value, ttl_s=None): raise ConnectionError("down")
        def incr(self, counter, amount=1): raise ConnectionError("down")
        def counters(self): return {}
        def clear(self): return 0
        def close(self): pass

    inner = CountingProvider()
    p = CachedProvider(inner, Broken())
    with caplog.at_level("WARNING", logger="ponder.cache"):
        assert p.complete(ChatRequest.of("q", temperature=0), "m").text == "answer 1"
        assert p.complete(ChatRequest.of("q", temperature=0), "m").text == "answer 2"
    assert sum("without it" in r.message for r in caplog.records) == 1


def _writer(path: str, worker: int, n: int) -> None:
    backend = DiskCacheBackend(path)
    p = CachedProvider(CountingProvider(), backend)
    for i in range(n):
        p.complete(ChatRequest.of(f"shared-{i % 20}", temperature=0), "m")  # contended keys
        p.complete(ChatRequest.of(f"w{worker}-{i}", temperature=0), "m")  # private keys


def test_several_processes_write_at_once(tmp_path: Path):
    path = str(tmp_path / "c")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
        assert pr.exitcode == 0
    backend = DiskCacheBackend(path)
    assert backend.entries() == 20 + 4 * 40
    for w in range(4):
        for i in range(40):
            key = cache_key(provider="count", endpoint="mem://", model="m", request=ChatRequest.of(f"w{w}-{i}", temperature=0))
            assert Completion.model_validate_json(backend.get(key)).cost_usd == 0.25
    s = cache_stats(backend)
    assert s.hits + s.misses == 4 * 40 * 2


def _endless_writer(path: str) -> None:
    backend = DiskCacheBackend(path)
    i = 0
    payload = b"x" * 200_000  # large values go to files: the slowest kind of write to interrupt
    while True:
        backend.set(f"k{i}", payload)
        i += 1


def test_readable_after_a_writer_is_killed_mid_write(tmp_path: Path):
    path = str(tmp_path / "c")
    ctx = mp.get_context("spawn")
    pr = ctx.Process(target=_endless_writer, args=(path,))
    pr.start()
    deadline = time.time() + 30
    while time.time() < deadline and DiskCacheBackend(path).entries() < 20:
        time.sleep(0.05)
    os.kill(pr.pid, signal.SIGKILL)
    pr.join()
    backend = DiskCacheBackend(path)
    n = backend.entries()
    assert n >= 20
    assert all(backend.get(f"k{i}") == b"x" * 200_000 for i in range(n - 1))
    backend.set("after", b"ok")
    assert backend.get("after") == b"ok"


def test_client_cache_can_be_disabled(tmp_path: Path):
    c = ponder.Client(cache=False)
    assert c.cache is None
    with pytest.raises(ponder.PonderError):
        c.cache_stats()
