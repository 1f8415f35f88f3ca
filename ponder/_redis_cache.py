"""A Redis cache backend, so several servers (or batch workers) share one completion cache.

Timeouts are short and failures raise: ``CachedProvider`` turns any backend error into "no cache"
with one warning. After a failure the backend stays open-circuit for a few seconds (raising at
once instead of waiting on a dead socket), then tries Redis again, so a restarted Redis is picked
up without restarting the server.
"""

from __future__ import annotations

import time
from typing import Any

_STATS = "ponder:stats"
_PREFIX = "ponder:"


class RedisUnavailable(ConnectionError):
    """Redis did not answer; the cache is skipped for ``retry_s`` seconds."""


class RedisBackend:
    """Bytes in, bytes out, over redis-py. Counters live in one hash (``ponder:stats``)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, timeout_s: float = 0.25,
                 retry_s: float = 5.0) -> None:
        import redis

        self.url = url
        self.retry_s = retry_s
        self._redis: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False,
            health_check_interval=0)
        self._down_until = 0.0

    def _call(self, method: str, *args: Any, **kw: Any) -> Any:
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("redis unavailable (circuit open)")
        try:
            if method == "scan_iter":
                return list(self._redis.scan_iter(*args, **kw))
            return getattr(self._redis, method)(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - any redis/socket error means "down for now"
            self._down_until = time.monotonic() + self.retry_s
            raise RedisUnavailable(f"redis unavailable: {type(exc).__name__}") from None

    def get(self, key: str) -> bytes | None:
        value = self._call("get", key)
        return bytes(value) if value is not None else None

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        if ttl_s is not None:
            self._call("set", key, value, px=max(1, int(ttl_s * 1000)))
        else:
            self._call("set", key, value)

    def incr(self, counter: str, amount: int = 1) -> None:
        self._call("hincrby", _STATS, counter, amount)

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

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception:  # noqa: BLE001 - closing a dead connection is not an error
            pass
