"""A Redis cache backend, so several servers share one cache: short timeouts, no retries, a circuit
open ``retry_s`` after a failure (not waiting on a dead socket), ``redis.asyncio`` per event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._cache_backend import CacheBackend
from ._exceptions import CacheUnavailable

_STATS = "ponder:stats"
_PREFIX = "ponder:"


class RedisUnavailable(CacheUnavailable):
    """Redis did not answer; the cache is skipped for ``retry_s`` seconds."""


def _redact(url: str) -> str:
    """The URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}[redacted]@{netloc}"))


def _millis(ttl_s: float | None) -> int | None:
    """A TTL as Redis's ``px``: at least 1 ms, None for no expiry."""
    return None if ttl_s is None else max(1, int(ttl_s * 1000))


class RedisBackend(CacheBackend):
    """Bytes in, bytes out, over redis-py. Counters live in one hash (``ponder:stats``)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, timeout_s: float = 0.25,
                 retry_s: float = 5.0) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.location = _redact(url)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        # no retries inside redis-py: the open circuit below is the retry policy
        self._options: dict[str, Any] = {"socket_timeout": timeout_s, "health_check_interval": 0,
                                         "socket_connect_timeout": timeout_s}
        self._redis: Any = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **self._options)
        self._aredis: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}  # id(loop) -> (loop, client)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._last_failure = ""

    def _unavailable(self, reason: str) -> RedisUnavailable:
        return RedisUnavailable(self.location, reason,
                                f"check that Redis is running; ponder tries it again every {self.retry_s:g}s")

    @contextlib.contextmanager
    def _circuit(self) -> Iterator[None]:
        if time.monotonic() < self._down_until:
            raise self._unavailable(f"{self._last_failure}; not tried again yet")
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - any redis/socket error means "down for now"
            self._down_until = time.monotonic() + self.retry_s
            self._last_failure = type(exc).__name__  # redis errors may quote the URL: type only
            raise self._unavailable(self._last_failure) from None

    def _call(self, method: str, *args: Any, **kw: Any) -> Any:
        with self._circuit():
            if method == "scan_iter":
                return list(self._redis.scan_iter(*args, **kw))
            return getattr(self._redis, method)(*args, **kw)

    async def _acall(self, method: str, *args: Any, **kw: Any) -> Any:
        """``_call`` on the running loop's own ``redis.asyncio`` client."""
        with self._circuit():
            loop = asyncio.get_running_loop()
            with self._lock:
                for k in [k for k, (lp, _) in self._aredis.items() if lp.is_closed()]:
                    del self._aredis[k]  # its loop is gone, and its sockets with it
                entry = self._aredis.get(id(loop))
                if entry is None or entry[0] is not loop:
                    import redis.asyncio
                    from redis.asyncio.retry import Retry
                    from redis.backoff import NoBackoff

                    client = redis.asyncio.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0),
                                                          **self._options)
                    entry = self._aredis[id(loop)] = (loop, client)
            return await getattr(entry[1], method)(*args, **kw)

    # --- the backend -----------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        value = self._call("get", key)
        return None if value is None else bytes(value)

    async def aget(self, key: str) -> bytes | None:
        value = await self._acall("get", key)
        return None if value is None else bytes(value)

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._call("set", key, value, px=_millis(ttl_s))

    async def aset(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._acall("set", key, value, px=_millis(ttl_s))

    def incr(self, counter: str, amount: int = 1) -> None:
        self._call("hincrby", _STATS, counter, amount)

    async def aincr(self, counter: str, amount: int = 1) -> None:
        await self._acall("hincrby", _STATS, counter, amount)

    def counters(self) -> dict[str, int]:
        raw = self._call("hgetall", _STATS) or {}
        got = {k.decode() if isinstance(k, bytes) else str(k): int(v) for k, v in raw.items()}
        return {k: got.get(k, 0) for k in ("hits", "misses", "saved_nano_usd")}

    def _keys(self) -> list[bytes]:
        return [k for k in self._call("scan_iter", match=_PREFIX + "*", count=1000) if k != _STATS.encode()]

    def entries(self) -> int:
        return len(self._keys())

    def clear(self) -> int:
        keys = self._keys()
        for i in range(0, len(keys), 500):
            self._call("delete", *keys[i:i + 500])
        self._call("delete", _STATS)
        return len(keys)

    async def aclose(self) -> None:
        """Close the running loop's async client (the sync one, and other loops', stay open)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aredis.pop(id(loop), None)
        if entry is not None and entry[0] is loop:
            with contextlib.suppress(Exception):  # closing a dead connection is not an error
                await (getattr(entry[1], "aclose", None) or entry[1].close)()  # aclose: redis >= 5.0.1

    def close(self) -> None:
        with self._lock:
            self._aredis.clear()  # clients of loops still running are closed by ``aclose`` there
        with contextlib.suppress(Exception):  # closing a dead connection is not an error
            self._redis.close()
