"""Results kept by what they were computed from, for work that ``ponder eval`` repeats.

Every router strategy and fold copy fits TF-IDF on the same sample and featurizes the same
queries; the cascade and route-cascade strategies optimize the same cross-fitted scores. A
:class:`Kept` holds the last few such results (within a byte budget), keyed by a :func:`digest`
of their inputs or by the inputs themselves.
"""

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
        """The value kept for ``key``, or None."""
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
