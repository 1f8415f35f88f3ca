"""The completion cache (diskcache, or any backend) over any provider: a hit costs 0 and records what it
saved; no credential is ever kept, and a cache that fails never stops an answer nor blocks the loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ._cache_backend import CacheBackend as CacheBackend  # re-exported: ponder.CacheBackend
from ._exceptions import CacheUnavailable
from ._types import ChatRequest, Completion

log = logging.getLogger("ponder.cache")

KEY_VERSION = 2  # 2: the key covers the whole request (tools, response_format, content parts, ...)
_NANO = 1_000_000_000  # saved cost is counted in nano-USD so counters stay integers
_T = TypeVar("_T")


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


def _disk_failure(exc: BaseException, db: Path, folder: Path) -> CacheUnavailable:
    """Name the file, the reason and the fix; sqlite and OS errors alone name neither."""
    reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
    text = reason.lower()
    where = folder if isinstance(exc, OSError) else db
    if isinstance(exc, (NotADirectoryError, FileExistsError, FileNotFoundError)):
        fix = "set [cache] path or $PONDER_CACHE_DIR to a folder"
    elif isinstance(exc, PermissionError) or any(w in text for w in ("readonly", "read-only", "permission",
                                                                       "unable to open")):
        fix = f"make {folder} writable, or set [cache] path or $PONDER_CACHE_DIR to a writable folder"
    else:  # corrupt: "database disk image is malformed", "file is not a database", ...
        fix = "run `ponder cache clear` to reset it"
    return CacheUnavailable(str(where), reason, fix)


class DiskCacheBackend(CacheBackend):
    """diskcache (SQLite + files); closed ``retry_s`` seconds after a failure, then tried again."""

    def __init__(self, path: str | Path, *, size_limit_mb: int = 1024, retry_s: float = 5.0) -> None:
        self.path = Path(path).expanduser()
        self.size_limit_mb = size_limit_mb
        self.retry_s = retry_s
        self.location = str(self.path / "cache.db")
        self._dbs: tuple[Any, Any] | None = None  # (entries, statistics), both diskcache.Cache
        self._down: CacheUnavailable | None = None
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _open(self) -> tuple[Any, Any]:
        with self._lock:
            if self._dbs is not None:
                return self._dbs
            if self._down is not None and time.monotonic() < self._down_until:
                raise CacheUnavailable(self._down.where, self._down.reason, self._down.fix)
            import diskcache

            cache = stats = None
            try:
                self.path.mkdir(parents=True, exist_ok=True)  # an OSError here names the real cause
                cache = diskcache.Cache(str(self.path), size_limit=self.size_limit_mb * 1024 * 1024,
                                        eviction_policy="least-recently-stored", timeout=60)
                stats = diskcache.Cache(str(self.path / "stats"), timeout=60)
            except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
                if cache is not None:
                    cache.close()
                raise self._failed(exc, int(cache is not None)) from None
            self._dbs, self._down = (cache, stats), None
            return self._dbs

    def _failed(self, exc: BaseException, which: int) -> CacheUnavailable:
        """Remember the failure of db ``which``, drop the handles (reopened after ``retry_s``)."""
        self._down = _disk_failure(exc, (self.path / "stats" if which else self.path) / "cache.db", self.path)
        self._down_until = time.monotonic() + self.retry_s
        dbs, self._dbs = self._dbs, None
        _close_all(dbs)
        return self._down

    def _run(self, which: int, op: Callable[[Any], _T]) -> _T:
        import diskcache

        db = self._open()[which]
        try:
            return op(db)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            with self._lock:
                raise self._failed(exc, which) from None

    def get(self, key: str) -> bytes | None:
        value = self._run(0, lambda c: c.get(key))
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._run(0, lambda c: c.set(key, value, expire=ttl_s))

    def incr(self, counter: str, amount: int = 1) -> None:
        self._run(1, lambda s: s.incr(counter, amount, default=0))

    def counters(self) -> dict[str, int]:
        return self._run(1, lambda s: {k: int(s.get(k, 0)) for k in ("hits", "misses", "saved_nano_usd")})

    def clear(self) -> int:
        n = self._run(0, lambda c: int(c.clear()))
        self._run(1, lambda s: s.clear())
        return n

    def entries(self) -> int:
        return self._run(0, len)

    def volume(self) -> int:
        return self._run(0, lambda c: int(c.volume()))

    def reset(self) -> list[Path]:
        """Delete diskcache's own files here (a cache too damaged to ``clear``); returns them."""
        with self._lock:
            dbs, self._dbs, self._down = self._dbs, None, None
            _close_all(dbs)
            removed: list[Path] = []
            for folder in (self.path, self.path / "stats"):
                names = [folder / f"cache.db{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
                values = sorted(folder.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*.val"))
                for f in [*names, *values]:
                    try:
                        if f.is_file():
                            f.unlink()
                            removed.append(f)
                    except OSError as exc:
                        raise _disk_failure(exc, f, folder) from None
                for sub in sorted({v.parent for v in values} | {v.parent.parent for v in values}, reverse=True):
                    with contextlib.suppress(OSError):  # not empty: holds something else
                        sub.rmdir()
            return removed

    def close(self) -> None:
        with self._lock:
            dbs, self._dbs = self._dbs, None
        _close_all(dbs)


def _close_all(dbs: Any) -> None:
    for d in dbs or ():
        with contextlib.suppress(Exception):  # a broken handle may not close cleanly
            d.close()


def cache_key(*, provider: str, endpoint: str, model: str, request: ChatRequest) -> str:
    """A stable hash of everything that determines the answer, and nothing secret."""
    payload = {"v": KEY_VERSION, "provider": provider, "endpoint": endpoint, "model": model,
               **request.key_fields()}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "ponder:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _encode(c: Completion) -> bytes:
    return c.model_dump_json(include={"text", "model", "provider", "usage", "cost_usd",
                                      "cost_estimated", "finish_reason", "samples",
                                      "logprobs", "choices"}).encode("utf-8")


def _decode(raw: bytes) -> Completion | None:
    try:
        return Completion.model_validate_json(raw)
    except ValueError:
        return None  # a corrupt or foreign entry is a miss, not an error


class CacheGuard:
    """A failing backend means "no cache", not an error: one warning per outage, one on recovery."""

    def __init__(self, backend: CacheBackend) -> None:
        self.backend = backend
        self.failing = False
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return str(getattr(self.backend, "location", None) or type(self.backend).__name__)

    def _failed(self, exc: Exception) -> tuple[bool, Any]:
        with self._lock:
            was_failing, self.failing = self.failing, True
        if was_failing:
            return False, None
        if isinstance(exc, CacheUnavailable):
            where, reason, fix = exc.where, exc.reason, exc.fix
        else:  # a foreign exception's text may hold a URL with a password: name its type only
            where, reason, fix = self.where, type(exc).__name__, ""
        log.warning("cache unavailable at %s (%s); continuing without it%s", where, reason,
                    f"; {fix}" if fix else "")
        return False, None

    def _worked(self, value: Any) -> tuple[bool, Any]:
        if self.failing:
            with self._lock:
                was_failing, self.failing = self.failing, False
            if was_failing:
                log.warning("cache at %s recovered; using it again", self.where)
        return True, value

    def call(self, method: str, *args: Any) -> tuple[bool, Any]:
        """``(True, result)``, or ``(False, None)`` when the backend failed."""
        try:
            value = getattr(self.backend, method)(*args)
        except Exception as exc:  # noqa: BLE001 - any backend failure means "no cache"
            return self._failed(exc)
        return self._worked(value)

    async def acall(self, method: str, *args: Any) -> tuple[bool, Any]:
        """``call`` without blocking the loop (a backend without ``a<method>``: in a thread)."""
        native = getattr(self.backend, "a" + method, None)
        try:
            if native is not None:
                value = await native(*args)
            else:  # a structural backend without async methods: CacheBackend's default, inlined
                value = await asyncio.to_thread(getattr(self.backend, method), *args)
        except Exception as exc:  # noqa: BLE001
            return self._failed(exc)
        return self._worked(value)


def _counts(hit: Completion | None) -> list[tuple[str, int]]:
    return [("hits", 1), ("saved_nano_usd", int(round(hit.cost_usd * _NANO)))] if hit else [("misses", 1)]


def _served(hit: Completion, start: float) -> Completion:
    return hit.model_copy(update={"cached": True, "saved_usd": hit.cost_usd, "cost_usd": 0.0,
                                  "latency_s": time.perf_counter() - start})


class CachedProvider:
    """Identical requests answered free; only those at temperature 0 unless ``cache_sampled``."""

    def __init__(self, provider: Any, backend: CacheBackend, *, ttl_s: float | None = None,
                 cache_sampled: bool = False, guard: CacheGuard | None = None) -> None:
        self.provider = provider
        self.backend = backend
        self.ttl_s = ttl_s
        self.cache_sampled = cache_sampled
        self.name = provider.name
        self.guard = guard if guard is not None and guard.backend is backend else CacheGuard(backend)

    def _key(self, request: ChatRequest, model: str) -> str | None:
        if not request.deterministic and not self.cache_sampled:
            return None
        return cache_key(provider=self.name, endpoint=getattr(self.provider, "endpoint", ""),
                         model=model, request=request)

    def _lookup(self, request: ChatRequest, model: str) -> tuple[str | None, Completion | None]:
        """The request's key (None: not cached) and the cached answer, if any."""
        start = time.perf_counter()
        key = self._key(request, model)
        ok, raw = self.guard.call("get", key) if key is not None else (False, None)
        hit = _decode(raw) if ok and raw is not None else None
        for counter, amount in _counts(hit) if ok else ():
            if not self.guard.call("incr", counter, amount)[0]:
                break
        return key, _served(hit, start) if hit is not None else None

    async def _alookup(self, request: ChatRequest,
                       model: str) -> tuple[str | None, Completion | None]:
        start = time.perf_counter()
        key = self._key(request, model)
        ok, raw = await self.guard.acall("get", key) if key is not None else (False, None)
        hit = _decode(raw) if ok and raw is not None else None
        for counter, amount in _counts(hit) if ok else ():
            if not (await self.guard.acall("incr", counter, amount))[0]:
                break
        return key, _served(hit, start) if hit is not None else None

    def complete(self, request: ChatRequest, model: str) -> Completion:
        key, hit = self._lookup(request, model)
        if hit is not None:
            return hit
        completion: Completion = self.provider.complete(request, model)
        if key is not None:
            self.guard.call("set", key, _encode(completion), self.ttl_s)
        return completion

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        key, hit = await self._alookup(request, model)
        if hit is not None:
            return hit
        completion: Completion = await self.provider.acomplete(request, model)
        if key is not None:
            await self.guard.acall("set", key, _encode(completion), self.ttl_s)
        return completion

    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        key, hit = self._lookup(request, model)
        if hit is not None:
            yield hit.text
            yield hit
            return
        for item in self.provider.stream(request, model):
            if isinstance(item, Completion) and key is not None:
                self.guard.call("set", key, _encode(item), self.ttl_s)
            yield item

    async def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        key, hit = await self._alookup(request, model)
        if hit is not None:
            yield hit.text
            yield hit
            return
        async for item in self.provider.astream(request, model):
            if isinstance(item, Completion) and key is not None:
                await self.guard.acall("set", key, _encode(item), self.ttl_s)
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
    """The backend a CacheSettings names (disk by default; redis for several machines)."""
    if settings.backend == "redis":
        from ._redis_cache import RedisBackend

        return RedisBackend(settings.url or "redis://127.0.0.1:6379/0")
    return DiskCacheBackend(settings.resolved_path(), size_limit_mb=settings.size_limit_mb)
