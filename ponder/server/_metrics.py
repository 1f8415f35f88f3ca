"""Prometheus text exposition, written by hand (no dependency): requests, calls, cost, cache, latency.

Labels only ever hold served model ids and ``provider:model`` specs, never request content or keys.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .._gauges import gauge_lines, prom_labels, prom_number
from .._types import Answer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)


@dataclass
class Served:
    """One request while it is answered; ``status`` stays 499 if the client leaves before any answer."""

    route: str = "unknown"
    status: int = 499
    started: float = field(default_factory=time.perf_counter)


class Metrics:
    """Counters for one server process. Cheap to update; rendered on each scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (served model, status)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)  # (provider:model, outcome)
        self.cost: dict[str, float] = defaultdict(float)  # provider:model -> USD
        self.saved: float = 0.0
        self.cache_hits = 0
        self.in_flight = 0
        self.bucket_counts = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

    @contextmanager
    def request(self) -> Iterator[Served]:
        """One request in flight while the block runs (streams included), then done."""
        served = Served()
        with self._lock:
            self.in_flight += 1
        try:
            yield served
        finally:
            seconds = time.perf_counter() - served.started
            with self._lock:
                self.in_flight -= 1
                self.requests[(served.route, str(served.status))] += 1
                self.latency_sum += seconds
                self.latency_count += 1
                for i, le in enumerate(BUCKETS):
                    if seconds <= le:
                        self.bucket_counts[i] += 1

    def answer(self, answer: Answer) -> None:
        with self._lock:
            for a in answer.trace:
                outcome = "error" if a.error else ("cached" if a.cached else "ok")
                self.calls[(a.model, outcome)] += 1
                self.cost[a.model] += a.cost_usd
                if a.cached:
                    self.cache_hits += 1
            if not answer.trace:
                c = answer.completion
                self.calls[(c.spec, "cached" if c.cached else "ok")] += 1
                self.cost[c.spec] += answer.cost_usd
                self.cache_hits += int(c.cached)
            self.saved += answer.completion.saved_usd

    def failed_calls(self, models: list[str]) -> None:
        with self._lock:
            for m in models:
                self.calls[(m, "error")] += 1

    def render(self) -> str:
        with self._lock:
            families = [  # (name, type, help, samples: what follows the name)
                ("ponder_requests_total", "counter",
                 "Chat completion requests by served model and HTTP status.",
                 [f"{prom_labels(model=m, status=s)} {n}" for (m, s), n in sorted(self.requests.items())]),
                ("ponder_model_calls_total", "counter",
                 "Upstream model calls by outcome (ok, cached, error).",
                 [f"{prom_labels(model=m, outcome=o)} {n}" for (m, o), n in sorted(self.calls.items())]),
                ("ponder_cost_usd_total", "counter", "Money spent upstream, by model.",
                 [f"{prom_labels(model=m)} {prom_number(c)}" for m, c in sorted(self.cost.items())]),
                ("ponder_cache_hits_total", "counter", "Answers served from the completion cache.",
                 [f" {self.cache_hits}"]),
                ("ponder_cache_saved_usd_total", "counter", "Money the cache hits saved.",
                 [f" {prom_number(self.saved)}"]),
                ("ponder_requests_in_flight", "gauge", "Requests being answered now.",
                 [f" {self.in_flight}"]),
                ("ponder_request_duration_seconds", "histogram",
                 "Time to answer a request (to the last byte).",
                 [*(f"_bucket{prom_labels(le=prom_number(le))} {n}"
                    for le, n in zip(BUCKETS, self.bucket_counts, strict=True)),
                  f"_sum {prom_number(self.latency_sum)}", f"_count {self.latency_count}"]),
            ]
            out = [line for name, kind, text, samples in families for line in (
                f"# HELP {name} {text}", f"# TYPE {name} {kind}", *(name + x for x in samples))]
            return "\n".join([*out, *gauge_lines()]) + "\n"
