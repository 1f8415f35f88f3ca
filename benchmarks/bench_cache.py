"""Completion cache: what a hit costs in time, next to a real HTTP round trip on 127.0.0.1.

    python benchmarks/bench_cache.py [--n 300]

Prints p50/p95 of: a call through the official openai SDK to a local OpenAI-compatible server
(tests/fakeserver.py), the same request answered from the disk cache, and the hashing of the key.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import ponder  # noqa: E402
from ponder import ChatRequest, cache_key  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    from fakeserver import FakeLLMServer

    with FakeLLMServer() as srv, tempfile.TemporaryDirectory() as tmp:
        cfg = ponder.Config(cache=ponder.CacheSettings(path=tmp))
        miss, hit, keys = [], [], []
        with ponder.Client(cfg, base_urls={"openai": srv.url}) as client:
            client.complete("warm-up", model="openai:gpt-4o-mini")
            for i in range(args.n):
                t = time.perf_counter()
                client.complete(f"question {i}", model="openai:gpt-4o-mini")
                miss.append(time.perf_counter() - t)
            for i in range(args.n):
                t = time.perf_counter()
                c = client.complete(f"question {i}", model="openai:gpt-4o-mini")
                hit.append(time.perf_counter() - t)
                assert c.cached
            for i in range(args.n):
                req = ChatRequest.of(f"question {i}")
                t = time.perf_counter()
                cache_key(provider="openai", endpoint=srv.url, model="gpt-4o-mini", request=req)
                keys.append(time.perf_counter() - t)
            stats = client.cache_stats()
        print("| what | p50 ms | p95 ms |\n|---|---|---|")
        print(f"| miss: openai SDK → 127.0.0.1 server, then cache write | {pct(miss, .5):.2f} | {pct(miss, .95):.2f} |")
        print(f"| hit: answered from the disk cache | {pct(hit, .5):.3f} | {pct(hit, .95):.3f} |")
        print(f"| cache key (SHA-256 of the request) | {pct(keys, .5):.4f} | {pct(keys, .95):.4f} |")
        print(f"\nrequests that reached the server: {srv.count} (= {args.n} misses + 1 warm-up); "
              f"hits {stats.hits}, misses {stats.misses}, saved ${stats.saved_usd:.6f}; "
              f"hit p50 / miss p50 = {statistics.median(hit) / statistics.median(miss):.3f}")


if __name__ == "__main__":
    main()
