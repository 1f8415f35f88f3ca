"""Streaming through ``ponder serve``: time to the first text delta and to the last byte, against
the upstream streamed directly, for a single model and a fallback chain.

Processes on one machine: the local OpenAI-compatible upstream (tests/fakeserver.py; it streams the
echoed prompt in 4-character deltas), the ponder server of this tree and, with ``--baseline DIR``,
the ponder server of another tree, and this client (the official openai SDK, ``stream=True``).
Every prompt goes to every target in turn, in an order that rotates each request, so all of them
see the same machine state; overhead p50 = p50(through ponder) - p50(direct).

    PYTHONPATH=. python benchmarks/bench_server_stream.py [--n 300] [--baseline DIR] [--concurrent 200 --rounds 3]

``--concurrent N``: also N streamed requests at once (``AsyncOpenAI``, ``asyncio.gather``) per
target and round, the targets' order rotating every round; wall seconds per round, and whether
every client got its own answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from bench_server import UPSTREAM, free_port, pct, wait_port

ROOT = Path(__file__).resolve().parents[1]

SERVE = ("import sys; from ponder import load_config; from ponder.server import FallbackChain, create_app, serve; "
         "serve(create_app(load_config(sys.argv[1]), {'chain': FallbackChain(['up:m'])}, models=['up:m']), "
         "port=int(sys.argv[2]), log_level='warning')")


def timed_stream(client: openai.OpenAI, model: str, prompt: str) -> tuple[float, float]:
    """(ms to the first text delta, ms to the end of the stream); checks the text."""
    t0 = time.perf_counter()
    first = None
    parts = []
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                stream=True):
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            first = first if first is not None else time.perf_counter()
            parts.append(text)
    end = time.perf_counter()
    assert "".join(parts) == f"echo: {prompt}", parts
    return ((first or end) - t0) * 1e3, (end - t0) * 1e3


async def concurrent_streams(base_url: str, model: str, n: int, tag: str) -> tuple[float, int]:
    """(wall seconds, wrong answers) for ``n`` streamed requests at once."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)

    async def one(i: int) -> bool:
        prompt = f"{tag} {i}"
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return text == f"echo: {prompt}"

    t0 = time.perf_counter()
    ok = await asyncio.gather(*[one(i) for i in range(n)])
    wall = time.perf_counter() - t0
    await client.close()
    return wall, n - sum(ok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="streamed requests per target")
    ap.add_argument("--baseline", default=None, help="another ponder source tree, served side by side")
    ap.add_argument("--concurrent", type=int, default=0, help="streamed requests at once per target and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    up = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(ROOT / "tests")], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{int(up.stdout.readline())}/v1"  # type: ignore[union-attr]
    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "ponder.toml"
    cfg.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{url}"\nmax_retries = 0\n'
                   f'[cache]\nenabled = false\n')
    trees = {"ponder": ROOT, **({"baseline": Path(args.baseline).resolve()} if args.baseline else {})}
    ports, procs = {}, []
    for name, tree in trees.items():
        ports[name] = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, "-c", SERVE, str(cfg), str(ports[name])], env=env,
                                      stderr=subprocess.DEVNULL, cwd=tmp))
    try:
        targets: dict[str, tuple[openai.OpenAI, str]] = {
            "direct": (openai.OpenAI(base_url=url, api_key="unused", max_retries=0), "m")}
        for name, port in ports.items():
            wait_port(port)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
            targets[f"{name}_single"] = (client, "up:m")
            targets[f"{name}_chain"] = (client, "ponder/chain")
        names = list(targets)
        first: dict[str, list[float]] = {k: [] for k in names}
        total: dict[str, list[float]] = {k: [] for k in names}
        for i in range(args.n + 20):
            prompt = f"stream number {i} of a benchmark that sends one prompt to every target"
            for j in range(len(names)):
                name = names[(i + j) % len(names)]
                ttfb, end = timed_stream(*targets[name], prompt)
                if i >= 20:  # warm-up
                    first[name].append(ttfb)
                    total[name].append(end)
        walls: dict[str, list[float]] = {}
        wrong = 0
        for r in range(args.rounds if args.concurrent else 0):
            order = [*ports][r % len(ports):] + [*ports][:r % len(ports)]
            for name in order:
                wall, bad = asyncio.run(concurrent_streams(f"http://127.0.0.1:{ports[name]}/v1", "up:m",
                                                           args.concurrent, f"{name} round {r}"))
                walls.setdefault(name, []).append(round(wall, 2))
                wrong += bad
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        up.kill()
    out: dict[str, object] = {"n": args.n, "deltas_per_answer": len(f"echo: {prompt}") // 4 + 1}
    for name in names:
        out[name] = {"first_delta_p50_ms": statistics.median(first[name]),
                     "last_byte_p50_ms": statistics.median(total[name]),
                     "last_byte_p95_ms": pct(total[name], 0.95)}
        if name != "direct":
            out[name]["overhead_first_delta_p50_ms"] = (statistics.median(first[name])  # type: ignore[index]
                                                        - statistics.median(first["direct"]))
            out[name]["overhead_last_byte_p50_ms"] = (statistics.median(total[name])  # type: ignore[index]
                                                      - statistics.median(total["direct"]))
    if args.concurrent:
        out["concurrent"] = {"n": args.concurrent, "wall_s_per_round": walls, "wrong_answers": wrong}
    out["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "baseline": args.baseline}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
