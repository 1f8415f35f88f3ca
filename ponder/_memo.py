"""Results kept by what they were computed from, for work that ``ponder eval`` repeats (every
router and fold copy fits the same TF-IDF; cascades optimize the same cross-fitted scores)."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

__all__ = ["Kept", "digest"]


class Kept:
    """The most recent results by key, at most ``max_items`` and ``max_bytes`` (thread-safe)."""

    def __init__(self, max_bytes: int, max_items: int = 16) -> None:
        self.max_bytes, self.max_items = max_bytes, max_items
        self._items: dict[Any, tuple[Any, int]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.pop(key, None)
            if hit is None:
                return None
            self._items[key] = hit  # most recent last
            return hit[0]

    def put(self, key: Any, value: Any, nbytes: int) -> None:
        with self._lock:
            self._items.pop(key, None)
            if nbytes > self.max_bytes:
                return
            self._items[key] = (value, nbytes)
            while (len(self._items) > self.max_items
                   or sum(n for _, n in self._items.values()) > self.max_bytes):
                del self._items[next(iter(self._items))]  # the least recent


def digest(*parts: Any) -> str:
    """A hash of ``parts``: arrays by dtype, shape and bytes, anything else by its ``repr``."""
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()
