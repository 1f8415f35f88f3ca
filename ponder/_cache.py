"""The completion cache: a get/set backend Protocol, a diskcache backend, and a caching wrapper.

A hit costs 0 and records the cost it saved. Keys hash what determines the answer (provider,
endpoint, model, messages, sampling parameters) and never a credential; values hold the answer,
its usage and its original cost, never a credential.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ._types import ChatRequest, Completion

log = logging.getLogger("ponder.cache")

KEY_VERSION = 1
_NANO = 1_000_000_000  # saved cost is counted in nano-USD so counters stay integers


@runtime_checkable
class CacheBackend(Protocol):
    """Bytes in, bytes out. Implementations must be safe for several processes at once."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    def incr(self, counter: str, amount: int = 1) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def clear(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    saved_usd: float
    entries: int | None = None
    size_bytes: int | None = None

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class DiskCacheBackend:
    """diskcache (SQLite + files): atomic writes, safe with many processes, survives kill -9."""

    def __init__(self, path: str | Path, *, size_limit_mb: int = 1024) -> None:
        import diskcache

        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(self.path), size_limit=size_limit_mb * 1024 * 1024,
                                      eviction_policy="least-recently-stored", timeout=60)
        self._stats = diskcache.Cache(str(self.path / "stats"), timeout=60)

    def get(self, key: str) -> bytes | None:
        value = self._cache.get(key)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._cache.set(key, value, expire=ttl_s)

    def incr(self, counter: str, amount: int = 1) -> None:
        self._stats.incr(counter, amount, default=0)

    def counters(self) -> dict[str, int]:
        return {k: int(self._stats.get(k, 0)) for k in ("hits", "misses", "saved_nano_usd")}

    def clear(self) -> int:
        n = self._cache.clear()
        self._stats.clear()
        return n

    def entries(self) -> int:
        return len(self._cache)

    def volume(self) -> int:
        return int(self._cache.volume())

    def close(self) -> None:
        self._cache.close()
        self._stats.close()


def cache_key(*, provider: str, endpoint: str, model: str, request: ChatRequest) -> str:
    """A stable hash of everything that determines the answer, and nothing secret."""
    payload = {
        "v": KEY_VERSION,
        "provider": provider,
        "endpoint": endpoint,
        "model": model,
        "messages": [[m.role, m.content] for m in request.messages],
        "params": request.sampling(),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "ponder:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _encode(c: Completion) -> bytes:
    return c.model_dump_json(include={"text", "model", "provider", "usage", "cost_usd",
                                      "cost_estimated", "finish_reason"}).encode("utf-8")


def _decode(raw: bytes) -> Completion | None:
    try:
        return Completion.model_validate_json(raw)
    except ValueError:
        return None  # a corrupt or foreign entry is a miss, not an error


class CachedProvider:
    """Wraps any provider; identical requests are answered from the cache for free.

    Requests with temperature > 0 are cached only when ``cache_sampled`` is set. A backend that
    fails (e.g. Redis going away) degrades to no cache with a warning, never to an error.
    """

    def __init__(self, provider: Any, backend: CacheBackend, *, ttl_s: float | None = None,
                 cache_sampled: bool = False) -> None:
        self.provider = provider
        self.backend = backend
        self.ttl_s = ttl_s
        self.cache_sampled = cache_sampled
        self.name = provider.name
        self._warned = False

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("cache unavailable, continuing without it: %s", type(exc).__name__)
            self._warned = True

    def _key(self, request: ChatRequest, model: str) -> str | None:
        if request.temperature > 0 and not self.cache_sampled:
            return None
        return cache_key(provider=self.name, endpoint=getattr(self.provider, "endpoint", ""),
                         model=model, request=request)

    def _lookup(self, key: str | None, start: float) -> Completion | None:
        if key is None:
            return None
        try:
            raw = self.backend.get(key)
            hit = _decode(raw) if raw is not None else None
            self.backend.incr("hits" if hit else "misses")
            if hit is None:
                return None
            self.backend.incr("saved_nano_usd", int(round(hit.cost_usd * _NANO)))
        except Exception as exc:  # noqa: BLE001 - any backend failure means "no cache"
            self._warn(exc)
            return None
        return hit.model_copy(update={"cached": True, "saved_usd": hit.cost_usd, "cost_usd": 0.0,
                                      "latency_s": time.perf_counter() - start})

    def _store(self, key: str | None, completion: Completion) -> None:
        if key is None:
            return
        try:
            self.backend.set(key, _encode(completion), self.ttl_s)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def complete(self, request: ChatRequest, model: str) -> Completion:
        start = time.perf_counter()
        key = self._key(request, model)
        hit = self._lookup(key, start)
        if hit is not None:
            return hit
        completion = self.provider.complete(request, model)
        self._store(key, completion)
        return completion

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        start = time.perf_counter()
        key = self._key(request, model)
        hit = self._lookup(key, start)
        if hit is not None:
            return hit
        completion = await self.provider.acomplete(request, model)
        self._store(key, completion)
        return completion

    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        start = time.perf_counter()
        key = self._key(request, model)
        hit = self._lookup(key, start)
        if hit is not None:
            yield hit.text
            yield hit
            return
        for item in self.provider.stream(request, model):
            if isinstance(item, Completion):
                self._store(key, item)
            yield item

    async def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        start = time.perf_counter()
        key = self._key(request, model)
        hit = self._lookup(key, start)
        if hit is not None:
            yield hit.text
            yield hit
            return
        async for item in self.provider.astream(request, model):
            if isinstance(item, Completion):
                self._store(key, item)
            yield item

    def close(self) -> None:
        self.provider.close()

    async def aclose(self) -> None:
        closer = getattr(self.provider, "aclose", None)
        if closer is not None:
            await closer()
        else:
            self.provider.close()


def cache_stats(backend: CacheBackend) -> CacheStats:
    c = backend.counters()
    entries = backend.entries() if hasattr(backend, "entries") else None
    size = backend.volume() if hasattr(backend, "volume") else None
    return CacheStats(hits=c.get("hits", 0), misses=c.get("misses", 0),
                      saved_usd=c.get("saved_nano_usd", 0) / _NANO, entries=entries, size_bytes=size)


def open_backend(settings: Any) -> CacheBackend:
    """Build the backend named by a CacheSettings (disk by default; redis for several machines)."""
    if settings.backend == "redis":
        from ._redis_cache import RedisBackend  # written with the server issue

        return RedisBackend(settings.url or "redis://127.0.0.1:6379/0")
    return DiskCacheBackend(settings.resolved_path(), size_limit_mb=settings.size_limit_mb)
