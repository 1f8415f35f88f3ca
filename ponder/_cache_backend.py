"""The cache backend protocol (its own module, below disk and Redis, so neither imports the other)."""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

__all__ = ["CacheBackend"]


@runtime_checkable
class CacheBackend(Protocol):
    """Bytes in, bytes out, safe for several processes; failures raise (``CacheUnavailable`` at
    best). The async methods default to the sync ones in a thread, so no loop is ever blocked."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    def incr(self, counter: str, amount: int = 1) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def clear(self) -> int: ...

    def close(self) -> None: ...

    async def aget(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self.get, key)

    async def aset(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await asyncio.to_thread(self.set, key, value, ttl_s)

    async def aincr(self, counter: str, amount: int = 1) -> None:
        await asyncio.to_thread(self.incr, counter, amount)

    async def aclose(self) -> None:
        """Release what belongs to the running event loop (the backend stays usable)."""
        return None
